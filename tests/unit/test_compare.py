"""``rollout compare`` (sdk_client.commands.compare), local form, against a loopback fake transformer
that answers as two models (picked by a header)."""

from __future__ import annotations

import json

import pytest

from sdk_client import DetectionResult
from sdk_client.cli import build_parser, main
from sdk_client.commands.compare import LabelsError, load_labels, run_compare, to_boxes
from tests.fakes import FakeTransformer

pytestmark = pytest.mark.unit


def det(cls: str, conf: float, x: float, y: float, w: float = 20, h: float = 20, class_id: int = 0) -> dict:
    return {"class": cls, "class_id": class_id, "confidence": conf, "x": x, "y": y, "width": w, "height": h}


#: What each fake model answers per image content: a list of detections or an HTTP status.
ANSWERS = {
    "a": {b"one": [det("dog", 0.9, 50, 50), det("cat", 0.7, 150, 50), det("cat", 0.1, 300, 300)],
          b"two": [det("car", 0.8, 50, 50)],
          b"three": [det("dog", 0.6, 50, 50)]},
    # "b": same on one (confidences shifted), misses the car on two and adds a bus, fails on three
    "b": {b"one": [det("dog", 0.8, 51, 50), det("cat", 0.75, 150, 50)],
          b"two": [det("bus", 0.9, 200, 200), det("car", 0.3, 50, 50)],
          b"three": 500},
}


def answer(headers, data: bytes) -> tuple[int, dict, dict]:
    """What the fake model named by the ``x-model`` header answers for one image (its version in
    ``x-model-version``, as the transformer names it; model "ab" answers as a or b by image)."""
    model = headers.get("x-model", "")
    if model == "ab":
        model = "a" if data == b"one" else "b"
    result = ANSWERS.get(model, {}).get(data, 404)
    if isinstance(result, int):
        return result, {"error": f"status {result}"}, {}
    return (200, {"predictions": [{"image": {"width": 400, "height": 400}, "detections": result}]},
            {"x-model-version": f"version-{model}"})


@pytest.fixture
def fake():
    server = FakeTransformer(answer)
    yield server
    server.close()


@pytest.fixture
def images(tmp_path):
    paths = []
    for name, content in (("one.jpg", b"one"), ("two.jpg", b"two"), ("three.jpg", b"three")):
        (tmp_path / name).write_bytes(content)
        paths.append(str(tmp_path / name))
    return paths


def parse(*argv: str):
    return build_parser().parse_args(["rollout", "compare", *argv])


def run(fake, tmp_path, images, *extra, canary_model="b"):
    out = tmp_path / "report.json"
    rc = main(["rollout", "compare", *images, "--stable-url", fake.url, "--canary-url", fake.url,
               "--stable-header", "x-model=a", "--canary-header", f"x-model={canary_model}", "--retries", "0",
               "-o", str(out), *extra])
    return rc, json.loads(out.read_text())


def test_report_of_two_endpoints(fake, tmp_path, images, capsys):
    rc, r = run(fake, tmp_path, images, "--max-error-rate", "0.5")
    assert rc == 0 and r["gate"]["passed"]
    # the canary failed on "three": compared = one, two
    assert r["images"] == {"total": 3, "compared": 2, "unreadable": []}
    assert (r["canary"]["requests"], r["canary"]["errors"], r["canary"]["error_rate"]) == (3, 1, round(1 / 3, 6))
    assert r["canary"]["error_samples"][0].startswith("ServerError")
    assert r["stable"]["errors"] == 0 and r["stable"]["latency_ms"]["n"] == 3
    # above 0.5: stable {dog, cat} + {car}; canary {dog (IoU 19*20/(2*400-380) = 0.905), cat} + {bus}
    # TP 2 (dog, cat), FP 1 (bus), FN 1 (car): precision 2/3, recall 2/3, F1 4/6
    a = r["agreement"]
    assert (a["tp"], a["fp"], a["fn"]) == (2, 1, 1)
    assert a["f1"] == round(2 / 3, 6) and a["precision"] == round(2 / 3, 6)
    assert a["mean_iou"] == round((380 / 420 + 1.0) / 2, 6)
    # shifts: dog 0.8 - 0.9, cat 0.75 - 0.7 -> mean -0.025
    assert a["confidence_shift"]["mean"] == pytest.approx(-0.025)
    # mAP@0.5: dog AP 1, cat AP 1, car: its canary box (0.3, IoU 1) ranks first -> AP 1; bus has no truth
    assert a["map50"] == 1.0
    assert a["per_class"]["car"] == {"stable": 1, "canary": 0, "matched": 0, "precision": None, "recall": 0.0,
                                     "f1": 0.0, "mean_confidence_stable": 0.8, "mean_confidence_canary": None}
    assert a["images_with_changes"] == 1 and a["worst_images"][0]["image"].endswith("two.jpg")
    assert (r["stable"]["detections"], r["canary"]["detections"]) == (3, 3)
    assert r["stable"]["images_without_detections"] == 0
    assert r["ground_truth"] is None
    # what went on the wire: every image to both, with the mAP confidence, headers passed through
    sent = {(q["headers"]["x-model"], q["image"]) for q in fake.requests}
    assert sent == {(m, c) for m in "ab" for c in (b"one", b"two", b"three")}
    assert {q["body"]["parameters"]["confidence"] for q in fake.requests} == {0.005}
    assert {q["path"] for q in fake.requests} == {"/v1/models/yolov3:predict"}
    table = capsys.readouterr().out
    assert "F1 0.667" in table and "gate: PASSED" in table and "car" in table
    assert r["settings"]["header_names"] == {"stable": ["x-model"], "canary": ["x-model"]}
    # who answered: one version per side (the canary's failed image names none)
    assert (r["stable"]["model_versions"], r["canary"]["model_versions"]) == ({"version-a": 3}, {"version-b": 2})
    assert r["notes"] == []
    assert "version-a" in table and "version-b" in table


def test_same_version_on_both_sides_is_noted(fake, tmp_path, images):
    rc, r = run(fake, tmp_path, images[:2], canary_model="a")
    assert rc == 0 and r["notes"] == ["both sides answered model version version-a: the same model files "
                                      "(or the same revision)"]


def test_a_side_answered_by_several_versions_fails_a_routed_compare(fake, tmp_path, images):
    # The cluster form passes routed endpoints: one revision per side. Two versions on one side
    # mean the header did not pick a revision (a transformer without --revision_header).
    from sdk_client.commands.compare import Endpoint

    args = parse(*images[:2], "--retries", "0", "-q", "-o", str(tmp_path / "r.json"))
    endpoints = [Endpoint("stable", fake.url, {"x-model": "a"}), Endpoint("canary", fake.url, {"x-model": "ab"})]
    assert run_compare(args, endpoints=endpoints, model="yolov3") == 1
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["canary"]["model_versions"] == {"version-a": 1, "version-b": 1}
    assert r["gate"]["reasons"] == ["canary was answered by 2 model versions (version-a, version-b): the "
                                    "requests were not routed to one revision"]
    # the same endpoints in the local form are just two endpoints: no such check
    rc, r = run(fake, tmp_path, images[:2], canary_model="ab")
    assert rc == 0 and r["gate"]["passed"]


def test_gate_exit_codes(fake, tmp_path, images):
    rc, r = run(fake, tmp_path, images)  # default --max-error-rate 0: the canary's 500 fails it
    assert rc == 1 and r["gate"]["reasons"] == ["canary error rate 0.3333 > 0"]
    rc, r = run(fake, tmp_path, images[:2], "--min-f1", "0.6")
    assert rc == 0
    rc, r = run(fake, tmp_path, images[:2], "--min-f1", "0.7")
    assert rc == 1 and r["gate"]["reasons"] == ["agreement F1 0.6667 < 0.7"]
    rc, r = run(fake, tmp_path, images[:2], "--min-f1", "0.99", canary_model="a")
    assert rc == 0 and r["agreement"]["f1"] == 1.0
    rc, r = run(fake, tmp_path, images[2:], "--max-error-rate", "1")
    assert rc == 1 and r["gate"]["reasons"] == ["no image was answered by both endpoints"]


def test_conf_is_applied_on_the_client(fake, tmp_path, images):
    # at 0.25 the canary's car (0.3) counts: TP 3, FP 1, FN 0
    rc, r = run(fake, tmp_path, images[:2], "--conf", "0.25", "--map-conf", "0.01")
    a = r["agreement"]
    assert (a["tp"], a["fp"], a["fn"]) == (3, 1, 0)
    assert {q["body"]["parameters"]["confidence"] for q in fake.requests} == {0.01}


def test_ground_truth_map_of_both(fake, tmp_path, images):
    labels = tmp_path / "yolo"
    labels.mkdir()
    # one.jpg: dog and cat where both models put them (class ids 0 and 1 on a 400x400 image)
    (labels / "one.txt").write_text("0 0.125 0.125 0.05 0.05\n1 0.375 0.125 0.05 0.05\n")
    rc, r = run(fake, tmp_path, images[:2], "--labels", str(labels))
    gt = r["ground_truth"]
    assert rc == 0 and gt["images"] == 2 and r["images"]["labelled"] == 2
    # Every fake detection has class_id 0, so only the dog box can match (class 1 AP = 0), and
    # two.jpg has no file: no object there.
    # stable, class 0 ranked: dog .9 TP (IoU 1), car .8, cat .7, cat .1 FP -> AP 1 at every IoU.
    assert (gt["stable"]["map50"], gt["stable"]["map50_95"]) == (0.5, 0.5)
    # canary, class 0 ranked: bus .9 FP, dog .8 TP (IoU 380/420 = 0.905), cat .75 FP, car .3 FP:
    # precision 1/2 at recall 1 -> AP 0.5 for IoU 0.5..0.9 (9 thresholds), 0 at 0.95 (dog is FP).
    # mAP@0.5 = (0.5 + 0) / 2; mAP@0.5:0.95 = (0.5 * 9/10 + 0) / 2
    assert (gt["canary"]["map50"], gt["canary"]["map50_95"]) == (0.25, 0.225)
    assert gt["stable"]["per_class"]["1"] == {"reference": 1, "detections": 0, "ap50": 0.0, "ap": 0.0}


def test_usage_errors(fake, tmp_path, images, capsys):
    urls = ("--stable-url", "x", "--canary-url", "y")
    assert main(["rollout", "compare", *images, "--stable-url", fake.url]) == 2
    assert main(["rollout", "compare", *images, *urls, "--map-conf", "0.6"]) == 2
    assert main(["rollout", "compare", str(tmp_path / "nope.jpg"), *urls]) == 2
    assert main(["rollout", "compare", *images, *urls, "--max-map-drop", "0.1"]) == 2
    assert main(["rollout", "compare", *images, *urls, "--labels", str(tmp_path / "no")]) == 2
    assert main(["rollout", "compare", *images, *urls, "--url", "z"]) == 2
    assert main(["rollout", "compare", *images, *urls, "--map-conf", "0.0001"]) == 2  # below the server's bound
    assert main(["rollout", "compare", "yolov3"]) == 2  # cluster form without images
    err = capsys.readouterr().err
    assert "give --stable-url and --canary-url (local form), or NAME first (cluster form)" in err
    assert "no such file" in err and "--url is for the cluster form" in err and "give NAME and IMAGES" in err
    assert not fake.requests
    with pytest.raises(SystemExit):
        parse(*images, "--stable-header", "novalue")


def test_the_top_level_compare_is_gone(capsys):
    assert main(["compare", "x.jpg", "--stable-url", "a", "--canary-url", "b"]) == 2
    assert "invalid choice: 'compare'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- labels


def _result(dets: list[dict]) -> DetectionResult:
    return DetectionResult.from_dict({"image": {"width": 400, "height": 200}, "detections": dets})


def test_coco_labels(tmp_path):
    doc = {"images": [{"id": 7, "file_name": "sub/one.jpg"}, {"id": 8, "file_name": "two.jpg"}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 20, 30, 40], "iscrowd": 0},
                           {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 400, 200], "iscrowd": 1}],
           "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(doc))
    truth, kind = load_labels(str(path), ["x/one.jpg", "two.jpg", "three.jpg"], [(400, 200)] * 3)
    assert kind == "coco"
    assert truth == [[(1, (10.0, 20.0, 40.0, 60.0))], [], None]  # crowd dropped; three.jpg not labelled
    person = _result([det("person", 0.9, 25, 40, 30, 40, class_id=0)])
    assert to_boxes(person, "coco", "coco91").classes == (1,)
    assert to_boxes(person, "coco", "index").classes == (0,)
    with pytest.raises(LabelsError, match="none of the images"):
        load_labels(str(path), ["other.jpg"], [(1, 1)])
    path.write_text("{")
    with pytest.raises(LabelsError, match="cannot read COCO labels"):
        load_labels(str(path), ["one.jpg"], [(1, 1)])


def test_yolo_labels(tmp_path):
    (tmp_path / "one.txt").write_text("2 0.5 0.25 0.5 0.1\n\n")
    truth, kind = load_labels(str(tmp_path), ["imgs/one.png", "imgs/two.png"], [(400, 200), (10, 10)])
    # centre (200, 50), size (200, 20) on a 400x200 image
    assert kind == "id" and truth == [[(2, (100.0, 40.0, 300.0, 60.0))], []]
    with pytest.raises(LabelsError, match="no <image stem>.txt"):
        load_labels(str(tmp_path), ["three.png"], [(1, 1)])
    (tmp_path / "bad.txt").write_text("1 0.5 0.5\n")
    with pytest.raises(LabelsError, match="bad.txt:1"):
        load_labels(str(tmp_path), ["bad.jpg"], [(1, 1)])
