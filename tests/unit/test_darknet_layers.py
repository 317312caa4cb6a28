"""Single Darknet layers and NMS against Darknet C's own functions.

tests/data/darknet_layers/*.npz hold outputs of pjreddie's and AlexeyAB's libdarknet.so
(reorg_cpu, forward_maxpool_layer, activate_array*, do_nms_obj, do_nms_sort, diounms_sort) on
small inputs; scripts/darknet_layer_refs.py regenerates them. Our side runs the graph nodes each
layer class emits (through ONNX Runtime) and the NMS of predictor.yolo.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from predictor.darknet.activations import emit_activation
from predictor.darknet.layers import MaxPoolLayer, ReorgLayer, RouteLayer
from predictor.darknet.layers.reorg import reorg_reference
from predictor.engine import OnnxRuntimeEngine
from predictor.onnx_graph import OPSET, OnnxBuilder
from predictor.yolo import compaction_order, nms_obj, nms_sort
from tests.servers import DATA

pytestmark = pytest.mark.unit

REFS = {lineage: np.load(DATA / "darknet_layers" / f"{lineage}.npz") for lineage in ("pjreddie", "alexeyab")}


def run_nodes(emit, *inputs: np.ndarray) -> np.ndarray:
    """Run the nodes ``emit(builder, input_names)`` adds, as a one-output ONNX model."""
    g = OnnxBuilder()
    names = [f"x{k}" for k in range(len(inputs))]
    y = emit(g, names)
    graph = helper.make_graph(
        g.nodes,
        "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return OnnxRuntimeEngine(model.SerializeToString(), threads=1).session.run(None, dict(zip(names, inputs)))[0]


def test_reorg_is_darknets_reorg_cpu_not_space_to_depth():
    ref = REFS["pjreddie"]
    x, y, s = ref["reorg_x"], ref["reorg_y"], int(ref["reorg_stride"])
    layer = ReorgLayer(index=1, stride=s)
    assert layer.bind(x.shape[1:], [], "cfg") == y.shape[1:]
    np.testing.assert_array_equal(run_nodes(lambda g, n: layer.emit(g, n[0], []), x), y)
    np.testing.assert_array_equal(reorg_reference(x, s), y)
    # a plain SpaceToDepth moves the same values elsewhere
    n, c, h, w = x.shape
    s2d = x.reshape(n, c, h // s, s, w // s, s).transpose(0, 3, 5, 1, 2, 4).reshape(n, c * s * s, h // s, w // s)
    assert not np.array_equal(s2d, y)


def test_reorg_graph_is_dynamic_in_size():
    layer = ReorgLayer(index=1, stride=2)
    layer.bind((16, 4, 6), [], "cfg")
    x = np.random.default_rng(0).normal(size=(3, 16, 10, 8)).astype(np.float32)
    np.testing.assert_array_equal(run_nodes(lambda g, n: layer.emit(g, n[0], []), x), reorg_reference(x, 2))


@pytest.mark.parametrize("lineage", ["pjreddie", "alexeyab"])
def test_maxpool_matches_darknet_sizes_and_values(lineage):
    ref = REFS[lineage]
    k = 0
    while f"maxpool{k}_x" in ref:
        x, y = ref[f"maxpool{k}_x"], ref[f"maxpool{k}_y"]
        size, stride, padding = (int(v) for v in ref[f"maxpool{k}_size_stride_padding"])
        layer = MaxPoolLayer(index=1, size=size, stride=stride, padding=padding)
        assert layer.shape(x.shape, []) == y.shape, (size, stride, x.shape)
        np.testing.assert_array_equal(run_nodes(lambda g, n: layer.emit(g, n[0], []), x[None])[0], y)
        k += 1
    assert k >= 8


@pytest.mark.parametrize(
    "lineage, kind, tol",
    [("pjreddie", "leaky", 1e-6), ("pjreddie", "logistic", 1e-6), ("pjreddie", "relu", 0),
     ("alexeyab", "mish", 1e-5), ("alexeyab", "swish", 1e-5)],
)
def test_activations_match_darknet(lineage, kind, tol):
    ref = REFS[lineage]
    x, y = ref["act_x"], ref[f"act_{kind}"]
    got = run_nodes(lambda g, n: emit_activation(g, n[0], kind, "a"), x)
    np.testing.assert_allclose(got, y, rtol=tol, atol=tol)


def test_route_groups_take_the_group_of_each_input():
    a = np.arange(2 * 4 * 2 * 2, dtype=np.float32).reshape(2, 4, 2, 2)
    b = -np.arange(2 * 6 * 2 * 2, dtype=np.float32).reshape(2, 6, 2, 2)
    layer = RouteLayer(index=2, layers=(0, 1), groups=2, group_id=1)
    assert layer.bind((6, 2, 2), [(4, 2, 2), (6, 2, 2)], "cfg") == (5, 2, 2)
    got = run_nodes(lambda g, n: layer.emit(g, n[1], n), a, b)
    np.testing.assert_array_equal(got, np.concatenate([a[:, 2:4], b[:, 3:6]], axis=1))


@pytest.mark.parametrize(
    "lineage, kind",
    [("pjreddie", "agnostic"), ("pjreddie", "per_class"), ("alexeyab", "per_class"), ("alexeyab", "greedynms"),
     ("alexeyab", "diounms_beta0.6"), ("alexeyab", "diounms_beta0.8")],
)
def test_nms_matches_darknet_with_ties_and_zero_objectness(lineage, kind):
    ref = REFS[lineage]
    boxes, obj, probs = ref["nms_boxes"], ref["nms_objectness"], ref["nms_probs"]
    keep = compaction_order(obj > 0)  # what detect() does before NMS
    out = probs.copy()
    if kind == "agnostic":
        out[keep] = nms_obj(boxes[keep], obj[keep], probs[keep], 0.45)
    else:
        beta = {"per_class": None, "greedynms": 0.6}[kind] if "beta" not in kind else float(kind.rsplit("beta", 1)[1])
        out[keep] = nms_sort(boxes[keep], probs[keep], 0.45, beta)
    expected = ref[f"nms_out_{kind}"]
    assert 0 < np.count_nonzero(expected) < np.count_nonzero(probs)
    np.testing.assert_array_equal(out, expected)
