"""``rollout canary --steps ... --analyze ...`` and ``rollout compare NAME`` against the loopback
Kubernetes API double (tests/kube_api.py: strict CRD validation of every write, a fake controller
that creates revisions and sets their traffic and tags as KServe does) whose ``status.url`` is a
fake transformer (tests/fakes.py) answering as the ``prev`` or the ``latest`` revision, picked by
the ``x-model-revision`` header, as the real transformer routes (tests/component/test_canary_compare.py
runs the same against real servers)."""

from __future__ import annotations

import json

import pytest

from sdk_client.cli import main
from tests.fakes import FakeTransformer
from tests.kube_api import NAME, NS, KubeApiDouble, merge_patch, seed_isvc, write_kubeconfig
from tests.kube_schema import load_isvc_validator

pytestmark = pytest.mark.unit

HEADER = "x-model-revision"
DOG = {"class": "dog", "class_id": 16, "confidence": 0.9, "x": 100, "y": 100, "width": 50, "height": 40}
CAT = {**DOG, "class": "cat", "class_id": 15, "x": 300}


class Revisions:
    """What the two revisions answer; ``canary`` may depend on the canary's current percent."""

    def __init__(self, api: KubeApiDouble):
        self.api = api
        self.canary = lambda percent: (200, [DOG])

    def answer(self, headers, data: bytes):
        tag = headers.get(HEADER, "")
        if tag == "prev":
            status, dets, version = 200, [DOG], "stable-0001"
        elif tag == "latest":
            percent = self.api.stored()["spec"]["predictor"].get("canaryTrafficPercent")
            (status, dets), version = self.canary(percent), "canary-0002"
        else:
            return 400, {"error": "the analysis always names a revision"}
        if status != 200:
            return status, {"error": "canary broken"}
        doc = {"predictions": [{"image": {"width": 640, "height": 480}, "detections": dets}]}
        return 200, doc, {"x-model-version": version}


@pytest.fixture
def api():
    double = KubeApiDouble()
    yield double
    double.close()


@pytest.fixture
def revisions(api):
    r = Revisions(api)
    fake = FakeTransformer(r.answer)
    r.fake = fake
    yield r
    fake.close()


@pytest.fixture
def kubeconfig(api, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return str(write_kubeconfig(tmp_path / "kubeconfig", api.url))


@pytest.fixture
def images(tmp_path):
    paths = []
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(name.encode())
        paths.append(str(tmp_path / name))
    return paths


def seed(api: KubeApiDouble, url: str, canary: int | None = None, **changes) -> dict:
    obj = seed_isvc(canary)
    obj["status"]["url"] = url
    for key, value in changes.items():
        obj = merge_patch(obj, {key: value})
    api.seed(obj)
    return obj


def rollout(capsys, kubeconfig, *argv):
    rc = main(["rollout", *argv, "--kubeconfig", kubeconfig])
    out, err = capsys.readouterr()
    return rc, out, err


def gated(capsys, kubeconfig, images, *extra):
    return rollout(capsys, kubeconfig, "canary", NAME, "--steps", "10,50,100", "--analyze", *images,
                   "--min-f1", "0.9", "--retries", "0", "--timeout", "10", "--poll-interval", "0.05", *extra)


def written(api: KubeApiDouble) -> list:
    """The predictor part of every write, in order (each one passed strict validation)."""
    validate = load_isvc_validator()
    assert validate({k: v for k, v in api.stored().items() if k != "status"}) == []
    return [w["body"]["spec"]["predictor"] for w in api.writes()]


def asked(revisions: Revisions) -> list[str]:
    return [q["headers"].get(HEADER) for q in revisions.fake.requests]


def test_a_passing_analysis_walks_every_step_and_promotes(api, revisions, kubeconfig, images, capsys, tmp_path):
    seed(api, revisions.fake.url)
    rc, out, err = gated(capsys, kubeconfig, images, "--storage-uri", "gs://models/yolov3/2",
                         "--report-dir", str(tmp_path / "reports"))
    assert rc == 0, err
    steps = written(api)
    assert [s["canaryTrafficPercent"] for s in steps] == [10, 50, None]  # None: removed (promote)
    assert steps[0]["containers"][0]["env"] == [{"name": "STORAGE_URI", "value": "gs://models/yolov3/2"}]
    assert api.writes()[0]["body"]["metadata"]["resourceVersion"] == "1001"  # the container change is guarded
    assert all(set(w["body"]["spec"]) == {"predictor"} for w in api.writes())
    final = api.stored()
    assert "canaryTrafficPercent" not in final["spec"]["predictor"]
    pred = final["status"]["components"]["predictor"]
    assert pred["latestRolledoutRevision"] == "yolov3-predictor-00003" and pred["traffic"][0]["percent"] == 100
    # an analysis at 10 % and at 50 %: both images on both revisions, named by the header
    assert sorted(asked(revisions)) == ["latest"] * 4 + ["prev"] * 4
    assert out.count("gate passed") == 2 and "promoted" in out
    assert "step 10%: F1 1.000 on 2 images" in out and "step 50%" in out
    report = json.loads((tmp_path / "reports" / "step-50.json").read_text())
    assert report["settings"]["revisions"] == {"prev": "yolov3-predictor-00002", "latest": "yolov3-predictor-00003"}
    assert report["stable"]["model_versions"] == {"stable-0001": 2}
    assert report["canary"]["model_versions"] == {"canary-0002": 2}


def test_a_failing_analysis_rolls_back_at_once(api, revisions, kubeconfig, images, capsys):
    seed(api, revisions.fake.url)
    revisions.canary = lambda percent: (200, [CAT])  # another class where stable has a dog
    rc, out, err = gated(capsys, kubeconfig, images, "--storage-uri", "gs://models/yolov3/2")
    assert rc == 1
    assert [s["canaryTrafficPercent"] for s in written(api)] == [10, 0]
    assert "step 10%: F1 0.000 on 2 images, errors stable 0/2 canary 0/2: gate FAILED: agreement F1 0 < 0.9" in out
    assert "rolled back: canaryTrafficPercent 10 -> 0, all traffic to the last rolled-out revision " \
           "(yolov3-predictor-00002)" in out
    assert "promoted" not in out
    traffic = api.stored()["status"]["components"]["predictor"]["traffic"]
    assert [(t["tag"], t["percent"]) for t in traffic] == [("latest", 0), ("prev", 100)]


def test_errors_of_the_canary_fail_the_gate_at_the_step_where_they_start(api, revisions, kubeconfig, images, capsys):
    seed(api, revisions.fake.url)
    revisions.canary = lambda percent: (503, []) if percent >= 50 else (200, [DOG])
    rc, out, _ = gated(capsys, kubeconfig, images, "--image", "registry.example.com/p:2", "--max-error-rate", "0.4")
    assert rc == 1
    assert [s["canaryTrafficPercent"] for s in written(api)] == [10, 50, 0]
    assert "step 50%: F1 - on 0 images, errors stable 0/2 canary 2/2: gate FAILED: no image was answered by " \
           "both endpoints; canary error rate 1 > 0.4" in out


def test_a_rerun_resumes_the_canary_in_progress(api, revisions, kubeconfig, images, capsys):
    seed(api, revisions.fake.url, canary=10)
    rc, out, err = gated(capsys, kubeconfig, images)
    assert rc == 0, err
    assert [s["canaryTrafficPercent"] for s in written(api)] == [50, None]
    assert "containers" not in api.writes()[0]["body"]["spec"]["predictor"]
    # at 100 % straight after a resumed last step, what runs now is judged first
    api.seed(seed_isvc(50) | {"status": {**seed_isvc(50)["status"], "url": revisions.fake.url}})
    n = len(api.writes())
    rc, out, _ = gated(capsys, kubeconfig, images)
    assert rc == 0 and "step 50%" in out and "gate passed" in out
    assert [w["body"]["spec"]["predictor"] for w in api.writes()[n:]] == [{"canaryTrafficPercent": None}]


def test_a_step_that_does_not_become_ready_is_rolled_back(api, revisions, kubeconfig, images, capsys):
    seed(api, revisions.fake.url)
    api.controller = False  # the new generation is never observed
    rc, out, err = gated(capsys, kubeconfig, images, "--storage-uri", "gs://models/yolov3/2", "--timeout", "0.3")
    assert rc == 1
    assert [s["canaryTrafficPercent"] for s in written(api)] == [10, 0]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "step 10% could not be completed (timed out after 0.3s" in lines[0]
    assert "rolled back" in lines[0] and revisions.fake.requests == []


def test_what_the_analysis_needs_is_checked_before_any_write(api, revisions, kubeconfig, images, capsys):
    no_tags = seed_isvc()
    del no_tags["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"]
    api.seed(no_tags)
    rc, _, err = gated(capsys, kubeconfig, images, "--storage-uri", "gs://m/2")
    assert rc == 1 and "serving.kserve.io/enable-tag-routing" in err and len(err.strip().splitlines()) == 1
    plain = seed_isvc()
    args = plain["spec"]["transformer"]["containers"][0]["args"]
    del args[args.index("--revision_header"):args.index("--revision_header") + 2]
    api.seed(plain)
    rc, _, err = gated(capsys, kubeconfig, images, "--storage-uri", "gs://m/2")
    assert rc == 1 and "add --revision_header x-model-revision to its args" in err
    assert api.writes() == []


@pytest.mark.parametrize("argv, message", [
    (["--steps", "10,50"], "--steps needs --analyze"),
    (["--percent", "10", "--analyze", "IMG"], "--analyze goes with --steps"),
    (["--steps", "50,10", "--analyze", "IMG"], "--steps: steps must increase strictly"),
    (["--steps", "100", "--analyze", "IMG", "--storage-uri", "gs://m/2"], "needs a step below 100"),
    (["--steps", "10,100", "--analyze", "IMG"], "no canary in progress"),
    (["--steps", "10,100", "--analyze", "nope.jpg"], "no such file"),
    (["--steps", "10,100", "--analyze", "IMG", "--map-conf", "0.9"], "--map-conf 0.9 is above --conf 0.5"),
])
def test_usage_errors_send_nothing(api, revisions, kubeconfig, images, capsys, argv, message):
    seed(api, revisions.fake.url)
    argv = [images[0] if a == "IMG" else a for a in argv]
    rc, _, err = rollout(capsys, kubeconfig, "canary", NAME, *argv)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert api.writes() == [] and revisions.fake.requests == []


def test_dry_run_shows_the_plan_and_the_patches(api, revisions, kubeconfig, images, capsys):
    before = seed(api, revisions.fake.url)
    rc, out, err = gated(capsys, kubeconfig, images, "--storage-uri", "gs://m/2", "--dry-run")
    assert rc == 0, err
    plan = json.loads(out)
    assert [s["percent"] for s in plan["steps"]] == [10, 50, 100]
    assert plan["steps"][1]["patch"] == {"spec": {"predictor": {"canaryTrafficPercent": 50}}}
    assert plan["steps"][2] == {"percent": 100, "patch": {"spec": {"predictor": {"canaryTrafficPercent": None}}},
                                "then": "promote"}
    assert "compare prev and latest on 2 images (gate: F1 >= 0.9, error rate <= 0)" in plan["steps"][0]["then"]
    assert plan["on_failure"] == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}
    validate = load_isvc_validator()
    assert validate(merge_patch({k: v for k, v in before.items() if k != "status"}, plan["steps"][0]["patch"])) == []
    assert "10% -> 50% -> promote" in err and api.writes() == [] and revisions.fake.requests == []


def test_dry_run_needs_no_cluster(tmp_path, monkeypatch, images, capsys):
    from tests.kube_api import MANIFEST

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    base = ["rollout", "canary", NAME, "-n", NS, "--steps", "10,100", "--analyze", *images, "--dry-run"]
    assert main([*base, "--storage-uri", "gs://m/2", "--manifest", str(MANIFEST)]) == 0
    out, err = capsys.readouterr()
    assert [s["percent"] for s in json.loads(out)["steps"]] == [10, 100] and "no write" not in err
    assert "nothing sent" in err
    assert main(base) == 0  # resuming: every step planned
    assert main([*base, "--storage-uri", "gs://m/2"]) == 1  # the containers are unknown offline
    assert "--manifest" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# rollout compare NAME: the cluster form


def test_compare_by_name_asks_the_two_revisions_through_the_transformer(api, revisions, kubeconfig, images,
                                                                        capsys, tmp_path):
    seed(api, revisions.fake.url, canary=10)
    out_file = tmp_path / "r.json"
    rc, out, err = rollout(capsys, kubeconfig, "compare", NAME, *images, "-q", "-o", str(out_file), "--min-f1", "1")
    assert rc == 0, err
    r = json.loads(out_file.read_text())
    assert r["settings"]["inferenceservice"] == f"{NS}/{NAME}" and r["settings"]["revision_header"] == HEADER
    assert r["settings"]["revisions"] == {"prev": "yolov3-predictor-00001", "latest": "yolov3-predictor-00002"}
    assert r["stable"]["url"] == r["canary"]["url"] == revisions.fake.url
    assert sorted(asked(revisions)) == ["latest", "latest", "prev", "prev"]
    assert {q["path"] for q in revisions.fake.requests} == {f"/v1/models/{NAME}:predict"}
    assert api.writes() == []


def test_compare_by_name_through_an_ingress_sends_the_services_host(api, revisions, kubeconfig, images, capsys):
    seed(api, "http://yolov3.vision.example.com", canary=10)
    rc, _, err = rollout(capsys, kubeconfig, "compare", NAME, *images, "-q", "--url", revisions.fake.url)
    assert rc == 0, err
    assert {q["headers"]["host"] for q in revisions.fake.requests} == {"yolov3.vision.example.com"}


def test_compare_by_name_without_a_canary_is_one_clear_line(api, revisions, kubeconfig, images, capsys):
    seed(api, revisions.fake.url)  # latest only: no prev tag
    rc, _, err = rollout(capsys, kubeconfig, "compare", NAME, *images)
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "no canary to compare" in err and "has no prev tag" in err
    assert revisions.fake.requests == []


def test_a_refused_first_write_is_not_rolled_back(api, revisions, kubeconfig, images, capsys):
    seed(api, revisions.fake.url)

    def racing_writer(current):  # someone else changed the object since it was read
        current["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 7)

    api.before_write = racing_writer
    rc, _, err = gated(capsys, kubeconfig, images, "--storage-uri", "gs://models/yolov3/2")
    assert rc == 1 and "conflict" in err and len(err.strip().splitlines()) == 1
    assert len(api.writes()) == 1 and api.stored()["spec"] == seed_isvc()["spec"]  # no rollback patch
