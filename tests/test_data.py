"""Reading firm-year data (CSV, JSON, JSON Lines, Parquet) and typing it against the Huzhou inputs.

Every bad cell must be reported with the file, the 1-based data row and the column, and must not
stop the rest of the batch from being rated.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ruleengine
from ruleengine.io.data import Category

# A small portfolio: leading-zero industry code, a missing grid region, a measured NCV,
# cells left empty (not reported) and columns a firm does not carry at all.
PORTFOLIO = [
    {
        "firm_id": "F1",
        "year": 2022,
        "industry": "0610",
        "grid_region": "east",
        "value_added_10k_cny": 100.0,
        "raw_coal_t": 10.0,
        "electricity_mwh": 50.0,
    },
    {
        "firm_id": "F2",
        "year": 2022,
        "industry": "3011",
        "grid_region": None,
        "value_added_10k_cny": 250.5,
        "diesel_t": 3.25,
        "electricity_mwh": 0.0,
    },
    {
        "firm_id": "F3",
        "year": 2023,
        "industry": "3011",
        "grid_region": "south",
        "value_added_10k_cny": 80.0,
        "coke_t": 1.5,
        "electricity_mwh": 20.0,
        "green_electricity_mwh": 5.0,
        "raw_coal_ncv_gj_per_unit": 21.5,
    },
]
COLUMNS = [
    "firm_id",
    "year",
    "industry",
    "grid_region",
    "value_added_10k_cny",
    "raw_coal_t",
    "coke_t",
    "diesel_t",
    "electricity_mwh",
    "green_electricity_mwh",
    "raw_coal_ncv_gj_per_unit",
]
TEXT = {"firm_id", "industry", "grid_region"}


def _cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def write_csv(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> Path:
    lines = [",".join(columns)] + [",".join(_cell(r.get(c)) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for c in COLUMNS:
        values = [r.get(c) for r in rows]
        typ = pa.string() if c in TEXT else pa.int64() if c == "year" else pa.float64()
        arrays[c] = pa.array(values, type=typ)
    pq.write_table(pa.table(arrays), path)
    return path


WRITERS = {"csv": write_csv, "json": write_json, "jsonl": write_jsonl, "parquet": write_parquet}


def _typed(results: ruleengine.Results) -> dict[str, list]:
    """The batch's typed columns as plain lists (NaN as None, categories as their labels)."""
    out = {}
    assert results.batch is not None
    for name, col in results.batch.columns.items():
        if isinstance(col, Category):
            out[name] = col.to_strings().tolist()
        elif isinstance(col, np.ndarray) and col.dtype.kind == "f":
            out[name] = [None if np.isnan(v) else float(v) for v in col.tolist()]
        else:
            out[name] = list(col.tolist())
    return out


def _numbers(results: ruleengine.Results) -> dict[str, list]:
    return {
        k: [None if (isinstance(x, float) and np.isnan(x)) else x for x in v.tolist()]
        for k, v in results.columns.items()
    }


def test_all_formats_give_identical_columns(tmp_path: Path) -> None:
    results = {
        fmt: ruleengine.rate("huzhou", write(tmp_path / f"p.{fmt}", PORTFOLIO)) for fmt, write in WRITERS.items()
    }
    typed = {fmt: _typed(r) for fmt, r in results.items()}
    for fmt in ("json", "jsonl", "parquet"):
        assert typed[fmt] == typed["csv"], fmt
        assert _numbers(results[fmt]) == _numbers(results["csv"]), fmt
        assert results[fmt].issues == [] and results["csv"].issues == []
    t = typed["csv"]
    # text stays text: the leading zero of '0610' survives every format
    assert t["industry"] == ["0610", "3011", "3011"]
    assert t["firm_id"] == ["F1", "F2", "F3"]
    assert t["grid_region"] == ["east", "", "south"]
    assert t["year"] == [2022.0, 2022.0, 2023.0]
    # declared defaults fill unreported quantities (0), optional measured values stay missing
    assert t["raw_coal_t"] == [10.0, 0.0, 0.0]
    assert t["diesel_t"] == [0.0, 3.25, 0.0]
    assert t["natural_gas_10k_nm3"] == [0.0, 0.0, 0.0]  # a column absent from every file
    assert t["raw_coal_ncv_gj_per_unit"] == [None, None, 21.5]
    assert results["csv"]["industry_division"].tolist() == ["06", "30", "30"]
    assert results["csv"]["status"].tolist() == ["rated", "rated", "rated"]


def test_leading_zero_industry_in_csv_stays_text(tmp_path: Path) -> None:
    path = tmp_path / "zeros.csv"
    path.write_text("firm_id,year,industry,value_added_10k_cny\n007,2022,0610,10\n008,2022,0061,10\n", encoding="utf-8")
    res = ruleengine.rate("huzhou", path)
    # firm ids and industry codes are strings, never numbers (pyarrow would read 0610 as 610)
    assert res["firm_id"].tolist() == ["007", "008"]
    assert res["industry_division"].tolist() == ["06", "00"]


# -- bad cells ----------------------------------------------------------------------------------


def _rate_csv(tmp_path: Path, body: str, name: str = "firms.csv") -> tuple[ruleengine.Results, str]:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return ruleengine.rate("huzhou", path), str(path)


HEADER = "firm_id,year,industry,value_added_10k_cny,raw_coal_t,electricity_mwh\n"
GOOD_1 = "A,2022,3011,100,10,50\n"
GOOD_3 = "C,2022,3011,300,30,50\n"


@pytest.mark.parametrize(
    ("bad_row", "column", "message"),
    [
        ("B,2022,3011,200,abc,50\n", "raw_coal_t", "'abc' is not a number"),
        ("B,2022,3011,200,-5,50\n", "raw_coal_t", "-5 is below the minimum 0"),
        ("B,2022,3011,200,1,-0.5\n", "electricity_mwh", "-0.5 is below the minimum 0"),
        ("B,2022,3011,,1,50\n", "value_added_10k_cny", "required value is missing"),
        ("B,2022,,200,1,50\n", "industry", "required value is missing"),
        ("B,1850,3011,200,1,50\n", "year", "1850 is below the minimum 1990"),
    ],
)
def test_bad_cell_named_by_file_row_column(tmp_path: Path, bad_row: str, column: str, message: str) -> None:
    res, path = _rate_csv(tmp_path, HEADER + GOOD_1 + bad_row + GOOD_3)
    # the bad row is data row 2 (the header is not counted)
    assert [i.format() for i in res.issues] == [f"{path}: row 2, column {column}: {message}"]
    assert res.issues[0].fatal
    assert res["status"].tolist() == ["rated", "unrated", "rated"]
    # the data problem comes first (a missing industry or year also leaves no benchmark)
    assert res["reasons"][1].split("; ")[0] == f"{column}: {message}"
    assert res["rating"][0] != "" and res["rating"][2] != ""


def test_non_numeric_cell_in_json(tmp_path: Path) -> None:
    rows = [dict(PORTFOLIO[0]), {**PORTFOLIO[1], "diesel_t": "3,25"}, dict(PORTFOLIO[2])]
    path = write_json(tmp_path / "firms.json", rows)
    res = ruleengine.rate("huzhou", path)
    assert [i.format() for i in res.issues] == [f"{path}: row 2, column diesel_t: '3,25' is not a number"]
    assert res["status"].tolist() == ["rated", "unrated", "rated"]


def test_non_integer_year_is_located(tmp_path: Path) -> None:
    res, path = _rate_csv(tmp_path, HEADER + GOOD_1 + "B,2022.5,3011,200,1,50\n" + GOOD_3)
    [issue] = res.issues
    assert (issue.source, issue.row, issue.column, issue.fatal) == (path, 2, "year", True)
    assert "2022.5" in issue.message and issue.message.endswith("is not a whole number")
    assert res["status"].tolist() == ["rated", "unrated", "rated"]


@pytest.mark.parametrize(
    ("bad_row", "column", "message"),
    [
        ("B,2022.5,3011,200,1,50\n", "year", "2022.5 is not a whole number"),
        ("B,2022,3011,200,inf,50\n", "raw_coal_t", "inf is not a finite number"),
    ],
)
def test_number_messages_show_the_number(tmp_path: Path, bad_row: str, column: str, message: str) -> None:
    res, path = _rate_csv(tmp_path, HEADER + GOOD_1 + bad_row + GOOD_3)
    assert [i.format() for i in res.issues] == [f"{path}: row 2, column {column}: {message}"]


def test_duplicate_firm_year(tmp_path: Path) -> None:
    res, path = _rate_csv(
        tmp_path, HEADER + GOOD_1 + "B,2022,3011,200,1,50\n" + "A,2022,3011,100,10,50\n" + "A,2023,3011,100,10,50\n"
    )
    # rows 1 and 3 are both (A, 2022): each names the other; (A, 2023) is a different firm-year
    assert [i.format() for i in res.issues] == [
        f"{path}: row 1, column firm_id: duplicate firm-year (A, 2022): also on row 3",
        f"{path}: row 3, column firm_id: duplicate firm-year (A, 2022): also on row 1",
    ]
    assert res["status"].tolist() == ["unrated", "rated", "unrated", "rated"]


def test_category_outside_declared_values(tmp_path: Path) -> None:
    res, path = _rate_csv(
        tmp_path, "firm_id,year,industry,grid_region,value_added_10k_cny\nA,2022,3011,east,100\nB,2022,3011,mars,100\n"
    )
    assert [i.format() for i in res.issues] == [
        f"{path}: row 2, column grid_region: 'mars' is not one of north, northwest, east, "
        "northeast, central, south, southwest"
    ]
    assert res["status"].tolist() == ["rated", "unrated"]


def test_unknown_column_that_looks_like_a_typo(tmp_path: Path) -> None:
    res, path = _rate_csv(
        tmp_path, "firm_id,year,industry,value_added_10k_cny,electricty_mwh,notes\nA,2022,3011,100,50,hello\n"
    )
    # a near miss of a known column is reported, not fatal; an unrelated column ('notes') is not
    assert [i.format() for i in res.issues] == [
        f"{path}, column electricty_mwh: unknown column (did you mean 'electricity_mwh'?); it is ignored"
    ]
    assert res.issues[0].fatal is False and res.issues[0].row is None
    assert res["status"].tolist() == ["rated"]
    # and it is really ignored: electricity defaults to 0, so there are no emissions
    assert res["emissions_tco2"].tolist() == [0.0]


# -- files that cannot be used at all ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet"])
def test_required_column_absent_is_one_clear_error(tmp_path: Path, fmt: str) -> None:
    rows = [{k: v for k, v in r.items() if k != "value_added_10k_cny"} for r in PORTFOLIO]
    cols = [c for c in COLUMNS if c != "value_added_10k_cny"]
    path = tmp_path / f"p.{fmt}"
    if fmt == "csv":
        write_csv(path, rows, cols)
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({c: [r.get(c) for r in rows] for c in cols}), path)
    else:
        WRITERS[fmt](path, rows)
    with pytest.raises(ruleengine.DataError) as info:
        ruleengine.rate("huzhou", path)
    assert str(info.value) == (f"{path}: required column value_added_10k_cny missing (needed by huzhou)")


def test_several_required_columns_absent(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("firm_id,year\nA,2022\n", encoding="utf-8")
    with pytest.raises(ruleengine.DataError) as info:
        ruleengine.rate("huzhou", path)
    assert str(info.value) == (f"{path}: required columns industry, value_added_10k_cny missing (needed by huzhou)")


def test_empty_csv(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ruleengine.DataError) as info:
        ruleengine.rate("huzhou", path)
    assert str(info.value) == f"{path}: the file is empty (expected a header row)"


def test_header_only_csv_rates_nothing(tmp_path: Path) -> None:
    res, _ = _rate_csv(tmp_path, HEADER)
    assert len(res) == 0 and res.issues == []


@pytest.mark.parametrize("name", ["empty.json", "empty.jsonl"])
def test_empty_json_says_empty(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("", encoding="utf-8")
    with pytest.raises(ruleengine.DataError) as info:
        ruleengine.rate("huzhou", path)
    assert str(info.value).startswith(f"{path}: the file is empty")


def test_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    # a trailing comma: the parser stops at the '}' in column 32 of line 1
    path.write_text('[{"firm_id": "A", "year": 2022,}]', encoding="utf-8")
    with pytest.raises(ruleengine.DataError) as info:
        ruleengine.rate("huzhou", path)
    assert str(info.value) == (
        f"{path}: line 1, column 32: not valid JSON: Expecting property name enclosed in double quotes"
    )


def test_malformed_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"firm_id": "A", "year": 2022}\n{"firm_id": "B",\n', encoding="utf-8")
    with pytest.raises(ruleengine.DataError) as info:
        ruleengine.rate("huzhou", path)
    assert str(info.value) == (f"{path}: line 2: not valid JSON: Expecting property name enclosed in double quotes")


def test_json_that_is_not_a_list_of_objects(tmp_path: Path) -> None:
    path = tmp_path / "numbers.json"
    path.write_text("[1, 2, 3]", encoding="utf-8")
    with pytest.raises(ruleengine.DataError) as info:
        ruleengine.rate("huzhou", path)
    assert str(info.value) == f"{path}: expected a list of objects (one per firm-year)"


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ruleengine.DataError, match="data file not found"):
        ruleengine.rate("huzhou", tmp_path / "nope.csv")
    path = tmp_path / "firms.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(ruleengine.DataError) as info:
        ruleengine.rate("huzhou", path)
    assert str(info.value) == (f"{path}: unknown data format '.xlsx' (use .csv, .json, .jsonl or .parquet)")
