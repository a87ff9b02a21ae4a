"""Recording runs and the hash chain (issue #16), on SQLite and PostgreSQL: what a run stores,
how its hashes are made (recomputed here by hand), corrections, and `check` naming the first
broken link after a row is edited directly in the database."""

from __future__ import annotations

import csv
import hashlib
import json
import struct

import ledger_required  # noqa: F401  (skips without the ledger extra)
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
    assert (run["rulebook_id"], run["rulebook_version"], run["rulebook_hash"]) == (
        "huzhou",
        res.plan.version,
        res.plan.hash,
    )
    assert run["engine_version"] == ruleengine.__version__
    assert run["who"] == "analyst-a" and run["created_at"].endswith("+00:00")
    assert json.loads(run["options"]) == {}  # the API records no options unless given
    rows = led.ratings(1)
    assert [(r["firm_id"], r["year"], r["rating"], r["status"]) for r in rows] == [
        (res["firm_id"][i], int(res["year"][i]), res["rating"][i], res["status"][i]) for i in range(len(res))
    ]
    # the stored input rows are the data's input columns (a tiny run's: an Arrow IPC stream, as
    # Parquet for replay); the input hash covers their values
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ruleengine.ledger import canonical as C

    stored = pq.read_table(pa.BufferReader(C.stored_parquet(led.blob(run["input_blob"]))))
    assert run["input_blob"] == "sha256:" + hashlib.sha256(led.blob(run["input_blob"])).hexdigest()
    with open(data, encoding="utf-8") as fh:
        original = list(csv.DictReader(fh))
    # huzhou's inputs that the file has, in the rulebook's order, then the file's own row numbers
    # (a CSV's lines: the header is line 1); other columns (firm_name) left out
    assert stored.column_names == [*(n for n in res.plan.inputs if n in original[0]), "__row_number__"]
    assert stored.column("__row_number__").to_pylist() == list(range(2, len(original) + 2))
    assert "firm_name" not in stored.column_names and stored.column_names[:2] == ["firm_id", "year"]
    assert stored.column("firm_id").to_pylist() == [r["firm_id"] for r in original]
    assert stored.column("electricity_mwh").to_pylist() == [float(r["electricity_mwh"]) for r in original]


def _canon_int(values):
    # type, validity bits (all present), little-endian int64 values
    bits = bytes([0xFF] * (len(values) // 8) + ([(0xFF << (8 - len(values) % 8)) & 0xFF] if len(values) % 8 else []))
    return b"int64\x00" + bits + b"".join(struct.pack("<q", v) for v in values)


def _canon_text(values):
    bits = bytes([0xFF] * (len(values) // 8) + ([(0xFF << (8 - len(values) % 8)) & 0xFF] if len(values) % 8 else []))
    raw = [v.encode() for v in values]
    return b"string\x00" + bits + b"".join(struct.pack("<q", len(r)) for r in raw) + b"".join(raw)


def test_hashes_recomputed_by_hand(ledger_with_runs, ledger_url):
    led, _data, _res, r1, r2 = ledger_with_runs
    run1 = led.run(1)
    ratings = led.ratings(1)
    assert len(ratings) == 30  # one block (4096 rows a block)
    # the block hash: SHA-256 of "ruleengine-ratings-v1\n0\n" then, per column, its name, type,
    # validity bits and values (numbers little-endian int64; text lengths then UTF-8)
    body = b"ruleengine-ratings-v1\n0\n"
    body += b"seq\x00" + _canon_int([r["seq"] for r in ratings])
    body += b"firm_id\x00" + _canon_text([r["firm_id"] for r in ratings])
    body += b"year\x00" + _canon_int([r["year"] for r in ratings])
    body += b"rating\x00" + _canon_text([r["rating"] for r in ratings])
    body += b"status\x00" + _canon_text([r["status"] for r in ratings])
    body += b"input_fp\x00" + _canon_int([r["input_fp"] for r in ratings])
    block = hashlib.sha256(body).digest()
    stored = raw_execute(ledger_url, "SELECT block, first_seq, n_rows, hash FROM ledger_blocks WHERE run_id = 1")
    assert [tuple(x) for x in stored] == [(0, 0, 30, "sha256:" + block.hex())]
    # ratings_root = SHA-256 of the block hashes in order
    assert run1["ratings_root"] == "sha256:" + hashlib.sha256(block).hexdigest()
    # run_hash = SHA-256(prev_hash + "\n" + canonical JSON of the header); run 1 follows "genesis"
    header = {k: run1[k] for k in HEADER_FIELDS}
    header["format"] = 2  # the canonical form, hashed from format 2 on
    assert run1["format"] == 2
    canon = json.dumps(header, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    assert run1["prev_hash"] == "genesis"
    assert run1["run_hash"] == "sha256:" + hashlib.sha256(b"genesis\n" + canon).hexdigest()
    assert led.run(2)["prev_hash"] == run1["run_hash"]
    # the same firm-year rated from the same input row has the same input fingerprint in both runs
    assert [r["input_fp"] for r in ratings] == [r["input_fp"] for r in led.ratings(2)]
    assert len({r["input_fp"] for r in ratings}) == 30


def test_a_correction_supersedes_with_a_reason(ledger_with_runs, tmp_path):
    led, data, res, _r1, r2 = ledger_with_runs
    assert r2["supersedes"] == 1 and r2["reason"] == "re-run after review"
    assert led.run(1)["superseded_by"] == [2]
    with pytest.raises(LedgerError, match="needs --reason TEXT: why run 1 is corrected"):
        led.record("huzhou", data, res, supersedes=1)
    with pytest.raises(LedgerError, match="run 9 \\(to be superseded\\) is not in the ledger"):
        led.record("huzhou", data, res, supersedes=9, reason="x")
    assert [r["id"] for r in led.runs()] == [1, 2]  # the refused corrections left nothing


def test_a_run_is_superseded_once(ledger_with_runs, ledger_url, tmp_path):
    """A second correction of a run already corrected is refused, naming the run that corrected it
    (it landed: two runs claimed to correct run 1). The check is made in the append's transaction,
    under the write lock: it sees a correction earlier in the same batch, and two corrections
    racing each other cannot both land."""
    import threading

    from ruleengine.ledger import record as R

    led, data, res, _r1, _r2 = ledger_with_runs
    msg = "run 1 was already superseded by run 2: a run is corrected once; to correct it again, supersede run 2"
    with pytest.raises(LedgerError) as exc:
        led.record("huzhou", data, res, supersedes=1, reason="again")
    assert str(exc.value) == msg
    out = CliRunner().invoke(
        main, ["rate", "huzhou", str(data), "--ledger", ledger_url, "--supersedes", "1", "--reason", "again"]
    )
    assert out.exit_code == 1 and f"error: {msg}\n" in out.output, out.output
    assert [r["id"] for r in led.runs()] == [1, 2]
    # two corrections of run 2 in one batch: the second sees the first (same transaction); none land
    batch = [R.prepare("huzhou", res.plan, data, res, supersedes=2, reason=f"fix {i}") for i in (1, 2)]
    with pytest.raises(LedgerError) as exc:
        R.append_many(led.engine, batch)
    assert str(exc.value) == (
        "run 2 was already superseded by run 3: a run is corrected once; to correct it again, supersede run 3"
    )
    assert [r["id"] for r in led.runs()] == [1, 2]
    # two writers racing to correct run 2, each with its own engine: exactly one lands
    racers = [R.prepare("huzhou", res.plan, data, res, supersedes=2, reason=f"race {i}") for i in (1, 2)]
    engines = [open_ledger(ledger_url).engine for _ in racers]
    start = threading.Barrier(len(racers))
    outcome: list[object] = [None, None]

    def race(i: int) -> None:
        start.wait()
        try:
            outcome[i] = R.append(engines[i], racers[i])["id"]
        except LedgerError as e:
            outcome[i] = str(e)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(racers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(outcome, key=str) == [
        3,
        "run 2 was already superseded by run 3: a run is corrected once; to correct it again, supersede run 3",
    ]
    assert [(r["id"], r["supersedes"]) for r in led.runs()] == [(1, None), (2, 1), (3, 2)]
    rep = led.check()
    assert rep.ok, rep.problems
    for e in engines:
        e.dispose()


def test_sm3_chain(ledger_url, tmp_path):
    from ruleengine.ledger.canonical import digest

    # GB/T 32905-2016 appendix A example 1: SM3("abc")
    assert digest(b"abc", "sm3") == "sm3:66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    data = make_sample(tmp_path / "firms.csv", firms=8)
    led = open_ledger(ledger_url)
    run = led.record("huzhou", data, ruleengine.rate("huzhou", data), hash_alg="sm3")
    assert run["hash_alg"] == "sm3" and run["run_hash"].startswith("sm3:")
    assert run["input_blob"] == digest(led.blob(run["input_blob"]), "sm3")
    assert run["input_hash"].startswith("sm3:") and run["input_hash"] != run["input_blob"]
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
        "does not match its fingerprint (the row was edited)"
    ) in text


def test_an_edited_firm_index_is_reported(ledger_with_runs, ledger_url):
    """SQLite keeps the firm index in its own table (migration 0005): derived data, but check
    compares it with the ratings both ways, so an edit that would mislead `history` is found."""
    if "postgresql" in ledger_url:  # no such table: a B-tree index on ledger_ratings(firm_id, year)
        assert raw_execute(ledger_url, "SELECT to_regclass('ledger_firm_index')") == [(None,)]
        return
    led = ledger_with_runs[0]
    r5 = led.ratings(1)[5]
    bypass(ledger_url, "UPDATE ledger_firm_index SET firm_id = 'X' WHERE run_id = 1 AND seq = 5")
    code, text = _check_cli(ledger_url)
    assert code == 1
    assert (
        f"first broken link: firm index: rating #5 of run 1 (firm {r5['firm_id']}) has no ledger_firm_index row"
    ) in text
    assert "firm index: ledger_firm_index row (firm X, run 1, #5) matches no rating (the index was edited)" in text


def test_an_edited_rating_with_its_fingerprint_forged_breaks_the_block(ledger_with_runs, ledger_url):
    """The fingerprint is not cryptographic: forge it, and the SHA-256 block hash still objects."""
    from ruleengine.ledger.chain import _columns
    from ruleengine.ledger.record import row_fingerprints

    led = ledger_with_runs[0]
    rows = led.ratings(1)
    new = "1" if rows[3]["rating"] != "1" else "2"
    rows[3]["rating"] = new
    cols = _columns([(r["seq"], r["firm_id"], r["year"], r["rating"], r["status"], r["input_fp"]) for r in rows])
    forged = row_fingerprints(cols).tolist()[3]
    bypass(ledger_url, f"UPDATE ledger_ratings SET rating = '{new}', fp = {forged} WHERE run_id = 1 AND seq = 3")
    rep = led.check()
    assert rep.first == (
        "run 1: ratings #0–#29 (block 0) do not hash to their block hash (rows or hashes were changed)"
    )


def test_an_edited_run_header_is_named(ledger_with_runs, ledger_url):
    bypass(ledger_url, "UPDATE ledger_runs SET who = 'mallory' WHERE id = 1")
    code, text = _check_cli(ledger_url)
    assert code == 1
    assert "first broken link: run 1: header does not hash to its run_hash (a run field was edited)" in text


def test_a_deleted_rating_and_a_deleted_run_are_named(ledger_with_runs, ledger_url):
    led = ledger_with_runs[0]
    bypass(ledger_url, "DELETE FROM ledger_ratings WHERE run_id = 2 AND seq = 4")
    assert led.check().first == "run 2: rating #4 is missing"
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


def test_an_edited_rulebook_manifest_is_named_not_a_crash(ledger_with_runs, ledger_url):
    """The manifest blob (the rulebook's file list) replaced by bytes that are not JSON: `check`
    parsed it after finding it edited and stopped with an internal error; it now names it."""
    led = ledger_with_runs[0]
    d = led.run(1)["rulebook_manifest"]
    bypass(ledger_url, f"UPDATE ledger_blobs SET data = {_bytes(ledger_url, '00')} WHERE digest = '{d}'")
    rep = led.check()
    assert rep.problems == [f"blob {d} (rulebook-manifest): its bytes do not hash to its digest (edited)"]
    r = CliRunner().invoke(main, ["ledger", "-l", ledger_url, "check"])
    assert r.exit_code == 1 and f"blob {d} (rulebook-manifest)" in r.output and "internal error" not in r.output


def _bytes(url: str, hexs: str) -> str:
    return f"'\\x{hexs}'::bytea" if url.startswith("postgresql") else f"X'{hexs}'"


def test_ratings_are_read_back_in_order_without_their_run(ledger_with_runs, ledger_url):
    led = ledger_with_runs[0]
    assert raw_execute(ledger_url, "SELECT COUNT(*) FROM ledger_ratings")[0][0] == 60
    with pytest.raises(LedgerError, match="no run 5 in the ledger \\(runs: 1–2\\)"):
        led.run(5)


def _bits(valid):
    out = bytearray((len(valid) + 7) // 8)
    for i, v in enumerate(valid):
        if v:
            out[i // 8] |= 0x80 >> (i % 8)
    return bytes(out)


def test_results_digest_format_2_recomputed_by_hand(tmp_path):
    """Format 2: per column its name, then a text column's distinct values sorted by UTF-8 bytes and
    each row's int32 index into them, a number column's validity bits and little-endian values."""
    from ruleengine.ledger import canonical as C

    data = make_sample(tmp_path / "firms.csv", firms=6)
    res = ruleengine.rate("huzhou", data)
    schema = res.to_arrow().schema
    body = b"ruleengine-results-v2\n%d\n" % len(res)
    for name in res.names:
        values = [res.row(i)[name] for i in range(len(res))]
        body += name.encode() + b"\x00"
        kind = str(schema.field(name).type)
        if kind == "string":
            distinct = sorted(set(values), key=lambda v: v.encode())
            body += b"dict\x00" + _canon_text(distinct) + b"".join(struct.pack("<i", distinct.index(v)) for v in values)
        elif kind == "double":
            present = [v is not None and v == v for v in values]
            body += b"double\x00" + _bits(present)
            body += b"".join(struct.pack("<d", v if ok else 0.0) for v, ok in zip(values, present, strict=True))
        else:
            assert kind == "int64", (name, kind)
            body += _canon_int([int(v) for v in values])
    assert C.results_digest(res, "sha256", 2) == "sha256:" + hashlib.sha256(body).hexdigest()


def test_results_digest_does_not_depend_on_how_text_is_held(tmp_path):
    """The same values held as codes into labels in another order, with a repeated and an unused
    label, or as plain strings, give the same format-2 digest."""
    import numpy as np

    from ruleengine.engine.results import Columns, Results
    from ruleengine.ledger import canonical as C

    plan = ruleengine.load("huzhou")
    a, b, c = Columns(), Columns(), Columns()
    a["year"] = b["year"] = c["year"] = np.array([2022.0, np.nan, 2023.0])
    a.set_encoded("rating", np.array([0, 1, -1]), ["2", "1"])
    b.set_encoded("rating", np.array([2, 0, 3]), ["1", "unused", "2", ""])
    c["rating"] = np.array(["2", "1", ""], dtype=object)
    digests = {C.results_digest(Results(x, plan)) for x in (a, b, c)}
    assert len(digests) == 1
    c["rating"] = np.array(["2", "1", "3"], dtype=object)
    assert C.results_digest(Results(c, plan)) not in digests


def test_format_1_runs_still_check_and_replay(ledger_url, tmp_path, monkeypatch):
    """Runs recorded before canonical form 2 (results hashed as an Arrow IPC stream, header hashed
    without `format`) keep verifying next to format-2 runs."""
    from ruleengine.ledger import canonical as C

    data = make_sample(tmp_path / "firms.csv", firms=8)
    res = ruleengine.rate("huzhou", data)
    led = open_ledger(ledger_url)
    with monkeypatch.context() as m:
        m.setattr(C, "FORMAT", 1)
        old = led.record("huzhou", data, res)
    new = led.record("huzhou", data, res)
    assert (old["format"], new["format"]) == (1, 2)
    assert old["results_hash"] == C.results_digest(res, "sha256", 1) != new["results_hash"]
    header = {k: old[k] for k in HEADER_FIELDS}  # no `format` in a format-1 header
    canon = json.dumps(header, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    assert old["run_hash"] == "sha256:" + hashlib.sha256(b"genesis\n" + canon).hexdigest()
    assert led.check().ok, led.check().problems
    assert led.replay(1).identical and led.replay(2).identical
    led.dispose()


def test_several_small_runs_in_one_transaction(ledger_url, tmp_path):
    """record.append_many: one-firm runs (as the service records them) chained in one transaction;
    when one of them fails, none of the batch lands."""
    from ruleengine.ledger import record as R

    led = open_ledger(ledger_url)
    runs = []
    for i in range(3):
        data = make_sample(tmp_path / f"one{i}.csv", firms=1, seed=i, years="2023")
        runs.append((data, ruleengine.rate("huzhou", data)))
    led.record("huzhou", *runs[0])  # run 1, alone
    rows = R.append_many(led.engine, [R.prepare("huzhou", res.plan, data, res) for data, res in runs])
    assert [r["id"] for r in rows] == [2, 3, 4]
    assert [r["prev_hash"] for r in rows[1:]] == [r["run_hash"] for r in rows[:-1]]
    assert [r["n_ratings"] for r in rows] == [1, 1, 1]
    firm = runs[2][1]["firm_id"][0]
    rated = [(rid, res) for rid, (_, res) in zip([1, 2, 3, 4], [runs[0], *runs], strict=True)]
    want = [(rid, res["rating"][0]) for rid, res in rated if res["firm_id"][0] == firm]
    assert (4, runs[2][1]["rating"][0]) in want
    assert [(h["run_id"], h["rating"]) for h in led.history(firm)] == want
    bad = [R.prepare("huzhou", res.plan, data, res) for data, res in runs]
    bad[1] = R.prepare("huzhou", runs[1][1].plan, runs[1][0], runs[1][1], supersedes=99, reason="typo")
    with pytest.raises(LedgerError, match="run 99 \\(to be superseded\\) is not in the ledger"):
        R.append_many(led.engine, bad)
    assert [r["id"] for r in led.runs()] == [1, 2, 3, 4]
    rep = led.check()
    assert rep.ok, rep.problems
    assert rep.ratings == 1 + 3
    led.dispose()


def test_a_schema_revision_this_ruleengine_does_not_know_is_refused(ledger_with_runs, ledger_url):
    """A ledger whose version table names a revision this ruleengine has no migration for (a newer
    ruleengine wrote it, or the table was edited): every command was an internal error
    (alembic's "Can't locate revision"); it is refused with an error naming the revision, and the
    ledger is left as it was."""
    from pathlib import Path

    from ruleengine.ledger import db

    versions = Path(db.__file__).parent / "migrations" / "versions"
    assert db.REVISIONS == tuple(sorted(f.name[:4] for f in versions.glob("0*.py"))) and db.HEAD == db.REVISIONS[-1]
    bypass(ledger_url, "UPDATE ledger_alembic_version SET version_num = '9999'")
    for cmd in (["runs"], ["check"]):
        r = CliRunner().invoke(main, ["ledger", "-l", ledger_url, *cmd])
        assert r.exit_code == 1 and "schema revision '9999' is unknown to this ruleengine" in r.output, r.output
    with pytest.raises(LedgerError, match="9999"):
        open_ledger(ledger_url)
