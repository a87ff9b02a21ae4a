"""Issue #11.8 (last part): `ruleengine test` on author-test cases that `validate` accepted.

Found by running every kind of cell and expectation through `run_cases`: a list or mapping as an
input cell crashed `ruleengine test` with `internal error: ArrowInvalid`; a `given` name that is
not a variable or benchmark was silently ignored (the case tested something else); an expected
value of `.inf` (± anything) accepted every result, and `.nan` could never match.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from ruleengine.cli import main

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "data" / "harden"  # Huzhou 1.0.0 and its library, frozen
HUZHOU = (FIXTURE / "huzhou.yaml").read_text(encoding="utf-8")
HEAD = HUZHOU[: HUZHOU.index("\ntests:\n")]
# the worked example of huzhou.yaml: K = 1.51185 / 2.0 = 0.75592 -> level 2
INPUT = '{year: 2022, industry: "3011", grid_region: east, value_added_10k_cny: 2000, raw_coal_t: 1000, electricity_mwh: 2000}'


def book(tmp_path: Path, case: str) -> Path:
    folder = tmp_path / "books"
    shutil.copytree(FIXTURE / "lib", folder / "lib")
    path = folder / "cases.yaml"
    path.write_text(HEAD + "\ntests:\n  - name: the case\n" + case, encoding="utf-8")
    return path


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert "internal error" not in result.output, result.output
    return result


def test_a_list_in_an_input_cell_is_a_located_validate_error(tmp_path):
    path = book(tmp_path, f"    input: {INPUT.replace('east', '[east, west]')}\n    expect: {{rating: '2'}}\n")
    for command in ("validate", "test"):
        result = cli(command, str(path))
        assert result.exit_code == 1
        # line 186 is the case's `input:`; grid_region's value starts at column 56
        # (len('    input: {year: 2022, industry: "3011", grid_region: ') = 55)
        assert result.stderr == (
            f"{path}:186:56: error: a test input cell holds one number, text, true/false or null, not a list "
            "(at tests[0].input.grid_region)\n1 error" + (" in 1 rulebook\n" if command == "validate" else "\n")
        )


def test_a_mapping_in_a_rows_cell_is_a_located_validate_error(tmp_path):
    case = f"    rows: [{INPUT.replace('2000,', '{a: 1},', 1)}]\n    expect: {{rating: '2'}}\n"
    result = cli("validate", str(book(tmp_path, case)))
    assert result.exit_code == 1
    assert (
        "error: a test input cell holds one number, text, true/false or null, not a mapping (at tests[0].rows[0].value_added_10k_cny)"
        in result.stderr
    )


def test_a_given_name_that_does_not_exist_fails_the_case(tmp_path):
    # 'industry_intensty' (typo) would be ignored: the batch benchmark (one firm: its own
    # intensity, K = 1) would be used and the case would test something else without a word
    case = f"    input: {INPUT}\n    given: {{industry_intensty: 2.0}}\n    expect: {{status: rated}}\n"
    path = book(tmp_path, case)
    assert cli("validate", str(path)).exit_code == 0
    result = cli("test", str(path))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"FAIL huzhou: the case  ({path}:185:5)",
        "    cannot run the case: given.industry_intensty: not a variable or benchmark of huzhou "
        "(did you mean 'industry_intensity'?)",
        "0 passed, 1 failed",
    ]


def test_an_infinite_expectation_no_longer_accepts_everything(tmp_path):
    case = f"    input: {INPUT}\n    given: {{industry_intensity: 2.0}}\n    expect: {{k: {{value: .inf, tol: 1}}}}\n"
    result = cli("test", str(book(tmp_path, case)))
    assert result.exit_code == 1
    assert "    k: expected inf exactly, got 0.7559" in result.stdout


def test_a_nan_expectation_means_missing(tmp_path):
    # no value added: intensity and K are missing, the firm is unrated
    case = (
        '    input: {year: 2022, industry: "3011", value_added_10k_cny: 0, electricity_mwh: 10}\n'
        "    given: {industry_intensity: 2.0}\n"
        "    expect: {k: .nan}\n"
    )
    result = cli("test", str(book(tmp_path, case)))
    assert result.exit_code == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "1 passed, 0 failed"


def test_the_bundled_rulebooks_own_cases_still_pass():
    result = cli("test", "huzhou", "quzhou", "shenzhen", "national")
    assert result.exit_code == 0, result.stdout
    assert result.stdout.splitlines()[-1].endswith(" passed, 0 failed")
