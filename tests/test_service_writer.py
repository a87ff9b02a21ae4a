"""The service's ledger writer, time limits, streamed uploads, key reloading, the PDF report and
bounded per-request state (issue #17, session 3)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import threading
import time
import tracemalloc

import pytest
from service_env import FIRM, assert_problem, client, firm_rows, first_run, make_env

import ruleengine
from ruleengine.ledger import open_ledger


@pytest.fixture
def env(tmp_path):
    return make_env(tmp_path, firms=12)


# --- the one writer ---------------------------------------------------------------------------------


def test_concurrent_one_firm_ratings_are_all_committed_by_the_one_writer_in_order(env):
    rows = firm_rows(env)
    with client(env, max_concurrent=4) as c:
        first_run(c, env)
        st = c.app.state.service
        out: list = []

        def one() -> None:
            out.append(c.post("/v1/runs/1/rate", headers=env.h("firm"), json=rows))

        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.status_code for r in out] == [200] * 12
        ids = sorted(r.json()["run_id"] for r in out)
        assert ids == list(range(2, 14))  # each answer names its own committed run
        assert st.writer.stats.runs == 13 and st.writer.stats.errors == 0
        assert st.writer._thread is not None and st.writer._thread.name == "ruleengine-ledger-writer"
        first = out[0].json()
        assert all(r.json()["results"] == first["results"] for r in out)  # same firm, same tables
    led = open_ledger(env.ledger, create=False)
    assert [r["id"] for r in led.runs()] == list(range(1, 14)) and led.check().ok
    for rid in ids:  # each answer was sent only after its run was in the ledger
        assert json.loads(led.run(rid)["options"]) == {"benchmarks_of_run": 1, "service": "rate-firm"}
    led.dispose()


def test_one_firm_ratings_of_a_process_take_turns_and_other_work_does_not_wait(env, monkeypatch):
    """Two one-firm ratings at once in one process: the second rates after the first (under one GIL
    they would only interleave and both finish late); a firm's ratings read meanwhile are answered
    at once: while the first rating is still under way. The rating is slowed with a 1 s sleep (which
    lets other threads run), so a slow host does not blur "answered at once" into "queued"."""
    from ruleengine import pipeline

    real = pipeline.rate
    spans: list[tuple[float, float]] = []
    rating = threading.Event()

    def slow(*args, **kw):
        t0 = time.monotonic()
        rating.set()
        time.sleep(1.0)
        out = real(*args, **kw)
        spans.append((t0, time.monotonic()))
        return out

    rows = firm_rows(env)
    with client(env, max_concurrent=4) as c:
        first_run(c, env)
        firm_url = f"/v1/runs/1/firms/{FIRM}"
        assert c.get(firm_url, headers=env.h("firm")).status_code == 200  # run 1's results rated and kept now
        monkeypatch.setattr(pipeline, "rate", slow)
        out: list = []
        threads = [
            threading.Thread(target=lambda: out.append(c.post("/v1/runs/1/rate", headers=env.h("firm"), json=rows)))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        assert rating.wait(30)  # a rating under way (not a fixed sleep: on a slow host it may start late)
        other = c.get(firm_url, headers=env.h("firm"))
        answered = time.monotonic()
        for t in threads:
            t.join()
        assert [r.status_code for r in out] == [200, 200] and other.status_code == 200
        (a0, a1), (b0, b1) = sorted(spans)
        assert b0 >= a1, spans  # in turn, not at once
        # not queued behind the ratings' turns: answered before the first rating ended
        assert answered < a1, (answered, spans)


def test_the_wait_for_a_work_slot_is_the_queue_stage(env, monkeypatch):
    """With one work slot taken by a rating slowed 0.4 s, a second rating waits for the slot: its
    Server-Timing puts that wait in `queue` (docs/service.md), not in the event loop's share."""
    import re

    from ruleengine import pipeline

    real = pipeline.rate
    rating = threading.Event()

    def slow(*args, **kw):
        rating.set()  # the first rating holds the one slot from here for 0.4 s at least
        time.sleep(0.4)
        return real(*args, **kw)

    rows = firm_rows(env)
    with client(env, max_concurrent=1) as c:
        first_run(c, env)
        monkeypatch.setattr(pipeline, "rate", slow)
        first = threading.Thread(target=lambda: c.post("/v1/runs/1/rate", headers=env.h("firm"), json=rows))
        first.start()
        assert rating.wait(30)  # (not a fixed sleep: on a slow host the first may start late)
        r = c.post("/v1/runs/1/rate", headers=env.h("firm"), json=rows)
        first.join()
        assert r.status_code == 200, r.text
        stages = dict(re.findall(r"([\w-]+);dur=([0-9.]+)", ", ".join(r.headers.get_list("server-timing"))))
        # the first holds the slot ~0.4 s more after the second arrives; the second's own rating is slowed too
        assert float(stages["queue"]) > 200, stages
        assert float(stages["app"]) - sum(float(v) for k, v in stages.items() if k != "app") < 100, stages


def test_one_firm_answer_is_the_same_bytes_as_before_the_writer(env):
    """The body is spliced from the provenance and the rest: it must equal one json.dumps."""
    from ruleengine.service.app import _dumps, _with_provenance

    run = {
        "id": 7,
        "rulebook_id": "huzhou",
        "rulebook_version": "1.0.0",
        "rulebook_hash": "sha256:ab",
        "engine_version": "0.1.0",
    }
    rest = {"benchmarks_of_run": 1, "issues": ["a \u201cquoted\u201d issue"], "results": [{"k": 1.5, "r": None}]}
    from ruleengine.service.app import _provenance

    assert _with_provenance(run, _dumps(rest)).body == _dumps({**_provenance(run), **rest})
    assert _with_provenance(run, b"{}").body == _dumps(_provenance(run))


def test_a_ledger_failure_in_the_writer_is_a_503_and_records_nothing(env):
    from ruleengine.ledger import LedgerError

    with client(env) as c:
        first_run(c, env)
        st = c.app.state.service

        def broken(engine, prepared, signer=None):
            raise LedgerError("the ledger ledger.db: disk full: nothing was recorded")

        st.writer._append = broken
        body = assert_problem(c.post("/v1/runs/1/rate", headers=env.h("firm"), json=firm_rows(env)), 503, "ledger")
        assert "disk full" in body["detail"]
    led = open_ledger(env.ledger, create=False)
    assert len(led.runs()) == 1
    led.dispose()


# --- time limits --------------------------------------------------------------------------------------


def _limited(c, env, seconds):
    """Run 1 recorded and cached (no limit yet), then a time limit of ``seconds`` per request."""
    import dataclasses

    first_run(c, env)
    assert c.post("/v1/runs/1/rate", headers=env.h("firm"), json=firm_rows(env)).status_code == 200  # run 2
    st = c.app.state.service
    st.cfg = dataclasses.replace(st.cfg, request_timeout_s=seconds)
    return st


def test_a_request_over_its_time_limit_records_no_run(env, monkeypatch, caplog):
    from ruleengine import pipeline

    with client(env) as c:
        st = _limited(c, env, 1.0)
        real = pipeline.rate
        rated = threading.Event()

        def slow(*a, **k):
            time.sleep(2.0)
            try:
                return real(*a, **k)
            finally:
                rated.set()

        monkeypatch.setattr(pipeline, "rate", slow)
        with caplog.at_level("INFO", logger="ruleengine.service"):
            body = assert_problem(c.post("/v1/runs/1/rate", headers=env.h("firm"), json=firm_rows(env)), 503, "timeout")
            assert "nothing was recorded" in body["detail"]
            assert rated.wait(30)  # the abandoned work finishes rating ... and is refused the hand-over
            deadline = time.monotonic() + 30
            while "ended with Abandoned" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
        assert "ended with Abandoned" in caplog.text
        assert st.writer.stats.runs == 2
    led = open_ledger(env.ledger, create=False)
    assert [r["id"] for r in led.runs()] == [1, 2]
    led.dispose()


def test_a_run_handed_to_the_writer_is_answered_even_past_the_time_limit(env):
    with client(env) as c:
        st = _limited(c, env, 1.0)
        real = st.writer._append

        def slow_commit(engine, prepared, signer=None):
            time.sleep(2.5)
            return real(engine, prepared, signer)

        st.writer._append = slow_commit
        r = c.post("/v1/runs/1/rate", headers=env.h("firm"), json=firm_rows(env))
        assert r.status_code == 200, r.text  # recorded, so answered: never a 503 for a recorded run
        assert r.json()["run_id"] == 3
    led = open_ledger(env.ledger, create=False)
    assert [r["id"] for r in led.runs()] == [1, 2, 3]
    led.dispose()


# --- streamed uploads ---------------------------------------------------------------------------------


def test_body_limit_spools_a_large_body_to_disk_not_memory(tmp_path):
    from ruleengine.service.limits import BodyLimit, body_file

    piece = (b"firm_id,year,x\n" + b"91330500032441094N,2023,1.5\n" * 2000)[:65536]
    pieces = 256  # 16 MiB
    seen: dict = {}

    async def app(scope, receive, send):
        f = body_file(scope)
        seen["rolled"] = getattr(f, "_rolled", None)
        n = 0
        while True:  # the app may also read the body as a stream of pieces
            msg = await receive()
            n += len(msg["body"])
            if not msg["more_body"]:
                break
        seen["streamed"] = n
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mw = BodyLimit(app, max_bytes=32 * 2**20, timeout_s=30, spool_bytes=2**20, spool_dir=tmp_path / "spool")
    sent = [0]

    async def receive():
        sent[0] += 1
        return {"type": "http.request", "body": piece, "more_body": sent[0] < pieces}

    out: list = []

    async def send(msg):
        out.append(msg)

    tracemalloc.start()
    asyncio.run(mw({"type": "http", "headers": [], "method": "POST", "path": "/"}, receive, send))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out[0]["status"] == 200 and seen["streamed"] == pieces * len(piece)
    assert seen["rolled"] is True  # on disk past 1 MiB
    assert peak < 4 * 2**20, peak  # a 16 MiB body, never more than a few pieces in memory


def test_a_large_csv_upload_is_rated_from_its_spooled_file(env, tmp_path):
    from ledger_pg import make_sample

    big = make_sample(tmp_path / "big.csv", firms=1500)
    assert big.stat().st_size > 4 * 64 * 1024  # well past the 64 KiB kept in memory
    with client(env, spool_memory_bytes=64 * 1024) as c:
        r = c.post(
            "/v1/rulebooks/huzhou/rate?detail=summary",
            headers=env.h("admin", **{"Content-Type": "text/csv"}),
            content=big.read_bytes(),
        )
        assert r.status_code == 200, r.text
        res = ruleengine.rate("huzhou", big)
        assert r.json()["n"] == len(res)
        assert r.json()["distribution"] == dict(res.distribution("rating"))
        m1 = c.post(
            "/v1/rulebooks/huzhou/rate?detail=summary",
            headers=env.h("admin"),
            files={"file": ("big.csv", big.read_bytes(), "text/csv")},
        )
        assert m1.status_code == 200 and m1.json()["n"] == len(res)
        # the idempotency hash is computed from the spooled file in pieces: same body replayed,
        # one byte changed near the end (past the first pieces) refused
        h = env.h("admin", **{"Idempotency-Key": "big-1", "Content-Type": "text/csv"})
        first = c.post("/v1/rulebooks/huzhou/rate?detail=summary", headers=h, content=big.read_bytes())
        again = c.post("/v1/rulebooks/huzhou/rate?detail=summary", headers=h, content=big.read_bytes())
        assert again.headers.get("Idempotent-Replayed") == "true" and again.content == first.content
        changed = bytearray(big.read_bytes())
        changed[-3] = ord("9") if changed[-3] != ord("9") else ord("8")
        assert_problem(
            c.post("/v1/rulebooks/huzhou/rate?detail=summary", headers=h, content=bytes(changed)),
            409,
            "idempotency-conflict",
        )
        st = c.app.state.service
        assert not list((st.folder / "uploads").iterdir())  # every upload folder removed


# --- keys reloaded --------------------------------------------------------------------------------------


def test_keys_are_reloaded_when_the_file_changes_and_a_broken_file_keeps_the_old_keys(env, caplog):
    from ruleengine.service.keys import add_key

    with client(env, keys_check_s=0) as c:
        assert c.get("/v1/rulebooks", headers=env.h("admin")).status_code == 200
        new = add_key(env.keys_file, "late-bank", "bank", bank="bank-z")
        assert c.get("/v1/rulebooks", headers={"Authorization": f"Bearer {new}"}).status_code == 200
        # the admin key removed from the file: refused from the next request on
        data = json.loads(env.keys_file.read_text())
        data["keys"] = [k for k in data["keys"] if k["name"] != "ops"]
        env.keys_file.write_text(json.dumps(data))
        assert_problem(c.get("/v1/rulebooks", headers=env.h("admin")), 401)
        # a broken file: the keys in use stay, the error is logged
        env.keys_file.write_text('{"keys": [{"name": "x", "role": "wizard"}]}')
        with caplog.at_level("ERROR", logger="ruleengine.service"):
            assert c.get("/v1/rulebooks", headers={"Authorization": f"Bearer {new}"}).status_code == 200
        assert "keys not reloaded" in caplog.text and "'role' must be one of" in caplog.text
        assert_problem(c.get("/v1/rulebooks", headers=env.h("admin")), 401)


def test_a_key_is_found_by_one_lookup_among_many_and_only_its_exact_hash_matches():
    from ruleengine.service.keys import KeyRing, Principal, key_hash, new_key

    keys = [new_key() for _ in range(2000)]
    ring = KeyRing([(bytes.fromhex(key_hash(k)), Principal(f"k{i}", "admin")) for i, k in enumerate(keys)])
    assert ring.authenticate(keys[0]).name == "k0" and ring.authenticate(keys[-1]).name == "k1999"
    assert ring.authenticate(keys[5][:-1]) is None and ring.authenticate(key_hash(keys[5])) is None
    assert ring.authenticate(None) is None and ring.authenticate("") is None and ring.authenticate("x" * 513) is None
    # a ring is never changed: a reload builds a new one (tested above), so no stale entry survives it
    smaller = KeyRing([(bytes.fromhex(key_hash(keys[1])), Principal("k1", "admin"))])
    assert smaller.authenticate(keys[0]) is None and smaller.authenticate(keys[1]).name == "k1"


def test_the_writer_logs_its_group_commits_when_the_service_stops(env, caplog, monkeypatch):
    from ruleengine.ledger import canonical as C

    rows = firm_rows(env)
    built = []
    real = C.tables_json
    monkeypatch.setattr(C, "tables_json", lambda tables: built.append(1) or real(tables))
    with caplog.at_level("INFO", logger="ruleengine.service"):
        with client(env) as c:
            first_run(c, env)
            n = len(built)
            for _ in range(3):
                assert c.post("/v1/runs/1/rate", headers=env.h("firm"), json=rows).status_code == 200
    assert len(built) - n == 1  # run 1's tables (fixed for the service): digested once, not per rating
    assert "ledger writer: 4 runs in 4 groups (largest 1, sizes {1: 4})" in caplog.text, caplog.text
    # the service's writer wrote in WAL mode, and the file is back to its rollback journal once closed
    import sqlite3

    assert sqlite3.connect(env.ledger).execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert open_ledger(env.ledger, create=False).check().ok


def test_sighup_reloads_the_keys_of_a_running_server(tmp_path):
    import httpx
    from test_service_uvicorn import Server

    from ruleengine.service.keys import add_key

    env = make_env(tmp_path, firms=4)
    s = Server(env, tmp_path)
    s.extra_args = ["--keys-check", "-1"]  # no mtime checks: only the signal reloads
    s.start()
    try:
        new = add_key(env.keys_file, "late-firm", "firm", firm=FIRM)
        h = {"Authorization": f"Bearer {new}"}
        assert httpx.get(s.url + "/v1/rulebooks", headers=h, timeout=30).status_code == 401
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        code = 401
        while code == 401 and time.monotonic() < deadline:
            time.sleep(0.1)
            code = httpx.get(s.url + "/v1/rulebooks", headers=h, timeout=30).status_code
        assert code == 200
        assert s.proc.poll() is None  # SIGHUP does not stop the server
    finally:
        s.stop()


# --- the PDF report -------------------------------------------------------------------------------------


def test_report_pdf_is_a_real_pdf_naming_the_firm(env, tmp_path):
    pytest.importorskip("weasyprint", reason="the report extra is not installed")
    if shutil.which("pdftotext") is None:  # pragma: no cover
        pytest.skip("poppler-utils is not installed")
    with client(env) as c:
        first_run(c, env)
        r = c.get(f"/v1/runs/1/firms/{FIRM}/report?format=pdf&lang=en&year=2023", headers=env.h("firm"))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/pdf" and r.content.startswith(b"%PDF-")
        assert r.headers["X-Ruleengine-Run"] == "1"
        pdf = tmp_path / "firm.pdf"
        pdf.write_bytes(r.content)
        text = subprocess.run(
            ["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True, text=True, timeout=120
        ).stdout
        assert FIRM in text and "2023" in text
        level = c.get(f"/v1/runs/1/firms/{FIRM}", headers=env.h("firm")).json()["ratings"]
        rating = next(x["rating"] for x in level if x["year"] == 2023)
        assert rating and rating in text
        # another firm's report: the same 404 as a firm that does not exist
        assert_problem(c.get("/v1/runs/1/firms/NOPE/report?format=pdf", headers=env.h("firm")), 404)


# --- bounded state --------------------------------------------------------------------------------------


def test_per_request_state_does_not_grow(env):
    rows = firm_rows(env)
    with client(env) as c:
        first_run(c, env)
        st = c.app.state.service
        for i in range(30):
            h = env.h("firm", **{"Idempotency-Key": f"k-{i}"})
            assert c.post("/v1/runs/1/rate", headers=h, json=rows).status_code == 200
            assert c.get(f"/v1/runs/1/firms/{FIRM}/explain", headers=env.h("firm")).status_code == 200
        assert st.idem_locks == {} and st._run_locks == {}
        assert len(st._runs) <= st.cfg.cached_runs
        assert st.writer._q.qsize() == 0
        spool = st.folder / "spool"
        assert not spool.exists() or not any(spool.iterdir())
