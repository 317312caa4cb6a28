"""Faults with real processes (reliability.md §2): predictor killed, stalled, absent; SIGTERM drains;
overload is refused with Retry-After and nothing is lost; every request id is answered exactly once;
slow clients time out.

No assertion here is about elapsed time. "N requests in flight" is established from what the servers
report (metrics, log lines), and where the order of events matters the test makes it certain: a
SIGSTOPped predictor holds the transformer's requests in flight for as long as the test needs.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import socket
import time

import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest

from tests import imagegen
from tests.observe import SAFETY_TIMEOUT_S, access_lines, access_status, metric_at, wait_until, wait_until_async
from tests.servers import ServerProcess, free_ports, predictor, transformer

pytestmark = [pytest.mark.component, pytest.mark.model, pytest.mark.slow]

PREDICT = "/v1/models/yolov3:predict"
READY = "/v2/models/yolov3/ready"
DOG = imagegen.dog_jpeg()
JPEG = {"content-type": "image/jpeg"}
#: for tests that hold requests in flight with a SIGSTOPped predictor: no predictor health check (with
#: one, a stalled predictor makes the transformer refuse new requests with 503 once its 1 s cached
#: answer expires)
HOLD = {"health_check": False}
#: the transformer gives up on a stalled predictor after 2 s (504)
STALL = {"predictor_timeout": 2}


def post_dog(url: str, timeout: float = SAFETY_TIMEOUT_S + 30, **headers) -> httpx.Response:
    """POST dog.jpg; the client waits longer than the transformer waits for the predictor."""
    return httpx.post(url + PREDICT, content=DOG, headers={**JPEG, **headers}, timeout=timeout)


def wait_until_it_serves(url: str) -> int:
    """Poll until the transformer answers 200; until then only 503/504 JSON errors are allowed.
    Returns how many refusals came first."""
    refusals = []

    def serves() -> bool:
        r = post_dog(url)
        if r.status_code != 200:
            refusals.append(r.status_code)
            assert r.status_code in (503, 504) and "error" in r.json(), r.text
        return r.status_code == 200

    wait_until(serves, "the transformer to serve again")
    return len(refusals)


def admitted_requests(url: str) -> float:
    """Requests the transformer has admitted and not yet answered (``yolo_inflight_requests``)."""
    return metric_at(url, "yolo_inflight_requests", component="transformer", model_name="yolov3")


def served_images(url: str) -> float:
    return metric_at(url, "yolo_images_total", component="transformer", model_name="yolov3")


async def in_thread(fn, *args, **kwargs):
    """Run a blocking check (a scrape, a wait) without stalling the test's own requests."""
    return await asyncio.to_thread(fn, *args, **kwargs)


@pytest.fixture()
def stack(tiny_model_dir, tmp_path, request):
    """A disposable predictor + transformer (fixed predictor ports, so it can be restarted)."""
    options = {"predictor_timeout": SAFETY_TIMEOUT_S, "health_check": True, **getattr(request, "param", {})}
    ports = free_ports(2)
    procs = {"pred": predictor(tmp_path, tiny_model_dir, ports=ports).start()}
    procs["pred"].wait_ready(READY, SAFETY_TIMEOUT_S)
    procs["trans"] = transformer(
        tmp_path, procs["pred"].grpc_target, *(["--enable_predictor_health_check"] if options["health_check"] else []),
        "--predictor_request_timeout_seconds", str(options["predictor_timeout"]),
    ).start()
    procs["trans"].wait_ready(READY, SAFETY_TIMEOUT_S)
    procs["ports"] = ports
    procs["tmp"] = tmp_path
    yield procs
    for key in ("trans", "pred"):
        if isinstance(procs.get(key), ServerProcess):
            procs[key].signal(signal.SIGCONT)
            procs[key].stop()


def test_predictor_sigkill_under_load_then_recovery(stack, tiny_model_dir):
    url = stack["trans"].url
    statuses: list[int] = []
    after_kill: list[int] = []  # answers to requests sent once the predictor was dead

    async def scenario():
        killed, serving = asyncio.Event(), asyncio.Event()
        async with httpx.AsyncClient(timeout=SAFETY_TIMEOUT_S) as c:
            async def worker():
                seen_dead = 0
                while seen_dead < 2:  # every worker keeps going until two of its requests met a dead predictor
                    sent_after_kill = killed.is_set()
                    r = await c.post(url + PREDICT, content=DOG, headers=JPEG)
                    statuses.append(r.status_code)
                    assert r.status_code == 200 or "error" in r.json(), r.text
                    if r.status_code == 200 and statuses.count(200) >= 8:
                        serving.set()
                    if sent_after_kill:
                        after_kill.append(r.status_code)
                        seen_dead += 1

            workers = [asyncio.create_task(worker()) for _ in range(4)]
            await asyncio.wait_for(serving.wait(), SAFETY_TIMEOUT_S)  # under load: 4 workers, 8 answered
            stack["pred"].proc.kill()
            killed.set()
            await asyncio.gather(*workers)

    asyncio.run(scenario())
    assert 200 in statuses
    assert 500 not in statuses
    assert set(statuses) <= {200, 503, 504}, statuses
    assert len(after_kill) == 8 and set(after_kill) <= {503, 504}, after_kill
    after = post_dog(url)
    assert after.status_code == 503 and "error" in after.json()

    # bring the predictor back on the same ports; the transformer serves again (no restart of its own)
    stack["pred"] = predictor(stack["tmp"], tiny_model_dir, ports=stack["ports"]).start()
    stack["pred"].wait_ready(READY, SAFETY_TIMEOUT_S)
    back = time.monotonic()
    refusals = wait_until_it_serves(url)
    print(f"recovered {time.monotonic() - back:.2f} s after the predictor was ready again ({refusals} refusal(s) meanwhile)")


@pytest.mark.parametrize("stack", [STALL], indirect=True, ids=["2s"])
def test_stalled_predictor_gives_504(stack):
    stack["pred"].signal(signal.SIGSTOP)
    try:
        t = time.monotonic()
        r = post_dog(stack["trans"].url)  # the transformer's own 2 s predictor timeout answers first
        print(f"stalled predictor answered {r.status_code} after {time.monotonic() - t:.2f} s")
        assert r.status_code in (503, 504), r.text
        assert "error" in r.json()
    finally:
        stack["pred"].signal(signal.SIGCONT)
    wait_until_it_serves(stack["trans"].url)


def test_predictor_absent_at_start_then_appears(tiny_model_dir, tmp_path):
    ports = free_ports(2)
    trans = transformer(tmp_path, f"127.0.0.1:{ports[1]}", "--enable_predictor_health_check").start()
    pred = None
    try:
        def live() -> bool:  # up, but not ready
            assert trans.proc.poll() is None, trans.log_tail()
            try:
                return httpx.get(trans.url + "/v2/health/live", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(live, "the transformer to be live")
        assert httpx.get(trans.url + READY, timeout=30).status_code == 503
        r = post_dog(trans.url)
        assert r.status_code == 503 and "error" in r.json()
        pred = predictor(tmp_path, tiny_model_dir, ports=ports).start().wait_ready(READY, SAFETY_TIMEOUT_S)
        trans.wait_ready(READY, SAFETY_TIMEOUT_S)
        assert post_dog(trans.url).status_code == 200
    finally:
        trans.stop()
        if pred:
            pred.stop()


def _log_has(server: ServerProcess, line: str) -> bool:
    return line in server.log()


@pytest.mark.parametrize("stack", [HOLD], indirect=True, ids=["held"])
def test_sigterm_transformer_with_8_in_flight_answers_all_and_exits_0(stack):
    """The predictor is SIGSTOPped, so the transformer's 8 requests stay in flight until the test lets
    them go: SIGTERM reaches the transformer with all 8 admitted and none answered."""
    url = stack["trans"].url
    batch = {"instances": [{"b64": base64.b64encode(DOG).decode()}] * 4}
    assert post_dog(url).status_code == 200  # the transformer's channel to the predictor is connected
    served0 = served_images(url)

    async def scenario():
        async with httpx.AsyncClient(timeout=SAFETY_TIMEOUT_S) as c:
            stack["pred"].signal(signal.SIGSTOP)
            try:
                tasks = [asyncio.create_task(c.post(url + PREDICT, json=batch)) for _ in range(8)]
                # all 8 admitted, and none can be answered while the predictor is stopped
                await in_thread(wait_until, lambda: admitted_requests(url) == 8, "8 requests in flight")
                assert not any(t.done() for t in tasks)
                assert await in_thread(served_images, url) == served0
                stack["trans"].signal(signal.SIGTERM)
                # uvicorn has stopped listening and waits for the 8 open requests
                await in_thread(wait_until, lambda: _log_has(stack["trans"], "Waiting for connections to close"),
                                "the transformer to start draining")
            finally:
                stack["pred"].signal(signal.SIGCONT)
            return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    codes = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in results]
    assert codes == [200] * 8, codes
    assert all(len(r.json()["predictions"]) == 4 for r in results)
    assert stack["trans"].proc.wait(SAFETY_TIMEOUT_S) == 0


def test_sigterm_predictor_with_8_in_flight_answers_all_and_exits_0(tiny_model_dir, tmp_path):
    """8 gRPC calls in flight at the predictor (the transformer's view of in-flight work).

    The batcher gathers up to 32 images for 2 s, so the 8 calls (4 images each) normally sit in its
    queue together; the test sends SIGTERM once the predictor's in-flight gauge reads 8. Should a round
    not get all 8 in flight together (the 2 s window ran out first), it is repeated."""
    pred = predictor(tmp_path, tiny_model_dir, "--max_batch_size", "32", "--max_batch_delay_ms", "2000").start()
    try:
        pred.wait_ready(READY, SAFETY_TIMEOUT_S)
        tensor = np.full((4, 3, 128, 128), 128, np.uint8)
        inp = InferInput("images", list(tensor.shape), "UINT8")
        inp.set_data_from_numpy(tensor, binary_data=True)

        def in_flight() -> float:
            return metric_at(pred.url, "yolo_inflight_requests", component="predictor", model_name="yolov3")

        async def one_round():
            async with InferenceGRPCClient(pred.grpc_target, timeout=SAFETY_TIMEOUT_S, retries=0) as c:
                tasks = [asyncio.create_task(c.infer(InferRequest(model_name="yolov3", infer_inputs=[inp])))
                         for _ in range(8)]
                together = False
                while not all(t.done() for t in tasks):
                    if await in_thread(in_flight) == 8:
                        together = True
                        pred.signal(signal.SIGTERM)
                        break
                    await asyncio.sleep(0.01)  # polling interval
                return together, await asyncio.gather(*tasks, return_exceptions=True)

        for attempt in range(1, 6):
            together, results = asyncio.run(asyncio.wait_for(one_round(), SAFETY_TIMEOUT_S))
            errors = [repr(r)[:200] for r in results if isinstance(r, BaseException)]
            assert not errors, errors
            assert all(r.outputs[1].as_numpy().shape == (4,) for r in results)
            if together:
                print(f"8 calls in flight together at SIGTERM (round {attempt})")
                break
        else:
            pytest.fail("the predictor never held 8 calls in flight together in 5 rounds")
        assert pred.proc.wait(SAFETY_TIMEOUT_S) == 0
    finally:
        pred.stop()


def test_overload_is_refused_with_retry_after_and_nothing_is_lost(tiny_model_dir, tmp_path):
    """64 requests against --max_inflight 4: the predictor is SIGSTOPped, so exactly 4 are admitted
    and held; the other 60 must be refused with 503 + Retry-After, liveness must answer meanwhile,
    and once the predictor resumes the 4 complete. Every request id is answered and logged once."""
    pred = predictor(tmp_path, tiny_model_dir).start()
    trans = transformer(tmp_path, pred.grpc_target, "--max_inflight", "4", "--predictor_request_timeout_seconds",
                        str(SAFETY_TIMEOUT_S))
    try:
        pred.wait_ready(READY, SAFETY_TIMEOUT_S)
        trans.start().wait_ready(READY, SAFETY_TIMEOUT_S)
        assert post_dog(trans.url).status_code == 200  # the transformer's channel to the predictor is connected
        ids = [f"overload-{i:03d}" for i in range(64)]
        refused0 = metric_at(trans.url, "yolo_rejected_requests_total", component="transformer", reason="overloaded")
        health: list[float] = []

        async def scenario():
            limits = httpx.Limits(max_connections=100)
            async with httpx.AsyncClient(timeout=SAFETY_TIMEOUT_S, limits=limits) as c, \
                    httpx.AsyncClient(timeout=30) as h:
                pred.signal(signal.SIGSTOP)
                try:
                    tasks = [asyncio.create_task(c.post(trans.url + PREDICT, content=DOG, headers={**JPEG, "x-request-id": i}))
                             for i in ids]
                    await wait_until_async(lambda: sum(t.done() for t in tasks) >= 60, "60 refusals")  # no predictor needed
                    # 4 admitted, none answered: 4 in flight
                    assert await in_thread(admitted_requests, trans.url) == 4
                    assert sum(t.done() for t in tasks) == 60
                    for _ in range(20):  # liveness while the transformer is at its limit
                        t = time.perf_counter()
                        assert (await h.get(trans.url + "/v2/health/live")).status_code == 200
                        health.append(time.perf_counter() - t)
                    assert sum(t.done() for t in tasks) == 60
                finally:
                    pred.signal(signal.SIGCONT)
                return await asyncio.gather(*tasks)

        responses = asyncio.run(scenario())
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 4 and codes.count(503) == 60, codes
        for r in responses:
            if r.status_code == 503:
                assert r.headers.get("retry-after") == "1" and "error" in r.json(), (r.headers, r.text)
            else:
                assert r.json()["predictions"][0]["detections"], r.text
        assert [r.headers["x-request-id"] for r in responses] == ids
        refused = metric_at(trans.url, "yolo_rejected_requests_total", component="transformer", reason="overloaded")
        assert refused - refused0 == 60
        _assert_logged_once(trans, {i: r.status_code for i, r in zip(ids, responses)})
        health.sort()
        print(f"overload: 4 x 200, 60 x 503; liveness while 4 in flight: median {health[len(health) // 2] * 1000:.0f} ms, "
              f"max {health[-1] * 1000:.0f} ms")
    finally:
        pred.signal(signal.SIGCONT)
        trans.stop()
        pred.stop()


def _assert_logged_once(server: ServerProcess, expected: dict[str, int]) -> None:
    """Every request id has exactly one access-log line, with the status it was answered with.

    The line is written after the response is sent, so wait for all of them first."""
    wait_until(lambda: all(access_lines(server.log(), i, "POST", PREDICT) for i in expected),
               "an access-log line for every request")
    log = server.log()
    for i, status in expected.items():
        lines = access_lines(log, i, "POST", PREDICT)
        assert len(lines) == 1 and access_status(lines[0]) == status, (i, lines)


def test_every_request_id_answered_exactly_once_and_logged_once(live_stack):
    ids = [f"req-{i:03d}" for i in range(30)]  # below --max_inflight (32)

    async def scenario():
        async with httpx.AsyncClient(timeout=SAFETY_TIMEOUT_S) as c:
            return await asyncio.gather(
                *(c.post(live_stack.transformer_url + PREDICT, content=DOG, headers={**JPEG, "x-request-id": i}) for i in ids)
            )

    responses = asyncio.run(scenario())
    assert [r.headers["x-request-id"] for r in responses] == ids
    assert all(r.status_code == 200 for r in responses)
    _assert_logged_once(live_stack.transformer, dict.fromkeys(ids, 200))


def test_slow_client_body_gets_408(tiny_model_dir, tmp_path, live_stack):
    trans = transformer(tmp_path, live_stack.predictor_grpc, "--body_read_timeout_seconds", "1").start()
    try:
        trans.wait_ready(READY, SAFETY_TIMEOUT_S)
        with socket.create_connection(("127.0.0.1", trans.http_port), timeout=SAFETY_TIMEOUT_S) as s:
            s.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                      b"Content-Length: 100000\r\n\r\n" + DOG[:100])
            reply = b""
            while b'"error"' not in reply:  # the server answers, then closes; recv's timeout is the safety net
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
            assert b'"error"' in reply
        assert post_dog(trans.url).status_code == 200
    finally:
        trans.stop()
