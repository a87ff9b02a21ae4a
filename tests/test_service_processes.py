"""``ruleengine serve --processes N`` (issue #17): several uvicorn worker processes on one port and
one ledger. Every rating is still recorded once, in one hash chain; an Idempotency-Key is answered
once across processes (the ledger's claims, migration 0006); a SIGKILLed server leaves no worker
behind holding the port."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from service_env import firm_rows, first_run, make_env
from test_service_uvicorn import Server

from ruleengine.ledger import open_ledger
from ruleengine.service import store


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def _workers(pid: int) -> list[int]:
    """uvicorn's worker processes under the supervisor ``pid`` (not multiprocessing's helpers)."""
    return [c for c in _children(pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _cpu(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _two_processes(folder: Path, *more: str) -> Server:
    """``serve --processes 2`` (and ``more``) started, both worker processes up."""
    s = Server(make_env(folder, firms=12), folder)
    s.extra_args = ["--processes", "2", *more]
    s.start()
    deadline = time.monotonic() + 60
    while len(_workers(s.proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    return s


@pytest.fixture
def two(tmp_path):
    s = _two_processes(tmp_path)
    yield s
    s.stop()


def _post_new_connection(url: str, path: str, headers: dict, json_body) -> object:
    import httpx

    with httpx.Client(base_url=url, timeout=60) as c:  # a connection of its own: either process may take it
        return c.post(path, headers=headers, json=json_body)


def test_two_processes_share_the_port_and_one_ledger_chain(two):
    import httpx

    env = two.env
    workers = _workers(two.proc.pid)
    assert len(workers) == 2, workers
    with httpx.Client(base_url=two.url, timeout=60) as c:
        assert first_run(c, env)["run_id"] == 1
    rows = firm_rows(env)
    before = {w: _cpu(w) for w in workers}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: _post_new_connection(two.url, "/v1/runs/1/rate", env.h("firm"), rows), range(60)))
    assert all(r.status_code == 200 for r in got), [r.text for r in got if r.status_code != 200][:2]
    ids = sorted(r.json()["run_id"] for r in got)
    assert ids == list(range(2, 62))  # every rating recorded once, numbered in one sequence
    assert len({r.json()["results"][0]["rating"] for r in got}) == 1  # the same firm, the same rating
    assert all(_cpu(w) > before[w] for w in workers), "both processes answered requests"
    with httpx.Client(base_url=two.url, timeout=60) as c:
        chk = c.get("/v1/ledger/check", headers=env.h("admin")).json()
    assert chk["ok"] is True and chk["runs"] == 61
    led = open_ledger(env.ledger, create=False)
    assert led.check().ok and led.replay(61).identical
    led.dispose()


def _raw_post(port: int, path: str, headers: dict, body: bytes) -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_an_idempotency_key_is_answered_once_across_processes(two):
    """24 connections opened first (both processes accept some), then the same keyed request sent
    on all of them at once: one rating is recorded, every other answer is the same bytes replayed
    or 409 idempotency-in-progress."""
    import httpx

    env = two.env
    with httpx.Client(base_url=two.url, timeout=60) as c:
        first_run(c, env)
    body = json.dumps(firm_rows(env)).encode()
    h = env.h("firm", **{"Idempotency-Key": "loan-4711", "Content-Type": "application/json"})
    request = _raw_post(two.port, "/v1/runs/1/rate", h, body)
    socks = [socket.create_connection(("127.0.0.1", two.port), timeout=60) for _ in range(24)]
    time.sleep(0.5)  # every connection accepted by one of the two processes
    for s in socks:
        s.sendall(request)
    got = []
    for s in socks:
        with s:
            got.append(_answer(s))
    ok = [g for g in got if g[0] == 200]
    busy = [g for g in got if g[0] == 409]
    assert len(ok) + len(busy) == len(got), [g[:2] for g in got]
    assert all(json.loads(g[2])["code"] == "idempotency-in-progress" and g[1]["retry-after"] == "1" for g in busy)
    assert ok and len({g[2] for g in ok}) == 1  # one answer, replayed byte for byte
    with httpx.Client(base_url=two.url, timeout=60) as c:
        again = c.post("/v1/runs/1/rate", headers=h, content=body)
    assert again.status_code == 200 and again.content == ok[0][2]
    assert again.headers["Idempotent-Replayed"] == "true"
    led = open_ledger(env.ledger, create=False)
    assert [r["id"] for r in led.runs()] == [1, 2]  # one rating recorded for the key, whatever process took it
    led.dispose()


def test_a_killed_supervisor_takes_its_workers_with_it(two, tmp_path):
    import httpx

    workers = _workers(two.proc.pid)
    assert len(workers) == 2
    two.stop(signal.SIGKILL)
    deadline = time.monotonic() + 20
    while (
        any(Path(f"/proc/{w}").exists() and Path(f"/proc/{w}/stat").read_text().split()[2] != "Z" for w in workers)
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert not any(
        Path(f"/proc/{w}").exists() and Path(f"/proc/{w}/stat").read_text().split()[2] != "Z" for w in workers
    ), "a worker outlived its killed supervisor"
    two.start()  # the same ledger: restarts cleanly on a new port, and the old port is free
    with httpx.Client(base_url=two.url, timeout=60) as c:
        assert c.get("/v1/ledger/check", headers=two.env.h("admin")).json()["ok"] is True


def test_a_worker_killed_under_load_is_started_again_and_no_answered_rating_is_lost(two):
    """SIGKILL one of the two server processes while one-firm ratings stream in: the supervisor
    starts a new one on the same port (and says so), the ratings answered 200 are each in the
    ledger under the run id they named, and the chain holds; requests that died with the process
    fail at the client (never a 200 without its run)."""
    import httpx

    env = two.env
    with httpx.Client(base_url=two.url, timeout=60) as c:
        first_run(c, env)
    rows = firm_rows(env)
    victim = _workers(two.proc.pid)[0]

    def rate(_: int) -> object:
        try:
            return _post_new_connection(two.url, "/v1/runs/1/rate", env.h("firm"), rows)
        except httpx.HTTPError as exc:  # the killed process's connections
            return exc

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futs = [pool.submit(rate, i) for i in range(120)]
        while sum(f.done() for f in futs) < 20:  # ratings flowing through both processes
            time.sleep(0.01)
        os.kill(victim, signal.SIGKILL)
        got = [f.result() for f in futs]
    deadline = time.monotonic() + 60
    while (len(_workers(two.proc.pid)) < 2 or victim in _workers(two.proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    now = _workers(two.proc.pid)
    assert len(now) == 2 and victim not in now, now
    answered = [r for r in got if not isinstance(r, Exception) and r.status_code == 200]
    assert all(isinstance(r, Exception) or r.status_code in (200, 503) for r in got), [
        (r.status_code, r.text[:200]) for r in got if not isinstance(r, Exception) and r.status_code not in (200, 503)
    ]
    assert len(answered) >= 20
    with httpx.Client(base_url=two.url, timeout=60) as c:  # the new process answers too
        after = [c.post("/v1/runs/1/rate", headers=env.h("firm"), json=rows) for _ in range(4)]
    assert all(r.status_code == 200 for r in after)
    led = open_ledger(env.ledger, create=False)
    try:
        assert led.check().ok
        recorded = {r["id"] for r in led.runs()}
        named = [r.json()["run_id"] for r in answered + after]
        assert len(set(named)) == len(named) and set(named) <= recorded  # each answer's run, once
        assert led.replay(max(named)).identical
    finally:
        led.dispose()
    two.log.flush()
    log = (two.folder / f"server-{two.port}.log").read_text()
    assert f"(pid {victim}) ended with exit code -9: started again" in log


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("problem", ["state-dir", "keys", "port"])
def test_a_server_that_cannot_start_says_why_in_one_line(tmp_path, problem, processes):
    """An unusable --state-dir, a broken keys file, a port something listens on: `serve` stops at
    once with exit code 1 and an `error:` line naming it — with one process or several (checked
    once by the parent, before any worker starts), never a traceback (uvicorn's own bind failure
    exited with code 3, which `ruleengine` keeps for its bugs)."""
    import subprocess
    import sys

    from test_service_uvicorn import _free_port

    env = make_env(tmp_path, firms=4)
    port = _free_port()
    args = ["--keys", str(env.keys_file), "--state-dir", str(tmp_path / "state")]
    taken = socket.socket()
    if problem == "port":
        taken.bind(("127.0.0.1", port))
        taken.listen()
        want = f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    elif problem == "state-dir":
        args[-1] = str(env.keys_file / "state")  # under a file
        want = f"error: cannot use the state folder {env.keys_file / 'state'}: Not a directory"
    else:
        env.keys_file.write_text("{broken")
        want = f"error: {env.keys_file}: not a keys file (JSON expected"
    with taken:
        done = subprocess.run(
            [sys.executable, "-m", "ruleengine.cli", "serve", "--ledger", str(env.ledger), "--port", str(port)]
            + ["--processes", processes, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert want in out, out
    assert "Traceback" not in out and "serving on" not in out, out


def test_a_worker_that_cannot_start_says_why_and_never_reports_ready(tmp_path, capfd):
    """The worker's side of the rule above (the parent's checks passed, then its start failed: a
    file changed meanwhile): one `error:` line, and its ready Event never set — what makes the
    supervisor stop the server (exit code 1, chosen by the CLI) instead of starting that process
    again and again."""
    import multiprocessing

    from test_service_uvicorn import _free_port

    from ruleengine.service import ServiceConfig
    from ruleengine.service.processes import _worker

    env = make_env(tmp_path, firms=4)
    cfg = ServiceConfig(ledger=env.ledger, keys=env.keys_file, state_dir=env.keys_file / "state")
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_worker, args=(cfg, "127.0.0.1", _free_port(), False, None, ready))
    p.start()
    p.join(120)
    err = capfd.readouterr().err
    assert p.exitcode is not None and not ready.is_set(), err
    assert f"error: server process {p.pid}: cannot use the state folder {env.keys_file / 'state'}" in err
    assert "Traceback" not in err


def test_claims_are_taken_expired_and_released(tmp_path):
    """store.idem_claim: one owner at a time; an expired claim (its process died) is taken over; a
    released claim frees the key; a stored answer says 'answered'."""
    from ruleengine.ledger import db

    env = make_env(tmp_path)
    led = open_ledger(env.ledger)
    e = led.engine
    assert store.idem_claim(e, "bank-a", "k1", "p1", 60) == "claimed"
    assert store.idem_claim(e, "bank-a", "k1", "p1", 60) == "claimed"  # its own claim, renewed
    assert store.idem_claim(e, "bank-a", "k1", "p2", 60) == "busy"
    assert store.idem_claim(e, "bank-b", "k1", "p2", 60) == "claimed"  # keys are per API key name
    store.idem_release(e, "bank-a", "k1", "p2")  # not p2's: nothing happens
    assert store.idem_claim(e, "bank-a", "k1", "p2", 60) == "busy"
    store.idem_release(e, "bank-a", "k1", "p1")
    assert store.idem_claim(e, "bank-a", "k1", "p2", -1) == "claimed"  # expired at once
    assert store.idem_claim(e, "bank-a", "k1", "p3", 60) == "claimed"  # taken over from the dead p2
    store.idem_put(e, "bank-a", "k1", "sha256:x", 200, "application/json", b"{}", "p3")
    assert store.idem_claim(e, "bank-a", "k1", "p4", 60) == "answered"
    with e.connect() as conn:
        left = conn.exec_driver_sql("SELECT who, key, owner FROM service_idempotency_claims ORDER BY who").all()
    assert [tuple(r) for r in left] == [("bank-b", "k1", "p2")]  # p3's claim went with its stored answer
    assert db.current_revision(e) == "0006"
    led.dispose()


# --- each process on a CPU of its own (--pin-cpus) --------------------------------------------------


def _thread_cpus(pid: int) -> dict[int, set[int]]:
    """Each thread of process ``pid``: the CPUs it may run on."""
    out = {}
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(t.name)] = os.sched_getaffinity(int(t.name))
        except ProcessLookupError:
            continue
    return out


def _rate_a_few(server) -> None:
    """Requests on new connections (either process), so that each has started its work threads
    and its ledger writer."""
    import httpx

    env = server.env
    with httpx.Client(base_url=server.url, timeout=60) as c:
        first_run(c, env)
    rows = firm_rows(env)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(
            pool.map(lambda _: _post_new_connection(server.url, "/v1/runs/1/rate", env.h("firm"), rows), range(16))
        )
    assert all(r.status_code == 200 for r in got)


MINE = sorted(os.sched_getaffinity(0))


@pytest.mark.skipif(len(MINE) < 2, reason="pinning needs two CPUs")
def test_each_process_and_all_its_threads_run_on_a_cpu_of_its_own(two):
    _rate_a_few(two)
    workers = sorted(_workers(two.proc.pid))
    assert len(workers) == 2
    cpus = []
    for w in workers:
        threads = _thread_cpus(w)
        assert len(threads) >= 4, threads  # the event loop, work threads, the ledger writer: all started
        assert all(len(c) == 1 for c in threads.values()), threads  # each thread on one CPU ...
        cpus += {next(iter(c)) for c in threads.values()}  # ... and all of a process's on the same one
    assert sorted(cpus) == MINE[:2]  # one CPU a process, two different ones: the first two this server may use
    log = (two.folder / f"server-{two.port}.log").read_text()
    assert f"on CPUs {MINE[0]}, {MINE[1]})" in log, log


@pytest.mark.skipif(len(MINE) < 2, reason="pinning needs two CPUs")
def test_no_pin_cpus_leaves_the_processes_to_the_kernel(tmp_path):
    s = _two_processes(tmp_path, "--no-pin-cpus")
    try:
        _rate_a_few(s)
        workers = _workers(s.proc.pid)
        assert len(workers) == 2
        for w in workers:
            threads = _thread_cpus(w)
            assert len(threads) >= 4 and all(sorted(c) == MINE for c in threads.values()), threads
        assert "not pinned to CPUs" in (tmp_path / f"server-{s.port}.log").read_text()
    finally:
        s.stop()


def test_the_cpu_plan(monkeypatch):
    from ruleengine.service import processes

    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: {7, 3, 5, 1})
    assert processes.cpu_plan(2) == [1, 3]  # the lowest CPUs this server may use, one each
    assert processes.cpu_plan(4) == [1, 3, 5, 7]
    assert processes.cpu_plan(5) == [None] * 5  # more processes than CPUs: the kernel balances them
    assert processes.cpu_plan(2, pin=False) == [None, None]
    assert processes.cpu_plan(1) == [None]  # one process (serve --warm-memory): never pinned
    monkeypatch.setattr(processes.os, "sched_getaffinity", lambda pid: {0})
    assert processes.cpu_plan(1) == [None]  # one CPU: nothing to choose


def test_warm_memory_serves_from_a_fresh_process_with_one_malloc_heap(tmp_path):
    """`serve --warm-memory MB` (one process): started by the supervisor, so that glibc reads
    MALLOC_ARENA_MAX=1 as the worker starts; the worker touches MB MiB and keeps them (its resident
    memory above that: an idle worker holds ~174 MiB without), rates and records as usual. A
    negative size is refused by the CLI."""
    import httpx

    from ruleengine.cli import main as cli_main

    got = CliRunner().invoke(cli_main, ["serve", "--warm-memory", "-1"])
    assert got.exit_code == 2 and "--warm-memory" in got.output
    s = Server(make_env(tmp_path, firms=12), tmp_path)
    s.extra_args = ["--warm-memory", "512"]
    s.start()
    try:
        deadline = time.monotonic() + 60
        while not _workers(s.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        (worker,) = _workers(s.proc.pid)
        environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
        assert b"MALLOC_ARENA_MAX=1" in environ
        assert len(os.sched_getaffinity(worker)) == len(os.sched_getaffinity(0))  # one process: not pinned
        rss_kib = int(
            next(x for x in Path(f"/proc/{worker}/status").read_text().splitlines() if x.startswith("VmRSS")).split()[1]
        )
        assert rss_kib > 512 * 1024  # an idle worker without it: 174 MiB (measured)
        with httpx.Client(base_url=s.url, timeout=60) as c:
            assert first_run(c, s.env)["run_id"] == 1
            r = c.post("/v1/runs/1/rate", headers=s.env.h("firm"), json=firm_rows(s.env))
            assert r.status_code == 200 and r.json()["run_id"] == 2, r.text
    finally:
        s.stop()
    log = (tmp_path / f"server-{s.port}.log").read_text()
    assert f"memory kept warm: 512 MiB touched (pid {worker})" in log
    assert "with 1 process (pids" in log
