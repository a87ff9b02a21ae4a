"""Jurisdiction: the administrative division of each firm-year, and whether a rulebook rates it.

A rulebook may declare the divisions it rates (``jurisdiction: {divisions: ["3305"]}``, GB/T 2260
code prefixes). Each row's division is read from

1. a ``region`` column, when the row has one: a GB/T 2260 code of 2, 4 or 6 digits (where the
   firm is now), else
2. the firm id, when it is a valid unified social credit code (GB 32100-2015): characters 3-8
   are the division of the authority that registered the firm.

A row whose division lies outside every declared prefix is **outside**: unrated with the reason
``outside jurisdiction`` and left out of the rulebook's peer groups — unless the caller asks for
``any_jurisdiction``, which rates it and puts it in the peer groups, recorded on the row. A row
whose division cannot be told (an id that is not a valid credit code, a central-level code such as
``100000``, a region coarser than the prefixes and no credit code) is **unknown**: rated as inside,
with a recorded note. Everything is vectorised over the distinct ids (no per-row Python loop).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import data as _data
from .data import Batch, Category, DataIssue

INSIDE, OUTSIDE, UNKNOWN, OUTSIDE_RATED = 0, 1, 2, 3
STATUS_LABELS = ["inside", "outside", "unknown", "outside, rated (any jurisdiction)"]
_REGION_RE = r"^[0-9]{2}([0-9]{2}([0-9]{2})?)?$"


@dataclass
class Jurisdiction:
    """Per row: the jurisdiction status (:data:`STATUS_LABELS`) and the division it was judged by."""

    status: np.ndarray  # int8: INSIDE, OUTSIDE, UNKNOWN or OUTSIDE_RATED
    # the division per row (see ``division``), or what makes it when first read: (each firm id's
    # division code, -1 for none; the rows' firm codes, -1 for a missing id)
    _division: Category | tuple[np.ndarray, np.ndarray]
    book: str
    name: str
    divisions: tuple[str, ...]
    any_jurisdiction: bool = False

    @property
    def division(self) -> Category:
        """Per row, the division it was judged by: e.g. '330800 (firm_id)' or '3308 (region)'; code
        -1 where none could be told. Built on first use (most runs never read it row by row)."""
        if not isinstance(self._division, Category):
            codes, firm_codes = self._division
            label_of, labels = _id_division_labels(codes)
            self._division = Category(label_of[firm_codes], labels)
        return self._division

    def take(self, idx: np.ndarray) -> Jurisdiction:
        d = self._division
        division = d.take(idx) if isinstance(d, Category) else (d[0], d[1][idx])
        return Jurisdiction(self.status[idx], division, self.book, self.name, self.divisions, self.any_jurisdiction)

    def describe(self) -> str:
        """E.g. "huzhou's jurisdiction (Huzhou, Zhejiang: 3305xx)"."""
        codes = ", ".join(d + "x" * (6 - len(d)) for d in self.divisions)
        return f"{self.book}'s jurisdiction ({self.name}: {codes})"


def credit_code_divisions(labels: Any) -> np.ndarray:
    """The GB/T 2260 division (an int32 of 6 digits) of each id in ``labels`` (a pyarrow string
    array) written as a unified social credit code — 18 bytes, characters 1-2 of the code's
    alphabet, characters 3-8 digits starting with a province-level code; -1 for every other id.

    A code whose check character fails still gives its division: ``--id-check warn`` (the
    default) rates it and lists it as a data warning, ``--id-check error`` leaves it unrated.
    Read from the string buffer by table lookups over byte pairs: no regex, no Python string per id."""
    import pyarrow as pa

    from ._arrow import array
    from .identifiers import byte_lengths, division_digits

    arr = labels if labels.type == pa.string() else labels.cast(pa.string())
    out = np.full(len(arr), -1, dtype=np.int32)
    if not len(arr):
        return out
    is18 = byte_lengths(arr) == 18
    if is18.all():
        return division_digits(arr)
    where = np.flatnonzero(is18)
    if len(where):
        out[where] = division_digits(arr.take(array(where.astype(np.int64))))
    return out


def _status_of_code(code: np.ndarray, divisions: tuple[str, ...]) -> np.ndarray:
    """INSIDE / OUTSIDE for 6-digit division codes (UNKNOWN where code < 0)."""
    inside = np.zeros(len(code), dtype=bool)
    for d in divisions:  # code // 10^(6 - len(d)) == d, as a range of codes (no division)
        lo = int(d) * 10 ** (6 - len(d))
        inside |= (code >= lo) & (code < lo + 10 ** (6 - len(d)))
    # int8 arithmetic, no temporaries of int64: OUTSIDE (1) - inside, + 1 where unknown (never inside)
    status = np.subtract(np.int8(OUTSIDE), inside.view(np.int8))
    status += (code < 0).view(np.int8)
    return status


_FEW_CODES = 4096  # up to this many ids, the labels come from a sort, not from lookup tables


def _id_division_labels(codes: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(label per firm id, with a -1 appended that a missing id (code -1) reads; the labels, e.g.
    '330500 (firm_id)', sorted) from each id's division code (-1: none)."""
    if len(codes) <= _FEW_CODES:  # a few ids (a one-firm rating): no 1,000,001-entry tables to fill
        valid = codes >= 0
        distinct = np.unique(codes[valid])
        label_of = np.full(len(codes) + 1, -1, dtype=np.int32)
        label_of[:-1][valid] = np.searchsorted(distinct, codes[valid])
        return label_of, [f"{int(c):06d} (firm_id)" for c in distinct.tolist()]
    present = np.zeros(1_000_001, dtype=bool)  # the last entry: code -1 (an id without a division)
    present[codes] = True
    present[-1] = False
    distinct = np.flatnonzero(present)  # the divisions met, sorted: a few hundred at most
    lut = np.empty(1_000_001, dtype=np.int32)  # read only where set: the codes met, and -1
    lut[distinct] = np.arange(len(distinct), dtype=np.int32)
    lut[-1] = -1
    label_of = np.append(np.take(lut, codes), np.int32(-1))
    return label_of, [f"{int(c):06d} (firm_id)" for c in distinct.tolist()]


def _status_of_region(region: str, divisions: tuple[str, ...]) -> int:
    if any(region.startswith(d) for d in divisions):
        return INSIDE
    if any(d.startswith(region) for d in divisions):
        return UNKNOWN  # coarser than the declared divisions: cannot tell
    return OUTSIDE


def assign(
    batch: Batch,
    region: Any,
    missing: tuple[str, ...],
    book: str,
    name: str,
    divisions: tuple[str, ...],
    any_jurisdiction: bool = False,
) -> Batch:
    """Judge every row of ``batch`` against ``divisions`` (see the module's docstring).

    ``region``: the raw ``region`` column (or None); ``missing``: the missing-value tokens. Rows
    outside are made invalid (unrated, out of the peer groups) unless ``any_jurisdiction``. A
    region cell that is not a GB/T 2260 code is a located warning (one per distinct value) and
    the row is judged by its firm id instead."""
    if not divisions:
        return batch

    from .data import _category_from_arrow, _text
    from .identifiers import division_of

    n = batch.n
    labels: list[str] = []
    outside = False  # whether any row can be outside (else the outside passes below are skipped)
    ids = batch.columns.get("firm_id")
    row_label: np.ndarray | tuple[np.ndarray, np.ndarray]  # per row, or (per firm code, firm codes)
    if not (isinstance(ids, Category) and ids.label_count):
        status = np.full(n, UNKNOWN, dtype=np.int8)
        row_label = np.full(n, -1, dtype=np.int32)
    else:
        if not ids.labels_from_arrow and ids.label_count <= _data.TINY_ROWS:  # a few ids: one by one
            codes = np.array([division_of(x) for x in ids.labels], dtype=np.int32)
        else:
            codes = credit_code_divisions(ids.arrow_labels())  # per distinct id
        per_id = np.append(_status_of_code(codes, divisions), np.int8(UNKNOWN))  # the appended: no id
        status = per_id[ids.codes]  # code -1 (no id) reads the appended entry
        row_label = (codes, ids.codes)  # the division per row when first read (Jurisdiction.division)
        outside = bool((per_id == OUTSIDE).any())
    if region is not None:
        text, _ = _text(region, n)  # a cell that is not text (a list …) reads as missing
        cat = _category_from_arrow(text, sort=True, missing=missing)  # labels trimmed
        if cat.label_count:
            lab = cat.labels
            ok = [re.match(_REGION_RE, x) is not None for x in lab]
            bad = [k for k in range(len(lab)) if not ok[k]]
            if bad:  # one warning per distinct value, the first 5 of them (a count per value: one pass)
                per = np.bincount(cat.codes[cat.codes >= 0], minlength=len(lab))
                for k in bad[:5]:
                    first = int(np.argmax(cat.codes == k))
                    batch.issues.append(
                        DataIssue(
                            batch.source,
                            int(batch.row_numbers[first]),
                            "region",
                            f"{lab[k][:40]!r} is not a GB/T 2260 division code (2, 4 or 6 digits) ({int(per[k]):,} "
                            "rows): the firm id's division is used"
                            + (f"; and {len(bad) - 5:,} more such values" if len(bad) > 5 and k == bad[4] else ""),
                            fatal=False,
                        )
                    )
            region_status = np.array(
                [_status_of_region(x, divisions) if ok[k] else -1 for k, x in enumerate(lab)] + [-1], dtype=np.int8
            )
            if isinstance(row_label, tuple):  # the id divisions first, then the regions
                label_of, labels = _id_division_labels(row_label[0])
                row_label = label_of[row_label[1]]
            base = len(labels)
            labels = labels + [f"{x} (region)" for x in lab]
            rs = region_status[cat.codes]
            use = rs >= 0
            status = np.where(use, rs, status).astype(np.int8)
            outside = outside or bool((region_status == OUTSIDE).any())
            row_label = np.where(use, base + cat.codes, row_label).astype(np.int32)
    if outside and any_jurisdiction:
        status = np.where(status == OUTSIDE, OUTSIDE_RATED, status).astype(np.int8)
    elif outside:
        batch.invalid |= status == OUTSIDE
    division = row_label if isinstance(row_label, tuple) else Category(row_label, labels)
    batch.jurisdiction = Jurisdiction(status, division, book, name, divisions, any_jurisdiction)
    return batch
