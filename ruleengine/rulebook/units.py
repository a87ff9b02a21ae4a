"""Units as products of named factors with integer powers: ``tCO2/10k CNY`` = {tCO2: 1, 10k CNY: -1}.

There are no silent conversions: ``GJ`` and ``TJ`` are different factors, and a rulebook that
converts between them multiplies by a cited parameter with unit ``TJ/GJ``.  That keeps every
conversion visible in an audit trail and lets the compiler check that what a formula computes is
what its ``unit`` says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIMENSIONLESS = {"", "1", "-", "ratio", "fraction"}
_POWER = re.compile(r"^(.*?)\s*\^\s*(-?\d+)$")


@dataclass(frozen=True)
class Unit:
    factors: tuple[tuple[str, int], ...] = ()

    @staticmethod
    def parse(text: str) -> Unit:
        """Parse ``a*b/c·d^2``; one ``/`` at most: everything after it is in the denominator."""
        text = text.strip()
        if text in _DIMENSIONLESS:
            return Unit()
        if text.count("/") > 1:
            raise ValueError(f"unit {text!r} has more than one '/': write a/(b*c) as a/b*c")
        num, _, den = text.partition("/")
        powers: dict[str, int] = {}
        for part, sign in ((num, 1), (den, -1)):
            for factor in re.split(r"[*·]", part):
                factor = factor.strip()
                if not factor or factor == "1":
                    continue
                m = _POWER.match(factor)
                if m is None and "^" in factor:
                    raise ValueError(f"unit {text!r}: '{factor}' is not name^whole-number")
                name, power = (m.group(1).strip(), int(m.group(2))) if m else (factor, 1)
                powers[name] = powers.get(name, 0) + sign * power
        return Unit._make(powers)

    @staticmethod
    def _make(powers: dict[str, int]) -> Unit:
        return Unit(tuple(sorted((k, v) for k, v in powers.items() if v != 0)))

    def __mul__(self, other: Unit) -> Unit:
        powers = dict(self.factors)
        for k, v in other.factors:
            powers[k] = powers.get(k, 0) + v
        return Unit._make(powers)

    def __truediv__(self, other: Unit) -> Unit:
        return self * Unit(tuple((k, -v) for k, v in other.factors))

    def __pow__(self, n: int) -> Unit:
        return Unit._make({k: v * n for k, v in self.factors})

    @property
    def dimensionless(self) -> bool:
        return not self.factors

    def __str__(self) -> str:
        if not self.factors:
            return "1"

        def fmt(name: str, p: int) -> str:
            return name if p == 1 else f"{name}^{p}"

        num = [fmt(k, v) for k, v in self.factors if v > 0]
        den = [fmt(k, -v) for k, v in self.factors if v < 0]
        text = "*".join(num) or "1"
        return f"{text}/{'*'.join(den)}" if den else text
