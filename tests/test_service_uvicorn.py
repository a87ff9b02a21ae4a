"""The HTTP service under a real uvicorn on 127.0.0.1 (issue #17): a session over the network, a
slow client cut off, and a server SIGKILLed in the middle of a rating that loses no ledger data
and restarts cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ledger_pg import make_sample
from service_env import FIRM, make_env

from ruleengine.ledger import open_ledger


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, env, folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import httpx

        self.log = open(self.folder / f"server-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ruleengine.cli",
                "serve",
                "--ledger",
                str(self.env.ledger),
                "--keys",
                str(self.env.keys_file),
                "--port",
                str(self.port),
                "--body-timeout",
                "1",
                "--state-dir",
                str(self.folder / "state"),
                *self.extra_args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.folder / f"server-{self.port}.log").read_text()
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("the server did not start in 60 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def server(tmp_path):
    env = make_env(tmp_path, firms=12)
    s = Server(env, tmp_path)
    s.start()
    yield s
    s.stop()


def test_a_session_over_the_network(server):
    import httpx

    env = server.env
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get("/openapi.json").json()["info"]["title"] == "ruleengine"
        assert "swagger-ui-bundle.js" in c.get("/docs").text
        r = c.post(
            "/v1/rulebooks/huzhou/rate?detail=summary",
            content=env.data.read_bytes(),
            headers=env.h("admin", **{"Content-Type": "text/csv"}),
        )
        assert r.status_code == 200 and r.json()["run_id"] == 1
        assert r.headers["X-Ruleengine-Run"] == "1"
        r = c.get(f"/v1/runs/1/firms/{FIRM}/explain?format=markdown", headers=env.h("firm"))
        assert r.status_code == 200 and FIRM in r.text
        r = c.get(f"/v1/runs/1/firms/{FIRM}", headers=env.h("bank"))
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    log = (server.folder / f"server-{server.port}.log").read_text()
    assert all(k not in log for k in env.keys.values())  # keys are never logged


def test_a_slow_client_is_cut_off(server):
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/rulebooks/huzhou/rate HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            b"Authorization: Bearer " + server.env.keys["admin"].encode() + b"\r\nContent-Length: 100000\r\n\r\nfirm_id"
        )
        data = b""
        while b"\r\n\r\n" not in data or b"}" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"body-timeout" in data
    assert time.monotonic() - t < 8


def _write_locked(path: Path) -> bool:
    """Whether some connection holds the SQLite file's write lock (a write transaction is open):
    works in WAL mode (the service's default) and with a rollback journal."""
    import sqlite3

    con = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    else:
        con.execute("ROLLBACK")
        return False
    finally:
        con.close()


def test_killed_mid_rating_loses_nothing_and_restarts(server, tmp_path):
    import httpx

    env = server.env
    with httpx.Client(base_url=server.url, timeout=120) as c:
        r = c.post(
            "/v1/rulebooks/huzhou/rate?detail=summary",
            content=env.data.read_bytes(),
            headers=env.h("admin", **{"Content-Type": "text/csv"}),
        )
        assert r.status_code == 200
        # a one-firm rating answered (committed by the writer's pooled connection, WAL, no fsync): run 2
        import pyarrow.csv as pacsv

        rows = [
            r
            for r in pacsv.read_csv(
                env.data, convert_options=pacsv.ConvertOptions(column_types={"firm_id": "string", "industry": "string"})
            ).to_pylist()
            if r["firm_id"] == FIRM
        ]
        one = c.post("/v1/runs/1/rate", headers=env.h("firm"), json=rows)
        assert one.status_code == 200 and one.json()["run_id"] == 2, one.text
    big = make_sample(tmp_path / "big.csv", firms=10_000)
    outcome: list[object] = []

    def rate_big() -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=120) as c:
                outcome.append(
                    c.post(
                        "/v1/rulebooks/huzhou/rate?detail=summary",
                        content=big.read_bytes(),
                        headers=env.h("admin", **{"Content-Type": "text/csv"}),
                    ).status_code
                )
        except httpx.HTTPError as exc:
            outcome.append(type(exc).__name__)

    t = threading.Thread(target=rate_big)
    t.start()
    deadline = time.monotonic() + 60
    in_write = False
    while not in_write and time.monotonic() < deadline and t.is_alive():
        time.sleep(0.0005)  # until the ledger's write transaction has begun
        in_write = _write_locked(env.ledger)
    server.stop(signal.SIGKILL)
    t.join()
    assert in_write, "the server finished before its ledger write could be interrupted"
    assert Path(str(env.ledger) + "-wal").exists()  # killed while writing in WAL mode (--ledger-sync full, the default)
    assert outcome and outcome[0] != 200, outcome  # the rating never finished
    led = open_ledger(env.ledger, create=False)
    rep = led.check()
    assert rep.ok, rep.problems
    runs = led.runs()
    # runs 1 and 2 (answered before the kill) intact; the killed one all or nothing
    assert [r["id"] for r in runs[:2]] == [1, 2] and len(runs) in (2, 3)
    assert runs[1]["n_ratings"] == len(rows) and led.replay(2).identical
    if len(runs) == 3:
        assert runs[2]["n_ratings"] == 20_000 and len(led.ratings(3)) == 20_000
    led.dispose()
    server.start()  # same ledger, same port number is not needed: a new one
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post(
            "/v1/rulebooks/huzhou/rate?detail=summary",
            content=env.data.read_bytes(),
            headers=env.h("admin", **{"Content-Type": "text/csv"}),
        )
        assert r.status_code == 200 and r.json()["run_id"] == len(runs) + 1
        assert c.get("/v1/ledger/check", headers=env.h("admin")).json()["ok"] is True
