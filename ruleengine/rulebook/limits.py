"""Bounds on formulas and constants that the YAML loader cannot see (issues #11.2 and #11.6).

The rulebook loader (``source.py``) bounds the YAML itself. What is *inside* a string — a formula
such as ``"---…-1"`` 3,000 deep, or a parameter value ``"1/0"`` — is checked here, before the
compiler parses it, by functions the compiler can also call directly:

- :func:`formula_problem` (:func:`formula_problem_at` with its offset) — a formula text that
  would exhaust Python's parser or the compiler's recursive walks (``RecursionError``/``MemoryError``
  inside ``ast.parse``, or a syntax tree deeper than :data:`MAX_FORMULA_DEPTH`), measured without
  recursion, or a number literal that does not fit (an integer beyond 64 bits, a float that
  reads as infinity). Syntax errors are left to the compiler, which words them better.
- :func:`constant_value` — a parameter value (a number, or a constant formula of numbers and
  ``+ - * /``) evaluated within those bounds, refusing division by zero and non-finite results.
- :func:`check_document` — both, over a loaded document, as located diagnostics. ``schema.py``
  runs it with the schema check, so a document it refuses never reaches the compiler.
  Hook for the compiler: ``expressions.parse`` may call :func:`formula_problem` first and
  ``compiler._const_value`` may be replaced by :func:`constant_value`.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterator
from typing import Any

from ..errors import Diagnostic

MAX_FORMULA_CHARS = 4000  # as expressions.MAX_EXPRESSION_LENGTH
MAX_FORMULA_DEPTH = 200  # as expressions.MAX_DEPTH: syntax-tree levels of one formula

# Sections whose strings are formulas (or may be); prose fields in them are skipped by name.
FORMULA_SECTIONS = ("variables", "ratings", "benchmarks", "scales", "checks", "incentives")
# Sections whose numbers must be finite: a NaN band edge made every comparison false and passed
# `validate` (issue #11.7); parameters are checked by constant_value, author tests may expect NaN.
NUMBER_SECTIONS = ("inputs", "scales", "variables", "benchmarks", "ratings", "checks", "incentives")
PROSE_KEYS = frozenset(
    {"description", "title", "label", "note", "source", "unit", "units", "status", "id", "closed", "better", "text"}
)


def _tree_depth(tree: ast.AST) -> int:
    deepest = 0
    todo = [(tree, 1)]
    while todo:
        node, depth = todo.pop()
        if depth > deepest:
            deepest = depth
            if deepest > MAX_FORMULA_DEPTH:
                return deepest
        todo.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _parse(text: str) -> ast.Expression | None:
    """``ast.parse`` of a formula, None on a syntax error; RecursionError/MemoryError propagate."""
    try:
        return ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None


def formula_problem(text: str) -> str | None:
    """Why ``text`` cannot safely be parsed as a formula, or None (also None for plain syntax
    errors, which the compiler reports)."""
    found = formula_problem_at(text)
    return found[0] if found else None


def formula_problem_at(text: str) -> tuple[str, int] | None:
    """:func:`formula_problem` with the 0-based offset in ``text`` where the problem is: formulas
    too long or too deep (offset 0), and number literals that do not fit — an integer beyond 64
    bits (``99999999999999999999 + 1`` overflows at run time) or a float that reads as infinity
    (``1e999``) — at the literal."""
    if len(text) > MAX_FORMULA_CHARS:
        return f"formula longer than {MAX_FORMULA_CHARS} characters", 0
    lead = len(text) - len(text.lstrip())
    body = text.strip()
    wrapped = "\n" in body
    if wrapped:
        body = "(" + body + ")"
    try:
        tree = _parse(body)
    except (RecursionError, MemoryError):
        return f"formula nested too deeply (more than {MAX_FORMULA_DEPTH} levels)", 0
    if tree is None:
        return None
    if _tree_depth(tree) > MAX_FORMULA_DEPTH:
        return f"formula nested too deeply (more than {MAX_FORMULA_DEPTH} levels)", 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
            continue
        value = node.value
        where = 0 if wrapped or getattr(node, "lineno", 1) != 1 else lead + node.col_offset
        if isinstance(value, int) and abs(value) >= 2**63:
            return "a number that does not fit in 64 bits (it would overflow when rated)", where
        if isinstance(value, float) and not math.isfinite(value):
            return "a number too large for a 64-bit float (it reads as infinity)", where
    return None


def constant_value(value: Any) -> float:
    """A parameter value: a finite number, or a constant formula such as ``"44/12"`` (numbers and
    ``+ - * /`` only). Raises ValueError with the reason (division by zero, not finite, …)."""
    if isinstance(value, bool):
        raise ValueError("a number is needed, not true/false")
    if isinstance(value, int | float):
        out = float(value)
        if not math.isfinite(out):
            raise ValueError("not a finite number")
        return out
    text = str(value)
    problem = formula_problem(text)
    if problem:
        raise ValueError(problem)
    try:
        tree = _parse(text)
    except (RecursionError, MemoryError):  # pragma: no cover - formula_problem caught it
        raise ValueError("formula nested too deeply") from None
    if tree is None:
        raise ValueError("not a number or a constant formula")
    # post-order evaluation with an explicit stack: no recursion whatever the depth
    values: dict[int, float] = {}
    todo: list[tuple[ast.AST, bool]] = [(tree.body, False)]
    while todo:
        node, ready = todo.pop()
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float) or isinstance(node.value, bool):
                raise ValueError("only numbers and + - * / are allowed in a constant")
            if isinstance(node.value, int) and abs(node.value) >= 2**63:
                raise ValueError("a number does not fit in 64 bits")
            values[id(node)] = float(node.value)
            continue
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            if not ready:
                todo += [(node, True), (node.operand, False)]
                continue
            v = values[id(node.operand)]
            values[id(node)] = -v if isinstance(node.op, ast.USub) else v
            continue
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult | ast.Div):
            if not ready:
                todo += [(node, True), (node.right, False), (node.left, False)]
                continue
            a, b = values[id(node.left)], values[id(node.right)]
            if isinstance(node.op, ast.Div) and b == 0:
                raise ValueError("division by zero")
            if isinstance(node.op, ast.Add):
                values[id(node)] = a + b
            elif isinstance(node.op, ast.Sub):
                values[id(node)] = a - b
            elif isinstance(node.op, ast.Mult):
                values[id(node)] = a * b
            else:
                values[id(node)] = a / b
            continue
        raise ValueError("only numbers and + - * / are allowed in a constant")
    out = values[id(tree.body)]
    if not math.isfinite(out):
        raise ValueError("not a finite number")
    return out


def _strings(data: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    todo: list[tuple[Any, tuple[str | int, ...]]] = [(data, path)]
    while todo:
        value, here = todo.pop()
        if isinstance(value, str):
            yield here, value
        elif isinstance(value, dict):
            todo.extend((v, (*here, k)) for k, v in value.items() if k not in PROSE_KEYS)
        elif isinstance(value, list):
            todo.extend((v, (*here, i)) for i, v in enumerate(value))


def _non_finite(data: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], float]]:
    """Every float in ``data`` that is NaN or infinite (YAML ``.nan``, ``.inf``), with its path."""
    todo: list[tuple[Any, tuple[str | int, ...]]] = [(data, path)]
    while todo:
        value, here = todo.pop()
        if isinstance(value, float) and not math.isfinite(value):
            yield here, value
        elif isinstance(value, dict):
            todo.extend((v, (*here, k)) for k, v in value.items())
        elif isinstance(value, list):
            todo.extend((v, (*here, i)) for i, v in enumerate(value))


def _parameter_values(spec: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if not isinstance(spec, dict):
        return
    if "value" in spec:
        yield (*path, "value"), spec["value"]
    tables = []
    if isinstance(spec.get("table"), dict):
        tables.append(((*path, "table"), spec["table"]))
    if isinstance(spec.get("values"), dict):
        for date, value in spec["values"].items():
            if isinstance(value, dict):
                tables.append(((*path, "values", date), value))
            else:
                yield (*path, "values", date), value
    for tpath, table in tables:
        for key, value in table.items():
            yield (*tpath, key), value


def check_document(doc: Any) -> list[Diagnostic]:
    """Located errors for formulas and parameter values that the compiler could not handle safely:
    formulas nested past :data:`MAX_FORMULA_DEPTH` (or that exhaust the parser), parameter
    values that are not finite constants (``"1/0"``, ``1e308 * 10``, ``"---…-1"`` 3,000 deep), and
    NaN or infinite numbers (band edges, scale points, weights, limits) in :data:`NUMBER_SECTIONS`."""
    data = doc.data
    out: list[Diagnostic] = []
    if not isinstance(data, dict):
        return out
    for section in FORMULA_SECTIONS:
        entries = data.get(section)
        if not isinstance(entries, dict | list):
            continue
        for path, text in _strings(entries, (section,)):
            found = formula_problem_at(text)
            if found:
                message, offset = found
                out.append(Diagnostic(message, doc.scalar_loc(path, offset) if offset else doc.loc(path)))
    for section in NUMBER_SECTIONS:
        for path, value in _non_finite(data.get(section), (section,)):
            what = "band edge" if section == "ratings" else "number"
            out.append(
                Diagnostic(
                    f"{what} {value!r} is not a finite number: band edges, scale points, weights, limits "
                    "and defaults must be finite (leave a bound out for an open-ended band)",
                    doc.loc(path),
                )
            )
    params = data.get("parameters")
    if isinstance(params, dict):
        for name, spec in params.items():
            for path, value in _parameter_values(spec, ("parameters", name)):
                if isinstance(value, dict | list) or value is None:
                    continue  # the schema says what is wrong with these
                try:
                    constant_value(value)
                except ValueError as exc:
                    out.append(Diagnostic(f"bad value {_short(value)}: {exc}", doc.loc(path)))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}…' ({len(str(value)):,} characters)"
