"""The predictor's engine + decode against pjreddie Darknet's own tensors and detections."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.settings import PredictorSettings
from yolo_devtools.matching import match_reference
from tests.servers import DATA, IMAGE_NAMES, IMAGES
from transformer import geometry, imaging

pytestmark = [pytest.mark.component, pytest.mark.model]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from predictor.model import DarknetPredictor

    model = DarknetPredictor(PredictorSettings(model_dir=str(tiny_model_dir)))
    model.load()
    return model


def test_head_tensors_equal_darknet(tiny):
    x = np.load(DATA / "dog_tensors" / "input.npy")
    outs = tiny.engine.run(x)
    for out, name in zip(outs, ("conv15", "conv22")):
        ref = np.load(DATA / "dog_tensors" / f"{name}.npy")
        assert out.shape == ref.shape
        rel = float(np.abs(out - ref).max() / np.abs(ref).max())
        assert rel <= 1e-4, f"{name}: max |diff| / max |ref| = {rel:.2e}"


def _detections(tiny, tensor, lb, thresh):
    from predictor.yolo import DecodeParams, detect

    outs = tiny.engine.run(tensor[None])
    rows = detect([o[0] for o in outs], tiny.network.yolo_layers, 416, 416, DecodeParams(confidence=thresh))
    boxes = geometry.unletterbox_boxes(rows[:, :4], lb)
    return [[tiny.names[int(r[5])], float(r[4]), [float(v) for v in b]] for r, b in zip(rows, boxes)]


def test_dog_from_darknets_exact_input_matches_all_thresholds(tiny, references):
    x = np.load(DATA / "dog_tensors" / "input.npy")[0]
    lb = geometry.letterbox_params(768, 576, 416, 416)
    for t in ("0.5", "0.25", "0.005"):
        got = _detections(tiny, x, lb, float(t))
        conf, iou = match_reference(got, references[t]["images"]["dog.jpg"], conf_tol=1e-4, iou_min=0.9999)
        assert conf < 1e-4 and iou > 0.9999


@pytest.mark.parametrize("name", IMAGE_NAMES)
@pytest.mark.parametrize("thresh", ["0.5", "0.25"])
def test_five_images_match_darknet(tiny, references, name, thresh):
    rgb = imaging.decode_image((IMAGES / name).read_bytes())  # libjpeg; Darknet used stb_image
    tensor, lb = geometry.letterbox(rgb, 416, 416)  # Darknet-exact letterbox
    got = _detections(tiny, tensor, lb, float(thresh))
    match_reference(got, references[thresh]["images"][name], conf_tol=0.02, iou_min=0.95)


@pytest.mark.parametrize("thresh", ["0.5", "0.25"])
def test_uint8_wire_tensor_keeps_parity(tiny, references, thresh):
    """What the transformer actually sends: the letterbox rounded to uint8, divided by 255 here."""
    for name in IMAGE_NAMES:
        rgb = imaging.decode_image((IMAGES / name).read_bytes())
        u8, lb = geometry.letterbox_uint8(rgb, 416, 416)
        got = _detections(tiny, u8.astype(np.float32) / np.float32(255), lb, float(thresh))
        match_reference(got, references[thresh]["images"][name], conf_tol=0.02, iou_min=0.95)


def test_load_runs_once(tiny):
    engine = tiny.engine
    tiny.stop()
    assert not tiny.ready
    assert tiny.load() is False and tiny.engine is engine  # no reload behind KServe's back
    tiny.ready = True
