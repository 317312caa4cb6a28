"""``yolo-kserve detect`` end to end against a real predictor + transformer (yolov3-tiny).

Detections must match pjreddie/darknet's own output for the same weights
(``tests/data/darknet-yolov3-tiny-t0.5.json``): the same classes per image, confidences within
0.02 and boxes with IoU >= 0.95, over REST v1, REST v2 and gRPC.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdk_client import Detection, DetectionResult
from sdk_client.annotate import class_color
from sdk_client.cli import main
from yolo_devtools.matching import match_reference

pytestmark = [pytest.mark.component, pytest.mark.model]

DATA = Path(__file__).resolve().parent.parent / "data"
IMAGES = DATA / "images"
IMAGE_NAMES = ("bird.jpg", "dog.jpg", "eagle.jpg", "horses.jpg", "person.jpg")
REFERENCE = DATA / "darknet-yolov3-tiny-t0.5.json"
GLOB = str(IMAGES / "*.jpg")
CONF_TOL = 0.02
MIN_IOU = 0.95


@pytest.fixture(scope="module")
def reference() -> dict:
    doc = json.loads(REFERENCE.read_text())
    assert doc["thresh"] == 0.5 and doc["nms"] == 0.45
    return doc


def url_for(stack, protocol: str) -> str:
    return stack.transformer_grpc if protocol == "grpc" else stack.transformer_url


def run_detect(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["detect", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def read_jsonl(path: Path) -> dict[str, dict]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_name = {Path(r["image"]).name: r for r in records}
    assert len(by_name) == len(records), "an image appears twice in the JSONL"
    return by_name


def assert_matches_reference(name: str, record: dict, reference: dict) -> None:
    """The shared pairing rule (``yolo_devtools.matching``): same labels, one-to-one pairs with
    |Δconf| <= 0.02 and IoU >= 0.95."""
    got = DetectionResult.from_dict(record)
    assert [record["width"], record["height"]] == reference["image_sizes"][name], name
    match_reference(got.to_triples(), reference["images"][name], CONF_TOL, MIN_IOU)
    for det in got.detections:  # the server's schema
        assert 0 <= det.class_id < 80 and 0.5 <= det.confidence <= 1.0


@pytest.mark.parametrize("protocol", ["v1", "v2", "v2-binary", "grpc"])
def test_detect_matches_darknet_reference(live_stack, reference, tmp_path, capsys, protocol):
    out = tmp_path / "out.jsonl"
    extra = ["--v2-binary"] if protocol == "v2-binary" else []
    protocol = protocol.removesuffix("-binary")
    rc, _, err = run_detect(capsys, GLOB, "--url", url_for(live_stack, protocol), "--protocol",
                            protocol, *extra, "--conf", "0.5", "--iou", "0.45", "-o", str(out),
                            "--concurrency", "3", "-q")
    assert rc == 0, err
    assert "5 ok, 0 failed" in err
    records = read_jsonl(out)
    assert sorted(records) == sorted(IMAGE_NAMES)
    for name, record in records.items():
        assert set(record) == {"image", "source", "width", "height", "detections", "parameters"}
        assert Path(record["image"]) == IMAGES / name and record["source"] == str(IMAGES / name)
        assert_matches_reference(name, record, reference)


def test_detect_annotated_coco_and_stdout(live_stack, reference, tmp_path, capsys):
    ann, coco = tmp_path / "annotated", tmp_path / "coco.json"
    rc, out, err = run_detect(capsys, GLOB, "--url", live_stack.transformer_url, "--conf", "0.5",
                              "--iou", "0.45", "--save-annotated", str(ann), "--coco", str(coco))
    assert rc == 0, err
    assert "5 ok, 0 failed" in err
    records = {Path(r["image"]).name: r for r in map(json.loads, out.splitlines())}
    assert sorted(records) == sorted(IMAGE_NAMES)  # JSONL on stdout without --output

    # annotated copies: same stems, same size, boxes drawn in the class colour
    assert sorted(p.name for p in ann.iterdir()) == sorted(IMAGE_NAMES)
    for name in IMAGE_NAMES:
        src = np.asarray(Image.open(IMAGES / name).convert("RGB")).astype(int)
        dst = np.asarray(Image.open(ann / name).convert("RGB")).astype(int)
        assert dst.shape == src.shape
        assert np.abs(dst - src).mean() > 1.0, f"{name}: annotated copy looks like the input"
        dets = DetectionResult.from_dict(records[name]).detections
        h, w = src.shape[:2]
        hits = 0
        for d in dets:
            x0, _, x1, y1 = d.xyxy
            x = int(round((max(0, x0) + min(w - 1, x1)) / 2))
            y = int(min(h - 1, y1)) - 1  # bottom edge: never under the box's own label
            if np.abs(dst[y, x] - np.array(class_color(d.class_id, d.class_name))).max() < 60:
                hits += 1
        assert hits >= 1, f"{name}: no box edge in the class colour"

    # COCO results list (pycocotools loadRes): official COCO category ids, images 1..5 in order
    doc = json.loads(coco.read_text())
    n_dets = sum(len(r["detections"]) for r in records.values())
    assert n_dets == sum(len(v) for v in reference["images"].values())
    assert isinstance(doc, list) and len(doc) == n_dets
    assert {a["image_id"] for a in doc} == {1, 2, 3, 4, 5}
    coco_ids = {"bird": 16, "dog": 18, "car": 3, "bicycle": 2, "truck": 8, "horse": 19,
                "person": 1, "cow": 21}
    names = [t[0] for name in sorted(IMAGE_NAMES) for t in sorted(
        reference["images"][name], key=lambda t: -t[1])]
    assert sorted(a["category_id"] for a in doc) == sorted(coco_ids[n] for n in names)
    for a in doc:
        assert set(a) == {"image_id", "category_id", "bbox", "score"}
        assert len(a["bbox"]) == 4 and a["bbox"][2] > 0 and a["bbox"][3] > 0
        assert 0.5 <= a["score"] <= 1.0


def test_resume_processes_only_missing_images(live_stack, reference, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    # a partial run: two images already done
    partial = []
    for name in ("bird.jpg", "dog.jpg"):
        triples = reference["images"][name]
        w, h = reference["image_sizes"][name]
        res = DetectionResult(str(IMAGES / name), w, h,
                              [Detection.from_triple(t) for t in triples])
        partial.append(json.dumps(res.to_record()))
    out.write_text("\n".join(partial) + "\n")

    rc, _, err = run_detect(capsys, GLOB, "--url", live_stack.transformer_url, "--conf", "0.5",
                            "--iou", "0.45", "-o", str(out), "--resume", "-q")  # the 2 records do not say their parameters: kept, with a warning
    assert rc == 0, err
    assert "3 ok, 0 failed, 2 skipped" in err
    records = read_jsonl(out)
    assert sorted(records) == sorted(IMAGE_NAMES)
    for name in ("eagle.jpg", "horses.jpg", "person.jpg"):
        assert_matches_reference(name, records[name], reference)

    # everything done: a second resume sends nothing
    rc, _, err = run_detect(capsys, GLOB, "--url", live_stack.transformer_url, "--conf", "0.5",
                            "--iou", "0.45", "-o", str(out), "--resume", "-q")
    assert rc == 0, err
    assert "0 ok, 0 failed, 5 skipped" in err
    assert len(out.read_text().splitlines()) == 5


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc"])
def test_parameters_reach_the_server(live_stack, tmp_path, capsys, protocol):
    """dog.jpg at 0.5: car .615, bicycle .585, dog .571, truck .558, car .517 (darknet)."""
    url = url_for(live_stack, protocol)
    out = tmp_path / "filtered.jsonl"
    rc, _, err = run_detect(capsys, str(IMAGES / "dog.jpg"), "--url", url, "--protocol", protocol,
                            "--conf", "0.5", "--classes", "dog,car", "--max-det", "2", "-o",
                            str(out), "-q")
    assert rc == 0, err
    (record,) = read_jsonl(out).values()
    assert [d["class"] for d in record["detections"]] == ["car", "dog"]

    out = tmp_path / "confident.jsonl"
    rc, _, err = run_detect(capsys, str(IMAGES / "dog.jpg"), "--url", url, "--protocol", protocol,
                            "--conf", "0.58", "-o", str(out), "-q")
    assert rc == 0, err
    (record,) = read_jsonl(out).values()
    assert [d["class"] for d in record["detections"]] == ["car", "bicycle"]


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc"])
def test_undecodable_image_is_reported_and_others_still_succeed(live_stack, tmp_path, capsys,
                                                                protocol):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG")
    out = tmp_path / "out.jsonl"
    rc, _, err = run_detect(capsys, str(broken), str(IMAGES / "dog.jpg"), "--url",
                            url_for(live_stack, protocol), "--protocol", protocol, "-o", str(out),
                            "-q")
    assert rc == 1
    assert "1 ok, 1 failed" in err
    assert f"FAILED {broken}: InvalidRequestError" in err
    assert "Traceback" not in err
    assert list(read_jsonl(out)) == ["dog.jpg"]
