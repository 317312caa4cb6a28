"""``[dropout]`` (both Darknets): the identity at inference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from predictor.darknet.cfg import Options
from predictor.darknet.layers.base import GraphBuilder, Layer


@dataclass
class DropoutLayer(Layer):
    """``[dropout]`` (both Darknets): the identity at inference; Darknet even reuses the previous
    layer's output buffer as its own. Every option is about training."""

    SECTIONS: ClassVar[tuple[str, ...]] = ("dropout",)
    TRAINING: ClassVar[frozenset[str]] = frozenset({"probability"})
    TRAINING_ALEXEYAB: ClassVar[frozenset[str]] = frozenset({"dropblock", "dropblock_size_rel", "dropblock_size_abs"})

    @classmethod
    def parse(cls, o: Options) -> DropoutLayer:
        return cls(o.index)

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        return x
