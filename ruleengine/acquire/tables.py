"""The cited tables shipped with the acquisition stage: unit aliases and invoice carrier mapping."""

from __future__ import annotations

import unicodedata
from functools import cache
from importlib import resources
from typing import Any

import yaml

# libyaml's parser where available (a 3,000-meter register: 0.1 s instead of 3 s); same safe subset
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def load_table(name: str) -> dict[str, Any]:
    text = resources.files("ruleengine.acquire").joinpath("tables", f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.load(text, Loader=_LOADER)
    assert isinstance(data, dict)
    return data


def normalize_unit(text: str) -> str:
    """The lookup key of a free-text unit: NFKC-folded (full-width -> ASCII), spaces removed, lower-case."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(folded.split()).lower()


def unit_alias(text: str) -> tuple[str, float] | None:
    """(canonical unit, factor) of a free-text unit, or None when the table does not list it."""
    entry = load_table("units")["aliases"].get(normalize_unit(text))
    if entry is None:
        return None
    return str(entry["unit"]), float(entry["factor"])


def carrier_column(carrier: str) -> tuple[str, dict[str, float]]:
    """(data-contract column, {canonical unit: factor to the column's unit}) of a carrier."""
    entry = load_table("units")["columns"][carrier]
    return str(entry["column"]), {str(k): float(v) for k, v in entry["from"].items()}


def carriers() -> list[str]:
    return list(load_table("units")["columns"])
