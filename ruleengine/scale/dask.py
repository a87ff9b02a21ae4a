"""Rating on Dask (issue #18): the same plan, the same phases, the same bytes as one machine.

    rate(plan, ddf)                 a dask DataFrame (or a Parquet path/glob, read with dask)
      → row numbers                 each row's position in the input (partition lengths, then offsets)
      → firm-complete partitions    shuffle on the stable firm bucket (partition.firm_keys)
      → per benchmark stage         stage 1 + partials per partition (in the workers), gathered and
                                    merged once on the client (exact, any order) → tables
      → final pass                  tables sent with the task (they are small); stage 2 per partition
                                    → Arrow tables with row numbers, gathered on the client, put back
                                    in input order and written through the canonical sink

Every task is a pure function of its partition and the tables, so a worker lost mid-job is
simply recomputed elsewhere: the results are the same bytes.

What is shipped to the workers: the compiled plan (pickled, a few hundred kB) and, for the final
pass, the benchmark tables; partitions travel as pandas DataFrames and are turned into Arrow
columns in the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .partition import ROW, benchmark_passes, buckets, columns_read, final_of, partials_of, prepare, tables_of
from .sink import ResultSink

if TYPE_CHECKING:
    from ..engine.benchmarks import BenchmarkTable, Partials
    from ..io.data import RawTable
    from ..rulebook.plan import Plan

BUCKET = "__bucket"


def _raw_of(pdf: Any, plan: Plan, source: str) -> tuple[RawTable, np.ndarray]:
    """A pandas partition as the RawTable the data contract reads, and its rows' positions."""
    import pyarrow as pa

    from ..io.data import RawTable

    rows = pdf[ROW].to_numpy(dtype=np.int64)
    names = [c for c in pdf.columns if c not in (ROW, BUCKET)]
    wanted = [c for c in names if c in columns_read(plan)]
    table = pa.Table.from_pandas(pdf[wanted], preserve_index=False)
    cols = {n: table.column(n) for n in table.column_names}
    return RawTable(cols, len(pdf), source, names=names), rows


def _sorted(pdf: Any) -> Any:
    return pdf.sort_values(ROW, kind="stable") if len(pdf) else pdf


def _partials_task(pdf: Any, plan: Plan, tables: dict[str, BenchmarkTable], source: str) -> Partials:
    raw, rows = _raw_of(_sorted(pdf), plan, source)
    return partials_of(plan, prepare(plan, raw, rows), tables)


def _final_task(pdf: Any, plan: Plan, tables: dict[str, BenchmarkTable], source: str) -> Any:
    import pyarrow as pa

    raw, rows = _raw_of(_sorted(pdf), plan, source)
    res = final_of(plan, prepare(plan, raw, rows), tables)
    return res.to_arrow().append_column(ROW, pa.array(rows, type=pa.int64()))


def _with_rows(ddf: Any) -> Any:
    """``ddf`` with ROW (0-based position in the input) and BUCKET (firm bucket) columns."""
    import dask

    lengths = ddf.map_partitions(len).compute()
    offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))])
    parts = ddf.to_delayed()

    def number(pdf: Any, start: int, k: int) -> Any:
        pdf = pdf.copy()
        pdf[ROW] = np.arange(start, start + len(pdf), dtype=np.int64)
        ids = pdf["firm_id"].to_numpy() if "firm_id" in pdf.columns else np.full(len(pdf), "", dtype=object)
        pdf[BUCKET] = buckets(ids, k)
        return pdf

    import dask.dataframe as dd

    meta = ddf._meta.assign(**{ROW: np.zeros(0, dtype=np.int64), BUCKET: np.zeros(0, dtype=np.int64)})
    k = max(ddf.npartitions, 1)
    numbered = [dask.delayed(number)(p, int(offsets[i]), k) for i, p in enumerate(parts)]
    return dd.from_delayed(numbered, meta=meta, verify_meta=False), int(offsets[-1])


def rate(
    plan: Plan,
    ddf: Any,
    output: str | Path,
    *,
    npartitions: int | None = None,
    client: Any = None,
    source: str = "<dask>",
    on_pass: Callable[[str], None] | None = None,
) -> int:
    """Rate a dask DataFrame (or a Parquet path/glob) with ``plan`` and write the results (input
    order, canonical row groups) to ``output``. Returns the number of rows.

    ``npartitions``: firm-complete partitions after the shuffle (default: as many as the input);
    ``client``: a ``distributed.Client`` (default: the current one, or dask's local scheduler);
    ``on_pass(name)``: called after each pass (the tests kill a worker there)."""
    import dask
    import dask.dataframe as dd

    from ..pipeline import require_rulebook

    require_rulebook(plan)
    ResultSink(output)  # the format, checked first
    if isinstance(ddf, str | Path):
        source = str(ddf)
        ddf = dd.read_parquet(str(ddf))
    numbered, n = _with_rows(ddf)
    k = npartitions or max(ddf.npartitions, 1)
    # a task-based shuffle: every piece of it is a task the scheduler can recompute when a worker
    # is lost (a P2P shuffle's output is tied to its run)
    if k > 1:
        parts_df = numbered.shuffle(BUCKET, npartitions=k, shuffle_method="tasks")
    else:
        parts_df = numbered.repartition(npartitions=1)
    parts_df = client.persist(parts_df) if client is not None else parts_df.persist()  # shuffled once
    parts = parts_df.to_delayed()
    compute = client.compute if client is not None else None

    def run(tasks: list[Any]) -> list[Any]:
        if compute is not None:
            return list(client.gather(compute(tasks)))
        return list(dask.compute(*tasks))

    tables: dict[str, BenchmarkTable] = {}
    for stage in range(benchmark_passes(plan)):
        partials = run([dask.delayed(_partials_task)(p, plan, dict(tables), source) for p in parts])
        tables.update(tables_of(plan, partials))
        if on_pass:
            on_pass(f"benchmarks {stage + 1}")
    results = run([dask.delayed(_final_task)(p, plan, dict(tables), source) for p in parts])
    if on_pass:
        on_pass("final")
    _write_in_order(results, output, n)
    return n


def _write_in_order(results: list[Any], output: str | Path, n: int) -> None:
    """Per-partition result tables (with ROW) → one file in input order, canonical row groups."""
    import pyarrow as pa

    whole = pa.concat_tables([t for t in results if t.num_rows] or results[:1])
    order = np.argsort(whole.column(ROW).to_numpy(), kind="stable")
    if len(order) != n:
        from ..errors import RuleEngineError

        raise RuleEngineError(f"internal: {len(order)} result rows for {n} input rows")
    with ResultSink(output) as sink:
        sink.write(whole.take(pa.array(order)).drop_columns([ROW]))
