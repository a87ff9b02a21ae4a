"""`ledger history FIRM` (issue #16): a firm's ratings over years and method versions, with why
each changed (data, method, benchmarks), on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json

import ledger_required  # noqa: F401  (skips without the ledger extra)
import numpy as np
import pytest
from click.testing import CliRunner
from ledger_pg import make_sample

import ruleengine
from ruleengine.cli import main
from ruleengine.ledger import LedgerError, open_ledger
from ruleengine.rulebook.source import bundled_dir

V = ruleengine.load("huzhou").version  # the bundled Huzhou version the edits start from


def _method_v11(folder):
    """huzhou 9.1.0 (bundled version V, edited): level 5 starts at K > 1.5 instead of 2.0 (its library comes from the bundle)."""
    text = (bundled_dir() / "huzhou.yaml").read_text(encoding="utf-8")
    text = text.replace(f"version: {V}", "version: 9.1.0", 1)
    text = text.replace('{id: "4", lower: 1.2, upper: 2.0', '{id: "4", lower: 1.2, upper: 1.5', 1)
    text = text.replace('{id: "5", lower: 2.0,', '{id: "5", lower: 1.5,', 1)
    folder.mkdir()
    path = folder / "huzhou.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def story(ledger_url, tmp_path):
    data = make_sample(tmp_path / "a.csv", firms=60, seed=7)
    v11 = _method_v11(tmp_path / "v11")
    res1 = ruleengine.rate("huzhou", data)
    # a firm at level 4 in 2023 with 1.5 < K <= 2.0: level 5 under 1.1.0
    k, rating, years = res1["k"], res1["rating"], res1["year"]
    hits = np.flatnonzero((years == 2023) & (k > 1.5) & (k <= 2.0) & (rating == "4"))
    assert hits.size, "the sample should hold a firm with 1.5 < K <= 2.0"
    firm = res1["firm_id"][hits[0]]
    res2 = ruleengine.rate(v11, data)
    # the firm's data changes in 2023: three times the electricity
    with open(data, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        if r["firm_id"] == firm and r["year"] == "2023":
            r["electricity_mwh"] = str(float(r["electricity_mwh"]) * 3)
    changed = tmp_path / "b.csv"
    with open(changed, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res3 = ruleengine.rate("huzhou", changed)
    led = open_ledger(ledger_url)
    led.record("huzhou", data, res1)
    led.record(v11, data, res2)
    led.record("huzhou", changed, res3, supersedes=1, reason="electricity corrected")
    yield led, firm, (res1, res2, res3), ledger_url
    led.dispose()


def _rating(res, firm, year):
    i = res.find(firm, year)[0]
    return res["rating"][i]


def test_history_says_why_each_rating_changed(story):
    led, firm, (res1, res2, res3), _ = story
    h = led.history(firm)
    assert [(x["year"], x["run_id"]) for x in h] == [(2022, 1), (2022, 2), (2022, 3), (2023, 1), (2023, 2), (2023, 3)]
    for x in h:
        assert x["rating"] == _rating((res1, res2, res3)[x["run_id"] - 1], firm, x["year"])
    y23 = [x for x in h if x["year"] == 2023]
    assert y23[0]["rating"] == "4" and y23[0]["why"] == ["first rating of this firm-year"]
    # 1.1.0 puts K in (1.5, 2.0] at level 5: the method changed, nothing else
    assert y23[1]["rating"] == "5" and y23[1]["changed"]
    assert y23[1]["why"] == [f"method: huzhou {V} → huzhou 9.1.0"]
    # back to 1.0.0 with three times the electricity: data, method and the industry's benchmark
    assert y23[2]["why"] == [
        "data: the firm's input row changed",
        f"method: huzhou 9.1.0 → huzhou {V}",
        "benchmarks: the peer-group tables changed",
    ]
    assert h[0]["superseded_by"] == 3 and h[2]["superseded_by"] is None
    # 2022: the same input row in all three runs
    assert not any("data:" in w for x in h if x["year"] == 2022 for w in x["why"])


def test_history_cli_text_json_and_edits(story):
    _led, firm, _res, url = story
    runner = CliRunner()
    out = runner.invoke(main, ["ledger", "-l", url, "history", firm, "--edits"])
    assert out.exit_code == 0, out.output
    assert f"firm {firm}: 6 rating(s)" in out.output
    assert f"method: huzhou {V} → huzhou 9.1.0" in out.output
    # ruleengine diff's structural edits of the stored rulebooks
    assert "method edit: ratings.level: threshold between 4 and 5: 2.0 → 1.5" in out.output
    assert "method edit: ratings.level: threshold between 4 and 5: 1.5 → 2.0" in out.output
    out = runner.invoke(main, ["ledger", "-l", url, "history", firm, "--format", "json"])
    doc = json.loads(out.output)
    assert [d["rating"] for d in doc if d["year"] == 2023][:2] == ["4", "5"]
    out = runner.invoke(main, ["ledger", "-l", url, "history", "nobody"])
    assert out.exit_code == 1 and "error: firm 'nobody' has no rating in the ledger" in out.output


def test_history_of_an_unknown_firm(ledger_url):
    led = open_ledger(ledger_url)
    with pytest.raises(LedgerError, match="firm 'x' has no rating in the ledger"):
        led.history("x")
    led.dispose()
