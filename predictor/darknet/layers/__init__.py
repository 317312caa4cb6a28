"""The Darknet layer kinds this server runs: adding one is a new module and one entry below."""

from __future__ import annotations

from predictor.darknet.layers.base import Head, Layer, Shape
from predictor.darknet.layers.conv import ConvLayer
from predictor.darknet.layers.maxpool import MaxPoolLayer
from predictor.darknet.layers.region import RegionLayer
from predictor.darknet.layers.reorg import ReorgLayer
from predictor.darknet.layers.route import RouteLayer
from predictor.darknet.layers.shortcut import ShortcutLayer
from predictor.darknet.layers.upsample import UpsampleLayer
from predictor.darknet.layers.yolo import YoloLayer

LAYER_TYPES: tuple[type[Layer], ...] = (
    ConvLayer,
    MaxPoolLayer,
    RouteLayer,
    ShortcutLayer,
    UpsampleLayer,
    ReorgLayer,
    YoloLayer,
    RegionLayer,
)

#: section name -> layer class
BY_SECTION: dict[str, type[Layer]] = {name: cls for cls in LAYER_TYPES for name in cls.SECTIONS}

#: section types either Darknet knows but this server does not run (refused by name)
DARKNET_ONLY_SECTIONS = frozenset(
    {"crop", "cost", "detection", "iseg", "local", "deconv", "deconvolutional", "activation", "logistic", "l2norm",
     "crnn", "gru", "lstm", "conv_lstm", "history", "rnn", "conn", "connected", "avg", "avgpool", "local_avg",
     "local_avgpool", "dropout", "lrn", "normalization", "batchnorm", "soft", "softmax", "scale_channels", "sam",
     "gaussian_yolo", "reorg3d", "contrastive", "empty", "silence", "implicit", "implicit_add", "implicit_mul"}
)

__all__ = [
    "BY_SECTION",
    "DARKNET_ONLY_SECTIONS",
    "LAYER_TYPES",
    "ConvLayer",
    "Head",
    "Layer",
    "MaxPoolLayer",
    "RegionLayer",
    "ReorgLayer",
    "RouteLayer",
    "Shape",
    "ShortcutLayer",
    "UpsampleLayer",
    "YoloLayer",
]
