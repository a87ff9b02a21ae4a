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
    benchmarks: Mapping[str, BenchmarkTable] | str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    mapping: Any = None,
    read_options: Any = None,
    any_jurisdiction: bool = False,
) -> Results:
    """Rate every firm-year in ``data`` (path, list of dicts, dict of columns or DataFrame).

    ``benchmarks``: population tables from an earlier run to hold benchmarks fixed, e.g. when
    rating one firm against its city: ``results.tables``, or the path of a file written by
    :func:`export_benchmarks` (checked against the rulebook's hash). ``overrides``: fixed values
    for named variables or benchmarks (used by author tests). ``progress(phase, done, total)``:
    called as the pipeline's phases go by. ``mapping``: a column mapping file (path or dict) for a
    provider's headers and units; ``read_options``: a ``ReadOptions`` or dict (encoding,
    delimiter, thousands, sheet, missing, id_check); see docs/data-contract.md.
    ``any_jurisdiction``: also rate firms outside the rulebook's jurisdiction (and count them in
    its peer groups), recorded per row in the ``jurisdiction`` and ``fallbacks`` columns.
    """
    from . import pipeline

    plan = load(book)
    tables, file = _given_tables(benchmarks, plan)
    results = pipeline.rate(
        plan,
        data,
        benchmarks=tables,
        overrides=overrides,
        progress=progress,
        mapping=mapping,
        read_options=read_options,
        any_jurisdiction=any_jurisdiction,
    )
    if file is not None:
        _note_missing_years(results, tables or {}, file)
    return results


def _given_tables(
    benchmarks: Mapping[str, BenchmarkTable] | str | Path | None, plan: Plan
) -> tuple[Mapping[str, BenchmarkTable] | None, str | None]:
    """The ``benchmarks`` argument of :func:`rate` / :func:`explain` as tables, and the file they
    were read from (None when they were given as tables, or not given)."""
    if isinstance(benchmarks, str | Path):
        return load_benchmarks(benchmarks, plan), str(benchmarks)
    return benchmarks, None


def load_benchmarks(path: str | Path, book: str | Path | Plan) -> dict[str, BenchmarkTable]:
    """The benchmark tables of a file written by :func:`export_benchmarks` (``rate
    --export-benchmarks``); an error if they were made with another rulebook (hash) or are not
    such a file."""
    import json

    from .engine.benchmarks import tables_from_document
    from .errors import DataError

    plan = load(book)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"benchmark file not found: {path}")
    try:
        doc = json.loads(p.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"{path}: not a ruleengine benchmark file (not JSON: {exc})") from None
    return tables_from_document(doc, plan, str(path))


def export_benchmarks(results: Results, path: str | Path) -> None:
    """Write the benchmark tables ``results`` used (``rate --export-benchmarks``): JSON with the
    rulebook's id, version and hash, the data years, each peer group's exact value and peer
    count, and the jurisdiction the peers were drawn from. Same run, same bytes."""
    import json

    from . import __version__
    from .engine.benchmarks import tables_document
    from .errors import DataError

    plan = results.plan
    jur = results.batch.jurisdiction if results.batch is not None else None
    jurisdiction = None
    if plan.divisions:
        jurisdiction = {
            "name": plan.jurisdiction,
            "divisions": list(plan.divisions),
            "any_jurisdiction": bool(jur is not None and jur.any_jurisdiction),
        }
    doc = tables_document(
        plan,
        dict(results.tables),
        source=results.batch.source if results.batch is not None else "",
        engine_version=__version__,
        jurisdiction=jurisdiction,
    )
    text = json.dumps(doc, ensure_ascii=False, indent=1, allow_nan=False) + "\n"
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from None


def _note_missing_years(results: Results, tables: Mapping[str, BenchmarkTable], file: str) -> None:
    """A data warning for the years the given tables do not hold (those firm-years fall back)."""
    import numpy as np

    from .io.data import DataIssue

    have = {
        y for t in tables.values() for lv, e in zip(t.levels, t.entries, strict=False) if lv != "fallback" for y, _ in e
    }
    years = sorted({int(y) for y in np.unique(results["year"]).tolist() if y >= 0} - have)
    if years and tables:
        results.issues.append(
            DataIssue(
                file,
                None,
                "year",
                f"the benchmark tables hold no peer group for {', '.join(map(str, years))}: those firm-years use "
                "the rulebook's fallback (see the fallbacks and provisional columns)",
                fatal=False,
            )
        )


def explain(
    book: str | Path | Plan,
    data: Any,
    firm_id: str,
    year: int | None = None,
    results: Results | None = None,
    *,
    benchmarks: Mapping[str, BenchmarkTable] | str | Path | None = None,
    any_jurisdiction: bool = False,
) -> Trace:
    """The audit trail of one firm-year: every value that led to its rating, traced to inputs.
    ``benchmarks``, ``any_jurisdiction``: as for :func:`rate`."""
    plan = load(book)
    if results is None:
        from .pipeline import rate_with_context

        tables, file = _given_tables(benchmarks, plan)
        results = rate_with_context(plan, data, benchmarks=tables, any_jurisdiction=any_jurisdiction, firm=str(firm_id))
        if file is not None:
            _note_missing_years(results, tables or {}, file)
    from .analysis.trace import explain_firm

    return explain_firm(plan, results, firm_id, year)


__all__ = [
    "Plan",
    "RulebookError",
    "compile_text",
    "explain",
    "export_benchmarks",
    "load",
    "load_benchmarks",
    "rate",
    "validate",
]
