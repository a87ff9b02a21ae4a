"""The Python API behind ``ruleengine.load / validate / rate / explain``: the pipeline in a few lines."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RulebookError
from .rulebook.loader import compile_text, load, validate
from .rulebook.plan import Plan

if TYPE_CHECKING:  # numpy and pyarrow load only when data is rated
    from .analysis.trace import Trace
    from .engine.benchmarks import BenchmarkTable
    from .engine.results import Results
    from .pipeline import Progress


def rate(
    book: str | Path | Plan,
    data: Any,
    *,
    benchmarks: Mapping[str, BenchmarkTable] | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    mapping: Any = None,
    read_options: Any = None,
) -> Results:
    """Rate every firm-year in ``data`` (path, list of dicts, dict of columns or DataFrame).

    ``benchmarks``: population tables from an earlier run (``results.tables``) to hold benchmarks
    fixed, e.g. when rating one firm against its city. ``overrides``: fixed values for named
    variables or benchmarks (used by author tests). ``progress(phase, done, total)``: called as
    the pipeline's phases go by. ``mapping``: a column mapping file (path or dict) for a
    provider's headers and units; ``read_options``: a ``ReadOptions`` or dict (encoding,
    delimiter, thousands, sheet, missing, id_check); see docs/data-contract.md.
    """
    from . import pipeline

    return pipeline.rate(
        load(book),
        data,
        benchmarks=benchmarks,
        overrides=overrides,
        progress=progress,
        mapping=mapping,
        read_options=read_options,
    )


def explain(
    book: str | Path | Plan, data: Any, firm_id: str, year: int | None = None, results: Results | None = None
) -> Trace:
    """The audit trail of one firm-year: every value that led to its rating, traced to inputs."""
    plan = load(book)
    if results is None:
        from .pipeline import rate_with_context

        results = rate_with_context(plan, data)
    from .analysis.trace import explain_firm

    return explain_firm(plan, results, firm_id, year)


__all__ = ["Plan", "RulebookError", "compile_text", "explain", "load", "rate", "validate"]
