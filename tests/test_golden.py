"""Golden snapshots: every result column of every bundled rulebook on fixed portfolios.

A rulebook or engine change that moves any number fails here until the snapshots are updated on
purpose (``pytest tests/test_golden.py --snapshot-update``) and CHANGELOG.md says why. Snapshots
are CSV files under golden/snapshots/, one per (rulebook, portfolio), readable in a diff.
``engine_version`` and ``rulebook_hash`` are left out so that a release, or an edit to a
rulebook's prose or test cases, does not churn them; the hash has tests of its own.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

import ruleengine

ROOT = Path(__file__).resolve().parent.parent
PORTFOLIOS = sorted((ROOT / "golden" / "portfolios").glob("*.csv"))
BOOKS = sorted(p.stem for p in (ROOT / "rulebooks").glob("*.yaml"))


class CsvSnapshot(SingleFileSnapshotExtension):
    file_extension = "csv"
    _write_mode = WriteMode.TEXT

    @classmethod
    def dirname(cls, *, test_location) -> str:  # noqa: ANN001 - syrupy's signature
        return str(ROOT / "golden" / "snapshots" / test_location.basename)


@pytest.fixture
def csv_snapshot(snapshot):
    return snapshot.use_extension(CsvSnapshot)


def results_csv(book: str, portfolio: Path) -> str:
    import pyarrow.csv as pacsv

    results = ruleengine.rate(book, portfolio)
    table = results.to_arrow().drop_columns(["engine_version", "rulebook_hash"])
    buf = io.BytesIO()
    pacsv.write_csv(table, buf)
    return buf.getvalue().decode("utf-8")


def test_every_bundled_rulebook_has_golden_coverage():
    assert {"huzhou", "national"} <= set(BOOKS)
    assert PORTFOLIOS, "golden/portfolios/ holds the fixed portfolios"


def test_hash_ignores_formatting_but_not_values(tmp_path):
    text = (ROOT / "rulebooks" / "huzhou.yaml").read_text(encoding="utf-8")
    base = ruleengine.load(ROOT / "rulebooks" / "huzhou.yaml").hash
    reformatted = tmp_path / "a" / "huzhou.yaml"
    reformatted.parent.mkdir()
    # comments, blank lines and flow vs block style do not change the content
    reformatted.write_text(
        "# a new comment\n\n" + text.replace("    value: k\n", '    value: "k"   # quoted now\n'), encoding="utf-8"
    )
    assert ruleengine.load(reformatted).hash == base
    changed = tmp_path / "b" / "huzhou.yaml"
    changed.parent.mkdir()
    changed.write_text(text.replace("values: {2021-01-01: 0.6}", "values: {2021-01-01: 0.61}"), encoding="utf-8")
    assert ruleengine.load(changed).hash != base


@pytest.mark.parametrize("portfolio", PORTFOLIOS, ids=lambda p: p.stem)
@pytest.mark.parametrize("book", BOOKS)
def test_golden(book, portfolio, csv_snapshot):
    assert results_csv(book, portfolio) == csv_snapshot
