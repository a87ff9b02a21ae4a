"""Rating on Dask from Python (``pip install 'ruleengine[dask]'``; issue #18)::

    import ruleengine.dask
    from distributed import Client
    client = Client("tcp://scheduler:8786")
    table = ruleengine.dask.rate("huzhou", ddf, client=client)              # a pyarrow Table
    ruleengine.dask.rate("huzhou", "firm-years/", "out/", client=client)    # or written

The same plan and the same phases as one machine (``ruleengine.scale.dask``; docs/scale.md);
the rows are the local run's, bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from .rulebook.plan import Plan


@overload
def rate(
    book: str | Path | Plan, data: Any, output: None = None, *, npartitions: int | None = None, client: Any = None
) -> Any: ...
@overload
def rate(
    book: str | Path | Plan, data: Any, output: str | Path, *, npartitions: int | None = None, client: Any = None
) -> int: ...


def rate(
    book: str | Path | Plan,
    data: Any,
    output: str | Path | None = None,
    *,
    npartitions: int | None = None,
    client: Any = None,
) -> Any:
    """Rate ``data`` with ``book`` (a :class:`~ruleengine.Plan`, a bundled rulebook's name or a
    rulebook file) on Dask.

    ``data``: a dask DataFrame (rows numbered in its partitions' order), or local Parquet (a path,
    a directory, a glob or a list of files: read by the workers). ``client``: a
    ``distributed.Client`` (default: dask's local scheduler). Without ``output``: a pyarrow Table
    of the result columns in input order (the local run's ``Results.to_arrow()``, gathered on the
    client). With ``output``: the results written there, as ``ruleengine rate … --engine dask -o
    OUTPUT`` writes them (one file in input order, the local run's bytes; or ``DIR/``: one part
    file per partition, written by the workers); returns the row count. ``npartitions``:
    firm-complete partitions (default: as many as the input's files or partitions)."""
    from .api import load
    from .scale import dask as engine

    plan = load(book)
    if not isinstance(data, str | Path | list | tuple) and not hasattr(data, "to_delayed"):
        raise TypeError(f"data: a dask DataFrame or local Parquet (a path, a glob, files), not {type(data).__name__}")
    return engine.rate(plan, data, output, npartitions=npartitions, client=client)
