"""Detection decoding and NMS with Darknet's exact semantics (numpy only).

Each head decodes its own raw tensor (``Head.candidates``: [yolo] and [region], per lineage);
this module joins the heads' detections in Darknet's order, runs the NMS the request asks for and
emits python/darknet.py's "one row per class with prob > 0, sorted by -prob":

* ``agnostic``: pjreddie's ``do_nms_obj`` (by objectness, regardless of class; the wrapper's).
* ``per_class``: ``do_nms_sort`` (per class, by that class's probability; both Darknets' CLI).
* ``diou``: AlexeyAB's ``diounms_sort`` (per class; suppress when ``IoU - (d²/c²)^beta_nms`` >
  threshold, ``d`` the centre distance and ``c`` the enclosing box's diagonal; ``greedynms`` is the
  same with ``beta_nms=0.6``).

The per-class kinds sort the detections IN PLACE once per class (C's ``qsort`` over the whole
array, which glibc implements as a stable merge sort), so ties are broken by the previous class's
order; this is reproduced. Darknet computes NMS on boxes relative to the IMAGE
(``get_network_boxes``); IoU does not change under the letterbox's axis-aligned map, but DIoU's
distance term does, so ``detect`` maps boxes to the image (``content``) first. Rows stay in
network-input pixels (centre/size); mapping back to the original image is the transformer's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from predictor.darknet import Head
from yolo_contract.tensors import NMS_KINDS

#: Safety bound on boxes entering NMS (greedy NMS is quadratic). Real models at the lowest accepted
#: confidence (0.001) give a few hundred; beyond the bound the lowest-objectness candidates are
#: dropped first, the one place where the result can differ from Darknet's.
MAX_NMS_CANDIDATES = 4096


@dataclass(frozen=True)
class DecodeParams:
    confidence: float = 0.5
    iou_threshold: float = 0.45
    max_detections: int = 10_000  # Darknet has no limit; the largest value a request may ask for
    class_ids: frozenset[int] | None = None  # None keeps every class
    nms: str = "agnostic"  # one of NMS_KINDS (the request parameter's, yolo_contract.tensors)
    beta_nms: float = 0.6  # DIoU exponent (nms="diou" only)

    def __post_init__(self) -> None:
        if self.nms not in NMS_KINDS:
            raise ValueError(f"nms must be one of {NMS_KINDS}, got {self.nms!r}")


def compaction_order(nonzero: np.ndarray) -> np.ndarray:
    """Indices of the detections ``do_nms_*`` keeps, in the order it leaves them: it walks the
    array and swaps each zero-objectness detection with the last unvisited one."""
    n = nonzero.size
    if nonzero.all():
        return np.arange(n)
    order = np.arange(n)
    i, k = 0, n - 1
    while i <= k:
        if nonzero[order[i]]:
            i += 1
        else:
            order[i], order[k] = order[k], order[i]
            k -= 1
    return order[: k + 1]


def darknet_detections(
    outputs: Sequence[np.ndarray], heads: Sequence[Head], net_w: int, net_h: int, thresh: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All heads' detections of ONE image, as NMS sees them: boxes relative to the network input
    ``[M,4]``, objectness ``[M]`` (all > 0), probs ``[M,C]``, in Darknet's order."""
    parts = [head.candidates(raw, net_w, net_h, thresh) for raw, head in zip(outputs, heads)]
    boxes = np.concatenate([p[0] for p in parts])
    obj = np.concatenate([p[1] for p in parts])
    probs = np.concatenate([p[2] for p in parts])
    keep = compaction_order(obj > 0)
    return boxes[keep], obj[keep], probs[keep]


def candidates(
    outputs: Sequence[np.ndarray], heads: Sequence[Head], net_w: int, net_h: int, thresh: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`darknet_detections` with boxes in network-input pixels (cx, cy, w, h)."""
    boxes, obj, probs = darknet_detections(outputs, heads, net_w, net_h, thresh)
    return boxes * np.array([net_w, net_h, net_w, net_h], np.float32), obj, probs


def image_relative(boxes: np.ndarray, content: np.ndarray, net_w: int, net_h: int) -> np.ndarray:
    """Network-relative boxes -> image-relative, as AlexeyAB's ``correct_yolo_boxes`` (relative=1).

    ``content`` = (offset_x, offset_y, width, height) of the image inside the network input, in
    network pixels; Darknet's offset is the float ``(net - new)/2``.
    """
    ox, oy, cw, ch = (float(v) for v in content)
    ratio = np.array([np.float32(cw) / np.float32(net_w), np.float32(ch) / np.float32(net_h)], np.float32)
    out = np.empty_like(boxes)
    out[:, 0:2] = ((boxes[:, 0:2].astype(np.float64) - [ox / net_w, oy / net_h]) / ratio).astype(np.float32)
    out[:, 2:4] = boxes[:, 2:4] * (np.float32(1) / ratio)
    return out


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Darknet's box_iou (centre/size boxes) of one box against many."""
    left = np.maximum(box[0] - box[2] / 2, boxes[:, 0] - boxes[:, 2] / 2)
    right = np.minimum(box[0] + box[2] / 2, boxes[:, 0] + boxes[:, 2] / 2)
    top = np.maximum(box[1] - box[3] / 2, boxes[:, 1] - boxes[:, 3] / 2)
    bottom = np.minimum(box[1] + box[3] / 2, boxes[:, 1] + boxes[:, 3] / 2)
    w, h = right - left, bottom - top
    inter = np.where((w < 0) | (h < 0), np.float32(0), w * h)
    union = box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, np.float32(0))


def diou_one_to_many(box: np.ndarray, boxes: np.ndarray, beta: float) -> np.ndarray:
    """AlexeyAB's ``box_diounms``: IoU minus (centre distance² / enclosing diagonal²)^beta."""
    iou = iou_one_to_many(box, boxes)
    left = np.minimum(box[0] - box[2] / 2, boxes[:, 0] - boxes[:, 2] / 2)
    right = np.maximum(box[0] + box[2] / 2, boxes[:, 0] + boxes[:, 2] / 2)
    top = np.minimum(box[1] - box[3] / 2, boxes[:, 1] - boxes[:, 3] / 2)
    bottom = np.maximum(box[1] + box[3] / 2, boxes[:, 1] + boxes[:, 3] / 2)
    c = (right - left) ** 2 + (bottom - top) ** 2
    d = (box[0] - boxes[:, 0]) ** 2 + (box[1] - boxes[:, 1]) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.power((d / c).astype(np.float64), beta).astype(np.float32)
    return np.where(c == 0, iou, iou - u)


def _greedy_suppress(boxes: np.ndarray, order: np.ndarray, alive: np.ndarray, overlaps) -> np.ndarray:
    """Visit ``order``; each still-alive box kills later alive boxes that ``overlaps`` flags."""
    alive = alive.copy()
    for pos, i in enumerate(order):
        if not alive[i]:
            continue
        later = order[pos + 1 :]
        later = later[alive[later]]
        if later.size:
            alive[later[overlaps(boxes[i], boxes[later])]] = False
    return alive


def nms_obj(boxes: np.ndarray, objectness: np.ndarray, probs: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Darknet's ``do_nms_obj``: class-agnostic, by objectness; returns ``probs`` with suppressed rows zeroed."""
    order = np.argsort(-objectness, kind="stable")
    alive = _greedy_suppress(
        boxes, order, objectness > 0, lambda box, others: iou_one_to_many(box, others) > iou_threshold
    )
    return np.where(alive[:, None], probs, np.float32(0))


def nms_sort(
    boxes: np.ndarray, probs: np.ndarray, iou_threshold: float, diou_beta: float | None = None
) -> np.ndarray:
    """Darknet's ``do_nms_sort`` (``diou_beta=None``) or AlexeyAB's ``diounms_sort``: per class,
    by that class's probability; zero-probability boxes take no part. The order is re-sorted in
    place class after class, as Darknet's qsort does."""
    if diou_beta is None:
        def overlaps(box, others):
            return iou_one_to_many(box, others) > iou_threshold
    else:
        def overlaps(box, others):
            return diou_one_to_many(box, others, diou_beta) > iou_threshold
    out = probs.copy()
    order = np.arange(probs.shape[0])
    for k in np.nonzero((probs > 0).any(axis=0))[0]:
        order = order[np.argsort(-probs[order, k], kind="stable")]
        members = order[: int(np.count_nonzero(probs[:, k] > 0))]
        alive = _greedy_suppress(boxes, members, np.ones(probs.shape[0], bool), overlaps)
        out[members[~alive[members]], k] = 0
    return out


def nms_per_class(boxes: np.ndarray, probs: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Darknet's ``do_nms_sort``."""
    return nms_sort(boxes, probs, iou_threshold)


def detect(
    outputs: Sequence[np.ndarray],
    heads: Sequence[Head],
    net_w: int,
    net_h: int,
    params: DecodeParams,
    content: np.ndarray | Sequence[float] | None = None,
) -> np.ndarray:
    """Detections of one image as rows ``[cx, cy, w, h, confidence, class_id]`` (float32, network-
    input pixels), sorted by descending confidence, at most ``params.max_detections`` rows.

    Args:
        outputs: per head, its raw input ``[channels, H, W]`` for this image.
        heads: the matching :class:`predictor.darknet.Head` layers (``network.heads``).
        net_w, net_h: the network input size the tensors were computed at.
        params: thresholds and NMS kind.
        content: ``(offset_x, offset_y, width, height)`` of the image inside the network input
            (letterbox: Darknet's float ``(net-new)/2`` offsets and the resized size; plain resize
            or ``None``: the whole input). NMS runs on boxes relative to it, as Darknet's does.

    One box can yield several rows (one per class above the threshold), exactly like Darknet.
    A class filter applies after NMS, so the result is always a subset of the unfiltered one.
    """
    boxes, obj, probs = darknet_detections(outputs, heads, net_w, net_h, params.confidence)
    if boxes.shape[0] > MAX_NMS_CANDIDATES:
        keep = np.sort(np.argsort(-obj, kind="stable")[:MAX_NMS_CANDIDATES])
        boxes, obj, probs = boxes[keep], obj[keep], probs[keep]
    if boxes.shape[0]:
        nms_boxes = boxes if content is None else image_relative(boxes, np.asarray(content), net_w, net_h)
        if params.nms == "agnostic":
            probs = nms_obj(nms_boxes, obj, probs, params.iou_threshold)
        else:
            beta = params.beta_nms if params.nms == "diou" else None
            probs = nms_sort(nms_boxes, probs, params.iou_threshold, beta)
    det_idx, cls_idx = np.nonzero(probs > 0)
    if params.class_ids is not None:
        keep = np.isin(cls_idx, np.fromiter(params.class_ids, np.int64, len(params.class_ids)))
        det_idx, cls_idx = det_idx[keep], cls_idx[keep]
    conf = probs[det_idx, cls_idx]
    order = np.argsort(-conf, kind="stable")[: max(params.max_detections, 0)]
    rows = np.empty((order.size, 6), np.float32)
    rows[:, :4] = boxes[det_idx[order]] * np.array([net_w, net_h, net_w, net_h], np.float32)
    rows[:, 4] = conf[order]
    rows[:, 5] = cls_idx[order]
    return rows
