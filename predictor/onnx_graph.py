"""Build an ONNX graph from a parsed Darknet network (the ``onnx`` package only; no torch).

The graph takes ``images`` FP32 ``[N, 3, H, W]`` RGB in [0, 1] (batch, height and width dynamic;
H and W multiples of 32) and returns the raw input of each detection layer, one output per head
named ``yolo<index>`` or ``region<index>`` (:attr:`Head.output_name`), ``[N, channels, H/stride,
W/stride]``. Batch-norm is folded into the convolutions (see :func:`predictor.darknet.load_weights`);
decoding and NMS happen in :mod:`predictor.yolo`, so the graph stays a plain CNN that any runtime
can run. Each layer class emits its own nodes (``Layer.emit``) through :class:`OnnxBuilder`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from predictor.darknet import Network

OPSET = 18
INPUT_NAME = "images"


def output_names(network: Network) -> list[str]:
    return [head.output_name for head in network.heads]


class OnnxBuilder:
    """The :class:`predictor.darknet.layers.base.GraphBuilder` the layers emit into."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def op(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name


def build_onnx(network: Network, probes: Sequence[int] = ()) -> onnx.ModelProto:
    """Return the ONNX model for ``network`` (weights must be loaded).

    ``probes``: layer indices whose outputs are ALSO returned, after the heads, as ``layer<i>``
    (for checking intermediate tensors against Darknet; the served graph has none).
    """
    g = OnnxBuilder()
    outs: list[str] = []  # tensor name of each layer's output
    current = INPUT_NAME
    for layer in network.layers:
        current = layer.emit(g, current, outs)
        outs.append(current)
    outputs = [
        helper.make_tensor_value_info(head.output_name, TensorProto.FLOAT, ["N", head.channels, None, None])
        for head in network.heads
    ]
    for i in probes:
        outputs.append(helper.make_tensor_value_info(g.op("Identity", [outs[i]], f"layer{i}"), TensorProto.FLOAT, None))
    graph = helper.make_graph(
        g.nodes,
        "darknet",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        outputs,
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="yolo-kserve")
    model.ir_version = 8
    return model
