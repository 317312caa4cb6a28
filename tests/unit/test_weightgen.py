"""yolo_devtools.weightgen: Darknet weights layout, exact sizes, determinism, head calibration."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from predictor import darknet
from tests.servers import DATA
from yolo_devtools import weightgen

pytestmark = pytest.mark.unit

CFG = DATA / "cfg"
REFERENCE = DATA / "reference"

# header + 4 x parameters of the official weights files (darknet-semantics.md section 7);
# yolov2.weights is format 0.1 (16-byte header, int32 `seen`), the others 0.2 (20 bytes)
OFFICIAL_SIZES = {
    "yolov2": (1, 203_934_260),
    "yolov2-tiny": (2, 44_948_600),
    "yolov3": (2, 248_007_048),
    "yolov3-spp": (2, 252_209_544),
    "yolov4": (2, 257_717_640),
    "yolov4-tiny": (2, 24_251_276),
    "yolov7-tiny": (2, 24_967_560),
}

SMALL_CFG = """[net]
width=64
height=64
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[shortcut]
from=-2
activation=linear

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
"""


@pytest.fixture()
def small_cfg(tmp_path):
    p = tmp_path / "small.cfg"
    p.write_text(SMALL_CFG)
    return p


@pytest.mark.parametrize("model", sorted(OFFICIAL_SIZES))
def test_sizes_equal_the_official_weights_files(model):
    minor, size = OFFICIAL_SIZES[model]
    assert weightgen.weights_size(weightgen.specs_from_cfg(CFG / f"{model}.cfg"), 0, minor) == size


def test_header_layout():
    assert weightgen.header_bytes(0, 2) == np.array([0, 2, 0], "<i4").tobytes() + np.zeros(1, "<i8").tobytes()
    assert weightgen.header_bytes(0, 1) == np.array([0, 1, 0, 0], "<i4").tobytes()  # int32 `seen` below 0.2


@pytest.mark.parametrize("model", ["yolov3-tiny", "yolov3"])
def test_specs_agree_with_the_predictor_parser(model):
    net = darknet.parse_cfg(CFG / f"{model}.cfg")
    specs = weightgen.specs_from_cfg(CFG / f"{model}.cfg")
    convs = net.conv_layers
    assert [(s.filters, s.in_per_group, s.size, s.batch_normalize) for s in specs] == [
        (c.filters, c.in_channels // c.groups, c.size, c.batch_normalize) for c in convs
    ]
    assert [c.index for c, s in zip(convs, specs) if s.is_head] == [y.index - 1 for y in net.yolo_layers]
    shortcuts = {layer.index - 1 for layer in net.layers if isinstance(layer, darknet.ShortcutLayer)}
    assert [c.index for c, s in zip(convs, specs) if s.closes_residual] == sorted(shortcuts)


def test_head_kinds_from_the_cfgs():
    kinds = {m: {s.head.kind for s in weightgen.specs_from_cfg(CFG / f"{m}.cfg") if s.head} for m in OFFICIAL_SIZES}
    assert kinds["yolov2"] == kinds["yolov2-tiny"] == {"region"}
    assert kinds["yolov7-tiny"] == {"yolo_logistic"}  # new_coords: the head conv is logistic
    assert kinds["yolov3-spp"] == kinds["yolov4"] == kinds["yolov4-tiny"] == {"yolo"}
    region = [s.head for s in weightgen.specs_from_cfg(CFG / "yolov2.cfg") if s.head]
    assert region == [weightgen.Head("region", anchors=5, classes=80, coords=4)]


def test_route_groups_and_reorg_channels():
    # yolov4-tiny: [route] groups=2 group_id=1 halves the channels the next conv sees
    v4t = weightgen.specs_from_cfg(CFG / "yolov4-tiny.cfg")
    assert [s.in_per_group for s in v4t[:4]] == [3, 32, 64, 32]
    # yolov2: reorg stride 2 turns 64 channels into 256, concatenated with 1024
    v2 = weightgen.specs_from_cfg(CFG / "yolov2.cfg")
    assert v2[-2].in_per_group == 1024 + 256


def test_file_layout_is_what_the_predictor_reads(small_cfg, tmp_path):
    blob = weightgen.generate_weights(weightgen.net_from_cfg(small_cfg), seed=7)
    (tmp_path / "w.weights").write_bytes(blob)
    net = darknet.load_weights(darknet.parse_cfg(small_cfg), tmp_path / "w.weights")  # exact size or it raises
    raw = np.frombuffer(blob[20:], "<f4").astype(np.float64)
    bias, scale, mean, var = (raw[i * 8 : (i + 1) * 8] for i in range(4))
    w = raw[32 : 32 + 8 * 3 * 9].reshape(8, 3, 3, 3)
    f = scale / (np.sqrt(var) + 1e-6)
    np.testing.assert_allclose(net.conv_layers[0].weight, (w * f[:, None, None, None]).astype(np.float32))
    np.testing.assert_allclose(net.conv_layers[0].bias, (bias - mean * f).astype(np.float32))
    assert 0.9 <= scale.min() and scale.max() <= 1.1 and 0.8 <= var.min() and var.max() <= 1.25
    head = net.conv_layers[-1]  # no batch norm: bias then weights, as read
    np.testing.assert_array_equal(head.bias, raw[-21 - 21 * 16 : -21 * 16].astype(np.float32))


def test_same_seed_same_bytes_other_seed_other_bytes(small_cfg):
    spec = weightgen.net_from_cfg(small_cfg)
    a, b = weightgen.generate_weights(spec, seed=1), weightgen.generate_weights(spec, seed=1)
    assert a == b
    assert weightgen.generate_weights(spec, seed=2) != a


def test_head_calibration_hits_its_targets(small_cfg):
    spec = weightgen.net_from_cfg(small_cfg)
    blob = weightgen.generate_weights(spec, seed=3)
    raw = np.frombuffer(blob[20:], "<f4")
    params, offset = [], 0
    for conv in spec.convs:
        n = conv.filters
        parts = [raw[offset : offset + n]]
        offset += n
        if conv.batch_normalize:
            parts += [raw[offset + i * n : offset + (i + 1) * n] for i in range(3)]
            offset += 3 * n
        parts.append(raw[offset : offset + n * conv.fan_in].reshape(n, conv.in_per_group, conv.size, conv.size))
        offset += n * conv.fan_in
        params.append(parts)
    (i, x), = weightgen._head_inputs(spec, params, weightgen.CALIBRATION_SIZE).items()
    bias, w = params[i]
    z = (weightgen._conv2d(x, w, 1, 0, 1) + bias[:, None, None]).reshape(3, 7, -1).astype(np.float64)
    t = weightgen.HEAD_TARGETS["yolo"]
    # per channel: std within a quarter octave of the target
    std = z.std(axis=2)
    assert np.all(np.abs(np.log2(std[:, [0, 1]] / t.xy_std)) <= 0.126)
    assert np.all(np.abs(np.log2(std[:, [2, 3]] / t.wh_std)) <= 0.126)
    assert np.all(np.abs(np.log2(std[:, 4] / t.obj_std)) <= 0.126)
    assert np.all(np.abs(np.log2(std[:, 5:] / t.cls_std)) <= 0.126)
    # counts above 0.25 on the calibration image, scaled from the cfg's 64x64 to its 256x256
    area = (weightgen.CALIBRATION_SIZE / 64) ** 2
    obj = 1 / (1 + np.exp(-z[:, 4]))
    cls = 1 / (1 + np.exp(-z[:, 5:]))
    assert 0.7 < np.count_nonzero(obj > 0.25) / (t.candidates_025 * area) < 1.4
    assert 0.7 < np.count_nonzero(obj[:, None] * cls > 0.25) / (t.entries_025 * area) < 1.4


@pytest.mark.parametrize("model", ["yolov2-tiny", "yolov4-tiny", "yolov7-tiny"])  # one model per head kind
def test_regenerates_the_reference_weights(model):
    manifest = json.loads((REFERENCE / model / "manifest.json").read_text())
    w = manifest["weights"]
    major, minor, _ = (int(v) for v in w["header"].split("."))
    blob = weightgen.generate_weights(weightgen.net_from_cfg(DATA / manifest["cfg"].removeprefix("tests/data/")),
                                      seed=w["seed"], major=major, minor=minor)
    assert (len(blob), hashlib.sha256(blob).hexdigest()) == (w["size"], w["sha256"])


def test_unsupported_layers_are_refused(tmp_path):
    p = tmp_path / "bad.cfg"
    p.write_text("[net]\nwidth=64\nheight=64\n[lstm]\noutput=4\n")
    with pytest.raises(ValueError, match=r"\[lstm\] is not supported"):
        weightgen.net_from_cfg(p)
