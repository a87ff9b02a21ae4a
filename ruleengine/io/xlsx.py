"""A small, deterministic .xlsx writer (Office Open XML, ECMA-376) for results tables.

One sheet, a header row, numbers as numbers and text as inline strings; the sheet is streamed into
the zip chunk by chunk (bounded memory) and every zip entry carries a fixed timestamp, so the
same results give byte-identical files. Reading .xlsx is python-calamine's job (formats.py).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from ..errors import DataError

EXCEL_MAX_ROWS = 1_048_576  # rows per worksheet, header included (ECMA-376 / Excel limits)
_STAMP = (2000, 1, 1, 0, 0, 0)
_ILLEGAL = {c: None for c in range(32) if c not in (9, 10, 13)}  # XML 1.0 forbids these

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    "</Types>"
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
    'officeDocument" Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
    '<sheets><sheet name="results" sheetId="1" r:id="rId1"/></sheets></workbook>'
)
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
    'worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
)


def column_letter(j: int) -> str:
    """Excel's letters of the 0-based column ``j`` (0 → A, 25 → Z, 26 → AA)."""
    out = ""
    j += 1
    while j:
        j, r = divmod(j - 1, 26)
        out = chr(65 + r) + out
    return out


def _cell(ref: str, v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        v = str(v).lower()
    if isinstance(v, int | float):
        if isinstance(v, float) and not math.isfinite(v):
            return ""
        return f'<c r="{ref}"><v>{v!r}</v></c>'
    text = escape(str(v).translate(_ILLEGAL))
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'


def _entry(zf: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_STAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def write_xlsx(path: Path, tables: Iterable[Any]) -> None:
    """Write Arrow tables (chunks of one results table) as one worksheet."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in (
            ("[Content_Types].xml", _CONTENT_TYPES),
            ("_rels/.rels", _RELS),
            ("xl/workbook.xml", _WORKBOOK),
            ("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS),
        ):
            zf.writestr(_entry(zf, name), text)
        with zf.open(_entry(zf, "xl/worksheets/sheet1.xml"), "w", force_zip64=True) as fh:
            fh.write(
                b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
            )
            r = 0
            for table in tables:
                if r == 0:
                    r = 1
                    head = "".join(_cell(f"{column_letter(j)}1", n) for j, n in enumerate(table.column_names))
                    fh.write(f'<row r="1">{head}</row>'.encode())
                if r + table.num_rows > EXCEL_MAX_ROWS:
                    raise DataError(
                        f"{path}: more than {EXCEL_MAX_ROWS - 1:,} result rows do not fit one Excel sheet; "
                        "write .csv or .parquet"
                    )
                cols = [c.to_pylist() for c in table.columns]
                letters = [column_letter(j) for j in range(len(cols))]
                parts = []
                for i in range(table.num_rows):
                    r += 1
                    cells = "".join(_cell(f"{letters[j]}{r}", cols[j][i]) for j in range(len(cols)))
                    parts.append(f'<row r="{r}">{cells}</row>')
                fh.write("".join(parts).encode())
            fh.write(b"</sheetData></worksheet>")
