"""The same firm under different boundaries: what Huzhou leaves out is exactly mobile + process CO2."""

from __future__ import annotations

import pytest

import ruleengine

# A cement firm with a vehicle fleet (no purchased heat, which Huzhou also leaves out).
FIRM = {
    "firm_id": "C1",
    "year": 2022,
    "industry": "3011",
    "grid_region": "east",
    "value_added_10k_cny": 5000,
    "raw_coal_t": 1000,
    "electricity_mwh": 2000,
    "vehicle_diesel_t": 400,
    "vehicle_gasoline_t": 50,
    "clinker_t": 20000,
}

# Hand computation with METHODOLOGY.md's defaults (quantity x NCV x carbon content x oxidation x 44/12):
DIESEL = 42.652 * 20.2 * 0.98 * 44 / 12 / 1000  # 3.09591 tCO2/t
GASOLINE = 43.070 * 18.9 * 0.98 * 44 / 12 / 1000  # 2.92506 tCO2/t
COAL = 20.908 * 26.37 * 0.94 * 44 / 12 / 1000  # 1.90030 tCO2/t
MOBILE = 400 * DIESEL + 50 * GASOLINE  # 1238.3639 + 146.2528 = 1384.6166 tCO2
PROCESS = 20000 * 0.52  # 10400 tCO2 of clinker
STATIONARY = 1000 * COAL  # 1900.2988 tCO2
ELECTRICITY = 2000 * 0.5617  # 1123.4 tCO2 (east grid, 2022)


def rate_one(book: str) -> dict:
    results = ruleengine.rate(book, [FIRM], overrides={"industry_intensity": 2.0})
    return results.row(0)


def test_hand_computed_factors_match_the_methodology_table():
    assert DIESEL == pytest.approx(3.0959, abs=5e-5)
    assert GASOLINE == pytest.approx(2.9251, abs=5e-5)
    assert COAL == pytest.approx(1.9003, abs=5e-5)


def test_huzhou_counts_less_than_national_by_exactly_mobile_plus_process():
    hz, nat = rate_one("huzhou"), rate_one("national")
    assert hz["emissions_tco2"] == pytest.approx(STATIONARY + ELECTRICITY, rel=1e-12)
    assert nat["emissions_tco2"] == pytest.approx(STATIONARY + ELECTRICITY + MOBILE + PROCESS, rel=1e-12)
    assert nat["emissions_tco2"] - hz["emissions_tco2"] == pytest.approx(MOBILE + PROCESS, rel=1e-12)
    assert nat["mobile_co2_tco2"] == pytest.approx(MOBILE, rel=1e-12)
    assert nat["process_co2_tco2"] == pytest.approx(PROCESS, rel=1e-12)
    # Scope 2 is counted the same way in both, so the whole difference sits in Scope 1
    assert nat["scope2_tco2"] == hz["scope2_tco2"]


def test_boundary_bias_moves_the_rating():
    # With the benchmark held at 2.0: Huzhou L = 3023.70 / 5000 = 0.6047, K = 0.3024 -> level 1;
    # national L = 14808.32 / 5000 = 2.9617, K = 1.4808 -> D.
    assert rate_one("huzhou")["rating"] == "1"
    assert rate_one("national")["rating"] == "D"


def test_a_rulebook_cannot_count_outside_its_boundary(tmp_path):
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "rulebooks" / "huzhou.yaml").read_text(encoding="utf-8")
    text = text.replace("    expr: stationary_co2_tco2\n", "    expr: stationary_co2_tco2 + mobile_co2_tco2\n")
    book = tmp_path / "huzhou.yaml"
    book.write_text(text, encoding="utf-8")
    with pytest.raises(ruleengine.RulebookError) as info:
        ruleengine.load(book)
    (err,) = info.value.errors
    assert err.message == (
        "'mobile_co2_tco2' counts scope1.mobile emissions into the totals, but the rulebook's "
        "boundary does not include scope1.mobile (boundary: scope1.stationary, scope2.electricity)"
    )
    assert err.location.file.endswith("lib/accounting.yaml")


def test_a_bad_cell_outside_the_boundary_does_not_unrate_the_firm():
    """Huzhou counts neither vehicle fuel nor clinker: a typo in those cells is no reason to leave
    the firm unrated there (their columns are not even read), while the national draft, which
    counts both, reports each bad cell and leaves the row unrated."""
    bad = {**FIRM, "clinker_t": "20,000 t", "vehicle_diesel_t": -400}
    huzhou = ruleengine.rate("huzhou", [bad], overrides={"industry_intensity": 2.0})
    assert huzhou.row(0)["status"] == "rated" and huzhou.row(0)["reasons"] == ""
    assert huzhou.issues == []
    assert huzhou.row(0)["emissions_tco2"] == pytest.approx(STATIONARY + ELECTRICITY, rel=1e-12)
    assert "clinker_t" not in ruleengine.load("huzhou").inputs
    national = ruleengine.rate("national", [bad], overrides={"industry_intensity": 2.0})
    assert national.row(0)["status"] == "unrated"
    assert national.row(0)["reasons"] == (
        "vehicle_diesel_t: -400 is below the minimum 0; clinker_t: '20,000 t' is not a number"
    )
