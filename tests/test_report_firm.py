"""Firm report (issue #15): the CLI, bad requests, self-containment, determinism, both languages, and
every number on the page checked against the batch result and an independently made trace."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

pytest.importorskip("jinja2", reason="the report extra is not installed: pip install 'ruleengine[report]'")
pytest.importorskip("matplotlib")
pytest.importorskip("segno")

from click.testing import CliRunner  # noqa: E402

import ruleengine  # noqa: E402
from ruleengine import report  # noqa: E402
from ruleengine.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "golden" / "portfolios" / "small.csv"
NUM = re.compile(r'<span class="num" data-src="([^"]+)"(?: data-value="([^"]+)")?>([^<]*)</span>')
CJK = re.compile(r"[\u3400-\u9fff]")


@pytest.fixture(scope="module")
def huzhou() -> report.Rated:
    return report.rate_portfolio("huzhou", SMALL)


def run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_writes_one_self_contained_html_file(tmp_path: Path) -> None:
    out = tmp_path / "G01.html"
    r = run("report", "huzhou", str(SMALL), "--firm", "G01", "--year", "2023", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"wrote {out}"
    html = out.read_text(encoding="utf-8")
    # one file: no script, no stylesheet link, no image or font fetched from anywhere
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert not re.search(r'(src|href)\s*=\s*"(https?:|//)', html)
    assert "@import" not in html and "url(http" not in html
    # page one as the issue lists it: identity, GB/T 4754 name, city, the level with its colour,
    # incentive, what-it-takes, last year's rating
    assert "Cement One" in html and "G01" in html
    assert "3011 水泥制造" in html and "非金属矿物制品业" in html  # GB/T 4754-2017 class and division
    assert "湖州" in html or "衢州" in html
    assert 'data-level="3"' in html and "三级" in html and "#f0c419" in html  # level 3, yellow
    assert "碳效等级" in html and "高碳" in html  # the method's rating and the absolute label
    assert "标准条款" in html  # the incentive of level 3
    assert "上一更优等级" in html and "下一较差等级" in html
    assert "2022:" in html  # last year's rating is shown
    # every chart is there, each with a data table
    for chart in ("energy", "sources", "years", "peers", "indicators"):
        assert f'data-chart="{chart}"' in html
    assert html.count('<svg role="img"') == 4  # Huzhou has no indicator scores: said so in text
    assert "本方法不设分项得分" in html
    assert html.count('class="data-table"') == 4
    # the audit trail appendix is collapsed, with the zero inputs folded inside it
    assert '<details id="audit-trail">' in html and '<details id="zero-inputs">' in html
    assert "coke_t = 0" in html


def test_the_same_inputs_give_byte_identical_html(tmp_path: Path) -> None:
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    for out in (a, b):
        assert run("report", "huzhou", str(SMALL), "--firm", "G05", "-o", str(out)).exit_code == 0
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("book", ["huzhou", "quzhou", "shenzhen", "national"])
def test_every_bundled_rulebook_in_both_languages(huzhou: report.Rated, book: str) -> None:
    rated = huzhou if book == "huzhou" else report.rate_portfolio(book, SMALL)
    zh = report.firm_html(rated, "G11", 2023, "zh")
    en = report.firm_html(rated, "G11", 2023, "en")
    assert '<html lang="zh-CN">' in zh and '<html lang="en">' in en
    assert "企业碳评价报告" in zh and "Carbon rating report" in en
    # --lang switches every string: the English page has no Chinese (the firm's data is in English)
    assert CJK.findall(en) == [], sorted(set(CJK.findall(en)))[:20]
    level = str(rated.results["rating"][rated.results.find("G11", 2023)[0]])
    label_zh = {"huzhou": {"3": "三级"}, "quzhou": {}, "shenzhen": {}, "national": {"C": "C 平均"}}[book].get(level)
    if label_zh:
        assert label_zh in zh


def test_shenzhen_shows_its_five_themes_and_quzhou_its_dimensions() -> None:
    sz = report.firm_html(report.rate_portfolio("shenzhen", SMALL), "G11", 2023, "zh")
    for theme in ("能效", "碳效", "节能成效", "减排成效", "行业效率"):
        assert f"<td>{theme}</td>" in sz
    assert sz.count('<svg role="img"') == 5
    qz = report.firm_html(report.rate_portfolio("quzhou", SMALL), "G11", 2023, "zh")
    for dim in ("行业先进性", "区域贡献度", "历史下降"):
        assert f"<td>{dim}</td>" in qz


def test_unknown_firm_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    r = run("report", "huzhou", str(SMALL), "--firm", "G99", "-o", str(tmp_path / "x.html"))
    assert r.exit_code == 1
    assert r.output.strip() == "error: no firm 'G99' in small.csv; near matches: G09"
    r = run("report", "huzhou", str(SMALL), "--firm", "G01", "--year", "2021", "-o", str(tmp_path / "x.html"))
    assert r.exit_code == 1
    assert r.output.strip() == "error: firm 'G01' has no row for 2021 in small.csv; it has the years 2022, 2023"
    r = run("report", "huzhou", str(SMALL), "--firm", "G01", "-o", str(tmp_path / "x.docx"))
    assert r.exit_code == 2 and "report.html or report.pdf" in r.output
    r = run("report", "huzhou", str(SMALL), "-o", str(tmp_path / "x.html"))
    assert r.exit_code == 2 and "exactly one of --firm ID, --all or --portfolio" in r.output
    assert not list(tmp_path.iterdir())


def test_an_unrated_firm_gets_a_report_saying_why(huzhou: report.Rated) -> None:
    # G08 2023 has no value added (row 16 of small.csv): Huzhou's L cannot be computed
    html = report.firm_html(huzhou, "G08", 2023, "zh")
    assert "未评价" in html and "未能评价的原因" in html
    assert "value_added_10k_cny: required value is missing" in html
    assert "<td>17</td>" in html  # the data problem, located by the file's line (row 16 + the header)
    assert "2022: 三级" in html  # last year it was rated
    en = report.firm_html(huzhou, "G08", 2023, "en")
    assert "Why this firm-year is not rated" in en


def test_a_firm_without_a_prior_year_says_so(huzhou: report.Rated) -> None:
    html = report.firm_html(huzhou, "G01", 2022, "zh")
    assert "数据中无上一年度记录 (2021)" in html
    en = report.firm_html(huzhou, "G01", 2022, "en")
    assert "No previous year in the data (2021)" in en


def _trace_value(td: dict, src: str) -> float | None:
    kind, _, path = src.partition(":")
    if path.startswith("what_it_takes."):
        _, direction, field = path.split(".")
        return td["what_it_takes"][direction][field]
    if path.startswith("cut."):
        _, what, field = path.split(".")
        return next(c[field] for c in td["what_it_takes"]["better"]["cuts"] if c["what"] == what)
    raise AssertionError(src)


def _shown(text: str) -> float:
    t = text.replace(",", "").replace("−", "-").replace("%", "").replace("基点", "").replace("bp", "").strip()
    return float(t)


@pytest.mark.parametrize("firm,year", [("G01", 2023), ("G06", 2023), ("G12", 2023), ("G08", 2023), ("G03", 2022)])
def test_every_number_equals_the_batch_result_and_the_trace(huzhou: report.Rated, firm: str, year: int) -> None:
    html = report.firm_html(huzhou, firm, year, "en")
    res = huzhou.results
    i = res.find(firm, year)[0]
    # the trace made independently, as `ruleengine explain` makes it (the data rated afresh)
    td = ruleengine.explain("huzhou", SMALL, firm, year).to_dict()
    found = NUM.findall(html)
    assert len(found) >= (10 if td["status"] == "rated" else 5)
    for src, value, text in found:
        if src.startswith("result:"):
            expected = res[src[7:]][i]
        elif src.startswith("result@"):
            y, col = src[7:].split(":")
            expected = res[col][res.find(firm, int(y))[0]]
        elif src.startswith("trace:"):
            expected = _trace_value(td, src)
        else:
            raise AssertionError(f"a number from nowhere: {src}")
        expected = float(expected)
        if math.isnan(expected):
            assert value == "" and text == "—", (src, text)
            continue
        assert float(value) == expected, (src, value, expected)
        shown = _shown(text)
        digits = len(text.split(".")[1].rstrip("%").split()[0]) if "." in text else 0
        assert abs(shown - expected) <= 0.5 * 10**-digits + 1e-12 * abs(expected), (src, text, expected)
    # the audit trail's values are the trace's
    nodes = {n["name"]: n["value"] for n in td["nodes"]}
    trail = re.findall(r'data-trace="([^"]+)" data-value="([^"]+)"', html)
    assert trail
    for name, value in trail:
        assert float(value) == float(nodes[name]), name
    # and the batch result and the trace agree on the decisive numbers
    if td["status"] == "rated":
        assert nodes["k"] == float(res["k"][i])
        assert td["decisions"][0]["level"] == str(res["rating"][i])


def test_g01_page_one_numbers_by_hand(huzhou: report.Rated) -> None:
    # G01 2023: 57,000 t raw coal x 1.9002988 tCO2/t = 108,317.03; 45,600 MWh x 0.5500 (East grid,
    # 2023 data year) = 25,080.00; emissions 133,397.03 tCO2. K = 1.03800 in (0.8, 1.2] -> level 3;
    # margin to level 2 = K - 0.8 = 0.2380, to level 4 = 1.2 - K = 0.1620 (4 significant digits)
    html = report.firm_html(huzhou, "G01", 2023, "en")
    assert ">133,397.0</span> tCO2" in html
    assert 'data-src="result:k" data-value="1.037996199893' in html and ">1.038</span>" in html
    assert ">0.2380</span>" in html and ">0.1620</span>" in html
    assert "<code>k &lt;= 0.8</code>" in html and "<code>k &gt; 1.2</code>" in html


def test_digest_and_qr_match_the_trace_that_verify_checks(tmp_path: Path, huzhou: report.Rated) -> None:
    html = report.firm_html(huzhou, "G06", 2023, "zh")
    digest = re.search(r'<dd class="mono" id="digest">(sha256:[0-9a-f]{64})</dd>', html).group(1)
    r = run("explain", "huzhou", str(SMALL), "--firm", "G06", "--year", "2023", "--format", "json")
    assert r.exit_code == 0
    trace_file = tmp_path / "G06.trace.json"
    trace_file.write_text(r.output, encoding="utf-8")
    assert report.trace_digest(json.loads(r.output)) == digest
    v = run("verify", str(trace_file))
    assert v.exit_code == 0 and v.output.startswith("verified: G06 2023 under huzhou")
    # the QR code carries method, firm-year, rating and the digest (segno draws it as SVG paths,
    # so the payload is checked where the page gets it)
    ctx = report.firm_context(huzhou, huzhou.results.find("G06", 2023)[0], "zh")
    assert ctx["provenance"]["qr_payload"] == f"ruleengine|huzhou|{huzhou.plan.version}|G06|2023|4|{digest}"
    assert 'class="qr"' in html


def test_all_writes_one_report_per_firm(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    r = run("report", "huzhou", str(SMALL), "--all", "--lang", "en", "-o", str(out))
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"G{k:02d}_2023.html" for k in range(1, 14)]
    assert r.output.strip().endswith(f"wrote 13 reports to {out}")


def test_report_date_is_the_option_or_the_end_of_the_year(huzhou: report.Rated) -> None:
    html = report.firm_html(huzhou, "G01", 2023, "en")
    assert '<meta name="dcterms.created" content="2023-12-31">' in html
    html = report.firm_html(huzhou, "G01", 2023, "en", date="2024-03-15")
    assert '<meta name="dcterms.created" content="2024-03-15">' in html
    r = run("report", "huzhou", str(SMALL), "--firm", "G01", "--date", "15/03/2024", "-o", "x.html")
    assert r.exit_code == 2 and "YYYY-MM-DD" in r.output


def test_a_peer_group_drawn_once_gives_the_same_page_as_a_fresh_drawing() -> None:
    # G01-G05 are the cement class (3011) peer group of 2023: its histogram is drawn for G01 and kept
    # with the rated portfolio; G02-G05 only move the firm's marker. Each page equals the page made
    # first thing from a freshly rated portfolio (nothing cached).
    warm = report.rate_portfolio("huzhou", SMALL)
    pages = {f: report.firm_html(warm, f, 2023, "zh") for f in ("G01", "G02", "G03", "G04", "G05")}
    assert len(warm._peer_charts) == 1  # one group, drawn once
    for firm in ("G05", "G02"):
        fresh = report.firm_html(report.rate_portfolio("huzhou", SMALL), firm, 2023, "zh")
        assert pages[firm] == fresh, firm
    # and the marker did move: the five peer charts are five different drawings
    peer = re.compile(r'<figure[^>]*data-chart="peers".*?</figure>', re.S)
    assert len({peer.search(p).group(0) for p in pages.values()}) == 5


def test_no_appendix_leaves_the_audit_trail_out_and_keeps_the_digest(tmp_path: Path) -> None:
    out = tmp_path / "G01.html"
    r = run("report", "huzhou", str(SMALL), "--firm", "G01", "--year", "2023", "--no-appendix", "-o", str(out))
    assert r.exit_code == 0, r.output
    html = out.read_text(encoding="utf-8")
    assert 'id="audit-trail"' not in html and "coke_t = 0" not in html and "data-trace=" not in html
    assert 'id="appendix-left-out"' in html and "ruleengine explain" in html
    full = report.firm_html(report.rate_portfolio("huzhou", SMALL), "G01", 2023, "zh")
    digest = re.compile(r'id="digest">(sha256:[0-9a-f]{64})<')
    assert digest.search(html).group(1) == digest.search(full).group(1)
    # everything before the appendix is the same page
    assert html.split('<section id="appendix"')[0] == full.split('<section id="appendix"')[0]
    assert "--appendix / --no-appendix" in run("report", "--help").output
