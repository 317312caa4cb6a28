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
        ("names_mismatch", r"79 class names, but the cfg's detection layers have classes=80"),
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
        ("[net]\nwidth=abc\n[yolo]\n", "must be an integer"),
        ("[net]\nwidth=416\nheight=416\n[maxpool]\nsize=2\n", r"not a detector: no \[yolo\] or \[region\] layer"),
        ("[net]\nwidth=28\n[convolutional]\n[avgpool]\n[softmax]\n", r"not a detector: no \[yolo\] or \[region\]"),
        ("[net]\n[yolo]\nmask=0,7\nanchors=1,2,3,4\nnum=2\nclasses=1\n", "refers to anchors outside"),
    ]:
        bad.write_text(text)
        with pytest.raises(ModelFormatError, match=expect):
            darknet.parse_cfg(bad)


# ---------------------------------------------------------------- the Darknet family (YOLOv2..v7-tiny)

CFG = DATA / "cfg"

# Expected values are Darknet's (docs: darknet-semantics.md section 7): weights sizes are header +
# 4 x the parameters Darknet reads (yolov2's official file has format 0.1, a 16-byte header).
FAMILY = {
    # model: (lineage, heads, header bytes, weights file size, letter_box, nms, beta_nms)
    "yolov2-tiny": ("pjreddie", [("region", 15)], 20, 44_948_600, True, "agnostic", 0.6),
    "yolov2": ("pjreddie", [("region", 31)], 16, 203_934_260, True, "agnostic", 0.6),
    "yolov3-spp": ("pjreddie", [("yolo", 89), ("yolo", 101), ("yolo", 113)], 20, 252_209_544, True, "agnostic", 0.6),
    "yolov4-tiny": ("alexeyab", [("yolo", 30), ("yolo", 37)], 20, 24_251_276, False, "diou", 0.6),
    "yolov4": ("alexeyab", [("yolo", 139), ("yolo", 150), ("yolo", 161)], 20, 257_717_640, False, "diou", 0.6),
    "yolov7-tiny": ("alexeyab", [("yolo", 90), ("yolo", 94), ("yolo", 98)], 20, 24_967_560, False, "diou", 0.6),
}


@pytest.mark.parametrize("model", list(FAMILY))
def test_family_cfgs_parse_with_darknets_structure(model):
    lineage, heads, header, size, letter_box, nms, beta = FAMILY[model]
    net = darknet.parse_cfg(CFG / f"{model}.cfg")
    assert net.lineage == lineage
    assert [(h.output_name.rstrip("0123456789"), h.index) for h in net.heads] == heads
    assert net.yolo_layers == net.heads
    assert header + 4 * net.n_params == size
    assert (net.letter_box, net.nms_kind, net.beta_nms) == (letter_box, nms, beta)
    assert net.default_confidence == (0.5 if lineage == "pjreddie" else 0.25)
    specs = darknet.conv_specs(net)
    assert sum(s.n_params for s in specs) == net.n_params
    assert [s.index for s in specs if s.head] == [h.index - 1 for h in net.heads]
    assert (lineage == "alexeyab") == bool(net.alexeyab_features)


def test_yolov2_shapes_reorg_and_size2_stride1_pool():
    net = darknet.parse_cfg(CFG / "yolov2.cfg")  # 608x608
    reorg = [layer for layer in net.layers if isinstance(layer, darknet.ReorgLayer)]
    assert len(reorg) == 1 and net.shapes[reorg[0].index - 1] == (64, 38, 38)
    assert net.shapes[reorg[0].index] == (256, 19, 19)  # C*s², H/s, W/s
    assert net.shapes[-1] == (425, 19, 19) and net.heads[0].anchors[0] == (0.57273, 0.677385)  # grid units
    tiny = darknet.parse_cfg(CFG / "yolov2-tiny.cfg")
    assert isinstance(tiny.layers[11], darknet.MaxPoolLayer) and (tiny.layers[11].size, tiny.layers[11].stride) == (2, 1)
    assert tiny.shapes[10][1:] == tiny.shapes[11][1:] == (13, 13)


def test_yolov4_tiny_route_groups_and_yolov7_tiny_heads():
    net = darknet.parse_cfg(CFG / "yolov4-tiny.cfg")
    split = net.layers[3]
    assert isinstance(split, darknet.RouteLayer) and (split.groups, split.group_id) == (2, 1)
    assert net.shapes[2] == (64, 104, 104) and net.shapes[3] == (32, 104, 104)
    assert [h.scale_x_y for h in net.heads] == [1.05, 1.05] and not any(h.new_coords for h in net.heads)
    v7 = darknet.parse_cfg(CFG / "yolov7-tiny.cfg")
    assert all(h.new_coords and h.scale_x_y == 2.0 and h.nms_kind == "diounms" for h in v7.heads)
    assert all(v7.layers[h.index - 1].activation == "logistic" for h in v7.heads)
    spp = [layer for layer in v7.layers if isinstance(layer, darknet.MaxPoolLayer) and layer.stride == 1]
    assert sorted(layer.size for layer in spp) == [5, 9, 13]
    assert all(v7.shapes[layer.index] == v7.shapes[layer.index - 1] for layer in spp)  # "same" pools


def _tiny_with(tmp_path, old: str, new: str, count: int = 1):
    text = TINY_CFG.read_text()
    assert old in text
    cfg = tmp_path / "net.cfg"
    cfg.write_text(text.replace(old, new, count))
    return cfg


@pytest.mark.parametrize(
    "old, new, feature",
    [
        ("activation=leaky", "activation=mish", "activation=mish"),
        ("activation=leaky", "activation=swish", "activation=swish"),
        ("classes=80", "classes=80\nscale_x_y=1.05", "option 'scale_x_y'"),
        ("classes=80", "classes=80\nnms_kind=greedynms", "option 'nms_kind'"),
        ("classes=80", "classes=80\niou_loss=ciou", "option 'iou_loss'"),  # training-only, AlexeyAB's
        ("channels=3", "channels=3\nletter_box=1", "option 'letter_box'"),
        ("channels=3", "channels=3\nmosaic=1", "option 'mosaic'"),
    ],
)
def test_anything_only_alexeyab_reads_selects_its_lineage(tmp_path, old, new, feature):
    net = darknet.parse_cfg(_tiny_with(tmp_path, old, new))
    assert net.lineage == "alexeyab" and net.default_confidence == 0.25
    assert any(feature in f for f in net.alexeyab_features)
    with pytest.raises(ModelFormatError, match=rf"{feature}, which only AlexeyAB Darknet reads") as info:
        darknet.parse_cfg(tmp_path / "net.cfg", lineage="pjreddie")
    assert str(tmp_path / "net.cfg") in str(info.value) and "\n" not in str(info.value)


def test_lineage_can_be_forced_to_alexeyab():
    net = darknet.parse_cfg(TINY_CFG, lineage="alexeyab")
    assert (net.lineage, net.letter_box, net.nms_kind, net.default_confidence) == ("alexeyab", False, "per_class", 0.25)
    assert all(h.lineage == "alexeyab" for h in net.heads)
    assert darknet.parse_cfg(TINY_CFG).lineage == "pjreddie"
    with pytest.raises(ValueError, match="lineage"):
        darknet.parse_cfg(TINY_CFG, lineage="hank")


def test_letter_box_cfg_keeps_the_letterbox():
    net = darknet.parse_cfg(CFG / "yolov4-tiny.cfg")
    assert not net.letter_box
    text = (CFG / "yolov4-tiny.cfg").read_text().replace("[net]", "[net]\nletter_box=1", 1)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as t:
        (Path(t) / "c.cfg").write_text(text)
        assert darknet.parse_cfg(Path(t) / "c.cfg").letter_box


@pytest.mark.parametrize(
    "old, new, expect",
    [
        ("classes=80", "classes=80\nfoo=1", r"\[yolo\] unknown option 'foo': refusing rather than ignoring it"),
        ("classes=80", "classes=80\nnms_kind=cornersnms", r"unsupported nms_kind 'cornersnms'"),
        ("classes=80", "classes=80\nmap=data/coco9k.map", r"option 'map' is not supported"),
        ("filters=16\nsize=3", "filters=16\ndilation=2\nsize=3", r"option 'dilation'=2 is not supported \(only dilation=1\)"),
        ("filters=16", "filters=16\nantialiasing=1", r"option 'antialiasing'=1 is not supported"),
        ("filters=16", "filters=16\nstride_x=2", r"option 'stride_x' different from 'stride'"),
        ("filters=16", "filters=16\nshare_index=-1", r"option 'share_index' is not supported"),
        ("filters=16", "filters=16\nflipped=1", r"option 'flipped'=1 is not supported"),
        ("filters=16", "filters=16\ndontload=1", r"option 'dontload'=1 is not supported"),
        ("[route]\nlayers = -4", "[route]\nlayers = -4\ngroups=2\ngroup_id=2", r"option 'group_id'=2 outside \[0, 1\]"),
        ("[maxpool]\nsize=2\nstride=2", "[maxpool]\nsize=2\nstride=2\nmaxpool_depth=1", r"option 'maxpool_depth'=1"),
    ],
)
def test_options_that_would_change_inference_are_refused(tmp_path, old, new, expect):
    cfg = _tiny_with(tmp_path, old, new)
    with pytest.raises(ModelFormatError, match=expect) as info:
        darknet.parse_cfg(cfg)
    message = str(info.value)
    assert message.startswith(f"{cfg}:") and "\n" not in message  # file and line


def test_unsupported_shortcut_and_head_forms_are_refused(tmp_path):
    v3 = (CFG / "yolov3-spp.cfg").read_text()
    v2 = (CFG / "yolov2.cfg").read_text()
    cases = [
        (v3.replace("from=-3", "from=-3,-5", 1), r"exactly one layer"),
        (v3.replace("from=-3", "from=-3\nweights_type=per_feature", 1), r"'weights_type'=per_feature is not supported"),
        (v3.replace("from=-3", "from=-3\nalpha=0.5", 1), r"'alpha'=0.5 is not supported"),
        (v2.replace("softmax=1", "softmax=0"), r"only softmax=1"),
        (v2.replace("coords=4", "coords=5"), r"only coords=4"),
        (v2.replace("[reorg]\nstride=2", "[reorg]\nstride=2\nreverse=1"), r"'reverse'=1 is not supported"),
        (v2.replace("softmax=1", "softmax=1\ntree=data/9k.tree"), r"option 'tree' is not supported"),
    ]
    for text, expect in cases:
        cfg = tmp_path / "c.cfg"
        cfg.write_text(text)
        with pytest.raises(ModelFormatError, match=expect):
            darknet.parse_cfg(cfg)


def test_training_only_options_are_accepted(tmp_path):
    extra = {
        "[net]": "mosaic=1\ncutmix=0\nflip=1\nema_alpha=0.9998\nlabel_smooth_eps=0.1\nburn_in=1000",
        "[yolo]": "counters_per_class=1,2,3\nmax_delta=5\niou_normalizer=0.07\ncls_normalizer=1.0\n"
        "obj_normalizer=1.0\nresize=1.5\nobjectness_smooth=1\nlabel_smooth_eps=0.1",
        "[convolutional]": "stopbackward=1\nlearning_rate=0.1\ntrain_only_bn=0",
    }
    text = TINY_CFG.read_text()
    for section, options in extra.items():
        text = text.replace(section, f"{section}\n{options}", 1)
    cfg = tmp_path / "c.cfg"
    cfg.write_text(text)
    net = darknet.parse_cfg(cfg)
    assert len(net.layers) == 24 and net.lineage == "alexeyab"  # AlexeyAB's training keys name its cfgs


@pytest.mark.parametrize(
    "kind", ["lstm", "Gaussian_yolo", "crnn", "conv_lstm", "local", "deconvolutional", "local_avgpool",
             "implicit_add", "implicit_mul", "softmax", "connected", "net"]
)
def test_unsupported_layer_types_are_refused_in_one_line(tmp_path, kind):
    cfg = tmp_path / "c.cfg"
    cfg.write_text(TINY_CFG.read_text() + f"\n[{kind}]\nfilters=1\n")
    with pytest.raises(ModelFormatError) as info:
        darknet.parse_cfg(cfg)
    message = str(info.value)
    assert message.startswith(f"{cfg}:") and "\n" not in message
    assert f"unknown layer type [{kind.lower()}] (layer 24): a Darknet layer this server does not run" in message


def test_a_layer_may_not_read_a_detection_layers_output(tmp_path):
    cfg = _tiny_with(tmp_path, "[route]\nlayers = -4", "[route]\nlayers = -1")  # route 17 -> yolo 16
    with pytest.raises(ModelFormatError, match="layer 17: reads the output of detection layer 16"):
        darknet.parse_cfg(cfg)


def test_cfg_reading_quirks_match_darknet(tmp_path):
    # maxpool size defaults to its stride; the FIRST occurrence of a repeated key wins (option_find)
    cfg = _tiny_with(tmp_path, "[maxpool]\nsize=2\nstride=2", "[maxpool]\nstride=2\nstride=4")
    net = darknet.parse_cfg(cfg)
    assert (net.layers[1].size, net.layers[1].stride) == (2, 2)


def test_batchnorm_folding_follows_the_lineage(tmp_path):
    blob = _random_weights()
    d = _model_dir(tmp_path, weights=blob)
    raw = np.frombuffer(blob[20:], "<f4")
    n = 16
    bias, scale, mean, var = (raw[i * n : (i + 1) * n].astype(np.float64) for i in range(4))
    w = raw[4 * n : 4 * n + n * 27].astype(np.float64).reshape(n, 3, 3, 3)
    for lineage, factor in (("pjreddie", scale / (np.sqrt(var) + 1e-6)), ("alexeyab", scale / np.sqrt(var + 1e-5))):
        net = darknet.load_weights(darknet.parse_cfg(TINY_CFG, lineage), d / "net.weights")
        np.testing.assert_array_equal(net.conv_layers[0].weight, (w * factor[:, None, None, None]).astype(np.float32))
        np.testing.assert_array_equal(net.conv_layers[0].bias, (bias - mean * factor).astype(np.float32))


def test_yolov2_weights_with_a_16_byte_header_load(tmp_path):
    net = darknet.parse_cfg(CFG / "yolov2-tiny.cfg")
    w = tmp_path / "w"
    darknet.write_random_weights(net, w)
    old = np.array([0, 1, 0, 0], "<i4").tobytes() + w.read_bytes()[20:]  # format 0.1: int32 `seen`
    w.write_bytes(old)
    darknet.load_weights(net, w)
    assert all(c.weight is not None for c in net.conv_layers)
