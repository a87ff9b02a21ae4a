"""4. GoRules zen-engine: a JDM decision graph evaluated per record and through
``evaluate_batch``; the benchmark statistics are precomputed and passed in as an input field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .method import BANDS, CARBON_CONTENT, FUELS, GRID_EF, NCV, NUMERIC, OXIDATION, REGIONS, TJ_PER_GJ

# -- 4. GoRules zen-engine -----------------------------------------------------------------------


def zen_available() -> bool:
    try:
        import zen  # noqa: F401
    except ImportError:
        return False
    return True


def _node(node_id: str, kind: str, **content: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"id": node_id, "type": kind, "name": node_id, "position": {"x": 0, "y": 0}}
    if content:
        node["content"] = content
    return node


def _expr_node(node_id: str, exprs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return _node(
        node_id,
        "expressionNode",
        passThrough=True,
        inputField=None,
        outputPath=None,
        expressions=[{"id": f"{node_id}-{key}", "key": key, "value": value} for key, value in exprs],
    )


def zen_graph() -> dict[str, Any]:
    """The Huzhou method as a JDM decision graph; ``industry_intensity`` is an input field."""
    fuels = []
    for fuel, qcol in FUELS:
        fuels.append(
            (
                f"{fuel}_co2_tco2",
                f"({qcol} ?? 0) * ({fuel}_ncv_gj_per_unit ?? {NCV[fuel]!r})"
                f" * ({fuel}_cc_tc_per_tj ?? {CARBON_CONTENT[fuel]!r})"
                f" * ({fuel}_ox ?? {OXIDATION[fuel]!r}) * {TJ_PER_GJ!r} * (44 / 12)",
            )
        )

    def regional(table: dict[str, float]) -> str:
        expr = f"{table['national']!r}"
        for region in reversed(REGIONS):
            expr = f"(grid_region == '{region}' ? {table[region]!r} : {expr})"
        return expr

    # one vintage per data year; years after the last keep the latest table
    years = sorted(GRID_EF)
    grid = regional(GRID_EF[years[-1]])
    for y in reversed(years[:-1]):
        grid = f"(year < {y + 1} ? {regional(GRID_EF[y])} : {grid})"
    grid = f"year < {years[0]} ? null : {grid}"
    totals = [
        (
            "scope1_tco2",
            "(raw_coal_co2_tco2 + coke_co2_tco2) + (crude_oil_co2_tco2 + "
            "fuel_oil_co2_tco2 + gasoline_co2_tco2 + kerosene_co2_tco2 + "
            "diesel_co2_tco2 + lpg_co2_tco2) + natural_gas_co2_tco2",
        ),
        ("scope2_tco2", "((electricity_mwh ?? 0) - (green_electricity_mwh ?? 0)) * grid_factor"),
        ("avoided_tco2", "(onsite_renewable_mwh ?? 0) * grid_factor + (carbon_sink_tco2 ?? 0)"),
        ("valid", "input_ok and (green_electricity_mwh ?? 0) <= (electricity_mwh ?? 0)"),
    ]
    ratios = [
        ("net_emissions_tco2", "scope1_tco2 + scope2_tco2 - avoided_tco2"),
        ("intensity", "value_added_10k_cny == 0 ? null : $.net_emissions_tco2 / value_added_10k_cny"),
        ("k", "$.intensity == null or industry_intensity == 0 ? null : $.intensity / industry_intensity"),
    ]
    edges_in = ["-", *[f"({lo}..{hi}]" for lo, hi in zip(BANDS[:-1], BANDS[1:], strict=True)], f"> {BANDS[-1]}"]
    edges_in[0] = f"<= {BANDS[0]}"
    rules = [
        {"_id": f"band-{i + 1}", "in-valid": "true", "in-k": cond, "out-level": str(i + 1)}
        for i, cond in enumerate(edges_in)
    ]
    table = _node(
        "level",
        "decisionTableNode",
        hitPolicy="first",
        passThrough=True,
        inputField=None,
        outputPath=None,
        inputs=[{"id": "in-valid", "name": "valid", "field": "valid"}, {"id": "in-k", "name": "K", "field": "k"}],
        outputs=[{"id": "out-level", "name": "level", "field": "level"}],
        rules=rules,
    )
    nodes = [
        _node("request", "inputNode"),
        _expr_node("fuels", [*fuels, ("grid_factor", grid)]),
        _expr_node("totals", totals),
        _expr_node("ratios", ratios),
        table,
        _node("response", "outputNode"),
    ]
    chain = [n["id"] for n in nodes]
    edges = [
        {"id": f"e{i}", "type": "edge", "sourceId": a, "targetId": b}
        for i, (a, b) in enumerate(zip(chain[:-1], chain[1:], strict=True))
    ]
    return {"contentType": "application/vnd.gorules.decision", "nodes": nodes, "edges": edges}


_RECORD_FIELDS = (*NUMERIC,)


def zen_records(p: dict[str, Any], cols: dict[str, Any], bench: np.ndarray) -> list[dict[str, Any]]:
    """One JSON-like context per firm-year: reported values only (missing keys), plus the
    precomputed industry benchmark."""
    n = p["n"]
    present = [(name, p[name]) for name in _RECORD_FIELDS if p[name] is not None]
    region = np.asarray(cols.get("grid_region", np.full(n, "", dtype=object)), dtype=object)
    year = p["year"].tolist()
    ok = p["valid"].tolist()
    bench_l = bench.tolist()
    columns = [(name, x.tolist()) for name, x in present]
    out = []
    for i in range(n):
        rec: dict[str, Any] = {"year": year[i], "input_ok": ok[i], "industry_intensity": bench_l[i]}
        for name, values in columns:
            v = values[i]
            if v == v:  # not NaN
                rec[name] = v
        if region[i]:
            rec["grid_region"] = region[i]
        out.append(rec)
    return out


def zen_run_per_record(decision: Any, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    n = len(records)
    level = np.zeros(n, dtype=np.int64)
    k = np.full(n, np.nan)
    for i, rec in enumerate(records):
        res = decision.evaluate(rec)["result"]
        lv = res.get("level")
        level[i] = int(lv) if lv is not None else 0
        kv = res.get("k")
        k[i] = float(kv) if kv is not None else np.nan
    return {"level": level, "k": k}


def zen_run_engine_per_record(engine: Any, records: list[dict[str, Any]]) -> int:
    for rec in records:
        engine.evaluate("huzhou.json", rec)
    return len(records)


def zen_run_batch(engine: Any, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    out = engine.evaluate_batch([{"key": "huzhou.json", "context": r} for r in records])
    n = len(records)
    level = np.zeros(n, dtype=np.int64)
    k = np.full(n, np.nan)
    for i, item in enumerate(out):
        if not item.get("success"):
            raise RuntimeError(f"zen evaluate_batch failed on record {i}: {item.get('error')}")
        res = item["data"]["result"]
        lv = res.get("level")
        level[i] = int(lv) if lv is not None else 0
        kv = res.get("k")
        k[i] = float(kv) if kv is not None else np.nan
    return {"level": level, "k": k}
