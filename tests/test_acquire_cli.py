"""`ruleengine acquire ...` end to end through the CLI, into `ruleengine rate` (issue #14)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from test_acquire_meters import READINGS, REGISTER_METER

from ruleengine.cli import main

QUALITY_BOOK = Path(__file__).parent / "data" / "acquire" / "huzhou_quality.yaml"


def _rows(p: Path) -> list[dict[str, str]]:
    with p.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_meters_to_rate_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "reg.yaml").write_text(REGISTER_METER.replace("{policy}", "missing"), encoding="utf-8")
    (tmp_path / "r.csv").write_text(READINGS, encoding="utf-8")
    out = tmp_path / "fy.parquet"
    code, stdout, _ = _run(
        "acquire",
        "meters",
        str(tmp_path / "r.csv"),
        "--register",
        str(tmp_path / "reg.yaml"),
        "-o",
        str(out),
        "--report",
        str(tmp_path / "q.json"),
        "--format",
        "json",
    )
    assert code == 0
    assert (
        stdout == f"wrote 1 firm-year(s) to {out}; report {tmp_path / 'q.json'}: 0 error(s), 1 warning(s), 5 note(s)\n"
    )
    rep = json.loads((tmp_path / "q.json").read_text(encoding="utf-8"))
    assert rep["counts"] == {"error": 0, "warning": 1, "info": 5}
    assert rep["firms"][0]["columns"]["electricity_mwh"]["value"] == pytest.approx(55.2)
    # Huzhou rates it: scope 2 = 55.2 MWh x 0.5500 (east grid, 2023 data-year factor) = 30.36 tCO2
    code, stdout, stderr = _run("rate", "huzhou", str(out), "-o", str(tmp_path / "rated.csv"))
    assert code == 0, stderr
    (rated,) = _rows(tmp_path / "rated.csv")
    assert rated["status"] == "rated" and float(rated["scope2_tco2"]) == pytest.approx(30.36)
    # the test rulebook declares coverage >= 0.9 (error) and >= 0.99 (warning): 0.7486 is unrated
    code, stdout, stderr = _run("rate", str(QUALITY_BOOK), str(out), "-o", str(tmp_path / "q.csv"))
    assert code == 0, stderr
    q = pq.read_table(tmp_path / "fy.parquet").to_pylist()[0]
    assert q["electricity_mwh_coverage"] == pytest.approx(0.748634)
    (r,) = _rows(tmp_path / "q.csv")
    assert r["status"] == "unrated"
    assert (
        "check electricity_coverage_minimum: electricity meter readings cover less than 90% of the year" in r["reasons"]
    )


def test_quality_warning_keeps_the_firm_rated(tmp_path: Path) -> None:
    # readings go on to 20 December: coverage 354 / 366 days, between the two declared thresholds
    (tmp_path / "reg.yaml").write_text(REGISTER_METER.replace("{policy}", "missing"), encoding="utf-8")
    (tmp_path / "r.csv").write_text(READINGS + "000123,2024-12-20 00:00,200\n", encoding="utf-8")
    out = tmp_path / "fy.parquet"
    assert (
        _run(
            "acquire",
            "meters",
            str(tmp_path / "r.csv"),
            "--register",
            str(tmp_path / "reg.yaml"),
            "-o",
            str(out),
            "--report",
            str(tmp_path / "q.txt"),
        )[0]
        == 0
    )
    row = pq.read_table(out).to_pylist()[0]
    # covered 1 Jan - 20 Dec = 354 of 366 days = 0.967213; energy 52,000 + (200 x 40 = 8,000) = 60 MWh
    assert row["electricity_mwh"] == pytest.approx(60.0)
    assert row["electricity_mwh_coverage"] == pytest.approx(354 / 366, abs=1e-6)
    code, _, stderr = _run("rate", str(QUALITY_BOOK), str(out), "-o", str(tmp_path / "q.csv"))
    assert code == 0, stderr
    (r,) = _rows(tmp_path / "q.csv")
    assert r["status"] == "rated"
    # 366 days: a 2024 data year, for which no grid factor is published yet (the vintage warning)
    assert r["reasons"] == (
        "check grid_factor_of_data_year: no electricity CO2 factor is published for this data "
        "year yet; the latest earlier vintage is used (grid_factor_vintage); "
        "check electricity_coverage_complete: electricity meter readings cover less than 99% "
        "of the year (provisional)"
    )


def test_report_formats_and_strict(tmp_path: Path) -> None:
    (tmp_path / "reg.yaml").write_text(REGISTER_METER.replace("{policy}", "missing"), encoding="utf-8")
    (tmp_path / "r.csv").write_text(READINGS + "999999,2024-01-01 00:15,1\n", encoding="utf-8")
    base = [
        "acquire",
        "meters",
        str(tmp_path / "r.csv"),
        "--register",
        str(tmp_path / "reg.yaml"),
        "-o",
        str(tmp_path / "o.csv"),
    ]
    code, md, _ = _run(*base, "--format", "markdown")
    assert code == 0
    assert md.startswith("# Data acquisition: meters, 2024\n")
    assert "| error | unknown_meter | meter 999999 | " in md
    code, text, _ = _run(*base)
    assert "error[unknown_meter] meter 999999: 1 reading(s) of a meter that is not in the register; ignored" in text
    assert _run(*base, "--strict")[0] == 1
    code, _, err = _run(
        "acquire", "meters", str(tmp_path / "r.csv"), "--register", str(tmp_path / "none.yaml"), "-o", "x.parquet"
    )
    assert code == 1 and err == f"error: {tmp_path / 'none.yaml'}: register file not found\n"
    code, _, err = _run(*base[:-2], "-o", str(tmp_path / "o.txt"))
    assert code == 1 and err == f"error: {tmp_path / 'o.txt'}: write .parquet or .csv\n"


def test_sample_invoices_crossval_and_national(tmp_path: Path) -> None:
    code, stdout, _ = _run("acquire", "sample", str(tmp_path / "s"), "--firms", "4", "--seed", "7")
    assert code == 0 and stdout.startswith(f"register: 1 file ({tmp_path / 's' / 'register.yaml'})\n")
    s = tmp_path / "s"
    meters = sorted(str(p) for p in (s / "meters").iterdir())
    assert (
        _run(
            "acquire",
            "meters",
            *meters,
            "--register",
            str(s / "register.yaml"),
            "-o",
            str(tmp_path / "m.parquet"),
            "--report",
            str(tmp_path / "m.md"),
            "--format",
            "markdown",
        )[0]
        == 0
    )
    assert (
        _run(
            "acquire",
            "invoices",
            str(s / "invoices"),
            "--mapping",
            str(s / "mapping.yaml"),
            "-o",
            str(tmp_path / "i.parquet"),
            "--report",
            str(tmp_path / "i.txt"),
        )[0]
        == 0
    )
    code, stdout, _ = _run(
        "acquire",
        "crossval",
        str(tmp_path / "m.parquet"),
        str(tmp_path / "i.parquet"),
        "--tolerance",
        "0.05",
        "-o",
        str(tmp_path / "x.parquet"),
        "--report",
        str(tmp_path / "x.json"),
        "--format",
        "json",
    )
    assert code == 0
    rep = json.loads((tmp_path / "x.json").read_text(encoding="utf-8"))
    assert rep["totals"]["compared"] >= 4 and rep["totals"]["beyond tolerance"] == 0
    rows = pq.read_table(tmp_path / "x.parquet").to_pylist()
    assert len(rows) == 4
    assert all(r["electricity_mwh_source"].startswith("meters (the other source agrees within 5%") for r in rows)
    assert all(r["electricity_mwh_crossval"] <= 0.05 for r in rows)
    # vehicle fuel from invoices in its own column; the national draft counts it, Huzhou does not
    assert rows[0]["vehicle_diesel_t"] == pytest.approx(1200 * 0.00083)
    for book in ("national", "huzhou", "quzhou", "shenzhen"):
        code, _, err = _run("rate", book, str(tmp_path / "x.parquet"), "-o", str(tmp_path / f"{book}.csv"))
        assert code == 0, err


def test_sample_is_deterministic(tmp_path: Path) -> None:
    def digest(d: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(d.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(d)).encode() + p.read_bytes())
        return h.hexdigest()

    for k in (1, 2):
        assert _run("acquire", "sample", str(tmp_path / f"s{k}"), "--firms", "3", "--seed", "11")[0] == 0
    assert digest(tmp_path / "s1") == digest(tmp_path / "s2")
    assert _run("acquire", "sample", str(tmp_path / "s3"), "--firms", "3", "--seed", "12")[0] == 0
    assert digest(tmp_path / "s1") != digest(tmp_path / "s3")


def test_jobs_give_the_same_bytes(tmp_path: Path) -> None:
    assert _run("acquire", "sample", str(tmp_path / "s"), "--firms", "3", "--seed", "5")[0] == 0
    meters = sorted(str(p) for p in (tmp_path / "s" / "meters").iterdir())
    assert len(meters) == 3  # two electricity files and the gas file: three independent groups
    outs = []
    for jobs in ("1", "2"):
        out, rep = tmp_path / f"o{jobs}.parquet", tmp_path / f"r{jobs}.json"
        code, _, err = _run(
            "acquire",
            "meters",
            *meters,
            "--register",
            str(tmp_path / "s" / "register.yaml"),
            "--jobs",
            jobs,
            "-o",
            str(out),
            "--report",
            str(rep),
            "--format",
            "json",
        )
        assert code == 0, err
        outs.append((out.read_bytes(), rep.read_text(encoding="utf-8")))
    assert outs[0] == outs[1]
