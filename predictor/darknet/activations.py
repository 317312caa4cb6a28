"""Darknet activations: the names served and their graph nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from predictor.darknet.cfg import Options

if TYPE_CHECKING:
    from predictor.darknet.layers.base import GraphBuilder

ACTIVATIONS = ("leaky", "linear", "mish", "logistic", "relu")


def parse_activation(o: Options, default: str) -> str:
    kind = o.str("activation", default)
    if kind not in ACTIVATIONS:
        raise o.err(f"unsupported activation '{kind}' (supported: {', '.join(ACTIVATIONS)})", "activation")
    return kind


def emit_activation(g: GraphBuilder, x: str, kind: str, name: str) -> str:
    """Nodes applying ``kind`` to tensor ``x``; returns the output tensor name."""
    if kind == "linear":
        return x
    y = f"{name}_{kind}"
    if kind == "leaky":
        return g.op("LeakyRelu", [x], y, alpha=0.1)
    if kind == "logistic":
        return g.op("Sigmoid", [x], y)
    if kind == "relu":
        return g.op("Relu", [x], y)
    if kind == "mish":
        return g.op("Mish", [x], y)
    raise ValueError(f"activation {kind}")  # parse_activation refuses anything else
