"""YOLO decoding and NMS semantics (Darknet's get_yolo_detections / do_nms_obj / do_nms_sort)."""

from __future__ import annotations

import numpy as np
import pytest

from predictor.darknet import RegionLayer, YoloLayer
from predictor.yolo import (
    DecodeParams,
    candidates,
    compaction_order,
    detect,
    image_relative,
    nms_obj,
    nms_per_class,
    nms_sort,
)

pytestmark = pytest.mark.unit

C = 3
LAYER = YoloLayer(index=0, mask=(0, 1), anchors=((32.0, 32.0), (64.0, 64.0)), classes=C)


def logit(p):
    if p <= 0.0 or p >= 1.0:  # sigmoid(-inf) = 0, sigmoid(+inf) = 1
        return float("-inf") if p <= 0.0 else float("inf")
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


# ---------------------------------------------------------------- YOLOv2 .. YOLOv7 heads

def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def test_scale_x_y_moves_the_centre_after_the_logistic():
    head = YoloLayer(index=0, mask=(0,), anchors=((32.0, 32.0),), classes=1, scale_x_y=1.2, lineage="alexeyab")
    raw = np.zeros((6, 1, 2), np.float32)  # one anchor, 1x2 grid
    raw[0, 0, 1] = logit(0.9)  # tx at column 1
    raw[4] = logit(0.8)
    raw[5] = 20.0
    boxes, obj, _ = candidates([raw], [head], 64, 64, 0.5)
    # x = (col + 1.2*sigmoid(tx) - 0.1) / W: the centre cell keeps 0.5, 0.9 becomes 0.98
    np.testing.assert_allclose(boxes[:, 0], [(0 + 0.5) / 2 * 64, (1 + 0.98) / 2 * 64], rtol=1e-6)
    np.testing.assert_allclose(boxes[:, 1], [0.5 * 64, 0.5 * 64], rtol=1e-6)


def test_new_coords_head_takes_logistic_outputs_as_they_are():
    head = YoloLayer(index=0, mask=(0,), anchors=((40.0, 20.0),), classes=2, scale_x_y=2.0, new_coords=True)
    raw = np.zeros((7, 1, 1), np.float32)  # values already through the conv's logistic
    raw[:, 0, 0] = [0.25, 0.75, 0.5, 0.25, 0.9, 0.8, 0.3]
    boxes, obj, probs = candidates([raw], [head], 64, 32, 0.25)
    # x = (0 + 2*0.25 - 0.5)/1, y = (0 + 2*0.75 - 0.5)/1; w = (2*0.5)^2*40, h = (2*0.25)^2*20
    np.testing.assert_allclose(boxes[0], [0.0, 1.0 * 32, 40.0, 5.0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(obj, [0.9], rtol=1e-6)  # no second logistic
    np.testing.assert_allclose(probs[0], [0.72, 0.27], rtol=1e-6)


def _region_raw(cells: dict, anchors: int, classes: int, h: int, w: int) -> np.ndarray:
    raw = np.zeros((anchors, 5 + classes, h, w), np.float32)
    raw[:, 4] = -20
    for (a, row, col), (obj, class_logits, t) in cells.items():
        raw[a, 4, row, col] = logit(obj)
        raw[a, 5:, row, col] = class_logits
        raw[a, 0:4, row, col] = t
    return raw.reshape(anchors * (5 + classes), h, w)


def test_region_head_softmax_and_grid_unit_anchors():
    head = RegionLayer(index=0, classes=2, anchors=((1.0, 2.0),))
    raw = _region_raw({(0, 0, 1): (0.8, [0.0, np.log(3.0)], (0.0, 0.0, np.log(2.0), 0.0))}, 1, 2, 1, 2)
    boxes, obj, probs = candidates([raw], [head], 64, 32, 0.5)
    # x = (1 + 0.5)/2; w = exp(ln 2)*1.0/2 grid cells -> of the input width; h = 2.0/1 -> twice the height
    np.testing.assert_allclose(boxes, [[0.75 * 64, 0.5 * 32, 1.0 * 64, 2.0 * 32]], rtol=1e-6)
    np.testing.assert_allclose(obj, [0.8], rtol=1e-6)
    np.testing.assert_allclose(probs, [[0.0, 0.6]], rtol=1e-6)  # 0.8*softmax = (0.2, 0.6); 0.2 <= 0.5 -> 0


def test_region_detection_order_differs_between_lineages():
    cells = {(a, 0, c): (0.6 + 0.1 * a + 0.01 * c, [5.0], (0, 0, 0, 0)) for a in range(2) for c in range(2)}
    raw = _region_raw(cells, 2, 1, 1, 2)
    anchors = ((1.0, 1.0), (2.0, 2.0))
    _, pj, _ = candidates([raw], [RegionLayer(index=0, classes=1, anchors=anchors)], 64, 32, 0.5)
    np.testing.assert_allclose(pj, [0.6, 0.61, 0.7, 0.71], rtol=1e-6)  # anchor-major (pjreddie)
    ab = RegionLayer(index=0, classes=1, anchors=anchors, lineage="alexeyab")
    boxes, obj, probs = candidates([raw], [ab], 64, 32, 0.5)
    np.testing.assert_array_equal(obj, [1, 1, 1, 1])  # AlexeyAB: objectness 1 for every detection
    np.testing.assert_allclose(probs[:, 0], [0.6, 0.7, 0.61, 0.71], rtol=1e-5)  # cell-major


def test_compaction_order_is_darknets_swap_to_the_end():
    # do_nms_*: a zero at i swaps with the last unvisited detection, which is then re-examined
    np.testing.assert_array_equal(compaction_order(np.array([False, True, False, True, True])), [4, 1, 3])
    np.testing.assert_array_equal(compaction_order(np.array([True, True])), [0, 1])
    assert compaction_order(np.array([False, False])).size == 0


def test_per_class_nms_breaks_ties_in_the_previous_class_order():
    # A and C tie on class 1 and overlap. Darknet sorted the array by class 0 first (B, C, A), and
    # its stable in-place sort keeps C before A, so C suppresses A (in input order A would win).
    boxes = np.array([[10, 10, 10, 10], [50, 50, 10, 10], [11, 10, 10, 10]], np.float32)
    probs = np.array([[0.5, 0.8], [0.9, 0.0], [0.6, 0.8]], np.float32)
    out = nms_sort(boxes, probs, 0.45)
    np.testing.assert_array_equal(out[:, 1], np.float32([0.0, 0.0, 0.8]))
    np.testing.assert_array_equal(out[:, 0], np.float32([0.0, 0.9, 0.6]))  # class 0: C (0.6) beats A (0.5)
    np.testing.assert_array_equal(nms_per_class(boxes, probs, 0.45), out)


def _diou(a, b, beta):
    """IoU - (centre distance^2 / enclosing diagonal^2)^beta, written out for two boxes."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    iou = inter / (a[2] * a[3] + b[2] * b[3] - inter)
    c2 = (max(ax1, bx1) - min(ax0, bx0)) ** 2 + (max(ay1, by1) - min(ay0, by0)) ** 2
    return iou - (((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) / c2) ** beta


def test_diou_nms_is_computed_on_image_relative_boxes():
    # Two boxes 0.05 apart vertically in the network input; on a 4:3 image letterboxed into 416x416
    # (content 416x312 at y offset 52) the image-relative distance is 0.05/0.75 and DIoU drops
    # below the threshold: Darknet keeps both, a network-relative DIoU would suppress one.
    head = YoloLayer(index=0, mask=(0,), anchors=((83.2, 83.2),), classes=1, lineage="alexeyab")
    raw = np.zeros((6, 2, 1), np.float32)
    raw[1, :, 0] = [logit(0.95), logit(0.05)]  # y = 0.475 and 0.525
    raw[4, :, 0] = [logit(0.9), logit(0.8)]
    raw[5] = 20.0
    a, b = (0.5, 0.475, 0.2, 0.2), (0.5, 0.525, 0.2, 0.2)
    content = (0.0, 52.0, 416.0, 312.0)
    rel = lambda box: (box[0], (box[1] - 52 / 416) / 0.75, box[2], box[3] / 0.75)  # noqa: E731
    thresh = 0.485
    assert _diou(a, b, 0.6) > thresh > _diou(rel(a), rel(b), 0.6)
    params = DecodeParams(confidence=0.5, iou_threshold=thresh, nms="diou", beta_nms=0.6)
    assert detect([raw], [head], 416, 416, params).shape[0] == 1
    kept = detect([raw], [head], 416, 416, params, content=content)
    assert kept.shape[0] == 2
    np.testing.assert_allclose(kept[:, 1], [0.475 * 416, 0.525 * 416], rtol=1e-5)  # rows stay in input pixels
    # plain IoU is the same either way
    for nms in ("agnostic", "per_class"):
        p = DecodeParams(confidence=0.5, iou_threshold=thresh, nms=nms)
        np.testing.assert_array_equal(detect([raw], [head], 416, 416, p), detect([raw], [head], 416, 416, p, content))
    # and beta_nms is the exponent
    assert _diou(a, b, 2.0) > thresh
    p2 = DecodeParams(confidence=0.5, iou_threshold=thresh, nms="diou", beta_nms=2.0)
    assert detect([raw], [head], 416, 416, p2, content=content).shape[0] == 1


def test_image_relative_follows_correct_yolo_boxes():
    boxes = np.array([[0.5, 0.5, 0.25, 0.5]], np.float32)
    out = image_relative(boxes, np.array([0.0, 52.0, 416.0, 312.0]), 416, 416)
    np.testing.assert_allclose(out, [[0.5, (0.5 - 0.125) / 0.75, 0.25, 0.5 / 0.75]], rtol=1e-6)


def test_unknown_nms_kind_is_refused():
    with pytest.raises(ValueError, match="nms must be one of"):
        DecodeParams(nms="soft")
