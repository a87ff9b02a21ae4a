"""Signed traces and reports (issue #16, item 4): `ruleengine sign` / `report --sign-key` write a
detached Ed25519 signature; `ruleengine verify FILE --public-key KEY` checks the signature, the
file's digest and recomputation, and a tampered file or signature fails naming what failed."""

from __future__ import annotations

import json
from pathlib import Path

import ledger_required  # noqa: F401  (skips without the ledger extra)
import pytest
from click.testing import CliRunner

from ruleengine.analysis.trace import digest
from ruleengine.cli import main

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "golden" / "portfolios" / "small.csv"


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    for name in ("k", "o"):
        code, out = run("ledger", "keygen", "--private", str(d / f"{name}.pem"), "--public", str(d / f"{name}.pub"))
        assert code == 0, out
    return d


@pytest.fixture
def signed_trace(tmp_path, keys):
    code, out = run("explain", "huzhou", str(SMALL), "--firm", "G01", "--year", "2023", "--format", "json")
    assert code == 0, out
    t = tmp_path / "G01.json"
    t.write_text(out, encoding="utf-8")
    pem = (keys / "k.pem").read_text()
    code, out = run("sign", str(t), "--key-env", "RE_TEST_KEY", env={"RE_TEST_KEY": pem})
    assert code == 0, out
    assert out == f"signed {t}: {t}.sig\n"
    sig = json.loads((tmp_path / "G01.json.sig").read_text())
    assert sig["artifact"] == "trace" and sig["file"] == "G01.json" and sig["recipe"] is None
    assert pem.split("\n")[1] not in out + (tmp_path / "G01.json.sig").read_text()  # the private key never shows
    return t


def test_a_signed_trace_verifies(signed_trace, keys):
    code, out = run("verify", str(signed_trace), "--public-key", str(keys / "k.pub"))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("  ok: signature: valid, by the key ")
    assert lines[1].startswith("  ok: digest: the file is the one signed (sha256:")
    assert lines[2].startswith("  ok: recomputation: the trace's digest holds and ")
    assert lines[3] == "verified: G01.json (signed trace): signature, digest and recomputation hold"
    # unsigned checks still work without a key
    code, out = run("verify", str(signed_trace))
    assert code == 0 and out.startswith("verified: G01 2023 under huzhou")


def test_a_tampered_signed_trace_names_the_digest(signed_trace, keys):
    t = json.loads(signed_trace.read_text())
    t["incentive"]["rate_bp"] = -50
    signed_trace.write_text(json.dumps(t, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    code, out = run("verify", str(signed_trace), "--public-key", str(keys / "k.pub"))
    assert code == 1
    assert "  ok: signature: valid" in out
    assert "mismatch: digest: G01.json was changed after it was signed (its SHA-256 " in out


def test_a_forged_signature_file_names_the_signature(signed_trace, keys):
    import hashlib

    # the editor changes the trace and writes the new SHA-256 into the signature file
    text = signed_trace.read_text().replace('"status": "rated"', '"status": "unrated"', 1)
    signed_trace.write_text(text, encoding="utf-8")
    sig_path = Path(str(signed_trace) + ".sig")
    sig = json.loads(sig_path.read_text())
    sig["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    sig_path.write_text(json.dumps(sig))
    code, out = run("verify", str(signed_trace), "--public-key", str(keys / "k.pub"))
    assert code == 1
    assert out.startswith(
        "mismatch: signature: G01.json.sig does not verify with this public key "
        "(the signature file was changed after signing)"
    )
    # re-signed with the editor's own key: the trusted key says no, naming the other signer
    code, out = run("sign", str(signed_trace), "--key", str(keys / "o.pem"))
    assert code == 0
    code, out = run("verify", str(signed_trace), "--public-key", str(keys / "k.pub"))
    assert code == 1
    assert (
        "mismatch: signature: G01.json.sig does not verify with this public key (it names another signer's key" in out
    )


def test_a_forged_trace_signed_by_its_forger_fails_recomputation(tmp_path, signed_trace, keys):
    """Signature and digest hold (the signer signed a trace whose content was edited and whose
    own digest was recomputed), but re-rating names the forged field."""
    t = json.loads(signed_trace.read_text())
    t["incentive"]["rate_bp"] = -50
    t["digest"] = digest(t)
    signed_trace.write_text(json.dumps(t, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    assert run("sign", str(signed_trace), "--key", str(keys / "k.pem"))[0] == 0
    code, out = run("verify", str(signed_trace), "--public-key", str(keys / "k.pub"))
    assert code == 1
    assert "  ok: signature: valid" in out and "  ok: digest: the file is the one signed" in out
    assert "mismatch: recomputation: incentive.rate_bp: trace -50, recomputed " in out


def test_unsigned_files_and_bad_keys_get_clear_errors(tmp_path, signed_trace, keys):
    Path(str(signed_trace) + ".sig").unlink()
    code, out = run("verify", str(signed_trace), "--public-key", str(keys / "k.pub"))
    assert code == 1
    assert f"error: {signed_trace} is not signed: no signature file {signed_trace}.sig" in out
    code, out = run("sign", str(signed_trace), "--key-env", "RE_TEST_NO_SUCH_VAR")
    assert code == 1 and "error: the environment variable RE_TEST_NO_SUCH_VAR (signing key) is not set" in out
    code, out = run("sign", str(signed_trace), "--key-env", "K", env={"K": "not a key at all"})
    assert code == 1 and "not a key at all" not in out and "error: $K: expected a PEM Ed25519 private key" in out
    other = tmp_path / "notes.txt"
    other.write_text("x")
    code, out = run("sign", str(other), "--key", str(keys / "k.pem"))
    assert code == 1 and "sign a trace (.json from explain --format json) or a report" in out


@pytest.fixture
def report_dir(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "small.csv").write_bytes(SMALL.read_bytes())
    return d


def test_a_signed_report_verifies_by_recomputation_and_a_tampered_one_fails(report_dir, keys):
    pytest.importorskip("jinja2")
    data, out_html = report_dir / "small.csv", report_dir / "G01.html"
    code, out = run(
        "report", "huzhou", str(data), "--firm", "G01", "--lang", "en", "-o", str(out_html),
        "--sign-key", str(keys / "k.pem"),
    )  # fmt: skip
    assert code == 0, out
    assert f"signed: {out_html}.sig" in out
    recipe = json.loads(Path(f"{out_html}.sig").read_text())["recipe"]
    assert recipe["report"] == "firm" and recipe["firm"] == "G01" and recipe["data_name"] == "small.csv"
    code, out = run("verify", str(out_html), "--public-key", str(keys / "k.pub"))
    assert code == 0, out
    assert "  ok: recomputation: made again from its recipe and data, byte-identical" in out
    # the data the report claims to come from was edited: recomputation says so
    edited = report_dir.parent / "edited.csv"
    edited.write_text(data.read_text().replace("G01", "G01", 1) + "\n", encoding="utf-8")
    code, out = run("verify", str(out_html), "--public-key", str(keys / "k.pub"), "--data", str(edited))
    assert code == 1
    assert f"mismatch: recomputation: {edited} is not the data the report was made from" in out
    # one byte of the report changed
    html = out_html.read_bytes()
    out_html.write_bytes(html.replace(b"G01", b"G02", 1))
    code, out = run("verify", str(out_html), "--public-key", str(keys / "k.pub"))
    assert code == 1
    assert "mismatch: digest: G01.html was changed after it was signed" in out
    # a report needs the key
    code, out = run("verify", str(out_html))
    assert code == 2 and "a report is verified by its signature: give --public-key KEY" in out


def test_a_report_signed_without_a_recipe(report_dir, keys):
    pytest.importorskip("jinja2")
    out_html = report_dir / "p.html"
    code, out = run(
        "report", "huzhou", str(report_dir / "small.csv"), "--portfolio", "--lang", "en", "-o", str(out_html)
    )
    assert code == 0, out
    assert run("sign", str(out_html), "--key", str(keys / "k.pem"))[0] == 0
    code, out = run("verify", str(out_html), "--public-key", str(keys / "k.pub"))
    assert code == 1
    assert "mismatch: recomputation: the signature carries no recipe" in out
    code, out = run("verify", str(out_html), "--public-key", str(keys / "k.pub"), "--no-recompute")
    assert code == 0
    assert out.splitlines()[-1] == "verified: p.html (signed report): signature and digest hold (not recomputed)"


def test_a_signed_pdf_report_with_one_byte_changed_fails(report_dir, keys):
    pytest.importorskip("weasyprint")
    pdf = report_dir / "G01.pdf"
    code, out = run(
        "report", "huzhou", str(report_dir / "small.csv"), "--firm", "G01", "--lang", "en", "-o", str(pdf),
        "--sign-key", str(keys / "k.pem"),
    )  # fmt: skip
    assert code == 0, out
    code, out = run("verify", str(pdf), "--public-key", str(keys / "k.pub"))
    assert code == 0, out
    assert "byte-identical" in out
    raw = bytearray(pdf.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    pdf.write_bytes(bytes(raw))
    code, out = run("verify", str(pdf), "--public-key", str(keys / "k.pub"), "--no-recompute")
    assert code == 1
    assert "mismatch: digest: G01.pdf was changed after it was signed" in out


def test_a_report_made_from_a_relative_path_is_recomputed_from_a_copy_elsewhere(
    tmp_path, report_dir, keys, monkeypatch
):
    """The report's trace digest covers the data path as given (relative here): verify --data puts
    the copy at that path in a temporary folder, and the bytes come out the same."""
    pytest.importorskip("jinja2")
    monkeypatch.chdir(report_dir)
    code, out = run(
        "report", "huzhou", "small.csv", "--firm", "G02", "-o", "G02.html", "--sign-key", str(keys / "k.pem")
    )
    assert code == 0, out
    elsewhere = tmp_path / "archive"
    elsewhere.mkdir()
    (elsewhere / "copy.csv").write_bytes((report_dir / "small.csv").read_bytes())
    monkeypatch.chdir(tmp_path)
    code, out = run("verify", "r/G02.html", "--public-key", str(keys / "k.pub"))
    assert code == 1 and "the data file small.csv the report was made from is not here; give it with --data" in out
    code, out = run("verify", "r/G02.html", "--public-key", str(keys / "k.pub"), "--data", "archive/copy.csv")
    assert code == 0, out
    assert "byte-identical" in out
