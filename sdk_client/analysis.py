"""Canary analysis: detection matching, agreement between two models, mAP, rollout gates.

Pure numpy, no server or network code: :mod:`sdk_client.commands.compare` feeds it the detections
of two endpoints (and optionally ground truth) and prints what it returns.

Conventions:

* One image's detections (or ground-truth objects) are a :class:`Boxes`: ``xyxy`` pixel corners,
  hashable class keys (names for model-vs-model agreement, ids against ground truth) and scores.
* Matching is COCO's (``pycocotools.cocoeval.COCOeval.evaluateImg``): per image and class,
  detections in descending score order (stable sort), each takes the unmatched reference box
  with the highest IoU >= the threshold (ties go to the later reference box, as COCO's loop does).
* mAP follows ``COCOeval.accumulate``/``summarize`` for bounding boxes, area range ``all`` and
  ``maxDets=100``: per class, detections of all images ranked by score (stable sort, images in the
  order given), precision made monotone, read at the 101 recall points ``0, 0.01, ..., 1``
  (``searchsorted(side="left")``, 0 past the last recall reached); AP is the mean of those 101
  values; classes without reference boxes are left out of the mean; mAP@0.5:0.95 averages the 10
  IoU thresholds ``0.5, 0.55, ..., 0.95``. Not modelled (absent from our data): crowd regions,
  the ``ignore`` flag, and the small/medium/large area ranges (``area`` is never consulted: the
  ``all`` range ``[0, 1e10]`` only excludes boxes larger than 1e10 px²).
* Agreement takes the **stable** model's detections as the reference ("ground truth") and the
  canary's as predictions: precision = share of canary detections that stable also has, recall =
  share of stable detections the canary reproduces, F1 their harmonic mean, mAP@0.5 with the
  canary's confidences for ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "Boxes",
    "COCO_IOU_THRESHOLDS",
    "COCO_RECALL_THRESHOLDS",
    "MapResult",
    "iou_matrix",
    "match_image",
    "evaluate_map",
    "match_counts",
    "agreement",
    "ground_truth_map",
    "plan_steps",
    "gate",
]

#: COCO's IoU thresholds for mAP@0.5:0.95 (same construction as ``COCOeval.Params``).
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: COCO's 101 recall points.
COCO_RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
#: COCO's ``maxDets`` for the headline AP: detections kept per image and class.
COCO_MAX_DETS = 100


@dataclass(frozen=True)
class Boxes:
    """Detections (or ground-truth objects) of one image.

    Attributes:
        xyxy: ``float64 [N, 4]`` corners ``x_min, y_min, x_max, y_max`` in pixels.
        classes: ``N`` hashable class keys.
        scores: ``float64 [N]`` confidences (ground truth: ones).
    """

    xyxy: np.ndarray
    classes: tuple
    scores: np.ndarray

    @classmethod
    def create(cls, xyxy: Any = (), classes: Iterable[Hashable] = (), scores: Any = None) -> "Boxes":
        boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
        keys = tuple(classes)
        sc = np.ones(len(boxes)) if scores is None else np.asarray(scores, np.float64).reshape(-1)
        if not len(boxes) == len(keys) == len(sc):
            raise ValueError(f"{len(boxes)} boxes, {len(keys)} classes and {len(sc)} scores")
        return cls(boxes, keys, sc)

    def __len__(self) -> int:
        return len(self.classes)

    def above(self, threshold: float | None) -> "Boxes":
        """The boxes with ``score > threshold`` (the servers' own rule); all for ``None``."""
        if threshold is None:
            return self
        keep = np.nonzero(self.scores > threshold)[0]
        return Boxes(self.xyxy[keep], tuple(self.classes[i] for i in keep), self.scores[keep])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` IoU of ``xyxy`` boxes (COCO's bbox IoU: no +1, 0 when disjoint)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _by_class(classes: Sequence[Hashable]) -> dict[Hashable, np.ndarray]:
    groups: dict[Hashable, list[int]] = {}
    for i, k in enumerate(classes):
        groups.setdefault(k, []).append(i)
    return {k: np.asarray(v, np.int64) for k, v in groups.items()}


def match_image(
    reference: Boxes, detections: Boxes, iou_thresholds: Sequence[float] = (0.5,), max_dets: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COCO's greedy matching of one image, per class, at each IoU threshold.

    Returns:
        ``matched [T, len(detections)]``: index of the reference box each detection matched at
        threshold ``t``, ``-1`` for none; ``kept [len(detections)]``: ``False`` for detections
        beyond ``max_dets`` per class (COCO drops them: neither true nor false positives);
        ``ious [len(detections)]``: IoU with the box matched at the first threshold (0 if none).
    """
    thresholds = np.asarray(iou_thresholds, np.float64)
    matched = np.full((len(thresholds), len(detections)), -1, np.int64)
    kept = np.ones(len(detections), bool)
    best_iou = np.zeros(len(detections))
    ref_groups = _by_class(reference.classes)
    for key, det_idx in _by_class(detections.classes).items():
        order = det_idx[np.argsort(-detections.scores[det_idx], kind="mergesort")]
        if max_dets is not None and len(order) > max_dets:
            kept[order[max_dets:]] = False
            order = order[:max_dets]
        ref_idx = ref_groups.get(key)
        if ref_idx is None:
            continue
        ious = iou_matrix(detections.xyxy[order], reference.xyxy[ref_idx])
        row_max = ious.max(axis=1)
        for t, thr in enumerate(thresholds):
            taken = np.zeros(len(ref_idx), bool)
            floor = min(thr, 1 - 1e-10)  # COCOeval's cap, so that IoU 1 matches at threshold 1
            for row, d in enumerate(order):
                if row_max[row] < floor:
                    continue
                cand = np.where(~taken & (ious[row] >= floor), ious[row], -1.0)
                if cand.max(initial=-1.0) < 0:
                    continue
                g = len(cand) - 1 - int(np.argmax(cand[::-1]))  # ties: the last one, like COCO
                taken[g] = True
                matched[t, d] = ref_idx[g]
                if t == 0:
                    best_iou[d] = ious[row, g]
    return matched, kept, best_iou


@dataclass(frozen=True)
class MapResult:
    """Average precision per class and IoU threshold (COCO's ``precision`` averaged over recall).

    ``ap[k]`` has one value per threshold in :attr:`iou_thresholds`; classes without reference
    boxes are absent. ``n_reference``/``n_detections`` count per class what entered the ranking.
    """

    iou_thresholds: tuple[float, ...]
    ap: dict[Hashable, np.ndarray]
    n_reference: dict[Hashable, int]
    n_detections: dict[Hashable, int]

    def _column(self, threshold: float) -> int:
        for i, t in enumerate(self.iou_thresholds):
            if abs(t - threshold) < 1e-9:
                return i
        raise KeyError(f"IoU threshold {threshold} was not evaluated ({self.iou_thresholds})")

    def map_at(self, threshold: float) -> float | None:
        """mAP at one IoU threshold; ``None`` when no class has reference boxes."""
        col = self._column(threshold)
        return float(np.mean([v[col] for v in self.ap.values()])) if self.ap else None

    @property
    def map50(self) -> float | None:
        return self.map_at(0.5)

    @property
    def map(self) -> float | None:
        """mAP averaged over every evaluated threshold (mAP@0.5:0.95 with the COCO thresholds)."""
        return float(np.mean([v.mean() for v in self.ap.values()])) if self.ap else None

    def per_class(self) -> dict[str, dict[str, Any]]:
        out = {}
        for k in sorted(self.ap, key=str):
            row: dict[str, Any] = {"reference": self.n_reference[k], "detections": self.n_detections.get(k, 0)}
            if 0.5 in self.iou_thresholds:
                row["ap50"] = round(float(self.ap[k][self._column(0.5)]), 6)
            if len(self.iou_thresholds) > 1:
                row["ap"] = round(float(self.ap[k].mean()), 6)
            out[str(k)] = row
        return out


def _average_precision(scores: np.ndarray, tp: np.ndarray, n_ref: int) -> float:
    """COCO's 101-point interpolated AP of one class at one threshold (``accumulate``)."""
    order = np.argsort(-scores, kind="mergesort")
    tps = np.cumsum(tp[order]).astype(float)
    fps = np.cumsum(~tp[order]).astype(float)
    if not len(tps):
        return 0.0
    rc = tps / n_ref
    pr = tps / (fps + tps + np.spacing(1))
    pr = np.maximum.accumulate(pr[::-1])[::-1]  # COCO's "pr[i-1] = max(pr[i-1], pr[i])" pass
    inds = np.searchsorted(rc, COCO_RECALL_THRESHOLDS, side="left")
    q = np.where(inds < len(pr), pr[np.minimum(inds, len(pr) - 1)], 0.0)
    return float(q.mean())


def evaluate_map(
    references: Sequence[Boxes],
    detections: Sequence[Boxes],
    iou_thresholds: Sequence[float] = tuple(COCO_IOU_THRESHOLDS),
    max_dets: int | None = COCO_MAX_DETS,
) -> MapResult:
    """mAP of ``detections`` against ``references`` (lists aligned by image), COCO's rules.

    ``max_dets`` detections are kept per image and class (COCO's ``maxDets[-1]``; ``None``: all).
    """
    if len(references) != len(detections):
        raise ValueError(f"{len(references)} reference images but {len(detections)} detection images")
    thresholds = tuple(float(t) for t in iou_thresholds)
    n_ref: dict[Hashable, int] = {}
    scores: dict[Hashable, list[np.ndarray]] = {}
    hits: dict[Hashable, list[np.ndarray]] = {}
    for ref, det in zip(references, detections):
        for k in ref.classes:
            n_ref[k] = n_ref.get(k, 0) + 1
        matched, kept, _ = match_image(ref, det, thresholds, max_dets)
        for k, idx in _by_class(det.classes).items():
            idx = idx[kept[idx]]
            scores.setdefault(k, []).append(det.scores[idx])
            hits.setdefault(k, []).append(matched[:, idx] >= 0)
    ap: dict[Hashable, np.ndarray] = {}
    n_det: dict[Hashable, int] = {}
    for k, n in n_ref.items():
        s = np.concatenate(scores.get(k, [np.zeros(0)]))
        h = np.concatenate(hits.get(k, [np.zeros((len(thresholds), 0), bool)]), axis=1)
        n_det[k] = len(s)
        ap[k] = np.array([_average_precision(s, h[t], n) for t in range(len(thresholds))])
    return MapResult(thresholds, ap, n_ref, n_det)


# --------------------------------------------------------------------------------------------
# agreement of two models


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else round(float(x), digits)


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not len(values):
        return {"mean": None, "median": None}
    arr = np.asarray(values, np.float64)
    return {"mean": _round(arr.mean()), "median": _round(float(np.median(arr)))}


@dataclass
class _Tally:
    reference: int = 0
    candidate: int = 0
    matched: int = 0
    ref_conf: list = field(default_factory=list)
    cand_conf: list = field(default_factory=list)

    def as_dict(self, names: tuple[str, str] = ("reference", "candidate")) -> dict[str, Any]:
        fp, fn = self.candidate - self.matched, self.reference - self.matched
        denom = 2 * self.matched + fp + fn
        ref, cand = names
        return {
            ref: self.reference,
            cand: self.candidate,
            "matched": self.matched,
            "precision": _round(_ratio(self.matched, self.candidate)),
            "recall": _round(_ratio(self.matched, self.reference)),
            # Both empty: nothing to disagree about.
            "f1": _round(2 * self.matched / denom if denom else 1.0),
            f"mean_confidence_{ref}": _stats(self.ref_conf)["mean"],
            f"mean_confidence_{cand}": _stats(self.cand_conf)["mean"],
        }


def match_counts(
    references: Sequence[Boxes],
    candidates: Sequence[Boxes],
    iou_threshold: float = 0.5,
    names: tuple[str, str] = ("reference", "candidate"),
) -> dict[str, Any]:
    """True/false positives of ``candidates`` against ``references`` (aligned by image) at one IoU.

    Returns ``{"tp", "fp", "fn", "precision", "recall", "f1", "mean_iou", "confidence_shift":
    {"mean", "median", "mean_abs"}, "per_class": {class: {<names[0]>, <names[1]>, "matched",
    "precision", "recall", "f1", "mean_confidence_<names[i]>"}}}``. ``precision``/``recall`` are
    ``None`` when undefined (no candidate / no reference boxes); F1 = ``2TP / (2TP + FP + FN)``,
    1.0 when both sides are empty. The confidence shift is candidate minus reference confidence
    over matched pairs.
    """
    if len(references) != len(candidates):
        raise ValueError(f"{len(references)} reference images but {len(candidates)} candidate images")
    total = _Tally()
    per_class: dict[Hashable, _Tally] = {}
    ious: list[float] = []
    shifts: list[float] = []
    for ref, cand in zip(references, candidates):
        matched, _, best_iou = match_image(ref, cand, (iou_threshold,))
        for i, k in enumerate(ref.classes):
            for tally in (total, per_class.setdefault(k, _Tally())):
                tally.reference += 1
                tally.ref_conf.append(ref.scores[i])
        for d, k in enumerate(cand.classes):
            g = matched[0, d]
            for tally in (total, per_class.setdefault(k, _Tally())):
                tally.candidate += 1
                tally.cand_conf.append(cand.scores[d])
                tally.matched += int(g >= 0)
            if g >= 0:
                ious.append(best_iou[d])
                shifts.append(cand.scores[d] - ref.scores[g])
    summary = total.as_dict()
    out: dict[str, Any] = {
        "tp": total.matched,
        "fp": total.candidate - total.matched,
        "fn": total.reference - total.matched,
        "precision": summary["precision"],
        "recall": summary["recall"],
        "f1": summary["f1"],
        "mean_iou": _stats(ious)["mean"],
        "confidence_shift": {**_stats(shifts), "mean_abs": _stats(np.abs(shifts))["mean"]},
        "per_class": {str(k): per_class[k].as_dict(names) for k in sorted(per_class, key=str)},
    }
    return out


def agreement(
    stable: Sequence[Boxes], canary: Sequence[Boxes], *, confidence: float | None, iou_threshold: float = 0.5
) -> dict[str, Any]:
    """Agreement of the canary with the stable model (stable = reference).

    ``stable``/``canary`` may hold detections down to a low confidence (a mAP run); counts,
    precision, recall and F1 are taken at ``confidence`` (``score > confidence``, the served
    threshold) on both sides, mAP@0.5 with the stable boxes above ``confidence`` as ground truth and
    every canary box ranked by its confidence.
    """
    ref = [b.above(confidence) for b in stable]
    out = match_counts(ref, [b.above(confidence) for b in canary], iou_threshold, ("stable", "canary"))
    result = evaluate_map(ref, canary, (iou_threshold,), max_dets=COCO_MAX_DETS)
    out["map50"] = _round(result.map_at(iou_threshold))
    out["images"] = len(ref)
    return out


def ground_truth_map(labels: Sequence[Boxes], detections: Sequence[Boxes]) -> dict[str, Any]:
    """``{"map50", "map50_95", "per_class"}`` of ``detections`` against labelled boxes (COCO rules)."""
    result = evaluate_map(labels, detections)
    return {"map50": _round(result.map50), "map50_95": _round(result.map), "per_class": result.per_class()}


# --------------------------------------------------------------------------------------------
# gated rollout


def plan_steps(steps: str | Iterable[int], current_percent: int | None = None) -> list[int]:
    """Canary traffic percentages still to apply, in order.

    ``steps`` is ``"10,50,100"`` or a list: strictly increasing integers in 1..100. Steps at or below
    ``current_percent`` (the canary's share now) are skipped, so a rerun resumes where the last
    one stopped. A step of 100 means promotion.

    Raises:
        ValueError: malformed, out-of-range, repeated or decreasing steps.
    """
    if isinstance(steps, str):
        parts = [s.strip() for s in steps.split(",")]
        if not parts or any(not p for p in parts):
            raise ValueError(f"steps must be comma-separated percentages, got {steps!r}")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"steps must be integers, got {steps!r}") from None
    else:
        values = [int(v) for v in steps]
    if not values:
        raise ValueError("no steps given")
    for v in values:
        if not 1 <= v <= 100:
            raise ValueError(f"every step must be between 1 and 100, got {v}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"steps must increase strictly, got {values}")
    if current_percent is not None:
        values = [v for v in values if v > current_percent]
    return values


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def gate(
    result: Mapping[str, Any],
    min_f1: float | None = None,
    max_error_rate: float | None = None,
    max_map_drop: float | None = None,
    one_version_per_side: bool = False,
) -> tuple[bool, list[str]]:
    """Decide whether a canary may take the next step, from a compare report.

    ``result`` is the report of :func:`sdk_client.commands.compare.analyze` (keys ``images``,
    ``stable``/``canary`` with ``error_rate``, ``agreement`` with ``f1``, optional ``ground_truth``
    with per-endpoint ``map50_95``). Checks, each only when its bound is given:

    * at least one image answered by both endpoints (always);
    * ``agreement.f1 >= min_f1``;
    * the error rate of each endpoint ``<= max_error_rate``;
    * ground-truth mAP@0.5:0.95 of the canary ``>= stable - max_map_drop`` (needs labels);
    * ``one_version_per_side``: each endpoint answered with one model version (``model_versions``;
      "unknown" is not counted). An endpoint that names one revision (a routed compare) but is
      answered by several versions is a traffic split, not that revision.

    Returns ``(passed, reasons)``; ``reasons`` names every failed check (empty when passed).
    """
    reasons: list[str] = []
    compared = int((result.get("images") or {}).get("compared", 0))
    if compared == 0:
        reasons.append("no image was answered by both endpoints")
    if min_f1 is not None and compared:
        f1 = (result.get("agreement") or {}).get("f1")
        if f1 is None or not f1 >= min_f1:
            reasons.append(f"agreement F1 {_fmt(f1) if f1 is not None else 'n/a'} < {_fmt(min_f1)}")
    if max_error_rate is not None:
        for side in ("stable", "canary"):
            rate = (result.get(side) or {}).get("error_rate")
            if rate is None or math.isnan(rate) or rate > max_error_rate:
                shown = "n/a" if rate is None else _fmt(rate)
                reasons.append(f"{side} error rate {shown} > {_fmt(max_error_rate)}")
    if max_map_drop is not None:
        gt = result.get("ground_truth")
        if not gt:
            reasons.append("--max-map-drop needs ground truth (--labels)")
        else:
            s, c = gt["stable"].get("map50_95"), gt["canary"].get("map50_95")
            if s is None or c is None:
                reasons.append("no labelled object among the compared images")
            elif c < s - max_map_drop:
                reasons.append(f"canary mAP@0.5:0.95 {_fmt(c)} is {_fmt(s - c)} below stable {_fmt(s)} "
                               f"(allowed drop {_fmt(max_map_drop)})")
    if one_version_per_side:
        for side in ("stable", "canary"):
            versions = sorted(set((result.get(side) or {}).get("model_versions") or {}) - {"unknown"})
            if len(versions) > 1:
                reasons.append(f"{side} was answered by {len(versions)} model versions ({', '.join(versions)}): "
                               "the requests were not routed to one revision")
    return not reasons, reasons
