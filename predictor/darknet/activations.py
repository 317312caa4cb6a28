"""Darknet activations: which Darknet reads each name, and its graph nodes.

pjreddie (src/activations.c) maps an unknown name to ReLU with only a warning, which is how it
runs ``mish`` and ``swish``; those are AlexeyAB names. Here an unsupported name is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from predictor.darknet.cfg import Options

if TYPE_CHECKING:
    from predictor.darknet.layers.base import GraphBuilder

#: supported activation -> the lineage that introduced it (None: both Darknets)
ACTIVATIONS: dict[str, str | None] = {
    "linear": None,
    "leaky": None,  # x > 0 ? x : 0.1 x
    "logistic": None,  # 1 / (1 + exp(-x))
    "relu": None,
    "mish": "alexeyab",  # x tanh(softplus(x)), softplus threshold 20: see _mish
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
        return _mish(g, x, y)
    if kind == "swish":
        return g.op("Mul", [x, g.op("Sigmoid", [x], f"{y}_sigmoid")], y)
    raise ValueError(f"activation {kind}")  # parse_activation refuses anything else


def _mish(g: GraphBuilder, x: str, y: str) -> str:
    """Darknet's mish ``x * tanh(softplus(x))`` (softplus = x above 20) as
    ``x * n / (n + 2)`` with ``n = e * (e + 2)``, ``e = exp(min(x, 20))``: the same function
    (``tanh(log(1 + e)) = ((1+e)^2 - 1) / ((1+e)^2 + 1)``), as close to AlexeyAB's
    ``activate_array_mish`` as ONNX ``Mish`` is (3.8e-6 at most on [-30, 30],
    tests/data/darknet_layers), and 2.6x faster than ONNX Runtime's ``Mish`` kernel on CPU (1.32: one
    exp instead of exp, log1p and tanh; ``make bench-family``: YOLOv4 at 608x608 went from 2.35x
    to 1.61x the fp32 GEMM floor, 1039 -> 719 ms). Above 20, ``n/(n+2)`` is 1.0
    in float32, so ``y = x`` as Darknet's threshold gives; far below 0 it is ``x * e^x``, as Darknet's."""
    e = g.op("Exp", [g.op("Min", [x, g.const(f"{y}_cap", np.array(20.0, np.float32))], f"{y}_capped")], f"{y}_exp")
    two = g.const(f"{y}_two", np.array(2.0, np.float32))
    n = g.op("Mul", [e, g.op("Add", [e, two], f"{y}_e2")], f"{y}_n")
    ratio = g.op("Div", [n, g.op("Add", [n, two], f"{y}_d")], f"{y}_ratio")
    return g.op("Mul", [x, ratio], y)
