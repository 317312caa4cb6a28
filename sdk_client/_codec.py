"""Request building and response parsing, shared by the sync and async clients (no I/O here).

* images: :func:`encode_image` (path, bytes, file, PIL image, numpy array -> encoded bytes) and
  :func:`prepare_image` (optionally downscaled on the client, ``max_side``);
* REST v1 / v2 (JSON + base64, or the binary tensor extension): :class:`RestCodec`;
* gRPC v2: :func:`grpc_infer_request`, :func:`grpc_detections`.

Tensor and header names come from :mod:`yolo_contract.tensors` (the transformer's public input is
``images`` BYTES ``[N]``, its output ``detections`` BYTES ``[N]``, one JSON document per image).
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from yolo_contract.tensors import INPUT_IMAGES, MODEL_VERSION_HEADER, OUTPUT_DETECTIONS, REQUEST_ID_HEADER

from .errors import DetectionError
from .results import DetectionResult

__all__ = ["encode_image", "prepare_image", "PreparedImage", "build_parameters", "RestCodec",
           "grpc_infer_request", "grpc_detections", "normalize_http_url", "parse_grpc_target"]

_PIL_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}


# --------------------------------------------------------------------------------------------
# images


def encode_image(image: Any) -> tuple[bytes, str | None]:
    """Encoded image bytes to send, and the name identifying the image (its path, if any).

    Accepts a path (``str``/``os.PathLike``, sent as the file's bytes), encoded image ``bytes``,
    a binary file object, a ``PIL.Image.Image`` or a ``numpy`` array (``HxWx3`` uint8 RGB; also
    ``HxW``/``HxWx1`` gray and ``HxWx4`` RGBA). PIL images and arrays are encoded as PNG (lossless).

    Raises:
        TypeError: unsupported input type.
        ValueError: array of the wrong dtype/shape, or empty input.
        OSError: the file cannot be read.
    """
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            data = f.read()
        name: str | None = os.fspath(image)
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
    elif isinstance(image, (bytes, bytearray, memoryview)):
        data, name = bytes(image), None
    elif hasattr(image, "read") and callable(image.read):
        data = image.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("file objects must be opened in binary mode")
        data, name = bytes(data), getattr(image, "name", None)
        name = name if isinstance(name, str) else None
    elif hasattr(image, "getpixel") and hasattr(image, "save"):  # PIL.Image.Image
        data, name = _encode_pil(image), None
    elif hasattr(image, "__array_interface__") or type(image).__module__ == "numpy":
        data, name = _encode_array(image), None
    else:
        raise TypeError(
            f"unsupported image type {type(image).__name__}: expected a path, bytes, "
            "a binary file, a PIL image or a numpy array"
        )
    if not data:
        raise ValueError("empty image")
    return data, name


def _encode_pil(img: Any, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(buf, format="JPEG", quality=95)
    else:
        if img.mode not in _PIL_PNG_MODES:
            img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _encode_array(arr: Any) -> bytes:
    import numpy as np
    from PIL import Image

    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"numpy images must be uint8 (got {arr.dtype})")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"numpy images must be HxW, HxWx3 (RGB) or HxWx4 (got {arr.shape})")
    if arr.size == 0:
        raise ValueError("empty image")
    return _encode_pil(Image.fromarray(np.ascontiguousarray(arr)))


@dataclass(frozen=True)
class PreparedImage:
    """What is uploaded, and how to map the answer back to the original image."""

    data: bytes
    name: str | None
    #: Size of the original (EXIF-oriented) image when it was downscaled, else ``None``.
    original_size: tuple[int, int] | None = None


def prepare_image(image: Any, max_side: int | None = None) -> PreparedImage:
    """:func:`encode_image`, then, if ``max_side`` is set and the (EXIF-oriented) image is larger,
    a downscaled copy (Lanczos; JPEG quality 95 for JPEG sources, else PNG). The server then
    detects on the smaller image: results change slightly, and boxes are mapped back to the
    original's pixels by :meth:`DetectionResult.rescaled`."""
    data, name = encode_image(image)
    if not max_side:
        return PreparedImage(data, name)
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
            if orientation in (5, 6, 7, 8):
                w, h = h, w
            if max(w, h) <= max_side:
                return PreparedImage(data, name)
            fmt = "JPEG" if im.format in ("JPEG", "MPO") else "PNG"
            im.load()
            oriented = ImageOps.exif_transpose(im)
    except (OSError, ValueError, Image.DecompressionBombError):
        return PreparedImage(data, name)  # let the server say what is wrong with it
    scale = max_side / max(w, h)
    small = oriented.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                            Image.Resampling.LANCZOS)
    return PreparedImage(_encode_pil(small, fmt), name, (w, h))


# --------------------------------------------------------------------------------------------
# parameters


def build_parameters(
    confidence: float | None = None,
    iou_threshold: float | None = None,
    class_filter: str | Iterable[str] | None = None,
    max_detections: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Request parameters in the transformer's public names; ``None`` values are left out."""
    params: dict[str, Any] = {}
    if confidence is not None:
        params["confidence"] = float(confidence)
    if iou_threshold is not None:
        params["iou_threshold"] = float(iou_threshold)
    if class_filter is not None:
        if isinstance(class_filter, str):
            names = [c.strip() for c in class_filter.split(",")]
        else:
            names = [str(c).strip() for c in class_filter]
        params["class_filter"] = [c for c in names if c]
    if max_detections is not None:
        params["max_detections"] = int(max_detections)
    if extra:
        params.update(extra)
    return params


def _flat_parameters(params: Mapping[str, Any]) -> dict:
    """v2 parameters are scalars: lists become comma-joined strings."""
    return {k: ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else v
            for k, v in params.items()}


# --------------------------------------------------------------------------------------------
# responses


def _single(docs: Sequence[Any], name: str | None, rid: str | None,
            version: str | None = None) -> DetectionResult:
    if len(docs) != 1:
        raise DetectionError(f"malformed response: expected 1 prediction, got {len(docs)}",
                             request_id=rid)
    doc = docs[0]
    try:
        if isinstance(doc, (bytes, bytearray)):
            doc = bytes(doc).decode("utf-8")
        if isinstance(doc, str):
            doc = json.loads(doc)
        result = DetectionResult.from_dict(doc, image=name, request_id=rid)
        result.model_version = version
        return result
    except (ValueError, TypeError, AttributeError) as e:
        raise DetectionError(f"malformed response: {e}", request_id=rid) from e


def _split_bytes_tensor(raw: bytes) -> list[bytes]:
    """A v2 BYTES tensor in binary form: each element is a 4-byte little-endian length + bytes."""
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise ValueError("truncated BYTES element length")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise ValueError("truncated BYTES element")
        out.append(raw[pos:pos + n])
        pos += n
    return out


def _bytes_tensor(values: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _v2_output(header: Mapping[str, Any], binary: bytes = b"") -> list[Any]:
    """Elements of the ``detections`` output of a v2 REST response (JSON or binary extension)."""
    outputs = header.get("outputs")
    if not isinstance(outputs, list):
        raise TypeError("'outputs' is not a list")
    pos = 0
    for out in outputs:
        size = ((out.get("parameters") or {}).get("binary_data_size"))
        chunk = None
        if size is not None:
            chunk, pos = binary[pos:pos + int(size)], pos + int(size)
        if out.get("name") != OUTPUT_DETECTIONS:
            continue
        if chunk is not None:
            return _split_bytes_tensor(chunk)
        data = out.get("data")
        if not isinstance(data, list):
            raise TypeError(f"output {OUTPUT_DETECTIONS!r} has no data")
        return data
    names = [o.get("name") for o in outputs]
    raise DetectionError(f"malformed response: no output {OUTPUT_DETECTIONS!r} (got {names})")


# --------------------------------------------------------------------------------------------
# REST


def normalize_http_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


class RestCodec:
    """Paths, request bodies and response parsing of REST v1 and v2."""

    def __init__(self, protocol: str, model: str, v2_binary: bool):
        self.protocol = protocol
        self.model = model
        self.v2_binary = v2_binary

    def path(self) -> str:
        if self.protocol == "v1":
            return f"/v1/models/{self.model}:predict"
        return f"/v2/models/{self.model}/infer"

    def ready_path(self) -> str:
        if self.protocol == "v1":
            return f"/v1/models/{self.model}"
        return f"/v2/models/{self.model}/ready"

    def build(self, data: bytes, params: Mapping[str, Any], rid: str) -> dict:
        """Keyword arguments of ``httpx.Client.post`` (``content`` + ``headers``)."""
        headers = {REQUEST_ID_HEADER: rid}
        b64 = None if self.protocol == "v2" and self.v2_binary else base64.b64encode(data).decode("ascii")
        if self.protocol == "v1":
            body: dict[str, Any] = {"instances": [{"image_bytes": {"b64": b64}}]}
            if params:
                body["parameters"] = dict(params)
            headers["content-type"] = "application/json"
            return {"content": json.dumps(body).encode(), "headers": headers}

        inp: dict[str, Any] = {"name": INPUT_IMAGES, "shape": [1], "datatype": "BYTES"}
        head: dict[str, Any] = {"id": rid, "inputs": [inp]}
        if params:
            head["parameters"] = _flat_parameters(params)
        if b64 is not None:
            inp.update(parameters={"content_type": "base64"}, data=[b64])
            headers["content-type"] = "application/json"
            return {"content": json.dumps(head).encode(), "headers": headers}
        raw = _bytes_tensor([data])
        inp["parameters"] = {"binary_data_size": len(raw)}
        header = json.dumps(head).encode()
        # Binary extension: no application/json content type, or FastAPI answers 422.
        headers["content-type"] = "application/octet-stream"
        headers["inference-header-content-length"] = str(len(header))
        return {"content": header + raw, "headers": headers}

    def parse(self, content: bytes, headers: Mapping[str, str], name: str | None,
              rid: str) -> DetectionResult:
        """The result of a successful (2xx) response."""
        rid = headers.get(REQUEST_ID_HEADER) or rid
        version = headers.get(MODEL_VERSION_HEADER) or None
        try:
            if self.protocol == "v1":
                preds = json.loads(content)["predictions"]
                if not isinstance(preds, list):
                    raise TypeError("'predictions' is not a list")
                return _single(preds, name, rid, version)
            ihcl = headers.get("inference-header-content-length")
            head, binary = (json.loads(content[:int(ihcl)]), content[int(ihcl):]) if ihcl is not None \
                else (json.loads(content), b"")
            return _single(_v2_output(head, binary), name, rid, version or head.get("model_version") or None)
        except DetectionError as e:
            e.request_id = e.request_id or rid
            raise
        except Exception as e:  # noqa: BLE001 -- any decoding failure is a malformed response
            raise DetectionError(
                f"malformed {self.protocol} response: {type(e).__name__}: {e}", request_id=rid
            ) from e


# --------------------------------------------------------------------------------------------
# gRPC


def parse_grpc_target(url: str) -> tuple[str, bool]:
    """``host:port`` and whether to use TLS, from ``host:port`` or a ``grpc[s]://``/``http[s]://`` URL."""
    url, use_ssl = url.strip(), False
    for scheme in ("grpcs://", "https://", "grpc://", "http://"):
        if url.startswith(scheme):
            use_ssl = scheme in ("grpcs://", "https://")
            url = url[len(scheme):]
    return url.rstrip("/"), use_ssl


def grpc_infer_request(model: str, data: bytes, params: Mapping[str, Any], rid: str) -> Any:
    from ._grpc import messages, set_parameters

    req = messages()["ModelInferRequest"](model_name=model, id=rid)
    req.inputs.add(name=INPUT_IMAGES, datatype="BYTES", shape=[1])
    req.raw_input_contents.append(_bytes_tensor([data]))
    set_parameters(req.parameters, params)
    return req


def grpc_detections(resp: Any, name: str | None, rid: str) -> DetectionResult:
    try:
        for i, out in enumerate(resp.outputs):
            if out.name != OUTPUT_DETECTIONS:
                continue
            version = resp.model_version or None
            if i < len(resp.raw_output_contents):
                return _single(_split_bytes_tensor(resp.raw_output_contents[i]), name, rid, version)
            return _single(list(out.contents.bytes_contents), name, rid, version)
        names = [o.name for o in resp.outputs]
        raise DetectionError(f"malformed response: no output {OUTPUT_DETECTIONS!r} (got {names})",
                             request_id=rid)
    except DetectionError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DetectionError(f"malformed grpc response: {type(e).__name__}: {e}",
                             request_id=rid) from e
