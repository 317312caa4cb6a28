"""The few Open Inference Protocol (v2) gRPC messages the SDK needs, without KServe.

``kserve`` ships generated stubs, but importing any part of it imports its model server (FastAPI,
uvicorn, pandas, ...) and parses ``sys.argv``. The client needs three RPCs of
``inference.GRPCInferenceService`` -- ``ModelInfer``, ``ModelReady`` and ``ModelMetadata`` -- so
their messages are declared here, field for field as in the protocol's ``grpc_predict_v2.proto``
(a test checks that they serialise byte for byte like KServe's generated ones), and called with
grpcio's generic ``unary_unary``. Dependencies: ``grpcio`` and ``protobuf`` only.

``InferParameter`` has no double in KServe's proto: floats travel as decimal strings.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

__all__ = ["messages", "SERVICE", "METHODS", "set_parameters"]

SERVICE = "inference.GRPCInferenceService"
#: RPC name -> (request message, response message).
METHODS = {
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
}

# (field name, number, type, label, type name) with descriptor_pb2 constants spelled out below.
_STRING, _BOOL, _INT64, _BYTES, _MESSAGE = 9, 8, 3, 12, 11
_INT32, _UINT32, _UINT64, _FLOAT, _DOUBLE = 5, 13, 4, 2, 1
_OPTIONAL, _REPEATED = 1, 3

_PARAMS = "ParametersEntry"


def _message_specs() -> dict[str, Any]:
    """name -> (fields, nested messages, oneofs); a map field is a repeated nested *Entry*."""
    params_entry = (_PARAMS, [("key", 1, _STRING, _OPTIONAL, None),
                              ("value", 2, _MESSAGE, _OPTIONAL, ".inference.InferParameter")],
                    True)
    tensor_meta = ("TensorMetadata", [("name", 1, _STRING, _OPTIONAL, None),
                                      ("datatype", 2, _STRING, _OPTIONAL, None),
                                      ("shape", 3, _INT64, _REPEATED, None)], False)
    return {
        "ModelReadyRequest": ([("name", 1, _STRING, _OPTIONAL, None),
                               ("version", 2, _STRING, _OPTIONAL, None)], []),
        "ModelReadyResponse": ([("ready", 1, _BOOL, _OPTIONAL, None)], []),
        "ModelMetadataRequest": ([("name", 1, _STRING, _OPTIONAL, None),
                                  ("version", 2, _STRING, _OPTIONAL, None)], []),
        "ModelMetadataResponse": (
            [("name", 1, _STRING, _OPTIONAL, None), ("versions", 2, _STRING, _REPEATED, None),
             ("platform", 3, _STRING, _OPTIONAL, None),
             ("inputs", 4, _MESSAGE, _REPEATED, ".inference.ModelMetadataResponse.TensorMetadata"),
             ("outputs", 5, _MESSAGE, _REPEATED, ".inference.ModelMetadataResponse.TensorMetadata")],
            [tensor_meta]),
        "InferParameter": ([("bool_param", 1, _BOOL, _OPTIONAL, None),
                            ("int64_param", 2, _INT64, _OPTIONAL, None),
                            ("string_param", 3, _STRING, _OPTIONAL, None)], [], "parameter_choice"),
        "InferTensorContents": ([("bool_contents", 1, _BOOL, _REPEATED, None),
                                 ("int_contents", 2, _INT32, _REPEATED, None),
                                 ("int64_contents", 3, _INT64, _REPEATED, None),
                                 ("uint_contents", 4, _UINT32, _REPEATED, None),
                                 ("uint64_contents", 5, _UINT64, _REPEATED, None),
                                 ("fp32_contents", 6, _FLOAT, _REPEATED, None),
                                 ("fp64_contents", 7, _DOUBLE, _REPEATED, None),
                                 ("bytes_contents", 8, _BYTES, _REPEATED, None)], []),
        "ModelInferRequest": (
            [("model_name", 1, _STRING, _OPTIONAL, None), ("model_version", 2, _STRING, _OPTIONAL, None),
             ("id", 3, _STRING, _OPTIONAL, None),
             ("parameters", 4, _MESSAGE, _REPEATED, ".inference.ModelInferRequest.ParametersEntry"),
             ("inputs", 5, _MESSAGE, _REPEATED, ".inference.ModelInferRequest.InferInputTensor"),
             ("outputs", 6, _MESSAGE, _REPEATED,
              ".inference.ModelInferRequest.InferRequestedOutputTensor"),
             ("raw_input_contents", 7, _BYTES, _REPEATED, None)],
            [params_entry,
             ("InferInputTensor",
              [("name", 1, _STRING, _OPTIONAL, None), ("datatype", 2, _STRING, _OPTIONAL, None),
               ("shape", 3, _INT64, _REPEATED, None),
               ("parameters", 4, _MESSAGE, _REPEATED,
                ".inference.ModelInferRequest.InferInputTensor.ParametersEntry"),
               ("contents", 5, _MESSAGE, _OPTIONAL, ".inference.InferTensorContents")],
              False, [params_entry]),
             ("InferRequestedOutputTensor",
              [("name", 1, _STRING, _OPTIONAL, None),
               ("parameters", 2, _MESSAGE, _REPEATED,
                ".inference.ModelInferRequest.InferRequestedOutputTensor.ParametersEntry")],
              False, [params_entry])]),
        "ModelInferResponse": (
            [("model_name", 1, _STRING, _OPTIONAL, None), ("model_version", 2, _STRING, _OPTIONAL, None),
             ("id", 3, _STRING, _OPTIONAL, None),
             ("parameters", 4, _MESSAGE, _REPEATED, ".inference.ModelInferResponse.ParametersEntry"),
             ("outputs", 5, _MESSAGE, _REPEATED, ".inference.ModelInferResponse.InferOutputTensor"),
             ("raw_output_contents", 6, _BYTES, _REPEATED, None)],
            [params_entry,
             ("InferOutputTensor",
              [("name", 1, _STRING, _OPTIONAL, None), ("datatype", 2, _STRING, _OPTIONAL, None),
               ("shape", 3, _INT64, _REPEATED, None),
               ("parameters", 4, _MESSAGE, _REPEATED,
                ".inference.ModelInferResponse.InferOutputTensor.ParametersEntry"),
               ("contents", 5, _MESSAGE, _OPTIONAL, ".inference.InferTensorContents")],
              False, [params_entry])]),
    }


def _fill(msg: Any, fields: list, nested: list, oneof: str | None = None) -> None:
    if oneof:
        msg.oneof_decl.add(name=oneof)
    for name, number, ftype, label, type_name in fields:
        f = msg.field.add(name=name, number=number, type=ftype, label=label)
        if type_name:
            f.type_name = type_name
        if oneof:
            f.oneof_index = 0
    for spec in nested:
        sub_name, sub_fields, is_map = spec[:3]
        sub = msg.nested_type.add(name=sub_name)
        if is_map:
            sub.options.map_entry = True
        _fill(sub, sub_fields, list(spec[3]) if len(spec) > 3 else [])


@functools.lru_cache(maxsize=1)
def messages() -> dict[str, type]:
    """Message classes by name (built once, in a private descriptor pool)."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    fdp = descriptor_pb2.FileDescriptorProto(name="yolo_kserve_sdk/grpc_predict_v2.proto",
                                             package="inference", syntax="proto3")
    for name, spec in _message_specs().items():
        fields, nested = spec[0], spec[1]
        _fill(fdp.message_type.add(name=name), fields, nested, spec[2] if len(spec) > 2 else None)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    try:
        from google.protobuf.message_factory import GetMessageClass
    except ImportError:  # protobuf < 4.21
        from google.protobuf.message_factory import MessageFactory

        factory = MessageFactory(pool)
        GetMessageClass = factory.GetPrototype  # noqa: N806
    return {name: GetMessageClass(pool.FindMessageTypeByName(f"inference.{name}"))
            for name in _message_specs()}


def set_parameters(target: Any, params: Mapping[str, Any]) -> None:
    """Fill a ``map<string, InferParameter>`` (floats as decimal strings, lists comma-joined)."""
    for key, val in params.items():
        slot = target[key]
        if isinstance(val, bool):
            slot.bool_param = val
        elif isinstance(val, int):
            slot.int64_param = val
        elif isinstance(val, float):
            slot.string_param = repr(val)
        elif isinstance(val, (list, tuple)):
            slot.string_param = ",".join(str(v) for v in val)
        else:
            slot.string_param = str(val)


def stub(channel: Any, method: str) -> Any:
    """A callable for ``/inference.GRPCInferenceService/<method>`` on ``channel`` (sync or aio)."""
    req, resp = METHODS[method]
    msgs = messages()
    return channel.unary_unary(f"/{SERVICE}/{method}",
                               request_serializer=msgs[req].SerializeToString,
                               response_deserializer=msgs[resp].FromString)
