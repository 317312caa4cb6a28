"""Faults with real processes (reliability.md §2): predictor killed, stalled, absent; SIGTERM drains;
overload is refused fast; every request id is answered exactly once; slow clients time out."""

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
from tests.servers import ServerProcess, free_ports, predictor, transformer

pytestmark = [pytest.mark.component, pytest.mark.model, pytest.mark.slow]

PREDICT = "/v1/models/yolov3:predict"
DOG = imagegen.dog_jpeg()
JPEG = {"content-type": "image/jpeg"}


def post_dog(url: str, timeout: float = 30, **headers) -> httpx.Response:
    return httpx.post(url + PREDICT, content=DOG, headers={**JPEG, **headers}, timeout=timeout)


@pytest.fixture()
def stack(tiny_model_dir, tmp_path):
    """A disposable predictor + transformer (fixed predictor ports, so it can be restarted)."""
    ports = free_ports(2)
    procs = {"pred": predictor(tmp_path, tiny_model_dir, ports=ports).start()}
    procs["pred"].wait_ready("/v2/models/yolov3/ready")
    procs["trans"] = transformer(
        tmp_path, procs["pred"].grpc_target, "--enable_predictor_health_check", "--predictor_request_timeout_seconds", "2"
    ).start()
    procs["trans"].wait_ready("/v2/models/yolov3/ready")
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

    async def load(seconds: float):
        async with httpx.AsyncClient(timeout=30) as c:
            end = time.monotonic() + seconds
            async def worker():
                while time.monotonic() < end:
                    r = await c.post(url + PREDICT, content=DOG, headers=JPEG)
                    statuses.append(r.status_code)
                    assert "error" in r.json() or r.status_code == 200
            await asyncio.gather(*(worker() for _ in range(4)))

    async def scenario():
        task = asyncio.create_task(load(3.0))
        await asyncio.sleep(1.0)
        stack["pred"].proc.kill()
        await task

    asyncio.run(scenario())
    assert 200 in statuses
    assert 500 not in statuses
    assert set(statuses) <= {200, 503, 504}
    after = post_dog(url)
    assert after.status_code == 503 and "error" in after.json()

    # bring the predictor back on the same ports; the transformer serves again within 5 s
    stack["pred"] = predictor(stack["tmp"], tiny_model_dir, ports=stack["ports"]).start()
    stack["pred"].wait_ready("/v2/models/yolov3/ready")
    back = time.monotonic()
    while True:
        r = post_dog(url)
        if r.status_code == 200:
            break
        assert time.monotonic() - back < 5.0, f"still {r.status_code} 5 s after the predictor returned"
        time.sleep(0.1)
    print(f"recovered {time.monotonic() - back:.2f} s after the predictor was ready again")


def test_stalled_predictor_gives_504(stack):
    stack["pred"].signal(signal.SIGSTOP)
    try:
        t = time.monotonic()
        r = post_dog(stack["trans"].url)
        took = time.monotonic() - t
        assert r.status_code in (503, 504), r.text
        assert "error" in r.json()
        assert took < 5
    finally:
        stack["pred"].signal(signal.SIGCONT)
    assert post_dog(stack["trans"].url).status_code == 200


def test_predictor_absent_at_start_then_appears(tiny_model_dir, tmp_path):
    ports = free_ports(2)
    trans = transformer(tmp_path, f"127.0.0.1:{ports[1]}", "--enable_predictor_health_check").start()
    pred = None
    try:
        deadline = time.monotonic() + 30
        while True:  # up, but not ready
            try:
                if httpx.get(trans.url + "/v2/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert httpx.get(trans.url + "/v2/models/yolov3/ready").status_code == 503
        r = post_dog(trans.url)
        assert r.status_code == 503 and "error" in r.json()
        pred = predictor(tmp_path, tiny_model_dir, ports=ports).start().wait_ready("/v2/models/yolov3/ready")
        trans.wait_ready("/v2/models/yolov3/ready", timeout=10)
        assert post_dog(trans.url).status_code == 200
    finally:
        trans.stop()
        if pred:
            pred.stop()


def test_sigterm_transformer_with_8_in_flight_answers_all_and_exits_0(stack):
    url = stack["trans"].url
    batch = {"instances": [{"b64": base64.b64encode(DOG).decode()}] * 4}

    async def scenario():
        async with httpx.AsyncClient(timeout=30) as c:
            tasks = [asyncio.create_task(c.post(url + PREDICT, json=batch)) for _ in range(8)]
            await asyncio.sleep(0.15)  # all 8 accepted and in flight (8 x 4 images ~ 1 s of work)
            stack["trans"].signal(signal.SIGTERM)
            return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    codes = [r.status_code if isinstance(r, httpx.Response) else repr(r) for r in results]
    assert codes == [200] * 8, codes
    assert stack["trans"].proc.wait(30) == 0


def test_sigterm_predictor_with_8_in_flight_answers_all_and_exits_0(stack):
    """8 gRPC calls in flight at the predictor (the transformer's view of in-flight work)."""
    tensor = np.full((4, 3, 416, 416), 128, np.uint8)
    inp = InferInput("images", list(tensor.shape), "UINT8")
    inp.set_data_from_numpy(tensor, binary_data=True)

    async def scenario():
        async with InferenceGRPCClient(stack["pred"].grpc_target, timeout=30, retries=0) as c:
            tasks = [asyncio.create_task(c.infer(InferRequest(model_name="yolov3", infer_inputs=[inp]))) for _ in range(8)]
            await asyncio.sleep(0.15)
            stack["pred"].signal(signal.SIGTERM)
            return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    errors = [repr(r)[:200] for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    assert all(r.outputs[1].as_numpy().shape == (4,) for r in results)
    assert stack["pred"].proc.wait(30) == 0


def test_overload_is_refused_fast_with_retry_after(tiny_model_dir, tmp_path):
    pred = predictor(tmp_path, tiny_model_dir, "--max_queue", "8").start().wait_ready("/v2/models/yolov3/ready")
    trans = transformer(tmp_path, pred.grpc_target, "--max_inflight", "4").start().wait_ready("/v2/models/yolov3/ready")
    try:
        codes: list[int] = []
        refused_latency: list[float] = []
        health: list[float] = []

        async def one(c):
            t = time.perf_counter()
            r = await c.post(trans.url + PREDICT, content=DOG, headers=JPEG)
            codes.append(r.status_code)
            if r.status_code == 503:
                assert r.headers.get("retry-after") == "1" and "error" in r.json()
                refused_latency.append(time.perf_counter() - t)

        async def probe(c, stop):
            while not stop.is_set():
                t = time.perf_counter()
                assert (await c.get(trans.url + "/v2/health/live")).status_code == 200
                health.append(time.perf_counter() - t)
                await asyncio.sleep(0.02)

        async def scenario():
            limits = httpx.Limits(max_connections=100)
            async with httpx.AsyncClient(timeout=60, limits=limits) as c, httpx.AsyncClient(timeout=5) as h:
                stop = asyncio.Event()
                p = asyncio.create_task(probe(h, stop))
                await asyncio.gather(*(one(c) for _ in range(64)))
                stop.set()
                await p

        asyncio.run(scenario())
        assert set(codes) <= {200, 503}, codes
        assert codes.count(200) >= 4 and codes.count(503) >= 1
        assert max(refused_latency) < 1.0
        health.sort()
        assert health[int(0.99 * (len(health) - 1))] < 0.1
        print(f"overload: {codes.count(200)} x 200, {codes.count(503)} x 503, "
              f"max refusal {max(refused_latency) * 1000:.0f} ms, health p99 {health[int(0.99 * (len(health) - 1))] * 1000:.0f} ms")
    finally:
        trans.stop()
        pred.stop()


def test_every_request_id_answered_exactly_once_and_logged_once(live_stack):
    ids = [f"req-{i:03d}" for i in range(30)]  # below --max_inflight (32)

    async def scenario():
        async with httpx.AsyncClient(timeout=60) as c:
            return await asyncio.gather(
                *(c.post(live_stack.transformer_url + PREDICT, content=DOG, headers={**JPEG, "x-request-id": i}) for i in ids)
            )

    responses = asyncio.run(scenario())
    assert [r.headers["x-request-id"] for r in responses] == ids
    assert all(r.status_code == 200 for r in responses)
    time.sleep(0.3)
    log = live_stack.transformer.log()
    for i in ids:
        lines = [ln for ln in log.splitlines() if f" {i} POST {PREDICT} " in ln and "yolo_kserve.access" in ln]
        assert len(lines) == 1 and lines[0].split()[-2] == "200", (i, lines)


def test_slow_client_body_gets_408(tiny_model_dir, tmp_path, live_stack):
    trans = transformer(tmp_path, live_stack.predictor_grpc, "--body_read_timeout_seconds", "1").start()
    try:
        trans.wait_ready("/v2/models/yolov3/ready")
        with socket.create_connection(("127.0.0.1", trans.http_port), timeout=10) as s:
            s.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                      b"Content-Length: 100000\r\n\r\n" + DOG[:100])
            t = time.monotonic()
            reply = b""
            while b'"error"' not in reply and time.monotonic() - t < 10:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
            assert b'"error"' in reply
            assert time.monotonic() - t < 5
        assert post_dog(trans.url).status_code == 200
    finally:
        trans.stop()
