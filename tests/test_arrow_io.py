"""Arrow in and out: Parquet text columns read as dictionaries, results written with dictionary
pages, and the buffer-level conversions that keep pyarrow's pandas bridge (a quarter-second
import) out of a rating run."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ruleengine
from ruleengine.engine import results
from ruleengine.io import _arrow
from ruleengine.io.data import Category

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "golden" / "portfolios" / "small.csv"


# -- buffer conversions -------------------------------------------------------------------------


def test_numbers_reads_chunks_nulls_offsets_and_casts():
    base = pa.array([1.5, None, 3.0, 4.0, None, 6.25])
    sliced = base.slice(1, 4)  # offset 1 into the buffers: [None, 3.0, 4.0, None]
    col = pa.chunked_array([sliced, pa.array([7.0, None, 9.0])])
    got = _arrow.numbers(col)
    assert got.dtype == np.float64
    assert np.array_equal(got, [np.nan, 3.0, 4.0, np.nan, 7.0, np.nan, 9.0], equal_nan=True)
    ints = _arrow.numbers(pa.array([5, None, -2], type=pa.int32()), np.int64, -1)  # cast, nulls filled
    assert ints.tolist() == [5, -1, -2] and ints.dtype == np.int64
    assert _arrow.numbers(pa.chunked_array([], type=pa.float64())).tolist() == []


def test_booleans_and_validity():
    col = pa.array([True, None, False, True, True, False, True, None, False, True]).slice(1)
    assert _arrow.booleans(col).tolist() == [False, False, True, True, False, True, False, False, True]
    assert _arrow.booleans(col, fill=True).tolist() == [True, False, True, True, False, True, True, False, True]
    assert _arrow.valid(pa.array([1.0, 2.0])) is None
    assert _arrow.valid(pa.nulls(3)).tolist() == [False, False, False]


def test_array_and_strings_round_trip():
    v = np.array([1.0, np.nan, -0.0, 2.5])
    arr = _arrow.array(v, np.isnan(v))
    assert arr.type == pa.float64() and arr.null_count == 1
    assert arr.to_pylist() == [1.0, None, -0.0, 2.5]
    assert _arrow.array(np.array([3, 4], dtype=np.int32)).type == pa.int32()
    labels = ["湖州", "", "F 01", "é"]
    s = _arrow.strings(labels)
    assert s.type == pa.string() and s.to_pylist() == labels
    assert _arrow.strings([]).to_pylist() == []
    assert _arrow.text_scalar("x").as_py() == "x" and _arrow.null_scalar(pa.int64()).as_py() is None


# -- reading text from Parquet as dictionaries --------------------------------------------------


def _parquet_portfolio(path: Path, industries: list[str | None], firm_ids: list[str | None]) -> Path:
    n = len(industries)
    table = pa.table(
        {
            "firm_id": pa.array(firm_ids, type=pa.string()),
            "year": pa.array([2023] * n, type=pa.int64()),
            "industry": pa.array(industries, type=pa.string()),
            "value_added_10k_cny": pa.array([100.0] * n),
            "electricity_mwh": pa.array([10.0 * (i + 1) for i in range(n)]),
        }
    )
    pq.write_table(table, path, row_group_size=2)  # several row groups: one dictionary each
    return path


def test_parquet_text_is_trimmed_merged_and_missing_across_row_groups(tmp_path):
    industries = ["3011", " 3011", "", None, "0610 ", "3011"]
    firm_ids = ["F1", "F2", " F3", "F4", "F5", "F1 "]
    pq_path = _parquet_portfolio(tmp_path / "p.parquet", industries, firm_ids)
    csv_path = tmp_path / "p.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["firm_id", "year", "industry", "value_added_10k_cny", "electricity_mwh"])
        for i, (ind, fid) in enumerate(zip(industries, firm_ids, strict=True)):
            w.writerow([fid, 2023, "" if ind is None else ind, 100.0, 10.0 * (i + 1)])
    from_pq = ruleengine.rate("huzhou", pq_path)
    from_csv = ruleengine.rate("huzhou", csv_path)
    ind = from_pq.batch.columns["industry"]
    assert isinstance(ind, Category)
    assert ind.labels == ["0610", "3011"]  # trimmed, merged, sorted; '' is missing, not a label
    assert ind.codes.tolist() == [1, 1, -1, -1, 0, 1]
    ids = from_pq.batch.columns["firm_id"]
    assert ids.to_strings().tolist() == ["F1", "F2", "F3", "F4", "F5", "F1"]
    # " F1" and "F1" are one firm: the same firm-year twice is reported
    assert [(i.row, i.column) for i in from_pq.issues if "duplicate" in i.message] == [(1, "firm_id"), (6, "firm_id")]
    assert from_pq.to_records() == from_csv.to_records()


# -- writing results ----------------------------------------------------------------------------


def test_parquet_output_reads_back_as_plain_columns_equal_to_csv(tmp_path, monkeypatch):
    res = ruleengine.rate("huzhou", SMALL)
    res.write(tmp_path / "r.parquet")
    res.write(tmp_path / "r.csv")
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.column_names == res.names
    for name in ("firm_id", "rating", "status", "reasons", "rulebook_hash", "industry_intensity_group"):
        assert table.schema.field(name).type == pa.string(), name  # no dictionary type leaks to readers
    assert table.schema.field("year").type == pa.int64()
    with (tmp_path / "r.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for name in table.column_names:
        got = ["" if v is None else v for v in table.column(name).to_pylist()]
        want = [r[name] for r in rows]
        if table.schema.field(name).type == pa.string():
            assert got == want, name
        else:
            assert [repr(float(g)) if g != "" else "" for g in got] == [
                repr(float(w)) if w != "" else "" for w in want
            ], name
    # min/max statistics for the year (row groups follow input order: only it can prune)
    meta = pq.ParquetFile(tmp_path / "r.parquet").metadata.row_group(0)
    stats = {meta.column(i).path_in_schema: meta.column(i).statistics for i in range(meta.num_columns)}
    assert (stats["year"].min, stats["year"].max) == (2022, 2023)
    assert stats["k"] is None and stats["firm_id"] is None
    # every text column written as plain strings gives the same file contents
    monkeypatch.setattr(results, "DICTIONARY_MAX_LABELS", 0)
    res.write(tmp_path / "plain.parquet")
    assert pq.read_table(tmp_path / "plain.parquet").equals(table)


def test_parquet_output_is_byte_identical_across_processes(tmp_path):
    script = "import sys, ruleengine; ruleengine.rate('huzhou', sys.argv[1]).write(sys.argv[2])"
    outs = []
    for k in range(2):
        out = tmp_path / f"r{k}.parquet"
        subprocess.run([sys.executable, "-c", script, str(SMALL), str(out)], check=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_rating_parquet_to_parquet_never_imports_pandas(tmp_path):
    """pyarrow imports pandas, when installed, on the first ``pa.array``/``to_numpy``/``pa.scalar``;
    the engine goes by buffers instead. A finder records the attempt even where pandas is absent."""
    src = tmp_path / "in.parquet"
    res = ruleengine.rate("huzhou", SMALL)
    pq.write_table(_small_as_table(), src)
    script = f"""
import sys
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'pandas':
            seen.append(name)
        return None
sys.meta_path.insert(0, Watch())
import ruleengine
r = ruleengine.rate('huzhou', {str(src)!r})
r.write({str(tmp_path / "out.parquet")!r})
r.write({str(tmp_path / "out.csv")!r})
print(len(r), 'pandas' in sys.modules, seen)
"""
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout.split()
    assert out == [str(len(res)), "False", "[]"]


def _small_as_table() -> pa.Table:
    import pyarrow.csv as pacsv

    header = SMALL.read_text(encoding="utf-8").splitlines()[0].split(",")
    text = {"firm_id", "firm_name", "city", "grid_region", "industry", "size"}
    types = {h: pa.string() for h in header if h in text}
    return pacsv.read_csv(SMALL, convert_options=pacsv.ConvertOptions(column_types=types))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_results_with_firm_ids_kept_as_arrow_labels(tmp_path, suffix):
    """Firm ids read from Parquet stay an Arrow array; find/explain still see them as text."""
    src = tmp_path / "in.parquet"
    pq.write_table(_small_as_table(), src)
    res = ruleengine.rate("huzhou", src)
    ids = res.batch.columns["firm_id"]
    assert ids.labels_from_arrow and res.columns.category("firm_id") is ids  # no Python strings yet
    res.write(tmp_path / f"early{suffix}")
    assert ids.labels_from_arrow  # writing the file did not need them either
    first = res.row(0)["firm_id"]
    assert res.find(first) and isinstance(first, str)
    res.write(tmp_path / f"o{suffix}")
    assert (tmp_path / f"o{suffix}").stat().st_size > 0


def _dirty_arrow_memory(byte: int) -> None:
    """Fill and free Arrow pool blocks so the next allocations start with ``byte`` everywhere."""
    blocks = []
    for size in (64, 128, 256, 512, 1024, 4096):
        for _ in range(50):
            b = pa.allocate_buffer(size)
            np.frombuffer(b, dtype=np.uint8)[:] = byte
            blocks.append(b)
    del blocks


def test_parquet_bytes_do_not_depend_on_leftover_memory(tmp_path):
    """Huzhou's incentive_services reads '' for several levels. Arrow writes a dictionary page with
    uninitialised bytes when the Arrow dictionary repeats a value, so the file changed with
    whatever memory the pool handed out; the writer now gives Parquet distinct labels only."""
    res = ruleengine.rate("huzhou", SMALL)
    labels = res.columns.category("incentive_services").labels
    assert labels.count("") == 3  # levels 3-5 offer no services: the repeated label this is about
    outs = set()
    for byte in (0x00, 0xAB, 0x5C):
        _dirty_arrow_memory(byte)
        res.write(tmp_path / "r.parquet")
        outs.add((tmp_path / "r.parquet").read_bytes())
    assert len(outs) == 1
    for name, (lab, _) in res._labels().items():
        assert len(set(lab.to_pylist())) == len(lab), name


def test_rating_an_arrow_table_leaves_the_callers_memory_alone():
    """Numbers are read as views on the Arrow buffers; a value the engine must blank (below the
    minimum) or fill (an empty cell) is changed in a copy, never in the caller's table."""
    table = pa.table(
        {
            "firm_id": ["A", "B", "C"],
            "year": pa.array([2023, 2023, 2023], type=pa.int64()),
            "industry": ["3011", "3011", "3011"],
            "value_added_10k_cny": [100.0, 100.0, 100.0],
            "electricity_mwh": [10.0, -5.0, 20.0],
            "raw_coal_t": pa.array([1.0, None, 2.0]),
        }
    )
    before = {name: table.column(name).chunk(0).buffers()[1].to_pybytes() for name in ("electricity_mwh", "raw_coal_t")}
    res = ruleengine.rate("huzhou", table)
    assert res["status"].tolist() == ["rated", "unrated", "rated"]
    assert "electricity_mwh: -5 is below the minimum 0" in res["reasons"][1]
    after = {name: table.column(name).chunk(0).buffers()[1].to_pybytes() for name in ("electricity_mwh", "raw_coal_t")}
    assert after == before
    assert table.column("electricity_mwh").to_pylist() == [10.0, -5.0, 20.0]


def test_reading_a_file_fills_empty_cells_with_the_default(tmp_path):
    """Empty numeric cells read the input's default (0 for fuels) in place; a column that is
    empty throughout is the default without memory of its own."""
    path = tmp_path / "p.parquet"
    pq.write_table(
        pa.table(
            {
                "firm_id": ["A", "B", "C"],
                "year": pa.array([2023, 2023, 2023], type=pa.int64()),
                "industry": ["3011", "3011", "3011"],
                "value_added_10k_cny": [100.0, 100.0, 100.0],
                "electricity_mwh": [10.0, 20.0, 30.0],
                "raw_coal_t": pa.array([1.0, None, 2.0]),
                "coke_t": pa.array([None, None, None], type=pa.float64()),
            }
        ),
        path,
    )
    res = ruleengine.rate("huzhou", path)
    cols = res.batch.columns
    assert cols["raw_coal_t"].tolist() == [1.0, 0.0, 2.0]
    assert cols["coke_t"].tolist() == [0.0, 0.0, 0.0] and cols["coke_t"].strides == (0,)
    assert res.issues == [] and res["status"].tolist() == ["rated"] * 3
    # what is computed from one repeated value is one repeated value, not three copies
    coke = res.evaluation.values["coke_co2_tco2"]
    assert coke.strides == (0,) and coke.tolist() == [0.0, 0.0, 0.0]
    assert res["coke_co2_tco2"].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunked_writing_in_a_second_thread_gives_the_same_file(tmp_path, monkeypatch, suffix):
    res = ruleengine.rate("huzhou", SMALL)
    res.write(tmp_path / f"whole{suffix}")
    monkeypatch.setattr(results, "CHUNK_ROWS", 4)  # 26 rows: 7 chunks through the queue
    res.write(tmp_path / f"chunked{suffix}")
    if suffix == ".csv":
        assert (tmp_path / "chunked.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    else:
        assert pq.read_table(tmp_path / "chunked.parquet").equals(pq.read_table(tmp_path / "whole.parquet"))
        assert pq.ParquetFile(tmp_path / "chunked.parquet").metadata.num_row_groups == 7


def test_a_failure_while_converting_reaches_the_caller_and_no_thread_is_left(tmp_path, monkeypatch):
    import threading

    res = ruleengine.rate("huzhou", SMALL)
    monkeypatch.setattr(results, "CHUNK_ROWS", 4)
    calls = {"n": 0}
    real = results.Results._arrays

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise MemoryError("out of memory converting chunk 3")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(results.Results, "_arrays", failing)
    before = threading.active_count()
    with pytest.raises(MemoryError, match="chunk 3"):
        res.write(tmp_path / "r.parquet")
    assert threading.active_count() == before


def test_arrow_dictionary_columns_with_repeated_or_null_labels():
    """A caller's Arrow table may carry a dictionary that repeats a label or holds a null: the
    codes still name each category once, and a null label reads as missing."""
    industry = pa.DictionaryArray.from_arrays(
        pa.array([0, 1, 2, 3, 0], type=pa.int32()), pa.array(["3011", "3011", None, " 0610"])
    )
    table = pa.table(
        {
            "firm_id": ["A", "B", "C", "D", "E"],
            "year": pa.array([2023] * 5, type=pa.int64()),
            "industry": industry,
            "value_added_10k_cny": [100.0] * 5,
            "electricity_mwh": [10.0, 20.0, 30.0, 40.0, 50.0],
        }
    )
    res = ruleengine.rate("huzhou", table)
    cat = res.batch.columns["industry"]
    assert cat.labels == ["0610", "3011"]
    assert cat.codes.tolist() == [1, 1, -1, 0, 1]


def test_arrow_dictionary_repeating_a_label_without_spaces():
    industry = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2], type=pa.int32()), pa.array(["3011", "3011", "0610"]))
    table = pa.table(
        {
            "firm_id": ["A", "B", "C"],
            "year": pa.array([2023] * 3, type=pa.int64()),
            "industry": industry,
            "value_added_10k_cny": [100.0] * 3,
            "electricity_mwh": [10.0, 20.0, 30.0],
        }
    )
    cat = ruleengine.rate("huzhou", table).batch.columns["industry"]
    assert cat.labels == ["0610", "3011"] and cat.codes.tolist() == [1, 1, 0]
