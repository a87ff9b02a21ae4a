"""Signed traces and reports: a detached Ed25519 signature next to the file, checked by
``ruleengine verify``.

A signature is a small JSON file, ``FILE.sig`` by default::

    {"signature_format": 1, "artifact": "trace" | "report", "file": "G01.html",
     "sha256": "<hex of the file's bytes>", "public_key": "<raw Ed25519 key, hex>",
     "recipe": {...} | null, "signature": "<hex>"}

The signature covers ``"ruleengine-artifact-v1\\n"`` + the canonical JSON (keys sorted, no spaces,
UTF-8) of every field but ``signature``: the file's SHA-256, what it is, the signer's public key and,
for a report written by ``ruleengine report --sign-key``, the *recipe* it was made from (rulebook
and its hash, the data file's name and SHA-256, firm, year, language, date), so that ``verify`` can
make it again and compare bytes. The file itself is not touched (reports stay byte-for-byte what
``report`` writes; a trace stays the JSON ``explain`` prints).

Verification takes the public key the operator trusts (``--public-key``), never the one written in
the signature file, and checks, in order: the signature, the file's digest against the signed
one, then recomputation (a trace: its own digest and every field re-rated, ``analysis.trace.verify``;
a report: rendered again from its recipe and the data, byte for byte). Keys come from
:mod:`ruleengine.ledger.signing` (a file or an environment variable; never printed or logged).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .canonical import canonical_json
from .errors import LedgerError

CONTEXT = b"ruleengine-artifact-v1\n"
SIG_FORMAT = 1
ARTIFACTS = ("trace", "report")
REPORT_SUFFIXES = (".html", ".htm", ".pdf")


@dataclass
class Verdict:
    """What ``verify`` found: ``passed`` lines in order, and the ``failed`` ones (first = what broke)."""

    file: Path
    artifact: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    recipe: dict[str, Any] | None = None  # the signed recipe (a report's), from the signature checked

    @property
    def ok(self) -> bool:
        return not self.failed


def signature_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".sig")


def artifact_kind(path: str | Path) -> str:
    """``trace`` for a .json file, ``report`` for .html/.htm/.pdf."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return "trace"
    if suffix in REPORT_SUFFIXES:
        return "report"
    raise LedgerError(f"{path}: sign a trace (.json from explain --format json) or a report (.html, .pdf)")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sign(
    path: str | Path,
    signer: Any,
    *,
    artifact: str | None = None,
    recipe: dict[str, Any] | None = None,
    out: str | Path | None = None,
) -> Path:
    """Write the detached signature of ``path`` (``signer``: :func:`signing.signer` of a private key)
    to ``out`` (default ``path + '.sig'``); returns where it was written."""
    p = Path(path)
    if not p.is_file():
        raise LedgerError(f"{p}: no such file to sign")
    kind = artifact or artifact_kind(p)
    if kind not in ARTIFACTS:
        raise LedgerError(f"unknown artifact kind '{kind}' (trace or report)")
    if kind == "trace":
        _check_trace_shape(p)
    body: dict[str, Any] = {
        "signature_format": SIG_FORMAT,
        "artifact": kind,
        "file": p.name,
        "sha256": _sha256_file(p),
        "public_key": None,
        "recipe": recipe,
    }
    body["public_key"] = signer.public_key  # the signer's public key is part of what is signed
    body["signature"], _ = signer(CONTEXT + canonical_json(body))
    target = Path(out) if out is not None else signature_path(p)
    try:
        target.write_text(json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise LedgerError(f"cannot write the signature {target}: {exc.strerror or exc}") from None
    return target


def _check_trace_shape(p: Path) -> None:
    try:
        data = json.loads(p.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise LedgerError(f"{p}: not a ruleengine trace (not JSON): sign the output of explain --format json") from None
    if not isinstance(data, dict) or "digest" not in data or "replay" not in data:
        raise LedgerError(f"{p}: not a ruleengine trace (no digest/replay): sign the output of explain --format json")


def read_signature(path: Path) -> dict[str, Any]:
    try:
        sig = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LedgerError(f"{path}: no such signature file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LedgerError(f"{path}: not a ruleengine signature (not JSON: {exc})") from None
    need = {"signature_format", "artifact", "file", "sha256", "public_key", "recipe", "signature"}
    if not isinstance(sig, dict) or not need <= set(sig):
        missing = sorted(need - set(sig)) if isinstance(sig, dict) else sorted(need)
        raise LedgerError(f"{path}: not a ruleengine signature (missing {', '.join(missing)})")
    if sig["signature_format"] != SIG_FORMAT:
        raise LedgerError(f"{path}: signature format {sig['signature_format']!r} (this ruleengine reads {SIG_FORMAT})")
    return sig


def check_signature(path: str | Path, public_key: Any, sig_path: str | Path | None = None) -> Verdict:
    """Signature and digest of ``path`` (no recomputation): a :class:`Verdict`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    p = Path(path)
    sp = Path(sig_path) if sig_path is not None else signature_path(p)
    if not sp.is_file():
        raise LedgerError(f"{p} is not signed: no signature file {sp} (sign it with: ruleengine sign {p} --key …)")
    sig = read_signature(sp)
    v = Verdict(p, str(sig["artifact"]), recipe=sig.get("recipe"))
    body = {k: val for k, val in sig.items() if k != "signature"}
    trusted = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    try:
        public_key.verify(bytes.fromhex(str(sig["signature"])), CONTEXT + canonical_json(body))
    except (InvalidSignature, ValueError):
        other = sig["public_key"] != trusted
        v.failed.append(
            f"signature: {sp.name} does not verify with this public key "
            + (
                "(it names another signer's key: signed with another key, or the key in it was replaced)"
                if other
                else "(the signature file was changed after signing)"
            )
        )
        return v
    v.passed.append(f"signature: valid, by the key {trusted[:16]}…")
    actual = _sha256_file(p)
    signed_name = str(sig["file"])
    if actual != sig["sha256"]:
        if signed_name != p.name:  # the signed name (covered by the signature) is another file's
            v.failed.append(
                f"digest: {sp.name} is the signature of another file: it signs {signed_name} "
                f"(SHA-256 {str(sig['sha256'])[:16]}…), not {p.name} (SHA-256 {actual[:16]}…)"
            )
        else:
            v.failed.append(
                f"digest: {p.name} was changed after it was signed (its SHA-256 {actual[:16]}… is not the signed "
                f"{str(sig['sha256'])[:16]}…)"
            )
        return v
    renamed = f", signed as {signed_name}" if signed_name != p.name else ""
    v.passed.append(f"digest: the file is the one signed (sha256:{actual[:16]}…{renamed})")
    return v


def rulebook_mismatch(book: str, named: str, named_hash: str, where: str) -> str | None:
    """None if ``book`` compiles to ``named_hash``, else a sentence naming both rulebooks: ``book``
    (given to verify) and ``named`` (what ``where``, e.g. "the signature", says the file was made
    with)."""
    from ..rulebook.loader import load

    plan = load(book)
    if plan.hash == named_hash:
        return None
    return (
        f"the rulebook {book} ({plan.id} {plan.version}, {plan.hash}) differs from the one {where} names: "
        f"{named} ({named_hash})"
    )


# --- reports: the recipe, and making the report again ------------------------------------------------


def report_recipe(
    book: str,
    plan: Any,
    data: str | Path,
    kind: str,
    firm: str | None,
    year: int | None,
    lang: str,
    date: str | None,
    appendix: bool = True,
) -> dict[str, Any]:
    """What a report was made from, enough to make it again (signed with it)."""
    d = Path(data)
    return {
        "report": kind,
        "book": book,
        "rulebook_hash": plan.hash,
        "data": str(data),  # as given: the report's trace digest covers the data path as the engine saw it
        "data_name": d.name,
        "data_sha256": _sha256_file(d) if d.is_file() else None,
        "firm": firm,
        "year": year,
        "lang": lang,
        "date": date,
        "appendix": appendix,
    }


def recompute_report(
    path: Path, recipe: dict[str, Any], data: str | Path | None, book: str | None = None
) -> str | None:
    """Make the report again from ``recipe`` and ``data``; None if the bytes are the same, else why not.

    The report's trace digest covers the data path as it was given when the report was made, so the
    report is made again from that same path: the recorded one, or (``data`` given, the recorded path
    relative) ``data`` placed at that relative path in a temporary folder the rating runs in.
    ``book`` (optional) is the rulebook to make it with instead of the recorded one: it must
    compile to the signed rulebook hash (the same rulebook found elsewhere)."""
    import contextlib

    import ruleengine

    from .. import report as rep

    if book is not None:
        why = rulebook_mismatch(book, str(recipe["book"]), str(recipe["rulebook_hash"]), "the signature")
        if why:
            return f"recomputation: {why}"
    given = str(recipe["data"])
    src = Path(data) if data is not None else Path(given)
    if data is not None and not src.is_file():
        return f"recomputation: the data file {data} (--data) " + (
            "is not a file" if src.exists() else "does not exist"
        )
    if not src.is_file():
        return f"recomputation: the data file {given} the report was made from is not here; give it with --data FILE"
    if recipe.get("data_sha256") and _sha256_file(src) != recipe["data_sha256"]:
        return (
            f"recomputation: {src} is not the data the report was made from (its SHA-256 differs from the signed one)"
        )
    if data is not None and Path(given).is_absolute() and Path(given).resolve() != src.resolve():
        return (
            f"recomputation: the report was made from {given} (an absolute path it names): put the data there, "
            "or verify from the folder the report was made in"
        )
    if book is None:
        book = str(recipe["book"])
        plan = ruleengine.load(book)
        if plan.hash != recipe["rulebook_hash"]:
            return (
                f"recomputation: rulebook {book} compiles to {plan.hash} today, the report was made with "
                f"{recipe['rulebook_hash']}"
            )
    if Path(book).is_file():  # a rulebook file given by path: still found from the temporary folder
        book = str(Path(book).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="ruleengine-verify-"))
    try:
        where: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if data is not None and not Path(given).is_absolute():
            staged = tmp / "cwd" / given
            staged.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(src.resolve(), staged)
            except OSError:
                shutil.copyfile(src, staged)
            where = contextlib.chdir(tmp / "cwd")
        out = (tmp / ("again" + path.suffix.lower())).resolve()
        with where:
            if recipe["report"] == "portfolio":
                rated = rep.rate_portfolio(book, given, what_it_takes=True)
                rep.write_portfolio(rated, out, recipe["year"], recipe["lang"], recipe["date"])
            else:
                rated = rep.rate_portfolio(book, given, what_it_takes=False)
                rep.write_firm(
                    rated,
                    str(recipe["firm"]),
                    recipe["year"],
                    out,
                    recipe["lang"],
                    recipe["date"],
                    bool(recipe.get("appendix", True)),
                )
        if out.read_bytes() != path.read_bytes():
            return "recomputation: the report made again from its recipe and data differs from the signed file"
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def trace_rulebook_mismatch(trace: Any, book: str | None) -> str | None:
    """A rulebook given to verify ``trace`` with (``book``) that is not the one the trace names
    (another hash), said naming both; None if it is, or none was given, or the trace names none
    (its shape is then checked by the trace's own verification)."""
    meta = trace.get("rulebook") if isinstance(trace, dict) else None
    if book is None or not isinstance(meta, dict) or not isinstance(meta.get("hash"), str):
        return None
    named = " ".join(str(meta[k]) for k in ("id", "version") if isinstance(meta.get(k), str)) or "?"
    return rulebook_mismatch(book, named, meta["hash"], "the trace")


def verify(
    path: str | Path,
    public_key: Any,
    *,
    sig_path: str | Path | None = None,
    data: str | Path | None = None,
    book: str | None = None,
    recompute: bool = True,
) -> Verdict:
    """Signature, digest and recomputation of a signed trace or report (see the module text)."""
    p = Path(path)
    v = check_signature(p, public_key, sig_path)
    if not v.ok:
        return v
    if v.artifact == "trace":
        from ..analysis.trace import TraceError
        from ..analysis.trace import verify as verify_trace

        try:
            trace = json.loads(p.read_bytes().decode("utf-8"))
            why = trace_rulebook_mismatch(trace, book)
            if why:
                v.failed.append(f"recomputation: {why}")
                return v
            checked, problems = verify_trace(trace, book)
        except (UnicodeDecodeError, json.JSONDecodeError, TraceError) as exc:
            v.failed.append(f"recomputation: {p.name} is not a ruleengine trace ({exc})")
            return v
        if problems:
            v.failed.extend(f"recomputation: {x}" for x in problems)
            return v
        v.passed.append(f"recomputation: the trace's digest holds and {checked} values match when re-rated")
        return v
    recipe = v.recipe  # from the signature file check_signature read and verified (not read again)
    if not recompute:
        v.passed.append("recomputation: skipped (--no-recompute)")
    elif not recipe:
        v.failed.append(
            "recomputation: the signature carries no recipe (signed with `ruleengine sign`, not `report --sign-key`): "
            "only its signature and digest can be checked; pass --no-recompute to accept that"
        )
    else:
        why = recompute_report(p, recipe, data, book)
        if why:
            v.failed.append(why)
        else:
            v.passed.append("recomputation: made again from its recipe and data, byte-identical")
    return v
