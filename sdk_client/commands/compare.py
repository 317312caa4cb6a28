"""``yolo-kserve rollout compare``: the same images to a stable and a canary endpoint, answers compared.

Two forms (the rollout command parses them and calls :func:`run_compare`):

* local: ``rollout compare IMAGES... --stable-url URL --canary-url URL``: any two transformers;
* cluster: ``rollout compare NAME -n NS IMAGES...``: the InferenceService's transformer (its
  ``status.url``, or ``--url``), with the revision header set to ``prev`` on the stable side and
  ``latest`` on the canary side, so that both predictor revisions of a canary answer through the
  same transformer (``sdk_client.commands.rollout.analysis_target`` finds URL and header).

Every image (files, folders, globs) goes to both endpoints with a low confidence (``--map-conf``,
default 0.005) so that the canary's detections can be ranked for mAP. Everything else is measured
at the served threshold (``--conf``, default the servers' own 0.5) by keeping ``confidence >
--conf`` on the client: the predictor pre-filters boxes on objectness > threshold and suppresses in
objectness order, so the extra low-confidence boxes can never suppress or change one above the
threshold, and the filtered answer equals the served one (up to the 6 decimals of the response).

Report (table on stdout, JSON with ``--output``; layout in :func:`analyze`): agreement of the
canary with the stable model (detections matched by class at IoU >= ``--iou``: precision, recall,
F1, mAP@0.5 with stable as the reference), per-class changes, confidence shift, latency p50/p95,
errors and the model versions that answered each endpoint; with ``--labels`` (COCO JSON or a folder
of YOLO ``.txt`` files) also mAP@0.5 and mAP@0.5:0.95 of both against the ground truth. Exit status:
0, 1 when the gate fails (``--min-f1``, ``--max-error-rate``, ``--max-map-drop``, no image answered
by both, or in the cluster form a side answered by several model versions), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from sdk_client.commands import argtypes

PROG = "yolo-kserve rollout compare"
SCHEMA = "yolo-kserve-compare/1"
#: Confidence sent for the mAP ranking (COCO practice is 0.001..0.05; lower costs NMS time).
DEFAULT_MAP_CONFIDENCE = 0.005
#: Error messages kept per endpoint in the report.
MAX_ERROR_SAMPLES = 5
SIDES = ("stable", "canary")
DESCRIPTION = ("Send the same images to a stable and a canary endpoint and report how far the canary "
               "agrees with stable (precision, recall, F1, mAP@0.5), per-class changes, the confidence "
               "shift, latency, errors and model versions of each; with --labels also mAP against "
               "ground truth. Local form: IMAGES... --stable-url URL --canary-url URL. Cluster form: "
               "NAME IMAGES... (the InferenceService's prev and latest predictor revisions, through its "
               "transformer).")


class UsageError(ValueError):
    """Bad arguments: reported as one line, exit status 2."""


def _served_confidence() -> float:
    """The servers' default ``confidence`` (declared once, in the tensor contract)."""
    from yolo_contract.tensors import PARAMETERS

    return float(next(p.default for p in PARAMETERS if p.name == "confidence"))


# --------------------------------------------------------------------------------------------
# arguments


def _header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def add_analysis_arguments(parser: argparse.ArgumentParser) -> None:
    """The analysis and gate options (``rollout compare`` and ``rollout canary --steps``)."""
    g = parser.add_argument_group("analysis")
    g.add_argument("-c", "--concurrency", type=argtypes.positive_int, default=2, metavar="N",
                   help="images in flight; each goes to both endpoints (default: %(default)s)")
    g.add_argument("--conf", type=argtypes.fraction, default=_served_confidence(), metavar="P",
                   help="confidence threshold of the agreement and counts: the served one "
                   "(default: %(default)s, the servers' default)")
    g.add_argument("--map-conf", type=argtypes.confidence, default=DEFAULT_MAP_CONFIDENCE, metavar="P",
                   help="confidence sent to both endpoints, for mAP ranking (>= 0.001, <= --conf; "
                   "default: %(default)s)")
    g.add_argument("--iou", type=argtypes.fraction, default=0.5, metavar="P",
                   help="IoU at which a canary detection matches a stable one (default: %(default)s)")
    g.add_argument("--labels", metavar="PATH",
                   help="ground truth: a COCO JSON file or a folder of YOLO .txt files "
                   "(class cx cy w h, normalised); adds mAP@0.5 and mAP@0.5:0.95 of both")
    g.add_argument("--label-category-ids", choices=("index", "coco91"), default="index",
                   help="COCO JSON category ids: the model's class index, or the official COCO "
                   "ids of the 80 classes (default: %(default)s)")

    g = parser.add_argument_group("gate (exit status 1 when a check fails)")
    g.add_argument("--min-f1", type=argtypes.fraction, metavar="F",
                   help="least agreement F1 of the canary with stable")
    g.add_argument("--max-error-rate", type=argtypes.fraction, default=0.0, metavar="R",
                   help="largest share of failed requests per endpoint, after retries "
                   "(default: %(default)s)")
    g.add_argument("--max-map-drop", type=argtypes.fraction, metavar="D",
                   help="with --labels: largest drop of the canary's mAP@0.5:0.95 below stable's")


def add_endpoint_arguments(parser: argparse.ArgumentParser, *, timeout_flag: str = "--timeout") -> None:
    """Connection options (``detect``'s, described for the two forms)."""
    from .detect import add_connection_arguments

    add_connection_arguments(
        parser, timeout_flag=timeout_flag,
        url_help="the transformer URL to use instead of the InferenceService's status.url (e.g. "
        "http://$INGRESS_HOST:$INGRESS_PORT; the Host header is then status.url's host)",
        model_help="model name (default: the InferenceService's model name; local form: yolov3)")


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Every ``rollout compare`` option, on ``parser`` (positional ``[NAME] IMAGES`` included)."""
    parser.add_argument("targets", nargs="+", metavar="NAME|IMAGES",
                        help="cluster form: the InferenceService name, then images; local form (with "
                        "--stable-url/--canary-url): images. Images are files, folders (searched "
                        "recursively) or glob patterns")
    g = parser.add_argument_group("endpoints")
    for side in SIDES:
        g.add_argument(f"--{side}-url", metavar="URL",
                       help=f"local form: the {side} transformer URL (host:port for gRPC)")
        g.add_argument(f"--{side}-header", type=_header, action="append", default=[],
                       metavar="K=V", help=f"header sent to the {side} endpoint only (repeatable), e.g. "
                       "x-model-revision=prev or an auth token")
    add_endpoint_arguments(parser)
    add_analysis_arguments(parser)
    g = parser.add_argument_group("output")
    g.add_argument("-o", "--output", metavar="FILE.json", help="write the report as JSON")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no table")


# --------------------------------------------------------------------------------------------
# collection


@dataclass(frozen=True)
class Endpoint:
    """One side of the comparison."""

    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    host: str | None = None


@dataclass
class Outcome:
    """What one endpoint answered for one image: a result or an error, and the request's time."""

    result: Any = None  # DetectionResult
    error: str | None = None
    seconds: float | None = None


def _short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]


def image_paths(args: Sequence[str]) -> list[str]:
    """The image files named by ``args`` (files, folders, globs; see ``sdk_client.sources``).

    Raises:
        UsageError: an argument matches nothing, or names a video or a URL.
    """
    from ..sources import collect as collect_sources

    sources, problems = collect_sources(args)
    others = [s for s in sources if s.kind != "image"]
    problems += [f"{s.display} is a {s.kind}: compare takes image files" for s in others[:1]]
    if problems:
        raise UsageError("; ".join(problems))
    if not sources:
        raise UsageError("no images found")
    return [s.display for s in sources]


def collect(
    paths: Sequence[str],
    endpoints: Sequence[Endpoint],
    *,
    model: str,
    protocol: str,
    timeout: float,
    retries: int,
    confidence: float,
    concurrency: int = 2,
    progress: bool = True,
    v2_binary: bool = False,
) -> tuple[dict[str, list[Outcome]], list[tuple[str, str]]]:
    """Send every image to every endpoint; ``({endpoint name: [Outcome per path]}, unreadable)``.

    Each image is read once and sent to the endpoints one after the other, the order alternating
    between images so neither side always goes first; at most ``concurrency`` images are in flight
    (the SDK's bounded pool). Latency is the client-side time of ``detect`` (retries included).
    ``unreadable`` lists ``(path, error)`` of files that could not be read (their outcomes stay
    empty), in input order.
    """
    from tqdm import tqdm

    from .._pool import bounded_map
    from ..client import DetectionClient

    # kserve's gRPC client logs every failed call with a traceback; failures are counted here.
    logging.getLogger("grpc").setLevel(logging.CRITICAL + 1)
    clients = [DetectionClient(e.url, model=model, host=e.host, protocol=protocol, timeout=timeout,
                               retries=retries, headers=dict(e.headers), v2_binary=v2_binary)
               for e in endpoints]
    outcomes = {e.name: [Outcome() for _ in paths] for e in endpoints}
    unreadable: list[tuple[str, str]] = []

    def one(i: int) -> str | None:
        try:
            data = Path(paths[i]).read_bytes()
        except OSError as e:
            return f"{type(e).__name__}: {e.strerror or e}"
        order = range(len(endpoints)) if i % 2 == 0 else reversed(range(len(endpoints)))
        for k in order:
            out = outcomes[endpoints[k].name][i]
            t0 = time.perf_counter()
            try:
                out.result = clients[k].detect(data, confidence=confidence)
                out.result.image = paths[i]
            except Exception as e:  # noqa: BLE001 -- any failure is this endpoint's error for the image
                out.error = _short_error(e)
            out.seconds = time.perf_counter() - t0
        return None

    bar = tqdm(total=len(paths), unit="img", desc="compare", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        for i, why in bounded_map(one, range(len(paths)), concurrency, thread_name_prefix="compare"):
            if why is not None:
                unreadable.append((paths[i], why))
            bar.update(1)
    finally:
        bar.close()
        for c in clients:
            c.close()
    return outcomes, unreadable

# --------------------------------------------------------------------------------------------
# ground truth


class LabelsError(ValueError):
    """Ground truth that cannot be read or matched to the images."""


def to_boxes(result: Any, key: str = "name", category_ids: str = "index"):
    """:class:`~sdk_client.analysis.Boxes` of a ``DetectionResult``.

    ``key``: ``"name"`` (class names, for model-vs-model agreement), ``"id"`` (class index, YOLO
    labels) or ``"coco"`` (COCO category id under ``category_ids``, COCO JSON labels).
    """
    from ..analysis import Boxes

    dets = result.detections
    if key == "name":
        keys = [d.class_name for d in dets]
    elif key == "id":
        keys = [d.class_id for d in dets]
    else:
        keys = [d.to_coco(0, category_ids)["category_id"] for d in dets]
    return Boxes.create([d.xyxy for d in dets], keys, [d.confidence for d in dets])


def _coco_index(path: str) -> dict[str, list]:
    """COCO JSON -> ``{file_name: [(category_id, xyxy), ...]}``, also keyed by base name.

    Crowd annotations (``iscrowd: 1``) are dropped: COCOeval would ignore detections on them,
    here such a detection counts as a false positive.
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        by_id = {img["id"]: str(img["file_name"]) for img in doc["images"]}
        boxes: dict[str, list] = {name: [] for name in by_id.values()}
        for ann in doc.get("annotations", []):
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes[by_id[ann["image_id"]]].append((int(ann["category_id"]), (x, y, x + w, y + h)))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LabelsError(f"cannot read COCO labels {path}: {type(e).__name__}: {e}") from e
    index = dict(boxes)
    for name, items in boxes.items():
        index.setdefault(os.path.basename(name), items)
    return index


def _yolo_file(path: Path, width: int, height: int) -> list:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) < 5:
                raise ValueError(f"expected 'class cx cy w h', got {line.strip()!r}")
            cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
        except ValueError as e:
            raise LabelsError(f"{path}:{n}: {e}") from e
        cx, cy, w, h = cx * width, cy * height, w * width, h * height
        out.append((cls, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)))
    return out


def load_labels(labels: str, paths: Sequence[str], sizes: Sequence[tuple[int, int]]) -> tuple[list, str]:
    """Ground-truth ``[(class key, xyxy), ...]`` per image (``None``: not labelled) and the key kind.

    ``labels`` is a COCO JSON file (images matched by ``file_name``, else base name; images absent
    from it are not labelled) or a folder of YOLO ``<stem>.txt`` files (normalised ``class cx cy
    w h`` against ``sizes``, the decoded image sizes; a missing file means no object, as in YOLO
    training sets). Returns ``(per image, "coco" | "id")``.
    """
    if os.path.isdir(labels):
        out = []
        found = 0
        for path, (w, h) in zip(paths, sizes):
            txt = Path(labels) / (Path(path).stem + ".txt")
            if txt.is_file():
                found += 1
                out.append(_yolo_file(txt, w, h))
            else:
                out.append([])
        if not found:
            raise LabelsError(f"no <image stem>.txt file in {labels} for any of the images")
        return out, "id"
    index = _coco_index(labels)
    out = [index.get(os.path.normpath(p), index.get(os.path.basename(p))) for p in paths]
    if all(x is None for x in out):
        raise LabelsError(f"none of the images is listed in {labels} (matched by file_name or base name)")
    return out, "coco"

# --------------------------------------------------------------------------------------------
# analysis


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (as ``bench`` reports); ``None`` for no values."""
    import numpy as np

    return float(np.percentile(values, q, method="inverted_cdf")) if len(values) else None


def _endpoint_summary(endpoint: Endpoint, outcomes: Sequence[Outcome], served: Sequence[Any]) -> dict[str, Any]:
    """One endpoint's part of the report; ``served``: its boxes above ``--conf`` per compared image."""
    sent = [o for o in outcomes if o.seconds is not None]
    ok = [o.seconds for o in sent if o.error is None]
    errors = [o.error for o in sent if o.error is not None]
    counts = [len(b) for b in served]
    confs = [s for b in served for s in b.scores]
    versions: dict[str, int] = {}
    for o in sent:
        if o.result is not None:
            key = o.result.model_version or "unknown"
            versions[key] = versions.get(key, 0) + 1

    def ms(x: float | None) -> float | None:
        return None if x is None else round(x * 1000.0, 3)

    return {
        "url": endpoint.url,
        "requests": len(sent),
        "errors": len(errors),
        "error_rate": round(len(errors) / len(sent), 6) if sent else None,
        "error_samples": errors[:MAX_ERROR_SAMPLES],
        "model_versions": dict(sorted(versions.items())),
        "latency_ms": {"n": len(ok), "p50": ms(_percentile(ok, 50)), "p95": ms(_percentile(ok, 95)),
                       "mean": ms(sum(ok) / len(ok)) if ok else None, "max": ms(max(ok, default=None))},
        "detections": sum(counts),
        "detections_per_image": round(sum(counts) / len(counts), 6) if counts else None,
        "images_without_detections": sum(1 for n in counts if n == 0),
        "mean_confidence": round(sum(confs) / len(confs), 6) if confs else None,
    }


def analyze(
    paths: Sequence[str],
    outcomes: Mapping[str, Sequence[Outcome]],
    endpoints: Sequence[Endpoint],
    *,
    confidence: float,
    iou_threshold: float = 0.5,
    labels: str | None = None,
    label_category_ids: str = "index",
    settings: Mapping[str, Any] | None = None,
    unreadable: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The comparison report (JSON-ready).

    Layout (``schema`` = :data:`SCHEMA`; times in ms; ``null`` where undefined)::

        settings      what was sent and the thresholds
        images        {total, compared (answered by both), unreadable: [[path, error]],
                       labelled (with --labels)}
        stable|canary {url, requests, errors, error_rate, error_samples, model_versions {version:
                       answers} ("unknown" where the server names none), latency_ms {n, p50, p95,
                       mean, max}, detections, detections_per_image, images_without_detections,
                       mean_confidence}     (counts above --conf, over the compared images)
        agreement     {images, tp, fp, fn, precision, recall, f1, map50, mean_iou,
                       confidence_shift {mean, median, mean_abs}, per_class {name: {stable, canary,
                       matched, precision, recall, f1, mean_confidence_stable|canary}},
                       worst_images [{image, f1, stable, canary, matched}]}
        ground_truth  null, or {images, stable|canary: {map50, map50_95, per_class}}

    :func:`compare` adds ``gate {passed, reasons, min_f1, max_error_rate, max_map_drop}`` and
    ``notes`` (a list of remarks, e.g. both sides answered by the same model version).
    """
    from .. import analysis

    stable, canary = (outcomes[e.name] for e in endpoints)
    both = [i for i in range(len(paths)) if stable[i].result is not None and canary[i].result is not None]
    boxes = {e.name: [to_boxes(outcomes[e.name][i].result) for i in both] for e in endpoints}
    served = {name: [b.above(confidence) for b in bs] for name, bs in boxes.items()}
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "settings": dict(settings or {}),
        "images": {"total": len(paths), "compared": len(both), "unreadable": [list(u) for u in unreadable]},
    }
    for e in endpoints:
        report[e.name] = _endpoint_summary(e, outcomes[e.name], served[e.name])
    agree = analysis.agreement(boxes[endpoints[0].name], boxes[endpoints[1].name], confidence=confidence,
                               iou_threshold=iou_threshold)
    worst = []
    for j, i in enumerate(both):
        one = analysis.match_counts([served[endpoints[0].name][j]], [served[endpoints[1].name][j]],
                                    iou_threshold)
        if one["f1"] < 1.0:
            worst.append({"image": paths[i], "f1": one["f1"], "stable": one["tp"] + one["fn"],
                          "canary": one["tp"] + one["fp"], "matched": one["tp"]})
    agree["worst_images"] = sorted(worst, key=lambda w: (w["f1"], w["image"]))[:10]
    agree["images_with_changes"] = len(worst)
    report["agreement"] = agree

    report["ground_truth"] = None
    if labels:
        sizes = [(stable[i].result.width, stable[i].result.height) for i in both]
        truth, kind = load_labels(labels, [paths[i] for i in both], sizes)
        labelled = [j for j, t in enumerate(truth) if t is not None]
        report["images"]["labelled"] = len(labelled)
        gt = [analysis.Boxes.create([b for _, b in truth[j]], [k for k, _ in truth[j]]) for j in labelled]
        report["ground_truth"] = {"images": len(labelled)}
        for e in endpoints:
            dets = [to_boxes(outcomes[e.name][both[j]].result, kind, label_category_ids) for j in labelled]
            report["ground_truth"][e.name] = analysis.ground_truth_map(gt, dets)
    return report


# --------------------------------------------------------------------------------------------
# output


def _f(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _versions(side: Mapping[str, Any]) -> str:
    return ",".join(side.get("model_versions") or {}) or "-"


def format_table(report: Mapping[str, Any]) -> str:
    """The report as a terminal table."""
    s = report["settings"]
    st, ca, ag = report["stable"], report["canary"], report["agreement"]
    img = report["images"]
    revs = s.get("revisions")
    if revs:
        lines = [f"compared {img['compared']} of {img['total']} images through {st['url']}: stable = revision "
                 f"{revs['prev']} (prev), canary = revision {revs['latest']} (latest)"]
    else:
        lines = [f"compared {img['compared']} of {img['total']} images: stable {st['url']}  canary {ca['url']}"]
    rows = [
        ("latency p50 (ms)", _f(st["latency_ms"]["p50"], ".1f"), _f(ca["latency_ms"]["p50"], ".1f")),
        ("latency p95 (ms)", _f(st["latency_ms"]["p95"], ".1f"), _f(ca["latency_ms"]["p95"], ".1f")),
        ("errors", f"{st['errors']}/{st['requests']}", f"{ca['errors']}/{ca['requests']}"),
        (f"detections (conf > {s['conf']:g})", str(st["detections"]), str(ca["detections"])),
        ("detections per image", _f(st["detections_per_image"], ".2f"), _f(ca["detections_per_image"], ".2f")),
        ("images without detections", str(st["images_without_detections"]), str(ca["images_without_detections"])),
        ("mean confidence", _f(st["mean_confidence"]), _f(ca["mean_confidence"])),
        ("model version", _versions(st), _versions(ca)),
    ]
    lines.append(f"  {'':<30}{'stable':>14}{'canary':>14}")
    lines += [f"  {a:<30}{b:>14}{c:>14}" for a, b, c in rows]
    shift = ag["confidence_shift"]
    lines += [
        "",
        f"agreement of canary with stable (same class, IoU >= {s['iou']:g}, conf > {s['conf']:g}; "
        f"mAP ranks canary boxes down to {s['map_conf']:g})",
        f"  precision {_f(ag['precision'])}  recall {_f(ag['recall'])}  F1 {_f(ag['f1'])}  "
        f"mAP@0.5 {_f(ag['map50'])}",
        f"  matched {ag['tp']}, canary only {ag['fp']}, stable only {ag['fn']}; mean IoU {_f(ag['mean_iou'])}; "
        f"confidence shift {_f(shift['mean'], '+.3f')} (median {_f(shift['median'], '+.3f')}); "
        f"{ag['images_with_changes']} images changed",
    ]
    changed = {k: v for k, v in ag["per_class"].items() if v["matched"] != v["stable"] or v["matched"] != v["canary"]}
    if ag["per_class"]:
        lines += ["", f"  {'class':<18}{'stable':>7}{'canary':>7}{'matched':>8}{'recall':>8}{'prec.':>8}"
                      f"{'conf s':>8}{'conf c':>8}"]
        for k, v in sorted(ag["per_class"].items(), key=lambda kv: (kv[0] not in changed, -kv[1]["stable"], kv[0])):
            lines.append(f"  {k[:18]:<18}{v['stable']:>7}{v['canary']:>7}{v['matched']:>8}{_f(v['recall']):>8}"
                         f"{_f(v['precision']):>8}{_f(v['mean_confidence_stable']):>8}"
                         f"{_f(v['mean_confidence_canary']):>8}")
    gt = report.get("ground_truth")
    if gt:
        lines += ["", f"ground truth ({gt['images']} labelled images)",
                  f"  {'':<30}{'stable':>14}{'canary':>14}",
                  f"  {'mAP@0.5':<30}{_f(gt['stable']['map50']):>14}{_f(gt['canary']['map50']):>14}",
                  f"  {'mAP@0.5:0.95':<30}{_f(gt['stable']['map50_95']):>14}{_f(gt['canary']['map50_95']):>14}"]
    g = report.get("gate")
    if g:
        lines.append("")
        lines += [f"note: {n}" for n in report.get("notes") or ()]
        lines.append("gate: PASSED" if g["passed"] else "gate: FAILED: " + "; ".join(g["reasons"]))
    return "\n".join(lines)



# --------------------------------------------------------------------------------------------
# run


def _usage(msg: str) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return 2


def local_endpoints(args: argparse.Namespace) -> list[Endpoint]:
    """The two endpoints of the local form (``--stable-url``/``--canary-url``)."""
    if not args.stable_url or not args.canary_url:
        raise UsageError("give --stable-url and --canary-url (local form), or NAME first (cluster form)")
    if args.url:
        raise UsageError("--url is for the cluster form (NAME); the local form takes --stable-url and --canary-url")
    return [Endpoint("stable", args.stable_url, dict(args.stable_header), args.host),
            Endpoint("canary", args.canary_url, dict(args.canary_header), args.host)]


def check_analysis_arguments(args: argparse.Namespace) -> None:
    """Usage errors of the analysis options, found before anything is sent.

    Raises:
        UsageError: ``--map-conf`` above ``--conf``, ``--max-map-drop`` without labels, missing labels.
    """
    if args.map_conf > args.conf:
        raise UsageError(f"--map-conf {args.map_conf:g} is above --conf {args.conf:g}")
    if args.max_map_drop is not None and not args.labels:
        raise UsageError("--max-map-drop needs --labels")
    if args.labels and not os.path.exists(args.labels):
        raise UsageError(f"--labels {args.labels!r} does not exist")


def compare(paths: Sequence[str], endpoints: Sequence[Endpoint], args: argparse.Namespace, *,
            model: str, progress: bool, settings: Mapping[str, Any] | None = None,
            routed: bool = False) -> dict[str, Any]:
    """Collect, analyse and gate: the report with its ``gate`` (and ``notes``).

    ``args`` holds the :func:`add_analysis_arguments` options and ``protocol``, ``timeout``,
    ``retries``, ``v2_binary``. ``routed``: each endpoint is one revision picked by header, so a
    side answered by several model versions fails the gate (the transformer did not route).

    Raises:
        LabelsError: the ground truth cannot be read or matched.
    """
    from ..analysis import gate

    outcomes, unreadable = collect(
        paths, endpoints, model=model, protocol=args.protocol, timeout=args.timeout, retries=args.retries,
        confidence=args.map_conf, concurrency=args.concurrency, progress=progress,
        v2_binary=getattr(args, "v2_binary", False))
    for path, why in unreadable:
        print(f"{PROG}: cannot read {path}: {why}", file=sys.stderr)
    base = {"conf": args.conf, "map_conf": args.map_conf, "iou": args.iou, "model": model,
            "protocol": args.protocol, "labels": args.labels,
            "header_names": {e.name: sorted(e.headers) for e in endpoints}}
    report = analyze(paths, outcomes, endpoints, confidence=args.conf, iou_threshold=args.iou,
                     labels=args.labels, label_category_ids=args.label_category_ids,
                     settings={**base, **(settings or {})}, unreadable=unreadable)
    passed, reasons = gate(report, min_f1=args.min_f1, max_error_rate=args.max_error_rate,
                           max_map_drop=args.max_map_drop, one_version_per_side=routed)
    report["gate"] = {"passed": passed, "reasons": reasons, "min_f1": args.min_f1,
                      "max_error_rate": args.max_error_rate, "max_map_drop": args.max_map_drop}
    versions = [set(report[e.name]["model_versions"]) - {"unknown"} for e in endpoints]
    report["notes"] = []
    if len(versions[0]) == 1 and versions[0] == versions[1]:
        report["notes"].append(f"both sides answered model version {next(iter(versions[0]))}: the same "
                               "model files (or the same revision)")
    return report


def write_report(report: Mapping[str, Any], path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)


def run_compare(args: argparse.Namespace, *, images: Sequence[str] | None = None,
                endpoints: Sequence[Endpoint] | None = None, model: str | None = None,
                settings: Mapping[str, Any] | None = None) -> int:
    """Run a comparison from parsed :func:`add_compare_arguments` options; returns the exit code.

    Local form: everything comes from ``args`` (``args.targets`` are the images). The cluster form
    (``sdk_client.commands.rollout``) passes the images, the two routed endpoints, the model name
    and what it resolved (recorded under ``settings``).
    """
    routed = endpoints is not None
    try:
        eps = list(endpoints) if routed else local_endpoints(args)
        check_analysis_arguments(args)
        paths = image_paths(args.targets if images is None else images)
    except UsageError as e:
        return _usage(str(e))
    from ..client import DEFAULT_MODEL

    try:
        report = compare(paths, eps, args, model=model or args.model or DEFAULT_MODEL, progress=not args.quiet,
                         settings=settings, routed=routed)
    except LabelsError as e:
        return _usage(str(e))
    if args.output:
        write_report(report, args.output)
    if not args.quiet:
        print(format_table(report))
    elif not report["gate"]["passed"]:
        print(f"{PROG}: gate failed: " + "; ".join(report["gate"]["reasons"]), file=sys.stderr)
    return 0 if report["gate"]["passed"] else 1


__all__ = ["add_compare_arguments", "add_analysis_arguments", "add_endpoint_arguments", "run_compare",
           "compare", "collect", "analyze", "format_table", "image_paths", "check_analysis_arguments",
           "write_report", "load_labels", "to_boxes", "Endpoint", "Outcome", "LabelsError", "UsageError",
           "SCHEMA"]
