"""``rollout compare`` and the gated ``rollout canary`` against real servers.

Beside the session ``live_stack`` (yolov3-tiny at 416, version = its files' hash) this module starts
two predictors and one transformer:

* a predictor with generated weights (same cfg and names): another version, the same geometry;
* a predictor of the real yolov3-tiny served at 320 (``--input_size 320 --model_version tiny-320``);
* a transformer routing by ``x-model-revision`` as in the manifests, with its tag hosts given
  explicitly (``--revision_hosts``): ``prev`` = the live predictor, ``latest`` = the 320 one; its
  predictor route (no header) is the random-weights predictor. So one transformer answers as three
  models, each described and prepared for on its own.

The cluster forms run against the loopback Kubernetes API double (tests/kube_api.py) whose
InferenceService ``status.url`` is that transformer. Ground truth for ``--labels`` is pjreddie
Darknet's own output (``tests/data/darknet-yolov3-tiny-t0.5.json``), as COCO JSON and as YOLO
``.txt`` files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from predictor import darknet
from sdk_client import DetectionClient
from sdk_client.cli import main
from tests.kube_api import NAME, KubeApiDouble, seed_isvc, write_kubeconfig
from tests.observe import metric, scrape
from tests.servers import DATA, IMAGE_NAMES, IMAGES, predictor, transformer

pytestmark = [pytest.mark.component, pytest.mark.model]

REFERENCE = DATA / "darknet-yolov3-tiny-t0.5.json"
READY = "/v2/models/yolov3/ready"
HEADER = "x-model-revision"
SMALL = "tiny-320"
#: The Knative revision the 320 predictor says it is (in a pod: $K_REVISION; here its --revision flag).
SMALL_REVISION = "yolov3-predictor-00002"


@pytest.fixture(scope="module")
def routed(live_stack, tiny_model_dir, tmp_path_factory):
    """``{"url", "transformer", "random", "small"}``: the routing transformer and the two predictors."""
    tmp = tmp_path_factory.mktemp("canaries")
    model = tmp / "random"
    model.mkdir()
    shutil.copy(DATA / "cfg" / "yolov3-tiny.cfg", model / "yolov3-tiny.cfg")
    shutil.copy(Path(tiny_model_dir) / "coco.names", model / "coco.names")
    darknet.write_random_weights(darknet.parse_cfg(model / "yolov3-tiny.cfg"), model / "yolov3-tiny.weights", seed=13)
    servers = []
    try:
        rand = predictor(tmp, model, "--threads", "1").start()
        servers.append(rand)
        small = predictor(tmp, tiny_model_dir, "--threads", "1", "--input_size", "320", "--model_version", SMALL,
                          "--revision", SMALL_REVISION).start()
        servers.append(small)
        rand.wait_ready(READY)
        small.wait_ready(READY)
        router = transformer(tmp, rand.grpc_target, "--revision_header", HEADER, "--revision_hosts",
                             f"prev={live_stack.predictor_grpc},latest={small.grpc_target}").start()
        servers.append(router)
        router.wait_ready(READY)
        yield {"url": router.url, "transformer": router, "random": rand, "small": small}
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


@pytest.fixture(scope="module")
def cluster(routed, tmp_path_factory):
    """The Kubernetes API double with a canary in progress whose status.url is the routing transformer,
    and a kubeconfig for it."""
    api = KubeApiDouble()
    obj = seed_isvc(canary=10)
    obj["status"]["url"] = routed["url"]
    api.seed(obj)
    kubeconfig = write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig", api.url)
    yield api, str(kubeconfig)
    api.close()


def compare(tmp_path: Path, *argv: str) -> tuple[int, dict]:
    out = tmp_path / f"report-{len(list(tmp_path.iterdir()))}.json"
    rc = main(["rollout", "compare", *argv, "-q", "-o", str(out)])
    return rc, json.loads(out.read_text())


@pytest.fixture(scope="module")
def reports(live_stack, routed, cluster, darknet_labels, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports")
    coco, yolo = darknet_labels
    stable = live_stack.transformer_url
    _, kubeconfig = cluster
    return {
        "same": compare(tmp, str(IMAGES), "--stable-url", stable, "--canary-url", stable, "--min-f1", "0.99",
                        "--labels", str(coco)),
        "random": compare(tmp, str(IMAGES), "--stable-url", stable, "--canary-url", routed["url"], "--min-f1", "0.5"),
        # the cluster form: prev (the live predictor) vs latest (320) through the routing transformer
        "size320": compare(tmp, NAME, str(IMAGES), "--kubeconfig", kubeconfig, "--labels", str(yolo)),
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
    (version,) = r["stable"]["model_versions"]
    assert r["canary"]["model_versions"] == {version: len(IMAGE_NAMES)} and len(version) == 12
    assert r["notes"] and version in r["notes"][0]
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
    assert set(r["canary"]["model_versions"]).isdisjoint(r["stable"]["model_versions"])


def test_smaller_input_size_agrees_partly_through_the_revision_tags(reports, live_stack):
    f1_same, f1_random = reports["same"][1]["agreement"]["f1"], reports["random"][1]["agreement"]["f1"]
    rc, r = reports["size320"]
    a, gt = r["agreement"], r["ground_truth"]
    print(f"\n320 vs 416: agreement F1 {a['f1']} (P {a['precision']}, R {a['recall']}), mAP@0.5 {a['map50']}, "
          f"mean IoU {a['mean_iou']}; vs Darknet labels mAP@0.5:0.95 stable {gt['stable']['map50_95']} "
          f"canary {gt['canary']['map50_95']}")
    assert rc == 0  # no gate asked for
    assert r["settings"]["revisions"] == {"prev": "yolov3-predictor-00001", "latest": "yolov3-predictor-00002"}
    stable_version = next(iter(reports["same"][1]["stable"]["model_versions"]))
    # each side answered by its revision alone: the routing worked
    assert r["stable"]["model_versions"] == {stable_version: len(IMAGE_NAMES)}
    assert r["canary"]["model_versions"] == {SMALL: len(IMAGE_NAMES)}
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


# ------------------------------------------------------------------------------------------------
# the model identity of every answer


def test_each_answer_names_the_model_version_and_tag_that_answered(routed, reports):
    dog = (IMAGES / "dog.jpg").read_bytes()
    url = routed["url"] + "/v1/models/yolov3:predict"
    seen = {}
    for tag in ("stable", "canary", None):
        headers = {"content-type": "image/jpeg", "x-request-id": f"identity-{tag}"}
        if tag:
            headers[HEADER] = tag
        r = httpx.post(url, content=dog, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        assert r.headers["x-model-name"] == "yolov3"
        assert r.headers.get(HEADER) == {"stable": "prev", "canary": "latest", None: None}[tag]
        assert r.headers.get("x-predictor-revision") == (SMALL_REVISION if tag == "canary" else None)
        seen[tag] = r.headers["x-model-version"]
    assert seen["canary"] == SMALL and len({*seen.values()}) == 3
    # ... and the transformer's access line says the same
    log = routed["transformer"].log()
    line = next(ln for ln in log.splitlines() if "yolo_kserve.access" in ln and " identity-canary POST " in ln)
    assert f" model=yolov3 version={SMALL} tag=latest revision={SMALL_REVISION} 200 " in line
    # gRPC: the header travels as metadata, the version comes back in the response
    with DetectionClient(routed["transformer"].grpc_target, protocol="grpc", headers={HEADER: "canary"}) as c:
        assert c.detect(IMAGES / "dog.jpg").model_version == SMALL
    bad = httpx.post(url, content=dog, headers={"content-type": "image/jpeg", HEADER: "green"}, timeout=60)
    assert bad.status_code == 400 and HEADER in bad.json()["error"]


def test_two_versions_are_told_apart_in_a_live_metrics_endpoint(routed, reports):
    stable_version = next(iter(reports["same"][1]["stable"]["model_versions"]))
    text = scrape(routed["url"])
    per_version = {v: metric(text, "yolo_images_total", component="transformer", model_name="yolov3", model_version=v)
                   for v in (stable_version, SMALL)}
    # the cluster-form compare sent every image once to each revision through this transformer
    assert all(n >= len(IMAGE_NAMES) for n in per_version.values()), per_version
    assert metric(text, "yolo_detection_confidence_count", component="transformer", model_version=SMALL) > 0
    assert metric(text, "yolo_input_image_pixels_count", model_name="yolov3", model_version=SMALL) >= len(IMAGE_NAMES)
    assert metric(text, "yolo_images_total", component="transformer", model_version=SMALL,
                 revision=SMALL_REVISION) == per_version[SMALL]
    small = scrape(routed["small"].url)
    assert metric(small, "yolo_images_total", component="predictor", model_version=SMALL,
                 revision=SMALL_REVISION) >= len(IMAGE_NAMES)
    assert metric(small, "yolo_images_total", component="predictor", model_version=stable_version) == 0


# ------------------------------------------------------------------------------------------------
# the gated rollout, each step analysed on the real revisions


def test_gated_rollout_promotes_when_every_step_passes_and_rolls_back_when_one_fails(cluster, reports, capsys):
    api, kubeconfig = cluster
    base = ["rollout", "canary", NAME, "--kubeconfig", kubeconfig, "--analyze", str(IMAGES), "--poll-interval",
            "0.05", "--timeout", "30"]
    # 320 agrees with 416 at F1 ~0.6 (test_smaller_input_size...): a 0.5 bar passes, a 0.9 bar does not
    n = len(api.writes())
    assert main([*base, "--steps", "10,50,100", "--storage-uri", "gs://models/yolov3-320/1", "--min-f1", "0.5"]) == 0
    out = capsys.readouterr().out
    assert [w["body"]["spec"]["predictor"]["canaryTrafficPercent"] for w in api.writes()[n:]] == [10, 50, None]
    assert out.count("gate passed") == 2 and "promoted" in out

    n = len(api.writes())
    assert main([*base, "--steps", "10,100", "--storage-uri", "gs://models/yolov3-320/2", "--min-f1", "0.9"]) == 1
    out = capsys.readouterr().out
    assert [w["body"]["spec"]["predictor"]["canaryTrafficPercent"] for w in api.writes()[n:]] == [10, 0]
    assert "gate FAILED: agreement F1 0.6" in out and "rolled back: canaryTrafficPercent 10 -> 0" in out
