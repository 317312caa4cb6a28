"""``[avgpool]`` (src/avgpool_layer.c, both Darknets): the GLOBAL average of each channel, ``C x 1 x 1``.

(AlexeyAB's windowed ``[local_avgpool]`` is another layer and is not served.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from predictor.darknet.cfg import Options
from predictor.darknet.layers.base import GraphBuilder, Layer, Shape


@dataclass
class AvgPoolLayer(Layer):
    SECTIONS: ClassVar[tuple[str, ...]] = ("avgpool", "avg")

    @classmethod
    def parse(cls, o: Options) -> AvgPoolLayer:
        return cls(o.index)

    def shape(self, inp: Shape, shapes: list[Shape]) -> Shape:
        return inp[0], 1, 1

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        return g.op("GlobalAveragePool", [x], f"l{self.index}_avgpool")

