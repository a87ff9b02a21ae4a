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
) -> Results:
    """Rate every firm-year in ``data`` (path, list of dicts, dict of columns or DataFrame).

    ``benchmarks``: population tables from an earlier run (``results.tables``) to hold benchmarks
    fixed, e.g. when rating one firm against its city. ``overrides``: fixed values for named
    variables or benchmarks (used by author tests). ``progress(phase, done, total)``: called as
    the pipeline's phases go by.
    """
    from . import pipeline

    return pipeline.rate(load(book), data, benchmarks=benchmarks, overrides=overrides, progress=progress)


def explain(
    book: str | Path | Plan, data: Any, firm_id: str, year: int | None = None, results: Results | None = None
) -> Trace:
    """The audit trail of one firm-year: every value that led to its rating, traced to inputs."""
    plan = load(book)
    if results is None:
        results = rate(plan, data)
    hits = results.find(firm_id, year)
    if not hits:
        import difflib

        from .errors import RuleEngineError

        ids = sorted(set(results["firm_id"].tolist()))
        wanted = str(firm_id)
        shown = wanted if len(wanted) <= 60 else wanted[:60] + "…"
        when = f" in {year}" if year is not None else ""
        if year is not None and wanted in ids:
            years = sorted({int(results["year"][i]) for i in results.find(wanted)})
            raise RuleEngineError(f"no firm '{shown}'{when} in the data; it has the years {', '.join(map(str, years))}")
        near = [i for i in ids if i.lower() == wanted.lower()]
        near += [i for i in difflib.get_close_matches(wanted, ids, n=5, cutoff=0.5) if i not in near]
        hint = f"; near matches: {', '.join(near[:5])}" if near else f" ({len(ids)} firms in the data)"
        raise RuleEngineError(f"no firm '{shown}'{when} in the data{hint}")
    if len(hits) > 1 and year is None:
        years = sorted({int(results["year"][i]) for i in hits})
        hits = [h for h in hits if int(results["year"][h]) == years[-1]]
    from .analysis.trace import trace_row

    return trace_row(plan, results, hits[0])


__all__ = ["Plan", "RulebookError", "compile_text", "explain", "load", "rate", "validate"]
