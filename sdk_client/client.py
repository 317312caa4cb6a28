"""Synchronous and asynchronous clients of the Darknet YOLO transformer.

Protocols (all carry the same per-request parameters and return the same typed results):

* ``"v1"``   -- ``POST {url}/v1/models/{model}:predict`` with
  ``{"instances": [{"image_bytes": {"b64": ...}}], "parameters": {...}}`` (httpx).
* ``"v2"``   -- ``POST {url}/v2/models/{model}/infer`` with a ``BYTES [1]`` input ``images``,
  base64 in the JSON body (input parameter ``content_type: base64``), or with ``v2_binary=True``
  the binary tensor extension. Output ``detections`` is ``BYTES``, one JSON document per image.
* ``"grpc"`` -- ``inference.GRPCInferenceService/ModelInfer`` with the same ``BYTES`` input as raw
  contents (grpcio; the messages are declared in :mod:`sdk_client._grpc`, KServe is not needed).
  gRPC parameters have no float type, so ``confidence`` and ``iou_threshold`` travel as strings.

Retries (:mod:`sdk_client._retry`, one policy for both clients): 503, 504 and connection failures
(including client-side timeouts) are retried up to ``retries`` times with exponential backoff and
jitter, waiting at least the server's ``Retry-After``. 4xx and other 5xx are never retried. The
same ``x-request-id`` is sent on every attempt. ``detect_many`` runs on the one bounded pool of
:mod:`sdk_client._pool`.

The clients import no server code and no KServe (``pip install 'yolo-kserve[client]'``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable, Iterator, Mapping

import httpx

from yolo_contract.tensors import REQUEST_ID_HEADER

from ._codec import (
    PreparedImage,
    RestCodec,
    build_parameters,
    encode_image,
    grpc_detections,
    grpc_infer_request,
    normalize_http_url,
    parse_grpc_target,
    prepare_image,
)
from ._pool import abounded_map, bounded_map
from ._retry import RetryPolicy
from .errors import (
    ConnectionFailedError,
    DetectionError,
    ModelNotFoundError,
    ServiceUnavailableError,
    error_from_grpc,
    error_from_response,
)
from .results import DetectionResult, ModelInfo

__all__ = [
    "DetectionClient",
    "AsyncDetectionClient",
    "encode_image",
    "build_parameters",
    "PROTOCOLS",
    "DEFAULT_MODEL",
    "DEFAULT_TIMEOUT",
    "DEFAULT_RETRIES",
]

PROTOCOLS = ("v1", "v2", "grpc")
DEFAULT_MODEL = "yolov3"
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 3


@dataclass(frozen=True)
class _Request:
    image: PreparedImage
    params: dict
    rid: str


class _Common:
    """Options, request preparation and error mapping shared by both clients (no I/O)."""

    def __init__(self, http_class: type, url: str, model: str, host: str | None, protocol: str,
                 timeout: float | None, retries: int, backoff_base: float, backoff_max: float,
                 max_retry_after: float, headers: Mapping[str, str] | None, v2_binary: bool,
                 transport: Any, verify: bool | str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self._url = url
        self._model = model
        self._host = host
        self._protocol = protocol
        self._timeout = timeout
        self._retry = RetryPolicy(retries, backoff_base, backoff_max, max_retry_after)
        self._headers = dict(headers or {})
        if host:
            self._headers["Host"] = host
        self._codec = RestCodec(protocol, model, v2_binary)
        self._http: Any = None
        self._channel: Any = None  # grpc (or grpc.aio) channel, opened on first use
        if protocol == "grpc":
            self._grpc_target, self._grpc_tls = parse_grpc_target(url)
            self._base_url = self._grpc_target
        else:
            self._base_url = normalize_http_url(url)
            self._http = http_class(base_url=self._base_url, headers=self._headers,
                                    timeout=timeout, transport=transport, verify=verify,
                                    follow_redirects=False)

    @property
    def protocol(self) -> str:
        return self._protocol

    @property
    def url(self) -> str:
        return self._url

    @property
    def model(self) -> str:
        return self._model

    # -- requests -----------------------------------------------------------------------

    def _request(self, image: Any, confidence: float | None, iou_threshold: float | None,
                 class_filter: Any, max_detections: int | None,
                 parameters: Mapping[str, Any] | None, request_id: str | None,
                 max_side: int | None) -> _Request:
        prepared = prepare_image(image, max_side)
        params = build_parameters(confidence, iou_threshold, class_filter, max_detections,
                                  parameters)
        return _Request(prepared, params, request_id or uuid.uuid4().hex)

    @staticmethod
    def _finish(req: _Request, result: DetectionResult) -> DetectionResult:
        if req.image.original_size is not None:
            result = result.rescaled(*req.image.original_size)
        return result

    def _parse_http(self, req: _Request, resp: httpx.Response) -> DetectionResult:
        if resp.status_code >= 300:
            raise error_from_response(resp.status_code, resp.content, resp.headers,
                                      reason=resp.reason_phrase, request_id=req.rid)
        return self._codec.parse(resp.content, resp.headers, req.image.name, req.rid)

    def _transport_error(self, e: httpx.HTTPError, rid: str | None) -> DetectionError:
        if isinstance(e, httpx.UnsupportedProtocol):
            return DetectionError(f"unsupported URL {self._url!r}: {e}", request_id=rid)
        if isinstance(e, httpx.TimeoutException):
            return ConnectionFailedError(
                f"{type(e).__name__}: no response from {self._base_url} within {self._timeout}s",
                request_id=rid)
        detail = str(e) or type(e).__name__
        return ConnectionFailedError(f"cannot reach {self._base_url}: {detail}", request_id=rid)

    # -- gRPC ---------------------------------------------------------------------------

    def _grpc_options(self) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
            ("grpc.enable_retries", 0),  # retries are ours (backoff + Retry-After)
        ]
        if self._host:
            options.append(("grpc.default_authority", self._host))
        return options

    def _grpc_metadata(self, rid: str) -> tuple:
        md = [(REQUEST_ID_HEADER, rid)]
        md.extend((k.lower(), v) for k, v in self._headers.items() if k.lower() != "host")
        return tuple(md)

    def _grpc_stub(self, module: Any, method: str) -> Any:
        """A callable for ``method`` on this client's channel (``module``: ``grpc`` or
        ``grpc.aio``), opening the channel on first use."""
        import grpc  # noqa: PLC0415

        from ._grpc import stub  # noqa: PLC0415

        if self._channel is None:
            if self._grpc_tls:
                self._channel = module.secure_channel(
                    self._grpc_target, grpc.ssl_channel_credentials(), options=self._grpc_options())
            else:
                self._channel = module.insecure_channel(self._grpc_target,
                                                        options=self._grpc_options())
        return stub(self._channel, method)

    def _grpc_failure(self, e: Any, rid: str | None, model: str | None) -> DetectionError:
        err = self._grpc_error(e, rid)
        if err.status_code == 404 and model is not None:
            return ModelNotFoundError(model, self._base_url)
        return err

    def _grpc_error(self, e: Any, rid: str | None) -> DetectionError:
        code = e.code().name if callable(getattr(e, "code", None)) else "UNKNOWN"
        details = e.details() if callable(getattr(e, "details", None)) else str(e)
        err = error_from_grpc(code, details or "", request_id=rid)
        if isinstance(err, ConnectionFailedError):
            err = ConnectionFailedError(f"cannot reach {self._base_url}: {err.message}",
                                        request_id=rid)
        return err

    # -- readiness ----------------------------------------------------------------------

    def _not_found(self, available: list[str]) -> ModelNotFoundError:
        return ModelNotFoundError(self._model, self._base_url, available)

    def _not_ready(self, **kwargs: Any) -> ServiceUnavailableError:
        return ServiceUnavailableError(f"model {self._model!r} at {self._base_url} is not ready yet",
                                       **kwargs)

    def _ready_outcome(self, status: int, content: bytes, headers: Mapping[str, str],
                       available: list[str] | None) -> None:
        if status == 200:
            return
        if status == 404:
            raise self._not_found(available or [])
        if status == 503:
            raise self._not_ready(status_code=503,
                                  retry_after=error_from_response(503, b"", headers).retry_after)
        raise error_from_response(status, content, headers)

    def _models_path(self) -> str:
        if self._protocol == "grpc":
            raise DetectionError("listing models needs the REST endpoint (the gRPC protocol has "
                                 "no list call); use a client with protocol 'v1' or 'v2'")
        return "/v2/models" if self._protocol == "v2" else "/v1/models"

    @staticmethod
    def _parse_models(resp: httpx.Response) -> list[str]:
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, resp.content, resp.headers,
                                      reason=resp.reason_phrase)
        try:
            models = json.loads(resp.content)["models"]
            return [str(m if isinstance(m, str) else m["name"]) for m in models]
        except (ValueError, KeyError, TypeError) as e:
            raise DetectionError(f"malformed model list: {type(e).__name__}: {e}") from e

    def _parse_model_info(self, resp: httpx.Response, name: str) -> ModelInfo:
        if resp.status_code == 404:
            raise ModelNotFoundError(name, self._base_url)
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, resp.content, resp.headers,
                                      reason=resp.reason_phrase)
        try:
            return ModelInfo.from_dict(json.loads(resp.content))
        except (ValueError, TypeError) as e:
            raise DetectionError(f"malformed model metadata: {e}") from e

    @staticmethod
    def _grpc_model_info(resp: Any) -> ModelInfo:
        def tensors(items):
            return tuple({"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                         for t in items)

        return ModelInfo(resp.name, tuple(resp.versions), resp.platform, tensors(resp.inputs),
                         tensors(resp.outputs))


# --------------------------------------------------------------------------------------------
# sync client


class DetectionClient(_Common):
    """Synchronous client of the Darknet YOLO transformer (thread-safe).

    Example::

        with DetectionClient("http://127.0.0.1:8080") as client:
            result = client.detect("dog.jpg", confidence=0.5)
            for det in result.detections:
                print(det.class_name, det.confidence, det.xyxy)

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
        transport: an ``httpx.BaseTransport`` (tests use ``httpx.MockTransport``).
        verify: TLS verification (``False``, or a CA bundle path).
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
        super().__init__(httpx.Client, url, model, host, protocol, timeout, retries, backoff_base,
                         backoff_max, max_retry_after, headers, v2_binary, transport, verify)
        #: sleep function used between retries (tests may replace it).
        self._sleep = time.sleep

    def __enter__(self) -> "DetectionClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._channel is not None:
            self._channel.close()
            self._channel = None

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
        max_side: int | None = None,
    ) -> DetectionResult:
        """Detect objects in one image.

        Args:
            image: a path, encoded image bytes, a binary file object, a PIL image or a numpy
                array (HxWx3 uint8 RGB). PIL images and arrays are sent as PNG.
            confidence: minimum confidence (server default 0.5, at least 0.001).
            iou_threshold: NMS IoU threshold (server default 0.45).
            class_filter: class names to keep (list or comma-separated string).
            max_detections: at most this many detections.
            parameters: extra server parameters (e.g. ``{"nms": "per_class"}``).
            request_id: ``x-request-id`` to send (default: a random one, same on every retry).
            max_side: downscale on the client so that the longer side is at most this many
                pixels before upload (less to send; the detections change slightly). Boxes come
                back in the original image's pixels.

        Returns:
            The image's :class:`DetectionResult` (``image`` is the path for path inputs).

        Raises:
            InvalidRequestError: 4xx (never retried).
            ServiceUnavailableError, GatewayTimeoutError, ConnectionFailedError: after retries.
            ServerError: other 5xx.
            DetectionError: malformed response.
            TypeError, ValueError, OSError: the image could not be read/encoded.
        """
        req = self._request(image, confidence, iou_threshold, class_filter, max_detections,
                            parameters, request_id, max_side)
        for attempt in self._retry.attempts():
            with attempt:
                return self._finish(req, self._send(req))
            self._sleep(attempt.delay)
        raise AssertionError("unreachable")  # pragma: no cover

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
        return bounded_map(lambda img: self.detect(img, **detect_kwargs), images, concurrency,
                           ordered=ordered, return_exceptions=return_exceptions)

    def ready(self) -> bool:
        """Whether the server reports the model ready (``False`` on 503 or no connection)."""
        try:
            self._check_once()
            return True
        except DetectionError:
            return False

    def check_ready(self) -> None:
        """Return when the model is ready; otherwise raise one clear error, after the retry
        policy for 503 and connection failures: :class:`ConnectionFailedError` (nothing answers at
        the URL), :class:`ModelNotFoundError` (the server lists the models it has),
        :class:`ServiceUnavailableError` (the model is not ready)."""
        for attempt in self._retry.attempts():
            with attempt:
                return self._check_once()
            self._sleep(attempt.delay)

    def models(self) -> list[str]:
        """Names of the models the server serves (REST: ``GET /v1/models`` or ``/v2/models``)."""
        path = self._models_path()
        try:
            return self._parse_models(self._http.get(path))
        except httpx.HTTPError as e:
            raise self._transport_error(e, None) from e

    def model_info(self, name: str | None = None) -> ModelInfo:
        """Metadata of model ``name`` (default: this client's model): ``GET /v2/models/<name>``
        or gRPC ``ModelMetadata``."""
        name = name or self._model
        if self._protocol == "grpc":
            from ._grpc import messages  # noqa: PLC0415

            msg = messages()["ModelMetadataRequest"](name=name)
            return self._grpc_model_info(self._grpc_call("ModelMetadata", msg, "metadata", name))
        try:
            return self._parse_model_info(self._http.get(f"/v2/models/{name}"), name)
        except httpx.HTTPError as e:
            raise self._transport_error(e, None) from e

    # -- transport ------------------------------------------------------------------------

    def _send(self, req: _Request) -> DetectionResult:
        if self._protocol == "grpc":
            msg = grpc_infer_request(self._model, req.image.data, req.params, req.rid)
            resp = self._grpc_call("ModelInfer", msg, req.rid)
            return grpc_detections(resp, req.image.name, req.rid)
        kwargs = self._codec.build(req.image.data, req.params, req.rid)
        try:
            resp = self._http.post(self._codec.path(), **kwargs)
        except httpx.HTTPError as e:
            raise self._transport_error(e, req.rid) from e
        return self._parse_http(req, resp)

    def _grpc_call(self, method: str, msg: Any, rid: str, model: str | None = None) -> Any:
        import grpc  # noqa: PLC0415

        call = self._grpc_stub(grpc, method)
        try:
            return call(msg, timeout=self._timeout, metadata=self._grpc_metadata(rid))
        except grpc.RpcError as e:
            raise self._grpc_failure(e, rid, model) from e

    def _check_once(self) -> None:
        if self._protocol == "grpc":
            from ._grpc import messages  # noqa: PLC0415

            msg = messages()["ModelReadyRequest"](name=self._model)
            if not self._grpc_call("ModelReady", msg, "ready", self._model).ready:
                raise self._not_ready()
            return
        try:
            resp = self._http.get(self._codec.ready_path())
        except httpx.HTTPError as e:
            raise self._transport_error(e, None) from e
        available = None
        if resp.status_code == 404:
            try:
                available = self.models()
            except DetectionError:
                available = []
        self._ready_outcome(resp.status_code, resp.content, resp.headers, available)


# --------------------------------------------------------------------------------------------
# async client


class AsyncDetectionClient(_Common):
    """Asynchronous client; same API as :class:`DetectionClient` with ``await``/``async for``.

    Args: see :class:`DetectionClient` (``transport`` is an ``httpx.AsyncBaseTransport``).
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
        super().__init__(httpx.AsyncClient, url, model, host, protocol, timeout, retries, backoff_base,
                         backoff_max, max_retry_after, headers, v2_binary, transport, verify)
        #: sleep coroutine used between retries (tests may replace it).
        self._sleep = asyncio.sleep

    async def __aenter__(self) -> "AsyncDetectionClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

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
        max_side: int | None = None,
    ) -> DetectionResult:
        """Detect objects in one image. See :meth:`DetectionClient.detect`."""
        req = self._request(image, confidence, iou_threshold, class_filter, max_detections,
                            parameters, request_id, max_side)
        for attempt in self._retry.attempts():
            with attempt:
                return self._finish(req, await self._send(req))
            await self._sleep(attempt.delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def detect_many(
        self,
        images: Iterable[Any],
        concurrency: int = 4,
        *,
        ordered: bool = True,
        return_exceptions: bool = False,
        **detect_kwargs: Any,
    ) -> AsyncIterator[tuple[int, DetectionResult | BaseException]]:
        """Detect objects in many images, at most ``concurrency`` requests in flight (``async
        for``). See :meth:`DetectionClient.detect_many`."""
        return abounded_map(lambda img: self.detect(img, **detect_kwargs), images, concurrency,
                            ordered=ordered, return_exceptions=return_exceptions)

    async def ready(self) -> bool:
        """Whether the server reports the model ready (``False`` on 503 or no connection)."""
        try:
            await self._check_once()
            return True
        except DetectionError:
            return False

    async def check_ready(self) -> None:
        """See :meth:`DetectionClient.check_ready`."""
        for attempt in self._retry.attempts():
            with attempt:
                return await self._check_once()
            await self._sleep(attempt.delay)

    async def models(self) -> list[str]:
        """See :meth:`DetectionClient.models`."""
        path = self._models_path()
        try:
            return self._parse_models(await self._http.get(path))
        except httpx.HTTPError as e:
            raise self._transport_error(e, None) from e

    async def model_info(self, name: str | None = None) -> ModelInfo:
        """See :meth:`DetectionClient.model_info`."""
        name = name or self._model
        if self._protocol == "grpc":
            from ._grpc import messages  # noqa: PLC0415

            msg = messages()["ModelMetadataRequest"](name=name)
            return self._grpc_model_info(
                await self._grpc_call("ModelMetadata", msg, "metadata", name))
        try:
            return self._parse_model_info(await self._http.get(f"/v2/models/{name}"), name)
        except httpx.HTTPError as e:
            raise self._transport_error(e, None) from e

    # -- transport ------------------------------------------------------------------------

    async def _send(self, req: _Request) -> DetectionResult:
        if self._protocol == "grpc":
            msg = grpc_infer_request(self._model, req.image.data, req.params, req.rid)
            resp = await self._grpc_call("ModelInfer", msg, req.rid)
            return grpc_detections(resp, req.image.name, req.rid)
        kwargs = self._codec.build(req.image.data, req.params, req.rid)
        try:
            resp = await self._http.post(self._codec.path(), **kwargs)
        except httpx.HTTPError as e:
            raise self._transport_error(e, req.rid) from e
        return self._parse_http(req, resp)

    async def _grpc_call(self, method: str, msg: Any, rid: str, model: str | None = None) -> Any:
        import grpc  # noqa: PLC0415

        call = self._grpc_stub(grpc.aio, method)
        try:
            return await call(msg, timeout=self._timeout, metadata=self._grpc_metadata(rid))
        except grpc.RpcError as e:
            raise self._grpc_failure(e, rid, model) from e

    async def _check_once(self) -> None:
        if self._protocol == "grpc":
            from ._grpc import messages  # noqa: PLC0415

            msg = messages()["ModelReadyRequest"](name=self._model)
            if not (await self._grpc_call("ModelReady", msg, "ready", self._model)).ready:
                raise self._not_ready()
            return
        try:
            resp = await self._http.get(self._codec.ready_path())
        except httpx.HTTPError as e:
            raise self._transport_error(e, None) from e
        available = None
        if resp.status_code == 404:
            try:
                available = await self.models()
            except DetectionError:
                available = []
        self._ready_outcome(resp.status_code, resp.content, resp.headers, available)
