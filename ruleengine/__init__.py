"""ruleengine: carbon-rating methodologies as versioned, declarative, auditable YAML rulebooks.

The pipeline, one module per stage::

    load (source) → validate (schema) → compile (compiler) → evaluate (evaluator) → explain

Typical use::

    import ruleengine
    plan = ruleengine.load("huzhou")                  # bundled name or a path to a .yaml
    results = ruleengine.rate(plan, "firms.csv")      # or a list of dicts / a DataFrame
    results.write("ratings.parquet")
    trace = ruleengine.trace(plan, "firms.csv", firm_id="91330500MA2B", year=2023)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    DataError,
    Diagnostic,
    RulebookError,
    RulebookNotFound,
    RuleEngineError,
    SourceLocation,
)

__version__ = "0.1.0"

# Heavy modules (numpy, pyarrow, networkx) load on first use, so that `ruleengine validate`
# starts fast; `from ruleengine import rate` works as usual.
_LAZY = {
    "compile_text": ".api",
    "explain": ".api",
    "export_benchmarks": ".api",
    "load": ".api",
    "load_benchmarks": ".api",
    "rate": ".api",
    "validate": ".api",
    "Plan": ".rulebook.compiler",
    "DataIssue": ".io.data",
    "BenchmarkTable": ".engine.benchmarks",
    "Trace": ".analysis.trace",
    "Results": ".engine.results",
}

if TYPE_CHECKING:
    from .analysis.trace import Trace
    from .api import compile_text, explain, export_benchmarks, load, load_benchmarks, rate, validate
    from .engine.benchmarks import BenchmarkTable
    from .engine.results import Results
    from .io.data import DataIssue
    from .rulebook.compiler import Plan


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ruleengine' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BenchmarkTable",
    "DataError",
    "DataIssue",
    "Diagnostic",
    "Plan",
    "Results",
    "RuleEngineError",
    "RulebookError",
    "RulebookNotFound",
    "SourceLocation",
    "Trace",
    "__version__",
    "compile_text",
    "explain",
    "export_benchmarks",
    "load",
    "load_benchmarks",
    "rate",
    "validate",
]
