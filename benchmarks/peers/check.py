"""1. ruleengine's own levels and K (the reference), and the equality check every peer must pass
before its time counts."""

from __future__ import annotations

from typing import Any

import numpy as np

# -- 1. ruleengine -------------------------------------------------------------------------------


def ruleengine_reference(plan: Any, batch: Any) -> dict[str, np.ndarray]:
    from ruleengine.engine.evaluator import evaluate

    ev = evaluate(plan, batch)
    lv = ev.levels["level"]
    level = np.where(ev.rated, lv + 1, 0).astype(np.int64)
    return {"level": level, "k": np.asarray(ev.values["k"], dtype=np.float64)}


def check_equal(
    name: str, got: dict[str, np.ndarray], ref: dict[str, np.ndarray], rows: np.ndarray | None = None
) -> dict[str, Any]:
    """Levels identical and K within 1e-9 relative (NaN where ruleengine has NaN)."""
    ref_level, ref_k = ref["level"], ref["k"]
    if rows is not None:
        ref_level, ref_k = ref_level[rows], ref_k[rows]
    level = np.asarray(got["level"], dtype=np.int64)
    k = np.asarray(got["k"], dtype=np.float64)
    same_level = level.shape == ref_level.shape and bool(np.array_equal(level, ref_level))
    mismatches = int((level != ref_level).sum()) if level.shape == ref_level.shape else -1
    both = ~np.isnan(ref_k) & ~np.isnan(k)
    nan_ok = bool(np.array_equal(np.isnan(ref_k), np.isnan(k)))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(k[both] - ref_k[both]) / np.maximum(np.abs(ref_k[both]), 1e-300)
    max_rel = float(rel.max()) if rel.size else 0.0
    ok = same_level and nan_ok and max_rel <= 1e-9
    return {
        "name": name,
        "rows": int(len(ref_level)),
        "levels_equal": same_level,
        "mismatches": mismatches,
        "max_rel_k": max_rel,
        "nan_equal": nan_ok,
        "ok": ok,
    }
