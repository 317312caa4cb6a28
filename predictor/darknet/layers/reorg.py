"""``[reorg]`` (YOLOv2's passthrough), exactly as Darknet's ``reorg_cpu(..., forward=0)``.

pjreddie calls ``reorg_cpu`` with the INPUT dimensions and ``reverse=0`` (AlexeyAB's ``[reorg]``,
REORG_OLD, does the same). The effect is not a plain SpaceToDepth: for input ``C x H x W`` and
stride ``s`` the buffer is read as ``(C/s^2, H*s, W*s)``, SpaceToDepth(s) is applied to that,
and the result ``(C, H, W)`` is read as ``(C*s^2, H/s, W/s)``. In numpy, per image::

    x.reshape(C//s**2, H, s, W, s).transpose(2, 4, 0, 1, 3).reshape(C*s**2, H//s, W//s)

(AlexeyAB's ``[reorg3d]`` is the true SpaceToDepth; it is not served.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from predictor.darknet.cfg import Options
from predictor.darknet.layers.base import GraphBuilder, Layer, Shape


def reorg_reference(x: np.ndarray, stride: int) -> np.ndarray:
    """The numpy formula above for a batch ``[N, C, H, W]`` (used by tests)."""
    n, c, h, w = x.shape
    s = stride
    y = x.reshape(n, c // (s * s), h, s, w, s).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * s * s, h // s, w // s)


@dataclass
class ReorgLayer(Layer):
    stride: int = 2
    in_channels: int = 0  # set by bind()

    SECTIONS: ClassVar[tuple[str, ...]] = ("reorg",)

    @classmethod
    def parse(cls, o: Options) -> ReorgLayer:
        for key in ("reverse", "flatten", "extra"):
            o.only(key, "0")
        return cls(o.index, o.int("stride", 1, 1, 16))

    def shape(self, inp: Shape, shapes: list[Shape]) -> Shape:
        c, h, w = inp
        s = self.stride
        return c * s * s, h // s, w // s

    def bind(self, inp: Shape, shapes: list[Shape], path: str) -> Shape:
        c, h, w = inp
        s = self.stride
        if c % (s * s) or h % s or w % s:
            raise self.fail(path, f"[reorg] stride={s} needs channels divisible by {s * s} and sizes by {s}, got {inp}")
        self.in_channels = c
        return self.shape(inp, shapes)

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        # [N, C, H, W] -> [N, C/s², H, s, W, s] -> [N, s, s, C/s², H, W] -> [N, C*s², H/s, W/s];
        # H and W are dynamic, so the target shapes are computed from the input's shape.
        name = f"l{self.index}"
        s = self.stride

        def i64(suffix: str, *values: int) -> str:
            return g.const(f"{name}_{suffix}", np.array(values, np.int64))

        dims = g.op("Shape", [x], f"{name}_shape")
        h = g.op("Slice", [dims, i64("h0", 2), i64("h1", 3)], f"{name}_h")
        w = g.op("Slice", [dims, i64("w0", 3), i64("w1", 4)], f"{name}_w")
        stride = i64("s", s)
        groups = i64("groups", self.in_channels // (s * s))
        split = g.op("Concat", [i64("n", 0), groups, h, stride, w, stride], f"{name}_split_shape", axis=0)
        y = g.op("Reshape", [x, split], f"{name}_split")
        y = g.op("Transpose", [y], f"{name}_perm", perm=[0, 3, 5, 1, 2, 4])
        out_c = i64("out_c", self.in_channels * s * s)
        out_h = g.op("Div", [h, stride], f"{name}_out_h")
        out_w = g.op("Div", [w, stride], f"{name}_out_w")
        merged = g.op("Concat", [i64("n2", 0), out_c, out_h, out_w], f"{name}_out_shape", axis=0)
        return g.op("Reshape", [y, merged], f"{name}_reorg")


@dataclass
class Reorg3dLayer(ReorgLayer):
    """AlexeyAB's ``[reorg3d]`` (src/reorg_layer.c, ``reorg_cpu`` called with the OUTPUT dimensions,
    ``reverse=0``): ``out[(dy*s + dx)*C + c, y, x] = in[c, y*s + dy, x*s + dx]``, which is exactly
    ONNX ``SpaceToDepth``."""

    SECTIONS: ClassVar[tuple[str, ...]] = ("reorg3d",)

    @classmethod
    def parse(cls, o: Options) -> Reorg3dLayer:
        layer = super().parse(o)
        o.alexeyab_features.append((o.lineno, "layer [reorg3d]"))
        return cls(layer.index, layer.stride)

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        return g.op("SpaceToDepth", [x], f"l{self.index}_reorg3d", blocksize=self.stride)
