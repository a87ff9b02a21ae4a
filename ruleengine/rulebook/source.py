"""Load stage: YAML text → plain data plus a map from every YAML path to its position.

PyYAML's composer gives nodes with start marks; we build the Python data ourselves from those
nodes so that (a) every mapping key and value knows its file:line:column, (b) duplicate keys are
an error instead of a silent overwrite, and (c) dates stay ISO strings (what JSON Schema sees).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
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


@dataclass(frozen=True)
class LoadLimits:
    """Bounds on what a rulebook file may make the loader do (issue #11.2); each is far above the
    bundled rulebooks (largest: 48 KB, 2,508 nodes, 6 levels, a 960-character string)."""

    max_bytes: int = 2 * 1024 * 1024  # size of the file
    max_nodes: int = 100_000  # values after expanding aliases (a "billion laughs" bomb stops here)
    max_depth: int = 32  # nesting of mappings and sequences, aliases included
    max_string: int = 50_000  # characters in one scalar (key or value)
    max_int_digits: int = 40  # digits of an integer literal read at all (then it must fit 64 bits)


LIMITS = LoadLimits()

# Tags a rulebook may carry (explicitly or as YAML resolves plain scalars); any other tag, such as
# ``!foo`` or ``!!python/object``, is an error where it is written.
_SCALAR_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "timestamp", "merge", "value")
}
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_INT_MAX = 2**63


class _Frame:
    __slots__ = ("node", "anchor", "size", "height", "path", "key", "expect_key", "index")

    def __init__(self, node: yaml.Node, anchor: str | None, path: PathT):
        self.node = node
        self.anchor = anchor
        self.size = 1
        self.height = 1
        self.path = path
        self.key: str | int | None = None
        self.expect_key = True
        self.index = 0


def _short(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:") :] if tag.startswith("tag:yaml.org,2002:") else tag


def _compose(text: str, file: str, limits: LoadLimits) -> yaml.Node | None:
    """YAML events → nodes, as PyYAML's composer does, but bounded as it goes: every value an
    alias would materialise is counted before it is (so a bomb fails at its first excess alias,
    in linear time and memory), nesting is limited including what aliases bring in, a
    self-referencing alias is refused, long scalars and integers are refused before they are
    converted, and unknown tags are located errors. Raises :class:`RulebookError`."""
    resolver = yaml.resolver.Resolver()
    anchors: dict[str, yaml.Node] = {}
    measured: dict[int, tuple[int, int]] = {}  # id(node) → (values it materialises, height)
    open_anchors: dict[str, yaml.Node] = {}
    stack: list[_Frame] = []
    errors: list[Diagnostic] = []
    total = 0
    root: yaml.Node | None = None
    documents = 0

    def where(mark: Any, path: PathT) -> SourceLocation:
        return SourceLocation(file, mark.line + 1, mark.column + 1, format_path(path))

    def fail(message: str, mark: Any, path: PathT) -> None:
        raise RulebookError([Diagnostic(message, where(mark, path))])

    def child_path() -> PathT:
        if not stack:
            return ()
        top = stack[-1]
        if isinstance(top.node, yaml.SequenceNode):
            return (*top.path, top.index)
        if top.expect_key:
            return top.path
        return (*top.path, top.key if top.key is not None else "?")

    def attach(node: yaml.Node, size: int, height: int, mark: Any, path: PathT, count: int | None = None) -> None:
        """Put ``node`` into the open collection; ``size``: values it materialises, ``count``: how
        many of them are new (a collection's children were counted as they came)."""
        nonlocal total, root
        total += size if count is None else count
        if total > limits.max_nodes:
            fail(
                f"the document expands to more than {limits.max_nodes:,} values"
                + (" through YAML aliases (a 'billion laughs' bomb?)" if size > 1 else ""),
                mark,
                path,
            )
        if len(stack) + height > limits.max_depth:
            fail(f"nested more than {limits.max_depth} levels deep", mark, path)
        if not stack:
            root = node
            return
        top = stack[-1]
        top.size += size
        top.height = max(top.height, height + 1)
        top.node.value.append(node)
        if isinstance(top.node, yaml.SequenceNode):
            top.index += 1
        elif top.expect_key:
            top.key = node.value if isinstance(node, yaml.ScalarNode) else None
            top.expect_key = False
        else:
            top.node.value[-2:] = [(top.node.value[-2], top.node.value[-1])]
            top.expect_key = True

    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    fail("a rulebook is one YAML document; a second one starts here", event.start_mark, ())
                continue
            if isinstance(event, yaml.AliasEvent):
                path = child_path()
                if event.anchor in open_anchors:
                    anchor_mark = open_anchors[event.anchor].start_mark
                    fail(
                        f"the alias '*{event.anchor}' refers to the value that contains it "
                        f"(anchor '&{event.anchor}' at line {anchor_mark.line + 1}): it would never end",
                        event.start_mark,
                        path,
                    )
                target = anchors.get(event.anchor) if event.anchor is not None else None
                if target is None:
                    fail(
                        f"unknown alias '*{event.anchor}' (no anchor '&{event.anchor}' before it)",
                        event.start_mark,
                        path,
                    )
                assert target is not None
                size, height = measured[id(target)]
                attach(target, size, height, event.start_mark, path)
                continue
            if isinstance(event, yaml.ScalarEvent):
                path = child_path()
                value = event.value
                if len(value) > limits.max_string:
                    fail(
                        f"a value of {len(value):,} characters; the limit is {limits.max_string:,}",
                        event.start_mark,
                        path,
                    )
                tag = event.tag
                if tag is None or tag == "!":
                    tag = resolver.resolve(yaml.ScalarNode, value, event.implicit)
                if tag not in _SCALAR_TAGS:
                    errors.append(
                        Diagnostic(
                            f"unknown YAML tag '{_short(tag)}' (rulebooks use plain values; quote the text if it "
                            "starts with '!')",
                            where(event.start_mark, path),
                        )
                    )
                    tag = "tag:yaml.org,2002:str"
                elif tag == "tag:yaml.org,2002:value":
                    tag = "tag:yaml.org,2002:str"  # a plain '=' is text
                elif tag == "tag:yaml.org,2002:int":
                    digits = sum(ch.isdigit() for ch in value)
                    if digits > limits.max_int_digits:
                        fail(
                            f"an integer of {digits:,} digits; numbers must fit in 64 bits "
                            "(quote it if it is an identifier)",
                            event.start_mark,
                            path,
                        )
                node: yaml.Node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, style=event.style)  # type: ignore[arg-type]
                if event.anchor is not None:
                    anchors[event.anchor] = node
                measured[id(node)] = (1, 1)
                attach(node, 1, 1, event.start_mark, path)
                continue
            if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                path = child_path()
                is_seq = isinstance(event, yaml.SequenceStartEvent)
                want = _SEQ_TAG if is_seq else _MAP_TAG
                if event.tag not in (None, "!", want):
                    errors.append(
                        Diagnostic(
                            f"unknown YAML tag '{_short(event.tag)}' (rulebooks use plain mappings and lists)",
                            where(event.start_mark, path),
                        )
                    )
                cls = yaml.SequenceNode if is_seq else yaml.MappingNode
                node = cls(want, [], event.start_mark, event.end_mark, flow_style=event.flow_style)  # type: ignore[arg-type]
                if len(stack) + 1 > limits.max_depth:
                    fail(f"nested more than {limits.max_depth} levels deep", event.start_mark, path)
                stack.append(_Frame(node, event.anchor, path))
                if event.anchor is not None:
                    open_anchors[event.anchor] = node
                continue
            if isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                frame = stack.pop()
                frame.node.end_mark = event.end_mark
                if frame.anchor is not None:
                    open_anchors.pop(frame.anchor, None)
                    anchors[frame.anchor] = frame.node
                measured[id(frame.node)] = (frame.size, frame.height)
                attach(frame.node, frame.size, frame.height, frame.node.start_mark, frame.path, count=1)
                continue
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = SourceLocation(file, mark.line + 1, mark.column + 1) if mark else SourceLocation(file, 1, 1)
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        raise RulebookError([Diagnostic(f"YAML syntax: {problem}{context}", loc)]) from None
    except yaml.reader.ReaderError as exc:
        # libyaml counts the position in UTF-8 bytes, the pure-Python reader in characters
        pos = max(int(exc.position), 0)
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        if _Loader is not yaml.SafeLoader:
            pos = len(text.encode("utf-8", "surrogatepass")[:pos].decode("utf-8", "ignore"))
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        message = f"YAML syntax: unacceptable character #x{ord(char[:1] or ' '):04x}: {exc.reason}"
        raise RulebookError([Diagnostic(message, SourceLocation(file, line, col))]) from None
    except yaml.YAMLError as exc:  # pragma: no cover - other unmarked YAML errors are rare
        raise RulebookError([Diagnostic(f"YAML syntax: {exc}", SourceLocation(file, 1, 1))]) from None
    if errors:
        raise RulebookError(errors)
    return root


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
                key = self._scalar_value(key_node, path)
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
        assert isinstance(node, yaml.ScalarNode)
        self.styles[path] = node.style
        return self._scalar_value(node, path)

    def _scalar_value(self, node: yaml.ScalarNode, path: PathT) -> Any:
        if node.tag == "tag:yaml.org,2002:merge":
            return "<<"
        try:
            value = self._scalar.construct_object(node)
        except Exception as exc:  # noqa: BLE001 - e.g. '!!bool maybe' (KeyError), '!!timestamp x', Feb 30
            what = "date" if node.tag == "tag:yaml.org,2002:timestamp" else "value"
            if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
                reason = exc.problem
            elif isinstance(exc, ValueError | OverflowError):
                reason = str(exc)
            else:
                reason = f"not a {_short(node.tag)[2:]}"
            self.errors.append(
                Diagnostic(
                    f"{node.value!r} is not a valid {what}: {reason} (quote it to keep it as text)",
                    self.loc(node, path),
                )
            )
            return node.value
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int) and not -_INT_MAX <= value < _INT_MAX:
            self.errors.append(
                Diagnostic(
                    f"the integer {node.value} does not fit in 64 bits (quote it if it is an identifier)",
                    self.loc(node, path),
                )
            )
            return 0
        if isinstance(value, float) and math.isinf(value) and "inf" not in node.value.lower():
            self.errors.append(
                Diagnostic(
                    f"the number {node.value} is too large for a 64-bit float (it would read as infinity)",
                    self.loc(node, path),
                )
            )
            return 0.0
        if isinstance(value, _dt.datetime):
            return value.isoformat()
        if isinstance(value, _dt.date):
            return value.isoformat()
        return value


def _too_big(head: bytes, size: int, file: str, limits: LoadLimits) -> RulebookError:
    """The error for a file of ``size`` bytes over the limit, located where the limit is crossed
    (``head``: at least its first ``limits.max_bytes`` bytes)."""
    cut = head[: limits.max_bytes].decode("utf-8", "ignore")
    line = cut.count("\n") + 1
    col = len(cut) - (cut.rfind("\n") + 1) + 1
    return RulebookError(
        [
            Diagnostic(
                f"the file is {size:,} bytes; a rulebook may have at most {limits.max_bytes:,} "
                "(this is where the limit is crossed)",
                SourceLocation(file, line, col),
            )
        ]
    )


def parse_text(text: str, file: str, limits: LoadLimits = LIMITS) -> Document:
    """Parse YAML ``text`` within ``limits``; raises :class:`RulebookError` with located diagnostics."""
    if len(text) * 4 > limits.max_bytes:  # else it cannot be over, whatever its encoding
        encoded = text.encode("utf-8", "surrogatepass")
        if len(encoded) > limits.max_bytes:
            raise _too_big(encoded, len(encoded), file, limits)
    node = _compose(text, file, limits)
    if node is None:
        raise RulebookError([Diagnostic("the rulebook is empty", SourceLocation(file, 1, 1))])
    builder = _Builder(file)
    data = builder.build(node, ())
    if builder.errors:
        raise RulebookError(builder.errors)
    if not isinstance(data, dict):
        raise RulebookError([Diagnostic(not_a_mapping(text, file, data), SourceLocation(file, 1, 1))])
    return Document(data, file, text, builder.marks, builder.key_marks, builder.styles)


DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".parquet", ".xlsx", ".xls")


def not_a_mapping(text: str, file: str, data: Any) -> str:
    """Why a file whose YAML is not a mapping is no rulebook: what it holds, a short excerpt of
    its first line (never the file), and the likely mix-up (a data file given as the rulebook)."""
    kind = "a list" if isinstance(data, list) else "a single value" if data is not None else "nothing"
    first = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    excerpt = first if len(first) <= 60 else first[:57] + "..."
    looks_like_data = file.lower().endswith(DATA_SUFFIXES) or (first.count(",") >= 3 and ":" not in first)
    hint = (
        "; it looks like a data file: the rulebook comes first, then the data (ruleengine rate BOOK DATA)"
        if looks_like_data
        else ""
    )
    return (
        f"not a rulebook: the file holds {kind}, not a YAML mapping of keys (id:, inputs:, ratings:, ...); "
        f"line 1 begins {excerpt!r}{hint}"
    )


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


def local_candidates(name: str) -> list[Path]:
    """Files in the working directory that a user may mean by the bare name ``name``:
    ``./NAME.yaml`` and ``./rulebooks/NAME.yaml`` (a checkout of the rulebooks)."""
    cwd = Path.cwd()
    return [p for p in (cwd / f"{name}.yaml", cwd / "rulebooks" / f"{name}.yaml") if p.is_file()]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def shadowing_files(name: str, bundled: Path) -> list[Path]:
    """Local files named like the bundled rulebook ``name`` that are not it and differ from it."""
    return [p for p in local_candidates(name) if not _same_file(p, bundled) and not _same_bytes(p, bundled)]


_warned: set[tuple[str, str]] = set()


def _relative(path: Path) -> str:
    try:
        return "./" + path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def resolve(name_or_path: str | Path) -> Path:
    """A path to an existing file, or the bare name of a bundled rulebook (``huzhou``).

    A bare name always means the bundled rulebook; a local file is used only when given as a path.
    When a same-named file in the working directory (``./huzhou.yaml`` or
    ``./rulebooks/huzhou.yaml``) differs from the bundled one — say, an edited checkout after
    ``pip install .`` — a warning line on stderr names both files and says which one is used.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix == "" and "/" not in str(name_or_path) and "\\" not in str(name_or_path):
        name = str(name_or_path)
        bundled = bundled_dir() / f"{name}.yaml"
        if bundled.is_file():
            for local in shadowing_files(name, bundled):
                key = (name, str(local.resolve()))
                if key not in _warned:
                    _warned.add(key)
                    import logging  # only when needed: it costs a cold start ~5 ms

                    logging.getLogger("ruleengine.rulebook").warning(
                        "warning: '%s' is the bundled rulebook %s, which is used; %s differs from it and is "
                        "not used (give its path, %s, to use it)",
                        name,
                        bundled.resolve(),
                        _relative(local),
                        _relative(local),
                    )
            return bundled
        from ..errors import did_you_mean

        found = local_candidates(name)
        if found:
            raise RulebookNotFound(
                f"no bundled rulebook named '{name}'; to use the file {_relative(found[0])}, give its path "
                f"(bundled rulebooks: {', '.join(bundled_names()) or 'none'})"
            )
        hint = did_you_mean(name, bundled_names())
        raise RulebookNotFound(
            f"no rulebook named '{name_or_path}'{hint}; bundled rulebooks: "
            f"{', '.join(bundled_names()) or 'none'} (or give a path to a .yaml file)"
        )
    raise RulebookNotFound(f"rulebook file not found: {name_or_path}")


def display_name(path: Path) -> str:
    """A short, stable name for messages: ``rulebooks/x.yaml`` for a bundled rulebook wherever the
    package is installed, else relative to the working directory when possible.

    A bundled rulebook is shown by its full path instead when ``rulebooks/x.yaml`` in the working
    directory is another file with other contents: a message must never name the edited local
    file for the bundled one."""
    resolved = path.resolve()
    try:
        rel = resolved.relative_to(bundled_dir().resolve()).as_posix()
    except ValueError:
        pass
    else:
        local = Path.cwd() / "rulebooks" / rel
        if local.is_file() and not _same_file(local, resolved) and not _same_bytes(local, resolved):
            return str(resolved)
        return "rulebooks/" + rel
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


MERGED_SECTIONS = ("sources", "inputs", "parameters", "scales", "variables", "checks")


def load_document(name_or_path: str | Path) -> Document:
    path = resolve(name_or_path)
    return _load_path(path, ())


def _load_path(path: Path, stack: tuple[Path, ...]) -> Document:
    with path.open("rb") as fh:  # never more than the limit in memory, whatever the file's size
        raw = fh.read(LIMITS.max_bytes + 1)
    if len(raw) > LIMITS.max_bytes:
        raise _too_big(raw, max(path.stat().st_size, len(raw)), display_name(path), LIMITS)
    try:
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as read_text would
    except UnicodeDecodeError as exc:
        start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        col = len(raw[start : exc.start].decode("utf-8", "ignore")) + 1
        raise RulebookError(
            [
                Diagnostic(
                    f"not UTF-8 text: {exc.reason} (byte 0x{raw[exc.start]:02x}; save the file as UTF-8)",
                    SourceLocation(display_name(path), line, col),
                )
            ]
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
