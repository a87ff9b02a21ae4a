#!/usr/bin/env bash
# The ratings-ledger tests (issue #16) start a throwaway PostgreSQL server (tests/ledger_pg.py).
# Installs the server with apt only when its binaries are absent; idempotent; run as root.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    echo "setup-ledger: PostgreSQL server binaries present: $(ls -d /usr/lib/postgresql/*/bin | tr '\n' ' ')"
else
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql-15 || apt-get install -y -qq postgresql
fi
# initdb/pg_ctl refuse to run as root: the fixture runs them as `postgres` (the package creates it)
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
# the ledger extra (SQLAlchemy, Alembic, psycopg 3, cryptography) for the tests
if [ -n "${VIRTUAL_ENV:-}" ]; then
    pip install --quiet '.[ledger]'
fi
