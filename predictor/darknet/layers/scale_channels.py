"""``[scale_channels]`` (AlexeyAB only; see :mod:`predictor.darknet.layers.sam`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from predictor.darknet.cfg import Options
from predictor.darknet.layers.base import Shape
from predictor.darknet.layers.sam import SamLayer


@dataclass
class ScaleChannelsLayer(SamLayer):
    scale_wh: bool = False

    SECTIONS: ClassVar[tuple[str, ...]] = ("scale_channels",)

    @classmethod
    def parse(cls, o: Options) -> ScaleChannelsLayer:
        sam = SamLayer.parse(o)
        return cls(sam.index, sam.source, sam.activation, bool(o.int("scale_wh", 0, 0, 1)))

    def bind(self, inp: Shape, shapes: list[Shape], path: str) -> Shape:
        c, h, w = shapes[self.source]
        want = (1, h, w) if self.scale_wh else (c, 1, 1)
        if inp != want:
            raise self.fail(path, f"[scale_channels] scale_wh={int(self.scale_wh)} needs an input of shape {want} "
                            f"for layer {self.source}'s output {(c, h, w)}, got {inp}")
        return self.shape(inp, shapes)
