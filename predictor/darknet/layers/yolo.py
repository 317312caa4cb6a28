"""``[yolo]`` head (YOLOv3 and later): src/yolo_layer.c of both Darknets.

Raw input ``[A*(5+C), H, W]``, channel ``a*(5+C)+k`` (k: 0 tx, 1 ty, 2 tw, 3 th, 4 objectness,
5.. classes), one slot per ``mask`` entry. Darknet visits cells row-major, then slots, and keeps a
slot only if ``objectness > thresh``; each class prob is ``objectness*class``, kept if > thresh.

* plain (pjreddie, and AlexeyAB with ``new_coords=0``): logistic on x, y, objectness and classes;
  ``w = exp(tw)*anchor_w/net_w``.
* AlexeyAB ``scale_x_y`` = s: after the logistic, ``xy = s*xy - 0.5*(s-1)`` (``scal_add_cpu``).
* AlexeyAB ``new_coords=1``: the conv before already applied the logistic (its activation is
  ``logistic`` in every such cfg) and the yolo layer applies none; ``w = (2*tw)^2*anchor_w/net_w``
  (``get_yolo_box``: ``x*x*4*anchor/w``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from predictor.darknet.cfg import MAX_CLASSES, Options
from predictor.darknet.layers.base import Head, anchor_pairs, logistic

NMS_KINDS = ("default", "greedynms", "diounms")


@dataclass
class YoloLayer(Head):
    mask: tuple[int, ...] = ()
    anchors: tuple[tuple[float, float], ...] = ()  # all anchors (w, h) in network-input pixels
    scale_x_y: float = 1.0
    new_coords: bool = False

    SECTIONS: ClassVar[tuple[str, ...]] = ("yolo",)
    OUTPUT_PREFIX: ClassVar[str] = "yolo"
    TRAINING: ClassVar[frozenset[str]] = frozenset({"max", "jitter", "ignore_thresh", "truth_thresh", "random"})
    TRAINING_ALEXEYAB: ClassVar[frozenset[str]] = frozenset(
        {"max_delta", "counters_per_class", "label_smooth_eps", "objectness_smooth", "iou_normalizer",
         "obj_normalizer", "cls_normalizer", "delta_normalizer", "iou_loss", "iou_thresh_kind", "resize",
         "focal_loss", "iou_thresh", "track_history_size", "sim_thresh", "dets_for_track", "dets_for_show",
         "track_ciou_norm", "show_details",
         "uc_normalizer"}  # [Gaussian_yolo]'s training option, which AlexeyAB's [yolo] never reads
    )
    ALEXEYAB: ClassVar[frozenset[str]] = frozenset({"scale_x_y", "new_coords", "nms_kind", "beta_nms", "embedding_layer"})

    @classmethod
    def parse(cls, o: Options) -> YoloLayer:
        classes = o.int("classes", 20, 1, MAX_CLASSES)
        num = o.int("num", len(o.floats("anchors")) // 2 or 1, 1, 1000)
        anchors = anchor_pairs(o, num, extra_ok=True)
        mask = o.ints("mask") or list(range(num))
        if any(not 0 <= m < num for m in mask):
            raise o.err(f"'mask' {mask} refers to anchors outside 0..{num - 1}", "mask")
        o.refuse("map")
        o.refuse("embedding_layer")
        nms_kind = o.str("nms_kind", "default")
        if nms_kind not in NMS_KINDS:
            raise o.err(f"unsupported nms_kind '{nms_kind}' (supported: {', '.join(NMS_KINDS)})", "nms_kind")
        return cls(
            index=o.index,
            classes=classes,
            mask=tuple(mask),
            anchors=anchors,
            scale_x_y=o.float("scale_x_y", 1.0, 0.0, 16.0),
            new_coords=bool(o.int("new_coords", 0, 0, 1)),
            nms_kind=nms_kind,
            beta_nms=o.float("beta_nms", 0.6, 0.0, 100.0),
        )

    @property
    def masked_anchors(self) -> tuple[tuple[float, float], ...]:
        return tuple(self.anchors[m] for m in self.mask)

    @property
    def anchors_per_cell(self) -> int:
        return len(self.mask)

    def _activate(self, rows: np.ndarray) -> np.ndarray:
        """Darknet's [yolo] activations on ``rows`` ``[K, 5+C]`` (float32, in place): logistic on x,
        y, objectness and classes unless ``new_coords``, then ``scale_x_y``. Element-wise, so a
        subset of the rows gets exactly the values the whole layer would."""
        if not self.new_coords:
            rows[:, 0:2] = logistic(rows[:, 0:2])
            rows[:, 4:] = logistic(rows[:, 4:])
        if self.scale_x_y != 1.0:  # scal_add_cpu(x, scale, -0.5*(scale-1)): a float scale, a double bias
            scale = np.float32(self.scale_x_y)
            rows[:, 0:2] = rows[:, 0:2] * scale + np.float32(-0.5 * (float(scale) - 1))
        return rows

    def _rows(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` ``[A*(5+C), H, W]`` as rows ``[H*W*A, 5+C]`` in Darknet's order: cells row-major,
        then anchor slots."""
        a, c = len(self.mask), self.classes
        _, h, w = raw.shape
        return raw.reshape(a, 5 + c, h, w).transpose(2, 3, 0, 1).reshape(h * w * a, 5 + c)

    def forward(self, raw: np.ndarray) -> np.ndarray:
        """Darknet's [yolo] layer output (``forward_yolo_layer``) for one image, same layout as ``raw``."""
        a, c = len(self.mask), self.classes
        _, h, w = raw.shape
        rows = self._activate(self._rows(raw).astype(np.float32, copy=True))
        return rows.reshape(h, w, a, 5 + c).transpose(2, 3, 0, 1).reshape(raw.shape)

    def candidates(self, raw: np.ndarray, net_w: int, net_h: int, thresh: float):
        a = len(self.mask)
        _, h, w = raw.shape
        rows = self._rows(raw)
        # objectness first, the other activations only for the rows that pass (the layer's outputs
        # are element-wise, so the kept rows are exactly forward()'s)
        objectness = rows[:, 4].astype(np.float32) if self.new_coords else logistic(rows[:, 4])
        keep = np.nonzero(objectness > np.float32(thresh))[0]
        t = self._activate(rows[keep].astype(np.float32, copy=True))
        cell, slot = np.divmod(keep, a)
        row, col = np.divmod(cell, w)
        anchors = np.asarray(self.masked_anchors, np.float32)[slot]
        boxes = np.empty((keep.size, 4), np.float32)
        boxes[:, 0] = (col.astype(np.float32) + t[:, 0]) / np.float32(w)
        boxes[:, 1] = (row.astype(np.float32) + t[:, 1]) / np.float32(h)
        net = np.array([net_w, net_h], np.float32)
        if self.new_coords:
            boxes[:, 2:4] = t[:, 2:4] * t[:, 2:4] * np.float32(4) * anchors / net
        else:
            boxes[:, 2:4] = (np.exp(t[:, 2:4].astype(np.float64)) * anchors / net).astype(np.float32)
        obj = t[:, 4]
        probs = obj[:, None] * t[:, 5:]
        probs[probs <= np.float32(thresh)] = 0
        return boxes, obj, probs
