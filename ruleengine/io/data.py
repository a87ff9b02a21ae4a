"""Data stage: firm-year panels from CSV, JSON/JSONL, Parquet, records or DataFrames → typed columns.

Reading is columnar (pyarrow); a clean numeric column is converted in one call, and only a column
that holds something other than numbers takes the slower path that finds each bad cell.  Nothing
bad passes silently: a non-numeric cell, a value out of range, a missing required value, a
duplicate (firm_id, year) and a column name that looks like a typo each become a
:class:`DataIssue` naming the file, row and column, and the row they hit is still carried through
(rated where the rulebook allows, ``unrated`` with the reason otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, did_you_mean

# DATA.md's canonical columns (plus the loan balance diff uses): names a rulebook may not use but
# that are not typos; the measured-factor columns follow.
DATA_COLUMNS: tuple[str, ...] = (
    "firm_id",
    "firm_name",
    "year",
    "city",
    "grid_region",
    "industry",
    "size",
    "employees",
    "output_value_10k_cny",
    "value_added_10k_cny",
    "revenue_10k_cny",
    "tax_10k_cny",
    "raw_coal_t",
    "coke_t",
    "crude_oil_t",
    "fuel_oil_t",
    "gasoline_t",
    "kerosene_t",
    "diesel_t",
    "lpg_t",
    "natural_gas_10k_nm3",
    "vehicle_gasoline_t",
    "vehicle_diesel_t",
    "electricity_mwh",
    "green_electricity_mwh",
    "onsite_renewable_mwh",
    "heat_gj",
    "clinker_t",
    "limestone_t",
    "dolomite_t",
    "loan_amount_10k_cny",
)
_FUELS = ("raw_coal", "coke", "crude_oil", "fuel_oil", "gasoline", "kerosene", "diesel", "lpg", "natural_gas")
# `region`: the firm's GB/T 2260 division code, read when a rulebook declares its jurisdiction
CANONICAL_COLUMNS = (
    DATA_COLUMNS + ("region",) + tuple(f"{f}_{s}" for f in _FUELS for s in ("ncv_gj_per_unit", "cc_tc_per_tj", "ox"))
)

from .formats import MISSING_TOKENS  # noqa: E402

_NULLS = list(MISSING_TOKENS)
# an unknown header this close to an input's name (difflib ratio) is an error with did-you-mean;
# one less close to any known column is a warning
TYPO_CUTOFF = 0.85
# A batch of at most this many rows whose columns are Python lists (records: one firm rated by the
# HTTP service) is checked cell by cell in plain Python — what the Arrow kernels and numpy calls of
# the general path do per column costs far more than the cells themselves at this size. The plain
# paths give the same columns, issues (text and order) and defaults (tests/test_tiny_contract.py
# compares them with TINY_ROWS = 0, which turns them off); any cell they do not handle exactly
# (a bool or a list in a text column, a mapping's unit factor …) sends its column the general way.
TINY_ROWS = 64
_NUMBER_RE = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"


@dataclass(frozen=True)
class DataIssue:
    """One problem in the data: where it is and what is wrong. ``row`` is 1-based (data rows)."""

    source: str
    row: int | None
    column: str | None
    message: str
    fatal: bool = True  # the row cannot be rated as it stands

    def format(self) -> str:
        where = self.source
        if self.row is not None:
            where += f": row {self.row}"
        if self.column:
            where += f", column {self.column}"
        return f"{where}: {self.message}"


class Category:
    """A category column as integer codes into labels (-1 = missing).

    ``labels`` may be given as a pyarrow string array (the dictionary read from the file): it is
    turned into a Python list only when someone asks for it, so half a million firm ids go from
    Parquet to Parquet without a Python string each.
    """

    __slots__ = ("codes", "_labels", "_arrow")

    def __init__(self, codes: np.ndarray, labels: Any) -> None:
        self.codes = codes
        self._labels: list[str] | None = labels if isinstance(labels, list) else None
        self._arrow: Any = None if isinstance(labels, list) else labels

    @property
    def labels(self) -> list[str]:
        if self._labels is None:
            self._labels = self._arrow.to_pylist()
        return self._labels

    @property
    def label_count(self) -> int:
        """How many labels, without turning Arrow labels into Python strings."""
        return len(self._labels) if self._labels is not None else len(self._arrow)

    @property
    def labels_from_arrow(self) -> bool:
        """The labels are still the Arrow dictionary they were read as (distinct, no '')."""
        return self._labels is None

    def arrow_labels(self) -> Any:
        """The labels as a pyarrow string array (built once)."""
        if self._arrow is None:
            from ._arrow import strings

            self._arrow = strings(self._labels or [])
        return self._arrow

    def __len__(self) -> int:
        return len(self.codes)

    def __repr__(self) -> str:
        return f"Category({len(self.codes)} rows, {len(self.labels)} labels)"

    def take(self, idx: np.ndarray) -> Category:
        return Category(self.codes[idx], self._labels if self._labels is not None else self._arrow)

    def to_strings(self) -> np.ndarray:
        lab = np.asarray([*self.labels, ""], dtype=object)
        return lab[self.codes]  # -1 indexes the trailing ''

    def label(self, i: int) -> str:
        """Row ``i``'s text (``to_strings()[i]`` without building the whole column): '' if missing."""
        code = int(self.codes[i])
        return self.labels[code] if code >= 0 else ""


@dataclass
class RawTable:
    """Columns as read, before the rulebook's types are applied.

    Row ``i`` is the file's row ``row_numbers[i]`` (its line for CSV/JSON Lines, the line where a
    JSON object starts, the Excel row), or ``first_row + i`` when ``row_numbers`` is None.
    ``row_problems``: (index, column or None, message) found while reading: the row is unrated.
    """

    columns: dict[str, Any]  # name → pyarrow Array/ChunkedArray or numpy/list
    n: int
    source: str
    issues: list[DataIssue] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # every column in the source, read or not
    owned: bool = False  # the columns were read from a file here: nobody else holds their buffers
    first_row: int = 1
    row_numbers: np.ndarray | None = None
    row_problems: list[tuple[int, str | None, str]] = field(default_factory=list)
    encoding: str | None = None
    options: Any = None  # ReadOptions (missing tokens, thousands, id check)
    mapping: Any = None  # ColumnMapping (unit conversions, industry names)

    def __post_init__(self) -> None:
        if not self.names:
            self.names = list(self.columns)

    def rows(self) -> np.ndarray:
        """The file's row number of every index."""
        if self.row_numbers is not None:
            return self.row_numbers
        return np.arange(self.first_row, self.first_row + self.n, dtype=np.int64)


@dataclass
class Batch:
    """Typed columns for one rulebook: floats (NaN = missing), Category, or object arrays."""

    columns: dict[str, Any]
    n: int
    source: str
    issues: list[DataIssue]
    row_issues: dict[int, list[str]]  # index → messages
    invalid: np.ndarray  # bool: the row has a fatal data problem
    row_numbers: np.ndarray  # 1-based row of each index in its source
    firm_codes: np.ndarray  # firm_id as integer codes (-1 missing), for panel lookups
    defaults: Category | None = None  # per row: the inputs that took the rulebook's default, and why
    jurisdiction: Any = None  # io.jurisdiction.Jurisdiction: per row inside/outside, when the rulebook declares one

    def take(self, idx: np.ndarray) -> Batch:
        cols = {k: (v.take(idx) if isinstance(v, Category) else v[idx]) for k, v in self.columns.items()}
        pos = {int(old): new for new, old in enumerate(idx)}
        row_issues = {pos[i]: m for i, m in self.row_issues.items() if i in pos}
        return Batch(
            cols,
            len(idx),
            self.source,
            self.issues,
            row_issues,
            self.invalid[idx],
            self.row_numbers[idx],
            self.firm_codes[idx],
            self.defaults.take(idx) if self.defaults is not None else None,
            self.jurisdiction.take(idx) if self.jurisdiction is not None else None,
        )


def _writable(values: np.ndarray) -> np.ndarray:
    """Arrow hands out read-only views; copy only when a value must change."""
    return values if values.flags.writeable else values.copy()


def _fill_category(cat: Category, label: str) -> Category:
    missing = cat.codes < 0
    if not missing.any():
        return cat
    labels = sorted({*cat.labels, label})
    remap = np.array([labels.index(lab) for lab in cat.labels] + [labels.index(label)], dtype=np.int32)
    return Category(remap[cat.codes], labels)


# -- reading ------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _known_columns(only: tuple[str, ...]) -> frozenset[str]:
    return frozenset(CANONICAL_COLUMNS) | frozenset(only)


def _header_map(mapping: Any, only: Iterable[str] | None, source: str) -> Any:
    """headers → canonical names (mapping file, then case/space-insensitive match of known names)."""
    from .mapping import resolve_headers

    known = _known_columns(tuple(only or ()))

    def resolve(names: list[str]) -> dict[str, str]:
        return resolve_headers([str(n) for n in names], mapping, known, source)

    return resolve


def read_file(
    path: str | Path,
    text_columns: Iterable[str] = (),
    only: Iterable[str] | None = None,
    options: Any = None,
    mapping: Any = None,
) -> RawTable:
    """Read CSV/TSV, JSON (list of objects), JSON Lines, Parquet or Excel .xlsx by extension.

    ``only``: the columns worth converting (a rulebook's inputs); the others are listed in
    ``names`` (for the typo check) but not read, which keeps wide files cheap. ``options``: a
    :class:`ruleengine.formats.ReadOptions` (encoding, delimiter, thousands, sheet, missing
    tokens); ``mapping``: a column mapping (file path or parsed), see docs/data-contract.md.
    """
    from . import formats
    from .mapping import load_mapping

    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file not found: {path}")
    opts = formats.ReadOptions.of(options)
    cmap = load_mapping(mapping) if mapping is not None else None
    if cmap is not None and cmap.missing:
        from dataclasses import replace

        opts = replace(opts, missing=tuple(dict.fromkeys((*opts.missing, *cmap.missing))))
    suffix = p.suffix.lower()
    wanted = set(only) if only is not None else None
    texts = set(text_columns)
    hmap = _header_map(cmap, only, str(path))
    try:
        if suffix in (".csv", ".txt", ".tsv"):
            raw = formats.read_csv(p, opts, hmap, wanted, texts)
        elif suffix == ".parquet":
            raw = formats.read_parquet(p, hmap, wanted, texts)
        elif suffix in (".json", ".jsonl", ".ndjson"):
            raw = formats.read_json(p, suffix, hmap, wanted)
        elif suffix in (".xlsx", ".xlsm"):
            raw = formats.read_xlsx(p, opts, hmap, wanted)
        else:
            raise DataError(
                f"{path}: unknown data format '{suffix}' (use .csv, .tsv, .json, .jsonl, .parquet or .xlsx)"
            )
    except DataError:
        raise
    except RecursionError:
        raise DataError(f"{path}: nested too deep to read") from None
    except (OSError, ValueError, TypeError, KeyError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read: {text[:300]}") from None
    raw.options = opts
    raw.mapping = cmap
    return raw


def _read_table(table: Any, path: str | Path, names: list[str]) -> RawTable:
    """A pyarrow Table this module read from ``path`` (so its buffers are ours to overwrite)."""
    return RawTable(
        {name: table.column(name) for name in table.column_names}, table.num_rows, str(path), names=names, owned=True
    )


def from_records(records: Any, source: str = "<records>") -> RawTable:
    if not isinstance(records, list):
        raise DataError(f"{source}: expected a list of objects (one per firm-year)")
    from . import formats

    return formats.from_records_tolerant(records, source, lambda names: {}, None)


def read_any(
    data: Any,
    text_columns: Iterable[str] = (),
    only: Iterable[str] | None = None,
    options: Any = None,
    mapping: Any = None,
) -> RawTable:
    """A path, a list of dicts, a dict of columns, a pandas/polars DataFrame or a pyarrow Table."""
    if isinstance(data, RawTable):
        return data
    if isinstance(data, str | Path):
        return read_file(data, text_columns, only, options, mapping)
    if isinstance(data, list):
        raw = from_records(data)
    elif hasattr(data, "column_names") and hasattr(data, "num_rows"):  # pyarrow.Table
        names = list(data.column_names)
        dupes = sorted({h for h in names if names.count(h) > 1})
        if dupes:
            raise DataError(f"<table>: column {', '.join(dupes)} appears more than once")
        raw = RawTable({n: data.column(n) for n in names}, data.num_rows, "<table>")
    elif hasattr(data, "columns") and hasattr(data, "to_dict") and hasattr(data, "__len__"):  # DataFrame
        cols = {
            str(c): np.asarray(data[c].to_numpy() if hasattr(data[c], "to_numpy") else data[c]) for c in data.columns
        }
        raw = RawTable(cols, len(data), "<dataframe>")
    elif isinstance(data, Mapping):
        if not all(hasattr(v, "__len__") and not isinstance(v, str | bytes) for v in data.values()):
            raise DataError("<columns>: a dict of columns maps each name to a list or array of cells")
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise DataError("<columns>: columns have different lengths")
        raw = RawTable(dict(data), lengths.pop() if lengths else 0, "<columns>")
    else:
        raise DataError(
            f"cannot read data of type {type(data).__name__}: give a file path, a list of "
            "dicts, a dict of columns or a DataFrame"
        )
    from . import formats
    from .mapping import load_mapping

    cmap = load_mapping(mapping) if mapping is not None else None
    rename = _header_map(cmap, only, raw.source)(raw.names)
    if rename:
        raw.columns = {rename.get(k, k): v for k, v in raw.columns.items()}
        raw.names = [rename.get(k, k) for k in raw.names]
    opts = formats.ReadOptions.of(options)
    if cmap is not None and cmap.missing:
        from dataclasses import replace

        opts = replace(opts, missing=tuple(dict.fromkeys((*opts.missing, *cmap.missing))))
    raw.options = opts
    raw.mapping = cmap
    return raw


# -- typing against the rulebook's inputs -------------------------------------------------------


def _to_numpy_object(col: Any) -> np.ndarray:
    if hasattr(col, "to_pylist"):
        return np.asarray(col.to_pylist(), dtype=object)
    return np.asarray(col, dtype=object)


def _is_integer_type(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(t))


def _col_is_empty(col: Any) -> bool:
    """A column read from a file with nothing in it (every cell null)."""
    return hasattr(col, "null_count") and len(col) > 0 and col.null_count == len(col)


_NUMBER_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
# thousands separators: where unambiguous by default (a ',' group before a '.' decimal part, or
# two and more ',' groups); with an explicit separator every well-grouped number
_THOUSANDS_AUTO = r"^[+-]?\d{1,3}(,\d{3})+\.\d+$|^[+-]?\d{1,3}(,\d{3}){2,}$"
_AMBIGUOUS = re.compile(r"^[+-]?\d{1,3},\d{3}$")


def _thousands_pattern(sep: str) -> str:
    s = re.escape(sep)
    dec = "," if sep == "." else "\\."
    return rf"^[+-]?\d{{1,3}}({s}\d{{3}})+({dec}\d+)?$"


def _why_not_number(v: Any) -> str:
    from .formats import BadCell, show

    if isinstance(v, BadCell):
        return v.why
    if isinstance(v, bool):
        return f"{v!r} is not a number"
    if isinstance(v, int):
        return f"{show(v)} is too large for a number"
    if isinstance(v, list | dict | tuple):
        return f"{show(v)} is a {'list' if not isinstance(v, dict) else 'JSON object'}, not a number"
    if isinstance(v, str) and _AMBIGUOUS.match(v.strip()):
        return (
            f"{v.strip()!r} is ambiguous: a thousands separator or a decimal comma? "
            "(read with --thousands , or write the number without separators)"
        )
    return f"{show(v)} is not a number"


def _parse_number_text(s: str, thousands: str | None) -> float | None:
    if _NUMBER_TEXT.match(s):
        return float(s)
    if thousands is None:
        if re.match(_THOUSANDS_AUTO, s):
            return float(s.replace(",", ""))
    elif thousands and re.match(_thousands_pattern(thousands), s):
        t = s.replace(thousands, "")
        return float(t.replace(",", ".") if thousands == "." else t)
    return None


def _numeric_cells(
    cells: list[Any], tokens: frozenset[str], thousands: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
    """Cell by cell (records, Excel, odd Arrow types): values, bad, empty, why."""
    n = len(cells)
    out = np.full(n, np.nan)
    bad = np.zeros(n, dtype=bool)
    empty = np.zeros(n, dtype=bool)
    why: dict[int, str] = {}
    for i, v in enumerate(cells):
        if v is None or (isinstance(v, float) and v != v):  # None, or NaN from a DataFrame: missing
            empty[i] = True
            continue
        if isinstance(v, bool):
            pass
        elif isinstance(v, int | float):
            try:
                out[i] = float(v)
                continue
            except OverflowError:
                pass
        elif isinstance(v, str):
            t = v.strip()
            if t in tokens:
                empty[i] = True
                continue
            num = _parse_number_text(t, thousands)
            if num is not None:
                out[i] = num
                continue
        bad[i] = True
        why[i] = _why_not_number(v)
    return out, bad, empty, why


def _numeric(
    col: Any,
    n: int,
    owned: bool = False,
    tokens: frozenset[str] = frozenset(_NULLS),
    thousands: str | None = None,
    fill: float = np.nan,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[int, str]]:
    """(float64 values, ``fill`` where empty, NaN where bad; bad mask; empty mask or None; why per bad index).

    ``fill``: what an empty cell reads (a number column from Parquet or CSV gets it written into
    its null slots directly, as it is converted)."""
    values, bad, empty, why, filled = _numeric_cells_or_arrow(col, n, owned, tokens, thousands, fill)
    if not filled and not np.isnan(fill) and empty is not None and empty.any():
        values = _writable(values)
        values[empty] = fill
    return values, bad, empty, why


def _numeric_cells_or_arrow(
    col: Any, n: int, owned: bool, tokens: frozenset[str], thousands: str | None, fill: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[int, str], bool]:
    """:func:`_numeric`, and whether the empty cells hold ``fill`` already (else NaN).

    ``owned``: the Arrow column may be overwritten (its null slots). A column of a type that is
    not numbers or text (lists, structs, huge decimals …) is read cell by cell: each cell that is
    not a number is a problem of its row, never of the batch.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from . import _arrow

    bad = np.zeros(n, dtype=bool)
    if isinstance(col, pa.ChunkedArray | pa.Array):
        t = col.type
        try:
            if pa.types.is_dictionary(t):
                col = col.cast(t.value_type)
                t = col.type
            if pa.types.is_null(t):
                return np.full(n, fill), bad, np.ones(n, dtype=bool), {}, True
            if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
                if not pa.types.is_floating(t):
                    col = pc.cast(col, pa.float64(), safe=False) if pa.types.is_integer(t) else col.cast(pa.float64())
                    owned = True
                empty = None
                if col.null_count:
                    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
                    parts = [_arrow.nulls(c) for c in chunks if len(c)]
                    empty = np.concatenate(parts) if len(parts) > 1 else parts[0] if parts else np.zeros(0, dtype=bool)
                    # the nulls filled by the masks just made (not unpacked a second time)
                    return _arrow.numbers(col, fill=fill, inplace=owned, empty=parts), bad, empty, {}, True
                return _arrow.numbers(col, fill=fill, inplace=owned), bad, empty, {}, True
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                trimmed = pc.utf8_trim_whitespace(col)
                token = pc.is_in(trimmed, value_set=_arrow.strings(sorted(tokens)).cast(t))
                empty = _arrow.booleans(pc.or_kleene(token, pc.is_null(trimmed)), fill=True)
                matched = pc.match_substring_regex(trimmed, _NUMBER_RE)
                ok = _arrow.booleans(matched)
                nums = pc.if_else(matched, trimmed, _arrow.null_scalar(t)).cast(pa.float64())
                values = _arrow.numbers(nums)
                rest = ~ok & ~empty
                why: dict[int, str] = {}
                if rest.any():
                    idx = np.flatnonzero(rest)
                    cells = trimmed.take(_arrow.array(idx)).to_pylist()
                    v2, b2, _, w2 = _numeric_cells(cells, tokens, thousands)
                    values = _writable(values)
                    values[idx] = v2
                    bad[idx[b2]] = True
                    why = {int(idx[j]): w for j, w in w2.items()}
                return values, bad, empty, why, False
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError, ValueError):
            pass
        cells = col.to_pylist()
    elif isinstance(col, list):
        cells = col
        if n and all(type(v) is float for v in col[: min(n, 64)]):
            try:
                arr = np.asarray(col, dtype=np.float64)
                return arr, bad, np.isnan(arr) if np.isnan(arr).any() else None, {}, False
            except (TypeError, ValueError):
                pass
    else:
        arr = np.asarray(col)
        if arr.dtype.kind in "fiub":
            if arr.dtype.kind == "b":
                cells = arr.tolist()
            else:
                values = arr.astype(np.float64)
                nan = np.isnan(values)
                return values, bad, nan if nan.any() else None, {}, False
        else:
            cells = arr.astype(object).tolist()
    values, bad, empty_mask, why = _numeric_cells(cells, tokens, thousands)
    return values, bad, empty_mask, why, False


_NONFINITE = {"nan": "nan is not a finite number", "inf": "inf is not a finite number"}


def _tiny_numeric(
    cells: list[Any], spec: Any, default: float | None, tokens: frozenset[str], thousands: str | None
) -> tuple[list[float], list[int], list[tuple[list[int], list[str]]]]:
    """A few cells of a number input (TINY_ROWS), in plain Python: (values, the empty cells, the
    problems as (rows, messages) per check). What :func:`prepare` does to a list column with
    numpy, cell by cell and in its order: not a number, not finite, not whole, below the minimum,
    above the maximum; a cell with a problem reads NaN, an empty cell NaN (the caller fills it)."""
    nan = float("nan")
    values: list[float] = []
    empty: list[int] = []
    bad: list[tuple[int, str]] = []
    for i, v in enumerate(cells):
        t = type(v)
        if t is float:
            if v == v:
                values.append(v)
            else:  # NaN (a DataFrame's missing): empty
                values.append(nan)
                empty.append(i)
            continue
        if v is None:
            values.append(nan)
            empty.append(i)
            continue
        if t is int:
            try:
                values.append(float(v))
                continue
            except OverflowError:
                pass
        got, b, e, why = _numeric_cells([v], tokens, thousands)  # any other cell: the general rule
        values.append(float(got[0]))
        if e[0]:
            empty.append(i)
        elif b[0]:
            bad.append((i, why[0]))
    lo, hi, whole = spec.min, spec.max, spec.type == "integer"
    skip = set(empty)
    if not bad and all(  # the usual case, in one pass: finite (x - x is NaN for NaN and ±inf only),
        i in skip  # whole where it must be, within the bounds
        or not (
            x - x != 0 or (whole and not x.is_integer()) or (lo is not None and x < lo) or (hi is not None and x > hi)
        )
        for i, x in enumerate(values)
    ):
        return values, empty, []
    flags: list[tuple[list[int], list[str]]] = []
    if bad:
        flags.append(([i for i, _ in bad], [w for _, w in bad]))
        skip.update(i for i, _ in bad)
    checks: list[tuple[Any, Any]] = [
        (lambda x: x - x != 0, lambda x: _NONFINITE.get(repr(x), "-inf is not a finite number"))
    ]
    if whole:
        checks.append((lambda x: not x.is_integer(), lambda x: f"{x!r} is not a whole number"))
    if lo is not None:
        checks.append((lambda x: x < lo, lambda x: f"{x:g} is below the minimum {lo:g}"))
    if hi is not None:
        checks.append((lambda x: x > hi, lambda x: f"{x:g} is above the maximum {hi:g}"))
    for test, say in checks:
        hit = [i for i, x in enumerate(values) if i not in skip and test(x)]
        if hit:
            flags.append((hit, [say(values[i]) for i in hit]))
            for i in hit:
                values[i] = nan
            skip.update(hit)
    return values, empty, flags


def _numbers(col: Any, n: int, owned: bool = False, fill: float = np.nan) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with ``fill`` for missing, bool mask of cells that are not numbers)."""
    values, bad, _, _ = _numeric(col, n, owned, fill=fill)
    return values, bad


def _text(col: Any, n: int) -> tuple[Any, dict[int, str]]:
    """A column as a pyarrow string array (null for missing) and the cells that are not text.

    Whole floats read as their integer text (``3011.0`` → ``3011``); lists, objects and numbers
    too large to be exact are problems of their row.
    """
    if type(col) is list and 0 < n <= TINY_ROWS:
        cells = _tiny_text(col)
        if cells is not None:
            return cells, {}
    import pyarrow as pa

    try:
        return _text_arrow(col, n), {}
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError, ValueError, TypeError):
        pass
    from .formats import BadCell, show

    cells = col.to_pylist() if hasattr(col, "to_pylist") else list(np.asarray(col, dtype=object).tolist())
    out: list[str | None] = []
    why: dict[int, str] = {}
    for i, v in enumerate(cells):
        if v is None or (isinstance(v, float) and v != v):
            out.append(None)
        elif isinstance(v, str):
            out.append(v)
        elif isinstance(v, bool) or isinstance(v, BadCell | list | dict | tuple | bytes):
            out.append(None)
            why[i] = v.why if isinstance(v, BadCell) else f"{show(v)} is not text"
        elif isinstance(v, float) and v.is_integer():
            if abs(v) >= 2**53:
                out.append(None)
                why[i] = f"{v!r} is a number too large to be an exact code (did a spreadsheet turn it into a number?)"
            else:
                out.append(str(int(v)))
        elif isinstance(v, int) and len(str(v)) > 400:
            out.append(None)
            why[i] = f"{show(v)} is too long"
        else:
            out.append(str(v))
    return pa.array(out, type=pa.string()), why


def _tiny_text(cells: list[Any]) -> list[str | None] | None:
    """A few cells (TINY_ROWS) as :func:`_text` reads them, as a Python list (None for missing), or
    None when a cell is one that only the general path words (a bool, a list, a fraction, a number
    too large to be an exact code …): text as given, integers and whole floats as integer text."""
    out: list[str | None] = []
    for v in cells:
        t = type(v)
        if v is None or t is str:
            out.append(v)
        elif t is int and -(2**53) < v < 2**53:
            out.append(str(v))
        elif t is float and v != v:
            out.append(None)
        elif t is float and v.is_integer() and abs(v) < 2**53:
            out.append(str(int(v)))
        else:
            return None
    return out


def _tiny_category(cells: list[str | None], sort: bool, missing: Iterable[str]) -> Category:
    """:func:`_category_from_arrow` for a few cells as a Python list: labels trimmed (str.strip
    trims the characters Arrow's utf8_trim_whitespace does), empty text and missing-value tokens
    missing (-1), labels in code point order when ``sort``, else in the order first met."""
    tokens = set(missing)
    pos: dict[str, int] = {}
    codes: list[int] = []
    for v in cells:
        if v is None:
            codes.append(-1)
            continue
        t = v.strip()
        if not t or t in tokens:
            codes.append(-1)
            continue
        k = pos.get(t)
        if k is None:
            k = pos[t] = len(pos)
        codes.append(k)
    labels = list(pos)
    if sort and len(labels) > 1:
        ordered = sorted(labels)
        if ordered != labels:
            rank = [ordered.index(lab) for lab in labels] + [-1]
            codes = [rank[c] for c in codes]
            labels = ordered
    return Category(np.array(codes, dtype=np.int32), labels)


def _text_arrow(col: Any, n: int) -> Any:
    """A column as a pyarrow string array (null for missing); whole floats as their integer text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if col is None:
        return pa.nulls(n, type=pa.string())
    if not isinstance(col, pa.ChunkedArray | pa.Array):
        if isinstance(col, list):
            try:
                arr = pa.array(col)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                raise ValueError("mixed cells") from None
            if not (
                pa.types.is_string(arr.type)
                or pa.types.is_integer(arr.type)
                or pa.types.is_floating(arr.type)
                or pa.types.is_null(arr.type)
            ):
                raise ValueError("cells that are not text")
            return _text_arrow(arr, n)
        arr = np.asarray(col)
        if arr.dtype.kind in "iufUS":  # numbers and numpy text convert in Arrow, no Python loop
            return _text_arrow(pa.array(arr), n)
        try:  # an object array of str/None: also one call
            return _text_arrow(pa.array(arr, type=pa.string()), n)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # mixed types (e.g. 3011 and "0610"): convert cell by cell
        values: list[str | None] = []
        for v in arr.astype(object).tolist():
            if v is None or (isinstance(v, float) and np.isnan(v)):
                values.append(None)
            elif isinstance(v, float) and v.is_integer():
                values.append(str(int(v)))
            elif isinstance(v, str | int | float):
                values.append(str(v))
            else:
                raise ValueError("cells that are not text")
        col = pa.array(values, type=pa.string())
    t = col.type
    if pa.types.is_floating(t):
        from ._arrow import null_scalar, numbers

        f = numbers(col)
        with np.errstate(invalid="ignore"):
            if np.any(np.abs(f[~np.isnan(f)]) >= 2**53):
                raise ValueError("numbers too large to be exact codes")
        if np.all(np.isnan(f) | (f == np.round(f))):
            as_int = col.cast(pa.int64(), safe=False)
            nan = pc.is_nan(col)
            col = pc.if_else(nan, null_scalar(pa.int64()), as_int) if np.isnan(f).any() else as_int
    if pa.types.is_dictionary(t):
        if pa.types.is_string(t.value_type):
            return col  # read as a dictionary from Parquet: encoded already
        col = col.cast(t.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_null(col.type)):
            raise ValueError("cells that are not text")
        col = col.cast(pa.string())
    return col


def _category_from_arrow(text: Any, sort: bool = True, missing: Iterable[str] = ()) -> Category:
    """Dictionary-encode in Arrow (no per-row Python), then trim only the distinct labels.

    ``text`` is a string column, or a dictionary column as read from Parquet (its dictionary is
    used as is). Surrounding spaces are removed and empty text is missing (-1); labels are
    sorted unless ``sort`` is false (firm ids: many labels, only equality matters, and they stay
    an Arrow array until someone asks for them as Python strings).
    """
    if type(text) is list:  # a few cells read by _tiny_text
        return _tiny_category(text, sort, missing)
    import pyarrow as pa
    import pyarrow.compute as pc

    from . import _arrow

    if not isinstance(text, pa.ChunkedArray):
        text = pa.chunked_array([text])
    if len(text) == 0:
        return Category(np.zeros(0, dtype=np.int32), [])
    if not pa.types.is_dictionary(text.type):
        text = pa.chunked_array([text.combine_chunks().dictionary_encode()])
    text = text.unify_dictionaries()  # one shared dictionary (Parquet has one per row group)
    chunks = [c for c in text.chunks if len(c)]
    blank = _arrow.text_scalar("")
    given = chunks[0].dictionary
    dictionary = pc.fill_null(given, blank) if given.null_count else given
    parts = [_arrow.numbers(c.indices, np.int32, -1) for c in chunks]  # views when there are no nulls
    idx = parts[0] if len(parts) == 1 else np.concatenate(parts)
    # Everything below works on the distinct labels: old code → new code, composed into one
    # table and applied to the rows in a single gather (none at all when nothing changes).
    mapping = np.arange(len(dictionary), dtype=np.int32)
    changed = False
    trimmed = pc.utf8_trim_whitespace(dictionary) if _arrow.may_have_edge_space(dictionary) else dictionary
    tokens = sorted(set(missing) - {""})
    no_blank = False  # known to hold no empty label (then not searched for one below)
    if tokens and len(trimmed):  # a label longer than every token (firm ids) cannot be one: no lookup
        shortest = pc.min(pc.binary_length(trimmed)).as_py()
        no_blank = shortest is not None and shortest > 0
        if shortest is not None and shortest > max(len(t.encode("utf-8")) for t in tokens):
            tokens = []
    if tokens:  # missing-value tokens ('NA', '-', '无' …) are missing: blank, then dropped below
        is_token = pc.is_in(trimmed, value_set=_arrow.strings(tokens).cast(trimmed.type))
        if pc.any(is_token).as_py():
            trimmed = pc.if_else(is_token, blank.cast(trimmed.type), trimmed)
            no_blank = False
    # Re-encoded when labels differ only by spaces, when the dictionary holds a null, or when a
    # (small) dictionary repeats a value; a large one (firm ids) is taken as distinct: every
    # dictionary this engine reads or builds is, and checking half a million labels costs 0.1 s.
    repeats = len(dictionary) <= 65_536 and len(pc.unique(dictionary)) != len(dictionary)
    if given.null_count or repeats or (trimmed is not dictionary and not trimmed.equals(dictionary)):
        enc = trimmed.dictionary_encode()
        mapping = _arrow.numbers(enc.indices, np.int32)
        dictionary = enc.dictionary
        changed = True
    if sort and len(dictionary):  # code point order (UTF-8 bytes sort the same way)
        order = _arrow.numbers(pc.array_sort_indices(dictionary), np.int64)
        rank = np.empty(len(order), dtype=np.int32)
        rank[order] = np.arange(len(order), dtype=np.int32)
        mapping = rank[mapping]
        dictionary = dictionary.take(_arrow.array(order))
        changed = changed or bool(np.any(order != np.arange(len(order))))
    empty = -1 if no_blank else pc.index(dictionary, blank).as_py()
    if empty >= 0:
        mapping = np.where(mapping == empty, -1, mapping - (mapping > empty)).astype(np.int32)
        dictionary = pc.filter(dictionary, pc.not_equal(dictionary, blank))
        changed = True
    if not changed:
        codes = idx
    else:  # code -1 (missing) reads the appended -1
        codes = np.append(mapping, np.int32(-1))[idx]
    return Category(codes, dictionary.to_pylist() if sort else dictionary)


def _tiny_defaults(n: int, given: list[tuple[str, np.ndarray | None]]) -> Category | None:
    """:func:`_encode_defaults` for a few rows, in plain Python: each row's key is the words of 62
    mask bits the general path sorts by (mask j is bit j % 62 of word j // 62), the labels are in
    key order, the row without a default reads -1."""
    items: list[tuple[str, Any]] = []
    bits: list[list[bool]] = []
    for lab, m in given:
        if m is None:
            items.append((lab, None))
        else:
            row = np.asarray(m, dtype=bool).tolist()
            if any(row):
                items.append((lab, row))
                bits.append(row)
    if not items:
        return None
    if not bits:
        return Category(np.zeros(n, dtype=np.int32), ["; ".join(lab for lab, _ in items)])
    keys = []
    for i in range(n):
        keys.append(
            tuple(
                sum(1 << j for j, m in enumerate(bits[start : start + 62]) if m[i]) for start in range(0, len(bits), 62)
            )
        )
    labels: list[str] = []
    code_of: dict[tuple[int, ...], int] = {}
    for key in sorted(set(keys)):
        parts, j = [], 0
        for lab, mask in items:
            if mask is None:
                parts.append(lab)
            else:
                if (key[j // 62] >> (j % 62)) & 1:
                    parts.append(lab)
                j += 1
        label = "; ".join(parts)
        code_of[key] = len(labels) if label else -1
        if label:
            labels.append(label)
    return Category(np.array([code_of[k] for k in keys], dtype=np.int32), labels)


def _encode_defaults(n: int, items: list[tuple[str, np.ndarray | None]]) -> Category | None:
    """Per row, '; '-joined labels of the inputs that took their default (mask None = every row)."""
    if 0 < n <= TINY_ROWS:
        return _tiny_defaults(n, items)
    items = [(lab, m) for lab, m in items if m is None or m.any()]
    if not items or n == 0:
        return None
    masked = [m for _, m in items if m is not None]
    if not masked:
        return Category(np.zeros(n, dtype=np.int32), ["; ".join(lab for lab, _ in items)])

    def label_of(row: list[int]) -> str:
        parts, j = [], 0
        for lab, mask in items:
            if mask is None:
                parts.append(lab)
            else:
                if (row[j // 62] >> (j % 62)) & 1:
                    parts.append(lab)
                j += 1
        return "; ".join(parts)

    if len(masked) <= 20:  # O(n): a narrow key per row, the (at most 2^20) keys met marked in a table
        dt: Any = np.uint16 if len(masked) <= 16 else np.uint32
        key: np.ndarray = np.zeros(n, dtype=dt)
        for m in reversed(masked):  # bit j: masked[j]; in place, no temporary per mask
            np.left_shift(key, 1, out=key)
            np.bitwise_or(key, np.asarray(m, dtype=bool), out=key)
        present = np.zeros(1 << len(masked), dtype=bool)
        present[key] = True
        labels = [label_of([k]) for k in np.flatnonzero(present).tolist()]
        lookup = np.full(1 << len(masked), -1, dtype=np.int32)  # key 0 with no column absent: -1 (empty)
        kept = [k for k, lab in zip(np.flatnonzero(present).tolist(), labels, strict=True) if lab]
        lookup[kept] = np.arange(len(kept), dtype=np.int32)
        return Category(np.take(lookup, key), [lab for lab in labels if lab])
    words = []
    for start in range(0, len(masked), 62):
        key64 = np.zeros(n, dtype=np.int64)
        for j, m in enumerate(masked[start : start + 62]):
            np.add(key64, np.int64(1) << j, out=key64, where=m)  # no temporary per mask
        words.append(key64)
    uniq: Any
    inverse: Any
    if len(words) == 1:
        uniq, inverse = np.unique(words[0], return_inverse=True)
        uniq = uniq[:, None]
    else:
        uniq, inverse = np.unique(np.stack(words, axis=1), axis=0, return_inverse=True)
    labels = [label_of(row) for row in uniq.tolist()]
    codes = np.asarray(inverse, dtype=np.int32).reshape(-1)
    if "" in labels:  # rows without a default read -1 (empty)
        e = labels.index("")
        codes = np.where(codes == e, -1, codes - (codes > e)).astype(np.int32)
        labels.pop(e)
    return Category(codes, labels)


_CONTRACT_NAMES: dict[int, tuple[Any, int, tuple[frozenset[str], list[str], list[str]]]] = {}


def _contract_names(inputs: Mapping[str, Any]) -> tuple[frozenset[str], list[str], list[str]]:
    """(the known column names, the inputs whose column must be present, the same for a file — with
    the ``absent: error`` inputs), once per inputs object (a plan's; kept while it lives here)."""
    hit = _CONTRACT_NAMES.get(id(inputs))
    if hit is not None and hit[0] is inputs and hit[1] == len(inputs):
        return hit[2]
    known = frozenset(inputs) | frozenset(CANONICAL_COLUMNS)
    must = [name for name, spec in inputs.items() if spec.required]
    in_files = [name for name, spec in inputs.items() if spec.required or getattr(spec, "absent", "default") == "error"]
    if len(_CONTRACT_NAMES) >= 64:
        _CONTRACT_NAMES.clear()
    _CONTRACT_NAMES[id(inputs)] = (inputs, len(inputs), (known, must, in_files))
    return known, must, in_files


_CONSTANTS: dict[tuple[str, int], np.ndarray] = {}


def _constant(value: float, n: int) -> np.ndarray:
    """``np.broadcast_to(np.float64(value), (n,))`` (read-only), shared for TINY_ROWS rows at most."""
    if n > TINY_ROWS:
        return np.broadcast_to(np.float64(value), (n,))
    key = (float(value).hex(), n)  # hex: NaN equals itself, -0.0 is not 0.0
    got = _CONSTANTS.get(key)
    if got is None:
        if len(_CONSTANTS) >= 1024:
            _CONSTANTS.clear()
        got = _CONSTANTS[key] = np.broadcast_to(np.float64(value), (n,))
    return got


def prepare(
    raw: RawTable, inputs: Mapping[str, Any], book: str = "the rulebook", rows: np.ndarray | None = None
) -> Batch:
    """Apply the rulebook's input declarations to ``raw``: types, defaults, ranges, required values.

    Every default taken is recorded per row (``Batch.defaults``: ``input (column absent)`` or
    ``input (cell empty)``); a missing-value token is missing, never 0. ``rows``: each row's
    0-based position in the whole input when ``raw`` is one partition of it (ruleengine.scale), so
    that issues and duplicate messages name the row in the whole input.
    """
    from .formats import ReadOptions

    n = raw.n
    partition_rows = rows
    issues: list[DataIssue] = list(raw.issues)
    row_issues: dict[int, list[str]] = {}
    invalid = np.zeros(n, dtype=bool)
    src = raw.source
    rows = raw.rows() if partition_rows is None else np.asarray(partition_rows, dtype=np.int64) + 1
    opts = raw.options if raw.options is not None else ReadOptions()
    tokens = frozenset(opts.missing)
    cmap = raw.mapping

    def flag(idx: np.ndarray, column: str | None, messages: list[str] | str, fatal: bool = True) -> None:
        """One issue per index of ``idx`` (one message each, or one for all), built per column: the
        rows and messages as lists, the issues made by map(), the rows marked invalid at once."""
        at = idx.tolist()
        if not at:
            return
        msgs = [messages] * len(at) if isinstance(messages, str) else messages
        issues.extend(map(DataIssue, repeat(src), rows[idx].tolist(), repeat(column), msgs, repeat(fatal)))
        texts = [f"{column}: {m}" for m in msgs] if column else msgs
        get = row_issues.get
        for i, text in zip(at, texts, strict=True):
            have = get(i)
            if have is None:
                row_issues[i] = [text]
            else:
                have.append(text)
        if fatal:
            invalid[idx] = True

    for i, column, msg in raw.row_problems:
        flag(np.asarray([i]), column, msg)

    known, must, must_in_files = _contract_names(inputs)
    close: dict[str, str] = {}  # input → the unknown header that looks like it
    for name in raw.names:
        if name in known or is_provenance_column(name, known):
            continue
        import difflib

        near = difflib.get_close_matches(name, sorted(inputs), n=1, cutoff=TYPO_CUTOFF)
        if near:  # a near miss of an input: an error (its column would otherwise read as absent)
            close[near[0]] = name
            continue
        hint = did_you_mean(name, known)
        if hint:
            issues.append(DataIssue(src, None, name, f"unknown column{hint}; it is ignored", fatal=False))
    absent_error = [name for name in (must if raw.source == "<records>" else must_in_files) if name not in raw.columns]
    if absent_error or close:
        lines = []
        if absent_error:
            lines.append(
                f"{src}: required column{'s' if len(absent_error) > 1 else ''} "
                f"{', '.join(absent_error)} missing (needed by {book})"
            )
        for target, header in close.items():
            lines.append(
                f"{src}: header: unknown column '{header}' (did you mean '{target}'?): rename it, or map it "
                "in a column mapping file (--mapping)"
            )
        raise DataError("\n".join(lines))
    if cmap is not None:
        for rule in cmap.columns.values():
            spec = inputs.get(rule.input)
            if rule.input not in known:
                raise DataError(
                    f"{rule.where}: '{rule.input}' is not an input of {book} nor a canonical column"
                    f"{did_you_mean(rule.input, known)}"
                )
            if spec is not None and rule.unit is not None and rule.input in raw.columns:
                from ..rulebook.units import Unit

                if spec.unit is None or Unit.parse(rule.unit) != spec.unit:
                    raise DataError(
                        f"{rule.where}: the conversion gives {rule.unit}, but {rule.input} is in {spec.unit} ({book})"
                    )
            if rule.factor != 1.0 and rule.input in raw.columns:
                issues.append(DataIssue(src, None, rule.input, f"read from '{rule.header}' {rule.note}", fatal=False))
    factors = {r.input: r.factor for r in cmap.columns.values()} if cmap is not None else {}

    columns: dict[str, Any] = {}
    defaulted: list[tuple[str, np.ndarray | None]] = []
    firm_codes = np.full(n, -1, dtype=np.int32)
    for name, spec in inputs.items():
        col = raw.columns.pop(name, None)  # consumed: its Arrow buffers can go once converted
        if spec.type in ("number", "integer"):
            default = None if spec.required or spec.default is None else float(spec.default)
            if col is None:  # an absent column: the default where declared (recorded), else all missing
                if default is not None:
                    defaulted.append((f"{name} (column absent)", None))
                columns[name] = _constant(np.nan if default is None else default, n)
                continue
            if _col_is_empty(col) and default is not None:  # every cell empty: one repeated default
                defaulted.append((f"{name} (cell empty)", None))
                columns[name] = np.broadcast_to(np.float64(default), (n,))
                continue
            factor = factors.get(name, 1.0)
            if type(col) is list and 0 < n <= TINY_ROWS and factor == 1.0:  # a few cells: plain Python
                got, empty_at, problems = _tiny_numeric(col, spec, default, tokens, opts.thousands)
                for at, msgs in problems:
                    flag(np.asarray(at, dtype=np.int64), name, msgs)
                if empty_at:
                    gap = np.zeros(n, dtype=bool)
                    gap[empty_at] = True
                    if spec.required:
                        flag(np.flatnonzero(gap & ~invalid), name, "required value is missing")
                    elif default is not None:
                        for i in empty_at:
                            got[i] = default
                        defaulted.append((f"{name} (cell empty)", gap))
                columns[name] = np.array(got, dtype=np.float64)
                continue
            # empty cells read the default at once (written into the null slots as the column is
            # converted), so that a column with gaps can pass the one-pass check below (the
            # common case: optional fuels mostly empty); set back to NaN before the checks if not
            pre = np.nan if default is None or factor != 1.0 else default
            values, bad, empty, why = _numeric(col, n, raw.owned, tokens, opts.thousands, fill=pre)
            values = np.asarray(values, dtype=np.float64)
            if factor != 1.0:
                with np.errstate(over="ignore"):
                    values = values * factor
            any_bad = bool(bad.any())
            filled = default is not None and empty is not None and bool(empty.any())
            if filled and factor != 1.0:
                values = _writable(values)
                values[empty] = default
            with np.errstate(all="ignore"):
                # one pass without allocating: a finite sum means no NaN and no infinity, so the
                # cell-by-cell checks below are needed only for columns that hold either
                clean = n == 0 or bool(np.isfinite(np.add.reduce(values)))
            whole_by_type = hasattr(col, "type") and _is_integer_type(col.type)
            if clean and not any_bad:
                typed_ok = spec.type == "number" or whole_by_type  # integers: whole by their type
                if typed_ok and (spec.min is None or n == 0 or values.min() >= spec.min):
                    if spec.max is None or n == 0 or values.max() <= spec.max:
                        if filled:
                            defaulted.append((f"{name} (cell empty)", empty))
                        columns[name] = values
                        continue
            if filled:  # the checks below see the empty cells as empty (a default is not checked)
                values = _writable(values)
                values[empty] = np.nan
            if empty is None:
                empty = np.zeros(n, dtype=bool)
            if bad.any():
                idx = np.flatnonzero(bad)
                flag(idx, name, [why.get(int(i), "not a number") for i in idx])
            nonfinite = ~np.isfinite(values) & ~empty & ~bad
            if nonfinite.any():
                idx = np.flatnonzero(nonfinite)
                # nan, inf or -inf: three messages, picked per cell without formatting each
                said = np.array([f"{v!r} is not a finite number" for v in (np.nan, np.inf, -np.inf)], dtype=object)
                kind = np.where(np.isnan(values[idx]), 0, np.where(values[idx] > 0, 1, 2))
                flag(idx, name, said[kind].tolist())
                values = _writable(values)
                values[idx] = np.nan
            if spec.type == "integer" and not whole_by_type:
                with np.errstate(invalid="ignore"):
                    frac = ~np.isnan(values) & (values != np.round(values))
                if frac.any():
                    idx = np.flatnonzero(frac)
                    flag(idx, name, [f"{float(values[i])!r} is not a whole number" for i in idx])
                    values = _writable(values)
                    values[idx] = np.nan
            for bound, cmp, word in (
                (spec.min, np.less, "below the minimum"),
                (spec.max, np.greater, "above the maximum"),
            ):
                if bound is None:
                    continue
                with np.errstate(invalid="ignore"):
                    out = cmp(values, bound)
                if out.any():
                    idx = np.flatnonzero(out)
                    flag(idx, name, [f"{values[i]:g} is {word} {bound:g}" for i in idx])
                    values = _writable(values)
                    values[idx] = np.nan
            if empty.any():
                if spec.required:
                    flag(np.flatnonzero(empty & ~invalid), name, "required value is missing")
                elif default is not None:
                    values = _writable(values)
                    values[empty] = default
                    defaulted.append((f"{name} (cell empty)", empty))
            columns[name] = values
        else:
            if col is None:
                text, why = ([None] * n if 0 < n <= TINY_ROWS else _text_arrow(None, n)), {}
                if spec.default is not None:
                    defaulted.append((f"{name} (column absent)", None))
            else:
                text, why = _text(col, n)
            if why:
                idx = np.asarray(sorted(why), dtype=np.int64)
                flag(idx, name, [why[int(i)] for i in idx])
            cat = _category_from_arrow(text, sort=spec.type == "category", missing=tokens)
            if name == "industry" and cmap is not None and cmap.industry_names:
                cat = _rename_labels(cat, cmap.industry_names)
            if spec.default is not None:
                if col is not None:
                    gap = cat.codes < 0
                    if why:
                        gap[np.asarray(sorted(why), dtype=np.int64)] = False
                    if gap.any():
                        defaulted.append((f"{name} (cell empty)", gap))
                cat = _fill_category(cat, str(spec.default))
            elif spec.required and (cat.codes < 0).any():
                miss = (cat.codes < 0) & ~invalid
                if why:
                    miss[np.asarray(sorted(why), dtype=np.int64)] = False
                if miss.any():
                    flag(np.flatnonzero(miss), name, "required value is missing")
            if spec.values is not None:
                allowed = set(spec.values)
                bad_codes = [i for i, lab in enumerate(cat.labels) if lab not in allowed]
                if bad_codes:
                    outside = np.isin(cat.codes, bad_codes)
                    idx = np.flatnonzero(outside)
                    flag(
                        idx, name, [f"{cat.labels[cat.codes[i]]!r} is not one of {', '.join(spec.values)}" for i in idx]
                    )
                    keep = [lab for lab in cat.labels if lab in allowed]
                    pos = {lab: k for k, lab in enumerate(keep)}
                    remap = np.array([pos.get(lab, -1) for lab in cat.labels] + [-1], dtype=np.int32)
                    cat = Category(remap[cat.codes], keep)
            if name == "industry":
                cat = _check_industry(cat, flag, issues, src, rows)
            columns[name] = cat
            if name == "firm_id":
                firm_codes = cat.codes
                _check_firm_ids(cat, opts.id_check, flag, issues, src, rows)

    _check_duplicates(columns, firm_codes, n, rows, issues, row_issues, invalid, src)
    return Batch(columns, n, src, issues, row_issues, invalid, rows, firm_codes, _encode_defaults(n, defaulted))


def _rename_labels(cat: Category, names: Mapping[str, str]) -> Category:
    """Category labels renamed through ``names`` (industry names → codes), merged where they meet."""
    labels = [names.get(lab, lab) for lab in cat.labels]
    if labels == cat.labels:
        return cat
    merged = sorted(set(labels))
    pos = {lab: k for k, lab in enumerate(merged)}
    remap = np.array([pos[lab] for lab in labels] + [-1], dtype=np.int32)
    return Category(remap[cat.codes], merged)


def _check_industry(cat: Category, flag: Any, issues: list[DataIssue], src: str, rows: np.ndarray) -> Category:
    """Industry codes against GB/T 4754-2017.

    A code that lost its leading zero, a name, a code of another level or text that is no code
    at all leaves its rows unrated (with a did-you-mean). A well-formed 4-digit code that is not a
    2017 class (e.g. a GB/T 4754-2011 code such as 1310) is rated in its own peer group and
    reported once per code as a warning.
    """
    from .identifiers import industry_problem

    problems = {k: p for k, lab in enumerate(cat.labels) if (p := industry_problem(lab)) is not None}
    if not problems:
        return cat
    fatal = {k: p for k, p in problems.items() if not p.endswith("is not a GB/T 4754-2017 class code")}
    if fatal:
        idx = np.flatnonzero(np.isin(cat.codes, list(fatal)))
        flag(idx, "industry", [fatal[int(cat.codes[i])] for i in idx])
    for k, p in problems.items():
        if k in fatal:
            continue
        hit = np.flatnonzero(cat.codes == k)
        if len(hit):
            issues.append(
                DataIssue(
                    src, int(rows[hit[0]]), "industry",
                    f"{p} ({len(hit):,} rows; a GB/T 4754-2011 code?): kept as given",
                    fatal=False,
                )
            )  # fmt: skip
    return cat


def _check_firm_ids(cat: Category, mode: str, flag: Any, issues: list[DataIssue], src: str, rows: np.ndarray) -> None:
    """Unified social credit codes (GB 32100-2015) per row.

    ``error``: every firm id must be a valid code, a bad one leaves its row unrated. ``warn``:
    ids that look meant as credit codes (15-20 digits and capitals) are checked and each bad one
    is listed as a located warning, one line per distinct id; other ids are not credit codes and
    are not checked. ``off``: no check.
    """
    if mode == "off" or cat.label_count == 0:
        return
    from .identifiers import check_ids, check_ids_few, uscc_problem

    if not cat.labels_from_arrow and cat.label_count <= TINY_ROWS:  # a few ids: plain Python
        labels: Any = cat.labels
        invalid_ids = check_ids_few(labels, only_lookalikes=mode == "warn")
    else:
        labels = cat.arrow_labels()
        _, invalid_ids = check_ids(labels, only_lookalikes=mode == "warn")
    bad_codes = np.flatnonzero(invalid_ids)
    if not len(bad_codes):
        return
    is_bad = np.zeros(cat.label_count + 1, dtype=bool)
    is_bad[bad_codes] = True
    rows_bad = np.flatnonzero(is_bad[cat.codes])  # code -1 reads the trailing False
    if mode == "error":
        msgs: dict[int, str] = {}
        texts = []
        for i in rows_bad.tolist():
            c = int(cat.codes[i])
            if c not in msgs:
                msgs[c] = f"not a unified social credit code: {uscc_problem(cat.labels[c])}"
            texts.append(msgs[c])
        flag(rows_bad, "firm_id", texts)
        return
    shown: list[int] = []
    for i in rows_bad[:10_000].tolist():  # the first rows of the first three distinct bad ids
        if int(cat.codes[i]) not in [int(cat.codes[j]) for j in shown]:
            shown.append(i)
            if len(shown) == 3:
                break

    def label(i: int) -> str:
        got = labels[int(cat.codes[i])]
        return got if isinstance(got, str) else str(got.as_py())

    examples = "; ".join(f"row {int(rows[i])} {label(i)!r}: {uscc_problem(label(i))}" for i in shown)
    more = f"; and {len(bad_codes) - len(shown):,} more" if len(bad_codes) > len(shown) else ""
    issues.append(
        DataIssue(
            src,
            int(rows[shown[0]]),
            "firm_id",
            f"{len(bad_codes):,} firm id{'s' if len(bad_codes) > 1 else ''} ({len(rows_bad):,} rows) look like unified "
            f"social credit codes but fail the GB 32100-2015 check: {examples}{more} (rated; --id-check error leaves "
            "such rows unrated)",
            fatal=False,
        )
    )


def _check_duplicates(
    columns: dict[str, Any],
    firm_codes: np.ndarray,
    n: int,
    rows: np.ndarray,
    issues: list[DataIssue],
    row_issues: dict[int, list[str]],
    invalid: np.ndarray,
    src: str,
) -> None:
    """Duplicate (firm_id, year) by sorting once: O(n log n) time, one message per group.

    Every row of a group is unrated with a short reason naming the group's first row and size;
    the issue list gets one entry per group (its first rows), never one per pair.
    """
    if "firm_id" not in columns or "year" not in columns or n < 2:  # one row: no pair to repeat
        return
    years = columns["year"]
    ok = (firm_codes >= 0) & ~np.isnan(years)
    if not ok.any():
        return
    if ok.all():  # the usual case: every row has an id and a year
        y0, y1 = int(years.min()), int(years.max())  # a fraction is cut off, as before
        span = y1 - y0 + 1  # key = firm * span + year: in (firm, year) order, one key per pair
        if int(firm_codes.max()) * span + max(abs(y0), abs(y1)) < 2**31 - 1:  # int32: the usual case
            key: np.ndarray = firm_codes * np.int32(span)
            key += years.astype(np.int32)
        else:
            yr = years.astype(np.int64)
            key = firm_codes.astype(np.int64) * 100_000
            key += yr - yr.min()
    else:
        yr = np.where(ok, years, 0).astype(np.int64)
        key = firm_codes.astype(np.int64) * 100_000 + (yr - yr[ok].min())
        key = np.where(ok, key, -1 - np.arange(n))
    if n < 2 or bool(np.all(key[1:] > key[:-1])):  # rows in (firm, year) order, no repeat: no sort
        return
    order = np.argsort(key, kind="stable")
    sk = key[order]
    same = sk[1:] == sk[:-1]
    if not same.any():
        return
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    sizes = np.diff(np.append(starts, n))
    multi = np.flatnonzero(sizes > 1)
    ids = columns["firm_id"]
    for g in multi.tolist():
        members = order[starts[g] : starts[g] + sizes[g]]  # stable sort: file order within the group
        first = int(members[0])
        firm = ids.labels[firm_codes[first]] if isinstance(ids, Category) else str(ids[first])
        label = f"({firm[:60]}, {int(years[first])})"
        listed = ", ".join(str(int(rows[i])) for i in members[:10]) + (", …" if len(members) > 10 else "")
        count = len(members)
        issues.append(
            DataIssue(src, int(rows[first]), "firm_id", f"duplicate firm-year {label}: {count:,} rows ({listed})")
        )
        reason = f"firm_id: duplicate firm-year {label}, {count:,} rows, first on row {int(rows[first])}"
        for i in members.tolist():
            row_issues.setdefault(i, []).append(reason)
        invalid[members] = True


def text_values(col: Any, n: int) -> list[str]:
    """A column as read (Arrow, numpy or list) as ``n`` strings, '' for missing cells."""
    return [x or "" for x in _text_arrow(col, n).to_pylist()]


def number_values(col: Any, n: int) -> np.ndarray:
    """A column as read as ``n`` float64 values, NaN for missing or non-numeric cells."""
    return _numbers(col, n)[0]


# Columns that ``ruleengine acquire`` writes next to each energy input it produced: where the value
# came from and how complete it is (docs/acquire-meters.md, docs/acquire-invoices.md).
PROVENANCE_SUFFIXES = (
    "_source",
    "_coverage",
    "_policy",
    "_filled",
    "_issues",
    "_readings",
    "_meters",
    "_invoices",
    "_lines",
    "_months",
    "_crossval",
    "_other",
    "_resale",
)


def is_provenance_column(name: str, inputs: Iterable[str]) -> bool:
    """``electricity_mwh_coverage`` and the like: an input's provenance, not a misspelt input."""
    for suffix in PROVENANCE_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in inputs:
            return True
    return False


def preload() -> None:
    """Import what reading and checking a table imports lazily, and read the GB/T 4754 table: a
    worker process's set-up before it rates partitions (``scale.partition.warm_up``), so that its
    first partition does not pay for them."""
    from . import _arrow, identifiers, jurisdiction  # noqa: F401

    identifiers.classification()
