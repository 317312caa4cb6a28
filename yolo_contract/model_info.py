"""What a served model is, as the predictor publishes it and the transformer follows it (pure).

"The model decides, the transformer follows": the input size, the preprocessing, the class names
and the decode defaults belong to the predictor's model. The predictor publishes a
:class:`ModelInfo` per served name:

* in ``GET /v2/models/<name>`` (``versions``, ``platform`` and ``parameters`` = ``to_dict()``);
* through the **describe exchange**, which works over gRPC too: a ``ModelInfer`` with no inputs and
  the parameter ``describe=true`` (:func:`describe_parameters`) is answered with one ``BYTES [1]``
  output ``model_info`` holding ``to_json()`` (:func:`describe_output` / :func:`read_describe_output`);
* in the message of a ``PreprocessMismatch`` (:func:`mismatch_message` / :func:`read_mismatch_message`).

Every inference response names the version that answered (``model_version``). The transformer keeps
what it learned per served name in a :class:`ModelTracker`.

No kserve or grpc import here: both servers, the client and tests use this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

import numpy as np

from yolo_contract.tensors import DESCRIBE_PARAMETER, NMS_KINDS, OUTPUT_MODEL_INFO, PREPROCESS_MODES, plain_value

LINEAGES = ("pjreddie", "alexeyab")
#: A mismatch message travels as gRPC status details (a trailer, 8 KiB limit by default); above this
#: size it leaves out the class names (the receiver then describes the model to get them).
MAX_MISMATCH_MESSAGE = 4096


@dataclass(frozen=True)
class ModelInfo:
    """One served model, as the predictor publishes it.

    Attributes:
        name: the model's name (its directory name in a model repository, else ``--model_name``).
        version: ``--model_version``, else the first 12 hex digits of sha256(cfg + weights + names).
        lineage: ``pjreddie`` or ``alexeyab`` (which Darknet's semantics the cfg follows).
        input_width, input_height: the network input the model is served at (pixels).
        preprocess: ``letterbox`` or ``resize`` (how images must be brought to that size).
        classes: class names, in class-id order (empty only in a shortened mismatch message).
        confidence, iou_threshold, nms, beta_nms: decode defaults for requests that give none.
        models: every name the predictor serves (this one included), for the transformer to mirror.
    """

    name: str
    version: str
    lineage: str
    input_width: int
    input_height: int
    preprocess: str
    classes: tuple[str, ...]
    confidence: float
    iou_threshold: float
    nms: str
    beta_nms: float
    models: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"ModelInfo: {what}")

        need(isinstance(self.name, str) and bool(self.name), "name must be a non-empty string")
        need(isinstance(self.version, str) and bool(self.version), "version must be a non-empty string")
        need(self.lineage in LINEAGES, f"lineage must be one of {', '.join(LINEAGES)}")
        for side in (self.input_width, self.input_height):
            need(isinstance(side, int) and not isinstance(side, bool) and side >= 1, "input sizes must be positive integers")
        need(self.preprocess in PREPROCESS_MODES, f"preprocess must be one of {', '.join(PREPROCESS_MODES)}")
        need(self.nms in NMS_KINDS, f"nms must be one of {', '.join(NMS_KINDS)}")
        for key in ("confidence", "iou_threshold", "beta_nms"):
            value = getattr(self, key)
            need(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1, f"{key} must be in [0, 1]")
        for key in ("classes", "models"):
            value = getattr(self, key)
            need(isinstance(value, tuple) and all(isinstance(v, str) for v in value), f"{key} must be a list of strings")

    @property
    def size(self) -> tuple[int, int]:
        """``(input_width, input_height)``."""
        return self.input_width, self.input_height

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["classes"], out["models"] = list(self.classes), list(self.models)
        return out

    @classmethod
    def from_dict(cls, doc: object) -> "ModelInfo":
        """Inverse of :meth:`to_dict`; unknown keys are ignored (newer predictors may add some).

        Raises:
            ValueError: a field is missing or has the wrong type or value.
        """
        if not isinstance(doc, dict):
            raise ValueError("ModelInfo: expected a JSON object")
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in doc and n != "models"]
        if missing:
            raise ValueError(f"ModelInfo: missing {', '.join(missing)}")
        values = {n: doc[n] for n in names if n in doc}
        for key in ("classes", "models"):
            if key in values:
                if not isinstance(values[key], list):
                    raise ValueError(f"ModelInfo: {key} must be a list of strings")
                values[key] = tuple(values[key])
        for key in ("confidence", "iou_threshold", "beta_nms"):
            if isinstance(values[key], int) and not isinstance(values[key], bool):
                values[key] = float(values[key])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelInfo":
        try:
            doc = json.loads(text)
        except (ValueError, TypeError) as e:
            raise ValueError("ModelInfo: not JSON") from e
        return cls.from_dict(doc)


# ------------------------------------------------------------------------------------------------
# The describe exchange


def describe_parameters() -> dict[str, object]:
    """Request parameters of a describe call (a ModelInfer with no inputs)."""
    return {DESCRIBE_PARAMETER: True}


def is_describe(parameters: object) -> bool:
    """Whether request ``parameters`` (REST dict or gRPC parameter map) ask for a describe."""
    if parameters is None or not hasattr(parameters, "get"):
        return False
    value = plain_value(parameters.get(DESCRIBE_PARAMETER))
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return value is True or value == 1


def describe_output(info: ModelInfo) -> tuple[str, list[int], str, np.ndarray]:
    """``(name, shape, datatype, data)`` of the one output that answers a describe call."""
    return OUTPUT_MODEL_INFO, [1], "BYTES", np.array([info.to_json().encode()], dtype=object)


def read_describe_output(outputs: dict[str, np.ndarray]) -> ModelInfo:
    """The ModelInfo of a describe answer, given its outputs by name (as numpy arrays).

    Raises:
        ValueError: the answer has no well-formed ``model_info`` output.
    """
    if OUTPUT_MODEL_INFO not in outputs:
        raise ValueError(f'describe answer has no "{OUTPUT_MODEL_INFO}" output')
    values = np.asarray(outputs[OUTPUT_MODEL_INFO], dtype=object).reshape(-1)
    if values.size != 1:
        raise ValueError(f'"{OUTPUT_MODEL_INFO}" must hold exactly one element')
    return ModelInfo.from_json(values[0])


def mismatch_message(info: ModelInfo) -> str:
    """The message of a ``PreprocessMismatch``: the model's ModelInfo as JSON, without the class
    names when the whole would exceed :data:`MAX_MISMATCH_MESSAGE` bytes."""
    text = info.to_json()
    if len(text.encode()) > MAX_MISMATCH_MESSAGE:
        text = ModelInfo(**{**{f.name: getattr(info, f.name) for f in fields(info)}, "classes": ()}).to_json()
    return text


def read_mismatch_message(text: str) -> ModelInfo | None:
    """The ModelInfo in a ``PreprocessMismatch`` message, or None if it does not hold one."""
    try:
        return ModelInfo.from_json(text)
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------------
# Following the model behind one served name


class ModelTracker:
    """Which model the transformer prepares requests for, behind one served name.

    Usually one model answers. During a rollout two revisions answer the same name, and routing
    sends each call to either of them, so the tracker keeps the ModelInfo of every version it has
    seen and an exponentially weighted share of the calls each version answered (``alpha`` per
    observation). :meth:`current` is the version with the largest share (ties: the most recently
    seen). A version seen for the first time with its ModelInfo becomes current at once (a new
    revision replaced the old one: follow it after one refused call), but a known minority version
    does not take over from one refusal (a 10 % canary does not flip the other 90 %); versions are
    remembered (up to ``max_versions``, the longest-unseen forgotten first) for that reason.

    Not thread-safe: the transformer calls it from its event loop only.
    """

    def __init__(self, alpha: float = 0.1, max_versions: int = 8):
        self.alpha = alpha
        self.max_versions = max_versions
        self.infos: dict[str, ModelInfo] = {}
        self.share: dict[str, float] = {}
        self._seen: dict[str, int] = {}
        self._clock = 0

    def current(self) -> ModelInfo | None:
        known = [v for v in self.infos if v in self.share]
        if not known:
            return None
        best = max(known, key=lambda v: (self.share[v], self._seen[v]))
        return self.infos[best]

    def observe(self, version: str, info: ModelInfo | None = None) -> bool:
        """Record that ``version`` answered a call (with its ``info`` when the answer carried it).

        Returns:
            True when the ModelInfo of ``version`` is still unknown (the caller should describe).
        """
        if info is not None and info.version != version:
            raise ValueError("ModelInfo version does not match the observed version")
        self._clock += 1
        new = version not in self.share
        for v in self.share:
            self.share[v] *= 1.0 - self.alpha
        if new and info is not None:
            self.share[version] = max(self.share.values(), default=1.0)
        else:
            self.share[version] = self.share.get(version, 0.0) + self.alpha
        self._seen[version] = self._clock
        if info is not None:
            stored = self.infos.get(version)
            if stored is None or (not stored.classes and info.classes):
                self.infos[version] = info
        while len(self.share) > self.max_versions:  # forget the longest-unseen version (never the current one)
            best = self.current()
            oldest = min((v for v in self.share if best is None or v != best.version), key=self._seen.__getitem__)
            for table in (self.share, self.infos, self._seen):
                table.pop(oldest, None)
        return version not in self.infos or not self.infos[version].classes
