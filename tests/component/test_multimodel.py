"""The model decides, the transformer follows: a model repository served by real processes, models
of different input sizes, and a predictor replaced under a running transformer.

Two models cost one download: ``tiny`` is the official yolov3-tiny; ``tiny608`` is the same weights
with the cfg at ``width=height=608`` (a different model version and input size).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest

from yolo_devtools.matching import match_reference
from tests.servers import IMAGES, ServerProcess, free_ports, predictor, transformer
from transformer import geometry, imaging
from yolo_contract import model_info as MI
from yolo_contract import tensors as T

pytestmark = [pytest.mark.component, pytest.mark.model]

DOG = (IMAGES / "dog.jpg").read_bytes()
NAMES = ("tiny", "tiny608", "yolov3")  # yolov3: the injected --model_name, an alias of "tiny"


def _model_dir(root, tiny_model_dir, size: int | None):
    root.mkdir(parents=True)
    for f in tiny_model_dir.iterdir():
        if f.suffix == ".cfg" and size:
            text = f.read_text()
            text = text.replace("width=416", f"width={size}").replace("height=416", f"height={size}")
            assert f"width={size}" in text and f"height={size}" in text
            (root / f.name).write_text(text)
        else:
            (root / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="module")
def repo_dir(tiny_model_dir, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    _model_dir(repo / "tiny", tiny_model_dir, None)
    _model_dir(repo / "tiny608", tiny_model_dir, 608)
    return repo


def _wait_all_ready(server: ServerProcess, names=NAMES, timeout: float = 60.0) -> None:
    for name in names:
        server.wait_ready(f"/v2/models/{name}/ready", timeout)


@pytest.fixture(scope="module")
def repo_stack(repo_dir, tmp_path_factory):
    """One predictor serving the repository, one transformer in front (yolo_devtools.stack)."""
    from yolo_devtools.stack import LocalStack

    with LocalStack(repo_dir, predictor_args=["--threads", "1"], log_dir=str(tmp_path_factory.mktemp("repo-stack"))) as stack:
        for server in (stack.predictor, stack.transformer):
            _wait_all_ready(server)
        yield stack.predictor, stack.transformer


def _metadata(server: ServerProcess, name: str) -> dict:
    r = httpx.get(f"{server.url}/v2/models/{name}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


async def _grpc(target: str, request: InferRequest):
    async with InferenceGRPCClient(target, timeout=60, retries=0) as c:
        return await c.infer(request)


def _direct_detections(grpc_target: str, name: str, size: int, confidence: float) -> list:
    """What the transformer must answer, computed here: Darknet letterbox at ``size`` (the test's
    own geometry call), the predictor on that tensor, boxes mapped back."""
    rgb = imaging.decode_image(DOG)
    tensor, lb = geometry.letterbox_uint8(rgb, size, size)
    inp = InferInput(T.INPUT_IMAGES, [1, 3, size, size], "UINT8")
    inp.set_data_from_numpy(tensor[None], binary_data=True)
    res = asyncio.run(_grpc(grpc_target, InferRequest(model_name=name, infer_inputs=[inp],
                                                      parameters={"confidence": str(confidence)})))
    out = {o.name: o.as_numpy() for o in res.outputs}
    n = int(out[T.OUTPUT_COUNTS][0])
    rows = out[T.OUTPUT_DETECTIONS][0, :n]
    boxes = geometry.unletterbox_boxes(rows[:, :4], lb)
    return [[label.decode(), float(r[4]), [float(v) for v in box]]
            for label, r, box in zip(out[T.OUTPUT_LABELS][0, :n], rows, boxes)]


def _triples(doc: dict) -> list:
    return [[d["class"], d["confidence"], [d["x"], d["y"], d["width"], d["height"]]] for d in doc["detections"]]


def _same(got: list, want: list) -> None:
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], atol=2e-6)
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], atol=2e-3)


# ------------------------------------------------------------------------------------------------
# The predictor publishes each model


def test_predictor_serves_every_model_of_the_repository_with_its_own_info(repo_stack):
    pred, _ = repo_stack
    meta = {name: _metadata(pred, name) for name in NAMES}
    info = {name: MI.ModelInfo.from_dict(m["parameters"]) for name, m in meta.items()}
    assert info["tiny"].size == (416, 416) and info["tiny608"].size == (608, 608)
    assert meta["tiny608"]["inputs"][0] == {"name": "images", "datatype": "UINT8", "shape": [-1, 3, 608, 608]}
    assert info["tiny"].version != info["tiny608"].version  # the cfg bytes differ
    for name in NAMES:
        assert meta[name]["versions"] == [info[name].version]
        assert meta[name]["platform"] == "darknet-pjreddie"
        assert info[name].models == NAMES and info[name].preprocess == "letterbox"
        assert len(info[name].classes) == 80 and info[name].classes[:2] == ("person", "bicycle")
    assert info["yolov3"] == info["tiny"]  # the alias is the default (first) model
    listed = httpx.get(f"{pred.url}/v2/models", timeout=10).json()["models"]
    assert sorted(listed) == sorted(NAMES)


def test_describe_over_grpc_and_versions_on_every_answer(repo_stack):
    pred, _ = repo_stack
    res = asyncio.run(_grpc(pred.grpc_target, InferRequest(model_name="tiny608", infer_inputs=[],
                                                           parameters=MI.describe_parameters())))
    info = MI.read_describe_output({o.name: o.as_numpy() for o in res.outputs})
    assert info == MI.ModelInfo.from_dict(_metadata(pred, "tiny608")["parameters"])
    assert res.model_version == info.version
    x = np.full((1, 3, 608, 608), 128, np.uint8)
    inp = InferInput(T.INPUT_IMAGES, list(x.shape), "UINT8")
    inp.set_data_from_numpy(x, binary_data=True)
    res = asyncio.run(_grpc(pred.grpc_target, InferRequest(model_name="tiny608", infer_inputs=[inp])))
    assert res.model_version == info.version
    assert T.plain_value(res.parameters[T.MODEL_VERSION_PARAMETER]) == info.version


def test_a_request_prepared_for_another_model_is_refused_with_the_model_info(repo_stack):
    pred, _ = repo_stack
    want = MI.ModelInfo.from_dict(_metadata(pred, "tiny608")["parameters"])
    x = np.full((1, 3, 416, 416), 128, np.uint8)
    # REST: 409 with the ModelInfo as the (client-safe) error message
    body = {"inputs": [{"name": "images", "shape": [1, 3, 416, 416], "datatype": "UINT8", "data": x.ravel().tolist()}],
            "parameters": {"preprocess": "letterbox"}}
    r = httpx.post(f"{pred.url}/v2/models/tiny608/infer", json=body, timeout=60)
    assert r.status_code == 409, r.text
    assert MI.read_mismatch_message(r.json()["error"]) == want
    # gRPC: FAILED_PRECONDITION, also for the right size with the wrong mode
    import grpc

    for shape, mode in (((1, 3, 416, 416), "letterbox"), ((1, 3, 608, 608), "resize")):
        x = np.full(shape, 128, np.uint8)
        inp = InferInput(T.INPUT_IMAGES, list(shape), "UINT8")
        inp.set_data_from_numpy(x, binary_data=True)
        with pytest.raises(grpc.RpcError) as e:
            asyncio.run(_grpc(pred.grpc_target, InferRequest(model_name="tiny608", infer_inputs=[inp],
                                                             parameters={"preprocess": mode})))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert MI.read_mismatch_message(e.value.details()) == want
    # without "preprocess" (a hand-made tensor) any multiple of 32 is still accepted
    r = httpx.post(f"{pred.url}/v2/models/tiny608/infer", json={"inputs": body["inputs"]}, timeout=60)
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------------------------
# The transformer follows


def test_transformer_serves_the_same_names_each_at_its_models_size(repo_stack, references):
    pred, trans = repo_stack
    with httpx.Client(base_url=trans.url, timeout=60) as c:
        got = {}
        for name in NAMES:
            r = c.post(f"/v1/models/{name}:predict?confidence=0.25", content=DOG, headers={"content-type": "image/jpeg"})
            assert r.status_code == 200, r.text
            got[name] = _triples(r.json()["predictions"][0])
    # tiny (and its alias) at 416: Darknet's own detections
    match_reference(got["tiny"], references["0.25"]["images"]["dog.jpg"])
    _same(got["yolov3"], got["tiny"])
    # tiny608 at 608, with no transformer flag: what the predictor gives for a 608 letterbox
    want608 = _direct_detections(pred.grpc_target, "tiny608", 608, 0.25)
    _same(got["tiny608"], want608)
    assert got["tiny608"] != got["tiny"]  # the two sizes really answer differently


def test_transformer_v2_and_grpc_reach_each_model_and_name_its_version(repo_stack):
    pred, trans = repo_stack
    versions = {n: _metadata(pred, n)["versions"][0] for n in NAMES}
    want608 = _direct_detections(pred.grpc_target, "tiny608", 608, 0.5)
    body = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(DOG).decode()]}]}
    r = httpx.post(f"{trans.url}/v2/models/tiny608/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == versions["tiny608"]
    _same(_triples(json.loads(r.json()["outputs"][0]["data"][0])), want608)

    raw = np.array([DOG], dtype=object)
    for name in NAMES:
        inp = InferInput("images", [1], "BYTES")
        inp.set_data_from_numpy(raw, binary_data=True)
        res = asyncio.run(_grpc(trans.grpc_target, InferRequest(model_name=name, infer_inputs=[inp])))
        assert res.model_version == versions[name]
        doc = json.loads(res.outputs[0].as_numpy()[0])
        if name == "tiny608":
            _same(_triples(doc), want608)


def test_transformer_metadata_describes_its_api_and_lists_the_models_classes(repo_stack):
    pred, trans = repo_stack
    for name in NAMES:
        meta = _metadata(trans, name)
        assert meta["inputs"] == [{"name": "images", "datatype": "BYTES", "shape": [-1]}]
        assert meta["outputs"] == [{"name": "detections", "datatype": "BYTES", "shape": [-1]}]
        assert meta["parameters"] == _metadata(pred, name)["parameters"]
        assert meta["versions"] == [meta["parameters"]["version"]]
    assert _metadata(trans, "tiny608")["parameters"]["input_width"] == 608
    assert "dog" in _metadata(trans, "tiny")["parameters"]["classes"]
    r = httpx.get(f"{trans.url}/v2/models/nope", timeout=10)
    assert r.status_code == 404 and "error" in r.json()


# ------------------------------------------------------------------------------------------------
# A new predictor revision under a running transformer


def test_predictor_replaced_by_another_model_the_first_request_still_answers_right(repo_dir, tmp_path):
    """The transformer cached yolov3 at 416; the predictor comes back on the same port serving a
    608 model. The first request is refused (FAILED_PRECONDITION), prepared again at 608 and
    answered correctly; nothing is lost."""
    ports = free_ports(2)
    pred = predictor(tmp_path, repo_dir / "tiny", "--threads", "1", ports=ports).start()
    trans = None
    try:
        pred.wait_ready("/v2/models/yolov3/ready")
        trans = transformer(tmp_path, pred.grpc_target).start().wait_ready("/v2/models/yolov3/ready")
        before = _metadata(trans, "yolov3")["parameters"]
        assert before["input_width"] == 416
        r = httpx.post(f"{trans.url}/v1/models/yolov3:predict", content=DOG, headers={"content-type": "image/jpeg"}, timeout=60)
        assert r.status_code == 200 and "retry;dur=" not in r.headers["server-timing"]

        pred.stop()
        pred = predictor(tmp_path, repo_dir / "tiny608", "--threads", "1", ports=ports).start()
        pred.wait_ready("/v2/models/yolov3/ready")
        after = _metadata(pred, "yolov3")["parameters"]
        assert after["version"] != before["version"] and after["input_width"] == 608
        want = _direct_detections(pred.grpc_target, "yolov3", 608, 0.5)

        deadline = time.monotonic() + 30
        while True:  # the transformer's channel reconnects (UNAVAILABLE meanwhile is a 503)
            r = httpx.post(f"{trans.url}/v1/models/yolov3:predict", content=DOG,
                           headers={"content-type": "image/jpeg"}, timeout=60)
            if r.status_code != 503:
                break
            assert time.monotonic() < deadline, r.text
            time.sleep(0.1)
        assert r.status_code == 200, r.text
        assert "retry;dur=" in r.headers["server-timing"]  # it went through the refusal
        _same(_triples(r.json()["predictions"][0]), want)
        assert _metadata(trans, "yolov3")["parameters"] == after
        r = httpx.post(f"{trans.url}/v1/models/yolov3:predict", content=DOG, headers={"content-type": "image/jpeg"}, timeout=60)
        assert r.status_code == 200 and "retry;dur=" not in r.headers["server-timing"]
    finally:
        if trans:
            trans.stop()
        pred.stop()


def test_a_broken_model_in_the_repository_refuses_the_whole_repository(repo_dir, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "good").symlink_to(repo_dir / "tiny")
    bad = _model_dir(repo / "z-broken", repo_dir / "tiny", None)  # loads after "good"
    (bad / "coco.names").unlink()
    (bad / "coco.names").write_text("just-one-class\n")
    p = predictor(tmp_path, repo).start()
    try:
        rc = p.proc.wait(120)
    finally:
        p.stop()
    assert rc == 1
    log = p.log()
    assert "Starting uvicorn" not in log and "Registering model" not in log  # never served, not even "good"
    errors = [ln for ln in log.splitlines() if "model load failed" in ln]
    assert len(errors) == 1 and "1 class names" in errors[0], log
