"""GPU tier (needs --run-gpu, onnxruntime-gpu and a CUDA device): CUDA provider parity with Darknet."""

from __future__ import annotations

import numpy as np
import pytest

from predictor import darknet
from predictor.engine import create_engine
from predictor.onnx_graph import build_onnx
from tests.servers import DATA

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("device", ["cuda"])
def test_cuda_head_tensors_equal_darknet(tiny_model_dir, device):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider")
    net = darknet.parse_cfg(tiny_model_dir / "yolov3-tiny.cfg")
    darknet.load_weights(net, tiny_model_dir / "yolov3-tiny.weights")
    engine = create_engine("onnxruntime", build_onnx(net).SerializeToString(), 4, device=device)
    assert engine.providers[0] == "CUDAExecutionProvider"
    x = np.load(DATA / "dog_tensors" / "input.npy")
    for out, name in zip(engine.run(np.repeat(x, 8, axis=0)), ("conv15", "conv22")):
        ref = np.load(DATA / "dog_tensors" / f"{name}.npy")[0]
        for k in range(8):
            assert float(np.abs(out[k] - ref).max() / np.abs(ref).max()) <= 1e-3  # TF32 convs allowed
