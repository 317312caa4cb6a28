"""What ``yolo-kserve detect`` reads: files, folders, globs, http(s) URLs and video files.

:func:`collect` turns the command-line arguments into :class:`Source` objects, in order and without
duplicates (a file named twice, or as a relative and an absolute path, is one source: sources are
keyed by their resolved path). :func:`items` expands them lazily into :class:`Item` objects, one
per image or per sampled video frame, so a long video is decoded only as fast as frames are sent.

Folders (searched recursively) and globs collect only what the server accepts --
:data:`IMAGE_EXTENSIONS` -- plus :data:`VIDEO_EXTENSIONS`; a file named explicitly is always used.
The image formats mirror the transformer's allow-list (``transformer/imaging.py``: JPEG, PNG, WebP,
GIF, BMP; a test keeps the two in step), kept here because the SDK does not import the server.

Videos are decoded with PyAV (``pip install 'yolo-kserve[video]'``), frames sampled at ``fps``
(every frame when ``None``); each frame is sent as a JPEG (quality 95) and its result carries the
frame index and timestamp. URLs are downloaded by the worker that sends them, at most
``max_download_bytes``, following at most 5 redirects.
"""

from __future__ import annotations

import glob
import io
import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence
from urllib.parse import unquote, urlsplit

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "Source", "Item", "collect", "items",
           "download", "DEFAULT_MAX_DOWNLOAD_BYTES"]

#: Image formats the server decodes (the transformer's allow-list), by file extension.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp")
#: Video containers read frame by frame with PyAV.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")
#: The transformer's default request body cap (40 MiB, ``--max_body_bytes``): a larger download
#: would be refused anyway.
DEFAULT_MAX_DOWNLOAD_BYTES = 40 * 1024 * 1024
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Source:
    """One input: ``kind`` is ``"image"``, ``"video"`` or ``"url"``.

    ``display`` is how it is shown and recorded (the path as given, normalised, or the URL);
    ``key`` identifies it across runs (resolved absolute path, or the URL); ``rel_dir`` is its
    folder relative to a folder argument ('' otherwise), mirrored in output folders.
    """

    kind: str
    display: str
    key: str
    rel_dir: str = ""

    @property
    def stem(self) -> str:
        if self.kind == "url":
            name = os.path.basename(unquote(urlsplit(self.display).path)) or "url"
            return os.path.splitext(name)[0] or "url"
        return os.path.splitext(os.path.basename(self.display))[0]

    @property
    def suffix(self) -> str:
        path = unquote(urlsplit(self.display).path) if self.kind == "url" else self.display
        ext = os.path.splitext(path)[1].lower()
        return ext if ext in IMAGE_EXTENSIONS else ".jpg"


@dataclass(frozen=True)
class Item:
    """One image to send: a file, a URL, or a decoded video frame (``frame``/``time`` set)."""

    source: Source
    frame: int | None = None
    time: float | None = None
    pixels: Any = None  # HxWx3 uint8 RGB for video frames

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.source.key, self.frame)

    @property
    def label(self) -> str:
        if self.frame is None:
            return self.source.display
        return f"{self.source.display} frame {self.frame} ({self.time:.2f} s)"

    @property
    def stem(self) -> str:
        return self.source.stem if self.frame is None else f"{self.source.stem}_{self.frame:06d}"


def _is_url(arg: str) -> bool:
    return arg.lower().startswith(("http://", "https://"))


def _kind(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def _file_source(path: str, rel_dir: str = "") -> Source:
    return Source(_kind(path) or "image", os.path.normpath(path), os.path.realpath(path), rel_dir)


def collect(args: Sequence[str]) -> tuple[list[Source], list[str]]:
    """Sources named by ``args`` (files, folders, globs, URLs), and the arguments that matched
    nothing the server could read (with the reason)."""
    found: dict[str, Source] = {}
    problems: list[str] = []

    def add(src: Source) -> None:
        found.setdefault(src.key, src)

    for arg in args:
        if _is_url(arg):
            add(Source("url", arg, arg))
        elif os.path.isdir(arg):
            hits, skipped = [], 0
            for root, dirs, files in os.walk(arg):
                dirs.sort()
                for f in sorted(files):
                    full = os.path.join(root, f)
                    if _kind(f):
                        rel = os.path.relpath(root, arg)
                        hits.append(_file_source(full, "" if rel == "." else rel))
                    elif not f.startswith("."):
                        skipped += 1
            if not hits:
                problems.append(f"no images or videos the server accepts in folder {arg!r}"
                                + (f" ({skipped} other files)" if skipped else ""))
            for src in hits:
                add(src)
        elif os.path.isfile(arg):
            add(_file_source(arg))
        elif _GLOB_CHARS & set(arg):
            matches = [h for h in sorted(glob.glob(arg, recursive=True)) if os.path.isfile(h)]
            hits = [_file_source(h) for h in matches if _kind(h)]
            if not hits:
                problems.append(f"no images or videos the server accepts match {arg!r}"
                                + (f" ({len(matches)} other files)" if matches else ""))
            for src in hits:
                add(src)
        else:
            problems.append(f"no such file, folder, glob match or URL: {arg!r}")
    return list(found.values()), problems


def items(sources: Sequence[Source], fps: float | None = None) -> Iterator[Item]:
    """One :class:`Item` per image and per sampled video frame, lazily, in order."""
    for src in sources:
        if src.kind == "video":
            yield from video_frames(src, fps)
        else:
            yield Item(src)


def video_frames(src: Source, fps: float | None = None) -> Iterator[Item]:
    """Frames of a video file as RGB arrays, sampled at ``fps`` (all frames when ``None``)."""
    try:
        import av
    except ImportError as e:  # pragma: no cover -- the dev install has it
        raise RuntimeError("reading videos needs PyAV: pip install 'yolo-kserve[video]'") from e
    step = 1.0 / fps if fps else None
    next_t = 0.0
    with av.open(src.display) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for n, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else n / float(stream.average_rate or 25)
            if step is not None:
                if t + 1e-6 < next_t:
                    continue
                next_t = (math.floor((t + 1e-6) / step) + 1) * step  # first frame of each slot
            yield Item(src, frame=n, time=round(t, 3), pixels=frame.to_ndarray(format="rgb24"))


def encode_frame(pixels: Any) -> bytes:
    """A video frame as JPEG bytes (quality 95)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def download(url: str, *, timeout: float | None, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
             headers: dict | None = None) -> bytes:
    """The body at ``url`` (http/https, at most 5 redirects, at most ``max_bytes``).

    Raises ``OSError`` with one clear line on HTTP errors, oversized bodies or network failures.
    """
    import httpx

    try:
        with httpx.Client(timeout=timeout, follow_redirects=True, max_redirects=5,
                          headers=headers or {}) as client, client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise OSError(f"download failed: HTTP {resp.status_code} from {url}")
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise OSError(f"download refused: {url} is {int(declared)} bytes "
                              f"(limit {max_bytes})")
            chunks, total = [], 0
            for chunk in resp.iter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise OSError(f"download refused: {url} is larger than {max_bytes} bytes")
                chunks.append(chunk)
    except httpx.TooManyRedirects as e:
        raise OSError(f"download failed: too many redirects from {url}") from e
    except httpx.HTTPError as e:
        raise OSError(f"download failed: {url}: {type(e).__name__}: {e}") from e
    data = b"".join(chunks)
    if not data:
        raise OSError(f"download failed: {url} returned no data")
    return data
