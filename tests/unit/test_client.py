"""sdk_client: DetectionClient / AsyncDetectionClient against httpx.MockTransport, result
conversions, the gRPC path against an in-process fake server, and ``yolo-kserve detect`` against a
fake transformer on loopback."""

from __future__ import annotations

import asyncio
import base64
import http.server
import io
import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from sdk_client import (
    COCO80_TO_91,
    AsyncDetectionClient,
    ConnectionFailedError,
    Detection,
    DetectionClient,
    DetectionError,
    DetectionResult,
    GatewayTimeoutError,
    InvalidRequestError,
    ServerError,
    ServiceUnavailableError,
    annotate,
    coco_detections,
    coco_results,
)
from sdk_client.cli import main
from sdk_client.errors import error_from_response, parse_retry_after
from tests.fakes import LoopbackServer, send_json

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parent.parent / "data"
IMAGES = DATA / "images"
DOG = IMAGES / "dog.jpg"
URL = "http://transformer.test"

DOG_PREDICTION = {
    "image": {"width": 768, "height": 576},
    "detections": [
        {"class": "bicycle", "class_id": 1, "confidence": 0.585, "x": 390.9, "y": 300.5,
         "width": 369.4, "height": 299.3},
        {"class": "dog", "class_id": 16, "confidence": 0.571, "x": 249.1, "y": 352.1,
         "width": 239.8, "height": 330.8},
    ],
}


def v1_ok(request: httpx.Request, prediction: dict | None = None) -> httpx.Response:
    return httpx.Response(
        200,
        json={"predictions": [prediction or DOG_PREDICTION]},
        headers={"x-request-id": request.headers.get("x-request-id", "")},
    )


class Recorder:
    """A MockTransport handler that answers from a script of responses and records requests."""

    def __init__(self, *responses):
        self.script = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        if callable(step):
            return step(request)
        return step

    @property
    def calls(self) -> int:
        return len(self.requests)


def sync_client(handler, **kw) -> DetectionClient:
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.002)
    client = DetectionClient(URL, transport=httpx.MockTransport(handler), **kw)
    client.sleeps = []
    client._sleep = client.sleeps.append  # record delays, do not wait
    return client


def async_client(handler, **kw) -> AsyncDetectionClient:
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("backoff_max", 0.002)
    client = AsyncDetectionClient(URL, transport=httpx.MockTransport(handler), **kw)
    client.sleeps = []

    async def record(delay):
        client.sleeps.append(delay)

    client._sleep = record
    return client


def sent_image(request: httpx.Request) -> bytes:
    body = json.loads(request.content)
    return base64.b64decode(body["instances"][0]["image_bytes"]["b64"])


def rgb_array(h=48, w=64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------
# 200 parsing, all input kinds


@pytest.mark.parametrize("kind", ["path", "str", "bytes", "file", "pil", "numpy"])
def test_detect_parses_typed_result_for_every_input_kind(kind):
    arr = rgb_array()
    image = {
        "path": lambda: DOG,
        "str": lambda: str(DOG),
        "bytes": DOG.read_bytes,
        "file": lambda: open(DOG, "rb"),
        "pil": lambda: Image.fromarray(arr),
        "numpy": lambda: arr,
    }[kind]()
    rec = Recorder(v1_ok)
    with sync_client(rec) as client:
        res = client.detect(image)
    if kind == "file":
        image.close()

    assert isinstance(res, DetectionResult)
    assert (res.width, res.height) == (768, 576)
    assert [d.class_name for d in res.detections] == ["bicycle", "dog"]
    dog = res.detections[1]
    assert dog == Detection("dog", 16, 0.571, 249.1, 352.1, 239.8, 330.8)
    assert res.request_id == rec.requests[0].headers["x-request-id"]

    sent = sent_image(rec.requests[0])
    if kind in ("path", "str", "bytes", "file"):
        assert sent == DOG.read_bytes()  # encoded files travel untouched
    else:
        assert sent[:8] == b"\x89PNG\r\n\x1a\n"  # PIL/numpy: lossless PNG
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(sent))), arr)
    if kind in ("path", "str"):
        assert res.image == str(DOG)
    elif kind in ("pil", "numpy", "bytes"):
        assert res.image is None


def test_detect_sends_v1_body_parameters_host_and_request_id():
    rec = Recorder(v1_ok)
    with sync_client(rec, host="yolov3.vision.example.com", model="tiny") as client:
        client.detect(DOG, confidence=0.3, iou_threshold=0.5, class_filter="dog, car",
                      max_detections=7, request_id="req-123")
    req = rec.requests[0]
    assert req.method == "POST"
    assert req.url.path == "/v1/models/tiny:predict"
    assert req.headers["host"] == "yolov3.vision.example.com"
    assert req.headers["x-request-id"] == "req-123"
    assert req.headers["content-type"] == "application/json"
    body = json.loads(req.content)
    assert body["parameters"] == {"confidence": 0.3, "iou_threshold": 0.5,
                                  "class_filter": ["dog", "car"], "max_detections": 7}
    assert len(body["instances"]) == 1


def test_detect_without_parameters_sends_none_and_generates_request_id():
    rec = Recorder(v1_ok)
    with sync_client(rec) as client:
        client.detect(DOG)
        client.detect(DOG)
    bodies = [json.loads(r.content) for r in rec.requests]
    assert all("parameters" not in b for b in bodies)
    ids = [r.headers["x-request-id"] for r in rec.requests]
    assert all(ids) and ids[0] != ids[1]


def test_async_detect_parses_all_input_kinds():
    arr = rgb_array()

    async def go():
        rec = Recorder(v1_ok)
        async with async_client(rec, host="h.example") as client:
            results = [await client.detect(img, confidence=0.25)
                       for img in (DOG, DOG.read_bytes(), Image.fromarray(arr), arr)]
        return rec, results

    rec, results = asyncio.run(go())
    assert [len(r.detections) for r in results] == [2, 2, 2, 2]
    assert all(r.headers["host"] == "h.example" for r in rec.requests)
    assert all(r.headers["x-request-id"] for r in rec.requests)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(sent_image(rec.requests[3])))), arr)


def test_bad_inputs_raise_before_any_request(tmp_path):
    rec = Recorder(v1_ok)
    with sync_client(rec) as client:
        with pytest.raises(ValueError, match="uint8"):
            client.detect(np.zeros((4, 4, 3), dtype=np.float32))
        with pytest.raises(ValueError, match="HxW"):
            client.detect(np.zeros((4, 4, 5), dtype=np.uint8))
        with pytest.raises(TypeError):
            client.detect(12345)
        with pytest.raises(OSError):
            client.detect(tmp_path / "missing.jpg")
        with pytest.raises(ValueError, match="empty"):
            client.detect(b"")
    assert rec.calls == 0


# ------------------------------------------------------------------------------------------
# errors and retries


@pytest.mark.parametrize("status", [400, 404, 413, 415, 422])
def test_4xx_is_invalid_request_without_retry(status):
    rec = Recorder(httpx.Response(status, json={"error": f"nope {status}"}))
    with sync_client(rec, retries=3) as client:
        with pytest.raises(InvalidRequestError) as ei:
            client.detect(DOG)
    assert rec.calls == 1
    assert ei.value.status_code == status
    assert ei.value.message == f"nope {status}"
    assert client.sleeps == []


def test_4xx_async_is_not_retried():
    async def go():
        rec = Recorder(httpx.Response(413, json={"error": "image too large"}))
        async with async_client(rec, retries=5) as client:
            with pytest.raises(InvalidRequestError, match="too large"):
                await client.detect(DOG)
        return rec

    assert asyncio.run(go()).calls == 1


def test_503_then_200_retries_once_and_honours_retry_after():
    rec = Recorder(httpx.Response(503, json={"error": "overloaded"}, headers={"Retry-After": "2"}),
                   v1_ok)
    with sync_client(rec, retries=3) as client:
        res = client.detect(DOG)
    assert rec.calls == 2
    assert len(res.detections) == 2
    assert client.sleeps == [2.0]  # Retry-After wins over the (tiny) backoff
    # the same request id on every attempt
    assert rec.requests[0].headers["x-request-id"] == rec.requests[1].headers["x-request-id"]


def test_async_503_then_200():
    async def go():
        rec = Recorder(httpx.Response(503, text="scaling from zero"), v1_ok)
        async with async_client(rec, retries=2) as client:
            res = await client.detect(DOG)
        return rec, client, res

    rec, client, res = asyncio.run(go())
    assert rec.calls == 2 and len(res.detections) == 2
    assert len(client.sleeps) == 1 and client.sleeps[0] <= 0.002


def test_retries_really_sleep_the_policy_delays(monkeypatch):
    """Without a replaced ``_sleep`` the client waits with ``time.sleep`` for each backoff delay."""
    import sdk_client.client as client_module

    slept = []
    monkeypatch.setattr(client_module.time, "sleep", slept.append)
    rec = Recorder(httpx.Response(503), httpx.Response(503), v1_ok)
    with DetectionClient(URL, transport=httpx.MockTransport(rec), retries=2,
                         backoff_base=0.01, backoff_max=0.02) as client:
        client.detect(DOG)
    assert rec.calls == 3
    assert len(slept) == 2
    assert 0.005 <= slept[0] <= 0.01 and 0.01 <= slept[1] <= 0.02  # equal jitter: [d/2, d]


def test_retry_after_is_capped():
    rec = Recorder(httpx.Response(503, headers={"Retry-After": "3600"}), v1_ok)
    with sync_client(rec, max_retry_after=5) as client:
        client.detect(DOG)
    assert client.sleeps == [5.0]


def test_504_exhausts_retries_and_raises_gateway_timeout():
    rec = Recorder(httpx.Response(504, json={"error": "predictor timed out"}))
    with sync_client(rec, retries=3) as client:
        with pytest.raises(GatewayTimeoutError, match="predictor timed out") as ei:
            client.detect(DOG)
    assert rec.calls == 3 + 1
    assert ei.value.status_code == 504
    assert len(client.sleeps) == 3


def test_async_504_exhausts_retries():
    async def go():
        rec = Recorder(httpx.Response(504))
        async with async_client(rec, retries=2) as client:
            with pytest.raises(GatewayTimeoutError):
                await client.detect(DOG)
        return rec

    assert asyncio.run(go()).calls == 3



def test_check_ready_on_503_is_one_not_ready_error_after_retries():
    rec = Recorder(httpx.Response(503, headers={"Retry-After": "2"}))
    with sync_client(rec, retries=1) as client, pytest.raises(ServiceUnavailableError) as sync_err:
        client.check_ready()
    assert rec.calls == 2 and client.sleeps[0] >= 2
    assert rec.requests[0].url.path == "/v1/models/yolov3"

    async def go():
        async with async_client(Recorder(httpx.Response(503)), retries=0, protocol="v2") as client:
            with pytest.raises(ServiceUnavailableError) as e:
                await client.check_ready()
            return e.value

    for err in (sync_err.value, asyncio.run(go())):
        assert f"model 'yolov3' at {URL} is not ready yet" in str(err)
        assert err.status_code == 503
    assert sync_err.value.retry_after == 2


def test_listing_models_over_grpc_says_to_use_rest():
    with DetectionClient("127.0.0.1:1", protocol="grpc") as client, \
            pytest.raises(DetectionError, match="listing models needs the REST endpoint"):
        client.models()

    async def go():
        async with AsyncDetectionClient("127.0.0.1:1", protocol="grpc") as client:
            with pytest.raises(DetectionError, match="listing models needs the REST endpoint"):
                await client.models()

    asyncio.run(go())

def test_backoff_grows_exponentially_with_jitter():
    rec = Recorder(httpx.Response(503))
    with sync_client(rec, retries=4, backoff_base=1.0, backoff_max=5.0) as client:
        with pytest.raises(ServiceUnavailableError):
            client.detect(DOG)
    assert rec.calls == 5
    for delay, nominal in zip(client.sleeps, [1, 2, 4, 5]):
        assert nominal / 2 <= delay <= nominal


@pytest.mark.parametrize("exc", [
    httpx.ConnectError("connection refused"),
    httpx.ReadTimeout("timed out"),
    httpx.RemoteProtocolError("server disconnected"),
])
def test_connection_errors_and_timeouts_are_retried_then_connection_failed(exc):
    rec = Recorder(exc)
    with sync_client(rec, retries=2) as client:
        with pytest.raises(ConnectionFailedError) as ei:
            client.detect(DOG)
    assert rec.calls == 3
    assert ei.value.status_code is None
    assert ei.value.request_id == rec.requests[0].headers["x-request-id"]


def test_async_connection_error_then_success():
    async def go():
        rec = Recorder(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), v1_ok)
        async with async_client(rec, retries=2) as client:
            res = await client.detect(DOG)
        return rec, res

    rec, res = asyncio.run(go())
    assert rec.calls == 3 and len(res.detections) == 2


def test_real_connection_refused_is_connection_failed():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with DetectionClient(f"http://127.0.0.1:{port}", retries=1, backoff_base=0.001,
                         timeout=2) as client:
        with pytest.raises(ConnectionFailedError, match="cannot reach"):
            client.detect(DOG)


def test_html_error_bodies_are_tolerated():
    page = ("<html><head><title>503 Service Unavailable</title><style>p{}</style></head>"
            "<body><h1>no healthy upstream</h1></body></html>")
    rec = Recorder(httpx.Response(503, text=page, headers={"content-type": "text/html"}))
    with sync_client(rec, retries=1) as client:
        with pytest.raises(ServiceUnavailableError) as ei:
            client.detect(DOG)
    assert "no healthy upstream" in ei.value.message
    assert "<" not in ei.value.message and "p{}" not in ei.value.message
    assert rec.calls == 2


def test_plain_text_and_empty_error_bodies():
    rec = Recorder(httpx.Response(502, text="upstream connect error or disconnect/reset"))
    with sync_client(rec, retries=3) as client:
        with pytest.raises(ServerError, match="upstream connect error") as ei:
            client.detect(DOG)
    assert rec.calls == 1  # 502 is not retried
    assert ei.value.status_code == 502

    rec = Recorder(httpx.Response(500, content=b""))
    with sync_client(rec) as client:
        with pytest.raises(ServerError, match="Internal Server Error"):
            client.detect(DOG)


def test_kserve_422_detail_body():
    rec = Recorder(httpx.Response(422, json={"detail": [{"loc": ["body"], "msg": "bad"}]}))
    with sync_client(rec) as client:
        with pytest.raises(InvalidRequestError, match="bad"):
            client.detect(DOG)


def test_malformed_200_is_a_detection_error_and_not_retried():
    rec = Recorder(httpx.Response(200, text="<html>hello</html>"))
    with sync_client(rec, retries=3) as client:
        with pytest.raises(DetectionError, match="malformed"):
            client.detect(DOG)
    assert rec.calls == 1
    rec = Recorder(httpx.Response(200, json={"predictions": []}))
    with sync_client(rec) as client:
        with pytest.raises(DetectionError, match="expected 1 prediction"):
            client.detect(DOG)


def test_error_mapping_and_retry_after_parsing():
    hdr = {"content-type": "application/json", "retry-after": "7", "x-request-id": "abc"}
    err = error_from_response(503, b'{"error": "busy"}', hdr)
    assert isinstance(err, ServiceUnavailableError)
    assert (err.message, err.retry_after, err.request_id, err.status_code) == ("busy", 7.0, "abc", 503)
    assert str(err) == "HTTP 503: busy"
    assert isinstance(error_from_response(401, b"", {}), InvalidRequestError)
    assert isinstance(error_from_response(501, b"", {}), ServerError)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None


# ------------------------------------------------------------------------------------------
# v2 REST


def v2_ok(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(200, json={
        "model_name": "yolov3", "id": body.get("id"),
        "outputs": [{"name": "detections", "datatype": "BYTES", "shape": [1],
                     "data": [json.dumps(DOG_PREDICTION)]}],
    })


def test_v2_json_request_and_response():
    rec = Recorder(v2_ok)
    with sync_client(rec, protocol="v2") as client:
        res = client.detect(DOG, confidence=0.4, class_filter=["dog", "car"], max_detections=5,
                            request_id="r-1")
    req = rec.requests[0]
    assert req.url.path == "/v2/models/yolov3/infer"
    body = json.loads(req.content)
    assert body["id"] == "r-1"
    (inp,) = body["inputs"]
    assert (inp["name"], inp["datatype"], inp["shape"]) == ("images", "BYTES", [1])
    assert base64.b64decode(inp["data"][0]) == DOG.read_bytes()
    assert inp["parameters"] == {"content_type": "base64"}
    assert body["parameters"] == {"confidence": 0.4, "class_filter": "dog,car",
                                  "max_detections": 5}
    assert [d.class_name for d in res.detections] == ["bicycle", "dog"]


def test_v2_binary_extension_request():
    def handler(request):
        ihcl = int(request.headers["inference-header-content-length"])
        header = json.loads(request.content[:ihcl])
        raw = request.content[ihcl:]
        (inp,) = header["inputs"]
        assert inp["parameters"]["binary_data_size"] == len(raw)
        assert int.from_bytes(raw[:4], "little") == len(raw) - 4  # BYTES length prefix
        assert raw[4:] == DOG.read_bytes()
        # answer with a binary output too
        doc = json.dumps(DOG_PREDICTION).encode()
        out = len(doc).to_bytes(4, "little") + doc
        head = json.dumps({"model_name": "yolov3", "outputs": [{
            "name": "detections", "datatype": "BYTES", "shape": [1],
            "parameters": {"binary_data_size": len(out)}}]}).encode()
        return httpx.Response(200, content=head + out,
                              headers={"inference-header-content-length": str(len(head))})

    rec = Recorder(handler)
    with sync_client(rec, protocol="v2", v2_binary=True) as client:
        res = client.detect(DOG)
    req = rec.requests[0]
    assert req.headers["content-type"] == "application/octet-stream"
    assert len(res.detections) == 2


def test_v2_missing_output_is_malformed():
    rec = Recorder(httpx.Response(200, json={"model_name": "yolov3", "outputs": [
        {"name": "other", "datatype": "BYTES", "shape": [1], "data": ["{}"]}]}))
    with sync_client(rec, protocol="v2") as client:
        with pytest.raises(DetectionError, match="no output 'detections'"):
            client.detect(DOG)


# ------------------------------------------------------------------------------------------
# detect_many


def test_detect_many_bounds_concurrency_and_keeps_order():
    """Requests meet at a barrier of 3: the pool must run 3 at once (or the barrier times out
    and the test fails), and never more."""
    lock = threading.Lock()
    state = {"now": 0, "max": 0}
    barrier = threading.Barrier(3, timeout=30)  # safety net only

    def handler(request):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        barrier.wait()
        with lock:
            state["now"] -= 1
        size = len(sent_image(request))  # tell images apart by their size
        pred = dict(DOG_PREDICTION, image={"width": size, "height": 1})
        return v1_ok(request, pred)

    images = [bytes(range(1 + i)) * 3 for i in range(12)]
    with sync_client(handler) as client:
        out = list(client.detect_many(images, concurrency=3))
    assert [i for i, _ in out] == list(range(12))
    assert [r.width for _, r in out] == [len(img) for img in images]
    assert state["max"] == 3


def test_detect_many_yields_in_input_order_when_later_images_finish_first():
    """Image 0 is answered last (it waits until every other image has been answered)."""
    others_done = threading.Event()
    answered = []

    def handler(request):
        size = len(sent_image(request))
        if size == 1:
            assert others_done.wait(30)
        answered.append(size)
        if len(answered) == 3:
            others_done.set()
        return v1_ok(request, dict(DOG_PREDICTION, image={"width": size, "height": 1}))

    with sync_client(handler) as client:
        out = list(client.detect_many([b"a", b"bb", b"ccc", b"dddd"], concurrency=4))
    assert answered[-1] == 1  # completion order: image 0 last
    assert [r.width for _, r in out] == [1, 2, 3, 4]  # yielded in input order


def test_detect_many_unordered_and_return_exceptions():
    def handler(request):
        if len(sent_image(request)) == 2:
            return httpx.Response(400, json={"error": "cannot decode image"})
        return v1_ok(request)

    images = [b"a", b"bb", b"ccc", b"dddd"]
    with sync_client(handler) as client:
        out = dict(client.detect_many(images, concurrency=2, ordered=False, return_exceptions=True))
        assert sorted(out) == [0, 1, 2, 3]
        assert isinstance(out[1], InvalidRequestError)
        assert all(isinstance(out[i], DetectionResult) for i in (0, 2, 3))
        with pytest.raises(InvalidRequestError):
            list(client.detect_many(images, concurrency=2))


def test_async_detect_many_bounds_concurrency():
    """The first 4 requests wait until 4 are in flight at once; then none may exceed 4."""
    state = {"now": 0, "max": 0}

    async def go():
        four_in_flight = asyncio.Event()

        async def handler(request):
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            if state["now"] == 4:
                four_in_flight.set()
            await asyncio.wait_for(four_in_flight.wait(), 30)  # safety net only
            await asyncio.sleep(0)
            state["now"] -= 1
            return v1_ok(request, dict(DOG_PREDICTION, image={"width": len(sent_image(request)),
                                                              "height": 1}))

        async with async_client(handler) as client:
            return [x async for x in client.detect_many(
                [b"x" * (i + 1) for i in range(10)], concurrency=4)]

    out = asyncio.run(go())
    assert [i for i, _ in out] == list(range(10))
    assert [r.width for _, r in out] == list(range(1, 11))
    assert state["max"] == 4


def test_async_detect_many_return_exceptions_unordered():
    async def handler(request):
        if len(sent_image(request)) == 3:
            return httpx.Response(415, json={"error": "unsupported image format"})
        return v1_ok(request)

    async def go():
        async with async_client(handler) as client:
            return dict([x async for x in client.detect_many(
                [b"a", b"bb", b"ccc"], concurrency=2, ordered=False, return_exceptions=True)])

    out = asyncio.run(go())
    assert isinstance(out[2], InvalidRequestError) and out[2].status_code == 415
    assert isinstance(out[0], DetectionResult)


# ------------------------------------------------------------------------------------------
# result conversions


def test_detection_geometry_and_dict_round_trip():
    d = Detection("dog", 16, 0.5, x=100.0, y=50.0, width=40.0, height=20.0)
    assert d.xyxy == (80.0, 40.0, 120.0, 60.0)
    assert d.tlwh == (80.0, 40.0, 40.0, 20.0)
    assert d.xywh == (100.0, 50.0, 40.0, 20.0)
    assert d.area == 800.0
    assert d.to_dict() == {"class": "dog", "class_id": 16, "confidence": 0.5, "x": 100.0,
                           "y": 50.0, "width": 40.0, "height": 20.0}
    assert Detection.from_dict(d.to_dict()) == d
    assert d.iou(d) == pytest.approx(1.0)
    assert d.iou(Detection("dog", 16, 0.5, 120.0, 50.0, 40.0, 20.0)) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        Detection.from_dict({"class": "dog"})


def test_result_to_dict_record_triples():
    res = DetectionResult.from_dict(DOG_PREDICTION, image="imgs/dog.jpg")
    assert res.to_dict() == DOG_PREDICTION
    rec = res.to_record()
    assert rec == {"image": "imgs/dog.jpg", "width": 768, "height": 576,
                   "detections": DOG_PREDICTION["detections"]}
    assert DetectionResult.from_dict(rec) == DetectionResult.from_dict(DOG_PREDICTION,
                                                                       image="imgs/dog.jpg")
    assert res.to_triples() == [
        ["bicycle", 0.585, [390.9, 300.5, 369.4, 299.3]],
        ["dog", 0.571, [249.1, 352.1, 239.8, 330.8]],
    ]
    assert Detection.from_triple(res.to_triples()[1], class_id=16) == res.detections[1]


def test_to_coco_bbox_is_top_left_width_height():
    res = DetectionResult.from_dict(DOG_PREDICTION)
    anns = res.to_coco(image_id=42)
    assert anns[1] == {"image_id": 42, "category_id": 16,
                       "bbox": [pytest.approx(249.1 - 239.8 / 2), pytest.approx(352.1 - 330.8 / 2),
                                239.8, 330.8],
                       "score": 0.571}
    assert [a["category_id"] for a in res.to_coco(1, "coco91")] == [2, 18]
    assert COCO80_TO_91[16] == 18
    assert [a["category_id"] for a in res.to_coco(1, {"dog": 7, "bicycle": 9})] == [9, 7]
    assert [a["category_id"] for a in res.to_coco(1, lambda d: d.class_id + 100)] == [101, 116]


def test_coco_files_for_many_images():
    a = DetectionResult.from_dict(DOG_PREDICTION, image="x/000000000139.jpg")
    b = DetectionResult.from_dict({"image": {"width": 10, "height": 20}, "detections": []},
                                  image="x/000000000285.jpg")
    c = DetectionResult.from_dict(DOG_PREDICTION, image="y/dog.jpg")
    assert [r["image_id"] for r in coco_results([a, b])] == [139, 139]  # numeric stems
    doc = coco_detections([a, b, c])
    assert [im["id"] for im in doc["images"]] == [1, 2, 3]  # not all numeric -> 1..N
    assert doc["images"][1] == {"id": 2, "file_name": "x/000000000285.jpg", "width": 10,
                                "height": 20}
    assert len(doc["annotations"]) == 4
    assert [a["id"] for a in doc["annotations"]] == [1, 2, 3, 4]
    assert {a["image_id"] for a in doc["annotations"]} == {1, 3}
    assert doc["annotations"][0]["area"] == pytest.approx(369.4 * 299.3, rel=1e-6)
    assert doc["annotations"][0]["iscrowd"] == 0
    assert doc["categories"] == [{"id": 1, "name": "bicycle"}, {"id": 16, "name": "dog"}]
    json.dumps(doc)


def test_annotate_draws_on_a_copy():
    src = Image.open(DOG)
    before = np.asarray(src).copy()
    res = DetectionResult.from_dict(DOG_PREDICTION)
    out = annotate(DOG, res)
    assert out.size == (768, 576) and out.mode == "RGB"
    assert not np.array_equal(np.asarray(out), before)
    assert np.array_equal(np.asarray(src), before)  # input untouched
    out2 = annotate(np.asarray(src), res)
    assert np.array_equal(np.asarray(out2), np.asarray(out))


# ------------------------------------------------------------------------------------------
# gRPC against an in-process fake GRPCInferenceService


class _FakeGrpc:
    def __init__(self, fail_first_with=None):
        self.calls = []
        self.fail_first_with = fail_first_with

    async def start(self):
        import grpc
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

        fake = self

        class Servicer(pb_grpc.GRPCInferenceServiceServicer):
            async def ModelInfer(self, request, context):
                md = dict(context.invocation_metadata())
                fake.calls.append((request, md))
                if fake.fail_first_with and len(fake.calls) == 1:
                    await context.abort(fake.fail_first_with, "predictor unavailable")
                if request.model_name != "yolov3":
                    await context.abort(grpc.StatusCode.NOT_FOUND, "model not found")
                doc = json.dumps(DOG_PREDICTION).encode()
                return pb.ModelInferResponse(
                    model_name="yolov3", id=request.id,
                    outputs=[pb.ModelInferResponse.InferOutputTensor(
                        name="detections", datatype="BYTES", shape=[1])],
                    raw_output_contents=[len(doc).to_bytes(4, "little") + doc],
                )

        self.server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return self

    async def stop(self):
        await self.server.stop(None)


def test_grpc_async_detect_with_retry_and_parameters():
    import grpc

    async def go():
        fake = await _FakeGrpc(fail_first_with=grpc.StatusCode.UNAVAILABLE).start()
        try:
            async with AsyncDetectionClient(f"127.0.0.1:{fake.port}", protocol="grpc",
                                            host="yolov3.vision.example.com", retries=2,
                                            backoff_base=0.001, timeout=5) as client:
                res = await client.detect(DOG, confidence=0.3, iou_threshold=0.5,
                                          class_filter=["dog"], max_detections=3,
                                          request_id="g-1")
            async with AsyncDetectionClient(f"127.0.0.1:{fake.port}", protocol="grpc",
                                            model="nope", retries=3, timeout=5) as client:
                with pytest.raises(InvalidRequestError) as ei:
                    await client.detect(DOG)
            return fake, res, ei.value
        finally:
            await fake.stop()

    fake, res, err = asyncio.run(go())
    assert len(fake.calls) == 3  # UNAVAILABLE, retried OK, then NOT_FOUND once (not retried)
    req, md = fake.calls[1]
    assert md["x-request-id"] == "g-1"
    assert req.id == "g-1"
    assert req.inputs[0].name == "images" and req.inputs[0].datatype == "BYTES"
    assert req.raw_input_contents[0][4:] == DOG.read_bytes()
    params = {k: v.WhichOneof("parameter_choice") and getattr(v, v.WhichOneof("parameter_choice"))
              for k, v in req.parameters.items()}
    assert params == {"confidence": "0.3", "iou_threshold": "0.5", "class_filter": "dog",
                      "max_detections": 3}
    assert [d.class_name for d in res.detections] == ["bicycle", "dog"]
    assert err.status_code == 404


def test_grpc_sync_client_and_connection_failure():
    import socket

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    fake = asyncio.run_coroutine_threadsafe(_FakeGrpc().start(), loop).result()
    try:
        with DetectionClient(f"grpc://127.0.0.1:{fake.port}", protocol="grpc", timeout=5) as c:
            out = list(c.detect_many([DOG, DOG, DOG], concurrency=2))
        assert [len(r.detections) for _, r in out] == [2, 2, 2]
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with DetectionClient(f"127.0.0.1:{port}", protocol="grpc", retries=1, backoff_base=0.001,
                         timeout=2) as c:
        with pytest.raises((ConnectionFailedError, ServiceUnavailableError)):
            c.detect(DOG)


# ------------------------------------------------------------------------------------------
# `yolo-kserve detect` against a fake transformer on loopback


class _FakeTransformer(LoopbackServer):
    def __init__(self):
        self.requests: list[dict] = []
        super().__init__(_FakeHandler)


class _FakeHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # KServe's v1 readiness and model list
        if self.path == "/v1/models":
            return self._send(200, {"models": ["yolov3"]})
        if self.path == "/v1/models/yolov3":
            return self._send(200, {"name": "yolov3", "ready": True})
        return self._send(404, {"error": f"Model with name {self.path.rsplit('/', 1)[-1]} does not exist."})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        data = base64.b64decode(body["instances"][0]["image_bytes"]["b64"])
        try:
            w, h = Image.open(io.BytesIO(data)).size
        except Exception:
            return self._send(400, {"error": "cannot decode image"})
        pred = {"image": {"width": w, "height": h}, "detections": [
            {"class": "dog", "class_id": 16, "confidence": 0.9, "x": w / 2, "y": h / 2,
             "width": w / 4, "height": h / 4}]}
        self._send(200, {"predictions": [pred]})

    def _send(self, status, doc):
        send_json(self, status, doc)


@pytest.fixture
def fake_transformer():
    server = _FakeTransformer()
    yield server
    server.close()


def test_cli_detect_jsonl_coco_annotated_and_failures(fake_transformer, tmp_path, capsys):
    imgs = tmp_path / "in"
    (imgs / "sub").mkdir(parents=True)
    for name in ("dog.jpg", "bird.jpg"):
        (imgs / name).write_bytes((IMAGES / name).read_bytes())
    (imgs / "sub" / "eagle.jpg").write_bytes((IMAGES / "eagle.jpg").read_bytes())
    (imgs / "broken.jpg").write_bytes(b"not an image")
    (imgs / "notes.txt").write_text("ignored")
    (imgs / "scan.tif").write_bytes(b"II*\x00 a TIFF the server refuses (415)")
    out, coco, ann = tmp_path / "out.jsonl", tmp_path / "coco.json", tmp_path / "ann"

    rc = main(["detect", str(imgs), "--url", fake_transformer.url, "-o", str(out),
               "--coco", str(coco), "--save-annotated", str(ann), "--conf", "0.3",
               "--classes", "dog,cat", "--retries", "0", "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "3 ok, 1 failed" in err  # the .tif is not collected from the folder
    assert "broken.jpg" in err and "cannot decode image" in err
    assert "scan.tif" not in err and "Traceback" not in err
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    # input order: the folder walk order (files sorted, then sub-folders)
    assert [Path(x["image"]).name for x in lines] == ["bird.jpg", "dog.jpg", "eagle.jpg"]
    assert all(set(x) == {"image", "source", "width", "height", "detections", "parameters"}
               for x in lines)
    assert lines[0]["parameters"] == {"model": "yolov3", "confidence": 0.3, "iou_threshold": None,
                                      "class_filter": ["cat", "dog"], "max_detections": None,
                                      "max_side": None}
    dog = lines[1]
    assert (dog["width"], dog["height"]) == (768, 576)
    assert dog["detections"][0]["class"] == "dog"
    assert fake_transformer.requests[0]["parameters"] == {"confidence": 0.3,
                                                          "class_filter": ["dog", "cat"]}
    doc = json.loads(coco.read_text())
    assert isinstance(doc, list) and len(doc) == 3  # a COCO results list, one per detection
    assert {a["category_id"] for a in doc} == {18}  # "dog" is COCO category 18
    assert (ann / "dog.jpg").exists() and (ann / "sub" / "eagle.jpg").exists()
    assert not (ann / "broken.jpg").exists()

    # --resume: the 3 done images are skipped, only the broken one is tried again
    n_before = len(fake_transformer.requests)
    rc = main(["detect", str(imgs), "--url", fake_transformer.url, "-o", str(out), "--resume",
               "--conf", "0.3", "--classes", "cat,dog", "--retries", "0", "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "0 ok, 1 failed, 3 skipped" in err
    assert len(fake_transformer.requests) == n_before + 1
    assert len(out.read_text().splitlines()) == 3


def test_cli_detect_stdout_glob_and_resume_repairs_truncated_jsonl(fake_transformer, tmp_path,
                                                                   capsys):
    rc = main(["detect", str(IMAGES / "*.jpg"), "--url", fake_transformer.url, "-q"])
    captured = capsys.readouterr()
    assert rc == 0
    assert "5 ok, 0 failed" in captured.err
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert [Path(x["image"]).name for x in lines] == sorted(p.name for p in IMAGES.glob("*.jpg"))

    out = tmp_path / "partial.jsonl"
    good = "\n".join(json.dumps(x) for x in lines[:2]) + "\n"
    out.write_text(good + '{"image": "cut sho')  # a crash mid-line
    rc = main(["detect", str(IMAGES), "--url", fake_transformer.url, "-o", str(out),
               "--resume", "-q"])
    err = capsys.readouterr().err
    assert rc == 0
    assert "3 ok, 0 failed, 2 skipped" in err
    done = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(done) == 5
    assert len({d["image"] for d in done}) == 5


def test_cli_detect_usage_errors(tmp_path, capsys):
    assert main(["detect", str(tmp_path / "nothing-here.jpg")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["detect", str(DOG), "--resume"]) == 2
    assert "--resume needs --output" in capsys.readouterr().err
    assert main(["detect", str(DOG), "--conf", "1.5"]) == 2
    assert main(["detect", str(DOG), "--protocol", "v3"]) == 2


@pytest.mark.parametrize("conf", ["0", "0.0009", "-0.1", "nan"])
def test_cli_detect_refuses_confidence_below_the_server_bound(conf, capsys):
    """The server refuses confidence < 0.001 (400 per image); argparse refuses it up front."""
    assert main(["detect", str(DOG), "--conf", conf]) == 2
    err = capsys.readouterr().err
    assert "--conf" in err and ("0.001" in err or "finite" in err or "not a number" in err)


def test_cli_detect_unreachable_server_fails_once_naming_the_url(tmp_path, capsys):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    images = [str(DOG)] * 1 + [str(IMAGES / n) for n in ("bird.jpg", "eagle.jpg", "horses.jpg")]
    out = tmp_path / "out.jsonl"
    rc = main(["detect", *images, "--url", f"http://127.0.0.1:{port}", "--retries", "1",
               "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1, err  # one line, not one per image
    assert f"cannot reach http://127.0.0.1:{port}" in err and "Connection refused" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_cli_detect_writes_jsonl_in_input_order_whatever_the_completion_order(tmp_path, capsys):
    """The first image is answered last (after all others); its line still comes first."""
    others_done = threading.Event()
    answered: list[int] = []
    lock = threading.Lock()

    class Slow(_FakeHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = base64.b64decode(body["instances"][0]["image_bytes"]["b64"])
            w, h = Image.open(io.BytesIO(data)).size
            if w == 768:  # dog.jpg, the first input
                assert others_done.wait(30)
            with lock:
                answered.append(w)
                if len(answered) == 3:
                    others_done.set()
            self._send(200, {"predictions": [{"image": {"width": w, "height": h},
                                              "detections": []}]})

    server = _FakeTransformer()
    server.RequestHandlerClass = Slow
    try:
        names = ["dog.jpg", "bird.jpg", "eagle.jpg", "horses.jpg"]
        rc = main(["detect", *[str(IMAGES / n) for n in names], "--url", server.url,
                   "--concurrency", "4", "-q"])
    finally:
        server.close()
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert answered[-1] == 768  # dog.jpg completed last
    assert [Path(json.loads(x)["image"]).name for x in captured.out.splitlines()] == names


def test_label_layout_never_overlaps_and_stays_inside():
    from sdk_client.annotate import layout_labels

    rng = np.random.default_rng(1)
    same = [(100.0, 50.0, 300.0, 200.0)] * 6  # six boxes at one position (e.g. car and truck)
    boxes = list(same)
    for _ in range(30):
        x0, y0 = rng.uniform(0, 600), rng.uniform(0, 440)
        boxes.append((x0, y0, x0 + rng.uniform(5, 200), y0 + rng.uniform(5, 200)))
    sizes = [(float(rng.integers(30, 120)), 18.0) for _ in boxes]
    for case_boxes, case_sizes in ((same, [(80.0, 20.0)] * 6), (boxes, sizes)):
        rects = layout_labels(case_boxes, case_sizes, 640, 480)
        assert len(rects) == len(case_boxes)
        for i, a in enumerate(rects):
            assert 0 <= a[0] and 0 <= a[1] and a[2] <= 640 and a[3] <= 480
            for b in rects[i + 1:]:
                assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    # a label goes above its box when there is room
    assert layout_labels([(10.0, 100.0, 50.0, 150.0)], [(40.0, 20.0)], 640, 480) == [
        (10.0, 80.0, 50.0, 100.0)]
