"""The formula functions, one registry: each entry holds everything about one function.

    signature (arity and a one-line doc)  → the parser's and the compiler's error messages
    check(c, node, args, got) → Inferred  → the type and unit rule (compile time)
    run(frame, *args)                     → the numpy implementation (whole columns at once)
    show(values) → detail | None          → what the audit trail says about one firm's call

A function is added here and nowhere else; ``tests/test_functions.py`` proves every entry is
complete by compiling and evaluating a formula that calls it. Implementations import numpy when
they run, so loading this module (to compile a rulebook) stays cheap.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .expressions import BOOLEAN, CATEGORY, LITERAL, NUMBER, UNKNOWN, Inferred, UnitT, as_factor, join_units, same_unit
from .units import Unit

if TYPE_CHECKING:
    from .expressions import CallCheck

MAX_ROUND_DIGITS = 15  # float64 carries 15–17 significant digits; more rounds nothing


@dataclass(frozen=True)
class Function:
    name: str
    min_args: int
    max_args: int | None
    doc: str
    check: Callable[[CallCheck, ast.Call, list[ast.expr], list[Inferred]], Inferred]
    run: Callable[..., Any]
    show: Callable[[list[Any]], dict[str, Any] | None]

    def arity_text(self) -> str:
        if self.max_args == self.min_args:
            return f"{self.min_args}"
        if self.max_args is None:
            return f"at least {self.min_args}"
        return f"{self.min_args} to {self.max_args}"


def _no_detail(values: list[Any]) -> dict[str, Any] | None:
    return None


# -- type and unit rules --------------------------------------------------------------------------


def _same_unit_numbers(c: CallCheck, n: ast.Call, args: list[ast.expr], got: list[Inferred]) -> Inferred:
    """min, max, clip, abs, coalesce: numbers of one unit."""
    name = c.name
    unit: UnitT = LITERAL
    for a, g in zip(args, got, strict=True):
        c.need(a, g, NUMBER, f"an argument of {name}()")
        if not same_unit(unit, g.unit):
            c.err(a, f"unit mismatch: {name}() of {c.fmt(unit)} and {c.fmt(g.unit)}")
        unit = join_units(unit, g.unit)
    return Inferred(NUMBER, unit)


def _check_where(c: CallCheck, n: ast.Call, args: list[ast.expr], got: list[Inferred]) -> Inferred:
    c.need(args[0], got[0], BOOLEAN, "the condition of where()")
    for a, g in zip(args[1:], got[1:], strict=True):
        c.need(a, g, NUMBER, "a branch of where()")
    if not same_unit(got[1].unit, got[2].unit):
        c.err(n, f"unit mismatch: where() branches in {c.fmt(got[1].unit)} and {c.fmt(got[2].unit)}")
    return Inferred(NUMBER, join_units(got[1].unit, got[2].unit))


def _check_conditions(c: CallCheck, n: ast.Call, args: list[ast.expr], got: list[Inferred]) -> Inferred:
    for a, g in zip(args, got, strict=True):
        c.need(a, g, BOOLEAN, f"an argument of {c.name}()")
    return Inferred(BOOLEAN, Unit())


def _check_has_prev(c: CallCheck, n: ast.Call, args: list[ast.expr], got: list[Inferred]) -> Inferred:
    c.need(args[0], got[0], NUMBER, "the argument of has_prev()")
    return Inferred(BOOLEAN, Unit())


def _check_is_missing(c: CallCheck, n: ast.Call, args: list[ast.expr], got: list[Inferred]) -> Inferred:
    return Inferred(BOOLEAN, Unit())


def _check_prefix(c: CallCheck, n: ast.Call, args: list[ast.expr], got: list[Inferred]) -> Inferred:
    c.need(args[0], got[0], CATEGORY, "the first argument of prefix()")
    if not (isinstance(args[1], ast.Constant) and type(args[1].value) is int and 1 <= args[1].value <= 20):
        c.err(args[1], "prefix() needs a whole number of characters from 1 to 20")
    return Inferred(CATEGORY, UNKNOWN)


def _check_panel(c: CallCheck, n: ast.Call, args: list[ast.expr], got: list[Inferred]) -> Inferred:
    name = c.name
    if name == "baseline" and not (isinstance(args[1], ast.Constant) and type(args[1].value) is int):
        c.err(args[1], "baseline() needs a year as a whole number, e.g. baseline(x, 2020)")
    elif name == "baseline" and not 1900 <= args[1].value <= 2200:  # type: ignore[attr-defined]
        c.err(args[1], "baseline() needs a year from 1900 to 2200")
    unit = got[0].unit
    other = got[2] if name == "baseline" and len(got) == 3 else (got[1] if name == "prev" and len(got) == 2 else None)
    c.need(args[0], got[0], NUMBER, f"the first argument of {name}()")
    if other is not None and not same_unit(unit, other.unit):
        c.err(n, f"unit mismatch: {name}() of {c.fmt(unit)} with a fallback in {c.fmt(other.unit)}")
    return Inferred(NUMBER, unit)


def _check_safe_div(c: CallCheck, n: ast.Call, args: list[ast.expr], got: list[Inferred]) -> Inferred:
    for a, g in zip(args, got, strict=True):
        c.need(a, g, NUMBER, "an argument of safe_div()")
    q: UnitT
    if got[0].unit is LITERAL and got[1].unit is LITERAL:
        q = LITERAL
    else:
        fa, fb = as_factor(got[0].unit), as_factor(got[1].unit)
        q = fa / fb if fa is not None and fb is not None else UNKNOWN
    if not same_unit(q, got[2].unit):
        c.err(args[2], f"unit mismatch: safe_div() gives {c.fmt(q)}, the if_zero value is in {c.fmt(got[2].unit)}")
    return Inferred(NUMBER, join_units(q, got[2].unit))


def _check_round(c: CallCheck, n: ast.Call, args: list[ast.expr], got: list[Inferred]) -> Inferred:
    if len(args) == 2:
        digits = args[1]
        negative = (
            isinstance(digits, ast.UnaryOp)
            and isinstance(digits.op, ast.USub)
            and isinstance(digits.operand, ast.Constant)
        )
        value = -digits.operand.value if negative else getattr(digits, "value", None)  # type: ignore[attr-defined]
        if not (isinstance(digits, ast.Constant) or negative) or type(value) is not int:
            c.err(args[1], "round() digits must be a whole number")
        elif abs(value) > MAX_ROUND_DIGITS:
            c.err(args[1], f"round() digits must be between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}, not {value}")
    c.need(args[0], got[0], NUMBER, "the argument of round()")
    return Inferred(NUMBER, got[0].unit)


# -- numpy implementations (whole columns; missing is NaN; truth values are 1.0/0.0/NaN) ---------


def _where(frame: Any, c: Any, a: Any, b: Any) -> Any:
    import numpy as np

    c = np.asarray(c, dtype=np.float64)
    out = np.where(c == 1.0, a, b).astype(np.float64)
    return np.where(np.isnan(c), np.nan, out)


def _fold(fn_name: str) -> Callable[..., Any]:
    def run(frame: Any, *xs: Any) -> Any:
        import numpy as np

        fn = getattr(np, fn_name)
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out

    return run


def _clip(frame: Any, x: Any, lo: Any, hi: Any) -> Any:
    import numpy as np

    return np.minimum(np.maximum(x, lo), hi)


def _abs(frame: Any, x: Any) -> Any:
    import numpy as np

    return np.abs(x)


def _round(frame: Any, x: Any, digits: Any = 0) -> Any:
    import numpy as np

    return np.round(x, int(digits))


def _kleene(decisive: float) -> Callable[..., Any]:
    """Three-valued and/or: one decisive value settles it (false for all_of, true for any_of);
    otherwise any unknown makes the result unknown."""

    def run(frame: Any, *conditions: Any) -> Any:
        import numpy as np

        cs = np.broadcast_arrays(*[np.asarray(c, dtype=np.float64) for c in conditions])
        stacked = np.stack(cs)
        settled = np.any(stacked == decisive, axis=0)
        unknown = np.any(np.isnan(stacked), axis=0)
        return np.where(settled, decisive, np.where(unknown, np.nan, 1.0 - decisive))

    return run


def _coalesce(frame: Any, *xs: Any) -> Any:
    import numpy as np

    x0 = xs[0]
    if type(x0) is np.float64 or type(x0) is float:  # one number (a one-firm batch): kept a number
        out: Any = np.float64(x0)
    else:
        first = np.asarray(x0, dtype=np.float64)
        out = first[:1].reshape(()) if first.ndim == 1 and first.size and first.strides[0] == 0 else first
    for x in xs[1:]:
        t = type(out)
        if t is float or t is np.float64 or (t is np.ndarray and out.size == 1 and out.dtype.kind == "f"):
            # one value (a one-row batch, a collapsed column): missing or not without a ufunc; the
            # same outcome as the reductions below (any() and all() agree on one value)
            v = out if t is not np.ndarray else out.item()
            if v == v:
                break
            out = x if type(x) is float or np.ndim(x) == 0 else np.where(np.isnan(out), x, out)
            continue
        miss = np.isnan(out)
        if not miss.any():
            break
        out = x if miss.all() and np.ndim(x) == 0 else np.where(miss, x, out)
    return out


def _show_coalesce(values: list[Any]) -> dict[str, Any] | None:
    for i, v in enumerate(values):
        if not (v is None or (isinstance(v, float) and math.isnan(v))):
            return {"used_argument": i + 1, "measured_first": "measured" if i == 0 else "default"}
    return {"used_argument": None}


def _safe_div(frame: Any, a: Any, b: Any, if_zero: Any) -> Any:
    import numpy as np

    ta, tb = type(a), type(b)
    if (tb is np.float64 or tb is float) and (ta is np.float64 or ta is float) and b != 0:
        return np.float64(a) / b  # two numbers (one row), b not 0: np.divide's bits, no arrays
    b64 = np.asarray(b, dtype=np.float64)
    zero = b64 == 0
    q = np.divide(a, np.where(zero, 1.0, b64))
    return np.where(zero, if_zero, q)


def _show_safe_div(values: list[Any]) -> dict[str, Any] | None:
    return {"if_zero_used": True} if len(values) == 3 and values[1] == 0 else None


def _is_missing(frame: Any, x: Any) -> Any:
    import numpy as np

    return np.isnan(np.asarray(x, dtype=np.float64)).astype(np.float64)


def _prev(frame: Any, x: Any, otherwise: Any = None) -> Any:
    return frame.shifted(x, None, otherwise)


def _has_prev(frame: Any, x: Any) -> Any:
    return frame.has_shifted(x)


def _baseline(frame: Any, x: Any, year: Any, otherwise: Any = None) -> Any:
    return frame.shifted(x, int(year), otherwise)


def _prefix(frame: Any, cat: Any, k: Any) -> Any:
    return frame.prefix(cat, int(k))


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function(
            "where", 3, 3, "where(condition, if_true, if_false), element by element", _check_where, _where, _no_detail
        ),
        Function(
            "min",
            2,
            None,
            "smallest of the arguments, element by element",
            _same_unit_numbers,
            _fold("minimum"),
            _no_detail,
        ),
        Function(
            "max",
            2,
            None,
            "largest of the arguments, element by element",
            _same_unit_numbers,
            _fold("maximum"),
            _no_detail,
        ),
        Function("clip", 3, 3, "clip(x, low, high)", _same_unit_numbers, _clip, _no_detail),
        Function("abs", 1, 1, "absolute value", _same_unit_numbers, _abs, _no_detail),
        Function("round", 1, 2, "round(x, digits=0), half to even", _check_round, _round, _no_detail),
        Function("all_of", 1, None, "true where every condition is true", _check_conditions, _kleene(0.0), _no_detail),
        Function("any_of", 1, None, "true where any condition is true", _check_conditions, _kleene(1.0), _no_detail),
        Function(
            "safe_div",
            3,
            3,
            "safe_div(a, b, if_zero): a / b, or if_zero where b is 0 (a declared rule, not an error)",
            _check_safe_div,
            _safe_div,
            _show_safe_div,
        ),
        Function(
            "coalesce",
            2,
            None,
            "first argument that is not missing (measured first, default otherwise)",
            _same_unit_numbers,
            _coalesce,
            _show_coalesce,
        ),
        Function("is_missing", 1, 1, "true where the value is missing", _check_is_missing, _is_missing, _no_detail),
        Function(
            "prev",
            1,
            2,
            "prev(x, otherwise?): the same firm's value of x in the previous year",
            _check_panel,
            _prev,
            _no_detail,
        ),
        Function(
            "has_prev",
            1,
            1,
            "has_prev(x): true where the firm has a previous-year row and x is not missing in it (no note)",
            _check_has_prev,
            _has_prev,
            _no_detail,
        ),
        Function(
            "baseline",
            2,
            3,
            "baseline(x, year, otherwise?): the same firm's value of x in a fixed year",
            _check_panel,
            _baseline,
            _no_detail,
        ),
        Function(
            "prefix",
            2,
            2,
            "prefix(category, n): first n characters of a category code",
            _check_prefix,
            _prefix,
            _no_detail,
        ),
    )
}

PANEL_FUNCTIONS = frozenset({"prev", "has_prev", "baseline"})  # they look at other rows of the same firm
