"""`diff --data` and `compare` on every engine (issue #18 item 4), and datasets at URLs.

A multi-city portfolio (Huzhou, Quzhou, Shenzhen firms; messy: bad cells such as 'n/a?' in number
columns, duplicate firm-years, missing ids — so unrated firm-years), rows shuffled, written once as
one Parquet file (the in-memory reference reads it) and once as a dataset of 3 Parquet files
holding the same rows in the same order. `diff --data` (two changes: a band edge and a factor, so
attribution rates the rulebook with each change alone and in both orders) and `compare` (four
methods) are run through the real CLI on the in-memory path and with `--engine chunked|spark|dask`
at 3 partitions: the JSON (and Markdown) on stdout must be the same bytes.

Spark is the test run's one `local[2,4]` session and Dask its one LocalCluster (tests/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import ruleengine
from ruleengine.cli import main
from ruleengine.io import sample
from ruleengine.scale.chunked import rate_dataset

ROOT = Path(__file__).resolve().parent.parent
HUZHOU = ROOT / "rulebooks" / "huzhou.yaml"
EDGE_OLD = '{id: "3", lower: 0.8, upper: 1.2, label: level 3}\n      - {id: "4", lower: 1.2,'
EDGE_NEW = '{id: "3", lower: 0.8, upper: 1.1, label: level 3}\n      - {id: "4", lower: 1.1,'
FACTOR_OLD = "values: {2021-01-01: 2.0}"
FACTOR_NEW = "values: {2021-01-01: 2.0, 2023-01-01: 1.8}"
# PySpark 4.3 warns that it does not fully support pandas 3 (the spark extra pins pandas < 3)
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")


@pytest.fixture(scope="module")
def portfolio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analyses")
    cols = sample.generate(300, [2021, 2022, 2023], seed=31, messy=0.08)
    table = pq.read_table(sample.write(cols, tmp / "src.parquet"))
    table = table.take(pa.array(np.random.default_rng(9).permutation(table.num_rows)))
    assert set(table.column("city").to_pylist()) >= {"huzhou", "quzhou", "shenzhen"}
    single = tmp / "portfolio.parquet"
    pq.write_table(table, single)
    ds = tmp / "ds"
    ds.mkdir()
    cuts = [0, 250, 251, table.num_rows]  # one file of a single row; firms cross files
    for i in range(3):
        pq.write_table(table.slice(cuts[i], cuts[i + 1] - cuts[i]), ds / f"part-{i}.parquet")
    # the bad rows are there, and unrated with their reason (a bad row never fails a partition)
    res = ruleengine.rate("huzhou", single)
    reasons = [r for r in res["reasons"].tolist() if "is not a number" in r]
    assert reasons and (res["status"] == "unrated").sum() >= len(reasons)
    text = HUZHOU.read_text(encoding="utf-8")
    assert EDGE_OLD in text and FACTOR_OLD in text
    new = tmp / "huzhou-new.yaml"
    version = next(ln for ln in text.splitlines() if ln.startswith("version: "))
    major = int(version.split(": ")[1].split(".")[0]) + 1
    new.write_text(
        text.replace(EDGE_OLD, EDGE_NEW).replace(FACTOR_OLD, FACTOR_NEW).replace(version, f"version: {major}.0.0"),
        encoding="utf-8",
    )
    return single, ds, new


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def _engine_args(engine: str, request) -> list[str]:
    if engine == "chunked":
        return ["--engine", "chunked", "--chunk-rows", "200"]
    if engine == "spark":
        request.getfixturevalue("spark")  # the test run's session: the CLI's getOrCreate finds it
        return ["--engine", "spark", "--master", "local[2,4]", "--partitions", "3"]
    client = request.getfixturevalue("dask_client")
    return ["--engine", "dask", "--scheduler", client.scheduler.address, "--partitions", "3"]


@pytest.fixture(scope="module")
def diff_in_memory(portfolio):
    single, _, new = portfolio
    out = _cli("diff", str(HUZHOU), str(new), "--data", str(single), "--format", "json")
    got = json.loads(out)
    # something to compare: firms move, both changes are attributed, bad rows are counted
    assert got["impact"]["moved"] > 0 and len(got["attribution"]["alone"]) == 2
    assert got["impact"]["firm_years"] == pq.read_metadata(single).num_rows
    md = _cli("diff", str(HUZHOU), str(new), "--data", str(single), "--format", "markdown")
    return out, md


@pytest.mark.parametrize("engine", ["chunked", "spark", "dask"])
def test_diff_on_an_engine_is_the_in_memory_diff(portfolio, diff_in_memory, engine, request):
    _, ds, new = portfolio
    args = ["diff", str(HUZHOU), str(new), "--data", str(ds), *_engine_args(engine, request)]
    assert _cli(*args, "--format", "json") == diff_in_memory[0]
    if engine == "chunked":
        assert _cli(*args, "--format", "markdown") == diff_in_memory[1]


@pytest.fixture(scope="module")
def compare_in_memory(portfolio):
    single, _, _ = portfolio
    out = _cli("compare", "huzhou", "quzhou", "shenzhen", "national", "--data", str(single), "--format", "json")
    got = json.loads(out)
    # each city method rates its own jurisdiction: the city pairs share no firm, each pair with national does
    assert len(got["pairs"]) == 6
    assert all(bool(p["largest_differences"]) == (p["both_rated"] > 0) for p in got["pairs"])
    assert sum(p["both_rated"] > 0 for p in got["pairs"]) == 3
    assert any(d["firm_name"] for p in got["pairs"] for d in p["largest_differences"])
    return out


@pytest.mark.parametrize("engine", ["chunked", "spark", "dask"])
def test_compare_on_an_engine_is_the_in_memory_compare(portfolio, compare_in_memory, engine, request):
    _, ds, _ = portfolio
    args = ["compare", "huzhou", "quzhou", "shenzhen", "national", "--data", str(ds), "--format", "json"]
    assert _cli(*args, *_engine_args(engine, request)) == compare_in_memory


@pytest.fixture(scope="module")
def reference(portfolio, tmp_path_factory):
    """The local chunked runner's output for the dataset (itself byte-identical to in memory)."""
    _, ds, _ = portfolio
    out = tmp_path_factory.mktemp("ref") / "local.parquet"
    rate_dataset(ruleengine.load("huzhou"), ds, out, 200)
    return out.read_bytes()


def test_spark_reads_a_url_itself(portfolio, reference, spark, tmp_path):
    _, ds, _ = portfolio
    out = tmp_path / "url.parquet"
    url = ds.resolve().as_uri()  # file:///…: Spark (Hadoop) opens it, as it would s3a://
    result = CliRunner().invoke(
        main,
        ["rate", "huzhou", url, "--engine", "spark", "--master", "local[2,4]", "--partitions", "3", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert f"from {url} rated on spark" in result.output
    assert out.read_bytes() == reference


def test_dask_reads_an_fsspec_url(portfolio, reference, dask_client, tmp_path):
    _, ds, _ = portfolio
    out = tmp_path / "url.parquet"
    url = ds.resolve().as_uri()
    args = ["rate", "huzhou", url, "--engine", "dask", "--scheduler", dask_client.scheduler.address, "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == reference


def test_an_unreadable_url_is_a_clear_error(spark, tmp_path):
    # no S3A jars in the test image: Spark says so; nothing is opened locally, no traceback
    result = CliRunner().invoke(
        main,
        ["rate", "huzhou", "s3a://no-such-bucket/firms/", "--engine", "spark", "-o", str(tmp_path / "o.parquet")],
    )
    assert result.exit_code == 1, result.output
    assert "s3a://no-such-bucket/firms/: Spark cannot read it" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engine", "chunked"], "a URL is read by --engine spark"),
        (["--engine", "local"], "does not exist"),
    ],
    ids=["chunked-url", "local-url"],
)
def test_urls_need_a_distributed_engine(portfolio, args, message):
    _, ds, new = portfolio
    result = CliRunner().invoke(main, ["diff", str(HUZHOU), str(new), "--data", ds.resolve().as_uri(), *args])
    assert result.exit_code in (1, 2), result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_engine_options_need_an_engine(portfolio):
    single, _, new = portfolio
    result = CliRunner().invoke(main, ["compare", "huzhou", "quzhou", "--data", str(single), "--partitions", "3"])
    assert result.exit_code == 2
    assert "go with --engine chunked|spark|dask" in result.output


def test_rate_engine_chunked_is_chunk_rows(portfolio, reference, tmp_path):
    _, ds, _ = portfolio
    out = tmp_path / "c.parquet"
    result = CliRunner().invoke(main, ["rate", "huzhou", str(ds), "--engine", "chunked", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "spilled to firm buckets" in result.output  # shuffled rows: firms are not contiguous
    assert out.read_bytes() == reference
