"""``yolo-kserve rollout`` against a loopback Kubernetes API test double.

The double is a small real HTTP server (``http.server`` on 127.0.0.1, free port) that serves
``/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}``:

* GET; PATCH with ``application/merge-patch+json`` (RFC 7386: ``null`` deletes, objects merge,
  lists and scalars replace) and ``application/json-patch+json`` (add/replace/remove); PUT;
* 401 without the kubeconfig's bearer token, 403 for namespace ``forbidden``, 404 for unknown
  names, 409 when a write carries a stale ``metadata.resourceVersion``, 415 for other patch types,
  422 when the result fails strict CRD validation (like ``fieldValidation=Strict``);
* ``status`` is a subresource: writes to the main resource never change it;
* an optional fake controller marks the new generation observed and Ready after each write.

It is reached through a generated kubeconfig, passed with ``--kubeconfig`` or ``KUBECONFIG``.
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import socket
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from sdk_client.cli import main
from sdk_client.commands.rollout import RolloutError, canary_patch, is_ready
from tests.kube_schema import load_isvc_validator

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "manifests" / "inferenceservice.yaml"
TOKEN = "test-token-123"
NS = "vision"
NAME = "yolov3"
ISVC_PATH = re.compile(
    r"^/apis/serving\.kserve\.io/v1beta1/namespaces/(?P<ns>[^/]+)/inferenceservices/(?P<name>[^/]+)$"
)


# ------------------------------------------------------------------------------------------
# seed object


def _fallback_isvc() -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": NS,
                     "annotations": {"serving.kserve.io/deploymentMode": "Knative"}},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "containers": [{
                    "name": "kserve-container",
                    "image": "registry.example.com/vision/yolov3-predictor:0.1.0",
                    "args": ["--model_name", "yolov3"],
                    "env": [{"name": "STORAGE_URI", "value": "gs://example-models/yolov3-tiny/1"}],
                    "ports": [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}],
                }],
            },
            "transformer": {
                "containers": [{
                    "name": "kserve-container",
                    "image": "registry.example.com/vision/yolov3-transformer:0.1.0",
                    "args": ["--model_name", "yolov3", "--predictor_protocol", "grpc-v2"],
                }],
            },
        },
    }


def seed_isvc(canary: int | None = None) -> dict:
    """The repo's manifest (or a realistic fallback) as stored by an API server, with status."""
    obj = None
    if MANIFEST.exists():
        with open(MANIFEST, encoding="utf-8") as f:
            obj = next((d for d in yaml.safe_load_all(f)
                        if d and d.get("kind") == "InferenceService"), None)
    obj = copy.deepcopy(obj) if obj else _fallback_isvc()
    obj["metadata"].update(name=NAME, namespace=NS, resourceVersion="1001", generation=2,
                           uid="7d1c9a52-0000-4000-8000-000000000001",
                           creationTimestamp="2026-10-01T09:00:00Z")
    if canary is not None:
        obj["spec"]["predictor"]["canaryTrafficPercent"] = canary
    host = "example.com"
    traffic = [
        {"revisionName": "yolov3-predictor-00002", "percent": 100, "latestRevision": True,
         "tag": "latest", "url": f"http://latest-yolov3-predictor.{NS}.{host}"},
    ]
    if canary is not None:
        traffic = [
            {"revisionName": "yolov3-predictor-00002", "percent": canary, "latestRevision": True,
             "tag": "latest", "url": f"http://latest-yolov3-predictor.{NS}.{host}"},
            {"revisionName": "yolov3-predictor-00001", "percent": 100 - canary,
             "latestRevision": False, "tag": "prev",
             "url": f"http://prev-yolov3-predictor.{NS}.{host}"},
        ]
    t = "2026-10-01T10:00:00Z"
    obj["status"] = {
        "observedGeneration": 2,
        "url": f"http://yolov3.{NS}.{host}",
        "address": {"url": f"http://yolov3.{NS}.svc.cluster.local"},
        "deploymentMode": "Knative",
        "conditions": [
            {"type": "IngressReady", "status": "True", "lastTransitionTime": t},
            {"type": "PredictorReady", "status": "True", "lastTransitionTime": t},
            {"type": "Ready", "status": "True", "lastTransitionTime": t},
            {"type": "TransformerReady", "status": "True", "lastTransitionTime": t},
        ],
        "components": {
            "predictor": {
                "latestCreatedRevision": "yolov3-predictor-00002",
                "latestReadyRevision": "yolov3-predictor-00002",
                "latestRolledoutRevision": "yolov3-predictor-00001",
                "traffic": traffic,
                "url": f"http://yolov3-predictor.{NS}.{host}",
            },
            "transformer": {
                "latestCreatedRevision": "yolov3-transformer-00001",
                "latestReadyRevision": "yolov3-transformer-00001",
                "latestRolledoutRevision": "yolov3-transformer-00001",
                "traffic": [{"revisionName": "yolov3-transformer-00001", "percent": 100,
                             "latestRevision": True}],
                "url": f"http://yolov3-transformer.{NS}.{host}",
            },
        },
    }
    return obj


# ------------------------------------------------------------------------------------------
# the API double


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def json_patch(doc, ops):
    """RFC 6902 subset: add, replace, remove, test."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = _pointer(op["path"])
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        key = (len(node) if last == "-" else int(last)) if isinstance(node, list) else last
        if op["op"] == "test":
            if node[key] != op["value"]:
                raise ValueError("test failed")
        elif op["op"] == "remove":
            del node[key]
        elif op["op"] == "add" and isinstance(node, list):
            node.insert(key, op["value"])
        elif op["op"] in ("add", "replace"):
            node[key] = op["value"]
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return doc


class KubeApiDouble(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.objects: dict[tuple[str, str], dict] = {}
        self.log: list[dict] = []
        self.controller = True      # simulate the KServe controller becoming Ready
        self.before_write = None    # hook: called before applying a write (e.g. a racing writer)
        self.validate = load_isvc_validator()
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def seed(self, obj: dict) -> None:
        self.objects[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = copy.deepcopy(obj)

    def stored(self, ns: str = NS, name: str = NAME) -> dict:
        return copy.deepcopy(self.objects[(ns, name)])

    def writes(self) -> list[dict]:
        return [r for r in self.log if r["method"] in ("PATCH", "PUT", "POST", "DELETE")]

    def close(self):
        self.shutdown()
        self.server_close()


def _status(code: int, reason: str, message: str, name: str | None = None) -> dict:
    doc = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code}
    if name:
        doc["details"] = {"name": name, "group": "serving.kserve.io", "kind": "inferenceservices"}
    return doc


class _Handler(http.server.BaseHTTPRequestHandler):
    server: KubeApiDouble

    def log_message(self, *args):
        pass

    def _reply(self, code: int, doc: dict) -> None:
        raw = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _handle(self, method: str) -> None:
        srv = self.server
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        entry = {"method": method, "path": parts.path, "query": parse_qs(parts.query),
                 "content_type": ctype, "body": json.loads(raw) if raw else None}
        with srv.lock:
            srv.log.append(entry)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._reply(401, _status(401, "Unauthorized", "Unauthorized"))
        m = ISVC_PATH.match(parts.path)
        if not m:
            return self._reply(404, _status(404, "NotFound",
                                            "the server could not find the requested resource"))
        ns, name = m["ns"], m["name"]
        if ns == "forbidden":
            return self._reply(403, _status(
                403, "Forbidden",
                f'inferenceservices.serving.kserve.io "{name}" is forbidden: User '
                f'"system:serviceaccount:ci:tester" cannot {method.lower()} resource '
                f'"inferenceservices" in API group "serving.kserve.io" in the namespace "{ns}"',
                name))
        with srv.lock:
            current = srv.objects.get((ns, name))
            if current is None:
                return self._reply(404, _status(
                    404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found', name))
            if method == "GET":
                return self._reply(200, current)
            if srv.before_write:
                srv.before_write(current)
            body = entry["body"]
            if method == "PATCH":
                if ctype == "application/merge-patch+json":
                    rv = ((body or {}).get("metadata") or {}).get("resourceVersion")
                    new = merge_patch(current, body)
                elif ctype == "application/json-patch+json":
                    rv = None
                    try:
                        new = json_patch(current, body)
                    except (KeyError, IndexError, ValueError) as e:
                        return self._reply(422, _status(422, "Invalid", f"json patch: {e}"))
                else:
                    return self._reply(415, _status(415, "UnsupportedMediaType",
                                                    "the body of the request was in an unknown "
                                                    "format - accepted media types include: "
                                                    "application/merge-patch+json, "
                                                    "application/json-patch+json"))
            else:  # PUT
                rv = ((body or {}).get("metadata") or {}).get("resourceVersion")
                if rv is None:
                    return self._reply(422, _status(422, "Invalid",
                                                    "metadata.resourceVersion: must be specified"))
                new = copy.deepcopy(body)
            if rv is not None and rv != current["metadata"]["resourceVersion"]:
                return self._reply(409, _status(
                    409, "Conflict",
                    f'Operation cannot be fulfilled on inferenceservices.serving.kserve.io "{name}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again", name))
            # status is a subresource; identity fields are server-owned
            new["status"] = copy.deepcopy(current.get("status"))
            for key in ("name", "namespace", "uid", "creationTimestamp"):
                new["metadata"][key] = current["metadata"][key]
            errors = srv.validate({k: v for k, v in new.items() if k != "status"})
            if errors:
                return self._reply(422, _status(422, "Invalid", "; ".join(errors), name))
            new["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
            gen = current["metadata"].get("generation", 1)
            if new.get("spec") != current.get("spec"):
                gen += 1
            new["metadata"]["generation"] = gen
            if srv.controller:
                new["status"]["observedGeneration"] = gen
            srv.objects[(ns, name)] = new
            return self._reply(200, new)

    def do_GET(self):
        self._handle("GET")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_PUT(self):
        self._handle("PUT")


# ------------------------------------------------------------------------------------------
# fixtures


def write_kubeconfig(path: Path, server: str, token: str = TOKEN) -> Path:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "double", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": token}}],
        "contexts": [
            {"name": "vision", "context": {"cluster": "double", "user": "tester",
                                           "namespace": NS}},
            {"name": "locked", "context": {"cluster": "double", "user": "tester",
                                           "namespace": "forbidden"}},
        ],
        "current-context": "vision",
    }
    path.write_text(json.dumps(cfg))
    return path


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
