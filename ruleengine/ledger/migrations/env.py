"""Alembic environment of the ledger: always run programmatically (see ``ruleengine.ledger.db``),
with the connection handed over in ``config.attributes['connection']``; no alembic.ini needed."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, version_table="ledger_alembic_version", transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
