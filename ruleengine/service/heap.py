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

**Memory kept warm** (:func:`keep_warm`, ``serve --warm-memory MB``). A portfolio upload needs
~150 MB of fresh memory for a moment (the CSV's Arrow buffers, the typed columns, the results),
which the process then hands back: glibc trims its heaps, Arrow's allocator (mimalloc) purges its
pages, numpy's big arrays come and go as mmaps. The next upload faults all of it in again, ~20,000
page faults and ~35 transparent huge pages for 50,000 rows; on this benchmark machine (a VM) such
faults are cheap at times and very slow at others (memory the hypervisor reclaimed), so the same
upload took 0.3 s or 0.9 s. A process that keeps its memory instead, and touches it once at start,
serves every upload from warm pages: measured in fresh processes, 50,000 rows read, rated,
hashed and committed in 307-328 ms, the first upload included, against 495-922 ms
(benchmarks/SERVICE.md, session 15).
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_MMAP_MAX = 32 * 2**20  # glibc's largest mmap threshold on 64-bit systems (HEAP_MAX_SIZE / 2)
_TOUCH_PIECE = 16 * 2**20

log = logging.getLogger("ruleengine.service")


def keep_warm(mb: int) -> str | None:
    """Keep this process's memory, and touch ``mb`` MiB of it now (see the module's text):

    * glibc's malloc serves blocks up to 32 MiB from its heap (not fresh mmaps), never hands the
      heap's free memory back (no trimming), and uses one heap for every thread (a worker thread's
      arena would be new, untouched memory);
    * Arrow allocates from that heap too (its system memory pool, not mimalloc, which hands its
      pages back);
    * the pipeline no longer releases memory after big steps (``pipeline.keep_memory``);
    * ``mb`` MiB are allocated, written and freed, so later requests reuse pages already in memory.

    The process's resident memory then stays at its high-water mark (at least ``mb`` MiB): a server
    whose requests are bounded (``--max-rows``, ``--max-body-mb``) keeps what its largest took.
    Returns None when done, or why it cannot be done here (glibc only: Linux)."""
    if mb <= 0:
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc's own function: another C library has not
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "memory is kept warm only with glibc (Linux)"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = [
        mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX),
        mallopt(_M_TRIM_THRESHOLD, 2**31 - 1),
        mallopt(_M_ARENA_MAX, 1),
    ]
    if not all(done):  # pragma: no cover - glibc accepts these values
        return "glibc refused the malloc settings (mallopt)"
    from .. import pipeline

    pipeline.keep_memory()
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    malloc, free = libc.malloc, libc.free
    malloc.argtypes, malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    free.argtypes, free.restype = [ctypes.c_void_p], None
    pieces = []
    try:
        for _ in range(-(-mb * 2**20 // _TOUCH_PIECE)):
            ptr = malloc(_TOUCH_PIECE)
            if not ptr:
                break  # (out of memory: keep what was had)
            ctypes.memset(ptr, 0, _TOUCH_PIECE)
            pieces.append(ptr)
    finally:
        for ptr in pieces:
            free(ptr)
    log.info("memory kept warm: %d MiB touched (pid %d)", len(pieces) * _TOUCH_PIECE // 2**20, os.getpid())
    return None
