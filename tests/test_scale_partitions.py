"""Random firm-complete partitions give byte-identical results to the one-batch run (issue #10 item 2).

Portfolios come from ``ruleengine.io.sample`` (random seed, size and messiness: bad cells,
out-of-range values, duplicate firm-years) and the golden portfolio; partitions are random
assignments of whole firms (some partitions empty), rows shuffled inside each partition. The
phases run per partition (stage 1 → partials → one merge → tables → stage 2) and the results,
put back in input order, must write the same CSV bytes as the one-batch run, for every bundled
rulebook.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ruleengine
from ruleengine import pipeline
from ruleengine.io import sample
from ruleengine.scale.partition import (
    FirmSplitError,
    buckets,
    check_firm_complete,
    firm_keys,
    in_input_order,
    rate_partitions,
    take_raw,
)

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden" / "portfolios" / "generated.csv"
BOOKS = ["huzhou", "quzhou", "shenzhen", "national"]
PLANS = {b: ruleengine.load(b) for b in BOOKS}


def _csv(table) -> bytes:
    buf = io.BytesIO()
    pacsv.write_csv(table, buf)
    return buf.getvalue()


def _partitioned_csv(plan, raw, k: int, rng: np.random.Generator) -> tuple[bytes, list[np.ndarray]]:
    """Rate ``raw`` in ``k`` random firm-complete partitions, rows shuffled in each; CSV in input order."""
    ids = np.asarray(
        raw.columns["firm_id"].to_pylist() if hasattr(raw.columns["firm_id"], "to_pylist") else raw.columns["firm_id"],
        dtype=object,
    )
    firms = sorted({str(f).strip() for f in ids.tolist() if f is not None})
    part_of_firm = {f: int(rng.integers(0, k)) for f in firms}
    part = np.array(
        [
            part_of_firm.get(str(f).strip(), int(rng.integers(0, k))) if f is not None else int(rng.integers(0, k))
            for f in ids.tolist()
        ],
        dtype=np.int64,
    )
    rows = []
    for p in range(k):
        idx = np.flatnonzero(part == p)
        rng.shuffle(idx)
        rows.append(idx)
    parts = [take_raw(raw, r) for r in rows]
    results = rate_partitions(plan, parts, rows)
    assert [len(r) for r in results] == [len(r) for r in rows]
    return _csv(in_input_order(results, rows)), rows


@pytest.mark.parametrize("book", BOOKS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    firms=st.integers(0, 60),
    messy=st.sampled_from([0.0, 0.05, 0.3]),
    k=st.integers(1, 7),
    split_seed=st.integers(0, 2**32 - 1),
)
def test_random_partitions_of_random_portfolios_equal_one_batch(book, seed, firms, messy, k, split_seed):
    plan = PLANS[book]
    cols = sample.generate(firms, [2022, 2023, 2024], seed=seed, messy=messy)
    raw = pipeline.read(cols, [plan])
    whole = pipeline.rate(plan, None, raw=raw)
    got, rows = _partitioned_csv(plan, raw, k, np.random.default_rng(split_seed))
    assert got == _csv(whole.to_arrow())


@pytest.mark.parametrize("book", BOOKS)
def test_random_partitions_of_the_golden_portfolio_equal_one_batch(book):
    plan = PLANS[book]
    raw = pipeline.read(GOLDEN, [plan])
    whole = pipeline.rate(plan, None, raw=raw)
    expected = _csv(whole.to_arrow())
    rng = np.random.default_rng(20261202)
    for k in (1, 3, 7):  # with 7 partitions over the golden firms some are small, and one may be empty
        got, rows = _partitioned_csv(plan, raw, k, rng)
        assert got == expected, (book, k)


def test_empty_partitions_and_a_portfolio_with_duplicates_and_bad_rows():
    """Messy data (duplicate firm-years, bad cells) in 5 partitions, two of them empty: the
    duplicate messages name rows of the whole input, not of the partition."""
    plan = PLANS["huzhou"]
    cols = sample.generate(40, [2022, 2023], seed=7, messy=0.3)
    raw = pipeline.read(cols, [plan])
    whole = pipeline.rate(plan, None, raw=raw)
    reasons = whole["reasons"].tolist()
    assert any("duplicate firm-year" in r for r in reasons)  # the case is really exercised
    ids = np.asarray(cols["firm_id"], dtype=object)
    b = buckets(ids, 3)
    rows = [
        np.flatnonzero(b == 0)[::-1],
        np.zeros(0, dtype=np.int64),
        np.flatnonzero(b == 1),
        np.zeros(0, dtype=np.int64),
        np.flatnonzero(b == 2),
    ]
    results = rate_partitions(plan, [take_raw(raw, r) for r in rows], rows)
    assert _csv(in_input_order(results, rows)) == _csv(whole.to_arrow())
    # the duplicate rows' messages: "also on row N" with N the 1-based row of the whole input
    issues = sorted((i.row, i.message) for r in results for i in r.issues if "duplicate" in i.message)
    assert issues == sorted((i.row, i.message) for i in whole.issues if "duplicate" in i.message)


def test_a_partitioning_that_splits_a_firm_is_refused_with_the_firm_named():
    plan = PLANS["quzhou"]
    cols = sample.generate(10, [2022, 2023], seed=3)
    raw = pipeline.read(cols, [plan])
    ids = np.asarray(cols["firm_id"], dtype=object)
    first = ids[0]
    rows_a = np.flatnonzero(ids != first)
    rows_b = np.flatnonzero(ids == first)
    # the firm's 2022 row in one partition, its 2023 row in the other
    rows = [np.concatenate([rows_a, rows_b[:1]]), rows_b[1:]]
    with pytest.raises(FirmSplitError, match=rf"firm '{first}' has rows in partitions 0, 1; all years of a firm"):
        rate_partitions(plan, [take_raw(raw, r) for r in rows], rows)
    # a caller's own partitioning checked directly; spaces around an id do not make another firm
    with pytest.raises(FirmSplitError, match="firm 'F1' has rows in partitions 1, 2"):
        check_firm_complete([["F2"], ["F1", "F3"], [" F1 ", None], [None]])
    check_firm_complete([["F2", None], ["F1", "F1"], [None, ""]])  # rows without an id may be anywhere


def test_the_firm_hash_is_stable():
    """The partitioning of a dataset must not change between runs or machines: fixed values
    (splitmix64 of a polynomial of the UTF-8 bytes, computed by hand once and kept)."""
    keys = firm_keys(["F1", " F1", "", "企业-甲"])
    assert keys[0] == keys[1]
    assert keys[2] == 0  # the empty text (no firm): polynomial 0, length 0, finaliser of 0 is 0
    assert len({int(keys[0]), int(keys[3])}) == 2
    assert firm_keys(np.array([3011.0, 12.0])).tolist() == firm_keys(["3011", "12"]).tolist()

    # the same key computed with plain Python integers (the reference for the vectorised code)
    def ref(s: str) -> int:
        m = (1 << 64) - 1
        h = 0
        for byte in s.encode():
            h = (h * 0x100000001B3 + byte) & m
        h = (h + len(s.encode()) * 0x94D049BB133111EB) & m
        h ^= h >> 30
        h = (h * 0xBF58476D1CE4E5B9) & m
        h ^= h >> 27
        h = (h * 0x94D049BB133111EB) & m
        return h ^ (h >> 31)

    assert [int(k) for k in keys] == [ref("F1"), ref("F1"), ref(""), ref("企业-甲")]


def test_a_shuffled_partition_is_put_back_in_input_order_by_slicing():
    from ruleengine.scale.spark import in_input_order

    # two map tasks' runs (rows 10-12, then 0-6 less 3 and 4) arrive in that order: slices, no gather
    rows = np.array([10, 11, 12, 0, 1, 2, 5, 6])
    table = pa.table({"v": [f"r{r}" for r in rows.tolist()], "__row": rows})
    out, got = in_input_order(table, rows)
    assert got.tolist() == [0, 1, 2, 5, 6, 10, 11, 12]
    assert out.column("v").to_pylist() == ["r0", "r1", "r2", "r5", "r6", "r10", "r11", "r12"]
    assert out.column("v").num_chunks == 2  # the two runs as slices of the columns
    # the order a real local[2] shuffle handed a reducer the runs of a 10-file dataset: runs that
    # follow each other ascending (file 1 then 6) are cut where other runs' rows fall between them,
    # never gathered row by row; consecutive files that arrive together (7, 8) stay one slice
    files = [1, 6, 2, 0, 7, 8, 4, 5, 3, 9, 10]
    rows = np.concatenate([np.arange(f * 3, f * 3 + 3) for f in files])
    out, got = in_input_order(pa.table({"v": rows * 10}), rows)
    assert got.tolist() == list(range(33))
    assert out.column("v").to_pylist() == [r * 10 for r in range(33)]
    assert out.column("v").num_chunks == 8  # 0, 1, 2, 3, 4-5, 6, 7-8, 9-10: slices, no copy
    # rows interleaved finely (two runs taking turns row by row) are gathered row by row
    rows = np.r_[np.arange(0, 4096, 2), np.arange(1, 4096, 2)]
    out, got = in_input_order(pa.table({"v": rows * 10}), rows)
    assert got.tolist() == list(range(4096))
    assert out.column("v").to_pylist() == [r * 10 for r in range(4096)]
    assert out.column("v").num_chunks == 1
    # already in order: the same table back
    rows = np.arange(4)
    table = pa.table({"v": rows})
    assert in_input_order(table, rows)[0] is table


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_worker_started_with_a_tiny_malloc_trim_threshold_keeps_its_heap(tmp_path):
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536: glibc then maps and faults in
    every partition-sized array afresh (about twice a task's CPU). The first partition task of any
    process (partition.warm_up) sets the thresholds to what glibc's defaults reach — with that
    environment and without it (a fresh Spark Python worker starts at glibc's 128 kB threshold)."""
    code = "from ruleengine.scale.partition import warm_up; from ruleengine import pipeline; warm_up(); print(pipeline.keep_heap_for_reuse())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    plain, dask_like = _printed(code, env), _printed(code, {**env, "MALLOC_TRIM_THRESHOLD_": "65536"})
    assert (plain, dask_like) == ("True", "True")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise huge pages: Linux")
def test_a_worker_gives_no_huge_page_advice_unless_told_to(tmp_path):
    """numpy advises huge pages for every array of 4 MB or more; on first touch of such memory in
    a fresh worker the kernel tried to compact memory for a 2 MB page on every fault (0.8–1.2 s of
    system CPU in a first 500k-row task, against 0.2–0.3 s without). warm_up turns the advice off,
    unless NUMPY_MADVISE_HUGEPAGE (numpy's own switch) is set."""
    code = (
        "import numpy; from ruleengine.scale.partition import warm_up; warm_up(); "
        "from numpy._core import multiarray as m; print(m._get_madvise_hugepage())"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    default, told = _printed(code, env), _printed(code, {**env, "NUMPY_MADVISE_HUGEPAGE": "1"})
    assert (default, told) == ("False", "True")


def _printed(code: str, env: dict[str, str]) -> str:
    """What ``code`` prints in a fresh interpreter with environment ``env`` (a new worker process)."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


WORKER_FIRST_TASK = """
import sys
import pyarrow as pa
import ruleengine
from ruleengine.scale.partition import task, warm_up
from ruleengine.scale.spark import _whole  # a Spark task's first step (needs no pyspark)

plan = ruleengine.load(sys.argv[2])
warm_up()  # a worker's set-up, before its first task's clock
before = set(sys.modules)
with pa.ipc.open_file(sys.argv[1]) as f:  # the partition as a Spark worker receives it: Arrow batches
    batches = [f.get_batch(i) for i in range(f.num_record_batches)]
table, rows = _whole(batches)
partials, _ = task(plan, table, rows, {}, final=False, source="p", names=table.column_names)
from ruleengine.scale.partition import tables_of
tables = tables_of(plan, [partials])
task(plan, table, rows, tables, final=True, source="p", names=table.column_names, out_dir=sys.argv[3], part=0)
print(" ".join(sorted(m for m in set(sys.modules) - before if m.split(".")[0] in ("ruleengine", "pandas", "dateutil"))))
"""


def test_a_fresh_workers_first_task_imports_nothing(tmp_path):
    """A partition task's clock counts the partition's work, not a fresh worker's imports
    (partition.warm_up). Before session 7 a Spark worker imported pandas (pyarrow does so at the
    first ``to_numpy``, here of the row numbers: ~0.35 s of CPU) and four ruleengine modules inside
    its first task's clock."""
    import subprocess

    csv = sample.write(sample.generate(40, [2022, 2023], seed=3), tmp_path / "p.csv")
    text = {"firm_id": pa.string(), "industry": pa.string()}
    table = pacsv.read_csv(csv, convert_options=pacsv.ConvertOptions(column_types=text))
    table = table.append_column("__row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    arrow = tmp_path / "p.arrow"
    with pa.ipc.new_file(arrow, table.schema) as w:
        for b in table.to_batches(max_chunksize=25):
            w.write_batch(b)
    book = ROOT / "rulebooks" / "huzhou.yaml"
    (tmp_path / "out").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", WORKER_FIRST_TASK, str(arrow), str(book), str(tmp_path / "out")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == ""
    assert list((tmp_path / "out").glob("*.parquet"))  # the final task did write its part
