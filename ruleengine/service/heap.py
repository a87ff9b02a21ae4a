"""A server process's heap and Python's cyclic garbage collector.

A full (generation-2) collection walks every container object alive: in a service process, after
the imports (FastAPI, pydantic, SQLAlchemy, Arrow, numpy, the engine) and a materialised run, that
is ~160,000 objects and **50–100 ms with the GIL held** — every request in the process waits that
long, which was most of the service's p99 under load. Almost all of those objects live as long as
the process (modules, classes, compiled rulebooks, a run's tables), so :func:`settle` collects once
and then moves everything alive into the collector's permanent generation (``gc.freeze``): later
collections walk only what requests allocated since, a few thousand objects (well under 1 ms).

It is called when the server starts (after importing what requests use) and after a run is
materialised for one-firm ratings or explain (rare, and already a pause of its own). Each call
first ``gc.unfreeze()``s, so cyclic garbage among once-frozen objects (a cached run evicted since)
is collected then: frozen objects are never leaked for longer than until the next settle.

Only a server process settles (:func:`enable`, from ``serve``): in a process that embeds the app
(tests, a caller's own ASGI server) the collector is left as the caller set it.
"""

from __future__ import annotations

import gc
import importlib
import threading

_lock = threading.Lock()
_enabled = False

# imported lazily by request handlers: imported before the first settle, so their objects are frozen
WARM = (
    "ruleengine.pipeline",
    "ruleengine.ledger.record",
    "ruleengine.ledger.replay",
    "ruleengine.ledger.canonical",
    "ruleengine.analysis.trace",
    "ruleengine.analysis.whatif",
    "ruleengine.io.formats",
    "ruleengine.rulebook.loader",
    "pyarrow.compute",
    "pyarrow.csv",
    "pyarrow.parquet",
    "pandas",  # when installed, pyarrow imports it at its first pa.array() (a 0.3-1 s first request)
)


def enable() -> None:
    """This process is a server: settle the heap now and after each materialised run."""
    global _enabled
    for name in WARM:
        try:
            importlib.import_module(name)
        except ImportError:  # pragma: no cover - an optional part not installed: nothing to warm
            pass
    _enabled = True
    settle()


def enabled() -> bool:
    return _enabled


def settle() -> int:
    """Collect, then freeze everything alive (when :func:`enable`\\ d); returns the frozen count."""
    if not _enabled:
        return 0
    with _lock:
        gc.unfreeze()  # garbage among objects frozen last time (an evicted run) is collected now
        gc.collect()
        gc.freeze()
        return gc.get_freeze_count()
