"""Author tests: the ``tests:`` cases written inside a rulebook, run by ``ruleengine test``.

A case gives one firm-year (``input``) or several (``rows``, e.g. a previous year for a decline
rate; expectations are checked on the last row), optional fixed benchmark values, and expected
outputs: a string or null compares exactly, a number must match to 1e-9 relative, and
``{value: x, tol: t}`` allows an absolute tolerance ``t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import RuleEngineError
from ..rulebook.compiler import Plan


@dataclass
class Outcome:
    name: str
    ok: bool
    location: str
    diff: list[str] = field(default_factory=list)


def _missing(actual: Any) -> bool:
    return actual is None or actual == "" or (isinstance(actual, float) and math.isnan(actual))


def _matches(expected: Any, actual: Any) -> tuple[bool, str]:
    if isinstance(expected, dict):
        want, tol = float(expected["value"]), float(expected.get("tol", 0.0))
        if actual is None or isinstance(actual, str):
            return False, f"expected {want:g} ± {tol:g}, got {actual!r}"
        if not math.isfinite(want) or not math.isfinite(tol):  # inf ± anything would accept any value
            ok = (math.isnan(want) and _missing(actual)) or float(actual) == want
            return ok, f"expected {want:g} exactly, got {float(actual)!r}"
        ok = abs(float(actual) - want) <= tol + 1e-12 * max(1.0, abs(want))
        return ok, f"expected {want:g} ± {tol:g}, got {float(actual)!r} (off by {float(actual) - want:+.6g})"
    if expected is None:
        return actual in (None, ""), f"expected missing, got {actual!r}"
    if isinstance(expected, bool):
        return actual == float(expected), f"expected {expected}, got {actual!r}"
    if isinstance(expected, float) and math.isnan(expected):
        return _missing(actual), f"expected missing (nan), got {actual!r}"
    if isinstance(expected, int | float):
        if actual is None or isinstance(actual, str):
            return False, f"expected {expected:g}, got {actual!r}"
        ok = math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=1e-12)
        return ok, f"expected {expected!r}, got {float(actual)!r}"
    return str(actual) == str(expected), f"expected {str(expected)!r}, got {actual!r}"


_SCALAR = (str, int, float, bool, type(None))


def _case_problems(plan: Plan, case: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """What makes a case impossible to rate as written (the rulebook validates; the case is wrong)."""
    from ..errors import did_you_mean

    out = []
    for i, row in enumerate(rows):
        where = f"rows[{i}]" if case.get("rows") else "input"
        for key, value in row.items():
            if not isinstance(value, _SCALAR):
                kind = "a list" if isinstance(value, list) else "a mapping"
                out.append(f"{where}.{key}: {kind}; a cell holds one number or text")
    settable = sorted(n for n, node in plan.nodes.items() if node.kind in ("variable", "benchmark"))
    for key in case.get("given") or {}:
        if key not in settable:
            out.append(f"given.{key}: not a variable or benchmark of {plan.id}{did_you_mean(str(key), settable)}")
    return out


def run_cases(plan: Plan, select: str | None = None) -> list[Outcome]:
    from ..pipeline import rate

    out = []
    for i, case in enumerate(plan.tests):
        name = case["name"]
        if select and select not in name:
            continue
        where = str(plan.source_map.loc("tests", i))
        rows = [dict(r) for r in (case.get("rows") or [case["input"]])]
        for r in rows:
            r.setdefault("firm_id", "case")
        problems = _case_problems(plan, case, rows)
        if problems:
            out.append(Outcome(name, False, where, [f"cannot run the case: {p}" for p in problems]))
            continue
        try:
            results = rate(plan, rows, overrides=case.get("given"))
        except RuleEngineError as exc:
            out.append(Outcome(name, False, where, [f"could not rate the case: {exc}"]))
            continue
        last = results.row(len(results) - 1)
        diff = []
        for key, expected in case["expect"].items():
            if key not in last:
                diff.append(f"{key}: no such result column")
                continue
            ok, text = _matches(expected, last[key])
            if not ok:
                diff.append(f"{key}: {text}")
        if diff and last.get("reasons"):
            diff.append(f"(reasons: {last['reasons']})")
        out.append(Outcome(name, not diff, where, diff))
    return out
