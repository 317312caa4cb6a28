"""Darknet-exact letterbox and box mapping (pure numpy).

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
* the canvas is filled with 0.5 and the resized image pasted at ``((net-new)//2)``.

The ``"resize"`` mode (:func:`resize_params`, ``preprocess_uint8(..., mode="resize")``) is AlexeyAB's
``detector test`` without ``-letter_box``: the same ``resize_image`` straight to ``net_w x net_h``
(AlexeyAB returns a copy when the size already matches, which the bilinear reproduces exactly:
scale 1, weights 1 and 0), boxes corrected by ``correct_yolo_boxes(..., letter=0)``.

Degenerate sizes (a choice, documented here; Darknet itself divides by zero or reads out of
bounds): ``new_w``/``new_h`` are clamped to at least 1, and a 1-sample output axis uses scale 0.
For the horizontal axis that changes nothing (Darknet's "last column" rule already copies source
column ``src_w-1``); for the vertical axis it means a 1-row output is source row 0 (Darknet would
compute ``0 * inf = NaN`` and index with ``(int)NaN``, undefined behaviour).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Letterbox",
    "PREPROCESS_MODES",
    "letterbox_params",
    "resize_params",
    "preprocess_params",
    "letterbox",
    "letterbox_uint8",
    "preprocess_uint8",
    "unletterbox_boxes",
    "letterbox_boxes",
    "clip_boxes_cxcywh",
]

_F32 = np.float32
#: Canvas value of the padding, as in Darknet (``fill_image(boxed, .5)``).
PAD_VALUE = 0.5
#: The padding grey on the uint8 wire: ``np.rint(0.5 * 255) == 128`` (127.5 rounds half to even).
PAD_VALUE_UINT8 = 128


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


def letterbox_params(src_w: int, src_h: int, net_w: int, net_h: int) -> Letterbox:
    """Darknet's letterbox geometry for a ``src_w x src_h`` image on a ``net_w x net_h`` canvas.

    ``if (float)net_w/src_w < (float)net_h/src_h: new_w = net_w, new_h = src_h*net_w // src_w``
    ``else: new_h = net_h, new_w = src_w*net_h // src_h``; offsets ``(net - new) // 2``.
    ``new_w``/``new_h`` are clamped to ``>= 1`` (e.g. a 3000x1 image on 416x416 gives 416x1).

    Raises:
        ValueError: a size is not a positive integer.
    """
    src_w = _check_size("src_w", src_w)
    src_h = _check_size("src_h", src_h)
    net_w = _check_size("net_w", net_w)
    net_h = _check_size("net_h", net_h)
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
    src_w = _check_size("src_w", src_w)
    src_h = _check_size("src_h", src_h)
    net_w = _check_size("net_w", net_w)
    net_h = _check_size("net_h", net_h)
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


def _axis_taps(n_src: int, n_dst: int, *, last_copies: bool):
    """Gather indices and float32 weights of one pass of Darknet's ``resize_image``.

    Output sample ``i`` is ``w0[i] * src[i0[i]] + w1[i] * src[i1[i]]`` evaluated in float32 in
    exactly Darknet's operation order (``w1 == 0`` reproduces the branches that skip the second
    term, since ``a + 0*b == a`` exactly for finite non-negative values).
    """
    scale = _F32(0.0) if n_dst == 1 else _F32(n_src - 1) / _F32(n_dst - 1)
    pos = np.arange(n_dst, dtype=_F32) * scale  # float32 c*scale, as Darknet
    i0 = pos.astype(np.intp)  # (int) truncation; pos >= 0
    frac = pos - i0.astype(_F32)  # float32 sx - ix
    np.minimum(i0, n_src - 1, out=i0)  # never reached with sane sizes; keeps indices valid
    i1 = np.minimum(i0 + 1, n_src - 1)
    w0 = _F32(1.0) - frac
    w1 = frac.copy()
    if last_copies:
        # Horizontal pass: `if (c == w-1 || im.w == 1) val = src[im.w-1]`.
        sel = slice(None) if n_src == 1 else slice(n_dst - 1, None)
        i0[sel] = n_src - 1
        i1[sel] = n_src - 1
        w0[sel] = 1.0
        w1[sel] = 0.0
    else:
        # Vertical pass: `out = (1-dy)*part[iy]; if (r == h-1 || im.h == 1) continue; out += ...`.
        sel = slice(None) if n_src == 1 else slice(n_dst - 1, None)
        i1[sel] = i0[sel]
        w1[sel] = 0.0
    return i0, i1, w0, w1


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("rgb must be a uint8 array of shape (H, W, 3)")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError("rgb must have at least one pixel")
    return rgb


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
    rgb = _check_rgb(rgb)
    lb = letterbox_params(rgb.shape[1], rgb.shape[0], net_w, net_h)
    out = np.empty((3, lb.net_h, lb.net_w), dtype=_F32)
    _letterbox_into(rgb, lb, out)
    return out, lb


def letterbox_uint8(rgb: np.ndarray, net_w: int, net_h: int) -> tuple[np.ndarray, Letterbox]:
    """The :func:`letterbox` pixels quantised for the wire: ``np.rint(x * 255)`` as uint8.

    Returns a new C-contiguous uint8 ``[3, net_h, net_w]`` and the :class:`Letterbox`. The padding
    is ``rint(0.5 * 255) = rint(127.5) = 128`` (round half to even). Dividing by 255 gives back the
    float letterbox within 0.5/255 (plus float32 rounding of ``x * 255``).
    """
    rgb = _check_rgb(rgb)
    lb = letterbox_params(rgb.shape[1], rgb.shape[0], net_w, net_h)
    x = _WORKSPACE.get("canvas", (3, lb.net_h, lb.net_w), _F32)
    _letterbox_into(rgb, lb, x)
    x *= _F32(255.0)
    np.rint(x, out=x)
    return x.astype(np.uint8), lb


def preprocess_uint8(
    rgb: np.ndarray, net_w: int, net_h: int, mode: str = "letterbox", out: np.ndarray | None = None
) -> tuple[np.ndarray, Letterbox]:
    """Darknet's network input for ``rgb``, quantised for the wire like :func:`letterbox_uint8`.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB image (any strides).
        net_w, net_h: network input width and height.
        mode: ``"letterbox"`` (:func:`letterbox_uint8`, bit for bit) or ``"resize"`` (Darknet's
            ``resize_image(im, net_w, net_h)``: the same bilinear stretched to the whole canvas,
            no padding; geometry from :func:`resize_params`).
        out: optional C-contiguous uint8 ``[3, net_h, net_w]`` array to write into (e.g. one image
            of a preallocated ``[N, 3, H, W]`` batch); a new array is allocated when ``None``.

    Returns:
        ``(x, lb)``: ``x`` is ``out`` (or the new array), ``lb`` the geometry for
        :func:`unletterbox_boxes`.

    Raises:
        ValueError: a bad image, size, mode or ``out`` array.
    """
    rgb = _check_rgb(rgb)
    lb = preprocess_params(rgb.shape[1], rgb.shape[0], net_w, net_h, mode)
    if out is None:
        out = np.empty((3, lb.net_h, lb.net_w), np.uint8)
    elif (
        not isinstance(out, np.ndarray)
        or out.dtype != np.uint8
        or out.shape != (3, lb.net_h, lb.net_w)
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise ValueError(f"out must be a writable C-contiguous uint8 array of shape (3, {lb.net_h}, {lb.net_w})")
    x = _WORKSPACE.get("canvas", (3, lb.net_h, lb.net_w), _F32)
    _letterbox_into(rgb, lb, x)
    x *= _F32(255.0)
    np.rint(x, out=x)
    out[...] = x
    return out, lb


class _Workspace(threading.local):
    """Per-thread scratch buffers reused across calls.

    Fresh multi-MB numpy temporaries are returned to the OS by malloc and page-fault again on the
    next call; on a small VM those faults cost more than the arithmetic (about 5 ms instead of
    about 2.5 ms for a 768x576 letterbox). Buffers are bounded by the network size except the
    row-selection buffer; anything over ``_WORKSPACE_MAX_BYTES`` is allocated per call instead.
    """

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        buf = self.buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            if nbytes > _WORKSPACE_MAX_BYTES:
                return np.empty(shape, dtype)
            buf = np.empty(nbytes, np.uint8)
            self.buffers[name] = buf
        return buf[:nbytes].view(dtype).reshape(shape)


_WORKSPACE_MAX_BYTES = 16 << 20
_WORKSPACE = _Workspace()


def _letterbox_into(rgb: np.ndarray, lb: Letterbox, out: np.ndarray) -> None:
    """Fill ``out`` (float32 ``[3, net_h, net_w]``) with Darknet's letterbox of ``rgb / 255``."""
    out[:, : lb.dy, :] = PAD_VALUE
    out[:, lb.dy + lb.new_h :, :] = PAD_VALUE
    out[:, lb.dy : lb.dy + lb.new_h, : lb.dx] = PAD_VALUE
    out[:, lb.dy : lb.dy + lb.new_h, lb.dx + lb.new_w :] = PAD_VALUE
    _resize_into(rgb, out[:, lb.dy : lb.dy + lb.new_h, lb.dx : lb.dx + lb.new_w])


def _resize_into(rgb: np.ndarray, dst: np.ndarray) -> None:
    """Darknet ``resize_image`` of ``rgb / 255`` (HWC uint8) written into ``dst`` (``[3, h, w]`` f32).

    Each pass is two gathers, two float32 multiplies and one add, in Darknet's operation order, so
    the result is bit-identical to the C loops. Only the source rows the vertical pass reads go
    through the horizontal pass (rows are independent), which matters for large downscales.
    """
    src_h, src_w = rgb.shape[:2]
    new_h, new_w = dst.shape[1:]
    ws = _WORKSPACE
    ix0, ix1, wx0, wx1 = _axis_taps(src_w, new_w, last_copies=True)
    iy0, iy1, wy0, wy1 = _axis_taps(src_h, new_h, last_copies=False)

    rows = np.unique(np.concatenate([iy0, iy1]))
    n_rows = rows.size
    if n_rows == src_h:
        sel, r0, r1 = rgb, iy0, iy1
    else:
        r0 = np.searchsorted(rows, iy0)
        r1 = np.searchsorted(rows, iy1)
        sel = np.take(rgb, rows, axis=0, out=ws.get("rows", (n_rows, src_w, 3), np.uint8))

    # Horizontal: part = (1-dx)*src[ix] + dx*src[ix+1], with src = v/255 in float32 (Darknet's
    # (float)v/255. rounds identically for v in 0..255).
    cols = np.take(sel, ix0, axis=1, out=ws.get("cols", (n_rows, new_w, 3), np.uint8))
    part = ws.get("part", (3, n_rows, new_w), _F32)
    np.divide(cols.transpose(2, 0, 1), _F32(255.0), out=part, dtype=_F32)
    part *= wx0
    np.take(sel, ix1, axis=1, out=cols)
    right = ws.get("right", (3, n_rows, new_w), _F32)
    np.divide(cols.transpose(2, 0, 1), _F32(255.0), out=right, dtype=_F32)
    right *= wx1
    part += right

    # Vertical: out = (1-dy)*part[iy]; out += dy*part[iy+1] (weight 0 on the last row).
    rowbuf = ws.get("vert", (3, new_h, new_w), _F32)
    np.take(part, r0, axis=1, out=rowbuf)
    np.multiply(rowbuf, wy0[:, None], out=dst)
    np.take(part, r1, axis=1, out=rowbuf)
    rowbuf *= wy1[:, None]
    dst += rowbuf


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
