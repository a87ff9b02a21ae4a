"""One end-to-end run in a fresh process: ``python _rate_child.py BOOK SRC DST``.

Imports nothing before the clock starts, then does what ``ruleengine.rate(BOOK, SRC).write(DST)``
does, stage by stage, and prints one JSON line: seconds inside the process, rows, the time of each
stage (wall; and ``cpu_stages``, CPU time of the whole process, all threads: what to compare on a
shared machine), the resident set after the imports and its high-water mark (``VmHWM``; not
``ru_maxrss``, which a child started by a big benchmark process inherits from it). The caller
times the whole process from the outside too (interpreter start-up and exit included).
"""

import time

start = time.perf_counter()
cpu_start = time.process_time()

import json  # noqa: E402
import sys  # noqa: E402


def _status_mb(field: str) -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main(book: str, src: str, dst: str) -> None:
    import numpy  # noqa: F401  (imported by the first rate anyway: counted with the imports,
    import pyarrow.parquet  # noqa: F401  and the resident set after imports includes them)

    import ruleengine

    marks = [("imports", time.perf_counter(), time.process_time())]
    base = _status_mb("VmRSS")
    plan = ruleengine.load(book)
    marks.append(("plan", time.perf_counter(), time.process_time()))
    # the pipeline itself, timed by its progress hook: read + check, evaluate (stage 1, benchmark
    # tables, stage 2), build the results table
    names = {"check": "read + prepare", "stage 2": "evaluate", "results": "build"}

    def tick(phase: str, done: int, total: int) -> None:
        if phase in names:
            marks.append((names[phase], time.perf_counter(), time.process_time()))

    results = ruleengine.rate(plan, src, progress=tick)
    results.write(dst)
    marks.append(("write", time.perf_counter(), time.process_time()))
    stages = {"imports": marks[0][1] - start}
    stages.update({name: t - prev[1] for (name, t, _), prev in zip(marks[1:], marks, strict=False)})
    cpu = {"imports": marks[0][2] - cpu_start}
    cpu.update({name: c - prev[2] for (name, _, c), prev in zip(marks[1:], marks, strict=False)})
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - start,
                "rows": len(results),
                "stages": stages,
                "cpu_seconds": time.process_time() - cpu_start,
                "cpu_stages": cpu,
                "base_rss_mb": base,
                "max_rss_mb": _status_mb("VmHWM"),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
