"""The service's own ledger tables (migration 0003): published rulebooks, consents, the access log
and idempotency keys. All append-only: a revocation is a new row, the current state of a consent
is its latest row."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from ..ledger.db import translate_errors, write_transaction

metadata = sa.MetaData()

rulebooks = sa.Table(
    "service_rulebooks",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(80), primary_key=True),
    sa.Column("published_at", sa.String(40), nullable=False),
    sa.Column("who", sa.String(200), nullable=False),
    sa.Column("rulebook_hash", sa.String(80), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
)
consents = sa.Table(
    "service_consents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("firm_id", sa.String(200), nullable=False),
    sa.Column("bank", sa.String(200), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("expires_at", sa.String(40), nullable=True),
    sa.Column("who", sa.String(200), nullable=False),
)
access = sa.Table(
    "service_access",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("who", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("bank", sa.String(200), nullable=True),
    sa.Column("firm_id", sa.String(200), nullable=False),
    sa.Column("action", sa.String(200), nullable=False),
    sa.Column("allowed", sa.Boolean, nullable=False),
)
idempotency = sa.Table(
    "service_idempotency",
    metadata,
    sa.Column("who", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("request_hash", sa.String(80), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("media_type", sa.String(100), nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
)
claims = sa.Table(  # migration 0006: coordination state (not append-only), see idem_claim
    "service_idempotency_claims",
    metadata,
    sa.Column("who", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


# --- published rulebooks -------------------------------------------------------------------------
def publish(engine: Any, row: dict[str, Any]) -> bool:
    """Store a new version; False when (name, version) is taken already."""
    with write_transaction(engine) as conn:
        taken = conn.execute(
            sa.select(rulebooks.c.name).where(rulebooks.c.name == row["name"], rulebooks.c.version == row["version"])
        ).first()
        if taken:
            return False
        conn.execute(sa.insert(rulebooks).values(**row))
    return True


def published(engine: Any, name: str | None = None) -> list[dict[str, Any]]:
    cols = [c for c in rulebooks.c if c.name != "text"]
    q = sa.select(*cols).order_by(rulebooks.c.name, rulebooks.c.published_at)
    if name is not None:
        q = q.where(rulebooks.c.name == name)
    with translate_errors(engine), engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def published_text(engine: Any, name: str, version: str) -> tuple[str, str] | None:
    q = sa.select(rulebooks.c.text, rulebooks.c.sha256).where(rulebooks.c.name == name, rulebooks.c.version == version)
    with translate_errors(engine), engine.connect() as conn:
        r = conn.execute(q).first()
    return (r[0], r[1]) if r else None


# --- consents ------------------------------------------------------------------------------------
def consent_event(
    engine: Any, firm_id: str, bank: str, action: str, expires_at: str | None, who: str
) -> dict[str, Any]:
    row = {"at": now(), "firm_id": firm_id, "bank": bank, "action": action, "expires_at": expires_at, "who": who}
    with write_transaction(engine) as conn:
        conn.execute(sa.insert(consents).values(**row))
    return row


def consent_states(engine: Any, firm_id: str | None = None, bank: str | None = None) -> list[dict[str, Any]]:
    """The latest consent row of each (firm, bank) pair, with ``active`` as of now."""
    q = sa.select(consents).order_by(consents.c.id)
    if firm_id is not None:
        q = q.where(consents.c.firm_id == firm_id)
    if bank is not None:
        q = q.where(consents.c.bank == bank)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    with translate_errors(engine), engine.connect() as conn:
        for r in conn.execute(q):
            latest[(r.firm_id, r.bank)] = dict(r._mapping)
    t = now()
    out = []
    for row in latest.values():
        row["active"] = _active(row["action"], row["expires_at"], t)
        row.pop("id", None)
        out.append(row)
    return sorted(out, key=lambda r: (r["firm_id"], r["bank"]))


def consented(engine: Any, bank: str, firm_ids: list[str]) -> set[str]:
    """Which of ``firm_ids`` have an active consent for ``bank`` now."""
    wanted = set(firm_ids)
    if len(wanted) == 1:  # a bank's one-firm request (rating, explanation): the pair's latest row
        return _consented_one(engine, bank, next(iter(wanted)))
    latest: dict[str, Any] = {}
    q = sa.select(consents.c.firm_id, consents.c.action, consents.c.expires_at).where(consents.c.bank == bank)
    if len(wanted) <= 500:
        q = q.where(consents.c.firm_id.in_(sorted(wanted)))
    with translate_errors(engine), engine.connect() as conn:
        for f, action, exp in conn.execute(q.order_by(consents.c.id)):
            latest[f] = (action, exp)
    t = now()
    return {f for f, (a, e) in latest.items() if f in wanted and _active(a, e, t)}


def _consented_one(engine: Any, bank: str, firm_id: str) -> set[str]:
    """:func:`consented` of one firm: its latest consent row for ``bank`` (index
    ``ix_service_consents_pair``), read with fixed SQL text on the driver's cursor. The same
    answer as the general query, without SQLAlchemy building, caching and wrapping a statement
    (~0.35 ms of a bank's one-firm request, measured)."""
    ph = "%s" if engine.dialect.name == "postgresql" else "?"
    sql = (
        f"SELECT action, expires_at FROM service_consents WHERE firm_id = {ph} AND bank = {ph} ORDER BY id DESC LIMIT 1"
    )
    with translate_errors(engine), engine.connect() as conn:
        cur = conn.connection.dbapi_connection.cursor()
        try:
            cur.execute(sql, (firm_id, bank))
            row = cur.fetchone()
        finally:
            cur.close()
    if row is None:
        return set()
    return {firm_id} if _active(row[0], row[1], now()) else set()


def _active(action: str, expires_at: str | None, at: str) -> bool:
    """A consent whose latest row is ``(action, expires_at)`` stands at time ``at`` (ISO text)."""
    return action == "grant" and (expires_at is None or expires_at > at)


# --- access log ----------------------------------------------------------------------------------
def log_access(
    engine: Any, who: str, role: str, bank: str | None, firm_ids: list[str], action: str, allowed: bool
) -> None:
    """An access line per firm, committed now in its own transaction."""
    log_access_rows(engine, access_rows(who, role, bank, firm_ids, action, allowed))


def log_access_rows(engine: Any, rows: list[dict[str, Any]]) -> None:
    """Access lines (:func:`access_rows`) committed now in a transaction of their own."""
    if rows:
        with write_transaction(engine) as conn:
            insert_access(conn, rows)


def access_rows(
    who: str, role: str, bank: str | None, firm_ids: list[str], action: str, allowed: bool
) -> list[dict[str, Any]]:
    """The access lines for ``firm_ids``, stamped now (:func:`insert_access` writes them)."""
    t = now()
    return [
        {"at": t, "who": who, "role": role, "bank": bank, "firm_id": f, "action": action[:200], "allowed": allowed}
        for f in firm_ids
    ]


def insert_access(conn: Any, rows: list[dict[str, Any]]) -> None:
    """Access lines into the caller's transaction (``conn``): a bank's one-firm rating commits its
    line with its run (``ledger.record.Prepared.also``), so both land or neither does."""
    if rows:
        conn.execute(sa.insert(access), rows)


def access_log(engine: Any, firm_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    q = sa.select(access).order_by(access.c.id.desc()).limit(limit)
    if firm_id is not None:
        q = q.where(access.c.firm_id == firm_id)
    with translate_errors(engine), engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


# --- idempotency ---------------------------------------------------------------------------------
def idem_get(engine: Any, who: str, key: str) -> dict[str, Any] | None:
    q = sa.select(idempotency).where(idempotency.c.who == who, idempotency.c.key == key)
    with translate_errors(engine), engine.connect() as conn:
        r = conn.execute(q).first()
    return dict(r._mapping) if r else None


def idem_put(
    engine: Any,
    who: str,
    key: str,
    request_hash: str,
    status: int,
    media_type: str,
    body: bytes,
    owner: str | None = None,
) -> None:
    """Store the answer to a keyed request (and drop ``owner``'s claim on it, in one transaction)."""
    with write_transaction(engine) as conn:
        if owner is not None:
            conn.execute(sa.delete(claims).where(claims.c.who == who, claims.c.key == key, claims.c.owner == owner))
        if conn.execute(sa.select(idempotency.c.key).where(idempotency.c.who == who, idempotency.c.key == key)).first():
            return  # a concurrent request with the same key stored its answer first
        conn.execute(
            sa.insert(idempotency).values(
                who=who, key=key, at=now(), request_hash=request_hash, status=status, media_type=media_type, body=body
            )
        )


def idem_claim(engine: Any, who: str, key: str, owner: str, ttl_s: float) -> str:
    """Claim the right to answer (``who``, ``key``) for ``ttl_s`` seconds, across every process on
    this ledger: ``"claimed"``; ``"answered"`` when its answer is stored already; ``"busy"`` while
    another owner's claim stands (a claim past its expiry is taken over: its process died)."""
    import time

    t = time.time()
    with write_transaction(engine) as conn:
        if conn.execute(sa.select(idempotency.c.key).where(idempotency.c.who == who, idempotency.c.key == key)).first():
            return "answered"
        held = conn.execute(
            sa.select(claims.c.owner, claims.c.expires).where(claims.c.who == who, claims.c.key == key)
        ).first()
        if held is not None:
            if held.owner != owner and held.expires > t:
                return "busy"
            conn.execute(sa.delete(claims).where(claims.c.who == who, claims.c.key == key))
        conn.execute(sa.insert(claims).values(who=who, key=key, owner=owner, expires=t + ttl_s))
    return "claimed"


def idem_release(engine: Any, who: str, key: str, owner: str) -> None:
    """Drop ``owner``'s claim (its request failed: the client may retry with the same key)."""
    with write_transaction(engine) as conn:
        conn.execute(sa.delete(claims).where(claims.c.who == who, claims.c.key == key, claims.c.owner == owner))
