"""``--engine local|chunked|spark|dask``: the runners behind one interface.

``rate_on``      ``ruleengine rate BOOK DATA --engine chunked|spark|dask -o OUT``: results written
                 (the same bytes as the in-memory run).
``Engine``       for the analyses that rate one dataset with several plans (``diff --data``,
                 ``compare``): ``with engine.session(data) as s: s.view(plan, view, extra)`` gives a
                 pyarrow Table of a few columns of every firm-year, in input order. The Spark
                 session / Dask client and the firm-complete partitions are made once per session
                 and shared by every plan rated in it.

DATA: local Parquet (a file, a directory, a glob); for Spark also a URL Spark reads itself
(``s3a://bucket/prefix``, ``hdfs://…``, ``file:///…``): nothing is opened on the driver.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import DataError, RuleEngineError
from .partition import TaskClock, is_url, result_table
from .sink import check_output, is_parts_dir, parts_of

if TYPE_CHECKING:
    from ..rulebook.plan import Plan

ENGINES = ("local", "chunked", "spark", "dask")
DEFAULT_CHUNK_ROWS = 500_000
# How long --scheduler may take to answer: a scheduler that is up answers in well under a second;
# dask's own default (30 s of retries) leaves a mistyped address looking like a hang.
SCHEDULER_TIMEOUT_S = 10


def _spark() -> Any:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise RuleEngineError("--engine spark needs pyspark and Java: pip install 'ruleengine[spark]'") from None
    from . import spark as rspark

    return rspark


def _dask() -> Any:
    try:
        import dask.dataframe  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise RuleEngineError("--engine dask needs dask: pip install 'ruleengine[dask]'") from None
    from . import dask as rdask

    return rdask


def _dask_frame(data: str) -> Any:
    """What ``scale.dask`` rates: local Parquet as its files in path order (the local runner's row
    order; the workers read them with pyarrow), an fsspec URL (``s3://…``, ``file://…``) as a dask
    DataFrame, one partition per file in path order (listed with fsspec)."""
    import dask.dataframe as dd

    if is_url(data):
        import fsspec  # type: ignore[import-untyped]

        fs, path = fsspec.core.url_to_fs(data)
        if fs.isdir(path):
            found = sorted((p for p in fs.find(path) if p.endswith(".parquet")), key=lambda p: tuple(p.split("/")))
        else:
            found = [path]
        if not found:
            raise DataError(f"{data}: no .parquet files there")
        return dd.read_parquet([fs.unstrip_protocol(p) for p in found])
    from .chunked import dataset_files

    return dataset_files(data)


@contextlib.contextmanager
def scheduler_client(address: str) -> Iterator[Any]:
    """A ``distributed.Client`` on the Dask scheduler at ``address`` (``--scheduler``), closed on
    exit. A malformed address, or a scheduler that does not answer within SCHEDULER_TIMEOUT_S
    seconds, is a :class:`RuleEngineError` naming it (dask raises ValueError / OSError)."""
    from distributed import Client

    try:
        client = Client(address, timeout=SCHEDULER_TIMEOUT_S)
    except ValueError as exc:
        raise RuleEngineError(f"--scheduler {address}: not a Dask scheduler address ({exc})") from None
    except OSError:  # refused, unknown host, no answer: dask retries until the timeout, then says so
        raise RuleEngineError(
            f"cannot connect to the Dask scheduler at {address} (--scheduler): no answer within "
            f"{SCHEDULER_TIMEOUT_S:g} s; is it running, and is the address tcp://HOST:PORT?"
        ) from None
    with client:
        yield client


@dataclass
class Engine:
    """Where and how to rate a Parquet dataset: ``name`` (local, chunked, spark, dask), the Spark
    ``master`` or Dask ``scheduler``, the number of firm-complete ``partitions`` (Spark/Dask;
    default: as the input) and ``chunk_rows`` (chunked)."""

    name: str = "local"
    master: str | None = None
    scheduler: str | None = None
    partitions: int | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise DataError(f"unknown engine {self.name!r} (use {', '.join(ENGINES)})")

    @property
    def local(self) -> bool:
        return self.name == "local"

    def check_data(self, data: str) -> None:
        """A clear error for data this engine cannot read, before anything starts."""
        if is_url(data):
            if self.name not in ("spark", "dask"):
                raise DataError(f"{data}: a URL is read by --engine spark (or dask with fsspec), not {self.name}")
            return
        from .chunked import dataset_files

        dataset_files(data)

    @contextlib.contextmanager
    def session(self, data: str, extra: Sequence[str] = ()) -> Iterator[Session]:
        """A session rating ``data`` with one plan after another (see :class:`Session`)."""
        if self.local:
            raise RuleEngineError("internal: the local engine rates in memory (pipeline.rate)")
        self.check_data(data)
        if self.name == "chunked":
            yield Session(self, data, extra, None)
        elif self.name == "spark":
            rspark = _spark()
            spark = rspark.session(self.master or "local[*]")
            parts, _ = rspark.firm_partitions(rspark.read(spark, data), self.partitions)
            try:
                yield Session(self, data, extra, parts)
            finally:
                parts.unpersist()
        else:
            rdask = _dask()
            ddf = _dask_frame(data)
            if self.scheduler:
                with scheduler_client(self.scheduler) as client:
                    yield Session(self, data, extra, rdask.Partitions(ddf, self.partitions, client))
            else:
                yield Session(self, data, extra, rdask.Partitions(ddf, self.partitions))


class Session:
    """One dataset on one engine; :meth:`view` rates it with a plan."""

    def __init__(self, engine: Engine, data: str, extra: Sequence[str], parts: Any):
        self.engine, self.data, self.extra, self.parts = engine, data, tuple(extra), parts
        self.clock = TaskClock()

    def view(self, plan: Plan, view: Callable[..., Any] = result_table) -> Any:
        """``view(plan, results, raw)`` of every partition, as one pyarrow Table in input order."""
        name = self.engine.name
        if name == "chunked":
            from .chunked import view_dataset

            return view_dataset(plan, self.data, self.engine.chunk_rows, view, extra=self.extra, clock=self.clock)
        if name == "spark":
            return _spark().run(plan, self.parts, source=self.data, view=view, extra=self.extra, clock=self.clock)
        return _dask().run(plan, self.parts, source=self.data, view=view, extra=self.extra, clock=self.clock)


def rate_on(
    engine: str,
    plan: Plan,
    data: str,
    output: str | None,
    *,
    master: str | None = None,
    scheduler: str | None = None,
    partitions: int | None = None,
    chunk_rows: int | None = None,
) -> str:
    """Rate the Parquet dataset ``data`` on ``engine`` (spark, dask; chunked is
    ``chunked.rate_command``); returns the line to print."""
    if not output:
        raise DataError(
            f"--engine {engine} writes its results to files: give -o OUT.parquet, -o OUT.csv or -o DIR/ "
            "(one Parquet file per partition)"
        )
    check_output(output)
    eng = Engine(engine, master, scheduler, partitions, chunk_rows or DEFAULT_CHUNK_ROWS)
    eng.check_data(data)
    t0 = time.perf_counter()
    if engine == "dask":
        rdask = _dask()
        ddf = _dask_frame(data)
        if scheduler:
            with scheduler_client(scheduler) as client:
                n = rdask.rate(plan, ddf, output, npartitions=partitions, client=client, source=data)
        else:
            n = rdask.rate(plan, ddf, output, npartitions=partitions, source=data)
    elif engine == "spark":
        rspark = _spark()
        spark = rspark.session(master or "local[*]")
        n = rspark.rate(plan, rspark.read(spark, data), output, npartitions=partitions, source=data)
    else:
        raise DataError(f"unknown engine {engine!r} (use spark or dask)")
    wrote = output
    if is_parts_dir(output):
        wrote = f"{output} ({len(parts_of(output)):,} part files, one per partition)"
    return f"{n:,} firm-years from {data} rated on {engine} in {time.perf_counter() - t0:.1f} s; wrote {wrote}"
