"""``[shortcut]``: residual addition of an earlier output, then an activation.

Only the form both Darknets share is served: one ``from`` layer of the same shape, pjreddie's
``alpha``/``beta`` at 1, no AlexeyAB weighted (``weights_type``) multi-input shortcut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from predictor.darknet.activations import emit_activation, parse_activation
from predictor.darknet.cfg import MAX_LAYERS, Options
from predictor.darknet.layers.base import GraphBuilder, Layer, Shape


@dataclass
class ShortcutLayer(Layer):
    source: int = 0  # absolute index
    activation: str = "linear"

    SECTIONS: ClassVar[tuple[str, ...]] = ("shortcut",)
    ALEXEYAB: ClassVar[frozenset[str]] = frozenset({"weights_type", "weights_normalization"})

    @classmethod
    def parse(cls, o: Options) -> ShortcutLayer:
        refs = o.ints("from")
        if len(refs) != 1:
            raise o.err("option 'from' must name exactly one layer (multi-input shortcuts are not supported)", "from")
        if not -MAX_LAYERS <= refs[0] <= MAX_LAYERS:
            raise o.err(f"option 'from'={refs[0]} outside [{-MAX_LAYERS}, {MAX_LAYERS}]", "from")
        for key in ("alpha", "beta"):  # pjreddie: out = alpha*out + beta*from
            o.only(key, "1")
        o.only("weights_type", "none")
        o.only("weights_normalization", "none")
        return cls(o.index, o.layer_ref(refs[0], "from"), parse_activation(o, "linear"))

    def sources(self) -> tuple[int, ...]:
        return self.index - 1, self.source

    def bind(self, inp: Shape, shapes: list[Shape], path: str) -> Shape:
        if shapes[self.source] != inp:
            raise self.fail(
                path, f"shortcut from layer {self.source} with shape {shapes[self.source]} does not match {inp}"
            )
        return inp

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        y = g.op("Add", [x, outs[self.source]], f"l{self.index}_add")
        return emit_activation(g, y, self.activation, f"l{self.index}")
