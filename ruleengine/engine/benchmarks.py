"""Benchmarks as an explicit, mergeable phase: partials per partition → merge → tables → lookup.

A benchmark is a population statistic over peer groups (ratio of sums, mean, median or
percentile rank, per group level and reporting year). Evaluation is split so that a portfolio can
be rated in pieces — chunks of a file larger than memory, partitions on Spark or Dask — and still
get exactly the numbers of a one-batch run:

    stage 1 (per row)  →  partials(frame, stage)      one per partition
                       →  merge(partials, ...)         associative and commutative, exact
                       →  tables(plan, merged)         BenchmarkTable per benchmark
                       →  stage 2 (per row, looking the tables up)

Sums are **exact**: every float64 is an integer multiple of 2**-1126 once split into two 26/27-bit
halves of its significand, so a group's sum is kept as a Python integer in those units and rounded
to float64 once, correctly (the same value as ``math.fsum`` of the group), whatever the order or
the partitioning of the rows. Medians and percentile ranks keep every value of the group in the
partial (8 bytes per eligible row and benchmark level); merging concatenates and the table sorts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..rulebook.plan import BenchmarkSpec, Plan

if TYPE_CHECKING:
    from .evaluator import Frame

from ..io.data import Category

_NAN = np.nan
_SCALE = 1126  # 2**-1126 divides every float64 split as below (the smallest subnormal is 2**-1074)
_TWO53 = 9007199254740992.0
_TWO26 = 67108864.0
_BLOCK = 1 << 20  # rows summed at a time: 2**20 limbs of 41 bits stay below 2**62 in int64
_LIMB = 41


# -- exact sums -----------------------------------------------------------------------------------


def exact_sums(bins: np.ndarray, x: np.ndarray, k: int) -> list[int]:
    """The exact sum of ``x`` in each bin ``0..k-1``, as integers in units of ``2**-1126``.

    Vectorised, in integer limbs: with ``2**E`` above every ``|x|``, each value is cut (exactly,
    by adding and subtracting ``1.5 * 2**(t + 52)``) into a multiple of ``2**t`` and a remainder,
    for ``t = E - 41, E - 82, ...`` until nothing remains; each limb is a 41-bit integer, summed per
    bin in int64 (``np.add.at``; exact for up to 2**20 rows a block), and the few bin sums become
    Python integers. Values in a realistic range need two limbs.
    """
    out = [0] * k
    if not len(x) or not k:
        return out
    top = float(np.max(np.abs(x)))
    if top == 0.0:
        return out
    e_top = math.frexp(top)[1]  # every |x| < 2**e_top
    if e_top > 960:  # 1.5 * 2**(t + 52) would overflow: the slower exponent-by-exponent sum
        return _exact_sums_by_exponent(bins, x, k)
    acc = np.zeros(k, dtype=object)
    for start in range(0, len(x), _BLOCK):
        part_bins = bins[start : start + _BLOCK]
        rest = np.array(x[start : start + _BLOCK], dtype=np.float64)
        t = e_top
        while True:
            t = max(t - _LIMB, -1074)
            sigma = math.ldexp(1.5, t + 52)
            limb = rest + sigma
            limb -= sigma  # rest rounded to a multiple of 2**t (half to even): exact
            rest -= limb  # exact
            # the limb in units of 2**t: an integer below 2**41 (scaling by a power of two is exact)
            scaled = np.ldexp(limb, -t) if t < -1000 else np.multiply(limb, math.ldexp(1.0, -t), out=limb)
            sums = np.zeros(k, dtype=np.int64)
            np.add.at(sums, part_bins, scaled.astype(np.int64))
            hit = np.flatnonzero(sums)
            if len(hit):
                acc[hit] += sums[hit].astype(object) << (t + _SCALE)
            if t == -1074 or not rest.any():
                break
    return [int(v) for v in acc.tolist()]


def _exact_sums_by_exponent(bins: np.ndarray, x: np.ndarray, k: int) -> list[int]:
    """:func:`exact_sums` for values near the top of the float64 range: the two halves of each
    significand summed per (bin, exponent) by ``np.bincount`` (exact: integers below 2**53)."""
    out = [0] * k
    frac, e = np.frexp(x)
    m = frac * _TWO53  # the significand as an integer-valued float (exact)
    hi = np.trunc(m * (1.0 / _TWO26))  # |hi| < 2**27, exact
    lo = m - hi * _TWO26  # |lo| < 2**26, exact
    nonzero = m != 0
    if not nonzero.any():
        return out
    emin = int(e[nonzero].min())
    width = int(e[nonzero].max()) - emin + 1
    cell = bins.astype(np.int64) * width + np.where(nonzero, e - emin, 0)
    used, cell = np.unique(cell, return_inverse=True)
    h_sum = np.zeros(len(used), dtype=np.int64)
    l_sum = np.zeros(len(used), dtype=np.int64)
    for start in range(0, len(x), _BLOCK):
        part = slice(start, start + _BLOCK)
        h_sum += np.bincount(cell[part], weights=hi[part], minlength=len(used)).astype(np.int64)
        l_sum += np.bincount(cell[part], weights=lo[part], minlength=len(used)).astype(np.int64)
    shift = (used % width + emin - 53 + _SCALE).astype(object)
    whole = (h_sum.astype(object) * (1 << 26) + l_sum.astype(object)) << shift
    for b, s in zip((used // width).tolist(), whole.tolist(), strict=True):
        out[b] += s
    return out


def to_float(s: int) -> float:
    """An exact sum (units of 2**-1126) rounded to the nearest float64 (ties to even); a sum
    beyond the float64 range is ±inf, as plain float addition would give."""
    if not s:
        return 0.0
    try:
        return s / (1 << _SCALE)
    except OverflowError:
        return math.inf if s > 0 else -math.inf


# -- partials -------------------------------------------------------------------------------------


@dataclass
class Group:
    """One peer group (level, year, label) of one partition: what merging needs, exactly."""

    count: int
    num: int = 0  # exact sum of the numerator (ratio of sums) or of the values (mean)
    den: int = 0  # exact sum of the denominator (ratio of sums)
    values: np.ndarray | None = None  # every value (median, percentile rank)

    def add(self, other: Group) -> Group:
        values = self.values
        if other.values is not None:
            values = other.values if values is None else np.concatenate([values, other.values])
        return Group(self.count + other.count, self.num + other.num, self.den + other.den, values)


@dataclass
class Partial:
    """One benchmark's partial statistics over some rows: ``groups[level][(year, label)]``."""

    name: str
    statistic: str
    levels: list[str]
    groups: list[dict[tuple[int, str], Group]] = field(default_factory=list)


Partials = dict[str, Partial]


def partials(frame: Frame, stage: int | None = None) -> Partials:
    """The partial statistics of the benchmarks of ``stage`` (the frame's next benchmark stage
    by default) over the frame's rows. The frame must have been evaluated up to that stage."""
    plan = frame.plan
    stage = frame.next_benchmark_stage() if stage is None else stage
    out: Partials = {}
    for name in plan.order:
        node = plan.nodes[name]
        if node.kind == "benchmark" and node.stage == stage and name not in frame.given_tables:
            out[name] = _partial(plan.benchmarks[name], frame)
    return out


def _partial(spec: BenchmarkSpec, frame: Frame) -> Partial:
    n = frame.n
    part = Partial(spec.name, spec.statistic, list(spec.groups))
    if spec.statistic == "ratio_of_sums":
        num = np.broadcast_to(np.asarray(frame.values_of(spec.numerator), dtype=np.float64), (n,))
        den = np.broadcast_to(np.asarray(frame.values_of(spec.denominator), dtype=np.float64), (n,))
        eligible = np.isfinite(num) & np.isfinite(den)
    else:
        val = np.broadcast_to(np.asarray(frame.values_of(spec.of), dtype=np.float64), (n,))
        eligible = np.isfinite(val)
    eligible &= ~frame.invalid & (frame.years >= 0)
    if spec.where is not None:
        from .evaluator import truth

        eligible &= truth(frame.evaluate_expr(spec.where)) == 1.0
    finest: _Level | None = None
    for group in spec.groups:
        cat = frame.group_labels(group)
        level = _Level(frame, cat, eligible)
        derived = finest is not None and spec.statistic in ("ratio_of_sums", "mean") and level.nested_in(finest)
        if derived:
            assert finest is not None
            counts, sums_num, sums_den = level.from_finer(
                finest,
                spec,
                num if spec.statistic == "ratio_of_sums" else val,
                den if spec.statistic == "ratio_of_sums" else None,
            )
            values: list[np.ndarray | None] = [None] * level.g
        else:
            counts = level.counts
            sums_num, sums_den, values = [0] * level.g, [0] * level.g, [None] * level.g
            if spec.statistic == "ratio_of_sums":
                sums_num = exact_sums(level.inv, level.take(num), level.g)
                sums_den = exact_sums(level.inv, level.take(den), level.g)
            elif spec.statistic == "mean":
                sums_num = exact_sums(level.inv, level.take(val), level.g)
            else:
                v = level.take(val) + 0.0  # -0.0 → 0.0: the same multiset whatever the order
                order = np.argsort(level.inv, kind="stable")
                starts = np.r_[0, np.cumsum(counts)[:-1]] if level.g else np.zeros(0, dtype=np.int64)
                sv = v[order]
                values = [sv[s : s + c] for s, c in zip(starts.tolist(), counts.tolist(), strict=True)]
            level.sums = (sums_num, sums_den)
        if finest is None:
            finest = level
        groups: dict[tuple[int, str], Group] = {}
        labels = cat.labels
        for i, kk in enumerate(level.uniq.tolist()):
            if counts[i] == 0:
                continue
            year, code = divmod(kk, level.ncat)
            groups[(int(year), labels[code - 1])] = Group(int(counts[i]), sums_num[i], sums_den[i], values[i])
        part.groups.append(groups)
    return part


class _Level:
    """The peer groups (year, label) of one group level over a frame's eligible rows."""

    def __init__(self, frame: Frame, cat: Category, eligible: np.ndarray):
        n = frame.n
        self.rows = eligible & (cat.codes >= 0)
        self.everyone = bool(self.rows.all())
        self.ncat = len(cat.labels) + 1
        self.key = frame.years * self.ncat + (cat.codes.astype(np.int64) + 1)  # 0: no label
        k = self.key if self.everyone else self.key[self.rows]
        if k.size and int(k.max()) < 4 * n + 1_000_000:  # dense keys: count without sorting
            present = np.bincount(k)
            self.uniq = np.flatnonzero(present)
            remap = np.zeros(len(present), dtype=np.int64)
            remap[self.uniq] = np.arange(len(self.uniq))
            self.inv = remap[k]
            self.counts = present[self.uniq]
        else:
            self.uniq, self.inv = np.unique(k, return_inverse=True)
            self.counts = np.bincount(self.inv, minlength=len(self.uniq))
        self.g = len(self.uniq)
        self.sums: tuple[list[int], list[int]] = ([], [])

    def take(self, x: np.ndarray) -> np.ndarray:
        return x if self.everyone else x[self.rows]

    def nested_in(self, finer: _Level) -> bool:
        """Every finer group lies in one group of this level (or in none): industry in division."""
        if not finer.g or not finer.sums[0] and not finer.sums[1]:
            return False
        mine = finer.take(self.key)  # this level's key on the finer level's rows
        first = np.empty(finer.g, dtype=np.int64)
        first[finer.inv[::-1]] = np.arange(len(finer.inv) - 1, -1, -1)  # first row of each finer group
        low = mine[first]
        if not np.array_equal(mine, low[finer.inv]):
            return False
        self._parent = low  # this level's key of each finer group (code 0 → no label here)
        return True

    def from_finer(
        self, finer: _Level, spec: BenchmarkSpec, num: np.ndarray, den: np.ndarray | None
    ) -> tuple[np.ndarray, list[int], list[int]]:
        """Counts and exact sums of this level from the finer level's groups, plus the rows that
        have a label here but none at the finer level."""
        position = {int(k): i for i, k in enumerate(self.uniq.tolist())}
        counts = np.zeros(self.g, dtype=np.int64)
        sums_num, sums_den = [0] * self.g, [0] * self.g
        fine_num, fine_den = finer.sums
        for j, parent in enumerate(self._parent.tolist()):
            i = position.get(parent)
            if i is None:  # the finer group has no label at this level
                continue
            counts[i] += finer.counts[j]
            sums_num[i] += fine_num[j]
            if fine_den:
                sums_den[i] += fine_den[j]
        extra = self.rows & ~finer.rows  # a label here, none at the finer level
        if extra.any():
            ek = self.key[extra]
            idx = np.array([position[int(k)] for k in np.unique(ek).tolist()], dtype=np.int64)
            local = np.searchsorted(np.unique(ek), ek)
            bins = idx[local]
            np.add.at(counts, bins, 1)
            for i, s in enumerate(exact_sums(bins, num[extra], self.g)):
                sums_num[i] += s
            if den is not None:
                for i, s in enumerate(exact_sums(bins, den[extra], self.g)):
                    sums_den[i] += s
        return counts, sums_num, sums_den


def merge(*parts: Partials) -> Partials:
    """Partials of several partitions as one: exact, in any order and grouping."""
    out: Partials = {}
    for p in parts:
        for name, partial in p.items():
            have = out.get(name)
            if have is None:
                out[name] = Partial(
                    partial.name, partial.statistic, list(partial.levels), [dict(g) for g in partial.groups]
                )
                continue
            for mine, theirs in zip(have.groups, partial.groups, strict=True):
                for key, grp in theirs.items():
                    cur = mine.get(key)
                    mine[key] = grp if cur is None else cur.add(grp)
    return out


# -- tables ---------------------------------------------------------------------------------------


@dataclass
class BenchmarkTable:
    """A benchmark's population statistics: per peer-group level, year and group label.

    ``entries[level][(year, label)] = (value, peers)``; for percentile ranks ``value`` is the
    sorted array of the group's values. ``levels`` names each level (a group key, or
    'fallback'). Applying a table to any rows gives the same numbers as in the batch it came from.
    """

    name: str
    statistic: str
    levels: list[str]
    min_peers: int
    entries: list[dict[tuple[int, str], tuple[Any, int]]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = []
        for level, entries in zip(self.levels, self.entries, strict=False):
            rows = []
            for (year, label), (value, peers) in sorted(entries.items()):
                v = value.tolist() if isinstance(value, np.ndarray) else value
                rows.append({"year": year, "group": label, "value": v, "peers": peers})
            out.append({"level": level, "groups": rows})
        return {"name": self.name, "statistic": self.statistic, "min_peers": self.min_peers, "levels": out}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchmarkTable:
        """The table :meth:`to_json` wrote (percentile ranks get their sorted arrays back)."""
        table = cls(str(data["name"]), str(data["statistic"]), [], int(data["min_peers"]))
        for level in data["levels"]:
            table.levels.append(str(level["level"]))
            entries: dict[tuple[int, str], tuple[Any, int]] = {}
            for row in level["groups"]:
                v = row["value"]
                value = np.asarray(v, dtype=np.float64) if isinstance(v, list) else (_NAN if v is None else float(v))
                entries[(int(row["year"]), str(row["group"]))] = (value, int(row["peers"]))
            table.entries.append(entries)
        return table


def tables(plan: Plan, merged: Partials) -> dict[str, BenchmarkTable]:
    """The benchmark tables of merged partials (the fallback level filled for every year seen)."""
    out: dict[str, BenchmarkTable] = {}
    for name, partial in merged.items():
        spec = plan.benchmarks[name]
        has_fallback = spec.fallback_parameter is not None or spec.fallback_value is not None
        table = BenchmarkTable(
            name, spec.statistic, list(spec.groups) + (["fallback"] if has_fallback else []), spec.min_peers
        )
        years: set[int] = set()
        for level in partial.groups:
            entries: dict[tuple[int, str], tuple[Any, int]] = {}
            for key in sorted(level):
                grp = level[key]
                years.add(key[0])
                entries[key] = (_statistic(spec.statistic, grp), grp.count)
            table.entries.append(entries)
        if has_fallback:
            table.entries.append(fallback_entries(spec, plan, sorted(years)))
        out[name] = table
    return out


def _statistic(statistic: str, grp: Group) -> Any:
    if statistic == "ratio_of_sums":
        den = to_float(grp.den)
        return to_float(grp.num) / den if den != 0 else _NAN
    if statistic == "mean":
        return to_float(grp.num) / grp.count
    v = np.sort(grp.values) if grp.values is not None else np.zeros(0)
    if statistic == "median":
        c = len(v)
        return (v[(c - 1) // 2] + v[c // 2]) / 2.0 if c else _NAN
    return v  # percentile rank: the sorted values


def fallback_entries(spec: BenchmarkSpec, plan: Plan, years: list[int]) -> dict[tuple[int, str], tuple[Any, int]]:
    """The fallback level of ``spec`` for ``years``: its fixed value, or its table parameter."""
    fb: dict[tuple[int, str], tuple[Any, int]] = {}
    if spec.fallback_value is not None:
        for y in years:
            fb[(y, "*")] = (spec.fallback_value, 0)
    elif spec.fallback_parameter is not None:
        p = plan.parameters[spec.fallback_parameter]
        for y in years:
            found = p.value_for_year(y)
            if found:
                for label, v in found[1].items():
                    fb[(y, label)] = (v, 0)
    return fb


# -- lookup -----------------------------------------------------------------------------------------


def lookup(spec: BenchmarkSpec, table: BenchmarkTable, ctx: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's benchmark value, peer count and level used (-1: none) from ``table``.

    The only implementation of the lookup rules (peer groups tried in order, a group with fewer
    than ``min_peers`` skipped, then the fallback): the batch, one firm rated alone and the trace
    all go through it."""
    n = ctx.n
    if spec.statistic == "percentile_rank":
        return _apply_ranks(spec, table, ctx)
    value = np.full(n, _NAN)
    peers = np.zeros(n, dtype=np.int64)
    level = np.full(n, -1, dtype=np.int64)
    todo = ctx.years >= 0
    yoff, ylist = ctx.year_offsets()
    for li, entries in enumerate(table.entries):
        remaining = int(np.count_nonzero(todo))
        if not remaining:
            break
        cat, fkey, is_fallback = _level_labels(spec, table, li, ctx)
        if is_fallback:
            entries = {**fallback_entries(spec, ctx.plan, ylist), **entries}
        # every (year, label) slot of this level in one table, then one gather over the rows;
        # slot `width` of a year is "no key", the last slot of all is "no year"
        width = len(cat.labels) + 1
        usable = np.zeros(len(ylist) * width + 1, dtype=bool)
        vals = np.full(len(ylist) * width + 1, _NAN)
        counts = np.zeros(len(ylist) * width + 1, dtype=np.int64)
        for yi, y in enumerate(ylist):
            default = entries.get((y, fkey)) if fkey else None
            slots = [entries.get((y, label)) or default for label in cat.labels] + [default]
            for j, e in enumerate(slots):
                if e is None or (not is_fallback and (e[1] < spec.min_peers or j == width - 1)):
                    continue  # no key: only a fallback table's default key can serve
                usable[yi * width + j] = True
                vals[yi * width + j] = float(e[0])
                counts[yi * width + j] = e[1]
        if remaining > n // 2:  # most rows still open: whole-column passes
            slot = _slot_of(yoff, cat.codes, width, len(usable) - 1)
            hit = usable[slot]
            if remaining < n:
                hit &= todo
            if remaining == n and hit.all():  # every row served by this level (the usual case)
                value, peers, level = vals[slot], counts[slot], np.full(n, li, dtype=np.int64)
                todo[:] = False
                break
            value = np.where(hit, vals[slot], value)
            peers = np.where(hit, counts[slot], peers)
            level = np.where(hit, li, level)
            todo &= ~hit
        else:  # the few rows a coarser level must serve
            idx = np.flatnonzero(todo)
            slot = _slot_of(yoff[idx], cat.codes[idx], width, len(usable) - 1)
            h = usable[slot]
            sel, ss = idx[h], slot[h]
            value[sel] = vals[ss]
            peers[sel] = counts[ss]
            level[sel] = li
            todo[sel] = False
    return value, peers, level


def _slot_of(yoff: np.ndarray, codes: np.ndarray, width: int, none: int) -> np.ndarray:
    """Slot per row: year index × width + label code (code -1 → width - 1); rows without a year → none."""
    label = codes if not len(codes) or codes.min() >= 0 else np.where(codes < 0, width - 1, codes)
    slot = yoff * width + label
    return slot if not len(yoff) or yoff.min() >= 0 else np.where(yoff >= 0, slot, none)


def _level_labels(spec: BenchmarkSpec, table: BenchmarkTable, li: int, ctx: Frame) -> tuple[Category, Any, bool]:
    """The group labels of level ``li``, the fallback table's default key (or None), and whether
    it is the fallback level."""
    is_fallback = table.levels[li] == "fallback"
    if is_fallback and spec.fallback_value is not None:
        cat = Category(np.zeros(ctx.n, dtype=np.int32), ["*"])
    elif is_fallback:
        cat = ctx.group_labels(spec.fallback_key)  # type: ignore[arg-type]
    else:
        cat = ctx.group_labels(table.levels[li])
    fkey = None
    if is_fallback and spec.fallback_parameter:
        fkey = ctx.plan.parameters[spec.fallback_parameter].fallback_key
    return cat, fkey, is_fallback


def _apply_ranks(spec: BenchmarkSpec, table: BenchmarkTable, ctx: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """apply_table for percentile ranks: each row ranked among its group's sorted values."""
    n = ctx.n
    value = np.full(n, _NAN)
    peers = np.zeros(n, dtype=np.int64)
    level = np.full(n, -1, dtype=np.int64)
    todo = ctx.years >= 0
    own = np.broadcast_to(np.asarray(ctx.values_of(spec.of), dtype=np.float64), (n,))
    for li, entries in enumerate(table.entries):
        if not todo.any():
            break
        cat, fkey, is_fallback = _level_labels(spec, table, li, ctx)
        if is_fallback:
            entries = {**fallback_entries(spec, ctx.plan, [y for y, _ in ctx.year_groups()]), **entries}
        for y, rows in ctx.year_groups():
            rows = rows[todo[rows]]
            if not rows.size:
                continue
            codes = cat.codes[rows]
            default = entries.get((y, fkey)) if fkey else None
            slots = [entries.get((y, label)) or default for label in cat.labels] + [default]
            usable = np.array([e is not None and (is_fallback or e[1] >= spec.min_peers) for e in slots])
            if not is_fallback:
                usable[-1] = False  # no group key: only a fallback table's default key can serve
            hit = usable[codes]
            if not hit.any():
                continue
            sel = rows[hit]
            sel_codes = codes[hit]
            counts = np.array([e[1] if e is not None else 0 for e in slots], dtype=np.int64)
            for code in np.unique(sel_codes).tolist():
                v, count = slots[code]
                part = sel[sel_codes == code]
                if not isinstance(v, np.ndarray):  # a fixed fallback value, not a peer group
                    value[part] = v
                    continue
                x = own[part]
                less = np.searchsorted(v, x, side="left")
                more = np.searchsorted(v, x, side="right")
                rank = less + (more - less - 1) / 2.0
                pct = rank / (count - 1) if count > 1 else np.full(len(part), 0.5)
                value[part] = np.where(np.isnan(x), _NAN, pct)
            peers[sel] = counts[sel_codes]
            level[sel] = li
            todo[sel] = False
    return value, peers, level


# -- benchmark files (rate --export-benchmarks / --benchmarks) ------------------------------------

BENCHMARKS_FORMAT = "ruleengine-benchmarks/1"


def _json_value(v: Any) -> Any:
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def tables_document(
    plan: Plan,
    tables: dict[str, BenchmarkTable],
    *,
    source: str,
    engine_version: str,
    jurisdiction: dict[str, Any] | None,
) -> dict[str, Any]:
    """A run's benchmark tables as a self-describing JSON document: the rulebook (id, version,
    hash) they belong to, the data years, every peer group's exact value (shortest round-trip
    floats) and peer count, and whether each benchmark's fallback level is a placeholder."""
    out: dict[str, Any] = {}
    years: set[int] = set()
    for name in sorted(tables):
        data = tables[name].to_json()
        for level in data["levels"]:
            for row in level["groups"]:
                row["value"] = _json_value(row["value"])
                if level["level"] != "fallback":
                    years.add(int(row["year"]))
        spec = plan.benchmarks.get(name)
        data["placeholder_fallback"] = bool(spec is not None and spec.placeholder)
        out[name] = data
    return {
        "format": BENCHMARKS_FORMAT,
        "rulebook": {"id": plan.id, "version": plan.version, "hash": plan.hash},
        "engine_version": engine_version,
        "data": {"source": source, "years": sorted(years)},
        "jurisdiction": jurisdiction,
        "tables": out,
        "tables_digest": _tables_digest(out),
    }


def _tables_digest(tables: Any) -> str:
    """SHA-256 of the tables' canonical JSON: a value edited after the export is found on loading
    (an integrity check against edits by mistake; a signature is what proves who made a file)."""
    import hashlib
    import json

    text = json.dumps(tables, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _finite_values(tables: Any) -> str | None:
    """The first table value that is not a finite number or missing (``None``), named; or None."""
    for name, data in tables.items():
        for level in data["levels"]:
            for row in level["groups"]:
                vals = row["value"] if isinstance(row["value"], list) else [row["value"]]
                for v in vals:
                    ok = v is None or (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v))
                    if not ok:
                        return f"table '{name}', level {level['level']}: value {v!r} is not a finite number"
    return None


def tables_from_document(doc: Any, plan: Plan, where: str) -> dict[str, BenchmarkTable]:
    """The tables of a :func:`tables_document`, checked against ``plan``: a document made with
    another rulebook (its hash differs) is an error, never silently applied."""
    from ..errors import DataError

    if not isinstance(doc, dict) or doc.get("format") != BENCHMARKS_FORMAT:
        raise DataError(f"{where}: not a ruleengine benchmark file (written by rate --export-benchmarks)")
    book = doc.get("rulebook") or {}
    if not isinstance(book, dict):
        raise DataError(f"{where}: a malformed benchmark file ('rulebook' is not an object)")
    if book.get("hash") != plan.hash:
        raise DataError(
            f"{where}: these benchmark tables belong to rulebook {book.get('id')} {book.get('version')} "
            f"({book.get('hash')}), but the rating uses {plan.id} {plan.version} ({plan.hash}); export them "
            f"again with this rulebook (rate {plan.id} DATA --export-benchmarks FILE)"
        )
    out: dict[str, BenchmarkTable] = {}
    try:
        bad = _finite_values(doc["tables"])
        if bad:
            raise DataError(f"{where}: {bad}")
        if "tables_digest" in doc and doc["tables_digest"] != _tables_digest(doc["tables"]):
            raise DataError(
                f"{where}: the tables do not match their tables_digest: a value was changed after the export "
                f"(export them again: rate {plan.id} DATA --export-benchmarks FILE)"
            )
        for name, data in doc["tables"].items():
            if name not in plan.benchmarks:
                raise DataError(f"{where}: '{name}' is not a benchmark of {plan.id}")
            table = BenchmarkTable.from_json(data)
            if table.name != name or table.statistic != plan.benchmarks[name].statistic:
                raise DataError(f"{where}: table '{name}' does not match the benchmark of {plan.id}")
            out[name] = table
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{where}: a malformed benchmark table ({type(exc).__name__}: {exc})") from None
    return out
