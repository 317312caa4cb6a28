"""Class filters and typed names: what a class_filter item means, and how a typo is answered."""

from __future__ import annotations

import pytest

from yolo_contract.classes import MAX_SHOWN, resolve_class_filter, shown, suggest
from yolo_contract.errors import BadRequest
from yolo_contract.tensors import coerce_parameters

pytestmark = pytest.mark.unit

COCO = ["person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat", "traffic light",
        "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog"]


def test_names_in_any_case_and_ids_select_classes():
    assert resolve_class_filter(("dog", "Car", "TRAFFIC LIGHT"), COCO) == (2, 9, 16)
    assert resolve_class_filter((16, "2", " 2"[1:]), COCO) == (2, 16)
    assert resolve_class_filter((), COCO) == ()


def test_a_name_wins_over_an_id_and_an_exact_case_over_a_folded_one():
    names = ["0", "cat", "Cat", "dog"]
    assert resolve_class_filter(("0",), names) == (0,)  # the class named "0", which is also id 0
    assert resolve_class_filter(("1",), names) == (1,)  # no class named "1": the id
    assert resolve_class_filter(("Cat",), names) == (2,)  # exact match first
    with pytest.raises(BadRequest, match=r'"CAT"'):  # ambiguous once folded
        resolve_class_filter(("CAT",), names)


def test_a_typo_names_itself_and_the_closest_classes():
    with pytest.raises(BadRequest) as e:
        resolve_class_filter(("dgo", "trafic light", "dog"), COCO, "yolov3")
    msg = e.value.message
    assert 'unknown classes "dgo" (did you mean "dog"?), "trafic light" (did you mean "traffic light"?)' in msg
    assert "not among this model's 17 classes" in msg and "ids 0-16" in msg and "GET /v2/models/yolov3" in msg


def test_ids_out_of_range_and_many_unknowns_are_bounded():
    with pytest.raises(BadRequest, match=r"class ids 17, -1 out of range"):
        resolve_class_filter((17, -1, 3), COCO)
    with pytest.raises(BadRequest) as e:
        resolve_class_filter(tuple(f"x{i}" for i in range(1000)), COCO)
    assert "and 995 more" in e.value.message and len(e.value.message) < 500


def test_client_text_is_shown_short_and_printable():
    assert shown("dgo") == '"dgo"'
    long = "A" * 1000
    assert shown(long) == '"' + "A" * MAX_SHOWN + '…"'
    assert shown('a"b\\c\n\x00') == '"a?b?c??"'
    with pytest.raises(BadRequest) as e:
        resolve_class_filter(("CANARY" * 50,), COCO)
    assert "CANARY" * 4 not in e.value.message


def test_suggestions():
    assert suggest("traffic", COCO)[0] == "traffic light"  # a prefix first
    assert suggest("persn", COCO)[0] == "person"
    assert suggest("zzzz", COCO) == []
    assert suggest("conf", ["confidence"], aliases={"conf": "confidence"}) == ["confidence"]


def test_coerce_keeps_names_and_ids_for_resolution():
    assert coerce_parameters({"class_filter": "dog, 16 ,,Car"})["class_filter"] == ("dog", "16", "Car")
    assert coerce_parameters({"class_filter": ["dog", 2]})["class_filter"] == ("dog", 2)
    assert coerce_parameters({"class_filter": 16})["class_filter"] == (16,)
    for bad in ([True], [1.5], {"a": 1}, [["dog"]]):
        with pytest.raises(BadRequest, match="class_filter"):
            coerce_parameters({"class_filter": bad})
