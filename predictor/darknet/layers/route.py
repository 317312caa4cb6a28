"""``[route]``: concatenation of earlier outputs along channels (src/route_layer.c).

``layers`` holds relative (negative) or absolute indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from predictor.darknet.cfg import MAX_LAYERS, Options
from predictor.darknet.layers.base import GraphBuilder, Layer, Shape


@dataclass
class RouteLayer(Layer):
    layers: tuple[int, ...] = ()  # absolute indices

    SECTIONS: ClassVar[tuple[str, ...]] = ("route",)

    @classmethod
    def parse(cls, o: Options) -> RouteLayer:
        refs = o.ints("layers")
        if not refs:
            raise o.err("option 'layers' is required")
        if len(refs) > MAX_LAYERS:
            raise o.err(f"option 'layers' lists more than {MAX_LAYERS} layers", "layers")
        if o.int("groups", 1, 1) != 1:
            raise o.err("route 'groups' is not supported", "groups")
        return cls(o.index, tuple(o.layer_ref(r, "layers") for r in refs))

    def sources(self) -> tuple[int, ...]:
        return self.layers

    def shape(self, inp: Shape, shapes: list[Shape]) -> Shape:
        srcs = [shapes[j] for j in self.layers]
        return sum(s[0] for s in srcs), srcs[0][1], srcs[0][2]

    def bind(self, inp: Shape, shapes: list[Shape], path: str) -> Shape:
        srcs = [shapes[j] for j in self.layers]
        if len({s[1:] for s in srcs}) != 1:
            raise self.fail(path, f"route joins layers of different sizes {srcs}")
        return self.shape(inp, shapes)

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        srcs = [outs[j] for j in self.layers]
        if len(srcs) == 1:
            return srcs[0]
        return g.op("Concat", srcs, f"l{self.index}_route", axis=1)
