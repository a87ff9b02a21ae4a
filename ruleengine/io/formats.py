"""File readers behind :func:`ruleengine.data.read_file`: CSV (encoding and delimiter detected),
JSON / JSON Lines, Parquet and Excel ``.xlsx``.

Clean files take the fast columnar path (pyarrow). A file that the fast path cannot take whole — a
ragged row, an undecodable byte, a blank line, a record nested too deep — is read again by a
tolerant reader that keeps every readable row and names the line of each problem: the row is
carried through and rated ``unrated`` with the reason, the rest of the batch is rated. Row numbers
are the file's own: the line of a CSV/JSON Lines record, the line where a JSON object starts, the
Excel row, the 1-based row of a Parquet file.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .xlsx import column_letter

# Missing-value tokens (issue #12.1): a cell holding one of these (after trimming) is not
# reported. Never 0: a default applies only where the rulebook declares one, and is recorded.
MISSING_TOKENS: tuple[str, ...] = (
    "", "NA", "N/A", "n/a", "na", "NULL", "null", "Null", "None", "none", "nan", "NaN", "NAN",
    "-", "--", "—", "——", "无", "空",
)  # fmt: skip

MAX_CELL_TEXT = 60  # characters of a bad cell shown in a message
MAX_JSON_DIGITS = 400  # an integer literal longer than this is a bad cell, not a 4300-digit parse
XLSX_MAX_UNCOMPRESSED = 1 << 30  # zip-bomb limits for .xlsx (size, ratio, entries)
XLSX_MAX_RATIO = 200
XLSX_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class ReadOptions:
    """How to read a data file; every field has an automatic default."""

    encoding: str | None = None  # None: UTF-8 (BOM or not), else GB18030 (a superset of GBK)
    delimiter: str | None = None  # None: sniffed among , ; and tab from the header line
    thousands: str | None = None  # None: ',' only where unambiguous; '' never; ',' '.' ' ' always
    sheet: str | int | None = None  # .xlsx: sheet name or 0-based index (default: the first)
    missing: tuple[str, ...] = MISSING_TOKENS
    id_check: str = "warn"  # credit codes: warn (file-level note), error (row unrated), off

    @staticmethod
    def of(value: Any) -> ReadOptions:
        if value is None:
            return ReadOptions()
        if isinstance(value, ReadOptions):
            return value
        if isinstance(value, dict):
            unknown = set(value) - set(ReadOptions.__dataclass_fields__)
            if unknown:
                raise DataError(f"unknown read option {', '.join(sorted(unknown))}")
            return ReadOptions(**value)
        raise DataError(f"read options must be a ReadOptions or a dict, not {type(value).__name__}")


def show(value: Any) -> str:
    """A cell as a message shows it: repr, cut to a bounded length."""
    try:
        text = repr(value)
    except Exception:  # pragma: no cover - exotic objects
        text = f"<{type(value).__name__}>"
    if isinstance(value, int) and not isinstance(value, bool) and len(text) > MAX_CELL_TEXT:
        return f"an integer of {len(text)} digits"
    return text if len(text) <= MAX_CELL_TEXT else text[: MAX_CELL_TEXT - 1] + "…"


class BadCell:
    """A cell a reader could not turn into a value (shown in the row's reason)."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return self.why


# -- encodings and delimiters ---------------------------------------------------------------------


def detect_encoding(head: bytes) -> str:
    """The encoding of a text file from its first bytes: a BOM, else UTF-8 if it decodes, else GB18030."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a cut last character is fine
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        codecs.getincrementaldecoder("gb18030")().decode(head, final=False)
        return "gb18030"
    except UnicodeDecodeError:
        return "utf-8"  # neither: read as UTF-8, each undecodable cell a problem of its row


def first_line(text: str) -> str:
    """The header line, whatever the line ends: LF, CRLF or a lone CR (old Mac/Excel "CSV")."""
    return re.split(r"\r\n|\n|\r", text, maxsplit=1)[0]


def sniff_delimiter(header_line: str) -> str:
    """The delimiter among ``,`` ``;`` and tab that the header line (outside quotes) uses most."""
    outside = re.sub(r'"[^"]*"', "", header_line)
    counts = {d: outside.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _norm_encoding(enc: str) -> str:
    try:
        info = codecs.lookup(enc)
    except LookupError:
        raise DataError(f"unknown encoding '{enc}' (e.g. utf-8, gbk, gb18030)") from None
    if not getattr(info, "_is_text_encoding", True):  # rot13, base64: codecs, not text encodings
        raise DataError(f"'{enc}' is not a text encoding (e.g. utf-8, gbk, gb18030)")
    name = info.name
    return "gb18030" if name in ("gbk", "gb2312") else name  # GB18030 reads every GBK file


# -- CSV --------------------------------------------------------------------------------------------


def read_csv(path: Path, opts: ReadOptions, header_map: Any, only: set[str] | None, text_columns: set[str]) -> Any:
    """CSV → RawTable. ``header_map(names) -> {header: canonical}`` renames headers as read."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from .data import RawTable

    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    if not head.strip():
        raise DataError(f"{path}: the file is empty (expected a header row)")
    given = opts.encoding is not None
    enc = _norm_encoding(opts.encoding) if opts.encoding else detect_encoding(head)
    head_text = head.decode(enc if enc != "utf-8-sig" else "utf-8-sig", errors="replace")
    delim = opts.delimiter or sniff_delimiter(first_line(head_text))
    if len(delim) != 1:
        raise DataError(f"--delimiter must be one character, got {delim!r}")
    try:
        header = next(csv.reader([first_line(head_text)], delimiter=delim), [])
    except csv.Error as exc:
        raise DataError(f"{path}: line 1: not a readable CSV header ({exc})") from None
    header = [h.lstrip("\ufeff") for h in header]
    rename = header_map(header)
    canon = [rename.get(h, h) for h in header]
    wanted = [h for h, c in zip(header, canon, strict=True) if only is None or c in only]
    types = {h: pa.string() for h, c in zip(header, canon, strict=True) if c in text_columns}
    if len(set(header)) == len(header) and enc == "gb18030":
        fast = _read_gb18030_bytes(path, header, delim, types, wanted, opts, detected=not given)
        if fast is not None:
            table, problems = fast
            if _has_empty_row(table):
                return read_csv_tolerant(path, enc, delim, opts, rename, only, detected=not given)
            cols = {rename.get(name, name): table.column(name) for name in table.column_names}
            return RawTable(
                cols,
                table.num_rows,
                str(path),
                names=canon,
                owned=True,
                first_row=2,
                encoding=enc,
                row_problems=[(i, rename.get(h, h), msg) for i, h, msg in problems],
            )
    if len(set(header)) == len(header):
        try:
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(
                    block_size=1 << 24, encoding="utf8" if enc in ("utf-8", "utf-8-sig") else enc
                ),
                parse_options=pacsv.ParseOptions(delimiter=delim, ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(
                    column_types=types,
                    null_values=list(opts.missing),
                    strings_can_be_null=True,
                    include_columns=wanted,
                ),
            )
        except (pa.ArrowInvalid, UnicodeDecodeError, ValueError) as exc:
            # the first 64 KiB read as UTF-8, a later byte does not. Pure ASCII so far is no evidence
            # either way: GB18030 is tried (its own checks, or the tolerant reader, locate any cell
            # that is neither). UTF-8 text already seen is: the file is read as UTF-8, each cell that
            # is not UTF-8 a located problem of its row (never a silent re-read as GB18030).
            if not given and enc == "utf-8" and "UTF8" in str(exc) and head.isascii():
                return read_csv(path, _replace(opts, encoding="gb18030"), header_map, only, text_columns)
        else:
            # one record per line is what makes row i the file's line i + 2: a blank line (skipped)
            # or a quoted newline breaks it, and such a file is read by the tolerant reader
            if _has_empty_row(table):
                return read_csv_tolerant(path, enc, delim, opts, rename, only, detected=not given)
            cols = {rename.get(name, name): table.column(name) for name in table.column_names}
            return RawTable(cols, table.num_rows, str(path), names=canon, owned=True, first_row=2, encoding=enc)
    return read_csv_tolerant(path, enc, delim, opts, rename, only, detected=not given)


def _has_empty_row(table: Any) -> bool:
    """A row with every cell empty: a blank line (read as such, so that row i stays line i + 2).

    Free when some column has no empty cell (the usual firm_id), one pass over the validity
    bitmaps otherwise."""
    import pyarrow.compute as pc

    if table.num_columns == 0 or table.num_rows == 0 or any(c.null_count == 0 for c in table.columns):
        return False
    empty = pc.is_null(table.column(0))
    for c in table.columns[1:]:
        empty = pc.and_(empty, pc.is_null(c))
    return bool(pc.any(empty).as_py())


def _replace(opts: ReadOptions, **kw: Any) -> ReadOptions:
    from dataclasses import replace

    return replace(opts, **kw)


MIXED_UTF8 = (
    "the cell is UTF-8 text in a file read as GB18030 (GBK) from its first 64 KiB: a file that mixes "
    "encodings (re-save it in one, or give --encoding)"
)


def _read_gb18030_bytes(
    path: Path,
    header: list[str],
    delim: str,
    types: dict[str, Any],
    wanted: list[str],
    opts: ReadOptions,
    detected: bool,
) -> tuple[Any, list[tuple[int, str, str]]] | None:
    """A GB18030 (GBK) CSV parsed as bytes, only its text cells decoded; None when it cannot be.

    GB18030 is ASCII-compatible and none of its multi-byte characters holds a byte that CSV gives
    a meaning to (quote, delimiter, CR, LF: the second and fourth bytes are 0x30-0x39 or
    0x40-0xFE), so the file parses as it is, without decoding 1M rows of numbers first. Text
    columns are read as binary; a column whose bytes are all ASCII is its own text (a view), the
    others are decoded value by distinct value. Anything else — a byte sequence that is not
    GB18030, a number column holding non-ASCII text — returns None and the file takes the
    decoding reader, whose checks locate the bad cell.

    ``detected``: the encoding was told from the file's first 64 KiB, not given. A later text cell
    that is UTF-8 Chinese (valid UTF-8 with a character of three bytes or more — GBK text almost
    never is) then means a file that mixes encodings: that cell is a located problem of its row
    (read as GB18030 it would be silent mojibake), the rows after it are read as usual."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if "\ufffd" in "".join(header):
        return None  # the header itself did not decode
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 24, column_names=header, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=delim, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.binary() for h in types},
                null_values=[t.encode("gb18030") for t in opts.missing],  # matched on the bytes
                strings_can_be_null=True,
                include_columns=wanted,
            ),
        )
    except (pa.ArrowInvalid, ValueError):
        return None
    problems: list[tuple[int, str, str]] = []
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if pa.types.is_binary(col.type) or pa.types.is_string(col.type):
            got = _gb18030_text(col, set(opts.missing), detected)
            if got is None:
                return None
            text, utf8_rows = got
            table = table.set_column(i, name, text)
            problems += [(int(r), name, MIXED_UTF8) for r in utf8_rows]
    problems.sort()
    return table, problems


def _gb18030_text(col: Any, tokens: set[str], detected: bool) -> tuple[Any, np.ndarray] | None:
    """A binary (or string) column of GB18030 bytes as a string column, and the rows whose cell is
    UTF-8 Chinese instead (``detected`` only; those cells read as missing); None if some value is
    not GB18030. Missing-value tokens outside ASCII ('无', '—') read as missing here, as the
    decoding reader's null values make them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ._arrow import numbers

    chunks = []
    odd_rows = []
    start = 0
    for chunk in col.chunks:
        if not pa.types.is_binary(chunk.type):  # a column Arrow took as UTF-8: its bytes, decoded below
            chunk = chunk.view(pa.binary())
        data = chunk.buffers()[2]
        span = np.zeros(0, dtype=np.uint8)
        if data is not None and len(chunk):
            offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32, count=chunk.offset + len(chunk) + 1)
            span = np.frombuffer(data, dtype=np.uint8)[offsets[chunk.offset] : offsets[-1]]
        if not len(span) or int(span.max()) < 0x80:
            chunks.append(chunk.view(pa.string()))  # ASCII: the same bytes are the text
            start += len(chunk)
            continue
        enc = pc.dictionary_encode(chunk)
        labels: list[str | None] = []
        odd = []
        for k, raw in enumerate(enc.dictionary.to_pylist()):
            try:
                lab = raw.decode("gb18030")
            except UnicodeDecodeError:
                return None
            if detected and not raw.isascii() and _utf8_chinese(raw):
                odd.append(k)
                labels.append(None)
            else:
                labels.append(None if lab in tokens else lab)
        decoded = pa.array(labels, type=pa.string())
        chunks.append(decoded.take(enc.indices))
        if odd:
            idx = numbers(enc.indices, np.int64, -1)
            odd_rows.append(start + np.flatnonzero(np.isin(idx, odd)))
        start += len(chunk)
    rows = np.concatenate(odd_rows) if odd_rows else np.zeros(0, dtype=np.int64)
    return pa.chunked_array(chunks, type=pa.string()), rows


def _utf8_chinese(raw: bytes) -> bool:
    """Valid UTF-8 holding a character of three bytes or more (CJK and beyond)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return any(ord(c) >= 0x800 for c in text)


_SURROGATE = re.compile("[\udc80-\udcff]")


def read_csv_tolerant(
    path: Path,
    enc: str,
    delim: str,
    opts: ReadOptions,
    rename: dict[str, str],
    only: set[str] | None,
    detected: bool = False,
) -> Any:
    """Record by record with the csv module: a bad record or cell is a problem of its line only.

    ``detected``: the encoding was told from the first 64 KiB; in a GB18030 file, a cell that is
    UTF-8 Chinese is then a problem of its row (see :func:`_read_gb18030_bytes`)."""
    import pyarrow as pa

    from .data import RawTable

    text = path.read_bytes().decode(enc, errors="surrogateescape")
    csv.field_size_limit(1 << 24)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise DataError(f"{path}: line 1: cannot read the header row ({exc})") from None
    header = [h.lstrip("\ufeff") for h in header]
    if any(_SURROGATE.search(h) for h in header):
        raise DataError(f"{path}: line 1: the header is not valid {enc} text (use --encoding)")
    ncols = len(header)
    canon = [rename.get(h, h) for h in header]
    if len(set(canon)) != len(canon):
        dupes = sorted({h for h in canon if canon.count(h) > 1})
        raise DataError(f"{path}: line 1: column {', '.join(dupes)} appears more than once in the header")
    keep = [j for j, c in enumerate(canon) if only is None or c in only]
    values: list[list[str | None]] = [[] for _ in keep]
    rows: list[int] = []
    problems: list[tuple[int, str | None, str]] = []
    tokens = set(opts.missing)
    check_utf8 = detected and enc == "gb18030"
    start = reader.line_num + 1
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append((len(rows), None, f"line {start}: cannot be read as CSV ({exc})"))
            rows.append(start)
            for v in values:
                v.append(None)
            start = reader.line_num + 1
            continue
        line = start
        start = reader.line_num + 1
        if not rec or (len(rec) == 1 and not rec[0].strip() and ncols > 1):
            continue  # a blank line: not a row
        i = len(rows)
        rows.append(line)
        if len(rec) != ncols:
            problems.append((i, None, f"has {len(rec)} fields, the header has {ncols} (a ragged row)"))
            rec = (rec + [""] * ncols)[:ncols]
        for out, j in zip(values, keep, strict=True):
            cell = rec[j]
            if _SURROGATE.search(cell):
                problems.append((i, canon[j], f"the cell is not valid {enc} text (use --encoding)"))
                out.append(None)
            elif check_utf8 and not cell.isascii() and _utf8_chinese(cell.encode("gb18030")):
                problems.append((i, canon[j], MIXED_UTF8))
                out.append(None)
            elif cell.strip() in tokens:
                out.append(None)
            else:
                out.append(cell)
    cols = {canon[j]: pa.array(v, type=pa.string()) for j, v in zip(keep, values, strict=True)}
    return RawTable(
        cols,
        len(rows),
        str(path),
        names=canon,
        owned=True,
        row_numbers=np.asarray(rows, dtype=np.int64),
        row_problems=problems,
        encoding=enc,
    )


# -- JSON -----------------------------------------------------------------------------------------


def _parse_int(text: str) -> Any:
    if len(text) > MAX_JSON_DIGITS:
        return BadCell(f"an integer of {len(text)} digits is too large for a number")
    return int(text)


def _parse_constant(text: str) -> Any:
    return BadCell(f"{text} is not a finite number")


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_constant=_parse_constant)
_WS = re.compile(r"[ \t\n\r]*")


def _skip_value(text: str, pos: int) -> int:
    """The end of the JSON value at ``pos`` (strings and nesting scanned; used after a RecursionError)."""
    depth = 0
    i = pos
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth <= 0:
                return i + 1
        elif depth == 0 and c in ",":
            return i
        i += 1
    return n


def read_json(path: Path, suffix: str, header_map: Any, only: set[str] | None) -> Any:
    from .data import DataIssue  # noqa: F401  (kept for type readers)

    raw = path.read_bytes()
    enc = detect_encoding(raw[: 1 << 16])
    text = raw.decode(enc if enc != "utf-8" else "utf-8", errors="surrogateescape")
    if not text.strip():
        raise DataError(f"{path}: the file is empty (expected a list of objects, one per firm-year)")
    records: list[Any] = []
    lines: list[int] = []
    problems: list[tuple[int, str | None, str]] = []
    if suffix == ".json" and text.lstrip().startswith("["):
        pos = text.index("[") + 1
        line = text.count("\n", 0, pos) + 1
        last = pos
        while True:
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if pos >= len(text):
                raise DataError(f"{path}: line {text.count(chr(10)) + 1}: the list is not closed (missing ']')")
            if text[pos] == "]":
                if text[pos + 1 :].strip():
                    extra = pos + 1 + (len(text[pos + 1 :]) - len(text[pos + 1 :].lstrip()))
                    raise DataError(f"{path}: line {text.count(chr(10), 0, extra) + 1}: text after the closing ']'")
                break
            line += text.count("\n", last, pos)
            last = pos
            try:
                value, end = _DECODER.raw_decode(text, pos)
            except RecursionError:
                end = _skip_value(text, pos)
                value = BadCell("nested too deep to read")
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}") from None
            records.append(value)
            lines.append(len(records))  # a JSON list: row = the object's ordinal (1-based)
            pos = _WS.match(text, end).end()  # type: ignore[union-attr]
            if pos < len(text) and text[pos] == ",":
                pos += 1
            elif pos < len(text) and text[pos] != "]":
                ln = text.count("\n", 0, pos) + 1
                raise DataError(f"{path}: line {ln}: expected ',' or ']' after an object")
    else:
        decoded = False
        for i, line_text in enumerate(text.splitlines(), start=1):
            if not line_text.strip():
                continue
            try:
                value = _DECODER.decode(line_text)
                decoded = True
            except RecursionError:
                value = BadCell("nested too deep to read")
            except json.JSONDecodeError as exc:
                value = BadCell(f"not valid JSON at column {exc.colno}: {exc.msg}")
            records.append(value)
            lines.append(i)
        if not decoded:  # not one line is JSON: the file is not JSON (Lines), e.g. truncated; say where
            try:
                _DECODER.decode(text.rstrip(" \t\r\n"))  # a truncated file: where its text ends
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}") from None
            except RecursionError:
                pass
    return from_records_tolerant(records, str(path), header_map, only, lines, problems)


def from_records_tolerant(
    records: list[Any],
    source: str,
    header_map: Any,
    only: set[str] | None,
    lines: list[int] | None = None,
    problems: list[tuple[int, str | None, str]] | None = None,
) -> Any:
    """Records (dicts) → RawTable; a record that is not an object is a problem of its row."""
    from .data import RawTable

    problems = problems if problems is not None else []
    names: dict[str, None] = {}
    for i, r in enumerate(records):
        if isinstance(r, dict):
            for k in r:
                names.setdefault(str(k), None)
        elif isinstance(r, BadCell):
            problems.append((i, None, r.why))
        else:
            problems.append((i, None, f"{show(r)} is not an object (one per firm-year)"))
    header = list(names)
    rename = header_map(header)
    canon = [rename.get(h, h) for h in header]
    cols: dict[str, Any] = {}
    for h, c in zip(header, canon, strict=True):
        if only is not None and c not in only:
            continue
        cells = [r.get(h) if isinstance(r, dict) else None for r in records]
        cols[c] = cells
        for i, v in enumerate(cells):
            if isinstance(v, str) and not v.isascii() and _SURROGATE.search(v) is not None:  # a lone surrogate
                problems.append((i, c, "the cell is not valid UTF-8 text"))
                cells[i] = None
    return RawTable(
        cols,
        len(records),
        source,
        names=canon,
        row_numbers=np.asarray(lines, dtype=np.int64) if lines is not None else None,
        row_problems=problems,
    )


# -- Parquet --------------------------------------------------------------------------------------


def read_parquet(path: Path, header_map: Any, only: set[str] | None, text_columns: set[str]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .data import RawTable

    schema = pq.read_schema(path)
    names = schema.names
    dupes = sorted({h for h in names if names.count(h) > 1})
    if dupes:
        raise DataError(f"{path}: column {', '.join(dupes)} appears more than once in the file's schema")
    rename = header_map(names)
    canon = [rename.get(h, h) for h in names]
    wanted = [h for h, c in zip(names, canon, strict=True) if only is None or c in only]
    text = [
        f.name
        for f, c in zip(schema, canon, strict=True)
        if c in text_columns and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
    ]
    pf = pq.ParquetFile(path, read_dictionary=text or None, memory_map=True)
    if not wanted:
        return RawTable({}, pf.metadata.num_rows, str(path), names=canon)
    table = pf.read(columns=wanted)
    cols = {rename.get(name, name): table.column(name) for name in table.column_names}
    return RawTable(cols, table.num_rows, str(path), names=canon, owned=True)


# -- Excel ----------------------------------------------------------------------------------------


def _check_zip(path: Path) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not an .xlsx workbook (not a zip archive: {exc})") from None
    if len(infos) > XLSX_MAX_ENTRIES:
        raise DataError(f"{path}: workbook has {len(infos)} parts (limit {XLSX_MAX_ENTRIES})")
    total = sum(i.file_size for i in infos)
    packed = max(1, sum(i.compress_size for i in infos))
    if total > XLSX_MAX_UNCOMPRESSED or total / packed > XLSX_MAX_RATIO:
        raise DataError(
            f"{path}: workbook expands to {total:,} bytes ({total / packed:.0f}x its size): refused as a zip bomb"
        )


def read_xlsx(path: Path, opts: ReadOptions, header_map: Any, only: set[str] | None) -> Any:

    try:
        import python_calamine
    except ImportError:
        raise DataError(f"{path}: reading .xlsx needs python-calamine: pip install 'ruleengine[xlsx]'") from None
    _check_zip(path)
    try:
        wb = python_calamine.CalamineWorkbook.from_path(str(path))
        sheets = wb.sheet_names
        sheet = opts.sheet if opts.sheet is not None else 0
        if isinstance(sheet, str) and sheet.isdigit() and sheet not in sheets:
            sheet = int(sheet)
        if isinstance(sheet, int):
            if not 0 <= sheet < len(sheets):
                raise DataError(f"{path}: no sheet {sheet} (the workbook has {len(sheets)}: {', '.join(sheets)})")
            ws = wb.get_sheet_by_index(sheet)
            label = sheets[sheet]
        else:
            if sheet not in sheets:
                raise DataError(f"{path}: no sheet '{sheet}' (sheets: {', '.join(sheets)})")
            ws = wb.get_sheet_by_name(sheet)
            label = sheet
        grid = ws.to_python(skip_empty_area=False)
    except DataError:
        raise
    except Exception as exc:  # calamine's errors are its own classes; all mean "cannot read"
        raise DataError(f"{path}: cannot read the workbook: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    source = f"{path}[{label}]"
    top = next((r for r, row in enumerate(grid) if any(_cell_text(c) for c in row)), None)
    if top is None:
        raise DataError(f"{source}: the sheet is empty (expected a header row)")
    header = [_cell_text(c) for c in grid[top]]
    while header and not header[-1]:
        header.pop()
    for j, h in enumerate(header):
        if not h:
            raise DataError(f"{source}: row {top + 1}, column {column_letter(j)}: empty header cell")
    records: list[Any] = []
    lines: list[int] = []
    problems: list[tuple[int, str | None, str]] = []
    tokens = set(opts.missing)
    for r in range(top + 1, len(grid)):
        row = grid[r]
        if not any(_cell_text(c) for c in row):
            continue
        i = len(records)
        if any(_cell_text(c) for c in row[len(header) :]):
            problems.append((i, None, f"has values right of the last header column {column_letter(len(header) - 1)}"))
        rec: dict[str, Any] = {}
        for j, h in enumerate(header):
            v: Any = row[j] if j < len(row) else None
            if isinstance(v, str) and v.strip() in tokens:
                v = None
            elif v is not None and not isinstance(v, str | int | float) or isinstance(v, bool):
                v = BadCell(f"{show(v)} ({type(v).__name__} cell)")
            rec[h] = v
        records.append(rec)
        lines.append(r + 1)
    return from_records_tolerant(records, source, header_map, only, lines, problems)


def _cell_text(c: Any) -> str:
    return "" if c is None else str(c).strip()
