"""Issue #13 language gaps: the ``missing`` literal and ``has_prev(x)``."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import ruleengine
from ruleengine.cli import main
from ruleengine.errors import RuleEngineError

BOOK = """\
id: lang
title: language additions
version: 1.0.0
effective: 2021-01-01
sources:
  test: {title: test rulebook, status: assumed}
inputs:
  firm_id: {type: string, required: true}
  year: {type: integer, required: true}
  industry: {type: category, required: true}
  co2_t: {type: number, unit: tCO2, default: 0, min: 0}
  sales: {type: number, unit: 10k CNY, required: true, min: 0}
variables:
  scope1_tco2: {expr: co2_t, unit: tCO2}
  scope2_tco2: {expr: co2_t * 0, unit: tCO2}
  emissions_tco2: {expr: scope1_tco2 + scope2_tco2, unit: tCO2}
  energy_tce: {expr: "co2_t * 0 / co2_unit", unit: tce}
  intensity: {expr: emissions_tco2 / sales, unit: tCO2/10k CNY}
  known_before:
    type: boolean
    expr: has_prev(intensity)
    output: true
  decline:
    expr: "where(has_prev(intensity), (prev(intensity) - intensity) / prev(intensity), missing)"
    unit: "1"
  score:
    expr: "coalesce(decline * 100, 50)"
    unit: "1"
parameters:
  co2_unit: {value: 1, unit: tCO2/tce, source: test}
ratings:
  band:
    primary: true
    value: score
    closed: left
    better: higher
    bands:
      - {id: worse, upper: 50}
      - {id: better, lower: 50}
tests:
  - name: first year - has_prev is false, the decline is missing on purpose, the score neutral
    # no 2021 row: has_prev -> 0, decline = missing (no reason), score = coalesce(missing, 50) = 50
    input: {year: 2022, industry: "3011", co2_t: 100, sales: 100}
    expect: {known_before: 0, decline: null, score: 50, rating: better, reasons: null, fallbacks: null}
  - name: second year - 10% lower intensity scores 10
    # 2021: 100/100 = 1; 2022: 90/100 = 0.9; decline (1 - 0.9)/1 = 0.1 -> 10
    rows:
      - {firm_id: A, year: 2021, industry: "3011", co2_t: 100, sales: 100}
      - {firm_id: A, year: 2022, industry: "3011", co2_t: 90, sales: 100}
    expect: {known_before: 1, decline: {value: 0.1, tol: 0.000000001}, score: {value: 10, tol: 0.0000001},
             rating: worse}
"""


@pytest.fixture
def book(tmp_path):
    p = tmp_path / "lang.yaml"
    p.write_text(BOOK, encoding="utf-8")
    return p


def test_author_tests_of_a_book_using_missing_and_has_prev(book):
    result = CliRunner().invoke(main, ["test", str(book)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "2 passed, 0 failed"


def test_has_prev_is_false_for_a_gap_year_and_for_a_missing_previous_value(book):
    plan = ruleengine.load(book)
    rows = [
        # B: 2020 and 2022, no 2021 -> the 2022 row has no previous year
        {"firm_id": "B", "year": 2020, "industry": "3011", "co2_t": 10, "sales": 10},
        {"firm_id": "B", "year": 2022, "industry": "3011", "co2_t": 10, "sales": 10},
        # C: 2021 has no sales (required -> missing intensity), so 2022 has no previous value
        {"firm_id": "C", "year": 2021, "industry": "3011", "co2_t": 10, "sales": None},
        {"firm_id": "C", "year": 2022, "industry": "3011", "co2_t": 10, "sales": 10},
        # D: both years -> 2022 knows its previous year: (2 - 1) / 2 = 0.5 decline -> 50
        {"firm_id": "D", "year": 2021, "industry": "3011", "co2_t": 20, "sales": 10},
        {"firm_id": "D", "year": 2022, "industry": "3011", "co2_t": 10, "sales": 10},
    ]
    res = ruleengine.rate(plan, rows)
    assert res["known_before"].tolist() == [0, 0, 0, 0, 0, 1]
    assert res["score"].tolist() == [50, 50, 50, 50, 50, pytest.approx(50.0)]
    assert res["decline"][5] == pytest.approx(0.5)
    # has_prev adds no note of its own, and prev() - computed for every row - leaves its "no previous
    # year value" reason only on rows that take its branch of where(): none of the 2022 rows here
    assert res["fallbacks"].tolist() == [""] * 6
    assert [res["reasons"][i] for i in (1, 3, 5)] == ["", "", ""]
    assert res["reasons"][2] == "sales: required value is missing"


def test_notes_of_a_where_branch_count_only_on_the_rows_that_take_it(tmp_path):
    # without the guard, prev() on a first year leaves a reason; inside where() only if taken
    guarded = BOOK.replace(
        "where(has_prev(intensity), (prev(intensity) - intensity) / prev(intensity), missing)",
        "where(sales > 50, (prev(intensity) - intensity) / prev(intensity), missing)",
    )
    p = tmp_path / "guarded.yaml"
    p.write_text(guarded, encoding="utf-8")
    plan = ruleengine.load(p)
    rows = [
        {"firm_id": "E", "year": 2022, "industry": "3011", "co2_t": 10, "sales": 100},  # takes prev(): reason
        {"firm_id": "F", "year": 2022, "industry": "3011", "co2_t": 10, "sales": 10},  # takes missing: none
    ]
    res = ruleengine.rate(plan, rows)
    assert res["reasons"][0] == "decline: no previous year value for this firm"
    assert res["reasons"][1] == ""


def test_missing_is_a_word_of_the_language_not_a_name(tmp_path):
    bad = BOOK.replace("  score:\n", "  missing:\n    expr: co2_t\n    unit: tCO2\n  score:\n")
    p = tmp_path / "bad.yaml"
    p.write_text(bad, encoding="utf-8")
    with pytest.raises(RuleEngineError) as err:
        ruleengine.load(p)
    assert "'missing' is the literal for a missing value in formulas; choose another name" in str(err.value)


def test_has_prev_needs_a_number(tmp_path):
    bad = BOOK.replace("expr: has_prev(intensity)", "expr: has_prev(industry)")
    p = tmp_path / "bad.yaml"
    p.write_text(bad, encoding="utf-8")
    with pytest.raises(RuleEngineError) as err:
        ruleengine.load(p)
    assert "the argument of has_prev() must be a number, not a category" in str(err.value)


RECORD_BOOK = """\
id: rec
title: record, named weights, cited inputs
version: 1.0.0
effective: 2021-01-01
sources:
  meter: {title: metering rules, status: official}
  guess: {title: our assumption, status: assumed}
inputs:
  firm_id: {type: string, required: true}
  year: {type: integer, required: true}
  industry: {type: category, required: true}
  co2_t: {type: number, unit: tCO2, default: 0, min: 0, source: meter}
  measured_t: {type: number, unit: tCO2, optional: true, min: 0, source: guess, status: secondary}
  sales: {type: number, unit: 10k CNY, required: true, min: 0}
parameters:
  co2_unit: {value: 1, unit: tCO2/tce, source: guess}
  ten: {value: 10, unit: 10k CNY/tCO2, source: guess}
  w_a: {value: 0.7, unit: "1", source: guess}
  w_b: {value: 0.3, unit: "1", source: guess}
variables:
  scope1_tco2:
    expr: coalesce(measured_t, co2_t)
    unit: tCO2
    record: measured CO2 not reported, metered default used
  scope2_tco2: {expr: co2_t * 0, unit: tCO2}
  emissions_tco2: {expr: scope1_tco2 + scope2_tco2, unit: tCO2}
  energy_tce: {expr: scope1_tco2 * 0 / co2_unit, unit: tce}
  intensity:
    expr: safe_div(emissions_tco2, sales, 0)
    unit: tCO2/10k CNY
    record: no sales, intensity set to 0
  a: {expr: intensity * ten, unit: "1"}
  b: {expr: "where(sales > 100, a * 0 + 100, a * 0)", unit: "1", record: small firm scored 0}
  score:
    weights: {a: w_a, b: w_b}
    unit: "1"
ratings:
  band:
    primary: true
    value: score
    closed: left
    better: higher
    bands:
      - {id: low, upper: 5}
      - {id: high, lower: 5}
"""


def _write(tmp_path, text, name="rec.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_record_names_each_substitution_of_coalesce_safe_div_and_where(tmp_path):
    plan = ruleengine.load(_write(tmp_path, RECORD_BOOK))
    rows = [
        {"firm_id": "M", "year": 2022, "industry": "3011", "co2_t": 50, "measured_t": 40, "sales": 200},
        {"firm_id": "N", "year": 2022, "industry": "3011", "co2_t": 50, "sales": 0},
    ]
    res = ruleengine.rate(plan, rows)
    # M: measured 40 used (nothing recorded); intensity 40 / 200 = 0.2; a = 0.2 x 10 = 2; b = 100
    # (sales > 100); score = 0.7 x 2 + 0.3 x 100 = 31.4
    assert res["score"][0] == pytest.approx(31.4)
    assert res["fallbacks"][0] == ""
    # N: metered 50 (recorded), sales 0 -> intensity 0 (recorded), small -> b = 0 (recorded); score 0
    assert res["score"][1] == 0
    assert res["fallbacks"][1] == (
        "scope1_tco2: measured CO2 not reported, metered default used; "
        "intensity: no sales, intensity set to 0; b: small firm scored 0"
    )
    assert res["reasons"][1] == ""  # safe_div's declared rule is no division-by-zero reason


def test_named_weights_are_parameters_and_must_sum_to_one(tmp_path):
    plan = ruleengine.load(_write(tmp_path, RECORD_BOOK))
    assert "w_a" in plan.nodes["score"].deps and "w_b" in plan.nodes["score"].deps
    bad = _write(tmp_path, RECORD_BOOK.replace("w_b: {value: 0.3", "w_b: {value: 0.4"), "bad.yaml")
    with pytest.raises(RuleEngineError) as err:
        ruleengine.load(bad)
    assert "weights sum to 1.1, not 1" in str(err.value)
    dated = _write(tmp_path, RECORD_BOOK.replace("w_b: {value: 0.3,", "w_b: {values: {2021-01-01: 0.3},"), "d.yaml")
    with pytest.raises(RuleEngineError) as err:
        ruleengine.load(dated)
    assert "weight 'w_b' must be an undated scalar parameter (unit 1)" in str(err.value)


def test_a_named_weight_shows_in_diff_as_a_parameter_change(tmp_path):
    old = _write(tmp_path, RECORD_BOOK, "old.yaml")
    new = _write(
        tmp_path,
        RECORD_BOOK.replace("w_a: {value: 0.7", "w_a: {value: 0.6")
        .replace("w_b: {value: 0.3", "w_b: {value: 0.4")
        .replace("version: 1.0.0", "version: 2.0.0"),
        "new.yaml",
    )
    out = CliRunner().invoke(main, ["diff", str(old), str(new)])
    assert out.exit_code == 0, out.output
    assert "parameters.w_a.value: 0.7 → 0.6" in out.output
    assert "parameters.w_b.value: 0.3 → 0.4" in out.output


def test_inputs_cite_known_sources(tmp_path):
    plan = ruleengine.load(_write(tmp_path, RECORD_BOOK))
    assert (plan.inputs["co2_t"].source, plan.inputs["co2_t"].status) == ("meter", "official")
    assert (plan.inputs["measured_t"].source, plan.inputs["measured_t"].status) == ("guess", "secondary")
    bad = _write(tmp_path, RECORD_BOOK.replace("source: meter}", "source: metre}"), "bad.yaml")
    with pytest.raises(RuleEngineError) as err:
        ruleengine.load(bad)
    assert "unknown source 'metre'" in str(err.value)


def test_record_needs_a_substituting_function(tmp_path):
    bad = _write(
        tmp_path,
        RECORD_BOOK.replace(
            'a: {expr: intensity * ten, unit: "1"}', 'a: {expr: intensity * ten, unit: "1", record: oops}'
        ),
        "bad.yaml",
    )
    with pytest.raises(RuleEngineError) as err:
        ruleengine.load(bad)
    assert "'record' applies to a formula with coalesce(), where() or safe_div()" in str(err.value)


def test_scale_points_may_be_named_parameters(tmp_path):
    text = RECORD_BOOK.replace(
        "variables:\n",
        "scales:\n"
        "  grade_scale:\n"
        "    piecewise: [[0, full_marks], [cut_x, 0]]\n"
        '    unit: "1"\n'
        '    input_unit: "1"\n'
        "    source: guess\n"
        "variables:\n",
    ).replace(
        '  b: {expr: "where(sales > 100, a * 0 + 100, a * 0)"',
        '  b: {expr: "where(sales > 100, grade_scale(a), a * 0)"',
    )
    text = text.replace(
        "  w_a: {value: 0.7",
        '  full_marks: {value: 100, unit: "1", source: guess}\n  cut_x: {value: 4, unit: "1", source: guess}\n  w_a: {value: 0.7',
    )
    plan = ruleengine.load(_write(tmp_path, text))
    rows = [{"firm_id": "M", "year": 2022, "industry": "3011", "co2_t": 50, "measured_t": 40, "sales": 200}]
    # a = 40 / 200 x 10 = 2 -> on [[0, 100], [4, 0]]: 100 - 2/4 x 100 = 50
    assert ruleengine.rate(plan, rows)["b"][0] == pytest.approx(50.0)
    moved = _write(tmp_path, text.replace("cut_x: {value: 4", "cut_x: {value: 8"), "moved.yaml")
    # [[0, 100], [8, 0]]: 100 - 2/8 x 100 = 75
    assert ruleengine.rate(ruleengine.load(moved), rows)["b"][0] == pytest.approx(75.0)
    wrong = _write(tmp_path, text.replace('cut_x: {value: 4, unit: "1"', "cut_x: {value: 4, unit: tCO2"), "w.yaml")
    with pytest.raises(RuleEngineError) as err:
        ruleengine.load(wrong)
    assert "unit mismatch: parameter 'cut_x' is in tCO2, the scale needs 1" in str(err.value)
