"""``[sam]`` and (:mod:`.scale_channels`) ``[scale_channels]``, AlexeyAB only: the previous output times an earlier one.

* ``[sam] from=k`` (src/sam_layer.c, spatial attention of YOLOv4-sam/cspx-p7): element-wise
  ``input * from``, both of the same shape; the output has the ``from`` layer's shape.
* ``[scale_channels] from=k`` (src/scale_channels_layer.c, EfficientNet's squeeze-excitation):
  ``input`` is ``C x 1 x 1`` (``scale_wh=0``: one factor per channel) or ``1 x H x W``
  (``scale_wh=1``: one factor per position) and multiplies the ``from`` output ``C x H x W``.

Both then apply ``activate_array`` with the section's ``activation`` (linear by default); AlexeyAB
does not support swish or mish there (it says so at load), so neither is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from predictor.darknet.activations import emit_activation, parse_activation
from predictor.darknet.cfg import Options
from predictor.darknet.layers.base import GraphBuilder, Layer, Shape


@dataclass
class SamLayer(Layer):
    source: int = 0  # absolute index of `from`
    activation: str = "linear"

    SECTIONS: ClassVar[tuple[str, ...]] = ("sam",)

    @classmethod
    def parse(cls, o: Options) -> SamLayer:
        refs = o.ints("from")
        if len(refs) != 1:
            raise o.err("option 'from' must name exactly one layer", "from")
        activation = parse_activation(o, "linear")
        if activation in ("swish", "mish"):
            raise o.err(f"activation={activation} is not supported in [{o.name}] (AlexeyAB Darknet does not run it "
                        "there either)", "activation")
        o.alexeyab_features.append((o.lineno, f"layer [{o.name}]"))
        return cls(o.index, o.layer_ref(refs[0], "from"), activation)

    def sources(self) -> tuple[int, ...]:
        return self.index - 1, self.source

    def shape(self, inp: Shape, shapes: list[Shape]) -> Shape:
        return shapes[self.source]

    def bind(self, inp: Shape, shapes: list[Shape], path: str) -> Shape:
        if inp != shapes[self.source]:
            raise self.fail(path, f"[sam] multiplies equal shapes; got {inp} and layer {self.source}'s {shapes[self.source]}")
        return self.shape(inp, shapes)

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        y = g.op("Mul", [outs[self.source], x], f"l{self.index}_mul")
        return emit_activation(g, y, self.activation, f"l{self.index}")

