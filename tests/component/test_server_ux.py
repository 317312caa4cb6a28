"""A new user's first hour with the servers themselves (issue 12, server side), on the session stack.

Each test pins one problem found by using the servers as a newcomer would: a class typo answered
with a count and no name, misspelt parameters silently ignored, a 50 MP phone photo refused, the
local stack reachable from the network, no usable API page, and a console that prints several
lines (KServe trace lines, a deprecation warning) for every request.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
import uuid
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import IMAGES

pytestmark = [pytest.mark.component, pytest.mark.model]

PREDICT = "/v1/models/yolov3:predict"
INFER = "/v2/models/yolov3/infer"
DOG = (IMAGES / "dog.jpg").read_bytes()
JPEG = {"content-type": "image/jpeg"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decoded_images(url: str) -> float:
    """How many images the transformer has decoded (``yolo_input_image_pixels`` observations)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "yolo_input_image_pixels_count")


@pytest.fixture()
def client(live_stack):
    with httpx.Client(base_url=live_stack.transformer_url, timeout=120) as c:
        yield c


# -- 5. a class typo names itself and what was meant; ids and any case work ----------------------


def test_a_class_typo_is_named_with_the_closest_classes_before_any_decoding(live_stack, client):
    decoded = decoded_images(live_stack.transformer_url)
    r = client.post(f"{PREDICT}?class_filter=dgo,trafic%20light", content=DOG, headers=JPEG)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert '"dgo" (did you mean "dog"?)' in error and '"trafic light" (did you mean "traffic light"?)' in error
    assert "80 classes" in error and "GET /v2/models/yolov3" in error
    # refused against the model's classes in the transformer, before any image was decoded
    assert decoded_images(live_stack.transformer_url) == decoded

    # names in any case and class ids (ints or digit strings) select the same classes
    want = client.post(f"{PREDICT}?class_filter=dog,car", content=DOG, headers=JPEG).json()
    for query in ("Dog,CAR", "16,2", "dog,2"):
        r = client.post(f"{PREDICT}?class_filter={query}", content=DOG, headers=JPEG)
        assert r.status_code == 200, (query, r.text)
        assert r.json() == want
    r = client.post(PREDICT, json={"instances": [b64(DOG)], "parameters": {"class_filter": [16, "Car"]}})
    assert r.status_code == 200 and r.json() == want
    assert {d["class"] for d in want["predictions"][0]["detections"]} == {"dog", "car"}

    r = client.post(PREDICT, json={"instances": [b64(DOG)], "parameters": {"class_filter": [80]}})
    assert r.status_code == 400 and "class id 80 out of range" in r.json()["error"], r.text


def test_the_predictor_applies_the_same_class_rules(live_stack):
    """The predictor stays the authority (hand-made tensors never pass the transformer)."""
    tensor = [128] * (3 * 32 * 32)

    def infer(class_filter):
        body = {"inputs": [{"name": "images", "shape": [1, 3, 32, 32], "datatype": "UINT8", "data": tensor}],
                "parameters": {"class_filter": class_filter, "confidence": 0.9}}
        return httpx.post(live_stack.predictor_url + INFER, json=body, timeout=60)

    assert infer("Dog,16").status_code == 200
    r = infer("dgo")
    assert r.status_code == 400 and '"dgo" (did you mean "dog"?)' in r.json()["error"]


def test_the_transformers_metadata_lists_the_classes(live_stack):
    doc = httpx.get(live_stack.transformer_url + "/v2/models/yolov3", timeout=10).json()
    classes = doc["parameters"]["classes"]
    assert len(classes) == 80 and classes[16] == "dog"


# -- 6. misspelt parameters are refused, naming them --------------------------------------------


def test_misspelt_parameters_are_refused_by_name_on_every_api(live_stack, client):
    r = client.post(f"{PREDICT}?confidnce=0.9", content=DOG, headers=JPEG)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert '"confidnce" (did you mean "confidence"?)' in error and "valid parameters: confidence" in error

    r = client.post(PREDICT, json={"instances": [b64(DOG)], "parameters": {"max_detection": 3}})
    assert r.status_code == 400 and '"max_detection" (did you mean "max_detections"?)' in r.json()["error"]

    v2 = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64(DOG)]}]}
    r = client.post(INFER, json={**v2, "parameters": {"iou": 0.5}})
    assert r.status_code == 400 and '"iou" (did you mean "iou_threshold"?)' in r.json()["error"]
    # what clients add on their own (the binary extension) is not refused
    r = client.post(INFER, json={**v2, "parameters": {"binary_data_output": False, "confidence": 0.5}})
    assert r.status_code == 200, r.text

    async def grpc_call():
        inp = InferInput("images", [1], "BYTES")
        inp.set_data_from_numpy(np.array([DOG], dtype=object), binary_data=True)
        async with InferenceGRPCClient(live_stack.transformer_grpc, timeout=60, retries=0) as c:
            return await c.infer(InferRequest(model_name="yolov3", infer_inputs=[inp], parameters={"clas_filter": "dog"}))

    with pytest.raises(grpc.RpcError) as e:
        asyncio.run(grpc_call())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and '"clas_filter"' in e.value.details()

    # the predictor's own API: its internal parameters are accepted, the public-only ones are not
    tensor = {"inputs": [{"name": "images", "shape": [1, 3, 32, 32], "datatype": "UINT8", "data": [128] * 3072}]}
    ok = httpx.post(live_stack.predictor_url + INFER, json={**tensor, "parameters": {"preprocess": "letterbox"}}, timeout=60)
    assert ok.status_code in (200, 409), ok.text  # 409: a 32x32 tensor is not this model's 416x416
    r = httpx.post(live_stack.predictor_url + INFER, json={**tensor, "parameters": {"format": "seed"}}, timeout=60)
    assert r.status_code == 400 and '"format"' in r.json()["error"], r.text


# -- 7. a 50 MP phone photo is answered; the bomb still is not ------------------------------------


def phone_photo(size=(8160, 6144), min_bytes=22 * 1024 * 1024) -> bytes:
    """A 50 MP JPEG of a phone's size and file size (flat pixels, padded after the end marker)."""
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    return data + b"\0" * max(0, min_bytes - len(data))


def test_a_50_megapixel_phone_photo_is_answered(client):
    photo = phone_photo()
    r = client.post(PREDICT, content=photo, headers=JPEG)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["predictions"][0]["image"] == {"width": 8160, "height": 6144}
    # the decompression bomb (a 20000 x 20000 PNG header) is still refused before decoding
    from tests import imagegen

    r = client.post(PREDICT, content=imagegen.huge_png_header(), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "error" in r.json()


# -- 10. the local stack listens on loopback only -------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state != "0A" or int(hexport, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(addr)
            if len(raw) == 4:
                found.add(".".join(str(b) for b in raw[::-1]))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                if words[:12] == b"\0" * 10 + b"\xff\xff":
                    found.add(".".join(str(b) for b in words[12:]))  # IPv4-mapped
                else:
                    found.add(words.hex())
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net")
def test_the_local_stack_listens_on_loopback_only(live_stack):
    for server in (live_stack.transformer, live_stack.predictor):
        for port in (server.http_port, server.grpc_port):
            assert listening_addresses(port) == {"127.0.0.1"}, (server.module, port, listening_addresses(port))


def test_serve_binds_loopback_unless_told_otherwise(tmp_path):
    from sdk_client.cli import build_parser
    from yolo_devtools.stack import predictor_process

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"
    assert build_parser().parse_args(["serve", "--host", "0.0.0.0"]).host == "0.0.0.0"
    cmd = predictor_process("models", tmp_path, host=args.host, ports=(1, 2)).command
    assert cmd[cmd.index("--http_host") + 1] == cmd[cmd.index("--grpc_host") + 1] == "127.0.0.1"


# -- 11. an API page that works offline, with bodies to try ---------------------------------------


@pytest.mark.parametrize("component", ["transformer", "predictor"])
def test_the_api_page_works_offline_and_its_examples_work(live_stack, component):
    url = getattr(live_stack, component).url
    page = httpx.get(url + "/docs", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "://" not in page.text  # no script, style or font from elsewhere
    assert not re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)=", page.text)
    assert "/openapi.json" in page.text

    spec = httpx.get(url + "/openapi.json", timeout=10).json()
    ops = {"/v2/models/{model_name}/infer": "application/json"}
    if component == "transformer":
        ops["/v1/models/{model_name}:predict"] = "application/json"
        predict = spec["paths"]["/v1/models/{model_name}:predict"]["post"]
        assert {"image/jpeg", "multipart/form-data"} <= set(predict["requestBody"]["content"])
        assert {"confidence", "class_filter"} <= {p["name"] for p in predict["parameters"] if p["in"] == "query"}
    tried = 0
    for path, media in ops.items():
        examples = spec["paths"][path]["post"]["requestBody"]["content"][media]["examples"]
        assert examples
        for name, example in examples.items():
            r = httpx.post(url + path.replace("{model_name}", "yolov3"), json=example["value"], timeout=60)
            assert r.status_code == 200, (component, path, name, r.text[:300])
            tried += 1
    assert tried >= 2


# -- 13. one console line per request at most ---------------------------------------------------


def test_one_log_line_per_request_at_most(live_stack, client):
    trans, pred = live_stack.transformer, live_stack.predictor
    before_t, before_p = len(trans.log().splitlines()), len(pred.log().splitlines())
    ids = [f"quiet-{uuid.uuid4().hex[:8]}-{i}" for i in range(5)]
    v2 = {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [b64(DOG)]}]}
    client.post(PREDICT, content=DOG, headers={**JPEG, "x-request-id": ids[0]})
    client.post(PREDICT, json={"instances": [b64(DOG)]}, headers={"x-request-id": ids[1]})
    client.post(INFER, json=v2, headers={"x-request-id": ids[2]})
    client.post("/v1/models/nope:predict", content=DOG, headers={**JPEG, "x-request-id": ids[3]})  # 404
    httpx.get(pred.url + "/v2/models/yolov3", headers={"x-request-id": ids[4]}, timeout=10)
    deadline = time.monotonic() + 30  # safety net; we wait for the access lines themselves
    while not (all(i in trans.log() for i in ids[:4]) and ids[4] in pred.log()) and time.monotonic() < deadline:
        time.sleep(0.05)
    new_t = trans.log().splitlines()[before_t:]
    new_p = pred.log().splitlines()[before_p:]
    assert len(new_t) == 4 and [sum(i in line for line in new_t) for i in ids[:4]] == [1] * 4, "\n".join(new_t)
    # the predictor served three gRPC calls and one REST request: one line
    assert len(new_p) == 1 and ids[4] in new_p[0], "\n".join(new_p)
    assert json.dumps(new_t).count("Warning") == 0
