"""``[upsample]``: nearest-neighbour upsampling by ``stride``, times ``scale`` (upsample_cpu)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from predictor.darknet.cfg import Options
from predictor.darknet.layers.base import GraphBuilder, Layer, Shape


@dataclass
class UpsampleLayer(Layer):
    stride: int = 2
    scale: float = 1.0

    SECTIONS: ClassVar[tuple[str, ...]] = ("upsample",)

    @classmethod
    def parse(cls, o: Options) -> UpsampleLayer:
        # a negative stride is Darknet's "reverse" (downsampling) upsample: refused by the bound
        return cls(o.index, o.int("stride", 2, 1, 16), o.float("scale", 1.0))

    def shape(self, inp: Shape, shapes: list[Shape]) -> Shape:
        c, h, w = inp
        return c, h * self.stride, w * self.stride

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        name = f"l{self.index}"
        scales = g.const(f"{name}_scales", np.array([1, 1, self.stride, self.stride], np.float32))
        y = g.op(
            "Resize",
            [x, "", scales],
            f"{name}_upsample",
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
        if self.scale != 1.0:
            y = g.op("Mul", [y, g.const(f"{name}_s", np.array(self.scale, np.float32))], f"{name}_upsample_scaled")
        return y
