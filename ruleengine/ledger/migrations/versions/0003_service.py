"""The HTTP service's tables (issue #17): published rulebook versions, consents, the access log
and idempotency keys. All append-only like the ledger's own tables (a revoked consent is a new
``revoke`` row, not an edited one); the database refuses UPDATE and DELETE on them.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLES = ("service_rulebooks", "service_consents", "service_access", "service_idempotency")


def upgrade() -> None:
    op.create_table(
        "service_rulebooks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(80), primary_key=True),
        sa.Column("published_at", sa.String(40), nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("rulebook_hash", sa.String(80), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_table(
        "service_consents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("firm_id", sa.String(200), nullable=False),
        sa.Column("bank", sa.String(200), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("expires_at", sa.String(40), nullable=True),
        sa.Column("who", sa.String(200), nullable=False),
    )
    op.create_index("ix_service_consents_pair", "service_consents", ["firm_id", "bank", "id"])
    op.create_table(
        "service_access",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("bank", sa.String(200), nullable=True),
        sa.Column("firm_id", sa.String(200), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("allowed", sa.Boolean, nullable=False),
    )
    op.create_index("ix_service_access_firm", "service_access", ["firm_id", "id"])
    op.create_table(
        "service_idempotency",
        sa.Column("who", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("request_hash", sa.String(80), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("media_type", sa.String(100), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # ledger_refuse_change() comes with migration 0002
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
            )
    else:
        for table in TABLES:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {action} on {table} refused'); END"
                )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
    else:
        for table in TABLES:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER {table}_no_{action}")
    op.drop_table("service_idempotency")
    op.drop_index("ix_service_access_firm", table_name="service_access")
    op.drop_table("service_access")
    op.drop_index("ix_service_consents_pair", table_name="service_consents")
    op.drop_table("service_consents")
    op.drop_table("service_rulebooks")
