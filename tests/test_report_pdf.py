"""Firm report as PDF (issue #15): read back with poppler (pdftotext, pdffonts, pdfinfo): the firm,
the rating and the Chinese labels are text in it, the CJK font is embedded, the dates are the report
date, and the same inputs give the same bytes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("weasyprint", reason="the report extra is not installed: pip install 'ruleengine[report]'")
if shutil.which("pdftotext") is None:  # pragma: no cover
    pytest.skip("poppler-utils is not installed (.ci/system-packages.sh)", allow_module_level=True)

from click.testing import CliRunner  # noqa: E402

from ruleengine import report  # noqa: E402
from ruleengine.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "golden" / "portfolios" / "small.csv"


def tool(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout


@pytest.fixture(scope="module")
def pdf_zh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pdf") / "G01.pdf"
    r = CliRunner().invoke(
        main,
        ["report", "huzhou", str(SMALL), "--firm", "G01", "--year", "2023", "-o", str(out)],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    return out


def test_pdf_text_has_the_firm_the_rating_and_chinese_labels(pdf_zh: Path) -> None:
    assert pdf_zh.read_bytes()[:5] == b"%PDF-"
    text = tool("pdftotext", "-layout", str(pdf_zh), "-")
    assert "Cement One" in text and "G01" in text
    for label in ("企业碳评价报告", "碳效等级", "三级", "高碳", "水泥制造", "能源结构", "数据质量", "附录：审计轨迹"):
        assert label in text, label
    assert "133,397.0" in text  # emissions (57,000 t x 1.9002988 + 45,600 MWh x 0.5500, East grid 2023)
    # the data tables and the audit trail are printed (paper cannot be clicked open)
    assert "net_emissions_tco2" in text and "coke_t = 0" in text


def test_pdf_embeds_its_cjk_font(pdf_zh: Path) -> None:
    fonts = tool("pdffonts", str(pdf_zh)).splitlines()[2:]
    cjk = [f for f in fonts if "CJK" in f]
    assert cjk, fonts
    for line in cjk:
        cols = line.split()
        assert cols[-5:-2] == ["yes", "yes", "yes"], line  # embedded, subset, unicode map


def test_pdf_dates_are_the_report_date_and_bytes_repeat(tmp_path: Path) -> None:
    rated = report.rate_portfolio("huzhou", SMALL)
    a = report.firm_pdf(rated, "G12", 2023, "en")
    b = report.firm_pdf(rated, "G12", 2023, "en")
    assert a == b
    path = tmp_path / "G12.pdf"
    path.write_bytes(a)
    info = tool("pdfinfo", str(path))
    assert "CreationDate:    Sun Dec 31 00:00:00 2023 UTC" in info
    assert "ModDate:         Sun Dec 31 00:00:00 2023 UTC" in info
    other = report.firm_pdf(rated, "G12", 2023, "en", date="2024-03-15")
    path.write_bytes(other)
    assert "Fri Mar 15 00:00:00 2024 UTC" in tool("pdfinfo", str(path))
    text = tool("pdftotext", str(tmp_path / "G12.pdf"), "-")
    assert "Carbon rating report" in text and "level 1 (best)" in text


def test_pdf_bytes_do_not_depend_on_what_the_process_made_before(tmp_path: Path) -> None:
    # one font configuration per process and the peer-group drawings kept per rated portfolio:
    # G04's PDF made after three other PDFs equals the one a fresh process makes first thing
    rated = report.rate_portfolio("huzhou", SMALL)
    for firm in ("G01", "G12", "G02"):
        report.firm_pdf(rated, firm, 2023, "zh")
    after = report.firm_pdf(rated, "G04", 2023, "zh")
    fresh = tmp_path / "G04.pdf"
    code = (
        "import sys; from ruleengine import report; "
        f"r = report.rate_portfolio('huzhou', {str(SMALL)!r}); "
        "sys.stdout.buffer.write(report.firm_pdf(r, 'G04', 2023, 'zh'))"
    )
    fresh.write_bytes(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300).stdout)
    assert fresh.read_bytes() == after


def test_pdf_without_appendix_is_shorter_and_says_how_to_get_the_trail(tmp_path: Path) -> None:
    rated = report.rate_portfolio("huzhou", SMALL)
    full, short = tmp_path / "full.pdf", tmp_path / "short.pdf"
    full.write_bytes(report.firm_pdf(rated, "G01", 2023, "en"))
    short.write_bytes(report.firm_pdf(rated, "G01", 2023, "en", appendix=False))

    def pages(p: Path) -> int:
        return int(next(ln.split()[-1] for ln in tool("pdfinfo", str(p)).splitlines() if ln.startswith("Pages:")))

    assert pages(short) < pages(full)
    text = tool("pdftotext", str(short), "-")
    assert "coke_t = 0" not in text and "net_emissions_tco2" not in text
    assert "is left out of this report" in " ".join(text.split())
    assert "Cement One" in text and "133,397.0" in text
