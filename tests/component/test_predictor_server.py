"""A real predictor process: gRPC and REST v2 inference, health under load, refusals, bad input."""

from __future__ import annotations

import asyncio
import hashlib
import time

import grpc
import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest

from predictor import darknet
from tests.observe import SAFETY_TIMEOUT_S, metric
from tests.servers import DATA, predictor
from yolo_contract import tensors as T

pytestmark = [pytest.mark.component, pytest.mark.model]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    p = predictor(tmp_path_factory.mktemp("pred"), tiny_model_dir, "--max_queue", "64").start()
    try:
        yield p.wait_ready("/v2/models/yolov3/ready", SAFETY_TIMEOUT_S)
    finally:
        p.stop()


def _request(arr: np.ndarray, datatype="UINT8", **params) -> InferRequest:
    inp = InferInput(T.INPUT_IMAGES, list(arr.shape), datatype)
    inp.set_data_from_numpy(arr, binary_data=True)
    return InferRequest(model_name="yolov3", infer_inputs=[inp], request_id="rid-1", parameters=params or None)


def _dog_u8():
    return np.rint(np.load(DATA / "dog_tensors" / "input.npy") * 255).astype(np.uint8)


async def _infer(target, req, timeout=30):
    async with InferenceGRPCClient(target, timeout=timeout, retries=0) as c:
        return await c.infer(req)


def test_grpc_uint8_request_returns_the_contract(server, references):
    res = asyncio.run(_infer(server.grpc_target, _request(_dog_u8())))
    out = {o.name: o for o in res.outputs}
    assert set(out) == {T.OUTPUT_DETECTIONS, T.OUTPUT_COUNTS, T.OUTPUT_LABELS}
    counts = out[T.OUTPUT_COUNTS].as_numpy()
    dets = out[T.OUTPUT_DETECTIONS].as_numpy()
    labels = [x.decode() for x in out[T.OUTPUT_LABELS].as_numpy()[0][: counts[0]]]
    ref = references["0.5"]["images"]["dog.jpg"]
    assert counts.tolist() == [len(ref)]
    assert labels == [r[0] for r in ref]
    np.testing.assert_allclose(dets[0, : counts[0], 4], [r[1] for r in ref], atol=0.01)
    assert "predictor-inference;dur=" in T.plain_value(res.parameters[T.SERVER_TIMING_PARAMETER])


def test_per_request_parameters_and_batches(server):
    x = np.concatenate([_dog_u8()] * 3)
    res = asyncio.run(
        _infer(server.grpc_target, _request(x, confidence="0.25", class_filter="car,truck", max_detections=2))
    )
    out = {o.name: o.as_numpy() for o in res.outputs}
    assert out[T.OUTPUT_COUNTS].tolist() == [2, 2, 2]
    assert {v.decode() for v in out[T.OUTPUT_LABELS].ravel() if v} <= {"car", "truck"}


def test_rest_v2_json_fp32_is_accepted(server):
    x = np.load(DATA / "dog_tensors" / "input.npy")
    body = {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    r = httpx.post(f"{server.url}/v2/models/yolov3/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["counts"]["data"] == [5]
    assert outputs["labels"]["data"][:5] == ["car", "bicycle", "dog", "truck", "car"]


@pytest.mark.parametrize(
    "body, status",
    [
        (b"", 400),
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'{"inputs": 3}', 400),
        (b'{"inputs": [{"name": "images", "shape": [1,3,100,100], "datatype": "UINT8", "data": [0]}]}', 400),
        (b'{"inputs": [{"name": "images", "shape": [1,3,32,32], "datatype": "UINT8", "data": [0, 1]}]}', 400),
        (b'{"inputs": [{"name": "images", "shape": [1,3,32,32], "datatype": "INT77", "data": [0]}]}', 400),
        (b'{"inputs": [{"name": "other", "shape": [1], "datatype": "UINT8", "data": [0]}]}', 400),
        (b'{"inputs": [{"name": "images", "shape": [1,3,32,32], "datatype": "FP32", "data": ["x"]}]}', 400),
    ],
)
def test_bad_v2_requests_are_400_json_and_server_survives(server, body, status):
    r = httpx.post(f"{server.url}/v2/models/yolov3/infer", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert httpx.get(f"{server.url}/v2/models/yolov3/ready").status_code == 200


def test_bad_parameters_and_unknown_model(server):
    with pytest.raises(grpc.RpcError) as e:
        asyncio.run(_infer(server.grpc_target, _request(_dog_u8(), confidence="2")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        asyncio.run(_infer(server.grpc_target, _request(_dog_u8(), class_filter="unicorn")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not among this model's 80 classes" in e.value.details()
    r = httpx.post(f"{server.url}/v2/models/nope/infer", json={"inputs": []})
    assert r.status_code == 404 and "error" in r.json()


def test_model_repository_cannot_unload_the_model(server):
    for verb in ("unload", "load"):
        r = httpx.post(f"{server.url}/v2/repository/models/yolov3/{verb}")
        assert r.status_code == 403 and "error" in r.json()
    assert httpx.get(f"{server.url}/v2/models/yolov3/ready").status_code == 200


def test_liveness_answers_while_four_inferences_are_in_flight(server):
    """Engine work must not block the event loop: liveness probes are answered while the predictor
    reports 4 inferences in flight (its gauge read just before and just after each probe). How fast
    they are answered is printed, not asserted (wall-clock bounds belong to `make bench`)."""
    big = np.full((6, 3, 608, 608), 128, np.uint8)  # ~6 x 30 ms of engine work each
    probes_in_flight, latencies = 0, []

    async def main():
        nonlocal probes_in_flight
        stop = asyncio.Event()
        async with InferenceGRPCClient(server.grpc_target, timeout=SAFETY_TIMEOUT_S, retries=0) as c, \
                httpx.AsyncClient(timeout=30) as h:
            async def worker():
                counts = []
                while not stop.is_set():  # each worker keeps one inference in flight
                    res = await c.infer(_request(big))
                    counts.append({o.name: o for o in res.outputs}[T.OUTPUT_COUNTS].as_numpy().shape)
                return counts

            async def in_flight() -> float:
                text = (await h.get(f"{server.url}/metrics")).text
                return metric(text, "yolo_inflight_requests", component="predictor", model_name="yolov3")

            workers = [asyncio.create_task(worker()) for _ in range(4)]
            try:
                while probes_in_flight < 5:
                    before = await in_flight()
                    t = time.perf_counter()
                    r = await h.get(f"{server.url}/v2/health/live")
                    latencies.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text
                    if before == 4 and await in_flight() == 4:
                        probes_in_flight += 1
            finally:
                stop.set()
            return await asyncio.gather(*workers)

    done = asyncio.run(asyncio.wait_for(main(), SAFETY_TIMEOUT_S))
    assert all(counts and all(shape == (6,) for shape in counts) for counts in done)  # the inferences really ran
    latencies.sort()
    print(f"liveness: {len(latencies)} probes (5 with 4 inferences in flight), "
          f"median {latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")


@pytest.mark.parametrize("case", ["missing_weights", "truncated", "names_mismatch", "unknown_layer"])
def test_broken_model_exits_nonzero_with_one_clear_line_and_never_ready(tmp_path, case):
    src = DATA / "cfg" / "yolov3-tiny.cfg"
    d = tmp_path / "model"
    d.mkdir()
    cfg = src.read_text() + ("\n[lstm]\n" if case == "unknown_layer" else "")
    (d / "yolov3-tiny.cfg").write_text(cfg)
    names = (DATA / "coco.names").read_text().splitlines()
    (d / "coco.names").write_text("\n".join(names[:-1] if case == "names_mismatch" else names))
    if case != "missing_weights":
        w = d / "yolov3-tiny.weights"
        darknet.write_random_weights(darknet.parse_cfg(src), w)
        if case == "truncated":
            w.write_bytes(w.read_bytes()[:1_000_000])
    p = predictor(tmp_path, d).start()
    ready_seen = False
    deadline = time.monotonic() + SAFETY_TIMEOUT_S
    while p.proc.poll() is None and time.monotonic() < deadline:  # it must exit by itself
        try:
            ready_seen |= httpx.get(f"{p.url}/v2/models/yolov3/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # polling interval
    exited = p.proc.poll() is not None
    rc = p.stop()
    assert exited, f"still running after the {SAFETY_TIMEOUT_S} s safety timeout"
    assert rc not in (0, None)
    assert not ready_seen
    errors = [ln for ln in p.log().splitlines() if "model load failed" in ln]
    assert len(errors) == 1, p.log()
    expected = {
        "missing_weights": "no .weights file",
        "truncated": "(truncated)",
        "names_mismatch": "79 class names",
        "unknown_layer": "unknown layer type [lstm]",
    }[case]
    assert expected in errors[0]
    assert "Traceback" not in p.log()


def test_grpc_repository_unload_is_refused(server):
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    with grpc.insecure_channel(server.grpc_target) as ch:
        stub = GRPCInferenceServiceStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="yolov3"), timeout=5)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert stub.ModelReady(pb.ModelReadyRequest(name="yolov3"), timeout=5).ready


def test_metadata_publishes_the_model_info_and_every_answer_names_the_version(server, tiny_model_dir):
    files = [tiny_model_dir / n for n in ("yolov3-tiny.cfg", "yolov3-tiny.weights", "coco.names")]
    version = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]
    meta = httpx.get(f"{server.url}/v2/models/yolov3").json()
    assert meta["versions"] == [version] and meta["platform"] == "darknet-pjreddie"
    assert meta["inputs"][0] == {"name": "images", "datatype": "UINT8", "shape": [-1, 3, 416, 416]}
    info = meta["parameters"]
    assert (info["name"], info["version"], info["lineage"], info["preprocess"]) == ("yolov3", version, "pjreddie", "letterbox")
    assert (info["input_width"], info["input_height"], info["models"]) == (416, 416, ["yolov3"])
    # pjreddie's defaults (darknet detector test: thresh .5, nms .45, do_nms_obj)
    assert (info["confidence"], info["iou_threshold"], info["nms"]) == (0.5, 0.45, "agnostic")
    assert info["classes"] == (DATA / "coco.names").read_text().split("\n")[:80]
    res = asyncio.run(_infer(server.grpc_target, _request(_dog_u8())))
    assert res.model_version == version
