"""Ratings-ledger benchmark (issue #16): recording a 1M-row run and `history FIRM` over a
10M-rating ledger, on SQLite and on a real PostgreSQL server; results in benchmarks/LEDGER.md.

Targets: record a 1M-row run ≤ 5 s (SQLite), ≤ 8 s (PostgreSQL); `history FIRM` ≤ 50 ms over
10M ratings. The portfolio comes from `ruleengine sample` (500,000 firms × 2 years, seed 0),
cached under benchmarks/data/. The run is rated once, outside the timing; "record" is
`Ledger.record` whole (`record.prepare` + `record.append`): reading the input back as the engine
reads it, its per-row fingerprints and the rating rows (prepare), then, under the write lock, the
ratings insert while a worker thread computes the input hash, the Parquet of the rows, the results
digest and the block hashes, then the blobs, block hashes and run row, and the commit. The
10M-rating ledger is `--runs` such runs recorded for real (each timed; with `--runs 10` the whole
10M ledger is made by the real record path and is a valid chain, which `ledger check` could walk),
plus, only when `--fill` > `--runs`, copies of the first run's ratings under further runs inserted
by SQL (an index of the right size for the history timing; not a valid chain). PostgreSQL runs as a
throwaway server (as the `postgres` user when root) with its default durability settings (fsync on).
Usage::

    python benchmarks/bench_ledger.py --runs 10 --fill 10   # 1M rows, the 10M ledger recorded for real
    python benchmarks/bench_ledger.py --rows 100000 --runs 3 --out /tmp/l.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _sample(rows: int) -> Path:
    folder = HERE / "data"
    folder.mkdir(exist_ok=True)
    path = folder / f"ledger-{rows}.parquet"
    if not path.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ruleengine.cli",
                "sample",
                "--firms",
                str(rows // 2),
                "--years",
                "2022,2023",
                "-o",
                str(path),
            ],
            check=True,
        )
    return path


class _Postgres:
    def __init__(self) -> None:
        import glob

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise SystemExit("no PostgreSQL server binary: run .ci/system-packages.sh")
        self.bin = Path(bins[-1]).parent
        self.prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.tmp = tempfile.mkdtemp(prefix="ruleengine-bench-pg-")
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres", "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        data = os.path.join(self.tmp, "data")
        subprocess.run(
            [*self.prefix, str(self.bin / "initdb"), "-D", data, "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        opts = f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c max_wal_size=4GB"
        subprocess.run(
            [
                *self.prefix,
                str(self.bin / "pg_ctl"),
                "-D",
                data,
                "-l",
                os.path.join(self.tmp, "log"),
                "-o",
                opts,
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        self.data = data

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            [*self.prefix, str(self.bin / "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(self.tmp, ignore_errors=True)


def _cpu() -> float:
    """CPU seconds of this process (all threads; the PostgreSQL server's share is not in it)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _bench_backend(name: str, url: str, book: str, data: Path, res: Any, runs: int, fill: int) -> dict[str, Any]:
    import ruleengine
    from ruleengine.ledger import open_ledger
    from ruleengine.ledger import record as R

    led = open_ledger(url)
    out: dict[str, Any] = {"backend": name, "record_s": [], "prepare_s": [], "append_s": [], "load": [], "cpu_s": []}
    for i in range(runs):
        out["load"].append(os.getloadavg()[0])
        c0 = _cpu()
        t0 = time.perf_counter()
        prepared = R.prepare(book, res.plan, data, res)
        t1 = time.perf_counter()
        R.append(led.engine, prepared)
        t2 = time.perf_counter()
        out["cpu_s"].append(_cpu() - c0)
        out["record_s"].append(t2 - t0)
        out["prepare_s"].append(t1 - t0)
        out["append_s"].append(t2 - t1)
        print(
            f"  {name}: run {i + 1}/{runs} recorded in {t2 - t0:.2f} s (prepare {t1 - t0:.2f}, append {t2 - t1:.2f}; "
            f"client CPU {out['cpu_s'][-1]:.2f} s; "
            f"load {out['load'][-1]:.1f})",
            flush=True,
        )
    if fill > runs:
        # more ratings for the history timing: copies of run 1's ratings under new runs (their
        # headers recorded for real from a small portfolio); not a valid chain, a big index
        small = _sample(2000)
        small_res = ruleengine.rate(book, small)
        import sqlalchemy as sa

        t = time.perf_counter()
        for _ in range(fill - runs):
            run = led.record(book, small, small_res)
            with led.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO ledger_ratings (run_id, seq, firm_id, year, rating, status, input_fp, fp) "
                        f"SELECT {run['id']}, seq + 2000, firm_id, year, rating, status, input_fp, fp "
                        "FROM ledger_ratings WHERE run_id = 1"
                    )
                )
                if led.engine.dialect.name == "sqlite":  # its firm index table (migration 0005)
                    conn.execute(
                        sa.text(
                            "INSERT INTO ledger_firm_index (firm_id, run_id, seq) SELECT firm_id, run_id, seq "
                            f"FROM ledger_ratings WHERE run_id = {run['id']} AND seq >= 2000 ORDER BY firm_id, seq"
                        )
                    )
        out["fill_s"] = time.perf_counter() - t
        print(f"  {name}: filled to {fill} runs' worth of ratings in {out['fill_s']:.0f} s", flush=True)
    firms = res["firm_id"]
    import random

    rnd = random.Random(0)
    picks = [str(firms[rnd.randrange(len(firms))]) for _ in range(30)]
    led.history(picks[0])  # warm
    times = []
    for f in picks:
        t = time.perf_counter()
        h = led.history(f)
        times.append(time.perf_counter() - t)
        assert len(h) >= 2 * max(runs, fill), (f, len(h))
    out["history_ms"] = [x * 1000 for x in times]
    import sqlalchemy as sa

    with led.engine.connect() as conn:
        out["ratings"] = conn.execute(sa.text("SELECT COUNT(*) FROM ledger_ratings")).scalar()
    led.dispose()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3, help="runs recorded for real and timed")
    ap.add_argument("--fill", type=int, default=10, help="runs' worth of ratings for the history timing")
    ap.add_argument("--backend", choices=["both", "sqlite", "postgresql"], default="both")
    ap.add_argument("--out", type=Path, default=HERE / "LEDGER.md")
    args = ap.parse_args(argv)

    import ruleengine

    data = _sample(args.rows)
    load_before = os.getloadavg()
    plan = ruleengine.load("huzhou")
    t = time.perf_counter()
    res = ruleengine.rate(plan, data)
    rate_s = time.perf_counter() - t
    print(f"rated {len(res):,} rows in {rate_s:.2f} s (not part of record)", flush=True)
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="ruleengine-bench-ledger-"))
    try:
        if args.backend in ("both", "sqlite"):
            results.append(_bench_backend("SQLite", str(tmp / "ledger.db"), "huzhou", data, res, args.runs, args.fill))
            results[-1]["size_mb"] = (tmp / "ledger.db").stat().st_size / 1e6
        if args.backend in ("both", "postgresql"):
            pg = _Postgres()
            try:
                results.append(_bench_backend("PostgreSQL", pg.url(), "huzhou", data, res, args.runs, args.fill))
            finally:
                pg.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    _write(args, results, rate_s, load_before, load_after)


def _write(args: Any, results: list[dict[str, Any]], rate_s: float, lb: tuple, la: tuple) -> None:
    import ruleengine

    med = statistics.median
    target = {"SQLite": 5.0, "PostgreSQL": 8.0}
    lines = [
        "# Ratings ledger benchmark (issue #16)",
        "",
        f"Measured {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} by `benchmarks/bench_ledger.py "
        f"--rows {args.rows} --runs {args.runs} --fill {args.fill}` on {platform.machine()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}, ruleengine {ruleengine.__version__}). "
        "The machine is shared: load average "
        f"{lb[0]:.1f} before, {la[0]:.1f} after (2 cores); timings scale with it.",
        "",
        f"Portfolio: `ruleengine sample`, {args.rows:,} firm-years (huzhou); rated once in {rate_s:.2f} s "
        "outside the timings.",
        "",
        "| backend | record a run (median / min / max s) | target | prepare (median s) | insert transaction "
        "(median s) | client CPU (median s) | history FIRM (median / p95 ms) | ratings in ledger | "
        "load average during the runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        rec = r["record_s"]
        hist = sorted(r["history_ms"])
        p95 = hist[min(len(hist) - 1, int(round(0.95 * (len(hist) - 1))))]
        ok = "met" if med(rec) <= target[r["backend"]] else "**missed**"
        lines.append(
            f"| {r['backend']} | {med(rec):.2f} / {min(rec):.2f} / {max(rec):.2f} | ≤ {target[r['backend']]:.0f} s "
            f"({ok}) | {med(r['prepare_s']):.2f} | {med(r['append_s']):.2f} | {med(r['cpu_s']):.2f} | "
            f"{med(hist):.1f} / {p95:.1f} "
            f"({'met' if med(hist) <= 50 else '**missed**'}) | {r['ratings']:,} | "
            f"{min(r['load']):.1f}–{max(r['load']):.1f} |"
        )
    for r in results:
        if "size_mb" in r:
            lines.append("")
            lines.append(f"SQLite file at the end: {r['size_mb']:.0f} MB.")
    lines += [
        "",
        "*prepare*: the canonical input (read back as the engine reads it), its row fingerprints and the",
        "rating rows — no lock held; a worker thread starts on the results digest. *insert transaction*: under",
        "the write lock, the ratings (SQLite: the ratings then the firm index table, in key order; PostgreSQL "
        "`COPY`) while the worker finishes",
        "the input hash, the rows' Parquet and the block hashes; then blobs (new ones only), block hashes,",
        "the run row, the commit. *history FIRM*: `Ledger.history` end to end (query by the `(firm_id, year)`",
        "index, attribution), 30 random firms. "
        + (
            "Every rating in the ledger was recorded by the real record path (a valid chain)."
            if args.fill <= args.runs
            else "The ledger holds `--runs` real runs, then (to reach `--fill` × rows ratings) copies of run 1's "
            "ratings inserted by SQL under further runs: a big index for the timing, not a valid chain."
        ),
        "",
    ]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
