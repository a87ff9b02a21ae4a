"""The firm report as a person sees it (issue #15): opened in Debian's headless Chromium (driven by
playwright's Python package with executable_path=/usr/bin/chromium; no browser is downloaded), no
request leaves the page, the key texts and every chart are there and visible, and a screenshot is
saved (tests/artifacts/ is not kept: the test writes into pytest's tmp_path and prints the path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("jinja2", reason="the report extra is not installed: pip install 'ruleengine[report]'")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (.ci/system-packages.sh)")
CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):  # pragma: no cover
    pytest.skip("Debian's chromium is not installed (.ci/system-packages.sh)", allow_module_level=True)

from ruleengine import report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "golden" / "portfolios" / "small.csv"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def open_in_chromium(html_file: Path, profile: Path, shot: Path) -> dict:
    """Open the page, record every request, and gather what a reader sees."""
    with playwright.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=ARGS, headless=True, viewport={"width": 1000, "height": 1400}
        )
        try:
            page = ctx.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html_file.as_uri(), wait_until="load")
            page.wait_for_timeout(200)
            charts = {}
            for fig in page.locator("figure[data-chart]").all():
                name = fig.get_attribute("data-chart")
                svg = fig.locator("svg.chart")
                box = svg.bounding_box() if svg.count() else None
                charts[name] = {
                    "svg": svg.count(),
                    "visible": svg.is_visible() if svg.count() else False,
                    "box": box,
                    "text": fig.inner_text(),
                }
            out = {
                "requests": requests,
                "title": page.title(),
                "body": page.locator("body").inner_text(),
                "charts": charts,
                "badge_visible": page.locator("#rating .badge").is_visible(),
                "qr_visible": page.locator("svg.qr").is_visible(),
                "trail_open": page.locator("#audit-trail").get_attribute("open"),
                "js_errors": [],
            }
            # the audit trail opens on a click, without JavaScript in the page
            page.locator("#audit-trail > summary").click()
            out["trail_after_click"] = page.locator("#audit-trail table.trail").is_visible()
            page.screenshot(path=str(shot), full_page=True)
            return out
        finally:
            ctx.close()


@pytest.mark.parametrize(
    "book,firm,lang,texts",
    [
        (
            "huzhou",
            "G01",
            "zh",
            ["企业碳评价报告", "Cement One", "3011 水泥制造", "三级", "碳效等级", "上年评价", "审计轨迹摘要"],
        ),
        ("shenzhen", "G11", "en", ["Carbon rating report", "Carbon account grade", "Indicator scores", "Provenance"]),
    ],
)
def test_report_in_headless_chromium(tmp_path: Path, book: str, firm: str, lang: str, texts: list[str]) -> None:
    rated = report.rate_portfolio(book, SMALL)
    page = tmp_path / f"{book}_{firm}.html"
    report.write_firm(rated, firm, 2023, page, lang)
    shot = tmp_path / f"{book}_{firm}.png"
    seen = open_in_chromium(page, tmp_path / "profile", shot)
    # nothing is fetched: the page itself is the only request
    assert seen["requests"] == [page.as_uri()]
    for t in texts:
        assert t in seen["body"], t
    expected = {"energy", "sources", "years", "peers", "indicators"}
    assert set(seen["charts"]) == expected
    drawn = {k for k, c in seen["charts"].items() if c["svg"]}
    assert drawn == (expected if book == "shenzhen" else expected - {"indicators"})
    for name in drawn:
        c = seen["charts"][name]
        assert c["visible"], name
        assert c["box"]["width"] > 300 and c["box"]["height"] > 80, (name, c["box"])
    assert seen["badge_visible"] and seen["qr_visible"]
    assert seen["trail_open"] is None and seen["trail_after_click"]
    assert shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
