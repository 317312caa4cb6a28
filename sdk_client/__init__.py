"""Python SDK and ``yolo-kserve`` CLI for the Darknet YOLO InferenceService.

Public API::

    from sdk_client import DetectionClient
    with DetectionClient("http://127.0.0.1:8080", model="yolov3") as client:
        result = client.detect("dog.jpg", confidence=0.5, class_filter=["dog", "car"])
        print(result.to_triples())          # [["dog", 0.57, [cx, cy, w, h]], ...]

* :class:`DetectionClient` / :class:`AsyncDetectionClient` -- ``detect``, ``detect_many``,
  ``ready``, ``check_ready``, ``models``, ``model_info`` over REST v1, REST v2 or gRPC, with
  retries on 503/504/connection failures.
* :class:`Detection`, :class:`DetectionResult` -- typed results with ``to_dict`` (server schema),
  ``to_triples`` (the tutorial's format) and ``to_coco``; :func:`coco_results`,
  :func:`coco_detections` build COCO files for many images.
* :class:`ModelInfo` -- a served model's metadata (version, classes, input size when sent).
* Errors: :class:`DetectionError` -> :class:`InvalidRequestError` (4xx; :class:`ModelNotFoundError`),
  :class:`ServiceUnavailableError` (503), :class:`GatewayTimeoutError` (504),
  :class:`ServerError` (other 5xx), :class:`ConnectionFailedError` (no response).
* :func:`annotate`, :func:`save_annotated` -- draw boxes and labels on a copy of an image.

The CLI (``yolo-kserve detect|models|serve|rollout ...``) lives in :mod:`sdk_client.cli`.
Importing the SDK imports no server, no KServe and no dev tooling.
"""

from .annotate import annotate, save_annotated
from .client import AsyncDetectionClient, DetectionClient, encode_image
from .errors import (
    ConnectionFailedError,
    DetectionError,
    GatewayTimeoutError,
    InvalidRequestError,
    ModelNotFoundError,
    ServerError,
    ServiceUnavailableError,
)
from .results import (
    COCO80_TO_91,
    Detection,
    DetectionResult,
    ModelInfo,
    coco_category_map,
    coco_detections,
    coco_results,
)

__all__ = [
    "DetectionClient",
    "AsyncDetectionClient",
    "encode_image",
    "Detection",
    "DetectionResult",
    "ModelInfo",
    "coco_category_map",
    "coco_results",
    "coco_detections",
    "COCO80_TO_91",
    "DetectionError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "ServiceUnavailableError",
    "GatewayTimeoutError",
    "ServerError",
    "ConnectionFailedError",
    "annotate",
    "save_annotated",
]
