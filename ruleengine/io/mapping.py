"""Column mapping files: a data provider's headers → the canonical inputs, with cited unit conversions.

A mapping file is YAML (see docs/data-contract.md)::

    mapping: 1                                # format version
    description: Huzhou economy bureau export
    missing: [未填报]                          # extra missing-value tokens (optional)
    columns:
      统一社会信用代码: firm_id
      年份: year
      行业代码: industry
      用电量(万千瓦时): {input: electricity_mwh, unit: 万千瓦时}
      工业增加值(万元): {input: value_added_10k_cny, unit: 万元}
      自备电厂折算: {input: heat_gj, factor: 0.5, source: "provider's manual, table 3 (assumed)"}
    industry_names:                           # names → GB/T 4754-2017 class codes (optional)
      水泥制造: "3011"
    # or: industry_names: gbt4754-2017        (the standard's own Chinese class names)

Every problem is reported with ``file:line:column``; a unit the engine does not know, or one that
does not convert into the input's own unit, is an error (no silent conversion).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import DataError, RuleEngineError

MAX_MAPPING_BYTES = 1 << 20

# Unit words as providers write them → (the engine's unit, factor into it, source). The numerals
# 万 = 10^4 and 亿 = 10^8 are definitions (GB/T 15835-2011 and common usage; official); SI
# prefixes per GB 3100-1993 (official); 吨标准煤 is the tonne of coal equivalent, 1 kgce =
# 29.3076 MJ (GB/T 2589-2020, official), which the engine writes ``tce``; natural-gas volumes
# are taken as reported at standard conditions (Nm3; assumed).
UNIT_CONVERSIONS: dict[str, tuple[str, float, str]] = {
    "万千瓦时": ("MWh", 10.0, "1 万千瓦时 = 10^4 kWh = 10 MWh (万 = 10^4; official definition)"),
    "千瓦时": ("MWh", 0.001, "1 kWh = 10^-3 MWh (GB 3100-1993; official)"),
    "kwh": ("MWh", 0.001, "1 kWh = 10^-3 MWh (GB 3100-1993; official)"),
    "兆瓦时": ("MWh", 1.0, "兆瓦时 is MWh"),
    "mwh": ("MWh", 1.0, "MWh"),
    "万元": ("10k CNY", 1.0, "万元 is 10^4 CNY"),
    "元": ("10k CNY", 1e-4, "1 元 = 10^-4 万元 (official definition)"),
    "千元": ("10k CNY", 0.1, "1 千元 = 10^3 元 = 0.1 万元 (official definition)"),
    "亿元": ("10k CNY", 1e4, "1 亿元 = 10^8 元 = 10^4 万元 (official definition)"),
    "吨": ("t", 1.0, "吨 is t"),
    "万吨": ("t", 1e4, "1 万吨 = 10^4 t (official definition)"),
    "千克": ("t", 1e-3, "1 kg = 10^-3 t (GB 3100-1993; official)"),
    "公斤": ("t", 1e-3, "1 公斤 = 1 kg = 10^-3 t (official)"),
    "吨标准煤": ("tce", 1.0, "吨标准煤 is tce, 1 kgce = 29.3076 MJ (GB/T 2589-2020; official)"),
    "万吨标准煤": ("tce", 1e4, "1 万吨标准煤 = 10^4 tce (GB/T 2589-2020; official)"),
    "千克标准煤": ("tce", 1e-3, "1 kgce = 10^-3 tce (GB/T 2589-2020; official)"),
    "万立方米": (
        "10k Nm3",
        1.0,
        "万立方米 at standard conditions is 10^4 Nm3 (assumed: reported at standard conditions)",
    ),
    "立方米": ("10k Nm3", 1e-4, "1 m3 = 10^-4 万 m3 (assumed: reported at standard conditions)"),
    "吉焦": ("GJ", 1.0, "吉焦 is GJ"),
    "gj": ("GJ", 1.0, "GJ"),
    "百万千焦": ("GJ", 1.0, "10^6 kJ = 1 GJ (GB 3100-1993; official)"),
    "兆焦": ("GJ", 1e-3, "1 MJ = 10^-3 GJ (GB 3100-1993; official)"),
}


def header_key(header: str) -> str:
    """How headers are compared: NFKC (full-width brackets → ASCII), trimmed, lower case, spaces → _."""
    text = str(header)
    return _cached_header_key(text) if len(text) <= 200 else _header_key(text)


_SEPARATORS = re.compile(r"[\s\-]+")


def _header_key(header: str) -> str:
    return _SEPARATORS.sub("_", unicodedata.normalize("NFKC", header).strip().lower())


# the same few dozen headers on every request of a service; only short ones kept (a posted body
# may hold any key), at most 4,096 of them
_cached_header_key = lru_cache(maxsize=4096)(_header_key)


@dataclass(frozen=True)
class ColumnRule:
    header: str  # as written in the mapping file
    input: str
    factor: float = 1.0
    note: str = ""  # the conversion and its source
    unit: str | None = None  # the engine unit the factor converts into
    where: str = ""  # file:line:column of the entry


@dataclass
class ColumnMapping:
    file: str
    columns: dict[str, ColumnRule] = field(default_factory=dict)  # header_key → rule
    missing: tuple[str, ...] = ()
    industry_names: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def rule_for(self, header: str) -> ColumnRule | None:
        return self.columns.get(header_key(header))


class MappingError(RuleEngineError):
    """A column mapping file that cannot be used (every message located file:line:column)."""


def _where(file: str, node: Any) -> str:
    m = node.start_mark
    return f"{file}:{m.line + 1}:{m.column + 1}"


def load_mapping(source: str | Path | dict[str, Any] | ColumnMapping) -> ColumnMapping:
    """Read and check a mapping file (or an already parsed dict, for the Python API)."""
    if isinstance(source, ColumnMapping):
        return source
    import yaml

    if isinstance(source, dict):
        text, file = yaml.safe_dump(source, allow_unicode=True, sort_keys=False), "<mapping>"
    else:
        p = Path(source)
        if not p.is_file():
            raise MappingError(f"mapping file not found: {source}")
        if p.stat().st_size > MAX_MAPPING_BYTES:
            raise MappingError(f"{source}: mapping file larger than {MAX_MAPPING_BYTES} bytes")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise MappingError(f"{source}: not UTF-8 text (byte {exc.start})") from None
        file = str(source)
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                m = event.start_mark
                where = f"{m.line + 1}:{m.column + 1}" if m is not None else "1:1"
                raise MappingError(f"{file}:{where}: aliases are not allowed in a mapping file")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        raise MappingError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    errors: list[str] = []
    out = ColumnMapping(file)
    if not isinstance(root, yaml.MappingNode):
        raise MappingError(f"{file}:1:1: a mapping file is a YAML mapping with 'mapping: 1' and 'columns:'")

    def scalar(node: Any, what: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            errors.append(f"{_where(file, node)}: {what} must be a single value")
            return None
        return str(node.value)

    seen_version = False
    for knode, vnode in root.value:
        key = scalar(knode, "a key")
        if key == "mapping":
            seen_version = True
            if scalar(vnode, "mapping") != "1":
                errors.append(f"{_where(file, vnode)}: unknown mapping format version (this engine reads 1)")
        elif key == "description":
            out.description = scalar(vnode, "description") or ""
        elif key == "missing":
            if not isinstance(vnode, yaml.SequenceNode):
                errors.append(f"{_where(file, vnode)}: missing is a list of tokens, e.g. [未填报, '/']")
            else:
                out.missing = tuple(t for n in vnode.value if (t := scalar(n, "a missing token")) is not None)
        elif key == "columns":
            _columns(file, vnode, out, errors, scalar)
        elif key == "industry_names":
            _industry_names(file, vnode, out, errors, scalar)
        elif key is not None:
            errors.append(
                f"{_where(file, knode)}: unknown key '{key}' (expected mapping, description, missing, "
                "columns, industry_names)"
            )
    if not seen_version:
        errors.append(f"{file}:1:1: 'mapping: 1' (the format version) is missing")
    if errors:
        raise MappingError("\n".join(errors))
    return out


def _columns(file: str, node: Any, out: ColumnMapping, errors: list[str], scalar: Any) -> None:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        errors.append(f"{_where(file, node)}: columns maps each provider header to an input")
        return
    for knode, vnode in node.value:
        header = scalar(knode, "a header")
        if header is None:
            continue
        where = _where(file, knode)
        target: str | None
        factor, note, unit = 1.0, "", None
        if isinstance(vnode, yaml.ScalarNode):
            target = str(vnode.value)
        elif isinstance(vnode, yaml.MappingNode):
            spec = {}
            for k, v in vnode.value:
                name = scalar(k, "a key")
                if name not in ("input", "unit", "factor", "source"):
                    errors.append(f"{_where(file, k)}: unknown key '{name}' (expected input, unit, factor, source)")
                    continue
                spec[name] = (scalar(v, name), v)
            target = spec.get("input", (None, None))[0]
            if target is None:
                errors.append(f"{where}: '{header}' needs 'input: <canonical column>'")
                continue
            if "unit" in spec and "factor" in spec:
                errors.append(f"{where}: give either 'unit' (a known conversion) or 'factor' with 'source', not both")
                continue
            if "unit" in spec:
                word = spec["unit"][0] or ""
                conv = UNIT_CONVERSIONS.get(word) or UNIT_CONVERSIONS.get(word.strip().lower())
                if conv is None:
                    errors.append(
                        f"{_where(file, spec['unit'][1])}: unknown unit '{word}' "
                        f"(known: {', '.join(UNIT_CONVERSIONS)}); for another conversion give 'factor' and 'source'"
                    )
                    continue
                unit, factor, why = conv
                note = f"{word} → {unit} ×{factor:g}: {why}"
            elif "factor" in spec:
                text, fnode = spec["factor"]
                try:
                    factor = float(text or "")
                    if not (factor > 0 and factor < 1e12):
                        raise ValueError
                except ValueError:
                    errors.append(f"{_where(file, fnode)}: factor must be a positive number, got {text!r}")
                    continue
                src = spec.get("source", (None, None))[0]
                if not src:
                    errors.append(f"{_where(file, fnode)}: a factor needs a 'source' saying where it comes from")
                    continue
                note = f"×{factor:g}: {src}"
        else:
            errors.append(f"{_where(file, vnode)}: '{header}' maps to an input name or {{input:, unit:}}")
            continue
        if not target or not re.fullmatch(r"[a-z_][a-z0-9_]*", target):
            errors.append(f"{_where(file, vnode)}: '{target}' is not a canonical input name (snake_case)")
            continue
        k = header_key(header)
        if k in out.columns:
            errors.append(f"{where}: header '{header}' is mapped twice (also at {out.columns[k].where})")
            continue
        out.columns[k] = ColumnRule(header, target, factor, note, unit, where)


def _industry_names(file: str, node: Any, out: ColumnMapping, errors: list[str], scalar: Any) -> None:
    import yaml

    from .identifiers import classification

    table = classification()
    if isinstance(node, yaml.ScalarNode):
        if node.value != "gbt4754-2017":
            errors.append(f"{_where(file, node)}: industry_names is a mapping name → code, or 'gbt4754-2017'")
            return
        out.industry_names = {v.name_zh: v.code for v in table.values() if v.level == 4}
        return
    if not isinstance(node, yaml.MappingNode):
        errors.append(f"{_where(file, node)}: industry_names maps names to GB/T 4754-2017 class codes")
        return
    for knode, vnode in node.value:
        name, code = scalar(knode, "a name"), scalar(vnode, "a code")
        if name is None or code is None:
            continue
        hit = table.get(code)
        if hit is None or hit.level != 4:
            errors.append(f"{_where(file, vnode)}: '{code}' is not a GB/T 4754-2017 class code (4 digits, quoted)")
            continue
        out.industry_names[name.strip()] = code


def resolve_headers(
    names: list[str], mapping: ColumnMapping | None, known: AbstractSet[str], source: str
) -> dict[str, str]:
    """header as written → canonical name, for the headers that change (mapping, case, spaces).

    Two headers that land on the same name are a file-level error (which one to read?).
    """
    rename: dict[str, str] = {}
    landed: dict[str, str] = {}
    for h in names:
        target = None
        if mapping is not None:
            rule = mapping.rule_for(h)
            if rule is not None:
                target = rule.input
        if target is None:
            k = header_key(h)
            target = k if k in known else h
        if target in landed:
            raise DataError(
                f"{source}: header line: columns '{landed[target]}' and '{h}' both read as {target}; keep one"
            )
        landed[target] = h
        if target != h:
            rename[h] = target
    return rename
