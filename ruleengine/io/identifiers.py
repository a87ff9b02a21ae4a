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

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))  # GB 32100-2015, 4.3: W_i = 3^(i-1) mod 31

_VALUE = np.full(256, -1, dtype=np.int16)  # byte → value in the alphabet (-1 = not allowed)
for _i, _ch in enumerate(USCC_ALPHABET):
    _VALUE[ord(_ch)] = _i


_VALUE8 = np.where(_VALUE < 0, 255, _VALUE).astype(np.uint8)


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


def _uscc_values(raw_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, disallowed): each character's value in the code's alphabet, an (18, m) uint8
    matrix (255 = not allowed) from the (18, m) bytes; and per id whether any character is not
    allowed. Digits by arithmetic; the few other bytes (mostly the check character) looked up
    only where they occur, position by position."""
    values = raw_t - np.uint8(48)  # wraps below '0' to large values
    disallowed = np.zeros(raw_t.shape[1], dtype=bool)
    for i in range(raw_t.shape[0]):
        other = np.flatnonzero(values[i] > 9)
        if len(other):
            looked = _VALUE8[raw_t[i, other]]
            values[i, other] = looked
            disallowed[other[looked == 255]] = True
    return values, disallowed


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
    checked = np.ones(n, dtype=bool)
    invalid = ~is18
    idx18 = None if is18.all() else np.flatnonzero(is18)
    if only_lookalikes:
        checked = np.zeros(n, dtype=bool)
        # 15-20 characters of digits and capitals are 15-20 bytes
        near = np.flatnonzero(~is18 & (lengths >= 15) & (lengths <= 20))
        if len(near):
            sub = arr.take(array(near.astype(np.int64)))
            checked[near] = booleans(pc.match_substring_regex(sub, r"^[0-9][0-9A-Z]{14,19}$"))
    sub18 = arr if idx18 is None else arr.take(array(idx18.astype(np.int64)))
    if len(sub18):
        raw_t = np.ascontiguousarray(_rows18(sub18).T)  # (18, m): each character position contiguous
        values, disallowed = _uscc_values(raw_t)
        m = raw_t.shape[1]
        total = np.zeros(m, dtype=np.int16)  # at most 30 * 305: fits
        term = np.empty(m, dtype=np.int16)
        for i, w in enumerate(USCC_WEIGHTS):
            np.multiply(values[i], w, out=term, dtype=np.int16)
            total += term
        wrong = disallowed | ((31 - total % 31) % 31 != values[17])
        where = np.arange(n) if idx18 is None else idx18
        invalid[where] = wrong
        if only_lookalikes:  # from the alphabet: looks like a code; else digits and capitals, digit first
            looks = ~disallowed
            odd = np.flatnonzero(disallowed)
            if len(odd):
                sub = raw_t[:, odd]
                looks[odd] = _LOOKS[sub].all(axis=0) & (sub[0] >= 48) & (sub[0] <= 57)
            checked[where] = looks
    return checked, invalid & checked


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
