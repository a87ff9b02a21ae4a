"""Every implementation on one portfolio size: checks first, then times."""

from __future__ import annotations

import dataclasses
import gc
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_rate as _br
import numpy as np

from . import config
from .check import check_equal, ruleengine_reference
from .config import BOOK, SIMPLEEVAL_MAX_ROWS, ZEN_MAX_ROWS
from .data import input_bytes
from .fresh_process import rating_processes
from .hand_numpy import numpy_evaluate, numpy_prepare
from .openfisca_peer import openfisca_inputs, openfisca_run, openfisca_system
from .per_row import simpleeval_rows, simpleeval_run
from .timing import median_time, peak_alloc_mb, timed
from .zen_peer import zen_graph, zen_records, zen_run_batch, zen_run_engine_per_record, zen_run_per_record


def measure(
    rows: int, repeat: int, seed: int, data_dir: Path, peers: set[str], log: Callable[[str], None]
) -> dict[str, Any]:
    """Every implementation on one portfolio size."""
    import ruleengine
    from ruleengine import pipeline as _pipeline
    from ruleengine.engine.evaluator import evaluate
    from ruleengine.rulebook import loader as _api

    pq_path, csv_path = _br.dataset(rows, seed, data_dir)
    out_dir = data_dir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    import tempfile

    cache_root = Path(tempfile.mkdtemp(prefix="bench-peers-cache-"))
    res: dict[str, Any] = {"rows": rows, "checks": []}
    # Fresh processes first, while this process holds none of the portfolio (its memory would
    # only crowd the machine the measured process runs on).
    gc.collect()
    res.update(rating_processes(rows, repeat, pq_path, csv_path, out_dir, cache_root))
    cols = _br.columns(pq_path)
    res["input_mb"] = input_bytes(pq_path) / 2**20
    res["input_columns"] = len(cols)
    log(f"{rows:>9,} rows: data ready ({pq_path.name}, {res['input_mb']:.1f} MB in memory)")

    # 1. ruleengine
    import os

    saved = {k: os.environ.get(k) for k in ("RULEENGINE_CACHE", "RULEENGINE_CACHE_DIR")}
    compile_runs, cached_runs = [], []
    try:
        os.environ["RULEENGINE_CACHE_DIR"] = str(cache_root / "in-process")
        for _ in range(repeat):
            os.environ["RULEENGINE_CACHE"] = "off"  # compile: YAML, schema, graph, checks
            _api._CACHE.clear()
            compile_runs.append(timed(lambda: ruleengine.load(BOOK))[0])
            del os.environ["RULEENGINE_CACHE"]
            _api._CACHE.clear()
            ruleengine.load(BOOK)  # primes the on-disk plan cache
            _api._CACHE.clear()
            cached_runs.append(timed(lambda: ruleengine.load(BOOK))[0])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    res["re_compile_s"] = statistics.median(compile_runs)
    res["re_load_cached_s"] = statistics.median(cached_runs)
    # the peers implement Huzhou's method without its jurisdiction (the generated portfolio mixes
    # three cities): measured without it too, so that every firm is rated by all of them alike
    plan = dataclasses.replace(ruleengine.load(BOOK), divisions=())
    res["re_prepare_s"], batch = median_time(lambda: _pipeline.batch(plan, cols), repeat)
    ref = ruleengine_reference(plan, batch)
    # ruleengine and the hand numpy code take turns, so both meet the same machine (this VM's
    # speed for fresh memory swings run to run); medians and bests of config.EVAL_REPEAT runs each
    prep = numpy_prepare(cols)
    got = numpy_evaluate(prep)
    res["checks"].append(check_equal("numpy", got, ref))  # levels equal before any time counts
    re_runs, np_runs = [], []
    for _ in range(max(repeat, config.EVAL_REPEAT)):
        gc.collect()
        re_runs.append(timed(lambda: evaluate(plan, batch))[0])
        gc.collect()
        np_runs.append(timed(lambda: numpy_evaluate(prep))[0])
    res["re_evaluate_s"], res["re_evaluate_best_s"] = statistics.median(re_runs), min(re_runs)
    res["np_evaluate_s"], res["np_evaluate_best_s"] = statistics.median(np_runs), min(np_runs)
    res["eval_runs"] = len(re_runs)
    del prep
    res["re_rate_s"], _ = median_time(lambda: ruleengine.rate(plan, cols), repeat)
    res["re_rate_csv_s"], _ = median_time(lambda: ruleengine.rate(plan, csv_path), repeat)
    out_dir = data_dir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / f"peers_{rows}.parquet"
    res["re_rate_parquet_s"], _ = median_time(lambda: ruleengine.rate(plan, pq_path), repeat)
    res["re_pq_to_pq_s"], _ = median_time(lambda: ruleengine.rate(plan, pq_path).write(dst), repeat)
    res["re_rate_peak_mb"] = peak_alloc_mb(lambda: ruleengine.rate(plan, cols))
    res["re_evaluate_peak_mb"] = peak_alloc_mb(lambda: evaluate(plan, batch))
    batch = None
    import shutil

    shutil.rmtree(cache_root, ignore_errors=True)
    log(
        f"{rows:>9,} rows: ruleengine evaluate {res['re_evaluate_s']:.4f} s, rate "
        f"{res['re_rate_s']:.3f} s, Parquet→Parquet process {res['re_parquet_process_process_seconds']:.2f} s wall"
    )

    if rows == config.EXPLAIN_ROWS:  # a bank's on-demand explanation: one firm in a rated portfolio
        import bench_explain

        rated = ruleengine.rate(plan, cols)
        ms = bench_explain.explain_latency(plan, rated, config.EXPLAIN_FIRMS)
        res["explain_ms"] = {
            "firms": len(ms),
            "median": statistics.median(ms),
            "p95": float(np.percentile(ms, 95)),
            "max": max(ms),
        }
        del rated
        log(f"{rows:>9,} rows: explain one firm, median {res['explain_ms']['median']:.1f} ms")

    # 2. hand-written numpy (checked and timed above, turn about with ruleengine's evaluate)
    res["np_prepare_s"], prep = median_time(lambda: numpy_prepare(cols), repeat)
    res["np_evaluate_peak_mb"] = peak_alloc_mb(lambda: numpy_evaluate(prep))
    bench = got["industry_intensity"]
    log(f"{rows:>9,} rows: numpy evaluate {res['np_evaluate_s']:.4f} s")

    # 3. OpenFisca
    if "openfisca" in peers:
        res["of_system_s"], tbs = median_time(openfisca_system, repeat)
        res["of_prepare_s"], inputs = median_time(lambda: openfisca_inputs(prep, cols), repeat)
        of_out, _ = openfisca_run(tbs, inputs)
        res["checks"].append(check_equal("OpenFisca", of_out, ref))
        splits = []
        for _ in range(repeat):
            gc.collect()
            splits.append(openfisca_run(tbs, inputs)[1])
        res["of_build_s"] = statistics.median(s["build"] for s in splits)
        res["of_calculate_s"] = statistics.median(s["calculate"] for s in splits)
        res["of_peak_mb"] = peak_alloc_mb(lambda: openfisca_run(tbs, inputs))
        del inputs
        log(f"{rows:>9,} rows: OpenFisca build {res['of_build_s']:.3f} s, calculate {res['of_calculate_s']:.3f} s")

    # 4. zen-engine
    if "zen" in peers and rows <= ZEN_MAX_ROWS:
        import zen

        graph = json.dumps(zen_graph())
        res["zen_records_s"], records = timed(lambda: zen_records(prep, cols, bench))
        engine = zen.ZenEngine({"loader": lambda key: graph})
        decision = engine.create_decision(graph)
        zen_repeat = repeat
        runs = []
        for _ in range(zen_repeat):
            gc.collect()
            t, zout = timed(lambda: zen_run_per_record(decision, records))
            if not runs:  # the first run's output is checked before its time counts
                res["checks"].append(check_equal("zen-engine per record", zout, ref))
            runs.append(t)
        res["zen_per_record_s"] = statistics.median(runs)
        res["zen_engine_per_record_s"], _ = median_time(lambda: zen_run_engine_per_record(engine, records), zen_repeat)
        res["zen_batch_s"], bout = median_time(lambda: zen_run_batch(engine, records), zen_repeat)
        res["checks"].append(check_equal("zen-engine evaluate_batch", bout, ref))
        del records
        log(f"{rows:>9,} rows: zen per record {res['zen_per_record_s']:.2f} s, batch {res['zen_batch_s']:.2f} s")

    # 5. simpleeval per row
    if rows <= SIMPLEEVAL_MAX_ROWS:
        res["se_rows_s"], srows = timed(lambda: simpleeval_rows(prep, cols, bench))
        runs = []
        for _ in range(repeat):
            gc.collect()
            t, sout = timed(lambda: simpleeval_run(srows))
            if not runs:
                res["checks"].append(check_equal("simpleeval per row", sout, ref))
            runs.append(t)
        res["se_per_row_s"] = statistics.median(runs)
        log(f"{rows:>9,} rows: simpleeval per row {res['se_per_row_s']:.2f} s")
    return res
