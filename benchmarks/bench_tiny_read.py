"""CPU of reading and checking a few rows given as records (issue #17): ``pipeline.read(rows,
[plan])`` + ``pipeline.prepare(plan, raw)`` of 1 to 64 firm-years as JSON gives them (a list of
dicts of str / int / float / None), with the plain-Python paths for a few rows
(``io.data.TINY_ROWS``, the default) and without them (``TINY_ROWS = 0``: the general Arrow/numpy
paths), alternating in one process. CPU ms per call (``time.process_time``), the least of
``--blocks`` blocks of ``--calls`` calls: meaningful on a shared machine, but re-run on a quiet one
for figures to quote.

    python benchmarks/bench_tiny_read.py                         # every bundled rulebook
    python benchmarks/bench_tiny_read.py --books huzhou --sizes 1,64
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _records(n: int) -> list[dict[str, Any]]:
    """``n`` firm-years of a generated portfolio as JSON would give them (NaN → None)."""
    from ruleengine.io import sample

    cols = sample.generate(max(n, 2), [2022, 2023], seed=3)
    out = []
    for i in range(n):
        row: dict[str, Any] = {}
        for name, col in cols.items():
            v = col[i].item() if hasattr(col[i], "item") else col[i]
            row[name] = None if (isinstance(v, float) and math.isnan(v)) or v == "" else v
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--books", default="huzhou,national,quzhou,shenzhen", help="bundled rulebooks, comma-separated")
    ap.add_argument("--sizes", default="1,2,8,16,32,64", help="rows per call, comma-separated")
    ap.add_argument("--calls", type=int, default=200, help="calls per block")
    ap.add_argument("--blocks", type=int, default=5, help="blocks per measurement (the least is kept)")
    args = ap.parse_args()

    from ruleengine import pipeline
    from ruleengine.io import data
    from ruleengine.rulebook.loader import load

    tiny = data.TINY_ROWS
    print("| rulebook | rows | read + check, plain paths | general paths |")
    print("|---|---:|---:|---:|")
    for book in args.books.split(","):
        plan = load(ROOT / "rulebooks" / f"{book}.yaml")
        for size in (int(s) for s in args.sizes.split(",")):
            rows = _records(size)
            best = {tiny: math.inf, 0: math.inf}
            for _ in range(args.blocks):
                for mode in (tiny, 0):  # alternating: a burst of load hits both
                    data.TINY_ROWS = mode
                    start = time.process_time()
                    for _ in range(args.calls):
                        pipeline.prepare(plan, pipeline.read(rows, [plan]), consume=True)
                    best[mode] = min(best[mode], (time.process_time() - start) / args.calls * 1000)
            data.TINY_ROWS = tiny
            print(f"| {book} | {size} | {best[tiny]:.3f} ms | {best[0]:.3f} ms |", flush=True)


if __name__ == "__main__":
    main()
