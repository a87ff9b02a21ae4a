"""API keys: stored as SHA-256 hashes in a JSON file, compared in constant time, never logged.

A key is ``re_`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 bits): a plain SHA-256 is
enough to store it (no dictionary to try). A request's key is found by its SHA-256 in a dict of
the stored hashes (one lookup whatever the number of keys; timing can at most tell about the hash
of the key the caller sent, which does not help to guess another key).

The keys file::

    {"keys": [
      {"name": "bank-a-loans", "role": "bank", "bank": "bank-a", "sha256": "…"},
      {"name": "firm-g01", "role": "firm", "firm": "G01", "sha256": "…"},
      {"name": "huzhou-regulator", "role": "regulator", "rulebooks": ["huzhou"], "sha256": "…"},
      {"name": "method-team", "role": "author", "rulebooks": ["huzhou"], "sha256": "…"},
      {"name": "ops", "role": "admin", "sha256": "…"}]}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RuleEngineError

ROLES = ("firm", "bank", "regulator", "author", "admin")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,99}")


class KeyFileError(RuleEngineError):
    """A keys file that cannot be used (the message names the file and the entry)."""


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: the key's name (logged; never the key) and what it may see."""

    name: str
    role: str
    firm: str | None = None
    bank: str | None = None
    rulebooks: tuple[str, ...] = field(default=())


def new_key() -> str:
    return "re_" + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class KeyRing:
    """The known keys (their hashes) and whom each one stands for."""

    def __init__(self, entries: list[tuple[bytes, Principal]]) -> None:
        self.entries = entries
        # stored SHA-256 -> principal: one lookup per request however many keys there are. A ring is
        # never changed: a reload builds a new one, so a removed key's entry goes with the old ring.
        self._by_digest = dict(entries)

    def authenticate(self, presented: str | None) -> Principal | None:
        """The principal of a presented key, or None: one dict lookup by the SHA-256 of the presented
        key (an attacker cannot steer it towards a stored hash); its time does not grow with the
        number of keys."""
        if not presented or len(presented) > 512:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        return self._by_digest.get(digest)


def _entry(i: int, raw: Any, where: str) -> tuple[bytes, Principal]:
    at = f"{where}: keys[{i}]"
    if not isinstance(raw, dict):
        raise KeyFileError(f"{at}: an entry is an object with name, role and sha256")
    name, role, sha = raw.get("name"), raw.get("role"), raw.get("sha256")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeyFileError(f"{at}: 'name' must be 1-100 letters, digits or _.@:- (got {name!r})")
    if role not in ROLES:
        raise KeyFileError(f"{at} ({name}): 'role' must be one of {', '.join(ROLES)} (got {role!r})")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise KeyFileError(f"{at} ({name}): 'sha256' must be 64 lowercase hex digits (the hash, never the key)")
    firm, bank, books = raw.get("firm"), raw.get("bank"), raw.get("rulebooks", [])
    if role == "firm" and not (isinstance(firm, str) and firm):
        raise KeyFileError(f"{at} ({name}): a firm key names its 'firm' (firm_id)")
    if role == "bank" and not (isinstance(bank, str) and _NAME.fullmatch(bank)):
        raise KeyFileError(f"{at} ({name}): a bank key names its 'bank' (1-100 letters, digits or _.@:-)")
    if role in ("regulator", "author") and not (
        isinstance(books, list) and books and all(isinstance(b, str) and b for b in books)
    ):
        raise KeyFileError(f"{at} ({name}): a {role} key lists the 'rulebooks' (ids) of its jurisdiction")
    principal = Principal(
        name,
        role,
        firm=firm if role == "firm" else None,
        bank=bank if role == "bank" else None,
        rulebooks=tuple(books) if role in ("regulator", "author") else (),
    )
    return bytes.fromhex(sha), principal


def load_keys(path: str | Path | None) -> KeyRing:
    """The keys of ``path``; no file means no keys (every request but /health is refused)."""
    if path is None:
        return KeyRing([])
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KeyFileError(f"cannot read the keys file {p}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"{p}: not a keys file (JSON expected: {exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("keys"), list):
        raise KeyFileError(f'{p}: a keys file is {{"keys": [...]}}')
    entries = [_entry(i, e, str(p)) for i, e in enumerate(raw["keys"])]
    names = [e[1].name for e in entries]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise KeyFileError(f"{p}: the key name {dup!r} is used twice")
    return KeyRing(entries)


RULEBOOK_NAME_RULE = (
    "a bundled rulebook (`ruleengine books`) or the name one is published under in the service registry: "
    "a lowercase letter, then up to 39 lowercase letters, digits or _; never a path"
)


def rulebook_name_problem(book: str) -> str | None:
    """Why ``book`` cannot be a key's rulebook, or None: it must be a name the service registry can
    hold (bundled, or published later through the API), the only way a request names a rulebook."""
    from .registry import valid_name

    if valid_name(book):
        return None
    path_like = "/" in book or "\\" in book or book.endswith((".yaml", ".yml"))
    looks = "a path, not a rulebook name" if path_like else "not a rulebook name"
    return f"--rulebook {book!r} is {looks}: give {RULEBOOK_NAME_RULE}"


def add_key(
    path: str | Path,
    name: str,
    role: str,
    *,
    firm: str | None = None,
    bank: str | None = None,
    rulebooks: tuple[str, ...] = (),
) -> str:
    """Make a new key, store its hash in ``path`` (created 0600) and return the key (shown once).

    Each of ``rulebooks`` must be a registry name (what a request names a rulebook by; see
    :func:`rulebook_name_problem`): a path or a malformed name is refused, never stored."""
    p = Path(path)
    for book in rulebooks:
        problem = rulebook_name_problem(book)
        if problem:
            raise KeyFileError(f"{p}: {problem}")
    data: dict[str, Any] = {"keys": []}
    if p.exists():
        load_keys(p)  # refuse to extend a broken file
        data = json.loads(p.read_text(encoding="utf-8"))
    key = new_key()
    entry: dict[str, Any] = {"name": name, "role": role, "sha256": key_hash(key)}
    if firm is not None:
        entry["firm"] = firm
    if bank is not None:
        entry["bank"] = bank
    if rulebooks:
        entry["rulebooks"] = list(rulebooks)
    data["keys"].append(entry)
    _entry(len(data["keys"]) - 1, entry, str(p))
    names = [e.get("name") for e in data["keys"]]
    if names.count(name) > 1:
        raise KeyFileError(f"{p}: the key name {name!r} is used already")
    tmp = p.with_name(p.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())  # the keys on disk before the rename: never an empty file after a crash
        os.replace(tmp, p)
    except OSError as exc:
        raise KeyFileError(f"cannot write the keys file {p}: {exc.strerror or exc}") from None
    return key


class KeyWatch:
    """The keys of a file, reloaded when it changes: its (mtime, size, inode) is looked at, at most
    every ``check_s`` seconds, and :meth:`reload` forces a look (``ruleengine serve`` calls it on
    SIGHUP). A changed file that cannot be used keeps the previous keys and logs why: a typo in
    the keys file must not lock every client out (nor let anyone in)."""

    def __init__(self, path: str | Path | None, check_s: float = 2.0) -> None:
        import threading

        self.path = Path(path) if path is not None else None
        self.check_s = check_s
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._ring = load_keys(self.path)  # a broken file at start-up stops the service
        self._next = 0.0
        self.error: str | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def ring(self) -> KeyRing:
        if self.path is not None and self.check_s >= 0:
            import time

            now = time.monotonic()
            if now >= self._next:
                self._next = now + self.check_s
                if self._stat() != self._stamp:
                    self.reload()
        return self._ring

    def reload(self) -> bool:
        """Read the keys file again; True when its keys are now in use."""
        import logging

        with self._lock:
            stamp = self._stat()
            try:
                ring = load_keys(self.path)
            except KeyFileError as exc:
                self._stamp = stamp  # do not retry a broken file on every request; its next change will
                self.error = str(exc)
                logging.getLogger("ruleengine.service").error("keys not reloaded, the previous keys stay: %s", exc)
                return False
            self._ring, self._stamp, self.error = ring, stamp, None
            logging.getLogger("ruleengine.service").info("keys reloaded from %s: %d keys", self.path, len(ring.entries))
            return True
