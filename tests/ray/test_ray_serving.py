"""A 2-replica Ray predictor behind a real transformer answers like the plain predictor: the same
detections on the reference images (v1, v2, gRPC), the same 4xx for bad input (and 409 for a
preprocess mismatch), readiness and metadata from the replicas (the transformer describes and
follows the Ray predictor), metrics and Server-Timing at the ingress."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys

import grpc
import httpx
import psutil
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.infer_type import InferInput, InferRequest

from tests.component.test_bad_inputs import CASES
from tests.component.test_transformer import assert_parity
from tests.observe import metric, scrape
from tests.ray.conftest import READY, replica_processes, start_ray_predictor
from tests.servers import DATA, IMAGE_NAMES, IMAGES, Stack, transformer
from tests.unit.test_repository import model
from yolo_contract import model_info as MI
from yolo_contract import tensors as T

pytestmark = [pytest.mark.ray, pytest.mark.model]

PREDICT = "/v1/models/yolov3:predict"
INFER = "/v2/models/yolov3/infer"


@pytest.fixture(scope="module")
def ray_stack(tiny_model_dir, tmp_path_factory):
    """Ray predictor (2 replicas x 1 thread) + transformer, for this module."""
    tmp = tmp_path_factory.mktemp("ray-stack")
    pred = start_ray_predictor(tmp, tiny_model_dir)
    trans = None
    try:
        trans = transformer(tmp, pred.grpc_target, "--enable_predictor_health_check").start()
        trans.wait_ready(READY)
        yield Stack(pred, trans)
    finally:
        if trans:
            trans.stop()
        pred.stop()


def b64(name: str) -> str:
    return base64.b64encode((IMAGES / name).read_bytes()).decode()


def detections(doc: dict) -> list[tuple]:
    return [(d["class"], round(d["confidence"], 4), tuple(round(d[k], 1) for k in ("x", "y", "width", "height")))
            for d in doc["detections"]]


def both(live_stack: Stack, ray_stack: Stack, method: str, path: str, **kwargs) -> tuple[httpx.Response, httpx.Response]:
    with httpx.Client(timeout=120) as c:
        return (c.request(method, live_stack.transformer_url + path, **kwargs),
                c.request(method, ray_stack.transformer_url + path, **kwargs))


def test_two_replicas_run_with_one_thread_each(ray_stack):
    assert len(replica_processes(ray_stack.predictor)) == 2
    assert "2 replica(s) running" in ray_stack.predictor.log()
    assert "on 2 Ray replica(s) x 1 thread(s)" in ray_stack.predictor.log()


def test_replicas_run_at_the_servers_priority(ray_stack):
    """Ray's default nice 15 would let anything else runnable starve the inference (and outlast
    SIGTERM's grace period): the replicas run at the ModelServer's own priority."""
    server_nice = psutil.Process(ray_stack.predictor.proc.pid).nice()
    replicas = replica_processes(ray_stack.predictor)
    assert replicas and [p.nice() for p in replicas] == [server_nice] * len(replicas)


@pytest.mark.parametrize("thresh", ["0.5", "0.25"])
def test_v1_same_detections_as_the_plain_predictor_and_darknet(live_stack, ray_stack, references, thresh):
    body = {"instances": [b64(n) for n in IMAGE_NAMES], "parameters": {"confidence": float(thresh)}}
    plain, ray = both(live_stack, ray_stack, "POST", PREDICT, json=body)
    assert plain.status_code == ray.status_code == 200, ray.text
    assert_parity(ray.json()["predictions"], IMAGE_NAMES, references, thresh)
    assert [detections(d) for d in ray.json()["predictions"]] == [detections(d) for d in plain.json()["predictions"]]


def test_v2_same_detections_as_the_plain_predictor(live_stack, ray_stack, references):
    body = {"inputs": [{"name": "images", "shape": [5], "datatype": "BYTES", "data": [b64(n) for n in IMAGE_NAMES]}],
            "parameters": {"confidence": 0.25, "class_filter": "dog,car,bird,horse,person,truck"}}
    plain, ray = both(live_stack, ray_stack, "POST", INFER, json=body)
    assert plain.status_code == ray.status_code == 200, ray.text
    docs = [json.loads(d) for d in ray.json()["outputs"][0]["data"]]
    assert docs == [json.loads(d) for d in plain.json()["outputs"][0]["data"]]
    assert {d["class"] for doc in docs for d in doc["detections"]} <= set(body["parameters"]["class_filter"].split(","))


def test_grpc_same_detections_as_the_plain_predictor(live_stack, ray_stack, references):
    raw = np.array([(IMAGES / n).read_bytes() for n in IMAGE_NAMES], dtype=object)
    inp = InferInput("images", [len(raw)], "BYTES")
    inp.set_data_from_numpy(raw, binary_data=True)

    async def call(target):
        async with InferenceGRPCClient(target, timeout=120, retries=0) as c:
            res = await c.infer(InferRequest(model_name="yolov3", infer_inputs=[inp], parameters={"confidence": "0.25"}))
        return [json.loads(d) for d in res.outputs[0].as_numpy()]

    ray_docs = asyncio.run(call(ray_stack.transformer_grpc))
    assert_parity(ray_docs, IMAGE_NAMES, references, "0.25")
    assert ray_docs == asyncio.run(call(live_stack.transformer_grpc))


def test_stage_timings_reach_the_transformer_and_the_ingress_metrics(ray_stack):
    r = httpx.post(ray_stack.transformer_url + PREDICT, content=(IMAGES / "dog.jpg").read_bytes(),
                   headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200
    timing = r.headers["server-timing"]
    for stage in ("transport", "predictor-queue", "predictor-inference", "predictor-nms", "predictor-ray", "predictor-total"):
        assert f"{stage};dur=" in timing, timing
    version = r.headers[T.MODEL_VERSION_HEADER]
    metrics = scrape(ray_stack.predictor_url)
    for sample, labels in (
        ("yolo_stage_seconds_count", {"component": "predictor", "stage": "inference"}),
        ("yolo_stage_seconds_count", {"component": "predictor", "stage": "ray"}),
        ("yolo_engine_batch_size_count", {}),
        ("yolo_detections_total", {"class_name": "dog", "component": "predictor", "model_version": version}),
        ("yolo_images_total", {"component": "predictor", "model_version": version, "revision": ""}),
        ("request_predict_seconds_count", {}),  # KServe's own, recorded at the ingress
    ):
        assert metric(metrics, sample, model_name="yolov3", **labels) >= 1, (sample, labels)
    # requests in flight are tracked at the ingress (the series exists there; nothing is in flight now)
    assert 'yolo_inflight_requests{component="predictor",model_name="yolov3"} 0.0' in metrics


def test_readiness_and_metadata_come_from_the_replicas(live_stack, ray_stack):
    url = ray_stack.predictor_url
    for path in ("/v2/health/ready", READY, "/v1/models/yolov3"):
        assert httpx.get(url + path).status_code == 200, path
    ray_doc = httpx.get(url + "/v2/models/yolov3").json()
    assert ray_doc == httpx.get(live_stack.predictor_url + "/v2/models/yolov3").json()
    assert ray_doc["versions"] and ray_doc["platform"].startswith("darknet-") and ray_doc["parameters"]["classes"]
    with grpc.insecure_channel(ray_stack.predictor_grpc) as ch:
        stub = GRPCInferenceServiceStub(ch)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name="yolov3"), timeout=5).ready


def test_the_transformer_describes_and_follows_the_ray_predictor(ray_stack):
    """The transformer is ready only after describing its predictor: here through the Ray hop."""
    info = MI.ModelInfo.from_dict(httpx.get(ray_stack.predictor_url + "/v2/models/yolov3").json()["parameters"])
    assert httpx.get(ray_stack.transformer_url + "/v2/models/yolov3").json()["parameters"] == info.to_dict()
    r = httpx.post(ray_stack.transformer_url + PREDICT, content=(IMAGES / "dog.jpg").read_bytes(),
                   headers={"content-type": "image/jpeg"}, timeout=60)
    assert r.status_code == 200 and r.headers[T.MODEL_VERSION_HEADER] == info.version


def _grpc_outcome(target: str, request: InferRequest) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and details of ``request`` sent to ``target``."""

    async def call():
        async with InferenceGRPCClient(target, timeout=30, retries=0) as c:
            try:
                await c.infer(request)
            except grpc.RpcError as e:
                return e.code(), e.details()
        return grpc.StatusCode.OK, ""

    return asyncio.run(call())


def _mismatched(info: MI.ModelInfo) -> InferRequest:
    """A tensor prepared the other way than the model's ModelInfo says."""
    x = np.zeros((1, 3, info.input_height, info.input_width), np.uint8)
    inp = InferInput(T.INPUT_IMAGES, list(x.shape), "UINT8")
    inp.set_data_from_numpy(x, binary_data=True)
    other = next(m for m in T.PREPROCESS_MODES if m != info.preprocess)
    return InferRequest(model_name="yolov3", infer_inputs=[inp], parameters={T.PREPROCESS_PARAMETER: other})


def test_a_preprocess_mismatch_is_409_and_failed_precondition_with_the_models_info(live_stack, ray_stack):
    info = MI.ModelInfo.from_dict(httpx.get(ray_stack.predictor_url + "/v2/models/yolov3").json()["parameters"])
    request = _mismatched(info)
    ray = _grpc_outcome(ray_stack.predictor_grpc, request)
    assert ray == _grpc_outcome(live_stack.predictor_grpc, request)
    assert ray[0] == grpc.StatusCode.FAILED_PRECONDITION and MI.read_mismatch_message(ray[1]) == info
    body = {"inputs": [{"name": "images", "shape": [1, 3, info.input_height, info.input_width], "datatype": "UINT8",
                        "data": [0] * (3 * info.input_height * info.input_width)}],
            "parameters": dict(request.parameters)}
    plain, rest = (httpx.post(u + INFER, json=body, timeout=60) for u in (live_stack.predictor_url, ray_stack.predictor_url))
    assert (rest.status_code, rest.json()) == (plain.status_code, plain.json())
    assert rest.status_code == 409 and MI.read_mismatch_message(rest.json()["error"]) == info


# ------------------------------------------------------------------ bad input: the plain predictor's answers

PREDICTOR_BAD_BODIES = [
    b"",
    b"not json",
    b"[1, 2]",
    b'{"inputs": 3}',
    b'{"inputs": [{"name": "images", "shape": [1,3,100,100], "datatype": "UINT8", "data": [0]}]}',
    b'{"inputs": [{"name": "images", "shape": [1,3,32,32], "datatype": "UINT8", "data": [0, 1]}]}',
    b'{"inputs": [{"name": "images", "shape": [1,3,32,32], "datatype": "INT77", "data": [0]}]}',
    b'{"inputs": [{"name": "other", "shape": [1], "datatype": "UINT8", "data": [0]}]}',
    b'{"inputs": [{"name": "images", "shape": [1,3,32,32], "datatype": "FP32", "data": ["x"]}]}',
    b'{"inputs": [{"name": "images", "shape": [1,3,32,32], "datatype": "UINT8", "data": [0]}], "parameters": {"confidence": 7}}',
    b'{"inputs": [{"name": "images", "shape": [17,3,32,32], "datatype": "UINT8", "data": [0]}]}',
]


@pytest.mark.parametrize("body", PREDICTOR_BAD_BODIES, ids=range(len(PREDICTOR_BAD_BODIES)))
def test_bad_v2_request_to_the_predictor_gets_the_plain_predictors_answer(live_stack, ray_stack, body):
    answers = []
    for url in (live_stack.predictor_url, ray_stack.predictor_url):
        r = httpx.post(url + INFER, content=body, headers={"content-type": "application/json"}, timeout=30)
        answers.append((r.status_code, r.json()))
    assert answers[1] == answers[0]
    assert 400 <= answers[0][0] < 500 and isinstance(answers[0][1].get("error"), str)
    assert httpx.get(ray_stack.predictor_url + READY).status_code == 200


@pytest.mark.parametrize("path, kwargs", [
    (PREDICT, {"json": {"instances": [1]}}),  # the predictor speaks v2 only
    ("/v1/models/yolov3:explain", {"json": {"instances": [1]}}),
    ("/v2/models/nope/infer", {"json": {"inputs": []}}),
    ("/v2/repository/models/yolov3/unload", {}),
])
def test_other_refusals_match_the_plain_predictor(live_stack, ray_stack, path, kwargs):
    plain = httpx.post(live_stack.predictor_url + path, **kwargs)
    ray = httpx.post(ray_stack.predictor_url + path, **kwargs)
    assert (ray.status_code, ray.json()) == (plain.status_code, plain.json())


def _grpc_cases() -> dict[str, InferRequest]:
    dog = np.rint(np.load(DATA / "dog_tensors" / "input.npy") * 255).astype(np.uint8)

    def req(arr, shape=None, **params):
        inp = InferInput(T.INPUT_IMAGES, list(arr.shape), "UINT8")
        inp.set_data_from_numpy(arr, binary_data=True)
        if shape:
            inp.shape = list(shape)  # declare more images than the raw bytes hold
        return InferRequest(model_name="yolov3", infer_inputs=[inp], parameters=params or None)

    return {
        "confidence_out_of_range": req(dog, confidence="2"),
        "unknown_class": req(dog, class_filter="unicorn"),
        "bad_nms": req(dog, nms="fastest"),
        "unknown_parameter": req(dog, conf="0.3"),
        "raw_bytes_do_not_match_shape": req(dog, shape=[2, 3, 416, 416]),
        "odd_size": req(np.zeros((1, 3, 100, 100), np.uint8)),
    }


@pytest.mark.parametrize("case", sorted(_grpc_cases()))
def test_bad_grpc_request_gets_the_plain_predictors_code_and_details(live_stack, ray_stack, case):
    request = _grpc_cases()[case]
    plain = _grpc_outcome(live_stack.predictor_grpc, request)
    assert plain[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert _grpc_outcome(ray_stack.predictor_grpc, request) == plain


@pytest.mark.parametrize("case", sorted(CASES))
def test_transformer_bad_input_cases_through_the_ray_predictor(ray_stack, case):
    """tests/component/test_bad_inputs.py's table, answered the same with Ray behind the transformer."""
    method, url, kwargs, status = CASES[case]
    r = httpx.request(method, ray_stack.transformer_url + url, timeout=60, **kwargs)
    assert r.status_code == status, f"{case}: {r.status_code} {r.text[:300]}"
    assert isinstance(r.json().get("error"), str)
    assert "Traceback" not in r.text and "Ray" not in r.text


def test_a_model_repository_with_ray_replicas_is_refused_before_ray_starts(tmp_path):
    repo = tmp_path / "repo"
    for name in ("a", "b"):
        model(repo / name)
    proc = subprocess.run([sys.executable, "-m", "predictor", "--model_dir", str(repo), "--ray_replicas", "2",
                           "--http_port", "0", "--grpc_port", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    log = proc.stdout + proc.stderr
    lines = [ln for ln in log.splitlines() if "model load failed" in ln]
    assert len(lines) == 1 and "a model repository (a, b) cannot be served with --ray_replicas" in lines[0], log
    assert "Traceback" not in log and "Ray 2." not in log  # refused before Ray started
