"""Level conditions as boxes: which conditional levels no firm can reach (issue #19).

A condition written as a conjunction of comparisons of a name with a number or a scalar
parameter (``all_of(intensity <= 0.5, share >= 0.3)``, ``0 < x <= 5``) is read as a box: one
interval per name. Conditional levels are tried in order and the first that holds wins, so a level
whose box lies inside the box of an earlier level (or inside the union of earlier intervals on the
same single name), or whose box is empty (``x > 5`` and ``x < 3``, or outside an input's declared
min/max), can never be given. Anything else (``any_of``, formulas on either side) is not judged.
"""

from __future__ import annotations

import ast
import math
from typing import Any

_OPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}

Term = tuple[str, str, Any]  # (name, op, bound: float or a name)


def comparisons(expr: Any) -> list[Term] | None:
    """``[(name, op, bound), ...]`` when the condition is a conjunction of ``name op bound``
    comparisons (the name on the left, whichever side it was written on); None otherwise."""
    node = expr.node if hasattr(expr, "node") else expr
    if isinstance(node, ast.Expression | ast.Expr):
        node = node.body if isinstance(node, ast.Expression) else node.value
    out: list[Term] = []

    def side(n: ast.AST) -> Any:
        if isinstance(n, ast.Constant) and isinstance(n.value, int | float) and not isinstance(n.value, bool):
            return float(n.value)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub) and isinstance(n.operand, ast.Constant):
            v = n.operand.value
            return -float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
        if isinstance(n, ast.Name):
            return n.id
        return None

    def walk(n: ast.AST) -> bool:
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "all_of":
            return bool(n.args) and all(walk(a) for a in n.args)
        if isinstance(n, ast.Compare):
            items = [n.left, *n.comparators]
            for a, op, b in zip(items, n.ops, items[1:], strict=False):
                sym = _OPS.get(type(op))
                la, lb = side(a), side(b)
                if sym is None or la is None or lb is None:
                    return False
                if isinstance(la, str):
                    out.append((la, sym, lb))
                elif isinstance(lb, str):
                    out.append((lb, _FLIP[sym], la))
                else:
                    return False
            return True
        return False

    return out if walk(node) else None


Interval = tuple[float, bool, float, bool]  # lo, lo included, hi, hi included
Box = dict[str, Interval]
_ALL: Interval = (-math.inf, False, math.inf, False)


def _meet(a: Interval, b: Interval) -> Interval:
    lo, lo_in = max((a[0], not a[1]), (b[0], not b[1]))
    hi, hi_in = min((a[2], a[3]), (b[2], b[3]))
    return (lo, not lo_in, hi, hi_in)


def _empty(iv: Interval) -> bool:
    lo, lo_in, hi, hi_in = iv
    return lo > hi or (lo == hi and not (lo_in and hi_in))


def box(terms: list[Term], resolve: Any) -> tuple[Box, bool]:
    """The box of a conjunction, and whether it is exact (False: some term was left out, so the
    box is larger than the condition's set). ``resolve(name)`` gives a bound parameter's number
    (or None when it has no single value)."""
    out: Box = {}
    exact = True
    for name, op, bound in terms:
        b = resolve(bound) if isinstance(bound, str) else bound
        if b is None or op == "!=" or (isinstance(b, float) and math.isnan(b)):
            exact = False
            continue
        iv = {
            "<": (-math.inf, False, b, False),
            "<=": (-math.inf, False, b, True),
            ">": (b, False, math.inf, False),
            ">=": (b, True, math.inf, False),
            "==": (b, True, b, True),
        }[op]
        out[name] = _meet(out.get(name, _ALL), iv)
    return out, exact


def _inside(a: Interval, b: Interval) -> bool:
    lo_ok = a[0] > b[0] or (a[0] == b[0] and (b[1] or not a[1]))
    hi_ok = a[2] < b[2] or (a[2] == b[2] and (b[3] or not a[3]))
    return lo_ok and hi_ok


def _box_inside(a: Box, b: Box) -> bool:
    """Every point of ``a`` is in ``b`` (a name ``b`` does not constrain is free in ``b``)."""
    return all(_inside(a.get(name, _ALL), iv) for name, iv in b.items())


def _covered_1d(a: Interval, covers: list[Interval]) -> bool:
    """``a`` lies inside the union of ``covers`` (intervals on the same name)."""
    lo, lo_in, hi, hi_in = a
    for _ in range(len(covers) + 1):
        if _empty((lo, lo_in, hi, hi_in)):
            return True
        for c in covers:
            if (c[0] < lo or (c[0] == lo and (c[1] or not lo_in))) and (c[2] > lo or (c[2] == lo and c[3] and lo_in)):
                if c[2] > hi or (c[2] == hi and (c[3] or not hi_in)):
                    return True
                lo, lo_in = c[2], not c[3]
                break
        else:
            return False
    return False


def unreachable_levels(
    levels: list[tuple[str, Any, str]], resolve: Any, ranges: dict[str, Interval]
) -> list[tuple[int, str]]:
    """(index, why) of each conditional level that no firm can be given."""
    out: list[tuple[int, str]] = []
    earlier: list[tuple[str, Box]] = []  # exact boxes of the levels before
    for i, (lid, cond, _) in enumerate(levels):
        if cond is None:
            continue
        terms = comparisons(cond)
        if terms is None:
            continue
        bx, exact = box(terms, resolve)
        why = None
        for name, iv in bx.items():
            limited = _meet(iv, ranges.get(name, _ALL))
            if _empty(limited):
                declared = ranges.get(name)
                why = f"its condition on {name} cannot hold" + (
                    f" for the input's declared range [{declared[0]:g}, {declared[2]:g}]" if declared else ""
                )
                break
        if why is None:
            for prev_id, pb in earlier:
                if _box_inside(bx, pb):
                    why = f"every firm it would match is already given level '{prev_id}' (listed before it)"
                    break
        if why is None and len(bx) == 1:
            ((name, iv),) = bx.items()
            covers = [pb[name] for _, pb in earlier if set(pb) == {name}]
            if covers and _covered_1d(iv, covers):
                ids = ", ".join(f"'{p}'" for p, pb in earlier if set(pb) == {name})
                why = f"every firm it would match is already given one of the levels {ids} (listed before it)"
        if why is not None:
            out.append((i, why))
        elif exact and bx:
            earlier.append((lid, bx))
    return out
