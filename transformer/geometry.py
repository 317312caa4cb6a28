"""Darknet-exact letterbox and box mapping (numpy, plus a small C kernel for the resize).

Conventions used throughout this module:

* Sizes are always given as ``(width, height)`` pairs, in that order (``src_w, src_h``,
  ``net_w, net_h``); image arrays are indexed ``[row, column]`` i.e. ``[y, x]``.
* Boxes are ``[K, 4]`` arrays of ``(cx, cy, w, h)``: centre and size in **pixels** of the image
  they refer to (the network input for "network boxes", the original upload for "original boxes").
  This is the form Darknet's ``get_network_boxes(..., relative=0)`` returns.

The letterbox reproduces pjreddie/darknet ``letterbox_image`` + ``resize_image`` (src/image.c) bit
for bit, including its float32 arithmetic and its quirks:

* the scale decision compares ``(float)net_w/src_w < (float)net_h/src_h`` in float32 and the new
  size uses C integer (floor) division;
* ``resize_image`` is a separable "align-corners" bilinear (``scale = (in-1)/(out-1)`` in float32),
  horizontal pass first, then vertical; the last output *column* copies the last source column,
  the last output *row* is ``(1-dy) * part[iy]`` without the ``dy * part[iy+1]`` term (which is a
  copy of the last source row whenever the float32 product lands exactly on ``in-1``);
* the canvas is filled with 0.5 (``fill_image(boxed, .5)``; on the uint8 wire ``rint(127.5) = 128``,
  half to even) and the resized image pasted at ``((net-new)//2)``.

The ``"resize"`` mode (:func:`resize_params`, ``preprocess_uint8(..., mode="resize")``) is AlexeyAB's
``detector test`` without ``-letter_box``: the same ``resize_image`` straight to ``net_w x net_h``
(AlexeyAB returns a copy when the size already matches, which the bilinear reproduces exactly:
scale 1, weights 1 and 0), boxes corrected by ``correct_yolo_boxes(..., letter=0)``.

The resize runs in ``transformer._letterbox`` (``_letterbox.c``, built by ``pip install``): it
reads the decoded pixels through any strides (Pillow's RGBX memory, EXIF rotations as views) and
writes the float32 or uint8 canvas straight into the caller's array, with the same float32
operations in the same order as the numpy formulation the tests keep as their reference. Without
the compiled kernel the box functions still work and the pixel functions raise ``RuntimeError``
(:func:`native_kernel_error` says why); the transformer checks it at start-up.

Degenerate sizes (a choice, documented here; Darknet itself divides by zero or reads out of
bounds): ``new_w``/``new_h`` are clamped to at least 1, and a 1-sample output axis uses scale 0.
For the horizontal axis that changes nothing (Darknet's "last column" rule already copies source
column ``src_w-1``); for the vertical axis it means a 1-row output is source row 0 (Darknet would
compute ``0 * inf = NaN`` and index with ``(int)NaN``, undefined behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

try:
    from transformer import _letterbox
except ImportError as _e:  # not compiled (no C compiler at install time): see native_kernel_error()
    _letterbox = None
    _KERNEL_ERROR: str | None = (
        f"the compiled letterbox kernel transformer._letterbox is not available ({_e}); reinstall the "
        "package with a C compiler present (pip install -e . or pip install .)"
    )
else:
    _KERNEL_ERROR = None

__all__ = [
    "Letterbox",
    "PREPROCESS_MODES",
    "letterbox_params",
    "resize_params",
    "preprocess_params",
    "letterbox",
    "letterbox_uint8",
    "preprocess",
    "preprocess_uint8",
    "native_kernel_error",
    "unletterbox_boxes",
    "letterbox_boxes",
    "clip_boxes_cxcywh",
]

_F32 = np.float32


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one Darknet letterbox (all ints, ``(width, height)`` order).

    Attributes:
        src_w, src_h: size of the original image.
        net_w, net_h: network input size (the canvas).
        new_w, new_h: size of the resized image inside the canvas (>= 1).
        dx, dy: integer paste offset of the resized image in the canvas (``(net - new) // 2``).
    """

    src_w: int
    src_h: int
    net_w: int
    net_h: int
    new_w: int
    new_h: int
    dx: int
    dy: int

    @property
    def box_offset(self) -> tuple[float, float]:
        """Offset Darknet's ``correct_yolo_boxes`` subtracts: ``(net - new) / 2.`` in *floating point*.

        Equals ``(dx, dy)`` when ``net - new`` is even; half a pixel more when it is odd (a Darknet
        quirk: the image is pasted at the floored offset but boxes are corrected with the exact half).
        """
        return ((self.net_w - self.new_w) / 2.0, (self.net_h - self.new_h) / 2.0)


def _check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer")
    return int(value)


def _check_sizes(src_w: int, src_h: int, net_w: int, net_h: int) -> tuple[int, int, int, int]:
    return (_check_size("src_w", src_w), _check_size("src_h", src_h), _check_size("net_w", net_w),
            _check_size("net_h", net_h))


def letterbox_params(src_w: int, src_h: int, net_w: int, net_h: int) -> Letterbox:
    """Darknet's letterbox geometry for a ``src_w x src_h`` image on a ``net_w x net_h`` canvas.

    ``if (float)net_w/src_w < (float)net_h/src_h: new_w = net_w, new_h = src_h*net_w // src_w``
    ``else: new_h = net_h, new_w = src_w*net_h // src_h``; offsets ``(net - new) // 2``.
    ``new_w``/``new_h`` are clamped to ``>= 1`` (e.g. a 3000x1 image on 416x416 gives 416x1).

    Raises:
        ValueError: a size is not a positive integer.
    """
    src_w, src_h, net_w, net_h = _check_sizes(src_w, src_h, net_w, net_h)
    if _F32(net_w) / _F32(src_w) < _F32(net_h) / _F32(src_h):
        new_w, new_h = net_w, (src_h * net_w) // src_w
    else:
        new_w, new_h = (src_w * net_h) // src_h, net_h
    new_w = min(max(new_w, 1), net_w)
    new_h = min(max(new_h, 1), net_h)
    return Letterbox(
        src_w=src_w,
        src_h=src_h,
        net_w=net_w,
        net_h=net_h,
        new_w=new_w,
        new_h=new_h,
        dx=(net_w - new_w) // 2,
        dy=(net_h - new_h) // 2,
    )


def resize_params(src_w: int, src_h: int, net_w: int, net_h: int) -> Letterbox:
    """Geometry of Darknet's plain ``resize_image(im, net_w, net_h)`` (no letterbox).

    The whole canvas is the stretched image: ``new_w = net_w``, ``new_h = net_h``, ``dx = dy = 0``.
    With this geometry :func:`unletterbox_boxes` is Darknet's ``correct_yolo_boxes`` with
    ``letter = 0`` (AlexeyAB ``detector test`` without ``-letter_box``): ``box_offset`` is
    ``(0, 0)`` and each axis scales by ``src / net``.

    Raises:
        ValueError: a size is not a positive integer.
    """
    src_w, src_h, net_w, net_h = _check_sizes(src_w, src_h, net_w, net_h)
    return Letterbox(src_w=src_w, src_h=src_h, net_w=net_w, net_h=net_h, new_w=net_w, new_h=net_h, dx=0, dy=0)


#: Preprocessing modes: ``"letterbox"`` (pjreddie ``letterbox_image``; AlexeyAB with
#: ``letter_box=1``) and ``"resize"`` (AlexeyAB ``resize_image`` to the network size).
PREPROCESS_MODES = ("letterbox", "resize")
_PARAMS = {"letterbox": letterbox_params, "resize": resize_params}


def preprocess_params(src_w: int, src_h: int, net_w: int, net_h: int, mode: str = "letterbox") -> Letterbox:
    """:func:`letterbox_params` or :func:`resize_params`, by ``mode`` (one of :data:`PREPROCESS_MODES`).

    Raises:
        ValueError: an unknown mode or a size that is not a positive integer.
    """
    try:
        params = _PARAMS[mode]
    except (KeyError, TypeError):
        raise ValueError(f"mode must be one of {', '.join(PREPROCESS_MODES)}") from None
    return params(src_w, src_h, net_w, net_h)


def native_kernel_error() -> str | None:
    """Why the compiled resize kernel cannot be used, or ``None`` when it is loaded."""
    return _KERNEL_ERROR


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("rgb must be a uint8 array of shape (H, W, 3)")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError("rgb must have at least one pixel")
    return rgb


def preprocess(
    rgb: np.ndarray,
    net_w: int,
    net_h: int,
    mode: str = "letterbox",
    out: np.ndarray | None = None,
    dtype=np.float32,
) -> tuple[np.ndarray, Letterbox]:
    """Darknet's network input for ``rgb`` (letterbox or plain resize), written into ``out``.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB image with any strides (e.g. a read-only view of decoded
            pixels; Darknet's float image is ``rgb / 255``).
        net_w, net_h: network input width and height.
        mode: ``"letterbox"`` (pjreddie ``letterbox_image``) or ``"resize"`` (``resize_image`` to
            the whole canvas, no padding); see :data:`PREPROCESS_MODES` and :func:`preprocess_params`.
        out: optional writable C-contiguous ``[3, net_h, net_w]`` uint8 or float32 array to write
            into (e.g. one image of a preallocated ``[N, 3, H, W]`` batch); its dtype wins over
            ``dtype``. A new array of ``dtype`` is allocated when ``None``.
        dtype: ``np.float32`` (``x`` in [0, 1], padding 0.5, as :func:`letterbox`) or ``np.uint8``
            (the wire: ``rint(x * 255)``, half to even, padding 128), used when ``out`` is ``None``.

    Returns:
        ``(x, lb)``: ``x`` is ``out`` (or the new array), ``lb`` the geometry for
        :func:`unletterbox_boxes`.

    Raises:
        ValueError: a bad image, size, mode, dtype or ``out`` array.
        RuntimeError: the compiled kernel is not available (:func:`native_kernel_error`).
    """
    rgb = _check_rgb(rgb)
    lb = preprocess_params(rgb.shape[1], rgb.shape[0], net_w, net_h, mode)
    shape = (3, lb.net_h, lb.net_w)
    if out is None:
        if np.dtype(dtype) not in (np.dtype(np.uint8), np.dtype(np.float32)):
            raise ValueError("dtype must be uint8 or float32")
        out = np.empty(shape, dtype)
    elif (
        not isinstance(out, np.ndarray)
        or out.dtype not in (np.dtype(np.uint8), np.dtype(np.float32))
        or out.shape != shape
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise ValueError(f"out must be a writable C-contiguous uint8 or float32 array of shape {shape}")
    if _letterbox is None:
        raise RuntimeError(_KERNEL_ERROR)
    _letterbox.resize_into(rgb, out, lb.dx, lb.dy, lb.new_w, lb.new_h)
    return out, lb


def preprocess_uint8(
    rgb: np.ndarray, net_w: int, net_h: int, mode: str = "letterbox", out: np.ndarray | None = None
) -> tuple[np.ndarray, Letterbox]:
    """:func:`preprocess` quantised for the wire (uint8 ``[3, net_h, net_w]``), like :func:`letterbox_uint8`.

    ``mode="resize"`` is Darknet's ``resize_image(im, net_w, net_h)`` (geometry from
    :func:`resize_params`); ``out``, when given, must be uint8.
    """
    if out is not None and (not isinstance(out, np.ndarray) or out.dtype != np.uint8):
        raise ValueError("out must be a uint8 array")
    return preprocess(rgb, net_w, net_h, mode, out, np.uint8)


def letterbox(rgb: np.ndarray, net_w: int, net_h: int) -> tuple[np.ndarray, Letterbox]:
    """Darknet ``letterbox_image(load_image_color(...)/255, net_w, net_h)``, bit-exact.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB image (as decoded; Darknet's float image is ``rgb / 255``).
        net_w, net_h: network input width and height.

    Returns:
        ``(x, lb)``: ``x`` is a new C-contiguous float32 ``[3, net_h, net_w]`` (RGB planes, values
        in [0, 1], padding 0.5); ``lb`` the :class:`Letterbox` geometry.

    Raises:
        ValueError: ``rgb`` is not a non-empty ``(H, W, 3)`` uint8 array, or a size is not positive.
    """
    return preprocess(rgb, net_w, net_h, "letterbox", None, np.float32)


def letterbox_uint8(rgb: np.ndarray, net_w: int, net_h: int) -> tuple[np.ndarray, Letterbox]:
    """The :func:`letterbox` pixels quantised for the wire: ``np.rint(x * 255)`` as uint8.

    Returns a new C-contiguous uint8 ``[3, net_h, net_w]`` and the :class:`Letterbox`. The padding
    is ``rint(0.5 * 255) = rint(127.5) = 128`` (round half to even). Dividing by 255 gives back the
    float letterbox within 0.5/255 (plus float32 rounding of ``x * 255``).
    """
    return preprocess(rgb, net_w, net_h, "letterbox", None, np.uint8)


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    arr = np.array(boxes, dtype=np.float64, copy=True)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError("boxes must have shape (K, 4)")
    return arr


def unletterbox_boxes(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Network-input boxes to original-image boxes: Darknet ``correct_yolo_boxes`` (relative=0).

    Args:
        boxes: ``[K, 4]`` ``(cx, cy, w, h)`` in network-input pixels (``net_w x net_h`` canvas).
        lb: the geometry returned by :func:`letterbox_params` / :func:`letterbox`.

    Returns:
        A new float64 ``[K, 4]`` array ``(cx, cy, w, h)`` in original-image pixels (not clipped):
        ``cx = (cx_net - (net_w - new_w)/2) * src_w / new_w``, ``w = w_net * src_w / new_w``
        (likewise for y/h). Note the floating ``/2.`` (see :attr:`Letterbox.box_offset`).
        The input is never modified.
    """
    out = _as_boxes(boxes)
    ox, oy = lb.box_offset
    # Darknet order: x_rel = x/net_w; x = (x_rel - ox/net_w) / (new_w/net_w); x *= src_w.
    out[:, 0] = (out[:, 0] / lb.net_w - ox / lb.net_w) / (lb.new_w / lb.net_w) * lb.src_w
    out[:, 1] = (out[:, 1] / lb.net_h - oy / lb.net_h) / (lb.new_h / lb.net_h) * lb.src_h
    out[:, 2] = out[:, 2] / lb.net_w * (lb.net_w / lb.new_w) * lb.src_w
    out[:, 3] = out[:, 3] / lb.net_h * (lb.net_h / lb.new_h) * lb.src_h
    return out


def letterbox_boxes(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Inverse of :func:`unletterbox_boxes`: original-image boxes to network-input pixels.

    ``boxes`` and the result are ``[K, 4]`` ``(cx, cy, w, h)`` pixels; returns a new float64 array.
    """
    out = _as_boxes(boxes)
    ox, oy = lb.box_offset
    out[:, 0] = out[:, 0] * lb.new_w / lb.src_w + ox
    out[:, 1] = out[:, 1] * lb.new_h / lb.src_h + oy
    out[:, 2] = out[:, 2] * lb.new_w / lb.src_w
    out[:, 3] = out[:, 3] * lb.new_h / lb.src_h
    return out


def clip_boxes_cxcywh(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip ``[K, 4]`` ``(cx, cy, w, h)`` boxes to the image ``[0, width] x [0, height]``.

    The corner extent ``(cx -/+ w/2, cy -/+ h/2)`` is clipped and converted back to centre/size;
    a box entirely outside the image collapses to zero width or height on the border. Returns a new
    float64 array.
    """
    arr = _as_boxes(boxes)
    x0 = np.clip(arr[:, 0] - arr[:, 2] / 2.0, 0.0, width)
    x1 = np.clip(arr[:, 0] + arr[:, 2] / 2.0, 0.0, width)
    y0 = np.clip(arr[:, 1] - arr[:, 3] / 2.0, 0.0, height)
    y1 = np.clip(arr[:, 1] + arr[:, 3] / 2.0, 0.0, height)
    arr[:, 0] = (x0 + x1) / 2.0
    arr[:, 1] = (y0 + y1) / 2.0
    arr[:, 2] = x1 - x0
    arr[:, 3] = y1 - y0
    return arr
