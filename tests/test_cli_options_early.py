"""A probe of the CLI: options refused before any rating work, and runs that match nothing.

Each case was a silent success or a late error: `rate -o out.csv --ledger BADURL` (or
`--supersedes` without `--reason`, or `--sign-key` given the PUBLIC key) rated the whole portfolio
and wrote out.csv before saying so; `test -k nomatch` and `report --all` with nothing to report
exited 0; `compare` of two methods with no firm-year in common printed `nan`; a truncated .json file
was reported as "required columns missing".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import ruleengine.api
from ruleengine.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def _error(r, code: int, line: str) -> None:
    """Exit code ``code``, the one-line message ``line`` (on stderr), no traceback."""
    assert r.exit_code == code, r.output
    assert r.stderr == line + "\n", r.stderr
    assert "Traceback" not in r.output
    assert isinstance(r.exception, SystemExit)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("early") / "firms.csv"
    r = run("sample", "--firms", "30", "--seed", "0", "-o", str(data))
    assert r.exit_code == 0, r.output
    return data


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("cryptography")
    d = tmp_path_factory.mktemp("keys")
    r = run("ledger", "keygen", "--private", str(d / "priv.pem"), "--public", str(d / "pub.pem"))
    assert r.exit_code == 0, r.output
    return d / "priv.pem", d / "pub.pem"


@pytest.fixture
def no_rating(monkeypatch):
    """Rating is not reached: the portfolio API fails the test if it is called."""

    def rate(*args, **kwargs):
        raise AssertionError("rated before the options were checked")

    monkeypatch.setattr(ruleengine.api, "rate", rate)


# --- 1. rate's ledger options: refused up front, no -o written ------------------------------------


@pytest.mark.parametrize(
    ("flags", "code", "line"),
    [
        (
            ["--ledger", "postgresql://u@127.0.0.1:notaport/x"],
            1,
            "error: --ledger: malformed ledger URL '127.0.0.1:notaport/x': "
            "invalid literal for int() with base 10: 'notaport'",
        ),
        (
            ["--ledger", "sqlite://x.db"],
            1,
            "error: --ledger: malformed ledger URL 'sqlite://x.db': a SQLite URL is sqlite:///FILE (three slashes; "
            "four for an absolute path), or give the file path itself",
        ),
        (
            ["--ledger", "foo://bar"],
            1,
            "error: --ledger: unsupported ledger URL 'foo://bar': use a file path, sqlite:///FILE or postgresql://…",
        ),
        (
            ["--ledger", "{tmp}/l.db", "--supersedes", "1"],
            1,
            "error: --supersedes 1 needs --reason TEXT: why run 1 is corrected (recorded with it)",
        ),
        (
            ["--ledger", "{tmp}/l.db", "--supersedes", "2", "--reason", "  "],
            1,
            "error: --supersedes 2 needs --reason TEXT: why run 2 is corrected (recorded with it)",
        ),
        (
            ["--ledger", "{tmp}/l.db", "--sign-key", "{pub}"],
            1,
            "error: --sign-key {pub} is a public key: give the private key (`ruleengine ledger keygen --private FILE`)",
        ),
        (
            ["--ledger", "{tmp}/l.db", "--sign-key-env", "RULEENGINE_TEST_NO_SUCH_KEY"],
            1,
            "error: the environment variable RULEENGINE_TEST_NO_SUCH_KEY (signing key) is not set",
        ),
    ],
)
def test_rate_refuses_bad_ledger_options_before_rating(sample, keys, tmp_path, no_rating, flags, code, line):
    pytest.importorskip("sqlalchemy")
    out = tmp_path / "out.csv"
    subst = {"tmp": str(tmp_path), "pub": str(keys[1])}
    r = run("rate", "huzhou", str(sample), "-o", str(out), *(f.format(**subst) for f in flags))
    _error(r, code, line.format(**subst))
    assert not out.exists()
    assert not (tmp_path / "l.db").exists()


def test_rate_ledger_usage_errors_come_before_rating(sample, tmp_path, no_rating):
    out = tmp_path / "out.parquet"
    r = run("rate", "huzhou", str(sample), "-o", str(out), "--supersedes", "1", "--reason", "fix")
    assert (
        r.exit_code == 2 and "Error: --supersedes, --reason, --no-store-rows and --sign-key need --ledger" in r.output
    )
    # a chunked run was never recorded: --ledger was silently ignored
    r = run("rate", "huzhou", str(sample), "-o", str(out), "--chunk-rows", "10", "--ledger", str(tmp_path / "l.db"))
    assert (
        r.exit_code == 2
        and (
            "Error: --ledger records runs of the local runner only (not with --engine chunked|spark|dask or --chunk-rows)"
        )
        in r.output
    )
    assert not out.exists() and not (tmp_path / "l.db").exists()


def test_good_ledger_options_still_record_a_signed_correction(sample, keys, tmp_path):
    pytest.importorskip("sqlalchemy")
    led, out = tmp_path / "l.db", tmp_path / "out.csv"
    r = run("rate", "huzhou", str(sample), "-o", str(out), "--ledger", str(led))
    assert r.exit_code == 0, r.output
    r = run(
        "rate", "huzhou", str(sample), "--ledger", str(led), "--supersedes", "1", "--reason", "fix", "--sign-key",
        str(keys[0]),
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "recorded run 2 in " in r.stderr and ", signed)" in r.stderr


def test_a_real_process_says_it_before_writing(sample, keys, tmp_path):
    """The same through a real process: one stderr line, no traceback, no -o file."""
    out = tmp_path / "out.csv"
    cmd = [sys.executable, "-m", "ruleengine.cli", "rate", "huzhou", str(sample), "-o", str(out)]
    p = subprocess.run([*cmd, "--ledger", "foo://bar"], capture_output=True, text=True)
    assert p.returncode == 1 and p.stdout == ""
    assert (
        p.stderr
        == "error: --ledger: unsupported ledger URL 'foo://bar': use a file path, sqlite:///FILE or postgresql://…\n"
    )
    p = subprocess.run(
        [*cmd, "--ledger", str(tmp_path / "l.db"), "--sign-key", str(keys[1])], capture_output=True, text=True
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"error: --sign-key {keys[1]} is a public key")
    assert not out.exists()


def test_report_and_sign_name_a_public_key_as_one(sample, keys, tmp_path, no_rating):
    pub = keys[1]
    msg = "is a public key: give the private key (`ruleengine ledger keygen --private FILE`)"
    r = run("report", "huzhou", str(sample), "--firm", "X", "-o", str(tmp_path / "r.html"), "--sign-key", str(pub))
    _error(r, 1, f"error: --sign-key {pub} {msg}")
    assert not (tmp_path / "r.html").exists()
    r = run("sign", str(sample), "--key", str(pub))
    _error(r, 1, f"error: --key {pub} {msg}")
    assert not Path(f"{sample}.sig").exists()


# --- 2. test -k that selects nothing ----------------------------------------------------------------


def test_author_test_filter_that_matches_nothing_is_an_error():
    r = run("test", "huzhou", "-k", "no such case name")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stdout == "rulebooks/huzhou.yaml: no test case name contains 'no such case name'\n"
    assert r.stderr == "error: -k 'no such case name' matched no test case; run without -k to list them all\n"
    r = run("test", "huzhou", "-k", "zero value added")
    assert r.exit_code == 0 and r.stdout.endswith("1 passed, 0 failed\n")


# --- 3. report --all with nothing to report ---------------------------------------------------------


def test_report_all_that_writes_nothing_is_an_error(sample, tmp_path):
    pytest.importorskip("jinja2")
    out = tmp_path / "reports"
    r = run("report", "huzhou", str(sample), "--all", "--year", "1999", "-o", str(out))
    _error(r, 1, f"error: --all wrote no report: {sample} has no firm-year in 1999 (its years: 2022, 2023)")
    header_only = tmp_path / "none.csv"
    header_only.write_text(sample.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    r = run("report", "huzhou", str(header_only), "--all", "-o", str(out))
    _error(r, 1, f"error: --all wrote no report: {header_only} has no firm-years")
    assert not out.exists()


# --- 4. compare of methods with no firm-year in common ----------------------------------------------


def test_compare_without_common_firm_years_says_so_not_nan(sample):
    """Two methods that rate no firm-year in common (each its own city): each one's distribution,
    then one line saying there is nothing to compare pairwise; exit 0 (the table is the answer)."""
    r = run("compare", "huzhou", "shenzhen", "--data", str(sample))
    assert r.exit_code == 0, r.output
    assert "nan" not in r.output and "Spearman" not in r.stdout
    assert "huzhou 3.0.0" in r.stdout and "shenzhen 3.0.0" in r.stdout
    assert r.stdout.endswith("no firm-year rated by both (nothing to compare): huzhou vs shenzhen\n")
    r = run("compare", "huzhou", "shenzhen", "national", "--data", str(sample))
    assert r.exit_code == 0 and "nan" not in r.output
    assert "huzhou vs national: Spearman " in r.stdout
    assert r.stdout.endswith("no firm-year rated by both (nothing to compare): huzhou vs shenzhen\n")


# --- 5. a .json file that is not JSON ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("bad.json", '{"a": ', "line 1, column 6: not valid JSON: Expecting value"),
        ("bad2.json", '{\n  "firm_id": "A",\n  "year": \n', "line 3, column 10: not valid JSON: Expecting value"),
        ("bad.jsonl", '{"firm_id": "A", "year"\n', "line 1, column 24: not valid JSON: Expecting ':' delimiter"),
    ],
)
def test_rate_names_where_a_json_file_is_not_json(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    _error(run("rate", "huzhou", str(path)), 1, f"error: {path}: {where}")
