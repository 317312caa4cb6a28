"""YOLOv3 decoding and NMS with Darknet's exact semantics (numpy only).

Each head decodes its own raw tensor (``Head.candidates``); this module mirrors pjreddie/darknet
``get_yolo_detections`` + ``do_nms_obj`` (class-agnostic, the default) or
``do_nms_sort`` (per class), followed by python/darknet.py's "one row per class with prob > 0,
sorted by -prob". Boxes stay in network-input pixels (centre/size); mapping back to the original
image is the transformer's job (``transformer.geometry.unletterbox_boxes``). IoU is invariant under
that axis-aligned map, so NMS here gives Darknet's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from predictor.darknet import Head


#: Safety bound on boxes entering NMS (greedy NMS is quadratic). Real models at the lowest accepted
#: confidence (0.001) give a few hundred; beyond the bound the lowest-objectness candidates are
#: dropped first, the one place where the result can differ from Darknet's.
MAX_NMS_CANDIDATES = 4096


@dataclass(frozen=True)
class DecodeParams:
    confidence: float = 0.5
    iou_threshold: float = 0.45
    max_detections: int = 300
    class_ids: frozenset[int] | None = None  # None keeps every class
    per_class_nms: bool = False


def candidates(
    outputs: Sequence[np.ndarray], heads: Sequence[Head], net_w: int, net_h: int, thresh: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Darknet's detections of ONE image with objectness > thresh.

    Args:
        outputs: per head, its raw input ``[channels, H, W]`` of one image.
        heads: the matching :class:`predictor.darknet.Head` layers; each decodes its own tensor.
        net_w, net_h: the network input size the logits were computed at.

    Returns:
        ``boxes [M,4]`` (cx, cy, w, h in input pixels), ``objectness [M]``, ``probs [M,C]`` with
        Darknet's zeroing of ``obj*cls <= thresh``; rows in Darknet's order (layer, cell, anchor).
    """
    parts = [head.candidates(raw, net_w, net_h, thresh) for raw, head in zip(outputs, heads)]
    boxes = np.concatenate([p[0] for p in parts]) * np.array([net_w, net_h, net_w, net_h], np.float32)
    return boxes, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


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


def _greedy_suppress(boxes: np.ndarray, order: np.ndarray, alive: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Visit ``order``; each still-alive box kills later alive boxes with IoU > threshold."""
    alive = alive.copy()
    for pos, i in enumerate(order):
        if not alive[i]:
            continue
        later = order[pos + 1 :]
        later = later[alive[later]]
        if later.size:
            alive[later[iou_one_to_many(boxes[i], boxes[later]) > iou_threshold]] = False
    return alive


def nms_obj(boxes: np.ndarray, objectness: np.ndarray, probs: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Darknet's ``do_nms_obj``: class-agnostic, by objectness; returns ``probs`` with suppressed rows zeroed."""
    order = np.argsort(-objectness, kind="stable")
    alive = _greedy_suppress(boxes, order, objectness > 0, iou_threshold)
    return np.where(alive[:, None], probs, np.float32(0))


def nms_per_class(boxes: np.ndarray, probs: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Darknet's ``do_nms_sort``: per class, by that class's probability (zero-prob boxes take no part)."""
    out = probs.copy()
    for k in np.nonzero((probs > 0).any(axis=0))[0]:
        members = np.nonzero(probs[:, k] > 0)[0]
        order = np.argsort(-probs[members, k], kind="stable")
        alive = _greedy_suppress(boxes[members], order, np.ones(members.size, bool), iou_threshold)
        out[members[~alive], k] = 0
    return out


def detect(
    outputs: Sequence[np.ndarray], heads: Sequence[Head], net_w: int, net_h: int, params: DecodeParams
) -> np.ndarray:
    """Detections of one image as rows ``[cx, cy, w, h, confidence, class_id]`` (float32), sorted by
    descending confidence, at most ``params.max_detections`` rows.

    One box can yield several rows (one per class above the threshold), exactly like Darknet.
    A class filter applies after NMS, so the result is always a subset of the unfiltered one.
    """
    boxes, obj, probs = candidates(outputs, heads, net_w, net_h, params.confidence)
    if boxes.shape[0] > MAX_NMS_CANDIDATES:
        keep = np.sort(np.argsort(-obj, kind="stable")[:MAX_NMS_CANDIDATES])
        boxes, obj, probs = boxes[keep], obj[keep], probs[keep]
    if boxes.shape[0]:
        if params.per_class_nms:
            probs = nms_per_class(boxes, probs, params.iou_threshold)
        else:
            probs = nms_obj(boxes, obj, probs, params.iou_threshold)
    det_idx, cls_idx = np.nonzero(probs > 0)
    if params.class_ids is not None:
        keep = np.isin(cls_idx, np.fromiter(params.class_ids, np.int64, len(params.class_ids)))
        det_idx, cls_idx = det_idx[keep], cls_idx[keep]
    conf = probs[det_idx, cls_idx]
    order = np.argsort(-conf, kind="stable")[: max(params.max_detections, 0)]
    rows = np.empty((order.size, 6), np.float32)
    rows[:, :4] = boxes[det_idx[order]]
    rows[:, 4] = conf[order]
    rows[:, 5] = cls_idx[order]
    return rows
