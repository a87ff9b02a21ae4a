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

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .partition import (
    BUCKET,
    ROW,
    TaskClock,
    benchmark_passes,
    buckets,
    columns_read,
    final_of,
    partials_of,
    prepare,
    result_table,
    tables_of,
    warm_up,
)
from .sink import ResultSink

if TYPE_CHECKING:
    from ..engine.benchmarks import BenchmarkTable
    from ..engine.results import Results
    from ..io.data import RawTable
    from ..rulebook.plan import Plan

    View = Callable[[Plan, Results, RawTable], Any]


def _raw_of(
    pdf: Any, plan: Plan, source: str, extra: Sequence[str] = (), names: Sequence[str] | None = None
) -> tuple[RawTable, np.ndarray]:
    """A pandas partition as the RawTable the data contract reads, and its rows' positions;
    ``names``: every column of the input (default: the partition's)."""
    import pyarrow as pa

    from ..io.data import RawTable

    rows = pdf[ROW].to_numpy(dtype=np.int64)
    present = [c for c in pdf.columns if c not in (ROW, BUCKET)]
    names = list(names) if names is not None else present
    keep = columns_read(plan) | set(extra)
    wanted = [c for c in present if c in keep]
    table = pa.Table.from_pandas(pdf, columns=wanted, preserve_index=False)
    cols = {n: table.column(n) for n in table.column_names}
    return RawTable(cols, len(pdf), source, names=names), rows


def _sorted(pdf: Any) -> Any:
    """The partition in input order (the task shuffle mostly delivers it so: then no copy)."""
    if not len(pdf) or pdf[ROW].is_monotonic_increasing:
        return pdf
    return pdf.sort_values(ROW, kind="stable")


Timed = tuple[Any, tuple[int, float, float]]  # a task's value and (rows, wall s, CPU s) inside it


def _partials_task(
    pdf: Any, plan: Plan, tables: dict[str, BenchmarkTable], source: str, names: Sequence[str] | None = None
) -> Timed:
    warm_up()  # the worker's imports: once per process, not the partition's work
    w0, c0 = time.perf_counter(), time.thread_time()
    pdf = _sorted(pdf)
    raw, rows = _raw_of(pdf, plan, source, (), names)
    p = partials_of(plan, prepare(plan, raw, rows), tables)
    return p, (len(rows), time.perf_counter() - w0, time.thread_time() - c0)


def _final_task(
    pdf: Any,
    plan: Plan,
    tables: dict[str, BenchmarkTable],
    source: str,
    view: View,
    extra: Sequence[str],
    names: Sequence[str] | None = None,
) -> Timed:
    import pyarrow as pa

    warm_up()
    w0, c0 = time.perf_counter(), time.thread_time()
    pdf = _sorted(pdf)
    raw, rows = _raw_of(pdf, plan, source, extra, names)
    out = view(plan, final_of(plan, prepare(plan, raw, rows), tables), raw)
    out = out.append_column(ROW, pa.array(rows, type=pa.int64()))
    return out, (len(rows), time.perf_counter() - w0, time.thread_time() - c0)


def _with_rows(ddf: Any, keep: set[str] | None = None) -> Any:
    """``ddf`` with ROW (0-based position in the input) and BUCKET (firm bucket) columns; only the
    columns ``keep`` (default: all). The columns are dropped inside the partitions, not by
    selecting them on ``ddf``: dask may then read the files in fewer partitions than it counted."""
    import dask

    lengths = ddf.map_partitions(len).compute()
    offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))])
    parts = ddf.to_delayed()
    if len(parts) != len(lengths):
        from ..errors import RuleEngineError

        raise RuleEngineError(f"internal: dask counted {len(lengths)} partitions and gave {len(parts)}")

    def number(pdf: Any, start: int, k: int) -> Any:
        pdf = (pdf[[c for c in pdf.columns if c in keep]] if keep is not None else pdf).copy()
        pdf[ROW] = np.arange(start, start + len(pdf), dtype=np.int64)
        ids = pdf["firm_id"].to_numpy() if "firm_id" in pdf.columns else np.full(len(pdf), "", dtype=object)
        pdf[BUCKET] = buckets(ids, k)
        return pdf

    import dask.dataframe as dd

    meta = ddf._meta if keep is None else ddf._meta[[c for c in ddf._meta.columns if c in keep]]
    meta = meta.assign(**{ROW: np.zeros(0, dtype=np.int64), BUCKET: np.zeros(0, dtype=np.int64)})
    k = max(ddf.npartitions, 1)
    numbered = [dask.delayed(number)(p, int(offsets[i]), k) for i, p in enumerate(parts)]
    return dd.from_delayed(numbered, meta=meta, verify_meta=False), int(offsets[-1])


class Partitions:
    """A dataset shuffled into firm-complete partitions, persisted on the cluster: every pass, and
    every plan rated on it (``diff``, ``compare``), reads these partitions."""

    def __init__(
        self, ddf: Any, npartitions: int | None = None, client: Any = None, columns: Iterable[str] | None = None
    ):
        self.names: list[str] | None = None  # every input column, when only some were kept
        keep = None
        if columns is not None:  # only these columns (and the firm id) go through the shuffle
            keep = set(columns) | {"firm_id"}
            self.names = [str(c) for c in ddf.columns]
        numbered, self.n = _with_rows(ddf, keep)
        self.client = client
        k = npartitions or max(ddf.npartitions, 1)
        # a task-based shuffle: every piece of it is a task the scheduler can recompute when a
        # worker is lost (a P2P shuffle's output is tied to its run)
        if k > 1:
            parts_df = numbered.shuffle(BUCKET, npartitions=k, shuffle_method="tasks")
        else:
            parts_df = numbered.repartition(npartitions=1)
        self.frame = client.persist(parts_df) if client is not None else parts_df.persist()  # shuffled once
        self.parts = self.frame.to_delayed()
        self.meta = ddf._meta

    def compute(self, tasks: list[Any]) -> list[Any]:
        import dask

        if self.client is not None:
            return list(self.client.gather(self.client.compute(tasks)))
        return list(dask.compute(*tasks))


def run(
    plan: Plan,
    parts: Partitions,
    *,
    source: str = "<dask>",
    view: View = result_table,
    extra: Sequence[str] = (),
    on_pass: Callable[[str], None] | None = None,
    clock: TaskClock | None = None,
    output: str | Path | None = None,
) -> Any:
    """The passes of ``plan`` over firm-complete ``parts``: a pyarrow Table of ``view(plan,
    results, raw)`` of every partition, in input order (see ``spark.run``); with ``output``, the
    views written there instead, the driver holding one partition's results at a time."""
    import dask
    import pyarrow as pa

    from ..pipeline import require_rulebook

    require_rulebook(plan)
    tables: dict[str, BenchmarkTable] = {}
    for stage in range(benchmark_passes(plan)):
        tasks = [dask.delayed(_partials_task)(p, plan, dict(tables), source, parts.names) for p in parts.parts]
        got = parts.compute(tasks)
        tables.update(tables_of(plan, [g[0] for g in got]))
        _clock(clock, f"benchmarks {stage + 1}", got)
        if on_pass:
            on_pass(f"benchmarks {stage + 1}")
    tasks = [
        dask.delayed(_final_task)(p, plan, dict(tables), source, view, tuple(extra), parts.names) for p in parts.parts
    ]
    if output is not None:
        _write_ordered(parts, tasks, output, clock)
        if on_pass:
            on_pass("final")
        return None
    got = parts.compute(tasks)
    _clock(clock, "final", got)
    if on_pass:
        on_pass("final")
    results = [g[0] for g in got]
    whole = pa.concat_tables([t for t in results if t.num_rows] or results[:1])
    order = np.argsort(whole.column(ROW).to_numpy(), kind="stable")
    if len(order) != parts.n:
        from ..errors import RuleEngineError

        raise RuleEngineError(f"internal: {len(order)} result rows for {parts.n} input rows")
    return whole.take(pa.array(order)).drop_columns([ROW])


def _write_ordered(parts: Partitions, tasks: list[Any], output: str | Path, clock: TaskClock | None) -> None:
    """The final tasks' results gathered one at a time as they finish, spilled on the driver and
    merged in input order into ``output`` (``ordered.OrderedSpill``)."""
    import dask

    from .ordered import OrderedSpill

    with OrderedSpill(len(tasks)) as spill:
        if parts.client is not None:
            from distributed import as_completed

            futures = parts.client.compute(tasks)
            index = {f.key: i for i, f in enumerate(futures)}
            for fut in as_completed(futures):
                table, timing = fut.result()
                spill.add(index[fut.key], table)
                _clock(clock, "final", [(None, timing)])
                fut.release()
        else:
            step = 2
            for start in range(0, len(tasks), step):  # a few at a time: never every result at once
                for i, (table, timing) in enumerate(dask.compute(*tasks[start : start + step])):
                    spill.add(start + i, table)
                    _clock(clock, "final", [(None, timing)])
        schema = spill.schema or spill.any_schema
        schema = schema.remove(schema.get_field_index(ROW))
        spill.write(output, parts.n, schema)


def _clock(clock: TaskClock | None, name: str, got: list[Timed]) -> None:
    if clock is not None:
        for _, (rows, wall, cpu) in got:
            clock.add(name, rows, wall, cpu)


def rate(
    plan: Plan,
    ddf: Any,
    output: str | Path,
    *,
    npartitions: int | None = None,
    client: Any = None,
    source: str = "<dask>",
    on_pass: Callable[[str], None] | None = None,
    clock: TaskClock | None = None,
) -> int:
    """Rate a dask DataFrame (or a Parquet path/glob) with ``plan`` and write the results (input
    order, canonical row groups) to ``output``. Returns the number of rows.

    ``npartitions``: firm-complete partitions after the shuffle (default: as many as the input);
    ``client``: a ``distributed.Client`` (default: the current one, or dask's local scheduler);
    ``on_pass(name)``: called after each pass (the tests kill a worker there); ``clock``: filled
    with the time spent inside the tasks."""
    import dask.dataframe as dd

    from ..pipeline import require_rulebook

    require_rulebook(plan)
    ResultSink(output)  # the format, checked first
    if isinstance(ddf, str | Path):
        source = str(ddf)
        ddf = dd.read_parquet(str(ddf))
    parts = Partitions(ddf, npartitions, client, columns_read(plan))  # the unread columns stay behind
    run(plan, parts, source=source, on_pass=on_pass, clock=clock, output=output)
    return parts.n
