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


def _matches(expected: Any, actual: Any) -> tuple[bool, str]:
    if isinstance(expected, dict):
        want, tol = float(expected["value"]), float(expected.get("tol", 0.0))
        if actual is None or isinstance(actual, str):
            return False, f"expected {want:g} ± {tol:g}, got {actual!r}"
        ok = abs(float(actual) - want) <= tol + 1e-12 * max(1.0, abs(want))
        return ok, f"expected {want:g} ± {tol:g}, got {float(actual)!r} (off by {float(actual) - want:+.6g})"
    if expected is None:
        return actual in (None, ""), f"expected missing, got {actual!r}"
    if isinstance(expected, bool):
        return actual == float(expected), f"expected {expected}, got {actual!r}"
    if isinstance(expected, int | float):
        if actual is None or isinstance(actual, str):
            return False, f"expected {expected:g}, got {actual!r}"
        ok = math.isclose(float(actual), float(expected), rel_tol=1e-9, abs_tol=1e-12)
        return ok, f"expected {expected!r}, got {float(actual)!r}"
    return str(actual) == str(expected), f"expected {str(expected)!r}, got {actual!r}"


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
