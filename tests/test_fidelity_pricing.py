"""Issue #13: Shenzhen's continuous loan pricing (incentives.rate_bp_from) through rate, explain and diff."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ruleengine
from ruleengine.cli import main

ROOT = Path(__file__).resolve().parent.parent
SHENZHEN = ROOT / "rulebooks" / "shenzhen.yaml"
GENERATED = ROOT / "golden" / "portfolios" / "generated.csv"

ROWS = [
    # the worked example of the rulebook's author tests: reduction dimension 85.8276 (with position 0.25)
    {"firm_id": "W", "year": 2022, "industry": "3982", "grid_region": "south", "revenue_10k_cny": 4000,
     "employees": 200, "electricity_mwh": 1000, "natural_gas_10k_nm3": 1, "diesel_t": 2, "heat_gj": 200},
    {"firm_id": "W", "year": 2023, "industry": "3982", "grid_region": "south", "revenue_10k_cny": 4400,
     "employees": 200, "electricity_mwh": 950, "natural_gas_10k_nm3": 1, "diesel_t": 2, "heat_gj": 200},
]  # fmt: skip


def test_every_rated_firm_is_priced_by_the_formula():
    res = ruleengine.rate("shenzhen", GENERATED)
    rated = res["status"] == "rated"
    red = res["reduction_effect_dimension"][rated]
    # 1 bp per point above the base 60, at most 30 bp, never below 0: computed here by hand
    expected = -np.clip(red - 60.0, 0.0, 30.0)
    assert np.allclose(res["incentive_rate_bp"][rated], expected)
    assert np.isnan(res["incentive_rate_bp"][~rated]).all()
    # the cut really varies with the score (a per-grade table would give at most 9 values)
    assert len(np.unique(np.round(res["incentive_rate_bp"][rated], 6))) > 9


def test_explain_shows_the_formula_and_the_firms_own_rate(tmp_path):
    plan = ruleengine.load("shenzhen")
    trace = json.loads(ruleengine.explain(plan, ROWS, firm_id="W", year=2023).to_json())
    inc = trace["incentive"]
    # reduction dimension 85.8276 (author test) - base 60 = 25.8276 bp cut (below the 30 bp cap)
    assert inc["rate_bp"] == pytest.approx(-25.8276, abs=1e-4)
    assert inc["rate_bp_from"] == "loan_rate_change_bp"
    assert inc["rate_bp_formula"] == "0 - loan_rate_cut_bp"
    assert inc["credit_policy"] == "differentiated rate"
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace), encoding="utf-8")
    ok = CliRunner().invoke(main, ["verify", str(path)])
    assert ok.exit_code == 0, ok.output


def test_diff_of_a_bank_base_score_is_a_parameter_change_with_its_lending_effect(tmp_path):
    text = SHENZHEN.read_text(encoding="utf-8")
    old_base = "  bank_base_score:\n    value: 60\n"
    assert old_base in text
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "accounting.yaml").write_text(
        (ROOT / "rulebooks" / "lib" / "accounting.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    new = tmp_path / "shenzhen.yaml"
    new.write_text(
        text.replace(old_base, "  bank_base_score:\n    value: 50\n").replace("version: 3.0.0", "version: 3.1.0"),
        encoding="utf-8",
    )
    out = CliRunner().invoke(main, ["diff", str(SHENZHEN), str(new), "--data", str(GENERATED), "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert [e["name"] for e in data["edits"] if e["what"] != "metadata"] == ["parameters.bank_base_score.value"]
    # by hand: each rated firm's cut goes from clip(r - 60, 0, 30) to clip(r - 50, 0, 30)
    res = ruleengine.rate("shenzhen", GENERATED)
    rated = res["status"] == "rated"
    r = res["reduction_effect_dimension"][rated]
    change = -(np.clip(r - 50, 0, 30) - np.clip(r - 60, 0, 30))
    assert data["impact"]["lending"]["rate_bp_sum_change"] == pytest.approx(float(change.sum()), abs=1e-6)
    assert data["impact"]["moved"] == 0  # the grades do not move, only the prices


def test_rate_bp_from_must_name_a_variable_in_bp(tmp_path):
    text = SHENZHEN.read_text(encoding="utf-8")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "accounting.yaml").write_text(
        (ROOT / "rulebooks" / "lib" / "accounting.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    bad = tmp_path / "shenzhen.yaml"
    bad.write_text(text.replace("rate_bp_from: loan_rate_change_bp", "rate_bp_from: total_score"), encoding="utf-8")
    out = CliRunner().invoke(main, ["validate", str(bad)])
    assert out.exit_code == 1
    assert "'total_score' must be a variable in bp to price loans" in out.output
    bad.write_text(
        text.replace("rate_bp_from: loan_rate_change_bp", "rate_bp_from: loan_rate_chnage_bp"), encoding="utf-8"
    )
    out = CliRunner().invoke(main, ["validate", str(bad)])
    assert "unknown variable 'loan_rate_chnage_bp'" in out.output and "loan_rate_change_bp" in out.output
