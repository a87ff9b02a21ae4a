"""Compare stage: the same firms under several methods.

For each method: its rating distribution. Across methods: cross-tabs on a common scale (through a
declared crosswalk, e.g. the national draft's), rank agreement (Spearman and Kendall on each
method's rated value, oriented so that higher is better), and the firms whose relative position
differs most, each with the reason: a boundary difference (emissions one method counts and the
other leaves out), a benchmark difference (different peer group or fallback), or a scale difference.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from ..rulebook.compiler import Plan
from .rated import SCORE, Rated

if TYPE_CHECKING:
    from ..scale.engines import Engine

# Boundary categories and the accounting library's variable that holds each one's CO2.
CATEGORY_VARIABLE = {
    "scope1.stationary": "stationary_co2_tco2",
    "scope1.mobile": "mobile_co2_tco2",
    "scope1.process": "process_co2_tco2",
    "scope2.heat": "heat_tco2",
}
KENDALL_MAX = 5000


@dataclass
class Method:
    plan: Plan
    results: Rated  # the columns compare reads (rated.compare_view), in memory or from an engine

    @property
    def id(self) -> str:
        return self.plan.id

    def score(self) -> np.ndarray:
        """The primary rating's value, oriented so that a higher number is the better position."""
        v = np.asarray(self.results[SCORE], dtype=np.float64)
        v = np.where(self.results["status"] == "rated", v, np.nan)
        return -v if self.plan.ratings[self.plan.primary].better == "lower" else v


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share), 1-based."""
    order = np.argsort(x, kind="stable")
    sx = x[order]
    ranks = np.empty(len(x))
    n = len(x)
    starts = np.flatnonzero(np.r_[True, sx[1:] != sx[:-1]])
    ends = np.r_[starts[1:], n]
    avg = (starts + ends + 1) / 2.0
    for s, e, a in zip(starts.tolist(), ends.tolist(), avg.tolist(), strict=True):
        ranks[order[s:e]] = a
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a), _ranks(b)
    if len(a) < 2 or np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b, exact, by pairwise signs in blocks (use on at most KENDALL_MAX rows)."""
    n = len(a)
    if n < 2:
        return float("nan")
    concordant = 0.0
    ties_a = ties_b = 0.0
    total = 0.0
    block = 512
    for s in range(0, n, block):
        da = np.sign(a[s : s + block, None] - a[None, :])
        db = np.sign(b[s : s + block, None] - b[None, :])
        rows = np.arange(s, min(s + block, n))[:, None]
        upper = np.arange(n)[None, :] > rows
        concordant += float(np.sum((da * db)[upper]))
        ties_a += float(np.sum((da == 0)[upper]))
        ties_b += float(np.sum((db == 0)[upper]))
        total += float(np.sum(upper))
    denom = np.sqrt((total - ties_a) * (total - ties_b))
    return float(concordant / denom) if denom > 0 else float("nan")


def _percentile(score: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(score)
    out = np.full(len(score), np.nan)
    if ok.sum() > 1:
        r = _ranks(score[ok])
        out[ok] = (r - 1) / (ok.sum() - 1)
    return out


def _crosswalk(plans: list[Plan]) -> Plan | None:
    """A plan whose crosswalk maps every other compared method (the national draft by default)."""
    ids = {p.id for p in plans}
    for p in plans:
        if ids - {p.id} <= set(p.crosswalk):
            return p
    from ..rulebook.loader import load

    try:
        national = load("national")
    except Exception:  # noqa: BLE001 - no bundled crosswalk: cross-tabs are skipped
        return None
    return national if ids - {"national"} <= set(national.crosswalk) else None


def _common(method: Method, scale: Plan) -> np.ndarray:
    labels = method.results["rating"]
    if method.id == scale.id:
        mapped = labels
    else:
        cw = scale.crosswalk[method.id]
        mapped = labels.map(cw["map"], "")
    return np.where(mapped == "", "unrated", mapped)


BOUNDARY_MATERIAL = 0.10  # a firm's own left-out share from which the boundary is "the" reason


def _reason(m1: Method, m2: Method, i: int) -> str:
    """Why two methods place firm-year ``i`` differently: boundary, benchmark or scale."""
    b1, b2 = set(m1.plan.boundary), set(m2.plan.boundary)
    peers_note = ""
    for extra, big, small in ((b2 - b1, m2, m1), (b1 - b2, m1, m2)):
        amounts = []
        for cat in sorted(extra):
            var = CATEGORY_VARIABLE.get(cat)
            if var and var in big.results.columns:
                v = float(big.results[var][i])
                if v > 0:
                    amounts.append(f"{cat.split('.')[1]} {v:,.1f} tCO2")
        total = float(big.results["emissions_tco2"][i])
        if not extra:
            continue
        share = (total - float(small.results["emissions_tco2"][i])) / total if total > 0 else 0.0
        if amounts and share >= BOUNDARY_MATERIAL:
            return (
                f"boundary: {big.id} counts {', '.join(amounts)} that {small.id} leaves out "
                f"({100 * share:.0f}% of {big.id}'s emissions)"
            )
        from_peers = all(
            str(m.results[f"{bm}_group"][i]) in spec.groups
            for m in (big, small)
            for bm, spec in m.plan.benchmarks.items()
        )
        if big.plan.benchmarks and small.plan.benchmarks and from_peers:
            cats = ", ".join(c.split(".")[1] for c in sorted(extra))
            peers_note = (
                f"benchmark through the boundary: {big.id} also counts {cats} across the peer group, "
                f"which moves the benchmark ({100 * share:.0f}% of the firm's own emissions)"
            )
    coarse = []
    for m in (m1, m2):
        used = [
            str(m.results[f"{bm}_group"][i])
            for bm, spec in m.plan.benchmarks.items()
            if str(m.results[f"{bm}_group"][i]) not in ("", spec.groups[0])
        ]
        if used:
            counts = ", ".join(f"{n} by {g}" for g, n in sorted(Counter(used).items()))
            coarse.append(f"{m.id} {counts}")
    if coarse:
        text = "benchmark: " + "; ".join(coarse) + " (a coarser peer group or a fallback value)"
        return f"{peers_note}; {text}" if peers_note else text
    if peers_note:
        return peers_note
    return "scale: same emissions and peers, different indicators, thresholds or scoring"


def run(books: list[Any], data: Any, top: int = 10, engine: Engine | None = None) -> dict[str, Any]:
    """Rate ``data`` with every rulebook of ``books`` and compare them. ``engine``: rate on
    ``chunked``, ``spark`` or ``dask`` (``data``: a Parquet dataset) instead of in memory; the
    result is the same."""
    import functools

    from .. import pipeline
    from ..rulebook.loader import load
    from .rated import Portfolio, compare_view

    plans = [load(b) for b in books]
    if len({p.id for p in plans}) != len(plans):
        from ..errors import RuleEngineError

        raise RuleEngineError("compare needs different methods (two rulebooks have the same id)")
    for plan in plans:
        pipeline.require_rulebook(plan)
    # the data is read once for every method (in memory), or partitioned once (on an engine)
    with Portfolio(plans, data, engine, pipeline.CONTEXT_COLUMNS) as portfolio:
        rated = []
        for i, p in enumerate(plans):
            rated.append(portfolio.rated(p, functools.partial(compare_view, names=i == 0)))
            portfolio.keep_for(plans[i + 1 :])  # the columns only methods already rated read go
    methods = [Method(p, r) for p, r in zip(plans, rated, strict=True)]
    n = len(methods[0].results)
    firm = methods[0].results["firm_id"]
    year = methods[0].results["year"]
    names = methods[0].results.columns.get("firm_name")
    out: dict[str, Any] = {"firm_years": n, "methods": [], "pairs": [], "crosswalk": None}
    for m in methods:
        out["methods"].append(
            {
                "id": m.id,
                "version": m.plan.version,
                "hash": m.plan.hash,
                "boundary": list(m.plan.boundary),
                "distribution": m.results.distribution(),
                "rated": int((m.results["status"] == "rated").sum()),
            }
        )
    scale = _crosswalk(plans)
    common = {}
    if scale is not None:
        out["crosswalk"] = {"scale": scale.id, "levels": scale.ratings[scale.primary].best_first()}
        common = {m.id: _common(m, scale) for m in methods}
    pct = {m.id: _percentile(m.score()) for m in methods}
    for m1, m2 in combinations(methods, 2):
        s1, s2 = m1.score(), m2.score()
        ok = ~np.isnan(s1) & ~np.isnan(s2)
        pair: dict[str, Any] = {
            "a": m1.id,
            "b": m2.id,
            "both_rated": int(ok.sum()),
            "spearman": spearman(s1[ok], s2[ok]),
        }
        idx = np.flatnonzero(ok)
        sample = idx if len(idx) <= KENDALL_MAX else idx[np.linspace(0, len(idx) - 1, KENDALL_MAX).astype(int)]
        pair["kendall_tau_b"] = kendall_tau_b(s1[sample], s2[sample])
        pair["kendall_rows"] = int(len(sample))
        if common:
            c1, c2 = common[m1.id], common[m2.id]
            levels = [*out["crosswalk"]["levels"], "unrated"]
            pair["crosstab"] = {
                "levels": levels,
                "counts": [[int(np.sum((c1 == x) & (c2 == y))) for y in levels] for x in levels],
            }
            both = (c1 != "unrated") & (c2 != "unrated")
            pair["same_common_grade"] = float(np.mean(c1[both] == c2[both])) if both.any() else float("nan")
        gap = pct[m2.id] - pct[m1.id]
        ranked = np.argsort(-np.abs(np.nan_to_num(gap)), kind="stable")
        order = ranked[ok[ranked]][:top].tolist()
        pair["largest_differences"] = [
            {
                "firm_id": str(firm[i]),
                "firm_name": names[i] if names is not None and len(names) else "",
                "year": int(year[i]),
                f"{m1.id}_rating": str(m1.results["rating"][i]),
                f"{m2.id}_rating": str(m2.results["rating"][i]),
                f"{m1.id}_percentile": round(float(pct[m1.id][i]), 4),
                f"{m2.id}_percentile": round(float(pct[m2.id][i]), 4),
                "reason": _reason(m1, m2, i),
            }
            for i in order
        ]
        out["pairs"].append(pair)
    return out


def to_json(result: dict[str, Any]) -> str:
    def clean(x: Any) -> Any:
        if isinstance(x, float) and x != x:
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(result), indent=2, ensure_ascii=False) + "\n"


def to_markdown(result: dict[str, Any]) -> str:
    lines = [f"# Method comparison on {result['firm_years']} firm-years", ""]
    lines += ["| method | version | boundary | rated | distribution (best first) |", "|---|---|---|---|---|"]
    for m in result["methods"]:
        dist = ", ".join(f"{k} {v}" for k, v in m["distribution"])
        lines.append(f"| {m['id']} | {m['version']} | {', '.join(m['boundary'])} | {m['rated']} | {dist} |")
    cw = result.get("crosswalk")
    for p in result["pairs"]:
        lines += [
            "",
            f"## {p['a']} vs {p['b']}",
            "",
            f"Both rated: {p['both_rated']}. Rank agreement: Spearman {_f(p['spearman'])}, "
            f"Kendall tau-b {_f(p['kendall_tau_b'])}"
            + (f" (on {p['kendall_rows']} rows)" if p["kendall_rows"] < p["both_rated"] else "")
            + ".",
        ]
        if "crosstab" in p and cw:
            lines += [
                "",
                f"On the common scale ({cw['scale']}): same grade for {_pct(p['same_common_grade'])} of firms "
                "rated by both.",
                "",
                f"| {p['a']} \\ {p['b']} | " + " | ".join(p["crosstab"]["levels"]) + " |",
                "|---" * (len(p["crosstab"]["levels"]) + 1) + "|",
            ]
            for lv, row in zip(p["crosstab"]["levels"], p["crosstab"]["counts"], strict=True):
                lines.append(f"| {lv} | " + " | ".join(str(c) for c in row) + " |")
        if p["largest_differences"]:
            lines += [
                "",
                "Largest differences in relative position (percentile within each method, higher is better):",
                "",
            ]
            for d in p["largest_differences"]:
                name = f" {d['firm_name']}" if d["firm_name"] else ""
                lines.append(
                    f"- **{d['firm_id']}{name}** {d['year']}: {p['a']} {d[p['a'] + '_rating']} "
                    f"(p{d[p['a'] + '_percentile']:.2f}) vs {p['b']} {d[p['b'] + '_rating']} "
                    f"(p{d[p['b'] + '_percentile']:.2f}) — {d['reason']}"
                )
    return "\n".join(lines) + "\n"


def _f(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.0f}%"
