"""ruleengine against its peers on the Huzhou method (issue #6): one command, same portfolios.

On the portfolios of ``bench_rate.py`` (``ruleengine.io.sample``, clean, two reporting years, cached
as Parquet and CSV under ``benchmarks/data/``) this measures side by side, as medians of
``--repeat`` runs:

1. **ruleengine** with ``rulebooks/huzhou.yaml``: cold compile (plan cache emptied), evaluate
   (``_api.prepare`` once, then ``evaluator.evaluate``), ``rate`` from in-memory columns, from CSV
   and from Parquet (in this process, plan compiled), a fresh process Parquet → rate → Parquet and
   CSV → CSV (wall time and ``VmHWM``), peak allocation (tracemalloc) and the cold start of
   ``ruleengine validate huzhou`` as a subprocess.
2. **hand-written numpy** (the ceiling): the same method written directly, int-coded industries,
   ``np.bincount`` ratio of sums.
3. **OpenFisca** (``openfisca-core``): a tax-benefit system with one person entity ``firm``,
   period = year, vectorised formulas; the industry benchmark is a formula over the whole
   population (``np.bincount`` inside it), so its time is part of the timed calculation.
4. **GoRules zen-engine**: a JDM decision graph (expression nodes + a decision table for the
   level) evaluated per record, and through ``evaluate_batch``; the benchmark statistics are
   precomputed and passed in as an input field.  1k and 50k rows only.
5. **simpleeval per row** (the floor): each formula parsed once, evaluated row by row with
   ``previously_parsed``.  1k rows only.

Before any timing counts, every implementation's levels must equal ruleengine's (the same
array) and its K agree to 1e-9 relative; the report shows the check and the script exits 1 if it
fails.  Peers that are not installed are skipped (and said so).  Usage::

    python benchmarks/bench_peers.py                     # 1k, 50k, 1M rows, 3 repeats
    python benchmarks/bench_peers.py --quick --out /tmp/peers.md
    pip install -e '.[bench]'                            # openfisca-core and zen-engine

The parts live in ``benchmarks/peers/``: ``method`` (the Huzhou method's factors), ``hand_numpy``,
``openfisca_peer``, ``zen_peer`` and ``per_row`` (one module per peer implementation), ``check``
(ruleengine's reference levels and the equality check), ``timing`` and ``fresh_process``
(in-process and fresh-process timings), ``measure`` (one portfolio size), ``profiles`` and
``report`` (the RESULTS.md writer); ``config`` holds the run settings ``--quick`` lowers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_rate as _br  # noqa: E402  (the shared data cache, columns loader and helpers)
from peers import config  # noqa: E402
from peers.config import BOOK  # noqa: E402
from peers.fresh_process import validate_cold_start  # noqa: E402
from peers.measure import measure  # noqa: E402
from peers.openfisca_peer import openfisca_available  # noqa: E402
from peers.profiles import run_profiles  # noqa: E402
from peers.report import machine_info, render, targets  # noqa: E402
from peers.zen_peer import zen_available  # noqa: E402

# -- command line --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description="ruleengine against its peers (issue #6).")
    parser.add_argument(
        "--sizes",
        type=_br._sizes,
        default=[1000, 50_000, 1_000_000],
        help="comma-separated row counts (firm-years), e.g. 1000,50k,1M",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; medians are reported")
    parser.add_argument("--quick", action="store_true", help="1,000 rows, one run (smoke test)")
    parser.add_argument(
        "--out", type=Path, default=HERE / "RESULTS.md", help="Markdown report (the issue #6 results table)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the raw numbers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data", help="cache of generated portfolios")
    parser.add_argument("--skip", default="", help="peers to leave out: openfisca,zen")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="profile ruleengine where a target is missed (default: on, off with --quick)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat = [1000], 1
        config.EVAL_REPEAT = config.E2E_REPEAT = 1
        config.EXPLAIN_ROWS, config.EXPLAIN_FIRMS = 1000, 5
    if args.profile is None:
        args.profile = not args.quick
    sizes = sorted(set(args.sizes))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    skip = {s.strip().lower() for s in args.skip.split(",") if s.strip()}
    peers: set[str] = set()
    if "openfisca" not in skip:
        if openfisca_available():
            peers.add("openfisca")
        else:
            log("openfisca-core is not installed: OpenFisca not measured (pip install -e '.[bench]')")
    if "zen" not in skip:
        if zen_available():
            peers.add("zen")
        else:
            log("zen-engine is not installed: zen-engine not measured (pip install -e '.[bench]')")

    import ruleengine

    plan = dataclasses.replace(ruleengine.load(BOOK), divisions=())  # as in peers.measure: no jurisdiction
    results = [measure(n, args.repeat, args.seed, args.data_dir, peers, log) for n in sizes]
    log("timing `ruleengine validate huzhou` cold starts")
    cold = validate_cold_start(args.repeat)
    tgts = targets(results, cold)
    profiles: dict[str, Any] = {}
    if args.profile:
        profiles = run_profiles(tgts, plan, results[-1]["rows"], args.seed, args.data_dir, log)
    text = render(
        results,
        cold,
        tgts,
        profiles,
        machine_info(peers),
        _br._shown(argv, "bench_peers.py"),
        args.repeat,
        args.seed,
        peers,
        plan,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(
            json.dumps({"results": results, "cold": cold, "targets": tgts}, indent=1, default=str), encoding="utf-8"
        )
    log(f"wrote {args.out}")
    failed = [c for r in results for c in r["checks"] if not c["ok"]]
    for c in failed:
        log(f"EQUALITY CHECK FAILED: {c['name']} at {c['rows']:,} rows: {c}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
