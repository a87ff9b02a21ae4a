"""Reading tabular sources (CSV, Parquet, xlsx) into Arrow, and vectorised cell conversion.

Cells are converted column-wise with pyarrow compute and numpy: a column is cast in one call, and
only when that fails is each cell classified (by a regular expression, still vectorised) so that
the bad cells get located messages and the good ones are kept.
"""

from __future__ import annotations

import codecs
import datetime as dt
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..io.formats import first_line
from .safeio import SourceError, check_zip

NUMBER_RE = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$"
TS_RE = (
    r"^\s*(?P<y>\d{4})[-/.](?P<mo>\d{1,2})[-/.](?P<d>\d{1,2})"
    r"(?:[T ]+(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.\d+)?)?)?"
    r"\s*(?P<tz>Z|[+-]\d{2}:?\d{2})?\s*$"
)


class Ragged:
    """CSV rows with the wrong number of cells: skipped by the reader, located here."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, int]] = []  # (text, expected, actual)

    def __call__(self, row: Any) -> str:
        # (called from inside Arrow's reader: an exception here is printed and lost, never raised)
        try:
            text = str(row.text)
        except UnicodeDecodeError:  # the row's bytes are not UTF-8: located as such, not a traceback
            text = "<not UTF-8 text>"
        self.rows.append((text, int(row.expected_columns), int(row.actual_columns)))
        return "skip"

    def locate(self, path: Path) -> list[tuple[int, str, int, int]]:
        """(1-based data row, text, expected, actual) of each skipped row, found in the file's bytes."""
        if not self.rows:
            return []
        data = path.read_bytes()
        out, start = [], 0
        for text, exp, act in self.rows:  # the handler sees the rows in file order
            off = data.find(text.encode("utf-8"), start)
            line = data.count(b"\n", 0, off) if off >= 0 else -1  # data row = line - 1 (header) + 1
            out.append((line, text, exp, act))
            start = off + 1 if off >= 0 else start
        return out


def original_rows(n: int, skipped: list[int]) -> np.ndarray:
    """1-based data row numbers of the ``n`` rows kept when the rows ``skipped`` were dropped."""
    r = np.arange(1, n + 1, dtype=np.int64)
    for b in sorted(x for x in skipped if x > 0):
        r += r >= b
    return r


def read_table_rows(path: Path) -> tuple[pa.Table, np.ndarray, list[tuple[int, str, int, int]]]:
    """``read_table`` plus the 1-based data row of each kept row and the rows skipped as ragged."""
    ragged = Ragged()
    table = read_table(path, ragged)
    located = ragged.locate(path) if ragged.rows else []
    return table, original_rows(table.num_rows, [r for r, *_ in located]), located


def read_table(path: Path, ragged: Ragged | None = None) -> pa.Table:
    """A whole file as an Arrow table; CSV cells are all read as text (leading zeros kept)."""
    name = str(path)
    if not path.is_file():
        raise SourceError(f"{name}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            import pyarrow.csv as pacsv

            with path.open("rb") as fh:
                raw_head = fh.read(1 << 16)
            # not UTF-8: said here (Arrow would decode a bad row's bytes for its handler and print the
            # failure); the incremental decoder lets a character cut at the 64 KiB edge wait
            try:
                head = codecs.getincrementaldecoder("utf-8-sig")().decode(raw_head, final=False)
            except UnicodeDecodeError as exc:
                raise SourceError(
                    f"{name}: not UTF-8 text (byte {exc.start + 1}): a binary file, or another encoding"
                ) from None
            names = [c.strip().strip('"') for c in first_line(head).split(",")]
            if len(set(names)) != len(names):
                raise SourceError(f"{name}: line 1: repeated column names")
            return pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=64 << 20),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names}, strings_can_be_null=False
                ),
                parse_options=pacsv.ParseOptions(invalid_row_handler=ragged),
            )
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix in (".xlsx", ".xlsm", ".xls", ".ods"):
            return read_xlsx(path)
    except SourceError:
        raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, UnicodeDecodeError) as exc:
        msg = str(exc).splitlines()[0]
        raise SourceError(f"{name}: cannot be read: {msg}") from None
    raise SourceError(f"{name}: unknown file type '{suffix}' (CSV, Parquet or xlsx)")


def _cell_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, dt.date):
        return v.strftime("%Y-%m-%d")
    if isinstance(v, dt.time):
        return v.strftime("%H:%M")
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def read_xlsx(path: Path) -> pa.Table:
    """The first sheet of a workbook, every cell as text (python-calamine; the `xlsx` extra)."""
    check_zip(path)
    try:
        from python_calamine import CalamineWorkbook
    except ImportError:
        raise SourceError(f"{path}: reading .xlsx needs python-calamine: pip install 'ruleengine[xlsx]'") from None
    try:
        wb = CalamineWorkbook.from_path(str(path))
        rows = wb.get_sheet_by_index(0).to_python(skip_empty_area=False)
    except Exception as exc:  # calamine raises its own error types for corrupt workbooks
        raise SourceError(f"{path}: not a readable workbook ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise SourceError(f"{path}: the first sheet is empty")
    header = [_cell_text(h).strip() for h in rows[0]]
    cols: list[list[str]] = [[] for _ in header]
    for r in rows[1:]:
        for j in range(len(header)):
            cols[j].append(_cell_text(r[j]) if j < len(r) else "")
    return pa.table({h: pa.array(c, type=pa.string()) for h, c in zip(header, cols, strict=True)})


def find_column(table: pa.Table, aliases: tuple[str, ...]) -> str | None:
    """The first column whose name (trimmed, case-insensitive) is one of ``aliases``."""
    lookup = {n.strip().lower(): n for n in table.column_names}
    for a in aliases:
        if a.lower() in lookup:
            return lookup[a.lower()]
    return None


def to_text(arr: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Text of a column (numbers formatted), nulls as empty strings, whitespace trimmed."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    return pc.utf8_trim_whitespace(pc.fill_null(arr, ""))


def to_float(arr: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with NaN for empty cells, mask of cells that are not numbers)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        vals = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
        vals = np.asarray(vals, dtype=np.float64)
        bad = ~np.isfinite(vals) & ~np.isnan(vals)
        if bad.any():
            vals = np.where(bad, np.nan, vals)
        return vals, bad
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)):
        # a boolean, date or binary column where numbers belong: every non-empty cell is bad
        bad = np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=bool)
        return np.full(len(arr), np.nan), bad
    s = to_text(arr)
    empty = np.asarray(pc.equal(s, "").to_numpy(zero_copy_only=False), dtype=bool)
    nulled = pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)
    try:
        vals = np.asarray(pc.cast(nulled, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = np.zeros(len(vals), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        ok = np.asarray(pc.match_substring_regex(s, NUMBER_RE).to_numpy(zero_copy_only=False), dtype=bool)
        good = pc.if_else(pa.array(ok), nulled, pa.scalar(None, pa.string()))
        vals = np.asarray(pc.cast(good, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = ~ok & ~empty
    nonfinite = ~np.isfinite(vals) & ~np.isnan(vals)
    if nonfinite.any():
        bad |= nonfinite
        vals = np.where(nonfinite, np.nan, vals)
    if np.isnan(vals).any():  # 'nan' spelled out is not a number either
        spelled = np.isnan(vals) & ~empty & ~bad
        if spelled.any():
            bad |= spelled
    return vals, bad


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (vectorised, H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = np.where(m > 2, m - 3, m + 9)
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _days_in_month(y: np.ndarray, m: np.ndarray) -> np.ndarray:
    dim = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)[np.clip(m, 1, 12) - 1]
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    return dim + ((m == 2) & leap)


def to_epoch(arr: pa.ChunkedArray | pa.Array, tz_offset_s: int) -> tuple[np.ndarray, np.ndarray]:
    """(local epoch seconds, bad mask) of a timestamp column. Naive times are local (UTC+8);
    times with a zone are converted to UTC+8. ``24:00`` is the end of the day."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    n = len(arr)
    if pa.types.is_timestamp(t):
        secs = np.asarray(
            pc.cast(pc.cast(arr, pa.timestamp("s", tz=t.tz)), pa.int64()).fill_null(0).to_numpy(), dtype=np.int64
        )
        if t.tz is not None:
            secs = secs + tz_offset_s
        return secs, np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_date(t):
        days = np.asarray(pc.cast(pc.cast(arr, pa.date32()), pa.int32()).fill_null(0).to_numpy(), dtype=np.int64)
        return days * 86400, np.asarray(pc.is_null(arr).to_numpy(zero_copy_only=False), dtype=bool)
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)):
        return np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
    s = to_text(arr)
    if n > 1000:  # fast path: the common spellings parsed by Arrow; the rest (24:00, zones, ...) below
        fast = pc.strptime(s, format="%Y-%m-%d %H:%M:%S" if _has_seconds(s) else "%Y-%m-%d %H:%M", unit="s",
                           error_is_null=True)  # fmt: skip
        # Arrow rolls an impossible date over (2024-02-30 -> 03-01): the day written must be the day read
        day_txt, _ = to_float(pc.utf8_slice_codeunits(s, 8, 10))
        day_read = np.asarray(pc.fill_null(pc.day(fast), 0).to_numpy(zero_copy_only=False), dtype=np.float64)
        failed = ~(day_txt == day_read)  # NaN (unparsed, or not zero-padded) compares unequal: slow path
        if not failed.all():
            secs = np.array(pc.cast(fast, pa.int64()).fill_null(0).to_numpy(), dtype=np.int64)
            bad = np.zeros(n, dtype=bool)
            if failed.any():
                rest = np.flatnonzero(failed)
                rs, rb = to_epoch(s.take(pa.array(rest)), tz_offset_s)
                secs[rest] = rs
                bad[rest] = rb
            return secs, bad
    parts = pc.extract_regex(s, TS_RE)
    matched = np.asarray(pc.is_valid(parts).to_numpy(zero_copy_only=False), dtype=bool)

    def field(name: str) -> np.ndarray:
        f = pc.struct_field(parts, name)
        f = pc.if_else(pc.equal(f, ""), "0", f)
        return np.asarray(pc.cast(pc.fill_null(f, "0"), pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)

    y, mo, d, h, mi, sec = (field(k) for k in ("y", "mo", "d", "h", "mi", "s"))
    ok = matched & (mo >= 1) & (mo <= 12) & (d >= 1) & (d <= _days_in_month(y, mo))
    ok &= ((h < 24) | ((h == 24) & (mi == 0) & (sec == 0))) & (mi < 60) & (sec < 60)
    secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec
    tz = pc.fill_null(pc.struct_field(parts, "tz"), "")
    if pc.any(pc.not_equal(tz, "")).as_py():
        tzs = np.asarray(tz.to_numpy(zero_copy_only=False), dtype=object)
        uniq, inv = np.unique(tzs, return_inverse=True)  # a handful of distinct zones
        offs = np.array([_zone_offset(z, tz_offset_s) for z in uniq], dtype=np.int64)
        secs = secs + offs[inv]
    return np.where(ok, secs, 0), ~ok


def _has_seconds(s: pa.Array) -> bool:
    """Whether the first non-empty timestamp text carries seconds (HH:MM:SS)."""
    for v in s.slice(0, 50).to_pylist():
        if v:
            return bool(re.search(r"\d:\d\d:\d\d", v))
    return False


def _zone_offset(z: str, local: int) -> int:
    """Seconds to add to a wall-clock time written in zone ``z`` to get local (UTC+8) time."""
    if z == "":
        return 0
    if z == "Z":
        return local
    sign = -1 if z[0] == "-" else 1
    digits = z[1:].replace(":", "")
    return local - sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)


def format_ts(secs: int, end: bool = False) -> str:
    """Local time text of epoch seconds; with ``end`` a midnight is written 24:00 of the day before."""
    t = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=int(secs))
    if end and t.hour == 0 and t.minute == 0:
        return (t - dt.timedelta(days=1)).strftime("%Y-%m-%d") + " 24:00"
    return t.strftime("%Y-%m-%d %H:%M")
