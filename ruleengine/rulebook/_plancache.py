"""Compiled plans kept on disk, so a fresh process skips YAML parsing, schema checks and the graph.

An entry is named by the SHA-256 of the engine's own source, the rulebook's path (as given and
as shown in messages) and its bytes; inside, it lists every file the plan was built from (the
imported libraries too) with their SHA-256, and the import candidates that did not exist, and is
used only while the files all still match and those candidates are still absent. So an edit to a
rulebook, to a library it imports or to the engine itself, or a library added where it would take
over an import, compiles afresh; nothing depends on modification times.

Location: ``$RULEENGINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/ruleengine``, else
``~/.cache/ruleengine``; ``RULEENGINE_CACHE=off`` turns it off. Entries are pickles: the cache
directory is trusted like the user's own site-packages. A cache that cannot be read or written is
skipped silently — it only ever saves time, it never changes a result or raises.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

_FORMAT = 2  # bump when the entry layout changes
KEEP = 200  # entries kept; the least recently written go first


def enabled() -> bool:
    return os.environ.get("RULEENGINE_CACHE", "").strip().lower() not in ("0", "off", "no", "false")


def directory() -> Path:
    explicit = os.environ.get("RULEENGINE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ruleengine"


@lru_cache(maxsize=1)
def engine_fingerprint() -> str:
    """SHA-256 over the Python version, the engine's source and the rulebook schema: any change
    to them starts afresh."""
    import sys

    from .schema import schema_path

    h = hashlib.sha256(f"format {_FORMAT} python {sys.version}".encode())  # pickled ASTs follow Python
    package = Path(__file__).resolve().parent.parent
    for f in sorted(package.rglob("*.py")) + [Path(schema_path())]:
        h.update(f.relative_to(package).as_posix().encode() if f.is_relative_to(package) else f.name.encode())
        h.update(b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entry(path: Path, shown: str) -> Path:
    h = hashlib.sha256(engine_fingerprint().encode())
    h.update(str(path.resolve()).encode() + b"\0" + shown.encode() + b"\0")
    h.update(path.read_bytes())
    return directory() / f"plan-{h.hexdigest()[:40]}.pickle"


def get(path: Path, shown: str) -> Any | None:
    """The plan compiled earlier from exactly these files, or None."""
    if not enabled():
        return None
    try:
        entry = _entry(path, shown)
        if not entry.is_file():
            return None
        with entry.open("rb") as fh:
            stored = pickle.load(fh)
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
        entry = _entry(path, shown)
        entry.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": _FORMAT, "files": sorted(digests.items()), "absent": sorted(absent), "plan": plan}
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".plan-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, entry)  # atomic: a concurrent reader sees the old entry or the new one
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        _prune(entry.parent)
    except Exception:  # noqa: BLE001 - read-only home, full disk, unpicklable plan: just don't cache
        return


def _prune(folder: Path) -> None:
    entries = list(folder.glob("plan-*.pickle"))
    if len(entries) <= KEEP:
        return
    entries.sort(key=lambda f: f.stat().st_mtime)
    for f in entries[: len(entries) - KEEP]:
        f.unlink(missing_ok=True)
