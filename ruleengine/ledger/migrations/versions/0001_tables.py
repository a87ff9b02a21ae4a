"""The ledger's tables: content-addressed blobs, runs (the hash chain), ratings and
rating blocks (their hashes).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_blobs",
        sa.Column("digest", sa.String(80), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("encoding", sa.String(16), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "ledger_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("engine_version", sa.String(40), nullable=False),
        sa.Column("rulebook_id", sa.String(200), nullable=False),
        sa.Column("rulebook_version", sa.String(80), nullable=False),
        sa.Column("rulebook_hash", sa.String(80), nullable=False),
        sa.Column("rulebook_manifest", sa.String(80), nullable=False),
        sa.Column("input_hash", sa.String(80), nullable=False),
        sa.Column("input_blob", sa.String(80), nullable=True),
        sa.Column("input_name", sa.String(400), nullable=False),
        sa.Column("n_ratings", sa.Integer, nullable=False),
        sa.Column("benchmarks_hash", sa.String(80), nullable=False),
        sa.Column("benchmarks_blob", sa.String(80), nullable=False),
        sa.Column("results_hash", sa.String(80), nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("supersedes", sa.Integer, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("hash_alg", sa.String(16), nullable=False),
        sa.Column("ratings_root", sa.String(80), nullable=False),
        sa.Column("prev_hash", sa.String(80), nullable=False),
        sa.Column("run_hash", sa.String(80), nullable=False, unique=True),
        sa.Column("signature", sa.String(200), nullable=True),
        sa.Column("public_key", sa.String(100), nullable=True),
    )
    op.create_table(
        "ledger_ratings",
        sa.Column("run_id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("firm_id", sa.String(200).with_variant(sa.String(200, collation="C"), "postgresql"), nullable=False),
        sa.Column("year", sa.Integer, nullable=True),
        sa.Column("rating", sa.String(80), nullable=False),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("input_fp", sa.BigInteger, nullable=False),
        sa.Column("fp", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_ledger_ratings_firm", "ledger_ratings", ["firm_id", "year"])
    op.create_table(
        "ledger_blocks",
        sa.Column("run_id", sa.Integer, primary_key=True),
        sa.Column("block", sa.Integer, primary_key=True),
        sa.Column("first_seq", sa.Integer, nullable=False),
        sa.Column("n_rows", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(80), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ledger_blocks")
    op.drop_index("ix_ledger_ratings_firm", table_name="ledger_ratings")
    op.drop_table("ledger_ratings")
    op.drop_table("ledger_runs")
    op.drop_table("ledger_blobs")
