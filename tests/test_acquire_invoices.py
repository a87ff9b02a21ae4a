"""Tax e-invoices -> firm-year carriers (issue #14): hand-computed quantities and located issues."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from ruleengine.acquire import AcquireError, acquire_invoices
from ruleengine.acquire.invoices import credit_code_ok
from ruleengine.acquire.samplegen import LEDGER_HEADER, credit_code, invoice_xml, ledger_rows, write_ofd, write_xlsx

FIRM = credit_code("91330500MA2B00001")
OTHER = credit_code("91330500MA2B09999")
GRID = credit_code("91330000MA2C00000")


def _line(name, code, unit, qty, price, rate):
    amount = round(qty * price, 2)
    return {
        "name": name,
        "code": code,
        "unit": unit,
        "qty": qty,
        "price": price,
        "amount": amount,
        "rate": rate,
        "tax": round(amount * rate, 2),
    }


def _inv(no, date, items, buyer=FIRM, original=""):
    return {"no": no, "date": date, "seller": GRID, "buyer": buyer, "items": items, "original": original}


ELEC = ("*供电*电费", "1100101000000000000")
INV1 = _inv("24332000000000000001", "2024-01-05", [_line(*ELEC, "千瓦时", 120000, 0.7, 0.13)])
INV2 = _inv("24332000000000000002", "2024-02-05", [_line(*ELEC, "", 50000, 0.7, 0.13)])  # empty unit
INV3 = _inv("24332000000000000003", "2024-03-05", [_line("*电力*电费", "", "万千瓦时", 1.5, 7000, 0.13)])
INV4 = _inv("24332000000000000004", "2024-01-20", [_line(*ELEC, "千瓦时", -20000, 0.7, 0.13)], original=INV1["no"])
INV5 = _inv(
    "24332000000000000005",
    "2024-04-10",
    [_line("*天然气*管道天然气", "1100301000000000000", "立方米", 30000, 3.2, 0.09)],
)
INV6 = _inv(
    "24332000000000000006",
    "2024-06-18",
    [
        _line("*汽油*92号车用汽油(VIB)", "1070101010100000000", "升", 1000, 7.9, 0.13),
        _line("*运输服务*国内道路货物运输服务", "3010102020000000000", "", 1, 5000, 0.09),
    ],
)
INV7 = _inv("24332000000000000007", "2024-05-05", [_line(*ELEC, "千瓦时", 999, 0.7, 0.13)], buyer=OTHER)

MAPPING = f"""\
year: 2024
infer_empty_unit: [electricity]
firms:
  "{FIRM}": {{attributes: {{city: huzhou, industry: "3011", grid_region: east, value_added_10k_cny: 500}}}}
"""


def _set(tmp: Path) -> list[Path]:
    (tmp / "xml").mkdir()
    for inv, style in ((INV1, "std"), (INV2, "pinyin"), (INV4, "std"), (INV6, "pinyin"), (INV7, "std")):
        (tmp / "xml" / f"{inv['no']}.xml").write_text(invoice_xml(inv, style), encoding="utf-8")
    write_ofd(tmp / "inv1.ofd", INV1)  # the same invoice as XML and OFD
    rows = ledger_rows(INV3) + ledger_rows(INV5) + ledger_rows(INV2)  # INV2 again, in the ledger
    import csv

    with (tmp / "ledger.csv").open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([LEDGER_HEADER, *rows])
    (tmp / "mapping.yaml").write_text(MAPPING, encoding="utf-8")
    return [tmp / "xml", tmp / "inv1.ofd", tmp / "ledger.csv"]


def test_hand_computed_invoice_set(tmp_path: Path) -> None:
    acq = acquire_invoices(_set(tmp_path), tmp_path / "mapping.yaml")
    (row,) = acq.table.to_pylist()
    # electricity: 120,000 kWh (INV1; its OFD copy dropped) + 50,000 kWh (INV2, empty unit at 0.7 CNY
    # inferred kWh; its ledger copy dropped) + 1.5 万千瓦时 = 15,000 kWh (INV3) - 20,000 kWh (red INV4)
    # = 165,000 kWh = 165 MWh, from 4 invoices in 3 billing months (Jan, Feb, Mar) => coverage 3/12
    assert row["electricity_mwh"] == pytest.approx(165.0, abs=1e-9)
    assert row["electricity_mwh_invoices"] == 4
    assert row["electricity_mwh_coverage"] == 0.25
    assert row["electricity_mwh_source"] == "invoices"
    assert row["electricity_mwh_policy"] == "invoice totals; 1 red line(s) netted; 1 empty unit(s) inferred by rule"
    # natural gas 30,000 立方米 = 3.0 x 10^4 Nm3; vehicle gasoline 1,000 L x 0.74 kg/L = 0.74 t;
    # freight 5,000 CNY excl. VAT = 0.5 x 10^4 CNY, in its own column
    assert row["natural_gas_10k_nm3"] == pytest.approx(3.0)
    assert row["vehicle_gasoline_t"] == pytest.approx(0.74)
    assert row["freight_spend_10k_cny"] == pytest.approx(0.5)
    assert "gasoline_t" not in row  # vehicle fuel is never stationary combustion
    assert row["industry"] == "3011" and row["value_added_10k_cny"] == 500.0
    by = {}
    for i in acq.report.issues:
        by.setdefault(i.code, []).append(i)
    assert sorted(by) == ["buyer_not_firm", "duplicate_invoice", "red_netted", "unit_inferred"]
    dups = sorted((i.file.rsplit("/", 1)[-1], i.subject) for i in by["duplicate_invoice"])
    assert dups == [("inv1.ofd", f"invoice {INV1['no']}"), ("ledger.csv", f"invoice {INV2['no']}")]
    (wrong,) = by["buyer_not_firm"]
    assert wrong.severity == "error" and wrong.file.endswith(f"{INV7['no']}.xml")
    (inf,) = by["unit_inferred"]
    assert inf.file.endswith(f"{INV2['no']}.xml") and inf.severity == "warning"


def test_without_the_declared_rule_an_empty_unit_is_an_error(tmp_path: Path) -> None:
    paths = _set(tmp_path)
    (tmp_path / "mapping.yaml").write_text(MAPPING.replace("infer_empty_unit: [electricity]\n", ""), encoding="utf-8")
    acq = acquire_invoices(paths, tmp_path / "mapping.yaml")
    (row,) = acq.table.to_pylist()
    assert row["electricity_mwh"] == pytest.approx(115.0)  # 165 - 50: the line without a unit is not used
    (err,) = [i for i in acq.report.issues if i.code == "empty_unit"]
    assert err.severity == "error" and err.rows == (1,)


def test_ledger_checks_vat_units_and_resale(tmp_path: Path) -> None:
    sale = {
        "no": "24332000000000000010",
        "date": "2024-07-05",
        "seller": FIRM,
        "buyer": OTHER,
        "items": [_line(*ELEC, "kWh", 3000, 0.8, 0.13)],
    }  # 转供电 to a tenant
    rows = (
        ledger_rows(INV1)
        + ledger_rows(sale)
        + ledger_rows(_inv("24332000000000000011", "2024-08-05", [_line(*ELEC, "千瓦时", 1000, 0.7, 0.09)]))
        + ledger_rows(_inv("24332000000000000012", "2024-09-05", [_line(*ELEC, "桶", 5, 0.7, 0.13)]))
        + ledger_rows(_inv("24332000000000000013", "2023-12-05", [_line(*ELEC, "千瓦时", 7, 0.7, 0.13)]))
    )
    rows[2][7] = "abc"  # a quantity that is not a number (ledger row 3)
    write_xlsx(tmp_path / "ledger.xlsx", LEDGER_HEADER, rows)
    (tmp_path / "m.yaml").write_text(
        MAPPING.replace("{attributes", "{resale: [electricity], attributes"), encoding="utf-8"
    )
    acq = acquire_invoices([tmp_path / "ledger.xlsx"], tmp_path / "m.yaml")
    (row,) = acq.table.to_pylist()
    # bought 120,000 kWh (INV1); resold 3,000 kWh to a tenant: 117 MWh; row 3 (bad quantity) ignored,
    # row 4 in '桶' (not in the unit table) ignored, row 5 from 2023 ignored
    assert row["electricity_mwh"] == pytest.approx(117.0)
    assert row["electricity_mwh_resale"] == pytest.approx(3.0)
    by = {i.code: i for i in acq.report.issues}
    assert by["bad_quantity"].rows == (3,)
    assert by["unknown_unit"].rows == (4,) and "'桶'" in by["unknown_unit"].message
    assert by["outside_year"].rows == (5,)
    assert "vat_rate" not in by  # the row with 9% was the bad-quantity row, already out


def test_vat_plausibility_flags(tmp_path: Path) -> None:
    bad = _inv("24332000000000000020", "2024-02-01", [_line(*ELEC, "千瓦时", 1000, 0.7, 0.09)])
    bad["items"][0]["tax"] = 1.0
    (tmp_path / "a.xml").write_text(invoice_xml(bad), encoding="utf-8")
    (tmp_path / "m.yaml").write_text(MAPPING, encoding="utf-8")
    acq = acquire_invoices([tmp_path / "a.xml"], tmp_path / "m.yaml")
    codes = sorted(i.code for i in acq.report.issues)
    assert codes == ["vat_amount", "vat_rate"]
    assert acq.table.column("electricity_mwh").to_pylist() == [1.0]  # flagged, still counted


def test_credit_code_check_character() -> None:
    assert credit_code_ok(FIRM) and credit_code_ok(GRID)
    assert not credit_code_ok(FIRM[:-1] + ("0" if FIRM[-1] != "0" else "1"))
    assert not credit_code_ok("123")


def test_mapping_errors_are_located(tmp_path: Path) -> None:
    (tmp_path / "a.xml").write_text(invoice_xml(INV1), encoding="utf-8")
    cases = {
        "firms:\n  X: {resale: [electrcity]}\n": "firms.X.resale: unknown carrier 'electrcity' (did you mean 'electricity'?)",
        "firms:\n  X: {vehicle: all}\n": "firms.X: unknown key 'vehicle'",
        "firms: {}\ninfer_empty_unit: [diesel]\n": "infer_empty_unit: no declared rule for 'diesel'",
        "year: [1]\nfirms: {}\n": "year: expected a year",
    }
    for text, expected in cases.items():
        (tmp_path / "m.yaml").write_text(text, encoding="utf-8")
        with pytest.raises(AcquireError) as exc:
            acquire_invoices([tmp_path / "a.xml"], tmp_path / "m.yaml")
        assert expected in str(exc.value)


def test_ofd_without_embedded_xml_falls_back_to_custom_data(tmp_path: Path) -> None:
    write_ofd(tmp_path / "a.ofd", INV1, embed=False)
    ledger = tmp_path / "l.csv"
    import csv

    with ledger.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([LEDGER_HEADER, *ledger_rows(INV1)])
    (tmp_path / "m.yaml").write_text(MAPPING, encoding="utf-8")
    acq = acquire_invoices([tmp_path / "a.ofd", ledger], tmp_path / "m.yaml")
    # the OFD gives the header only; the ledger copy's line is used: 120 MWh, counted once
    assert acq.table.column("electricity_mwh").to_pylist() == [120.0]
    assert {i.code for i in acq.report.issues} >= {"ofd_header_only"}
    assert zipfile.is_zipfile(tmp_path / "a.ofd")


def test_buyer_credit_codes_use_the_data_contracts_check():
    from ruleengine.acquire.invoices import credit_code_ok
    from ruleengine.io.identifiers import uscc_problem

    # 91350100M000100Y43: the worked example of GB 32100-2015 (check character 3)
    for code in ("91350100M000100Y43", "91350100M000100Y44", "9135010", "91350100M000100YI3"):
        assert credit_code_ok(code) == (uscc_problem(code) is None)
    assert credit_code_ok("91350100M000100Y43") and not credit_code_ok("91350100M000100Y44")
