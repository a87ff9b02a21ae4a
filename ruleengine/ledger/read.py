"""Reading runs, ratings and blobs back."""

from __future__ import annotations

from typing import Any

from . import schema as S
from .db import translate_errors
from .errors import LedgerError


def runs(engine: Any) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    with translate_errors(engine), engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(S.runs).order_by(S.runs.c.id))]


def run(engine: Any, run_id: int) -> dict[str, Any]:
    import sqlalchemy as sa

    with translate_errors(engine), engine.connect() as conn:
        row = conn.execute(sa.select(S.runs).where(S.runs.c.id == run_id)).first()
        if row is None:
            last = conn.execute(sa.select(sa.func.max(S.runs.c.id))).scalar()
            raise LedgerError(f"no run {run_id} in the ledger (runs: {'1–' + str(last) if last else 'none'})")
        out = dict(row._mapping)
        out["superseded_by"] = [
            r[0]
            for r in conn.execute(sa.select(S.runs.c.id).where(S.runs.c.supersedes == run_id).order_by(S.runs.c.id))
        ]
        return out


def ratings(engine: Any, run_id: int, firm_id: str | None = None) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    q = sa.select(S.ratings).where(S.ratings.c.run_id == run_id)
    if firm_id is not None:
        q = q.where(S.ratings.c.firm_id == firm_id)
        if engine.dialect.name == "sqlite":  # the firm's seqs from the firm index (migration 0005)
            fi = S.firm_index
            q = q.where(S.ratings.c.seq.in_(sa.select(fi.c.seq).where(fi.c.firm_id == firm_id, fi.c.run_id == run_id)))
    with translate_errors(engine), engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q.order_by(S.ratings.c.seq))]


def blob(engine: Any, digest: str) -> bytes:
    import sqlalchemy as sa

    from .record import decompress

    with translate_errors(engine), engine.connect() as conn:
        row = conn.execute(sa.select(S.blobs).where(S.blobs.c.digest == digest)).first()
    if row is None:
        raise LedgerError(f"blob {digest} is not in the ledger")
    return decompress(row.encoding, row.data, row.size)
