"""Issue #11.4, memory at 2M rows: the analyses' views hold text as dictionary codes (not a Python
string per row), compare releases the columns as read that no later method needs, and explain
keeps the context text (firm name, city, ...) of the explained firm's rows only."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import ruleengine
from ruleengine import pipeline
from ruleengine.analysis import rated
from ruleengine.analysis.rated import Portfolio, Rated, Text, compare_view
from ruleengine.analysis.trace import explain_firm
from ruleengine.engine.results import RowText

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "golden" / "portfolios" / "generated.csv"


def _csv_rows() -> list[dict[str, str]]:
    with GENERATED.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_text_column_reads_like_strings_from_codes() -> None:
    t = Text.of(pa.chunked_array([["b", None], ["a", "b", ""]]))
    assert t.codes.dtype == np.int32 and len(t) == 5
    assert sorted(x for x in t.labels.tolist() if x is not None) == ["", "a", "b"]  # one per distinct value
    assert t.tolist() == ["b", None, "a", "b", ""]
    assert [t[i] for i in range(5)] == ["b", None, "a", "b", ""]
    assert (t == "b").tolist() == [True, False, False, True, False]
    assert (t != "b").tolist() == [False, True, True, False, True]
    assert np.where(t == "", "unrated", t).tolist() == ["b", None, "a", "b", "unrated"]
    assert t.map({"a": "A", "b": "B"}, "").tolist() == ["B", "", "A", "B", ""]
    assert t[np.array([3, 2])].tolist() == ["b", "a"]


def test_views_hold_dictionary_codes_not_strings_per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """compare's view of 401 firm-years, rated in 13-row chunks: every text column is codes into a
    few labels (the firm ids: one label per firm, not per row), the values are the rating's."""
    monkeypatch.setattr(rated, "CHUNK_ROWS", 13)
    plan = ruleengine.load("huzhou")
    whole = ruleengine.rate(plan, GENERATED)
    with Portfolio([plan], GENERATED, None, pipeline.CONTEXT_COLUMNS) as portfolio:
        view = portfolio.rated(plan, functools.partial(compare_view, names=True))
    assert isinstance(view, Rated) and len(view) == 401
    for name, col in view.columns.items():
        assert isinstance(col, Text) or col.dtype != object, name  # no object array of str
    for name in ("firm_id", "rating", "status", "firm_name"):
        assert isinstance(view[name], Text) and view[name].codes.dtype == np.int32
    assert view["rating"].tolist() == whole["rating"].tolist()
    assert view["status"].tolist() == whole["status"].tolist()
    assert view["firm_id"].tolist() == whole["firm_id"].tolist()
    rows = _csv_rows()
    assert len(view["firm_id"].labels) == len({r["firm_id"] for r in rows}) + 1  # + the missing cell's slot
    assert view["firm_name"].tolist() == [r["firm_name"] for r in rows]
    assert len(view["rating"].labels) <= len(plan.ratings[plan.primary].best_first()) + 2  # levels, '', missing
    assert view.distribution() == whole.distribution()


def test_compare_releases_columns_no_later_method_reads() -> None:
    huzhou, quzhou = ruleengine.load("huzhou"), ruleengine.load("quzhou")
    with Portfolio([huzhou, quzhou], GENERATED, None, pipeline.CONTEXT_COLUMNS) as portfolio:
        assert portfolio.raw is not None and "firm_name" in portfolio.raw.columns
        portfolio.keep_for([quzhou])
        kept = set(portfolio.raw.columns)
        assert kept <= set(quzhou.inputs) | {"firm_id", "year", "region"}
        assert "firm_name" not in kept and "loan_amount_10k_cny" not in kept
        after = portfolio.rated(quzhou, compare_view)
    assert portfolio.raw is None  # released when the portfolio is closed
    alone = ruleengine.rate(quzhou, GENERATED)
    assert after["rating"].tolist() == alone["rating"].tolist()
    assert np.array_equal(after[rated.SCORE], alone.evaluation.values[f"rating:{quzhou.primary}"], equal_nan=True)


def test_explain_keeps_context_of_the_explained_firm_only() -> None:
    """explain of one firm: every row is rated (the benchmarks are the whole portfolio's), but only
    that firm's rows (both its years) keep their context as text; the trace is the one made from
    the whole portfolio's context, byte for byte."""
    plan = ruleengine.load("huzhou")
    firm = "913305000027711300"  # a Huzhou firm, both years
    rows = _csv_rows()
    mine = [i for i, r in enumerate(rows) if r["firm_id"] == firm]
    assert len(mine) == 2
    results = pipeline.rate_with_context(plan, GENERATED, firm=firm)
    assert len(results) == 401
    assert set(results.context) >= {"firm_name", "city", "loan_amount_10k_cny"}
    for name, col in results.context.items():
        assert isinstance(col, RowText) and col.rows() == mine, name
    assert [results.context["firm_name"][i] for i in mine] == [rows[i]["firm_name"] for i in mine]
    other = next(i for i in range(401) if i not in mine)
    with pytest.raises(IndexError, match="explained firm"):
        results.context["firm_name"][other]
    full = pipeline.rate_with_context(plan, GENERATED)
    assert len(full.context["firm_name"]) == 401
    assert results.tables.keys() == full.tables.keys()
    for key in full.tables:
        assert results.tables[key].to_json() == full.tables[key].to_json()
    for year in (2022, 2023):
        assert explain_firm(plan, results, firm, year).to_json() == explain_firm(plan, full, firm, year).to_json()
    assert ruleengine.explain(plan, GENERATED, firm).to_json() == explain_firm(plan, full, firm).to_json()
