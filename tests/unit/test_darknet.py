"""Darknet cfg/weights/names reading: shapes, exact byte accounting and every refusal."""

from __future__ import annotations

import numpy as np
import pytest

from predictor import darknet
from predictor.darknet import ModelFormatError
from tests.servers import DATA

pytestmark = pytest.mark.unit

TINY_CFG = DATA / "cfg" / "yolov3-tiny.cfg"
FULL_CFG = DATA / "cfg" / "yolov3.cfg"
NAMES = DATA / "coco.names"


def test_tiny_cfg_structure():
    net = darknet.parse_cfg(TINY_CFG)
    assert (net.width, net.height) == (416, 416)
    assert len(net.layers) == 24
    assert [y.index for y in net.yolo_layers] == [16, 23]
    assert net.yolo_layers[0].masked_anchors == ((81, 82), (135, 169), (344, 319))
    assert net.yolo_layers[1].masked_anchors == ((10, 14), (23, 27), (37, 58))
    assert net.shapes[15] == (255, 13, 13) and net.shapes[22] == (255, 26, 26)
    # the size-2 stride-1 maxpool keeps 13x13 thanks to darknet's padding
    assert isinstance(net.layers[11], darknet.MaxPoolLayer) and net.shapes[11][1:] == (13, 13)
    assert net.n_params == 8_858_734  # (35,434,956 - 20) / 4
    assert abs(net.flops() / 1e9 - 5.565) < 0.002


def test_full_yolov3_cfg_structure():
    net = darknet.parse_cfg(FULL_CFG)  # Darknet's own cfg: 608x608, training batch settings inside
    assert (net.width, net.height) == (608, 608)
    assert len(net.layers) == 107
    assert [y.index for y in net.yolo_layers] == [82, 94, 106]
    assert len(net.conv_layers) == 75
    assert net.n_params * 4 + 20 == 248_007_048  # size of the official yolov3.weights
    assert abs(net.flops(416, 416) / 1e9 - 65.864) < 0.01


def _model_dir(tmp_path, cfg_text=None, weights: bytes | None = None, names=None):
    d = tmp_path / "m"
    d.mkdir()
    (d / "net.cfg").write_text(cfg_text if cfg_text is not None else TINY_CFG.read_text())
    if names is not False:
        (d / "coco.names").write_text(names if names is not None else NAMES.read_text())
    if weights is not None:
        (d / "net.weights").write_bytes(weights)
    return d


def _random_weights(cfg=TINY_CFG) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as t:
        p = Path(t) / "w"
        darknet.write_random_weights(darknet.parse_cfg(cfg), p)
        return p.read_bytes()


def test_random_weights_have_the_official_sizes(tmp_path):
    assert len(_random_weights(TINY_CFG)) == 35_434_956


def test_load_weights_folds_batchnorm_exactly(tmp_path):
    net = darknet.parse_cfg(TINY_CFG)
    blob = _random_weights()
    d = _model_dir(tmp_path, weights=blob)
    darknet.load_weights(net, d / "net.weights")
    conv0 = net.conv_layers[0]
    raw = np.frombuffer(blob[20:], "<f4")
    n = conv0.filters
    bias, scale, mean, var = (raw[i * n : (i + 1) * n].astype(np.float64) for i in range(4))
    w = raw[4 * n : 4 * n + n * 3 * 9].astype(np.float64).reshape(n, 3, 3, 3)
    f = scale / (np.sqrt(var) + 1e-6)
    np.testing.assert_allclose(conv0.weight, (w * f[:, None, None, None]).astype(np.float32))
    np.testing.assert_allclose(conv0.bias, (bias - mean * f).astype(np.float32))


def test_seen_as_int32_for_old_format(tmp_path):
    net = darknet.parse_cfg(TINY_CFG)
    blob = _random_weights()
    old = np.array([0, 1, 0, 0], "<i4").tobytes() + blob[20:]  # format 0.1: seen is int32
    d = _model_dir(tmp_path, weights=old)
    darknet.load_weights(net, d / "net.weights")
    assert darknet.weights_header_size(0, 1) == 16 and darknet.weights_header_size(0, 2) == 20


def test_find_model_files(tmp_path):
    d = _model_dir(tmp_path, weights=b"x")
    files = darknet.find_model_files(d)
    assert files.cfg.name == "net.cfg" and files.weights.name == "net.weights" and files.names.name == "coco.names"
    nested = tmp_path / "outer"
    nested.mkdir()
    d.rename(nested / "inner")
    assert darknet.find_model_files(nested).cfg.name == "net.cfg"


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing_weights", r"no \.weights file"),
        ("truncated", r"expected 35434956 bytes .* found 35000000 bytes \(truncated\)"),
        ("trailing", r"found 35434960 bytes \(trailing data\)"),
        ("names_mismatch", r"79 class names, but the cfg's \[yolo\] layers have classes=80"),
        ("unknown_layer", r"unknown layer type \[lstm\] \(layer 24\)"),
        ("bad_route", r"does not point to an earlier layer"),
        ("bad_activation", r"unsupported activation 'swishy'"),
        ("huge_filters", r"option 'filters'=99999999 outside"),
        ("yolo_channels", r"\[yolo\] expects 3\*\(5\+80\) = 255 input channels, the previous layer gives 254"),
        ("two_cfgs", r"more than one model file of a kind"),
        ("no_dir", r"model directory not found"),
    ],
)
def test_refusals_name_the_file_and_the_problem(tmp_path, case, expect):
    cfg = TINY_CFG.read_text()
    blob = _random_weights()
    weights, names = blob, None
    if case == "missing_weights":
        weights = None
    elif case == "truncated":
        weights = blob[:35_000_000]
    elif case == "trailing":
        weights = blob + b"\0\0\0\0"
    elif case == "names_mismatch":
        names = "\n".join(NAMES.read_text().splitlines()[:79])
    elif case == "unknown_layer":
        cfg += "\n[lstm]\nbatch_normalize=1\n"
    elif case == "bad_route":
        cfg = cfg.replace("layers = -4", "layers = 40")
    elif case == "bad_activation":
        cfg = cfg.replace("activation=leaky", "activation=swishy", 1)
    elif case == "huge_filters":
        cfg = cfg.replace("filters=16", "filters=99999999", 1)
    elif case == "yolo_channels":
        cfg = cfg.replace("filters=255", "filters=254", 1)
    d = _model_dir(tmp_path, cfg, weights, names)
    if case == "two_cfgs":
        (d / "other.cfg").write_text(cfg)
    if case == "no_dir":
        d = tmp_path / "nope"
    with pytest.raises(ModelFormatError, match=expect) as info:
        files = darknet.find_model_files(d)
        net = darknet.parse_cfg(files.cfg)
        darknet.load_weights(net, files.weights)
        darknet.read_names(files.names, net.classes)
    message = str(info.value)
    assert "\n" not in message
    if case not in ("no_dir", "two_cfgs", "missing_weights"):
        assert str(d) in message  # names the file


def test_cfg_syntax_errors(tmp_path):
    bad = tmp_path / "bad.cfg"
    for text, expect in [
        ("", "empty cfg"),
        ("[convolutional]\nfilters=1\n", r"first section must be \[net\]"),
        ("[net]\nwidth=416\nheight\n", "expected key=value"),
        ("[net]\nwidth=abc\n", "must be an integer"),
        ("[net]\nwidth=416\nheight=416\n[maxpool]\nsize=2\n", r"no \[yolo\] layer"),
        ("[net]\n[yolo]\nmask=0,7\nanchors=1,2,3,4\nnum=2\nclasses=1\n", "refers to anchors outside"),
    ]:
        bad.write_text(text)
        with pytest.raises(ModelFormatError, match=expect):
            darknet.parse_cfg(bad)


def test_options_nobody_reads_are_refused_and_training_options_accepted(tmp_path):
    cfg = tmp_path / "c.cfg"
    text = TINY_CFG.read_text()
    cfg.write_text(text.replace("classes=80", "classes=80\nscale_x_y=1.05", 1))
    with pytest.raises(ModelFormatError, match=r"\[yolo\] unknown option 'scale_x_y': refusing rather than ignoring"):
        darknet.parse_cfg(cfg)  # a cfg must never load with an inference option ignored
    cfg.write_text(text.replace("classes=80", "classes=80\nmax=90", 1).replace("filters=16", "filters=16\nstopbackward=1", 1))
    assert len(darknet.parse_cfg(cfg).layers) == 24
