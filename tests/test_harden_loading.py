"""Issues #11.2 and #11.6: bounded rulebook loading, and located errors (never `internal error`)
for the rulebooks that crashed `validate`. Every case runs `ruleengine validate` through the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ruleengine.cli import main
from ruleengine.errors import RulebookError
from ruleengine.rulebook import limits as _limits
from ruleengine.rulebook import source

ROOT = Path(__file__).resolve().parents[1]
# A frozen copy of Huzhou 1.0.0 and its library (the located errors below name its lines; the
# bundled rulebooks move on)
FIXTURE = Path(__file__).resolve().parent / "data" / "harden"
HUZHOU = (FIXTURE / "huzhou.yaml").read_text(encoding="utf-8")
LOCATED = re.compile(r"^(?P<file>[^:\n]+\.yaml):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.*)$", re.M)

# 9 levels of 9 aliases: 9**9 = 387,420,489 strings once expanded (about 30 GB as Python objects)
BOMB = "".join(
    f"{name}: &{name} [{','.join([prev] * 9)}]\n"
    for name, prev in zip("abcdefghi", ['"lol"', *(f"*{c}" for c in "abcdefgh")], strict=True)
)


def book(tmp_path: Path, old: str, new: str, name: str = "book.yaml") -> Path:
    """huzhou.yaml (and the library it imports) with one edit, in a folder of its own."""
    assert HUZHOU.count(old) >= 1, f"huzhou.yaml no longer contains {old!r}; update this test"
    folder = tmp_path / "books"
    if not folder.exists():
        shutil.copytree(FIXTURE / "lib", folder / "lib")
    path = folder / name
    path.write_text(HUZHOU.replace(old, new, 1), encoding="utf-8")
    return path


def validate(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert "internal error" not in result.output and "Traceback" not in result.output, result.output
    return result.exit_code, result.stderr


def located(stderr: str) -> list[tuple[int, int, str]]:
    return [(int(m["line"]), int(m["col"]), m["msg"]) for m in LOCATED.finditer(stderr)]


# -- #11.6: the rulebooks that crashed validate --------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "line", "col", "message"),
    [
        # line 11 is `effective: 2021-05-01`; the value starts at column 12
        (
            "effective: 2021-05-01",
            "effective: 2021-02-30",
            11,
            12,
            "'2021-02-30' is not a valid date: day is out of range for month (quote it to keep it as text) (at effective)",
        ),
        (
            "jurisdiction: Huzhou, Zhejiang",
            "jurisdiction: !foo Huzhou",
            12,
            15,
            "unknown YAML tag '!foo' (rulebooks use plain values; quote the text if it starts with '!') (at jurisdiction)",
        ),
        (
            "jurisdiction: Huzhou, Zhejiang",
            "jurisdiction: !!python/object/apply:os.system [touch pwned]",
            12,
            15,
            "unknown YAML tag '!!python/object/apply:os.system' (rulebooks use plain mappings and lists) (at jurisdiction)",
        ),
        (
            "jurisdiction: Huzhou, Zhejiang",
            "jurisdiction: !!set {a, b}",
            12,
            15,
            "unknown YAML tag '!!set' (rulebooks use plain mappings and lists) (at jurisdiction)",
        ),
        (
            "jurisdiction: Huzhou, Zhejiang",
            "jurisdiction: &a [x, *a]",
            12,
            22,
            "the alias '*a' refers to the value that contains it (anchor '&a' at line 12): it would never end (at jurisdiction[1])",
        ),
        (
            "jurisdiction: Huzhou, Zhejiang",
            "jurisdiction: &a {x: {y: *a}}",
            12,
            26,
            "the alias '*a' refers to the value that contains it (anchor '&a' at line 12): it would never end (at jurisdiction.x.y)",
        ),
        (
            "jurisdiction: Huzhou, Zhejiang",
            "jurisdiction: *nowhere",
            12,
            15,
            "unknown alias '*nowhere' (no anchor '&nowhere' before it) (at jurisdiction)",
        ),
        # line 48 is `    values: {2021-01-01: 0.6}` of low_carbon_max; the value starts at column 26
        (
            "values: {2021-01-01: 0.6}",
            "values: {2021-01-01: " + "9" * 5000 + "}",
            48,
            26,
            "an integer of 5,000 digits; numbers must fit in 64 bits (quote it if it is an identifier) (at parameters.low_carbon_max.values.2021-01-01)",
        ),
        (
            "values: {2021-01-01: 0.6}",
            "values: {2021-01-01: 99999999999999999999}",
            48,
            26,
            "the integer 99999999999999999999 does not fit in 64 bits (quote it if it is an identifier) (at parameters.low_carbon_max.values.2021-01-01)",
        ),
        (
            "values: {2021-01-01: 0.6}",
            "values: {2021-01-01: 1.0e+999}",
            48,
            26,
            "the number 1.0e+999 is too large for a 64-bit float (it would read as infinity) (at parameters.low_carbon_max.values.2021-01-01)",
        ),
        (
            "values: {2021-01-01: 0.6}",
            'values: {2021-01-01: "1/0"}',
            48,
            26,
            "bad value '1/0': division by zero (at parameters.low_carbon_max.values.2021-01-01)",
        ),
        (
            '"13": 0.45',
            '"13": "1e308 * 10"',
            59,
            19,
            "bad value '1e308 * 10': not a finite number (at parameters.published_industry_intensity.table.13)",
        ),
        (
            "values: {2021-01-01: 0.6}",
            'values: {2021-01-01: "' + "-" * 3000 + '1"}',
            48,
            26,
            "bad value '---------------------------------------…' (3,001 characters): formula nested too deeply (more than 200 levels) (at parameters.low_carbon_max.values.2021-01-01)",
        ),
        # line 139 is `    value: k` of the rating `level`
        (
            "    value: k\n",
            '    value: "' + "-" * 3000 + 'k"\n',
            139,
            12,
            "formula nested too deeply (more than 200 levels) (at ratings.level.value)",
        ),
        (
            "    value: k\n",
            '    value: "' + "~" * 3000 + 'k"\n',
            139,
            12,
            "formula nested too deeply (more than 200 levels) (at ratings.level.value)",
        ),
        (
            "    value: k\n",
            '    value: "' + "**".join(["k"] * 300) + '"\n',
            139,
            12,
            "formula nested too deeply (more than 200 levels) (at ratings.level.value)",
        ),
    ],
    ids=[
        "impossible-date",
        "unknown-tag",
        "python-tag",
        "set-tag",
        "self-alias-seq",
        "self-alias-map",
        "unknown-alias",
        "5000-digit-int",
        "int-over-64-bits",
        "float-overflow",
        "param-1/0",
        "param-inf",
        "param-3000-deep",
        "expr-3000-deep",
        "expr-3000-tilde",
        "expr-power-tower",
    ],
)
def test_rulebooks_that_crashed_validate_give_located_errors(tmp_path, old, new, line, col, message):
    path = book(tmp_path, old, new)
    code, stderr = validate(path)
    assert code == 1
    assert located(stderr) == [(line, col, message)], stderr
    assert stderr == f"{path}:{line}:{col}: error: {message}\n1 error in 1 rulebook\n"


def test_merge_key_and_plain_equals_sign_are_not_internal_errors(tmp_path):
    path = book(tmp_path, "jurisdiction: Huzhou, Zhejiang", "jurisdiction: {<<: {a: 1}, b: =}")
    code, stderr = validate(path)
    assert code == 1
    assert located(stderr) == [
        (12, 16, "YAML merge keys ('<<') are not supported; write the values out (at jurisdiction)"),
    ]


def test_control_character_and_second_document_are_located(tmp_path):
    path = book(tmp_path, "jurisdiction: Huzhou, Zhejiang", "jurisdiction: Huzhou\x07")
    assert validate(path) == (
        1,
        f"{path}:12:21: error: YAML syntax: unacceptable character #x0007: control characters are not allowed\n1 error in 1 rulebook\n",
    )
    path = book(tmp_path, "jurisdiction: Huzhou, Zhejiang", "jurisdiction: Huzhou\n---\nid: again")
    code, stderr = validate(path)
    assert code == 1 and located(stderr)[0][:2] == (13, 1)
    assert "a rulebook is one YAML document; a second one starts here" in stderr


# -- #11.2: bounded loading ---------------------------------------------------------------------


def run_limited(script: str, *args: str, memory_mb: int = 1024, timeout: float = 60) -> dict:
    """Run ``script`` in a child limited to ``memory_mb`` of address space; a hang fails the test."""
    # VmHWM is this process's own peak (ru_maxrss would carry the parent's peak across fork + exec,
    # which is what a child of a large pytest process reports)
    prelude = (
        "import resource, sys, json, time\n"
        "def _hwm_mb():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1]) / 1024\n"
        "    return 0.0\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({memory_mb} << 20, {memory_mb} << 20))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", prelude + script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "RULEENGINE_CACHE": "off"},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


BOMB_PROBE = """
from click.testing import CliRunner
from ruleengine.cli import main
t0 = time.perf_counter()
r = CliRunner().invoke(main, ["validate", sys.argv[1]])
print(json.dumps({"code": r.exit_code, "stderr": r.stderr, "seconds": time.perf_counter() - t0,
                  "maxrss_mb": _hwm_mb()}))
"""


def test_alias_bomb_fails_fast_with_bounded_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB, encoding="utf-8")
    assert len(BOMB.encode()) == 342
    out = run_limited(BOMB_PROBE, str(path))
    # the 5th level (e: 9**5 = 59,049 values, plus a..d) fits; the first alias of f crosses 100,000
    assert out["code"] == 1
    assert located(out["stderr"]) == [
        (
            6,
            8,
            "the document expands to more than 100,000 values through YAML aliases (a 'billion laughs' bomb?) (at f[0])",
        )
    ]
    assert out["maxrss_mb"] < 400  # measured 100-210 MB (interpreter and imports), under a 1 GB address-space limit


def test_alias_bomb_inside_the_huzhou_book(tmp_path):
    bomb = BOMB.replace("\n", "\n  ").replace("a: &a", "  a: &a", 1).rstrip() + "\n"
    path = book(tmp_path, "jurisdiction: Huzhou, Zhejiang", "jurisdiction: Huzhou\nx-bomb:\n" + bomb)
    out = run_limited(BOMB_PROBE, str(path))
    assert out["code"] == 1
    (loc,) = located(out["stderr"])
    assert loc[2].startswith("the document expands to more than 100,000 values through YAML aliases")
    assert loc[2].endswith("(at x-bomb.f[0])")


def test_aliases_within_bounds_still_work():
    doc = source.parse_text("a: &a {x: 1, y: [2, 3]}\nb: *a\nc: [*a, *a]\n", "t.yaml")
    assert doc.data == {"a": {"x": 1, "y": [2, 3]}, "b": {"x": 1, "y": [2, 3]}, "c": [doc.data["a"]] * 2}
    assert doc.data["b"] is not doc.data["a"]  # materialised copies, each with its own path
    assert str(doc.loc(("c", 1, "y", 0))) == "t.yaml:1:18"  # located at the anchor's text


def test_document_size_is_bounded_and_located(tmp_path):
    limits = source.LoadLimits(max_bytes=1000)
    text = "".join(f"k{i:04d}: value {i:04d}\n" for i in range(100))  # 18 bytes a line
    with pytest.raises(RulebookError) as err:
        source.parse_text(text, "big.yaml", limits)
    # byte 1,000 is on line 56 (55 lines x 18 bytes = 990), column 11
    assert [d.format() for d in err.value.diagnostics] == [
        "big.yaml:56:11: error: the file is 1,800 bytes; a rulebook may have at most 1,000 (this is where the limit is crossed)"
    ]
    # the default limit, through the CLI: a 3 MB rulebook
    path = tmp_path / "huge.yaml"
    path.write_text("id: x\n" + "# padding\n" * 300_000 + "title: y\n", encoding="utf-8")
    code, stderr = validate(path)
    assert code == 1 and "a rulebook may have at most 2,097,152" in stderr
    assert located(stderr)[0][:2] == (209_716, 7)  # 6 + 209,714 x 10 = 2,097,146 bytes; 6 more: column 7


def test_nesting_depth_is_bounded_and_located(tmp_path):
    path = book(tmp_path, "jurisdiction: Huzhou, Zhejiang", "jurisdiction: " + "[" * 40 + "]" * 40)
    code, stderr = validate(path)
    # jurisdiction's value is at depth 2 (the root mapping is 1): the 32nd '[' (column 15 + 31)
    # would be level 33, inside 31 lists
    assert code == 1
    assert located(stderr) == [
        (12, 46, "nested more than 32 levels deep (at jurisdiction" + "[0]" * 31 + ")"),
    ]
    # depth brought in by aliases counts too: a is 11 levels high (10 lists and a number), b 21,
    # c 31 (at level 2: 32, allowed), d 41: refused at its alias '*c'
    deep = "a: &a " + "[" * 10 + "1" + "]" * 10 + "\nb: &b " + "[" * 10 + "*a" + "]" * 10
    deep += "\nc: &c " + "[" * 10 + "*b" + "]" * 10 + "\n"
    assert source.parse_text(deep, "t.yaml").data["c"]
    deep += "d: &d " + "[" * 10 + "*c" + "]" * 10 + "\n"
    with pytest.raises(RulebookError) as err:
        source.parse_text(deep, "t.yaml")
    assert str(err.value) == "t.yaml:4:17: error: nested more than 32 levels deep (at d" + "[0]" * 10 + ")"


def test_string_length_is_bounded_and_located(tmp_path):
    path = book(tmp_path, "jurisdiction: Huzhou, Zhejiang", "jurisdiction: " + "x" * 60_000)
    code, stderr = validate(path)
    assert code == 1
    assert located(stderr) == [(12, 15, "a value of 60,000 characters; the limit is 50,000 (at jurisdiction)")]
    key = "k" * 50_001
    with pytest.raises(RulebookError, match=r"t.yaml:1:1: error: a value of 50,001 characters"):
        source.parse_text(f"{key}: 1\n", "t.yaml")


def test_many_plain_values_are_bounded():
    text = "a: [" + ",".join(["0"] * 100_001) + "]\n"
    with pytest.raises(
        RulebookError, match=r"t.yaml:1:\d+: error: the document expands to more than 100,000 values \(at a\[\d+\]\)"
    ):
        source.parse_text(text, "t.yaml")


def test_bundled_rulebooks_load_within_the_limits():
    for path in sorted((ROOT / "rulebooks").rglob("*.yaml")):
        doc = source.parse_text(path.read_text(encoding="utf-8"), path.name)
        assert doc.data  # and nothing refused


# -- _limits: the checks the compiler can call ---------------------------------------------------


def test_formula_problem_direct():
    assert _limits.formula_problem("k * 2 + max(a, b)") is None
    assert _limits.formula_problem("k +") is None  # a syntax error is the compiler's to word
    assert _limits.formula_problem("-" * 3000 + "1") == "formula nested too deeply (more than 200 levels)"
    assert _limits.formula_problem("+".join(["k"] * 250)) == "formula nested too deeply (more than 200 levels)"
    assert _limits.formula_problem("+".join(["k"] * 150)) is None  # 150 levels
    assert _limits.formula_problem("k" * 4001) == "formula longer than 4000 characters"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), ("44/12", 44 / 12), ("-0.5 * 2", -1.0), ("-" * 150 + "1", 1.0), ("--" * 90 + "1", 1.0)],
)
def test_constant_value_direct(value, expected):
    assert _limits.constant_value(value) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1/0", "division by zero"),
        ("1/(2-2)", "division by zero"),
        ("1e308*10", "not a finite number"),
        (float("nan"), "not a finite number"),
        (True, "a number is needed, not true/false"),
        ("2**3", "only numbers and + - * / are allowed in a constant"),
        ("__import__('os')", "only numbers and + - * / are allowed in a constant"),
        ("-" * 3000 + "1", "formula nested too deeply (more than 200 levels)"),
        ("99999999999999999999 + 1", "a number that does not fit in 64 bits (it would overflow when rated)"),
        ("k +", "not a number or a constant formula"),
    ],
)
def test_constant_value_refusals(value, reason):
    with pytest.raises(ValueError) as err:
        _limits.constant_value(value)
    assert str(err.value) == reason


HUGE_PROBE = """
from click.testing import CliRunner
from ruleengine.cli import main
r = CliRunner().invoke(main, ["validate", sys.argv[1]])
print(json.dumps({"code": r.exit_code, "stderr": r.stderr,
                  "maxrss_mb": _hwm_mb()}))
"""


def test_a_huge_rulebook_file_is_never_read_whole(tmp_path):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as fh:  # 3 GB, sparse: "id: x" then zeros
        fh.write(b"id: x\n")
        fh.truncate(3_000_000_000)
    out = run_limited(HUGE_PROBE, str(path), memory_mb=512)
    assert out["code"] == 1
    # line 2 starts at byte 6; the limit (2,097,152 bytes) is crossed 2,097,146 bytes into it
    assert out["stderr"] == (
        f"{path}:2:2097147: error: the file is 3,000,000,000 bytes; a rulebook may have at most 2,097,152 "
        "(this is where the limit is crossed)\n1 error in 1 rulebook\n"
    )
    assert out["maxrss_mb"] < 400  # the 512 MB address-space limit is the real bound; a 3 GB read would fail


def test_text_that_is_not_utf8_is_located(tmp_path):
    path = tmp_path / "gbk.yaml"
    path.write_bytes(
        HUZHOU.replace("Huzhou, Zhejiang", "湖州, Zhejiang")
        .encode("utf-8")
        .replace("湖州".encode(), "湖州".encode("gbk"))
    )
    code, stderr = validate(path)
    assert code == 1
    # every 湖州 is now GBK (0xBA 0xFE 0xD6 0xDD); the first is on line 1 after
    # "# Huzhou Industrial Carbon Efficiency Code (" (44 characters): column 45
    assert stderr == (
        f"{path}:1:45: error: not UTF-8 text: invalid start byte (byte 0xba; save the file as UTF-8)\n"
        "1 error in 1 rulebook\n"
    )


@pytest.mark.parametrize(
    ("literal", "message"),
    [
        ("99999999999999999999", "a number that does not fit in 64 bits (it would overflow when rated)"),
        ("1e999", "a number too large for a 64-bit float (it reads as infinity)"),
    ],
)
def test_number_literals_in_formulas_that_cannot_be_rated_are_located(tmp_path, literal, message):
    # line 81 is `    expr: scope1_tco2 + scope2_tco2` (emissions_tco2); the value starts at column 11
    # and the literal 28 characters into it ("scope1_tco2 + scope2_tco2 * "): column 39
    path = book(tmp_path, "expr: scope1_tco2 + scope2_tco2", f"expr: scope1_tco2 + scope2_tco2 * {literal}")
    code, stderr = validate(path)
    assert code == 1
    assert stderr == f"{path}:81:39: error: {message} (at variables.emissions_tco2.expr)\n1 error in 1 rulebook\n"
