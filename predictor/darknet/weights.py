"""Darknet ``.weights``: reading (batch norm folded per lineage), the layout, a test generator.

File layout (parser.c ``load_weights_upto``): int32 major, minor, revision, then ``seen`` (int64
from format 0.2 on, int32 before: yolov2.weights has a 16-byte header), then for each conv layer in
cfg order: biases [filters], if batch_normalize scales, rolling_mean, rolling_variance
[filters each], then weights [filters, in/groups, size, size], all float32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from predictor.darknet.cfg import ModelFormatError
from predictor.darknet.layers import ShortcutLayer
from predictor.darknet.network import Network


class ConvSpec(NamedTuple):
    """One conv layer as the weights file stores it (see :func:`conv_specs`)."""

    index: int  # layer index in the cfg
    filters: int
    channels_per_group: int  # in_channels // groups
    size: int
    batch_normalize: bool
    head: bool  # its output is the input of a [yolo]/[region] layer

    @property
    def n_params(self) -> int:
        n = self.filters * (1 + self.channels_per_group * self.size * self.size)
        return n + (3 * self.filters if self.batch_normalize else 0)


def conv_specs(network: Network) -> list[ConvSpec]:
    """The conv layers in weights-file order, with what a weights generator needs."""
    feeds_head = {head.index - 1 for head in network.heads}
    return [
        ConvSpec(c.index, c.filters, c.in_channels // c.groups, c.size, c.batch_normalize, c.index in feeds_head)
        for c in network.conv_layers
    ]


def weights_header_size(major: int, minor: int) -> int:
    """Darknet stores ``seen`` as int64 from format 0.2 on (parser.c load_weights_upto)."""
    return 12 + (8 if (major * 10 + minor) >= 2 and major < 1000 and minor < 1000 else 4)


def batchnorm_factor(network: Network, scales: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """``scale / std`` as the network's Darknet computes it: pjreddie ``normalize_cpu``
    ``sqrt(var) + 1e-6``; AlexeyAB ``fuse_conv_batchnorm`` ``sqrt(var + 1e-5)``."""
    if network.lineage == "alexeyab":
        return scales / np.sqrt(variance + 1e-5)
    return scales / (np.sqrt(variance) + 1e-6)


def load_weights(network: Network, weights_path: str | os.PathLike) -> Network:
    """Read a Darknet ``.weights`` file into ``network``'s conv layers, folding batch-norm.

    The file size must be exactly header + 4 bytes x the cfg's parameter count. Folding:
    ``w * factor``, ``bias - mean * factor`` with the lineage's :func:`batchnorm_factor`.
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
            factor = batchnorm_factor(network, scales, var)
            w = w * factor[:, None, None, None]
            bias = bias - mean * factor
        if not (np.isfinite(w).all() and np.isfinite(bias).all()):
            raise ModelFormatError(f"{path}: layer {conv.index} has non-finite weights")
        conv.weight = w.astype(np.float32)
        conv.bias = bias.astype(np.float32)
    assert offset == data.size
    return network


def write_random_weights(network: Network, weights_path: str | os.PathLike, seed: int = 20240611) -> int:
    """Write a Darknet-format weights file with random but well-scaled values (for tests).

    Distribution as in darknet-semantics.md: BN scale U(0.9,1.1), mean N(0,0.02), var U(0.8,1.25),
    bias N(0,0.02); conv weights N(0, sqrt(2/fan_in))*0.9 (*0.3 before a shortcut); linear heads
    *1.5 with bias N(0,0.1). Returns the file size.
    """
    rng = np.random.default_rng(seed)
    closes_residual = {layer.index - 1 for layer in network.layers if isinstance(layer, ShortcutLayer)}
    chunks = [np.array([0, 2, 0], "<i4").tobytes(), np.array([0], "<i8").tobytes()]
    for spec in conv_specs(network):
        n, fan_in = spec.filters, spec.channels_per_group * spec.size * spec.size
        gain = 0.9 * (0.3 if spec.index in closes_residual else 1.0)
        if spec.batch_normalize:
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


__all__ = ["ConvSpec", "batchnorm_factor", "conv_specs", "load_weights", "weights_header_size", "write_random_weights"]
