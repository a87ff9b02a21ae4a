"""Unit.parse / str: products of named factors with integer powers, one '/' at most."""

from __future__ import annotations

import pytest

from ruleengine.rulebook.units import Unit


@pytest.mark.parametrize("text", ["", "1", "-", "ratio", "fraction", "  1  ", " ratio "])
def test_dimensionless_spellings(text: str) -> None:
    u = Unit.parse(text)
    assert u == Unit()
    assert u.dimensionless
    assert str(u) == "1"


@pytest.mark.parametrize(
    ("text", "factors", "canonical"),
    [
        # Factor names may contain spaces; they are kept whole ("10k CNY" is one factor).
        ("tCO2/10k CNY", (("10k CNY", -1), ("tCO2", 1)), "tCO2/10k CNY"),
        ("10k CNY", (("10k CNY", 1),), "10k CNY"),
        ("GJ/10k Nm3", (("10k Nm3", -1), ("GJ", 1)), "GJ/10k Nm3"),
        ("tC/TJ", (("TJ", -1), ("tC", 1)), "tC/TJ"),
        # powers, negative powers, both product separators
        ("m^2", (("m", 2),), "m^2"),
        ("m^-2", (("m", -2),), "1/m^2"),
        ("kg*m/s^2", (("kg", 1), ("m", 1), ("s", -2)), "kg*m/s^2"),
        ("kg·m/s^2", (("kg", 1), ("m", 1), ("s", -2)), "kg*m/s^2"),
        # everything after the '/' is in the denominator: a*b/c*d = (a*b)/(c*d)
        ("a*b/c*d", (("a", 1), ("b", 1), ("c", -1), ("d", -1)), "a*b/c*d"),
        # repeated factors add their powers; cancelled factors disappear
        ("t*t", (("t", 2),), "t^2"),
        ("m^2/m", (("m", 1),), "m"),
        ("s/s", (), "1"),
        ("a^0", (), "1"),
        # a leading '1' (or nothing) in the numerator
        ("1/s", (("s", -1),), "1/s"),
        ("/s", (("s", -1),), "1/s"),
    ],
)
def test_parse_and_canonical_text(text: str, factors: tuple, canonical: str) -> None:
    u = Unit.parse(text)
    assert u.factors == factors
    assert str(u) == canonical
    # str → parse is a round trip, and the canonical text is a fixed point
    assert Unit.parse(str(u)) == u
    assert str(Unit.parse(canonical)) == canonical


def test_factor_order_does_not_matter() -> None:
    assert Unit.parse("m*kg/s^2") == Unit.parse("kg*m/s^2")
    assert Unit.parse("b*a") == Unit.parse("a*b")
    assert hash(Unit.parse("b*a")) == hash(Unit.parse("a*b"))


@pytest.mark.parametrize("text", ["a/b/c", "tCO2/10k CNY/yr", "1/s/s"])
def test_more_than_one_slash_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match=r"more than one '/'") as info:
        Unit.parse(text)
    assert repr(text) in str(info.value)  # the message quotes the offending text


def test_algebra() -> None:
    t = Unit.parse("tCO2")
    va = Unit.parse("10k CNY")
    # tCO2 / 10k CNY
    assert t / va == Unit.parse("tCO2/10k CNY")
    # (tCO2/MWh) * MWh = tCO2
    assert Unit.parse("tCO2/MWh") * Unit.parse("MWh") == t
    # GJ/t * tC/TJ * TJ/GJ * tCO2/tC = tCO2/t  (the fuel-combustion factor chain)
    chain = Unit.parse("GJ/t") * Unit.parse("tC/TJ") * Unit.parse("TJ/GJ") * Unit.parse("tCO2/tC")
    assert chain == Unit.parse("tCO2/t")
    assert Unit.parse("m") ** 3 == Unit.parse("m^3")
    assert Unit.parse("m/s") ** -1 == Unit.parse("s/m")
    assert (Unit.parse("m") ** 0).dimensionless
    assert (t / t).dimensionless
    assert not t.dimensionless


@pytest.mark.parametrize("text", ["m^2.5", "m^x"])
def test_malformed_power_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        Unit.parse(text)
