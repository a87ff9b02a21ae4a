"""Ledger schema and migrations (issue #16) on SQLite and a real PostgreSQL server: upgrade and
downgrade, append-only enforced by the database, content-addressed blobs."""

from __future__ import annotations

import ledger_required  # noqa: F401  (skips without the ledger extra)
import pytest
from ledger_pg import make_sample, raw_execute

import ruleengine
from ruleengine.ledger import LedgerError, db, open_ledger


def _tables(url: str) -> set[str]:
    if url.startswith("postgresql"):
        rows = raw_execute(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    else:
        rows = raw_execute(url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    return {r[0] for r in rows}


def _triggers(url: str) -> set[str]:
    if url.startswith("postgresql"):
        rows = raw_execute(url, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
    else:
        rows = raw_execute(url, "SELECT name FROM sqlite_master WHERE type = 'trigger'")
    return {r[0] for r in rows}


def test_migrations_upgrade_and_downgrade(ledger_url):
    engine = db.create_engine(ledger_url)
    assert db.current_revision(engine) is None
    db.upgrade(engine, "0001")
    assert db.current_revision(engine) == "0001"
    assert {"ledger_blobs", "ledger_runs", "ledger_ratings", "ledger_blocks", "ledger_alembic_version"} <= _tables(
        ledger_url
    )
    assert _triggers(ledger_url) == set()
    db.upgrade(engine, "0002")
    assert db.current_revision(engine) == "0002"
    # SQLite: one trigger per table and statement (4 tables × UPDATE/DELETE); PostgreSQL: a row
    # trigger (UPDATE OR DELETE) and a TRUNCATE trigger per table
    assert len(_triggers(ledger_url)) == 8
    db.upgrade(engine)
    # 0003: the service tables; 0004: ledger_runs.format; 0005: SQLite's firm index table; 0006: the service's idempotency claims
    assert db.current_revision(engine) == "0006" == db.HEAD
    db.downgrade(engine, "0001")
    assert _triggers(ledger_url) == set()
    db.downgrade(engine, "base")
    assert db.current_revision(engine) is None
    assert not ({"ledger_blobs", "ledger_runs", "ledger_ratings", "ledger_blocks"} & _tables(ledger_url))
    db.upgrade(engine)  # and up again from nothing
    assert db.current_revision(engine) == db.HEAD
    engine.dispose()


def test_migrations_ship_inside_the_package_and_need_no_ini(ledger_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no alembic.ini anywhere near
    led = open_ledger(ledger_url)
    assert db.current_revision(led.engine) == db.HEAD
    assert not (tmp_path / "alembic.ini").exists()
    led.dispose()


@pytest.fixture
def one_run(ledger_url, tmp_path):
    data = make_sample(tmp_path / "firms.csv", firms=12)
    led = open_ledger(ledger_url)
    res = ruleengine.rate("huzhou", data)
    run = led.record("huzhou", data, res)
    yield led, run, res
    led.dispose()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE ledger_ratings SET rating = '1'",
        "DELETE FROM ledger_ratings",
        "UPDATE ledger_runs SET who = 'mallory'",
        "DELETE FROM ledger_runs",
        "UPDATE ledger_blobs SET kind = 'x'",
        "DELETE FROM ledger_blobs",
        "UPDATE ledger_blocks SET hash = 'x'",
        "DELETE FROM ledger_blocks",
    ],
)
def test_the_database_refuses_update_and_delete(one_run, ledger_url, sql):
    led, _run, _res = one_run
    with pytest.raises(Exception, match="append-only"):
        raw_execute(ledger_url, sql)
    assert led.check().ok
    assert len(led.ratings(1)) == 24


def test_postgresql_refuses_truncate(one_run, ledger_url):
    if not ledger_url.startswith("postgresql"):
        pytest.skip("TRUNCATE is PostgreSQL's")
    with pytest.raises(Exception, match="append-only: TRUNCATE"):
        raw_execute(ledger_url, "TRUNCATE ledger_ratings")


def test_the_api_has_no_update_or_delete():
    from ruleengine.ledger import Ledger

    verbs = {n for n in dir(Ledger) if not n.startswith("_")}
    assert verbs == {"record", "runs", "run", "ratings", "blob", "history", "check", "replay", "dispose"}


def test_blobs_are_content_addressed_and_stored_once(one_run, ledger_url, tmp_path):
    led, run, res = one_run
    kinds = dict(raw_execute(ledger_url, "SELECT kind, COUNT(*) FROM ledger_blobs GROUP BY kind"))
    # huzhou.yaml + lib/accounting.yaml; its manifest; the input rows; the benchmark tables
    assert kinds == {"rulebook-file": 2, "rulebook-manifest": 1, "input-rows": 1, "benchmarks": 1}
    led.record("huzhou", tmp_path / "firms.csv", res)  # the same everything again: no new blob
    kinds2 = dict(raw_execute(ledger_url, "SELECT kind, COUNT(*) FROM ledger_blobs GROUP BY kind"))
    assert kinds2 == kinds
    other = make_sample(tmp_path / "other.csv", firms=12, seed=5)
    led.record("huzhou", other, ruleengine.rate("huzhou", other))  # new rows and tables, same rulebook
    kinds3 = dict(raw_execute(ledger_url, "SELECT kind, COUNT(*) FROM ledger_blobs GROUP BY kind"))
    assert kinds3 == {"rulebook-file": 2, "rulebook-manifest": 1, "input-rows": 2, "benchmarks": 2}
    # every blob is the hash of its own (uncompressed) bytes
    import hashlib

    for (digest,) in raw_execute(ledger_url, "SELECT digest FROM ledger_blobs"):
        assert digest == "sha256:" + hashlib.sha256(led.blob(digest)).hexdigest()
    # the rulebook bytes are the files on disk
    from ruleengine.rulebook.source import bundled_dir

    manifest = __import__("json").loads(led.blob(run["rulebook_manifest"]))
    assert manifest["main"] == "huzhou.yaml"
    assert led.blob(manifest["files"]["huzhou.yaml"]) == (bundled_dir() / "huzhou.yaml").read_bytes()
    assert (
        led.blob(manifest["files"]["lib/accounting.yaml"]) == (bundled_dir() / "lib" / "accounting.yaml").read_bytes()
    )


def test_an_unsupported_url_is_a_clear_error():
    with pytest.raises(LedgerError, match="unsupported ledger URL 'mysql://u:\\*\\*\\*@h/db'"):
        open_ledger("mysql://u:secret@h/db")


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(LedgerError, match="folder .*nope does not exist"):
        open_ledger(tmp_path / "nope" / "l.db")


def test_migration_0004_round_trip_keeps_runs_and_refuses_to_drop_format_2(ledger_url, tmp_path, monkeypatch):
    """Down to 0003 and up again with a (format-1) run stored: its ratings are copied through the
    SQLite table rebuilds (rowid table ↔ WITHOUT ROWID) unchanged and the chain still holds.
    Downgrading below 0004 is refused once a format-2 run exists (older code could not verify it)."""
    from ruleengine.ledger import canonical as C

    data = make_sample(tmp_path / "firms.csv", firms=5)
    res = ruleengine.rate("huzhou", data)
    led = open_ledger(ledger_url)
    monkeypatch.setattr(C, "FORMAT", 1)
    led.record("huzhou", data, res)
    monkeypatch.undo()
    before = raw_execute(ledger_url, "SELECT * FROM ledger_ratings ORDER BY run_id, seq")
    assert len(before) == 10
    db.downgrade(led.engine, "0003")
    assert db.current_revision(led.engine) == "0003"
    assert raw_execute(ledger_url, "SELECT * FROM ledger_ratings ORDER BY run_id, seq") == before
    if "postgresql" not in ledger_url:  # back to a rowid table, its triggers in place
        sql = raw_execute(ledger_url, "SELECT sql FROM sqlite_master WHERE name = 'ledger_ratings'")[0][0]
        assert "WITHOUT ROWID" not in sql
        assert (
            len({t for t in _triggers(ledger_url) if t.startswith("ledger_")}) == 8
        )  # the service adds its own at 0003
    db.upgrade(led.engine)
    assert raw_execute(ledger_url, "SELECT * FROM ledger_ratings ORDER BY run_id, seq") == before
    if "postgresql" not in ledger_url:
        sql = raw_execute(ledger_url, "SELECT sql FROM sqlite_master WHERE name = 'ledger_ratings'")[0][0]
        assert "WITHOUT ROWID" in sql
        assert len({t for t in _triggers(ledger_url) if t.startswith("ledger_")}) == 10  # + ledger_firm_index
    with pytest.raises(Exception, match="append-only"):
        raw_execute(ledger_url, "DELETE FROM ledger_ratings")
    assert led.check().ok and led.run(1)["format"] == 1
    assert led.replay(1).identical
    run = led.record("huzhou", data, res)
    assert run["format"] == 2
    with pytest.raises(LedgerError, match="cannot downgrade the ledger below 0004: 1 run"):
        db.downgrade(led.engine, "0003")
    assert db.current_revision(led.engine) == db.HEAD and led.check().ok  # nothing was downgraded
    led.dispose()


def test_migration_0005_moves_the_firm_index_into_its_own_table_and_back(ledger_url, tmp_path):
    """SQLite: down to 0004 the secondary index on ledger_ratings(firm_id, year) comes back and
    ledger_firm_index goes; up again, the table is filled from the ratings, history reads it and
    check holds. PostgreSQL: 0005 changes nothing (the B-tree index stays)."""
    data = make_sample(tmp_path / "firms.csv", firms=4)
    res = ruleengine.rate("huzhou", data)
    led = open_ledger(ledger_url)
    led.record("huzhou", data, res)
    led.record("huzhou", data, res)
    firm = res["firm_id"][3]
    want = [(2022, 1), (2022, 2), (2023, 1), (2023, 2)]
    assert [(h["year"], h["run_id"]) for h in led.history(firm)] == want
    sqlite = "postgresql" not in ledger_url
    index_rows = "SELECT firm_id, run_id, seq FROM ledger_firm_index ORDER BY firm_id, run_id, seq"
    rating_rows = "SELECT firm_id, run_id, seq FROM ledger_ratings"
    if sqlite:
        assert raw_execute(ledger_url, index_rows) == sorted(raw_execute(ledger_url, rating_rows))
        assert len(raw_execute(ledger_url, index_rows)) == 16
    db.downgrade(led.engine, "0004")
    assert "ledger_firm_index" not in _tables(ledger_url)
    ix = (
        "SELECT name FROM sqlite_master WHERE name = 'ix_ledger_ratings_firm'"
        if sqlite
        else "SELECT indexname FROM pg_indexes WHERE indexname = 'ix_ledger_ratings_firm'"
    )
    assert raw_execute(ledger_url, ix) == [("ix_ledger_ratings_firm",)]
    db.upgrade(led.engine)
    assert raw_execute(ledger_url, ix) == ([] if sqlite else [("ix_ledger_ratings_firm",)])
    if sqlite:
        assert raw_execute(ledger_url, index_rows) == sorted(raw_execute(ledger_url, rating_rows))
        with pytest.raises(Exception, match="append-only"):
            raw_execute(ledger_url, "DELETE FROM ledger_firm_index")
    assert [(h["year"], h["run_id"]) for h in led.history(firm)] == want
    assert [r["seq"] for r in led.ratings(2, firm)] == [i for i, f in enumerate(res["firm_id"]) if f == firm]
    assert led.check().ok
    led.dispose()


def _open_at(args):
    import time

    url, start = args
    while time.time() < start:  # every process opens the new ledger at the same moment
        pass
    try:
        open_ledger(url).dispose()
        return "ok"
    except LedgerError as exc:
        return str(exc)


def test_processes_opening_a_new_ledger_at_once_migrate_it_one_after_the_other(tmp_path):
    """`serve --processes N` workers (or two CLI runs) opening a ledger that does not exist yet:
    the migration holds the write lock, so the others wait and find it done. Before session 5 one
    of them failed with 'database is locked' (SQLite refuses, without waiting, to upgrade a read
    transaction to a write while another writer holds the lock)."""
    import concurrent.futures
    import multiprocessing
    import time

    for attempt in range(3):
        url = str(tmp_path / f"new-{attempt}.db")
        start = time.time() + 2.0
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(4, mp_context=ctx) as pool:
            got = list(pool.map(_open_at, [(url, start)] * 4))
        assert got == ["ok"] * 4, got
        engine = db.create_engine(url)
        assert db.current_revision(engine) == db.HEAD
        engine.dispose()
