"""``ruleengine serve --processes N``: N server processes on one port and one ledger.

One Python process does most of a request's work under one lock (the GIL), so it uses about one
core; N processes use N. Each process listens on its own socket bound to the same address with
``SO_REUSEPORT``: the kernel spreads new connections over them evenly (with one shared listening
socket, Linux lets whichever process is awake accept a whole burst — one process got all 24 of 24
connections in a test). Each process has its own ledger connections and writer thread; every
append takes the ledger's write lock (SQLite ``BEGIN IMMEDIATE``, PostgreSQL an advisory lock), so
the runs still form one hash chain. A keyed request (Idempotency-Key) is claimed in the ledger
(migration 0006) so that only one process answers it.

The parent supervises: SIGTERM/SIGINT stop the workers (each finishes its requests and commits
what its writer holds), SIGHUP is passed on (each reloads the keys file), and a worker that dies is
started again. A worker dies with its parent (Linux ``PR_SET_PDEATHSIG``): a SIGKILLed server
leaves no process holding the port or the ledger.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from typing import Any

from ..errors import RuleEngineError
from .config import ServiceConfig

log = logging.getLogger("ruleengine.service")

EARLY_EXIT_S = 10.0  # a worker that ends this soon after its start is not restarted: the server stops


def _listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _worker(cfg: ServiceConfig, host: str, port: int, access_log: bool) -> None:
    from .app import serve_app

    _die_with_parent()
    serve_app(cfg, host, port, access_log, sock=_listener(host, port))


def _die_with_parent() -> None:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG: SIGTERM when the parent dies
    except (OSError, AttributeError):  # pragma: no cover - not Linux: refused in supervise()
        pass
    if os.getppid() == 1:  # pragma: no cover - the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _port_is_free(host: str, port: int) -> None:
    """Refuse a port something listens on already: with SO_REUSEPORT the workers would otherwise
    share it with that process (an old server of the same user, say) and split its traffic."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise RuleEngineError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def supervise(cfg: ServiceConfig, host: str, port: int, access_log: bool, processes: int) -> None:
    """Run ``processes`` server processes until SIGINT/SIGTERM (see the module's docstring)."""
    import sys

    if not sys.platform.startswith("linux"):
        raise RuleEngineError("--processes N needs Linux (SO_REUSEPORT and PR_SET_PDEATHSIG); use --processes 1")
    if port == 0:
        raise RuleEngineError("--processes N needs a fixed --port (each process binds it)")
    _port_is_free(host, port)
    from ..ledger import open_ledger

    open_ledger(cfg.ledger).dispose()  # created or migrated once, here, before any worker opens it
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or sockets inherited
    stopping = False
    workers: dict[int, tuple[Any, float]] = {}  # slot -> (process, started at)

    def start(slot: int) -> None:
        p = ctx.Process(target=_worker, args=(cfg, host, port, access_log), name=f"ruleengine-serve-{slot}")
        p.start()
        workers[slot] = (p, time.monotonic())

    def stop(sig: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for p, _ in workers.values():
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)

    def pass_on(sig: int, _frame: Any) -> None:
        for p, _ in workers.values():
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, sig)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, pass_on)
    for slot in range(processes):
        start(slot)
    log.info("serving on http://%s:%d with %d processes (pids %s)", host, port, processes,
             ", ".join(str(p.pid) for p, _ in workers.values()))
    failed = None
    while workers:
        time.sleep(0.2)
        for slot, (p, began) in list(workers.items()):
            if p.is_alive():
                continue
            p.join()
            del workers[slot]
            if stopping:
                continue
            if time.monotonic() - began < EARLY_EXIT_S:
                failed = f"server process {slot} ended at its start (exit code {p.exitcode}); see the lines above"
                stop(signal.SIGTERM, None)
                continue
            log.warning("server process %d (pid %s) ended with exit code %s: started again", slot, p.pid, p.exitcode)
            start(slot)
    if failed:
        raise RuleEngineError(failed)
