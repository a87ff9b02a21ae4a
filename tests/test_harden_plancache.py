"""Issue #11.1: a plan cache that cannot be poisoned.

Every test runs the engine in fresh processes (as a user would) with its own cache folder and its
own config folder (where the secret key lives), then attacks the cache between runs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ruleengine.rulebook import _plancache

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "golden" / "portfolios" / "small.csv"

PROBE = """
import json, sys
import ruleengine
plan = ruleengine.load(sys.argv[1])
compiled = "jsonschema" in sys.modules
res = ruleengine.rate(plan, sys.argv[2])
print(json.dumps({"compiled": compiled, "rating": res["rating"].tolist(), "engine": ruleengine.__file__}))
"""


def run(book: str | Path, cache: Path, config: Path, *, pythonpath: Path | None = None, cwd: Path | None = None):
    env = {**os.environ, "RULEENGINE_CACHE_DIR": str(cache), "XDG_CONFIG_HOME": str(config)}
    env.pop("RULEENGINE_CACHE", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(book), str(SMALL)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    result["stderr"] = out.stderr
    return result


@pytest.fixture
def dirs(tmp_path):
    cache, config = tmp_path / "cache", tmp_path / "config"
    return cache, config


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("plan-*.pickle"))


class _Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_planted_pickle_is_never_executed(dirs, tmp_path):
    cache, config = dirs
    fresh = run("huzhou", cache, config)
    assert fresh["compiled"] is True and len(entries(cache)) == 1
    marker = tmp_path / "marker"
    bomb = pickle.dumps(_Payload(marker))
    (entry,) = entries(cache)
    # the attacker's bytes at the very name the engine will open (the strongest case: an attacker
    # cannot compute the name, see test_entry_names_depend_on_the_users_secret_key)
    for planted in (
        bomb,  # a bare pickle
        entry.read_bytes()[: len(_plancache._MAGIC)] + b"\0" * 32 + bomb,  # right header, forged tag
        entry.read_bytes()[: len(_plancache._MAGIC) + 32] + bomb,  # a real tag from another payload
    ):
        entry.write_bytes(planted)
        again = run("huzhou", cache, config)
        assert not marker.exists(), "the planted pickle ran"
        assert again["compiled"] is True
        assert again["rating"] == fresh["rating"]


def test_edited_entry_is_ignored_and_results_equal_a_fresh_compile(dirs):
    cache, config = dirs
    fresh = run("huzhou", cache, config)
    (entry,) = entries(cache)
    data = entry.read_bytes()
    head = len(_plancache._MAGIC) + 32 if data.startswith(_plancache._MAGIC) else 0
    stored = pickle.loads(data[head:])  # the test trusts its own entry; the engine must not trust the edit
    bands = stored["plan"].ratings["level"].bands
    for band in bands:  # band edges x3 (1 at 0.6 → 1.8, ...): most firms move to better levels
        band.lower = band.lower * 3 if isinstance(band.lower, float) else band.lower
        band.upper = band.upper * 3 if isinstance(band.upper, float) else band.upper
    entry.write_bytes(data[:head] + pickle.dumps(stored, protocol=pickle.HIGHEST_PROTOCOL))
    again = run("huzhou", cache, config)
    assert again["compiled"] is True
    assert again["rating"] == fresh["rating"]
    # and the edit is gone: the next run uses the rewritten, honest entry
    third = run("huzhou", cache, config)
    assert third["compiled"] is False and third["rating"] == fresh["rating"]


def test_world_writable_cache_folder_is_refused_with_one_warning(dirs):
    cache, config = dirs
    cache.mkdir(mode=0o700)
    os.chmod(cache, 0o777)
    first = run("huzhou", cache, config)
    second = run("huzhou", cache, config)
    assert first["compiled"] is True and second["compiled"] is True
    assert entries(cache) == []
    lines = [line for line in second["stderr"].splitlines() if "plan cache" in line]
    assert lines == [
        f"warning: plan cache not used: the cache folder {cache} is writable by group or others (mode 777); "
        f"run: chmod go-w {cache}"
    ]
    os.chmod(cache, 0o700)  # fixed: used again
    run("huzhou", cache, config)
    assert run("huzhou", cache, config)["compiled"] is False


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another user needs root")
def test_cache_folder_of_another_user_is_refused(dirs):
    cache, config = dirs
    cache.mkdir(mode=0o700)
    os.chown(cache, 12345, 12345)
    run("huzhou", cache, config)
    again = run("huzhou", cache, config)
    assert again["compiled"] is True and entries(cache) == []
    assert "is owned by another user (uid 12345)" in again["stderr"]


def test_symlinked_entry_is_refused(dirs, tmp_path):
    cache, config = dirs
    fresh = run("huzhou", cache, config)
    (entry,) = entries(cache)
    elsewhere = tmp_path / "elsewhere.pickle"
    shutil.move(entry, elsewhere)
    entry.symlink_to(elsewhere)  # a valid entry, but reached through a link
    again = run("huzhou", cache, config)
    assert again["compiled"] is True and again["rating"] == fresh["rating"]
    assert not entry.is_symlink()  # replaced by a real entry


def test_planted_fifo_does_not_hang(dirs):
    cache, config = dirs
    run("huzhou", cache, config)
    (entry,) = entries(cache)
    entry.unlink()
    os.mkfifo(entry)
    again = run("huzhou", cache, config)  # run() times out after 120 s if the open blocks
    assert again["compiled"] is True


def test_entry_copied_under_another_name_is_refused(dirs, tmp_path):
    cache, config = dirs
    book = tmp_path / "books" / "mini.yaml"
    book.parent.mkdir()
    shutil.copytree(ROOT / "rulebooks" / "lib", book.parent / "lib")
    text = (ROOT / "rulebooks" / "huzhou.yaml").read_text(encoding="utf-8")
    book.write_text(text, encoding="utf-8")
    run(book, cache, config)
    (mine,) = entries(cache)
    run("huzhou", cache, config)
    (theirs,) = [e for e in entries(cache) if e != mine]
    shutil.copy(mine, theirs)  # a validly signed entry, but of another rulebook path
    assert run("huzhou", cache, config)["compiled"] is True


def test_key_file_is_private_and_outside_the_cache(dirs):
    cache, config = dirs
    run("huzhou", cache, config)
    key = config / "ruleengine" / "cache.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert len(bytes.fromhex(key.read_text().strip())) == 32
    assert not any(p.name == "cache.key" for p in cache.rglob("*"))
    # a key others may read is not trusted: the cache is off, one warning says why
    os.chmod(key, 0o644)
    out = run("huzhou", cache, config)
    assert out["compiled"] is True
    assert f"the cache key {key} may be read or written by others (mode 644)" in out["stderr"]
    # a key inside the cache folder is refused
    inside = run("huzhou", config / "ruleengine", config)
    assert inside["compiled"] is True and "must not be inside the cache folder" in inside["stderr"]


def test_entry_names_depend_on_the_users_secret_key(tmp_path):
    cache = tmp_path / "cache"
    run("huzhou", cache, tmp_path / "alice")
    run("huzhou", cache, tmp_path / "bob")
    names = [e.name for e in entries(cache)]
    assert len(names) == 2  # same rulebook, same engine: the names differ only by the key
    assert run("huzhou", cache, tmp_path / "bob")["compiled"] is False


def _engine_copy(tmp_path: Path) -> Path:
    """The package laid out as ``pip install .`` lays it out: rulebooks inside it, plus a sub-package."""
    site = tmp_path / "site"
    pkg = site / "ruleengine"
    shutil.copytree(ROOT / "ruleengine", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    if not (pkg / "rulebooks").exists():
        shutil.copytree(ROOT / "rulebooks", pkg / "rulebooks")
    sub = pkg / "harden_probe_sub"
    sub.mkdir()
    (sub / "__init__.py").write_text("")
    (sub / "helper.py").write_text("VALUE = 1\n")
    return site


def test_editing_a_file_in_a_sub_package_invalidates_entries(dirs, tmp_path):
    cache, config = dirs
    site = _engine_copy(tmp_path)
    first = run("huzhou", cache, config, pythonpath=site, cwd=tmp_path)
    assert Path(first["engine"]).is_relative_to(site)
    assert run("huzhou", cache, config, pythonpath=site, cwd=tmp_path)["compiled"] is False
    (site / "ruleengine" / "harden_probe_sub" / "helper.py").write_text("VALUE = 2\n")
    assert run("huzhou", cache, config, pythonpath=site, cwd=tmp_path)["compiled"] is True
    # package data too (a JSON file shipped in the package)
    (site / "ruleengine" / "harden_probe_sub" / "data.json").write_text("{}")
    assert run("huzhou", cache, config, pythonpath=site, cwd=tmp_path)["compiled"] is True


def test_engine_files_include_sub_packages_and_data():
    files = {f.relative_to(_plancache.package_root()).as_posix() for f in _plancache._engine_files()}
    assert "__init__.py" in files and "py.typed" in files
    assert not any("__pycache__" in f for f in files)
    subs = [p for p in _plancache.package_root().rglob("*.py") if "__pycache__" not in p.parts]
    assert {p.relative_to(_plancache.package_root()).as_posix() for p in subs} <= files


def test_verified_payload_refuses_every_single_byte_flip():
    key = bytes(range(32))
    payload = pickle.dumps({"format": 3})
    data = _plancache._MAGIC + _plancache._tag(key, "plan-x.pickle", payload) + payload
    assert _plancache.verified_payload(data, key, "plan-x.pickle") == payload
    assert _plancache.verified_payload(data, key, "plan-y.pickle") is None
    assert _plancache.verified_payload(data, bytes(32), "plan-x.pickle") is None
    for i in range(len(data)):
        flipped = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
        assert _plancache.verified_payload(flipped, key, "plan-x.pickle") is None, i
