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

__all__ = ["annotate", "save_annotated", "class_color"]

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


def annotate(
    image: Any,
    result: DetectionResult,
    *,
    line_width: int | None = None,
    font_size: int | None = None,
    show_confidence: bool = True,
):
    """Return a new RGB ``PIL.Image`` with ``result``'s boxes and ``"label conf"`` tags drawn.

    Args:
        image: a path, encoded bytes, a PIL image or a numpy array (the input is not modified).
        result: detections in the image's pixel coordinates.
        line_width: box outline width (default: scales with the image size).
        font_size: label font size (default: scales with the image size).
        show_confidence: append the confidence to the label (``"dog 0.57"``).
    """
    from PIL import ImageDraw

    img = _load(image).convert("RGB")
    w, h = img.size
    scale = max(w, h)
    lw = line_width or max(2, round(scale / 300))
    fs = font_size or max(12, round(scale / 45))
    font = _font(fs)
    draw = ImageDraw.Draw(img)
    for det in result.detections:
        color = class_color(det.class_id, det.class_name)
        x0, y0, x1, y1 = det.xyxy
        x0, y0 = max(0.0, x0), max(0.0, y0)
        x1, y1 = min(w - 1.0, x1), min(h - 1.0, y1)
        if x1 <= x0 or y1 <= y0:
            continue
        draw.rectangle((x0, y0, x1, y1), outline=color, width=lw)
        label = f"{det.class_name} {det.confidence:.2f}" if show_confidence else det.class_name
        tx0, ty0, tx1, ty1 = draw.textbbox((0, 0), label, font=font)
        tw, th = tx1 - tx0, ty1 - ty0
        pad = max(1, lw // 2 + 1)
        # Tag above the box when there is room, else inside its top edge.
        top = y0 - th - 2 * pad if y0 - th - 2 * pad >= 0 else y0
        left = min(x0, max(0.0, w - tw - 2 * pad))
        draw.rectangle((left, top, left + tw + 2 * pad, top + th + 2 * pad), fill=color)
        text_color = (0, 0, 0) if sum(color) > 450 else (255, 255, 255)
        draw.text((left + pad - tx0, top + pad - ty0), label, fill=text_color, font=font)
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
