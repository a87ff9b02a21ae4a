"""Issue #12 (reading speed must-hold): the vectorised fast paths of the data stage give what the
plain, one-value-at-a-time definitions give — credit-code checks and divisions by byte-pair
tables, dictionary-encoded ids (Parquet) against plain strings (CSV), the defaults column, the
duplicate check's narrow key, the edge-space test and the null masks."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import ruleengine
from ruleengine import pipeline
from ruleengine.io import _arrow, data
from ruleengine.io.identifiers import USCC_ALPHABET, check_ids, uscc_check_char, uscc_problem
from ruleengine.io.jurisdiction import credit_code_divisions
from ruleengine.rulebook.plan import GBT2260_PROVINCES

LOOKALIKE = re.compile(r"^[0-9][0-9A-Z]{14,19}$")


def _valid_code(rng: random.Random, division: str = "330502") -> str:
    body = rng.choice("9157") + rng.choice("123") + division + "".join(rng.choice(USCC_ALPHABET) for _ in range(9))
    return body + uscc_check_char(body)


def _ids(seed: int = 7) -> list[str]:
    """Every kind of id: valid codes, a wrong check character, letters outside the alphabet (at every
    position), lower case, 18 bytes of UTF-8, lookalikes of 15-20 characters, short ids."""
    rng = random.Random(seed)
    out: list[str] = []
    provinces = sorted(GBT2260_PROVINCES)
    for _ in range(400):
        out.append(_valid_code(rng, rng.choice(provinces) + f"{rng.randrange(10_000):04d}"))
    for _ in range(200):  # a wrong check character
        good = _valid_code(rng)
        out.append(good[:17] + rng.choice([c for c in USCC_ALPHABET if c != good[17]]))
    for pos in range(18):  # a character outside the alphabet at each position, and a lower-case one
        for bad in "IOZSV-a ":
            good = _valid_code(rng)
            out.append(good[:pos] + bad + good[pos + 1 :])
    for _ in range(50):  # codes with letters among the division digits, or a division of no province
        good = _valid_code(rng, rng.choice(["33A502", "A30502", "000000", "990000", "100000"]))
        out.append(good)
    out += ["中文中文中文", "ＡＢＣ１２３", "é" * 9, "F01", "", "913305", "A" * 18, "0" * 18]
    for n in (15, 16, 17, 19, 20, 21):  # lookalikes and not
        out += ["9" + "1" * (n - 1), "9" + "A" * (n - 1), "a" + "1" * (n - 1)]
    return list(dict.fromkeys(out))  # distinct, as a Category's labels are


def _division(code: str) -> int:
    """The division the jurisdiction check reads from a credit code, one string at a time."""
    if len(code.encode("utf-8")) != 18 or any(c not in USCC_ALPHABET for c in code[:2]):
        return -1
    digits = code[2:8]
    if not (digits.isascii() and digits.isdigit()) or digits[:2] not in GBT2260_PROVINCES:
        return -1
    return int(digits)


@pytest.mark.parametrize("sliced", [False, True])
def test_credit_code_check_and_divisions_match_the_one_at_a_time_definitions(sliced: bool) -> None:
    ids = _ids()
    arr = pa.array(["pad"] + ids, type=pa.string()).slice(1) if sliced else pa.array(ids, type=pa.string())
    problem = [uscc_problem(x) is not None for x in ids]
    checked, invalid = check_ids(arr, only_lookalikes=False)
    assert checked.all() and invalid.tolist() == problem
    # looks meant as a credit code: 15-20 digits and capitals starting with a digit, or 18
    # characters wholly in the code's alphabet (whatever the first)
    looks = [LOOKALIKE.match(x) is not None or (len(x) == 18 and set(x) <= set(USCC_ALPHABET)) for x in ids]
    checked, invalid = check_ids(arr, only_lookalikes=True)
    assert checked.tolist() == looks
    assert invalid.tolist() == [p and lk for p, lk in zip(problem, looks, strict=True)]
    assert credit_code_divisions(arr).tolist() == [_division(x) for x in ids]
    assert sum(not p for p in problem) >= 400 and sum(problem) > 300  # both kinds are there


def test_all_valid_ids_take_the_fast_path_and_one_bad_id_is_found() -> None:
    rng = random.Random(3)
    ids = [_valid_code(rng) for _ in range(5000)]
    checked, invalid = check_ids(pa.array(ids, type=pa.string()), only_lookalikes=True)
    assert checked.all() and not invalid.any()
    ids[4321] = ids[4321][:17] + ("0" if ids[4321][17] != "0" else "1")
    ids.insert(10, "F-10")  # a short id: the 18-byte ids are taken out and checked apart
    checked, invalid = check_ids(pa.array(ids, type=pa.string()), only_lookalikes=True)
    assert np.flatnonzero(invalid).tolist() == [4322] and not checked[10]
    assert credit_code_divisions(pa.array(ids, type=pa.string())).tolist() == [330502] * 10 + [-1] + [330502] * 4990


ROWS = [  # firm_id, year: valid Huzhou codes, a wrong check character, a repeated bad id, a plain id
    ("REPLACE_OK1", 2022),
    ("REPLACE_OK1", 2023),
    ("REPLACE_BAD", 2022),
    ("REPLACE_BAD", 2023),
    ("F-01", 2022),
    ("REPLACE_OK2", 2022),
]


def _portfolio(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(11)
    ok1, ok2 = _valid_code(rng), _valid_code(rng)
    bad = ok1[:17] + ("0" if ok1[17] != "0" else "1")
    names = {"REPLACE_OK1": ok1, "REPLACE_OK2": ok2, "REPLACE_BAD": bad}
    table = pa.table(
        {
            "firm_id": [names.get(f, f) for f, _ in ROWS],
            "year": [y for _, y in ROWS],
            "industry": ["3011"] * len(ROWS),
            "value_added_10k_cny": [100.0] * len(ROWS),
            "electricity_mwh": [5.0] * len(ROWS),
        }
    )
    pq.write_table(table, tmp_path / "p.parquet")
    pacsv.write_csv(table, tmp_path / "p.csv")
    return tmp_path / "p.parquet", tmp_path / "p.csv"


@pytest.mark.parametrize("mode", ["warn", "error"])
def test_dictionary_encoded_ids_give_the_issues_plain_strings_give(tmp_path: Path, mode: str) -> None:
    parquet, csv = _portfolio(tmp_path)
    plan = ruleengine.load("huzhou")
    raw = pipeline.read(parquet, [plan])
    assert pa.types.is_dictionary(raw.columns["firm_id"].type)  # Parquet text is read as a dictionary
    got = {}
    for path, header in ((parquet, 0), (csv, 1)):  # a CSV row is its line: the header is line 1
        raw = pipeline.read(path, [plan], read_options={"id_check": mode})
        batch = pipeline.prepare(plan, raw, consume=True)
        got[path.suffix] = (
            [(i.row - header, i.column, re.sub(r"row \d+", "row", i.message), i.fatal) for i in batch.issues],
            batch.invalid.tolist(),
            batch.jurisdiction.status.tolist(),
        )
    assert got[".parquet"] == got[".csv"]
    issues, invalid, status = got[".csv"]
    firm = [i for i in issues if i[1] == "firm_id"]
    if mode == "warn":  # one warning for the bad id (two rows), rows still rated
        assert len(firm) == 1 and firm[0][0] == 3 and not firm[0][3]
        assert firm[0][2].startswith("1 firm id (2 rows) look like unified social credit codes")
        assert invalid == [False] * 6
    else:  # every id must be a code: the bad id's rows and the plain id's row are unrated
        assert [(i[0], i[3]) for i in firm] == [(3, True), (4, True), (5, True)]
        assert invalid == [False, False, True, True, True, False]
    assert status == [0, 0, 0, 0, 2, 0]  # Huzhou divisions inside; the plain id's division unknown


def _defaults_reference(n: int, items: list[tuple[str, np.ndarray | None]]) -> list[str]:
    return ["; ".join(lab for lab, m in items if m is None or m[i]) for i in range(n)]


@pytest.mark.parametrize("masks", [0, 1, 9, 17, 21, 70])
def test_defaults_column_matches_its_row_by_row_definition(masks: int) -> None:
    rng = np.random.default_rng(masks)
    n = 3000
    items: list[tuple[str, np.ndarray | None]] = [("absent_a (column absent)", None)]
    for j in range(masks):
        items.append((f"x{j} (cell empty)", rng.random(n) < (0.9 if j % 2 else 0.1)))
    items.append(("absent_b (column absent)", None))
    cat = data._encode_defaults(n, items)
    assert cat is not None
    assert cat.to_strings().tolist() == _defaults_reference(n, items)
    assert cat.labels == sorted(set(cat.labels), key=cat.labels.index)  # distinct
    only_masks = [it for it in items if it[1] is not None]
    if only_masks:
        cat = data._encode_defaults(n, only_masks)
        assert cat is not None
        ref = _defaults_reference(n, only_masks)
        assert cat.to_strings().tolist() == ref
        assert (cat.codes == -1).tolist() == [r == "" for r in ref]  # a row without a default: -1


def test_defaults_keys_keep_the_order_they_had() -> None:
    """Labels are ordered by the bit key (mask j is bit j), codes index them: as before."""
    a = np.array([True, False, True, False])
    b = np.array([False, False, True, True])
    cat = data._encode_defaults(4, [("a (cell empty)", a), ("b (cell empty)", b)])
    assert cat is not None
    assert cat.labels == ["a (cell empty)", "b (cell empty)", "a (cell empty); b (cell empty)"]
    assert cat.codes.tolist() == [0, -1, 2, 1]


@pytest.mark.parametrize("years", [[2022, 2023, 2022, 2022, 2023], [2**40, 2**40 + 1, 2**40, 2**40, 2**40 + 1]])
def test_duplicate_firm_years_with_a_narrow_and_a_wide_key(years: list[int]) -> None:
    codes = np.array([0, 0, 1, 0, 1], dtype=np.int32)
    columns = {"firm_id": data.Category(codes, ["A", "B"]), "year": np.array(years, dtype=np.float64)}
    issues: list[data.DataIssue] = []
    row_issues: dict[int, list[str]] = {}
    invalid = np.zeros(5, dtype=bool)
    data._check_duplicates(columns, codes, 5, np.arange(1, 6), issues, row_issues, invalid, "x")
    assert [(i.row, i.message) for i in issues] == [(1, f"duplicate firm-year (A, {years[0]}): 2 rows (1, 4)")]
    assert invalid.tolist() == [True, False, False, True, False]


@pytest.mark.parametrize(
    ("values", "maybe"),
    [
        (["abc", "x1"], False),
        ([" abc", "x"], True),
        (["abc", "x\t"], True),
        (["abc", "", "x"], False),  # an empty value has no edge
        (["abc", ""], False),
        (["中文", "x"], True),  # a non-ASCII byte may be a wide space
        (["a~", "!b"], False),
        (["a\x7f"], True),
    ],
)
def test_edge_space_test_by_arithmetic(values: list[str], maybe: bool) -> None:
    assert _arrow.may_have_edge_space(pa.array(values, type=pa.string())) is maybe
    assert _arrow.may_have_edge_space(pa.array(["pad"] + values, type=pa.string()).slice(1)) is maybe


def test_null_masks_unpacked_from_inverted_bits() -> None:
    arr = pa.array([1.0, None, 3.0, None, None, 6.0, 7.0, None, 9.0, 10.0], type=pa.float64())
    for a in (arr, arr.slice(3), arr.slice(3, 4)):
        want = [v is None for v in a.to_pylist()]
        assert _arrow.nulls(a).tolist() == want
        assert _arrow.valid(a).tolist() == [not w for w in want]
    assert _arrow.nulls(pa.array([1.0, 2.0])).tolist() == [False, False]
    assert _arrow.nulls(pa.nulls(3, type=pa.float64())).tolist() == [True] * 3


def test_nan_and_infinite_cells_of_a_parquet_file_are_issues_of_their_rows(tmp_path: Path) -> None:
    """NaN (not null) and infinite float cells: one fatal issue per cell, as before, built per column."""
    nan, inf = float("nan"), float("inf")
    table = pa.table(
        {
            "firm_id": ["F1", "F2", "F3", "F4"],
            "year": [2022] * 4,
            "industry": ["3011"] * 4,
            "value_added_10k_cny": [100.0, nan, 100.0, -inf],
            "electricity_mwh": [5.0, 5.0, inf, None],  # None: a null, the missing value (required)
            "raw_coal_t": [nan, nan, 1.0, None],  # optional: a null takes the default, a NaN does not
        }
    )
    pq.write_table(table, tmp_path / "nan.parquet")
    plan = ruleengine.load("huzhou")
    batch = pipeline.prepare(plan, pipeline.read(tmp_path / "nan.parquet", [plan]), consume=True)
    # in the rulebook's input order; row 4's missing electricity is not listed: the row is unrated already
    assert [(i.row, i.column, i.message, i.fatal) for i in batch.issues] == [
        (1, "raw_coal_t", "nan is not a finite number", True),
        (2, "raw_coal_t", "nan is not a finite number", True),
        (3, "electricity_mwh", "inf is not a finite number", True),
        (2, "value_added_10k_cny", "nan is not a finite number", True),
        (4, "value_added_10k_cny", "-inf is not a finite number", True),
    ]
    assert batch.row_issues == {
        0: ["raw_coal_t: nan is not a finite number"],
        1: ["raw_coal_t: nan is not a finite number", "value_added_10k_cny: nan is not a finite number"],
        2: ["electricity_mwh: inf is not a finite number"],
        3: ["value_added_10k_cny: -inf is not a finite number"],
    }
    assert batch.invalid.tolist() == [True, True, True, True]
    assert np.isnan(batch.columns["raw_coal_t"][:2]).all() and batch.columns["raw_coal_t"][3] == 0.0


def test_the_division_per_row_is_built_when_first_read_and_survives_take(tmp_path: Path) -> None:
    rng = random.Random(5)
    shenzhen, huzhou = _valid_code(rng, "440304"), _valid_code(rng, "330502")
    csv = tmp_path / "j.csv"
    csv.write_text(
        "firm_id,year,industry,value_added_10k_cny,electricity_mwh\n"
        f"{huzhou},2022,3011,100,5\n{shenzhen},2022,3011,100,5\nF-1,2022,3011,100,5\n,2023,3011,100,5\n"
        f"{huzhou},2023,3011,100,5\n",
        encoding="utf-8",
    )
    plan = ruleengine.load("huzhou")
    batch = pipeline.prepare(plan, pipeline.read(csv, [plan]), consume=True)
    jur = batch.jurisdiction
    assert jur.status.tolist() == [0, 1, 2, 2, 0]  # inside, outside, unknown (no code), unknown (no id)
    assert batch.invalid.tolist() == [False, True, False, True, False]  # the missing id: a required value
    part = jur.take(np.array([4, 1, 2]))  # taken before the division was ever read
    assert part.status.tolist() == [0, 1, 2]
    assert [part.division.labels[c] if c >= 0 else None for c in part.division.codes.tolist()] == [
        "330502 (firm_id)",
        "440304 (firm_id)",
        None,
    ]
    assert jur.division.labels == ["330502 (firm_id)", "440304 (firm_id)"]
    assert jur.division.codes.tolist() == [0, 1, -1, -1, 0]
