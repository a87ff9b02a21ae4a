"""Analyses for every rating kind, readable by the people who act on them (issue #19; #12.1 and #14
for explain): what it takes for conditional levels and weighted scores, unreachable levels,
diff impact for every label set and category, explain for people, the rate summary's incentives,
and error messages that never echo a file.

Hand-computed numbers use tests/data/levels/ (a made-up conditional-levels rulebook, coal 2 tCO2/t,
grid 0.5 tCO2/MWh) and the golden portfolio golden/portfolios/small.csv.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ruleengine
from ruleengine.analysis.trace import TRACE_SCHEMA_VERSION, trace_row, verify
from ruleengine.api import explain
from ruleengine.cli import main
from ruleengine.render.text import WIDTH, trace_lines

ROOT = Path(__file__).resolve().parent.parent
LEVELS = ROOT / "tests" / "data" / "levels"
BOOK = LEVELS / "levels.yaml"
FIRMS = LEVELS / "firms.csv"
SMALL = ROOT / "golden" / "portfolios" / "small.csv"
NEXT = LEVELS / "huzhou_next.yaml"


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def levels():
    plan = ruleengine.load(BOOK)
    from ruleengine.pipeline import rate_with_context

    return plan, rate_with_context(plan, FIRMS)


def trace_of(levels, firm: str, year: int = 2023):
    plan, results = levels
    return explain(plan, FIRMS, firm, year, results=results)


# -- 1. what it takes, every rating kind ------------------------------------------------------------


def test_levels_are_rated_by_hand(levels):
    _, res = levels
    # emissions = 2 coal + 0.5 (electricity - green); intensity = emissions / value added
    # L1: 200 + 100 = 300 → 0.3, green share 200/400 = 0.5 → A; L2 2022: 900 → 0.9 → B;
    # L2 2023: 700 → 0.7 → B; L3: 1500 → 1.5 → C; L4: 3000 → 3.0 → D (otherwise)
    cols = (res["firm_id"], res["year"], res["rating"], res["intensity"])
    got = {(f, int(y)): (r, i) for f, y, r, i in zip(*cols, strict=True)}
    assert got == {
        ("L1", 2023): ("A", 0.3),
        ("L2", 2022): ("B", 0.9),
        ("L2", 2023): ("B", 0.7),
        ("L3", 2023): ("C", 1.5),
        ("L4", 2023): ("D", 3.0),
    }


def test_levels_what_it_takes_per_input_with_the_cut_needed(levels):
    w = trace_of(levels, "L3").what_it_takes
    b = w["better"]
    assert (b["level"], b["rule"], b["bound"], b["margin"]) == ("B", "intensity <= 1.0", None, None)
    assert b["conditions"] == [
        {
            "condition": "intensity <= 1",
            "name": "intensity",
            "value": 1.5,
            "op": "<=",
            "bound": 1.0,
            "holds": False,
            "gap": 0.5,
        }
    ]
    cuts = {c["what"]: c for c in b["cuts"]}
    # B needs emissions <= 1000: coal 2 (500 - x) + 500 <= 1000 → x = 250 t (50%); electricity
    # 2x500 + 0.5 (1000 - y) <= 1000 → y = 1000 MWh (100%); or value added >= 1500: +500 (+50%)
    assert set(cuts) == {"coal_t", "electricity_mwh", "value_added_10k_cny"}
    assert cuts["coal_t"]["direction"] == "cut" and cuts["coal_t"]["cut"] == pytest.approx(250, rel=1e-5)
    assert cuts["coal_t"]["cut"] >= 250  # rounded up, so that applying it does reach B
    assert cuts["electricity_mwh"]["cut"] == pytest.approx(1000, rel=1e-5)
    va = cuts["value_added_10k_cny"]
    assert va["direction"] == "raise" and va["cut"] == pytest.approx(500, rel=1e-4) and va["cut"] >= 500
    assert va["cut_pct"] == pytest.approx(50, rel=1e-4)
    # the cut found does reach B, and 1% less does not
    plan, _ = levels
    rows = [r for r in csv.DictReader(FIRMS.read_text(encoding="utf-8").splitlines()) if r["firm_id"] == "L3"]
    for coal, want in ((500 - cuts["coal_t"]["cut"], "B"), (500 - 0.99 * cuts["coal_t"]["cut"], "C")):
        row = {**rows[0], "coal_t": coal}
        assert ruleengine.rate(plan, [row])["rating"][0] == want
    assert w["worse"]["level"] == "D" and w["worse"]["rule"] == "not (intensity <= 2.0)"


def test_levels_no_single_input_reaches_the_nearest_condition(levels):
    t = trace_of(levels, "L2")
    b = t.what_it_takes["better"]
    assert b["level"] == "A"
    # A needs intensity <= 0.5 AND green share >= 0.3; L2 buys no green power (0), which no
    # cut or raise of coal, electricity or value added can change
    terms = {c["name"]: (c["holds"], c["gap"]) for c in b["conditions"]}
    assert terms["intensity"] == (False, pytest.approx(0.2))
    assert terms["green_share"] == (False, pytest.approx(0.3))
    assert [c["cut"] for c in b["cuts"]] == [None, None, None]
    text = "\n".join(trace_lines(t))
    assert "no single input reaches it" in text
    assert "green_share >= 0.3: green_share = 0, does not hold: green_share must move by 0.3" in text


def test_levels_best_and_worst(levels):
    best = trace_of(levels, "L1").what_it_takes
    assert best["better"] is None and best["worse"]["level"] == "B"
    text = "\n".join(trace_lines(trace_of(levels, "L1")))
    assert "level: already at the best level" in text
    worst = trace_of(levels, "L4").what_it_takes
    assert worst["better"]["level"] == "C" and worst["worse"] is None
    # C needs emissions <= 2000: coal 2 (1000 - x) + 1000 <= 2000 → x = 500 t
    cut = {c["what"]: c["cut"] for c in worst["better"]["cuts"]}
    assert cut["coal_t"] == pytest.approx(500, rel=1e-5)


def test_levels_traces_verify(levels, tmp_path):
    plan, res = levels
    for i in range(len(res)):
        data = trace_row(plan, res, i).to_dict()
        assert data["schema_version"] == TRACE_SCHEMA_VERSION == "1.3"
        checked, problems = verify(json.loads(json.dumps(data)))
        assert problems == [] and checked > 100


def test_shenzhen_weighted_score_points_per_indicator():
    plan = ruleengine.load("shenzhen")
    res = ruleengine.rate(plan, SMALL)
    i = next(j for j in range(len(res)) if res["firm_id"][j] == "G01" and int(res["year"][j]) == 2023)
    better = trace_row(plan, res, i).what_it_takes["better"]
    total = float(res["total_score"][i])
    assert better["level"] == "BB" and better["margin"] == pytest.approx(45 - total)  # bb_min = 45
    scores = {s["score"]: s for s in better["scores"]}
    # effective weights from rulebooks/shenzhen.yaml: total = 0.4 emission efficiency + 0.3 reduction
    # + 0.3 endowment; emission efficiency = 0.5 energy (0.6 intensity, 0.4 per employee) + 0.5 carbon
    hand = {
        "energy_intensity_score": 0.4 * 0.5 * 0.6,
        "energy_per_employee_score": 0.4 * 0.5 * 0.4,
        "carbon_intensity_score": 0.4 * 0.5 * 0.6,
        "emissions_per_employee_score": 0.4 * 0.5 * 0.4,
        "energy_saving_score": 0.3 * 0.5 * 0.5,
        "energy_intensity_decline_score": 0.3 * 0.5 * 0.5,
        "emission_reduction_score": 0.3 * 0.5 * 0.5,
        "carbon_intensity_decline_score": 0.3 * 0.5 * 0.5,
        "industry_position_score": 0.3 * 1.0 * 1.0,
    }
    assert set(scores) == set(hand) and sum(hand.values()) == pytest.approx(1.0)
    for name, w in hand.items():
        s = scores[name]
        assert s["weight"] == pytest.approx(w)
        assert s["needed"] == pytest.approx((45 - total) / w)
        assert s["reachable"] == (s["current"] + s["needed"] <= 100)
    # 4.7596 points / 0.3 = 15.87 more points of industry position (50 → 65.87): reachable
    assert scores["industry_position_score"]["needed"] == pytest.approx(15.865, abs=1e-3)
    assert scores["industry_position_score"]["reachable"]
    # 4.7596 / 0.075 = 63.46 more points from 75: beyond 100
    assert not scores["energy_saving_score"]["reachable"]


UNREACHABLE = """
id: t
title: t
version: 1.0.0
effective: 2021-01-01
sources: {s: {title: test, status: assumed}}
inputs:
  firm_id: {type: string, required: true}
  year: {type: integer, required: true}
  x: {type: number, required: true, min: 0, max: 1}
  y: {type: number, required: true}
variables:
  scope1_tco2: {expr: "0", unit: tCO2}
  scope2_tco2: {expr: "0", unit: tCO2}
  emissions_tco2: {expr: "0", unit: tCO2}
  energy_tce: {expr: "0", unit: tce}
ratings:
  r:
    primary: true
    value: y
    better: lower
    levels:
      - {id: A, when: "y <= 1"}
      - {id: B, when: "y <= 0.5"}
      - {id: C, when: "all_of(y > 1, y <= 2)"}
      - {id: D, when: "all_of(y > 0.2, y <= 1.5)"}
      - {id: E, when: "x > 2"}
      - {id: F, when: "all_of(y > 3, y < 2)"}
      - {id: G, when: "any_of(y > 3, x > 5)"}
      - {id: H, when: "y <= 5"}
      - {id: I, otherwise: true}
"""


def test_validate_warns_about_unreachable_levels(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(UNREACHABLE, encoding="utf-8")
    r = run("validate", str(path))
    assert r.exit_code == 0
    warnings = [line for line in r.output.splitlines() if "warning:" in line]
    assert [re.search(r"level '(\w)'", w).group(1) for w in warnings] == ["B", "D", "E", "F"]
    assert "level 'B' is unreachable: every firm it would match is already given level 'A'" in warnings[0]
    # D's interval (0.2, 1.5] lies in A's (-inf, 1] and C's (1, 2] together
    assert "already given one of the levels 'A', 'C'" in warnings[1]
    assert "its condition on x cannot hold for the input's declared range [0, 1]" in warnings[2]
    assert "level 'F' is unreachable: its condition on y cannot hold (at ratings.r.levels[5])" in warnings[3]
    assert run("validate", "--strict", str(path)).exit_code == 1
    # the bundled rulebooks and the test rulebook have none
    ok = run("validate", "--strict", str(BOOK), *[str(p) for p in sorted((ROOT / "rulebooks").glob("*.yaml"))])
    assert ok.exit_code == 0, ok.output


# -- 2. diff impact for every label set and category ------------------------------------------------


@pytest.fixture(scope="module")
def moved():
    from ruleengine.analysis.diff import run as diff_run

    return diff_run("huzhou", NEXT, SMALL)


def test_diff_impact_every_label_set_by_hand(moved):
    imp = moved["impact"]
    old = ruleengine.rate("huzhou", SMALL)
    k, lvl, inten, lab = old["k"], old["rating"], old["intensity"], old["carbon_label"]
    # the 2|3 edge moves 0.8 → 1.05: level 3 with k in (0.8, 1.05] becomes 2;
    # high_carbon_min 2 → 8: high-carbon with intensity in (2, 8] becomes medium-carbon
    by_hand_level = int(np.sum((lvl == "3") & (k > 0.8) & (k <= 1.05)))
    by_hand_label = int(np.sum((lab == "high-carbon") & (inten > 2) & (inten <= 8)))
    assert (by_hand_level, by_hand_label) == (8, 3)
    assert (imp["moved"], imp["up"], imp["down"]) == (8, 8, 0)
    r = imp["ratings"]
    assert (r["level"]["moved"], r["level"]["up"]) == (8, 8)
    assert (r["carbon_label"]["moved"], r["carbon_label"]["up"], r["carbon_label"]["down"]) == (3, 3, 0)
    m = r["carbon_label"]["matrix"]
    assert m["rows"] == ["low-carbon", "medium-carbon", "high-carbon", "unrated"]
    assert m["counts"][2][1] == 3  # high → medium


def test_diff_breakdowns_by_every_category_the_data_has(moved):
    imp = moved["impact"]
    old = ruleengine.rate("huzhou", SMALL)
    rows = list(csv.DictReader(SMALL.read_text(encoding="utf-8").splitlines()))
    movers = {
        (str(f), int(y))
        for f, y, lv, k in zip(old["firm_id"], old["year"], old["rating"], old["k"], strict=True)
        if lv == "3" and 0.8 < k <= 1.05
    }
    for key, col in (("size", "size"), ("city", "city"), ("division", "industry")):
        want: dict[str, int] = {}
        for row in rows:
            if (row["firm_id"], int(row["year"])) in movers:
                v = row[col][:2] if key == "division" else row[col]
                want[v] = want.get(v, 0) + 1
        assert {g: c["up"] for g, c in imp["by"][key].items()} == want, key
    assert "(none)" not in imp["by"]["size"]  # the bug of issue #19: Huzhou does not rate on size
    assert set(imp["by"]) >= {"division", "size", "city", "grid_region", "industry"}
    assert set(imp["ratings"]["carbon_label"]["by"]) == set(imp["by"])


def test_diff_breakdowns_in_every_format():
    text = run("diff", "huzhou", str(NEXT), "--data", str(SMALL)).output
    assert "level: 26 firm-years, 8 change (8 up, 0 down, 0 newly unrated, 0 newly rated)" in text
    assert "carbon_label: 26 firm-years, 3 change (3 up, 0 down, 0 newly unrated, 0 newly rated)" in text
    assert "  movers by size: large: 2 up; medium: 2 up; small: 4 up" in text
    assert "  movers by city: huzhou: 4 up; quzhou: 2 up; shenzhen: 2 up" in text
    md = run("diff", "huzhou", str(NEXT), "--data", str(SMALL), "--format", "markdown").output
    assert "### carbon_label" in md and "Movers by size: large: 2 up; medium: 2 up; small: 4 up." in md
    js = json.loads(run("diff", "huzhou", str(NEXT), "--data", str(SMALL), "--format", "json").output)
    assert js["impact"]["ratings"]["carbon_label"]["by"]["city"] == {"huzhou": {"up": 1}, "quzhou": {"up": 2}}


# -- 3. explain for people --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def g01():
    return explain("huzhou", SMALL, "G01", 2023)


def test_explain_first_screen_has_what_a_credit_officer_needs(g01):
    lines = trace_lines(g01)
    first = lines[: lines.index(next(x for x in lines if x.startswith("calculation:")))]
    text = "\n".join(first)
    assert len(first) <= 40
    assert first[0].startswith(f"G01 Cement One — 2023 — huzhou {ruleengine.load('huzhou').version}")
    assert first[1] == "industry 3011 水泥制造, division 30 非金属矿物制品业; city huzhou; size large"
    assert "decision: level 3, carbon_label high-carbon (rated)" in text
    assert "  level 3 because k = 1.038 is in (0.8, 1.2]" in text
    assert "    k = intensity / industry_intensity" in text
    assert "over industry 3011 (5 peers, at least 5)" in text
    assert "rate +0 bp; credit policy: standard terms" in text
    # G01 borrows 30,000 x 10^4 CNY; at +0 bp its interest does not change
    assert "this borrower: loan 30,000 (10k CNY) x +0 bp = +0.00 CNY interest a year" in text
    assert "to reach level 2 (k <= 0.8)" in text
    # 2022: 60,000 t coal, 48,000 MWh, 12,000 value added; 2023: 57,000, 45,600, 12,480
    assert "2022: rated; level 3 (unchanged), carbon_label high-carbon (unchanged)" in text
    assert "raw_coal_t 60000 → 57000 t; electricity_mwh 48000 → 45600 MWh; value_added_10k_cny 12000 → 12480" in (
        text.replace("\n      ", " ")
    )
    # small.csv has no crude_oil_t column: defaulted to 0, and said so
    assert "defaulted (column absent, the rulebook's default used): crude_oil_t, fuel_oil_t" in text
    assert "fallbacks: none" in text
    # the deciding numbers come before any zero fuel
    assert "coke_t" not in text


def test_explain_folds_zero_and_unused_and_all_shows_them(g01):
    folded = "\n".join(trace_lines(g01))
    full = "\n".join(trace_lines(g01, show_all=True))
    for hidden in ("coke_t = 0 t (input)", "raw_coal_ncv_gj_per_unit = missing GJ/t (input)"):
        assert hidden not in folded and hidden in full
    for shown in ("raw_coal_t = 57000 t (input)", "k = 1.038 (variable)", "industry_intensity = 10.2976"):
        assert shown in folded and shown in full
    assert re.search(r"calculation: \d+ of 99 values; folded", folded)
    assert "calculation: all 99 values" in full
    cli = run("explain", "huzhou", str(SMALL), "--firm", "G01", "--all").output
    assert "coke_t = 0 t (input)" in cli


def test_formulas_are_wrapped_never_cut(g01):
    lines = trace_lines(g01, show_all=True)
    long_tokens = [x for line in lines for x in line.split() if len(x) > WIDTH]
    assert all(len(line) <= WIDTH for line in lines if not any(t in line for t in long_tokens))
    joined = " ".join(" ".join(line.split()) for line in lines)
    for node in g01.nodes:
        if node.formula:
            assert " ".join(f"= {node.formula}".split()) in joined, node.name  # every character, in order
    assert any(len(n.formula) > WIDTH for n in g01.nodes)  # a formula that had to be wrapped


def test_explain_defaults_provenance_previous_and_lending_in_json_and_markdown(levels, tmp_path):
    l1, l2 = trace_of(levels, "L1"), trace_of(levels, "L2")
    # L2 2023 leaves green_mwh empty: the default 0 is recorded as such
    assert l2.data_quality["defaults"] == [{"input": "green_mwh", "why": "cell empty"}]
    assert l2.previous["year"] == 2022 and l2.previous["decisions"][0]["level"] == "B"
    assert l2.previous["changes"] == [{"name": "coal_t", "unit": "t", "old": 300.0, "new": 200.0}]
    # acquisition provenance (docs/acquire-meters.md columns) for L1's electricity
    assert l1.data_quality["provenance"] == {
        "electricity_mwh": {"source": "meters", "coverage": "0.97", "policy": "scale (coverage 0.97)"}
    }
    # 5,000 x 10^4 CNY at -40 bp: 5e7 x 0.004 = -200,000 CNY a year
    assert l1.lending == {"loan_amount_10k_cny": 5000.0, "rate_bp": -40.0, "annual_interest_change_cny": -200000.0}
    assert l1.identity["firm_name"] == "Level One" and l1.identity["industry_name_zh"] == "水泥制造"
    text = "\n".join(trace_lines(l1))
    assert "electricity_mwh came from source meters, coverage 0.97, policy scale (coverage 0.97)" in text
    assert "this borrower: loan 5,000 (10k CNY) x -40 bp = -200,000.00 CNY interest a year" in text
    md = run("explain", str(BOOK), str(FIRMS), "--firm", "L1", "--format", "markdown").output
    for section in (
        "## Decision",
        "## Why",
        "## Incentive and what it opens",
        "## What it would take",
        "## Last year",
        "## Data quality",
        "## Calculation",
    ):
        assert section in md
    assert "- electricity_mwh came from source meters, coverage 0.97, policy scale (coverage 0.97)" in md
    js = json.loads(run("explain", str(BOOK), str(FIRMS), "--firm", "L2", "--format", "json").output)
    assert js["data_quality"]["defaults"] == [{"input": "green_mwh", "why": "cell empty"}]
    assert js["identity"]["city"] == "testcity" and js["previous"]["year"] == 2022


@pytest.mark.parametrize(
    ("field", "path", "value"),
    [
        ("identity.firm_name", ("identity", "firm_name"), "Someone Else"),
        ("data_quality.defaults", ("data_quality", "defaults"), []),
        (
            "data_quality.provenance.electricity_mwh.coverage",
            ("data_quality", "provenance", "electricity_mwh", "coverage"),
            "1",
        ),
        ("previous.decisions[0].level", ("previous", "decisions", 0, "level"), "A"),
        ("lending.annual_interest_change_cny", ("lending", "annual_interest_change_cny"), -1.0),
        ("what_it_takes.better.cuts[0].direction", ("what_it_takes", "better", "cuts", 0, "direction"), "raise"),
    ],
)
def test_verify_recomputes_the_new_fields(tmp_path, field, path, value):
    firm = "L3" if path[0] == "what_it_takes" else ("L2" if path[0] in ("previous",) else "L1")
    if path[:2] == ("data_quality", "defaults"):
        firm = "L2"
    out = run("explain", str(BOOK), str(FIRMS), "--firm", firm, "--format", "json").output
    trace = json.loads(out)
    node = trace
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    from ruleengine.analysis.trace import digest

    trace["digest"] = digest(trace)  # a careful forger updates the digest: the recomputation still catches it
    f = tmp_path / "t.json"
    f.write_text(json.dumps(trace), encoding="utf-8")
    r = run("verify", str(f))
    assert r.exit_code == 1
    assert r.output.startswith(f"mismatch: {field}") or f"{field}" in r.output.splitlines()[0], r.output


def test_a_1_2_trace_still_verifies(levels):
    plan, res = levels
    data = trace_row(plan, res, 1).to_dict()
    old = {k: v for k, v in data.items() if k not in ("identity", "previous", "data_quality", "lending", "digest")}
    old["schema_version"] = "1.2"
    for side in ("better", "worse"):
        step = old["what_it_takes"].get(side)
        if step:
            step.pop("conditions"), step.pop("scores")
            for c in step["cuts"]:
                c.pop("direction")
    from ruleengine.analysis.trace import digest

    old["digest"] = digest(json.loads(json.dumps(old)))
    checked, problems = verify(json.loads(json.dumps(old)))
    assert problems == [] and checked > 50


# -- 4. the rate summary says what each level means for lending -------------------------------------


def test_rate_summary_incentive_in_full():
    out = run("rate", "huzhou", str(SMALL)).output
    assert "what each level means for lending" in out
    row4 = next(line for line in out.splitlines() if line.startswith("│ 4 ") and "bp" in line)
    cells = [c.strip() for c in row4.strip("│").split("│")]
    # level 4: 3 firm-years (small.csv), +0 bp, standard terms, the two services, the 10% subsidy
    assert cells == [
        "4",
        "3",
        "+0 bp",
        "standard terms",
        "free energy-saving assessment; carbon-reduction plan",
        "10%",
        "huzhou-seed",
    ]
    qz = run("rate", "quzhou", str(SMALL)).output
    red = next(line for line in qz.splitlines() if line.startswith("│ red ") and "credit" in line)
    assert "restricted from new credit" in red
    lv = run("rate", str(BOOK), str(FIRMS)).output
    d = next(line for line in lv.splitlines() if line.startswith("│ D ") and "credit" in line)
    assert [c.strip() for c in d.strip("│").split("│")] == [
        "D",
        "1",
        "+0 bp",
        "restricted from new credit",
        "energy audit",
        "5%",
        "test-assumption",
    ]


def test_continuous_pricing_shows_the_range_of_the_firms_own_rates():
    from ruleengine.render.text import incentive_rows

    res = ruleengine.rate("shenzhen", SMALL)
    rows = {r[0]: r for r in incentive_rows(res)}
    bp = np.asarray(res["incentive_rate_bp"], dtype=float)
    sel = bp[(res["grade"] == "B") & ~np.isnan(bp)]
    assert rows["B"][2] == f"{sel.min():+.1f} to {sel.max():+.1f} bp (loan_rate_change_bp)"
    assert rows["AAA"][1] == "0" and rows["AAA"][2] == "- (loan_rate_change_bp)"


# -- 5. errors never echo the file ------------------------------------------------------------------


def test_swapped_rate_arguments_give_a_short_located_message():
    r = run("rate", str(SMALL), "rulebooks/huzhou.yaml")
    assert r.exit_code == 1
    assert len(r.output) < 600, len(r.output)
    assert "small.csv:1:1: error: not a rulebook" in r.output
    assert "it looks like a data file: the rulebook comes first, then the data (ruleengine rate BOOK DATA)" in r.output
    second_line = SMALL.read_text(encoding="utf-8").splitlines()[1]
    assert second_line[:20] not in r.output  # no row of the data in the message
    r = run("explain", str(SMALL), str(SMALL), "--firm", "G01")
    assert r.exit_code == 1 and len(r.output) < 600


def test_a_schema_message_quotes_at_most_a_short_excerpt(tmp_path):
    book = tmp_path / "b.yaml"
    book.write_text(
        "id: b\ntitle: [" + ", ".join(f'"value {i}"' for i in range(2000)) + "]\nversion: 1.0.0\n", encoding="utf-8"
    )
    r = run("validate", str(book))
    assert r.exit_code == 1
    assert all(len(line) < 400 for line in r.output.splitlines()), max(map(len, r.output.splitlines()))
    assert "value 1999" not in r.output


def test_not_a_mapping_message_names_the_kind(tmp_path):
    f = tmp_path / "list.yaml"
    f.write_text("- a\n- b\n", encoding="utf-8")
    r = run("validate", str(f))
    assert r.exit_code == 1
    assert "not a rulebook: the file holds a list, not a YAML mapping of keys" in r.output
    assert "data file" not in r.output
    assert math.isfinite(len(r.output))


def test_rate_what_it_takes_columns_for_conditional_levels(tmp_path):
    out = tmp_path / "w.csv"
    r = run("rate", str(BOOK), str(FIRMS), "--what-it-takes", "-o", str(out))
    assert r.exit_code == 0, r.output
    rows = {(x["firm_id"], x["year"]): x for x in csv.DictReader(out.read_text(encoding="utf-8").splitlines())}
    got = {k: (v["better_level"], v["worse_level"]) for k, v in rows.items()}
    # the level listed just above; the first later level whose condition holds
    assert got == {
        ("L1", "2023"): ("", "B"),
        ("L2", "2022"): ("A", "C"),
        ("L2", "2023"): ("A", "C"),
        ("L3", "2023"): ("B", "D"),
        ("L4", "2023"): ("C", ""),
    }
    # L3: emissions 1500 → B needs <= 1000: cut 500 (1/3); L4: 3000 → C needs <= 2000: cut 1000;
    # L2 cannot reach A by emissions alone (A also needs a green share of 30%)
    assert float(rows[("L3", "2023")]["emissions_cut_to_better_tco2"]) == pytest.approx(500, rel=1e-6)
    assert float(rows[("L3", "2023")]["emissions_cut_to_better_pct"]) == pytest.approx(100 / 3, rel=1e-6)
    assert float(rows[("L4", "2023")]["emissions_cut_to_better_tco2"]) == pytest.approx(1000, rel=1e-6)
    assert rows[("L2", "2023")]["emissions_cut_to_better_tco2"] == ""
    assert rows[("L3", "2023")]["margin_to_better"] == ""


def test_change_report_has_the_breakdowns(tmp_path):
    pytest.importorskip("jinja2")
    out = tmp_path / "change.html"
    r = run("diff", "huzhou", str(NEXT), "--data", str(SMALL), "-o", str(out), "--lang", "en")
    assert r.exit_code == 0, r.output
    html = out.read_text(encoding="utf-8")
    assert "Moves by label set and category" in html
    assert "<h3>carbon_label: Firms that moved 3 (up 3, down 0)</h3>" in html
    assert "<td>size</td><td>large: 2 up; medium: 2 up; small: 4 up</td>" in html


def test_chunked_rate_summary_has_the_incentives_too(tmp_path):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    src = tmp_path / "small.parquet"
    pq.write_table(pacsv.read_csv(SMALL, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)), src)
    r = CliRunner().invoke(main, ["rate", "quzhou", str(src), "--chunk-rows", "10", "-o", str(tmp_path / "o.parquet")])
    assert r.exit_code == 0, r.output
    assert "what each colour means for lending" in r.output
    red = next(line for line in r.output.splitlines() if line.startswith("│ red ") and "credit" in line)
    assert "restricted from new credit" in red
    from ruleengine.render.text import level_terms

    rows = {x[0]: x for x in level_terms(ruleengine.load("shenzhen"), {"B": 3})}
    assert rows["B"][1:3] == ["3", "per firm (loan_rate_change_bp)"]


def test_firm_report_names_an_increase_as_such(tmp_path):
    pytest.importorskip("jinja2")
    out = tmp_path / "l3.html"
    r = run("report", str(BOOK), str(FIRMS), "--firm", "L3", "-o", str(out), "--lang", "en")
    assert r.exit_code == 0, r.output
    html = re.sub(r"<[^>]+>", " ", out.read_text(encoding="utf-8"))
    # L3 reaches B by raising value added by 500 (1,500 / 1,000 = 1.5 → 1.0)
    assert re.search(r"value added \(raise\)\s+1,000\.0\s+10k CNY\s+500\.0\s+10k CNY", html)
