"""Compiled plans kept on disk, so a fresh process skips YAML parsing, schema checks and the graph.

What the cache trusts, and what it does not (docs/security.md has the whole threat model):

- Entries are pickles, and unpickling runs code, so **no byte of an entry is deserialised before
  its HMAC-SHA256 is verified** with a per-user secret key. The key lives outside the cache folder,
  in ``$XDG_CONFIG_HOME/ruleengine/cache.key`` (else ``~/.config/ruleengine/cache.key``), created
  with mode 0600 in a folder that only the user can write; a key file that someone else owns, that
  others may read, or a key folder that others may write, turns the cache off (one warning).
- The entry name is an HMAC too (of the engine fingerprint, the rulebook's path as given and as
  shown in messages, and its bytes), so another user cannot compute which file to plant or replace.
  The tag covers the entry's name as well as its bytes: a valid entry copied under another name
  is refused.
- The cache folder must be owned by the user and not writable by group or others; otherwise the
  cache is not used, with one warning per process. Entries are opened without following symbolic
  links and must be regular files owned by the user, at most ``MAX_ENTRY_BYTES``.
- Any mismatch — a bad tag, an unknown format, a changed rulebook, library or engine file, a
  library that now shadows an import — is a miss: the plan is compiled afresh, never trusted.

Inside, an entry lists every file the plan was built from (the imported libraries too) with their
SHA-256, and the import candidates that did not exist; it is used only while the files all still
match and those candidates are still absent. The engine fingerprint hashes every file of the
installed package (``ruleengine/**``, sub-packages and package data) and the Python version, so
an edit anywhere in the engine starts afresh; nothing depends on modification times.

Location: ``$RULEENGINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/ruleengine``, else
``~/.cache/ruleengine``; ``RULEENGINE_CACHE=off`` turns it off. A cache that cannot be read or
written is skipped — it only ever saves time, it never changes a result or raises.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import stat
import sys
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

_FORMAT = 3  # bump when the entry layout changes
_MAGIC = b"ruleengine-plan-v3\n"  # then a 32-byte HMAC-SHA256 tag, then the pickle
_TAG_BYTES = 32
KEEP = 200  # entries kept; the least recently written go first
MAX_ENTRY_BYTES = 64 * 1024 * 1024  # an entry larger than this is not read (Huzhou's is ~0.2 MB)

_warned: set[str] = set()
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a planted FIFO must not block the open


class CacheRefused(Exception):
    """The cache folder or key cannot be trusted: the cache is off for this process."""


def enabled() -> bool:
    return os.environ.get("RULEENGINE_CACHE", "").strip().lower() not in ("0", "off", "no", "false")


def directory() -> Path:
    explicit = os.environ.get("RULEENGINE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ruleengine"


def key_path() -> Path:
    """Where the per-user secret key lives: outside the cache folder, in the user's config."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ruleengine" / "cache.key"


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        import logging  # only now: importing it costs a cold start ~5 ms

        logging.getLogger("ruleengine.cache").warning("warning: plan cache not used: %s", reason)


def _euid() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def _check_private_dir(folder: Path, what: str) -> None:
    """``folder`` exists (created 0700 if not), is owned by the user and not group/world-writable."""
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
    st = os.stat(folder)
    if not stat.S_ISDIR(st.st_mode):
        raise CacheRefused(f"{what} {folder} is not a folder")
    uid = _euid()
    if uid is not None and st.st_uid != uid:
        raise CacheRefused(f"{what} {folder} is owned by another user (uid {st.st_uid})")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheRefused(
            f"{what} {folder} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod go-w {folder}"
        )


def _read_key_fd(fd: int, path: Path) -> bytes:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise CacheRefused(f"the cache key {path} is not a regular file")
    uid = _euid()
    if uid is not None and st.st_uid != uid:
        raise CacheRefused(f"the cache key {path} is owned by another user (uid {st.st_uid})")
    if st.st_mode & 0o077:
        raise CacheRefused(
            f"the cache key {path} may be read or written by others (mode {stat.S_IMODE(st.st_mode):o}); "
            "delete it and a new one is made"
        )
    raw = os.read(fd, 256).strip()
    try:
        key = bytes.fromhex(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise CacheRefused(f"the cache key {path} is damaged; delete it and a new one is made")
    return key


def _load_key() -> bytes:
    """The user's secret key, made on first use (32 random bytes, hex, mode 0600)."""
    path = key_path()
    _check_private_dir(path.parent, "the cache key folder")
    flags = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        fd_new, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cache-key-")  # created 0600
        try:
            os.write(fd_new, os.urandom(32).hex().encode() + b"\n")
            os.fsync(fd_new)
            os.close(fd_new)
            try:
                os.link(tmp, path)  # atomic, and refuses to replace a key another process just made
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
        fd = os.open(path, flags)
    except OSError as exc:  # ELOOP: a symbolic link
        raise CacheRefused(f"the cache key {path} cannot be opened safely ({exc.strerror})") from None
    try:
        return _read_key_fd(fd, path)
    finally:
        os.close(fd)


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _setup() -> tuple[Path, bytes]:
    """The cache folder and key, both checked; raises :class:`CacheRefused` (or OSError)."""
    folder = directory()
    _check_private_dir(folder, "the cache folder")
    if _inside(key_path(), folder):
        raise CacheRefused(f"the cache key {key_path()} must not be inside the cache folder {folder}")
    return folder, _load_key()


@lru_cache(maxsize=1)
def engine_fingerprint() -> str:
    """SHA-256 over the format, the Python version and every file of the engine package —
    ``ruleengine/**`` with its sub-packages and package data (the rulebook schema included) —
    so any change to them starts afresh."""
    from .schema import schema_path

    h = hashlib.sha256(f"format {_FORMAT} python {sys.version}".encode())  # pickled ASTs follow Python
    for f in _engine_files() + [Path(schema_path())]:
        h.update(f.as_posix().encode() + b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def package_root() -> Path:
    """The top folder of the ``ruleengine`` package (this module may sit in a sub-package)."""
    here = Path(__file__).resolve().parent
    while here.name != "ruleengine" and (here.parent / "__init__.py").is_file():
        here = here.parent
    return here


def _engine_files() -> list[Path]:
    root = package_root()
    out: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        out.extend(Path(folder, f) for f in files if not f.endswith((".pyc", ".pyo")))
    out.sort(key=lambda p: p.relative_to(root).as_posix())
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entry(folder: Path, key: bytes, path: Path, shown: str) -> Path:
    from .source import LIMITS

    if path.stat().st_size > LIMITS.max_bytes:  # the loader refuses it; never read it whole here
        raise CacheRefused(f"{path} is larger than a rulebook may be")
    h = hmac.new(key, b"name\0" + engine_fingerprint().encode() + b"\0", hashlib.sha256)
    h.update(str(path.resolve()).encode() + b"\0" + shown.encode() + b"\0")
    h.update(path.read_bytes())
    return folder / f"plan-{h.hexdigest()[:40]}.pickle"


def _tag(key: bytes, name: str, payload: bytes) -> bytes:
    return hmac.new(key, b"entry\0" + name.encode() + b"\0" + payload, hashlib.sha256).digest()


def _read_entry(entry: Path) -> bytes | None:
    """The bytes of ``entry`` if it is a regular file of the user's, not a link, and not huge."""
    try:
        fd = os.open(entry, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK)
    except OSError:  # absent, or a symbolic link (ELOOP)
        return None
    try:
        st = os.fstat(fd)
        uid = _euid()
        if not stat.S_ISREG(st.st_mode) or (uid is not None and st.st_uid != uid) or st.st_size > MAX_ENTRY_BYTES:
            return None
        chunks = []
        left = MAX_ENTRY_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        return data if len(data) <= MAX_ENTRY_BYTES else None
    finally:
        os.close(fd)


def verified_payload(data: bytes, key: bytes, name: str) -> bytes | None:
    """The pickle inside an entry's bytes when its tag is right for ``name`` under ``key``, else None.
    Nothing is deserialised here."""
    head = len(_MAGIC)
    if len(data) < head + _TAG_BYTES or not data.startswith(_MAGIC):
        return None
    tag, payload = data[head : head + _TAG_BYTES], data[head + _TAG_BYTES :]
    if not hmac.compare_digest(tag, _tag(key, name, payload)):
        return None
    return payload


def get(path: Path, shown: str) -> Any | None:
    """The plan compiled earlier from exactly these files, or None."""
    if not enabled():
        return None
    try:
        folder, key = _setup()
    except CacheRefused as exc:
        _warn_once(str(exc))
        return None
    except Exception:  # noqa: BLE001 - cannot create or read the folder/key: no cache, silently
        return None
    try:
        entry = _entry(folder, key, path, shown)
        data = _read_entry(entry)
        if data is None:
            return None
        payload = verified_payload(data, key, entry.name)
        if payload is None:
            return None  # forged, edited, truncated or copied from another name: compile afresh
        stored = pickle.loads(payload)  # only bytes this user's key signed
        if not isinstance(stored, dict) or stored.get("format") != _FORMAT:
            return None
        for name, digest in stored["files"]:
            if _digest(Path(name)) != digest:
                return None
        if any(Path(name).exists() for name in stored["absent"]):
            return None  # a library now shadows the one the plan was built with
        return stored["plan"]
    except Exception:  # noqa: BLE001 - a damaged or foreign entry is a miss, never an error
        return None


def put(path: Path, shown: str, plan: Any, digests: dict[str, str], absent: Sequence[str] = ()) -> None:
    """Keep ``plan`` for the next process; ``digests``: SHA-256 of the bytes of every file it was
    compiled from, taken as they were read; ``absent``: import candidates that did not exist.
    Failures are ignored."""
    if not enabled():
        return
    try:
        folder, key = _setup()
    except CacheRefused as exc:
        _warn_once(str(exc))
        return
    except Exception:  # noqa: BLE001 - read-only home, full disk: just don't cache
        return
    try:
        entry = _entry(folder, key, path, shown)
        payload_obj = {"format": _FORMAT, "files": sorted(digests.items()), "absent": sorted(absent), "plan": plan}
        payload = pickle.dumps(payload_obj, protocol=pickle.HIGHEST_PROTOCOL)
        if len(payload) + len(_MAGIC) + _TAG_BYTES > MAX_ENTRY_BYTES:
            return
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".plan-", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(_MAGIC + _tag(key, entry.name, payload) + payload)
            os.replace(tmp, entry)  # atomic: a concurrent reader sees the old entry or the new one
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _prune(folder)
    except Exception:  # noqa: BLE001 - full disk, unpicklable plan: just don't cache
        return


def _prune(folder: Path) -> None:
    entries = list(folder.glob("plan-*.pickle"))
    if len(entries) <= KEEP:
        return
    entries.sort(key=lambda f: f.lstat().st_mtime)
    for f in entries[: len(entries) - KEEP]:
        f.unlink(missing_ok=True)
