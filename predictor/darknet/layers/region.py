"""``[region]`` head (YOLOv2): src/region_layer.c, ``coords=4``, ``softmax=1``.

Raw input ``[N*(5+C), H, W]`` planar: anchor ``n``, entry ``k`` (0 tx, 1 ty, 2 tw, 3 th,
4 objectness, 5.. classes), then cells. Logistic on x, y and objectness, softmax over the classes
of each anchor and cell. Box: ``x = (col + σ(tx))/W``, ``w = exp(tw)*anchor_w/W`` -- the anchors
are in grid cells, not pixels. Class prob = objectness*softmax, kept if > thresh. Darknet emits a
detection for EVERY anchor and cell (``l.w*l.h*l.n`` of them); the two Darknets differ in order
and objectness:

* pjreddie ``get_region_detections``: order anchor-major (``n*W*H + cell``); objectness is kept
  only if > thresh (else 0, and such detections are dropped before NMS, the zero-objectness
  compaction of ``do_nms_*``).
* AlexeyAB ``custom_get_region_detections``: order cell-major (``cell*N + n``), objectness = 1
  for every detection (its ``detector test`` then runs the per-class ``do_nms_sort``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from predictor.darknet.cfg import MAX_CLASSES, Options
from predictor.darknet.layers.base import Head, anchor_pairs, logistic


def darknet_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Darknet's ``softmax``: ``exp(x - max)`` (double exp, float storage) over a float sum."""
    x = x.astype(np.float32)
    e = np.exp((x - x.max(axis=axis, keepdims=True)).astype(np.float64)).astype(np.float32)
    return e / e.sum(axis=axis, keepdims=True, dtype=np.float32)


@dataclass
class RegionLayer(Head):
    anchors: tuple[tuple[float, float], ...] = ()  # (w, h) in grid cells

    SECTIONS: ClassVar[tuple[str, ...]] = ("region",)
    OUTPUT_PREFIX: ClassVar[str] = "region"
    TRAINING: ClassVar[frozenset[str]] = frozenset(
        {"log", "sqrt", "max", "jitter", "rescore", "thresh", "absolute", "random", "coord_scale", "object_scale",
         "noobject_scale", "mask_scale", "class_scale", "bias_match"}
    )
    TRAINING_ALEXEYAB: ClassVar[frozenset[str]] = frozenset({"focal_loss", "resize"})

    @classmethod
    def parse(cls, o: Options) -> RegionLayer:
        if o.int("coords", 4, 0, 64) != 4:
            raise o.err("only coords=4 is supported", "coords")
        if o.int("softmax", 0, 0, 1) != 1:
            raise o.err("only softmax=1 is supported", "softmax")
        for key in ("background", "classfix"):
            o.only(key, "0")
        o.refuse("tree")
        o.refuse("map")
        classes = o.int("classes", 20, 1, MAX_CLASSES)
        num = o.int("num", 1, 1, 1000)
        return cls(index=o.index, classes=classes, anchors=anchor_pairs(o, num))

    @property
    def anchors_per_cell(self) -> int:
        return len(self.anchors)

    def forward(self, raw: np.ndarray) -> np.ndarray:
        """Darknet's [region] layer output (pjreddie ``forward_region_layer``) for one image, in the
        planar layout of ``raw`` (AlexeyAB's holds the same values transposed to cell-major)."""
        n, c = len(self.anchors), self.classes
        t = raw.reshape(n, 5 + c, *raw.shape[1:]).astype(np.float32, copy=True)
        t[:, 0:2] = logistic(t[:, 0:2])
        t[:, 4] = logistic(t[:, 4])
        t[:, 5:] = darknet_softmax(t[:, 5:], axis=1)
        return t.reshape(raw.shape)

    def candidates(self, raw: np.ndarray, net_w: int, net_h: int, thresh: float):
        n, c = len(self.anchors), self.classes
        _, h, w = raw.shape
        out = self.forward(raw).reshape(n, 5 + c, h, w)
        if self.lineage == "alexeyab":  # cell-major: (H, W, N, 5+C)
            t = out.transpose(2, 3, 0, 1).reshape(h * w * n, 5 + c)
            cell, slot = np.divmod(np.arange(h * w * n), n)
        else:  # anchor-major: (N, H, W, 5+C)
            t = out.transpose(0, 2, 3, 1).reshape(n * h * w, 5 + c)
            slot, cell = np.divmod(np.arange(h * w * n), h * w)
        row, col = np.divmod(cell, w)
        anchors = np.asarray(self.anchors, np.float32)[slot]
        boxes = np.empty((t.shape[0], 4), np.float32)
        boxes[:, 0] = (col.astype(np.float32) + t[:, 0]) / np.float32(w)
        boxes[:, 1] = (row.astype(np.float32) + t[:, 1]) / np.float32(h)
        grid = np.array([w, h], np.float64)
        boxes[:, 2:4] = (np.exp(t[:, 2:4].astype(np.float64)) * anchors / grid).astype(np.float32)
        scale = t[:, 4]
        probs = scale[:, None] * t[:, 5:]
        if self.lineage == "alexeyab":
            objectness = np.ones_like(scale)
        else:
            objectness = np.where(scale > np.float32(thresh), scale, np.float32(0))
            probs[objectness == 0] = 0
        probs[probs <= np.float32(thresh)] = 0
        return boxes, objectness, probs
