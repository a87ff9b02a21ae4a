"""ruleengine: carbon-rating methodologies as versioned, declarative, auditable YAML rulebooks.

The pipeline, one module per stage::

    load (source) → validate (schema) → compile (compiler) → evaluate (evaluator) → explain

Typical use::

    import ruleengine
    plan = ruleengine.load("huzhou")                  # bundled name or a path to a .yaml
    results = ruleengine.rate(plan, "firms.csv")      # or a list of dicts / a DataFrame
    results.write("ratings.parquet")
    trace = ruleengine.explain(plan, "firms.csv", firm_id="91330500MA2B", year=2023)
"""

from __future__ import annotations

from ._api import compile_text, explain, load, rate, validate
from .compiler import Plan
from .data import DataIssue
from .errors import (
    DataError,
    Diagnostic,
    RulebookError,
    RulebookNotFound,
    RuleEngineError,
    SourceLocation,
)
from .evaluator import BenchmarkTable
from .explain import Trace
from .results import Results

__version__ = "0.1.0"

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
    "load",
    "rate",
    "validate",
]
