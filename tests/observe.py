"""What the real servers report (Prometheus ``/metrics``, access-log lines), for tests to wait on.

Tests synchronise on these events, never on sleeps or elapsed time: "8 requests are in flight" is a
gauge read from the server, "the request was logged" is its access-log line. Timeouts here are a
safety net against hangs, not a claim about speed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")

#: a condition that never comes true fails the test after this long (pytest-timeout is 300 s)
SAFETY_TIMEOUT_S = 120


def scrape(url: str) -> str:
    r = httpx.get(url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text[:200]
    return r.text


def metric(text: str, sample: str, **labels: str) -> float:
    """Sum of the samples called ``sample`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def metric_at(url: str, sample: str, **labels: str) -> float:
    """:func:`metric` of a fresh scrape of the server at ``url``."""
    return metric(scrape(url), sample, **labels)


def _check(condition: Callable[[], T], deadline: float, what: str) -> T:
    """One poll: ``condition()``'s result, or a failure once the safety deadline has passed."""
    result = condition()
    if not result and time.monotonic() > deadline:
        raise AssertionError(f"gave up waiting (safety timeout) for: {what}")
    return result


def wait_until(condition: Callable[[], T], what: str, timeout: float = SAFETY_TIMEOUT_S) -> T:
    """Poll ``condition()`` until it returns something truthy and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (result := _check(condition, deadline, what)):
        time.sleep(0.02)
    return result


async def wait_until_async(condition: Callable[[], T], what: str, timeout: float = SAFETY_TIMEOUT_S) -> T:
    """:func:`wait_until` inside a running event loop (the loop keeps serving the test's own requests).

    ``condition`` must not block; run blocking checks (scrapes) with ``asyncio.to_thread``."""
    deadline = time.monotonic() + timeout
    while not (result := _check(condition, deadline, what)):
        await asyncio.sleep(0.01)
    return result


def access_lines(log: str, request_id: str, method: str, path: str) -> list[str]:
    """The middleware's access-log lines (``<id> <METHOD> <path> <status> <ms>``) of one request."""
    return [ln for ln in log.splitlines() if "yolo_kserve.access" in ln and f" {request_id} {method} {path} " in ln]


def access_status(line: str) -> int:
    return int(line.split()[-2])
