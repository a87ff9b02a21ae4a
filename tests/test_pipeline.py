"""The one pipeline: read once, library refused with a location, phases that merge exactly."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import ruleengine
from ruleengine import pipeline
from ruleengine.cli import main
from ruleengine.engine import benchmarks as bm
from ruleengine.engine.evaluator import advance, finish, stage1
from ruleengine.io import data as data_module

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "golden" / "portfolios" / "generated.csv"
HUZHOU = ROOT / "rulebooks" / "huzhou.yaml"
LIBRARY = ROOT / "rulebooks" / "lib" / "accounting.yaml"


@pytest.fixture
def reads(monkeypatch):
    """Counts every data file the engine opens (read_file is the one place files are read)."""
    seen: list[str] = []
    original = data_module.read_file

    def counting(path, *args, **kwargs):
        seen.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(data_module, "read_file", counting)
    return seen


def test_compare_with_three_rulebooks_reads_the_data_once(reads):
    result = CliRunner().invoke(main, ["compare", "huzhou", "quzhou", "shenzhen", "--data", str(GENERATED)])
    assert result.exit_code == 0, result.output
    assert reads == [str(GENERATED)]


def test_diff_with_one_edit_reads_the_data_once(tmp_path, reads):
    text = HUZHOU.read_text(encoding="utf-8")
    edited = tmp_path / "huzhou.yaml"
    old = '{id: "3", lower: 0.8, upper: 1.2, label: level 3}\n      - {id: "4", lower: 1.2,'
    new = '{id: "3", lower: 0.8, upper: 1.1, label: level 3}\n      - {id: "4", lower: 1.1,'
    assert old in text
    edited.write_text(text.replace(old, new), encoding="utf-8")
    result = CliRunner().invoke(main, ["diff", str(HUZHOU), str(edited), "--data", str(GENERATED)])
    assert result.exit_code == 0, result.output
    assert "threshold between 3 and 4: 1.2 → 1.1" in result.output
    assert reads == [str(GENERATED)]


@pytest.mark.parametrize(
    "args",
    [
        ["rate", str(LIBRARY), str(GENERATED)],
        ["explain", str(LIBRARY), str(GENERATED), "--firm", "x"],
        ["compare", "huzhou", str(LIBRARY), "--data", str(GENERATED)],
    ],
    ids=["rate", "explain", "compare"],
)
def test_a_library_given_as_a_rulebook_is_a_located_error(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "internal error" not in result.output
    assert "rulebooks/lib/accounting.yaml:1:1: error: this is a library" in result.output
    assert "not a rulebook: it has no rating to compute (at library)" in result.output


def test_the_progress_hook_sees_every_phase_in_order():
    seen: list[str] = []
    ruleengine.rate("quzhou", GENERATED, progress=lambda phase, done, total: seen.append(phase))
    assert seen == ["read", "check", "stage 1", "benchmarks", "stage 2", "results"]


def _csv(results) -> bytes:
    buf = io.BytesIO()
    pacsv.write_csv(results.to_arrow(), buf)
    return buf.getvalue()


@pytest.mark.parametrize("book", ["huzhou", "quzhou", "shenzhen", "national"])
def test_explicit_phases_over_partitions_equal_one_batch(book):
    """stage 1 per partition → partials → merge → tables → stage 2 per partition, by hand."""
    plan = ruleengine.load(book)
    raw = pipeline.read(GENERATED, [plan])
    whole = pipeline.rate(plan, None, raw=raw)
    ids = whole["firm_id"]
    firms = sorted(set(ids.tolist()))
    part_of = {f: i % 3 for i, f in enumerate(firms)}  # firm-complete partitions
    rows = [np.flatnonzero(np.array([part_of[f] == p for f in ids.tolist()])) for p in range(3)]
    batch = pipeline.prepare(plan, raw)
    frames = [stage1(plan, batch.take(r)) for r in rows]
    merged = bm.merge(*[bm.partials(f) for f in frames])
    tables = bm.tables(plan, merged)
    assert tables.keys() == whole.tables.keys()
    for name, table in tables.items():
        assert table.to_json() == whole.tables[name].to_json()  # bit-identical benchmark tables
    for r, frame in zip(rows, frames, strict=True):
        frame.given_tables.update(tables)
        advance(frame)
        ev = finish(frame)
        for name in plan.ratings:
            assert np.array_equal(ev.levels[name], whole.evaluation.levels[name][r])
        for name, v in ev.values.items():
            if isinstance(v, np.ndarray) and v.dtype == np.float64:
                assert np.array_equal(v, np.asarray(whole.evaluation.values[name])[r], equal_nan=True), name


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=60), st.randoms())
def test_exact_sums_equal_fsum_in_any_order_and_partitioning(values, rnd):
    x = np.array(values, dtype=np.float64)
    bins = np.array([rnd.randrange(3) for _ in values], dtype=np.int64)
    whole = bm.exact_sums(bins, x, 3)
    for b in range(3):
        try:
            expected = math.fsum(x[bins == b].tolist())
        except OverflowError:  # beyond float64: plain addition gives an infinity
            expected = math.inf if sum(x[bins == b].tolist(), 0.0) > 0 else -math.inf
        assert bm.to_float(whole[b]) == expected
    # split into random pieces, summed apart, merged: the same integers
    cut = sorted(rnd.randrange(len(values) + 1) for _ in range(2))
    pieces = [slice(0, cut[0]), slice(cut[0], cut[1]), slice(cut[1], None)]
    merged = [0, 0, 0]
    for p in pieces:
        for b, s in enumerate(bm.exact_sums(bins[p], x[p], 3)):
            merged[b] += s
    assert merged == whole


def test_exact_sums_where_plain_addition_depends_on_order():
    x = np.array([1e16, 1.0, -1e16, 1.0, 3.0e-300, 2.0**-1074])
    order_a, order_b = sum(x.tolist()), sum(x[::-1].tolist())
    assert order_a != order_b  # plain float addition: the order matters
    [s] = bm.exact_sums(np.zeros(len(x), dtype=np.int64), x, 1)
    assert bm.to_float(s) == math.fsum(x.tolist()) == 2.0
