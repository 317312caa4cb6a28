"""``[convolutional]`` (src/convolutional_layer.c in both Darknets).

Output size ``(h + 2*pad - size)/stride + 1`` with ``pad = size/2`` when ``pad=1``, else
``padding``; batch norm is folded into the weights when they are loaded (``load_weights``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from predictor.darknet.activations import emit_activation, parse_activation
from predictor.darknet.cfg import MAX_FILTERS, MAX_KERNEL, Options
from predictor.darknet.layers.base import GraphBuilder, Layer, Shape, square_stride


@dataclass
class ConvLayer(Layer):
    filters: int = 1
    size: int = 1
    stride: int = 1
    pad: int = 0  # padding on each side, in pixels
    groups: int = 1
    batch_normalize: bool = False
    activation: str = "logistic"
    in_channels: int = 0
    # filled by load_weights(): folded float32 weights [filters, in/groups, size, size] and bias
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None

    SECTIONS: ClassVar[tuple[str, ...]] = ("convolutional", "conv")
    TRAINING: ClassVar[frozenset[str]] = frozenset({"dot"})
    TRAINING_ALEXEYAB: ClassVar[frozenset[str]] = frozenset({"angle", "grad_centr"})
    ALEXEYAB: ClassVar[frozenset[str]] = frozenset(
        {"stride_x", "stride_y", "dilation", "antialiasing", "assisted_excitation", "share_index", "cbn",
         "bin_output", "sway", "rotate", "stretch", "stretch_sway", "coordconv", "reverse"}
    )

    @classmethod
    def parse(cls, o: Options) -> ConvLayer:
        size = o.int("size", 1, 1, MAX_KERNEL)
        stride = square_stride(o)
        if size > 1:
            o.only("dilation", "1")
        else:
            o.read.add("dilation")  # Darknet ignores dilation for 1x1 kernels
        for key in ("binary", "xnor", "flipped", "antialiasing", "assisted_excitation", "cbn", "bin_output",
                    "sway", "rotate", "stretch", "stretch_sway", "coordconv", "reverse"):
            o.only(key, "0")
        o.refuse("share_index")
        pad = size // 2 if o.int("pad", 0, 0, 1) else o.int("padding", 0, 0, MAX_KERNEL)
        o.read.add("padding")
        return cls(
            index=o.index,
            filters=o.int("filters", 1, 1, MAX_FILTERS),
            size=size,
            stride=stride,
            pad=pad,
            groups=o.int("groups", 1, 1, MAX_FILTERS),
            batch_normalize=bool(o.int("batch_normalize", 0, 0, 1)),
            activation=parse_activation(o, "logistic"),
        )

    def shape(self, inp: Shape, shapes: list[Shape]) -> Shape:
        _, h, w = inp
        return (
            self.filters,
            (h + 2 * self.pad - self.size) // self.stride + 1,
            (w + 2 * self.pad - self.size) // self.stride + 1,
        )

    def bind(self, inp: Shape, shapes: list[Shape], path: str) -> Shape:
        if inp[0] % self.groups or self.filters % self.groups:
            raise self.fail(path, f"groups={self.groups} does not divide channels")
        self.in_channels = inp[0]
        return self.shape(inp, shapes)

    @property
    def n_params(self) -> int:
        n = self.filters + self.filters * (self.in_channels // self.groups) * self.size * self.size
        return n + (3 * self.filters if self.batch_normalize else 0)

    def flops(self, inp: Shape, out: Shape) -> float:
        k = self.size * self.size * (self.in_channels // self.groups)
        return 2.0 * k * self.filters * out[1] * out[2]

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        if self.weight is None or self.bias is None:
            raise ValueError("weights are not loaded")
        name = f"l{self.index}"
        y = g.op(
            "Conv",
            [x, g.const(f"{name}_w", self.weight), g.const(f"{name}_b", self.bias)],
            f"{name}_conv",
            kernel_shape=[self.size, self.size],
            strides=[self.stride, self.stride],
            pads=[self.pad] * 4,
            group=self.groups,
        )
        return emit_activation(g, y, self.activation, name)
