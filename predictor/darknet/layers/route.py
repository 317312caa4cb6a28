"""``[route]``: concatenation of earlier outputs along channels (src/route_layer.c).

``layers`` holds relative (negative) or absolute indices. AlexeyAB's ``groups``/``group_id``
(YOLOv4-tiny's CSP split) keep channels ``[group_id*C/groups, (group_id+1)*C/groups)`` of EACH
input before concatenating (forward_route_layer copies ``input_size/groups`` values at offset
``group_id*input_size/groups``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from predictor.darknet.cfg import MAX_LAYERS, Options
from predictor.darknet.layers.base import GraphBuilder, Layer, Shape


@dataclass
class RouteLayer(Layer):
    layers: tuple[int, ...] = ()  # absolute indices
    groups: int = 1
    group_id: int = 0
    source_channels: tuple[int, ...] = ()  # set by bind()

    SECTIONS: ClassVar[tuple[str, ...]] = ("route",)
    ALEXEYAB: ClassVar[frozenset[str]] = frozenset({"groups", "group_id"})

    @classmethod
    def parse(cls, o: Options) -> RouteLayer:
        refs = o.ints("layers")
        if not refs:
            raise o.err("option 'layers' is required")
        if len(refs) > MAX_LAYERS:
            raise o.err(f"option 'layers' lists more than {MAX_LAYERS} layers", "layers")
        groups = o.int("groups", 1, 1, 1024)
        group_id = o.int("group_id", 0, 0, groups - 1)
        return cls(o.index, tuple(o.layer_ref(r, "layers") for r in refs), groups, group_id)

    def sources(self) -> tuple[int, ...]:
        return self.layers

    def shape(self, inp: Shape, shapes: list[Shape]) -> Shape:
        srcs = [shapes[j] for j in self.layers]
        return sum(s[0] for s in srcs) // self.groups, srcs[0][1], srcs[0][2]

    def bind(self, inp: Shape, shapes: list[Shape], path: str) -> Shape:
        srcs = [shapes[j] for j in self.layers]
        if len({s[1:] for s in srcs}) != 1:
            raise self.fail(path, f"route joins layers of different sizes {srcs}")
        if any(s[0] % self.groups for s in srcs):
            raise self.fail(path, f"groups={self.groups} does not divide the channels of {srcs}")
        self.source_channels = tuple(s[0] for s in srcs)
        return self.shape(inp, shapes)

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        name = f"l{self.index}"
        srcs = [outs[j] for j in self.layers]
        if self.groups > 1:
            srcs = [
                g.op(
                    "Slice",
                    [
                        src,
                        g.const(f"{name}_start{k}", np.array([c // self.groups * self.group_id], np.int64)),
                        g.const(f"{name}_end{k}", np.array([c // self.groups * (self.group_id + 1)], np.int64)),
                        g.const(f"{name}_axes{k}", np.array([1], np.int64)),
                    ],
                    f"{name}_group{k}",
                )
                for k, (src, c) in enumerate(zip(srcs, self.source_channels))
            ]
        if len(srcs) == 1:
            return srcs[0]
        return g.op("Concat", srcs, f"{name}_route", axis=1)
