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

# libyaml's parser where available (a 3,000-meter register: 0.1 s instead of 3 s); same safe subset
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

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


def credit_code_ok(code: str) -> bool:
    """GB 32100-2015 unified social credit code: 18 characters and a valid check character (the
    data contract's own check, :mod:`ruleengine.io.identifiers`)."""
    from ..io.identifiers import USCC_ALPHABET, uscc_check_char

    return len(code) == 18 and all(c in USCC_ALPHABET for c in code) and uscc_check_char(code[:17]) == code[17]


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
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_LOADER)
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
                    firm_id=str(firm_of[firm_i[pos[0]]]) if firm_of is not None else "",
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
    # dates, codes and names repeat: each distinct text is parsed once (dictionary encoding)
    dcode, dnames = _encode(L.text["issue_date"])
    date = pa.array(dnames, type=pa.string())
    dy, _ = to_float(pc.utf8_slice_codeunits(date, 0, 4))
    dm, _ = to_float(pc.utf8_slice_codeunits(pc.replace_substring_regex(date, "^\\d{4}[-/年.]?", ""), 0, 2))
    years, months = np.r_[dy, np.nan][dcode], np.r_[dm, np.nan][dcode]
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
    fnames = sorted({d.firm_id for d in known.values()})
    fpos = {f: i for i, f in enumerate(fnames)}
    first_decl: dict[str, FirmDecl] = {}
    for d in known.values():
        first_decl.setdefault(d.firm_id, d)
    decl_of = [first_decl[f] for f in fnames]
    b_idx = np.array([fpos[known[c].firm_id] if c in known else -1 for c in buyer_n] + [-1], dtype=np.int64)[buyer_c]
    s_idx = np.array([fpos[known[c].firm_id] if c in known else -1 for c in seller_n] + [-1], dtype=np.int64)[seller_c]
    b_firm, s_firm = b_idx >= 0, s_idx >= 0
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
    firm_i = np.where(b_firm, b_idx, s_idx)  # index into fnames; -1: not a firm of the mapping
    firm_of = np.array([*fnames, ""], dtype=object)  # firm_of[firm_i[k]] names the firm of line k
    # 3. carrier: tax code prefix, else *简称*
    ctab = load_table("carriers")
    carriers = sorted(
        {v["carrier"] for v in ctab["code_prefixes"].values()} | {v["carrier"] for v in ctab["short_names"].values()}
    )
    cidx = {c: i for i, c in enumerate(carriers)}
    tc, tn = _encode(L.text["tax_code"])
    prefixes = sorted(ctab["code_prefixes"], key=len, reverse=True)
    t_map = np.array(
        [next((cidx[ctab["code_prefixes"][p]["carrier"]] for p in prefixes if x.startswith(p)), -1) for x in tn] + [-1],
        dtype=np.int64,
    )
    by_code = t_map[tc]
    nc_, nn_ = _encode(L.text["item_name"])
    name_dict = pa.array(nn_, type=pa.string())
    short_d = pc.fill_null(pc.struct_field(pc.extract_regex(name_dict, r"^\s*\*(?P<s>[^*]+)\*"), "s"), "")
    sn = [str(x) for x in short_d.to_pylist()]
    sc = nc_
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
    # vehicle fuel: gasoline / diesel with a vehicle word in the name, unless the firm says otherwise
    vword = np.array([any(w in x for w in ctab["vehicle_words"]) for x in nn_] + [False], dtype=bool)[nc_]
    vcode = np.array([{"by_name": 0, "all": 1, "none": 2}[d.vehicle_fuel] for d in decl_of] + [0], dtype=np.int8)
    vmode = vcode[firm_i]
    vehicle = np.where(vmode == 1, True, np.where(vmode == 2, False, vword))
    # 4. units
    uc, un = _encode(L.text["unit"])
    alias = [unit_alias(u) if u else None for u in un]
    canon_names = ["", "kWh", "m3", "GJ", "t", "L"]
    canon = np.array([canon_names.index(a[0]) if a else 0 for a in alias] + [0], dtype=np.int8)[uc]
    ufac = np.array([a[1] if a else np.nan for a in alias] + [np.nan], dtype=np.float64)[uc]
    empty_unit = np.array([u == "" for u in un], dtype=bool)[uc]
    unknown_unit = L.use & ~empty_unit & (canon == 0)
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
        canon = np.where(hit, np.int8(canon_names.index(rule["unit"])), canon)
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
    # allowed[carrier, rate in basis points]: one gather per line
    tab = np.zeros((len(carriers) + 1, 10_001), dtype=bool)
    for c, rates in ctab["vat_rates"].items():
        if c != "source" and c in cidx:
            tab[cidx[c], np.round(np.array(rates, dtype=np.float64) * 10_000).astype(np.int64)] = True
    bp = np.round(np.nan_to_num(rate, nan=-1.0) * 10_000)
    inside = (bp >= 0) & (bp <= 10_000) & (np.abs(np.nan_to_num(rate) * 10_000 - bp) < 1e-6)
    allowed = inside & tab[carrier, np.clip(bp, 0, 10_000).astype(np.int64)]
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
    out_names = [*carriers, "vehicle_gasoline", "vehicle_diesel"]
    gas_i, die_i = cidx.get("gasoline", -2), cidx.get("diesel", -2)
    out_c = np.where(
        vehicle & (carrier == gas_i), len(carriers), np.where(vehicle & (carrier == die_i), len(carriers) + 1, carrier)
    )
    present = (np.flatnonzero(np.bincount(out_c[L.use] + 1, minlength=len(out_names) + 1)) - 1).tolist()
    present = [x for x in present if x >= 0]
    colnames: list[str] = []
    col_i = np.full(L.n, -1, dtype=np.int64)
    col_factor = np.full(L.n, np.nan)
    for oc in present:
        c = out_names[oc]
        if c == "freight":
            continue
        col, froms = carrier_column(c)
        if c == "heat":
            froms = {"GJ": 1.0, "t": mp.steam_gj_per_t or carrier_column("steam")[1]["t"]}
        if col not in colnames:
            colnames.append(col)
        m = L.use & (out_c == oc)
        ok_u = np.zeros(L.n, dtype=bool)
        for cu, f in froms.items():
            mm = m & (canon == canon_names.index(cu))
            col_factor[mm] = f
            col_i[mm] = colnames.index(col)
            ok_u |= mm
        wrong = m & ~ok_u
        for u in sorted(set(canon[wrong].tolist())):
            emit(wrong & (canon == u), "error", "unit_carrier",
                 f"{{n}} {c} line(s) in {canon_names[u]}, which cannot measure {c}", "ignored")  # fmt: skip
        L.use &= ~wrong
    freight = L.use & (out_c == cidx.get("freight", -2))
    if freight.any():
        colnames.append("freight_spend_10k_cny")
        col_i[freight] = len(colnames) - 1
        col_factor[freight] = 1.0
    qty = np.where(freight, amount / 10_000.0, q * ufac * col_factor)  # freight: spend excl. VAT, 10^4 CNY
    resale_tab = np.zeros((len(fnames) + 1, len(out_names) + 1), dtype=bool)
    for fi, d in enumerate(decl_of):
        for c in d.resale:
            if c in out_names:
                resale_tab[fi, out_names.index(c)] = True
    resale_decl = resale_tab[firm_i, out_c]
    sale_used = L.use & sale & resale_decl
    sale_ignored = L.use & sale & ~resale_decl
    emit(sale_ignored, "warning", "sale_not_declared",
         "{n} line(s) sold by the firm, no resale declared for the carrier", "not subtracted")  # fmt: skip
    L.use &= ~sale_ignored
    ncol = len(colnames)
    colnames += [f"{c}_resale" for c in colnames]
    col_i = np.where(sale_used, col_i + ncol, col_i)
    return _assemble(L, mp, year, firm_i, fnames, col_i, colnames, qty, inv_code, inferred, red, months, paths, issues)


def _assemble(
    L: _Lines,
    mp: Mapping,
    year: int,
    firm_i: np.ndarray,
    fnames: list[str],
    col_i: np.ndarray,
    colnames: list[str],
    qty: np.ndarray,
    inv_code: np.ndarray,
    inferred: np.ndarray,
    red: np.ndarray,
    months: np.ndarray,
    paths: list[Path],
    issues: list[Issue],
) -> Acquisition:
    use = L.use
    use = use & (firm_i >= 0) & (col_i >= 0)
    nc = max(len(colnames), 1)
    key = firm_i[use] * nc + col_i[use]
    present = np.bincount(key, minlength=len(fnames) * nc) > 0
    ukeys = np.flatnonzero(present)
    kinv = (np.cumsum(present) - 1)[key]  # dense index of each line's (firm, column)
    uniq = [f"{fnames[int(k) // nc]}\t{colnames[int(k) % nc]}" for k in ukeys]
    total = np.bincount(kinv, weights=qty[use], minlength=len(uniq))
    nlines = np.bincount(kinv, minlength=len(uniq))
    # distinct invoices and billing months per (firm, column)
    big = int(inv_code.max(initial=0)) + 1
    pairs = np.sort(kinv.astype(np.int64) * big + inv_code[use])
    distinct = pairs[np.r_[True, pairs[1:] != pairs[:-1]]] if len(pairs) else pairs
    ninv = np.bincount(distinct // big, minlength=len(uniq))
    mo = np.nan_to_num(months[use], nan=0).astype(np.int64)
    seen = np.bincount(kinv.astype(np.int64) * 13 + np.clip(mo, 0, 12), minlength=len(uniq) * 13).reshape(-1, 13)
    nmonths = (seen[:, 1:] > 0).sum(axis=1)
    ninf = np.bincount(kinv, weights=inferred[use], minlength=len(uniq)).astype(np.int64)
    nred = np.bincount(kinv, weights=red[use], minlength=len(uniq)).astype(np.int64)
    problems: dict[tuple[str, str], int] = {}
    issue: Issue
    cols: dict[tuple[str, str], dict[str, Any]] = {}
    for k, u in enumerate(uniq):
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
