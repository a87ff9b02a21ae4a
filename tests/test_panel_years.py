"""Issue #13.7: prev()/baseline() take all terms of one formula from the same year.

``prev(a / b)`` computes ``a / b`` on the firm's previous-year row: both terms from that year, and
what the expression meets there (a division by zero) is not a note of this year's row. A formula
whose other-year terms carry fallbacks (``prev(a, 0) / prev(b, 1)``: one term falls back, the
other does not, and the quotient mixes years) is a located compile error."""

from __future__ import annotations

import math

import pytest

import ruleengine
from ruleengine.errors import RuleEngineError

BOOK = """\
id: panel
title: one year per formula
version: 1.0.0
effective: 2021-01-01
sources:
  test: {{title: test rulebook, status: assumed}}
inputs:
  firm_id: {{type: string, required: true}}
  year: {{type: integer, required: true}}
  a: {{type: number, unit: tCO2, min: 0, optional: true}}
  b: {{type: number, unit: 10k CNY, min: 0, optional: true}}
variables:
  scope1_tco2: {{expr: a * 0, unit: tCO2}}
  scope2_tco2: {{expr: a * 0, unit: tCO2}}
  emissions_tco2: {{expr: a * 0, unit: tCO2}}
  energy_tce: {{expr: "a * 0 / k", unit: tce}}
  ratio_prev:
    expr: "{formula}"
    unit: tCO2/10k CNY
parameters:
  k: {{value: 1, unit: tCO2/tce, source: test}}
ratings:
  band:
    primary: true
    value: ratio_prev
    closed: left
    better: lower
    bands:
      - {{id: low, upper: 2}}
      - {{id: high, lower: 2}}
"""


def _plan(tmp_path, formula: str):  # type: ignore[no-untyped-def]
    p = tmp_path / "panel.yaml"
    p.write_text(BOOK.format(formula=formula), encoding="utf-8")
    return ruleengine.load(p)


ROWS = [
    {"firm_id": "A", "year": 2021, "a": 10, "b": 4},  # 10 / 4 = 2.5
    {"firm_id": "A", "year": 2022, "a": 9, "b": 0},  # this year's b = 0: no business of prev()
    {"firm_id": "B", "year": 2021, "a": 5, "b": 0},  # last year's ratio divides by zero
    {"firm_id": "B", "year": 2022, "a": 6, "b": 3},
    {"firm_id": "C", "year": 2021, "a": 8, "b": None},  # last year's b not reported
    {"firm_id": "C", "year": 2022, "a": 3, "b": 2},
]


def test_prev_of_an_expression_takes_the_previous_years_row(tmp_path):
    res = ruleengine.rate(_plan(tmp_path, "prev(a / b)"), ROWS)
    v = res["ratio_prev"].tolist()
    # A 2022: 10 / 4 = 2.5 from 2021, although 2022's own b is 0; first years have no previous year
    assert v[1] == 2.5 and res["rating"][1] == "high"
    assert [math.isnan(x) for x in v] == [True, False, True, True, True, True]
    none = "ratio_prev: no previous year value for this firm; band: ratio_prev could not be computed"
    # the division by zero belongs to the year that has it: A 2022 keeps no reason of its own,
    # B 2021 is not blamed for B 2022's lookup; B 2022 and C 2022 have no previous value
    assert res["reasons"].tolist() == [none, "", none, none, none, none]


def test_baseline_and_has_prev_of_an_expression(tmp_path):
    # baseline(a / b, 2021): A -> 2.5 on both rows; B's 2021 ratio divides by zero -> missing
    res = ruleengine.rate(_plan(tmp_path, "baseline(a / b, 2021, 0)"), ROWS)
    assert res["ratio_prev"].tolist() == [2.5, 2.5, 0, 0, 0, 0]
    fb = "ratio_prev: no 2021 value for this firm, used the fallback"
    assert res["fallbacks"].tolist() == ["", "", fb, fb, fb, fb]
    assert res["reasons"].tolist() == [""] * 6  # B 2021's own division by zero is its baseline's, not a note
    res = ruleengine.rate(_plan(tmp_path, "where(has_prev(a / b), prev(a / b), 1)"), ROWS)
    # only A 2022 has a previous-year ratio (2.5); the rest take 1
    assert res["ratio_prev"].tolist() == [1, 2.5, 1, 1, 1, 1]
    assert res["reasons"].tolist() == [""] * 6


def test_one_year_with_a_fallback(tmp_path):
    # prev(a / b, 0): C 2022's previous ratio is missing (b not reported) -> 0, recorded; before
    # this check one would write prev(a, 0) / prev(b, 1) and get 8 / 1 = 8: last year's a over a
    # substitute for last year's b
    res = ruleengine.rate(_plan(tmp_path, "prev(a / b, 0)"), ROWS)
    assert res["ratio_prev"].tolist() == [0, 2.5, 0, 0, 0, 0]
    assert res["rating"].tolist() == ["low", "high", "low", "low", "low", "low"]


@pytest.mark.parametrize(
    ("formula", "column", "key"),
    [
        ("prev(a, 0) / prev(b, 1)", 1, "the previous year (a, b) and prev(a, 0) has a fallback"),
        ("prev(a) / prev(b, 1)", 11, "the previous year (a, b) and prev(b, 1) has a fallback"),
        ("baseline(a, 2021) / baseline(b, 2021, 1)", 21, "year 2021 (a, b) and baseline(b, 2021, 1) has a fallback"),
        ("where(b > 0, prev(a, 0) - prev(b), 0)", 14, "the previous year (a, b) and prev(a, 0) has a fallback"),
    ],
)
def test_a_formula_whose_terms_could_mix_years_is_a_located_error(tmp_path, formula, column, key):
    with pytest.raises(RuleEngineError) as err:
        _plan(tmp_path, formula)
    text = str(err.value)
    line = BOOK.splitlines().index('    expr: "{formula}"') + 1
    # the formula's first character is in column 12 (after `    expr: "`); `column` counts from 1
    assert f"panel.yaml:{line}:{11 + column}: error: 2 terms of this formula are taken from {key}" in text, text
    assert "Take the whole expression from one year" in text


@pytest.mark.parametrize(
    "formula",
    [
        "prev(a) / prev(b)",  # both from the previous-year row, or missing
        "prev(a, 0) / b",  # one term from last year, one from this year: a declared comparison
        "where(prev(a, 0) > 0, prev(a) / prev(b), 0)",  # a guard: the condition and branches are apart
        "prev(a, 0) / baseline(b, 2021, 1)",  # two different years, each one term
    ],
)
def test_formulas_that_cannot_mix_years_compile(tmp_path, formula):
    assert "ratio_prev" in _plan(tmp_path, formula).nodes
