"""Darknet model files: ``.cfg`` parser, ``.weights`` reader and ``.names`` reader (numpy only).

Semantics follow pjreddie/darknet (src/parser.c, src/*_layer.c). Every refusal raises
:class:`ModelFormatError` with one message naming the file and what is wrong. Model files are
data, not code: every size read from the cfg is bounded before anything is allocated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Bounds on what a cfg may ask for (a hostile or corrupt cfg must not allocate gigabytes).
MAX_LAYERS = 1024
MAX_FILTERS = 16384
MAX_KERNEL = 15
MAX_CLASSES = 100_000
MAX_INPUT_SIZE = 4096
MAX_PARAMS = 500_000_000  # floats; full YOLOv3 has 62 M

ACTIVATIONS = ("leaky", "linear", "mish", "logistic", "relu")


class ModelFormatError(ValueError):
    """A model file is missing, malformed or inconsistent with the others."""


@dataclass
class ConvLayer:
    index: int
    filters: int
    size: int
    stride: int
    pad: int  # total padding on each side, in pixels
    groups: int
    batch_normalize: bool
    activation: str
    in_channels: int = 0
    # filled by load_weights(): folded float32 weights [filters, in/groups, size, size] and bias
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None

    @property
    def n_params(self) -> int:
        n = self.filters + self.filters * (self.in_channels // self.groups) * self.size * self.size
        return n + (3 * self.filters if self.batch_normalize else 0)


@dataclass
class MaxPoolLayer:
    index: int
    size: int
    stride: int
    padding: int  # darknet's total padding (default size-1); left = padding//2


@dataclass
class RouteLayer:
    index: int
    layers: tuple[int, ...]  # absolute indices


@dataclass
class UpsampleLayer:
    index: int
    stride: int
    scale: float = 1.0


@dataclass
class ShortcutLayer:
    index: int
    source: int  # absolute index
    activation: str = "linear"


@dataclass
class YoloLayer:
    index: int
    mask: tuple[int, ...]
    anchors: tuple[tuple[float, float], ...]  # all anchors (w, h) in network-input pixels
    classes: int

    @property
    def masked_anchors(self) -> tuple[tuple[float, float], ...]:
        return tuple(self.anchors[m] for m in self.mask)


Layer = ConvLayer | MaxPoolLayer | RouteLayer | UpsampleLayer | ShortcutLayer | YoloLayer


@dataclass
class Network:
    cfg_path: str
    width: int
    height: int
    channels: int
    layers: list[Layer]
    #: (channels, height, width) of every layer's output at the cfg's input size
    shapes: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def yolo_layers(self) -> list[YoloLayer]:
        return [layer for layer in self.layers if isinstance(layer, YoloLayer)]

    @property
    def conv_layers(self) -> list[ConvLayer]:
        return [layer for layer in self.layers if isinstance(layer, ConvLayer)]

    @property
    def classes(self) -> int:
        return self.yolo_layers[0].classes

    @property
    def n_params(self) -> int:
        return sum(conv.n_params for conv in self.conv_layers)

    def flops(self, width: int | None = None, height: int | None = None) -> float:
        """Multiply-adds x2 of all convolutions at the given (or the cfg's) input size."""
        w, h = width or self.width, height or self.height
        total = 0.0
        for layer, (_, oh, ow) in zip(self.layers, _shapes(self, w, h)):
            if isinstance(layer, ConvLayer):
                k = layer.size * layer.size * (layer.in_channels // layer.groups)
                total += 2.0 * k * layer.filters * oh * ow
        return total


def _read_sections(path: Path) -> list[tuple[str, dict[str, str], int]]:
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError as e:
        raise ModelFormatError(f"{path}: cfg file not found") from e
    except UnicodeDecodeError as e:
        raise ModelFormatError(f"{path}: cfg is not UTF-8 text") from e
    sections: list[tuple[str, dict[str, str], int]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().replace("\x00", "")
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ModelFormatError(f"{path}:{lineno}: malformed section header {line[:40]!r}")
            sections.append((line[1:-1].strip().lower(), {}, lineno))
            if len(sections) > MAX_LAYERS + 1:
                raise ModelFormatError(f"{path}: more than {MAX_LAYERS} layers")
            continue
        if "=" not in line:
            raise ModelFormatError(f"{path}:{lineno}: expected key=value, got {line[:40]!r}")
        if not sections:
            raise ModelFormatError(f"{path}:{lineno}: option before the first [section]")
        key, value = (part.strip() for part in line.split("=", 1))
        sections[-1][1][key] = value
    if not sections:
        raise ModelFormatError(f"{path}: empty cfg")
    return sections


class _Options:
    """Typed access to one section's options, with file/line context in errors."""

    def __init__(self, path: Path, name: str, lineno: int, opts: dict[str, str]):
        self.path, self.name, self.lineno, self.opts = path, name, lineno, opts

    def _err(self, msg: str) -> ModelFormatError:
        return ModelFormatError(f"{self.path}:{self.lineno}: [{self.name}] {msg}")

    def int(self, key: str, default: int | None = None, lo: int = 0, hi: int = 1 << 30) -> int:
        if key not in self.opts:
            if default is None:
                raise self._err(f"missing required option '{key}'")
            return default
        try:
            value = int(self.opts[key])
        except ValueError as e:
            raise self._err(f"option '{key}' must be an integer, got {self.opts[key][:20]!r}") from e
        if not lo <= value <= hi:
            raise self._err(f"option '{key}'={value} outside [{lo}, {hi}]")
        return value

    def float(self, key: str, default: float) -> float:
        try:
            return float(self.opts.get(key, default))
        except ValueError as e:
            raise self._err(f"option '{key}' must be a number") from e

    def str(self, key: str, default: str) -> str:
        return self.opts.get(key, default).strip().lower()

    def ints(self, key: str) -> list[int]:
        raw = self.opts.get(key, "")
        try:
            return [int(v) for v in raw.split(",") if v.strip()]
        except ValueError as e:
            raise self._err(f"option '{key}' must be a comma-separated list of integers") from e

    def floats(self, key: str) -> list[float]:
        raw = self.opts.get(key, "")
        try:
            return [float(v) for v in raw.split(",") if v.strip()]
        except ValueError as e:
            raise self._err(f"option '{key}' must be a comma-separated list of numbers") from e


def parse_cfg(cfg_path: str | os.PathLike) -> Network:
    """Parse a Darknet ``.cfg`` into a :class:`Network` (no weights yet)."""
    path = Path(cfg_path)
    sections = _read_sections(path)
    name, net_opts, lineno = sections[0]
    if name not in ("net", "network"):
        raise ModelFormatError(f"{path}:{lineno}: the first section must be [net], got [{name}]")
    net = _Options(path, name, lineno, net_opts)
    width = net.int("width", 416, 32, MAX_INPUT_SIZE)
    height = net.int("height", 416, 32, MAX_INPUT_SIZE)
    channels = net.int("channels", 3, 1, 3)
    if channels != 3:
        raise net._err(f"channels={channels}: only 3-channel (RGB) networks are supported")

    layers: list[Layer] = []
    for i, (kind, opts_dict, ln) in enumerate(sections[1:]):
        o = _Options(path, kind, ln, opts_dict)

        def absolute(ref: int, i: int = i, o: _Options = o) -> int:
            j = i + ref if ref < 0 else ref
            if not 0 <= j < i:
                raise o._err(f"layer reference {ref} does not point to an earlier layer (layer {i})")
            return j

        if kind in ("convolutional", "conv"):
            size = o.int("size", 1, 1, MAX_KERNEL)
            pad = size // 2 if o.int("pad", 0, 0, 1) else o.int("padding", 0, 0, MAX_KERNEL)
            activation = o.str("activation", "logistic")
            if activation not in ACTIVATIONS:
                raise o._err(f"unsupported activation '{activation}' (supported: {', '.join(ACTIVATIONS)})")
            layers.append(
                ConvLayer(
                    index=i,
                    filters=o.int("filters", 1, 1, MAX_FILTERS),
                    size=size,
                    stride=o.int("stride", 1, 1, 16),
                    pad=pad,
                    groups=o.int("groups", 1, 1, MAX_FILTERS),
                    batch_normalize=bool(o.int("batch_normalize", 0, 0, 1)),
                    activation=activation,
                )
            )
        elif kind in ("maxpool", "max"):
            size = o.int("size", 1, 1, MAX_KERNEL)
            stride = o.int("stride", 1, 1, 16)
            layers.append(MaxPoolLayer(i, size, stride, o.int("padding", size - 1, 0, 2 * MAX_KERNEL)))
        elif kind == "route":
            refs = o.ints("layers")
            if not refs:
                raise o._err("option 'layers' is required")
            if "groups" in opts_dict and o.int("groups", 1, 1) != 1:
                raise o._err("route 'groups' is not supported")
            layers.append(RouteLayer(i, tuple(absolute(r) for r in refs)))
        elif kind == "upsample":
            layers.append(UpsampleLayer(i, o.int("stride", 2, 1, 16), o.float("scale", 1.0)))
        elif kind == "shortcut":
            activation = o.str("activation", "linear")
            if activation not in ACTIVATIONS:
                raise o._err(f"unsupported activation '{activation}'")
            layers.append(ShortcutLayer(i, absolute(o.int("from", lo=-MAX_LAYERS, hi=MAX_LAYERS)), activation))
        elif kind == "yolo":
            classes = o.int("classes", 20, 1, MAX_CLASSES)
            anchor_vals = o.floats("anchors")
            num = o.int("num", len(anchor_vals) // 2 or 1, 1, 1000)
            if len(anchor_vals) != 2 * num:
                raise o._err(f"'anchors' has {len(anchor_vals)} numbers, expected 2*num = {2 * num}")
            mask = o.ints("mask") or list(range(num))
            if any(not 0 <= m < num for m in mask):
                raise o._err(f"'mask' {mask} refers to anchors outside 0..{num - 1}")
            anchors = tuple((anchor_vals[2 * k], anchor_vals[2 * k + 1]) for k in range(num))
            layers.append(YoloLayer(i, tuple(mask), anchors, classes))
        else:
            raise ModelFormatError(f"{path}:{ln}: unknown layer type [{kind}] (layer {i})")

    network = Network(str(path), width, height, channels, layers)
    if not network.yolo_layers:
        raise ModelFormatError(f"{path}: no [yolo] layer: not a YOLOv3-style detector")
    if len({y.classes for y in network.yolo_layers}) != 1:
        raise ModelFormatError(f"{path}: [yolo] layers disagree on 'classes'")
    network.shapes = _shapes(network, width, height, check=True)
    if network.n_params > MAX_PARAMS:
        raise ModelFormatError(f"{path}: {network.n_params} parameters exceeds the bound {MAX_PARAMS}")
    return network


def _shapes(network: Network, width: int, height: int, check: bool = False) -> list[tuple[int, int, int]]:
    """Walk the layers, returning each output (c, h, w); with ``check``, validate and set in_channels."""
    shapes: list[tuple[int, int, int]] = []
    c, h, w = network.channels, height, width
    path = network.cfg_path
    for layer in network.layers:
        if isinstance(layer, ConvLayer):
            if check:
                if c % layer.groups or layer.filters % layer.groups:
                    raise ModelFormatError(f"{path}: layer {layer.index}: groups={layer.groups} does not divide channels")
                layer.in_channels = c
            h = (h + 2 * layer.pad - layer.size) // layer.stride + 1
            w = (w + 2 * layer.pad - layer.size) // layer.stride + 1
            c = layer.filters
        elif isinstance(layer, MaxPoolLayer):
            h = (h + layer.padding - layer.size) // layer.stride + 1
            w = (w + layer.padding - layer.size) // layer.stride + 1
        elif isinstance(layer, RouteLayer):
            srcs = [shapes[j] for j in layer.layers]
            if check and len({s[1:] for s in srcs}) != 1:
                raise ModelFormatError(f"{path}: layer {layer.index}: route joins layers of different sizes {srcs}")
            c, h, w = sum(s[0] for s in srcs), srcs[0][1], srcs[0][2]
        elif isinstance(layer, UpsampleLayer):
            h, w = h * layer.stride, w * layer.stride
        elif isinstance(layer, ShortcutLayer):
            if check and shapes[layer.source] != (c, h, w):
                raise ModelFormatError(
                    f"{path}: layer {layer.index}: shortcut from layer {layer.source} with shape "
                    f"{shapes[layer.source]} does not match {(c, h, w)}"
                )
        elif isinstance(layer, YoloLayer):
            if check and c != len(layer.mask) * (5 + layer.classes):
                raise ModelFormatError(
                    f"{path}: layer {layer.index}: [yolo] expects {len(layer.mask)}*(5+{layer.classes}) = "
                    f"{len(layer.mask) * (5 + layer.classes)} input channels, the previous layer gives {c}"
                )
        if h < 1 or w < 1:
            raise ModelFormatError(f"{path}: layer {layer.index}: output size {w}x{h} at input {width}x{height}")
        shapes.append((c, h, w))
    return shapes


def weights_header_size(major: int, minor: int) -> int:
    """Darknet stores ``seen`` as int64 from format 0.2 on (parser.c load_weights_upto)."""
    return 12 + (8 if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000 else 4)


def load_weights(network: Network, weights_path: str | os.PathLike) -> Network:
    """Read a Darknet ``.weights`` file into ``network``'s conv layers, folding batch-norm.

    The file size must be exactly header + 4 bytes x the cfg's parameter count.
    Folding follows darknet's normalize_cpu: ``scale * (x - mean) / (sqrt(var) + 1e-6) + bias``.
    """
    path = Path(weights_path)
    try:
        size = path.stat().st_size
    except FileNotFoundError as e:
        raise ModelFormatError(f"{path}: weights file not found") from e
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12:
            raise ModelFormatError(f"{path}: {size} bytes is too short for a Darknet weights header")
        major, minor, revision = (int(v) for v in np.frombuffer(head, "<i4"))
        header = weights_header_size(major, minor)
        expected = header + 4 * network.n_params
        if size != expected:
            raise ModelFormatError(
                f"{path}: expected {expected} bytes (header {header} + 4 x {network.n_params} parameters "
                f"from {Path(network.cfg_path).name}), found {size} bytes"
                + (" (truncated)" if size < expected else " (trailing data)")
            )
        f.seek(header)
        data = np.fromfile(f, dtype="<f4")
    offset = 0

    def take(n: int) -> np.ndarray:
        nonlocal offset
        out = data[offset : offset + n]
        offset += n
        return out

    for conv in network.conv_layers:
        n = conv.filters
        bias = take(n).astype(np.float64)
        if conv.batch_normalize:
            scales, mean, var = (take(n).astype(np.float64) for _ in range(3))
        k = conv.in_channels // conv.groups
        w = take(n * k * conv.size * conv.size).astype(np.float64).reshape(n, k, conv.size, conv.size)
        if conv.batch_normalize:
            factor = scales / (np.sqrt(var) + 1e-6)
            w = w * factor[:, None, None, None]
            bias = bias - mean * factor
        if not (np.isfinite(w).all() and np.isfinite(bias).all()):
            raise ModelFormatError(f"{path}: layer {conv.index} has non-finite weights")
        conv.weight = w.astype(np.float32)
        conv.bias = bias.astype(np.float32)
    assert offset == data.size
    return network


def read_names(names_path: str | os.PathLike, classes: int | None = None) -> list[str]:
    """Read a ``.names`` file (one class per line); with ``classes``, require that many names."""
    path = Path(names_path)
    try:
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError as e:
        raise ModelFormatError(f"{path}: names file not found") from e
    except UnicodeDecodeError as e:
        raise ModelFormatError(f"{path}: names file is not UTF-8 text") from e
    while names and not names[-1]:
        names.pop()
    if classes is not None and len(names) != classes:
        raise ModelFormatError(f"{path}: {len(names)} class names, but the cfg's [yolo] layers have classes={classes}")
    return names


def write_random_weights(network: Network, weights_path: str | os.PathLike, seed: int = 20240611) -> int:
    """Write a Darknet-format weights file with random but well-scaled values (for tests).

    Distribution as in darknet-semantics.md: BN scale U(0.9,1.1), mean N(0,0.02), var U(0.8,1.25),
    bias N(0,0.02); conv weights N(0, sqrt(2/fan_in))*0.9 (*0.3 before a shortcut); linear heads
    *1.5 with bias N(0,0.1). Returns the file size.
    """
    rng = np.random.default_rng(seed)
    closes_residual = {net_layer.index - 1 for net_layer in network.layers if isinstance(net_layer, ShortcutLayer)}
    chunks = [np.array([0, 2, 0], "<i4").tobytes(), np.array([0], "<i8").tobytes()]
    for conv in network.conv_layers:
        n, k = conv.filters, conv.in_channels // conv.groups
        fan_in = k * conv.size * conv.size
        gain = 0.9 * (0.3 if conv.index in closes_residual else 1.0)
        if conv.batch_normalize:
            parts = [
                rng.normal(0, 0.02, n),
                rng.uniform(0.9, 1.1, n),
                rng.normal(0, 0.02, n),
                rng.uniform(0.8, 1.25, n),
            ]
        else:
            gain = 1.5
            parts = [rng.normal(0, 0.1, n)]
        parts.append(rng.normal(0, np.sqrt(2.0 / fan_in), n * fan_in) * gain)
        chunks.extend(p.astype("<f4").tobytes() for p in parts)
    blob = b"".join(chunks)
    Path(weights_path).write_bytes(blob)
    return len(blob)


@dataclass(frozen=True)
class ModelFiles:
    cfg: Path
    weights: Path
    names: Path


def find_model_files(model_dir: str | os.PathLike) -> ModelFiles:
    """Locate exactly one ``.cfg``, ``.weights`` and ``.names`` in ``model_dir`` (or one level down,
    as a storage-initializer-unpacked archive often nests them)."""
    root = Path(model_dir)
    if not root.is_dir():
        raise ModelFormatError(f"{root}: model directory not found")
    for candidate in [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]:
        found = {ext: sorted(candidate.glob(f"*.{ext}")) for ext in ("cfg", "weights", "names")}
        if any(found.values()):
            break
    missing = [ext for ext, files in found.items() if not files]
    if missing:
        raise ModelFormatError(f"{candidate}: no .{' / .'.join(missing)} file in the model directory")
    many = {ext: files for ext, files in found.items() if len(files) > 1}
    if many:
        listing = "; ".join(f".{ext}: {', '.join(p.name for p in files)}" for ext, files in many.items())
        raise ModelFormatError(f"{candidate}: more than one model file of a kind ({listing})")
    return ModelFiles(found["cfg"][0], found["weights"][0], found["names"][0])
