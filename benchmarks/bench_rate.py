"""Rating throughput benchmark: compile, in-memory rate, end-to-end file runs, peak memory.

Portfolios come from :mod:`ruleengine.io.sample` (clean, firm-major, two reporting years) and are
cached as Parquet and CSV under ``benchmarks/data/`` (git-ignored); the cache name carries a hash
of the generator's source, so a changed generator never reuses stale data.  For every size it
measures, as the median of ``--repeat`` runs:

* compile: ``ruleengine.load`` with the plan caches off (imports already done);
* rate in memory: ``ruleengine.rate`` on a dict of numpy columns with a compiled plan, split into
  the prepare / evaluate / build stages where the engine exposes them, and the peak of memory
  allocated during the call (tracemalloc, one extra untimed run);
* end to end: a fresh Python process reads the file, loads the plan (from the on-disk plan cache,
  primed by this script), rates and writes the results (Parquet → Parquet, CSV → CSV); its own
  wall time (imports included) and peak RSS
  (``VmHWM``, the process's own high-water mark).

``--profile`` (on unless ``--quick``) adds a cProfile of Parquet → rate → Parquet at the largest
size: the top functions by own time and the engine's functions by cumulative time.  Usage::

    python benchmarks/bench_rate.py                      # 1k, 50k, 1M rows, 3 repeats, profile
    python benchmarks/bench_rate.py --quick --out /tmp/r.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
YEARS = (2022, 2023)


# -- child process: one end-to-end run ----------------------------------------------------------


def _ensure_bytecode() -> None:
    """Compile ruleengine's modules to bytecode once, as ``pip install`` does for an installed
    package. A source checkout run under ``PYTHONDONTWRITEBYTECODE=1`` (this machine's default)
    would otherwise compile every module from source in every fresh process: about 0.1 s that a
    user's installed copy never pays."""
    import compileall

    import ruleengine

    compileall.compile_dir(str(Path(ruleengine.__file__).parent), quiet=1)


def _end_to_end(book: str, src: Path, dst: Path, cache_dir: Path | None = None) -> dict[str, float]:
    """A fresh process (``_rate_child.py``) rates ``src`` into ``dst``, timed whole from outside.

    ``cache_dir``: where that process keeps compiled plans (an empty folder: it compiles the
    rulebook; a primed one: it loads the plan); None leaves the environment's choice.
    """
    import os

    _ensure_bytecode()
    cmd = [sys.executable, str(HERE / "_rate_child.py"), book, str(src), str(dst)]
    env = dict(os.environ)
    if cache_dir is not None:
        env["RULEENGINE_CACHE_DIR"] = str(cache_dir)
        env.pop("RULEENGINE_CACHE", None)
    # every run starts alike: no old output to truncate, no earlier run's dirty pages being
    # written back underneath it (not timed)
    dst.unlink(missing_ok=True)
    os.sync()
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    outer = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"end-to-end run failed ({' '.join(cmd)}):\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_seconds"] = outer
    return out


# -- data ---------------------------------------------------------------------------------------


def _generator_hash() -> str:
    from ruleengine.io import sample

    return hashlib.sha256(Path(sample.__file__).read_bytes()).hexdigest()[:8]


def dataset(rows: int, seed: int, data_dir: Path) -> tuple[Path, Path]:
    """Parquet and CSV files of a clean portfolio of ``rows`` firm-years (generated once)."""
    from ruleengine.io import sample

    firms = -(-rows // len(YEARS))
    stem = data_dir / f"firms_{rows}_seed{seed}_{_generator_hash()}"
    pq_path, csv_path = stem.with_suffix(".parquet"), stem.with_suffix(".csv")
    if not (pq_path.exists() and csv_path.exists()):
        cols = sample.generate(firms, list(YEARS), seed=seed)
        cols = {k: v[:rows] for k, v in cols.items()}
        data_dir.mkdir(parents=True, exist_ok=True)
        for path in (pq_path, csv_path):  # write, then rename: never a half-written cache file
            tmp = path.with_name(path.name + ".tmp" + path.suffix)
            sample.write(cols, tmp)
            tmp.replace(path)
    return pq_path, csv_path


def columns(pq_path: Path) -> dict[str, Any]:
    """The cached portfolio as in-memory numpy columns (text as object arrays, "" = missing)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pq_path)
    cols: dict[str, Any] = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            text = col.fill_null("").to_numpy(zero_copy_only=False)
            cols[name] = np.asarray(text, dtype=object)
        else:
            cols[name] = col.to_numpy(zero_copy_only=False)
    return cols


# -- measurements -------------------------------------------------------------------------------


def _clear_plan_cache() -> None:
    import importlib

    cache = getattr(importlib.import_module("ruleengine.api"), "_CACHE", None)
    if cache is not None:
        cache.clear()


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _median(runs: Sequence[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _stages(plan: Any, cols: dict[str, Any]) -> dict[str, float] | None:
    """prepare / evaluate / build seconds of one pipeline run, from its progress hook."""
    import ruleengine

    marks: list[tuple[str, float]] = []
    names = {"check": "prepare", "stage 2": "evaluate", "results": "build"}
    start = time.perf_counter()
    ruleengine.rate(plan, cols, progress=lambda phase, done, total: marks.append((phase, time.perf_counter())))
    out: dict[str, float] = {}
    prev = start
    for phase, t in marks:
        if phase in names:
            out[names[phase]] = t - prev
            prev = t
    return out if len(out) == 3 else None


def _peak_alloc_mb(fn: Callable[[], Any]) -> float:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def in_memory(plan: Any, cols: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Median seconds of ``rate`` on in-memory columns, its stage split and peak allocation."""
    import ruleengine

    rate_s, stage_runs = [], []
    unrated = 0
    for _ in range(repeat):
        seconds, res = _timed(lambda: ruleengine.rate(plan, cols))
        rate_s.append(seconds)
        unrated = int((res["status"] != "rated").sum())
        del res
        stages = _stages(plan, cols)
        if stages:
            stage_runs.append(stages)
    peak_mb = _peak_alloc_mb(lambda: ruleengine.rate(plan, cols))
    split = {k: _median(stage_runs, k) for k in stage_runs[0]} if stage_runs else None
    return {"rate_s": statistics.median(rate_s), "stages": split, "rate_peak_mb": peak_mb, "unrated": unrated}


def measure(rows: int, book: str, repeat: int, seed: int, data_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Every measurement for one portfolio size."""
    import ruleengine

    pq_path, csv_path = dataset(rows, seed, data_dir)
    log(f"{rows:>9,} rows: data ready ({pq_path.name})")

    import os

    compile_s = []
    saved = os.environ.get("RULEENGINE_CACHE")
    os.environ["RULEENGINE_CACHE"] = "off"  # compile for real, not a load from the on-disk plan cache
    try:
        for _ in range(repeat):
            _clear_plan_cache()
            compile_s.append(_timed(lambda: ruleengine.load(book))[0])
    finally:
        if saved is None:
            del os.environ["RULEENGINE_CACHE"]
        else:
            os.environ["RULEENGINE_CACHE"] = saved
    _clear_plan_cache()
    plan = ruleengine.load(book)  # (this one also primes the on-disk plan cache the processes use)
    result: dict[str, Any] = {"rows": rows, "compile_s": statistics.median(compile_s)}
    result.update(in_memory(plan, columns(pq_path), repeat))
    log(f"{rows:>9,} rows: rate in memory {result['rate_s']:.3f} s")

    e2e: dict[str, list[dict[str, float]]] = {"parquet": [], "csv": []}
    out_dir = data_dir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(repeat):
        for fmt, src in (("parquet", pq_path), ("csv", csv_path)):
            run = _end_to_end(book, src, out_dir / f"ratings_{rows}.{fmt}")
            if run["rows"] != rows:
                raise RuntimeError(f"{src}: rated {run['rows']} rows, expected {rows}")
            e2e[fmt].append(run)
    for fmt, runs in e2e.items():
        result[f"{fmt}_s"] = _median(runs, "seconds")
        result[f"{fmt}_rss_mb"] = _median(runs, "max_rss_mb")
        result[f"{fmt}_process_s"] = _median(runs, "process_seconds")
    log(f"{rows:>9,} rows: end to end parquet {result['parquet_s']:.3f} s, csv {result['csv_s']:.3f} s")
    return result


def profile(rows: int, book: str, seed: int, data_dir: Path, top: int = 10) -> dict[str, Any]:
    """cProfile of Parquet → rate → Parquet (plan compiled beforehand) at ``rows`` rows."""
    import cProfile
    import pstats

    import ruleengine

    pq_path, _ = dataset(rows, seed, data_dir)
    plan = ruleengine.load(book)
    dst = data_dir / "out" / f"profile_{rows}.parquet"
    dst.parent.mkdir(parents=True, exist_ok=True)
    ruleengine.rate(plan, pq_path).write(dst)  # warm-up: lazy imports do not show as hot spots
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    ruleengine.rate(plan, pq_path).write(dst)
    prof.disable()
    wall = time.perf_counter() - start
    raw = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    entries = [
        {"where": _short(file, line), "function": func, "calls": ncalls, "own": tottime, "cumulative": cumtime}
        for (file, line, func), (_, ncalls, tottime, cumtime, _) in raw.items()
    ]
    own = sorted(entries, key=lambda e: -e["own"])[:top]
    engine = sorted((e for e in entries if e["where"].startswith("ruleengine/")), key=lambda e: -e["cumulative"])[:top]
    return {"rows": rows, "wall": wall, "total": sum(e["own"] for e in entries), "own": own, "engine": engine}


def _short(file: str, line: int) -> str:
    """A profiler location without the machine's directories."""
    if file == "~":
        return "(built-in)"
    parts = Path(file).parts
    if "site-packages" in parts:
        parts = parts[len(parts) - parts[::-1].index("site-packages") :]
    elif "ruleengine" in parts:
        parts = parts[len(parts) - 1 - parts[::-1].index("ruleengine") :]
    else:
        parts = parts[-1:]
    return f"{'/'.join(parts)}:{line}"


# -- report -------------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    import numpy
    import pyarrow

    import ruleengine

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = ""
    try:  # read-only git queries: which commit, and whether tracked files differ from it

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", *args], cwd=HERE, text=True, capture_output=True, check=False, timeout=5
            ).stdout.strip()

        commit = git("rev-parse", "--short", "HEAD")
        if commit and git("status", "--porcelain", "--untracked-files=no"):
            commit += " with uncommitted changes"
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "ruleengine": ruleengine.__version__,
        "commit": commit,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _per_second(rows: int, seconds: float) -> str:
    per_s = rows / seconds if seconds > 0 else float("inf")
    return f"{per_s / 1e6:.2f}M" if per_s >= 1e6 else f"{per_s / 1e3:.0f}k"


_HEADER = (
    "| rows | compile (ms) | rate in memory (s) | rows/s | prepare / evaluate / build (s) "
    "| rate peak alloc (MB) | Parquet→Parquet (s) | peak RSS (MB) | CSV→CSV (s) "
    "| peak RSS (MB) |"
)
_PROFILE_HEADER = ("| # | function | where | calls | own (s) | cumulative (s) |", "|---:|---|---|---:|---:|---:|")


def _row(r: dict[str, Any]) -> str:
    st = r["stages"]
    stages = f"{st['prepare']:.3f} / {st['evaluate']:.3f} / {st['build']:.3f}" if st else "n/a"
    cells = [
        f"{r['rows']:,}",
        f"{r['compile_s'] * 1e3:.0f}",
        f"{r['rate_s']:.3f}",
        _per_second(r["rows"], r["rate_s"]),
        stages,
        f"{r['rate_peak_mb']:.0f}",
        f"{r['parquet_s']:.2f}",
        f"{r['parquet_rss_mb']:.0f}",
        f"{r['csv_s']:.2f}",
        f"{r['csv_rss_mb']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def _profile_section(prof: dict[str, Any], results: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        f"## Where the time goes at {prof['rows']:,} rows",
        "",
        f"cProfile of Parquet → `rate` → Parquet with the plan compiled: {prof['wall']:.2f} s "
        f"under the profiler ({prof['total']:.2f} s of own time recorded).",
        "",
    ]
    big = next((r for r in results if r["rows"] == prof["rows"] and r["stages"]), None)
    if big:
        st = big["stages"]
        total = sum(st.values())
        split = ", ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in st.items())
        lines += [f"In-memory stages without the profiler: {split}.", ""]
    for title, key in (("Top functions by own time", "own"), ("Engine functions by cumulative time", "engine")):
        lines += [f"{title}:", "", *_PROFILE_HEADER]
        for i, e in enumerate(prof[key], 1):
            lines.append(
                f"| {i} | `{e['function']}` | {e['where']} | {e['calls']:,} | {e['own']:.3f} | {e['cumulative']:.3f} |"
            )
        lines.append("")
    return lines


def render(
    results: Sequence[dict[str, Any]],
    prof: dict[str, Any] | None,
    info: dict[str, str],
    command: str,
    repeat: int,
    seed: int,
    plan: Any,
) -> str:
    commit = f", commit {info['commit']}" if info["commit"] else ""
    plan_hash = str(plan.hash).split(":")[-1][:12]
    startup = statistics.median(r["parquet_process_s"] - r["parquet_s"] for r in results)
    lines = [
        "# ruleengine rating benchmark",
        "",
        f"Generated by `{command}` on {info['date']}.",
        "",
        f"- Machine: {info['cpus']} CPUs ({info['cpu']}), {info['os']}",
        f"- Software: Python {info['python']}, numpy {info['numpy']}, "
        f"pyarrow {info['pyarrow']}, ruleengine {info['ruleengine']}{commit}",
        f"- Rulebook: `{plan.id}` {plan.version} (hash `{plan_hash}`)",
        f"- Data: `ruleengine.io.sample.generate(firms=rows/2, years={list(YEARS)}, seed={seed})`, "
        f"clean (three cities: a city's rulebook rates its own firms and reports the others as outside its "
        f"jurisdiction); medians of {repeat} run{'s' if repeat > 1 else ''}",
        "",
        _HEADER,
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        *(_row(r) for r in results),
        "",
        "- compile: `ruleengine.load` with the plan caches off (`RULEENGINE_CACHE=off`), in a warm "
        "process (imports done).",
        "- rate in memory: `ruleengine.rate(plan, columns)` on numpy columns with the plan "
        "compiled; rows/s from it. The stage split comes from separate runs of `_api.prepare`, "
        "`evaluator.evaluate` and `results.build`.",
        "- rate peak alloc: the most memory allocated at once during that call (tracemalloc; "
        "numpy buffers included, the input columns not).",
        "- Parquet→Parquet, CSV→CSV: a fresh Python process imports ruleengine, reads the file, "
        "loads the plan from the on-disk plan cache (primed by this script; compiling adds the "
        "compile time above), rates and writes the results; wall time measured inside it (interpreter "
        f"start-up adds about {startup:.2f} s) and its peak resident set (`VmHWM`).",
        "",
    ]
    if prof:
        lines += _profile_section(prof, results)
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        if not part:
            continue
        mult = {"k": 1_000, "m": 1_000_000}.get(part[-1], 1)
        out.append(int(float(part[:-1] if mult > 1 else part) * mult))
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive row counts, got {text!r}")
    return out


def _shown(argv: Sequence[str], script: str = "bench_rate.py") -> str:
    """The command worth repeating in the report (not where the cache or the report live)."""
    shown, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--data-dir", "--out"):
            skip = True
        elif not a.startswith(("--data-dir=", "--out=")):
            shown.append(a)
    return " ".join([f"python benchmarks/{script}", *shown])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description="Rating throughput benchmark.")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=[1000, 50_000, 1_000_000],
        help="comma-separated row counts (firm-years), e.g. 1000,50k,1M",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; medians are reported")
    parser.add_argument("--out", type=Path, default=HERE / "THROUGHPUT.md", help="Markdown report to write")
    parser.add_argument("--quick", action="store_true", help="1,000 rows, one run (smoke test)")
    parser.add_argument("--rulebook", default="huzhou")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=HERE / "data", help="cache of generated portfolios")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="profile the largest size (default: on, off with --quick)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat = [1000], 1
    if args.profile is None:
        args.profile = not args.quick

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import ruleengine

    plan = ruleengine.load(args.rulebook)
    results = [measure(n, args.rulebook, args.repeat, args.seed, args.data_dir, log) for n in args.sizes]
    prof = None
    if args.profile:
        log(f"profiling {max(args.sizes):,} rows")
        prof = profile(max(args.sizes), args.rulebook, args.seed, args.data_dir)
    text = render(results, prof, machine_info(), _shown(argv), args.repeat, args.seed, plan)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
