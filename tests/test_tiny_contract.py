"""The plain-Python paths of the data contract for a few rows (io.data.TINY_ROWS: one firm rated by
the HTTP service) against the general Arrow/numpy paths: same typed columns (bytes), same issues
(text, order, fatal), same defaults, same jurisdiction, same final results — for every bundled
rulebook, on records with messy cells. ``TINY_ROWS = 0`` turns the plain paths off."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ruleengine import pipeline
from ruleengine.errors import DataError
from ruleengine.io import data as D
from ruleengine.io import sample
from ruleengine.io.data import Category
from ruleengine.rulebook.loader import load

ROOT = Path(__file__).resolve().parents[1]
BOOKS = sorted(p.stem for p in (ROOT / "rulebooks").glob("*.yaml"))
PLANS = {b: load(ROOT / "rulebooks" / f"{b}.yaml") for b in BOOKS}

_COLS = sample.generate(60, [2022, 2023], seed=7)
_N = len(_COLS["firm_id"])
BASE = [
    {k: (None if isinstance(v, float) and math.isnan(v) and (i + j) % 3 else v) for j, (k, v) in enumerate(r.items())}
    for i, r in enumerate({k: _COLS[k][i].item() if hasattr(_COLS[k][i], "item") else _COLS[k][i] for k in _COLS}
                          for i in range(_N))
]  # fmt: skip
TABLES = {b: pipeline.rate(p, dict(_COLS)).tables for b, p in PLANS.items()}

KEYS = sorted({k for p in PLANS.values() for k in p.inputs} | {"region", "firm_name", "city"}) + [
    "electricty_mwh",  # a near miss of an input: a file-level error
    "Electricity_MWh",  # read as electricity_mwh (two headers landing on it: an error)
    " industry ",
    "foo",
    "electricity_mwh_source",
]
IDS = [
    "91330500032441094N",  # the sample's own (Huzhou)
    "91330800314159265M",  # Quzhou
    "91330500032441094A",  # a bad check character
    "9133050003244109",  # 16 characters: a lookalike
    "91330500O3244109４N",  # a full-width digit, 18 characters
    "9133O50003244109AN",  # a letter O
    "914403001234567890",
    "913305000324410",  # 15: a lookalike
    "91330500032441",  # 14: not one
    "91330500032441094N12",  # 20
    "91330500032441094N123",  # 21
    "91330500032441094n",  # a small letter
    "A1330500032441094N",  # a letter first
    "I1330500032441094N",  # I is not in the alphabet
    "91990500032441094N",  # 99 is no province
    "9A3305000324410941",
    "9133 500032441094N",
    "9I330500032441094N",  # I second
    "F001",
    " F001 ",
    "",
    "无",
]
MESSY = [
    None, "", " ", " 12 ", "1,234", "1,234.5", "10,997", "1.234,5", "N/A", "-", "无", "nan", "NaN", "inf", "1e999",
    "abc", "0x10", "3011", " 3011 ", "0610", "610", "30", "水泥制造", "2023", "2023.0", "2023.5", "1980", "east",
    " south ", "mars", "3305", "330500", "33", "4403", "abc1", float("nan"), float("inf"), float("-inf"), True, False,
    [1], {"a": 1}, 10**400, 10**20, 2**53, -(2**53) - 2, -5, 0, 0.0, -0.0, 2.5, 1e300, 3011.0, 2023.0, 1e17, 1e-7,
    -1.5, 2023, 1.0,
]  # fmt: skip
CELL = st.one_of(
    st.sampled_from(MESSY),
    st.sampled_from(IDS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.text(max_size=4),
)
OPTIONS = [None, {"id_check": "error"}, {"id_check": "off"}, {"thousands": ","}, {"missing": ("未填报", "-")}]


@st.composite
def portfolios(draw):
    k = draw(st.integers(1, 7))
    recs = [dict(BASE[draw(st.integers(0, _N - 1))]) for _ in range(k)]
    for r in recs:
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 4]))):
            key = draw(st.sampled_from(KEYS))
            if draw(st.integers(0, 4)) == 0:
                r.pop(key, None)
            else:
                r[key] = draw(CELL)
        if draw(st.integers(0, 2)) == 0:  # the identifying columns, more often than the others
            r["firm_id"] = draw(st.sampled_from(IDS))
        if draw(st.integers(0, 3)) == 0:
            r[draw(st.sampled_from(["region", "industry", "year", "grid_region"]))] = draw(CELL)
    if draw(st.integers(0, 3)) == 0:  # a duplicate firm-year
        recs.append(dict(recs[0]))
    if draw(st.integers(0, 9)) == 0:  # a record that is not an object
        recs.insert(draw(st.integers(0, len(recs))), draw(st.sampled_from([None, 5, "x", [1]])))
    return recs


def _columns_of(recs):
    """The same cells as a dict of columns (missing keys: None)."""
    keys = list(dict.fromkeys(k for r in recs for k in r))
    return {k: [r.get(k) for r in recs] for k in keys}


def _array(v):
    a = np.asarray(v)
    return ("array", a.dtype.str, a.shape, a.tobytes(), a.strides, a.flags.writeable)


def _category(c):
    return None if c is None else ("category", c.codes.dtype.str, c.codes.tobytes(), list(c.labels))


def snapshot(plan, data, opts):
    """Everything read + prepare gives, comparable with ==; a DataError as its message."""
    try:
        raw = pipeline.read(copy.deepcopy(data), [plan], read_options=opts)
        b = pipeline.prepare(plan, raw)
    except DataError as exc:
        return ("error", str(exc))
    cols = {k: (_category(v) if isinstance(v, Category) else _array(v)) for k, v in b.columns.items()}
    j = b.jurisdiction
    jur = None
    if j is not None:
        jur = (j.status.tobytes(), _category(j.division), j.book, j.name, j.divisions, j.any_jurisdiction)
    return (
        list(b.columns),
        cols,
        b.n,
        b.source,
        [(i.format(), i.fatal) for i in b.issues],
        b.row_issues,
        b.invalid.tobytes(),
        b.row_numbers.tobytes(),
        b.firm_codes.tobytes(),
        _category(b.defaults),
        jur,
    )


def rated(plan, data, opts, tables):
    try:
        return pipeline.rate(plan, copy.deepcopy(data), benchmarks=tables, read_options=opts).to_json()
    except DataError as exc:
        return ("error", str(exc))


def both(monkeypatch, fn, *args):
    """``fn(*args)`` with the plain paths (the default TINY_ROWS) and without them (0)."""
    tiny = D.TINY_ROWS
    assert tiny >= 8
    fast = fn(*args)
    monkeypatch.setattr(D, "TINY_ROWS", 0)
    try:
        general = fn(*args)
    finally:
        monkeypatch.setattr(D, "TINY_ROWS", tiny)
    return fast, general


@pytest.mark.parametrize("book", BOOKS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])  # fmt: skip
@given(recs=portfolios(), opt=st.sampled_from(OPTIONS), as_columns=st.integers(0, 5))
def test_tiny_paths_equal_general_paths(monkeypatch, book, recs, opt, as_columns):
    plan = PLANS[book]
    data = recs
    if as_columns == 0 and all(isinstance(r, dict) for r in recs):
        data = _columns_of(recs)
    fast, general = both(monkeypatch, snapshot, plan, data, opt)
    assert fast == general
    fast, general = both(monkeypatch, rated, plan, data, opt, TABLES[book])
    assert fast == general


@pytest.mark.parametrize("book", BOOKS)
@pytest.mark.parametrize("size", [1, 2, 63, 64, 65])
def test_clean_rows_equal_at_every_size(monkeypatch, book, size):
    """Clean sample rows, up to and past TINY_ROWS (65: the general path in both runs)."""
    plan = PLANS[book]
    recs = BASE[:size]
    fast, general = both(monkeypatch, snapshot, plan, recs, None)
    assert fast == general
    fast, general = both(monkeypatch, rated, plan, recs, None, TABLES[book])
    assert fast == general


def test_tiny_paths_are_taken(monkeypatch):
    """One record goes through the plain paths (and none of them for 65 rows)."""
    calls = {"numeric": 0, "category": 0}
    numeric, category = D._tiny_numeric, D._tiny_category

    def spy_numeric(*a, **k):
        calls["numeric"] += 1
        return numeric(*a, **k)

    def spy_category(*a, **k):
        calls["category"] += 1
        return category(*a, **k)

    monkeypatch.setattr(D, "_tiny_numeric", spy_numeric)
    monkeypatch.setattr(D, "_tiny_category", spy_category)
    plan = PLANS["huzhou"]
    pipeline.prepare(plan, pipeline.read([BASE[0]], [plan]))
    present = [k for k, s in plan.inputs.items() if k in BASE[0] and s.type in ("number", "integer")]
    assert calls["numeric"] == len(present)
    assert calls["category"] == 3  # firm_id, industry, grid_region (no region column)
    calls.update(numeric=0, category=0)
    pipeline.prepare(plan, pipeline.read(BASE[:65], [plan]))
    assert calls == {"numeric": 0, "category": 0}


def test_one_messy_record_by_hand():
    """The plain paths' messages, written out: a bad number, an ambiguous one, a fraction of a
    year, a value below the minimum, an industry name, a bad credit code (warning)."""
    plan = PLANS["huzhou"]
    rec = {
        "firm_id": "91330500032441094A",
        "year": 2023.5,
        "industry": "水泥制造",
        "electricity_mwh": "10,997",
        "value_added_10k_cny": -3,
        "raw_coal_t": "abc",
        "coke_t": " 1,234.5 ",
        "diesel_t": "N/A",
    }
    b = pipeline.prepare(plan, pipeline.read([rec], [plan]))
    assert [i.format() for i in b.issues] == [  # in the rulebook's order of inputs
        "<records>: row 1, column firm_id: 1 firm id (1 rows) look like unified social credit codes but fail the "
        "GB 32100-2015 check: row 1 '91330500032441094A': check character is 'A', expected 'N' (GB 32100-2015): "
        "a typo or a truncated code (rated; --id-check error leaves such rows unrated)",
        "<records>: row 1, column year: 2023.5 is not a whole number",
        "<records>: row 1, column industry: '水泥制造' is an industry name, not a code (GB/T 4754-2017 3011): "
        "names are accepted only through a column mapping file (industry_names)",
        "<records>: row 1, column raw_coal_t: 'abc' is not a number",
        "<records>: row 1, column electricity_mwh: '10,997' is ambiguous: a thousands separator or a decimal comma? "
        "(read with --thousands , or write the number without separators)",
        "<records>: row 1, column value_added_10k_cny: -3 is below the minimum 0",
    ]
    assert b.columns["coke_t"].tolist() == [1234.5]
    assert b.columns["diesel_t"].tolist() == [0.0]  # 'N/A' is missing: the default, recorded
    assert "diesel_t (cell empty)" in b.defaults.labels[b.defaults.codes[0]]
    assert b.invalid.tolist() == [True]
    assert b.jurisdiction.status.tolist() == [0]  # inside: 330500, the check character aside


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 6),
    spec=st.integers(0, 130).flatmap(
        lambda k: st.lists(st.one_of(st.none(), st.integers(0, 63)), min_size=k, max_size=k)
    ),
)
def test_tiny_defaults_equal_general(n, spec):
    """The defaults column of a few rows: up to 130 inputs (three words of mask bits), some absent
    (None: every row), some defaulted in the rows of a bit pattern, some in no row."""
    items = [
        (f"in{k} ({'column absent' if s is None else 'cell empty'})", None if s is None else np.array([(s >> i) & 1 == 1 for i in range(n)]))
        for k, s in enumerate(spec)
    ]  # fmt: skip
    fast = D._encode_defaults(n, items)
    old = D.TINY_ROWS
    D.TINY_ROWS = 0
    try:
        general = D._encode_defaults(n, items)
    finally:
        D.TINY_ROWS = old
    assert _category(fast) == _category(general)
