"""CPU per one-firm rating against a run's benchmark tables (issue #17), and the 1M evaluate time.

What the HTTP service's ``POST /v1/runs/{run_id}/rate`` does in the engine: ``pipeline.rate(plan,
rows, benchmarks=tables)`` of one firm (a list of one or two dicts, as JSON gives them) against the
tables of a recorded run. This script builds those tables once, the way the service gets them: a
normal run over a generated portfolio (``ruleengine.io.sample.generate``, ``--firms`` firms × 2022,
2023), its tables written to JSON and read back (``ledger.canonical``). Then it times ``--calls``
one-firm ratings with ``time.process_time`` (CPU, meaningful on a shared machine), each phase of
the pipeline separately (read + data contract, stage 1 + 2, results), for one row and for a firm's
two years. Columns of the table printed: label | rulebook | rows | ``pipeline.rate`` | read + check
| evaluate | results | ``Results.to_json``, in CPU ms per call.

``--evaluate-rows`` (default 1M; 0 skips it): ``engine.evaluator.evaluate`` over that many rows
(prepared once), the median CPU of ``--repeat`` runs: large runs must not get slower.

    python benchmarks/bench_onerow.py                      # writes benchmarks/ONEROW.md
    python benchmarks/bench_onerow.py --calls 500 --evaluate-rows 0 --out /tmp/onerow.md
    python benchmarks/bench_onerow.py --profile 20         # cProfile of the one-row calls, top 20
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
YEARS = (2022, 2023)


def _rows_of(cols: dict[str, Any], firm_ix: int, years: int) -> list[dict[str, Any]]:
    """One firm's rows as JSON would give them (str / int / float / None)."""
    import numpy as np

    out = []
    n_years = len(YEARS)
    for k in range(n_years - years, n_years):
        i = firm_ix * n_years + k
        row: dict[str, Any] = {}
        for name, col in cols.items():
            v = col[i]
            if isinstance(v, np.floating):
                v = None if np.isnan(v) else float(v)
            elif isinstance(v, np.integer):
                v = int(v)
            elif isinstance(v, str) and v == "":
                v = None
            row[name] = v
        out.append(row)
    return out


def _tables(plan: Any, cols: dict[str, Any]) -> dict[str, Any]:
    """The run's tables as the service has them: rated once, written to JSON, read back."""
    from ruleengine import pipeline
    from ruleengine.ledger import canonical as C

    results = pipeline.rate(plan, dict(cols))
    return C.tables_from_json(C.tables_json(results.tables))


def _cpu_ms(fn: Callable[[], Any], calls: int) -> float:
    """CPU ms per call: the least of 5 blocks of ``calls`` / 5 calls (on a shared machine the CPU
    time of the same work grows with the others' load: caches, the other hyperthread)."""
    fn()
    block = max(calls // 5, 1)
    per = []
    for _ in range(5):
        gc.collect()
        t = time.process_time()
        for _ in range(block):
            fn()
        per.append((time.process_time() - t) / block * 1000)
    return min(per)


def phases(plan: Any, rows: list[dict[str, Any]], tables: dict[str, Any], calls: int) -> dict[str, float]:
    """CPU ms per call of each phase of ``pipeline.rate`` (and of the whole call)."""
    from ruleengine import __version__, pipeline
    from ruleengine.engine.evaluator import advance, finish, stage1
    from ruleengine.engine.results import build

    batch = pipeline.prepare(plan, pipeline.read(rows, [plan]), consume=True)

    def evaluate() -> Any:
        frame = stage1(plan, batch, tables)
        advance(frame)
        return finish(frame)

    ev = evaluate()
    res = build(plan, batch, ev, __version__)
    return {
        "rate": _cpu_ms(lambda: pipeline.rate(plan, rows, benchmarks=tables), calls),
        # read and check together: a RawTable keeps what it worked out once (a second prepare of
        # the same one is cheaper than the service's one prepare of fresh rows)
        "read + check": _cpu_ms(lambda: pipeline.prepare(plan, pipeline.read(rows, [plan]), consume=True), calls),
        "evaluate": _cpu_ms(evaluate, calls),
        "results": _cpu_ms(lambda: build(plan, batch, ev, __version__), calls),
        "json": _cpu_ms(res.to_json, calls),  # the service's response body
    }


def interleaved(plan: Any, rows: list[dict[str, Any]], tables: dict[str, Any], calls: int) -> tuple[float, float]:
    """CPU ms per ``pipeline.rate`` with formulas through the reference interpreter and compiled,
    in alternating blocks of one process (the fairest A/B on a shared machine): the least block of
    each."""
    from ruleengine import pipeline
    from ruleengine.engine.evaluator import Frame

    was = Frame.reference
    best = {True: float("inf"), False: float("inf")}
    block = max(calls // 10, 1)
    try:
        for _ in range(10):
            for mode in (True, False):
                Frame.reference = mode
                pipeline.rate(plan, rows, benchmarks=tables)
                gc.collect()
                t = time.process_time()
                for _ in range(block):
                    pipeline.rate(plan, rows, benchmarks=tables)
                best[mode] = min(best[mode], (time.process_time() - t) / block * 1000)
    finally:
        Frame.reference = was
    return best[True], best[False]


def evaluate_large(plan: Any, rows: int, repeat: int) -> float:
    """Median CPU seconds of ``evaluator.evaluate`` over ``rows`` rows (prepared once)."""
    from ruleengine import pipeline
    from ruleengine.engine.evaluator import evaluate
    from ruleengine.io.sample import generate

    batch = pipeline.batch(plan, generate(rows // len(YEARS), YEARS, seed=0))
    runs = []
    for _ in range(repeat):
        gc.collect()
        t = time.process_time()
        evaluate(plan, batch)
        runs.append(time.process_time() - t)
    return statistics.median(runs)


def _profile(plan: Any, rows: list[dict[str, Any]], tables: dict[str, Any], calls: int, top: int) -> None:
    import cProfile
    import pstats

    from ruleengine import pipeline

    pipeline.rate(plan, rows, benchmarks=tables)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        pipeline.rate(plan, rows, benchmarks=tables)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)
    pstats.Stats(prof).sort_stats("cumulative").print_stats(top)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="CPU per one-firm rating against a run's tables (issue #17).")
    ap.add_argument("--books", default="huzhou,national,quzhou,shenzhen", help="bundled rulebooks, comma-separated")
    ap.add_argument("--firms", type=int, default=2000, help="firms of the run whose tables are used")
    ap.add_argument("--calls", type=int, default=2000, help="one-firm ratings timed per measurement")
    ap.add_argument("--evaluate-rows", type=int, default=1_000_000, help="rows of the large evaluate (0: skip)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the large evaluate (median)")
    ap.add_argument("--label", default="", help="a label for the figures (e.g. 'before')")
    ap.add_argument("--out", type=Path, default=None, help="Markdown to append the figures to")
    ap.add_argument(
        "--reference",
        action="store_true",
        help="formulas through the reference interpreter (simpleeval's walk, as before the compiled evaluator)",
    )
    ap.add_argument(
        "--ab",
        action="store_true",
        help="instead: pipeline.rate with the interpreter and compiled, alternating in one process",
    )
    ap.add_argument("--profile", type=int, default=0, help="print a cProfile of the one-row calls (top N)")
    args = ap.parse_args(argv)

    from ruleengine.engine.evaluator import Frame
    from ruleengine.io.sample import generate
    from ruleengine.rulebook.loader import load

    Frame.reference = args.reference
    cols = generate(args.firms, YEARS, seed=0)
    load_avg = os.getloadavg()[0]
    lines = []
    for name in [b for b in args.books.split(",") if b]:
        plan = load(ROOT / "rulebooks" / f"{name}.yaml")
        tables = _tables(plan, cols)
        one, two = _rows_of(cols, 7, 1), _rows_of(cols, 7, 2)
        if args.profile:
            _profile(plan, one, tables, args.calls, args.profile)
            continue
        if args.ab:
            for label, rows in (("1 row", one), ("2 rows", two)):
                ref, comp = interleaved(plan, rows, tables, args.calls)
                line = f"| {name} | {label} | {ref:.2f} | {comp:.2f} | {ref - comp:.2f} |"
                print(line, flush=True)
                lines.append(line)
            continue
        for label, rows in (("1 row", one), ("2 rows", two)):
            p = phases(plan, rows, tables, args.calls)
            line = (
                f"| {args.label} | {name} | {label} | {p['rate']:.2f} | {p['read + check']:.2f} "
                f"| {p['evaluate']:.2f} | {p['results']:.2f} | {p['json']:.2f} |"
            )
            print(line, flush=True)
            lines.append(line)
    if args.evaluate_rows and not args.profile and not args.ab:
        plan = load(ROOT / "rulebooks" / "huzhou.yaml")
        s = evaluate_large(plan, args.evaluate_rows, args.repeat)
        line = (
            f"| {args.label} | huzhou | evaluate {args.evaluate_rows:,} rows "
            f"| {s:.3f} s CPU (median of {args.repeat}) |"
        )
        print(line, flush=True)
        lines.append(line)
    if args.out is not None and lines:
        with args.out.open("a", encoding="utf-8") as f:
            f.write(f"\n<!-- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load_avg:.1f} -->\n")
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
