"""The one bounded worker pool of the SDK: ``detect_many`` (sync and async) and the CLI use it.

``bounded_map(fn, items, concurrency)`` calls ``fn(item)`` with at most ``concurrency`` calls in
flight, reads ``items`` lazily (at most ``2 * concurrency`` ahead, so a folder of a million images
or a long video never sits in memory) and yields ``(index, result)`` pairs in input order (or as
they complete with ``ordered=False``). With ``return_exceptions=True`` a failed call yields
``(index, exception)`` instead of raising. ``abounded_map`` is the same over coroutines.

The bookkeeping (the window of pending calls and what may be yielded next) is written once in
:class:`_Window`; the two drivers only differ in how they wait.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator

__all__ = ["bounded_map", "abounded_map"]


class _Window:
    """Pending calls keyed by future/task, in submission order, at most ``size`` of them."""

    def __init__(self, items: Iterable[Any], concurrency: int, ordered: bool):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.source = iter(enumerate(items))
        self.size = 2 * concurrency
        self.ordered = ordered
        self.pending: collections.OrderedDict[Any, int] = collections.OrderedDict()

    def refill(self, submit: Callable[[Any], Any]) -> None:
        while len(self.pending) < self.size:
            nxt = next(self.source, None)
            if nxt is None:
                return
            idx, item = nxt
            self.pending[submit(item)] = idx

    def waiting_on(self) -> list[Any]:
        """What to wait for next: the oldest call when ordered, else any pending call."""
        return [next(iter(self.pending))] if self.ordered else list(self.pending)

    def pop_done(self, done: Iterable[Any]) -> list[tuple[int, Any]]:
        """``(index, future)`` of finished calls, by index; they leave the window."""
        return sorted(((self.pending.pop(f), f) for f in done), key=lambda p: p[0])


def _outcome(fut: Any, return_exceptions: bool) -> Any:
    exc = fut.exception()
    if exc is not None:
        if not return_exceptions:
            raise exc
        return exc
    return fut.result()


def bounded_map(fn: Callable[[Any], Any], items: Iterable[Any], concurrency: int = 4, *,
                ordered: bool = True, return_exceptions: bool = False,
                thread_name_prefix: str = "sdk-client") -> Iterator[tuple[int, Any]]:
    """``fn`` over ``items`` in a thread pool of ``concurrency`` workers (see the module doc)."""
    window = _Window(items, concurrency, ordered)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency,
                                                 thread_name_prefix=thread_name_prefix)
    try:
        window.refill(lambda item: pool.submit(fn, item))
        while window.pending:
            done, _ = concurrent.futures.wait(window.waiting_on(),
                                              return_when=concurrent.futures.FIRST_COMPLETED)
            for idx, fut in window.pop_done(done):
                yield idx, _outcome(fut, return_exceptions)
            window.refill(lambda item: pool.submit(fn, item))
    finally:
        for fut in window.pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


async def abounded_map(fn: Callable[[Any], Awaitable[Any]], items: Iterable[Any],
                       concurrency: int = 4, *, ordered: bool = True,
                       return_exceptions: bool = False) -> AsyncIterator[tuple[int, Any]]:
    """``await fn(item)`` over ``items``, at most ``concurrency`` at once (see the module doc)."""
    window = _Window(items, concurrency, ordered)
    sem = asyncio.Semaphore(concurrency)

    async def one(item: Any) -> Any:
        async with sem:
            return await fn(item)

    try:
        window.refill(lambda item: asyncio.ensure_future(one(item)))
        while window.pending:
            done, _ = await asyncio.wait(window.waiting_on(), return_when=asyncio.FIRST_COMPLETED)
            for idx, task in window.pop_done(done):
                yield idx, _outcome(task, return_exceptions)
            window.refill(lambda item: asyncio.ensure_future(one(item)))
    finally:
        for task in window.pending:
            task.cancel()
        if window.pending:
            await asyncio.gather(*window.pending, return_exceptions=True)
