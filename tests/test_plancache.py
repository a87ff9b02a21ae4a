"""The on-disk cache of compiled plans: used only while every file it was built from (and the
engine) is unchanged, and never able to change a result or raise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ruleengine
from ruleengine.rulebook import _plancache
from ruleengine.rulebook import loader as _api

ROOT = Path(__file__).resolve().parents[1]
BOOKS = ROOT / "rulebooks"
SMALL = ROOT / "golden" / "portfolios" / "small.csv"

# Loads a rulebook in a fresh process and says whether it compiled (the compile stage imports
# jsonschema; a cached plan does not) and what it rated.
PROBE = """
import json, sys
import ruleengine
plan = ruleengine.load(sys.argv[1])
compiled = "jsonschema" in sys.modules
res = ruleengine.rate(plan, sys.argv[2])
print(json.dumps({"compiled": compiled, "k": [None if v != v else v for v in res["k"].tolist()] if "k" in res.names else None,
                  "emissions": res["emissions_tco2"].tolist(), "rating": res["rating"].tolist(),
                  "file": plan.file, "warnings": [w.format() for w in plan.warnings]}))
"""


def probe(book: Path | str, cache: Path, cwd: Path | None = None, **env: str) -> dict:
    e = {**os.environ, "RULEENGINE_CACHE_DIR": str(cache), **env}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(book), str(SMALL)], capture_output=True, text=True, env=e, cwd=cwd, check=True
    )
    return json.loads(out.stdout)


def copy_books(tmp: Path) -> Path:
    """huzhou.yaml and the library it imports, copied so they can be edited."""
    (tmp / "lib").mkdir(parents=True)
    shutil.copy(BOOKS / "huzhou.yaml", tmp / "huzhou.yaml")
    shutil.copy(BOOKS / "lib" / "accounting.yaml", tmp / "lib" / "accounting.yaml")
    return tmp / "huzhou.yaml"


def test_second_process_uses_the_cached_plan_with_identical_results(tmp_path):
    cache = tmp_path / "cache"
    first = probe("huzhou", cache)
    second = probe("huzhou", cache)
    assert first["compiled"] is True and second["compiled"] is False
    assert len(list(cache.glob("plan-*.pickle"))) == 1
    assert {k: v for k, v in first.items() if k != "compiled"} == {k: v for k, v in second.items() if k != "compiled"}


def test_editing_an_imported_library_compiles_afresh(tmp_path):
    book = copy_books(tmp_path / "books")
    cache = tmp_path / "cache"
    before = probe(book, cache)
    assert probe(book, cache)["compiled"] is False
    lib = book.parent / "lib" / "accounting.yaml"
    text = lib.read_text(encoding="utf-8")
    # the grid factor of the East China grid doubles: every firm's scope 2 doubles
    old = "east: 0.5617"
    assert text.count(old) >= 1, "the library's east grid factor moved; update this test"
    lib.write_text(text.replace(old, "east: 1.1234"), encoding="utf-8")
    after = probe(book, cache)
    assert after["compiled"] is True
    assert after["emissions"] != before["emissions"]
    # and back: the first entry is still valid for the original bytes
    lib.write_text(text, encoding="utf-8")
    again = probe(book, cache)
    assert again["emissions"] == before["emissions"]


def test_editing_the_rulebook_compiles_afresh(tmp_path):
    book = copy_books(tmp_path / "books")
    cache = tmp_path / "cache"
    probe(book, cache)
    text = book.read_text(encoding="utf-8")
    book.write_text(text.replace("\nversion: ", "\n# edited\nversion: ", 1), encoding="utf-8")
    assert probe(book, cache)["compiled"] is True


def test_file_names_in_messages_follow_the_working_directory(tmp_path):
    book = copy_books(tmp_path / "books")
    cache = tmp_path / "cache"
    inside = probe("huzhou.yaml", cache, cwd=book.parent)
    outside = probe(book, cache, cwd=tmp_path)
    assert inside["file"] == "huzhou.yaml"
    assert outside["file"] == "books/huzhou.yaml"
    assert outside["compiled"] is True  # another name shown, another entry


def test_damaged_entry_is_a_miss_not_an_error(tmp_path):
    cache = tmp_path / "cache"
    probe("huzhou", cache)
    (entry,) = cache.glob("plan-*.pickle")
    entry.write_bytes(b"not a pickle")
    result = probe("huzhou", cache)
    assert result["compiled"] is True and result["rating"]
    assert entry.read_bytes() != b"not a pickle"  # rewritten


def test_cache_off_and_unwritable_folder(tmp_path):
    off = tmp_path / "off"
    probe("huzhou", off, RULEENGINE_CACHE="off")
    assert not off.exists()
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    result = probe("huzhou", blocked)  # cannot create a folder there: rated anyway
    assert result["compiled"] is True and result["rating"]


def test_cached_plan_still_has_its_graph(tmp_path, monkeypatch):
    monkeypatch.setenv("RULEENGINE_CACHE_DIR", str(tmp_path))
    _api._CACHE.clear()
    fresh = ruleengine.load("huzhou")
    _api._CACHE.clear()
    cached = ruleengine.load("huzhou")
    assert cached is not fresh and "graph" not in cached.__dict__  # rebuilt only when asked
    assert list(cached.graph.nodes) == list(fresh.graph.nodes)
    assert sorted(cached.graph.edges) == sorted(fresh.graph.edges)
    assert (
        ruleengine.explain(cached, SMALL, "G01", 2023).to_dict()
        == ruleengine.explain(fresh, SMALL, "G01", 2023).to_dict()
    )


def test_old_entries_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setattr(_plancache, "KEEP", 3)
    for i in range(5):
        old = tmp_path / f"plan-{i:040d}.pickle"
        old.write_bytes(b"")
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    _plancache._prune(tmp_path)
    assert sorted(f.name for f in tmp_path.glob("plan-*.pickle")) == [f"plan-{i:040d}.pickle" for i in (2, 3, 4)]


@pytest.mark.parametrize("value", ["off", "0", "false", "no", "OFF"])
def test_cache_switch_values(monkeypatch, value):
    monkeypatch.setenv("RULEENGINE_CACHE", value)
    assert not _plancache.enabled()


def test_a_library_added_next_to_the_rulebook_takes_over_the_cached_import(tmp_path):
    """imports: [lib/accounting] looks next to the rulebook before the bundled library; a plan
    cached while the bundled one served must not outlive a local copy appearing."""
    books = tmp_path / "books"
    books.mkdir()
    shutil.copy(BOOKS / "huzhou.yaml", books / "huzhou.yaml")
    cache = tmp_path / "cache"
    bundled = probe(books / "huzhou.yaml", cache)
    assert probe(books / "huzhou.yaml", cache)["compiled"] is False
    (books / "lib").mkdir()
    text = (BOOKS / "lib" / "accounting.yaml").read_text(encoding="utf-8")
    (books / "lib" / "accounting.yaml").write_text(text.replace("east: 0.5617", "east: 1.1234"), encoding="utf-8")
    local = probe(books / "huzhou.yaml", cache)
    assert local["compiled"] is True and local["emissions"] != bundled["emissions"]


def test_in_process_cache_also_sees_a_new_local_library(tmp_path, monkeypatch):
    monkeypatch.setenv("RULEENGINE_CACHE", "off")
    books = tmp_path / "books"
    books.mkdir()
    shutil.copy(BOOKS / "huzhou.yaml", books / "huzhou.yaml")
    first = ruleengine.load(books / "huzhou.yaml")
    assert ruleengine.load(books / "huzhou.yaml") is first
    (books / "lib").mkdir()
    shutil.copy(BOOKS / "lib" / "accounting.yaml", books / "lib" / "accounting.yaml")
    second = ruleengine.load(books / "huzhou.yaml")
    assert second is not first
    assert str((books / "lib" / "accounting.yaml").resolve()) in second.source_map.files


def test_in_memory_plans_are_bounded(tmp_path, monkeypatch):
    """A long-running process compiling many distinct rulebooks (the service validating posted
    drafts) keeps at most CACHED_PLANS plans in memory, the least recently used dropped first."""
    monkeypatch.setenv("RULEENGINE_CACHE", "off")
    _api._CACHE.clear()
    text = (ROOT / "rulebooks" / "quzhou.yaml").read_text(encoding="utf-8")
    first = tmp_path / "draft-0.yaml"
    first.write_text(text, encoding="utf-8")
    kept = ruleengine.load(first)
    for k in range(1, _api.CACHED_PLANS + 8):
        draft = tmp_path / f"draft-{k}.yaml"
        draft.write_text(text, encoding="utf-8")
        ruleengine.load(draft)
        assert ruleengine.load(first) is kept  # used again: stays
        assert len(_api._CACHE) <= _api.CACHED_PLANS
    assert str((tmp_path / "draft-1.yaml").resolve()) not in _api._CACHE  # the least recently used went
    assert str(first.resolve()) in _api._CACHE
