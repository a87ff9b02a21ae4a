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
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.evaluator import row_frame
from ..errors import RuleEngineError
from ..io.data import Category
from ..rulebook.compiler import Plan, RatingSpec

if TYPE_CHECKING:
    from ..engine.results import Results

TRACE_SCHEMA_VERSION = "1.3"  # 1.1: notes (structured reasons and fallbacks); 1.2: digest, replay.tables;
# 1.3: identity, previous, data_quality (defaults, provenance), lending; what it takes for
# conditional levels and weighted scores (conditions, scores, cut direction); replay rows as read
NEW_IN_1_3 = ("identity", "previous", "data_quality", "lending")


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
    # who the firm is: firm_name, industry with its GB/T 4754-2017 names, city, size (None if absent)
    identity: dict[str, Any] = field(default_factory=dict)
    # the firm's latest earlier year in the data: its decisions and what changed ({} if none)
    previous: dict[str, Any] = field(default_factory=dict)
    # defaults taken ({input, why}) and, per input, its acquisition provenance ({input: {field: text}})
    data_quality: dict[str, Any] = field(default_factory=dict)
    # this borrower's loan and the yearly interest effect of the rate adjustment ({} without a loan)
    lending: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The trace as JSON data, ending with ``digest``: the SHA-256 of everything before it."""
        data = _clean(self)
        data["digest"] = digest(data)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2, sort_keys=False) + "\n"

    def node(self, name: str) -> TraceNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def _clean(x: Any) -> Any:
    """JSON data: dataclasses as dicts of their fields (``dataclasses.asdict``'s order), tuples as
    lists, numpy numbers as Python ones, NaN as None. One pass: ``asdict`` first deep-copies every
    leaf, which cost about a third of an explanation's time (issue #17's explain latency)."""
    t = type(x)
    if t is str or t is int or t is bool or x is None:
        return x
    if isinstance(x, float | np.floating):
        f = float(x)
        return None if math.isnan(f) else f
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if hasattr(t, "__dataclass_fields__"):
        return {f.name: _clean(getattr(x, f.name)) for f in fields(x)}
    return x


def digest(data: dict[str, Any]) -> str:
    """``sha256:`` of the canonical JSON (sorted keys, no spaces, UTF-8) of a trace without its
    ``digest`` field: a changed byte anywhere in the trace changes it."""
    body = {k: v for k, v in data.items() if k != "digest"}
    canon = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(canon.encode("utf-8")).hexdigest()


def _firm_tables(plan: Plan, results: Results, rows: list[int]) -> dict[str, Any]:
    """The entries of the run's benchmark tables that the firm's rows look up (their years, their
    group at every level, the fallback keys): enough to replay the lookups, peers and all."""
    ev = results.evaluation
    assert ev is not None and results.batch is not None
    years = {int(results["year"][j]) for j in rows}
    out: dict[str, Any] = {}
    for name, table in sorted(results.tables.items()):
        spec = plan.benchmarks.get(name)
        if spec is None:
            continue
        data = table.to_json()
        for level in data["levels"]:
            key = level["level"]
            if key == "all":
                labels = {"all"}
            elif key == "fallback":
                labels = {"*"}
                if spec.fallback_key:
                    labels |= _labels_at(results, spec.fallback_key, rows)
                if spec.fallback_parameter and plan.parameters[spec.fallback_parameter].fallback_key:
                    labels.add(str(plan.parameters[spec.fallback_parameter].fallback_key))
            else:
                labels = _labels_at(results, key, rows)
            level["groups"] = [g for g in level["groups"] if g["year"] in years and g["group"] in labels]
        out[name] = data
    return out


def _labels_at(results: Results, name: str, rows: list[int]) -> set[str]:
    ev, batch = results.evaluation, results.batch
    assert ev is not None and batch is not None
    v = ev.values.get(name)
    if v is None:
        v = batch.columns.get(name)
    if isinstance(v, Category):
        strings = v.to_strings()
        return {str(strings[j]) for j in rows if strings[j]}
    return set()


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


def find_firm(results: Results, firm_id: str, year: int | None = None) -> int:
    """The row of ``firm_id`` in ``year`` (its latest year by default), or a clear error with the
    years it has or the near matches of its id."""
    hits = results.find(firm_id, year)
    if not hits:
        import difflib

        ids = sorted(set(results["firm_id"].tolist()))
        wanted = str(firm_id)
        shown = wanted if len(wanted) <= 60 else wanted[:60] + "…"
        when = f" in {year}" if year is not None else ""
        if year is not None and wanted in ids:
            years = sorted({int(results["year"][i]) for i in results.find(wanted)})
            raise RuleEngineError(f"no firm '{shown}'{when} in the data; it has the years {', '.join(map(str, years))}")
        near = [i for i in ids if i.lower() == wanted.lower()]
        near += [i for i in difflib.get_close_matches(wanted, ids, n=5, cutoff=0.5) if i not in near]
        hint = f"; near matches: {', '.join(near[:5])}" if near else f" ({len(ids)} firms in the data)"
        raise RuleEngineError(f"no firm '{shown}'{when} in the data{hint}")
    if len(hits) > 1 and year is None:
        years = sorted({int(results["year"][i]) for i in hits})
        hits = [h for h in hits if int(results["year"][h]) == years[-1]]
    return hits[0]


def explain_firm(plan: Plan, results: Results, firm_id: str, year: int | None = None) -> Trace:
    """The trace of one firm-year of rated ``results`` (see :func:`find_firm`)."""
    return trace_row(plan, results, find_firm(results, firm_id, year))


def _pick(v: Any, i: int, n: int) -> Any:
    """``np.broadcast_to(v, (n,))[i]`` without building the view: row ``i`` of a column, or the
    value of a constant (a 0-d or one-element array, a number)."""
    if isinstance(v, np.ndarray):
        if v.ndim == 0:
            return v[()]
        if len(v) == n:
            return v[i]
    return np.broadcast_to(v, (n,))[i]


def _plan_chain(plan: Plan) -> tuple[list[str], dict[str, tuple[list[ast.AST], list[ast.Call]]]]:
    """The trace's chain of nodes in evaluation order (everything feeding the ratings, the checks
    and the standard columns) and, per variable, the parts of its formula the trace reads
    (subscripts and names; calls): worked out once per plan and kept on it, as the engine keeps its
    compiled formulas (``Plan.__getstate__`` leaves it out of the plan cache)."""
    got = plan.__dict__.get("_trace_chain")
    if got is not None:
        return got
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
    walks: dict[str, tuple[list[ast.AST], list[ast.Call]]] = {}
    for name in order:
        expr = getattr(plan.nodes.get(name), "expr", None)
        every = list(ast.walk(expr.node)) if plan.kind_of(name) == "variable" and expr is not None else []
        walks[name] = (
            [x for x in every if isinstance(x, ast.Subscript | ast.Name)],
            [x for x in every if isinstance(x, ast.Call)],
        )
    plan.__dict__["_trace_chain"] = (order, walks)
    return order, walks


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
            return v.label(i) or None
        v = _pick(v, i, batch.n)
        return v if isinstance(v, str) else float(v)

    one_row = row_frame(plan, results, i)
    nodes: list[TraceNode] = []
    chain, walks = _plan_chain(plan)
    for name in chain:
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
            subs, calls = walks[name]  # both empty without a formula
            for sub in subs:
                if isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name):
                    # the evaluator's own lookup (fallback key and all) over this row alone
                    key = sub.slice.value if isinstance(sub.slice, ast.Constant) else value_of(sub.slice.id)  # type: ignore[attr-defined]
                    looked_up, _notes = one_row.evaluate_node(sub)
                    uses[f"{sub.value.id}[{key!r}]"] = _scalar(looked_up)
                elif isinstance(sub, ast.Name) and sub.id in plan.parameters and not plan.parameters[sub.id].is_table:
                    found = plan.parameters[sub.id].value_for_year(year)
                    uses[sub.id] = found[1] if found else None
            unit = str(node.unit) if node.unit is not None else ""
            detail = {}
            for sub in calls:
                if (
                    isinstance(sub.func, ast.Name)
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

    context = results.context or {}
    defaults_of = _defaults_per_row(results)

    def replay_row(j: int) -> dict[str, Any]:
        """The row as the data gave it: a default taken is undone (the cell empty, or the column
        left out), so that the replay takes — and records — the same defaults; plus the context."""
        out = typed_row(j)
        for name, why in defaults_of(j):
            if why == "column absent":
                out.pop(name, None)
            elif name in out:
                out[name] = None
        for c in sorted(context):
            if context[c][j]:
                out[c] = context[c][j]
        return out

    replay_rows = [replay_row(j) for j in firm_rows]
    jur = batch.jurisdiction
    if jur is not None:  # the division each row was judged by, so that the replay judges alike
        labels = jur.division.labels
        for k, j in enumerate(firm_rows):
            c = int(jur.division.codes[j])
            if c >= 0 and labels[c].endswith("(region)"):
                replay_rows[k]["region"] = labels[c].split(" ", 1)[0]

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
    identity = _identity(plan, context, value_of, i)
    lending: dict[str, Any] = {}
    loan = _number(context["loan_amount_10k_cny"][i] if "loan_amount_10k_cny" in context else "")
    if loan is not None and isinstance(incentive.get("rate_bp"), int | float):
        bp = float(incentive["rate_bp"])
        # loan (10^4 CNY) x 10^4 CNY x bp x 10^-4 = loan_10k x bp CNY a year
        lending = {"loan_amount_10k_cny": loan, "rate_bp": bp, "annual_interest_change_cny": loan * bp}
    data_quality = {
        "defaults": [{"input": name, "why": why} for name, why in defaults_of(i)],
        "provenance": _provenance(plan, context, value_of, i),
    }
    previous = _previous(plan, results, i, firm_rows, value_of)
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
        {
            "rows": replay_rows,
            "benchmarks": given,
            "tables": _firm_tables(plan, results, firm_rows),
            "row": firm_rows.index(i),
            **({"any_jurisdiction": True} if jur is not None and jur.any_jurisdiction else {}),
        },
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
        identity,
        previous,
        data_quality,
        lending,
    )


def _number(text: Any) -> float | None:
    try:
        f = float(str(text).replace(",", "")) if text not in (None, "") else math.nan
    except ValueError:
        return None
    return None if math.isnan(f) else f


def _text_at(results: Results, name: str, j: int) -> str:
    """One row's text of a results column, without decoding the whole column."""
    enc = results.columns.encoded(name)
    if enc is not None:
        code = int(enc[0][j])
        return str(enc[1][code]) if 0 <= code < len(enc[1]) else ""
    return str(results[name][j] or "")


def _defaults_per_row(results: Results) -> Any:
    """row → [(input, why)] of the defaults it took, from the results' ``defaults`` column."""
    has = "defaults" in results.columns

    def of(j: int) -> list[tuple[str, str]]:
        if not has:
            return []
        text = _text_at(results, "defaults", j)
        out = []
        for part in text.split("; ") if text else []:
            name, _, why = part.partition(" (")
            out.append((name, why.rstrip(")")))
        return out

    return of


def _identity(plan: Plan, context: dict[str, Any], value_of: Any, i: int) -> dict[str, Any]:
    from ..io.identifiers import classification

    def get(name: str) -> Any:
        if name in context:
            return context[name][i] or None
        if name in plan.inputs:
            v = value_of(name)
            return v if isinstance(v, str) and v else None
        return None

    industry = get("industry")
    found = classification().get(str(industry)) if industry else None
    division = classification().get(str(industry)[:2]) if industry and len(str(industry)) >= 2 else None
    return {
        "firm_name": get("firm_name"),
        "industry": industry,
        "industry_name_zh": found.name_zh if found else None,
        "industry_name_en": found.name_en if found else None,
        "industry_division": f"{division.code} {division.name_zh}" if division else None,
        "city": get("city"),
        "size": get("size"),
    }


def _provenance(plan: Plan, context: dict[str, Any], value_of: Any, i: int) -> dict[str, dict[str, str]]:
    """Per input, the acquisition columns the data has for this row (``electricity_mwh_source``,
    ``_coverage``, ``_policy``, ...: io.data.PROVENANCE_SUFFIXES), as text; a rulebook that
    declares one of them as an input (a coverage threshold) gives its typed value."""
    from ..io.data import PROVENANCE_SUFFIXES

    out: dict[str, dict[str, str]] = {}
    for name in plan.inputs:
        fields: dict[str, str] = {}
        for suffix in PROVENANCE_SUFFIXES:
            col = f"{name}{suffix}"
            if col in context and context[col][i]:
                fields[suffix[1:]] = context[col][i]
            elif col in plan.inputs:
                v = value_of(col)
                if v is not None and not (isinstance(v, float) and math.isnan(v)):
                    fields[suffix[1:]] = _fmt(v)
        if fields:
            out[name] = fields
    return out


def _previous(plan: Plan, results: Results, i: int, firm_rows: list[int], value_of: Any) -> dict[str, Any]:
    """The firm's latest year before row ``i``'s: its decisions, and what changed since (the rated
    values, and each number input feeding the primary rating that differs)."""
    import networkx as nx

    ev = results.evaluation
    assert ev is not None
    years = results["year"]
    year = int(years[i])
    earlier = [j for j in firm_rows if int(years[j]) < year]
    if not earlier:
        return {}
    j = max(earlier, key=lambda k: int(years[k]))
    n = len(results)

    def num(name: str, k: int) -> float | None:
        v = ev.values.get(name)
        if v is None and results.batch is not None:
            v = results.batch.columns.get(name)
        if v is None or isinstance(v, Category):
            return None
        f = float(np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))[k])
        return None if math.isnan(f) else f

    decisions = []
    for rname, r in plan.ratings.items():
        lv = int(ev.levels[rname][j])
        decisions.append(
            {
                "rating": rname,
                "level": r.ids[lv] if lv >= 0 else "",
                "now": r.ids[int(ev.levels[rname][i])] if int(ev.levels[rname][i]) >= 0 else "",
                "value_formula": r.value.text,
                "value": num(f"rating:{rname}", j),
                "value_now": num(f"rating:{rname}", i),
            }
        )
    feeding = nx.ancestors(plan.graph, f"rating:{plan.primary}") if f"rating:{plan.primary}" in plan.graph else set()
    changes = []
    for name, spec in plan.inputs.items():
        if name not in feeding or spec.type not in ("number", "integer") or name == "year":
            continue
        a, b = num(name, j), num(name, i)
        if a != b and not (a in (None, 0.0) and b in (None, 0.0)):
            changes.append({"name": name, "unit": str(spec.unit or ""), "old": a, "new": b})
    return {
        "year": int(years[j]),
        "status": _text_at(results, "status", j),
        "decisions": decisions,
        "changes": changes,
    }


class TraceError(RuleEngineError):
    """A file that is not a well-formed ruleengine trace."""


# Fields that cannot be recomputed from the replay (where the rows came from, the hash of the
# whole run's tables): the digest covers them.
_NOT_RECOMPUTED = {("provenance", "data_source"), ("provenance", "data_row"), ("provenance", "benchmark_tables_sha256")}


def verify(trace: Any, book: Any = None) -> tuple[int, list[str]]:
    """Check a trace (as JSON data): its shape, its digest, and every field recomputed.

    The firm's rows kept in the trace are rated again with the benchmark table entries kept in
    it, the trace is rebuilt, and every field — identity, decisions and bands, incentive, texts,
    reasons, fallbacks, notes, every node and its peers, what it takes — is compared. Returns
    (how many values were compared, the differences in trace order, each naming its field).
    Raises :class:`TraceError` for data that is not a trace. ``book`` overrides the rulebook named
    in the trace (its file if it exists, else the bundled id).
    """
    from pathlib import Path

    from ..engine.benchmarks import BenchmarkTable
    from ..pipeline import rate, rate_with_context
    from ..rulebook.loader import load

    _check_shape(trace)
    problems: list[str] = []
    if "digest" in trace and trace["digest"] != digest(trace):
        problems.append("digest: the trace's content does not match its digest (it was changed after it was made)")
    meta = trace["rulebook"]
    if book is None:
        book = meta["file"] if Path(meta["file"]).is_file() else meta["id"]
    plan = load(book)
    if plan.hash != meta["hash"]:
        problems.append(
            f"rulebook.hash: rulebook {plan.id} has changed since the trace was made: "
            f"hash {plan.hash}, trace {meta['hash']}"
        )
    replay = trace["replay"]
    try:
        if "tables" in replay:
            tables = {name: BenchmarkTable.from_json(data) for name, data in replay["tables"].items()}
            results = rate_with_context(
                plan, replay["rows"], benchmarks=tables, any_jurisdiction=bool(replay.get("any_jurisdiction"))
            )
        else:  # traces before 1.2 kept the benchmark values only
            overrides = {
                b: np.array([math.nan if v is None else v for v in vals], dtype=np.float64)
                for b, vals in replay["benchmarks"].items()
            }
            results = rate(plan, replay["rows"], overrides=overrides)
        row = int(replay["row"])
        if not 0 <= row < len(results):
            raise TraceError(f"replay.row: {row} is not one of the {len(results)} replayed rows")
        fresh = trace_row(plan, results, row).to_dict()
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise TraceError(
            f"replay: the trace's rows or tables cannot be replayed ({type(exc).__name__}: {exc})"
        ) from None
    if _version(trace.get("schema_version", "1.0")) < (1, 3):  # fields a 1.2 trace could not have
        for key in NEW_IN_1_3:
            fresh.pop(key, None)
        for side in ("better", "worse"):
            step = (fresh.get("what_it_takes") or {}).get(side)
            if isinstance(step, dict):
                step.pop("conditions", None)
                step.pop("scores", None)
                for cut in step.get("cuts", []):
                    cut.pop("direction", None)
    counter = [0]
    _compare((), trace, fresh, problems, counter, legacy="tables" not in replay)
    return counter[0], problems


def _version(text: Any) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in str(text).split("."))
    except ValueError:
        return (0,)


def _check_shape(trace: Any) -> None:
    """A clear verdict for anything that is not a trace: the first schema error with its path."""
    if not isinstance(trace, dict):
        raise TraceError(f"not a ruleengine trace: a JSON {type(trace).__name__}, not an object")
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(_trace_schema())
    for error in sorted(validator.iter_errors(trace), key=lambda e: list(e.absolute_path)):
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        message = error.message if len(error.message) <= 200 else error.message[:200] + "…"
        raise TraceError(f"not a ruleengine trace: {message} (at {where})")


def _trace_schema() -> dict[str, Any]:
    from pathlib import Path

    return json.loads((Path(__file__).with_name("trace.schema.json")).read_text(encoding="utf-8"))


def _compare(path: tuple[Any, ...], old: Any, new: Any, problems: list[str], counter: list[int], legacy: bool) -> None:
    top = path[0] if path else None
    if top in ("digest", "replay", "schema_version") or path[:2] in _NOT_RECOMPUTED or path == ("rulebook", "file"):
        return
    if legacy and top == "nodes" and isinstance(old, dict) and old.get("kind") == "benchmark":
        return  # traces before 1.2: benchmark values were given, their peers not kept
    where = _path_text(path)
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                problems.append(f"{where}.{key}: in the trace, not in the recomputed trace")
        for key in new:
            if key not in old:
                if legacy and top is None and key in ("notes",):
                    continue
                problems.append(f"{_path_text((*path, key))}: missing from the trace")
                continue
            _compare((*path, key), old[key], new[key], problems, counter, legacy)
        return
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            problems.append(f"{where}: trace has {len(old)} entries, recomputed {len(new)}")
        for k, (a, b) in enumerate(zip(old, new, strict=False)):
            _compare((*path, k), a, b, problems, counter, legacy)
        return
    counter[0] += 1
    same = (
        old == new
        and type(old) is type(new)
        or (
            isinstance(old, int | float)
            and isinstance(new, int | float)
            and not isinstance(old, bool)
            and not isinstance(new, bool)
            and old == new
        )
    )
    if not same:
        problems.append(f"{where}: trace {old!r}, recomputed {new!r}")


def _path_text(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "$"
