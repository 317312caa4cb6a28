"""Parse a Darknet ``.cfg`` into a :class:`Network`.

Every option must be understood: options that change inference are read by the layer classes
(and refused when not supported), training-only options are an explicit allow-list per section,
anything else is refused rather than ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from predictor.darknet.cfg import MAX_INPUT_SIZE, MAX_PARAMS, ModelFormatError, Options, read_sections
from predictor.darknet.layers import BY_SECTION, DARKNET_ONLY_SECTIONS, ConvLayer, Head, Layer, Shape
from predictor.darknet.layers.base import GENERIC_TRAINING

#: [net] options that only matter for training
NET_TRAINING = frozenset(
    {"batch", "learning_rate", "momentum", "decay", "subdivisions", "time_steps", "adam", "B1", "B2", "eps", "inputs",
     "max_crop", "min_crop", "angle", "aspect", "saturation", "exposure", "hue", "policy", "burn_in", "power", "step",
     "scale", "steps", "scales", "gamma", "max_batches", "notruth", "random", "max_ratio", "min_ratio", "center",
     "clip"}
)


@dataclass
class Network:
    cfg_path: str
    width: int
    height: int
    channels: int
    layers: list[Layer]
    #: (channels, height, width) of every layer's output at the cfg's input size
    shapes: list[Shape] = field(default_factory=list)

    @property
    def heads(self) -> list[Head]:
        """The detection layers in cfg order."""
        return [layer for layer in self.layers if isinstance(layer, Head)]

    @property
    def yolo_layers(self) -> list[Head]:
        """Alias of :attr:`heads`."""
        return self.heads

    @property
    def conv_layers(self) -> list[ConvLayer]:
        return [layer for layer in self.layers if isinstance(layer, ConvLayer)]

    @property
    def classes(self) -> int:
        return self.heads[0].classes

    @property
    def n_params(self) -> int:
        return sum(conv.n_params for conv in self.conv_layers)

    def flops(self, width: int | None = None, height: int | None = None) -> float:
        """Multiply-adds x2 of all convolutions at the given (or the cfg's) input size."""
        w, h = width or self.width, height or self.height
        shapes = _shapes(self, w, h)
        inputs = [(self.channels, h, w), *shapes[:-1]]
        return sum(layer.flops(inp, out) for layer, inp, out in zip(self.layers, inputs, shapes))


def parse_cfg(cfg_path: str | os.PathLike) -> Network:
    """Parse a Darknet ``.cfg`` into a :class:`Network` (no weights yet).

    Raises:
        ModelFormatError: naming the file (and line or layer) of the first problem.
    """
    path = Path(cfg_path)
    sections = read_sections(path)
    first = sections[0]
    if first.name not in ("net", "network"):
        raise ModelFormatError(f"{path}:{first.lineno}: the first section must be [net], got [{first.name}]")
    net = Options(path, first)
    width = net.int("width", 416, 32, MAX_INPUT_SIZE)
    height = net.int("height", 416, 32, MAX_INPUT_SIZE)
    channels = net.int("channels", 3, 1, 3)
    if channels != 3:
        raise net.err(f"channels={channels}: only 3-channel (RGB) networks are supported", "channels")
    _check_options(net, NET_TRAINING)

    layers: list[Layer] = []
    for i, section in enumerate(sections[1:]):
        cls = BY_SECTION.get(section.name)
        if cls is None:
            known = section.name in DARKNET_ONLY_SECTIONS or section.name in ("net", "network")
            why = "a Darknet layer this server does not run" if known else "not a Darknet layer"
            raise ModelFormatError(f"{path}:{section.lineno}: unknown layer type [{section.name}] (layer {i}): {why}")
        o = Options(path, section, i)
        for key in ("dontload", "dontloadscales", "numload"):  # would change what the weights file holds
            o.only(key, "0")
        layers.append(cls.parse(o))
        _check_options(o, cls.TRAINING | GENERIC_TRAINING)

    network = Network(str(path), width, height, channels, layers)
    heads = network.heads
    if not heads:
        raise ModelFormatError(f"{path}: no [yolo] layer: not a YOLOv3-style detector")
    if len({head.classes for head in heads}) != 1:
        raise ModelFormatError(f"{path}: [yolo] layers disagree on 'classes'")
    head_indices = {head.index for head in heads}
    for layer in layers:
        used = head_indices.intersection(layer.sources())
        if used:  # the graph outputs a head's raw input; Darknet would pass on its decoded output
            raise ModelFormatError(f"{path}: layer {layer.index}: reads the output of detection layer {min(used)}")
    network.shapes = _shapes(network, width, height, bind=True)
    if network.n_params > MAX_PARAMS:
        raise ModelFormatError(f"{path}: {network.n_params} parameters exceeds the bound {MAX_PARAMS}")
    return network


def _check_options(o: Options, training: frozenset[str]) -> None:
    """Refuse options nobody read."""
    for key in o.opts:
        if key not in o.read and key not in training:
            raise o.err(f"unknown option '{key}': refusing rather than ignoring it", key)


def _shapes(network: Network, width: int, height: int, bind: bool = False) -> list[Shape]:
    """Walk the layers, returning each output (c, h, w); with ``bind``, validate and fill derived fields."""
    shapes: list[Shape] = []
    shape: Shape = (network.channels, height, width)
    path = network.cfg_path
    for layer in network.layers:
        shape = layer.bind(shape, shapes, path) if bind else layer.shape(shape, shapes)
        if shape[1] < 1 or shape[2] < 1:
            raise ModelFormatError(
                f"{path}: layer {layer.index}: output size {shape[2]}x{shape[1]} at input {width}x{height}"
            )
        shapes.append(shape)
    return shapes
