"""What every Darknet layer kind provides, so that a new kind is one new class.

A layer class declares the cfg sections it handles and which of their options are training-only,
and implements: :meth:`Layer.parse` (options -> layer), :meth:`Layer.shape` (input shape -> output
shape), :meth:`Layer.emit` (ONNX nodes through a :class:`GraphBuilder`, so this package never
imports onnx) and, for detection heads, :meth:`Head.forward` (Darknet's layer output) and
:meth:`Head.candidates` (Darknet's boxes from the raw head input), in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from predictor.darknet.cfg import ModelFormatError, Options

Shape = tuple[int, int, int]  # (channels, height, width)

#: options any layer may carry that only matter for training (read by both Darknets)
GENERIC_TRAINING = frozenset({"stopbackward", "onlyforward", "learning_rate", "dontsave", "smooth", "truth"})
#: the same, read only by AlexeyAB (their presence marks an AlexeyAB cfg)
GENERIC_TRAINING_ALEXEYAB = frozenset(
    {"clip", "dont_update", "burnin_update", "train_only_bn", "stream", "wait_stream"}
)


class GraphBuilder(Protocol):
    def op(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        """Add one node named ``output`` producing tensor ``output``; returns ``output``."""

    def const(self, name: str, value: np.ndarray) -> str:
        """Add an initializer; returns its name."""


@dataclass
class Layer:
    index: int

    #: cfg section names handled by this class (lower case)
    SECTIONS: ClassVar[tuple[str, ...]] = ()
    #: options read by both Darknets that only matter for training: accepted and ignored
    TRAINING: ClassVar[frozenset[str]] = frozenset()
    #: options only AlexeyAB reads, training-only: accepted and ignored, mark an AlexeyAB cfg
    TRAINING_ALEXEYAB: ClassVar[frozenset[str]] = frozenset()
    #: options only AlexeyAB reads that the class does read: mark an AlexeyAB cfg
    ALEXEYAB: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def parse(cls, o: Options) -> Layer:
        raise NotImplementedError

    def shape(self, inp: Shape, shapes: list[Shape]) -> Shape:
        """Output (c, h, w) given the previous layer's output and all earlier outputs."""
        return inp

    def bind(self, inp: Shape, shapes: list[Shape], path: str) -> Shape:
        """Like :meth:`shape` at the cfg's own size, validating and filling derived fields."""
        return self.shape(inp, shapes)

    def sources(self) -> tuple[int, ...]:
        """Indices of the layers whose outputs this layer reads."""
        return (self.index - 1,)

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        """Graph nodes of this layer; ``x`` is the previous output, ``outs`` all earlier outputs."""
        raise NotImplementedError

    def flops(self, inp: Shape, out: Shape) -> float:
        return 0.0

    def fail(self, path: str, msg: str) -> ModelFormatError:
        return ModelFormatError(f"{path}: layer {self.index}: {msg}")


@dataclass
class Head(Layer):
    """A detection layer: the graph outputs its input; decoding happens in numpy."""

    classes: int = 80
    #: set by parse_cfg: which Darknet's decoding to reproduce
    lineage: str = "pjreddie"
    #: AlexeyAB's NMS when this is the network's last head: "default", "greedynms" or "diounms"
    nms_kind: str = "default"
    beta_nms: float = 0.6

    #: prefix of the graph output name, e.g. "yolo" -> "yolo16"
    OUTPUT_PREFIX: ClassVar[str] = ""

    @property
    def output_name(self) -> str:
        return f"{self.OUTPUT_PREFIX}{self.index}"

    @property
    def anchors_per_cell(self) -> int:
        raise NotImplementedError

    @property
    def channels(self) -> int:
        """Input channels: per anchor slot x, y, w, h, objectness and the classes."""
        return self.anchors_per_cell * (5 + self.classes)

    def bind(self, inp: Shape, shapes: list[Shape], path: str) -> Shape:
        if inp[0] != self.channels:
            raise self.fail(path, f"{self.describe_channels()}, the previous layer gives {inp[0]}")
        return inp

    def describe_channels(self) -> str:
        n, kind = self.anchors_per_cell, self.SECTIONS[0]
        return f"[{kind}] expects {n}*(5+{self.classes}) = {self.channels} input channels"

    def emit(self, g: GraphBuilder, x: str, outs: list[str]) -> str:
        return g.op("Identity", [x], self.output_name)

    def forward(self, raw: np.ndarray) -> np.ndarray:
        """Darknet's output of this layer for ONE image's raw input ``[channels, H, W]``."""
        raise NotImplementedError

    def candidates(self, raw: np.ndarray, net_w: int, net_h: int, thresh: float):
        """Darknet's detections of ONE image from this head's raw input ``[channels, H, W]``.

        Returns ``boxes [M,4]`` (cx, cy, w, h relative to the network input, as Darknet's
        ``get_*_detections`` computes them before correcting for the letterbox),
        ``objectness [M]`` (0 for a detection Darknet keeps but excludes from NMS) and
        ``probs [M,C]`` (``objectness*class``, zeroed unless above ``thresh``), in Darknet's order.
        """
        raise NotImplementedError


def logistic(x: np.ndarray) -> np.ndarray:
    """Darknet's ``1/(1+exp(-x))`` (evaluated in double, stored as float)."""
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def square_stride(o: Options) -> int:
    """``stride`` (1..16); AlexeyAB's ``stride_x``/``stride_y`` are accepted only equal to it."""
    stride = o.int("stride", 1, 1, 16)
    for key in ("stride_x", "stride_y"):
        if o.int(key, stride, 1, 16) != stride:
            raise o.err(f"option '{key}' different from 'stride' is not supported", key)
    return stride


def anchor_pairs(o: Options, num: int, extra_ok: bool = False) -> tuple[tuple[float, float], ...]:
    """The ``num`` anchors (w, h). ``extra_ok``: more numbers than ``2*num`` are AlexeyAB's reading
    of ``[yolo]`` (it keeps the first ``2*num``; pjreddie would write past its array), e.g.
    cspx-p7-mish's 20 anchor pairs with ``num=16``."""
    values = o.floats("anchors")
    if len(values) > 2 * num and extra_ok:
        o.alexeyab(f"'anchors' has {len(values)} numbers for num={num} (AlexeyAB reads the first {2 * num})", "anchors")
        values = values[: 2 * num]
    if len(values) != 2 * num:
        raise o.err(f"'anchors' has {len(values)} numbers, expected 2*num = {2 * num}", "anchors")
    return tuple((values[2 * k], values[2 * k + 1]) for k in range(num))
