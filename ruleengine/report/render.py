"""Templates (Jinja2, package data) → one self-contained HTML file; WeasyPrint → PDF."""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Any

from .model import ReportError

TEMPLATES = Path(__file__).parent / "templates"


@functools.lru_cache(maxsize=1)
def _env() -> Any:
    try:
        import jinja2
    except ImportError:  # pragma: no cover - the extra is missing
        raise ReportError("reports need the 'report' extra: pip install 'ruleengine[report]'") from None
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


@functools.lru_cache(maxsize=1)
def _css() -> str:
    return (TEMPLATES / "report.css").read_text(encoding="utf-8")


def html(template: str, ctx: dict[str, Any], pdf: bool = False) -> str:
    """The page; ``pdf=True`` lays the audit trail out as preformatted lines (the same values: the
    PDF engine sets them in a third of the time a table takes)."""
    text = _env().get_template(template).render(css=_css(), pdf=pdf, **ctx)
    return re.sub(r"\n\s*\n+", "\n", text)


def pdf(html_text: str, date: str) -> bytes:
    """HTML → PDF bytes; the dates in the PDF are ``date`` (from the data or an option), never now.

    One WeasyPrint font configuration serves every PDF of the process (fontconfig is set up once,
    not per document); the PDF's identifier is derived from the page, so it stays byte-identical.
    """
    weasyprint = _weasyprint()
    doc = weasyprint.HTML(string=_for_pdf(html_text), base_url=None).render(font_config=_font_config())
    doc.metadata.created = f"{date}T00:00:00Z"
    doc.metadata.modified = f"{date}T00:00:00Z"
    ident = hashlib.sha256(html_text.encode("utf-8")).hexdigest()[:32].encode("ascii")
    return bytes(doc.write_pdf(pdf_identifier=ident, uncompressed_pdf=False))


def _weasyprint() -> Any:
    try:
        import weasyprint  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover
        raise ReportError("PDF reports need the 'report' extra: pip install 'ruleengine[report]'") from None
    import logging

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    return weasyprint


@functools.lru_cache(maxsize=1)
def _font_config() -> Any:
    """The process's WeasyPrint font configuration (the pages have no @font-face: system fonts only)."""
    from weasyprint.text.fonts import FontConfiguration  # type: ignore[import-untyped]

    return FontConfiguration()


_SVG = re.compile(r'<svg role="img" aria-label="([^"]*)" class="chart".*?</svg>', re.S)


def _for_pdf(text: str) -> str:
    """The same page for the PDF engine: charts as SVG images (drawn by its SVG renderer, not styled
    element by element) and the body marked ``pdf`` (block layout instead of grid/flex)."""
    import base64

    def img(m: re.Match[str]) -> str:
        svg = (
            m.group(0).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
            if "xmlns=" not in m.group(0)
            else m.group(0)
        )
        data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
        return f'<img class="chart" alt="{m.group(1)}" src="data:image/svg+xml;base64,{data}">'

    text = _SVG.sub(img, text)
    # paper cannot be clicked open: the data tables and the audit trail are printed in full
    text = text.replace("<details open", "<details").replace("<details", "<details open")
    return text.replace("<body>", '<body class="pdf">', 1)


def write(text: str, out: str | Path, date: str) -> None:
    out = Path(out)
    try:
        if out.suffix.lower() == ".pdf":
            out.write_bytes(pdf(text, date))
        else:
            out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write {out}: {exc.strerror or exc}") from None
