"""``ruleengine rate BOOK DATA --engine spark|dask``: the distributed runners behind one call."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import DataError, RuleEngineError
from .chunked import dataset_files
from .sink import ResultSink

if TYPE_CHECKING:
    from ..rulebook.plan import Plan


def rate_on(
    engine: str, plan: Plan, data: str, output: str | None, *, master: str | None = None, scheduler: str | None = None
) -> str:
    """Rate the Parquet dataset ``data`` on ``engine``; returns the line to print."""
    if not output:
        raise DataError(f"--engine {engine} writes its results to a file: give -o OUT.parquet or -o OUT.csv")
    ResultSink(output)
    files = dataset_files(data)
    t0 = time.perf_counter()
    if engine == "dask":
        try:
            import dask.dataframe as dd
            from distributed import Client
        except ImportError:
            raise RuleEngineError("--engine dask needs dask: pip install 'ruleengine[dask]'") from None
        from . import dask as rdask

        ddf = dd.read_parquet([str(f) for f in files])
        if scheduler:
            with Client(scheduler) as client:
                n = rdask.rate(plan, ddf, output, client=client, source=data)
        else:
            n = rdask.rate(plan, ddf, output, source=data)
    elif engine == "spark":
        try:
            import pyspark  # noqa: F401
        except ImportError:
            raise RuleEngineError("--engine spark needs pyspark and Java: pip install 'ruleengine[spark]'") from None
        from . import spark as rspark

        n = rspark.rate_files(plan, files, output, master=master or "local[*]", source=data)
    else:
        raise DataError(f"unknown engine {engine!r} (use spark or dask)")
    return f"{n:,} firm-years from {data} rated on {engine} in {time.perf_counter() - t0:.1f} s; wrote {output}"
