"""``yolo-kserve rollout``: canary rollouts of the InferenceService's predictor (Knative mode).

Actions (KServe semantics, see ``canaryTrafficPercent``):

* ``status NAME``   -- each revision's traffic share and readiness
  (``status.components.<component>.traffic``), latest created/ready/rolled-out revisions and the
  conditions.
* ``canary NAME --percent P [--storage-uri URI | --image IMG]`` -- change the predictor (env
  ``STORAGE_URI`` or the image of container ``kserve-container``; ``model.storageUri`` for a
  model-format predictor), which creates a new revision, and send it ``P`` % of the traffic. Without
  ``--storage-uri``/``--image`` only the traffic share of the current canary changes.
* ``promote NAME``  -- remove ``canaryTrafficPercent``: the latest revision gets 100 %.
* ``rollback NAME`` -- ``canaryTrafficPercent: 0``: all traffic back to the last rolled-out revision.

Writes are JSON merge patches (``application/merge-patch+json``; ``null`` deletes a field) sent with
``fieldValidation=Strict``. A patch that replaces the container list carries
``metadata.resourceVersion``, so a concurrent change makes the API server answer 409 instead of
being overwritten. ``--dry-run`` prints the plan and the patch body and sends no write; it needs no
cluster: without a kubeconfig (or with ``--manifest FILE``) it plans offline, which a canary that
changes ``--storage-uri``/``--image`` can only do against ``--manifest``.

Kubeconfig: ``--kubeconfig``, else ``$KUBECONFIG`` (a path list is merged), else ``~/.kube/config``,
else the in-cluster service account. API errors are reported as one line on stderr (exit 1).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from sdk_client.commands import argtypes, compare

NAME = "rollout"
GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"
#: Container that KServe's storage initializer and the manifests use for the model server.
MODEL_CONTAINER = "kserve-container"
STORAGE_URI_ENV = "STORAGE_URI"
#: KServe tags the predictor's revisions latest/prev (hosts latest-<isvc>-predictor...) with this on.
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
#: The transformer flag that names the header routing a request to one predictor revision.
REVISION_HEADER_FLAG = "--revision_header"
_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

PROG = "yolo-kserve rollout"


class RolloutError(Exception):
    """A failure reported to the user as one line (no traceback)."""


# --------------------------------------------------------------------------------------------
# Kubernetes access


class IsvcApi:
    """Minimal InferenceService access over ``kubernetes.client.CustomObjectsApi``."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None,
                 request_timeout: float = 30.0):
        from kubernetes import client, config

        cfg = client.Configuration()
        self.namespace = "default"
        path: str | None = None
        if kubeconfig:
            if not os.path.isfile(os.path.expanduser(kubeconfig)):
                raise RolloutError(f"kubeconfig not found: {kubeconfig}")
            path = kubeconfig
        elif os.environ.get("KUBECONFIG"):
            # Like kubectl: a path list is merged; entries that do not exist are skipped.
            files = [p for p in os.environ["KUBECONFIG"].split(os.pathsep)
                     if p and os.path.isfile(os.path.expanduser(p))]
            if not files:
                raise RolloutError(f"KUBECONFIG names no existing file: {os.environ['KUBECONFIG']}")
            path = os.pathsep.join(files)
        elif os.path.isfile(os.path.expanduser("~/.kube/config")):
            path = os.path.expanduser("~/.kube/config")
        try:
            if path is not None:
                config.load_kube_config(config_file=path, context=context,
                                        client_configuration=cfg, persist_config=False)
                contexts, current = config.list_kube_config_contexts(config_file=path)
                ctx = current
                if context:
                    ctx = next((c for c in contexts if c.get("name") == context), current)
                ns = ((ctx or {}).get("context") or {}).get("namespace")
                if ns:
                    self.namespace = ns
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=cfg)
                if os.path.exists(_SA_NAMESPACE):
                    with open(_SA_NAMESPACE, encoding="utf-8") as f:
                        self.namespace = f.read().strip() or "default"
            else:
                raise RolloutError(
                    "no kubeconfig found: pass --kubeconfig, set KUBECONFIG or create "
                    "~/.kube/config")
        except config.ConfigException as e:
            raise RolloutError(f"invalid kubeconfig: {_one_line(str(e))}") from e
        # A couple of quick connection retries; urllib3's retry warnings are silenced in run().
        cfg.retries = 2
        self.server = cfg.host
        self._timeout = request_timeout
        self._api = client.CustomObjectsApi(client.ApiClient(configuration=cfg))

    def get(self, name: str, namespace: str) -> dict:
        return self._call("get", name, namespace, lambda: self._api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=self._timeout))

    def patch(self, name: str, namespace: str, body: dict) -> dict:
        return self._call("patch", name, namespace,
                          lambda: self._api.patch_namespaced_custom_object(
                              GROUP, VERSION, namespace, PLURAL, name, body,
                              field_validation="Strict", _request_timeout=self._timeout))

    def _call(self, verb: str, name: str, namespace: str, fn: Any) -> dict:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        try:
            return fn()
        except ApiException as e:
            raise RolloutError(_api_error_message(e, verb, name, namespace)) from e
        except (Urllib3Error, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise RolloutError(
                f"cannot reach the Kubernetes API at {self.server}: {_one_line(str(reason))}"
            ) from e


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _api_error_message(e: Any, verb: str, name: str, namespace: str) -> str:
    message = ""
    try:
        body = json.loads(e.body) if e.body else {}
        message = body.get("message", "") if isinstance(body, dict) else ""
    except (ValueError, TypeError):
        message = (e.body or "") if isinstance(e.body, str) else ""
    message = _one_line(message or e.reason or "")
    ref = f'inferenceservice "{name}" in namespace "{namespace}"'
    if e.status == 404:
        return f"{ref} not found" + (f" ({message})" if message and name not in message else "")
    if e.status == 403:
        return f"forbidden: cannot {verb} {ref}: {message}"
    if e.status == 401:
        return "unauthorized: the Kubernetes API rejected the credentials in the kubeconfig"
    if e.status == 409:
        return f"conflict: {ref} was modified concurrently; run the command again ({message})"
    if e.status == 422:
        return f"the API server rejected the change to {ref}: {message}"
    return f"Kubernetes API error {e.status} {e.reason or ''} on {verb} {ref}: {message}".strip()


# --------------------------------------------------------------------------------------------
# patch bodies (pure functions)


def _component(isvc: dict, component: str = "predictor") -> dict:
    spec = (isvc.get("spec") or {}).get(component)
    if not isinstance(spec, dict):
        name = (isvc.get("metadata") or {}).get("name", "?")
        raise RolloutError(f'inferenceservice "{name}" has no spec.{component}')
    return spec


def _model_container(pred: dict) -> dict:
    containers = pred.get("containers") or []
    for c in containers:
        if c.get("name") == MODEL_CONTAINER:
            return c
    if len(containers) == 1:
        return containers[0]
    raise RolloutError(f"the predictor has no container named {MODEL_CONTAINER!r}")


def canary_patch(isvc: dict, percent: int, storage_uri: str | None = None,
                 image: str | None = None) -> dict:
    """Merge patch that sends ``percent`` % of the predictor's traffic to a new revision.

    With ``storage_uri``/``image`` the predictor changes (new revision); the containers list is
    sent whole (merge patches replace lists) together with ``metadata.resourceVersion``.
    """
    if not 0 <= percent <= 100:
        raise RolloutError(f"--percent must be between 0 and 100, got {percent}")
    pred = _component(isvc)
    patch_pred: dict[str, Any] = {"canaryTrafficPercent": percent}
    body: dict[str, Any] = {"spec": {"predictor": patch_pred}}
    if storage_uri is None and image is None:
        return body
    if isinstance(pred.get("model"), dict) and not pred.get("containers"):
        if image is not None:
            raise RolloutError("--image needs a custom predictor (spec.predictor.containers); "
                               "this one uses spec.predictor.model")
        patch_pred["model"] = {"storageUri": storage_uri}
        return body
    containers = copy.deepcopy(pred.get("containers") or [])
    if not containers:
        raise RolloutError("the predictor has no containers to update")
    target = _model_container({"containers": containers})
    if image is not None:
        target["image"] = image
    if storage_uri is not None:
        env = target.setdefault("env", [])
        for var in env:
            if var.get("name") == STORAGE_URI_ENV:
                var.pop("valueFrom", None)
                var["value"] = storage_uri
                break
        else:
            env.append({"name": STORAGE_URI_ENV, "value": storage_uri})
    patch_pred["containers"] = containers
    rv = (isvc.get("metadata") or {}).get("resourceVersion")
    if rv:
        body["metadata"] = {"resourceVersion": rv}
    return body


def promote_patch() -> dict:
    """Merge patch that ends the canary: no ``canaryTrafficPercent``, latest revision gets 100 %."""
    return {"spec": {"predictor": {"canaryTrafficPercent": None}}}


def rollback_patch() -> dict:
    """Merge patch that sends all traffic back to the last rolled-out revision."""
    return {"spec": {"predictor": {"canaryTrafficPercent": 0}}}


# --------------------------------------------------------------------------------------------
# status


def _condition(obj: dict, ctype: str = "Ready") -> dict | None:
    for c in ((obj.get("status") or {}).get("conditions") or []):
        if c.get("type") == ctype:
            return c
    return None


def is_ready(obj: dict) -> bool:
    """Ready condition True, observed the current generation, latest revision ready."""
    cond = _condition(obj)
    if not cond or cond.get("status") != "True":
        return False
    st = obj.get("status") or {}
    gen = (obj.get("metadata") or {}).get("generation")
    observed = st.get("observedGeneration")
    if gen is not None and observed is not None and observed < gen:
        return False
    pred = (st.get("components") or {}).get("predictor") or {}
    created, ready = pred.get("latestCreatedRevision"), pred.get("latestReadyRevision")
    return not (created and ready and created != ready)


def summarize(obj: dict) -> dict:
    """The status facts ``rollout status`` prints (also its ``-o json`` document)."""
    meta = obj.get("metadata") or {}
    st = obj.get("status") or {}
    spec = obj.get("spec") or {}
    comps = {}
    for cname, cst in (st.get("components") or {}).items():
        cst = cst or {}
        ready_revs = {cst.get("latestReadyRevision"), cst.get("latestRolledoutRevision"),
                      cst.get("previousRolledoutRevision")} - {None}
        pending = cst.get("latestCreatedRevision")
        traffic = []
        for t in cst.get("traffic") or []:
            rev = t.get("revisionName")
            if rev in ready_revs:
                ready: bool | None = True
            elif rev is not None and rev == pending:
                ready = False
            else:
                ready = None
            traffic.append({
                "revision": rev,
                "percent": t.get("percent", 0),
                "tag": t.get("tag"),
                "latest": bool(t.get("latestRevision", False)),
                "ready": ready,
                "url": t.get("url"),
            })
        comps[cname] = {
            "canaryTrafficPercent": (spec.get(cname) or {}).get("canaryTrafficPercent"),
            "latestCreatedRevision": cst.get("latestCreatedRevision"),
            "latestReadyRevision": cst.get("latestReadyRevision"),
            "latestRolledoutRevision": cst.get("latestRolledoutRevision"),
            "previousRolledoutRevision": cst.get("previousRolledoutRevision"),
            "url": cst.get("url"),
            "traffic": traffic,
        }
    ready_cond = _condition(obj)
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "url": st.get("url"),
        "ready": bool(ready_cond and ready_cond.get("status") == "True"),
        "generation": meta.get("generation"),
        "observedGeneration": st.get("observedGeneration"),
        "components": comps,
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message")}
            for c in st.get("conditions") or []
        ],
    }


def format_status(s: dict) -> str:
    def v(x: Any) -> str:
        return "-" if x is None else str(x)

    lines = [
        f"InferenceService {s['namespace']}/{s['name']}",
        f"  URL:         {v(s['url'])}",
        f"  Ready:       {s['ready']}",
        f"  Generation:  {v(s['generation'])} (observed {v(s['observedGeneration'])})",
    ]
    if not s["components"]:
        lines.append("  (no component status yet)")
    for cname, c in s["components"].items():
        lines.append(f"  {cname}:")
        lines.append(f"    canaryTrafficPercent:      {v(c['canaryTrafficPercent'])}")
        for key in ("latestCreatedRevision", "latestReadyRevision", "latestRolledoutRevision",
                    "previousRolledoutRevision"):
            lines.append(f"    {key + ':':<27}{v(c[key])}")
        if c["traffic"]:
            width = max(8, *(len(v(t["revision"])) for t in c["traffic"]))
            lines.append(f"    {'REVISION':<{width}}  PERCENT  TAG     LATEST  READY")
            for t in c["traffic"]:
                ready = {True: "True", False: "False", None: "Unknown"}[t["ready"]]
                lines.append(
                    f"    {v(t['revision']):<{width}}  {str(t['percent']) + '%':>7}  "
                    f"{v(t['tag']):<6}  {str(t['latest']).lower():<6}  {ready}"
                )
        else:
            lines.append("    (no traffic status)")
    if s["conditions"]:
        lines.append("  Conditions:")
        width = max(len(v(c["type"])) for c in s["conditions"])
        for c in s["conditions"]:
            extra = " ".join(x for x in (c.get("reason"), c.get("message")) if x)
            lines.append(f"    {v(c['type']):<{width}}  {v(c['status']):<7}  {extra}".rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# CLI


def register(subparsers: Any) -> argparse.ArgumentParser:
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument("-n", "--namespace",
                         help="namespace (default: the kubeconfig context's, else 'default')")
    cluster.add_argument("--kubeconfig", metavar="PATH",
                         help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    cluster.add_argument("--context", metavar="CTX", help="kubeconfig context")
    cluster.add_argument("--request-timeout", type=argtypes.positive_float, default=30.0, metavar="S",
                         help="timeout of each API request (default: %(default)s)")

    common = argparse.ArgumentParser(add_help=False, parents=[cluster])
    common.add_argument("name", metavar="NAME", help="InferenceService name")
    common.add_argument("--dry-run", action="store_true",
                        help="print the plan and the patch body (JSON) and send no write; works "
                        "without a cluster (then against --manifest, if given)")
    common.add_argument("--manifest", metavar="FILE",
                        help="with --dry-run: plan against this InferenceService manifest instead "
                        "of the cluster's object (e.g. manifests/inferenceservice.yaml)")
    common.add_argument("--wait", action="store_true",
                        help="wait until the InferenceService is Ready again")
    common.add_argument("--timeout", type=argtypes.positive_float, default=300.0, metavar="S",
                        help="seconds to wait for readiness (--wait, each --steps step; "
                        "default: %(default)s)")
    common.add_argument("--poll-interval", type=argtypes.positive_float, default=2.0, metavar="S",
                        help="--wait polling interval (default: %(default)s)")

    p = subparsers.add_parser(
        NAME, help="canary rollouts of the InferenceService's predictor",
        description="Canary rollouts of an InferenceService's predictor (Knative mode): "
        "status, canary (new STORAGE_URI or image at P% of the traffic, or step by step with an "
        "analysis gate), compare (the stable and canary revisions on images), promote (latest "
        "revision gets 100%), rollback (all traffic to the last rolled-out revision).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    s = actions.add_parser("status", parents=[common],
                           help="revisions, traffic split, readiness and conditions")
    s.add_argument("-o", "--output", choices=("text", "json"), default="text",
                   help="output format (default: %(default)s)")

    c = actions.add_parser(
        "canary", parents=[common], help="roll out a new predictor to P %% of the traffic, or step "
        "by step (--steps) with an analysis gate at each step",
        description="--percent P: one traffic change. --steps 10,50,100 --analyze IMAGES: set each "
        "step, wait until ready, compare the prev and latest revisions on IMAGES (rollout compare) "
        "and stop at the first failed gate, rolling back (canaryTrafficPercent 0); 100 promotes. "
        "Without --storage-uri/--image the steps resume the canary in progress (steps at or below "
        "its percent are skipped).")
    amount = c.add_mutually_exclusive_group(required=True)
    amount.add_argument("--percent", type=argtypes.percent, metavar="P",
                        help="traffic percent for the new (latest) revision, 0-100")
    amount.add_argument("--steps", metavar="P,P,...",
                        help="gated rollout: increasing percents, e.g. 10,50,100 (100 = promote)")
    what = c.add_mutually_exclusive_group()
    what.add_argument("--storage-uri", metavar="URI",
                      help=f"new model location ({STORAGE_URI_ENV} of {MODEL_CONTAINER})")
    what.add_argument("--image", metavar="IMG", help=f"new image of {MODEL_CONTAINER}")
    g = c.add_argument_group("gated rollout (--steps)")
    g.add_argument("--analyze", nargs="+", metavar="IMAGES",
                   help="images compared on the prev and latest revisions at each step (files, "
                   "folders, globs); required with --steps")
    g.add_argument("--pause", type=argtypes.non_negative_float, default=0.0, metavar="S",
                   help="seconds each step serves real traffic before its analysis (default: 0)")
    g.add_argument("--report-dir", metavar="DIR",
                   help="write each step's compare report to DIR/step-<P>.json")
    compare.add_analysis_arguments(c)
    compare.add_endpoint_arguments(c, timeout_flag="--infer-timeout")

    cmp = actions.add_parser(
        "compare", parents=[cluster], help="compare the stable and canary predictor revisions on "
        "images (agreement, per-class changes, latency, errors; exit 1 when the gate fails)",
        usage="%(prog)s NAME IMAGES... [-n NS] [options]\n"
              "       %(prog)s IMAGES... --stable-url URL --canary-url URL [options]",
        description=f"{compare.DESCRIPTION} See docs/canary-analysis.md.")
    compare.add_compare_arguments(cmp)

    actions.add_parser("promote", parents=[common],
                       help="send 100%% of the traffic to the latest revision")
    actions.add_parser("rollback", parents=[common],
                       help="send all traffic back to the last rolled-out revision")
    p.set_defaults(handler=run)
    return p


def _wait_ready(api: IsvcApi, name: str, ns: str, timeout: float, interval: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        obj = api.get(name, ns)
        if is_ready(obj):
            return obj
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            cond = _condition(obj) or {}
            why = " ".join(x for x in (cond.get("reason"), cond.get("message")) if x)
            state = f"Ready={cond.get('status', 'Unknown')}" + (f" ({why})" if why else "")
            raise RolloutError(
                f'timed out after {timeout:g}s waiting for inferenceservice "{name}" in '
                f'namespace "{ns}" to become ready: {_one_line(state)}')
        time.sleep(min(interval, remaining))


def _describe(action: str, args: argparse.Namespace, before: dict) -> str:
    old = _component(before).get("canaryTrafficPercent")
    if action == "canary":
        what = []
        if args.storage_uri:
            what.append(f"{STORAGE_URI_ENV}={args.storage_uri}")
        if args.image:
            what.append(f"image={args.image}")
        change = (", " + ", ".join(what)) if what else ""
        return f"canaryTrafficPercent {old if old is not None else '-'} -> {args.percent}{change}"
    if action == "promote":
        return (f"canaryTrafficPercent {old if old is not None else '-'} -> removed "
                "(latest revision gets 100%)")
    return f"canaryTrafficPercent {old if old is not None else '-'} -> 0 (rolled back)"


def run(args: argparse.Namespace) -> int:
    # urllib3 logs connection retries as warnings; errors are reported as one line below.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        return _run(args)
    except compare.UsageError as e:
        print(f"{PROG} {args.action}: error: {_one_line(str(e), 500)}", file=sys.stderr)
        return 2
    except RolloutError as e:
        print(f"{PROG} {args.action}: error: {_one_line(str(e), 500)}", file=sys.stderr)
        return 1


def _load_manifest(path: str, name: str) -> dict:
    """The InferenceService named ``name`` (or the only one) in a YAML/JSON manifest file."""
    import yaml  # noqa: PLC0415 -- a dependency of kubernetes

    try:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as e:
        raise RolloutError(f"cannot read --manifest {path}: {_one_line(str(e))}") from e
    isvcs = [d for d in docs if d.get("kind") == KIND]
    named = [d for d in isvcs if (d.get("metadata") or {}).get("name") == name]
    if named or len(isvcs) == 1:
        return (named or isvcs)[0]
    raise RolloutError(f"--manifest {path} has no InferenceService named {name!r}")


def _patch_for(args: argparse.Namespace, before: dict | None) -> dict:
    if args.action == "canary":
        if before is None and (args.storage_uri or args.image):
            raise RolloutError(
                "dry run without a cluster: a canary that changes --storage-uri/--image replaces "
                "the predictor's containers, which are read from the InferenceService; pass "
                "--manifest FILE (the InferenceService as applied)")
        return canary_patch(before or {"spec": {"predictor": {}}}, args.percent,
                            args.storage_uri, args.image)
    return promote_patch() if args.action == "promote" else rollback_patch()


def _isvc_path(ns: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}/{name}"


def _print_dry_run(why: str, ns: str, name: str, plan: str, body: dict) -> int:
    """A dry run's one-patch plan on stderr and its body (JSON) on stdout."""
    print(f"{why}: would PATCH {_isvc_path(ns, name)} (application/merge-patch+json): {plan}; "
          "nothing sent", file=sys.stderr)
    print(json.dumps(body, indent=2))
    return 0


def _dry_run_offline(args: argparse.Namespace, why: str) -> int:
    before = _load_manifest(args.manifest, args.name) if args.manifest else None
    ns = args.namespace or ((before or {}).get("metadata") or {}).get("namespace") or "default"
    if _gated(args):
        return _print_step_plan(args, before, ns, f"dry run ({why})")
    body = _patch_for(args, before)
    plan = _describe(args.action, args, before or {"spec": {"predictor": {}}})
    return _print_dry_run(f"dry run ({why})", ns, args.name, plan, body)


def _run(args: argparse.Namespace) -> int:
    if args.action == "compare":
        return _run_compare(args)
    if args.manifest and not args.dry_run:
        raise RolloutError("--manifest is only for --dry-run (a write always reads the cluster)")
    if args.action == "canary":
        _check_gated_arguments(args)
    if args.dry_run and args.action != "status":
        if args.manifest:
            return _dry_run_offline(args, f"planned against {args.manifest}")
        try:
            api = IsvcApi(args.kubeconfig, args.context, args.request_timeout)
        except RolloutError as e:
            if args.kubeconfig:  # a kubeconfig named explicitly must work
                raise
            return _dry_run_offline(args, f"no cluster: {e}")
    else:
        api = IsvcApi(args.kubeconfig, args.context, args.request_timeout)
    ns = args.namespace or api.namespace
    name = args.name

    if args.action == "status":
        obj = api.get(name, ns)
        if args.wait:
            obj = _wait_ready(api, name, ns, args.timeout, args.poll_interval)
        s = summarize(obj)
        s["namespace"] = s["namespace"] or ns
        if args.output == "json":
            print(json.dumps(s, indent=2))
        else:
            print(format_status(s))
        return 0

    before = api.get(name, ns)
    if _gated(args):
        if args.dry_run:
            return _print_step_plan(args, before, ns, "dry run")
        return _run_steps(api, args, ns, before)
    body = _patch_for(args, before)

    if args.dry_run:
        return _print_dry_run("dry run", ns, name, _describe(args.action, args, before), body)

    after = api.patch(name, ns, body)
    gen = (after.get("metadata") or {}).get("generation")
    print(f"inferenceservice {ns}/{name} patched: {_describe(args.action, args, before)}"
          + (f" (generation {gen})" if gen is not None else ""))
    if args.wait:
        _wait_ready(api, name, ns, args.timeout, args.poll_interval)
        print(f"inferenceservice {ns}/{name} is ready")
    return 0


# --------------------------------------------------------------------------------------------
# the stable and canary revisions, side by side (rollout compare, rollout canary --steps)


def _flag(args: list, flag: str) -> str | None:
    """The value of ``flag`` in a container's args (``--flag V`` or ``--flag=V``), else None."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return str(args[i + 1])
        if str(arg).startswith(flag + "="):
            return str(arg)[len(flag) + 1:]
    return None


def routing_of(isvc: dict) -> tuple[str, str]:
    """``(revision header, model name)`` of an InferenceService whose predictor revisions can be
    reached one by one through its transformer.

    Needs Knative mode, the tag-routing annotation (KServe then tags the revisions ``latest`` and
    ``prev``; Knative gives each tag its host) and a transformer started with ``--revision_header``.

    Raises:
        RolloutError: naming what is missing.
    """
    meta = isvc.get("metadata") or {}
    ref = f'inferenceservice "{meta.get("name", "?")}"'
    ann = meta.get("annotations") or {}
    mode = ann.get(DEPLOYMENT_MODE_ANNOTATION)
    if mode in ("Standard", "RawDeployment"):
        raise RolloutError(f"{ref} runs in {mode} mode: predictor revisions and canaryTrafficPercent "
                           "exist in Knative mode only")
    if str(ann.get(TAG_ROUTING_ANNOTATION, "")).lower() != "true":
        raise RolloutError(f'{ref} lacks the annotation {TAG_ROUTING_ANNOTATION}: "true", so its '
                           "predictor revisions have no latest-/prev- hosts (manifests/ set it)")
    spec = (isvc.get("spec") or {}).get("transformer")
    if not isinstance(spec, dict) or not spec.get("containers"):
        raise RolloutError(f"{ref} has no transformer: the two predictor revisions are compared "
                           "through it (the same preprocessing for both)")
    args = _model_container(spec).get("args") or []
    header = _flag(args, REVISION_HEADER_FLAG)
    if not header:
        from yolo_contract.tensors import REVISION_HEADER

        raise RolloutError(f"the transformer of {ref} does not route requests to one predictor "
                           f"revision: add {REVISION_HEADER_FLAG} {REVISION_HEADER} to its args "
                           "(manifests/ do)")
    return header.lower(), _flag(args, "--model_name") or meta.get("name", "")


def analysis_target(isvc: dict) -> dict:
    """Where the two predictor revisions of a canary answer: ``{"url", "header", "model",
    "revisions": {"prev": name, "latest": name}}`` (URL: ``status.url``, else the transformer's).

    Raises:
        RolloutError: no routing (:func:`routing_of`), no URL yet, or no ``prev``/``latest`` tag in
            ``status.components.predictor.traffic`` (no canary in progress).
    """
    header, model = routing_of(isvc)
    name = (isvc.get("metadata") or {}).get("name", "?")
    st = isvc.get("status") or {}
    comps = st.get("components") or {}
    url = st.get("url") or (comps.get("transformer") or {}).get("url")
    if not url:
        raise RolloutError(f'inferenceservice "{name}" has no URL in its status yet (is it ready?)')
    tags = {t.get("tag"): t.get("revisionName")
            for t in (comps.get("predictor") or {}).get("traffic") or [] if t.get("tag")}
    missing = [t for t in ("prev", "latest") if t not in tags]
    if missing:
        raise RolloutError(
            f'no canary to compare: the predictor traffic of inferenceservice "{name}" has no '
            f"{' or '.join(missing)} tag (status.components.predictor.traffic); start one with "
            f"rollout canary {name} --percent P --storage-uri URI")
    return {"url": url, "header": header, "model": model,
            "revisions": {"prev": tags["prev"], "latest": tags["latest"]}}


def revision_endpoints(target: dict, url: str | None = None, host: str | None = None,
                       stable_headers=(), canary_headers=()) -> list:
    """The stable (``prev``) and canary (``latest``) endpoints of :func:`analysis_target`.

    ``url`` replaces the status URL (e.g. the ingress); the Host header is then the status URL's
    host unless ``host`` is given. The routing header wins over headers of the same name."""
    if url:
        host = host or urlsplit(target["url"]).hostname
    return [compare.Endpoint("stable", url or target["url"], {**dict(stable_headers), target["header"]: "prev"},
                             host),
            compare.Endpoint("canary", url or target["url"], {**dict(canary_headers), target["header"]: "latest"},
                             host)]


def _run_compare(args: argparse.Namespace) -> int:
    """``rollout compare``: the local form as it is, the cluster form through the ISVC's routing."""
    if args.stable_url or args.canary_url:
        return compare.run_compare(args)
    name, images = args.targets[0], args.targets[1:]
    if not images:
        raise compare.UsageError("give NAME and IMAGES (cluster form), or IMAGES with --stable-url and "
                                 "--canary-url (local form)")
    api = IsvcApi(args.kubeconfig, args.context, args.request_timeout)
    ns = args.namespace or api.namespace
    target = analysis_target(api.get(name, ns))
    endpoints = revision_endpoints(target, args.url, args.host, args.stable_header, args.canary_header)
    return compare.run_compare(args, images=images, endpoints=endpoints, model=args.model or target["model"],
                               settings={"inferenceservice": f"{ns}/{name}", "revisions": target["revisions"],
                                         "revision_header": target["header"]})


# --------------------------------------------------------------------------------------------
# gated rollout: rollout canary NAME --steps 10,50,100 --analyze IMAGES


def _gated(args: argparse.Namespace) -> bool:
    return args.action == "canary" and args.steps is not None


def _check_gated_arguments(args: argparse.Namespace) -> None:
    """Usage errors of ``canary --steps``, before any API call (images are collected here)."""
    if args.steps is None:
        if args.analyze:
            raise compare.UsageError("--analyze goes with --steps (a gated rollout)")
        return
    if not args.analyze:
        raise compare.UsageError("--steps needs --analyze IMAGES: the images compared at each step")
    from ..analysis import plan_steps

    try:
        plan_steps(args.steps)
    except ValueError as e:
        raise compare.UsageError(f"--steps: {e}") from None
    compare.check_analysis_arguments(args)
    args.analysis_paths = compare.image_paths(args.analyze)


def plan(args: argparse.Namespace, before: dict | None) -> list[tuple[int, dict]]:
    """``[(percent, merge patch)]`` of a gated rollout; the patch of 100 promotes.

    Without ``--storage-uri``/``--image`` it resumes the canary of ``before``: steps at or below its
    ``canaryTrafficPercent`` are skipped. ``before`` None (a dry run without cluster or manifest)
    plans every step.

    Raises:
        compare.UsageError: bad steps, no canary to resume, a new model straight at 100 %.
    """
    from ..analysis import plan_steps

    changes = bool(args.storage_uri or args.image)
    current = None if changes or before is None else _component(before).get("canaryTrafficPercent")
    if before is not None and not changes and current is None:
        raise compare.UsageError("no canary in progress (spec.predictor.canaryTrafficPercent is unset): "
                                 "give --storage-uri or --image")
    try:
        steps = plan_steps(args.steps, current)
    except ValueError as e:
        raise compare.UsageError(f"--steps: {e}") from None
    if changes and steps and steps[0] == 100:
        raise compare.UsageError("--steps: a new predictor needs a step below 100 (each step is "
                                 "analysed before the next)")
    if changes and before is None:
        raise RolloutError(
            "dry run without a cluster: a canary that changes --storage-uri/--image replaces the "
            "predictor's containers, which are read from the InferenceService; pass --manifest FILE")
    base = before or {"spec": {"predictor": {}}}
    out = []
    for k, pct in enumerate(steps):
        if pct == 100:
            out.append((pct, promote_patch()))
        elif k == 0:
            out.append((pct, canary_patch(base, pct, args.storage_uri, args.image)))
        else:
            out.append((pct, canary_patch(base, pct)))
    return out


def _gate_text(args: argparse.Namespace) -> str:
    parts = [f"F1 >= {args.min_f1:g}"] if args.min_f1 is not None else []
    parts.append(f"error rate <= {args.max_error_rate:g}")
    if args.max_map_drop is not None:
        parts.append(f"mAP@0.5:0.95 drop <= {args.max_map_drop:g}")
    return ", ".join(parts)


def _print_step_plan(args: argparse.Namespace, before: dict | None, ns: str, why: str) -> int:
    if before is not None:
        routing_of(before)
    steps = plan(args, before)
    n = len(args.analysis_paths)
    doc = {"steps": [{"percent": pct, "patch": body,
                      "then": "promote" if pct == 100 else f"wait until ready, then compare prev and "
                      f"latest on {n} images (gate: {_gate_text(args)})"} for pct, body in steps],
           "on_failure": rollback_patch()}
    print(f"{why}: would PATCH {_isvc_path(ns, args.name)} (application/merge-patch+json) step by step: "
          + " -> ".join("promote" if pct == 100 else f"{pct}%" for pct, _ in steps)
          + "; rollback on a failed gate; nothing sent", file=sys.stderr)
    print(json.dumps(doc, indent=2))
    return 0


def _analyze(args: argparse.Namespace, obj: dict, percent: int) -> dict:
    """One step's compare of the prev and latest revisions (the report, gate included)."""
    target = analysis_target(obj)
    view = argparse.Namespace(**{**vars(args), "timeout": args.infer_timeout})
    report = compare.compare(args.analysis_paths, revision_endpoints(target, args.url, args.host), view,
                             model=args.model or target["model"], progress=False, routed=True,
                             settings={"step": percent, "revisions": target["revisions"],
                                       "revision_header": target["header"]})
    if args.report_dir:
        compare.write_report(report, os.path.join(args.report_dir, f"step-{percent}.json"))
    return report


def _verdict(report: dict) -> str:
    ag, st, ca = report["agreement"], report["stable"], report["canary"]
    f1 = "-" if ag.get("f1") is None or not report["images"]["compared"] else f"{ag['f1']:.3f}"
    return (f"F1 {f1} on {report['images']['compared']} images, errors stable {st['errors']}/{st['requests']} "
            f"canary {ca['errors']}/{ca['requests']}")


def _run_steps(api: IsvcApi, args: argparse.Namespace, ns: str, before: dict) -> int:
    """Each step: patch, wait until ready, (pause,) compare prev and latest, gate; 100 promotes.
    The first failed gate, or a step that cannot be completed, rolls back (canaryTrafficPercent 0)."""
    name = args.name
    routing_of(before)  # what the analysis needs, checked before the first write
    steps = plan(args, before)
    if not steps:
        print(f"nothing to do: inferenceservice {ns}/{name} is at canaryTrafficPercent "
              f"{_component(before).get('canaryTrafficPercent')} already (steps {args.steps})")
        return 0
    print(f"gated rollout of inferenceservice {ns}/{name}: "
          + " -> ".join("promote" if pct == 100 else f"{pct}%" for pct, _ in steps)
          + f"; gate at each step: {_gate_text(args)} on {len(args.analysis_paths)} images")
    obj, analysed, wrote = before, False, False
    for pct, body in steps:
        try:
            if pct == 100 and not analysed:  # resuming straight to promotion: judge what runs now
                analysed = _judge(args, obj, _component(obj).get("canaryTrafficPercent"))
                if not analysed:
                    return _roll_back(api, args, ns, obj)
            old = _component(obj).get("canaryTrafficPercent")
            after = api.patch(name, ns, body)
            wrote = True
            what = ("canaryTrafficPercent removed (the latest revision gets 100%)" if pct == 100 else
                    f"canaryTrafficPercent {'-' if old is None else old} -> {pct}"
                    + (f", {STORAGE_URI_ENV}={args.storage_uri}" if args.storage_uri and old is None else "")
                    + (f", image={args.image}" if args.image and old is None else ""))
            print(f"step {'promote' if pct == 100 else f'{pct}%'}: patched {what} "
                  f"(generation {(after.get('metadata') or {}).get('generation')})")
            obj = _wait_ready(api, name, ns, args.timeout, args.poll_interval)
            if pct == 100:
                print(f"promoted: inferenceservice {ns}/{name} is ready, the latest revision serves 100%")
                return 0
            if args.pause:
                time.sleep(args.pause)
            analysed = _judge(args, obj, pct)
        except (RolloutError, compare.LabelsError, OSError) as e:
            if pct == 100 or not wrote:  # a failed promotion, or nothing of ours to undo
                raise
            print(f"step {pct}%: cannot complete: {_one_line(str(e))}")
            _roll_back(api, args, ns, obj)
            raise RolloutError(f"step {pct}% could not be completed ({_one_line(str(e))}); rolled back") from e
        if not analysed:
            return _roll_back(api, args, ns, obj)
    print(f"inferenceservice {ns}/{name} stays at canaryTrafficPercent {steps[-1][0]} (no 100 step); "
          f"promote with: {PROG} promote {name} -n {ns}")
    return 0


def _judge(args: argparse.Namespace, obj: dict, percent: Any) -> bool:
    report = _analyze(args, obj, percent)
    print(compare.format_table(report))
    g = report["gate"]
    print(f"step {percent}%: {_verdict(report)}: "
          + ("gate passed" if g["passed"] else "gate FAILED: " + "; ".join(g["reasons"])))
    return bool(g["passed"])


def _roll_back(api: IsvcApi, args: argparse.Namespace, ns: str, obj: dict) -> int:
    old = _component(obj).get("canaryTrafficPercent")
    api.patch(args.name, ns, rollback_patch())
    traffic = (((obj.get("status") or {}).get("components") or {}).get("predictor") or {}).get("traffic") or []
    prev = next((t.get("revisionName") for t in traffic if t.get("tag") == "prev"), None)
    print(f"rolled back: canaryTrafficPercent {'-' if old is None else old} -> 0, all traffic to the "
          "last rolled-out revision" + (f" ({prev})" if prev else ""))
    return 1


__all__ = ["register", "run", "IsvcApi", "RolloutError", "canary_patch", "promote_patch",
           "rollback_patch", "summarize", "format_status", "is_ready", "routing_of", "analysis_target",
           "revision_endpoints", "plan"]
