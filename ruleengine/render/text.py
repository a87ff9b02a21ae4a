"""Renderers: pure functions from plans, results and traces to text. Nothing here computes a rating."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

from ..analysis.trace import Trace, _fmt
from ..engine.results import Results
from ..rulebook.compiler import Plan

_DOT_SHAPES = {
    "input": "box",
    "parameter": "note",
    "scale": "cds",
    "variable": "ellipse",
    "benchmark": "hexagon",
    "check": "diamond",
    "rating": "doubleoctagon",
}


def _graph_nodes(plan: Plan) -> list[str]:
    g = plan.graph
    return sorted(g.nodes, key=lambda n: g.nodes[n]["order"])


def graph_text(plan: Plan, fmt: str) -> str:
    g = plan.graph
    nodes = _graph_nodes(plan)
    edges = sorted(g.edges, key=lambda e: (g.nodes[e[1]]["order"], g.nodes[e[0]]["order"]))
    if fmt == "json":
        out: dict[str, Any] = {
            "rulebook": plan.id,
            "version": plan.version,
            "hash": plan.hash,
            "nodes": [],
            "edges": [],
        }
        for n in nodes:
            kind = g.nodes[n]["kind"]
            item: dict[str, Any] = {"id": n, "kind": kind}
            node = plan.nodes.get(n)
            if node is not None:
                item["stage"] = node.stage
                if node.expr is not None and kind != "benchmark":
                    item["expr"] = node.expr.text
                if node.unit is not None:
                    item["unit"] = str(node.unit)
            elif n in plan.inputs and plan.inputs[n].unit is not None:
                item["unit"] = str(plan.inputs[n].unit)
            elif n in plan.parameters:
                item["unit"] = str(plan.parameters[n].unit)
            out["nodes"].append(item)
        out["edges"] = [[a, b] for a, b in edges]
        return json.dumps(out, indent=2, ensure_ascii=False) + "\n"
    if fmt == "mermaid":

        def mid(n: str) -> str:
            return n.replace(":", "__")

        shapes = {
            "input": ("[/", "/]"),
            "parameter": ("[(", ")]"),
            "scale": ("[[", "]]"),
            "variable": ("(", ")"),
            "benchmark": ("{{", "}}"),
            "check": ("{", "}"),
            "rating": ("[[", "]]"),
        }
        lines = ["flowchart LR"]
        for n in nodes:
            a, b = shapes[g.nodes[n]["kind"]]
            lines.append(f'  {mid(n)}{a}"{n}"{b}')
        lines += [f"  {mid(a)} --> {mid(b)}" for a, b in edges]
        return "\n".join(lines) + "\n"
    lines = [f'digraph "{plan.id}" {{', "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for n in nodes:
        kind = g.nodes[n]["kind"]
        stage = plan.nodes[n].stage if n in plan.nodes else 0
        lines.append(f'  "{n}" [shape={_DOT_SHAPES[kind]}, tooltip="{kind}, stage {stage}"];')
    lines += [f'  "{a}" -> "{b}";' for a, b in edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def rate_summary(console: Any, results: Results, data: str, output: str | None, max_issues: int) -> None:
    from rich.table import Table

    plan = results.plan
    n = len(results)
    rated = (
        dict(results.distribution("status")).get("rated", 0)
        if results.columns.encoded("status")
        else int((results["status"] == "rated").sum())
    )
    table = Table(title=f"{plan.title} — {plan.id} {plan.version}", title_justify="left")
    table.add_column(plan.primary)
    table.add_column("firm-years", justify="right")
    table.add_column("share", justify="right")
    if "incentive_rate_bp" in results.columns:
        table.add_column("rate adj. (bp)", justify="right")
    inc = plan.incentives.get("levels", {}) if plan.incentives else {}
    for level, count in results.distribution():
        row = [level, f"{count:,}", f"{count / n:.1%}" if n else "-"]
        if "incentive_rate_bp" in results.columns:
            bp = inc.get(level, {}).get("rate_bp")
            row.append("" if bp is None else f"{bp:+g}")
        table.add_row(*row)
    console.print(table)
    incentive_summary(console, results)
    console.print(f"{n:,} firm-years from {data}: {rated:,} rated, {n - rated:,} unrated")
    if n - rated:
        reasons: Counter[str] = Counter()
        unrated = results["status"] == "unrated"
        if results.evaluation is not None:  # count each combination of notes once, by its rows
            codes, combos = results.evaluation.reasons
            per_combo = np.bincount(codes[unrated & (codes >= 0)], minlength=len(combos))
            for combo, count in zip(combos, per_combo.tolist(), strict=True):
                for what in dict.fromkeys(note.message.split(":", 1)[0] for note in combo):
                    reasons[what] += count
        top = ", ".join(f"{k} ({v})" for k, v in reasons.most_common(5))
        more = len(reasons) - 5
        if more > 0:  # say that the list is cut, and by how much
            top += f" and {more} more cause{'s' if more > 1 else ''} (see the data problems below)"
        console.print(f"unrated because of: {top}")
    fatal = [i for i in results.issues if i.fatal]
    other = [i for i in results.issues if not i.fatal]
    for group, title in ((fatal, "data problems"), (other, "data warnings")):
        if not group:
            continue
        console.print(f"{len(group)} {title}:")
        for issue in group[:max_issues]:
            console.print(f"  {issue.format()}", markup=False)
        if len(group) > max_issues:
            console.print(f"  ... and {len(group) - max_issues} more (see the reasons column)")
    if output:
        console.print(f"results written to {output}")


def contract_summary(
    console: Any, results: Results, benchmarks: str | None = None, exported: str | None = None
) -> None:
    """The data-contract block of the rate summary (issue #12.4/12.5), kept apart from the
    distribution above: jurisdiction, fallbacks taken by kind, provisional ratings, and the
    benchmark tables given or written."""
    from ..engine.results import placeholder_use

    plan, ev, batch = results.plan, results.evaluation, results.batch
    jur = batch.jurisdiction if batch is not None else None
    if jur is not None:
        counts = np.bincount(jur.status, minlength=4).tolist()
        parts = [f"{counts[0]:,} inside", f"{counts[1]:,} outside (unrated, not in the peer groups)"]
        if counts[2]:
            parts.append(f"{counts[2]:,} without a division (rated as inside; jurisdiction column 'unknown')")
        if jur.any_jurisdiction:
            parts.append(f"{counts[3]:,} outside rated and in the peer groups on request (--any-jurisdiction)")
        console.print(f"jurisdiction: {jur.describe()}: " + ", ".join(parts), markup=False)
    fallbacks = results.fallback_counts()
    if fallbacks:
        console.print(
            "fallbacks taken (rated firm-years): " + "; ".join(f"{k} {v:,}" for k, v in fallbacks), markup=False
        )
    if ev is not None:
        prov = np.asarray(results.columns.category("provisional").codes) >= 0  # type: ignore[union-attr]
        if prov.any():
            per = [f"{name} {int((rows & prov).sum()):,}" for name, rows in placeholder_use(plan, ev).items()]
            console.print(
                f"provisional: {int(prov.sum()):,} rated firm-years rest on a placeholder (unpublished) benchmark "
                f"value ({', '.join(per)}); column provisional",
                markup=False,
            )
    if benchmarks:
        console.print(f"benchmarks: the tables of {benchmarks} (peer groups not recomputed)", markup=False)
    if exported:
        console.print(f"benchmark tables written to {exported}", markup=False)


def incentive_rows(results: Results) -> list[list[str]]:
    """Per level of the incentive rating, best first: what it means for lending, in full.

    Rows of [level, firm-years, rate, credit policy, services, subsidy, source]: the rate is the
    level's ``rate_bp`` or, with continuous pricing (``rate_bp_from``), the range of the firms'
    own adjustments at that level; "-" where the rulebook gives no term."""
    plan = results.plan
    if not plan.incentives:
        return []
    rname = str(plan.incentives["rating"])
    labels = results[rname] if rname in results.columns else None
    counts: Counter[str] = Counter(labels.tolist()) if labels is not None else Counter()
    ranges: dict[str, tuple[float, float] | None] | None = None
    if isinstance(plan.incentives.get("rate_bp_from"), str) and "incentive_rate_bp" in results.columns:
        bp = np.asarray(results["incentive_rate_bp"], dtype=np.float64)
        ranges = {}
        for level in plan.ratings[rname].best_first():
            sel = bp[(labels == level) & ~np.isnan(bp)] if labels is not None else bp[:0]
            ranges[level] = (float(sel.min()), float(sel.max())) if sel.size else None
    return level_terms(plan, counts, ranges)


def level_terms(
    plan: Plan, counts: Any, ranges: dict[str, tuple[float, float] | None] | None = None
) -> list[list[str]]:
    """The rows of :func:`incentive_rows` from a plan, firm-years per level (``counts``) and, for
    continuous pricing, the (min, max) rate of the firms at each level (``ranges``)."""
    if not plan.incentives:
        return []
    rname = str(plan.incentives["rating"])
    levels = plan.incentives.get("levels", {})
    out = []
    for level in plan.ratings[rname].best_first():
        spec = levels.get(level, {})
        if isinstance(plan.incentives.get("rate_bp_from"), str):
            got = (ranges or {}).get(level)
            if ranges is None:
                rate = "per firm"  # the firms' own rates were not kept (rate --chunk-rows)
            elif got is None:
                rate = "-"
            elif got[0] == got[1]:
                rate = f"{got[0]:+.1f} bp"
            else:
                rate = f"{got[0]:+.1f} to {got[1]:+.1f} bp"
            rate += f" ({plan.incentives['rate_bp_from']})"
        else:
            rate = f"{spec['rate_bp']:+g} bp" if spec.get("rate_bp") is not None else "-"
        services = "; ".join(str(x) for x in spec.get("services", [])) or "-"
        subsidy = f"{spec['subsidy_pct']:g}%" if spec.get("subsidy_pct") is not None else "-"
        source = str(spec.get("source", "")) + (f" ({spec['status']})" if spec.get("status") else "")
        out.append(
            [level, f"{counts.get(level, 0):,}", rate, str(spec.get("credit_policy") or "-"), services, subsidy, source]
        )
    return out


def incentive_summary(console: Any, results: Results) -> None:
    """What each level means for credit (issue #19.4): rate, credit policy, services, subsidy."""
    incentive_table(console, results.plan, incentive_rows(results))


def incentive_table(console: Any, plan: Plan, rows: list[list[str]]) -> None:
    """Print :func:`level_terms` rows as a table (the ``rate`` summary, chunked or not)."""
    from rich.table import Table

    if not rows:
        return
    rname = str(plan.incentives["rating"])
    table = Table(title=f"what each {rname} means for lending", title_justify="left")
    for col in (rname, "firm-years", "rate adj.", "credit policy", "services", "subsidy", "source"):
        table.add_column(col, justify="right" if col == "firm-years" else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


WIDTH = 100  # text explanations wrap here: formulas are wrapped at spaces, never cut
_width = [WIDTH]  # Markdown renders the same sections unwrapped (its viewer wraps)


def _wrap(text: str, indent: str, first: str = "") -> list[str]:
    """``first + text`` wrapped at WIDTH on spaces (a formula's tokens are never split), the
    continuation lines indented two more than ``indent``."""
    import textwrap

    lines = textwrap.wrap(
        " ".join(text.split()),
        width=_width[0],
        initial_indent=indent + first,
        subsequent_indent=indent + "    ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return lines or [indent + first]


def _num(x: Any, unit: str = "") -> str:
    u = f" {unit}" if unit and unit != "1" else ""
    return f"{_fmt(x)}{u}"


def _zeroish(v: Any) -> bool:
    if v is None or v == "":
        return True
    if isinstance(v, int | float | np.floating) and not isinstance(v, bool):
        return bool(float(v) == 0.0 or np.isnan(float(v)))
    return False


def identity_line(trace: Trace) -> str:
    idt = trace.identity or {}
    parts = []
    if idt.get("industry"):
        name = idt.get("industry_name_zh") or ""
        en = idt.get("industry_name_en") or ""
        parts.append(
            f"industry {idt['industry']}"
            + (f" {name}" if name else "")
            + (f" ({en})" if en else "")
            + (f", division {idt['industry_division']}" if idt.get("industry_division") else "")
        )
    for key in ("city", "size"):
        if idt.get(key):
            parts.append(f"{key} {idt[key]}")
    return "; ".join(parts)


def incentive_text(incentive: dict[str, Any]) -> str:
    """An incentive entry in words: rate, credit policy, services, subsidy, source (status)."""
    if not incentive:
        return ""
    parts = []
    if incentive.get("rate_bp") is not None:
        rate = f"rate {float(incentive['rate_bp']):+.6g} bp"
        if incentive.get("rate_bp_from"):
            rate += f" (from {incentive['rate_bp_from']} = {incentive.get('rate_bp_formula', '')})"
        parts.append(rate)
    if incentive.get("credit_policy"):
        parts.append(f"credit policy: {incentive['credit_policy']}")
    if incentive.get("services"):
        parts.append("services: " + ", ".join(str(x) for x in incentive["services"]))
    if incentive.get("subsidy_pct") is not None:
        parts.append(f"subsidy {incentive['subsidy_pct']:g}%")
    if incentive.get("note"):
        parts.append(str(incentive["note"]))
    src = str(incentive.get("source", ""))
    if incentive.get("status"):
        src += f" ({incentive['status']})"
    if src:
        parts.append(f"source: {src}")
    return "; ".join(parts)


def _deciding(trace: Trace) -> list[str]:
    """Why, per decision: the rule that holds, the rated value's formula with its numbers, and the
    peers of any benchmark it uses."""
    import re

    nodes = {n.name: n for n in trace.nodes}
    out = []
    if trace.status != "rated":
        for r in trace.reasons:
            out += _wrap(f"unrated because {r}", "  ")
    for d in trace.decisions:
        out += _wrap(d.because, "  ")
        node = nodes.get(d.value_formula.strip())
        if node is not None and node.formula:
            out += _wrap(f"{node.name} = {node.formula}", "    ")
            if node.uses:
                out += _wrap(", ".join(f"{k} = {_fmt(v)}" for k, v in node.uses.items()), "      ")
            for k in node.uses:
                bm = nodes.get(k)
                if bm is not None and bm.kind == "benchmark":
                    peers = bm.detail
                    group = f"{peers['group_used']} {peers['group'] or ''}".strip()
                    out += _wrap(
                        f"{bm.name} = {_num(bm.value, bm.unit)}: {bm.formula} over {group} "
                        f"({peers['peers']} peers, at least {peers['min_peers']})",
                        "      ",
                    )
        if not d.band.startswith("(") and not d.band.startswith("[") and d.band not in ("", "otherwise"):
            names = [
                m
                for m in dict.fromkeys(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", d.band))
                if m in nodes and m != d.value_formula.strip()
            ]
            if names:
                out += _wrap(", ".join(f"{m} = {_num(nodes[m].value, nodes[m].unit)}" for m in names), "    ")
    return out


def _previous_lines(trace: Trace) -> list[str]:
    prev = trace.previous
    if not prev:
        return ["last year: no earlier year of this firm in the data"]
    out = []
    moves = []
    for d in prev["decisions"]:
        if d["level"] == d["now"]:
            moves.append(f"{d['rating']} {d['level'] or 'unrated'} (unchanged)")
        else:
            moves.append(f"{d['rating']} {d['level'] or 'unrated'} → {d['now'] or 'unrated'}")
    out += _wrap(f"{prev['year']}: {prev['status']}; " + ", ".join(moves), "  ", "")
    values = [
        f"{d['value_formula']} {_fmt(d['value'])} → {_fmt(d['value_now'])}"
        for d in prev["decisions"]
        if d["value"] != d["value_now"]
    ]
    changes = [f"{c['name']} {_fmt(c['old'])} → {_num(c['new'], c['unit'])}" for c in prev["changes"]]
    if values or changes:
        out += _wrap("what changed: " + "; ".join(values + changes), "  ")
    return ["last year:", *out]


def _quality_lines(trace: Trace) -> list[str]:
    q = trace.data_quality or {}
    out = ["data quality:"]
    defaults = q.get("defaults", [])
    if defaults:
        by_why: dict[str, list[str]] = {}
        for dft in defaults:
            by_why.setdefault(dft["why"], []).append(dft["input"])
        for why, names in by_why.items():
            out += _wrap(f"defaulted ({why}, the rulebook's default used): " + ", ".join(names), "  ")
    else:
        out.append("  defaults: none (every input was given)")
    if trace.fallbacks:
        for f in trace.fallbacks:
            out += _wrap(f"fallback: {f}", "  ")
    else:
        out.append("  fallbacks: none")
    for name, fields in (q.get("provenance") or {}).items():
        out += _wrap(f"{name} came from " + ", ".join(f"{k} {v}" for k, v in fields.items()), "  ")
    if trace.status == "rated":  # an unrated row's reasons open the "why"
        for r in trace.reasons:
            out += _wrap(f"reason: {r}", "  ")
    return out


def _folded(trace: Trace) -> set[str]:
    """Names the calculation folds: zero or missing inputs and variables (not the rated values or
    the standard totals), and parameters no shown variable uses."""
    keep = {d.value_formula.strip() for d in trace.decisions}
    keep |= {"emissions_tco2", "energy_tce", "scope1_tco2", "scope2_tco2", "year"}
    keep |= {n["column"] for kind in ("reasons", "fallbacks") for n in trace.notes.get(kind, []) if n.get("column")}
    folded = {
        n.name for n in trace.nodes if n.kind in ("input", "variable") and n.name not in keep and _zeroish(n.value)
    }
    used: set[str] = set()
    for n in trace.nodes:
        if n.kind == "variable" and n.name not in folded:
            used |= {k.split("[", 1)[0] for k in n.uses}
        if n.kind == "benchmark":
            used.add(n.name)
    folded |= {n.name for n in trace.nodes if n.kind == "parameter" and n.name not in used}
    return folded


def _node_lines(node: Any) -> list[str]:
    unit = f" {node.unit}" if node.unit and node.unit != "1" else ""
    if isinstance(node.value, dict):
        head = f"{node.name} = table of {len(node.value)} entries{unit}  ({node.kind})"
    else:
        head = f"{node.name} = {_fmt(node.value)}{unit}  ({node.kind})"
    out = _wrap(head, "  ")
    if node.formula:
        out += _wrap(f"= {node.formula}", "      ")
    if node.uses:
        out += _wrap(", ".join(f"{k} = {_fmt(v)}" for k, v in node.uses.items()), "      ")
    if node.kind == "parameter":
        out += _wrap(
            f"source: {node.source} ({node.detail.get('status', '')}), in force from "
            f"{node.detail.get('effective') or 'always'}",
            "      ",
        )
    if node.kind == "benchmark":
        peers = node.detail
        out += _wrap(
            f"peer group: {peers['group_used']} {peers['group'] or ''} "
            f"({peers['peers']} peers, min {peers['min_peers']})",
            "      ",
        )
    return out


def trace_lines(trace: Trace, show_all: bool = False) -> list[str]:
    """The explanation as plain text for people: first who, what was decided and why, what it
    means for credit, what it would take, last year, data quality; then the calculation (zero,
    missing and unused values folded unless ``show_all``). Lines are at most WIDTH wide where
    the words allow; nothing is cut."""
    idt = trace.identity or {}
    name = f" {idt['firm_name']}" if idt.get("firm_name") else ""
    out = _wrap(
        f"{trace.firm_id}{name} — {trace.year} — {trace.rulebook['id']} {trace.rulebook['version']} "
        f"({trace.rulebook['title']})",
        "",
    )
    ident = identity_line(trace)
    if ident:
        out += _wrap(ident, "")
    out.append("")
    head = ", ".join(f"{d.rating} {d.level or 'unrated'}" for d in trace.decisions)
    out.append(f"decision: {head} ({trace.status})")
    out.append("why:")
    out += _deciding(trace)
    if trace.incentive:
        out.append("incentive and what it opens:")
        out += _wrap(incentive_text(trace.incentive), "  ")
    if trace.lending:
        le = trace.lending
        out += _wrap(
            f"this borrower: loan {le['loan_amount_10k_cny']:,.6g} (10k CNY) x {le['rate_bp']:+g} bp = "
            f"{le['annual_interest_change_cny']:+,.2f} CNY interest a year",
            "  ",
        )
    wt = what_it_takes_lines(trace)
    if wt:
        out.append("what it takes:")
        for line in wt:
            lead = "    " if line.startswith("  ") else "  "
            out += _wrap(line.strip(), lead)
    out += _previous_lines(trace)
    out += _quality_lines(trace)
    out.append("")
    folded = set() if show_all else _folded(trace)
    shown = [n for n in trace.nodes if n.name not in folded]
    if folded:
        kinds = Counter(n.kind for n in trace.nodes if n.name in folded)
        what = ", ".join(f"{v} {k}{'s' if v != 1 else ''}" for k, v in sorted(kinds.items()))
        out += _wrap(
            f"calculation: {len(shown)} of {len(trace.nodes)} values; folded {what} that are zero, "
            "missing or unused (--all shows every value)",
            "",
        )
    else:
        out.append(f"calculation: all {len(trace.nodes)} values")
    for node in shown:
        out += _node_lines(node)
    p = trace.provenance
    out.append("")
    out += _wrap(
        f"rulebook {trace.rulebook['hash']}, engine {p['engine_version']}, input row {p['input_row_sha256']}, "
        f"benchmarks {p['benchmark_tables_sha256']}, {p['data_source']} row {p['data_row']}",
        "",
    )
    return out


def trace_text(console: Any, trace: Trace, show_all: bool = False) -> None:
    for line in trace_lines(trace, show_all):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def what_it_takes_lines(trace: Trace) -> list[str]:
    """What it would take to move up (and the room before moving down), for bands, conditional
    levels and weighted scores; sub-lines start with two spaces."""
    w = trace.what_it_takes
    if not w:
        return []
    out = []
    b = w.get("better")
    if b:
        if b.get("margin") is None:  # conditional levels: the condition of the nearest better level
            out.append(f"to reach {w['rating']} {b['level']}: {b['rule']} must hold (benchmarks held fixed)")
            for c in b.get("conditions", []):
                state = "holds" if c["holds"] else f"does not hold: {c['name']} must move by {_fmt(c['gap'])}"
                out.append(f"  {c['condition']}: {c['name']} = {_fmt(c['value'])}, {state}")
        else:
            out.append(
                f"to reach {w['rating']} {b['level']} ({b['rule']}): {b['value']:.6g} must move by "
                f"{b['margin']:.6g} (benchmarks held fixed)"
            )
        for sc in b.get("scores", []):
            top = f", at most {sc['max']:g}" if sc.get("max") is not None else ""
            if sc["reachable"]:
                out.append(
                    f"  raise {sc['score']} (weight {sc['weight']:.4g}) by {sc['needed']:.4g} points "
                    f"from {_fmt(sc['current'])}{top}"
                )
            else:
                out.append(
                    f"  {sc['score']} (weight {sc['weight']:.4g}) alone cannot: it would need "
                    f"{sc['needed']:.4g} more points from {_fmt(sc['current'])}{top}"
                )
        reached = False
        for c in b["cuts"]:
            if c["cut"] is None:
                out.append(f"  changing {c['what']} alone cannot reach it (current {c['current']:.6g} {c['unit']})")
            else:
                reached = True
                verb = "raise" if c.get("direction") == "raise" else "cut"
                out.append(
                    f"  {verb} {c['what']} by {c['cut']:.6g} {c['unit']} ({c['cut_pct']:.2f}% of {c['current']:.6g})"
                )
        if b.get("margin") is None and not reached:
            out.append("  no single input reaches it")
    else:
        out.append(f"{w['rating']}: already at the best level")
    wo = w.get("worse")
    if wo:
        if wo.get("margin") is None:
            out.append(f"falls to {w['rating']} {wo['level']} if {wo['rule'][5:-1]} stops holding")
        else:
            out.append(f"room before {w['rating']} {wo['level']} ({wo['rule']}): {wo['margin']:.6g}")
    return out


def _bullets(lines: list[str]) -> list[str]:
    """Indented text lines (two spaces a level) as nested Markdown bullets."""
    out = []
    for line in lines:
        depth = (len(line) - len(line.lstrip(" "))) // 2
        out.append("  " * max(depth - 1, 0) + "- " + line.strip().replace("|", "/"))
    return out


def trace_markdown(trace: Trace) -> str:
    """The explanation in Markdown: the same sections as the text (identity, decision, why,
    incentive, what it takes, last year, data quality), then every value of the calculation."""
    _width[0] = 10**9
    try:
        idt = trace.identity or {}
        name = f" {idt['firm_name']}" if idt.get("firm_name") else ""
        lines = [f"# {trace.firm_id}{name} — {trace.year}: {trace.rulebook['title']}", ""]
        lines.append(
            f"Rulebook `{trace.rulebook['id']}` {trace.rulebook['version']} (`{trace.rulebook['hash']}`), "
            f"status **{trace.status}**."
        )
        ident = identity_line(trace)
        if ident:
            lines += ["", ident[:1].upper() + ident[1:] + "."]
        lines += ["", "## Decision", ""]
        for d in trace.decisions:
            lines.append(f"- **{d.rating}: {d.level or 'unrated'}** — {d.because}")
        lines += ["", "## Why", ""]
        lines += _bullets(_deciding(trace))
        if trace.incentive:
            lines += ["", "## Incentive and what it opens", "", f"- {incentive_text(trace.incentive)}"]
            if trace.lending:
                le = trace.lending
                lines.append(
                    f"- this borrower: loan {le['loan_amount_10k_cny']:,.6g} (10k CNY) x {le['rate_bp']:+g} bp = "
                    f"{le['annual_interest_change_cny']:+,.2f} CNY interest a year"
                )
        wt = what_it_takes_lines(trace)
        if wt:
            lines += ["", "## What it would take", ""]
            lines += [f"- {line.strip()}" if not line.startswith("  ") else f"  - {line.strip()}" for line in wt]
        prev = _previous_lines(trace)
        lines += ["", "## Last year", ""]
        lines += _bullets(prev[1:] if len(prev) > 1 else ["  " + prev[0].split(": ", 1)[1]])
        lines += ["", "## Data quality", ""]
        lines += _bullets(_quality_lines(trace)[1:])
    finally:
        _width[0] = WIDTH
    lines += [
        "",
        "## Calculation",
        "",
        "| name | kind | value | unit | formula / source | values used |",
        "|---|---|---|---|---|---|",
    ]
    for node in trace.nodes:
        src = node.formula or (
            f"{node.source} ({node.detail.get('status', '')}, from {node.detail.get('effective') or 'always'})"
            if node.kind == "parameter"
            else ""
        )
        if node.kind == "benchmark":
            peers = node.detail
            src += f"; peers: {peers['group_used']} {peers['group'] or ''}, {peers['peers']} peers"
        uses = ", ".join(f"{k} = {_fmt(v)}" for k, v in node.uses.items())
        value = _fmt(node.value) if not isinstance(node.value, dict) else "table"
        lines.append(f"| {node.name} | {node.kind} | {value} | {node.unit} | {src.replace('|', '/')} | {uses} |")
    p = trace.provenance
    lines += [
        "",
        f"Provenance: engine {p['engine_version']}, input row sha256 `{p['input_row_sha256']}`, "
        f"benchmark tables sha256 `{p['benchmark_tables_sha256']}`, {p['data_source']} row {p['data_row']}.",
        "",
    ]
    return "\n".join(lines)


def diff_text(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    o, n = result["old"], result["new"]
    console.print(
        f"[bold]{o['id']} {o['version']}[/bold] ({o['file']}) → [bold]{n['id']} {n['version']}[/bold] ({n['file']})"
    )
    for w in result["warnings"]:
        console.print(f"[yellow]warning[/yellow]: {w}")
    edits = result["edits"]
    if not edits:
        console.print("no changes")
    for e in edits:
        console.print(f"{e.kind:8} {e.summary()}", markup=False)
        console.print(f"         old {e.old_loc}  new {e.new_loc}", markup=False, style="dim")
    imp = result.get("impact")
    if not imp:
        return
    ratings = imp.get("ratings") or {"rating": imp}
    for rname, mig in ratings.items():
        console.print(
            f"\n{rname}: {imp['firm_years']:,} firm-years, {mig['moved']:,} change "
            f"({mig['up']:,} up, {mig['down']:,} down, {mig['newly_unrated']:,} newly unrated, "
            f"{mig.get('newly_rated', 0):,} newly rated)",
            markup=False,
        )
        m = mig["matrix"]
        table = Table(title=f"{rname}: old (rows) × new (columns)", title_justify="left")
        table.add_column("")
        for c in m["columns"]:
            table.add_column(c, justify="right")
        for r, counts in zip(m["rows"], m["counts"], strict=True):
            table.add_row(r, *[str(c) if c else "·" for c in counts])
        console.print(table)
        for line in breakdown_lines(mig.get("by", {})):
            console.print(line, markup=False)
    for k, v in imp["lending"].items():
        console.print(f"{k}: {v:,.2f}")
    att = result.get("attribution")
    if att and att["alone"]:
        console.print("attribution (firm-years moved by each change alone; forward / reverse cumulative):")
        fwd = {s["change"]: s["moved"] for s in att["forward"]}
        rev = {s["change"]: s["moved"] for s in att["reverse"]}
        for a in att["alone"]:

            def fmt(v: Any) -> str:
                return "needs other changes" if v is None else str(v)

            console.print(
                f"  {a['change']}: {fmt(a['moved'])} ({fmt(fwd.get(a['change']))} / {fmt(rev.get(a['change']))})",
                markup=False,
            )
        console.print("  order-independent: " + ("yes" if att["order_independent"] else "no, the changes interact"))


def breakdown_lines(by: dict[str, dict[str, dict[str, int]]]) -> list[str]:
    """Movers per category, compactly: one wrapped line per category, ``group: N up, M down``
    for every group with a mover ("(none)" where the row has no value)."""
    out = []
    for key, groups in by.items():
        if not groups:
            out.append(f"  movers by {key}: none")
            continue
        parts = [f"{g}: " + ", ".join(f"{n} {d}" for d, n in counts.items()) for g, counts in groups.items()]
        out += _wrap("; ".join(parts), "  ", f"movers by {key}: ")
    return out


def compare_text(console: Any, result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(
        title=f"{result['firm_years']:,} firm-years under {len(result['methods'])} methods", title_justify="left"
    )
    for col in ("method", "boundary", "rated", "distribution (best first)"):
        table.add_column(col)
    for m in result["methods"]:
        table.add_row(
            f"{m['id']} {m['version']}",
            ", ".join(b.split(".")[1] for b in m["boundary"]),
            f"{m['rated']:,}",
            ", ".join(f"{k} {v}" for k, v in m["distribution"]),
        )
    console.print(table)
    cw = result.get("crosswalk")
    for p in result["pairs"]:
        same = p.get("same_common_grade")
        line = (
            f"{p['a']} vs {p['b']}: Spearman {p['spearman']:.3f}, Kendall tau-b {p['kendall_tau_b']:.3f}"
            f" on {p['both_rated']:,} firm-years rated by both"
        )
        if same is not None and cw:
            line += f"; same {cw['scale']} grade for {100 * same:.0f}%"
        console.print(line, markup=False)
        for d in p["largest_differences"]:
            name = f" {d['firm_name']}" if d["firm_name"] else ""
            console.print(
                f"  {d['firm_id']}{name} {d['year']}: {p['a']} {d[p['a'] + '_rating']} vs "
                f"{p['b']} {d[p['b'] + '_rating']} — {d['reason']}",
                markup=False,
            )
