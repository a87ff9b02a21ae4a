"""Issue #11.3/#11.5/#11.7 and #12.1: one bad value never loses the batch; duplicates in linear time;
missing is missing (never 0) and every default taken is recorded per row.

Each test fails on the code before these changes (internal error, a refused file, a quadratic
message, or a silent 0)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ruleengine

HEADER = "firm_id,year,industry,value_added_10k_cny,electricity_mwh\n"


def _good(i: int) -> dict:
    return {"firm_id": f"F{i}", "year": 2022, "industry": "3011", "value_added_10k_cny": 100.0, "electricity_mwh": 50.0}


def _statuses(res) -> list[str]:
    return res["status"].tolist()


def test_twenty_thousand_identical_rows_one_message_linear(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text(HEADER + "F1,2022,3011,100,5\n" * 20_000, encoding="utf-8")
    plan = ruleengine.load("huzhou")
    t0 = time.perf_counter()
    res = ruleengine.rate(plan, path)
    elapsed = time.perf_counter() - t0
    dup = [i for i in res.issues if "duplicate" in i.message]
    # one message per group, naming its size and first rows (lines 2..11), not 20,000 x 19,999 row numbers
    assert len(dup) == 1 and dup[0].row == 2
    assert dup[0].message == "duplicate firm-year (F1, 2022): 20,000 rows (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, …)"
    assert set(res["reasons"].tolist()) == {"firm_id: duplicate firm-year (F1, 2022), 20,000 rows, first on row 2"}
    assert _statuses(res).count("unrated") == 20_000
    out = tmp_path / "out.csv"
    res.write(out)
    assert out.stat().st_size < 20_000 * 2_000  # was 595 MB at 10,000 rows
    assert elapsed < 10  # generous here (a shared machine); benchmarks/ measures the 2 s target


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ([1, 2], "[1, 2] is a list, not a number"),
        ({"a": 1}, "{'a': 1} is a JSON object, not a number"),
    ],
)
def test_json_cell_holding_list_or_object_unrates_only_its_row(tmp_path: Path, cell, message) -> None:
    rows = [_good(0), _good(1), _good(2)]
    rows[1]["electricity_mwh"] = cell
    path = tmp_path / "x.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    res = ruleengine.rate("huzhou", path)
    assert _statuses(res) == ["rated", "unrated", "rated"]
    assert [i.format() for i in res.issues] == [f"{path}: row 2, column electricity_mwh: {message}"]


def test_json_integer_above_1e308_and_deep_nesting(tmp_path: Path) -> None:
    text = json.dumps([_good(0), _good(1), _good(2), _good(3)])
    text = text.replace('"electricity_mwh": 50.0', '"electricity_mwh": 1' + "0" * 400, 1)  # object 1
    deep = "[" * 50_000 + "]" * 50_000
    parts = text.rsplit('"electricity_mwh": 50.0', 1)
    text = parts[0] + '"electricity_mwh": ' + deep + parts[1]  # object 4
    path = tmp_path / "x.json"
    path.write_text(text, encoding="utf-8")
    res = ruleengine.rate("huzhou", path)
    assert _statuses(res) == ["unrated", "rated", "rated", "unrated"]
    msgs = [i.format() for i in res.issues]
    assert f"{path}: row 1, column electricity_mwh: an integer of 401 digits is too large for a number" in msgs
    assert f"{path}: row 4: nested too deep to read" in msgs


def test_jsonl_line_numbers_and_nan_written_as_a_number(tmp_path: Path) -> None:
    # issue #11.7: NaN/Infinity written as numbers are problems of their row, not "not reported"
    good = json.dumps(_good(0))
    path = tmp_path / "x.jsonl"
    path.write_text(
        good + "\n\n" + good.replace("50.0", "NaN").replace("F0", "F1") + "\n" + good.replace("F0", "F2") + "\n",
        encoding="utf-8",
    )
    res = ruleengine.rate("huzhou", path)
    assert _statuses(res) == ["rated", "unrated", "rated"]
    assert [i.format() for i in res.issues] == [f"{path}: row 3, column electricity_mwh: NaN is not a finite number"]


def test_parquet_nan_cell_is_a_problem_not_a_default(tmp_path: Path) -> None:
    t = pa.table(
        {
            "firm_id": ["F1", "F2", "F3"],
            "year": [2022, 2022, 2022],
            "industry": ["3011"] * 3,
            "value_added_10k_cny": [100.0, 100.0, 100.0],
            "electricity_mwh": [float("nan"), None, 5.0],
        }
    )
    path = tmp_path / "x.parquet"
    pq.write_table(t, path)
    res = ruleengine.rate("huzhou", path)
    # NaN moved firms silently before (read as missing → default 0); a null is a declared default
    assert _statuses(res) == ["unrated", "rated", "rated"]
    assert [i.format() for i in res.issues] == [f"{path}: row 1, column electricity_mwh: nan is not a finite number"]
    assert "electricity_mwh (cell empty)" in res["defaults"].tolist()[1].split("; ")


def test_parquet_list_and_huge_unsigned_columns(tmp_path: Path) -> None:
    t = pa.table(
        {
            "firm_id": ["F1", "F2"],
            "year": [2022, 2022],
            "industry": ["3011", "3011"],
            "value_added_10k_cny": [100.0, 100.0],
            "electricity_mwh": pa.array([[1.0], None]),
            "raw_coal_t": pa.array([2**64 - 1, 5], pa.uint64()),
        }
    )
    path = tmp_path / "x.parquet"
    pq.write_table(t, path)
    res = ruleengine.rate("huzhou", path)
    assert [i.format() for i in res.issues] == [f"{path}: row 1, column electricity_mwh: [1.0] is a list, not a number"]
    assert _statuses(res) == ["unrated", "rated"]
    # 2^64-1 read as a (huge) float, not an internal error: 1.8446744073709552e19 t
    assert res.batch.columns["raw_coal_t"][0] == float(2**64 - 1)


def test_duplicated_parquet_column_is_a_located_file_error(tmp_path: Path) -> None:
    t = pa.Table.from_arrays(
        [pa.array(["F1"]), pa.array([2022]), pa.array(["3011"]), pa.array([1.0]), pa.array([1.0]), pa.array([2.0])],
        names=["firm_id", "year", "industry", "value_added_10k_cny", "electricity_mwh", "electricity_mwh"],
    )
    path = tmp_path / "x.parquet"
    pq.write_table(t, path)
    with pytest.raises(ruleengine.DataError) as info:
        ruleengine.rate("huzhou", path)
    assert str(info.value) == f"{path}: column electricity_mwh appears more than once in the file's schema"


def test_ragged_csv_row_and_undecodable_cell_name_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(
        (HEADER + "F1,2022,3011,100,5\nF2,2022,3011,100,5,9\n\nF3,2022,3011,100,5\n").encode()
        + b"F4\xff,2022,3011,100,5\nF5,2022,3011,100,5\n"
    )
    res = ruleengine.rate("huzhou", path)
    # line 3 is ragged, line 4 blank (not a row), line 6 holds a byte that is not UTF-8
    assert _statuses(res) == ["rated", "unrated", "rated", "unrated", "rated"]
    assert res.batch.row_numbers.tolist() == [2, 3, 5, 6, 7]
    assert [i.format() for i in res.issues] == [
        f"{path}: row 3: has 6 fields, the header has 5 (a ragged row)",
        f"{path}: row 6, column firm_id: the cell is not valid utf-8 text (use --encoding)",
    ]


# -- #12.1 missing is missing ---------------------------------------------------------------------


@pytest.mark.parametrize("token", ["N/A", "NA", "NULL", "null", "nan", "-", "—", "无", "空", ""])
def test_missing_tokens_are_missing_and_the_default_is_recorded(tmp_path: Path, token: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text(
        "firm_id,year,industry,value_added_10k_cny,electricity_mwh,raw_coal_t\n"
        f"F1,2022,3011,100,50,{token}\nF2,2022,3011,{token},50,1\n",
        encoding="utf-8",
    )
    res = ruleengine.rate("huzhou", path)
    # raw_coal_t declares default 0: taken and recorded; value_added is required: missing, unrated
    assert res.batch.columns["raw_coal_t"].tolist() == [0.0, 1.0]
    d = res["defaults"].tolist()
    assert d[0].split("; ")[0] == "raw_coal_t (cell empty)" and "raw_coal_t" not in d[1]
    assert "coke_t (column absent)" in d[0]
    assert _statuses(res) == ["rated", "unrated"]
    assert [i.format() for i in res.issues] == [f"{path}: row 3, column value_added_10k_cny: required value is missing"]


def test_custom_missing_tokens_through_read_options(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(HEADER + "F1,2022,3011,100,未填报\n", encoding="utf-8")
    res = ruleengine.rate("huzhou", path)
    assert _statuses(res) == ["unrated"]  # not a number
    from ruleengine.io.formats import MISSING_TOKENS

    res = ruleengine.rate("huzhou", path, read_options={"missing": (*MISSING_TOKENS, "未填报")})
    assert _statuses(res) == ["rated"] and "electricity_mwh (cell empty)" in res["defaults"].tolist()[0].split("; ")


def test_absent_electricity_is_an_error_in_the_bundled_rulebooks(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("firm_id,year,industry,value_added_10k_cny\nF1,2022,3011,100\n", encoding="utf-8")
    for book in ("huzhou", "quzhou", "shenzhen", "national"):
        with pytest.raises(ruleengine.DataError) as info:
            ruleengine.rate(book, path)
        assert "electricity_mwh" in str(info.value) and "missing" in str(info.value), book


_RATING = """
variables:
  y: {expr: "a + b"}
ratings:
  r: {value: y, closed: right, better: lower, bands: [{id: lo, upper: 1}, {id: hi, lower: 1}]}
"""


def test_absent_key_in_a_rulebook(tmp_path: Path) -> None:
    from conftest import make_book

    plan = make_book(
        """
inputs:
  a: {type: number, default: 0, absent: error}
  b: {type: number, default: 2}
"""
        + _RATING
    )
    (tmp_path / "x.csv").write_text("firm_id,year\nF,2022\n", encoding="utf-8")
    with pytest.raises(ruleengine.DataError, match="required column a missing"):
        ruleengine.rate(plan, tmp_path / "x.csv")
    res = ruleengine.rate(plan, [{"firm_id": "F", "year": 2022, "a": None}, {"firm_id": "G", "year": 2022, "a": 1}])
    assert res["defaults"].tolist() == ["a (cell empty); b (column absent)", "b (column absent)"]
    assert np.array_equal(res.batch.columns["b"], [2.0, 2.0])
    with pytest.raises(ruleengine.RulebookError, match="cannot take a default"):
        make_book(
            "inputs:\n  a: {type: number, required: true, absent: default}\n  b: {type: number, default: 0}\n" + _RATING
        )
