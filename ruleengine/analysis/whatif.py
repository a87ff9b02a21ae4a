"""What it would take: the margin to the neighbouring levels, and the cut that reaches the better one.

For a rated firm-year and the primary rating (banded), with benchmarks held fixed at the batch's
tables:

* the margin to the next better level (how far the rated value must move) and to the next worse
  level (how much room is left);
* the cut in total emissions that reaches the better level (``emissions_tco2`` scaled down, all
  else equal), and the cut in each energy input alone (e.g. electricity only), or "not reachable"
  when even cutting that input to zero does not get there.

The search assumes the level improves monotonically as emissions or an input go down (true of every
bundled rulebook). It is vectorised: candidate cuts are rows of one batch, refined by a grid search
(four passes of 33 points: the cut is found to within 1/32**4 ≈ 1e-6 of the current value and
rounded up, so applying it does reach the level), and the batch version bisects all firms at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.evaluator import Patch, evaluate
from ..rulebook.compiler import Plan, RatingSpec
from ..scale.partition import firm_chunks

if TYPE_CHECKING:
    from ..engine.results import Results

GRID = 33
PASSES = 4
CHUNK_ROWS = 65_536  # rows evaluated at a time by columns(): memory is one chunk's evaluation


@dataclass
class Cut:
    what: str  # "emissions_tco2" or an input name
    unit: str
    current: float
    cut: float | None  # None: not reachable by this alone
    cut_pct: float | None


@dataclass
class Step:
    direction: str  # better | worse
    level: str
    bound: float
    value: float
    margin: float  # how far the rated value is from the bound (>= 0 on the firm's side)
    rule: str  # e.g. "k <= 0.8"
    cuts: list[Cut] = field(default_factory=list)


def band_edge(b: Any, plan: Plan, year: int) -> float:
    if b is None:
        return math.nan
    if isinstance(b, str):
        found = plan.parameters[b].value_for_year(year)
        return float(found[1]) if found else math.nan
    return float(b)


def neighbours(plan: Plan, r: RatingSpec, idx: int, value: float, year: int) -> tuple[Step | None, Step | None]:
    """The next better and next worse level of a banded rating, with bounds and margins."""
    if not r.bands or idx < 0:
        return None, None
    n = len(r.bands)
    name = r.value.text
    right = r.closed == "right"
    better = worse = None
    if r.better == "lower":
        if idx > 0:
            bound = band_edge(r.bands[idx - 1].upper, plan, year)
            better = Step(
                "better", r.ids[idx - 1], bound, value, value - bound, f"{name} {'<=' if right else '<'} {bound:g}"
            )
        if idx < n - 1:
            bound = band_edge(r.bands[idx].upper, plan, year)
            worse = Step(
                "worse", r.ids[idx + 1], bound, value, bound - value, f"{name} {'>' if right else '>='} {bound:g}"
            )
    else:
        if idx < n - 1:
            bound = band_edge(r.bands[idx].upper, plan, year)
            better = Step(
                "better", r.ids[idx + 1], bound, value, bound - value, f"{name} {'>' if right else '>='} {bound:g}"
            )
        if idx > 0:
            bound = band_edge(r.bands[idx - 1].upper, plan, year)
            worse = Step(
                "worse", r.ids[idx - 1], bound, value, value - bound, f"{name} {'<=' if right else '<'} {bound:g}"
            )
    return better, worse


def _reached(r: RatingSpec, levels: np.ndarray, target: int | np.ndarray) -> np.ndarray:
    ok = levels >= 0
    return ok & ((levels <= target) if r.better == "lower" else (levels >= target))


def energy_inputs(plan: Plan) -> list[str]:
    """Quantity inputs (numbers with a default) that feed emissions_tco2."""
    import networkx as nx

    feeding = nx.ancestors(plan.graph, "emissions_tco2") if "emissions_tco2" in plan.graph else set()
    return [n for n, s in plan.inputs.items() if n in feeding and s.type == "number" and s.default is not None]


def firm_steps(plan: Plan, results: Results, i: int) -> tuple[Step | None, Step | None]:
    """Margins and cuts for row ``i`` of ``results`` (benchmarks held at ``results.tables``)."""
    ev, batch = results.evaluation, results.batch
    assert ev is not None and batch is not None
    r = plan.ratings[plan.primary]
    idx = int(ev.levels[plan.primary][i])
    value = float(np.broadcast_to(ev.values[f"rating:{plan.primary}"], (batch.n,))[i])
    year = int(results["year"][i])
    better, worse = neighbours(plan, r, idx, value, year)
    if better is None:
        return better, worse
    target = r.ids.index(better.level)
    # the firm's other rows stay in the batch so that prev()/baseline() still find them
    firm = batch.firm_codes[i]
    others = np.flatnonzero((batch.firm_codes == firm) & (np.arange(batch.n) != i)) if firm >= 0 else np.array([], int)
    emissions = float(np.broadcast_to(ev.values["emissions_tco2"], (batch.n,))[i])
    candidates: list[tuple[str, str, float]] = [("emissions_tco2", "tCO2", emissions)]
    for name in energy_inputs(plan):
        current = float(batch.columns[name][i])
        if current > 0:
            candidates.append((name, str(plan.inputs[name].unit or ""), current))
    lo = np.zeros(len(candidates))
    hi = np.ones(len(candidates))
    found = np.zeros(len(candidates), dtype=bool)
    keep = np.ones(len(candidates), dtype=bool)
    for p in range(PASSES):
        grid = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, GRID)[None, :]
        rows = np.concatenate([others, np.full(len(candidates) * GRID, i)])
        sub = batch.take(rows)
        k = len(others)
        mask = np.zeros(sub.n, dtype=bool)
        patched = np.zeros(sub.n)
        for c, (name, _, current) in enumerate(candidates):
            sl = slice(k + c * GRID, k + (c + 1) * GRID)
            if name == "emissions_tco2":
                mask[sl] = True
                patched[sl] = current * (1.0 - grid[c])
            else:
                col = sub.columns[name]
                col[sl] = current * (1.0 - grid[c])
        overrides = {"emissions_tco2": Patch(mask, patched)} if mask.any() else None
        out = evaluate(plan, sub, results.tables, overrides)
        reached = _reached(r, out.levels[plan.primary][k:], target).reshape(len(candidates), GRID)
        if p == 0:  # an input whose cut to zero does not lower emissions (green power) is no lever
            em = np.broadcast_to(out.values["emissions_tco2"], (sub.n,))[k:].reshape(len(candidates), GRID)
            lever = em[:, -1] < emissions
            lever[0] = True
            reached &= lever[:, None]
            keep = lever
        for c in range(len(candidates)):
            hits = np.flatnonzero(reached[c])
            if p == 0:
                found[c] = hits.size > 0
            if hits.size == 0 or not found[c]:
                continue
            j = hits[0]
            lo[c], hi[c] = (grid[c, j - 1], grid[c, j]) if j > 0 else (grid[c, 0], grid[c, 0])
    for c, (name, unit, current) in enumerate(candidates):
        if not keep[c]:
            continue
        if found[c]:
            cut = hi[c] * current
            better.cuts.append(Cut(name, unit, current, float(cut), float(100.0 * hi[c])))
        else:
            better.cuts.append(Cut(name, unit, current, None, None))
    return better, worse


def columns(
    plan: Plan, results: Results, iterations: int = 30, chunk_rows: int = CHUNK_ROWS
) -> dict[str, np.ndarray]:
    """For every row: next better / worse level, margins, and the emissions cut to the better level.

    Bisection on the cut fraction, all rows of a chunk at once: ``iterations`` evaluations of each
    firm-complete chunk of about ``chunk_rows`` rows (the same numbers as one whole-batch pass).
    """
    ev, batch = results.evaluation, results.batch
    assert ev is not None and batch is not None
    r = plan.ratings[plan.primary]
    n = batch.n
    idx = ev.levels[plan.primary]
    value = np.broadcast_to(ev.values[f"rating:{plan.primary}"], (n,)).astype(np.float64)
    years = results["year"]
    better_level = np.full(n, "", dtype=object)
    worse_level = np.full(n, "", dtype=object)
    margin_b = np.full(n, np.nan)
    margin_w = np.full(n, np.nan)
    target = np.full(n, -1, dtype=np.int64)
    if r.bands:
        for y in np.unique(years).tolist():
            for li in range(len(r.ids)):
                sel = (years == y) & (idx == li)
                if not sel.any():
                    continue
                b, w = neighbours(plan, r, li, 0.0, int(y))
                if b is not None:
                    better_level[sel] = b.level
                    target[sel] = r.ids.index(b.level)
                    margin_b[sel] = (value[sel] - b.bound) if r.better == "lower" else (b.bound - value[sel])
                if w is not None:
                    worse_level[sel] = w.level
                    margin_w[sel] = (w.bound - value[sel]) if r.better == "lower" else (value[sel] - w.bound)
    emissions = np.broadcast_to(ev.values["emissions_tco2"], (n,)).astype(np.float64)
    todo = target >= 0
    cut = np.full(n, np.nan)
    # firm-complete chunks (prev()/baseline() find the firm's other years in the chunk), benchmarks
    # held at the batch's tables: each row's cut is what the whole-batch bisection finds, and
    # memory is one chunk's evaluation, not the whole batch's (issue #11.4)
    for rows in firm_chunks(batch.firm_codes, chunk_rows):
        t = todo[rows]
        if not t.any():
            continue
        sub = batch if len(rows) == n else batch.take(rows)
        em, tg = emissions[rows], np.where(t, target[rows], 0)

        def reached_at(frac: np.ndarray, sub: Any = sub, t: np.ndarray = t, em: np.ndarray = em, tg: Any = tg) -> Any:
            out = evaluate(plan, sub, results.tables, {"emissions_tco2": Patch(t, em * (1.0 - frac))})
            return _reached(r, out.levels[plan.primary], tg) & t

        m = len(rows)
        possible = reached_at(np.ones(m))
        lo, hi = np.zeros(m), np.ones(m)
        for _ in range(iterations):
            mid = (lo + hi) / 2.0
            ok = reached_at(mid)
            hi = np.where(ok, mid, hi)
            lo = np.where(ok, lo, mid)
        cut[rows] = np.where(possible, hi * em, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(emissions > 0, 100.0 * cut / emissions, np.nan)
    return {
        "better_level": better_level,
        "margin_to_better": margin_b,
        "emissions_cut_to_better_tco2": cut,
        "emissions_cut_to_better_pct": pct,
        "worse_level": worse_level,
        "margin_to_worse": margin_w,
    }
