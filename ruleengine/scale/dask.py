"""Rating on Dask (issue #18): the same plan, the same phases, the same bytes as one machine.

    rate(plan, data)                local Parquet files (a path, directory or glob: read by the
                                    workers with pyarrow) or a dask DataFrame (any source)
      → row numbers                 each row's position in the input (file row counts from the
                                    Parquet footers, or the partitions' lengths)
      → firm-complete partitions    a task shuffle of Arrow tables on the stable firm bucket
                                    (partition.buckets): each input piece split by bucket, each
                                    bucket's pieces concatenated in input order; persisted
      → per benchmark stage         stage 1 + partials per partition (in the workers), gathered and
                                    merged once on the client (exact, any order) → tables
      → final pass                  stage 2 per partition (``partition.task``, the body Spark's
                                    tasks run too) → written by the worker as one Parquet file per
                                    partition (``-o DIR``), or Arrow tables with row numbers sent to
                                    the client, spilled and merged in input order into one file

Every task is a pure function of its inputs, so a worker lost mid-job is simply recomputed
elsewhere: the results are the same bytes.

What is shipped to the workers: the compiled plan and the benchmark tables, each once per worker
(a graph literal every task depends on, kept in the worker's memory, not pickled into every task);
partitions travel as Arrow tables (a dask DataFrame's pandas partitions are turned into Arrow once,
in the shuffle's first step, not in every pass).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError, RuleEngineError
from .partition import (
    ROW,
    TaskClock,
    Timing,
    benchmark_passes,
    buckets,
    check_written,
    columns_read,
    empty_results,
    result_table,
    tables_of,
    task,
    warm_up,
)
from .sink import check_output, is_parts_dir

if TYPE_CHECKING:
    from ..engine.benchmarks import BenchmarkTable
    from ..engine.results import Results
    from ..io.data import RawTable
    from ..rulebook.plan import Plan

    View = Callable[[Plan, Results, RawTable], Any]


Timed = tuple[Any, Timing]  # a task's value and its timing inside it (partition.task)


def _pass_task(part: Any, plan: Plan, tables: dict[str, BenchmarkTable], options: dict[str, Any]) -> Timed:
    """One partition (an Arrow table with ``__row``, in input order) through ``partition.task``."""
    warm_up()  # the worker's imports: once per process, not the partition's work
    started = time.perf_counter(), time.thread_time()
    rows = part.column(ROW).to_numpy()
    return task(plan, part, rows, tables, started=started, **options)


def _split(table: Any, start: int, k: int) -> tuple[Any, ...]:
    """An input piece (Arrow) numbered from ``start`` and cut into its ``k`` firm buckets, each in
    input order."""
    import pyarrow as pa

    n = table.num_rows
    table = table.append_column(ROW, pa.array(np.arange(start, start + n, dtype=np.int64)))
    ids = table.column("firm_id") if "firm_id" in table.column_names else np.full(n, "", dtype=object)
    b = buckets(ids, k)
    order = np.argsort(b, kind="stable")
    ends = np.cumsum(np.bincount(b, minlength=k))
    starts = np.r_[0, ends[:-1]]
    return tuple(table.take(pa.array(order[s:e])) for s, e in zip(starts.tolist(), ends.tolist(), strict=True))


def _split_file(path: str, schema: Any, start: int, k: int) -> tuple[Any, ...]:
    """A local Parquet file read by the worker (only the columns of ``schema``, cast to it as the
    chunked runner reads them), numbered and cut into buckets."""
    import pyarrow.parquet as pq

    from .chunked import _conform

    pf = pq.ParquetFile(path, memory_map=True)
    try:
        have = [c for c in schema.names if c in pf.schema_arrow.names]
        table = pf.read(columns=have)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    if not have:
        import pyarrow as pa

        table = pa.table({c: pa.nulls(pf.metadata.num_rows, schema.field(c).type) for c in schema.names})
    return _split(_conform(table, schema, Path(path)), start, k)


def _split_frame(pdf: Any, keep: set[str] | None, start: int, k: int) -> tuple[Any, ...]:
    """A pandas partition of a dask DataFrame turned into Arrow (once), numbered, cut into buckets."""
    import pyarrow as pa

    cols = [c for c in pdf.columns if keep is None or c in keep]
    return _split(pa.Table.from_pandas(pdf, columns=cols, preserve_index=False), start, k)


def _gather(*pieces: Any) -> Any:
    """A partition: the pieces of one bucket from every input piece, in input order."""
    import pyarrow as pa

    got = [p for p in pieces if p.num_rows] or list(pieces[:1])
    return got[0] if len(got) == 1 else pa.concat_tables(got, promote_options="permissive")


class Partitions:
    """A dataset shuffled into firm-complete partitions (Arrow tables), persisted on the cluster:
    every pass, and every plan rated on it (``diff``, ``compare``), reads these partitions.

    ``data``: local Parquet (a file, a directory, a glob, or a list of files: read by the workers
    with pyarrow) or a dask DataFrame; ``columns``: only these (and the firm id) are kept
    (default: all)."""

    def __init__(
        self, data: Any, npartitions: int | None = None, client: Any = None, columns: Iterable[str] | None = None
    ):
        import dask

        keep = set(columns) | {"firm_id"} if columns is not None else None
        self.client = client
        if isinstance(data, str | Path | list | tuple):
            from .chunked import Dataset

            ds = Dataset(data, None, keep=keep)
            files = ds.files
            self.names: list[str] = ds.names
            self.n = ds.n
            k = npartitions or max(len(files), 1)
            offsets = np.r_[0, np.cumsum(ds.rows_per_file)].tolist()
            maps = [
                dask.delayed(_split_file, nout=k, pure=True)(str(f), ds.schema, int(offsets[i]), k)
                for i, f in enumerate(files)
            ]
        else:
            self.names = [str(c) for c in data.columns]
            lengths = data.map_partitions(len).compute()
            pieces = data.to_delayed()
            if len(pieces) != len(lengths):
                raise RuleEngineError(f"internal: dask counted {len(lengths)} partitions and gave {len(pieces)}")
            offsets = np.r_[0, np.cumsum(np.asarray(lengths, dtype=np.int64))].tolist()
            self.n = int(offsets[-1])
            k = npartitions or max(data.npartitions, 1)
            maps = [
                dask.delayed(_split_frame, nout=k, pure=True)(p, keep, int(offsets[i]), k) for i, p in enumerate(pieces)
            ]
        # a task shuffle: every piece of it is a task the scheduler can recompute when a worker is lost
        parts = [dask.delayed(_gather, pure=True)(*[m[j] for m in maps]) for j in range(k)]
        self.parts = list(client.persist(parts)) if client is not None else list(dask.persist(*parts))

    def compute(self, tasks: list[Any]) -> list[Any]:
        import dask

        if self.client is not None:
            return list(self.client.gather(self.client.compute(tasks)))
        return list(dask.compute(*tasks))


def _input_schema(parts: Partitions) -> Any:
    """The Arrow schema of the partitions (of an empty input: its columns' types)."""
    import dask

    return parts.compute([dask.delayed(lambda t: t.schema)(parts.parts[0])])[0]


def _types(parts: Partitions, plan: Plan) -> dict[str, Any]:
    return {f.name: f.type for f in _input_schema(parts) if f.name in columns_read(plan)}


def _shared(value: Any, what: str) -> Any:
    """``value`` as one graph literal every task depends on: shipped to a worker once and kept
    there (not pickled into every task)."""
    import uuid

    import dask

    return dask.delayed(value, name=f"ruleengine-{what}-{uuid.uuid4().hex}", traverse=False)


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
    results written there instead: one file (the client holding one partition's results at a
    time) or, for a directory, one ``part-NNNNN.parquet`` per partition written by the workers."""
    import dask
    import pyarrow as pa

    from ..pipeline import require_rulebook

    require_rulebook(plan)
    shipped = _shared(plan, "plan")
    tables: dict[str, BenchmarkTable] = {}
    passes = dict(final=False, source=source, names=parts.names)
    for stage in range(benchmark_passes(plan)):
        given = _shared(dict(tables), "tables")
        tasks = [dask.delayed(_pass_task, pure=True)(p, shipped, given, passes) for p in parts.parts]
        got = parts.compute(tasks)
        tables.update(tables_of(plan, [g[0] for g in got]))
        _clock(clock, f"benchmarks {stage + 1}", got)
        if on_pass:
            on_pass(f"benchmarks {stage + 1}")
    given = _shared(dict(tables), "tables")
    out_dir = str(output) if output is not None and is_parts_dir(output) else None
    final: dict[str, Any] = dict(final=True, source=source, names=parts.names, view=view, extra=tuple(extra))
    tasks = [
        dask.delayed(_pass_task, pure=True)(p, shipped, given, {**final, "out_dir": out_dir, "part": j})
        for j, p in enumerate(parts.parts)
    ]
    if out_dir is not None:
        got = parts.compute(tasks)
        _clock(clock, "final", got)
        check_written(
            [g[0] for g in got if g[1][0]],
            parts.n,
            out_dir,
            lambda: empty_results(plan, _types(parts, plan), tables, parts.names, source),
        )
        if on_pass:
            on_pass("final")
        return None
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
        for _, timing in got:
            clock.timed(name, timing)


def rate(
    plan: Plan,
    data: Any,
    output: str | Path | None = None,
    *,
    npartitions: int | None = None,
    client: Any = None,
    source: str = "<dask>",
    on_pass: Callable[[str], None] | None = None,
    clock: TaskClock | None = None,
) -> Any:
    """Rate ``data`` with ``plan`` and write the results to ``output``: one file (input order,
    canonical row groups: the bytes of the in-memory run) or, for a directory
    (``sink.is_parts_dir``), one ``part-NNNNN.parquet`` per partition written by the workers.
    Returns the number of rows.

    ``data``: local Parquet (a path, directory or glob, or a list of files), read by the workers
    with pyarrow; or a dask DataFrame. ``npartitions``: firm-complete partitions (default: as many
    as the input's files or partitions); ``client``: a ``distributed.Client`` (default: dask's
    local scheduler); ``on_pass(name)``: called after each pass (the tests kill a worker there);
    ``clock``: filled with the time spent inside the tasks. Without ``output``: a pyarrow Table of
    the result columns in input order (gathered on the client), not the row count."""
    from ..pipeline import require_rulebook

    require_rulebook(plan)
    if output is not None:
        check_output(output)  # the format, checked first
    if isinstance(data, str | Path):
        source = str(data)
    parts = Partitions(data, npartitions, client, columns_read(plan))  # the unread columns stay behind
    ratings = run(plan, parts, source=source, on_pass=on_pass, clock=clock, output=output)
    return parts.n if output is not None else ratings
