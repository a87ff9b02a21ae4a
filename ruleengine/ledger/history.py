"""``ledger history FIRM``: a firm's ratings over years and method versions, with why each changed.

For each firm-year, every run that rated it is compared with the previous run that rated the same
firm-year: the firm's own input row (``input_fp``), the rulebook (``rulebook_hash``, shown as
id and version), the benchmark tables (``benchmarks_hash``) and the engine version. A rating that
changed is put down to whichever of those changed (data, method, benchmarks, engine); a rating
that changed with none of them changed is reported as unexplained (it cannot happen unless the
engine is not deterministic). Served by the firm index: the table ``ledger_firm_index`` on SQLite,
the index on ``ledger_ratings(firm_id, year)`` on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from . import schema as S
from .db import translate_errors
from .errors import LedgerError


def history(engine: Any, firm_id: str) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    r, u = S.ratings, S.runs
    q = (
        sa.select(
            r.c.year,
            r.c.run_id,
            r.c.rating,
            r.c.status,
            r.c.input_fp,
            u.c.created_at,
            u.c.rulebook_id,
            u.c.rulebook_version,
            u.c.rulebook_hash,
            u.c.benchmarks_hash,
            u.c.engine_version,
            u.c.hash_alg,
            u.c.supersedes,
            u.c.reason,
        )
        .join(u, u.c.id == r.c.run_id)
        .order_by(r.c.year, r.c.run_id, r.c.seq)
    )
    if engine.dialect.name == "sqlite":  # the firm index table (migration 0005), then ratings by key
        fi = S.firm_index
        q = q.join(fi, (fi.c.run_id == r.c.run_id) & (fi.c.seq == r.c.seq)).where(fi.c.firm_id == firm_id)
    else:  # the B-tree index on ledger_ratings(firm_id, year)
        q = q.where(r.c.firm_id == firm_id)
    with translate_errors(engine), engine.connect() as conn:
        rows = [dict(x._mapping) for x in conn.execute(q)]
        if not rows:
            raise LedgerError(f"firm '{firm_id}' has no rating in the ledger")
        run_ids = sorted({x["run_id"] for x in rows})
        sup = conn.execute(sa.select(u.c.supersedes, u.c.id).where(u.c.supersedes.in_(run_ids)).order_by(u.c.id)).all()
    superseded: dict[int, int] = {}
    for old, new in sup:
        superseded.setdefault(old, new)
    last: dict[Any, dict[str, Any]] = {}
    for x in rows:
        x["superseded_by"] = superseded.get(x["run_id"])
        prev = last.get(x["year"])
        x["previous_run"] = prev["run_id"] if prev else None
        x["changed"] = prev is not None and prev["rating"] != x["rating"]
        x["why"] = _why(prev, x)
        last[x["year"]] = x
    return rows


def _why(prev: dict[str, Any] | None, x: dict[str, Any]) -> list[str]:
    if prev is None:
        return ["first rating of this firm-year"]
    why = []
    if prev["hash_alg"] != x["hash_alg"]:
        # digests made with different algorithms cannot be compared; only the method can
        if prev["rulebook_hash"] != x["rulebook_hash"]:
            why.append(
                f"method: {prev['rulebook_id']} {prev['rulebook_version']} → {x['rulebook_id']} {x['rulebook_version']}"
            )
        why.append(f"data and benchmarks not comparable (digests by {prev['hash_alg']} and {x['hash_alg']})")
        return why
    if prev["input_fp"] != x["input_fp"]:
        why.append("data: the firm's input row changed")
    if prev["rulebook_hash"] != x["rulebook_hash"]:
        why.append(
            f"method: {prev['rulebook_id']} {prev['rulebook_version']} → {x['rulebook_id']} {x['rulebook_version']}"
            + (
                ""
                if prev["rulebook_version"] != x["rulebook_version"] or prev["rulebook_id"] != x["rulebook_id"]
                else " (same version, rulebook edited)"
            )
        )
    if prev["benchmarks_hash"] != x["benchmarks_hash"]:
        why.append("benchmarks: the peer-group tables changed")
    if prev["engine_version"] != x["engine_version"]:
        why.append(f"engine: {prev['engine_version']} → {x['engine_version']}")
    if not why:
        why.append(
            "nothing changed (same data, method, benchmarks)" if prev["rating"] == x["rating"] else "unexplained"
        )
    return why


def method_edits(ledger: Any, old_run: int, new_run: int) -> list[str]:
    """What changed in the method between two runs, by ``ruleengine.diff``'s structural diff of the
    rulebooks stored with each run (meaning, not text: reformatting is no change)."""
    from ..analysis.diff import run as diff_run
    from .replay import materials

    with materials(ledger, old_run, data=_NoData()) as a, materials(ledger, new_run, data=_NoData()) as b:
        result = diff_run(a.plan_path, b.plan_path)
    return [e.summary() for e in result["edits"]]


class _NoData:
    """Placeholder: rulebook-only materials do not need the input rows."""
