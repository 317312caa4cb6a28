"""YOLO decoding and NMS semantics (Darknet's get_yolo_detections / do_nms_obj / do_nms_sort)."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.darknet import YoloLayer
from predictor.yolo import DecodeParams, candidates, detect, nms_obj, nms_per_class

pytestmark = pytest.mark.unit

C = 3
LAYER = YoloLayer(index=0, mask=(0, 1), anchors=((32.0, 32.0), (64.0, 64.0)), classes=C)


def logit(p):
    return float(np.log(p / (1 - p)))


def grid(cells: dict, h=2, w=2):
    """raw logits [A*(5+C), h, w]; cells maps (row, col, anchor) -> (obj, [class probs], (tx, ty, tw, th))."""
    raw = np.full((2, 5 + C, h, w), -20.0, np.float32)
    raw[:, 0:4] = 0.0
    for (r, c, a), (obj, cls, t) in cells.items():
        raw[a, 4, r, c] = logit(obj)
        raw[a, 5:, r, c] = [logit(p) for p in cls]
        raw[a, 0:4, r, c] = t
    return raw.reshape(2 * (5 + C), h, w)


def test_box_decoding_in_input_pixels():
    raw = grid({(1, 0, 1): (0.9, [0.9, 0.1, 0.1], (0.0, 0.0, np.log(2.0), 0.0))})
    boxes, obj, probs = candidates([raw], [LAYER], 64, 64, 0.5)
    assert boxes.shape == (1, 4)
    # centre = (col + sigmoid(0)) / W * net_w ; size = exp(tw) * anchor
    np.testing.assert_allclose(boxes[0], [(0 + 0.5) / 2 * 64, (1 + 0.5) / 2 * 64, 128.0, 64.0], rtol=1e-6)
    np.testing.assert_allclose(obj, [0.9], rtol=1e-6)
    np.testing.assert_allclose(probs[0], [0.81, 0, 0], rtol=1e-5)  # 0.9*0.1 <= thresh -> 0


def test_candidates_follow_darknet_order_cell_major_then_anchor():
    cells = {(0, 1, 1): (0.7, [0.9, 0, 0], (0, 0, 0, 0)), (0, 1, 0): (0.8, [0.9, 0, 0], (0, 0, 0, 0)),
             (0, 0, 1): (0.6, [0.9, 0, 0], (0, 0, 0, 0))}
    _, obj, _ = candidates([grid(cells)], [LAYER], 64, 64, 0.5)
    np.testing.assert_allclose(obj, [0.6, 0.8, 0.7], rtol=1e-6)


def test_nms_obj_is_class_agnostic_by_objectness():
    boxes = np.array([[10, 10, 10, 10], [11, 10, 10, 10], [40, 40, 10, 10]], np.float32)
    obj = np.array([0.6, 0.9, 0.7], np.float32)
    probs = np.array([[0.6, 0, 0], [0, 0.9, 0], [0.7, 0, 0]], np.float32)
    out = nms_obj(boxes, obj, probs, 0.45)
    # box 1 (higher objectness, other class) suppresses box 0; box 2 does not overlap
    np.testing.assert_array_equal(out[0], 0)
    np.testing.assert_array_equal(out[1], probs[1])
    np.testing.assert_array_equal(out[2], probs[2])


def test_suppressed_boxes_do_not_suppress_others():
    # A > B > C by objectness; A kills B; B overlaps C but is dead, so C survives (A-C IoU < .45)
    boxes = np.array([[10, 10, 10, 10], [13, 10, 10, 10], [16, 10, 10, 10]], np.float32)
    obj = np.array([0.9, 0.8, 0.7], np.float32)
    probs = obj[:, None] * np.array([[1, 0, 0]] * 3, np.float32)
    out = nms_obj(boxes, obj, probs, 0.45)
    assert out[0, 0] > 0 and out[1, 0] == 0 and out[2, 0] > 0


def test_nms_per_class_keeps_overlapping_boxes_of_other_classes():
    boxes = np.array([[10, 10, 10, 10], [11, 10, 10, 10]], np.float32)
    probs = np.array([[0.6, 0, 0], [0, 0.9, 0]], np.float32)
    out = nms_per_class(boxes, probs, 0.45)
    np.testing.assert_array_equal(out, probs)


def test_detect_rows_sorting_filter_and_limit():
    cells = {
        (0, 0, 0): (0.95, [0.9, 0.8, 0.1], (0, 0, 0, 0)),  # one box, two classes above 0.5
        (1, 1, 0): (0.9, [0.1, 0.1, 0.99], (0, 0, 0, 0)),
    }
    rows = detect([grid(cells)], [LAYER], 64, 64, DecodeParams(confidence=0.5))
    assert rows.shape == (3, 6)
    assert list(rows[:, 5].astype(int)) == [2, 0, 1]
    assert np.all(np.diff(rows[:, 4]) <= 0)
    # same box emits both class rows, like Darknet
    np.testing.assert_array_equal(rows[1, :4], rows[2, :4])
    filtered = detect([grid(cells)], [LAYER], 64, 64, DecodeParams(confidence=0.5, class_ids=frozenset({1})))
    assert filtered.shape == (1, 6) and int(filtered[0, 5]) == 1
    assert detect([grid(cells)], [LAYER], 64, 64, DecodeParams(confidence=0.5, max_detections=1)).shape == (1, 6)
    assert detect([grid(cells)], [LAYER], 64, 64, DecodeParams(confidence=0.999)).shape == (0, 6)


def test_class_filter_result_is_a_subset_of_the_unfiltered_result():
    rng = np.random.default_rng(3)
    raw = rng.normal(0, 3, (2 * (5 + C), 4, 4)).astype(np.float32)
    full = detect([raw], [LAYER], 128, 128, DecodeParams(confidence=0.1))
    for k in range(C):
        sub = detect([raw], [LAYER], 128, 128, DecodeParams(confidence=0.1, class_ids=frozenset({k})))
        expected = full[full[:, 5] == k]
        np.testing.assert_array_equal(sub, expected)


def test_candidate_cap_keeps_the_highest_objectness_in_darknet_order(monkeypatch):
    import predictor.yolo as yolo

    rng = np.random.default_rng(5)
    raw = rng.normal(0, 3, (2 * (5 + C), 8, 8)).astype(np.float32)
    full = detect([raw], [LAYER], 256, 256, DecodeParams(confidence=0.01, iou_threshold=1.0))
    boxes, obj, _ = candidates([raw], [LAYER], 256, 256, 0.01)
    monkeypatch.setattr(yolo, "MAX_NMS_CANDIDATES", 10)
    capped = detect([raw], [LAYER], 256, 256, DecodeParams(confidence=0.01, iou_threshold=1.0))
    top = set(map(tuple, boxes[np.argsort(-obj)[:10]].tolist()))
    assert {tuple(r[:4].tolist()) for r in capped} <= top
    assert len(full) > len(capped) > 0


def test_confidence_below_the_floor_is_refused():
    from yolo_contract.errors import BadRequest
    from yolo_contract.tensors import coerce_parameters

    assert coerce_parameters({"confidence": "0.001"})["confidence"] == 0.001
    for bad in (0, 0.0005, -1, 1.5, "x", True):
        with pytest.raises(BadRequest, match=r"confidence.*\[0.001, 1\]"):
            coerce_parameters({"confidence": bad})
