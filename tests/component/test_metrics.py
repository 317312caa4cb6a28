"""The metrics and Server-Timing header of the real processes match docs/observability.md.

The stack is shared by the whole session, so every check compares the exact series one request
should move: scrape both servers, send the request, scrape again, and compare the differences.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import httpx
import pytest
from PIL import Image

from tests.observe import access_lines, access_status, metric, scrape, wait_until
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
MODEL = {"model_name": "yolov3"}


@dataclass
class Exchange:
    """One request, with both servers' metrics scraped just before and just after it."""

    response: httpx.Response
    before: dict[str, str]
    after: dict[str, str]

    def delta(self, server: str, sample: str, **labels: str) -> float:
        return metric(self.after[server], sample, **labels) - metric(self.before[server], sample, **labels)


@pytest.fixture(scope="module")
def dog(live_stack) -> Exchange:
    urls = {"transformer": live_stack.transformer_url, "predictor": live_stack.predictor_url}
    before = {name: scrape(url) for name, url in urls.items()}
    r = httpx.post(live_stack.transformer_url + PREDICT, content=(IMAGES / "dog.jpg").read_bytes(),
                   headers={"content-type": "image/jpeg", "x-request-id": "metrics-dog-1"}, timeout=60)
    assert r.status_code == 200, r.text
    after = {name: scrape(url) for name, url in urls.items()}
    return Exchange(r, before, after)


def assert_counts_the_returned_image(dog: Exchange, component: str) -> None:
    """One image, and exactly the detections the response returned, class by class."""
    classes = collections.Counter(d["class"] for d in dog.response.json()["predictions"][0]["detections"])
    assert classes["dog"] >= 1, classes  # a request with no detections would make the class checks empty
    for name, n in classes.items():
        assert dog.delta(component, "yolo_detections_total", component=component, class_name=name, **MODEL) == n, name
    assert dog.delta(component, "yolo_detections_total", component=component, **MODEL) == sum(classes.values())
    assert dog.delta(component, "yolo_images_total", component=component, **MODEL) == 1


def test_transformer_metrics_move_by_exactly_one_request(dog):
    t = "transformer"
    for stage in ("decode", "letterbox", "transport", "postprocess"):
        assert dog.delta(t, "yolo_stage_seconds_count", component=t, stage=stage, **MODEL) == 1, stage
    assert_counts_the_returned_image(dog, t)
    with Image.open(IMAGES / "dog.jpg") as im:
        pixels = im.width * im.height
    assert dog.delta(t, "yolo_input_image_pixels_count", **MODEL) == 1
    assert dog.delta(t, "yolo_input_image_pixels_sum", **MODEL) == pixels
    assert dog.delta(t, "yolo_rejected_requests_total") == 0
    # KServe's own histograms stay
    for name in ("request_preprocess_seconds_count", "request_predict_seconds_count", "request_postprocess_seconds_count"):
        assert dog.delta(t, name, **MODEL) == 1, name


def test_predictor_metrics_move_by_exactly_one_request(dog):
    p = "predictor"
    for stage in ("queue", "inference", "nms", "total"):
        assert dog.delta(p, "yolo_stage_seconds_count", component=p, stage=stage, **MODEL) == 1, stage
    assert_counts_the_returned_image(dog, p)
    assert dog.delta(p, "yolo_engine_batch_size_count", **MODEL) == 1  # one engine call ...
    assert dog.delta(p, "yolo_engine_batch_size_sum", **MODEL) == 1  # ... of one image
    assert dog.delta(p, "request_predict_seconds_count", **MODEL) == 1
    assert metric(dog.after[p], "yolo_inflight_requests", component=p, **MODEL) == 0  # answered: nothing left in flight


def test_server_timing_names_every_documented_stage(dog):
    timings = parse_server_timing(dog.response.headers["server-timing"])
    assert set(timings) == SERVER_TIMING_STAGES
    assert all(v >= 0 for v in timings.values())
    assert timings["predictor-total"] >= timings["predictor-inference"]


def test_rejected_request_is_counted_by_reason(live_stack):
    def rejected() -> float:
        return metric(scrape(live_stack.transformer_url), "yolo_rejected_requests_total",
                      component="transformer", reason="bad_request")

    before = rejected()
    r = httpx.post(live_stack.transformer_url + PREDICT, json={"instances": [{"b64": "not base64 at all!"}]}, timeout=30)
    assert r.status_code == 400 and "error" in r.json()
    assert rejected() == before + 1


def test_request_id_reaches_the_access_log(live_stack, dog):
    def logged() -> list[str]:
        return access_lines(live_stack.transformer.log(), "metrics-dog-1", "POST", PREDICT)

    # the line is written once the response has been sent: wait for it, then check there is one
    lines = wait_until(logged, "the access-log line of metrics-dog-1")
    assert len(lines) == 1 and access_status(lines[0]) == 200, lines
