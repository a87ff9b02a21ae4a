"""Imports flow one way: an AST-based import-layer test (issue #10, item 5).

Layers, lowest first. A module may import only from its own layer or a lower one:

    0  ruleengine.errors
    1  ruleengine.rulebook.*            the rulebook language
    2  ruleengine.io.*, ruleengine.acquire.*     data in and out
    3  ruleengine.engine.*              evaluation
    4  ruleengine.pipeline, ruleengine.scale.*
    5  ruleengine.analysis.*            trace, what-it-takes, diff, compare, author tests
    6  ruleengine.render.*, ruleengine.report.*
    7  ruleengine.api, ruleengine.spark, ruleengine.dask, ruleengine.ledger.*
    8  ruleengine.cli, ruleengine.service.*

Rules, as checked here:
- Every import counts, also one inside a function (a lazy import is still a dependency).
  Exempt: imports under ``if TYPE_CHECKING:`` — they never run, they only name types for mypy.
  They are exempt from the layer order only; the private-name rule below still applies to them.
- The facade ``ruleengine/__init__.py`` imports only ``ruleengine.errors`` when ``import
  ruleengine`` runs; everything else it offers it imports lazily (its ``_LAZY`` table or a
  function-level import), and those lazy targets may reach at most layer 7 (``ruleengine.api``).
- ``from ruleengine import NAME`` (or ``from . import NAME`` at the top of the package) is an
  import of the module NAME comes from: a submodule, an entry of the facade's ``_LAZY`` table, or
  ``ruleengine.errors`` for what the facade re-exports eagerly. A plain ``import ruleengine``
  inside the package counts as layer 7: it gives access to the whole public API.
- Nothing below layer 8 imports ``ruleengine.cli`` and nothing below layer 6 imports
  ``ruleengine.render`` (the two edges; stated separately because they matter most).
- No module imports a private name (a leading underscore: ``_fmt``, ``_arrow``...) from another
  sub-package; top-level modules (``api``, ``cli``, ``pipeline``...) count as their own
  sub-package. Dunder names (``__version__``) are not private.
- Every module of the package must be placed in a layer: a new sub-package is added to LAYERS
  before it can be imported from anywhere.

Also here: only the CLI (and a module's ``if __name__ == "__main__":`` block) ends the process.

Violations that exist today are listed in KNOWN, each as an ``xfail(strict=True)`` case: when one
is fixed its case passes, the strict xfail fails, and the entry must be removed from KNOWN. Any
violation not in KNOWN fails ``test_no_new_violations``.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "ruleengine"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# (module or package prefix, layer); the longest matching prefix wins.
LAYERS: dict[str, int] = {
    "ruleengine.errors": 0,
    "ruleengine.rulebook": 1,
    "ruleengine.io": 2,
    "ruleengine.acquire": 2,
    "ruleengine.engine": 3,
    "ruleengine.pipeline": 4,
    "ruleengine.scale": 4,
    "ruleengine.analysis": 5,
    "ruleengine.render": 6,
    "ruleengine.report": 6,
    "ruleengine.api": 7,
    "ruleengine.spark": 7,
    "ruleengine.dask": 7,
    "ruleengine.ledger": 7,
    "ruleengine.cli": 8,
    "ruleengine.service": 8,
}
FACADE = PACKAGE
FACADE_EAGER_MAX = 0  # `import ruleengine` loads ruleengine.errors only
FACADE_LAZY_MAX = 7  # ... and may reach up to ruleengine.api lazily
FACADE_IMPORTED = 7  # a plain `import ruleengine` inside the package: the whole public API

# Violations present when this test was written (key: importer, imported, rule). The lead fixes
# them in the files being rewritten for issue #10; each fix turns its xfail case into a failure
# that asks for the entry to be removed here.
KNOWN: set[tuple[str, str, str]] = {
    # private names used across sub-packages
    ("ruleengine.engine.results", "ruleengine.io._arrow.array", "private"),
    ("ruleengine.engine.results", "ruleengine.io._arrow.strings", "private"),
    ("ruleengine.render.text", "ruleengine.analysis.trace._fmt", "private"),
}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name of the importing file
    target: str  # dotted module the import loads (resolved)
    name: str  # full dotted name imported: target, or target.NAME for `from target import NAME`
    line: int
    lazy: bool  # inside a function
    type_checking: bool  # under `if TYPE_CHECKING:`


@dataclass(frozen=True)
class Violation:
    importer: str
    imported: str
    line: int
    rule: str  # "layer" (includes the cli/render edges), "private", "unplaced"
    why: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.importer, self.imported, self.rule)

    def __str__(self) -> str:
        return f"{self.importer} → {self.imported} (line {self.line}): {self.why}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    best = None
    for prefix, layer in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    return None if best is None else best[1]


def layer_label(module: str) -> str:
    layer = layer_of(module)
    return f"{layer} ({module})" if layer is not None else f"unplaced ({module})"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def facade_lazy_table(known: dict[str, Path]) -> dict[str, str]:
    """The facade's ``_LAZY = {"name": ".module", ...}`` table, resolved to dotted modules."""
    tree = ast.parse(known[FACADE].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
            table = ast.literal_eval(node.value)
            return {name: (PACKAGE + mod if mod.startswith(".") else mod) for name, mod in table.items()}
    return {}


def imports_of(module: str, path: Path, known: dict[str, Path]) -> list[Import]:
    """Every import of the package in one file, with relative imports and `from X import name` resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    lazy_table = facade_lazy_table(known)
    found: list[Import] = []

    def resolve_from(node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        anchor = base[: len(base) - (node.level - 1)]
        return ".".join(anchor + ([node.module] if node.module else []))

    def visit(node: ast.AST, lazy: bool, type_checking: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    found.append(Import(module, alias.name, alias.name, node.lineno, lazy, type_checking))
        elif isinstance(node, ast.ImportFrom):
            source = resolve_from(node)
            if source == PACKAGE or source.startswith(PACKAGE + "."):
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    if full in known:  # a submodule: `from .rulebook import schema`
                        target = full
                    elif source == FACADE:  # a name the facade offers
                        target = lazy_table.get(alias.name, f"{PACKAGE}.errors")
                    else:
                        target = source
                    found.append(Import(module, target, full, node.lineno, lazy, type_checking))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, lazy, True)
            for child in node.orelse:
                visit(child, lazy, type_checking)
            return
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner, type_checking)

    visit(tree, False, False)
    return found


def _subpackage(module: str) -> str:
    """``ruleengine.io.data`` → ``ruleengine.io``; a top-level module is its own sub-package."""
    return ".".join(module.split(".")[:2])


def _private_part(name: str) -> str | None:
    for part in name.split(".")[1:]:
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            return part
    return None


@functools.cache
def violations(root: Path = ROOT) -> list[Violation]:
    known = modules(root)
    out: list[Violation] = []
    for module, path in known.items():
        own = layer_of(module)
        if module != FACADE and own is None:
            out.append(Violation(module, module, 1, "unplaced", "module is in no layer: add it to LAYERS"))
            continue
        for imp in imports_of(module, path, known):
            # private names across sub-packages (TYPE_CHECKING imports included)
            private = _private_part(imp.name)
            if private and module != FACADE and _subpackage(imp.name) != _subpackage(module):
                out.append(
                    Violation(
                        module,
                        imp.name,
                        imp.line,
                        "private",
                        f"private name {private} of {_subpackage(imp.name)} imported from {_subpackage(module)}",
                    )
                )
            if imp.type_checking:
                continue
            if imp.target == FACADE:
                target_layer: int | None = FACADE_IMPORTED
                target_label = f"{FACADE_IMPORTED} ({FACADE}, the whole public API)"
            else:
                target_layer = layer_of(imp.target)
                target_label = layer_label(imp.target)
            if target_layer is None:
                out.append(Violation(module, imp.target, imp.line, "unplaced", f"{imp.target} is in no layer"))
                continue
            if module == FACADE:
                limit = FACADE_LAZY_MAX if imp.lazy else FACADE_EAGER_MAX
                if target_layer > limit:
                    how = "lazily" if imp.lazy else "when `import ruleengine` runs"
                    out.append(
                        Violation(
                            module,
                            imp.target,
                            imp.line,
                            "layer",
                            f"the facade may import at most layer {limit} {how}, not layer {target_label}",
                        )
                    )
                continue
            assert own is not None
            if target_layer > own:
                out.append(
                    Violation(
                        module,
                        imp.target,
                        imp.line,
                        "layer",
                        f"layer {layer_label(module)} may not import layer {target_label}",
                    )
                )
    return sorted(set(out), key=lambda v: (v.importer, v.line, v.imported))  # `from X import a, b`: once


def report(found: list[Violation]) -> str:
    return "\n".join(str(v) for v in found)


# --- the tests ---------------------------------------------------------------------------------


def test_every_module_is_in_a_layer() -> None:
    unplaced = [v for v in violations() if v.rule == "unplaced"]
    print(report(unplaced))
    assert not unplaced, "\n" + report(unplaced)


def test_no_new_violations() -> None:
    found = violations()
    print(report(found))  # every violation, known ones included, for `pytest -s`
    new = [v for v in found if v.key not in KNOWN]
    assert not new, "new import-layer violations:\n" + report(new)


@pytest.mark.parametrize(
    "key",
    [pytest.param(k, marks=pytest.mark.xfail(strict=True, reason="known violation")) for k in sorted(KNOWN)],
    ids=lambda k: f"{k[0]}->{k[1]}:{k[2]}",
)
def test_known_violation_is_fixed(key: tuple[str, str, str]) -> None:
    """Fails (xfail) while the violation exists; a fix makes it pass, and strict=True makes that a
    failure asking for the entry to be removed from KNOWN."""
    still = [v for v in violations() if v.key == key]
    assert not still, report(still)


def test_facade_lazy_targets() -> None:
    """Every entry of the facade's lazy table names an existing module at layer 7 at most."""
    known = modules(ROOT)
    table = facade_lazy_table(known)
    assert table, "ruleengine/__init__.py has no _LAZY table"
    for name, target in table.items():
        assert target in known, f"_LAZY[{name!r}] names {target}, which does not exist"
        layer = layer_of(target)
        assert layer is not None and layer <= FACADE_LAZY_MAX, f"_LAZY[{name!r}] → {layer_label(target)}"


def test_cli_and_render_are_edges() -> None:
    """Nothing below the CLI's layer imports ruleengine.cli; nothing below render's imports render."""
    edges = {"ruleengine.cli": LAYERS["ruleengine.cli"], "ruleengine.render": LAYERS["ruleengine.render"]}
    bad = []
    for v in violations():
        for edge, layer in edges.items():
            if v.rule == "layer" and (v.imported == edge or v.imported.startswith(edge + ".")):
                importer_layer = layer_of(v.importer)
                if v.importer == FACADE or (importer_layer is not None and importer_layer < layer):
                    bad.append(v)
    assert not bad, "\n" + report(bad)


# --- the checker checks itself on small made-up packages (so that the tests above can fail) ----


def _fake(tmp_path: Path, files: dict[str, str]) -> list[Violation]:
    root = tmp_path / PACKAGE
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return violations(root)


FACADE_SRC = '_LAZY = {"rate": ".api"}\nfrom .errors import E\n'


def test_checker_flags_upward_lazy_and_private_imports(tmp_path: Path) -> None:
    found = _fake(
        tmp_path,
        {
            "__init__.py": FACADE_SRC,
            "errors.py": "",
            "api.py": "",
            "cli.py": "",
            "rulebook/__init__.py": "",
            "rulebook/compiler.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from ..engine.evaluator import Evaluation\n"  # exempt: types only
                "def f():\n"
                "    from ..engine import evaluator\n"  # line 5: lazy, still counts
                "    from .. import rate\n"  # line 6: the facade's lazy name → api
            ),
            "engine/__init__.py": "",
            "engine/evaluator.py": "from ..io._arrow import numbers\nfrom ..rulebook import compiler\n",
            "io/__init__.py": "",
            "io/_arrow.py": "",
            "io/data.py": "from ._arrow import numbers\nimport ruleengine.cli\n",  # same sub-package: fine
        },
    )
    got = sorted(str(v) for v in found)
    assert got == sorted(
        [
            "ruleengine.engine.evaluator → ruleengine.io._arrow.numbers (line 1): "
            "private name _arrow of ruleengine.io imported from ruleengine.engine",
            "ruleengine.io.data → ruleengine.cli (line 2): "
            "layer 2 (ruleengine.io.data) may not import layer 8 (ruleengine.cli)",
            "ruleengine.rulebook.compiler → ruleengine.engine.evaluator (line 5): "
            "layer 1 (ruleengine.rulebook.compiler) may not import layer 3 (ruleengine.engine.evaluator)",
            "ruleengine.rulebook.compiler → ruleengine.api (line 6): "
            "layer 1 (ruleengine.rulebook.compiler) may not import layer 7 (ruleengine.api)",
        ]
    )


def test_checker_rules_for_the_facade_and_unplaced_modules(tmp_path: Path) -> None:
    found = _fake(
        tmp_path,
        {
            "__init__.py": FACADE_SRC + "from .api import rate\ndef f():\n    from . import cli\n",
            "errors.py": "from . import __version__\n",  # dunder, from the facade's eager part: fine
            "api.py": "",
            "cli.py": "import ruleengine\n",  # layer 8 may use the whole API
            "extras/__init__.py": "",
            "analysis/__init__.py": "",
            "analysis/diff.py": "import ruleengine\n",
        },
    )
    got = sorted(str(v) for v in found)
    assert got == sorted(
        [
            "ruleengine → ruleengine.api (line 3): the facade may import at most layer 0 when "
            "`import ruleengine` runs, not layer 7 (ruleengine.api)",
            "ruleengine → ruleengine.cli (line 5): the facade may import at most layer 7 lazily, "
            "not layer 8 (ruleengine.cli)",
            "ruleengine.analysis.diff → ruleengine (line 1): layer 5 (ruleengine.analysis.diff) may not import "
            "layer 7 (ruleengine, the whole public API)",
            "ruleengine.extras → ruleengine.extras (line 1): module is in no layer: add it to LAYERS",
        ]
    )


# --- exit codes are chosen at the CLI edge (issue #10, item 6) ----------------------------------


def _exit_code_uses(root: Path) -> list[str]:
    """``sys.exit``/``os._exit``/``exit()``/``SystemExit`` outside ruleengine/cli.py, except in an
    ``if __name__ == "__main__":`` block (a module run as a script is an edge too). Exceptions may
    still carry the code the CLI uses (``RuleEngineError.exit_code``, as STYLE.md asks)."""
    found: list[str] = []
    for module, path in modules(root).items():
        if module == "ruleengine.cli":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        main_blocks = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.If)
            and isinstance(n.test, ast.Compare)
            and isinstance(n.test.left, ast.Name)
            and n.test.left.id == "__name__"
        ]
        exempt = {id(x) for block in main_blocks for x in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in exempt:
                continue
            what = None
            if isinstance(node, ast.Name) and node.id == "SystemExit":
                what = node.id
            elif isinstance(node, ast.Attribute) and node.attr in ("exit", "_exit"):
                what = ast.unparse(node)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("exit", "quit"):
                what = node.func.id + "()"
            if what:
                found.append(f"{module} (line {node.lineno}): {what}")
    return sorted(set(found))


def test_only_the_cli_exits() -> None:
    found = _exit_code_uses(ROOT)
    assert not found, "exit codes chosen outside ruleengine/cli.py:\n" + "\n".join(found)


def test_exit_code_check_can_fail(tmp_path: Path) -> None:
    root = tmp_path / PACKAGE
    (root / "io").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "cli.py").write_text("import sys\nsys.exit(3)\n")  # the edge: fine
    (root / "errors.py").write_text("class E(Exception):\n    exit_code = 2\n")  # a code to use: fine
    (root / "io" / "__init__.py").write_text("")
    (root / "io" / "data.py").write_text(
        "import sys\ndef f():\n    sys.exit(1)\nif __name__ == '__main__':\n    raise SystemExit(f())\n"
    )
    (root / "io" / "read.py").write_text("def g():\n    raise SystemExit(2)\n")
    assert _exit_code_uses(root) == [
        "ruleengine.io.data (line 3): sys.exit",
        "ruleengine.io.read (line 2): SystemExit",
    ]
