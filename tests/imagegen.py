"""Small in-memory images for tests (Pillow), named by what they exercise."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from tests.servers import IMAGES


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def dog_jpeg() -> bytes:
    return (IMAGES / "dog.jpg").read_bytes()


def rgba_png() -> bytes:
    im = Image.new("RGBA", (64, 48), (255, 0, 0, 0))  # fully transparent red
    return encode(im, "PNG")


def png16() -> bytes:
    return encode(Image.new("I;16", (40, 30), 40000), "PNG")


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG")


def exif_rotated_jpeg() -> bytes:
    im = Image.new("RGB", (80, 40), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW for display
    return encode(im, "JPEG", exif=exif)


def animated_gif() -> bytes:
    frames = [Image.new("P", (32, 32), i) for i in (1, 2, 3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])


def huge_png_header(width: int = 20000, height: int = 20000) -> bytes:
    """A valid-looking 1-bit PNG declaring width x height with almost no data (a bomb header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    idat = zlib.compress(row * 64, 9)  # rows missing: the image would be truncated if decoded
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def tiff() -> bytes:
    return encode(Image.new("RGB", (16, 16)), "TIFF")
