"""``[shortcut]``: residual addition of an earlier output, then an activation.

Only the form both Darknets share is served: one ``from`` layer of the same spatial size,
pjreddie's ``alpha``/``beta`` at 1, no AlexeyAB weighted (``weights_type``) multi-input shortcut.
The output has the previous layer's shape; when the channel counts differ (yolov3-tiny-prn,
csresnext50-panet-spp) both Darknets add only the first ``min(c_prev, c_from)`` channels of the
``from`` output (pjreddie ``shortcut_cpu``: ``minc``; AlexeyAB ``shortcut_multilayer_cpu``: flat
index ``< from.outputs``, the same channels when the spatial sizes agree, which AlexeyAB asserts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from predictor.darknet.activations import emit_activation, parse_activation
from predictor.darknet.cfg import MAX_LAYERS, Options
from predictor.darknet.layers.base import GraphBuilder, Layer, Shape


@dataclass
class ShortcutLayer(Layer):
    source: int = 0  # absolute index
    activation: str = "linear"
    channels: int = 0  # set by bind(): the previous layer's channels (the output's)
    source_channels: int = 0  # set by bind(): the ``from`` layer's channels

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
        src = shapes[self.source]
        if src[1:] != inp[1:]:
            raise self.fail(
                path, f"shortcut from layer {self.source} of size {src[2]}x{src[1]} does not match {inp[2]}x{inp[1]} "
                "(only same-size shortcuts are supported; AlexeyAB Darknet asserts the same)"
            )
        self.channels, self.source_channels = inp[0], src[0]
        return inp

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        name = f"l{self.index}"
        add = outs[self.source]
        if self.source_channels > self.channels:  # only the first channels of `from` are added
            add = g.op("Slice", [add, g.const(f"{name}_start", np.array([0], np.int64)),
                                 g.const(f"{name}_end", np.array([self.channels], np.int64)),
                                 g.const(f"{name}_axes", np.array([1], np.int64))], f"{name}_from_channels")
        elif self.source_channels < self.channels:  # the remaining channels pass unchanged (+ 0)
            pads = np.array([0, 0, 0, 0, 0, self.channels - self.source_channels, 0, 0], np.int64)
            add = g.op("Pad", [add, g.const(f"{name}_pads", pads)], f"{name}_from_padded")
        y = g.op("Add", [x, add], f"{name}_add")
        return emit_activation(g, y, self.activation, name)
