"""Build an ONNX graph from a parsed Darknet network (the ``onnx`` package only; no torch).

The graph takes ``images`` FP32 ``[N, 3, H, W]`` RGB in [0, 1] (batch, height and width dynamic;
H and W multiples of 32) and returns the raw logits feeding each ``[yolo]`` layer, one output per
yolo layer named ``yolo<index>`` ``[N, masks*(5+classes), H/stride, W/stride]``. Batch-norm is
folded into the convolutions (see :func:`predictor.darknet.load_weights`); decoding and NMS happen
in :mod:`predictor.yolo`, so the graph stays a plain CNN that any runtime can run.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from predictor.darknet import (
    ConvLayer,
    MaxPoolLayer,
    Network,
    RouteLayer,
    ShortcutLayer,
    UpsampleLayer,
    YoloLayer,
)

OPSET = 18
INPUT_NAME = "images"


def output_names(network: Network) -> list[str]:
    return [f"yolo{layer.index}" for layer in network.yolo_layers]


def build_onnx(network: Network) -> onnx.ModelProto:
    """Return the ONNX model for ``network`` (weights must be loaded)."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    outs: list[str] = []  # tensor name of each layer's output
    current = INPUT_NAME

    def activation(x: str, kind: str, name: str) -> str:
        if kind == "linear":
            return x
        y = f"{name}_{kind}"
        if kind == "leaky":
            nodes.append(helper.make_node("LeakyRelu", [x], [y], alpha=0.1, name=y))
        elif kind == "logistic":
            nodes.append(helper.make_node("Sigmoid", [x], [y], name=y))
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [x], [y], name=y))
        elif kind == "mish":
            nodes.append(helper.make_node("Mish", [x], [y], name=y))
        else:  # parse_cfg already refuses anything else
            raise ValueError(f"activation {kind}")
        return y

    for layer in network.layers:
        name = f"l{layer.index}"
        if isinstance(layer, ConvLayer):
            if layer.weight is None or layer.bias is None:
                raise ValueError("weights are not loaded")
            inits += [
                numpy_helper.from_array(layer.weight, f"{name}_w"),
                numpy_helper.from_array(layer.bias, f"{name}_b"),
            ]
            y = f"{name}_conv"
            nodes.append(
                helper.make_node(
                    "Conv",
                    [current, f"{name}_w", f"{name}_b"],
                    [y],
                    kernel_shape=[layer.size, layer.size],
                    strides=[layer.stride, layer.stride],
                    pads=[layer.pad] * 4,
                    group=layer.groups,
                    name=y,
                )
            )
            current = activation(y, layer.activation, name)
        elif isinstance(layer, MaxPoolLayer):
            # darknet: out = (in + padding - size)/stride + 1, left pad = padding//2, missing cells ignored
            lo, hi = layer.padding // 2, layer.padding - layer.padding // 2
            y = f"{name}_maxpool"
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [current],
                    [y],
                    kernel_shape=[layer.size, layer.size],
                    strides=[layer.stride, layer.stride],
                    pads=[lo, lo, hi, hi],
                    name=y,
                )
            )
            current = y
        elif isinstance(layer, RouteLayer):
            srcs = [outs[j] for j in layer.layers]
            if len(srcs) == 1:
                current = srcs[0]
            else:
                current = f"{name}_route"
                nodes.append(helper.make_node("Concat", srcs, [current], axis=1, name=current))
        elif isinstance(layer, UpsampleLayer):
            scales = f"{name}_scales"
            inits.append(numpy_helper.from_array(np.array([1, 1, layer.stride, layer.stride], np.float32), scales))
            y = f"{name}_upsample"
            nodes.append(
                helper.make_node(
                    "Resize",
                    [current, "", scales],
                    [y],
                    mode="nearest",
                    coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor",
                    name=y,
                )
            )
            current = y
            if layer.scale != 1.0:
                inits.append(numpy_helper.from_array(np.array(layer.scale, np.float32), f"{name}_s"))
                nodes.append(helper.make_node("Mul", [y, f"{name}_s"], [f"{y}_scaled"]))
                current = f"{y}_scaled"
        elif isinstance(layer, ShortcutLayer):
            y = f"{name}_add"
            nodes.append(helper.make_node("Add", [current, outs[layer.source]], [y], name=y))
            current = activation(y, layer.activation, name)
        elif isinstance(layer, YoloLayer):
            y = f"yolo{layer.index}"
            nodes.append(helper.make_node("Identity", [current], [y], name=y))
            current = y
        outs.append(current)

    graph = helper.make_graph(
        nodes,
        "darknet",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            helper.make_tensor_value_info(
                f"yolo{y.index}", TensorProto.FLOAT, ["N", len(y.mask) * (5 + y.classes), None, None]
            )
            for y in network.yolo_layers
        ],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="yolo-kserve"
    )
    model.ir_version = 8
    return model
