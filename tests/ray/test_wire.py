"""The Ray hop without a cluster: what crosses to a replica pickles, and arrives as it was sent;
errors keep their type; the replica class and the ingress's recording work in-process."""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
import pytest
from kserve.errors import InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from predictor import ray_serving
from predictor.darknet import ModelFormatError
from predictor.ray_wire import ReplicaFailure, WireError, WireRequest, WireResponse
from predictor.settings import PredictorSettings, parse_settings
from tests.servers import DATA
from tests.unit.test_repository import model
from yolo_contract import errors, model_info as MI, tensors as T
from prometheus_client import REGISTRY

pytestmark = [pytest.mark.unit, pytest.mark.ray]

DOG = np.rint(np.load(DATA / "dog_tensors" / "input.npy") * 255).astype(np.uint8)  # [1, 3, 416, 416]


def grpc_request(arr: np.ndarray, **params) -> InferRequest:
    """What KServe's gRPC servicer hands a model: ``InferRequest.from_grpc`` of a ModelInferRequest."""
    msg = pb.ModelInferRequest(model_name="yolov3", id="rid-7")
    msg.inputs.add(name=T.INPUT_IMAGES, datatype="UINT8", shape=list(arr.shape))
    msg.raw_input_contents.append(arr.tobytes())
    for key, value in params.items():
        field = {str: "string_param", bool: "bool_param", int: "int64_param"}[type(value)]
        setattr(msg.parameters[key], field, value)
    return InferRequest.from_grpc(msg)


def test_stock_grpc_request_cannot_be_pickled_but_its_wire_form_can():
    """The root cause of KServe's RayModel failing every gRPC call (scripts/ray_grpc_repro.py)."""
    req = grpc_request(DOG, confidence="0.25")
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(req)
    wire = pickle.loads(pickle.dumps(WireRequest.from_infer_request(req)))
    assert wire.inputs[0].raw is not None and wire.inputs[0].data is None
    assert wire.nbytes == DOG.nbytes


def test_grpc_request_arrives_intact_parameters_included():
    req = grpc_request(DOG, confidence="0.25", class_filter="dog,car", max_detections=7, describe=True,
                       preprocess="letterbox")
    back = pickle.loads(pickle.dumps(WireRequest.from_infer_request(req))).to_infer_request()
    assert back.id == "rid-7" and back.model_name == "yolov3" and back.from_grpc
    assert back.parameters == {"confidence": "0.25", "class_filter": "dog,car", "max_detections": 7, "describe": True,
                               "preprocess": "letterbox"}
    assert T.coerce_parameters(back.parameters) == T.coerce_parameters(req.parameters)
    (inp,) = back.inputs
    assert (inp.name, inp.datatype, list(inp.shape)) == (T.INPUT_IMAGES, "UINT8", list(DOG.shape))
    np.testing.assert_array_equal(inp.as_numpy(), DOG)
    assert back.use_binary_outputs == req.use_binary_outputs is True


def test_rest_json_tensor_travels_as_raw_bytes_not_a_list():
    x = np.arange(2 * 3 * 32 * 32, dtype=np.float32).reshape(2, 3, 32, 32) / 7
    rest = InferRequest("yolov3", [InferInput(T.INPUT_IMAGES, list(x.shape), "FP32", data=x.ravel().tolist())],
                        parameters={"confidence": 0.3, "binary_data_output": True})
    wire = WireRequest.from_infer_request(rest)
    assert wire.inputs[0].data is None and len(wire.inputs[0].raw) == x.nbytes
    back = pickle.loads(pickle.dumps(wire)).to_infer_request()
    np.testing.assert_array_equal(back.inputs[0].as_numpy(), x)
    assert not back.from_grpc and back.use_binary_outputs is True and back.parameters["confidence"] == 0.3


@pytest.mark.parametrize(
    "inp",
    [
        InferInput(T.INPUT_IMAGES, [1, 3, 32, 32], "UINT8", data=[0, 1]),  # count mismatch
        InferInput(T.INPUT_IMAGES, [1, 3, 32, 32], "FP32", data=["x"]),  # type mismatch
        InferInput(T.INPUT_IMAGES, [1], "BYTES", data=["aGVsbG8="]),  # not an image tensor at all
    ],
    ids=["count", "type", "bytes"],
)
def test_data_that_does_not_convert_travels_as_sent_and_fails_the_same_way(inp):
    original = InferRequest("yolov3", [inp])
    back = pickle.loads(pickle.dumps(WireRequest.from_infer_request(original))).to_infer_request()
    assert back.inputs[0].data == list(inp.data)

    def outcome(request):
        try:
            return ("ok", request.inputs[0].as_numpy().tolist())
        except Exception as e:
            return (type(e).__name__, None)

    assert outcome(back) == outcome(original)


def _response(binary: bool) -> InferResponse:
    dets = np.arange(12, dtype=np.float32).reshape(1, 2, 6)
    labels = np.array([[b"dog", b""]], dtype=object)
    outs = []
    for name, arr, dt in (("detections", dets, "FP32"), ("counts", np.array([1], np.int32), "INT32"), ("labels", labels, "BYTES")):
        o = InferOutput(name, list(arr.shape), dt)
        o.set_data_from_numpy(arr, binary_data=binary)
        outs.append(o)
    r = InferResponse(response_id="rid-7", model_name="yolov3", infer_outputs=outs, use_binary_outputs=binary)
    r.parameters = {T.SERVER_TIMING_PARAMETER: "predictor-total;dur=1.000"}
    return r


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_response_round_trip_serialises_like_the_original(binary):
    original = _response(binary)
    wire = pickle.loads(pickle.dumps(WireResponse.from_infer_response(original)))
    assert wire.binary is binary
    back = wire.to_infer_response()
    assert back.to_grpc() == original.to_grpc()
    assert back.to_rest() == original.to_rest()


@pytest.mark.parametrize(
    "exc",
    [
        errors.BadRequest("input \"images\" must have shape [N,3,H,W]"),
        errors.Overloaded("predictor queue is full (64 images); retry later", retry_after=1),
        errors.PreprocessMismatch('{"name":"yolov3","preprocess":"letterbox"}'),
        InvalidInput("the predictor speaks the v2 protocol"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_client_errors_keep_their_type_message_and_retry_after(exc):
    rebuilt = pickle.loads(pickle.dumps(WireError.from_exception(exc))).exception()
    assert type(rebuilt) is type(exc)
    assert str(rebuilt) == str(exc)
    assert getattr(rebuilt, "retry_after", None) == getattr(exc, "retry_after", None)
    assert getattr(rebuilt, "status_code", None) == getattr(exc, "status_code", None)


def test_unexpected_errors_become_a_fixed_internal_failure():
    assert WireError.from_exception(ZeroDivisionError("secret internals")) is None
    failure = WireError("internal", "").exception()
    assert isinstance(failure, ReplicaFailure) and "secret" not in str(failure)


def test_ray_outage_errors_map_to_503s_and_code_errors_do_not():
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
    from ray.serve.exceptions import BackPressureError

    dead = ray_serving._replica_unavailable(ActorDiedError())
    assert isinstance(dead, errors.PredictorUnavailable) and dead.retry_after == 1 and dead.http_status == 503
    assert "Actor" not in dead.message
    assert isinstance(ray_serving._replica_unavailable(ActorUnavailableError("restarting", b"0" * 16)), errors.PredictorUnavailable)
    busy = ray_serving._replica_unavailable(BackPressureError(num_queued_requests=3, max_queued_requests=2))
    assert isinstance(busy, errors.Overloaded) and busy.retry_after == 1
    try:
        raise ValueError("bug")
    except ValueError as e:
        code_error = RayTaskError("infer", "traceback", e)
    assert ray_serving._replica_unavailable(code_error) is None
    assert ray_serving._replica_unavailable(KeyError("x")) is None


@pytest.mark.parametrize(
    "args, ok",
    [
        (["--ray_replicas", "4", "--ray_num_gpus", "0.25", "--ray_num_cpus", "1"], True),
        (["--ray_replicas", "2", "--ray_address", "ray://head:10001"], True),
        (["--ray_address", "ray://head:10001"], False),  # joining needs replicas
        (["--ray_replicas", "2", "--ray_num_gpus", "1.5"], False),  # Ray: fractions only below 1
        (["--ray_replicas", "2", "--ray_num_cpus", "0"], False),
        (["--ray_replicas", "2", "--device", "cuda"], False),  # Ray hides GPUs from num_gpus=0 actors
        (["--ray_replicas", "2", "--ray_object_store_mb", "10"], False),
        (["--ray_replicas", "-1"], False),
    ],
)
def test_ray_flags_are_checked(args, ok, capsys):
    if ok:
        s = parse_settings(args)
        assert s.ray_replicas == int(args[1])
    else:
        with pytest.raises(SystemExit):
            parse_settings(args)
        err = capsys.readouterr().err
        assert "--ray" in err or "--device" in err


def test_replica_threads_are_its_cpu_share_unless_set():
    assert ray_serving.replica_threads(PredictorSettings(ray_replicas=2, ray_num_cpus=1)) == 1
    assert ray_serving.replica_threads(PredictorSettings(ray_replicas=2, ray_num_cpus=1.5)) == 2
    assert ray_serving.replica_threads(PredictorSettings(ray_replicas=2, ray_num_cpus=0.5)) == 1
    assert ray_serving.replica_threads(PredictorSettings(ray_replicas=2, ray_num_cpus=1, threads=3)) == 3


# ------------------------------------------------------------------ replica + ingress, in-process


@pytest.fixture(scope="module")
def replica(tiny_model_dir):
    """The deployment body, constructed directly (no Ray); its metrics recorder is undone after."""
    import predictor.model as model_module

    real = model_module.METRICS
    try:
        yield ray_serving.YoloReplica(PredictorSettings(model_dir=str(tiny_model_dir), ray_replicas=2, ray_num_cpus=1))
    finally:
        model_module.METRICS = real


def test_replica_answers_like_the_predictor_and_returns_what_it_observed(replica, references):
    info = replica.info()
    assert info.threads == 1 and len(info.names) == 80
    assert info.input_types[0]["name"] == T.INPUT_IMAGES
    req = WireRequest.from_infer_request(grpc_request(np.concatenate([DOG, DOG]), confidence="0.5"))
    reply = asyncio.run(replica.infer(pickle.loads(pickle.dumps(req)), "rid-7"))
    reply = pickle.loads(pickle.dumps(reply))
    assert reply.error is None and reply.pid == info.pid
    out = {o.name: o for o in reply.response.to_infer_response().outputs}
    counts = out[T.OUTPUT_COUNTS].as_numpy()
    ref = references["0.5"]["images"]["dog.jpg"]
    assert counts.tolist() == [len(ref)] * 2
    assert [v.decode() for v in out[T.OUTPUT_LABELS].as_numpy()[0][: counts[0]]] == [r[0] for r in ref]
    obs = reply.observation
    # one [K, 6] detection array per image, the same rows the response carries
    assert [r.shape for r in obs.rows] == [(len(ref), 6)] * 2
    assert obs.version == replica.model.info.version and obs.revision == ""
    assert reply.response.model_version == replica.model.info.version
    assert {"queue", "inference", "nms", "total"} <= set(obs.timings)
    assert sum(reply.engine_batches) == 2  # both images went through the engine, in one or two calls


def test_replica_returns_client_errors_as_values(replica):
    bad = WireRequest.from_infer_request(grpc_request(DOG, class_filter="unicorn"))
    reply = asyncio.run(replica.infer(bad, ""))
    assert reply.response is None and reply.error.kind == "BadRequest"
    assert "not among this model's 80 classes" in reply.error.message
    reply = asyncio.run(replica.infer({"instances": [1]}, ""))  # a v1 body: refused as by the plain predictor
    assert reply.error.kind == "InvalidInput"
    unknown = asyncio.run(replica.infer(WireRequest.from_infer_request(grpc_request(DOG, conf="0.3")), ""))
    assert unknown.error.kind == "BadRequest" and 'unknown parameter "conf"' in unknown.error.message


def test_a_preprocess_mismatch_comes_back_as_409_with_the_models_info(replica):
    info = replica.model.info
    req = WireRequest.from_infer_request(grpc_request(DOG, preprocess="resize" if info.preprocess == "letterbox" else "letterbox"))
    reply = pickle.loads(pickle.dumps(asyncio.run(replica.infer(req, ""))))
    exc = reply.error.exception()
    assert isinstance(exc, errors.PreprocessMismatch) and exc.http_status == 409
    assert MI.read_mismatch_message(exc.message) == info
    ok = asyncio.run(replica.infer(WireRequest.from_infer_request(grpc_request(DOG, preprocess=info.preprocess)), ""))
    assert ok.error is None


def test_the_describe_exchange_crosses_the_hop(replica):
    """What the transformer sends at start (no inputs, describe=true) gets the replica's ModelInfo."""
    msg = pb.ModelInferRequest(model_name="yolov3", id="d-1")
    msg.parameters[T.DESCRIBE_PARAMETER].bool_param = True
    req = WireRequest.from_infer_request(InferRequest.from_grpc(msg))
    reply = pickle.loads(pickle.dumps(asyncio.run(replica.infer(req, "d-1"))))
    assert reply.error is None and reply.observation is None  # not inference: nothing to record
    response = reply.response.to_infer_response()
    assert MI.read_describe_output({o.name: o.as_numpy() for o in response.outputs}) == replica.model.info
    assert response.model_version == replica.model.info.version
    assert response.to_grpc().model_version == replica.model.info.version


def test_metadata_of_the_ingress_is_the_replicas(replica):
    info = pickle.loads(pickle.dumps(replica.info()))
    assert info.metadata == replica.model.metadata_extra()
    assert info.metadata["parameters"]["version"] == replica.model.info.version
    ingress = ray_serving.RayPredictor(PredictorSettings(ray_replicas=2), cluster=None)
    assert ingress.metadata_extra() == {}  # before load: KServe's own document only
    ingress.replica = info
    assert ingress.metadata_extra() == replica.model.metadata_extra()


def test_a_model_repository_is_refused_with_ray(tmp_path):
    for name in ("a", "b"):
        model(tmp_path / name)
    with pytest.raises(ModelFormatError, match="model repository .*--ray_replicas"):
        ray_serving.single_model_files(PredictorSettings(model_dir=str(tmp_path), ray_replicas=2))
    files = ray_serving.single_model_files(PredictorSettings(model_dir=str(tmp_path / "a"), ray_replicas=2))
    assert files.weights.name.endswith(".weights")


def test_a_metrics_name_the_replica_does_not_handle_fails_its_start(monkeypatch):
    import predictor.model as model_module

    source = "METRICS.inflight METRICS.observe_predictor METRICS.batch_size METRICS.observe_output"
    monkeypatch.setattr(ray_serving.inspect, "getsource", lambda module: source)
    monkeypatch.setattr(model_module, "METRICS", model_module.METRICS)
    with pytest.raises(RuntimeError, match="observe_output"):
        ray_serving._install_replica_metrics()


def test_ingress_records_the_replicas_observation_with_a_ray_stage(replica):
    req = WireRequest.from_infer_request(grpc_request(DOG, confidence="0.25"))
    reply = asyncio.run(replica.infer(req, ""))
    ingress = ray_serving.RayPredictor(PredictorSettings(ray_replicas=2), cluster=None)
    ingress.replica = replica.info()

    def sample(name: str, **labels) -> float:
        return REGISTRY.get_sample_value(name, {"model_name": "yolov3", **labels}) or 0.0

    version = replica.model.info.version
    stages = ("inference", "nms", "ray", "total")
    before = {s: sample("yolo_stage_seconds_count", component="predictor", stage=s) for s in stages}
    dogs = sample("yolo_detections_total", component="predictor", class_name="dog", model_version=version, revision="")
    batches = sample("yolo_engine_batch_size_count")
    timings = ingress._record(reply, total=reply.seconds + 0.004)
    assert list(timings)[-2:] == ["ray", "total"] and abs(timings["ray"] - 0.004) < 1e-9
    for s in stages:
        assert sample("yolo_stage_seconds_count", component="predictor", stage=s) == before[s] + 1
    assert sample("yolo_detections_total", component="predictor", class_name="dog", model_version=version,
                  revision="") == dogs + 1
    assert sample("yolo_engine_batch_size_count") == batches + len(reply.engine_batches) >= batches + 1


def test_a_call_waiting_for_a_replica_is_answered_503_when_none_runs():
    """Ray holds a call while no replica runs; the ingress answers it as soon as it sees the outage."""

    async def scenario():
        ingress = ray_serving.RayPredictor(PredictorSettings(ray_replicas=2), cluster=None)
        ingress._outage = asyncio.Event()
        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        answered.set_result("reply")
        assert await ingress._reply(answered) == "reply"
        held = loop.create_future()  # never answered, like a call queued in Ray's router
        waiting = asyncio.create_task(ingress._reply(held))
        ingress._outage.set()
        with pytest.raises(errors.PredictorUnavailable) as e:
            await waiting
        assert e.value.retry_after == 1 and held.cancelled()

    asyncio.run(scenario())
