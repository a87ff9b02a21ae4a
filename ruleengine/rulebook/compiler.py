"""Compile stage: a validated document → a :class:`Plan`.

The plan holds every formula parsed and checked, the dependency graph of all names (networkx),
the evaluation order and the stage of every node (per-firm, population, per-firm again).  All
static checks happen here, collected rather than stopping at the first: unknown names with "did
you mean", cycles printed in full, unit mismatches, band gaps/overlaps, weights that do not sum to 1,
unused inputs and parameters.
"""

from __future__ import annotations

import ast
import keyword
import math
from typing import Any

from ..errors import Diagnostic, SourceLocation, raise_if_errors
from . import expressions as ex
from .plan import (  # noqa: F401 - re-exported for callers of the compiler
    GBT2260_PROVINCES,
    RESERVED,
    STANDARD_VARIABLES,
    Band,
    BenchmarkSpec,
    InputSpec,
    Node,
    ParamSpec,
    Plan,
    RatingSpec,
    ScaleSpec,
    SourceMap,
)
from .schema import validate_shape
from .source import Document, PathT
from .units import Unit


def _const_value(text: Any) -> float:
    """A parameter value: a number, or a constant formula such as "44/12" (numbers and + - * / only)."""
    if isinstance(text, int | float):
        return float(text)
    node = ast.parse(str(text).strip(), mode="eval").body

    def ev(n: ast.AST) -> float:
        if isinstance(n, ast.Constant) and isinstance(n.value, int | float) and not isinstance(n.value, bool):
            return float(n.value)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub | ast.UAdd):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add | ast.Sub | ast.Mult | ast.Div):
            a, b = ev(n.left), ev(n.right)
            if isinstance(n.op, ast.Add):
                return a + b
            if isinstance(n.op, ast.Sub):
                return a - b
            if isinstance(n.op, ast.Mult):
                return a * b
            return a / b
        raise ValueError("only numbers and + - * / are allowed in a constant")

    return ev(node)


def reserved_word(name: str) -> str | None:
    """Why ``name`` cannot be a name in formulas, or None: a Python keyword such as ``lambda``,
    which the formula parser reads as syntax, or a function of the formula language."""
    if keyword.iskeyword(name):
        return "is a reserved word of the formula syntax (a Python keyword) and cannot be a name in formulas"
    from .functions import FUNCTIONS

    if name in FUNCTIONS:
        return f"is a function of the formula language ({name}(...))"
    return None


class _Compiler:
    def __init__(self, doc: Document):
        self.doc = doc
        self.data: dict[str, Any] = doc.data
        self.diags: list[Diagnostic] = []
        self.library = "library" in doc.data
        self.unneeded_inputs: set[str] = set()
        self.params_: dict[str, ParamSpec] = {}

    # -- helpers ---------------------------------------------------------------------------------
    def error(self, msg: str, path: PathT, *, key: bool = False, related: tuple = ()) -> None:
        self.diags.append(Diagnostic(msg, self.doc.loc(path, key=key), "error", related))

    def warn(self, msg: str, path: PathT, *, key: bool = False) -> None:
        if self.library or self.doc.origin(path) is not None:
            return  # a library offers more than any one rulebook uses: not worth a warning
        self.diags.append(Diagnostic(msg, self.doc.loc(path, key=key), "warning"))

    def unit(self, text: str | None, path: PathT) -> Unit | None:
        if text is None:
            return None
        try:
            return Unit.parse(text)
        except ValueError as exc:
            self.error(str(exc), path)
            return None

    def parse_expr(self, text: str, path: PathT) -> ex.Expr | None:
        try:
            return ex.parse(text)
        except ex.ExpressionProblems as exc:
            for p in exc.problems:
                self.diags.append(Diagnostic(p.message, self.doc.scalar_loc(path, p.offset)))
            return None

    def source_ref(self, spec: dict[str, Any], path: PathT) -> None:
        src = spec.get("source")
        if src is not None and src not in self.data.get("sources", {}):
            from ..errors import did_you_mean

            self.error(f"unknown source '{src}'{did_you_mean(src, self.data.get('sources', {}))}", (*path, "source"))

    # -- sections --------------------------------------------------------------------------------
    def compile(self) -> Plan:
        d = self.data
        self.names: dict[str, tuple[str, PathT]] = {}
        for section, kind in (
            ("inputs", "input"),
            ("parameters", "parameter"),
            ("scales", "scale"),
            ("variables", "variable"),
            ("benchmarks", "benchmark"),
        ):
            for name in d.get(section, {}) or {}:
                path = (section, name)
                if name in RESERVED:
                    self.error(f"'{name}' is a reserved result column; choose another name", path, key=True)
                if name == ex.MISSING:
                    self.error(
                        f"'{name}' is the literal for a missing value in formulas; choose another name", path, key=True
                    )
                word = reserved_word(name)
                if word:
                    self.error(f"'{name}' {word}; choose another name", path, key=True)
                if name in self.names:
                    other_kind, other_path = self.names[name]
                    self.error(
                        f"'{name}' is defined twice: as {other_kind} and as {kind}",
                        path,
                        key=True,
                        related=(self.doc.loc(other_path, key=True),),
                    )
                    continue
                self.names[name] = (kind, path)
        inputs = self.compile_inputs()
        params = self.compile_parameters()
        self.params_ = params  # named weights are resolved while the variables compile
        scales = self.compile_scales()
        nodes: dict[str, Node] = {}
        benchmarks: dict[str, BenchmarkSpec] = {}
        for name, spec in (d.get("variables") or {}).items():
            node = self.compile_variable(name, spec)
            if node:
                nodes[name] = node
        for name, spec in (d.get("benchmarks") or {}).items():
            bm = self.compile_benchmark(name, spec)
            if bm:
                benchmarks[name] = bm
                deps = [x for x in (bm.of, bm.numerator, bm.denominator) if x]
                deps += [g for g in bm.groups if g != "all"]
                if bm.where:
                    deps += bm.where.names
                if bm.fallback_parameter:
                    deps.append(bm.fallback_parameter)
                    if bm.fallback_key:
                        deps.append(bm.fallback_key)
                nodes[name] = Node(
                    name,
                    "benchmark",
                    bm.where,
                    ex.NUMBER,
                    bm.unit,
                    spec,
                    self.doc.loc(("benchmarks", name), key=True),
                    tuple(dict.fromkeys(deps)),
                )
        for name, spec in (d.get("checks") or {}).items():
            path = ("checks", name)
            e = self.parse_expr(spec["expr"], (*path, "expr"))
            if e:
                nodes[f"check:{name}"] = Node(
                    f"check:{name}", "check", e, ex.BOOLEAN, None, spec, self.doc.loc(path, key=True), tuple(e.names)
                )
        ratings = self.compile_ratings(nodes)
        self.inputs, self.params, self.scales_, self.nodes = inputs, params, scales, nodes
        self.benchmarks = benchmarks
        self.check_names_and_units()
        graph, order = self.build_graph()
        self.check_bands(ratings)
        incentives, primary = self.compile_incentives(ratings) if not self.library else ({}, "")
        crosswalk = self.compile_crosswalk(ratings, primary)
        for std in STANDARD_VARIABLES if not self.library else ():
            if std not in nodes and std not in self.names:
                self.error(
                    f"every rulebook defines the standard variable '{std}' so that methods can be compared",
                    ("variables",),
                    key=True,
                )
        for must, typ in (("firm_id", "string"), ("year", "integer")):
            spec = inputs.get(must)
            if spec is None:
                self.error(f"the input '{must}' ({typ}, required: true) must be declared", ("inputs",), key=True)
            elif spec.type != typ or not spec.required:
                self.error(f"the input '{must}' must be type: {typ} with required: true", ("inputs", must))
        if not self.library:
            self.check_boundary(graph)
        jurisdiction, divisions = self.compile_jurisdiction() if not self.library else ("", ())
        raise_if_errors(self.diags)
        overrides = {f"{sec}.{name}": lib.file for (sec, name), lib in self.doc.overrides.items()}
        return Plan(
            id=d.get("id") or d["library"],
            title=d["title"],
            version=d["version"],
            effective=d.get("effective", ""),
            hash=self.doc.content_hash,
            file=self.doc.file,
            sources=d.get("sources", {}),
            boundary=tuple(d.get("boundary", [])),
            inputs={k: v for k, v in inputs.items() if k not in self.unneeded_inputs},
            parameters=params,
            scales=scales,
            nodes=nodes,
            order=order,
            benchmarks=benchmarks,
            ratings=ratings,
            primary=primary,
            incentives=incentives,
            tests=d.get("tests", []) or [],
            graph=graph,
            warnings=[x for x in self.diags if x.severity == "warning"],
            source_map=source_map(self.doc),
            overrides=overrides,
            is_library=self.library,
            crosswalk=crosswalk,
            divisions=divisions,
            jurisdiction=jurisdiction,
        )

    def compile_inputs(self) -> dict[str, InputSpec]:
        out = {}
        for name, spec in (self.data.get("inputs") or {}).items():
            path = ("inputs", name)
            typ = spec["type"]
            unit = self.unit(spec.get("unit"), (*path, "unit"))
            if typ != "number" and spec.get("unit"):
                self.error(f"only number inputs have a unit ('{name}' is {typ})", (*path, "unit"))
            default = spec.get("default")
            if default is not None:
                if typ in ("number", "integer") and not isinstance(default, int | float):
                    self.error(f"default of a {typ} input must be a number", (*path, "default"))
                if typ in ("string", "category") and not isinstance(default, str):
                    self.error(f"default of a {typ} input must be a quoted string", (*path, "default"))
            lo, hi = spec.get("min"), spec.get("max")
            if (lo is not None or hi is not None) and typ not in ("number", "integer"):
                self.error("min/max apply to number and integer inputs only", path)
            if lo is not None and hi is not None and lo > hi:
                self.error(f"min {lo} is greater than max {hi}", (*path, "min"))
            if isinstance(default, int | float) and (
                (lo is not None and default < lo) or (hi is not None and default > hi)
            ):
                self.error(f"default {default} is outside [min, max]", (*path, "default"))
            if spec.get("required") is False:
                self.error("write 'optional: true' or a 'default' instead of 'required: false'", (*path, "required"))
            absent = spec.get("absent", "error" if spec.get("required") else "default")
            if absent == "default" and spec.get("required"):
                self.error("a required input cannot take a default when its column is absent", (*path, "absent"))
            self.source_ref(spec, path)
            if "status" in spec and "source" not in spec:
                self.error("a status needs the source it qualifies", (*path, "status"))
            src_status = (self.data.get("sources", {}).get(spec.get("source"), {}) or {}).get("status")
            out[name] = InputSpec(
                name,
                typ,
                unit,
                bool(spec.get("required")),
                bool(spec.get("optional")),
                default,
                lo,
                hi,
                tuple(spec["values"]) if "values" in spec else None,
                spec.get("description", ""),
                self.doc.loc(path, key=True),
                absent,
                spec.get("source"),
                spec.get("status") or src_status,
            )
        return out

    def compile_parameters(self) -> dict[str, ParamSpec]:
        out = {}
        for name, spec in (self.data.get("parameters") or {}).items():
            path = ("parameters", name)
            unit = self.unit(spec["unit"], (*path, "unit")) or Unit()
            key_units = None
            if "units" in spec:
                key_units = {
                    k: u for k, v in spec["units"].items() if (u := self.unit(v, (*path, "units", k))) is not None
                }
            self.source_ref(spec, path)
            dated: list[tuple[str, Any]] = []
            raw: list[tuple[str, Any, PathT]] = []
            if "value" in spec:
                raw.append(("", spec["value"], (*path, "value")))
            elif "table" in spec:
                raw.append(("", spec["table"], (*path, "table")))
            else:
                prev = ""
                for date, value in spec["values"].items():
                    if date <= prev:
                        self.error(
                            f"effective dates must increase ({date} after {prev})", (*path, "values", date), key=True
                        )
                    prev = date
                    raw.append((date, value, (*path, "values", date)))
            kinds = {isinstance(v, dict) for _, v, _ in raw}
            if len(kinds) > 1:
                self.error("every dated value must be a number, or every one a table", path)
            is_table = kinds == {True}
            for date, value, vpath in raw:
                try:
                    if isinstance(value, dict):
                        conv = {}
                        for k, v in value.items():
                            try:
                                conv[k] = _const_value(v)
                            except (ValueError, SyntaxError, ZeroDivisionError) as exc:
                                self.error(f"bad value {v!r}: {exc}", (*vpath, k))
                        dated.append((date, conv))
                    else:
                        dated.append((date, _const_value(value)))
                except (ValueError, SyntaxError, ZeroDivisionError) as exc:
                    self.error(f"bad value {value!r}: {exc}", vpath)
            fb = spec.get("fallback_key")
            if fb is not None:
                if not is_table:
                    self.error("fallback_key applies to table parameters only", (*path, "fallback_key"))
                else:
                    for _date, value, vpath in raw:
                        if fb not in value:
                            self.error(f"fallback key '{fb}' is missing from this table", vpath)
            if key_units and not is_table:
                self.error("'units' (per key) applies to table parameters only", (*path, "units"))
            status = spec.get("status") or (self.data.get("sources", {}).get(spec["source"], {}) or {}).get(
                "status", ""
            )
            out[name] = ParamSpec(
                name, unit, is_table, dated, fb, key_units, spec["source"], status, self.doc.loc(path, key=True)
            )
        return out

    def compile_scales(self) -> dict[str, ScaleSpec]:
        out = {}
        for name, spec in (self.data.get("scales") or {}).items():
            path = ("scales", name)
            self.source_ref(spec, path)
            unit = self.unit(spec["unit"], (*path, "unit")) or Unit()
            in_unit = self.unit(spec.get("input_unit"), (*path, "input_unit"))
            if "piecewise" in spec:
                pts = spec["piecewise"]
                xs = tuple(self.named_number(p[0], in_unit, (*path, "piecewise", i, 0)) for i, p in enumerate(pts))
                ys = tuple(self.named_number(p[1], unit, (*path, "piecewise", i, 1)) for i, p in enumerate(pts))
                if any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
                    self.error("piecewise points must have strictly increasing x", (*path, "piecewise"))
                out[name] = ScaleSpec(name, "piecewise", xs, ys, "right", unit, in_unit, self.doc.loc(path, key=True))
            else:
                st = spec["steps"]
                edges = tuple(
                    self.named_number(v, in_unit, (*path, "steps", "edges", i)) for i, v in enumerate(st["edges"])
                )
                values = tuple(
                    self.named_number(v, unit, (*path, "steps", "values", i)) for i, v in enumerate(st["values"])
                )
                if len(values) != len(edges) + 1:
                    self.error(
                        f"steps need one more value than edges ({len(edges)} edges, {len(values)} values)",
                        (*path, "steps", "values"),
                    )
                if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                    self.error("step edges must strictly increase", (*path, "steps", "edges"))
                out[name] = ScaleSpec(
                    name, "steps", edges, values, st.get("closed", "right"), unit, in_unit, self.doc.loc(path, key=True)
                )
        return out

    def named_number(self, v: Any, unit: Unit | None, path: PathT) -> float:
        """A number of a scale, or the name of an undated scalar parameter in the scale's unit."""
        if not isinstance(v, str):
            return float(v)
        p = self.params_.get(v)
        if p is None or p.is_table or len(p.dated) != 1 or p.dated[0][0]:
            self.error(f"'{v}' must be an undated scalar parameter to stand in a scale", path)
            return math.nan
        if unit is not None and p.unit != unit:
            self.error(f"unit mismatch: parameter '{v}' is in {p.unit}, the scale needs {unit}", path)
        return float(p.dated[0][1])

    def unparsed(self, name: str, spec: dict[str, Any], unit: Unit | None) -> Node:
        """A variable whose formula was refused (reported): its name stays known, so its users are
        not flagged as unknown names too."""
        where = self.doc.loc(("variables", name), key=True)
        return Node(name, "variable", None, spec.get("type", "number"), unit, spec, where)

    def compile_variable(self, name: str, spec: dict[str, Any]) -> Node | None:
        path = ("variables", name)
        self.source_ref(spec, path)
        unit = self.unit(spec.get("unit"), (*path, "unit"))
        if "weights" in spec:
            weights = spec["weights"]
            values: dict[str, float] = {}
            for k in weights:
                word = "is the literal for a missing value in formulas" if k == ex.MISSING else reserved_word(k)
                if word:  # the weighted sum could not be written as a formula: the variable would vanish
                    self.error(f"weights key '{k}' {word}", (*path, "weights", k), key=True)
                    return self.unparsed(name, spec, unit)
            for k, v in weights.items():
                if isinstance(v, str):  # a named weight: an undated scalar parameter of unit 1
                    p = self.params_.get(v)
                    if p is None or p.is_table or len(p.dated) != 1 or p.dated[0][0]:
                        self.error(f"weight '{v}' must be an undated scalar parameter (unit 1)", (*path, "weights", k))
                        return None
                    values[k] = float(p.dated[0][1])
                else:
                    values[k] = float(v)
            total = sum(values.values())
            if not math.isclose(total, 1.0, abs_tol=1e-9):
                self.error(f"weights sum to {total:g}, not 1", (*path, "weights"))
            text = " + ".join(f"{k} * {v if isinstance(v, str) else repr(float(v))}" for k, v in weights.items())
            e: ex.Expr | None
            try:
                e = ex.parse(text)
            except ex.ExpressionProblems as exc:  # never silently: the variable would disappear
                self.error(f"the weights do not make a formula ({exc}): {text}", (*path, "weights"))
                return self.unparsed(name, spec, unit)
            spec = {**spec, "expr": text, "_from_weights": True}
        else:
            e = self.parse_expr(spec["expr"], (*path, "expr"))
        if "record" in spec and e is not None and not {"coalesce", "where", "safe_div"} & set(e.calls):
            self.error("'record' applies to a formula with coalesce(), where() or safe_div()", (*path, "record"))
        typ = spec.get("type", "number")
        if e is None:  # reported; keep the name known so its users are not flagged too
            return Node(name, "variable", None, typ, unit, spec, self.doc.loc(path, key=True))
        return Node(name, "variable", e, typ, unit, spec, self.doc.loc(path, key=True), tuple(e.names))

    def compile_benchmark(self, name: str, spec: dict[str, Any]) -> BenchmarkSpec | None:
        path = ("benchmarks", name)
        self.source_ref(spec, path)
        where = self.parse_expr(spec["where"], (*path, "where")) if "where" in spec else None
        fb = spec.get("fallback") or {}
        if fb and ("parameter" in fb) == ("value" in fb):
            self.error("a fallback has either 'parameter' (with 'key') or 'value'", (*path, "fallback"))
        if "key" in fb and "parameter" not in fb:
            self.error("'key' goes with 'parameter'", (*path, "fallback", "key"))
        groups = tuple(spec["groups"])
        if len(set(groups)) != len(groups):
            self.error("a peer group is listed twice", (*path, "groups"))
        sources = self.data.get("sources", {}) or {}
        if fb.get("parameter") in self.params_:
            status = self.params_[fb["parameter"]].status
        else:  # a fixed value: as sure as the benchmark itself
            status = spec.get("status") or (sources.get(spec.get("source"), {}) or {}).get("status", "")
        placeholder = bool(fb) and status == "assumed"
        return BenchmarkSpec(
            name,
            spec["statistic"],
            spec.get("of"),
            spec.get("numerator"),
            spec.get("denominator"),
            where,
            groups,
            int(spec.get("min_peers", 1)),
            fb.get("parameter"),
            fb.get("key"),
            float(fb["value"]) if "value" in fb else None,
            self.unit(spec.get("unit"), (*path, "unit")),
            self.doc.loc(path, key=True),
            str(spec.get("source", "")),
            placeholder,
        )

    def compile_jurisdiction(self) -> tuple[str, tuple[str, ...]]:
        """The jurisdiction's name and its GB/T 2260 division prefixes (none: all of China)."""
        j = self.data.get("jurisdiction")
        if not isinstance(j, dict):
            return (str(j) if j else "", ())
        path: PathT = ("jurisdiction",)
        self.source_ref(j, path)
        out = []
        for k, code in enumerate(j["divisions"]):
            where = (*path, "divisions", k)
            if code[:2] not in GBT2260_PROVINCES:
                self.error(f"'{code}': {code[:2]} is not a GB/T 2260 province-level code", where)
                continue
            short = code
            while len(short) > 2 and short.endswith("00"):
                short = short[:-2]
            if short != code:  # 330500 is the city's own code, not its districts (3305xx)
                self.error(
                    f"'{code}' would match that code only; a division and everything in it is its "
                    f"prefix: write '{short}'",
                    where,
                )
                continue
            out.append(code)
        return (str(j["name"]), tuple(out))

    def compile_ratings(self, nodes: dict[str, Node]) -> dict[str, RatingSpec]:
        out = {}
        for name, spec in (self.data.get("ratings") or {}).items():
            path = ("ratings", name)
            self.source_ref(spec, path)
            value = self.parse_expr(spec["value"], (*path, "value"))
            bands: list[Band] = []
            levels: list[tuple[str, ex.Expr | None, str]] = []
            deps: list[str] = list(value.names) if value else []
            ids: list[str] = []
            for b in spec.get("bands", []):
                bands.append(Band(str(b["id"]), b.get("lower"), b.get("upper"), b.get("label", "")))
                ids.append(str(b["id"]))
                deps += [x for x in (b.get("lower"), b.get("upper")) if isinstance(x, str)]
            for i, lv in enumerate(spec.get("levels", [])):
                ids.append(str(lv["id"]))
                if "when" in lv:
                    cond = self.parse_expr(lv["when"], (*path, "levels", i, "when"))
                    if cond:
                        deps += cond.names
                    levels.append((str(lv["id"]), cond, lv.get("label", "")))
                else:
                    if i != len(spec["levels"]) - 1:
                        self.error("'otherwise' must be the last level", (*path, "levels", i))
                    levels.append((str(lv["id"]), None, lv.get("label", "")))
            if levels and levels[-1][1] is not None:
                self.error(
                    "conditional levels end with a level marked 'otherwise: true', so every rated firm gets a level",
                    (*path, "levels"),
                )
            seen: set[str] = set()
            for i, lid in enumerate(ids):
                if lid in seen:
                    which = "bands" if bands else "levels"
                    self.error(f"level id '{lid}' is used twice", (*path, which, i, "id"))
                seen.add(lid)
            if value is None:
                continue
            rs = RatingSpec(
                name,
                value,
                spec.get("closed", "right"),
                spec["better"],
                bands,
                levels,
                bool(spec.get("primary")),
                spec.get("title", name),
                self.doc.loc(path, key=True),
            )
            out[name] = rs
            nodes[f"rating:{name}"] = Node(
                f"rating:{name}", "rating", value, ex.NUMBER, None, spec, rs.loc, tuple(dict.fromkeys(deps))
            )
        return out

    # -- checks over the whole plan ---------------------------------------------------------------
    def symbol(self, name: str) -> ex.Symbol | None:
        if name in self.inputs:
            s = self.inputs[name]
            typ = {"number": ex.NUMBER, "integer": ex.NUMBER, "category": ex.CATEGORY, "string": ex.STRING}[s.type]
            return ex.Symbol("input", typ, s.unit if s.unit is not None else ex.UNKNOWN)
        if name in self.params:
            p = self.params[name]
            if p.is_table:
                return ex.Symbol("table", ex.NUMBER, p.unit, p.keys, p.key_units)
            return ex.Symbol("parameter", ex.NUMBER, p.unit)
        if name in self.scales_:
            sc = self.scales_[name]
            return ex.Symbol("scale", ex.NUMBER, sc.unit, scale_input=sc.input_unit or ex.UNKNOWN)
        node = self.nodes.get(name)
        if node is not None and node.kind in ("variable", "benchmark"):
            if node.kind == "benchmark":
                return ex.Symbol("benchmark", ex.NUMBER, self.inferred.get(name, node.unit or ex.UNKNOWN))
            unit = node.unit if node.unit is not None else self.inferred.get(name, ex.UNKNOWN)
            return ex.Symbol("variable", node.type, unit)
        return None

    def check_names_and_units(self) -> None:
        """Type- and unit-check every formula in dependency order (so inferred units flow)."""
        import networkx as nx

        self.inferred: dict[str, Any] = {}
        all_names = sorted(self.names)
        g: Any = nx.DiGraph()
        for name, node in self.nodes.items():
            g.add_node(name)
            for dep in node.deps:
                if dep in self.nodes:
                    g.add_edge(dep, name)
        try:
            order = list(nx.topological_sort(g))
        except nx.NetworkXUnfeasible:
            order = list(self.nodes)  # cycles are reported by build_graph
        for name in order:
            node = self.nodes[name]
            if node.kind == "benchmark":
                self.check_benchmark(self.benchmarks[name], all_names)
                continue
            if node.expr is None:
                continue
            if node.kind == "variable":
                path: PathT = ("variables", name, "weights" if node.spec.get("_from_weights") else "expr")
            elif node.kind == "check":
                path = ("checks", name.split(":", 1)[1], "expr")
            else:
                path = ("ratings", name.split(":", 1)[1], "value")
            got, problems = ex.infer(node.expr, self.symbol, all_names)
            for p in problems:
                loc = self.doc.loc(path) if node.spec.get("_from_weights") else self.doc.scalar_loc(path, p.offset)
                self.diags.append(Diagnostic(p.message, loc))
            if node.kind == "variable":
                want = {"number": ex.NUMBER, "category": ex.CATEGORY, "boolean": ex.BOOLEAN}[node.type]
                if not problems and got.type != want and not (want == ex.NUMBER and got.type == ex.BOOLEAN):
                    self.error(
                        f"the formula gives a {got.type}, but the variable is declared type: {node.type}",
                        ("variables", name, "expr"),
                    )
                if node.unit is not None and isinstance(got.unit, Unit) and got.unit != node.unit and not problems:
                    self.error(
                        f"unit mismatch: the formula gives {got.unit}, but unit says {node.unit}",
                        ("variables", name, "unit"),
                    )
                self.inferred[name] = node.unit if node.unit is not None else got.unit
            elif node.kind == "check" and got.type != ex.BOOLEAN and not problems:
                self.error("a check's expr must be a condition (a comparison, all_of, any_of, ...)", path)
            elif node.kind == "rating":
                rname = name.split(":", 1)[1]
                rating = self.data["ratings"][rname]
                for i, lv in enumerate(rating.get("levels", [])):
                    if "when" not in lv:
                        continue
                    cond = ex.parse(lv["when"]) if self._parses(lv["when"]) else None
                    if cond is None:
                        continue
                    cgot, cprob = ex.infer(cond, self.symbol, all_names)
                    lpath = ("ratings", rname, "levels", i, "when")
                    for p in cprob:
                        self.diags.append(Diagnostic(p.message, self.doc.scalar_loc(lpath, p.offset)))
                    if not cprob and cgot.type != ex.BOOLEAN:
                        self.error("a level's 'when' must be a condition", lpath)
                if got.type != ex.NUMBER and not problems:
                    self.error(f"a rating's value must be a number, not a {got.type}", path)
                self.inferred[name] = got.unit

    @staticmethod
    def _parses(text: str) -> bool:
        try:
            ex.parse(text)
            return True
        except ex.ExpressionProblems:
            return False

    def check_benchmark(self, bm: BenchmarkSpec, all_names: list[str]) -> None:
        path: PathT = ("benchmarks", bm.name)
        from ..errors import did_you_mean

        def numeric(field_name: str, ref: str | None) -> ex.Symbol | None:
            if ref is None:
                return None
            sym = self.symbol(ref)
            if sym is None:
                self.error(f"unknown name '{ref}'{did_you_mean(ref, all_names)}", (*path, field_name))
            elif sym.type != ex.NUMBER or sym.kind in ("table", "scale"):
                self.error(f"'{ref}' must be a number (an input, variable or benchmark)", (*path, field_name))
            return sym

        of = numeric("of", bm.of)
        num = numeric("numerator", bm.numerator)
        den = numeric("denominator", bm.denominator)
        for i, g in enumerate(bm.groups):
            if g == "all":
                continue
            sym = self.symbol(g)
            if sym is None:
                self.error(f"unknown peer group '{g}'{did_you_mean(g, all_names + ['all'])}", (*path, "groups", i))
            elif sym.type != ex.CATEGORY:
                self.error(
                    f"peer group '{g}' must be a category (e.g. industry), not a {sym.type}", (*path, "groups", i)
                )
        if bm.where is not None:
            got, problems = ex.infer(bm.where, self.symbol, all_names)
            for prob in problems:
                self.diags.append(Diagnostic(prob.message, self.doc.scalar_loc((*path, "where"), prob.offset)))
            if not problems and got.type != ex.BOOLEAN:
                self.error("'where' must be a condition", (*path, "where"))
        if bm.fallback_parameter:
            p = self.params.get(bm.fallback_parameter)
            if p is None or not p.is_table:
                self.error(
                    f"fallback parameter '{bm.fallback_parameter}' must be a table parameter",
                    (*path, "fallback", "parameter"),
                )
            key = bm.fallback_key
            if key is None:
                self.error("a fallback table needs 'key': the category it is looked up by", (*path, "fallback"))
            elif (sym := self.symbol(key)) is None or sym.type != ex.CATEGORY:
                self.error(f"fallback key '{key}' must be a category", (*path, "fallback", "key"))
        unit: Any = ex.UNKNOWN
        if bm.statistic == "ratio_of_sums" and num and den:
            if isinstance(num.unit, Unit) and isinstance(den.unit, Unit):
                unit = num.unit / den.unit
        elif bm.statistic in ("mean", "median") and of:
            unit = of.unit
        elif bm.statistic == "percentile_rank":
            unit = Unit()
        if bm.unit is not None and isinstance(unit, Unit) and unit != bm.unit:
            self.error(f"unit mismatch: the {bm.statistic} gives {unit}, but unit says {bm.unit}", (*path, "unit"))
        if bm.fallback_parameter and (p := self.params.get(bm.fallback_parameter)) and bm.unit and p.unit != bm.unit:
            self.error(
                f"unit mismatch: fallback table in {p.unit}, benchmark in {bm.unit}", (*path, "fallback", "parameter")
            )
        self.inferred[bm.name] = bm.unit if bm.unit is not None else unit

    def build_graph(self) -> tuple[Any, list[str]]:
        import networkx as nx

        g: Any = nx.DiGraph()
        decl = 0
        for name in self.inputs:
            g.add_node(name, kind="input", order=decl)
            decl += 1
        for name in self.params:
            g.add_node(name, kind="parameter", order=decl)
            decl += 1
        for name in self.scales_:
            g.add_node(name, kind="scale", order=decl)
            decl += 1
        for name, node in self.nodes.items():
            g.add_node(name, kind=node.kind, order=decl)
            decl += 1
        for name, node in self.nodes.items():
            calls = node.expr.calls if node.expr is not None and node.kind != "benchmark" else []
            for dep in (*node.deps, *[c for c in calls if c in self.scales_]):
                if dep in g:
                    g.add_edge(dep, name)
        # Rows failing an error check are not peers: run such checks before every benchmark that
        # does not itself feed the check.
        for cname, cnode in self.nodes.items():
            if cnode.kind != "check" or cnode.spec.get("severity", "error") != "error":
                continue
            feeding = nx.ancestors(g, cname)
            for bname, bnode in self.nodes.items():
                if bnode.kind == "benchmark" and bname not in feeding:
                    g.add_edge(cname, bname)
        cycles = []
        for cyc in nx.simple_cycles(g):
            cycles.append(cyc)
            if len(cycles) >= 10:
                break
        for cyc in cycles:
            start = min(range(len(cyc)), key=lambda i: g.nodes[cyc[i]]["order"])
            cyc = cyc[start:] + cyc[:start]
            text = " → ".join([*cyc, cyc[0]])
            first = self.nodes[cyc[0]]
            related = tuple(self.nodes[c].loc for c in cyc[1:] if c in self.nodes)
            self.diags.append(Diagnostic(f"dependency cycle: {text}", first.loc, "error", related))
        if cycles:
            return g, []
        # An imported variable that nothing in this rulebook uses (e.g. the library's mobile CO2 in
        # a city that does not count it) is neither computed nor reported.
        needed: set[str] = set()
        for name, node in self.nodes.items():
            if node.kind != "variable" or self.doc.origin(("variables", name)) is None or name in STANDARD_VARIABLES:
                needed.add(name)
                needed |= nx.ancestors(g, name)
        order = [
            n
            for n in nx.lexicographical_topological_sort(g, key=lambda n: g.nodes[n]["order"])
            if n in self.nodes and (n in needed or self.library)
        ]
        # Likewise an imported input that only such variables use (the library's clinker or
        # vehicle fuel in a city that counts neither) is not read: a bad cell in it must not
        # leave a firm unrated by a method that does not look at it.
        if not self.library:
            self.unneeded_inputs = {
                i
                for i in self.inputs
                if i not in needed and i not in ("firm_id", "year") and self.doc.origin(("inputs", i)) is not None
            }
        stage: dict[str, int] = {}
        for name in nx.lexicographical_topological_sort(g, key=lambda n: g.nodes[n]["order"]):
            preds = [stage[p] for p in g.predecessors(name)]
            s = max(preds, default=0)
            if g.nodes[name]["kind"] == "benchmark":
                s = s + 1 if s % 2 == 0 else s + 2
            elif s % 2 == 1:
                s += 1
            stage[name] = s
            if name in self.nodes:
                self.nodes[name].stage = s
        # unused inputs / parameters / variables
        used_ends = {n for n, node in self.nodes.items() if node.kind in ("rating", "check")}
        for name in self.inputs:
            if name in ("firm_id", "year") or g.out_degree(name):
                continue
            self.warn(f"input '{name}' is declared but never used", ("inputs", name), key=True)
        for name in self.params:
            used_by_fallback = any(b.fallback_parameter == name for b in self.benchmarks.values())
            used_by_band = any(name in node.deps for node in self.nodes.values())
            if not g.out_degree(name) and not used_by_fallback and not used_by_band:
                self.warn(f"parameter '{name}' is declared but never used", ("parameters", name), key=True)
        for name in self.scales_:
            if not g.out_degree(name):
                self.warn(f"scale '{name}' is declared but never used", ("scales", name), key=True)
        feeds_result = set(used_ends)
        for end in used_ends:
            feeds_result |= nx.ancestors(g, end)
        for name, node in self.nodes.items():
            if node.kind != "variable" or name in feeds_result or name in STANDARD_VARIABLES:
                continue
            if node.spec.get("output") is True:
                continue
            self.warn(
                f"variable '{name}' feeds no rating or check; mark it 'output: true' if it is a reported indicator",
                ("variables", name),
                key=True,
            )
        return g, order

    def bound_values(self, bound: Any, path: PathT) -> list[float] | None:
        """A band bound as numbers: one, or one per effective date of a dated parameter."""
        if bound is None:
            return None
        if isinstance(bound, int | float):
            return [float(bound)]
        p = self.params.get(bound)
        if p is None:
            from ..errors import did_you_mean

            self.error(f"unknown parameter '{bound}'{did_you_mean(bound, self.params)}", path)
            return []
        if p.is_table:
            self.error(f"band bound '{bound}' must be a scalar parameter, not a table", path)
            return []
        return [v for _, v in p.dated]

    def check_levels(self, ratings: dict[str, RatingSpec]) -> None:
        """Warn about conditional levels that no firm can be given (rulebook/conditions.py)."""
        import math

        from .conditions import unreachable_levels

        def resolve(name: str) -> float | None:
            p = self.params.get(name)
            if p is None or p.is_table or len({v for _, v in p.dated}) != 1:
                return None
            return float(p.dated[0][1])

        ranges = {
            n: (
                -math.inf if s.min is None else float(s.min),
                s.min is not None,
                math.inf if s.max is None else float(s.max),
                s.max is not None,
            )
            for n, s in self.inputs.items()
            if s.min is not None or s.max is not None
        }
        for name, r in ratings.items():
            if not r.levels:
                continue
            for i, why in unreachable_levels(r.levels, resolve, ranges):
                self.warn(f"level '{r.ids[i]}' is unreachable: {why}", ("ratings", name, "levels", i))

    def check_bands(self, ratings: dict[str, RatingSpec]) -> None:
        self.check_levels(ratings)
        for name, r in ratings.items():
            if not r.bands:
                continue
            path: PathT = ("ratings", name, "bands")
            spec = self.data["ratings"][name]
            if isinstance(self.inferred.get(f"rating:{name}"), Unit):
                vunit = self.inferred[f"rating:{name}"]
                for i, b in enumerate(r.bands):
                    for side in ("lower", "upper"):
                        bound = getattr(b, side)
                        if isinstance(bound, str) and bound in self.params and self.params[bound].unit != vunit:
                            self.error(
                                f"unit mismatch: band bound '{bound}' is in {self.params[bound].unit}, "
                                f"the rated value in {vunit}",
                                (*path, i, side),
                            )
            # Resolve each bound per effective date; check every date's bands separately.
            dates = sorted(
                {
                    d
                    for b in r.bands
                    for bound in (b.lower, b.upper)
                    if isinstance(bound, str) and bound in self.params
                    for d, _ in self.params[bound].dated
                }
            )
            dates = dates or [""]
            for date in dates:

                def at(bound: Any, bpath: PathT, date: str = date) -> float | None:
                    if bound is None:
                        return None
                    if isinstance(bound, int | float):
                        return float(bound)
                    p = self.params.get(bound)
                    if p is None or p.is_table:
                        self.bound_values(bound, bpath)
                        return math.nan
                    found = p.value_for_year(int(date[:4])) if date else (p.dated[0] if p.dated else None)
                    return found[1] if found else p.dated[0][1]

                when = f" (values in force from {date})" if date else ""
                resolved = [
                    (at(b.lower, (*path, i, "lower")), at(b.upper, (*path, i, "upper"))) for i, b in enumerate(r.bands)
                ]
                if any(x is not None and math.isnan(x) for pair in resolved for x in pair):
                    break
                for i, (lo, hi) in enumerate(resolved):
                    bid = r.bands[i].id
                    if i > 0 and lo is None:
                        self.error(f"band '{bid}' has no lower bound but is not the first band", (*path, i))
                    if i < len(resolved) - 1 and hi is None:
                        self.error(f"band '{bid}' has no upper bound but is not the last band", (*path, i))
                    if lo is not None and hi is not None and lo >= hi:
                        self.error(f"band '{bid}' is empty: lower {lo:g} ≥ upper {hi:g}{when}", (*path, i))
                    if i > 0:
                        prev_hi = resolved[i - 1][1]
                        if prev_hi is not None and lo is not None and prev_hi != lo:
                            gap = "gap" if lo > prev_hi else "overlap"
                            lo_s, hi_s = f"{lo:g}", f"{prev_hi:g}"
                            span = f"({hi_s}, {lo_s}]" if gap == "gap" else f"({lo_s}, {hi_s}]"
                            if r.closed == "left":
                                span = span.replace("(", "[").replace("]", ")")
                            effect = "get no level" if gap == "gap" else "match two levels"
                            self.error(
                                f"{gap} between band '{r.bands[i - 1].id}' (upper {hi_s}) and band "
                                f"'{bid}' (lower {lo_s}): values in {span} {effect}{when}",
                                (*path, i, "lower"),
                                related=(self.doc.loc((*path, i - 1, "upper")),),
                            )
                dom = spec.get("domain") or {}
                dmin, dmax = dom.get("min"), dom.get("max")
                dmin = self.bound_values(dmin, ("ratings", name, "domain", "min"))
                dmax = self.bound_values(dmax, ("ratings", name, "domain", "max"))
                lo_d = dmin[0] if dmin else None
                hi_d = dmax[0] if dmax else None
                for i, (lo, hi) in enumerate(resolved):
                    bid = r.bands[i].id
                    if (lo_d is not None and hi is not None and (hi < lo_d or (hi == lo_d and r.closed == "left"))) or (
                        hi_d is not None and lo is not None and (lo > hi_d or (lo == hi_d and r.closed == "right"))
                    ):
                        self.warn(
                            f"level '{bid}' is unreachable: its band lies outside the value's domain "
                            f"[{lo_d if lo_d is not None else '-inf'}, {hi_d if hi_d is not None else 'inf'}]{when}",
                            (*path, i),
                        )

    def compile_incentives(self, ratings: dict[str, RatingSpec]) -> tuple[dict[str, Any], str]:
        primaries = [n for n, r in ratings.items() if r.primary]
        primary = ""
        if len(ratings) == 1 and not primaries:
            primary = next(iter(ratings))
        elif len(primaries) == 1:
            primary = primaries[0]
        elif len(primaries) > 1:
            for n in primaries[1:]:
                self.error("only one rating can be 'primary: true'", ("ratings", n, "primary"))
        elif ratings:
            self.error(
                "with several ratings, mark the one reported as 'rating' with 'primary: true'", ("ratings",), key=True
            )
        inc = self.data.get("incentives") or {}
        if not inc:
            return {}, primary
        target = inc.get("rating", primary)
        if target not in ratings:
            from ..errors import did_you_mean

            self.error(f"unknown rating '{target}'{did_you_mean(target, ratings)}", ("incentives", "rating"))
            return {}, primary
        ids = ratings[target].ids
        for lid, spec in inc["levels"].items():
            if lid not in ids:
                from ..errors import did_you_mean

                self.error(
                    f"incentive for unknown level '{lid}'{did_you_mean(lid, ids)}; levels of "
                    f"'{target}': {', '.join(ids)}",
                    ("incentives", "levels", lid),
                    key=True,
                )
            self.source_ref(spec, ("incentives", "levels", lid))
        out: dict[str, Any] = {"rating": target, "levels": inc["levels"]}
        src = inc.get("rate_bp_from")
        if src is not None:
            node = self.nodes.get(src)
            unit = node.unit if node is not None and node.unit is not None else self.inferred.get(src)
            if node is None or node.kind != "variable":
                from ..errors import did_you_mean

                names = [n for n, x in self.nodes.items() if x.kind == "variable"]
                self.error(f"unknown variable '{src}'{did_you_mean(src, names)}", ("incentives", "rate_bp_from"))
            elif not isinstance(unit, Unit) or str(unit) != "bp":
                self.error(f"'{src}' must be a variable in bp to price loans", ("incentives", "rate_bp_from"))
            else:
                out["rate_bp_from"] = src
        return out, primary

    def compile_crosswalk(self, ratings: dict[str, RatingSpec], primary: str) -> dict[str, dict[str, Any]]:
        """Maps from other rulebooks' levels onto this one's primary rating; targets must exist."""
        out = {}
        for other, spec in (self.data.get("crosswalk") or {}).items():
            path: PathT = ("crosswalk", other)
            self.source_ref(spec, path)
            if primary in ratings:
                ids = ratings[primary].ids
                for level, target in spec["map"].items():
                    if target not in ids:
                        from ..errors import did_you_mean

                        self.error(
                            f"'{target}' is not a level of {primary} ({', '.join(ids)}){did_you_mean(target, ids)}",
                            (*path, "map", level),
                        )
            out[other] = {"rating": spec["rating"], "map": dict(spec["map"])}
        return out

    def check_boundary(self, graph: Any) -> None:
        """A source category outside the declared boundary must not reach the emission totals."""
        import networkx as nx

        boundary = set(self.data.get("boundary", []) or [])
        totals = [t for t in ("scope1_tco2", "scope2_tco2", "emissions_tco2") if t in graph]
        counted: set[str] = set(totals)
        for t in totals:
            counted |= nx.ancestors(graph, t)
        for name, spec in (self.data.get("variables") or {}).items():
            cat = spec.get("boundary")
            if cat and cat not in boundary and name in counted:
                self.error(
                    f"'{name}' counts {cat} emissions into the totals, but the rulebook's boundary "
                    f"does not include {cat} (boundary: {', '.join(sorted(boundary)) or 'none'})",
                    ("variables", name, "boundary"),
                )


def source_map(doc: Document) -> SourceMap:
    """The locations a compiled plan keeps of its document (not the document itself)."""
    entries: dict[tuple[str, Any], SourceLocation] = {}
    origins: dict[tuple[str, str], str] = {}
    for section, body in doc.data.items():
        if isinstance(body, dict):
            for name in body:
                entries[(section, name)] = doc.loc((section, name), key=True)
                lib = doc.origin((section, name))
                if lib is not None:
                    origins[(section, str(name))] = lib.file
        elif isinstance(body, list):
            for i in range(len(body)):
                entries[(section, i)] = doc.loc((section, i))
    return SourceMap(doc.file, entries, origins, dict(doc.digests), tuple(doc.absent))


def compile_document(doc: Document) -> Plan:
    """Validate the shape of ``doc`` and compile it; raises RulebookError with every problem."""
    shape = validate_shape(doc)
    raise_if_errors(shape)
    return _Compiler(doc).compile()
