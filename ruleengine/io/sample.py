"""Synthetic firm-year portfolios for demos, tests and benchmarks.

``generate`` draws a seeded, realistic panel that follows the data contract (DATA.md) column for
column and unit for unit; ``write`` stores it as CSV, JSON, JSON Lines or Parquet.  Everything
numeric is drawn with whole-array numpy operations, so a million firm-years take seconds::

    from ruleengine import sample
    cols = sample.generate(firms=300, years=[2022, 2023], seed=2026, messy=0.02)
    sample.write(cols, "firms.csv")

How a portfolio is made
    Each firm gets a city (Huzhou, Quzhou, Shenzhen), a grid region consistent with it (a few
    plants sit on another grid), a GB/T 4754-2017 industry class drawn from a per-city mix (cement,
    steel, chemicals, textiles, paper and glass next to light industry and machinery: 31 classes,
    several of them rare so that benchmark fallbacks happen), a size class (mostly SMEs) with
    headcount and revenue inside the class bounds, and an industry-typical carbon intensity
    (tCO2 per 10^4 CNY of value added, lognormal around the industry median).  Its CO2 is split
    over the industry's energy carriers and turned back into physical quantities with the default
    factors of METHODOLOGY.md, so an engine recomputing CO2 lands near the drawn intensity.
    Every firm reports every requested year; value added moves -5%..+10% and energy use
    -8%..+5% a year (each carrier within a few percent of that).  Cement kilns report clinker,
    steel and glass plants carbonates, some firms vehicle fuels, certified green power (never
    more than the electricity bought), rooftop solar, purchased heat, measured fuel properties
    and a loan balance.

Defects (``messy``)
    A fraction ``messy`` of the rows gets exactly one defect each, in equal shares: a blank
    ``value_added_10k_cny``, a blank ``industry``, a negative energy quantity, a non-numeric cell
    in a numeric column (which turns that column into text, as it would be in a CSV), green power
    above the electricity bought, and a duplicate (firm_id, year) row inserted right after the
    original.  Defects come from their own random stream: the clean values of a portfolio do not
    depend on ``messy``.

Missing numbers are NaN, missing text is ``""``; ``write`` stores both as empty cells (CSV) or
null (JSON, Parquet).  Same arguments → identical columns and byte-identical files.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import DATA_COLUMNS

__all__ = ["COLUMNS", "DEFECTS", "generate", "main", "write"]

# -- the data contract --------------------------------------------------------------------------

_STATIONARY = ("raw_coal", "coke", "crude_oil", "fuel_oil", "gasoline", "kerosene", "diesel", "lpg")
_MEASURED = (
    "raw_coal_ncv_gj_per_unit",
    "raw_coal_cc_tc_per_tj",
    "raw_coal_ox",
    "coke_ncv_gj_per_unit",
    "natural_gas_ncv_gj_per_unit",
)

#: The generated columns, in DATA.md order (``loan_amount_10k_cny`` and the measured-factor
#: columns last).
COLUMNS: tuple[str, ...] = (*DATA_COLUMNS, *_MEASURED)

#: Defect kinds that ``messy`` injects, one per affected row, assigned in this rotation.
DEFECTS: tuple[str, ...] = (
    "blank_value_added",
    "blank_industry",
    "negative_quantity",
    "non_numeric",
    "green_exceeds_electricity",
    "duplicate_firm_year",
)

# Decimals kept per column: 3 for physical quantities, 2 for money, factor-specific for measured
# properties.  Rounding happens in ``generate`` so in-memory columns equal what a file holds.
_DECIMALS: dict[str, int] = {
    **{c: 3 for c in COLUMNS if c.endswith(("_t", "_mwh", "_gj", "_nm3"))},
    **{c: 2 for c in COLUMNS if c.endswith("_10k_cny")},
    "raw_coal_ncv_gj_per_unit": 3,
    "raw_coal_cc_tc_per_tj": 2,
    "raw_coal_ox": 3,
    "coke_ncv_gj_per_unit": 3,
    "natural_gas_ncv_gj_per_unit": 2,
}
_DECIMALS["loan_amount_10k_cny"] = 0  # loans are granted in whole 10^4 CNY

# -- cities, regions, sizes ---------------------------------------------------------------------

_CITIES = ("huzhou", "quzhou", "shenzhen")
_CITY_SHARE = (0.45, 0.25, 0.30)
_CITY_TITLE = ("Huzhou", "Quzhou", "Shenzhen")
# Unified social credit code (GB 32100-2015): "9" (registered with market regulation) "1"
# (enterprise), the 6-digit administrative division of the registering city (GB/T 2260), a 9-digit
# organisation code and the check character computed from the first 17.
_CITY_USCC_PREFIX = ("91330500", "91330800", "91440300")


def _uscc_check_chars(city: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """The GB 32100-2015 check character of ``_CITY_USCC_PREFIX[city] + digits`` (an (n, 9) array
    of digit characters), vectorised: ``31 - (Σ a_i·W_i mod 31)``, 31 written as 0."""
    from .identifiers import USCC_ALPHABET, USCC_WEIGHTS

    weights = np.asarray(USCC_WEIGHTS, dtype=np.int64)
    prefix = np.array([[USCC_ALPHABET.index(c) for c in p] for p in _CITY_USCC_PREFIX], dtype=np.int64)
    total = prefix[city] @ weights[:8] + digits.astype(np.int64) @ weights[8:]
    alphabet = np.array(list(USCC_ALPHABET), dtype=object)
    return alphabet[(31 - total % 31) % 31]


_REGIONS = ("north", "northwest", "east", "northeast", "central", "south", "southwest")
_CITY_REGION = (_REGIONS.index("east"), _REGIONS.index("east"), _REGIONS.index("south"))
_OTHER_GRID_SHARE = 0.03  # plants registered in the city but connected to another regional grid

_SIZES = ("large", "medium", "small", "micro")
_SIZE_SHARE_LIGHT = (0.02, 0.10, 0.50, 0.38)
_SIZE_SHARE_HEAVY = (0.10, 0.30, 0.45, 0.15)
# NBS size classes for industry (employees, revenue in 10^4 CNY): lower and upper bounds drawn from.
_EMPLOYEES = ((1000, 8000), (300, 1000), (20, 300), (3, 20))
_REVENUE = ((40000, 400000), (2000, 40000), (300, 2000), (30, 300))
_SIZE_INEFFICIENCY = (0.9, 1.0, 1.1, 1.25)  # smaller plants burn more per unit of value added
_GREEN_BUYER = (0.40, 0.25, 0.12, 0.06)  # share of firms buying certified green power, by size
_ROOFTOP_PV = (0.30, 0.20, 0.08, 0.03)  # share of firms with own zero-carbon generation, by size

# -- energy carriers ----------------------------------------------------------------------------

# tCO2 per physical unit with the default factors of METHODOLOGY.md §1 (per t, per 10^4 Nm3, per
# MWh, per GJ).  Electricity uses one national-average conversion so that physical consumption
# does not depend on the grid the firm happens to be on.
_CARRIERS = ("raw_coal", "coke", "fuel_oil", "gasoline", "diesel", "lpg", "natural_gas", "electricity", "heat")
_CARRIER_COLUMN = (
    "raw_coal_t",
    "coke_t",
    "fuel_oil_t",
    "gasoline_t",
    "diesel_t",
    "lpg_t",
    "natural_gas_10k_nm3",
    "electricity_mwh",
    "heat_gj",
)
_TCO2_PER_UNIT = np.array([1.9003, 2.8604, 3.1705, 2.9251, 3.0959, 3.1013, 21.622, 0.55, 0.11])

# Energy profiles: carrier → (typical share of the firm's CO2, probability that a firm uses it).
# Electricity is used by every firm.
_PROFILES: dict[str, dict[str, tuple[float, float]]] = {
    "cement": {"raw_coal": (0.72, 0.75), "electricity": (0.24, 1), "diesel": (0.02, 0.5), "fuel_oil": (0.02, 0.2)},
    "cement_products": {"electricity": (0.6, 1), "diesel": (0.3, 0.7), "natural_gas": (0.1, 0.3)},
    "ironmaking": {"coke": (0.55, 1), "raw_coal": (0.2, 0.8), "electricity": (0.2, 1), "natural_gas": (0.05, 0.3)},
    "steelmaking": {"electricity": (0.45, 1), "coke": (0.25, 0.6), "natural_gas": (0.15, 0.6), "raw_coal": (0.15, 0.4)},
    "rolling": {"natural_gas": (0.4, 0.8), "electricity": (0.5, 1), "raw_coal": (0.1, 0.2), "fuel_oil": (0.05, 0.1)},
    "chemicals": {
        "natural_gas": (0.35, 0.8),
        "raw_coal": (0.3, 0.5),
        "electricity": (0.3, 1),
        "heat": (0.15, 0.4),
        "fuel_oil": (0.03, 0.15),
        "lpg": (0.02, 0.1),
    },
    "fine_chemicals": {"electricity": (0.5, 1), "natural_gas": (0.25, 0.7), "heat": (0.25, 0.5), "lpg": (0.02, 0.1)},
    "spinning": {"electricity": (0.8, 1), "natural_gas": (0.1, 0.5), "heat": (0.1, 0.3), "lpg": (0.02, 0.1)},
    "dyeing": {"heat": (0.35, 0.7), "natural_gas": (0.25, 0.7), "raw_coal": (0.1, 0.2), "electricity": (0.3, 1)},
    "pulp": {"raw_coal": (0.45, 0.6), "electricity": (0.3, 1), "heat": (0.2, 0.4), "natural_gas": (0.05, 0.4)},
    "glass": {"natural_gas": (0.6, 0.9), "fuel_oil": (0.15, 0.3), "electricity": (0.25, 1)},
    "food": {"electricity": (0.6, 1), "raw_coal": (0.2, 0.15), "natural_gas": (0.2, 0.5), "diesel": (0.03, 0.3)},
    "metalwork": {"electricity": (0.75, 1), "natural_gas": (0.2, 0.6), "lpg": (0.03, 0.2), "diesel": (0.03, 0.3)},
    "light": {
        "electricity": (0.85, 1),
        "natural_gas": (0.1, 0.4),
        "lpg": (0.03, 0.2),
        "diesel": (0.03, 0.3),
        "gasoline": (0.01, 0.03),
    },
}


@dataclass(frozen=True)
class _Industry:
    code: str  # GB/T 4754-2017 class
    noun: str  # for firm names
    intensity: float  # median tCO2 per 10^4 CNY of value added (gross, energy use)
    va_ratio: float  # value added / gross output
    profile: str
    heavy: bool  # hard to abate: larger plants, more trucks
    weights: tuple[float, float, float]  # relative frequency in Huzhou, Quzhou, Shenzhen


_INDUSTRIES: tuple[_Industry, ...] = (
    _Industry("1311", "Grain", 0.35, 0.18, "food", False, (1.5, 2.0, 0.3)),
    _Industry("1711", "Cotton Spinning", 0.9, 0.20, "spinning", False, (6.0, 2.0, 0.5)),
    _Industry("1713", "Printing and Dyeing", 1.4, 0.22, "dyeing", False, (4.0, 0.8, 0.3)),
    _Industry("1819", "Garments", 0.15, 0.25, "light", False, (3.0, 1.0, 4.0)),
    _Industry("1951", "Footwear", 0.15, 0.24, "light", False, (0.8, 0.5, 1.5)),
    _Industry("2110", "Furniture", 0.3, 0.24, "light", False, (5.0, 1.0, 1.5)),
    _Industry("2211", "Pulp", 1.8, 0.22, "pulp", True, (0.6, 1.5, 0.0)),
    _Industry("2231", "Packaging", 0.4, 0.22, "light", False, (1.5, 1.2, 1.5)),
    _Industry("2611", "Inorganic Acids", 3.0, 0.22, "chemicals", True, (0.3, 1.5, 0.05)),
    _Industry("2614", "Organic Chemicals", 2.5, 0.20, "chemicals", True, (0.8, 3.0, 0.1)),
    _Industry("2641", "Coatings", 0.6, 0.25, "fine_chemicals", False, (0.8, 1.0, 0.6)),
    _Industry("2710", "Pharmaceutical", 0.8, 0.35, "fine_chemicals", False, (0.8, 1.0, 0.8)),
    _Industry("2822", "Polyester Fibre", 1.3, 0.15, "spinning", True, (1.5, 0.3, 0.0)),
    _Industry("2927", "Plastic Products", 0.4, 0.22, "light", False, (2.0, 1.5, 4.0)),
    _Industry("2929", "Plastic Parts", 0.4, 0.22, "light", False, (1.5, 1.0, 3.0)),
    _Industry("3011", "Cement", 8.0, 0.28, "cement", True, (1.2, 1.0, 0.05)),
    _Industry("3021", "Concrete Products", 0.8, 0.22, "cement_products", False, (1.5, 1.0, 0.8)),
    _Industry("3041", "Flat Glass", 4.0, 0.25, "glass", True, (0.3, 0.2, 0.05)),
    _Industry("3110", "Ironmaking", 7.5, 0.18, "ironmaking", True, (0.05, 0.15, 0.0)),
    _Industry("3120", "Steelmaking", 5.5, 0.18, "steelmaking", True, (0.3, 0.5, 0.02)),
    _Industry("3130", "Steel Rolling", 1.8, 0.16, "rolling", True, (1.0, 0.8, 0.2)),
    _Industry("3311", "Steel Structures", 0.3, 0.22, "metalwork", False, (2.0, 1.0, 1.0)),
    _Industry("3411", "Boilers", 0.3, 0.24, "metalwork", False, (0.8, 0.5, 0.3)),
    _Industry("3484", "Machine Parts", 0.35, 0.25, "metalwork", False, (3.0, 1.2, 1.5)),
    _Industry("3670", "Auto Parts", 0.25, 0.22, "metalwork", False, (2.5, 1.5, 3.0)),
    _Industry("3813", "Micro Motors", 0.2, 0.24, "metalwork", False, (3.0, 0.5, 2.5)),
    _Industry("3831", "Wire and Cable", 0.2, 0.15, "metalwork", False, (1.5, 0.8, 1.5)),
    _Industry("3911", "Computers", 0.1, 0.15, "light", False, (0.2, 0.1, 3.0)),
    _Industry("3971", "Electronic Components", 0.15, 0.22, "light", False, (0.8, 0.5, 5.0)),
    _Industry("3981", "Passive Components", 0.15, 0.22, "light", False, (0.6, 0.3, 3.0)),
    _Industry("3982", "Circuit Boards", 0.25, 0.22, "light", False, (0.5, 0.3, 3.5)),
)

_NAME_STEMS = (
    "Heng",
    "Xin",
    "Hua",
    "Tian",
    "Jin",
    "Rui",
    "Long",
    "Feng",
    "Sheng",
    "Yong",
    "Tai",
    "Kai",
    "Hong",
    "Da",
    "Mei",
    "Chang",
    "Guang",
    "Ming",
    "Li",
    "Bao",
    "Fu",
    "Jia",
    "Hai",
    "Shun",
    "Wei",
    "Xing",
    "Yuan",
    "Zhong",
    "An",
    "Cheng",
    "De",
    "Run",
)

# Measured fuel properties: column → (fuel column that must be used, share of its users who
# measure, mean, standard deviation, lower clip, upper clip).
_MEASURED_SPEC: dict[str, tuple[str, float, float, float, float, float]] = {
    "raw_coal_ncv_gj_per_unit": ("raw_coal_t", 0.08, 20.908, 1.2, 16.0, 26.0),
    "raw_coal_cc_tc_per_tj": ("raw_coal_t", 0.04, 26.37, 0.8, 24.0, 29.0),
    "raw_coal_ox": ("raw_coal_t", 0.04, 0.94, 0.015, 0.88, 0.99),
    "coke_ncv_gj_per_unit": ("coke_t", 0.08, 28.435, 0.6, 26.5, 30.5),
    "natural_gas_ncv_gj_per_unit": ("natural_gas_10k_nm3", 0.03, 389.31, 6.0, 370.0, 410.0),
}

_NON_NUMERIC = ("n/a?", "12,5", "1 234", "see note")
_NON_NUMERIC_COLUMNS = ("value_added_10k_cny", "electricity_mwh", "natural_gas_10k_nm3", "raw_coal_t")
_NEGATIVE_COLUMNS = ("electricity_mwh", "raw_coal_t", "natural_gas_10k_nm3", "diesel_t", "coke_t", "lpg_t")


# -- generation ---------------------------------------------------------------------------------


def generate(firms: int, years: Sequence[int], seed: int = 0, messy: float = 0.0) -> dict[str, np.ndarray]:
    """A synthetic firm-year panel: ``firms`` firms, each reporting every year in ``years``.

    Returns the columns of :data:`COLUMNS` in that order: ``year`` and ``employees`` as int64,
    text as object arrays (``""`` = missing), everything else float64 (NaN = not reported).  Rows
    are firm-major (each firm's years in the order given).  ``messy`` in [0, 1] is the fraction
    of rows that get one defect each (see the module docstring); a column hit by a non-numeric
    cell comes back as an object array of text.
    """
    if firms < 0 or int(firms) != firms:
        raise ValueError(f"firms must be a non-negative whole number, got {firms!r}")
    year_list = [int(y) for y in years]
    if not year_list:
        raise ValueError("years must name at least one year")
    if len(set(year_list)) != len(year_list):
        raise ValueError(f"years must be distinct, got {year_list}")
    if not 0.0 <= messy <= 1.0:
        raise ValueError(f"messy must be between 0 and 1, got {messy!r}")
    clean_seq, defect_seq = np.random.SeedSequence(seed).spawn(2)
    cols = _clean_panel(int(firms), year_list, np.random.default_rng(clean_seq))
    if messy > 0 and int(firms) > 0:
        cols = _inject_defects(cols, messy, np.random.default_rng(defect_seq))
    return cols


def _pick(rng: np.random.Generator, shares: np.ndarray, n: int) -> np.ndarray:
    """``n`` category indices drawn with probabilities ``shares`` (a matrix: one row per draw)."""
    u = rng.random(n)
    cum = np.cumsum(shares, axis=-1)
    cum = cum / cum[..., -1:]
    if cum.ndim == 1:
        return np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)
    return np.minimum((u[:, None] >= cum).sum(axis=1), cum.shape[1] - 1)


def _log_between(lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Log-linear interpolation: ``u`` = 0 → ``lo``, 1 → ``hi``."""
    return lo * (hi / lo) ** u


def _clean_panel(n_firms: int, years: list[int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    nf, ny = n_firms, len(years)
    ind_table = _INDUSTRIES

    # Per firm: city, grid, industry, size, headcount, revenue.
    city = _pick(rng, np.array(_CITY_SHARE), nf)
    weights = np.array([ind.weights for ind in ind_table]).T  # city × industry
    industry = _pick(rng, weights[city], nf)
    region = np.array(_CITY_REGION)[city]
    elsewhere = rng.random(nf) < _OTHER_GRID_SHARE
    shift = rng.integers(1, len(_REGIONS), nf)  # any region but the city's own
    region = np.where(elsewhere, (region + shift) % len(_REGIONS), region)

    heavy = np.array([ind.heavy for ind in ind_table])[industry]
    size_shares = np.where(heavy[:, None], _SIZE_SHARE_HEAVY, _SIZE_SHARE_LIGHT)
    size = _pick(rng, size_shares, nf)
    scale = rng.random(nf) ** 1.6  # skewed toward the small end of each size class
    emp_lo, emp_hi = (np.array(b, dtype=float)[size] for b in zip(*_EMPLOYEES, strict=True))
    rev_lo, rev_hi = (np.array(b, dtype=float)[size] for b in zip(*_REVENUE, strict=True))
    employees0 = _log_between(emp_lo, emp_hi, np.clip(scale + rng.normal(0, 0.12, nf), 0, 1))
    revenue0 = _log_between(rev_lo, rev_hi, np.clip(scale + rng.normal(0, 0.12, nf), 0, 1))

    va_ratio = np.array([ind.va_ratio for ind in ind_table])[industry] * rng.uniform(0.85, 1.15, nf)
    tax_rate = rng.uniform(0.015, 0.06, nf)
    intensity = (
        np.array([ind.intensity for ind in ind_table])[industry]
        * np.array(_SIZE_INEFFICIENCY)[size]
        * rng.lognormal(0.0, 0.4, nf)
    )

    # Carbon split over carriers: the industry profile, jittered per firm, over the carriers used.
    profile_share = np.zeros((len(ind_table), len(_CARRIERS)))
    profile_use = np.zeros((len(ind_table), len(_CARRIERS)))
    for i, ind in enumerate(ind_table):
        for carrier, (share, use) in _PROFILES[ind.profile].items():
            profile_share[i, _CARRIERS.index(carrier)] = share
            profile_use[i, _CARRIERS.index(carrier)] = use
    uses = rng.random((nf, len(_CARRIERS))) < profile_use[industry]
    shares = profile_share[industry] * rng.gamma(4.0, 0.25, (nf, len(_CARRIERS))) * uses
    shares /= shares.sum(axis=1, keepdims=True)  # electricity is always used: the sum is > 0

    # Per firm-year: compounding growth from the first requested year.
    def path(lo: float, hi: float) -> np.ndarray:
        steps = rng.uniform(lo, hi, (nf, ny))
        steps[:, 0] = 1.0
        return np.cumprod(steps, axis=1)

    # Value added drives the money columns; the mix of output, revenue and tax drifts a little.
    va_path = path(0.95, 1.10)
    energy_path = path(0.92, 1.05)
    output_ratio = rng.uniform(0.93, 1.03, nf)  # gross output / revenue (stock changes)
    value_added = (revenue0 * output_ratio * va_ratio)[:, None] * va_path
    output = value_added / (va_ratio[:, None] * rng.uniform(0.98, 1.02, (nf, ny)))
    revenue = output / (output_ratio[:, None] * rng.uniform(0.99, 1.01, (nf, ny)))
    tax = revenue * tax_rate[:, None] * rng.uniform(0.9, 1.1, (nf, ny))
    employees = np.maximum(1, np.rint(employees0[:, None] * rng.uniform(0.96, 1.04, (nf, ny))))
    co2 = (intensity * value_added[:, 0])[:, None] * energy_path  # tCO2 in the boundary-free sense
    mix_drift = rng.uniform(0.97, 1.03, (nf, ny, len(_CARRIERS)))
    carrier_co2 = co2[:, :, None] * shares[:, None, :] * mix_drift
    quantities = carrier_co2 / _TCO2_PER_UNIT
    quantities[~np.broadcast_to(uses[:, None, :], quantities.shape)] = np.nan

    cols: dict[str, np.ndarray] = {}

    def put(name: str, values: np.ndarray) -> None:
        cols[name] = values.reshape(-1)

    for j, column in enumerate(_CARRIER_COLUMN):
        put(column, quantities[:, :, j])
    electricity = cols["electricity_mwh"] = np.round(cols["electricity_mwh"], 3)

    # Certified green power and own generation, as shares of the electricity bought.
    green_buyer = rng.random(nf) < np.array(_GREEN_BUYER)[size]
    green_share = rng.uniform(0.05, 0.6, nf)[:, None] * rng.uniform(0.9, 1.1, (nf, ny))
    green = np.round(electricity * np.minimum(green_share, 0.9).reshape(-1), 3)
    green = np.where(np.repeat(green_buyer, ny), np.minimum(green, electricity), np.nan)
    put("green_electricity_mwh", green)
    rooftop = rng.random(nf) < np.array(_ROOFTOP_PV)[size]
    solar = electricity.reshape(nf, ny) * rng.uniform(0.02, 0.25, nf)[:, None]
    put("onsite_renewable_mwh", np.where(rooftop[:, None], solar, np.nan))

    # Process inputs: clinker at cement kilns, carbonates in iron, steel and glass making.
    code = np.array([ind.code for ind in ind_table])[industry]
    coal = np.nan_to_num(quantities[:, :, _CARRIERS.index("raw_coal")])
    coke = np.nan_to_num(quantities[:, :, _CARRIERS.index("coke")])
    gas = np.nan_to_num(quantities[:, :, _CARRIERS.index("natural_gas")])
    kiln = (code == "3011")[:, None] & (coal > 0)
    put("clinker_t", np.where(kiln, coal * rng.uniform(6.0, 7.5, nf)[:, None], np.nan))
    metal = np.isin(code, ("3110", "3120"))
    glass = code == "3041"
    base = np.where(metal[:, None], coal + coke, gas)
    lime_ratio = np.where(metal, rng.uniform(0.2, 0.4, nf), rng.uniform(3.0, 8.0, nf))
    dolo_ratio = np.where(metal, rng.uniform(0.05, 0.15, nf), rng.uniform(8.0, 15.0, nf))
    has_lime = (metal & (rng.random(nf) < 0.6)) | (glass & (rng.random(nf) < 0.7))
    has_dolo = (metal & (rng.random(nf) < 0.4)) | (glass & (rng.random(nf) < 0.6))
    lime = base * lime_ratio[:, None]
    dolo = base * dolo_ratio[:, None]
    put("limestone_t", np.where(has_lime[:, None] & (lime > 0), lime, np.nan))
    put("dolomite_t", np.where(has_dolo[:, None] & (dolo > 0), dolo, np.nan))

    # Owned vehicles (mobile combustion): trucks and cars, more of them in heavy industry.
    truck_share = np.where(heavy, 0.6, 0.3)
    trucks = rng.random(nf) < truck_share
    diesel_per_head = rng.uniform(0.05, 0.4, nf) * np.where(heavy, 3.0, 1.0)
    put("vehicle_diesel_t", np.where(trucks[:, None], employees * diesel_per_head[:, None], np.nan))
    cars = rng.random(nf) < 0.25
    gasoline = np.maximum(0.5, employees * rng.uniform(0.01, 0.05, nf)[:, None])
    put("vehicle_gasoline_t", np.where(cars[:, None], gasoline, np.nan))

    # Measured fuel properties, reported by a few users of that fuel.
    for column, (fuel, share, mean, sd, lo, hi) in _MEASURED_SPEC.items():
        uses_fuel = np.nan_to_num(cols[fuel]).reshape(nf, ny) > 0
        measures = (rng.random(nf) < share)[:, None] & uses_fuel
        value = np.clip(rng.normal(mean, sd, (nf, ny)), lo, hi)
        put(column, np.where(measures, value, np.nan))

    borrower = rng.random(nf) < 0.85
    leverage = rng.uniform(0.05, 0.5, nf)[:, None] * rng.uniform(0.9, 1.15, (nf, ny))
    loan = revenue0[:, None] * leverage
    put("loan_amount_10k_cny", np.where(borrower[:, None], np.maximum(1.0, loan), np.nan))

    put("employees", employees)
    put("output_value_10k_cny", output)
    put("value_added_10k_cny", value_added)
    put("revenue_10k_cny", revenue)
    put("tax_10k_cny", tax)

    # Identity and text columns (per firm, repeated for each year).
    number = (np.arange(nf, dtype=np.int64) * 2_718_281_829 + 314_159_265) % 1_000_000_000
    # zero-padded to 9 digits: format 1e9 + number, then drop the leading "1" (fixed width)
    padded = (number + 1_000_000_000).astype("U10").view("U1").reshape(nf, 10)[:, 1:]
    digits = np.ascontiguousarray(padded).view("U9").reshape(nf).astype(object)
    first17 = np.array(_CITY_USCC_PREFIX, dtype=object)[city] + digits
    firm_id = first17 + _uscc_check_chars(city, padded)
    stems = np.array(_NAME_STEMS, dtype=object)
    first = stems[rng.integers(0, len(stems), nf)]
    second = np.char.lower(np.array(_NAME_STEMS))[rng.integers(0, len(stems), nf)].astype(object)
    nouns = np.array([ind.noun for ind in ind_table], dtype=object)[industry]
    firm_name = np.array(_CITY_TITLE, dtype=object)[city] + " " + first + second + " " + nouns + " Co., Ltd."
    out: dict[str, np.ndarray] = {}
    per_firm_text = {
        "firm_id": firm_id,
        "firm_name": firm_name,
        "city": np.array(_CITIES, dtype=object)[city],
        "grid_region": np.array(_REGIONS, dtype=object)[region],
        "industry": code.astype(object),
        "size": np.array(_SIZES, dtype=object)[size],
    }
    for name in COLUMNS:
        if name == "year":
            out[name] = np.tile(np.asarray(years, dtype=np.int64), nf)
        elif name in per_firm_text:
            out[name] = np.repeat(per_firm_text[name], ny)
        elif name == "employees":
            out[name] = cols[name].astype(np.int64)
        elif name in cols:
            out[name] = np.round(cols[name], _DECIMALS.get(name, 3))
        else:  # reported by nobody in these industries (crude oil, kerosene)
            out[name] = np.full(nf * ny, np.nan)
    return out


# -- defects ------------------------------------------------------------------------------------


def _as_text(values: np.ndarray) -> np.ndarray:
    """A numeric column as text cells, formatted the way the CSV writer formats numbers."""
    import pyarrow as pa

    text = pa.array(values, from_pandas=True).cast(pa.string()).fill_null("")
    return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)


def _inject_defects(cols: dict[str, np.ndarray], messy: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(cols["firm_id"])
    count = min(n, max(1, int(round(messy * n))))
    rows = rng.choice(n, size=count, replace=False)
    kind = np.arange(count) % len(DEFECTS)
    cols = {k: v.copy() for k, v in cols.items()}

    def rows_of(defect: str) -> np.ndarray:
        return rows[kind == DEFECTS.index(defect)]

    cols["value_added_10k_cny"][rows_of("blank_value_added")] = np.nan
    cols["industry"][rows_of("blank_industry")] = ""

    hit = rows_of("negative_quantity")
    if hit.size:
        present = np.stack([np.nan_to_num(cols[c][hit]) > 0 for c in _NEGATIVE_COLUMNS], axis=1)
        # a random column among those the row reports (electricity always is)
        choice = np.argmax(rng.random(present.shape) * present, axis=1)
        for j, column in enumerate(_NEGATIVE_COLUMNS):
            sel = hit[choice == j]
            cols[column][sel] = -cols[column][sel]

    green = rows_of("green_exceeds_electricity")
    cols["green_electricity_mwh"][green] = np.round(
        cols["electricity_mwh"][green] * rng.uniform(1.05, 1.6, green.size), 3
    )

    hit = rows_of("non_numeric")
    if hit.size:
        which = rng.integers(0, len(_NON_NUMERIC_COLUMNS), hit.size)
        token = np.array(_NON_NUMERIC, dtype=object)[rng.integers(0, len(_NON_NUMERIC), hit.size)]
        for j, column in enumerate(_NON_NUMERIC_COLUMNS):
            sel = which == j
            if sel.any():
                text = _as_text(cols[column])
                text[hit[sel]] = token[sel]
                cols[column] = text

    dup = np.sort(rows_of("duplicate_firm_year"))
    if dup.size:
        # A resubmitted row: same firm and year, slightly different electricity, right after it.
        order = np.sort(np.concatenate([np.arange(n), dup]), kind="stable")
        is_copy = np.zeros(order.size, dtype=bool)
        is_copy[np.searchsorted(order, dup, side="right") - 1] = True
        cols = {k: v[order] for k, v in cols.items()}
        elec = cols["electricity_mwh"]
        if elec.dtype.kind == "f":
            elec[is_copy] = np.round(elec[is_copy] * 1.01, 3)
    return cols


# -- writing ------------------------------------------------------------------------------------


def _arrow_table(columns: Mapping[str, np.ndarray]) -> Any:
    import pyarrow as pa

    arrays = {}
    for name, values in columns.items():
        arr = np.asarray(values)
        if arr.dtype.kind == "f":
            arrays[name] = pa.array(arr, from_pandas=True)  # NaN → null
        elif arr.dtype.kind in "iub":
            arrays[name] = pa.array(arr)
        else:
            try:  # text cells: "" and None → null
                arrays[name] = pa.array(arr, type=pa.string(), mask=arr == "")
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed cells: write each as its text
                none = np.array(None, dtype=object)  # np.equal's typed signature takes an array, not None
                text = np.where(np.equal(arr, none), "", arr).astype(str)
                arrays[name] = pa.array(text, type=pa.string(), mask=text == "")
    return pa.table(arrays)


def write(columns: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Write columns to ``path`` as .csv, .json (a list of objects), .jsonl or .parquet.

    Missing values (NaN, ``""``) become empty CSV cells or JSON/Parquet nulls.  The output is
    deterministic: the same columns give byte-identical files.  Returns the path written.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".json", ".jsonl", ".ndjson", ".parquet"):
        raise ValueError(f"{path}: unknown format '{suffix}' (use .csv, .json, .jsonl or .parquet)")
    table = _arrow_table(columns)
    p.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, p, pacsv.WriteOptions(quoting_style="needed", quoting_header="none"))
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, p, compression="zstd")
    else:
        with p.open("w", encoding="utf-8", newline="\n") as fh:
            lines = (json.dumps(row, ensure_ascii=False) for row in table.to_pylist())
            if suffix == ".json":
                fh.write("[\n" + ",\n".join(lines) + "\n]\n")
            else:
                for line in lines:
                    fh.write(line + "\n")
    return p


# -- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ruleengine.io.sample OUT --firms N --years 2022,2023 --seed S --messy F``."""
    parser = argparse.ArgumentParser(
        prog="python -m ruleengine.io.sample", description="Write a synthetic firm-year portfolio."
    )
    parser.add_argument("out", help="output file: .csv, .json, .jsonl or .parquet")
    parser.add_argument("--firms", type=int, default=300)
    parser.add_argument("--years", default="2022,2023", help="comma-separated reporting years")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--messy", type=float, default=0.0, help="fraction of rows with one defect")
    args = parser.parse_args(argv)
    years = [int(y) for y in args.years.split(",") if y.strip()]
    cols = generate(args.firms, years, seed=args.seed, messy=args.messy)
    write(cols, args.out)
    print(f"{args.out}: {len(cols['firm_id'])} rows, {len(cols)} columns")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
