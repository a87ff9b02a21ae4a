"""Rulebook errors an author can act on: exact text, line and column, all reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import ruleengine
from ruleengine.cli import main

HUZHOU = Path(__file__).resolve().parent.parent / "rulebooks" / "huzhou.yaml"

MINIMAL = """\
id: mini
title: Minimal rulebook
version: 1.0.0
effective: 2022-01-01
sources: {s: {title: test, status: assumed}}
boundary: [scope2.electricity]
inputs:
  firm_id: {type: string, required: true}
  year: {type: integer, required: true}
  electricity_mwh: {type: number, unit: MWh, default: 0, min: 0}
  value_added_10k_cny: {type: number, unit: 10k CNY, required: true, min: 0}
parameters:
  ef: {value: 0.5, unit: tCO2/MWh, source: s}
  tce_per_mwh: {value: 0.1229, unit: tce/MWh, source: s}
variables:
  scope1_tco2: {expr: "0 * electricity_mwh * ef", unit: tCO2}
  scope2_tco2: {expr: electricity_mwh * ef, unit: tCO2, boundary: scope2.electricity}
  emissions_tco2: {expr: scope1_tco2 + scope2_tco2, unit: tCO2}
  energy_tce: {expr: electricity_mwh * tce_per_mwh, unit: tce}
  intensity: {expr: emissions_tco2 / value_added_10k_cny, unit: tCO2/10k CNY}
ratings:
  level:
    value: intensity
    closed: right
    better: lower
    bands:
      - {id: A, upper: 1}
      - {id: B, lower: 1, upper: 2}
      - {id: C, lower: 2}
"""


def errors_of(text: str, name: str = "book.yaml") -> list[str]:
    with pytest.raises(ruleengine.RulebookError) as info:
        ruleengine.compile_text(text, name)
    return [d.format() for d in info.value.errors]


def test_minimal_rulebook_compiles():
    plan = ruleengine.compile_text(MINIMAL, "mini.yaml")
    assert plan.primary == "level"
    assert [w.message for w in plan.warnings] == []


def test_yaml_syntax_error_has_line_and_column():
    text = MINIMAL.replace("  ef: {value: 0.5,", "  ef: {value: 0.5,,")
    (msg,) = errors_of(text)
    assert msg.startswith("book.yaml:13:")
    assert "YAML syntax" in msg


def test_duplicate_key_is_an_error_not_an_overwrite():
    text = MINIMAL.replace(
        "  ef: {value: 0.5, unit: tCO2/MWh, source: s}\n",
        "  ef: {value: 0.5, unit: tCO2/MWh, source: s}\n  ef: {value: 0.6, unit: tCO2/MWh, source: s}\n",
    )
    assert errors_of(text) == [
        "book.yaml:14:3: error: duplicate key 'ef' (first defined at line 13) (at parameters.ef)"
    ]


def test_unknown_key_suggests_the_right_one():
    text = MINIMAL.replace("{expr: electricity_mwh * ef, unit: tCO2,", "{exprr: electricity_mwh * ef, unit: tCO2,")
    msgs = errors_of(text)
    assert "book.yaml:17:17: error: unknown key 'exprr' (did you mean 'expr'?) (at variables.scope2_tco2.exprr)" in msgs


def test_unknown_name_and_cycle_reported_together_with_lines():
    text = MINIMAL.replace("expr: emissions_tco2 / value_added_10k_cny", "expr: emisions_tco2 / value_added_10k_cny")
    text = text.replace(
        "expr: scope1_tco2 + scope2_tco2,", "expr: scope1_tco2 + scope2_tco2 + energy_tce / tce_per_mwh * ef,"
    )
    text = text.replace(
        "expr: electricity_mwh * tce_per_mwh, unit: tce",
        "expr: electricity_mwh * tce_per_mwh + 0 * emissions_tco2 / ef * tce_per_mwh, unit: tce",
    )
    msgs = errors_of(text)
    assert msgs == [
        "book.yaml:18:3: error: dependency cycle: emissions_tco2 → energy_tce → emissions_tco2 (at variables.emissions_tco2)\n"
        "  book.yaml:19:3: note: see here (at variables.energy_tce)",
        "book.yaml:20:21: error: unknown name 'emisions_tco2' (did you mean 'emissions_tco2'?) (at variables.intensity.expr)",
    ]


def test_unit_mismatch_is_located_at_the_expression():
    text = MINIMAL.replace("expr: scope1_tco2 + scope2_tco2,", "expr: scope1_tco2 + electricity_mwh,")
    assert errors_of(text) == [
        "book.yaml:18:26: error: unit mismatch: '+' of tCO2 and MWh (at variables.emissions_tco2.expr)"
    ]


def test_declared_unit_must_match_the_formula():
    text = MINIMAL.replace("{expr: electricity_mwh * ef, unit: tCO2,", "{expr: electricity_mwh * ef, unit: tCO2/MWh,")
    msgs = errors_of(text)
    assert msgs[0] == (
        "book.yaml:17:51: error: unit mismatch: the formula gives tCO2, but unit says tCO2/MWh "
        "(at variables.scope2_tco2.unit)"
    )
    # the declared unit is what flows on, so the sum that uses it is flagged too
    assert msgs[1:] == [
        "book.yaml:18:26: error: unit mismatch: '+' of tCO2 and tCO2/MWh (at variables.emissions_tco2.expr)"
    ]


def test_band_gap_and_overlap():
    gap = MINIMAL.replace("- {id: B, lower: 1, upper: 2}", "- {id: B, lower: 1.1, upper: 2}")
    assert errors_of(gap) == [
        "book.yaml:28:24: error: gap between band 'A' (upper 1) and band 'B' (lower 1.1): values in (1, 1.1] get no "
        "level (at ratings.level.bands[1].lower)\n  book.yaml:27:24: note: see here (at ratings.level.bands[0].upper)"
    ]
    overlap = MINIMAL.replace("- {id: C, lower: 2}", "- {id: C, lower: 1.5}")
    (msg,) = errors_of(overlap)
    assert "overlap between band 'B' (upper 2) and band 'C' (lower 1.5): values in (1.5, 2] match two levels" in msg


def test_forbidden_python_is_rejected_with_the_alternative():
    text = MINIMAL.replace(
        "expr: emissions_tco2 / value_added_10k_cny", "expr: emissions_tco2 if value_added_10k_cny else 0"
    )
    (msg,) = errors_of(text)
    assert msg == (
        "book.yaml:20:21: error: 'x if c else y' works on one truth value, not on columns: use "
        "where(c, x, y) (at variables.intensity.expr)"
    )


def test_weights_must_sum_to_one():
    text = MINIMAL.replace(
        "ratings:", "  score: {weights: {scope1_tco2: 0.5, scope2_tco2: 0.4}, unit: tCO2, output: true}\nratings:"
    )
    assert errors_of(text) == ["book.yaml:21:20: error: weights sum to 0.9, not 1 (at variables.score.weights)"]


def test_version_read_as_number_gets_a_hint():
    text = MINIMAL.replace("version: 1.0.0", "version: 1.0")
    assert errors_of(text) == [
        'book.yaml:3:10: error: version must be a string like "1.0.0"; YAML read 1.0 as a '
        "number (quote it) (at version)"
    ]


def test_cli_validate_acceptance_copy_of_huzhou(tmp_path):
    """Acceptance: a copy of huzhou.yaml with one undefined name and one cycle reports both, exit 1."""
    text = HUZHOU.read_text(encoding="utf-8")
    text = text.replace(
        "expr: net_emissions_tco2 / value_added_10k_cny", "expr: net_emisions_tco2 / value_added_10k_cny"
    )
    text = text.replace(
        "expr: scope1_tco2 + scope2_tco2\n", "expr: scope1_tco2 + scope2_tco2 + net_emissions_tco2 * 0\n"
    )
    book = tmp_path / "huzhou_broken.yaml"
    book.write_text(text, encoding="utf-8")
    lines = text.splitlines()
    typo_line = next(i for i, ln in enumerate(lines, 1) if "net_emisions_tco2 /" in ln)
    emissions_line = next(i for i, ln in enumerate(lines, 1) if ln == "  emissions_tco2:")
    result = CliRunner().invoke(main, ["validate", str(book)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    out = result.output.splitlines()
    assert any(
        line.startswith(
            f"{book}:{emissions_line}:3: error: dependency cycle: emissions_tco2 → net_emissions_tco2 → emissions_tco2"
        )
        for line in out
    ), out
    assert any(
        line.startswith(
            f"{book}:{typo_line}:11: error: unknown name 'net_emisions_tco2' (did you mean 'net_emissions_tco2'?)"
        )
        for line in out
    ), out
    assert out[-1] == "2 errors in 1 rulebook"


def test_cli_validate_bundled_ok():
    result = CliRunner().invoke(main, ["validate", "huzhou"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: rulebooks/huzhou.yaml: huzhou 3.0.0 (sha256:")


def test_cli_validate_unknown_book_suggests():
    result = CliRunner().invoke(main, ["validate", "huzou"])
    assert result.exit_code == 1
    assert "no rulebook named 'huzou' (did you mean 'huzhou'?)" in result.output


def test_editing_an_imported_library_recompiles_its_rulebook(tmp_path):
    import shutil

    root = Path(__file__).resolve().parent.parent / "rulebooks"
    (tmp_path / "lib").mkdir()
    shutil.copy(root / "huzhou.yaml", tmp_path / "huzhou.yaml")
    lib = tmp_path / "lib" / "accounting.yaml"
    shutil.copy(root / "lib" / "accounting.yaml", lib)
    before = ruleengine.load(tmp_path / "huzhou.yaml")
    assert ruleengine.load(tmp_path / "huzhou.yaml") is before  # cached
    lib.write_text(lib.read_text(encoding="utf-8").replace("east: 0.5617", "east: 0.5600"), encoding="utf-8")
    after = ruleengine.load(tmp_path / "huzhou.yaml")
    assert after is not before and after.hash != before.hash
    assert after.parameters["grid_ef"].value_for_year(2022)[1]["east"] == 0.56


def test_shipped_schema_is_valid_against_its_metaschema():
    """The engine no longer checks rulebooks/schema.json against the JSON Schema metaschema on
    every cold start (70 ms); this test does it instead, so an invalid schema cannot ship."""
    import json

    import jsonschema

    from ruleengine.rulebook.schema import schema_path

    with open(schema_path(), encoding="utf-8") as fh:
        schema = json.load(fh)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    cls = jsonschema.validators.validator_for(schema)
    assert cls is jsonschema.Draft202012Validator
    cls.check_schema(schema)  # raises SchemaError on an invalid schema
    broken = {**schema, "properties": {**schema["properties"], "id": {"type": "strng"}}}
    with pytest.raises(jsonschema.SchemaError):
        cls.check_schema(broken)
