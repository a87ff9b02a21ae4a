"""The service's ledger tables (migration 0003) on SQLite and a real PostgreSQL server: upgrade
and downgrade, append-only, consent state (latest row wins, expiry), idempotency rows."""

from __future__ import annotations

import datetime as dt

import ledger_required  # noqa: F401  (skips without the ledger extra)
import pytest
from ledger_pg import raw_execute

from ruleengine.ledger import db, open_ledger

SERVICE_TABLES = {"service_rulebooks", "service_consents", "service_access", "service_idempotency"}


def _tables(url: str) -> set[str]:
    if url.startswith("postgresql"):
        rows = raw_execute(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    else:
        rows = raw_execute(url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    return {r[0] for r in rows}


def test_migration_0003_upgrades_and_downgrades(ledger_url):
    engine = db.create_engine(ledger_url)
    db.upgrade(engine, "0002")
    assert not (SERVICE_TABLES & _tables(ledger_url))
    db.upgrade(engine)
    assert db.current_revision(engine) == db.HEAD == "0006"  # 0004, 0005: the ledger's own; 0006: claims
    assert SERVICE_TABLES <= _tables(ledger_url)
    db.downgrade(engine, "0002")
    assert db.current_revision(engine) == "0002"
    assert not (SERVICE_TABLES & _tables(ledger_url))
    assert {"ledger_runs", "ledger_ratings"} <= _tables(ledger_url)  # the ledger itself untouched
    db.upgrade(engine)
    assert SERVICE_TABLES <= _tables(ledger_url)
    engine.dispose()


def test_consents_latest_row_wins_and_tables_are_append_only(ledger_url):
    from ruleengine.service import store

    led = open_ledger(ledger_url)
    e = led.engine
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()
    assert store.consented(e, "bank-a", ["F1", "F2"]) == set()
    store.consent_event(e, "F1", "bank-a", "grant", future, "firm-1")
    store.consent_event(e, "F2", "bank-a", "grant", past, "firm-2")  # expired already
    store.consent_event(e, "F1", "bank-b", "grant", future, "firm-1")
    assert store.consented(e, "bank-a", ["F1", "F2", "F3"]) == {"F1"}
    store.consent_event(e, "F1", "bank-a", "revoke", None, "firm-1")
    assert store.consented(e, "bank-a", ["F1"]) == set()
    assert store.consented(e, "bank-b", ["F1"]) == {"F1"}
    states = {(s["firm_id"], s["bank"]): (s["action"], s["active"]) for s in store.consent_states(e)}
    assert states == {
        ("F1", "bank-a"): ("revoke", False),
        ("F2", "bank-a"): ("grant", False),
        ("F1", "bank-b"): ("grant", True),
    }
    # one firm (its own fixed-SQL query) answers as the general query does: revoked, expired,
    # granted again (the latest row wins), another bank's grant, a firm with no row
    store.consent_event(e, "F3", "bank-a", "grant", future, "firm-3")
    store.consent_event(e, "F3", "bank-a", "revoke", None, "firm-3")
    store.consent_event(e, "F3", "bank-a", "grant", None, "firm-3")  # no expiry
    for bank in ("bank-a", "bank-b", "bank-c"):
        for firm in ("F1", "F2", "F3", "F4"):
            general = store.consented(e, bank, [firm, "NO-SUCH-FIRM"])  # two firms: the general query
            assert store.consented(e, bank, [firm]) == general, (bank, firm)
    assert store.consented(e, "bank-a", ["F3"]) == {"F3"} and store.consented(e, "bank-a", ["F2"]) == set()
    store.log_access(e, "bank-a-loans", "bank", "bank-a", ["F1"], "explain run 1", False)
    assert [(x["firm_id"], x["allowed"]) for x in store.access_log(e, "F1")] == [("F1", False)]
    store.idem_put(e, "ops", "k1", "sha256:aa", 200, "application/json", b"{}")
    store.idem_put(e, "ops", "k1", "sha256:bb", 200, "application/json", b"[]")  # the first answer stays
    assert store.idem_get(e, "ops", "k1")["request_hash"] == "sha256:aa"
    for sql in (
        "UPDATE service_consents SET action = 'grant'",
        "DELETE FROM service_consents",
        "DELETE FROM service_access",
        "UPDATE service_idempotency SET status = 500",
    ):
        with pytest.raises(Exception, match="append-only"):
            raw_execute(ledger_url, sql)
    led.dispose()


def test_service_key_cli_stores_only_the_hash_and_refuses_bad_keys_in_one_line(tmp_path):
    """`ruleengine service-key`: the key printed once, its SHA-256 alone in the file (mode 0600);
    a second key of the same name, a firm key without its firm, a keys file that cannot be written
    (was an internal error): one `error:` line each, exit code 1, the file unchanged."""
    import hashlib
    import json
    import stat

    from click.testing import CliRunner

    from ruleengine.cli import main

    kf = tmp_path / "keys.json"

    def run(*args: str) -> object:
        return CliRunner().invoke(main, ["service-key", *args])

    made = run(str(kf), "--name", "ops", "--role", "admin")
    assert made.exit_code == 0, made.output
    key = made.output.strip()
    assert key.startswith("re_") and len(key) > 30
    text = kf.read_text()
    assert key not in text
    assert json.loads(text)["keys"] == [
        {"name": "ops", "role": "admin", "sha256": hashlib.sha256(key.encode()).hexdigest()}
    ]
    assert stat.S_IMODE(kf.stat().st_mode) == 0o600
    for args, said in (
        (("--name", "ops", "--role", "admin"), "the key name 'ops' is used already"),
        (("--name", "f1", "--role", "firm"), "a firm key names its 'firm'"),
    ):
        r = run(str(kf), *args)
        assert r.exit_code == 1 and f"error: {kf}: " in r.output and said in r.output, r.output
    assert kf.read_text() == text
    r = run(str(kf / "keys.json"), "--name", "ops", "--role", "admin")  # under a file
    assert r.exit_code == 1, r.output
    assert r.output.strip() == f"error: cannot write the keys file {kf / 'keys.json'}: Not a directory"
