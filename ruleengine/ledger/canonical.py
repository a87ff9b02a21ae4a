"""Canonical bytes and their hashes: what the ledger stores and chains.

* Hashes are written ``<alg>:<hex>``; ``alg`` is ``sha256`` (default) or ``sm3`` (GB/T 32905, via
  the ``cryptography`` package's OpenSSL build).
* Canonical JSON: keys sorted, no spaces, UTF-8, ``NaN`` as the JSON extension Python writes.
* Canonical input: the columns the rulebook declares as inputs that the data has, in the
  rulebook's order, as the engine reads them; ``input_hash`` is the hash of their canonical bytes
  (see :func:`input_hash`); the rows are stored as Parquet.
* Results digest: the hash of the results as an Arrow IPC stream (``Results.to_arrow()`` in
  chunks): the same columns, types and values give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from .errors import LedgerError

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
        if not isinstance(col, pa.ChunkedArray | pa.Array):
            col = pa.array(col.tolist() if hasattr(col, "tolist") else list(col), from_pandas=True)
        arrays.append(plain(col))
    # the file's own row numbers (a CSV's lines, an Excel row): messages name them, so replay needs them
    stored = raw.columns.get(ROW_NUMBER)  # re-reading a stored input: its row numbers as recorded
    arrays.append(plain(stored) if stored is not None else pa.array(raw.rows(), type=pa.int64()))
    names.append(ROW_NUMBER)
    return pa.table(arrays, names=names)


ROW_NUMBER = "__row_number__"  # the input table's column of the file's row numbers


def input_hash(table: Any, alg: str = "sha256") -> str:
    """Hash of the canonical bytes of the input table: for each column its name, type, validity
    bits and values (:func:`fingerprint.column_bytes`). The same values give the same hash
    whichever file format they came from (as long as the engine reads them as the same types)."""
    from .fingerprint import column_bytes

    h = hasher(alg)()
    h.update(b"ruleengine-input-v1\n%d\n" % table.num_rows)
    for name, col in zip(table.column_names, table.columns, strict=True):
        h.update(name.encode() + b"\x00")
        for part in column_bytes(col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()):
            h.update(part)
    return f"{alg}:{h.digest().hex()}"


def input_fingerprints(table: Any) -> Any:
    """Per-row 64-bit fingerprint of each firm-year's input row (int64 array)."""
    from .fingerprint import column_hash, combine

    cols = [c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in table.columns]
    return combine([column_hash(c) for c in cols], table.num_rows)


def parquet_bytes(table: Any) -> bytes:
    """The input table as Parquet (zstd): what is stored, and what replay rates."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", compression_level=1, store_schema=False)
    return bytes(sink.getvalue().to_pybytes())


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


def results_digest(results: Any, alg: str = "sha256") -> str:
    """Hash of the results' canonical bytes: every column, in order, as an Arrow IPC stream."""
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
