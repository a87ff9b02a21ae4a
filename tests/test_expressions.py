"""The formula language: whitelist (parse) and type/unit inference (infer).

Offsets are 0-based character positions in the formula as written; each expected offset is
counted by hand in a comment (``x + a // b``: x=0, ' '=1, +=2, ' '=3, a=4 ...).
"""

from __future__ import annotations

import pytest

from ruleengine.rulebook import expressions as ex
from ruleengine.rulebook.expressions import LITERAL, UNKNOWN, Symbol
from ruleengine.rulebook.units import Unit

U = Unit.parse


def rejected(text: str) -> list[tuple[str, int]]:
    """The (message, offset) problems parse() reports; fails the test if the text is accepted."""
    with pytest.raises(ex.ExpressionProblems) as info:
        ex.parse(text)
    return [(p.message, p.offset) for p in info.value.problems]


def only_problem(text: str) -> tuple[str, int]:
    found = rejected(text)
    assert len(found) == 1, found
    return found[0]


# -- the whitelist ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ("x.__class__", "attribute access ('.') is not allowed in formulas", 0),
        # 1=0 ' '=1 +=2 ' '=3 x=4: the Attribute node starts at x
        ("1 + x.__class__", "attribute access ('.') is not allowed in formulas", 4),
        ("__x", "names starting with '_' are not allowed: '__x'", 0),
        ("1 + __builtins__", "names starting with '_' are not allowed: '__builtins__'", 4),
        ("lambda: 1", "lambda is not allowed in formulas", 0),
        # 2 ** 1000: the exponent starts at 5
        ("2 ** 1000", "'**' needs a constant exponent between -8 and 8", 5),
        ("x ** y", "'**' needs a constant exponent between -8 and 8", 5),
        # right-associative: 2 ** (8 ** 8); the exponent '8 ** 8' starts at 5
        ("2 ** 8 ** 8", "'**' needs a constant exponent between -8 and 8", 5),
        ("x ** -9", "'**' needs a constant exponent between -8 and 8", 5),
        ("[1, 2]", "lists are not allowed in formulas; declare a scale or a table parameter instead", 0),
        ("{'a': 1}", "dicts are not allowed in formulas; declare a table parameter instead", 0),
        ("(1, 2)", "tuples are not allowed in formulas", 0),
        ("[x for x in y]", "'ListComp' is not allowed in formulas", 0),
        ("{x: 1 for x in y}", "'DictComp' is not allowed in formulas", 0),
        ("(x for x in y)", "'GeneratorExp' is not allowed in formulas", 0),
        # (a:=1): the NamedExpr starts after the '(' at 1
        ("(a := 1)", "assignment is not allowed in formulas", 1),
        ("a = 1", "'Assign' is not allowed in formulas", 0),
        ("import os", "'Import' is not allowed in formulas", 0),
        ("True", "constant True is not allowed", 0),
        ("None", "constant None is not allowed", 0),
        # x[1]: the slice '1' is at 2
        ("x[1]", "a table is indexed by a quoted key or a category name: ncv['raw_coal'], grid_ef[grid_region]", 2),
        ("x[0:1]", "a table is indexed by a quoted key or a category name: ncv['raw_coal'], grid_ef[grid_region]", 2),
        ("f(x)[1]", "only a table parameter can be indexed: name['key']", 0),
    ],
)
def test_forbidden_syntax(text: str, message: str, offset: int) -> None:
    assert only_problem(text) == (message, offset)


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("a and b", 0),
        ("a or b", 0),
        # 1 + (a and b): the BoolOp starts after '(' at 5
        ("1 + (a and b)", 5),
    ],
)
def test_and_or_point_to_all_of_any_of(text: str, offset: int) -> None:
    message, at = only_problem(text)
    assert "all_of" in message and "any_of" in message
    assert at == offset


@pytest.mark.parametrize(("text", "offset"), [("1 if a else 2", 0), ("x + (1 if a else 2)", 5)])
def test_if_else_points_to_where(text: str, offset: int) -> None:
    message, at = only_problem(text)
    assert "where(c, x, y)" in message
    assert at == offset


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a // b", "'//' is not allowed; use round() or a scale"),
        ("a % b", "'%' is not allowed in formulas"),
        ("a in b", "'in' is not allowed; compare with == and combine with any_of()"),
        ("a not in b", "'not in' is not allowed; compare with != and combine with all_of()"),
        ("a is b", "'is' is not allowed; use == or is_missing()"),
    ],
)
def test_forbidden_operators_at_start(text: str, message: str) -> None:
    # The operator's expression starts at 0.
    assert only_problem(text) == (message, 0)


def test_forbidden_operator_offset_follows_leading_spaces() -> None:
    # 10 spaces then 'x // y': the BinOp starts at 10.
    assert only_problem(" " * 10 + "x // y") == ("'//' is not allowed; use round() or a scale", 10)


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        # x=0 ' '=1 +=2 ' '=3 a=4: 'a // b' starts at 4
        ("x + a // b", 4),
        ("x + a % b", 4),
        # x + (a in b): the comparison starts after '(' at 5
        ("x + (a in b)", 5),
        ("x * (a not in b)", 5),
        ("x + (a is b)", 5),
    ],
)
def test_forbidden_operator_offset_inside_formula(text: str, offset: int) -> None:
    assert only_problem(text)[1] == offset


@pytest.mark.parametrize(
    ("text", "name", "offset"),
    [
        # f(x=1): the keyword argument x=1 spans 2..4
        ("f(x=1)", "f", (2, 4)),
        # min(a, b=2): b=2 spans 7..9
        ("min(a, b=2)", "min", (7, 9)),
    ],
)
def test_keyword_arguments_rejected(text: str, name: str, offset: tuple[int, int]) -> None:
    message, at = only_problem(text)
    assert message == f"{name}() takes no keyword arguments"
    assert offset[0] <= at <= offset[1]


def test_star_arguments_rejected() -> None:
    messages = [m for m, _ in rejected("f(*a)")]
    assert "'*' arguments are not allowed" in messages


def test_too_long() -> None:
    limit = ex.MAX_EXPRESSION_LENGTH
    ex.parse("x" * limit)  # exactly at the limit is fine
    assert only_problem("x" * (limit + 1)) == (f"formula longer than {limit} characters", 0)


def test_string_constant_too_long() -> None:
    # a 101-character string constant; the string starts at 4
    assert only_problem("1 + '" + "a" * 101 + "'") == ("string constant too long", 4)


def test_deep_nesting_rejected_at_first_node_too_deep() -> None:
    # Python's own parser stops nested calls first ("too many nested parentheses", at the 201st
    # opening parenthesis, offset 4 * 200 + 3 = 803); either way the formula is rejected, located.
    text = "abs(" * 210 + "x" + ")" * 210
    assert rejected(text) == [("syntax error: too many nested parentheses", 803)]


def test_nesting_within_limit_is_fine() -> None:
    # 58 nested calls: the innermost name x is at depth 59
    ex.parse("abs(" * 58 + "x" + ")" * 58)
    # parentheses alone do not nest the tree
    ex.parse("(" * 150 + "x" + ")" * 150)


def test_deep_unary_nesting_reported_once_where_it_happens() -> None:
    # '-' * 210 + 'x': Expr depth 0, the minus at offset k is depth k + 1, so the first node
    # beyond MAX_DEPTH = 200 is the minus at offset 200.
    assert ex.MAX_DEPTH == 200
    assert rejected("-" * 210 + "x") == [("formula nested too deeply", 200)]


@pytest.mark.parametrize("text", ["a; b", "1; import os"])
def test_multiple_statements(text: str) -> None:
    assert only_problem(text) == ("a formula is one expression: no ';' or several lines of statements", 0)


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        # 'a +' : Python reports the error after the '+', at 3
        ("a +", 3),
        # 'x+1)' : the unmatched ')' is at 3
        ("x+1)", 3),
        # 'a b' : the unexpected name b is at 2
        ("a b", 2),
    ],
)
def test_syntax_errors(text: str, offset: int) -> None:
    message, at = only_problem(text)
    assert message.startswith("syntax error: ")
    assert at == offset


def test_empty_formula() -> None:
    assert only_problem("   ") == ("empty formula", 0)


def test_several_problems_are_all_reported() -> None:
    found = rejected("(a and b) + x.y")
    # (a and b): the BoolOp starts at 1; x.y: x at 12
    assert [at for _, at in found] == [1, 12]


def test_multiline_formula_offsets_count_line_breaks() -> None:
    # A folded YAML formula reads as one expression. 'a\n+ __b': a=0 \n=1 +=2 ' '=3 __b=4
    assert only_problem("a\n+ __b") == ("names starting with '_' are not allowed: '__b'", 4)


def test_accepted_formula_lists_names_and_calls() -> None:
    e = ex.parse("where(k > 1, ncv['coal'] * coal, prev(coal, 0)) + -x ** 2")
    assert e.names == ["k", "ncv", "coal", "x"]
    assert e.calls == ["where", "prev"]


# -- type and unit inference ----------------------------------------------------------------------

SYMBOLS: dict[str, Symbol] = {
    "emissions": Symbol("variable", ex.NUMBER, U("tCO2")),
    "value_added": Symbol("input", ex.NUMBER, U("10k CNY")),
    "coal": Symbol("input", ex.NUMBER, U("t")),
    "elec": Symbol("input", ex.NUMBER, U("MWh")),
    "anything": Symbol("input", ex.NUMBER, UNKNOWN),
    "k": Symbol("variable", ex.NUMBER, U("1")),
    "flag": Symbol("variable", ex.BOOLEAN, U("1")),
    "grid_ef": Symbol("parameter", ex.NUMBER, U("tCO2/MWh")),
    "ncv": Symbol("table", ex.NUMBER, U("GJ/t"), ("coal", "diesel", "gas"), {"gas": U("GJ/10k Nm3")}),
    "ef": Symbol("table", ex.NUMBER, U("tCO2/MWh"), ("east", "national")),
    "region": Symbol("input", ex.CATEGORY, UNKNOWN),
    "industry": Symbol("input", ex.CATEGORY, UNKNOWN),
    "firm_id": Symbol("input", ex.STRING, UNKNOWN),
    "score": Symbol("scale", ex.NUMBER, U("1"), scale_input=U("tCO2/10k CNY")),
    "bench": Symbol("benchmark", ex.NUMBER, U("tCO2/10k CNY")),
}
NAMES = sorted(SYMBOLS)


def infer(text: str) -> tuple[ex.Inferred, list[tuple[str, int]]]:
    got, problems = ex.infer(ex.parse(text), SYMBOLS.get, NAMES)
    return got, [(p.message, p.offset) for p in problems]


def unit_of(text: str) -> object:
    got, problems = infer(text)
    assert problems == []
    return got.unit


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("emissions / value_added", "tCO2/10k CNY"),
        ("grid_ef * elec", "tCO2"),
        ("coal * ncv['coal']", "GJ"),
        ("ncv['gas']", "GJ/10k Nm3"),  # a key with its own unit
        ("1 / value_added", "1/10k CNY"),
        ("emissions / value_added / bench", "1"),
        ("emissions ** 2", "tCO2^2"),
        ("value_added ** -1", "1/10k CNY"),
        ("emissions * 2", "tCO2"),  # literals are dimensionless in products
        ("(emissions + 1) * 2", "tCO2"),  # literals take the unit of what they are added to
        ("1 + emissions", "tCO2"),
        ("-emissions", "tCO2"),
        ("where(k > 1, emissions, 0)", "tCO2"),
        ("where(k > 1, 0, emissions)", "tCO2"),
        ("ef[region]", "tCO2/MWh"),
        ("score(emissions / value_added)", "1"),
        ("prev(emissions)", "tCO2"),
        ("prev(emissions, 0)", "tCO2"),
        ("baseline(emissions, 2020)", "tCO2"),
        ("baseline(emissions, 2020, emissions)", "tCO2"),
        ("safe_div(emissions, value_added, 0)", "tCO2/10k CNY"),
        ("min(emissions, 0)", "tCO2"),
        ("coalesce(anything, ncv['coal'])", "GJ/t"),
        ("round(emissions, 2)", "tCO2"),
        ("abs(emissions)", "tCO2"),
        ("clip(k, 0, 1)", "1"),
    ],
)
def test_units_flow_through_formulas(text: str, unit: str) -> None:
    assert unit_of(text) == U(unit)


def test_literal_arithmetic_stays_literal() -> None:
    assert unit_of("2 / 4") is LITERAL
    assert unit_of("safe_div(1, 2, 0)") is LITERAL


def test_unknown_unit_spreads_through_products() -> None:
    assert unit_of("anything * emissions") is UNKNOWN
    # but a sum takes the known side
    assert unit_of("anything + emissions") == U("tCO2")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("emissions > 3", ex.BOOLEAN),
        ("all_of(k > 1, flag)", ex.BOOLEAN),
        ("not flag", ex.BOOLEAN),
        ("is_missing(emissions)", ex.BOOLEAN),
        ("industry == '3011'", ex.BOOLEAN),
        ("prefix(industry, 2)", ex.CATEGORY),
        ("emissions + 1", ex.NUMBER),
    ],
)
def test_types(text: str, expected: str) -> None:
    got, problems = infer(text)
    assert problems == []
    assert got.type == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        # the BinOp starts at 0
        ("emissions + value_added", ("unit mismatch: '+' of tCO2 and 10k CNY", 0)),
        ("emissions - k", ("unit mismatch: '-' of tCO2 and 1", 0)),
        # the right side of the comparison 'value_added' is at 12
        ("emissions > value_added", ("unit mismatch: comparing tCO2 with 10k CNY", 12)),
        # 1 < k < emissions: k (1) vs emissions (tCO2); emissions is at 8
        ("1 < k < emissions", ("unit mismatch: comparing 1 with tCO2", 8)),
        ("where(k > 1, emissions, value_added)", ("unit mismatch: where() branches in tCO2 and 10k CNY", 0)),
        ("prev(emissions, value_added)", ("unit mismatch: prev() of tCO2 with a fallback in 10k CNY", 0)),
        ("baseline(emissions, 2020, value_added)", ("unit mismatch: baseline() of tCO2 with a fallback in 10k CNY", 0)),
        # the if_zero argument 'emissions' starts at 33
        (
            "safe_div(emissions, value_added, emissions)",
            ("unit mismatch: safe_div() gives tCO2/10k CNY, the if_zero value is in tCO2", 33),
        ),
        # score(emissions): the argument is at 6
        ("score(emissions)", ("unit mismatch: score() expects tCO2/10k CNY, got tCO2", 6)),
        # max(emissions, value_added): value_added is at 15
        ("max(emissions, value_added)", ("unit mismatch: max() of tCO2 and 10k CNY", 15)),
        ("emissions ** 0.5", ("a quantity in tCO2 can only be raised to a whole power", 0)),
    ],
)
def test_unit_mismatches(text: str, problem: tuple[str, int]) -> None:
    assert infer(text)[1] == [problem]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        # ef['west']: the key 'west' is at 3
        ("ef['west']", ("table 'ef' has no key 'west' (did you mean 'east'?)", 3)),
        ("ef[k]", ("table 'ef' must be indexed by a category (or a quoted key), not a number", 3)),
        ("ef[firm_id]", ("table 'ef' must be indexed by a category (or a quoted key), not a string", 3)),
        ("ncv[region]", ("table 'ncv' has keys with different units (gas); index it with a quoted key", 4)),
        ("ef", ("'ef' is a table: index it, e.g. ef['east']", 0)),
        ("k[region]", ("'k' is not a table and cannot be indexed", 0)),
        ("score", ("'score' is a scale: call it, e.g. score(x)", 0)),
        ("score(1, 2)", ("scale score() takes exactly one argument", 0)),
        # industry == 3011: the number 3011 is at 12
        ("industry == 3011", ("compare a category with a quoted code, e.g. industry == '3011'", 12)),
        ("industry < '3011'", ("categories can only be compared with == and !=", 11)),
        ("not k", ("the operand of 'not' must be a boolean, not a number", 4)),
        ("where(k, 1, 2)", ("the condition of where() must be a boolean, not a number", 6)),
        ("all_of(k, flag)", ("an argument of all_of() must be a boolean, not a number", 7)),
        ("emissions + 'a'", ("the right side of '+' must be a number, not a string", 12)),
        ("prefix(industry, 0)", ("prefix() needs a whole number of characters from 1 to 20", 17)),
        ("baseline(emissions, 2020.5)", ("baseline() needs a year as a whole number, e.g. baseline(x, 2020)", 20)),
        ("round(emissions, k)", ("round() digits must be a whole number", 17)),
    ],
)
def test_table_scale_and_type_problems(text: str, problem: tuple[str, int]) -> None:
    assert infer(text)[1] == [problem]


def test_string_repetition_is_rejected_before_evaluation() -> None:
    # 'ab' * 10**9 would allocate 2 GB if it ever reached Python; the type check stops it.
    _, problems = infer("'ab' * 1000000000")
    assert problems == [("the left side of '*' must be a number, not a string", 0)]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("emisions / value_added", ("unknown name 'emisions' (did you mean 'emissions'?)", 0)),
        # 1 + valu_added: the name is at 4
        ("1 + valu_added", ("unknown name 'valu_added' (did you mean 'value_added'?)", 4)),
        ("zzz", ("unknown name 'zzz'", 0)),
        ("mni(k, 1)", ("unknown function 'mni' (did you mean 'min'?)", 0)),
        ("scroe(k)", ("unknown function 'scroe' (did you mean 'score'?)", 0)),
        (
            "prev()",
            (
                "prev() takes 1 to 2 arguments, got 0: prev(x, otherwise?): the same firm's "
                "value of x in the previous year",
                0,
            ),
        ),
        (
            "where(k > 1, 1)",
            ("where() takes 3 arguments, got 2: where(condition, if_true, if_false), element by element", 0),
        ),
    ],
)
def test_unknown_names_and_functions(text: str, problem: tuple[str, int]) -> None:
    assert infer(text)[1] == [problem]


@pytest.mark.parametrize("text", ["open('x')", "eval('1')", "exec('x')", "getattr(k, 'x')"])
def test_non_whitelisted_calls_are_unknown_functions(text: str) -> None:
    name = text.split("(")[0]
    got, problems = infer(text)
    assert problems == [(f"unknown function '{name}'", 0)]
    assert got.unit is UNKNOWN


def test_dunder_call_is_rejected_by_parse() -> None:
    with pytest.raises(ex.ExpressionProblems) as info:
        ex.parse("__import__('os')")
    assert [(p.message, p.offset) for p in info.value.problems] == [
        ("names starting with '_' are not allowed: '__import__'", 0)
    ]


def test_dunder_call_is_rejected_by_compile() -> None:
    import ruleengine
    from ruleengine.errors import RulebookError

    text = """
id: t
title: t
version: 1.0.0
effective: 2021-01-01
sources: {s: {title: t, status: assumed}}
inputs:
  firm_id: {type: string, required: true}
  year: {type: integer, required: true}
variables:
  scope1_tco2: {expr: "__import__('os')", unit: tCO2}
  scope2_tco2: {expr: "0", unit: tCO2}
  emissions_tco2: {expr: "0", unit: tCO2}
  energy_tce: {expr: "0", unit: tce}
ratings:
  r: {value: scope2_tco2, closed: right, better: lower,
      bands: [{id: a, upper: 1}, {id: b, lower: 1}]}
"""
    with pytest.raises(RulebookError) as info:
        ruleengine.compile_text(text)
    # line 11 (the text starts with a newline) is the scope1_tco2 line: 2 spaces, 'scope1_tco2:'
    # (cols 3-14), ' {expr: ' (cols 15-22), the quote at 23, the formula's first character at 24
    assert [d.format() for d in info.value.errors] == [
        "<string>:11:24: error: names starting with '_' are not allowed: '__import__' (at variables.scope1_tco2.expr)"
    ]
