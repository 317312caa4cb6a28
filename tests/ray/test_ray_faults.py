"""Faults of the Ray predictor with real processes: replicas SIGKILLed under load (one, then all),
SIGTERM with work in flight (a model that cannot load: test_external_cluster.py). Events are observed (replica processes,
readiness, responses, ``/metrics``); timeouts are safety nets only."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import httpx
import numpy as np
import psutil
import pytest
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest

from tests.observe import wait_until
from tests.ray.conftest import READY, descendants, replica_processes, start_ray_predictor
from tests.servers import DATA, ServerProcess
from yolo_contract import tensors as T

pytestmark = [pytest.mark.ray, pytest.mark.model, pytest.mark.slow]

INFER = "/v2/models/yolov3/infer"
SAFETY = 120.0  # seconds; only ever reached when something is broken


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """One Ray predictor for the module; the SIGTERM test (last) stops it."""
    p = start_ray_predictor(tmp_path_factory.mktemp("ray-faults"), tiny_model_dir)
    try:
        yield p
    finally:
        p.stop()


def _tensor(n: int = 1) -> np.ndarray:
    dog = np.rint(np.load(DATA / "dog_tensors" / "input.npy") * 255).astype(np.uint8)
    return np.concatenate([dog] * n)


def _rest_body(x: np.ndarray) -> tuple[bytes, dict]:
    header = (b'{"inputs": [{"name": "images", "shape": [%d, 3, 416, 416], "datatype": "UINT8", '
              b'"parameters": {"binary_data_size": %d}}]}' % (x.shape[0], x.nbytes))
    return header + x.tobytes(), {"inference-header-content-length": str(len(header)),
                                  "content-type": "application/octet-stream"}


def _grpc_request(x: np.ndarray) -> InferRequest:
    inp = InferInput(T.INPUT_IMAGES, list(x.shape), "UINT8")
    inp.set_data_from_numpy(x, binary_data=True)
    return InferRequest(model_name="yolov3", infer_inputs=[inp])


def _ready(server: ServerProcess) -> bool:
    try:
        return httpx.get(server.url + READY, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


class Load:
    """Steady REST + gRPC load on the predictor until stopped; records every outcome."""

    def __init__(self, server: ServerProcess):
        self.server = server
        self.outcomes: list[tuple[str, int | str, float]] = []  # (protocol, status, monotonic time)
        self.bad_bodies: list[str] = []
        self.stop = asyncio.Event()

    def successes_since(self, t: float) -> int:
        return sum(1 for _, status, at in self.outcomes if status in (200, "OK") and at > t)

    async def rest_worker(self, client: httpx.AsyncClient):
        body, headers = _rest_body(_tensor())
        while not self.stop.is_set():
            r = await client.post(self.server.url + INFER, content=body, headers=headers)
            self.outcomes.append(("rest", r.status_code, time.monotonic()))
            if r.status_code != 200:
                ok = r.status_code == 503 and r.headers.get("retry-after") == "1" and "error" in r.json()
                if not ok or "Actor" in r.text or "Traceback" in r.text:
                    self.bad_bodies.append(f"{r.status_code} {dict(r.headers)} {r.text[:300]}")
                await asyncio.sleep(0.05)  # a polite client backs off (pacing, not ordering)

    async def grpc_worker(self):
        async with InferenceGRPCClient(self.server.grpc_target, timeout=60, retries=0) as c:
            while not self.stop.is_set():
                try:
                    await c.infer(_grpc_request(_tensor()))
                    self.outcomes.append(("grpc", "OK", time.monotonic()))
                except grpc.RpcError as e:
                    self.outcomes.append(("grpc", e.code().name, time.monotonic()))
                    if "Actor" in (e.details() or ""):
                        self.bad_bodies.append(e.details())
                    await asyncio.sleep(0.05)

    async def run(self, scenario):
        async with httpx.AsyncClient(timeout=60) as client:
            workers = [asyncio.create_task(self.rest_worker(client)) for _ in range(2)]
            workers += [asyncio.create_task(self.grpc_worker()) for _ in range(2)]
            try:
                await scenario(self)
            finally:
                self.stop.set()
                await asyncio.gather(*workers)

    def statuses(self) -> set:
        return {status for _, status, _ in self.outcomes}


async def _until(predicate, what: str, timeout: float = SAFETY):
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, f"safety timeout: {what}"
        await asyncio.sleep(0.05)


def test_one_replica_killed_under_load_only_200_or_503_then_replaced(server):
    pid = server.proc.pid
    old = {p.pid for p in replica_processes(server)}
    assert len(old) == 2
    marks = {}

    async def scenario(load: Load):
        await _until(lambda: load.successes_since(0) >= 8, "first successes under load")
        victim = sorted(old)[0]
        psutil.Process(victim).kill()
        marks["killed"] = time.monotonic()
        new = await asyncio.to_thread(wait_until, lambda: {p.pid for p in replica_processes(server)} - old, "a new replica process")
        await _until(lambda: len(replica_processes(server)) == 2 and _ready(server), "two replicas again")
        marks["replaced"] = time.monotonic()
        marks["new"] = new
        await _until(lambda: load.successes_since(marks["replaced"]) >= 8, "successes after the replacement")

    asyncio.run(_run(server, scenario, marks))
    load = marks["load"]
    assert load.statuses() <= {200, 503, "OK", "UNAVAILABLE"}, load.statuses()
    assert not load.bad_bodies, load.bad_bodies[:3]
    assert server.proc.poll() is None and server.proc.pid == pid  # the server itself never restarted
    assert len(marks["new"]) == 1
    print(f"one replica killed: {len(load.outcomes)} answers {sorted(map(str, load.statuses()))}, "
          f"replaced after {marks['replaced'] - marks['killed']:.1f} s")


async def _run(server, scenario, marks):
    load = Load(server)
    marks["load"] = load
    await load.run(scenario)


def test_all_replicas_killed_readiness_false_until_one_is_back(server):
    wait_until(lambda: len(replica_processes(server)) == 2 and _ready(server), "two ready replicas")
    old = {p.pid for p in replica_processes(server)}
    marks = {}

    async def scenario(load: Load):
        await _until(lambda: load.successes_since(0) >= 4, "first successes under load")
        for p in old:
            psutil.Process(p).kill()
        marks["killed"] = time.monotonic()
        await _until(lambda: not _ready(server), "readiness turns false")
        marks["not_ready"] = time.monotonic()
        server_ready = httpx.get(server.url + "/v2/health/ready", timeout=5)
        marks["server_ready_status"] = server_ready.status_code
        await _until(lambda: _ready(server), "readiness back")
        marks["ready"] = time.monotonic()
        await _until(lambda: load.successes_since(marks["ready"]) >= 4, "successes after recovery")

    asyncio.run(_run(server, scenario, marks))
    load = marks["load"]
    assert load.statuses() <= {200, 503, "OK", "UNAVAILABLE"}, load.statuses()
    assert not load.bad_bodies, load.bad_bodies[:3]
    # While no replica ran, inference was refused fast (503 / UNAVAILABLE), never queued or 500.
    during = [s for _, s, at in load.outcomes if marks["not_ready"] <= at <= marks["ready"]]
    assert during and set(during) <= {503, "UNAVAILABLE", 200, "OK"}
    assert {503, "UNAVAILABLE"} & set(during)
    assert marks["server_ready_status"] == 503  # /v2/health/ready follows the replicas too
    assert not ({p.pid for p in replica_processes(server)} & old)
    print(f"all replicas killed: not ready {marks['not_ready'] - marks['killed']:.1f} s after the kill, "
          f"ready again after {marks['ready'] - marks['killed']:.1f} s; {len(during)} answers meanwhile")


def _metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=5).text
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(name + "{"))


def test_sigterm_with_requests_in_flight_completes_them_then_no_ray_process_is_left(server):
    wait_until(lambda: len(replica_processes(server)) == 2 and _ready(server), "two ready replicas")
    tree = descendants(server)
    assert len(tree) >= 5  # gcs, raylet, the Ray agents, the Serve controller, the replicas
    session_marker = f"_{server.proc.pid}/"  # Ray's session directory ends with the driver's pid
    entered = "request_preprocess_seconds_count"  # KServe counts a request as it enters the model
    before = _metric(server, entered)
    x = _tensor(8)  # 8 requests x 8 images: seconds of engine work on 2 single-thread replicas

    async def scenario():
        async with InferenceGRPCClient(server.grpc_target, timeout=SAFETY, retries=0) as c:
            calls = [asyncio.create_task(c.infer(_grpc_request(x))) for _ in range(8)]
            # KServe counted all 8 in, and the ingress's gauge has them in flight to the replicas
            await _until(lambda: _metric(server, entered) >= before + 8 and _metric(server, "yolo_inflight_requests") >= 1,
                         "8 requests inside the model, in flight")
            in_flight = sum(not t.done() for t in calls)
            server.signal(signal.SIGTERM)
            return in_flight, await asyncio.gather(*calls, return_exceptions=True)

    in_flight, results = asyncio.run(scenario())
    assert in_flight >= 1, "no request was in flight at SIGTERM"
    errors = [repr(r)[:200] for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    assert all(r.outputs[1].as_numpy().shape == (8,) for r in results)
    assert server.proc.wait(SAFETY) == 0
    gone, alive = psutil.wait_procs(tree, timeout=SAFETY)
    assert not alive, [(p.pid, p.name()) for p in alive]
    leftovers = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(session_marker in part for part in (p.info["cmdline"] or [])):
            leftovers.append(p.info)
    assert not leftovers, leftovers
    log = server.log()
    assert "Ray stopped" in log
    print(f"SIGTERM: {in_flight} of 8 in flight, all answered; {len(tree)} Ray processes gone")
