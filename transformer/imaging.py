"""Decode uploaded image bytes, in memory, to an RGB uint8 array close to Darknet's stb_image decode.

Policy (see the reliability checklist, rows 7-17):

* **Allow-list.** Only JPEG (and MPO, a JPEG with extra frames), PNG (and APNG), WebP, GIF and BMP
  are decoded. The format is sniffed from magic bytes first and Pillow is then restricted to that
  one plugin (``Image.open(fp, formats=[...])``), so no other Pillow plugin ever parses request
  bytes. Recognisable but refused formats (TIFF, PSD, PDF, EPS/PS, FITS, ICO, JPEG 2000, HEIF/AVIF,
  ...) raise :class:`UnsupportedMediaType` (415); empty input, text (SVG included: it is not a raster
  image), unknown bytes and corrupt or truncated images raise :class:`BadRequest` (400).
* **Pixel budget before pixels.** ``width * height`` from the header is checked right after
  ``open()``, before any pixel is decoded: over ``max_pixels`` raises :class:`PayloadTooLarge`
  (413). Pillow's own decompression-bomb warning and error (raised inside ``open()`` above
  ``Image.MAX_IMAGE_PIXELS``, 89.5 MP by default, which is left unchanged) also become 413, so the
  effective limit is ``min(max_pixels, Image.MAX_IMAGE_PIXELS)``.
* **First frame only.** Animated GIF/WebP/APNG and MPO decode frame 0; ``seek()`` is never called.
* **Never lenient on truncation.** ``ImageFile.LOAD_TRUNCATED_IMAGES`` is not touched; ``load()``
  errors become 400.
* **Pixels.** EXIF orientation 2-8 is applied (same transposes as ``ImageOps.exif_transpose``;
  Darknet/stb ignores EXIF, but boxes must be in display coordinates). Alpha (RGBA, LA, PA, P or
  L/RGB with a transparency key, premultiplied modes) is composited onto grey 128, the letterbox
  pad, rather than dropped (a bare ``convert("RGB")`` would expose colour hidden under alpha 0).
  16-bit greyscale (``I;16*``, ``I``) keeps the high byte (``>> 8``) instead of clipping; 16-bit
  RGB(A) PNGs are already reduced to their high byte by Pillow. L, 1, P, CMYK (Pillow reads JPEG
  CMYK as Adobe-inverted), YCbCr are converted with Pillow's ``convert("RGB")``.
* **No copies of the pixels.** :func:`decode_image_view` returns RGB images as a read-only view of
  Pillow's own decoded memory (4 bytes per pixel, RGBX), obtained zero-copy through Pillow's Arrow
  export, with the EXIF orientation applied as strides; the letterbox reads it directly. Images
  Pillow cannot export that way (pixel memory over one 16 MB block) and other modes are copied.
  :func:`decode_image` is the same as one C-contiguous array.
* **Errors** carry fixed client-safe messages (never Pillow's text, which can embed object
  addresses) and are chained with ``raise ... from``.
"""

from __future__ import annotations

import ctypes
import io
import struct
import threading
import warnings

import numpy as np
from PIL import Image

from yolo_contract.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ["ALLOWED_FORMATS", "DEFAULT_MAX_PIXELS", "decode_image", "decode_image_view", "sniff_format"]

#: Sniffed format -> Pillow plugin ids allowed to open it.
ALLOWED_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": ("JPEG",),
    "PNG": ("PNG",),
    "WEBP": ("WEBP",),
    "GIF": ("GIF",),
    "BMP": ("BMP",),
}
#: ``Image.format`` values accepted after opening (the JPEG plugin reports MPO files as "MPO").
_OPENED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP"})
#: Sniffed "formats" that are not raster images at all: answered 400, like any other non-image.
_NOT_IMAGES = frozenset({"SVG"})

DEFAULT_MAX_PIXELS = 40_000_000
#: Grey behind transparent pixels: the letterbox pad (0.5 -> rint(127.5) = 128).
ALPHA_BACKGROUND = (128, 128, 128)

_MSG_EMPTY = "empty image data"
_MSG_NOT_IMAGE = "data is not a supported image (JPEG, PNG, WebP, GIF or BMP)"
_MSG_CORRUPT = "image data is corrupt or truncated"
_MSG_BOMB = "image dimensions exceed the decompression-bomb limit"
_MSG_TOO_BIG_TO_DECODE = "image is too large to decode"

# Prefix magic -> format name. Order matters only where prefixes overlap (none do).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    # Recognised but refused (415).
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"%!PS", "EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),  # DOS EPS binary header
    (b"SIMPLE  =", "FITS"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x02\x00", "CUR"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG2000"),
    (b"\xff\x4f\xff\x51", "JPEG2000"),  # raw codestream
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEGXL"),
    (b"\xff\x0a", "JPEGXL"),
    (b"DanM", "MSP"),
    (b"LinS", "MSP"),
    (b"DDS ", "DDS"),
    (b"icns", "ICNS"),
    (b"qoif", "QOI"),
    (b"/* XPM */", "XPM"),
    (b"\x01\xda", "SGI"),
    (b"\x59\xa6\x6a\x95", "SUN"),
    (b"\xd7\xcd\xc6\x9a", "WMF"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "OLE"),  # FlashPix / MIC (and Office documents)
    (b"\xb1\x68\xde\x3a", "DCX"),
    (b"BLP1", "BLP"),
    (b"BLP2", "BLP"),
    (b"FTEX", "FTEX"),
    (b"\x80\xe8\x00\x00", "PIXAR"),
    (b"\x89HDF\r\n\x1a\n", "HDF5"),
    (b"GRIB", "GRIB"),
    (b"BUFR", "BUFR"),
)

# Serialises our two short warnings.catch_warnings() sections (Image.open() with the
# decompression-bomb warning escalated and other warnings silenced; getexif() silenced):
# catch_warnings swaps the process-wide filter list, which is not thread-safe. Both only parse
# headers (microseconds to a millisecond); pixel decoding happens outside the lock.
_OPEN_LOCK = threading.Lock()


def sniff_format(data: bytes) -> str | None:
    """Identify an image/document format from its leading magic bytes.

    Returns:
        ``"JPEG"``, ``"PNG"``, ``"WEBP"``, ``"GIF"`` or ``"BMP"`` for the allow-listed formats; another
        upper-case name (``"TIFF"``, ``"PSD"``, ``"PDF"``, ``"EPS"``, ``"FITS"``, ``"ICO"``, ``"SVG"``,
        ...) for recognised formats that are refused; ``None`` when nothing is recognised.
        Only a prefix is examined, so a polyglot (e.g. a JPEG with a ZIP appended) is its prefix.
    """
    head = bytes(data[:128])
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "AVIF" if brand in (b"avif", b"avis") else "HEIF"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"1234567" and head[2:3] in b" \t\r\n":
        return "PPM"
    if len(head) >= 2 and head[0] == 0x0A and head[1] in (0, 2, 3, 5) and len(data) >= 128:
        return "PCX"
    if _is_spider(head):
        return "SPIDER"
    if _looks_like_svg(data):
        return "SVG"
    return None


def _is_spider(head: bytes) -> bool:
    """Pillow's SPIDER header test (92 bytes of float32, either byte order)."""
    if len(head) < 92:
        return False
    from PIL import SpiderImagePlugin  # header check only; never used to decode

    for fmt in (">23f", "<23f"):
        try:
            if SpiderImagePlugin.isSpiderHeader(struct.unpack(fmt, head[:92])):
                return True
        except (ValueError, OverflowError):  # NaN/inf fields
            continue
    return False


def _looks_like_svg(data: bytes) -> bool:
    text = bytes(data[:1024]).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith(b"<svg") or (text.startswith((b"<?xml", b"<!doctype svg")) and b"<svg" in text)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to an RGB ``uint8`` array of shape ``(height, width, 3)``.

    Args:
        data: the uploaded bytes (``bytes``, ``bytearray`` or ``memoryview``); never written to disk.
        max_pixels: largest accepted ``width * height`` (checked from the header, before decoding).

    Returns:
        A C-contiguous uint8 ``(H, W, 3)`` RGB array in display orientation (EXIF applied), owned
        by nobody else. It may be read-only: copy before writing.

    Raises:
        BadRequest: empty input, not an image (text, SVG, unknown bytes), or a corrupt/truncated image.
        UnsupportedMediaType: a recognised format that is not JPEG, PNG, WebP, GIF or BMP.
        PayloadTooLarge: more than ``max_pixels`` pixels, or over Pillow's decompression-bomb limit.
    """
    return np.ascontiguousarray(decode_image_view(data, max_pixels=max_pixels))


def decode_image_view(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """:func:`decode_image` without its final copy: a read-only ``(H, W, 3)`` uint8 view, any strides.

    For RGB images (JPEG, most PNG/WebP/BMP) it is a view of Pillow's decoded RGBX memory (column
    stride 4, negative strides or swapped axes for EXIF orientations), kept alive by the array.
    Same arguments, validation and errors as :func:`decode_image`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes-like")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError("max_pixels must be a positive integer")
    if len(data) == 0:
        raise BadRequest(_MSG_EMPTY)
    fmt = sniff_format(data)
    if fmt is None or fmt in _NOT_IMAGES:
        raise BadRequest(_MSG_NOT_IMAGE)
    if fmt not in ALLOWED_FORMATS:
        raise UnsupportedMediaType(f"unsupported image format {fmt}; send JPEG, PNG, WebP, GIF or BMP")

    im = _open(data, ALLOWED_FORMATS[fmt])
    try:
        width, height = im.size
        if width < 1 or height < 1:
            raise BadRequest(_MSG_CORRUPT)
        if width * height > max_pixels:
            raise PayloadTooLarge(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels")
        try:
            im.load()
            orientation = _exif_orientation(im)
            rgb = _to_rgb(im)
        except Image.DecompressionBombError as e:  # e.g. a frame larger than the declared canvas
            raise PayloadTooLarge(_MSG_BOMB) from e
        except MemoryError as e:
            raise PayloadTooLarge(_MSG_TOO_BIG_TO_DECODE) from e
        except Exception as e:  # any Pillow decoder error: OSError, ValueError, SyntaxError, ...
            raise BadRequest(_MSG_CORRUPT) from e
    finally:
        im.close()
    return _orient(rgb, orientation)


def _open(data: bytes, formats: tuple[str, ...]) -> Image.Image:
    """``Image.open`` restricted to ``formats``, with bomb warnings/errors turned into 413."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            # Pillow's other warnings here are about client data (corrupt EXIF, ...): silence them.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # checked first
            im = Image.open(io.BytesIO(data), formats=list(formats))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PayloadTooLarge(_MSG_BOMB) from e
    except MemoryError as e:
        raise PayloadTooLarge(_MSG_TOO_BIG_TO_DECODE) from e
    except Exception as e:  # UnidentifiedImageError, OSError, ValueError, ...
        raise BadRequest(_MSG_CORRUPT) from e
    if im.format not in _OPENED_FORMATS:  # defensive: the plugin restriction already ensures it
        im.close()
        raise UnsupportedMediaType("unsupported image format; send JPEG, PNG, WebP, GIF or BMP")
    return im


def _exif_orientation(im: Image.Image) -> int:
    """EXIF orientation 1-8 (1 when absent or unreadable: a bad EXIF block does not spoil pixels)."""
    try:
        # Pillow warns (UserWarning) about corrupt EXIF blocks; client data must not spam the log.
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = im.getexif().get(0x0112, 1)
    except Exception:  # malformed EXIF: ignore it, as stb_image would
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation to an ``(H, W, 3)`` array (the transposes of ``exif_transpose``)."""
    if orientation == 2:  # FLIP_LEFT_RIGHT
        rgb = rgb[:, ::-1]
    elif orientation == 3:  # ROTATE_180
        rgb = rgb[::-1, ::-1]
    elif orientation == 4:  # FLIP_TOP_BOTTOM
        rgb = rgb[::-1]
    elif orientation == 5:  # TRANSPOSE
        rgb = rgb.transpose(1, 0, 2)
    elif orientation == 6:  # ROTATE_270 (90 degrees clockwise)
        rgb = rgb[::-1].transpose(1, 0, 2)
    elif orientation == 7:  # TRANSVERSE
        rgb = rgb[::-1, ::-1].transpose(1, 0, 2)
    elif orientation == 8:  # ROTATE_90 (90 degrees counter-clockwise)
        rgb = rgb[:, ::-1].transpose(1, 0, 2)
    # A view, no copy: a multi-MB copy costs ~1.5 ms of page faults per 768x576 image on a small VM.
    return rgb


_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Loaded Pillow image (any mode) -> ``(H, W, 3)`` uint8 RGB."""
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(im)
        if grey.dtype.kind == "u" and grey.dtype.itemsize == 2:  # I;16, I;16B, ...: keep the high byte
            grey8 = (grey >> 8).astype(np.uint8)
        else:  # "I" (int32): same scaling, clamped to 0..255
            grey8 = np.clip(grey >> 8, 0, 255).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2)
    if mode in _ALPHA_MODES or im.info.get("transparency") is not None:
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
        # paste with the image's own alpha as mask: out = (src*a + 128*(255-a)) / 255, rounded.
        canvas.paste(rgba, (0, 0), rgba)
        return np.asarray(canvas)
    if mode == "RGB":
        rgbx = _rgbx_view(im)
        return np.asarray(im) if rgbx is None else rgbx[:, :, :3]
    return np.asarray(im.convert("RGB"))


# --- zero-copy access to Pillow's RGB memory (Arrow C data interface) ----------------------------
# Pillow exports multi-band images as a fixed-size list of 4 uint8 per pixel ("+w:4" over "C"),
# the layout of its own RGBX storage, when the rows are one contiguous block. The capsules keep
# Pillow's memory alive (their destructors call the Arrow release callback).


class _ArrowSchema(ctypes.Structure):
    pass


_ArrowSchema._fields_ = [
    ("format", ctypes.c_char_p),
    ("name", ctypes.c_char_p),
    ("metadata", ctypes.c_char_p),
    ("flags", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))),
    ("dictionary", ctypes.POINTER(_ArrowSchema)),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]


class _ArrowArray(ctypes.Structure):
    pass


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64),
    ("null_count", ctypes.c_int64),
    ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    ("dictionary", ctypes.POINTER(_ArrowArray)),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


class _PinnedPixels:
    """``__array_interface__`` over exported memory; numpy keeps this object (and the capsules)."""

    __slots__ = ("__array_interface__", "_capsules")

    def __init__(self, address: int, shape: tuple[int, int, int], capsules: tuple) -> None:
        self.__array_interface__ = {"version": 3, "shape": shape, "typestr": "|u1", "data": (address, True)}
        self._capsules = capsules


def _rgbx_view(im: Image.Image) -> np.ndarray | None:
    """Read-only ``(H, W, 4)`` view of a loaded RGB image's memory, or ``None`` if not exportable."""
    try:
        schema_capsule, array_capsule = im.__arrow_c_array__()
    except (AttributeError, ValueError):  # rows in several blocks (large images), old Pillow
        return None
    schema = _ArrowSchema.from_address(_capsule_pointer(schema_capsule, b"arrow_schema"))
    array = _ArrowArray.from_address(_capsule_pointer(array_capsule, b"arrow_array"))
    width, height = im.size
    if schema.format != b"+w:4" or schema.n_children != 1 or schema.children[0].contents.format != b"C":
        return None
    if array.length != width * height or array.offset != 0 or array.n_children != 1:
        return None
    child = array.children[0].contents
    if child.length != 4 * width * height or child.offset != 0 or child.n_buffers != 2 or not child.buffers[1]:
        return None
    pinned = _PinnedPixels(child.buffers[1], (height, width, 4), (schema_capsule, array_capsule))
    return np.asarray(pinned)
