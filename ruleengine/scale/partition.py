"""Firm-complete partitions and the phases over them.

A partition is **firm-complete** when every row of a firm (all its years) is in it: ``prev`` and
``baseline`` look up the firm's other years, and the duplicate (firm_id, year) check compares a
row with the firm's other rows, so a firm split across partitions would be rated differently.
The runners here repartition by :func:`firm_keys` (a stable 64-bit hash of the firm id as the data
contract reads it: text, surrounding spaces removed) themselves; :func:`check_firm_complete`
verifies a caller's own partitioning.

:func:`rate_partitions` runs the phases over in-memory partitions: one pass per benchmark stage
(stage 1 → partials per partition, merged once, exactly, into tables) and a final pass (stage 2).
Its results, put back in input order, are byte-identical to the one-batch run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import RuleEngineError

if TYPE_CHECKING:
    from pathlib import Path

    from ..engine.benchmarks import BenchmarkTable, Partials
    from ..engine.results import Results
    from ..io.data import Batch, RawTable
    from ..rulebook.plan import Plan

ROW = "__row"  # the column carrying each row's 0-based position in the whole input

_P = np.uint64(0x100000001B3)  # FNV prime: the polynomial's base
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_BLOCK_BYTES = 1 << 22  # bytes hashed at a time (the per-byte arrays are 8× that)


class FirmSplitError(RuleEngineError):
    """A partitioning that puts one firm's rows in more than one partition."""


def is_url(data: str | Path) -> bool:
    """A location Spark (Hadoop) or fsspec reads itself: ``s3a://…``, ``hdfs://…``, ``file://…``."""
    import re

    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(data)))


# -- the firm hash --------------------------------------------------------------------------------


def firm_text(ids: Any) -> Any:
    """Firm ids as a pyarrow string array the way the data contract reads them: text, surrounding
    spaces removed, missing as ''. Accepts Arrow arrays (also dictionaries), numpy arrays, lists."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    if not isinstance(ids, pa.Array):
        arr = np.asarray(ids)
        if arr.dtype == object:
            vals = [_id_text(v) for v in arr.tolist()]
            ids = pa.array(vals, type=pa.string())
        else:
            ids = pa.array(arr)
    if pa.types.is_dictionary(ids.type):
        ids = ids.cast(ids.type.value_type)
    if pa.types.is_floating(ids.type):  # whole floats as their integer text, as the data contract does
        f = ids.to_numpy(zero_copy_only=False)
        if np.all(np.isnan(f) | (f == np.round(f))):
            ids = pc.if_else(pc.is_nan(ids), pa.scalar(None, pa.int64()), ids.cast(pa.int64(), safe=False))
    if not pa.types.is_string(ids.type):
        ids = ids.cast(pa.string())
    return pc.fill_null(pc.utf8_trim_whitespace(ids), "")


def _id_text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _hash_strings(arr: Any) -> np.ndarray:
    """A stable 64-bit hash of each string of a pyarrow string array (no nulls): a polynomial in
    the UTF-8 bytes mod 2**64, with the length mixed in and splitmix64's finaliser. Vectorised."""
    n = len(arr)
    out = np.zeros(n, dtype=np.uint64)
    if not n:
        return out
    _, offs_buf, data_buf = arr.buffers()
    offs = np.frombuffer(offs_buf, dtype=np.int32)[arr.offset : arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, dtype=np.uint8)
    lengths = np.diff(offs)
    maxlen = int(lengths.max()) if n else 0
    powers = np.ones(maxlen + 1, dtype=np.uint64)
    if maxlen:
        powers[1:] = _P
        with np.errstate(over="ignore"):
            powers = np.cumprod(powers, dtype=np.uint64)  # P**k mod 2**64 (wraps)
    start = 0
    while start < n:  # blocks of rows with at most _BLOCK_BYTES bytes
        stop = int(np.searchsorted(offs, offs[start] + _BLOCK_BYTES, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        lo, hi = int(offs[start]), int(offs[stop])
        block = data[lo:hi].astype(np.uint64)
        ln = lengths[start:stop]
        ends = offs[start + 1 : stop + 1] - lo
        exp = np.repeat(ends, ln) - 1 - np.arange(hi - lo)
        with np.errstate(over="ignore"):
            contrib = block * powers[exp]
            nonempty = ln > 0
            h = np.zeros(stop - start, dtype=np.uint64)
            if contrib.size:
                starts = (offs[start:stop] - lo)[nonempty]
                h[nonempty] = np.add.reduceat(contrib, starts)
            out[start:stop] = h + ln.astype(np.uint64) * _MIX2
        start = stop
    with np.errstate(over="ignore"):  # splitmix64's finaliser: every input bit moves every output bit
        out ^= out >> np.uint64(30)
        out *= _MIX1
        out ^= out >> np.uint64(27)
        out *= _MIX2
        out ^= out >> np.uint64(31)
    return out


def firm_keys(ids: Any) -> np.ndarray:
    """A stable 64-bit key per row (uint64) of the firm id as the data contract reads it: the same
    firm gives the same key on every machine and in every run. Hashes distinct ids only."""
    import pyarrow.compute as pc

    text = firm_text(ids)
    enc = pc.dictionary_encode(text)
    keys = _hash_strings(enc.dictionary)
    return keys[enc.indices.to_numpy(zero_copy_only=False)]


def buckets(ids: Any, k: int) -> np.ndarray:
    """The bucket ``0..k-1`` of each row: its firm key mod ``k`` (firm-complete by construction)."""
    return (firm_keys(ids) % np.uint64(max(k, 1))).astype(np.int64)


# -- the check --------------------------------------------------------------------------------------


def check_firm_complete(partitions: Sequence[Any], column: str = "firm_id") -> None:
    """Raise :class:`FirmSplitError` naming a firm whose rows are in more than one partition.

    ``partitions``: one entry per partition — an array of firm ids (Arrow, numpy, list), or a
    table (pyarrow Table, RawTable, or a mapping of columns) holding ``column``. Rows without a
    firm id are independent of each other and may be anywhere."""
    import pyarrow as pa

    texts, parts = [], []
    for i, p in enumerate(partitions):
        ids = _ids_of(p, column)
        t = firm_text(ids)
        texts.append(t)
        parts.append(np.full(len(t), i, dtype=np.int64))
    if not texts:
        return
    table = pa.table({"firm": pa.concat_arrays(texts), "part": np.concatenate(parts)})
    table = table.filter(pa.compute.not_equal(table["firm"], ""))
    if not table.num_rows:
        return
    grouped = table.group_by("firm").aggregate([("part", "count_distinct"), ("part", "distinct")])
    split = grouped.filter(pa.compute.greater(grouped["part_count_distinct"], 1))
    if split.num_rows:
        order = pa.compute.sort_indices(split, [("firm", "ascending")])
        split = split.take(order)
        firm = split["firm"][0].as_py()
        where = sorted(split["part_distinct"][0].as_py())
        more = f" (and {split.num_rows - 1} more firm{'s' if split.num_rows > 2 else ''})" if split.num_rows > 1 else ""
        raise FirmSplitError(
            f"partitions are not firm-complete: firm '{firm}' has rows in partitions "
            f"{', '.join(map(str, where))}{more}; all years of a firm must be in one partition "
            "(prev/baseline and the duplicate firm-year check look at the firm's other rows) — "
            "repartition by firm_id"
        )


def _ids_of(p: Any, column: str) -> Any:
    from ..io.data import RawTable

    if isinstance(p, RawTable):
        if column not in p.columns:
            raise FirmSplitError(f"{p.source}: no {column} column to check the partitioning with")
        return p.columns[column]
    if hasattr(p, "column_names") and hasattr(p, "column"):
        if column not in p.column_names:
            raise FirmSplitError(f"a partition has no {column} column to check the partitioning with")
        return p.column(column)
    if isinstance(p, Mapping):
        if column not in p:
            raise FirmSplitError(f"a partition has no {column} column to check the partitioning with")
        return p[column]
    return p


# -- the phases over partitions ---------------------------------------------------------------------


def benchmark_passes(plan: Plan) -> int:
    """How many passes over the data before the final one: one per benchmark stage."""
    return len({plan.nodes[n].stage for n in plan.order if plan.nodes[n].kind == "benchmark"})


def take_raw(raw: RawTable, idx: np.ndarray) -> RawTable:
    """Rows ``idx`` of a RawTable (Arrow, numpy or list columns) as a new RawTable: the file's row
    numbers and the problems found while reading travel with their rows."""
    from dataclasses import replace

    import pyarrow as pa

    idx = np.asarray(idx, dtype=np.int64)
    cols: dict[str, Any] = {}
    for k, v in raw.columns.items():
        if isinstance(v, pa.Array | pa.ChunkedArray):
            cols[k] = v.take(pa.array(idx, type=pa.int64()))
        elif isinstance(v, np.ndarray):
            cols[k] = v[idx]
        else:
            cols[k] = [v[i] for i in idx.tolist()]
    position = {int(old): new for new, old in enumerate(idx.tolist())}
    problems = [(position[i], column, msg) for i, column, msg in raw.row_problems if i in position]
    return replace(
        raw,
        columns=cols,
        n=len(idx),
        issues=list(raw.issues),
        names=list(raw.names),
        owned=False,
        row_numbers=raw.rows()[idx],
        row_problems=problems,
    )


def columns_read(plan: Plan) -> frozenset[str]:
    """The columns a runner reads for ``plan``: its inputs, and ``region`` when it declares a
    jurisdiction (the firm's division, see io.jurisdiction)."""
    return frozenset(plan.inputs) | ({"region"} if plan.divisions else set())


def prepare(plan: Plan, raw: RawTable, rows: np.ndarray | None) -> Batch:
    """The data contract over one partition; ``rows``: its rows' positions in the whole input
    (used for row numbers only when the partition does not carry the file's own)."""
    from ..io.data import prepare as _prepare
    from ..pipeline import judge

    return judge(plan, _prepare(raw, plan.inputs, plan.id, rows=None if raw.row_numbers is not None else rows), raw)


def partials_of(plan: Plan, batch: Batch, tables: Mapping[str, BenchmarkTable]) -> Partials:
    """One benchmark pass over one partition: stage 1 with the tables known so far → partials of
    the next benchmark stage."""
    from ..engine import benchmarks as bm
    from ..engine.evaluator import release, stage1

    frame = stage1(plan, batch, tables)
    out = bm.partials(frame)
    release(frame)  # its columns freed now, not at the next garbage collection
    return out


def final_of(plan: Plan, batch: Batch, tables: Mapping[str, BenchmarkTable]) -> Results:
    """The final pass over one partition: every node, benchmarks looked up in ``tables``."""
    from .. import __version__
    from ..engine.evaluator import advance, finish, stage1
    from ..engine.results import build

    frame = stage1(plan, batch, tables)
    advance(frame)
    return build(plan, batch, finish(frame), __version__)


def tables_of(plan: Plan, parts: Sequence[Partials]) -> dict[str, BenchmarkTable]:
    """Partials of every partition merged once (exact, in any order) → benchmark tables."""
    from ..engine import benchmarks as bm

    return bm.tables(plan, bm.merge(*parts))


def rate_partitions(
    plan: Plan,
    parts: Sequence[RawTable],
    rows: Sequence[np.ndarray] | None = None,
    *,
    check: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[Results]:
    """Rate in-memory partitions: each a RawTable, ``rows[i]`` its rows' 0-based positions in the
    whole input (issues and duplicate messages name those rows). One result per partition, its
    rows in input order (ascending ``rows[i]``): within a firm, which of two duplicate rows
    ``prev`` finds is decided by input order, as in the one-batch run."""
    from ..pipeline import require_rulebook

    require_rulebook(plan)
    if check:
        check_firm_complete(parts)
    if rows is not None:
        order = [np.argsort(np.asarray(r, dtype=np.int64), kind="stable") for r in rows]
        parts = [p if _sorted(o) else take_raw(p, o) for p, o in zip(parts, order, strict=True)]
        rows = [np.asarray(r, dtype=np.int64)[o] for r, o in zip(rows, order, strict=True)]
    batches = [prepare(plan, p, None if rows is None else rows[i]) for i, p in enumerate(parts)]
    tables: dict[str, BenchmarkTable] = {}
    for stage in range(benchmark_passes(plan)):
        tables.update(tables_of(plan, [partials_of(plan, b, tables) for b in batches]))
        if progress:
            progress("benchmarks", stage + 1, benchmark_passes(plan))
    return [final_of(plan, b, tables) for b in batches]


def raw_of(
    table: Any, plan: Plan, source: str, names: Sequence[str] | None = None, extra: Sequence[str] = ()
) -> RawTable:
    """A partition's Arrow table as the RawTable the data contract reads: only the columns the plan
    (and ``extra``) reads; ``names``: every column of the input (default: the table's), for the
    data contract's check of misspelt columns."""
    from ..io.data import RawTable

    keep = columns_read(plan) | set(extra)
    cols = {n: table.column(n) for n in table.column_names if n in keep}
    if names is None:
        names = [n for n in table.column_names if n != ROW]
    return RawTable(cols, table.num_rows, source, names=list(names))


Timing = tuple[int, float, float, float]  # rows, wall s, CPU s of the task, CPU s of its write


def task(
    plan: Plan,
    table: Any,
    rows: np.ndarray,
    tables: Mapping[str, BenchmarkTable],
    *,
    final: bool,
    source: str,
    names: Sequence[str] | None = None,
    view: Callable[..., Any] | None = None,
    extra: Sequence[str] = (),
    out_dir: str | Path | None = None,
    part: int = 0,
    started: tuple[float, float] | None = None,
) -> tuple[Any, Timing]:
    """The body of every Spark and Dask partition task (the chunked runner does the same per
    chunk): the partition ``table`` (Arrow, rows in input order, numbered ``rows``) → the data
    contract → stage 1 and the partials (``final=False``), or every node and then either
    ``view``'s table (default: :func:`result_table`) with ``__row`` appended, or, with
    ``out_dir``, the results written as ``out_dir/part-NNNNN.parquet`` (``sink.write_part``; the
    value is then the row count).

    Timing: rows, wall and CPU seconds (``time.thread_time``) from ``started`` (default: now) to
    the output ready (written, with ``out_dir``), and the CPU seconds of the write alone."""
    import time

    import pyarrow as pa

    from ..pipeline import release_memory_if_large

    w0, c0 = started or (time.perf_counter(), time.thread_time())
    raw = raw_of(table, plan, source, names, extra if final else ())
    batch = prepare(plan, raw, rows)
    write_cpu = 0.0
    if not final:
        value: Any = partials_of(plan, batch, tables)
    else:
        results = final_of(plan, batch, tables)
        if out_dir is not None:
            from .sink import write_part

            c1 = time.thread_time()
            value = write_part(results, out_dir, part)
            write_cpu = time.thread_time() - c1
        else:
            value = (view or result_table)(plan, results, raw).append_column(ROW, pa.array(rows, type=pa.int64()))
        del results
    timing = (len(rows), time.perf_counter() - w0, time.thread_time() - c0, write_cpu)
    del raw, batch
    release_memory_if_large()  # as the chunked runner does after each chunk (outside the clock)
    return value, timing


def warm_up() -> None:
    """Import what a partition task runs, so that a task's clock (:class:`TaskClock`) counts the
    partition's own work, not a fresh worker process's imports (paid once per process); and keep
    glibc's heap for reuse where the worker's environment turned that off
    (``pipeline.keep_heap_for_reuse``: Dask's workers).

    That includes pandas, which pyarrow imports (when installed) at its first ``pa.array`` or
    ``to_numpy``: ~0.35 s of CPU. The local runner's Parquet read did that before its clock; a Spark
    Python worker did it inside its first task (the ``to_numpy`` of the row numbers), one of the costs
    that made a worker's first task several times a later one (benchmarks/SCALE_ENGINES.md, session
    7). And the data contract's lazily imported modules and industry table (``io.data.preload``)."""
    from .. import pipeline

    pipeline.keep_heap_for_reuse()
    import pyarrow as pa

    pa.array([0])  # pyarrow's lazy pandas import, here rather than in the first task
    from ..engine import benchmarks, evaluator, results  # noqa: F401
    from ..io import data
    from . import sink  # noqa: F401

    data.preload()  # the data contract's lazily imported modules and its GB/T 4754 table


class TaskClock:
    """Time spent inside partition tasks (the engine's own work), apart from the distributed
    engine's scheduling, shuffles and transfers: per pass, tasks, rows, wall and CPU seconds
    (CPU: the task thread's own, ``time.thread_time``). Filled by the runners when given one."""

    def __init__(self) -> None:
        self.passes: dict[str, dict[str, float]] = {}

    def add(
        self,
        name: str,
        rows: int,
        wall: float,
        cpu: float,
        tasks: int = 1,
        write_cpu: float = 0.0,
        receive_cpu: float = 0.0,
    ) -> None:
        """A task's (or ``tasks`` tasks') figures; ``write_cpu``: the part of ``cpu`` spent writing
        its output file (per-partition output), also recorded as the pass ``(write)``;
        ``receive_cpu``: CPU spent receiving the partition's input before the task's clock started
        (Spark: pulling its Arrow batches from the JVM), not in ``cpu``, recorded as ``(receive)`` —
        the counterpart of the local runner's Parquet read and of Dask's deserialisation of a
        task's arguments, which no runner counts as the partition's own work."""
        if receive_cpu:
            self._count("(receive)", tasks, rows, 0.0, receive_cpu)
        self._count(name, tasks, rows, wall, cpu)
        if write_cpu:
            self._count("(write)", tasks, rows, 0.0, write_cpu)

    def _count(self, name: str, tasks: int, rows: int, wall: float, cpu: float) -> None:
        p = self.passes.setdefault(name, {"tasks": 0, "rows": 0, "wall": 0.0, "cpu": 0.0})
        p["tasks"] += tasks
        p["rows"] += rows
        p["wall"] += wall
        p["cpu"] += cpu

    def timed(self, name: str, timing: Timing) -> None:
        """One task's :data:`Timing` (from :func:`task`)."""
        rows, wall, cpu, write_cpu = timing
        self.add(name, rows, wall, cpu, write_cpu=write_cpu)

    def total(self, key: str) -> float:
        """Summed over the passes (not the ``(…)`` entries, which are parts of them or apart)."""
        return float(sum(p[key] for k, p in self.passes.items() if not k.startswith("(")))


def empty_results(
    plan: Plan, types: Mapping[str, Any], tables: Mapping[str, BenchmarkTable], names: Sequence[str], source: str = ""
) -> Results:
    """The results of an empty partition with the input columns ``types`` (name → Arrow type)."""
    import pyarrow as pa

    from ..io.data import RawTable

    empty = RawTable({n: pa.array([], t) for n, t in types.items()}, 0, source or "<schema>", names=list(names))
    return final_of(plan, prepare(plan, empty, np.zeros(0, np.int64)), tables)


def check_written(counts: Sequence[int], n: int, out_dir: str | Path, empty: Callable[[], Results]) -> None:
    """After a per-partition write: ``counts`` (rows written by each task) add up to the input's
    ``n`` rows; an input without rows gives one empty part file (its columns: ``empty()``)."""
    from .sink import write_part

    if sum(counts) != n:
        raise RuleEngineError(f"internal: {sum(counts)} result rows written for {n} input rows")
    if not counts:
        write_part(empty(), out_dir, 0)


def view_schema(
    view: Callable[..., Any],
    plan: Plan,
    raw_names: Sequence[str],
    types: Mapping[str, Any],
    tables: Mapping[str, BenchmarkTable],
) -> Any:
    """The Arrow schema ``view`` gives: its output on an empty partition with the columns ``types``."""
    import pyarrow as pa

    from ..io.data import RawTable

    empty = RawTable({n: pa.array([], t) for n, t in types.items()}, 0, "<schema>", names=list(raw_names))
    return view(plan, empty_results(plan, types, tables, raw_names), empty).schema


def result_table(plan: Plan, results: Results, raw: RawTable) -> Any:
    """The default view of a partition's results: the result columns as written (plain Arrow)."""
    return results.to_arrow()


def _sorted(order: np.ndarray) -> bool:
    return bool(np.all(order == np.arange(len(order))))


def in_input_order(results: Sequence[Results], rows: Sequence[np.ndarray]) -> Any:
    """The results of :func:`rate_partitions` as one pyarrow Table (plain columns) in input order."""
    import pyarrow as pa

    tables = [r.to_arrow() for r in results]
    whole = pa.concat_tables(tables) if tables else pa.table({})
    order = np.argsort(np.concatenate([np.sort(np.asarray(r, dtype=np.int64)) for r in rows]), kind="stable")
    return whole.take(pa.array(order, type=pa.int64()))


def firm_chunks(firm_codes: np.ndarray, chunk_rows: int) -> Iterator[np.ndarray]:
    """Firm-complete chunks of one batch: row indices (sorted, i.e. in input order) of about
    ``chunk_rows`` rows each, cut only between firms (a firm with more rows than that is one
    chunk). ``firm_codes``: the batch's firm codes (-1: no firm id, a row of its own). Every row
    is in exactly one chunk; one chunk of everything when the batch is small enough."""
    codes = np.asarray(firm_codes)
    n = len(codes)
    if n <= chunk_rows:
        if n:
            yield np.arange(n)
        return
    order = np.argsort(codes, kind="stable")
    sc = codes[order]
    starts = np.flatnonzero(np.r_[True, (sc[1:] != sc[:-1]) | (sc[1:] < 0)])  # where a firm begins
    wanted = np.arange(chunk_rows, n, chunk_rows)
    cuts = np.unique(np.r_[0, starts[np.minimum(np.searchsorted(starts, wanted), len(starts) - 1)], n])
    for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
        if b > a:
            yield np.sort(order[a:b])
