"""Data stage: firm-year panels from CSV, JSON/JSONL, Parquet, records or DataFrames → typed columns.

Reading is columnar (pyarrow); a clean numeric column is converted in one call, and only a column
that holds something other than numbers takes the slower path that finds each bad cell.  Nothing
bad passes silently: a non-numeric cell, a value out of range, a missing required value, a
duplicate (firm_id, year) and a column name that looks like a typo each become a
:class:`DataIssue` naming the file, row and column, and the row they hit is still carried through
(rated where the rulebook allows, ``unrated`` with the reason otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
CANONICAL_COLUMNS = DATA_COLUMNS + tuple(f"{f}_{s}" for f in _FUELS for s in ("ncv_gj_per_unit", "cc_tc_per_tj", "ox"))

_NULLS = ["", "NA", "N/A", "n/a", "null", "NULL", "None", "nan", "NaN"]
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


@dataclass
class RawTable:
    """Columns as read, before the rulebook's types are applied; ``row_offset`` maps index → row."""

    columns: dict[str, Any]  # name → pyarrow Array/ChunkedArray or numpy/list
    n: int
    source: str
    issues: list[DataIssue] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # every column in the source, read or not
    owned: bool = False  # the columns were read from a file here: nobody else holds their buffers

    def __post_init__(self) -> None:
        if not self.names:
            self.names = list(self.columns)


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


def _csv_header(path: Path) -> list[str]:
    import csv

    with path.open(encoding="utf-8-sig", newline="") as fh:
        try:
            return next(csv.reader(fh))
        except StopIteration:
            raise DataError(f"{path}: the file is empty (expected a header row)") from None


def read_file(path: str | Path, text_columns: Iterable[str] = (), only: Iterable[str] | None = None) -> RawTable:
    """Read CSV, JSON (list of objects), JSON Lines or Parquet by extension.

    ``only``: the columns worth converting (a rulebook's inputs); the others are listed in
    ``names`` (for the typo check) but not read, which keeps wide files cheap.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = p.suffix.lower()
    text_columns = set(text_columns)
    try:
        if suffix in (".csv", ".txt"):
            import pyarrow as pa
            import pyarrow.csv as pacsv

            header = _csv_header(p)
            dupes = sorted({h for h in header if header.count(h) > 1})
            if dupes:
                raise DataError(f"{path}: column {', '.join(dupes)} appears more than once in the header")
            types = {h: pa.string() for h in header if h in text_columns}
            wanted = [h for h in header if h in set(only)] if only is not None else None
            table = pacsv.read_csv(
                p,
                read_options=pacsv.ReadOptions(block_size=1 << 24),
                convert_options=pacsv.ConvertOptions(
                    column_types=types, null_values=_NULLS, strings_can_be_null=True, include_columns=wanted
                ),
            )
            return _read_table(table, path, header)
        if suffix == ".parquet":
            # ParquetFile, not read_table: read_table goes through pyarrow.dataset, which imports
            # pandas when it is installed (half a second of a cold start)
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pq.read_schema(p)
            names = schema.names
            wanted = [h for h in names if h in set(only)] if only is not None else None
            # text columns come back as dictionaries: Parquet stores them so, and re-encoding
            # a million strings is most of the work of reading them
            text = [
                f.name
                for f in schema
                if f.name in text_columns and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
            ]
            pf = pq.ParquetFile(p, read_dictionary=text or None, memory_map=True)
            if wanted is not None and not wanted:
                return RawTable({}, pf.metadata.num_rows, str(path), names=names)
            table = pf.read(columns=wanted)
            return _read_table(table, path, names)
        if suffix in (".json", ".jsonl", ".ndjson"):
            text = p.read_text(encoding="utf-8-sig")
            if not text.strip():
                raise DataError(f"{path}: the file is empty (expected a list of objects, one per firm-year)")
            if suffix == ".json" and text.lstrip().startswith("["):
                records = json.loads(text)
            else:
                records = []
                for i, line in enumerate(text.splitlines(), start=1):
                    if line.strip():
                        try:
                            records.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise DataError(f"{path}: line {i}: not valid JSON: {exc.msg}") from None
            return from_records(records, str(path))
    except DataError:
        raise
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}") from None
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    raise DataError(f"{path}: unknown data format '{suffix}' (use .csv, .json, .jsonl or .parquet)")


def _read_table(table: Any, path: str | Path, names: list[str]) -> RawTable:
    """A pyarrow Table this module read from ``path`` (so its buffers are ours to overwrite)."""
    return RawTable(
        {name: table.column(name) for name in table.column_names}, table.num_rows, str(path), names=names, owned=True
    )


def from_records(records: Any, source: str = "<records>") -> RawTable:
    if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
        raise DataError(f"{source}: expected a list of objects (one per firm-year)")
    names: dict[str, None] = {}
    for r in records:
        for k in r:
            names.setdefault(str(k), None)
    cols = {k: [r.get(k) for r in records] for k in names}
    return RawTable(cols, len(records), source)


def read_any(data: Any, text_columns: Iterable[str] = (), only: Iterable[str] | None = None) -> RawTable:
    """A path, a list of dicts, a dict of columns, a pandas/polars DataFrame or a pyarrow Table."""
    if isinstance(data, RawTable):
        return data
    if isinstance(data, str | Path):
        return read_file(data, text_columns, only)
    if isinstance(data, list):
        return from_records(data)
    if hasattr(data, "column_names") and hasattr(data, "num_rows"):  # pyarrow.Table
        return RawTable({n: data.column(n) for n in data.column_names}, data.num_rows, "<table>")
    if hasattr(data, "columns") and hasattr(data, "to_dict") and hasattr(data, "__len__"):  # DataFrame
        cols = {
            str(c): np.asarray(data[c].to_numpy() if hasattr(data[c], "to_numpy") else data[c]) for c in data.columns
        }
        return RawTable(cols, len(data), "<dataframe>")
    if isinstance(data, Mapping):
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise DataError("<columns>: columns have different lengths")
        return RawTable(dict(data), lengths.pop() if lengths else 0, "<columns>")
    raise DataError(
        f"cannot read data of type {type(data).__name__}: give a file path, a list of "
        "dicts, a dict of columns or a DataFrame"
    )


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


def _numbers(col: Any, n: int, owned: bool = False, fill: float = np.nan) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with NaN for missing, bool mask of cells that are not numbers).

    ``owned``: the Arrow column may be overwritten (its null slots) instead of copied. ``fill``:
    what an empty cell of a numeric Arrow column reads (the input's default; NaN otherwise)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    bad = np.zeros(n, dtype=bool)
    if isinstance(col, pa.ChunkedArray | pa.Array):
        t = col.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            from ._arrow import numbers

            return numbers(col, fill=fill, inplace=owned), bad
        if pa.types.is_boolean(t) or pa.types.is_null(t):
            if pa.types.is_null(t):
                return np.full(n, np.nan), bad
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            trimmed = pc.utf8_trim_whitespace(col)
            ok = pc.match_substring_regex(trimmed, _NUMBER_RE)
            from ._arrow import text_scalar

            empty = pc.equal(trimmed, text_scalar(""))
            good = pc.or_kleene(ok, empty)
            from ._arrow import booleans, null_scalar, numbers

            valid = booleans(pc.or_kleene(good, pc.is_null(good)))
            nums = pc.if_else(pc.and_kleene(ok, pc.is_valid(ok)), trimmed, null_scalar(pa.string())).cast(pa.float64())
            return numbers(nums), ~valid
        col = col.to_pylist()
    arr = np.asarray(col)
    if arr.dtype.kind in "fiu":
        return arr.astype(np.float64), bad
    out = np.full(n, np.nan)
    for i, v in enumerate(arr.tolist()):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        if isinstance(v, bool):
            bad[i] = True
        elif isinstance(v, int | float):
            out[i] = float(v)
        elif isinstance(v, str):
            s = v.strip()
            if s in _NULLS:
                continue
            try:
                out[i] = float(s)
                if not np.isfinite(out[i]):
                    raise ValueError
            except ValueError:
                out[i] = np.nan
                bad[i] = True
        else:
            bad[i] = True
    return out, bad


def _text_arrow(col: Any, n: int) -> Any:
    """A column as a pyarrow string array (null for missing); whole floats as their integer text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if col is None:
        return pa.nulls(n, type=pa.string())
    if not isinstance(col, pa.ChunkedArray | pa.Array):
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
            else:
                values.append(str(v))
        col = pa.array(values, type=pa.string())
    t = col.type
    if pa.types.is_floating(t):
        from ._arrow import null_scalar, numbers

        f = numbers(col)
        if np.all(np.isnan(f) | (f == np.round(f))):
            as_int = col.cast(pa.int64(), safe=False)
            nan = pc.is_nan(col)
            col = pc.if_else(nan, null_scalar(pa.int64()), as_int) if np.isnan(f).any() else as_int
    if pa.types.is_dictionary(t):
        if pa.types.is_string(t.value_type):
            return col  # read as a dictionary from Parquet: encoded already
        col = col.cast(t.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = col.cast(pa.string())
    return col


def _category_from_arrow(text: Any, sort: bool = True) -> Category:
    """Dictionary-encode in Arrow (no per-row Python), then trim only the distinct labels.

    ``text`` is a string column, or a dictionary column as read from Parquet (its dictionary is
    used as is). Surrounding spaces are removed and empty text is missing (-1); labels are
    sorted unless ``sort`` is false (firm ids: many labels, only equality matters, and they stay
    an Arrow array until someone asks for them as Python strings).
    """
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
    dictionary = pc.fill_null(given, blank)
    parts = [_arrow.numbers(c.indices, np.int32, -1) for c in chunks]  # views when there are no nulls
    idx = parts[0] if len(parts) == 1 else np.concatenate(parts)
    # Everything below works on the distinct labels: old code → new code, composed into one
    # table and applied to the rows in a single gather (none at all when nothing changes).
    mapping = np.arange(len(dictionary), dtype=np.int32)
    changed = False
    trimmed = pc.utf8_trim_whitespace(dictionary)
    # Re-encoded when labels differ only by spaces, when the dictionary holds a null, or when a
    # (small) dictionary repeats a value; a large one (firm ids) is taken as distinct: every
    # dictionary this engine reads or builds is, and checking half a million labels costs 0.1 s.
    repeats = len(dictionary) <= 65_536 and len(pc.unique(dictionary)) != len(dictionary)
    if given.null_count or repeats or not trimmed.equals(dictionary):
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
    empty = pc.index(dictionary, blank).as_py()
    if empty >= 0:
        mapping = np.where(mapping == empty, -1, mapping - (mapping > empty)).astype(np.int32)
        dictionary = pc.filter(dictionary, pc.not_equal(dictionary, blank))
        changed = True
    if not changed:
        codes = idx
    else:  # code -1 (missing) reads the appended -1
        codes = np.append(mapping, np.int32(-1))[idx]
    return Category(codes, dictionary.to_pylist() if sort else dictionary)


def prepare(
    raw: RawTable, inputs: Mapping[str, Any], book: str = "the rulebook", rows: np.ndarray | None = None
) -> Batch:
    """Apply the rulebook's input declarations to ``raw``: types, defaults, ranges, required values.

    ``rows``: each row's 0-based position in the whole input when ``raw`` is one partition of it
    (ruleengine.scale), so that issues and duplicate messages name the row in the whole input."""
    n = raw.n
    rowno = np.arange(1, n + 1) if rows is None else np.asarray(rows, dtype=np.int64) + 1
    issues: list[DataIssue] = list(raw.issues)
    row_issues: dict[int, list[str]] = {}
    invalid = np.zeros(n, dtype=bool)
    src = raw.source

    def flag(idx: np.ndarray, column: str | None, messages: list[str] | str, fatal: bool = True) -> None:
        for j, i in enumerate(idx.tolist()):
            msg = messages if isinstance(messages, str) else messages[j]
            issues.append(DataIssue(src, int(rowno[i]), column, msg, fatal))
            row_issues.setdefault(i, []).append(f"{column}: {msg}" if column else msg)
            if fatal:
                invalid[i] = True

    missing_required = [name for name, spec in inputs.items() if spec.required and name not in raw.columns]
    if missing_required:
        raise DataError(
            f"{src}: required column{'s' if len(missing_required) > 1 else ''} "
            f"{', '.join(missing_required)} missing (needed by {book})"
        )
    known = set(inputs) | set(CANONICAL_COLUMNS)
    for name in raw.names:
        if name not in known:
            hint = did_you_mean(name, known)
            if hint:
                issues.append(DataIssue(src, None, name, f"unknown column{hint}; it is ignored", fatal=False))

    columns: dict[str, Any] = {}
    firm_codes = np.full(n, -1, dtype=np.int32)
    for name, spec in inputs.items():
        col = raw.columns.pop(name, None)  # consumed: its Arrow buffers can go once converted
        if spec.type in ("number", "integer"):
            if col is None:  # an absent column is all-empty
                if spec.required:
                    values, bad = np.full(n, np.nan), np.zeros(n, dtype=bool)
                else:
                    fill = np.nan if spec.default is None else float(spec.default)
                    columns[name] = np.broadcast_to(np.float64(fill), (n,))  # read-only, no memory
                    continue
            else:
                default = np.nan if spec.required or spec.default is None else float(spec.default)
                if _col_is_empty(col) and not np.isnan(default):
                    columns[name] = np.broadcast_to(np.float64(default), (n,))  # all empty: the default
                    continue
                values, bad = _numbers(col, n, raw.owned, default)  # empty numeric cells read the default
                values = np.asarray(values, dtype=np.float64)
            with np.errstate(all="ignore"):
                # one pass without allocating: a finite sum means no NaN and no infinity, so the
                # cell-by-cell checks below are needed only for columns that hold either
                clean = n == 0 or bool(np.isfinite(np.add.reduce(values)))
            whole_by_type = col is not None and hasattr(col, "type") and _is_integer_type(col.type)
            if clean:
                typed_ok = spec.type == "number" or whole_by_type  # integers: whole by their type
                if typed_ok and (spec.min is None or n == 0 or values.min() >= spec.min):
                    if spec.max is None or n == 0 or values.max() <= spec.max:
                        columns[name] = values
                        continue
                absent = np.zeros(n, dtype=bool)
            else:
                absent = np.isnan(values) & ~bad  # not reported (as opposed to reported wrong)
            if bad.any():
                idx = np.flatnonzero(bad)
                shown = _to_numpy_object(col)[idx] if col is not None else []
                flag(idx, name, [f"{v!r} is not a number" for v in shown])
            nonfinite = ~np.isfinite(values) & ~np.isnan(values)
            if nonfinite.any():
                idx = np.flatnonzero(nonfinite)
                flag(idx, name, [f"{float(values[i])!r} is not a finite number" for i in idx])
                values = _writable(values)
                values[idx] = np.nan
            if spec.type == "integer" and not whole_by_type:
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
            if spec.required and absent.any():
                flag(np.flatnonzero(absent), name, "required value is missing")
            elif spec.default is not None and absent.any():
                values = _writable(values)
                values[absent] = float(spec.default)
            columns[name] = values
        else:
            cat = _category_from_arrow(_text_arrow(col, n), sort=spec.type == "category")
            if spec.default is not None:
                cat = _fill_category(cat, str(spec.default))
            elif spec.required and (cat.codes < 0).any():
                flag(np.flatnonzero(cat.codes < 0), name, "required value is missing")
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
                    remap = np.array(
                        [keep.index(lab) if lab in allowed else -1 for lab in cat.labels] + [-1], dtype=np.int32
                    )
                    cat = Category(remap[cat.codes], keep)
            columns[name] = cat
            if name == "firm_id":
                firm_codes = cat.codes

    # duplicate firm-years
    if "firm_id" in columns and "year" in columns and n:
        years = columns["year"]
        ok = (firm_codes >= 0) & ~np.isnan(years)
        key = firm_codes.astype(np.int64) * 10000 + np.where(ok, years, 0).astype(np.int64)
        key = np.where(ok, key, -1 - np.arange(n))
        order = np.argsort(key, kind="stable")
        sk = key[order]
        dup_sorted = np.zeros(n, dtype=bool)
        same = sk[1:] == sk[:-1]
        dup_sorted[1:] |= same
        dup_sorted[:-1] |= same
        if dup_sorted.any():
            idx_sorted = np.sort(order[dup_sorted])
            rows_of: dict[int, list[int]] = {}  # key -> its rows, in file order (linear, not pairwise)
            for i in idx_sorted.tolist():
                rows_of.setdefault(int(key[i]), []).append(i)
            msgs = []
            for i in idx_sorted.tolist():
                group = sorted(int(rowno[j]) for j in rows_of[int(key[i])] if j != i)
                msgs.append(
                    f"duplicate firm-year ({columns['firm_id'].labels[firm_codes[i]]}, {int(years[i])}): also on "
                    f"row {', '.join(map(str, group))}"
                )
            flag(idx_sorted, "firm_id", msgs)
    return Batch(columns, n, src, issues, row_issues, invalid, rowno, firm_codes)


def text_values(col: Any, n: int) -> list[str]:
    """A column as read (Arrow, numpy or list) as ``n`` strings, '' for missing cells."""
    return [x or "" for x in _text_arrow(col, n).to_pylist()]


def number_values(col: Any, n: int) -> np.ndarray:
    """A column as read as ``n`` float64 values, NaN for missing or non-numeric cells."""
    return _numbers(col, n)[0]
