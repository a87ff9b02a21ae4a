"""`ledger replay` (issue #16): every run re-rated from the stored rulebook bytes, input rows and
benchmark tables gives byte-identical results; a run without stored rows replays from the data
given (checked against its hash); a changed stored input is caught."""

from __future__ import annotations

import hashlib

import ledger_required  # noqa: F401  (skips without the ledger extra)
import pytest
from click.testing import CliRunner
from ledger_pg import bypass, make_sample

import ruleengine
from ruleengine.cli import main
from ruleengine.ledger import LedgerError, open_ledger
from ruleengine.ledger.canonical import results_digest, tables_from_json, tables_json


@pytest.mark.parametrize("book", ["huzhou", "quzhou", "shenzhen", "national"])
def test_every_bundled_rulebook_replays_identically(ledger_url, tmp_path, book):
    data = make_sample(tmp_path / "firms.csv", firms=40, seed=3)
    led = open_ledger(ledger_url)
    res = ruleengine.rate(book, data)
    run = led.record(book, data, res)
    rep = led.replay(run["id"])
    assert rep.identical, rep.differences
    assert rep.replayed_hash == run["results_hash"] == results_digest(res)
    led.dispose()


def test_results_written_by_replay_are_the_same_bytes(ledger_url, tmp_path):
    """The proof in user terms: the CSV written from the replayed results is the CSV written at the time."""
    from ruleengine.ledger.replay import materials, rerate

    data = make_sample(tmp_path / "firms.csv", firms=25, seed=1)
    led = open_ledger(ledger_url)
    res = ruleengine.rate("huzhou", data)
    res.write(tmp_path / "then.csv")
    led.record("huzhou", data, res)
    with materials(led, 1) as m:
        rerate(m).write(tmp_path / "now.csv")
    then = (tmp_path / "then.csv").read_bytes()
    assert hashlib.sha256(then).digest() == hashlib.sha256((tmp_path / "now.csv").read_bytes()).digest()
    assert len(then.splitlines()) == 51  # header + 25 firms × 2 years
    led.dispose()


def test_benchmark_tables_round_trip_through_json(tmp_path):
    data = make_sample(tmp_path / "firms.csv", firms=30)
    for book in ("huzhou", "shenzhen", "national"):
        res = ruleengine.rate(book, data)
        again = tables_from_json(tables_json(res.tables))
        assert tables_json(again) == tables_json(res.tables)
        # held fixed, the tables give the very same results
        assert results_digest(ruleengine.rate(book, data, benchmarks=again)) == results_digest(res)


def test_cli_what_it_takes_parquet_and_fixed_benchmarks_replay(tmp_path):
    data = make_sample(tmp_path / "firms.parquet", firms=20, seed=2)
    url = str(tmp_path / "l.db")
    runner = CliRunner()
    out = runner.invoke(main, ["rate", "huzhou", str(data), "--what-it-takes", "--ledger", url])
    assert out.exit_code == 0, out.output
    led = open_ledger(url)
    # a portfolio rated against the city's tables (held fixed), recorded through the API
    city = ruleengine.rate("huzhou", data)
    small = ruleengine.rate("huzhou", [{k: v for k, v in r.items()} for r in _inputs(data, 2)], benchmarks=city.tables)
    led.record("huzhou", _inputs(data, 2), small, options={"benchmarks": "fixed"})
    out = runner.invoke(main, ["ledger", "-l", url, "replay", "--all"])
    assert out.exit_code == 0, out.output
    assert "run 1: replayed 40 ratings: byte-identical" in out.output
    assert "run 2: replayed 2 ratings: byte-identical" in out.output
    assert led.run(1)["options"] == '{"what_it_takes":true}'
    assert led.run(2)["options"] == '{"benchmarks":"fixed"}'
    led.dispose()


def _inputs(path, n):
    import pyarrow.parquet as pq

    return pq.read_table(path).slice(0, n).to_pylist()


def test_replay_without_stored_rows_needs_the_data(ledger_url, tmp_path):
    data = make_sample(tmp_path / "firms.csv", firms=10)
    other = make_sample(tmp_path / "other.csv", firms=10, seed=9)
    led = open_ledger(ledger_url)
    run = led.record("huzhou", data, ruleengine.rate("huzhou", data), store_rows=False)
    assert run["input_blob"] is None and run["input_hash"].startswith("sha256:")
    with pytest.raises(LedgerError, match="recorded without its input rows .*--data FILE"):
        led.replay(1)
    with pytest.raises(LedgerError, match="the data given is not the data rated"):
        led.replay(1, other)
    assert led.replay(1, data).identical
    led.dispose()


def test_replay_all_reports_runs_without_stored_rows_and_goes_on(tmp_path):
    """`replay --all` stopped at the first run recorded with --no-store-rows (an error, exit 1,
    the later runs not replayed). Such a run is now reported "not replayable (rows not stored)" and
    the others are replayed; it is no failure (exit 0) unless no run could be replayed at all. A run
    that differs still exits 1; `replay RUN` of such a run is still an error."""
    from ruleengine import __version__

    data = make_sample(tmp_path / "firms.csv", firms=5)
    other = make_sample(tmp_path / "other.csv", firms=5, seed=3)
    url = str(tmp_path / "l.db")
    runner = CliRunner()
    for extra in ([], ["--no-store-rows"], []):
        out = runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", url, *extra])
        assert out.exit_code == 0, out.output
    led = open_ledger(url)
    h = {r["id"]: r["results_hash"] for r in led.runs()}

    def replay(*args: str) -> tuple[int, str]:
        out = runner.invoke(main, ["ledger", "-l", url, "replay", *args])
        return out.exit_code, out.output

    def same(i: int) -> str:
        return f"run {i}: replayed 10 ratings: byte-identical ({h[i]})\n"

    skipped = "run 2: not replayable (rows not stored): give its input with --data FILE\n"
    assert replay("--all") == (0, same(1) + skipped + same(3))
    assert replay("--all", "--data", str(other)) == (
        0,
        same(1) + f"run 2: not replayable (rows not stored): {other} is not its input\n" + same(3),
    )
    assert replay("--all", "--data", str(data)) == (0, same(1) + same(2) + same(3))
    assert replay("2") == (
        1,
        "error: run 2 was recorded without its input rows (--no-store-rows): give the data with --data FILE\n",
    )
    # a replayed run that differs still fails the whole command
    bypass(url, "UPDATE ledger_runs SET engine_version = '0.0.0' WHERE id = 3")
    assert replay("--all") == (
        1,
        same(1)
        + skipped
        + f"run 3: replay DIFFERS: engine version: recorded 0.0.0, replayed with {__version__}\n"
        + f"    recorded {h[3]}\n    replayed {h[3]}\n",
    )
    # nothing replayable: nothing proven, exit 1
    only = str(tmp_path / "only.db")
    for _ in range(2):
        assert runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", only, "--no-store-rows"]).exit_code == 0
    out = runner.invoke(main, ["ledger", "-l", only, "replay", "--all"])
    assert (out.exit_code, out.output) == (
        1,
        skipped.replace("run 2", "run 1")
        + skipped
        + "no run could be replayed: all 2 were recorded without their rows\n",
    )
    led.dispose()


def test_a_changed_stored_input_is_caught(ledger_url, tmp_path):
    data = make_sample(tmp_path / "firms.csv", firms=10)
    led = open_ledger(ledger_url)
    run = led.record("huzhou", data, ruleengine.rate("huzhou", data))
    assert led.replay(1).identical
    # swap the stored rows for another data set's (same digest key): check and replay both object
    other = make_sample(tmp_path / "other.csv", firms=10, seed=4)
    other_run = open_ledger(str(tmp_path / "scratch.db")).record("huzhou", other, ruleengine.rate("huzhou", other))
    scratch = open_ledger(str(tmp_path / "scratch.db"))
    fake = scratch.blob(other_run["input_blob"])
    hexs = fake.hex()
    value = f"'\\x{hexs}'::bytea" if ledger_url.startswith("postgresql") else f"X'{hexs}'"
    bypass(
        ledger_url,
        f"UPDATE ledger_blobs SET data = {value}, encoding = 'identity', size = {len(fake)} WHERE digest = '{run['input_blob']}'",
    )
    assert led.check().first == f"blob {run['input_blob']} (input-rows): its bytes do not hash to its digest (edited)"
    rep = led.replay(1)
    assert not rep.identical
    assert rep.differences[0] == "the stored input rows do not hash to the run's input_hash"
    # another portfolio's rows: the first firm-year is already someone else
    assert rep.differences[1].startswith("rating #0 (firm ")
    scratch.dispose()
    led.dispose()


def test_messy_data_replays_identically(tmp_path):
    """Blanks, negatives, text in number columns, duplicate firm-years: the stored rows (Parquet of
    what the engine read) rate to the same bytes as the messy CSV did."""
    from click.testing import CliRunner as _R

    path = tmp_path / "messy.csv"
    out = _R().invoke(main, ["sample", "--firms", "60", "--messy", "0.3", "--seed", "11", "-o", str(path)])
    assert out.exit_code == 0, out.output
    led = open_ledger(tmp_path / "l.db")
    for book in ("huzhou", "shenzhen"):
        res = ruleengine.rate(book, path)
        assert res.issues  # the data really is messy
        run = led.record(book, path, res)
        rep = led.replay(run["id"])
        assert rep.identical, rep.differences
    led.dispose()


def test_small_text_columns_hash_to_the_same_bytes_as_the_vectorised_path(monkeypatch):
    """canonical._text_bytes takes a plain-Python path up to SMALL_ROWS rows (a one-firm run);
    its bytes must be those of the numpy/Arrow path: missing codes, null and repeated labels,
    non-ASCII text, more than 8 distinct values (validity bytes)."""
    import random

    import numpy as np
    import pyarrow as pa

    from ruleengine.ledger import canonical as C

    rnd = random.Random(7)
    pool = ["", "A", "B", "é", "中文", "AAA", "b", None, "A", "x1", "x2", "x3", "x4", "x5", "x6"]
    for _ in range(400):
        labels = pa.array([rnd.choice(pool) for _ in range(rnd.randrange(0, 15))], pa.string())
        n = rnd.randrange(1, C.SMALL_ROWS + 1)
        codes = np.array([rnd.randrange(-1, len(labels)) if len(labels) else -1 for _ in range(n)], dtype=np.int64)
        small = b"".join(bytes(x) for x in C._text_bytes(codes, labels))
        monkeypatch.setattr(C, "SMALL_ROWS", 0)
        vectorised = b"".join(bytes(x) for x in C._text_bytes(codes, labels))
        monkeypatch.undo()
        assert small == vectorised, (labels, codes)
    # one hand-checked case: labels ['b', 'A'], rows b, A, missing -> sorted '' < 'A' < 'b'
    got = b"".join(bytes(x) for x in C._text_bytes(np.array([0, 1, -1]), pa.array(["b", "A"])))
    assert got == (
        b"dict\x00string\x00\xe0" + np.array([0, 1, 1], "<i8").tobytes() + b"Ab" + np.array([2, 1, 0], "<i4").tobytes()
    )
