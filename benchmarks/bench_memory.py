"""Peak memory at 2M rows through every command and output format (issue #11.4), and 20,000
identical rows (issue #11.3). Writes benchmarks/MEMORY.md.

    python benchmarks/bench_memory.py [--rows 2000000] [--book huzhou] [--cpu-limit 900]

1. Writes a Parquet portfolio of ``--rows`` firm-years (``ruleengine.io.sample.generate``, messy
   0.001, two years per firm, pieces of 500,000 firms with their firm ids prefixed so that they
   stay unique) in a child process.
2. Runs each command as ``ruleengine ...`` in a fresh child process and records its wall time,
   its CPU time (user + system, from ``wait4``) and its peak resident memory: the child's own
   ``VmHWM`` read from /proc/self/status as it exits (not ``ru_maxrss``, which a child inherits
   from a big parent; as benchmarks/bench_scale.py does). Every child runs under a CPU-time limit
   (RLIMIT_CPU, ``--cpu-limit`` seconds) so that the shared machine is never held for long.
3. Checks that ``--format json`` / ``--format csv`` on stdout are the bytes of ``-o out.json`` /
   ``-o out.csv``.

The target is ≤ 2 GB (2,048 MB) for every command; an .xlsx of 2M rows is refused (one sheet holds
1,048,575 rows) and the refusal is measured. 20,000 identical rows (one duplicate group) must be
rated in ≤ 2 s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_scale import CLI_PEAK_WRAPPER  # the same child: `ruleengine ARGS` reporting its VmHWM

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET_MB = 2048
PIECE_FIRMS = 500_000
YEARS = [2022, 2023]


_WRITE = """
import sys
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
from ruleengine.io import sample
rows, out, tmp = int(sys.argv[1]), sys.argv[2], sys.argv[3]
firms_left, piece, writer = rows // {years}, 0, None
while firms_left > 0:
    firms = min({piece_firms}, firms_left)
    path = f"{{tmp}}/piece.parquet"
    sample.write(sample.generate(firms, {years_list!r}, seed=piece, messy=0.001), path)
    t = pq.read_table(path)
    ids = pc.binary_join_element_wise(pa.scalar(f"P{{piece}}-"), t.column("firm_id").cast(pa.string()), "")
    t = t.set_column(t.schema.get_field_index("firm_id"), "firm_id", ids)
    writer = writer or pq.ParquetWriter(out, t.schema, compression="zstd")
    writer.write_table(t)
    firms_left -= firms
    piece += 1
writer.close()
"""


_IDENTICAL = """
import sys, time
import ruleengine
plan = ruleengine.load(sys.argv[1])
best = []
for _ in range(3):
    t0, c0 = time.perf_counter(), time.process_time()
    ruleengine.rate(plan, sys.argv[2])
    best.append((time.perf_counter() - t0, time.process_time() - c0))
print(*min(best))
"""


def run_child(args: list[str], cpu_limit: int, stdout: Path | None = None) -> dict[str, object]:
    """Wall s, CPU s, peak MB (the child's own VmHWM), exit code and stderr of ``ruleengine ARGS``."""
    with tempfile.TemporaryDirectory() as tmp:
        hwm_file = Path(tmp) / "hwm"
        code = CLI_PEAK_WRAPPER.format(out=str(hwm_file), args=list(args))

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit))

        with tempfile.TemporaryFile("w+") as err, open(stdout or os.devnull, "wb") as out:
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=err, preexec_fn=limit)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            err.seek(0)
            text = err.read()
        peak = int(hwm_file.read_text()) / 1024 if hwm_file.exists() else float("nan")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak": peak,
        "code": os.waitstatus_to_exitcode(status),
        "stderr": text,
    }


def _digest(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--book", default="huzhou")
    ap.add_argument("--cpu-limit", type=int, default=900, help="CPU seconds each child may use")
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--out", default=str(HERE / "MEMORY.md"))
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    results: list[tuple[str, str, dict[str, object], str]] = []
    work = Path(tempfile.mkdtemp(prefix="bench-memory-", dir=args.dir))
    try:
        data = work / "portfolio.parquet"
        print(f"writing {args.rows:,} firm-years to {data}", flush=True)
        t0 = time.perf_counter()
        script = _WRITE.format(years=len(YEARS), years_list=YEARS, piece_firms=PIECE_FIRMS)
        subprocess.run([sys.executable, "-c", script, str(args.rows), str(data), str(work)], check=True)
        gen_s = time.perf_counter() - t0
        (work / "piece.parquet").unlink(missing_ok=True)
        size_mb = data.stat().st_size / 1e6
        import pyarrow.parquet as pq

        n = pq.read_metadata(data).num_rows
        first_id = str(pq.read_table(data, columns=["firm_id"]).column(0)[0])
        print(f"  {n:,} rows, {size_mb:,.0f} MB in {gen_s:.0f} s", flush=True)

        # a second version of the rulebook with one band edge moved, for `diff --data`
        books = work / "books"
        shutil.copytree(ROOT / "rulebooks" / "lib", books / "lib")
        text = (ROOT / "rulebooks" / f"{args.book}.yaml").read_text(encoding="utf-8")
        edited = books / f"{args.book}-edited.yaml"
        old_edge = '{id: "2", lower: 0.6, upper: 0.8'
        if old_edge in text:
            edited.write_text(
                text.replace(old_edge, '{id: "2", lower: 0.6, upper: 0.85').replace(
                    '{id: "3", lower: 0.8,', '{id: "3", lower: 0.85,'
                ),
                encoding="utf-8",
            )
        else:
            edited = Path()
        trace = work / "trace.json"
        B, D = args.book, str(data)
        cases: list[tuple[str, str, list[str], Path | None, str]] = [
            ("rate", "summary", ["rate", B, D], None, ""),
            ("rate", "-o .csv", ["rate", B, D, "-o", str(work / "out.csv")], None, ""),
            ("rate", "-o .json", ["rate", B, D, "-o", str(work / "out.json")], None, ""),
            ("rate", "-o .jsonl", ["rate", B, D, "-o", str(work / "out.jsonl")], None, ""),
            ("rate", "-o .parquet", ["rate", B, D, "-o", str(work / "out.parquet")], None, ""),
            ("rate", "-o .xlsx", ["rate", B, D, "-o", str(work / "out.xlsx")], None, "refused"),
            ("rate", "--format json (stdout)", ["rate", B, D, "--format", "json"], work / "stdout.json", ""),
            ("rate", "--format csv (stdout)", ["rate", B, D, "--format", "csv"], work / "stdout.csv", ""),
            (
                "rate --what-it-takes",
                "-o .parquet",
                ["rate", B, D, "--what-it-takes", "-o", str(work / "wit.parquet")],
                None,
                "",
            ),
            (
                "rate --chunk-rows 500000",
                "-o .parquet",
                ["rate", B, D, "--chunk-rows", "500000", "-o", str(work / "chunked.parquet")],
                None,
                "",
            ),
            ("explain", "--format json", ["explain", B, D, "--firm", first_id, "--format", "json"], trace, ""),
            ("verify", "the trace above", ["verify", str(trace)], None, ""),
            (
                "compare",
                "huzhou quzhou national shenzhen, --format json",
                ["compare", "huzhou", "quzhou", "national", "shenzhen", "--data", D, "--format", "json"],
                work / "compare.json",
                "",
            ),
        ]
        if edited != Path():
            cases.append(
                (
                    "diff --data",
                    "one band edge moved, --format json",
                    ["diff", B, str(edited), "--data", D, "--format", "json"],
                    work / "diff.json",
                    "",
                )
            )
        sizes: dict[str, float] = {}
        digests: dict[str, str] = {}
        for command, output, argv, stdout, expect in cases:
            print(f"{command} {output} ...", flush=True)
            m = run_child(argv, args.cpu_limit, stdout)
            note = ""
            if expect == "refused" and m["code"] != 0:
                last = [line for line in str(m["stderr"]).splitlines() if "error" in line.lower()]
                note = f"refused (exit {m['code']}): {last[-1].strip() if last else '?'}"
            elif m["code"] != 0:
                tail = str(m["stderr"]).strip().splitlines()[-1:] or ["?"]
                note = f"FAILED (exit {m['code']}): {tail[0]}"
            print(f"  {m['wall']:.1f} s, {m['cpu']:.1f} s CPU, peak {m['peak']:,.0f} MB {note}", flush=True)
            results.append((command, output, m, note))
            for f in sorted(work.glob("*.*")):  # outputs: size and digest kept, the file removed (disk)
                if f.is_file() and f.name not in ("portfolio.parquet", "trace.json"):
                    sizes[f.name] = f.stat().st_size / 1e6
                    digests[f.name] = _digest(f)
                    f.unlink()
        same = {fmt: digests.get(f"out.{fmt}") == digests.get(f"stdout.{fmt}") is not None for fmt in ("json", "csv")}

        # 20,000 identical rows (one duplicate group)
        dup = work / "identical.csv"
        dup.write_text(
            "firm_id,year,industry,value_added_10k_cny,electricity_mwh\n" + "F1,2022,3011,100,5\n" * 20_000,
            encoding="utf-8",
        )
        print("20,000 identical rows ...", flush=True)
        dup_m = run_child(["rate", B, str(dup), "-o", str(work / "identical-out.csv")], args.cpu_limit)
        print(f"  {dup_m['wall']:.2f} s, {dup_m['cpu']:.2f} s CPU, peak {dup_m['peak']:,.0f} MB", flush=True)
        inproc = subprocess.run(
            [sys.executable, "-c", _IDENTICAL, B, str(dup)], capture_output=True, text=True, check=True
        ).stdout.split()
        baseline = run_child(["validate", "-q", B], args.cpu_limit)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    def row(command: str, output: str, m: dict[str, object], note: str) -> str:
        peak = float(m["peak"])
        met = "yes" if peak <= TARGET_MB and (not note or note.startswith("refused")) else "**NO**"
        return (
            f"| `{command}` | {output} | {float(m['wall']):.1f} | {float(m['cpu']):.1f} | "
            f"{peak:,.0f} | {met} | {note} |"
        )

    import numpy as np

    lines = [
        "# Peak memory at 2M rows, every command and output format (bench_memory.py)",
        "",
        f"Measured by `python benchmarks/bench_memory.py --rows {args.rows} --book {args.book}` on {started}: "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}. "
        f"**The machine is shared** (load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on 2 "
        "cores): wall times are upper bounds, one run each; CPU time (user + system of the child) is the "
        "steadier figure. Peak memory is the child process's own high-water mark of resident memory "
        "(VmHWM from /proc/self/status, read as it exits); the interpreter and imports alone "
        f"(`validate -q {args.book}`) peak at {float(baseline['peak']):,.0f} MB.",
        "",
        f"Data: {n:,} firm-years ({n // len(YEARS):,} firms × {len(YEARS)} years, one {size_mb:,.0f} MB "
        f"zstd Parquet file) from `ruleengine.io.sample.generate` (messy 0.001), written in {gen_s:.0f} s. "
        f"Rulebook `{args.book}`. Target: ≤ {TARGET_MB:,} MB for every command.",
        "",
        "| command | output | wall (s) | CPU (s) | peak memory (MB) | ≤ 2 GB | note |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
        *(row(*r) for r in results),
        "",
        f"- `--format json` on stdout is byte-identical to `-o out.json`: **{same['json']}**; "
        f"`--format csv` to `-o out.csv`: **{same['csv']}**.",
        "- Output sizes (MB): " + ", ".join(f"{k} {v:,.0f}" for k, v in sizes.items()) + ".",
        f"- 20,000 identical rows (one duplicate firm-year group, a 0.4 MB CSV) rated and written: "
        f"{float(dup_m['wall']):.2f} s wall, {float(dup_m['cpu']):.2f} s CPU, "
        f"peak {float(dup_m['peak']):,.0f} MB (target ≤ 2 s: "
        f"{'met' if float(dup_m['wall']) <= 2 else 'wall NOT met'}"
        f"{'' if float(dup_m['wall']) <= 2 else (', CPU met' if float(dup_m['cpu']) <= 2 else ', CPU NOT met')}). "
        "Whole process: interpreter start-up and imports included. In a process with ruleengine "
        f"imported and the plan loaded, `ruleengine.rate` of that file: {float(inproc[0]):.3f} s wall, "
        f"{float(inproc[1]):.3f} s CPU (best of 3).",
        "- Before this round (issue #11): `-o out.json` / `--format json` died with MemoryError at 15 GB, "
        "`--what-it-takes` used 6.1 GB, `compare` 3.7 GB, plain `rate` 1.2 GB; 20,000 identical rows took "
        "99 s and 12.6 GB, then MemoryError.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
