"""The chunked runner's memory between chunks (issue #11.4): a benchmark pass's stage-1 frame is
freed as soon as its partials are taken, not at the next garbage collection (the formula
evaluator and the frame refer to each other); at 2M rows in 500k-row chunks the kept frames and
glibc's fragmented heap reached 2.6 GB."""

from __future__ import annotations

import gc
import weakref

import pytest

import ruleengine
from ruleengine import pipeline
from ruleengine.engine import evaluator
from ruleengine.io.sample import generate, write
from ruleengine.scale import partition


@pytest.mark.parametrize("reference", [False, True], ids=["compiled", "interpreter"])
def test_partials_of_frees_its_frame_without_a_garbage_collection(tmp_path, monkeypatch, reference):
    # the compiled formulas take the frame as an argument (no cycle); the reference interpreter
    # (simpleeval) and the frame refer to each other until evaluator.release breaks the cycle
    monkeypatch.setattr(evaluator.Frame, "reference", reference)
    plan = ruleengine.load("huzhou")
    src = write(generate(firms=40, years=[2022, 2023], seed=3), tmp_path / "f.parquet")
    batch = pipeline.prepare(plan, pipeline.read(src, [plan]))
    frames: list[weakref.ref] = []
    real = evaluator.stage1

    def spy(*args, **kw):
        frame = real(*args, **kw)
        done = next(n for n in plan.order if n in frame.done and plan.nodes[n].kind == "variable")
        frame.evaluate_expr(plan.nodes[done].expr)  # the formula evaluator exists
        assert (frame._ev is not None) is reference
        frames.append(weakref.ref(frame))
        return frame

    monkeypatch.setattr(evaluator, "stage1", spy)
    gc.disable()
    try:
        parts = partition.partials_of(plan, batch, {})
        assert parts  # the pass did its work
        assert len(frames) == 1
        assert frames[0]() is None  # freed by reference counting alone
    finally:
        gc.enable()


def test_release_if_large_only_above_the_threshold(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(pipeline, "_FLOOR", [0])
    monkeypatch.setattr(pipeline, "release_memory", lambda: calls.append(1))
    monkeypatch.setattr(pipeline, "_resident_bytes", lambda: pipeline.RELEASE_ABOVE - 1)
    pipeline.release_memory_if_large()
    assert calls == []
    monkeypatch.setattr(pipeline, "_resident_bytes", lambda: pipeline.RELEASE_ABOVE + 1)
    pipeline.release_memory_if_large()
    assert calls == [1]


def test_memory_kept_alive_between_tasks_does_not_release_after_every_task(monkeypatch):
    """A Dask worker keeps its persisted partitions (~1.2 GB at 10M rows) between tasks: measured
    from zero it was always "large" and handed its heap back after every task, to fault it in again
    in the next (+25% CPU per task). The threshold counts from what the process held right after its
    last release."""
    gib = 1 << 30
    resident = [int(1.7 * gib)]  # 1.2 GB kept alive + 0.5 GB of a task's freed heap
    calls: list[int] = []

    def release() -> None:
        calls.append(resident[0])
        resident[0] = int(1.2 * gib)  # what the release leaves: the kept partitions

    monkeypatch.setattr(pipeline, "RELEASE_ABOVE", gib)
    monkeypatch.setattr(pipeline, "_FLOOR", [0])
    monkeypatch.setattr(pipeline, "release_memory", release)
    monkeypatch.setattr(pipeline, "_resident_bytes", lambda: resident[0])
    pipeline.release_memory_if_large()  # the first task: above 1 GB → released, the floor is 1.2 GB
    assert calls == [int(1.7 * gib)]
    for _ in range(3):  # the next tasks end at 1.7 GB again: not 1 GB above the floor
        resident[0] = int(1.7 * gib)
        pipeline.release_memory_if_large()
    assert len(calls) == 1
    resident[0] = int(2.3 * gib)  # a task that leaves more than 1 GB above the floor: released
    pipeline.release_memory_if_large()
    assert calls == [int(1.7 * gib), int(2.3 * gib)]


def test_resident_bytes_reads_this_process():
    import os

    rss = pipeline._resident_bytes()
    if os.path.exists("/proc/self/statm"):
        assert 10 * 2**20 < rss < 64 * 2**30
    else:
        assert rss == 0
