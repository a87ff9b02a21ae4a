"""Report speed (issue #15): a firm's HTML and PDF after the portfolio is rated, and 1,000 PDFs.

Targets: firm HTML <= 0.3 s, firm PDF <= 2 s (each after the portfolio is rated, the one-off imports
and first chart done); 1,000 PDFs <= 10 min on this machine. The 1,000 are projected from a timed
sample written by ``write_all`` (the code behind ``ruleengine report --all``) with one and with two
processes, because this 2-core machine is shared; the load average is recorded next to each number.

    python benchmarks/bench_report.py [--firms 1000] [--sample 24] [--out benchmarks/REPORT.md]

It generates its portfolio with ``ruleengine.sample`` (same seed, same firms) and writes Markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.1f} / {b:.1f} / {c:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--firms", type=int, default=1000, help="firms in the generated portfolio (2 years each)")
    ap.add_argument("--sample", type=int, default=24, help="PDFs written per projection run")
    ap.add_argument("--book", default="huzhou")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "REPORT.md"))
    args = ap.parse_args()

    from ruleengine import report as rep
    from ruleengine.io import sample
    from ruleengine.report import render

    tmp = Path(tempfile.mkdtemp(prefix="bench_report_"))
    data = tmp / "portfolio.parquet"
    sample.write(sample.generate(args.firms, [2022, 2023], seed=7), str(data))
    rows: list[tuple[str, str, str, str]] = []

    t = time.perf_counter()
    rated = rep.rate_portfolio(args.book, data)
    t_rate = time.perf_counter() - t
    rows.append(
        (
            f"rate {len(rated.results):,} firm-years + what-it-takes columns (once)",
            f"{t_rate:.2f} s",
            "—",
            _load(),
        )
    )
    res = rated.results
    firms = sorted({str(f) for f in res["firm_id"].tolist()})
    step = max(1, len(firms) // 40)
    pick = firms[::step][:40]

    # warm-up: imports (matplotlib, jinja2, weasyprint), font cache, first chart
    t = time.perf_counter()
    first = rep.firm_html(rated, pick[0], None, "zh")
    render.pdf(first, "2023-12-31")
    t_first = time.perf_counter() - t
    rows.append(("first report of the process (imports, fonts): HTML + PDF", f"{t_first:.2f} s", "—", _load()))

    html_times, pdf_times, html_cpu, pdf_cpu, short_times, short_cpu = [], [], [], [], [], []
    pages = {}
    for f in pick[:20]:
        t, c = time.perf_counter(), time.process_time()
        pages[f] = rep.firm_html(rated, f, None, "zh")
        html_times.append(time.perf_counter() - t)
        html_cpu.append(time.process_time() - c)
    load_html = _load()
    for f in pick[:8]:
        t, c = time.perf_counter(), time.process_time()
        rep.firm_pdf(rated, f, None, "zh")
        pdf_times.append(time.perf_counter() - t)
        pdf_cpu.append(time.process_time() - c)
    load_pdf = _load()
    for f in pick[:8]:
        t, c = time.perf_counter(), time.process_time()
        rep.firm_pdf(rated, f, None, "zh", appendix=False)
        short_times.append(time.perf_counter() - t)
        short_cpu.append(time.process_time() - c)
    load_short = _load()

    def q(xs: list[float], p: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]

    rows.append(
        (
            f"firm HTML ({len(html_times)} firms): median (p90)",
            f"{statistics.median(html_times):.3f} s ({q(html_times, 0.9):.3f} s); "
            f"CPU {statistics.median(html_cpu):.3f} s",
            "≤ 0.3 s",
            load_html,
        )
    )
    rows.append(
        (
            f"firm PDF ({len(pdf_times)} firms), HTML included: median (p90)",
            f"{statistics.median(pdf_times):.2f} s ({q(pdf_times, 0.9):.2f} s); CPU {statistics.median(pdf_cpu):.2f} s",
            "≤ 2 s",
            load_pdf,
        )
    )
    rows.append(
        (
            f"firm PDF without the audit trail appendix (`--no-appendix`, {len(short_times)} firms): median (p90)",
            f"{statistics.median(short_times):.2f} s ({q(short_times, 0.9):.2f} s); "
            f"CPU {statistics.median(short_cpu):.2f} s",
            "≤ 2 s",
            load_short,
        )
    )
    sizes = [len(p.encode()) for p in pages.values()]
    for jobs, appendix in ((1, True), (2, True), (2, False)):
        out = tmp / f"pdf{jobs}{appendix}"
        import resource

        t, c = time.perf_counter(), time.process_time()
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        written = rep.write_all(rated, out, "pdf", "zh", jobs=jobs, firms=firms[: args.sample], appendix=appendix)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = time.process_time() - c + (after.ru_utime + after.ru_stime) - (kids.ru_utime + kids.ru_stime)
        per = wall / len(written)
        rows.append(
            (
                f"{len(written)} PDFs with write_all, {jobs} process{'es' if jobs > 1 else ''}"
                f"{'' if appendix else ', --no-appendix'} → 1,000 projected",
                f"{wall:.1f} s ({per:.2f} s/PDF) → {per * 1000 / 60:.1f} min; CPU {cpu / len(written):.2f} s/PDF "
                f"→ {cpu / len(written) * 1000 / 60 / jobs:.1f} min on {jobs} idle core{'s' if jobs > 1 else ''}",
                "≤ 10 min",
                _load(),
            )
        )
    lines = [
        "# Report benchmarks (issue #15)",
        "",
        "Made by `python benchmarks/bench_report.py` "
        f"(portfolio: `ruleengine.sample` {args.firms:,} firms × 2 years, seed 7, rulebook {args.book}, zh).",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other sessions; Python "
        f"{platform.python_version()}. Load average (1/5/15 min) is shown next to each number: this machine "
        "was shared while it ran, so the times are upper bounds of an idle machine's.",
        "",
        "CPU is the process's CPU time (children included): what an idle core would take, roughly, for the same work.",
        "",
        "| what | measured (wall; CPU) | target | load average |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += [
        "",
        f"HTML page size: median {statistics.median(sizes) / 1024:.0f} KiB (inline CSS, 4-5 SVG charts, QR code, "
        "audit trail).",
        "",
        "How the times split (cProfile and CPU timers on this machine): a firm's HTML is still mostly matplotlib "
        "drawing the four or five charts (measuring each label's text with FreeType is a third of that); the "
        "peer-group histogram is drawn once per group and rated portfolio, only the firm's marker moves. A PDF "
        "adds WeasyPrint's layout of 5-6 A4 pages (about 45%), painting (its SVG renderer drawing the charts, "
        "about 20%), CJK font subsetting (about 20%) and writing the file; `--no-appendix` drops the 1-2 pages "
        "of the audit trail.",
        "",
        "The 1,000-PDF figure is a projection from the sample above (the sample × 1000 / its size), not a run of "
        "1,000; `ruleengine report BOOK DATA --all --format pdf --jobs 2 -o DIR/` is the command it measures.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
