"""Canonical bytes and their hashes: what the ledger stores and chains.

* Hashes are written ``<alg>:<hex>``; ``alg`` is ``sha256`` (default) or ``sm3`` (GB/T 32905, via
  the ``cryptography`` package's OpenSSL build).
* Canonical JSON: keys sorted, no spaces, UTF-8, ``NaN`` as the JSON extension Python writes.
* Canonical input: the columns the rulebook declares as inputs that the data has, in the
  rulebook's order, as the engine reads them; ``input_hash`` is the hash of their canonical bytes
  (see :func:`input_hash`); the rows are stored as Parquet.
* Results digest (format 2): the hash of every result column's canonical bytes
  (:func:`results_bytes`); runs of format 1 hashed the results as an Arrow IPC stream
  (``Results.to_arrow()`` in chunks), which :func:`results_digest` still computes for them.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .errors import LedgerError, UnstorableInput
from .fingerprint import all_valid, ints_exact, packer, tiny_bytes

ALGORITHMS = ("sha256", "sm3")
CHUNK = 262_144


def hasher(alg: str) -> Callable[..., Any]:
    """A constructor ``f(data) -> object with .update/.digest`` for ``alg``."""
    if alg == "sha256":
        return hashlib.sha256
    if alg == "sm3":
        from cryptography.hazmat.primitives import hashes

        class _SM3:
            def __init__(self, data: bytes = b"") -> None:
                self._h = hashes.Hash(hashes.SM3())
                if data:
                    self._h.update(data)

            def update(self, data: bytes) -> None:
                self._h.update(bytes(data))

            def digest(self) -> bytes:
                return self._h.finalize()

        return _SM3
    raise LedgerError(f"unknown hash algorithm '{alg}' (use {' or '.join(ALGORITHMS)})")


def digest(data: bytes, alg: str = "sha256") -> str:
    h = hasher(alg)(data)
    return f"{alg}:{h.digest().hex()}"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- input rows -------------------------------------------------------------------------------


def input_table(plan: Any, data: Any) -> Any:
    """The data's columns that ``plan`` declares as inputs, in the rulebook's order, as the engine
    reads them (``ruleengine.io.data.read_any``: CSV, JSON, JSON Lines, Parquet, records, columns,
    Arrow), each made plain (:func:`fingerprint.plain`). Other columns are left out."""
    import pyarrow as pa

    from ..io import data as _data
    from .fingerprint import plain

    text_cols = [n for n, s in plan.inputs.items() if s.type in ("string", "category")]
    raw = _data.read_any(data, text_cols, only=[*plan.inputs, ROW_NUMBER])
    names = [n for n in plan.inputs if n in raw.columns]
    arrays = []
    for n in names:
        col = raw.columns[n]
        try:
            if not isinstance(col, pa.ChunkedArray | pa.Array):
                vals = col.tolist() if hasattr(col, "tolist") else list(col)
                # a field no row gives (common in JSON rows): a null column without Arrow's inference
                col = pa.nulls(len(vals)) if all(v is None for v in vals) else pa.array(vals, from_pandas=True)
            arrays.append(plain(col))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            raise _unstorable(raw, n, col) from None
    # the file's own row numbers (a CSV's lines, an Excel row): messages name them, so replay needs them
    stored = raw.columns.get(ROW_NUMBER)  # re-reading a stored input: its row numbers as recorded
    arrays.append(plain(stored) if stored is not None else pa.array(raw.rows(), type=pa.int64()))
    names.append(ROW_NUMBER)
    return pa.table(arrays, names=names)


ROW_NUMBER = "__row_number__"  # the input table's column of the file's row numbers
INPUT_HEAD = b"ruleengine-input-v1\n"  # the canonical input bytes begin so (input_hash hashes them)
_INT64_RANGE = (-(2**63), 2**63)  # what the stored rows hold as integers


def _unstorable(raw: Any, name: str, col: Any) -> UnstorableInput:
    """The error for a column of cells the stored rows cannot hold as numbers or text, naming the
    first such cell's row (the engine rates such a row as unrated; the ledger would have to change
    the cell to store it, so the run is refused instead)."""
    cells = col.to_pylist() if hasattr(col, "to_pylist") else list(col.tolist() if hasattr(col, "tolist") else col)
    rows = raw.rows()
    for i, v in enumerate(cells):
        if isinstance(v, int) and not isinstance(v, bool) and not _INT64_RANGE[0] <= v < _INT64_RANGE[1]:
            return UnstorableInput(
                f"{raw.source}: row {int(rows[i])}, column {name}: an integer of {len(str(abs(v)))} digits, too large "
                "for the ledger's 64-bit integers; the run is not recorded (give it as text or a smaller number)"
            )
        if not (v is None or isinstance(v, str | int | float | bool)):
            what = (
                "a JSON object"
                if isinstance(v, dict)
                else "a list"
                if isinstance(v, list | tuple)
                else str(getattr(v, "why", type(v).__name__))
            )
            return UnstorableInput(
                f"{raw.source}: row {int(rows[i])}, column {name}: {what}, where the ledger stores numbers or text; "
                "the run is not recorded (give the cell as a number or as text)"
            )
    kinds = {bool: "true/false", int: "a number", float: "a number", str: "text"}
    first = next(((i, kinds[type(v)]) for i, v in enumerate(cells) if type(v) in kinds), None)
    for i, v in enumerate(cells):
        if first is not None and type(v) in kinds and kinds[type(v)] != first[1]:
            return UnstorableInput(
                f"{raw.source}: row {int(rows[i])}, column {name}: {kinds[type(v)]} where row "
                f"{int(rows[first[0]])} has {first[1]}; the ledger stores one kind of value per column, so the run "
                "is not recorded (give the column's cells alike)"
            )
    return UnstorableInput(
        f"{raw.source}: column {name}: values the ledger cannot store as numbers or text; the run is not recorded"
    )


def input_hash(table: Any, alg: str = "sha256") -> str:
    """Hash of the canonical bytes of the input table: for each column its name, type, validity
    bits and values (:func:`fingerprint.column_bytes`). The same values give the same hash
    whichever file format they came from (as long as the engine reads them as the same types)."""
    from .fingerprint import column_bytes

    h = hasher(alg)()
    h.update(INPUT_HEAD + b"%d\n" % table.num_rows)
    for name, col in zip(table.column_names, table.columns, strict=True):
        h.update(name.encode() + b"\x00")
        for part in column_bytes(col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()):
            h.update(part)
    return f"{alg}:{h.digest().hex()}"


def input_digests(table: Any, alg: str = "sha256") -> tuple[str, Any]:
    """``(input_hash(table, alg), input_fingerprints(table))``; for a tiny table (a one-firm run)
    in one pass, each column's values taken out of Arrow once for both."""
    from .fingerprint import TINY_ROWS, tiny_values

    n = table.num_rows
    if 0 < n <= TINY_ROWS:
        cols = [c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in table.columns]
        got = [tiny_values(c) for c in cols]
        if all(g is not None for g in got):
            digest, fps, _ = _tiny_input_digests(list(zip(table.column_names, got, strict=True)), n, alg)  # type: ignore[arg-type]
            return digest, fps
    return input_hash(table, alg), input_fingerprints(table)


def _tiny_input_digests(columns: list[tuple[str, tuple[str, list[Any]]]], n: int, alg: str) -> tuple[str, Any, bytes]:
    """(input hash, row fingerprints, canonical bytes) of ``n`` rows given as ``(name, (kind,
    values))`` per column (:func:`fingerprint.tiny_values`' form): the bytes :func:`input_hash`
    hashes, built from the Python values in one pass with the fingerprints."""
    from .fingerprint import combine_tiny, tiny_hash

    pieces = [INPUT_HEAD + b"%d\n" % n]
    hashes = []
    for name, (kind, vals) in columns:
        pieces.append(name.encode() + b"\x00")
        pieces.extend(tiny_bytes(kind, vals))
        hashes.append(tiny_hash(kind, vals))
    blob = b"".join(pieces)
    return f"{alg}:{hasher(alg)(blob).digest().hex()}", combine_tiny(hashes, n), blob


def tiny_input(plan: Any, data: Any, alg: str = "sha256") -> tuple[str, Any, bytes] | None:
    """A one-firm run's input given as records (the service's JSON rows), without Arrow:
    ``(input_hash, input_fingerprints, canonical bytes)`` — the hash and fingerprints
    :func:`input_table` + :func:`input_digests` give, and the very bytes that hash covers, which
    the ledger stores as the run's input rows (:func:`stored_parquet` reads them back as a table).

    Only where every column the rulebook reads is a list of one plain kind that Arrow types the
    same way (``float`` with None/NaN missing; ``str``, or 64-bit ``int``, with None); anything
    else (a column all missing, mixed kinds, ``bool``, numpy or Arrow columns, more than
    ``fingerprint.TINY_ROWS`` rows) gives None and the general path runs.
    tests/test_ledger_tiny.py compares both on random records of every kind of cell."""
    from ..io import data as _data
    from .fingerprint import TINY_ROWS

    # (the size first: a big portfolio given as records is not read here and again by input_table)
    size = len(data) if isinstance(data, list) else data.n if isinstance(data, _data.RawTable) else -1
    if not 0 < size <= TINY_ROWS:
        return None
    text_cols = [n for n, s in plan.inputs.items() if s.type in ("string", "category")]
    raw = _data.read_any(data, text_cols, only=[*plan.inputs, ROW_NUMBER])
    if ROW_NUMBER in raw.columns:
        return None
    columns: list[tuple[str, tuple[str, list[Any]]]] = []
    for name in plan.inputs:
        if name not in raw.columns:  # (input_table's columns: the inputs the data has, in the rulebook's order)
            continue
        typed = _plain_kind(raw.columns[name])
        if typed is None:
            return None
        columns.append((name, typed))
    columns.append((ROW_NUMBER, ("int64", raw.rows().tolist())))
    return _tiny_input_digests(columns, raw.n, alg)


def _plain_kind(col: Any) -> tuple[str, list[Any]] | None:
    """``(kind, values)`` of a list of cells as ``plain(pa.array(col, from_pandas=True))`` types
    it, for the kinds that need no inference: None where Arrow's typing is left to decide."""
    if type(col) is not list:
        return None
    kind: type | None = None
    nan = False
    for v in col:
        if v is None:
            continue
        t = type(v)
        if t is float and v != v:
            nan = True
            continue
        if kind is None:
            kind = t
        elif t is not kind:
            return None
    if kind is float:
        return "double", [None if v is None or v != v else v for v in col]
    if kind is None:  # nothing but None and NaN: a column of nulls (no type of its own), stored as text
        return "string", [None] * len(col)
    if nan:  # NaN among texts or integers: Arrow decides
        return None
    if kind is str:
        return "string", col
    if kind is int:
        lo, hi = _INT64_RANGE
        if not all(v is None or lo <= v < hi for v in col) or (None in col and not ints_exact(col)):
            return None
        return "int64", col
    return None


def table_from_canonical(data: bytes) -> Any:
    """The Arrow table whose canonical input bytes are ``data`` (what :func:`tiny_input` stores):
    each column's name, type (double, int64, string), validity bits and values, read back."""
    import pyarrow as pa

    def fail(why: str) -> LedgerError:
        return LedgerError(f"stored input rows: not readable canonical input bytes ({why})")

    if not data.startswith(INPUT_HEAD):
        raise fail("no header")
    end = data.find(b"\n", len(INPUT_HEAD))
    count = data[len(INPUT_HEAD) : end] if end > 0 else b""
    if not count.isdigit():
        raise fail("no row count")
    n = int(count)
    try:
        names, arrays = _canonical_columns(data, end + 1, n, fail)
    except (ValueError, UnicodeDecodeError) as exc:
        raise fail(str(exc)) from None
    return pa.table(arrays, names=names)


def _canonical_columns(
    data: bytes, pos: int, n: int, fail: Callable[[str], LedgerError]
) -> tuple[list[str], list[Any]]:
    import numpy as np
    import pyarrow as pa

    names: list[str] = []
    arrays: list[Any] = []
    nbits = (n + 7) // 8
    while pos < len(data):
        cut = data.find(b"\x00", pos)
        cut2 = data.find(b"\x00", cut + 1) if cut >= 0 else -1
        if cut < 0 or cut2 < 0:
            raise fail("a column without its name or type")
        name, kind = data[pos:cut].decode("utf-8", "strict"), data[cut + 1 : cut2].decode("ascii", "strict")
        pos = cut2 + 1
        bits = np.unpackbits(np.frombuffer(data, np.uint8, nbits, pos), count=n).astype(bool)
        pos += nbits
        if kind in ("double", "int64"):
            if pos + 8 * n > len(data):
                raise fail(f"column {name} is cut short")
            values = np.frombuffer(data, "<f8" if kind == "double" else "<i8", n, pos)
            pos += 8 * n
            arrays.append(pa.array(values, mask=~bits))
        elif kind == "string":
            if pos + 8 * n > len(data):
                raise fail(f"column {name} is cut short")
            lengths = np.frombuffer(data, "<i8", n, pos).tolist()
            pos += 8 * n
            texts: list[str | None] = []
            for length, valid in zip(lengths, bits.tolist(), strict=True):
                if length < 0 or pos + length > len(data):
                    raise fail(f"column {name} is cut short")
                texts.append(data[pos : pos + length].decode("utf-8", "strict") if valid else None)
                pos += length
            arrays.append(pa.array(texts, pa.string()))
        else:
            raise fail(f"column {name} has the unknown type {kind!r}")
        names.append(name)
    return names, arrays


def input_fingerprints(table: Any) -> Any:
    """Per-row 64-bit fingerprint of each firm-year's input row (int64 array)."""
    from .fingerprint import row_hashes

    cols = [c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in table.columns]
    return row_hashes(cols, table.num_rows)


def parquet_bytes(table: Any) -> bytes:
    """The input table as Parquet (zstd): what replay rates."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", compression_level=1, store_schema=False)
    return bytes(sink.getvalue().to_pybytes())


def stored_bytes(table: Any) -> bytes:
    """The input table as the ledger stores it (blob kind ``input-rows``): Parquet (zstd), or for a
    tiny run (at most SMALL_ROWS rows: a one-firm rating) an Arrow IPC stream, which costs ~0.01 ms
    to write where even uncompressed Parquet costs ~0.3 ms. Either form holds the same columns
    and types; :func:`stored_parquet` turns both into Parquet for replay. What is chained is
    ``input_hash`` over the canonical bytes, never these bytes."""
    if table.num_rows > SMALL_ROWS:
        return parquet_bytes(table)
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


PARQUET_MAGIC = b"PAR1"
IPC_STREAM_MAGIC = b"\xff\xff\xff\xff"  # an Arrow IPC stream starts with a continuation marker


def stored_parquet(stored: bytes) -> bytes:
    """A stored ``input-rows`` blob as Parquet bytes: Parquet as it is; an Arrow IPC stream (tiny
    runs from 0.1.0's session 5 on) read and written as Parquet. Anything else is refused."""
    if stored[:4] == PARQUET_MAGIC:
        return stored
    if stored.startswith(INPUT_HEAD):  # a one-firm run's canonical bytes (tiny_input)
        return parquet_bytes(table_from_canonical(stored))
    if stored[:4] == IPC_STREAM_MAGIC:
        import pyarrow as pa

        try:
            table = pa.ipc.open_stream(stored).read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise LedgerError(f"stored input rows: not a readable Arrow IPC stream ({exc})") from None
        return parquet_bytes(table)
    raise LedgerError("stored input rows: neither Parquet nor an Arrow IPC stream")


# --- results ------------------------------------------------------------------------------------


class _HashSink:
    def __init__(self, alg: str) -> None:
        self.h = hasher(alg)()
        self.closed = False

    def write(self, data: Any) -> int:
        self.h.update(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


FORMAT = 2  # canonical form of new runs: 1 = results as an Arrow IPC stream, 2 = results by column


def results_digest(results: Any, alg: str = "sha256", version: int = FORMAT) -> str:
    """Hash of the results' canonical bytes, every column in order.

    ``version`` 2 (runs of format 2): :func:`results_bytes`, each column's canonical bytes (text
    columns as their sorted distinct labels and codes into them); version 1 (format-1 runs,
    recorded before 0.1.0's ledger speed-up): the results as an Arrow IPC stream (``to_arrow`` in
    chunks), kept so that those runs still replay and verify."""
    if version == 1:
        return _results_digest_v1(results, alg)
    if version != 2:
        raise LedgerError(f"unknown canonical form {version} (this ruleengine knows 1 and 2)")
    h = hasher(alg)()
    one = _results_bytes_one(results) if len(results) == 1 and SMALL_ROWS else None
    if one is not None:  # one row (a one-firm rating): its pieces written in one pass
        h.update(b"".join(one))
    elif 0 < len(results) <= SMALL_ROWS:  # a few rows: the pieces are small, hashed as one
        h.update(b"".join(results_bytes(results)))
    else:
        for part in results_bytes(results):
            h.update(part)
    return f"{alg}:{h.digest().hex()}"


def results_bytes(results: Any) -> Iterator[Any]:
    """Canonical bytes of the results (bytes-like pieces), format 2:
    ``"ruleengine-results-v2\n<rows>\n"``, then for each column in order its name and ``\0`` and

    * a text column: ``dict\0``, the canonical bytes (:func:`fingerprint.column_bytes`) of its
      distinct values sorted by their UTF-8 bytes (a missing value reads ``''``), then each row's
      index into them as little-endian int32 — the same whether the engine kept the column as codes
      into labels or as strings, whatever the labels' order or repeats;
    * a number column: :func:`fingerprint.column_bytes` of it (float64 with NaN as missing, or
      int64).

    Built from numpy/Arrow buffers, no per-row Python."""
    import numpy as np
    import pyarrow as pa

    from .fingerprint import column_bytes, float_bytes

    n = len(results)
    yield b"ruleengine-results-v2\n%d\n" % n
    cols = results.columns
    for name in results.names:
        yield name.encode() + b"\x00"
        cat = cols.category(name) if hasattr(cols, "category") else None
        if 0 < n <= SMALL_ROWS:
            tiny = _column_bytes_small(cat, cols, name)
            if tiny is not None:
                yield from tiny
                continue
        if cat is not None:
            yield from _text_bytes(np.asarray(cat.codes), cat.arrow_labels())
            continue
        v = np.asarray(cols[name])
        if v.dtype == object or v.dtype.kind in "US":
            enc = pa.array(v, pa.string()).dictionary_encode()
            codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False))
            if enc.null_count:
                codes = np.where(enc.is_null().to_numpy(zero_copy_only=False), -1, codes)
            yield from _text_bytes(codes, enc.dictionary)
        elif v.dtype.kind == "f":
            yield from float_bytes(v.astype(np.float64, copy=False))
        elif v.dtype.kind in "iub":
            yield from column_bytes(pa.array(v.astype(np.int64, copy=False)))
        else:
            raise LedgerError(f"results column {name} has values of type {v.dtype} the ledger cannot hash")


def _text_bytes(codes: Any, labels: Any) -> Iterator[Any]:
    """``dict\0`` + sorted distinct used labels + int32 indices into them (see :func:`results_bytes`)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from .fingerprint import column_bytes, plain

    labels = plain(labels)
    if labels.null_count:
        labels = pc.fill_null(labels, "")
    if 0 < len(codes) <= SMALL_ROWS:
        yield from _text_bytes_small(np.asarray(codes), labels)
        return
    n_lab = len(labels)
    lab = pa.concat_arrays([labels, pa.array([""], pa.string())])  # index n_lab: a missing code
    c = np.where(codes < 0, n_lab, codes).astype(np.int64, copy=False)
    used = np.flatnonzero(np.bincount(c, minlength=n_lab + 1)) if len(c) else np.zeros(0, dtype=np.int64)
    ul = lab.take(pa.array(used))
    order = np.asarray(pc.sort_indices(ul).to_numpy(zero_copy_only=False), dtype=np.int64)
    srt = ul.take(pa.array(order))
    first = np.ones(len(srt), dtype=bool)
    if len(srt) > 1:
        first[1:] = np.asarray(pc.not_equal(srt.slice(1), srt.slice(0, len(srt) - 1)).to_numpy(zero_copy_only=False))
    group = np.cumsum(first) - 1
    rank = np.empty(len(srt), dtype=np.int32)
    rank[order] = group
    mapping = np.full(n_lab + 1, -1, dtype=np.int32)
    mapping[used] = rank
    yield b"dict\x00"
    yield from column_bytes(srt.filter(pa.array(first)))
    yield np.ascontiguousarray(mapping[c].astype("<i4", copy=False))


SMALL_ROWS = 64  # up to this many rows, text columns are hashed by the plain-Python path below


def _text_bytes_small(codes: Any, labels: Any) -> Iterator[Any]:
    """:func:`_text_bytes` for a few rows (a one-firm run: ~100 text columns of one row, where
    numpy/Arrow call overhead dominates), in plain Python; the same bytes (a test compares them)."""
    n_lab = len(labels)
    idx = [int(c) for c in codes]
    import pyarrow as pa

    picked = labels.take(pa.array([c for c in idx if 0 <= c < n_lab], pa.int64())).to_pylist() if n_lab else []
    it = iter(picked)
    vals = [next(it).encode() if 0 <= c < n_lab else b"" for c in idx]
    yield from _text_pieces(vals)


def _column_bytes_small(cat: Any, cols: Any, name: str) -> list[bytes] | None:
    """A results column's pieces of :func:`results_bytes` for a few rows, in plain Python (the
    same bytes; tests/test_ledger_replay.py compares), or None where the numpy path must run."""
    import numpy as np

    if cat is not None:
        if cat.labels_from_arrow and cat.label_count > 256:
            return None  # many Arrow labels: the Arrow take of the vectorised path is cheaper
        labels = cat.labels
        n_lab = len(labels)
        vals = []
        for c in np.asarray(cat.codes).tolist():
            label = labels[c] if 0 <= c < n_lab else ""
            if label is None:
                label = ""
            if not isinstance(label, str):
                return None
            vals.append(label.encode())
        return _text_pieces(vals)
    v = np.asarray(cols[name])
    kind = v.dtype.kind
    if kind == "f":  # NaN is the missing value: fingerprint.column_bytes' tiny form, None for it
        return tiny_bytes("double", [x if x == x else None for x in v.astype(np.float64, copy=False).tolist()])
    if v.dtype == object or kind in "US":
        items = v.tolist()
        if not all(x is None or isinstance(x, str) for x in items):
            return None
        return _text_pieces([b"" if x is None else x.encode() for x in items])
    if kind in "iub":
        return tiny_bytes("int64", v.astype(np.int64, copy=False).tolist())
    return None


_PACK_Q1, _PACK_D1 = struct.Struct("<q").pack, struct.Struct("<d").pack
_DOUBLE_VALID, _DOUBLE_MISSING = b"double\x00\x80", b"double\x00\x00" + bytes(8)
_INT_VALID = b"int64\x00\x80"


def _results_bytes_one(results: Any) -> list[bytes] | None:
    """:func:`results_bytes` of a one-row result (a one-firm rating: ~200 columns of one value),
    each column's pieces written directly (the bytes :func:`_column_bytes_small` gives, which
    tests/test_ledger_tiny.py compares), or None where a column needs the general path."""
    import numpy as np

    cols = results.columns
    category = getattr(cols, "category", None)
    out = [b"ruleengine-results-v2\n1\n"]
    for name in results.names:
        out.append(name.encode() + b"\x00")
        cat = category(name) if category is not None else None
        if cat is not None:
            if cat.labels_from_arrow and cat.label_count > 256:
                return None
            labels = cat.labels
            c = int(cat.codes[0])
            text = _one_text(labels[c] if 0 <= c < len(labels) else "")
            if text is None:
                return None
            out += text
            continue
        col = cols[name]
        kind = col.dtype.kind if isinstance(col, np.ndarray) else ""
        if kind == "f":
            x = float(col[0])
            if x == x:
                out += (_DOUBLE_VALID, _PACK_D1(x))
            else:
                out.append(_DOUBLE_MISSING)
        elif kind == "O" or kind == "U" or kind == "S":
            text = _one_text(col[0])
            if text is None:
                return None
            out += text
        elif kind in "iub" and kind:
            out += (_INT_VALID, _PACK_Q1(int(col[0])))
        else:
            return None
    return out


def _one_text(cell: Any) -> tuple[bytes, ...] | None:
    """:func:`_text_pieces` of one row's text (None or a str; None where it is neither)."""
    if cell is None:
        cell = ""
    if type(cell) is not str:
        return None
    v = cell.encode()
    return (_ONE_TEXT_HEAD, _PACK_Q1(len(v)), v, _INDEX_0)


def _text_pieces(vals: list[bytes]) -> list[bytes]:
    """:func:`_text_bytes` of the rows' texts (UTF-8, a missing value as ``b''``)."""
    if len(vals) == 1:  # one row: one distinct text, at index 0
        (v,) = vals
        return [_ONE_TEXT_HEAD, packer("q", 1)(len(v)), v, _INDEX_0]
    distinct = sorted(set(vals))
    rank = {v: i for i, v in enumerate(distinct)}
    m = len(distinct)
    return [
        b"dict\x00string\x00" + all_valid(m),
        packer("q", m)(*(len(v) for v in distinct)),
        b"".join(distinct),
        packer("i", len(vals))(*(rank[v] for v in vals)),
    ]


_ONE_TEXT_HEAD = b"dict\x00string\x00\x80"  # dict, then one distinct text, valid
_INDEX_0 = b"\x00\x00\x00\x00"  # int32 0, little-endian


def _results_digest_v1(results: Any, alg: str) -> str:
    """Format 1: the results as an Arrow IPC stream of ``to_arrow`` chunks."""
    import pyarrow as pa

    sink = _HashSink(alg)
    n = len(results)
    writer = None
    for start in range(0, max(n, 1), CHUNK):
        table = results.to_arrow(start=start, stop=min(n, start + CHUNK))
        if writer is None:
            writer = pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema)
        writer.write_table(table)
    if writer is not None:
        writer.close()
    return f"{alg}:{sink.h.digest().hex()}"


# --- benchmark tables ---------------------------------------------------------------------------


def tables_json(tables: Mapping[str, Any]) -> bytes:
    """Canonical JSON of the benchmark tables a run used (``BenchmarkTable.to_json`` of each)."""
    return canonical_json({name: tables[name].to_json() for name in sorted(tables)})


def tables_from_json(text: bytes | str) -> dict[str, Any]:
    """``BenchmarkTable`` objects back from :func:`tables_json`."""
    from ..engine.benchmarks import BenchmarkTable

    return {name: BenchmarkTable.from_json(t) for name, t in json.loads(text).items()}
