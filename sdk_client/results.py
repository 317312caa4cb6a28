"""Typed detection results and their conversions.

Box convention (the server's): ``x, y`` is the box centre and ``width, height`` its size, all in
pixels of the original (EXIF-oriented) image. Conversions:

* :meth:`DetectionResult.to_dict` -- the server's per-image object
  ``{"image": {"width", "height"}, "detections": [{"class", "class_id", "confidence", "x", "y",
  "width", "height"}, ...]}``;
* :meth:`DetectionResult.to_record` -- one CLI JSONL line ``{"image": path, "width", "height",
  "detections": [...]}``;
* :meth:`DetectionResult.to_triples` -- the tutorial's ``[[label, conf, [cx, cy, w, h]], ...]``;
* :meth:`DetectionResult.to_coco` / :func:`coco_results` / :func:`coco_detections` -- COCO
  annotations with ``bbox = [x_min, y_min, w, h]``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "Detection",
    "DetectionResult",
    "COCO80_TO_91",
    "coco_results",
    "coco_detections",
]

#: Darknet/YOLO class index (0..79, ``coco.names`` order) -> official COCO category id (1..90).
COCO80_TO_91 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)

def _category_id(det: "Detection", category_map: Any) -> int:
    """COCO ``category_id`` of a detection.

    ``category_map``: ``None``/``"index"`` (the model's class index), ``"coco91"``
    (:data:`COCO80_TO_91`), a mapping ``{class_name or class_id: id}`` or a callable
    ``(Detection) -> int``.
    """
    if category_map is None or category_map == "index":
        return det.class_id
    if category_map == "coco91":
        if not 0 <= det.class_id < len(COCO80_TO_91):
            raise ValueError(f"class_id {det.class_id} ({det.class_name!r}) has no COCO-91 id")
        return COCO80_TO_91[det.class_id]
    if callable(category_map):
        return int(category_map(det))
    if isinstance(category_map, Mapping):
        if det.class_name in category_map:
            return int(category_map[det.class_name])
        return int(category_map[det.class_id])
    raise ValueError(f"unknown category_map {category_map!r}")


@dataclass(frozen=True)
class Detection:
    """One detected object: class, confidence and a centre/size box in original-image pixels."""

    class_name: str
    class_id: int
    confidence: float
    x: float
    y: float
    width: float
    height: float

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """``(x_min, y_min, x_max, y_max)`` in pixels."""
        hw, hh = self.width / 2.0, self.height / 2.0
        return (self.x - hw, self.y - hh, self.x + hw, self.y + hh)

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        """``(cx, cy, w, h)`` in pixels (the server's and the tutorial's convention)."""
        return (self.x, self.y, self.width, self.height)

    @property
    def tlwh(self) -> tuple[float, float, float, float]:
        """``(x_min, y_min, w, h)`` in pixels (COCO's ``bbox``)."""
        return (self.x - self.width / 2.0, self.y - self.height / 2.0, self.width, self.height)

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def iou(self, other: "Detection") -> float:
        """Intersection over union of the two boxes (0 when disjoint)."""
        ax0, ay0, ax1, ay1 = self.xyxy
        bx0, by0, bx1, by1 = other.xyxy
        iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
        ih = max(0.0, min(ay1, by1) - max(ay0, by0))
        inter = iw * ih
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def to_dict(self) -> dict:
        """The server's detection object."""
        return {
            "class": self.class_name,
            "class_id": self.class_id,
            "confidence": self.confidence,
            "x": self.x,
            "y": self.y,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Detection":
        """Parse the server's detection object (``class_name`` is accepted for ``class``)."""
        try:
            name = data["class"] if "class" in data else data["class_name"]
            return cls(
                class_name=str(name),
                class_id=int(data.get("class_id", -1)),
                confidence=float(data["confidence"]),
                x=float(data["x"]),
                y=float(data["y"]),
                width=float(data["width"]),
                height=float(data["height"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed detection object: {e}") from e

    def to_triple(self) -> list:
        """The tutorial's ``[label, conf, [cx, cy, w, h]]``."""
        return [self.class_name, self.confidence, [self.x, self.y, self.width, self.height]]

    @classmethod
    def from_triple(cls, triple: Sequence[Any], class_id: int = -1) -> "Detection":
        label, conf, (cx, cy, w, h) = triple
        return cls(str(label), int(class_id), float(conf), float(cx), float(cy), float(w), float(h))

    def to_coco(self, image_id: int | str, category_map: Any = None) -> dict:
        """One COCO result: ``{"image_id", "category_id", "bbox": [x_min, y_min, w, h], "score"}``."""
        return {
            "image_id": image_id,
            "category_id": _category_id(self, category_map),
            "bbox": [round(v, 3) for v in self.tlwh],
            "score": round(self.confidence, 5),
        }


@dataclass
class DetectionResult:
    """Detections of one image.

    Attributes:
        image: what identifies the image on the client side (the path given to ``detect``), or
            ``None`` for in-memory images.
        width, height: original image size in pixels, as decoded by the server.
        detections: sorted by descending confidence.
        request_id: the ``x-request-id`` of the request that produced it.
    """

    image: str | None
    width: int
    height: int
    detections: list[Detection] = field(default_factory=list)
    request_id: str | None = None

    def __len__(self) -> int:
        return len(self.detections)

    def __iter__(self):
        return iter(self.detections)

    def to_dict(self) -> dict:
        """The server's per-image prediction object."""
        return {
            "image": {"width": self.width, "height": self.height},
            "detections": [d.to_dict() for d in self.detections],
        }

    def to_record(self) -> dict:
        """One CLI JSONL line: ``{"image": path, "width", "height", "detections": [...]}``."""
        return {
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "detections": [d.to_dict() for d in self.detections],
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], image: str | None = None, request_id: str | None = None
    ) -> "DetectionResult":
        """Parse the server's prediction object, or a record written by :meth:`to_record`."""
        try:
            img = data["image"]
            if isinstance(img, Mapping):
                width, height = int(img["width"]), int(img["height"])
            else:
                width, height = int(data["width"]), int(data["height"])
                if image is None and img is not None:
                    image = str(img)
            dets = data["detections"]
            if not isinstance(dets, list):
                raise TypeError("'detections' is not a list")
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed prediction object: {e!r}") from e
        return cls(image, width, height, [Detection.from_dict(d) for d in dets], request_id)

    def to_triples(self) -> list[list]:
        """The tutorial's ``[[label, conf, [cx, cy, w, h]], ...]``."""
        return [d.to_triple() for d in self.detections]

    def to_coco(self, image_id: int | str, category_map: Any = None) -> list[dict]:
        """COCO results (``bbox = [x_min, y_min, w, h]``) of this image."""
        return [d.to_coco(image_id, category_map) for d in self.detections]


def _image_ids(results: Sequence[DetectionResult]) -> list[int]:
    """COCO image ids: the numeric file stems when all are numeric and unique, else 1..N."""
    stems = [os.path.splitext(os.path.basename(r.image or ""))[0] for r in results]
    if stems and all(s.isdigit() for s in stems):
        ids = [int(s) for s in stems]
        if len(set(ids)) == len(ids):
            return ids
    return list(range(1, len(results) + 1))


def coco_results(
    results: Iterable[DetectionResult],
    image_ids: Sequence[int] | None = None,
    category_map: Any = None,
) -> list[dict]:
    """A COCO *results* list (the format ``pycocotools.COCO.loadRes`` reads) for many images."""
    results = list(results)
    ids = list(image_ids) if image_ids is not None else _image_ids(results)
    out: list[dict] = []
    for image_id, res in zip(ids, results, strict=True):
        out.extend(res.to_coco(image_id, category_map))
    return out


def coco_detections(
    results: Iterable[DetectionResult],
    image_ids: Sequence[int] | None = None,
    category_map: Any = None,
) -> dict:
    """A self-describing COCO detections file for many images.

    ``{"images": [{"id", "file_name", "width", "height"}], "annotations": [{"id", "image_id",
    "category_id", "bbox", "area", "iscrowd", "score"}], "categories": [{"id", "name"}]}``.
    Image ids are the numeric file stems when possible (COCO's own naming), else 1..N; category ids
    follow ``category_map`` (default: the model's class index).
    """
    results = list(results)
    ids = list(image_ids) if image_ids is not None else _image_ids(results)
    images, annotations, categories = [], [], {}
    for image_id, res in zip(ids, results, strict=True):
        images.append(
            {"id": image_id, "file_name": res.image, "width": res.width, "height": res.height}
        )
        for det in res.detections:
            ann = det.to_coco(image_id, category_map)
            categories.setdefault(ann["category_id"], det.class_name)
            ann.update(id=len(annotations) + 1, area=round(det.area, 3), iscrowd=0)
            annotations.append(ann)
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k, "name": v} for k, v in sorted(categories.items())],
    }
