"""The small-batch paths of evaluation and JSON writing (issue #17: one firm per HTTP request)
give exactly what the general paths give.

- A firm's rows rated alone against a run's tables (as the service rates them: a list of dicts)
  give the same JSON text, cells, reasons and fallbacks as the same rows inside the whole run, on
  every bundled rulebook, with defects (blank, negative and non-numeric cells, duplicates),
  defaults, benchmark fallbacks and previous / baseline years.
- The small-batch branches switched off (``evaluator._FEW_ROWS``, ``results.TINY_JSON_ROWS``)
  give the same values to the bit, the same notes, CSV bytes and JSON text.
- The number fast paths (arithmetic of two numbers, ``coalesce`` of one value) against numpy's.
"""

from __future__ import annotations

import io
import json
import math
import operator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ruleengine
from ruleengine import pipeline
from ruleengine.engine import evaluator, results
from ruleengine.io.data import Category
from ruleengine.io.sample import generate
from ruleengine.rulebook.functions import FUNCTIONS

ROOT = Path(__file__).resolve().parents[1]
BOOKS = sorted(p.stem for p in (ROOT / "rulebooks").glob("*.yaml"))
YEARS = [2020, 2021, 2022, 2023]  # 2020: the baseline year of the rulebooks that have one


def _bits(v: object) -> object:
    if isinstance(v, Category):
        return ("category", np.asarray(v.codes).tobytes(), list(v.labels))
    if isinstance(v, np.ndarray):
        return ("array", str(v.dtype), v.shape, np.ascontiguousarray(v).tobytes())
    if isinstance(v, tuple):
        return tuple(_bits(x) for x in v)
    return v


def _snapshot(res: ruleengine.Results) -> dict[str, object]:
    ev = res.evaluation
    assert ev is not None
    out = io.BytesIO()
    res.write_csv(out)
    lines = io.StringIO()
    res.write_jsonl(lines)
    return {
        "csv": out.getvalue(),
        "json": res.to_json(),
        "jsonl": lines.getvalue(),
        "values": {k: _bits(v) for k, v in ev.values.items()},
        "levels": {k: _bits(v) for k, v in ev.levels.items()},
        "aux": {k: _bits(v) for k, v in ev.aux.items()},
        "rated": _bits(ev.rated),
        "reasons": (_bits(ev.reasons[0]), ev.reasons[1]),
        "fallbacks": (_bits(ev.fallbacks[0]), ev.fallbacks[1]),
        "issues": [(i.row, i.column, i.message) for i in res.issues],
    }


def _json_row(cols: dict[str, np.ndarray], i: int) -> dict[str, object]:
    """Row ``i`` as the service's JSON body gives it (numbers, text, null for a blank)."""
    row: dict[str, object] = {}
    for k, col in cols.items():
        v = col[i].item() if hasattr(col[i], "item") else col[i]
        row[k] = None if v == "" or (isinstance(v, float) and math.isnan(v)) else v
    return row


class Run:
    """A generated portfolio with defects rated as one batch, and its benchmark tables."""

    def __init__(self, name: str):
        self.plan = ruleengine.load(name)
        self.cols = generate(60, YEARS, seed=21, messy=0.06)
        self.whole = pipeline.rate(self.plan, dict(self.cols))
        self.tables = self.whole.tables
        firm_ids = self.cols["firm_id"]
        self.firms = list(dict.fromkeys(firm_ids.tolist()))
        self.rows_of = {f: np.flatnonzero(firm_ids == f).tolist() for f in self.firms}
        # a duplicate firm-year's message names the file row of its first copy, which depends on
        # the batch: those firms are compared between paths only, not with the run
        self.complete = [f for f in self.firms if len(self.rows_of[f]) == len(YEARS)]

    def records(self, rows: list[int]) -> list[dict[str, object]]:
        return [_json_row(self.cols, i) for i in rows]


_RUNS: dict[str, Run] = {}


def _run(name: str) -> Run:
    if name not in _RUNS:
        _RUNS[name] = Run(name)
    return _RUNS[name]


@pytest.mark.parametrize("name", BOOKS)
def test_the_portfolio_takes_the_paths_under_test(name):
    """The generated run has what the properties below must cover: data problems, defaults,
    benchmark fallbacks, unrated rows, and firms with every year."""
    run = _run(name)
    ev = run.whole.evaluation
    assert ev is not None
    codes = {note.code for combo in [*ev.reasons[1], *ev.fallbacks[1]] for note in combo}
    assert "data" in codes and "benchmark_fallback" in codes, codes
    assert (run.whole["status"] == "unrated").any() and (run.whole["status"] == "rated").any()
    assert (run.whole["defaults"] != "").any()
    assert max(len(r) for r in run.rows_of.values()) >= len(YEARS)


@pytest.mark.parametrize("name", BOOKS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_firms_rated_alone_against_the_runs_tables_read_as_in_the_run(name, data):
    run = _run(name)
    firms = data.draw(st.lists(st.sampled_from(run.complete), min_size=1, max_size=3, unique=True), label="firms")
    rows = sorted(i for f in firms for i in run.rows_of[f])  # firm-complete: prev() and baseline() see all years
    alone = pipeline.rate(run.plan, run.records(rows), benchmarks=run.tables)
    expected = [run.whole.row(i) for i in rows]
    assert alone.to_records() == expected
    # exactly json.dumps of those records (NaN → null): the one-row JSON path against the general one
    assert alone.to_json() == json.dumps(expected, ensure_ascii=False, indent=1) + "\n"
    for j, i in enumerate(rows):
        assert alone.notes("reasons", j) == run.whole.notes("reasons", i)
        assert alone.notes("fallbacks", j) == run.whole.notes("fallbacks", i)


@pytest.mark.parametrize("name", BOOKS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_small_batch_paths_equal_the_general_ones(name, data, monkeypatch):
    """Any few rows (a firm's year without its previous one included), with the run's tables or
    with none (the batch is its own population: peer-group fallbacks, placeholders)."""
    run = _run(name)
    n = len(run.cols["firm_id"])
    rows = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5, unique=True), label="rows")
    given_tables = data.draw(st.booleans(), label="tables")
    records = run.records(sorted(rows))
    tables = run.tables if given_tables else None
    small = _snapshot(pipeline.rate(run.plan, records, benchmarks=tables))
    with monkeypatch.context() as m:
        m.setattr(evaluator, "_FEW_ROWS", 0)
        m.setattr(results, "TINY_JSON_ROWS", 0)
        general = _snapshot(pipeline.rate(run.plan, records, benchmarks=tables))
    for key in general:
        assert small[key] == general[key], key


@pytest.mark.parametrize("name", BOOKS)
def test_one_row_edge_cases_equal_the_general_paths(name, monkeypatch):
    """A row without a year, a row of an unknown industry, a row with every optional input
    blank, a zero denominator: alone and two at a time, small paths against general ones."""
    run = _run(name)
    base = run.records([0])[0]
    odd = [
        {**base, "year": None},
        {**base, "industry": "9999"},
        {k: (v if k in ("firm_id", "year", "industry", "value_added_10k_cny") else None) for k, v in base.items()},
        {**base, "value_added_10k_cny": 0, "revenue_10k_cny": 0, "output_value_10k_cny": 0},
        {**base, "electricity_mwh": 1e308, "natural_gas_10k_nm3": 1e308},
    ]
    for records in [[r] for r in odd] + [odd[:2], odd[2:4]]:
        for tables in (run.tables, None):
            small = _snapshot(pipeline.rate(run.plan, records, benchmarks=tables))
            with monkeypatch.context() as m:
                m.setattr(evaluator, "_FEW_ROWS", 0)
                m.setattr(results, "TINY_JSON_ROWS", 0)
                general = _snapshot(pipeline.rate(run.plan, records, benchmarks=tables))
            for key in general:
                assert small[key] == general[key], key


_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, 1e308, 5e-324, 44 / 12]),
)


@settings(max_examples=300, deadline=None)
@given(a=_NUMBERS, b=_NUMBERS, wrap=st.sampled_from([(float, float), (np.float64, float), (float, np.float64)]))
def test_arithmetic_of_two_numbers_is_the_ufuncs(a, b, wrap):
    """The compiled '+ - *' of two numbers (parameters, collapsed columns) skips the ufunc: the
    same bits and the same type (np.float64) as np.add / np.subtract / np.multiply."""
    x, y = wrap[0](a), wrap[1](b)
    for op, ufunc in ((operator.add, np.add), (operator.sub, np.subtract), (operator.mul, np.multiply)):
        with np.errstate(all="ignore"):
            want = ufunc(x, y)
            got = op(x, y) if type(x) is np.float64 or type(y) is np.float64 else op(np.float64(x), y)
        assert type(got) is type(want) is np.float64
        if math.isnan(want):  # NaN payloads are not compared: results write NaN as missing
            assert math.isnan(got)
        else:
            assert np.float64(got).tobytes() == want.tobytes()


def _coalesce_by_hand(xs: list[object], n: int) -> np.ndarray:
    out = np.broadcast_to(np.asarray(xs[0], dtype=np.float64), (n,)).copy()
    for x in xs[1:]:
        out = np.where(np.isnan(out), np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)), out)
    return out


_VALUE = st.sampled_from([math.nan, 0.0, 2.5, -1.0])


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 3),
    shapes=st.lists(st.sampled_from(["float", "int", "np", "0d", "column", "repeated"]), min_size=2, max_size=4),
    data=st.data(),
)
def test_coalesce_of_one_value_and_of_columns(n, shapes, data):
    """coalesce over every mix of numbers, 0-d arrays, columns and broadcast (repeated) columns:
    the first value that is not missing, row by row (one-value fast path included)."""
    xs: list[object] = []
    for shape in shapes:
        if shape == "column":
            xs.append(np.array(data.draw(st.lists(_VALUE, min_size=n, max_size=n))))
            continue
        v = data.draw(_VALUE)
        if shape == "int":  # a whole-number constant: coalesce(x, 0)
            xs.append(0 if v != v else int(v))
            continue
        xs.append(
            {"float": v, "np": np.float64(v), "0d": np.array(v), "repeated": np.broadcast_to(np.float64(v), (n,))}[
                shape
            ]
        )
    got = FUNCTIONS["coalesce"].run(None, *xs)
    want = _coalesce_by_hand(xs, n)
    assert np.broadcast_to(np.asarray(got, dtype=np.float64), (n,)).tobytes() == want.tobytes()


def test_json_of_few_rows_writes_every_kind_of_cell_as_the_general_path(monkeypatch):
    """Floats (NaN, ±inf, -0.0, float32), ints, bools, text with quotes and non-ASCII, missing
    codes: the cell-by-cell JSON of a few rows against the column-wise one."""
    run = _run("huzhou")
    res = pipeline.rate(run.plan, run.records([0, 1, 2]), benchmarks=run.tables)
    res.columns["x_float"] = np.array([math.nan, math.inf, -0.0])
    res.columns["x_ninf"] = np.array([-math.inf, 1e-300, 3.0])
    res.columns["x_f32"] = np.array([0.1, math.nan, 2.5], dtype=np.float32)
    res.columns["x_int"] = np.array([1, -2, 3], dtype=np.int64)
    res.columns["x_bool"] = np.array([True, False, True])
    res.columns["x_text"] = np.array(['a "q"', "湖州", ""], dtype=object)
    res.columns.set_encoded("x_codes", np.array([-1, 1, 5], dtype=np.int8), ["one", 'two "2"'])
    small_json, lines = res.to_json(), io.StringIO()
    res.write_jsonl(lines)
    monkeypatch.setattr(results, "TINY_JSON_ROWS", 0)
    general_lines = io.StringIO()
    res.write_jsonl(general_lines)
    assert small_json == res.to_json()
    assert lines.getvalue() == general_lines.getvalue()
    rows = json.loads(small_json)
    assert rows[0]["x_float"] is None and rows[1]["x_float"] == math.inf and rows[2]["x_codes"] == ""
    assert rows[1]["x_codes"] == 'two "2"' and rows[1]["x_text"] == "湖州" and rows[0]["x_codes"] == ""


@pytest.mark.parametrize("name", BOOKS)
def test_one_firm_year_alone_reads_as_in_a_batch_of_two(name):
    """A batch of one row takes the one-value paths (a one-row column enters arithmetic as its
    np.float64; coalesce of a number that is there answers it): every firm-year of the messy
    portfolio, rated alone, reads as it does next to another firm's row (the array paths), with
    the same notes."""
    run = _run(name)
    other = run.records([0])[0]
    for i in range(0, len(run.cols["firm_id"]), 3):
        (row,) = run.records([i])
        mate = {**other, "firm_id": run.firms[1] if row.get("firm_id") == run.firms[0] else run.firms[0]}
        alone = pipeline.rate(run.plan, [row], benchmarks=run.tables)
        pair = pipeline.rate(run.plan, [row, mate], benchmarks=run.tables)
        assert alone.to_records() == pair.to_records()[:1], i
        assert alone.notes("reasons", 0) == pair.notes("reasons", 0)
        assert alone.notes("fallbacks", 0) == pair.notes("fallbacks", 0)
