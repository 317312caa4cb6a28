"""Strict request parameters (declared once, per API), the in-flight body budget and the
transformer's memory budget, and the asserted KServe patches (listening addresses)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sdk_client._codec import build_parameters
from transformer import payload
from yolo_contract import tensors as T
from yolo_contract.errors import BadRequest

pytestmark = pytest.mark.unit


def test_each_api_declares_what_it_accepts():
    decode = {p.name for p in T.PARAMETERS}
    assert set(T.PUBLIC_PARAMETER_NAMES) == decode | {"format", "clip"}
    assert set(T.PREDICTOR_PARAMETER_NAMES) == decode | {T.PREPROCESS_PARAMETER, T.DESCRIBE_PARAMETER, T.MODEL_VERSION_PARAMETER}
    # nothing the SDK sends is refused by the transformer
    sent = build_parameters(0.3, 0.4, ["dog"], 5, {"nms": "per_class", "format": "json", "clip": True})
    assert set(sent) <= set(T.PUBLIC_PARAMETER_NAMES)
    T.coerce_parameters(sent, T.PUBLIC_PARAMETER_NAMES)


@pytest.mark.parametrize("raw, accepted, named, meant", [
    ({"confidnce": 0.9}, T.PUBLIC_PARAMETER_NAMES, "confidnce", "confidence"),
    ({"conf": 0.9}, T.PUBLIC_PARAMETER_NAMES, "conf", "confidence"),
    ({"classes": "dog"}, T.PUBLIC_PARAMETER_NAMES, "classes", "class_filter"),
    ({"preprocess": "letterbox"}, T.PUBLIC_PARAMETER_NAMES, "preprocess", None),  # internal: not public
    ({"format": "seed"}, T.PREDICTOR_PARAMETER_NAMES, "format", None),  # the transformer's, not the predictor's
])
def test_unknown_parameters_are_refused_by_name(raw, accepted, named, meant):
    with pytest.raises(BadRequest) as e:
        T.coerce_parameters(raw, accepted)
    msg = e.value.message
    assert f'unknown parameter "{named}"' in msg and "valid parameters: " + ", ".join(accepted) in msg
    if meant:
        assert f'(did you mean "{meant}"?)' in msg


def test_keys_clients_add_are_accepted_everywhere():
    for accepted in (T.PUBLIC_PARAMETER_NAMES, T.PREDICTOR_PARAMETER_NAMES):
        assert T.coerce_parameters({"binary_data_output": True, "confidence": "0.25"}, accepted) == {"confidence": 0.25}
    assert T.coerce_parameters({"preprocess": "letterbox", "describe": True, "model_version": "abc"}) == {}


def test_a_long_unknown_key_is_not_echoed_whole():
    with pytest.raises(BadRequest) as e:
        T.coerce_parameters({"x" * 5000: 1}, T.PUBLIC_PARAMETER_NAMES)
    assert len(e.value.message) < 400


def test_query_string_parameters():
    assert payload.query_parameters("confidence=0.3&class_filter=dog,cat") == {"confidence": "0.3", "class_filter": "dog,cat"}
    # an empty parameter of ours is absent (as before); an empty unknown one is kept, to be refused
    assert payload.query_parameters("confidence=&model_version=&confidnce=") == {"confidnce": ""}


def test_response_options():
    assert payload.response_options({}) == ("json", False)
    assert payload.response_options({"format": "seed", "clip": "True"}) == ("seed", True)
    assert payload.response_options({"clip": False}) == ("json", False)
    for bad in ({"format": "xml"}, {"clip": "maybe"}):
        with pytest.raises(BadRequest):
            payload.response_options(bad)


# -- the body budget of the request middleware ---------------------------------------------------


def test_body_bytes_in_flight_are_bounded():
    from yolo_contract.serving import HttpLimits, RequestMiddleware

    release = asyncio.Event()
    entered = asyncio.Event()

    async def app(scope, receive, send):  # holds the first request until released
        await receive()
        if scope["path"] == "/hold":
            entered.set()
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mw = RequestMiddleware(app, "test", HttpLimits(max_body_bytes=100, max_inflight_bytes=150))

    async def request(path: str, size: int, content_length: bool = True) -> int:
        sent = []
        chunks = [b"x" * (size // 2), b"x" * (size - size // 2)]
        headers = [(b"content-length", str(size).encode())] if content_length else []

        async def receive():
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

        async def send(message):
            sent.append(message)

        await mw({"type": "http", "path": path, "method": "POST", "headers": headers, "query_string": b""}, receive, send)
        return sent[0]["status"]

    async def scenario():
        held = asyncio.create_task(request("/hold", 100))
        await entered.wait()
        assert mw.inflight_bytes == 100
        over = await request("/x", 60)  # Content-Length says it would not fit
        streamed = await request("/x", 60, content_length=False)  # counted while it arrives
        fits = await request("/x", 40)
        release.set()
        first = await held
        return first, over, streamed, fits

    assert asyncio.run(scenario()) == (200, 503, 503, 200)
    assert mw.inflight_bytes == 0


# -- the asserted patches of KServe's listening addresses ------------------------------------------


def test_listening_addresses_are_patched_in_one_checked_place(monkeypatch):
    import kserve.model_server as kms
    import kserve.protocol.grpc.server as kgrpc

    from yolo_contract import serving

    monkeypatch.setattr(kms, "RESTServer", kms.RESTServer)  # restored afterwards
    monkeypatch.setattr(kgrpc, "aio", kgrpc.aio)
    serving.bind_hosts("127.0.0.1", "127.0.0.1")
    rest = kms.RESTServer("x:app", None, None, 0)
    assert rest.config.host == "127.0.0.1"

    async def grpc_port() -> tuple[int, str]:
        server = kgrpc.aio.server()
        port = server.add_insecure_port("[::]:0")
        with pytest.raises(RuntimeError, match="no longer listens"):
            server.add_insecure_port("0.0.0.0:0")
        await server.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            try:
                with socket.socket(socket.AF_INET6) as s6:  # not on every interface any more
                    where = "refused" if s6.connect_ex(("::1", port)) else "open"
            except OSError:  # no IPv6 here
                where = "refused"
        finally:
            await server.stop(None)
        return port, where

    port, on_ipv6_loopback = asyncio.run(grpc_port())
    assert port > 0 and on_ipv6_loopback == "refused"

    with pytest.raises(RuntimeError, match="missing"):
        serving._patch(kms, "NoSuchThing", None)


# -- the transformer's worst-case memory fits its pod -------------------------------------------

#: Measured here: a transformer's RSS after start and a few requests (~0.2 GB), with margin.
PROCESS_BYTES = 300e6
#: Decoding peak per image pixel (Pillow's 4 B/pixel RGB core + the 3 B/pixel array + tobytes' join).
DECODE_BYTES_PER_PIXEL = 10
#: A request body is held about 2.5 times while processed (bytes, parsed JSON/base64, decoded).
BODY_COPIES = 2.5


def worst_case_bytes(s, net_side: int = 416) -> float:
    """Process + images being decoded + bodies held + tensors awaiting the predictor (416 x 416 model)."""
    tensors = s.max_inflight * s.max_batch_images * 3 * net_side * net_side
    return (PROCESS_BYTES + s.decode_threads * DECODE_BYTES_PER_PIXEL * s.max_pixels
            + BODY_COPIES * s.max_inflight_bytes + tensors)


def test_transformer_memory_limit_covers_its_worst_case():
    from pathlib import Path

    import yaml

    from transformer.settings import TransformerSettings, parse_settings

    defaults = TransformerSettings()
    assert defaults.max_pixels >= 9248 * 6936  # 64 MP phone sensors at full resolution
    assert defaults.max_body_bytes >= 4 * 24 * 1024 * 1024 // 3  # a 24 MB JPEG as base64 JSON
    manifest = Path(__file__).resolve().parents[2] / "manifests" / "kustomize" / "base" / "inferenceservice.yaml"
    isvc = next(d for d in yaml.safe_load_all(manifest.read_text()) if d and d.get("kind") == "InferenceService")
    container = isvc["spec"]["transformer"]["containers"][0]
    settings = parse_settings([*container["args"], "--predictor_host", "p:80"])
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    assert worst_case_bytes(settings) < float(limit[:-2]) * 2**30 * 0.8, (worst_case_bytes(settings), limit)
