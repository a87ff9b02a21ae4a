"""The ledger's tables as SQLAlchemy Core metadata (the migrations in ``migrations/`` create them).

Four tables (five on SQLite), all append-only (database triggers refuse UPDATE and DELETE, see migration 0002):

``ledger_blobs``
    Content-addressed bytes: ``digest`` (``sha256:<hex>`` or ``sm3:<hex>`` of the uncompressed
    bytes) → ``data`` (stored ``zstd``-compressed when ``encoding`` says so), ``size`` (uncompressed
    bytes), ``kind`` (rulebook-file, rulebook-manifest, input-rows, benchmarks).
``ledger_runs``
    One row per rating run, in chain order (``id`` 1, 2, 3 …). The header fields, hashed as
    canonical JSON together with ``prev_hash``, give ``run_hash``; the next run's ``prev_hash`` is
    this ``run_hash``. ``ratings_root`` is the hash of the run's rating leaves in row order.
    ``format`` (migration 0004) is the canonical form the run's digests were made in: 1 (results
    as an Arrow IPC stream; runs recorded before it existed) or 2 (results column by column).
``ledger_ratings``
    One row per firm-year rated: ``seq`` (row in the run), firm, year, primary rating, status,
    ``input_fp`` (64-bit fingerprint of the firm-year's input row) and ``fp`` (64-bit fingerprint
    of all those fields). Fingerprints are not cryptographic: they say which row changed.
``ledger_firm_index`` (SQLite only, migration 0005)
    ``(firm_id, run_id, seq)`` of every rating, a ``WITHOUT ROWID`` table clustered on all three:
    what ``history FIRM`` looks a firm up in (then the ratings by their primary key). Filled by
    each run sorted by firm (in key order); on PostgreSQL the B-tree index
    ``ix_ledger_ratings_firm`` on ``ledger_ratings(firm_id, year)`` does this job. Derived data,
    not hashed: ``ledger check`` compares it with the ratings.
``ledger_blocks``
    The ratings of a run in blocks of 4096 rows, each with the SHA-256/SM3 ``hash`` of the block's
    canonical bytes; the run header's ``ratings_root`` is the hash of the block hashes.

``run_id`` of ratings and blocks has no foreign-key constraint on purpose: a per-row key check
would dominate the bulk insert (PostgreSQL runs one per row); ratings are written in the same
transaction as their run, and ``ledger check`` reports ratings that belong to no run.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

blobs = sa.Table(
    "ledger_blobs",
    metadata,
    sa.Column("digest", sa.String(80), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("encoding", sa.String(16), nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

runs = sa.Table(
    "ledger_runs",
    metadata,
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
    sa.Column("format", sa.Integer, nullable=False, server_default=sa.text("1")),
)

ratings = sa.Table(
    "ledger_ratings",
    metadata,
    sa.Column("run_id", sa.Integer, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("firm_id", sa.String(200).with_variant(sa.String(200, collation="C"), "postgresql"), nullable=False),
    sa.Column("year", sa.Integer, nullable=True),
    sa.Column("rating", sa.String(80), nullable=False),
    sa.Column("status", sa.String(40), nullable=False),
    sa.Column("input_fp", sa.BigInteger, nullable=False),
    sa.Column("fp", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,  # SQLite: clustered on (run_id, seq), migration 0004
)
sa.Index("ix_ledger_ratings_firm", ratings.c.firm_id, ratings.c.year)  # PostgreSQL (SQLite: firm_index)

firm_index = sa.Table(  # SQLite only (migration 0005)
    "ledger_firm_index",
    metadata,
    sa.Column("firm_id", sa.String(200), primary_key=True),
    sa.Column("run_id", sa.Integer, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sqlite_with_rowid=False,
)

blocks = sa.Table(
    "ledger_blocks",
    metadata,
    sa.Column("run_id", sa.Integer, primary_key=True),
    sa.Column("block", sa.Integer, primary_key=True),
    sa.Column("first_seq", sa.Integer, nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(80), nullable=False),
)

# Header fields of a run (``run_hash`` covers all of them, and ``format`` when it is not 1: see
# ``record.header_body``).
HEADER_FIELDS = (
    "id",
    "uuid",
    "created_at",
    "who",
    "engine_version",
    "rulebook_id",
    "rulebook_version",
    "rulebook_hash",
    "rulebook_manifest",
    "input_hash",
    "input_blob",
    "input_name",
    "n_ratings",
    "benchmarks_hash",
    "benchmarks_blob",
    "results_hash",
    "options",
    "supersedes",
    "reason",
    "hash_alg",
    "ratings_root",
)
