"""Evaluate stage: Plan × columns (× benchmark tables) → results. Vectorised: one pass per formula.

Every formula is evaluated once over whole numpy columns by a simpleeval interpreter whose
operators are array-safe.  Missing is NaN and propagates; truth values are floats 1/0 with NaN
for "unknown" so a missing input never turns silently into "false".  Every division by zero,
every fallback and every missing value met is recorded per row; a row whose primary rating
cannot be computed is ``unrated`` with its reasons, and the rest of the batch is unaffected.

Benchmarks (population statistics) are computed into :class:`BenchmarkTable` objects and then
applied to rows by lookup; passing tables in makes evaluation a pure function of
(plan, columns, tables), so one firm evaluated alone gets exactly its numbers in the batch.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from simpleeval import SimpleEval

from ..io.data import Batch, Category
from ..rulebook.expressions import MISSING
from ..rulebook.functions import PANEL_FUNCTIONS
from ..rulebook.plan import BenchmarkSpec, Plan, RatingSpec
from .benchmarks import BenchmarkTable

_NAN = np.nan
_FEW_ROWS = 16  # a batch of at most this many rows (one firm) takes the small-batch paths


def _any(mask: np.ndarray) -> bool:
    """``mask.any()``; a short mask counted instead (numpy's reduction machinery costs more than
    a one-row evaluation's arithmetic)."""
    return bool(np.count_nonzero(mask)) if mask.size <= 64 else bool(mask.any())


def _nonzero(mask: np.ndarray) -> np.ndarray:
    """``np.flatnonzero(mask)`` (the same array), without its ravel for a column."""
    return mask.nonzero()[0] if mask.ndim == 1 else np.flatnonzero(mask)


def _unique_inverse(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(a, return_inverse=True)`` of a 1-d array; one value answered directly."""
    if a.shape == (1,):
        return a.copy(), np.zeros(1, dtype=np.intp)
    return np.unique(a, return_inverse=True)


Side = Literal["left", "right"]


@dataclass(frozen=True)
class Note:
    """One reason or fallback: a stable code, the name it concerns, and what a person reads."""

    code: str  # e.g. division_by_zero, no_value, table_fallback, benchmark_fallback, check, data
    column: str  # the input, parameter, variable, benchmark or check it concerns ('' if none)
    message: str

    def __str__(self) -> str:
        return self.message


# a per-row payload: one Note for every row of the mask, or (codes, notes): row k reads notes[codes[k]]
_Payload = Note | tuple[np.ndarray, list[Note]]


class _Notes:
    """Per-row reasons and fallbacks as (rank, sequence, row indices, payload).

    ``rank`` is the position in the plan's order of the node that took the note, so a row lists its
    notes in the plan's order however the evaluation was staged or partitioned."""

    def __init__(self, n: int):
        self.n = n
        self.rank = 0
        self.items: dict[str, list[tuple[int, int, np.ndarray, _Payload]]] = {"reasons": [], "fallbacks": []}
        self._seq = 0
        # rows whose notes count: inside a branch of where() only the rows that take that branch
        # (a value computed for rows that do not use it leaves no reason or fallback on them)
        self.scope: np.ndarray | None = None

    def add(self, kind: str, idx: np.ndarray, payload: _Payload, rank: int | None = None) -> None:
        if self.scope is not None and idx.size:
            sel = self.scope[idx]
            idx = idx[sel]
            if isinstance(payload, tuple):  # (codes per row, notes)
                payload = (payload[0][sel], payload[1])
        if idx.size:
            self._seq += 1
            self.items[kind].append((self.rank if rank is None else rank, self._seq, idx, payload))

    def reason(self, mask: np.ndarray, note: Note, rank: int | None = None) -> None:
        self.add("reasons", _nonzero(mask), note, rank)

    def fallback(self, mask: np.ndarray, note: Note, rank: int | None = None) -> None:
        self.add("fallbacks", _nonzero(mask), note, rank)

    def join(
        self, kind: str, extra: Mapping[int, list[Note]] | None = None
    ) -> tuple[np.ndarray, list[tuple[Note, ...]]]:
        """Per-row notes as (codes, combinations): row i has combinations[codes[i]], -1 = none.

        Each distinct note gets a bit; a row's notes are a bit mask, and each distinct mask is
        turned into its tuple once (a batch has few distinct combinations even with a million
        rows), so there is no per-row Python loop. ``extra``: notes of single rows (data problems),
        listed first."""
        n = self.n
        ids: dict[Note, int] = {}
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for _rank, _seq, idx, payload in sorted(self.items[kind], key=lambda it: (it[0], it[1])):
            if isinstance(payload, Note):
                mid = ids.setdefault(payload, len(ids))
                pairs.append((idx, np.full(len(idx), mid, dtype=np.int64)))
            else:
                local_codes, local_notes = payload
                tid = np.array([ids.setdefault(t, len(ids)) for t in local_notes], dtype=np.int64)
                pairs.append((idx, tid[local_codes]))
        notes = list(ids)
        out = np.full(n, -1, dtype=np.int32)
        combos: list[tuple[Note, ...]] = []
        if notes and n <= _FEW_ROWS:  # a few rows: the same codes and combinations, in Python
            bits = [0] * n  # note k is bit k: word k // 63, bit k % 63 of the general path's masks
            for idx, codes in pairs:
                for i, c in zip(idx.tolist(), codes.tolist(), strict=True):
                    bits[i] |= 1 << c
            words = (len(notes) + 62) // 63
            word = (1 << 63) - 1
            distinct = sorted({m for m in bits if m}, key=lambda m: tuple((m >> (63 * w)) & word for w in range(words)))
            position = {m: j for j, m in enumerate(distinct)}
            combos.extend(tuple(note for k, note in enumerate(notes) if (m >> k) & 1) for m in distinct)
            for i, m in enumerate(bits):
                if m:
                    out[i] = position[m]
        elif notes:
            words = (len(notes) + 62) // 63
            masks = np.zeros((words, n), dtype=np.int64)
            for idx, codes in pairs:
                for w in range(words):
                    sel = (codes // 63) == w
                    if sel.any():
                        np.bitwise_or.at(masks[w], idx[sel], np.left_shift(1, codes[sel] % 63))
            flagged = np.flatnonzero(masks.any(axis=0))
            if words == 1:  # the usual case: one int64 per row; a plain sort, ~10x faster than axis=1
                u1, inv = _unique_inverse(masks[0, flagged])
                uniq = u1[None, :]
            else:  # columns sorted by (word 0, word 1, ...): the same order as the one-word case
                uniq, inv = np.unique(masks[:, flagged], axis=1, return_inverse=True)
            for j in range(uniq.shape[1]):
                combos.append(
                    tuple(
                        notes[w * 63 + b]
                        for w in range(words)
                        for b in range(63)
                        if w * 63 + b < len(notes) and (int(uniq[w, j]) >> b) & 1
                    )
                )
            out[flagged] = inv.ravel().astype(np.int32)
        for i, mine in (extra or {}).items():  # data problems: few rows, texts specific to the cell
            current = combos[out[i]] if out[i] >= 0 else ()
            combos.append(tuple(dict.fromkeys([*mine, *current])))
            out[i] = len(combos) - 1
        return out, combos


def joined(combos: list[tuple[Note, ...]]) -> list[str]:
    """The text of each combination of notes, as the results' reasons/fallbacks columns read."""
    return ["; ".join(note.message for note in c) for c in combos]


class _BoundTable:
    """A table parameter resolved for this batch's years; index with 'key' or a Category column."""

    def __init__(self, ctx: Frame, name: str):
        self.ctx, self.name = ctx, name
        self.spec = ctx.plan.parameters[name]
        self.same: dict[str, Any] | None = None  # the table in force for every year of the batch, or {}

    def __getitem__(self, key: Any) -> Any:
        ctx, spec = self.ctx, self.spec
        if isinstance(key, str):  # one value for the batch when every year has the same table
            if self.same is None:
                entries = [spec.value_for_year(y) for y, _ in ctx.year_groups()]
                one = entries and entries[0] is not None and all(e is entries[0] for e in entries)
                self.same = entries[0][1] if one else {}  # type: ignore[index]
            if key in self.same:
                return self.same[key]
        out = np.full(ctx.n, _NAN)
        for y, rows in ctx.year_groups():
            found = spec.value_for_year(y)
            if found is None:
                ctx.notes.reason(
                    rows_mask(ctx.n, rows), Note("no_value", self.name, f"{self.name}: no value in force for {y}")
                )
                continue
            table = found[1]
            if isinstance(key, str):
                if key in table:
                    out[rows] = table[key]
                elif spec.fallback_key is not None:
                    out[rows] = table[spec.fallback_key]
                    ctx.notes.fallback(
                        rows_mask(ctx.n, rows),
                        Note(
                            "table_fallback",
                            self.name,
                            f"{self.name}: no value for '{key}' in {y}, used '{spec.fallback_key}'",
                        ),
                    )
                else:
                    ctx.notes.reason(
                        rows_mask(ctx.n, rows), Note("no_value", self.name, f"{self.name}: no value for '{key}' in {y}")
                    )
                continue
            labels = key.labels
            vals = np.array([table.get(lab, _NAN) for lab in labels] + [_NAN])
            codes = key.codes[rows]
            got = vals[codes]
            miss = np.isnan(got)
            if _any(miss):
                # one message per missing key, attached to its rows without a per-row loop
                uniq, inv = _unique_inverse(codes[miss])
                whats = [
                    f"no value for '{labels[c]}' in {y}" if c >= 0 else "no key for this firm" for c in uniq.tolist()
                ]
                if spec.fallback_key is not None:
                    notes = [
                        Note("table_fallback", self.name, f"{self.name}: {w}, used '{spec.fallback_key}'")
                        for w in whats
                    ]
                    ctx.notes.add("fallbacks", rows[miss], (inv.ravel(), notes))
                    got = np.where(miss, table[spec.fallback_key], got)
                else:
                    ctx.notes.add(
                        "reasons",
                        rows[miss],
                        (inv.ravel(), [Note("no_value", self.name, f"{self.name}: {w}") for w in whats]),
                    )
            out[rows] = got
        return out


def rows_mask(n: int, rows: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[rows] = True
    return m


_ARITH = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply}
# the same operation on two numbers: np.float64's own (C double) arithmetic, the bits np.add gives
_SCALAR_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
_F64 = np.float64
_F64_DTYPE = np.dtype(np.float64)
_REPEATED = (0,)  # the strides of a broadcast column: one value repeated
_ONE = (1,)  # the shape of a one-row column
_ABSENT = object()
_FRESH = (ast.BinOp,)  # nodes whose value is a new array (or a number) owned by the expression


def _is_full_column(x: Any, other: Any) -> bool:
    """``x`` can hold ``x op other`` itself: a float64 column of its own memory, at least as long."""
    if not (
        isinstance(x, np.ndarray)
        and x.base is None
        and x.ndim == 1
        and x.dtype == np.float64
        and x.strides == (8,)
        and x.flags.writeable
    ):
        return False
    t = type(other)
    if t is float or t is _F64 or t is int:  # a number (np.ndim 0): the usual case, decided at once
        return True
    return np.ndim(other) <= 1 and (np.ndim(other) == 0 or np.shape(other) == x.shape)


def truth(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def as_column(x: Any, n: int) -> np.ndarray:
    """``np.broadcast_to(np.asarray(x, dtype=np.float64), (n,))``: a read-only float64 column
    (a view of ``x``); for a float64 column of length ``n`` already, the same view made directly
    (broadcast_to's own checks cost more than a one-row evaluation's arithmetic)."""
    if type(x) is np.ndarray and (x.dtype is _F64_DTYPE or x.dtype == np.float64) and x.shape == (n,):
        v = x.view()
        v.flags.writeable = False
        return v
    t = type(x)
    if t is _F64 or t is float:  # one value repeated: the read-only stride-0 view broadcast_to makes
        v = np.ndarray((n,), _F64_DTYPE, np.array(x, dtype=np.float64), 0, _REPEATED)
        v.flags.writeable = False
        return v
    return np.broadcast_to(np.asarray(x, dtype=np.float64), (n,))


class _ArrayEval(SimpleEval):
    """simpleeval with operators that work on whole numpy columns."""

    def __init__(self, ctx: Frame):
        super().__init__(operators={}, functions=ctx.functions(), names=ctx.names)
        self.ctx = ctx

    def _eval_binop(self, node: ast.BinOp) -> Any:
        a, b = self._eval(node.left), self._eval(node.right)
        op = type(node.op)
        if op in _ARITH:
            # a column this expression just computed (not a stored value) takes the result in
            # place: same numbers, one allocation fewer per step of a chain like a + b + c
            out = None
            if type(node.left) in _FRESH and _is_full_column(a, b):
                out = a
            elif type(node.right) in _FRESH and _is_full_column(b, a):
                out = b
            return _ARITH[op](a, b, out=out)
        if op is ast.Div:
            return self.ctx.divide(a, b, node)
        if op is ast.Pow:
            return np.power(np.asarray(a, dtype=np.float64), b)
        raise TypeError(f"operator {op.__name__} not allowed")  # pragma: no cover - whitelisted

    def _eval_unaryop(self, node: ast.UnaryOp) -> Any:
        v = self._eval(node.operand)
        if isinstance(node.op, ast.USub):
            return np.negative(v)
        if isinstance(node.op, ast.UAdd):
            return v
        return 1.0 - truth(v)  # not: NaN stays NaN

    def _eval_compare(self, node: ast.Compare) -> Any:
        left = self._eval(node.left)
        result: Any = None
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = self._eval(comp)
            r = _compare(op, left, right)
            result = r if result is None else np.minimum(result, r)
            left = right
        return result

    def _eval_call(self, node: ast.Call) -> Any:
        if isinstance(node.func, ast.Name) and node.func.id == "where" and len(node.args) == 3:
            # each branch is computed for all rows (vectorised), but its notes count only on the
            # rows that take it: has_prev(x) guarding prev(x) leaves no "no previous year" reason
            cond = self._eval(node.args[0])
            notes = self.ctx.notes
            outer = notes.scope
            c = np.broadcast_to(truth(cond), (self.ctx.n,))
            branches: list[Any] = []
            for take in (c == 1.0, c == 0.0):
                notes.scope = take if outer is None else (take & outer)
                try:
                    branches.append(self._eval(node.args[1 + len(branches)]))
                finally:
                    notes.scope = outer
            out = self.functions["where"](cond, *branches)
            if self.ctx.record:
                self.ctx.notes.fallback(c == 0.0, self.ctx.record)
            return out
        if (
            isinstance(node.func, ast.Name)
            and node.func.id in PANEL_FUNCTIONS
            and node.args
            and not isinstance(node.args[0], ast.Name | ast.Constant)
        ):
            # prev(a / b): the whole expression is computed on every row, then each row takes the
            # value of its firm's other-year row, so all its terms come from that one year. What
            # the expression meets on the way (a division by zero, a fallback) belongs to the
            # other year's row, not to this one: no notes here; a value the other year lacks is
            # this row's "no previous year value" (issue #13.7)
            notes = self.ctx.notes
            outer = notes.scope
            notes.scope = np.zeros(self.ctx.n, dtype=bool)
            try:
                inner = self._eval(node.args[0])
            finally:
                notes.scope = outer
            return self.functions[node.func.id](inner, *[self._eval(a) for a in node.args[1:]])
        if isinstance(node.func, ast.Name) and node.func.id in ("coalesce", "safe_div") and self.ctx.record:
            args = [self._eval(a) for a in node.args]
            out = self.functions[node.func.id](*args)
            if node.func.id == "coalesce":
                first = np.broadcast_to(np.isnan(np.asarray(args[0], dtype=np.float64)), (self.ctx.n,))
                took = first & ~np.broadcast_to(np.isnan(np.asarray(out, dtype=np.float64)), (self.ctx.n,))
            else:
                took = np.broadcast_to(np.asarray(args[1], dtype=np.float64) == 0, (self.ctx.n,))
            self.ctx.notes.fallback(took, self.ctx.record)
            return out
        return super()._eval_call(node)

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        table = self._eval(node.value)
        key = node.slice.value if isinstance(node.slice, ast.Constant) else self._eval(node.slice)
        return table[key]


# -- the compiled evaluator ------------------------------------------------------------------------
#
# Each formula's whitelisted syntax tree (rulebook.expressions) is turned once per plan into a tree
# of Python closures, each calling exactly the operator functions _ArrayEval calls for its node
# kind, in the same order, so the numbers (and the notes) are the same to the bit. No source text
# is compiled or evaluated: the closures only dispatch on node kinds chosen at compile time instead
# of on every evaluation (simpleeval's walk, its per-node result check, the per-frame function
# table). _ArrayEval stays the reference interpreter (tests compare the two on every rulebook).

Compiled = Callable[["Frame"], Any]
_CACHE_LIMIT = 4096  # formulas cached per plan (a plan has dozens; foreign nodes are compiled anyway)


def _plan_cache(plan: Plan) -> dict[Any, tuple[Any, Any]]:
    """What the engine works out once per plan (compiled formulas, per-node bookkeeping), kept on
    the plan and dropped when it is pickled or copied (Plan.__getstate__)."""
    cache = plan.__dict__.get("_compiled")
    if cache is None:
        cache = plan.__dict__["_compiled"] = {}
    return cache


def _at(plan: Plan, name: str) -> tuple[str, int, Note | None]:
    """What Frame.at sets for node ``name``: its name without the kind, its rank, its 'record:'
    note; the same for every frame of the plan, so worked out once."""
    cache = _plan_cache(plan)
    got = cache.get(("at", name))
    if got is None:
        current = name.split(":", 1)[-1]
        node = plan.nodes.get(name)
        text = node.spec.get("record") if node is not None and node.kind == "variable" else None
        record = Note("record", current, f"{current}: {text}") if text else None
        got = cache[("at", name)] = (None, (current, plan.rank(name), record))
    return got[1]


def compiled(plan: Plan, node: ast.AST) -> Compiled:
    """The closure that evaluates ``node`` (a formula of ``plan`` or a piece of one) over a frame;
    compiled once and kept on the plan (dropped when it is pickled or copied: Plan.__getstate__)."""
    cache = _plan_cache(plan)
    got = cache.get(id(node))
    if got is not None and got[0] is node:
        return got[1]
    fn = _compile(plan, node, cache)
    if len(cache) < _CACHE_LIMIT:
        cache[id(node)] = (node, fn)  # the node is held: its id cannot be reused while cached
    return fn


def _function(plan: Plan, name: str, cache: dict[Any, Any]) -> Callable[..., Any]:
    """What ``name(...)`` calls, as Frame.functions() binds it: a rulebook scale (which shadows a
    registry function of the same name), else the registry's implementation taking the frame."""
    if name in plan.scales:
        key = ("scale", name)
        got = cache.get(key)
        if got is None:
            got = cache[key] = (None, _scale_fn(plan.scales[name]))
        scale = got[1]
        return lambda ctx, *args: scale(*args)
    from ..rulebook.functions import FUNCTIONS

    return FUNCTIONS[name].run


def _compile(plan: Plan, node: ast.AST, cache: dict[Any, Any]) -> Compiled:  # noqa: C901 - one case per node kind
    """One node kind per branch, mirroring _ArrayEval's method for it."""

    def sub(n: ast.AST) -> Compiled:
        return _compile(plan, n, cache)

    if isinstance(node, ast.Expr):
        return sub(node.value)
    if isinstance(node, ast.Constant):
        const = node.value
        return lambda ctx: const
    if isinstance(node, ast.Name):
        name = node.id
        if name == MISSING:
            return lambda ctx: _NAN

        def look(ctx: Frame) -> Any:
            v = ctx.values.get(name, _ABSENT)
            if v is _ABSENT:
                return ctx.names(node)  # a parameter, resolved (and kept) on first use
            if type(v) is np.ndarray:
                if v.shape == _ONE and v.dtype is _F64_DTYPE:
                    # one row (a one-firm batch) or one value repeated over one row: the number
                    # itself, so that the arithmetic on it is np.float64's (the same bits as the
                    # ufunc's) and no one-element array is made per operation
                    return v[0]
                if v.strides == _REPEATED and v.size:  # _collapse, inlined
                    return v[:1].reshape(())
            return v

        return look
    if isinstance(node, ast.BinOp):
        left, right = sub(node.left), sub(node.right)
        op = type(node.op)
        if op in _ARITH:
            ufunc, pyop = _ARITH[op], _SCALAR_ARITH[op]
            left_fresh, right_fresh = type(node.left) in _FRESH, type(node.right) in _FRESH

            def arith(ctx: Frame) -> Any:
                a, b = left(ctx), right(ctx)
                ta, tb = type(a), type(b)
                if ta is _F64 or ta is float:
                    if tb is _F64 or tb is float:  # two numbers (parameters, collapsed columns): no ufunc
                        # np.float64's arithmetic: the bits, the type and the errstate warnings of the ufunc
                        return pyop(a, b) if ta is _F64 or tb is _F64 else pyop(_F64(a), b)
                    if tb is np.ndarray and b.shape == _ONE and b.dtype is _F64_DTYPE:  # a number and one row
                        return np.array([pyop(_F64(a), b.item())])
                elif ta is np.ndarray and (tb is _F64 or tb is float) and a.shape == _ONE and a.dtype is _F64_DTYPE:
                    return np.array([pyop(_F64(a.item()), b)])
                out = None
                if left_fresh and _is_full_column(a, b):
                    out = a
                elif right_fresh and _is_full_column(b, a):
                    out = b
                return ufunc(a, b, out=out)

            return arith
        if op is ast.Div:
            div_node = node

            def div(ctx: Frame) -> Any:
                a = left(ctx)
                return ctx.divide(a, right(ctx), div_node)

            return div
        if op is ast.Pow:

            def power(ctx: Frame) -> Any:
                a = left(ctx)
                return np.power(np.asarray(a, dtype=np.float64), right(ctx))

            return power
        raise TypeError(f"operator {op.__name__} not allowed")
    if isinstance(node, ast.UnaryOp):
        operand = sub(node.operand)
        if isinstance(node.op, ast.USub):
            return lambda ctx: np.negative(operand(ctx))
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(node.op, ast.Not):
            return lambda ctx: 1.0 - truth(operand(ctx))
        raise TypeError(f"operator {type(node.op).__name__} not allowed")
    if isinstance(node, ast.Compare):
        first = sub(node.left)
        steps = [(op, sub(comp)) for op, comp in zip(node.ops, node.comparators, strict=True)]

        def compare(ctx: Frame) -> Any:
            left = first(ctx)
            result: Any = None
            for op, comp in steps:
                right = comp(ctx)
                r = _compare(op, left, right)
                result = r if result is None else np.minimum(result, r)
                left = right
            return result

        return compare
    if isinstance(node, ast.Subscript):
        table = sub(node.value)
        if isinstance(node.slice, ast.Constant):
            key = node.slice.value
            spec = plan.parameters.get(node.value.id) if isinstance(node.value, ast.Name) else None
            if (
                spec is not None
                and spec.is_table
                and len(spec.dated) == 1
                and not spec.dated[0][0]
                and isinstance(key, str)
                and key in spec.dated[0][1]
            ):
                # an undated table holding the key: _BoundTable's answer whenever the batch has a
                # year (its `same` table), the value itself; without any year, the general lookup
                value = spec.dated[0][1][key]

                def constant_key(ctx: Frame) -> Any:
                    return value if ctx.year_groups() else table(ctx)[key]

                return constant_key
            return lambda ctx: table(ctx)[key]
        index = sub(node.slice)

        def subscript(ctx: Frame) -> Any:
            t = table(ctx)
            return t[index(ctx)]

        return subscript
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        return _compile_call(plan, node, node.func.id, [sub(a) for a in node.args], cache)
    raise TypeError(f"'{type(node).__name__}' is not allowed in formulas")


def _compile_call(plan: Plan, node: ast.Call, fname: str, args: list[Compiled], cache: dict[Any, Any]) -> Compiled:
    """A function call, with _ArrayEval._eval_call's special cases (where, panel functions of an
    expression, the 'record:' fallbacks of coalesce and safe_div)."""
    fn = _function(plan, fname, cache)
    if fname == "where" and len(args) == 3:
        cond_fn, then_fn, else_fn = args

        def where(ctx: Frame) -> Any:
            # each branch is computed for all rows, its notes count only on the rows that take it
            cond = cond_fn(ctx)
            notes = ctx.notes
            outer = notes.scope
            c = as_column(cond, ctx.n)
            branches: list[Any] = []
            for take, branch in ((c == 1.0, then_fn), (c == 0.0, else_fn)):
                notes.scope = take if outer is None else (take & outer)
                try:
                    branches.append(branch(ctx))
                finally:
                    notes.scope = outer
            out = fn(ctx, cond, *branches)
            if ctx.record:
                ctx.notes.fallback(c == 0.0, ctx.record)
            return out

        return where
    if fname in PANEL_FUNCTIONS and node.args and not isinstance(node.args[0], ast.Name | ast.Constant):
        inner_fn, rest = args[0], args[1:]

        def panel(ctx: Frame) -> Any:
            # the other year's notes belong to the other year's row (issue #13.7): none here
            notes = ctx.notes
            outer = notes.scope
            notes.scope = np.zeros(ctx.n, dtype=bool)
            try:
                inner = inner_fn(ctx)
            finally:
                notes.scope = outer
            return fn(ctx, inner, *[a(ctx) for a in rest])

        return panel
    if fname in ("coalesce", "safe_div"):
        is_coalesce = fname == "coalesce"

        def recorded(ctx: Frame) -> Any:
            if not ctx.record:
                return fn(ctx, *[a(ctx) for a in args])
            values = [a(ctx) for a in args]
            out = fn(ctx, *values)
            if is_coalesce:
                first = _full(np.isnan(np.asarray(values[0], dtype=np.float64)), ctx.n)
                took = first & ~_full(np.isnan(np.asarray(out, dtype=np.float64)), ctx.n)
            else:
                took = _full(np.asarray(values[1], dtype=np.float64) == 0, ctx.n)
            ctx.notes.fallback(took, ctx.record)
            return out

        return recorded
    if len(args) == 1:
        (only,) = args
        return lambda ctx: fn(ctx, only(ctx))
    if len(args) == 2:
        a1, a2 = args

        def call2(ctx: Frame) -> Any:
            x = a1(ctx)
            return fn(ctx, x, a2(ctx))

        return call2
    return lambda ctx: fn(ctx, *[a(ctx) for a in args])


def _full(x: Any, n: int) -> Any:
    """A temporary mask as ``n`` rows (np.broadcast_to unless it has them already)."""
    return x if isinstance(x, np.ndarray) and x.shape == (n,) else np.broadcast_to(x, (n,))


def _compare(op: ast.cmpop, a: Any, b: Any) -> Any:
    if isinstance(a, Category) or isinstance(b, Category):
        cat, label = (a, b) if isinstance(a, Category) else (b, a)
        code = cat.labels.index(label) if label in cat.labels else -2
        eq = (cat.codes == code).astype(np.float64)
        eq[cat.codes < 0] = _NAN
        return eq if isinstance(op, ast.Eq) else 1.0 - eq
    fn = {
        ast.Lt: np.less,
        ast.LtE: np.less_equal,
        ast.Gt: np.greater,
        ast.GtE: np.greater_equal,
        ast.Eq: np.equal,
        ast.NotEq: np.not_equal,
    }[type(op)]
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    r = fn(a64, b64).astype(np.float64)
    unknown = np.isnan(a64) | np.isnan(b64)
    if np.ndim(r) == 0:
        return np.float64(_NAN) if unknown else r
    r[unknown if np.shape(unknown) == r.shape else np.broadcast_to(unknown, r.shape)] = _NAN
    return r


@dataclass(frozen=True)
class Patch:
    """An override of some rows only: where ``mask`` is true the value is replaced by ``values``."""

    mask: np.ndarray
    values: np.ndarray

    def apply(self, v: Any, n: int) -> np.ndarray:
        out = np.array(np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)))
        out[self.mask] = np.broadcast_to(self.values, (n,))[self.mask]
        return out


class Frame:
    """One batch being evaluated: its columns, the values computed so far, notes and tables."""

    # True: formulas go through the reference interpreter (_ArrayEval, simpleeval's walk) instead
    # of the compiled closures; the tests compare the two, bit for bit, on every bundled rulebook
    reference = False

    def __init__(
        self, plan: Plan, batch: Batch, tables: Mapping[str, BenchmarkTable] | None, overrides: Mapping[str, Any] | None
    ):
        self.plan, self.batch, self.n = plan, batch, batch.n
        self.notes = _Notes(batch.n)
        self.values: dict[str, Any] = {}
        self.given_tables = dict(tables or {})
        self.tables: dict[str, BenchmarkTable] = {}
        self.overrides = dict(overrides or {})
        self.current = ""
        self.record: Note | None = None  # the current variable's 'record:' note, if it asks for one
        years = batch.columns["year"]
        self.years = np.where(np.isnan(years), -1, years).astype(np.int64)
        self._year_groups: list[tuple[int, np.ndarray]] | None = None
        self._year_offsets: tuple[np.ndarray, list[int]] | None = None
        self._firm_index: tuple[np.ndarray, np.ndarray] | None = None
        self.aux: dict[str, Any] = {}
        self.invalid = batch.invalid.copy()  # grows as error checks fail
        self.done: set[str] = set()  # nodes evaluated
        self.levels: dict[str, np.ndarray] = {}  # rating → level index per row
        self._first_use: dict[str, int] | None = None
        self._ev: _ArrayEval | None = None
        self._bound: list[str] = []  # parameters bound to a _BoundTable in self.values (release)

    def at(self, name: str) -> None:
        """Evaluating node ``name`` now: notes taken are ranked at its place in the plan."""
        self.current, self.notes.rank, self.record = _at(self.plan, name)

    def first_use(self, name: str) -> int:
        """Rank of the first node (in plan order) that uses parameter ``name``."""
        if self._first_use is None:
            first: dict[str, int] = {}
            for i, node in enumerate(self.plan.order):
                for dep in self.plan.nodes[node].deps:
                    first.setdefault(dep, i)
            self._first_use = first
        return self._first_use.get(name, self.notes.rank)

    def next_benchmark_stage(self) -> int | None:
        """The lowest stage with a benchmark not evaluated yet (None: no more benchmarks)."""
        stages = [stage for name, stage in _benchmark_stages(self.plan) if name not in self.done]
        return min(stages, default=None)

    # names -----------------------------------------------------------------------------------
    def names(self, node: ast.Name) -> Any:
        name = node.id
        if name == MISSING:
            return _NAN
        if name in self.values:
            v = self.values[name]
            # a column that is one value repeated (an input empty throughout, a constant variable)
            # enters arithmetic as that value: results stay one value, not a million copies
            return _collapse(v) if isinstance(v, np.ndarray) else v
        if name in self.plan.parameters:
            v = self.resolve_param(name)
            self.values[name] = v
            if isinstance(v, _BoundTable):
                self._bound.append(name)
            return v
        raise KeyError(name)  # pragma: no cover - the compiler proved every name

    def resolve_param(self, name: str) -> Any:
        spec = self.plan.parameters[name]
        if spec.is_table:
            return _BoundTable(self, name)
        if len(spec.dated) == 1 and not spec.dated[0][0]:
            return spec.dated[0][1]
        entries = [spec.value_for_year(y) for y, _ in self.year_groups()]
        if entries and entries[0] is not None and all(e is entries[0] for e in entries):
            return entries[0][1]
        out = np.full(self.n, _NAN)
        rank = self.first_use(name)
        for y, rows in self.year_groups():
            found = spec.value_for_year(y)
            if found is None:
                self.notes.reason(
                    rows_mask(self.n, rows), Note("no_value", name, f"{name}: no value in force for {y}"), rank
                )
            else:
                out[rows] = found[1]
        return out

    def year_groups(self) -> list[tuple[int, np.ndarray]]:
        """(year, its rows) for each year present; a stable radix sort of small integers."""
        if self._year_groups is None and self.n <= _FEW_ROWS:  # the same groups, in Python
            ys = self.years.tolist()
            self._year_groups = [
                (y, np.array([i for i, v in enumerate(ys) if v == y], dtype=np.intp))
                for y in sorted({v for v in ys if v >= 0})
            ]
        if self._year_groups is None:
            ok = self.years >= 0
            if not ok.any():
                self._year_groups = []
                return self._year_groups
            lo = int(self.years[ok].min())
            offset = np.where(ok, self.years - lo, -1)
            if offset.max() < 32000:
                offset = offset.astype(np.int16)
            order = np.argsort(offset, kind="stable")
            counts = np.bincount(offset[ok].astype(np.int64))
            start = int((~ok).sum())  # rows without a year sort first (-1)
            groups = []
            for k, c in enumerate(counts.tolist()):
                if c:
                    groups.append((lo + k, order[start : start + c]))
                    start += c
            self._year_groups = groups
        return self._year_groups

    def year_offsets(self) -> tuple[np.ndarray, list[int]]:
        """(index of each row's year among the years present, -1 without a year; those years)."""
        if self._year_offsets is None:
            ylist = [y for y, _ in self.year_groups()]
            if not ylist:
                self._year_offsets = (np.full(self.n, -1, dtype=np.int64), [])
            elif self.n <= _FEW_ROWS:
                where = {y: i for i, y in enumerate(ylist)}
                self._year_offsets = (
                    np.array([where.get(y, -1) for y in self.years.tolist()], dtype=np.int64),
                    ylist,
                )
            else:
                lo = ylist[0]
                lut = np.full(ylist[-1] - lo + 2, -1, dtype=np.int64)  # last entry: rows without a year
                lut[np.asarray(ylist) - lo] = np.arange(len(ylist))
                off = np.where(self.years >= 0, self.years - lo, len(lut) - 1)
                self._year_offsets = (lut[off], ylist)
        return self._year_offsets

    # arithmetic with bookkeeping -------------------------------------------------------------
    def divide(self, a: Any, b: Any, node: ast.BinOp) -> Any:
        ta, tb = type(a), type(b)
        if (tb is _F64 or tb is float) and (ta is _F64 or ta is float) and b != 0:
            return _F64(a) / b  # two numbers (one row): np.divide's bits, no arrays
        a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        zero = b64 == 0
        if zero.any() if type(zero) is not np.ndarray or zero.size > 64 else np.count_nonzero(zero):
            out = np.divide(a64, np.where(zero, 1.0, b64))
            out = np.where(zero, _NAN, out)
            hit = np.broadcast_to(zero & ~np.isnan(a64), (self.n,))
            self.notes.reason(
                hit,
                Note(
                    "division_by_zero",
                    self.current,
                    f"division by zero in {self.current}: {ast.unparse(node.right)} = 0",
                ),
            )
            return out
        return np.divide(a64, b64)

    # functions -------------------------------------------------------------------------------
    def functions(self) -> dict[str, Any]:
        """The formula functions (one registry: ``ruleengine.rulebook.functions``) and the
        rulebook's scales, bound to this frame."""
        from functools import partial

        from ..rulebook.functions import FUNCTIONS

        funcs: dict[str, Any] = {name: partial(fn.run, self) for name, fn in FUNCTIONS.items()}
        for name, scale in self.plan.scales.items():
            funcs[name] = _scale_fn(scale)
        return funcs

    def prefix(self, cat: Category, k: int) -> Category:
        """The first ``k`` characters of each label (industry → division), labels sorted."""
        cut = [lab[:k] for lab in cat.labels]
        labels = sorted(set(cut))
        position = {lab: i for i, lab in enumerate(labels)}
        remap = np.array([position[c] for c in cut] + [-1], dtype=np.int32)
        return Category(remap[cat.codes], labels)

    def firm_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted keys firm_code*10000+year, the row of each key) for panel lookups."""
        if self._firm_index is None:
            firm = self.batch.firm_codes.astype(np.int64)
            key = np.where((firm >= 0) & (self.years >= 0), firm * 10000 + self.years, -1)
            order = np.argsort(key, kind="stable")
            self._firm_index = (key[order], order)
            self._firm_codes = firm
        return self._firm_index

    def has_shifted(self, x: Any) -> np.ndarray:
        """1 where the firm has a previous-year row and x has a value in it, else 0 (never missing)."""
        keys, rows = self.firm_index()
        firm = self._firm_codes
        want = np.where((firm >= 0) & (self.years >= 0), firm * 10000 + self.years - 1, -2)
        if not len(keys):
            return np.zeros(self.n)
        pos = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
        found = keys[pos] == want
        xv = np.broadcast_to(np.asarray(x, dtype=np.float64), (self.n,))
        src = np.where(found, rows[pos], 0)
        return (found & ~np.isnan(xv[src])).astype(np.float64)

    def shifted(self, x: Any, year: int | None, otherwise: Any) -> np.ndarray:
        if self.n <= _FEW_ROWS:
            return self._shifted_few(x, year, otherwise)
        keys, rows = self.firm_index()
        firm = self._firm_codes
        target_year = self.years - 1 if year is None else np.full(self.n, year)
        want = np.where((firm >= 0) & (self.years >= 0), firm * 10000 + target_year, -2)
        pos = np.searchsorted(keys, want)
        pos = np.minimum(pos, len(keys) - 1) if len(keys) else pos
        found = (len(keys) > 0) & (keys[pos] == want) if len(keys) else np.zeros(self.n, dtype=bool)
        src = np.where(found, rows[pos] if len(keys) else 0, 0)
        xv = np.broadcast_to(np.asarray(x, dtype=np.float64), (self.n,))
        out = np.where(found, xv[src], _NAN)
        label = "previous year" if year is None else str(year)
        missing = ~found | np.isnan(out)
        if otherwise is not None:
            fb = np.broadcast_to(np.asarray(otherwise, dtype=np.float64), (self.n,))
            self.notes.fallback(
                missing,
                Note(
                    "panel_fallback", self.current, f"{self.current}: no {label} value for this firm, used the fallback"
                ),
            )
            out = np.where(missing, fb, out)
        else:
            self.notes.reason(
                missing, Note("no_panel_value", self.current, f"{self.current}: no {label} value for this firm")
            )
        return out

    def _shifted_few(self, x: Any, year: int | None, otherwise: Any) -> np.ndarray:
        """:meth:`shifted` of a few rows, the same values and notes without numpy's fixed costs:
        each key's first row in input order is the one the stable sort's search finds (rows
        without a firm or a year share the key -1, wanted by nobody but firm 0 in year 0)."""
        n = self.n
        firms, years = self.batch.firm_codes.astype(np.int64).tolist(), self.years.tolist()
        first: dict[int, int] = {}
        for i, (f, y) in enumerate(zip(firms, years, strict=True)):
            first.setdefault(f * 10000 + y if f >= 0 and y >= 0 else -1, i)
        xs = np.asarray(x, dtype=np.float64)
        values = [xs.item()] * n if xs.ndim == 0 else np.broadcast_to(xs, (n,)).tolist()
        out, missing = [], []
        for f, y in zip(firms, years, strict=True):
            src = first.get(f * 10000 + (y - 1 if year is None else year)) if f >= 0 and y >= 0 else None
            v = _NAN if src is None else values[src]
            out.append(v)
            missing.append(src is None or v != v)
        label = "previous year" if year is None else str(year)
        gaps = np.array(missing, dtype=bool)
        if otherwise is not None:
            fb = np.asarray(otherwise, dtype=np.float64)
            fbs = [fb.item()] * n if fb.ndim == 0 else np.broadcast_to(fb, (n,)).tolist()
            self.notes.fallback(
                gaps,
                Note(
                    "panel_fallback", self.current, f"{self.current}: no {label} value for this firm, used the fallback"
                ),
            )
            out = [fbs[i] if m else v for i, (v, m) in enumerate(zip(out, missing, strict=True))]
        else:
            self.notes.reason(
                gaps, Note("no_panel_value", self.current, f"{self.current}: no {label} value for this firm")
            )
        return np.array(out, dtype=np.float64)

    # benchmarks ------------------------------------------------------------------------------
    def benchmark(self, spec: BenchmarkSpec) -> None:
        n = self.n
        if spec.name in self.overrides:
            v = np.broadcast_to(np.asarray(self.overrides[spec.name], dtype=np.float64), (n,)).copy()
            self.values[spec.name] = v
            self.aux[f"{spec.name}_peers"] = np.zeros(n, dtype=np.int64)
            self.aux[f"{spec.name}_group"] = (np.zeros(n, dtype=np.int8), ["given"])
            return
        from . import benchmarks as bm

        table = self.given_tables.get(spec.name) or self.tables.get(spec.name)
        if table is None:  # one batch on its own: the population is this batch
            own = bm.tables(self.plan, bm.partials(self, self.plan.nodes[spec.name].stage))
            self.tables.update(own)
            self.at(spec.name)
            table = own[spec.name]
        self.tables[spec.name] = table
        value, peers, level = bm.lookup(spec, table, self)
        self.values[spec.name] = value
        self.aux[f"{spec.name}_peers"] = peers
        self.aux[f"{spec.name}_group"] = (level, list(table.levels))
        # notes: fallbacks taken and benchmarks not found
        none = level < 0
        if _any(none):
            word = "peer" if spec.min_peers == 1 else "peers"
            self.notes.reason(
                none,
                Note(
                    "no_benchmark",
                    spec.name,
                    f"{spec.name}: no peer group with at least {spec.min_peers} {word} and no fallback value",
                ),
            )
        fell = level > 0
        if _any(fell):
            idx = _nonzero(fell)
            # one message per (level, group) pair, not per row
            codes = np.zeros(len(idx), dtype=np.int64)
            cats: dict[int, Category] = {}
            for lv in np.unique(level[idx]).tolist():
                cat = self._level_category(spec, table, lv)
                cats[lv] = cat
                sel = level[idx] == lv
                codes[sel] = cat.codes[idx[sel]]
            pair = level[idx] * (1 << 32) + (codes + 1)  # code -1 (no key) → 0
            uniq, inv = _unique_inverse(pair)
            texts = []
            for p in uniq.tolist():
                lv, code = divmod(p, 1 << 32)
                code -= 1
                label = cats[lv].labels[code] if 0 <= code < len(cats[lv].labels) else "?"
                tried = " and by ".join(spec.groups[:lv])
                if table.levels[lv] == "fallback":
                    if spec.fallback_parameter:
                        param = self.plan.parameters[spec.fallback_parameter]
                        key = label if label in param.keys else param.fallback_key
                        used = f"{spec.fallback_parameter}['{key}']"
                    else:
                        used = f"the fixed value {spec.fallback_value:g}"
                else:
                    used = f"{table.levels[lv]} '{label}'"
                if code < 0:
                    texts.append(f"{spec.name}: no {spec.fallback_key or spec.groups[0]} for this firm, used {used}")
                else:
                    texts.append(f"{spec.name}: fewer than {spec.min_peers} peers by {tried}, used {used}")
            self.notes.add("fallbacks", idx, (inv.ravel(), [Note("benchmark_fallback", spec.name, x) for x in texts]))

    def _level_category(self, spec: BenchmarkSpec, table: BenchmarkTable, lv: int) -> Category:
        if table.levels[lv] != "fallback":
            return self.group_labels(table.levels[lv])
        if spec.fallback_key:
            return self.group_labels(spec.fallback_key)
        return Category(np.zeros(self.n, dtype=np.int32), ["*"])

    def values_of(self, name: str | None) -> Any:
        """The value of an input, variable, benchmark or parameter in this frame."""
        assert name is not None
        if name in self.values:
            return self.values[name]
        if name in self.batch.columns:
            return self.batch.columns[name]
        return self.names(ast.Name(id=name))

    def evaluate_expr(self, expr: Any) -> Any:
        """A compiled formula over the frame's columns."""
        if self.reference:
            if self._ev is None:
                self._ev = _ArrayEval(self)
            return self._ev.eval(expr.text, previously_parsed=expr.node)
        return compiled(self.plan, expr.node)(self)

    def evaluate_node(self, node: ast.AST) -> tuple[Any, list[Note]]:
        """One piece of a formula over the frame; its value and the notes it took (a table
        lookup that fell back, a division by zero). The audit trail asks this of a one-row frame,
        so its lookups follow exactly the rules of the batch."""
        before = {kind: len(items) for kind, items in self.notes.items.items()}
        if self.reference:
            if self._ev is None:
                self._ev = _ArrayEval(self)
            value = self._ev._eval(node)
        else:
            value = compiled(self.plan, node)(self)
        taken = [
            payload
            for kind, items in self.notes.items.items()
            for _rank, _seq, _idx, payload in items[before[kind] :]
            if isinstance(payload, Note)
        ]
        taken += [
            notes[int(codes[0])]
            for kind, items in self.notes.items.items()
            for _rank, _seq, _idx, payload in items[before[kind] :]
            if not isinstance(payload, Note)
            for codes, notes in [payload]
        ]
        return value, taken

    def group_labels(self, group: str) -> Category:
        if group == "all":
            return Category(np.zeros(self.n, dtype=np.int32), ["all"])
        v = self.values.get(group)
        if v is None:
            v = self.batch.columns[group]
        return v


def _collapse(a: np.ndarray) -> Any:
    """A broadcast column (one value repeated, e.g. an absent input) as that one value; a float
    column of one row (a one-firm batch) as its number (np.float64: arithmetic on it gives the
    bits the ufunc gives, without a one-element array per operation)."""
    if a.shape == _ONE and a.dtype is _F64_DTYPE:
        return a[0]
    if a.ndim == 1 and a.size and a.strides[0] == 0:
        return a[:1].reshape(())
    return a


def _scale_fn(scale: Any) -> Any:
    xs, ys = np.asarray(scale.xs), np.asarray(scale.ys)
    if scale.kind == "piecewise":

        def piecewise(x: Any) -> Any:
            x = np.asarray(x, dtype=np.float64)
            return np.where(np.isnan(x), _NAN, np.interp(x, xs, ys))

        return piecewise
    side: Side = "left" if scale.closed == "right" else "right"

    def steps(x: Any) -> Any:
        x = np.asarray(x, dtype=np.float64)
        idx = np.searchsorted(xs, x, side=side)
        return np.where(np.isnan(x), _NAN, ys[np.minimum(idx, len(ys) - 1)])

    return steps


def _rate(r: RatingSpec, x: np.ndarray, ctx: Frame) -> np.ndarray:
    """Level index (into r.ids) per row; -1 where the value is missing."""
    n = ctx.n
    x = as_column(x, n)
    if r.levels:
        out = np.full(n, -1, dtype=np.int64)
        unknown = np.zeros(n, dtype=bool)
        for i, (_, cond, _) in enumerate(r.levels):
            if cond is None:
                out = np.where((out < 0) & ~unknown, i, out)
                break
            c = np.broadcast_to(truth(ctx.evaluate_expr(cond)), (n,))
            unknown |= (out < 0) & np.isnan(c)
            out = np.where((out < 0) & ~unknown & (c == 1.0), i, out)
        return out
    # bands: edges are the upper bounds of all but the last band, resolved per year
    side: Side = "left" if r.closed == "right" else "right"

    def edges_for(y: int) -> tuple[float, ...]:
        cache = _plan_cache(ctx.plan)  # the same for every frame of the plan: worked out once a year
        got = cache.get(("edges", id(r), y))
        if got is not None and got[0] is r:
            return got[1]
        edges = []
        for b in r.bands[:-1]:
            up = b.upper
            if isinstance(up, str):
                found = ctx.plan.parameters[up].value_for_year(y)
                up = found[1] if found else _NAN
            edges.append(_NAN if up is None else float(up))
        cache[("edges", id(r), y)] = (r, tuple(edges))  # r held: its id cannot be reused while cached
        return tuple(edges)

    groups = ctx.year_groups()
    per_year = [(y, rows, edges_for(y)) for y, rows in groups]
    out = np.full(n, -1, dtype=np.int64)
    if per_year and all(e == per_year[0][2] for _, _, e in per_year):  # same edges every year: one pass
        if not any(e != e for e in per_year[0][2]):  # no NaN edge
            edges = np.asarray(per_year[0][2])
            idx = _band_index(edges, x, side)
            if not np.isnan(np.add.reduce(x)) and sum(len(rows) for _, rows in groups) == n:  # every row has both
                return idx
            valid = (ctx.years >= 0) & ~np.isnan(x)
            return np.where(valid, idx, -1)
        return out
    for _y, rows, edges_t in per_year:
        edges = np.asarray(edges_t)
        xv = x[rows]
        idx = np.searchsorted(edges, xv, side=side)
        out[rows] = np.where(np.isnan(xv) | np.isnan(np.sum(edges)), -1, idx)
    return out


def _band_index(edges: np.ndarray, x: np.ndarray, side: Side) -> np.ndarray:
    """np.searchsorted(edges, x, side) for a handful of edges: counting the edges passed is a few
    vectorised comparisons, three times faster than a binary search per element."""
    if len(edges) > 8 or not len(edges):
        return np.searchsorted(edges, x, side=side).astype(np.int64)
    if len(x) <= _FEW_ROWS:  # a few rows: the same count of edges passed, in Python
        el = edges.tolist()
        if side == "left":
            return np.array([sum(v > e for e in el) for v in x.tolist()], dtype=np.int64)
        return np.array([sum(v >= e for e in el) for v in x.tolist()], dtype=np.int64)
    first, *rest = edges.tolist()
    idx = ((x > first) if side == "left" else (x >= first)).view(np.int8)  # counted in bytes: 8× less traffic
    idx = idx.copy() if rest else idx
    for e in rest:
        idx += (x > e) if side == "left" else (x >= e)
    return idx.astype(np.int64)


@dataclass
class Evaluation:
    """Raw outcome of evaluating a plan over a batch (the results table is built from it)."""

    values: dict[str, Any]
    levels: dict[str, np.ndarray]
    aux: dict[str, Any]
    rated: np.ndarray
    reasons: tuple[np.ndarray, list[tuple[Note, ...]]]  # (codes, combinations of notes); -1 = none
    fallbacks: tuple[np.ndarray, list[tuple[Note, ...]]]
    tables: dict[str, BenchmarkTable]


def row_frame(plan: Plan, results: Any, i: int) -> Frame:
    """A frame over row ``i`` of rated ``results`` alone, holding the batch's values for it."""
    batch, ev = results.batch, results.evaluation
    pick = np.array([i])
    one = batch.take(pick)
    frame = Frame(plan, one, results.tables, None)
    for name, col in one.columns.items():
        frame.values[name] = col
    for name, v in ev.values.items():
        frame.values[name] = v.take(pick) if isinstance(v, Category) else np.broadcast_to(v, (batch.n,))[i : i + 1]
    frame.done.update(plan.order)
    return frame


# -- the phases ----------------------------------------------------------------------------------


def stage1(
    plan: Plan,
    batch: Batch,
    tables: Mapping[str, BenchmarkTable] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Frame:
    """Stage 1: every per-row formula that the next benchmarks not in ``tables`` depend on.

    Then :func:`ruleengine.engine.benchmarks.partials` of the frame, merged over every partition,
    gives those benchmarks' tables; :func:`stage2` finishes the frame with them."""
    frame = Frame(plan, batch, tables, overrides)
    for name, col in batch.columns.items():
        frame.values[name] = col
    advance(frame, _pending_stage(frame))
    return frame


def _pending_stage(frame: Frame) -> int | None:
    """The lowest benchmark stage whose tables are neither given nor computed yet."""
    stages = [
        stage
        for name, stage in _benchmark_stages(frame.plan)
        if name not in frame.done and name not in frame.given_tables and name not in frame.overrides
    ]
    return min(stages, default=None)


def _benchmark_stages(plan: Plan) -> list[tuple[str, int]]:
    """(name, stage) of each benchmark, in plan order; worked out once per plan."""
    cache = _plan_cache(plan)
    got = cache.get(("benchmark stages",))
    if got is None:
        got = cache[("benchmark stages",)] = (
            None,
            [(name, plan.nodes[name].stage) for name in plan.order if plan.nodes[name].kind == "benchmark"],
        )
    return got[1]


def _steps(plan: Plan) -> list[tuple[str, int, Any, tuple[str, int, Note | None], Compiled | None]]:
    """The plan's nodes by stage (plan order within a stage) as (name, stage, node, what
    Frame.at sets, the compiled formula of a variable), worked out once per plan."""
    cache = _plan_cache(plan)
    got = cache.get(("steps",))
    if got is None:
        steps = []
        for name in sorted(plan.order, key=lambda name: plan.nodes[name].stage):  # stable: plan order
            node = plan.nodes[name]
            fn = compiled(plan, node.expr.node) if node.kind == "variable" and node.expr is not None else None
            steps.append((name, node.stage, node, _at(plan, name), fn))
        got = cache[("steps",)] = (None, steps)
    return got[1]


def advance(frame: Frame, below: int | None = None) -> None:
    """Evaluate the frame's nodes of stages below ``below`` (all of them: None), in plan order."""
    plan, n = frame.plan, frame.n
    done, overrides, notes, values = frame.done, frame.overrides, frame.notes, frame.values
    reference = frame.reference
    invalid = frame.invalid
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for name, stage, node, at, fn in _steps(plan):
            if name in done or (below is not None and stage >= below):
                continue
            frame.current, notes.rank, frame.record = at
            if node.kind == "variable":
                given = overrides.get(name) if overrides else None
                if given is None or isinstance(given, Patch):
                    v = frame.evaluate_expr(node.expr) if reference or fn is None else fn(frame)
                    if isinstance(given, Patch):
                        v = given.apply(v, n)
                else:
                    v = np.broadcast_to(np.asarray(given, dtype=np.float64), (n,)).copy()
                if not isinstance(v, Category):
                    v = as_column(v, n)
                values[name] = v
            elif node.kind == "benchmark":
                frame.benchmark(plan.benchmarks[name])
            elif node.kind == "check":
                ok = as_column(frame.evaluate_expr(node.expr), n)
                failed = ok == 0.0
                if _any(failed):
                    severity = node.spec.get("severity", "error")
                    frame.notes.reason(
                        failed, Note("check", frame.current, f"check {frame.current}: {node.spec['message']}")
                    )
                    if severity == "error":
                        invalid |= failed
            else:
                rname = name.split(":", 1)[1]
                rating = plan.ratings[rname]
                x = frame.evaluate_expr(rating.value)
                frame.values[name] = xc = as_column(x, n)
                beyond = np.isinf(xc)  # an overflow (inputs near 1e308): never a level, always a reason
                if _any(beyond):
                    frame.notes.reason(
                        beyond,
                        Note(
                            "overflow",
                            rname,
                            f"{rname}: {rating.value.text} is beyond the range of numbers (±1.8e308): "
                            "an input out of range?",
                        ),
                    )
                    invalid |= beyond
                frame.levels[rname] = _rate(rating, x, frame)
            done.add(name)


def stage2(frame: Frame, tables: Mapping[str, BenchmarkTable] | None = None) -> Evaluation:
    """Stage 2: the rest of the plan over the frame, looking benchmarks up in ``tables``."""
    frame.given_tables.update(tables or {})
    advance(frame)
    return finish(frame)


def finish(frame: Frame) -> Evaluation:
    """The evaluation of a frame whose every node is evaluated."""
    plan = frame.plan
    levels = frame.levels
    invalid = frame.invalid
    primary = levels[plan.primary]
    rated = (primary >= 0) & ~invalid
    for lv in levels.values():
        lv[invalid] = -1
    not_computed = (levels[plan.primary] < 0) & ~invalid
    if _any(not_computed):
        value_text = plan.ratings[plan.primary].value.text
        frame.notes.reason(
            not_computed,
            Note("not_computed", plan.primary, f"{plan.primary}: {value_text} could not be computed"),
            rank=len(plan.order),
        )
    if frame.batch.jurisdiction is not None:
        _jurisdiction_notes(frame)
    extra = {i: [_data_note(m) for m in msgs] for i, msgs in frame.batch.row_issues.items()}
    reasons = frame.notes.join("reasons", extra)
    fallbacks = frame.notes.join("fallbacks")
    nodes = plan.nodes
    values = {k: v for k, v in frame.values.items() if k in nodes}
    release(frame)
    return Evaluation(values, levels, frame.aux, rated, reasons, fallbacks, frame.tables)


def release(frame: Frame) -> None:
    """Break the reference cycles between a frame and its formula evaluator, so that a frame
    nobody holds frees its columns at once instead of at the next garbage collection (30
    evaluations of what-it-takes piled up 6 GB of such garbage at 2M rows; a benchmark pass of the
    chunked runner kept every chunk's stage-1 columns: 2.6 GB at 2M rows in 500k chunks, issue
    #11.4). The frame stays usable: a later evaluate_node() makes a new evaluator."""
    if frame._ev is not None:  # simpleeval keeps bound methods of itself: a cycle of its own
        frame._ev.ctx = None  # type: ignore[assignment]
        frame._ev.functions = {}
        frame._ev.names = {}
        frame._ev = None
    for name in frame._bound:
        if isinstance(frame.values.get(name), _BoundTable):
            del frame.values[name]  # a bound table refers to its frame; it is bound again when looked up
    frame._bound.clear()


def _jurisdiction_notes(frame: Frame) -> None:
    """The rows outside the rulebook's jurisdiction (a reason) and those rated outside it on
    request (a fallback), one note per division, listed first. A row whose division cannot be
    told is rated as inside and says so in the ``jurisdiction`` column (``unknown``) only."""
    from ..io.jurisdiction import OUTSIDE, OUTSIDE_RATED

    jur = frame.batch.jurisdiction
    for status, kind in ((OUTSIDE, "reasons"), (OUTSIDE_RATED, "fallbacks")):
        idx = _nonzero(jur.status == status)
        if not len(idx):
            continue  # (all rows inside: the rows' divisions are never built, Jurisdiction.division)
        where = jur.describe()
        labels = jur.division.labels
        uniq, inv = _unique_inverse(jur.division.codes[idx].astype(np.int64))
        notes = []
        for c in uniq.tolist():
            label = labels[c]  # an outside row always has its division
            column = "region" if label.endswith("(region)") else "firm_id"
            if status == OUTSIDE:
                notes.append(
                    Note("outside_jurisdiction", column, f"outside jurisdiction: division {label} is not in {where}")
                )
            else:
                notes.append(
                    Note(
                        "any_jurisdiction",
                        column,
                        f"jurisdiction: division {label} is outside {where}; rated and counted in the peer groups "
                        "on request (any jurisdiction)",
                    )
                )
        frame.notes.add(kind, idx, (inv.ravel(), notes), rank=-1)


def _data_note(message: str) -> Note:
    column, sep, _ = message.partition(": ")
    return Note("data", column if sep and " " not in column else "", message)


def evaluate(
    plan: Plan,
    batch: Batch,
    tables: Mapping[str, BenchmarkTable] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Every phase over one batch: stage 1 → partials → tables → stage 2. Pure given its arguments;
    benchmarks in ``tables`` are looked up instead of computed from the batch."""
    return stage2(stage1(plan, batch, tables, overrides))
