"""The single-process chunked runner: a Parquet dataset larger than memory, rated in passes.

    scan        the firm_id column only: is every firm's rows one contiguous run?
    (spill)     if not: rows written to firm-hash buckets (Arrow IPC files in a temp dir), each
                bucket firm-complete by construction
    pass 1..k   one per benchmark stage: stage 1 per chunk → partials, merged exactly (a balanced
                tree of merges) → benchmark tables
    final       stage 2 per chunk → results; written in input order (buckets' results merged back
                by row number) in canonical row groups (sink.py)

A chunk holds about ``chunk_rows`` rows, cut at a firm boundary (contiguous data), or one bucket
(spilled data: about ``max(chunk_rows, rows / MAX_BUCKETS)`` rows). Memory: one chunk's columns,
its evaluation and its results, the merged partials (a few numbers per peer group; medians and
percentile ranks keep 8 bytes per eligible row and peer-group level) and one row group of output.
The output is byte-identical to ``ruleengine rate BOOK FILE -o OUT`` of the same rows in one batch.
"""

from __future__ import annotations

import glob
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError
from .partition import (
    ROW,
    TaskClock,
    benchmark_passes,
    columns_read,
    final_of,
    firm_keys,
    firm_text,
    partials_of,
    prepare,
    result_table,
    tables_of,
)
from .sink import ResultSink, check_output, write_part

if TYPE_CHECKING:
    from ..engine.benchmarks import BenchmarkTable, Partials
    from ..engine.results import Results
    from ..io.data import DataIssue, RawTable
    from ..rulebook.plan import Plan

MAX_BUCKETS = 256  # open bucket files while spilling
READ_ROWS = 65_536  # rows per read batch in the scan and the spill

Progress = Callable[[str, int, int], None]


@dataclass
class Run:
    """What a chunked run did: counts for the summary, and the first issues found."""

    source: str
    output: str
    rows: int = 0
    rated: int = 0
    chunks: int = 0
    passes: int = 0
    spilled: bool = False
    distribution: Counter[str] = field(default_factory=Counter)
    unrated_reasons: Counter[str] = field(default_factory=Counter)
    issues: list[DataIssue] = field(default_factory=list)
    issue_count: int = 0
    seconds: float = 0.0


# -- the dataset --------------------------------------------------------------------------------


def dataset_files(source: str | Path) -> list[Path]:
    """The Parquet files of ``source``: one file, a directory (every ``*.parquet`` below it, in
    path order) or a glob pattern (matches in path order)."""
    text = str(source)
    p = Path(text)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.parquet") if f.is_file())
        if not files:
            raise DataError(f"{source}: no .parquet files in this directory")
        return files
    if p.is_file():
        if p.suffix.lower() != ".parquet":
            raise DataError(
                f"{source}: --chunk-rows reads Parquet (a .parquet file, a directory or a glob of them); "
                "rate this file without --chunk-rows"
            )
        return [p]
    if any(c in text for c in "*?["):
        files = sorted(Path(f) for f in glob.glob(text, recursive=True) if Path(f).is_file())
        files = [f for f in files if f.suffix.lower() == ".parquet"]
        if not files:
            raise DataError(f"{source}: no .parquet file matches this pattern")
        return files
    raise DataError(f"data not found: {source}")


class Dataset:
    """The Parquet files of a source read as one stream of rows, only the columns a plan needs,
    each file's batches cast to one schema (a column missing from a file reads as empty)."""

    def __init__(
        self,
        source: str | Path | list[Any] | tuple[Any, ...],
        plan: Plan | None,
        extra: Sequence[str] = (),
        keep: Any = None,
    ):
        """``source``: a file, directory or glob (:func:`dataset_files`), or a list of files;
        the columns read: ``plan``'s and ``extra``, or (``plan`` None) those in ``keep`` (None:
        every column)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if isinstance(source, list | tuple):
            self.files = [Path(f) for f in source]
            self.source = str(self.files[0].parent) if self.files else "<no files>"
        else:
            self.files = dataset_files(source)
            self.source = str(source)
        names: dict[str, None] = {}
        schemas = []
        self.rows_per_file = []
        for f in self.files:
            try:
                meta = pq.read_metadata(f)
            except (OSError, ValueError) as exc:
                raise DataError(f"{f}: cannot read: {str(exc).splitlines()[0]}") from None
            schema = meta.schema.to_arrow_schema()
            schemas.append(schema)
            self.rows_per_file.append(meta.num_rows)
            for n in schema.names:
                names.setdefault(n, None)
        self.names = list(names)
        self.n = sum(self.rows_per_file)
        if plan is not None:
            self.wanted = [n for n in self.names if n in columns_read(plan) or n in extra]
        else:
            self.wanted = [n for n in self.names if keep is None or n in keep]
        fields = []
        for name in self.wanted:
            types = {s.field(name).type for s in schemas if name in s.names}
            t = types.pop() if len(types) == 1 else None
            if t is None:
                try:
                    t = (
                        pa.unify_schemas(
                            [pa.schema([s.field(name)]) for s in schemas if name in s.names],
                            promote_options="permissive",
                        )
                        .field(name)
                        .type
                    )
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    # e.g. text in one file, numbers in another: read as text, and the data
                    # contract checks each cell (a bad cell flags its row, never the run)
                    t = pa.string()
            if pa.types.is_dictionary(t):
                t = t.value_type
            if pa.types.is_large_string(t):
                t = pa.string()
            fields.append(pa.field(name, t))
        self.schema = pa.schema(fields)

    def batches(self, columns: Sequence[str] | None = None, size: int = READ_ROWS) -> Iterator[tuple[Any, int]]:
        """(pyarrow Table, offset of its first row in the whole input), in input order."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = list(self.wanted if columns is None else columns)
        schema = pa.schema([self.schema.field(c) for c in cols])
        offset = 0
        for f, rows in zip(self.files, self.rows_per_file, strict=True):
            pf = pq.ParquetFile(f, memory_map=True)
            have = [c for c in cols if c in pf.schema_arrow.names]
            try:
                for batch in pf.iter_batches(batch_size=size, columns=have):
                    yield _conform(pa.Table.from_batches([batch]), schema, f), offset
                    offset += batch.num_rows
            except (OSError, ValueError) as exc:
                raise DataError(f"{f}: cannot read: {str(exc).splitlines()[0]}") from None
            if not have and rows:  # none of the columns: rows of nothing (prepare reports it)
                yield pa.table({c: pa.nulls(rows, schema.field(c).type) for c in cols}), offset
                offset += rows


def _conform(table: Any, schema: Any, f: Path) -> Any:
    import pyarrow as pa

    arrays = []
    for fld in schema:
        if fld.name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, fld.type))
            continue
        col = table.column(fld.name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if col.type != fld.type:
            try:
                col = col.cast(fld.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                raise DataError(f"{f}: column {fld.name}: cannot read {col.type} as {fld.type}") from None
        arrays.append(col)
    return pa.table(arrays, schema=schema)


def _raw(table: Any, source: str, names: list[str]) -> RawTable:
    from ..io.data import RawTable

    return RawTable(
        {n: table.column(n) for n in table.column_names if n != ROW}, table.num_rows, source, names=list(names)
    )


# -- partitions ---------------------------------------------------------------------------------


def firms_contiguous(ds: Dataset) -> bool:
    """True when every firm's rows form one contiguous run in the stream (rows without a firm id
    are free). Reads the firm_id column only; compares 64-bit firm keys of the runs' first rows (a
    collision can only make it answer False, which is safe: the data is then spilled)."""
    import pyarrow.compute as pc

    if "firm_id" not in ds.wanted:
        return True  # prepare reports the missing column
    starts: list[np.ndarray] = []
    last: str | None = None
    for table, _ in ds.batches(["firm_id"]):
        text = firm_text(table.column("firm_id"))
        if not len(text):
            continue
        change = np.ones(len(text), dtype=bool)
        if len(text) > 1:
            change[1:] = ~pc.equal(text.slice(1), text.slice(0, len(text) - 1)).to_numpy(zero_copy_only=False)
        if last is not None:
            change[0] = text[0].as_py() != last
        last = text[-1].as_py()
        first = text.filter(change)
        first = first.filter(pc.not_equal(first, ""))
        starts.append(firm_keys(first))
    keys = np.concatenate(starts) if starts else np.zeros(0, dtype=np.uint64)
    return len(np.unique(keys)) == len(keys)


def contiguous_chunks(ds: Dataset, chunk_rows: int) -> Iterator[tuple[Any, np.ndarray]]:
    """Chunks of about ``chunk_rows`` rows cut where the firm changes: (table, rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    buf: list[Any] = []
    buffered = 0
    start = 0
    for table, offset in ds.batches(size=min(READ_ROWS, max(chunk_rows, 1))):
        if not buf:
            start = offset
        buf.append(table)
        buffered += table.num_rows
        if buffered < chunk_rows:
            continue
        whole = pa.concat_tables(buf) if len(buf) > 1 else buf[0]
        cut = whole.num_rows
        if "firm_id" in whole.column_names:
            text = firm_text(whole.column("firm_id"))
            other = ~pc.equal(text, text[-1]).to_numpy(zero_copy_only=False)
            idx = np.flatnonzero(other)
            cut = int(idx[-1]) + 1 if len(idx) else 0  # the last firm may go on in the next batch
        if cut == 0:
            continue  # one firm larger than a chunk: keep reading
        yield whole.slice(0, cut), np.arange(start, start + cut, dtype=np.int64)
        rest = whole.slice(cut)
        buf = [rest] if rest.num_rows else []
        buffered = rest.num_rows
        start += cut
    if buf:
        whole = pa.concat_tables(buf) if len(buf) > 1 else buf[0]
        yield whole, np.arange(start, start + whole.num_rows, dtype=np.int64)


class Buckets:
    """Rows spilled to firm-hash buckets: Arrow IPC files, each firm-complete, rows in input order."""

    def __init__(self, ds: Dataset, chunk_rows: int, workdir: Path, progress: Progress):
        import pyarrow as pa

        self.ds = ds
        self.k = max(1, min(MAX_BUCKETS, math.ceil(ds.n / max(chunk_rows, 1))))
        self.dir = workdir
        schema = ds.schema.append(pa.field(ROW, pa.int64()))
        writers: dict[int, Any] = {}
        sinks: dict[int, Any] = {}
        done = 0
        try:
            for table, offset in ds.batches():
                n = table.num_rows
                table = table.append_column(ROW, pa.array(np.arange(offset, offset + n, dtype=np.int64)))
                if "firm_id" in table.column_names:
                    b = (firm_keys(table.column("firm_id")) % np.uint64(self.k)).astype(np.int64)
                else:
                    b = np.zeros(n, dtype=np.int64)
                order = np.argsort(b, kind="stable")
                counts = np.bincount(b, minlength=self.k)
                ends = np.cumsum(counts)
                sorted_table = table.take(pa.array(order))
                for bucket in np.flatnonzero(counts).tolist():
                    piece = sorted_table.slice(int(ends[bucket] - counts[bucket]), int(counts[bucket]))
                    if bucket not in writers:
                        sinks[bucket] = pa.OSFile(str(self.path(bucket)), "wb")
                        writers[bucket] = pa.ipc.new_stream(sinks[bucket], schema)
                    writers[bucket].write_table(piece)
                done += n
                progress("spill", done, ds.n)
        finally:
            for w in writers.values():
                w.close()
            for s in sinks.values():
                s.close()
        self.present = sorted(writers)

    def path(self, bucket: int) -> Path:
        return self.dir / f"bucket-{bucket:05d}.arrow"

    def chunks(self) -> Iterator[tuple[Any, np.ndarray]]:
        import pyarrow as pa

        for bucket in self.present:
            with pa.memory_map(str(self.path(bucket))) as src:
                table = pa.ipc.open_stream(src).read_all()
            rows = table.column(ROW).to_numpy()
            yield table.drop_columns([ROW]), rows


# -- the runner ---------------------------------------------------------------------------------


class _TreeMerge:
    """Partials merged in a balanced tree (like a binary counter): each value of a median or
    percentile group is copied O(log chunks) times, not once per chunk."""

    def __init__(self) -> None:
        self.levels: list[Partials | None] = []

    def add(self, p: Partials) -> None:
        from ..engine import benchmarks as bm

        i = 0
        while i < len(self.levels) and self.levels[i] is not None:
            p = bm.merge(self.levels[i], p)  # type: ignore[arg-type]
            self.levels[i] = None
            i += 1
        if i == len(self.levels):
            self.levels.append(p)
        else:
            self.levels[i] = p

    def result(self) -> list[Partials]:
        return [p for p in self.levels if p is not None]


def rate_dataset(
    plan: Plan,
    source: str | Path,
    output: str | Path,
    chunk_rows: int,
    *,
    progress: Progress | None = None,
    max_issues: int = 20,
    workdir: str | Path | None = None,
    clock: TaskClock | None = None,
) -> Run:
    """Rate the Parquet dataset ``source`` with ``plan`` in chunks of about ``chunk_rows`` rows and
    write the results to ``output``: one file (.parquet or .csv, input order), or a directory
    (``sink.is_parts_dir``) of one ``part-NNNNN.parquet`` per chunk (rows of a chunk in input
    order; spilled data: one per firm bucket), the layout Spark and Dask write."""
    from ..pipeline import require_rulebook

    require_rulebook(plan)
    if chunk_rows < 1:
        raise DataError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    t0 = time.perf_counter()
    tick = progress or (lambda phase, done, total: None)
    out_dir = Path(output) if check_output(output) else None  # checked before anything is read
    ds = Dataset(source, plan)
    run = Run(str(source), str(output), passes=benchmark_passes(plan) + 1)
    with tempfile.TemporaryDirectory(prefix="ruleengine-chunks-", dir=workdir) as tmp:
        contiguous = firms_contiguous(ds)
        tick("scan", ds.n, ds.n)
        if contiguous:

            def chunks() -> Iterator[tuple[Any, np.ndarray]]:
                return contiguous_chunks(ds, chunk_rows)

        else:
            run.spilled = True
            spilled = Buckets(ds, chunk_rows, Path(tmp), tick)
            chunks = spilled.chunks
        tables = _benchmark_passes(plan, ds, chunks, tick, clock)
        if out_dir is not None:
            _final_parts(plan, ds, chunks(), tables, out_dir, run, tick, max_issues, clock)
            run.seconds = time.perf_counter() - t0
            return run
        with ResultSink(output) as sink:
            if contiguous:
                _final_in_order(plan, ds, chunks(), tables, sink, run, tick, max_issues, clock)
            else:
                step = max(1024, sink.row_group // max(len(spilled.present), 1))
                _final_by_bucket(plan, ds, chunks(), tables, sink, run, tick, max_issues, Path(tmp), step, clock)
    run.seconds = time.perf_counter() - t0
    return run


def _benchmark_passes(
    plan: Plan,
    ds: Dataset,
    chunks: Callable[[], Iterator[tuple[Any, np.ndarray]]],
    tick: Progress,
    clock: TaskClock | None,
) -> dict[str, BenchmarkTable]:
    """One pass per benchmark stage: stage 1 + partials per chunk, merged in a tree → tables."""
    from ..pipeline import keep_heap_for_reuse

    keep_heap_for_reuse()  # as the Spark and Dask tasks do (partition.warm_up)
    tables: dict[str, BenchmarkTable] = {}
    for stage in range(benchmark_passes(plan)):
        tree = _TreeMerge()
        done = 0
        phase = f"benchmarks {stage + 1}/{benchmark_passes(plan)}"
        for table, rows in chunks():
            w0, c0 = time.perf_counter(), time.thread_time()
            tree.add(partials_of(plan, prepare(plan, _raw(table, ds.source, ds.names), rows), tables))
            _release_if_large()
            if clock is not None:
                clock.add(f"benchmarks {stage + 1}", len(rows), time.perf_counter() - w0, time.thread_time() - c0)
            done += len(rows)
            tick(phase, done, ds.n)
        tables.update(tables_of(plan, tree.result()))
    return tables


def _chunks_of(ds: Dataset, chunk_rows: int, tmp: Path, tick: Progress) -> tuple[Callable[[], Iterator[Any]], bool]:
    """The chunks of ``ds`` (a function giving them, once per pass) and whether they are in input
    order (firms contiguous) or firm buckets spilled to ``tmp``."""
    contiguous = firms_contiguous(ds)
    tick("scan", ds.n, ds.n)
    if contiguous:
        return (lambda: contiguous_chunks(ds, chunk_rows)), True
    return Buckets(ds, chunk_rows, tmp, tick).chunks, False


def view_dataset(
    plan: Plan,
    source: str | Path,
    chunk_rows: int,
    view: Callable[..., Any] = result_table,
    *,
    extra: Sequence[str] = (),
    workdir: str | Path | None = None,
    clock: TaskClock | None = None,
) -> Any:
    """The passes of ``plan`` over the Parquet dataset ``source`` in chunks: a pyarrow Table of
    ``view(plan, results, raw)`` of every chunk, in input order (``raw``: the chunk's rows as read,
    the plan's inputs and the ``extra`` columns). For analyses that need a few columns of every
    firm-year (``diff --data``, ``compare``), not the whole results."""
    import pyarrow as pa

    from ..pipeline import require_rulebook

    require_rulebook(plan)
    if chunk_rows < 1:
        raise DataError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    ds = Dataset(source, plan, extra)
    tick: Progress = lambda phase, done, total: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="ruleengine-chunks-", dir=workdir) as tmp:
        chunks, _ = _chunks_of(ds, chunk_rows, Path(tmp), tick)
        tables = _benchmark_passes(plan, ds, chunks, tick, clock)
        pieces, rows_seen = [], []
        for table, rows in chunks():
            w0, c0 = time.perf_counter(), time.thread_time()
            raw = _raw(table, ds.source, ds.names)
            pieces.append(view(plan, final_of(plan, prepare(plan, raw, rows), tables), raw))
            del raw
            _release_if_large()
            rows_seen.append(rows)
            if clock is not None:
                clock.add("final", len(rows), time.perf_counter() - w0, time.thread_time() - c0)
    if not pieces:
        empty = pa.table({f.name: pa.array([], f.type) for f in ds.schema})
        return view(plan, _empty_result(plan, ds, tables), _raw(empty, ds.source, ds.names))
    whole = pa.concat_tables(pieces)
    order = np.argsort(np.concatenate(rows_seen), kind="stable")
    return whole.take(pa.array(order))


def _rate_chunk(
    plan: Plan,
    ds: Dataset,
    table: Any,
    rows: np.ndarray,
    tables: dict[str, BenchmarkTable],
    run: Run,
    max_issues: int,
    clock: TaskClock | None = None,
    out_dir: Path | None = None,
    part: int = 0,
) -> tuple[Results, Any]:
    """Stage 2 of one chunk: its Results (counted in ``run``) and their Arrow table; with
    ``out_dir``, the results written as ``out_dir/part-NNNNN.parquet`` (``part``) instead (the
    table is then None)."""
    w0, c0 = time.perf_counter(), time.thread_time()
    res = final_of(plan, prepare(plan, _raw(table, ds.source, ds.names), rows), tables)
    write_cpu = 0.0
    if out_dir is not None:
        c1 = time.thread_time()
        write_part(res, out_dir, part)
        out = None
        write_cpu = time.thread_time() - c1
    else:
        out = res.to_arrow()
    if clock is not None:
        clock.add("final", len(rows), time.perf_counter() - w0, time.thread_time() - c0, write_cpu=write_cpu)
    run.rows += len(res)
    run.chunks += 1
    for level, count in res.distribution():
        run.distribution[level] += count
    status = res.columns.encoded("status")
    rated = int(np.count_nonzero(status[0] == 0)) if status is not None else int((res["status"] == "rated").sum())
    run.rated += rated
    if rated < len(res):
        reasons = res.columns.encoded("reasons")
        if reasons is not None and status is not None:
            codes, texts = reasons
            per = np.bincount(codes[(status[0] == 1) & (codes >= 0)], minlength=len(texts))
            for j, c in enumerate(per.tolist()):
                if c:
                    for r in dict.fromkeys(str(texts[j]).split("; ")):
                        if r:
                            run.unrated_reasons[r.split(":", 1)[0] if ":" in r else r] += c
    _keep_issues(run, res.issues, max_issues)
    return res, out


def _keep_issues(run: Run, issues: Sequence[DataIssue], max_issues: int) -> None:
    """Count every issue, keep the first ``max_issues`` by row (issues without a row once)."""
    seen = {(i.row, i.column, i.message) for i in run.issues if i.row is None}
    fresh = [i for i in issues if i.row is not None or (i.row, i.column, i.message) not in seen]
    run.issue_count += len(fresh)
    merged = sorted([*run.issues, *fresh], key=lambda i: (i.row or 0, i.column or "", i.message))
    run.issues = merged[: max(max_issues, 0)]


def _final_parts(
    plan: Plan,
    ds: Dataset,
    chunks: Iterator[tuple[Any, np.ndarray]],
    tables: dict[str, BenchmarkTable],
    out_dir: Path,
    run: Run,
    tick: Progress,
    max_issues: int,
    clock: TaskClock | None = None,
) -> None:
    """Stage 2 per chunk, each chunk's results written as its own part file."""
    for part, (table, rows) in enumerate(chunks):
        _rate_chunk(plan, ds, table, rows, tables, run, max_issues, clock, out_dir, part)
        _release_if_large()
        tick("rate", run.rows, ds.n)
    if not run.chunks:  # no rows at all: one empty part file (its columns)
        write_part(_empty_result(plan, ds, tables), out_dir, 0)


def _final_in_order(
    plan: Plan,
    ds: Dataset,
    chunks: Iterator[tuple[Any, np.ndarray]],
    tables: dict[str, BenchmarkTable],
    sink: ResultSink,
    run: Run,
    tick: Progress,
    max_issues: int,
    clock: TaskClock | None = None,
) -> None:
    empty = True
    for table, rows in chunks:
        _, out = _rate_chunk(plan, ds, table, rows, tables, run, max_issues, clock)
        sink.write(out)
        del out
        _release_if_large()
        empty = False
        tick("rate", run.rows, ds.n)
    if empty:  # no rows at all: the header / schema of an empty result
        sink.write(_empty_result(plan, ds, tables).to_arrow())


def _empty_result(plan: Plan, ds: Dataset, tables: dict[str, BenchmarkTable]) -> Results:
    import pyarrow as pa

    table = pa.table({f.name: pa.array([], f.type) for f in ds.schema})
    return final_of(plan, prepare(plan, _raw(table, ds.source, ds.names), np.zeros(0, dtype=np.int64)), tables)


def _final_by_bucket(
    plan: Plan,
    ds: Dataset,
    chunks: Iterator[tuple[Any, np.ndarray]],
    tables: dict[str, BenchmarkTable],
    sink: ResultSink,
    run: Run,
    tick: Progress,
    max_issues: int,
    tmp: Path,
    step: int,
    clock: TaskClock | None = None,
) -> None:
    """Stage 2 per bucket, results spilled with their row numbers, then merged back in input order."""
    import pyarrow as pa

    paths: list[Path] = []
    nbuckets = 0
    for table, rows in chunks:
        _, out = _rate_chunk(plan, ds, table, rows, tables, run, max_issues, clock)
        out = out.append_column(ROW, pa.array(rows))
        path = tmp / f"results-{nbuckets:05d}.arrow"
        with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, out.schema) as w:
            w.write_table(out, max_chunksize=step)
        del out
        _release_if_large()
        paths.append(path)
        nbuckets += 1
        tick("rate", run.rows, ds.n)
    if not paths:
        sink.write(_empty_result(plan, ds, tables).to_arrow())
        return
    cursors = [_Cursor(p) for p in paths]
    written = 0
    while written < run.rows:
        limit = written + sink.row_group
        pieces = [t for c in cursors if (t := c.take_below(limit)) is not None]
        window = pa.concat_tables(pieces)
        order = np.argsort(window.column(ROW).to_numpy(), kind="stable")
        sink.write(window.take(pa.array(order)).drop_columns([ROW]))
        written += window.num_rows
        tick("order", written, run.rows)
        if not window.num_rows:  # cannot happen with rows numbered 0..n-1; never loop forever
            raise DataError(f"{ds.source}: internal: results lost while restoring input order")


class _Cursor:
    """Reads one bucket's results (rows ascending) a record batch at a time."""

    def __init__(self, path: Path):
        import pyarrow as pa

        self.src = pa.memory_map(str(path))
        self.reader = pa.ipc.open_file(self.src)
        self.next = 0
        self.buf: Any = None
        self.rows: np.ndarray | None = None

    def _load(self) -> bool:
        import pyarrow as pa

        if self.next >= self.reader.num_record_batches:
            self.src.close()
            return False
        self.buf = pa.Table.from_batches([self.reader.get_batch(self.next)])
        self.rows = self.buf.column(ROW).to_numpy()
        self.next += 1
        return True

    def take_below(self, limit: int) -> Any:
        import pyarrow as pa

        out = []
        while True:
            if self.buf is None or not self.buf.num_rows:
                if not self._load():
                    break
            assert self.rows is not None
            k = int(np.searchsorted(self.rows, limit))
            if k < self.buf.num_rows:
                out.append(self.buf.slice(0, k))
                self.buf = self.buf.slice(k)
                self.rows = self.rows[k:]
                break
            out.append(self.buf)
            self.buf = None
        out = [t for t in out if t.num_rows]
        return pa.concat_tables(out) if out else None


# -- the command line -------------------------------------------------------------------------------


def summary(run: Run, plan: Plan) -> list[str]:
    """The lines ``ruleengine rate --chunk-rows`` prints after the run."""
    n = run.rows
    order = plan.ratings[plan.primary].best_first()
    lines = [f"{plan.title} — {plan.id} {plan.version}", f"{plan.primary:>12}  firm-years   share"]
    for level in [*order, *(["unrated"] if run.distribution.get("unrated") else [])]:
        c = run.distribution.get(level, 0)
        lines.append(f"{level:>12}  {c:>10,}  {c / n:6.1%}" if n else f"{level:>12}  {c:>10,}       -")
    how = "spilled to firm buckets" if run.spilled else "firms contiguous"
    lines.append(
        f"{n:,} firm-years from {run.source}: {run.rated:,} rated, {n - run.rated:,} unrated "
        f"({run.chunks:,} chunks, {run.passes} passes, {how}, {run.seconds:.1f} s)"
    )
    if n - run.rated:
        top = ", ".join(f"{k} ({v})" for k, v in run.unrated_reasons.most_common(5))
        if top:
            lines.append(f"unrated because: {top}")
    if run.issue_count:
        lines.append(f"{run.issue_count:,} data problem{'s' if run.issue_count != 1 else ''}:")
        lines.extend(f"  {i.format()}" for i in run.issues)
        if run.issue_count > len(run.issues):
            lines.append(f"  … and {run.issue_count - len(run.issues):,} more (see the reasons column)")
    lines.append(f"wrote {run.output}")
    return lines


def rate_command(plan: Plan, data: str, output: str | None, chunk_rows: int, max_issues: int, console: Any) -> Run:
    """``ruleengine rate BOOK DATA --chunk-rows N -o OUT``: the run with a rich progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not output:
        raise DataError(
            "--chunk-rows writes its results to files: give -o OUT.parquet, -o OUT.csv or -o DIR/ "
            "(one Parquet file per chunk)"
        )
    check_output(output)  # the format, checked before reading anything
    tasks: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:

        def tick(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        return rate_dataset(plan, data, output, chunk_rows, progress=tick, max_issues=max_issues)


def _release_if_large() -> None:
    """After each chunk: memory it freed handed back when the process holds a lot (pipeline)."""
    from ..pipeline import release_memory_if_large

    release_memory_if_large()
