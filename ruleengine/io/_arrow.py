"""Arrow ↔ numpy by their buffers, without pyarrow's pandas bridge.

``pa.array(ndarray)`` and ``Array.to_numpy()`` ask pyarrow's pandas shim whether the object is a
pandas one, and the shim imports pandas to answer whenever pandas is installed: a quarter of a
second of every fresh ``ruleengine rate`` spent on a library the engine never uses. Numbers and
text columns are plain buffers, so they are read and built here directly (zero-copy where the
layout allows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa


def _chunks(col: Any) -> list[Any]:
    return list(col.chunks) if isinstance(col, pa.ChunkedArray) else [col]


def valid(arr: Any) -> np.ndarray | None:
    """True where ``arr`` (one Array) holds a value; None when it has no nulls."""
    if arr.null_count == 0:
        return None
    if pa.types.is_null(arr.type) or arr.buffers()[0] is None:
        return np.zeros(len(arr), dtype=bool)
    bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
    # 0/1 bytes are numpy bools: a view, not a copy
    return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset :].view(bool)


def nulls(arr: Any) -> np.ndarray:
    """True where ``arr`` (one Array) is null: the validity bits inverted before they are unpacked
    (one pass over an eighth of the bytes instead of a pass over the unpacked mask)."""
    if arr.null_count == 0:
        return np.zeros(len(arr), dtype=bool)
    if pa.types.is_null(arr.type) or arr.buffers()[0] is None:
        return np.ones(len(arr), dtype=bool)
    bits = np.invert(np.frombuffer(arr.buffers()[0], dtype=np.uint8))
    return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset :].view(bool)


def numbers(
    col: Any, dtype: Any = np.float64, fill: Any = np.nan, inplace: bool = False, empty: list[np.ndarray] | None = None
) -> np.ndarray:
    """A fixed-width numeric Array or ChunkedArray as a numpy array of ``dtype``; nulls read ``fill``.

    Zero-copy (a view on the Arrow buffer) when the column is one chunk of ``dtype``. With nulls,
    ``inplace=True`` writes ``fill`` into the Arrow buffer's null slots instead of allocating a new
    array: only for columns nobody else holds (read from a file by the engine itself). ``empty``:
    the null masks of the column's non-empty chunks, when the caller has made them already.
    """
    dtype = np.dtype(dtype)
    target = pa.from_numpy_dtype(dtype)
    parts: list[np.ndarray] = []
    for c in _chunks(col):
        if c.type != target:
            c = c.cast(target)
        if len(c) == 0:
            continue
        v = np.frombuffer(c.buffers()[1], dtype=dtype, count=c.offset + len(c))[c.offset :]
        if not inplace:
            v.flags.writeable = False  # the caller's Arrow memory: whoever changes a value copies first
        if empty is not None:
            null = empty[len(parts)]
            if c.null_count:
                if inplace and v.flags.writeable:
                    np.putmask(v, null, fill)  # a third faster than v[null] = fill on a scattered mask
                else:
                    v = np.where(null, np.asarray(fill, dtype=dtype), v)
            parts.append(v)
            continue
        ok = valid(c)
        if ok is not None:
            if inplace and v.flags.writeable:
                v[~ok] = fill
            else:
                v = np.where(ok, v, np.asarray(fill, dtype=dtype))
        parts.append(v)
    if not parts:
        return np.empty(0, dtype=dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def may_have_edge_space(arr: Any) -> bool:
    """False when no value of a ``string`` Array starts or ends with white space (checked on the
    first and last byte of each value: control bytes, the space and every non-ASCII byte count as
    maybe); True when it may, or for any other type. Lets a trim of half a million firm ids be
    skipped."""
    if not isinstance(arr, pa.Array) or arr.type != pa.string() or arr.null_count:
        return True
    data = arr.buffers()[2]
    if data is None or len(arr) == 0:
        return False
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=arr.offset + len(arr) + 1)[arr.offset :]
    nonempty = offsets[1:] > offsets[:-1]
    starts = offsets[:-1] if nonempty.all() else offsets[:-1][nonempty]
    ends = (offsets[1:] if nonempty.all() else offsets[1:][nonempty]) - 1
    raw = np.frombuffer(data, dtype=np.uint8)
    # a byte outside 0x21-0x7E: (b - 0x21) wraps to 0x5E and above (one subtract, one compare)
    for pos in (starts, ends):
        edge = np.take(raw, pos)
        edge -= np.uint8(0x21)
        if bool((edge >= np.uint8(0x5E)).any()):
            return True
    return False


def booleans(col: Any, fill: bool = False) -> np.ndarray:
    """A boolean Array or ChunkedArray as a numpy bool array; nulls read ``fill``."""
    parts = []
    for c in _chunks(col):
        if len(c) == 0:
            continue
        bits = np.frombuffer(c.buffers()[1], dtype=np.uint8)
        v = np.unpackbits(bits, count=c.offset + len(c), bitorder="little")[c.offset :].view(bool)
        ok = valid(c)
        if ok is not None:
            v = np.where(ok, v, fill)
        parts.append(v)
    if not parts:
        return np.zeros(0, dtype=bool)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def array(values: np.ndarray, null: np.ndarray | None = None) -> Any:
    """A numpy numeric array as an Arrow array sharing its memory; ``null`` marks missing cells."""
    values = np.ascontiguousarray(values)
    validity = None
    nulls = 0
    if null is not None:
        nulls = int(np.count_nonzero(null))
        if nulls:
            validity = pa.py_buffer(np.packbits(~np.asarray(null, dtype=bool), bitorder="little"))
    return pa.Array.from_buffers(
        pa.from_numpy_dtype(values.dtype), len(values), [validity, pa.py_buffer(values)], null_count=nulls
    )


def strings(labels: Sequence[str]) -> Any:
    """A list of str as an Arrow string array (no nulls)."""
    encoded = [s.encode("utf-8") for s in labels]
    lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
    total = int(lengths.sum()) if len(encoded) else 0
    large = total >= 2**31 - 1
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64 if large else np.int32)
    np.cumsum(lengths, out=offsets[1:], dtype=offsets.dtype)
    return pa.Array.from_buffers(
        pa.large_string() if large else pa.string(),
        len(encoded),
        [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))],
    )


def text_scalar(value: str) -> Any:
    """A string Arrow scalar (``pa.scalar`` goes through the pandas shim)."""
    return strings([value])[0]


def null_scalar(type_: Any) -> Any:
    """A null Arrow scalar of ``type_``."""
    return pa.nulls(1, type=type_)[0]
