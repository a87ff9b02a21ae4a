"""2. The hand-written numpy implementation (the ceiling): int-coded industries, ``np.bincount``
ratio of sums."""

from __future__ import annotations

from typing import Any

import numpy as np

from .data import text_codes
from .method import (
    BANDS,
    CARBON_CONTENT,
    CO2_PER_C,
    FUELS,
    INDUSTRIAL_AVERAGE,
    MIN_PEERS,
    NCV,
    NUMERIC,
    OXIDATION,
    PUBLISHED,
    TJ_PER_GJ,
    grid_factor_of,
)

# -- 2. hand-written numpy ------------------------------------------------------------------------


def numpy_prepare(cols: dict[str, Any]) -> dict[str, Any]:
    """Typed arrays for the numpy implementation: floats, int codes, the validity mask."""
    n = len(cols["year"])
    p: dict[str, Any] = {"n": n}
    valid = np.ones(n, dtype=bool)
    with np.errstate(invalid="ignore"):
        for name in NUMERIC:
            if name not in cols:
                p[name] = None
                continue
            x = np.asarray(cols[name], dtype=np.float64)
            bad = x < 0
            if name.endswith("_ox"):
                bad |= x > 1
            valid &= ~bad
            p[name] = x
    va = p["value_added_10k_cny"]
    valid &= ~np.isnan(va)
    year = np.asarray(cols["year"], dtype=np.float64)
    valid &= (year >= 1990) & (year <= 2100)
    p["year"] = np.where(np.isnan(year), -1, year).astype(np.int64)
    ind, ind_labels = text_codes(cols["industry"])
    valid &= ind >= 0
    p["industry"], p["industry_labels"] = ind, ind_labels
    divs = sorted({lab[:2] for lab in ind_labels if lab})
    div_of = np.array([divs.index(lab[:2]) if lab else -1 for lab in ind_labels] + [-1], dtype=np.int32)
    p["division"], p["division_labels"] = div_of[ind], divs
    region = cols.get("grid_region")
    if region is None:
        p["region"], p["region_labels"] = np.full(n, -1, dtype=np.int32), []
    else:
        p["region"], p["region_labels"] = text_codes(region)
    p["valid"] = valid
    return p


def _zero_if_nan(x: np.ndarray | None) -> np.ndarray | float:
    return 0.0 if x is None else np.where(np.isnan(x), 0.0, x)


def _measured_or(x: np.ndarray | None, default: float) -> np.ndarray | float:
    return default if x is None else np.where(np.isnan(x), default, x)


def numpy_evaluate(p: dict[str, Any]) -> dict[str, np.ndarray]:
    """The Huzhou method over whole columns: levels 1..5 (0 = unrated), K, L_industry."""
    n = p["n"]
    with np.errstate(divide="ignore", invalid="ignore"):
        co2 = {}
        for fuel, qcol in FUELS:
            co2[fuel] = (
                _zero_if_nan(p[qcol])
                * _measured_or(p[f"{fuel}_ncv_gj_per_unit"], NCV[fuel])
                * _measured_or(p[f"{fuel}_cc_tc_per_tj"], CARBON_CONTENT[fuel])
                * _measured_or(p[f"{fuel}_ox"], OXIDATION[fuel])
                * TJ_PER_GJ
                * CO2_PER_C
            )
        coal = co2["raw_coal"] + co2["coke"]
        oil = co2["crude_oil"] + co2["fuel_oil"] + co2["gasoline"] + co2["kerosene"] + co2["diesel"] + co2["lpg"]
        scope1 = coal + oil + co2["natural_gas"]

        # grid factor: a (year, region) table; region code -1 (missing) reads the last column
        year = p["year"]
        ok_year = year >= 0
        y0 = int(year[ok_year].min()) if ok_year.any() else 0
        ycode = np.where(ok_year, year - y0, 0)
        nyears = int(ycode.max()) + 1 if n else 1
        labels = p["region_labels"]
        table = np.array(
            [
                [grid_factor_of(y0 + k, lab) for lab in labels] + [grid_factor_of(y0 + k, "national")]
                for k in range(nyears)
            ]
        )
        gf = table[ycode, p["region"]]
        gf = np.where(ok_year, gf, np.nan)

        electricity = _zero_if_nan(p["electricity_mwh"])
        green = _zero_if_nan(p["green_electricity_mwh"])
        scope2 = (electricity - green) * gf
        avoided = _zero_if_nan(p["onsite_renewable_mwh"]) * gf + _zero_if_nan(p["carbon_sink_tco2"])
        net = scope1 + scope2 - avoided
        va = p["value_added_10k_cny"]
        intensity = np.where(va == 0, np.nan, net / va)
        valid = p["valid"] & (green <= electricity)

        # industry benchmark: ratio of sums by (year, class), else (year, division), else table
        peer = valid & (va > 0) & np.isfinite(net) & np.isfinite(va) & ok_year
        bench = np.full(n, np.nan)
        found = np.zeros(n, dtype=bool)
        for codes, ncodes in ((p["industry"], len(p["industry_labels"])), (p["division"], len(p["division_labels"]))):
            key = ycode * (ncodes + 1) + codes + 1  # code -1 (missing) → its own, unused slot
            size = nyears * (ncodes + 1)
            sel = peer & (codes >= 0)
            k = key[sel]
            count = np.bincount(k, minlength=size)
            s_num = np.bincount(k, weights=net[sel], minlength=size)
            s_den = np.bincount(k, weights=va[sel], minlength=size)
            ratio = np.where(s_den != 0, s_num / np.where(s_den == 0, 1.0, s_den), np.nan)
            use = ~found & (codes >= 0) & (count[key] >= MIN_PEERS)
            bench = np.where(use, ratio[key], bench)
            found |= use
        published = np.array(
            [PUBLISHED.get(d, INDUSTRIAL_AVERAGE) for d in p["division_labels"]] + [INDUSTRIAL_AVERAGE]
        )
        bench = np.where(found, bench, published[p["division"]])

        k = np.where(bench == 0, np.nan, intensity / bench)
        level = np.searchsorted(np.asarray(BANDS), k, side="left") + 1
        level = np.where(np.isnan(k) | ~valid | ~ok_year, 0, level)
    return {"level": level.astype(np.int64), "k": k, "industry_intensity": bench, "valid": valid}
