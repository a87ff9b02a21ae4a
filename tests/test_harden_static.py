"""Issue #11.7, the static checks that were still missing: NaN / infinite band edges (and other
non-finite numbers of a rulebook) and reserved words as `weights` keys or entry names are
located errors of `validate`, not a rulebook that passes and rates wrongly (a NaN edge made every
comparison false) or a weighted variable that silently disappears (`lambda`)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ruleengine.cli import main

FIXTURE = Path(__file__).resolve().parent / "data" / "harden"  # frozen Huzhou 1.0.0
HUZHOU = (FIXTURE / "huzhou.yaml").read_text(encoding="utf-8")
EDGE = '{id: "2", lower: 0.6, upper: 0.8,'


def _book(tmp_path: Path, old: str, new: str) -> Path:
    assert old in HUZHOU
    folder = tmp_path / "books"
    shutil.copytree(FIXTURE / "lib", folder / "lib")
    path = folder / "book.yaml"
    path.write_text(HUZHOU.replace(old, new, 1), encoding="utf-8")
    return path


def _validate(path: Path) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["validate", str(path)])
    assert "internal error" not in res.output and "Traceback" not in res.output, res.output
    return res.exit_code, res.stderr


@pytest.mark.parametrize("edge", [".nan", ".NaN", ".inf", "-.inf"])
def test_non_finite_band_edge_is_a_located_error(tmp_path: Path, edge: str) -> None:
    path = _book(tmp_path, EDGE, EDGE.replace("upper: 0.8", f"upper: {edge}"))
    code, err = _validate(path)
    assert code == 1, err
    line = HUZHOU.splitlines().index(next(x for x in HUZHOU.splitlines() if EDGE in x)) + 1
    col = next(x for x in HUZHOU.splitlines() if EDGE in x).index("upper: 0.8") + len("upper: ") + 1
    assert re.search(
        rf"book\.yaml:{line}:{col}: error: band edge -?(nan|inf) is not a finite number: .* "
        r"\(at ratings\.level\.bands\[1\]\.upper\)",
        err,
    ), err


def _tiny(variables: str, inputs: str = "") -> str:
    return f"""\
id: t
title: t
version: 1.0.0
effective: 2021-01-01
sources:
  s: {{title: test, status: assumed}}
inputs:
  firm_id: {{type: string, required: true}}
  year: {{type: integer, required: true}}
  a: {{type: number, unit: "1", default: 0}}
{inputs}variables:
  scope1_tco2: {{expr: "0", unit: tCO2}}
  scope2_tco2: {{expr: "0", unit: tCO2}}
  emissions_tco2: {{expr: "0", unit: tCO2}}
  energy_tce: {{expr: "0", unit: tce}}
{variables}ratings:
  r:
    primary: true
    value: s
    better: higher
    closed: left
    bands:
      - {{id: lo, upper: 0.5}}
      - {{id: hi, lower: 0.5}}
"""


def _errors(tmp_path: Path, text: str) -> str:
    path = tmp_path / "t.yaml"
    path.write_text(text, encoding="utf-8")
    code, err = _validate(path)
    assert code == 1, err
    return err


@pytest.mark.parametrize("key", ["lambda", "if", "not", "prev", "missing"])
def test_reserved_weights_key_is_a_located_error(tmp_path: Path, key: str) -> None:
    """Before: `lambda * 0.5 + a * 0.5` failed to parse, the compiler dropped `s` without a word and
    the only error was "unknown name 's' (did you mean 's'?)" at the rating."""
    text = _tiny(f'  s: {{weights: {{a: 0.5, {key}: 0.5}}, unit: "1"}}\n')
    err = _errors(tmp_path, text)
    line = text.splitlines().index(next(x for x in text.splitlines() if "weights" in x)) + 1
    col = text.splitlines()[line - 1].index(f"{key}:") + 1
    assert re.search(rf"t\.yaml:{line}:{col}: error: weights key '{key}' .*\(at variables\.s\.weights\.{key}\)", err), (
        err
    )
    assert "unknown name 's'" not in err


@pytest.mark.parametrize("section", ["inputs", "variables"])
def test_keyword_as_a_name_is_a_located_error(tmp_path: Path, section: str) -> None:
    entry = '  lambda: {type: number, unit: "1", default: 0}\n'
    if section == "inputs":
        text = _tiny('  s: {expr: a, unit: "1"}\n', inputs=entry)
    else:
        text = _tiny('  lambda: {expr: a, unit: "1", output: true}\n  s: {expr: a, unit: "1"}\n')
    err = _errors(tmp_path, text)
    line = next(i for i, x in enumerate(text.splitlines(), 1) if x.startswith("  lambda:"))
    assert re.search(
        rf"t\.yaml:{line}:3: error: 'lambda' is a reserved word of the formula syntax .*\(at {section}\.lambda\)", err
    ), err


def test_weights_with_ordinary_keys_still_compile(tmp_path: Path) -> None:
    import ruleengine

    path = tmp_path / "ok.yaml"
    path.write_text(_tiny('  b: {expr: a * 2, unit: "1"}\n  s: {weights: {a: 0.25, b: 0.75}, unit: "1"}\n'))
    plan = ruleengine.load(str(path))
    # a = 0.4: s = 0.25 * 0.4 + 0.75 * 0.8 = 0.7 -> hi
    import pyarrow as pa

    res = ruleengine.rate(plan, pa.table({"firm_id": ["F"], "year": [2022], "a": [0.4]}))
    assert res["s"][0] == pytest.approx(0.7) and res["rating"][0] == "hi"


def test_non_finite_default_and_scale_point(tmp_path: Path) -> None:
    text = _tiny('  s: {expr: a, unit: "1"}\n').replace("default: 0}", "default: .nan}", 1)
    err = _errors(tmp_path, text)
    assert re.search(r"error: number nan is not a finite number: .*\(at inputs\.a\.default\)", err), err
    scale = 'scales:\n  sc: {unit: "1", input_unit: "1", source: s, piecewise: [[0, 0], [.inf, 1]]}\n'
    text = _tiny('  s: {expr: sc(a), unit: "1"}\n').replace("ratings:", scale + "ratings:")
    err = _errors(tmp_path, text)
    assert re.search(r"error: number inf is not a finite number: .*\(at scales\.sc\.piecewise\[1\]\[0\]\)", err), err
