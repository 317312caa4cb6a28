"""Darknet activations: which Darknet reads each name, and its graph nodes.

pjreddie (src/activations.c) maps an unknown name to ReLU with only a warning, which is how it
runs ``mish`` and ``swish``; those are AlexeyAB names. Here an unsupported name is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from predictor.darknet.cfg import Options

if TYPE_CHECKING:
    from predictor.darknet.layers.base import GraphBuilder

#: supported activation -> the lineage that introduced it (None: both Darknets)
ACTIVATIONS: dict[str, str | None] = {
    "linear": None,
    "leaky": None,  # x > 0 ? x : 0.1 x
    "logistic": None,  # 1 / (1 + exp(-x))
    "relu": None,
    "mish": "alexeyab",  # x tanh(softplus(x)), softplus threshold 20 (ONNX Mish agrees within 1e-6)
    "swish": "alexeyab",  # x * logistic(x)
}

#: names people write that Darknet does not know: both Darknets run an unknown name as ReLU (with
#: only a warning), which is never what was meant
HINTS = {
    "silu": "Darknet does not know 'silu' (it would silently run ReLU); AlexeyAB's name for x*sigmoid(x) is 'swish'",
    "sigmoid": "Darknet does not know 'sigmoid' (it would silently run ReLU); its name is 'logistic'",
}


def parse_activation(o: Options, default: str) -> str:
    kind = o.str("activation", default)
    if kind not in ACTIVATIONS:
        hint = "; " + HINTS[kind] if kind in HINTS else ""
        raise o.err(f"unsupported activation '{kind}' (supported: {', '.join(ACTIVATIONS)}){hint}", "activation")
    if ACTIVATIONS[kind] == "alexeyab":
        o.alexeyab(f"activation={kind}", "activation")
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
    if kind == "swish":
        return g.op("Mul", [x, g.op("Sigmoid", [x], f"{y}_sigmoid")], y)
    raise ValueError(f"activation {kind}")  # parse_activation refuses anything else
