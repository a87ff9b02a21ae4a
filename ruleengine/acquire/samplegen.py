"""Seeded, realistic sample inputs for the acquisition stage, with the defects real exports have.

``generate_sample(dir, firms=20, year=2024, seed=0)`` writes:

* ``register.yaml`` and meter exports: 96-point wide CSV for electricity (one file per block of
  firms), long-form CSV of cumulative gas register readings (daily), long-form Parquet of steam
  intervals; a firm attribute table in the register so the output can be rated directly;
* invoices: 数电票 XML (two tag spellings), OFD containers with the XML embedded, a CSV ledger,
  and ``mapping.yaml``.

Defects (``defects=True``): communication gaps (short and one month-long), identical and
conflicting duplicates, a spike, a negative interval, a register rollover, a meter replaced
mid-year, readings outside the year, a unit mismatch; invoices sent as both XML and OFD or also in
the ledger, a red invoice, an empty electricity unit, a 万千瓦时 line, a wrong buyer, a bad VAT
rate. Everything follows from the seed: same seed, same bytes.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..io.identifiers import uscc_check_char
from .readers import days_from_civil

GRID_SELLER = "91330000MA2CXXXX0"  # completed with a check character below
GAS_SELLER = "91330500MA2GASCO0"
FUEL_SELLER = "91330500MA2FUEL00"
FREIGHT_SELLER = "91330500MA2LOGI00"
INDUSTRIES = ["3011", "3120", "2614", "1713", "3360", "2231", "3484", "1810"]


def credit_code(body17: str) -> str:
    """A GB 32100-2015 unified social credit code: 17 characters plus their check character."""
    return body17 + uscc_check_char(body17)


def _firm_code(i: int) -> str:
    return credit_code(f"913305{i:06d}MA2B0"[:17])


def _fix(code: str) -> str:
    return credit_code(
        code[:17].replace("X", "0").replace("I", "1").replace("O", "0").replace("S", "5").replace("V", "0")
    )


def write_xlsx(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """A minimal one-sheet .xlsx (inline strings and numbers), enough for ledger and meter exports."""

    def cell(ref: str, v: Any) -> str:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return f'<c r="{ref}"><v>{v}</v></c>'
        return f'<c r="{ref}" t="inlineStr"><is><t>{escape(str(v))}</t></is></c>'

    def col(j: int) -> str:
        s = ""
        j += 1
        while j:
            j, r = divmod(j - 1, 26)
            s = chr(65 + r) + s
        return s

    body = "".join(
        f'<row r="{i + 1}">' + "".join(cell(f"{col(j)}{i + 1}", v) for j, v in enumerate(r)) + "</row>"
        for i, r in enumerate([header, *rows])
    )
    files = {
        "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        "</Types>",
        "_rels/.rels": '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
        "</Relationships>",
        "xl/workbook.xml": '<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
        "</Relationships>",
        "xl/worksheets/sheet1.xml": '<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        f"<sheetData>{body}</sheetData></worksheet>",
    }
    _write_zip(path, files)


def _write_zip(path: Path, files: Mapping[str, str | bytes]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))  # fixed time: same bytes every run
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data.encode("utf-8") if isinstance(data, str) else data)
    path.write_bytes(buf.getvalue())


# ---------------------------------------------------------------------------------------------
# invoices


def invoice_xml(inv: dict[str, Any], style: str = "std") -> str:
    """A 数电票-like XML document (no namespace). ``style`` 'pinyin' uses the alternative tag spellings."""
    if style == "pinyin":
        items = "".join(
            f"<Mx><Xmmc>{escape(it['name'])}</Xmmc><Spbm>{it.get('code', '')}</Spbm><Dw>{escape(it.get('unit', ''))}</Dw>"
            f"<Xmsl>{it.get('qty', '')}</Xmsl><Dj>{it.get('price', '')}</Dj><Je>{it['amount']}</Je><Slv>{it['rate']}</Slv>"
            f"<Se>{it['tax']}</Se></Mx>"
            for it in inv["items"]
        )
        orig = f"<Yfphm>{inv['original']}</Yfphm>" if inv.get("original") else ""
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Fp><Fphm>{inv["no"]}</Fphm><Kprq>{inv["date"]}</Kprq>'
            f"<Xfsh>{inv['seller']}</Xfsh><Gfsh>{inv['buyer']}</Gfsh>{orig}<Mxxx>{items}</Mxxx></Fp>\n"
        )
    items = "".join(
        f"<IssuItemInformation><ItemName>{escape(it['name'])}</ItemName><SpecMod></SpecMod><MeUnit>{escape(it.get('unit', ''))}</MeUnit>"
        f"<Quantity>{it.get('qty', '')}</Quantity><UnPrice>{it.get('price', '')}</UnPrice><Amount>{it['amount']}</Amount>"
        f"<TaxRate>{it['rate']}</TaxRate><ComTaxAm>{it['tax']}</ComTaxAm>"
        f"<TaxClassificationCode>{it.get('code', '')}</TaxClassificationCode></IssuItemInformation>"
        for it in inv["items"]
    )
    red = (
        f"<RedInvoiceInformation><OriginalInvoiceNumber>{inv['original']}</OriginalInvoiceNumber></RedInvoiceInformation>"
        if inv.get("original")
        else ""
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<EInvoice><Header><EIid>'
        + inv["no"]
        + "</EIid></Header><EInvoiceData>"
        f"<SellerInformation><SellerIdNum>{inv['seller']}</SellerIdNum></SellerInformation>"
        f"<BuyerInformation><BuyerIdNum>{inv['buyer']}</BuyerIdNum></BuyerInformation>"
        f"<BasicInformation><RequestTime>{inv['date']}</RequestTime></BasicInformation>{red}{items}</EInvoiceData>"
        f"<TaxSupervisionInfo><InvoiceNumber>{inv['no']}</InvoiceNumber><IssueTime>{inv['date']} 10:00:00</IssueTime>"
        "</TaxSupervisionInfo></EInvoice>\n"
    )


def write_ofd(path: Path, inv: dict[str, Any], embed: bool = True) -> None:
    """An OFD container: OFD.xml with CustomData, a document, and the invoice XML as an attachment."""
    ofd = (
        '<?xml version="1.0" encoding="UTF-8"?><ofd:OFD xmlns:ofd="http://www.ofdspec.org/2016" Version="1.1" DocType="OFD">'
        "<ofd:DocBody><ofd:DocInfo><ofd:CustomDatas>"
        f'<ofd:CustomData Name="发票号码">{inv["no"]}</ofd:CustomData><ofd:CustomData Name="开票日期">{inv["date"]}</ofd:CustomData>'
        f'<ofd:CustomData Name="购买方纳税人识别号">{inv["buyer"]}</ofd:CustomData>'
        f'<ofd:CustomData Name="销售方纳税人识别号">{inv["seller"]}</ofd:CustomData>'
        "</ofd:CustomDatas></ofd:DocInfo><ofd:DocRoot>Doc_0/Document.xml</ofd:DocRoot></ofd:DocBody></ofd:OFD>"
    )
    files: dict[str, str | bytes] = {
        "OFD.xml": ofd,
        "Doc_0/Document.xml": '<?xml version="1.0" encoding="UTF-8"?><ofd:Document xmlns:ofd="http://www.ofdspec.org/2016"/>',
        "Doc_0/Pages/Page_0/Content.xml": '<?xml version="1.0" encoding="UTF-8"?><ofd:Page xmlns:ofd="http://www.ofdspec.org/2016"/>',
    }
    if embed:
        files["Doc_0/Attachs/original_invoice.xml"] = invoice_xml(inv)
    _write_zip(path, files)


LEDGER_HEADER = [
    "发票号码",
    "开票日期",
    "销方识别号",
    "购方识别号",
    "项目名称",
    "税收分类编码",
    "单位",
    "数量",
    "单价",
    "金额",
    "税率",
    "税额",
    "原发票号码",
]


def ledger_rows(inv: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            inv["no"],
            inv["date"],
            inv["seller"],
            inv["buyer"],
            it["name"],
            it.get("code", ""),
            it.get("unit", ""),
            it.get("qty", ""),
            it.get("price", ""),
            it["amount"],
            f"{round(it['rate'] * 100)}%",
            it["tax"],
            inv.get("original", ""),
        ]
        for it in inv["items"]
    ]


def _line(name: str, code: str, unit: str, qty: float, price: float, rate: float) -> dict[str, Any]:
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


def _csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    def q(v: Any) -> str:
        s = "" if v is None else str(v)
        return f'"{s}"' if ("," in s or '"' in s) else s

    path.write_text("\n".join(",".join(q(v) for v in r) for r in [header, *rows]) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------


def _profile(rng: np.random.Generator, days: int, base_kw: float) -> np.ndarray:
    """kWh per 15 minutes, days x 96: a working-hours shape, weekends lower, noise."""
    hour = (np.arange(96) * 15 + 15) / 60.0
    shape = 0.45 + 0.55 * ((hour > 8) & (hour <= 18)) + 0.1 * np.sin(hour / 24 * 2 * np.pi)
    week = np.where((np.arange(days) % 7) >= 5, 0.6, 1.0)
    noise = rng.normal(1.0, 0.05, size=(days, 96)).clip(0.7, 1.3)
    return np.round(base_kw * 0.25 * shape[None, :] * week[:, None] * noise, 3)


def generate_sample(
    directory: str | Path, firms: int = 20, year: int = 2024, seed: int = 0, defects: bool = True
) -> dict[str, list[Path]]:
    out = Path(directory)
    (out / "meters").mkdir(parents=True, exist_ok=True)
    (out / "invoices" / "xml").mkdir(parents=True, exist_ok=True)
    (out / "invoices" / "ofd").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    d0 = int(days_from_civil(np.array([year]), np.array([1]), np.array([1]))[0])
    days = int(days_from_civil(np.array([year + 1]), np.array([1]), np.array([1]))[0]) - d0
    dates = (np.datetime64("1970-01-01") + np.arange(d0, d0 + days)).astype(str)
    codes = [_firm_code(i + 1) for i in range(firms)]
    grid, gas, fuel = (_fix(GRID_SELLER), _fix(GAS_SELLER), _fix(FUEL_SELLER))
    reg_firms: list[str] = []
    reg_meters: list[str] = []
    wide_rows: list[list[Any]] = []
    gas_rows: list[list[Any]] = []
    monthly_kwh: dict[str, np.ndarray] = {}
    gas_month: dict[str, np.ndarray] = {}
    month_of_day = dates.astype("datetime64[M]").astype(np.int64) % 12
    hdr = ["表号", "日期", "倍率"] + [f"{m // 60:02d}:{m % 60:02d}" for m in range(15, 1441, 15)]
    for i, code in enumerate(codes):
        va = float(np.round(rng.lognormal(8.0, 0.8), 1))
        ind = INDUSTRIES[i % len(INDUSTRIES)]
        out_v = round(va * float(rng.uniform(3.0, 5.0)), 1)
        reg_firms.append(
            f'  "{code}": {{firm_name: Sample Works {i + 1}, city: huzhou, grid_region: east, '
            f'industry: "{ind}", size: medium, employees: {int(rng.integers(30, 800))}, '
            f"value_added_10k_cny: {va}, output_value_10k_cny: {out_v}, revenue_10k_cny: {round(out_v * 1.05, 1)}, "
            f"tax_10k_cny: {round(va * 0.12, 1)}}}"
        )
        base_kw = float(np.round(rng.lognormal(6.0, 0.7), 1))
        mult = int(rng.choice([1, 40, 80, 200]))
        meter = f"{330500000000 + i * 7:012d}"
        kwh = _profile(rng, days, base_kw)  # after multiplier
        raw = np.round(kwh / mult, 4)
        cap = round(base_kw * 2.5, 1)
        mask = np.ones_like(raw, dtype=bool)
        if defects:
            for _ in range(int(rng.integers(0, 4))):  # short communication gaps
                d, s = int(rng.integers(0, days)), int(rng.integers(0, 90))
                mask[d, s : s + int(rng.integers(1, 7))] = False
            if i == 1:  # a month-long outage
                mask[100:131] = False
            if i == 2:
                raw[50, 40] = raw[50, 40] * 50  # a spike
                raw[60, 10] = -raw[60, 10]  # a negative interval
        replaced = defects and i == 3
        cut = 182
        if replaced:
            reg_meters.append(
                f'  - {{id: "{meter}", firm_id: "{code}", carrier: electricity, unit: kWh, multiplier: {mult}, '
                f"capacity: {cap}, valid_to: {dates[cut]}}}"
            )
            new = f"{330500000000 + i * 7 + 1:012d}"
            reg_meters.append(
                f'  - {{id: "{new}", firm_id: "{code}", carrier: electricity, unit: kWh, multiplier: {mult}, '
                f"capacity: {cap}, valid_from: {dates[cut]}}}"
            )
        else:
            reg_meters.append(
                f'  - {{id: "{meter}", firm_id: "{code}", carrier: electricity, unit: kWh, multiplier: {mult}, '
                f"capacity: {cap}}}"
            )
        for d in range(days):
            mid = meter if not replaced or d < cut else f"{330500000000 + i * 7 + 1:012d}"
            cells = [f"{x:g}" if m else "" for x, m in zip(raw[d], mask[d], strict=True)]
            wide_rows.append([mid, dates[d], mult, *cells])
        if defects and i == 0:
            wide_rows.append(list(wide_rows[-5]))  # an identical duplicate day
            conflict = list(wide_rows[-20])
            conflict[3 + 30] = "9.999"  # a conflicting duplicate interval
            wide_rows.append(conflict)
        if defects and i == 4:
            wide_rows.append([meter, f"{year + 1}-01-01", mult, *["1"] * 96])  # outside the year
        # the grid company bills what the meter measured, communication gaps or not
        monthly_kwh[code] = np.bincount(month_of_day, weights=kwh.sum(axis=1), minlength=12)
        if i % 2 == 0:  # a gas register read daily at midnight, 5 digits
            gm = f"G{i:05d}"
            start = 99_000.0 if (defects and i == 0) else float(np.round(rng.uniform(0, 50_000), 1))
            daily = np.round(rng.uniform(50, 150, size=days) * (1 + i / 10), 1)
            readings = (start + np.r_[0.0, np.cumsum(daily)]) % 100_000
            reg_meters.append(
                f'  - {{id: "{gm}", firm_id: "{code}", carrier: natural_gas, kind: register, unit: m3, digits: 5, '
                f"capacity: {round(float(daily.max()) / 24 * 3, 1)}}}"
            )
            gas_month[code] = np.bincount(month_of_day, weights=daily, minlength=12)
            for d in range(days + 1):
                gas_rows.append([gm, f"{(np.datetime64(dates[0]) + d)!s} 00:00", f"{readings[d]:.1f}", "m3"])
            if defects and i == 2:
                gas_rows[-40][3] = "kg"  # a unit mismatch
    files: dict[str, list[Path]] = {
        "register": [out / "register.yaml"],
        "meters": [],
        "invoices": [],
        "mapping": [out / "mapping.yaml"],
    }
    (out / "register.yaml").write_text(
        f"# sample meter register (seed {seed})\nyear: {year}\ninterval_minutes: 15\nconvention: end\n"
        "gap_policy: {policy: scale, min_coverage: 0.8}\ngap_policy_by_carrier:\n  natural_gas: {policy: missing}\n"
        "firms:\n" + "\n".join(reg_firms) + "\nmeters:\n" + "\n".join(reg_meters) + "\n",
        encoding="utf-8",
    )
    block = max(1, (len(wide_rows) + 1) // 2)
    for k in range(0, len(wide_rows), block):
        p = out / "meters" / f"electricity_96_{k // block + 1}.csv"
        _csv(p, hdr, wide_rows[k : k + block])
        files["meters"].append(p)
    if gas_rows:
        p = out / "meters" / "gas_register.csv"
        _csv(p, ["meter", "timestamp", "value", "unit"], gas_rows)
        files["meters"].append(p)
    # invoices: monthly electricity from the grid company, gas, vehicle fuel, freight
    invs: list[tuple[dict[str, Any], str]] = []
    n = 0
    for i, code in enumerate(codes):
        for m in range(12):
            n += 1
            mkwh = float(np.round(monthly_kwh[code][m] * rng.normal(1.0, 0.005), 0))
            unit, qty, price = "千瓦时", float(mkwh), 0.68
            if defects and i == 0 and m == 2:
                unit, qty, price = "万千瓦时", round(mkwh / 10_000, 4), 6800.0
            line = _line("*供电*电费", "1100101000000000000", unit, qty, price, 0.13)
            if defects and i == 1 and m == 3:
                line["unit"] = ""  # empty unit: inferred by the declared price-band rule
            if defects and i == 2 and m == 4:
                line["rate"] = 0.09  # implausible VAT rate for electricity
                line["tax"] = round(line["amount"] * 0.09, 2)
            inv = {
                "no": f"{year % 100:02d}33{n:016d}",
                "date": f"{year}-{m + 1:02d}-05",
                "seller": grid,
                "buyer": code,
                "items": [line],
            }
            where = ("xml", "ofd", "ledger")[(i + m) % 3]
            invs.append((inv, where))
            if defects and i == 0 and m == 5:
                invs.append((inv, "ofd"))  # the same invoice as XML and OFD
            if defects and i == 1 and m == 6:
                invs.append((inv, "ledger"))  # and again in the ledger
            if defects and i == 2 and m == 7:  # a red invoice reversing 20% of the month
                n += 1
                red_line = _line("*供电*电费", "1100101000000000000", "千瓦时", -round(mkwh * 0.2, 0), 0.68, 0.13)
                invs.append(
                    (
                        {
                            "no": f"{year % 100:02d}33{n:016d}",
                            "date": f"{year}-{m + 1:02d}-20",
                            "seller": grid,
                            "buyer": code,
                            "items": [red_line],
                            "original": inv["no"],
                        },
                        "xml",
                    )
                )
        if i % 2 == 0:
            for m in range(0, 12, 2):
                n += 1
                qty = float(np.round((gas_month[code][m] + gas_month[code][m + 1]) * rng.normal(1.0, 0.005), 0))
                invs.append(
                    (
                        {
                            "no": f"{year % 100:02d}33{n:016d}",
                            "date": f"{year}-{m + 1:02d}-10",
                            "seller": gas,
                            "buyer": code,
                            "items": [_line("*天然气*管道天然气", "1100301000000000000", "立方米", qty, 3.2, 0.09)],
                        },
                        "xml",
                    )
                )
        if i % 3 == 0:
            n += 1
            invs.append(
                (
                    {
                        "no": f"{year % 100:02d}33{n:016d}",
                        "date": f"{year}-06-18",
                        "seller": fuel,
                        "buyer": code,
                        "items": [
                            _line("*汽油*92号车用汽油(VIB)", "1070101010100000000", "升", 800.0, 7.9, 0.13),
                            _line("*柴油*0号车用柴油(VIB)", "1070101030100000000", "升", 1200.0, 7.4, 0.13),
                        ],
                    },
                    "ledger",
                )
            )
            n += 1
            invs.append(
                (
                    {
                        "no": f"{year % 100:02d}33{n:016d}",
                        "date": f"{year}-09-02",
                        "seller": _fix(FREIGHT_SELLER),
                        "buyer": code,
                        "items": [_line("*运输服务*国内道路货物运输服务", "3010102020000000000", "", 1, 12000.0, 0.09)],
                    },
                    "xml",
                )
            )
    if defects:
        n += 1
        invs.append(
            (
                {
                    "no": f"{year % 100:02d}33{n:016d}",
                    "date": f"{year}-03-03",
                    "seller": grid,
                    "buyer": _firm_code(99_999),
                    "items": [_line("*供电*电费", "1100101000000000000", "千瓦时", 1000.0, 0.7, 0.13)],
                },
                "xml",
            )
        )
    ledger: list[list[Any]] = []
    for k, (inv, where) in enumerate(invs):
        if where == "xml":
            p = out / "invoices" / "xml" / f"{inv['no']}.xml"
            p.write_text(invoice_xml(inv, "pinyin" if k % 5 == 0 else "std"), encoding="utf-8")
            files["invoices"].append(p)
        elif where == "ofd":
            p = out / "invoices" / "ofd" / f"{inv['no']}.ofd"
            write_ofd(p, inv)
            files["invoices"].append(p)
        else:
            ledger.extend(ledger_rows(inv))
    p = out / "invoices" / "ledger.csv"
    _csv(p, LEDGER_HEADER, ledger)
    files["invoices"].append(p)
    mapping = [f"# sample invoice mapping (seed {seed})", f"year: {year}", "infer_empty_unit: [electricity]", "firms:"]
    for code in codes:
        mapping.append(f'  "{code}": {{firm_id: "{code}"}}')
    (out / "mapping.yaml").write_text("\n".join(mapping) + "\n", encoding="utf-8")
    return files


def write_long_parquet(path: Path, meter: list[str], ts: np.ndarray, value: np.ndarray) -> None:
    """Long-form readings (meter, timestamp as text, value) in Parquet."""
    pq.write_table(pa.table({"meter": pa.array(meter), "timestamp": pa.array(ts), "value": pa.array(value)}), path)
