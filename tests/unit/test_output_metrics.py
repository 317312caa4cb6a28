"""Output-quality metrics per model version (yolo_contract.observability), on a fresh registry."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from yolo_contract.observability import Metrics

pytestmark = pytest.mark.unit


def _samples(registry: CollectorRegistry) -> dict[tuple, float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _get(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def test_two_versions_are_told_apart_in_the_exposition():
    reg = CollectorRegistry()
    m = Metrics(registry=reg)
    m.observe_output("predictor", "yolov3", "aaaa1111",
                     [[("dog", 0.9), ("car", 0.6)], [], [("dog", 0.55)]])
    m.observe_output("predictor", "yolov3", "bbbb2222", [[("dog", 0.3)], [("cat", 0.97)]])
    m.observe_output("transformer", "yolov3", "bbbb2222", [[("cat", 0.97)]], pixels=[640 * 480])
    s = _samples(reg)
    base = {"component": "predictor", "model_name": "yolov3", "revision": ""}
    a, b = {**base, "model_version": "aaaa1111"}, {**base, "model_version": "bbbb2222"}
    assert _get(s, "yolo_images_total", **a) == 3 and _get(s, "yolo_images_total", **b) == 2
    assert _get(s, "yolo_detections_total", **a, class_name="dog") == 2
    assert _get(s, "yolo_detections_total", **b, class_name="dog") == 1
    assert _get(s, "yolo_detections_total", **b, class_name="cat") == 1
    assert _get(s, "yolo_detections_total", **a, class_name="cat") is None
    # detections per image: 2, 0, 1 -> sum 3 over 3 images; one image without detections
    assert _get(s, "yolo_detections_per_image_sum", **a) == 3
    assert _get(s, "yolo_detections_per_image_count", **a) == 3
    assert _get(s, "yolo_detections_per_image_bucket", **a, le="0.0") == 1
    assert _get(s, "yolo_detections_per_image_bucket", **b, le="0.0") == 0
    # confidences: a 0.9, 0.6, 0.55 (none <= 0.5); b 0.3, 0.97
    assert _get(s, "yolo_detection_confidence_count", **a) == 3
    assert _get(s, "yolo_detection_confidence_bucket", **a, le="0.5") == 0
    assert _get(s, "yolo_detection_confidence_bucket", **b, le="0.5") == 1
    assert _get(s, "yolo_detection_confidence_sum", **b) == pytest.approx(1.27)
    assert _get(s, "yolo_input_image_pixels_count", model_name="yolov3", model_version="bbbb2222", revision="") == 1
    assert _get(s, "yolo_images_total", component="transformer", model_name="yolov3", model_version="bbbb2222",
                revision="") == 1


def test_the_knative_revision_is_a_label_too():
    reg = CollectorRegistry()
    m = Metrics(registry=reg)
    rows = [np.array([[10, 10, 5, 5, 0.8, 1]], np.float32)]
    m.observe_predictor("yolov3", {}, rows, ["person", "bicycle"], version="v1", revision="yolov3-predictor-00001")
    m.observe_predictor("yolov3", {}, rows * 2, ["person", "bicycle"], version="v1", revision="yolov3-predictor-00002")
    m.observe_output("transformer", "yolov3", "v1", [[("bicycle", 0.8)]], pixels=[100], revision="yolov3-predictor-00002")
    s = _samples(reg)
    p = {"component": "predictor", "model_name": "yolov3", "model_version": "v1"}
    assert _get(s, "yolo_images_total", **p, revision="yolov3-predictor-00001") == 1
    assert _get(s, "yolo_images_total", **p, revision="yolov3-predictor-00002") == 2
    assert _get(s, "yolo_detections_total", **p, class_name="bicycle", revision="yolov3-predictor-00002") == 2
    assert _get(s, "yolo_input_image_pixels_count", model_name="yolov3", model_version="v1",
                revision="yolov3-predictor-00002") == 1
    # a version without a revision, by name, still records revision=""
    m.images.labels(component="predictor", model_name="yolov3", model_version="v9").inc()
    assert _get(_samples(reg), "yolo_images_total", **{**p, "model_version": "v9"}, revision="") == 1


def test_callers_without_a_version_keep_working():
    reg = CollectorRegistry()
    m = Metrics(registry=reg)
    # the call shapes the servers used before the label existed
    m.detections.labels("transformer", "yolov3", "dog").inc()
    m.images.labels("transformer", "yolov3").inc(2)
    m.image_pixels.labels("yolov3").observe(1000)
    m.detections.labels(component="transformer", model_name="yolov3", class_name="cat").inc()
    rows = [np.array([[10, 10, 5, 5, 0.8, 1], [20, 20, 5, 5, 0.7, 0]], np.float32), np.zeros((0, 6), np.float32)]
    m.observe_predictor("yolov3", {"inference": 0.01}, rows, ["person", "bicycle"])
    s = _samples(reg)
    t = {"component": "transformer", "model_name": "yolov3", "model_version": "", "revision": ""}
    p = {"component": "predictor", "model_name": "yolov3", "model_version": "", "revision": ""}
    assert _get(s, "yolo_detections_total", **t, class_name="dog") == 1
    assert _get(s, "yolo_detections_total", **t, class_name="cat") == 1
    assert _get(s, "yolo_images_total", **t) == 2
    assert _get(s, "yolo_input_image_pixels_count", model_name="yolov3", model_version="", revision="") == 1
    assert _get(s, "yolo_images_total", **p) == 2
    assert _get(s, "yolo_detections_total", **p, class_name="bicycle") == 1
    assert _get(s, "yolo_detections_total", **p, class_name="person") == 1
    assert _get(s, "yolo_detections_per_image_bucket", **p, le="0.0") == 1
    assert _get(s, "yolo_stage_seconds_count", component="predictor", model_name="yolov3", stage="inference") == 1
    # ... and with a version
    m.observe_predictor("yolov3", {}, rows[:1], ["person", "bicycle"], version="v2")
    assert _get(_samples(reg), "yolo_images_total", **{**p, "model_version": "v2"}) == 1
    # a wrong number of labels is still an error
    with pytest.raises(ValueError):
        m.images.labels("transformer")
