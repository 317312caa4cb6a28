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
    """Echoes, per job, (its first pixel values, its params); records every batch it ran."""

    def __init__(self, delay: float = 0.02):
        self.batches: list[int] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, images, jobs):
        self.gate.wait(5)
        import time

        time.sleep(self.delay)
        self.batches.append(int(images.shape[0]))
        out, offset = [], 0
        for job in jobs:
            n = job.images.shape[0]
            out.append(([float(images[offset + k, 0, 0, 0]) for k in range(n)], job.params))
            offset += n
        return out


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
        await asyncio.sleep(0.05)
        work.gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    batcher.close()
    assert [r[0][1] for r in results] == list(range(6))
    assert sum(work.batches) == 6 and len(work.batches) >= 2


def test_delay_gathers_requests_that_arrive_later():
    work = RecordingWork(delay=0)
    batcher = Batcher(work, max_batch_size=4, max_batch_delay_ms=100, max_queue=64)

    async def main():
        first = asyncio.ensure_future(batcher.submit(img(1), 1))
        await asyncio.sleep(0.02)
        rest = [asyncio.ensure_future(batcher.submit(img(v), v)) for v in (2, 3, 4)]
        return await asyncio.gather(first, *rest)

    asyncio.run(main())
    batcher.close()
    assert work.batches == [4]


def test_full_queue_is_refused_at_once():
    work = RecordingWork()
    work.gate.clear()
    batcher = Batcher(work, max_batch_size=1, max_batch_delay_ms=0, max_queue=3)

    async def main():
        tasks = [asyncio.ensure_future(batcher.submit(img(i), i)) for i in range(3)]
        await asyncio.sleep(0.05)  # one is running (not queued), two wait
        queued = [asyncio.ensure_future(batcher.submit(img(i), i)) for i in range(1)]
        with pytest.raises(Overloaded):
            await batcher.submit(img(0, n=2), 0)
        work.gate.set()
        return await asyncio.gather(*tasks, *queued)

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
