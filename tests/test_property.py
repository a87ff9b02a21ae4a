"""Property: one firm rated alone against the batch's benchmark tables gets its batch numbers.

DESIGN.md: "A single firm is a batch of one and must give exactly the batch's numbers" and
evaluation is "a pure function of (plan, columns, benchmark tables)".  So for any portfolio,
``rate(plan, rows_of_one_firm, benchmarks=batch.tables)`` must equal, bit for bit, that firm's
rows in ``rate(plan, all_rows)`` — every number, every label, every reason and fallback.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ruleengine

# Two classes in division 30 and one in 26, so peer groups of 5+ (class or division) happen
# as well as groups too small (falling back to the published table).
INDUSTRIES = ("3011", "3011", "3011", "3012", "2611")  # 3011 three times as likely
REGIONS = (None, "east", "south", "north")
YEARS = ((2021,), (2022,), (2021, 2022))

quantity = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e5, allow_nan=False, allow_infinity=False))
positive = st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False)
# now and then 0 (division by zero: recorded, the firm unrated, not a peer)
value_added = st.integers(min_value=0, max_value=9).flatmap(lambda k: st.just(0.0) if k == 0 else positive)


@st.composite
def firm_year(draw: st.DrawFn) -> dict[str, object]:
    electricity = draw(quantity)
    row: dict[str, object] = {
        "value_added_10k_cny": draw(value_added),
        "raw_coal_t": draw(quantity),
        "natural_gas_10k_nm3": draw(quantity),
        "diesel_t": draw(quantity),
        "electricity_mwh": electricity,
        # at most what was purchased, so the green-power check passes
        "green_electricity_mwh": draw(st.floats(min_value=0.0, max_value=1.0)) * electricity,
        "onsite_renewable_mwh": draw(quantity),
    }
    if draw(st.booleans()):
        row["raw_coal_ncv_gj_per_unit"] = draw(st.floats(min_value=15.0, max_value=30.0))
    return row


@st.composite
def portfolio(draw: st.DrawFn) -> list[dict[str, object]]:
    rows = []
    for i in range(draw(st.integers(min_value=1, max_value=16))):
        industry = draw(st.sampled_from(INDUSTRIES))
        region = draw(st.sampled_from(REGIONS))
        for year in draw(st.sampled_from(YEARS)):
            row = {"firm_id": f"F{i:03d}", "year": year, "industry": industry, **draw(firm_year())}
            if region is not None:
                row["grid_region"] = region
            rows.append(row)
    order = draw(st.permutations(range(len(rows))))
    return [rows[j] for j in order]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equality of two result columns (NaN where NaN, -0.0 is not 0.0)."""
    if a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        return bool(
            np.array_equal(nan_a, nan_b) and np.array_equal(a[~nan_a].view(np.uint64), b[~nan_b].view(np.uint64))
        )
    return a.tolist() == b.tolist()


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(portfolio())
def test_one_firm_alone_equals_the_batch(rows: list[dict[str, object]]) -> None:
    plan = ruleengine.load("huzhou")
    batch = ruleengine.rate(plan, rows)
    assert set(batch.tables) == {"industry_intensity"}
    for firm in sorted({str(r["firm_id"]) for r in rows}):
        own = [r for r in rows if r["firm_id"] == firm]
        alone = ruleengine.rate(plan, own, benchmarks=batch.tables)
        idx = np.flatnonzero(batch["firm_id"] == firm)
        assert len(alone) == len(idx)
        assert alone.names == batch.names
        for name in batch.names:
            mine = batch[name][idx]
            assert _same(alone[name], mine), (firm, name, alone[name], mine)


def test_property_is_not_vacuous() -> None:
    """The comparison would see a difference: a different benchmark table changes the numbers."""
    plan = ruleengine.load("huzhou")
    rows = [
        {
            "firm_id": f"F{i}",
            "year": 2022,
            "industry": "3011",
            "grid_region": "east",
            "value_added_10k_cny": 100.0,
            "electricity_mwh": 100.0 * (i + 1),
        }
        for i in range(5)
    ]
    batch = ruleengine.rate(plan, rows)
    # 5 peers in 3011: benchmark = 0.5617 * (100 + 200 + 300 + 400 + 500) / 500 = 1.6851
    assert batch["industry_intensity_group"].tolist() == ["industry"] * 5
    assert batch["industry_intensity"][0] == pytest.approx(1.6851, rel=1e-12)
    # alone, without tables, one firm is too few peers: placeholder_industry_intensity['30'] = 6.5
    alone = ruleengine.rate(plan, rows[:1])
    assert alone["industry_intensity"][0] == 6.5
    assert not _same(alone["k"], batch["k"][:1])
    with_tables = ruleengine.rate(plan, rows[:1], benchmarks=batch.tables)
    assert _same(with_tables["k"], batch["k"][:1])
