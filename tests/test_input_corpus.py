"""A seeded corpus of malformed data files (issues #11.5 and #12): encodings, missing tokens, headers,
identifiers, Excel quirks, broken JSON/JSONL/Parquet/CSV cells.

Every file is generated from the seed into tmp_path and rated in ONE child process that runs under
a memory limit (RLIMIT_AS) and a per-case alarm, so a blow-up fails the test instead of the
machine. For each file: no traceback (a refusal is a DataError naming the file), no lost row (the
results have one row per record written), and every problem is located (file; row within the
file's rows; column, or a whole-row problem).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ruleengine.io.xlsx import write_xlsx

SEED = 20261202
N_FILES = 320
COLS = ["firm_id", "firm_name", "year", "industry", "value_added_10k_cny", "electricity_mwh", "raw_coal_t", "diesel_t"]
TOKENS = ["", "NA", "N/A", "NULL", "null", "nan", "-", "—", "无", "空"]
BAD_NUMBERS = ["abc", "1,2", "10,997", "1e999", "inf", "-5", "12..3", "３", "0x10", "true"]
BAD_INDUSTRY = ["610", "水泥制造", "30", "ABCD", "30111", " 3011 ", "3011.0"]


def _rows(rng: random.Random, n: int) -> list[dict]:
    out = []
    for i in range(n):
        out.append(
            {
                "firm_id": f"9133050{rng.randrange(10**10):010d}{i % 10}",
                "firm_name": rng.choice(["湖州水泥有限公司", "Liming Motors", "衢州化工", ""]),
                "year": 2022 + rng.randrange(2),
                "industry": rng.choice(["3011", "0610", "2614", "3120", "1713"]),
                "value_added_10k_cny": round(rng.uniform(10, 5000), 2),
                "electricity_mwh": round(rng.uniform(0, 9000), 3),
                "raw_coal_t": round(rng.uniform(0, 100), 2),
                "diesel_t": round(rng.uniform(0, 10), 3),
            }
        )
    return out


def _mutate(rng: random.Random, rows: list[dict]) -> None:
    for _ in range(rng.randrange(1, 5)):
        r = rng.choice(rows)
        kind = rng.randrange(6)
        col = rng.choice(["value_added_10k_cny", "electricity_mwh", "raw_coal_t", "diesel_t", "year"])
        if kind == 0:
            r[col] = rng.choice(TOKENS)
        elif kind == 1:
            r[col] = rng.choice(BAD_NUMBERS)
        elif kind == 2:
            r["industry"] = rng.choice(BAD_INDUSTRY)
        elif kind == 3:
            fid = r["firm_id"]
            r["firm_id"] = rng.choice([fid[:-1], fid.lower(), fid[:8] + "I" + fid[9:], "", "9.13305E+17"])
        elif kind == 4:
            r["firm_id"] = rows[0]["firm_id"]
            r["year"] = rows[0]["year"]  # a duplicate firm-year
        else:
            r[col] = rng.choice(["1,234.5", " 42 ", "+7", "1e3"])


def _header(rng: random.Random) -> list[str]:
    style = rng.randrange(4)
    if style == 0:
        return COLS
    if style == 1:
        return [c.upper() for c in COLS]
    if style == 2:
        return [f" {c.title()} " for c in COLS]
    return [c.replace("_", " ") for c in COLS]


def _csv_text(header: list[str], rows: list[dict], delim: str, ragged: bool, rng: random.Random) -> str:
    def q(v: object) -> str:
        s = "" if v is None else str(v)
        return '"' + s.replace('"', '""') + '"' if (delim in s or '"' in s or "\n" in s) else s

    lines = [delim.join(q(h) for h in header)]
    for r in rows:
        cells = [q(r[c]) for c in COLS]
        if ragged and rng.random() < 0.2:
            cells.append("extra") if rng.random() < 0.5 else cells.pop()
        lines.append(delim.join(cells))
        if rng.random() < 0.05:
            lines.append("")  # a blank line: not a row
    return "\n".join(lines) + "\n"


def _make(tmp: Path, k: int, rng: random.Random) -> tuple[Path, int]:
    n = rng.randrange(3, 25)
    rows = _rows(rng, n)
    _mutate(rng, rows)
    fmt = ["csv", "csv", "csv", "json", "jsonl", "parquet", "xlsx"][k % 7]
    if fmt == "csv":
        enc = rng.choice(["utf-8", "utf-8-sig", "gbk", "gb18030"])
        delim = rng.choice([",", ";", "\t"])
        text = _csv_text(_header(rng), rows, delim, rng.random() < 0.3, rng)
        data = text.encode(enc, errors="replace")
        if rng.random() < 0.15:  # one undecodable byte in a cell
            pos = data.rstrip(b"\n").rfind(b"\n") + 2  # inside the first cell of the last record
            data = data[:pos] + b"\xff" + data[pos:]
        p = tmp / f"c{k:03d}.csv"
        p.write_bytes(data)
    elif fmt == "json":
        header = _header(rng)
        recs: list = [dict(zip(header, r.values(), strict=True)) for r in rows]
        i = rng.randrange(n)
        recs[i]["electricity_mwh"] = rng.choice([[1, 2], {"a": 1}, 10**400, float("nan"), "x" * 5000, True, None])
        if rng.random() < 0.3:
            recs[rng.randrange(n)][list(recs[0])[6]] = "__DEEP__"
        text = json.dumps(recs, ensure_ascii=rng.random() < 0.5, allow_nan=True)
        text = text.replace('"__DEEP__"', "[" * 3000 + "]" * 3000)
        p = tmp / f"j{k:03d}.json"
        p.write_text(text, encoding="utf-8")
    elif fmt == "jsonl":
        lines = [json.dumps(r, ensure_ascii=False) for r in rows]
        if rng.random() < 0.5:
            lines[rng.randrange(n)] = '{"firm_id": "broken", '
        if rng.random() < 0.3:
            lines[rng.randrange(n)] = "[1, 2, 3]"
        p = tmp / f"l{k:03d}.jsonl"
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif fmt == "parquet":
        cols = {c: [r[c] for r in rows] for c in COLS}
        table = pa.table({c: pa.array([None if v == "" else str(v) for v in cols[c]]) for c in COLS})
        quirk = rng.randrange(4)
        if quirk == 0:
            table = table.append_column("diesel_t_list", pa.array([[1.0]] * n)).rename_columns(
                [*COLS[:-1], "x_unused", "diesel_t"]
            ).drop_columns(["x_unused"])  # fmt: skip
        elif quirk == 1:
            table = table.set_column(6, "raw_coal_t", pa.array([2**64 - 1] * n, pa.uint64()))
        elif quirk == 2:
            table = table.set_column(5, "electricity_mwh", pa.array([float("nan")] + [1.0] * (n - 1)))
        p = tmp / f"p{k:03d}.parquet"
        pq.write_table(table, p)
    else:
        header = _header(rng)
        table = pa.table(
            {
                h: pa.array([None if r[c] in ("", None) else str(r[c]) for r in rows])
                for h, c in zip(header, COLS, strict=True)
            }
        )
        if rng.random() < 0.5:  # codes that went through Excel as numbers
            table = table.set_column(
                3, header[3], pa.array([float(r["industry"]) if str(r["industry"]).isdigit() else None for r in rows])
            )
        p = tmp / f"x{k:03d}.xlsx"
        write_xlsx(p, [table])
    return p, n


CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys, traceback
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))
    import ruleengine
    plan = ruleengine.load("huzhou")
    def alarm(*_):
        raise TimeoutError("case took over 20 s")
    signal.signal(signal.SIGALRM, alarm)
    for line in sys.stdin:
        path = line.strip()
        out = {"path": path}
        signal.alarm(20)
        try:
            res = ruleengine.rate(plan, path)
            out["n"] = len(res)
            out["rows"] = res.batch.row_numbers.tolist()
            out["issues"] = [[i.source, i.row, i.column, i.fatal, i.message] for i in res.issues]
            out["unrated"] = int((res["status"] == "unrated").sum())
        except ruleengine.RuleEngineError as exc:
            out["error"] = str(exc)
        except BaseException as exc:
            out["crash"] = "".join(traceback.format_exception(exc))[-2000:]
        signal.alarm(0)
        print(json.dumps(out), flush=True)
    """
)


def test_seeded_corpus_of_malformed_files(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    made = {}
    for k in range(N_FILES):
        p, n = _make(tmp_path, k, rng)
        made[str(p)] = n
    assert len(made) >= 300
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        input="\n".join(made) + "\n",
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(results) == len(made)
    crashes = [r for r in results if "crash" in r]
    assert not crashes, crashes[:3]
    refused = [r for r in results if "error" in r]
    for r in refused:  # a refusal names the file (a header problem: both columns read as one name)
        assert r["error"].startswith(r["path"]), r
    assert len(refused) < len(results) // 10, [r["error"] for r in refused][:5]
    for r in results:
        if "error" in r:
            continue
        path, n = r["path"], made[r["path"]]
        # no lost row: one result per record written (blank CSV lines are not records)
        assert r["n"] == n, (path, r["n"], n)
        rows = set(r["rows"])
        for source, row, column, fatal, message in r["issues"]:
            assert source.startswith(path), (path, source)
            if fatal:
                assert row in rows, (path, row, message)
                assert column is not None or message, (path, message)
        fatal_rows = {row for _, row, _, fatal, _ in r["issues"] if fatal}
        assert r["unrated"] >= len(fatal_rows)
