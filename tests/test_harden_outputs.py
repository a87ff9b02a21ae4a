"""Issue #11.4: bounded-memory outputs. JSON/JSONL written chunk by chunk with the bytes of
``json.dumps`` (what the writers produced before), CSV on stdout streamed, ``--what-it-takes`` and
``compare`` evaluated in firm-complete chunks with the one-batch numbers."""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ruleengine
from ruleengine.analysis import compare as compare_mod
from ruleengine.analysis import whatif
from ruleengine.cli import main
from ruleengine.engine.results import Columns, Results
from ruleengine.errors import DataError
from ruleengine.io import sample

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "golden" / "portfolios" / "generated.csv"


def _old_json(r: Results) -> str:
    """What ``-o out.json`` wrote before the streaming writer: one json.dumps of every record."""
    return json.dumps(r.to_records(), ensure_ascii=False, indent=1) + "\n"


def _old_jsonl(r: Results) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in r.rows())


@pytest.mark.parametrize("book", ["huzhou", "quzhou", "shenzhen", "national"])
def test_json_and_jsonl_bytes_are_those_of_json_dumps(book: str, tmp_path: Path) -> None:
    r = ruleengine.rate(ruleengine.load(book), GENERATED)
    r.columns.update(whatif.columns(r.plan, r))
    r.write(tmp_path / "out.json")
    r.write(tmp_path / "out.jsonl")
    assert (tmp_path / "out.json").read_text(encoding="utf-8") == _old_json(r)
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8") == _old_jsonl(r)
    assert r.to_json() == _old_json(r)
    assert len(json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))) == 401


def test_json_cells_of_every_kind() -> None:
    """NaN → null, ±inf → Infinity (as json.dumps), ints, escaped text, a '%' in a column name,
    codes outside the labels read ''; and an empty result is ``[]``."""
    plan = ruleengine.load("huzhou")  # not read by the writers
    cols = Columns()
    cols["year"] = np.array([2021, 2022, 2023, 2024], dtype=np.int64)
    cols["x%s"] = np.array([1.5, math.nan, math.inf, -math.inf])
    cols["all_nan"] = np.full(4, math.nan)
    cols["big"] = np.array([1e300, 0.1 + 0.2, -0.0, 5e-324])
    cols["text"] = np.array(['a "q"', "中文\n", "", "\\"], dtype=object)
    cols["mixed"] = np.array(["s", None, 1.25, math.nan], dtype=object)
    cols.set_encoded("level", np.array([0, -1, 1, 2], dtype=np.int8), ["1", 'tw"o'])
    r = Results(cols, plan)
    assert r.to_json() == _old_json(r)
    assert '"x%s": Infinity' in r.to_json() and '"x%s": null' in r.to_json()
    for fmt in ("jsonl",):
        import io

        buf = io.StringIO()
        r.write_jsonl(buf)
        assert buf.getvalue() == _old_jsonl(r), fmt
    empty = Columns()
    empty["year"] = np.zeros(0, dtype=np.int64)
    assert Results(empty, plan).to_json() == "[]\n"


def test_cli_format_json_and_csv_stream_the_file_bytes(tmp_path: Path) -> None:
    runner = CliRunner()
    for fmt in ("json", "csv"):
        out = tmp_path / f"out.{fmt}"
        res = runner.invoke(main, ["rate", "huzhou", str(GENERATED), "-o", str(out)])
        assert res.exit_code == 0, res.output
        res = runner.invoke(main, ["rate", "huzhou", str(GENERATED), "--format", fmt])
        assert res.exit_code == 0, res.output
        assert res.stdout_bytes == out.read_bytes(), fmt


def test_json_write_memory_is_a_chunk_not_the_whole_text(tmp_path: Path) -> None:
    """Before: the records as dicts and the whole text in memory (more than the file's size);
    now a few thousand rows' text at a time."""
    data = tmp_path / "p.parquet"
    sample.write(sample.generate(20_000, [2022, 2023], seed=3), data)
    r = ruleengine.rate(ruleengine.load("huzhou"), data)
    for name in ("out.json", "out.jsonl"):
        tracemalloc.start()
        r.write(tmp_path / name)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        size = (tmp_path / name).stat().st_size
        assert size > 50_000_000  # 40,000 rows of about 1.5 KB
        assert peak < size / 2, (name, peak, size)  # before: more than the whole text (size)


def test_xlsx_too_many_rows_refused_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ruleengine.io.xlsx as xlsx

    monkeypatch.setattr(xlsx, "EXCEL_MAX_ROWS", 11)  # 10 result rows fit
    r = ruleengine.rate(ruleengine.load("huzhou"), ROOT / "golden" / "portfolios" / "small.csv")
    out = tmp_path / "out.xlsx"
    with pytest.raises(DataError, match=r"26 result rows do not fit one Excel sheet \(at most 10\)"):
        r.write(out)
    assert not out.exists()


def _sizes(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    seen: list[int] = []
    real = getattr(module, name)

    def spy(plan, batch, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(batch.n)
        return real(plan, batch, *args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen


def test_what_it_takes_in_firm_complete_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """quzhou reads prev(): a chunk must hold every year of its firms. Chunks of 7 rows give the
    whole-batch numbers, and no evaluation sees more than a chunk (a firm has at most 2 rows)."""
    plan = ruleengine.load("quzhou")
    # every firm rated (the portfolio mixes cities): 401 rows to bisect, whatever the jurisdiction
    r = ruleengine.rate(plan, GENERATED, any_jurisdiction=True)
    whole = whatif.columns(plan, r, chunk_rows=10**9)
    seen = _sizes(monkeypatch, whatif, "evaluate")
    small = whatif.columns(plan, r, chunk_rows=7)
    assert seen and max(seen) <= 8
    assert len(seen) > 31 * 40  # 401 rows in chunks of 7-8: 50+ chunks, 31 evaluations each
    for k, v in whole.items():
        if v.dtype == object:
            assert v.tolist() == small[k].tolist(), k
        else:
            assert np.array_equal(v, small[k], equal_nan=True), k
    assert np.isfinite(whole["emissions_cut_to_better_tco2"]).sum() > 300


def test_compare_in_chunks_gives_the_one_batch_answer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """compare on the chunked engine (firm-complete chunks of ~13 rows, each rated on its own with
    the exactly merged benchmark tables) gives the in-memory answer byte for byte, and no
    evaluation sees more than a chunk."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from ruleengine.scale.engines import Engine

    books = ["huzhou", "quzhou", "national", "shenzhen"]
    one = compare_mod.to_json(compare_mod.run(books, GENERATED))
    table = pacsv.read_csv(GENERATED, convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    data = tmp_path / "generated.parquet"
    pq.write_table(table.cast(pa_string_schema(table)), data)
    from ruleengine.scale import chunked as chunked_runner

    seen = _sizes(monkeypatch, chunked_runner, "final_of")  # the name the chunked runner calls
    chunked = compare_mod.to_json(compare_mod.run(books, str(data), engine=Engine("chunked", chunk_rows=13)))
    assert chunked == one
    assert seen and max(seen) <= 14 and sum(seen) == 4 * 401
    doc = json.loads(one)
    # huzhou and quzhou share no firm (each rates its own jurisdiction); a pair with national does
    assert doc["firm_years"] == 401
    assert any(p["largest_differences"] and p["largest_differences"][0]["firm_name"] for p in doc["pairs"])


def pa_string_schema(table):  # type: ignore[no-untyped-def]
    """Every column as text, as the CSV was written (credit codes and industry codes keep their form)."""
    import pyarrow as pa

    return pa.schema([pa.field(f.name, pa.string()) for f in table.schema])


def test_an_evaluation_frees_its_columns_without_waiting_for_the_garbage_collector() -> None:
    """The formula evaluator, its bound tables and the frame referred to each other: every
    evaluation's columns stayed until the next garbage collection, and what-it-takes (31
    evaluations per chunk) piled them up (2.7 GB at 2M rows). Now reference counting frees them."""
    import gc
    import weakref

    from ruleengine.engine import evaluator

    r = ruleengine.rate(ruleengine.load("huzhou"), GENERATED)
    assert r.batch is not None
    sub = r.batch.take(np.arange(100))
    gc.collect()
    gc.disable()
    try:
        ev = evaluator.evaluate(r.plan, sub, r.tables)
        assert len(ev.levels[r.plan.primary]) == 100
        alive = weakref.ref(sub)
        del ev, sub
        assert alive() is None  # nothing but a reference cycle could keep the batch
    finally:
        gc.enable()


def test_in_memory_compare_and_diff_in_firm_complete_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """In memory, compare and diff --data rate a large portfolio in firm-complete chunks (benchmark
    tables merged exactly over them): forced down to ~13-row chunks, the outputs are the one-batch
    outputs byte for byte."""
    from ruleengine.analysis import diff as diff_mod
    from ruleengine.analysis import rated

    books = ["huzhou", "quzhou", "national", "shenzhen"]
    one = compare_mod.to_json(compare_mod.run(books, GENERATED))
    d_one = diff_mod.to_json(diff_mod.run("huzhou", ROOT / "tests" / "data" / "levels" / "huzhou_next.yaml", GENERATED))
    monkeypatch.setattr(rated, "CHUNK_ROWS", 13)
    from ruleengine.scale import partition

    seen = _sizes(monkeypatch, partition, "final_of")
    assert compare_mod.to_json(compare_mod.run(books, GENERATED)) == one
    assert seen and max(seen) <= 14
    assert (
        diff_mod.to_json(diff_mod.run("huzhou", ROOT / "tests" / "data" / "levels" / "huzhou_next.yaml", GENERATED))
        == d_one
    )
