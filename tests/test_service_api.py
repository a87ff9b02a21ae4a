"""The HTTP service in-process (issue #17): registry, rating in every upload format, provenance,
idempotency, explain / what-it-takes / reports, one-firm rating against a run, publishing,
diffs and the ledger endpoints. Numbers are checked against the Python API on the same file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from service_env import FIRM, OTHER, assert_problem, client, firm_rows, make_env

import ruleengine
from ruleengine.ledger import canonical, open_ledger


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = make_env(tmp_path_factory.mktemp("svc"))
    with client(e) as c:
        r = c.post(
            "/v1/rulebooks/huzhou/rate",
            headers=e.h("admin", **{"Content-Type": "text/csv"}),
            content=e.data.read_bytes(),
        )
        assert r.status_code == 200, r.text
        e.extra["run1"] = r.json()
        e.extra["c"] = c
        yield e


@pytest.fixture(scope="module")
def expected(env):
    res = ruleengine.rate("huzhou", env.data)
    return [
        (str(f), int(y), str(s), str(r))
        for f, y, s, r in zip(res["firm_id"], res["year"], res["status"], res["rating"], strict=True)
    ]


def _ratings(body):
    return [(r["firm_id"], r["year"], r["status"], r["rating"]) for r in body["results"]]


def test_health_needs_no_key_and_everything_else_does(env):
    c = env.extra["c"]
    assert c.get("/v1/health").json()["status"] == "ok"
    body = assert_problem(c.get("/v1/rulebooks"), 401, "unauthenticated")
    assert "Bearer" in body["detail"]
    assert_problem(c.get("/v1/rulebooks", headers={"Authorization": "Bearer re_wrong"}), 401)
    assert_problem(c.get("/v1/rulebooks", headers={"Authorization": f"Basic {env.keys['admin']}"}), 401)


def test_registry_lists_bundled_rulebooks_with_yaml_and_summary(env):
    c = env.extra["c"]
    books = {b["name"]: b for b in c.get("/v1/rulebooks", headers=env.h("firm")).json()}
    assert {"huzhou", "quzhou", "shenzhen", "national"} <= set(books)
    assert "lib" not in books and books["huzhou"]["versions"][0] == HZ
    one = c.get("/v1/rulebooks/huzhou", headers=env.h("bank")).json()
    plan = ruleengine.load("huzhou")
    assert one["summary"]["hash"] == plan.hash and one["summary"]["levels"] == ["1", "2", "3", "4", "5"]
    assert one["yaml"] == (ruleengine.rulebook.source.bundled_dir() / "huzhou.yaml").read_text(encoding="utf-8")
    vs = c.get("/v1/rulebooks/huzhou/versions", headers=env.h("bank")).json()
    assert vs[0]["version"] == HZ and vs[0]["source"] == "bundled"
    assert c.get(f"/v1/rulebooks/huzhou/versions/{HZ}", headers=env.h("bank")).json()["summary"]["hash"] == plan.hash
    assert_problem(c.get("/v1/rulebooks/huzhou/versions/9.9.9", headers=env.h("bank")), 404, "no-rulebook")


def test_rating_a_csv_gives_the_python_api_numbers_and_is_recorded(env, expected):
    body = env.extra["run1"]
    assert body["run_id"] == 1 and body["engine_version"] == ruleengine.__version__
    assert body["rulebook_hash"] == ruleengine.load("huzhou").hash == body["rulebook"]["hash"]
    assert _ratings(body) == expected
    led = open_ledger(env.ledger, create=False)
    run = led.run(1)
    assert run["n_ratings"] == len(expected) and run["who"] == "service:ops"
    assert [(r["firm_id"], r["rating"]) for r in led.ratings(1)] == [(f, r) for f, _, _, r in expected]
    assert led.check().ok
    led.dispose()


@pytest.mark.parametrize("fmt", ["json", "parquet", "xlsx", "jsonl", "multipart"])
def test_every_upload_format_rates_the_same(env, expected, fmt, tmp_path):
    import pyarrow.csv as pacsv

    c = env.extra["c"]
    table = pacsv.read_csv(
        env.data, convert_options=pacsv.ConvertOptions(column_types={"firm_id": "string", "industry": "string"})
    )
    if fmt == "json":
        kw = {
            "content": json.dumps(table.to_pylist()),
            "headers": env.h("admin", **{"Content-Type": "application/json"}),
        }
    elif fmt == "jsonl":
        text = "".join(json.dumps(r) + "\n" for r in table.to_pylist())
        kw = {"content": text, "headers": env.h("admin", **{"Content-Type": "application/x-ndjson"})}
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(table, buf)
        kw = {
            "content": buf.getvalue(),
            "headers": env.h("admin", **{"Content-Type": "application/vnd.apache.parquet"}),
        }
    elif fmt == "xlsx":
        res = ruleengine.rate("huzhou", env.data)  # any table will do: write the input via the xlsx writer
        from ruleengine.io.xlsx import write_xlsx

        write_xlsx(tmp_path / "in.xlsx", [table])
        kw = {
            "content": (tmp_path / "in.xlsx").read_bytes(),
            "headers": env.h("admin", **{"Content-Type": "application/octet-stream"}),
        }
        del res
    else:
        kw = {"files": {"file": ("firms.csv", env.data.read_bytes(), "text/csv")}, "headers": env.h("admin")}
    url = "/v1/rulebooks/huzhou/rate" + ("?format=xlsx" if fmt == "xlsx" else "")
    r = c.post(url, **kw)
    assert r.status_code == 200, r.text
    assert _ratings(r.json()) == expected
    # the run records the upload as read for rating (not read a second time): its input hash is the
    # ledger's own reading of the same bytes as a file
    sent = tmp_path / f"sent.{'csv' if fmt == 'multipart' else fmt}"
    sent.write_bytes(
        kw["files"]["file"][1]
        if fmt == "multipart"
        else kw["content"].encode()
        if isinstance(kw["content"], str)
        else kw["content"]
    )
    plan = ruleengine.load("huzhou")
    led = open_ledger(env.ledger, create=False)
    try:
        assert led.run(r.json()["run_id"])["input_hash"] == canonical.input_hash(canonical.input_table(plan, sent))
    finally:
        led.dispose()


def test_the_upload_is_recorded_as_read_only_when_that_is_the_ledgers_own_reading(tmp_path):
    """The service records the table it rated instead of reading the upload again, unless the
    region column (read as text for the rulebook's divisions) is one of its number inputs: then the
    two readings differ, and the file is read again."""
    import shutil

    from ruleengine import pipeline
    from ruleengine.rulebook.source import bundled_dir

    root = Path(bundled_dir())
    shutil.copytree(root / "lib", tmp_path / "lib")
    text = (
        (root / "huzhou.yaml")
        .read_text(encoding="utf-8")
        .replace(
            "\ninputs:\n",
            "\ninputs:\n  region: {type: number, unit: code, default: 0, description: the division as a number}\n",
            1,
        )
    )
    (tmp_path / "region.yaml").write_text(text, encoding="utf-8")
    numbered = ruleengine.load(tmp_path / "region.yaml")
    assert numbered.inputs["region"].type == "number" and numbered.divisions
    data = tmp_path / "in.csv"
    data.write_text(
        "firm_id,year,industry,grid_region,value_added_10k_cny,electricity_mwh,region\n"
        "F1,2023,3011,east,1000,500,330502\n",
        encoding="utf-8",
    )
    for plan, alike in ((ruleengine.load("huzhou"), True), (numbered, False)):
        assert pipeline.reads_inputs_alone(plan) is alike
        raw = pipeline.read(data, [plan])
        same = canonical.input_hash(canonical.input_table(plan, raw)) == canonical.input_hash(
            canonical.input_table(plan, data)
        )
        assert same is alike  # where the check says no, recording the rated table would be wrong


def test_idempotency_key_replays_the_answer_and_refuses_another_body(env):
    c = env.extra["c"]
    led = open_ledger(env.ledger, create=False)
    h = env.h("admin", **{"Content-Type": "text/csv", "Idempotency-Key": "loan-batch-7"})
    first = c.post("/v1/rulebooks/huzhou/rate?detail=summary", headers=h, content=env.data.read_bytes())
    assert first.status_code == 200
    n = len(led.runs())
    again = c.post("/v1/rulebooks/huzhou/rate?detail=summary", headers=h, content=env.data.read_bytes())
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(led.runs()) == n  # not rated (nor recorded) twice
    other = env.data.read_bytes().replace(b"2023", b"2024", 1)
    assert_problem(
        c.post("/v1/rulebooks/huzhou/rate?detail=summary", headers=h, content=other), 409, "idempotency-conflict"
    )
    # the key belongs to the key holder: another key may use the same string
    h2 = env.h("firm", **{"Content-Type": "text/csv", "Idempotency-Key": "loan-batch-7"})
    own = "\n".join(line for line in env.data.read_text().splitlines() if line.startswith(("firm_id", f'"{FIRM}"')))
    assert c.post("/v1/rulebooks/huzhou/rate?detail=summary", headers=h2, content=own).status_code == 200
    led.dispose()


def test_explain_what_it_takes_and_history_carry_provenance(env):
    c = env.extra["c"]
    r = c.get(f"/v1/runs/1/firms/{FIRM}/explain?year=2023", headers=env.h("firm"))
    assert r.status_code == 200
    body = r.json()
    assert body["run_id"] == 1 and body["rulebook_hash"] == ruleengine.load("huzhou").hash
    local = ruleengine.explain("huzhou", env.data, FIRM, 2023)
    assert body["trace"]["decisions"][0]["level"] == local.decisions[0].level
    assert body["trace"]["firm_id"] == FIRM and body["trace"]["year"] == 2023
    md = c.get(f"/v1/runs/1/firms/{FIRM}/explain?format=markdown", headers=env.h("firm"))
    assert md.headers["content-type"].startswith("text/markdown") and FIRM in md.text
    assert md.headers["X-Ruleengine-Run"] == "1" and md.headers["X-Ruleengine-Rulebook-Hash"] == body["rulebook_hash"]
    w = c.get(f"/v1/runs/1/firms/{FIRM}/what-it-takes?year=2023", headers=env.h("firm")).json()
    assert w["rating"] == local.decisions[0].level and w["run_id"] == 1
    hist = c.get(f"/v1/firms/{FIRM}/history", headers=env.h("firm")).json()
    assert {h["run_id"] for h in hist["history"]} >= {1} and all("rulebook_hash" in h for h in hist["history"])


def test_one_firm_rated_against_a_runs_tables_matches_its_rating_in_the_run(env):
    c = env.extra["c"]
    rows = firm_rows(env)
    r = c.post("/v1/runs/1/rate", headers=env.h("firm"), json=rows)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["benchmarks_of_run"] == 1 and body["run_id"] > 1
    in_run = {(x["year"], x["rating"]) for x in env.extra["run1"]["results"] if x["firm_id"] == FIRM}
    assert {(x["year"], x["rating"]) for x in body["results"]} == in_run
    led = open_ledger(env.ledger, create=False)
    assert json.loads(led.run(body["run_id"])["options"])["benchmarks_of_run"] == 1
    assert led.replay(body["run_id"]).identical  # recorded with the tables it was rated against
    led.dispose()
    assert_problem(c.post("/v1/runs/1/rate", headers=env.h("firm"), json=[{"firm_id": OTHER, "year": 2023}]), 403)
    assert_problem(
        c.post(
            "/v1/runs/1/rate",
            headers=env.h("firm"),
            content=b"{",
        ),
        415,
    )
    assert_problem(
        c.post("/v1/runs/1/rate", headers=env.h("firm", **{"Content-Type": "application/json"}), content=b"{"),
        400,
        "bad-json",
    )


def _timing(r) -> dict[str, float]:
    """The response's Server-Timing metrics (every header of that name), ``{name: ms}``."""
    import re

    text = ", ".join(r.headers.get_list("server-timing"))
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"([\w-]+);dur=([0-9.]+)", text)}


def test_server_timing_says_where_a_ratings_time_went(env):
    """Each rating's Server-Timing names its stages (docs/service.md): a one-firm rating's wait for
    a work slot, the access check, the run's tables, its turn, the rating, the ledger's hashing and
    the commit; an upload's the same but the access check, the tables and the turn. The stages lie inside the whole request
    (``app``); a read done on the event loop has ``app`` only."""
    c = env.extra["c"]
    rows = firm_rows(env)
    one = _timing(c.post("/v1/runs/1/rate", headers=env.h("firm"), json=rows))
    assert list(one) == ["queue", "access", "tables", "turn", "rate", "record", "work", "commit", "app"]
    assert all(v >= 0 for v in one.values())
    assert one["rate"] > 0 and one["record"] > 0 and one["commit"] > 0
    assert sum(v for k, v in one.items() if k != "app") <= one["app"] + 0.01  # (rounding to 1 µs each)
    up = _timing(
        c.post(
            "/v1/rulebooks/huzhou/rate?detail=summary",
            headers=env.h("admin", **{"Content-Type": "text/csv"}),
            content=env.data.read_bytes(),
        )
    )
    assert list(up) == ["queue", "rate", "record", "work", "commit", "app"]
    assert up["rate"] > up["queue"] and sum(v for k, v in up.items() if k != "app") <= up["app"] + 0.01
    assert list(_timing(c.get("/v1/health"))) == ["app"]


def test_a_cell_the_ledger_cannot_store_is_a_located_422_not_a_500(env):
    """A JSON object (or list) in a number field: the engine would rate the row as unrated, but the
    ledger cannot store the cell as it was given, so nothing is recorded and the client is told
    where (this was a 500 from an Arrow cast inside the ledger until session 5)."""
    c = env.extra["c"]
    rows = firm_rows(env)
    led = open_ledger(env.ledger, create=False)
    before = len(led.runs())
    for cell, what in (({"t": 5}, "a JSON object"), ([1, 2], "a list")):
        bad = [dict(rows[0], electricity_mwh=cell), *rows[1:]]
        r = c.post("/v1/runs/1/rate", headers=env.h("firm"), json=bad)
        assert_problem(r, 422, "invalid-data")
        assert f"row 1, column electricity_mwh: {what}, where the ledger stores numbers or text" in r.json()["detail"]
    assert len(led.runs()) == before  # nothing recorded
    led.dispose()


def test_report_html_when_the_report_extra_is_installed(env):
    pytest.importorskip("jinja2")
    c = env.extra["c"]
    r = c.get(f"/v1/runs/1/firms/{FIRM}/report?lang=en&year=2023", headers=env.h("firm"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html") and FIRM in r.text
    assert r.headers["X-Ruleengine-Run"] == "1"


def test_validate_gives_the_clis_located_messages(env, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ruleengine.cli import main

    c = env.extra["c"]
    text = (ruleengine.rulebook.source.bundled_dir() / "huzhou.yaml").read_text(encoding="utf-8")
    bad = text.replace("value_added_10k_cny", "value_added_10k_cnyy", 3)
    r = c.post(
        "/v1/rulebooks/validate?name=draft",
        headers=env.h("author", **{"Content-Type": "application/yaml"}),
        content=bad.encode(),
    )
    body = r.json()
    assert r.status_code == 200 and body["valid"] is False and body["errors"]
    (tmp_path / "draft.yaml").write_text(bad, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    cli = CliRunner().invoke(main, ["validate", "draft.yaml"])
    assert cli.exit_code == 1
    cli_lines = [ln for ln in cli.output.splitlines() if ": error: " in ln]
    assert [e["text"].splitlines()[0] for e in body["errors"]] == cli_lines
    assert all(e["file"] == "draft.yaml" and e["line"] > 0 for e in body["errors"])
    ok = c.post(
        "/v1/rulebooks/validate", headers=env.h("author", **{"Content-Type": "application/yaml"}), content=text.encode()
    ).json()
    assert ok["valid"] is True and ok["summary"]["hash"] == ruleengine.load("huzhou").hash


HZ = ruleengine.load("huzhou").version  # the bundled version
_MAJ, _MIN, _PAT = (int(x) for x in HZ.split("."))
HZ_NEXT = f"{_MAJ}.{_MIN}.{_PAT + 1}"
HZ_OLDER = f"{_MAJ - 1}.9.0"


def _bumped(text: str, version: str, edit: tuple[str, str] | None = None) -> str:
    out = text.replace(f"version: {HZ}", f"version: {version}", 1)
    if edit:
        assert edit[0] in out
        out = out.replace(*edit, 1)
    return out


def test_publish_validates_runs_tests_diffs_and_refuses_duplicates(env):
    c = env.extra["c"]
    text = (ruleengine.rulebook.source.bundled_dir() / "huzhou.yaml").read_text(encoding="utf-8")
    h = env.h("author", **{"Content-Type": "application/yaml"})
    # a failing author test: K exactly 0.6 is level 1 -> expect level 2 instead
    failing = _bumped(
        text,
        HZ_NEXT,
        (
            'expect: {k: 0.6, rating: "1", carbon_label: low-carbon}',
            'expect: {k: 0.6, rating: "2", carbon_label: low-carbon}',
        ),
    )
    body = assert_problem(
        c.post("/v1/rulebooks/huzhou/versions", headers=h, content=failing.encode()), 422, "tests-fail"
    )
    assert "K exactly 0.6 is level 1" in body["errors"][0]["test"]
    invalid = _bumped(text, HZ_NEXT, ("imports: [lib/accounting]", "imports: [lib/nope]"))
    assert_problem(
        c.post("/v1/rulebooks/huzhou/versions", headers=h, content=invalid.encode()), 422, "invalid-rulebook"
    )
    assert_problem(c.post("/v1/rulebooks/huzhou/versions", headers=h, content=text.encode()), 409, "version-exists")
    good = _bumped(text, HZ_NEXT, ("title: Huzhou Industrial Carbon Efficiency Code", "title: Huzhou Carbon Code"))
    r = c.post("/v1/rulebooks/huzhou/versions", headers=h, content=good.encode())
    assert r.status_code == 201, r.text
    pub = r.json()
    assert pub["previous"] == HZ and pub["version"] == HZ_NEXT and pub["tests"] > 10
    assert sorted(e["name"] for e in pub["edits"]) == ["title", "version"]
    assert {e["kind"] for e in pub["edits"]} == {"changed"}
    assert_problem(c.post("/v1/rulebooks/huzhou/versions", headers=h, content=good.encode()), 409, "version-exists")
    older = _bumped(text, HZ_OLDER, ("title: Huzhou Industrial Carbon Efficiency Code", "title: Old"))
    assert_problem(c.post("/v1/rulebooks/huzhou/versions", headers=h, content=older.encode()), 422, "not-newer")
    vs = c.get("/v1/rulebooks/huzhou/versions", headers=env.h("bank")).json()
    assert [v["version"] for v in vs] == [HZ, HZ_NEXT] and vs[1]["published_by"] == "method-team"
    assert c.get("/v1/rulebooks/huzhou", headers=env.h("bank")).json()["yaml"] == good
    d = c.get(f"/v1/rulebooks/huzhou/diff?old={HZ}&new={HZ_NEXT}", headers=env.h("regulator")).json()
    assert d["old"]["version"] == HZ and d["new"]["version"] == HZ_NEXT and len(d["edits"]) == len(pub["edits"])
    # the impact of the edit on a posted portfolio: a title change moves no firm
    r = c.post(
        f"/v1/rulebooks/huzhou/diff?old={HZ}&new={HZ_NEXT}",
        headers=env.h("regulator", **{"Content-Type": "text/csv"}),
        content=env.data.read_bytes(),
    )
    assert r.status_code == 200, r.text
    posted = r.json()["impact"]
    stored = c.get(f"/v1/rulebooks/huzhou/diff?old={HZ}&new={HZ_NEXT}&run=1", headers=env.h("regulator")).json()[
        "impact"
    ]
    # run 1 stored the same portfolio; only the rulebook's inputs are stored, so no loan amounts and
    # no breakdown by the context columns it does not read (size, city)

    def core(imp: dict) -> dict:
        out = {k: v for k, v in imp.items() if k not in ("lending", "by", "ratings")}
        out["ratings"] = {n: {k: v for k, v in r.items() if k != "by"} for n, r in imp["ratings"].items()}
        return out

    assert core(stored) == core(posted)
    assert set(stored["by"]) < set(posted["by"]) and {"size", "city"} <= set(posted["by"]) - set(stored["by"])
    assert "annual_interest_change_cny" in posted["lending"] and "annual_interest_change_cny" not in stored["lending"]
    assert_problem(
        c.get(f"/v1/rulebooks/huzhou/diff?old={HZ}&new={HZ_NEXT}&run=1", headers=env.h("other_regulator")), 403
    )
    # rating with the published version records its own rulebook hash
    r = c.post(
        f"/v1/rulebooks/huzhou/rate?version={HZ_NEXT}&detail=summary",
        headers=env.h("admin", **{"Content-Type": "text/csv"}),
        content=env.data.read_bytes(),
    )
    assert r.status_code == 200 and r.json()["rulebook"]["version"] == HZ_NEXT
    led = open_ledger(env.ledger, create=False)
    assert led.replay(r.json()["run_id"]).identical and led.check().ok
    led.dispose()


def test_ledger_endpoints(env):
    c = env.extra["c"]
    runs = c.get("/v1/ledger/runs", headers=env.h("admin")).json()
    assert runs[0]["id"] == 1 and runs[0]["rulebook_id"] == "huzhou"
    agg = c.get("/v1/ledger/runs/1/aggregate", headers=env.h("regulator")).json()
    dist = {}
    for x in env.extra["run1"]["results"]:
        dist[x["rating"] or "unrated"] = dist.get(x["rating"] or "unrated", 0) + 1
    assert agg["ratings"] == dict(sorted(dist.items())) and agg["run_id"] == 1
    rep = c.post("/v1/ledger/runs/1/replay", headers=env.h("admin")).json()
    assert rep["identical"] is True and rep["n"] == len(env.extra["run1"]["results"])
    chk = c.get("/v1/ledger/check", headers=env.h("regulator")).json()
    assert chk["ok"] is True and chk["runs"] == len(runs)
    assert c.get("/docs").status_code == 200 and "/static/swagger/swagger-ui-bundle.js" in c.get("/docs").text
    assert c.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
    schema = c.get("/openapi.json").json()
    assert "/v1/rulebooks/{name}/rate" in schema["paths"]
