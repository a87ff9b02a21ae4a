"""Diff stage: what changed between two rulebooks (on meaning) and what the change does to a portfolio.

Structural diff compares the compiled meaning, not the text: key order, whitespace, comments, flow
vs block style and parentheses that change nothing are not changes (formulas are compared as parsed
trees, numbers as numbers). Each :class:`Edit` carries its location in both files and the patches
that apply it, so that the impact of each change can be measured alone (attribution).
"""

from __future__ import annotations

import ast
import copy
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import RulebookError, RuleEngineError
from ..rulebook.compiler import Plan, compile_document
from ..rulebook.source import Document, PathT

if TYPE_CHECKING:
    from ..scale.engines import Engine
    from .rated import Portfolio

MISSING = object()  # a value absent from one side of an edit
_SECTIONS = ("inputs", "parameters", "scales", "variables", "checks", "benchmarks", "sources")


@dataclass
class Edit:
    """One change of meaning. ``patches`` are (path, new value or None for delete) on OLD's data."""

    kind: str  # added | removed | changed
    what: str  # e.g. "parameter", "threshold", "expression", "band", "incentive", "metadata"
    name: str  # yaml path in words, e.g. ratings.level: threshold between 3 and 4
    old: Any
    new: Any
    old_loc: str
    new_loc: str
    patches: list[tuple[PathT, Any]] = field(default_factory=list)

    def summary(self) -> str:
        if self.kind == "added":
            return f"{self.name}: added {short(self.new)}"
        if self.kind == "removed":
            return f"{self.name}: removed (was {short(self.old)})"
        return f"{self.name}: {short(self.old)} → {short(self.new)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "what": self.what,
            "name": self.name,
            "old": _jsonable(self.old),
            "new": _jsonable(self.new),
            "old_location": self.old_loc,
            "new_location": self.new_loc,
        }


def short(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(_jsonable(v), ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _jsonable(v: Any) -> Any:
    if v is MISSING:
        return None
    return v


def _norm_expr(text: Any) -> Any:
    """A formula as a comparable tree: parentheses and spacing vanish, 1 and 1.0 are equal."""
    if not isinstance(text, str):
        return text
    try:
        tree = ast.parse(text.strip().replace("\n", " "), mode="eval")
    except SyntaxError:
        return text

    class _Num(ast.NodeTransformer):
        def visit_Constant(self, node: ast.Constant) -> ast.AST:  # noqa: N802 - ast API
            if isinstance(node.value, int | float) and not isinstance(node.value, bool):
                return ast.copy_location(ast.Constant(float(node.value)), node)
            return node

    return ast.dump(_Num().visit(tree), annotate_fields=False, include_attributes=False)


_EXPR_KEYS = {"expr", "where", "value", "when"}


def _norm(v: Any, key: str = "") -> Any:
    """Canonical form of a value for comparison (formulas parsed, ints as floats, dicts sorted)."""
    if isinstance(v, dict):
        return {k: _norm(x, k) for k, x in sorted(v.items())}
    if isinstance(v, list):
        return [_norm(x, key) for x in v]
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int | float):
        return float(v)
    if key in _EXPR_KEYS and isinstance(v, str):
        return _norm_expr(v)
    return v


def _loc(doc: Document, path: PathT, key: bool = False) -> str:
    loc = doc.loc(path, key=key)
    return f"{loc.file}:{loc.line}:{loc.column}"


_IGNORED_TOP = {"tests", "description", "jurisdiction", "title", "imports"}
_IGNORED_FIELDS = {"description", "note"}


def structural_diff(old: Document, new: Document) -> list[Edit]:
    """Every change of meaning from ``old`` to ``new`` (both loaded documents), in a stable order."""
    a, b = old.data, new.data
    edits: list[Edit] = []

    def add(
        kind: str, what: str, name: str, va: Any, vb: Any, path: PathT, patches: list | None = None, key: bool = False
    ) -> None:
        ol = _loc(old, path, key) if va is not MISSING else "-"
        nl = _loc(new, path, key) if vb is not MISSING else "-"
        edits.append(
            Edit(
                kind,
                what,
                name,
                va,
                vb,
                ol,
                nl,
                patches if patches is not None else [(path, None if vb is MISSING else vb)],
            )
        )

    for meta in ("id", "version", "effective", "title"):
        if a.get(meta) != b.get(meta):
            add("changed", "metadata", meta, a.get(meta, MISSING), b.get(meta, MISSING), (meta,))
    if set(a.get("boundary") or []) != set(b.get("boundary") or []):
        ra, rb = set(a.get("boundary") or []), set(b.get("boundary") or [])
        desc = ", ".join([f"+{x}" for x in sorted(rb - ra)] + [f"-{x}" for x in sorted(ra - rb)])
        add("changed", "boundary", f"boundary ({desc})", sorted(ra), sorted(rb), ("boundary",))
    ja, jb = a.get("jurisdiction"), b.get("jurisdiction")
    da = sorted(ja.get("divisions") or []) if isinstance(ja, dict) else []
    db = sorted(jb.get("divisions") or []) if isinstance(jb, dict) else []
    if da != db:  # who is rated, and who is a peer (issue #12.4)
        desc = ", ".join([f"+{x}" for x in db if x not in da] + [f"-{x}" for x in da if x not in db])
        add(
            "changed",
            "jurisdiction",
            f"jurisdiction.divisions ({desc})",
            da,
            db,
            ("jurisdiction",),
            patches=[(("jurisdiction",), jb if jb is not None else None)],
        )
    for section in _SECTIONS:
        sa, sb = a.get(section) or {}, b.get(section) or {}
        for name in list(sa) + [n for n in sb if n not in sa]:
            path: PathT = (section, name)
            what = section[:-1] if section != "sources" else "source"
            if name not in sb:
                add("removed", what, f"{section}.{name}", sa[name], MISSING, path, key=True)
                continue
            if name not in sa:
                add("added", what, f"{section}.{name}", MISSING, sb[name], path, key=True)
                continue
            ea, eb = sa[name], sb[name]
            if not isinstance(ea, dict) or not isinstance(eb, dict):
                if _norm(ea) != _norm(eb):
                    add("changed", what, f"{section}.{name}", ea, eb, path)
                continue
            _diff_fields(add, what, section, name, ea, eb)
    _diff_ratings(add, a.get("ratings") or {}, b.get("ratings") or {}, old, new, edits)
    ra_, rb_ = (a.get("incentives") or {}).get("rating"), (b.get("incentives") or {}).get("rating")
    if ra_ != rb_:  # the rating the incentive levels are keyed on
        add(
            "changed" if ra_ and rb_ else ("added" if rb_ else "removed"),
            "incentive",
            "incentives.rating",
            ra_ if ra_ else MISSING,
            rb_ if rb_ else MISSING,
            ("incentives", "rating"),
        )
    fa_, fb_ = (a.get("incentives") or {}).get("rate_bp_from"), (b.get("incentives") or {}).get("rate_bp_from")
    if fa_ != fb_:
        add(
            "changed" if fa_ and fb_ else ("added" if fb_ else "removed"),
            "incentive",
            "incentives.rate_bp_from",
            fa_ if fa_ else MISSING,
            fb_ if fb_ else MISSING,
            ("incentives", "rate_bp_from"),
        )
    ia, ib = (a.get("incentives") or {}).get("levels", {}), (b.get("incentives") or {}).get("levels", {})
    for lid in list(ia) + [x for x in ib if x not in ia]:
        path = ("incentives", "levels", lid)
        va, vb = ia.get(lid, MISSING), ib.get(lid, MISSING)
        if va is MISSING or vb is MISSING:
            add("added" if va is MISSING else "removed", "incentive", f"incentives.{lid}", va, vb, path, key=True)
            continue
        for f in sorted(set(va) | set(vb)):
            if f in _IGNORED_FIELDS:
                continue
            fa, fb = va.get(f, MISSING), vb.get(f, MISSING)
            if _norm(fa) != _norm(fb):
                add("changed", "incentive", f"incentives.{lid}.{f}", fa, fb, (*path, f))
    ca, cb = a.get("crosswalk") or {}, b.get("crosswalk") or {}
    for other in list(ca) + [x for x in cb if x not in ca]:
        va, vb = ca.get(other, MISSING), cb.get(other, MISSING)
        if (
            va is MISSING
            or vb is MISSING
            or _norm(va.get("map")) != _norm(vb.get("map"))
            or va.get("rating") != vb.get("rating")
        ):
            kind = "added" if va is MISSING else "removed" if vb is MISSING else "changed"
            add(kind, "crosswalk", f"crosswalk.{other}", va, vb, ("crosswalk", other))
    return edits


def _diff_fields(add: Any, what: str, section: str, name: str, ea: dict, eb: dict) -> None:
    path = (section, name)
    # dated values are compared per date and per key, so a moved factor is named precisely
    if "values" in ea and "values" in eb and isinstance(ea["values"], dict) and isinstance(eb["values"], dict):
        for date in list(ea["values"]) + [d for d in eb["values"] if d not in ea["values"]]:
            va, vb = ea["values"].get(date, MISSING), eb["values"].get(date, MISSING)
            if isinstance(va, dict) and isinstance(vb, dict):
                for k in list(va) + [x for x in vb if x not in va]:
                    xa, xb = va.get(k, MISSING), vb.get(k, MISSING)
                    if _norm(xa) != _norm(xb):
                        kind = "added" if xa is MISSING else "removed" if xb is MISSING else "changed"
                        add(kind, what, f"{section}.{name}[{date}].{k}", xa, xb, (*path, "values", date, k))
            elif _norm(va) != _norm(vb):
                kind = "added" if va is MISSING else "removed" if vb is MISSING else "changed"
                add(kind, what, f"{section}.{name}[{date}]", va, vb, (*path, "values", date), key=True)
        ea = {k: v for k, v in ea.items() if k != "values"}
        eb = {k: v for k, v in eb.items() if k != "values"}
    if "table" in ea and "table" in eb:
        for k in list(ea["table"]) + [x for x in eb["table"] if x not in ea["table"]]:
            xa, xb = ea["table"].get(k, MISSING), eb["table"].get(k, MISSING)
            if _norm(xa) != _norm(xb):
                kind = "added" if xa is MISSING else "removed" if xb is MISSING else "changed"
                add(kind, what, f"{section}.{name}['{k}']", xa, xb, (*path, "table", k))
        ea = {k: v for k, v in ea.items() if k != "table"}
        eb = {k: v for k, v in eb.items() if k != "table"}
    for f in sorted(set(ea) | set(eb)):
        if f in _IGNORED_FIELDS:
            continue
        fa, fb = ea.get(f, MISSING), eb.get(f, MISSING)
        if _norm(fa, f) != _norm(fb, f):
            label = "expression" if f in _EXPR_KEYS else what
            add("changed", label, f"{section}.{name}.{f}", fa, fb, (*path, f))


def _diff_ratings(add: Any, ra: dict, rb: dict, old: Document, new: Document, edits: list[Edit]) -> None:
    for name in list(ra) + [n for n in rb if n not in ra]:
        path = ("ratings", name)
        if name not in rb or name not in ra:
            va, vb = ra.get(name, MISSING), rb.get(name, MISSING)
            add("added" if va is MISSING else "removed", "rating", f"ratings.{name}", va, vb, path, key=True)
            continue
        a, b = ra[name], rb[name]
        for f in ("value", "closed", "better", "primary", "domain", "source", "status"):
            if _norm(a.get(f, MISSING), f) != _norm(b.get(f, MISSING), f):
                add(
                    "changed",
                    "expression" if f == "value" else "rating",
                    f"ratings.{name}.{f}",
                    a.get(f, MISSING),
                    b.get(f, MISSING),
                    (*path, f),
                )
        if "bands" in a and "bands" in b:
            ida = [str(x["id"]) for x in a["bands"]]
            idb = [str(x["id"]) for x in b["bands"]]
            if ida != idb:
                add(
                    "changed",
                    "levels",
                    f"ratings.{name}.bands (levels {', '.join(ida)} → {', '.join(idb)})",
                    ida,
                    idb,
                    (*path, "bands"),
                    patches=[((*path, "bands"), b["bands"])],  # the new bands whole, not their ids
                )
                continue
            # thresholds: the edge between consecutive bands (upper of i == lower of i+1)
            for i in range(len(ida) - 1):
                ua, ub = a["bands"][i].get("upper"), b["bands"][i].get("upper")
                la, lb = a["bands"][i + 1].get("lower"), b["bands"][i + 1].get("lower")
                if _norm(ua) != _norm(ub) or _norm(la) != _norm(lb):
                    bp = (*path, "bands")
                    edits.append(
                        Edit(
                            "changed",
                            "threshold",
                            f"ratings.{name}: threshold between {ida[i]} and {ida[i + 1]}",
                            ua if _norm(ua) == _norm(la) else [ua, la],
                            ub if _norm(ub) == _norm(lb) else [ub, lb],
                            _loc(old, (*bp, i, "upper")),
                            _loc(new, (*bp, i, "upper")),
                            [((*bp, i, "upper"), ub), ((*bp, i + 1, "lower"), lb)],
                        )
                    )
            for i, (x, y) in enumerate(zip(a["bands"], b["bands"], strict=True)):
                for f in ("label",):
                    if x.get(f) != y.get(f):
                        add(
                            "changed",
                            "label",
                            f"ratings.{name}.bands[{ida[i]}].{f}",
                            x.get(f, MISSING),
                            y.get(f, MISSING),
                            (*path, "bands", i, f),
                        )
                if i == 0 and _norm(x.get("lower")) != _norm(y.get("lower")):
                    add(
                        "changed",
                        "threshold",
                        f"ratings.{name}: lower bound of {ida[0]}",
                        x.get("lower"),
                        y.get("lower"),
                        (*path, "bands", 0, "lower"),
                    )
                if i == len(ida) - 1 and _norm(x.get("upper")) != _norm(y.get("upper")):
                    add(
                        "changed",
                        "threshold",
                        f"ratings.{name}: upper bound of {ida[-1]}",
                        x.get("upper"),
                        y.get("upper"),
                        (*path, "bands", i, "upper"),
                    )
        elif _norm(a.get("levels")) != _norm(b.get("levels")) or _norm(a.get("bands")) != _norm(b.get("bands")):
            add(
                "changed",
                "levels",
                f"ratings.{name}.levels",
                a.get("levels", a.get("bands")),
                b.get("levels", b.get("bands")),
                (*path, "levels" if "levels" in b else "bands"),
                patches=[((*path, "levels"), b.get("levels")), ((*path, "bands"), b.get("bands"))],
            )


# -- impact on a portfolio -------------------------------------------------------------------------


def _semver(v: str) -> tuple[int, ...]:
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)", v or "")
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def version_warnings(old: Plan, new: Plan, new_path: Path | None) -> list[str]:
    out = []
    if _semver(new.version) <= _semver(old.version):
        out.append(
            f"the new version {new.version} does not increase on {old.version}: bump it "
            "(MAJOR when any output can change for the same inputs)"
        )
    if new_path is not None:
        found = None
        for folder in [new_path.parent, *new_path.parent.parents][:4]:
            if (folder / "CHANGELOG.md").is_file():
                found = folder / "CHANGELOG.md"
                break
        if found is None:
            out.append(f"no CHANGELOG.md found near {new_path}: record why the method changed")
        else:
            text = found.read_text(encoding="utf-8")
            if not re.search(rf"\b{re.escape(new.id)}\b[^\n]*\b{re.escape(new.version)}\b", text):
                out.append(f"{found} has no line naming {new.id} {new.version}: record why the method changed")
    return out


def _rank(plan: Plan, rating: str | None = None) -> dict[str, int]:
    return {lv: i for i, lv in enumerate(plan.ratings[rating or plan.primary].best_first())}


# Columns of a portfolio that impact breaks the movers down by, when the data has them; every
# grouping a benchmark of either rulebook declares is added (issue #19.2).
BREAKDOWNS = ("division", "size", "city", "grid_region")


def _migration(old: Plan, new: Plan, name_a: str, name_b: str, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Old x new migration of one rating (label set): counts, directions and the matrix."""
    a_lab = np.where(a == "", "unrated", a).astype(object)
    b_lab = np.where(b == "", "unrated", b).astype(object)
    rows = [*old.ratings[name_a].best_first(), "unrated"]
    cols = [*new.ratings[name_b].best_first(), "unrated"]
    pairs = Counter(zip(a_lab.tolist(), b_lab.tolist(), strict=True))
    matrix = [[pairs.get((r, c), 0) for c in cols] for r in rows]
    rank_a, rank_b = _rank(old, name_a), _rank(new, name_b)
    moved = a_lab != b_lab
    direction = np.full(len(a), "", dtype=object)
    if rank_a == rank_b:
        ia = np.array([rank_a.get(x, -1) for x in a_lab.tolist()], dtype=np.int64)
        ib = np.array([rank_b.get(x, -1) for x in b_lab.tolist()], dtype=np.int64)
        both = (ia >= 0) & (ib >= 0)
        direction[both & (ib < ia)] = "up"
        direction[both & (ib > ia)] = "down"
    direction[(a_lab != "unrated") & (b_lab == "unrated")] = "newly unrated"
    direction[(a_lab == "unrated") & (b_lab != "unrated")] = "newly rated"
    direction[moved & (direction == "")] = "moved"
    return {
        "labels": (a_lab, b_lab),
        "direction": direction,
        "moved": int(moved.sum()),
        "up": int((direction == "up").sum()),
        "down": int((direction == "down").sum()),
        "newly_unrated": int((direction == "newly unrated").sum()),
        "newly_rated": int((direction == "newly rated").sum()),
        "matrix": {"rows": rows, "columns": cols, "counts": matrix},
    }


def category_names(old: Plan, new: Plan) -> list[str]:
    """The categories impact breaks movers down by (when the data has them): the industry
    division, size, city, grid region and every grouping a benchmark of either rulebook declares."""
    names = [*BREAKDOWNS]
    for plan in (old, new):
        for bm in plan.benchmarks.values():
            names += [g for g in bm.groups if g != "all"]
    return [n for n in dict.fromkeys(names) if n != "industry_division"]


def _by(categories: dict[str, np.ndarray], direction: np.ndarray) -> dict[str, dict[str, dict[str, int]]]:
    by = {}
    for key, vals in categories.items():
        table: dict[str, Counter] = {}
        for v, d in zip(vals.tolist(), direction.tolist(), strict=True):
            if d:
                table.setdefault(v or "(none)", Counter())[d] += 1
        by[key] = {k: dict(sorted(c.items())) for k, c in sorted(table.items())}
    return by


def impact(old: Plan, new: Plan, data: Any, engine: Engine | None = None) -> dict[str, Any]:
    """Migration of every rating (label set) from OLD to NEW on a portfolio, movers broken down by
    every category the data has, and what the change does to lending. The top-level counts,
    ``matrix``, ``by`` and ``firms`` are the primary rating's; ``ratings`` has each label set.

    ``data``: a portfolio (read once here), or a :class:`~ruleengine.analysis.rated.Portfolio`
    already open; ``engine``: rate on ``--engine chunked|spark|dask`` (the same result)."""
    from .. import pipeline
    from .rated import Portfolio

    if isinstance(data, Portfolio):
        return _impact(old, new, data)
    with Portfolio([old, new], data, engine, pipeline.CONTEXT_COLUMNS) as portfolio:
        return _impact(old, new, portfolio)


def _impact(old: Plan, new: Plan, portfolio: Portfolio) -> dict[str, Any]:
    from .rated import CATEGORY, impact_views

    shared = [r for r in old.ratings if r != old.primary and r in new.ratings]
    # one method at a time, and of each only the few columns read here (issue #11.4)
    old_view, new_view = impact_views(shared, category_names(old, new))
    ra = portfolio.rated(old, old_view)
    rb = portfolio.rated(new, new_view)
    categories = {
        name[len(CATEGORY) :]: rb[name] for name in rb.columns if name.startswith(CATEGORY) and rb[name] is not None
    }
    per_rating: dict[str, Any] = {}
    for rname in [old.primary, *shared]:
        col_a = ra["rating"] if rname == old.primary else ra[f"rating:{rname}"]
        col_b = rb["rating"] if rname == old.primary else rb[f"rating:{rname}"]
        # the primary is compared with the new primary, whatever each rulebook calls it
        mig = _migration(old, new, rname, new.primary if rname == old.primary else rname, col_a, col_b)
        mig["by"] = _by(categories, mig["direction"])
        per_rating[rname] = mig
    prim = per_rating[old.primary]
    a_lab, b_lab = prim["labels"]
    direction = prim["direction"]
    moved = a_lab != b_lab
    firms = [
        {
            "firm_id": str(ra["firm_id"][i]),
            "year": int(ra["year"][i]),
            "old": str(a_lab[i]),
            "new": str(b_lab[i]),
            "direction": str(direction[i]),
        }
        for i in np.flatnonzero(moved).tolist()
    ]
    lending: dict[str, Any] = {}
    bp_a = ra.columns.get("incentive_rate_bp")
    bp_b = rb.columns.get("incentive_rate_bp")
    if bp_a is not None and bp_b is not None:
        da, db = np.nan_to_num(bp_a), np.nan_to_num(bp_b)
        lending["rate_bp_sum_change"] = float(np.sum(db - da))
        loans = rb.columns.get("loan_amount_10k_cny")
        if loans is not None:
            loans = np.nan_to_num(loans)
            # loan (10^4 CNY) x 10^4 CNY x Δbp x 10^-4 = loan_10k x Δbp CNY a year
            effect = loans * (db - da)
            lending["annual_interest_change_cny"] = float(np.sum(effect))
            lending["loans_affected_10k_cny"] = float(np.sum(loans[db != da]))
    ratings = {
        name: {k: v for k, v in mig.items() if k not in ("labels", "direction")} for name, mig in per_rating.items()
    }
    return {
        "firm_years": len(a_lab),
        "moved": prim["moved"],
        "up": prim["up"],
        "down": prim["down"],
        "newly_unrated": prim["newly_unrated"],
        "newly_rated": prim["newly_rated"],
        "matrix": prim["matrix"],
        "by": prim["by"],
        "ratings": ratings,
        "firms": firms,
        "lending": lending,
        "_base": a_lab,
    }


def _apply(data: Any, patches: list[tuple[PathT, Any]]) -> Any:
    """OLD's data with the patches applied. A change that adds into a mapping OLD does not have
    (a section only NEW has, e.g. another rulebook's ``scales`` or ``crosswalk``) creates it;
    removing from a mapping OLD does not have leaves OLD as it is."""
    out = copy.deepcopy(data)
    for path, value in patches:
        node = out
        for p in path[:-1]:
            if isinstance(node, dict) and node.get(p) is None:
                if value is None:
                    break  # nothing to remove
                node[p] = {}
            node = node[p]
        else:
            last = path[-1]
            if value is None:
                if isinstance(node, dict):
                    node.pop(last, None)
            else:
                node[last] = copy.deepcopy(value)
    return out


def attribution(
    old_doc: Document, new_doc: Document, edits: list[Edit], data: Any, base: Any, engine: Engine | None = None
) -> dict[str, Any]:
    """Which change moved how many firms: each change alone on OLD, then cumulatively in both orders.

    ``data``: the portfolio (or an open :class:`~ruleengine.analysis.rated.Portfolio`); ``base``:
    OLD's primary rating labels on it. A change that cannot be applied alone (it needs another
    change to compile) is reported as such. A rulebook met twice (the first change alone is also
    the first step forward) is rated once.
    """
    from .. import pipeline
    from .rated import Portfolio

    if not isinstance(data, Portfolio):
        with Portfolio([compile_document(old_doc)], data, engine, pipeline.CONTEXT_COLUMNS) as portfolio:
            return attribution(old_doc, new_doc, edits, portfolio, base)
    return _attribution(old_doc, edits, data, base)


def _attribution(old_doc: Document, edits: list[Edit], portfolio: Portfolio, base: Any) -> dict[str, Any]:
    from .rated import rating_view

    seen: dict[str, np.ndarray | None] = {}

    def rated_with(doc_data: Any) -> np.ndarray | None:
        key = json.dumps(doc_data, sort_keys=True, default=repr)
        if key in seen:
            return seen[key]
        doc = Document(
            doc_data,
            old_doc.file,
            old_doc.text,
            old_doc.marks,
            old_doc.key_marks,
            old_doc.styles,
            old_doc.origins,
            old_doc.overrides,
        )
        try:
            plan = compile_document(doc)
        except RulebookError:
            seen[key] = None
            return None
        labels = portfolio.rated(plan, rating_view)["rating"]
        seen[key] = np.where(labels == "", "unrated", labels)
        return seen[key]

    relevant = [e for e in edits if e.what not in ("metadata", "source", "label") and e.patches]
    # the sources NEW adds or changes are there for every change (they rate no one, but a change
    # citing a new source compiles only with it); those it removes may still be cited by OLD
    start = _apply(old_doc.data, [p for e in edits if e.what == "source" and e.kind != "removed" for p in e.patches])
    alone: list[dict[str, Any]] = []
    for e in relevant:
        got = rated_with(_apply(start, e.patches))
        alone.append({"change": e.name, "moved": None if got is None else int((got != base).sum())})
    orders: dict[str, list[dict[str, Any]]] = {}
    for label, seq in (("forward", relevant), ("reverse", relevant[::-1])):
        cur = start
        prev = base
        steps: list[dict[str, Any]] = []
        for e in seq:
            cur = _apply(cur, e.patches)
            got = rated_with(cur)
            if got is None:
                steps.append({"change": e.name, "moved": None})
                continue
            steps.append({"change": e.name, "moved": int((got != prev).sum())})
            prev = got
        orders[label] = steps
    fwd = {s["change"]: s["moved"] for s in orders["forward"]}
    rev = {s["change"]: s["moved"] for s in orders["reverse"]}
    independent = fwd == rev and all(a["moved"] == fwd.get(a["change"]) for a in alone)
    return {
        "alone": alone,
        "forward": orders["forward"],
        "reverse": orders["reverse"],
        "order_independent": independent,
    }


def run(old_book: Any, new_book: Any, data: Any | None = None, engine: Engine | None = None) -> dict[str, Any]:
    """The whole diff: structural edits, and with ``data`` the impact and attribution.

    ``engine``: rate the portfolio on ``chunked``, ``spark`` or ``dask`` (``data``: a Parquet
    dataset; for Spark also a URL) instead of in memory; the result is the same."""
    from ..rulebook.loader import load
    from ..rulebook.source import load_document, resolve

    old_path, new_path = resolve(old_book), resolve(new_book)
    old_doc, new_doc = load_document(old_path), load_document(new_path)
    old_plan, new_plan = load(old_path), load(new_path)
    edits = structural_diff(old_doc, new_doc)
    out: dict[str, Any] = {
        "old": {"id": old_plan.id, "version": old_plan.version, "hash": old_plan.hash, "file": old_plan.file},
        "new": {"id": new_plan.id, "version": new_plan.version, "hash": new_plan.hash, "file": new_plan.file},
        "edits": edits,
        "warnings": version_warnings(old_plan, new_plan, new_path) if edits else [],
    }
    if data is not None:
        if old_plan.primary != new_plan.primary and old_plan.id == new_plan.id:
            raise RuleEngineError("the primary rating changed name; impact needs comparable ratings")
        from .. import pipeline
        from .rated import Portfolio

        # the one read (in memory), or the one session and partitioning (on an engine)
        with Portfolio([old_plan, new_plan], data, engine, pipeline.CONTEXT_COLUMNS) as portfolio:
            imp = impact(old_plan, new_plan, portfolio)
            base = imp.pop("_base")
            out["impact"] = imp
            out["attribution"] = attribution(old_doc, new_doc, edits, portfolio, base)
    return out


def to_json(result: dict[str, Any]) -> str:
    data = {k: v for k, v in result.items() if k != "edits"}
    data["edits"] = [e.to_dict() for e in result["edits"]]
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def to_markdown(result: dict[str, Any]) -> str:
    o, n = result["old"], result["new"]
    lines = [
        f"# Rulebook change: {o['id']} {o['version']} → {n['id']} {n['version']}",
        "",
        f"Old: `{o['file']}` ({o['hash']}); new: `{n['file']}` ({n['hash']}).",
        "",
    ]
    for w in result["warnings"]:
        lines.append(f"> **Warning:** {w}")
    if result["warnings"]:
        lines.append("")
    edits = result["edits"]
    lines += ["## Changes", ""]
    if not edits:
        lines.append("No changes of meaning.")
    else:
        lines += ["| change | old | new | old location | new location |", "|---|---|---|---|---|"]
        for e in edits:
            lines.append(
                f"| {e.name} | {short(e.old) if e.old is not MISSING else '—'} | "
                f"{short(e.new) if e.new is not MISSING else '—'} | {e.old_loc} | {e.new_loc} |"
            )
    imp = result.get("impact")
    if imp:
        lines += [
            "",
            "## Impact on the portfolio",
            "",
            f"{imp['firm_years']} firm-years; {imp['moved']} change rating ({imp['up']} up, "
            f"{imp['down']} down, {imp['newly_unrated']} newly unrated).",
            "",
        ]
        for rname, mig in (imp.get("ratings") or {"rating": imp}).items():
            lines += [
                f"### {rname}",
                "",
                f"{mig['moved']} change ({mig['up']} up, {mig['down']} down, {mig['newly_unrated']} newly "
                f"unrated, {mig.get('newly_rated', 0)} newly rated).",
                "",
            ]
            m = mig["matrix"]
            lines.append("| old \\ new | " + " | ".join(m["columns"]) + " |")
            lines.append("|---" * (len(m["columns"]) + 1) + "|")
            for r, counts in zip(m["rows"], m["counts"], strict=True):
                lines.append(f"| {r} | " + " | ".join(str(c) for c in counts) + " |")
            for key, groups in mig.get("by", {}).items():
                parts = [f"{g}: " + ", ".join(f"{n} {d}" for d, n in c.items()) for g, c in groups.items()]
                lines += ["", f"Movers by {key}: " + ("; ".join(parts) if parts else "none") + "."]
            lines.append("")
        if imp["lending"]:
            lines += ["", "Lending: " + ", ".join(f"{k} = {v:,.2f}" for k, v in imp["lending"].items())]
        if imp["firms"]:
            lines += ["", "Firms that moved:", ""]
            lines += [
                f"- {f['firm_id']} {f['year']}: {f['old']} → {f['new']} ({f['direction']})" for f in imp["firms"][:50]
            ]
            if len(imp["firms"]) > 50:
                lines.append(f"- … and {len(imp['firms']) - 50} more (see the JSON)")
        att = result.get("attribution")
        if att:
            lines += ["", "## Attribution", "", "| change | moved alone | forward | reverse |", "|---|---|---|---|"]
            fwd = {s["change"]: s["moved"] for s in att["forward"]}
            rev = {s["change"]: s["moved"] for s in att["reverse"]}
            for a in att["alone"]:
                lines.append(
                    f"| {a['change']} | {_na(a['moved'])} | {_na(fwd.get(a['change']))} | {_na(rev.get(a['change']))} |"
                )
            lines += [
                "",
                "The changes act independently of their order."
                if att["order_independent"]
                else "The changes interact: how many firms each moves depends on the order they are applied in.",
            ]
    return "\n".join(lines) + "\n"


def _na(v: Any) -> str:
    return "needs other changes" if v is None else str(v)


__all__ = ["Edit", "run", "structural_diff", "to_json", "to_markdown"]
