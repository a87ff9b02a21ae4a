"""A server process settles its heap (ruleengine/service/heap.py): what lives as long as the process
is frozen out of the cyclic collector's walk, and an evicted run is not kept alive by it.

Found under load: full collections of ~160,000 objects took 50–100 ms with the GIL held, the p99
of one-firm ratings. Run in a spawned process: freezing is process-wide (pytest's own heap stays as
it is). The same process setup (``service.app.server_process``) shortens the GIL's switch interval:
checked here too, for the same reason (process-wide)."""

from __future__ import annotations

import gc
import multiprocessing
import sys
import weakref
from pathlib import Path

import pytest
from service_env import client, firm_rows, make_env


def _in_a_server_process(folder: str) -> dict:
    from ruleengine.service import heap
    from ruleengine.service.app import server_process

    env = make_env(Path(folder), firms=8)
    rows = firm_rows(env)
    out: dict = {"settle_before_enable": heap.settle()}
    with client(env, cached_runs=1) as c:
        for _ in range(2):  # runs 1 and 2
            r = c.post(
                "/v1/rulebooks/huzhou/rate?detail=summary",
                headers=env.h("admin", **{"Content-Type": "text/csv"}),
                content=env.data.read_bytes(),
            )
            assert r.status_code == 200, r.text
        st = c.app.state.service
        out["switch_embedded"] = sys.getswitchinterval()  # an app embedded elsewhere: left as it was
        server_process()  # what `ruleengine serve` does in each server process
        out["switch_served"] = sys.getswitchinterval()
        out["frozen_at_start"] = gc.get_freeze_count()
        assert c.post("/v1/runs/1/rate", headers=env.h("admin"), json=rows).status_code == 200
        first = weakref.ref(st._runs[1])
        st._runs[1].__dict__["_cycle"] = st._runs[1]  # in a reference cycle: only the collector frees it
        out["frozen_after_run_1"] = gc.get_freeze_count()
        out["walked_after_run_1"] = len(gc.get_objects())  # what a full collection walks now
        assert c.post("/v1/runs/2/rate", headers=env.h("admin"), json=rows).status_code == 200  # evicts run 1
        out["run_1_cached"] = 1 in st._runs
        out["run_1_alive"] = first() is not None
        out["walked_after_run_2"] = len(gc.get_objects())
    return out


def test_a_server_process_freezes_what_lives_long_and_frees_an_evicted_run(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        got = pool.apply(_in_a_server_process, (str(tmp_path),))
    from ruleengine.service.app import GIL_SWITCH_S

    assert got["settle_before_enable"] == 0  # an app embedded elsewhere: the collector left alone
    assert got["switch_embedded"] == 0.005  # Python's default, untouched by building and using the app
    assert got["switch_served"] == GIL_SWITCH_S == 0.0005  # a server's writer waits less for the GIL
    assert got["frozen_at_start"] > 50_000  # modules, classes, the app: out of every collection's walk
    assert got["frozen_after_run_1"] > got["frozen_at_start"]  # the run's materials too
    # a full collection walks what requests made since, not the process's 100,000+ long-lived objects
    assert got["walked_after_run_1"] < got["frozen_after_run_1"] / 10, got
    assert got["walked_after_run_2"] < got["frozen_after_run_1"] / 10, got
    assert not got["run_1_cached"]
    assert not got["run_1_alive"], "an evicted run must not be kept alive by the frozen generation"


def test_settle_is_a_no_op_unless_the_process_is_a_server():
    from ruleengine.service import heap

    if heap.enabled():  # pragma: no cover - only a server process enables it
        pytest.skip("this process was made a server process")
    before = gc.get_freeze_count()
    assert heap.settle() == 0
    assert gc.get_freeze_count() == before


def _faults_of_big_steps_in_a_thread(warm_mb: int) -> dict:
    """In a fresh process (spawned with MALLOC_ARENA_MAX=1, as `serve --warm-memory` starts its
    workers): keep_warm(warm_mb), then three rounds of what an upload does to memory, in a worker
    thread: 48 MiB of numpy arrays (malloc), a 16 MiB Arrow buffer (Arrow's pool), each written, freed,
    and the pipeline's release after a big step. The thread's page faults are counted."""
    import concurrent.futures
    import resource

    import numpy as np
    import pyarrow as pa

    from ruleengine import pipeline
    from ruleengine.service import heap

    out: dict = {"why_not": heap.keep_warm(warm_mb), "pool": pa.default_memory_pool().backend_name}

    def work() -> int:
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(3):
            arrays = [np.ones(131_072) for _ in range(48)]  # 1 MiB each
            buf = pa.allocate_buffer(16 * 2**20)
            np.frombuffer(buf, dtype=np.uint8).fill(1)
            del arrays, buf
            pipeline.release_memory()
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        out["faults"] = ex.submit(work).result()
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux")
def test_memory_kept_warm_serves_big_steps_without_page_faults(monkeypatch):
    """heap.keep_warm: ~200 MiB written and freed in a worker thread fault in ~50,000 pages without
    it (glibc trims its heap, mmaps big blocks afresh, Arrow's allocator hands pages back, and the
    pipeline releases memory after a big step); with it, the pages touched at start are reused."""
    monkeypatch.setenv("MALLOC_ARENA_MAX", "1")  # read by the spawned process's glibc as it starts
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        cold = pool.apply(_faults_of_big_steps_in_a_thread, (0,))
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        warm = pool.apply(_faults_of_big_steps_in_a_thread, (128,))
    assert cold["why_not"] is None and warm["why_not"] is None
    assert cold["pool"] != "system" and warm["pool"] == "system"  # Arrow allocates from the kept heap
    pages = 3 * 64 * 2**20 // 4096  # what the three rounds write: 49,152 pages of 4 KiB
    assert cold["faults"] > pages // 2, cold
    assert warm["faults"] < pages // 20, warm  # (measured: 5, against 36,944 cold)
