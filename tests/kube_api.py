"""A loopback Kubernetes API test double serving InferenceServices (``yolo-kserve rollout`` tests).

The double is a small real HTTP server (``http.server`` on 127.0.0.1, free port) that serves
``/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices/{name}``:

* GET; PATCH with ``application/merge-patch+json`` (RFC 7386: ``null`` deletes, objects merge,
  lists and scalars replace) and ``application/json-patch+json`` (add/replace/remove); PUT;
* 401 without the kubeconfig's bearer token, 403 for namespace ``forbidden``, 404 for unknown
  names, 409 when a write carries a stale ``metadata.resourceVersion``, 415 for other patch types,
  422 when the result fails strict CRD validation (like ``fieldValidation=Strict``);
* ``status`` is a subresource: writes to the main resource never change it;
* an optional fake controller (``controller``, on by default) does what KServe's would after each
  write: marks the new generation observed and Ready and, for the predictor, creates a revision
  when its spec changed (beyond ``canaryTrafficPercent``) and sets the traffic as KServe's Knative
  reconciler does (``latest`` P % and ``prev`` 100 - P % while a canary runs; otherwise the latest
  revision gets 100 % and becomes the rolled-out one).

It is reached through a generated kubeconfig (:func:`write_kubeconfig`).
"""

from __future__ import annotations

import copy
import http.server
import json
import re
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

from tests.fakes import LoopbackServer, send_json
from tests.kube_schema import load_isvc_validator

REPO = Path(__file__).resolve().parents[1]
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
                # without a canary, 00002 took 100 % and is the rolled-out revision
                "latestRolledoutRevision": "yolov3-predictor-0000" + ("1" if canary is not None else "2"),
                **({} if canary is not None else {"previousRolledoutRevision": "yolov3-predictor-00001"}),
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


def reconcile_predictor(old: dict, new: dict) -> None:
    """The predictor's status after a write, as KServe's Knative reconciler leaves it once ready.

    A predictor spec that changed beyond ``canaryTrafficPercent`` creates the next revision. With a
    percent P and a rolled-out revision, the latest revision gets P % (tag ``latest`` when tag routing
    is on) and the rolled-out one 100 - P % (tag ``prev``), P < 100; otherwise the latest revision
    gets 100 % and becomes the rolled-out one.
    """
    comp = ((new.get("status") or {}).get("components") or {}).get("predictor")
    if not comp or not comp.get("latestReadyRevision"):
        return
    before = dict((old.get("spec") or {}).get("predictor") or {})
    after = dict((new.get("spec") or {}).get("predictor") or {})
    before.pop("canaryTrafficPercent", None)
    percent = after.pop("canaryTrafficPercent", None)
    if after != before:
        stem, _, number = comp["latestCreatedRevision"].rpartition("-")
        comp["latestCreatedRevision"] = comp["latestReadyRevision"] = f"{stem}-{int(number) + 1:05d}"
    latest, rolled = comp["latestReadyRevision"], comp.get("latestRolledoutRevision")
    tagged = ((new.get("metadata") or {}).get("annotations") or {}).get(
        "serving.kserve.io/enable-tag-routing") == "true"
    host = urlsplit(comp["url"]).hostname

    def target(revision: str, pct: int, tag: str | None, is_latest: bool) -> dict:
        t = {"revisionName": revision, "percent": pct, "latestRevision": is_latest}
        if tag:
            t.update(tag=tag, url=f"http://{tag}-{host}")
        return t

    if percent is not None and rolled and percent < 100:
        comp["traffic"] = [target(latest, percent, "latest" if tagged else None, True),
                           target(rolled, 100 - percent, "prev", False)]
    else:
        comp["traffic"] = [target(latest, 100, "latest" if tagged else None, True)]
        if rolled != latest:
            comp["previousRolledoutRevision"], comp["latestRolledoutRevision"] = rolled, latest


class KubeApiDouble(LoopbackServer):
    def __init__(self):
        self.lock = threading.Lock()
        self.objects: dict[tuple[str, str], dict] = {}
        self.log: list[dict] = []
        self.controller = True      # simulate the KServe controller becoming Ready
        self.before_write = None    # hook: called before applying a write (e.g. a racing writer)
        self.validate = load_isvc_validator()
        super().__init__(_Handler)

    def seed(self, obj: dict) -> None:
        self.objects[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = copy.deepcopy(obj)

    def stored(self, ns: str = NS, name: str = NAME) -> dict:
        return copy.deepcopy(self.objects[(ns, name)])

    def writes(self) -> list[dict]:
        return [r for r in self.log if r["method"] in ("PATCH", "PUT", "POST", "DELETE")]


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
        send_json(self, code, doc)

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
                reconcile_predictor(current, new)
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


