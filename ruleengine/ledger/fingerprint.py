"""Vectorised canonical bytes and per-row fingerprints (numpy over Arrow buffers, no per-row loop).

Two things, kept apart on purpose:

* **canonical bytes** of a set of columns, hashed with SHA-256 (or SM3) in large pieces: the
  cryptographic guarantee of the ledger (input hash, ratings block hashes);
* **row fingerprints**: a 64-bit hash per row: numbers by their bits, texts by the BLAKE2b of each
  distinct label, combined by a polynomial with the splitmix64 finaliser, computed with numpy.
  Not cryptographic: it says *which* row changed (``check`` names it, ``history`` tells a firm's
  changed input row apart), while the block hashes are what an attacker cannot forge.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

P1 = np.uint64(0x100000001B3)  # FNV-64 prime: the polynomial's base
NULL = np.uint64(0x9E3779B97F4A7C15)  # what a missing value contributes
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def plain(arr: Any) -> Any:
    """One contiguous Arrow array: chunks combined, dictionaries decoded, odd types as text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    if pa.types.is_null(t):  # every value missing (a JSON field no row gives): text, as pc.cast makes it
        return pa.nulls(len(arr), pa.string())  # (~1 µs where the cast costs ~10-30 µs a column)
    if pa.types.is_large_string(t):
        arr = arr.cast(pa.string())
    elif pa.types.is_floating(t) and t != pa.float64():
        arr = arr.cast(pa.float64())
    elif pa.types.is_integer(t) and t != pa.int64():
        arr = arr.cast(pa.int64())
    elif pa.types.is_boolean(t):
        arr = arr.cast(pa.int64())
    elif not (pa.types.is_string(t) or t in (pa.float64(), pa.int64())):
        arr = pc.cast(arr, pa.string())
    return arr


def _valid(arr: Any) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _string_parts(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """(offsets rebased to 0 as int64, data bytes) of a string array; missing values are empty."""
    import pyarrow.compute as pc

    if arr.null_count:
        arr = pc.fill_null(arr, "")
    bufs = arr.buffers()
    off = np.frombuffer(bufs[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4).astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, dtype=np.uint8)
    data = data[off[0] : off[-1]]
    return off - off[0], data


def column_bytes(arr: Any) -> Iterator[Any]:
    """Canonical bytes of a column (after :func:`plain`): its type, validity bits, then values
    (numbers as little-endian 8 bytes with missing ones zeroed; text as lengths then UTF-8).

    Yields bytes-like pieces (bytes or contiguous numpy arrays, hashed without a copy). Up to
    :data:`TINY_ROWS` rows the pieces are built in plain Python (:func:`_column_bytes_tiny`: the
    same bytes, without numpy/Arrow call overhead per column)."""
    if 0 < len(arr) <= TINY_ROWS:
        tiny = _column_bytes_tiny(arr)
        if tiny is not None:
            yield from tiny
            return
    import pyarrow as pa

    valid = _valid(arr)
    yield str(arr.type).encode() + b"\x00" + np.packbits(valid).tobytes()
    if pa.types.is_string(arr.type):
        off, data = _string_parts(arr)
        yield _le(np.diff(off), "<i8")
        yield np.ascontiguousarray(data)
        return
    values = arr.to_numpy(zero_copy_only=False)
    if arr.type == pa.float64():
        yield _le(values if arr.null_count == 0 else np.where(valid, values, 0.0), "<f8")
    else:
        if values.dtype.kind == "f":
            values = np.nan_to_num(values)
        yield _le(values if arr.null_count == 0 else np.where(valid, values, 0), "<i8")


def float_bytes(values: np.ndarray) -> Iterator[Any]:
    """:func:`column_bytes` of a float64 numpy column whose NaNs are the missing values, straight
    from numpy (the same bytes as ``column_bytes(pa.array(values, mask=np.isnan(values)))``)."""
    nan = np.isnan(values)
    has_nan = bool(nan.any())
    yield b"double\x00" + np.packbits(~nan).tobytes()
    yield _le(np.where(nan, 0.0, values) if has_nan else values, "<f8")


def _le(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` as a contiguous little-endian array of ``dtype`` (no copy when it already is)."""
    return np.ascontiguousarray(values.astype(dtype, copy=False))


def column_hash(arr: Any) -> np.ndarray:
    """64-bit per-row hash of a column (after :func:`plain`)."""
    import pyarrow as pa

    if 0 < len(arr) <= TINY_ROWS:
        tiny = column_hash_tiny(arr)
        if tiny is not None:
            return np.array(tiny, dtype=np.uint64)
    valid = _valid(arr)
    if pa.types.is_string(arr.type):
        h = _text_hash(arr)
    else:
        values = arr.to_numpy(zero_copy_only=False)
        if arr.type == pa.float64():
            v = np.where(valid, values, 0.0).astype(np.float64)
            v = np.where(v == 0.0, 0.0, v)  # -0.0 is 0.0
            h = v.view(np.uint64).copy()
        else:
            h = np.where(valid, values, 0).astype(np.int64).view(np.uint64).copy()
    h = _mix(h)
    h[~valid] = NULL
    return h


def _text_hash(arr: Any) -> np.ndarray:
    """Texts up to 64 bytes: a polynomial over their 8-byte little-endian words (zero-padded), one
    numpy pass per word; longer texts: the BLAKE2b of each distinct label (Arrow's hash table)."""
    off, data = _string_parts(arr)
    lengths = np.diff(off)
    n = len(lengths)
    maxlen = int(lengths.max()) if n else 0
    if maxlen > 64:
        import hashlib

        import pyarrow.compute as pc

        enc = pc.dictionary_encode(pc.fill_null(arr, "") if arr.null_count else arr)
        labels = enc.dictionary.to_pylist()
        table = np.fromiter(
            (int.from_bytes(hashlib.blake2b(x.encode(), digest_size=8).digest(), "little") for x in labels),
            dtype=np.uint64,
            count=len(labels),
        )
        return table[enc.indices.to_numpy(zero_copy_only=False)]
    h = lengths.astype(np.uint64)
    if not maxlen:
        return h
    # the bytes as a (rows × width) matrix, zero-padded to whole 8-byte words; one pass per word
    width = (maxlen + 7) // 8 * 8
    if int(lengths.min()) == maxlen:  # all texts the same length (firm ids): no gather needed
        mat = np.zeros((n, width), dtype=np.uint8)
        mat[:, :maxlen] = data.reshape(n, maxlen)
        return _words(h, mat)
    pos = np.arange(width)
    last = len(data) - 1
    for a in range(0, n, 65_536):
        b = min(n, a + 65_536)
        present = pos[None, :] < lengths[a:b, None]
        idx = np.minimum(off[a:b, None] + pos[None, :], last)
        h[a:b] = _words(h[a:b], np.where(present, data[idx], np.uint8(0)).astype(np.uint8))
    return h


def _words(h: np.ndarray, mat: np.ndarray) -> np.ndarray:
    words = np.ascontiguousarray(mat).view("<u8")
    for j in range(words.shape[1]):
        h = h * P1 + words[:, j]
    return h


def combine(hashes: list[np.ndarray], n: int) -> np.ndarray:
    """Row fingerprints from per-column hashes, as int64 (what the database stores)."""
    acc = np.full(n, np.uint64(len(hashes)), dtype=np.uint64)
    for h in hashes:
        acc = _mix(acc * P1 + h)
    return acc.view(np.int64)


# --- tiny columns (a one-firm run: ~50 input and ~60 result columns of one or two rows) ----------
# The same bytes and hashes as the numpy/Arrow code above, in plain Python: for a row or two the
# per-call overhead of numpy/Arrow (a dozen calls per column) costs far more than the arithmetic.
# tests/test_ledger_replay.py compares both paths on random columns.

TINY_ROWS = 64
_MASK = (1 << 64) - 1
_P1, _NULL, _M1_, _M2_ = int(P1), int(NULL), int(_M1), int(_M2)
_EXACT = 1 << 53  # an int64 column with nulls goes through float64 in the numpy path: exact below this


def _mix_int(x: int) -> int:
    x ^= x >> 30
    x = (x * _M1_) & _MASK
    x ^= x >> 27
    x = (x * _M2_) & _MASK
    return x ^ (x >> 31)


def bit_bytes(valid: list[bool]) -> bytes:
    """``np.packbits(valid).tobytes()``: most significant bit first, the last byte zero-padded."""
    if all(valid):
        return all_valid(len(valid))
    out = bytearray((len(valid) + 7) // 8)
    for i, v in enumerate(valid):
        if v:
            out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


@functools.lru_cache(maxsize=TINY_ROWS + 1)
def all_valid(n: int) -> bytes:
    """:func:`bit_bytes` of ``n`` true values."""
    return bytes([0xFF] * (n // 8)) + (bytes([(0xFF << (8 - n % 8)) & 0xFF]) if n % 8 else b"")


@functools.lru_cache(maxsize=3 * (TINY_ROWS + 1))
def packer(code: str, n: int) -> Callable[..., bytes]:
    """``struct.Struct(f"<{n}{code}").pack`` (made once per shape)."""
    return struct.Struct(f"<{n}{code}").pack


_TINY_KINDS: dict[Any, str] = {}  # Arrow type -> "string" / "double" / "int64" (filled on first use)


def tiny_values(arr: Any) -> tuple[str, list[Any]] | None:
    """(``string``/``double``/``int64``, the values as Python objects, None = missing), or None
    for what the tiny paths do not cover (then the numpy path runs)."""
    if not _TINY_KINDS:
        import pyarrow as pa

        _TINY_KINDS.update({pa.string(): "string", pa.float64(): "double", pa.int64(): "int64"})
    kind = _TINY_KINDS.get(arr.type)
    if kind is None:
        return None
    vals = arr.to_pylist()
    if kind == "int64" and arr.null_count and not ints_exact(vals):
        return None  # the numpy path rounds these through float64: leave it to that path
    return kind, vals


def ints_exact(vals: list[Any]) -> bool:
    """Whether an int64 column's values, some missing, have the bytes here that the numpy path gives
    them: that path turns such a column into float64, exact only up to 2**53 in magnitude."""
    return all(v is None or -_EXACT <= v <= _EXACT for v in vals)


def _column_bytes_tiny(arr: Any) -> list[bytes] | None:
    got = tiny_values(arr)
    return None if got is None else tiny_bytes(*got)


def tiny_bytes(kind: str, vals: list[Any]) -> list[bytes]:
    """:func:`column_bytes` of :func:`tiny_values`' ``(kind, vals)``, as a list of bytes."""
    n = len(vals)
    if None in vals:
        head = kind.encode() + b"\x00" + bit_bytes([v is not None for v in vals])
        if kind == "string":
            bs = [b"" if v is None else v.encode() for v in vals]
            return [head, packer("q", n)(*map(len, bs)), b"".join(bs)]
        zero = 0.0 if kind == "double" else 0
        return [head, packer("d" if kind == "double" else "q", n)(*(zero if v is None else v for v in vals))]
    head = _HEADS[kind] + all_valid(n)
    if kind == "string":
        bs = [v.encode() for v in vals]
        return [head, packer("q", n)(*map(len, bs)), b"".join(bs)]
    return [head, packer("d" if kind == "double" else "q", n)(*vals)]


_HEADS = {"string": b"string\x00", "double": b"double\x00", "int64": b"int64\x00"}


def column_hash_tiny(arr: Any) -> list[int] | None:
    """:func:`column_hash` as Python ints (unsigned 64-bit), or None where the numpy path must run."""
    got = tiny_values(arr)
    return None if got is None else tiny_hash(*got)


def tiny_hash(kind: str, vals: list[Any]) -> list[int]:
    """:func:`column_hash` of :func:`tiny_values`' ``(kind, vals)``, as Python ints."""
    if kind == "string":
        bs = [v.encode() if v is not None else b"" for v in vals]
        maxlen = max(len(b) for b in bs)
        if maxlen > 64:
            import hashlib

            raw = [int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "little") for b in bs]
        else:
            words = (maxlen + 7) // 8
            raw = []
            for b in bs:
                x = len(b)
                padded = b.ljust(words * 8, b"\x00")
                for j in range(0, words * 8, 8):
                    x = (x * _P1 + int.from_bytes(padded[j : j + 8], "little")) & _MASK
                raw.append(x)
    elif kind == "double":
        raw = [_UNPACK_U64(_PACK_F64((v or 0.0) if v == v else v))[0] for v in vals]
        # (v or 0.0): a missing value and -0.0 count as 0.0; NaN (v != v) keeps its bits
    else:
        raw = [(v or 0) & _MASK for v in vals]
    return [_mix_int(x) if v is not None else _NULL for x, v in zip(raw, vals, strict=True)]


_PACK_F64 = struct.Struct("<d").pack  # a float's 8 bytes
_UNPACK_U64 = struct.Struct("<Q").unpack  # 8 bytes as an unsigned 64-bit int


def combine_tiny(hashes: list[list[int]], n: int) -> np.ndarray:
    """:func:`combine` of :func:`column_hash_tiny` lists."""
    acc = [len(hashes)] * n
    for h in hashes:
        acc = [_mix_int((a * _P1 + x) & _MASK) for a, x in zip(acc, h, strict=True)]
    return np.array(acc, dtype=np.uint64).view(np.int64)


def row_hashes(cols: list[Any], n: int) -> np.ndarray:
    """:func:`combine` of :func:`column_hash` of each column: int64 row fingerprints (the tiny
    path for a few rows)."""
    if 0 < n <= TINY_ROWS:
        tiny = [column_hash_tiny(c) for c in cols]
        if all(h is not None for h in tiny):
            return combine_tiny(tiny, n)  # type: ignore[arg-type]
    return combine([column_hash(c) for c in cols], n)
