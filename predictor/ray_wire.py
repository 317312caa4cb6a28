"""What crosses the process boundary between the Ray ingress and a model replica.

KServe hands a model an ``InferRequest`` whose ``parameters`` may be a protobuf map (gRPC) that
cannot be pickled, and whose tensor may be a Python list (REST JSON). Ray pickles every argument
of a replica call, so the ingress converts the request into the small frozen types below: plain
Python parameters, the tensor as raw bytes, and the replica's answer (or its typed error) back.
Nothing here imports Ray or starts a server; both sides of the hop (``predictor.ray_serving``)
use it, and its round trips are unit-tested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from yolo_contract import errors
from yolo_contract.tensors import plain_value

#: Datatypes whose JSON data the ingress turns into raw bytes (BYTES has its own wire format and
#: is never a valid image tensor; it travels as sent so the replica refuses it as usual).
_NUMERIC = frozenset({"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"})


def check_kserve_internals() -> None:
    """The one private KServe attribute read here: raw tensor bytes live in ``_raw_data`` on
    ``InferInput``/``InferOutput`` (kserve 0.21 ``protocol/infer_type.py``). Fail loudly at start
    if a KServe upgrade moves it, instead of silently sending tensors as lists."""
    for cls in (InferInput, InferOutput):
        if not hasattr(cls("probe", [1], "UINT8"), "_raw_data"):
            raise RuntimeError(f"kserve {cls.__name__} has no _raw_data; predictor.ray_wire needs updating")


def plain_parameters(params: Any) -> dict[str, Any] | None:
    """A REST dict or a gRPC ``InferParameter`` map -> a plain, picklable dict."""
    if not params:
        return None
    return {str(k): plain_value(v) for k, v in params.items()}


@dataclass(frozen=True)
class WireTensor:
    name: str
    shape: tuple[int, ...]
    datatype: str
    #: Binary tensor data (what gRPC ``raw_*_contents`` and the REST binary extension carry).
    raw: bytes | None = None
    #: JSON data, only when it could not be turned into raw bytes (the replica then refuses it
    #: exactly as the plain predictor does).
    data: list | None = None
    parameters: dict[str, Any] | None = None


def _tensor(t: InferInput | InferOutput, convert: bool) -> WireTensor:
    raw = t._raw_data
    data = None if raw is not None else t.data
    if raw is None and data is not None and not isinstance(data, list):
        data = list(data)  # a protobuf repeated field or a numpy array
    if convert and raw is None and t.datatype in _NUMERIC and data is not None:
        try:
            raw = np.ascontiguousarray(t.as_numpy()).tobytes()
            data = None
        except Exception:  # shape/count/type mismatch: leave it for the replica to refuse
            pass
    return WireTensor(t.name, tuple(t.shape), t.datatype, raw, data, plain_parameters(t.parameters))


@dataclass(frozen=True)
class WireRequest:
    model_name: str
    id: str | None
    inputs: tuple[WireTensor, ...]
    parameters: dict[str, Any] | None
    from_grpc: bool

    @classmethod
    def from_infer_request(cls, request: InferRequest) -> "WireRequest":
        return cls(
            model_name=request.model_name,
            id=request.id or None,
            inputs=tuple(_tensor(i, convert=True) for i in request.inputs),
            parameters=plain_parameters(request.parameters),
            from_grpc=bool(request.from_grpc),
        )

    def to_infer_request(self) -> InferRequest:
        inputs = [InferInput(t.name, list(t.shape), t.datatype, data=t.data, parameters=t.parameters) for t in self.inputs]
        raws = [t.raw for t in self.inputs]
        return InferRequest(
            self.model_name,
            inputs,
            request_id=self.id,
            raw_inputs=raws if any(r is not None for r in raws) else None,
            from_grpc=self.from_grpc,
            parameters=dict(self.parameters) if self.parameters is not None else None,
        )

    @property
    def nbytes(self) -> int:
        return sum(len(t.raw) for t in self.inputs if t.raw is not None)


@dataclass(frozen=True)
class WireResponse:
    id: str
    model_name: str
    outputs: tuple[WireTensor, ...]
    parameters: dict[str, Any] | None
    #: ``InferResponse.model_version`` (the version of the model that answered)
    model_version: str | None = None

    @classmethod
    def from_infer_response(cls, response: InferResponse) -> "WireResponse":
        return cls(
            id=response.id or "",
            model_name=response.model_name,
            outputs=tuple(_tensor(o, convert=False) for o in response.outputs),
            parameters=plain_parameters(response.parameters),
            model_version=response.model_version,
        )

    @property
    def binary(self) -> bool:
        """The model chose binary outputs (it set them from numpy with ``binary_data=True``)."""
        return any(t.raw is not None for t in self.outputs)

    def to_infer_response(self, parameters: dict[str, Any] | None = None) -> InferResponse:
        outputs = [InferOutput(t.name, list(t.shape), t.datatype, data=t.data, parameters=t.parameters) for t in self.outputs]
        raws = [t.raw for t in self.outputs]
        return InferResponse(
            response_id=self.id,
            model_name=self.model_name,
            infer_outputs=outputs,
            raw_outputs=raws if any(r is not None for r in raws) else None,
            model_version=self.model_version,
            parameters=parameters if parameters is not None else self.parameters,
            use_binary_outputs=self.binary,
        )


@dataclass(frozen=True)
class WireError:
    """A client-facing error raised inside the replica, rebuilt as the same type at the ingress."""

    kind: str
    message: str
    retry_after: int | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> "WireError | None":
        if isinstance(exc, errors.ServingError) and type(exc).__name__ in errors.__all__:
            return cls(type(exc).__name__, exc.message, exc.retry_after)
        if isinstance(exc, InvalidInput):
            return cls("InvalidInput", str(exc.reason))
        return None  # not a client error: the replica logs it, the ingress answers a fixed 500

    def exception(self) -> Exception:
        if self.kind == "InvalidInput":
            return InvalidInput(self.message)
        cls = getattr(errors, self.kind, None) if self.kind in errors.__all__ else None
        if cls is None:
            return ReplicaFailure("the model replica failed to process the request")
        return cls(self.message, retry_after=self.retry_after)


class ReplicaFailure(RuntimeError):
    """An unexpected exception inside a replica (logged there). Answered like any internal error
    of the plain predictor: 500 / INTERNAL with a fixed message."""


@dataclass(frozen=True)
class Observation:
    """What the replica's predictor recorded for one request (``METRICS.observe_predictor``
    arguments); the ingress records it, so ``/metrics`` of the ModelServer shows it."""

    timings: dict[str, Any]
    rows: tuple[np.ndarray, ...]
    #: the model version and Knative revision the output is labelled with
    version: str = ""
    revision: str = ""


@dataclass(frozen=True)
class ReplicaReply:
    response: WireResponse | None = None
    error: WireError | None = None
    observation: Observation | None = None
    #: Images per engine call since the replica's previous reply (``yolo_engine_batch_size``).
    engine_batches: tuple[int, ...] = ()
    #: Seconds the replica spent on the call (its share of the request's total).
    seconds: float = 0.0
    pid: int = 0


@dataclass(frozen=True)
class ReplicaInfo:
    pid: int
    threads: int
    input_types: list[dict] = field(default_factory=list)
    output_types: list[dict] = field(default_factory=list)
    names: tuple[str, ...] = ()
    #: the model's ``metadata_extra()`` (versions, platform, ModelInfo as parameters)
    metadata: dict[str, Any] = field(default_factory=dict)
