"""The benchmark script runs end to end (1,000 rows, one repeat) and writes a results row."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_rate.py"


@pytest.mark.skipif(not SCRIPT.is_file(), reason="benchmarks/ is not part of this checkout")
def test_quick_benchmark_writes_a_results_row(tmp_path):
    out = tmp_path / "THROUGHPUT.md"
    start = time.perf_counter()
    cmd = [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--data-dir", str(tmp_path / "data")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - start < 20
    rows = [line for line in out.read_text().splitlines() if line.startswith("| 1,000 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(cells) == 10 and all(cells)
    assert float(cells[2]) > 0  # rate in memory, seconds


CALIBRATE = SCRIPT.parent / "calibrate.py"


@pytest.mark.skipif(not CALIBRATE.is_file(), reason="benchmarks/ is not part of this checkout")
def test_calibrate_reports_the_loop_alone_and_two_at_once():
    proc = subprocess.run(
        [sys.executable, str(CALIBRATE), "--rounds", "1"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    import re

    m = re.fullmatch(
        r"a fixed loop's CPU, 1 rounds: alone median (\d+) ms \(min \d+, max \d+\); two at once median (\d+) ms "
        r"\(min \d+, max \d+\); ratio of medians ([\d.]+)\n",
        proc.stdout,
    )
    assert m, proc.stdout
    alone, pair, ratio = int(m[1]), int(m[2]), float(m[3])
    assert alone > 0 and pair > 0 and abs(ratio - pair / alone) < 0.02
