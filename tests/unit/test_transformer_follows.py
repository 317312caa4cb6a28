"""The transformer follows the predictor's model: describe at start, prepare for the model, re-prepare
after a refusal, give up (503) when the model keeps changing, learn unseen versions. The predictor is
a scripted stand-in for the gRPC client, so every branch is reached deterministically."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from kserve.protocol.infer_type import InferOutput, InferResponse

from tests.servers import IMAGES
from transformer.model import ImageTransformer
from transformer.settings import TransformerSettings
from yolo_contract import model_info as MI
from yolo_contract import tensors as T
from yolo_contract.errors import PredictorUnavailable

pytestmark = pytest.mark.unit

DOG = (IMAGES / "dog.jpg").read_bytes()  # 768 x 576
JPEG = {"content-type": "image/jpeg"}


def info(version: str, size: int = 416, preprocess: str = "letterbox", models=("yolov3",)) -> MI.ModelInfo:
    return MI.ModelInfo(name="yolov3", version=version, lineage="pjreddie", input_width=size, input_height=size,
                        preprocess=preprocess, classes=("dog",), confidence=0.5, iou_threshold=0.45, nms="agnostic",
                        beta_nms=0.6, models=tuple(models))


A = info("aaaaaaaaaaaa")
B = info("bbbbbbbbbbbb", 608, "resize")


def answer(version: str, n_images: int = 1) -> InferResponse:
    outs = []
    for name, arr, dtype in ((T.OUTPUT_DETECTIONS, np.zeros((n_images, 1, 6), np.float32), "FP32"),
                             (T.OUTPUT_COUNTS, np.zeros((n_images,), np.int32), "INT32"),
                             (T.OUTPUT_LABELS, np.full((n_images, 1), b"", dtype=object), "BYTES")):
        out = InferOutput(name, list(arr.shape), dtype)
        out.set_data_from_numpy(arr, binary_data=True)
        outs.append(out)
    return InferResponse(response_id="", model_name="yolov3", infer_outputs=outs, model_version=version)


def described(i: MI.ModelInfo) -> InferResponse:
    name, shape, datatype, data = MI.describe_output(i)
    out = InferOutput(name, shape, datatype)
    out.set_data_from_numpy(data, binary_data=True)
    return InferResponse(response_id="", model_name=i.name, infer_outputs=[out], model_version=i.version)


class ScriptedPredictor:
    """Answers calls in order from ``script``: an InferResponse, a ModelInfo (refuse with it) or a
    StatusCode (fail with it). Records what each call asked for."""

    def __init__(self, *script):
        self.script = list(script)
        self.calls: list[dict] = []

    async def infer(self, request, headers=None, timeout=None):
        inputs = {i.name: i for i in request.inputs}
        self.calls.append({
            "describe": MI.is_describe(request.parameters),
            "shape": list(inputs[T.INPUT_IMAGES].shape) if T.INPUT_IMAGES in inputs else None,
            "content": inputs[T.INPUT_CONTENT].as_numpy().tolist() if T.INPUT_CONTENT in inputs else None,
            "preprocess": (request.parameters or {}).get(T.PREPROCESS_PARAMETER),
        })
        step = self.script.pop(0)
        if isinstance(step, MI.ModelInfo):
            raise grpc.aio.AioRpcError(grpc.StatusCode.FAILED_PRECONDITION, details=MI.mismatch_message(step))
        if isinstance(step, grpc.StatusCode):
            raise grpc.aio.AioRpcError(step, details="")
        return step


def transformer(client: ScriptedPredictor, *known: MI.ModelInfo) -> ImageTransformer:
    model = ImageTransformer(TransformerSettings(predictor_host="p:1"))
    model.load()
    model.link._client = client
    model.registered = []
    model.link.register = model.registered.append
    for i in known:
        model.tracker.observe(i.version, i)
    return model


def detect(model: ImageTransformer):
    async def run():
        batch = await model.preprocess(DOG, JPEG)
        return model.postprocess(await model.predict(batch, JPEG), JPEG, {})

    return asyncio.run(run())


def test_requests_say_how_they_were_prepared():
    client = ScriptedPredictor(answer(A.version))
    model = transformer(client, A)
    assert detect(model)["predictions"][0]["image"] == {"width": 768, "height": 576}
    (call,) = client.calls
    assert call["shape"] == [1, 3, 416, 416] and call["preprocess"] == "letterbox"
    # Darknet's letterbox of 768x576 at 416: 416x312 pasted at y = (416-312)/2
    assert call["content"] == [[0.0, 52.0, 416.0, 312.0]]


def test_a_refusal_is_prepared_again_for_the_model_that_refused():
    client = ScriptedPredictor(B, answer(B.version))
    model = transformer(client, A)
    detect(model)
    assert [(c["shape"][2], c["preprocess"]) for c in client.calls] == [(416, "letterbox"), (608, "resize")]
    assert client.calls[1]["content"] == [[0.0, 0.0, 608.0, 608.0]]
    assert model.info == B  # followed the new model


def test_a_model_that_keeps_changing_gives_503_after_two_retries():
    client = ScriptedPredictor(B, A, B, answer(A.version))
    model = transformer(client, A)
    with pytest.raises(PredictorUnavailable) as e:
        detect(model)
    assert e.value.retry_after == 1 and len(client.calls) == 3


def test_an_unseen_version_is_described_in_the_background():
    a2 = info("cccccccccccc")  # same geometry: answered, but we have never seen its ModelInfo
    client = ScriptedPredictor(answer(a2.version), described(a2))

    async def run():
        batch = await model.preprocess(DOG, JPEG)
        await model.predict(batch, JPEG)
        await model._describing
    model = transformer(client, A)
    asyncio.run(run())
    assert [c["describe"] for c in client.calls] == [False, True]
    assert model.tracker.infos[a2.version] == a2


def test_start_describes_until_the_predictor_answers_and_mirrors_its_names():
    served = info("dddddddddddd", models=("tiny", "tiny608", "yolov3"))
    client = ScriptedPredictor(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, described(served),
                               described(served), described(served))
    model = transformer(client)
    assert model.info is None and not asyncio.run(model.healthy())

    async def start():
        await model.start_engine()
        await asyncio.gather(*(m._describing for m in model.registered))

    asyncio.run(start())
    assert model.info == served and asyncio.run(model.healthy())
    assert [m.name for m in model.registered] == ["tiny", "tiny608"]
    assert all(m.link is model.link and m.info == served for m in model.registered)
    assert [c["describe"] for c in client.calls] == [True] * 5
