"""Data-quality issues and the acquisition report (text, JSON, Markdown).

Every check of the acquisition stage produces :class:`Issue` records: what was found, where (file
and rows), about which meter or invoice and firm, and what was done about it. Issues are plain
data; the renderers at the bottom turn a :class:`Report` into text, JSON or Markdown.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import RuleEngineError

SEVERITIES = ("error", "warning", "info")
MAX_ROWS = 10  # row numbers listed per issue; the count says how many there were


class AcquireError(RuleEngineError):
    """An input of the acquisition stage that cannot be used at all (register, mapping, options)."""


@dataclass(frozen=True)
class Issue:
    """One finding. ``rows`` are 1-based data rows of ``file`` (the first MAX_ROWS); ``count`` all."""

    severity: str
    code: str
    message: str
    action: str = ""
    file: str = ""
    rows: tuple[int, ...] = ()
    count: int = 1
    subject: str = ""  # meter id or invoice number
    firm_id: str = ""
    column: str = ""

    def where(self) -> str:
        if not self.file:
            return ""
        if not self.rows:
            return self.file
        more = " ..." if len(self.rows) == MAX_ROWS and self.count > MAX_ROWS else ""
        label = "row" if len(self.rows) == 1 else "rows"
        return f"{self.file}: {label} {', '.join(str(r) for r in self.rows)}{more}"

    def format(self) -> str:
        where = self.where()
        who = f"{self.subject}: " if self.subject else ""
        act = f"; {self.action}" if self.action else ""
        return f"{where + ': ' if where else ''}{self.severity}[{self.code}] {who}{self.message}{act}"

    def sort_key(self) -> tuple[Any, ...]:
        return (
            SEVERITIES.index(self.severity),
            self.firm_id,
            self.subject,
            self.code,
            self.file,
            self.rows,
            self.message,
        )


def row_list(rows: Any) -> tuple[int, ...]:
    """The first MAX_ROWS distinct row numbers of an array or list (in order), as plain ints."""
    out: dict[int, None] = {}
    for r in rows[: MAX_ROWS * 200]:  # a wide row holds up to 96 readings
        out[int(r)] = None
        if len(out) == MAX_ROWS:
            break
    return tuple(out)


@dataclass
class Report:
    """What an acquisition found and did: per-issue list, per-firm columns, totals."""

    kind: str
    year: int
    sources: list[str]
    issues: list[Issue] = field(default_factory=list)
    firms: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)

    def sorted_issues(self) -> list[Issue]:
        return sorted(self.issues, key=Issue.sort_key)

    def counts(self) -> dict[str, int]:
        c = Counter(i.severity for i in self.issues)
        return {s: c.get(s, 0) for s in SEVERITIES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "year": self.year,
            "sources": self.sources,
            "counts": self.counts(),
            "totals": self.totals,
            "firms": self.firms,
            "issues": [
                {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(i).items()}
                for i in self.sorted_issues()
            ],
        }

    def render(self, fmt: str = "text") -> str:
        if fmt == "json":
            return json.dumps(self.to_dict(), ensure_ascii=False, indent=2, sort_keys=False) + "\n"
        if fmt == "markdown":
            return _markdown(self)
        if fmt == "text":
            return _text(self)
        raise AcquireError(f"unknown report format '{fmt}' (text, json, markdown)")


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "empty"
        return f"{v:.6g}" if abs(v) < 1e6 else f"{v:,.1f}"
    return str(v)


def _firm_lines(report: Report) -> list[tuple[str, str, str, str, str, str]]:
    rows = []
    for f in report.firms:
        for col, info in f["columns"].items():
            rows.append(
                (
                    f["firm_id"],
                    col,
                    _fmt_value(info.get("value")),
                    "" if info.get("coverage") is None else f"{100 * info['coverage']:.1f}%",
                    str(info.get("count", "")),
                    info.get("policy", "") + (f" ({info['note']})" if info.get("note") else ""),
                )
            )
    return rows


def _text(report: Report) -> str:
    c = report.counts()
    out = [
        f"acquire {report.kind}, year {report.year}: {len(report.sources)} source(s), {len(report.firms)} firm(s); "
        f"{c['error']} error(s), {c['warning']} warning(s), {c['info']} note(s)"
    ]
    for k, v in report.totals.items():
        out.append(f"  {k}: {_fmt_value(v)}")
    out.append("")
    out.append("firm-years:")
    for firm, col, value, cov, count, policy in _firm_lines(report):
        cov_s = f", coverage {cov}" if cov else ""
        out.append(f"  {firm} {col} = {value}{cov_s}, from {count} record(s); {policy}")
    if report.issues:
        out.append("")
        out.append("issues:")
        out.extend("  " + i.format() for i in report.sorted_issues())
    return "\n".join(out) + "\n"


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _markdown(report: Report) -> str:
    c = report.counts()
    out = [
        f"# Data acquisition: {report.kind}, {report.year}",
        "",
        f"{len(report.sources)} source(s), {len(report.firms)} firm(s): **{c['error']} error(s)**, "
        f"{c['warning']} warning(s), {c['info']} note(s).",
        "",
    ]
    if report.totals:
        out += ["| total | value |", "|---|---|"]
        out += [f"| {k} | {_fmt_value(v)} |" for k, v in report.totals.items()]
        out.append("")
    out += ["## Firm-years", "", "| firm | column | value | coverage | records | policy |", "|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in _firm_lines(report)]
    if report.issues:
        out += [
            "",
            "## Issues",
            "",
            "| severity | check | subject | where | found | done |",
            "|---|---|---|---|---|---|",
        ]
        for i in report.sorted_issues():
            out.append(
                "| "
                + " | ".join(_md_cell(x) for x in (i.severity, i.code, i.subject, i.where(), i.message, i.action))
                + " |"
            )
    return "\n".join(out) + "\n"
