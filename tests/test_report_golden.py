"""Golden HTML of the firm reports of the golden portfolio (issue #15): golden/reports/.

Every firm of golden/portfolios/small.csv, its latest year, Huzhou in Chinese and Shenzhen in
English. A change to a report shows here as a diff of the page. After an intended change,
regenerate with ``RULEENGINE_UPDATE_GOLDEN=1 pytest tests/test_report_golden.py`` and review the
diff. The charts are matplotlib's SVG: a different matplotlib version may draw them differently
(the pinned range is in pyproject's ``report`` extra).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

pytest.importorskip("jinja2", reason="the report extra is not installed: pip install 'ruleengine[report]'")
pytest.importorskip("matplotlib")

from ruleengine import report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "golden" / "portfolios" / "small.csv"
GOLDEN = ROOT / "golden" / "reports"
FIRMS = [f"G{k:02d}" for k in range(1, 14)]
UPDATE = os.environ.get("RULEENGINE_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("book,lang", [("huzhou", "zh"), ("shenzhen", "en")])
def test_golden_firm_reports(book: str, lang: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # paths relative to the checkout: the trace (and so its digest and QR code) names the data file
    # and the rulebook as given, so the pages do not depend on where the repository sits
    monkeypatch.chdir(ROOT)
    rated = report.rate_portfolio(book, "golden/portfolios/small.csv")
    # the data file's name is part of the page (provenance): the golden portfolio is always small.csv
    problems = []
    for firm in FIRMS:
        html = report.firm_html(rated, firm, None, lang)
        path = GOLDEN / book / f"{firm}.{lang}.html"
        if UPDATE:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(html, encoding="utf-8")
            continue
        assert path.exists(), f"{path} is missing: run with RULEENGINE_UPDATE_GOLDEN=1"
        want = path.read_text(encoding="utf-8")
        if html != want:
            diff = difflib.unified_diff(want.splitlines(), html.splitlines(), str(path), "now", n=1, lineterm="")
            problems.append("\n".join(list(diff)[:30]))
    assert not problems, "\n\n".join(problems)
    assert len(list((GOLDEN / book).glob(f"*.{lang}.html"))) == len(FIRMS)
