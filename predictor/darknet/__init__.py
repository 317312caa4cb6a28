"""Darknet model files: ``.cfg`` parser, ``.weights`` reader and ``.names`` reader (numpy only).

Semantics follow pjreddie/darknet and AlexeyAB/darknet (src/parser.c, src/*_layer.c); see
:mod:`predictor.darknet.network` for how the two lineages are told apart and what each means.
Every refusal raises :class:`ModelFormatError` with one message naming the file and what is
wrong. Model files are data, not code: every size read from the cfg is bounded before anything
is allocated. Layer kinds live in :mod:`predictor.darknet.layers`, one module each.
"""

from __future__ import annotations

from predictor.darknet.cfg import (
    LINEAGES,
    MAX_CLASSES,
    MAX_FILTERS,
    MAX_INPUT_SIZE,
    MAX_KERNEL,
    MAX_LAYERS,
    MAX_PARAMS,
    ModelFormatError,
)
from predictor.darknet.files import ModelFiles, find_model_files, read_names
from predictor.darknet.layers import (
    ConvLayer,
    Head,
    Layer,
    MaxPoolLayer,
    RegionLayer,
    ReorgLayer,
    RouteLayer,
    ShortcutLayer,
    UpsampleLayer,
    YoloLayer,
)
from predictor.darknet.network import Network, parse_cfg
from predictor.darknet.weights import ConvSpec, conv_specs, load_weights, weights_header_size, write_random_weights

__all__ = [
    "LINEAGES",
    "MAX_CLASSES",
    "MAX_FILTERS",
    "MAX_INPUT_SIZE",
    "MAX_KERNEL",
    "MAX_LAYERS",
    "MAX_PARAMS",
    "ConvLayer",
    "ConvSpec",
    "Head",
    "Layer",
    "MaxPoolLayer",
    "ModelFiles",
    "ModelFormatError",
    "Network",
    "RegionLayer",
    "ReorgLayer",
    "RouteLayer",
    "ShortcutLayer",
    "UpsampleLayer",
    "YoloLayer",
    "conv_specs",
    "find_model_files",
    "load_weights",
    "parse_cfg",
    "read_names",
    "weights_header_size",
    "write_random_weights",
]
