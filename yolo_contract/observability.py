"""Prometheus metrics and Server-Timing helpers shared by both servers.

KServe's own histograms (``request_preprocess_seconds`` ...) stay; these add per-stage timings,
detections per class, input image sizes and rejected requests by reason. Metric objects live in
the default registry, so KServe's ``/metrics`` endpoint exports them.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram

_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def format_server_timing(timings: Mapping[str, float], prefix: str = "") -> str:
    """``{"decode": 0.0021}`` -> ``"decode;dur=2.100"`` (W3C Server-Timing, milliseconds)."""
    return ", ".join(
        f"{prefix}{name};dur={seconds * 1000:.3f}"
        for name, seconds in timings.items()
        if isinstance(seconds, float)
    )


def parse_server_timing(header: str) -> dict[str, float]:
    """Inverse of :func:`format_server_timing` (milliseconds -> seconds); ignores malformed parts."""
    out: dict[str, float] = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            try:
                out[name] = float(rest[4:]) / 1000.0
            except ValueError:
                continue
    return out


class Metrics:
    def __init__(self) -> None:
        self.stage_seconds = Histogram(
            "yolo_stage_seconds",
            "Time spent per serving stage (decode, letterbox, transport, queue, inference, nms, ...)",
            ["component", "model_name", "stage"],
            buckets=_STAGE_BUCKETS,
        )
        self.detections = Counter(
            "yolo_detections_total", "Detections returned, by class", ["component", "model_name", "class_name"]
        )
        self.images = Counter("yolo_images_total", "Images processed", ["component", "model_name"])
        self.image_pixels = Histogram(
            "yolo_input_image_pixels",
            "Pixel count of decoded input images",
            ["model_name"],
            buckets=(1e4, 1e5, 3e5, 1e6, 2e6, 5e6, 1.2e7, 2.5e7, 5e7),
        )
        self.batch_size = Histogram(
            "yolo_engine_batch_size", "Images per engine call", ["model_name"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32)
        )
        self.rejected = Counter(
            "yolo_rejected_requests_total", "Requests answered with an error, by reason", ["component", "reason"]
        )
        self.inflight = Gauge(
            "yolo_inflight_requests", "Requests waiting for or running on the engine now", ["component", "model_name"]
        )

    def observe_stages(self, component: str, model: str, timings: Mapping[str, float]) -> None:
        for stage, seconds in timings.items():
            if isinstance(seconds, float):
                self.stage_seconds.labels(component, model, stage).observe(seconds)

    def observe_predictor(self, model: str, timings: Mapping[str, object], shape, rows: Iterable, names) -> None:
        self.observe_stages("predictor", model, timings)  # type: ignore[arg-type]
        self.images.labels("predictor", model).inc(int(shape[0]))
        for r in rows:
            for class_id in r[:, 5].astype(int):
                self.detections.labels("predictor", model, names[class_id]).inc()

    def reject(self, component: str, reason: str) -> None:
        self.rejected.labels(component, reason).inc()


METRICS = Metrics()
