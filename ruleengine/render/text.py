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


def trace_text(console: Any, trace: Trace) -> None:
    from rich.tree import Tree

    head = ", ".join(f"{d.rating} {d.level or 'unrated'}" for d in trace.decisions)
    tree = Tree(
        f"[bold]{trace.firm_id}[/bold] {trace.year} — {trace.rulebook['id']} "
        f"{trace.rulebook['version']}: {trace.status}; {head}"
    )
    for d in trace.decisions:
        tree.add(d.because)
    if trace.incentive:
        tree.add("incentive: " + "; ".join(f"{k}: {v}" for k, v in trace.incentive.items()))
    for r in trace.reasons:
        tree.add(f"[red]reason[/red]: {r}")
    for f in trace.fallbacks:
        tree.add(f"[yellow]fallback[/yellow]: {f}")
    for line in what_it_takes_lines(trace):
        tree.add(line)
    calc = tree.add("calculation")
    for node in trace.nodes:
        unit = f" {node.unit}" if node.unit and node.unit != "1" else ""
        label = f"[bold]{node.name}[/bold] = {_fmt(node.value)}{unit}  [dim]({node.kind})[/dim]"
        branch = calc.add(label)
        if node.formula:
            branch.add(f"= {node.formula}")
        if node.uses:
            branch.add(", ".join(f"{k} = {_fmt(v)}" for k, v in node.uses.items()))
        if node.kind == "parameter":
            branch.add(
                f"source: {node.source} ({node.detail.get('status', '')}), in force from "
                f"{node.detail.get('effective') or 'always'}"
            )
        if node.kind == "benchmark":
            peers = node.detail
            branch.add(
                f"peer group: {peers['group_used']} {peers['group'] or ''} "
                f"({peers['peers']} peers, min {peers['min_peers']})"
            )
    console.print(tree)
    p = trace.provenance
    console.print(
        f"[dim]rulebook {trace.rulebook['hash']}, engine {p['engine_version']}, input row "
        f"{p['input_row_sha256']}, benchmarks {p['benchmark_tables_sha256']}[/dim]"
    )


def what_it_takes_lines(trace: Trace) -> list[str]:
    w = trace.what_it_takes
    if not w:
        return []
    out = []
    b = w.get("better")
    if b:
        out.append(
            f"to reach {w['rating']} {b['level']} ({b['rule']}): {b['value']:.6g} must move by "
            f"{b['margin']:.6g} (benchmarks held fixed)"
        )
        for c in b["cuts"]:
            if c["cut"] is None:
                out.append(f"  cutting {c['what']} alone cannot reach it (current {c['current']:.6g} {c['unit']})")
            else:
                out.append(
                    f"  cut {c['what']} by {c['cut']:.6g} {c['unit']} ({c['cut_pct']:.2f}% of {c['current']:.6g})"
                )
    else:
        out.append(f"{w['rating']}: already at the best level")
    wo = w.get("worse")
    if wo:
        out.append(f"room before {w['rating']} {wo['level']} ({wo['rule']}): {wo['margin']:.6g}")
    return out


def trace_markdown(trace: Trace) -> str:
    lines = [f"# {trace.firm_id} — {trace.year}: {trace.rulebook['title']}", ""]
    lines.append(
        f"Rulebook `{trace.rulebook['id']}` {trace.rulebook['version']} (`{trace.rulebook['hash']}`), "
        f"status **{trace.status}**."
    )
    lines.append("")
    for d in trace.decisions:
        lines.append(f"- **{d.rating}: {d.level or 'unrated'}** — {d.because}")
    if trace.incentive:
        lines.append(f"- incentive: {'; '.join(f'{k}: {v}' for k, v in trace.incentive.items())}")
    for r in trace.reasons:
        lines.append(f"- reason: {r}")
    for f in trace.fallbacks:
        lines.append(f"- fallback: {f}")
    wt = what_it_takes_lines(trace)
    if wt:
        lines += ["", "## What it would take", ""]
        lines += [f"- {line.strip()}" if not line.startswith("  ") else f"  - {line.strip()}" for line in wt]
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
    console.print(
        f"\n{imp['firm_years']:,} firm-years: {imp['moved']:,} change rating "
        f"({imp['up']:,} up, {imp['down']:,} down, {imp['newly_unrated']:,} newly unrated)"
    )
    m = imp["matrix"]
    table = Table(title="old (rows) × new (columns)", title_justify="left")
    table.add_column("")
    for c in m["columns"]:
        table.add_column(c, justify="right")
    for r, counts in zip(m["rows"], m["counts"], strict=True):
        table.add_row(r, *[str(c) if c else "·" for c in counts])
    console.print(table)
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
