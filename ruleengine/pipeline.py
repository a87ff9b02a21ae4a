"""The rating pipeline, in one place. Everything that rates — the CLI, the Python API, ``diff``,
``compare``, ``explain``, the author tests, the benchmarks and the chunked runner — goes through it:

    read the data once            read(data, plans)          only the columns the plans need
    → check it against the plan   prepare(plan, raw)         the data contract: types, ranges, ids
    → stage 1 (per row)           engine.stage1
    → partials → merge → tables   engine.benchmarks          exact, mergeable across partitions
    → stage 2 (per row)           engine.stage2
    → results                     engine.results.build

``progress(phase, done, total)`` is called as the phases go by (for a progress bar).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import Diagnostic, RulebookError, SourceLocation

if TYPE_CHECKING:
    from .engine.benchmarks import BenchmarkTable
    from .engine.results import Results
    from .io.data import Batch, RawTable
    from .rulebook.plan import Plan

Progress = Callable[[str, int, int], None]

# Columns the analyses read besides a rulebook's own inputs (names, groupings, loan amounts).
CONTEXT_COLUMNS = ("firm_name", "industry", "size", "city", "grid_region", "loan_amount_10k_cny")

PHASES = ("read", "check", "stage 1", "benchmarks", "stage 2", "results")


class NotARulebook(RulebookError):
    """A library (or another YAML file without a rating) given where a rulebook is needed."""

    def __init__(self, plan: Plan):
        what = (
            f"this is a library (imported by rulebooks with `imports: [lib/{plan.id}]`), not a rulebook"
            if plan.is_library
            else "this file declares no rating"
        )
        where = SourceLocation(plan.file, 1, 1, "library" if plan.is_library else "ratings")
        super().__init__([Diagnostic(f"{what}: it has no rating to compute", where)])


def require_rulebook(plan: Plan) -> Plan:
    """``plan``, if it is a rulebook with a rating; a located :class:`NotARulebook` otherwise."""
    if plan.is_library or not plan.ratings:
        raise NotARulebook(plan)
    return plan


def read(
    data: Any, plans: Sequence[Plan], extra: Sequence[str] = (), *, mapping: Any = None, read_options: Any = None
) -> RawTable:
    """Read ``data`` once: the columns any of ``plans`` declares as inputs, plus ``extra``.

    Every other column's name is kept (for the did-you-mean check on headers) but not read.
    ``mapping``: a column mapping file (path or dict) for a provider's headers and units;
    ``read_options``: a ``ReadOptions`` or dict (encoding, delimiter, thousands, sheet, missing,
    id_check); see docs/data-contract.md."""
    from .io import data as _data

    if isinstance(data, _data.RawTable):
        return data
    text, wanted = _columns_to_read(plans, extra)
    return _data.read_any(data, text, only=wanted, options=read_options, mapping=mapping)


def reads_inputs_alone(plan: Plan) -> bool:
    """Whether data read by :func:`read` for ``[plan]`` holds ``plan``'s input columns exactly as
    the ledger's own read of the data does (``ledger.canonical.input_table``: the plan's text
    inputs as text, nothing else): true unless the region column, read as text for the plan's
    divisions, is one of its number inputs. Then what was read may be recorded instead of read
    again."""
    text, _ = _columns_to_read([plan], ())
    own = {n for n, spec in plan.inputs.items() if spec.type in ("string", "category")}
    return {n for n in text if n in plan.inputs} == own


_TO_READ: dict[tuple[Any, ...], tuple[list[Any], list[str], list[str]]] = {}


def _columns_to_read(plans: Sequence[Plan], extra: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the text columns, every column) that ``plans`` and ``extra`` read; once per plans (a service
    reads one firm per request with the same plan), kept with weak references to the plans they
    were made for (a plan's id may be reused once it is gone: such an entry is not a hit)."""
    import weakref

    key = (*map(id, plans), None, *extra)
    hit = _TO_READ.get(key)
    if hit is not None and all(ref() is plan for ref, plan in zip(hit[0], plans, strict=True)):
        return hit[1], hit[2]
    text: dict[str, None] = {}
    wanted: dict[str, None] = {}
    for plan in plans:
        for name, spec in plan.inputs.items():
            wanted[name] = None
            if spec.type in ("string", "category"):
                text[name] = None
    for name in extra:
        wanted[name] = None
        text[name] = None
    if any(plan.divisions for plan in plans):  # a region column, if any, tells the firm's division
        wanted["region"] = text["region"] = None
    if len(_TO_READ) >= 64:
        _TO_READ.clear()
    _TO_READ[key] = ([weakref.ref(plan) for plan in plans], list(text), list(wanted))
    return list(text), list(wanted)


def prepare(plan: Plan, raw: RawTable, *, consume: bool = False, any_jurisdiction: bool = False) -> Batch:
    """Check ``raw`` against the plan's data contract and type its columns.

    ``consume``: ``raw`` is not used again, so its columns may be converted in place and released
    (the fast path of a single rating); otherwise ``raw`` is left as it was for the next plan.
    ``any_jurisdiction``: rate (and count in the peer groups) firms outside the rulebook's
    jurisdiction too, recorded per row (see :func:`judge`)."""
    from .io import data as _data

    if not consume:
        from dataclasses import replace

        raw = replace(raw, columns=dict(raw.columns), issues=list(raw.issues), names=list(raw.names), owned=False)
    batch = judge(plan, _data.prepare(raw, plan.inputs, plan.id), raw, any_jurisdiction)
    if consume:  # hand the read buffers back before evaluation grows
        _hand_back(trim=False)
    return batch


def judge(plan: Plan, batch: Batch, raw: RawTable, any_jurisdiction: bool = False) -> Batch:
    """Each row's jurisdiction under ``plan`` (io.jurisdiction): rows outside the divisions the
    rulebook declares become unrated and leave its peer groups, unless ``any_jurisdiction``."""
    if not plan.divisions:
        return batch
    from .io.formats import MISSING_TOKENS
    from .io.jurisdiction import assign

    missing = tuple(getattr(raw.options, "missing", None) or MISSING_TOKENS)
    return assign(
        batch, raw.columns.get("region"), missing, plan.id, plan.jurisdiction, plan.divisions, any_jurisdiction
    )


def batch(plan: Plan, data: Any) -> Batch:
    """Read and check: the typed columns of ``data`` for ``plan`` (the first two phases)."""
    from .io.data import RawTable

    return prepare(plan, read(data, [plan]), consume=not isinstance(data, RawTable))


def evaluate_batch(
    plan: Plan,
    batch: Batch,
    benchmarks: Mapping[str, BenchmarkTable] | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> Results:
    """Stage 1 → partials → tables → stage 2 over one batch, then the results table."""
    from . import __version__
    from .engine import benchmarks as bm
    from .engine.evaluator import advance, finish, stage1
    from .engine.results import build

    tick = progress or _quiet
    frame = stage1(plan, batch, benchmarks, overrides)
    tick("stage 1", 1, 1)
    while (stage := frame.next_benchmark_stage()) is not None:
        pending = [n for n in plan.order if plan.nodes[n].stage == stage and n not in frame.done]
        if any(n not in frame.given_tables and n not in frame.overrides for n in pending):
            frame.given_tables.update(bm.tables(plan, bm.merge(bm.partials(frame, stage))))
            tick("benchmarks", 1, 1)
        advance(frame, _next_stage_after(plan, stage))
    advance(frame)
    ev = finish(frame)
    tick("stage 2", 1, 1)
    results = build(plan, batch, ev, __version__)
    tick("results", 1, 1)
    return results


def _next_stage_after(plan: Plan, stage: int) -> int | None:
    """Evaluate up to (not including) the benchmark stage after ``stage``."""
    later = [
        plan.nodes[n].stage for n in plan.order if plan.nodes[n].kind == "benchmark" and plan.nodes[n].stage > stage
    ]
    return min(later, default=None)


def rate(
    plan: Plan,
    data: Any,
    *,
    benchmarks: Mapping[str, BenchmarkTable] | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    raw: RawTable | None = None,
    mapping: Any = None,
    read_options: Any = None,
    any_jurisdiction: bool = False,
) -> Results:
    """Rate every firm-year of ``data`` with ``plan``; ``raw``: the data already read (by
    :func:`read`, shared between several plans); ``mapping``, ``read_options``: see :func:`read`;
    ``any_jurisdiction``: see :func:`prepare`."""
    require_rulebook(plan)
    tick = progress or _quiet
    shared = raw is not None
    if raw is None:
        raw = read(data, [plan], mapping=mapping, read_options=read_options)
        from .io.data import RawTable

        shared = isinstance(data, RawTable)
    tick("read", 1, 1)
    batch = prepare(plan, raw, consume=not shared, any_jurisdiction=any_jurisdiction)
    tick("check", 1, 1)
    return evaluate_batch(plan, batch, benchmarks, overrides, tick)


def context_names(plan: Plan) -> list[str]:
    """Columns an explanation shows next to the rating: CONTEXT_COLUMNS and every input's
    acquisition provenance (``<input>_source``, ``_coverage``, ``_policy``, ...; io.data)."""
    from .io.data import PROVENANCE_SUFFIXES

    names = [c for c in CONTEXT_COLUMNS if c not in plan.inputs]
    names += [f"{i}{s}" for i in plan.inputs for s in PROVENANCE_SUFFIXES]
    return names


def rate_with_context(
    plan: Plan,
    data: Any,
    *,
    benchmarks: Mapping[str, BenchmarkTable] | None = None,
    mapping: Any = None,
    read_options: Any = None,
    any_jurisdiction: bool = False,
    firm: str | None = None,
) -> Results:
    """:func:`rate`, keeping the context columns (:func:`context_names`) the data has, as text,
    in ``results.context`` (for explanations: the firm's name, city, size, inputs' provenance).

    ``firm``: only that firm's rows (every year, as :meth:`Results.find` matches it) get their
    context as text (:class:`~ruleengine.engine.results.RowText`); every row is still rated, so
    that the benchmarks are the whole portfolio's. The data as read is released as it is typed
    (issue #11.4: no row's context as a Python string but the explained firm's)."""
    import numpy as np

    from .io.data import RawTable, text_values

    raw = read(data, [plan], context_names(plan), mapping=mapping, read_options=read_options)
    extra = [c for c in raw.columns if c not in plan.inputs]
    n = raw.n
    if firm is None:
        context: dict[str, Any] = {c: text_values(raw.columns[c], raw.n) for c in extra}
        results = rate(plan, None, benchmarks=benchmarks, raw=raw, any_jurisdiction=any_jurisdiction)
    else:
        from .engine.results import RowText

        require_rulebook(plan)
        as_read = {c: raw.columns[c] for c in extra}  # Arrow columns, until the firm's rows are known
        batch = prepare(plan, raw, consume=not isinstance(data, RawTable), any_jurisdiction=any_jurisdiction)
        del raw
        results = evaluate_batch(plan, batch, benchmarks)
        rows = np.asarray(results.find(firm), dtype=np.int64)
        codes = results.batch.firm_codes if results.batch is not None else None
        if len(rows) and codes is not None and len(codes) == n:
            firm_codes = codes[rows]
            rows = np.union1d(rows, np.flatnonzero(np.isin(codes, firm_codes[firm_codes >= 0])))
        context = {c: RowText(rows, _take_text(col, rows, n)) for c, col in as_read.items()}
        del as_read
    if results.batch is not None and results.batch.n == n:
        results.context = context
    return results


def _take_text(col: Any, rows: Any, n: int) -> list[str]:
    """A column as read, at ``rows`` only, as text ('' for missing cells; io.data.text_values)."""
    from .io.data import text_values

    if "pyarrow" in sys.modules and isinstance(col, sys.modules["pyarrow"].Array | sys.modules["pyarrow"].ChunkedArray):
        import pyarrow as pa

        return text_values(col.take(pa.array(rows, pa.int64())), len(rows))
    values = text_values(col, n)
    return [values[j] for j in rows.tolist()]


def release_memory() -> None:
    """Hand memory freed by a big step (one chunk's or one method's rating) back to the system:
    objects in reference cycles (an evaluation's frames), the pages Arrow's allocator keeps for
    reuse, and — with glibc — the free pages of the C heap, where numpy's arrays of a chunk's
    size end up (glibc raises its mmap threshold after the first free, so they fragment the heap
    and the process keeps them: 1.2 GB of 2.5 GB at 2M rows in compare; issue #11.4)."""
    import gc

    gc.collect()
    _hand_back(trim=True)


def _hand_back(trim: bool) -> None:
    """The pages Arrow's allocator keeps for reuse (and with ``trim``, glibc's free heap pages)
    given back to the system — unless this process keeps its memory (:func:`keep_memory`)."""
    if _KEEP[0]:
        return
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    fn = _malloc_trim() if trim else None
    if fn is not None:
        fn(0)


_KEEP: list[bool] = [False]


def keep_memory() -> None:
    """From now on this process keeps the memory it frees (a server that keeps its heap warm,
    ``ruleengine.service.heap.keep_warm``): :func:`release_memory` and a consumed read no longer
    hand pages back to the system, which the next big request would fault in again."""
    _KEEP[0] = True


RELEASE_ABOVE = 1 << 30  # bytes of resident memory above the floor at which freed memory is handed back
_FLOOR: list[int] = [0]  # resident bytes right after the last release (what the process keeps alive)


def release_memory_if_large() -> None:
    """Between the chunks of a big run, :func:`release_memory` only when the process holds more
    than RELEASE_ABOVE beyond what it held right after its last release: releasing costs page
    faults when the next chunk touches the memory again (compare at 2M: about twice the CPU), so a
    run that fits comfortably does not pay it; without it, glibc's heap fragments and a 2M-row run
    in 500k-row chunks reached 2.6 GB (issue #11.4). Measured from that floor, not from zero: a
    process that keeps a lot alive between chunks (a Dask worker's persisted partitions, ~1 GB per
    worker at 10M rows) would otherwise release, and fault its heap in again, after every task
    (+25% CPU per task, benchmarks/SCALE_ENGINES.md, session 5)."""
    if _resident_bytes() > _FLOOR[0] + RELEASE_ABOVE:
        release_memory()
        _FLOOR[0] = _resident_bytes()


def _resident_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 where it cannot be read: never release)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


HEAP_MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic mmap threshold (64-bit)
HEAP_TRIM_THRESHOLD = 64 << 20  # twice that, as glibc's dynamic trim threshold would be
_TUNED: list[bool] = []


def keep_heap_for_reuse() -> bool:
    """Set glibc's heap thresholds to what its dynamic defaults reach (mmap above 32 MB, trim above
    64 MB), once per process, in every process that rates partitions (the chunked runner, every
    Spark and Dask worker: ``partition.warm_up``); the runners hand memory back after a partition
    themselves (:func:`release_memory_if_large`). True when set.

    Why: in a process started with ``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_MMAP_THRESHOLD_`` in its
    environment (Dask's nanny gives its workers ``MALLOC_TRIM_THRESHOLD_=65536``) glibc keeps
    neither freed heap memory nor a raised mmap threshold: every array of a partition's size is
    mmapped afresh and its pages faulted in, about twice the CPU of rating a partition (0.8 → 1.6
    µs/row for the benchmark pass). Without that environment glibc starts at a 128 kB mmap threshold
    and raises it only as mmapped blocks are freed: a fresh process (each Spark Python worker) maps
    and faults in its first partitions afresh, and a steady task still took 15,000–20,000 page faults
    per 600k rows instead of 2,000–4,000 (benchmarks/SCALE_ENGINES.md, session 5).

    Also here: numpy's advice to the kernel to back every array of 4 MB or more with huge pages
    (``madvise(MADV_HUGEPAGE)``), turned off (:func:`_no_huge_page_advice`)."""
    if _TUNED:
        return _TUNED[0]
    _no_huge_page_advice()
    done = False
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            mallopt = ctypes.CDLL(None).mallopt
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            done = bool(mallopt(-3, HEAP_MMAP_THRESHOLD)) and bool(mallopt(-1, HEAP_TRIM_THRESHOLD))  # M_MMAP_/M_TRIM_
        except (OSError, AttributeError):
            done = False
    _TUNED.append(done)
    return done


def _no_huge_page_advice() -> None:
    """Turn off numpy's huge-page advice for this process, unless ``NUMPY_MADVISE_HUGEPAGE`` says
    otherwise (numpy's own switch, read when numpy is imported).

    numpy marks the memory of every array of 4 MB or more ``MADV_HUGEPAGE``. A partition's arrays
    are that size and live in glibc's heap, reused from one partition to the next
    (:func:`keep_heap_for_reuse`). Under the usual ``defrag=madvise`` setting, a first touch of
    such memory makes the kernel try to assemble a 2 MB page (compacting memory) before it falls
    back to a 4 kB one. The fault count stays the same, but the system CPU per fault did not. In a
    fresh Spark Python worker's first 500k-row task (10M rows, 20 partitions; ~59,400 faults
    either way): 0.80–1.16 s of system CPU with the advice, 0.17–0.33 s without
    (benchmarks/SCALE_ENGINES.md, session 8)."""
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray  # type: ignore[no-redef]
    switch = getattr(multiarray, "_set_madvise_hugepage", None)  # what numpy's own __init__ calls
    if switch is not None:
        switch(False)


_TRIM: list[Any] = []


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another C library, another system)."""
    if not _TRIM:
        fn = None
        if sys.platform.startswith("linux"):
            import ctypes

            try:
                fn = ctypes.CDLL(None).malloc_trim
                fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):
                fn = None
        _TRIM.append(fn)
    return _TRIM[0]


def _quiet(phase: str, done: int, total: int) -> None:
    return None
