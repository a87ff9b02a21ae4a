"""Spark and Dask against the local chunked runner (issue #18): one dataset, one run of each.

    python benchmarks/bench_scale_engines.py [DATASET_DIR] [--rows 10000000] [--book huzhou]
        [--partitions 20] [--chunk-rows 500000] [--timeout 600] [--layout parts|file]
        [--out benchmarks/SCALE_ENGINES.md]

DATASET_DIR (default ``benchmarks/data/firm-years-<rows>``, git-ignored): a directory of Parquet
files. When it does not exist it is written first, once, with ``--rows`` firm-years
(``bench_scale.write_dataset``: files of 1M rows from the sample generator, ``ruleengine.io.sample``,
the code behind ``ruleengine sample``; about 2 minutes for 10M) and reused by later runs. Each
runner rates it once, in its own child process, into ``--layout parts`` (default): a directory of
one Parquet file per partition / chunk, written by the executors, workers or the chunked runner
itself (``-o DIR/``), or ``--layout file``: one Parquet file in input order written by the driver:

- local chunked (``scale.chunked.rate_dataset``, chunks of ``--chunk-rows``);
- Spark ``local[2]`` (``scale.spark.rate``, ``--partitions`` firm-complete partitions);
- Dask ``LocalCluster`` of 2 worker processes, 1 thread each (``scale.dask.rate``, same partitions).

Measured per run: wall time; CPU seconds and peak resident memory (VmHWM) of every process of the
run (the driver, the JVM, Spark's Python workers, Dask's workers and nannies), read from /proc just
before the processes end; and the time inside the partition tasks (``scale.partition.TaskClock``,
see IN_TASK below), apart from the engine's scheduling, shuffle, transfers, the read and the write.
The outputs are compared with the local runner's: one file byte for byte; part files row by row
after a stable sort by firm and year, every column bit for bit (``_same_rows``).

The load average is recorded before and after (the machine may be shared). Each runner is bounded
by ``--timeout`` seconds; one that does not finish is reported as such and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

IN_TASK = (
    "**In-task CPU** (`scale.partition.TaskClock`): the CPU time of the thread running each partition task "
    "(`time.thread_time()`), from the start of the task's own work to the moment its output is ready, "
    "summed over the tasks and passes — for Spark: putting the partition's Arrow batches (pulled from the JVM "
    "before the clock starts; that CPU is shown apart as `(receive…)`) in input order, the data contract, "
    "stage 1 and the partials (pickled) or stage 2 and the "
    "result (`partition.task`, the same body for Spark and Dask); for Dask: the same from the partition's "
    "Arrow table; for the local runner: the same work on each chunk after it was read from Parquet. With "
    "`--layout parts` the output is ready when the task has written its part file (the write's CPU, the same "
    "code on every runner, is counted and also shown apart as `(write)`); with `--layout file` when its "
    "result table is made. Left out on every side: the worker process's imports (`partition.warm_up()`, once "
    "per process, before the clock starts), the engine's scheduling, the shuffle into firm-complete "
    "partitions, sending anything back and the driver's read and write. **× local** = in-task CPU per row "
    "over the local runner's (target ≤ 1.3)."
)


# -- the child: one runner --------------------------------------------------------------------------


def _proc_stats(pid: int) -> dict[str, float]:
    """Peak resident memory (MB) and CPU seconds of a process, from /proc."""
    import psutil

    out = {"pid": pid, "peak_mb": float("nan"), "cpu_s": float("nan"), "name": "?"}
    try:
        p = psutil.Process(pid)
        cmd = p.cmdline()
        if cmd and cmd[0].endswith("java"):
            out["name"] = "JVM (Spark driver and executor, local mode)"
        elif "pyspark.daemon" in cmd:
            out["name"] = "Spark Python worker (pyspark.daemon)"
        elif pid == os.getpid():
            out["name"] = "driver (Python)"
        elif any("resource_tracker" in c for c in cmd):
            out["name"] = "multiprocessing resource tracker"
        elif any("multiprocessing" in c for c in cmd):  # Dask's nannies and workers are spawned children
            out["name"] = "Dask worker or nanny (spawned process)"
        else:
            out["name"] = f"Python child {' '.join(cmd[1:3])}"
        t = p.cpu_times()
        out["cpu_s"] = t.user + t.system
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    out["peak_mb"] = int(line.split()[1]) / 1024
    except (psutil.Error, OSError):
        pass
    return out


def _tree() -> list[dict[str, float]]:
    import psutil

    me = psutil.Process()
    return [_proc_stats(me.pid)] + [_proc_stats(c.pid) for c in me.children(recursive=True)]


def child(runner: str, dataset: str, out: str, book: str, partitions: int, chunk_rows: int, workers: int = 2) -> dict:
    """One runner in this process: ``out`` a file, or a directory (ending in /: part files)."""
    import ruleengine
    from ruleengine.scale.partition import TaskClock, warm_up

    plan = ruleengine.load(book)
    warm_up()  # as every Spark/Dask task does before its clock starts
    clock = TaskClock()
    procs: list[dict[str, float]] = []
    t0 = time.perf_counter()
    if runner == "chunked":
        from ruleengine.scale.chunked import rate_dataset

        run = rate_dataset(plan, dataset, out, chunk_rows, clock=clock)
        n = run.rows
        wall = time.perf_counter() - t0
        procs = _tree()
    elif runner == "spark":
        from ruleengine.scale import spark as rspark

        s = rspark.session(f"local[{workers}]", conf={"spark.driver.memory": "6g"})
        started = time.perf_counter()
        n = rspark.rate(plan, rspark.read(s, dataset), out, npartitions=partitions, source=dataset, clock=clock)
        wall = time.perf_counter() - t0
        procs = _tree()  # the JVM and the Python workers are alive until the session stops
        s.stop()
        clock.passes["(session start)"] = {"tasks": 0, "rows": 0, "wall": started - t0, "cpu": 0.0}
    else:
        import distributed

        from ruleengine.scale import dask as rdask

        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        )
        client = distributed.Client(cluster)
        # the files are read by the workers with pyarrow (scale.dask.Partitions)
        n = rdask.rate(plan, dataset, out, npartitions=partitions, client=client, source=dataset, clock=clock)
        wall = time.perf_counter() - t0
        procs = _tree()
        client.close()
        cluster.close()
    return {"runner": runner, "rows": n, "wall": wall, "procs": procs, "passes": clock.passes}


# -- the parent ---------------------------------------------------------------------------------------


def run_child(runner: str, args: argparse.Namespace, out: Path) -> dict | None:
    cmd = [
        sys.executable, __file__, "--child", runner, args.dataset, "--target", str(out), "--book", args.book,
        "--partitions", str(args.partitions), "--chunk-rows", str(args.chunk_rows), "--workers", str(args.workers),
    ]  # fmt: skip
    print(f"{runner}: {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        print(f"  {runner}: over {args.timeout} s, stopped", flush=True)
        return None
    if proc.returncode != 0:
        print(f"  {runner} failed ({proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
        return None
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["outer_wall"] = time.perf_counter() - t0
    print(f"  {res['wall']:.1f} s", flush=True)
    return res


def _cpu_row(p: dict) -> float:
    return sum(v["cpu"] for k, v in p["passes"].items() if not k.startswith("("))


def report(results: dict[str, dict | None], args: argparse.Namespace, loads: tuple, same: dict[str, bool]) -> str:
    import pyarrow.parquet as pq

    files = sorted(Path(args.dataset).glob("*.parquet"))
    n_in = sum(pq.read_metadata(f).num_rows for f in files)
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    base = results.get("chunked")
    base_cpu_row = _cpu_row(base) / base["rows"] if base else float("nan")
    lines = [
        "# Spark and Dask against the local runner",
        "",
        f"Measured by `python benchmarks/bench_scale_engines.py DATASET --book {args.book} --partitions "
        f"{args.partitions} --chunk-rows {args.chunk_rows} --layout {args.layout}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. One run of each runner, "
        "one after the other, each in its own child process.",
        "",
        f"{'**Under load** (load average ' + format(loads[0][0], '.1f') + ')' if loads[0][0] > 1.5 else 'Quiet'}"
        f": the machine may be shared. Load average (1/5/15 min) {loads[0][0]:.1f} / {loads[0][1]:.1f} / "
        f"{loads[0][2]:.1f} before, {loads[1][0]:.1f} / {loads[1][1]:.1f} / {loads[1][2]:.1f} after, on 2 cores. "
        "Wall times are upper bounds; CPU seconds are the steadier figure.",
        "",
        f"Data: {n_in:,} firm-years in {len(files)} Parquet files ({size_mb:,.0f} MB, zstd), firm-major, written by "
        "`bench_scale.write_dataset` (the sample generator behind `ruleengine sample`, messy 0.001). Rulebook "
        f"`{args.book}`: one benchmark stage, two passes. Spark `local[{args.workers}]` (driver memory 6g), "
        f"Dask LocalCluster {args.workers} workers × 1 thread; {args.partitions} firm-complete partitions; "
        f"chunked: {args.chunk_rows:,}-row chunks. "
        + (
            "Output: one Parquet file per partition (chunk), written by the tasks themselves (`-o DIR/`)."
            if args.layout == "parts"
            else "Output: one Parquet file in input order, written by the driver."
        ),
        "",
        "| runner | rows | wall (s) | rows/s (wall) | CPU all processes (s) | in-task CPU (s) | in-task CPU µs/row "
        "| × local | driver peak (MB) | largest other process (MB) | output identical to local |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in results.items():
        if r is None:
            lines.append(f"| {name} | — | not finished within {args.timeout} s | | | | | | | | |")
            continue
        cpu_all = sum(p["cpu_s"] for p in r["procs"] if p["cpu_s"] == p["cpu_s"])
        task = _cpu_row(r)
        per = task / r["rows"] * 1e6
        peaks = [p["peak_mb"] for p in r["procs"] if p["cpu_s"] == p["cpu_s"]]
        other = f"{max(peaks[1:]):,.0f}" if len(peaks) > 1 else "—"
        lines.append(
            f"| {name} | {r['rows']:,} | {r['wall']:.1f} | {r['rows'] / r['wall']:,.0f} | {cpu_all:.1f} | {task:.1f} "
            f"| {per:.2f} | {per / (base_cpu_row * 1e6):.2f} | {peaks[0]:,.0f} | {other} | {same.get(name, '—')} |"
        )
    lines += [
        "",
        IN_TASK,
        "",
        "## Per pass (inside the tasks)",
        "",
        "| runner | pass | tasks | rows | task wall (s) | task CPU (s) | CPU µs/row |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        if r is None:
            continue
        for pname, p in r["passes"].items():
            if pname == "(write)":
                per = p["cpu"] / p["rows"] * 1e6 if p["rows"] else float("nan")
                lines.append(f"| {name} | (of the final pass: the write) | | | | {p['cpu']:.1f} | {per:.2f} |")
                continue
            if pname == "(receive)":
                per = p["cpu"] / p["rows"] * 1e6 if p["rows"] else float("nan")
                lines.append(
                    f"| {name} | (receiving the partitions' input from the JVM, not counted) | | | | "
                    f"{p['cpu']:.1f} | {per:.2f} |"
                )
                continue
            if pname.startswith("("):
                lines.append(f"| {name} | {pname} | | | {p['wall']:.1f} | | |")
                continue
            per = p["cpu"] / p["rows"] * 1e6 if p["rows"] else float("nan")
            lines.append(
                f"| {name} | {pname} | {int(p['tasks'])} | {int(p['rows']):,} | {p['wall']:.1f} | {p['cpu']:.1f} "
                f"| {per:.2f} |"
            )
    lines += projection(results, args)
    lines += ["", "## Peak memory per process", ""]
    lines += ["| runner | process | peak RSS (MB) | CPU (s) |", "| --- | --- | ---: | ---: |"]
    for name, r in results.items():
        if r is None:
            continue
        for p in r["procs"]:
            if p["cpu_s"] != p["cpu_s"]:  # a process that ended before it was read
                continue
            what = str(p["name"]).replace("|", "/")
            lines.append(f"| {name} | {what} | {p['peak_mb']:,.0f} | {p['cpu_s']:.1f} |")
    return "\n".join(lines) + "\n"


TARGET_ROWS = 50_000_000
NODES, CORES = 20, 8  # the projected cluster: 20 nodes of 8 cores, one task per core
EFFICIENCY = 0.7  # share of the slots kept busy (stragglers, waves, skew)
LINK = 1.25e9  # the driver's network link, bytes/s (10 Gbit/s)
ARROW_ROW_BYTES = 1_000  # result bytes per firm-year in Arrow (huzhou: 976, measured on 100k rows)


def projection(results: dict[str, dict | None], args: argparse.Namespace) -> list[str]:
    """50M firm-years on 20 nodes, from the measured per-row and per-partition costs."""
    out = [
        "",
        f"## Projection: {TARGET_ROWS / 1e6:.0f}M firm-years on {NODES} nodes × {CORES} cores",
        "",
        "From the costs measured above (CPU seconds, not wall: the machine was shared), assuming one task "
        f"per core ({NODES * CORES} slots) kept {EFFICIENCY:.0%} busy, partitions of the measured size, a "
        f"{LINK * 8 / 1e9:.0f} Gbit/s link into the driver and {ARROW_ROW_BYTES:,} bytes of results per "
        "firm-year in Arrow. *Executors*: every process but the driver's Python (for Spark `local` the JVM "
        "also did the driver's JVM work, so this is an upper bound); *driver*: the driver's Python process "
        "(merging the partials; with `--layout file` also spilling and merging the results in input order and "
        "writing the file), which does not get faster with more nodes. With `--layout parts` no results go "
        "through the driver's link (each task writes its part file; the shared file system's bandwidth is "
        "not modelled).",
        "",
        "| runner | executor CPU µs/row | driver CPU µs/row | partition rows | CPU s per partition | parallel "
        "phase (s) | driver phase (s) | results through the link (s) | projected wall (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("spark", "dask"):
        r = results.get(name)
        if not r:
            continue
        driver = r["procs"][0]["cpu_s"]
        others = sum(p["cpu_s"] for p in r["procs"][1:] if p["cpu_s"] == p["cpu_s"])
        ex_row, dr_row = others / r["rows"], driver / r["rows"]
        part_rows = r["rows"] / args.partitions
        parallel = ex_row * TARGET_ROWS / (NODES * CORES * EFFICIENCY)
        serial = dr_row * TARGET_ROWS
        link = TARGET_ROWS * ARROW_ROW_BYTES / LINK if args.layout == "file" else 0.0  # parts: written in place
        total = max(parallel, ex_row * part_rows) + serial + link
        out.append(
            f"| {name} | {ex_row * 1e6:.1f} | {dr_row * 1e6:.1f} | {part_rows:,.0f} | {ex_row * part_rows:.0f} | "
            f"{parallel:.0f} | {serial:.0f} | {link:.0f} | {total:.0f} |"
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "dataset", nargs="?", help="a directory of Parquet files (default: benchmarks/data/firm-years-ROWS)"
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="firm-years to write when DATASET does not exist")
    parser.add_argument("--child")
    parser.add_argument("--target")
    parser.add_argument("--book", default="huzhou")
    parser.add_argument("--partitions", type=int, default=20)
    parser.add_argument("--chunk-rows", type=int, default=500_000)
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed to each runner")
    parser.add_argument("--runners", default="chunked,spark,dask")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="Spark local[N] cores and Dask workers (default 2; 1: no two tasks at once, a check of contention)",
    )
    parser.add_argument(
        "--layout",
        choices=["parts", "file"],
        default="parts",
        help="parts: one Parquet file per partition written by the tasks (-o DIR/); file: one file in input order",
    )
    parser.add_argument("--out", default=str(HERE / "SCALE_ENGINES.md"))
    parser.add_argument("--json", help="also write the raw measurements here")
    parser.add_argument("--from-json", help="only write the report again from measurements saved with --json")
    args = parser.parse_args()
    if not Path(args.out).resolve().parent.is_dir():  # found out now, not after minutes of measuring
        parser.error(f"--out {args.out}: the folder {Path(args.out).resolve().parent} does not exist")
    if args.dataset is None:
        size = f"{args.rows // 1_000_000}m" if args.rows % 1_000_000 == 0 else str(args.rows)
        args.dataset = str(HERE / "data" / f"firm-years-{size}")
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        same = saved.get("same", {})
        Path(args.out).write_text(report(saved["results"], args, tuple(saved["loads"]), same), encoding="utf-8")
        print(f"wrote {args.out}")
        return 0
    if args.child:
        res = child(args.child, args.dataset, args.target, args.book, args.partitions, args.chunk_rows, args.workers)
        res["layout"] = args.layout
        print(json.dumps(res))
        return 0
    ensure_dataset(Path(args.dataset), args.rows)
    before = os.getloadavg()
    results: dict[str, dict | None] = {}
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        outs = {}
        for runner in args.runners.split(","):
            outs[runner] = Path(tmp) / (f"{runner}/" if args.layout == "parts" else f"{runner}.parquet")
            results[runner] = run_child(runner, args, outs[runner])
        after = os.getloadavg()
        if args.json:  # the measurements first: the comparison below takes a while at 10M rows
            Path(args.json).write_text(json.dumps({"results": results, "loads": [before, after], "same": {}}, indent=1))
        ref = outs.get("chunked")
        same = {}
        for runner, path in outs.items():
            if runner != "chunked" and results.get(runner) and ref is not None and ref.exists() and path.exists():
                same[runner] = _same_file(ref, path) if args.layout == "file" else _same_rows(ref, path)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "loads": [before, after], "same": same}, indent=1))
    Path(args.out).write_text(report(results, args, (before, after), same), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


def ensure_dataset(path: Path, rows: int) -> None:
    """Write ``rows`` firm-years to ``path`` once (Parquet files of 1M rows); reuse them afterwards."""
    if path.is_dir() and any(path.glob("*.parquet")):
        print(f"data: {path} (reused)", flush=True)
        return
    sys.path.insert(0, str(HERE))
    from bench_scale import write_dataset

    partial = path.with_name(path.name + ".partial")  # renamed when complete: an interrupted run is not reused
    if partial.exists():
        import shutil

        shutil.rmtree(partial)
    print(f"data: writing {rows:,} firm-years to {path}", flush=True)
    n, seconds = write_dataset(partial, rows)
    partial.rename(path)
    print(f"data: {n:,} rows in {seconds:.0f} s", flush=True)


def _same_rows(a: Path, b: Path, buckets: int = 16) -> bool:
    """Two directories of part files hold the same rows, byte for byte per row: each side's rows
    are spilled into firm-hash buckets (part files taken in order, so a firm's rows stay in input
    order), then bucket by bucket both sides are sorted stably by firm and year and written
    through the canonical sink; the bytes are compared. Memory: a part file and a bucket per side."""
    import tempfile

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ruleengine.scale.partition import firm_keys
    from ruleengine.scale.sink import ResultSink, parts_of

    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        root = Path(tmp)

        def spill(d: Path, side: str) -> tuple[int, object]:
            writers: dict[int, object] = {}
            n, schema = 0, None
            for f in parts_of(d):
                pf = pq.ParquetFile(f)
                for i in range(pf.metadata.num_row_groups):
                    t = pf.read_row_group(i)
                    t = t.cast(pa.schema([pa.field(x.name, x.type.value_type if pa.types.is_dictionary(x.type)
                                                   else x.type) for x in t.schema]))  # fmt: skip
                    schema = schema or t.schema
                    k = (firm_keys(t.column("firm_id")) % np.uint64(buckets)).astype(np.int64)
                    for j in np.unique(k).tolist():
                        if j not in writers:
                            writers[j] = pa.ipc.new_file(str(root / f"{side}-{j}.arrow"), t.schema)
                        writers[j].write_table(t.filter(pa.array(k == j)))  # type: ignore[attr-defined]
                    n += t.num_rows
            for w in writers.values():
                w.close()  # type: ignore[attr-defined]
            return n, schema

        def canonical(side: str, j: int) -> bytes:
            path = root / f"{side}-{j}.arrow"
            if not path.exists():
                return b""
            t = pa.ipc.open_file(str(path)).read_all()
            t = t.append_column("__pos", pa.array(np.arange(t.num_rows, dtype=np.int64)))
            order = pc.sort_indices(t, [("firm_id", "ascending"), ("year", "ascending"), ("__pos", "ascending")])
            out = root / f"{side}-{j}.parquet"
            with ResultSink(out) as sink:
                sink.write(t.take(order).drop_columns(["__pos"]))
            return out.read_bytes()

        (na, sa), (nb, sb) = spill(a, "a"), spill(b, "b")
        if na != nb or sa != sb:
            return False
        return all(canonical("a", j) == canonical("b", j) for j in range(buckets))


def _same_file(a: Path, b: Path) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


if __name__ == "__main__":
    raise SystemExit(main())
