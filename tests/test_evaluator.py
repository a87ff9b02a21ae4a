"""Evaluation semantics on small inline rulebooks, then the Huzhou rulebook on hand-built firms.

Every expected number is worked out by hand in a comment next to it.  Exact (==) comparisons are
used where the engine's float operations are the same IEEE operations as the hand formula;
``pytest.approx`` where a hand decimal is compared with a binary float.
"""

from __future__ import annotations

import numpy as np
import pytest

import ruleengine


def by_firm(results: ruleengine.Results, column: str) -> dict[str, object]:
    return {fid: results.row(i)[column] for i, fid in enumerate(results["firm_id"].tolist())}


def row_of(results: ruleengine.Results, firm_id: str, year: int | None = None) -> dict[str, object]:
    hits = results.find(firm_id, year)
    assert len(hits) == 1, hits
    return results.row(hits[0])


def reasons(row: dict[str, object]) -> list[str]:
    return [r for r in str(row["reasons"]).split("; ") if r]


def fallbacks(row: dict[str, object]) -> list[str]:
    return [r for r in str(row["fallbacks"]).split("; ") if r]


BANDS_AT_1 = "closed: right, better: lower, bands: [{id: lo, upper: 1}, {id: hi, lower: 1}]"


# -- vectorised arithmetic ------------------------------------------------------------------------


def test_vectorised_arithmetic_over_many_rows(book) -> None:
    plan = book(f"""
inputs:
  a: {{type: number, required: true}}
  b: {{type: number, required: true}}
variables:
  y: {{expr: "a * b - a / b + 3"}}
ratings:
  r: {{value: y, {BANDS_AT_1}}}
""")
    n = 2000
    rows = [{"firm_id": f"F{i}", "year": 2022, "a": i, "b": i + 1} for i in range(n)]
    res = ruleengine.rate(plan, rows)
    y = res["y"]
    # by hand: row 0: 0*1 - 0/1 + 3 = 3; row 1: 1*2 - 1/2 + 3 = 4.5; row 3: 3*4 - 3/4 + 3 = 14.25
    assert y[0] == 3.0 and y[1] == 4.5 and y[3] == 14.25
    # every row: the same IEEE operations in the same order as the formula
    assert y.tolist() == [float(i) * (i + 1) - float(i) / (i + 1) + 3 for i in range(n)]
    # y(0) = 3 > 1 → hi; every later row is larger still
    assert set(res["rating"].tolist()) == {"hi"}
    assert (res["status"] == "rated").all()


# -- missing values ----------------------------------------------------------------------------


def test_missing_makes_comparisons_unknown_not_false(book) -> None:
    plan = book(f"""
inputs:
  x: {{type: number, optional: true}}
variables:
  big: {{expr: "x > 5", type: boolean, output: true}}
  small: {{expr: "not (x > 5)", type: boolean, output: true}}
  pick: {{expr: "where(x > 5, 10, 20)", output: true}}
  gap: {{expr: "is_missing(x)", type: boolean, output: true}}
checks:
  positive: {{expr: "x >= 0", message: x is negative, severity: error}}
ratings:
  r: {{value: x, primary: true, {BANDS_AT_1}}}
  lv: {{value: x, better: lower,
       levels: [{{id: big, when: "x > 5"}}, {{id: other, otherwise: true}}]}}
""")
    res = ruleengine.rate(plan, [{"firm_id": "known", "year": 2022, "x": 7}, {"firm_id": "missing", "year": 2022}])
    known, missing = row_of(res, "known"), row_of(res, "missing")
    # x = 7: 7 > 5 is true, not(true) false, where picks 10, x is reported
    assert (known["big"], known["small"], known["pick"], known["gap"]) == (1.0, 0.0, 10.0, 0.0)
    assert (known["lv"], known["rating"], known["status"]) == ("big", "hi", "rated")
    # x missing: every comparison is unknown (NaN → None), not false; where() is unknown too
    assert (missing["big"], missing["small"], missing["pick"]) == (None, None, None)
    assert missing["gap"] == 1.0
    # an unknown condition does not fall through to 'otherwise'
    assert missing["lv"] == ""
    # an unknown check does not fire: the only reason is the missing rated value
    assert missing["status"] == "unrated"
    assert reasons(missing) == ["r: x could not be computed"]


def test_any_of_all_of_three_valued_logic(book) -> None:
    plan = book(f"""
inputs:
  x: {{type: number, optional: true}}
  y: {{type: number, required: true}}
variables:
  anyv: {{expr: "any_of(x > 5, y > 5)", type: boolean, output: true}}
  allv: {{expr: "all_of(x > 5, y > 5)", type: boolean, output: true}}
ratings:
  r: {{value: y, {BANDS_AT_1}}}
""")
    res = ruleengine.rate(plan, [{"firm_id": "yes", "year": 2022, "y": 9}, {"firm_id": "no", "year": 2022, "y": 1}])
    # x missing (unknown). y = 9: y > 5 is true, so any_of(unknown, true) is true ("true where
    # any condition is true"); all_of(unknown, true) stays unknown.
    assert (row_of(res, "yes")["anyv"], row_of(res, "yes")["allv"]) == (1.0, None)
    # y = 1: y > 5 is false, so all_of(unknown, false) is false; any_of(unknown, false) unknown.
    assert (row_of(res, "no")["anyv"], row_of(res, "no")["allv"]) == (None, 0.0)


def test_unrated_row_always_says_why(book) -> None:
    plan = book(f"""
inputs:
  x: {{type: number, optional: true}}
  g: {{type: number, default: 0}}
checks:
  soft: {{expr: "g <= 5", message: g is large, severity: warning}}
ratings:
  r: {{value: x, {BANDS_AT_1}}}
""")
    res = ruleengine.rate(plan, [{"firm_id": "A", "year": 2022, "g": 6}])
    row = row_of(res, "A")
    assert row["status"] == "unrated"
    # the warning is recorded, but the reason the firm is unrated (x missing) must be there too
    assert reasons(row) == ["check soft: g is large", "r: x could not be computed"]


# -- division ------------------------------------------------------------------------------------


def test_division_by_zero_is_recorded_and_unrates_the_primary(book) -> None:
    plan = book(f"""
inputs:
  a: {{type: number, required: true}}
  b: {{type: number, required: true}}
  c: {{type: number, required: true}}
variables:
  q: {{expr: "a / b"}}
  side: {{expr: "a / c", output: true}}
  safe: {{expr: "safe_div(a, b, -1)", output: true}}
ratings:
  r: {{value: q, {BANDS_AT_1}}}
""")
    res = ruleengine.rate(
        plan,
        [
            {"firm_id": "ok", "year": 2022, "a": 1, "b": 2, "c": 4},
            {"firm_id": "zero_b", "year": 2022, "a": 1, "b": 0, "c": 4},
            {"firm_id": "zero_c", "year": 2022, "a": 3, "b": 2, "c": 0},
        ],
    )
    ok, zb, zc = row_of(res, "ok"), row_of(res, "zero_b"), row_of(res, "zero_c")
    # 1/2 = 0.5 ≤ 1 → lo; 1/4 = 0.25; safe_div(1, 2, -1) = 0.5
    assert (ok["q"], ok["side"], ok["safe"]) == (0.5, 0.25, 0.5)
    assert (ok["rating"], ok["reasons"]) == ("lo", "")
    # b = 0 feeds the primary rating: q missing, the row unrated with the division recorded;
    # safe_div(1, 0, -1) = -1 is a declared rule and is not recorded
    assert zb["q"] is None and zb["safe"] == -1.0
    assert zb["status"] == "unrated" and zb["rating"] == ""
    assert reasons(zb) == ["division by zero in q: b = 0", "r: q could not be computed"]
    # c = 0 feeds nothing rated: recorded, but the firm is still rated (q = 3/2 = 1.5 → hi)
    assert zc["side"] is None
    assert (zc["status"], zc["rating"]) == ("rated", "hi")
    assert reasons(zc) == ["division by zero in side: c = 0"]


def test_coalesce_takes_the_measured_value_first(book) -> None:
    plan = book(f"""
inputs:
  measured: {{type: number, optional: true}}
  fuel: {{type: number, default: 0}}
parameters:
  default_ncv: {{value: 20, unit: "1", source: s}}
variables:
  ncv_used: {{expr: "coalesce(measured, default_ncv)"}}
  energy: {{expr: "fuel * ncv_used"}}
ratings:
  r: {{value: energy, {BANDS_AT_1}}}
""")
    res = ruleengine.rate(
        plan, [{"firm_id": "m", "year": 2022, "measured": 25, "fuel": 2}, {"firm_id": "d", "year": 2022, "fuel": 2}]
    )
    # measured 25 is used: 2 * 25 = 50; without it the default: 2 * 20 = 40. No fallback noted.
    assert by_firm(res, "ncv_used") == {"m": 25.0, "d": 20.0}
    assert by_firm(res, "energy") == {"m": 50.0, "d": 40.0}
    assert by_firm(res, "fallbacks") == {"m": "", "d": ""}


# -- parameters ----------------------------------------------------------------------------------


def test_effective_dated_parameter_by_row_year(book) -> None:
    plan = book("""
inputs:
  a: {type: number, required: true}
parameters:
  p: {unit: "1", values: {2021-01-01: 2, 2022-01-01: 3}, source: s}
variables:
  y: {expr: "a * p"}
ratings:
  r: {value: y, closed: right, better: lower, bands: [{id: lo, upper: 5}, {id: hi, lower: 5}]}
""")
    years = (2020, 2021, 2022, 2030)
    res = ruleengine.rate(plan, [{"firm_id": f"F{y}", "year": y, "a": 2} for y in years])
    # 2021 → 2 (2*2 = 4, lo); 2022 → 3 (2*3 = 6, hi); 2030 → the latest value stays in force (6)
    assert by_firm(res, "y") == {"F2020": None, "F2021": 4.0, "F2022": 6.0, "F2030": 6.0}
    assert by_firm(res, "rating") == {"F2020": "", "F2021": "lo", "F2022": "hi", "F2030": "hi"}
    # 2020 is before the first date: no value, recorded, unrated
    f2020 = row_of(res, "F2020")
    assert f2020["status"] == "unrated"
    assert reasons(f2020) == ["p: no value in force for 2020", "r: y could not be computed"]


def test_table_lookup_by_category_with_fallback_key(book) -> None:
    plan = book(f"""
inputs:
  region: {{type: category, optional: true}}
  mwh: {{type: number, default: 0}}
parameters:
  ef:
    unit: tCO2/MWh
    fallback_key: national
    values:
      2021-01-01: {{national: 0.5}}
      2022-01-01: {{national: 0.25, east: 0.75}}
    source: s
  strict: {{unit: "1", table: {{east: 2}}, source: s}}
variables:
  co2: {{expr: "mwh * ef[region]", unit: tCO2}}
  mult: {{expr: "strict[region]", output: true}}
ratings:
  r: {{value: co2, {BANDS_AT_1}}}
""")
    res = ruleengine.rate(
        plan,
        [
            {"firm_id": "east22", "year": 2022, "region": "east", "mwh": 4},
            {"firm_id": "west22", "year": 2022, "region": "west", "mwh": 4},
            {"firm_id": "none22", "year": 2022, "mwh": 4},
            {"firm_id": "east21", "year": 2021, "region": "east", "mwh": 4},
        ],
    )
    # 2022: east 4 * 0.75 = 3; west/none fall back to national: 4 * 0.25 = 1
    # 2021: only national is published: 4 * 0.5 = 2 (recorded as a fallback)
    assert by_firm(res, "co2") == {"east22": 3.0, "west22": 1.0, "none22": 1.0, "east21": 2.0}
    assert fallbacks(row_of(res, "east22")) == []
    assert fallbacks(row_of(res, "west22")) == ["ef: no value for 'west' in 2022, used 'national'"]
    assert fallbacks(row_of(res, "none22")) == ["ef: no key for this firm, used 'national'"]
    assert fallbacks(row_of(res, "east21")) == ["ef: no value for 'east' in 2021, used 'national'"]
    # a table without fallback_key: a missing key is a reason and a missing value
    assert by_firm(res, "mult") == {"east22": 2.0, "west22": None, "none22": None, "east21": 2.0}
    assert reasons(row_of(res, "west22")) == ["strict: no value for 'west' in 2022"]
    assert reasons(row_of(res, "none22")) == ["strict: no key for this firm"]
    # 'mult' feeds no rating: the firms stay rated (1 ≤ 1 → lo)
    assert row_of(res, "west22")["rating"] == "lo"


def test_quoted_key_missing_in_a_year_uses_the_fallback_key(book) -> None:
    plan = book("""
inputs:
  mwh: {type: number, default: 0}
parameters:
  ef:
    unit: tCO2/MWh
    fallback_key: national
    values:
      2021-01-01: {national: 0.5}
      2022-01-01: {national: 0.25, east: 0.75}
    source: s
variables:
  co2: {expr: "mwh * ef['east']", unit: tCO2}
ratings:
  r: {value: co2, closed: right, better: lower, bands: [{id: lo, upper: 5}, {id: hi, lower: 5}]}
""")
    res = ruleengine.rate(plan, [{"firm_id": "A", "year": 2021, "mwh": 4}])
    row = row_of(res, "A")
    # 2021 publishes no 'east' factor: as for a category key, national is used and recorded,
    # 4 * 0.5 = 2 → lo
    assert row["co2"] == 2.0
    assert fallbacks(row) == ["ef: no value for 'east' in 2021, used 'national'"]
    assert row["rating"] == "lo"


# -- panel lookups -------------------------------------------------------------------------------


def test_prev_and_baseline_across_years(book) -> None:
    plan = book("""
inputs:
  e: {type: number, required: true}
variables:
  before: {expr: "prev(e)", output: true}
  before0: {expr: "prev(e, 0)", output: true}
  base: {expr: "baseline(e, 2020)", output: true}
  base_or_own: {expr: "baseline(e, 2020, e)", output: true}
  decline: {expr: "1 - e / prev(e)"}
ratings:
  r: {value: decline, closed: right, better: higher,
      bands: [{id: low, upper: 0.1}, {id: high, lower: 0.1}]}
""")
    rows = [  # deliberately out of order: lookups must not depend on row order
        {"firm_id": "A", "year": 2022, "e": 60},
        {"firm_id": "B", "year": 2022, "e": 50},
        {"firm_id": "A", "year": 2020, "e": 100},
        {"firm_id": "B", "year": 2020, "e": 40},
        {"firm_id": "A", "year": 2021, "e": 80},
    ]
    res = ruleengine.rate(plan, rows)
    a20, a21, a22 = row_of(res, "A", 2020), row_of(res, "A", 2021), row_of(res, "A", 2022)
    b20, b22 = row_of(res, "B", 2020), row_of(res, "B", 2022)
    # A: prev of 2021 is 2020's 100, of 2022 is 2021's 80; 2020 has no previous year
    assert (a20["before"], a21["before"], a22["before"]) == (None, 100.0, 80.0)
    assert (a20["before0"], a21["before0"], a22["before0"]) == (0.0, 100.0, 80.0)
    # B has no 2021 row: B 2022 has no previous year (missing, or 0 with the otherwise)
    assert (b22["before"], b22["before0"]) == (None, 0.0)
    # baseline 2020: A 100, B 40 for every year of each firm
    assert [r["base"] for r in (a20, a21, a22, b20, b22)] == [100.0, 100.0, 100.0, 40.0, 40.0]
    # decline: A 2021 1 - 80/100 = 0.2 > 0.1 → high; A 2022 1 - 60/80 = 0.25 → high
    assert (a21["decline"], a22["decline"]) == (1 - 80 / 100, 1 - 60 / 80)
    assert (a21["rating"], a22["rating"]) == ("high", "high")
    # without a previous year the rated value is missing → unrated, with the reason
    assert b22["status"] == "unrated"
    assert "before: no previous year value for this firm" in reasons(b22)
    assert "decline: no previous year value for this firm" in reasons(b22)
    # with 'otherwise' the gap is a recorded fallback, not a reason
    assert "before0: no previous year value for this firm, used the fallback" in fallbacks(b22)
    assert not any(r.startswith("before0") for r in reasons(b22))
    assert fallbacks(a21) == []


def test_baseline_missing_year_with_and_without_otherwise(book) -> None:
    plan = book(f"""
inputs:
  e: {{type: number, required: true}}
variables:
  base: {{expr: "baseline(e, 2020)", output: true}}
  base_or_own: {{expr: "baseline(e, 2020, e)", output: true}}
ratings:
  r: {{value: e, {BANDS_AT_1}}}
""")
    res = ruleengine.rate(plan, [{"firm_id": "N", "year": 2022, "e": 7}])
    row = row_of(res, "N")
    # no 2020 row for N: missing without a fallback, its own value (7) with one
    assert (row["base"], row["base_or_own"]) == (None, 7.0)
    assert reasons(row) == ["base: no 2020 value for this firm"]
    assert fallbacks(row) == ["base_or_own: no 2020 value for this firm, used the fallback"]
    assert row["status"] == "rated"  # 'base' feeds no rating


# -- benchmarks ----------------------------------------------------------------------------------

ROS_BOOK = f"""
inputs:
  ind: {{type: category, required: true}}
  div: {{type: category, required: true}}
  e: {{type: number, unit: tCO2, required: true, min: 0}}
  va: {{type: number, unit: 10k CNY, required: true}}
parameters:
  pub: {{unit: tCO2/10k CNY, table: {{D2: 0.25, avg: 0.5}}, fallback_key: avg, source: s}}
variables:
  x: {{expr: "e / va", unit: tCO2/10k CNY}}
benchmarks:
  ros:
    statistic: ratio_of_sums
    numerator: e
    denominator: va
    groups: [ind, div]
    min_peers: 3
    fallback: {{parameter: pub, key: div}}
    unit: tCO2/10k CNY
ratings:
  r: {{value: "x / ros", {BANDS_AT_1}}}
"""
ROS_ROWS = [  # (firm, industry, division, tCO2, 10k CNY)
    ("A", "I1", "D1", 1, 10),
    ("B", "I1", "D1", 2, 10),
    ("C", "I1", "D1", 6, 20),
    ("D", "I2", "D1", 4, 10),
    ("E", "I2", "D1", 4, 20),
    ("F", "I3", "D2", 1, 10),
    ("BAD", "I1", "D1", -5, 10),  # a negative quantity: a data error, so not a peer
]


def _ros_rows(rows: list[tuple]) -> list[dict[str, object]]:
    return [{"firm_id": f, "year": 2022, "ind": i, "div": d, "e": e, "va": va} for f, i, d, e, va in rows]


def test_ratio_of_sums_with_fallback_chain(book) -> None:
    res = ruleengine.rate(book(ROS_BOOK), _ros_rows(ROS_ROWS))
    ros, peers, group = by_firm(res, "ros"), by_firm(res, "ros_peers"), by_firm(res, "ros_group")
    # I1 has 3 valid peers (BAD is excluded): (1 + 2 + 6) / (10 + 10 + 20) = 9/40 = 0.225
    # — a ratio of sums, not the mean of ratios (0.1 + 0.2 + 0.3) / 3 = 0.2
    for f in "ABC":
        assert (ros[f], peers[f], group[f]) == (9 / 40, 3, "ind")
        assert fallbacks(row_of(res, f)) == []
    # I2 has 2 peers < 3 → division D1 (A, B, C, D, E): (9 + 4 + 4) / (40 + 10 + 20) = 17/70
    for f in "DE":
        assert (ros[f], peers[f], group[f]) == (17 / 70, 5, "div")
        assert fallbacks(row_of(res, f)) == ["ros: fewer than 3 peers by ind, used div 'D1'"]
    # I3 and D2 have 1 peer each → the published table by division: pub['D2'] = 0.25
    assert (ros["F"], peers["F"], group["F"]) == (0.25, 0, "fallback")
    assert fallbacks(row_of(res, "F")) == ["ros: fewer than 3 peers by ind and by div, used pub['D2']"]
    # x / ros: A 0.1 / 0.225 ≤ 1 → lo; C 0.3 / 0.225 > 1 → hi; F 0.1 / 0.25 → lo
    assert (res.row(0)["rating"], res.row(2)["rating"], res.row(5)["rating"]) == ("lo", "hi", "lo")
    bad = row_of(res, "BAD")
    assert bad["status"] == "unrated"
    assert reasons(bad) == ["e: -5 is below the minimum 0"]


def test_fallback_table_missing_key_names_the_entry_used(book) -> None:
    rows = ROS_ROWS[:5] + [("G", "I4", "D3", 2, 10)]
    res = ruleengine.rate(book(ROS_BOOK), _ros_rows(rows))
    g = row_of(res, "G")
    # D3 is not in pub, so pub's fallback_key 'avg' (0.5) is what is used
    assert g["ros"] == 0.5
    assert any("pub['avg']" in f or "'avg'" in f for f in fallbacks(g)), fallbacks(g)


def test_row_failing_an_error_check_is_not_a_peer(book) -> None:
    text = ROS_BOOK.replace(
        "benchmarks:",
        """checks:
  sane: {expr: "e <= 100", message: implausible emissions, severity: error}
benchmarks:""",
    )
    rows = ROS_ROWS[:3] + [("HUGE", "I1", "D1", 1000, 10)]
    res = ruleengine.rate(book(text), _ros_rows(rows))
    assert row_of(res, "HUGE")["status"] == "unrated"
    # A, B, C only: 9/40, as if HUGE were not there (with it: 1009/50)
    assert by_firm(res, "ros")["A"] == 9 / 40
    assert by_firm(res, "ros_peers")["A"] == 3


STATS_BOOK = f"""
inputs:
  g: {{type: category, required: true}}
  d: {{type: category, required: true}}
  x: {{type: number, required: true}}
benchmarks:
  mean_g: {{statistic: mean, of: x, groups: [g], unit: "1"}}
  median_g: {{statistic: median, of: x, groups: [g], unit: "1"}}
  rank_g: {{statistic: percentile_rank, of: x, groups: [g], unit: "1"}}
  small_mean: {{statistic: mean, of: x, groups: [g], where: "x < 5", unit: "1"}}
  chain: {{statistic: mean, of: x, groups: [g, d], min_peers: 3, fallback: {{value: 100}},
          unit: "1"}}
  chain5: {{statistic: mean, of: x, groups: [g, d], min_peers: 5, fallback: {{value: 100}},
           unit: "1"}}
ratings:
  r: {{value: x, {BANDS_AT_1}}}
"""
#          firm, year, group, division, x
STATS_ROWS = [
    ("a1", 2022, "g1", "dA", 1),
    ("a2", 2022, "g1", "dA", 2),
    ("a3", 2022, "g1", "dA", 6),
    ("b1", 2022, "g2", "dA", 4),
    ("b2", 2022, "g2", "dA", 1),
    ("b3", 2022, "g2", "dA", 3),
    ("b4", 2022, "g2", "dA", 3),
    ("c1", 2022, "g3", "dB", 5),
    ("c2", 2022, "g3", "dB", 8),
    ("d1", 2022, "g4", "dB", 7),
    ("e1", 2022, "g5", "dC", 1),
    ("e2", 2022, "g5", "dC", 2),
    ("e3", 2022, "g5", "dC", 10),
    ("e4", 2022, "g5", "dC", 20),
    # the same group in another year is another population
    ("a1", 2023, "g1", "dA", 10),
    ("a2", 2023, "g1", "dA", 20),
    ("a3", 2023, "g1", "dA", 30),
]


@pytest.fixture(scope="module")
def stats(book) -> ruleengine.Results:
    rows = [{"firm_id": f, "year": y, "g": g, "d": d, "x": x} for f, y, g, d, x in STATS_ROWS]
    return ruleengine.rate(book(STATS_BOOK), rows)


def _col(res: ruleengine.Results, column: str, year: int = 2022) -> dict[str, object]:
    return {res.row(i)["firm_id"]: res.row(i)[column] for i in range(len(res)) if res.row(i)["year"] == year}


def test_mean(stats: ruleengine.Results) -> None:
    m = _col(stats, "mean_g")
    # g1 (1+2+6)/3 = 3; g2 (4+1+3+3)/4 = 2.75; g3 (5+8)/2 = 6.5; g4 7; g5 (1+2+10+20)/4 = 8.25
    assert {m["a1"], m["a2"], m["a3"]} == {3.0}
    assert {m["b1"], m["b4"]} == {2.75}
    assert (m["c1"], m["d1"], m["e1"]) == (6.5, 7.0, 8.25)
    # 2023 g1: (10+20+30)/3 = 20
    assert set(_col(stats, "mean_g", 2023).values()) == {20.0}


def test_median_odd_and_even(stats: ruleengine.Results) -> None:
    m = _col(stats, "median_g")
    # g1 [1, 2, 6] → 2 (odd); g2 [1, 3, 3, 4] → (3+3)/2 = 3; g3 [5, 8] → 6.5;
    # g4 [7] → 7; g5 [1, 2, 10, 20] → (2+10)/2 = 6 (even, the two middle values averaged)
    assert (m["a1"], m["b1"], m["c1"], m["d1"], m["e1"]) == (2.0, 3.0, 6.5, 7.0, 6.0)
    assert set(_col(stats, "median_g", 2023).values()) == {20.0}  # [10, 20, 30]


def test_percentile_rank_with_ties(stats: ruleengine.Results) -> None:
    p = _col(stats, "rank_g")
    # rank = (values below + (ties - 1)/2) / (n - 1)
    # g1 [1, 2, 6]: 0/2 = 0, 1/2 = 0.5, 2/2 = 1
    assert (p["a1"], p["a2"], p["a3"]) == (0.0, 0.5, 1.0)
    # g2 [1, 3, 3, 4]: 1 → 0; each 3 → (1 + (2-1)/2)/3 = 0.5; 4 → 3/3 = 1
    assert (p["b2"], p["b3"], p["b4"], p["b1"]) == (0.0, 0.5, 0.5, 1.0)
    # g4 has one firm: 0.5 by convention
    assert p["d1"] == 0.5


def test_where_filters_the_peers_not_the_rows(stats: ruleengine.Results) -> None:
    m = _col(stats, "small_mean")
    # g1 peers with x < 5: [1, 2] → 1.5, given to a3 (x = 6) too
    assert (m["a1"], m["a3"]) == (1.5, 1.5)
    # g2: all below 5 → 2.75; g3 [5, 8] has none → no benchmark, recorded
    assert m["b1"] == 2.75
    assert m["c1"] is None
    c1 = row_of(stats, "c1", 2022)
    assert "small_mean: no peer group with at least 1 peer and no fallback value" in reasons(c1)


def test_min_peers_falls_back_to_coarser_group_then_value(stats: ruleengine.Results) -> None:
    c, c5 = _col(stats, "chain"), _col(stats, "chain5")
    group = _col(stats, "chain_group")
    # min_peers 3: g1 (3 peers) and g2 (4) use their own mean
    assert (c["a1"], group["a1"], c["b1"], group["b1"]) == (3.0, "g", 2.75, "g")
    # g3 (2) and g4 (1) use division dB = [5, 8, 7]: 20/3
    assert (c["c1"], group["c1"], c["d1"], group["d1"]) == (20 / 3, "d", 20 / 3, "d")
    assert fallbacks(row_of(stats, "d1", 2022)) == [
        "chain: fewer than 3 peers by g, used d 'dB'",
        "chain5: fewer than 5 peers by g and by d, used the fixed value 100",
    ]
    # min_peers 5: g1, g2 too small; dA has 7 peers: (1+2+6+4+1+3+3)/7 = 20/7
    assert (c5["a1"], c5["b1"]) == (20 / 7, 20 / 7)
    # dB has 3 and dC 4 peers → the fixed fallback value 100
    assert (c5["c1"], c5["e1"]) == (100.0, 100.0)
    assert _col(stats, "chain5_group")["e1"] == "fallback"
    assert _col(stats, "chain5_peers")["e1"] == 0


# -- ratings, checks, incentives ------------------------------------------------------------------

RATINGS_BOOK = """
inputs:
  v: {type: number, optional: true}
  g: {type: number, default: 0}
variables:
  vv: {expr: "v"}
checks:
  hard: {expr: "g <= 10", message: g too big, severity: error}
  soft: {expr: "g <= 5", message: g rather big, severity: warning}
ratings:
  rr: {value: vv, closed: right, better: lower, primary: true,
       bands: [{id: A, upper: 1}, {id: B, lower: 1, upper: 2}, {id: C, lower: 2}]}
  rl: {value: vv, closed: left, better: higher,
       bands: [{id: A, upper: 1}, {id: B, lower: 1, upper: 2}, {id: C, lower: 2}]}
  lv: {value: vv, better: lower,
       levels: [{id: small, when: "vv < 1"}, {id: mid, when: "vv < 2"}, {id: big, otherwise: true}]}
incentives:
  rating: rr
  levels:
    A: {rate_bp: -30, credit_policy: green loan, services: [audit, plan], subsidy_pct: 10}
    B: {rate_bp: 0}
"""


@pytest.fixture(scope="module")
def rated(book) -> ruleengine.Results:
    values = {"lt1": 0.5, "eq1": 1, "mid": 1.5, "eq2": 2, "gt2": 3, "above1": float(np.nextafter(1.0, 2.0))}
    rows = [{"firm_id": k, "year": 2022, "v": v} for k, v in values.items()]
    rows += [{"firm_id": "warn", "year": 2022, "v": 1, "g": 6}, {"firm_id": "error", "year": 2022, "v": 1, "g": 11}]
    return ruleengine.rate(book(RATINGS_BOOK), rows)


def test_bands_closed_right_vs_left_at_edges(rated: ruleengine.Results) -> None:
    rr, rl = by_firm(rated, "rr"), by_firm(rated, "rl")
    # closed right (lower, upper]: an edge belongs to the band below it
    assert (rr["lt1"], rr["eq1"], rr["above1"], rr["mid"], rr["eq2"], rr["gt2"]) == ("A", "A", "B", "B", "B", "C")
    # closed left [lower, upper): an edge belongs to the band above it
    assert (rl["lt1"], rl["eq1"], rl["above1"], rl["mid"], rl["eq2"], rl["gt2"]) == ("A", "B", "B", "B", "C", "C")
    assert by_firm(rated, "rating") == {**rr}


def test_conditional_levels_with_otherwise(rated: ruleengine.Results) -> None:
    lv = by_firm(rated, "lv")
    # first true condition wins: 0.5 < 1 → small; 1 and 1.5 < 2 → mid; 2 and 3 → otherwise: big
    assert (lv["lt1"], lv["eq1"], lv["mid"], lv["eq2"], lv["gt2"]) == ("small", "mid", "mid", "big", "big")


def test_checks_error_unrates_warning_only_records(rated: ruleengine.Results) -> None:
    warn, error = row_of(rated, "warn"), row_of(rated, "error")
    # g = 6 fails the warning check only: rated (v = 1 → A), reason recorded
    assert (warn["status"], warn["rating"]) == ("rated", "A")
    assert reasons(warn) == ["check soft: g rather big"]
    # g = 11 fails both: unrated, every rating blank, both reasons recorded
    assert (error["status"], error["rating"], error["rl"], error["lv"]) == ("unrated", "", "", "")
    assert reasons(error) == ["check hard: g too big", "check soft: g rather big"]


def test_incentive_columns(rated: ruleengine.Results) -> None:
    lt1, mid, gt2, error = (row_of(rated, f) for f in ("lt1", "mid", "gt2", "error"))
    assert (
        lt1["incentive_rate_bp"],
        lt1["incentive_credit_policy"],
        lt1["incentive_services"],
        lt1["incentive_subsidy_pct"],
    ) == (-30.0, "green loan", "audit; plan", 10.0)
    # level B declares only rate_bp; level C declares nothing
    assert (
        mid["incentive_rate_bp"],
        mid["incentive_credit_policy"],
        mid["incentive_services"],
        mid["incentive_subsidy_pct"],
    ) == (0.0, "", "", None)
    assert (gt2["incentive_rate_bp"], gt2["incentive_credit_policy"]) == (None, "")
    # an unrated firm gets no incentive
    assert (error["incentive_rate_bp"], error["incentive_credit_policy"]) == (None, "")


def test_dated_parameter_as_band_bound(book) -> None:
    plan = book("""
inputs:
  v: {type: number, required: true}
parameters:
  low_max: {unit: "1", values: {2021-01-01: 0.6, 2022-01-01: 0.5}, source: s}
ratings:
  label: {value: v, closed: right, better: lower,
          bands: [{id: low, upper: low_max}, {id: high, lower: low_max}]}
""")
    res = ruleengine.rate(
        plan,
        [
            {"firm_id": "A", "year": 2021, "v": 0.55},
            {"firm_id": "A", "year": 2022, "v": 0.55},
            {"firm_id": "B", "year": 2022, "v": 0.5},
        ],
    )
    # 0.55 ≤ 0.6 in 2021 → low; 0.55 > 0.5 in 2022 → high; 0.5 ≤ 0.5 (closed right) → low
    assert res["rating"].tolist() == ["low", "high", "low"]


# -- Huzhou ----------------------------------------------------------------------------------------

EAST_2022 = 0.5617  # tCO2/MWh, 2022 East China grid factor (METHODOLOGY.md)


def _huzhou_k(benchmark: float) -> ruleengine.Results:
    # 1 MWh of grid power on 1 (10^4 CNY) of value added, East grid, 2022:
    # scope1 = 0, scope2 = (1 - 0) * 0.5617 = 0.5617 exactly (a product by 1), avoided = 0,
    # so L = 0.5617 / 1 = 0.5617 exactly and K = 0.5617 / benchmark.
    row = {
        "firm_id": "F",
        "year": 2022,
        "industry": "3011",
        "grid_region": "east",
        "value_added_10k_cny": 1,
        "electricity_mwh": 1,
    }
    return ruleengine.rate("huzhou", [row], overrides={"industry_intensity": benchmark})


@pytest.mark.parametrize(
    ("edge", "at_edge", "above_edge"),
    [(0.6, "1", "2"), (0.8, "2", "3"), (1.2, "3", "4"), (2.0, "4", "5")],
)
def test_huzhou_levels_at_every_band_edge(edge: float, at_edge: str, above_edge: str) -> None:
    # benchmark = 0.5617 / edge makes K = 0.5617 / (0.5617 / edge) round back to the double
    # nearest the edge (checked below, so the test says which edge it tests).
    res = _huzhou_k(EAST_2022 / edge)
    assert res["intensity"][0] == EAST_2022
    assert res["k"][0] == edge
    assert res["rating"][0] == at_edge  # (lower, upper]: the edge belongs to the better level
    # K = edge + 1e-9, clearly above the edge: the next level
    res = _huzhou_k(EAST_2022 / (edge + 1e-9))
    assert res["k"][0] > edge
    assert res["rating"][0] == above_edge


def test_huzhou_level_1_and_5_extremes() -> None:
    # K = 0.5617 / 10 ≈ 0.056 → 1; K = 0.5617 / 0.01 ≈ 56 → 5
    assert _huzhou_k(10.0)["rating"][0] == "1"
    assert _huzhou_k(0.01)["rating"][0] == "5"


def test_huzhou_emission_total_by_hand() -> None:
    firm = {
        "firm_id": "91330500HAND",
        "year": 2022,
        "industry": "3011",
        "grid_region": "east",
        "value_added_10k_cny": 500,
        "raw_coal_t": 100,
        "natural_gas_10k_nm3": 10,
        "diesel_t": 20,
        "electricity_mwh": 1000,
        "green_electricity_mwh": 200,
    }
    res = ruleengine.rate("huzhou", [firm], overrides={"industry_intensity": 1.0})
    row = res.row(0)
    # fuel CO2 = quantity × NCV × carbon content × oxidation × 0.001 TJ/GJ × 44/12
    # raw coal:    20.908 × 26.37 × 0.94 × 0.001 × 44/12 = 1.9002988488 tCO2/t  (table: 1.9003)
    #              × 100 t                                = 190.02988488
    # natural gas: 389.31 × 15.3 × 0.99 × 0.001 × 44/12  = 21.62188809 tCO2/10⁴Nm³ (table: 21.622)
    #              × 10                                    = 216.2188809
    # diesel:      42.652 × 20.2 × 0.98 × 0.001 × 44/12  = 3.09590963733 tCO2/t  (table: 3.0959)
    #              × 20 t                                  = 61.9181927467
    # scope 1 = 190.02988488 + 216.2188809 + 61.9181927467 = 468.1669585267
    # scope 2 = (1000 - 200 green) MWh × 0.5617 (East 2022) = 449.36
    # total   = 468.1669585267 + 449.36                     = 917.5269585267
    assert row["raw_coal_co2_tco2"] == pytest.approx(190.02988488, rel=1e-12)
    assert row["natural_gas_co2_tco2"] == pytest.approx(216.2188809, rel=1e-12)
    assert row["diesel_co2_tco2"] == pytest.approx(61.9181927467, rel=1e-12)
    assert row["scope1_tco2"] == pytest.approx(468.1669585267, rel=1e-12)
    assert row["scope2_tco2"] == pytest.approx(449.36, rel=1e-12)
    assert row["emissions_tco2"] == pytest.approx(917.5269585267, rel=1e-12)
    # the METHODOLOGY table's 4-decimal factors agree: 100×1.9003 + 10×21.622 + 20×3.0959 + 449.36
    # = 190.03 + 216.22 + 61.918 + 449.36 = 917.528 (within the rounding of the factors)
    assert row["emissions_tco2"] == pytest.approx(917.528, abs=0.01)
    # energy: (100×714.3 + 10×13300 + 20×1457.1 + 1000 MWh × 1000 kWh/MWh × 0.1229) kgce × 0.001
    #       = (71430 + 133000 + 29142 + 122900) / 1000 = 356.472 tce
    assert row["energy_tce"] == pytest.approx(356.472, rel=1e-12)
    # L = 917.5269585267 / 500 = 1.8350539171 tCO2/10⁴CNY; K = L / 1.0 → 1.2 < K ≤ 2.0 → level 4
    assert row["intensity"] == pytest.approx(1.8350539170533, rel=1e-12)
    assert row["k"] == row["intensity"]
    assert (row["status"], row["rating"]) == ("rated", "4")
    # 0.6 < L ≤ 2.0 → medium-carbon
    assert row["carbon_label"] == "medium-carbon"
    # neutrality = green 200 × 0.5617 / (917.5269585267 + 112.34) = 112.34 / 1029.8669585267
    assert row["neutrality_rate"] == pytest.approx(112.34 / 1029.8669585267, rel=1e-12)
    # level 4: assessment and plan, 10% subsidy, no rate discount
    assert row["incentive_rate_bp"] == 0.0
    assert row["incentive_services"] == "free energy-saving assessment; carbon-reduction plan"
    assert row["incentive_subsidy_pct"] == 10.0
    assert row["industry_intensity_group"] == "given"


def test_huzhou_measured_ncv_replaces_the_default() -> None:
    firm = {
        "firm_id": "M",
        "year": 2022,
        "industry": "3011",
        "grid_region": "east",
        "value_added_10k_cny": 100,
        "raw_coal_t": 100,
        "raw_coal_ncv_gj_per_unit": 25,
    }
    row = ruleengine.rate("huzhou", [firm], overrides={"industry_intensity": 1.0}).row(0)
    # 100 t × 25 GJ/t (measured) × 26.37 × 0.94 × 0.001 × 44/12 = 227.2215
    assert row["raw_coal_co2_tco2"] == pytest.approx(227.2215, rel=1e-12)


def test_huzhou_green_power_above_purchase_is_unrated() -> None:
    firm = {
        "firm_id": "G",
        "year": 2022,
        "industry": "3011",
        "grid_region": "east",
        "value_added_10k_cny": 100,
        "electricity_mwh": 100,
        "green_electricity_mwh": 150,
    }
    row = ruleengine.rate("huzhou", [firm], overrides={"industry_intensity": 1.0}).row(0)
    assert row["status"] == "unrated"
    assert reasons(row) == ["check green_within_purchased: certified green power exceeds the electricity purchased"]
    assert row["rating"] == ""


@pytest.mark.parametrize("distinct", [5, 63, 64, 130])
def test_notes_join_gives_each_row_its_notes_in_plan_order(distinct):
    """The bit-mask join (one int64 word per row up to 63 distinct notes, several beyond) gives
    every row exactly its notes, ordered by rank then sequence, as a per-row loop would."""
    from ruleengine.engine.evaluator import Note, _Notes

    rng = np.random.default_rng(distinct)
    n = 2_000
    notes = _Notes(n)
    expected: list[list[tuple[int, int, Note]]] = [[] for _ in range(n)]
    seq = 0
    for k in range(distinct):
        note = Note("check", f"c{k}", f"note {k}")
        rank = int(rng.integers(0, 20))
        mask = rng.random(n) < 0.05
        notes.reason(mask, note, rank)
        if mask.any():
            seq += 1
            for i in np.flatnonzero(mask).tolist():
                expected[i].append((rank, seq, note))
    codes, combos = notes.join("reasons")
    for i in range(n):
        want = tuple(x[2] for x in sorted(expected[i], key=lambda t: (t[0], t[1])))
        got = combos[codes[i]] if codes[i] >= 0 else ()
        assert got == want, i  # each note added once: plan order = (rank, sequence)
    # combinations are listed once each
    assert len(set(combos)) == len(combos)
