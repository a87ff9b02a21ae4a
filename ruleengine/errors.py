"""The exception hierarchy and source locations.

Every problem the engine reports about a rulebook is a :class:`Diagnostic` that knows where it
is (file, 1-based line and column, YAML path).  Stages collect all diagnostics they can find and
raise one :class:`RulebookError` carrying the list, so an author sees every problem at once::

    rulebooks/x.yaml:12:11: error: unknown name 'emisions' (did you mean 'emissions'?) (at variables.k.expr)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class SourceLocation:
    """Where a node of a rulebook stands: file, 1-based line and column, and its YAML path."""

    file: str
    line: int
    column: int
    path: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a rulebook, with its location; ``severity`` is error or warning."""

    message: str
    location: SourceLocation | None = None
    severity: str = "error"
    related: tuple[SourceLocation, ...] = field(default=())

    def format(self) -> str:
        where = f"{self.location}: " if self.location else ""
        at = f" (at {self.location.path})" if self.location and self.location.path else ""
        text = f"{where}{self.severity}: {self.message}{at}"
        for rel in self.related:
            rel_at = f" (at {rel.path})" if rel.path else ""
            text += f"\n  {rel}: note: see here{rel_at}"
        return text

    def __str__(self) -> str:
        return self.format()


def _sort_key(d: Diagnostic) -> tuple[str, int, int, str]:
    loc = d.location
    return (loc.file, loc.line, loc.column, d.message) if loc else ("", 0, 0, d.message)


class RuleEngineError(Exception):
    """Root of every error the engine raises on purpose (the CLI decides what exit code it means)."""


class RulebookError(RuleEngineError):
    """A rulebook cannot be used: carries every error diagnostic found (and the warnings)."""

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        self.diagnostics = sorted(diagnostics, key=_sort_key)
        errors = [d for d in self.diagnostics if d.severity == "error"]
        super().__init__("\n".join(d.format() for d in errors) or "invalid rulebook")

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


class RulebookNotFound(RuleEngineError):
    """A rulebook name or path that does not exist."""


class DataError(RuleEngineError):
    """A data file that cannot be read at all (missing, unknown format, required column absent)."""


class ExpressionError(RuleEngineError):
    """An expression rejected by the parser or whitelist; ``column`` is 0-based in the text."""

    def __init__(self, message: str, column: int = 0):
        self.column = column
        super().__init__(message)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def raise_if_errors(diagnostics: Sequence[Diagnostic]) -> None:
    if any(d.severity == "error" for d in diagnostics):
        raise RulebookError(diagnostics)
