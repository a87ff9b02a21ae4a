"""Meter readings -> firm-year energy by carrier, with every check located (issue #14).

Pipeline, all vectorised over readings (numpy/pyarrow; Python loops run over files, meters and
issues, never over readings):

1. read each source (long form: meter, timestamp, value; wide "96-point" form: meter, date,
   00:15 ... 24:00) into flat arrays; bad cells become located issues and are left out;
2. map readings to register entries (meter id + validity period) by a sorted search;
3. sort by (entry, time); drop identical duplicates, treat conflicting ones as missing;
4. interval meters: negative values, off-grid times, spikes above the declared capacity, gaps;
   register (cumulative) meters: differences, rollover at 10**digits vs. reset, spikes, coverage;
5. sum per entry, then per firm and data-contract column, applying the declared gap policy.

Files that share no meter are processed group by group, so memory is bounded by the largest
group of files (stream by meter: write one file per block of meters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .quality import MAX_ROWS, AcquireError, Issue, Report, row_list
from .readers import find_column, format_ts, read_table_rows, to_epoch, to_float, to_text
from .register import TZ_OFFSET_S, Register, load_register, unit_matches
from .safeio import SourceError

METER_COLS = ("meter", "meter_id", "meter_no", "表号", "电表号", "表计编号", "计量点编号")
TS_COLS = ("timestamp", "time", "datetime", "ts", "时间", "数据时间", "采集时间")
VALUE_COLS = ("value", "reading", "示值", "读数", "电量", "用量", "energy")
DATE_COLS = ("date", "日期", "数据日期")
UNIT_COLS = ("unit", "单位")
MULT_COLS = ("multiplier", "倍率")
WIDE_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::00)?$")
SHIFT = 26  # sort key: entry << SHIFT | seconds into the year (a year < 2**25 s)


@dataclass
class Chunk:
    """The readings of one source file, as flat arrays (one element per reading)."""

    file: str
    names: list[str]  # meter ids; ``code`` indexes them
    code: np.ndarray
    ts: np.ndarray  # local epoch seconds, labelling the END of the interval
    val: np.ndarray
    row: np.ndarray  # 1-based data row in the file (header not counted)
    wide: bool
    unit_labels: list[str] | None = None
    unit_code: np.ndarray | None = None
    mult: np.ndarray | None = None
    on_grid: bool = False  # wide files: every timestamp is a day plus a header offset on the grid


def _meter_ids(table: pa.Table, col: str, name: str, issues: list[Issue]) -> tuple[np.ndarray, list[str], np.ndarray]:
    arr = table.column(col)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        issues.append(
            Issue(
                "warning",
                "meter_id_numeric",
                f"column '{col}' holds numbers: meter ids with leading zeros may have lost them",
                "ids compared as written",
                file=name,
            )
        )
        if pa.types.is_floating(arr.type):
            arr = pc.cast(arr, pa.int64(), safe=False)
    text = to_text(arr)
    enc = (
        pc.dictionary_encode(text).combine_chunks() if isinstance(text, pa.ChunkedArray) else pc.dictionary_encode(text)
    )
    codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int32)
    names = [str(x) for x in enc.dictionary.to_pylist()]
    empty = np.zeros(len(codes), dtype=bool)
    if "" in names:
        empty = codes == names.index("")
    return codes, names, empty


def read_meter_file(path: Path, reg: Register, issues: list[Issue]) -> Chunk:
    """Read one long-form or 96-point wide export; raises SourceError if the file is unusable."""
    name = str(path)
    table, rows, ragged = read_table_rows(path)
    for r, text, exp, act in ragged:
        issues.append(
            Issue(
                "error",
                "ragged_row",
                f"{act} cells where the header has {exp}: {text[:60]!r}",
                "row ignored",
                name,
                (r,) if r > 0 else (),
            )
        )
    mcol = find_column(table, METER_COLS)
    if mcol is None:
        raise SourceError(
            f"{name}: no meter column (one of {', '.join(METER_COLS)}); columns are {', '.join(table.column_names)}"
        )
    codes, names, empty_id = _meter_ids(table, mcol, name, issues)
    n = table.num_rows
    step = reg.interval_s
    wide_cols = [(c, WIDE_RE.match(c.strip())) for c in table.column_names]
    wide = [(c, int(m.group(1)) * 60 + int(m.group(2))) for c, m in wide_cols if m]
    unit_labels = unit_code = None
    ucol = find_column(table, UNIT_COLS)
    if ucol is not None:
        uenc = pc.dictionary_encode(to_text(table.column(ucol)))
        unit_code = np.asarray(uenc.indices.to_numpy(zero_copy_only=False), dtype=np.int32)
        unit_labels = [str(x) for x in uenc.dictionary.to_pylist()]
    mult = None
    kcol = find_column(table, MULT_COLS)
    if kcol is not None:
        mult, mbad = to_float(table.column(kcol))
        if mbad.any():
            bad_rows = rows[mbad]
            issues.append(
                Issue(
                    "warning",
                    "bad_multiplier",
                    f"{int(mbad.sum())} multiplier cell(s) are not numbers",
                    "the register's multiplier is used",
                    name,
                    row_list(bad_rows),
                    int(mbad.sum()),
                    column=kcol,
                )
            )
    if empty_id.any():
        issues.append(
            Issue(
                "error",
                "empty_meter_id",
                f"{int(empty_id.sum())} row(s) have no meter id",
                "rows ignored",
                name,
                row_list(rows[empty_id]),
                int(empty_id.sum()),
                column=mcol,
            )
        )
    if wide:
        dcol = find_column(table, DATE_COLS)
        if dcol is None:
            raise SourceError(f"{name}: a 96-point file needs a date column (one of {', '.join(DATE_COLS)})")
        offs = np.array([m for _, m in wide], dtype=np.int64) * 60
        if offs.min() == 0 and offs.max() < 86400:
            offs = offs + step  # labelled by the start of the interval: 00:00 ... 23:45
            if reg.convention == "end":
                issues.append(
                    Issue(
                        "info",
                        "convention",
                        "columns run 00:00 ... 23:45: read as interval-begin labels "
                        "although the register declares 'end'",
                        "the file's header is followed",
                        name,
                    )
                )
        elif reg.convention == "begin" and offs.max() == 86400:
            issues.append(
                Issue(
                    "info",
                    "convention",
                    "columns run to 24:00: read as interval-end labels although the register declares 'begin'",
                    "the file's header is followed",
                    name,
                )
            )
        day, dbad = to_epoch(table.column(dcol), TZ_OFFSET_S)
        dbad |= (day % 86400) != 0
        vals = np.empty((n, len(wide)), dtype=np.float64)
        for j, (c, _) in enumerate(wide):
            v, bad = to_float(table.column(c))
            if bad.any():
                issues.append(
                    Issue(
                        "error",
                        "bad_value",
                        f"{int(bad.sum())} cell(s) in column {c} are not numbers",
                        "cells treated as missing readings",
                        name,
                        row_list(rows[bad]),
                        int(bad.sum()),
                        column=c,
                    )
                )
            vals[:, j] = v
        keep_row = ~dbad & ~empty_id
        if dbad.any():
            issues.append(
                Issue(
                    "error",
                    "bad_date",
                    f"{int(dbad.sum())} date cell(s) are not dates",
                    "rows ignored",
                    name,
                    row_list(rows[dbad]),
                    int(dbad.sum()),
                    column=dcol,
                )
            )
        k = len(wide)
        ts = (day[:, None] + offs[None, :]).ravel()
        flat = vals.ravel()
        keep = np.repeat(keep_row, k) & ~np.isnan(flat)  # an empty cell is a missing reading (a gap)
        rrow = np.repeat(rows, k)
        chunk = Chunk(name, names, np.repeat(codes, k)[keep], ts[keep], flat[keep], rrow[keep], True)
        chunk.on_grid = bool((offs % step == 0).all())
        if unit_code is not None:
            chunk.unit_labels, chunk.unit_code = unit_labels, np.repeat(unit_code, k)[keep]
        if mult is not None:
            chunk.mult = np.repeat(mult, k)[keep]
        return chunk
    tcol = find_column(table, TS_COLS)
    vcol = find_column(table, VALUE_COLS)
    if tcol is None or vcol is None:
        raise SourceError(
            f"{name}: neither a long-form file (meter, timestamp, value) nor a 96-point file "
            "(meter, date, 00:15 ... 24:00); "
            f"columns are {', '.join(table.column_names)}"
        )
    ts, tbad = to_epoch(table.column(tcol), TZ_OFFSET_S)
    val, vbad = to_float(table.column(vcol))
    if reg.convention == "begin":
        ts = ts + step
    if tbad.any():
        issues.append(
            Issue(
                "error",
                "bad_timestamp",
                f"{int(tbad.sum())} timestamp(s) cannot be read",
                "rows ignored",
                name,
                row_list(rows[tbad]),
                int(tbad.sum()),
                column=tcol,
            )
        )
    if vbad.any():
        issues.append(
            Issue(
                "error",
                "bad_value",
                f"{int(vbad.sum())} value(s) are not numbers",
                "rows ignored",
                name,
                row_list(rows[vbad]),
                int(vbad.sum()),
                column=vcol,
            )
        )
    empty_v = np.isnan(val) & ~vbad
    if empty_v.any():
        issues.append(
            Issue(
                "warning",
                "empty_value",
                f"{int(empty_v.sum())} row(s) have no value",
                "treated as missing readings",
                name,
                row_list(rows[empty_v]),
                int(empty_v.sum()),
                column=vcol,
            )
        )
    keep = ~tbad & ~np.isnan(val) & ~empty_id
    chunk = Chunk(name, names, codes[keep], ts[keep], val[keep], rows[keep], False)
    if unit_code is not None:
        chunk.unit_labels, chunk.unit_code = unit_labels, unit_code[keep]
    if mult is not None:
        chunk.mult = mult[keep]
    return chunk


@dataclass
class _Segs:
    """The register entries as arrays, sorted by (meter id, start)."""

    reg: Register
    ids: list[str]
    entry: list[Any]
    mi: np.ndarray
    start: np.ndarray
    end: np.ndarray
    kind: np.ndarray  # 0 interval, 1 register
    mult: np.ndarray
    cap: np.ndarray
    digits: np.ndarray
    init: np.ndarray
    final: np.ndarray
    meter_index: dict[str, int]
    meter_kind: np.ndarray


def _segments(reg: Register) -> _Segs:
    entries = sorted(reg.meters, key=lambda e: (e.id, e.start))
    ids = sorted({e.id for e in entries})
    meter_index = {m: i for i, m in enumerate(ids)}
    mi = np.array([meter_index[e.id] for e in entries], dtype=np.int64)
    kind = np.array([1 if e.kind == "register" else 0 for e in entries], dtype=np.int8)
    mk = np.zeros(len(ids), dtype=np.int8)
    mk[mi] = kind
    return _Segs(
        reg, ids, entries, mi,
        np.array([e.start for e in entries], dtype=np.int64), np.array([e.end for e in entries], dtype=np.int64),
        kind, np.array([e.multiplier for e in entries]), np.array([e.capacity for e in entries]),
        np.array([e.digits for e in entries], dtype=np.int64), np.array([e.initial_reading for e in entries]),
        np.array([e.final_reading for e in entries]), meter_index, mk,
    )  # fmt: skip


@dataclass
class _Stats:
    """Per register entry, summed over file groups."""

    energy: np.ndarray  # in the meter's unit after multiplier
    filled: np.ndarray
    covered: np.ndarray  # intervals
    readings: np.ndarray
    problems: np.ndarray  # error + warning issues

    def add(self, other: _Stats) -> None:
        self.energy += other.energy
        self.filled += other.filled
        self.covered += other.covered
        self.readings += other.readings
        self.problems += other.problems

    @classmethod
    def zeros(cls, s: int) -> _Stats:
        return cls(np.zeros(s), np.zeros(s), np.zeros(s), np.zeros(s, dtype=np.int64), np.zeros(s, dtype=np.int64))


@dataclass
class _Ctx:
    segs: _Segs
    ystart: int
    yend: int
    step: int
    stats: _Stats
    issues: list[Issue]
    files: list[str] = field(default_factory=list)

    def emit(
        self,
        idx: np.ndarray,
        seg: np.ndarray | None,
        meter: np.ndarray,
        fidx: np.ndarray,
        row: np.ndarray,
        severity: str,
        code: str,
        message: str,
        action: str,
        details: Any = None,
        names: Sequence[str] | None = None,
    ) -> None:
        """One issue per (meter, file) for the readings ``idx``; ``message`` may use {n} and {first}.

        ``details(positions)`` may add text about the first few readings of each group."""
        if len(idx) == 0:
            return
        key = meter[idx].astype(np.int64) * (len(self.files) + 1) + fidx[idx]
        order = np.argsort(key, kind="stable")
        sk = key[order]
        starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        ends = np.r_[starts[1:], len(sk)]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            pos = idx[order[a:b]]
            m = int(meter[pos[0]])
            mid = names[m] if names is not None else self.segs.ids[m]
            firm = ""
            if seg is not None:
                e = self.segs.entry[int(seg[pos[0]])]
                firm = e.firm_id
                if severity != "info":
                    np.add.at(self.stats.problems, seg[pos[:1]], 1)
            text = message.format(n=b - a, first=format_ts(int(self._ts[pos[0]])))
            if details is not None:
                text += details(pos[:MAX_ROWS])
            self.issues.append(
                Issue(
                    severity,
                    code,
                    text,
                    action,
                    self.files[int(fidx[pos[0]])],
                    row_list(row[pos]),
                    b - a,
                    subject=f"meter {mid}",
                    firm_id=firm,
                )
            )

    _ts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _val: np.ndarray = field(default_factory=lambda: np.zeros(0))
    year_label: str = ""
    on_grid: bool = False  # every timestamp of the group is known to lie on the interval grid


def _ts_list(ts: np.ndarray, pos: np.ndarray, k: int = 3) -> str:
    return ", ".join(format_ts(int(t)) for t in ts[pos[:k]]) + (" ..." if len(pos) > k else "")


def _process_group(chunks: list[Chunk], ctx: _Ctx) -> None:
    segs, step, ystart, yend = ctx.segs, ctx.step, ctx.ystart, ctx.yend
    S = len(segs.entry)
    names = sorted(set().union(*(c.names for c in chunks)))
    where = {m: i for i, m in enumerate(names)}
    if len(chunks) == 1:  # the common case: no copies
        c0 = chunks[0]
        code = np.array([where[m] for m in c0.names], dtype=np.int32)[c0.code] if c0.names != names else c0.code
        ts, val, row = c0.ts, c0.val, c0.row
        fidx = np.broadcast_to(np.int32(ctx.files.index(c0.file)), ts.shape)
    else:
        code = np.concatenate([np.array([where[m] for m in c.names], dtype=np.int32)[c.code] for c in chunks])
        ts = np.concatenate([c.ts for c in chunks])
        val = np.concatenate([c.val for c in chunks])
        row = np.concatenate([c.row for c in chunks])
        fidx = np.concatenate([np.full(len(c.ts), ctx.files.index(c.file), dtype=np.int32) for c in chunks])
    any_long = any(not c.wide for c in chunks)
    longform = np.concatenate([np.full(len(c.ts), not c.wide) for c in chunks]) if any_long else np.zeros(0, dtype=bool)
    has_unit = any(c.unit_code is not None for c in chunks)
    labels: list[str] = []
    ucode = None
    if has_unit:
        labels = sorted({u for c in chunks for u in (c.unit_labels or [])} | {""})
        lw = {u: i for i, u in enumerate(labels)}
        ucode = np.concatenate([
            np.array([lw[u] for u in c.unit_labels], dtype=np.int32)[c.unit_code]
            if c.unit_code is not None and c.unit_labels is not None
            else np.full(len(c.ts), lw[""], dtype=np.int32)
            for c in chunks
        ])  # fmt: skip
    has_mult = any(c.mult is not None for c in chunks)
    fmult = (
        np.concatenate([c.mult if c.mult is not None else np.full(len(c.ts), np.nan) for c in chunks])
        if has_mult
        else None
    )
    for c in chunks:  # release the per-file arrays early
        c.code = c.ts = c.val = c.row = np.zeros(0)
    ctx._ts, ctx._val = ts, val
    ctx.on_grid = all(c.on_grid for c in chunks)

    # 1. meters known to the register
    mi_of = np.array([segs.meter_index.get(m, -1) for m in names], dtype=np.int32)
    mi = mi_of[code]
    any_unknown = bool((mi_of < 0).any())
    unknown = mi < 0 if any_unknown else np.zeros(len(mi), dtype=bool)
    if any_unknown:
        ctx.emit(np.flatnonzero(unknown), None, code, fidx, row, "error", "unknown_meter",
                 "{n} reading(s) of a meter that is not in the register", "ignored", names=names)  # fmt: skip
        mi = np.maximum(mi, 0)
    used_kinds = set(segs.meter_kind[mi_of[mi_of >= 0]].tolist())
    one_kind = len(used_kinds) <= 1
    kind0 = used_kinds.pop() if one_kind and used_kinds else 0
    kind_r = None if one_kind else segs.meter_kind[mi]
    # 2. interval-begin/end convention, judged at the year's edges (long-form rows only)
    if any_long:
        at_start = longform & ~unknown & (ts == ystart)
        if kind_r is not None:
            at_start &= kind_r == 0
        elif kind0 == 1:
            at_start &= False
        if at_start.any():
            last = np.zeros(len(segs.ids), dtype=bool)
            last[mi[(ts == yend) & ~unknown]] = True
            sus = np.flatnonzero(at_start & ~last[mi])
            conv = ctx.segs.reg.convention
            ctx.emit(sus, None, mi, fidx, row, "warning", "convention",
                     f"a reading is labelled {{first}} and none {format_ts(yend)}: the timestamps look like interval-"
                     f"{'begin' if conv == 'end' else 'end'} labels but the register declares '{conv}'",
                     "read as declared; the first reading falls outside the year")  # fmt: skip
    # 3. entry (validity period) of each reading: direct for meters with one entry, a sorted search otherwise
    nseg = np.bincount(segs.mi, minlength=len(segs.ids))
    first_seg = np.searchsorted(segs.mi, np.arange(len(segs.ids))).astype(np.int32)
    seg = first_seg[mi]
    if (nseg > 1).any():
        multi = np.flatnonzero(nseg[mi] > 1)
        tm = (
            ts[multi] - 1
            if kind_r is None and kind0 == 0
            else (np.where(kind_r[multi] == 0, ts[multi] - 1, ts[multi]) if kind_r is not None else ts[multi])
        )
        base = ystart - (1 << 34)
        key = mi[multi].astype(np.int64) * (1 << 36) + np.clip(tm - base, 0, (1 << 36) - 1)
        skey = segs.mi * (1 << 36) + np.clip(segs.start - base, 0, (1 << 36) - 1)
        seg[multi] = np.maximum(np.searchsorted(skey, key, side="right") - 1, 0)
    segc = seg
    # one test for year and validity together: (t - step, t] inside [max(start, year), min(end, year end)]
    lo_s, hi_s = _seg_bounds(ctx)
    span = np.where(segs.kind == 0, step, 0)
    lo_t = lo_s + span  # earliest end label
    if (lo_t == lo_t[0]).all() and (hi_s == hi_s[0]).all():  # every entry spans the same period
        keep = (ts >= lo_t[0]) & (ts <= hi_s[0])
    else:
        keep = (ts >= lo_t[seg]) & (ts <= hi_s[seg])
    if any_unknown:
        keep &= ~unknown
    if not keep.all():
        bad = np.flatnonzero(~keep & ~unknown)
        tb, sb = ts[bad], seg[bad]
        in_year = (tb >= ystart + span[sb]) & (tb <= yend)
        ctx.emit(bad[~in_year], None, mi, fidx, row, "info", "outside_year",
                 f"{{n}} reading(s) outside {ctx.year_label} (first {{first}})", "ignored")  # fmt: skip
        ctx.emit(bad[in_year], None, mi, fidx, row, "warning", "outside_validity",
                 "{n} reading(s) outside the meter's validity periods in the register (first {first})",
                 "ignored")  # fmt: skip
    # 4. unit and multiplier written in the file
    if ucode is not None:
        ok_unit = np.ones((len(labels), S), dtype=bool)
        for u, lab in enumerate(labels):
            if lab:
                ok_unit[u] = [unit_matches(lab, e) for e in segs.entry]
        bad_unit = keep & ~ok_unit[ucode, segc]
        if bad_unit.any():
            ctx.emit(
                np.flatnonzero(bad_unit),
                segc,
                mi,
                fidx,
                row,
                "error",
                "unit_mismatch",
                "{n} reading(s) in a unit that is not the register's",
                "ignored (no implicit conversion)",
                details=lambda p: (
                    f" (file says '{labels[int(ucode[p[0]])]}', register '{segs.entry[int(segc[p[0]])].unit}')"
                ),
            )
            keep &= ~bad_unit
    if fmult is not None:
        diff = keep & ~np.isnan(fmult) & ~np.isclose(fmult, segs.mult[segc])
        if diff.any():
            ctx.emit(
                np.flatnonzero(diff),
                segc,
                mi,
                fidx,
                row,
                "warning",
                "multiplier_mismatch",
                "{n} reading(s) carry a multiplier different from the register's",
                "the register's multiplier is used",
                details=lambda p: (
                    f" (file {fmult[p[0]]:g}, register {segs.mult[int(segc[p[0]])]:g}; "
                    f"first {format_ts(int(ts[p[0]]))})"
                ),
            )
    # 5. sort by (entry, time); stable, so equal keys keep file order (files usually come sorted)
    all_kept = bool(keep.all())
    identity = all_kept  # idx is 0..n-1: the arrays can be used as they are
    idx = np.arange(len(ts)) if all_kept else np.flatnonzero(keep)
    sk_seg = seg if all_kept else seg[idx]
    sk_t = ts - ystart if all_kept else ts[idx] - ystart
    skey2 = (sk_seg.astype(np.int64) << SHIFT) | sk_t
    del sk_seg, sk_t
    dk = np.diff(skey2)
    if len(dk) and bool((dk < 0).any()):
        order = np.argsort(skey2, kind="stable")
        idx, skey2 = idx[order], skey2[order]
        dk = np.diff(skey2)
        identity = False
    # 6. duplicates: identical ones dropped, conflicting ones treated as missing
    dpos = np.flatnonzero(dk == 0) + 1  # later members of a group of equal keys
    del dk
    if len(dpos):
        head = dpos - 1
        while True:  # walk back to the group's first member (groups are short)
            more = np.isin(head, dpos)
            if not more.any():
                break
            head = np.where(more, head - 1, head)
        heads = np.unique(head)
        members = np.union1d(heads, dpos)
        is_head = np.isin(members, heads)
        gid = np.cumsum(is_head) - 1  # members are sorted: each head is followed by its group
        v = val[idx[members]]
        gmax = np.full(len(heads), -np.inf)
        gmin = np.full(len(heads), np.inf)
        np.maximum.at(gmax, gid, v)
        np.minimum.at(gmin, gid, v)
        conflict_m = (gmax != gmin)[gid]
        dup = members[~is_head & ~conflict_m]
        conflict = members[conflict_m]
        ctx.emit(idx[dup], segc, mi, fidx, row, "info", "duplicate",
                 "{n} duplicate reading(s) with the same value (first {first})", "dropped")  # fmt: skip
        ctx.emit(idx[conflict], segc, mi, fidx, row, "warning", "conflicting_duplicate",
                 "{n} reading(s) share a timestamp with different values", "treated as missing",
                 details=lambda p: f" (at {format_ts(int(ts[p[0]]))}: "
                 + ", ".join(f"{val[q]:g}" for q in p[:3]) + ")")  # fmt: skip
        drop = np.zeros(len(idx), dtype=bool)
        drop[dup] = True
        drop[conflict] = True
        idx = idx[~drop]
        identity = False
    if identity:
        s, t, v = segc, ts, val  # nothing dropped or reordered: no copies
    else:
        s, t, v = segc[idx], ts[idx], val[idx]
    if one_kind:
        (_registers if kind0 == 1 else _intervals)(ctx, idx, s, t, v, mi, fidx, row)
        return
    is_reg = segs.kind[s] == 1
    _intervals(ctx, idx[~is_reg], s[~is_reg], t[~is_reg], v[~is_reg], mi, fidx, row)
    _registers(ctx, idx[is_reg], s[is_reg], t[is_reg], v[is_reg], mi, fidx, row)


def _seg_bounds(ctx: _Ctx) -> tuple[np.ndarray, np.ndarray]:
    return np.maximum(ctx.segs.start, ctx.ystart), np.minimum(ctx.segs.end, ctx.yend)


def _gap_text(
    ctx: _Ctx,
    g_seg: np.ndarray,
    g_from: np.ndarray,
    g_n: np.ndarray,
    g_row: np.ndarray,
    g_file: np.ndarray,
    severity: str,
    code: str,
    what: str,
    action: str,
) -> None:
    """One issue per meter entry with gaps: how many intervals in how many runs, the first three."""
    if len(g_seg) == 0:
        return
    order = np.lexsort((g_from, g_seg))
    g_seg, g_from, g_n, g_row, g_file = g_seg[order], g_from[order], g_n[order], g_row[order], g_file[order]
    starts = np.flatnonzero(np.r_[True, g_seg[1:] != g_seg[:-1]])
    ends = np.r_[starts[1:], len(g_seg)]
    step = ctx.step
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        sg = int(g_seg[a])
        e = ctx.segs.entry[sg]
        runs = ", ".join(
            f"{format_ts(int(g_from[k]) - step)} to "
            f"{format_ts(int(g_from[k]) + (int(g_n[k]) - 1) * step, end=True)} ({int(g_n[k])})"
            for k in range(a, min(b, a + 3))
        )
        more = " ..." if b - a > 3 else ""
        total = int(g_n[a:b].sum())
        rows = row_list(g_row[a:b][g_row[a:b] > 0])
        if severity != "info":
            ctx.stats.problems[sg] += 1
        ctx.issues.append(
            Issue(
                severity,
                code,
                f"{total} interval(s) {what} in {b - a} run(s): {runs}{more}",
                action,
                ctx.files[int(g_file[a])] if g_file[a] >= 0 else ctx.segs.reg.path,
                rows,
                b - a,
                subject=f"meter {e.id}",
                firm_id=e.firm_id,
            )
        )


def _intervals(
    ctx: _Ctx,
    idx: np.ndarray,
    s: np.ndarray,
    t: np.ndarray,
    v: np.ndarray,
    mi: np.ndarray,
    fidx: np.ndarray,
    row: np.ndarray,
) -> None:
    """Interval meters: each reading is the energy of (t - step, t]. About a dozen passes over the arrays."""
    segs, step, st = ctx.segs, ctx.step, ctx.stats
    S = len(segs.entry)
    if len(s) == 0:
        return
    full_seg: list[np.ndarray] = []

    def full() -> np.ndarray:  # the entry of every reading of the group, for issue messages only
        if not full_seg:
            f = np.zeros(len(mi), dtype=np.int64)
            f[idx] = s
            full_seg.append(f)
        return full_seg[0]

    bad = np.zeros(0, dtype=bool)
    if not ctx.on_grid:
        off = (t % step) != 0  # the year starts at midnight, on the grid
        if off.any():
            ctx.emit(idx[off], full(), mi, fidx, row, "warning", "off_grid",
                     f"{{n}} timestamp(s) not on the {step // 60}-minute grid (first {{first}})",
                     "ignored")  # fmt: skip
            bad = off
    neg = v < 0
    if neg.any():
        ctx.emit(idx[neg], full(), mi, fidx, row, "warning", "negative_interval",
                 "{n} negative interval value(s) (first {first})", "treated as missing",
                 details=lambda p: f": {', '.join(f'{ctx._val[q]:g}' for q in p[:3])}")  # fmt: skip
        bad = neg if not len(bad) else bad | neg
    thr = segs.cap * (step / 3600.0) / segs.mult  # in raw units; NaN where no capacity is declared
    if not np.isnan(thr).all():
        spike = v > thr[s]
        if len(bad):
            spike &= ~bad
        if spike.any():
            excl = ctx.segs.reg.spike_policy == "exclude"
            fs = full()
            ctx.emit(idx[spike], fs, mi, fidx, row, "warning", "spike",
                     "{n} interval(s) above the declared capacity (first {first})",
                     "treated as missing" if excl else "kept (spike_policy: keep)",
                     details=lambda p: (f": {', '.join(f'{ctx._val[q] * segs.mult[fs[q]]:g}' for q in p[:3])} > "
                                        f"{segs.cap[fs[p[0]]] * step / 3600:g} per interval"))  # fmt: skip
            if excl:
                bad = spike if not len(bad) else bad | spike
    if len(bad) and bad.any():
        good = ~bad
        s, t, v, idx = s[good], t[good], v[good], idx[good]
    if len(s) == 0:
        return
    st.energy += np.bincount(s, weights=v, minlength=S) * segs.mult
    cnt = np.bincount(s, minlength=S)
    st.covered += cnt
    st.readings += cnt
    # gaps: between readings of one entry, before its first and after its last
    lo, hi = _seg_bounds(ctx)
    ds = np.diff(s)
    dt = np.diff(t)
    inner = np.flatnonzero((dt != step) & (ds == 0)) + 1
    del dt
    bounds = np.flatnonzero(ds) + 1
    del ds
    firsts = np.r_[0, bounds]
    lasts = np.r_[bounds - 1, len(s) - 1]
    k_in = (t[inner] - t[inner - 1]) // step - 1
    k_lead = (t[firsts] - (lo[s[firsts]] + step)) // step
    k_tail = (hi[s[lasts]] - t[lasts]) // step
    gi, gl, gt = inner[k_in > 0], firsts[k_lead > 0], lasts[k_tail > 0]
    k_in, k_lead, k_tail = k_in[k_in > 0], k_lead[k_lead > 0], k_tail[k_tail > 0]
    g_seg = np.r_[s[gi], s[gl], s[gt]]
    g_from = np.r_[t[gi] - k_in * step, lo[s[gl]] + step, t[gt] + step]
    g_n = np.r_[k_in, k_lead, k_tail]
    g_row = np.r_[row[idx[gi]], row[idx[gl]], np.zeros(len(gt), dtype=np.int64)]
    g_file = np.r_[fidx[idx[gi]], fidx[idx[gl]], fidx[idx[gt]]]
    # interpolation between the neighbours of short inner gaps, where the carrier's policy says so
    pol = [ctx.segs.reg.policy_for(en.carrier) for en in segs.entry]
    interp = np.array([p.policy == "interpolate" for p in pol], dtype=bool)
    maxgap = np.array([p.max_gap_intervals for p in pol], dtype=np.int64)
    sel = interp[s[gi]] & (k_in <= maxgap[s[gi]])
    if sel.any():
        fi, kf = gi[sel], k_in[sel]
        m = segs.mult[s[fi]]
        amount = kf * (v[fi - 1] + v[fi]) * m / 2.0  # linear between the two neighbours
        st.filled += np.bincount(s[fi], weights=amount, minlength=S)
    _gap_text(ctx, g_seg, g_from, g_n, g_row, g_file, "warning", "gap", "missing", "see the firm's gap policy")


def _registers(
    ctx: _Ctx,
    idx: np.ndarray,
    s: np.ndarray,
    t: np.ndarray,
    v: np.ndarray,
    mi: np.ndarray,
    fidx: np.ndarray,
    row: np.ndarray,
) -> None:
    segs, step, st = ctx.segs, ctx.step, ctx.stats
    S = len(segs.entry)
    lo, hi = _seg_bounds(ctx)
    n = len(s)
    full = np.zeros(len(mi), dtype=np.int64)
    full[idx] = s
    st.readings += np.bincount(s, minlength=S)
    new = np.r_[True, s[1:] != s[:-1]] if n else np.zeros(0, dtype=bool)
    last = np.r_[s[1:] != s[:-1], True] if n else np.zeros(0, dtype=bool)
    # steps: between consecutive readings, from the declared initial reading, to the declared final one
    inner = np.flatnonzero(~new)
    d = np.r_[v[inner] - v[inner - 1]]
    dur = np.r_[t[inner] - t[inner - 1]]
    ss = s[inner]
    at = idx[inner]  # reading that closes the step
    tend = t[inner]
    prev_v = v[inner - 1]
    fi = np.flatnonzero(new & ~np.isnan(segs.init[s]) & (segs.start[s] >= ctx.ystart))
    la = np.flatnonzero(last & ~np.isnan(segs.final[s]) & (segs.end[s] <= ctx.yend))
    d = np.r_[d, v[fi] - segs.init[s[fi]], segs.final[s[la]] - v[la]]
    dur = np.r_[dur, t[fi] - segs.start[s[fi]], segs.end[s[la]] - t[la]]
    ss = np.r_[ss, s[fi], s[la]]
    at = np.r_[at, idx[fi], idx[la]]
    tend = np.r_[tend, t[fi], segs.end[s[la]]]
    prev_v = np.r_[prev_v, segs.init[s[fi]], v[la]]
    hours = dur / 3600.0
    neg = d < 0
    wrap = np.where(segs.digits[ss] > 0, 10.0 ** segs.digits[ss], np.nan)
    w = d + wrap
    capstep = segs.cap[ss] * hours
    plausible = np.where(np.isnan(capstep), w < wrap / 2, w * segs.mult[ss] <= capstep)
    roll = neg & ~np.isnan(wrap) & (w >= 0) & plausible
    reset = neg & ~roll
    if roll.any():
        ri = np.flatnonzero(roll)
        for k in ri.tolist():
            e = segs.entry[int(ss[k])]
            ctx.issues.append(
                Issue(
                    "info",
                    "rollover",
                    f"register rolled over at {format_ts(int(tend[k]))} ({prev_v[k]:g} -> {prev_v[k] + d[k]:g}, "
                    f"{e.digits} digits)",
                    f"counted as {w[k]:g} x {e.multiplier:g}",
                    ctx.files[int(fidx[at[k]])],
                    (int(row[at[k]]),),
                    1,
                    f"meter {e.id}",
                    e.firm_id,
                )
            )
        d = np.where(roll, w, d)
    if reset.any():
        for k in np.flatnonzero(reset).tolist():
            e = segs.entry[int(ss[k])]
            st.problems[int(ss[k])] += 1
            ctx.issues.append(
                Issue(
                    "warning",
                    "reset",
                    f"register went back at {format_ts(int(tend[k]))} ({prev_v[k]:g} -> {prev_v[k] + d[k]:g}) "
                    "with no replacement in the register and no plausible rollover",
                    "the step's energy is unknown: treated as missing",
                    ctx.files[int(fidx[at[k]])],
                    (int(row[at[k]]),),
                    1,
                    f"meter {e.id}",
                    e.firm_id,
                )
            )
    energy = d * segs.mult[ss]
    spike = ~reset & (energy > capstep)
    if spike.any():
        excl = ctx.segs.reg.spike_policy == "exclude"
        for k in np.flatnonzero(spike)[: MAX_ROWS * 10].tolist():
            e = segs.entry[int(ss[k])]
            st.problems[int(ss[k])] += 1
            ctx.issues.append(
                Issue(
                    "warning",
                    "spike",
                    f"{energy[k]:g} in {hours[k]:g} h to {format_ts(int(tend[k]))} is above the "
                    f"declared capacity ({capstep[k]:g})",
                    "treated as missing" if excl else "kept",
                    ctx.files[int(fidx[at[k]])],
                    (int(row[at[k]]),),
                    1,
                    f"meter {e.id}",
                    e.firm_id,
                )
            )
        if not excl:
            spike = np.zeros_like(spike)
    good = ~reset & ~spike
    st.energy += np.bincount(ss[good], weights=energy[good], minlength=S)
    st.covered += np.bincount(ss[good], weights=dur[good] / step, minlength=S)
    bridged = good & (dur > max(step, 86400)) & (np.arange(len(d)) < len(inner))  # a daily read is normal
    if bridged.any():
        bi = np.flatnonzero(bridged)
        _gap_text(
            ctx,
            ss[bi],
            tend[bi] - dur[bi] + step,
            dur[bi] // step - 1,
            row[at[bi]],
            fidx[at[bi]],
            "info",
            "bridged",
            "without a reading",
            "energy known from the register difference",
        )
    # not covered: before the first / after the last reading (no declared initial/final reading)
    lead = np.flatnonzero(new & ~np.isin(np.arange(n), fi) & (t > lo[s]))
    tail = np.flatnonzero(last & ~np.isin(np.arange(n), la) & (t < hi[s]))
    g_seg = np.r_[s[lead], s[tail]]
    g_from = np.r_[lo[s[lead]] + step, t[tail] + step]
    g_n = np.r_[(t[lead] - lo[s[lead]]) // step, (hi[s[tail]] - t[tail]) // step]
    g_row = np.r_[row[idx[lead]], row[idx[tail]]]
    g_file = np.r_[fidx[idx[lead]], fidx[idx[tail]]]
    _gap_text(
        ctx,
        g_seg,
        g_from,
        g_n,
        g_row,
        g_file,
        "warning",
        "gap",
        "not covered by register readings",
        "see the firm's gap policy",
    )


# ---------------------------------------------------------------------------------------------
# the firm-year table


@dataclass
class Acquisition:
    """The result of an acquisition: the firm-year table (Arrow) and the quality report."""

    table: pa.Table
    report: Report

    def write(self, path: str | Path) -> None:
        write_table(self.table, Path(path))


def write_table(table: pa.Table, path: Path) -> None:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            pq.write_table(table, path, compression="zstd")
        elif suffix == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, path)
        else:
            raise AcquireError(f"{path}: write .parquet or .csv")
    except OSError as exc:
        raise AcquireError(f"{path}: cannot write: {exc}") from None


def _year_bounds(year: int) -> tuple[int, int]:
    from .readers import days_from_civil

    a = int(days_from_civil(np.array([year]), np.array([1]), np.array([1]))[0]) * 86400
    b = int(days_from_civil(np.array([year + 1]), np.array([1]), np.array([1]))[0]) * 86400
    return a, b


def _groups(metas: list[set[str]]) -> list[list[int]]:
    """Files linked by a shared meter id, as groups (union-find over files)."""
    parent = list(range(len(metas)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, ms in enumerate(metas):
        for m in ms:
            j = owner.setdefault(m, i)
            if j != i:
                parent[find(i)] = find(j)
    out: dict[int, list[int]] = {}
    for i in range(len(metas)):
        out.setdefault(find(i), []).append(i)
    return list(out.values())


def _meter_set(path: Path) -> set[str] | None:
    """Meter ids of a Parquet file from its meter column alone; None for other formats."""
    if path.suffix.lower() not in (".parquet", ".pq") or not path.is_file():
        return None
    try:
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        names = schema.names
        lookup = {n.strip().lower(): n for n in names}
        col = next((lookup[a.lower()] for a in METER_COLS if a.lower() in lookup), None)
        if col is None:
            return None
        arr = pq.read_table(path, columns=[col]).column(0)
        return {str(x) for x in pc.unique(to_text(arr)).to_pylist()}
    except (pa.ArrowInvalid, OSError):
        return None


def acquire_meters(
    sources: Iterable[str | Path], register: str | Path | Register, year: int | None = None, jobs: int = 1
) -> Acquisition:
    """Meter exports + register -> firm-year table with coverage and provenance columns.

    ``jobs`` > 1 processes independent groups of files (no shared meter) in that many worker
    processes; the result is the same, summed in the same group order."""
    reg = register if isinstance(register, Register) else load_register(register)
    paths = [Path(p) for p in sources]
    if not paths:
        raise AcquireError("no meter files given")
    if jobs < 1:
        raise AcquireError(f"jobs: {jobs} is not a positive number of processes")
    issues: list[Issue] = []
    year = year or reg.year
    files = [str(p) for p in paths]
    cache: dict[int, Chunk] = {}
    metas: list[set[str]] = []
    skipped: set[int] = set()  # files found unreadable here: reported once, not read again in a group
    for i, p in enumerate(paths):
        ms = _meter_set(p)
        if ms is None:
            try:
                cache[i] = read_meter_file(p, reg, issues)
                ms = set(cache[i].names)
            except SourceError as exc:
                issues.append(Issue("error", "unreadable", str(exc), "file skipped", str(p)))
                skipped.add(i)
                ms = set()
        metas.append(ms)
    if year is None:
        year = _infer_year(paths, cache, reg, issues)
    ystart, yend = _year_bounds(year)
    segs = _segments(reg)
    ctx = _Ctx(segs, ystart, yend, reg.interval_s, _Stats.zeros(len(segs.entry)), issues, files)
    ctx.year_label = str(year)
    groups = [kept for g in _groups(metas) if (kept := [i for i in g if i not in skipped])]
    work = [([cache.pop(i) if i in cache else i for i in g]) for g in groups]
    if jobs > 1 and len(groups) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(_group_job, [(w, paths, reg, year, files) for w in work]))
    else:
        results = [_group_job((w, paths, reg, year, files), segs) for w in work]
    for st, found in results:  # in group order: deterministic sums and issue lists
        ctx.stats.add(st)
        issues.extend(found)
    _register_notes(ctx)
    _silent_meters(ctx)
    table, firms, totals = _firm_years(ctx, year)
    report = Report("meters", year, files, issues, firms, totals)
    return Acquisition(table, report)


def _group_job(
    args: tuple[list[Any], list[Path], Register, int, list[str]], segs: _Segs | None = None
) -> tuple[_Stats, list[Issue]]:
    """Read and check one group of files; returns its per-entry sums and issues."""
    items, paths, reg, year, files = args
    segs = segs or _segments(reg)
    ystart, yend = _year_bounds(year)
    issues: list[Issue] = []
    ctx = _Ctx(segs, ystart, yend, reg.interval_s, _Stats.zeros(len(segs.entry)), issues, files)
    ctx.year_label = str(year)
    chunks = []
    for it in items:
        if isinstance(it, Chunk):
            chunks.append(it)
            continue
        try:
            chunks.append(read_meter_file(paths[it], reg, issues))
        except SourceError as exc:
            issues.append(Issue("error", "unreadable", str(exc), "file skipped", files[it]))
    if chunks:
        _process_group(chunks, ctx)
    return ctx.stats, issues


def _infer_year(paths: list[Path], cache: dict[int, Chunk], reg: Register, issues: list[Issue]) -> int:
    for c in cache.values():
        if len(c.ts):
            years = (c.ts[:100_000] - 1).astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
            y = int(np.bincount(years - years.min()).argmax() + years.min())
            issues.append(Issue("info", "year", f"no year given: {y} inferred from the timestamps", "", c.file))
            return y
    raise AcquireError("no year given (--year, or 'year:' in the register) and none could be inferred from the files")


def _silent_meters(ctx: _Ctx) -> None:
    """Register entries that should report in the year but have no usable reading at all."""
    lo, hi = _seg_bounds(ctx)
    for k in np.flatnonzero((ctx.stats.readings == 0) & (hi > lo)).tolist():
        e = ctx.segs.entry[k]
        n = int((hi[k] - lo[k]) // ctx.step)
        ctx.stats.problems[k] += 1
        ctx.issues.append(
            Issue(
                "warning",
                "no_readings",
                f"no usable reading from {format_ts(int(lo[k]))} to {format_ts(int(hi[k]), end=True)} ({n} intervals)",
                "the period counts as missing",
                ctx.segs.reg.path,
                subject=f"meter {e.id}",
                firm_id=e.firm_id,
            )
        )


def _register_notes(ctx: _Ctx) -> None:
    """Replacements and multiplier changes declared in the register, for the report."""
    segs = ctx.segs
    for a, b in zip(segs.entry, segs.entry[1:], strict=False):
        if a.id != b.id or not (ctx.ystart < b.start < ctx.yend):
            continue
        when = format_ts(b.start)
        if a.multiplier != b.multiplier:
            ctx.issues.append(
                Issue(
                    "info",
                    "multiplier_change",
                    f"multiplier changes from {a.multiplier:g} to {b.multiplier:g} at {when}",
                    "each period uses its own",
                    segs.reg.path,
                    subject=f"meter {a.id}",
                    firm_id=a.firm_id,
                )
            )
        else:
            ctx.issues.append(
                Issue(
                    "info",
                    "replacement",
                    f"meter replaced at {when}",
                    "readings of each period counted apart",
                    segs.reg.path,
                    subject=f"meter {a.id}",
                    firm_id=a.firm_id,
                )
            )


def _out_column(e: Any) -> str:
    if e.direction == "export":
        return e.column.replace("_mwh", "_export_mwh")
    if e.resale:
        return e.column.replace("_mwh", "_resale_mwh")
    return str(e.column)


def _firm_years(ctx: _Ctx, year: int) -> tuple[pa.Table, list[dict[str, Any]], dict[str, Any]]:
    segs, st, step = ctx.segs, ctx.stats, ctx.step
    lo, hi = _seg_bounds(ctx)
    expected = np.maximum(hi - lo, 0) / step
    groups: dict[tuple[str, str, str], list[int]] = {}
    for k, e in enumerate(segs.entry):
        if expected[k] > 0:
            groups.setdefault((e.firm_id, _out_column(e), e.carrier), []).append(k)
    cols: dict[tuple[str, str], dict[str, Any]] = {}
    for (firm, col, carrier), ks in sorted(groups.items()):
        ix = np.array(ks)
        conv = np.array([segs.entry[k].unit_factor * segs.entry[k].column_factor for k in ks])
        observed = float((st.energy[ix] * conv).sum())
        filled = float((st.filled[ix] * conv).sum())
        cov_n = float(st.covered[ix].sum())
        exp_n = float(expected[ix].sum())
        pol = segs.reg.policy_for(carrier)
        value: float | None = observed
        note = ""
        coverage = min(cov_n / exp_n, 1.0) if exp_n else 0.0
        if cov_n == 0:
            value, filled, note = None, 0.0, "no readings"
        elif pol.policy == "scale":
            if coverage >= pol.min_coverage:
                value = observed / coverage
                filled = value - observed
            else:
                value, filled = None, 0.0
                note = f"coverage {coverage:.3f} below the policy minimum {pol.min_coverage:g}: left empty"
        elif pol.policy == "interpolate":
            value = observed + filled
        else:
            filled = 0.0
        c = cols.setdefault(
            (firm, col),
            {
                "value": 0.0,
                "observed": 0.0,
                "filled": 0.0,
                "cov": 0.0,
                "exp": 0.0,
                "readings": 0,
                "meters": set(),
                "policy": set(),
                "problems": 0,
                "note": [],
                "empty": False,
            },
        )
        if value is None:
            c["empty"] = True
        else:
            c["value"] += value
        c["observed"] += observed
        c["filled"] += filled
        c["cov"] += cov_n
        c["exp"] += exp_n
        c["readings"] += int(st.readings[ix].sum())
        c["meters"].update(segs.entry[k].id for k in ks)
        c["policy"].add(pol.describe())
        c["problems"] += int(st.problems[ix].sum())
        if note:
            c["note"].append(note)
    # resale (转供电) is netted out of the firm's purchase
    for (firm, col), c in list(cols.items()):
        if col.endswith("_resale_mwh"):
            base = cols.get((firm, col.replace("_resale_mwh", "_mwh")))
            if base is not None and not base["empty"] and not c["empty"]:
                base["value"] -= c["value"]
                base["note"].append(f"net of {c['value']:g} resold ({col})")
    firm_ids = sorted({f for f, _ in cols} | set(segs.reg.firms))
    out_cols = sorted({col for _, col in cols})
    data: dict[str, list[Any]] = {"firm_id": firm_ids, "year": [year] * len(firm_ids)}
    attrs = sorted({k for f in segs.reg.firms.values() for k in f})
    for a in attrs:
        vals = [segs.reg.firms.get(f, {}).get(a) for f in firm_ids]
        if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in vals):
            data[a] = [None if v is None else float(v) for v in vals]
        else:
            data[a] = [None if v is None else str(v) for v in vals]
    firms_out: list[dict[str, Any]] = [{"firm_id": f, "columns": {}} for f in firm_ids]
    pos = {f: i for i, f in enumerate(firm_ids)}
    for col in out_cols:
        lists: list[list[Any]] = [[None] * len(firm_ids) for _ in range(8)]
        vals_, cov, nread, nmet, pols, fill, src, prob = lists
        for (firm, cc), c in cols.items():
            if cc != col:
                continue
            i = pos[firm]
            vals_[i] = None if c["empty"] else round(c["value"], 9)
            cov[i] = round(min(c["cov"] / c["exp"], 1.0), 6) if c["exp"] else 0.0
            nread[i], nmet[i] = c["readings"], len(c["meters"])
            pols[i] = "; ".join(sorted(c["policy"]) + c["note"])
            fill[i] = round(c["filled"], 9)
            src[i] = "meters"
            prob[i] = c["problems"]
            firms_out[i]["columns"][col] = {
                "value": vals_[i], "coverage": cov[i], "count": nread[i], "meters": sorted(c["meters"]),
                "policy": pols[i], "filled": fill[i], "issues": prob[i],
            }  # fmt: skip
        data[col] = vals_
        data[f"{col}_coverage"] = cov
        data[f"{col}_readings"] = nread
        data[f"{col}_meters"] = nmet
        data[f"{col}_policy"] = pols
        data[f"{col}_filled"] = fill
        data[f"{col}_source"] = src
        data[f"{col}_issues"] = prob
    schema_types = {
        "_readings": pa.int64(),
        "_meters": pa.int64(),
        "_issues": pa.int64(),
        "_policy": pa.string(),
        "_source": pa.string(),
    }
    arrays: dict[str, Any] = {}
    for cname, vals in data.items():
        t: Any = next((ty for suf, ty in schema_types.items() if cname.endswith(suf)), None)
        if cname == "year":
            t = pa.int64()
        elif cname == "firm_id":
            t = pa.string()
        elif t is None and cname in out_cols or cname.endswith(("_coverage", "_filled")):
            t = pa.float64()
        arrays[cname] = pa.array(vals, type=t)
    table = pa.table(arrays)
    totals = {
        "readings used": int(st.readings.sum()),
        "meter periods": len(segs.entry),
        "firms": len(firm_ids),
    }
    return table, firms_out, totals
