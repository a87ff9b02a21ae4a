"""The results table: one row per firm-year, standard columns first, written as CSV/JSON/Parquet.

Output is deterministic: columns in a fixed order (standard columns, ratings, incentives, then the
rulebook's variables and benchmarks in declaration order), rows in input order, floats written in
shortest round-trip form, missing values as empty cells / JSON null.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.data import Batch, Category, DataIssue
from ..rulebook.plan import STANDARD_VARIABLES, Plan
from .benchmarks import BenchmarkTable
from .evaluator import Evaluation, Note, joined

CHUNK_ROWS = 262_144  # rows converted to Arrow and written at a time
TEXT_TABLE_ROWS = 32_768  # rows per Arrow table for the text writers (CSV, xlsx): whole strings per cell
TEXT_CHUNK_ROWS = 4_096  # rows turned into JSON text at a time (about 10 MB of text for 60 columns)
TINY_JSON_ROWS = 64  # results of at most this many rows are turned into JSON cell by cell (same text)
DICTIONARY_MAX_LABELS = 65_536  # text columns with more labels (firm ids) are written as plain strings


class Columns(MutableMapping[str, np.ndarray]):
    """Result columns in a fixed order. Text columns are kept as codes into labels (a
    :class:`Category`) and turned into string arrays only when read, so writing Parquet/CSV never
    builds a million Python strings for a column that holds five, or half a million firm ids that
    came from the file as an Arrow dictionary."""

    def __init__(self) -> None:
        self._plain: dict[str, np.ndarray] = {}
        self._encoded: dict[str, Category] = {}
        self._order: dict[str, None] = {}

    def set_encoded(self, name: str, codes: np.ndarray, labels: Any) -> None:
        """Column ``name`` reads labels[codes[i]]; code -1 (or len(labels)) reads ''.

        ``labels``: a list of str, or a pyarrow string array (kept as is until asked for).
        """
        self._plain.pop(name, None)
        self.set_category(name, Category(np.asarray(codes), list(labels) if isinstance(labels, tuple) else labels))

    def set_category(self, name: str, cat: Category) -> None:
        self._plain.pop(name, None)
        self._encoded[name] = cat
        self._order[name] = None

    def encoded(self, name: str) -> tuple[np.ndarray, list[str]] | None:
        cat = self._encoded.get(name)
        return None if cat is None else (cat.codes, cat.labels)

    def category(self, name: str) -> Category | None:
        return self._encoded.get(name)

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._plain:
            return self._plain[name]
        cat = self._encoded[name]
        lab = np.asarray([*cat.labels, ""], dtype=object)
        arr = lab[np.where(cat.codes < 0, len(cat.labels), cat.codes)]
        self._plain[name] = arr
        return arr

    def __contains__(self, name: object) -> bool:
        return name in self._order  # not Mapping's: that would decode a text column to answer

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self._encoded.pop(name, None)
        self._plain[name] = value
        self._order[name] = None

    def __delitem__(self, name: str) -> None:
        self._plain.pop(name, None)
        self._encoded.pop(name, None)
        del self._order[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)


class RowText:
    """A context column kept for a few rows only (``explain`` of one firm, issue #11.4): the text
    of each row of ``rows`` (their positions in the results). Indexing another row is an error,
    never a silent blank: the explanation must only read the explained firm's rows."""

    __slots__ = ("_at", "n")

    def __init__(self, rows: np.ndarray, values: list[str]):
        self._at = dict(zip(np.asarray(rows).tolist(), values, strict=True))
        self.n = len(self._at)

    def __getitem__(self, i: int) -> str:
        try:
            return self._at[int(i)]
        except KeyError:
            raise IndexError(f"context kept for {self.n} rows (the explained firm's); row {i} is not one") from None

    def __len__(self) -> int:
        return self.n

    def rows(self) -> list[int]:
        return sorted(self._at)


@dataclass
class Results:
    """Columns of equal length (float64 arrays, or object arrays of str) plus what was met on the way."""

    columns: Columns
    plan: Plan
    issues: list[DataIssue] = field(default_factory=list)
    tables: dict[str, BenchmarkTable] = field(default_factory=dict)
    batch: Batch | None = None
    evaluation: Evaluation | None = None
    # columns as read that the rulebook does not rate on (firm_name, city, size, an input's
    # acquisition provenance such as electricity_mwh_coverage), per row as text; set by
    # pipeline.rate_with_context for explanations, empty otherwise
    context: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["year"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def row(self, i: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self.columns:
            enc = self.columns.encoded(k)
            if enc is not None:
                code = int(enc[0][i])
                out[k] = enc[1][code] if 0 <= code < len(enc[1]) else ""
            else:
                out[k] = _py(self.columns[k][i])
        return out

    def rows(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self.row(i)

    def to_records(self) -> list[dict[str, Any]]:
        return list(self.rows())

    def notes(self, kind: str, i: int) -> tuple[Note, ...]:
        """The structured reasons (``kind='reasons'``) or fallbacks of row ``i``: each a
        :class:`~ruleengine.engine.evaluator.Note` (code, column, message)."""
        if self.evaluation is None:
            return ()
        codes, combos = self.evaluation.reasons if kind == "reasons" else self.evaluation.fallbacks
        code = int(codes[i])
        return combos[code] if code >= 0 else ()

    def find(self, firm_id: str, year: int | None = None) -> list[int]:
        ids = self.columns["firm_id"]
        hits = np.flatnonzero(ids == str(firm_id))
        if year is not None:
            hits = hits[self.columns["year"][hits] == year]
        return hits.tolist()

    def distribution(self, column: str = "rating") -> list[tuple[str, int]]:
        """Counts per level of a rating, best level first, then 'unrated'."""
        enc = self.columns.encoded(column)
        if enc is not None:  # count codes, not strings
            codes, labels = enc
            counts_arr = np.bincount(np.where(codes < 0, len(labels), codes), minlength=len(labels) + 1)
            counts = Counter({lab: int(c) for lab, c in zip([*labels, ""], counts_arr.tolist(), strict=True)})
        else:
            counts = Counter(self.columns[column].tolist())
        name = self.plan.primary if column == "rating" else column
        order = self.plan.ratings[name].best_first() if name in self.plan.ratings else sorted(k for k in counts if k)
        out = [(lv, counts.get(lv, 0)) for lv in order]
        if counts.get("", 0):
            out.append(("unrated", counts[""]))
        return out

    def fallback_counts(self) -> list[tuple[str, int]]:
        """Every kind of fallback the rated firm-years took, with how many took it: a benchmark's
        coarser peer group or placeholder ("industry_intensity: by industry_division",
        "industry_intensity: placeholder placeholder_industry_intensity"), a table's default key,
        a panel fallback, a recorded default formula, a firm without a division. Plan order."""
        ev = self.evaluation
        if ev is None:
            return []
        rated = ev.rated
        codes, combos = ev.fallbacks
        per_combo = np.bincount(codes[rated & (codes >= 0)], minlength=len(combos))
        counts: dict[str, int] = {}
        for combo, count in zip(combos, per_combo.tolist(), strict=True):
            if not count:
                continue
            for kind in dict.fromkeys(
                f"{n.column}: {n.code.replace('_', ' ')}" for n in combo if n.code != "benchmark_fallback"
            ):
                counts[kind] = counts.get(kind, 0) + count
        out = sorted(counts.items(), key=lambda kv: (self.plan.rank(kv[0].split(":", 1)[0]), kv[0]))
        bench: list[tuple[str, int]] = []
        for name, spec in self.plan.benchmarks.items():
            group = ev.aux.get(f"{name}_group")
            if group is None:
                continue
            level, levels = group
            used = np.bincount(np.asarray(level)[rated] + 1, minlength=len(levels) + 1)
            for li in range(1, len(levels)):
                if used[li + 1]:
                    what = f"by {levels[li]}"
                    if levels[li] == "fallback":
                        fixed = f"the fixed value {spec.fallback_value:g}" if spec.fallback_value is not None else ""
                        what = f"from {spec.fallback_parameter or fixed}" + (
                            " [placeholder]" if spec.placeholder else ""
                        )
                    bench.append((f"{name} {what}", int(used[li + 1])))
        return bench + out

    # -- writers -----------------------------------------------------------------------------
    def to_arrow(self, dictionary: bool = False, start: int = 0, stop: int | None = None) -> Any:
        """The results (rows ``start:stop``) as a pyarrow Table; ``dictionary=True`` keeps
        low-cardinality text columns dictionary-encoded."""
        import pyarrow as pa

        return pa.table(self._arrays(self._labels(), start, stop, dictionary))

    def _labels(self) -> dict[str, tuple[Any, np.ndarray | None]]:
        """Each text column's labels as an Arrow array of distinct values including '' (what a
        missing code reads), and the map from codes to it (None: code i is entry i, -1 the last).
        Built once per write, not once per chunk. Distinct matters: Arrow writes a Parquet
        dictionary page with uninitialised bytes in it when the dictionary repeats a value."""
        import pyarrow as pa

        from ..io._arrow import strings

        out: dict[str, tuple[Any, np.ndarray | None]] = {}
        for k in self.columns:
            cat = self.columns.category(k) if isinstance(self.columns, Columns) else None
            if cat is None:
                continue
            if cat.labels_from_arrow:  # an Arrow dictionary (firm ids): distinct, '' not among them
                labels = cat.arrow_labels()
                out[k] = (pa.concat_arrays([labels.cast(pa.string()), strings([""])]), None)
                continue
            seen: dict[str, int] = {}
            remap = np.array([seen.setdefault(lab, len(seen)) for lab in [*cat.labels, ""]], dtype=np.int32)
            identity = len(seen) == len(remap)
            out[k] = (strings(list(seen)), None if identity else remap)
        return out

    def _arrays(
        self, labels: dict[str, tuple[Any, np.ndarray | None]], start: int, stop: int | None, dictionary: bool | int
    ) -> dict[str, Any]:
        """Arrow arrays of rows ``start:stop``. Text columns are dictionary arrays when
        ``dictionary`` is True, or (an int) when they have at most that many labels."""
        import pyarrow as pa

        from ..io._arrow import array

        rows = slice(start, stop)
        arrays: dict[str, Any] = {}
        for k in self.columns:
            if k in labels:
                lab, remap = labels[k]
                part = self.columns.category(k).codes[rows]  # type: ignore[union-attr]
                last = len(lab) - 1 if remap is None else len(remap) - 1
                codes = np.where(part < 0, last, part)
                idx = array((codes if remap is None else remap[codes]).astype(np.int32, copy=False))
                keep = dictionary if isinstance(dictionary, bool) else len(lab) <= dictionary
                arrays[k] = pa.DictionaryArray.from_arrays(idx, lab) if keep else lab.take(idx)
                continue
            v = self.columns[k][rows]
            if v.dtype == object:
                arrays[k] = pa.array(v, type=pa.string())
            elif v.dtype.kind in "iu":
                arrays[k] = array(v)
            else:
                arrays[k] = array(v, np.isnan(v))  # NaN → null
        return arrays

    def _chunks(self, dictionary: bool | int = False, rows: int | None = None) -> Iterator[Any]:
        """The results as Arrow tables of ``rows`` rows (default :data:`CHUNK_ROWS`): only one
        chunk is converted at a time."""
        import pyarrow as pa

        rows = rows or CHUNK_ROWS
        n = len(self)
        labels = self._labels()
        for start in range(0, max(n, 1), rows):
            yield pa.table(self._arrays(labels, start, min(start + rows, n), dictionary))

    def _chunks_ahead(self, dictionary: bool | int = False, rows: int | None = None) -> Iterator[Any]:
        """:meth:`_chunks`, with the next chunk converted in a second thread while the writer
        (which releases the GIL) compresses the current one. At most two chunks wait."""
        import queue
        import threading

        q: queue.Queue[Any] = queue.Queue(maxsize=2)
        done = object()
        stop = threading.Event()

        def produce() -> None:
            try:
                for table in self._chunks(dictionary, rows):
                    while not stop.is_set():
                        try:
                            q.put(table, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(done)
            except BaseException as exc:  # handed to the writing thread, raised there
                q.put(exc)

        worker = threading.Thread(target=produce, name="ruleengine-results", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()

    def write(self, path: str | Path) -> None:
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix == ".csv":
            self.write_csv(p)
        elif suffix == ".parquet":
            # One row group per chunk of CHUNK_ROWS rows, each in canonical form (see
            # canonical_row_group), so that any run that produces the same rows — this one, or
            # the chunked and distributed runners of ruleengine.scale — writes the same bytes.
            pwriter = None
            for table in self._chunks_ahead(dictionary=DICTIONARY_MAX_LABELS):
                table = canonical_row_group(table)
                if pwriter is None:
                    pwriter = parquet_writer(p, table.schema)
                pwriter.write_table(table, row_group_size=CHUNK_ROWS)
            if pwriter is not None:
                pwriter.close()
        elif suffix == ".xlsx":
            from ..io.xlsx import EXCEL_MAX_ROWS, write_xlsx

            if len(self) > EXCEL_MAX_ROWS - 1:  # refused before anything is written
                from ..errors import DataError

                raise DataError(
                    f"{path}: {len(self):,} result rows do not fit one Excel sheet (at most "
                    f"{EXCEL_MAX_ROWS - 1:,}); write .csv, .jsonl or .parquet"
                )
            write_xlsx(p, self._chunks_ahead(rows=min(TEXT_TABLE_ROWS, CHUNK_ROWS)))
        elif suffix in (".json", ".jsonl", ".ndjson"):
            with p.open("w", encoding="utf-8") as fh:
                if suffix == ".json":
                    self.write_json(fh)
                else:
                    self.write_jsonl(fh)
        else:
            from ..errors import DataError

            raise DataError(f"{path}: unknown output format '{suffix}' (use .csv, .json, .jsonl, .parquet or .xlsx)")

    def to_json(self) -> str:
        """The results as one JSON array (``json.dumps(records, indent=1)``); for big results
        use :meth:`write_json`, which writes the same text chunk by chunk."""
        import io

        buf = io.StringIO()
        self.write_json(buf)
        return buf.getvalue()

    def write_json(self, fh: Any) -> None:
        """Write the results to the text stream ``fh`` as a JSON array of one object per row,
        exactly ``json.dumps(self.to_records(), ensure_ascii=False, indent=1) + "\\n"``, but
        :data:`TEXT_CHUNK_ROWS` rows at a time: memory is one chunk's text, not a dict per row."""
        n = len(self)
        if n == 0:
            fh.write("[]\n")
            return
        fh.write("[\n")
        template = _json_template(tuple(self.columns), " {\n", "  ", ",\n", "\n }")
        first = True
        for values in self._json_values():
            if not first:
                fh.write(",\n")
            first = False
            fh.write(",\n".join(map(template.__mod__, values)))
        fh.write("\n]\n")

    def write_jsonl(self, fh: Any) -> None:
        """Write one JSON object per line (``json.dumps(row, ensure_ascii=False)``), chunk by chunk."""
        template = _json_template(tuple(self.columns), "{", "", ", ", "}\n")
        for values in self._json_values():
            fh.write("".join(map(template.__mod__, values)))

    def write_csv(self, fh: Any) -> None:
        """Write the results as CSV to the binary stream (or path) ``fh``, chunk by chunk: the
        same bytes as ``-o OUT.csv``."""
        import pyarrow.csv as pacsv

        writer = None  # the bytes do not depend on the table size
        for table in self._chunks_ahead(rows=min(TEXT_TABLE_ROWS, CHUNK_ROWS)):
            if writer is None:
                writer = pacsv.CSVWriter(fh, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()

    def _json_values(self) -> Iterator[Iterator[tuple[str, ...]]]:
        """Per chunk of :data:`TEXT_CHUNK_ROWS` rows: each row's cells as JSON text, in column
        order (what ``json.dumps`` writes for the value :meth:`row` gives). A text column's
        labels are encoded once; numbers are written column by column (``float.__repr__``, the
        shortest round-trip form ``json`` uses; NaN is null)."""
        n = len(self)
        if n <= TINY_JSON_ROWS:  # a firm or two (the service's one-firm rating): no per-column numpy
            yield self._json_values_tiny()
            return
        labels: dict[str, np.ndarray] = {}
        for k in self.columns:
            enc = self.columns.encoded(k)
            if enc is not None:
                labels[k] = np.asarray([*map(_jstr, enc[1]), '""'], dtype=object)
        for start in range(0, n, TEXT_CHUNK_ROWS):
            stop = min(start + TEXT_CHUNK_ROWS, n)
            cols: list[list[str]] = []
            for k in self.columns:
                if k in labels:
                    lab = labels[k]
                    codes = self.columns.encoded(k)[0][start:stop]  # type: ignore[index]
                    last = len(lab) - 1
                    cols.append(lab[np.where((codes < 0) | (codes >= last), last, codes)].tolist())
                else:
                    cols.append(_json_cells(self.columns[k][start:stop]))
            yield zip(*cols, strict=True)

    def _json_values_tiny(self) -> Iterator[tuple[str, ...]]:
        """:meth:`_json_values` of a few rows in one chunk, the same text: each cell written by
        itself (a label encoded only for the rows that read it, a number by ``float.__repr__``)
        instead of going through numpy per column, whose fixed cost is most of a one-row write."""
        cols: list[list[str]] = []
        columns = self.columns
        for k in columns:
            enc = columns.encoded(k)
            if enc is not None:
                codes, labels = enc
                m = len(labels)
                cols.append([_jstr(labels[c]) if 0 <= c < m else '""' for c in codes.tolist()])
                continue
            v = columns[k]
            if v.dtype.kind == "f":
                cols.append(
                    [
                        float.__repr__(x) if x - x == 0.0 else ("null" if x != x else _NON_FINITE[x])
                        for x in v.astype(np.float64, copy=False).tolist()
                    ]
                )
            else:
                cols.append(_json_cells(v))
        return zip(*cols, strict=True)


_UINT_IDS = (2, 4, 6, 8)  # Arrow type ids of uint8/16/32/64
PLAIN_TEXT = ("firm_id", "firm_name")  # identifiers: (nearly) one label per row, written as plain strings


def canonical_row_group(table: Any) -> Any:
    """A row group of results in canonical form, a function of its values alone: every text
    column except :data:`PLAIN_TEXT` as an Arrow dictionary (int32 indices) whose entries are the
    labels present in the row group, sorted by code point; :data:`PLAIN_TEXT` as plain strings.

    Parquet writes an Arrow dictionary as it is given, so this makes the bytes of a Parquet
    file independent of how the rows were computed (one batch, chunks, partitions)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = []
    for name, chunked in zip(table.column_names, table.columns, strict=True):
        t = chunked.type
        if not (pa.types.is_dictionary(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
            arrays.append(chunked)  # numbers as they are: no copy
            continue
        col = chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()
        text = pa.types.is_string(t) or pa.types.is_large_string(t)
        if pa.types.is_dictionary(t):
            labels = col.dictionary
            distinct = len(labels) <= DICTIONARY_MAX_LABELS and len(pc.unique(labels)) == len(labels)
            if name not in PLAIN_TEXT and distinct:  # the used labels, sorted: no string per row touched
                arrays.append(_sorted_dictionary(_ints(col.indices, native=True), labels, col))
                continue
            col = col.cast(t.value_type)
            text = True
        if text and name not in PLAIN_TEXT:
            enc = pc.dictionary_encode(col)
            arrays.append(_sorted_dictionary(_ints(enc.indices), enc.dictionary))
        elif text:
            arrays.append(col.cast(pa.string()))
        else:
            arrays.append(col)
    return pa.table(arrays, names=table.column_names)


def _sorted_dictionary(idx: np.ndarray, dictionary: Any, given: Any = None) -> Any:
    """Indices (-1: null) into distinct labels → a dictionary array of the used labels, sorted.
    ``given``: the dictionary array ``idx`` came from, returned as it is when it is canonical
    already (every label used, sorted, int32 indices: the usual case, no copy)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..io._arrow import array

    nulls = bool(given.null_count) if given is not None else bool(len(idx)) and int(idx.min()) < 0
    counts = np.bincount(idx[idx >= 0] if nulls else idx, minlength=len(dictionary))
    used = np.flatnonzero(counts)
    labels = dictionary.take(array(used.astype(np.int64))).cast(pa.string())
    order = _ints(pc.array_sort_indices(labels))
    if (
        given is not None
        and len(used) == len(dictionary)
        and given.type.index_type == pa.int32()
        and pa.types.is_string(given.type.value_type)
        and bool(np.all(order == np.arange(len(order))))
    ):
        return given
    new = np.full(len(dictionary) + 1, -1, dtype=np.int32)
    new[used[order]] = np.arange(len(used), dtype=np.int32)
    codes = new[idx]  # -1 (null) reads the trailing -1; int32
    mask = codes < 0
    indices = array(np.where(mask, 0, codes), mask) if mask.any() else array(codes)
    return pa.DictionaryArray.from_arrays(indices, labels.take(array(order)))


def _ints(arr: Any, native: bool = False) -> np.ndarray:
    """An Arrow integer array as int64 numpy, nulls as -1 (read from its buffers: no pandas shim).
    ``native``: a signed array without nulls comes back as a read-only view of its buffer, in
    its own width (no copy)."""
    if not len(arr):
        return np.zeros(0, dtype=np.int64)
    bufs = arr.buffers()
    width = arr.type.bit_width // 8
    kind = "u" if arr.type.id in _UINT_IDS else "i"
    raw = np.frombuffer(bufs[1], dtype=np.dtype(f"{kind}{width}"))[arr.offset : arr.offset + len(arr)]
    if native and kind == "i" and not arr.null_count:
        return raw
    out = raw.astype(np.int64)
    if arr.null_count:
        bits = np.unpackbits(np.frombuffer(bufs[0], dtype=np.uint8), bitorder="little")
        out[bits[arr.offset : arr.offset + len(arr)] == 0] = -1
    return out


def parquet_writer(path: str | Path, schema: Any) -> Any:
    """The Parquet writer for results (settings shared by every runner): dictionary pages for the
    canonical dictionary columns, plain pages for numbers and :data:`PLAIN_TEXT`; the Arrow schema
    not stored, so every reader sees plain string columns. Min/max statistics only for `year`: rows
    are in input order, so row groups overlap on every other column and its statistics would prune
    nothing (they cost 8% of the write)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    coded = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    return pq.ParquetWriter(
        path,
        schema,
        use_dictionary=coded,
        write_statistics=[k for k in ("year",) if k in schema.names],
        store_schema=False,
        write_batch_size=65_536,
    )


_jstr = json.encoder.encode_basestring  # what json.dumps does to a str


def _key(name: str) -> str:
    """A column name as a JSON key inside a %-template."""
    return _jstr(name).replace("%", "%%")


@functools.lru_cache(maxsize=256)
def _json_template(names: tuple[str, ...], start: str, indent: str, sep: str, end: str) -> str:
    """The %-template of one JSON object with these keys (made once per set of columns)."""
    return start + sep.join(f"{indent}{_key(k)}: %s" for k in names) + end


_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _json_cells(v: np.ndarray) -> list[str]:
    """The JSON text of each value of a result column (as ``json.dumps(_py(x))``)."""
    if v.dtype.kind == "f":
        finite = np.isfinite(v)
        if not finite.any():
            return ["null" if x != x else _NON_FINITE[x] for x in v.tolist()]
        cells = list(map(float.__repr__, v.astype(np.float64, copy=False).tolist()))
        for i in np.flatnonzero(~finite).tolist():
            x = float(v[i])
            cells[i] = "null" if x != x else _NON_FINITE[x]
        return cells
    if v.dtype.kind in "iu":
        return list(map(int.__repr__, v.tolist()))
    if v.dtype.kind == "b":
        return ["true" if x else "false" for x in v.tolist()]
    values = v.tolist()
    if all(type(x) is str for x in values):
        return list(map(_jstr, values))
    return [json.dumps(_py(x), ensure_ascii=False) for x in values]


def _py(v: Any) -> Any:
    if isinstance(v, np.floating):
        f = float(v)
        return None if math.isnan(f) else f
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def build(plan: Plan, batch: Batch, ev: Evaluation, engine_version: str) -> Results:
    n = batch.n
    cols = Columns()
    zeros = np.zeros(n, dtype=np.int8)
    ids = batch.columns["firm_id"]
    if isinstance(ids, Category):
        cols.set_category("firm_id", ids)
    else:
        cols["firm_id"] = np.asarray(ids, dtype=object)
    years = batch.columns["year"]
    cols["year"] = np.where(np.isnan(years), -1, years).astype(np.int64)
    for name, value in (
        ("rulebook", plan.id),
        ("rulebook_version", plan.version),
        ("rulebook_hash", plan.hash),
        ("engine_version", engine_version),
    ):
        cols.set_encoded(name, zeros, [value])
    cols.set_encoded("status", np.where(ev.rated, 0, 1).astype(np.int8), ["rated", "unrated"])
    cols.set_encoded("reasons", ev.reasons[0], joined(ev.reasons[1]))
    cols.set_encoded("fallbacks", ev.fallbacks[0], joined(ev.fallbacks[1]))
    if batch.defaults is not None:  # the inputs that took the rulebook's default, and why (issue #12.1)
        cols.set_category("defaults", batch.defaults)
    else:
        cols.set_encoded("defaults", np.full(n, -1, dtype=np.int8), [])
    # a rated row that rests on a placeholder (unpublished) benchmark value (issue #12.5)
    cols.set_encoded("provisional", np.where(provisional_rows(plan, ev), 0, -1).astype(np.int8), ["yes"])
    jur = batch.jurisdiction
    if jur is not None:  # inside / outside / unknown / outside, rated on request (issue #12.4)
        from ..io.jurisdiction import STATUS_LABELS

        cols.set_encoded("jurisdiction", jur.status, STATUS_LABELS)
    else:
        cols.set_encoded("jurisdiction", np.full(n, -1, dtype=np.int8), [])
    for name in STANDARD_VARIABLES:
        cols[name] = _column(ev.values[name])
    for rname, rating in plan.ratings.items():
        if rname == plan.primary:
            cols.set_encoded("rating", ev.levels[rname], rating.ids)
        cols.set_encoded(rname, ev.levels[rname], rating.ids)
    if plan.incentives:
        target = plan.incentives["rating"]
        ids = plan.ratings[target].ids
        lv = ev.levels[target]
        inc = plan.incentives["levels"]
        for col, key, conv in (
            ("incentive_rate_bp", "rate_bp", float),
            ("incentive_credit_policy", "credit_policy", str),
            ("incentive_services", "services", lambda s: "; ".join(s)),
            ("incentive_subsidy_pct", "subsidy_pct", float),
        ):
            if not any(key in spec for spec in inc.values()):
                continue
            if conv is float:
                table = np.asarray(
                    [float(inc[i][key]) if i in inc and key in inc[i] else math.nan for i in ids] + [math.nan]
                )
                cols[col] = table[np.where(lv < 0, len(ids), lv)]
            else:
                cols.set_encoded(col, lv, [conv(inc[i][key]) if i in inc and key in inc[i] else "" for i in ids])
        src = plan.incentives.get("rate_bp_from")
        if src:  # continuous pricing: the variable's value for every rated firm, not a per-level table
            v = np.broadcast_to(np.asarray(ev.values[src], dtype=np.float64), (len(lv),))
            cols["incentive_rate_bp"] = np.where(lv >= 0, v, math.nan)
    for name in plan.order:
        node = plan.nodes[name]
        if node.kind == "variable" and name not in cols:
            v = ev.values[name]
            if isinstance(v, Category):
                cols.set_encoded(name, v.codes, v.labels)
            else:
                cols[name] = _column(v)
        elif node.kind == "benchmark":
            cols[name] = _column(ev.values[name])
            cols[f"{name}_peers"] = np.asarray(ev.aux[f"{name}_peers"], dtype=np.int64)
            cols.set_encoded(f"{name}_group", *ev.aux[f"{name}_group"])
    issues = sorted(batch.issues, key=lambda i: (i.row or 0, i.column or "", i.message))
    return Results(cols, plan, issues, ev.tables, batch, ev)


def placeholder_use(plan: Plan, ev: Evaluation) -> dict[str, np.ndarray]:
    """Per benchmark whose fallback is a placeholder: the rows that took that fallback level."""
    out: dict[str, np.ndarray] = {}
    for name, spec in plan.benchmarks.items():
        group = ev.aux.get(f"{name}_group")
        if not spec.placeholder or group is None:
            continue
        level, levels = group
        if "fallback" in levels:
            out[name] = np.asarray(level) == levels.index("fallback")
    return out


def provisional_rows(plan: Plan, ev: Evaluation) -> np.ndarray:
    """Rated rows that used a placeholder (unpublished) benchmark value: their rating is provisional."""
    used = np.zeros(len(ev.rated), dtype=bool)
    for rows in placeholder_use(plan, ev).values():
        used |= rows
    return used & ev.rated


def _column(v: Any) -> np.ndarray:
    if isinstance(v, Category):
        return v.to_strings()
    return np.ascontiguousarray(np.asarray(v, dtype=np.float64))
