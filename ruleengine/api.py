"""The Python API behind ``ruleengine.load / validate / rate / explain``: the pipeline in a few lines."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Diagnostic, RulebookError
from .rulebook.compiler import Plan, compile_document
from .rulebook.source import load_document, parse_text

if TYPE_CHECKING:  # numpy and pyarrow load only when data is rated
    from .analysis.trace import Trace
    from .engine.evaluator import BenchmarkTable
    from .engine.results import Results
    from .io.data import Batch

# Compiled plans by rulebook path, with the (mtime, size) of every file they were built from
# (the rulebook and the libraries it imports): editing any of them recompiles.
_CACHE: dict[str, tuple[tuple[tuple[str, float, int], ...], Plan]] = {}


def _stamp(files: list[Path]) -> tuple[tuple[str, float, int], ...]:
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            return ()
        out.append((str(f), st.st_mtime, st.st_size))
    return tuple(out)


def load(book: str | Path | Plan) -> Plan:
    """Load, validate and compile a rulebook: a bundled name (``huzhou``) or a path to a .yaml file.

    Raises :class:`RulebookError` listing every problem with file:line:column.
    """
    if isinstance(book, Plan):
        return book
    from .rulebook.source import resolve

    path = resolve(book)
    key = str(path.resolve())
    cached = _CACHE.get(key)
    if cached is not None and cached[0] and _stamp([Path(f) for f, _, _ in cached[0]]) == cached[0]:
        doc_ = cached[1].document
        if doc_ is None or not any(Path(a).exists() for a in doc_.absent):
            return cached[1]
    from .rulebook import _plancache
    from .rulebook.source import display_name

    shown = display_name(path)
    stored = _plancache.get(path, shown)
    if stored is not None:
        _CACHE[key] = (_stamp([Path(f) for f in stored.document.digests] if stored.document else []), stored)
        return stored
    doc = load_document(path)
    plan = compile_document(doc)
    _CACHE[key] = (_stamp(doc.files), plan)
    _plancache.put(path, shown, plan, doc.digests, doc.absent)
    return plan


def compile_text(text: str, file: str = "<string>") -> Plan:
    """Compile rulebook YAML given as text (for tools and tests)."""
    from pathlib import Path as _P

    from .rulebook.source import resolve_imports

    doc = parse_text(text, file)
    resolve_imports(doc, _P(file).parent if file != "<string>" else _P.cwd())
    return compile_document(doc)


def validate(book: str | Path) -> list[Diagnostic]:
    """Check a rulebook; returns its warnings, raises :class:`RulebookError` on errors."""
    return load(book).warnings


def _version() -> str:
    from . import __version__

    return __version__


def prepare(plan: Plan, data: Any) -> Batch:
    from .io import data as _data

    text_cols = [n for n, s in plan.inputs.items() if s.type in ("string", "category")]
    raw = _data.read_any(data, text_cols, only=list(plan.inputs))
    if isinstance(data, _data.RawTable):
        raw = _data.RawTable(dict(raw.columns), raw.n, raw.source, list(raw.issues), list(raw.names))
    batch = _data.prepare(raw, plan.inputs, plan.id)
    del raw
    import sys

    if "pyarrow" in sys.modules:  # hand the read buffers back to the OS before evaluation grows
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    return batch


def rate(
    book: str | Path | Plan,
    data: Any,
    *,
    benchmarks: Mapping[str, BenchmarkTable] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Results:
    """Rate every firm-year in ``data`` (path, list of dicts, dict of columns or DataFrame).

    ``benchmarks``: population tables from an earlier run (``results.tables``) to hold benchmarks
    fixed, e.g. when rating one firm against its city. ``overrides``: fixed values for named
    variables or benchmarks (used by author tests).
    """
    plan = load(book)
    if plan.is_library:
        from .errors import RuleEngineError

        raise RuleEngineError(
            f"{plan.file} is a library (imported by rulebooks), not a rulebook: it has no rating to compute"
        )
    from .engine.evaluator import evaluate
    from .engine.results import build

    batch = prepare(plan, data)
    ev = evaluate(plan, batch, benchmarks, overrides)
    return build(plan, batch, ev, _version())


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


__all__ = ["RulebookError", "compile_text", "explain", "load", "rate", "validate"]
