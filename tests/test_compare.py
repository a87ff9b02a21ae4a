"""compare: the same firms under several methods, and why they disagree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ruleengine.analysis.compare import kendall_tau_b, run, spearman
from ruleengine.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "golden" / "portfolios" / "small.csv"


def test_rank_statistics_against_hand_values():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # one swapped neighbour pair: d^2 sum = 2, rho = 1 - 6*2/(5*24) = 0.9; 9 of 10 pairs concordant:
    # tau = (9 - 1) / 10 = 0.8
    b = np.array([1.0, 2.0, 4.0, 3.0, 5.0])
    assert spearman(a, b) == pytest.approx(0.9)
    assert kendall_tau_b(a, b) == pytest.approx(0.8)
    # ties: tau-b = (C - D) / sqrt((n0 - t_a)(n0 - t_b)); a=[1,1,2], b=[1,2,3]: pairs (0,1) tie in a,
    # (0,2) and (1,2) concordant: 2 / sqrt((3 - 1) * 3) = 0.8165
    assert kendall_tau_b(np.array([1.0, 1, 2]), np.array([1.0, 2, 3])) == pytest.approx(2 / np.sqrt(6))


def test_compare_names_the_boundary_bias_firms():
    result = run(["huzhou", "national"], SMALL, top=10)
    (pair,) = result["pairs"]
    diffs = {(d["firm_id"], d["year"]): d for d in pair["largest_differences"]}
    # G12 (logistics, mobile-heavy) and G03 (cement, process-heavy) are where Huzhou's boundary bites
    g12 = diffs[("G12", 2022)]
    assert g12["firm_name"] == "Logistics SME"
    assert g12["reason"].startswith("boundary: national counts mobile ")
    cement = [d for d in pair["largest_differences"] if d["firm_id"] in ("G01", "G02", "G03")]
    assert cement and all("process" in d["reason"] for d in cement if d["reason"].startswith("boundary"))
    assert any(d["reason"].startswith("boundary") and "process" in d["reason"] for d in cement)


def test_crosstab_through_the_national_crosswalk_adds_up():
    result = run(["huzhou", "quzhou"], SMALL)
    (pair,) = result["pairs"]
    assert result["crosswalk"]["scale"] == "national"
    counts = np.array(pair["crosstab"]["counts"])
    assert counts.sum() == result["firm_years"] == 26
    # huzhou's levels map one to one onto A-E: its row sums are its own distribution
    huzhou = dict(result["methods"][0]["distribution"])
    levels = pair["crosstab"]["levels"]
    assert counts[levels.index("A")].sum() == huzhou["1"]
    assert counts[levels.index("unrated")].sum() == huzhou["unrated"]


def test_compare_cli_outputs(tmp_path):
    r = CliRunner().invoke(main, ["compare", "huzhou", "quzhou", "national", "--data", str(SMALL), "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [m["id"] for m in data["methods"]] == ["huzhou", "quzhou", "national"]
    assert len(data["pairs"]) == 3
    md = (
        CliRunner().invoke(main, ["compare", "huzhou", "national", "--data", str(SMALL), "--format", "markdown"]).output
    )
    assert md.startswith("# Method comparison on 26 firm-years")
    assert "**G12 Logistics SME** 2022" in md
    one = CliRunner().invoke(main, ["compare", "huzhou", "--data", str(SMALL)])
    assert one.exit_code == 2 and "at least two rulebooks" in one.output
