"""What one service process holds: the ledger, the keys, the registry, the work limits and the runs
kept rated in memory (for explain, what-it-takes, reports and one-firm ratings)."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import json
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from ..errors import RuleEngineError
from ..ledger import Ledger, open_ledger
from ..rulebook.loader import load
from .config import ServiceConfig
from .keys import KeyRing, load_keys
from .registry import Registry

T = TypeVar("T")


class Problem(Exception):
    """An answer other than success, sent as application/problem+json."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        code: str,
        *,
        errors: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.code = code
        self.errors = errors
        self.headers = headers


NOT_VISIBLE = ("Not Found", "no such run or firm, or not visible to this key", "not-found")


def not_visible() -> Problem:
    """The one answer for a firm that does not exist and a firm this key may not see."""
    return Problem(404, *NOT_VISIBLE)


@dataclass
class RatedRun:
    run: dict[str, Any]
    plan: Any
    book: Path  # the run's rulebook, rebuilt from the ledger (a file: recording needs one)
    data: Path  # the run's stored input rows (Parquet)
    tables: dict[str, Any]
    results: Any = None
    rated: Any = None  # report.Rated, built on the first report request


class State:
    def __init__(self, cfg: ServiceConfig) -> None:
        self.cfg = cfg
        self.ledger: Ledger = open_ledger(cfg.ledger)
        self.keys: KeyRing = load_keys(cfg.keys)
        if cfg.state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ruleengine-service-")
            self.folder = Path(self._tmp.name)
        else:
            self.folder = Path(cfg.state_dir)
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.registry = Registry(self.ledger.engine, self.folder)
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=cfg.max_concurrent + 2)
        self._sem: asyncio.Semaphore | None = None
        self._runs: collections.OrderedDict[int, RatedRun] = collections.OrderedDict()
        self._runs_lock = threading.Lock()
        self._run_locks: dict[int, threading.Lock] = collections.defaultdict(threading.Lock)
        self.idem_locks: dict[tuple[str, str], asyncio.Lock] = {}

    def close(self) -> None:
        """Release the database connections (the app stays usable: they reopen when needed)."""
        self.ledger.dispose()

    # --- bounded work ------------------------------------------------------------------------
    async def work(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in a worker thread: at most ``max_concurrent`` at once (others wait up to
        ``queue_timeout_s``: 503), each answered within ``request_timeout_s`` (503)."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.cfg.max_concurrent)
        sem = self._sem
        try:
            await asyncio.wait_for(sem.acquire(), timeout=self.cfg.queue_timeout_s)
        except TimeoutError:
            raise Problem(
                503,
                "Service Unavailable",
                f"the service is busy ({self.cfg.max_concurrent} requests at work); retry shortly",
                "busy",
                headers={"Retry-After": "2"},
            ) from None
        loop = asyncio.get_running_loop()

        def job() -> T:
            try:
                return fn(*args)
            finally:  # the slot is free when the work ends, not when the client stops waiting
                loop.call_soon_threadsafe(sem.release)

        try:
            fut = loop.run_in_executor(self.executor, job)
        except RuntimeError:
            sem.release()
            raise
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout=self.cfg.request_timeout_s)
        except TimeoutError:
            fut.add_done_callback(_abandoned)
            raise Problem(
                503,
                "Service Unavailable",
                f"the request took longer than {self.cfg.request_timeout_s:g} s, this service's limit per request",
                "timeout",
            ) from None

    # --- runs kept rated ---------------------------------------------------------------------
    def run_row(self, run_id: int) -> dict[str, Any] | None:
        from ..ledger.errors import LedgerError

        if run_id < 1 or run_id > 2**31:
            return None
        try:
            return self.ledger.run(run_id)
        except LedgerError as exc:
            if str(exc).startswith(f"no run {run_id} "):
                return None
            raise

    def rated_run(self, run_id: int, with_results: bool = True) -> RatedRun:
        """The run's rulebook, tables (and results, re-rated from the stored rows), cached."""
        with self._runs_lock:
            got = self._runs.get(run_id)
            if got is not None and (got.results is not None or not with_results):
                self._runs.move_to_end(run_id)
                return got
            lock = self._run_locks[run_id]
        with lock:
            with self._runs_lock:
                got = self._runs.get(run_id)
            if got is None:
                if self.run_row(run_id) is None:
                    raise Problem(404, "Not Found", f"no run {run_id} in the ledger", "no-run")
                got = self._materialise(run_id)
            if with_results and got.results is None:
                from ..ledger.replay import Materials, rerate

                got.results = rerate(Materials(got.run, got.plan, got.data, got.tables, got.book.parent, got.book))
            with self._runs_lock:
                self._runs[run_id] = got
                self._runs.move_to_end(run_id)
                while len(self._runs) > self.cfg.cached_runs:
                    self._runs.popitem(last=False)
            return got

    def _materialise(self, run_id: int) -> RatedRun:
        from ..ledger import canonical as C

        run = self.ledger.run(run_id)
        folder = self.folder / "runs" / str(run_id)
        manifest = json.loads(self.ledger.blob(run["rulebook_manifest"]))
        book_dir = folder / "book"
        for rel, digest in manifest["files"].items():
            target = book_dir / _safe_rel(rel)
            data = self.ledger.blob(digest)
            if not target.is_file() or target.read_bytes() != data:
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                target.write_bytes(data)
        book = book_dir / _safe_rel(manifest["main"])
        plan = load(book)
        if plan.hash != run["rulebook_hash"]:
            raise RuleEngineError(
                f"run {run_id}: the stored rulebook compiles to {plan.hash}, not {run['rulebook_hash']}"
            )
        data_path = folder / "input.parquet"
        if run["input_blob"]:
            stored = self.ledger.blob(run["input_blob"])
            if (
                not data_path.is_file()
                or hashlib.sha256(data_path.read_bytes()).digest() != hashlib.sha256(stored).digest()
            ):
                data_path.write_bytes(stored)
        tables = C.tables_from_json(self.ledger.blob(run["benchmarks_blob"]))
        return RatedRun(run, plan, book, data_path, tables)


def _abandoned(fut: Any) -> None:
    """Work that outlived its request: its outcome is logged, never raised into the event loop."""
    import logging

    exc = fut.exception() if not fut.cancelled() else None
    if exc is not None:
        logging.getLogger("ruleengine.service").info(
            "work abandoned by the time limit ended with %s: %s", type(exc).__name__, exc
        )


def _safe_rel(rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise RuleEngineError(f"stored rulebook file name {rel!r} is not a plain relative path")
    return p
