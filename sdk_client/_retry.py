"""The one retry policy of the SDK (sync client, async client and the CLI's up-front check).

What is retried: errors whose class says ``retryable`` (503, 504, no response at all; see
:mod:`sdk_client.errors`), at most ``retries`` times after the first attempt. The delay before
retry ``n`` (0-based) is equal-jitter exponential backoff, ``uniform(d/2, d)`` with
``d = min(cap, base * 2**n)``, and never less than the server's ``Retry-After`` (itself capped at
``max_retry_after``).

The policy decides; callers only drive it, sync or async alike::

    for attempt in policy.attempts():
        with attempt:                 # a retryable error is swallowed while retries are left
            return send()
        sleep(attempt.delay)          # or: await asyncio.sleep(attempt.delay)
"""

from __future__ import annotations

import itertools
import random
from typing import Callable, Iterator

from .errors import DetectionError

__all__ = ["RetryPolicy", "Attempt"]


class RetryPolicy:
    """Which failures are retried, how often, and how long to wait in between."""

    def __init__(self, retries: int = 3, base: float = 0.5, cap: float = 8.0,
                 max_retry_after: float = 60.0, rng: Callable[[], float] = random.random):
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.retries = int(retries)
        self.base = float(base)
        self.cap = float(cap)
        self.max_retry_after = float(max_retry_after)
        self._rng = rng

    def should_retry(self, err: BaseException, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (0-based) that failed with ``err`` is retried."""
        return isinstance(err, DetectionError) and err.retryable and attempt < self.retries

    def delay(self, attempt: int, err: DetectionError | None = None) -> float:
        """Seconds before retry number ``attempt + 1``: equal-jitter exponential, >= Retry-After."""
        nominal = min(self.cap, self.base * (2 ** attempt))
        wait = nominal / 2 + self._rng() * nominal / 2
        retry_after = getattr(err, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, min(float(retry_after), self.max_retry_after))
        return wait

    def attempts(self) -> Iterator["Attempt"]:
        """Attempts to drive with ``with attempt: ...`` (see the module docstring)."""
        for n in itertools.count():
            yield Attempt(self, n)


class Attempt:
    """One try. As a context manager it swallows an error that the policy retries and sets
    :attr:`delay`; any other error (or the last retryable one) propagates."""

    def __init__(self, policy: RetryPolicy, number: int):
        self.policy = policy
        self.number = number
        self.delay = 0.0
        self.error: BaseException | None = None

    def __enter__(self) -> "Attempt":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or not self.policy.should_retry(exc, self.number):
            return False
        self.error = exc
        self.delay = self.policy.delay(self.number, exc)
        return True
