"""The Shenzhen rulebook: clean compile, its author tests, citation discipline, and behaviour on a
synthetic Shenzhen portfolio (grade spread, one firm alone == the same firm in the batch)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

import ruleengine
from ruleengine.analysis.authortests import run_cases
from ruleengine.io import sample

BOOK = Path(__file__).resolve().parent.parent / "rulebooks" / "shenzhen.yaml"
GRADES = ["AAA", "AA", "A", "BBB", "BB", "B", "CCC", "CC", "C"]


@pytest.fixture(scope="module")
def plan() -> ruleengine.Plan:
    return ruleengine.load(BOOK)


@pytest.fixture(scope="module")
def shenzhen() -> dict[str, np.ndarray]:
    cols = sample.generate(400, [2022, 2023], seed=7)
    keep = cols["city"] == "shenzhen"
    return {k: v[keep] for k, v in cols.items()}


def test_compiles_without_warnings(plan):
    assert plan.warnings == []
    assert plan.primary == "grade"
    assert list(plan.ratings["grade"].ids) == list(reversed(GRADES))  # ascending score, C first
    assert set(plan.boundary) == {"scope1.stationary", "scope2.electricity", "scope2.heat"}


def test_author_cases_pass(plan):
    outcomes = run_cases(plan)
    assert len(outcomes) >= 12
    failed = [(o.name, o.diff) for o in outcomes if not o.ok]
    assert not failed


def test_every_assumption_cites_the_assumption_source():
    doc = yaml.safe_load(BOOK.read_text(encoding="utf-8"))
    sources = doc["sources"]
    assert sources["ruleengine-assumption"]["status"] == "assumed"
    sections = ("parameters", "scales", "variables", "benchmarks")
    items = [(f"{section}.{name}", spec) for section in sections for name, spec in (doc.get(section) or {}).items()]
    items += [(f"incentives.{lid}", spec) for lid, spec in doc["incentives"]["levels"].items()]
    items += [(f"ratings.{name}", spec) for name, spec in doc["ratings"].items()]
    for where, spec in items:
        if where.startswith("variables.") and "source" not in spec:
            continue  # plumbing (sums of cited pieces), not a number of its own
        assert spec.get("source") in sources, where
        status = spec.get("status") or sources[spec["source"]]["status"]
        if status == "assumed":
            assert spec["source"] == "ruleengine-assumption", where
    # every scalar parameter, scale and benchmark of this rulebook is an assumption with a rationale,
    # except the published loan-pricing terms (1 bp per point, the 30 bp maximum), which cite their source
    for section in ("parameters", "scales", "benchmarks"):
        for name, spec in doc[section].items():
            if spec.get("source") in ("shenzhen-pricing", "shenzhen-seed"):
                assert sources[spec["source"]]["status"] == "secondary" and spec.get("description"), name
                continue
            assert spec["status"] == "assumed" and spec.get("description"), f"{section}.{name}"


def test_grades_spread_on_a_synthetic_shenzhen_portfolio(plan, shenzhen):
    results = ruleengine.rate(plan, shenzhen)
    grades = Counter(results.columns["rating"].tolist())
    assert grades.get("", 0) == 0  # clean data: every firm-year rated
    used = [g for g in GRADES if grades.get(g)]
    assert len(used) >= 6, grades
    assert max(grades.values()) < 0.35 * len(results), grades
    assert grades["AAA"] + grades["AA"] + grades["A"] > 0  # the discounts are reachable


def test_one_firm_alone_gets_its_batch_numbers(plan, shenzhen):
    batch = ruleengine.rate(plan, shenzhen)
    firm = shenzhen["firm_id"][0]
    mine = shenzhen["firm_id"] == firm
    own_rows = {k: v[mine] for k, v in shenzhen.items()}
    alone = ruleengine.rate(plan, own_rows, benchmarks=batch.tables)
    rows = batch.find(firm)
    for col in ("total_score", "industry_position", "emission_reduction_rate"):
        np.testing.assert_allclose(alone.columns[col], batch.columns[col][rows], rtol=1e-12)
    assert alone.columns["rating"].tolist() == batch.columns["rating"][rows].tolist()
