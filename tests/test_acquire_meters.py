"""Meter readings -> firm-year energy (issue #14): hand-computed totals, coverage and issues."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ruleengine.acquire import AcquireError, acquire_meters
from ruleengine.errors import RuleEngineError

FIRM = "91330500MA2B000001"

REGISTER_METER = f"""\
year: 2024
gap_policy: {{policy: {{policy}}}}
firms:
  "{FIRM}": {{firm_name: Test Works, city: huzhou, industry: "3011", grid_region: east, value_added_10k_cny: 1000}}
meters:
  # old meter: CT 200/5 = multiplier 40, 4-digit register (rolls over at 10000), replaced on 1 July
  - {{id: "000123", firm_id: "{FIRM}", carrier: electricity, kind: register, unit: kWh, ct: 200/5,
     digits: 4, capacity: 100, valid_from: 2024-01-01, valid_to: 2024-07-01, initial_reading: 9000, final_reading: 300}}
  # the new meter under the same metering-point id starts from 0
  - {{id: "000123", firm_id: "{FIRM}", carrier: electricity, kind: register, unit: kWh, ct: 200/5,
     digits: 4, capacity: 100, valid_from: 2024-07-01, initial_reading: 0}}
"""

READINGS = """\
meter,timestamp,value
000123,2024-03-01 00:00,9500
000123,2024-05-01 00:00,9900
000123,2024-05-01 00:00,9900
000123,2024-06-01 00:00,0100
000123,2024-08-01 00:00,50
000123,2024-10-01 00:00,80
"""


def _write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return p


def _codes(acq) -> dict[str, list]:
    out: dict[str, list] = {}
    for i in acq.report.issues:
        out.setdefault(i.code, []).append(i)
    return out


def test_register_meter_rollover_replacement_gap_duplicate(tmp_path: Path) -> None:
    reg = _write(tmp_path, "reg.yaml", REGISTER_METER.replace("{policy}", "missing"))
    src = _write(tmp_path, "r.csv", READINGS)
    acq = acquire_meters([src], reg)
    row = acq.table.to_pylist()[0]
    # old meter: 9000 -> 9500 -> 9900 -> (rollover at 10000) 100 -> final 300
    #   steps 500 + 400 + (100 + 10000 - 9900 = 200) + 200 = 1300 x 40 = 52,000 kWh
    # new meter: 0 -> 50 -> 80 = 80 x 40 = 3,200 kWh; no reading after 1 Oct: a gap to year end
    # total 55,200 kWh = 55.2 MWh; covered 1 Jan - 1 Oct = 274 of 366 days = 0.748634
    assert row["electricity_mwh"] == pytest.approx(55.2, abs=1e-9)
    assert row["electricity_mwh_coverage"] == pytest.approx(274 / 366, abs=1e-6)
    assert row["electricity_mwh_readings"] == 5  # 6 rows less the identical duplicate
    assert row["electricity_mwh_meters"] == 1
    assert row["electricity_mwh_source"] == "meters"
    assert row["electricity_mwh_policy"] == "gaps left missing"
    assert row["value_added_10k_cny"] == 1000.0 and row["industry"] == "3011"
    codes = _codes(acq)
    assert sorted(codes) == ["bridged", "duplicate", "gap", "replacement", "rollover"]
    (dup,) = codes["duplicate"]
    assert (dup.severity, dup.rows, dup.subject) == ("info", (3,), "meter 000123")
    (roll,) = codes["rollover"]
    assert roll.rows == (4,) and "9900 -> 100" in roll.message and roll.action == "counted as 200 x 40"
    (gap,) = codes["gap"]
    # 92 days x 96 intervals = 8832 intervals from 1 Oct 00:00 to 31 Dec 24:00
    assert gap.severity == "warning"
    assert gap.message == (
        "8832 interval(s) not covered by register readings in 1 run(s): 2024-10-01 00:00 to 2024-12-31 24:00 (8832)"
    )
    (rep,) = codes["replacement"]
    assert rep.message == "meter replaced at 2024-07-01 00:00"


def test_scale_policy_with_minimum(tmp_path: Path) -> None:
    reg = _write(tmp_path, "reg.yaml", REGISTER_METER.replace("{policy}", "scale, min_coverage: 0.7"))
    src = _write(tmp_path, "r.csv", READINGS)
    row = acquire_meters([src], reg).table.to_pylist()[0]
    # 55.2 MWh / (274/366) = 73.734306... MWh; 18.534306 MWh added by the policy
    assert row["electricity_mwh"] == pytest.approx(55.2 * 366 / 274, abs=1e-9)
    assert row["electricity_mwh_filled"] == pytest.approx(55.2 * 366 / 274 - 55.2, abs=1e-9)
    assert row["electricity_mwh_policy"] == "scale by coverage (min 0.7)"
    reg.write_text(REGISTER_METER.replace("{policy}", "scale, min_coverage: 0.9"), encoding="utf-8")
    row = acquire_meters([src], reg).table.to_pylist()[0]
    assert row["electricity_mwh"] is None  # 0.7486 < 0.9: left empty, never a silent fill
    assert row["electricity_mwh_policy"] == (
        "scale by coverage (min 0.9); coverage 0.749 below the policy minimum 0.9: left empty"
    )


def _wide(tmp: Path) -> Path:
    hdr = ["meter", "date"] + [f"{m // 60:02d}:{m % 60:02d}" for m in range(15, 1441, 15)]
    col = {h: i - 2 for i, h in enumerate(hdr)}
    d1 = ["1"] * 96
    d1[col["10:00"]] = d1[col["10:15"]] = ""  # a gap of two intervals
    d2 = ["1.5"] * 96
    d2[col["12:00"]] = "50"  # spike: 50 x 2 = 100 kWh > 100 kW x 0.25 h
    d2[col["18:00"]] = "-1"  # negative interval
    d3 = list(d2)
    d3[col["23:00"]] = "1.6"  # the same day again: 95 identical duplicates, one conflicting
    lines = [",".join(hdr)] + [
        ",".join([m, d, *v])
        for m, d, v in [
            ("0042", "2024-03-01", d1),
            ("0042", "2024-03-02", d2),
            ("0042", "2024-03-02", d3),
            ("0042", "2024-03-04", ["1"] * 96),
            ("9999", "2024-03-01", ["1"] * 96),
        ]
    ]
    return _write(tmp, "wide.csv", "\n".join(lines) + "\n")


WIDE_REGISTER = """\
year: 2024
gap_policy: {policy: interpolate, max_gap_intervals: 4}
meters:
  - {id: "0042", firm_id: F1, carrier: electricity, unit: kWh, ct: 10/5, capacity: 100,
     valid_from: 2024-03-01, valid_to: 2024-03-03}
"""


def test_wide_96_point_interval_meter(tmp_path: Path) -> None:
    acq = acquire_meters([_wide(tmp_path)], _write(tmp_path, "reg.yaml", WIDE_REGISTER))
    row = acq.table.to_pylist()[0]
    # 2 days = 192 intervals. Day 1: 94 readings x 1 x 2 = 188 kWh; day 2: 93 readings x 1.5 x 2 = 279 kWh
    # (spike, negative and conflicting duplicate treated as missing). Interpolated between neighbours:
    # 2 x (2 + 2) / 2 = 4 kWh on day 1, then 3 + 3 + 3 kWh on day 2 => 467 + 13 = 480 kWh = 0.48 MWh
    assert row["electricity_mwh"] == pytest.approx(0.48, abs=1e-12)
    assert row["electricity_mwh_filled"] == pytest.approx(0.013, abs=1e-12)
    assert row["electricity_mwh_coverage"] == pytest.approx(187 / 192, abs=1e-6)
    assert row["electricity_mwh_readings"] == 187
    codes = _codes(acq)
    assert sorted(codes) == [
        "conflicting_duplicate",
        "duplicate",
        "gap",
        "negative_interval",
        "outside_validity",
        "spike",
        "unknown_meter",
    ]
    assert codes["unknown_meter"][0].severity == "error" and codes["unknown_meter"][0].rows == (5,)
    assert codes["outside_validity"][0].rows == (4,)
    assert codes["spike"][0].rows == (2,)
    assert "100 > 25 per interval" in codes["spike"][0].message
    assert codes["conflicting_duplicate"][0].rows == (2, 3)
    assert codes["duplicate"][0].count == 95
    assert codes["gap"][0].message.startswith(
        "5 interval(s) missing in 4 run(s): 2024-03-01 09:45 to 2024-03-01 10:15 (2), "
    )


def test_wide_begin_labelled_header_and_parquet(tmp_path: Path) -> None:
    # the same day exported with 00:00 ... 23:45 columns, in Parquet: read as interval-begin labels
    hdr = {f"{m // 60:02d}:{m % 60:02d}": [2.0] for m in range(0, 1440, 15)}
    t = pa.table({"表号": ["0042"], "日期": ["2024-03-01"], **hdr})
    pq.write_table(t, tmp_path / "w.parquet")
    reg = WIDE_REGISTER.replace("valid_to: 2024-03-03", "valid_to: 2024-03-02")
    acq = acquire_meters([tmp_path / "w.parquet"], _write(tmp_path, "reg.yaml", reg))
    row = acq.table.to_pylist()[0]
    assert row["electricity_mwh"] == pytest.approx(96 * 2 * 2 / 1000)  # 96 x 2.0 x multiplier 2 = 384 kWh
    assert row["electricity_mwh_coverage"] == 1.0
    assert [i.code for i in acq.report.issues] == ["convention"]


def test_long_form_checks_units_timezone_year_edges(tmp_path: Path) -> None:
    reg = _write(
        tmp_path,
        "reg.yaml",
        """\
year: 2024
meters:
  - {id: "G-01", firm_id: F2, carrier: natural_gas, unit: m3, valid_from: 2024-12-31 23:00}
""",
    )
    # five intervals of gas in the last hour of 2024 (end labels 23:15 ... 24:00)
    src = _write(
        tmp_path,
        "gas.csv",
        """\
meter,timestamp,value,unit
G-01,2024-12-31 23:15,10,m3
G-01,2024-12-31T15:30:00Z,10,立方米
G-01,2024-12-31 23:45,10,kg
G-01,2024-12-31 24:00,10,方
G-01,2025-01-01 00:15,10,m3
G-01,2024-12-31 23:50,10,m3
G-01,not a time,10,m3
G-01,2024-12-31 23:45,abc,m3
""",
    )
    acq = acquire_meters([src], reg)
    row = acq.table.to_pylist()[0]
    # kept: 23:15, 23:30 (15:30 UTC = 23:30 UTC+8), 24:00 = 30 m3 = 0.003 x 10^4 Nm3; 23:45 is in kg: unit mismatch
    assert row["natural_gas_10k_nm3"] == pytest.approx(0.003, abs=1e-12)
    assert row["natural_gas_10k_nm3_coverage"] == pytest.approx(3 / 4)
    by = {i.code: i for i in acq.report.issues}
    assert by["unit_mismatch"].rows == (3,) and by["unit_mismatch"].severity == "error"
    assert by["outside_year"].rows == (5,)
    assert by["off_grid"].rows == (6,)
    assert by["bad_timestamp"].rows == (7,) and by["bad_timestamp"].column == "timestamp"
    assert by["bad_value"].rows == (8,) and by["bad_value"].column == "value"
    assert by["gap"].message == "1 interval(s) missing in 1 run(s): 2024-12-31 23:30 to 2024-12-31 23:45 (1)"


def test_leading_zeros_kept_and_interval_begin_suspected(tmp_path: Path) -> None:
    reg = _write(
        tmp_path,
        "reg.yaml",
        """\
year: 2024
meters:
  - {id: "007", firm_id: F3, carrier: heat, unit: GJ, valid_to: 2024-01-01 01:00}
  - {id: "7", firm_id: F4, carrier: heat, unit: GJ, valid_to: 2024-01-01 01:00}
""",
    )
    # meter 007 exported with interval-BEGIN labels (00:00 ... 00:45) though the register says end
    src = _write(
        tmp_path,
        "h.csv",
        "meter,timestamp,value\n"
        + "".join(f"007,2024-01-01 00:{m:02d},1\n" for m in (0, 15, 30, 45))
        + "7,2024-01-01 01:00,5\n",
    )
    acq = acquire_meters([src], reg)
    rows = {r["firm_id"]: r for r in acq.table.to_pylist()}
    assert rows["F3"]["heat_gj"] == 3.0  # 00:00 falls in 2023 under interval-end labels
    assert rows["F4"]["heat_gj"] == 5.0  # "7" and "007" are different meters
    conv = [i for i in acq.report.issues if i.code == "convention"]
    assert len(conv) == 1 and conv[0].subject == "meter 007" and "interval-begin" in conv[0].message


def test_register_errors_are_located(tmp_path: Path) -> None:
    src = _write(tmp_path, "r.csv", READINGS)
    cases = {
        "meters:\n  - {id: 12, firm_id: F, carrier: electricity, unit: kWh}\n": "meters[0].id: write meter ids as quoted text (leading zeros are kept): got 12",
        "meters:\n  - {id: '1', firm_id: F, carrier: electric, unit: kWh}\n": "meters[0].carrier: unknown carrier 'electric' (did you mean 'electricity'?)",
        "meters:\n  - {id: '1', firm_id: F, carrier: electricity, unit: 吨}\n": "meters[0].unit: '吨' (t) cannot measure electricity (expects kWh)",
        "meters:\n  - {id: '1', firm_id: F, carrier: electricity, unit: kWh, valid_to: 2024-06-01}\n"
        "  - {id: '1', firm_id: F, carrier: electricity, unit: kWh, valid_from: 2024-05-01}\n": "meters[1]: validity of meter 1 overlaps",
        "gap_policy: {policy: ffill}\nmeters: []\n": "gap_policy.policy: unknown gap policy 'ffill'",
    }
    for text, expected in cases.items():
        reg = _write(tmp_path, "reg.yaml", "year: 2024\n" + text)
        with pytest.raises(AcquireError) as exc:
            acquire_meters([src], reg)
        assert expected in str(exc.value)
        assert str(exc.value).startswith(str(reg))
        assert isinstance(exc.value, RuleEngineError)


def test_same_inputs_same_bytes(tmp_path: Path) -> None:
    reg = _write(tmp_path, "reg.yaml", REGISTER_METER.replace("{policy}", "missing"))
    src = _write(tmp_path, "r.csv", READINGS)
    outs = []
    for k in range(2):
        acq = acquire_meters([src], reg)
        acq.write(tmp_path / f"o{k}.parquet")
        outs.append(((tmp_path / f"o{k}.parquet").read_bytes(), acq.report.render("json")))
    assert outs[0] == outs[1]


def test_xlsx_export_resale_steam_and_heat(tmp_path: Path) -> None:
    from ruleengine.acquire.samplegen import write_xlsx

    reg = _write(
        tmp_path,
        "reg.yaml",
        """\
year: 2024
meters:
  - {id: "E1", firm_id: F, carrier: electricity, unit: kWh, valid_to: 2024-01-01 01:00}
  - {id: "R1", firm_id: F, carrier: electricity, unit: kWh, resale: true, valid_to: 2024-01-01 01:00}
  - {id: "X1", firm_id: F, carrier: electricity, unit: kWh, direction: export, valid_to: 2024-01-01 01:00}
  - {id: "S1", firm_id: F, carrier: steam, unit: 吨, steam_gj_per_t: 2.8, valid_to: 2024-01-01 01:00}
  - {id: "H1", firm_id: F, carrier: heat, unit: 吉焦, valid_to: 2024-01-01 01:00}
""",
    )
    rows = []
    for meter, value in (("E1", 10), ("R1", 2), ("X1", 3), ("S1", 0.5), ("H1", 1)):
        rows += [[meter, f"2024-01-01 00:{m:02d}" if m < 60 else "2024-01-01 01:00", value] for m in (15, 30, 45, 60)]
    write_xlsx(tmp_path / "m.xlsx", ["表号", "采集时间", "示值"], rows)
    (row,) = acquire_meters([tmp_path / "m.xlsx"], reg).table.to_pylist()
    # import 4 x 10 = 40 kWh less resale 4 x 2 = 8 kWh -> 0.032 MWh; export 4 x 3 = 12 kWh kept apart
    assert row["electricity_mwh"] == pytest.approx(0.032)
    assert row["electricity_resale_mwh"] == pytest.approx(0.008)
    assert row["electricity_export_mwh"] == pytest.approx(0.012)
    assert row["electricity_mwh_policy"] == "gaps left missing; net of 0.008 resold (electricity_resale_mwh)"
    # steam 4 x 0.5 t x 2.8 GJ/t = 5.6 GJ plus heat 4 x 1 GJ = 9.6 GJ
    assert row["heat_gj"] == pytest.approx(9.6)
    assert row["heat_gj_meters"] == 2
