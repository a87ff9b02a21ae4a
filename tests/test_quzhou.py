"""The Quzhou rulebook: it validates cleanly, its author tests pass, every reconstructed value is
marked as an assumption, and a synthetic portfolio gets a plausible spread of colours."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

import ruleengine
from ruleengine.analysis.authortests import run_cases
from ruleengine.io import sample

BOOK = Path(__file__).resolve().parent.parent / "rulebooks" / "quzhou.yaml"
COLOURS = ("deep-green", "light-green", "yellow", "red")


@pytest.fixture(scope="module")
def plan():
    return ruleengine.load(BOOK)


@pytest.fixture(scope="module")
def doc():
    return yaml.safe_load(BOOK.read_text(encoding="utf-8"))


def test_validates_without_warnings(plan):
    assert plan.warnings == []


def test_author_tests_pass(plan):
    outcomes = run_cases(plan)
    assert len(outcomes) >= 12
    failed = {o.name: o.diff for o in outcomes if not o.ok}
    assert not failed


def test_boundary_has_no_mobile_and_no_process(doc):
    assert doc["boundary"] == ["scope1.stationary", "scope2.electricity", "scope2.heat"]


def test_indicator_denominators_are_required(doc):
    for name in ("output_value_10k_cny", "value_added_10k_cny", "tax_10k_cny"):
        spec = doc["inputs"][name]
        assert spec["required"] is True and spec["override"] is True, name


def test_every_reconstructed_value_is_marked_assumed(doc):
    """Scales, benchmarks, weights and parameters resting on our reconstruction say so."""
    items = [
        *(("scales", k, v) for k, v in doc["scales"].items()),
        *(("benchmarks", k, v) for k, v in doc["benchmarks"].items()),
        *(("parameters", k, v) for k, v in doc["parameters"].items()),
        *(("variables", k, v) for k, v in doc["variables"].items() if "weights" in v),
    ]
    assert items
    for section, name, spec in items:
        assert spec["source"] == "ruleengine-assumption", (section, name)
        assert spec.get("status") == "assumed", (section, name)
        assert spec.get("description") or spec.get("note"), (section, name)


def test_composite_weights_are_50_20_30(doc):
    assert doc["variables"]["composite_score"]["weights"] == {
        "advancement_score": 0.5,
        "regional_score": 0.2,
        "decline_score": 0.3,
    }


def test_colour_spread_is_plausible(plan):
    cols = sample.generate(firms=600, years=[2022, 2023], seed=11)
    res = ruleengine.rate(plan, cols)
    inside = res["jurisdiction"] == "inside"  # the sample's Quzhou firms (3308…); the others are outside
    assert (res["status"][~inside] == "unrated").all()
    counts = Counter(res["rating"][inside].tolist())
    n = int(inside.sum())
    assert counts.get("", 0) == 0
    for colour in COLOURS:
        share = counts[colour] / n
        assert 0.05 <= share <= 0.5, (colour, share, counts)


def test_second_year_uses_the_decline_first_year_the_neutral_score(plan):
    cols = sample.generate(firms=50, years=[2022, 2023], seed=3)
    res = ruleengine.rate(plan, cols)
    first = res["year"] == 2022
    assert (res["decline_score"][first] == 50).all()
    assert all("intensity_va_prev: no previous year" in f for f in res["fallbacks"][first])
    assert not any("intensity_va_prev" in f for f in res["fallbacks"][~first])
