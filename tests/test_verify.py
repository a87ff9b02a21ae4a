"""verify: every field of a trace recomputed, its digest checked, and a clear verdict for anything
that is not a trace (issue #12 item 8, issue #11 item 8)."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

import ruleengine
from ruleengine.analysis.trace import digest
from ruleengine.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "golden" / "portfolios" / "small.csv"


@pytest.fixture(scope="module")
def trace() -> dict:
    # G01 2023 under Huzhou: a rated cement firm with five industry peers and a better level to reach
    return json.loads(ruleengine.explain("huzhou", SMALL, firm_id="G01", year=2023).to_json())


def verify(tmp_path: Path, data: object, name: str = "t.json") -> tuple[int, str]:
    p = tmp_path / name
    p.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    result = CliRunner().invoke(main, ["verify", str(p)])
    assert "internal error" not in result.output and "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def test_an_untouched_trace_is_verified(tmp_path, trace):
    code, out = verify(tmp_path, trace)
    assert code == 0, out
    assert out.startswith(f"verified: G01 2023 under huzhou {ruleengine.load('huzhou').version}")
    assert trace["digest"] == digest(trace)


def _benchmark_node(t: dict) -> dict:
    return next(n for n in t["nodes"] if n["kind"] == "benchmark")


EDITS = {
    "firm_id": lambda t: t.__setitem__("firm_id", "G02"),
    "year": lambda t: t.__setitem__("year", 2022),
    "incentive.rate_bp": lambda t: t["incentive"].__setitem__("rate_bp", -50),
    "decisions[0].because": lambda t: t["decisions"][0].__setitem__("because", "level 1 because k is tiny"),
    "reasons": lambda t: t["reasons"].append("value_added_10k_cny: looked fine"),
    "nodes[{bm}].detail.peers": lambda t: _benchmark_node(t)["detail"].__setitem__("peers", 50),
    "what_it_takes.better.cuts[0].cut": lambda t: t["what_it_takes"]["better"]["cuts"][0].__setitem__("cut", 1.0),
    "decisions[0].level": lambda t: t["decisions"][0].__setitem__("level", "1"),
    "status": lambda t: t.__setitem__("status", "unrated"),
}


@pytest.mark.parametrize("field", sorted(EDITS))
@pytest.mark.parametrize("redigest", [False, True], ids=["digest-left", "digest-recomputed"])
def test_an_edited_field_is_named_even_with_a_recomputed_digest(tmp_path, trace, field, redigest):
    edited = copy.deepcopy(trace)
    EDITS[field](edited)
    if redigest:  # the editor recomputes the digest too: the recomputation still catches it
        edited["digest"] = digest(edited)
    code, out = verify(tmp_path, edited)
    assert code == 1
    index = next(i for i, n in enumerate(trace["nodes"]) if n["kind"] == "benchmark")
    name = field.replace("{bm}", str(index))
    lines = out.splitlines()
    if not redigest:
        assert lines[0].startswith("mismatch: digest: the trace's content does not match its digest")
    assert any(name in line for line in lines), out


def test_malformed_traces_get_a_clear_verdict(tmp_path, trace):
    """60 seeded mutations (deleted keys, wrong types, truncation, garbage): never a traceback."""
    rnd = random.Random(2026)
    text = json.dumps(trace)
    cases: list[object] = [
        "",
        "{",
        "null",
        "[]",
        "42",
        '"trace"',
        text[: len(text) // 2],
        "\ufeff" + text[:100],
        "{" * 5000,
    ]
    keys = [k for k in trace if k != "digest"]
    for _ in range(51):
        t = copy.deepcopy(trace)
        k = rnd.choice(keys)
        how = rnd.randrange(4)
        if how == 0:
            del t[k]
        elif how == 1:
            t[k] = rnd.choice([None, 1, "x", [], {}, 1.5])
        elif how == 2 and isinstance(t[k], dict) and t[k]:
            t[k][rnd.choice(list(t[k]))] = rnd.choice([None, "x", [1], {"a": 1}])
        else:
            t["replay"]["row"] = rnd.choice([-1, 99, "0", None])
        cases.append(t)
    verdicts = 0
    for i, case in enumerate(cases):
        code, out = verify(tmp_path, case, f"bad{i}.json")
        if code == 0:  # a mutation that changed nothing meaningful (e.g. a key set to its own value)
            assert out.startswith("verified:")
            continue
        assert code == 1
        assert out.startswith(("error:", "mismatch:")), out
        verdicts += 1
    assert verdicts >= 55
