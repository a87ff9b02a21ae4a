"""Explain stage: the audit trail of one firm-year as plain data (rendering lives in the CLI).

A :class:`Trace` lists the rating decision(s), the incentive, and every node that fed them, each
with its formula, the values substituted for the names it uses, its unit and its result; every
parameter with the value in force for the firm's year and its cited source; every benchmark with
its peer group, number of peers and fallback level.  Values are read from the batch results, so
an explanation always shows exactly the numbers the batch produced.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.evaluator import row_frame
from ..io.data import Category
from ..rulebook.compiler import Plan, RatingSpec

if TYPE_CHECKING:
    from ..engine.results import Results

TRACE_SCHEMA_VERSION = "1.1"  # 1.1: notes (structured reasons and fallbacks)


@dataclass
class TraceNode:
    name: str
    kind: str  # input | parameter | variable | benchmark
    value: Any
    unit: str = ""
    formula: str = ""
    uses: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision:
    rating: str
    level: str
    value: float | None
    value_formula: str
    band: str
    because: str


@dataclass
class Trace:
    schema_version: str
    rulebook: dict[str, str]
    firm_id: str
    year: int
    status: str
    reasons: list[str]
    fallbacks: list[str]
    decisions: list[Decision]
    incentive: dict[str, Any]
    nodes: list[TraceNode]
    what_it_takes: dict[str, Any]
    replay: dict[str, Any]
    provenance: dict[str, Any]
    notes: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # kind → [{code, column, message}]

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2, sort_keys=False) + "\n"

    def node(self, name: str) -> TraceNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.floating | float):
        f = float(x)
        return None if math.isnan(f) else f
    if isinstance(x, np.integer):
        return int(x)
    return x


def _scalar(v: Any) -> Any:
    """One row's value of a formula piece, as the trace writes it (None for missing)."""
    f = float(np.asarray(v, dtype=np.float64).reshape(-1)[0])
    return None if math.isnan(f) else f


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "missing"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def _band_text(r: RatingSpec, i: int, plan: Plan, year: int) -> str:
    if r.levels:
        cond = r.levels[i][1]
        return "otherwise" if cond is None else cond.text

    def bound(b: Any) -> str:
        if isinstance(b, str):
            found = plan.parameters[b].value_for_year(year)
            return f"{b} = {_fmt(found[1]) if found else 'missing'}"
        return _fmt(float(b)) if b is not None else ""

    band = r.bands[i]
    lo = bound(band.lower) if band.lower is not None else "-inf"
    hi = bound(band.upper) if band.upper is not None else "inf"
    return f"({lo}, {hi}]" if r.closed == "right" else f"[{lo}, {hi})"


def trace_row(plan: Plan, results: Results, i: int, what_if: bool = True) -> Trace:
    """The trace of row ``i`` of ``results``; ``what_if=False`` skips "what it would take"."""
    batch = results.batch
    ev = results.evaluation
    assert batch is not None and ev is not None
    row = results.row(i)
    year = int(row["year"])

    def value_of(name: str) -> Any:
        if name in ev.values:
            v = ev.values[name]
        elif name in batch.columns:
            v = batch.columns[name]
        else:
            return None
        if isinstance(v, Category):
            return v.to_strings()[i] or None
        v = np.broadcast_to(v, (batch.n,))[i]
        return v if isinstance(v, str) else float(v)

    one_row = row_frame(plan, results, i)
    nodes: list[TraceNode] = []
    # the chain that decides: everything feeding the ratings, the checks and the standard columns
    import networkx as nx

    from ..rulebook.compiler import STANDARD_VARIABLES

    ends = [n for n in plan.nodes if plan.nodes[n].kind in ("rating", "check")]
    ends += [v for v in STANDARD_VARIABLES if v in plan.graph]
    wanted: set[str] = set()
    for end in ends:
        wanted.add(end)
        wanted |= nx.ancestors(plan.graph, end)
    order = [n for n in plan.graph.nodes if n in wanted]
    order.sort(key=lambda n: plan.graph.nodes[n]["order"])
    for name in order:
        kind = plan.kind_of(name) or ""
        detail: dict[str, Any]
        if kind == "input":
            spec = plan.inputs[name]
            detail = {"description": spec.description} if spec.description else {}
            if f"inputs.{name}" in plan.overrides:
                detail["overrides"] = plan.overrides[f"inputs.{name}"]
            nodes.append(TraceNode(name, "input", value_of(name), str(spec.unit or ""), detail=detail))
        elif kind == "parameter":
            p = plan.parameters[name]
            found = p.value_for_year(year)
            src = plan.sources.get(p.source, {})
            detail = {
                "effective": found[0] if found else None,
                "status": p.status,
                "source_title": src.get("title", ""),
            }
            if f"parameters.{name}" in plan.overrides:
                detail["overrides"] = plan.overrides[f"parameters.{name}"]
            val: Any = found[1] if found else None
            nodes.append(TraceNode(name, "parameter", val, str(p.unit), source=p.source, detail=detail))
        elif kind == "variable":
            node = plan.nodes[name]
            uses = {n: value_of(n) for n in node.expr.names if n not in plan.parameters} if node.expr else {}
            if node.expr is not None:
                for sub in ast.walk(node.expr.node):
                    if isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name):
                        # the evaluator's own lookup (fallback key and all) over this row alone
                        key = sub.slice.value if isinstance(sub.slice, ast.Constant) else value_of(sub.slice.id)  # type: ignore[attr-defined]
                        looked_up, _notes = one_row.evaluate_node(sub)
                        uses[f"{sub.value.id}[{key!r}]"] = _scalar(looked_up)
                    elif (
                        isinstance(sub, ast.Name) and sub.id in plan.parameters and not plan.parameters[sub.id].is_table
                    ):
                        found = plan.parameters[sub.id].value_for_year(year)
                        uses[sub.id] = found[1] if found else None
            unit = str(node.unit) if node.unit is not None else ""
            detail = {}
            if node.expr is not None:
                for sub in ast.walk(node.expr.node):
                    if (
                        isinstance(sub, ast.Call)
                        and isinstance(sub.func, ast.Name)
                        and sub.func.id == "coalesce"
                        and sub.args
                        and isinstance(sub.args[0], ast.Name)
                    ):
                        first = sub.args[0].id
                        got = value_of(first)
                        missing = got is None or (isinstance(got, float) and math.isnan(got))
                        detail.setdefault("measured_first", {})[first] = "default" if missing else "measured"
            if f"variables.{name}" in plan.overrides:
                detail["overrides"] = plan.overrides[f"variables.{name}"]
            origin = plan.source_map.origin("variables", name)
            if origin is not None:
                detail["defined_in"] = origin
            nodes.append(
                TraceNode(
                    name,
                    "variable",
                    value_of(name),
                    unit,
                    node.expr.text if node.expr else "",
                    uses,
                    node.spec.get("source", ""),
                    detail,
                )
            )
        elif kind == "benchmark":
            bm = plan.benchmarks[name]
            group_used = results[f"{name}_group"][i]
            key_label = None
            if group_used in bm.groups and group_used != "all":
                key_label = value_of(group_used)
            elif group_used == "fallback" and bm.fallback_key:
                key_label = value_of(bm.fallback_key)
            detail = {
                "statistic": bm.statistic,
                "groups": list(bm.groups),
                "min_peers": bm.min_peers,
                "group_used": group_used,
                "group": key_label,
                "peers": int(results[f"{name}_peers"][i]),
            }
            formula = (
                f"{bm.statistic}({bm.numerator}, {bm.denominator})"
                if bm.statistic == "ratio_of_sums"
                else f"{bm.statistic}({bm.of})"
            )
            nodes.append(
                TraceNode(
                    name,
                    "benchmark",
                    value_of(name),
                    str(bm.unit or ""),
                    formula,
                    source=bm.source,
                    detail=detail,
                )
            )
    decisions = []
    for rname, r in plan.ratings.items():
        level_idx = int(ev.levels[rname][i])
        x = value_of(f"rating:{rname}")
        if level_idx >= 0:
            band = _band_text(r, level_idx, plan, year)
            because = (
                f"{rname} {r.ids[level_idx]} because {r.value.text} = {_fmt(x)} is in {band}"
                if r.bands
                else f"{rname} {r.ids[level_idx]} because {band} holds for {r.value.text} = {_fmt(x)}"
            )
            decisions.append(Decision(rname, r.ids[level_idx], x, r.value.text, band, because))
        else:
            decisions.append(Decision(rname, "", x, r.value.text, "", f"{rname}: not rated ({_fmt(x)})"))
    incentive: dict[str, Any] = {}
    if plan.incentives and row.get("rating"):
        target_level = results[str(plan.incentives["rating"])][i]
        incentive = dict(plan.incentives["levels"].get(target_level, {}))
        rate_from = plan.incentives.get("rate_bp_from")
        if isinstance(rate_from, str):  # continuous pricing: the value of the firm's own formula
            incentive["rate_bp"] = float(results["incentive_rate_bp"][i])
            incentive["rate_bp_from"] = rate_from
            expr = plan.nodes[rate_from].expr
            incentive["rate_bp_formula"] = expr.text if expr is not None else ""
    # everything needed to replay this firm-year: its input rows (all its years, for prev()) and
    # the benchmark values it was given
    firm_rows = [i]
    if batch.firm_codes[i] >= 0:
        firm_rows = np.flatnonzero(batch.firm_codes == batch.firm_codes[i]).tolist()

    def typed_row(j: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for n, spec in plan.inputs.items():
            v = batch.columns[n]
            if isinstance(v, Category):
                out[n] = v.to_strings()[j] or None
            elif spec.type in ("string",):
                out[n] = str(v[j]) or None
            else:
                f = float(v[j])
                out[n] = None if math.isnan(f) else (int(f) if spec.type == "integer" else f)
        return out

    replay_rows = [typed_row(j) for j in firm_rows]

    def bench_at(name: str, j: int) -> Any:
        v = float(np.broadcast_to(ev.values[name], (batch.n,))[j])
        return None if math.isnan(v) else v

    given = {b: [bench_at(b, j) for j in firm_rows] for b in plan.benchmarks}
    input_row = typed_row(i)
    row_hash = hashlib.sha256(json.dumps(_clean(input_row), sort_keys=True).encode()).hexdigest()[:16]
    tables = {k: t.to_json() for k, t in sorted(results.tables.items())}
    table_hash = hashlib.sha256(json.dumps(_clean(tables), sort_keys=True).encode()).hexdigest()[:16]
    from .whatif import firm_steps

    what: dict[str, Any] = {}
    if row["status"] == "rated" and what_if:
        better, worse = firm_steps(plan, results, i)
        what = {
            "rating": plan.primary,
            "better": asdict(better) if better else None,
            "worse": asdict(worse) if worse else None,
        }
    return Trace(
        TRACE_SCHEMA_VERSION,
        {"id": plan.id, "title": plan.title, "version": plan.version, "hash": plan.hash, "file": plan.file},
        str(row["firm_id"]),
        year,
        row["status"],
        [note.message for note in results.notes("reasons", i)],
        [note.message for note in results.notes("fallbacks", i)],
        decisions,
        incentive,
        nodes,
        what,
        {"rows": replay_rows, "benchmarks": given, "row": firm_rows.index(i)},
        {
            "engine_version": row["engine_version"],
            "input_row_sha256": row_hash,
            "benchmark_tables_sha256": table_hash,
            "data_source": batch.source,
            "data_row": int(batch.row_numbers[i]),
        },
        {
            kind: [{"code": n.code, "column": n.column, "message": n.message} for n in results.notes(kind, i)]
            for kind in ("reasons", "fallbacks")
        },
    )


def verify(trace: dict[str, Any], book: Any = None) -> tuple[int, list[str]]:
    """Replay a trace (as JSON data): re-rate its rows with its benchmark values and compare.

    Returns (how many values were checked, the differences in trace order). ``book`` overrides
    the rulebook named in the trace (its file if it exists, else the bundled id).
    """
    from pathlib import Path

    from ..pipeline import rate
    from ..rulebook.loader import load

    meta = trace["rulebook"]
    if book is None:
        book = meta["file"] if Path(meta["file"]).is_file() else meta["id"]
    plan = load(book)
    problems: list[str] = []
    if plan.hash != meta["hash"]:
        problems.append(
            f"rulebook {plan.id} has changed since the trace was made: hash {plan.hash}, trace {meta['hash']}"
        )
    replay = trace["replay"]
    overrides = {
        b: np.array([math.nan if v is None else v for v in vals], dtype=np.float64)
        for b, vals in replay["benchmarks"].items()
    }
    results = rate(plan, replay["rows"], overrides=overrides)
    fresh = trace_row(plan, results, int(replay["row"])).to_dict()
    checked = 0

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            return a == b or (math.isnan(a) and math.isnan(b))
        return a == b

    old_nodes = {n["name"]: n for n in trace["nodes"]}
    for n in fresh["nodes"]:
        if n["kind"] == "benchmark":
            continue  # given, not recomputed
        old = old_nodes.get(n["name"])
        if old is None:
            problems.append(f"{n['name']}: not in the trace")
            continue
        checked += 1
        if not same(old["value"], n["value"]):
            problems.append(f"{n['name']}: trace {old['value']!r}, recomputed {n['value']!r}")
    for old, new in zip(trace["decisions"], fresh["decisions"], strict=False):
        checked += 1
        if old["level"] != new["level"]:
            problems.append(f"{old['rating']}: trace level {old['level']!r}, recomputed {new['level']!r}")
    checked += 1
    if trace["status"] != fresh["status"]:
        problems.append(f"status: trace {trace['status']}, recomputed {fresh['status']}")
    return checked, problems
