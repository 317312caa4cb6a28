"""The transformer <-> predictor tensor contract, declared once.

Both servers import these names; nothing else in the repo spells them.

Request (v2 / grpc-v2) to the predictor:
    input ``images``: ``UINT8`` (preferred) or ``FP32`` ``[N, 3, H, W]``, RGB, letterboxed exactly as
    Darknet does (see ``transformer.geometry``). UINT8 holds ``round(255 * pixel)``; FP32 holds
    values in ``[0, 1]``. ``H`` and ``W`` must be multiples of 32.
    parameters (all optional, per request): see :data:`PARAMETERS`.

Response from the predictor:
    output ``detections``: ``FP32 [N, K, 6]``, columns :data:`DETECTION_COLUMNS`; boxes are in
    network-input pixels (centre/size), rows sorted by descending confidence; rows past
    ``counts[i]`` are zero padding.
    output ``counts``: ``INT32 [N]``, the number of valid rows per image.
    output ``labels``: ``BYTES [N, K]``, UTF-8 class name of each row ("" for padding), so the
    transformer never needs the model's ``.names`` file (and a canary with other classes just works).
    parameter ``model_version`` (and ``InferResponse.model_version``): the version of the model that
    answered (see ``yolo_contract.model_info``); parameter ``revision``: the predictor's Knative
    revision (``K_REVISION``), absent outside Knative.

What the transformer did (sent with every transformer request; hand-made requests may omit it):
    parameter ``preprocess``: ``letterbox`` or ``resize`` (the tensor's H and W give the size). If it,
    or the tensor's H/W, differs from the model's ``ModelInfo`` the predictor refuses with
    ``PreprocessMismatch`` (gRPC FAILED_PRECONDITION / HTTP 409) whose message is that ModelInfo.
    optional input ``content``: ``FP32 [N, 4]``, per image ``(offset_x, offset_y, content_w,
    content_h)`` of the image inside the network input, in network pixels (letterbox: Darknet's float
    offset ``(net - new) / 2`` and the resized size; resize: ``(0, 0, net_w, net_h)``).

Describe exchange (how the transformer learns the model; see ``yolo_contract.model_info``):
    a ``ModelInfer`` with no inputs and parameter ``describe=true`` is answered with one ``BYTES [1]``
    output ``model_info`` holding the model's ``ModelInfo`` as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

INPUT_IMAGES = "images"
#: Optional FP32 [N, 4] input: where each image lies inside the network input (see above).
INPUT_CONTENT = "content"
OUTPUT_DETECTIONS = "detections"
OUTPUT_COUNTS = "counts"
OUTPUT_LABELS = "labels"

#: Column order of each row of ``detections``.
DETECTION_COLUMNS = ("cx", "cy", "w", "h", "confidence", "class_id")
COL_CX, COL_CY, COL_W, COL_H, COL_CONF, COL_CLASS = range(6)

INPUT_DATATYPES = ("UINT8", "FP32")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: type
    default: object
    doc: str


#: Per-request parameters understood by the predictor (v2 ``parameters`` / gRPC ``InferParameter``)
#: and, under the same names, by the transformer's public API.
PARAMETERS = (
    ParamSpec("confidence", float, 0.5, "keep (box, class) pairs with objectness*class > confidence (>= 0.001)"),
    ParamSpec("iou_threshold", float, 0.45, "NMS IoU threshold"),
    ParamSpec("max_detections", int, 10_000, "at most this many rows per image (highest confidence first); "
              "Darknet has no limit, so the default is the largest accepted value"),
    ParamSpec("class_filter", str, "", "class names (case-insensitive) or ids to keep, a list or comma-separated; empty keeps all"),
    ParamSpec("nms", str, "agnostic", "'agnostic' (do_nms_obj), 'per_class' (do_nms_sort) or 'diou' (AlexeyAB's diounms_sort)"),
)
#: Defaults of ``confidence``, ``iou_threshold`` and ``nms`` are the model's own (its ModelInfo:
#: 0.5 / agnostic for pjreddie cfgs, 0.25 and the cfg's nms_kind for AlexeyAB ones); the values
#: above are the pjreddie ones, for documentation.
NMS_KINDS = ("agnostic", "per_class", "diou")
#: Lower bounds of float parameters: below 0.001 (the usual mAP threshold) nearly every cell and
#: class becomes a candidate and NMS cost explodes (a request could occupy the engine for seconds).
MIN_CONFIDENCE = {"confidence": 0.001}

#: Header carrying the request id end to end (client -> transformer -> predictor -> logs).
REQUEST_ID_HEADER = "x-request-id"
#: Header into which the HTTP middleware copies the request's query string (raw-image uploads
#: carry their parameters as ``?confidence=0.25&class_filter=dog``).
QUERY_HEADER = "x-yolo-query"

#: Response headers of the transformer naming what answered: the served model name, the version of
#: the predictor model that answered, the Knative revision of the predictor pod (when it runs in
#: one) and, for a request routed by revision tag, the tag (``latest`` / ``prev``).
MODEL_NAME_HEADER = "x-model-name"
MODEL_VERSION_HEADER = "x-model-version"
PREDICTOR_REVISION_HEADER = "x-predictor-revision"
#: Request header that picks a predictor revision by tag (the transformer's ``--revision_header``;
#: the manifests turn it on under this name). Echoed in the response with the canonical tag.
REVISION_HEADER = "x-model-revision"
#: Accepted values of the revision header: KServe's tag names, and aliases for them.
REVISION_TAGS = {"latest": "latest", "canary": "latest", "prev": "prev", "stable": "prev"}


def plain_value(value: object) -> object:
    """Unwrap a gRPC ``InferParameter`` message (duck-typed: no grpc import here)."""
    which = getattr(value, "WhichOneof", None)
    if which is not None:
        field = which("parameter_choice")
        return getattr(value, field) if field else None
    return value


def coerce_parameters(raw: object, accepted: Sequence[str] | None = None) -> dict[str, object]:
    """Validate and normalise per-request parameters (REST dict or gRPC parameter map).

    ``accepted`` are the names this API takes (default: the predictor's,
    :data:`PREDICTOR_PARAMETER_NAMES`; the transformer passes :data:`PUBLIC_PARAMETER_NAMES`); the
    keys clients add on their own (:data:`PROTOCOL_PARAMETERS`) are always accepted, and any other
    key is refused, naming it and the valid names (a misspelt ``confidnce`` is never ignored).
    ``class_filter`` may be a list of names/ids or a comma-separated string; it comes back as a tuple
    of names and ids (empty = no filter), resolved against a model by
    :func:`yolo_contract.classes.resolve_class_filter`. Raises :class:`yolo_contract.errors.BadRequest`.
    """
    from yolo_contract.errors import BadRequest

    if raw is None:
        return {}
    if not hasattr(raw, "items"):
        raise BadRequest('"parameters" must be an object')
    check_parameter_names(raw, PREDICTOR_PARAMETER_NAMES if accepted is None else accepted)
    out: dict[str, object] = {}
    for spec in PARAMETERS:
        if spec.name not in raw:
            continue
        value = plain_value(raw[spec.name])
        if value is None:
            continue
        if spec.name == "class_filter":
            out["class_filter"] = _class_filter_items(value)
            continue
        try:
            if spec.type is float:
                if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                    raise TypeError
                value = float(value)
                if not MIN_CONFIDENCE.get(spec.name, 0.0) <= value <= 1.0:
                    raise ValueError
            elif spec.type is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise TypeError
                value = int(value)
                if not 0 <= value <= 10_000:
                    raise ValueError
            else:
                value = str(value)
                if spec.name == "nms" and value not in NMS_KINDS:
                    raise ValueError
        except (TypeError, ValueError) as e:
            low = MIN_CONFIDENCE.get(spec.name, 0)
            bounds = {float: f"a number in [{low:g}, 1]", int: "an integer in [0, 10000]"}.get(spec.type, "one of " + ", ".join(NMS_KINDS))
            raise BadRequest(f'parameter "{spec.name}" must be {bounds}') from e
        out[spec.name] = value
    return out


def _class_filter_items(value: object) -> tuple[str | int, ...]:
    """A class filter as a tuple of stripped names and int ids (see :func:`coerce_parameters`)."""
    from yolo_contract.errors import BadRequest

    def item(v: object) -> str | int:
        if isinstance(v, str):
            return v.strip()
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        raise BadRequest('"class_filter" must be a list of class names or ids, or a comma-separated string')

    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = [item(v) for v in value]
    else:
        items = [item(value)]
    return tuple(v for v in items if v != "")


def check_parameter_names(raw: object, accepted: Sequence[str]) -> None:
    """Refuse (400) request parameters that are neither ``accepted`` nor :data:`PROTOCOL_PARAMETERS`,
    naming them (cut short), what was probably meant, and the valid names."""
    from yolo_contract.classes import unknown_names_message
    from yolo_contract.errors import BadRequest

    unknown = [k for k in raw.keys() if k not in accepted and k not in PROTOCOL_PARAMETERS]
    if unknown:
        message = unknown_names_message("parameter", [str(k) for k in unknown], accepted, PARAMETER_ALIASES)
        raise BadRequest(f"{message}; "
                         f"valid parameters: {', '.join(accepted)}")

#: Response parameter in which the predictor returns its stage timings (Server-Timing syntax).
SERVER_TIMING_PARAMETER = "server_timing"
#: Response parameter naming the version of the model that answered.
MODEL_VERSION_PARAMETER = "model_version"
#: Response parameter naming the Knative revision (``K_REVISION``) of the predictor that answered;
#: absent outside Knative.
REVISION_PARAMETER = "revision"
#: Request parameter stating how the transformer prepared ``images`` (one of PREPROCESS_MODES).
PREPROCESS_PARAMETER = "preprocess"
#: ``letterbox``: Darknet's letterbox_image (aspect kept, grey bars); ``resize``: resize_image to the
#: network size (AlexeyAB cfgs without ``letter_box=1``).
PREPROCESS_MODES = ("letterbox", "resize")
#: Request parameter of the describe exchange, and the output that answers it.
DESCRIBE_PARAMETER = "describe"
OUTPUT_MODEL_INFO = "model_info"

# Which request parameters each API accepts, declared once. Anything else is refused (400) by
# :func:`coerce_parameters`, naming the unknown key and the valid ones.

#: Parameters of the transformer's public API that shape its answer (never sent to the predictor):
#: ``format`` (``json`` or the tutorial's ``seed``) and ``clip`` (boxes clipped to the image).
RESPONSE_PARAMETERS = ("format", "clip")
#: Keys inference clients and KServe put in request parameters on their own (the v2 binary tensor
#: extension): accepted by every API, never interpreted. (gRPC metadata such as KServe's
#: ``request_type``/``response_type`` is not a parameter.)
PROTOCOL_PARAMETERS = ("binary_data_output", "binary_data", "binary_data_size")
#: What the transformer adds to its predictor calls (the describe exchange, how it prepared the
#: tensor, and the model version it prepared for); not part of the public API.
INTERNAL_PARAMETERS = (PREPROCESS_PARAMETER, DESCRIBE_PARAMETER, MODEL_VERSION_PARAMETER)
#: Names other detectors' APIs use (Ultralytics, Roboflow): suggested, never accepted.
PARAMETER_ALIASES = {"conf": "confidence", "iou": "iou_threshold", "classes": "class_filter",
                     "max_det": "max_detections", "overlap": "iou_threshold"}
#: The transformer's public API (v1 body/query string, v2 REST, gRPC).
PUBLIC_PARAMETER_NAMES = (*(p.name for p in PARAMETERS), *RESPONSE_PARAMETERS)
#: The predictor's v2 REST and gRPC API.
PREDICTOR_PARAMETER_NAMES = (*(p.name for p in PARAMETERS), *INTERNAL_PARAMETERS)


def to_wire_parameters(params: dict[str, object]) -> dict[str, object]:
    """Coerced parameters -> values KServe can put in a gRPC ``InferParameter`` (its proto has no
    double field: floats travel as strings; ``class_filter`` as a comma-separated string)."""
    out: dict[str, object] = {}
    for key, value in params.items():
        if isinstance(value, float):
            out[key] = repr(value)
        elif isinstance(value, tuple):
            out[key] = ",".join(str(v) for v in value)
        else:
            out[key] = value
    return out
