"""The results table: one row per firm-year, standard columns first, written as CSV/JSON/Parquet.

Output is deterministic: columns in a fixed order (standard columns, ratings, incentives, then the
rulebook's variables and benchmarks in declaration order), rows in input order, floats written in
shortest round-trip form, missing values as empty cells / JSON null.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .compiler import STANDARD_VARIABLES, Plan
from .data import Batch, Category, DataIssue
from .evaluator import BenchmarkTable, Evaluation

STANDARD_COLUMNS = ("firm_id", "year", "rulebook", "rulebook_version", "rulebook_hash", "engine_version",
                    "status", "reasons", "fallbacks", *STANDARD_VARIABLES, "rating")


@dataclass
class Results:
    """Columns of equal length (float64 arrays, or object arrays of str) plus what was met on the way."""

    columns: dict[str, np.ndarray]
    plan: Plan
    issues: list[DataIssue] = field(default_factory=list)
    tables: dict[str, BenchmarkTable] = field(default_factory=dict)
    batch: Batch | None = None
    evaluation: Evaluation | None = None

    def __len__(self) -> int:
        return len(self.columns["firm_id"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def row(self, i: int) -> dict[str, Any]:
        return {k: _py(v[i]) for k, v in self.columns.items()}

    def rows(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self.row(i)

    def to_records(self) -> list[dict[str, Any]]:
        return list(self.rows())

    def find(self, firm_id: str, year: int | None = None) -> list[int]:
        ids = self.columns["firm_id"]
        hits = np.flatnonzero(ids == str(firm_id))
        if year is not None:
            hits = hits[self.columns["year"][hits] == year]
        return hits.tolist()

    def distribution(self, column: str = "rating") -> list[tuple[str, int]]:
        """Counts per level of a rating, best level first, then 'unrated'."""
        counts = Counter(self.columns[column].tolist())
        name = self.plan.primary if column == "rating" else column
        order = self.plan.ratings[name].best_first() if name in self.plan.ratings else sorted(counts)
        out = [(lv, counts.get(lv, 0)) for lv in order]
        if counts.get("", 0):
            out.append(("unrated", counts[""]))
        return out

    # -- writers -----------------------------------------------------------------------------
    def to_arrow(self) -> Any:
        import pyarrow as pa

        arrays = {}
        for k, v in self.columns.items():
            if v.dtype == object:
                arrays[k] = pa.array(v.tolist(), type=pa.string())
            elif v.dtype.kind == "i":
                arrays[k] = pa.array(v)
            else:
                arrays[k] = pa.array(v, from_pandas=True)  # NaN → null
        return pa.table(arrays)

    def write(self, path: str | Path) -> None:
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(self.to_arrow(), p)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(self.to_arrow(), p)
        elif suffix in (".json", ".jsonl", ".ndjson"):
            with p.open("w", encoding="utf-8") as fh:
                if suffix == ".json":
                    fh.write(self.to_json())
                else:
                    for row in self.rows():
                        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            from .errors import DataError

            raise DataError(f"{path}: unknown output format '{suffix}' (use .csv, .json, .jsonl or .parquet)")

    def to_json(self) -> str:
        return json.dumps(self.to_records(), ensure_ascii=False, indent=1) + "\n"


def _py(v: Any) -> Any:
    if isinstance(v, np.floating):
        f = float(v)
        return None if math.isnan(f) else f
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def build(plan: Plan, batch: Batch, ev: Evaluation, engine_version: str) -> Results:
    n = batch.n
    cols: dict[str, np.ndarray] = {}
    cols["firm_id"] = np.asarray(batch.columns["firm_id"], dtype=object)
    years = batch.columns["year"]
    cols["year"] = np.where(np.isnan(years), -1, years).astype(np.int64)
    cols["rulebook"] = np.full(n, plan.id, dtype=object)
    cols["rulebook_version"] = np.full(n, plan.version, dtype=object)
    cols["rulebook_hash"] = np.full(n, plan.hash, dtype=object)
    cols["engine_version"] = np.full(n, engine_version, dtype=object)
    cols["status"] = np.where(ev.rated, "rated", "unrated").astype(object)
    cols["reasons"] = ev.reasons
    cols["fallbacks"] = ev.fallbacks
    for name in STANDARD_VARIABLES:
        cols[name] = _column(ev.values[name])
    for rname, rating in plan.ratings.items():
        ids = np.asarray([*rating.ids, ""], dtype=object)
        labels = ids[ev.levels[rname]]
        if rname == plan.primary:
            cols["rating"] = labels
        cols[rname] = labels
    if plan.incentives:
        target = plan.incentives["rating"]
        ids = plan.ratings[target].ids
        lv = ev.levels[target]
        inc = plan.incentives["levels"]
        for col, key, conv in (("incentive_rate_bp", "rate_bp", float),
                               ("incentive_credit_policy", "credit_policy", str),
                               ("incentive_services", "services", lambda s: "; ".join(s)),
                               ("incentive_subsidy_pct", "subsidy_pct", float)):
            if not any(key in spec for spec in inc.values()):
                continue
            missing = math.nan if conv is float else ""
            table = [conv(inc[i][key]) if i in inc and key in inc[i] else missing for i in ids] + [missing]
            arr = np.asarray(table, dtype=np.float64 if conv is float else object)
            cols[col] = arr[lv]
    for name in plan.order:
        node = plan.nodes[name]
        if node.kind == "variable" and name not in cols:
            cols[name] = _column(ev.values[name])
        elif node.kind == "benchmark":
            cols[name] = _column(ev.values[name])
            cols[f"{name}_peers"] = np.asarray(ev.aux[f"{name}_peers"], dtype=np.int64)
            cols[f"{name}_group"] = np.asarray(ev.aux[f"{name}_group"], dtype=object)
    issues = sorted(batch.issues, key=lambda i: (i.row or 0, i.column or "", i.message))
    return Results(cols, plan, issues, ev.tables, batch, ev)


def _column(v: Any) -> np.ndarray:
    if isinstance(v, Category):
        return v.to_strings()
    return np.ascontiguousarray(np.asarray(v, dtype=np.float64))
