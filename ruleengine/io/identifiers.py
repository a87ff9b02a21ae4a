"""Identifiers in firm data: unified social credit codes and GB/T 4754-2017 industry codes.

* **Unified social credit code** (统一社会信用代码), GB 32100-2015 *Coding rule of the unified social
  credit identifier for legal entities and other organizations* (official): 18 characters from
  ``0-9`` and the 21 capitals ``ABCDEFGHJKLMNPQRTUWXY`` (no I, O, Z, S, V); character 1 the
  registering authority, 2 the entity type, 3-8 the administrative division (GB/T 2260),
  9-17 the organisation code, 18 a check character: with ``a_i`` the value of character ``i``
  (its position in the 31-character alphabet) and weights ``W_i = 3^(i-1) mod 31``
  (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28), the check value is
  ``31 - (Σ a_i·W_i mod 31)``, 31 written as 0.
* **Industry** (国民经济行业分类), GB/T 4754-2017 (official; 20 sections, 97 divisions, 473 groups,
  1,380 classes), shipped as ``gbt4754_2017.tsv``: code → level, section, Chinese name (and an
  English name for the sections and divisions, ruleengine's own translation, assumed). Firm data carries the
  4-digit class code as text.

Checks are vectorised over the distinct values (firm ids come as an Arrow dictionary): a
portfolio of half a million firms is checked without a Python loop over them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from ..rulebook.plan import GBT2260_PROVINCES

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))  # GB 32100-2015, 4.3: W_i = 3^(i-1) mod 31

_VALUE = np.full(256, -1, dtype=np.int16)  # byte → value in the alphabet (-1 = not allowed)
for _i, _ch in enumerate(USCC_ALPHABET):
    _VALUE[ord(_ch)] = _i


_LOOKS = np.zeros(256, dtype=bool)  # digits and capitals: what a credit code is written with
_LOOKS[48:58] = True
_LOOKS[65:91] = True


def uscc_check_char(first17: str) -> str:
    """The check character of the first 17 characters of a unified social credit code."""
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def uscc_problem(code: str) -> str | None:
    """Why ``code`` is not a valid unified social credit code, or None when it is.

    Plain Python for one code (messages are made for a few ids; building a one-element Arrow
    array from a list would import pyarrow's pandas bridge, a third of a second).
    """
    if len(code) != 18 or len(code.encode("utf-8")) != 18:
        return f"has {len(code)} characters, a unified social credit code has 18 (GB 32100-2015)"
    for pos, ch in enumerate(code):
        if ch not in USCC_ALPHABET:
            return (
                f"character {pos + 1} {ch!r} is not allowed in a unified social credit code "
                "(0-9 and capitals except I, O, Z, S, V; GB 32100-2015)"
            )
    expected = uscc_check_char(code[:17])
    if code[17] != expected:
        return f"check character is {code[17]!r}, expected {expected!r} (GB 32100-2015): a typo or a truncated code"
    return None


def _rows18(arr: Any) -> np.ndarray:
    """The bytes of a string array whose every value is 18 bytes long, as an (n, 18) view."""
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=arr.offset + len(arr) + 1)[arr.offset :]
    start = int(offsets[0])
    return data[start : start + 18 * len(arr)].reshape(len(arr), 18)


def _pair(arr: Any, k: int) -> np.ndarray:
    """Characters ``2k+1`` and ``2k+2`` of each value of a string array whose every value is 18
    bytes long, as one little-endian uint16 (first byte + 256 x second byte): a strided view on
    the string buffer, no copy."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=arr.offset + len(arr) + 1)[arr.offset :]
    return np.ndarray((len(arr),), dtype="<u2", buffer=arr.buffers()[2], offset=int(offsets[0]) + 2 * k, strides=(18,))


# Lookup tables over a pair of bytes (65,536 entries each; see _pair). The check: with the check
# character's weight taken as 1, a code is valid iff sum(a_i*W_i) + a_18 = 0 (mod 31) (the check
# value 31 - s mod 31, 31 written as 0, is the a_18 with s + a_18 = 0 mod 31). Pair k of the 9
# gives (a*W + b*W') mod 31 (<= 30), or _DISALLOWED when either byte is outside the alphabet:
# the sum over the 9 pairs is below _DISALLOWED (at most 270) only for a code written wholly in
# the alphabet, and fits a uint16 either way (9 x 4,096 + 270).
_DISALLOWED = 4096
_LO = _VALUE[np.arange(65536) & 255].astype(np.int32)
_HI = _VALUE[np.arange(65536) >> 8].astype(np.int32)
_PAIR_SUM = []
for _k in range(9):
    _w = (*USCC_WEIGHTS, 1)
    _PAIR_SUM.append(
        np.where((_LO < 0) | (_HI < 0), _DISALLOWED, (_LO * _w[2 * _k] + _HI * _w[2 * _k + 1]) % 31).astype(np.uint16)
    )
_SUM_OK = np.zeros(65536, dtype=bool)  # the pair sums of a code that passes: in the alphabet, 0 mod 31
_SUM_OK[np.arange(0, _DISALLOWED, 31)] = True
_IN_ALPHABET2 = (_LO >= 0) & (_HI >= 0)  # both characters of a pair in the code's alphabet
_B0, _B1 = np.arange(65536) & 255, np.arange(65536) >> 8
_DIGITS2 = np.where(  # two digit characters → their number 0-99; 255 for anything else
    (_B0 >= 48) & (_B0 <= 57) & (_B1 >= 48) & (_B1 <= 57), (_B0 - 48) * 10 + (_B1 - 48), 255
).astype(np.uint8)
_PROVINCE = np.zeros(256, dtype=bool)  # the first two digits of a province-level division (GB/T 2260)
_PROVINCE[[int(p) for p in GBT2260_PROVINCES]] = True
del _LO, _HI, _B0, _B1, _k, _w


def _uscc18(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """(valid, disallowed) per value of a string array whose every value is 18 bytes long: the
    value is a valid unified social credit code; a character of it is outside the code's alphabet.
    Nine table lookups over the byte pairs, each a strided view on the string buffer: no copy, no
    transpose, no per-character pass."""
    total = np.take(_PAIR_SUM[0], _pair(arr, 0))
    term = np.empty_like(total)  # one buffer for the other eight lookups
    for k in range(1, 9):
        np.take(_PAIR_SUM[k], _pair(arr, k), out=term, mode="clip")  # in range: no check
        total += term
    return np.take(_SUM_OK, total), total >= _DISALLOWED


def division_digits(arr: Any) -> np.ndarray:
    """Per value of a string array whose every value is 18 bytes long: characters 3-8 as a number
    (0-999,999) when characters 1-2 are in the credit code's alphabet and 3-8 are digits starting
    with a province-level code (GB/T 2260), else -1. Four table lookups over byte pairs."""
    d1, d2, d3 = (np.take(_DIGITS2, _pair(arr, k)) for k in (1, 2, 3))
    ok = np.take(_IN_ALPHABET2, _pair(arr, 0)) & np.take(_PROVINCE, d1) & (np.maximum(d2, d3) <= 99)
    code = d1.astype(np.int32) * 10_000
    code += d2.astype(np.int32) * 100
    code += d3
    code[~ok] = -1
    return code


def byte_lengths(arr: Any) -> np.ndarray:
    """The UTF-8 byte length of each value of a pyarrow ``string`` array (0 for a null), read from
    its offsets buffer: no compute kernel, no conversion."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=arr.offset + len(arr) + 1)[arr.offset :]
    lengths = np.diff(offsets)
    if arr.null_count:  # a null slot may still span bytes (the format allows it)
        from ._arrow import valid

        ok = valid(arr)
        if ok is not None:
            lengths[~ok] = 0
    return lengths


def check_ids(codes: Any, only_lookalikes: bool) -> tuple[np.ndarray, np.ndarray]:
    """(checked, invalid) masks over ``codes`` (a pyarrow string array), vectorised, no messages.

    ``only_lookalikes``: check only ids that look meant as credit codes (15-20 digits and
    capitals, starting with a digit); otherwise every id is checked. Lengths come from the
    offsets (bytes): an 18-byte id with a character outside ASCII fails the alphabet and, in the
    lookalike mode, does not look like a code, as it would by its character count.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from ._arrow import array, booleans

    arr = codes if codes.type == pa.string() else codes.cast(pa.string())
    n = len(arr)
    lengths = byte_lengths(arr)
    is18 = lengths == 18
    all18 = bool(is18.all())
    checked = np.ones(n, dtype=bool)
    invalid = np.zeros(n, dtype=bool) if all18 else ~is18
    idx18 = None if all18 else np.flatnonzero(is18)
    if only_lookalikes:
        checked = np.zeros(n, dtype=bool)
        # 15-20 characters of digits and capitals are 15-20 bytes
        near = np.flatnonzero(~is18 & (lengths >= 15) & (lengths <= 20))
        if len(near):
            sub = arr.take(array(near.astype(np.int64)))
            checked[near] = booleans(pc.match_substring_regex(sub, r"^[0-9][0-9A-Z]{14,19}$"))
    sub18 = arr if idx18 is None else arr.take(array(idx18.astype(np.int64)))
    if len(sub18):
        valid, disallowed = _uscc18(sub18)
        where = slice(None) if idx18 is None else idx18
        invalid[where] = ~valid
        if only_lookalikes:  # from the alphabet: looks like a code; else digits and capitals, digit first
            looks = ~disallowed
            odd = np.flatnonzero(disallowed)
            if len(odd):
                sub = _rows18(sub18)[odd]
                looks[odd] = _LOOKS[sub].all(axis=1) & (sub[:, 0] >= 48) & (sub[:, 0] <= 57)
            checked[where] = looks
    return checked, invalid & checked


_LOOKALIKE = re.compile(r"[0-9][0-9A-Z]{14,19}")


def check_ids_few(codes: list[str], only_lookalikes: bool) -> np.ndarray:
    """The ``invalid`` mask of :func:`check_ids` for a few ids given as Python strings, one by one
    (building Arrow arrays and nine table lookups cost more than a handful of ids themselves)."""
    out = np.zeros(len(codes), dtype=bool)
    for k, code in enumerate(codes):
        size = len(code.encode("utf-8"))
        if size == 18:
            bad = uscc_problem(code) is not None
            if bad and only_lookalikes and not all(c in USCC_ALPHABET for c in code):
                # outside the alphabet: checked only when written in digits and capitals, digit first
                bad = code.isascii() and code[0].isdigit() and all(c.isdigit() or "A" <= c <= "Z" for c in code)
        else:
            bad = not only_lookalikes or (15 <= size <= 20 and _LOOKALIKE.fullmatch(code) is not None)
        out[k] = bad
    return out


def division_of(code: str) -> int:
    """:func:`division_digits` of one id (a Python string), -1 for an id that is not written as a
    unified social credit code."""
    raw = code.encode("utf-8")
    if len(raw) != 18 or raw[0] not in _ALPHABET_BYTES or raw[1] not in _ALPHABET_BYTES:
        return -1
    digits = raw[2:8]
    if not all(48 <= b <= 57 for b in digits) or not _PROVINCE[int(digits[:2])]:
        return -1
    return int(digits)


_ALPHABET_BYTES = frozenset(USCC_ALPHABET.encode("ascii"))


# -- GB/T 4754-2017 -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Industry:
    code: str
    level: int  # 1 section, 2 division, 3 group, 4 class
    section: str
    name_zh: str
    name_en: str


LEVEL_NAMES = {1: "section (门类)", 2: "division (大类)", 3: "group (中类)", 4: "class (小类)"}


@lru_cache(maxsize=1)
def classification() -> dict[str, Industry]:
    """GB/T 4754-2017: code → :class:`Industry` (all four levels)."""
    text = resources.files("ruleengine.io").joinpath("gbt4754_2017.tsv").read_text(encoding="utf-8")
    out: dict[str, Industry] = {}
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    for line in lines[1:]:
        code, level, section, zh, en = (line.split("\t") + [""] * 5)[:5]
        out[code] = Industry(code, int(level), section, zh, en)
    return out


def industry_problem(code: str) -> str | None:
    """Why ``code`` is not a GB/T 4754-2017 class code (4 digits), with a did-you-mean; None if it is."""
    table = classification()
    hit = table.get(code)
    if hit is not None and hit.level == 4:
        return None
    if hit is not None:
        return f"{code!r} is a GB/T 4754-2017 {LEVEL_NAMES[hit.level]} ({hit.name_zh}), not a 4-digit class code"
    if code.isdigit() and len(code) == 3:
        padded = "0" + code
        cand = table.get(padded)
        if cand is not None and cand.level == 4:
            return (
                f"{code!r} is not a GB/T 4754-2017 class code (did you mean '{padded}' {cand.name_zh}? "
                "a leading zero lost when the file went through Excel)"
            )
    by_name = {v.name_zh: v for v in table.values()}
    if code in by_name:
        v = by_name[code]
        return (
            f"{code!r} is an industry name, not a code (GB/T 4754-2017 {v.code}): names are accepted "
            "only through a column mapping file (industry_names)"
        )
    if code.isdigit() and len(code) == 4:
        return f"{code!r} is not a GB/T 4754-2017 class code"
    return f"{code!r} is not a GB/T 4754-2017 class code (4 digits as text, e.g. '3011')"
