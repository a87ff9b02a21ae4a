"""The rulebook registry: bundled rulebooks and versions published through the API (stored in the
ledger). A request names a rulebook by validated name and version only, never by a path."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from ..errors import RuleEngineError
from ..rulebook.loader import load
from ..rulebook.source import bundled_dir, bundled_names
from . import store

NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
VERSION_RE = re.compile(r"[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}(?:-[0-9A-Za-z]{1,20}(?:\.[0-9A-Za-z]{1,20}){0,4})?")


def write_atomic(target: Path, data: bytes) -> None:
    """Write ``target`` so that a reader sees the old file or the whole new one, never a part: the
    state folder may be shared by several server processes (``serve --processes N``) writing the
    same files (a temporary name of this process and thread, then a rename)."""
    import os
    import threading

    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


class NotInRegistry(RuleEngineError):
    """No such rulebook (or version) in the registry."""


def valid_name(name: str) -> bool:
    return bool(NAME_RE.fullmatch(name))


def valid_version(version: str) -> bool:
    return bool(VERSION_RE.fullmatch(version))


def semver_key(v: str) -> tuple[Any, ...]:
    core, _, pre = v.partition("-")
    nums = tuple(int(x) for x in core.split("."))
    return (*nums, 0 if pre else 1, pre)  # a pre-release sorts before its release


class Registry:
    """Bundled + published rulebooks. Published YAML is written once into ``folder`` (the service's
    private state directory) so the engine loads it like any file, with bundled libraries."""

    def __init__(self, engine: Any, folder: Path) -> None:
        self.engine = engine
        self.folder = folder

    def _bundled(self) -> dict[str, Path]:
        return {n: bundled_dir() / f"{n}.yaml" for n in bundled_names() if valid_name(n)}

    def names(self) -> list[str]:
        return sorted(set(self._bundled()) | {r["name"] for r in store.published(self.engine)})

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of ``name``, oldest first (by semantic version)."""
        if not valid_name(name):
            raise NotInRegistry("no such rulebook")
        out: list[dict[str, Any]] = []
        bundled = self._bundled().get(name)
        if bundled is not None:
            plan = load(bundled)
            out.append({"version": plan.version, "source": "bundled", "rulebook_hash": plan.hash, "published_at": None})
        for r in store.published(self.engine, name):
            out.append(
                {
                    "version": r["version"],
                    "source": "published",
                    "rulebook_hash": r["rulebook_hash"],
                    "published_at": r["published_at"],
                    "published_by": r["who"],
                }
            )
        if not out:
            raise NotInRegistry("no such rulebook")
        return sorted(out, key=lambda r: semver_key(r["version"]))

    def current(self, name: str) -> str:
        return str(self.versions(name)[-1]["version"])

    def path(self, name: str, version: str | None = None) -> Path:
        """The file of ``name`` at ``version`` (default: the newest)."""
        if not valid_name(name) or (version is not None and not valid_version(version)):
            raise NotInRegistry("no such rulebook")
        vs = self.versions(name)
        version = version or vs[-1]["version"]
        entry = next((v for v in vs if v["version"] == version), None)
        if entry is None:
            raise NotInRegistry("no such rulebook version")
        if entry["source"] == "bundled":
            return self._bundled()[name]
        found = store.published_text(self.engine, name, version)
        if found is None:  # pragma: no cover - listed a moment ago; the tables are append-only
            raise NotInRegistry("no such rulebook version")
        text, sha = found
        target = self.folder / "registry" / name / version / f"{name}.yaml"
        data = text.encode("utf-8")
        if hashlib.sha256(data).hexdigest() != sha:
            raise RuleEngineError(f"published rulebook {name} {version}: stored text does not match its hash")
        if not target.is_file() or target.read_bytes() != data:
            write_atomic(target, data)
        return target

    def draft_path(self, name: str, text: str) -> Path:
        """A posted draft written where the engine can load it (with bundled libraries)."""
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        target = self.folder / "drafts" / digest / f"{name}.yaml"
        if not target.is_file():
            write_atomic(target, text.encode("utf-8"))
        return target
