"""Access control, consent and hostile input for the HTTP service (issue #17): every endpoint ×
every role, consent granted / revoked / expired (and logged), denied answers that reveal nothing,
path traversal in rulebook names, oversized / malformed uploads, zip and XML bombs, limits."""

from __future__ import annotations

import datetime as dt
import io
import threading
import time
import zipfile

import pytest
from service_env import BANK, FIRM, OTHER, ROLES, assert_problem, client, firm_rows, first_run, make_env

import ruleengine
from ruleengine.service import store


def _own_rows(env) -> bytes:
    lines = env.data.read_text().splitlines()
    return ("\n".join([lines[0], *[ln for ln in lines[1:] if ln.startswith(f'"{FIRM}"')]]) + "\n").encode()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = make_env(tmp_path_factory.mktemp("svc-access"))
    with client(e) as c:
        r = c.post(
            "/v1/rulebooks/huzhou/rate?detail=summary",
            headers=e.h("admin", **{"Content-Type": "text/csv"}),
            content=e.data.read_bytes(),
        )
        assert r.status_code == 200, r.text
        e.extra["c"] = c
        yield e


def _future(days: int = 30) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).isoformat()


YAML = {"Content-Type": "application/yaml"}
CSV = {"Content-Type": "text/csv"}
ALL = {r: 200 for r in ROLES}
FIRM_DATA = {
    "admin": 200,
    "firm": 200,
    "bank": 404,
    "other_bank": 404,
    "regulator": 403,
    "author": 403,
    "other_regulator": 403,
}
RUNS = {
    "admin": 200,
    "regulator": 200,
    "other_regulator": 404,
    "firm": 403,
    "bank": 403,
    "other_bank": 403,
    "author": 403,
}

DIFF = {  # a method diff: regulators (of the rulebook's jurisdiction), authors, admins
    "admin": 200,
    "regulator": 200,
    "author": 200,
    "other_regulator": 403,
    "firm": 403,
    "bank": 403,
    "other_bank": 403,
}

HZ = ruleengine.load("huzhou").version  # the bundled version, whatever it is now

# (method, path, body kind, extra headers, {role: status}); no consent has been granted here
MATRIX = [
    ("GET", "/v1/rulebooks", None, {}, ALL),
    ("GET", "/v1/rulebooks/huzhou", None, {}, ALL),
    ("GET", "/v1/rulebooks/huzhou/versions", None, {}, ALL),
    ("GET", f"/v1/rulebooks/huzhou/versions/{HZ}", None, {}, ALL),
    (
        "POST",
        "/v1/rulebooks/validate",
        "yaml",
        YAML,
        {
            "admin": 200,
            "regulator": 200,
            "other_regulator": 200,
            "author": 200,
            "firm": 403,
            "bank": 403,
            "other_bank": 403,
        },
    ),
    (
        "POST",
        "/v1/rulebooks/huzhou/versions",
        "bad-yaml",
        YAML,
        {
            "admin": 422,
            "author": 422,
            "regulator": 403,
            "other_regulator": 403,
            "firm": 403,
            "bank": 403,
            "other_bank": 403,
        },
    ),
    ("GET", f"/v1/rulebooks/huzhou/diff?old={HZ}&new={HZ}", None, {}, DIFF),
    ("POST", f"/v1/rulebooks/huzhou/diff?old={HZ}&new={HZ}", "own-csv", CSV, DIFF),  # impact on a posted portfolio
    (
        "POST",
        "/v1/rulebooks/huzhou/rate?detail=summary",
        "own-csv",
        CSV,
        {
            "admin": 200,
            "firm": 200,
            "bank": 403,
            "other_bank": 403,
            "regulator": 403,
            "other_regulator": 403,
            "author": 403,
        },
    ),
    (
        "POST",
        "/v1/runs/1/rate",
        "own-json",
        {},
        {
            "admin": 200,
            "firm": 200,
            "bank": 403,
            "other_bank": 403,
            "regulator": 403,
            "other_regulator": 403,
            "author": 403,
        },
    ),
    ("GET", f"/v1/runs/1/firms/{FIRM}", None, {}, FIRM_DATA),
    ("GET", f"/v1/runs/1/firms/{FIRM}/explain", None, {}, FIRM_DATA),
    ("GET", f"/v1/runs/1/firms/{FIRM}/what-it-takes", None, {}, FIRM_DATA),
    ("GET", f"/v1/firms/{FIRM}/history", None, {}, FIRM_DATA),
    ("GET", f"/v1/runs/1/firms/{FIRM}/report?lang=en&year=2023", None, {}, FIRM_DATA),
    ("GET", f"/v1/runs/1/firms/{OTHER}", None, {}, {**FIRM_DATA, "firm": 404}),
    (
        "GET",
        "/v1/ledger/runs",
        None,
        {},
        {
            "admin": 200,
            "regulator": 200,
            "other_regulator": 200,
            "firm": 403,
            "bank": 403,
            "other_bank": 403,
            "author": 403,
        },
    ),
    ("GET", "/v1/ledger/runs/1", None, {}, RUNS),
    ("GET", "/v1/ledger/runs/1/aggregate", None, {}, RUNS),
    ("POST", "/v1/ledger/runs/1/replay", None, {}, {**{r: 403 for r in ROLES}, "admin": 200}),
    (
        "GET",
        "/v1/ledger/check",
        None,
        {},
        {
            "admin": 200,
            "regulator": 200,
            "other_regulator": 200,
            "firm": 403,
            "bank": 403,
            "other_bank": 403,
            "author": 403,
        },
    ),
    (
        "GET",
        "/v1/consents",
        None,
        {},
        {
            "admin": 200,
            "firm": 200,
            "bank": 200,
            "other_bank": 200,
            "regulator": 403,
            "other_regulator": 403,
            "author": 403,
        },
    ),
    (
        "POST",
        "/v1/consents",
        "consent",
        {},
        {
            "firm": 201,
            "admin": 422,
            "bank": 403,
            "other_bank": 403,
            "regulator": 403,
            "other_regulator": 403,
            "author": 403,
        },
    ),
    (
        "DELETE",
        "/v1/consents/bank-z",
        None,
        {},
        {
            "firm": 200,
            "admin": 422,
            "bank": 403,
            "other_bank": 403,
            "regulator": 403,
            "other_regulator": 403,
            "author": 403,
        },
    ),
    (
        "GET",
        "/v1/access-log",
        None,
        {},
        {
            "admin": 200,
            "firm": 200,
            "bank": 403,
            "other_bank": 403,
            "regulator": 403,
            "other_regulator": 403,
            "author": 403,
        },
    ),
]


def _body(env, kind):
    import json

    if kind is None:
        return {}
    if kind == "yaml":
        from ruleengine.rulebook.source import bundled_dir

        return {"content": (bundled_dir() / "huzhou.yaml").read_bytes()}
    if kind == "bad-yaml":
        return {"content": b"id: huzhou\nversion: [\n"}
    if kind == "own-csv":
        return {"content": _own_rows(env)}
    if kind == "own-json":
        return {"content": json.dumps(firm_rows(env)), "ct": "application/json"}
    if kind == "consent":
        return {"content": json.dumps({"bank": "bank-z", "expires_at": _future()}), "ct": "application/json"}
    raise AssertionError(kind)


@pytest.mark.parametrize("method,path,kind,headers,expect", MATRIX, ids=[f"{m} {p}" for m, p, *_ in MATRIX])
def test_every_endpoint_for_every_role(env, method, path, kind, headers, expect):
    c = env.extra["c"]
    assert set(expect) == set(ROLES)
    body = _body(env, kind)
    ct = body.pop("ct", None)
    extra = {**headers, **({"Content-Type": ct} if ct else {})}
    # no key: 401 everywhere
    assert_problem(c.request(method, path, headers=extra, **body), 401, "unauthenticated")
    for role in ROLES:
        r = c.request(method, path, headers=env.h(role, **extra), **body)
        assert r.status_code == expect[role], (role, r.text)
        if r.status_code >= 400:
            assert_problem(r, r.status_code)


def test_the_matrix_has_every_endpoint_of_the_service(env):
    """A new endpoint cannot escape the role matrix above: each route of the app (but the schema,
    Swagger UI and the keyless health check) is called by at least one row of MATRIX."""
    from fastapi.routing import APIRoute

    app = env.extra["c"].app
    routes = [
        (method, r)
        for r in app.routes
        if isinstance(r, APIRoute) and r.path not in ("/docs", "/v1/health")
        for method in r.methods
    ]
    assert len(routes) >= 20  # the app's routes were found
    missing = [
        f"{method} {r.path}"
        for method, r in routes
        if not any(m == method and r.path_regex.fullmatch(p.split("?")[0]) for m, p, *_ in MATRIX)
    ]
    assert missing == [], "endpoints no row of MATRIX calls"


def test_a_denied_firm_looks_exactly_like_a_missing_one(env):
    c = env.extra["c"]
    for url in (f"/v1/runs/1/firms/{FIRM}/explain", f"/v1/firms/{FIRM}/history", f"/v1/runs/1/firms/{FIRM}"):
        denied = c.get(url, headers=env.h("bank"))
        missing = c.get(url.replace(FIRM, "NO-SUCH-FIRM"), headers=env.h("admin"))
        no_run = c.get(url.replace("/runs/1/", "/runs/999/"), headers=env.h("firm"))
        other = c.get(url.replace(FIRM, OTHER), headers=env.h("firm"))
        assert denied.status_code == missing.status_code == other.status_code == 404
        assert denied.content == missing.content == other.content
        if "/runs/" in url:
            assert no_run.content == denied.content


def test_consent_granted_revoked_expired_and_every_bank_access_logged(env):
    c = env.extra["c"]
    url = f"/v1/runs/1/firms/{FIRM}/explain"
    assert c.get(url, headers=env.h("bank")).status_code == 404
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    assert_problem(
        c.post("/v1/consents", headers=env.h("firm"), json={"bank": BANK, "expires_at": past}), 422, "bad-expiry"
    )
    assert_problem(
        c.post("/v1/consents", headers=env.h("firm"), json={"bank": BANK, "expires_at": _future(), "firm_id": OTHER}),
        403,
    )
    r = c.post("/v1/consents", headers=env.h("firm"), json={"bank": BANK, "expires_at": _future(10)})
    assert r.status_code == 201 and r.json()["firm_id"] == FIRM
    assert c.get(url, headers=env.h("bank")).status_code == 200
    assert c.get(url, headers=env.h("other_bank")).status_code == 404  # consent is per bank
    assert c.get(f"/v1/firms/{FIRM}/history", headers=env.h("bank")).status_code == 200
    mine = c.get("/v1/consents", headers=env.h("bank")).json()
    assert [(x["firm_id"], x["active"]) for x in mine] == [(FIRM, True)]
    # the bank may now rate a portfolio of consented firms only
    r = c.post("/v1/rulebooks/huzhou/rate?detail=summary", headers=env.h("bank", **CSV), content=_own_rows(env))
    assert r.status_code == 200, r.text
    body = assert_problem(
        c.post("/v1/rulebooks/huzhou/rate?detail=summary", headers=env.h("bank", **CSV), content=env.data.read_bytes()),
        403,
        "no-consent",
    )
    assert BANK in body["detail"]
    # revoked
    assert c.delete(f"/v1/consents/{BANK}", headers=env.h("firm")).json()["action"] == "revoke"
    assert c.get(url, headers=env.h("bank")).status_code == 404
    # granted again, then expired (written with a past expiry straight into the store)
    c.post("/v1/consents", headers=env.h("firm"), json={"bank": BANK, "expires_at": _future()})
    assert c.get(url, headers=env.h("bank")).status_code == 200
    app_state = c.app.state.service
    store.consent_event(app_state.ledger.engine, FIRM, BANK, "grant", past, "test")
    assert c.get(url, headers=env.h("bank")).status_code == 404
    assert [x["active"] for x in c.get("/v1/consents", headers=env.h("firm")).json() if x["bank"] == BANK] == [False]
    # every bank access is in the ledger's access log, allowed or not; the firm sees its own
    log = c.get("/v1/access-log", headers=env.h("firm")).json()
    bank_rows = [x for x in log if x["bank"] == BANK and x["firm_id"] == FIRM]
    assert [x["allowed"] for x in bank_rows if x["action"] == "explain run 1"][:5] == [False, True, False, True, False]
    assert all(x["who"] == "bank-a-loans" for x in bank_rows)
    assert all(x["firm_id"] == FIRM for x in log)
    # the log and the consents are append-only in the database
    from ledger_pg import raw_execute

    with pytest.raises(Exception, match="append-only"):
        raw_execute(str(env.ledger), "UPDATE service_consents SET expires_at = NULL")
    with pytest.raises(Exception, match="append-only"):
        raw_execute(str(env.ledger), "DELETE FROM service_access")


TRAVERSAL = [
    "%2e%2e",
    "..%2Fhuzhou",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "huzhou.yaml",
    "%2Fetc%2Fpasswd",
    "lib",
    "lib%2Faccounting",
    "HUZHOU",
    "huzhou%00",
    "huzhou%20",
    "~root",
    "schema",
    "a" * 41,
    "%5C..%5Cx",
]


@pytest.mark.parametrize("name", TRAVERSAL)
def test_path_traversal_in_rulebook_names_finds_nothing(env, name):
    c = env.extra["c"]
    for url in (
        f"/v1/rulebooks/{name}",
        f"/v1/rulebooks/{name}/versions",
        f"/v1/rulebooks/huzhou/versions/{name}",
        f"/v1/rulebooks/huzhou/diff?old={name}&new={HZ}",
    ):
        r = c.get(url, headers=env.h("admin"))
        assert r.status_code in (404, 422), (url, r.status_code, r.text)
        assert_problem(r, r.status_code)
        assert "root:" not in r.text and "/etc" not in r.json()["detail"]
    r = c.post(f"/v1/rulebooks/{name}/rate", headers=env.h("admin", **CSV), content=env.data.read_bytes())
    assert r.status_code in (404, 422), r.text
    r = c.post(
        f"/v1/rulebooks/huzhou/rate?version={name}", headers=env.h("admin", **CSV), content=env.data.read_bytes()
    )
    assert r.status_code in (404, 422), r.text


def _zip_bomb(sheet: str | None = None) -> bytes:
    """An .xlsx whose one sheet inflates from ~100 KB to ~100 MB of XML (or holds ``sheet``)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>',
        )
        z.writestr(
            "xl/workbook.xml",
            '<?xml version="1.0"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheets><sheet name="s" sheetId="1"/></sheets></workbook>',
        )
        row = '<row><c t="inlineStr"><is><t>x</t></is></c></row>'
        z.writestr(
            "xl/worksheets/sheet1.xml",
            sheet or '<?xml version="1.0"?><worksheet><sheetData>' + row * 2_000_000 + "</sheetData></worksheet>",
        )
    return buf.getvalue()


XML_BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;'
    b'&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">'
    b"]><lolz>&lol3;</lolz>"
)


@pytest.mark.parametrize(
    "content,ctype,code",
    [
        (b"PAR1garbage-not-parquet", "application/vnd.apache.parquet", "invalid-data"),
        (b"PK\x03\x04 not a zip", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "invalid-data"),
        (b'{"firm_id": 1}', "application/json", "invalid-data"),
        (b"[{]", "application/json", "invalid-data"),
        (b"\xff\xfe\x00garbage\x00\x00", "text/csv", None),
        (b"firm_id,year\n", "text/csv", None),
        (b"a,b\n1,2\n", "text/csv", "invalid-data"),
        (XML_BOMB, "text/csv", None),
        (b"", "text/csv", "empty-upload"),
        (b"<xml/>", "application/xml", "unsupported-type"),
    ],
)
def test_malformed_uploads_are_located_4xx_never_a_traceback(env, content, ctype, code):
    c = env.extra["c"]
    r = c.post(
        "/v1/rulebooks/huzhou/rate?detail=summary", headers=env.h("admin", **{"Content-Type": ctype}), content=content
    )
    if r.status_code == 200:  # rows that are all unrated are an answer, not an error
        assert code is None and all(k in r.json() for k in ("run_id", "rulebook_hash", "engine_version"))
        return
    assert 400 <= r.status_code < 500, r.text
    body = assert_problem(r, r.status_code, code)
    assert "/tmp" not in body["detail"] and str(env.folder) not in r.text


ENTITY_SHEET = (
    XML_BOMB.decode().replace("<lolz>&lol3;</lolz>", "")
    + '<worksheet><sheetData><row><c t="inlineStr"><is><t>&lol3;</t></is></c></row></sheetData></worksheet>'
)


@pytest.mark.parametrize("sheet", [None, ENTITY_SHEET], ids=["zip-bomb", "entity-bomb"])
def test_xlsx_bombs_are_bounded(env, sheet):
    bomb = _zip_bomb(sheet)
    assert len(bomb) < 1_000_000
    with client(env, max_rows=1000, request_timeout_s=20) as c:
        t = time.monotonic()
        r = c.post(
            "/v1/rulebooks/huzhou/rate?format=xlsx",
            headers=env.h("admin", **{"Content-Type": "application/octet-stream"}),
            content=bomb,
        )
        assert time.monotonic() - t < 25
        assert 400 <= r.status_code < 500, r.text
        body = assert_problem(r, r.status_code)
        assert "lol" not in body["detail"]


def test_oversized_body_and_too_many_rows(env):
    with client(env, max_body_bytes=2000, max_rows=5) as c:
        body = assert_problem(
            c.post("/v1/rulebooks/huzhou/rate", headers=env.h("admin", **CSV), content=env.data.read_bytes()),
            413,
            "body-too-large",
        )
        assert "2,000" in body["detail"]
    with client(env, max_rows=5) as c:
        assert_problem(
            c.post("/v1/rulebooks/huzhou/rate", headers=env.h("admin", **CSV), content=env.data.read_bytes()),
            413,
            "too-many-rows",
        )
        import json

        import pyarrow.csv as pacsv

        rows = pacsv.read_csv(env.data).to_pylist()
        assert_problem(
            c.post(
                "/v1/rulebooks/huzhou/rate",
                headers=env.h("admin"),
                content=json.dumps(rows, default=str),
            ),
            415,
        )
        assert_problem(
            c.post(
                "/v1/rulebooks/huzhou/rate",
                headers=env.h("admin", **{"Content-Type": "application/json"}),
                content=json.dumps(rows, default=str),
            ),
            413,
            "too-many-rows",
        )


def test_time_limit_and_concurrency_limit(env):
    with client(env, request_timeout_s=0.01) as c:
        body = assert_problem(
            c.post(
                "/v1/rulebooks/huzhou/rate?detail=summary", headers=env.h("admin", **CSV), content=env.data.read_bytes()
            ),
            503,
            "timeout",
        )
        assert "0.01 s" in body["detail"]
    # one request holds the only work slot (blocked on an event) while another arrives
    from ruleengine.service import app as A

    gate = threading.Event()
    entered = threading.Event()
    real = A._rate_file

    def held(*a, **k):
        entered.set()
        gate.wait(30)
        return real(*a, **k)

    with client(env, max_concurrent=1, queue_timeout_s=0.05) as c:
        out: list[int] = []

        def slow() -> None:
            r = c.post(
                "/v1/rulebooks/huzhou/rate?detail=summary", headers=env.h("admin", **CSV), content=env.data.read_bytes()
            )
            out.append(r.status_code)

        A._rate_file = held
        try:
            t = threading.Thread(target=slow)
            t.start()
            assert entered.wait(30)
            r = c.get("/v1/rulebooks", headers=env.h("admin"))
            gate.set()
            t.join()
        finally:
            A._rate_file = real
            gate.set()
        assert out == [200]
        body = assert_problem(r, 503, "busy")
        assert r.headers["Retry-After"] == "2" and "busy" in body["detail"]
        assert c.get("/v1/rulebooks", headers=env.h("admin")).status_code == 200  # the slot is free again
    deadline = time.monotonic() + 30  # every upload folder is removed (the timed-out one when its work ends)
    while any((env.folder / "state" / "uploads").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any((env.folder / "state" / "uploads").iterdir())


def test_an_internal_error_is_a_bare_500_problem(env, monkeypatch):
    from ruleengine.service import app as A

    def boom(*a, **k):
        raise ZeroDivisionError("secret internal detail")

    monkeypatch.setattr(A, "_rate_file", boom)
    c = env.extra["c"]
    body = assert_problem(
        c.post("/v1/rulebooks/huzhou/rate", headers=env.h("admin", **CSV), content=b"a\n1\n"), 500, "internal"
    )
    assert "secret" not in body["detail"] and "ZeroDivision" not in body["detail"]


def test_a_regulator_sees_no_firm_level_data(env):
    c = env.extra["c"]
    runs = c.get("/v1/ledger/runs", headers=env.h("regulator")).json()
    assert runs and all("who" not in r and "input_name" not in r for r in runs)
    assert FIRM not in c.get("/v1/ledger/runs/1", headers=env.h("regulator")).text
    assert FIRM not in c.get("/v1/ledger/runs/1/aggregate", headers=env.h("regulator")).text
    assert "who" in c.get("/v1/ledger/runs/1", headers=env.h("admin")).json()
    assert c.get("/v1/ledger/runs", headers=env.h("other_regulator")).json() == []


def test_keys_file_stores_only_hashes(env):
    text = env.keys_file.read_text()
    for key in env.keys.values():
        assert key not in text
    import stat

    assert stat.S_IMODE(env.keys_file.stat().st_mode) == 0o600


def test_a_banks_one_firm_rating_commits_its_access_line_with_its_run(tmp_path, monkeypatch, ledger_url):
    """A bank's one-firm rating writes its access line in the run's transaction (one commit, one
    fsync: no write of its own through the writer). When no run lands (a cell the ledger cannot
    store, or the run's commit failing), the line is still committed, on its own, before the
    answer: every access a bank makes is in the ledger either way. A refused rating writes its
    refused line once, and nothing else."""
    from ruleengine.ledger import record

    e = make_env(tmp_path)
    e.ledger = ledger_url  # SQLite and PostgreSQL
    rows = firm_rows(e)
    with client(e) as c:
        first_run(c, e)
        assert (
            c.post("/v1/consents", headers=e.h("firm"), json={"bank": BANK, "expires_at": _future()}).status_code == 201
        )
        st = c.app.state.service

        def lines() -> list[tuple[str, bool]]:
            log = c.get("/v1/access-log", headers=e.h("firm")).json()
            return [(x["action"], x["allowed"]) for x in log if x["bank"] == BANK]

        calls = st.writer.stats.calls
        r = c.post("/v1/runs/1/rate", headers=e.h("bank"), json=rows)
        assert r.status_code == 200, r.text
        assert lines() == [("rate against run 1", True)]
        assert st.writer.stats.calls == calls  # the line came with the run: no write of its own
        run = r.json()["run_id"]
        assert c.get(f"/v1/ledger/runs/{run}", headers=e.h("admin")).status_code == 200

        # a cell the ledger cannot store: 422, no run, the access line all the same
        bad = [{**rows[0], "electricity_mwh": {"not": "a number"}}]
        assert_problem(c.post("/v1/runs/1/rate", headers=e.h("bank"), json=bad), 422)
        assert lines() == [("rate against run 1", True)] * 2

        # the run's commit fails (its transaction, and the line in it, rolled back): the line alone
        def broken(*_a, **_k):
            raise RuntimeError("the disk went away")

        monkeypatch.setattr(record, "_append_one", broken)
        before = c.get("/v1/ledger/runs?limit=1", headers=e.h("admin")).json()
        r = c.post("/v1/runs/1/rate", headers=e.h("bank"), json=rows)
        assert r.status_code == 500, r.text
        monkeypatch.undo()
        assert lines() == [("rate against run 1", True)] * 3
        assert c.get("/v1/ledger/runs?limit=1", headers=e.h("admin")).json() == before  # no run recorded

        # refused (consent revoked): the refused line, in one write (no empty write of granted lines)
        assert c.delete(f"/v1/consents/{BANK}", headers=e.h("firm")).status_code == 200
        calls = st.writer.stats.calls
        assert_problem(c.post("/v1/runs/1/rate", headers=e.h("bank"), json=rows), 403, "no-consent")
        assert st.writer.stats.calls == calls + 1
        assert sorted(lines()) == [("rate against run 1", False)] + [("rate against run 1", True)] * 3


def test_a_bank_replaying_a_stored_answer_needs_the_consent_now(tmp_path):
    """An Idempotency-Key replays a stored answer; for a bank key that replay is an access like any
    other: the firm's consent is checked again and the access logged. Once the firm has revoked
    its consent, the bank's old key no longer brings the rating back (one-firm ratings and
    portfolio uploads alike); granted again, the replay is answered and logged."""
    e = make_env(tmp_path)
    rows = firm_rows(e)
    with client(e) as c:
        first_run(c, e)
        assert (
            c.post("/v1/consents", headers=e.h("firm"), json={"bank": BANK, "expires_at": _future()}).status_code == 201
        )

        def send(key: str, upload: bool):
            if upload:
                return c.post(
                    "/v1/rulebooks/huzhou/rate?detail=ratings",
                    headers=e.h("bank", **CSV, **{"Idempotency-Key": key}),
                    content=_own_rows(e),
                )
            return c.post("/v1/runs/1/rate", headers=e.h("bank", **{"Idempotency-Key": key}), json=rows)

        def replayed_lines() -> list[bool]:
            log = c.get("/v1/access-log", headers=e.h("firm")).json()
            return [x["allowed"] for x in reversed(log) if x["bank"] == BANK and "(answer replayed)" in x["action"]]

        first = {up: send(f"key-{up}", up) for up in (False, True)}
        assert all(r.status_code == 200 for r in first.values()), [r.text for r in first.values()]
        assert c.delete(f"/v1/consents/{BANK}", headers=e.h("firm")).status_code == 200
        for up in (False, True):
            assert_problem(send(f"key-{up}", up), 403, "no-consent")
        assert replayed_lines() == [False, False]
        assert (
            c.post("/v1/consents", headers=e.h("firm"), json={"bank": BANK, "expires_at": _future()}).status_code == 201
        )
        for up in (False, True):
            again = send(f"key-{up}", up)
            assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true", again.text
            assert again.content == first[up].content
        assert replayed_lines() == [False, False, True, True]
