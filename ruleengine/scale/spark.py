"""Rating on Spark (issue #18): the same plan, the same phases, the same bytes as one machine.

    rate(plan, df)               a Spark DataFrame holding the input columns and ``__row`` (each
                                 row's position in the input; rate_files adds it from the files)
      → firm bucket              mapInArrow: partition.buckets(firm_id) (the stable firm hash)
      → firm-complete partitions repartition(k, __bucket), persisted
      → per benchmark stage      mapInArrow: stage 1 + partials per partition, pickled; collected
                                 and merged once on the driver (one action) → tables, broadcast
      → final pass               mapInArrow: stage 2 per partition → result columns + __row;
                                 toArrow on the driver, input order, canonical sink

Shipped to executors: the compiled plan (pickled in the task closure) and the benchmark tables
(a broadcast variable). Every task is a pure function of its partition and the tables: a failed
task is retried by Spark and gives the same rows.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .partition import ROW, benchmark_passes, buckets, columns_read, final_of, partials_of, prepare, tables_of
from .sink import ResultSink

if TYPE_CHECKING:
    from ..engine.benchmarks import BenchmarkTable
    from ..io.data import RawTable
    from ..rulebook.plan import Plan

BUCKET = "__bucket"
_SPARK_TYPES = {"int64": "long", "double": "double", "string": "string", "large_string": "string"}


def session(master: str = "local[*]", app: str = "ruleengine") -> Any:
    """A SparkSession whose Python workers run this interpreter, with Arrow on."""
    import os

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "8")
        .getOrCreate()
    )


def _whole(batches: Iterator[Any]) -> Any:
    import pyarrow as pa

    got = list(batches)
    if not got:
        return None
    table = pa.Table.from_batches(got)
    order = np.argsort(table.column(ROW).to_numpy(), kind="stable")  # input order inside the partition
    return table.take(pa.array(order))


def _raw(table: Any, plan: Plan, source: str, names: Sequence[str]) -> tuple[RawTable, np.ndarray]:
    from ..io.data import RawTable

    rows = table.column(ROW).to_numpy().astype(np.int64)
    cols = {n: table.column(n) for n in table.column_names if n in columns_read(plan)}
    return RawTable(cols, table.num_rows, source, names=list(names)), rows


def rate(
    plan: Plan,
    df: Any,
    output: str | Path,
    *,
    npartitions: int | None = None,
    source: str = "<spark>",
    fail_first_attempt: bool = False,
) -> int:
    """Rate a Spark DataFrame (with a ``__row`` column: each row's position in the input) and
    write the results (input order, canonical row groups) to ``output``. Returns the row count.

    ``fail_first_attempt``: the first attempt of every final-pass task raises (tests: Spark
    retries it; needs a master that allows retries, e.g. ``local[2,4]``)."""
    import pyarrow as pa

    from ..pipeline import require_rulebook

    require_rulebook(plan)
    ResultSink(output)
    spark = df.sparkSession
    names = [c for c in df.columns if c not in (ROW, BUCKET)]
    if ROW not in df.columns:
        raise ValueError(f"the DataFrame needs a {ROW} column (each row's position in the input); see rate_files")

    from pyspark.sql.types import LongType, StructField, StructType

    bucket_schema = StructType([*df.schema.fields, StructField(BUCKET, LongType())])  # (.add mutates df.schema)
    k = npartitions or max(df.rdd.getNumPartitions(), 1)

    def add_bucket(batches: Iterator[Any]) -> Iterator[Any]:
        for b in batches:
            ids = b.column(b.schema.get_field_index("firm_id")) if "firm_id" in b.schema.names else None
            bk = buckets(ids if ids is not None else np.full(b.num_rows, "", dtype=object), k)
            yield pa.RecordBatch.from_arrays(
                [*b.columns, pa.array(bk, type=pa.int64())], names=[*b.schema.names, BUCKET]
            )

    parts = df.mapInArrow(add_bucket, bucket_schema).repartition(k, BUCKET).persist()
    n = parts.count()
    tables: dict[str, BenchmarkTable] = {}
    for _ in range(benchmark_passes(plan)):
        given = spark.sparkContext.broadcast(pickle.dumps(tables))

        def partials_task(batches: Iterator[Any], given: Any = given) -> Iterator[Any]:
            table = _whole(batches)
            if table is None:
                return
            raw, rows = _raw(table, plan, source, names)
            p = partials_of(plan, prepare(plan, raw, rows), pickle.loads(given.value))
            yield pa.RecordBatch.from_arrays([pa.array([pickle.dumps(p)], type=pa.binary())], names=["p"])

        collected = parts.mapInArrow(partials_task, "p binary").collect()  # the one action of the pass
        tables.update(tables_of(plan, [pickle.loads(r["p"]) for r in collected]))

    empty = final_of(plan, prepare(plan, _raw(_empty(df), plan, source, names)[0], np.zeros(0, np.int64)), tables)
    arrow_schema = empty.to_arrow().schema
    ddl = ", ".join(f"`{f.name}` {_SPARK_TYPES[str(f.type)]}" for f in arrow_schema) + f", `{ROW}` long"
    given = spark.sparkContext.broadcast(pickle.dumps(tables))

    def final_task(batches: Iterator[Any], given: Any = given) -> Iterator[Any]:
        if fail_first_attempt:
            from pyspark import TaskContext

            ctx = TaskContext.get()
            if ctx is not None and ctx.attemptNumber() == 0:
                raise RuntimeError("injected failure of a first attempt (test)")
        table = _whole(batches)
        if table is None:
            return
        raw, rows = _raw(table, plan, source, names)
        out = final_of(plan, prepare(plan, raw, rows), pickle.loads(given.value)).to_arrow()
        out = out.append_column(ROW, pa.array(rows, type=pa.int64()))
        yield from out.to_batches()

    result = parts.mapInArrow(final_task, ddl).toArrow()
    parts.unpersist()
    order = np.argsort(result.column(ROW).to_numpy(), kind="stable")
    with ResultSink(output) as sink:
        if result.num_rows:
            sink.write(result.take(pa.array(order)).drop_columns([ROW]).cast(arrow_schema))
        else:
            sink.write(empty.to_arrow())
    return int(n)


def _empty(df: Any) -> Any:
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    return pa.Table.from_pylist([], schema=to_arrow_schema(df.schema))


def read_files(spark: Any, files: Sequence[Path]) -> Any:
    """The Parquet files as one DataFrame with ``__row`` = the row's position in the files taken in
    path order (the local runner's order): each file's first row number plus Parquet's row index."""
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    offsets, start = {}, 0
    for f in files:
        path = str(Path(f).resolve())
        for form in (Path(path).as_uri(), f"file:{path}", path):  # how Spark spells the path varies
            offsets[form] = start
        start += pq.read_metadata(f).num_rows
    df = spark.read.parquet(*[str(f) for f in files])
    df = df.select("*", F.col("_metadata.file_path").alias("__file"), F.col("_metadata.row_index").alias("__index"))
    mapping = F.create_map(*[x for uri, off in offsets.items() for x in (F.lit(uri), F.lit(off))])
    return df.withColumn(ROW, (mapping[F.col("__file")] + F.col("__index")).cast("long")).drop("__file", "__index")


def rate_files(plan: Plan, files: Sequence[Path], output: str | Path, *, master: str, source: str) -> int:
    """``ruleengine rate BOOK DATA --engine spark``: the files read by Spark, rated, written."""
    spark = session(master)
    return rate(plan, read_files(spark, files), output, source=source)
