"""How steady is this machine's CPU? A fixed pure-Python loop's CPU time, alone and two at a time.

The benchmarks here report CPU milliseconds per request or per row because wall time on a shared
machine means little — but CPU time is not steady either when the host is shared: the same loop
can take ~1.8× as long from one minute to the next, and longer when both of a 2-core VM's cores are
busy at once (a server's processes and its load client; Spark's JVM beside its Python workers).
Run this before and after a benchmark to know which kind of hour its figures come from::

    python benchmarks/calibrate.py [--rounds 10]

Prints, for ``--rounds`` rounds: the loop alone, then two copies at once (separate processes), as
CPU milliseconds (``time.process_time``) — median, min and max — and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

LOOP = """
import time
t = time.process_time()
s = 0
for i in range(6_000_000):
    s += i
print((time.process_time() - t) * 1000)
"""


def loop_ms(n: int = 1) -> list[float]:
    """The fixed loop's CPU milliseconds in ``n`` processes started at once (one figure each)."""
    procs = [subprocess.Popen([sys.executable, "-c", LOOP], stdout=subprocess.PIPE, text=True) for _ in range(n)]
    return [float(p.communicate()[0]) for p in procs]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10, help="rounds of (alone, a pair)")
    args = ap.parse_args()
    alone: list[float] = []
    pair: list[float] = []
    for _ in range(args.rounds):
        alone += loop_ms(1)
        pair += loop_ms(2)

    def show(xs: list[float]) -> str:
        return f"median {statistics.median(xs):.0f} ms (min {min(xs):.0f}, max {max(xs):.0f})"

    print(
        f"a fixed loop's CPU, {args.rounds} rounds: alone {show(alone)}; two at once {show(pair)}; "
        f"ratio of medians {statistics.median(pair) / statistics.median(alone):.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
