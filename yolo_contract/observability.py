"""Prometheus metrics and Server-Timing helpers shared by both servers.

KServe's own histograms (``request_preprocess_seconds`` ...) stay; these add per-stage timings,
detections per class, input image sizes and rejected requests by reason. Metric objects live in
the default registry, so KServe's ``/metrics`` endpoint exports them.

Output-quality series (what a model answers, not how fast) carry a ``model_version`` label, so a
dashboard can put a stable and a canary model side by side: ``yolo_detections_total``,
``yolo_images_total``, ``yolo_input_image_pixels``, ``yolo_detections_per_image`` and
``yolo_detection_confidence``. :meth:`Metrics.observe_output` records all of them for one batch.
They also carry ``revision``: the Knative revision (``K_REVISION``) of the predictor that produced
the output, ``""`` outside Knative. ``model_version`` and ``revision`` are the last labels and
default to ``""``: ``.labels(...)`` calls that predate them still work.
"""

from __future__ import annotations

import collections
from typing import Iterable, Mapping, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

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


#: Label naming the model that produced an output (e.g. a short hash of cfg+weights+names).
VERSION_LABEL = "model_version"
#: Label naming the Knative revision of the predictor that produced an output ("" outside Knative).
REVISION_LABEL = "revision"
#: Trailing labels that callers may leave out (recorded as "").
_OPTIONAL_LABELS = (VERSION_LABEL, REVISION_LABEL)
_PER_IMAGE_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 300)
_CONFIDENCE_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


class _VersionDefault:
    """``labels()`` without the trailing ``model_version`` / ``revision`` values records them as ``""``."""

    def labels(self, *values: object, **named: object):
        names = self._labelnames  # type: ignore[attr-defined]
        optional = [n for n in names[-len(_OPTIONAL_LABELS):] if n in _OPTIONAL_LABELS]
        if values and len(names) - len(optional) <= len(values) < len(names):
            values = (*values, *([""] * (len(names) - len(values))))
        elif named:
            for n in optional:
                named.setdefault(n, "")
        return super().labels(*values, **named)  # type: ignore[misc]


class _VersionedCounter(_VersionDefault, Counter):
    pass


class _VersionedHistogram(_VersionDefault, Histogram):
    pass


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        r = registry
        self.stage_seconds = Histogram(
            "yolo_stage_seconds",
            "Time spent per serving stage (decode, letterbox, transport, queue, inference, nms, ...)",
            ["component", "model_name", "stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.detections = _VersionedCounter(
            "yolo_detections_total", "Detections returned, by class",
            ["component", "model_name", "class_name", *_OPTIONAL_LABELS], registry=r,
        )
        self.images = _VersionedCounter(
            "yolo_images_total", "Images processed", ["component", "model_name", *_OPTIONAL_LABELS], registry=r
        )
        self.image_pixels = _VersionedHistogram(
            "yolo_input_image_pixels",
            "Pixel count of decoded input images",
            ["model_name", *_OPTIONAL_LABELS],
            buckets=(1e4, 1e5, 3e5, 1e6, 2e6, 5e6, 1.2e7, 2.5e7, 5e7),
            registry=r,
        )

        def per_version(name: str, doc: str, buckets: tuple) -> _VersionedHistogram:
            return _VersionedHistogram(name, doc, ["component", "model_name", *_OPTIONAL_LABELS], buckets=buckets,
                                       registry=r)

        self.detections_per_image = per_version(
            "yolo_detections_per_image", "Detections returned per image (the le=\"0.0\" bucket counts images with none)",
            _PER_IMAGE_BUCKETS)
        self.confidence = per_version("yolo_detection_confidence", "Confidence of every detection returned",
                                      _CONFIDENCE_BUCKETS)
        self.batch_size = Histogram(
            "yolo_engine_batch_size", "Images per engine call", ["model_name"], buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
            registry=r,
        )
        self.rejected = Counter(
            "yolo_rejected_requests_total", "Requests answered with an error, by reason", ["component", "reason"],
            registry=r,
        )
        self.inflight = Gauge(
            "yolo_inflight_requests",
            "Requests admitted and not yet answered (predictor: waiting for or running on the engine)", ["component", "model_name"],
            registry=r,
        )

    def observe_stages(self, component: str, model: str, timings: Mapping[str, float]) -> None:
        for stage, seconds in timings.items():
            if isinstance(seconds, float):
                self.stage_seconds.labels(component, model, stage).observe(seconds)

    def observe_output(
        self,
        component: str,
        model: str,
        version: str,
        images: Iterable[Sequence[tuple[str, float]]],
        pixels: Iterable[int] = (),
        revision: str = "",
    ) -> None:
        """Record what one batch answered: per image, its ``(class_name, confidence)`` pairs.

        Counts the images and the detections by class, and observes detections per image and
        every confidence. ``pixels`` (``width * height`` of each input, transformer only) goes to
        ``yolo_input_image_pixels``; leave it empty where image sizes are observed elsewhere.
        ``version`` and ``revision`` name the predictor model and Knative revision that answered.
        """
        per_image = self.detections_per_image.labels(component, model, version, revision)
        confidence = self.confidence.labels(component, model, version, revision)
        n_images = 0
        per_class: collections.Counter[str] = collections.Counter()
        for dets in images:
            n_images += 1
            per_image.observe(len(dets))
            for class_name, conf in dets:
                per_class[class_name] += 1
                confidence.observe(float(conf))
        for class_name, n in per_class.items():
            self.detections.labels(component, model, class_name, version, revision).inc(n)
        self.images.labels(component, model, version, revision).inc(n_images)
        pixel_hist = self.image_pixels.labels(model, version, revision)
        for n in pixels:
            pixel_hist.observe(n)

    def observe_predictor(
        self, model: str, timings: Mapping[str, object], rows: Iterable, names, version: str = "",
        revision: str = "",
    ) -> None:
        """Stages and outputs of one predictor batch: ``rows`` holds one ``[K, 6]`` detection array
        per image."""
        self.observe_stages("predictor", model, timings)  # type: ignore[arg-type]
        self.observe_output("predictor", model, version,
                            (list(zip([names[c] for c in img[:, 5].astype(int)], img[:, 4].tolist())) for img in rows),
                            revision=revision)

    def reject(self, component: str, reason: str) -> None:
        self.rejected.labels(component, reason).inc()


METRICS = Metrics()
