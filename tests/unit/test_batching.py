"""The predictor's dynamic batcher: N requests in -> exactly N results, each with its own params."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from predictor.batching import Batcher
from yolo_contract.errors import Overloaded

pytestmark = pytest.mark.unit


class RecordingWork:
    """Echoes, per job, (its first pixel values, its params); records every batch it ran.

    ``entered`` is set when a batch reaches the engine; the engine then waits for ``gate``."""

    def __init__(self):
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, images, jobs):
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        self.batches.append(int(images.shape[0]))
        out, offset = [], 0
        for job in jobs:
            n = job.images.shape[0]
            out.append(([float(images[offset + k, 0, 0, 0]) for k in range(n)], job.params))
            offset += n
        return out


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock only moves when nothing is ready to run: it then jumps to the next
    timer. ``asyncio.sleep(5)`` means "after everything already scheduled, and 5 s later on this
    clock" and takes no wall time, so "a request arrives later, inside the batching window" is an
    order of events, not a race against a real clock."""

    def __init__(self):
        super().__init__()
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def _run_once(self):
        if not self._ready and self._scheduled:
            self._now = max(self._now, self._scheduled[0]._when)
        super()._run_once()


def run_on_virtual_time(coro):
    """``asyncio.run`` on a :class:`VirtualTimeLoop` (left-over tasks are cancelled the same way)."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.close()


def img(value: float, n: int = 1, size: int = 32) -> np.ndarray:
    return np.full((n, 3, size, size), value, np.float32)


def test_every_request_gets_exactly_its_own_result_and_params():
    work = RecordingWork()
    batcher = Batcher(work, max_batch_size=4, max_batch_delay_ms=0, max_queue=64)

    async def main():
        return await asyncio.gather(*(batcher.submit(img(i, n=1 + i % 2), {"p": i}) for i in range(12)))

    results = asyncio.run(main())
    batcher.close()
    assert len(results) == 12
    for i, ((values, params), waited) in enumerate(results):
        assert params == {"p": i}
        assert values == [float(i)] * (1 + i % 2)
        assert waited >= 0
    assert sum(work.batches) == sum(1 + i % 2 for i in range(12))
    assert max(work.batches) <= 4 and max(work.batches) > 1  # queued requests were merged


def test_batches_only_merge_same_input_sizes():
    work = RecordingWork()
    work.gate.clear()
    batcher = Batcher(work, max_batch_size=8, max_batch_delay_ms=0, max_queue=64)

    async def main():
        tasks = [asyncio.ensure_future(batcher.submit(img(i, size=32 if i % 2 else 64), i)) for i in range(6)]
        assert await asyncio.to_thread(work.entered.wait, 60)  # the first batch is on the engine
        work.gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    batcher.close()
    assert [r[0][1] for r in results] == list(range(6))
    assert sum(work.batches) == 6 and len(work.batches) >= 2


def test_delay_gathers_requests_that_arrive_later():
    work = RecordingWork()
    batcher = Batcher(work, max_batch_size=4, max_batch_delay_ms=10_000, max_queue=64)

    async def main():
        first = asyncio.ensure_future(batcher.submit(img(1), 1))
        await asyncio.sleep(5)  # virtual: the batcher is waiting for more, 5 s into its 10 s window
        rest = [asyncio.ensure_future(batcher.submit(img(v), v)) for v in (2, 3, 4)]
        return await asyncio.gather(first, *rest)

    run_on_virtual_time(main())
    batcher.close()
    assert work.batches == [4]


def test_requests_after_the_delay_window_make_a_new_batch():
    work = RecordingWork()
    batcher = Batcher(work, max_batch_size=4, max_batch_delay_ms=10_000, max_queue=64)

    async def main():
        first = asyncio.ensure_future(batcher.submit(img(1), 1))
        await asyncio.sleep(15)  # virtual: past the window, the first request has gone alone
        rest = [asyncio.ensure_future(batcher.submit(img(v), v)) for v in (2, 3, 4)]
        return await asyncio.gather(first, *rest)

    run_on_virtual_time(main())
    batcher.close()
    assert work.batches == [1, 3]


def test_full_queue_is_refused_at_once():
    work = RecordingWork()
    work.gate.clear()
    batcher = Batcher(work, max_batch_size=1, max_batch_delay_ms=0, max_queue=3)

    async def main():
        tasks = [asyncio.ensure_future(batcher.submit(img(i), i)) for i in range(3)]
        assert await asyncio.to_thread(work.entered.wait, 60)  # one is running (not queued), two wait
        with pytest.raises(Overloaded):
            await batcher.submit(img(0, n=2), 0)  # 2 + 2 > 3
        tasks.append(asyncio.ensure_future(batcher.submit(img(3), 3)))  # 2 + 1 = 3: accepted
        await asyncio.sleep(0)  # one loop step: it is queued
        with pytest.raises(Overloaded):
            await batcher.submit(img(4), 4)  # 3 + 1 > 3
        work.gate.set()
        return await asyncio.gather(*tasks)

    assert len(asyncio.run(main())) == 4
    batcher.close()


def test_a_failing_batch_fails_each_of_its_requests_and_the_batcher_goes_on():
    calls = {"n": 0}

    def work(images, jobs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("engine failed")
        return [(job.params, None) for job in jobs]

    batcher = Batcher(work, max_batch_size=1, max_batch_delay_ms=0, max_queue=8)

    async def main():
        with pytest.raises(RuntimeError, match="engine failed"):
            await batcher.submit(img(1), "a")
        return await batcher.submit(img(2), "b")

    (result, _), _ = asyncio.run(main())
    batcher.close()
    assert result == "b"


def test_a_result_count_mismatch_is_an_error_not_a_silent_loss():
    batcher = Batcher(lambda images, jobs: [], max_batch_size=1, max_batch_delay_ms=0, max_queue=8)
    with pytest.raises(RuntimeError, match="0 results for 1 jobs"):
        asyncio.run(batcher.submit(img(1), None))
    batcher.close()
