"""SQLite: the firm index as its own table, filled in key order (issue #16's 1M-row target).

``ledger_firm_index`` (``firm_id``, ``run_id``, ``seq``), a ``WITHOUT ROWID`` table clustered on
all three, replaces the secondary index ``ix_ledger_ratings_firm`` on ``ledger_ratings(firm_id,
year)``. Recording inserts a run's ratings in seq order and then its firm index rows sorted by
firm, so both B-trees are filled in key order; the secondary index took one insert per rating in
the portfolio's own (random) firm order, about half the CPU time of recording a 1M-row run.
``history FIRM`` reads the index table and joins the ratings by their primary key. The index rows
are derived data (not hashed): ``ledger check`` compares them with the ratings. Append-only like
the other tables (triggers refuse UPDATE and DELETE).

PostgreSQL is unchanged (``COPY`` into ``ledger_ratings`` keeps its B-tree index on (firm_id, year)):
both revisions are no-ops there.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "CREATE TABLE ledger_firm_index (firm_id VARCHAR(200) NOT NULL, run_id INTEGER NOT NULL, "
        "seq INTEGER NOT NULL, PRIMARY KEY (firm_id, run_id, seq)) WITHOUT ROWID"
    )
    op.execute(
        "INSERT INTO ledger_firm_index (firm_id, run_id, seq) "
        "SELECT firm_id, run_id, seq FROM ledger_ratings ORDER BY firm_id, run_id, seq"
    )
    op.execute("DROP INDEX ix_ledger_ratings_firm")
    for action in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER ledger_firm_index_no_{action.lower()} BEFORE {action} ON ledger_firm_index "
            f"BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {action} on ledger_firm_index refused'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("CREATE INDEX ix_ledger_ratings_firm ON ledger_ratings (firm_id, year)")
    for action in ("update", "delete"):
        op.execute(f"DROP TRIGGER ledger_firm_index_no_{action}")
    op.execute("DROP TABLE ledger_firm_index")
