"""Signed runs (issue #16): Ed25519 keys from a file or a named environment variable, never logged
or stored; `ruleengine ledger verify RUN --public-key` checks signature, digests and recomputation."""

from __future__ import annotations

import ledger_required  # noqa: F401  (skips without the ledger extra)
import pytest
from click.testing import CliRunner
from ledger_pg import bypass, make_sample

from ruleengine.cli import main
from ruleengine.ledger import open_ledger


@pytest.fixture
def keys(tmp_path):
    runner = CliRunner()
    out = runner.invoke(
        main, ["ledger", "keygen", "--private", str(tmp_path / "k.pem"), "--public", str(tmp_path / "k.pub")]
    )
    assert out.exit_code == 0, out.output
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    other = runner.invoke(
        main, ["ledger", "keygen", "--private", str(tmp_path / "o.pem"), "--public", str(tmp_path / "o.pub")]
    )
    assert other.exit_code == 0
    return tmp_path / "k.pem", tmp_path / "k.pub", tmp_path / "o.pub"


def test_sign_with_a_key_file_and_verify(ledger_url, tmp_path, keys):
    priv, pub, other = keys
    data = make_sample(tmp_path / "firms.csv", firms=10)
    runner = CliRunner()
    out = runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", ledger_url, "--sign-key", str(priv)])
    assert out.exit_code == 0, out.output
    assert "recorded run 1 in " in out.output and ", signed)" in out.output
    pem = priv.read_text()
    assert pem.split("\n")[1] not in out.output  # the key never shows
    out = runner.invoke(main, ["ledger", "-l", ledger_url, "verify", "1", "--public-key", str(pub)])
    assert out.exit_code == 0, out.output
    assert "run 1: signature valid" in out.output
    assert "run 1: digests hold (header, 20 ratings, blobs)" in out.output
    assert "run 1: recomputed byte-identical" in out.output
    out = runner.invoke(main, ["ledger", "-l", ledger_url, "verify", "1", "--public-key", str(other)])
    assert out.exit_code == 1
    assert "error: run 1: the signature does not verify with this public key" in out.output
    # the ledger keeps the public key and the signature, never the private key
    led = open_ledger(ledger_url)
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(priv.read_bytes(), None)
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    run = led.run(1)
    assert (
        run["public_key"]
        == key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    )
    if not ledger_url.startswith("postgresql"):
        blob = __import__("pathlib").Path(ledger_url).read_bytes()
        assert seed not in blob and seed.hex().encode() not in blob
    led.dispose()


def test_sign_with_a_key_in_a_named_environment_variable(ledger_url, tmp_path, keys, monkeypatch):
    priv, pub, _ = keys
    monkeypatch.setenv("MY_LEDGER_KEY", priv.read_text())
    data = make_sample(tmp_path / "firms.csv", firms=6)
    runner = CliRunner()
    out = runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", ledger_url, "--sign-key-env", "MY_LEDGER_KEY"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["ledger", "-l", ledger_url, "verify", "1", "--public-key", str(pub), "--no-replay"])
    assert out.exit_code == 0 and "signature valid" in out.output and "recomputed" not in out.output
    out = runner.invoke(
        main, ["rate", "huzhou", str(data), "--ledger", ledger_url, "--sign-key-env", "NOT_SET_ANYWHERE"]
    )
    assert (
        out.exit_code == 1 and "error: the environment variable NOT_SET_ANYWHERE (signing key) is not set" in out.output
    )
    monkeypatch.setenv("BAD_KEY", "not a key")
    out = runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", ledger_url, "--sign-key-env", "BAD_KEY"])
    assert out.exit_code == 1
    assert "error: $BAD_KEY: expected a PEM Ed25519 private key or a 32-byte seed in hex or base64" in out.output
    assert "not a key" not in out.output  # not even a bad key is echoed
    assert [r["id"] for r in open_ledger(ledger_url).runs()] == [1]


def test_a_changed_signed_run_fails_verification(ledger_url, tmp_path, keys):
    priv, pub, _ = keys
    data = make_sample(tmp_path / "firms.csv", firms=6)
    runner = CliRunner()
    assert (
        runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", ledger_url, "--sign-key", str(priv)]).exit_code
        == 0
    )
    bypass(ledger_url, "UPDATE ledger_ratings SET rating = 'X' WHERE run_id = 1 AND seq = 2")
    out = runner.invoke(main, ["ledger", "-l", ledger_url, "verify", "1", "--public-key", str(pub)])
    assert out.exit_code == 1
    assert "signature valid" in out.output  # the header is as signed …
    assert "error: run 1: rating #2 " in out.output  # … but a rating under it was changed
    bypass(ledger_url, "UPDATE ledger_runs SET run_hash = 'sha256:00' WHERE id = 1")
    out = runner.invoke(main, ["ledger", "-l", ledger_url, "verify", "1", "--public-key", str(pub)])
    assert out.exit_code == 1 and "the signature does not verify" in out.output


def test_unsigned_run_and_missing_key(ledger_url, tmp_path, keys):
    _priv, pub, _ = keys
    data = make_sample(tmp_path / "firms.csv", firms=6)
    runner = CliRunner()
    assert runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", ledger_url]).exit_code == 0
    out = runner.invoke(main, ["ledger", "-l", ledger_url, "verify", "1", "--public-key", str(pub)])
    assert out.exit_code == 1 and "error: run 1 is not signed" in out.output
    out = runner.invoke(
        main, ["rate", "huzhou", str(data), "--ledger", ledger_url, "--sign-key", str(tmp_path / "nope.pem")]
    )
    assert out.exit_code == 1 and "error: cannot read the signing key" in out.output


def test_check_verifies_each_signature_with_its_stored_key(ledger_url, tmp_path, keys):
    """`ledger check` verified the chain but no signature: an edited signature, or a signed run
    edited and the chain re-hashed from it (what a writer without the private key can do), passed.
    Each signed run's signature is now checked against the public key stored with it; unsigned
    runs need none."""
    from ruleengine.ledger.record import run_hash

    priv, _pub, _ = keys
    data = make_sample(tmp_path / "firms.csv", firms=6)
    runner = CliRunner()
    for extra in (["--sign-key", str(priv)], []):  # run 1 signed, run 2 not
        out = runner.invoke(main, ["rate", "huzhou", str(data), "--ledger", ledger_url, *extra])
        assert out.exit_code == 0, out.output

    def check() -> tuple[int, str]:
        out = runner.invoke(main, ["ledger", "-l", ledger_url, "check"])
        return out.exit_code, out.output

    assert check() == (0, "ledger intact: 2 runs, 24 ratings, 5 blobs; every link holds\n")
    broken = (
        "ledger BROKEN: first broken link: run 1: its signature does not verify with its stored public key "
        "(the signature or the signed run_hash was changed)\n"
    )
    led = open_ledger(ledger_url)
    r1, r2 = led.run(1), led.run(2)
    sig = r1["signature"]
    bypass(ledger_url, f"UPDATE ledger_runs SET signature = '{'1' if sig[0] == '0' else '0'}{sig[1:]}' WHERE id = 1")
    assert check() == (1, broken)
    bypass(ledger_url, f"UPDATE ledger_runs SET signature = '{sig}' WHERE id = 1")
    assert check()[0] == 0
    # a signed field edited and every hash from it recomputed: the chain holds, the signature does not
    h1 = run_hash({**r1, "who": "mallory"}, r1["prev_hash"], r1["hash_alg"])
    h2 = run_hash(r2, h1, r2["hash_alg"])
    bypass(
        ledger_url,
        f"UPDATE ledger_runs SET who = 'mallory', run_hash = '{h1}' WHERE id = 1; "
        f"UPDATE ledger_runs SET prev_hash = '{h1}', run_hash = '{h2}' WHERE id = 2",
    )
    assert check() == (1, broken)
    assert led.check().problems == [broken[len("ledger BROKEN: first broken link: ") : -1]]
    # the stored key replaced by another (valid) key: the signature does not verify with it either
    bypass(ledger_url, f"UPDATE ledger_runs SET who = '{r1['who']}', run_hash = '{r1['run_hash']}' WHERE id = 1")
    bypass(
        ledger_url, f"UPDATE ledger_runs SET prev_hash = '{r1['run_hash']}', run_hash = '{r2['run_hash']}' WHERE id = 2"
    )
    assert check()[0] == 0
    other_hex = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"  # RFC 8032 test 1 key
    bypass(ledger_url, f"UPDATE ledger_runs SET public_key = '{other_hex}' WHERE id = 1")
    assert check() == (1, broken)
    bypass(ledger_url, "UPDATE ledger_runs SET public_key = 'zz' WHERE id = 1")
    assert check() == (
        1,
        "ledger BROKEN: first broken link: run 1: its stored public key is not an Ed25519 public key (it was edited)\n",
    )
    led.dispose()
