"""predictor.yolo's NMS against Darknet's own C functions on crafted cases.

tests/data/nms_reference.json holds the inputs and what pjreddie Darknet's libdarknet.so returned for
them (``do_nms_sort`` = per-class NMS, ``do_nms_obj`` = class-agnostic NMS by objectness, ``box_iou``),
produced by scripts/nms_reference.py. Suppressed entries are exact zeros and kept ones are the input
values, so the comparison is exact.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from predictor.yolo import iou_one_to_many, nms_obj, nms_per_class
from tests.servers import DATA

pytestmark = pytest.mark.unit

REFERENCE = json.loads((DATA / "nms_reference.json").read_text())
CASES = {c["name"]: c for c in REFERENCE["cases"]}

def _inputs(case: dict):
    return (np.asarray(case["boxes"], np.float32), np.asarray(case["objectness"], np.float32),
            np.asarray(case["probs"], np.float32))


def _darknet(case: dict, function: str) -> np.ndarray:
    return np.asarray(case["darknet"][function]["probs"], np.float32)


@pytest.mark.parametrize("name", list(CASES))
def test_nms_per_class_matches_darknet_do_nms_sort(name):
    case = CASES[name]
    boxes, _, probs = _inputs(case)
    np.testing.assert_array_equal(nms_per_class(boxes, probs, case["iou_threshold"]), _darknet(case, "do_nms_sort"))


@pytest.mark.parametrize("name", list(CASES))
def test_nms_obj_matches_darknet_do_nms_obj(name):
    case = CASES[name]
    boxes, objectness, probs = _inputs(case)
    np.testing.assert_array_equal(nms_obj(boxes, objectness, probs, case["iou_threshold"]), _darknet(case, "do_nms_obj"))


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["darknet"]["box_iou"] is not None])
def test_iou_matches_darknet_box_iou(name):
    boxes = _inputs(CASES[name])[0]
    ours = np.stack([iou_one_to_many(b, boxes) for b in boxes]).astype(np.float32)
    np.testing.assert_array_equal(ours, np.asarray(CASES[name]["darknet"]["box_iou"], np.float32))


def test_the_cases_make_nms_do_work():
    """An NMS that returns its input unchanged, or suppresses across classes, fails the tests above."""
    def suppressed(case: dict, function: str) -> int:
        return int(((_inputs(case)[2] > 0) & (_darknet(case, function) == 0)).sum())

    per_class = {name: suppressed(c, "do_nms_sort") for name, c in CASES.items()}
    assert sum(n > 0 for n in per_class.values()) >= 8, per_class
    # the same-class overlap is suppressed per class; overlapping boxes of other classes are not
    assert per_class["same_class_overlap"] == 1 and per_class["cross_class_overlap"] == 0
    assert suppressed(CASES["cross_class_overlap"], "do_nms_obj") == 1
    # one box, two classes: only the class that a stronger box overlaps loses it
    np.testing.assert_array_equal(_darknet(CASES["same_box_two_classes"], "do_nms_sort")[0], np.float32([0, 0.6]))
    # A suppresses B, so B cannot suppress C
    np.testing.assert_array_equal(_darknet(CASES["chain"], "do_nms_sort")[:, 0], np.float32([0.9, 0, 0.7]))
    assert "do_nms_sort" in REFERENCE["produced_by"]["darknet"]
