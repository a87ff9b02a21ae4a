"""Golden text outputs for people (issue #19): `explain` (bands, conditional levels, weighted
scores), `diff --data` and the `rate` summary, as the CLI prints them.

A change to any of these texts fails here until the snapshots are updated on purpose
(``pytest tests/test_text_golden.py --snapshot-update``) and CHANGELOG.md says why. Snapshots are
plain text files under golden/snapshots/test_text_golden/, readable in a diff. The engine version
is replaced by ``<engine>`` so that a release does not churn them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

import ruleengine
from ruleengine.cli import main

ROOT = Path(__file__).resolve().parent.parent


class TextSnapshot(SingleFileSnapshotExtension):
    file_extension = "txt"
    _write_mode = WriteMode.TEXT

    @classmethod
    def dirname(cls, *, test_location) -> str:  # noqa: ANN001 - syrupy's signature
        return str(ROOT / "golden" / "snapshots" / test_location.basename)


@pytest.fixture
def text_snapshot(snapshot):
    return snapshot.use_extension(TextSnapshot)


CASES = {
    "explain_huzhou_G01": ["explain", "huzhou", "golden/portfolios/small.csv", "--firm", "G01"],
    "explain_shenzhen_G01": ["explain", "shenzhen", "golden/portfolios/small.csv", "--firm", "G01"],
    "explain_huzhou_G08_unrated": ["explain", "huzhou", "golden/portfolios/small.csv", "--firm", "G08"],
    "explain_quzhou_G05": ["explain", "quzhou", "golden/portfolios/small.csv", "--firm", "G05"],
    "explain_levels_L1": ["explain", "tests/data/levels/levels.yaml", "tests/data/levels/firms.csv", "--firm", "L1"],
    "explain_levels_L2": ["explain", "tests/data/levels/levels.yaml", "tests/data/levels/firms.csv", "--firm", "L2"],
    "diff_huzhou_next": [
        "diff",
        "huzhou",
        "tests/data/levels/huzhou_next.yaml",
        "--data",
        "golden/portfolios/small.csv",
    ],
    "rate_summary_huzhou": ["rate", "huzhou", "golden/portfolios/small.csv"],
    "rate_summary_quzhou": ["rate", "quzhou", "golden/portfolios/small.csv"],
    "rate_summary_shenzhen": ["rate", "shenzhen", "golden/portfolios/small.csv"],
    "rate_summary_levels": ["rate", "tests/data/levels/levels.yaml", "tests/data/levels/firms.csv"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_text_output(case, text_snapshot, monkeypatch):
    monkeypatch.chdir(ROOT)  # paths in the output are the relative ones given
    result = CliRunner().invoke(main, CASES[case], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output.replace(f"engine {ruleengine.__version__},", "engine <engine>,")
    assert out == text_snapshot
