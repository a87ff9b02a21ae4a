"""Recording runs and the hash chain (issue #16), on SQLite and PostgreSQL: what a run stores,
how its hashes are made (recomputed here by hand), corrections, and `check` naming the first
broken link after a row is edited directly in the database."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest
from click.testing import CliRunner
from ledger_pg import bypass, make_sample, raw_execute

import ruleengine
from ruleengine.cli import main
from ruleengine.ledger import LedgerError, open_ledger
from ruleengine.ledger.schema import HEADER_FIELDS


@pytest.fixture
def ledger_with_runs(ledger_url, tmp_path):
    data = make_sample(tmp_path / "firms.csv", firms=15)
    led = open_ledger(ledger_url)
    res = ruleengine.rate("huzhou", data)
    r1 = led.record("huzhou", data, res, who="analyst-a")
    r2 = led.record("huzhou", data, res, who="analyst-b", supersedes=1, reason="re-run after review")
    yield led, data, res, r1, r2
    led.dispose()


def test_a_run_stores_every_rating_with_its_provenance(ledger_with_runs):
    led, data, res, r1, _ = ledger_with_runs
    run = led.run(1)
    assert run["n_ratings"] == len(res) == 30  # 15 firms × 2 years
    assert (run["rulebook_id"], run["rulebook_version"], run["rulebook_hash"]) == ("huzhou", "1.0.0", res.plan.hash)
    assert run["engine_version"] == ruleengine.__version__
    assert run["who"] == "analyst-a" and run["created_at"].endswith("+00:00")
    assert json.loads(run["options"]) == {}  # the API records no options unless given
    rows = led.ratings(1)
    assert [(r["firm_id"], r["year"], r["rating"], r["status"]) for r in rows] == [
        (res["firm_id"][i], int(res["year"][i]), res["rating"][i], res["status"][i]) for i in range(len(res))
    ]
    # the stored input rows are the data's input columns as text; the input hash is their SHA-256
    stored = led.blob(run["input_blob"])
    assert run["input_hash"] == run["input_blob"] == "sha256:" + hashlib.sha256(stored).hexdigest()
    parsed = list(csv.reader(io.StringIO(stored.decode())))
    with open(data, encoding="utf-8") as fh:
        original = list(csv.DictReader(fh))
    # huzhou's inputs that the file has, in the rulebook's order; other columns (firm_name) left out
    assert parsed[0] == [n for n in res.plan.inputs if n in original[0]]
    assert "firm_name" not in parsed[0] and parsed[0][:2] == ["firm_id", "year"]
    assert len(parsed) == 31 and [r[0] for r in parsed[1:]] == [r["firm_id"] for r in original]
    assert parsed[1][1] == original[0]["year"]


def test_hashes_recomputed_by_hand(ledger_with_runs):
    led, _data, _res, r1, r2 = ledger_with_runs
    run1 = led.run(1)
    stored = led.blob(run1["input_blob"])
    rows = list(csv.reader(io.StringIO(stored.decode())))[1:]
    ratings = led.ratings(1)
    # leaf of rating #0 = SHA-256("0␞firm␞year␞rating␞status␞" + SHA-256(row 0's values joined by U+001F))
    r0 = ratings[0]
    input_digest = hashlib.sha256("\x1f".join(rows[0]).encode()).digest()
    assert bytes(r0["input_digest"]) == input_digest
    leaf = hashlib.sha256(
        f"0\x1e{r0['firm_id']}\x1e{r0['year']}\x1e{r0['rating']}\x1e{r0['status']}\x1e".encode() + input_digest
    ).digest()
    assert bytes(r0["leaf"]) == leaf
    # ratings_root = SHA-256 of every leaf in row order
    root = hashlib.sha256(b"".join(bytes(r["leaf"]) for r in ratings)).hexdigest()
    assert run1["ratings_root"] == "sha256:" + root
    # run_hash = SHA-256(prev_hash + "\n" + canonical JSON of the header); run 1 follows "genesis"
    header = {k: run1[k] for k in HEADER_FIELDS}
    canon = json.dumps(header, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    assert run1["prev_hash"] == "genesis"
    assert run1["run_hash"] == "sha256:" + hashlib.sha256(b"genesis\n" + canon).hexdigest()
    assert led.run(2)["prev_hash"] == run1["run_hash"]


def test_a_correction_supersedes_with_a_reason(ledger_with_runs, tmp_path):
    led, data, res, _r1, r2 = ledger_with_runs
    assert r2["supersedes"] == 1 and r2["reason"] == "re-run after review"
    assert led.run(1)["superseded_by"] == [2]
    with pytest.raises(LedgerError, match="needs a --reason"):
        led.record("huzhou", data, res, supersedes=1)
    with pytest.raises(LedgerError, match="run 9 \\(to be superseded\\) is not in the ledger"):
        led.record("huzhou", data, res, supersedes=9, reason="x")
    assert [r["id"] for r in led.runs()] == [1, 2]  # the refused corrections left nothing


def test_sm3_chain(ledger_url, tmp_path):
    from ruleengine.ledger.canonical import digest

    # GB/T 32905-2016 appendix A example 1: SM3("abc")
    assert digest(b"abc", "sm3") == "sm3:66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    data = make_sample(tmp_path / "firms.csv", firms=8)
    led = open_ledger(ledger_url)
    run = led.record("huzhou", data, ruleengine.rate("huzhou", data), hash_alg="sm3")
    assert run["hash_alg"] == "sm3" and run["run_hash"].startswith("sm3:")
    assert run["input_hash"] == digest(led.blob(run["input_blob"]), "sm3")
    assert led.check().ok
    assert led.replay(1).identical
    led.dispose()


def _check_cli(url: str) -> tuple[int, str]:
    out = CliRunner().invoke(main, ["ledger", "--ledger", url, "check"])
    return out.exit_code, out.output


def test_check_passes_on_an_intact_ledger(ledger_with_runs, ledger_url):
    code, text = _check_cli(ledger_url)
    assert code == 0, text
    assert "ledger intact: 2 runs, 60 ratings, 5 blobs; every link holds" in text


def test_an_edited_rating_is_named(ledger_with_runs, ledger_url):
    led = ledger_with_runs[0]
    r7 = led.ratings(2)[7]
    new = "1" if r7["rating"] != "1" else "2"
    bypass(ledger_url, f"UPDATE ledger_ratings SET rating = '{new}' WHERE run_id = 2 AND seq = 7")
    code, text = _check_cli(ledger_url)
    assert code == 1
    assert (
        f"first broken link: run 2: rating #7 (firm {r7['firm_id']}, year {r7['year']}, rating '{new}') "
        "does not hash to its leaf (the row was edited)"
    ) in text


def test_an_edited_rating_with_its_leaf_recomputed_breaks_the_root(ledger_with_runs, ledger_url):
    led = ledger_with_runs[0]
    r3 = led.ratings(1)[3]
    new = "1" if r3["rating"] != "1" else "2"
    leaf = hashlib.sha256(
        f"3\x1e{r3['firm_id']}\x1e{r3['year']}\x1e{new}\x1e{r3['status']}\x1e".encode() + bytes(r3["input_digest"])
    ).digest()
    hexleaf = leaf.hex()
    value = f"X'{hexleaf}'" if not ledger_url.startswith("postgresql") else f"'\\x{hexleaf}'::bytea"
    bypass(ledger_url, f"UPDATE ledger_ratings SET rating = '{new}', leaf = {value} WHERE run_id = 1 AND seq = 3")
    rep = led.check()
    assert rep.first == "run 1: its ratings do not hash to the header's ratings_root (rows changed or re-hashed)"


def test_an_edited_run_header_is_named(ledger_with_runs, ledger_url):
    bypass(ledger_url, "UPDATE ledger_runs SET who = 'mallory' WHERE id = 1")
    code, text = _check_cli(ledger_url)
    assert code == 1
    assert "first broken link: run 1: header does not hash to its run_hash (a run field was edited)" in text


def test_a_deleted_rating_and_a_deleted_run_are_named(ledger_with_runs, ledger_url):
    led = ledger_with_runs[0]
    bypass(ledger_url, "DELETE FROM ledger_ratings WHERE run_id = 2 AND seq = 4")
    assert led.check().first == "run 2: rating #4 is missing (next is #5)"
    bypass(ledger_url, "DELETE FROM ledger_ratings WHERE run_id = 1; DELETE FROM ledger_runs WHERE id = 1")
    rep = led.check()
    assert rep.first == "run 2: run 1 is missing from the chain (after run 0)"
    assert "run 2: prev_hash" in rep.problems[1]


def test_an_edited_blob_is_named(ledger_with_runs, ledger_url):
    led = ledger_with_runs[0]
    d = led.run(1)["benchmarks_blob"]
    new = f"data || {_bytes(ledger_url, '20')}"
    if not ledger_url.startswith("postgresql"):
        new = f"CAST({new} AS BLOB)"  # SQLite's || makes text
    bypass(ledger_url, f"UPDATE ledger_blobs SET data = {new} WHERE digest = '{d}'")
    rep = led.check()
    assert rep.problems == [f"blob {d} (benchmarks): its bytes do not hash to its digest (edited)"]


def _bytes(url: str, hexs: str) -> str:
    return f"'\\x{hexs}'::bytea" if url.startswith("postgresql") else f"X'{hexs}'"


def test_ratings_are_read_back_in_order_without_their_run(ledger_with_runs, ledger_url):
    led = ledger_with_runs[0]
    assert raw_execute(ledger_url, "SELECT COUNT(*) FROM ledger_ratings")[0][0] == 60
    with pytest.raises(LedgerError, match="no run 5 in the ledger \\(runs: 1–2\\)"):
        led.run(5)
