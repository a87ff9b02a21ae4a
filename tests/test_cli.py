"""The command line, driven as a user would: real files, real invocations, exact outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ruleengine.cli import main

HUZHOU = Path(__file__).resolve().parent.parent / "rulebooks" / "huzhou.yaml"
HEADER = [
    "firm_id",
    "year",
    "industry",
    "grid_region",
    "value_added_10k_cny",
    "raw_coal_t",
    "diesel_t",
    "electricity_mwh",
]


def write_portfolio(path: Path, bad: bool = True) -> None:
    rows = []
    for i in range(8):
        rows.append([f"F{i:02d}", "2022", "3011", "east", str(1000 + 100 * i), str(200 * i), "0", "1500"])
    if bad:
        rows[2][5] = "-40"  # a negative quantity: row 3, column raw_coal_t
        rows[5][6] = "twelve"  # a non-numeric cell: row 6, column diesel_t
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerows(rows)


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def _demo(tmp_path: Path, firms: int, *flags: str) -> Path:
    """`acquire sample` into tmp_path/demo: meter exports, a register, invoices and a mapping."""
    demo = tmp_path / "demo"
    assert run("acquire", "sample", str(demo), "--firms", str(firms), *flags).exit_code == 0
    return demo


def _meters(demo: Path, out: Path, files: list[Path] | None = None):
    """`acquire meters` of ``files`` (default: the demo's exports) with the demo's register."""
    files = files if files is not None else sorted((demo / "meters").glob("*.csv"))
    return run("acquire", "meters", *map(str, files), "--register", str(demo / "register.yaml"), "-o", str(out))


def _invoices(demo: Path, out: Path):
    """`acquire invoices` of the demo's invoice folder with its mapping."""
    return run("acquire", "invoices", str(demo / "invoices"), "--mapping", str(demo / "mapping.yaml"), "-o", str(out))


def test_rate_reports_bad_cells_and_rates_everyone_else(tmp_path):
    data = tmp_path / "firms.csv"
    write_portfolio(data)
    out = tmp_path / "ratings.csv"
    result = run("rate", "huzhou", str(data), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    # rows are the file's lines (the header is line 1)
    assert f"{data}: row 4, column raw_coal_t: -40 is below the minimum 0" in result.output
    assert f"{data}: row 7, column diesel_t: 'twelve' is not a number" in result.output
    assert "8 firm-years from" in result.output and "6 rated, 2 unrated" in result.output
    with out.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    status = {r["firm_id"]: (r["status"], r["reasons"]) for r in rows}
    assert status["F02"] == ("unrated", "raw_coal_t: -40 is below the minimum 0")
    assert status["F05"] == ("unrated", "diesel_t: 'twelve' is not a number")
    assert all(status[f"F{i:02d}"][0] == "rated" for i in (0, 1, 3, 4, 6, 7))
    # the 6 good firms form the industry peer group (>= 5 peers), the two bad rows are left out
    assert {r["industry_intensity_peers"] for r in rows} == {"6"}


def test_rate_output_is_byte_identical_across_runs(tmp_path):
    data = tmp_path / "firms.csv"
    write_portfolio(data)
    for suffix in ("csv", "json", "jsonl", "parquet"):
        a, b = tmp_path / f"a.{suffix}", tmp_path / f"b.{suffix}"
        assert run("rate", "huzhou", str(data), "-o", str(a)).exit_code == 0
        assert run("rate", str(HUZHOU), str(data), "-o", str(b)).exit_code == 0
        assert a.read_bytes() == b.read_bytes(), suffix


def test_rate_json_to_stdout_has_the_standard_columns(tmp_path):
    data = tmp_path / "firms.csv"
    write_portfolio(data, bad=False)
    result = CliRunner().invoke(main, ["rate", "huzhou", str(data), "--format", "json"])
    assert result.exit_code == 0
    records = json.loads(result.stdout)
    assert len(records) == 8
    first = list(records[0])
    assert first[:17] == [
        "firm_id",
        "year",
        "rulebook",
        "rulebook_version",
        "rulebook_hash",
        "engine_version",
        "status",
        "reasons",
        "fallbacks",
        "defaults",
        "provisional",
        "jurisdiction",
        "scope1_tco2",
        "scope2_tco2",
        "emissions_tco2",
        "energy_tce",
        "rating",
    ]
    # F00 burns no coal: emissions = 1500 MWh x 0.5617 = 842.55 tCO2
    assert records[0]["emissions_tco2"] == pytest.approx(842.55, abs=1e-9)


def test_rate_missing_required_column_is_one_clear_message(tmp_path):
    data = tmp_path / "firms.csv"
    data.write_text("firm_id,year,industry\nA,2022,3011\n", encoding="utf-8")
    result = run("rate", "huzhou", str(data))
    assert result.exit_code == 1
    # electricity_mwh declares absent: error (issue #12.1): named with the required denominator
    assert result.output == (
        f"error: {data}: required columns electricity_mwh, value_added_10k_cny missing (needed by huzhou)\n"
    )


@pytest.mark.parametrize(
    "content,expected",
    [
        (None, "error: data file not found: {p}\n"),
        ("", "error: {p}: the file is empty (expected a header row)\n"),
    ],
)
def test_rate_unreadable_data(tmp_path, content, expected):
    p = tmp_path / "firms.csv"
    if content is not None:
        p.write_text(content, encoding="utf-8")
    result = run("rate", "huzhou", str(p))
    assert result.exit_code == 1
    assert result.output == expected.format(p=p)


def test_rate_unknown_format(tmp_path):
    p = tmp_path / "firms.ods"
    p.write_text("x", encoding="utf-8")
    result = run("rate", "huzhou", str(p))
    assert result.exit_code == 1
    assert "unknown data format '.ods' (use .csv, .tsv, .json, .jsonl, .parquet or .xlsx)" in result.output


def test_explain_formats_and_near_matches(tmp_path):
    data = tmp_path / "firms.csv"
    write_portfolio(data, bad=False)
    text = run("explain", "huzhou", str(data), "--firm", "F03")
    assert text.exit_code == 0, text.output
    js = json.loads(run("explain", "huzhou", str(data), "--firm", "F03", "--format", "json").output)
    assert js["firm_id"] == "F03" and js["rulebook"]["id"] == "huzhou"
    # the text states the same decision as the JSON trace, word for word, under "why:"
    why = text.output.split("\nwhy:\n", 1)[1]
    assert why.startswith(f"  {js['decisions'][0]['because']}\n")
    md = run("explain", "huzhou", str(data), "--firm", "F03", "--format", "markdown").output
    assert md.startswith("# F03") and " — 2022: " in md.splitlines()[0]
    missing = run("explain", "huzhou", str(data), "--firm", "F3")
    assert missing.exit_code == 1
    assert "no firm 'F3' in the data; near matches: F03" in missing.output


def test_graph_formats():
    dot = run("graph", "huzhou").output
    assert dot.startswith('digraph "huzhou" {') and '"intensity" -> "k";' in dot
    mer = run("graph", "huzhou", "--format", "mermaid").output
    assert mer.startswith("flowchart LR") and "industry_intensity --> k" in mer
    js = json.loads(run("graph", "huzhou", "--format", "json").output)
    kinds = {n["id"]: n["kind"] for n in js["nodes"]}
    assert kinds["industry_intensity"] == "benchmark" and kinds["rating:level"] == "rating"
    stage = {n["id"]: n.get("stage") for n in js["nodes"]}
    assert stage["intensity"] == 0 and stage["industry_intensity"] == 1 and stage["k"] == 2


def test_author_tests_pass_and_a_moved_threshold_fails_readably(tmp_path):
    ok = run("test", "huzhou")
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines()[-1].endswith(" passed, 0 failed")
    edited = tmp_path / "huzhou.yaml"
    edited.write_text(
        HUZHOU.read_text(encoding="utf-8").replace(
            '- {id: "3", lower: 0.8, upper: 1.2, label: level 3}\n      - {id: "4", lower: 1.2,',
            '- {id: "3", lower: 0.8, upper: 1.1, label: level 3}\n      - {id: "4", lower: 1.1,',
        ),
        encoding="utf-8",
    )
    bad = run("test", str(edited))
    assert bad.exit_code == 1
    assert "FAIL huzhou: K exactly 1.2 is level 3" in bad.output
    assert "    rating: expected '3', got '4'" in bad.output


def test_help_explains_commands():
    out = run("--help").output
    for cmd in ("validate", "rate", "explain", "graph", "test", "books"):
        assert cmd in out
    assert "FILE:LINE:COL" in run("validate", "--help").output


def test_books_lists_huzhou():
    out = run("books").output
    assert out.startswith("huzhou       3.0.0")


def test_sample_command_is_seeded_and_rates(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    r = run("sample", "--firms", "40", "--years", "2022,2023", "--seed", "7", "-o", str(a))
    assert r.exit_code == 0, r.output
    assert r.output == f"wrote 80 firm-years (40 firms × 2 years, seed 7, messy 0) to {a}\n"
    assert run("sample", "--firms", "40", "--years", "2023,2022", "--seed", "7", "-o", str(b)).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    rated = run("rate", "huzhou", str(a), "--any-jurisdiction")  # the sample mixes three cities
    assert "80 firm-years from" in rated.output and "80 rated, 0 unrated" in rated.output


def test_sample_rejects_bad_arguments(tmp_path):
    assert run("sample", "--years", "20x2", "-o", str(tmp_path / "a.csv")).exit_code == 2
    bad = run("sample", "-o", str(tmp_path / "a.xlsx"))
    assert bad.exit_code == 2 and "use a .csv, .json, .jsonl or .parquet file" in bad.output


def test_every_bundled_rulebook_rates_the_sample_with_the_standard_columns(tmp_path):
    sample = Path(__file__).resolve().parent.parent / "examples" / "sample_firms.csv"
    standard = [
        "firm_id",
        "year",
        "rulebook",
        "rulebook_version",
        "rulebook_hash",
        "engine_version",
        "status",
        "reasons",
        "fallbacks",
        "defaults",
        "provisional",
        "jurisdiction",
        "scope1_tco2",
        "scope2_tco2",
        "emissions_tco2",
        "energy_tce",
        "rating",
    ]
    for book in ("huzhou", "quzhou", "shenzhen", "national"):
        out = tmp_path / f"{book}.csv"
        r = run("rate", book, str(sample), "-o", str(out))
        assert r.exit_code == 0, r.output
        with out.open(encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0])[:17] == standard
        assert len(rows) == 602
        # the sample mixes Huzhou, Quzhou and Shenzhen: a city's method rates its own firms only
        outside = [row for row in rows if row["jurisdiction"] == "outside"]
        assert all(row["status"] == "unrated" for row in outside)
        assert all("outside jurisdiction: division " in row["reasons"] for row in outside)
        # the sample's city column: 281 Huzhou (credit codes 913305…), 146 Quzhou (3308), 175 Shenzhen (4403)
        assert len(outside) == {"huzhou": 602 - 281, "quzhou": 602 - 146, "shenzhen": 602 - 175, "national": 0}[book]
        if book == "national":  # the national draft declares no jurisdiction
            assert {row["jurisdiction"] for row in rows} == {""}
        rated = sum(row["status"] == "rated" for row in rows)
        inside = len(rows) - len(outside)
        assert inside - 42 <= rated <= inside, (book, rated)  # the sample's deliberate defects stay unrated


def test_python_api_accepts_columns_and_arrow_tables():
    import pyarrow as pa

    import ruleengine

    cols = {
        "firm_id": ["A", "B"],
        "year": [2022, 2022],
        "industry": ["3011", "3011"],
        "value_added_10k_cny": [100.0, 200.0],
        "electricity_mwh": [100.0, 100.0],
    }
    a = ruleengine.rate("huzhou", cols)
    b = ruleengine.rate("huzhou", pa.table(cols))
    c = ruleengine.rate("huzhou", [dict(zip(cols, v, strict=True)) for v in zip(*cols.values(), strict=True)])
    for other in (b, c):
        assert other.to_records() == a.to_records()
    # 100 MWh x 0.5366 (national 2022: no grid region given) = 53.66 tCO2
    assert a["emissions_tco2"].tolist() == [pytest.approx(53.66), pytest.approx(53.66)]


def test_python_api_accepts_a_pandas_dataframe():
    pd = pytest.importorskip("pandas")  # optional: CI installs only the test extra
    import ruleengine

    sample = Path(__file__).resolve().parent.parent / "examples" / "sample_firms.csv"
    from_file = ruleengine.rate("huzhou", sample)
    # read without dtypes: pandas makes industry an int and blanks NaN; the engine restores the codes
    from_frame = ruleengine.rate("huzhou", pd.read_csv(sample))
    assert from_frame.distribution() == from_file.distribution()


def test_rate_summary_names_every_cause_or_says_how_many_are_left_out(tmp_path):
    """The bundled sample has eight distinct causes of an unrated row; the summary shows the five
    most common and says three more exist (it used to drop them silently)."""
    sample = HUZHOU.parent.parent / "examples" / "sample_firms.csv"
    result = run("rate", "huzhou", str(sample), "-o", str(tmp_path / "r.csv"))
    assert result.exit_code == 0
    with (tmp_path / "r.csv").open(encoding="utf-8") as fh:
        unrated = [r["reasons"] for r in csv.DictReader(fh) if r["status"] == "unrated"]
    causes = {part.split(":", 1)[0] for text in unrated for part in text.split("; ") if part}
    line = next(x for x in result.output.splitlines() if x.startswith("unrated because of:"))
    shown = line.split(": ", 1)[1].split(" and ")[0].split(", ")
    assert len(shown) == min(5, len(causes))
    left = len(causes) - len(shown)
    assert len(causes) > 5 and line.endswith(f" and {left} more causes (see the data problems below)")


def test_an_output_path_through_a_file_names_that_file(tmp_path):
    """`-o some.csv/out.csv` (a file where a folder should be): mkdir said "File exists", Arrow
    "Failed to open local file", `acquire sample` was an internal error (a bug); each is now one
    `error:` line naming the file in the way, exit code 1."""
    blocker = tmp_path / "firms.csv"
    write_portfolio(blocker)
    sample = str(Path(__file__).resolve().parents[1] / "examples" / "sample_firms.csv")
    for args, wanted in (
        (["sample", "--firms", "3", "-o", str(blocker / "x.csv")], f"cannot write {blocker / 'x.csv'}"),
        (["rate", "huzhou", sample, "-o", str(blocker / "x.parquet")], f"cannot write {blocker / 'x.parquet'}"),
        (["acquire", "sample", str(blocker / "demo")], f"cannot write {blocker / 'demo'}"),
        (["rate", "huzhou", sample, "--ledger", str(blocker / "x.db")], f"cannot create the ledger {blocker / 'x.db'}"),
    ):
        r = run(*args)
        assert r.exit_code == 1, (args, r.output)
        last = r.output.strip().splitlines()[-1]
        assert last.startswith(f"error: {wanted}") and last.endswith(f"{blocker} is a file, not a folder"), last


def test_a_csv_with_lone_cr_line_ends_rates_like_the_same_file_with_lf(tmp_path):
    """Old Mac/Excel "CSV" ends its lines with a lone CR: it was an internal error (the header
    line ran to the end of the file); it now rates byte-identically to the LF file."""
    lf = tmp_path / "firms.csv"
    write_portfolio(lf, bad=False)
    cr = tmp_path / "mac.csv"
    cr.write_bytes(lf.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r"))
    assert b"\n" not in cr.read_bytes()
    a, b = (
        run("rate", "huzhou", str(lf), "-o", str(tmp_path / "a.csv")),
        run("rate", "huzhou", str(cr), "-o", str(tmp_path / "b.csv")),
    )
    assert a.exit_code == b.exit_code == 0, b.output
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_commands_never_overwrite_a_key_a_signed_file_or_their_own_input(tmp_path):
    """keygen with --private and --public the same file (the private key was lost), or an existing
    public key (the pair broke); sign -o onto the file it signs; acquire -o onto one of its inputs
    or into an input folder: each refused, exit 1 or 2, the file unchanged."""
    pytest.importorskip("cryptography")
    k, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    assert run("ledger", "keygen", "--private", str(k), "--public", str(pub)).exit_code == 0
    before = {f: f.read_bytes() for f in (k, pub)}
    same = run("ledger", "keygen", "--private", str(tmp_path / "s.pem"), "--public", str(tmp_path / "s.pem"))
    assert same.exit_code == 1 and "are the same file" in same.output and not (tmp_path / "s.pem").exists()
    other = run("ledger", "keygen", "--private", str(tmp_path / "n.pem"), "--public", str(pub))
    assert other.exit_code == 1 and f"{pub} exists: not overwriting a key" in other.output
    assert not (tmp_path / "n.pem").exists()  # no half pair left behind
    half = run("ledger", "keygen", "--private", str(tmp_path / "h.pem"), "--public", str(tmp_path / "no" / "h.pub"))
    assert half.exit_code == 1 and "cannot write the key" in half.output and not (tmp_path / "h.pem").exists()
    data = tmp_path / "firms.csv"
    write_portfolio(data, bad=False)
    trace = tmp_path / "t.json"
    made = run("explain", "huzhou", str(data), "--firm", "F01", "--format", "json")
    assert made.exit_code == 0, made.output
    trace.write_text(made.stdout)
    text = trace.read_bytes()
    r = run("sign", str(trace), "--key", str(k), "-o", str(trace))
    assert r.exit_code == 2 and "would overwrite the file it signs" in r.output and trace.read_bytes() == text
    assert {f: f.read_bytes() for f in (k, pub)} == before
    demo = _demo(tmp_path, 2)
    first = sorted((demo / "meters").glob("*.csv"))[0]
    kept = first.read_bytes()
    r = _meters(demo, first)
    assert r.exit_code == 2 and "would be overwritten" in r.output and first.read_bytes() == kept
    r = _invoices(demo, demo / "invoices" / "out.csv")
    assert r.exit_code == 2 and "would be read as a source" in r.output and not (demo / "invoices" / "out.csv").exists()


def test_mistakes_that_were_internal_errors_are_one_error_line(tmp_path):
    """Each of these was exit code 3, "internal error … a bug in ruleengine" (a probe of every
    command with mistaken input): now an `error:` line (exit 1) or a usage error (exit 2)."""
    pytest.importorskip("sqlalchemy")
    data = tmp_path / "firms.csv"
    write_portfolio(data, bad=False)
    blocked = str(data / "x")
    cases = [
        (["graph", "huzhou", "-o", blocked], 1, "is a file, not a folder"),
        (["sample", "--firms", "3", "--seed", "-1", "-o", str(tmp_path / "s.csv")], 2, "-1 is not in the range"),
        (["rate", "huzhou", str(data), "--encoding", "rot13"], 1, "'rot13' is not a text encoding"),
        (["ledger", "-l", "sqlite://x.db", "runs"], 1, "a SQLite URL is sqlite:///FILE"),
        (["ledger", "-l", "postgresql://u@127.0.0.1:notaport/x", "runs"], 1, "malformed ledger URL"),
        (["ledger", "-l", str(tmp_path / "l.db"), "export", "-o", blocked], 1, f"{data} is a file, not a folder"),
    ]
    assert run("rate", "huzhou", str(data), "--ledger", str(tmp_path / "l.db")).exit_code == 0
    for args, code, said in cases:
        r = run(*args)
        assert r.exit_code == code and said in r.output and "internal error" not in r.output, (args, r.output)


def test_a_benchmark_file_edited_after_export_or_holding_no_number_is_refused(tmp_path):
    """An exported benchmark file whose values were changed (the probe set them all to -1e308: every
    firm rated level 1, exit 0), a value that is not a finite number, a `rulebook` that is not an
    object (was an internal error): each refused, naming the file; the untouched file rates."""
    import json

    data = tmp_path / "firms.csv"
    write_portfolio(data, bad=False)
    good = tmp_path / "b.json"
    assert run("rate", "huzhou", str(data), "--export-benchmarks", str(good)).exit_code == 0
    doc = json.loads(good.read_text())
    assert doc["tables_digest"].startswith("sha256:")
    assert run("rate", "huzhou", str(data), "--benchmarks", str(good)).exit_code == 0

    def variant(name: str, change) -> str:
        d = json.loads(good.read_text())
        change(d)
        p = tmp_path / name
        p.write_text(json.dumps(d))
        return str(p)

    def first_group(d):
        return next(iter(d["tables"].values()))["levels"][0]["groups"][0]

    def edit(d):
        first_group(d)["value"] = -1e308

    def infinite(d):
        first_group(d)["value"] = float("inf")
        del d["tables_digest"]

    def text_book(d):
        d["rulebook"] = "huzhou"

    for path, said in (
        (variant("edited.json", edit), "do not match their tables_digest"),
        (variant("inf.json", infinite), "is not a finite number"),
        (variant("book.json", text_book), "'rulebook' is not an object"),
    ):
        r = run("rate", "huzhou", str(data), "--benchmarks", path)
        assert r.exit_code == 1 and f"error: {path}: " in r.output and said in r.output, r.output


def test_a_rated_value_beyond_the_range_of_numbers_is_unrated_with_its_reason(tmp_path):
    """Inputs near 1e308 (or 1e-320 divisions) made intensity and k infinite: the firm was "rated
    5" with no reason (exit 0). Such a row is now unrated, and its reason says why."""
    import csv

    data = tmp_path / "firms.csv"
    write_portfolio(data, bad=False)
    rows = list(csv.reader(data.read_text().splitlines()))
    col = rows[0].index("raw_coal_t")
    rows[1][col] = "1e308"  # F00: its emissions overflow
    with data.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    out = tmp_path / "out.csv"
    r = run("rate", "huzhou", str(data), "-o", str(out))
    assert r.exit_code == 0, r.output
    got = {x["firm_id"]: x for x in csv.DictReader(out.read_text().splitlines())}
    assert got["F00"]["status"] == "unrated" and got["F00"]["rating"] == ""
    assert "is beyond the range of numbers" in got["F00"]["reasons"]
    assert got["F01"]["status"] == "rated"  # the others are rated as before


def test_acquire_reads_a_lone_cr_csv_and_names_a_binary_one_without_a_traceback(tmp_path):
    """`acquire meters` on a binary ".csv" printed Arrow's ignored-exception traceback (twice);
    it is now a located `not UTF-8 text` error in the report. A meter export whose lines end in a
    lone CR gives the same firm-years as the same export with LF line ends."""
    demo = _demo(tmp_path, 2, "--clean")
    meters = sorted((demo / "meters").glob("*.csv"))
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"a,b\n" + bytes(range(128, 256)) * 8 + b"\n")
    r = _meters(demo, tmp_path / "x.parquet", [binary])
    assert "Traceback" not in r.output and "Exception ignored" not in r.output, r.output
    assert "not UTF-8 text" in r.output
    cr_dir = tmp_path / "cr"
    cr_dir.mkdir()
    for m in meters:
        (cr_dir / m.name).write_bytes(m.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r"))
    a = _meters(demo, tmp_path / "lf.csv")
    b = _meters(demo, tmp_path / "cr.csv", sorted(cr_dir.glob("*.csv")))
    assert a.exit_code == b.exit_code == 0, b.output
    lf_rows, cr_rows = ((tmp_path / f).read_text().splitlines() for f in ("lf.csv", "cr.csv"))
    assert len(lf_rows) > 1
    keep = [i for i, h in enumerate(lf_rows[0].split(",")) if "source" not in h and "file" not in h]
    strip = lambda rows: [[c for i, c in enumerate(row.split(",")) if i in keep] for row in rows]  # noqa: E731
    assert strip(lf_rows) == strip(cr_rows)


def test_crossval_takes_its_own_csv_panels_and_refuses_a_rating_portfolio(tmp_path):
    """`acquire crossval` on the CSV panels `acquire meters|invoices -o X.csv` write was an internal
    error (their numbers read as text); they now give the same panel as the Parquet ones. A rating
    portfolio given as a panel (no provenance columns) is refused, not compared as meter data."""
    demo = _demo(tmp_path, 3, "--clean")
    for ext in ("csv", "parquet"):
        assert _meters(demo, tmp_path / f"m.{ext}").exit_code == 0
        r = _invoices(demo, tmp_path / f"i.{ext}")
        assert r.exit_code == 0, r.output
    outs = []
    for ext in ("csv", "parquet"):
        out = tmp_path / f"cv-{ext}.csv"
        r = run("acquire", "crossval", str(tmp_path / f"m.{ext}"), str(tmp_path / f"i.{ext}"), "-o", str(out))
        assert r.exit_code == 0 and "internal error" not in r.output, r.output
        outs.append(out.read_text())
    assert outs[0] == outs[1] and len(outs[0].splitlines()) > 1
    panel = (tmp_path / "m.csv").read_text().splitlines()
    col = panel[0].split(",").index('"electricity_mwh"')
    cells = panel[2].split(",")
    cells[col] = "abc"  # data row 2 of the meter panel
    (tmp_path / "m-bad.csv").write_text("\n".join([panel[0], panel[1], ",".join(cells), *panel[3:]]) + "\n")
    r = run("acquire", "crossval", str(tmp_path / "m-bad.csv"), str(tmp_path / "i.csv"), "-o", str(tmp_path / "y.csv"))
    assert r.exit_code == 1 and "column electricity_mwh, data row 2: not a number" in r.output, r.output
    portfolio = tmp_path / "firms.csv"
    write_portfolio(portfolio, bad=False)
    r = run("acquire", "crossval", str(portfolio), str(tmp_path / "i.csv"), "-o", str(tmp_path / "x.csv"))
    assert r.exit_code == 1 and "no provenance columns" in r.output, r.output


def test_an_impossible_report_date_and_a_negative_max_issues_are_refused(tmp_path):
    """`report --date 2023-02-30` (or 2023-13-45) was accepted and printed in the report three
    times; `--max-issues -1` listed 9 of 10 problems and said "... and 11 more". Both are usage
    errors now (exit 2)."""
    data = tmp_path / "firms.csv"
    write_portfolio(data, bad=True)
    for day in ("2023-02-30", "2023-13-45"):
        r = run("report", "huzhou", str(data), "--firm", "F01", "--date", day, "-o", str(tmp_path / "r.html"))
        assert r.exit_code == 2 and "that the calendar has" in r.output, r.output
    assert not (tmp_path / "r.html").exists()
    r = run("rate", "huzhou", str(data), "--max-issues", "-1")
    assert r.exit_code == 2 and "-1 is not in the range" in r.output, r.output
