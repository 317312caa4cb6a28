"""Predictor settings: one frozen, typed object built from the command line.

The parser extends ``kserve.model_server.parser`` (``--model_name``, ``--http_port``,
``--grpc_port``, ...) with the predictor's own flags; nothing reads the environment in handlers.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass

from predictor.engine import DEVICES, ENGINES, PRECISIONS


@dataclass(frozen=True)
class PredictorSettings:
    #: Name the model is served under (must equal the transformer's ``--model_name``).
    model_name: str = "yolov3"
    #: One model (``.cfg``, ``.weights``, ``.names``, directly or one directory level down) or a
    #: model repository (several model subdirectories, each served under its name; see
    #: ``predictor.repository``). KServe's storage initializer unpacks ``STORAGE_URI`` here.
    model_dir: str = "/mnt/models"
    #: Repository mode: the model that ``--model_name`` stands for when no subdirectory has that name
    #: ("" = the first name in sorted order).
    default_model: str = ""
    #: Served input size: 0 = the cfg's ``width`` x ``height`` (non-square kept); N = N x N.
    #: Published in ModelInfo; transformer requests must use it (hand-made tensors may use any
    #: multiple of 32 up to ``max_input_size``).
    input_size: int = 0
    #: Darknet lineage of the cfg: ``auto`` (detected from the cfg), ``pjreddie`` or ``alexeyab``.
    lineage: str = "auto"
    #: ``auto`` (the cfg's: ``letter_box=1`` or a pjreddie cfg -> letterbox, else resize),
    #: ``letterbox`` or ``resize``.
    preprocess: str = "auto"
    #: Published model version; "" = the first 12 hex digits of sha256(cfg + weights + names).
    model_version: str = ""
    #: ``onnxruntime`` (default) or ``openvino``.
    engine: str = "onnxruntime"
    #: ``fp32`` (Darknet-exact) or ``bf16`` (OpenVINO only; faster, confidences shift by <= ~0.04).
    precision: str = "fp32"
    #: ``auto`` (CUDA if this onnxruntime build has it, else CPU), ``cpu``, ``cuda`` or ``tensorrt``.
    device: str = "auto"
    #: Inference threads; 0 = the CPUs available to the process (affinity and cgroup quota).
    threads: int = 0
    #: Dynamic batching: at most this many images per engine call.
    max_batch_size: int = 4
    #: Dynamic batching: wait up to this long for more requests once one is queued (0 = only
    #: batch what is already waiting while the engine is busy; adds no latency).
    max_batch_delay_ms: float = 0.0
    #: Images allowed to wait for the engine; beyond that requests fail fast with UNAVAILABLE/503.
    max_queue: int = 64
    #: Largest accepted input side in pixels (multiple of 32).
    max_input_size: int = 1536
    #: Images per request at most.
    max_request_batch: int = 16
    #: Write the built ONNX graph here on load (for other runtimes), then keep serving.
    export_onnx: str = ""
    #: Default decode parameters (overridable per request); None = the lineage's (0.5 pjreddie,
    #: 0.25 AlexeyAB; IoU 0.45).
    confidence: float | None = None
    iou_threshold: float | None = None
    max_detections: int = 10_000
    #: Also log KServe's per-request trace lines, gRPC call lines and library warnings.
    verbose: bool = False
    #: Addresses the REST and gRPC ports listen on: every interface (KServe's), as a pod needs;
    #: the local stack (``yolo-kserve serve``, ``make serve``) passes 127.0.0.1.
    http_host: str = "0.0.0.0"
    grpc_host: str = "[::]"
    http_port: int = 8080
    grpc_port: int = 8081
    enable_grpc: bool = True
    #: Seconds a SIGTERM waits for in-flight requests.
    grace_period: int = 30
    #: Largest REST request body (a v2 JSON tensor of 8 x 608^2 images is ~35 MB).
    max_body_bytes: int = 64 * 1024 * 1024
    #: One JSON object per log line.
    json_logs: bool = False
    #: KServe's logging config file (yaml/json/ini), if any.
    log_config_file: str | None = None
    #: Knative revision of this pod (``$K_REVISION``, read once at start): a metrics label and a
    #: response parameter, so every output names the revision that produced it. "" outside Knative.
    revision: str = ""
    # --- Ray Serve replicas (predictor.ray_serving; needs the `ray` extra) ---
    #: Model replicas behind Ray Serve; 0 serves in this process without Ray.
    ray_replicas: int = 0
    #: CPUs reserved per replica; its inference threads are ceil(this) unless --threads is set.
    ray_num_cpus: float = 1.0
    #: GPUs per replica; fractions (e.g. 0.25) share one device between replicas.
    ray_num_gpus: float = 0.0
    #: Join this Ray cluster (e.g. ray://head:10001 of a KubeRay cluster) instead of starting one.
    ray_address: str = ""
    #: Object store of the local Ray (MiB; Ray's minimum is 75). Needs that much /dev/shm.
    ray_object_store_mb: int = 128
    #: Seconds to wait for every replica to be running at start.
    ray_start_timeout_seconds: float = 300.0
    #: Copy replica logs into this process's log (Ray's log monitor), else only Ray's log files.
    ray_log_to_driver: bool = False


def build_parser() -> argparse.ArgumentParser:
    from yolo_contract.serving import component_parser

    d = PredictorSettings()
    p = component_parser(
        "python -m predictor", "Serve Darknet YOLO models (.cfg + .weights + .names; YOLOv2 to YOLOv7-tiny) as KServe models.", d
    )
    p.add_argument("--model_dir", default=d.model_dir,
                   help="directory with the .cfg, .weights and .names files, or with one subdirectory per model")
    p.add_argument("--default_model", default=d.default_model,
                   help="repository mode: the model --model_name stands for (default: first in sorted order)")
    p.add_argument("--input_size", type=int, default=d.input_size,
                   help="served input size N x N (multiple of 32; 0 = the cfg's width x height)")
    p.add_argument("--lineage", choices=LINEAGE_CHOICES, default=d.lineage, help="Darknet lineage of the cfg")
    p.add_argument("--preprocess", choices=PREPROCESS_CHOICES, default=d.preprocess,
                   help="letterbox or resize (auto = from the cfg)")
    p.add_argument("--model_version", default=d.model_version, help="published version (default: sha256 of the files)")
    p.add_argument("--engine", choices=ENGINES, default=d.engine)
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision)
    p.add_argument("--device", choices=DEVICES, default=d.device, help="execution device (onnxruntime engine)")
    p.add_argument("--threads", type=int, default=d.threads, help="inference threads (0 = CPUs available)")
    p.add_argument("--max_batch_size", type=int, default=d.max_batch_size)
    p.add_argument("--max_batch_delay_ms", type=float, default=d.max_batch_delay_ms)
    p.add_argument("--max_queue", type=int, default=d.max_queue, help="images waiting before 503/UNAVAILABLE")
    p.add_argument("--max_input_size", type=int, default=d.max_input_size)
    p.add_argument("--max_request_batch", type=int, default=d.max_request_batch)
    p.add_argument("--export_onnx", default=d.export_onnx, help="also write the ONNX graph to this path")
    p.add_argument("--confidence", type=_auto_float, default=d.confidence, help="default threshold (auto = the lineage's)")
    p.add_argument("--iou_threshold", type=_auto_float, default=d.iou_threshold, help="default NMS IoU (auto = 0.45)")
    p.add_argument("--max_detections", type=int, default=d.max_detections)
    p.add_argument("--revision", default=os.environ.get("K_REVISION", d.revision),
                   help="Knative revision named in metrics and responses (default: $K_REVISION)")
    _add_ray_arguments(p, d)
    return p


LINEAGE_CHOICES = ("auto", "pjreddie", "alexeyab")
PREPROCESS_CHOICES = ("auto", "letterbox", "resize")


def _auto_float(text: str) -> float | None:
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from e


def _add_ray_arguments(p: argparse.ArgumentParser, d: PredictorSettings) -> None:
    g = p.add_argument_group("Ray Serve replicas (pip install 'yolo-kserve[ray]')")
    g.add_argument("--ray_replicas", type=int, default=d.ray_replicas, help="model replicas on Ray Serve (0 = no Ray)")
    g.add_argument("--ray_num_cpus", type=float, default=d.ray_num_cpus, help="CPUs per replica (= its threads)")
    g.add_argument("--ray_num_gpus", type=float, default=d.ray_num_gpus, help="GPUs per replica; 0.25 = a quarter")
    g.add_argument("--ray_address", default=d.ray_address, help="join this Ray cluster instead of starting one")
    g.add_argument("--ray_object_store_mb", type=int, default=d.ray_object_store_mb, help="local Ray object store")
    g.add_argument("--ray_start_timeout_seconds", type=float, default=d.ray_start_timeout_seconds)
    g.add_argument("--ray_log_to_driver", action="store_true", help="replica logs in this process's output")


def _check(s: PredictorSettings) -> None:
    if s.input_size and (s.input_size % 32 or not 32 <= s.input_size <= s.max_input_size):
        raise ValueError(f"--input_size {s.input_size} must be a multiple of 32 in [32, {s.max_input_size}]")
    if s.max_batch_size < 1 or s.max_queue < 1 or s.max_request_batch < 1:
        raise ValueError("--max_batch_size, --max_queue and --max_request_batch must be >= 1")
    if s.precision == "bf16" and s.engine != "openvino":
        raise ValueError("--precision bf16 needs --engine openvino")
    if (s.confidence is not None and not 0.001 <= s.confidence <= 1) or (
        s.iou_threshold is not None and not 0 <= s.iou_threshold <= 1
    ):
        raise ValueError("--confidence must be in [0.001, 1] and --iou_threshold in [0, 1]")
    if s.model_version and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", s.model_version):
        raise ValueError("--model_version: up to 64 letters, digits, '.', '_', '+' or '-'")
    _check_ray(s)


def _check_ray(s: PredictorSettings) -> None:
    if s.ray_replicas < 0:
        raise ValueError("--ray_replicas must be >= 0")
    if not s.ray_replicas:
        if s.ray_address:
            raise ValueError("--ray_address needs --ray_replicas N")
        return
    if s.ray_num_cpus <= 0 or s.ray_num_gpus < 0:
        raise ValueError("--ray_num_cpus must be > 0 and --ray_num_gpus >= 0")
    if s.ray_num_gpus > 1 and not float(s.ray_num_gpus).is_integer():
        raise ValueError("--ray_num_gpus above 1 must be a whole number (Ray's rule)")
    if s.device in ("cuda", "tensorrt") and not s.ray_num_gpus:
        raise ValueError(f"--device {s.device} with --ray_replicas needs --ray_num_gpus > 0 (Ray hides GPUs otherwise)")
    if s.ray_object_store_mb < 75 or s.ray_start_timeout_seconds <= 0:
        raise ValueError("--ray_object_store_mb must be >= 75 and --ray_start_timeout_seconds > 0")


def parse_settings(argv: list[str] | None = None) -> PredictorSettings:
    """Settings from the command line; invalid values exit with argparse's usage error."""
    from yolo_contract.serving import parse_into

    return parse_into(PredictorSettings, build_parser(), argv, _check)
