"""Faults (issue #16), on SQLite and PostgreSQL: a writer killed mid-run leaves no partial run;
8 concurrent writer processes all land with an intact chain; a read-only ledger or a full disk
gives a clear error and loses nothing already recorded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import ledger_required  # noqa: F401  (skips without the ledger extra)
import pytest
from ledger_pg import make_sample, raw_execute

import ruleengine
from ruleengine.ledger import LedgerError, open_ledger

CHILD_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _child(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )


KILLED_WRITER = """
    import sys, time
    import ruleengine
    from ruleengine.ledger import open_ledger, record

    original = record._insert_ratings

    def slow(conn, run_id, rows):
        original(conn, run_id, rows)   # every rating row written, the transaction still open
        print("INSERTED", flush=True)
        time.sleep(120)

    record._insert_ratings = slow
    url, data = sys.argv[1], sys.argv[2]
    led = open_ledger(url)
    led.record("huzhou", data, ruleengine.rate("huzhou", data))
"""


def test_a_writer_killed_mid_run_leaves_no_partial_run(ledger_url, tmp_path):
    data = make_sample(tmp_path / "firms.csv", firms=20)
    led = open_ledger(ledger_url)
    led.record("huzhou", data, ruleengine.rate("huzhou", data))
    proc = _child(KILLED_WRITER, ledger_url, str(data))
    try:
        line = proc.stdout.readline()
        assert line.strip() == "INSERTED", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    # the killed run's 40 rows were written inside its transaction: none is visible
    assert [r["id"] for r in led.runs()] == [1]
    deadline = time.time() + 30
    while True:  # PostgreSQL rolls back once it sees the connection gone
        n = raw_execute(ledger_url, "SELECT COUNT(*) FROM ledger_ratings")[0][0]
        if n == 40 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert n == 40
    assert led.check().ok
    run = led.record("huzhou", data, ruleengine.rate("huzhou", data))  # the next writer goes on
    assert run["id"] == 2 and run["prev_hash"] == led.run(1)["run_hash"]
    assert led.check().ok
    led.dispose()


CONCURRENT_WRITER = """
    import os, sys, time
    import ruleengine
    from ruleengine.ledger import open_ledger

    url, data, go, who = sys.argv[1:5]
    res = ruleengine.rate("huzhou", data)
    led = open_ledger(url)
    print("READY", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    for k in range(2):
        run = led.record("huzhou", data, res, who=f"{who}-{k}")
        print(run["id"], flush=True)
"""


def test_eight_concurrent_writers_all_land_with_an_intact_chain(ledger_url, tmp_path):
    data = make_sample(tmp_path / "firms.csv", firms=10)
    open_ledger(ledger_url).dispose()  # schema in place (concurrent first migrations are not the point)
    go = tmp_path / "go"
    procs = [_child(CONCURRENT_WRITER, ledger_url, str(data), str(go), f"w{i}") for i in range(8)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "READY", p.stderr.read()
        go.touch()
        ids = []
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
            ids += [int(x) for x in out.split()]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert sorted(ids) == list(range(1, 17))  # 8 writers × 2 runs, each got its own link
    led = open_ledger(ledger_url)
    runs = led.runs()
    assert sorted(r["who"] for r in runs) == sorted(f"w{i}-{k}" for i in range(8) for k in range(2))
    rep = led.check()
    assert rep.ok, rep.problems
    assert (rep.runs, rep.ratings) == (16, 16 * 20)
    led.dispose()


def test_a_read_only_ledger_is_a_clear_error_and_loses_nothing(ledger_url, tmp_path):
    data = make_sample(tmp_path / "firms.csv", firms=8)
    led = open_ledger(ledger_url)
    first = led.record("huzhou", data, ruleengine.rate("huzhou", data))
    if ledger_url.startswith("postgresql"):
        db = ledger_url.rsplit("/", 1)[1]
        raw_execute(ledger_url, f"ALTER DATABASE {db} SET default_transaction_read_only = on")
        other = open_ledger(ledger_url)  # a new session: the setting applies to new sessions
        with pytest.raises(LedgerError, match="is read-only: nothing was recorded"):
            other.record("huzhou", data, ruleengine.rate("huzhou", data))
        other.dispose()
        import psycopg

        with psycopg.connect(ledger_url, autocommit=True) as c:
            c.execute("SET default_transaction_read_only = off")
            c.execute(f"ALTER DATABASE {db} RESET default_transaction_read_only")
    else:
        os.chmod(ledger_url, 0o444)
        # root ignores file modes: the CLI runs without the capability that lets it (setpriv)
        cmd = [sys.executable, "-m", "ruleengine.cli", "rate", "huzhou", str(data), "--ledger", ledger_url]
        if os.geteuid() == 0:
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv: cannot make a file read-only for this process")
            cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, env=CHILD_ENV, timeout=120)
        assert out.returncode == 1, out.stderr
        assert f"error: the ledger {ledger_url} is read-only: nothing was recorded" in out.stderr
        assert "Traceback" not in out.stderr
        os.chmod(ledger_url, 0o644)
    assert [r["run_hash"] for r in led.runs()] == [first["run_hash"]]
    assert led.check().ok and led.replay(1).identical
    led.dispose()


def test_a_full_disk_is_a_clear_error_and_loses_nothing(tmp_path):
    """SQLite's page limit stands in for a full disk (the same SQLITE_FULL error a full disk gives)."""
    from sqlalchemy import event

    small = make_sample(tmp_path / "small.csv", firms=5)
    big = make_sample(tmp_path / "big.csv", firms=2000)
    url = str(tmp_path / "l.db")
    led = open_ledger(url)
    first = led.record("huzhou", small, ruleengine.rate("huzhou", small))
    pages = raw_execute(url, "PRAGMA page_count")[0][0]

    @event.listens_for(led.engine, "connect")
    def _limit(dbapi_conn, _rec):
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 20}")

    with pytest.raises(LedgerError, match=f"the ledger {url}: disk full: nothing was recorded"):
        led.record("huzhou", big, ruleengine.rate("huzhou", big))
    event.remove(led.engine, "connect", _limit)
    assert [r["run_hash"] for r in led.runs()] == [first["run_hash"]]
    assert led.check().ok
    led.dispose()
