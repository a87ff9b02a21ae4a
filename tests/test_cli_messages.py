"""CLI messages that named the wrong thing (each through the real CLI, one exact line, its exit code,
never a traceback): `verify` against another rulebook, with a missing --data file or with another
file's signature; `sign --key --key-env` naming report's options; `service-key --rulebook` taking
any text; `acquire meters` listing an unreadable file twice."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_acquire_meters import READINGS, REGISTER_METER
from test_signed_artifacts import run

import ruleengine
from ruleengine.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "golden" / "portfolios" / "small.csv"


def last(out: str) -> str:
    """The one message line (after the `ok:` lines of the checks that held), and no other."""
    lines = [x for x in out.splitlines() if not x.startswith("  ok: ")]
    assert len(lines) == 1, out
    return lines[0]


def book(name: str) -> tuple[str, str]:
    plan = ruleengine.load(name)
    return f"{plan.id} {plan.version}", plan.hash


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """Two signed traces (G01, G02) and, with jinja2, two signed reports, made with huzhou."""
    pytest.importorskip("cryptography")
    d = tmp_path_factory.mktemp("signed")
    shutil.copyfile(SMALL, d / "small.csv")
    code, out = run("ledger", "keygen", "--private", str(d / "k.pem"), "--public", str(d / "k.pub"))
    assert code == 0, out
    for firm in ("G01", "G02"):
        code, out = run("explain", "huzhou", str(d / "small.csv"), "--firm", firm, "--year", "2023", "--format", "json")
        assert code == 0, out
        (d / f"{firm}.json").write_text(out, encoding="utf-8")
        assert run("sign", str(d / f"{firm}.json"), "--key", str(d / "k.pem"))[0] == 0
    return d


@pytest.fixture(scope="module")
def reports(signed):
    pytest.importorskip("jinja2")
    for firm in ("G01", "G02"):
        code, out = run(
            "report", "huzhou", str(signed / "small.csv"), "--firm", firm, "--lang", "en",
            "-o", str(signed / f"{firm}.html"), "--sign-key", str(signed / "k.pem"),
        )  # fmt: skip
        assert code == 0, out
    return signed


# --- 1a. verify against another rulebook ----------------------------------------------------------


def test_a_signed_report_verified_with_another_rulebook_names_both(reports):
    huzhou, quzhou = book("huzhou"), book("quzhou")
    code, out = run("verify", str(reports / "G01.html"), "--public-key", str(reports / "k.pub"), "--book", "quzhou")
    assert code == 1
    assert last(out) == (
        f"mismatch: recomputation: the rulebook quzhou ({quzhou[0]}, {quzhou[1]}) differs from the one the "
        f"signature names: huzhou ({huzhou[1]})"
    )
    # the rulebook the signature names, given: made again with it
    code, out = run("verify", str(reports / "G01.html"), "--public-key", str(reports / "k.pub"), "--book", "huzhou")
    assert code == 0, out


@pytest.mark.parametrize("signed_check", [True, False], ids=["signed", "unsigned"])
def test_a_trace_verified_with_another_rulebook_names_both(signed, signed_check):
    huzhou, national = book("huzhou"), book("national")
    key = ["--public-key", str(signed / "k.pub")] if signed_check else []
    code, out = run("verify", str(signed / "G01.json"), *key, "--book", "national")
    assert code == 1
    assert last(out) == (
        f"mismatch: {'recomputation: ' if signed_check else ''}the rulebook national ({national[0]}, {national[1]}) "
        f"differs from the one the trace names: {huzhou[0]} ({huzhou[1]})"
    )


# --- 1b. a missing --data file ---------------------------------------------------------------------


def test_a_missing_data_file_is_said_not_to_exist(reports):
    nope = reports / "nope.csv"
    code, out = run("verify", str(reports / "G01.html"), "--public-key", str(reports / "k.pub"), "--data", str(nope))
    assert code == 1
    assert last(out) == f"mismatch: recomputation: the data file {nope} (--data) does not exist"


# --- 1c. another file's signature ------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["json", "html"])
def test_another_files_signature_is_said_to_sign_that_file(request, suffix):
    d = request.getfixturevalue("signed" if suffix == "json" else "reports")
    a, b = d / f"G01.{suffix}", d / f"G02.{suffix}"
    signed_b = json.loads(Path(f"{b}.sig").read_text())["sha256"]
    actual = hashlib.sha256(a.read_bytes()).hexdigest()
    code, out = run("verify", str(a), "--public-key", str(d / "k.pub"), "--signature", f"{b}.sig")
    assert code == 1
    assert last(out) == (
        f"mismatch: digest: G02.{suffix}.sig is the signature of another file: it signs G02.{suffix} "
        f"(SHA-256 {signed_b[:16]}…), not G01.{suffix} (SHA-256 {actual[:16]}…)"
    )


def test_a_changed_file_under_its_own_name_is_still_changed(signed, tmp_path):
    t = tmp_path / "G01.json"
    t.write_bytes((signed / "G01.json").read_bytes() + b"\n")
    shutil.copyfile(signed / "G01.json.sig", tmp_path / "G01.json.sig")
    code, out = run("verify", str(t), "--public-key", str(signed / "k.pub"))
    assert code == 1 and last(out).startswith("mismatch: digest: G01.json was changed after it was signed")


# --- 2. sign --key with --key-env -----------------------------------------------------------------


def test_sign_with_both_key_options_names_its_own_options(signed):
    code, out = run(
        "sign", str(signed / "G01.json"), "--key", str(signed / "k.pem"), "--key-env", "RE_K",
        env={"RE_K": (signed / "k.pem").read_text()},
    )  # fmt: skip
    assert code == 1
    assert out == "error: give the signing key by --key FILE or --key-env NAME, not both\n"


def test_rate_with_both_sign_key_options_still_names_them(signed, tmp_path):
    pytest.importorskip("sqlalchemy")
    code, out = run(
        "rate", "huzhou", str(SMALL), "--ledger", str(tmp_path / "l.db"),
        "--sign-key", str(signed / "k.pem"), "--sign-key-env", "RE_K",
        env={"RE_K": (signed / "k.pem").read_text()},
    )  # fmt: skip
    assert code == 1
    assert last(out) == "error: give the signing key by --sign-key FILE or --sign-key-env NAME, not both"


# --- 3. service-key --rulebook --------------------------------------------------------------------

RULE = (
    "give a bundled rulebook (`ruleengine books`) or the name one is published under in the service registry: "
    "a lowercase letter, then up to 39 lowercase letters, digits or _; never a path"
)


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("rulebooks/huzhou.yaml", "is a path, not a rulebook name"),
        ("../x", "is a path, not a rulebook name"),
        ("huzhou.yaml", "is a path, not a rulebook name"),
        ("Huzhou", "is not a rulebook name"),
        ("hu-zhou", "is not a rulebook name"),
        ("", "is not a rulebook name"),
    ],
)
def test_service_key_refuses_a_rulebook_that_is_no_registry_name(tmp_path, given, said):
    kf = tmp_path / "keys.json"
    code, out = run(
        "service-key", str(kf), "--name", "m", "--role", "author", "--rulebook", "huzhou", "--rulebook", given
    )
    assert code == 1
    assert out == f"error: {kf}: --rulebook {given!r} {said}: {RULE}\n"
    assert not kf.exists()


def test_service_key_takes_a_bundled_or_later_published_rulebook_name(tmp_path):
    kf = tmp_path / "keys.json"
    result = CliRunner().invoke(
        main, ["service-key", str(kf), "--name", "r", "--role", "regulator", "--rulebook", "huzhou"]
    )
    assert result.exit_code == 0 and result.stderr == "" and result.stdout.startswith("re_")
    result = CliRunner().invoke(
        main, ["service-key", str(kf), "--name", "a", "--role", "author", "--rulebook", "new_book2"]
    )
    assert result.exit_code == 0 and result.stdout.startswith("re_")
    assert result.stderr == (
        "note: no bundled rulebook is named 'new_book2': the key covers it once it is published to the service "
        "under that name\n"
    )
    keys = json.loads(kf.read_text())["keys"]
    assert [k["rulebooks"] for k in keys] == [["huzhou"], ["new_book2"]]
    code, out = run("service-key", "--help")
    assert "A path or another name shape is refused." in " ".join(out.split())


# --- 4. acquire: an unreadable file listed once ---------------------------------------------------


def test_acquire_meters_lists_an_unreadable_file_once(tmp_path):
    (tmp_path / "reg.yaml").write_text(REGISTER_METER.replace("{policy}", "missing"), encoding="utf-8")
    (tmp_path / "r.csv").write_text(READINGS, encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"meter,timestamp,value\n\xff\xfe\x00garbage\x00\n")
    out, rep = tmp_path / "fy.csv", tmp_path / "q.txt"
    code, said = run(
        "acquire", "meters", str(tmp_path / "r.csv"), str(bad), "--register", str(tmp_path / "reg.yaml"),
        "-o", str(out), "--report", str(rep),
    )  # fmt: skip
    assert code == 0
    assert said == f"wrote 1 firm-year(s) to {out}; report {rep}: 1 error(s), 1 warning(s), 5 note(s)\n"
    lines = [x for x in rep.read_text(encoding="utf-8").splitlines() if "error[unreadable]" in x]
    assert lines == [
        f"  {bad}: error[unreadable] {bad}: not UTF-8 text (byte 23): a binary file, or another encoding; file skipped"
    ]
