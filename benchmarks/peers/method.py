"""The Huzhou method written out by hand (rulebooks/huzhou.yaml + rulebooks/lib/accounting.yaml):
the factors, bands and column names every peer implementation uses."""

from __future__ import annotations

import math

# -- the Huzhou method, written out by hand (rulebooks/huzhou.yaml + rulebooks/lib/accounting.yaml)

FUELS: tuple[tuple[str, str], ...] = (
    ("raw_coal", "raw_coal_t"),
    ("coke", "coke_t"),
    ("crude_oil", "crude_oil_t"),
    ("fuel_oil", "fuel_oil_t"),
    ("gasoline", "gasoline_t"),
    ("kerosene", "kerosene_t"),
    ("diesel", "diesel_t"),
    ("lpg", "lpg_t"),
    ("natural_gas", "natural_gas_10k_nm3"),
)
NCV = {
    "raw_coal": 20.908,
    "coke": 28.435,
    "crude_oil": 41.816,
    "fuel_oil": 41.816,
    "gasoline": 43.070,
    "kerosene": 43.070,
    "diesel": 42.652,
    "lpg": 50.179,
    "natural_gas": 389.31,
}
CARBON_CONTENT = {
    "raw_coal": 26.37,
    "coke": 29.5,
    "crude_oil": 20.1,
    "fuel_oil": 21.1,
    "gasoline": 18.9,
    "kerosene": 19.5,
    "diesel": 20.2,
    "lpg": 17.2,
    "natural_gas": 15.3,
}
OXIDATION = {
    "raw_coal": 0.94,
    "coke": 0.93,
    "crude_oil": 0.98,
    "fuel_oil": 0.98,
    "gasoline": 0.98,
    "kerosene": 0.98,
    "diesel": 0.98,
    "lpg": 0.98,
    "natural_gas": 0.99,
}
TJ_PER_GJ = 0.001
CO2_PER_C = 44 / 12
# grid factor by data year (rulebooks/lib/accounting.yaml grid_ef); later years keep the latest table
GRID_EF: dict[int, dict[str, float]] = {
    2021: {
        "national": 0.5568,
        "north": 0.7120,
        "northwest": 0.5951,
        "east": 0.5992,
        "northeast": 0.6012,
        "central": 0.5354,
        "south": 0.4326,
        "southwest": 0.2113,
    },
    2022: {
        "national": 0.5366,
        "north": 0.6776,
        "northwest": 0.5857,
        "east": 0.5617,
        "northeast": 0.5564,
        "central": 0.5395,
        "south": 0.3869,
        "southwest": 0.2268,
    },
    2023: {
        "national": 0.5306,
        "north": 0.6361,
        "northwest": 0.5543,
        "east": 0.5500,
        "northeast": 0.5122,
        "central": 0.5271,
        "south": 0.4042,
        "southwest": 0.2472,
    },
}
REGIONS = ("north", "northwest", "east", "northeast", "central", "south", "southwest")
PUBLISHED = {
    "13": 0.45,
    "14": 0.55,
    "15": 0.5,
    "17": 1.1,
    "18": 0.25,
    "19": 0.3,
    "22": 1.6,
    "26": 2.6,
    "27": 0.45,
    "28": 7.0,
    "29": 0.9,
    "30": 6.5,
    "31": 7.5,
    "32": 2.2,
    "33": 0.5,
    "34": 0.3,
    "35": 0.25,
    "36": 0.3,
    "38": 0.2,
    "39": 0.12,
}
INDUSTRIAL_AVERAGE = 1.2
MIN_PEERS = 5
BANDS = (0.6, 0.8, 1.2, 2.0)  # levels 1..5, intervals (lower, upper]

MEASURED = tuple(f"{f}_{p}" for f, _ in FUELS for p in ("ncv_gj_per_unit", "cc_tc_per_tj", "ox"))
NON_NEGATIVE = (
    *(q for _, q in FUELS),
    "electricity_mwh",
    "green_electricity_mwh",
    "onsite_renewable_mwh",
    "carbon_sink_tco2",
    *MEASURED,
)
NUMERIC = ("value_added_10k_cny", *NON_NEGATIVE)


def grid_factor_of(year: int, region: str) -> float:
    """Location-based grid factor in force in ``year`` for ``region`` (national fallback)."""
    in_force = [y for y in GRID_EF if y <= year]
    if not in_force:
        return math.nan
    table = GRID_EF[max(in_force)]
    return table.get(region, table["national"])
