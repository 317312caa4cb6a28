"""Inference engines: the only place that imports a runtime (ONNX Runtime or OpenVINO).

An engine runs the graph from :mod:`predictor.onnx_graph` on an FP32 ``[N, 3, H, W]`` batch and
returns the raw yolo-layer logits. Engines are not re-entrant by contract: the predictor calls
``run`` from one worker thread only (see :mod:`predictor.batching`).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

ENGINES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "tensorrt")


def ort_providers(device: str) -> list[str]:
    """ONNX Runtime execution providers for ``device`` (``auto``: CUDA when the installed
    onnxruntime has it, e.g. the ``onnxruntime-gpu`` image, else CPU)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = {
        "cpu": ["CPUExecutionProvider"],
        "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        "auto": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    }[device]
    if device in ("cuda", "tensorrt") and wanted[0] not in available:
        raise ValueError(f"--device {device}: {wanted[0]} is not available in this onnxruntime ({', '.join(available)})")
    return [p for p in wanted if p in available]


class Engine(Protocol):
    name: str
    threads: int

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """FP32 ``[N,3,H,W]`` in [0,1] -> one raw logits array per yolo layer."""
        ...


def available_cpus() -> int:
    """CPUs this process may use: affinity mask, capped by a cgroup v2/v1 CPU quota (a pod's limit)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = None
    try:
        raw = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if raw[0] != "max":
            quota = int(raw[0]) / int(raw[1])
    except (OSError, ValueError, IndexError):
        try:
            q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if q > 0 and p > 0:
                quota = q / p
        except (OSError, ValueError):
            pass
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


class OnnxRuntimeEngine:
    """ONNX Runtime on CPU (or CUDA/TensorRT when those providers are installed and asked for)."""

    name = "onnxruntime"

    def __init__(self, model_bytes: bytes, threads: int, providers: list[str] | None = None):
        import onnxruntime as ort

        if hasattr(ort, "preload_dlls") and providers and providers[0] != "CPUExecutionProvider":
            ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels of onnxruntime-gpu[cuda,cudnn]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn a pod's CPU quota and collapse on shared cores (engines.md §4.2).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.threads = threads
        self.session = ort.InferenceSession(model_bytes, opts, providers=providers or ["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers = self.session.get_providers()

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: images})


class OpenVINOEngine:
    """OpenVINO CPU. fp32 is forced unless bf16 is asked for (bf16 moves confidences by up to 0.04)."""

    name = "openvino"

    def __init__(self, model_bytes: bytes, threads: int, precision: str = "fp32"):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(model=model_bytes)
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        }
        self.threads = threads
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs = list(self.compiled.outputs)
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        result = self.request.infer({0: images})
        return [np.array(result[o]) for o in self.outputs]


def create_engine(kind: str, model_bytes: bytes, threads: int, precision: str = "fp32", device: str = "cpu") -> Engine:
    if kind == "onnxruntime":
        if precision != "fp32":
            raise ValueError("onnxruntime engine runs fp32 only; use --engine openvino for bf16")
        return OnnxRuntimeEngine(model_bytes, threads, ort_providers(device))
    if device not in ("cpu", "auto"):
        raise ValueError(f"--device {device} needs --engine onnxruntime")
    if kind == "openvino":
        return OpenVINOEngine(model_bytes, threads, precision)
    raise ValueError(f"unknown engine {kind!r} (choose from {', '.join(ENGINES)})")
