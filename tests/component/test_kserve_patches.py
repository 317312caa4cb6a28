"""KServe patches pinned on the real servers: gRPC messages above KServe's 8 MiB default reach the model.

``serve()`` raises KServe's gRPC message caps (read from its import-time ``args``) to the component's
``--max_body_bytes``; without that patch these requests are refused with RESOURCE_EXHAUSTED before
any of our code runs. The requests are built to fail our own validation cheaply (no inference), so
the answer shows where they were stopped.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.constants.constants import MAX_GRPC_MESSAGE_LENGTH
from kserve.protocol.infer_type import InferInput, InferRequest

from yolo_contract import tensors as T

pytestmark = [pytest.mark.component, pytest.mark.model]

BIG = 64 * 1024 * 1024


def _large_request(component: str) -> InferRequest:
    if component == "predictor":  # one FP32 image of NaNs, 3 x 864 x 864 x 4 bytes
        arr = np.full((1, 3, 864, 864), np.nan, np.float32)
        inp = InferInput(T.INPUT_IMAGES, list(arr.shape), "FP32")
    else:  # one "encoded image" of zero bytes that is no image at all
        arr = np.array([b"\0" * (9 * 1024 * 1024)], dtype=object)
        inp = InferInput(T.INPUT_IMAGES, [1], "BYTES")
    inp.set_data_from_numpy(arr, binary_data=True)
    assert arr.nbytes > MAX_GRPC_MESSAGE_LENGTH or len(arr[0]) > MAX_GRPC_MESSAGE_LENGTH
    return InferRequest(model_name="yolov3", infer_inputs=[inp])


@pytest.mark.parametrize("component, refusal", [("predictor", "NaN"), ("transformer", "image")])
def test_grpc_messages_above_kserves_default_cap_reach_the_model(live_stack, component, refusal):
    target = getattr(live_stack, f"{component}_grpc")
    options = [("grpc.max_send_message_length", BIG), ("grpc.max_receive_message_length", BIG)]

    async def send():
        async with InferenceGRPCClient(target, timeout=60, retries=0, channel_args=options) as c:
            return await c.infer(_large_request(component))

    with pytest.raises(grpc.RpcError) as e:
        asyncio.run(send())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.value.code(), e.value.details())
    assert refusal in e.value.details()
