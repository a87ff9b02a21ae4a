"""The chunked runner (`ruleengine rate BOOK DIR_OR_GLOB --chunk-rows N`): byte-identical files.

20k messy firm-years (bad cells, out-of-range values, duplicate firm-years) from
``ruleengine.io.sample``, written once as one Parquet file (rated in memory) and once as a dataset
of uneven Parquet files (rated in chunks of 3,000 rows). Firm-major rows take the contiguous path;
shuffled rows take the spill path (firm-hash buckets, then results merged back in input order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from scale_parts import read_parts, same_rows

import ruleengine
from ruleengine.cli import main
from ruleengine.engine import results as results_module
from ruleengine.io import sample
from ruleengine.scale.chunked import rate_dataset
from ruleengine.scale.sink import parts_of

ROOT = Path(__file__).resolve().parent.parent
KINDS = ROOT / "tests" / "data" / "scale_kinds.yaml"  # every benchmark kind, two benchmark stages


def _write_portfolio(tmp: Path, shuffle: bool) -> tuple[Path, Path]:
    """(one Parquet file, a directory of 4 uneven Parquet files) holding the same rows in the same order."""
    cols = sample.generate(5000, [2021, 2022, 2023, 2024], seed=11, messy=0.05)
    one = sample.write(cols, tmp / "one-source.parquet")
    table = pq.read_table(one)
    if shuffle:
        table = table.take(pa.array(np.random.default_rng(3).permutation(table.num_rows)))
    assert table.num_rows > 20_000
    single = tmp / "portfolio.parquet"
    pq.write_table(table, single)
    ds = tmp / "dataset"
    ds.mkdir()
    cuts = [0, 6_999, 7_000, 15_500, table.num_rows]  # one file of a single row; firms cross files
    for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        pq.write_table(table.slice(a, b - a), ds / f"part-{i}.parquet", row_group_size=2_500)
    return single, ds


@pytest.fixture(scope="module")
def contiguous(tmp_path_factory):
    return _write_portfolio(tmp_path_factory.mktemp("contiguous"), shuffle=False)


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory):
    return _write_portfolio(tmp_path_factory.mktemp("shuffled"), shuffle=True)


def _rate(*args: str) -> str:
    result = CliRunner().invoke(main, ["rate", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("book", ["huzhou", "shenzhen", str(KINDS)], ids=["huzhou", "shenzhen", "kinds"])
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_chunked_run_of_contiguous_firms_writes_the_same_bytes(tmp_path, contiguous, book, suffix, monkeypatch):
    # small row groups so that several are written and cut across chunk boundaries
    monkeypatch.setattr(results_module, "CHUNK_ROWS", 4_096)
    single, ds = contiguous
    a, b = tmp_path / f"memory{suffix}", tmp_path / f"chunked{suffix}"
    _rate(book, str(single), "-o", str(a))
    out = _rate(book, str(ds), "--chunk-rows", "3000", "-o", str(b))
    assert "firms contiguous" in out
    assert a.read_bytes() == b.read_bytes()
    if suffix == ".parquet":
        assert pq.ParquetFile(b).metadata.num_row_groups == -(-pq.ParquetFile(a).metadata.num_rows // 4_096)


@pytest.mark.parametrize("book", ["quzhou", str(KINDS)], ids=["quzhou", "kinds"])
def test_chunked_run_of_shuffled_rows_spills_and_writes_the_same_bytes(tmp_path, shuffled, book, monkeypatch):
    monkeypatch.setattr(results_module, "CHUNK_ROWS", 4_096)
    single, ds = shuffled
    a, b = tmp_path / "memory.parquet", tmp_path / "chunked.parquet"
    _rate(book, str(single), "-o", str(a))
    out = _rate(book, str(ds / "*.parquet"), "--chunk-rows", "3000", "-o", str(b))  # a glob
    assert "spilled to firm buckets" in out
    assert a.read_bytes() == b.read_bytes()
    # the results really are in input order: the firm ids read back equal the input's
    assert pq.read_table(b, columns=["firm_id"])["firm_id"].to_pylist() == [
        (s or "").strip() for s in pq.read_table(single, columns=["firm_id"])["firm_id"].to_pylist()
    ]


def test_a_single_large_file_in_chunks_and_the_summary(tmp_path, contiguous):
    single, _ = contiguous
    a, b = tmp_path / "memory.csv", tmp_path / "chunked.csv"
    _rate("national", str(single), "-o", str(a))
    out = _rate("national", str(single), "--chunk-rows", "5000", "-o", str(b))
    assert a.read_bytes() == b.read_bytes()
    n = pq.ParquetFile(single).metadata.num_rows
    assert f"{n:,} firm-years from {single}" in out
    assert "2 passes" in out  # national: one benchmark stage + the final pass
    assert "duplicate firm-year" in out  # the data problems are listed with whole-input rows


def test_phases_and_progress_are_reported(tmp_path, shuffled):
    _, ds = shuffled
    seen: dict[str, int] = {}
    plan = ruleengine.load(str(KINDS))

    def tick(phase: str, done: int, total: int) -> None:
        assert 0 <= done <= total
        seen[phase] = done

    run = rate_dataset(plan, ds, tmp_path / "out.parquet", 3000, progress=tick)
    n = pq.read_metadata(tmp_path / "out.parquet").num_rows
    assert run.rows == n and run.spilled and run.passes == 3
    # every phase ran to the end: scan, spill, two benchmark passes, the final pass, the re-ordering
    assert seen == {"scan": n, "spill": n, "benchmarks 1/2": n, "benchmarks 2/2": n, "rate": n, "order": n}
    assert sum(run.distribution.values()) == n
    assert run.rated == n - run.distribution.get("unrated", 0)


def test_bad_rows_and_odd_files_never_fail_a_chunk(tmp_path):
    """A file whose numeric column is text (junk in it), a file without an optional column, an
    empty file: every row is rated or unrated with its reason, none fails the run."""
    cols = sample.generate(300, [2022, 2023], seed=2)
    table = pq.read_table(sample.write(cols, tmp_path / "src.parquet"))
    ds = tmp_path / "ds"
    ds.mkdir()
    a = table.slice(0, 200)
    elec = a.column("electricity_mwh").cast(pa.string()).to_pylist()
    elec[5] = "lots"
    elec[6] = "-3"
    a = a.set_column(a.schema.get_field_index("electricity_mwh"), "electricity_mwh", pa.array(elec, pa.string()))
    pq.write_table(a, ds / "a.parquet")
    b = table.slice(200).drop_columns(["heat_gj"])
    pq.write_table(b, ds / "b.parquet")
    pq.write_table(table.slice(0, 0), ds / "c.parquet")
    out_path = tmp_path / "out.csv"
    out = _rate("huzhou", str(ds), "--chunk-rows", "50", "-o", str(out_path))
    assert f"{table.num_rows:,} firm-years" in out
    assert "row 6, column electricity_mwh: 'lots' is not a number" in out
    assert "row 7, column electricity_mwh: -3 is below the minimum 0" in out
    res = pacsv.read_csv(out_path)
    assert res.num_rows == table.num_rows
    reasons = res["reasons"].to_pylist()
    assert "electricity_mwh: 'lots' is not a number" in reasons[5]
    assert res["status"][5].as_py() == "unrated"


@pytest.mark.parametrize(
    "args, message",
    [
        (["huzhou", "{csv}", "--chunk-rows", "10", "-o", "{out}"], "--chunk-rows reads Parquet"),
        (["huzhou", "{empty}", "--chunk-rows", "10", "-o", "{out}"], "no .parquet files in this directory"),
        (["huzhou", "{dir}/*.nothing", "--chunk-rows", "10", "-o", "{out}"], "no .parquet file matches"),
        (["huzhou", "{single}", "--chunk-rows", "10"], "give -o OUT.parquet, -o OUT.csv or -o DIR/"),
        (["huzhou", "{single}", "--chunk-rows", "10", "-o", "{dir}/x.json"], "write .parquet or .csv, not '.json'"),
    ],
    ids=["csv", "empty-dir", "glob", "no-output", "json"],
)
def test_clear_errors(tmp_path, contiguous, args, message):
    single, _ = contiguous
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.csv").write_text("firm_id,year\nF1,2022\n")
    subst = {
        "csv": str(tmp_path / "x.csv"),
        "empty": str(tmp_path / "empty"),
        "dir": str(tmp_path),
        "out": str(tmp_path / "o.parquet"),
        "single": str(single),
    }
    result = CliRunner().invoke(main, ["rate", *[a.format(**subst) for a in args]])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_region_column_is_read_by_the_chunked_runner_too(tmp_path, contiguous):
    # every third row moved to Quzhou (330802) by its region column: the chunked runner must read
    # that column (it reads only the rulebook's inputs otherwise) and judge as the local run does
    single, _ = contiguous
    table = pq.read_table(single)
    region = pa.array(["330802" if i % 3 == 0 else None for i in range(table.num_rows)], type=pa.string())
    src = tmp_path / "with-region.parquet"
    pq.write_table(table.append_column("region", region), src)
    a, b = tmp_path / "memory.parquet", tmp_path / "chunked.parquet"
    _rate("huzhou", str(src), "-o", str(a))
    _rate("huzhou", str(src), "--chunk-rows", "4000", "-o", str(b))
    assert a.read_bytes() == b.read_bytes()
    out = pq.read_table(b, columns=["jurisdiction", "reasons"])
    moved = out["jurisdiction"].to_pylist()[::3]
    assert set(moved) == {"outside"}
    assert "division 330802 (region)" in out["reasons"].to_pylist()[0]


def test_per_chunk_output_files_hold_the_same_rows(tmp_path, contiguous, shuffled, monkeypatch):
    """``-o DIR/``: one part file per chunk. Firms contiguous: the chunks are consecutive runs of
    the input, so the part files read in order are the one-file output's rows in order; spilled:
    one part per firm bucket, the same rows after sorting by firm and year."""
    monkeypatch.setattr(results_module, "CHUNK_ROWS", 4_096)
    single, ds = contiguous
    a, parts = tmp_path / "memory.parquet", tmp_path / "parts"
    _rate(str(KINDS), str(single), "-o", str(a))
    out = _rate(str(KINDS), str(ds), "--chunk-rows", "3000", "-o", str(parts))  # a name without extension
    assert "firms contiguous" in out and f"wrote {parts}" in out
    files = parts_of(parts)
    assert len(files) > 2 and f"({len(files)} chunks" in out
    assert [f.name for f in files][:2] == ["part-00000.parquet", "part-00001.parquet"]
    whole = tmp_path / "whole.parquet"
    from ruleengine.scale.sink import ResultSink

    with ResultSink(whole) as sink:  # the parts concatenated, re-cut into canonical row groups
        sink.write(read_parts(parts))
    assert whole.read_bytes() == a.read_bytes()

    single_s, ds_s = shuffled
    b, parts_s = tmp_path / "memory-s.parquet", tmp_path / "parts-s"
    _rate(str(KINDS), str(single_s), "-o", str(b))
    (parts_s / "part-00999.parquet").parent.mkdir()
    (parts_s / "part-00999.parquet").write_bytes(b"stale part of an earlier run")
    (parts_s / "notes.txt").write_text("kept")
    out = _rate(str(KINDS), str(ds_s), "--chunk-rows", "3000", "-o", f"{parts_s}/")
    assert "spilled to firm buckets" in out
    assert same_rows(parts_s, b, tmp_path)
    assert (parts_s / "notes.txt").read_text() == "kept"  # only the part files are replaced


def test_a_directory_output_needs_a_partitioned_runner(tmp_path, contiguous):
    single, _ = contiguous
    result = CliRunner().invoke(main, ["rate", "huzhou", str(single), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "goes with --engine chunked|spark|dask or --chunk-rows" in result.output
