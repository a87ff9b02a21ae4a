"""Fresh-process timings: ``ruleengine validate`` cold starts and whole Parquet/CSV rating
processes (``benchmarks/_rate_child.py`` through ``bench_rate._end_to_end``)."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import bench_rate as _br

from . import config
from .config import BOOK
from .timing import timed


def _ruleengine_cli() -> list[str]:
    exe = Path(sys.executable).parent / "ruleengine"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from ruleengine.cli import main; sys.argv[0] = 'ruleengine'; main()"]


def validate_cold_start(repeat: int) -> dict[str, Any]:
    """Wall time of ``ruleengine validate huzhou`` as a fresh process, and of ``python -c pass``."""
    import os
    import shutil
    import tempfile

    cmd = [*_ruleengine_cli(), "validate", BOOK]
    cache = Path(tempfile.mkdtemp(prefix="bench-validate-cache-"))
    off = {**os.environ, "RULEENGINE_CACHE": "off"}
    on = {**os.environ, "RULEENGINE_CACHE_DIR": str(cache)}
    on.pop("RULEENGINE_CACHE", None)
    runs, cached, bare = [], [], []
    try:
        subprocess.run(cmd, capture_output=True, text=True, check=False, env=on)  # primes the cache
        for _ in range(max(repeat, 5)):
            for env, into in ((off, runs), (on, cached)):
                t, proc = timed(
                    lambda env=env: subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
                )
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
                into.append(t)
            bare.append(timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))[0])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {
        "seconds": statistics.median(runs),
        "cached_seconds": statistics.median(cached),
        "python_seconds": statistics.median(bare),
        "command": "ruleengine validate huzhou",
    }


def rating_processes(
    rows: int, repeat: int, pq_path: Path, csv_path: Path, out_dir: Path, cache_root: Path
) -> dict[str, Any]:
    """Whole fresh processes Parquet → rate → Parquet, CSV → CSV and Parquet with an empty plan
    cache (``bench_rate._end_to_end``): medians, best run and stages of each kind."""
    res: dict[str, Any] = {}
    # fresh processes: with the plan cache primed (how a service or a nightly run meets a
    # rulebook it has rated before) and with an empty one (the first run after an edit)
    primed = cache_root / "primed"
    _br._end_to_end(BOOK, pq_path, out_dir / f"peers_ratings_{rows}.parquet", primed)  # primes it
    e2e: dict[str, list[dict[str, float]]] = {"parquet": [], "csv": [], "parquet_nocache": []}
    for i in range(max(repeat, config.E2E_REPEAT)):
        for fmt, src, cache in (
            ("parquet", pq_path, primed),
            ("csv", csv_path, primed),
            ("parquet_nocache", pq_path, cache_root / f"empty-{i}"),
        ):
            ext = "csv" if fmt == "csv" else "parquet"
            run = _br._end_to_end(BOOK, src, out_dir / f"peers_ratings_{rows}.{ext}", cache)
            if run["rows"] != rows:
                raise RuntimeError(f"{src}: rated {run['rows']} rows, expected {rows}")
            e2e[fmt].append(run)
    for fmt, runs in e2e.items():
        for key in ("seconds", "process_seconds", "max_rss_mb", "base_rss_mb"):
            res[f"re_{fmt}_process_{key}"] = statistics.median(r[key] for r in runs)
        res[f"re_{fmt}_process_best_seconds"] = min(r["process_seconds"] for r in runs)
        res[f"re_{fmt}_process_stages"] = {
            k: statistics.median(r["stages"][k] for r in runs) for k in runs[0]["stages"]
        }
        res[f"re_{fmt}_process_runs"] = [round(r["process_seconds"], 3) for r in runs]
    return res
