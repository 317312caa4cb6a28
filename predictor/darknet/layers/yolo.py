"""``[yolo]`` head (YOLOv3): src/yolo_layer.c.

Raw input ``[A*(5+C), H, W]``, channel ``a*(5+C)+k`` (k: 0 tx, 1 ty, 2 tw, 3 th, 4 objectness,
5.. classes), one slot per ``mask`` entry. Logistic on x, y, objectness and classes;
``w = exp(tw)*anchor_w/net_w``. Darknet visits cells row-major, then slots, and keeps a slot only
if ``objectness > thresh``; each class prob is ``objectness*class``, kept if > thresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from predictor.darknet.cfg import MAX_CLASSES, Options
from predictor.darknet.layers.base import Head, anchor_pairs, logistic


@dataclass
class YoloLayer(Head):
    mask: tuple[int, ...] = ()
    anchors: tuple[tuple[float, float], ...] = ()  # all anchors (w, h) in network-input pixels

    SECTIONS: ClassVar[tuple[str, ...]] = ("yolo",)
    OUTPUT_PREFIX: ClassVar[str] = "yolo"
    TRAINING: ClassVar[frozenset[str]] = frozenset({"max", "jitter", "ignore_thresh", "truth_thresh", "random"})

    @classmethod
    def parse(cls, o: Options) -> YoloLayer:
        classes = o.int("classes", 20, 1, MAX_CLASSES)
        num = o.int("num", len(o.floats("anchors")) // 2 or 1, 1, 1000)
        anchors = anchor_pairs(o, num)
        mask = o.ints("mask") or list(range(num))
        if any(not 0 <= m < num for m in mask):
            raise o.err(f"'mask' {mask} refers to anchors outside 0..{num - 1}", "mask")
        o.refuse("map")
        return cls(index=o.index, classes=classes, mask=tuple(mask), anchors=anchors)

    @property
    def masked_anchors(self) -> tuple[tuple[float, float], ...]:
        return tuple(self.anchors[m] for m in self.mask)

    @property
    def anchors_per_cell(self) -> int:
        return len(self.mask)

    def forward(self, raw: np.ndarray) -> np.ndarray:
        """Darknet's [yolo] layer output (``forward_yolo_layer``) for one image, same layout as ``raw``."""
        a, c = len(self.mask), self.classes
        t = raw.reshape(a, 5 + c, *raw.shape[1:]).astype(np.float32, copy=True)
        t[:, 0:2] = logistic(t[:, 0:2])
        t[:, 4:] = logistic(t[:, 4:])
        return t.reshape(raw.shape)

    def candidates(self, raw: np.ndarray, net_w: int, net_h: int, thresh: float):
        a, c = len(self.mask), self.classes
        _, h, w = raw.shape
        # (A, 5+C, H, W) -> (H, W, A, 5+C): darknet visits cells row-major, then anchor slots
        t = self.forward(raw).reshape(a, 5 + c, h, w).transpose(2, 3, 0, 1).reshape(h * w * a, 5 + c)
        keep = np.nonzero(t[:, 4] > np.float32(thresh))[0]
        t = t[keep]
        cell, slot = np.divmod(keep, a)
        row, col = np.divmod(cell, w)
        anchors = np.asarray(self.masked_anchors, np.float32)[slot]
        boxes = np.empty((keep.size, 4), np.float32)
        boxes[:, 0] = (col.astype(np.float32) + t[:, 0]) / np.float32(w)
        boxes[:, 1] = (row.astype(np.float32) + t[:, 1]) / np.float32(h)
        net = np.array([net_w, net_h], np.float32)
        boxes[:, 2:4] = (np.exp(t[:, 2:4].astype(np.float64)) * anchors / net).astype(np.float32)
        obj = t[:, 4]
        probs = obj[:, None] * t[:, 5:]
        probs[probs <= np.float32(thresh)] = 0
        return boxes, obj, probs
