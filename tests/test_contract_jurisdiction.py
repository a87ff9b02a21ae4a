"""Issue #12.4/#12.5: jurisdiction and benchmark files, with hand-computed numbers.

The portfolio: five Huzhou firms (credit codes 91330502…, division 330502 Wuxing) and one Quzhou
firm (91330802…, Kecheng) in class 3011, 2022, East grid (0.5617 tCO2/MWh), no fuel, value added
100 each. Huzhou's industry L = Σ net CO2 / Σ value added over its peers:
  Huzhou firms only:   0.5617 × (100+200+300+400+500) / 500 = 1.6851, 5 peers
  with the Quzhou firm (10,000 MWh): 0.5617 × 11,500 / 600 = 10.765916…, 6 peers (the old, wrong number)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import ruleengine
from ruleengine.cli import main
from ruleengine.errors import DataError, RulebookError
from ruleengine.io.identifiers import uscc_check_char

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "sample_firms.csv"


def code(division: str, serial: int) -> str:
    first = f"91{division}{serial:09d}"
    return first + uscc_check_char(first)


def firm(fid: str, mwh: float, **extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "firm_id": fid,
        "year": 2022,
        "industry": "3011",
        "grid_region": "east",
        "value_added_10k_cny": 100.0,
        "electricity_mwh": mwh,
    }
    row.update(extra)
    return row


HUZHOU = [firm(code("330502", i), 100.0 * i) for i in range(1, 6)]
QUZHOU = firm(code("330802", 9), 10_000.0)


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_a_quzhou_firm_in_a_huzhou_run_is_unrated_and_not_a_peer():
    res = ruleengine.rate("huzhou", [*HUZHOU, QUZHOU])
    q = res.row(5)
    assert q["status"] == "unrated" and q["rating"] == ""
    assert q["jurisdiction"] == "outside"
    assert q["reasons"] == (
        "outside jurisdiction: division 330802 (firm_id) is not in huzhou's jurisdiction (Huzhou, Zhejiang: 3305xx)"
    )
    assert [n.code for n in res.notes("reasons", 5)] == ["outside_jurisdiction"]
    for i in range(5):  # the Huzhou peers: 0.5617 × 1500 / 500, five of them
        row = res.row(i)
        assert row["status"] == "rated" and row["jurisdiction"] == "inside"
        assert row["industry_intensity"] == pytest.approx(1.6851, abs=1e-12)
        assert row["industry_intensity_peers"] == 5 and row["industry_intensity_group"] == "industry"
    # firm 1: L = 0.5617 × 100 / 100 = 0.5617, K = 0.5617 / 1.6851 = 0.3333 → level 1
    assert res.row(0)["k"] == pytest.approx(1 / 3, abs=1e-12) and res.row(0)["rating"] == "1"
    table = res.tables["industry_intensity"]
    assert table.entries[0][(2022, "3011")] == (pytest.approx(1.6851, abs=1e-12), 5)


def test_any_jurisdiction_rates_the_firm_counts_it_and_records_it():
    res = ruleengine.rate("huzhou", [*HUZHOU, QUZHOU], any_jurisdiction=True)
    q = res.row(5)
    assert q["status"] == "rated" and q["jurisdiction"] == "outside, rated (any jurisdiction)"
    assert q["fallbacks"].startswith("jurisdiction: division 330802 (firm_id) is outside huzhou's jurisdiction")
    # 0.5617 × 11,500 / 600 with six peers: what the engine used to do silently
    assert q["industry_intensity"] == pytest.approx(0.5617 * 11_500 / 600, abs=1e-12)
    assert q["industry_intensity_peers"] == 6


def test_region_column_wins_over_the_credit_code_and_a_bad_region_is_located():
    rows = [dict(r) for r in HUZHOU] + [firm("F-ANJI", 50.0, region="330523"), dict(HUZHOU[0], year=2023)]
    rows[1]["region"] = "330802"  # registered in Huzhou, now in Quzhou: the region column decides
    rows[2]["region"] = "Huzhou"  # not a code: a warning, the credit code decides
    res = ruleengine.rate("huzhou", rows)
    assert res.row(1)["jurisdiction"] == "outside" and res.row(1)["status"] == "unrated"
    assert "division 330802 (region)" in res.row(1)["reasons"]
    assert res.row(2)["jurisdiction"] == "inside" and res.row(2)["status"] == "rated"
    assert res.row(5)["jurisdiction"] == "inside"  # no credit code, region 330523 (Anji)
    assert res.row(6)["jurisdiction"] == "inside"  # no region cell: the credit code
    warn = [i.format() for i in res.issues if i.column == "region"]
    assert warn == [
        "<records>: row 3, column region: 'Huzhou' is not a GB/T 2260 division code (2, 4 or 6 digits) (1 rows): "
        "the firm id's division is used"
    ]


def test_a_firm_without_a_division_is_rated_as_inside_and_marked_unknown():
    rows = [*HUZHOU, firm("F001", 600.0), firm(code("100000", 1), 700.0)]  # 100000: central level, no division
    res = ruleengine.rate("huzhou", rows)
    for i in (5, 6):
        assert res.row(i)["status"] == "rated" and res.row(i)["jurisdiction"] == "unknown"
        assert "jurisdiction" not in res.row(i)["fallbacks"]
    # both count as peers: 0.5617 × (1500 + 600 + 700) / 700 = 2.2468
    assert res.row(0)["industry_intensity"] == pytest.approx(0.5617 * 2800 / 700, abs=1e-12)
    assert res.row(0)["industry_intensity_peers"] == 7


def test_the_national_rulebook_declares_no_jurisdiction():
    res = ruleengine.rate("national", [*HUZHOU, QUZHOU])
    assert list(res["jurisdiction"]) == [""] * 6
    assert res.plan.divisions == () and res.row(5)["status"] == "rated"


def test_jurisdiction_in_the_rulebook_language(tmp_path):
    plan = ruleengine.load("quzhou")
    assert plan.divisions == ("3308",) and plan.jurisdiction == "Quzhou, Zhejiang"
    assert ruleengine.load("shenzhen").divisions == ("4403",)
    text = (ROOT / "rulebooks" / "huzhou.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "huzhou.yaml"
    bad.write_text(text.replace('divisions: ["3305"]', 'divisions: ["330500", "99"]'), encoding="utf-8")
    with pytest.raises(RulebookError) as err:
        ruleengine.load(str(bad))
    messages = [d.message for d in err.value.diagnostics]
    assert (
        "'330500' would match that code only; a division and everything in it is its prefix: write '3305'" in messages
    )
    assert "'99': 99 is not a GB/T 2260 province-level code" in messages


def test_the_sample_summary_makes_sense_per_city():
    r = run("rate", "huzhou", str(SAMPLE))
    assert r.exit_code == 0, r.output
    # the sample's city column: 281 Huzhou firm-years (codes 913305…), 146 Quzhou, 175 Shenzhen
    assert (
        "jurisdiction: huzhou's jurisdiction (Huzhou, Zhejiang: 3305xx): 281 inside, 321 outside (unrated, not in the "
        "peer groups)" in r.output
    )
    assert "outside jurisdiction (321)" in r.output
    r = run("rate", "shenzhen", str(SAMPLE))
    assert "175 inside, 427 outside" in r.output


# -- benchmark files --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    out, tables = d / "all.csv", d / "huzhou-benchmarks.json"
    r = run("rate", "huzhou", str(SAMPLE), "-o", str(out), "--export-benchmarks", str(tables))
    assert r.exit_code == 0, r.output
    assert f"benchmark tables written to {tables}" in r.output
    with out.open(encoding="utf-8") as fh:
        return d, list(csv.DictReader(fh)), tables, r.output


def test_the_exported_file_holds_hash_years_peers_and_exact_values(exported):
    d, rows, tables, _ = exported
    doc = json.loads(tables.read_text(encoding="utf-8"))
    plan = ruleengine.load("huzhou")
    assert doc["format"] == "ruleengine-benchmarks/1"
    assert doc["rulebook"] == {"id": "huzhou", "version": "3.0.0", "hash": plan.hash}
    assert doc["data"]["years"] == [2022, 2023]
    assert doc["jurisdiction"] == {"name": "Huzhou, Zhejiang", "divisions": ["3305"], "any_jurisdiction": False}
    t = doc["tables"]["industry_intensity"]
    assert t["placeholder_fallback"] is True and [lv["level"] for lv in t["levels"]] == [
        "industry", "industry_division", "fallback"
    ]  # fmt: skip
    # a group by hand: the rated Huzhou firm-years of class 1711 in 2022, L = Σ net CO2 / Σ value added
    from math import fsum

    with SAMPLE.open(encoding="utf-8") as fh:
        src = {(r["firm_id"], r["year"]): r for r in csv.DictReader(fh)}
    peers = [
        (r, src[(r["firm_id"], r["year"])])
        for r in rows
        if r["status"] == "rated" and r["year"] == "2022" and src[(r["firm_id"], r["year"])]["industry"] == "1711"
    ]
    value = fsum(float(r["net_emissions_tco2"]) for r, _ in peers) / fsum(
        float(s["value_added_10k_cny"]) for _, s in peers
    )
    group = next(g for g in t["levels"][0]["groups"] if g["year"] == 2022 and g["group"] == "1711")
    assert group["peers"] == len(peers) == int(peers[0][0]["industry_intensity_peers"]) == 16
    assert group["value"] == pytest.approx(value, rel=1e-12)
    assert group["value"] == float(peers[0][0]["industry_intensity"])  # the exact value the run used


def test_one_firm_against_the_exported_tables_gets_its_row_of_the_full_run(exported, tmp_path):
    _, rows, tables, _ = exported
    with SAMPLE.open(encoding="utf-8") as fh:
        src = list(csv.DictReader(fh))
    fid = "91330500580895964B"  # Huzhou, class 1713
    one = tmp_path / "one.csv"
    with one.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(src[0]))
        w.writeheader()
        w.writerows(r for r in src if r["firm_id"] == fid)
    out = tmp_path / "one_out.csv"
    r = run("rate", "huzhou", str(one), "--benchmarks", str(tables), "-o", str(out))
    assert r.exit_code == 0, r.output
    assert f"benchmarks: the tables of {tables}" in r.output
    with out.open(encoding="utf-8") as fh:
        mine = list(csv.DictReader(fh))
    full = [row for row in rows if row["firm_id"] == fid]
    assert len(mine) == 2 and mine == full  # every column, byte for byte
    assert {row["provisional"] for row in mine} == {""}
    # alone, without the tables: the placeholder table, so both ratings are provisional
    alone = ruleengine.rate("huzhou", str(one))
    assert list(alone["provisional"]) == ["yes", "yes"]
    assert "used placeholder_industry_intensity['17']" in alone.row(0)["fallbacks"]
    r = run("rate", "huzhou", str(one))
    assert (
        "provisional: 2 rated firm-years rest on a placeholder (unpublished) benchmark value (industry_intensity 2)"
        in r.output
    )
    assert (
        "fallbacks taken (rated firm-years): industry_intensity from placeholder_industry_intensity [placeholder] 2"
        in r.output
    )
    # explain against the tables, and the trace verifies
    e = run("explain", "huzhou", str(one), "--firm", fid, "--year", "2022", "--benchmarks", str(tables),
            "--format", "json")  # fmt: skip
    assert e.exit_code == 0, e.output
    trace = json.loads(e.output)
    assert trace["nodes"] and trace["status"] == "rated"
    path = tmp_path / "trace.json"
    path.write_text(e.output, encoding="utf-8")
    assert run("verify", str(path)).exit_code == 0


def test_the_summary_counts_every_fallback_by_kind_and_the_provisional_ratings(exported):
    _, rows, _, output = exported
    rated = [r for r in rows if r["status"] == "rated"]
    by_division = sum(r["industry_intensity_group"] == "industry_division" for r in rated)
    placeholder = sum(r["industry_intensity_group"] == "fallback" for r in rated)
    provisional = sum(r["provisional"] == "yes" for r in rows)
    assert provisional == placeholder and placeholder > 0 and by_division > 0
    assert all(r["status"] == "rated" for r in rows if r["provisional"] == "yes")
    assert (
        f"fallbacks taken (rated firm-years): industry_intensity by industry_division {by_division}; "
        f"industry_intensity from placeholder_industry_intensity [placeholder] {placeholder}" in output
    )
    assert f"provisional: {provisional} rated firm-years rest on a placeholder" in output


def test_tables_of_another_rulebook_or_no_tables_at_all_are_clear_errors(exported, tmp_path):
    _, _, tables, _ = exported
    r = run("rate", "quzhou", str(SAMPLE), "--benchmarks", str(tables))
    assert r.exit_code == 1
    plan = ruleengine.load("quzhou")
    assert (
        r.output.startswith(f"error: {tables}: these benchmark tables belong to rulebook huzhou 3.0.0 (")
        and f"but the rating uses quzhou 3.0.0 ({plan.hash}); export them again" in r.output
    )
    junk = tmp_path / "junk.json"
    junk.write_text('{"tables": {}}', encoding="utf-8")
    with pytest.raises(DataError, match="not a ruleengine benchmark file"):
        ruleengine.rate("huzhou", [HUZHOU[0]], benchmarks=junk)
    edited = json.loads(tables.read_text(encoding="utf-8"))
    edited["rulebook"]["hash"] = "sha256:0000000000000000"
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(edited), encoding="utf-8")
    with pytest.raises(DataError, match="belong to rulebook huzhou 3.0.0 \\(sha256:0000000000000000\\)"):
        ruleengine.rate("huzhou", [HUZHOU[0]], benchmarks=changed)
    assert run("rate", "huzhou", str(SAMPLE), "--benchmarks", str(tmp_path / "none.json")).exit_code == 1


def test_a_year_the_tables_do_not_hold_is_reported(exported):
    _, _, tables, _ = exported
    res = ruleengine.rate("huzhou", [dict(HUZHOU[0], year=2024)], benchmarks=tables)
    assert res.row(0)["provisional"] == "yes"
    assert [i.message for i in res.issues if i.column == "year"] == [
        "the benchmark tables hold no peer group for 2024: those firm-years use the rulebook's fallback "
        "(see the fallbacks and provisional columns)"
    ]


def test_export_is_deterministic_and_the_api_round_trips(tmp_path):
    res = ruleengine.rate("huzhou", [*HUZHOU, QUZHOU])
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    ruleengine.export_benchmarks(res, a)
    ruleengine.export_benchmarks(ruleengine.rate("huzhou", [*HUZHOU, QUZHOU]), b)
    assert a.read_bytes() == b.read_bytes()
    tables = ruleengine.load_benchmarks(a, "huzhou")
    again = ruleengine.rate("huzhou", [HUZHOU[2]], benchmarks=tables)
    assert again.row(0)["industry_intensity"] == pytest.approx(1.6851, abs=1e-12)
    assert again.row(0)["industry_intensity_peers"] == 5 and again.row(0)["rating"] == res.row(2)["rating"]


def test_the_division_of_an_id_written_as_a_credit_code():
    import pyarrow as pa

    from ruleengine.io.jurisdiction import credit_code_divisions

    ids = [
        "913305003141592653",  # characters 3-8: 330500 (its check character fails: still a division)
        "9133O5003141592653",  # a letter O among the division digits
        "I1330500314159265A",  # 'I' is not in the code's alphabet (character 1)
        "911000003141592653",  # 100000: the central level, no province
        "9133050031415926531",  # 19 characters
        "F01",
        None,
        "中文中文中文",  # 18 bytes of UTF-8, not a code
        code("440304", 7),  # Futian, Shenzhen
    ]
    got = credit_code_divisions(pa.array(ids, type=pa.string())).tolist()
    assert got == [330500, -1, -1, -1, -1, -1, -1, -1, 440304]


def test_flags_the_runners_cannot_honour_are_usage_errors(tmp_path):
    r = run("rate", "huzhou", str(SAMPLE), "--chunk-rows", "100", "-o", str(tmp_path / "o.csv"), "--any-jurisdiction")
    assert r.exit_code == 2 and "work with the local runner only" in r.output
    r = run("rate", "huzhou", str(SAMPLE), "--any-jurisdiction", "--ledger", str(tmp_path / "l.db"))
    assert r.exit_code == 2 and "not recorded in the ledger" in r.output
    assert not (tmp_path / "l.db").exists()


def test_many_bad_region_values_give_five_located_warnings_and_a_count():
    rows = [firm(f"F{i}", 1.0, region=f"city{i % 8}") for i in range(40)]
    warn = [i.format() for i in ruleengine.rate("huzhou", rows).issues if i.column == "region"]
    assert len(warn) == 5
    assert warn[0].startswith("<records>: row 1, column region: 'city0' is not a GB/T 2260 division code")
    assert warn[4].endswith("(5 rows): the firm id's division is used; and 3 more such values")


def test_division_labels_of_a_few_ids_are_those_of_the_lookup_tables(monkeypatch):
    """A few ids (a one-firm rating) take a sort instead of filling two 1,000,001-entry tables
    (~0.1 ms a request); the labels and each id's label are the same either way."""
    import numpy as np

    from ruleengine.io import jurisdiction as J

    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 5, 300):
        codes = rng.choice(np.array([-1, 110000, 330500, 330502, 440300, 999999], dtype=np.int32), size=n)
        few = J._id_division_labels(codes)
        monkeypatch.setattr(J, "_FEW_CODES", -1)
        tables = J._id_division_labels(codes)
        monkeypatch.undo()
        assert few[1] == tables[1]
        assert few[0].dtype == tables[0].dtype and few[0].tolist() == tables[0].tolist()
