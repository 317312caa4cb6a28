"""ModelInfo, the describe exchange codec, mismatch messages and the transformer's ModelTracker."""

from __future__ import annotations

import json

import numpy as np
import pytest

from yolo_contract import model_info as MI
from yolo_contract import tensors as T

pytestmark = pytest.mark.unit

COCO = tuple(f"class{i}" for i in range(80))


def info(**over) -> MI.ModelInfo:
    base = dict(name="yolov3", version="0123456789ab", lineage="pjreddie", input_width=416, input_height=416,
                preprocess="letterbox", classes=COCO, confidence=0.5, iou_threshold=0.45, nms="agnostic",
                beta_nms=0.6, models=("yolov3",))
    return MI.ModelInfo(**{**base, **over})


def test_dict_and_json_round_trips_keep_every_field():
    a = info(name="tiny608", lineage="alexeyab", input_width=640, input_height=384, preprocess="resize",
             confidence=0.25, nms="diou", beta_nms=0.55, models=("tiny", "tiny608", "yolov3"))
    doc = a.to_dict()
    assert set(doc) == {"name", "version", "lineage", "input_width", "input_height", "preprocess", "classes",
                        "confidence", "iou_threshold", "nms", "beta_nms", "models"}
    assert doc["classes"] == list(COCO) and doc["models"] == ["tiny", "tiny608", "yolov3"]
    assert MI.ModelInfo.from_dict(doc) == a
    assert MI.ModelInfo.from_json(a.to_json()) == a
    assert MI.ModelInfo.from_json(a.to_json().encode()) == a
    assert json.loads(a.to_json()) == doc  # plain JSON, nothing Python-specific
    assert a.size == (640, 384)


def test_unknown_keys_are_ignored_and_ints_become_floats():
    doc = {**info().to_dict(), "added_by_a_newer_predictor": {"x": 1}, "confidence": 1, "iou_threshold": 0}
    got = MI.ModelInfo.from_dict(doc)
    assert got.confidence == 1.0 and isinstance(got.confidence, float) and got.iou_threshold == 0.0


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"lineage": "ultralytics"}, "lineage"),
        ({"preprocess": "crop"}, "preprocess"),
        ({"nms": "soft"}, "nms"),
        ({"input_width": 0}, "input sizes"),
        ({"input_height": "416"}, "input sizes"),
        ({"input_width": True}, "input sizes"),
        ({"confidence": 1.5}, "confidence"),
        ({"beta_nms": "0.6"}, "beta_nms"),
        ({"classes": "person,car"}, "classes"),
        ({"classes": [1, 2]}, "classes"),
        ({"models": [None]}, "models"),
        ({"version": ""}, "version"),
        ({"name": 3}, "name"),
    ],
)
def test_from_dict_refuses_malformed_documents(change, fragment):
    with pytest.raises(ValueError, match=fragment):
        MI.ModelInfo.from_dict({**info().to_dict(), **change})


def test_from_dict_names_missing_fields_and_refuses_non_objects():
    doc = info().to_dict()
    del doc["preprocess"], doc["classes"]
    with pytest.raises(ValueError, match="missing preprocess, classes"):
        MI.ModelInfo.from_dict(doc)
    for bad in ([], "x", None):
        with pytest.raises(ValueError):
            MI.ModelInfo.from_dict(bad)
    with pytest.raises(ValueError, match="not JSON"):
        MI.ModelInfo.from_json("{oops")


def test_describe_parameters_are_recognised_in_every_wire_form():
    assert MI.is_describe(MI.describe_parameters())
    assert MI.is_describe({T.DESCRIBE_PARAMETER: "true"}) and MI.is_describe({T.DESCRIBE_PARAMETER: "TRUE"})
    assert MI.is_describe({T.DESCRIBE_PARAMETER: 1})

    class GrpcParam:  # duck-typed InferParameter, as plain_value unwraps it
        def __init__(self, value):
            self.bool_param = value

        def WhichOneof(self, _):
            return "bool_param"

    assert MI.is_describe({T.DESCRIBE_PARAMETER: GrpcParam(True)})
    assert not MI.is_describe({T.DESCRIBE_PARAMETER: GrpcParam(False)})
    for params in (None, {}, {"confidence": 0.5}, {T.DESCRIBE_PARAMETER: "false"}, {T.DESCRIBE_PARAMETER: 0}, "describe"):
        assert not MI.is_describe(params)


def test_describe_output_round_trip():
    a = info()
    name, shape, datatype, data = MI.describe_output(a)
    assert (name, shape, datatype) == (T.OUTPUT_MODEL_INFO, [1], "BYTES")
    assert data.dtype == object and data.shape == (1,) and isinstance(data[0], bytes)
    assert MI.read_describe_output({name: data}) == a
    # as a REST client sees it (JSON strings, not bytes)
    assert MI.read_describe_output({name: np.array([data[0].decode()], dtype=object)}) == a
    with pytest.raises(ValueError, match="no"):
        MI.read_describe_output({"detections": data})
    with pytest.raises(ValueError, match="exactly one"):
        MI.read_describe_output({name: np.array([data[0], data[0]], dtype=object)})


def test_mismatch_message_is_the_model_info_and_drops_classes_when_too_long():
    small = info()
    assert MI.read_mismatch_message(MI.mismatch_message(small)) == small
    big = info(classes=tuple(f"a-rather-long-class-name-{i}" for i in range(9000)))
    text = MI.mismatch_message(big)
    assert len(text.encode()) <= MI.MAX_MISMATCH_MESSAGE
    got = MI.read_mismatch_message(text)
    assert got.classes == () and got.size == big.size and got.version == big.version
    assert MI.read_mismatch_message("predictor exploded") is None


# ------------------------------------------------------------------------------------------------
# ModelTracker: which model to prepare for when one or two revisions answer


def test_tracker_starts_empty_and_follows_its_first_description():
    t = MI.ModelTracker()
    assert t.current() is None
    assert t.observe("a", info(version="a")) is False
    assert t.current().version == "a"
    assert t.observe("a") is False  # known version answered


def test_tracker_follows_a_replacement_after_one_refusal():
    """A new revision took all the traffic: the first call refused by it is retried for it."""
    t = MI.ModelTracker()
    for _ in range(50):
        t.observe("a", info(version="a"))
    t.observe("b", info(version="b", input_width=608, input_height=608))
    assert t.current().version == "b"
    for _ in range(20):  # b answers everything from now on
        t.observe("b")
    assert t.current().version == "b" and t.share["a"] < 0.2 < 0.8 < t.share["b"]


def test_tracker_remembers_a_bounded_number_of_versions():
    t = MI.ModelTracker(max_versions=3)
    for v in "abcde":
        t.observe(v, info(version=v))
    assert sorted(t.infos) == ["c", "d", "e"] and t.current().version == "e"


def test_tracker_keeps_the_majority_during_a_canary():
    """A known minority version does not take over from an occasional refusal."""
    t = MI.ModelTracker()
    t.observe("a", info(version="a"))
    t.observe("b", info(version="b", preprocess="resize"))  # first contact with the canary: try it
    assert t.current().version == "b"
    t.observe("a", info(version="a"))  # the next call landed on the stable revision
    assert t.current().version == "a"
    pattern = ["a"] * 9 + ["b"]  # a 10 % canary, the minority answering now and then
    for v in pattern * 10:
        t.observe(v, info(version=v, preprocess="resize" if v == "b" else "letterbox"))
        assert t.current().version == "a"


def test_tracker_asks_for_a_description_of_unknown_or_incomplete_versions():
    t = MI.ModelTracker()
    t.observe("a", info(version="a"))
    assert t.observe("c") is True  # answered, but we have no ModelInfo for it
    assert t.current().version == "a"  # cannot prepare for an unknown model
    assert t.observe("d", info(version="d", classes=())) is True  # a shortened mismatch message
    assert t.current().version == "d"
    assert t.observe("d", info(version="d")) is False  # the describe filled in the classes
    assert t.infos["d"].classes == COCO
    with pytest.raises(ValueError):
        t.observe("e", info(version="f"))
