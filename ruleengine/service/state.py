"""What one service process holds: the ledger, the keys, the registry, the work limits and the runs
kept rated in memory (for explain, what-it-takes, reports and one-firm ratings)."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar, overload

from starlette.responses import Response

from ..errors import RuleEngineError
from ..ledger import Ledger, open_ledger
from ..rulebook.loader import load
from . import heap
from .config import ServiceConfig
from .keys import KeyRing, KeyWatch
from .registry import Registry, write_atomic
from .writer import Writer

T = TypeVar("T")
_job = threading.local()  # the Ticket of the bounded work running in this thread


class Abandoned(RuleEngineError):
    """The request's time limit passed before its run was handed to the ledger writer."""


class Ticket:
    """One piece of bounded work: whether its request gave up (time limit) and whether its run was
    handed to the ledger writer. Both change under ``lock``, so exactly one of them wins: a request
    answered 503 (time limit) recorded nothing; a run handed over is committed and answered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.abandoned = False
        self.handed = False
        # where the request's time went, for its Server-Timing header (:meth:`mark`): (name, ms)
        self.stages: list[tuple[str, float]] = []
        self.last = time.perf_counter()

    def mark(self, stage: str) -> None:
        """``stage`` has just ended: its time since the previous mark is recorded."""
        now = time.perf_counter()
        self.stages.append((stage, (now - self.last) * 1000))
        self.last = now


def mark(stage: str) -> None:
    """The bounded work running in this thread has just finished ``stage`` (``turn``, ``rate``,
    ``record``): its time since the previous mark goes into the response's Server-Timing header.
    Outside bounded work (a test calling a handler directly), nothing happens."""
    ticket: Ticket | None = getattr(_job, "ticket", None)
    if ticket is not None:
        ticket.mark(stage)


def server_timing(stages: list[tuple[str, float]]) -> str:
    """``queue;dur=0.112, rate;dur=1.650, ...``: the W3C Server-Timing syntax, milliseconds."""
    return ", ".join(f"{name};dur={ms:.3f}" for name, ms in stages)


@dataclass
class Pending:
    """Work whose answer waits for the ledger: ``finish(run row)`` once ``fut`` says it is committed."""

    fut: concurrent.futures.Future[dict[str, Any]]
    finish: Callable[[dict[str, Any]], Any]
    # a ledger write made (by the writer, waited for) if the run is not committed after all: the
    # bank's access line that was to land with it (app._rate_one)
    failed: Callable[[], Any] | None = None


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


def state_folder(path: str | Path) -> Path:
    """``--state-dir``, made if missing (mode 0700); a folder that cannot be made or used is an
    error that names it (``serve`` stops at once, before any request)."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-")  # noqa: SIM115 - closed at once
        probe.close()
    except OSError as exc:
        raise RuleEngineError(f"cannot use the state folder {folder}: {exc.strerror or exc}") from None
    return folder


class State:
    def __init__(self, cfg: ServiceConfig) -> None:
        self.cfg = cfg
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if cfg.state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ruleengine-service-")
            self.folder = Path(self._tmp.name)
        else:
            self.folder = state_folder(cfg.state_dir)
        # reads through pooled connections, one per worker thread (a new SQLite connection per read
        # costs ~1-2 ms of CPU); writes go through the writer's own engine (below)
        self.ledger: Ledger = open_ledger(cfg.ledger, pooled=cfg.max_concurrent + 2)
        self.key_watch = KeyWatch(cfg.keys, cfg.keys_check_s)
        from ..ledger import db

        # the writer's own engine: one pooled connection (SQLite: WAL + synchronous=FULL by default)
        self.write_engine = db.writer_engine(cfg.ledger, cfg.ledger_sync)
        self.writer = Writer(self.write_engine)
        self.registry = Registry(self.ledger.engine, self.folder)
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=cfg.max_concurrent + 2)
        # One-firm ratings of this process take turns for their CPU part (rating, the ledger's hashing):
        # under one GIL two of them at once only interleave, and both finish late; in turn, the first
        # finishes in its own time and the second no later than before. Other work is not held up.
        self.turns = threading.Lock()
        self._sem: asyncio.Semaphore | None = None
        self._runs: collections.OrderedDict[int, RatedRun] = collections.OrderedDict()
        self._runs_lock = threading.Lock()
        self._run_locks: dict[int, list[Any]] = {}  # [lock, users]: only while a run is being materialised
        self.idem_locks: dict[tuple[str, str], asyncio.Lock] = {}
        import uuid

        # this process's name in the ledger's idempotency claims (store.idem_claim)
        self.owner = f"{os.getpid()}:{uuid.uuid4().hex[:16]}"

    @property
    def keys(self) -> KeyRing:
        """The API keys, reloaded when the keys file changes (or on SIGHUP: :meth:`reload_keys`)."""
        return self.key_watch.ring()

    def reload_keys(self) -> bool:
        return self.key_watch.reload()

    def close(self) -> None:
        """Commit what the writer holds and release the database connections (the app stays usable:
        a new writer thread and new connections start when needed)."""
        from ..ledger import db

        self.writer.close()
        w = self.writer.stats
        if w.runs or w.calls:  # for the benchmark: does group commit group?
            import logging

            logging.getLogger("ruleengine.service").info(
                "ledger writer: %d runs in %d groups (largest %d, sizes %s), %d other writes, %.1f ms CPU per commit "
                "group, %d errors",
                w.runs,
                w.groups,
                w.largest_group,
                dict(sorted(w.group_sizes.items())),
                w.calls,
                w.busy_s * 1000 / max(1, w.groups + w.calls),
                w.errors,
            )
        self.writer = Writer(self.write_engine)
        self.write_engine.dispose()
        self.ledger.dispose()
        if self.cfg.ledger_sync != "journal":
            db.leave_wal(self.ledger.engine)  # the file back to its rollback journal when nobody has it open

    # --- recording ---------------------------------------------------------------------------
    def record(
        self,
        book: Path,
        data: Any,
        results: Any,
        plan: Any,
        also: list[Callable[[Any], None]] | None = None,
        **kw: Any,
    ) -> concurrent.futures.Future[Any]:
        """Prepare the run here (this worker thread: the hashing) and hand it to the one writer.
        ``also``: writes committed in the run's transaction (``ledger.record.Prepared.also``).

        Inside bounded work, the hand-over is refused (:class:`Abandoned`) once the request's time
        limit has passed: a request answered 503 records no run."""
        from ..ledger import record as R

        prepared = R.prepare(book, plan, data, results, background=False, **kw)
        prepared.also = list(also or [])
        ticket: Ticket | None = getattr(_job, "ticket", None)
        if ticket is None:
            return self.writer.submit(prepared)
        with ticket.lock:
            if ticket.abandoned:
                raise Abandoned("the request's time limit passed before its run was recorded")
            fut = self.writer.submit(prepared)
            ticket.handed = True
        return fut

    def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Another ledger write (access log, idempotency answer) through the writer; waits for it."""
        return self.writer.call(fn, *args).result()

    # --- bounded work ------------------------------------------------------------------------
    @overload
    async def work(self, fn: Callable[..., Pending], *args: Any) -> Any: ...
    @overload
    async def work(self, fn: Callable[..., T], *args: Any) -> T: ...
    async def work(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` in a worker thread: at most ``max_concurrent`` at once (others wait up to
        ``queue_timeout_s``: 503), each answered within ``request_timeout_s`` (503)."""
        ticket = Ticket()  # from here: the wait for a slot counts as the request's `queue` stage
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.cfg.max_concurrent)
        sem = self._sem
        try:
            if sem.locked():
                async with asyncio.timeout(self.cfg.queue_timeout_s):
                    await sem.acquire()
            else:  # a free slot: taken at once (no timer, no task)
                await sem.acquire()
        except TimeoutError:
            raise Problem(
                503,
                "Service Unavailable",
                f"the service is busy ({self.cfg.max_concurrent} requests at work); retry shortly",
                "busy",
                headers={"Retry-After": "2"},
            ) from None
        loop = asyncio.get_running_loop()

        def job() -> Any:
            _job.ticket = ticket
            mark("queue")  # a work slot and a thread: from the call of work() to here
            try:
                return fn(*args)
            finally:  # the slot is free when the work ends, not when the client stops waiting
                mark("work")  # what the job did after its last mark (all of it when it marks none)
                _job.ticket = None
                loop.call_soon_threadsafe(sem.release)

        try:
            fut = loop.run_in_executor(self.executor, job)
        except RuntimeError:
            sem.release()
            raise
        try:
            async with asyncio.timeout(self.cfg.request_timeout_s):
                out = await asyncio.shield(fut)
        except TimeoutError:
            with ticket.lock:
                ticket.abandoned = True
                handed = ticket.handed
            if not handed:
                fut.add_done_callback(_abandoned)
                raise Problem(
                    503,
                    "Service Unavailable",
                    f"the request took longer than {self.cfg.request_timeout_s:g} s, this service's limit per "
                    "request; nothing was recorded",
                    "timeout",
                ) from None
            out = await fut  # its run is on its way into the ledger: the answer is owed
        if isinstance(out, Pending):  # the slot is free again while the writer commits
            try:
                row = await asyncio.wrap_future(out.fut)
            except BaseException:
                if out.failed is not None:
                    await asyncio.wrap_future(self.writer.call(out.failed))
                raise
            ticket.mark("commit")
            out = out.finish(row)
        if isinstance(out, Response):
            out.headers.append("server-timing", server_timing(ticket.stages))
        return out

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
            held = self._run_locks.setdefault(run_id, [threading.Lock(), 0])
            held[1] += 1
        try:
            return self._rated_run_locked(run_id, held[0], with_results)
        finally:
            with self._runs_lock:  # bounded: a lock lives only while someone materialises the run
                held[1] -= 1
                if held[1] == 0:
                    self._run_locks.pop(run_id, None)

    def _rated_run_locked(self, run_id: int, lock: threading.Lock, with_results: bool) -> RatedRun:
        with lock:
            with self._runs_lock:
                got = self._runs.get(run_id)
            fresh = got is None or (with_results and got.results is None)
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
            if fresh:  # a run's materials live until evicted: out of the collector's way (heap.py)
                heap.settle()
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
                write_atomic(target, data)
        book = book_dir / _safe_rel(manifest["main"])
        plan = load(book)
        if plan.hash != run["rulebook_hash"]:
            raise RuleEngineError(
                f"run {run_id}: the stored rulebook compiles to {plan.hash}, not {run['rulebook_hash']}"
            )
        data_path = folder / "input.parquet"
        if run["input_blob"]:
            stored = C.stored_parquet(self.ledger.blob(run["input_blob"]))
            if not data_path.is_file() or data_path.read_bytes() != stored:
                write_atomic(data_path, stored)
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
