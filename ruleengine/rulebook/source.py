"""Load stage: YAML text → plain data plus a map from every YAML path to its position.

PyYAML's composer gives nodes with start marks; we build the Python data ourselves from those
nodes so that (a) every mapping key and value knows its file:line:column, (b) duplicate keys are
an error instead of a silent overwrite, and (c) dates stay ISO strings (what JSON Schema sees).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import Diagnostic, RulebookError, RulebookNotFound, SourceLocation

try:  # the C composer is ~10x faster; fall back quietly when libyaml is absent
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on the PyYAML build
    _Loader = yaml.SafeLoader

PathT = tuple[str | int, ...]


def format_path(path: PathT) -> str:
    """``('variables', 'k', 'expr')`` → ``variables.k.expr``; list items as ``[3]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class Document:
    """A loaded rulebook: its data, where it came from, and the position of every node."""

    data: Any
    file: str
    text: str
    marks: dict[PathT, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[PathT, tuple[int, int]] = field(default_factory=dict)
    styles: dict[PathT, str | None] = field(default_factory=dict)
    origins: dict[PathT, Document] = field(default_factory=dict)  # (section, name) → imported from
    overrides: dict[PathT, Document] = field(default_factory=dict)  # (section, name) → replaced import
    files: list[Path] = field(default_factory=list)  # this file and every library it imports
    digests: dict[str, str] = field(default_factory=dict)  # SHA-256 of each of those files' bytes
    absent: list[str] = field(default_factory=list)  # import candidates looked for and not found

    def origin(self, path: PathT) -> Document | None:
        return self.origins.get(tuple(path[:2])) if len(path) >= 2 else None

    def loc(self, path: PathT, *, key: bool = False) -> SourceLocation:
        """Location of the value at ``path`` (or of its key), falling back to the nearest parent."""
        other = self.origin(path)
        if other is not None:
            return other.loc(path, key=key)
        table = self.key_marks if key else self.marks
        probe = tuple(path)
        while probe not in table and probe:
            probe = probe[:-1]
        line, col = table.get(probe, (0, 0))
        return SourceLocation(self.file, line + 1, col + 1, format_path(path))

    def scalar_loc(self, path: PathT, offset: int) -> SourceLocation:
        """Location of character ``offset`` of the string value at ``path``.

        Walks the source lines, so it is right for plain and quoted one-line scalars and for
        block (``|``, ``>``) and folded multi-line ones (each line break counts one character).
        """
        other = self.origin(path)
        if other is not None:
            return other.scalar_loc(path, offset)
        key = tuple(path)
        if key not in self.marks:
            return self.loc(path)
        line, col = self.marks[key]
        style = self.styles.get(key)
        lines = self.text.splitlines()
        if style in ("|", ">"):
            line += 1
            while line < len(lines) and not lines[line].strip():
                line += 1
            col = len(lines[line]) - len(lines[line].lstrip()) if line < len(lines) else 0
        elif style in ("'", '"'):
            col += 1
        remaining = offset
        while line < len(lines):
            content = len(lines[line]) - col
            if remaining <= content or line + 1 >= len(lines):
                break
            remaining -= content + 1
            line += 1
            col = len(lines[line]) - len(lines[line].lstrip())
        return SourceLocation(self.file, line + 1, col + remaining + 1, format_path(path))

    def marks_loc(self, path: PathT) -> SourceLocation:
        line, col = self.key_marks.get(tuple(path), (0, 0))
        return SourceLocation(self.file, line + 1, col + 1, format_path(path))

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON of the data: reformatting the YAML does not change it."""
        canon = json.dumps(self.data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()[:16]


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.marks: dict[PathT, tuple[int, int]] = {}
        self.key_marks: dict[PathT, tuple[int, int]] = {}
        self.styles: dict[PathT, str | None] = {}
        self.errors: list[Diagnostic] = []
        self._scalar = yaml.constructor.SafeConstructor()

    def loc(self, node: yaml.Node, path: PathT) -> SourceLocation:
        m = node.start_mark
        return SourceLocation(self.file, m.line + 1, m.column + 1, format_path(path))

    def build(self, node: yaml.Node, path: PathT) -> Any:
        self.marks[path] = (node.start_mark.line, node.start_mark.column)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.errors.append(Diagnostic("mapping keys must be plain names", self.loc(key_node, path)))
                    continue
                key = self._scalar_value(key_node)
                if key == "<<" or key_node.tag == "tag:yaml.org,2002:merge":
                    self.errors.append(
                        Diagnostic(
                            "YAML merge keys ('<<') are not supported; write the values out", self.loc(key_node, path)
                        )
                    )
                    continue
                key = str(key) if not isinstance(key, bool) else str(key).lower()
                child = (*path, key)
                if key in out:
                    first = self.key_marks[child]
                    self.errors.append(
                        Diagnostic(
                            f"duplicate key '{key}' (first defined at line {first[0] + 1})", self.loc(key_node, child)
                        )
                    )
                    continue
                self.key_marks[child] = (key_node.start_mark.line, key_node.start_mark.column)
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        self.styles[path] = node.style
        return self._scalar_value(node)

    def _scalar_value(self, node: yaml.ScalarNode) -> Any:
        value = self._scalar.construct_object(node)
        if isinstance(value, _dt.datetime):
            return value.isoformat()
        if isinstance(value, _dt.date):
            return value.isoformat()
        return value


def parse_text(text: str, file: str) -> Document:
    """Parse YAML ``text``; raises :class:`RulebookError` with located diagnostics."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = SourceLocation(file, mark.line + 1, mark.column + 1) if mark else None
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        raise RulebookError([Diagnostic(f"YAML syntax: {problem}{context}", loc)]) from None
    except yaml.YAMLError as exc:  # pragma: no cover - unmarked YAML errors are rare
        raise RulebookError([Diagnostic(f"YAML syntax: {exc}", SourceLocation(file, 1, 1))]) from None
    if node is None:
        raise RulebookError([Diagnostic("the rulebook is empty", SourceLocation(file, 1, 1))])
    builder = _Builder(file)
    data = builder.build(node, ())
    if builder.errors:
        raise RulebookError(builder.errors)
    return Document(data, file, text, builder.marks, builder.key_marks, builder.styles)


def bundled_dir() -> Path:
    """Folder of the rulebooks shipped with the package (the repository's, when run from source).

    Installed, they sit in ``ruleengine/rulebooks/`` (see pyproject's package-dir mapping); in a
    source checkout or an editable install, in the repository's top-level ``rulebooks/``.
    """
    package = Path(__file__).resolve().parent.parent
    installed = package / "rulebooks"
    return installed if installed.is_dir() else package.parent / "rulebooks"


def bundled_names() -> list[str]:
    return sorted(p.stem for p in bundled_dir().glob("*.yaml"))


def resolve(name_or_path: str | Path) -> Path:
    """A path to an existing file, or the bare name of a bundled rulebook (``huzhou``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix == "" and "/" not in str(name_or_path) and "\\" not in str(name_or_path):
        bundled = bundled_dir() / f"{name_or_path}.yaml"
        if bundled.is_file():
            return bundled
        from ..errors import did_you_mean

        hint = did_you_mean(str(name_or_path), bundled_names())
        raise RulebookNotFound(
            f"no rulebook named '{name_or_path}'{hint}; bundled rulebooks: "
            f"{', '.join(bundled_names()) or 'none'} (or give a path to a .yaml file)"
        )
    raise RulebookNotFound(f"rulebook file not found: {name_or_path}")


def display_name(path: Path) -> str:
    """A short, stable name for messages: ``rulebooks/x.yaml`` for a bundled rulebook wherever the
    package is installed, else relative to the working directory when possible."""
    resolved = path.resolve()
    try:
        return "rulebooks/" + resolved.relative_to(bundled_dir().resolve()).as_posix()
    except ValueError:
        pass
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


MERGED_SECTIONS = ("sources", "inputs", "parameters", "scales", "variables", "checks")


def load_document(name_or_path: str | Path) -> Document:
    path = resolve(name_or_path)
    return _load_path(path, ())


def _load_path(path: Path, stack: tuple[Path, ...]) -> Document:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as read_text would
    except UnicodeDecodeError as exc:
        raise RulebookError(
            [Diagnostic(f"not UTF-8 text: {exc.reason}", SourceLocation(display_name(path), 1, 1))]
        ) from None
    doc = parse_text(text, display_name(path))
    doc.files.append(path.resolve())
    doc.digests[str(path.resolve())] = hashlib.sha256(raw).hexdigest()
    resolve_imports(doc, path.parent, (*stack, path.resolve()))
    return doc


def _find_import(name: str, base: Path, absent: list[str] | None = None) -> Path | None:
    """The library file for ``imports: [name]``: next to the rulebook first, then bundled.
    Candidates looked for and not found are appended to ``absent`` (a cached plan stays valid
    only while they stay absent: a library added next to the rulebook would take over)."""
    for folder in (base, bundled_dir()):
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
        if absent is not None:
            absent.append(str(candidate.resolve()))
    return None


def resolve_imports(doc: Document, base: Path, stack: tuple[Path, ...] = ()) -> None:
    """Merge the libraries named in ``imports:`` into ``doc`` (imported entries first).

    A local entry with the same name as an imported one is an error unless it says
    ``override: true``; sources may repeat only if identical.  Locations of imported entries point
    into the library file.
    """
    imports = doc.data.get("imports") if isinstance(doc.data, dict) else None
    if not imports or not isinstance(imports, list):
        return
    errors: list[Diagnostic] = []
    imported: dict[str, dict[str, Any]] = {s: {} for s in MERGED_SECTIONS}
    for i, name in enumerate(imports):
        if not isinstance(name, str):
            continue  # the schema reports it
        path = _find_import(name, base, doc.absent)
        if path is None:
            errors.append(
                Diagnostic(
                    f"cannot find the library '{name}' (looked for {name}.yaml next to "
                    "this rulebook and among the bundled rulebooks)",
                    doc.loc(("imports", i)),
                )
            )
            continue
        if path.resolve() in stack:
            chain = " → ".join(p.name for p in (*stack, path.resolve()))
            errors.append(Diagnostic(f"import cycle: {chain}", doc.loc(("imports", i))))
            continue
        lib = _load_path(path, stack)
        doc.files.extend(f for f in lib.files if f not in doc.files)
        doc.digests.update(lib.digests)
        doc.absent.extend(a for a in lib.absent if a not in doc.absent)
        if not isinstance(lib.data, dict) or "library" not in lib.data:
            errors.append(
                Diagnostic(
                    f"'{name}' is a rulebook, not a library (a library starts with 'library: NAME')",
                    doc.loc(("imports", i)),
                )
            )
            continue
        for section in MERGED_SECTIONS:
            for key, value in (lib.data.get(section) or {}).items():
                imported[section][key] = value
                doc.origins[(section, key)] = lib.origin((section, key)) or lib
    for section in MERGED_SECTIONS:
        local = doc.data.get(section) or {}
        if not isinstance(local, dict):
            continue
        merged: dict[str, Any] = {}
        for key, value in imported[section].items():
            if key in local:
                mine = local[key]
                if section == "sources":
                    if mine != value:
                        other = doc.origins[(section, key)].loc((section, key), key=True)
                        errors.append(
                            Diagnostic(
                                f"source '{key}' differs from the imported one at {other}; give it another name",
                                doc.marks_loc((section, key)),
                            )
                        )
                    doc.origins.pop((section, key), None)
                    continue
                if isinstance(mine, dict) and mine.get("override") is True:
                    doc.overrides[(section, key)] = doc.origins.pop((section, key))
                    continue
                other = doc.origins[(section, key)].loc((section, key), key=True)
                doc.origins.pop((section, key), None)
                errors.append(
                    Diagnostic(
                        f"'{key}' is already defined by an import (at {other}); write "
                        "'override: true' in it to replace the imported one",
                        doc.loc((section, key), key=True),
                    )
                )
                continue
            merged[key] = value
        for key, value in local.items():
            if isinstance(value, dict) and value.get("override") is True and (section, key) not in doc.overrides:
                errors.append(
                    Diagnostic(
                        f"'{key}' says 'override: true' but no import defines '{key}'",
                        doc.loc((section, key, "override")),
                    )
                )
            merged[key] = value
        if merged:
            doc.data[section] = merged
    if errors:
        raise RulebookError(errors)


def get_path(data: Any, path: PathT) -> Any:
    for part in path:
        if isinstance(data, Mapping):
            data = data[part]
        else:
            data = data[int(part)]
    return data
