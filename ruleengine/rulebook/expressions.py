"""The formula language: parse with simpleeval, whitelist the syntax tree, infer types and units.

A formula is parsed once (``SimpleEval.parse``), walked against a whitelist of node kinds and a
fixed function vocabulary, and never handed to Python's ``eval``.  What is allowed:

* numbers, ``+ - * /``, ``**`` with a small constant exponent, comparisons (chains too), ``not``;
* names of inputs, parameters, variables and benchmarks; ``table['key']`` and ``table[category]``;
* the functions of the registry (:mod:`ruleengine.rulebook.functions`) and the rulebook's own
  scales (``advancement_score(x)``).

``and``/``or``/``x if c else y`` are rejected with a pointer to ``all_of``/``any_of``/``where``:
Python's versions short-circuit on one truth value and cannot work on whole columns.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simpleeval import SimpleEval

from ..errors import did_you_mean
from .units import Unit

MAX_EXPRESSION_LENGTH = 4000
MAX_POWER = 8
MAX_DEPTH = 200


NUMBER, BOOLEAN, CATEGORY, STRING = "number", "boolean", "category", "string"

# the literal for "no value": where(c, x, missing) leaves a value missing on purpose. It is a word
# of the language, not a name: no entry may be called so, and it is no dependency of a formula.
MISSING = "missing"


class _Literal:
    """Unit of a bare number: takes the unit of what it is added to, is dimensionless in products."""

    def __repr__(self) -> str:
        return "LITERAL"


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


LITERAL = _Literal()
UNKNOWN = _Unknown()
UnitT = Unit | _Literal | _Unknown


@dataclass
class Problem:
    message: str
    offset: int  # 0-based character offset into the formula text as written


@dataclass
class Expr:
    """A parsed, whitelisted formula: its text, syntax tree, and the names and functions it uses."""

    text: str
    node: ast.AST
    names: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    lead: int = 0  # offset of the parsed text's first character in the text as written
    line_starts: tuple[int, ...] = (0,)

    def offset(self, node: ast.AST) -> int:
        return _offset(node, self.line_starts, self.lead)

    def __str__(self) -> str:
        return self.text


_ALLOWED = (ast.Expr, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.Name, ast.Constant, ast.Subscript)
_OPERATORS = (
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.Pow,
    ast.USub,
    ast.UAdd,
    ast.Not,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.Eq,
    ast.NotEq,
)
_SKIP = (ast.expr_context, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)
_REJECT_HINTS: dict[type, str] = {
    ast.BoolOp: "'and'/'or' work on one truth value, not on columns: use all_of(a, b) / any_of(a, b)",
    ast.IfExp: "'x if c else y' works on one truth value, not on columns: use where(c, x, y)",
    ast.Attribute: "attribute access ('.') is not allowed in formulas",
    ast.Lambda: "lambda is not allowed in formulas",
    ast.List: "lists are not allowed in formulas; declare a scale or a table parameter instead",
    ast.Tuple: "tuples are not allowed in formulas",
    ast.Dict: "dicts are not allowed in formulas; declare a table parameter instead",
    ast.NamedExpr: "assignment is not allowed in formulas",
    ast.FloorDiv: "'//' is not allowed; use round() or a scale",
    ast.Mod: "'%' is not allowed in formulas",
    ast.In: "'in' is not allowed; compare with == and combine with any_of()",
    ast.NotIn: "'not in' is not allowed; compare with != and combine with all_of()",
    ast.Is: "'is' is not allowed; use == or is_missing()",
    ast.IsNot: "'is not' is not allowed; use != or is_missing()",
}


def _offset(node: ast.AST, line_starts: tuple[int, ...], lead: int) -> int:
    line = getattr(node, "lineno", 1)
    col = getattr(node, "col_offset", 0)
    start = line_starts[line - 1] if 0 < line <= len(line_starts) else 0
    return max(start + col + lead, 0)


def parse(text: str) -> Expr:
    """Parse and whitelist ``text``; raises :class:`ExpressionProblems` listing every problem."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionProblems([Problem(f"formula longer than {MAX_EXPRESSION_LENGTH} characters", 0)])
    lead = len(text) - len(text.lstrip())
    body = text.strip()
    if not body:
        raise ExpressionProblems([Problem("empty formula", 0)])
    if "\n" in body:  # a folded multi-line formula reads as one expression
        body = "(" + body + ")"
        lead -= 1
    line_starts = [0]
    for i, ch in enumerate(body):
        if ch == "\n":
            line_starts.append(i + 1)
    starts = tuple(line_starts)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            node = SimpleEval.parse(body)
    except SyntaxError as exc:
        fake = ast.Constant(0, lineno=exc.lineno or 1, col_offset=max((exc.offset or 1) - 1, 0))
        raise ExpressionProblems([Problem(f"syntax error: {exc.msg}", _offset(fake, starts, lead))]) from None
    except Warning:
        raise ExpressionProblems(
            [Problem("a formula is one expression: no ';' or several lines of statements", max(lead, 0))]
        ) from None
    problems: list[Problem] = []
    names: list[str] = []
    calls: list[str] = []

    def pos(n: ast.AST) -> tuple[int]:
        return (_offset(n, starts, lead),)

    def walk(n: ast.AST, depth: int) -> None:
        if depth > MAX_DEPTH:
            problems.append(Problem("formula nested too deeply", *pos(n)))
            return
        if not isinstance(n, _ALLOWED):
            hint = _REJECT_HINTS.get(type(n), f"'{type(n).__name__}' is not allowed in formulas")
            problems.append(Problem(hint, *pos(n)))
            return
        ops = [n.op] if isinstance(n, ast.BinOp | ast.UnaryOp) else list(n.ops) if isinstance(n, ast.Compare) else []
        for op in ops:  # operators carry no position: report them at their expression
            if not isinstance(op, _OPERATORS):
                hint = _REJECT_HINTS.get(type(op), f"operator '{type(op).__name__}' is not allowed in formulas")
                problems.append(Problem(hint, *pos(n)))
                return
        if isinstance(n, ast.Expr) and not isinstance(n.value, ast.expr):
            problems.append(Problem("not an expression", *pos(n)))
            return
        if isinstance(n, ast.Name):
            if n.id.startswith("_"):
                problems.append(Problem(f"names starting with '_' are not allowed: '{n.id}'", *pos(n)))
            elif n.id != MISSING and n.id not in names:
                names.append(n.id)
        elif isinstance(n, ast.Constant):
            if not isinstance(n.value, int | float | str) or isinstance(n.value, bool):
                problems.append(Problem(f"constant {n.value!r} is not allowed", *pos(n)))
            elif isinstance(n.value, str) and len(n.value) > 100:
                problems.append(Problem("string constant too long", *pos(n)))
        elif isinstance(n, ast.Call):
            if not isinstance(n.func, ast.Name):
                problems.append(Problem("only named functions can be called", *pos(n)))
                return
            if n.func.id.startswith("_"):
                problems.append(Problem(f"names starting with '_' are not allowed: '{n.func.id}'", *pos(n)))
                return
            if n.keywords:
                problems.append(Problem(f"{n.func.id}() takes no keyword arguments", *pos(n.keywords[0].value)))
            if any(isinstance(a, ast.Starred) for a in n.args):
                problems.append(Problem("'*' arguments are not allowed", *pos(n)))
            calls.append(n.func.id)
            for a in n.args:
                walk(a, depth + 1)
            return
        elif isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow):
            exp = n.right
            value = exp.value if isinstance(exp, ast.Constant) else None
            if isinstance(exp, ast.UnaryOp) and isinstance(exp.op, ast.USub) and isinstance(exp.operand, ast.Constant):
                value = -exp.operand.value if isinstance(exp.operand.value, int | float) else None
            if not isinstance(value, int | float) or abs(value) > MAX_POWER:
                problems.append(
                    Problem(f"'**' needs a constant exponent between -{MAX_POWER} and {MAX_POWER}", *pos(exp))
                )
                return
        elif isinstance(n, ast.Subscript):
            if not isinstance(n.value, ast.Name):
                problems.append(Problem("only a table parameter can be indexed: name['key']", *pos(n)))
                return
            sl = n.slice
            if not (isinstance(sl, ast.Name) or (isinstance(sl, ast.Constant) and isinstance(sl.value, str))):
                problems.append(
                    Problem(
                        "a table is indexed by a quoted key or a category name: ncv['raw_coal'], grid_ef[grid_region]",
                        *pos(sl),
                    )
                )
                return
        for child in ast.iter_child_nodes(n):
            if not isinstance(child, _SKIP):
                walk(child, depth + 1)

    walk(node, 0)
    if not problems:
        problems = mixed_years(node, pos)
    if problems:
        raise ExpressionProblems(problems)
    return Expr(text=body, node=node, names=names, calls=calls, lead=lead, line_starts=starts)


_PANEL_FALLBACK_ARG = {"prev": 1, "baseline": 2}  # position of the `otherwise` argument


def mixed_years(tree: ast.AST, pos: Callable[[ast.AST], tuple[int]]) -> list[Problem]:
    """A formula whose other-year terms could come from different years (issue #13.7).

    ``prev(a) / prev(b)`` reads both from the firm's previous-year row: one year, or missing.
    With a fallback, ``prev(a, 0) / prev(b, 1)`` does not: where the previous-year row lacks ``b``
    but has ``a``, the quotient divides last year's ``a`` by a substitute, and a ``prev(x, x)``
    mixes last year with this year. So: terms taken from the same year (``prev``, or ``baseline``
    of one year) that make one value may carry a fallback only if there is one such term — write
    ``prev(a / b, fallback)``: the whole expression from one year, or the fallback. The condition
    and the two branches of ``where()`` are apart (a row takes one branch): a guard such as
    ``where(prev(e, 0) > 0, prev(a) + prev(b), 0)`` is fine."""
    groups: dict[tuple[int, str], list[tuple[str, ast.Call]]] = {}
    todo: list[tuple[ast.AST, int]] = [(tree, 0)]
    contexts = 0
    while todo:
        n, ctx = todo.pop()
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _PANEL_FALLBACK_ARG:
            name = n.func.id
            at = n.args[1] if name == "baseline" and len(n.args) > 1 else None
            key = "the previous year" if name == "prev" else f"year {ast.unparse(at) if at else '?'}"
            groups.setdefault((ctx, key), []).append((name, n))
            todo.extend((a, ctx) for a in n.args[1:])  # the first argument is computed in that other year
            continue
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "where" and len(n.args) == 3:
            for a in n.args:  # a row takes one branch: the condition and each branch are apart
                contexts += 1
                todo.append((a, contexts))
            continue
        todo.extend((c, ctx) for c in ast.iter_child_nodes(n))
    problems: list[Problem] = []
    for (_, key), found in groups.items():
        ordered = sorted(found, key=lambda fc: (fc[1].lineno, fc[1].col_offset))
        calls = [c for _, c in ordered]
        with_fallback = [(f, c) for f, c in ordered if len(c.args) > _PANEL_FALLBACK_ARG[f]]
        if len(calls) < 2 or not with_fallback:
            continue
        fn, c = with_fallback[0]
        terms = ", ".join(ast.unparse(x.args[0]) for x in calls)
        joined = " and ".join(dict.fromkeys(ast.unparse(x.args[0]) for x in calls))
        year = "" if fn == "prev" else f", {ast.unparse(c.args[1])}"
        problems.append(
            Problem(
                f"{len(calls)} terms of this formula are taken from {key} ({terms}) and "
                f"{ast.unparse(c)} has a fallback: where it falls back and the others do not, the "
                f"formula mixes years. Take the whole expression from one year, e.g. "
                f"{fn}(<the formula of {joined}>{year}, fallback)",
                *pos(c),
            )
        )
    return problems


class ExpressionProblems(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


@dataclass(frozen=True)
class Symbol:
    """What a name means to the type checker."""

    kind: str  # input, parameter, table, variable, benchmark, scale
    type: str = NUMBER
    unit: UnitT = UNKNOWN
    keys: tuple[str, ...] = ()  # table keys
    key_units: dict[str, Unit] | None = None
    scale_input: UnitT = UNKNOWN


Lookup = Callable[[str], Symbol | None]


@dataclass
class Inferred:
    type: str
    unit: UnitT


def same_unit(a: UnitT, b: UnitT) -> bool:
    if isinstance(a, Unit) and isinstance(b, Unit):
        return a == b
    return True


def join_units(a: UnitT, b: UnitT) -> UnitT:
    if isinstance(a, Unit):
        return a
    if isinstance(b, Unit):
        return b
    if a is UNKNOWN or b is UNKNOWN:
        return UNKNOWN
    return LITERAL


def as_factor(u: UnitT) -> Unit | None:
    if isinstance(u, Unit):
        return u
    if u is LITERAL:
        return Unit()
    return None


@dataclass(frozen=True)
class CallCheck:
    """What a function's type rule may use: its name and the checker's reporting helpers."""

    name: str
    err: Callable[[ast.AST, str], None]
    need: Callable[[ast.AST, Inferred, str, str], None]
    fmt: Callable[[UnitT], str]


def infer(expr: Expr, lookup: Lookup, all_names: list[str]) -> tuple[Inferred, list[Problem]]:
    """Check names, arities, types and units of ``expr``; returns its type/unit and any problems."""
    problems: list[Problem] = []

    def pos(n: ast.AST) -> tuple[int]:
        return (expr.offset(n),)

    def err(n: ast.AST, msg: str) -> None:
        problems.append(Problem(msg, *pos(n)))

    def fmt(u: UnitT) -> str:
        return str(u) if isinstance(u, Unit) else "?"

    def need(n: ast.AST, got: Inferred, want: str, what: str) -> None:
        if got.type != want and not (want == NUMBER and got.type == BOOLEAN):
            err(n, f"{what} must be a {want}, not a {got.type}")

    def visit(n: ast.AST) -> Inferred:
        if isinstance(n, ast.Expr):
            return visit(n.value)
        if isinstance(n, ast.Constant):
            if isinstance(n.value, str):
                return Inferred(STRING, UNKNOWN)
            return Inferred(NUMBER, LITERAL)
        if isinstance(n, ast.Name):
            if n.id == MISSING:  # a number without a value: takes the unit of what it meets
                return Inferred(NUMBER, LITERAL)
            sym = lookup(n.id)
            if sym is None:
                err(n, f"unknown name '{n.id}'{did_you_mean(n.id, all_names)}")
                return Inferred(NUMBER, UNKNOWN)
            if sym.kind == "table":
                err(n, f"'{n.id}' is a table: index it, e.g. {n.id}['{sym.keys[0] if sym.keys else 'key'}']")
                return Inferred(NUMBER, UNKNOWN)
            if sym.kind == "scale":
                err(n, f"'{n.id}' is a scale: call it, e.g. {n.id}(x)")
                return Inferred(NUMBER, UNKNOWN)
            return Inferred(sym.type, sym.unit)
        if isinstance(n, ast.UnaryOp):
            inner = visit(n.operand)
            if isinstance(n.op, ast.Not):
                need(n.operand, inner, BOOLEAN, "the operand of 'not'")
                return Inferred(BOOLEAN, Unit())
            need(n.operand, inner, NUMBER, "the operand of '-'")
            return Inferred(NUMBER, inner.unit)
        if isinstance(n, ast.BinOp):
            left, right = visit(n.left), visit(n.right)
            op = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}[type(n.op)]
            need(n.left, left, NUMBER, f"the left side of '{op}'")
            need(n.right, right, NUMBER, f"the right side of '{op}'")
            if isinstance(n.op, ast.Add | ast.Sub):
                if not same_unit(left.unit, right.unit):
                    err(n, f"unit mismatch: '{op}' of {fmt(left.unit)} and {fmt(right.unit)}")
                return Inferred(NUMBER, join_units(left.unit, right.unit))
            if isinstance(n.op, ast.Pow):
                exp = n.right
                value: Any = exp.value if isinstance(exp, ast.Constant) else -exp.operand.value  # type: ignore[attr-defined]
                base = left.unit
                if isinstance(base, Unit) and not base.dimensionless:
                    if value != int(value):
                        err(n, f"a quantity in {fmt(base)} can only be raised to a whole power")
                        return Inferred(NUMBER, UNKNOWN)
                    return Inferred(NUMBER, base ** int(value))
                return Inferred(NUMBER, base)
            if left.unit is LITERAL and right.unit is LITERAL:
                return Inferred(NUMBER, LITERAL)
            lf, rf = as_factor(left.unit), as_factor(right.unit)
            if lf is None or rf is None:
                return Inferred(NUMBER, UNKNOWN)
            return Inferred(NUMBER, lf * rf if isinstance(n.op, ast.Mult) else lf / rf)
        if isinstance(n, ast.Compare):
            items = [n.left, *n.comparators]
            types = [visit(i) for i in items]
            pairs = zip(types, zip(items[1:], types[1:], strict=True), n.ops, strict=False)
            for ta, (b, tb), cmp in pairs:
                if CATEGORY in (ta.type, tb.type) or STRING in (ta.type, tb.type):
                    if not isinstance(cmp, ast.Eq | ast.NotEq):
                        err(b, "categories can only be compared with == and !=")
                    elif {ta.type, tb.type} != {CATEGORY, STRING}:
                        err(b, "compare a category with a quoted code, e.g. industry == '3011'")
                    continue
                if not same_unit(ta.unit, tb.unit):
                    err(b, f"unit mismatch: comparing {fmt(ta.unit)} with {fmt(tb.unit)}")
            return Inferred(BOOLEAN, Unit())
        if isinstance(n, ast.Subscript):
            name = n.value.id  # type: ignore[attr-defined]
            sym = lookup(name)
            if sym is None:
                err(n.value, f"unknown name '{name}'{did_you_mean(name, all_names)}")
                return Inferred(NUMBER, UNKNOWN)
            if sym.kind != "table":
                err(n.value, f"'{name}' is not a table and cannot be indexed")
                return Inferred(NUMBER, UNKNOWN)
            sl = n.slice
            if isinstance(sl, ast.Constant):
                key = str(sl.value)
                if key not in sym.keys:
                    err(sl, f"table '{name}' has no key '{key}'{did_you_mean(key, sym.keys)}")
                    return Inferred(NUMBER, sym.unit)
                if sym.key_units and key in sym.key_units:
                    return Inferred(NUMBER, sym.key_units[key])
                return Inferred(NUMBER, sym.unit)
            key_t = visit(sl)
            if key_t.type != CATEGORY:
                err(sl, f"table '{name}' must be indexed by a category (or a quoted key), not a {key_t.type}")
            if sym.key_units:
                err(
                    sl,
                    f"table '{name}' has keys with different units ({', '.join(sorted(sym.key_units))}); "
                    "index it with a quoted key",
                )
            return Inferred(NUMBER, sym.unit)
        if isinstance(n, ast.Call):
            return call(n)
        err(n, f"'{type(n).__name__}' is not allowed")  # pragma: no cover - parse() whitelists
        return Inferred(NUMBER, UNKNOWN)

    def call(n: ast.Call) -> Inferred:
        fname = n.func.id  # type: ignore[attr-defined]
        args = n.args
        sym = lookup(fname)
        if sym is not None and sym.kind == "scale":
            if len(args) != 1:
                err(n, f"scale {fname}() takes exactly one argument")
                return Inferred(NUMBER, sym.unit)
            arg = visit(args[0])
            need(args[0], arg, NUMBER, f"the argument of {fname}()")
            if not same_unit(arg.unit, sym.scale_input):
                err(args[0], f"unit mismatch: {fname}() expects {fmt(sym.scale_input)}, got {fmt(arg.unit)}")
            return Inferred(NUMBER, sym.unit)
        from .functions import FUNCTIONS

        fn = FUNCTIONS.get(fname)
        if fn is None:
            choices = list(FUNCTIONS) + [s for s in all_names if (lookup(s) or Symbol("x")).kind == "scale"]
            err(n.func, f"unknown function '{fname}'{did_you_mean(fname, choices)}")
            for a in args:
                visit(a)
            return Inferred(NUMBER, UNKNOWN)
        if len(args) < fn.min_args or (fn.max_args is not None and len(args) > fn.max_args):
            err(n, f"{fname}() takes {fn.arity_text()} arguments, got {len(args)}: {fn.doc}")
            for a in args:
                visit(a)
            return Inferred(NUMBER, UNKNOWN)
        got = [visit(a) for a in args]
        return fn.check(CallCheck(fname, err, need, fmt), n, list(args), got)

    result = visit(expr.node)
    return result, problems
