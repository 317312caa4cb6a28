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
  annotations with ``bbox = [x_min, y_min, w, h]``; :func:`coco_category_map` picks the
  official COCO category ids (1..90) for the 80 COCO classes, else class index + 1.
* :meth:`DetectionResult.to_yolo_txt` -- YOLO label lines ``class_id cx cy w h`` (normalised).

Numbers written out are rounded: pixels to :data:`PIXEL_DECIMALS` (3) decimals, confidences to
:data:`CONFIDENCE_DECIMALS` (6, what the server sends), normalised coordinates to 6.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "Detection",
    "DetectionResult",
    "ModelInfo",
    "COCO80_NAMES",
    "COCO80_TO_91",
    "PIXEL_DECIMALS",
    "CONFIDENCE_DECIMALS",
    "coco_category_map",
    "coco_results",
    "coco_detections",
]

PIXEL_DECIMALS = 3
CONFIDENCE_DECIMALS = 6
NORMALISED_DECIMALS = 6

#: The 80 COCO classes in Darknet's ``coco.names`` order (Darknet's spellings).
COCO80_NAMES = (
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa", "pottedplant",
    "bed", "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)
#: COCO's own spellings where they differ from Darknet's (both are recognised as COCO).
_COCO_OFFICIAL = {"motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch",
                  "pottedplant": "potted plant", "diningtable": "dining table", "tvmonitor": "tv"}

#: Darknet/YOLO class index (0..79, ``coco.names`` order) -> official COCO category id (1..90).
COCO80_TO_91 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)


def _is_coco_class(class_id: int, name: str) -> bool:
    if not 0 <= class_id < len(COCO80_NAMES):
        return False
    darknet = COCO80_NAMES[class_id]
    return name in (darknet, _COCO_OFFICIAL.get(darknet, darknet))


def coco_category_map(results: Iterable["DetectionResult"] = (),
                      classes: Sequence[str] | None = None) -> str:
    """``"coco91"`` when the model is the 80-class COCO model, else ``"index+1"``.

    Decided from the model's class list when known (``classes``: 80 names in COCO order, Darknet's
    or COCO's spellings), else from the detections (every class id names its COCO class).
    """
    if classes is not None:
        ok = len(classes) == len(COCO80_NAMES) and all(
            _is_coco_class(i, n) for i, n in enumerate(classes))
        return "coco91" if ok else "index+1"
    dets = [d for r in results for d in r.detections]
    return "coco91" if all(_is_coco_class(d.class_id, d.class_name) for d in dets) else "index+1"


def _category_id(det: "Detection", category_map: Any) -> int:
    """COCO ``category_id`` of a detection.

    ``category_map``: ``None``/``"index"`` (the model's class index), ``"index+1"`` (COCO ids
    start at 1), ``"coco91"`` (:data:`COCO80_TO_91`), a mapping ``{class_name or class_id: id}``
    or a callable ``(Detection) -> int``.
    """
    if category_map is None or category_map == "index":
        return det.class_id
    if category_map == "index+1":
        return det.class_id + 1
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
        """The server's detection object (pixels to 3 decimals, confidence to 6)."""
        return {
            "class": self.class_name,
            "class_id": self.class_id,
            "confidence": round(self.confidence, CONFIDENCE_DECIMALS),
            "x": round(self.x, PIXEL_DECIMALS),
            "y": round(self.y, PIXEL_DECIMALS),
            "width": round(self.width, PIXEL_DECIMALS),
            "height": round(self.height, PIXEL_DECIMALS),
        }

    def scaled(self, fx: float, fy: float) -> "Detection":
        """The same detection with x/width multiplied by ``fx`` and y/height by ``fy``."""
        return replace(self, x=self.x * fx, y=self.y * fy, width=self.width * fx,
                       height=self.height * fy)

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
            "bbox": [round(v, PIXEL_DECIMALS) for v in self.tlwh],
            "score": round(self.confidence, CONFIDENCE_DECIMALS),
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
        model_version: the version of the model that answered, when the server names it (the
            transformer's ``x-model-version`` header, or the v2 ``model_version``).
    """

    image: str | None
    width: int
    height: int
    detections: list[Detection] = field(default_factory=list)
    request_id: str | None = None
    model_version: str | None = field(default=None, compare=False)

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

    def rescaled(self, width: int, height: int) -> "DetectionResult":
        """This result mapped onto the same image at ``width`` x ``height`` pixels (used after a
        client-side downscale: boxes go back to the original's pixels)."""
        fx, fy = width / self.width, height / self.height
        return replace(self, width=int(width), height=int(height),
                       detections=[d.scaled(fx, fy) for d in self.detections])

    def to_yolo_txt(self) -> str:
        """YOLO label lines, one per detection: ``class_id cx cy w h`` normalised to [0, 1] by the
        image size (6 decimals); empty string without detections."""
        lines = []
        for d in self.detections:
            vals = (d.x / self.width, d.y / self.height, d.width / self.width, d.height / self.height)
            lines.append(f"{d.class_id} " + " ".join(f"{v:.{NORMALISED_DECIMALS}f}" for v in vals))
        return "".join(line + "\n" for line in lines)

    def summary(self) -> str:
        """Counts per class in order of first appearance, e.g. ``"1 dog, 2 cars"`` (Ultralytics
        style; ``"no detections"`` when empty)."""
        counts: dict[str, int] = {}
        for d in self.detections:
            counts[d.class_name] = counts.get(d.class_name, 0) + 1
        if not counts:
            return "no detections"
        return ", ".join(f"{n} {_plural(name, n)}" for name, n in counts.items())

    def to_coco(self, image_id: int | str, category_map: Any = None) -> list[dict]:
        """COCO results (``bbox = [x_min, y_min, w, h]``) of this image."""
        return [d.to_coco(image_id, category_map) for d in self.detections]


def _plural(name: str, n: int) -> str:
    if n == 1 or name.endswith("s"):
        return name
    if name.endswith(("sh", "ch", "x")):
        return name + "es"
    return name + "s"


@dataclass(frozen=True)
class ModelInfo:
    """A served model as its metadata describes it (``GET /v2/models/<name>``, gRPC
    ``ModelMetadata``). :attr:`parameters` holds the model description when the server sends one
    (``version``, ``input_width``, ``input_height``, ``classes``, ...); the properties read it."""

    name: str
    versions: tuple[str, ...] = ()
    platform: str = ""
    inputs: tuple[dict, ...] = ()
    outputs: tuple[dict, ...] = ()
    parameters: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "ModelInfo":
        try:
            params = doc.get("parameters") or {}
            return cls(
                name=str(doc["name"]),
                versions=tuple(str(v) for v in (doc.get("versions") or ())),
                platform=str(doc.get("platform") or ""),
                inputs=tuple(dict(i) for i in (doc.get("inputs") or ())),
                outputs=tuple(dict(o) for o in (doc.get("outputs") or ())),
                parameters=dict(params) if isinstance(params, Mapping) else {},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed model metadata: {e!r}") from e

    @property
    def version(self) -> str | None:
        v = self.parameters.get("version")
        if v is not None:
            return str(v)
        return self.versions[-1] if self.versions else None

    @property
    def classes(self) -> list[str] | None:
        c = self.parameters.get("classes")
        return [str(x) for x in c] if isinstance(c, (list, tuple)) else None

    @property
    def input_size(self) -> tuple[int, int] | None:
        """``(width, height)`` the model letterboxes to, when the server says."""
        w, h = self.parameters.get("input_width"), self.parameters.get("input_height")
        if w is not None and h is not None:
            return int(w), int(h)
        for inp in self.inputs:  # a predictor-style input [N, 3, H, W]
            shape = inp.get("shape") or []
            if len(shape) == 4 and shape[1] == 3 and shape[2] > 0 and shape[3] > 0:
                return int(shape[3]), int(shape[2])
        return None


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
    """A COCO *results* list (the format ``pycocotools.COCO.loadRes`` reads) for many images:
    ``[{"image_id", "category_id", "bbox": [x_min, y_min, w, h], "score"}, ...]``. Image ids are
    the numeric file stems when all are numeric and unique (COCO's own file names), else 1..N."""
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
