"""Dynamic batching in front of the engine: a bounded queue and one worker thread.

Concurrent requests queue here; a single consumer takes the oldest job plus any queued jobs of the
same input size, up to ``max_batch_size`` images (optionally waiting ``max_batch_delay_ms`` for more),
runs ``work`` once in a dedicated thread, and resolves each job's future with its own slice of the
result. N jobs in -> exactly N results out, each computed with its own parameters. A full queue
raises :class:`yolo_contract.errors.Overloaded` at once instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from yolo_contract.errors import Overloaded


@dataclass(eq=False)  # identity semantics: the queue removes jobs by identity
class Job:
    images: np.ndarray  # [n, 3, H, W]
    params: Any
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def key(self) -> tuple:
        return (self.images.dtype.str, *self.images.shape[1:])


#: ``work(batch_images, jobs) -> one result per job`` runs in the batcher's worker thread.
Work = Callable[[np.ndarray, Sequence[Job]], list[Any]]


class Batcher:
    def __init__(self, work: Work, max_batch_size: int, max_batch_delay_ms: float, max_queue: int):
        self.work = work
        self.max_batch_size = max_batch_size
        self.max_delay = max_batch_delay_ms / 1000.0
        self.max_queue = max_queue
        self._queue: collections.deque[Job] = collections.deque()
        self._queued_images = 0
        self._wakeup: asyncio.Event | None = None
        self._consumer: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")

    async def submit(self, images: np.ndarray, params: Any) -> tuple[Any, float]:
        """Queue ``images`` and wait for their result. Returns ``(result, queue_wait_seconds)``."""
        n = int(images.shape[0])
        if self._queued_images + n > self.max_queue:
            raise Overloaded(f"predictor queue is full ({self.max_queue} images); retry later", retry_after=1)
        loop = asyncio.get_running_loop()
        if self._consumer is None or self._consumer.done():
            self._wakeup = asyncio.Event()
            self._consumer = loop.create_task(self._consume())
        job = Job(images, params, loop.create_future())
        self._queue.append(job)
        self._queued_images += n
        self._wakeup.set()
        return await job.future

    def _take_batch(self) -> list[Job]:
        first = self._queue.popleft()
        batch, total = [first], first.images.shape[0]
        for job in list(self._queue):
            if total >= self.max_batch_size:
                break
            if job.key == first.key and total + job.images.shape[0] <= self.max_batch_size:
                self._queue.remove(job)
                batch.append(job)
                total += job.images.shape[0]
        self._queued_images -= total
        return batch

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.max_delay > 0 and sum(j.images.shape[0] for j in self._queue) < self.max_batch_size:
                oldest = self._queue[0].enqueued
                await asyncio.sleep(max(0.0, oldest + self.max_delay - time.perf_counter()))
            batch = self._take_batch()
            started = time.perf_counter()
            try:
                images = batch[0].images if len(batch) == 1 else np.concatenate([j.images for j in batch])
                results = await loop.run_in_executor(self._executor, self.work, images, batch)
                if len(results) != len(batch):
                    raise RuntimeError(f"batch work returned {len(results)} results for {len(batch)} jobs")
            except Exception as e:  # every job of the batch gets the failure, none is lost
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            for job, result in zip(batch, results):
                if not job.future.done():  # a cancelled request (client went away) is simply dropped
                    job.future.set_result((result, started - job.enqueued))

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
