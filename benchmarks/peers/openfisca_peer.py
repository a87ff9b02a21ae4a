"""3. OpenFisca (``openfisca-core``): one person entity ``firm``, period = year, vectorised
formulas; the industry benchmark is a formula over the whole population."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .data import text_codes
from .method import (
    BANDS,
    CARBON_CONTENT,
    CO2_PER_C,
    FUELS,
    GRID_EF,
    INDUSTRIAL_AVERAGE,
    MEASURED,
    MIN_PEERS,
    NCV,
    NUMERIC,
    OXIDATION,
    PUBLISHED,
    REGIONS,
    TJ_PER_GJ,
)

# -- 3. OpenFisca --------------------------------------------------------------------------------


def openfisca_available() -> bool:
    try:
        import openfisca_core  # noqa: F401
    except ImportError:
        return False
    return True


def openfisca_system() -> Any:
    """A TaxBenefitSystem with one person entity ``firm``, period = year, float64 variables."""
    from openfisca_core.entities import build_entity
    from openfisca_core.indexed_enums import Enum
    from openfisca_core.parameters import ParameterNode
    from openfisca_core.periods import DateUnit
    from openfisca_core.taxbenefitsystems import TaxBenefitSystem
    from openfisca_core.variables import Variable

    firm = build_entity(key="firm", plural="firms", label="Firm (one firm-year per period)", is_person=True)

    class GridRegion(Enum):
        national = "national (no or unknown grid region)"
        north = "north"
        northwest = "northwest"
        east = "east"
        northeast = "northeast"
        central = "central"
        south = "south"
        southwest = "southwest"

    class Float64Variable(Variable):
        """OpenFisca stores ``float`` variables as float32; K must agree with ruleengine to
        1e-9 relative, so every float variable here keeps float64 storage."""

        def __init__(self, baseline_variable: Any = None) -> None:
            super().__init__(baseline_variable)
            self.dtype = np.float64

    common = {"entity": firm, "definition_period": DateUnit.YEAR}
    classes: list[type] = []

    def number(name: str, formula: Callable[..., Any] | None = None, default: float = 0.0) -> None:
        attrs: dict[str, Any] = {**common, "value_type": float, "default_value": default}
        if formula is not None:
            attrs["formula"] = formula
        classes.append(type(name, (Float64Variable,), attrs))

    def plain(name: str, value_type: type, default: Any, formula: Any = None, **extra: Any) -> None:
        attrs: dict[str, Any] = {**common, "value_type": value_type, "default_value": default, **extra}
        if formula is not None:
            attrs["formula"] = formula
        classes.append(type(name, (Variable,), attrs))

    # inputs
    for _, qcol in FUELS:
        number(qcol)
    for m in MEASURED:
        number(m, default=math.nan)  # measured factor: NaN = not measured
    for name in ("electricity_mwh", "green_electricity_mwh", "onsite_renewable_mwh", "carbon_sink_tco2"):
        number(name)
    number("value_added_10k_cny", default=math.nan)
    plain("industry_code", int, -1)  # GB/T 4754 class as an int (division = code // 100)
    plain("input_ok", bool, False)  # data passed the input contract (types, ranges, required)
    plain("reported", bool, False)  # the firm has a row for this year
    plain("grid_region", Enum, GridRegion.national, possible_values=GridRegion)

    # per-firm formulas
    def fuel_formula(fuel: str, qcol: str) -> Callable[..., Any]:
        def formula(firm: Any, period: Any, parameters: Any) -> Any:
            p = parameters(period)
            q = firm(qcol, period)
            ncv = firm(f"{fuel}_ncv_gj_per_unit", period)
            cc = firm(f"{fuel}_cc_tc_per_tj", period)
            ox = firm(f"{fuel}_ox", period)
            return (
                q
                * np.where(np.isnan(ncv), p.ncv[fuel], ncv)
                * np.where(np.isnan(cc), p.carbon_content[fuel], cc)
                * np.where(np.isnan(ox), p.oxidation[fuel], ox)
                * p.tj_per_gj
                * p.co2_per_c
            )

        return formula

    for fuel, qcol in FUELS:
        number(f"{fuel}_co2_tco2", fuel_formula(fuel, qcol))

    def scope1(firm: Any, period: Any) -> Any:
        c = {f: firm(f"{f}_co2_tco2", period) for f, _ in FUELS}
        coal = c["raw_coal"] + c["coke"]
        oil = c["crude_oil"] + c["fuel_oil"] + c["gasoline"] + c["kerosene"] + c["diesel"] + c["lpg"]
        return coal + oil + c["natural_gas"]

    def grid_factor(firm: Any, period: Any, parameters: Any) -> Any:
        return parameters(period).grid_ef[firm("grid_region", period)]

    def scope2(firm: Any, period: Any) -> Any:
        return (firm("electricity_mwh", period) - firm("green_electricity_mwh", period)) * firm("grid_factor", period)

    def avoided(firm: Any, period: Any) -> Any:
        return firm("onsite_renewable_mwh", period) * firm("grid_factor", period) + firm("carbon_sink_tco2", period)

    def net_emissions(firm: Any, period: Any) -> Any:
        return firm("scope1_tco2", period) + firm("scope2_tco2", period) - firm("avoided_tco2", period)

    def valid(firm: Any, period: Any) -> Any:
        return (
            firm("input_ok", period)
            & firm("reported", period)
            & (firm("green_electricity_mwh", period) <= firm("electricity_mwh", period))
        )

    def intensity(firm: Any, period: Any) -> Any:
        va = firm("value_added_10k_cny", period)
        net = firm("net_emissions_tco2", period)
        out = np.full(len(va), np.nan)
        np.divide(net, va, out=out, where=va != 0)
        return out

    published_keys = list(PUBLISHED)

    def industry_intensity(firm: Any, period: Any, parameters: Any) -> Any:
        """Ratio of sums over the whole population of this period: by class with at least
        ``min_peers`` peers, else by division, else the published table."""
        p = parameters(period)
        net = firm("net_emissions_tco2", period)
        va = firm("value_added_10k_cny", period)
        code = firm("industry_code", period).astype(np.int64)
        peer = firm("valid", period) & (va > 0) & np.isfinite(net) & np.isfinite(va) & (code >= 0)
        division = np.where(code >= 0, code // 100, -1)
        bench = np.full(len(va), np.nan)
        found = np.zeros(len(va), dtype=bool)
        min_peers = p.min_peers
        for key, size in ((code, 10_000), (division, 100)):
            k = key[peer]
            count = np.bincount(k, minlength=size)
            s_num = np.bincount(k, weights=net[peer], minlength=size)
            s_den = np.bincount(k, weights=va[peer], minlength=size)
            ratio = np.where(s_den != 0, s_num / np.where(s_den == 0, 1.0, s_den), np.nan)
            safe = np.where(key >= 0, key, 0)
            use = ~found & (key >= 0) & (count[safe] >= min_peers)
            bench = np.where(use, ratio[safe], bench)
            found |= use
        table = p.published_industry_intensity
        published = np.full(101, float(table.industrial_average))
        for d in published_keys:
            published[int(d)] = table[d]
        return np.where(found, bench, published[np.where(division >= 0, division, 100)])

    def k(firm: Any, period: Any) -> Any:
        bench = firm("industry_intensity", period)
        out = np.full(len(bench), np.nan)
        np.divide(firm("intensity", period), bench, out=out, where=bench != 0)
        return out

    def level(firm: Any, period: Any, parameters: Any) -> Any:
        bands = parameters(period).level_upper_bounds
        edges = np.array([bands.level_1, bands.level_2, bands.level_3, bands.level_4])
        kv = firm("k", period)
        lv = np.searchsorted(edges, kv, side="left") + 1
        return np.where(np.isnan(kv) | ~firm("valid", period), 0, lv)

    number("scope1_tco2", scope1)
    number("grid_factor", grid_factor)
    number("scope2_tco2", scope2)
    number("avoided_tco2", avoided)
    number("net_emissions_tco2", net_emissions)
    plain("valid", bool, False, valid)
    number("intensity", intensity)
    number("industry_intensity", industry_intensity)
    number("k", k)
    plain("level", int, 0, level)  # 1..5, 0 = unrated

    def dated(v: float, start: str = "2021-01-01") -> dict[str, Any]:
        return {"values": {start: v}}

    grid: dict[str, Any] = {}
    for region in ("national", *REGIONS):
        values = {f"{y}-01-01": t.get(region, t["national"]) for y, t in GRID_EF.items()}
        grid[region] = {"values": values}
    params = {
        "ncv": {f: dated(v) for f, v in NCV.items()},
        "carbon_content": {f: dated(v) for f, v in CARBON_CONTENT.items()},
        "oxidation": {f: dated(v) for f, v in OXIDATION.items()},
        "tj_per_gj": dated(TJ_PER_GJ),
        "co2_per_c": dated(CO2_PER_C),
        "grid_ef": grid,
        "published_industry_intensity": {
            **{d: dated(v) for d, v in PUBLISHED.items()},
            "industrial_average": dated(INDUSTRIAL_AVERAGE),
        },
        "min_peers": dated(MIN_PEERS),
        "level_upper_bounds": {f"level_{i + 1}": dated(b) for i, b in enumerate(BANDS)},
    }
    tbs = TaxBenefitSystem([firm])
    tbs.parameters = ParameterNode("", data=params)
    tbs.add_variables(*classes)
    tbs.grid_region_enum = GridRegion  # for the input builder
    return tbs


def openfisca_inputs(p: dict[str, Any], cols: dict[str, Any]) -> dict[str, Any]:
    """Per-year input arrays over the firm population (firm-year rows scattered by firm)."""
    firm, _ = text_codes(cols["firm_id"])
    nfirms = int(firm.max()) + 1 if len(firm) else 0
    ind_int = np.array([int(lab) if lab.isdigit() else -1 for lab in p["industry_labels"]] + [-1], dtype=np.int32)
    region_pos = {r: i + 1 for i, r in enumerate(REGIONS)}  # enum index, 0 = national
    reg_idx = np.array([region_pos.get(lab, 0) for lab in p["region_labels"]] + [0], dtype=np.int16)
    per_year: dict[int, dict[str, Any]] = {}
    for year in np.unique(p["year"][p["year"] >= 0]).tolist():
        rows = np.flatnonzero(p["year"] == year)
        at = firm[rows]
        arrays: dict[str, Any] = {"_rows": rows, "_at": at}
        for name in NUMERIC:
            x = p[name]
            if x is None:
                continue
            default = math.nan if name in MEASURED or name == "value_added_10k_cny" else 0.0
            full = np.full(nfirms, default)
            v = x[rows]
            full[at] = v if math.isnan(default) else np.where(np.isnan(v), default, v)
            arrays[name] = full
        code = np.full(nfirms, -1, dtype=np.int32)
        code[at] = ind_int[p["industry"][rows]]
        arrays["industry_code"] = code
        ok = np.zeros(nfirms, dtype=bool)
        ok[at] = p["valid"][rows]
        arrays["input_ok"] = ok
        rep = np.zeros(nfirms, dtype=bool)
        rep[at] = True
        arrays["reported"] = rep
        reg = np.zeros(nfirms, dtype=np.int16)
        reg[at] = reg_idx[p["region"][rows]]
        arrays["grid_region"] = reg
        per_year[int(year)] = arrays
    return {"nfirms": nfirms, "years": per_year, "n": p["n"]}


def openfisca_run(tbs: Any, inputs: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Build a simulation, set every input for every year, calculate K and the level."""
    from openfisca_core.indexed_enums import EnumArray
    from openfisca_core.simulation_builder import SimulationBuilder

    t0 = time.perf_counter()
    sim = SimulationBuilder().build_default_simulation(tbs, count=inputs["nfirms"])
    for year, arrays in inputs["years"].items():
        period = str(year)
        for name, arr in arrays.items():
            if name.startswith("_"):
                continue
            if name == "grid_region":
                arr = EnumArray(arr, tbs.grid_region_enum)
            sim.set_input(name, period, arr)
    t1 = time.perf_counter()
    n = inputs["n"]
    level = np.zeros(n, dtype=np.int64)
    k = np.full(n, np.nan)
    for year, arrays in inputs["years"].items():
        period = str(year)
        lv = sim.calculate("level", period)
        kv = sim.calculate("k", period)
        level[arrays["_rows"]] = lv[arrays["_at"]]
        k[arrays["_rows"]] = kv[arrays["_at"]]
    t2 = time.perf_counter()
    return {"level": level, "k": k}, {"build": t1 - t0, "calculate": t2 - t1}
