"""The metrics and Server-Timing header of the real processes match docs/observability.md."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import IMAGES
from yolo_contract.observability import parse_server_timing

pytestmark = [pytest.mark.component, pytest.mark.model]

PREDICT = "/v1/models/yolov3:predict"
#: every stage the transformer's Server-Timing header names (docs/observability.md)
SERVER_TIMING_STAGES = {
    "decode", "letterbox", "transport",
    "predictor-queue", "predictor-inference", "predictor-nms", "predictor-total",
    "postprocess",
}


def scrape(url: str) -> str:
    r = httpx.get(url + "/metrics", timeout=10)
    assert r.status_code == 200
    return r.text


def value(text: str, sample: str, **labels: str) -> float:
    """Sum of the samples called ``sample`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


@pytest.fixture(scope="module")
def dog_response(live_stack):
    r = httpx.post(live_stack.transformer_url + PREDICT, content=(IMAGES / "dog.jpg").read_bytes(),
                   headers={"content-type": "image/jpeg", "x-request-id": "metrics-dog-1"}, timeout=60)
    assert r.status_code == 200, r.text
    return r


def test_transformer_metrics_after_a_request(live_stack, dog_response):
    text = scrape(live_stack.transformer_url)
    for stage in ("decode", "letterbox", "transport", "postprocess"):
        assert value(text, "yolo_stage_seconds_count", component="transformer", model_name="yolov3", stage=stage) >= 1, stage
    assert value(text, "yolo_detections_total", component="transformer", model_name="yolov3", class_name="dog") >= 1
    assert value(text, "yolo_images_total", component="transformer", model_name="yolov3") >= 1
    assert value(text, "yolo_input_image_pixels_count", model_name="yolov3") >= 1
    # KServe's own histograms stay
    for name in ("request_preprocess_seconds_count", "request_predict_seconds_count", "request_postprocess_seconds_count"):
        assert value(text, name, model_name="yolov3") >= 1, name


def test_predictor_metrics_after_a_request(live_stack, dog_response):
    text = scrape(live_stack.predictor_url)
    for stage in ("queue", "inference", "nms", "total"):
        assert value(text, "yolo_stage_seconds_count", component="predictor", model_name="yolov3", stage=stage) >= 1, stage
    assert value(text, "yolo_detections_total", component="predictor", model_name="yolov3", class_name="dog") >= 1
    assert value(text, "yolo_images_total", component="predictor", model_name="yolov3") >= 1
    assert value(text, "yolo_engine_batch_size_count", model_name="yolov3") >= 1
    assert value(text, "request_predict_seconds_count", model_name="yolov3") >= 1


def test_server_timing_names_every_documented_stage(dog_response):
    timings = parse_server_timing(dog_response.headers["server-timing"])
    assert set(timings) == SERVER_TIMING_STAGES
    assert all(v >= 0 for v in timings.values())
    assert timings["predictor-total"] >= timings["predictor-inference"]


def test_rejected_request_is_counted_by_reason(live_stack):
    before = value(scrape(live_stack.transformer_url), "yolo_rejected_requests_total",
                   component="transformer", reason="bad_request")
    r = httpx.post(live_stack.transformer_url + PREDICT, json={"instances": [{"b64": "not base64 at all!"}]}, timeout=30)
    assert r.status_code == 400 and "error" in r.json()
    after = value(scrape(live_stack.transformer_url), "yolo_rejected_requests_total",
                  component="transformer", reason="bad_request")
    assert after == before + 1


def test_request_id_reaches_the_access_log(live_stack, dog_response):
    log = live_stack.transformer.log().splitlines()
    lines = [ln for ln in log if "yolo_kserve.access" in ln and " metrics-dog-1 POST " in ln]
    assert len(lines) == 1 and lines[0].split()[-2] == "200", lines

