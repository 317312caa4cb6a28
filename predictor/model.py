"""``DarknetPredictor``: the KServe model serving one Darknet YOLO network.

load: read cfg/weights/names, build the ONNX graph, create the engine, warm up, and fix the model's
      :class:`~yolo_contract.model_info.ModelInfo` (size, preprocessing, classes, decode defaults).
predict: v2 / grpc-v2 ``images`` batch in, compact detection tensors out (``yolo_contract.tensors``);
      a describe call (no inputs, ``describe=true``) is answered with the ModelInfo.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Sequence

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from predictor import darknet, yolo
from predictor.batching import Batcher, Job
from predictor.engine import Engine, available_cpus, create_engine
from predictor.onnx_graph import build_onnx
from predictor.settings import PredictorSettings
from predictor.yolo import DecodeParams
from yolo_contract import model_info as MI
from yolo_contract import tensors as T
from yolo_contract.classes import resolve_class_filter
from yolo_contract.errors import BadRequest, PreprocessMismatch, ServingError
from yolo_contract.observability import METRICS, format_server_timing

logger = logging.getLogger(__name__)

#: Decode defaults that do not depend on the lineage.
DEFAULT_IOU_THRESHOLD = 0.45


class DarknetPredictor(Model):
    """One served model. ``files`` defaults to the single model in ``settings.model_dir``; in a
    model repository ``__main__`` gives each model its name and files, and ``served`` lists every
    name the predictor serves (published in ModelInfo.models)."""

    def __init__(self, settings: PredictorSettings, name: str | None = None,
                 files: darknet.ModelFiles | None = None, served: Sequence[str] = ()):
        super().__init__(name or settings.model_name)
        self.settings = settings
        self.files = files
        self.served = tuple(served) or (self.name,)
        self.network: darknet.Network | None = None
        self.info: MI.ModelInfo | None = None
        self.names: list[str] = []
        self.engine: Engine | None = None
        self.batcher: Batcher | None = None
        self.net_w = self.net_h = 0

    # ------------------------------------------------------------------ load
    def load(self) -> bool:
        """Load and check the model files; raises :class:`darknet.ModelFormatError` on any problem.

        Runs once. KServe's data plane calls ``load()`` again whenever a request meets a model that
        is not ready (e.g. while shutting down); that must not reload weights on the event loop.
        """
        if self.engine is not None:
            return self.ready
        s = self.settings
        t0 = time.perf_counter()
        files = self.files or darknet.find_model_files(s.model_dir)
        network = darknet.parse_cfg(files.cfg, lineage=None if s.lineage == "auto" else s.lineage)
        darknet.load_weights(network, files.weights)
        self.names = darknet.read_names(files.names, network.classes)
        self.net_w = s.input_size or network.width
        self.net_h = s.input_size or network.height
        for side in (self.net_w, self.net_h):
            if side % 32 or side > s.max_input_size:
                raise darknet.ModelFormatError(
                    f"{files.cfg}: input size {self.net_w}x{self.net_h} must be multiples of 32 up to {s.max_input_size}"
                )
        info = build_model_info(network, self.names, s, self.name, self.net_w, self.net_h,
                                s.model_version or files_version(files), self.served)
        model = build_onnx(network)
        if s.export_onnx:
            import onnx

            onnx.save(model, s.export_onnx)
            logger.info("wrote ONNX graph to %s", s.export_onnx)
        threads = s.threads or available_cpus()
        self.engine = create_engine(s.engine, model.SerializeToString(), threads, s.precision, s.device)
        del model
        self.network = network
        self.info = info
        # Warm up at the served size (first runs allocate and pick kernels).
        warm = np.full((1, 3, self.net_h, self.net_w), 0.5, np.float32)
        for _ in range(2):
            self.engine.run(warm)
        self.batcher = Batcher(self._run_batch, s.max_batch_size, s.max_batch_delay_ms, s.max_queue)
        logger.info(
            "loaded %s as %r version %s (%s, %s, %d layers, %d classes, %.1f M params, %.2f GFLOP at %dx%d) "
            "on %s %s with %d threads in %.2f s",
            files.weights.name,
            self.name,
            info.version,
            info.lineage,
            info.preprocess,
            len(network.layers),
            network.classes,
            network.n_params / 1e6,
            network.flops(self.net_w, self.net_h) / 1e9,
            self.net_w,
            self.net_h,
            s.engine,
            getattr(self.engine, "providers", [s.precision])[0],
            threads,
            time.perf_counter() - t0,
        )
        self.ready = True
        return self.ready

    def stop(self) -> None:
        # KServe calls this on SIGTERM while gRPC calls may still be in flight: stop admitting new
        # work (not ready -> 503/UNAVAILABLE) but let the batcher finish what it holds.
        self.ready = False

    # ------------------------------------------------------------------ contract
    def get_input_types(self) -> list[dict]:
        return [
            {"name": T.INPUT_IMAGES, "datatype": "UINT8", "shape": [-1, 3, self.net_h, self.net_w]},
            {"name": T.INPUT_CONTENT, "datatype": "FP32", "shape": [-1, 4]},
        ]

    def get_output_types(self) -> list[dict]:
        return [
            {"name": T.OUTPUT_DETECTIONS, "datatype": "FP32", "shape": [-1, -1, len(T.DETECTION_COLUMNS)]},
            {"name": T.OUTPUT_COUNTS, "datatype": "INT32", "shape": [-1]},
            {"name": T.OUTPUT_LABELS, "datatype": "BYTES", "shape": [-1, -1]},
        ]

    def metadata_extra(self) -> dict:
        """What ``GET /v2/models/<name>`` adds to KServe's metadata (``yolo_contract.model_metadata``)."""
        return {
            "versions": [self.info.version],
            "platform": f"darknet-{self.info.lineage}",
            "parameters": self.info.to_dict(),
        }

    # ------------------------------------------------------------------ request handling
    def _decode_params(self, raw: object) -> DecodeParams:
        p = T.coerce_parameters(raw, T.PREDICTOR_PARAMETER_NAMES)
        s, info = self.settings, self.info
        class_ids = None
        if p.get("class_filter"):
            # the authority (the transformer checked the same way against our ModelInfo)
            class_ids = frozenset(resolve_class_filter(p["class_filter"], self.names, self.name))
        return DecodeParams(
            confidence=p.get("confidence", info.confidence),
            iou_threshold=p.get("iou_threshold", info.iou_threshold),
            max_detections=p.get("max_detections", s.max_detections),
            class_ids=class_ids,
            nms=p.get("nms", info.nms),
            beta_nms=info.beta_nms,
        )

    def _check_preprocess(self, payload: InferRequest, shape: list[int]) -> None:
        """A request that says how it was prepared must match this model (else 409 with our info)."""
        mode = T.plain_value((payload.parameters or {}).get(T.PREPROCESS_PARAMETER))
        if mode is None:
            return
        if mode not in T.PREPROCESS_MODES:
            raise BadRequest(f'parameter "{T.PREPROCESS_PARAMETER}" must be one of {", ".join(T.PREPROCESS_MODES)}')
        if mode != self.info.preprocess or shape[2:] != [self.net_h, self.net_w]:
            raise PreprocessMismatch(MI.mismatch_message(self.info))

    def _images(self, payload: InferRequest) -> np.ndarray:
        inputs = [i for i in payload.inputs if i.name == T.INPUT_IMAGES]
        if len(inputs) != 1:
            raise BadRequest(f'expected exactly one input named "{T.INPUT_IMAGES}"')
        inp = inputs[0]
        if inp.datatype not in T.INPUT_DATATYPES:
            raise BadRequest(f'input "{T.INPUT_IMAGES}" must be UINT8 or FP32, got {inp.datatype}')
        shape = [int(d) for d in inp.shape]
        s = self.settings
        if (
            len(shape) != 4
            or shape[1] != 3
            or not 1 <= shape[0] <= s.max_request_batch
            or any(d % 32 or not 32 <= d <= s.max_input_size for d in shape[2:])
        ):
            raise BadRequest(
                f'input "{T.INPUT_IMAGES}" must have shape [N,3,H,W] with 1 <= N <= {s.max_request_batch} and '
                f"H, W multiples of 32 in [32, {s.max_input_size}]; got {shape}"
            )
        self._check_preprocess(payload, shape)
        try:
            arr = inp.as_numpy()
        except Exception as e:  # kserve raises several types for count/type mismatches
            raise BadRequest(f'input "{T.INPUT_IMAGES}" data does not match its shape and datatype') from e
        if arr.size != int(np.prod(shape)):
            raise BadRequest(f'input "{T.INPUT_IMAGES}" has {arr.size} values, shape {shape} needs {int(np.prod(shape))}')
        arr = arr.reshape(shape)
        want = np.uint8 if inp.datatype == "UINT8" else np.float32
        if arr.dtype != want:
            raise BadRequest(f'input "{T.INPUT_IMAGES}" data is not {inp.datatype}')
        if want is np.float32 and not np.isfinite(arr).all():
            raise BadRequest(f'input "{T.INPUT_IMAGES}" contains NaN or infinity')
        return arr

    def _content(self, payload: InferRequest, n: int) -> np.ndarray | None:
        """The optional ``content`` input: FP32 [N, 4], finite, sizes positive."""
        inputs = [i for i in payload.inputs if i.name == T.INPUT_CONTENT]
        if not inputs:
            return None
        inp = inputs[0]
        if len(inputs) != 1 or inp.datatype != "FP32" or [int(d) for d in inp.shape] != [n, 4]:
            raise BadRequest(f'input "{T.INPUT_CONTENT}" must be one FP32 tensor of shape [{n}, 4]')
        try:
            arr = np.asarray(inp.as_numpy(), np.float32).reshape(n, 4)
        except Exception as e:
            raise BadRequest(f'input "{T.INPUT_CONTENT}" data does not match its shape') from e
        if not np.isfinite(arr).all() or (arr[:, 2:] <= 0).any():
            raise BadRequest(f'input "{T.INPUT_CONTENT}" must hold finite offsets and positive sizes')
        return arr

    def _run_batch(self, images: np.ndarray, jobs: Sequence[Job]) -> list[tuple[list[np.ndarray], dict]]:
        """Runs in the batcher's worker thread: one engine call, then per-job decode with its params."""
        t0 = time.perf_counter()
        x = images.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8 else images
        outputs = self.engine.run(np.ascontiguousarray(x))
        t1 = time.perf_counter()
        METRICS.batch_size.labels(self.name).observe(len(images))  # once per engine call
        h, w = images.shape[2:]
        results, offset = [], 0
        heads = self.network.heads
        for job in jobs:
            t_job = time.perf_counter()
            params, content = job.params
            rows = [
                yolo.detect([o[offset + k] for o in outputs], heads, w, h, params,
                            None if content is None else content[k])
                for k in range(job.images.shape[0])
            ]
            offset += job.images.shape[0]
            results.append((rows, {"inference": t1 - t0, "nms": time.perf_counter() - t_job, "batch": len(images)}))
        return results

    async def predict(self, payload, headers: dict[str, str] | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("the predictor speaks the v2 protocol (REST /v2/models/<name>/infer or gRPC)")
        if MI.is_describe(payload.parameters):
            return self._describe(payload)
        started = time.perf_counter()
        images = self._images(payload)
        content = self._content(payload, images.shape[0])
        params = self._decode_params(payload.parameters)
        with METRICS.inflight.labels("predictor", self.name).track_inprogress():
            (rows, timing), waited = await self.batcher.submit(images, (params, content))
        response = self._response(payload, rows)
        timing = {"queue": waited, **timing, "total": time.perf_counter() - started}
        response.parameters = {
            T.SERVER_TIMING_PARAMETER: format_server_timing(timing, prefix="predictor-"),
            T.MODEL_VERSION_PARAMETER: self.info.version,
        }
        if self.settings.revision:
            response.parameters[T.REVISION_PARAMETER] = self.settings.revision
        METRICS.observe_predictor(self.name, timing, rows, self.names, version=self.info.version,
                                  revision=self.settings.revision)
        return response

    def _describe(self, payload: InferRequest) -> InferResponse:
        name, shape, datatype, data = MI.describe_output(self.info)
        binary = bool(payload.from_grpc or payload.use_binary_outputs)
        out = InferOutput(name, shape, datatype)
        out.set_data_from_numpy(data, binary_data=binary)
        return InferResponse(
            response_id=payload.id or "",
            model_name=payload.model_name or self.name,
            infer_outputs=[out],
            model_version=self.info.version,
            use_binary_outputs=binary,
            parameters={T.MODEL_VERSION_PARAMETER: self.info.version},
        )

    def _response(self, payload: InferRequest, rows: list[np.ndarray]) -> InferResponse:
        n = len(rows)
        counts = np.array([r.shape[0] for r in rows], np.int32)
        k = max(1, int(counts.max(initial=0)))
        dets = np.zeros((n, k, len(T.DETECTION_COLUMNS)), np.float32)
        labels = np.full((n, k), b"", dtype=object)
        for i, r in enumerate(rows):
            dets[i, : r.shape[0]] = r
            labels[i, : r.shape[0]] = [self.names[int(c)].encode() for c in r[:, T.COL_CLASS]]
        binary = bool(payload.from_grpc or payload.use_binary_outputs)
        outputs = []
        for name, arr, dtype in (
            (T.OUTPUT_DETECTIONS, dets, "FP32"),
            (T.OUTPUT_COUNTS, counts, "INT32"),
            (T.OUTPUT_LABELS, labels, "BYTES"),
        ):
            out = InferOutput(name, list(arr.shape), dtype)
            out.set_data_from_numpy(arr, binary_data=binary)
            outputs.append(out)
        return InferResponse(
            response_id=payload.id or "",
            model_name=payload.model_name or self.name,
            infer_outputs=outputs,
            model_version=self.info.version,
            use_binary_outputs=binary,
        )


def files_version(files: darknet.ModelFiles, digits: int = 12) -> str:
    """The first ``digits`` hex digits of sha256(cfg bytes + weights bytes + names bytes)."""
    h = hashlib.sha256()
    for path in (files.cfg, files.weights, files.names):
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:digits]


def build_model_info(network: darknet.Network, names: Sequence[str], s: PredictorSettings, name: str,
                     width: int, height: int, version: str, served: Sequence[str]) -> MI.ModelInfo:
    """The ModelInfo of a loaded network: the cfg decides, flags given explicitly override."""
    return MI.ModelInfo(
        name=name,
        version=version,
        lineage=network.lineage,
        input_width=width,
        input_height=height,
        preprocess=s.preprocess if s.preprocess != "auto" else ("letterbox" if network.letter_box else "resize"),
        classes=tuple(names),
        confidence=s.confidence if s.confidence is not None else network.default_confidence,
        iou_threshold=s.iou_threshold if s.iou_threshold is not None else DEFAULT_IOU_THRESHOLD,
        nms=network.nms_kind,
        beta_nms=network.beta_nms,
        models=tuple(served),
    )


__all__ = ["DarknetPredictor", "ServingError", "build_model_info", "files_version"]
