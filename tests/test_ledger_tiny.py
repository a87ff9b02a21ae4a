"""Tiny runs (one firm, as the HTTP service records them, issue #17): the plain-Python paths of the
canonical bytes and fingerprints give exactly the bytes and hashes of the numpy/Arrow paths (the
ledger's contents do not depend on which path ran), a tiny run verifies and replays, the writer's
pooled connection and WAL mode, and the per-run-constant blobs digested once."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import struct

import ledger_required  # noqa: F401  (skips without the ledger extra)
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ledger_pg import make_sample

import ruleengine
from ruleengine.ledger import canonical as C
from ruleengine.ledger import db, open_ledger
from ruleengine.ledger import fingerprint as F
from ruleengine.ledger import record as R

TEXTS = ["", "A", "é", "中文", "x" * 8, "y" * 9, "z" * 64, "long " * 20, "91330500032441094N", None]
FLOATS = [0.0, -0.0, 1.5, -2.25, 1e300, math.inf, -math.inf, math.nan, None, 3.0]
INTS = [0, 1, -1, 2**62, -(2**63), 2**63 - 1, None, 7]


def _random_array(rnd: random.Random, kind: str) -> pa.Array:
    n = rnd.randrange(1, F.TINY_ROWS + 1)
    if kind == "string":
        pool = TEXTS if rnd.random() < 0.5 else [t for t in TEXTS if t is None or len(t) <= 64]
        return pa.array([rnd.choice(pool) for _ in range(n)], pa.string())
    if kind == "double":
        return pa.array([rnd.choice(FLOATS) for _ in range(n)], pa.float64())
    # big ints without nulls only (with nulls the numpy path goes through float64: the tiny path leaves those to it)
    pool = (
        [i for i in INTS if i is None or abs(i) < 2**53] if rnd.random() < 0.5 else [i for i in INTS if i is not None]
    )
    return pa.array([rnd.choice(pool) for _ in range(n)], pa.int64())


def _vectorised(monkeypatch, fn, *args):
    monkeypatch.setattr(F, "TINY_ROWS", 0)
    monkeypatch.setattr(C, "SMALL_ROWS", 0)
    try:
        return fn(*args)
    finally:
        monkeypatch.undo()


def _bytes(arr) -> bytes:
    return b"".join(bytes(x) for x in F.column_bytes(arr))


@pytest.mark.parametrize("kind", ["string", "double", "int64"])
def test_tiny_column_bytes_and_hashes_equal_the_vectorised_paths(monkeypatch, kind):
    rnd = random.Random(11)
    for _ in range(300):
        arr = _random_array(rnd, kind)
        assert F._column_bytes_tiny(arr) is not None  # the tiny path really runs
        tiny_b, tiny_h = _bytes(arr), F.column_hash(arr)
        vec_b = _vectorised(monkeypatch, _bytes, arr)
        vec_h = _vectorised(monkeypatch, F.column_hash, arr)
        assert tiny_b == vec_b, arr
        assert tiny_h.dtype == vec_h.dtype and tiny_h.tobytes() == vec_h.tobytes(), arr
        sliced = arr.slice(len(arr) // 2)  # an offset into the buffers
        if len(sliced):
            assert _bytes(sliced) == _vectorised(monkeypatch, _bytes, sliced)


def test_tiny_row_fingerprints_equal_the_vectorised_combine(monkeypatch):
    rnd = random.Random(5)
    for _ in range(100):
        n = rnd.randrange(1, 10)
        cols = []
        for kind in ("string", "double", "int64", "string"):
            a = _random_array(rnd, kind)
            cols.append(pa.array((a.to_pylist() * n)[:n], a.type))
        tiny = F.row_hashes(cols, n)
        vec = _vectorised(monkeypatch, F.row_hashes, cols, n)
        assert tiny.dtype == np.int64 and tiny.tolist() == vec.tolist()


def test_hand_checked_tiny_bytes():
    # a string column ['ab', None]: type, validity 10000000, lengths 2 and 0, the UTF-8
    got = _bytes(pa.array(["ab", None]))
    assert got == b"string\x00\x80" + struct.pack("<2q", 2, 0) + b"ab"
    # a double column [1.5, None, -0.0]: validity 10100000, the missing value as 0.0, -0.0 kept
    got = _bytes(pa.array([1.5, None, -0.0]))
    assert got == b"double\x00\xa0" + struct.pack("<3d", 1.5, 0.0, -0.0)
    # an int column with a null and a value past 2**53: left to the numpy path (it goes via float64)
    assert F._column_bytes_tiny(pa.array([2**60, None], pa.int64())) is None


def test_tiny_results_digest_and_input_hash_equal_the_vectorised_ones(monkeypatch, tmp_path):
    data = make_sample(tmp_path / "firms.csv", firms=30)
    plan = ruleengine.load("huzhou")
    full = ruleengine.rate(plan, data)
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(data, convert_options=pacsv.ConvertOptions(column_types={"firm_id": "string"}))
    rows_all = table.to_pylist()
    for rows in (rows_all[:1], rows_all[:2], rows_all[5:8]):
        res = ruleengine.rate(plan, rows, benchmarks=full.tables)
        assert 0 < len(res) <= C.SMALL_ROWS
        tab = C.input_table(plan, rows)
        assert C.results_digest(res) == _vectorised(monkeypatch, C.results_digest, res)
        assert C.input_hash(tab) == _vectorised(monkeypatch, C.input_hash, tab)
        assert C.input_fingerprints(tab).tolist() == _vectorised(monkeypatch, C.input_fingerprints, tab).tolist()
        # the one-pass hash and fingerprints of a tiny table: the same as the two vectorised passes
        for alg in ("sha256", "sm3"):
            one_pass, fps = C.input_digests(tab, alg)
            assert one_pass == _vectorised(monkeypatch, C.input_hash, tab, alg)
            assert (
                fps.dtype == np.int64 and fps.tolist() == _vectorised(monkeypatch, C.input_fingerprints, tab).tolist()
            )


@pytest.mark.parametrize("book", ["huzhou", "quzhou", "shenzhen"])
def test_a_one_row_results_digest_is_the_bytes_of_both_other_paths(monkeypatch, book):
    """canonical._results_bytes_one (a one-firm rating's ~200 columns written in one pass) gives
    the bytes of the few-rows path and of the vectorised path, row by row of messy data: missing
    numbers and texts, unrated rows, reasons and fallbacks, rows outside every peer group."""
    from ruleengine.io.sample import generate

    plan = ruleengine.load(book)
    data = generate(40, [2022, 2023], seed=5, messy=0.3)
    full = ruleengine.rate(plan, data)
    rows = pa.Table.from_pydict({k: list(v) for k, v in data.items()}).to_pylist() if isinstance(data, dict) else data
    seen_missing = seen_text = 0
    for row in rows[:40]:
        res = ruleengine.rate(plan, [row], benchmarks=full.tables)
        one = C._results_bytes_one(res)
        assert one is not None
        small = b"".join(bytes(x) for x in C.results_bytes(res))
        assert b"".join(one) == small
        assert C.results_digest(res) == _vectorised(monkeypatch, C.results_digest, res)
        seen_missing += b"double\x00\x00" in small
        seen_text += b"dict\x00string" in small
    assert seen_missing and seen_text  # the rows exercised missing numbers and texts


def test_a_field_no_row_gives_is_stored_as_the_cast_made_it():
    """A JSON field every row leaves out (None) is a null column: the ledger stores it as text
    that is all missing. The shortcut (``pa.nulls``, no type inference and no cast) must give the
    array, canonical bytes, input hash and stored bytes of ``pc.cast(pa.array([None, ...]), string)``."""
    import pyarrow.compute as pc

    for n in (1, 2, 9):
        cast = pc.cast(pa.array([None] * n), pa.string())
        short = F.plain(pa.array([None] * n))
        assert short.type == pa.string() and short.null_count == n and short.equals(cast)
        assert _bytes(short) == _bytes(cast) == b"string\x00" + bytes((n + 7) // 8) + struct.pack(f"<{n}q", *[0] * n)
    plan = ruleengine.load("huzhou")
    rows = [{"firm_id": "F1", "year": 2023, "industry": "C26", "electricity_mwh": 120.5, "coke_t": None}]
    tab = C.input_table(plan, rows)
    assert tab.column("coke_t").type == pa.string() and tab.column("coke_t").null_count == 1
    # the former way: Arrow infers the null type from the Nones, and plain() casts it to text
    by_cast = pa.table(
        [pc.cast(pa.array([None] * len(c)), pa.string()) if c.null_count == len(c) else c for c in tab.columns],
        names=tab.column_names,
    )
    assert C.input_hash(tab) == C.input_hash(by_cast)
    assert C.stored_bytes(tab) == C.stored_bytes(by_cast)


def test_tiny_rating_columns_equal_the_arrow_path(monkeypatch, tmp_path):
    """rating_columns builds a one-firm run's text columns from the labels in Python; they must be
    the arrays of the Arrow path (codes into labels, a missing code as '')."""
    data = make_sample(tmp_path / "firms.csv", firms=30)
    plan = ruleengine.load("huzhou")
    full = ruleengine.rate(plan, data)
    import pyarrow.csv as pacsv

    rows = pacsv.read_csv(data, convert_options=pacsv.ConvertOptions(column_types={"firm_id": "string"})).to_pylist()
    seen = set()
    for part in (rows[:1], rows[2:4], rows[:12]):
        res = ruleengine.rate(plan, part, benchmarks=full.tables)
        fps = C.input_fingerprints(C.input_table(plan, part))
        tiny = R.rating_columns(res, plan, fps)
        monkeypatch.setattr(F, "TINY_ROWS", 0)
        arrow = R.rating_columns(res, plan, fps)
        monkeypatch.undo()
        assert list(tiny) == list(arrow)
        for name in tiny:
            assert tiny[name].type == arrow[name].type and tiny[name].equals(arrow[name]), name
        seen.update(tiny["status"].to_pylist())
        # the Python values of a tiny run (rating_values): the same arrays, fingerprints and block hash
        values = R.rating_values(res, plan, fps)
        assert values is not None
        rows_ = R.tiny_rating_rows(values, "sha256")
        assert list(rows_.cols) == list(arrow)
        for name in arrow:
            assert rows_.cols[name].type == arrow[name].type and rows_.cols[name].equals(arrow[name]), name
        assert rows_.fps.tolist() == _vectorised(monkeypatch, R.row_fingerprints, arrow).tolist()
        assert rows_.blocks == _vectorised(monkeypatch, R.block_hashes, arrow, "sha256")
        assert R.tiny_rating_rows(values, "sm3").blocks == R.block_hashes(arrow, "sm3")
    assert {"rated", "unrated"} <= seen  # unrated rows too: their rating reads ''


def test_a_one_firm_run_recorded_by_the_fast_path_verifies_and_replays(ledger_url, tmp_path):
    data = make_sample(tmp_path / "firms.csv", firms=30)
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    led = open_ledger(ledger_url)
    full = ruleengine.rate("huzhou", data)
    led.record("huzhou", data, full)
    rows = pacsv.read_csv(data, convert_options=pacsv.ConvertOptions(column_types={"firm_id": "string"})).to_pylist()
    plan = ruleengine.load("huzhou")
    for part in (rows[:1], rows[2:4]):
        res = ruleengine.rate(plan, part, benchmarks=full.tables)
        run = led.record("huzhou", part, res, plan=plan, options={"benchmarks_of_run": 1})
        rep = led.replay(run["id"])
        assert rep.identical, rep.differences
        blob = led.blob(run["input_blob"])
        # records: the canonical input bytes are stored, and their digest is the input hash itself
        assert blob.startswith(C.INPUT_HEAD) and run["input_blob"] == run["input_hash"] == C.digest(blob)
        stored = C.table_from_canonical(blob)
        assert stored.num_rows == len(part) and C.input_hash(stored) == run["input_hash"]
        as_parquet = pq.read_table(pa.BufferReader(C.stored_parquet(blob)))  # what replay rates
        assert as_parquet.equals(stored) and as_parquet.schema == stored.schema
    # a tiny run read from a file: its rows as an Arrow IPC stream (cheap to write)
    one = tmp_path / "one.csv"
    one.write_text("".join(data.read_text().splitlines(keepends=True)[:2]))
    res = ruleengine.rate(plan, one, benchmarks=full.tables)
    run = led.record("huzhou", one, res, plan=plan, options={"benchmarks_of_run": 1})
    blob = led.blob(run["input_blob"])
    assert blob[:4] == C.IPC_STREAM_MAGIC and run["input_blob"] != run["input_hash"]
    stored = pa.ipc.open_stream(blob).read_all()
    assert stored.num_rows == 1 and C.input_hash(stored) == run["input_hash"]
    assert led.replay(run["id"]).identical
    assert led.check().ok
    led.dispose()


def test_tiny_runs_insert_the_rows_the_vectorised_insert_does(tmp_path, monkeypatch):
    """A run of at most SQLITE_ROWS_PER_STATEMENT ratings goes into SQLite as Python values; the
    ratings and firm index rows must be those of the numpy/Arrow insert (several firms, unrated
    rows with no rating, non-ASCII firm ids)."""
    data = make_sample(tmp_path / "firms.csv", firms=30)
    plan = ruleengine.load("huzhou")
    full = ruleengine.rate(plan, data)
    import pyarrow.csv as pacsv

    rows = pacsv.read_csv(data, convert_options=pacsv.ConvertOptions(column_types={"firm_id": "string"})).to_pylist()
    rows[3]["firm_id"] = "企业-3"
    rows[4]["firm_id"] = "Z-9"
    parts = (rows[:1], rows[:12], rows[20:22])
    got = {}
    for way in ("tiny", "vectorised"):
        if way == "vectorised":
            monkeypatch.setattr(R, "SQLITE_ROWS_PER_STATEMENT", 1)  # only 1-row runs stay tiny: none of these
        led = open_ledger(str(tmp_path / f"{way}.db"))
        for part in parts:
            res = ruleengine.rate(plan, part, benchmarks=full.tables)
            led.record("huzhou", part, res, plan=plan, options={"benchmarks_of_run": 0})
        assert led.check().ok
        led.dispose()
        with sqlite3.connect(tmp_path / f"{way}.db") as con:
            got[way] = (
                con.execute("SELECT * FROM ledger_ratings ORDER BY run_id, seq").fetchall(),
                con.execute(
                    "SELECT firm_id, run_id, seq FROM ledger_firm_index ORDER BY firm_id, run_id, seq"
                ).fetchall(),
            )
        monkeypatch.undo()
    assert got["tiny"] == got["vectorised"]
    ratings, index = got["tiny"]
    assert len(ratings) == 1 + 12 + 2 and {r[5] for r in ratings} == {"rated", "unrated"}  # status
    assert sorted((r[2], r[0], r[1]) for r in ratings) == index  # one index row per rating, its firm


def test_fixed_tables_are_digested_once_and_only_when_said_fixed(tmp_path, monkeypatch):
    data = make_sample(tmp_path / "firms.csv", firms=30)
    plan = ruleengine.load("huzhou")
    full = ruleengine.rate(plan, data)
    res = ruleengine.rate(plan, data, benchmarks=full.tables)
    calls = []
    real = C.tables_json
    monkeypatch.setattr(C, "tables_json", lambda t: calls.append(1) or real(t))
    R._CONSTANT_BLOBS.clear()
    a = R.prepare("huzhou", plan, data, res, fixed_tables=True)
    b = R.prepare("huzhou", plan, data, res, fixed_tables=True)
    assert len(calls) == 1 and a.header["benchmarks_hash"] == b.header["benchmarks_hash"]
    assert a.header["benchmarks_hash"] == C.digest(real(res.tables))
    assert a.blobs == b.blobs and a.header["rulebook_manifest"] == b.header["rulebook_manifest"]
    R.prepare("huzhou", plan, data, res)  # not said fixed: built again (a BenchmarkTable is mutable)
    assert len(calls) == 2


def test_a_rulebook_file_is_read_once_and_a_run_records_the_files_its_plan_was_compiled_from(tmp_path):
    """The files a run records are those the plan was compiled from (its digests): read from disk
    once, not stat-ed again per run. Edited on disk afterwards, the old plan still records the old
    bytes (what it rated with); a plan loaded again records the new ones; a plan whose files were
    never read and have changed is refused."""
    import shutil

    book = tmp_path / "book.yaml"
    shutil.copy(ruleengine.load("huzhou").source_map.file, book)
    data = make_sample(tmp_path / "firms.csv", firms=10)
    old_plan = ruleengine.load(book)
    res = ruleengine.rate(old_plan, data)
    original = book.read_bytes()
    R._RULEBOOK_FILES.clear()
    main, files = R.rulebook_files(book, old_plan)  # (and the bundled libraries it imports)
    assert main == "book.yaml" and files["book.yaml"] == original
    edited = original + b"\n# a comment added after the plan was loaded\n"
    book.write_bytes(edited)
    assert R.rulebook_files(book, old_plan) == (main, files)
    p = R.prepare(book, old_plan, data, res)
    manifest = json.loads(p.blobs[p.header["rulebook_manifest"]][1])
    assert p.blobs[manifest["files"]["book.yaml"]][1] == original
    book.rename(tmp_path / "away.yaml")  # gone: the kept bytes are used, the folder is not looked at
    assert R.rulebook_files(book, old_plan) == (main, files)
    (tmp_path / "away.yaml").rename(book)
    new_plan = ruleengine.load(book)
    assert R.rulebook_files(book, new_plan)[1] == {**files, "book.yaml": edited}
    R._RULEBOOK_FILES.clear()  # a fresh process: the old plan's bytes are nowhere to be had
    with pytest.raises(ruleengine.ledger.LedgerError, match="changed since the rulebook was loaded"):
        R.rulebook_files(book, old_plan)


def test_the_writer_engine_keeps_one_connection_and_writes_in_wal_mode(tmp_path):
    data = make_sample(tmp_path / "firms.csv", firms=20)
    path = tmp_path / "ledger.db"
    open_ledger(path).dispose()  # the schema
    plan = ruleengine.load("huzhou")
    res = ruleengine.rate(plan, data)
    eng = db.writer_engine(path, "normal")
    seen = set()
    from sqlalchemy import event

    event.listen(eng, "connect", lambda conn, _rec: seen.add(id(conn)))
    for _ in range(3):
        R.append(eng, R.prepare("huzhou", plan, data, res))
    assert len(seen) == 1  # one connection for every transaction
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    led = open_ledger(path, create=False)
    assert [r["id"] for r in led.runs()] == [1, 2, 3] and led.check().ok
    led.dispose()
    eng.dispose()
    assert db.leave_wal(eng)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    journal = db.writer_engine(path, "journal")
    R.append(journal, R.prepare("huzhou", plan, data, res))
    journal.dispose()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    for sync, level in (("full", 2), ("normal", 1)):  # PRAGMA synchronous: 1 NORMAL, 2 FULL
        eng = db.writer_engine(path, sync)
        R.append(eng, R.prepare("huzhou", plan, data, res))
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == level
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            # the long-lived connection's page cache is bounded (16 MiB, not the CLI's 256 MiB)
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -db.WRITER_CACHE_KIB
        eng.dispose()
        assert db.leave_wal(eng)
    assert [r["id"] for r in open_ledger(path, create=False).runs()] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ruleengine.ledger.LedgerError, match="unknown SQLite sync mode 'off'"):
        db.writer_engine(path, "off")


def test_stored_rows_of_either_form_read_back_and_junk_is_refused(tmp_path):
    """Runs recorded before session 5 stored tiny runs' rows as uncompressed Parquet: those bytes
    pass through unchanged; an IPC stream becomes Parquet with the same columns and types."""
    import pyarrow.parquet as pq

    from ruleengine.ledger.errors import LedgerError

    data = make_sample(tmp_path / "firms.csv", firms=3)
    plan = ruleengine.load("huzhou")
    tab = C.input_table(plan, data)
    assert tab.num_rows <= C.SMALL_ROWS
    old = C.parquet_bytes(tab)
    assert C.stored_parquet(old) is old
    ipc = C.stored_bytes(tab)
    assert ipc[:4] == C.IPC_STREAM_MAGIC
    assert pq.read_table(pa.BufferReader(C.stored_parquet(ipc))).equals(tab)
    big = pa.concat_tables([tab] * (C.SMALL_ROWS // tab.num_rows + 1))
    assert C.stored_bytes(big)[:4] == C.PARQUET_MAGIC  # more than a tiny run: Parquet (zstd)
    for junk in (b"", b"junk", C.IPC_STREAM_MAGIC + b"not a stream"):
        with pytest.raises(LedgerError, match="stored input rows"):
            C.stored_parquet(junk)


def _messy_rows(plan, rnd: random.Random, n: int) -> list[dict]:
    """Records with every kind of cell the service may be sent for ``plan``'s inputs: per column
    either numbers (with missing, NaN, infinite values) or text (with tokens, spaces, thousands
    separators, full-width digits); a quarter of the time one cell the ledger cannot store (a JSON
    object, a list, a huge integer, true/false among numbers)."""
    texts = [None, "", " 12 ", "1,234", "N/A", "-", "无", "0610", "text", "  ", "１２", "3011.0"]
    numbers = [None, float("nan"), float("inf"), -0.0, 2.5, 7.0, 1e300, 3011.0]
    styles = {name: rnd.random() < 0.5 for name in plan.inputs}  # True: the column's cells are text
    rows = []
    for i in range(n):
        row: dict = {}
        for name, spec in plan.inputs.items():
            r = rnd.random()
            if r < 0.15:
                continue  # the key is missing
            text = styles[name] or spec.type in ("string", "category")
            if r < 0.6:  # a sensible value
                if name == "firm_id":
                    row[name] = f"F{i % 3}"
                elif name == "year":
                    row[name] = f"{2020 + i % 4}" if text else float(2020 + i % 4)
                else:
                    row[name] = "C31" if text else rnd.uniform(0, 1000)
            else:
                row[name] = rnd.choice(texts if text else numbers)
        if rnd.random() < 0.3:
            row["firm_name"] = "湖州某某有限公司"  # a column the rulebook does not read
        rows.append(row)
    if rnd.random() < 0.25:
        bad = rnd.choice([{"a": 1}, [1, 2], 10**30, True])
        rows[rnd.randrange(n)][rnd.choice(list(plan.inputs))] = bad
    return rows


@pytest.mark.parametrize("book", ["huzhou", "quzhou", "shenzhen", "national"])
def test_the_service_records_the_rows_it_read_with_the_same_canonical_input(book):
    """The service reads a one-firm request once (pipeline.read), rates that RawTable and records
    it: its canonical input table (and so input_hash, the stored rows, the fingerprints) must be
    what reading the records again gives — also after the data contract has seen them."""
    import ruleengine.pipeline as pipeline
    from ruleengine.errors import DataError
    from ruleengine.ledger.errors import UnstorableInput

    plan = ruleengine.load(book)
    rnd = random.Random(f"one-read-{book}")
    rated = refused = 0
    for trial in range(60):
        rows = _messy_rows(plan, rnd, 1 + trial % 5)
        raw = pipeline.read(rows, [plan])
        try:
            pipeline.rate(plan, None, raw=raw)
        except DataError:  # refused as a whole (the service answers 422 and records nothing)
            continue
        try:
            again = C.input_table(plan, rows)
        except UnstorableInput as exc:  # a JSON object, a list, a too-large integer: not recorded
            with pytest.raises(UnstorableInput) as once_exc:
                C.input_table(plan, raw)
            assert str(once_exc.value) == str(exc) and ", column " in str(exc) and "row " in str(exc)
            refused += 1
            continue
        once = C.input_table(plan, raw)
        assert once.schema == again.schema, (rows, once.schema, again.schema)
        assert once.equals(again), rows
        assert C.input_hash(once) == C.input_hash(again)
        assert C.stored_bytes(once) == C.stored_bytes(again)
        rated += 1
    assert refused >= 3
    assert rated >= 10


def test_a_pooled_reader_reuses_its_connections_and_sees_new_runs(tmp_path):
    """open_ledger(pooled=N) (the service's reads): SQLite connections stay open between reads (a
    new one per read cost ~1-2 ms of CPU), each read sees what was committed before it began, and
    several threads read at once."""
    import threading

    from sqlalchemy import event

    data = make_sample(tmp_path / "firms.csv", firms=30)
    path = tmp_path / "ledger.db"
    writer = open_ledger(str(path))
    full = ruleengine.rate("huzhou", data)
    writer.record("huzhou", data, full)
    firm = full["firm_id"][0]
    unpooled = open_ledger(str(path))
    reader = open_ledger(str(path), pooled=2)
    opened: dict[str, list] = {"unpooled": [], "pooled": []}
    for name, led in (("unpooled", unpooled), ("pooled", reader)):
        event.listen(led.engine, "connect", lambda conn, _rec, name=name: opened[name].append(conn))
        for _ in range(20):
            assert led.run(1)["id"] == 1 and led.ratings(1, firm)
    assert len(opened["unpooled"]) == 40  # a connection per read
    assert len(opened["pooled"]) == 0  # the one opened by open_ledger (its schema check), kept
    unpooled.dispose()
    with reader.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -db.READER_CACHE_KIB  # bounded
    writer.record("huzhou", data, full)  # committed by another connection after the reader's reads
    assert [r["id"] for r in reader.runs()] == [1, 2]
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(10):
                assert len(reader.ratings(2, firm)) == len(reader.ratings(1, firm))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(opened["pooled"]) <= 3  # pool_size 2 (one open already) + overflow 2
    reader.dispose()
    writer.dispose()


SMALL_INTS = [i for i in INTS if i is None or abs(i) < 2**53]
BIG_INTS = [i for i in INTS if i is not None]
CELLS = [*FLOATS, *[t for t in TEXTS if t is not None], 3, 2**63, True, False, 1.0, {"a": 1}, [1]]


@pytest.mark.parametrize("book", ["huzhou", "quzhou"])
def test_a_one_firm_input_without_arrow_is_the_general_paths_canonical_input(book):
    """canonical.tiny_input types a one-firm request's columns (Python lists) itself, hashes and
    fingerprints them, and stores the canonical bytes: the same hash and fingerprints as
    input_table + input_digests, bytes that hash to that very digest, and bytes that read back
    (table_from_canonical) as the general path's table. Where it cannot tell Arrow's typing (mixed
    kinds, bools, numpy floats, objects, NaN among texts, big ints with missing cells) it answers
    None, and every input the general path refuses is one of those. Random records: one kind per
    column or mixed, every kind of cell (NaN, -0.0, infinities, int64's limits and beyond)."""
    from ruleengine.ledger.errors import UnstorableInput

    plan = ruleengine.load(book)
    rnd = random.Random(f"tiny-input-{book}")
    names = list(plan.inputs)
    plain_pools = [FLOATS, TEXTS, SMALL_INTS, BIG_INTS, [None], [math.nan, None]]
    odd_pools = [[1.5, 2, None], [True, False, None], [np.float64(2.5), None], CELLS, [*TEXTS, math.nan]]
    fast = declined = refused = 0
    for trial in range(400):
        n = 1 + trial % 4
        odd = trial % 3 == 0
        pools = {
            name: rnd.choice(odd_pools) if odd and rnd.random() < 0.3 else rnd.choice(plain_pools) for name in names
        }
        rows = [{k: rnd.choice(v) for k, v in pools.items() if rnd.random() < 0.9} for _ in range(n)]
        for row in rows:
            row.setdefault("firm_id", "F1")
        got = C.tiny_input(plan, rows)
        try:
            table = C.input_table(plan, rows)
        except UnstorableInput:
            assert got is None, rows
            refused += 1
            continue
        if got is None:
            declined += 1
            continue
        fast += 1
        digest, fps, blob = got
        assert digest == C.input_hash(table) == C.input_digests(table)[0] == C.digest(blob), rows
        assert fps.dtype == np.int64 and fps.tolist() == C.input_fingerprints(table).tolist(), rows
        back = C.table_from_canonical(blob)
        assert back.schema == table.schema and back.equals(table), rows
        assert C.input_hash(back) == digest
        assert pq.read_table(pa.BufferReader(C.stored_parquet(blob))).equals(table)
    assert fast > 80 and declined > 20 and refused > 5, (fast, declined, refused)
    assert C.tiny_input(plan, [{"firm_id": "F1", "year": 2023}] * 65) is None  # more than TINY_ROWS rows


def test_canonical_input_bytes_that_do_not_read_back_are_refused():
    good = C.tiny_input(ruleengine.load("huzhou"), [{"firm_id": "F1", "year": 2023, "electricity_mwh": 2.5}])
    assert good is not None
    blob = good[2]
    assert C.table_from_canonical(blob).num_rows == 1
    for bad, why in [
        (blob[:-3], "cut short"),
        (C.INPUT_HEAD + b"x\n", "no row count"),
        (C.INPUT_HEAD + b"1\nyear\x00float32\x00\x80" + bytes(8), "unknown type 'float32'"),
        (C.INPUT_HEAD + b"1\nfirm_id", "without its name or type"),
        (C.INPUT_HEAD + b"1\nf\x00string\x00\x80" + struct.pack("<q", 2) + b"\xff\xfe", "utf-8"),
    ]:
        with pytest.raises(ruleengine.ledger.LedgerError, match=why):
            C.table_from_canonical(bad)
        with pytest.raises(ruleengine.ledger.LedgerError, match=why):
            C.stored_parquet(bad)


def test_records_beyond_a_tiny_run_are_read_once_by_prepare(tmp_path, monkeypatch):
    """tiny_input looks at the size before reading: a portfolio of records too big for it is read
    once (by input_table), not once there and once again."""
    from ruleengine.io import data as D

    plan = ruleengine.load("huzhou")
    data = make_sample(tmp_path / "firms.csv", firms=60)
    import pyarrow.csv as pacsv

    rows = pacsv.read_csv(data, convert_options=pacsv.ConvertOptions(column_types={"firm_id": "string"})).to_pylist()
    assert len(rows) > F.TINY_ROWS
    res = ruleengine.rate(plan, rows)
    reads = []
    real = D.read_any
    monkeypatch.setattr(D, "read_any", lambda *a, **k: reads.append(1) or real(*a, **k))
    R.prepare("huzhou", plan, rows, res, background=False)
    assert len(reads) == 1
