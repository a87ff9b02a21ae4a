"""The change report for a regulator: what changed between two rulebooks (with locations), the
old × new migration matrix as a heat map, the firms that moved and the lending effect, and which
change moved how many firms. Input: the result of :func:`ruleengine.analysis.diff.run` (the machinery of
``ruleengine diff``)."""

from __future__ import annotations

from typing import Any

from . import charts
from .i18n import Lang
from .model import _num


def _short(v: Any) -> str:
    from ..analysis.diff import MISSING, short

    return "—" if v is MISSING else short(v)


def change_context(result: dict[str, Any], lang: str = "zh", date: str | None = None) -> dict[str, Any]:
    from .. import __version__
    from ..errors import RuleEngineError
    from ..rulebook.loader import load

    o, n = result["old"], result["new"]
    L = Lang(lang, n["id"])
    if date is None:  # the new rulebook's effective date: a fact of the inputs, not of the clock
        try:
            date = str(load(n["file"]).effective or "")
        except RuleEngineError:
            date = ""
        date = date or "1970-01-01"
    edits = [
        {
            "kind": e.kind,
            "what": e.what,
            "name": e.name,
            "old": _short(e.old),
            "new": _short(e.new),
            "old_loc": e.old_loc,
            "new_loc": e.new_loc,
        }
        for e in result["edits"]
    ]
    imp = result.get("impact")
    impact = None
    if imp:
        m = imp["matrix"]

        def lab(x: str) -> str:
            return L.t("unrated") if x == "unrated" else L.level(_primary(n), x, x)

        rows = [lab(x) for x in m["rows"]]
        cols = [lab(x) for x in m["columns"]]
        heat = {
            "id": "migration",
            "title": L.t("migration_matrix"),
            "head": [f"{L.t('old')} \\ {L.t('new')}"] + cols,
            "rows": [[rows[k]] + [str(c) for c in m["counts"][k]] for k in range(len(rows))],
            "svg": charts.heatmap(
                "migration", L.t("migration_matrix"), rows, cols, m["counts"], (L.t("old"), L.t("new"))
            ),
            "empty": "",
        }
        lending = []
        for key, value in imp.get("lending", {}).items():
            label = {
                "rate_bp_sum_change": f"Σ Δ {L.t('rate_bp')} ({L.t('bp')})",
                "annual_interest_change_cny": L.t("interest_effect"),
                "loans_affected_10k_cny": L.t("loan"),
            }.get(key, key)
            lending.append({"label": label, "value": _num(value, f"lending:{key}", L.num(value, 0))})
        direction = {"up": L.t("up"), "down": L.t("down")}
        breakdowns = []  # every label set, its movers by every category (issue #19.2)
        for rname, mig in (imp.get("ratings") or {}).items():
            rows_by = []
            for key, groups in mig.get("by", {}).items():
                parts = [
                    f"{g}: " + ", ".join(f"{c} {direction.get(d, d)}" for d, c in counts.items())
                    for g, counts in groups.items()
                ]
                rows_by.append([key, "; ".join(parts) or L.t("none")])
            breakdowns.append(
                {"rating": rname, "moved": mig["moved"], "up": mig["up"], "down": mig["down"], "rows": rows_by}
            )
        impact = {
            "firm_years": imp["firm_years"],
            "moved": imp["moved"],
            "up": imp["up"],
            "down": imp["down"],
            "newly_unrated": imp["newly_unrated"],
            "heat": heat,
            "firms": [
                {
                    "firm_id": f["firm_id"],
                    "year": f["year"],
                    "old": lab(f["old"]),
                    "new": lab(f["new"]),
                    "direction": direction.get(f["direction"], f["direction"]),
                }
                for f in imp["firms"][:200]
            ],
            "more": max(0, len(imp["firms"]) - 200),
            "lending": lending,
            "breakdowns": breakdowns,
        }
    att = result.get("attribution")
    attribution = None
    if att:
        fwd = {s["change"]: s["moved"] for s in att["forward"]}
        rev = {s["change"]: s["moved"] for s in att["reverse"]}
        attribution = {
            "rows": [[a["change"], a["moved"], fwd.get(a["change"]), rev.get(a["change"])] for a in att["alone"]],
            "independent": att["order_independent"],
        }
    return {
        "lang": lang,
        "L": L,
        "kind": "change",
        "title": f"{L.t('change_report')} · {o['id']} {o['version']} → {n['id']} {n['version']}",
        "old": o,
        "new": n,
        "edits": edits,
        "warnings": result.get("warnings", []),
        "impact": impact,
        "attribution": attribution,
        "date": date,
        "engine": __version__,
    }


def _primary(meta: dict[str, Any]) -> str:
    from ..errors import RuleEngineError
    from ..rulebook.loader import load

    try:
        return str(load(meta["file"]).primary)
    except RuleEngineError:
        return ""
