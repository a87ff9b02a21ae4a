"""diff: changes of meaning with both locations, their impact on a portfolio, and attribution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ruleengine
from ruleengine.analysis.diff import run
from ruleengine.cli import main

ROOT = Path(__file__).resolve().parent.parent
HUZHOU = ROOT / "rulebooks" / "huzhou.yaml"
# the bundled version, read from the file so that a release of the rulebook does not break these tests
HV = next(ln.split(": ", 1)[1] for ln in HUZHOU.read_text(encoding="utf-8").splitlines() if ln.startswith("version: "))
HV_MAJOR = f"{int(HV.split('.')[0]) + 1}.0.0"
HV_MINOR = f"{HV.split('.')[0]}.{int(HV.split('.')[1]) + 1}.0"
SMALL = ROOT / "golden" / "portfolios" / "small.csv"
EDGE_OLD = '{id: "3", lower: 0.8, upper: 1.2, label: level 3}\n      - {id: "4", lower: 1.2,'
EDGE_NEW = '{id: "3", lower: 0.8, upper: 1.1, label: level 3}\n      - {id: "4", lower: 1.1,'


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_moving_one_band_edge_names_exactly_that_change_and_its_firms(tmp_path):
    text = HUZHOU.read_text(encoding="utf-8")
    assert EDGE_OLD in text
    new = write(
        tmp_path, "huzhou.yaml", text.replace(EDGE_OLD, EDGE_NEW).replace(f"version: {HV}", f"version: {HV_MAJOR}")
    )
    result = run(HUZHOU, new, SMALL)
    edits = [e for e in result["edits"] if e.what != "metadata"]
    assert [e.summary() for e in edits] == ["ratings.level: threshold between 3 and 4: 1.2 → 1.1"]
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if '{id: "3", lower: 0.8, upper: 1.2' in ln)
    assert edits[0].old_loc.endswith(f"huzhou.yaml:{line}:38")
    assert edits[0].new_loc == f"{new}:{line}:38" or edits[0].new_loc.endswith(f"huzhou.yaml:{line}:38")
    assert edits[0].new_loc != edits[0].old_loc
    # the golden firms with K in (1.1, 1.2] move from 3 to 4, and only they
    base = ruleengine.rate("huzhou", SMALL)
    k = base["k"]
    expected = sorted((str(base["firm_id"][i]), int(base["year"][i])) for i in np.flatnonzero((k > 1.1) & (k <= 1.2)))
    assert expected, "the golden portfolio has firms in (1.1, 1.2]"
    moved = sorted((f["firm_id"], f["year"]) for f in result["impact"]["firms"])
    assert moved == expected
    assert {(f["old"], f["new"], f["direction"]) for f in result["impact"]["firms"]} == {("3", "4", "down")}
    assert result["attribution"]["alone"] == [{"change": edits[0].name, "moved": len(expected)}]
    assert result["attribution"]["order_independent"] is True


def test_reformatting_is_no_change(tmp_path):
    text = HUZHOU.read_text(encoding="utf-8")
    reformatted = text.replace("    value: k\n", "    value: (k)\n")  # parentheses that change nothing
    reformatted = reformatted.replace(
        "    expr: emissions_tco2 - avoided_tco2\n", "    expr: emissions_tco2   -   (avoided_tco2)\n"
    )
    reformatted = reformatted.replace("values: {2021-01-01: 0.6}", "values:\n      2021-01-01: 0.60")
    # key order of a mapping
    reformatted = reformatted.replace(
        '    closed: right\n    better: lower\n    bands:\n      - {id: "1"',
        '    better: lower\n    closed: right\n    bands:\n      - {id: "1"',
    )
    new = write(tmp_path, "huzhou.yaml", "# reformatted\n" + reformatted)
    r = CliRunner().invoke(main, ["diff", str(HUZHOU), str(new)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[1] == "no changes"


def test_parameter_and_expression_changes_are_precise(tmp_path):
    text = HUZHOU.read_text(encoding="utf-8")
    changed = text.replace("values: {2021-01-01: 2.0}", "values: {2021-01-01: 2.0, 2023-01-01: 1.8}")
    changed = changed.replace(
        "    expr: intensity / industry_intensity\n", "    expr: intensity / industry_intensity * 1.0\n"
    )
    new = write(tmp_path, "huzhou.yaml", changed)
    names = [e.summary() for e in run(HUZHOU, new)["edits"]]
    assert names == [
        "parameters.high_carbon_min[2023-01-01]: added 1.8",
        "variables.k.expr: intensity / industry_intensity → intensity / industry_intensity * 1.0",
    ]


def test_incentive_change_gives_the_interest_effect(tmp_path):
    text = HUZHOU.read_text(encoding="utf-8")
    changed = text.replace(
        '"3": {rate_bp: 0, credit_policy: standard terms,', '"3": {rate_bp: -10, credit_policy: standard terms,'
    )
    new = write(tmp_path, "huzhou.yaml", changed.replace(f"version: {HV}", f"version: {HV_MINOR}"))
    result = run(HUZHOU, new, SMALL)
    base = ruleengine.rate("huzhou", SMALL)
    import csv

    with SMALL.open(encoding="utf-8") as fh:
        loans = {(r["firm_id"], int(r["year"])): float(r["loan_amount_10k_cny"]) for r in csv.DictReader(fh)}
    level3 = [(str(base["firm_id"][i]), int(base["year"][i])) for i in np.flatnonzero(base["rating"] == "3")]
    # a loan of L x 10^4 CNY at -10 bp pays L x 10^4 x 0.001 = L x 10 CNY less interest a year
    expected = sum(loans[f] * -10 for f in level3)
    assert result["impact"]["lending"]["annual_interest_change_cny"] == pytest.approx(expected)
    assert result["impact"]["lending"]["rate_bp_sum_change"] == -10 * len(level3)
    assert result["impact"]["moved"] == 0


def test_version_and_changelog_warnings(tmp_path):
    text = HUZHOU.read_text(encoding="utf-8").replace(EDGE_OLD, EDGE_NEW)
    new = write(tmp_path, "huzhou.yaml", text)
    warnings = run(HUZHOU, new)["warnings"]
    assert warnings[0] == (
        f"the new version {HV} does not increase on {HV}: bump it (MAJOR when any output can "
        "change for the same inputs)"
    )
    assert warnings[1].startswith("no CHANGELOG.md found near")
    (tmp_path / "CHANGELOG.md").write_text(f"- huzhou {HV_MAJOR}: moved the 3|4 edge to 1.1\n", encoding="utf-8")
    write(tmp_path, "huzhou.yaml", text.replace(f"version: {HV}", f"version: {HV_MAJOR}"))
    assert run(HUZHOU, new)["warnings"] == []


def test_two_changes_attributed_in_both_orders(tmp_path):
    text = HUZHOU.read_text(encoding="utf-8").replace(EDGE_OLD, EDGE_NEW)
    text = text.replace(
        '{id: "1", upper: 0.6, label: level 1 (best)}\n      - {id: "2", lower: 0.6,',
        '{id: "1", upper: 0.7, label: level 1 (best)}\n      - {id: "2", lower: 0.7,',
    )
    new = write(tmp_path, "huzhou.yaml", text)
    result = run(HUZHOU, new, SMALL)
    att = result["attribution"]
    assert [a["change"] for a in att["alone"]] == [
        "ratings.level: threshold between 1 and 2",
        "ratings.level: threshold between 3 and 4",
    ]
    assert sum(a["moved"] for a in att["alone"]) == result["impact"]["moved"]
    assert att["order_independent"] is True


def test_diff_json_and_markdown(tmp_path):
    new = write(tmp_path, "huzhou.yaml", HUZHOU.read_text(encoding="utf-8").replace(EDGE_OLD, EDGE_NEW))
    js = CliRunner().invoke(main, ["diff", str(HUZHOU), str(new), "--data", str(SMALL), "--format", "json"])
    data = json.loads(js.stdout)
    assert data["edits"][0]["what"] == "threshold" and data["impact"]["down"] >= 1
    md = CliRunner().invoke(main, ["diff", str(HUZHOU), str(new), "--data", str(SMALL), "--format", "markdown"]).output
    assert md.startswith(f"# Rulebook change: huzhou {HV} → huzhou {HV}")
    assert "| ratings.level: threshold between 3 and 4 | 1.2 | 1.1 |" in md
    assert "## Attribution" in md


def test_a_changed_jurisdiction_is_a_change_of_meaning_with_its_firms(tmp_path):
    text = HUZHOU.read_text(encoding="utf-8")
    assert 'divisions: ["3305"]' in text
    new = write(tmp_path, "huzhou.yaml", text.replace('divisions: ["3305"]', 'divisions: ["3305", "3308"]'))
    sample = ROOT / "examples" / "sample_firms.csv"
    result = run(HUZHOU, new, sample)
    edits = [e for e in result["edits"] if e.what != "metadata"]
    assert [e.summary() for e in edits] == ['jurisdiction.divisions (+3308): ["3305"] → ["3305", "3308"]']
    # the 146 Quzhou firm-years of the sample (codes 913308…) become rateable: all but its 3 defective
    # rows (a negative coal quantity, green power above purchases, a missing industry) gain a level
    base = ruleengine.rate("huzhou", sample)
    after = ruleengine.rate(new, sample)
    assert int(((base["rating"] == "") & (after["rating"] != "")).sum()) == 146 - 3
    assert result["attribution"]["alone"][0]["change"] == edits[0].name


# A section OLD does not have at all (here ``scales`` and ``crosswalk``; Huzhou has neither): the
# attribution applies each change alone to OLD, which must create the section, not fail on it
# (was: internal error KeyError 'scales' / 'crosswalk', exit 3).
NEW_SECTIONS = """scales:
  unused_scale:
    piecewise: [[0, 100], [1, 0]]
    unit: points
    input_unit: "1"
    source: ruleengine-assumption
    status: assumed

crosswalk:
  quzhou:
    rating: colour
    map: {deep-green: "1", light-green: "2", yellow: "3", red: "5"}
    source: ruleengine-assumption
    status: assumed

"""


def diff_cli(*args: str):
    r = CliRunner().invoke(main, ["diff", *args, "--format", "json"])
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_a_version_adding_a_section_old_lacks_is_attributed(tmp_path):
    text = HUZHOU.read_text(encoding="utf-8")
    assert "\nscales:" not in text and "\ncrosswalk:" not in text and text.count("\ntests:") == 1
    new = write(tmp_path, "huzhou.yaml", text.replace("\ntests:", "\n" + NEW_SECTIONS + "tests:"))
    data = diff_cli(str(HUZHOU), str(new), "--data", str(SMALL))
    assert [e["name"] for e in data["edits"]] == ["scales.unused_scale", "crosswalk.quzhou"]
    assert data["impact"]["moved"] == 0
    # neither change rates anyone differently, alone or in either order
    assert data["attribution"]["alone"] == [
        {"change": "scales.unused_scale", "moved": 0},
        {"change": "crosswalk.quzhou", "moved": 0},
    ]
    assert [s["moved"] for s in data["attribution"]["forward"]] == [0, 0]
    assert data["attribution"]["order_independent"] is True


def test_a_version_changing_a_ratings_levels_is_attributed(tmp_path):
    """A new set of levels is applied as the new bands (it was applied as the list of their ids,
    which does not compile: 'needs other changes')."""
    text = HUZHOU.read_text(encoding="utf-8")
    old = "      - {id: high-carbon, lower: high_carbon_min}\n"
    assert text.count(old) == 1
    new = write(
        tmp_path,
        "huzhou.yaml",
        text.replace(
            old,
            "      - {id: high-carbon, lower: high_carbon_min, upper: 5}\n      - {id: very-high-carbon, lower: 5}\n",
        ),
    )
    data = diff_cli(str(HUZHOU), str(new), "--data", str(SMALL))
    assert [(e["what"], e["new"]) for e in data["edits"]] == [
        ("levels", ["low-carbon", "medium-carbon", "high-carbon", "very-high-carbon"])
    ]
    assert data["impact"]["ratings"]["carbon_label"]["moved"] > 0
    # the primary rating (level) does not move; the change compiles alone
    assert [a["moved"] for a in data["attribution"]["alone"]] == [0]


def test_a_change_citing_a_new_source_is_attributed(tmp_path):
    """A rating's source is a change of meaning; a change citing a source NEW adds compiles alone
    (the new sources are there for every change)."""
    text = HUZHOU.read_text(encoding="utf-8")
    assert text.count("\nsources:\n") == 1 and text.count("    source: huzhou-grading\n  carbon_label:") == 1
    text = text.replace("\nsources:\n", "\nsources:\n  new-study:\n    title: A new study\n    status: secondary\n")
    text = text.replace("    source: huzhou-grading\n  carbon_label:", "    source: new-study\n  carbon_label:")
    data = diff_cli(str(HUZHOU), str(write(tmp_path, "huzhou.yaml", text)), "--data", str(SMALL))
    assert [e["name"] for e in data["edits"]] == ["sources.new-study", "ratings.level.source"]
    assert data["attribution"]["alone"] == [{"change": "ratings.level.source", "moved": 0}]


def test_diff_across_rulebooks_with_data():
    """``diff huzhou national --data`` (was: internal error KeyError 'crosswalk', exit 3): every
    change is listed (also the rating the incentives are keyed on) and, applied one after another
    in either order, they compile into the national draft: the last step is rated."""
    data = diff_cli("huzhou", "national", "--data", str(SMALL))
    assert data["old"]["id"] == "huzhou" and data["new"]["id"] == "national"
    names = [e["name"] for e in data["edits"]]
    assert {"incentives.rating", "crosswalk.huzhou", "crosswalk.quzhou", "crosswalk.shenzhen"} <= set(names)
    assert data["impact"]["firm_years"] == 26  # the rows of golden/portfolios/small.csv
    att = data["attribution"]
    alone = {a["change"]: a["moved"] for a in att["alone"]}
    assert alone["crosswalk.huzhou"] is None  # maps onto A-E, not Huzhou's levels: needs the others
    assert att["forward"][-1]["moved"] is not None and att["reverse"][-1]["moved"] is not None


@pytest.mark.parametrize("old,new", [("huzhou", "national"), ("quzhou", "shenzhen"), ("shenzhen", "huzhou")])
def test_every_change_applied_in_either_order_rates_as_the_new_rulebook(old, new):
    """The attribution's premise, across rulebooks: OLD with the sources NEW adds, then every change
    of meaning applied (forward or reverse), compiles and rates the portfolio exactly as NEW does
    (before the fix the levels, incentives.rating and new sources were missing or applied wrongly,
    so the last step did not compile)."""
    import dataclasses

    from ruleengine.analysis import diff as D
    from ruleengine.rulebook.compiler import compile_document
    from ruleengine.rulebook.source import load_document, resolve

    old_doc, new_doc = load_document(resolve(old)), load_document(resolve(new))
    edits = D.structural_diff(old_doc, new_doc)
    sources = [p for e in edits if e.what == "source" and e.kind != "removed" for p in e.patches]
    relevant = [e for e in edits if e.what not in ("metadata", "source", "label") and e.patches]
    want = ruleengine.rate(ruleengine.load(new), SMALL)["rating"].tolist()
    for seq in (relevant, relevant[::-1]):
        data = D._apply(old_doc.data, sources)
        for e in seq:
            data = D._apply(data, e.patches)
        plan = compile_document(dataclasses.replace(old_doc, data=data))
        assert ruleengine.rate(plan, SMALL)["rating"].tolist() == want
