"""The service's one ledger writer: a thread that takes prepared runs (and other small ledger writes)
from a queue and commits them, one after the other, so that requests never wait on each other for
the ledger's write lock (SQLite's busy handler sleeps in steps of up to 100 ms when writers collide).

A request prepares its run in its own worker thread (hashes, canonical rows: the bulk of the CPU),
hands it over with :meth:`Writer.submit` and answers only when the returned future says the run is
committed: every rating the service issues is in the ledger before its response leaves.

Group commit: the writer drains everything queued and, when the ledger offers
``record.append_many(engine, prepared_list)`` (several runs in one transaction), commits them
together; otherwise one transaction per run, still in one thread (no lock contention).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("ruleengine.service")

_STOP = object()
MAX_GROUP = 64  # runs committed together at most (when the ledger can)


@dataclass
class WriterStats:
    """What the writer did (for the benchmark and /v1/health-style checks)."""

    runs: int = 0
    calls: int = 0
    groups: int = 0
    busy_s: float = 0.0  # thread CPU time spent committing
    largest_group: int = 0
    errors: int = 0
    group_sizes: dict[int, int] = field(default_factory=dict)  # runs per group -> groups (<= MAX_GROUP keys)


class Writer:
    """A single committing thread over ``engine`` (a ledger's SQLAlchemy engine)."""

    def __init__(self, engine: Any) -> None:
        from ..ledger import record as R

        self.engine = engine
        self._append = R.append
        self._append_many: Callable[..., list[dict[str, Any]]] | None = getattr(R, "append_many", None)
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.stats = WriterStats()

    # --- the requests' side ----------------------------------------------------------------------
    def submit(self, prepared: Any) -> concurrent.futures.Future[dict[str, Any]]:
        """Queue a prepared run (``ledger.record.prepare``); the future gives the committed run row."""
        return self._put("run", prepared)

    def call(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Queue another ledger write (``fn(*args)``, e.g. an access-log line) for the writer thread."""
        return self._put("call", (fn, args))

    def _put(self, kind: str, payload: Any) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the ledger writer is closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="ruleengine-ledger-writer", daemon=True)
                self._thread.start()
            self._q.put((kind, payload, fut))
        return fut

    def close(self, timeout: float = 60.0) -> None:
        """Commit everything queued, then stop the thread (new work is refused)."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None and thread.is_alive():
                self._q.put(_STOP)
        if thread is not None:
            thread.join(timeout)

    # --- the writer thread -----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self._q.get()
            items = [first]
            while len(items) < MAX_GROUP:  # everything that queued while the last group committed
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            stop = any(it is _STOP for it in items)
            self._commit([it for it in items if it is not _STOP])
            if stop:
                # anything queued after the stop marker (a race with close) still gets committed
                rest = []
                while True:
                    try:
                        it = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if it is not _STOP:
                        rest.append(it)
                self._commit(rest)
                return

    def _commit(self, items: list[Any]) -> None:
        if not items:
            return
        t0 = time.thread_time()
        runs = [(p, f) for kind, p, f in items if kind == "run" and f.set_running_or_notify_cancel()]
        calls = [(p, f) for kind, p, f in items if kind == "call" and f.set_running_or_notify_cancel()]
        if runs:
            self.stats.groups += 1
            self.stats.largest_group = max(self.stats.largest_group, len(runs))
            self.stats.group_sizes[len(runs)] = self.stats.group_sizes.get(len(runs), 0) + 1
        if self._append_many is not None and len(runs) > 1:
            try:
                rows = self._append_many(self.engine, [p for p, _ in runs])
            except BaseException:  # noqa: BLE001 - one bad run must not fail the group: retry one by one
                log.info("group commit of %d runs failed; committing them one by one", len(runs))
            else:
                self.stats.runs += len(runs)
                for (_, fut), row in zip(runs, rows, strict=True):
                    fut.set_result(row)
                runs = []
        for prepared, fut in runs:
            try:
                row = self._append(self.engine, prepared)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                self.stats.errors += 1
                fut.set_exception(exc)
            else:
                self.stats.runs += 1
                fut.set_result(row)
        for (fn, args), fut in calls:
            try:
                out = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                self.stats.errors += 1
                fut.set_exception(exc)
            else:
                self.stats.calls += 1
                fut.set_result(out)
        self.stats.busy_s += time.thread_time() - t0
