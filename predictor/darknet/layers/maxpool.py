"""``[maxpool]`` (src/maxpool_layer.c in both Darknets).

Darknet's size rule: ``out = (in + padding - size)/stride + 1`` with ``padding`` defaulting to
``size - 1``, cells starting at ``-padding/2``; cells outside the input are skipped. So a size-2
stride-1 pool (yolov2-tiny, yolov3-tiny) keeps the size, and the SPP pools (size 5/9/13,
stride 1) are "same" pools. ``size`` defaults to ``stride``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from predictor.darknet.cfg import MAX_KERNEL, Options
from predictor.darknet.layers.base import GraphBuilder, Layer, Shape, square_stride


@dataclass
class MaxPoolLayer(Layer):
    size: int = 1
    stride: int = 1
    padding: int = 0  # Darknet's total padding (default size-1); left = padding//2

    SECTIONS: ClassVar[tuple[str, ...]] = ("maxpool", "max")
    ALEXEYAB: ClassVar[frozenset[str]] = frozenset(
        {"stride_x", "stride_y", "maxpool_depth", "out_channels", "antialiasing", "maxpool_zero_nonmax"}
    )

    @classmethod
    def parse(cls, o: Options) -> MaxPoolLayer:
        stride = square_stride(o)
        size = o.int("size", min(stride, MAX_KERNEL), 1, MAX_KERNEL)
        for key in ("maxpool_depth", "antialiasing", "maxpool_zero_nonmax"):
            o.only(key, "0")
        o.read.add("out_channels")  # only used with maxpool_depth
        return cls(o.index, size, stride, o.int("padding", size - 1, 0, 2 * MAX_KERNEL))

    def shape(self, inp: Shape, shapes: list[Shape]) -> Shape:
        c, h, w = inp
        return (
            c,
            (h + self.padding - self.size) // self.stride + 1,
            (w + self.padding - self.size) // self.stride + 1,
        )

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        lo, hi = self.padding // 2, self.padding - self.padding // 2
        return g.op(
            "MaxPool",
            [x],
            f"l{self.index}_maxpool",
            kernel_shape=[self.size, self.size],
            strides=[self.stride, self.stride],
            pads=[lo, lo, hi, hi],
        )
