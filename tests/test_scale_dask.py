"""Dask (issue #18): a real LocalCluster (2 worker processes, loopback) gives the local runner's bytes.

The portfolio: sample firms in three cities, messy (bad cells, out-of-range values, duplicate
firm-years, so unrated firm-years), shuffled across 4 Parquet files; the test rulebook has every
benchmark kind (ratio of sums, mean, median, percentile rank), min-peers fallbacks (small groups),
two benchmark stages, prev() and baseline(). Reference: the local chunked runner on the same files.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from scale_parts import same_rows  # noqa: E402

import ruleengine  # noqa: E402
from ruleengine.io import sample  # noqa: E402
from ruleengine.scale import dask as rdask  # noqa: E402
from ruleengine.scale.chunked import rate_dataset  # noqa: E402
from ruleengine.scale.sink import parts_of  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KINDS = ROOT / "tests" / "data" / "scale_kinds.yaml"


@pytest.fixture
def client(dask_client):
    return dask_client  # one LocalCluster for the test run (tests/conftest.py)


@pytest.fixture(scope="module")
def portfolio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dask")
    cols = sample.generate(400, [2021, 2022, 2023], seed=21, messy=0.08)
    table = pq.read_table(sample.write(cols, tmp / "src.parquet"))
    table = table.take(pa.array(np.random.default_rng(5).permutation(table.num_rows)))
    assert set(table.column("city").to_pylist()) >= {"huzhou", "quzhou", "shenzhen"}
    ds = tmp / "ds"
    ds.mkdir()
    cuts = np.linspace(0, table.num_rows, 5).astype(int)
    for i in range(4):
        pq.write_table(table.slice(cuts[i], cuts[i + 1] - cuts[i]), ds / f"part-{i}.parquet")
    plan = ruleengine.load(str(KINDS))
    reference = tmp / "local.parquet"
    run = rate_dataset(plan, ds, reference, 300)
    assert 0 < run.rated < run.rows  # rated and unrated firm-years
    return plan, ds, reference.read_bytes(), reference


@pytest.mark.parametrize("k", [1, 3, 7])
def test_dask_equals_the_local_runner_byte_for_byte(tmp_path, client, portfolio, k):
    plan, ds, reference, _ = portfolio
    out = tmp_path / "dask.parquet"
    n = rdask.rate(plan, dd.read_parquet(str(ds)), out, npartitions=k, client=client, source=str(ds))
    assert n == pq.read_metadata(out).num_rows
    assert out.read_bytes() == reference


def test_a_worker_killed_mid_job_gives_the_same_bytes(tmp_path, client, portfolio):
    plan, ds, reference, _ = portfolio
    killed: list[int] = []

    def kill_one(stage: str) -> None:
        if stage == "benchmarks 1" and not killed:  # between two passes: the persisted partitions of
            pids = client.run(os.getpid)  # that worker are lost and recomputed elsewhere
            pid = sorted(pids.values())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            time.sleep(0.5)

    out = tmp_path / "dask.parquet"
    rdask.rate(plan, dd.read_parquet(str(ds)), out, npartitions=3, client=client, source=str(ds), on_pass=kill_one)
    assert killed
    assert out.read_bytes() == reference
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it for the next tests


def test_the_cli_engine_dask(tmp_path, portfolio):
    from click.testing import CliRunner

    from ruleengine.cli import main

    plan, ds, reference, _ = portfolio
    out = tmp_path / "cli.parquet"
    result = CliRunner().invoke(main, ["rate", str(KINDS), str(ds), "--engine", "dask", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == reference


@pytest.mark.parametrize("k", [1, 3, 7])
def test_per_partition_output_holds_the_local_runners_rows(tmp_path, client, portfolio, k):
    """``-o DIR``: the workers write one part file per (non-empty) partition; the rows, sorted by
    firm and year, are the local runner's byte for byte. A second run into the same directory
    replaces the first run's part files (fewer partitions: no stale part is left)."""
    plan, ds, _, reference = portfolio
    out = tmp_path / "parts"
    rdask.rate(plan, str(ds), out, npartitions=7, client=client, source=str(ds))
    n = rdask.rate(plan, str(ds), out, npartitions=k, client=client, source=str(ds))  # files read by the workers
    files = parts_of(out)
    assert 1 <= len(files) <= k and all(int(f.stem.split("-")[1]) < k for f in files)
    assert sum(pq.read_metadata(f).num_rows for f in files) == n
    assert same_rows(out, reference, tmp_path)


def test_a_worker_killed_mid_job_gives_the_same_part_files(tmp_path, client, portfolio):
    plan, ds, _, reference = portfolio
    killed: list[int] = []

    def kill_one(stage: str) -> None:
        if stage == "benchmarks 1" and not killed:
            pid = sorted(client.run(os.getpid).values())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            time.sleep(0.5)

    clean = tmp_path / "clean"
    rdask.rate(plan, str(ds), clean, npartitions=3, client=client, source=str(ds))
    out = tmp_path / "parts"
    rdask.rate(plan, str(ds), out, npartitions=3, client=client, source=str(ds), on_pass=kill_one)
    assert killed
    assert [f.read_bytes() for f in parts_of(out)] == [f.read_bytes() for f in parts_of(clean)]
    assert same_rows(out, reference, tmp_path)
    client.wait_for_workers(2, timeout=60)


def test_the_cli_engine_dask_writes_part_files(tmp_path, portfolio):
    from click.testing import CliRunner

    from ruleengine.cli import main

    plan, ds, _, reference = portfolio
    out = tmp_path / "parts"
    args = ["rate", str(KINDS), str(ds), "--engine", "dask", "--partitions", "3", "-o", f"{out}/"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "part files, one per partition" in result.output
    assert same_rows(out, reference, tmp_path)


def test_the_python_api_rates_a_dataframe_and_a_dataset(tmp_path, client, portfolio):
    """``ruleengine.dask.rate(book, data)``: a dask DataFrame → the local run's rows as a pyarrow
    Table; a dataset path and an output file → the local runner's bytes."""
    import ruleengine.dask

    plan, ds, reference_bytes, reference = portfolio
    got = ruleengine.dask.rate(plan, dd.read_parquet(str(ds)), npartitions=3, client=client)
    want = pq.read_table(reference)
    assert got.cast(want.schema).equals(want)
    out = tmp_path / "api.parquet"
    n = ruleengine.dask.rate(str(KINDS), str(ds), out, npartitions=3, client=client)
    assert n == pq.read_metadata(out).num_rows
    assert out.read_bytes() == reference_bytes


def test_the_python_api_names_what_it_takes(portfolio):
    import ruleengine.dask

    with pytest.raises(TypeError, match="a dask DataFrame or local Parquet .*, not dict"):
        ruleengine.dask.rate(portfolio[0], {"firm_id": ["F1"]})


@pytest.mark.parametrize("command", ["rate", "diff"])
def test_an_unreachable_scheduler_is_a_one_line_error(tmp_path, portfolio, monkeypatch, command):
    """--scheduler that does not answer: `error:` naming the address, exit 1 (was dask's OSError
    after 30 s: internal error, exit 3); a malformed address likewise."""
    from click.testing import CliRunner

    from ruleengine.cli import main
    from ruleengine.scale import engines

    monkeypatch.setattr(engines, "SCHEDULER_TIMEOUT_S", 1)
    _, ds, _, _ = portfolio
    if command == "rate":
        args = ["rate", str(KINDS), str(ds), "-o", str(tmp_path / "out.parquet")]
    else:
        args = ["diff", str(KINDS), str(KINDS), "--data", str(ds)]
    r = CliRunner().invoke(main, [*args, "--engine", "dask", "--scheduler", "tcp://127.0.0.1:1"])
    assert r.exit_code == 1, r.output
    assert r.output == (
        "error: cannot connect to the Dask scheduler at tcp://127.0.0.1:1 (--scheduler): no answer "
        "within 1 s; is it running, and is the address tcp://HOST:PORT?\n"
    )
    assert not (tmp_path / "out.parquet").exists()
    r = CliRunner().invoke(main, [*args, "--engine", "dask", "--scheduler", "nohost"])
    assert r.exit_code == 1, r.output
    assert (
        r.output
        == "error: --scheduler nohost: not a Dask scheduler address (missing port number in address 'nohost')\n"
    )
    assert "Traceback" not in r.output
