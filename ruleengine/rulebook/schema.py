"""Validate stage, part 1: the rulebook's shape against ``rulebooks/schema.json`` (Draft 2020-12).

Errors are mapped back to file:line:column through the document's marks and reworded where
jsonschema's own text would not tell an author what to do (unknown keys get "did you mean").
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from ..errors import Diagnostic, did_you_mean
from .source import Document, PathT, bundled_dir

# What an author must choose between, where the schema says "oneOf".
_ONE_OF_HINTS = {
    "inputs": "an input declares exactly one of 'required: true', 'default: <value>' or "
    "'optional: true' (missing is meaningful)",
    "parameters": "a parameter has exactly one of 'value', 'table' or 'values' (effective-dated)",
    "variables": "a variable has exactly one of 'expr' or 'weights'",
    "scales": "a scale has exactly one of 'piecewise' or 'steps'",
    "ratings": "a rating has either 'bands' (with 'closed' and 'better') or 'levels' (with 'better')",
    "tests": "a test has exactly one of 'input' (one firm-year) or 'rows' (several)",
}


def schema_path() -> str:
    return str(bundled_dir() / "schema.json")


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    with open(schema_path(), encoding="utf-8") as fh:
        schema = json.load(fh)
    cls = jsonschema.validators.validator_for(schema)
    # The shipped schema is checked against its metaschema by the test suite
    # (tests/test_compile_errors.py), not here: that check is 70 ms of every cold start.
    return cls(schema)


def _describe(error: Any, doc: Document) -> list[Diagnostic]:
    path: PathT = tuple(error.absolute_path)
    validator = error.validator
    if validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        known = set(allowed)
        extra = [k for k in error.instance if k not in known]
        return [
            Diagnostic(f"unknown key '{k}'{did_you_mean(k, allowed)}", doc.loc((*path, k), key=True)) for k in extra
        ]
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return [Diagnostic(f"missing required key '{missing}'", doc.loc(path))]
    if validator == "oneOf" or validator == "allOf" or validator == "if":
        section = str(path[0]) if path else ""
        hint = _ONE_OF_HINTS.get(section)
        if hint and len(path) == 2:
            return [Diagnostic(hint, doc.loc(path))]
        if error.context:
            import jsonschema

            best = jsonschema.exceptions.best_match(error.context)
            return _describe(best, doc)
    if validator == "enum":
        options = ", ".join(repr(v) for v in error.validator_value)
        return [Diagnostic(_short(f"{error.instance!r} is not one of {options}"), doc.loc(path))]
    if validator == "pattern" and path and path[0] == "version":
        return [
            Diagnostic(
                f"version {error.instance!r} is not a semantic version like 1.0.0 "
                "(quote it if YAML read it as a number)",
                doc.loc(path),
            )
        ]
    if validator == "type" and path and path[0] == "version":
        return [
            Diagnostic(
                f'version must be a string like "1.0.0"; YAML read {error.instance!r} as a number (quote it)',
                doc.loc(path),
            )
        ]
    if validator == "type" and len(path) >= 4 and path[0] == "tests" and path[2] in ("input", "rows"):
        kind = "a list" if isinstance(error.instance, list) else "a mapping"
        return [Diagnostic(f"a test input cell holds one number, text, true/false or null, not {kind}", doc.loc(path))]
    if validator == "propertyNames":
        return [Diagnostic(_short(f"name {error.instance!r} is not allowed here: {error.message}"), doc.loc(path))]
    return [Diagnostic(_short(error.message), doc.loc(path))]


def _short(message: str, limit: int = 200) -> str:
    """A schema message quotes the offending value: never more than ``limit`` characters of it."""
    return message if len(message) <= limit else message[: limit - 1] + "… (value cut)"


def validate_shape(doc: Document) -> list[Diagnostic]:
    """Every schema violation in ``doc`` as located diagnostics (empty when the shape is right),
    and the bounds the schema cannot express (``limits.check_document``: formulas nested past
    what the parser survives, parameter values that are not finite constants)."""
    from .limits import check_document

    out: list[Diagnostic] = []
    seen: set[tuple[str, int, int]] = set()
    for diag in check_document(doc):
        loc = diag.location
        seen.add((diag.message, loc.line if loc else 0, loc.column if loc else 0))
        out.append(diag)
    for error in _validator().iter_errors(doc.data):
        for diag in _describe(error, doc):
            loc = diag.location
            key = (diag.message, loc.line if loc else 0, loc.column if loc else 0)
            if key not in seen:
                seen.add(key)
                out.append(diag)
    return out
