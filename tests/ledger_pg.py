"""A throwaway PostgreSQL server for the ledger tests (issue #16), started once per session.

``initdb``/``pg_ctl`` refuse to run as root, so as root they run as the ``postgres`` user
(``runuser``), in a temporary folder owned by it, listening on a free loopback port and a socket in
that folder; the server is stopped and the folder removed at teardown. When no server binary
exists at all the PostgreSQL variants are skipped with the reason printed.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


def _bin_dir() -> Path | None:
    env = os.environ.get("RULEENGINE_PG_BIN")
    candidates = [env] if env else []
    candidates += ["/usr/lib/postgresql/15/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    host: str
    port: int
    socket_dir: str

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{db}"

    def admin(self, sql: str, db: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user="postgres", dbname=db, autocommit=True) as c:
            c.execute(sql)

    def new_database(self) -> str:
        name = "ledger_" + uuid.uuid4().hex[:12]
        self.admin(f"CREATE DATABASE {name}")
        return name


@pytest.fixture(scope="session")
def postgresql_server():
    bindir = _bin_dir()
    if bindir is None:
        reason = "no PostgreSQL server binary (initdb/pg_ctl under /usr/lib/postgresql/*/bin): .ci/system-packages.sh installs it"
        print(f"\nSKIP PostgreSQL ledger tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    tmp = tempfile.mkdtemp(prefix="ruleengine-pg-")
    if as_root:
        shutil.chown(tmp, "postgres", "postgres")
    data = os.path.join(tmp, "data")
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    try:
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            env=env,
        )
        opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", data, "-l", os.path.join(tmp, "log"), "-o", opts, "-w", "start"],
            check=True,
            capture_output=True,
            env=env,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')}")
    try:
        yield PgServer("127.0.0.1", port, tmp)
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    """A fresh, empty ledger URL on each backend: a SQLite file, or a new database on the server."""
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.db")
        return
    server = request.getfixturevalue("postgresql_server")
    name = server.new_database()
    yield server.url(name)
    server.admin(f"DROP DATABASE {name} WITH (FORCE)")


def make_sample(path: Path, firms: int = 30, seed: int = 0, years: str = "2022,2023") -> Path:
    """A synthetic firm-year portfolio written by `ruleengine sample` (DATA.md columns)."""
    from click.testing import CliRunner

    from ruleengine.cli import main

    out = CliRunner().invoke(
        main, ["sample", "--firms", str(firms), "--seed", str(seed), "--years", years, "-o", str(path)]
    )
    assert out.exit_code == 0, out.output
    return path


def raw_execute(url: str, sql: str, params: tuple = ()) -> list:
    """Run SQL straight on the database, around the ledger API (as an attacker or admin would)."""
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as c:
            cur = c.execute(sql, params or None)
            return cur.fetchall() if cur.description else []
    import sqlite3

    con = sqlite3.connect(url)
    try:
        cur = con.execute(sql.replace("%s", "?"), params)
        rows = cur.fetchall()
        con.commit()
        return rows
    finally:
        con.close()


def bypass(url: str, sql: str) -> None:
    """Edit the ledger around its append-only triggers, as a superuser/owner could: PostgreSQL with
    ``session_replication_role = replica`` (triggers do not fire), SQLite by dropping the triggers."""
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as c:
            c.execute("SET session_replication_role = replica; " + sql)
        return
    import sqlite3

    con = sqlite3.connect(url)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
        con.executescript("".join(f"DROP TRIGGER {n};" for n in names) + sql + ";")
        con.commit()
    finally:
        con.close()
