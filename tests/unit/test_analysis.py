"""Matching, agreement and mAP (sdk_client.analysis): hand-computed cases, and COCOeval itself."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from sdk_client.analysis import (
    COCO_IOU_THRESHOLDS,
    Boxes,
    agreement,
    evaluate_map,
    gate,
    ground_truth_map,
    iou_matrix,
    match_counts,
    match_image,
    plan_steps,
)

pytestmark = pytest.mark.unit


def test_iou_matrix_by_hand():
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10], [0, 0, 10, 20], [20, 20, 30, 35]]
    # identical 1; half overlap 50/150; touching edge 0; nested 100/200; disjoint 0
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0, 0.5, 0.0]])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 5)


def test_boxes_create_checks_lengths_and_filters_strictly():
    with pytest.raises(ValueError, match="2 boxes, 1 classes"):
        Boxes.create([[0, 0, 1, 1], [0, 0, 2, 2]], ["a"])
    b = Boxes.create([[0, 0, 1, 1], [0, 0, 2, 2]], ["a", "b"], [0.5, 0.7])
    assert b.above(0.5).classes == ("b",)  # the servers keep confidence > threshold
    assert len(b.above(None)) == 2 and len(Boxes.create()) == 0


def test_matching_is_greedy_by_score_like_coco():
    # Two detections compete for one reference box: the higher score wins even with a lower IoU.
    ref = Boxes.create([[0, 0, 10, 10]], ["a"])
    det = Boxes.create([[0, 0, 10, 12], [0, 0, 10, 10]], ["a", "a"], [0.9, 0.8])
    matched, kept, ious = match_image(ref, det, (0.5,))
    assert matched.tolist() == [[0, -1]] and kept.all()
    assert ious[0] == pytest.approx(100 / 120)
    # A detection of another class never matches.
    other = Boxes.create([[0, 0, 10, 10]], ["b"], [0.99])
    assert match_image(ref, other)[0].tolist() == [[-1]]
    # Equal IoU with two free references: COCO's loop keeps the later one.
    twins = Boxes.create([[0, 0, 10, 10], [0, 0, 10, 10]], ["a", "a"])
    assert match_image(twins, Boxes.create([[0, 0, 10, 10]], ["a"], [0.5]))[0].tolist() == [[1]]


# ----------------------------------------------------------------------------- mAP by hand

def _hand_case():
    """Class "a": 3 ground-truth boxes, 4 detections; class "b": 1 box, found only as a wrong box;
    class "c": a detection without any ground truth (left out of the mean, as in COCOeval)."""
    g1, g2, g3, gb = [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [40, 40, 50, 50]
    truth = [Boxes.create([g1, g2], ["a", "a"]), Boxes.create([g3, gb], ["a", "b"])]
    dets = [
        Boxes.create(
            [[0, 0, 10, 10],      # D1 a .9 : IoU 1 with g1
             [20, 20, 30, 35],    # D2 a .8 : IoU with g2 = 100 / (100 + 150 - 100) = 2/3
             [50, 50, 60, 60],    # D3 a .7 : no overlap -> false positive
             [0, 0, 10, 10],      # b .95 on g1: wrong class, never a match
             [0, 0, 5, 5]],       # c .99: class without ground truth
            ["a", "a", "a", "b", "c"], [0.9, 0.8, 0.7, 0.95, 0.99]),
        Boxes.create([[0, 0, 10, 20]], ["a"], [0.6]),  # D4 a .6 : IoU with g3 = 100/200 = 0.5 exactly
    ]
    return truth, dets


def test_map_small_case_computed_by_hand():
    truth, dets = _hand_case()
    result = evaluate_map(truth, dets)
    # Class "a", 3 boxes; detections ranked .9 .8 .7 .6.
    # IoU 0.5: TP TP FP TP -> recall 1/3 2/3 2/3 1, precision 1 1 2/3 3/4, made monotone 1 1 .75 .75.
    #   101 recall points: 0.00..0.33 (34 points) -> 1; 0.34..0.66 (33) -> 1; 0.67..1.00 (34) -> 0.75.
    #   AP = (34 + 33 + 34 * 0.75) / 101 = 92.5 / 101
    # IoU 0.55, 0.60, 0.65: D4 (IoU 0.5) turns FP: TP TP FP FP -> recall tops at 2/3:
    #   AP = (34 + 33) / 101 = 67 / 101 (points above 2/3 read precision 0)
    # IoU 0.70 ... 0.95 (6 thresholds): D2 (IoU 2/3) turns FP too: AP = 34 / 101
    ap_a = [92.5 / 101] + [67 / 101] * 3 + [34 / 101] * 6
    np.testing.assert_allclose(result.ap["a"], ap_a, rtol=0, atol=1e-12)
    # Class "b": one box, its only detection is elsewhere -> AP 0 at every threshold.
    np.testing.assert_array_equal(result.ap["b"], np.zeros(10))
    assert "c" not in result.ap
    # mAP@0.5 = (92.5/101 + 0) / 2; mAP@0.5:0.95 = ((92.5 + 3*67 + 6*34) / 1010 + 0) / 2 = 497.5 / 2020
    assert result.map50 == pytest.approx(92.5 / 202, abs=1e-12)
    assert result.map == pytest.approx(497.5 / 2020, abs=1e-12)
    report = ground_truth_map(truth, dets)
    assert report["map50"] == round(92.5 / 202, 6) and report["map50_95"] == round(497.5 / 2020, 6)
    assert report["per_class"]["a"] == {"reference": 3, "detections": 4, "ap50": round(92.5 / 101, 6),
                                        "ap": round(497.5 / 1010, 6)}


def test_map_without_any_reference_box_is_none():
    result = evaluate_map([Boxes.create()], [Boxes.create([[0, 0, 1, 1]], ["a"], [0.9])])
    assert result.map50 is None and result.map is None


# ----------------------------------------------------------------------------- against COCOeval

def _generated(seed: int, n_images: int = 25, n_classes: int = 6):
    """Random ground truth (crowd-free) and detections: jittered copies (some with a wrong class),
    random boxes, one class without detections, one image with 130 detections of one class (COCO
    keeps 100 per image and class)."""
    rng = np.random.default_rng(seed)
    truth, dets, gt_json, res_json = [], [], {"images": [], "annotations": [],
                                               "categories": [{"id": k, "name": f"c{k}"} for k in range(1, n_classes + 1)]}, []
    for image_id in range(1, n_images + 1):
        n = int(rng.integers(0, 9))
        xy = rng.uniform(0, 500, (n, 2))
        g = np.c_[xy, xy + rng.uniform(4, 150, (n, 2))]
        gc = rng.integers(1, n_classes, n)  # class n_classes never has ground truth
        found = rng.random(n) < 0.85
        d = g[found] + rng.normal(0, 3, (found.sum(), 4))
        dc = np.where(rng.random(found.sum()) < 0.9, gc[found], rng.integers(1, n_classes + 1, found.sum()))
        m = int(rng.integers(0, 6)) + (130 if image_id == 3 else 0)
        rxy = rng.uniform(0, 500, (m, 2))
        d = np.r_[d, np.c_[rxy, rxy + rng.uniform(4, 150, (m, 2))]]
        dc = np.r_[dc, np.full(m, 1) if image_id == 3 else rng.integers(1, n_classes + 1, m)]
        d[:, 2:] = np.maximum(d[:, 2:], d[:, :2] + 1)
        ds = rng.random(len(d))
        # class 2 has ground truth but never a detection
        keep = dc != 2
        d, dc, ds = d[keep], dc[keep], ds[keep]
        truth.append(Boxes.create(g, gc.tolist()))
        dets.append(Boxes.create(d, dc.tolist(), ds))
        gt_json["images"].append({"id": image_id, "width": 700, "height": 700})
        for b, c in zip(g, gc):
            w, h = b[2] - b[0], b[3] - b[1]
            gt_json["annotations"].append({"id": len(gt_json["annotations"]) + 1, "image_id": image_id,
                                           "category_id": int(c), "bbox": [b[0], b[1], w, h], "area": w * h,
                                           "iscrowd": 0})
        for b, c, s in zip(d, dc, ds):
            res_json.append({"image_id": image_id, "category_id": int(c),
                             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)})
    return truth, dets, gt_json, res_json


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_pycocotools(seed):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth, dets, gt_json, res_json = _generated(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt_json
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(res_json), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    result = evaluate_map(truth, dets)
    assert 0.05 < ev.stats[0] < 0.95  # a non-trivial case
    assert abs(result.map - ev.stats[0]) <= 1e-9, (result.map, ev.stats[0])     # AP @[.5:.95], all, 100
    assert abs(result.map50 - ev.stats[1]) <= 1e-9, (result.map50, ev.stats[1])  # AP @.5
    # per class too (COCOeval precision[T, R, K, area=all, maxDets=100]; -1 = no ground truth)
    precision = ev.eval["precision"][:, :, :, 0, -1]
    for k, cat in enumerate(ev.params.catIds):
        if (precision[:, :, k] > -1).any():
            np.testing.assert_allclose(result.ap[cat], precision[:, :, k].mean(axis=1), atol=1e-9)
        else:
            assert cat not in result.ap
    np.testing.assert_allclose(result.iou_thresholds, ev.params.iouThrs)
    assert len(COCO_IOU_THRESHOLDS) == 10


def test_max_dets_matters_and_can_be_lifted():
    # 150 false positives above one true positive: COCO's 100 per image and class drop the TP.
    ref = [Boxes.create([[0, 0, 10, 10]], ["a"])]
    boxes = [[100 + i, 100, 110 + i, 110] for i in range(150)] + [[0, 0, 10, 10]]
    det = [Boxes.create(boxes, ["a"] * 151, [0.9] * 150 + [0.1])]
    assert evaluate_map(ref, det).map50 == 0.0
    # All kept: the TP comes 151st, so precision is 1/151 at recall 1 and, made monotone, at every
    # recall point -> AP = 1/151.
    assert evaluate_map(ref, det, max_dets=None).map50 == pytest.approx(1 / 151, rel=1e-9)


# ----------------------------------------------------------------------------- agreement

def test_agreement_by_hand():
    a, b, c = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]
    stable = [Boxes.create([a, b, c], ["dog", "cat", "dog"], [0.9, 0.8, 0.4])]
    canary = [Boxes.create([a, b, [60, 60, 70, 70], c], ["dog", "dog", "car", "dog"], [0.85, 0.8, 0.7, 0.45])]
    out = agreement(stable, canary, confidence=0.5)
    # above 0.5: stable {dog a, cat b}, canary {dog a, dog b, car}; dog a matches (IoU 1).
    # TP 1, FP 2 (dog b: wrong class; car), FN 1 (cat b). precision 1/3, recall 1/2,
    # F1 = 2*1 / (2*1 + 2 + 1) = 0.4
    assert (out["tp"], out["fp"], out["fn"]) == (1, 2, 1)
    assert out["precision"] == round(1 / 3, 6) and out["recall"] == 0.5 and out["f1"] == 0.4
    assert out["mean_iou"] == 1.0
    assert out["confidence_shift"]["mean"] == pytest.approx(-0.05)
    # mAP@0.5 with stable above 0.5 as truth, every canary box ranked: dog: .85 TP first -> AP 1;
    # cat: never detected -> AP 0; car: no truth, left out -> (1 + 0) / 2
    assert out["map50"] == 0.5
    assert out["per_class"]["dog"] == {"stable": 1, "canary": 2, "matched": 1, "precision": 0.5, "recall": 1.0,
                                       "f1": round(2 / 3, 6), "mean_confidence_stable": 0.9,
                                       "mean_confidence_canary": 0.825}
    assert out["per_class"]["cat"]["recall"] == 0.0 and out["per_class"]["cat"]["precision"] is None
    assert out["per_class"]["car"]["canary"] == 1 and out["per_class"]["car"]["recall"] is None


def test_agreement_of_identical_and_of_empty_answers():
    s = [Boxes.create([[0, 0, 10, 10], [5, 5, 20, 20]], ["dog", "cat"], [0.9, 0.6]), Boxes.create()]
    same = agreement(s, s, confidence=0.5)
    assert (same["f1"], same["precision"], same["recall"], same["map50"]) == (1.0, 1.0, 1.0, 1.0)
    assert same["confidence_shift"] == {"mean": 0.0, "median": 0.0, "mean_abs": 0.0}
    empty = match_counts([Boxes.create()], [Boxes.create()])
    assert empty["f1"] == 1.0 and empty["precision"] is None and empty["recall"] is None
    nothing = agreement(s, [Boxes.create(), Boxes.create()], confidence=0.5)
    assert nothing["f1"] == 0.0 and nothing["recall"] == 0.0 and nothing["map50"] == 0.0


# ----------------------------------------------------------------------------- rollout decisions

def test_plan_steps():
    assert plan_steps("10,50,100") == [10, 50, 100]
    assert plan_steps([5, 25]) == [5, 25]
    assert plan_steps("10, 50,100", current_percent=10) == [50, 100]
    assert plan_steps("10,50,100", current_percent=100) == []
    for bad in ("", "10,,50", "10,x", "0,50", "50,101", "50,10", "10,10"):
        with pytest.raises(ValueError):
            plan_steps(bad)


def _report(f1=0.95, compared=10, stable_err=0.0, canary_err=0.0, gt=None):
    return {"images": {"compared": compared}, "agreement": {"f1": f1},
            "stable": {"error_rate": stable_err}, "canary": {"error_rate": canary_err}, "ground_truth": gt}


def test_gate():
    assert gate(_report(), min_f1=0.9, max_error_rate=0.0) == (True, [])
    assert gate(_report(f1=0.9), min_f1=0.9) == (True, [])
    passed, reasons = gate(_report(f1=0.5, canary_err=0.2), min_f1=0.9, max_error_rate=0.05)
    assert not passed and reasons == ["agreement F1 0.5 < 0.9", "canary error rate 0.2 > 0.05"]
    assert gate(_report(compared=0)) == (False, ["no image was answered by both endpoints"])
    assert gate(_report(stable_err=0.1), max_error_rate=0.1) == (True, [])
    gt = {"stable": {"map50_95": 0.40}, "canary": {"map50_95": 0.37}}
    assert gate(_report(gt=gt), max_map_drop=0.05) == (True, [])
    passed, reasons = gate(_report(gt=gt), max_map_drop=0.01)
    assert not passed and reasons[0].startswith("canary mAP@0.5:0.95 0.37 is 0.03 below stable 0.4")
    assert gate(_report(), max_map_drop=0.01) == (False, ["--max-map-drop needs ground truth (--labels)"])
