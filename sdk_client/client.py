"""Synchronous and asynchronous clients of the YOLOv3 transformer.

Protocols (all carry the same per-request parameters and return the same typed results):

* ``"v1"``   -- ``POST {url}/v1/models/{model}:predict`` with
  ``{"instances": [{"image_bytes": {"b64": ...}}], "parameters": {...}}`` (httpx).
* ``"v2"``   -- ``POST {url}/v2/models/{model}/infer`` with a ``BYTES [1]`` input ``images``; the
  request and response are built/parsed with KServe's ``InferRequest``/``InferResponse``. By default
  the image travels base64-encoded in the JSON body (input parameter ``content_type: base64``);
  ``v2_binary=True`` uses the binary tensor extension instead. Output ``detections`` is ``BYTES``,
  one JSON document per image.
* ``"grpc"`` -- KServe's ``InferenceGRPCClient`` (``inference.GRPCInferenceService/ModelInfer``)
  with the same ``BYTES`` input as raw contents. gRPC parameters have no float type, so
  ``confidence`` and ``iou_threshold`` are sent as decimal strings.

Retries: 503, 504 and connection failures (including client-side timeouts) are retried up to
``retries`` times with exponential backoff and jitter (``backoff_base * 2**n``, capped at
``backoff_max``), waiting at least the server's ``Retry-After`` (capped at ``max_retry_after``).
4xx and other 5xx are never retried. The same ``x-request-id`` is sent on every attempt.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import io
import json
import os
import random
import sys
import threading
import time
import uuid
from typing import Any, AsyncIterator, Iterable, Iterator, Mapping, Sequence

import httpx

from .errors import (
    ConnectionFailedError,
    DetectionError,
    error_from_grpc,
    error_from_response,
)
from .results import DetectionResult

__all__ = [
    "DetectionClient",
    "AsyncDetectionClient",
    "encode_image",
    "PROTOCOLS",
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT",
    "DEFAULT_RETRIES",
]

PROTOCOLS = ("v1", "v2", "grpc")
DEFAULT_MODEL = "yolov3"
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 3
#: Name of the v2/gRPC input and output tensors of the transformer's public API.
INPUT_NAME = "images"
OUTPUT_NAME = "detections"
REQUEST_ID_HEADER = "x-request-id"

_PIL_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}


# --------------------------------------------------------------------------------------------
# inputs and parameters


def encode_image(image: Any) -> tuple[bytes, str | None]:
    """Encoded image bytes to send, and the name identifying the image (its path, if any).

    Accepts a path (``str``/``os.PathLike``, sent as the file's bytes), encoded image ``bytes``,
    a binary file object, a ``PIL.Image.Image`` or a ``numpy`` array (``HxWx3`` uint8 RGB; also
    ``HxW``/``HxWx1`` gray and ``HxWx4`` RGBA). PIL images and arrays are encoded as PNG (lossless).

    Raises:
        TypeError: unsupported input type.
        ValueError: array of the wrong dtype/shape, or empty input.
        OSError: the file cannot be read.
    """
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            data = f.read()
        name: str | None = os.fspath(image)
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data, name = bytes(image), None
    elif hasattr(image, "read") and callable(image.read):
        data = image.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("file objects must be opened in binary mode")
        data, name = bytes(data), getattr(image, "name", None)
        name = name if isinstance(name, str) else None
    elif hasattr(image, "getpixel") and hasattr(image, "save"):  # PIL.Image.Image
        data, name = _encode_pil(image), None
    elif hasattr(image, "__array_interface__") or type(image).__module__ == "numpy":
        data, name = _encode_array(image), None
    else:
        raise TypeError(
            f"unsupported image type {type(image).__name__}: expected a path, bytes, "
            "a binary file, a PIL image or a numpy array"
        )
    if not data:
        raise ValueError("empty image")
    return data, name


def _encode_pil(img: Any) -> bytes:
    if img.mode not in _PIL_PNG_MODES:
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _encode_array(arr: Any) -> bytes:
    import numpy as np
    from PIL import Image

    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"numpy images must be uint8 (got {arr.dtype})")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"numpy images must be HxW, HxWx3 (RGB) or HxWx4 (got {arr.shape})")
    if arr.size == 0:
        raise ValueError("empty image")
    return _encode_pil(Image.fromarray(np.ascontiguousarray(arr)))


def build_parameters(
    confidence: float | None = None,
    iou_threshold: float | None = None,
    class_filter: str | Iterable[str] | None = None,
    max_detections: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Request parameters in the transformer's public names; ``None`` values are left out."""
    params: dict[str, Any] = {}
    if confidence is not None:
        params["confidence"] = float(confidence)
    if iou_threshold is not None:
        params["iou_threshold"] = float(iou_threshold)
    if class_filter is not None:
        if isinstance(class_filter, str):
            names = [c.strip() for c in class_filter.split(",")]
        else:
            names = [str(c).strip() for c in class_filter]
        params["class_filter"] = [c for c in names if c]
    if max_detections is not None:
        params["max_detections"] = int(max_detections)
    if extra:
        params.update(extra)
    return params


def _flat_parameters(params: Mapping[str, Any], *, floats_as_str: bool) -> dict:
    """v2/gRPC parameters are scalars: lists become comma-joined strings; gRPC has no doubles."""
    out: dict[str, Any] = {}
    for key, val in params.items():
        if isinstance(val, (list, tuple)):
            val = ",".join(str(v) for v in val)
        elif isinstance(val, float) and floats_as_str:
            val = repr(val)
        out[key] = val
    return out


def _import_infer_types():
    """``kserve.protocol.infer_type``, imported without letting kserve parse our ``sys.argv``.

    Importing ``kserve`` runs ``kserve.model_server.parser.parse_known_args()`` on ``sys.argv``; a
    CLI flag such as ``--protocol grpc`` or ``--conf 0.5`` would make that import exit.
    """
    mod = sys.modules.get("kserve.protocol.infer_type")
    if mod is not None:
        return mod
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve.protocol.infer_type as mod  # noqa: PLC0415
    finally:
        sys.argv = saved
    return mod


def _decode_outputs(values: Sequence[Any]) -> list[dict]:
    docs = []
    for v in values:
        if isinstance(v, (bytes, bytearray)):
            v = bytes(v).decode("utf-8")
        docs.append(json.loads(v) if isinstance(v, str) else v)
    return docs


def _single(docs: Sequence[Any], name: str | None, rid: str | None) -> DetectionResult:
    if len(docs) != 1:
        raise DetectionError(f"malformed response: expected 1 prediction, got {len(docs)}",
                             request_id=rid)
    try:
        return DetectionResult.from_dict(docs[0], image=name, request_id=rid)
    except (ValueError, TypeError, AttributeError) as e:
        raise DetectionError(f"malformed response: {e}", request_id=rid) from e


def _normalize_http_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


# --------------------------------------------------------------------------------------------
# REST codec (shared by the sync and async clients)


class _RestCodec:
    def __init__(self, protocol: str, model: str, v2_binary: bool):
        self.protocol = protocol
        self.model = model
        self.v2_binary = v2_binary

    def path(self) -> str:
        if self.protocol == "v1":
            return f"/v1/models/{self.model}:predict"
        return f"/v2/models/{self.model}/infer"

    def ready_path(self) -> str:
        if self.protocol == "v1":
            return f"/v1/models/{self.model}"
        return f"/v2/models/{self.model}/ready"

    def build(self, data: bytes, params: Mapping[str, Any], rid: str) -> dict:
        """Keyword arguments of ``httpx.Client.post`` (``content`` + ``headers``)."""
        headers = {REQUEST_ID_HEADER: rid}
        if self.protocol == "v1":
            body: dict[str, Any] = {
                "instances": [{"image_bytes": {"b64": base64.b64encode(data).decode("ascii")}}]
            }
            if params:
                body["parameters"] = dict(params)
            headers["content-type"] = "application/json"
            return {"content": json.dumps(body).encode(), "headers": headers}

        it = _import_infer_types()
        v2_params = _flat_parameters(params, floats_as_str=False) or None
        if self.v2_binary:
            import numpy as np

            inp = it.InferInput(INPUT_NAME, [1], "BYTES")
            inp.set_data_from_numpy(np.array([data], dtype=object), binary_data=True)
        else:
            inp = it.InferInput(
                INPUT_NAME, [1], "BYTES",
                data=[base64.b64encode(data).decode("ascii")],
                parameters={"content_type": "base64"},
            )
        req = it.InferRequest(self.model, [inp], request_id=rid, parameters=v2_params)
        body, json_length = req.to_rest()
        if json_length is None:
            headers["content-type"] = "application/json"
            return {"content": json.dumps(body).encode(), "headers": headers}
        # Binary extension: no application/json content type, or FastAPI answers 422.
        headers["content-type"] = "application/octet-stream"
        headers["inference-header-content-length"] = str(json_length)
        return {"content": body, "headers": headers}

    def parse(self, resp: httpx.Response, name: str | None, rid: str) -> DetectionResult:
        rid = resp.headers.get(REQUEST_ID_HEADER) or rid
        try:
            if self.protocol == "v1":
                doc = resp.json()
                preds = doc["predictions"]
                if not isinstance(preds, list):
                    raise TypeError("'predictions' is not a list")
                return _single(preds, name, rid)
            it = _import_infer_types()
            ihcl = resp.headers.get("inference-header-content-length")
            if ihcl is not None:
                infer_resp = it.InferResponse.from_bytes(resp.content, int(ihcl))
            else:
                infer_resp = it.InferResponse.from_rest(resp.json())
            return _single(_v2_detections(infer_resp), name, rid)
        except DetectionError:
            raise
        except Exception as e:  # noqa: BLE001 -- any decoding failure is a malformed response
            raise DetectionError(
                f"malformed {self.protocol} response: {type(e).__name__}: {e}", request_id=rid
            ) from e


def _v2_detections(infer_resp: Any) -> list[dict]:
    out = infer_resp.get_output_by_name(OUTPUT_NAME)
    if out is None:
        names = [o.name for o in infer_resp.outputs]
        raise DetectionError(f"malformed response: no output {OUTPUT_NAME!r} (got {names})")
    return _decode_outputs(out.as_numpy().reshape(-1).tolist())


def _transport_error(e: httpx.HTTPError, url: str, timeout: float | None, rid: str) -> DetectionError:
    if isinstance(e, httpx.UnsupportedProtocol):
        return DetectionError(f"unsupported URL {url!r}: {e}", request_id=rid)
    if isinstance(e, httpx.TimeoutException):
        return ConnectionFailedError(
            f"{type(e).__name__}: no response from {url} within {timeout}s", request_id=rid
        )
    detail = str(e) or type(e).__name__
    return ConnectionFailedError(f"cannot reach {url}: {detail}", request_id=rid)


# --------------------------------------------------------------------------------------------
# retry policy


class _Backoff:
    def __init__(self, retries: int, base: float, cap: float, max_retry_after: float):
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.retries = int(retries)
        self.base = float(base)
        self.cap = float(cap)
        self.max_retry_after = float(max_retry_after)

    def should_retry(self, err: DetectionError, attempt: int) -> bool:
        return err.retryable and attempt < self.retries

    def delay(self, attempt: int, err: DetectionError) -> float:
        """Seconds before retry number ``attempt + 1``: equal-jitter exponential, >= Retry-After."""
        d = min(self.cap, self.base * (2**attempt))
        d = d / 2 + random.uniform(0, d / 2)
        if err.retry_after is not None:
            d = max(d, min(err.retry_after, self.max_retry_after))
        return d


class _Options:
    """Constructor arguments shared by both clients."""

    def __init__(
        self,
        url: str,
        model: str,
        host: str | None,
        protocol: str,
        timeout: float | None,
        retries: int,
        backoff_base: float,
        backoff_max: float,
        max_retry_after: float,
        headers: Mapping[str, str] | None,
        v2_binary: bool,
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self.url = url
        self.model = model
        self.host = host
        self.protocol = protocol
        self.timeout = timeout
        self.backoff = _Backoff(retries, backoff_base, backoff_max, max_retry_after)
        self.headers = dict(headers or {})
        if host:
            self.headers["Host"] = host
        self.v2_binary = v2_binary


# --------------------------------------------------------------------------------------------
# async client


class AsyncDetectionClient:
    """Asynchronous client; same API as :class:`DetectionClient` with ``await``/``async for``.

    Args:
        url: transformer base URL, e.g. ``http://127.0.0.1:8080`` (``host:port`` for gRPC,
            e.g. ``127.0.0.1:8081``; ``grpcs://`` or ``https://`` selects TLS).
        model: model name in the URL path / request.
        host: ``Host`` header (gRPC ``:authority``) to send, e.g. the Knative service hostname
            (``SERVICE_HOSTNAME``) when ``url`` is the ingress gateway.
        protocol: ``"v1"``, ``"v2"`` or ``"grpc"``.
        timeout: per-attempt timeout in seconds (``None``: no timeout).
        retries: retries after the first attempt for 503/504/connection failures.
        backoff_base, backoff_max: exponential backoff parameters in seconds.
        max_retry_after: cap for a server's ``Retry-After``.
        headers: extra HTTP headers / gRPC metadata.
        v2_binary: use the v2 binary tensor extension instead of JSON + base64.
        transport: an ``httpx.AsyncBaseTransport`` (tests use ``httpx.MockTransport``).
    """

    def __init__(
        self,
        url: str,
        model: str = DEFAULT_MODEL,
        host: str | None = None,
        protocol: str = "v1",
        timeout: float | None = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 60.0,
        headers: Mapping[str, str] | None = None,
        v2_binary: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | str = True,
    ):
        self._opt = _Options(url, model, host, protocol, timeout, retries, backoff_base,
                             backoff_max, max_retry_after, headers, v2_binary)
        self._grpc: Any = None
        self._http: httpx.AsyncClient | None = None
        if protocol != "grpc":
            self._codec = _RestCodec(protocol, model, v2_binary)
            self._base_url = _normalize_http_url(url)
            self._http = httpx.AsyncClient(
                base_url=self._base_url,
                headers=self._opt.headers,
                timeout=timeout,
                transport=transport,
                verify=verify,
                follow_redirects=False,
            )
        #: sleep coroutine used between retries (tests may replace it).
        self._sleep = asyncio.sleep

    @property
    def protocol(self) -> str:
        return self._opt.protocol

    @property
    def url(self) -> str:
        return self._opt.url

    async def __aenter__(self) -> "AsyncDetectionClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._grpc is not None:
            grpc_client, self._grpc = self._grpc, None
            await grpc_client.close()

    async def detect(
        self,
        image: Any,
        confidence: float | None = None,
        iou_threshold: float | None = None,
        class_filter: str | Iterable[str] | None = None,
        max_detections: int | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> DetectionResult:
        """Detect objects in one image. See :meth:`DetectionClient.detect`."""
        data, name = encode_image(image)
        params = build_parameters(confidence, iou_threshold, class_filter, max_detections,
                                  parameters)
        rid = request_id or uuid.uuid4().hex
        attempt = 0
        while True:
            try:
                return await self._send(data, name, params, rid)
            except DetectionError as err:
                if not self._opt.backoff.should_retry(err, attempt):
                    raise
                delay = self._opt.backoff.delay(attempt, err)
                attempt += 1
                await self._sleep(delay)

    async def detect_many(
        self,
        images: Iterable[Any],
        concurrency: int = 4,
        *,
        ordered: bool = True,
        return_exceptions: bool = False,
        **detect_kwargs: Any,
    ) -> AsyncIterator[tuple[int, DetectionResult | BaseException]]:
        """Detect objects in many images, at most ``concurrency`` requests in flight.

        Yields ``(index, result)`` pairs, in input order if ``ordered`` else as they complete.
        With ``return_exceptions=True`` a failed image yields ``(index, exception)`` instead of
        raising. ``images`` is consumed lazily. Other keyword arguments go to :meth:`detect`.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        sem = asyncio.Semaphore(concurrency)

        async def one(img: Any) -> DetectionResult:
            async with sem:
                return await self.detect(img, **detect_kwargs)

        source = iter(enumerate(images))
        window = 2 * concurrency
        pending: collections.OrderedDict[asyncio.Task, int] = collections.OrderedDict()

        def refill() -> None:
            while len(pending) < window:
                try:
                    idx, img = next(source)
                except StopIteration:
                    return
                pending[asyncio.ensure_future(one(img))] = idx

        try:
            refill()
            while pending:
                if ordered:
                    task = next(iter(pending))
                    await asyncio.wait([task])
                    done = [task]
                else:
                    done_set, _ = await asyncio.wait(
                        list(pending), return_when=asyncio.FIRST_COMPLETED
                    )
                    done = sorted(done_set, key=lambda t: pending[t])
                for task in done:
                    idx = pending.pop(task)
                    exc = task.exception()
                    if exc is not None:
                        if not return_exceptions:
                            raise exc
                        yield idx, exc
                    else:
                        yield idx, task.result()
                refill()
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def ready(self) -> bool:
        """Whether the server reports the model ready (``False`` on 503 or no connection)."""
        try:
            if self._opt.protocol == "grpc":
                client = await self._grpc_client()
                return bool(await client.is_model_ready(self._opt.model,
                                                        headers=self._grpc_metadata("ready")))
            resp = await self._http.get(self._codec.ready_path())
            return resp.status_code == 200
        except Exception:  # noqa: BLE001 -- readiness probe: any failure means "not ready"
            return False

    # -- transport ------------------------------------------------------------------------

    async def _send(self, data: bytes, name: str | None, params: dict, rid: str) -> DetectionResult:
        if self._opt.protocol == "grpc":
            return await self._send_grpc(data, name, params, rid)
        kwargs = self._codec.build(data, params, rid)
        try:
            resp = await self._http.post(self._codec.path(), **kwargs)
        except httpx.HTTPError as e:
            raise _transport_error(e, self._base_url, self._opt.timeout, rid) from e
        if resp.status_code >= 300:
            raise error_from_response(resp.status_code, resp.content, resp.headers,
                                      reason=resp.reason_phrase, request_id=rid)
        return self._codec.parse(resp, name, rid)

    def _grpc_metadata(self, rid: str) -> tuple:
        md = [(REQUEST_ID_HEADER, rid)]
        md.extend((k.lower(), v) for k, v in self._opt.headers.items() if k.lower() != "host")
        return tuple(md)

    async def _grpc_client(self) -> Any:
        if self._grpc is None:
            saved = sys.argv
            sys.argv = saved[:1]
            try:
                from kserve.inference_client import InferenceGRPCClient  # noqa: PLC0415
            finally:
                sys.argv = saved
            url, use_ssl = self._opt.url.strip(), False
            for scheme in ("grpcs://", "https://", "grpc://", "http://"):
                if url.startswith(scheme):
                    use_ssl = scheme in ("grpcs://", "https://")
                    url = url[len(scheme):]
            url = url.rstrip("/")
            channel_args = [
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", -1),
                ("grpc.enable_retries", 0),  # retries are ours (backoff + Retry-After)
            ]
            if self._opt.host:
                channel_args.append(("grpc.default_authority", self._opt.host))
            self._grpc = InferenceGRPCClient(
                url, use_ssl=use_ssl, channel_args=channel_args, timeout=self._opt.timeout,
                retries=0,
            )
        return self._grpc

    async def _send_grpc(self, data: bytes, name: str | None, params: dict, rid: str):
        import grpc  # noqa: PLC0415
        import numpy as np  # noqa: PLC0415

        it = _import_infer_types()
        client = await self._grpc_client()
        inp = it.InferInput(INPUT_NAME, [1], "BYTES")
        inp.set_data_from_numpy(np.array([data], dtype=object), binary_data=True)
        req = it.InferRequest(
            self._opt.model, [inp], request_id=rid,
            parameters=_flat_parameters(params, floats_as_str=True) or None,
        )
        try:
            resp = await client.infer(req, headers=self._grpc_metadata(rid))
        except grpc.aio.AioRpcError as e:
            raise error_from_grpc(e.code().name, e.details() or "", request_id=rid) from e
        except grpc.RpcError as e:  # pragma: no cover -- non-aio errors
            code = e.code().name if hasattr(e, "code") else "UNKNOWN"
            raise error_from_grpc(code, str(e), request_id=rid) from e
        try:
            return _single(_v2_detections(resp), name, rid)
        except DetectionError:
            raise
        except Exception as e:  # noqa: BLE001
            raise DetectionError(f"malformed grpc response: {type(e).__name__}: {e}",
                                 request_id=rid) from e


# --------------------------------------------------------------------------------------------
# sync client


class _LoopThread:
    """A private event loop in a daemon thread (runs the async gRPC client for sync callers)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sdk-client-loop",
                                        daemon=True)
        self._thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


class DetectionClient:
    """Synchronous client of the YOLOv3 transformer (thread-safe).

    Example::

        with DetectionClient("http://127.0.0.1:8080") as client:
            result = client.detect("dog.jpg", confidence=0.5)
            for det in result.detections:
                print(det.class_name, det.confidence, det.xyxy)

    Args: see :class:`AsyncDetectionClient` (``transport`` is an ``httpx.BaseTransport``).
    """

    def __init__(
        self,
        url: str,
        model: str = DEFAULT_MODEL,
        host: str | None = None,
        protocol: str = "v1",
        timeout: float | None = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 60.0,
        headers: Mapping[str, str] | None = None,
        v2_binary: bool = False,
        transport: httpx.BaseTransport | None = None,
        verify: bool | str = True,
    ):
        self._opt = _Options(url, model, host, protocol, timeout, retries, backoff_base,
                             backoff_max, max_retry_after, headers, v2_binary)
        self._http: httpx.Client | None = None
        self._loop: _LoopThread | None = None
        self._async: AsyncDetectionClient | None = None
        if protocol == "grpc":
            self._loop = _LoopThread()
            self._async = AsyncDetectionClient(
                url, model, host, protocol, timeout, retries, backoff_base=backoff_base,
                backoff_max=backoff_max, max_retry_after=max_retry_after, headers=headers,
            )
        else:
            self._codec = _RestCodec(protocol, model, v2_binary)
            self._base_url = _normalize_http_url(url)
            self._http = httpx.Client(
                base_url=self._base_url,
                headers=self._opt.headers,
                timeout=timeout,
                transport=transport,
                verify=verify,
                follow_redirects=False,
            )
        #: sleep function used between retries (tests may replace it).
        self._sleep = time.sleep

    @property
    def protocol(self) -> str:
        return self._opt.protocol

    @property
    def url(self) -> str:
        return self._opt.url

    def __enter__(self) -> "DetectionClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._loop is not None:
            if self._async is not None:
                self._loop.run(self._async.aclose())
                self._async = None
            self._loop.close()

    def detect(
        self,
        image: Any,
        confidence: float | None = None,
        iou_threshold: float | None = None,
        class_filter: str | Iterable[str] | None = None,
        max_detections: int | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> DetectionResult:
        """Detect objects in one image.

        Args:
            image: a path, encoded image bytes, a binary file object, a PIL image or a numpy
                array (HxWx3 uint8 RGB). PIL images and arrays are sent as PNG.
            confidence: minimum confidence (server default 0.5).
            iou_threshold: NMS IoU threshold (server default 0.45).
            class_filter: class names to keep (list or comma-separated string).
            max_detections: at most this many detections.
            parameters: extra server parameters (e.g. ``{"nms": "per_class"}``).
            request_id: ``x-request-id`` to send (default: a random one, same on every retry).

        Returns:
            The image's :class:`DetectionResult` (``image`` is the path for path inputs).

        Raises:
            InvalidRequestError: 4xx (never retried).
            ServiceUnavailableError, GatewayTimeoutError, ConnectionFailedError: after retries.
            ServerError: other 5xx.
            DetectionError: malformed response.
            TypeError, ValueError, OSError: the image could not be read/encoded.
        """
        if self._async is not None:
            return self._loop.run(self._async.detect(
                image, confidence, iou_threshold, class_filter, max_detections,
                parameters=parameters, request_id=request_id))
        data, name = encode_image(image)
        params = build_parameters(confidence, iou_threshold, class_filter, max_detections,
                                  parameters)
        rid = request_id or uuid.uuid4().hex
        attempt = 0
        while True:
            try:
                return self._send(data, name, params, rid)
            except DetectionError as err:
                if not self._opt.backoff.should_retry(err, attempt):
                    raise
                delay = self._opt.backoff.delay(attempt, err)
                attempt += 1
                self._sleep(delay)

    def detect_many(
        self,
        images: Iterable[Any],
        concurrency: int = 4,
        *,
        ordered: bool = True,
        return_exceptions: bool = False,
        **detect_kwargs: Any,
    ) -> Iterator[tuple[int, DetectionResult | BaseException]]:
        """Detect objects in many images with at most ``concurrency`` requests in flight.

        Yields ``(index, result)`` pairs, in input order if ``ordered`` (default) else as they
        complete. With ``return_exceptions=True`` a failed image yields ``(index, exception)``
        instead of raising. ``images`` is consumed lazily (at most ``2 * concurrency`` ahead).
        Other keyword arguments (``confidence``, ...) go to :meth:`detect`.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        source = iter(enumerate(images))
        window = 2 * concurrency
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency,
                                                     thread_name_prefix="sdk-client")
        pending: collections.OrderedDict[concurrent.futures.Future, int] = (
            collections.OrderedDict()
        )

        def refill() -> None:
            while len(pending) < window:
                try:
                    idx, img = next(source)
                except StopIteration:
                    return
                pending[pool.submit(self.detect, img, **detect_kwargs)] = idx

        try:
            refill()
            while pending:
                if ordered:
                    fut = next(iter(pending))
                    concurrent.futures.wait([fut])
                    done = [fut]
                else:
                    done_set, _ = concurrent.futures.wait(
                        list(pending), return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    done = sorted(done_set, key=lambda f: pending[f])
                for fut in done:
                    idx = pending.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        if not return_exceptions:
                            raise exc
                        yield idx, exc
                    else:
                        yield idx, fut.result()
                refill()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def ready(self) -> bool:
        """Whether the server reports the model ready (``False`` on 503 or no connection)."""
        if self._async is not None:
            return self._loop.run(self._async.ready())
        try:
            return self._http.get(self._codec.ready_path()).status_code == 200
        except httpx.HTTPError:
            return False

    def _send(self, data: bytes, name: str | None, params: dict, rid: str) -> DetectionResult:
        kwargs = self._codec.build(data, params, rid)
        try:
            resp = self._http.post(self._codec.path(), **kwargs)
        except httpx.HTTPError as e:
            raise _transport_error(e, self._base_url, self._opt.timeout, rid) from e
        if resp.status_code >= 300:
            raise error_from_response(resp.status_code, resp.content, resp.headers,
                                      reason=resp.reason_phrase, request_id=rid)
        return self._codec.parse(resp, name, rid)
