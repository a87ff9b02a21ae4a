"""Rating reports people read: firm, portfolio and change reports, HTML and PDF, Chinese and English.

Install the extra: ``pip install 'ruleengine[report]'`` (Jinja2, matplotlib, WeasyPrint, segno).

Typical use::

    from ruleengine import report
    rated = report.rate_portfolio("huzhou", "firms.csv")       # rate once
    html = report.firm_html(rated, "G01", 2023, lang="zh")     # then any number of reports
    report.write_firm(rated, "G01", None, "G01.pdf", lang="en")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .model import Rated, ReportError, find_firm, firm_context, rate_portfolio, trace_digest

__all__ = [
    "Rated",
    "ReportError",
    "change_html",
    "firm_html",
    "firm_pdf",
    "portfolio_html",
    "rate_portfolio",
    "trace_digest",
    "write_all",
    "write_change",
    "write_firm",
    "write_portfolio",
]

FORMATS = (".html", ".htm", ".pdf")


def _check_out(out: str | Path) -> Path:
    p = Path(out)
    if p.suffix.lower() not in FORMATS:
        raise ReportError(f"{out}: a report is written as .html or .pdf (by extension)")
    return p


def firm_html(rated: Rated, firm_id: str, year: int | None = None, lang: str = "zh", date: str | None = None) -> str:
    """The firm report of one firm-year as one self-contained HTML page."""
    from . import render

    i = find_firm(rated, firm_id, year)
    return render.html("firm.html.j2", firm_context(rated, i, lang, date))


def _date(rated: Rated, i: int, date: str | None) -> str:
    return date or f"{int(rated.results['year'][i])}-12-31"


def firm_pdf(rated: Rated, firm_id: str, year: int | None = None, lang: str = "zh", date: str | None = None) -> bytes:
    from . import render

    i = find_firm(rated, firm_id, year)
    d = _date(rated, i, date)
    return render.pdf(render.html("firm.html.j2", firm_context(rated, i, lang, d)), d)


def write_firm(
    rated: Rated, firm_id: str, year: int | None, out: str | Path, lang: str = "zh", date: str | None = None
) -> Path:
    from . import render

    p = _check_out(out)
    i = find_firm(rated, firm_id, year)
    d = _date(rated, i, date)
    render.write(render.html("firm.html.j2", firm_context(rated, i, lang, d)), p, d)
    return p


def write_all(
    rated: Rated,
    out_dir: str | Path,
    fmt: str = "html",
    lang: str = "zh",
    year: int | None = None,
    date: str | None = None,
    progress: Any = None,
) -> list[Path]:
    """One report per firm (its latest year, or ``year``) into ``out_dir``; ``progress(n_done)`` per file."""
    from . import render

    d = Path(out_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    res = rated.results
    firms = sorted({str(f) for f in res["firm_id"].tolist()})
    written = []
    for k, firm in enumerate(firms):
        rows = rated.rows_of(firm)
        years = [int(res["year"][j]) for j in rows]
        if year is not None and year not in years:
            continue
        i = find_firm(rated, firm, year)
        dd = _date(rated, i, date)
        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in firm) or "firm"
        p = d / f"{name}_{int(res['year'][i])}.{fmt}"
        render.write(render.html("firm.html.j2", firm_context(rated, i, lang, dd)), p, dd)
        written.append(p)
        if progress is not None:
            progress(k + 1)
    return written


def portfolio_html(rated: Rated, year: int | None = None, lang: str = "zh", date: str | None = None) -> str:
    from . import render
    from .portfolio import portfolio_context

    return render.html("portfolio.html.j2", portfolio_context(rated, year, lang, date))


def write_portfolio(
    rated: Rated, out: str | Path, year: int | None = None, lang: str = "zh", date: str | None = None
) -> Path:
    from . import render
    from .portfolio import portfolio_context

    p = _check_out(out)
    ctx = portfolio_context(rated, year, lang, date)
    render.write(render.html("portfolio.html.j2", ctx), p, ctx["provenance"]["date"])
    return p


def change_html(result: dict[str, Any], lang: str = "zh", date: str | None = None) -> str:
    from . import render
    from .change import change_context

    return render.html("change.html.j2", change_context(result, lang, date))


def write_change(result: dict[str, Any], out: str | Path, lang: str = "zh", date: str | None = None) -> Path:
    """The change report of a ``ruleengine.diff.run`` result, as .html or .pdf."""
    from . import render
    from .change import change_context

    p = _check_out(out)
    ctx = change_context(result, lang, date)
    render.write(render.html("change.html.j2", ctx), p, ctx["date"])
    return p
