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
"""

from __future__ import annotations

from dataclasses import dataclass

INPUT_IMAGES = "images"
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
    ParamSpec("max_detections", int, 300, "at most this many rows per image (highest confidence first)"),
    ParamSpec("class_filter", str, "", "comma-separated class names to keep; empty keeps all"),
    ParamSpec("nms", str, "agnostic", "'agnostic' (do_nms_obj), 'per_class' (do_nms_sort) or 'diou' (AlexeyAB diounms_sort)"),
)
#: Lower bounds of float parameters: below 0.001 (the usual mAP threshold) nearly every cell and
#: class becomes a candidate and NMS cost explodes (a request could occupy the engine for seconds).
MIN_CONFIDENCE = {"confidence": 0.001}

#: Header carrying the request id end to end (client -> transformer -> predictor -> logs).
REQUEST_ID_HEADER = "x-request-id"
#: Header into which the HTTP middleware copies the request's query string (raw-image uploads
#: carry their parameters as ``?confidence=0.25&class_filter=dog``).
QUERY_HEADER = "x-yolo-query"


def plain_value(value: object) -> object:
    """Unwrap a gRPC ``InferParameter`` message (duck-typed: no grpc import here)."""
    which = getattr(value, "WhichOneof", None)
    if which is not None:
        field = which("parameter_choice")
        return getattr(value, field) if field else None
    return value


def coerce_parameters(raw: object) -> dict[str, object]:
    """Validate and normalise per-request parameters (REST dict or gRPC parameter map).

    Unknown keys are ignored (KServe and clients add their own, e.g. ``binary_data_output``).
    ``class_filter`` may be a list of names or a comma-separated string; it comes back as a
    tuple of names (empty = no filter). Raises :class:`yolo_contract.errors.BadRequest`.
    """
    from yolo_contract.errors import BadRequest

    if raw is None:
        return {}
    if not hasattr(raw, "items"):
        raise BadRequest('"parameters" must be an object')
    out: dict[str, object] = {}
    for spec in PARAMETERS:
        if spec.name not in raw:
            continue
        value = plain_value(raw[spec.name])
        if value is None:
            continue
        if spec.name == "class_filter":
            if isinstance(value, str):
                names = [v.strip() for v in value.split(",")]
            elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                names = [v.strip() for v in value]
            else:
                raise BadRequest('"class_filter" must be a list of class names or a comma-separated string')
            out["class_filter"] = tuple(n for n in names if n)
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
                if spec.name == "nms" and value not in ("agnostic", "per_class", "diou"):
                    raise ValueError
        except (TypeError, ValueError) as e:
            low = MIN_CONFIDENCE.get(spec.name, 0)
            bounds = {float: f"a number in [{low:g}, 1]", int: "an integer in [0, 10000]"}.get(spec.type, "'agnostic', 'per_class' or 'diou'")
            raise BadRequest(f'parameter "{spec.name}" must be {bounds}') from e
        out[spec.name] = value
    return out

#: Response parameter in which the predictor returns its stage timings (Server-Timing syntax).
SERVER_TIMING_PARAMETER = "server_timing"


def to_wire_parameters(params: dict[str, object]) -> dict[str, object]:
    """Coerced parameters -> values KServe can put in a gRPC ``InferParameter`` (its proto has no
    double field: floats travel as strings; ``class_filter`` as a comma-separated string)."""
    out: dict[str, object] = {}
    for key, value in params.items():
        if isinstance(value, float):
            out[key] = repr(value)
        elif isinstance(value, tuple):
            out[key] = ",".join(value)
        else:
            out[key] = value
    return out
