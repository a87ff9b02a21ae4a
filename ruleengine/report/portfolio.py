"""The portfolio report for a bank: distribution, by industry and size, incentives and their annual
interest effect, unrated firms and why, migration against the previous year, firms closest to a band
edge. Everything comes from one rated portfolio (:func:`ruleengine.report.rate_portfolio`)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from . import charts
from .gbt4754 import division_name
from .i18n import Lang
from .model import Rated, ReportError, _f, _num


def portfolio_context(
    rated: Rated, year: int | None = None, lang: str = "zh", date: str | None = None
) -> dict[str, Any]:
    plan, res = rated.plan, rated.results
    L = Lang(lang, plan.id)
    r = plan.ratings[plan.primary]
    years_all = res["year"]
    if len(res) == 0:
        raise ReportError(f"{rated.data_name}: no firm-years to report on")
    have = sorted({int(y) for y in years_all.tolist()})
    if year is None:
        year = have[-1]
    elif year not in have:
        raise ReportError(f"no firm-years for {year} in {rated.data_name}; it has {', '.join(map(str, have))}")
    sel = [int(k) for k in np.flatnonzero(years_all == year)]
    ids = res["firm_id"]
    levels = res["rating"]
    status = res["status"]
    order = r.best_first()
    date = date or f"{year}-12-31"

    def ident(i: int) -> dict[str, Any]:
        return rated.identity.get((str(ids[i]), year), {})

    # distribution
    counts = Counter(str(levels[i]) for i in sel if status[i] == "rated")
    n_unrated = int(sum(1 for i in sel if status[i] != "rated"))
    dist_rows = [
        [L.level(plan.primary, lv, lv), _num(counts.get(lv, 0), f"count:{lv}", L.num(counts.get(lv, 0), 0))]
        for lv in order
    ]
    dist_rows.append([L.t("unrated"), _num(n_unrated, "count:unrated", L.num(n_unrated, 0))])
    dist_chart = {
        "id": "distribution",
        "title": L.t("distribution"),
        "head": [L.t("rating"), L.t("count")],
        "rows": dist_rows,
        "svg": charts.bars(
            "distribution",
            L.t("distribution"),
            [L.level(plan.primary, lv, lv) for lv in order] + [L.t("unrated")],
            [float(counts.get(lv, 0)) for lv in order] + [float(n_unrated)],
            [L.colour(lv) for lv in order] + ["#8c8c8c"],
            L.t("count"),
            digits=0,
        ),
        "empty": "",
    }

    # by industry division and by size: firms per level
    def cross(key_of: Any, label_of: Any) -> tuple[list[str], list[list[Any]]]:
        table: dict[str, Counter[str]] = {}
        for i in sel:
            k = key_of(i) or "—"
            table.setdefault(k, Counter())[str(levels[i]) if status[i] == "rated" else "unrated"] += 1
        head = [""] + [L.level(plan.primary, lv, lv) for lv in order] + [L.t("unrated"), L.t("total")]
        rows = []
        for k in sorted(table):
            c = table[k]
            rows.append(
                [label_of(k)] + [str(c.get(lv, 0)) for lv in order] + [str(c.get("unrated", 0)), str(sum(c.values()))]
            )
        return head, rows

    div_col = res["industry_division"] if "industry_division" in res.names else None

    def div_of(i: int) -> str:
        if div_col is not None and div_col[i]:
            return str(div_col[i])
        return str(ident(i).get("industry") or "")[:2]

    ind_head, ind_rows = cross(div_of, lambda k: f"{k} {division_name(k, lang)}")
    ind_head[0] = L.t("division")
    size_order = {"large": 0, "medium": 1, "small": 2, "micro": 3}
    size_head, size_rows = cross(lambda i: str(ident(i).get("size") or ""), lambda k: L.size(k) if k != "—" else k)
    size_rows.sort(key=lambda row: size_order.get(next((s for s in size_order if L.size(s) == row[0]), ""), 9))
    size_head[0] = L.t("size")
    # stacked chart by division
    divs = [row[0] for row in ind_rows]
    series = []
    for k, lv in enumerate(order):
        series.append((L.level(plan.primary, lv, lv), [float(row[1 + k]) for row in ind_rows], L.colour(lv)))
    series.append((L.t("unrated"), [float(row[1 + len(order)]) for row in ind_rows], "#8c8c8c"))
    ind_chart = {
        "id": "by-industry",
        "title": L.t("by_industry"),
        "head": ind_head,
        "rows": ind_rows,
        "svg": charts.stacked_bars("byindustry", L.t("by_industry"), divs, series, L.t("count")) if divs else "",
        "empty": L.t("none"),
    }

    # incentives and the annual interest effect: loan (10^4 CNY) x bp -> CNY a year (diff.py's rule)
    bp = res["incentive_rate_bp"] if "incentive_rate_bp" in res.names else None
    inc_rows = []
    total_effect = 0.0
    total_loans = 0.0
    for lv in order:
        members = [i for i in sel if status[i] == "rated" and str(levels[i]) == lv]
        spec = plan.incentives.get("levels", {}).get(lv, {}) if plan.incentives else {}
        loans = sum(
            _f(ident(i).get("loan_amount_10k_cny"))
            for i in members
            if not math.isnan(_f(ident(i).get("loan_amount_10k_cny")))
        )
        effect = sum(
            _f(ident(i).get("loan_amount_10k_cny")) * _f(bp[i])
            for i in members
            if bp is not None and not math.isnan(_f(ident(i).get("loan_amount_10k_cny"))) and not math.isnan(_f(bp[i]))
        )
        total_effect += effect
        total_loans += loans
        inc_rows.append(
            {
                "level": L.level(plan.primary, lv, lv),
                "colour": L.colour(lv),
                "firms": _num(len(members), f"count:{lv}", L.num(len(members), 0)),
                "rate_bp": L.bp(spec.get("rate_bp")) if "rate_bp" in spec else "—",
                "policy": L.policy(str(spec.get("credit_policy", ""))),
                "loans": _num(loans, f"loans:{lv}", L.num(loans, 0)) if rated.has_loans else None,
                "effect": _num(effect, f"effect:{lv}", L.num(effect, 0)) if rated.has_loans else None,
            }
        )

    # unrated firms and why
    unrated = [
        {"firm_id": str(ids[i]), "name": ident(i).get("firm_name") or "", "reasons": str(res["reasons"][i])}
        for i in sel
        if status[i] != "rated"
    ]

    # migration against the previous year
    prev_rows = {str(ids[j]): j for j in np.flatnonzero(years_all == year - 1)}
    migration = None
    if prev_rows:
        lab = [*order, "unrated"]
        names = [L.level(plan.primary, lv, lv) for lv in order] + [L.t("unrated")]
        m = [[0] * len(lab) for _ in lab]
        for i in sel:
            j = prev_rows.get(str(ids[i]))
            if j is None:
                continue
            a = str(levels[j]) if status[j] == "rated" else "unrated"
            b = str(levels[i]) if status[i] == "rated" else "unrated"
            m[lab.index(a)][lab.index(b)] += 1
        migration = {
            "id": "migration",
            "title": L.t("migration"),
            "head": [f"{L.t('previous')} \\ {L.t('current')}"] + names,
            "rows": [[names[k]] + [str(c) for c in m[k]] for k in range(len(lab))],
            "svg": charts.heatmap("migration", L.t("migration"), names, names, m, (L.t("previous"), L.t("current"))),
            "empty": "",
        }

    # firms closest to a band edge (the what-it-takes margins, in the rated value's units)
    closest = []
    if rated.what:
        mb, mw = rated.what["margin_to_better"], rated.what["margin_to_worse"]
        cand = []
        for i in sel:
            if status[i] != "rated":
                continue
            for m_, d, lv in (
                (mb[i], "better", rated.what["better_level"][i]),
                (mw[i], "worse", rated.what["worse_level"][i]),
            ):
                if not math.isnan(_f(m_)):
                    cand.append((float(m_), str(ids[i]), d, str(lv), i))
        cand.sort(key=lambda t: (t[0], t[1], t[2]))
        for m_, fid, d, lv, i in cand[:10]:
            closest.append(
                {
                    "firm_id": fid,
                    "name": ident(i).get("firm_name") or "",
                    "level": L.level(plan.primary, str(levels[i]), str(levels[i])),
                    "colour": L.colour(str(levels[i])),
                    "direction": L.t(d),
                    "to": L.level(plan.primary, lv, lv),
                    "margin": _num(m_, f"what:margin_to_{d}:{fid}", L.sig(m_)),
                }
            )
    return {
        "lang": lang,
        "L": L,
        "kind": "portfolio",
        "title": f"{L.t('portfolio_report')} · {L.title(plan.title)} · {year}",
        "method": L.title(plan.title),
        "year": year,
        "summary": L.t("firms_rated", rated=len(sel) - n_unrated, unrated=n_unrated),
        "charts": [dist_chart, ind_chart],
        "size": {"head": size_head, "rows": size_rows},
        "incentives": inc_rows,
        "has_loans": rated.has_loans,
        "total_effect": _num(total_effect, "effect:total", L.num(total_effect, 0)),
        "total_loans": _num(total_loans, "loans:total", L.num(total_loans, 0)),
        "unrated": unrated,
        "migration": migration,
        "closest": closest,
        "value_name": L.name(_value_name(plan), ""),
        "provenance": {
            "rulebook": plan.id,
            "rulebook_title": L.title(plan.title),
            "version": plan.version,
            "hash": plan.hash,
            "engine": str(res["engine_version"][0]),
            "data": rated.data_name,
            "data_hash": rated.data_hash,
            "date": date,
        },
    }


def _value_name(plan: Any) -> str:
    from .model import _primary_value_name

    return _primary_value_name(plan)
