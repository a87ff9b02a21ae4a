"""Issue #12.2/#12.3/#12.6: headers, mapping files, identifiers, encodings, delimiters, thousands, .xlsx."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

import ruleengine
from ruleengine.cli import main
from ruleengine.io.identifiers import classification, industry_problem, uscc_check_char, uscc_problem

ROWS = "F1,2022,3011,100,50\nF2,2022,3011,200,10\n"


def _write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def test_headers_match_regardless_of_case_and_spaces(tmp_path: Path) -> None:
    # Electricity_MWh drew a warning and electricity counted as 0 before (issue #12.2)
    p = _write(tmp_path, "x.csv", " Firm_ID ,YEAR,Industry,Value_Added_10k_CNY,Electricity_MWh\n" + ROWS)
    res = ruleengine.rate("huzhou", p)
    assert res.batch.columns["electricity_mwh"].tolist() == [50.0, 10.0]
    assert res.issues == []


def test_mapping_file_with_chinese_headers_and_cited_units(tmp_path: Path) -> None:
    m = _write(
        tmp_path,
        "map.yaml",
        "mapping: 1\ncolumns:\n  统一社会信用代码: firm_id\n  年份: year\n  行业: industry\n"
        "  用电量(万千瓦时): {input: electricity_mwh, unit: 万千瓦时}\n"
        "  工业增加值(万元): {input: value_added_10k_cny, unit: 万元}\n"
        "industry_names: {水泥制造: '3011'}\n",
    )
    p = _write(
        tmp_path, "x.csv", "统一社会信用代码,年份,行业,用电量（万千瓦时）,工业增加值(万元)\nF1,2022,水泥制造,5,100\n"
    )
    res = ruleengine.rate("huzhou", p, mapping=m)
    # 5 万千瓦时 = 5 x 10^4 kWh = 50 MWh; full-width brackets match the mapping's ASCII ones
    assert res.batch.columns["electricity_mwh"].tolist() == [50.0]
    assert res.batch.columns["industry"].labels == ["3011"]
    assert res["status"].tolist() == ["rated"]
    # and through the CLI
    out = CliRunner().invoke(main, ["rate", "huzhou", str(p), "--mapping", str(m)])
    assert out.exit_code == 0, out.output
    assert "read from '用电量(万千瓦时)' 万千瓦时 → MWh ×10" in out.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("columns: {a: firm_id}\n", "x.yaml:1:1: 'mapping: 1' (the format version) is missing"),
        ("mapping: 1\ncolumns:\n  电量: {input: electricity_mwh, unit: 万度}\n", "x.yaml:3:38: unknown unit '万度'"),
        (
            "mapping: 1\ncolumns:\n  电量: {input: electricity_mwh, factor: 10}\n",
            "x.yaml:3:40: a factor needs a 'source'",
        ),
        ("mapping: 1\ncolums: {}\n", "x.yaml:2:1: unknown key 'colums'"),
        ("mapping: 1\nindustry_names: {水泥: '301'}\n", "x.yaml:2:22: '301' is not a GB/T 4754-2017 class code"),
        ("mapping: 1\ncolumns: &a {x: firm_id}\nmore: *a\n", "x.yaml:3:7: aliases are not allowed"),
    ],
)
def test_mapping_file_errors_are_located(tmp_path: Path, text: str, message: str) -> None:
    from ruleengine.io.mapping import MappingError, load_mapping

    m = _write(tmp_path, "x.yaml", text)
    with pytest.raises(MappingError) as info:
        load_mapping(m)
    assert str(info.value).startswith(str(tmp_path / message.split(":")[0]) + message[len(message.split(":")[0]) :])


def test_mapping_unit_must_fit_the_input(tmp_path: Path) -> None:
    m = _write(tmp_path, "m.yaml", "mapping: 1\ncolumns:\n  电量: {input: electricity_mwh, unit: 万元}\n")
    p = _write(tmp_path, "x.csv", "firm_id,year,industry,value_added_10k_cny,电量\n" + ROWS)
    with pytest.raises(
        ruleengine.DataError, match=r"m.yaml:3:3: the conversion gives 10k CNY, but electricity_mwh is in MWh"
    ):
        ruleengine.rate("huzhou", p, mapping=m)


# -- identifiers ----------------------------------------------------------------------------------


def test_uscc_check_digit() -> None:
    # GB 32100-2015 worked by hand for 91350100M000100Y4?: values 9,1,3,5,0,1,0,0,M=21,0,0,0,1,0,0,Y=30,4
    # x weights 1,3,9,27,19,26,16,17,20,29,25,13,8,24,10,30,28 = 9+3+27+135+0+26+0+0+420+0+0+0+8+0+0+900+112
    # = 1640; 1640 mod 31 = 28; 31 - 28 = 3 → '3'
    assert uscc_check_char("91350100M000100Y4") == "3"
    assert uscc_problem("91350100M000100Y43") is None
    assert uscc_problem("91350100M000100Y44") == (
        "check character is '4', expected '3' (GB 32100-2015): a typo or a truncated code"
    )
    assert uscc_problem("91350100M000100Y4").startswith("has 17 characters")
    assert "character 9 'I' is not allowed" in uscc_problem("91350100I000100Y43")


def test_credit_code_check_per_row_with_id_check_error(tmp_path: Path) -> None:
    p = _write(
        tmp_path, "x.csv",
        "firm_id,year,industry,value_added_10k_cny,electricity_mwh\n"
        "91350100M000100Y43,2022,3011,100,5\n91350100M000100Y44,2022,3011,100,5\n",
    )  # fmt: skip
    # Fuzhou codes (division 350100): outside Huzhou's jurisdiction, rated here on request
    warn = ruleengine.rate("huzhou", p, any_jurisdiction=True)
    assert warn["status"].tolist() == ["rated", "rated"]
    assert [(i.row, i.fatal) for i in warn.issues] == [(3, False)]
    assert (
        ruleengine.rate("huzhou", p)["reasons"].tolist()
        == [
            "outside jurisdiction: division 350100 (firm_id) is not in huzhou's jurisdiction (Huzhou, Zhejiang: 3305xx)"
        ]
        * 2
    )
    err = ruleengine.rate("huzhou", p, read_options={"id_check": "error"}, any_jurisdiction=True)
    assert err["status"].tolist() == ["rated", "unrated"]
    assert [i.format() for i in err.issues] == [
        f"{p}: row 3, column firm_id: not a unified social credit code: check character is '4', expected '3' "
        "(GB 32100-2015): a typo or a truncated code"
    ]


def test_classification_shipped_and_lost_leading_zero(tmp_path: Path) -> None:
    table = classification()
    # GB/T 4754-2017: 20 sections, 97 divisions, 473 groups, 1,380 classes
    assert [sum(v.level == k for v in table.values()) for k in (1, 2, 3, 4)] == [20, 97, 473, 1380]
    assert table["3011"].name_zh == "水泥制造" and table["C"].name_en == "Manufacturing"
    assert table["30"].name_en == "Manufacture of non-metallic mineral products"
    assert industry_problem("0610") is None
    assert "did you mean '0610'" in industry_problem("610")
    p = _write(tmp_path, "x.csv", "firm_id,year,industry,value_added_10k_cny,electricity_mwh\nA,2022,610,100,5\n"
               "B,2022,水泥制造,100,5\nC,2022,0610,100,5\n")  # fmt: skip
    res = ruleengine.rate("huzhou", p)
    assert res["status"].tolist() == ["unrated", "unrated", "rated"]
    msgs = [i.format() for i in res.issues]
    assert msgs[0].startswith(
        f"{p}: row 2, column industry: '610' is not a GB/T 4754-2017 class code (did you mean '0610'"
    )
    assert "names are accepted only through a column mapping file" in msgs[1]


# -- real files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030"])
def test_encodings_detected(tmp_path: Path, encoding: str) -> None:
    p = _write(tmp_path, "x.csv", "firm_id,firm_name,year,industry,value_added_10k_cny,electricity_mwh\n"
               "F1,湖州水泥有限公司,2022,3011,100,50\n", encoding)  # fmt: skip
    res = ruleengine.rate("huzhou", p)
    assert res["status"].tolist() == ["rated"] and res.issues == []


def test_gbk_with_explicit_encoding_and_wrong_encoding(tmp_path: Path) -> None:
    p = _write(
        tmp_path, "x.csv", "firm_id,year,industry,value_added_10k_cny,electricity_mwh\n湖州,2022,3011,100,5\n", "gbk"
    )
    assert ruleengine.rate("huzhou", p, read_options={"encoding": "gbk"})["firm_id"].tolist() == ["湖州"]


HEAD6 = "firm_id,firm_name,year,industry,value_added_10k_cny,electricity_mwh\n"
FILLER = "".join(f"F{i:05d},Plain Ascii Works Co,2022,3011,100,{10 + i % 7}\n" for i in range(2000))  # > 64 KiB


def test_gbk_first_seen_after_64k_is_decoded(tmp_path: Path) -> None:
    # the first 64 KiB are ASCII (detected as UTF-8); the GBK bytes come later: the whole file is
    # read as GB18030 and the late cell decodes right (not a UTF-8 error, not mojibake)
    assert len(HEAD6 + FILLER) > 1 << 16
    p = _write(tmp_path, "x.csv", HEAD6 + FILLER + "湖州水泥,湖州水泥有限公司,2022,3011,100,5\n", "gbk")
    res = ruleengine.rate("huzhou", p)
    assert res["firm_id"].tolist()[-1] == "湖州水泥"
    assert set(res["status"].tolist()) == {"rated"} and len(res) == 2001 and res.issues == []


def test_utf8_head_then_a_gbk_cell_is_a_located_problem(tmp_path: Path) -> None:
    # UTF-8 Chinese within the first 64 KiB, one GBK cell after it: that row is unrated with its
    # line and column, never the whole file re-read as GB18030 (which would garble the UTF-8 rows)
    data = (HEAD6 + "湖州一,湖州一有限公司,2022,3011,100,5\n" + FILLER).encode("utf-8")
    data += "湖州二,湖州二有限公司,2022,3011,100,5\n".encode("gbk")
    p = tmp_path / "x.csv"
    p.write_bytes(data)
    res = ruleengine.rate("huzhou", p)
    assert res["firm_id"].tolist()[0] == "湖州一" and res["status"].tolist()[0] == "rated"
    last = len(res) - 1
    assert last == 2001 and res["status"].tolist()[last] == "unrated"
    bad = [i for i in res.issues if i.fatal]
    assert [(i.row, i.column) for i in bad] == [(2003, "firm_id")]
    assert "not valid utf-8 text" in bad[0].message


@pytest.mark.parametrize(
    ("late", "why"),
    [
        # its UTF-8 bytes are valid GB18030 too: read as GB18030 it would be silent mojibake ('婀栧窞')
        ("湖州", "UTF-8 text in a file read as GB18030"),
        ("湖州二", "not valid gb18030 text"),  # its UTF-8 bytes are not GB18030 at all
    ],
)
@pytest.mark.parametrize("blank", [False, True])  # a blank line: the tolerant reader, same check
def test_gbk_head_then_a_utf8_cell_is_a_located_problem(tmp_path: Path, late: str, why: str, blank: bool) -> None:
    # GBK in the first 64 KiB, a UTF-8 Chinese cell later: a located problem of its row, the
    # other rows rated
    assert late.encode("utf-8").decode("gb18030", errors="replace") != late
    data = (HEAD6 + "湖州一,湖州一有限公司,2022,3011,100,5\n" + ("\n" if blank else "") + FILLER).encode("gbk")
    data += f"{late},Late Co,2022,3011,100,5\n".encode()
    p = tmp_path / "x.csv"
    p.write_bytes(data)
    res = ruleengine.rate("huzhou", p)
    assert res["firm_id"].tolist()[0] == "湖州一" and res["status"].tolist()[0] == "rated"
    assert len(res) == 2002 and res["status"].tolist()[2001] == "unrated"
    bad = [i for i in res.issues if i.fatal]
    assert [(i.row, i.column) for i in bad] == [(2004 if blank else 2003, "firm_id")]
    assert why in bad[0].message
    assert set(res["status"].tolist()[1:2001]) == {"rated"}


def test_gbk_file_with_a_utf8_cell_in_a_number_column(tmp_path: Path) -> None:
    # Arrow takes a number column whose only non-ASCII cell is valid UTF-8 as text (not binary):
    # its cell is the same located problem as in a text column, not a crash of the byte reader
    data = (HEAD6 + "湖州一,湖州一有限公司,2022,3011,100,5\n").encode("gbk") + "F2,x,2022,3011,100,湖州\n".encode()
    p = tmp_path / "x.csv"
    p.write_bytes(data)
    res = ruleengine.rate("huzhou", p)
    assert res["firm_id"].tolist() == ["湖州一", "F2"] and res["status"].tolist() == ["rated", "unrated"]
    assert [(i.row, i.column, i.fatal) for i in res.issues] == [(3, "electricity_mwh", True)]
    assert "UTF-8 text in a file read as GB18030" in res.issues[0].message


def test_gbk_file_reads_as_its_utf8_twin(tmp_path: Path) -> None:
    # GBK files are parsed as bytes with only text columns decoded: the batch equals the UTF-8
    # file's, Chinese missing-value tokens ('无', '—') included, in text and in number columns
    text = HEAD6 + "湖州一,湖州一有限公司,2022,3011,100,无\n湖州二,—,2022,3011,无,5\nF3, 空 ,2022,3011,7,8\n"
    a = ruleengine.rate("huzhou", _write(tmp_path, "u.csv", text))
    b = ruleengine.rate("huzhou", _write(tmp_path, "g.csv", text, "gbk"))
    assert a["firm_id"].tolist() == b["firm_id"].tolist() == ["湖州一", "湖州二", "F3"]
    assert a["status"].tolist() == b["status"].tolist()
    assert a["reasons"].tolist() == b["reasons"].tolist()
    assert [(i.row, i.column, i.message) for i in a.issues] == [(i.row, i.column, i.message) for i in b.issues]


@pytest.mark.parametrize("delim", [";", "\t"])
def test_delimiter_sniffed(tmp_path: Path, delim: str) -> None:
    text = ("firm_id,year,industry,value_added_10k_cny,electricity_mwh\n" + ROWS).replace(",", delim)
    res = ruleengine.rate("huzhou", _write(tmp_path, "x.csv", text))
    assert res["status"].tolist() == ["rated", "rated"]


def test_thousands_separators_where_unambiguous(tmp_path: Path) -> None:
    p = _write(tmp_path, "x.csv", 'firm_id,year,industry,value_added_10k_cny,electricity_mwh\n'
               'F1,2022,3011,"1,234.5","10,997.0"\nF2,2022,3011,100,"10,997"\n')  # fmt: skip
    res = ruleengine.rate("huzhou", p)
    assert res.batch.columns["electricity_mwh"][0] == 10997.0 and res.batch.columns["value_added_10k_cny"][0] == 1234.5
    # '10,997' alone may be 10.997 with a decimal comma: not guessed
    assert res["status"].tolist() == ["rated", "unrated"]
    assert "'10,997' is ambiguous" in res.issues[0].message and res.issues[0].row == 3
    res = ruleengine.rate("huzhou", p, read_options={"thousands": ","})
    assert res.batch.columns["electricity_mwh"].tolist() == [10997.0, 10997.0]


def test_xlsx_read_by_sheet_and_written(tmp_path: Path) -> None:
    from ruleengine.io.xlsx import write_xlsx

    src = tmp_path / "in.xlsx"
    table = pa.table(
        {
            "firm_id": ["F1", "F2", "F3"],
            "year": [2022, 2022, 2022],
            "industry": ["3011", "3011", "610"],
            "value_added_10k_cny": [100.0, 200.0, 100.0],
            "electricity_mwh": [50.0, None, 5.0],
        }
    )
    write_xlsx(src, [table])
    res = ruleengine.rate("huzhou", src, read_options={"sheet": "results"})
    assert res["status"].tolist() == ["rated", "rated", "unrated"]
    assert res.batch.row_numbers.tolist() == [2, 3, 4]  # Excel rows
    assert res.issues[0].format().startswith(f"{src}[results]: row 4, column industry: '610'")
    with pytest.raises(ruleengine.DataError, match="no sheet 'nope'"):
        ruleengine.rate("huzhou", src, read_options={"sheet": "nope"})
    out1, out2 = tmp_path / "a.xlsx", tmp_path / "b.xlsx"
    res.write(out1)
    res.write(out2)
    assert out1.read_bytes() == out2.read_bytes()  # deterministic
    import python_calamine

    grid = python_calamine.CalamineWorkbook.from_path(str(out1)).get_sheet_by_index(0).to_python()
    assert grid[0][:3] == ["firm_id", "year", "rulebook"] and grid[1][0] == "F1" and len(grid) == 4


def test_xlsx_zip_bomb_refused(tmp_path: Path) -> None:
    import zipfile

    p = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("xl/worksheets/sheet1.xml", b"0" * 50_000_000)
    with pytest.raises(ruleengine.DataError, match="refused as a zip bomb"):
        ruleengine.rate("huzhou", p)


def test_rate_help_names_the_data_contract() -> None:
    out = CliRunner().invoke(main, ["rate", "--help"])
    assert "docs/data-contract.md" in out.output and "--mapping" in out.output
    assert (Path(__file__).resolve().parent.parent / "docs" / "data-contract.md").is_file()


def test_excel_column_letters_one_function_for_reading_and_writing():
    from ruleengine.io.xlsx import column_letter

    # bijective base 26: A..Z, then AA (26), ZZ (26 + 26*26 - 1 = 701), AAA (702)
    assert [column_letter(j) for j in (0, 25, 26, 701, 702)] == ["A", "Z", "AA", "ZZ", "AAA"]
