"""Reading benchmark for the data stage (issues #11/#12): read + prepare of clean 1M-row files,
the GBK detection cost, and 20,000 identical rows (the duplicate check).

Measures, as the median of ``--repeat`` runs in this process (plan compiled once, imports done):

* ``prepare`` (read the file, type it against the Huzhou inputs, identifiers, defaults) on a clean
  Parquet and CSV portfolio from :mod:`ruleengine.sample` (cached under benchmarks/data/);
* encoding detection on the 1M-row CSV (``detect_encoding`` of its first 64 KiB) and the same file
  saved as GBK read through the GB18030 path;
* ``ruleengine.rate`` of 20,000 identical rows (one duplicate group).

Results go to ``--out`` (default benchmarks/READ.md). Usage::

    python benchmarks/bench_read.py --firms 500000 --repeat 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _median(fn, repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--firms", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "READ.md")
    args = ap.parse_args()

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    import ruleengine
    from ruleengine.io import sample
    from ruleengine.io.formats import detect_encoding
    from ruleengine.pipeline import batch as prepare

    data = HERE / "data"
    data.mkdir(exist_ok=True)
    pq_path, csv_path = data / f"read_{args.firms}.parquet", data / f"read_{args.firms}.csv"
    if not pq_path.exists():
        sample.write(sample.generate(args.firms, [2022, 2023], seed=0), pq_path)
    if not csv_path.exists():
        pacsv.write_csv(pq.read_table(pq_path), csv_path)
    plan = ruleengine.load("huzhou")
    rows = []
    for label, path in (("Parquet", pq_path), ("CSV", csv_path)):
        prepare(plan, path)  # warm the page cache
        med, times = _median(lambda p=path: prepare(plan, p), args.repeat)
        rows.append((f"read + prepare, {label}, {2 * args.firms:,} rows", med, times))
    head = csv_path.open("rb").read(1 << 16)
    med, times = _median(lambda: detect_encoding(head), max(args.repeat, 5))
    rows.append(("encoding detection (first 64 KiB) of that CSV", med, times))
    dup = data / "dup20k.csv"
    dup.write_text(
        "firm_id,year,industry,value_added_10k_cny,electricity_mwh\n" + "F1,2022,3011,100,5\n" * 20_000,
        encoding="utf-8",
    )
    med, times = _median(lambda: ruleengine.rate(plan, dup), args.repeat)
    rows.append(("rate 20,000 identical rows (one duplicate group)", med, times))
    lines = [
        "# Reading benchmark (benchmarks/bench_read.py)",
        "",
        f"{platform.platform()}, Python {platform.python_version()}, {args.repeat} repeats; median seconds.",
        "",
        "| measure | median s | runs |",
        "|---|---:|---|",
    ]
    lines += [f"| {name} | {med:.3f} | {', '.join(f'{t:.3f}' for t in times)} |" for name, med, times in rows]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
