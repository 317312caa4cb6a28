"""Compare detections with Darknet's reference output (same set, confidence, IoU).

Used by the component tests and by ``scripts/engine_fidelity.py``. Two rules:

* :func:`match_reference`: the same multiset of labels, every detection paired (yolov3-tiny with
  the official weights, where no detection sits near a threshold).
* :func:`match_at_margins`: every detection paired, except ones that sit at a margin where a
  1/255 change of the input can flip Darknet's own decision (near the confidence threshold, or an
  NMS decision near its IoU threshold or between near-tied confidences). Random-weight models
  (tests/data/reference/<model>/) have many such detections.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: tolerances of the family parity rule: |Δconf|, IoU, and how close to the NMS threshold a
#: decision counts as a margin
CONF_TOL, IOU_MIN, NMS_MARGIN = 0.02, 0.95, 0.05


def iou_cxcywh(a, b) -> float:
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def pair_with_reference(got, ref):
    """Pair each reference detection with an unused detection of the same label (highest IoU, then
    closest confidence). Yields ``(ref_detection, match or None, iou, |Δconf|)``."""
    unused = list(range(len(got)))
    for label, conf, box in sorted(ref, key=lambda r: -r[1]):
        candidates = [i for i in unused if got[i][0] == label]
        if not candidates:
            yield (label, conf, box), None, 0.0, float("inf")
            continue
        best = max(candidates, key=lambda i: (iou_cxcywh(got[i][2], box), -abs(got[i][1] - conf)))
        unused.remove(best)
        yield (label, conf, box), got[best], iou_cxcywh(got[best][2], box), abs(got[best][1] - conf)


def match_reference(got, ref, conf_tol: float = 0.02, iou_min: float = 0.95) -> tuple[float, float]:
    """``got`` and ``ref`` are lists of ``[label, confidence, [cx, cy, w, h]]``.

    Asserts the same multiset of labels and a one-to-one pairing (same label, |Δconf| <= conf_tol,
    IoU >= iou_min). Returns (max |Δconf|, min IoU) for reporting.
    """
    assert sorted(g[0] for g in got) == sorted(r[0] for r in ref), (
        f"label sets differ: got {sorted(g[0] for g in got)}, expected {sorted(r[0] for r in ref)}"
    )
    worst_conf, worst_iou = 0.0, 1.0
    for (label, conf, box), match, iou, dconf in pair_with_reference(got, ref):
        assert iou >= iou_min and dconf <= conf_tol, (
            f"{label} {conf:.4f} {box}: best match {match} has IoU {iou:.4f}, Δconf {dconf:.4f}"
        )
        worst_conf, worst_iou = max(worst_conf, dconf), min(worst_iou, iou)
    return worst_conf, worst_iou


class MarginMatch(NamedTuple):
    """What :func:`match_at_margins` found: paired detections, those in one result only (each at a
    margin), and the worst pair (largest |Δconf|, smallest IoU; 0 and 1 with no pair)."""

    pairs: int
    unpaired: int
    max_dconf: float
    min_iou: float


def _overlap(a, b, nms: str, beta: float, size) -> float:
    """The NMS criterion between two image-pixel boxes, on image-relative boxes as Darknet."""
    from predictor.yolo import diou_one_to_many, iou_one_to_many

    rel = np.array([a, b], np.float32) / np.array([size[0], size[1]] * 2, np.float32)
    if nms == "diou":
        return float(diou_one_to_many(rel[0], rel[1:], beta)[0])
    return float(iou_one_to_many(rel[0], rel[1:])[0])


def match_at_margins(got, ref, thresh: float, nms: str, beta: float, size, strict: bool = False,
                     iou_threshold: float = 0.45, candidates=None) -> MarginMatch:
    """Pair ``got`` with ``ref`` (lists of ``[label, conf, [cx, cy, w, h]]`` in image pixels of an
    image of ``size`` = (width, height)): same label, IoU >= 0.95, |Δconf| <= 0.02 (``strict``:
    0.999 and 1e-4, nothing unpaired). Otherwise every unpaired detection must sit at a margin: its
    confidence within 0.02 of ``thresh``; or an NMS decision (``nms``: agnostic, per_class or diou
    with exponent ``beta``) that tiny input differences can flip (an overlap within 0.05 of
    ``iou_threshold``, or an overlapping box of a confidence within 0.02: a near tie in NMS order);
    or a box that such a flipped detection suppresses or not (the cascade). Asserts; returns a
    :class:`MarginMatch`.

    ``candidates``: for ``agnostic`` (pjreddie's ``do_nms_obj``), Darknet's own list of what
    entered NMS, ``[objectness, box]`` (the reference's ``candidates-t*.json``). ``do_nms_obj``
    sorts by objectness and also compares boxes none of whose classes pass the threshold, which
    never appear in a result; with the list, the margins above are also looked for among those,
    by objectness (a detection's Darknet candidate is the one of IoU >= 0.95 with its box)."""
    iou_min, conf_tol = (0.999, 1e-4) if strict else (IOU_MIN, CONF_TOL)
    unused = list(range(len(got)))
    unpaired, pairs, worst, worst_iou = [], 0, 0.0, 1.0
    for det in sorted(ref, key=lambda r: -r[1]):
        same = [i for i in unused if got[i][0] == det[0]]
        best = max(same, key=lambda i: iou_cxcywh(got[i][2], det[2]), default=None)
        iou = iou_cxcywh(got[best][2], det[2]) if best is not None else 0.0
        if best is not None and iou >= iou_min and abs(got[best][1] - det[1]) <= conf_tol:
            unused.remove(best)
            pairs += 1
            worst = max(worst, abs(got[best][1] - det[1]))
            worst_iou = min(worst_iou, iou)
        else:
            unpaired.append(det)
    unpaired += [got[i] for i in unused]
    assert not (strict and unpaired), f"on Darknet's own pixels every detection must pair: {unpaired[:3]}"

    def rivals(det, pool):  # detections NMS compares det with, and their overlap criterion
        for other in pool:
            if other is not det and (nms == "agnostic" or other[0] == det[0]):
                yield other, _overlap(det[2], other[2], nms, beta, size)

    near = iou_threshold - NMS_MARGIN
    everyone = list(got) + list(ref)
    explained = [
        abs(det[1] - thresh) <= CONF_TOL
        or any(
            abs(v - iou_threshold) <= NMS_MARGIN or (v > near and abs(o[1] - det[1]) <= CONF_TOL)
            for o, v in rivals(det, everyone)
        )
        for det in unpaired
    ]
    if candidates is not None and nms == "agnostic":
        explained = [ok or _candidate_margin(det, candidates, thresh, size, iou_threshold)
                     for det, ok in zip(unpaired, explained)]
    changed = True
    while changed:  # the cascade: overlapping a flipped detection
        changed = False
        for k, det in enumerate(unpaired):
            if not explained[k] and any(
                explained[j] and _overlap(det[2], o[2], nms, beta, size) > near
                for j, o in enumerate(unpaired)
                if o is not det and (nms == "agnostic" or o[0] == det[0])
            ):
                explained[k] = changed = True
    for det, ok in zip(unpaired, explained):
        assert ok, f"{det} is in one result only and is not at a margin"
    return MarginMatch(pairs, len(unpaired), worst, worst_iou)


def _candidate_margin(det, candidates, thresh: float, size, iou_threshold: float) -> bool:
    """``det`` is Darknet's candidate at a do_nms_obj margin: its objectness near ``thresh``, or a
    rival candidate (any class) overlapping near ``iou_threshold`` or above it with a near-tied
    objectness."""
    mine = max(candidates, key=lambda c: iou_cxcywh(c[1], det[2]), default=None)
    if mine is None or iou_cxcywh(mine[1], det[2]) < IOU_MIN:
        return False
    if abs(mine[0] - thresh) <= CONF_TOL:
        return True
    near = iou_threshold - NMS_MARGIN
    for obj, box in candidates:
        if box is mine[1] or iou_cxcywh(box, mine[1]) < near:  # iou_cxcywh: a cheap pre-filter
            continue
        v = _overlap(mine[1], box, "agnostic", 0.0, size)
        if abs(v - iou_threshold) <= NMS_MARGIN or (v > near and abs(obj - mine[0]) <= CONF_TOL):
            return True
    return False
