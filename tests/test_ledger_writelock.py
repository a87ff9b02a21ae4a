"""Writers of one SQLite ledger queue on an OS lock (``FILE.writelock``) before SQLite's own.

Found under load (`serve --processes 2`, 200 ratings/s): one process's ledger writer waited
0.5–1.9 s for the write lock while the other committed group after group — SQLite's busy handler
polls in sleeps of up to 100 ms and the busy process took the lock again the moment it freed it.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import time

import pytest

pytest.importorskip("sqlalchemy")

from ruleengine.ledger import db  # noqa: E402


def _table(path: str) -> None:
    engine = db.create_engine(path)
    with db.write_transaction(engine) as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (who TEXT, at REAL)")
    engine.dispose()


def _busy_writer(path: str, seconds: float, ready: object) -> None:
    """Commit back to back for ``seconds``, each transaction holding the lock ~5 ms (a commit group),
    on one kept connection, as the service's ledger writer does."""
    engine = db.writer_engine(path, "normal")
    ready.set()  # type: ignore[attr-defined]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with db.write_transaction(engine) as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES ('busy', ?)", (time.time(),))
            time.sleep(0.005)
    engine.dispose()


def test_a_write_transaction_holds_the_ledgers_writelock(tmp_path):
    path = tmp_path / "ledger.db"
    _table(str(path))
    engine = db.create_engine(str(path))
    other = os.open(f"{path}.writelock", os.O_RDWR | os.O_CREAT)
    try:
        with db.write_transaction(engine):
            with pytest.raises(BlockingIOError):  # another open file (another process's writer) waits
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with the transaction
        fcntl.flock(other, fcntl.LOCK_UN)
        with pytest.raises(RuntimeError), db.write_transaction(engine):  # released on an error too
            raise RuntimeError("boom")
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(other)
        engine.dispose()


def test_a_writer_gets_its_turn_while_another_process_commits_back_to_back(tmp_path):
    """20 short transactions from this process while another commits non-stop for 4 s: each waits
    for at most a few of the other's transactions, not for the other to stop. (Before: SQLite's
    polling busy handler almost never found the lock free — waits of 0.5 s to the whole 4 s.)"""
    path = str(tmp_path / "ledger.db")
    _table(path)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    busy = ctx.Process(target=_busy_writer, args=(path, 4.0, ready))
    busy.start()
    try:
        assert ready.wait(60)
        time.sleep(0.5)  # the other is committing back to back by now
        engine = db.writer_engine(path, "normal")
        waits = []
        for _ in range(20):
            t = time.monotonic()
            with db.write_transaction(engine) as conn:
                waits.append(time.monotonic() - t)
                conn.exec_driver_sql("INSERT INTO t VALUES ('me', ?)", (time.time(),))
        engine.dispose()
        still_busy = busy.is_alive()
    finally:
        busy.join(30)
    assert still_busy, "the other writer stopped before this one finished: it did not get turns while it was busy"
    assert max(waits) < 1.0, [round(w, 3) for w in waits]


def test_a_symlink_in_place_of_the_lock_file_is_not_followed(tmp_path):
    """FILE.writelock planted as a symlink: not followed (nothing made or opened at its target);
    the write still happens, serialised by SQLite's own lock."""
    path = tmp_path / "ledger.db"
    _table(str(path))
    (tmp_path / "ledger.db.writelock").unlink()
    target = tmp_path / "elsewhere"
    (tmp_path / "ledger.db.writelock").symlink_to(target)
    engine = db.create_engine(str(path))
    with db.write_transaction(engine) as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES ('me', 1.0)")
    engine.dispose()
    assert not target.exists()
    engine = db.create_engine(str(path))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
    engine.dispose()
