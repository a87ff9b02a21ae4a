"""Tax e-invoices -> firm-year fuels and purchased energy (issue #14).

Sources: 数电票 XML (no namespace; tag spellings vary, matched through the alias lists below),
OFD files (a zip; the embedded invoice XML, else the OFD custom data as a header-only fallback)
and CSV/xlsx ledgers exported by accounting software. XML and OFD files are parsed one by one
(bounded, entity-free); everything after parsing is vectorised over invoice lines:

1. deduplicate by invoice number across sources (XML > OFD > ledger), flag differing copies;
2. keep the year's invoices whose buyer (or, for declared resale, seller) is a firm of the mapping;
3. map each line to a carrier by tax classification code prefix and *简称* (cited table);
4. convert units through the cited alias table (no implicit conversion; empty units only by a
   declared rule, flagged); VAT rate and tax amount as a plausibility check;
5. net red invoices against their originals; sum per firm and data-contract column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from ..errors import did_you_mean
from .meters import Acquisition
from .quality import AcquireError, Issue, Report, row_list
from .readers import find_column, read_table_rows, to_float, to_text
from .safeio import SourceError, parse_xml, read_zip_members
from .tables import carrier_column, load_table, unit_alias

SOURCE_RANK = {"xml": 0, "ofd": 1, "ledger": 2}

# tag / column aliases, compared lower-case without namespace
HEADER_TAGS: dict[str, tuple[str, ...]] = {
    "invoice_no": ("invoicenumber", "invoiceno", "fphm", "发票号码", "数电票号码", "eiid"),
    "issue_date": ("issuetime", "issutime", "issuedate", "invoicedate", "kprq", "开票日期", "requesttime"),
    "seller_id": (
        "selleridnum",
        "sellertaxid",
        "sellertaxno",
        "xfsh",
        "xsfnsrsbh",
        "销售方纳税人识别号",
        "销方识别号",
        "销售方统一社会信用代码/纳税人识别号",
    ),
    "buyer_id": (
        "buyeridnum",
        "buyertaxid",
        "buyertaxno",
        "gfsh",
        "gmfnsrsbh",
        "购买方纳税人识别号",
        "购方识别号",
        "购买方统一社会信用代码/纳税人识别号",
    ),
    "original_no": (
        "originalinvoicenumber",
        "originalinvoiceno",
        "blueinvoicenumber",
        "yfphm",
        "原发票号码",
        "蓝字发票号码",
        "对应蓝字发票号码",
    ),
}
ITEM_TAGS = ("issuiteminformation", "invoiceitem", "item", "lineitem", "mx", "明细", "invoiceline")
ITEM_FIELDS: dict[str, tuple[str, ...]] = {
    "item_name": (
        "itemname",
        "xmmc",
        "spmc",
        "goodsname",
        "项目名称",
        "货物或应税劳务名称",
        "货物或应税劳务、服务名称",
    ),
    "tax_code": ("taxclassificationcode", "spbm", "goodscode", "ssflbm", "税收分类编码", "商品和服务税收分类编码"),
    "unit": ("meunit", "unit", "dw", "单位"),
    "quantity": ("quantity", "num", "xmsl", "数量"),
    "price": ("unprice", "unitprice", "dj", "xmdj", "单价"),
    "amount": ("amount", "je", "xmje", "金额"),
    "tax_rate": ("taxrate", "slv", "税率", "征收率", "税率/征收率"),
    "tax": ("comtaxam", "taxamount", "se", "税额"),
}
LEDGER_ONLY = {"line": ("line", "行号", "序号")}
TEXT_FIELDS = ("invoice_no", "issue_date", "seller_id", "buyer_id", "original_no", "item_name", "tax_code", "unit")
NUM_FIELDS = ("quantity", "price", "amount", "tax_rate", "tax")
CREDIT_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def credit_code_ok(code: str) -> bool:
    """GB 32100-2015 unified social credit code: 18 characters and a valid check character."""
    if len(code) != 18 or any(c not in CREDIT_CHARS for c in code):
        return False
    total = sum(CREDIT_CHARS.index(c) * w for c, w in zip(code[:17], CREDIT_WEIGHTS, strict=True))
    return CREDIT_CHARS[(31 - total % 31) % 31] == code[17]


@dataclass
class FirmDecl:
    firm_id: str
    resale: tuple[str, ...] = ()
    vehicle_fuel: str = "by_name"  # by_name | all | none
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Mapping:
    path: str
    year: int | None
    firms: dict[str, FirmDecl]  # by credit code
    infer_empty_unit: tuple[str, ...]
    steam_gj_per_t: float | None


def load_mapping(path: str | Path) -> Mapping:
    name = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AcquireError(f"{name}: mapping file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AcquireError(f"{name}: not a readable YAML file: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict) or not isinstance(data.get("firms"), dict):
        raise AcquireError(f"{name}: a mapping is a YAML mapping with 'firms' (credit code -> declarations)")
    carriers = [c for c in load_table("units")["columns"]] + ["freight"]
    firms: dict[str, FirmDecl] = {}
    for code, decl in data["firms"].items():
        where = f"{name}: firms.{code}"
        decl = decl or {}
        if not isinstance(decl, dict):
            raise AcquireError(f"{where}: expected a mapping")
        unknown = set(decl) - {"firm_id", "resale", "vehicle_fuel", "attributes"}
        if unknown:
            k = sorted(unknown)[0]
            raise AcquireError(
                f"{where}: unknown key '{k}'{did_you_mean(k, ['firm_id', 'resale', 'vehicle_fuel', 'attributes'])}"
            )
        resale = tuple(decl.get("resale") or ())
        for c in resale:
            if c not in carriers:
                raise AcquireError(f"{where}.resale: unknown carrier '{c}'{did_you_mean(str(c), carriers)}")
        vf = decl.get("vehicle_fuel", "by_name")
        if vf not in ("by_name", "all", "none"):
            raise AcquireError(f"{where}.vehicle_fuel: '{vf}' is not by_name, all or none")
        firms[str(code)] = FirmDecl(str(decl.get("firm_id", code)), resale, vf, dict(decl.get("attributes") or {}))
    infer = tuple(data.get("infer_empty_unit") or ())
    rules = load_table("carriers")["empty_unit_rules"]
    for c in infer:
        if c not in rules:
            raise AcquireError(
                f"{name}: infer_empty_unit: no declared rule for '{c}' (rules exist for {', '.join(rules)})"
            )
    year = data.get("year")
    if year is not None and not isinstance(year, int):
        raise AcquireError(f"{name}: year: expected a year such as 2024")
    steam = data.get("steam_gj_per_t")
    return Mapping(name, year, firms, infer, None if steam is None else float(steam))


# ---------------------------------------------------------------------------------------------
# reading


def _local(tag: Any) -> str:
    t = tag if isinstance(tag, str) else ""
    return t.rsplit("}", 1)[-1].split(":")[-1].strip().lower()


def _first_text(root: Any, aliases: tuple[str, ...]) -> str:
    for a in aliases:  # alias order is preference order
        for el in root.iter():
            if _local(el.tag) == a and el.text and el.text.strip():
                return str(el.text.strip())
    return ""


def _invoice_from_xml(root: Any, kind: str, file: str, rows: dict[str, list[Any]]) -> int:
    """Append the lines of one invoice tree to ``rows``; returns how many."""
    head = {k: _first_text(root, v) for k, v in HEADER_TAGS.items()}
    if not head["invoice_no"]:
        raise SourceError(f"{file}: no invoice number (one of the tags {', '.join(HEADER_TAGS['invoice_no'])})")
    items = [el for el in root.iter() if _local(el.tag) in ITEM_TAGS and len(el)]
    n = 0
    for i, item in enumerate(items, start=1):
        vals: dict[str, str] = {}
        for k, aliases in ITEM_FIELDS.items():
            found = ""
            for child in item:
                if _local(child.tag) in aliases and child.text:
                    found = child.text.strip()
                    break
            vals[k] = found
        for k in TEXT_FIELDS:
            rows[k].append(head[k] if k in head else vals.get(k, ""))
        for k in NUM_FIELDS:
            rows[k].append(vals[k])
        rows["line"].append(i)
        rows["kind"].append(kind)
        rows["file"].append(file)
        rows["row"].append(i)
        n += 1
    if n == 0:  # header only: still counts for deduplication and is reported
        for k in TEXT_FIELDS:
            rows[k].append(head.get(k, ""))
        for k in NUM_FIELDS:
            rows[k].append("")
        rows["line"].append(0)
        rows["kind"].append(kind)
        rows["file"].append(file)
        rows["row"].append(0)
    return n


def _ofd_custom(root: Any) -> Any:
    """An element tree built from OFD CustomData (Name -> value), for the header-only fallback."""
    import xml.etree.ElementTree as ET

    out = ET.Element("Invoice")
    for el in root.iter():
        if _local(el.tag) == "customdata":
            key = (el.get("Name") or el.get("name") or "").strip()
            if key and el.text:
                ET.SubElement(out, key).text = el.text
    return out


def _read_ofd(path: Path, rows: dict[str, list[Any]], issues: list[Issue]) -> None:
    name = str(path)
    members = read_zip_members(path, lambda m: m.lower().endswith(".xml"))
    structural = re.compile(
        r"(^|/)(ofd|document|document_\d+|publicres|documentres|content|annotations?|signatures?)\.xml$", re.I
    )
    embedded = sorted(
        m for m in members if not structural.search(m) and "/pages/" not in m.lower() and "/tpls/" not in m.lower()
    )
    for m in embedded:
        root = parse_xml(members[m], f"{name}!{m}")
        if _first_text(root, HEADER_TAGS["invoice_no"]):
            _invoice_from_xml(root, "ofd", name, rows)
            return
    ofd_xml = next((m for m in members if m.lower().endswith("ofd.xml")), None)
    if ofd_xml is not None:
        custom = _ofd_custom(parse_xml(members[ofd_xml], f"{name}!{ofd_xml}"))
        if _first_text(custom, HEADER_TAGS["invoice_no"]):
            n = _invoice_from_xml(custom, "ofd", name, rows)
            if n == 0:
                issues.append(
                    Issue(
                        "warning",
                        "ofd_header_only",
                        "no embedded invoice XML: header read from the OFD custom data, no line items",
                        "used for deduplication only",
                        name,
                    )
                )
            return
    raise SourceError(f"{name}: no invoice XML and no invoice number in the OFD custom data")


def _read_ledger(path: Path, issues: list[Issue]) -> pa.Table:
    table, rows, ragged = read_table_rows(path)
    name = str(path)
    for r, text, exp, act in ragged:
        issues.append(
            Issue(
                "error",
                "ragged_row",
                f"{act} cells where the header has {exp}: {text[:60]!r}",
                "row ignored",
                name,
                (r,) if r > 0 else (),
            )
        )
    cols: dict[str, pa.Array] = {}
    n = table.num_rows
    for k, aliases in {**HEADER_TAGS, **ITEM_FIELDS, **LEDGER_ONLY}.items():
        c = find_column(table, aliases)
        if c is None:
            if k in ("invoice_no", "item_name", "quantity", "amount", "buyer_id"):
                raise SourceError(
                    f"{name}: no {k} column (one of {', '.join(aliases)}); columns are {', '.join(table.column_names)}"
                )
            cols[k] = pa.array([""] * n, type=pa.string())
        else:
            cols[k] = to_text(table.column(c))
    codes = pc.dictionary_encode(cols["invoice_no"]).indices.to_numpy(zero_copy_only=False)
    # line number inside the invoice: order of appearance
    order = np.argsort(codes, kind="stable")
    sc = codes[order]
    start = np.r_[True, sc[1:] != sc[:-1]]
    pos = np.arange(n) - np.maximum.accumulate(np.where(start, np.arange(n), 0))
    line = np.empty(n, dtype=np.int64)
    line[order] = pos + 1
    out = {k: cols[k] for k in TEXT_FIELDS + NUM_FIELDS}
    out["line"] = pa.array(line)
    out["kind"] = pa.array(["ledger"] * n)
    out["file"] = pa.array([name] * n)
    out["row"] = pa.array(rows)
    return pa.table(out)


def _expand(sources: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            out.extend(
                sorted(
                    q
                    for q in p.rglob("*")
                    if q.is_file() and q.suffix.lower() in (".xml", ".ofd", ".csv", ".xlsx", ".parquet")
                )
            )
        else:
            out.append(p)
    return out


def read_invoices(paths: list[Path], issues: list[Issue]) -> pa.Table:
    """All sources as one line table (text cells; numbers converted later, vectorised)."""
    rows: dict[str, list[Any]] = {k: [] for k in (*TEXT_FIELDS, *NUM_FIELDS, "line", "kind", "file", "row")}
    tables: list[pa.Table] = []
    for p in paths:
        suffix = p.suffix.lower()
        try:
            if not p.is_file():
                raise SourceError(f"{p}: file not found")
            if suffix == ".xml":
                data = p.read_bytes()
                _invoice_from_xml(parse_xml(data, str(p)), "xml", str(p), rows)
            elif suffix == ".ofd":
                _read_ofd(p, rows, issues)
            elif suffix in (".csv", ".xlsx", ".xlsm", ".parquet"):
                tables.append(_read_ledger(p, issues))
            else:
                raise SourceError(f"{p}: unknown invoice file type '{suffix}' (.xml, .ofd, .csv, .xlsx, .parquet)")
        except SourceError as exc:
            issues.append(Issue("error", "unreadable", str(exc), "file skipped", str(p)))
    xml_table = pa.table({
        **{k: pa.array(rows[k], type=pa.string()) for k in (*TEXT_FIELDS, *NUM_FIELDS)},
        "line": pa.array(rows["line"], type=pa.int64()), "kind": pa.array(rows["kind"], type=pa.string()),
        "file": pa.array(rows["file"], type=pa.string()), "row": pa.array(rows["row"], type=pa.int64()),
    })  # fmt: skip
    tables = [xml_table, *tables]
    return pa.concat_tables([t.cast(xml_table.schema) for t in tables])


# ---------------------------------------------------------------------------------------------
# processing


def _rate(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """VAT rate cells: 13%, 0.13, 13, 免税 / 不征税 (0); returns (rate, bad mask)."""
    s = pc.utf8_trim_whitespace(text)
    exempt = np.asarray(pc.match_substring_regex(s, "^(免税|不征税|\\*+)$").to_numpy(zero_copy_only=False), dtype=bool)
    pct = np.asarray(pc.ends_with(s, "%").to_numpy(zero_copy_only=False), dtype=bool)
    v, bad = to_float(pc.replace_substring(s, "%", ""))
    v = np.where(pct | (v > 1), v / 100.0, v)
    v = np.where(exempt, 0.0, v)
    return v, bad & ~exempt


class _Lines:
    """Column arrays of the invoice line table plus a mask of lines still in use."""

    def __init__(self, t: pa.Table):
        self.n = t.num_rows
        self.text = {k: t.column(k).combine_chunks() for k in TEXT_FIELDS}
        kinds = pa.array(list(SOURCE_RANK), type=pa.string())
        self.kind = np.asarray(
            pc.index_in(t.column("kind"), value_set=kinds).to_numpy(zero_copy_only=False), dtype=np.int64
        )
        fenc = pc.dictionary_encode(t.column("file").combine_chunks())
        self.file_code = np.asarray(fenc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        self.files = [str(x) for x in fenc.dictionary.to_pylist()]
        self.row = np.asarray(t.column("row").to_numpy(), dtype=np.int64)
        self.line = np.asarray(t.column("line").to_numpy(), dtype=np.int64)
        self.num: dict[str, np.ndarray] = {}
        self.bad: dict[str, np.ndarray] = {}
        for k in ("quantity", "price", "amount", "tax"):
            self.num[k], self.bad[k] = to_float(t.column(k))
        self.num["tax_rate"], self.bad["tax_rate"] = _rate(t.column("tax_rate").combine_chunks())
        self.use = self.line > 0  # header-only invoices hold no line

    def strings(self, k: str) -> np.ndarray:
        return np.asarray(self.text[k].to_numpy(zero_copy_only=False), dtype=object)


def _encode(arr: pa.Array) -> tuple[np.ndarray, list[str]]:
    enc = pc.dictionary_encode(arr)
    return np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64), [
        str(x) for x in enc.dictionary.to_pylist()
    ]


def acquire_invoices(
    sources: Iterable[str | Path], mapping: str | Path | Mapping, year: int | None = None
) -> Acquisition:
    """Invoice files + mapping -> firm-year table with per-column provenance."""
    mp = mapping if isinstance(mapping, Mapping) else load_mapping(mapping)
    paths = _expand(sources)
    if not paths:
        raise AcquireError("no invoice files given")
    issues: list[Issue] = []
    table = read_invoices(paths, issues)
    year = year or mp.year
    L = _Lines(table)
    files = L.files

    def emit(mask: np.ndarray, severity: str, code: str, msg: str, action: str, per_invoice: bool = False) -> None:
        """Issues for the lines in ``mask``: one per file (or per invoice), rows located."""
        idx = np.flatnonzero(mask)
        if not len(idx):
            return
        key = L.file_code[idx] if not per_invoice else inv_code[idx]
        order = np.argsort(key, kind="stable")
        idx, key = idx[order], key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        for a, b in zip(starts.tolist(), np.r_[starts[1:], len(idx)].tolist(), strict=True):
            pos = idx[a:b]
            subj = f"invoice {inv_names[inv_code[pos[0]]]}" if per_invoice else ""
            issues.append(
                Issue(
                    severity,
                    code,
                    msg.format(n=b - a, first=inv_names[inv_code[pos[0]]]),
                    action,
                    files[int(L.file_code[pos[0]])],
                    row_list(L.row[pos]),
                    b - a,
                    subject=subj,
                    firm_id=str(firm_of[pos[0]]) if firm_of is not None else "",
                )
            )

    firm_of: np.ndarray | None = None
    inv_code, inv_names = _encode(L.text["invoice_no"])
    # 1. deduplicate by invoice number: the best-ranked source, then the first file
    rank = L.kind * (len(files) + 1) + L.file_code
    best = np.full(len(inv_names), np.iinfo(np.int64).max)
    np.minimum.at(best, inv_code, rank)
    dup = rank != best[inv_code]
    if dup.any():
        # do the copies agree? compare line-amount totals per (invoice, copy)
        amount = np.nan_to_num(L.num["amount"])
        copy_key = inv_code * (3 * (len(files) + 1)) + rank
        ck, cinv = np.unique(copy_key, return_inverse=True)
        tot = np.bincount(cinv, weights=amount)
        kept_tot = np.full(len(inv_names), np.nan)
        kept_mask = ~dup
        kept_tot[inv_code[kept_mask]] = tot[cinv[kept_mask]]
        differs = dup & ~np.isclose(tot[cinv], kept_tot[inv_code], atol=0.01)
        has_lines_kept = np.zeros(len(inv_names), dtype=bool)
        has_lines_kept[inv_code[~dup & (L.line > 0)]] = True
        emit(
            dup & ~differs & (L.line > 0) | dup & (L.line == 0),
            "info",
            "duplicate_invoice",
            "also arrives from another source ({n} line(s) here)",
            "this copy dropped",
            per_invoice=True,
        )
        emit(
            dup & differs & (L.line > 0),
            "warning",
            "conflicting_invoice",
            "copies differ in their amounts",
            "the XML/OFD copy is used",
            per_invoice=True,
        )
        # a header-only OFD kept while a ledger has the lines: use the ledger's lines
        promote = dup & (L.line > 0) & ~has_lines_kept[inv_code]
        L.use &= ~dup | promote
    # 2. year and firm
    date = L.text["issue_date"]
    years, ybad = to_float(pc.utf8_slice_codeunits(date, 0, 4))
    months, _ = to_float(pc.utf8_slice_codeunits(pc.replace_substring_regex(date, "^\\d{4}[-/年.]?", ""), 0, 2))
    if year is None:
        ys = years[L.use & ~np.isnan(years)]
        if not len(ys):
            raise AcquireError("no year given (--year, or 'year:' in the mapping) and none found in the invoices")
        year = int(np.bincount(ys.astype(np.int64) - int(ys.min())).argmax() + ys.min())
        issues.append(Issue("info", "year", f"no year given: {year} inferred from the issue dates"))
    emit(L.use & np.isnan(years), "error", "bad_date", "{n} line(s) without a readable issue date", "ignored")
    out_year = L.use & ~np.isnan(years) & (years != year)
    emit(out_year, "info", "outside_year", f"{{n}} line(s) issued outside {year}", "ignored")
    L.use &= ~np.isnan(years) & (years == year)
    buyer_c, buyer_n = _encode(L.text["buyer_id"])
    seller_c, seller_n = _encode(L.text["seller_id"])
    known = mp.firms
    b_firm = np.array([c in known for c in buyer_n], dtype=bool)[buyer_c]
    s_firm = np.array([c in known for c in seller_n], dtype=bool)[seller_c]
    bad_code = np.array([not credit_code_ok(c) for c in buyer_n], dtype=bool)[buyer_c]
    emit(
        L.use & b_firm & bad_code,
        "warning",
        "credit_code",
        "buyer credit code of {n} line(s) fails the GB 32100 check character",
        "kept (it is listed in the mapping)",
    )
    sale = L.use & ~b_firm & s_firm
    emit(
        L.use & ~b_firm & ~s_firm,
        "error",
        "buyer_not_firm",
        "{n} line(s) whose buyer credit code is not a firm of the mapping",
        "ignored",
    )
    L.use &= b_firm | s_firm
    firm_keys = np.where(b_firm, np.array(buyer_n, dtype=object)[buyer_c], np.array(seller_n, dtype=object)[seller_c])
    firm_of = _map_codes(firm_keys, {k: v.firm_id for k, v in known.items()})
    # 3. carrier: tax code prefix, else *简称*
    ctab = load_table("carriers")
    carriers = sorted(
        {v["carrier"] for v in ctab["code_prefixes"].values()} | {v["carrier"] for v in ctab["short_names"].values()}
    )
    cidx = {c: i for i, c in enumerate(carriers)}
    by_code = np.full(L.n, -1, dtype=np.int64)
    code_text = L.text["tax_code"]
    for prefix in sorted(ctab["code_prefixes"], key=len, reverse=True):
        hit = np.asarray(pc.starts_with(code_text, prefix).to_numpy(zero_copy_only=False), dtype=bool) & (by_code < 0)
        by_code[hit] = cidx[ctab["code_prefixes"][prefix]["carrier"]]
    short = pc.fill_null(pc.struct_field(pc.extract_regex(L.text["item_name"], r"^\s*\*(?P<s>[^*]+)\*"), "s"), "")
    sc, sn = _encode(short)
    s_map = np.array(
        [cidx.get(ctab["short_names"].get(x, {}).get("carrier", ""), -1) for x in sn] + [-1], dtype=np.int64
    )
    by_short = s_map[sc]
    disagree = L.use & (by_code >= 0) & (by_short >= 0) & (by_code != by_short)
    emit(
        disagree,
        "warning",
        "code_name_mismatch",
        "{n} line(s) whose tax code and *简称* name different carriers",
        "the tax code is followed",
    )
    carrier = np.where(by_code >= 0, by_code, by_short)
    unmapped = L.use & (carrier < 0)
    if unmapped.any():
        issues.append(
            Issue(
                "info",
                "not_energy",
                f"{int(unmapped.sum())} line(s) map to no energy carrier or freight",
                "not used",
                count=int(unmapped.sum()),
            )
        )
    L.use &= carrier >= 0
    names_arr = L.text["item_name"]
    # vehicle fuel: gasoline / diesel with a vehicle word in the name, unless the firm says otherwise
    vword = np.zeros(L.n, dtype=bool)
    for w in ctab["vehicle_words"]:
        vword |= np.asarray(pc.match_substring(names_arr, w).to_numpy(zero_copy_only=False), dtype=bool)
    vmode = _map_codes(firm_keys, {k: v.vehicle_fuel for k, v in known.items()})
    vehicle = np.where(vmode == "all", True, np.where(vmode == "none", False, vword))
    # 4. units
    uc, un = _encode(L.text["unit"])
    alias = [unit_alias(u) if u else None for u in un]
    canon = np.array([a[0] if a else "" for a in alias] + [""], dtype=object)[uc]
    ufac = np.array([a[1] if a else np.nan for a in alias] + [np.nan], dtype=np.float64)[uc]
    empty_unit = np.array([u == "" for u in un], dtype=bool)[uc]
    unknown_unit = L.use & ~empty_unit & (canon == "")
    for u in sorted({un[int(c)] for c in uc[unknown_unit]}):
        emit(
            unknown_unit & (np.array(un, dtype=object)[uc] == u),
            "error",
            "unknown_unit",
            f"{{n}} line(s) in unit '{u}', which is not in the unit table",
            "ignored",
        )
    L.use &= ~unknown_unit
    q, price, amount = L.num["quantity"], L.num["price"], L.num["amount"]
    unit_price = np.where(np.isnan(price), np.abs(amount) / np.abs(q), price)
    rules = ctab["empty_unit_rules"]
    inferred = np.zeros(L.n, dtype=bool)
    for c in mp.infer_empty_unit:
        rule = rules[c]
        lo, hi = rule["unit_price_cny"]
        hit = L.use & empty_unit & (carrier == cidx.get(c, -2)) & (unit_price >= lo) & (unit_price <= hi)
        canon = np.where(hit, rule["unit"], canon)
        ufac = np.where(hit, 1.0, ufac)
        inferred |= hit
    emit(
        inferred,
        "warning",
        "unit_inferred",
        "{n} line(s) without a unit read as kWh by the declared price-band rule "
        f"({rules.get('electricity', {}).get('unit_price_cny')} CNY per unit)",
        "flagged",
    )
    no_unit = L.use & empty_unit & ~inferred & (carrier != cidx.get("freight", -2))
    emit(no_unit, "error", "empty_unit", "{n} line(s) without a unit and no declared rule applies", "ignored")
    L.use &= ~no_unit
    for k in ("quantity", "amount"):
        emit(L.use & L.bad[k], "error", f"bad_{k}", f"{{n}} line(s) whose {k} is not a number", "ignored")
        L.use &= ~L.bad[k]
    missing_q = L.use & np.isnan(q) & (carrier != cidx.get("freight", -2))
    emit(missing_q, "error", "no_quantity", "{n} energy line(s) without a quantity", "ignored")
    L.use &= ~missing_q
    # 5. VAT plausibility: rate in the carrier's list and tax = amount x rate
    rate = L.num["tax_rate"]
    allowed = np.zeros(L.n, dtype=bool)
    for c, rates in ctab["vat_rates"].items():
        if c == "source":
            continue
        m = carrier == cidx.get(c, -2)
        allowed[m] = np.isin(np.round(rate[m], 4), np.round(np.array(rates, dtype=np.float64), 4))
    emit(
        L.use & ~np.isnan(rate) & ~allowed,
        "warning",
        "vat_rate",
        "{n} line(s) with a VAT rate not plausible for the carrier",
        "kept; check the mapping",
    )
    tax = L.num["tax"]
    off = (
        L.use
        & ~np.isnan(tax)
        & ~np.isnan(rate)
        & ~np.isnan(amount)
        & (np.abs(tax - amount * rate) > float(ctab["vat_tolerance_cny"]))
    )
    emit(off, "warning", "vat_amount", "{n} line(s) whose tax amount is not amount x rate", "kept")
    # 6. red invoices: negative lines; the sign follows the amount; originals looked up
    red = L.use & ((amount < 0) | (q < 0))
    sign_fix = red & (np.sign(q) != np.sign(amount)) & ~np.isnan(q) & (amount != 0)
    emit(sign_fix, "warning", "red_sign", "{n} red-invoice line(s) with a positive quantity", "quantity made negative")
    q = np.where(sign_fix, -np.abs(q), q)
    orig = L.text["original_no"]
    orig_known = np.asarray(
        pc.is_in(orig, value_set=pa.array(inv_names, type=pa.string())).to_numpy(zero_copy_only=False), dtype=bool
    )
    orig_empty = np.asarray(pc.equal(orig, "").to_numpy(zero_copy_only=False), dtype=bool)
    emit(red & orig_empty, "warning", "red_no_original", "red invoice names no original invoice", "netted anyway", True)
    emit(
        red & ~orig_empty & ~orig_known,
        "warning",
        "red_original_missing",
        "red invoice: its original is not among the inputs",
        "netted anyway",
        True,
    )
    emit(red & ~orig_empty & orig_known, "info", "red_netted", "red invoice nets its original", "netted", True)
    # 7. quantities in the data-contract columns
    car_name = np.array(carriers + [""], dtype=object)[carrier]
    out_carrier = np.where(
        vehicle & (car_name == "gasoline"),
        "vehicle_gasoline",
        np.where(vehicle & (car_name == "diesel"), "vehicle_diesel", car_name),
    )
    col_of, fac_of = {}, {}
    for c in sorted(set(out_carrier[L.use].tolist()) - {"freight"}):
        col, froms = carrier_column(str(c))
        if c == "heat":
            froms = {"GJ": 1.0, "t": mp.steam_gj_per_t or carrier_column("steam")[1]["t"]}
        col_of[c], fac_of[c] = col, froms
    col_factor = np.full(L.n, np.nan)
    column = np.full(L.n, "", dtype=object)
    for c, froms in fac_of.items():
        m = L.use & (out_carrier == c)
        for cu, f in froms.items():
            mm = m & (canon == cu)
            col_factor[mm] = f
            column[mm] = col_of[c]
        wrong = m & ~np.isin(canon, list(froms))
        for u in sorted(set(canon[wrong].tolist())):
            emit(
                wrong & (canon == u),
                "error",
                "unit_carrier",
                f"{{n}} {c} line(s) in {u}, which cannot measure {c}",
                "ignored",
            )
        L.use &= ~wrong
    freight = L.use & (out_carrier == "freight")
    column[freight] = "freight_spend_10k_cny"
    col_factor[freight] = 1.0
    qty = np.where(freight, amount / 10_000.0, q * ufac * col_factor)  # freight: spend excl. VAT, 10^4 CNY
    resale_decl = _resale_mask(firm_keys, out_carrier, known)
    sale_used = L.use & sale & resale_decl
    sale_ignored = L.use & sale & ~resale_decl
    emit(
        sale_ignored,
        "warning",
        "sale_not_declared",
        "{n} line(s) sold by the firm, no resale declared for the carrier",
        "not subtracted",
    )
    L.use &= ~sale_ignored
    column = np.where(sale_used, np.char.add(column.astype(str), "_resale").astype(object), column)
    return _assemble(L, mp, year, firm_of, column, qty, inv_code, inferred, red, months, paths, issues)


def _map_codes(keys: np.ndarray, table: dict[str, Any]) -> np.ndarray:
    """``table[key]`` for every element, looked up once per distinct key."""
    if len(keys) == 0:
        return np.zeros(0, dtype=object)
    uniq, inv = np.unique(keys.astype(str), return_inverse=True)
    return np.array([table.get(u, "") for u in uniq.tolist()] + [""], dtype=object)[inv]


def _resale_mask(firm_keys: np.ndarray, out_carrier: np.ndarray, known: dict[str, FirmDecl]) -> np.ndarray:
    if len(firm_keys) == 0:
        return np.zeros(0, dtype=bool)
    pairs = np.char.add(np.char.add(firm_keys.astype(str), "\t"), out_carrier.astype(str))
    uniq, inv = np.unique(pairs, return_inverse=True)
    ok = []
    for u in uniq.tolist():
        f, _, c = u.partition("\t")
        ok.append(f in known and c in known[f].resale)
    return np.array(ok, dtype=bool)[inv]


def _assemble(
    L: _Lines,
    mp: Mapping,
    year: int,
    firm_of: np.ndarray,
    column: np.ndarray,
    qty: np.ndarray,
    inv_code: np.ndarray,
    inferred: np.ndarray,
    red: np.ndarray,
    months: np.ndarray,
    paths: list[Path],
    issues: list[Issue],
) -> Acquisition:
    use = L.use
    key = np.char.add(np.char.add(firm_of[use].astype(str), "\t"), column[use].astype(str))
    uniq, kinv = np.unique(key, return_inverse=True)
    total = np.bincount(kinv, weights=qty[use], minlength=len(uniq))
    nlines = np.bincount(kinv, minlength=len(uniq))
    # distinct invoices and billing months per (firm, column)
    ik = np.unique(kinv.astype(np.int64) * (int(inv_code.max(initial=0)) + 1) + inv_code[use])
    ninv = np.bincount(ik // (int(inv_code.max(initial=0)) + 1), minlength=len(uniq))
    mo = np.nan_to_num(months[use], nan=0).astype(np.int64)
    mk = np.unique(kinv.astype(np.int64) * 13 + np.clip(mo, 0, 12))
    mk = mk[(mk % 13) > 0]
    nmonths = np.bincount(mk // 13, minlength=len(uniq))
    ninf = np.bincount(kinv, weights=inferred[use], minlength=len(uniq)).astype(np.int64)
    nred = np.bincount(kinv, weights=red[use], minlength=len(uniq)).astype(np.int64)
    problems: dict[tuple[str, str], int] = {}
    issue: Issue
    cols: dict[tuple[str, str], dict[str, Any]] = {}
    for k, u in enumerate(uniq.tolist()):
        firm, col = u.split("\t")
        cols[(firm, col)] = {
            "value": float(total[k]),
            "lines": int(nlines[k]),
            "invoices": int(ninv[k]),
            "months": int(nmonths[k]),
            "inferred": int(ninf[k]),
            "red": int(nred[k]),
        }
    for issue in issues:
        if issue.firm_id and issue.severity != "info":
            problems[(issue.firm_id, "")] = problems.get((issue.firm_id, ""), 0) + 1
    # resale netted out of the purchase
    for (firm, col), c in list(cols.items()):
        if col.endswith("_resale"):
            base = cols.get((firm, col[: -len("_resale")]))
            if base is not None:
                base["value"] -= c["value"]
                base["resale"] = c["value"]
    firm_attrs = {d.firm_id: d.attributes for d in mp.firms.values()}
    firm_ids = sorted({f for f, _ in cols} | set(firm_attrs))
    out_cols = sorted({c for _, c in cols})
    data: dict[str, pa.Array] = {
        "firm_id": pa.array(firm_ids, type=pa.string()),
        "year": pa.array([year] * len(firm_ids), type=pa.int64()),
    }
    for a in sorted({k for v in firm_attrs.values() for k in v}):
        vals = [firm_attrs.get(f, {}).get(a) for f in firm_ids]
        if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in vals):
            data[a] = pa.array([None if v is None else float(v) for v in vals], type=pa.float64())
        else:
            data[a] = pa.array([None if v is None else str(v) for v in vals], type=pa.string())
    # electricity is billed monthly (grid company bills): months with an invoice / 12 is its coverage;
    # gas and heat billing periods vary, so only the month count is recorded for them (assumed)
    monthly = {"electricity_mwh"}
    utility = {"electricity_mwh", "natural_gas_10k_nm3", "heat_gj"}
    firms_out: list[dict[str, Any]] = [{"firm_id": f, "columns": {}} for f in firm_ids]
    pos = {f: i for i, f in enumerate(firm_ids)}
    for col in out_cols:
        value: list[Any] = [None] * len(firm_ids)
        cov: list[Any] = [None] * len(firm_ids)
        ninvs: list[Any] = [None] * len(firm_ids)
        nl: list[Any] = [None] * len(firm_ids)
        pol: list[Any] = [None] * len(firm_ids)
        src: list[Any] = [None] * len(firm_ids)
        prob: list[Any] = [None] * len(firm_ids)
        months_col: list[Any] = [None] * len(firm_ids)
        for (firm, cc), c in cols.items():
            if cc != col:
                continue
            i = pos[firm]
            notes = []
            if c["red"]:
                notes.append(f"{c['red']} red line(s) netted")
            if c["inferred"]:
                notes.append(f"{c['inferred']} empty unit(s) inferred by rule")
            if c.get("resale"):
                notes.append(f"net of {c['resale']:g} resold")
            v = round(c["value"], 9)
            if v < 0:
                issues.append(
                    Issue(
                        "error",
                        "net_negative",
                        f"{col} nets to {v:g} after red invoices",
                        "left empty",
                        firm_id=firm,
                        column=col,
                    )
                )
                v = None
            value[i] = v
            cov[i] = round(c["months"] / 12, 6) if col in monthly else None
            ninvs[i], nl[i], months_col[i] = c["invoices"], c["lines"], c["months"]
            pol[i] = "; ".join(["invoice totals", *notes])
            src[i] = "invoices"
            prob[i] = problems.get((firm, ""), 0)
            firms_out[i]["columns"][col] = {
                "value": v,
                "coverage": cov[i],
                "count": c["invoices"],
                "lines": c["lines"],
                "policy": pol[i],
                "issues": prob[i],
            }
        data[col] = pa.array(value, type=pa.float64())
        if col.endswith("_resale"):
            continue
        if col in monthly:
            data[f"{col}_coverage"] = pa.array(cov, type=pa.float64())
        if col in utility:
            data[f"{col}_months"] = pa.array(months_col, type=pa.int64())
        data[f"{col}_invoices"] = pa.array(ninvs, type=pa.int64())
        data[f"{col}_lines"] = pa.array(nl, type=pa.int64())
        data[f"{col}_policy"] = pa.array(pol, type=pa.string())
        data[f"{col}_source"] = pa.array(src, type=pa.string())
        data[f"{col}_issues"] = pa.array(prob, type=pa.int64())
    report = Report(
        "invoices",
        year,
        [str(p) for p in paths],
        issues,
        firms_out,
        {"invoice lines read": int(L.n), "lines used": int(use.sum()), "firms": len(firm_ids)},
    )
    return Acquisition(pa.table(data), report)
