"""The service's idempotency claims: which server process is answering a request with a given
Idempotency-Key right now (``serve --processes N``, or several servers on one ledger).

``service_idempotency_claims`` (``who``, ``key``, ``owner``, ``expires``) is coordination state, not
ledger data: a claim is inserted when a process starts answering a keyed request and deleted when
its answer is stored in ``service_idempotency`` (append-only, unchanged) or when the request failed
(so that the client may retry with the same key). A claim whose process died expires. It is the
one table the database lets the service UPDATE and DELETE: nothing is hashed or chained from it.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_idempotency_claims",
        sa.Column("who", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_idempotency_claims")
