"""Charts as inline SVG, drawn by matplotlib's SVG backend (no hand-written geometry).

Deterministic: ``svg.hashsalt`` is fixed per chart (so clip-path ids are stable and distinct
between the charts of one page), the date metadata is dropped, and text stays text
(``svg.fonttype: none``) so that the browser and the PDF engine set it with the page's fonts
(CJK included) and ``pdftotext`` can read chart labels.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

_READY = False
FONTS = ["Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Zen Hei", "DejaVu Sans"]


def _mpl() -> Any:
    """matplotlib, quiet about missing fallback fonts. Figures are made with ``Figure()`` directly,
    not pyplot: no figure manager to register with and close (a few ms a chart)."""
    global _READY
    import matplotlib

    if not _READY:
        import logging

        logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
        _READY = True
    return matplotlib


_STYLE: dict[str, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": FONTS,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#666666",
    "axes.titlesize": 10,
    "legend.frameon": False,
    "svg.id": None,
}


def _svg(fig: Any, salt: str, title: str) -> str:
    matplotlib = _mpl()
    buf = io.StringIO()
    matplotlib.rcParams["svg.hashsalt"] = f"ruleengine-{salt}"  # inside the chart's rc_context: restored after
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "ruleengine (matplotlib)"})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    # an accessible name for screen readers; the data table next to the chart carries the numbers
    text = text.replace("<svg ", f'<svg role="img" aria-label="{_esc(title)}" class="chart" ', 1)
    # sizes in pt become responsive: the viewBox keeps the drawing, CSS sets the width
    text = re.sub(r'width="[0-9.]+pt" height="[0-9.]+pt"', "", text, count=1)
    # ids unique per chart on one page (matplotlib names every figure's patches the same way)
    text = re.sub(r'id="([A-Za-z0-9_]+)"', rf'id="{salt}-\1"', text)
    text = re.sub(r"url\(#([A-Za-z0-9_]+)\)", rf"url(#{salt}-\1)", text)
    text = re.sub(r'xlink:href="#([A-Za-z0-9_]+)"', rf'xlink:href="#{salt}-\1"', text)
    return text


def _width(labels: Sequence[str]) -> float:
    """Display width of the longest label in em (a CJK character counts twice)."""
    return max((sum(2 if ord(ch) > 0x2E80 else 1 for ch in lab) for lab in labels), default=4) * 0.5


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def _figure(w: float, h: float) -> tuple[Any, Any]:
    """A figure and its axes, made inside the chart's style context (``_ctx``)."""
    _mpl()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    return fig, fig.add_subplot()


def _ctx() -> Any:
    """One style context per chart (each context copies matplotlib's settings: one is enough)."""
    return _mpl().rc_context(_STYLE)


def donut(salt: str, title: str, labels: Sequence[str], values: Sequence[float], colours: Sequence[str]) -> str:
    """Share of each carrier (values > 0 only) as a donut with a legend."""
    with _ctx(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig, ax = _figure(6.0, 2.3)
        total = float(sum(values))
        wedges, _ = ax.pie(
            values,
            colors=colours,
            startangle=90,
            counterclock=False,
            wedgeprops={"width": 0.38, "edgecolor": "white", "linewidth": 1},
        )
        ax.set_aspect("equal")
        legend = [f"{lab}  {100.0 * v / total:.1f}%" for lab, v in zip(labels, values, strict=True)]
        ax.legend(wedges, legend, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.subplots_adjust(left=0.02, right=0.45, top=0.96, bottom=0.04)
        return _svg(fig, salt, title)


def stacked_bars(
    salt: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str]],
    unit: str,
) -> str:
    """One horizontal bar per category, stacked by series (label, values, colour)."""
    with _ctx(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig, ax = _figure(6.0, 1.4 + 0.3 * max(1, len(categories)) + 0.2 * (len(series) // 3))
        base = [0.0] * len(categories)
        for label, vals, colour in series:
            ax.barh(list(categories), list(vals), left=base, color=colour, label=label, height=0.6)
            base = [a + b for a, b in zip(base, vals, strict=True)]
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        ax.xaxis.set_major_formatter(_thousands())
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 - 0.1 / max(1, len(categories))), ncol=3, fontsize=8)
        h = fig.get_figheight()
        left = min(0.55, (_width(categories) * 0.125 + 0.2) / 6.0)  # 9 pt labels: 1 em = 0.125 in
        fig.subplots_adjust(left=left, right=0.97, top=1 - 0.1 / h, bottom=(0.75 + 0.2 * (len(series) // 3)) / h)
        return _svg(fig, salt, title)


def bars(
    salt: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    colours: Sequence[str],
    unit: str,
    xmax: float | None = None,
    digits: int = 1,
) -> str:
    """Horizontal bars, one per label (e.g. indicator scores out of 100)."""
    with _ctx(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig, ax = _figure(6.0, 0.6 + 0.42 * max(1, len(labels)))
        ax.barh(list(labels), list(values), color=list(colours), height=0.6)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:,.{digits}f}", va="center", fontsize=8)
        ax.invert_yaxis()
        if xmax is not None:
            ax.set_xlim(0, xmax)
        ax.set_xlabel(unit)
        h = fig.get_figheight()
        left = min(0.55, (_width(labels) * 0.125 + 0.2) / 6.0)
        fig.subplots_adjust(left=left, right=0.93, top=1 - 0.1 / h, bottom=0.45 / h)
        return _svg(fig, salt, title)


def years_chart(
    salt: str,
    title: str,
    years: Sequence[int],
    emissions: Sequence[float],
    intensity: Sequence[float],
    labels: tuple[str, str],
    colour: str,
) -> str:
    """Emissions as bars and intensity as a line on a second axis, by year."""
    with _ctx(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig, ax = _figure(6.0, 2.6)
        xs = [str(y) for y in years]
        ax.bar(xs, [0.0 if math.isnan(e) else e for e in emissions], color="#9bb7d4", label=labels[0], width=0.5)
        ax.set_ylabel(labels[0])
        ax.yaxis.set_major_formatter(_thousands())
        ax.set_ylim(0, 1.15 * max([e for e in emissions if not math.isnan(e)] + [1.0]))
        ax2 = ax.twinx()
        ax2.plot(xs, list(intensity), color=colour, marker="o", label=labels[1])
        ax2.set_ylabel(labels[1])
        ax2.spines["right"].set_visible(True)
        finite = [x for x in intensity if not math.isnan(x)]
        ax2.set_ylim(0, 1.15 * max(finite) if finite and max(finite) > 0 else 1.0)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=8)
        fig.subplots_adjust(left=0.13, right=0.89, top=0.95, bottom=0.25)
        return _svg(fig, salt, title)


def peer_histogram(
    salt: str,
    title: str,
    values: Sequence[float],
    firm_value: float,
    edges: Sequence[tuple[float, str]],
    band_colours: Sequence[tuple[float, float, str]],
    labels: tuple[str, str, str],
    cache: dict[Any, Any] | None = None,
) -> str:
    """The peer group's distribution of the rated value, the band edges and this firm.

    ``cache`` (one dict per rated portfolio) keeps each peer group's drawing: the firms of a group
    share everything but their marker, so the group is drawn once and only the marker moves. The SVG
    is the same with or without the cache (the axis range is the group's, which holds the firm).
    """
    finite = [float(v) for v in values if not math.isnan(v)]
    key = (salt, title, tuple(finite), tuple(edges), tuple(band_colours), labels)
    inside = bool(finite) and min(finite) <= firm_value <= max(finite)
    with _ctx(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        drawn = cache.get(key) if cache is not None and inside else None
        if drawn is None:
            drawn = _peer_figure(finite, firm_value, edges, band_colours, labels)
            if cache is not None and inside:
                while len(cache) >= PEER_CACHE:  # bounded: the oldest group goes first
                    del cache[next(iter(cache))]
                cache[key] = drawn
        fig, marker = drawn
        marker.set_xdata([firm_value, firm_value])
        return _svg(fig, salt, title)


PEER_CACHE = 64  # peer-group drawings kept per rated portfolio (bounded: many small groups, bounded memory)


def _peer_figure(
    finite: list[float],
    firm_value: float,
    edges: Sequence[tuple[float, str]],
    band_colours: Sequence[tuple[float, float, str]],
    labels: tuple[str, str, str],
) -> tuple[Any, Any]:
    """The group's figure and the firm's marker line (moved by the caller)."""
    fig, ax = _figure(6.0, 2.6)
    lo = min(finite + [firm_value] + [e for e, _ in edges])
    hi = max(finite + [firm_value] + [e for e, _ in edges])
    pad = (hi - lo) * 0.08 or 1.0
    lo, hi = lo - pad, hi + pad
    for a, b, colour in band_colours:  # shaded bands
        ax.axvspan(max(a, lo), min(b, hi), color=colour, alpha=0.18, linewidth=0)
    ax.hist(finite, bins=min(20, max(5, len(finite))), range=(lo, hi), color="#6b7f99", label=labels[0])
    for e, lab in edges:
        ax.axvline(e, color="#444444", linestyle="--", linewidth=0.8)
        ax.text(e, 1.0, lab, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7)
    marker = ax.axvline(firm_value, color="#d7301f", linewidth=2.2, label=labels[1])
    ax.set_xlim(lo, hi)
    ax.set_xlabel(labels[2])
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8)
    fig.subplots_adjust(left=0.08, right=0.97, top=0.9, bottom=0.3)
    return fig, marker


def heatmap(
    salt: str,
    title: str,
    rows: Sequence[str],
    cols: Sequence[str],
    counts: Sequence[Sequence[int]],
    labels: tuple[str, str],
) -> str:
    """A migration matrix: rows old level, columns new level, cell = firm count."""
    with _ctx(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig, ax = _figure(0.9 + 0.55 * len(cols), 0.9 + 0.45 * len(rows))
        ax.imshow(counts, cmap="Blues", aspect="auto")
        ax.set_xticks(range(len(cols)), list(cols), rotation=35, ha="right")
        ax.set_yticks(range(len(rows)), list(rows))
        peak = max((max(r) for r in counts if r), default=0)
        for i, r in enumerate(counts):
            for j, c in enumerate(r):
                if c:
                    ax.text(j, i, str(c), ha="center", va="center", color="white" if c > peak / 2 else "black")
        ax.set_xlabel(labels[1])
        ax.set_ylabel(labels[0])
        ax.spines[:].set_visible(False)
        fig.tight_layout()
        return _svg(fig, salt, title)


def qr_svg(payload: str) -> str:
    """A QR code (segno) as inline SVG."""
    import segno

    buf = io.BytesIO()
    # a fixed mask: choosing the best of eight costs most of the encoding time, and any mask reads
    segno.make(payload, error="m", micro=False, mask=4).save(
        buf, kind="svg", scale=3, border=2, xmldecl=False, svgns=True, svgclass="qr", lineclass=None
    )
    return buf.getvalue().decode("utf-8")


def _thousands() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: f"{x:,.0f}")
