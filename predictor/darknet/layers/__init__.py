"""The Darknet layer kinds this server runs: adding one is a new module and one entry below."""

from __future__ import annotations

from predictor.darknet.layers.avgpool import AvgPoolLayer
from predictor.darknet.layers.base import Head, Layer, Shape
from predictor.darknet.layers.conv import ConvLayer
from predictor.darknet.layers.dropout import DropoutLayer
from predictor.darknet.layers.maxpool import MaxPoolLayer
from predictor.darknet.layers.region import RegionLayer
from predictor.darknet.layers.reorg import Reorg3dLayer, ReorgLayer
from predictor.darknet.layers.route import RouteLayer
from predictor.darknet.layers.sam import SamLayer
from predictor.darknet.layers.scale_channels import ScaleChannelsLayer
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
    Reorg3dLayer,
    SamLayer,
    ScaleChannelsLayer,
    AvgPoolLayer,
    DropoutLayer,
    YoloLayer,
    RegionLayer,
)

#: section name -> layer class
BY_SECTION: dict[str, type[Layer]] = {name: cls for cls in LAYER_TYPES for name in cls.SECTIONS}

#: section types either Darknet knows but this server does not run (refused by name)
DARKNET_ONLY_SECTIONS = frozenset(
    {"crop", "cost", "detection", "iseg", "local", "deconv", "deconvolutional", "activation", "logistic", "l2norm",
     "crnn", "gru", "lstm", "conv_lstm", "history", "rnn", "conn", "connected", "local_avg",
     "local_avgpool", "lrn", "normalization", "batchnorm", "soft", "softmax",
     "gaussian_yolo", "contrastive", "empty", "silence", "implicit", "implicit_add", "implicit_mul"}
)

__all__ = [
    "AvgPoolLayer",
    "BY_SECTION",
    "DARKNET_ONLY_SECTIONS",
    "LAYER_TYPES",
    "ConvLayer",
    "DropoutLayer",
    "Head",
    "Layer",
    "MaxPoolLayer",
    "RegionLayer",
    "Reorg3dLayer",
    "ReorgLayer",
    "RouteLayer",
    "SamLayer",
    "ScaleChannelsLayer",
    "Shape",
    "ShortcutLayer",
    "UpsampleLayer",
    "YoloLayer",
]
