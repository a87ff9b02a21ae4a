"""The meter register: which meter belongs to which firm, carrier, unit, multiplier and period.

A register is a YAML file (see docs/acquire-meters.md)::

    year: 2024
    interval_minutes: 15
    convention: end            # timestamps label the END of each interval (00:15 ... 24:00)
    gap_policy: {policy: scale, min_coverage: 0.9}
    firms:
      "91330500MA2B000001": {firm_name: Example Cement, city: huzhou, industry: "3011"}
    meters:
      - {id: "000123", firm_id: "91330500MA2B000001", carrier: electricity, kind: register,
         unit: kWh, ct: 200/5, pt: 10000/100, digits: 6, capacity: 2000,
         valid_from: 2024-01-01, valid_to: 2024-07-01, final_reading: 812.5}

The same meter id may appear in several entries with successive validity periods (a meter
replaced in place, or its multiplier changed); periods of one id may not overlap.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import did_you_mean
from .quality import AcquireError
from .tables import carrier_column, normalize_unit, unit_alias

# libyaml's parser where available (a 3,000-meter register: 0.1 s instead of 3 s); same safe subset
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

TZ_OFFSET_S = 8 * 3600  # all timestamps are China Standard Time, UTC+8, no daylight saving
KINDS = ("interval", "register")
METER_CARRIERS = ("electricity", "onsite_renewable", "natural_gas", "heat", "steam")
POLICIES = ("missing", "scale", "interpolate")
DIRECTIONS = ("import", "export")


@dataclass(frozen=True)
class GapPolicy:
    """How gaps are treated, recorded per firm-year: never a silent forward fill."""

    policy: str = "missing"
    min_coverage: float = 0.0  # scale: below this coverage the value is left empty
    max_gap_intervals: int = 8  # interpolate: longer gaps stay missing

    def describe(self) -> str:
        if self.policy == "scale":
            return f"scale by coverage (min {self.min_coverage:g})"
        if self.policy == "interpolate":
            return f"interpolate gaps up to {self.max_gap_intervals} intervals"
        return "gaps left missing"


@dataclass(frozen=True)
class MeterEntry:
    id: str
    firm_id: str
    carrier: str
    kind: str
    unit: str  # canonical unit after alias lookup (kWh, m3, GJ, t)
    unit_factor: float  # register unit -> canonical unit
    multiplier: float
    start: int  # epoch seconds (local wall clock as if UTC), inclusive
    end: int  # exclusive
    capacity: float  # max per hour in the register unit after multiplier; nan = not declared
    digits: int  # register rollover at 10**digits; 0 = not declared
    initial_reading: float
    final_reading: float
    direction: str
    resale: bool
    column_factor: float  # canonical unit -> data-contract column unit
    column: str
    path: str  # where it was declared, e.g. register.yaml: meters[3]


@dataclass
class Register:
    path: str
    year: int | None
    interval_s: int
    convention: str
    policies: dict[str, GapPolicy]
    spike_policy: str
    meters: list[MeterEntry]
    firms: dict[str, dict[str, Any]] = field(default_factory=dict)

    def policy_for(self, carrier: str) -> GapPolicy:
        return self.policies.get(carrier, self.policies["default"])


def parse_time(value: Any, where: str, end_of_day: bool = False) -> int:
    """Epoch seconds of a date or datetime written in the register (local time)."""
    if isinstance(value, dt.datetime):
        value = value.replace(tzinfo=None)
    elif isinstance(value, dt.date):
        value = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise AcquireError(f"{where}: '{value}' is not a date or date-time (YYYY-MM-DD[ HH:MM])") from None
        value = value.replace(tzinfo=None)
    else:
        raise AcquireError(f"{where}: expected a date, got {value!r}")
    return int((value - dt.datetime(1970, 1, 1)).total_seconds())


def _ratio(value: Any, where: str) -> float:
    """A CT or PT ratio: a number or 'primary/secondary' such as 200/5."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and "/" in value:
        a, _, b = value.partition("/")
        try:
            return float(a) / float(b)
        except (ValueError, ZeroDivisionError):
            pass
    raise AcquireError(f"{where}: '{value}' is not a ratio (a number or primary/secondary, e.g. 200/5)")


def _num(d: dict[str, Any], key: str, where: str, default: float) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise AcquireError(f"{where}.{key}: expected a number, got {v!r}")
    return float(v)


def _policy(d: Any, where: str) -> GapPolicy:
    if isinstance(d, str):
        d = {"policy": d}
    if not isinstance(d, dict):
        raise AcquireError(f"{where}: expected a mapping such as {{policy: scale, min_coverage: 0.9}}")
    p = d.get("policy", "missing")
    if p not in POLICIES:
        raise AcquireError(
            f"{where}.policy: unknown gap policy '{p}'{did_you_mean(str(p), POLICIES)} ({', '.join(POLICIES)})"
        )
    unknown = set(d) - {"policy", "min_coverage", "max_gap_intervals"}
    if unknown:
        raise AcquireError(f"{where}: unknown key {sorted(unknown)[0]}")
    mc = _num(d, "min_coverage", where, 0.0)
    if not 0 <= mc <= 1:
        raise AcquireError(f"{where}.min_coverage: {mc} is not within 0..1")
    return GapPolicy(p, mc, int(_num(d, "max_gap_intervals", where, 8)))


_METER_KEYS = {
    "id", "firm_id", "carrier", "kind", "unit", "multiplier", "ct", "pt", "valid_from", "valid_to",
    "capacity", "digits", "initial_reading", "final_reading", "direction", "resale", "steam_gj_per_t", "note",
}  # fmt: skip


def load_register(path: str | Path) -> Register:
    """Read and check a register file; every problem is an AcquireError naming the entry."""
    p = Path(path)
    name = str(path)
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_LOADER)
    except FileNotFoundError:
        raise AcquireError(f"{name}: register file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AcquireError(f"{name}: not a readable YAML file: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict) or not isinstance(data.get("meters"), list):
        raise AcquireError(f"{name}: a register is a mapping with a 'meters' list")
    year = data.get("year")
    if year is not None and not isinstance(year, int):
        raise AcquireError(f"{name}: year: expected a year such as 2024")
    interval_min = int(_num(data, "interval_minutes", name, 15))
    if interval_min <= 0 or 1440 % interval_min:
        raise AcquireError(f"{name}: interval_minutes: {interval_min} does not divide a day")
    convention = data.get("convention", "end")
    if convention not in ("end", "begin"):
        raise AcquireError(f"{name}: convention: '{convention}' is neither 'end' nor 'begin'")
    raw_pol = data.get("gap_policy", {"policy": "missing"})
    policies = {"default": _policy(raw_pol, f"{name}: gap_policy")}
    for carrier, pol in (data.get("gap_policy_by_carrier") or {}).items():
        if carrier not in METER_CARRIERS:
            raise AcquireError(
                f"{name}: gap_policy_by_carrier: unknown carrier '{carrier}'{did_you_mean(carrier, METER_CARRIERS)}"
            )
        policies[carrier] = _policy(pol, f"{name}: gap_policy_by_carrier.{carrier}")
    spike_policy = data.get("spike_policy", "exclude")
    if spike_policy not in ("exclude", "keep"):
        raise AcquireError(f"{name}: spike_policy: '{spike_policy}' is neither 'exclude' nor 'keep'")
    firms = data.get("firms") or {}
    if not isinstance(firms, dict):
        raise AcquireError(f"{name}: firms: expected a mapping firm_id -> attributes")
    firms = {str(k): dict(v or {}) for k, v in firms.items()}
    meters: list[MeterEntry] = []
    for i, m in enumerate(data["meters"]):
        where = f"{name}: meters[{i}]"
        if not isinstance(m, dict):
            raise AcquireError(f"{where}: expected a mapping")
        unknown = set(m) - _METER_KEYS
        if unknown:
            k = sorted(unknown)[0]
            raise AcquireError(f"{where}: unknown key '{k}'{did_you_mean(k, _METER_KEYS)}")
        for req in ("id", "firm_id", "carrier", "unit"):
            if m.get(req) in (None, ""):
                raise AcquireError(f"{where}: '{req}' is required")
        if not isinstance(m["id"], str):
            raise AcquireError(f"{where}.id: write meter ids as quoted text (leading zeros are kept): got {m['id']!r}")
        carrier = m["carrier"]
        if carrier not in METER_CARRIERS:
            raise AcquireError(
                f"{where}.carrier: unknown carrier '{carrier}'{did_you_mean(str(carrier), METER_CARRIERS)}"
            )
        kind = m.get("kind", "interval")
        if kind not in KINDS:
            raise AcquireError(f"{where}.kind: '{kind}' is neither 'interval' nor 'register' (cumulative)")
        alias = unit_alias(str(m["unit"]))
        if alias is None:
            raise AcquireError(f"{where}.unit: unit '{m['unit']}' is not in the unit table")
        canon, ufactor = alias
        column, froms = carrier_column(carrier)
        if carrier == "steam" and "steam_gj_per_t" in m:
            froms = {"t": _num(m, "steam_gj_per_t", where, 0)}
        if canon not in froms:
            raise AcquireError(
                f"{where}.unit: '{m['unit']}' ({canon}) cannot measure {carrier} (expects {', '.join(froms)})"
            )
        if "multiplier" in m and ("ct" in m or "pt" in m):
            raise AcquireError(f"{where}: give either multiplier or ct/pt, not both")
        mult = _num(m, "multiplier", where, 1.0) if "multiplier" in m else 1.0
        if "ct" in m:
            mult *= _ratio(m["ct"], f"{where}.ct")
        if "pt" in m:
            mult *= _ratio(m["pt"], f"{where}.pt")
        if not mult > 0:
            raise AcquireError(f"{where}: multiplier must be positive, got {mult}")
        start = parse_time(m["valid_from"], f"{where}.valid_from") if "valid_from" in m else -(2**40)
        end = parse_time(m["valid_to"], f"{where}.valid_to") if "valid_to" in m else 2**40
        if end <= start:
            raise AcquireError(f"{where}: valid_to is not after valid_from")
        direction = m.get("direction", "import")
        if direction not in DIRECTIONS:
            raise AcquireError(f"{where}.direction: '{direction}' is neither 'import' nor 'export'")
        digits = int(_num(m, "digits", where, 0))
        meters.append(
            MeterEntry(
                id=m["id"],
                firm_id=str(m["firm_id"]),
                carrier=carrier,
                kind=kind,
                unit=canon,
                unit_factor=ufactor,
                multiplier=mult,
                start=start,
                end=end,
                capacity=_num(m, "capacity", where, float("nan")),
                digits=digits,
                initial_reading=_num(m, "initial_reading", where, float("nan")),
                final_reading=_num(m, "final_reading", where, float("nan")),
                direction=direction,
                resale=bool(m.get("resale", False)),
                column_factor=froms[canon],
                column=column,
                path=where,
            )
        )
    by_id: dict[str, list[MeterEntry]] = {}
    for e in meters:
        by_id.setdefault(e.id, []).append(e)
    for mid, entries in by_id.items():
        entries.sort(key=lambda e: e.start)
        for a, b in zip(entries, entries[1:], strict=False):
            if b.kind != a.kind:
                raise AcquireError(f"{b.path}: meter {mid} is '{b.kind}' here but '{a.kind}' in {a.path}")
            if b.start < a.end:
                raise AcquireError(f"{b.path}: validity of meter {mid} overlaps {a.path}")
    return Register(name, year, interval_min * 60, convention, policies, spike_policy, meters, firms)


def unit_matches(text: str, entry: MeterEntry) -> bool:
    alias = unit_alias(text)
    return alias is not None and alias[0] == entry.unit and alias[1] == entry.unit_factor


__all__ = ["GapPolicy", "MeterEntry", "Register", "load_register", "normalize_unit", "parse_time", "unit_matches"]
