"""An HTTP service for banks, firms, regulators and method authors (issue #17).

``ruleengine serve --ledger URL --keys FILE`` runs :func:`create_app` under uvicorn. Every rating
the service issues is recorded in the ledger; rulebooks come only from the registry (bundled
rulebooks and versions published through the API); access is by API key with a role, and banks see
a firm only while the firm's consent to that bank stands. See docs/service.md.

Needs the extra: ``pip install 'ruleengine[service]'`` (FastAPI, uvicorn, python-multipart,
swagger-ui-bundle).
"""

from __future__ import annotations

from .config import ServiceConfig

__all__ = ["ServiceConfig", "create_app", "serve"]


def create_app(config: ServiceConfig) -> object:
    """The ASGI application (FastAPI) for ``config``."""
    from .app import build

    return build(config)


def serve(
    config: ServiceConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    access_log: bool = False,
    processes: int = 1,
    pin_cpus: bool = True,
) -> None:
    """Run the service under uvicorn until interrupted (``access_log``: uvicorn's line per request;
    ``processes``: worker processes sharing the port and the ledger; ``pin_cpus``: with several
    processes, each on a CPU of its own when there are enough; see docs/service.md)."""
    from .app import run

    run(config, host, port, access_log, processes, pin_cpus)
