"""``ImageTransformer``: the KServe transformer in front of the YOLOv3 predictor.

preprocess: decode uploads in memory and letterbox them exactly as Darknet does.
predict:    one grpc-v2 call to the predictor (errors mapped to 503/504/4xx, never a bare 500).
postprocess: map boxes back to original pixels and build the response document.

Per-request state (geometry, parameters, format, timings) travels in a :class:`Batch` object from
preprocess to postprocess; nothing request-specific is ever stored on ``self``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import grpc
import numpy as np
import orjson
from kserve import InferenceGRPCClient, Model
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from transformer import geometry, imaging, payload
from transformer.settings import TransformerSettings
from yolo_contract import tensors as T
from yolo_contract.errors import (
    BadRequest,
    Overloaded,
    PayloadTooLarge,
    PredictorError,
    PredictorTimeout,
    PredictorUnavailable,
)
from yolo_contract.observability import METRICS, format_server_timing, parse_server_timing

logger = logging.getLogger(__name__)

_GRPC_ERRORS = {
    grpc.StatusCode.UNAVAILABLE: (PredictorUnavailable, "predictor unavailable; retry later"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (PredictorTimeout, "predictor did not answer in time"),
    grpc.StatusCode.CANCELLED: (PredictorUnavailable, "predictor call was cancelled; retry later"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (PayloadTooLarge, "request too large for the predictor"),
    grpc.StatusCode.NOT_FOUND: (PredictorError, "the predictor does not serve this model"),
}


@dataclass
class Batch:
    """Everything one request needs between preprocess and postprocess."""

    tensor: np.ndarray  # [N, 3, H, W] UINT8 or FP32
    letterboxes: list
    params: dict
    fmt: str
    protocol: str  # "v1" or "v2"
    request_id: str
    timings: dict = field(default_factory=dict)
    clip: bool = False


class ImageTransformer(Model):
    def __init__(self, settings: TransformerSettings):
        super().__init__(settings.model_name, return_response_headers=True)
        self.settings = settings
        self._client: InferenceGRPCClient | None = None
        self._inflight = 0
        self._predictor_ready = (0.0, False)  # (checked at, ready)

    def load(self) -> bool:
        if geometry.native_kernel_error() is not None:  # never serve without the letterbox kernel
            raise RuntimeError(geometry.native_kernel_error())
        self.ready = True
        return self.ready

    # ------------------------------------------------------------------ predictor connection
    @property
    def client(self) -> InferenceGRPCClient:
        if self._client is None:
            # Fast reconnects: after a predictor restart the channel must come back within ~1 s,
            # not after gRPC's default exponential backoff (up to 120 s).
            mb = 64 * 1024 * 1024
            self._client = InferenceGRPCClient(
                url=self.settings.predictor_host,
                timeout=self.settings.predictor_request_timeout_seconds,
                retries=0,
                channel_args=[
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                    ("grpc.max_send_message_length", mb),
                    ("grpc.max_receive_message_length", mb),
                    ("grpc.enable_retries", 0),
                ],
            )
        return self._client

    async def healthy(self) -> bool:
        if not self.ready:
            return False
        if not self.settings.enable_predictor_health_check:
            return True
        checked, ready = self._predictor_ready
        if time.monotonic() - checked < 1.0:
            return ready
        try:
            ready = bool(await self.client.is_model_ready(self.name, timeout=1.0))
        except Exception:  # unreachable predictor = not ready; the probe must not raise
            ready = False
        self._predictor_ready = (time.monotonic(), ready)
        return ready

    # ------------------------------------------------------------------ admission control
    async def __call__(self, body, headers=None, verb=None):
        if self._inflight >= self.settings.max_inflight:
            raise Overloaded(f"transformer busy ({self.settings.max_inflight} requests in flight); retry later", retry_after=1)
        self._inflight += 1
        try:
            return await (super().__call__(body, headers) if verb is None else super().__call__(body, headers, verb))
        finally:
            self._inflight -= 1

    # ------------------------------------------------------------------ handlers
    async def preprocess(self, body, headers: dict[str, str] | None = None) -> Batch:
        headers = headers or {}
        s = self.settings
        if isinstance(body, InferRequest):
            protocol = "v2"
            inputs = [i for i in body.inputs if i.name == T.INPUT_IMAGES]
            if len(inputs) != 1 or inputs[0].datatype != "BYTES":
                raise BadRequest(f'expected one BYTES input named "{T.INPUT_IMAGES}" holding encoded images')
            try:
                values = inputs[0].as_numpy()
            except Exception as e:
                raise BadRequest(f'input "{T.INPUT_IMAGES}" data does not match its shape') from e
            images = payload.v2_images(values, s.max_batch_images)
            raw_params = body.parameters or {}
        else:
            protocol = "v1"
            parsed = payload.parse_v1(body, headers, s.max_batch_images)
            images, raw_params = parsed.images, parsed.parameters
        payload.check_total_size(images, s.max_body_bytes)
        params = T.coerce_parameters(raw_params)
        fmt = str(T.plain_value(raw_params.get("format", "json")))
        if fmt not in payload.FORMATS:
            raise BadRequest(f'parameter "format" must be one of {", ".join(payload.FORMATS)}')
        clip = str(T.plain_value(raw_params.get("clip", "false"))).lower() in ("true", "1")
        loop = asyncio.get_running_loop()
        tensor, letterboxes, timings = await loop.run_in_executor(None, self._prepare, images)
        return Batch(tensor, letterboxes, params, fmt, protocol, headers.get(T.REQUEST_ID_HEADER, ""), timings, clip)

    def _prepare(self, images: list[bytes]):
        """Decode + letterbox every image straight into the batch tensor (worker thread)."""
        s = self.settings
        size = s.input_size
        tensor = np.empty((len(images), 3, size, size), np.uint8 if s.wire_dtype == "uint8" else np.float32)
        letterboxes = []
        t_decode = t_letterbox = 0.0
        for i, data in enumerate(images):
            t0 = time.perf_counter()
            rgb = imaging.decode_image_view(data, max_pixels=s.max_pixels)  # no copy of the pixels
            t1 = time.perf_counter()
            METRICS.image_pixels.labels(self.name).observe(rgb.shape[0] * rgb.shape[1])
            _, lb = geometry.preprocess(rgb, size, size, out=tensor[i])  # uint8 or float32, as tensor
            letterboxes.append(lb)
            t_decode += t1 - t0
            t_letterbox += time.perf_counter() - t1
        return tensor, letterboxes, {"decode": t_decode, "letterbox": t_letterbox}

    async def predict(self, batch: Batch, headers: dict[str, str] | None = None, response_headers=None):
        inp = InferInput(T.INPUT_IMAGES, list(batch.tensor.shape), "UINT8" if batch.tensor.dtype == np.uint8 else "FP32")
        inp.set_data_from_numpy(batch.tensor, binary_data=True)
        request = InferRequest(
            model_name=self.name,
            infer_inputs=[inp],
            request_id=batch.request_id or None,
            parameters=T.to_wire_parameters(batch.params) or None,
        )
        metadata = ((T.REQUEST_ID_HEADER, batch.request_id),) if batch.request_id else None
        t0 = time.perf_counter()
        try:
            response = await self.client.infer(request, headers=metadata)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise BadRequest(e.details() or "invalid request") from e  # our predictor's messages are client-safe
            if code == grpc.StatusCode.UNAVAILABLE:
                self._predictor_ready = (0.0, False)
            cls, message = _GRPC_ERRORS.get(code, (PredictorError, "predictor failed to process the request"))
            logger.warning("predictor call failed (request id %s): %s", batch.request_id, code)
            raise cls(message, retry_after=1 if cls is PredictorUnavailable else None) from e
        rpc = time.perf_counter() - t0
        remote = parse_server_timing(T.plain_value((response.parameters or {}).get(T.SERVER_TIMING_PARAMETER, "")) or "")
        batch.timings["transport"] = max(0.0, rpc - remote.get("predictor-total", 0.0))
        batch.timings.update(remote)
        return batch, response

    def postprocess(self, result, headers: dict[str, str] | None = None, response_headers=None):
        batch, response = result
        t0 = time.perf_counter()
        outputs = {o.name: o for o in response.outputs}
        try:
            dets = outputs[T.OUTPUT_DETECTIONS].as_numpy()
            counts = outputs[T.OUTPUT_COUNTS].as_numpy()
            labels = outputs[T.OUTPUT_LABELS].as_numpy()
        except KeyError as e:
            raise PredictorError("predictor response misses a declared output") from e
        if counts.shape[0] != len(batch.letterboxes):
            raise PredictorError("predictor returned a different number of images")
        documents = []
        for i, lb in enumerate(batch.letterboxes):
            n = int(counts[i])
            rows = dets[i, :n].copy()
            rows[:, :4] = geometry.unletterbox_boxes(rows[:, :4], lb)
            if batch.clip:
                rows[:, :4] = geometry.clip_boxes_cxcywh(rows[:, :4], lb.src_w, lb.src_h)
            names = [v.decode() if isinstance(v, bytes) else str(v) for v in labels[i, :n]]
            for name in names:
                METRICS.detections.labels("transformer", self.name, name).inc()
            documents.append(payload.image_document(lb.src_w, lb.src_h, payload.detection_dicts(rows, names), batch.fmt))
        METRICS.images.labels("transformer", self.name).inc(len(documents))
        batch.timings["postprocess"] = time.perf_counter() - t0
        METRICS.observe_stages("transformer", self.name, {k: v for k, v in batch.timings.items() if not k.startswith("predictor-")})
        if response_headers is not None:
            response_headers["server-timing"] = format_server_timing(batch.timings)
        if batch.protocol == "v1":
            return payload.v1_body(documents, batch.fmt)
        out = InferOutput(T.OUTPUT_DETECTIONS, [len(documents)], "BYTES")
        out.set_data_from_numpy(np.array([orjson.dumps(d) for d in documents], dtype=object), binary_data=False)
        return InferResponse(response_id=batch.request_id, model_name=self.name, infer_outputs=[out])

