"""Load a rulebook: a bundled name or a path → a compiled, checked :class:`Plan`.

Plans are kept in this process (by path, while none of their files changes) and on disk (the
plan cache, :mod:`ruleengine.rulebook._plancache`), so a rulebook is compiled once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from ..errors import Diagnostic
from .plan import Plan

# The compiler (and the JSON Schema it validates against) is imported only when a rulebook has to
# be compiled: a plan from the cache needs neither, and a fresh process saves their import time.

# Compiled plans by rulebook path, with the (mtime, size) of every file they were built from
# (the rulebook and the libraries it imports): editing any of them recompiles.
# Bounded, least recently used first out: a service validating many posted drafts (each its own
# file) must not keep every plan it ever compiled.
_CACHE: OrderedDict[str, tuple[tuple[tuple[str, float, int], ...], Plan]] = OrderedDict()
CACHED_PLANS = 32
_LOCK = threading.Lock()  # the service loads from several threads


def _keep(key: str, entry: tuple[tuple[tuple[str, float, int], ...], Plan]) -> None:
    with _LOCK:
        _CACHE[key] = entry
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHED_PLANS:
            _CACHE.popitem(last=False)


def _stamp(files: list[Path]) -> tuple[tuple[str, float, int], ...]:
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            return ()
        out.append((str(f), st.st_mtime, st.st_size))
    return tuple(out)


def load(book: str | Path | Plan) -> Plan:
    """Load, validate and compile a rulebook: a bundled name (``huzhou``) or a path to a .yaml file.

    Raises :class:`RulebookError` listing every problem with file:line:column.
    """
    if isinstance(book, Plan):
        return book
    from .source import resolve

    path = resolve(book)
    key = str(path.resolve())
    cached = _CACHE.get(key)
    if cached is not None and cached[0] and _stamp([Path(f) for f, _, _ in cached[0]]) == cached[0]:
        if not any(Path(a).exists() for a in cached[1].source_map.absent):
            with _LOCK:
                if key in _CACHE:
                    _CACHE.move_to_end(key)
            return cached[1]
    from . import _plancache
    from .source import display_name

    shown = display_name(path)
    stored = _plancache.get(path, shown)
    if stored is not None:
        _keep(key, (_stamp([Path(f) for f in stored.source_map.files]), stored))
        return stored
    from .compiler import compile_document
    from .source import load_document

    doc = load_document(path)
    plan = compile_document(doc)
    _keep(key, (_stamp(doc.files), plan))
    _plancache.put(path, shown, plan, doc.digests, doc.absent)
    return plan


def compile_text(text: str, file: str = "<string>") -> Plan:
    """Compile rulebook YAML given as text (for tools and tests)."""
    from .compiler import compile_document
    from .source import parse_text, resolve_imports

    doc = parse_text(text, file)
    resolve_imports(doc, Path(file).parent if file != "<string>" else Path.cwd())
    return compile_document(doc)


def validate(book: str | Path) -> list[Diagnostic]:
    """Check a rulebook; returns its warnings, raises :class:`RulebookError` on errors."""
    return load(book).warnings
