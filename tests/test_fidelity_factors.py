"""Issue #13: factor vintages and the provincial option of the shared accounting library.

The bundled rulebooks test their own factors in their author tests (``ruleengine test``); this file
covers what no bundled rulebook selects: the provincial grid factor, declared in
rulebooks/lib/accounting.yaml as an option a rulebook turns on by overriding ``grid_factor``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import ruleengine
from ruleengine.cli import main

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "rulebooks" / "lib" / "accounting.yaml"

PROVINCIAL_BOOK = """\
id: provincial
title: A method on the provincial grid factor
version: 1.0.0
effective: 2021-01-01
imports: [lib/accounting]
sources:
  test: {title: test rulebook, status: assumed}
boundary: [scope1.stationary, scope2.electricity]
variables:
  grid_factor:
    override: true
    expr: grid_factor_provincial
    unit: tCO2/MWh
  grid_factor_vintage:
    override: true
    expr: grid_ef_provincial_vintage
    unit: "1"
    output: true
  scope1_tco2: {expr: stationary_co2_tco2, unit: tCO2}
  scope2_tco2: {expr: electricity_location_tco2, unit: tCO2}
  emissions_tco2: {expr: scope1_tco2 + scope2_tco2, unit: tCO2}
  energy_tce: {expr: fuels_tce + electricity_tce, unit: tce}
ratings:
  band:
    primary: true
    value: emissions_tco2
    closed: right
    better: lower
    bands:
      - {id: low, upper: 1000}
      - {id: high, lower: 1000}
"""


@pytest.fixture
def provincial(tmp_path):
    (tmp_path / "lib").mkdir()
    shutil.copy(LIB, tmp_path / "lib" / "accounting.yaml")
    book = tmp_path / "provincial.yaml"
    book.write_text(PROVINCIAL_BOOK, encoding="utf-8")
    return ruleengine.load(book)


def test_guangdong_uses_its_provincial_factor_not_the_south_region(provincial):
    rows = [
        {
            "firm_id": "G",
            "year": 2022,
            "industry": "3982",
            "grid_region": "south",
            "province": "guangdong",
            "electricity_mwh": 1000,
        },
        {"firm_id": "H", "year": 2022, "industry": "3982", "grid_region": "south", "electricity_mwh": 1000},
    ]
    res = ruleengine.rate(provincial, rows)
    # Guangdong 2022: 1000 MWh x 0.4403 = 440.3 tCO2 (the South region's 0.3869 would give 386.9, 13.8% less)
    assert res["scope2_tco2"][0] == pytest.approx(440.3, abs=1e-9)
    assert res["fallbacks"][0] == ""
    # no province: the national 2022 average 0.5366 -> 536.6, recorded as a fallback
    assert res["scope2_tco2"][1] == pytest.approx(536.6, abs=1e-9)
    assert res["fallbacks"][1] == "grid_ef_provincial: no key for this firm, used 'national'"


def test_provincial_2023_is_not_published_so_2022_is_used_and_flagged(provincial):
    rows = [{"firm_id": "Z", "year": 2023, "industry": "2614", "province": "zhejiang", "electricity_mwh": 1000}]
    res = ruleengine.rate(provincial, rows)
    # Zhejiang 2022 0.5153 (2023 provincial values not found): 515.3 tCO2, vintage 2022, a warning
    assert res["scope2_tco2"][0] == pytest.approx(515.3, abs=1e-9)
    assert res["grid_factor_vintage"][0] == 2022
    assert res["status"][0] == "rated"
    assert (
        "check grid_factor_of_data_year: no electricity CO2 factor is published for this data year"
        in (res["reasons"][0])
    )


def test_bundled_rulebooks_rate_2023_with_2023_factors_and_record_2024():
    rows = [
        {
            "firm_id": "A",
            "year": 2023,
            "industry": "3011",
            "grid_region": "east",
            "value_added_10k_cny": 100,
            "electricity_mwh": 100,
        },
        {
            "firm_id": "A",
            "year": 2024,
            "industry": "3011",
            "grid_region": "east",
            "value_added_10k_cny": 100,
            "electricity_mwh": 100,
        },
    ]
    for book in ("huzhou", "national"):
        res = ruleengine.rate(book, rows)
        # East 2023 0.5500 for both years; 2024 has no factor yet: vintage 2023, recorded
        assert res["grid_factor"].tolist() == [pytest.approx(0.55), pytest.approx(0.55)], book
        assert res["grid_factor_vintage"].tolist() == [2023, 2023], book
        assert res["reasons"][0] == "", book
        assert "grid_factor_of_data_year" in res["reasons"][1], book


def test_ets_series_is_kept_apart_and_used_by_no_bundled_rating():
    lib = yaml.safe_load(LIB.read_text(encoding="utf-8"))
    params = lib["parameters"]
    ets = {y: v for y, v in params["grid_ef_ets"]["values"].items()}
    stat = {y: v["national"] for y, v in params["grid_ef"]["values"].items()}
    assert sorted(str(y) for y in ets) == sorted(str(y) for y in stat)
    # the statistical national averages and the carbon-market factors differ in every year
    assert all(ets[y] != stat[y] for y in ets)
    assert lib["sources"][params["grid_ef_ets"]["source"]]["title"].startswith("Carbon-market (ETS)")
    for book in sorted((ROOT / "rulebooks").glob("*.yaml")):
        text = book.read_text(encoding="utf-8")
        assert "grid_ef_ets" not in text, book.name


def test_every_factor_vintage_has_a_vintage_year():
    lib = yaml.safe_load(LIB.read_text(encoding="utf-8"))
    params = lib["parameters"]
    for factor, vintage in (("grid_ef", "grid_ef_vintage"), ("grid_ef_provincial", "grid_ef_provincial_vintage")):
        dates = list(params[factor]["values"])
        assert list(params[vintage]["values"]) == dates
        # each entry's vintage is the year of its date: the factor OF that data year
        assert [params[vintage]["values"][d] for d in dates] == [int(str(d)[:4]) for d in dates]


def test_cli_test_runs_every_bundled_author_test():
    for book in ("huzhou", "quzhou", "shenzhen", "national"):
        result = CliRunner().invoke(main, ["test", book])
        assert result.exit_code == 0, result.output
        assert ", 0 failed" in result.output.splitlines()[-1], result.output
