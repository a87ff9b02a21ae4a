"""Faster bulk recording (issue #16's speed targets), and the canonical form of each run.

* ``ledger_runs.format``: the canonical form a run's digests were made in — 1 for every run
  recorded before this revision (results digest over an Arrow IPC stream), 2 for runs recorded
  from now on (results digest over each column's canonical bytes, see
  ``ruleengine.ledger.canonical.results_bytes``). Adding the column changes no stored value:
  format-1 runs keep their hashes, and still verify and replay.
* SQLite only: ``ledger_ratings`` becomes a ``WITHOUT ROWID`` table clustered on its primary key
  (``run_id``, ``seq``): one B-tree less to fill per rating (the rowid table plus its primary-key
  index were two). The rows are copied over unchanged (the append-only triggers are dropped for the
  copy and created again, in the same transaction). PostgreSQL is unchanged.

Downgrade refuses while a format-2 run exists: the older code could not verify or replay it.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ruleengine.ledger.errors import LedgerError

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = "run_id, seq, firm_id, year, rating, status, input_fp, fp"


def _rebuild_ratings(with_rowid: bool) -> None:
    """SQLite: copy ledger_ratings into a table with or without rowid (same columns, index, triggers)."""
    for action in ("update", "delete"):
        op.execute(f"DROP TRIGGER ledger_ratings_no_{action}")
    op.execute("DROP INDEX ix_ledger_ratings_firm")
    op.execute("ALTER TABLE ledger_ratings RENAME TO ledger_ratings_old")
    op.create_table(
        "ledger_ratings",
        sa.Column("run_id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("firm_id", sa.String(200), nullable=False),
        sa.Column("year", sa.Integer, nullable=True),
        sa.Column("rating", sa.String(80), nullable=False),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("input_fp", sa.BigInteger, nullable=False),
        sa.Column("fp", sa.BigInteger, nullable=False),
        sqlite_with_rowid=with_rowid,
    )
    op.execute(
        f"INSERT INTO ledger_ratings ({_COLUMNS}) SELECT {_COLUMNS} FROM ledger_ratings_old ORDER BY run_id, seq"
    )
    op.execute("DROP TABLE ledger_ratings_old")
    op.create_index("ix_ledger_ratings_firm", "ledger_ratings", ["firm_id", "year"])
    for action in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER ledger_ratings_no_{action.lower()} BEFORE {action} ON ledger_ratings "
            f"BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {action} on ledger_ratings refused'); END"
        )


def upgrade() -> None:
    op.add_column("ledger_runs", sa.Column("format", sa.Integer, nullable=False, server_default=sa.text("1")))
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_ratings(with_rowid=False)


def downgrade() -> None:
    newer = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM ledger_runs WHERE format <> 1")).scalar()
    if newer:
        raise LedgerError(
            f"cannot downgrade the ledger below 0004: {newer} run(s) were recorded in canonical form 2, "
            "which older ruleengine versions cannot verify"
        )
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_ratings(with_rowid=True)
    op.drop_column("ledger_runs", "format")
