"""The synthetic portfolio generator: data contract, determinism, rating clean and messy data."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import ruleengine
from ruleengine.io import sample
from ruleengine.io.data import CANONICAL_COLUMNS

YEARS = [2021, 2022, 2023]

# DATA.md's table, transcribed: every one of these is generated, under exactly this name.
DATA_MD_COLUMNS = (
    "firm_id",
    "firm_name",
    "year",
    "city",
    "grid_region",
    "industry",
    "size",
    "employees",
    "output_value_10k_cny",
    "value_added_10k_cny",
    "revenue_10k_cny",
    "tax_10k_cny",
    "raw_coal_t",
    "coke_t",
    "crude_oil_t",
    "fuel_oil_t",
    "gasoline_t",
    "kerosene_t",
    "diesel_t",
    "lpg_t",
    "natural_gas_10k_nm3",
    "vehicle_gasoline_t",
    "vehicle_diesel_t",
    "electricity_mwh",
    "green_electricity_mwh",
    "onsite_renewable_mwh",
    "heat_gj",
    "clinker_t",
    "limestone_t",
    "dolomite_t",
)
TEXT = ("firm_id", "firm_name", "city", "grid_region", "industry", "size")
MEASURED = re.compile(
    r"^(raw_coal|coke|crude_oil|fuel_oil|gasoline|kerosene|diesel|lpg"
    r"|natural_gas)_(ncv_gj_per_unit|cc_tc_per_tj|ox)$"
)
# Not in DATA.md's table but known to the engine (ruleengine.io.data.CANONICAL_COLUMNS).
EXTRA = ("loan_amount_10k_cny",)


@pytest.fixture(scope="module")
def clean() -> dict[str, np.ndarray]:
    return sample.generate(400, YEARS, seed=11)


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    if list(a) != list(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if x.dtype.kind == "f":
            if not np.array_equal(x, y, equal_nan=True):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


# -- data contract ------------------------------------------------------------------------------


def test_columns_follow_the_data_contract(clean):
    assert tuple(clean) == sample.COLUMNS
    assert set(DATA_MD_COLUMNS) <= set(clean)
    for name in clean:
        assert name in DATA_MD_COLUMNS or MEASURED.match(name) or name in EXTRA, name
        assert name in CANONICAL_COLUMNS, name  # the engine knows it: no "unknown column" notice
    n = len(YEARS) * 400
    for name, col in clean.items():
        assert col.shape == (n,), name
        if name in TEXT:
            assert col.dtype == object and all(isinstance(v, str) for v in col.tolist())
        elif name in ("year", "employees"):
            assert col.dtype == np.int64
        else:
            assert col.dtype == np.float64


def test_values_are_plausible(clean):
    n = len(clean["firm_id"])
    ids = clean["firm_id"].tolist()
    # 17 digits and a check character that may be a capital (GB 32100-2015)
    assert all(len(i) == 18 and i[:17].isdigit() and i.startswith("91") for i in ids)
    # every firm reports every year, once
    pairs = Counter(zip(ids, clean["year"].tolist(), strict=True))
    assert len(pairs) == n and len(set(ids)) == 400
    assert all(Counter(ids)[i] == len(YEARS) for i in set(ids))
    assert set(clean["city"].tolist()) == {"huzhou", "quzhou", "shenzhen"}
    home = np.where(clean["city"] == "shenzhen", "south", "east")
    assert 0.9 < np.mean(clean["grid_region"] == home) < 1.0
    industries = Counter(clean["industry"].tolist())
    assert len(industries) >= 25 and all(re.fullmatch(r"\d{4}", k) for k in industries)
    assert {"3011", "1711", "2614"} <= set(industries)
    assert min(industries.values()) < 5 * len(YEARS)  # rare classes: benchmark fallbacks happen
    assert set(clean["size"].tolist()) == {"large", "medium", "small", "micro"}
    assert np.mean(np.isin(clean["size"], ["small", "micro"])) > 0.6
    # money consistent with size; value added below output
    assert np.all(clean["value_added_10k_cny"] > 0)
    assert np.all(clean["value_added_10k_cny"] < clean["output_value_10k_cny"])
    rev = clean["revenue_10k_cny"]
    assert np.median(rev[clean["size"] == "large"]) > np.median(rev[clean["size"] == "micro"]) * 100
    # energy: electricity everywhere, green within it, clinker only at cement firms
    elec, green = clean["electricity_mwh"], clean["green_electricity_mwh"]
    assert np.all(elec > 0)
    bought = ~np.isnan(green)
    assert 0.05 < bought.mean() < 0.25 and np.all(green[bought] <= elec[bought])
    assert set(clean["industry"][~np.isnan(clean["clinker_t"])].tolist()) == {"3011"}
    assert np.isnan(clean["raw_coal_ncv_gj_per_unit"]).mean() > 0.9
    ncv = clean["raw_coal_ncv_gj_per_unit"][~np.isnan(clean["raw_coal_ncv_gj_per_unit"])]
    assert ncv.size and 16 <= ncv.min() and ncv.max() <= 26
    for name, col in clean.items():
        if col.dtype.kind == "f":
            assert not np.any(col < 0), name


def test_year_on_year_change_is_moderate(clean):
    va = clean["value_added_10k_cny"].reshape(400, len(YEARS))
    step = va[:, 1:] / va[:, :-1]
    assert step.min() > 0.94 and step.max() < 1.11
    assert clean["year"].reshape(400, len(YEARS)).tolist() == [YEARS] * 400


def test_argument_checks():
    with pytest.raises(ValueError, match="messy"):
        sample.generate(3, [2022], messy=1.5)
    with pytest.raises(ValueError, match="years"):
        sample.generate(3, [])
    with pytest.raises(ValueError, match="distinct"):
        sample.generate(3, [2022, 2022])
    assert len(sample.generate(0, [2022])["firm_id"]) == 0


# -- determinism --------------------------------------------------------------------------------


def test_same_seed_same_columns(clean):
    assert _same(clean, sample.generate(400, YEARS, seed=11))
    assert not _same(clean, sample.generate(400, YEARS, seed=12))
    messy = sample.generate(50, YEARS, seed=3, messy=0.1)
    assert _same(messy, sample.generate(50, YEARS, seed=3, messy=0.1))


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl", ".parquet"])
def test_same_seed_byte_identical_files(tmp_path, suffix):
    a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    sample.write(sample.generate(60, YEARS, seed=5, messy=0.1), a)
    sample.write(sample.generate(60, YEARS, seed=5, messy=0.1), b)
    assert a.read_bytes() == b.read_bytes()


def test_missing_values_are_empty_cells_and_nulls(tmp_path):
    cols = {
        "firm_id": np.array(["a", ""], dtype=object),
        "year": np.array([2022, 2023]),
        "x_t": np.array([1.5, np.nan]),
    }
    sample.write(cols, tmp_path / "m.csv")
    sample.write(cols, tmp_path / "m.json")
    csv_lines = (tmp_path / "m.csv").read_text().splitlines()
    assert csv_lines == ["firm_id,year,x_t", '"a",2022,1.5', ",2023,"]
    assert json.loads((tmp_path / "m.json").read_text()) == [
        {"firm_id": "a", "year": 2022, "x_t": 1.5},
        {"firm_id": None, "year": 2023, "x_t": None},
    ]
    with pytest.raises(ValueError, match="unknown format"):
        sample.write(cols, tmp_path / "m.xlsx")


# -- rating -------------------------------------------------------------------------------------


def test_clean_sample_rates_every_row(clean):
    # the sample's three cities, all rated on request; without it only Huzhou's firms (3305…) are
    res = ruleengine.rate("huzhou", clean, any_jurisdiction=True)
    assert Counter(res["status"].tolist()) == {"rated": len(clean["firm_id"])}
    own = ruleengine.rate("huzhou", clean)
    huzhou = np.array([str(f)[2:6] == "3305" for f in clean["firm_id"]])
    assert huzhou.any() and (own["status"] == np.where(huzhou, "rated", "unrated")).all()
    assert not [i for i in res.issues if i.fatal]
    levels = dict(res.distribution())
    assert all(levels[lv] > 0 for lv in "12345")  # a spread of levels, not one band
    assert set(res["industry_intensity_group"].tolist()) > {"industry"}  # some fallbacks taken


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_clean_sample_rates_the_same_from_a_file(clean, tmp_path, suffix):
    path = sample.write(clean, tmp_path / f"firms{suffix}")
    from_file = ruleengine.rate("huzhou", path)
    in_memory = ruleengine.rate("huzhou", clean)
    assert from_file["rating"].tolist() == in_memory["rating"].tolist()
    np.testing.assert_allclose(from_file["k"], in_memory["k"], rtol=1e-12)


def _as_numbers(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, NaN where blank; mask of cells that are not numbers) of a float or text column."""
    if col.dtype.kind == "f":
        return col, np.zeros(len(col), dtype=bool)
    values, bad = np.full(len(col), np.nan), np.zeros(len(col), dtype=bool)
    for i, cell in enumerate(col.tolist()):
        if cell != "":
            try:
                values[i] = float(cell)
            except ValueError:
                bad[i] = True
    return values, bad


def _defects(cols: dict[str, np.ndarray]) -> dict[str, dict[int, set[str]]]:
    """Defective rows found by looking at the data: kind → {row index: columns involved}."""
    found: dict[str, dict[int, set[str]]] = {kind: {} for kind in sample.DEFECTS}

    def add(kind: str, rows: np.ndarray, column: str) -> None:
        for i in rows.tolist():
            found[kind].setdefault(i, set()).add(column)

    numbers = {k: _as_numbers(v) for k, v in cols.items() if k not in TEXT and k != "year"}
    va, va_bad = numbers["value_added_10k_cny"]
    add("blank_value_added", np.flatnonzero(np.isnan(va) & ~va_bad), "value_added_10k_cny")
    add("blank_industry", np.flatnonzero(cols["industry"] == ""), "industry")
    for name, (values, bad) in numbers.items():
        add("negative_quantity", np.flatnonzero(values < 0), name)
        add("non_numeric", np.flatnonzero(bad), name)
    elec, green = numbers["electricity_mwh"][0], numbers["green_electricity_mwh"][0]
    add("green_exceeds_electricity", np.flatnonzero(green > elec), "green_electricity_mwh")
    seen: dict[tuple[str, int], int] = {}
    for i, key in enumerate(zip(cols["firm_id"].tolist(), cols["year"].tolist(), strict=True)):
        if key in seen:
            add("duplicate_firm_year", np.array([seen[key], i]), "firm_id")
        seen.setdefault(key, i)
    return found


def test_messy_sample_has_every_defect_and_each_is_reported():
    cols = sample.generate(300, [2022, 2023], seed=2026, messy=0.05)
    n_clean = 600
    found = _defects(cols)
    for kind in sample.DEFECTS:
        assert found[kind], f"no {kind} defect generated"
    dupes = len(found["duplicate_firm_year"]) // 2
    assert len(cols["firm_id"]) == n_clean + dupes
    defective = {i for rows in found.values() for i in rows}
    assert len(defective) - dupes == round(0.05 * n_clean)  # one defect per hit row (+ the copies)
    assert any(v.dtype == object for k, v in cols.items() if k not in TEXT)  # a column turned text

    res = ruleengine.rate("huzhou", cols, any_jurisdiction=True)  # every city: the defects are what is tested
    flagged = {(i.row, i.column) for i in res.issues}
    for kind, rows in found.items():
        for i, columns in rows.items():
            reported = res["status"][i] == "unrated" or any((i + 1, c) in flagged for c in columns)
            assert reported, f"{kind} on row {i + 1} ({columns}) passed silently"
            assert res["status"][i] == "unrated", f"{kind} on row {i + 1} was rated"
    clean_rows = np.setdiff1d(np.arange(len(cols["firm_id"])), sorted(defective))
    assert np.all(res["status"][clean_rows] == "rated")


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl", ".parquet"])
def test_messy_file_reports_the_same_rows(tmp_path, suffix):
    cols = sample.generate(100, [2022, 2023], seed=9, messy=0.1)
    path = sample.write(cols, tmp_path / f"messy{suffix}")
    from_file = ruleengine.rate("huzhou", path)
    in_memory = ruleengine.rate("huzhou", cols)
    assert from_file["status"].tolist() == in_memory["status"].tolist()
    # rows are the file's own: a CSV's lines count the header (issue #12.6), records count from 1
    shift = 1 if suffix == ".csv" else 0
    where = [(None if i.row is None else i.row + shift, i.column) for i in in_memory.issues]
    assert [(i.row, i.column) for i in from_file.issues] == where


def test_bundled_example_is_reproducible(tmp_path):
    """examples/sample_firms.csv is exactly what examples/README.md says generated it."""
    bundled = Path(__file__).resolve().parents[1] / "examples" / "sample_firms.csv"
    if not bundled.is_file():
        pytest.skip("examples/ is not part of this checkout")
    fresh = sample.write(sample.generate(300, [2022, 2023], seed=2026, messy=0.02), tmp_path / "sample_firms.csv")
    assert fresh.read_bytes() == bundled.read_bytes(), (
        "the generator changed: regenerate examples/sample_firms.csv (see examples/README.md)"
    )


def test_sample_identifiers_pass_the_data_contract():
    """Every generated firm id is a valid unified social credit code (GB 32100-2015 check
    character) with its city's division, and every industry a GB/T 4754-2017 class: the sample
    draws no identifier warning (it used to draw one for nearly every firm)."""
    from ruleengine.io.identifiers import classification, uscc_check_char, uscc_problem

    cols = sample.generate(200, [2022], seed=5)
    ids = [str(x) for x in cols["firm_id"]]
    assert all(uscc_problem(i) is None for i in ids)
    assert {i[2:8] for i in ids} <= {"330500", "330800", "440300"}
    # the check character by hand for one id: 91330500 + 9 digits
    first = ids[0]
    assert first[17] == uscc_check_char(first[:17])
    classes = classification()
    assert all(classes[str(c)].level == 4 for c in cols["industry"] if c)
