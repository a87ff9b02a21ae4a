"""5. simpleeval per row (the floor): each formula parsed once, evaluated row by row."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .method import CARBON_CONTENT, CO2_PER_C, FUELS, MEASURED, NCV, NUMERIC, OXIDATION, TJ_PER_GJ, grid_factor_of

# -- 5. simpleeval per row (the floor) -----------------------------------------------------------


def simpleeval_formulas() -> list[tuple[str, str]]:
    f: list[tuple[str, str]] = []
    for fuel, qcol in FUELS:
        f.append(
            (
                f"{fuel}_co2",
                f"{qcol} * coalesce({fuel}_ncv_gj_per_unit, {NCV[fuel]!r})"
                f" * coalesce({fuel}_cc_tc_per_tj, {CARBON_CONTENT[fuel]!r})"
                f" * coalesce({fuel}_ox, {OXIDATION[fuel]!r}) * tj_per_gj * co2_per_c",
            )
        )
    f += [
        (
            "scope1",
            "(raw_coal_co2 + coke_co2) + (crude_oil_co2 + fuel_oil_co2 + gasoline_co2"
            " + kerosene_co2 + diesel_co2 + lpg_co2) + natural_gas_co2",
        ),
        ("grid_factor", "grid_ef(year, grid_region)"),
        ("scope2", "(electricity_mwh - green_electricity_mwh) * grid_factor"),
        ("avoided", "onsite_renewable_mwh * grid_factor + carbon_sink_tco2"),
        ("net", "scope1 + scope2 - avoided"),
        ("valid", "input_ok and green_electricity_mwh <= electricity_mwh"),
        ("intensity", "net / value_added_10k_cny if value_added_10k_cny != 0 else nan"),
        ("k", "intensity / industry_intensity if industry_intensity != 0 else nan"),
        (
            "level",
            "0 if not valid or k != k else 1 if k <= 0.6 else 2 if k <= 0.8"
            " else 3 if k <= 1.2 else 4 if k <= 2.0 else 5",
        ),
    ]
    return f


def simpleeval_rows(p: dict[str, Any], cols: dict[str, Any], bench: np.ndarray) -> list[dict[str, Any]]:
    n = p["n"]
    region = np.asarray(cols.get("grid_region", np.full(n, "", dtype=object)), dtype=object)
    columns = []
    for name in NUMERIC:
        x = p[name]
        if name in MEASURED or name == "value_added_10k_cny":
            values = [None] * n if x is None else [None if v != v else v for v in x.tolist()]
        else:
            values = [0.0] * n if x is None else [0.0 if v != v else v for v in x.tolist()]
        columns.append((name, values))
    year, ok, b = p["year"].tolist(), p["valid"].tolist(), bench.tolist()
    rows = []
    for i in range(n):
        row = {name: values[i] for name, values in columns}
        row.update(year=year[i], input_ok=ok[i], industry_intensity=b[i], grid_region=region[i])
        rows.append(row)
    return rows


def simpleeval_run(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    from simpleeval import SimpleEval

    def coalesce(x: Any, default: float) -> float:
        return default if x is None else x

    s = SimpleEval(functions={"coalesce": coalesce, "grid_ef": grid_factor_of})
    parsed = [(name, expr, s.parse(expr)) for name, expr in simpleeval_formulas()]
    consts = {"tj_per_gj": TJ_PER_GJ, "co2_per_c": CO2_PER_C, "nan": math.nan}
    n = len(rows)
    level = np.zeros(n, dtype=np.int64)
    k = np.full(n, np.nan)
    for i, row in enumerate(rows):
        names = {**consts, **row}
        s.names = names
        for name, expr, node in parsed:
            names[name] = s.eval(expr, previously_parsed=node)
        level[i] = names["level"]
        k[i] = names["k"]
    return {"level": level, "k": k}
