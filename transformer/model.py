"""``ImageTransformer``: the KServe transformer in front of the YOLO predictor.

The model decides, the transformer follows: input size, preprocessing (letterbox or resize) and
classes are the predictor model's :class:`~yolo_contract.model_info.ModelInfo`, learned by a describe
call at start and kept current from every answer (``model_version``, ``PreprocessMismatch``).

preprocess:  decode uploads in memory and prepare them as the model wants (Darknet-exact).
predict:     one grpc-v2 call to the predictor (errors mapped to 503/504/4xx, never a bare 500); a
             call refused because the model changed is prepared again and retried (at most twice).
postprocess: map boxes back to original pixels and build the response document.

One ImageTransformer serves each name the predictor serves (a model repository); they share one
:class:`PredictorLink`. A request that names a predictor revision by tag (``--revision_header``,
:mod:`transformer.routing`) is handled by the name's twin on that revision's link, which describes
and follows the model there. Responses name what answered (model, version, predictor revision,
tag) in headers, and the output metrics carry the version and revision. Per-request state (geometry, parameters, format, timings) travels in a
:class:`Batch` object from preprocess to postprocess; nothing request-specific is stored on ``self``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import numpy as np
import orjson
from kserve import InferenceGRPCClient, Model
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from transformer import geometry, imaging, payload, routing
from transformer.settings import TransformerSettings
from yolo_contract import model_info as MI
from yolo_contract import tensors as T
from yolo_contract.classes import resolve_class_filter
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
#: Calls refused with PreprocessMismatch are prepared again for the model that refused and retried
#: this many times at most (a rollout between models of different input geometry).
MAX_MISMATCH_RETRIES = 2
#: Seconds between describe attempts while the predictor is not up yet.
DESCRIBE_RETRY_SECONDS = 0.5


def _no_client_tracebacks(record: logging.LogRecord) -> bool:
    """KServe's gRPC client logs every failed call with a traceback (logger ``kserve.trace``). This
    model handles each failure itself: one warning line for real failures (:func:`_rpc_error`),
    nothing for a refusal because the model changed (expected during a rollout) or for describe
    attempts while the predictor is starting."""
    return not (record.msg == "Failed to infer: %s" and record.args and isinstance(record.args[0], grpc.RpcError))


logging.getLogger("kserve.trace").addFilter(_no_client_tracebacks)


def _rpc_error(e: grpc.RpcError, request_id: str, log: bool = True) -> Exception:
    """A predictor call's gRPC error as the typed error the client gets."""
    code = e.code() if hasattr(e, "code") else None
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return BadRequest(e.details() or "invalid request")  # our predictor's messages are client-safe
    cls, message = _GRPC_ERRORS.get(code, (PredictorError, "predictor failed to process the request"))
    if log:
        logger.warning("predictor call failed (request id %s): %s", request_id or "-", code)
    return cls(message, retry_after=1 if cls is PredictorUnavailable else None)


@dataclass
class Batch:
    """Everything one request needs between preprocess and postprocess."""

    images: list[bytes]  # the uploads, kept to prepare them again if the model changed
    info: MI.ModelInfo  # the model the tensor was prepared for
    tensor: np.ndarray  # [N, 3, H, W] UINT8 or FP32
    letterboxes: list
    params: dict
    fmt: str
    protocol: str  # "v1" or "v2"
    request_id: str
    timings: dict = field(default_factory=dict)
    clip: bool = False
    version: str = ""  # the predictor model that answered
    revision: str = ""  # the Knative revision of the predictor that answered ("" outside Knative)


class PredictorLink:
    """What every served name shares: the gRPC client, the in-flight count, the predictor-ready
    cache and the served models (registered with KServe's server as they are described).

    The link of the predictor route (``tag`` ""), or of one revision picked by tag (``latest`` /
    ``prev``, see :mod:`transformer.routing`): :meth:`tagged` creates those on first use, one per
    tag, each with its own channel and its own models (a revision may serve another model)."""

    def __init__(self, settings: TransformerSettings, host: str | None = None, tag: str = "",
                 decoder: ThreadPoolExecutor | None = None):
        self.settings = settings
        self.host = host or settings.predictor_host
        self.tag = tag
        self._client: InferenceGRPCClient | None = None
        self.inflight = 0
        self.models: dict[str, ImageTransformer] = {}
        #: ``register(model)`` adds a model to the running server (set by ``__main__``)
        self.register = None
        #: Decodes and prepares uploads; its size bounds decode memory (``--decode_threads``), so
        #: the links of tagged revisions share the route link's pool.
        self.decoder = decoder or ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self._targets = routing.revision_targets(settings.predictor_host, settings.revision_hosts) \
            if settings.revision_header and not tag else {}
        self._tagged: dict[str, PredictorLink] = {}

    def route(self, headers: dict[str, str] | None) -> str:
        """The tag a request asks for with the revision header ("" without it); 400 for others."""
        name = self.settings.revision_header
        value = (headers or {}).get(name, "") if name else ""
        if not value:
            return ""
        try:
            tag = routing.canonical_tag(value)
        except ValueError as e:
            raise BadRequest(f'header "{name}" {e}') from None
        if tag not in self._targets:
            raise BadRequest(f'header "{name}": no predictor revision is configured for "{tag}"')
        return tag

    def tagged(self, tag: str) -> "PredictorLink":
        """The link to the predictor revision tagged ``tag`` (created on first use)."""
        link = self._tagged.get(tag)
        if link is None:
            link = self._tagged[tag] = PredictorLink(self.settings, self._targets[tag], tag, decoder=self.decoder)
            logger.info("routing %s=%s to %s", self.settings.revision_header, tag, link.host)
        return link

    @property
    def client(self) -> InferenceGRPCClient:
        if self._client is None:
            # Fast reconnects: after a predictor restart the channel must come back within ~1 s,
            # not after gRPC's default exponential backoff (up to 120 s).
            mb = 64 * 1024 * 1024
            self._client = InferenceGRPCClient(
                url=self.host,
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


class ImageTransformer(Model):
    def __init__(self, settings: TransformerSettings, name: str | None = None, link: PredictorLink | None = None):
        super().__init__(name or settings.model_name, return_response_headers=True)
        self.settings = settings
        self.link = link or PredictorLink(settings)
        self.link.models.setdefault(self.name, self)
        self.tracker = MI.ModelTracker()
        self._describing: asyncio.Task | None = None
        self._predictor_ready = (0.0, False)  # (checked at, ready)
        self._stopped = False
        # The first model describes the predictor at start (KServe runs start_engine() with the
        # servers); the names it learns are registered as they are found.
        self.engine = link is None

    def load(self) -> bool:
        if geometry.native_kernel_error() is not None:  # never serve without the letterbox kernel
            raise RuntimeError(geometry.native_kernel_error())
        self.ready = True
        return self.ready

    def stop(self) -> None:
        self._stopped = True
        self.ready = False

    def stop_engine(self) -> None:
        self.stop()

    @property
    def info(self) -> MI.ModelInfo | None:
        """The model requests are prepared for (None until described)."""
        return self.tracker.current()

    # ------------------------------------------------------------------ describing the predictor
    async def start_engine(self) -> None:
        """Describe the predictor until it answers (readiness stays false until then); never raises."""
        failures = 0
        while not self._stopped and self.info is None:
            try:
                await self._describe_once()
            except Exception as e:  # not up yet: retry; the probe keeps us unready meanwhile
                failures += 1
                if failures == 1 or failures % 120 == 0:
                    logger.info("waiting for the predictor to describe %r: %s: %s", self.name, type(e).__name__, e)
                await asyncio.sleep(DESCRIBE_RETRY_SECONDS)
        if self.info is not None:
            logger.info("following %s", _summary(self.info))

    async def _describe_once(self) -> MI.ModelInfo:
        """One describe call (concurrent callers share it); raises the typed predictor errors."""
        if self._describing is None or self._describing.done():
            self._describing = asyncio.get_running_loop().create_task(self._describe())
        return await asyncio.shield(self._describing)

    async def _describe(self) -> MI.ModelInfo:
        request = InferRequest(model_name=self.name, infer_inputs=[], parameters=MI.describe_parameters())
        timeout = min(5.0, self.settings.predictor_request_timeout_seconds)
        try:
            response = await self.link.client.infer(request, timeout=timeout)
            info = MI.read_describe_output({o.name: o.as_numpy() for o in response.outputs})
        except grpc.RpcError as e:  # start_engine logs the wait; requests log their own outcome
            raise _rpc_error(e, "describe", log=False) from e
        except ValueError as e:
            logger.warning("the predictor's describe answer for %r is malformed: %s", self.name, e)
            raise PredictorError("the predictor's model description is malformed") from e
        self.tracker.observe(info.version, info)
        self._mirror(info.models)
        return info

    def _describe_later(self) -> None:
        """Refresh the description in the background (a new version answered)."""
        if self._describing is None or self._describing.done():
            self._describing = asyncio.get_running_loop().create_task(self._describe())
            self._describing.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _mirror(self, names) -> None:
        """Serve every name the predictor serves (one model object per name, shared link)."""
        for name in names:
            if name in self.link.models or self.link.register is None:
                continue
            sibling = self._sibling(name, self.link)
            self.link.register(sibling)
            logger.info("serving %r too (the predictor serves it)", name)
            sibling._describe_later()

    async def _model_info(self) -> MI.ModelInfo:
        info = self.info
        return info if info is not None else await self._describe_once()

    async def healthy(self) -> bool:
        if not self.ready:
            return False
        if self.info is None:
            if not self.engine:  # start_engine describes the first model; the others on demand
                self._describe_later()
            return False
        if not self.settings.enable_predictor_health_check:
            return True
        checked, ready = self._predictor_ready
        if time.monotonic() - checked < 1.0:
            return ready
        try:
            ready = bool(await self.link.client.is_model_ready(self.name, timeout=1.0))
        except Exception:  # unreachable predictor = not ready; the probe must not raise
            ready = False
        self._predictor_ready = (time.monotonic(), ready)
        return ready

    # ------------------------------------------------------------------ metadata
    def get_input_types(self) -> list[dict]:
        return [{"name": T.INPUT_IMAGES, "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": T.OUTPUT_DETECTIONS, "datatype": "BYTES", "shape": [-1]}]

    async def metadata_extra(self) -> dict:
        """``GET /v2/models/<name>``: the transformer's API (encoded images in, one JSON document per
        image out) with the predictor model's ModelInfo as ``parameters`` (classes, size, version)."""
        try:
            info = await self._model_info()
        except Exception:  # the predictor is not up: the API is still described
            return {"platform": "yolo-kserve-transformer"}
        return {"platform": "yolo-kserve-transformer", "versions": [info.version], "parameters": info.to_dict()}

    # ------------------------------------------------------------------ admission control
    async def __call__(self, body, headers=None, verb=None):
        target = self._routed(headers)
        link = self.link
        if link.inflight >= self.settings.max_inflight:
            raise Overloaded(f"transformer busy ({self.settings.max_inflight} requests in flight); retry later", retry_after=1)
        link.inflight += 1
        try:
            call = super(ImageTransformer, target).__call__
            with METRICS.inflight.labels("transformer", self.name).track_inprogress():
                return await (call(body, headers) if verb is None else call(body, headers, verb))
        finally:
            link.inflight -= 1

    def _routed(self, headers) -> "ImageTransformer":
        """This model, or its twin on the predictor revision the revision header names (created on
        first use: it describes that revision's model and follows it on its own)."""
        tag = self.link.route(headers)
        if not tag:
            return self
        link = self.link.tagged(tag)
        twin = link.models.get(self.name)
        return twin if twin is not None else self._sibling(self.name, link)

    def _sibling(self, name: str, link: PredictorLink) -> "ImageTransformer":
        """A loaded model serving ``name`` on ``link`` (it joins ``link.models``), set up like this one:
        the names the predictor serves (:meth:`_mirror`) and the twins on tagged revisions (:meth:`_routed`)."""
        model = ImageTransformer(self.settings, name, link)
        model.enable_latency_logging = self.enable_latency_logging
        model.load()
        return model

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
        params = T.coerce_parameters(raw_params, T.PUBLIC_PARAMETER_NAMES)
        fmt, clip = payload.response_options(raw_params)
        info = await self._model_info()
        if params.get("class_filter") and info.classes:
            # refused here, before any image is decoded; the predictor checks again (the authority)
            ids = resolve_class_filter(params["class_filter"], info.classes, self.name)
            params["class_filter"] = tuple(info.classes[i] for i in ids)
        loop = asyncio.get_running_loop()
        tensor, letterboxes, timings = await loop.run_in_executor(self.link.decoder, self._prepare, images, info)
        return Batch(images, info, tensor, letterboxes, params, fmt, protocol,
                     headers.get(T.REQUEST_ID_HEADER, ""), timings, clip)

    def _prepare(self, images: list[bytes], info: MI.ModelInfo):
        """Decode + preprocess every image as the model wants, straight into the batch tensor (worker thread)."""
        s = self.settings
        w, h = info.size
        tensor = np.empty((len(images), 3, h, w), np.uint8 if s.wire_dtype == "uint8" else np.float32)
        letterboxes = []
        t_decode = t_letterbox = 0.0
        for i, data in enumerate(images):
            t0 = time.perf_counter()
            rgb = imaging.decode_image_view(data, max_pixels=s.max_pixels)  # no copy of the pixels
            t1 = time.perf_counter()
            _, lb = geometry.preprocess(rgb, w, h, info.preprocess, out=tensor[i])  # uint8 or float32, as tensor
            del rgb  # one decoded image at a time (a 64 MP photo is ~190 MB of pixels)
            letterboxes.append(lb)
            t_decode += t1 - t0
            t_letterbox += time.perf_counter() - t1
        return tensor, letterboxes, {"decode": t_decode, "letterbox": t_letterbox}

    def _request(self, batch: Batch) -> InferRequest:
        inp = InferInput(T.INPUT_IMAGES, list(batch.tensor.shape), "UINT8" if batch.tensor.dtype == np.uint8 else "FP32")
        inp.set_data_from_numpy(batch.tensor, binary_data=True)
        content = np.array([(*lb.box_offset, lb.new_w, lb.new_h) for lb in batch.letterboxes], np.float32)
        where = InferInput(T.INPUT_CONTENT, list(content.shape), "FP32")
        where.set_data_from_numpy(content, binary_data=True)
        return InferRequest(
            model_name=self.name,
            infer_inputs=[inp, where],
            request_id=batch.request_id or None,
            parameters={**T.to_wire_parameters(batch.params), T.PREPROCESS_PARAMETER: batch.info.preprocess},
        )

    async def predict(self, batch: Batch, headers: dict[str, str] | None = None, response_headers=None):
        metadata = ((T.REQUEST_ID_HEADER, batch.request_id),) if batch.request_id else None
        t0 = time.perf_counter()
        for attempt in range(MAX_MISMATCH_RETRIES + 1):
            try:
                response = await self.link.client.infer(self._request(batch), headers=metadata)
                break
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else None
                if code == grpc.StatusCode.UNAVAILABLE:
                    self._predictor_ready = (0.0, False)
                if code != grpc.StatusCode.FAILED_PRECONDITION:
                    raise _rpc_error(e, batch.request_id) from e
                # Prepared for another model than the one that answered: follow it and try again.
                refused_by = MI.read_mismatch_message(e.details() or "")
                if refused_by is None:
                    refused_by = await self._describe_once()
                else:
                    if self.tracker.observe(refused_by.version, refused_by):
                        self._describe_later()  # the message left out the class names
                    self._mirror(refused_by.models)
                if attempt == MAX_MISMATCH_RETRIES:
                    logger.warning("request id %s: the model behind %r kept changing; gave up after %d retries",
                                   batch.request_id or "-", self.name, attempt)
                    raise PredictorUnavailable("the model changed while the request was prepared; retry", retry_after=1) from e
                t_retry = time.perf_counter()
                batch.info = self.info
                loop = asyncio.get_running_loop()
                batch.tensor, batch.letterboxes, again = await loop.run_in_executor(self.link.decoder, self._prepare, batch.images, batch.info)
                for stage, seconds in again.items():
                    batch.timings[stage] = batch.timings.get(stage, 0.0) + seconds
                batch.timings["retry"] = batch.timings.get("retry", 0.0) + time.perf_counter() - t_retry
        rpc = time.perf_counter() - t0
        answer = response.parameters or {}
        version = response.model_version or str(T.plain_value(answer.get(T.MODEL_VERSION_PARAMETER, "")))
        if version and self.tracker.observe(version):
            self._describe_later()  # a version we have not seen answered: learn it
        batch.version = version or batch.info.version
        batch.revision = str(T.plain_value(answer.get(T.REVISION_PARAMETER, "")) or "")
        remote = parse_server_timing(T.plain_value(answer.get(T.SERVER_TIMING_PARAMETER, "")) or "")
        batch.timings["transport"] = max(0.0, rpc - remote.get("predictor-total", 0.0) - batch.timings.get("retry", 0.0))
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
        documents, answered = [], []
        for i, lb in enumerate(batch.letterboxes):
            n = int(counts[i])
            rows = dets[i, :n].copy()
            rows[:, :4] = geometry.unletterbox_boxes(rows[:, :4], lb)
            if batch.clip:
                rows[:, :4] = geometry.clip_boxes_cxcywh(rows[:, :4], lb.src_w, lb.src_h)
            names = [v.decode() if isinstance(v, bytes) else str(v) for v in labels[i, :n]]
            answered.append(list(zip(names, rows[:, T.COL_CONF].tolist())))
            documents.append(payload.image_document(lb.src_w, lb.src_h, payload.detection_dicts(rows, names), batch.fmt))
        METRICS.observe_output("transformer", self.name, batch.version, answered,
                               pixels=[lb.src_w * lb.src_h for lb in batch.letterboxes], revision=batch.revision)
        batch.timings["postprocess"] = time.perf_counter() - t0
        METRICS.observe_stages("transformer", self.name, {k: v for k, v in batch.timings.items() if not k.startswith("predictor-")})
        if response_headers is not None:
            response_headers["server-timing"] = format_server_timing(batch.timings)
            response_headers.update(self._identity(batch))
        if batch.protocol == "v1":
            return payload.v1_body(documents, batch.fmt)
        out = InferOutput(T.OUTPUT_DETECTIONS, [len(documents)], "BYTES")
        out.set_data_from_numpy(np.array([orjson.dumps(d) for d in documents], dtype=object), binary_data=False)
        return InferResponse(response_id=batch.request_id, model_name=self.name, infer_outputs=[out],
                             model_version=batch.version)

    def _identity(self, batch: Batch) -> dict[str, str]:
        """Response headers naming what answered: model, version, predictor revision, routed tag."""
        out = {T.MODEL_NAME_HEADER: self.name, T.MODEL_VERSION_HEADER: batch.version}
        if batch.revision:
            out[T.PREDICTOR_REVISION_HEADER] = batch.revision
        if self.link.tag:
            out[self.settings.revision_header] = self.link.tag
        return out


def _summary(info: MI.ModelInfo) -> str:
    return (f"{info.name!r} version {info.version}: {info.lineage} {info.input_width}x{info.input_height} "
            f"{info.preprocess}, {len(info.classes)} classes, serving {', '.join(info.models)}")
