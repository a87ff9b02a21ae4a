"""Cross-validation of meter- and invoice-based firm-years, as Shenzhen's exchange does (issue #14).

Where both sources cover a firm-year and a column, the two figures are compared: a relative
difference ``|m - i| / max(|m|, |i|)`` above the declared tolerance is reported with both figures
and where they came from. The panel written keeps one value per column and records which source
was used and why (``X_source``), the other source's figure (``X_other``) and the difference
(``X_crossval``). Columns only one source gives (fuels, vehicle fuel, freight) are carried over
with their own provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .meters import Acquisition
from .quality import AcquireError, Issue, Report
from .readers import read_table, to_float, to_text
from .safeio import SourceError

PROVENANCE = (
    "_coverage",
    "_readings",
    "_invoices",
    "_lines",
    "_meters",
    "_months",
    "_policy",
    "_filled",
    "_source",
    "_issues",
    "_resale",
)


def _load(x: str | Path | Acquisition | pa.Table, what: str) -> tuple[pa.Table, str]:
    if isinstance(x, Acquisition):
        return x.table, what
    if isinstance(x, pa.Table):
        return x, what
    try:
        return _typed(read_table(Path(x)), str(x)), str(x)
    except SourceError as exc:
        raise AcquireError(str(exc)) from None


# a panel's text columns (codes such as industry "0610" stay text); every other column is a number
TEXT = frozenset({"firm_id", "firm_name", "city", "grid_region", "industry", "size", "unit"})
TEXT_SUFFIXES = ("_policy", "_source", "_name", "_id")


def _typed(t: pa.Table, name: str) -> pa.Table:
    """A panel read from CSV (every cell text) with its numbers as numbers, as Parquet keeps them:
    `acquire … -o panel.csv` is a crossval input like panel.parquet. An empty cell is missing; a
    value column or the year holding a cell that is not a number is an error naming the row."""
    values = set(_value_columns(t))
    for c in t.column_names:
        if not pa.types.is_string(t.schema.field(c).type) or c in TEXT or c.endswith(TEXT_SUFFIXES):
            continue
        if c in values:
            vals, bad = to_float(t[c])
            if bad.any():
                raise AcquireError(f"{name}: column {c}, data row {int(np.argmax(bad)) + 1}: not a number")
            typed: pa.Array | None = pa.array(vals, from_pandas=True)
        else:
            typed = _numbers(t[c])
            if c == "year" and (typed is None or not pa.types.is_integer(typed.type)):
                raise AcquireError(f"{name}: column year: a cell that is not a whole number")
            if typed is None:  # an attribute column of text after all: kept as it is
                continue
        t = t.set_column(t.schema.get_field_index(c), c, typed)
    return t


def _numbers(col: pa.ChunkedArray) -> pa.Array | None:
    """A text column as int64 when every cell is a whole number (a count), else as float64 (a
    share), else None; empty cells missing."""
    import pyarrow.compute as pc

    s = to_text(col)
    nulled = pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)
    for kind in (pa.int64(), pa.float64()):
        try:
            return pc.cast(nulled, kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return None


def _value_columns(t: pa.Table) -> list[str]:
    return [c for c in t.column_names if f"{c}_source" in t.column_names]


def crossvalidate(
    meters: str | Path | Acquisition | pa.Table,
    invoices: str | Path | Acquisition | pa.Table,
    tolerance: float = 0.05,
    prefer: str = "meters",
) -> Acquisition:
    """One firm-year panel from both sources; disagreements beyond ``tolerance`` are reported."""
    if prefer not in ("meters", "invoices"):
        raise AcquireError(f"prefer: '{prefer}' is neither 'meters' nor 'invoices'")
    if not 0 <= tolerance <= 1:
        raise AcquireError(f"tolerance: {tolerance} is not within 0..1")
    tm, nm = _load(meters, "meters")
    ti, ni = _load(invoices, "invoices")
    for t, n in ((tm, nm), (ti, ni)):
        if "firm_id" not in t.column_names or "year" not in t.column_names:
            raise AcquireError(f"{n}: not a firm-year panel (no firm_id / year columns)")
        if not _value_columns(t):  # a rating portfolio, say: nothing says where its values came from
            raise AcquireError(
                f"{n}: not a panel of `ruleengine acquire meters` or `acquire invoices` (no provenance columns "
                "such as electricity_mwh_source)"
            )
    rows_m = {(str(r["firm_id"]), int(r["year"])): r for r in tm.to_pylist()}
    rows_i = {(str(r["firm_id"]), int(r["year"])): r for r in ti.to_pylist()}
    cols_m, cols_i = _value_columns(tm), _value_columns(ti)
    both = sorted(set(cols_m) & set(cols_i))
    issues: list[Issue] = []
    out: list[dict[str, Any]] = []
    firms: list[dict[str, Any]] = []
    agree = disagree = 0
    first, second = (rows_m, rows_i) if prefer == "meters" else (rows_i, rows_m)
    for key in sorted(set(rows_m) | set(rows_i)):
        rm, ri = rows_m.get(key, {}), rows_i.get(key, {})
        row: dict[str, Any] = {}
        for src in (second.get(key, {}), first.get(key, {})):  # attributes: the preferred source wins
            for k, v in src.items():
                if v is not None and not any(k.startswith(f"{c}") for c in cols_m + cols_i):
                    row[k] = v
        row["firm_id"], row["year"] = key
        info: dict[str, Any] = {}
        for col in sorted(set(cols_m) | set(cols_i)):
            vm, vi = rm.get(col), ri.get(col)
            pick_m = (prefer == "meters" and vm is not None) or (prefer == "invoices" and vi is None and vm is not None)
            chosen, src_row, other = (rm, "meters", vi) if pick_m else (ri, "invoices", vm)
            value = chosen.get(col)
            if vm is None and vi is None:
                continue
            row[col] = value
            for suf in PROVENANCE:
                if f"{col}{suf}" in chosen:
                    row[f"{col}{suf}"] = chosen[f"{col}{suf}"]
            reason = src_row
            if col in both:
                row[f"{col}_other"] = other
                if vm is not None and vi is not None:
                    denom = max(abs(vm), abs(vi))
                    rel = 0.0 if denom == 0 else abs(vm - vi) / denom
                    row[f"{col}_crossval"] = round(rel, 6)
                    if rel <= tolerance:
                        agree += 1
                        reason = f"{src_row} (the other source agrees within {tolerance:.0%}: {rel:.1%})"
                    else:
                        disagree += 1
                        reason = f"{src_row} (preferred; the other source differs by {rel:.1%})"
                        issues.append(
                            Issue(
                                "warning",
                                "crossval",
                                f"{col}: meters {vm:g} ({rm.get(f'{col}_readings')} readings from "
                                f"{rm.get(f'{col}_meters')} meter(s), coverage {rm.get(f'{col}_coverage')}) "
                                f"vs invoices "
                                f"{vi:g} ({ri.get(f'{col}_invoices')} invoice(s)): "
                                f"{rel:.1%} apart, over the {tolerance:.0%} tolerance",
                                f"{src_row} used (preferred)",
                                nm if src_row == "meters" else ni,
                                subject=f"firm {key[0]}",
                                firm_id=key[0],
                                column=col,
                            )
                        )
                else:
                    row[f"{col}_crossval"] = None
                    if value is not None and other is None:
                        reason = f"{src_row} (the other source has no figure)"
                    elif value is None and other is not None:
                        reason = f"{src_row} (empty: its figure failed its own checks)"
            row[f"{col}_source"] = reason
            info[col] = {
                "value": value,
                "coverage": row.get(f"{col}_coverage"),
                "count": row.get(f"{col}_readings") or row.get(f"{col}_invoices"),
                "policy": reason,
            }
        out.append(row)
        firms.append({"firm_id": key[0], "columns": info})
    names: list[str] = []
    for r in out:
        for k in r:
            if k not in names:
                names.append(k)
    head = ["firm_id", "year"]
    names = head + [n for n in names if n not in head]
    arrays = {}
    for n in names:
        vals = [r.get(n) for r in out]
        if all(v is None or isinstance(v, bool) for v in vals):
            arrays[n] = pa.array(vals, type=pa.float64() if not any(isinstance(v, bool) for v in vals) else pa.bool_())
        elif all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in vals):
            arrays[n] = pa.array(vals, type=pa.int64())
        elif all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in vals):
            arrays[n] = pa.array([None if v is None else float(v) for v in vals], type=pa.float64())
        else:
            arrays[n] = pa.array([None if v is None else str(v) for v in vals], type=pa.string())
    years = sorted({k[1] for k in set(rows_m) | set(rows_i)})
    report = Report(
        "crossval",
        years[0] if years else 0,
        [nm, ni],
        issues,
        firms,
        {
            "compared": agree + disagree,
            "within tolerance": agree,
            "beyond tolerance": disagree,
            "tolerance": tolerance,
            "preferred": prefer,
        },
    )
    return Acquisition(pa.table(arrays), report)
