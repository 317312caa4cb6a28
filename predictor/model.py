"""``YoloV3Predictor``: the KServe model serving a Darknet YOLOv3 network.

load: read cfg/weights/names from ``model_dir``, build the ONNX graph, create the engine, warm up.
predict: v2 / grpc-v2 ``images`` batch in, compact detection tensors out (``yolo_contract.tensors``).
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from predictor import darknet
from predictor.batching import Batcher, Job
from predictor.engine import Engine, available_cpus, create_engine
from predictor.onnx_graph import build_onnx
from predictor.settings import PredictorSettings
from predictor.yolo import DecodeParams, detect
from yolo_contract import tensors as T
from yolo_contract.errors import BadRequest, ServingError
from yolo_contract.observability import METRICS, format_server_timing

logger = logging.getLogger(__name__)


class YoloV3Predictor(Model):
    def __init__(self, settings: PredictorSettings):
        super().__init__(settings.model_name)
        self.settings = settings
        self.network: darknet.Network | None = None
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
        files = darknet.find_model_files(s.model_dir)
        network = darknet.parse_cfg(files.cfg)
        darknet.load_weights(network, files.weights)
        self.names = darknet.read_names(files.names, network.classes)
        self.net_w = s.input_size or network.width
        self.net_h = s.input_size or network.height
        for side in (self.net_w, self.net_h):
            if side % 32 or side > s.max_input_size:
                raise darknet.ModelFormatError(
                    f"{files.cfg}: input size {self.net_w}x{self.net_h} must be multiples of 32 up to {s.max_input_size}"
                )
        model = build_onnx(network)
        if s.export_onnx:
            import onnx

            onnx.save(model, s.export_onnx)
            logger.info("wrote ONNX graph to %s", s.export_onnx)
        threads = s.threads or available_cpus()
        self.engine = create_engine(s.engine, model.SerializeToString(), threads, s.precision, s.device)
        del model
        self.network = network
        # Warm up at the declared size (first runs allocate and pick kernels).
        warm = np.full((1, 3, self.net_h, self.net_w), 0.5, np.float32)
        for _ in range(2):
            self.engine.run(warm)
        self.batcher = Batcher(self._run_batch, s.max_batch_size, s.max_batch_delay_ms, s.max_queue)
        logger.info(
            "loaded %s (%d layers, %d classes, %.1f M params, %.2f GFLOP at %dx%d) on %s %s with %d threads in %.2f s",
            files.weights.name,
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
        return [{"name": T.INPUT_IMAGES, "datatype": "UINT8", "shape": [-1, 3, self.net_h, self.net_w]}]

    def get_output_types(self) -> list[dict]:
        return [
            {"name": T.OUTPUT_DETECTIONS, "datatype": "FP32", "shape": [-1, -1, len(T.DETECTION_COLUMNS)]},
            {"name": T.OUTPUT_COUNTS, "datatype": "INT32", "shape": [-1]},
            {"name": T.OUTPUT_LABELS, "datatype": "BYTES", "shape": [-1, -1]},
        ]

    # ------------------------------------------------------------------ request handling
    def _decode_params(self, raw: object) -> DecodeParams:
        p = T.coerce_parameters(raw)
        s = self.settings
        class_ids = None
        if p.get("class_filter"):
            unknown = [n for n in p["class_filter"] if n not in self.names]
            if unknown:
                # request data is never echoed back (log/response hygiene): count, don't quote
                raise BadRequest(
                    f"class_filter has {len(unknown)} name(s) that are not among this model's {len(self.names)} classes"
                )
            class_ids = frozenset(self.names.index(n) for n in p["class_filter"])
        return DecodeParams(
            confidence=p.get("confidence", s.confidence),
            iou_threshold=p.get("iou_threshold", s.iou_threshold),
            max_detections=p.get("max_detections", s.max_detections),
            class_ids=class_ids,
            per_class_nms=p.get("nms") == "per_class",
        )

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

    def _run_batch(self, images: np.ndarray, jobs: Sequence[Job]) -> list[tuple[list[np.ndarray], dict]]:
        """Runs in the batcher's worker thread: one engine call, then per-job decode with its params."""
        t0 = time.perf_counter()
        x = images.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8 else images
        outputs = self.engine.run(np.ascontiguousarray(x))
        t1 = time.perf_counter()
        METRICS.batch_size.labels(self.name).observe(len(images))  # once per engine call
        h, w = images.shape[2:]
        results, offset = [], 0
        layers = self.network.yolo_layers
        for job in jobs:
            t_job = time.perf_counter()
            rows = [
                detect([o[offset + k] for o in outputs], layers, w, h, job.params)
                for k in range(job.images.shape[0])
            ]
            offset += job.images.shape[0]
            results.append((rows, {"inference": t1 - t0, "nms": time.perf_counter() - t_job, "batch": len(images)}))
        return results

    async def predict(self, payload, headers: dict[str, str] | None = None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("the predictor speaks the v2 protocol (REST /v2/models/<name>/infer or gRPC)")
        started = time.perf_counter()
        images = self._images(payload)
        params = self._decode_params(payload.parameters)
        with METRICS.inflight.labels("predictor", self.name).track_inprogress():
            (rows, timing), waited = await self.batcher.submit(images, params)
        response = self._response(payload, rows)
        timing = {"queue": waited, **timing, "total": time.perf_counter() - started}
        response.parameters = {T.SERVER_TIMING_PARAMETER: format_server_timing(timing, prefix="predictor-")}
        METRICS.observe_predictor(self.name, timing, images.shape, rows, self.names)
        return response

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
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=binary,
        )


__all__ = ["YoloV3Predictor", "ServingError"]
