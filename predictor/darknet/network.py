"""Parse a Darknet ``.cfg`` into a :class:`Network`, and tell which Darknet it was written for.

Two lineages are served, each faithfully:

* ``pjreddie`` (github.com/pjreddie/darknet, the original): ``network_predict_image`` letterboxes,
  the Python wrapper's class-agnostic ``do_nms_obj``, batch norm ``(x-mean)/(sqrt(var)+1e-6)``,
  default threshold 0.5.
* ``alexeyab`` (AlexeyAB/darknet, hank-ai/darknet): ``detector test`` stretches the image to the
  network size unless ``[net] letter_box=1``, runs NMS per the last head's ``nms_kind``
  (``do_nms_sort`` per class, or DIoU-NMS for ``greedynms``/``diounms``) on image-relative boxes,
  batch norm ``(x-mean)/sqrt(var+1e-5)``, default threshold 0.25.

The lineage is ``alexeyab`` when the cfg uses anything pjreddie's parser does not read (an
option such as ``scale_x_y``, ``new_coords``, ``nms_kind``, ``letter_box``, route ``groups``,
``mosaic``, ``iou_loss``, or a value such as ``activation=mish``), else ``pjreddie``; it can be
forced. Forcing ``pjreddie`` on a cfg that needs AlexeyAB is refused: pjreddie would silently run
mish as ReLU and ignore ``scale_x_y``.

Every option must be understood: options that change inference are read (and refused when not
supported), training-only options are an explicit allow-list per section, anything else is
refused rather than ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from predictor.darknet.cfg import LINEAGES, MAX_INPUT_SIZE, MAX_PARAMS, ModelFormatError, Options, read_sections
from predictor.darknet.layers import BY_SECTION, DARKNET_ONLY_SECTIONS, ConvLayer, Head, Layer, Shape
from predictor.darknet.layers.base import GENERIC_TRAINING, GENERIC_TRAINING_ALEXEYAB

#: [net] options that only matter for training, read by both Darknets (or by pjreddie only)
NET_TRAINING = frozenset(
    {"batch", "learning_rate", "momentum", "decay", "subdivisions", "time_steps", "adam", "B1", "B2", "eps", "inputs",
     "max_crop", "min_crop", "angle", "aspect", "saturation", "exposure", "hue", "policy", "burn_in", "power", "step",
     "scale", "steps", "scales", "gamma", "max_batches", "notruth", "random", "max_ratio", "min_ratio", "center",
     "clip"}
)
#: [net] training options only AlexeyAB reads (their presence marks an AlexeyAB cfg)
NET_TRAINING_ALEXEYAB = frozenset(
    {"learning_rate_min", "sgdr_cycle", "sgdr_mult", "track", "augment_speed", "sequential_subdivisions",
     "try_fix_nan", "weights_reject_freq", "equidistant_point", "badlabels_rejection_percentage",
     "num_sigmas_reject_badlabels", "ema_alpha", "use_cuda_graph", "loss_scale", "dynamic_minibatch",
     "optimized_memory", "workspace_size_limit_MB", "flip", "blur", "gaussian_noise", "mixup", "cutmix", "mosaic",
     "mosaic_bound", "contrastive", "contrastive_jit_flip", "contrastive_color", "unsupervised", "label_smooth_eps",
     "resize_step", "attention", "adversarial_lr", "max_chart_loss", "seq_scales", "show_receptive_field"}
)

#: sections that make a cfg a detector (served: [yolo], [region]; the others are refused by name)
DETECTION_SECTIONS = frozenset({"yolo", "region", "gaussian_yolo", "detection"})

NMS_BY_KIND = {"default": "per_class", "greedynms": "diou", "diounms": "diou"}


@dataclass
class Network:
    cfg_path: str
    width: int
    height: int
    channels: int
    layers: list[Layer]
    #: (channels, height, width) of every layer's output at the cfg's input size
    shapes: list[Shape] = field(default_factory=list)
    #: "pjreddie" or "alexeyab": whose Darknet semantics this network is served with
    lineage: str = "pjreddie"
    #: the preprocessing the model expects: Darknet letterbox (True) or a plain resize (False)
    letter_box: bool = True
    #: why the cfg reads as AlexeyAB's: ("file:line: what", ...); empty for pjreddie cfgs
    alexeyab_features: tuple[str, ...] = ()

    @property
    def heads(self) -> list[Head]:
        """The detection layers ([yolo], [region]) in cfg order."""
        return [layer for layer in self.layers if isinstance(layer, Head)]

    @property
    def yolo_layers(self) -> list[Head]:
        """Alias of :attr:`heads` (the name from when only [yolo] heads were served)."""
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

    @property
    def nms_kind(self) -> str:
        """The NMS Darknet runs for this network: "agnostic" (pjreddie's ``do_nms_obj``),
        "per_class" (``do_nms_sort``) or "diou" (AlexeyAB's ``diounms_sort``); AlexeyAB's
        ``detector test`` takes the kind of the LAST detection layer."""
        if self.lineage == "pjreddie":
            return "agnostic"
        return NMS_BY_KIND[self.heads[-1].nms_kind]

    @property
    def beta_nms(self) -> float:
        """DIoU exponent: ``greedynms`` hard-codes 0.6 (``box_diou``); ``diounms`` reads ``beta_nms``."""
        last = self.heads[-1]
        return last.beta_nms if self.lineage == "alexeyab" and last.nms_kind == "diounms" else 0.6

    @property
    def default_confidence(self) -> float:
        return 0.5 if self.lineage == "pjreddie" else 0.25

    def flops(self, width: int | None = None, height: int | None = None) -> float:
        """Multiply-adds x2 of all convolutions at the given (or the cfg's) input size."""
        w, h = width or self.width, height or self.height
        shapes = _shapes(self, w, h)
        inputs = [(self.channels, h, w), *shapes[:-1]]
        return sum(layer.flops(inp, out) for layer, inp, out in zip(self.layers, inputs, shapes))


def parse_cfg(cfg_path: str | os.PathLike, lineage: str | None = None) -> Network:
    """Parse a Darknet ``.cfg`` into a :class:`Network` (no weights yet).

    Args:
        cfg_path: the ``.cfg`` file.
        lineage: ``None`` (detect from the cfg), ``"pjreddie"`` or ``"alexeyab"``.

    Raises:
        ModelFormatError: naming the file (and line or layer) of the first problem.
    """
    if lineage not in (None, *LINEAGES):
        raise ValueError(f"lineage must be one of {LINEAGES} or None, got {lineage!r}")
    path = Path(cfg_path)
    sections = read_sections(path)
    first = sections[0]
    if first.name not in ("net", "network"):
        raise ModelFormatError(f"{path}:{first.lineno}: the first section must be [net], got [{first.name}]")
    _check_layer_kinds(path, sections[1:])
    net = Options(path, first)
    width = net.int("width", 416, 32, MAX_INPUT_SIZE)
    height = net.int("height", 416, 32, MAX_INPUT_SIZE)
    channels = net.int("channels", 3, 1, 3)
    if channels != 3:
        raise net.err(f"channels={channels}: only 3-channel (RGB) networks are supported", "channels")
    letter_box = bool(net.int("letter_box", 0, 0, 1))
    features = _check_options(net, NET_TRAINING, NET_TRAINING_ALEXEYAB, frozenset({"letter_box"}))

    layers: list[Layer] = []
    for i, section in enumerate(sections[1:]):
        cls = BY_SECTION[section.name]  # _check_layer_kinds refused the others
        o = Options(path, section, i)
        for key in ("dontload", "dontloadscales", "numload"):  # would change what the weights file holds
            o.only(key, "0")
        layers.append(cls.parse(o))
        features += _check_options(
            o, cls.TRAINING | GENERIC_TRAINING, cls.TRAINING_ALEXEYAB | GENERIC_TRAINING_ALEXEYAB, cls.ALEXEYAB
        )

    network = Network(str(path), width, height, channels, layers)
    heads = network.heads
    if not heads:
        raise ModelFormatError(f"{path}: no [yolo] or [region] layer: not a YOLO detector")
    if len({head.classes for head in heads}) != 1:
        raise ModelFormatError(f"{path}: detection layers disagree on 'classes'")
    head_indices = {head.index for head in heads}
    for layer in layers:
        used = head_indices.intersection(layer.sources())
        if used:  # the graph outputs a head's raw input; Darknet would pass on its decoded output
            raise ModelFormatError(f"{path}: layer {layer.index}: reads the output of detection layer {min(used)}")
    network.shapes = _shapes(network, width, height, bind=True)
    if network.n_params > MAX_PARAMS:
        raise ModelFormatError(f"{path}: {network.n_params} parameters exceeds the bound {MAX_PARAMS}")

    detected = "alexeyab" if features else "pjreddie"
    if lineage == "pjreddie" and features:
        raise ModelFormatError(
            f"{features[0]}, which only AlexeyAB Darknet reads: this cfg cannot be served as pjreddie Darknet"
        )
    network.lineage = lineage or detected
    network.letter_box = True if network.lineage == "pjreddie" else letter_box
    network.alexeyab_features = tuple(features)
    for head in heads:
        head.lineage = network.lineage
    return network


def _check_layer_kinds(path: Path, sections: list) -> None:
    """Before any option: a cfg with no detection layer is not a detector (a classifier, an RNN, ...),
    and a layer kind this server does not run is named (the most fundamental problem first)."""
    kinds = {section.name for section in sections}
    if not kinds & DETECTION_SECTIONS:
        raise ModelFormatError(
            f"{path}: not a detector: no [yolo] or [region] layer (a classifier or another kind of network; "
            "only Darknet YOLO detectors are served)"
        )
    for i, section in enumerate(sections):
        if section.name not in BY_SECTION:
            known = section.name in DARKNET_ONLY_SECTIONS or section.name in ("net", "network")
            why = "a Darknet layer this server does not run" if known else "not a Darknet layer"
            raise ModelFormatError(f"{path}:{section.lineno}: unknown layer type [{section.name}] (layer {i}): {why}")


def _check_options(
    o: Options, training: frozenset[str], training_alexeyab: frozenset[str], alexeyab: frozenset[str]
) -> list[str]:
    """Refuse options nobody read; return the AlexeyAB-only features this section uses."""
    for key in o.opts:
        if key not in o.read and key not in training and key not in training_alexeyab:
            raise o.err(f"unknown option '{key}': refusing rather than ignoring it (Darknet skips an option it "
                        "does not read with an 'Unused field' warning: a misspelt option? Remove it if not)", key)
    marks = [(line, what) for line, what in o.alexeyab_features]
    marks += [(o.section.lines[key], f"option '{key}'") for key in o.opts if key in alexeyab or key in training_alexeyab]
    return [f"{o.path}:{line}: [{o.name}] {what}" for line, what in sorted(marks)]


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
