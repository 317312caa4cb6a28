"""``yolo-kserve rollout`` against the loopback Kubernetes API test double (``tests/kube_api.py``),
reached through a generated kubeconfig, passed with ``--kubeconfig`` or ``KUBECONFIG``."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from sdk_client.cli import main
from sdk_client.commands.rollout import RolloutError, canary_patch, is_ready
from tests.kube_api import NAME, NS, KubeApiDouble, json_patch, merge_patch, seed_isvc, write_kubeconfig
from tests.kube_schema import load_isvc_validator

pytestmark = pytest.mark.unit


@pytest.fixture
def api():
    double = KubeApiDouble()
    double.seed(seed_isvc())
    yield double
    double.close()


@pytest.fixture
def kubeconfig(api, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config of the machine
    return write_kubeconfig(tmp_path / "kubeconfig", api.url)


def run_cli(capsys, *argv):
    rc = main(["rollout", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles):
    assert rc != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def assert_valid(obj: dict) -> None:
    validate = load_isvc_validator()
    assert validate(obj) == [], validate(obj)


def predictor_container(obj: dict) -> dict:
    return next(c for c in obj["spec"]["predictor"]["containers"] if c["name"] == "kserve-container")


def storage_uri(obj: dict) -> str | None:
    env = predictor_container(obj).get("env") or []
    return next((e.get("value") for e in env if e["name"] == "STORAGE_URI"), None)


# ------------------------------------------------------------------------------------------
# tests


def test_seed_is_valid_strict():
    assert_valid(seed_isvc())
    assert_valid(seed_isvc(canary=10))


def test_canary_with_storage_uri(api, kubeconfig, capsys):
    before = api.stored()
    rc, out, err = run_cli(capsys, "canary", NAME, "--kubeconfig", str(kubeconfig), "--percent",
                           "10", "--storage-uri", "gs://example-models/yolov3-tiny/2")
    assert rc == 0, err
    assert "canaryTrafficPercent - -> 10" in out and "gs://example-models/yolov3-tiny/2" in out

    after = api.stored()
    assert after["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert storage_uri(after) == "gs://example-models/yolov3-tiny/2"
    # everything else of the predictor container is preserved
    b, a = predictor_container(before), predictor_container(after)
    assert {k: v for k, v in a.items() if k != "env"} == {k: v for k, v in b.items() if k != "env"}
    assert after["spec"]["transformer"] == before["spec"]["transformer"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert_valid(after)

    (write,) = api.writes()
    assert write["method"] == "PATCH"
    assert write["content_type"] == "application/merge-patch+json"
    assert write["query"].get("fieldValidation") == ["Strict"]
    assert write["body"]["metadata"] == {"resourceVersion": before["metadata"]["resourceVersion"]}
    assert set(write["body"]["spec"]) == {"predictor"}


def test_canary_with_image_via_kubeconfig_env(api, kubeconfig, monkeypatch, capsys):
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    rc, out, err = run_cli(capsys, "canary", NAME, "--percent", "25", "--image",
                           "registry.example.com/vision/yolov3-predictor:0.2.0")
    assert rc == 0, err
    after = api.stored()
    assert after["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert predictor_container(after)["image"] == "registry.example.com/vision/yolov3-predictor:0.2.0"
    assert storage_uri(after) == storage_uri(seed_isvc())
    assert_valid(after)


def test_canary_ramp_changes_only_the_percent(api, kubeconfig, capsys):
    api.seed(seed_isvc(canary=10))
    rc, out, err = run_cli(capsys, "canary", NAME, "--kubeconfig", str(kubeconfig),
                           "--percent", "50")
    assert rc == 0, err
    (write,) = api.writes()
    assert write["body"] == {"spec": {"predictor": {"canaryTrafficPercent": 50}}}
    after = api.stored()
    assert after["spec"]["predictor"]["canaryTrafficPercent"] == 50
    assert after["spec"]["predictor"]["containers"] == seed_isvc()["spec"]["predictor"]["containers"]
    assert_valid(after)


def test_promote_removes_canary_percent(api, kubeconfig, capsys):
    api.seed(seed_isvc(canary=10))
    rc, out, err = run_cli(capsys, "promote", NAME, "--kubeconfig", str(kubeconfig))
    assert rc == 0, err
    (write,) = api.writes()
    assert write["content_type"] == "application/merge-patch+json"
    assert write["body"] == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    after = api.stored()
    assert "canaryTrafficPercent" not in after["spec"]["predictor"]
    assert after["spec"]["predictor"]["containers"] == seed_isvc()["spec"]["predictor"]["containers"]
    assert_valid(after)
    assert "removed" in out


def test_rollback_sets_zero(api, kubeconfig, capsys):
    api.seed(seed_isvc(canary=30))
    rc, out, err = run_cli(capsys, "rollback", NAME, "--kubeconfig", str(kubeconfig))
    assert rc == 0, err
    after = api.stored()
    assert after["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert_valid(after)
    assert "30 -> 0" in out


def test_full_cycle_canary_promote_then_rollback(api, kubeconfig, capsys):
    kc = ["--kubeconfig", str(kubeconfig)]
    assert run_cli(capsys, "canary", NAME, *kc, "--percent", "10", "--storage-uri", "s3://m/v2")[0] == 0
    assert api.stored()["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert run_cli(capsys, "promote", NAME, *kc)[0] == 0
    assert "canaryTrafficPercent" not in api.stored()["spec"]["predictor"]
    assert storage_uri(api.stored()) == "s3://m/v2"
    assert run_cli(capsys, "canary", NAME, *kc, "--percent", "20", "--storage-uri", "s3://m/v3")[0] == 0
    assert run_cli(capsys, "rollback", NAME, *kc)[0] == 0
    final = api.stored()
    assert final["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert storage_uri(final) == "s3://m/v3"
    assert_valid(final)
    assert len(api.writes()) == 4


@pytest.mark.parametrize("action", [
    ["canary", "--percent", "10", "--storage-uri", "gs://x/y"],
    ["promote"],
    ["rollback"],
])
def test_dry_run_prints_body_and_sends_no_write(api, kubeconfig, capsys, action):
    api.seed(seed_isvc(canary=10))
    before = api.stored()
    rc, out, err = run_cli(capsys, action[0], NAME, *action[1:], "--kubeconfig", str(kubeconfig),
                           "--dry-run")
    assert rc == 0, err
    body = json.loads(out)
    assert api.writes() == []
    assert [r["method"] for r in api.log] == ["GET"]
    assert api.stored() == before
    assert "dry run" in err
    if action[0] == "canary":
        assert body["spec"]["predictor"]["canaryTrafficPercent"] == 10
        assert storage_uri({"spec": body["spec"]}) == "gs://x/y"
        assert_valid(merge_patch(before, body))
    elif action[0] == "promote":
        assert body == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    else:
        assert body == {"spec": {"predictor": {"canaryTrafficPercent": 0}}}


@pytest.fixture
def no_cluster(tmp_path, monkeypatch):
    """No kubeconfig anywhere and not in a pod."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.mark.parametrize("action, body", [
    (["promote"], {"spec": {"predictor": {"canaryTrafficPercent": None}}}),
    (["rollback"], {"spec": {"predictor": {"canaryTrafficPercent": 0}}}),
    (["canary", "--percent", "25"], {"spec": {"predictor": {"canaryTrafficPercent": 25}}}),
])
def test_dry_run_needs_no_cluster(no_cluster, capsys, action, body):
    rc, out, err = run_cli(capsys, action[0], NAME, "-n", NS, *action[1:], "--dry-run")
    assert rc == 0, err
    assert json.loads(out) == body
    assert "dry run (no cluster" in err and f"namespaces/{NS}/inferenceservices/{NAME}" in err
    assert "nothing sent" in err


def test_dry_run_canary_of_a_new_model_plans_against_a_manifest(no_cluster, capsys):
    manifest = Path(__file__).resolve().parents[2] / "manifests" / "inferenceservice.yaml"
    rc, out, err = run_cli(capsys, "canary", NAME, "--percent", "10", "--storage-uri",
                           "gs://models/yolov3/2", "--dry-run", "--manifest", str(manifest))
    assert rc == 0, err
    body = json.loads(out)
    assert body["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert storage_uri({"spec": body["spec"]}) == "gs://models/yolov3/2"
    import yaml

    applied = next(d for d in yaml.safe_load_all(manifest.read_text())
                   if d and d.get("kind") == "InferenceService")
    assert_valid(merge_patch(applied, body))
    assert "STORAGE_URI=gs://models/yolov3/2" in err and f"namespaces/{NS}/" in err

    # without a manifest the containers cannot be known offline: one clear line
    rc, _, err = run_cli(capsys, "canary", NAME, "--percent", "10", "--storage-uri", "gs://x/y",
                         "--dry-run")
    assert_one_line_error(rc, err, "--manifest")


def test_status_prints_revision_traffic_and_readiness(api, kubeconfig, capsys):
    api.seed(seed_isvc(canary=10))
    rc, out, err = run_cli(capsys, "status", NAME, "--kubeconfig", str(kubeconfig))
    assert rc == 0, err
    assert f"InferenceService {NS}/{NAME}" in out
    assert re.search(r"yolov3-predictor-00002\s+10%\s+latest\s+true\s+True", out), out
    assert re.search(r"yolov3-predictor-00001\s+90%\s+prev\s+false\s+True", out), out
    assert re.search(r"latestReadyRevision:\s+yolov3-predictor-00002", out)
    assert re.search(r"latestCreatedRevision:\s+yolov3-predictor-00002", out)
    assert re.search(r"canaryTrafficPercent:\s+10", out)
    assert re.search(r"Ready\s+True", out)
    assert api.writes() == []

    rc, out, err = run_cli(capsys, "status", NAME, "--kubeconfig", str(kubeconfig), "-o", "json")
    doc = json.loads(out)
    traffic = doc["components"]["predictor"]["traffic"]
    assert [(t["revision"], t["percent"], t["ready"]) for t in traffic] == [
        ("yolov3-predictor-00002", 10, True), ("yolov3-predictor-00001", 90, True)]
    assert doc["ready"] is True


def test_status_marks_a_revision_that_is_not_ready_yet(api, kubeconfig, capsys):
    obj = seed_isvc(canary=10)
    obj["status"]["components"]["predictor"]["latestCreatedRevision"] = "yolov3-predictor-00003"
    obj["status"]["components"]["predictor"]["traffic"][0]["revisionName"] = "yolov3-predictor-00003"
    obj["status"]["conditions"][2].update(status="False", reason="RevisionMissing",
                                          message="revision not ready")
    api.seed(obj)
    rc, out, _ = run_cli(capsys, "status", NAME, "--kubeconfig", str(kubeconfig))
    assert rc == 0
    assert re.search(r"yolov3-predictor-00003\s+10%\s+latest\s+true\s+False", out), out
    assert "RevisionMissing revision not ready" in out
    assert not is_ready(obj)


def test_missing_object_is_one_clear_line(api, kubeconfig, capsys):
    for action in (["status"], ["promote"], ["canary", "--percent", "5", "--image", "i:1"]):
        rc, out, err = run_cli(capsys, action[0], "nope", *action[1:], "--kubeconfig",
                               str(kubeconfig))
        assert_one_line_error(rc, err, 'inferenceservice "nope"', "not found", f'"{NS}"')
    assert api.writes() == []


def test_forbidden_is_one_clear_line(api, kubeconfig, capsys):
    rc, _, err = run_cli(capsys, "promote", NAME, "--kubeconfig", str(kubeconfig), "-n",
                         "forbidden")
    assert_one_line_error(rc, err, "forbidden", "cannot get")
    # the same through a context whose namespace is forbidden
    rc, _, err = run_cli(capsys, "status", NAME, "--kubeconfig", str(kubeconfig), "--context",
                         "locked")
    assert_one_line_error(rc, err, "forbidden")


def test_unauthorized_is_one_clear_line(api, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    kc = write_kubeconfig(tmp_path / "bad", api.url, token="wrong")
    rc, _, err = run_cli(capsys, "status", NAME, "--kubeconfig", str(kc))
    assert_one_line_error(rc, err, "unauthorized")


def test_conflict_is_one_clear_line(api, kubeconfig, capsys):
    def racing_writer(current):
        current["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 7)

    api.before_write = racing_writer
    before = api.stored()
    rc, _, err = run_cli(capsys, "canary", NAME, "--kubeconfig", str(kubeconfig), "--percent",
                         "10", "--storage-uri", "gs://x/y")
    assert_one_line_error(rc, err, "conflict", "run the command again")
    assert api.stored()["spec"] == before["spec"]


def test_unreachable_api_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    kc = write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}")
    rc, _, err = run_cli(capsys, "status", NAME, "--kubeconfig", str(kc), "--request-timeout", "2")
    assert_one_line_error(rc, err, "cannot reach the Kubernetes API", f"127.0.0.1:{port}")


@pytest.mark.parametrize("flag, value, message", [
    ("--timeout", "0", "must be > 0, got 0"),
    ("--poll-interval", "-1", "must be > 0, got -1"),
    ("--request-timeout", "x", "not a number: 'x'"),
    ("--timeout", "inf", "must be a finite number, got inf"),
    ("--pause", "-0.5", "must be >= 0, got -0.5"),
])
def test_second_options_refuse_what_is_not_a_duration(capsys, flag, value, message):
    rc, _, err = run_cli(capsys, "canary", NAME, "--steps", "10", "--analyze", "x.jpg", flag, value)
    assert rc == 2
    assert f"argument {flag}: {message}" in err.splitlines()[-1]


def test_pause_may_be_zero_and_timeouts_are_floats():
    from sdk_client.cli import build_parser

    args = build_parser().parse_args(["rollout", "canary", NAME, "--steps", "10", "--analyze", "x.jpg",
                                      "--pause", "0", "--timeout", "0.5", "--poll-interval", "1e-3"])
    assert (args.pause, args.timeout, args.poll_interval) == (0.0, 0.5, 0.001)


def test_missing_or_broken_kubeconfig_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    rc, _, err = run_cli(capsys, "status", NAME, "--kubeconfig", str(tmp_path / "none"))
    assert_one_line_error(rc, err, "kubeconfig not found")
    rc, _, err = run_cli(capsys, "status", NAME)
    assert_one_line_error(rc, err, "no kubeconfig found")
    broken = tmp_path / "broken"
    broken.write_text(json.dumps({"apiVersion": "v1", "kind": "Config", "contexts": [],
                                  "current-context": "x"}))
    rc, _, err = run_cli(capsys, "status", NAME, "--kubeconfig", str(broken))
    assert_one_line_error(rc, err, "kubeconfig")


def test_wait_until_ready(api, kubeconfig, capsys):
    rc, out, err = run_cli(capsys, "canary", NAME, "--kubeconfig", str(kubeconfig), "--percent",
                           "10", "--image", "i:2", "--wait", "--timeout", "5",
                           "--poll-interval", "0.05")
    assert rc == 0, err
    assert "is ready" in out


def test_wait_times_out_with_one_line(api, kubeconfig, capsys):
    api.controller = False  # the new generation is never observed
    rc, out, err = run_cli(capsys, "canary", NAME, "--kubeconfig", str(kubeconfig), "--percent",
                           "10", "--image", "i:2", "--wait", "--timeout", "0.3",
                           "--poll-interval", "0.05")
    assert_one_line_error(rc, err, "timed out after 0.3s", "ready")
    assert api.stored()["spec"]["predictor"]["canaryTrafficPercent"] == 10  # the write happened


def test_invalid_arguments_are_usage_errors(kubeconfig, capsys):
    kc = ["--kubeconfig", str(kubeconfig)]
    assert main(["rollout", "canary", NAME, *kc, "--percent", "101", "--image", "x"]) == 2
    assert main(["rollout", "canary", NAME, *kc, "--percent", "5", "--image", "x",
                 "--storage-uri", "y"]) == 2
    assert main(["rollout", "canary", NAME, *kc]) == 2
    assert main(["rollout", "explode", NAME, *kc]) == 2
    capsys.readouterr()


def test_canary_patch_for_model_format_predictor_and_errors():
    isvc = {"metadata": {"name": "m", "resourceVersion": "5"},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "onnx"},
                                             "storageUri": "gs://a"}}}}
    body = canary_patch(isvc, 10, storage_uri="gs://b")
    assert body == {"spec": {"predictor": {"canaryTrafficPercent": 10,
                                           "model": {"storageUri": "gs://b"}}}}
    with pytest.raises(RolloutError, match="custom predictor"):
        canary_patch(isvc, 10, image="x")
    two = {"spec": {"predictor": {"containers": [{"name": "a"}, {"name": "b"}]}}}
    with pytest.raises(RolloutError, match="kserve-container"):
        canary_patch(two, 10, image="x")
    with pytest.raises(RolloutError, match="no spec.predictor"):
        canary_patch({"metadata": {"name": "m"}, "spec": {}}, 10)
    # STORAGE_URI from a secret/configmap is replaced by a literal value
    vf = {"spec": {"predictor": {"containers": [{"name": "kserve-container", "env": [
        {"name": "STORAGE_URI", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}]}}}
    body = canary_patch(vf, 10, storage_uri="gs://new")
    assert body["spec"]["predictor"]["containers"][0]["env"] == [
        {"name": "STORAGE_URI", "value": "gs://new"}]


def test_json_patch_helper_of_the_double():
    doc = {"spec": {"predictor": {"canaryTrafficPercent": 10, "containers": [{"name": "a"}]}}}
    out = json_patch(doc, [{"op": "remove", "path": "/spec/predictor/canaryTrafficPercent"},
                           {"op": "add", "path": "/spec/predictor/containers/-",
                            "value": {"name": "b"}}])
    assert out == {"spec": {"predictor": {"containers": [{"name": "a"}, {"name": "b"}]}}}
