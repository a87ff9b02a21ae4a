"""Rating on Spark from Python (``pip install 'ruleengine[spark]'``; issue #18)::

    import ruleengine.spark
    ratings = ruleengine.spark.rate("huzhou", df)                  # a Spark DataFrame, lazily
    ruleengine.spark.rate("huzhou", df, "ratings.parquet")         # or written, as the CLI does
    ruleengine.spark.rate(plan, "s3a://bucket/firm-years/", "out/")  # Parquet read by Spark itself

The same plan and the same phases as one machine (``ruleengine.scale.spark``; docs/scale.md):
firm-complete partitions, one Spark action per benchmark pass merged exactly on the driver, the
tables broadcast, stage 2 per partition. The rows are the local run's, bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from .rulebook.plan import Plan


@overload
def rate(
    book: str | Path | Plan, data: Any, output: None = None, *, npartitions: int | None = None, master: str = ...
) -> Any: ...
@overload
def rate(
    book: str | Path | Plan, data: Any, output: str | Path, *, npartitions: int | None = None, master: str = ...
) -> int: ...


def rate(
    book: str | Path | Plan,
    data: Any,
    output: str | Path | None = None,
    *,
    npartitions: int | None = None,
    master: str = "local[*]",
) -> Any:
    """Rate ``data`` with ``book`` (a :class:`~ruleengine.Plan`, a bundled rulebook's name or a
    rulebook file) on Spark.

    ``data``: a Spark DataFrame of firm-years (the data dictionary's columns), or the path or URL
    of a Parquet dataset (``s3a://…``, ``hdfs://…``, a directory, a file, a glob), read by Spark
    in the active session, or else in a new one of ``master`` (``scale.spark.session``).

    A DataFrame's rows are numbered in its own order (its partitions in order, the rows of each in
    order: one Spark action) unless it has a ``__row`` column already; that order is the output's,
    and the row numbers are the ones data issues name. Its source must give the same rows in the
    same partitions each time it is read (files, a table; ``persist()`` anything else first).

    Without ``output``: a Spark DataFrame of the result columns and ``__row``; the benchmark passes
    have run, the final pass runs when the DataFrame is used, reading and repartitioning ``data``
    again (``orderBy("__row")``: the input order; the rows are the local run's). With ``output``:
    the results written there, as ``ruleengine rate … --engine spark -o OUTPUT`` writes them (one
    file in input order, the local run's bytes; or ``DIR/``: one part file per partition); returns
    the row count.
    ``npartitions``: firm-complete partitions (default: the DataFrame's own count)."""
    from .api import load
    from .scale import spark as engine

    plan = load(book)
    source = "<spark>"
    if isinstance(data, str | Path):
        from pyspark.sql import SparkSession

        source = str(data)
        # the caller's session as it is (session() would also set its defaults on it)
        data = engine.read(SparkSession.getActiveSession() or engine.session(master), data)
    elif not hasattr(data, "sparkSession"):
        raise TypeError(f"data: a Spark DataFrame or the path or URL of a Parquet dataset, not {type(data).__name__}")
    elif engine.ROW not in data.columns:
        data = engine.row_numbers(data)
    return engine.rate(plan, data, output, npartitions=npartitions, source=source)
