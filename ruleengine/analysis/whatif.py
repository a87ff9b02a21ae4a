"""What it would take: the margin to the neighbouring levels, and the cut that reaches the better one.

For a rated firm-year and the primary rating (banded), with benchmarks held fixed at the batch's
tables:

* the margin to the next better level (how far the rated value must move) and to the next worse
  level (how much room is left);
* the cut in total emissions that reaches the better level (``emissions_tco2`` scaled down, all
  else equal), and the cut in each energy input alone (e.g. electricity only), or "not reachable"
  when even cutting that input to zero does not get there.

For a weighted score (``weights:`` variables, Shenzhen), each scored indicator's effective weight and
the points it alone must gain. For conditional ``levels`` (first match wins, best first): the level
just above, its condition term by term, and per input feeding it the cut — or the increase, up to
RAISE_MAX times — that alone reaches it, or none (:func:`level_steps`).

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
from ..rulebook.conditions import comparisons
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
    cut: float | None  # None: not reachable by this alone; for "raise", the increase
    cut_pct: float | None
    direction: str = "cut"  # cut | raise (conditional levels: a condition may need an input to grow)


@dataclass
class Step:
    direction: str  # better | worse
    level: str
    bound: float | None  # None for conditional levels
    value: float
    margin: float | None  # how far the rated value is from the bound (>= 0 on the firm's side)
    rule: str  # e.g. "k <= 0.8"; for conditional levels, the target level's condition
    cuts: list[Cut] = field(default_factory=list)
    # conditional levels: each comparison of the target level's condition, its current value and
    # whether it holds ({condition, name, value, op, bound, holds, gap})
    conditions: list[dict[str, Any]] = field(default_factory=list)
    # weighted scores: each scored indicator under the rated value, its effective weight and the
    # points it alone would need ({score, weight, current, needed, max, reachable})
    scores: list[dict[str, Any]] = field(default_factory=list)


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


def _narrow(
    reached: np.ndarray, grid: np.ndarray, lo: np.ndarray, hi: np.ndarray, found: np.ndarray, first: bool
) -> None:
    """One pass of the grid search, in place: each row of ``grid`` whose ``reached`` has a hit
    narrows [``lo``, ``hi``] to the grid step around its first hit. ``first``: the first pass,
    which sets ``found`` (a row without a hit there is never narrowed)."""
    hit = reached.any(axis=1)
    if first:
        found[:] = hit
    rows = np.flatnonzero(hit & found)
    j = reached[rows].argmax(axis=1)
    lo[rows] = grid[rows, np.maximum(j - 1, 0)]
    hi[rows] = grid[rows, j]


def _reached(r: RatingSpec, levels: np.ndarray, target: int | np.ndarray) -> np.ndarray:
    ok = levels >= 0
    # conditional levels are listed best first: a lower index is better whatever `better` says
    lower_is_better = r.better == "lower" or not r.bands
    return ok & ((levels <= target) if lower_is_better else (levels >= target))


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
    if r.levels:
        return level_steps(plan, results, i)
    better, worse = neighbours(plan, r, idx, value, year)
    if better is None:
        return better, worse
    better.scores = weighted_scores(plan, results, i, r, better)
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
        _narrow(reached, grid, lo, hi, found, first=p == 0)
    for c, (name, unit, current) in enumerate(candidates):
        if not keep[c]:
            continue
        if found[c]:
            cut = hi[c] * current
            better.cuts.append(Cut(name, unit, current, float(cut), float(100.0 * hi[c])))
        else:
            better.cuts.append(Cut(name, unit, current, None, None))
    return better, worse


def _level_neighbours(
    plan: Plan, results: Results, r: RatingSpec, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conditional levels, every row at once: the level just above (the target), and the level
    the row would fall to if its own condition stopped holding (the first later one that holds)."""
    from ..engine.evaluator import Frame, truth

    ev, batch = results.evaluation, results.batch
    assert ev is not None and batch is not None
    n = batch.n
    frame = Frame(plan, batch, results.tables, None)
    frame.values.update(batch.columns)
    frame.values.update(ev.values)
    frame.done.update(plan.order)
    holds = [
        np.ones(n, dtype=bool) if cond is None else np.broadcast_to(truth(frame.evaluate_expr(cond)) == 1.0, (n,))
        for _, cond, _ in r.levels
    ]
    ids = np.array(r.ids, dtype=object)
    better = np.where(idx > 0, ids[np.maximum(idx - 1, 0)], "").astype(object)
    target = np.where(idx > 0, idx - 1, -1).astype(np.int64)
    fall = np.full(n, -1, dtype=np.int64)
    for j in range(len(r.levels) - 1, 0, -1):  # the first later level that holds wins
        fall = np.where((idx >= 0) & (idx < j) & holds[j], j, fall)
    own_otherwise = np.array([cond is None for _, cond, _ in r.levels])[idx.clip(0)]
    fall = np.where(own_otherwise | (idx < 0), -1, fall)
    worse = np.where(fall >= 0, ids[fall.clip(0)], "").astype(object)
    return better, worse, target


def columns(plan: Plan, results: Results, iterations: int = 30, chunk_rows: int = CHUNK_ROWS) -> dict[str, np.ndarray]:
    """For every row: next better / worse level, margins, and the emissions cut to the better level.

    Conditional levels have no margins (NaN); their better level is the one listed just above, the
    worse one the level the firm falls to if its own condition stops holding.

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
    if r.levels:  # conditional levels, best first: the level above; the level a firm falls to
        better_level, worse_level, target = _level_neighbours(plan, results, r, idx)
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


# -- conditional levels ------------------------------------------------------------------------------

RAISE_MAX = 10.0  # a condition that needs an input to grow is searched up to 10x its current value


def _value_at(plan: Plan, results: Results, name: str, i: int, year: int) -> float:
    ev, batch = results.evaluation, results.batch
    assert ev is not None and batch is not None
    if name in plan.parameters:
        found = plan.parameters[name].value_for_year(year)
        return float(found[1]) if found and not isinstance(found[1], dict) else math.nan
    v = ev.values.get(name, batch.columns.get(name))
    if v is None or hasattr(v, "to_strings"):
        return math.nan
    return float(np.broadcast_to(np.asarray(v, dtype=np.float64), (batch.n,))[i])


def condition_terms(plan: Plan, results: Results, i: int, cond: Any) -> list[dict[str, Any]]:
    """Each comparison of a level's condition for row ``i``: the value, the bound, whether it
    holds, and the gap (how far the value must move for it to hold; 0 when it holds)."""
    year = int(results["year"][i])
    terms = comparisons(cond)
    if not terms:
        return []
    out = []
    for name, op, bound in terms:
        x = _value_at(plan, results, name, i, year)
        b = _value_at(plan, results, bound, i, year) if isinstance(bound, str) else float(bound)
        holds = (
            bool({"<": x < b, "<=": x <= b, ">": x > b, ">=": x >= b, "==": x == b, "!=": x != b}[op])
            if not (math.isnan(x) or math.isnan(b))
            else False
        )
        gap = 0.0 if holds else (abs(x - b) if not (math.isnan(x) or math.isnan(b)) else math.nan)
        text = f"{name} {op} {bound if isinstance(bound, str) else f'{b:g}'}"
        out.append({"condition": text, "name": name, "value": x, "op": op, "bound": b, "holds": holds, "gap": gap})
    return out


def level_inputs(plan: Plan, conds: list[Any]) -> list[str]:
    """Numeric inputs that feed the given level conditions (in the plan's input order)."""
    import networkx as nx

    names: set[str] = set()
    for cond in conds:
        for n in cond.names:
            names.add(n)
            if n in plan.graph:
                names |= nx.ancestors(plan.graph, n)
    return [n for n, s in plan.inputs.items() if n in names and s.type in ("number", "integer")]


def level_steps(plan: Plan, results: Results, i: int) -> tuple[Step | None, Step | None]:
    """What it takes for a rating of conditional ``levels`` (listed best first, first match wins).

    Better: the nearest better level (the one just above), its condition term by term, and per
    input that feeds it the cut (or the increase, up to 10x) that alone makes the firm reach it
    or a better level, everything else held — or none, when no single input reaches it.
    Worse: the level the firm would fall to if its own level's condition stopped holding."""
    ev, batch = results.evaluation, results.batch
    assert ev is not None and batch is not None
    r = plan.ratings[plan.primary]
    idx = int(ev.levels[plan.primary][i])
    if idx < 0:
        return None, None
    value = float(np.broadcast_to(ev.values[f"rating:{plan.primary}"], (batch.n,))[i])
    worse = None
    own = r.levels[idx][1]
    if own is not None:
        from ..engine.evaluator import row_frame, truth

        frame = row_frame(plan, results, i)
        fall = len(r.levels) - 1
        for j in range(idx + 1, len(r.levels)):
            cond = r.levels[j][1]
            if cond is None or float(truth(frame.evaluate_expr(cond)).reshape(-1)[0]) == 1.0:
                fall = j
                break
        worse = Step("worse", r.ids[fall], None, value, None, f"not ({own.text})")
        worse.conditions = condition_terms(plan, results, i, own)
    if idx == 0:
        return None, worse
    target = idx - 1
    cond_t = r.levels[target][1]
    assert cond_t is not None  # only the last level is 'otherwise'
    better = Step("better", r.ids[target], None, value, None, cond_t.text)
    better.conditions = condition_terms(plan, results, i, cond_t)
    candidates: list[tuple[str, str, float]] = []
    for name in level_inputs(plan, [c for _, c, _ in r.levels[: idx + 1] if c is not None]):
        current = float(batch.columns[name][i])
        if current > 0:
            candidates.append((name, str(plan.inputs[name].unit or ""), current))
    better.cuts = _search_levels(plan, results, i, r, target, candidates)
    return better, worse


def _search_levels(
    plan: Plan, results: Results, i: int, r: RatingSpec, target: int, candidates: list[tuple[str, str, float]]
) -> list[Cut]:
    """Per candidate input, the smallest cut (else the smallest increase, up to RAISE_MAX x) that
    alone reaches ``target`` or better: one batch per pass, all candidates and directions at once."""
    ev, batch = results.evaluation, results.batch
    assert ev is not None and batch is not None
    if not candidates:
        return []
    firm = batch.firm_codes[i]
    others = np.flatnonzero((batch.firm_codes == firm) & (np.arange(batch.n) != i)) if firm >= 0 else np.array([], int)
    tries = [(c, d) for c in range(len(candidates)) for d in ("cut", "raise")]
    lo = np.zeros(len(tries))
    hi = np.ones(len(tries))
    found = np.zeros(len(tries), dtype=bool)
    for p in range(PASSES):
        grid = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, GRID)[None, :]
        rows = np.concatenate([others, np.full(len(tries) * GRID, i)]).astype(np.int64)
        sub = batch.take(rows)
        k = len(others)
        for t, (c, d) in enumerate(tries):
            name, _, current = candidates[c]
            sl = slice(k + t * GRID, k + (t + 1) * GRID)
            factor = 1.0 - grid[t] if d == "cut" else 1.0 + (RAISE_MAX - 1.0) * grid[t]
            sub.columns[name][sl] = current * factor
        out = evaluate(plan, sub, results.tables, None)
        reached = _reached(r, out.levels[plan.primary][k:], target).reshape(len(tries), GRID)
        _narrow(reached, grid, lo, hi, found, first=p == 0)
    cuts = []
    for c, (name, unit, current) in enumerate(candidates):
        t_cut, t_raise = 2 * c, 2 * c + 1
        if found[t_cut]:
            cuts.append(Cut(name, unit, current, float(hi[t_cut] * current), float(100.0 * hi[t_cut])))
        elif found[t_raise]:
            f = (RAISE_MAX - 1.0) * hi[t_raise]
            cuts.append(Cut(name, unit, current, float(f * current), float(100.0 * f), "raise"))
        else:
            cuts.append(Cut(name, unit, current, None, None))
    return cuts


# -- weighted scores ---------------------------------------------------------------------------------


def score_weights(plan: Plan, name: str, weight: float = 1.0) -> list[tuple[str, float]]:
    """The scored indicators under a ``weights:`` variable, each with its effective weight (the
    product of the weights on its path), in the order the rulebook lists them."""
    node = plan.nodes.get(name)
    spec = node.spec if node is not None else None
    if not isinstance(spec, dict) or "weights" not in spec:
        return [(name, weight)] if weight != 1.0 else []
    out: list[tuple[str, float]] = []
    for child, w in spec["weights"].items():
        if isinstance(w, str):
            found = plan.parameters[w].value_for_year(0) if w in plan.parameters else None
            w = float(found[1]) if found else math.nan
        out += score_weights(plan, child, weight * float(w)) or [(child, weight * float(w))]
    return out


def weighted_scores(plan: Plan, results: Results, i: int, r: RatingSpec, better: Step) -> list[dict[str, Any]]:
    """For a rated value that is a weighted score: per scored indicator, the points it alone must
    gain to close the margin (margin / effective weight), and whether the score's range allows it."""
    value_name = r.value.text.strip()
    leaves = score_weights(plan, value_name)
    if not leaves:
        return []
    spec = plan.nodes[f"rating:{r.name}"].spec
    dom = spec.get("domain") if isinstance(spec, dict) else None
    top = dom.get("max") if isinstance(dom, dict) and isinstance(dom.get("max"), int | float) else None
    year = int(results["year"][i])
    out = []
    for leaf, w in leaves:
        cur = _value_at(plan, results, leaf, i, year)
        needed = (better.margin or 0.0) / w if w > 0 else math.inf
        reachable = top is None or (not math.isnan(cur) and cur + needed <= float(top))
        out.append(
            {"score": leaf, "weight": w, "current": cur, "needed": needed, "max": top, "reachable": bool(reachable)}
        )
    return out
