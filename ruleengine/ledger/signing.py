"""Signed runs: Ed25519 (``cryptography``) over ``"ruleengine-ledger-run\\n" + run_hash``.

The private key comes from a file or from an environment variable the operator names (PEM
PKCS#8, or the 32-byte raw seed as hex or base64). It is never printed, logged or stored: the
ledger keeps the signature and the raw public key only. Verification takes the public key the
operator trusts (a PEM file or raw hex), not the one stored with the run.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

from .errors import LedgerError, TamperError
from .record import SIGN_CONTEXT


def _need() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:  # pragma: no cover
        raise LedgerError("signing needs the 'ledger' extra: pip install 'ruleengine[ledger]'") from None


def _private_from_bytes(raw: bytes, where: str) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    text = raw.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError) as exc:
            raise LedgerError(f"{where}: not an unencrypted PEM private key ({type(exc).__name__})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise LedgerError(f"{where}: the key is not an Ed25519 key")
        return key
    seed = _decode_32(text)
    if seed is None:
        raise LedgerError(f"{where}: expected a PEM Ed25519 private key or a 32-byte seed in hex or base64")
    return Ed25519PrivateKey.from_private_bytes(seed)


def _decode_32(text: bytes) -> bytes | None:
    for decode in (binascii.unhexlify, base64.b64decode):
        try:
            out = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(out) == 32:
            return out
    return None


def load_private_key(
    *,
    key_file: str | Path | None = None,
    key_env: str | None = None,
    options: tuple[str, str] = ("--sign-key", "--sign-key-env"),
) -> Any:
    """The Ed25519 private key of ``key_file`` or of the environment variable ``key_env``.
    ``options``: the caller's names of the two (its key-file option, its variable option), for the
    messages."""
    _need()
    file_opt, env_opt = options
    if key_file and key_env:
        raise LedgerError(f"give the signing key by {file_opt} FILE or {env_opt} NAME, not both")
    if key_file:
        p = Path(key_file)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise LedgerError(f"cannot read the signing key {p}: {exc.strerror or exc}") from None
        return _private_from_bytes(raw, str(p))
    if key_env:
        value = os.environ.get(key_env)
        if not value:
            raise LedgerError(f"the environment variable {key_env} (signing key) is not set")
        return _private_from_bytes(value.encode(), f"${key_env}")
    raise LedgerError(f"no signing key given ({file_opt} FILE or {env_opt} NAME)")


def signer(private_key: Any) -> Any:
    from cryptography.hazmat.primitives import serialization

    pub = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()

    def sign(message: bytes) -> tuple[str, str]:
        return private_key.sign(message).hex(), pub

    sign.public_key = pub  # type: ignore[attr-defined]  # the raw public key (hex), for what is signed
    return sign


def load_public_key(spec: str | Path) -> Any:
    """A public key from a PEM file, a file holding raw hex, or raw hex given directly."""
    _need()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    p = Path(spec)
    raw = p.read_bytes().strip() if p.is_file() else str(spec).strip().encode()
    if raw.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(raw)
        except ValueError as exc:
            raise LedgerError(f"{spec}: not a PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise LedgerError(f"{spec}: the key is not an Ed25519 public key")
        return key
    b = _decode_32(raw)
    if b is None:
        raise LedgerError(f"{spec}: expected a PEM Ed25519 public key file or 32 bytes in hex")
    return Ed25519PublicKey.from_public_bytes(b)


def verify_run(run: dict[str, Any], public_key: Any) -> None:
    """Raise :class:`TamperError` unless ``run`` carries a valid signature by ``public_key``."""
    from cryptography.exceptions import InvalidSignature

    if not run.get("signature"):
        raise TamperError(f"run {run['id']} is not signed")
    try:
        public_key.verify(bytes.fromhex(run["signature"]), SIGN_CONTEXT + run["run_hash"].encode())
    except (InvalidSignature, ValueError):
        raise TamperError(
            f"run {run['id']}: the signature does not verify with this public key "
            "(the run was changed, or it was signed with another key)"
        ) from None


def stored_signature_problem(run: dict[str, Any], keys: dict[str, Any] | None = None) -> str | None:
    """What is wrong with ``run``'s signature checked against the public key stored with it, or
    None (an unsigned run: nothing to check). ``ledger check`` calls it for every run: it finds an
    edited signature and a run whose fields were edited and its ``run_hash`` recomputed; that the
    stored key is one you trust is ``ledger verify --public-key``'s question. ``keys``: a cache of
    loaded keys by their hex."""
    sig, pub = run.get("signature"), run.get("public_key")
    if not sig and not pub:
        return None
    rid = run["id"]
    if not sig:
        return f"run {rid}: a public key is stored but no signature (the signature was removed)"
    if not pub:
        return f"run {rid}: signed, but no public key is stored with the signature (it was removed)"
    _need()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    cache = {} if keys is None else keys
    key = cache.get(pub)
    if key is None:
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(pub))
        except ValueError:
            return f"run {rid}: its stored public key is not an Ed25519 public key (it was edited)"
        cache[pub] = key
    try:
        verify_run(run, key)
    except TamperError:
        return (
            f"run {rid}: its signature does not verify with its stored public key "
            "(the signature or the signed run_hash was changed)"
        )
    return None


def generate(private_out: str | Path, public_out: str | Path) -> str:
    """Write a new Ed25519 key pair (private PEM with mode 0600); returns the public key hex."""
    _need()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    priv, pubfile = Path(private_out), Path(public_out)
    if priv.resolve() == pubfile.resolve():
        raise LedgerError(
            f"--private and --public are the same file ({priv}): the public key would overwrite the private"
        )
    for f in (priv, pubfile):  # neither key of an existing pair is ever overwritten (the pair would break)
        if f.exists():
            raise LedgerError(f"{f} exists: not overwriting a key")
    pub = key.public_key()
    pub_pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    written: list[Path] = []
    try:
        for f, data, mode in ((priv, pem, 0o600), (pubfile, pub_pem, 0o644)):
            fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            written.append(f)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
    except OSError as exc:
        for f in written:  # no half pair left behind (a retry would meet "exists")
            f.unlink(missing_ok=True)
        raise LedgerError(f"cannot write the key {exc.filename or ''}: {exc.strerror or exc}") from None
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
