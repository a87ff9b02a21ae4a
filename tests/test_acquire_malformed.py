"""Malformed inputs give located errors, never a traceback, and the rest is still processed (issue #14)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ruleengine.acquire import acquire_invoices, acquire_meters
from ruleengine.acquire.samplegen import credit_code, invoice_xml, write_ofd

FIRM = credit_code("91330500MA2B00001")
GOOD = {
    "no": "24332000000000000001",
    "date": "2024-01-05",
    "seller": credit_code("91330000MA2C00000"),
    "buyer": FIRM,
    "items": [
        {
            "name": "*供电*电费",
            "code": "1100101000000000000",
            "unit": "千瓦时",
            "qty": 1000,
            "price": 0.7,
            "amount": 700.0,
            "rate": 0.13,
            "tax": 91.0,
        }
    ],
}


@pytest.fixture
def mapping(tmp_path: Path) -> Path:
    p = tmp_path / "m.yaml"
    p.write_text(f'year: 2024\nfirms:\n  "{FIRM}": {{}}\n', encoding="utf-8")
    return p


def _errors(acq) -> dict[str, str]:
    return {Path(i.file).name: i.message for i in acq.report.issues if i.code == "unreadable"}


def test_bad_xml_files_are_refused_and_the_rest_processed(tmp_path: Path, mapping: Path) -> None:
    good = tmp_path / "good.xml"
    good.write_text(invoice_xml(GOOD), encoding="utf-8")
    (tmp_path / "truncated.xml").write_text(invoice_xml(GOOD)[:200], encoding="utf-8")
    bomb = (
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(
            f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10)
        )
        + "]>\n<EInvoice><InvoiceNumber>&lol9;</InvoiceNumber></EInvoice>\n"
    )
    (tmp_path / "bomb.xml").write_text(bomb, encoding="utf-8")
    # an external entity pointing at a local file and at the network: neither may be read
    (tmp_path / "xxe.xml").write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">'
        '<!ENTITY n SYSTEM "http://192.0.2.1/x">]>\n<EInvoice><InvoiceNumber>&e;&n;</InvoiceNumber>'
        "</EInvoice>\n",
        encoding="utf-8",
    )
    (tmp_path / "huge.xml").write_bytes(b"<a>" + b" " * 5_000_001 + b"</a>")
    files = [good, tmp_path / "truncated.xml", tmp_path / "bomb.xml", tmp_path / "xxe.xml", tmp_path / "huge.xml"]
    acq = acquire_invoices(files, mapping)
    assert acq.table.column("electricity_mwh").to_pylist() == [1.0]  # the good invoice: 1000 kWh
    errs = _errors(acq)
    # cut at character 200: line 2 (after the XML declaration), column 159
    assert errs["truncated.xml"] == f"{tmp_path / 'truncated.xml'}:2:159: malformed XML: unclosed token"
    assert "declares a DTD or entities" in errs["bomb.xml"] and "nothing expanded" in errs["bomb.xml"]
    assert "declares a DTD or entities" in errs["xxe.xml"]
    assert "exceeds the 5,000,000-byte limit" in errs["huge.xml"]


def test_zip_bomb_ofd_is_refused(tmp_path: Path, mapping: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("OFD.xml", "<OFD/>")
        zf.writestr("Doc_0/Attachs/invoice.xml", b"<" + b"a" * 8_000_000 + b"/>")  # ratio ~1000:1
    (tmp_path / "bomb.ofd").write_bytes(buf.getvalue())
    (tmp_path / "notzip.ofd").write_bytes(b"PK\x03\x04 this is not a zip")
    write_ofd(tmp_path / "good.ofd", GOOD)
    acq = acquire_invoices([tmp_path / "bomb.ofd", tmp_path / "notzip.ofd", tmp_path / "good.ofd"], mapping)
    errs = _errors(acq)
    assert "refused as a possible zip bomb" in errs["bomb.ofd"]
    assert "not a readable zip container" in errs["notzip.ofd"]
    assert acq.table.column("electricity_mwh").to_pylist() == [1.0]


def test_wrong_column_types_in_parquet(tmp_path: Path) -> None:
    reg = tmp_path / "r.yaml"
    reg.write_text(
        'year: 2024\nmeters:\n  - {id: "1", firm_id: F, carrier: electricity, unit: kWh, valid_to: 2024-01-01 01:00}\n'
        '  - {id: "2", firm_id: G, carrier: electricity, unit: kWh, valid_to: 2024-01-01 01:00}\n',
        encoding="utf-8",
    )
    pq.write_table(
        pa.table(
            {
                "meter": ["1"] * 4,
                "timestamp": ["2024-01-01 00:15", "2024-01-01 00:30", "2024-01-01 00:45", "2024-01-01 01:00"],
                "value": [True, False, True, True],
            }
        ),
        tmp_path / "bools.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "meter": ["2"] * 2,
                "timestamp": pa.array([1704039300, 1704040200], pa.timestamp("s", tz="UTC")),
                "value": [1.5, 2.5],
            }
        ),
        tmp_path / "typed.parquet",
    )
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    acq = acquire_meters([tmp_path / "bools.parquet", tmp_path / "typed.parquet", tmp_path / "junk.parquet"], reg)
    by = {(Path(i.file).name, i.code): i for i in acq.report.issues}
    assert by[("bools.parquet", "bad_value")].count == 4 and by[("bools.parquet", "bad_value")].rows == (1, 2, 3, 4)
    assert "cannot be read" in by[("junk.parquet", "unreadable")].message
    rows = {r["firm_id"]: r for r in acq.table.to_pylist()}
    # 2023-12-31T16:15Z and 16:30Z are 00:15 and 00:30 on 1 January in UTC+8: 4.0 kWh over 2 of 4 intervals
    assert rows["G"]["electricity_mwh"] == pytest.approx(0.004)
    assert rows["G"]["electricity_mwh_coverage"] == 0.5
    assert rows["F"]["electricity_mwh"] is None  # no usable reading


def test_a_large_file_with_one_bad_row(tmp_path: Path) -> None:
    # 300,000 readings (a unit test; benchmarks/bench_acquire.py runs the 10-million-row case)
    n = 300_000
    ts = np.datetime64("2024-01-01T00:15") + np.arange(n) * np.timedelta64(15, "m")
    vals = np.full(n, "1.25", dtype=object)
    vals[123_456] = "1.2.5"  # not a number
    vals[200_000] = "1,25"  # a decimal comma: one cell too many
    vals[250_000] = "x"  # after the skipped row: its row number must not shift
    lines = "meter,timestamp,value\n" + "\n".join(
        f"M1,{str(t).replace('T', ' ')},{v}" for t, v in zip(ts[:35136], vals[:35136], strict=True)
    )
    rest = "\n".join(
        f"M{1 + k // 35136},{str(t).replace('T', ' ')},{v}"
        for k, (t, v) in enumerate(zip(ts[35136:], vals[35136:], strict=True), start=35136)
    )
    (tmp_path / "big.csv").write_text(lines + "\n" + rest + "\n", encoding="utf-8")
    reg = tmp_path / "r.yaml"
    reg.write_text(
        "year: 2024\nmeters:\n"
        + "".join(f'  - {{id: "M{k}", firm_id: F, carrier: electricity, unit: kWh}}\n' for k in range(1, 10)),
        encoding="utf-8",
    )
    acq = acquire_meters([tmp_path / "big.csv"], reg)
    (bad,) = [i for i in acq.report.issues if i.code == "bad_value"]
    assert bad.rows == (123_457, 250_001) and bad.column == "value" and bad.severity == "error"
    (ragged,) = [i for i in acq.report.issues if i.code == "ragged_row"]
    assert ragged.rows == (200_001,) and ragged.message.startswith("4 cells where the header has 3")
    assert acq.table.column("electricity_mwh_readings").to_pylist()[0] < n  # the rest is read
    assert acq.report.totals["readings used"] == n - 3 - sum(
        i.count for i in acq.report.issues if i.code == "outside_year"
    )
