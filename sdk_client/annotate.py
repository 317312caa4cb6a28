"""Draw detections on a copy of an image (boxes plus a ``"label conf"`` tag), with Pillow.

The result looks like the tutorial's ``bird_label.jpg``. Boxes are in the pixels of the
EXIF-oriented image (the server applies the EXIF orientation before detecting), so paths and
encoded bytes are oriented the same way before drawing.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from .results import DetectionResult

__all__ = ["annotate", "save_annotated", "class_color", "label_boxes", "layout_labels"]

# A 20-colour qualitative palette; class ids index into it.
_PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


def class_color(class_id: int, class_name: str = "") -> tuple[int, int, int]:
    """Deterministic RGB colour of a class (by id; by name when the id is unknown)."""
    key = class_id if class_id >= 0 else sum(class_name.encode())
    return _PALETTE[key % len(_PALETTE)]


def _load(image: Any):
    from PIL import Image, ImageOps

    if isinstance(image, Image.Image):
        return image.copy()
    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as im:
            im.load()
            return ImageOps.exif_transpose(im)
    if isinstance(image, (bytes, bytearray, memoryview)):
        with Image.open(io.BytesIO(bytes(image))) as im:
            im.load()
            return ImageOps.exif_transpose(im)
    if hasattr(image, "__array_interface__"):
        import numpy as np

        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        return Image.fromarray(np.ascontiguousarray(arr))
    raise TypeError(f"unsupported image type {type(image).__name__}")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def layout_labels(boxes: list[tuple[float, float, float, float]],
                  sizes: list[tuple[float, float]], width: int, height: int) -> list[tuple]:
    """Rectangles ``(x0, y0, x1, y1)`` for label tags of ``sizes`` next to ``boxes`` (xyxy), placed
    in order so that no tag overlaps an earlier one and every tag lies inside the image.

    Each tag goes above its box when there is room, else inside its top edge; when that spot is
    taken (boxes that share a position, e.g. "car" and "truck" on the same object), it moves down
    one tag height at a time, then up, then sideways -- never on top of another tag. Only when the
    image has no free spot at all (more tags than fit) does a tag overlap.
    """
    placed: list[tuple] = []
    for (bx0, by0, _bx1, _by1), (tw, th) in zip(boxes, sizes):
        tw, th = min(tw, width), min(th, height)
        max_left, max_top = max(0.0, width - tw), max(0.0, height - th)
        left0 = min(max(0.0, bx0), max_left)
        top0 = by0 - th if by0 - th >= 0 else min(max(0.0, by0), max_top)
        tops = [top0]
        step = 1
        while top0 + step * th <= max_top or top0 - step * th >= 0:
            if top0 + step * th <= max_top:
                tops.append(top0 + step * th)
            if top0 - step * th >= 0:
                tops.append(top0 - step * th)
            step += 1
        lefts = [left0] + [x for k in range(1, int(width // max(tw, 1)) + 1)
                           for x in (left0 + k * tw, left0 - k * tw) if 0 <= x <= max_left]
        chosen = None
        for left in lefts:
            for top in tops:
                rect = (left, top, left + tw, top + th)
                if not any(_overlaps(rect, p) for p in placed):
                    chosen = rect
                    break
            if chosen:
                break
        placed.append(chosen or (left0, top0, left0 + tw, top0 + th))
    return placed


def _style(size: tuple[int, int], line_width: int | None, font_size: int | None):
    scale = max(size)
    lw = line_width or max(2, round(scale / 300))
    fs = font_size or max(12, round(scale / 45))
    return lw, _font(fs), max(1, lw // 2 + 1)


def _drawable(detections, w: int, h: int) -> list:
    out = []
    for det in detections:
        x0, y0, x1, y1 = det.xyxy
        x0, y0 = max(0.0, x0), max(0.0, y0)
        x1, y1 = min(w - 1.0, x1), min(h - 1.0, y1)
        if x1 > x0 and y1 > y0:
            out.append((det, (x0, y0, x1, y1)))
    return out


def _laid_out(result: DetectionResult, size: tuple[int, int], font: Any, pad: int,
              show_confidence: bool) -> list[tuple]:
    """``(detection, clipped box, label text, tag rectangle, text bbox origin)`` of every drawn
    detection of an image of ``size``."""
    from PIL import Image, ImageDraw

    w, h = size
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    items = _drawable(result.detections, w, h)
    texts, sizes, origins = [], [], []
    for det, _ in items:
        label = f"{det.class_name} {det.confidence:.2f}" if show_confidence else det.class_name
        tx0, ty0, tx1, ty1 = measure.textbbox((0, 0), label, font=font)
        texts.append(label)
        origins.append((tx0, ty0))
        sizes.append((tx1 - tx0 + 2 * pad, ty1 - ty0 + 2 * pad))
    rects = layout_labels([b for _, b in items], sizes, w, h)
    return [(det, box, text, rect, origin)
            for (det, box), text, rect, origin in zip(items, texts, rects, origins)]


def label_boxes(result: DetectionResult, size: tuple[int, int], *, line_width: int | None = None,
                font_size: int | None = None, show_confidence: bool = True) -> list[tuple]:
    """``(detection, label text, tag rectangle)`` for every drawn detection, as :func:`annotate`
    lays them out for an image of ``size`` (width, height)."""
    _, font, pad = _style(size, line_width, font_size)
    return [(det, text, rect) for det, _, text, rect, _ in _laid_out(result, size, font, pad, show_confidence)]


def annotate(
    image: Any,
    result: DetectionResult,
    *,
    line_width: int | None = None,
    font_size: int | None = None,
    show_confidence: bool = True,
):
    """Return a new RGB ``PIL.Image`` with ``result``'s boxes and ``"label conf"`` tags drawn.

    Boxes are drawn first, then the tags, laid out by :func:`layout_labels` so that no tag hides
    another (boxes that share a position get their tags stacked).

    Args:
        image: a path, encoded bytes, a PIL image or a numpy array (the input is not modified).
        result: detections in the image's pixel coordinates.
        line_width: box outline width (default: scales with the image size).
        font_size: label font size (default: scales with the image size).
        show_confidence: append the confidence to the label (``"dog 0.57"``).
    """
    from PIL import ImageDraw

    img = _load(image).convert("RGB")
    lw, font, pad = _style(img.size, line_width, font_size)
    draw = ImageDraw.Draw(img)
    labels = _laid_out(result, img.size, font, pad, show_confidence)
    for det, box, _, _, _ in labels:
        draw.rectangle(box, outline=class_color(det.class_id, det.class_name), width=lw)
    for det, _, text, (x0, y0, x1, y1), (tx0, ty0) in labels:
        color = class_color(det.class_id, det.class_name)
        draw.rectangle((x0, y0, x1, y1), fill=color)
        text_color = (0, 0, 0) if sum(color) > 450 else (255, 255, 255)
        draw.text((x0 + pad - tx0, y0 + pad - ty0), text, fill=text_color, font=font)
    return img


def save_annotated(image: Any, result: DetectionResult, path: str | os.PathLike, **kwargs: Any) -> Path:
    """:func:`annotate` and save to ``path`` (format from the extension; JPEG quality 90)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = annotate(image, result, **kwargs)
    fmt_kwargs: dict[str, Any] = {}
    if path.suffix.lower() in (".jpg", ".jpeg"):
        fmt_kwargs["quality"] = 90
    img.save(path, **fmt_kwargs)
    return path
