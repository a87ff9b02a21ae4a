"""The service's settings: where the ledger and keys are, and the limits on what a request may ask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServiceConfig:
    """Settings of one service process.

    Limits (each refused with a problem+json response naming the limit):
    ``max_body_bytes`` request body (413), ``max_rows`` firm-years in one upload (413),
    ``request_timeout_s`` work per request (503; the work is abandoned), ``body_timeout_s`` time to
    receive a body (408, slow clients), ``max_concurrent`` requests doing work at once (others wait
    up to ``queue_timeout_s``, then 503 with Retry-After).

    ``ledger_sync`` (SQLite): how the writer commits, see :func:`ruleengine.ledger.db.writer_engine`.
    """

    ledger: str | Path = "ruleengine.db"
    keys: str | Path | None = None
    state_dir: str | Path | None = None  # published rulebooks and run materials (default: a temp dir)
    max_body_bytes: int = 32 * 2**20
    max_rows: int = 200_000
    request_timeout_s: float = 60.0
    body_timeout_s: float = 30.0
    max_concurrent: int = 2
    queue_timeout_s: float = 10.0
    cached_runs: int = 4  # runs kept rated in memory for explain / one-firm rating
    keys_check_s: float = 2.0  # the keys file is looked at (mtime) at most this often; SIGHUP forces it
    spool_memory_bytes: int = 1 * 2**20  # a body above this is spooled to a file in the state folder
    # SQLite ledger, the writer's commits (ledger.db.writer_engine): "full" = WAL + synchronous=FULL
    # (a committed run survives kill -9 and a power cut; one WAL fsync per commit group); "normal" = WAL +
    # synchronous=NORMAL (survives kill -9; an OS crash or power cut may lose the last commits, whole
    # ones); "journal" = rollback journal + synchronous=FULL, as the CLI writes (~10 ms of fsyncs a commit)
    ledger_sync: str = "full"
    # MiB of memory a server process touches at start and keeps, with every page it uses later
    # (service.heap.keep_warm): uploads reuse warm pages instead of faulting fresh ones in. 0: off
    warm_memory_mb: int = 0
