"""Benchmark of the acquisition stage (issue #14); writes benchmarks/ACQUIRE.md.

    python benchmarks/bench_acquire.py                 # 3,000 firms (~105M readings), 1M invoice lines
    python benchmarks/bench_acquire.py --firms 300     # a quick run

What is measured, each in a fresh child process (wall time and peak RSS of that process):

1. meters: a year of 15-minute electricity readings for N firms, exported as 96-point wide Parquet
   files of 100 meters each (Quzhou's scale: 3,000 firms = 105.4M readings), with gaps, duplicate
   days, spikes and negative intervals injected; ``acquire_meters`` reads, checks and aggregates
   them to the firm-year table. Target: <= 30 s, peak <= 6 GB.
2. the same files aggregated by a plain polars query (unpivot, sum and count per meter, no
   checks): the peer, in the same run; the ratio is reported.
3. invoices: a 1M-line ledger CSV through ``acquire_invoices``. Target: <= 10 s.
4. a 10-million-row long-form CSV with one bad row: the located error and the time.

The machine is shared: the load average before each step is recorded next to its time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BLOCK = 100  # meters per Parquet file
YEAR = 2024

CHILD = r"""
import json, resource, sys, time
kind, args = sys.argv[1], json.loads(sys.argv[2])
t0 = time.perf_counter()
import resource as _r
_c0 = _r.getrusage(_r.RUSAGE_SELF)
out = {}
if kind == "meters":
    from ruleengine.acquire import acquire_meters
    acq = acquire_meters(args["files"], args["register"], year=args["year"], jobs=args.get("jobs", 1))
    out["rows"] = acq.table.num_rows
    out["readings"] = acq.report.totals["readings used"]
    out["issues"] = acq.report.counts()
    out["total_mwh"] = float(sum(v for v in acq.table.column("electricity_mwh").to_pylist() if v is not None))
    bad = [i for i in acq.report.issues if i.code in ("bad_value", "bad_timestamp", "ragged_row")]
    out["located"] = [i.format() for i in bad][:3]
elif kind == "polars":
    import polars as pl
    lf = pl.scan_parquet(args["files"])
    cols = [c for c in lf.collect_schema().names() if ":" in c]
    res = (lf.unpivot(index=["meter", "date"], on=cols).drop_nulls("value")
             .group_by("meter").agg(pl.col("value").sum().alias("kwh"), pl.len().alias("n")).collect())
    out["rows"] = res.height
    out["readings"] = int(res["n"].sum())
elif kind == "invoices":
    from ruleengine.acquire import acquire_invoices
    acq = acquire_invoices(args["files"], args["mapping"], year=args["year"])
    out["rows"] = acq.table.num_rows
    out["lines"] = acq.report.totals["lines used"]
    out["issues"] = acq.report.counts()
out["seconds"] = time.perf_counter() - t0
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
out["cpu_s"] = me.ru_utime + me.ru_stime - _c0.ru_utime - _c0.ru_stime + kids.ru_utime + kids.ru_stime
out["peak_mb"] = max(me.ru_maxrss, kids.ru_maxrss) / 1024
print(json.dumps(out))
"""


def _child(kind: str, args: dict) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CHILD, kind, json.dumps(args)], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{p.stderr}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    out["load_before"] = load
    return out


def make_meters(d: Path, firms: int, seed: int = 0) -> tuple[list[str], Path, int]:
    rng = np.random.default_rng(seed)
    days = 366
    dates = (np.datetime64(f"{YEAR}-01-01") + np.arange(days)).astype(str)
    hour = (np.arange(96) * 15 + 15) / 60.0
    shape = 0.45 + 0.55 * ((hour > 8) & (hour <= 18))
    names = [f"{m // 60:02d}:{m % 60:02d}" for m in range(15, 1441, 15)]
    files: list[str] = []
    reg = [f"year: {YEAR}", "gap_policy: {policy: scale, min_coverage: 0.8}", "meters:"]
    readings = 0
    for b in range(0, firms, BLOCK):
        ids = [f"{330500000000 + k:012d}" for k in range(b, min(firms, b + BLOCK))]
        n = len(ids)
        base = rng.lognormal(5.0, 0.7, size=n)
        vals = (base[:, None, None] * 0.25 * shape[None, None, :] * rng.normal(1, 0.05, size=(n, days, 96))).reshape(
            n * days, 96
        )
        vals = np.round(vals, 3)
        # defects: gaps, spikes, negative intervals, a duplicate day per file
        holes = rng.random(vals.shape) < 0.002
        vals[holes] = np.nan
        spikes = rng.random(vals.shape) < 0.00002
        vals[spikes] *= 100
        vals[rng.random(vals.shape) < 0.00001] *= -1
        meter = np.repeat(np.array(ids), days)
        date = np.tile(dates, n)
        cols = {"meter": pa.array(meter), "date": pa.array(date)}
        for j, name in enumerate(names):
            cols[name] = pa.array(vals[:, j], from_pandas=True)
        t = pa.table(cols)
        t = pa.concat_tables([t, t.slice(5, 1)])  # an identical duplicate day
        p = d / f"meters_{b // BLOCK:04d}.parquet"
        pq.write_table(t, p, compression="zstd")
        files.append(str(p))
        readings += int((~np.isnan(vals)).sum()) + 96
        for k, mid in enumerate(ids):
            reg.append(
                f'  - {{id: "{mid}", firm_id: F{b + k:05d}, carrier: electricity, unit: kWh, '
                f"capacity: {base[k] * 5:.1f}}}"
            )
    (d / "register.yaml").write_text("\n".join(reg) + "\n", encoding="utf-8")
    return files, d / "register.yaml", readings


def make_invoices(d: Path, lines: int, firms: int = 3000, seed: int = 1) -> tuple[list[str], Path]:
    sys.path.insert(0, str(ROOT))
    from ruleengine.acquire.samplegen import LEDGER_HEADER, credit_code

    rng = np.random.default_rng(seed)
    codes = [credit_code(f"913305{k:06d}MA2B0"[:17]) for k in range(firms)]
    grid = credit_code("91330000MA2C00000")
    inv_n = lines // 2
    inv = rng.integers(0, inv_n, size=lines)
    inv.sort()
    firm = (inv % firms).astype(np.int64)
    kinds = rng.integers(0, 4, size=lines)
    names = np.array(["*供电*电费", "*天然气*管道天然气", "*柴油*0号车用柴油", "*办公用品*纸张"])[kinds]
    taxc = np.array(["1100101000000000000", "1100301000000000000", "1070101030100000000", "1060512000000000000"])[kinds]
    units = np.array(["千瓦时", "立方米", "升", "包"])[kinds]
    rates = np.array(["13%", "9%", "13%", "13%"])[kinds]
    qty = np.round(rng.uniform(10, 10000, size=lines), 2)
    price = np.array([0.7, 3.2, 7.4, 25.0])[kinds]
    amount = np.round(qty * price, 2)
    tax = np.round(amount * np.array([0.13, 0.09, 0.13, 0.13])[kinds], 2)
    month = rng.integers(1, 13, size=lines)
    table = pa.table({
        LEDGER_HEADER[0]: pa.array(np.char.add("2433", np.char.zfill(inv.astype(str), 16))),
        LEDGER_HEADER[1]: pa.array(np.char.add(f"{YEAR}-", np.char.add(np.char.zfill(month.astype(str), 2), "-10"))),
        LEDGER_HEADER[2]: pa.array(np.full(lines, grid)),
        LEDGER_HEADER[3]: pa.array(np.array(codes)[firm]),
        LEDGER_HEADER[4]: pa.array(names), LEDGER_HEADER[5]: pa.array(taxc), LEDGER_HEADER[6]: pa.array(units),
        LEDGER_HEADER[7]: pa.array(qty), LEDGER_HEADER[8]: pa.array(price), LEDGER_HEADER[9]: pa.array(amount),
        LEDGER_HEADER[10]: pa.array(rates), LEDGER_HEADER[11]: pa.array(tax),
        LEDGER_HEADER[12]: pa.array(np.full(lines, "")),
    })  # fmt: skip
    p = d / "ledger.csv"
    pacsv.write_csv(table, p, pacsv.WriteOptions(quoting_style="none"))
    m = d / "mapping.yaml"
    m.write_text(f"year: {YEAR}\nfirms:\n" + "".join(f'  "{c}": {{}}\n' for c in codes), encoding="utf-8")
    return [str(p)], m


def make_long_csv(d: Path, rows: int) -> tuple[list[str], Path, int]:
    meters = rows // 35136 + 1
    k = np.arange(rows)
    mid = k // 35136
    ts = np.datetime64(f"{YEAR}-01-01T00:15") + (k % 35136) * np.timedelta64(15, "m")
    vals = np.round(np.random.default_rng(2).uniform(0, 10, size=rows), 3).astype(str)
    bad = rows // 2 + 17
    vals[bad] = "n/a"
    table = pa.table(
        {
            "meter": pa.array(np.char.add("L", np.char.zfill(mid.astype(str), 6))),
            "timestamp": pa.array(np.char.replace(ts.astype(str), "T", " ")),
            "value": pa.array(vals),
        }
    )
    p = d / "long.csv"
    pacsv.write_csv(table, p, pacsv.WriteOptions(quoting_style="none"))
    r = d / "register_long.yaml"
    r.write_text(
        f"year: {YEAR}\nmeters:\n"
        + "".join(
            f'  - {{id: "L{m:06d}", firm_id: L{m:06d}, carrier: electricity, unit: kWh}}\n' for m in range(meters)
        ),
        encoding="utf-8",
    )
    return [str(p)], r, bad + 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--firms", type=int, default=3000)
    ap.add_argument("--invoice-lines", type=int, default=1_000_000)
    ap.add_argument("--long-rows", type=int, default=10_000_000)
    ap.add_argument("--out", default=str(HERE / "ACQUIRE.md"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_acquire_") as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        files, reg, n_readings = make_meters(d, a.firms)
        gen_s = time.perf_counter() - t0
        print(f"generated {n_readings:,} readings in {len(files)} files ({gen_s:.1f} s)", flush=True)
        meters = _child("meters", {"files": files, "register": str(reg), "year": YEAR})
        print("acquire meters", meters, flush=True)
        meters2 = _child("meters", {"files": files, "register": str(reg), "year": YEAR, "jobs": 2})
        print("acquire meters --jobs 2", meters2, flush=True)
        peer = _child("polars", {"files": files})
        print("polars", peer, flush=True)
        inv_files, mapping = make_invoices(d, a.invoice_lines)
        inv = _child("invoices", {"files": inv_files, "mapping": str(mapping), "year": YEAR})
        print("acquire invoices", inv, flush=True)
        long_files, long_reg, bad_row = make_long_csv(d, a.long_rows)
        long = _child("meters", {"files": long_files, "register": str(long_reg), "year": YEAR})
        print("long csv", long, flush=True)
    ratio = meters["seconds"] / peer["seconds"]
    same = meters["total_mwh"] == meters2["total_mwh"] and meters["issues"] == meters2["issues"]
    ok_m = meters["seconds"] <= 30 and meters["peak_mb"] <= 6144
    ok_m2 = meters2["seconds"] <= 30 and meters2["peak_mb"] * 2 <= 6144
    ok_i = inv["seconds"] <= 10
    lines = [
        "# Acquisition benchmark (issue #14)",
        "",
        f"Written by `benchmarks/bench_acquire.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
        f"pyarrow {pa.__version__}. The machine is shared: the 1-minute load average before each step is shown.",
        "Each step runs in a fresh child process; time is measured inside it (excluding interpreter start), "
        "CPU is the user+system time it (and its workers) used: for a single-threaded step on a loaded machine, "
        "CPU time is what the wall time would be on an idle core. Peak memory is the largest RSS of the child "
        "or of one of its workers.",
        "",
        "| step | input | time (s) | CPU (s) | peak RSS (MB) | load before | target | met (wall) |",
        "|---|---|---|---|---|---|---|---|",
        f"| `acquire_meters` (read, check, aggregate) | {a.firms:,} firms, {n_readings:,} readings, "
        f"{len(files)} wide Parquet files | {meters['seconds']:.1f} | {meters['cpu_s']:.1f} | {meters['peak_mb']:,.0f} "
        f"| {meters['load_before']:.1f} | <= 30 s, <= 6 GB | {'yes' if ok_m else 'NO'} |",
        f"| `acquire_meters(..., jobs=2)` (2 worker processes) | same files | {meters2['seconds']:.1f} "
        f"| {meters2['cpu_s']:.1f} "
        f"| {meters2['peak_mb']:,.0f} (largest process) | {meters2['load_before']:.1f} | <= 30 s, <= 6 GB "
        f"| {'yes' if ok_m2 else 'NO'} |",
        f"| polars peer (unpivot + sum/count per meter, no checks) | same files | {peer['seconds']:.1f} "
        f"| {peer['cpu_s']:.1f} "
        f"| {peer['peak_mb']:,.0f} "
        f"| {peer['load_before']:.1f} | - | - |",
        f"| `acquire_invoices` | {a.invoice_lines:,}-line ledger CSV | {inv['seconds']:.1f} "
        f"| {inv['cpu_s']:.1f} | {inv['peak_mb']:,.0f} "
        f"| {inv['load_before']:.1f} | <= 10 s | {'yes' if ok_i else 'NO'} |",
        f"| `acquire_meters`, long-form CSV with one bad row | {a.long_rows:,} rows | {long['seconds']:.1f} "
        f"| {long['cpu_s']:.1f} "
        f"| {long['peak_mb']:,.0f} "
        f"| {long['load_before']:.1f} | located error, rest processed | {'yes' if long['located'] else 'NO'} |",
        "",
        f"Ratio acquire / polars peer on the meter files: **{ratio:.2f}x** single process "
        f"({meters2['seconds'] / peer['seconds']:.2f}x with 2 processes; polars uses all cores). The peer does no "
        "checks: no register, no duplicates, gaps, spikes, coverage or provenance.",
        f"In CPU time (load-independent): acquire {meters['cpu_s']:.1f} s vs polars {peer['cpu_s']:.1f} s "
        f"= **{meters['cpu_s'] / peer['cpu_s']:.2f}x**.",
        f"One process and two give the same totals and issues: {'yes' if same else 'NO'}.",
        "",
        f"Meters: {meters['rows']:,} firm-years, {meters['readings']:,} readings used, issues {meters['issues']}, "
        f"total {meters['total_mwh']:,.1f} MWh. Polars counted {peer['readings']:,} non-empty cells "
        "(it keeps duplicates, spikes and negatives).",
        f"Invoices: {inv['lines']:,} lines used (the rest are not energy), issues {inv['issues']}.",
        f"Long CSV: the bad row is data row {bad_row:,}; reported as: "
        f"`{long['located'][0] if long['located'] else '-'}`; "
        f"{long['readings']:,} readings used.",
        "",
    ]
    Path(a.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
