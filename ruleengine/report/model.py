"""What a report shows, gathered from the engine's public API: rate, what-it-takes, explain.

``rate_portfolio`` rates the data once (with the what-it-takes columns the CLI's ``rate
--what-it-takes`` adds, computed by the same :func:`ruleengine.analysis.whatif.columns`); ``firm_context``
then builds one firm-year's page from those results and its trace (``ruleengine.explain`` with the
results passed in, so nothing is rated twice).

Adapters (the public API has no call for these yet; they are small and local):

* ``_identity``: the firm's name, city, size and loan amount are not rulebook inputs, so they are
  read from the data file itself (``ruleengine.io.data.read_any``, the engine's own reader);
* ``_input_column``: a rulebook input column of the rated batch (``results.batch``), used for the
  peer group (the 4-digit industry);
* ``trace_digest``: SHA-256 of the trace's canonical JSON (sorted keys, no spaces, UTF-8), until
  the trace carries its own digest.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RuleEngineError
from . import charts
from .gbt4754 import SOURCE as GBT_SOURCE
from .gbt4754 import division_name, industry_name
from .i18n import BOOKS, Lang

IDENTITY_COLUMNS = ("firm_id", "year", "firm_name", "city", "industry", "size", "loan_amount_10k_cny")

CARRIERS = (  # energy structure, tce; colours fixed per carrier
    ("coal_tce", "#4d4d4d"),
    ("oil_tce", "#8c564b"),
    ("gas_tce", "#1f77b4"),
    ("electricity_tce", "#f2b701"),
    ("heat_tce", "#d62728"),
    ("vehicle_fuels_tce", "#9467bd"),
)
SOURCES = (  # emissions by source: (variable, colour); its scope is where the rulebook's graph puts it
    ("coal_co2_tco2", "#4d4d4d"),
    ("oil_co2_tco2", "#8c564b"),
    ("gas_co2_tco2", "#1f77b4"),
    ("mobile_co2_tco2", "#9467bd"),
    ("process_co2_tco2", "#7f7f7f"),
    ("electricity_location_tco2", "#f2b701"),
    ("electricity_green_zero_tco2", "#f2b701"),
    ("electricity_market_tco2", "#f2b701"),
    ("heat_tco2", "#d62728"),
)


class ReportError(RuleEngineError):
    """A report that cannot be made (unknown firm, bad option); printed as `error: …`, exit 1."""


@dataclass
class Rated:
    """A portfolio rated once, ready for any number of reports."""

    plan: Any
    results: Any
    data: Any
    what: dict[str, np.ndarray]
    identity: dict[tuple[str, int], dict[str, Any]]
    data_hash: str
    data_name: str
    has_loans: bool
    _by_firm: dict[str, list[int]] = field(default_factory=dict)
    _peer_charts: dict[Any, Any] = field(default_factory=dict)  # peer-group drawings (charts.peer_histogram)

    def rows_of(self, firm_id: str) -> list[int]:
        if not self._by_firm:
            ids = self.results["firm_id"]
            for i, f in enumerate(ids.tolist()):
                self._by_firm.setdefault(str(f), []).append(i)
        return self._by_firm.get(str(firm_id), [])


def _hash_data(data: Any) -> tuple[str, str]:
    if isinstance(data, str | Path) and Path(data).is_file():
        h = hashlib.sha256()
        with open(data, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return "sha256:" + h.hexdigest()[:16], Path(data).name
    text = json.dumps(data, sort_keys=True, default=str) if isinstance(data, list | dict) else repr(type(data))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16], "<in-memory data>"


def _identity(data: Any) -> tuple[dict[tuple[str, int], dict[str, Any]], bool]:
    from ..io.data import read_any

    raw = read_any(data, IDENTITY_COLUMNS, only=IDENTITY_COLUMNS)
    cols: dict[str, list[Any]] = {}
    for name in IDENTITY_COLUMNS:
        col = raw.columns.get(name)
        if col is None:
            continue
        cols[name] = col.to_pylist() if hasattr(col, "to_pylist") else list(np.asarray(col, dtype=object))
    out: dict[tuple[str, int], dict[str, Any]] = {}
    ids = cols.get("firm_id", [])
    years = cols.get("year", [None] * len(ids))
    for j, fid in enumerate(ids):
        try:
            y = int(float(years[j])) if years[j] not in (None, "") else -1
        except (TypeError, ValueError):
            y = -1
        key = (str(fid), y)
        if key in out:
            continue
        out[key] = {n: (None if cols[n][j] in ("", None) else cols[n][j]) for n in cols}
    return out, "loan_amount_10k_cny" in cols


def rate_portfolio(book: Any, data: Any, *, what_it_takes: bool = True) -> Rated:
    """Rate ``data`` with ``book`` once; ``what_it_takes`` adds the CLI's what-it-takes columns."""
    from ..pipeline import rate_with_context
    from ..rulebook.loader import load

    plan = load(book)
    results = rate_with_context(plan, data)  # its traces are explain's, context and all
    what: dict[str, np.ndarray] = {}
    if what_it_takes and len(results):
        from ..analysis.whatif import columns

        what = columns(plan, results)
    identity, has_loans = _identity(data)
    h, name = _hash_data(data)
    return Rated(plan, results, data, what, identity, h, name, has_loans)


def rated_from(plan: Any, results: Any, data: Any, data_name: str) -> Rated:
    """A :class:`Rated` over results made elsewhere, e.g. a ledger run re-rated from its stored rulebook,
    rows and benchmark tables (``ledger report``): the report shows those results, not a fresh rating
    of ``data`` against benchmarks of its own."""
    identity, has_loans = _identity(data)
    h, _ = _hash_data(data)
    return Rated(plan, results, data, {}, identity, h, data_name, has_loans)


def trace_digest(trace_dict: dict[str, Any]) -> str:
    """The trace's digest: SHA-256 of its canonical JSON, 'digest' itself left out — the one
    ``ruleengine verify`` checks (:func:`ruleengine.analysis.trace.digest`)."""
    from ..analysis.trace import digest

    return digest(trace_dict)


def _f(x: Any) -> float:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return math.nan
    return f


def _input_column(rated: Rated, name: str) -> np.ndarray:
    batch = rated.results.batch
    col = batch.columns[name]
    if hasattr(col, "to_strings"):
        return np.asarray(col.to_strings(), dtype=object)
    return np.asarray(col)


def _num(value: Any, src: str, text: str) -> dict[str, Any]:
    """A number as shown: its text, its value and where it came from (checked by the tests)."""
    f = _f(value)
    return {"text": text, "value": None if math.isnan(f) else repr(f), "src": src}


def _primary_value_name(plan: Any) -> str:
    r = plan.ratings[plan.primary]
    names = list(getattr(r.value, "names", []) or [])
    return names[0] if len(names) == 1 and r.value.text.strip() == names[0] else ""


def band_edges(plan: Any, year: int) -> list[tuple[float, str]]:
    """The bounds between the primary rating's bands in ``year`` (value, 'lower|upper' level ids)."""
    from ..analysis.whatif import band_edge

    r = plan.ratings[plan.primary]
    out = []
    for i, b in enumerate(r.bands[:-1]):
        v = band_edge(b.upper, plan, year)
        if not math.isnan(v):
            out.append((v, f"{r.ids[i]}|{r.ids[i + 1]}"))
    return out


def find_firm(rated: Rated, firm_id: str, year: int | None) -> int:
    """The row of a firm-year (the firm's latest year when none is given); a clear error otherwise."""
    rows = rated.rows_of(firm_id)
    res = rated.results
    if not rows:
        import difflib

        ids = sorted({str(x) for x in res["firm_id"].tolist()})
        near = difflib.get_close_matches(str(firm_id), ids, n=5, cutoff=0.5)
        hint = f"; near matches: {', '.join(near)}" if near else f" ({len(ids)} firms in the data)"
        raise ReportError(f"no firm '{firm_id}' in {rated.data_name}{hint}")
    years = res["year"]
    if year is None:
        return max(rows, key=lambda i: int(years[i]))
    hit = [i for i in rows if int(years[i]) == int(year)]
    if not hit:
        have = ", ".join(str(int(years[i])) for i in sorted(rows, key=lambda i: int(years[i])))
        raise ReportError(f"firm '{firm_id}' has no row for {year} in {rated.data_name}; it has the years {have}")
    return hit[0]


def firm_context(
    rated: Rated, i: int, lang: str = "zh", date: str | None = None, appendix: bool = True
) -> dict[str, Any]:
    """Everything the firm template shows for row ``i`` of the rated portfolio.

    ``appendix=False`` leaves the audit trail appendix out (a line says how to make it; the digest
    and the QR code stay): a PDF of a page or two fewer, for batches of many reports.
    """
    from ..analysis.trace import explain_firm

    plan, res = rated.plan, rated.results
    L = Lang(lang, plan.id)
    book = BOOKS.get(plan.id, {})
    row = res.row(i)
    firm_id, year = str(row["firm_id"]), int(row["year"])
    ident = rated.identity.get((firm_id, year), {})
    trace = explain_firm(plan, res, firm_id, year)
    td = trace.to_dict()
    digest = trace_digest(td)
    r = plan.ratings[plan.primary]
    rated_ok = row["status"] == "rated"
    level = str(row["rating"] or "")
    date = date or f"{year}-12-31"

    def n(col: str, digits: int = 2, src: str | None = None) -> dict[str, Any]:
        v = row.get(col)
        return _num(v, src or f"result:{col}", L.num(v, digits))

    # -- identity --------------------------------------------------------------------------------
    code = str(ident.get("industry") or "")
    division = str(row.get("industry_division") or code[:2])
    identity = {
        "name": ident.get("firm_name") or firm_id,
        "firm_id": firm_id,
        "industry_code": code,
        "industry_name": industry_name(code, lang),
        "division_name": division_name(division, lang),
        "city": L.city(ident.get("city")),
        "size": L.size(ident.get("size")),
        "year": year,
    }
    # -- rating ------------------------------------------------------------------------------------
    value_name = _primary_value_name(plan)
    rating = {
        "title": L.rating_title(plan.primary, r.title),
        "level": level,
        "label": L.level(plan.primary, level, level) if level else L.t("unrated"),
        "colour": L.colour(level) if level else "#8c8c8c",
        "rated": rated_ok,
        "value_name": L.name(value_name, r.value.text) if value_name else r.value.text,
        "value": n(value_name, 4) if value_name else None,
        "band": next((d["band"] for d in td["decisions"] if d["rating"] == plan.primary), ""),
        "reasons": td["reasons"],
    }
    others = []
    for rname, spec in plan.ratings.items():
        if rname == plan.primary:
            continue
        lv = str(row.get(rname) or "")
        others.append(
            {
                "title": L.rating_title(rname, spec.title or rname),
                "label": L.level(rname, lv, lv) if lv else L.t("unrated"),
                "colour": L.colour(lv),
            }
        )
    # -- incentive -----------------------------------------------------------------------------------
    inc = td.get("incentive") or {}
    incentive = None
    if inc and rated_ok:
        incentive = {
            "rate_bp": _num(inc.get("rate_bp"), "result:incentive_rate_bp", L.bp(inc.get("rate_bp")))
            if "rate_bp" in inc
            else None,
            "credit_policy": L.policy(str(inc.get("credit_policy", ""))),
            "services": [L.policy(s) for s in inc.get("services", [])],
            "subsidy_pct": _num(inc["subsidy_pct"], "result:incentive_subsidy_pct", L.pct(inc["subsidy_pct"], 0))
            if "subsidy_pct" in inc
            else None,
            "status": inc.get("status", ""),
            "source": inc.get("source", ""),
        }
    # -- what it takes -------------------------------------------------------------------------------
    wit = td.get("what_it_takes") or {}
    steps = []
    for key in ("better", "worse"):
        s = wit.get(key)
        if not s:
            continue
        step = {
            "direction": key,
            "title": L.t("next_better" if key == "better" else "next_worse"),
            "level": L.level(plan.primary, s["level"], s["level"]),
            "colour": L.colour(s["level"]),
            "rule": s["rule"],
            "margin": _num(s["margin"], f"trace:what_it_takes.{key}.margin", L.sig(s["margin"])),
            "cuts": [],
        }
        for c in s.get("cuts", []):
            label = L.name("emissions_tco2") if c["what"] == "emissions_tco2" else L.name(c["what"])
            if c.get("direction") == "raise":  # conditional levels: the increase that reaches it
                label = f"{label} ({L.t('raise')})"
            step["cuts"].append(
                {
                    "what": label,
                    "unit": c["unit"],
                    "current": _num(c["current"], f"trace:cut.{c['what']}.current", L.num(c["current"], 1)),
                    "cut": _num(c["cut"], f"trace:cut.{c['what']}.cut", L.num(c["cut"], 1))
                    if c["cut"] is not None
                    else None,
                    "pct": _num(c["cut_pct"], f"trace:cut.{c['what']}.cut_pct", L.pct(c["cut_pct"]))
                    if c["cut_pct"] is not None
                    else None,
                }
            )
        steps.append(step)
    at_best = rated_ok and r.bands and not wit.get("better")
    at_worst = rated_ok and r.bands and not wit.get("worse")
    # -- last year -------------------------------------------------------------------------------------
    prev = None
    for j in rated.rows_of(firm_id):
        if int(res["year"][j]) == year - 1:
            prev = j
    last_year: dict[str, Any]
    if prev is None:
        last_year = {"text": L.t("no_prior_year"), "year": year - 1, "found": False}
    else:
        pl = str(res["rating"][prev] or "")
        last_year = {
            "found": True,
            "year": year - 1,
            "level": pl,
            "text": L.level(plan.primary, pl, pl) if pl else L.t("prior_unrated"),
            "colour": L.colour(pl) if pl else "#8c8c8c",
            "reasons": str(res["reasons"][prev]) if not pl else "",
        }
    # -- charts ------------------------------------------------------------------------------------------
    chart_list = _firm_charts(rated, i, L, book, row, value_name, year, firm_id)
    # -- data quality ----------------------------------------------------------------------------------
    rownum = td["provenance"].get("data_row")
    issues = [
        {"row": d.row, "column": d.column or "", "message": d.message, "fatal": d.fatal}
        for d in res.issues
        if d.row == rownum
    ]
    defaults = []
    assumed = []
    for node in td["nodes"]:
        for name, how in (node.get("detail") or {}).get("measured_first", {}).items():
            # a default factor matters only where the fuel is burnt (its CO2 is not zero)
            if how == "default" and _f(node["value"]) != 0 and (name, node["name"]) not in defaults:
                defaults.append((name, node["name"]))
        if node["kind"] == "parameter" and (node.get("detail") or {}).get("status") == "assumed":
            assumed.append({"name": node["name"], "source": node.get("source", "")})
    quality = {
        "issues": issues,
        "fallbacks": td["fallbacks"],
        "defaults": [{"input": L.name(a, a), "name": a, "used_by": b} for a, b in defaults],
        "assumed": assumed,
        "coverage": None,
    }
    # -- provenance ------------------------------------------------------------------------------------
    # short enough for a small code (and a fast one): method, firm-year, rating and the full digest
    qr_payload = f"ruleengine|{plan.id}|{plan.version}|{firm_id}|{year}|{level or 'unrated'}|{digest}"
    provenance = {
        "rulebook": plan.id,
        "rulebook_title": L.title(plan.title),
        "version": plan.version,
        "hash": plan.hash,
        "engine": row["engine_version"],
        "data": rated.data_name,
        "data_hash": rated.data_hash,
        "input_row_hash": td["provenance"]["input_row_sha256"],
        "tables_hash": td["provenance"]["benchmark_tables_sha256"],
        "date": date,
        "digest": digest,
        "qr": charts.qr_svg(qr_payload),
        "qr_payload": qr_payload,
        "gbt": GBT_SOURCE[lang],
    }
    # -- appendix ----------------------------------------------------------------------------------------
    shown, folded = [], []
    for node in td["nodes"]:
        v = node["value"]
        entry = {
            "name": node["name"],
            "label": L.name(node["name"], ""),
            "kind": L.t(f"kind_{node['kind']}"),
            "value": _value_text(v, L),
            "raw": v if isinstance(v, int | float) else None,
            "unit": node.get("unit", ""),
            "formula": node.get("formula", ""),
            "source": node.get("source", ""),
        }
        # zero or empty inputs, and the variables they leave at zero (every fuel the firm does not burn),
        # are folded away: the trail a reader opens is the chain that carries the firm's numbers
        if node["kind"] in ("input", "variable") and (v is None or v == 0 or v == ""):
            folded.append(entry)
        else:
            shown.append(entry)
    decisions = [d["because"] for d in td["decisions"]]
    return {
        "lang": lang,
        "L": L,
        "kind": "firm",
        "title": f"{identity['name']} · {L.t('firm_report')} {year}",
        "method": L.title(plan.title),
        "identity": identity,
        "rating": rating,
        "others": others,
        "incentive": incentive,
        "steps": steps,
        "at_best": at_best,
        "at_worst": at_worst,
        "last_year": last_year,
        "charts": chart_list,
        "quality": quality,
        "provenance": provenance,
        "appendix": {
            "shown": shown,
            "folded": folded,
            "decisions": decisions,
            "count": len(td["nodes"]),
            "included": appendix,
        },
        "trace": td,
        "row": i,
    }


def _value_text(v: Any, L: Lang) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int | float):
        return L.sig(v, 6) if abs(float(v)) < 1e6 else L.num(v, 1)
    if isinstance(v, dict):  # a table parameter: the variables using it show the entry they took
        return f"{len(v)} 项表" if L.lang == "zh" else f"table of {len(v)}"
    return str(v)


def _firm_charts(
    rated: Rated, i: int, L: Lang, book: dict[str, Any], row: dict[str, Any], value_name: str, year: int, firm_id: str
) -> list[dict[str, Any]]:
    plan, res = rated.plan, rated.results
    out: list[dict[str, Any]] = []
    names = set(res.names)

    # 1. energy structure
    parts = [(c, colour) for c, colour in CARRIERS if c in names and _f(row.get(c)) > 0]
    table = [
        [L.name(c), _num(row[c], f"result:{c}", L.num(row[c], 1)), L.pct(100.0 * _f(row[c]) / _f(row["energy_tce"]))]
        for c, _ in parts
        if _f(row["energy_tce"]) > 0
    ]
    chart: dict[str, Any] = {
        "id": "energy",
        "title": L.t("energy_structure"),
        "head": [L.t("carrier"), "tce", L.t("share")],
        "rows": table,
        "svg": "",
        "empty": L.t("no_energy"),
    }
    if parts and _f(row["energy_tce"]) > 0:
        chart["svg"] = charts.donut(
            "energy",
            chart["title"],
            [L.name(c) for c, _ in parts],
            [_f(row[c]) for c, _ in parts],
            [k for _, k in parts],
        )
    out.append(chart)

    # 2. emissions by source and scope (sources feeding scope 1 / scope 2 are in the boundary)
    import networkx as nx

    g = plan.graph
    s1 = nx.ancestors(g, "scope1_tco2") if "scope1_tco2" in g else set()
    s2 = nx.ancestors(g, "scope2_tco2") if "scope2_tco2" in g else set()
    srcs = []
    for v, colour in SOURCES:
        if v in names and _f(row.get(v)) > 0 and (v in s1 or v in s2):
            srcs.append((v, 1 if v in s1 else 2, colour))
    table = [[L.name(v), L.t(f"scope{sc}"), _num(row[v], f"result:{v}", L.num(row[v], 1))] for v, sc, _ in srcs]
    table += [
        [
            L.name("scope1_tco2"),
            L.t("scope1"),
            _num(row["scope1_tco2"], "result:scope1_tco2", L.num(row["scope1_tco2"], 1)),
        ],
        [
            L.name("scope2_tco2"),
            L.t("scope2"),
            _num(row["scope2_tco2"], "result:scope2_tco2", L.num(row["scope2_tco2"], 1)),
        ],
        [
            L.name("emissions_tco2"),
            L.t("total"),
            _num(row["emissions_tco2"], "result:emissions_tco2", L.num(row["emissions_tco2"], 1)),
        ],
    ]
    chart = {
        "id": "sources",
        "title": L.t("emissions_by_source"),
        "head": [L.t("source"), L.t("scope"), "tCO2"],
        "rows": table,
        "svg": "",
        "empty": L.t("no_emissions"),
    }
    if srcs:
        cats = [L.t("scope1"), L.t("scope2")]
        series = [
            (L.name(v), [_f(row[v]) if sc == 1 else 0.0, _f(row[v]) if sc == 2 else 0.0], colour)
            for v, sc, colour in srcs
        ]
        chart["svg"] = charts.stacked_bars("sources", chart["title"], cats, series, "tCO2")
    out.append(chart)

    # 3. over the years
    inten = book.get("intensity") or value_name
    rows = sorted(rated.rows_of(firm_id), key=lambda j: int(res["year"][j]))
    ys = [int(res["year"][j]) for j in rows]
    em = [_f(res["emissions_tco2"][j]) for j in rows]
    it = [_f(res[inten][j]) for j in rows] if inten in names else [math.nan] * len(rows)
    table = [
        [
            str(y),
            _num(e, f"result@{y}:emissions_tco2", L.num(e, 1)),
            _num(x, f"result@{y}:{inten}", L.sig(x)),
        ]
        for y, e, x in zip(ys, em, it, strict=True)
    ]
    chart = {
        "id": "years",
        "title": L.t("over_years"),
        "head": [L.t("year"), f"{L.t('emissions')} (tCO2)", L.name(inten)],
        "rows": table,
        "svg": charts.years_chart(
            "years", L.t("over_years"), ys, em, it, (f"{L.t('emissions')} (tCO2)", L.t("intensity")), "#d7301f"
        ),
        "note": L.t("one_year") if len(ys) == 1 else "",
        "empty": "",
    }
    out.append(chart)

    # 4. position among peers
    chart = {"id": "peers", "title": L.t("peer_position"), "head": [], "rows": [], "svg": "", "empty": L.t("no_peers")}
    r = plan.ratings[plan.primary]
    bm = _benchmark_of(plan, value_name)
    if value_name and row["status"] == "rated" and bm and r.bands:
        used = str(row.get(f"{bm}_group") or "")
        years = res["year"]
        sel = (years == year) & (res["status"] == "rated")
        note = ""
        if used == "industry":
            key = _input_column(rated, "industry")
            sel &= key == key[i]
        elif used == "industry_division" and "industry_division" in names:
            key = res["industry_division"]
            sel &= key == key[i]
        elif used == "fallback":
            note = L.t("peer_fallback")
        vals = res[value_name][sel].astype(float)
        edges = band_edges(plan, year)
        shown_edges = [(e, lab.split("|")[1]) for e, lab in edges]  # each edge named by the band it opens
        bounds = [-math.inf] + [e for e, _ in edges] + [math.inf]
        bcol = [(bounds[k], bounds[k + 1], L.colour(r.ids[k])) for k in range(len(r.ids))]
        fv = _f(row[value_name])
        chart["svg"] = charts.peer_histogram(
            "peers",
            chart["title"],
            vals.tolist(),
            fv,
            shown_edges,
            bcol,
            (L.t("peer_group"), L.t("firm_value"), L.name(value_name)),
            cache=rated._peer_charts,
        )
        chart["head"] = [L.t("indicator"), L.t("value")]
        below = int(np.sum(vals < fv))
        chart["rows"] = [
            [L.name(value_name), _num(fv, f"result:{value_name}", L.sig(fv))],
            [L.t("group_used"), L.group(used)],
            [L.t("peers"), _num(row.get(f"{bm}_peers"), f"result:{bm}_peers", L.num(row.get(f"{bm}_peers"), 0))],
            [L.name(bm, bm), _num(row.get(bm), f"result:{bm}", L.sig(row.get(bm)))],
            [L.t("firm_value") + " < ", f"{below} / {len(vals)}"],
        ] + [[f"{L.t('band_edges')} {lab.replace('|', '/')}", L.sig(e)] for e, lab in edges]
        chart["note"] = note
    out.append(chart)

    # 5. indicator scores
    inds = [v for v in book.get("indicators", []) if v in names]
    chart = {
        "id": "indicators",
        "title": L.t("indicator_scores"),
        "head": [L.t("indicator"), L.t("score")],
        "rows": [[L.name(v), _num(row[v], f"result:{v}", L.num(row[v], 1))] for v in inds],
        "svg": "",
        "empty": L.t("no_indicators"),
    }
    if inds and not any(math.isnan(_f(row[v])) for v in inds):
        vals = [_f(row[v]) for v in inds]
        cols = [L.colour(_level_for_score(plan, x, year)) for x in vals]
        chart["svg"] = charts.bars(
            "indicators", chart["title"], [L.name(v) for v in inds], vals, cols, L.t("score"), 100
        )
    elif inds:
        chart["empty"] = L.t("unrated")
    out.append(chart)
    return out


def _level_for_score(plan: Any, x: float, year: int) -> str:
    """The primary level a 0-100 score would reach by itself (to colour indicator bars alike)."""
    r = plan.ratings[plan.primary]
    edges = band_edges(plan, year)
    k = sum(1 for e, _ in edges if x >= e) if r.better == "higher" else sum(1 for e, _ in edges if x > e)
    return r.ids[k] if r.ids else ""


def _benchmark_of(plan: Any, value_name: str) -> str:
    """The first benchmark the rated value depends on (its peer comparison)."""
    if not value_name or value_name not in plan.graph:
        return ""
    import networkx as nx

    anc = nx.ancestors(plan.graph, value_name)
    for b in plan.benchmarks:
        if b in anc:
            return str(b)
    return ""
