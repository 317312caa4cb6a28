"""The ONNX graph built from a Darknet cfg: full YOLOv3 with generated weights, dynamic sizes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from predictor import darknet
from predictor.engine import OnnxRuntimeEngine, available_cpus, create_engine
from predictor.onnx_graph import build_onnx, output_names
from tests.servers import DATA

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def full_yolov3(tmp_path_factory):
    net = darknet.parse_cfg(DATA / "cfg" / "yolov3.cfg")
    weights = tmp_path_factory.mktemp("yolov3") / "yolov3.weights"
    size = darknet.write_random_weights(net, weights)
    return net, weights, size


def test_full_yolov3_random_weights_build_and_run_at_416(full_yolov3):
    net, weights, size = full_yolov3
    assert size == weights.stat().st_size == 248_007_048  # the size check passes exactly
    darknet.load_weights(net, weights)
    model = build_onnx(net)
    onnx.checker.check_model(model, full_check=False)
    assert output_names(net) == ["yolo82", "yolo94", "yolo106"]
    engine = OnnxRuntimeEngine(model.SerializeToString(), threads=available_cpus())
    x = np.random.default_rng(0).random((1, 3, 416, 416), dtype=np.float32)
    outs = engine.run(x)
    assert [o.shape for o in outs] == [(1, 255, 13, 13), (1, 255, 26, 26), (1, 255, 52, 52)]
    assert all(np.isfinite(o).all() for o in outs)
    # the generated net neither explodes nor vanishes (darknet-semantics.md: head logit std 2-4)
    assert all(0.3 < float(o.std()) < 30 for o in outs)


def test_tiny_graph_is_dynamic_in_batch_and_size():
    net = darknet.parse_cfg(DATA / "cfg" / "yolov3-tiny.cfg")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as t:
        w = Path(t) / "w"
        darknet.write_random_weights(net, w)
        darknet.load_weights(net, w)
    engine = create_engine("onnxruntime", build_onnx(net).SerializeToString(), threads=1)
    for n, h, w in [(1, 416, 416), (3, 320, 608), (2, 608, 608)]:
        outs = engine.run(np.full((n, 3, h, w), 0.5, np.float32))
        assert [o.shape for o in outs] == [(n, 255, h // 32, w // 32), (n, 255, h // 16, w // 16)]
    # batch rows are independent: image k of a batch equals the same image alone
    rng = np.random.default_rng(1)
    x = rng.random((3, 3, 416, 416), dtype=np.float32)
    batched = engine.run(x)
    single = engine.run(x[1:2])
    np.testing.assert_allclose(batched[0][1], single[0][0], rtol=1e-4, atol=1e-4)


def test_unknown_engine_and_bad_precision_are_refused():
    with pytest.raises(ValueError, match="unknown engine"):
        create_engine("tensorflow", b"", 1)
    with pytest.raises(ValueError, match="fp32 only"):
        create_engine("onnxruntime", b"", 1, "bf16")


@pytest.mark.parametrize(
    "model, names",
    [
        ("yolov2-tiny", ["region15"]),
        ("yolov4-tiny", ["yolo30", "yolo37"]),
        ("yolov7-tiny", ["yolo90", "yolo94", "yolo98"]),
    ],
)
def test_family_graphs_build_and_run_at_several_sizes(tmp_path, model, names):
    net = darknet.parse_cfg(DATA / "cfg" / f"{model}.cfg")
    darknet.write_random_weights(net, tmp_path / "w")
    darknet.load_weights(net, tmp_path / "w")
    model_proto = build_onnx(net)
    onnx.checker.check_model(model_proto, full_check=False)
    assert output_names(net) == names
    engine = create_engine("onnxruntime", model_proto.SerializeToString(), threads=1)
    for n, h, w in [(1, 320, 320), (2, 256, 384)]:
        outs = engine.run(np.full((n, 3, h, w), 0.5, np.float32))
        strides = [h // o.shape[2] for o in outs]
        assert [o.shape for o in outs] == [(n, head.channels, h // s, w // s) for head, s in zip(net.heads, strides)]
        assert all(s in (8, 16, 32) for s in strides) and all(np.isfinite(o).all() for o in outs)
