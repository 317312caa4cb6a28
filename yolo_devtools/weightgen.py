"""Deterministic random Darknet ``.weights`` files (pure numpy), for tests and Darknet references.

No real weights exist offline for most Darknet detectors, so the references in tests/data/reference
are produced by Darknet C running on files made here. A file is a pure function of the cfg and the
seed, so a test can regenerate it and prove it byte-identical via the recorded sha256.

File layout (Darknet src/parser.c ``load_weights_upto`` / ``load_convolutional_weights``):
int32 major, minor, revision, then ``seen`` as int64 when ``major*10 + minor >= 2`` (int32 below);
then, per convolutional layer in cfg order: biases[filters], and if batch_normalize
scales[filters], rolling_mean[filters], rolling_variance[filters]; then the weights
[filters, in_channels/groups, size, size] (OIHW); all little-endian float32.

Body distributions (docs: darknet-semantics.md section 3), drawn from
``numpy.random.default_rng(seed)`` in file order (per conv: bias, [scale, mean, var], weights):
bias N(0, 0.02), BN scale U(0.9, 1.1), rolling mean N(0, 0.02), rolling variance U(0.8, 1.25);
weights N(0, sqrt(2/fan_in)) x 0.9, x 0.3 on a conv that closes a residual branch (the conv right
before a [shortcut]); fan_in = in_channels/groups * size * size.

Head convs (the conv feeding a [yolo] or [region] layer, no batch norm) draw bias N(0, 0.1) and
weights W0 ~ N(0, sqrt(2/fan_in)) x 1.5 (the old recipe), then get CALIBRATED, because their
input scale differs by more than 20x between models and even between the heads of one model
(random batch-norm statistics do not normalise): with the old recipe YOLOv2's region logits have
std 0.2 (no detection at all) while YOLOv3-spp's 19x19 head has std 5 (thousands of boxes).
Calibration, a deterministic function of the cfg and the seed (:func:`_calibrate_heads`):

1. A float32 numpy forward pass of the body (the drawn weights; conv/BN/activations, maxpool,
   route with groups, shortcut, upsample, reorg) on a fixed synthetic "dead leaves" image of
   CALIBRATION_SIZE pixels (:func:`calibration_image`, independent of the seed) gives each head's
   input. Heads are leaves of the graph, so they do not change what any other layer sees.
2. Each head output channel ``a*(coords+1+classes) + k`` (a: anchor slot; k: 0-1 box xy, 2-3 box
   wh, ``coords`` objectness, the rest classes) is standardised over the calibration cells: its
   weights are multiplied by ``target_std / std`` (rounded to a quarter octave, 2**(j/4)) and its
   bias shifted so that the channel's mean is the target mean (HEAD_TARGETS, per head kind: xy 0,
   wh ``wh_mean``; objectness and classes 0 before step 3).
3. One objectness shift for all heads puts ``candidates_025`` candidates (anchors x cells, at
   the cfg's input size: calibration counts scaled by area) above objectness 0.25; then one class
   shift (sigmoid-class heads only) puts ``entries_025`` (candidate, class) pairs above
   objectness x class probability 0.25 (found by bisection). [region] classes are a softmax:
   their spread ``cls_std`` does that job.
4. Bias shifts are rounded to 1/8. Together with the quarter-octave gains this makes the file's
   bytes insensitive to last-bit float differences of the forward pass between numpy/BLAS builds
   (a value would have to sit within rounding error of a rounding boundary to flip).

The targets were chosen per head kind, empirically, so that Darknet on the five test images at the
cfg's input size returns tens of detections above 0.25 and a few above 0.5 (numbers per model in
tests/data/reference/README.md). Head kinds: ``yolo`` ([yolo] after a linear conv: YOLOv3/v4),
``yolo_logistic`` ([yolo] new_coords=1 after a logistic conv: YOLOv7, YOLOv4-csp; its heavier
tails on the calibration image needed larger counts), ``region`` (YOLOv2).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

DEFAULT_SEED = 20240611
CALIBRATION_SIZE = 256
HEAD_KINDS = ("yolo", "yolo_logistic", "region")


@dataclass(frozen=True)
class HeadTargets:
    """Spread of the calibrated logits per entry group, and how many boxes should pass 0.25.

    ``candidates_025``: how many candidates (anchor x cell, all heads, at the cfg's input size)
    should have objectness > 0.25; ``entries_025``: how many (candidate, class) pairs should have
    objectness x class probability > 0.25 (sigmoid classes only; [region] classes are a softmax
    whose spread ``cls_std`` sets it). Both are met exactly on the calibration image, scaled by
    area; natural images land within a few x of them.
    """

    xy_std: float
    wh_mean: float
    wh_std: float
    obj_std: float
    cls_std: float
    candidates_025: float
    entries_025: float


HEAD_TARGETS: dict[str, HeadTargets] = {
    "yolo": HeadTargets(
        xy_std=1.0, wh_mean=0.0, wh_std=0.4, obj_std=2.0, cls_std=3.0, candidates_025=100, entries_025=100
    ),
    "yolo_logistic": HeadTargets(
        xy_std=1.0, wh_mean=0.0, wh_std=0.5, obj_std=2.0, cls_std=3.0, candidates_025=150, entries_025=300
    ),
    "region": HeadTargets(
        xy_std=1.0, wh_mean=0.0, wh_std=0.4, obj_std=2.0, cls_std=6.0, candidates_025=300, entries_025=0
    ),
}


@dataclass(frozen=True)
class Head:
    """What a conv feeds: its output channels are ``anchors x (coords + 1 + classes)``."""

    kind: str  # one of HEAD_KINDS
    anchors: int  # boxes per cell ([yolo]: len(mask); [region]: num)
    classes: int
    coords: int = 4

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"unknown head kind {self.kind!r} (known: {', '.join(HEAD_KINDS)})")

    @property
    def channels(self) -> int:
        return self.anchors * (self.coords + 1 + self.classes)


@dataclass(frozen=True)
class ConvSpec:
    """One [convolutional] layer as the weights file sees it."""

    filters: int
    in_per_group: int  # in_channels // groups
    size: int
    batch_normalize: bool
    head: Head | None = None
    closes_residual: bool = False

    def __post_init__(self) -> None:
        if self.head is not None and self.head.channels != self.filters:
            raise ValueError(f"head conv has {self.filters} filters, its {self.head.kind} head needs {self.head.channels}")

    @property
    def is_head(self) -> bool:
        return self.head is not None

    @property
    def fan_in(self) -> int:
        return self.in_per_group * self.size * self.size

    @property
    def n_params(self) -> int:
        return self.filters * (1 + self.fan_in + (3 if self.batch_normalize else 0))


@dataclass(frozen=True)
class LayerSpec:
    """One cfg section after [net], with what the calibration forward pass needs."""

    kind: str  # convolutional, maxpool, route, shortcut, upsample, reorg, yolo, region
    conv: ConvSpec | None = None
    inputs: tuple[int, ...] = ()  # absolute indices (route; shortcut: its `from`)
    size: int = 1
    stride: int = 1
    pad: int = 0  # conv: padding per side; maxpool: Darknet's total padding
    groups: int = 1
    group_id: int = 0
    activation: str = "linear"


@dataclass(frozen=True)
class NetSpec:
    channels: int
    width: int
    height: int
    layers: tuple[LayerSpec, ...] = field(default_factory=tuple)

    @property
    def convs(self) -> list[ConvSpec]:
        return [layer.conv for layer in self.layers if layer.conv is not None]


# ---------------------------------------------------------------- file layout


def header_bytes(major: int = 0, minor: int = 2, revision: int = 0, seen: int = 0) -> bytes:
    """Darknet's weights header; ``seen`` is int64 from format 0.2 on (parser.c)."""
    head = np.array([major, minor, revision], "<i4").tobytes()
    wide = (major * 10 + minor) >= 2 and major < 1000 and minor < 1000
    return head + np.array([seen], "<i8" if wide else "<i4").tobytes()


def weights_size(convs: Sequence[ConvSpec], major: int = 0, minor: int = 2) -> int:
    """Exact file size in bytes, without generating anything."""
    return len(header_bytes(major, minor)) + 4 * sum(c.n_params for c in convs)


def _draw(conv: ConvSpec, rng: np.random.Generator) -> list[np.ndarray]:
    """float32 [bias, (scale, mean, var,) weights OIHW] in file order."""
    n, fan_in = conv.filters, conv.fan_in
    std = np.sqrt(2.0 / fan_in)
    if conv.head is not None:
        parts = [rng.normal(0.0, 0.1, n), rng.normal(0.0, std, n * fan_in) * 1.5]
    else:
        parts = [rng.normal(0.0, 0.02, n)]
        if conv.batch_normalize:
            parts += [rng.uniform(0.9, 1.1, n), rng.normal(0.0, 0.02, n), rng.uniform(0.8, 1.25, n)]
        parts.append(rng.normal(0.0, std, n * fan_in) * 0.9 * (0.3 if conv.closes_residual else 1.0))
    parts = [p.astype(np.float32) for p in parts]
    parts[-1] = parts[-1].reshape(n, conv.in_per_group, conv.size, conv.size)
    return parts


def generate_weights(net: NetSpec, seed: int = DEFAULT_SEED, major: int = 0, minor: int = 2) -> bytes:
    """The whole ``.weights`` file for ``net`` as bytes (same cfg and seed, same bytes)."""
    rng = np.random.default_rng(seed)
    params = [_draw(conv, rng) for conv in net.convs]
    _calibrate_heads(net, params)
    blob = header_bytes(major, minor) + b"".join(p.astype("<f4").tobytes() for ps in params for p in ps)
    assert len(blob) == weights_size(net.convs, major, minor)
    return blob


def write_weights(
    path: str | os.PathLike, net: NetSpec, seed: int = DEFAULT_SEED, major: int = 0, minor: int = 2
) -> tuple[int, str]:
    """Write the file; returns (size in bytes, sha256 hex)."""
    blob = generate_weights(net, seed, major, minor)
    Path(path).write_bytes(blob)
    return len(blob), hashlib.sha256(blob).hexdigest()


# ---------------------------------------------------------------- head calibration


def calibration_image(size: int = CALIBRATION_SIZE) -> np.ndarray:
    """A fixed "dead leaves" RGB image (3, size, size) in [0, 1]: overlapping flat discs and
    rectangles of power-law sizes plus a little noise, a standard stand-in for natural-image
    statistics. Independent of the weights seed."""
    rng = np.random.default_rng(0)
    img = np.full((3, size, size), 0.5, np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(300):
        r = size * 0.35 * rng.uniform(0.1, 1.0) ** 2
        cx, cy = rng.uniform(0, size, 2)
        colour = rng.uniform(0, 1, 3).astype(np.float32)
        if rng.uniform() < 0.5:
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        else:
            mask = (np.abs(xx - cx) < r) & (np.abs(yy - cy) < r * rng.uniform(0.3, 1.5))
        img[:, mask] = colour[:, None]
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


def _conv2d(x: np.ndarray, w: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    c, h, wd = x.shape
    o, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    win = sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride][:, :oh, :ow]
    og = o // groups
    out = []
    for g in range(groups):
        cols = win[g * cg : (g + 1) * cg].transpose(1, 2, 0, 3, 4).reshape(oh * ow, cg * k * k)
        out.append((w[g * og : (g + 1) * og].reshape(og, -1) @ cols.T).reshape(og, oh, ow))
    return np.concatenate(out)


def _activate(x: np.ndarray, act: str) -> np.ndarray:
    if act == "leaky":
        return np.where(x > 0, x, np.float32(0.1) * x)
    if act == "relu":
        return np.maximum(x, 0)
    if act == "logistic":
        return 1 / (1 + np.exp(-x))
    if act == "mish":
        return x * np.tanh(np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20)))))
    if act == "swish":
        return x / (1 + np.exp(-x))
    if act == "linear":
        return x
    raise ValueError(f"activation {act!r} not supported by the calibration pass")


def _maxpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    c, h, w = x.shape
    oh, ow = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    xp = np.full((c, h + padding + size, w + padding + size), -np.inf, np.float32)
    xp[:, padding // 2 : padding // 2 + h, padding // 2 : padding // 2 + w] = x
    return sliding_window_view(xp, (size, size), axis=(1, 2))[:, ::stride, ::stride][:, :oh, :ow].max(axis=(3, 4))


def _head_inputs(net: NetSpec, params: list[list[np.ndarray]], size: int) -> dict[int, np.ndarray]:
    """Forward the body on the calibration image; returns {conv number: its input} for head convs."""
    outs: list[np.ndarray] = []
    heads: dict[int, np.ndarray] = {}
    x = calibration_image(size)
    conv_no = 0
    for layer in net.layers:
        if layer.kind == "convolutional":
            conv, ps = layer.conv, params[conv_no]
            if conv.is_head:
                heads[conv_no] = x
                y = np.zeros((conv.filters, *x.shape[1:]), np.float32)  # a leaf: nothing reads it
            else:
                y = _conv2d(x, ps[-1], layer.stride, layer.pad, layer.groups)
                if conv.batch_normalize:
                    scale, mean, var = ps[1], ps[2], ps[3]
                    y = (y - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * scale[:, None, None]
                y = _activate(y + ps[0][:, None, None], layer.activation)
            conv_no += 1
        elif layer.kind == "maxpool":
            y = _maxpool(x, layer.size, layer.stride, layer.pad)
        elif layer.kind == "route":
            parts = []
            for j in layer.inputs:
                part = outs[j]
                step = part.shape[0] // layer.groups
                parts.append(part[layer.group_id * step : (layer.group_id + 1) * step])
            y = np.concatenate(parts)
        elif layer.kind == "shortcut":  # channels may differ: the first min(c, c_from) are added
            add = outs[layer.inputs[0]][: x.shape[0]]
            y = x.copy()
            y[: add.shape[0]] += add
            y = _activate(y, layer.activation)
        elif layer.kind in ("sam", "scale_channels"):  # input x from (broadcast: C x 1 x 1 or 1 x H x W)
            y = _activate(outs[layer.inputs[0]] * x, layer.activation)
        elif layer.kind == "avgpool":
            y = x.mean(axis=(1, 2), keepdims=True)
        elif layer.kind == "upsample":
            y = x.repeat(layer.stride, axis=1).repeat(layer.stride, axis=2)
        elif layer.kind == "reorg":  # pjreddie reorg (reverse=0), see darknet-semantics.md
            c, h, w, s = *x.shape, layer.stride
            y = x.reshape(c // (s * s), h, s, w, s).transpose(2, 4, 0, 1, 3).reshape(c * s * s, h // s, w // s)
        elif layer.kind == "reorg3d":  # AlexeyAB [reorg3d]: SpaceToDepth
            c, h, w, s = *x.shape, layer.stride
            y = x.reshape(c, h // s, s, w // s, s).transpose(2, 4, 0, 1, 3).reshape(c * s * s, h // s, w // s)
        else:  # yolo, region, dropout: their input passes through
            y = x
        outs.append(y.astype(np.float32, copy=False))
        x = outs[-1]
    return heads


def _quarter_octave(gain: np.ndarray) -> np.ndarray:
    return 2.0 ** (np.round(4 * np.log2(gain)) / 4)


LOGIT_025 = float(np.log(0.25 / 0.75))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _calibrate_heads(net: NetSpec, params: list[list[np.ndarray]]) -> None:
    convs = net.convs
    heads = _head_inputs(net, params, CALIBRATION_SIZE)
    if not heads:
        return
    kinds = {convs[i].head.kind for i in heads}
    if len(kinds) != 1:
        raise ValueError(f"heads of different kinds {sorted(kinds)} in one network")
    t = HEAD_TARGETS[kinds.pop()]
    area = net.width * net.height / CALIBRATION_SIZE**2  # cfg-size cells per calibration cell

    # 1. per channel: gain to the group's std and shift to its mean (objectness, classes: 0 for now)
    plans, objs, clss = [], [], []
    for i, x in heads.items():
        conv, (bias, w) = convs[i], params[i]
        head = conv.head
        per = head.coords + 1 + head.classes
        z = _conv2d(x, w, 1, conv.size // 2, 1).reshape(head.anchors, per, -1).astype(np.float64)  # bias-free
        obj, cls = head.coords, slice(head.coords + 1, per)
        target = np.zeros((per, 2))
        target[0:2] = (0.0, t.xy_std)
        target[2:4] = (t.wh_mean, t.wh_std)
        target[obj] = (0.0, t.obj_std)
        target[cls] = (0.0, t.cls_std)
        gain = _quarter_octave(target[:, 1] / np.maximum(z.std(axis=2), 1e-6))  # (anchors, per)
        shift = target[:, 0] - gain * z.mean(axis=2)
        calibrated = gain[:, :, None] * z + (shift + bias.reshape(head.anchors, per).astype(np.float64))[:, :, None]
        plans.append((conv, bias, w, gain, shift))
        objs.append(calibrated[:, obj].ravel())
        clss.append(calibrated[:, cls].transpose(0, 2, 1).reshape(-1, head.classes))
    o, c = np.concatenate(objs), np.concatenate(clss)

    # 2. one objectness shift for all heads: candidates_025 candidates above 0.25 at the cfg's size
    fraction = min(t.candidates_025 / (o.size * area), 0.5)
    obj_shift = LOGIT_025 - float(np.quantile(o, 1 - fraction))

    # 3. one class shift (sigmoid classes): entries_025 (candidate, class) pairs above 0.25
    cls_shift = 0.0
    if kinds_are_sigmoid := convs[next(iter(heads))].head.kind != "region":
        p_obj = _sigmoid(o + obj_shift)[:, None]
        wanted = t.entries_025 / area
        lo, hi = -30.0, 30.0
        for _ in range(60):  # count(p_obj * sigmoid(c + s) > .25) grows with s
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.count_nonzero(p_obj * _sigmoid(c + mid) > 0.25) < wanted else (lo, mid)
        cls_shift = hi

    # 4. write back: weights x gain, bias + shift (rounded to 1/8)
    for conv, bias, w, gain, shift in plans:
        head = conv.head
        per = head.coords + 1 + head.classes
        shift = shift.copy()
        shift[:, head.coords] += obj_shift
        if kinds_are_sigmoid:
            shift[:, head.coords + 1 :] += cls_shift
        w *= gain.reshape(-1).astype(np.float32)[:, None, None, None]
        bias += (np.round(shift * 8) / 8).reshape(-1).astype(np.float32)


# ---------------------------------------------------------------- the cfg as a NetSpec


def _sections(cfg_path: str | os.PathLike) -> list[tuple[str, dict[str, str]]]:
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in Path(cfg_path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            sections.append((line[1:-1].strip().lower(), {}))
        elif "=" in line and sections:
            key, value = (s.strip() for s in line.split("=", 1))
            # Darknet keeps the first occurrence; atoi stops at a trailing "# comment"
            sections[-1][1].setdefault(key, value.split("#", 1)[0].strip() if "#" in value else value)
    return sections


def _ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def net_from_cfg(cfg_path: str | os.PathLike) -> NetSpec:
    """The layer graph of a Darknet detector cfg, walking channel counts (no spatial sizes needed).

    Covers the layers of the Darknet detectors: convolutional (groups), maxpool, route (groups,
    group_id), shortcut (also of different channel counts), upsample, reorg, reorg3d, sam,
    scale_channels, avgpool, dropout, yolo, region. scripts/darknet_references.py checks the
    conv specs against Darknet's own parsed network.
    """
    sections = _sections(cfg_path)
    if not sections or sections[0][0] not in ("net", "network"):
        raise ValueError(f"{cfg_path}: the first section must be [net]")
    body = sections[1:]
    out_c: list[int] = []
    layers: list[LayerSpec] = []
    c = int(sections[0][1].get("channels", 3))
    for i, (kind, o) in enumerate(body):
        get = o.get
        if kind in ("convolutional", "conv"):
            size, groups = int(get("size", 1)), int(get("groups", 1))
            activation = get("activation", "logistic").lower()
            nxt_kind, nxt = body[i + 1] if i + 1 < len(body) else ("", {})
            head = None
            if nxt_kind == "yolo":
                anchors = len(_ints(nxt.get("mask", ""))) or int(nxt.get("num", 1))
                head = Head("yolo_logistic" if activation == "logistic" else "yolo", anchors, int(nxt.get("classes", 20)))
            elif nxt_kind == "region":
                head = Head("region", int(nxt.get("num", 1)), int(nxt.get("classes", 20)), int(nxt.get("coords", 4)))
            filters = int(get("filters", 1))
            conv = ConvSpec(filters, c // groups, size, bool(int(get("batch_normalize", 0))), head, nxt_kind == "shortcut")
            pad = size // 2 if int(get("pad", 0)) else int(get("padding", 0))
            layers.append(LayerSpec(kind="convolutional", conv=conv, size=size, stride=int(get("stride", 1)), pad=pad,
                                    groups=groups, activation=activation))
            c = filters
        elif kind in ("maxpool", "max"):
            size = int(get("size", 1))
            layers.append(LayerSpec(kind="maxpool", size=size, stride=int(get("stride", 1)), pad=int(get("padding", size - 1))))
        elif kind == "route":
            refs = tuple(r if r >= 0 else i + r for r in _ints(o["layers"]))
            groups = int(get("groups", 1))
            layers.append(LayerSpec(kind="route", inputs=refs, groups=groups, group_id=int(get("group_id", 0))))
            c = sum(out_c[r] for r in refs) // groups
        elif kind in ("shortcut", "sam", "scale_channels"):
            ref = int(o["from"])
            ref = ref if ref >= 0 else i + ref
            layers.append(LayerSpec(kind=kind, inputs=(ref,), activation=get("activation", "linear").lower()))
            if kind != "shortcut":  # the output has the `from` layer's shape
                c = out_c[ref]
        elif kind in ("avgpool", "avg", "dropout"):
            layers.append(LayerSpec(kind="avgpool" if kind.startswith("avg") else kind))
        elif kind == "upsample":
            layers.append(LayerSpec(kind="upsample", stride=int(get("stride", 2))))
        elif kind in ("reorg", "reorg3d"):
            stride = int(get("stride", 1))
            if int(get("reverse", 0)):
                raise ValueError(f"{cfg_path}: layer {i}: [{kind}] reverse=1 is not supported")
            layers.append(LayerSpec(kind=kind, stride=stride))
            c *= stride * stride
        elif kind in ("yolo", "region"):
            layers.append(LayerSpec(kind=kind))
        else:
            raise ValueError(f"{cfg_path}: layer {i}: [{kind}] is not supported")
        out_c.append(c)
    net = sections[0][1]
    return NetSpec(int(net.get("channels", 3)), int(net.get("width", 416)), int(net.get("height", 416)), tuple(layers))


def specs_from_cfg(cfg_path: str | os.PathLike) -> list[ConvSpec]:
    """The conv specs (file order) of a Darknet cfg."""
    return net_from_cfg(cfg_path).convs
