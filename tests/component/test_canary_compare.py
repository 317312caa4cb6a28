"""``rollout compare`` against real stacks: yolov3-tiny vs itself, vs random weights, vs 320 input.

Beside the session ``live_stack`` (yolov3-tiny at 416) this module starts one predictor with
generated weights (same cfg and names) and two transformers: one in front of it, one letterboxing
to 320 in front of the live predictor (the predictor accepts any multiple of 32). Ground truth for
the ``--labels`` runs is pjreddie Darknet's own output (``tests/data/darknet-yolov3-tiny-t0.5.json``),
as COCO JSON and as YOLO ``.txt`` files.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from predictor import darknet
from sdk_client import DetectionClient
from sdk_client.commands.compare import add_compare_arguments, run_compare
from tests.servers import DATA, IMAGE_NAMES, IMAGES, predictor, transformer

pytestmark = [pytest.mark.component, pytest.mark.model]

REFERENCE = DATA / "darknet-yolov3-tiny-t0.5.json"
READY = "/v2/models/yolov3/ready"


@pytest.fixture(scope="module")
def canaries(live_stack, tiny_model_dir, tmp_path_factory):
    """``{"random": url, "size320": url}``: transformers of the two other models."""
    tmp = tmp_path_factory.mktemp("canaries")
    model = tmp / "random"
    model.mkdir()
    shutil.copy(DATA / "cfg" / "yolov3-tiny.cfg", model / "yolov3-tiny.cfg")
    shutil.copy(Path(tiny_model_dir) / "coco.names", model / "coco.names")
    darknet.write_random_weights(darknet.parse_cfg(model / "yolov3-tiny.cfg"), model / "yolov3-tiny.weights", seed=13)
    servers = []
    try:
        rand_pred = predictor(tmp, model, "--threads", "1").start()
        servers.append(rand_pred)
        small = transformer(tmp, live_stack.predictor_grpc, "--input_size", "320").start()
        servers.append(small)
        rand_pred.wait_ready(READY)
        rand = transformer(tmp, rand_pred.grpc_target).start()
        servers.append(rand)
        small.wait_ready(READY)
        rand.wait_ready(READY)
        yield {"random": rand.url, "size320": small.url}
    finally:
        for s in reversed(servers):
            s.stop()


@pytest.fixture(scope="module")
def darknet_labels(tmp_path_factory):
    """Darknet's detections at 0.5 as ground truth: ``(coco_json_path, yolo_txt_dir)``."""
    ref = json.loads(REFERENCE.read_text())
    names = (DATA / "coco.names").read_text().split("\n")
    tmp = tmp_path_factory.mktemp("labels")
    images, anns = [], []
    (tmp / "yolo").mkdir()
    for image_id, name in enumerate(IMAGE_NAMES, 1):
        w, h = ref["image_sizes"][name]
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        lines = []
        for label, _conf, (cx, cy, bw, bh) in ref["images"][name]:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": names.index(label),
                         "bbox": [cx - bw / 2, cy - bh / 2, bw, bh], "area": bw * bh, "iscrowd": 0})
            lines.append(f"{names.index(label)} {cx / w} {cy / h} {bw / w} {bh / h}")
        (tmp / "yolo" / (Path(name).stem + ".txt")).write_text("\n".join(lines) + "\n")
    coco = tmp / "darknet.json"
    coco.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": i, "name": n} for i, n in enumerate(names) if n]}))
    return coco, tmp / "yolo"


def compare(tmp_path, stable: str, canary: str, *extra: str) -> tuple[int, dict]:
    parser = argparse.ArgumentParser()
    add_compare_arguments(parser)
    out = tmp_path / f"report-{len(list(tmp_path.iterdir()))}.json"
    args = parser.parse_args([str(IMAGES), "--stable-url", stable, "--canary-url", canary, "-q", "-o", str(out),
                              *extra])
    rc = run_compare(args)
    return rc, json.loads(out.read_text())


@pytest.fixture(scope="module")
def reports(live_stack, canaries, darknet_labels, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports")
    coco, yolo = darknet_labels
    stable = live_stack.transformer_url
    return {
        "same": compare(tmp, stable, stable, "--min-f1", "0.99", "--labels", str(coco)),
        "random": compare(tmp, stable, canaries["random"], "--min-f1", "0.5"),
        "size320": compare(tmp, stable, canaries["size320"], "--labels", str(yolo)),
    }


def test_same_model_agrees_fully_and_matches_darknet_labels(reports):
    rc, r = reports["same"]
    assert rc == 0 and r["gate"] == {"passed": True, "reasons": [], "min_f1": 0.99, "max_error_rate": 0.0,
                                     "max_map_drop": None}
    a = r["agreement"]
    assert r["images"]["compared"] == len(IMAGE_NAMES)
    assert (a["f1"], a["precision"], a["recall"], a["map50"], a["mean_iou"]) == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert a["fp"] == a["fn"] == 0 and a["tp"] == r["stable"]["detections"] > 0
    assert r["stable"]["errors"] == r["canary"]["errors"] == 0
    assert r["stable"]["latency_ms"]["n"] == len(IMAGE_NAMES) and r["stable"]["latency_ms"]["p95"] > 0
    # Darknet's own detections as ground truth: every box found (IoU >= 0.95 is the parity bar)
    gt = r["ground_truth"]
    assert gt["images"] == len(IMAGE_NAMES)
    for side in ("stable", "canary"):
        assert gt[side]["map50"] == 1.0, gt[side]
        assert gt[side]["map50_95"] >= 0.99, gt[side]


def test_random_weights_disagree_and_fail_the_gate(reports):
    rc, r = reports["random"]
    print(f"\nrandom weights: agreement F1 {r['agreement']['f1']}, mAP@0.5 {r['agreement']['map50']}")
    assert rc == 1 and not r["gate"]["passed"]
    assert r["gate"]["reasons"][0].startswith("agreement F1 ")
    assert r["agreement"]["f1"] < 0.2 and r["agreement"]["map50"] < 0.2
    assert r["canary"]["errors"] == 0  # a wrong model, not a broken endpoint


def test_smaller_input_size_agrees_partly(reports):
    f1_same, f1_random = reports["same"][1]["agreement"]["f1"], reports["random"][1]["agreement"]["f1"]
    rc, r = reports["size320"]
    a, gt = r["agreement"], r["ground_truth"]
    print(f"\n320 vs 416: agreement F1 {a['f1']} (P {a['precision']}, R {a['recall']}), mAP@0.5 {a['map50']}, "
          f"mean IoU {a['mean_iou']}; vs Darknet labels mAP@0.5:0.95 stable {gt['stable']['map50_95']} "
          f"canary {gt['canary']['map50_95']}")
    assert rc == 0  # no gate asked for
    assert f1_random < a["f1"] < f1_same
    assert 0 < a["map50"] < 1 and a["images_with_changes"] > 0 and a["worst_images"]
    assert gt["stable"]["map50"] == 1.0 and gt["canary"]["map50_95"] < gt["stable"]["map50_95"]


def test_filtering_a_low_confidence_answer_gives_the_served_one(live_stack):
    # The design of compare: one request at --map-conf, filtered at --conf on the client.
    extra = 0
    with DetectionClient(live_stack.transformer_url) as client:
        for name in IMAGE_NAMES:
            served = client.detect(IMAGES / name)  # the server's default confidence, 0.5
            low = client.detect(IMAGES / name, confidence=0.005)
            kept = [d for d in low.detections if d.confidence > 0.5]
            extra += len(low.detections) - len(kept)
            assert sorted(kept, key=repr) == sorted(served.detections, key=repr), name
    assert extra > 0  # the low threshold did add boxes below 0.5
