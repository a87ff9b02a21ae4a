"""Explain latency: one firm's audit trail inside a rated 50k-firm portfolio, and CLI cold start.

    python benchmarks/bench_explain.py [--rows 50000] [--firms 50] [--out benchmarks/EXPLAIN.md (default)]

The portfolio is rated once (rulebook and data loaded, as in a bank's service); then the trace of
each sampled firm is built, including "what it would take" (margins and cuts with benchmarks held
fixed). Reports the median and 95th percentile per firm. Target (issue #4): median <= 50 ms.
Also times `ruleengine validate huzhou` as a fresh process (target <= 0.5 s).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import ruleengine
from ruleengine.analysis.trace import trace_row
from ruleengine.io import sample


def explain_latency(plan: ruleengine.Plan, results: ruleengine.Results, firms: int = 50) -> list[float]:
    """Milliseconds to build the full trace (what it would take included) of ``firms`` rated
    firm-years spread evenly over ``results``, after one warm-up."""
    rated = np.flatnonzero(results["status"] == "rated")
    pick = rated[np.linspace(0, len(rated) - 1, firms).astype(int)]
    trace_row(plan, results, int(pick[0]))  # warm-up
    times = []
    for i in pick.tolist():
        t = time.perf_counter()
        trace_row(plan, results, i)
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--firms", type=int, default=50)
    ap.add_argument("--rulebook", default="huzhou")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "EXPLAIN.md"))
    args = ap.parse_args()
    cols = sample.generate(args.rows // 2, [2022, 2023], seed=1)
    plan = ruleengine.load(args.rulebook)
    t = time.perf_counter()
    results = ruleengine.rate(plan, cols)
    rate_s = time.perf_counter() - t
    times = explain_latency(plan, results, args.firms)
    cold = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "ruleengine.cli", "validate", args.rulebook], check=True, capture_output=True
        )
        cold.append(time.perf_counter() - t)
    lines = [
        "# Explain latency and CLI cold start",
        "",
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"ruleengine {ruleengine.__version__}, rulebook {plan.id} {plan.version}.",
        "",
        f"- portfolio: {len(results):,} firm-years rated in {rate_s:.2f} s",
        f"- explain one firm (trace incl. what it would take), {len(times)} firms: median "
        f"{statistics.median(times):.1f} ms, p95 {np.percentile(times, 95):.1f} ms, max {max(times):.1f} ms",
        f"- `ruleengine validate {args.rulebook}` as a fresh process: median {statistics.median(cold):.2f} s (of 3)",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
