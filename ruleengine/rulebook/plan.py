"""The compiled plan: everything evaluation needs, checked — a pure description, no data.

Built by :mod:`ruleengine.rulebook.compiler`; read by the engine, the analyses and the renderers.
Importing it costs nothing heavy (no compiler, no networkx, no numpy): the graph is rebuilt from
plain node and edge lists the first time someone asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import Diagnostic, SourceLocation
from . import expressions as ex
from .units import Unit

STANDARD_VARIABLES = ("scope1_tco2", "scope2_tco2", "emissions_tco2", "energy_tce")
# GB/T 2260 province-level codes (the first two digits of every division code; 71 Taiwan, 81 Hong
# Kong, 82 Macao). Source: GB/T 2260-2007 and the Ministry of Civil Affairs' current code list
# (secondary: a transcription of the MCA list, see docs/methods/sources.md).
GBT2260_PROVINCES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65 71 81 82".split()
)
RESERVED = (
    "rulebook",
    "rulebook_version",
    "rulebook_hash",
    "engine_version",
    "status",
    "reasons",
    "fallbacks",
    "rating",
    "incentive_rate_bp",
    "incentive_credit_policy",
    "incentive_services",
    "incentive_subsidy_pct",
    "provisional",
    "jurisdiction",
    "all",
)


@dataclass
class InputSpec:
    name: str
    type: str
    unit: Unit | None
    required: bool
    optional: bool
    default: Any
    min: float | None
    max: float | None
    values: tuple[str, ...] | None
    description: str
    loc: SourceLocation
    absent: str = "default"  # a column absent from the data: "error", or "default" (recorded per row)
    source: str | None = None  # the source the input cites, if any (issue #13)
    status: str | None = None


@dataclass
class ParamSpec:
    """A parameter: dated values, each a number or a table {key: number}."""

    name: str
    unit: Unit
    is_table: bool
    dated: list[tuple[str, Any]]  # [(effective date 'YYYY-MM-DD' or '', value or {key: value})]
    fallback_key: str | None
    key_units: dict[str, Unit] | None
    source: str
    status: str
    loc: SourceLocation

    @property
    def keys(self) -> tuple[str, ...]:
        keys: set[str] = set()
        for _, v in self.dated:
            keys.update(v)
        return tuple(sorted(keys))

    def value_for_year(self, year: int) -> tuple[str, Any] | None:
        """The (date, value) in force for reporting year ``year``: the latest whose date falls in or before it."""
        best = None
        for entry in self.dated:  # the stored entry itself: callers compare entries by identity
            if not entry[0] or int(entry[0][:4]) <= year:
                best = entry
        return best


@dataclass
class ScaleSpec:
    name: str
    kind: str  # piecewise | steps
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    closed: str
    unit: Unit
    input_unit: Unit | None
    loc: SourceLocation


@dataclass
class BenchmarkSpec:
    name: str
    statistic: str
    of: str | None
    numerator: str | None
    denominator: str | None
    where: ex.Expr | None
    groups: tuple[str, ...]
    min_peers: int
    fallback_parameter: str | None
    fallback_key: str | None
    fallback_value: float | None
    unit: Unit | None
    loc: SourceLocation
    source: str = ""  # the entry of `sources` the benchmark cites
    # the fallback level is a placeholder, not a published value: its table parameter (or, for a
    # fixed value, the benchmark itself) has status `assumed`; a rating that uses it is provisional
    placeholder: bool = False


@dataclass
class Band:
    id: str
    lower: float | str | None  # number, scalar parameter name, or unbounded
    upper: float | str | None
    label: str


@dataclass
class RatingSpec:
    name: str
    value: ex.Expr
    closed: str  # right: (lower, upper]; left: [lower, upper)
    better: str  # lower | higher
    bands: list[Band]
    levels: list[tuple[str, ex.Expr | None, str]]  # (id, condition or None for otherwise, label)
    primary: bool
    title: str
    loc: SourceLocation

    @property
    def ids(self) -> list[str]:
        return [b.id for b in self.bands] if self.bands else [lv[0] for lv in self.levels]

    def best_first(self) -> list[str]:
        """Level ids from best to worst."""
        if self.bands:
            ids = self.ids
            return ids if self.better == "lower" else ids[::-1]
        return self.ids


@dataclass
class Node:
    """A computed name: variable, check, benchmark or rating."""

    name: str
    kind: str
    expr: ex.Expr | None
    type: str
    unit: Unit | None
    spec: dict[str, Any]
    loc: SourceLocation
    deps: tuple[str, ...] = ()
    stage: int = 0


@dataclass
class SourceMap:
    """Where each entry of the rulebook came from — locations only, not the document.

    ``entries[(section, name)]`` (and ``("tests", i)``) is the location of that entry's key;
    ``origins`` names the library file of an imported entry; ``files`` holds the SHA-256 of every
    file the plan was compiled from and ``absent`` the import candidates that did not exist (a
    library added there later must recompile the plan).
    """

    file: str = ""
    entries: dict[tuple[str, Any], SourceLocation] = field(default_factory=dict)
    origins: dict[tuple[str, str], str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    absent: tuple[str, ...] = ()

    def loc(self, section: str, name: Any) -> SourceLocation:
        found = self.entries.get((section, name))
        return found if found is not None else SourceLocation(self.file, 0, 0, section)

    def origin(self, section: str, name: str) -> str | None:
        """The library file an entry was imported from (None: the rulebook's own)."""
        return self.origins.get((section, name))


@dataclass
class Plan:
    """Everything evaluation needs, checked: a pure description, no data."""

    id: str
    title: str
    version: str
    effective: str
    hash: str
    file: str
    sources: dict[str, dict[str, Any]]
    boundary: tuple[str, ...]
    inputs: dict[str, InputSpec]
    parameters: dict[str, ParamSpec]
    scales: dict[str, ScaleSpec]
    nodes: dict[str, Node]
    order: list[str]
    benchmarks: dict[str, BenchmarkSpec]
    ratings: dict[str, RatingSpec]
    primary: str
    incentives: dict[str, Any]  # {'rating': name of the rating it follows, 'levels': {level: spec}}
    tests: list[dict[str, Any]]
    graph: Any  # networkx.DiGraph
    warnings: list[Diagnostic] = field(default_factory=list)
    source_map: SourceMap = field(default_factory=lambda: SourceMap())
    overrides: dict[str, str] = field(default_factory=dict)  # "section.name" → library file it replaces
    crosswalk: dict[str, dict[str, Any]] = field(default_factory=dict)  # other rulebook id → {rating, map}
    is_library: bool = False
    # the administrative divisions the rulebook rates: GB/T 2260 code prefixes ('33' a province,
    # '3305' a prefecture-level city, '330502' a county); () = no restriction (all of China)
    divisions: tuple[str, ...] = ()
    jurisdiction: str = ""  # its name, e.g. "Huzhou, Zhejiang"

    # Pickled (the on-disk plan cache) without the networkx graph: it is rebuilt from plain node
    # and edge lists the first time someone asks, so loading a cached plan does not import networkx.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_ranks", None)
        state.pop("_compiled", None)  # the engine's compiled formulas (closures): rebuilt on use
        state.pop("_trace_chain", None)  # analysis.trace's chain and formula walks: rebuilt on use
        g = state.pop("graph", None)
        if g is not None:
            state["_graph_lists"] = (list(g.nodes(data=True)), list(g.edges(data=True)))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __getattr__(self, name: str) -> Any:  # only called for attributes not set
        lists = self.__dict__.get("_graph_lists")
        if name != "graph" or lists is None:
            raise AttributeError(name)
        import networkx as nx

        g: Any = nx.DiGraph()
        g.add_nodes_from(lists[0])
        g.add_edges_from(lists[1])
        self.__dict__["graph"] = g
        del self.__dict__["_graph_lists"]
        return g

    def rank(self, name: str) -> int:
        """The position of node ``name`` in the evaluation order (notes are listed in it)."""
        ranks = self.__dict__.get("_ranks")
        if ranks is None:
            ranks = self.__dict__["_ranks"] = {node: i for i, node in enumerate(self.order)}
        return ranks.get(name, len(self.order))

    @property
    def variables(self) -> list[str]:
        return [n for n in self.order if self.nodes[n].kind == "variable"]

    @property
    def stages(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for name in self.order:
            out.setdefault(self.nodes[name].stage, []).append(name)
        return out

    def kind_of(self, name: str) -> str | None:
        if name in self.inputs:
            return "input"
        if name in self.parameters:
            return "parameter"
        if name in self.scales:
            return "scale"
        node = self.nodes.get(name)
        return node.kind if node else None
