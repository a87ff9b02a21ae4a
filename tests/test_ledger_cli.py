"""The ledger on the command line (issue #16): `rate --ledger [URL]` and `ruleengine ledger …`."""

from __future__ import annotations

import json
import subprocess
import sys

import ledger_required  # noqa: F401  (skips without the ledger extra)
import pytest
from click.testing import CliRunner
from ledger_pg import make_sample

import ruleengine
from ruleengine.cli import main
from ruleengine.ledger import open_ledger


def test_ledger_without_a_value_is_ruleengine_db_next_to_the_data(tmp_path, monkeypatch):
    folder = tmp_path / "portfolio"
    folder.mkdir()
    data = make_sample(folder / "firms.csv", firms=5)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    out = runner.invoke(main, ["rate", "huzhou", str(data), "--ledger"])
    assert out.exit_code == 0, out.output
    assert f"recorded run 1 in {folder / 'ruleengine.db'}" in out.output
    # before another option it is still a bare flag
    out = runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", "-o", str(tmp_path / "out.csv")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "out.csv").is_file()
    assert not (tmp_path / "ruleengine.db").exists()
    assert [r["id"] for r in open_ledger(folder / "ruleengine.db").runs()] == [1, 2]


def test_rate_ledger_url_and_the_ledger_commands(ledger_url, tmp_path):
    data = make_sample(tmp_path / "firms.csv", firms=6)
    runner = CliRunner()
    out = runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", ledger_url, "--format", "json"])
    assert out.exit_code == 0, out.output
    rated = json.loads(out.stdout)
    out = runner.invoke(
        main,
        [
            "rate",
            "huzhou",
            str(data),
            "--ledger",
            ledger_url,
            "--supersedes",
            "1",
            "--reason",
            "typo in firm 3",
            "--hash",
            "sm3",
            "--no-store-rows",
        ],
    )
    assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["ledger", "-l", ledger_url, "runs"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert len(lines) == 2
    assert f"huzhou {ruleengine.load('huzhou').version}  12 ratings" in lines[0] and lines[0].endswith("[superseded]")
    assert lines[1].endswith("[corrects run 1: typo in firm 3]")
    out = runner.invoke(main, ["ledger", "-l", ledger_url, "show", "2"])
    assert out.exit_code == 0
    assert "hash_alg: sm3" in out.output and "input_blob" not in out.output and "supersedes: 1" in out.output
    firm = rated[0]["firm_id"]
    out = runner.invoke(main, ["ledger", "-l", ledger_url, "show", "1", "--firm", firm, "--format", "json"])
    shown = json.loads(out.output)
    assert [(s["year"], s["rating"]) for s in shown] == [
        (r["year"], r["rating"]) for r in rated if r["firm_id"] == firm
    ]
    out = runner.invoke(main, ["ledger", "-l", ledger_url, "export", "-o", str(tmp_path / "x.jsonl"), "--blobs"])
    assert out.exit_code == 0, out.output
    kinds = [json.loads(line)["type"] for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    # 2 runs of 12 ratings; blobs: 2 rulebook files + manifest, each in sha256 and sm3; rows once; 2 tables
    assert kinds.count("run") == 2 and kinds.count("rating") == 24 and kinds.count("blob") == 9
    out = runner.invoke(main, ["ledger", "-l", ledger_url, "replay", "2"])
    assert out.exit_code == 1 and "recorded without its input rows" in out.output
    out = runner.invoke(main, ["ledger", "-l", ledger_url, "replay", "2", "--data", str(data)])
    assert out.exit_code == 0 and "byte-identical" in out.output


def test_errors_are_messages_not_tracebacks(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["ledger", "-l", str(tmp_path / "none.db"), "runs"])
    assert out.exit_code == 1
    assert f"error: no ledger at {tmp_path / 'none.db'} (record a run first" in out.output
    assert not (tmp_path / "none.db").exists()
    (tmp_path / "other.db").write_bytes(b"")
    out = runner.invoke(main, ["ledger", "-l", str(tmp_path / "other.db"), "runs"])
    assert out.exit_code == 1 and "is not a ruleengine ledger" in out.output
    (tmp_path / "junk.db").write_bytes(b"this is not a database at all" * 100)
    out = runner.invoke(main, ["ledger", "-l", str(tmp_path / "junk.db"), "check"])
    assert out.exit_code == 1 and out.output.startswith("error: ledger ") and "not a database" in out.output
    data = make_sample(tmp_path / "firms.csv", firms=3)
    out = runner.invoke(main, ["rate", "huzhou", str(data), "--reason", "x"])
    assert out.exit_code == 2 and "need --ledger" in out.output
    out = runner.invoke(main, ["ledger", "-l", str(tmp_path / "l.db"), "replay"])
    assert out.exit_code == 2 and "give RUN or --all" in out.output
    out = runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", "postgresql://u:pw@127.0.0.1:1/db"])
    assert out.exit_code == 1 and "pw" not in out.output and "error: " in out.output


def test_a_file_url_is_refused_naming_the_path_to_give(tmp_path, monkeypatch):
    """`--ledger file:y.db` was taken as a path and made a SQLite file named `file:y.db` in the
    working directory (and `file:///…` was "unsupported" with no word on what to give). A file:
    URL is refused, naming the path (or sqlite:/// URL) that says the same; nothing is created."""
    monkeypatch.chdir(tmp_path)
    data = make_sample(tmp_path / "firms.csv", firms=3)
    runner = CliRunner()
    out = runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", "file:y.db"])
    assert (out.exit_code, out.output) == (
        1,
        "error: --ledger: unsupported ledger URL 'file:y.db': file: URLs are not read; give the file path "
        "itself (y.db) or sqlite:///y.db\n",
    )
    url = f"file://{tmp_path}/z.db"
    out = runner.invoke(main, ["ledger", "-l", url, "runs"])
    assert (out.exit_code, out.output) == (
        1,
        f"error: unsupported ledger URL '{url}': file: URLs are not read; give the file path itself "
        f"({tmp_path}/z.db) or sqlite:///{tmp_path}/z.db\n",
    )
    out = runner.invoke(main, ["ledger", "-l", "file:y.db?mode=ro", "check"])
    assert (out.exit_code, out.output) == (
        1,
        "error: unsupported ledger URL 'file:y.db?mode=ro': file: URLs are not read; give the file path "
        "itself, sqlite:///FILE or postgresql://…\n",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["firms.csv"]
    # the path itself, and a file really named file:…, still work
    for given, made in (("y.db", "y.db"), ("./file:y.db", "file:y.db")):
        out = runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", given])
        assert out.exit_code == 0, out.output
        assert (tmp_path / made).is_file()


def test_real_process_and_env_var(tmp_path):
    data = make_sample(tmp_path / "firms.csv", firms=4)
    url = str(tmp_path / "l.db")
    subprocess.run(
        [sys.executable, "-m", "ruleengine.cli", "rate", "huzhou", str(data), "--ledger", url],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [sys.executable, "-m", "ruleengine.cli", "ledger", "check"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "RULEENGINE_LEDGER": url},
    )
    assert out.returncode == 0 and "ledger intact: 1 runs, 8 ratings" in out.stdout


def test_explain_a_rating_from_the_ledger(tmp_path):
    """The trace of a recorded rating comes from the stored rulebook and rows, not today's files."""
    data = make_sample(tmp_path / "firms.csv", firms=8)
    url = str(tmp_path / "l.db")
    runner = CliRunner()
    assert runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", url]).exit_code == 0
    firm = open_ledger(url).ratings(1)[0]["firm_id"]
    direct = runner.invoke(main, ["explain", "huzhou", str(data), "--firm", firm, "--year", "2022", "--format", "json"])
    data.write_text("firm_id,year\n", encoding="utf-8")  # the file on disk is gone
    out = runner.invoke(
        main, ["ledger", "-l", url, "explain", "1", "--firm", firm, "--year", "2022", "--format", "json"]
    )
    assert out.exit_code == 0, out.output
    got, want = json.loads(out.output), json.loads(direct.output)
    # every value and decision the same (file paths in the details differ: the replay's temp folder)
    assert [(n["name"], n["value"]) for n in got["nodes"]] == [(n["name"], n["value"]) for n in want["nodes"]]
    assert len(got["nodes"]) > 40
    assert json.dumps(got["decisions"]) == json.dumps(want["decisions"])
    out = runner.invoke(main, ["ledger", "-l", url, "explain", "1", "--firm", firm, "--year", "2022"])
    assert out.exit_code == 0 and out.output.startswith("run 1 (")


def _report_text(path) -> str:
    import html
    import re

    t = re.sub(r"<style.*?</style>", " ", path.read_text(encoding="utf-8"), flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", t)))


def test_report_of_a_rating_from_the_ledger(tmp_path):
    """`ledger report RUN --firm` shows the recorded rating, from the stored rulebook, rows and
    tables: the same rating card as a report made at the time, after the data file is gone."""
    pytest.importorskip("jinja2")
    data = make_sample(tmp_path / "firms.csv", firms=8)
    url = str(tmp_path / "l.db")
    runner = CliRunner()
    assert runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", url]).exit_code == 0
    firm = next(r for r in open_ledger(url).ratings(1) if r["status"] == "rated")["firm_id"]
    then = tmp_path / "then.html"
    args = ["--firm", firm, "--year", "2022", "--lang", "en", "--no-appendix", "-o"]
    out = runner.invoke(main, ["report", "huzhou", str(data), *args, str(then)])
    assert out.exit_code == 0, out.output
    data.write_text("firm_id,year\n", encoding="utf-8")  # the file on disk is gone
    now = tmp_path / "now.html"
    out = runner.invoke(main, ["ledger", "-l", url, "report", "1", *args, str(now)])
    assert out.exit_code == 0, out.output
    assert "run 1, huzhou 3.0.0" in out.output

    def card(text: str) -> str:
        return text[text.index("Carbon efficiency level") : text.index("Loan incentive")]

    got, want = card(_report_text(now)), card(_report_text(then))
    assert got == want and "Band" in got
    assert "ledger run 1" in _report_text(now)
    # an unknown firm and a wrong extension: clear errors, no traceback, nothing written
    out = runner.invoke(main, ["ledger", "-l", url, "report", "1", "--firm", "NOPE", "-o", str(tmp_path / "x.html")])
    assert out.exit_code == 1 and "no firm 'NOPE' in ledger run 1" in out.output
    assert not (tmp_path / "x.html").exists()
    out = runner.invoke(main, ["ledger", "-l", url, "report", "1", "--firm", firm, "-o", str(tmp_path / "x.txt")])
    assert out.exit_code == 2 and "report.html or report.pdf" in out.output
