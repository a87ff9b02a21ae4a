"""Issue #12.7: a bundled rulebook name and a local file are never confused.

The package is laid out as ``pip install .`` lays it out (the rulebooks inside it, in a
site folder of its own), and the CLI runs in a separate "checkout" folder whose
``rulebooks/huzhou.yaml`` the user edits.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# the bundled Huzhou version, and the one an edited checkout declares
VERSION = re.search(r"^version: (\S+)$", (ROOT / "rulebooks" / "huzhou.yaml").read_text(encoding="utf-8"), re.M)[1]
EDITED = VERSION.rsplit(".", 1)[0] + "." + str(int(VERSION.rsplit(".", 1)[1]) + 1)

SMALL = ROOT / "golden" / "portfolios" / "small.csv"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """An installed copy of the engine: site/ruleengine/ with site/ruleengine/rulebooks/."""
    site = tmp_path_factory.mktemp("site")
    pkg = site / "ruleengine"
    shutil.copytree(ROOT / "ruleengine", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    if not (pkg / "rulebooks").exists():
        shutil.copytree(ROOT / "rulebooks", pkg / "rulebooks")
    return site


@pytest.fixture
def checkout(tmp_path) -> Path:
    work = tmp_path / "checkout"
    shutil.copytree(ROOT / "rulebooks", work / "rulebooks")
    return work


def cli(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "RULEENGINE_CACHE": "off"}
    return subprocess.run(
        [sys.executable, "-m", "ruleengine.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path.name} no longer contains {old!r}; update this test"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_edited_checkout_is_not_silently_replaced_by_the_installed_copy(site, checkout):
    edit(checkout / "rulebooks" / "huzhou.yaml", f"\nversion: {VERSION}", f"\nversion: {EDITED}")
    installed = (site / "ruleengine" / "rulebooks" / "huzhou.yaml").resolve()
    by_name = cli(site, checkout, "validate", "huzhou")
    assert by_name.returncode == 0
    assert by_name.stderr == (
        f"warning: 'huzhou' is the bundled rulebook {installed}, which is used; ./rulebooks/huzhou.yaml differs "
        "from it and is not used (give its path, ./rulebooks/huzhou.yaml, to use it)\n"
    )
    # the bundled one is named by its full path, never by the edited file's
    assert by_name.stdout.startswith(f"ok: {installed}: huzhou {VERSION} (sha256:")
    by_path = cli(site, checkout, "validate", "rulebooks/huzhou.yaml")
    assert by_path.returncode == 0 and by_path.stderr == ""
    assert by_path.stdout.startswith(f"ok: rulebooks/huzhou.yaml: huzhou {EDITED} (sha256:")
    # and their hashes differ, as their contents do
    assert by_name.stdout.split("(sha256:")[1][:16] != by_path.stdout.split("(sha256:")[1][:16]


def test_a_broken_local_edit_is_reported_by_path_and_named_by_the_name(site, checkout):
    edit(checkout / "rulebooks" / "huzhou.yaml", "closed: right", "closed: sideways")
    by_name = cli(site, checkout, "validate", "huzhou")
    assert by_name.returncode == 0 and "./rulebooks/huzhou.yaml differs from it and is not used" in by_name.stderr
    by_path = cli(site, checkout, "validate", "rulebooks/huzhou.yaml")
    assert by_path.returncode == 1
    text = (checkout / "rulebooks" / "huzhou.yaml").read_text(encoding="utf-8")
    line = text[: text.index("closed: sideways")].count("\n") + 1  # the line of the edit
    assert by_path.stderr == (
        f"rulebooks/huzhou.yaml:{line}:13: error: 'sideways' is not one of 'left', 'right' (at ratings.level.closed)\n"
        "1 error in 1 rulebook\n"
    )


def test_an_identical_local_copy_says_nothing(site, checkout):
    out = cli(site, checkout, "validate", "huzhou")
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith(f"ok: rulebooks/huzhou.yaml: huzhou {VERSION}")


def test_a_same_named_file_in_the_working_directory(site, tmp_path):
    work = tmp_path / "plain"
    work.mkdir()
    shutil.copy(ROOT / "rulebooks" / "shenzhen.yaml", work / "huzhou.yaml")  # same name, other book
    out = cli(site, work, "validate", "huzhou")
    assert out.returncode == 0
    assert "./huzhou.yaml differs from it and is not used (give its path, ./huzhou.yaml, to use it)" in out.stderr
    assert out.stdout.startswith(f"ok: rulebooks/huzhou.yaml: huzhou {VERSION}")  # no rulebooks/ folder here
    assert cli(site, work, "validate", "./huzhou.yaml").stdout.startswith("ok: huzhou.yaml: shenzhen ")


def test_rate_warns_once(site, checkout):
    edit(checkout / "rulebooks" / "huzhou.yaml", f"\nversion: {VERSION}", f"\nversion: {EDITED}")
    out = cli(site, checkout, "rate", "huzhou", str(SMALL), "-o", str(checkout / "out.csv"))
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("differs from it and is not used") == 1


def test_a_local_file_is_not_found_by_a_bare_name(site, tmp_path):
    work = tmp_path / "mine"
    work.mkdir()
    shutil.copy(ROOT / "rulebooks" / "huzhou.yaml", work / "mybook.yaml")
    out = cli(site, work, "validate", "mybook")
    assert out.returncode == 1
    assert out.stderr == (
        "error: no bundled rulebook named 'mybook'; to use the file ./mybook.yaml, give its path "
        "(bundled rulebooks: huzhou, national, quzhou, shenzhen)\n"
        "1 error in 1 rulebook\n"
    )
