"""Portfolio report (for a bank) and change report (for a regulator), issue #15."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("jinja2", reason="the report extra is not installed: pip install 'ruleengine[report]'")
pytest.importorskip("matplotlib")

from click.testing import CliRunner  # noqa: E402

from ruleengine import report  # noqa: E402
from ruleengine.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "golden" / "portfolios" / "small.csv"
HUZHOU = ROOT / "rulebooks" / "huzhou.yaml"
NUM = re.compile(r'<span class="num" data-src="([^"]+)"(?: data-value="([^"]+)")?>([^<]*)</span>')


def run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def portfolio_html(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("pf") / "portfolio.html"
    r = run("report", "huzhou", str(SMALL), "--portfolio", "-o", str(out))
    assert r.exit_code == 0, r.output
    return out.read_text(encoding="utf-8")


def test_distribution_counts_equal_the_batch(portfolio_html: str) -> None:
    # small.csv under Huzhou in 2023: G12 level 1; G01-G05 and G11 level 3; G06, G07 level 4; G09, G13
    # level 5; G08 (no value added) and G10 ('1,300' is ambiguous: a thousands separator?) unrated
    nums = {src: (value, text) for src, value, text in NUM.findall(portfolio_html)}
    assert {k: nums[f"count:{k}"][1] for k in ("1", "2", "3", "4", "5", "unrated")} == {
        "1": "1",
        "2": "0",
        "3": "6",
        "4": "2",
        "5": "2",
        "unrated": "2",
    }
    assert "已评价 11 家，未评价 2 家" in portfolio_html
    import ruleengine

    res = ruleengine.rate("huzhou", SMALL)
    batch = {lv: int(((res["year"] == 2023) & (res["rating"] == lv)).sum()) for lv in ("1", "2", "3", "4", "5")}
    assert batch == {k: int(nums[f"count:{k}"][1]) for k in batch}


def test_interest_effect_by_hand(portfolio_html: str) -> None:
    # only G12 (level 1, -30 bp) has a discount: loan 300 x 10^4 CNY x -0.30% = -9,000 CNY a year;
    # loans of rated firms: 30000+8000+6000+2500+1500+9000+3000+4000+1200+300+40000 = 105,500 (10^4 CNY)
    nums = {src: (value, text) for src, value, text in NUM.findall(portfolio_html)}
    assert nums["effect:1"] == ("-9000.0", "−9,000")
    assert nums["effect:total"] == ("-9000.0", "−9,000")
    assert nums["loans:total"] == ("105500.0", "105,500")
    assert nums["loans:3"][0] == str(30000.0 + 8000 + 6000 + 2500 + 1500 + 1200)


def test_unrated_firms_migration_and_closest(portfolio_html: str) -> None:
    assert "value_added_10k_cny: required value is missing" in portfolio_html
    assert "electricity_mwh: &#39;1,300&#39; is ambiguous" in portfolio_html
    assert 'data-chart="migration"' in portfolio_html and "上年 \\ 本年" in portfolio_html
    # closest to an edge: G05 2023 K = 0.8063 is 0.0063 above the level-2 edge 0.8
    closest = portfolio_html[portfolio_html.index('id="closest"') :]
    first = re.search(r'<td class="mono">(G\d\d)</td>', closest).group(1)
    assert first == "G05"
    assert 'data-src="what:margin_to_better:G05"' in closest


def test_portfolio_without_previous_year_or_loans(tmp_path: Path) -> None:
    import csv

    with SMALL.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["year"] == "2023"]
    data = tmp_path / "one_year.csv"
    with data.open("w", newline="") as f:
        w = csv.DictWriter(f, [k for k in rows[0] if k != "loan_amount_10k_cny"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    html = report.portfolio_html(report.rate_portfolio("huzhou", data), lang="en")
    assert "No previous year in the data: no migration" in html
    assert "The data has no loan_amount_10k_cny column: no interest effect" in html
    r = run("report", "huzhou", str(data), "--portfolio", "--year", "2020", "-o", str(tmp_path / "p.html"))
    assert r.exit_code == 1 and r.output.strip() == "error: no firm-years for 2020 in one_year.csv; it has 2023"


def test_change_report_from_diff(tmp_path: Path) -> None:
    # move the level 3/4 edge from K = 1.2 to 1.1: G04 2023 (K = 1.1628) moves from 3 to 4
    text = HUZHOU.read_text(encoding="utf-8")
    version = re.search(r"^version: (\S+)$", text, re.M)[1]
    new = tmp_path / "huzhou.yaml"
    new.write_text(
        text.replace('{id: "3", lower: 0.8, upper: 1.2,', '{id: "3", lower: 0.8, upper: 1.1,')
        .replace('{id: "4", lower: 1.2, upper: 2.0,', '{id: "4", lower: 1.1, upper: 2.0,')
        .replace(f"version: {version}", "version: 9.9.9"),
        encoding="utf-8",
    )
    (tmp_path / "lib").symlink_to(HUZHOU.parent / "lib")
    out = tmp_path / "change.html"
    r = run("diff", str(HUZHOU), str(new), "--data", str(SMALL), "-o", str(out))
    assert r.exit_code == 0, r.output
    html = out.read_text(encoding="utf-8")
    assert "规则变更影响报告" in html and f"huzhou {version} → huzhou 9.9.9" in html
    assert "ratings.level: threshold between 3 and 4" in html
    assert re.search(r"huzhou\.yaml:\d+:\d+", html)  # locations in both files
    assert 'data-chart="migration"' in html and "<svg" in html
    from ruleengine.analysis.diff import run as diff_run

    result = diff_run(HUZHOU, new, SMALL)
    movers = sorted((f["firm_id"], f["year"]) for f in result["impact"]["firms"])
    assert ("G04", 2023) in movers
    for fid, year in movers:
        assert f'<td class="mono">{fid}</td><td>{year}</td>' in html
    m = result["impact"]["matrix"]
    k3, k4 = m["rows"].index("3"), m["columns"].index("4")
    assert f'<td class="n">{m["counts"][k3][k4]}</td>' in html
    pdf = tmp_path / "change.pdf"
    r = run("diff", str(HUZHOU), str(new), "--data", str(SMALL), "-o", str(pdf), "--lang", "en")
    assert r.exit_code == 0 and pdf.read_bytes()[:5] == b"%PDF-"
    r = run("diff", str(HUZHOU), str(new), "-o", str(tmp_path / "change.txt"))
    assert r.exit_code == 1 and "a report is written as .html or .pdf" in r.output
