"""``ruleengine serve --processes N``: N server processes on one port and one ledger.

One Python process does most of a request's work under one lock (the GIL), so it uses about one
core; N processes use N. Each process listens on its own socket bound to the same address with
``SO_REUSEPORT``: the kernel spreads new connections over them evenly (with one shared listening
socket, Linux lets whichever process is awake accept a whole burst — one process got all 24 of 24
connections in a test). Each process has its own ledger connections and writer thread; every
append takes the ledger's write lock (SQLite ``BEGIN IMMEDIATE``, PostgreSQL an advisory lock), so
the runs still form one hash chain. A keyed request (Idempotency-Key) is claimed in the ledger
(migration 0006) so that only one process answers it.

Each process is pinned to a CPU of its own (``--pin-cpus``, the default when there are at least as
many CPUs as processes): its threads — the event loop, the work threads, the ledger writer — hand
the GIL to each other many times a request, and when they run on different cores each hand-over
moves the interpreter's state from one core's caches to the other's. Measured in-process, a
one-firm rating costs 2.8 ms of CPU alone, 4.1-4.9 ms beside a busy thread of the same process
on another core, and 3.1 ms with both threads on one core; served (``--processes 2`` at 200
ratings/s, three alternated pairs), pinning took the server CPU per request from 8.0, 5.8 and
8.3 ms to 6.6, 5.3 and 6.7 ms (benchmarks/SERVICE.md, session 12). A process's GIL-free work
(SQLite, big Arrow and numpy operations of an upload) then stays on its core too.

The parent supervises: SIGTERM/SIGINT stop the workers (each finishes its requests and commits
what its writer holds), SIGHUP is passed on (each reloads the keys file), and a worker that dies
once it serves is started again, however soon after its start (killed, out of memory). A worker
that dies *before* it serves could not start (the parent checks the ledger, the keys file and the
state folder first, so this is rare: a file changed meanwhile, a bug): the server stops, saying
so, rather than start it again and again. A worker dies with its parent (Linux
``PR_SET_PDEATHSIG``): a SIGKILLed server leaves no process holding the port or the ledger.
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


def listener(host: str, port: int, share: bool = False) -> socket.socket:
    """A listening socket on ``host:port`` (``share``: with SO_REUSEPORT, one per server process);
    an address that cannot be bound is an error naming it (uvicorn's own bind failure exits with
    code 3, which `ruleengine` keeps for its bugs)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if share:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise RuleEngineError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _worker(cfg: ServiceConfig, host: str, port: int, access_log: bool, cpu: int | None, ready: Any) -> None:
    """One server process; ``ready`` (an Event) is set once it serves. A failure before that is
    one line on stderr, as the CLI would print it (no traceback); the process then ends, and the
    supervisor, seeing ``ready`` unset, stops the server with exit code 1 (exit codes are chosen
    in ruleengine/cli.py alone)."""
    import sys

    _die_with_parent()
    try:
        from .app import serve_app

        serve_app(cfg, host, port, access_log, sock=listener(host, port, share=True), cpu=cpu, ready=ready.set)
    except RuleEngineError as exc:
        print(f"error: server process {os.getpid()}: {exc}", file=sys.stderr, flush=True)
    except OSError as exc:
        print(f"error: server process {os.getpid()}: {exc.strerror or exc}", file=sys.stderr, flush=True)
    except Exception as exc:  # noqa: BLE001 - a bug: said plainly, like the CLI
        print(
            f"internal error: server process {os.getpid()}: {type(exc).__name__}: {exc}\n"
            "This is a bug in ruleengine; `ruleengine --debug serve` (one process) shows the traceback.",
            file=sys.stderr,
            flush=True,
        )


def cpu_plan(processes: int, pin: bool = True) -> list[int | None]:
    """The CPU each of ``processes`` server processes is pinned to: the i-th of the CPUs this
    server may use (``sched_getaffinity``) for process i; None for all (no pinning) when ``pin`` is
    off, for a single process (its GIL-free work may use every core), on fewer than two CPUs, or
    with more processes than CPUs (two pinned to one core would share it while another core idles;
    unpinned, the kernel balances them)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux (refused in supervise())
        cpus = []
    if not pin or processes < 2 or len(cpus) < 2 or processes > len(cpus):
        return [None] * processes
    pinned: list[int | None] = [*cpus[:processes]]
    return pinned


def pin_process(cpu: int) -> None:
    """Every thread of this process — and those it starts later, which inherit it — on ``cpu``."""
    for tid in sorted(int(t) for t in os.listdir("/proc/self/task")):
        try:
            os.sched_setaffinity(tid, {cpu})
        except ProcessLookupError:  # a thread that ended meanwhile
            continue


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


def supervise(
    cfg: ServiceConfig, host: str, port: int, access_log: bool, processes: int, pin_cpus: bool = True
) -> None:
    """Run ``processes`` server processes until SIGINT/SIGTERM (see the module's docstring);
    ``pin_cpus``: each on a CPU of its own (:func:`cpu_plan`)."""
    import sys

    what = "--processes N" if processes > 1 else "--warm-memory"
    if not sys.platform.startswith("linux"):
        raise RuleEngineError(
            f"{what} needs Linux (SO_REUSEPORT and PR_SET_PDEATHSIG; glibc's malloc)"
            + ("; use --processes 1" if processes > 1 else "")
        )
    if port == 0:
        raise RuleEngineError(f"{what} needs a fixed --port (each server process binds it)")
    _port_is_free(host, port)
    from ..ledger import open_ledger
    from .app import log_to_stderr
    from .keys import load_keys
    from .state import state_folder

    log_to_stderr()  # the supervisor's own lines (serving on, a process restarted) beside the workers'

    open_ledger(cfg.ledger).dispose()  # created or migrated once, here, before any worker opens it
    # what a worker would otherwise fail on at its start, N times over: checked once, here
    load_keys(cfg.keys)
    if cfg.state_dir is not None:
        state_folder(cfg.state_dir)
    if cfg.warm_memory_mb > 0:
        # one malloc heap for every thread of a worker (heap.keep_warm), read by glibc as the
        # process starts: by the time a worker could set it, its imports have started threads
        # with heaps of their own, which its requests' threads would then share
        os.environ["MALLOC_ARENA_MAX"] = "1"
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or sockets inherited
    stopping = False
    workers: dict[int, tuple[Any, Any]] = {}  # slot -> (process, its "serving" Event)
    cpus = cpu_plan(processes, pin_cpus)  # a restarted process goes back to its slot's CPU

    def start(slot: int) -> None:
        ready = ctx.Event()
        p = ctx.Process(
            target=_worker, args=(cfg, host, port, access_log, cpus[slot], ready), name=f"ruleengine-serve-{slot}"
        )
        p.start()
        workers[slot] = (p, ready)

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
    pinned = f", on CPUs {', '.join(str(c) for c in cpus)}" if cpus[0] is not None else ", not pinned to CPUs"
    log.info(
        "serving on http://%s:%d with %s (pids %s%s)",
        host,
        port,
        f"{processes} processes" if processes > 1 else "1 process",
        ", ".join(str(p.pid) for p, _ in workers.values()),
        pinned,
    )
    failed = None
    while workers:
        time.sleep(0.2)
        for slot, (p, ready) in list(workers.items()):
            if p.is_alive():
                continue
            p.join()
            del workers[slot]
            if stopping:
                continue
            if not ready.is_set():  # it never served: starting it again would fail again
                code = f" (exit code {p.exitcode})" if p.exitcode else ""
                failed = f"server process {slot} could not start{code}; see the lines above"
                stop(signal.SIGTERM, None)
                continue
            log.warning("server process %d (pid %s) ended with exit code %s: started again", slot, p.pid, p.exitcode)
            start(slot)
    if failed:
        raise RuleEngineError(failed)
