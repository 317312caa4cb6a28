"""reliability.md §1 against the real transformer: each bad input gets its 4xx + {"error"}, the
process survives (same PID, ready), and a valid request succeeds afterwards."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests import imagegen
from transformer.settings import TransformerSettings

pytestmark = [pytest.mark.component, pytest.mark.model]

PREDICT = "/v1/models/yolov3:predict"
INFER = "/v2/models/yolov3/infer"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v1(*images: bytes) -> dict:
    return {"json": {"instances": [{"image_bytes": {"b64": b64(i)}} for i in images]}}


def raw(data: bytes, ctype: str | None = "image/jpeg") -> dict:
    return {"content": data, "headers": {"content-type": ctype} if ctype else {}}


def v2(data: list, shape=None, datatype="BYTES", name="images") -> dict:
    return {"json": {"inputs": [{"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}]}}


TRUNCATED = imagegen.dog_jpeg()[:60_000]
#: the transformer's default body cap (the session stack runs with the defaults)
MAX_BODY = TransformerSettings().max_body_bytes

CASES = {
    # row 1: empty body, non-JSON
    "empty_json": ("POST", PREDICT, {"content": b"", "headers": {"content-type": "application/json"}}, 400),
    "not_json": ("POST", PREDICT, {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
    "empty_raw_image": ("POST", PREDICT, raw(b""), 400),
    # row 2: missing instances / wrong top-level type
    "no_instances": ("POST", PREDICT, {"json": {"images": []}}, 400),
    "top_level_array": ("POST", PREDICT, {"json": [1, 2]}, 400),
    "instances_not_list": ("POST", PREDICT, {"json": {"instances": 3}}, 400),
    "empty_instances": ("POST", PREDICT, {"json": {"instances": []}}, 400),
    "bad_instance": ("POST", PREDICT, {"json": {"instances": [{"url": "http://x"}]}}, 400),
    "bad_parameters": ("POST", PREDICT, {"json": {"instances": [b64(imagegen.dog_jpeg())], "parameters": {"confidence": 7}}}, 400),
    "bad_format": ("POST", PREDICT, {"json": {"instances": [b64(imagegen.dog_jpeg())], "parameters": {"format": "xml"}}}, 400),
    "unknown_class": ("POST", f"{PREDICT}?class_filter=unicorn", raw(imagegen.dog_jpeg()), 400),
    "class_id_out_of_range": ("POST", PREDICT, {"json": {"instances": [b64(imagegen.dog_jpeg())], "parameters": {"class_filter": [-1]}}}, 400),
    "class_filter_object": ("POST", PREDICT, {"json": {"instances": [b64(imagegen.dog_jpeg())], "parameters": {"class_filter": {"a": 1}}}}, 400),
    "unknown_parameter": ("POST", f"{PREDICT}?confidnce=0.9", raw(imagegen.dog_jpeg()), 400),
    "unknown_json_parameter": ("POST", PREDICT, {"json": {"instances": [b64(imagegen.dog_jpeg())], "parameters": {"conf": 0.9}}}, 400),
    "bad_clip": ("POST", f"{PREDICT}?clip=maybe", raw(imagegen.dog_jpeg()), 400),
    # rows 3-5: v2 shape / count / datatype
    "v2_missing_inputs": ("POST", INFER, {"json": {"outputs": []}}, 400),
    "v2_wrong_name": ("POST", INFER, v2([b64(imagegen.dog_jpeg())], name="pixels"), 400),
    "v2_wrong_datatype": ("POST", INFER, v2([1, 2, 3], datatype="FP32"), 400),
    "v2_count_mismatch": ("POST", INFER, v2([b64(imagegen.dog_jpeg())], shape=[2]), 400),
    "v2_unknown_datatype": ("POST", INFER, v2(["a"], datatype="WEIRD"), 400),
    "v2_unknown_parameter": ("POST", INFER, {"json": {**v2([b64(imagegen.dog_jpeg())])["json"], "parameters": {"confidnce": 0.9}}}, 400),
    # row 6: base64 that is not base64
    "bad_base64": ("POST", PREDICT, {"json": {"instances": [{"b64": "@@@not-base64@@@"}]}}, 400),
    "v2_bad_base64": ("POST", INFER, v2(["%%%"]), 400),
    # row 7: not an image
    "text_as_image": ("POST", PREDICT, raw(b"hello world, not an image"), 400),
    "zeros_as_image": ("POST", PREDICT, v1(b"\0" * 1000), 400),
    "svg": ("POST", PREDICT, raw(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "image/svg+xml"), 400),
    # row 8: truncated JPEG
    "truncated_jpeg": ("POST", PREDICT, raw(TRUNCATED), 400),
    # row 15: decompression bomb header
    "bomb": ("POST", PREDICT, raw(imagegen.huge_png_header(), "image/png"), 413),
    # row 16: formats outside the allow-list
    "tiff": ("POST", PREDICT, raw(imagegen.tiff(), "image/tiff"), 415),
    "pdf": ("POST", PREDICT, raw(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "application/octet-stream"), 415),
    "eps": ("POST", PREDICT, raw(b"%!PS-Adobe-3.0 EPSF-3.0\n", "application/octet-stream"), 415),
    # row 18: body over the cap
    "huge_body": ("POST", PREDICT, raw(b"\xff" * (MAX_BODY + 1)), 413),
    # row 19: too many images
    "too_many_images": ("POST", PREDICT, v1(*[imagegen.dog_jpeg()] * 9), 400),
    # row 20: unknown model
    "unknown_model": ("POST", "/v1/models/nope:predict", raw(imagegen.dog_jpeg()), 404),
    # row 21: wrong method / content type
    "wrong_method": ("GET", PREDICT, {}, 405),
    "text_plain": ("POST", PREDICT, raw(b"hello", "text/plain"), 415),
    "xml": ("POST", PREDICT, raw(b"<a/>", "application/xml"), 415),
    # row 24: model repository
    "unload": ("POST", "/v2/repository/models/yolov3/unload", {}, 403),
    "load": ("POST", "/v2/repository/models/yolov3/load", {}, 403),
}


@pytest.fixture()
def client(live_stack):
    with httpx.Client(base_url=live_stack.transformer_url, timeout=60) as c:
        yield c


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_its_4xx_and_the_server_survives(live_stack, client, case):
    method, url, kwargs, status = CASES[case]
    pid = live_stack.transformer.proc.pid
    r = client.request(method, url, **kwargs)
    assert r.status_code == status, f"{case}: {r.status_code} {r.text[:300]}"
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert len(r.text) < 2000  # never echoes request data back
    assert "Traceback" not in r.text and "0x" not in r.text
    assert live_stack.transformer.proc.poll() is None and live_stack.transformer.proc.pid == pid
    assert client.get("/v2/models/yolov3/ready").status_code == 200
    ok = client.post(PREDICT, **raw(imagegen.dog_jpeg()))
    assert ok.status_code == 200 and len(ok.json()["predictions"][0]["detections"]) == 5


GOOD = {
    # rows 9-14, 17: odd but valid images are answered 200
    "rgba_png": (imagegen.rgba_png(), "image/png", (64, 48)),
    "png16": (imagegen.png16(), "image/png", (40, 30)),
    "cmyk_jpeg": (imagegen.cmyk_jpeg(), "image/jpeg", (40, 30)),
    "exif_rotated": (imagegen.exif_rotated_jpeg(), "image/jpeg", (40, 80)),  # display orientation
    "animated_gif": (imagegen.animated_gif(), "image/gif", (32, 32)),
    "one_pixel": (imagegen.encode(imagegen.Image.new("RGB", (1, 1)), "PNG"), "image/png", (1, 1)),
    "polyglot_jpeg_zip": (imagegen.dog_jpeg() + b"PK\x03\x04" + b"\0" * 100, "image/jpeg", (768, 576)),
    "octet_stream": (imagegen.dog_jpeg(), "application/octet-stream", (768, 576)),
    "no_content_type": (imagegen.dog_jpeg(), None, (768, 576)),
}


@pytest.mark.parametrize("case", sorted(GOOD))
def test_odd_but_valid_images_are_answered(client, case):
    data, ctype, (w, h) = GOOD[case]
    r = client.post(PREDICT, **raw(data, ctype))
    assert r.status_code == 200, r.text
    doc = r.json()["predictions"][0]
    assert doc["image"] == {"width": w, "height": h}
    if case in ("one_pixel", "rgba_png"):
        assert doc["detections"] == []


def test_request_data_never_reaches_logs_or_error_bodies(live_stack, client):
    """reliability.md §3 log hygiene: a canary string inside bad payloads appears in no log line."""
    canary = "CANARYc4n4ry0123456789"
    canary_b64 = base64.b64encode(canary.encode() * 4).decode()
    payloads = [
        raw(canary.encode() * 50),  # not an image
        {"json": {"instances": [{"b64": canary_b64}]}},  # valid base64, not an image
        {"json": {"instances": [canary]}},  # invalid base64
        {"content": b"{" + canary.encode(), "headers": {"content-type": "application/json"}},
        v2([canary_b64]),
        v2([canary], datatype="FP32"),
        {"json": {"instances": [b64(imagegen.dog_jpeg())], "parameters": {"class_filter": [canary]}}},
    ]
    for kwargs in payloads:
        r = client.post(PREDICT if "inputs" not in str(kwargs.get("json", "")) else INFER, **kwargs)
        assert 400 <= r.status_code < 500
        assert canary not in r.text and canary_b64[:20] not in r.text
    logs = live_stack.transformer.log() + live_stack.predictor.log()
    assert canary not in logs and canary_b64[:20] not in logs


def test_chunked_body_over_the_cap_is_cut_off_with_413(live_stack, client):
    def chunks():  # no Content-Length: the streaming byte count must catch it
        for _ in range(MAX_BODY // (1024 * 1024) + 1):
            yield b"\xff" * (1024 * 1024)

    r = client.post(PREDICT, content=chunks(), headers={"content-type": "image/jpeg"})
    assert r.status_code == 413 and "error" in r.json()
    assert client.post(PREDICT, **raw(imagegen.dog_jpeg())).status_code == 200
