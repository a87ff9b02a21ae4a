"""Rating on Spark (issue #18): the same plan, the same phases, the same bytes as one machine.

    rate(plan, df)               a Spark DataFrame holding the input columns and ``__row`` (each
                                 row's position in the input; rate_files adds it from the files)
      → firm-complete partitions repartition(k, partition_key(firm_id)) in the JVM, persisted
      → per benchmark stage      mapInArrow: stage 1 + partials per partition, pickled; collected
                                 and merged once on the driver (one action) → tables, broadcast
      → final pass               mapInArrow: stage 2 per partition → result columns + __row;
                                 toArrow on the driver, input order, canonical sink

Shipped to executors: the compiled plan and the benchmark tables, as broadcast variables, each
unpickled once per Python worker process (Spark reuses its workers: ``spark.python.worker.reuse``);
only the columns the plan reads go through the shuffle and to the Python workers, in Arrow batches
of ``ARROW_BATCH_ROWS`` rows, with no byte bound (:data:`ARROW_SETTINGS`, in force while a run
lasts). Every task is a pure function of its partition and the tables: a failed
task is retried by Spark and gives the same rows.
"""

from __future__ import annotations

import functools
import pickle
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from .partition import (
    ROW,
    TaskClock,
    benchmark_passes,
    check_written,
    columns_read,
    empty_results,
    is_url,
    result_table,
    tables_of,
    task,
    view_schema,
    warm_up,
)
from .sink import check_output, is_parts_dir

if TYPE_CHECKING:
    from ..engine.benchmarks import BenchmarkTable
    from ..engine.results import Results
    from ..io.data import RawTable
    from ..rulebook.plan import Plan

    View = Callable[[Plan, Results, RawTable], Any]

ARROW_BATCH_ROWS = 65_536  # spark.sql.execution.arrow.maxRecordsPerBatch (Spark's default: 10,000)
# Batches to the Python workers are bounded by rows (above), not by bytes: with a byte bound (any
# spark.sql.execution.arrow.maxBytesPerBatch but Int.MaxValue, Spark 4's default 256 MB) Spark sizes
# the Arrow batch it is filling after *every row* (BatchedPythonArrowInput.underBatchSizeLimit: a walk
# of every column's buffers). In a JFR profile of a 2M-row run that was ~28% of the JVM's samples,
# and it halved the JVM's CPU during the passes, time taken from the Python tasks on a small machine.
ARROW_BATCH_BYTES = 2**31 - 1  # Int.MaxValue: Spark skips the per-row size check
ARROW_SETTINGS = {
    "spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH_ROWS),
    "spark.sql.execution.arrow.maxBytesPerBatch": str(ARROW_BATCH_BYTES),
}
BLOB_ROWS = 16_384  # result rows per piece sent back to the driver by ``rate``
_SPARK_TYPES = {"int64": "long", "double": "double", "string": "string", "large_string": "string"}


def session(master: str = "local[*]", app: str = "ruleengine", conf: dict[str, str] | None = None) -> Any:
    """A SparkSession whose Python workers run this interpreter, with Arrow on; ``conf``: more
    Spark settings (e.g. ``spark.driver.memory``). The results are collected on the driver (to
    write them in input order), so ``spark.driver.maxResultSize`` is unlimited unless ``conf``
    says otherwise. An active session is reused (its master and memory stay as they were)."""
    import os

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.driver.maxResultSize", "0")
    )
    for key, value in ARROW_SETTINGS.items():
        builder = builder.config(key, value)
    if master.startswith("local"):  # on a cluster the executors must reach the driver's own address
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


@contextmanager
def arrow_settings(spark: Any) -> Iterator[None]:
    """:data:`ARROW_SETTINGS` on ``spark`` while the block runs (a session the caller made keeps its
    own values afterwards; one from :func:`session` has them already)."""
    before = {key: spark.conf.get(key, None) for key in ARROW_SETTINGS}
    for key, value in ARROW_SETTINGS.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


P = ParamSpec("P")
R = TypeVar("R")


def _under_arrow_settings(fn: Callable[Concatenate[Plan, Any, P], R]) -> Callable[Concatenate[Plan, Any, P], R]:
    """``fn(plan, parts, ...)`` run under :func:`arrow_settings` of the session of ``parts``."""

    @functools.wraps(fn)
    def wrapped(plan: Plan, parts: Any, *args: P.args, **kwargs: P.kwargs) -> R:
        with arrow_settings(parts.sparkSession):
            return fn(plan, parts, *args, **kwargs)

    return wrapped


def _received(batches: Iterator[Any]) -> tuple[list[Any], float]:
    """A partition's non-empty Arrow batches, pulled from the JVM, and the CPU seconds that took
    (measured apart: the input's arrival, like the local runner's Parquet read)."""
    c0 = time.thread_time()
    got = [b for b in batches if b.num_rows]
    return got, time.thread_time() - c0


def _whole(got: list[Any]) -> tuple[Any, np.ndarray] | None:
    """A partition's Arrow batches as one table in input order, and its ``__row`` numbers."""
    import pyarrow as pa

    if not got:
        return None
    table = pa.Table.from_batches(got)
    rows = np.concatenate([b.column(b.schema.get_field_index(ROW)).to_numpy() for b in got]).astype(np.int64)
    return in_input_order(table, rows)


def in_input_order(table: Any, rows: np.ndarray) -> tuple[Any, np.ndarray]:
    """``table`` (its rows numbered ``rows``) sorted by row number. A shuffle hands a reducer each
    map task's rows in input order, the map tasks in any order (a real local[2] run of ten files:
    files 1, 6, 2, 0, 7, 8, 4, 5, 3, 9, 10): the table is put back in order from its stretches of
    consecutive rows, by slicing (the columns are not copied). Runs that happen to follow each
    other in ascending order (1 then 6) are cut where another run's rows fall between them, so
    they never force a gather of every column; only rows interleaved finely (more than one
    stretch per ``SLICE_ROWS`` rows) are gathered row by row."""
    import pyarrow as pa

    n = len(rows)
    if n < 2 or not bool(np.any(rows[1:] < rows[:-1])):
        return table, rows
    perm = np.argsort(rows, kind="stable")  # a merge of a few sorted runs: cheap
    cuts = np.flatnonzero(np.diff(perm) != 1) + 1  # where the next row in order is not the next row held
    firsts = perm[np.r_[0, cuts]]
    lengths = np.diff(np.r_[0, cuts, n])
    if len(firsts) <= max(64, n // SLICE_ROWS):
        sliced = pa.concat_tables([table.slice(a, k) for a, k in zip(firsts.tolist(), lengths.tolist(), strict=True)])
        return sliced, rows[perm]
    return table.take(pa.array(perm)), rows[perm]


SLICE_ROWS = 1024  # rows per stretch at least, on average, for input order by slicing (else a gather)


_CACHE: dict[str, Any] = {}  # per Python worker (Spark reuses them): unpickled broadcasts by digest


def _shipped(sc: Any, value: Any) -> tuple[Any, str]:
    """``value`` pickled into a broadcast variable, and the digest of its bytes."""
    import hashlib

    blob = pickle.dumps(value)
    return sc.broadcast(blob), hashlib.sha256(blob).hexdigest()


def _loaded(given: tuple[Any, str]) -> Any:
    """The value of a :func:`_shipped` broadcast, unpickled once per worker process."""
    broadcast, digest = given
    if digest not in _CACHE:
        if len(_CACHE) > 16:
            _CACHE.clear()
        _CACHE[digest] = pickle.loads(broadcast.value)
    return _CACHE[digest]


def _one_binary(data: Any) -> Any:
    """A binary array of one value over an Arrow buffer (no copy)."""
    import pyarrow as pa

    offsets = pa.array([0, data.size], pa.int32()).buffers()[1]
    return pa.Array.from_buffers(pa.binary(), 1, [None, offsets, data])


def firm_partitions(df: Any, npartitions: int | None = None, columns: Iterable[str] | None = None) -> tuple[Any, int]:
    """``df`` (with ``__row``) repartitioned into firm-complete partitions by :func:`partition_key`,
    persisted (every pass, and every plan rated on it, reads it), and its row count.
    ``columns``: only these columns (and the firm id) go through the shuffle (default: all)."""
    if ROW not in df.columns:
        raise ValueError(f"the DataFrame needs a {ROW} column (each row's position in the input); see read_files")
    if columns is not None:
        keep = set(columns) | {"firm_id"}
        df = df.select(*[f"`{c}`" for c in df.columns if c in keep], ROW)
    k = npartitions or max(df.rdd.getNumPartitions(), 1)
    parts = df.repartition(k, partition_key(df)).persist()
    return parts, int(parts.count())


# every control and separator character (Unicode Cc, Z*), anywhere in an id
_NOT_IN_KEY = r"[\p{Cc}\p{Z}]"


def partition_key(df: Any) -> Any:
    """A Spark column that puts every row of one firm in one partition, computed in the JVM.

    The data contract reads a firm id as its text with surrounding whitespace trimmed (Arrow's
    ``utf8_trim_whitespace``: Unicode bidi classes WS, B and S, e.g. U+3000). The key removes every
    control and separator character (Unicode Cc and Z) *anywhere* in the id, which covers every
    character that trim removes (tests/test_scale_spark.py checks all of Unicode against Arrow): two
    spellings of one firm ("F1", " F1", "F1\u3000") always get the same key; two firms may share
    one (harmless: a partition holds whole firms either way). Numbers: the value (NaN: no firm; -0.0
    as 0.0). Until session 6 a mapInArrow added partition.buckets() of each row — every row and
    column through Python and back before the shuffle, ~1/3 of Spark's CPU of partitioning."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, FloatType, StringType

    if "firm_id" not in df.columns:
        return F.lit("")  # no firm ids: every row is independent (one partition, as before)
    col = F.col("firm_id")
    kind = df.schema["firm_id"].dataType
    if isinstance(kind, StringType):
        return F.regexp_replace(col, _NOT_IN_KEY, "")
    if isinstance(kind, DoubleType | FloatType):
        return F.when(F.isnan(col), F.lit(None)).otherwise(col + F.lit(0.0))
    return col


@_under_arrow_settings
def run(
    plan: Plan,
    parts: Any,
    *,
    source: str = "<spark>",
    view: View = result_table,
    extra: Sequence[str] = (),
    fail_first_attempt: bool = False,
    clock: TaskClock | None = None,
    output: str | Path | None = None,
    names: Sequence[str] | None = None,
    lazy: bool = False,
) -> Any:
    """The passes of ``plan`` over firm-complete ``parts`` (from :func:`firm_partitions`): a
    pyarrow Table of ``view(plan, results, raw)`` of every partition, in input order.

    ``view``: a picklable function of a partition's results and its rows as read (the plan's
    inputs and the ``extra`` columns) returning a pyarrow Table (default: the result columns);
    ``clock``: filled with the time spent inside the tasks (accumulators); ``output``: write the
    views to this file instead (canonical row groups; the driver holds one partition's pieces at
    a time, not the whole result: ``ordered.OrderedSpill``) and return None; ``names``: every
    column of the input (default: those of ``parts``; the data contract's typo check reads them);
    ``lazy``: run the benchmark passes and return the final pass as a Spark DataFrame of the
    view's columns and ``__row``, not yet run (under the session's own Arrow settings when it runs)."""
    import pyarrow as pa

    from ..pipeline import require_rulebook

    require_rulebook(plan)
    spark = parts.sparkSession
    sc = spark.sparkContext
    present = [c for c in parts.columns if c != ROW]
    names = list(names) if names is not None else present
    timing = clock is not None
    needed = columns_read(plan) | set(extra)
    # only the columns the plan (and the view) reads travel to the Python workers
    wanted = parts.select(*[f"`{c}`" for c in present if c in needed], ROW)
    # the plan travels once per worker process (a broadcast, unpickled once: _loaded), not with every task
    shipped = _shipped(sc, plan)

    def meters() -> list[Any]:
        return [sc.accumulator(0.0) for _ in range(6)] if timing else []

    def record(name: str, acc: list[Any]) -> None:
        if clock is not None:
            v = [a.value for a in acc]
            clock.add(name, int(v[1]), v[2], v[3], tasks=int(v[0]), write_cpu=v[4], receive_cpu=v[5])

    tables: dict[str, BenchmarkTable] = {}
    for stage in range(benchmark_passes(plan)):
        given = _shipped(sc, tables)
        acc = meters()

        def partials_task(batches: Iterator[Any], given: Any = given, acc: list[Any] = acc) -> Iterator[Any]:
            warm_up()  # the worker's imports: once per process, not the partition's work
            the_plan, the_tables = _loaded(shipped), _loaded(given)  # unpickled once per worker process
            got, receive = _received(batches)
            started = time.perf_counter(), time.thread_time()  # CPU from here: the partition's own work
            whole = _whole(got)
            if whole is None:
                return
            p, timing = task(the_plan, *whole, the_tables, final=False, source=source, names=names, started=started)
            blob = pickle.dumps(p)
            _meter(acc, (*timing, receive))
            yield pa.RecordBatch.from_arrays([pa.array([blob], type=pa.binary())], names=["p"])

        collected = wanted.mapInArrow(partials_task, "p binary").collect()  # the one action of the pass
        tables.update(tables_of(plan, [pickle.loads(r["p"]) for r in collected]))
        record(f"benchmarks {stage + 1}", acc)

    from pyspark.sql.pandas.types import to_arrow_schema

    types = {f.name: f.type for f in to_arrow_schema(parts.schema) if f.name != ROW}
    types = {n: t for n, t in types.items() if n in needed}
    schema = view_schema(view, plan, names, types, tables)
    ddl = ", ".join(f"`{f.name}` {_SPARK_TYPES[str(f.type)]}" for f in schema) + f", `{ROW}` long"
    given = _shipped(sc, tables)
    acc = meters()
    out_dir = str(output) if output is not None and is_parts_dir(output) else None

    def final_task(batches: Iterator[Any], given: Any = given, acc: list[Any] = acc) -> Iterator[Any]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if fail_first_attempt and ctx is not None and ctx.attemptNumber() == 0:
            raise RuntimeError("injected failure of a first attempt (test)")
        warm_up()
        the_plan, the_tables = _loaded(shipped), _loaded(given)
        got, receive = _received(batches)
        started = time.perf_counter(), time.thread_time()
        whole = _whole(got)
        if whole is None:
            return
        part = ctx.partitionId() if ctx is not None else 0
        out, timing = task(
            the_plan, *whole, the_tables, final=True, source=source, names=names, view=view,
            extra=extra, out_dir=out_dir, part=part, started=started,
        )  # fmt: skip
        _meter(acc, (*timing, receive))
        if out_dir is not None:  # written by the task itself: only the row count goes back
            yield pa.RecordBatch.from_arrays(
                [pa.array([part], pa.int64()), pa.array([out], pa.int64())], ["part", "rows"]
            )
            return
        if output is None:
            yield from out.to_batches()
            return
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        for start in range(0, out.num_rows, BLOB_ROWS):  # the partition's results as compressed Arrow pieces
            buf = pa.BufferOutputStream()
            with pa.ipc.new_stream(buf, out.schema, options=options) as w:
                w.write_table(out.slice(start, BLOB_ROWS))
            yield pa.RecordBatch.from_arrays(
                [pa.array([part], pa.int64()), pa.array([start], pa.int64()), _one_binary(buf.getvalue())],
                names=["part", "start", "blob"],
            )

    if lazy:
        return wanted.mapInArrow(final_task, ddl)
    if out_dir is not None:
        written = wanted.mapInArrow(final_task, "part long, rows long").collect()
        record("final", acc)
        _check_parts(written, int(parts.count()), out_dir, lambda: empty_results(plan, types, tables, names, source))
        return None
    if output is not None:
        _write_ordered(wanted.mapInArrow(final_task, "part long, start long, blob binary"), output, schema, parts)
        record("final", acc)
        return None
    result = wanted.mapInArrow(final_task, ddl).toArrow()
    record("final", acc)
    if not result.num_rows:
        return schema.empty_table()
    order = np.argsort(result.column(ROW).to_numpy(), kind="stable")
    return result.take(pa.array(order)).drop_columns([ROW]).cast(schema)


def _meter(acc: list[Any], timing: tuple[int, float, float, float, float]) -> None:
    """A task's timing added to the pass's accumulators (tasks, rows, wall, CPU, write CPU,
    receive CPU)."""
    if acc:
        for a, v in zip(acc, (1, *timing), strict=True):
            a.add(v)


def _check_parts(written: list[Any], n: int, out_dir: str, empty: Callable[[], Results]) -> None:
    """Every input row came back written; an empty input still gives one (empty) part file."""
    check_written([int(r["rows"]) for r in written], n, out_dir, empty)


def rate(
    plan: Plan,
    df: Any,
    output: str | Path | None = None,
    *,
    npartitions: int | None = None,
    source: str = "<spark>",
    fail_first_attempt: bool = False,
    clock: TaskClock | None = None,
) -> Any:
    """Rate a Spark DataFrame (with a ``__row`` column: each row's position in the input:
    :func:`read`, :func:`row_numbers`) and write the results to ``output``: one file (input order,
    canonical row groups: the bytes of the in-memory run), or, for a directory
    (``sink.is_parts_dir``), one ``part-NNNNN.parquet`` per partition written by the executors
    (rows of a partition in input order). Returns the row count.

    Without ``output``: a Spark DataFrame of the result columns and ``__row``. The benchmark passes
    run here (their tables broadcast), the final pass when the DataFrame is used; the firm-complete
    partitions are persisted for the benchmark passes only, so the final pass repartitions ``df``
    again (the same rows, by the same key: the same result).

    ``fail_first_attempt``: the first attempt of every final-pass task raises (tests: Spark
    retries it; needs a master that allows retries, e.g. ``local[2,4]``)."""
    from ..pipeline import require_rulebook

    require_rulebook(plan)
    if output is not None:
        check_output(output)
    names = [c for c in df.columns if c != ROW]
    parts, n = firm_partitions(df, npartitions, columns_read(plan))  # the unread columns stay behind
    try:
        ratings = run(
            plan, parts, source=source, fail_first_attempt=fail_first_attempt, clock=clock, output=output,
            names=names, lazy=output is None,
        )  # fmt: skip
    finally:
        parts.unpersist()
    return n if output is not None else ratings


_ROW_BITS = 33  # monotonically_increasing_id(): the partition index above bit 33, the row's rank in it below


def row_numbers(df: Any) -> Any:
    """``df`` with ``__row``: each row's position in the DataFrame's own order (its partitions in
    order, the rows of each in order), from one Spark action counting the rows of each partition.
    The source must give the same partitions each time it is read (files do)."""
    from pyspark.sql import functions as F

    tagged = df.withColumn("__id", F.monotonically_increasing_id())
    part = F.shiftright(F.col("__id"), _ROW_BITS)
    counts = {int(r["p"]): int(r["count"]) for r in tagged.groupBy(part.alias("p")).count().collect()}
    rank = F.col("__id").bitwiseAND(F.lit((1 << _ROW_BITS) - 1))
    return _numbered(tagged, part, rank, _starts(counts, sorted(counts))).drop("__id")


def _starts(counts: dict[Any, int], order: Iterable[Any]) -> dict[Any, int]:
    """Each key's first row number when the keys' rows follow each other in ``order``."""
    starts, start = {}, 0
    for k in order:
        starts[k] = start
        start += counts[k]
    return starts


def _numbered(df: Any, key: Any, rank: Any, starts: dict[Any, int]) -> Any:
    """``df`` with ``__row`` = ``starts[key] + rank``: a row's number from its piece's (file's,
    partition's) first row number and its rank in the piece."""
    from pyspark.sql import functions as F

    if not starts:  # no rows: no map to build
        return df.withColumn(ROW, rank.cast("long"))
    mapping = F.create_map(*[x for k, start in starts.items() for x in (F.lit(k), F.lit(start))])
    return df.withColumn(ROW, (mapping[key] + rank).cast("long"))


def _write_ordered(blobs: Any, output: str | Path, schema: Any, parts: Any) -> None:
    """The final pass run in parallel (its pieces kept on the executors' disks), then streamed to
    the driver one partition at a time, spilled, and merged in input order into ``output``."""
    import pyarrow as pa
    from pyspark import StorageLevel

    from .ordered import OrderedSpill

    blobs = blobs.persist(StorageLevel.DISK_ONLY)
    try:
        blobs.count()  # the final pass: every partition at once
        n = int(parts.count())
        with OrderedSpill(parts.rdd.getNumPartitions()) as spill:
            for r in blobs.toLocalIterator(prefetchPartitions=True):
                spill.add(r["part"], pa.ipc.open_stream(pa.py_buffer(r["blob"])).read_all())
            spill.write(output, n, schema)
    finally:
        blobs.unpersist()


def read_files(spark: Any, files: Sequence[Path]) -> Any:
    """The Parquet files as one DataFrame with ``__row`` = the row's position in the files taken in
    path order (the local runner's order): each file's first row number plus Parquet's row index."""
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    firsts = _starts({f: pq.read_metadata(f).num_rows for f in files}, files)
    # how Spark spells the path varies; a symbolic link may be named as given or resolved
    starts = {
        form: first
        for f, first in firsts.items()
        for path in (str(Path(f).absolute()), str(Path(f).resolve()))
        for form in (Path(path).as_uri(), f"file:{path}", path)
    }
    df = spark.read.parquet(*[str(f) for f in files])
    df = df.select("*", F.col("_metadata.file_path").alias("__file"), F.col("_metadata.row_index").alias("__index"))
    return _numbered(df, F.col("__file"), F.col("__index"), starts).drop("__file", "__index")


def _path_key(uri: str) -> tuple[str, ...]:
    """A file URL's path as the local runner orders paths (component by component)."""
    from urllib.parse import unquote, urlsplit

    return tuple(unquote(urlsplit(uri).path).split("/"))


def read_url(spark: Any, url: str) -> Any:
    """The Parquet dataset at ``url`` (``s3a://bucket/prefix``, ``hdfs://…``, ``file:///…``), read
    by Spark itself (nothing is opened on the driver), with ``__row`` numbered as the local runner
    numbers the rows of the same files: files in path order, then Parquet's row index. The row
    count of each file comes from one Spark action over the file metadata. Credentials and the
    S3A jars are Spark's configuration (docs/scale.md), never arguments here."""
    from pyspark.sql import functions as F

    from ..errors import DataError

    try:
        df = spark.read.parquet(url)
        df = df.select("*", F.col("_metadata.file_path").alias("__file"), F.col("_metadata.row_index").alias("__index"))
        counts = {r["__file"]: int(r["count"]) for r in df.groupBy("__file").count().collect()}
    except Exception as exc:  # noqa: BLE001 - Spark's (Py4J's) errors: no common base to name
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise DataError(f"{url}: Spark cannot read it: {first[:300]}") from None
    starts = _starts(counts, sorted(counts, key=_path_key))
    return _numbered(df, F.col("__file"), F.col("__index"), starts).drop("__file", "__index")


def read(spark: Any, data: str | Path) -> Any:
    """A dataset for :func:`rate`: a URL read by Spark (:func:`read_url`), or local Parquet
    (a file, a directory or a glob: :func:`read_files`)."""
    from .chunked import dataset_files

    return read_url(spark, str(data)) if is_url(data) else read_files(spark, dataset_files(data))


def rate_files(plan: Plan, data: str | Path, output: str | Path, *, master: str, source: str) -> int:
    """``ruleengine rate BOOK DATA --engine spark``: the dataset read by Spark, rated, written."""
    spark = session(master)
    return rate(plan, read(spark, data), output, source=source)
