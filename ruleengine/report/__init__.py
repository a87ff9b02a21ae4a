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

from .model import Rated, ReportError, find_firm, firm_context, rate_portfolio, rated_from, trace_digest

__all__ = [
    "Rated",
    "ReportError",
    "change_html",
    "firm_html",
    "firm_pdf",
    "portfolio_html",
    "rate_portfolio",
    "rated_from",
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


def firm_html(
    rated: Rated,
    firm_id: str,
    year: int | None = None,
    lang: str = "zh",
    date: str | None = None,
    appendix: bool = True,
) -> str:
    """The firm report of one firm-year as one self-contained HTML page (``appendix=False``: without
    the audit trail appendix; a line says how to make it)."""
    from . import render

    i = find_firm(rated, firm_id, year)
    return render.html("firm.html.j2", firm_context(rated, i, lang, date, appendix))


def _date(rated: Rated, i: int, date: str | None) -> str:
    return date or f"{int(rated.results['year'][i])}-12-31"


def firm_pdf(
    rated: Rated,
    firm_id: str,
    year: int | None = None,
    lang: str = "zh",
    date: str | None = None,
    appendix: bool = True,
) -> bytes:
    from . import render

    i = find_firm(rated, firm_id, year)
    d = _date(rated, i, date)
    return render.pdf(render.html("firm.html.j2", firm_context(rated, i, lang, d, appendix), pdf=True), d)


def write_firm(
    rated: Rated,
    firm_id: str,
    year: int | None,
    out: str | Path,
    lang: str = "zh",
    date: str | None = None,
    appendix: bool = True,
) -> Path:
    from . import render

    p = _check_out(out)
    i = find_firm(rated, firm_id, year)
    d = _date(rated, i, date)
    pdf = p.suffix.lower() == ".pdf"
    render.write(render.html("firm.html.j2", firm_context(rated, i, lang, d, appendix), pdf=pdf), p, d)
    return p


def _one(
    rated: Rated, firm: str, year: int | None, out_dir: Path, fmt: str, lang: str, date: str | None, appendix: bool
) -> Path:
    from . import render

    i = find_firm(rated, firm, year)
    dd = _date(rated, i, date)
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in firm) or "firm"
    p = out_dir / f"{name}_{int(rated.results['year'][i])}.{fmt}"
    render.write(render.html("firm.html.j2", firm_context(rated, i, lang, dd, appendix), pdf=fmt == "pdf"), p, dd)
    return p


_SHARED: dict[str, Any] = {}  # the rated portfolio, inherited by forked workers (never pickled)


def _chunk(
    firms: list[str], year: int | None, out_dir: str, fmt: str, lang: str, date: str | None, appendix: bool
) -> list[str]:
    rated = _SHARED["rated"]
    return [str(_one(rated, f, year, Path(out_dir), fmt, lang, date, appendix)) for f in firms]


def write_all(
    rated: Rated,
    out_dir: str | Path,
    fmt: str = "html",
    lang: str = "zh",
    year: int | None = None,
    date: str | None = None,
    progress: Any = None,
    jobs: int = 1,
    firms: list[str] | None = None,
    appendix: bool = True,
) -> list[Path]:
    """One report per firm (its latest year, or ``year``) into ``out_dir``; ``progress(n_done)`` as they go.

    ``firms``: only these firm ids (default: every firm in the data).
    ``jobs`` > 1 writes them in that many forked processes (POSIX), each with the rated portfolio
    it inherited; the files are the same as with one process.
    ``appendix=False`` leaves the audit trail appendix out of every report (shorter PDFs, faster).
    """
    d = Path(out_dir)
    if fmt not in ("html", "pdf"):
        raise ReportError(f"unknown report format '{fmt}': use html or pdf")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    res = rated.results
    every = sorted({str(f) for f in res["firm_id"].tolist()})
    if firms is not None:
        unknown = sorted(set(firms) - set(every))
        if unknown:
            raise ReportError(f"no firm '{unknown[0]}' in {rated.data_name}")
        every = sorted(set(firms))
    firms = every
    if year is not None:
        firms = [f for f in firms if any(int(res["year"][j]) == year for j in rated.rows_of(f))]
    written: list[Path] = []
    import multiprocessing as mp

    if jobs <= 1 or len(firms) < 2 or "fork" not in mp.get_all_start_methods():
        for k, firm in enumerate(firms):
            written.append(_one(rated, firm, year, d, fmt, lang, date, appendix))
            if progress is not None:
                progress(k + 1)
        return written
    from concurrent.futures import ProcessPoolExecutor, as_completed

    rated.rows_of(firms[0])  # build the firm index once, before the fork
    _SHARED["rated"] = rated
    size = max(1, min(20, len(firms) // (jobs * 4) or 1))
    chunks = [firms[k : k + size] for k in range(0, len(firms), size)]
    done = 0
    try:
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as pool:
            futures = {pool.submit(_chunk, c, year, str(d), fmt, lang, date, appendix): c for c in chunks}
            for fut in as_completed(futures):
                written.extend(Path(p) for p in fut.result())
                done += len(futures[fut])
                if progress is not None:
                    progress(done)
    finally:
        _SHARED.clear()
    return sorted(written)


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
    """The change report of a ``ruleengine.analysis.diff.run`` result, as .html or .pdf."""
    from . import render
    from .change import change_context

    p = _check_out(out)
    ctx = change_context(result, lang, date)
    render.write(render.html("change.html.j2", ctx), p, ctx["date"])
    return p
