"""Imported first by every tests/test_ledger_*.py: without the ledger extra those modules are
skipped with the reason printed, instead of failing the whole suite at import."""

import pytest

for _name in ("sqlalchemy", "alembic", "psycopg", "cryptography"):
    pytest.importorskip(_name, reason=f"the ledger extra is not installed ({_name}): pip install '.[ledger]'")
