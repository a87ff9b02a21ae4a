"""The compiled formula evaluator (closures built once per plan) against the reference interpreter
(simpleeval's walk, ``evaluator._ArrayEval``): bit-identical values, the same notes (reasons and
fallbacks, in the same order) on every bundled rulebook, over the bundled sample, a generated
portfolio with defects, one-firm ratings against a run's tables and every piece of every formula
on single rows (the audit trail's ``evaluate_node``); formulas outside the language are refused
before either evaluator sees them."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pytest

import ruleengine
from ruleengine import pipeline
from ruleengine.engine import evaluator
from ruleengine.engine.evaluator import Frame, compiled, row_frame
from ruleengine.errors import RulebookError
from ruleengine.io.data import Category
from ruleengine.io.sample import generate

ROOT = Path(__file__).resolve().parents[1]
BOOKS = sorted(p.stem for p in (ROOT / "rulebooks").glob("*.yaml"))
SAMPLE = ROOT / "examples" / "sample_firms.csv"


def _bits(v: object) -> object:
    """A value as comparable bits: arrays by dtype, shape and bytes (NaN payloads included)."""
    if isinstance(v, Category):
        return ("category", np.asarray(v.codes).tobytes(), list(v.labels))
    if isinstance(v, np.ndarray):
        return ("array", str(v.dtype), v.shape, np.ascontiguousarray(v).tobytes())
    if isinstance(v, evaluator._BoundTable):  # a table parameter bound to its frame: by name
        return ("table", v.name)
    if isinstance(v, tuple):
        return tuple(_bits(x) for x in v)
    if isinstance(v, float | np.floating):
        return ("float", np.float64(v).tobytes())
    return v


def _snapshot(res: ruleengine.Results) -> dict[str, object]:
    ev = res.evaluation
    assert ev is not None
    out = io.BytesIO()
    res.write_csv(out)
    return {
        "csv": out.getvalue().decode("utf-8"),
        "values": {k: _bits(v) for k, v in ev.values.items()},
        "levels": {k: _bits(v) for k, v in ev.levels.items()},
        "aux": {k: _bits(v) for k, v in ev.aux.items()},
        "rated": _bits(ev.rated),
        "reasons": (_bits(ev.reasons[0]), ev.reasons[1]),
        "fallbacks": (_bits(ev.fallbacks[0]), ev.fallbacks[1]),
    }


def _both(monkeypatch: pytest.MonkeyPatch, rate) -> tuple[dict[str, object], dict[str, object]]:
    monkeypatch.setattr(Frame, "reference", True)
    ref = _snapshot(rate())
    monkeypatch.setattr(Frame, "reference", False)
    got = _snapshot(rate())
    return ref, got


def _assert_same(ref: dict[str, object], got: dict[str, object]) -> None:
    for key in ref:
        assert got[key] == ref[key], key


@pytest.fixture(scope="module")
def messy() -> dict[str, np.ndarray]:
    # 1.5% of the rows with one defect each (blank required cells, text in number columns, zeros,
    # duplicates, ...): the data-problem, division-by-zero and fallback paths
    cols = generate(300, [2021, 2022, 2023], seed=7, messy=0.015)
    for name in ("value_added_10k_cny", "revenue_10k_cny", "output_value_10k_cny", "electricity_mwh"):
        col = np.array(cols[name], dtype=object if cols[name].dtype == object else np.float64)
        col[5::37] = 0  # zero denominators: division by zero, recorded per row
        cols[name] = col
    return cols


@pytest.mark.parametrize("name", BOOKS)
def test_bundled_rulebooks_identical_over_the_sample_and_a_generated_portfolio(name, messy, monkeypatch):
    plan = ruleengine.load(name)
    _assert_same(*_both(monkeypatch, lambda: pipeline.rate(plan, SAMPLE)))
    ref, got = _both(monkeypatch, lambda: pipeline.rate(plan, dict(messy)))
    _assert_same(ref, got)
    reasons, fallbacks = ref["reasons"][1], ref["fallbacks"][1]  # type: ignore[index]
    codes = {note.code for combo in [*reasons, *fallbacks] for note in combo}
    assert {"data", "not_computed"} <= codes  # the error paths were taken
    assert "division_by_zero" in codes or name != "huzhou"


@pytest.mark.parametrize("name", BOOKS)
def test_one_firm_against_a_runs_tables_identical(name, monkeypatch):
    plan = ruleengine.load(name)
    cols = generate(200, [2022, 2023], seed=3)
    tables = pipeline.rate(plan, dict(cols)).tables
    rows = [_json_row(cols, i) for i in (10, 11)]  # firm 5's two years, as JSON gives them
    for some in (rows, rows[1:]):
        ref, got = _both(monkeypatch, lambda some=some: pipeline.rate(plan, some, benchmarks=tables))
        _assert_same(ref, got)


@pytest.mark.parametrize("name", BOOKS)
def test_odd_single_rows_identical(name, monkeypatch):
    """One row at a time through the compiled number paths (two numbers, a number and a one-row
    column, coalesce of one value, folded table keys): a row without a year, an unknown industry,
    only the required inputs, zero denominators, values that overflow; with tables and without."""
    plan = ruleengine.load(name)
    cols = generate(80, [2022, 2023], seed=5)
    tables = pipeline.rate(plan, dict(cols)).tables
    base = _json_row(cols, 3)
    rows = [
        base,
        {**base, "year": None},
        {**base, "industry": "9999"},
        {k: (v if k in ("firm_id", "year", "industry", "value_added_10k_cny") else None) for k, v in base.items()},
        {**base, "value_added_10k_cny": 0, "revenue_10k_cny": 0, "output_value_10k_cny": 0, "electricity_mwh": 0},
        {**base, "electricity_mwh": 1e308, "natural_gas_10k_nm3": 1e308, "raw_coal_t": 1e308},
    ]
    for row in rows:
        for given in (tables, None):
            ref, got = _both(monkeypatch, lambda row=row, given=given: pipeline.rate(plan, [row], benchmarks=given))
            _assert_same(ref, got)


def _json_row(cols: dict[str, np.ndarray], i: int) -> dict[str, object]:
    row: dict[str, object] = {}
    for k, col in cols.items():
        v = col[i].item() if hasattr(col[i], "item") else col[i]
        row[k] = None if v == "" or (isinstance(v, float) and np.isnan(v)) else v
    return row


@pytest.mark.parametrize("name", BOOKS)
def test_every_piece_of_every_formula_on_one_row(name, monkeypatch):
    """evaluate_node (the audit trail) over each sub-expression: value bits and notes taken."""
    plan = ruleengine.load(name)
    res = pipeline.rate(plan, generate(60, [2022, 2023], seed=11, messy=0.05))
    exprs = [node.expr for node in plan.nodes.values() if node.expr is not None]
    exprs += [r.value for r in plan.ratings.values()]
    exprs += [c for r in plan.ratings.values() for _, c, _ in r.levels if c is not None]
    funcs = {id(n.func) for e in exprs for n in ast.walk(e.node) if isinstance(n, ast.Call)}
    pieces = [sub for e in exprs for sub in ast.walk(e.node) if isinstance(sub, ast.expr) and id(sub) not in funcs]
    assert len(pieces) > 50
    for i in (0, 1, 7, 33, 80):
        seen = []
        for reference in (True, False):
            monkeypatch.setattr(Frame, "reference", reference)
            frame = row_frame(plan, res, i)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                seen.append([_piece(frame, p) for p in pieces])
        assert seen[0] == seen[1]
        assert sum(1 for x in seen[1] if x[0] != "KeyError") > 50


def _piece(frame: Frame, node: ast.AST) -> tuple[object, ...]:
    try:
        value, notes = frame.evaluate_node(node)
    except KeyError as exc:  # a row frame holds the inputs the batch read, not absent ones
        return ("KeyError", str(exc))
    return (_bits(value), notes)


DIVIDE = """
inputs:
  a: {type: number, required: true}
  b: {type: number, optional: true}
  k: {type: category, required: true}
parameters:
  t:
    unit: "1"
    fallback_key: other
    values:
      2021-01-01: {x: 2, other: 5}
      2023-01-01: {x: 3, other: 7}
    source: s
  strict: {unit: "1", table: {x: 2}, source: s}
variables:
  q: {expr: "a / b"}
  guarded: {expr: "where(b != 0, a / b, missing)", output: true}
  chained: {expr: "a / b / (a - a)", output: true}
  looked: {expr: "t[k] * 2 - -a + t['x']", output: true}
  strict_k: {expr: "strict[k] + +a", output: true}
  filled: {expr: "coalesce(b, a) ** 2", output: true, record: "b not reported, a used"}
  grown: {expr: "where(has_prev(a), a / prev(a / b) - 1, 0)", output: true}
  cmp: {expr: "where(1 < a <= 3, 1, 0) + (not (a == 2))", output: true}
ratings:
  r: {value: q, closed: right, better: lower, bands: [{id: lo, upper: 1}, {id: hi, lower: 1}]}
"""


def test_error_paths_identical(book, monkeypatch):
    """Division by zero (recorded, also inside where() and prev()), table fallbacks, coalesce with
    a 'record:' note, comparison chains and 'not': the same values and notes from both."""
    plan = book(DIVIDE)
    rows = [
        {"firm_id": "A", "year": 2022, "a": 1, "b": 2, "k": "x"},
        {"firm_id": "A", "year": 2023, "a": 2, "b": 0, "k": "y"},
        {"firm_id": "B", "year": 2022, "a": 3, "b": None, "k": "x"},
        {"firm_id": "B", "year": 2023, "a": 0, "b": 0, "k": "x"},
        {"firm_id": "C", "year": 2023, "a": 2, "b": 4, "k": "z"},
    ]
    ref, got = _both(monkeypatch, lambda: pipeline.rate(plan, rows))
    _assert_same(ref, got)
    csv = str(got["csv"])
    # by hand: A 2023: a / b = 2 / 0 → the division is recorded and the row unrated
    assert "division by zero in q: b = 0" in csv
    assert "t: no value for 'y' in 2023, used 'other'" in csv
    assert "strict: no value for 'z' in 2023" in csv
    assert "b not reported, a used" in csv


def test_unknown_names_are_refused_at_compile_time_with_the_located_message(book):
    with pytest.raises(RulebookError) as err:
        book("""
variables:
  q: {expr: "emisions_tco2 / 2"}
ratings:
  r: {value: q, closed: right, better: lower, bands: [{id: lo, upper: 1}, {id: hi, lower: 1}]}
""")
    text = str(err.value)
    assert "unknown name 'emisions_tco2' (did you mean 'emissions_tco2'?) (at variables.q.expr)" in text


@pytest.mark.parametrize(
    ("formula", "why"),
    [
        ("a.__class__", "attribute access ('.') is not allowed"),
        ("__import__('os')", "names starting with '_' are not allowed"),
        ("(lambda: 1)()", "only named functions can be called"),
        ("[x for x in a]", "'ListComp' is not allowed"),
        ("sum(x for x in a)", "'GeneratorExp' is not allowed"),
        ("a.real", "attribute access ('.') is not allowed"),
    ],
)
def test_outside_the_language_is_refused(book, formula, why):
    with pytest.raises(RulebookError) as err:
        book(f"""
inputs:
  a: {{type: number, required: true}}
variables:
  q: {{expr: "{formula}"}}
ratings:
  r: {{value: q, closed: right, better: lower, bands: [{{id: lo, upper: 1}}, {{id: hi, lower: 1}}]}}
""")
    assert why in str(err.value)


@pytest.mark.parametrize("formula", ["a.__class__", "(lambda: 1)()", "[x for x in a]", "a if a else 1", "a and 1"])
def test_the_compiler_itself_refuses_nodes_outside_the_whitelist(formula):
    """Defence in depth: a syntax tree that did not pass the whitelist is not compiled either."""
    plan = ruleengine.load("huzhou")
    with pytest.raises(TypeError, match="not allowed"):
        compiled(plan, ast.parse(formula, mode="eval").body)


def test_compiled_formulas_are_kept_on_the_plan_but_not_pickled():
    import pickle

    plan = ruleengine.load("huzhou")
    pipeline.rate(plan, SAMPLE)
    cache = plan.__dict__["_compiled"]
    node = next(n.expr.node for n in plan.nodes.values() if n.expr is not None)
    assert compiled(plan, node) is compiled(plan, node)  # compiled once
    assert len(cache) >= len([n for n in plan.nodes.values() if n.expr is not None])
    again = pickle.loads(pickle.dumps(plan))
    assert "_compiled" not in again.__dict__
    assert evaluator.Frame.reference is False


def test_bench_onerow_runs_and_writes_its_table(tmp_path):
    """benchmarks/bench_onerow.py, bounded: a one-firm rating's CPU per phase and the large evaluate."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_onerow", ROOT / "benchmarks" / "bench_onerow.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "onerow.md"
    argv = ["--books", "national", "--firms", "40", "--calls", "10", "--evaluate-rows", "2000", "--repeat", "1"]
    assert bench.main([*argv, "--label", "t", "--out", str(out)]) == 0
    lines = [x for x in out.read_text(encoding="utf-8").splitlines() if x.startswith("| t |")]
    assert [x.split("|")[3].strip() for x in lines] == ["1 row", "2 rows", "evaluate 2,000 rows"]
    cells = [float(c) for c in lines[0].split("|")[4:8]]  # rate, read + check, evaluate, results (ms)
    assert all(c > 0 for c in cells) and cells[0] < 1000
