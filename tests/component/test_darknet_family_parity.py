"""YOLOv2 .. YOLOv7-tiny against Darknet C: tensors on Darknet's own input, detections on five images.

References (tests/data/reference/<model>/, produced by scripts/darknet_references.py with pjreddie
or AlexeyAB libdarknet.so) were computed with deterministic generated weights; the same bytes are
regenerated here (yolo_devtools.weightgen, sha256 checked) and served by our parser, ONNX graph and
decoder. Tensor level: every recorded Darknet layer output (head convs, detection layers, reorg,
route groups, SPP, mish, size-2 stride-1 pools) within 1e-4 of max |ref| on Darknet's exact input.
Detection level: our full path (Darknet letterbox or resize per lineage, graph, decode, the
reference's NMS) at both thresholds. On dog.jpg, decoded as Darknet's stb_image does
(tests/data/dog_tensors), every detection pairs (same class, |Δconf| <= 1e-4, IoU >= 0.999). The
other images go through our libjpeg decoder (1-3/255 off on a few percent of pixels): same class,
|Δconf| <= 0.02, IoU >= 0.95, and a detection found on one side only must sit at a margin
(confidence threshold, or an NMS decision a tiny change can flip; see
yolo_devtools.matching.match_at_margins).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from predictor import darknet
from predictor.engine import OnnxRuntimeEngine, available_cpus
from predictor.onnx_graph import build_onnx
from predictor.yolo import DecodeParams, detect
from yolo_devtools.matching import match_at_margins
from tests.servers import DATA, IMAGE_NAMES, IMAGES
from transformer import geometry, imaging

pytestmark = pytest.mark.component

REFERENCE = DATA / "reference"
REPO = DATA.parent.parent
MODELS = ("yolov2-tiny", "yolov2", "yolov3-spp", "yolov4-tiny", "yolov4", "yolov7-tiny",
          # held-out AlexeyAB cfgs: shortcut of other channel counts; avgpool, scale_channels, dropout,
          # swish; letter_box=1 with mish and new_coords
          "yolov3-tiny-prn", "enet-coco", "yolov4-csp-s-mish")
NMS_BY_FUNCTION = {"do_nms_obj": "agnostic", "do_nms_sort": "per_class", "diounms_sort": "diou"}


def manifest(model: str) -> dict:
    path = REFERENCE / model / "manifest.json"
    if not path.exists():
        pytest.skip(f"{path.relative_to(REPO)} is missing (made by scripts/darknet_references.py; see tests/data/reference/README.md)")
    return json.loads(path.read_text())


@pytest.fixture(scope="module", params=MODELS)
def model(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def served(model, tmp_path_factory) -> darknet.Network:
    """The network with the reference's weights, regenerated and checked byte for byte."""
    from yolo_devtools import weightgen

    m = manifest(model)
    cfg = REPO / m["cfg"]
    w = m["weights"]
    minor = int(w["header"].split(".")[1])
    blob = weightgen.generate_weights(weightgen.net_from_cfg(cfg), w["seed"], 0, minor)
    assert hashlib.sha256(blob).hexdigest() == w["sha256"], "regenerated weights differ from Darknet's"
    path = tmp_path_factory.mktemp(model) / f"{model}.weights"
    path.write_bytes(blob)
    network = darknet.parse_cfg(cfg)
    assert network.lineage == m["lineage"]
    return darknet.load_weights(network, path)


def test_layer_tensors_match_darknet_on_its_own_input(model, served):
    m = manifest(model)
    net = served
    t = m["tensors"]
    x = np.load(REFERENCE / model / t["input"])
    heads = {head.index - 1: head for head in net.heads}
    detection_layers = {head.index: head for head in net.heads}
    probes = [e["layer"] for e in t["layers"] if e["layer"] not in heads and e["layer"] not in detection_layers]
    outs = OnnxRuntimeEngine(build_onnx(net, probes).SerializeToString(), threads=available_cpus()).run(x)
    by_layer = dict(zip([*heads, *probes], outs))
    checked = []
    for entry in t["layers"]:
        ref = np.load(REFERENCE / model / entry["file"])
        layer = entry["layer"]
        if layer in detection_layers:  # Darknet's [yolo]/[region] output: our decode's activations
            head = detection_layers[layer]
            got = head.forward(by_layer[head.index - 1][0])[None]
        else:
            got = by_layer[layer]
        assert got.shape == ref.shape, (entry["file"], got.shape, ref.shape)
        rel = float(np.abs(got - ref).max() / np.abs(ref).max())
        assert rel <= 1e-4, f"{model} {entry['file']}: max |diff| / max |ref| = {rel:.2e}"
        checked.append(entry["kind"])
    assert checked.count("head") == len(net.heads)


def _preprocess(net: darknet.Network, rgb: np.ndarray):
    """Our input tensor, the content rectangle for NMS and the map back to image pixels."""
    mode = "letterbox" if net.letter_box else "resize"  # AlexeyAB `detector test`: resize_image unless letter_box
    tensor, lb = geometry.preprocess(rgb, net.width, net.height, mode)
    content = (*lb.box_offset, lb.new_w, lb.new_h) if net.letter_box else None
    return tensor, content, lambda boxes: geometry.unletterbox_boxes(boxes, lb)


def test_detections_match_darknet_on_five_images(model, served):
    m = manifest(model)
    net = served
    names = darknet.read_names(DATA / "coco.names", net.classes)
    engine = OnnxRuntimeEngine(build_onnx(net).SerializeToString(), threads=available_cpus())
    assert m["detections"]["input_size"] == [net.width, net.height]
    docs = {f: json.loads((REFERENCE / model / f).read_text()) for f in m["detections"]["files"]}
    images = {}
    for name in IMAGE_NAMES:
        if name == "dog.jpg":  # Darknet's own stb_image decode (both lineages decode it identically)
            rgb = np.load(DATA / "dog_tensors" / "decoded_stb_rgb_uint8.npy")
        else:
            rgb = imaging.decode_image((IMAGES / name).read_bytes())
        tensor, content, to_image = _preprocess(net, rgb)
        outs = [o[0] for o in engine.run(tensor[None])]
        images[name] = (outs, content, to_image, (rgb.shape[1], rgb.shape[0]))
    candidates = {}  # Darknet's do_nms_obj candidates (pjreddie models), by threshold
    for f in m["detections"].get("candidate_files", []):
        doc = json.loads((REFERENCE / model / f).read_text())
        candidates[doc["thresh"]] = doc["images"]
    total_pairs = total_unpaired = 0
    for file, doc in docs.items():
        nms = NMS_BY_FUNCTION[doc["nms_function"]]
        if "cli" not in file:  # (pjreddie's CLI variant runs do_nms_sort instead)
            assert nms == net.nms_kind  # the lineage's own NMS
        beta = float(doc["beta_nms"]) if nms == "diou" else 0.6
        params = DecodeParams(confidence=doc["thresh"], nms=nms, beta_nms=beta, max_detections=10_000)
        for name, (outs, content, to_image, size) in images.items():
            assert doc["image_sizes"][name] == list(size)
            rows = detect(outs, net.heads, net.width, net.height, params, content)
            boxes = to_image(rows[:, :4])
            got = [[names[int(r[5])], float(r[4]), [float(v) for v in b]] for r, b in zip(rows, boxes)]
            strict = name == "dog.jpg"
            pairs, unpaired, _, _ = match_at_margins(got, doc["images"][name], doc["thresh"], nms, beta, size, strict,
                                                     candidates=candidates.get(doc["thresh"], {}).get(name))
            total_pairs += pairs
            total_unpaired += unpaired
    assert total_pairs > 0
    # margins are rare: the decoders differ by a few 1/255 on a few percent of the pixels
    assert total_unpaired <= max(3, total_pairs // 20), (total_unpaired, total_pairs)
