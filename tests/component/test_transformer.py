"""Real predictor + transformer processes: every input form, Darknet parity, formats, bad input."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest

from yolo_devtools.matching import match_reference
from tests.servers import IMAGE_NAMES, IMAGES

pytestmark = [pytest.mark.component, pytest.mark.model]

PREDICT = "/v1/models/yolov3:predict"
INFER = "/v2/models/yolov3/infer"


def b64(name: str) -> str:
    return base64.b64encode((IMAGES / name).read_bytes()).decode()


def triples(doc: dict) -> list:
    return [[d["class"], d["confidence"], [d["x"], d["y"], d["width"], d["height"]]] for d in doc["detections"]]


def assert_parity(docs: list[dict], names, references, thresh: str):
    assert len(docs) == len(names)
    for doc, name in zip(docs, names):
        w, h = references[thresh]["image_sizes"][name]
        assert doc["image"] == {"width": w, "height": h}
        confs = [d["confidence"] for d in doc["detections"]]
        assert confs == sorted(confs, reverse=True)
        match_reference(triples(doc), references[thresh]["images"][name], conf_tol=0.02, iou_min=0.95)


@pytest.fixture()
def client(live_stack):
    with httpx.Client(base_url=live_stack.transformer_url, timeout=60) as c:
        yield c


@pytest.mark.parametrize("thresh", ["0.5", "0.25"])
def test_v1_json_batch_of_all_images(client, references, thresh):
    forms = [{"image_bytes": {"b64": b64(IMAGE_NAMES[0])}}, {"b64": b64(IMAGE_NAMES[1])}, b64(IMAGE_NAMES[2]),
             {"b64": b64(IMAGE_NAMES[3])}, b64(IMAGE_NAMES[4])]
    r = client.post(PREDICT, json={"instances": forms, "parameters": {"confidence": float(thresh)}})
    assert r.status_code == 200, r.text
    assert_parity(r.json()["predictions"], IMAGE_NAMES, references, thresh)
    assert r.headers["x-request-id"]
    timing = r.headers["server-timing"]
    for stage in ("decode", "letterbox", "transport", "predictor-inference", "predictor-nms", "postprocess"):
        assert f"{stage};dur=" in timing


@pytest.mark.parametrize("name", IMAGE_NAMES)
@pytest.mark.parametrize("thresh", ["0.5", "0.25"])
def test_v1_raw_image_body(client, references, name, thresh):
    r = client.post(f"{PREDICT}?confidence={thresh}", content=(IMAGES / name).read_bytes(),
                    headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert_parity(r.json()["predictions"], [name], references, thresh)


def test_v1_multipart_upload_like_the_tutorial_client(client, references):
    r = client.post(PREDICT, files={"image": ("dog.jpg", (IMAGES / "dog.jpg").read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert_parity(r.json()["predictions"], ["dog.jpg"], references, "0.5")


@pytest.mark.parametrize("thresh", ["0.5", "0.25"])
def test_v2_json_bytes_input(client, references, thresh):
    body = {
        "inputs": [{"name": "images", "shape": [5], "datatype": "BYTES", "data": [b64(n) for n in IMAGE_NAMES]}],
        "parameters": {"confidence": float(thresh)},
    }
    r = client.post(INFER, json=body)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["name"] == "detections" and out["datatype"] == "BYTES" and out["shape"] == [5]
    assert_parity([json.loads(d) for d in out["data"]], IMAGE_NAMES, references, thresh)


def test_v2_binary_extension(client, references):
    raw = [(IMAGES / n).read_bytes() for n in IMAGE_NAMES]
    blob = b"".join(len(b).to_bytes(4, "little") + b for b in raw)
    header = json.dumps({
        "inputs": [{"name": "images", "shape": [5], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}],
    }).encode()
    r = client.post(INFER, content=header + blob, headers={"inference-header-content-length": str(len(header)),
                                                            "content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert_parity([json.loads(d) for d in out["data"]], IMAGE_NAMES, references, "0.5")


def test_grpc_on_the_transformer(live_stack, references):
    raw = np.array([(IMAGES / n).read_bytes() for n in IMAGE_NAMES], dtype=object)
    inp = InferInput("images", [len(raw)], "BYTES")
    inp.set_data_from_numpy(raw, binary_data=True)

    async def call():
        async with InferenceGRPCClient(live_stack.transformer_grpc, timeout=60, retries=0) as c:
            return await c.infer(InferRequest(model_name="yolov3", infer_inputs=[inp], parameters={"confidence": "0.25"}))

    res = asyncio.run(call())
    docs = [json.loads(d) for d in res.outputs[0].as_numpy()]
    assert_parity(docs, IMAGE_NAMES, references, "0.25")


def test_seed_format_has_the_tutorials_shape_and_values(client, references):
    r = client.post(f"{PREDICT}?format=seed", content=(IMAGES / "bird.jpg").read_bytes(),
                    headers={"content-type": "image/jpeg"})
    assert r.status_code == 200
    doc = r.json()
    assert set(doc) == {"data", "uid", "success"} and doc["success"] == "true"
    int(doc["uid"], 16)
    assert [d[0] for d in doc["data"]] == ["bird"]
    match_reference(doc["data"], references["0.5"]["images"]["bird.jpg"])
    r = client.post(PREDICT, json={"instances": [b64("dog.jpg"), b64("bird.jpg")], "parameters": {"format": "seed"}})
    preds = r.json()["predictions"]
    assert [set(p) for p in preds] == [{"data", "uid", "success"}] * 2 and preds[0]["uid"] != preds[1]["uid"]


def test_request_parameters(client):
    dog = (IMAGES / "dog.jpg").read_bytes()
    r = client.post(PREDICT, json={"instances": [base64.b64encode(dog).decode()],
                                   "parameters": {"confidence": 0.25, "class_filter": ["car", "truck"], "max_detections": 3}})
    dets = r.json()["predictions"][0]["detections"]
    assert len(dets) == 3 and {d["class"] for d in dets} <= {"car", "truck"}
    r = client.post(f"{PREDICT}?class_filter=dog&clip=true", content=dog, headers={"content-type": "image/jpeg"})
    dets = r.json()["predictions"][0]["detections"]
    assert [d["class"] for d in dets] == ["dog"]
    d = dets[0]
    assert d["x"] - d["width"] / 2 >= 0 and d["y"] + d["height"] / 2 <= 576


def test_request_id_is_kept_and_echoed(client):
    r = client.post(PREDICT, content=(IMAGES / "dog.jpg").read_bytes(),
                    headers={"content-type": "image/jpeg", "x-request-id": "my-id-42"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "my-id-42"
