"""One registry of formula functions: every entry is complete — it parses, type-checks, runs over
columns and says what the trace shows — and the audit trail looks tables up exactly as the batch."""

from __future__ import annotations

import math

import pytest

import ruleengine
from ruleengine.rulebook.functions import FUNCTIONS, MAX_ROUND_DIGITS

# One formula per function, with the value it gives for the row x = 4, y = -2.5, c = 1 (true),
# industry '3011', previous year x = 3 — worked out by hand.
CASES = {
    "where": ("where(c > 0, x, y)", 4.0),
    "min": ("min(x, y)", -2.5),
    "max": ("max(x, y, 1)", 4.0),
    "clip": ("clip(y, -1, 1)", -1.0),
    "abs": ("abs(y)", 2.5),
    "round": ("round(y * 1.5, 1)", -3.8),  # -3.75 to one digit, half to even: -3.8
    "all_of": ("where(all_of(x > 3, y < 0), 1, 0)", 1.0),
    "any_of": ("where(any_of(x > 9, y > 0), 1, 0)", 0.0),
    "safe_div": ("safe_div(x, c - 1, 7)", 7.0),  # c - 1 = 0 → the if_zero value
    "coalesce": ("coalesce(z, x)", 4.0),  # z is missing → x
    "is_missing": ("where(is_missing(z), 1, 0)", 1.0),
    "prev": ("prev(x, 0)", 3.0),
    "has_prev": ("where(has_prev(x), 1, 0)", 1.0),  # 2021 is on record with x = 3
    "baseline": ("baseline(x, 2021, 0)", 3.0),
    "prefix": ("where(prefix(industry, 2) == '30', 1, 0)", 1.0),
}


def test_every_registered_function_has_a_case_here():
    assert set(CASES) == set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_function_is_complete(name, book):
    fn = FUNCTIONS[name]
    assert fn.doc and fn.name == name
    assert fn.min_args >= 1 and (fn.max_args is None or fn.max_args >= fn.min_args)
    assert callable(fn.check) and callable(fn.run) and callable(fn.show)
    formula, expected = CASES[name]
    plan = book(f"""
inputs:
  x: {{type: number, required: true}}
  y: {{type: number, required: true}}
  z: {{type: number, optional: true}}
  c: {{type: number, required: true}}
  industry: {{type: category, required: true}}
variables:
  v: {{expr: "{formula}", output: true}}
ratings:
  r: {{value: x, closed: right, better: lower, bands: [{{id: lo, upper: 0}}, {{id: hi, lower: 0}}]}}
""")
    rows = [
        {"firm_id": "F", "year": 2021, "x": 3, "y": 0, "c": 1, "industry": "3011"},
        {"firm_id": "F", "year": 2022, "x": 4, "y": -2.5, "c": 1, "industry": "3011"},
    ]
    res = ruleengine.rate(plan, rows)
    assert res["v"][1] == pytest.approx(expected, abs=1e-12)
    assert fn.show([1.0, 2.0, 3.0][: fn.min_args]) is None or isinstance(fn.show([1.0, 2.0, 3.0][: fn.min_args]), dict)


def test_round_digits_beyond_float_precision_are_refused(book):
    with pytest.raises(ruleengine.RulebookError) as err:
        book("""
inputs:
  x: {type: number, required: true}
variables:
  v: {expr: "round(x, 1000000000)", output: true}
ratings:
  r: {value: x, closed: right, better: lower, bands: [{id: lo, upper: 0}, {id: hi, lower: 0}]}
""")
    assert f"round() digits must be between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}, not 1000000000" in str(
        err.value
    )


def test_trace_looks_tables_up_with_the_batch_rules(book):
    """A table lookup that falls back (unknown key → the declared fallback key): the trace shows
    the value the batch used, because it asks the evaluator, not a copy of its rules."""
    plan = book("""
inputs:
  x: {type: number, required: true}
  region: {type: category, required: true}
parameters:
  ef: {unit: "1", table: {east: 2.0, national: 5.0}, fallback_key: national, source: s}
variables:
  v: {expr: "x * ef[region]", output: true}
ratings:
  r: {value: v, closed: right, better: lower, bands: [{id: lo, upper: 10}, {id: hi, lower: 10}]}
""")
    rows = [
        {"firm_id": "A", "year": 2022, "x": 3, "region": "east"},
        {"firm_id": "B", "year": 2022, "x": 3, "region": "mars"},
    ]
    res = ruleengine.rate(plan, rows)
    assert res["v"].tolist() == [6.0, 15.0]  # 3 × 2 (east); 3 × 5 (mars → national)
    trace = ruleengine.explain(plan, rows, firm_id="B", results=res)
    uses = trace.node("v").uses
    assert uses["ef['mars']"] == 5.0
    assert trace.notes["fallbacks"] == [
        {"code": "table_fallback", "column": "ef", "message": "ef: no value for 'mars' in 2022, used 'national'"}
    ]
    assert math.isclose(trace.node("v").value, 15.0)
