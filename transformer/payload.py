"""Request payloads -> encoded images + parameters; detections -> response documents.

Pure functions (no kserve imports): the transformer model calls them from preprocess/postprocess.

Accepted inputs (all on the transformer):
  * v1 JSON ``{"instances": [...], "parameters": {...}}``; an instance is
    ``{"image_bytes": {"b64": "..."}}``, ``{"b64": "..."}`` or a bare base64 string;
  * v1 raw image body (``Content-Type: image/*`` or ``application/octet-stream``), parameters from
    the query string (``?confidence=0.25&class_filter=dog,cat``);
  * v1 ``multipart/form-data`` with the image in a file field (the tutorial's client sends ``image``);
  * v2 ``BYTES`` input ``images`` (raw bytes via gRPC / the binary extension, base64 strings in JSON).
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import secrets
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import numpy as np
import orjson

from yolo_contract.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from yolo_contract.tensors import PUBLIC_PARAMETER_NAMES, QUERY_HEADER, plain_value

FORMATS = ("json", "seed")
IMAGE_CONTENT_TYPES = ("image/", "application/octet-stream", "application/x-image")


@dataclass
class ParsedRequest:
    images: list[bytes]
    parameters: dict = field(default_factory=dict)


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadRequest(f"{where}: invalid base64") from e


def _instance_bytes(instance: object, i: int) -> bytes:
    where = f"instances[{i}]"
    if isinstance(instance, str):
        return _b64(instance, where)
    if isinstance(instance, dict):
        if "image_bytes" in instance and isinstance(instance["image_bytes"], dict):
            return _b64(instance["image_bytes"].get("b64"), f"{where}.image_bytes.b64")
        if "b64" in instance:
            return _b64(instance["b64"], f"{where}.b64")
    raise BadRequest(f'{where}: expected {{"image_bytes": {{"b64": ...}}}}, {{"b64": ...}} or a base64 string')


def _check_count(n: int, max_images: int) -> None:
    if n == 0:
        raise BadRequest("no image in the request")
    if n > max_images:
        raise BadRequest(f"batch size must be <= {max_images} images per request, got {n}")


def parse_v1(payload: object, headers: dict[str, str], max_images: int) -> ParsedRequest:
    """A v1 ``:predict`` body (dict from JSON, or raw bytes) -> images + raw parameters."""
    query = query_parameters(headers.get(QUERY_HEADER, ""))
    if isinstance(payload, (bytes, bytearray)):
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype in ("application/x-www-form-urlencoded", "text/plain") and bytes(payload).lstrip()[:1] == b"{":
            # `curl -d @input.json` (KServe's documented call) sends JSON as a form body
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError as e:
                raise BadRequest("request body is not valid JSON") from e
            return parse_v1(payload, headers, max_images)
        if ctype.startswith("multipart/form-data"):
            images = _multipart_images(bytes(payload), headers.get("content-type", ""))
        elif not ctype or ctype.startswith(IMAGE_CONTENT_TYPES):
            images = [bytes(payload)]
        else:
            raise UnsupportedMediaType(
                f"unsupported Content-Type {ctype!r}: send JSON, an image (image/jpeg, image/png, ...) or multipart/form-data"
            )
        _check_count(len(images), max_images)
        return ParsedRequest(images, query)
    if not isinstance(payload, dict):
        raise BadRequest('expected a JSON object with "instances"')
    instances = payload.get("instances")
    if not isinstance(instances, list):
        raise BadRequest('expected "instances" to be a list of images')
    _check_count(len(instances), max_images)
    params = payload.get("parameters", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadRequest('"parameters" must be an object')
    return ParsedRequest([_instance_bytes(x, i) for i, x in enumerate(instances)], {**query, **params})


#: Query parameters left out when given empty: ours (an empty model_version is no version).
_OMITTED_WHEN_EMPTY = frozenset((*PUBLIC_PARAMETER_NAMES, "model_version"))


def query_parameters(query: str) -> dict[str, str]:
    """Parameters of a query string. A parameter of ours given empty (``?confidence=``) is left out,
    as if absent; any other empty key stays, so that a misspelt one is refused by name."""
    return {k: v for k, v in parse_qsl(query, keep_blank_values=True) if v or k not in _OMITTED_WHEN_EMPTY}


def response_options(raw: dict) -> tuple[str, bool]:
    """``(format, clip)`` from the request parameters (``yolo_contract.tensors.RESPONSE_PARAMETERS``); 400 if invalid."""
    fmt = plain_value(raw.get("format"))
    fmt = "json" if fmt is None else fmt
    if fmt not in FORMATS:
        raise BadRequest(f'parameter "format" must be one of {", ".join(FORMATS)}')
    clip = plain_value(raw.get("clip"))
    if clip is None or isinstance(clip, bool):
        return fmt, bool(clip)
    text = str(clip).strip().lower()
    if text in ("true", "1"):
        return fmt, True
    if text in ("false", "0", ""):
        return fmt, False
    raise BadRequest('parameter "clip" must be true or false')


def _multipart_images(body: bytes, content_type: str) -> list[bytes]:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not msg.is_multipart():
        raise BadRequest("malformed multipart/form-data body")
    images = [
        part.get_payload(decode=True) or b""
        for part in msg.iter_parts()
        if part.get_filename() or part.get_param("name", header="content-disposition") in ("image", "file", "images")
    ]
    if not images:
        raise BadRequest('multipart/form-data body has no file field (send the image as "image")')
    return images


def v2_images(values: np.ndarray | list, max_images: int) -> list[bytes]:
    """Elements of a v2 BYTES ``images`` input: raw bytes, or base64 strings (JSON)."""
    flat = list(np.asarray(values, dtype=object).reshape(-1))
    _check_count(len(flat), max_images)
    out = []
    for i, v in enumerate(flat):
        if isinstance(v, (bytes, bytearray)):
            out.append(bytes(v))
        else:
            out.append(_b64(v, f"images[{i}]"))
    return out


def check_total_size(images: list[bytes], max_bytes: int) -> None:
    if sum(len(b) for b in images) > max_bytes:
        raise PayloadTooLarge(f"images exceed {max_bytes} bytes in total")


def detection_dicts(rows: np.ndarray, labels: list[str]) -> list[dict]:
    """Rows ``[cx, cy, w, h, conf, class_id]`` in original pixels -> the public detection objects."""
    return [
        {
            "class": label,
            "class_id": int(r[5]),
            "confidence": round(float(r[4]), 6),
            "x": round(float(r[0]), 3),
            "y": round(float(r[1]), 3),
            "width": round(float(r[2]), 3),
            "height": round(float(r[3]), 3),
        }
        for r, label in zip(rows, labels)
    ]


def image_document(width: int, height: int, detections: list[dict], fmt: str) -> dict:
    """One image's result in the requested format (``json`` default, or the tutorial's ``seed``)."""
    if fmt == "seed":
        return {
            "data": [[d["class"], d["confidence"], [d["x"], d["y"], d["width"], d["height"]]] for d in detections],
            "uid": secrets.token_hex(16),
            "success": "true",
        }
    return {"image": {"width": width, "height": height}, "detections": detections}


def v1_body(documents: list[dict], fmt: str) -> dict:
    """``{"predictions": [...]}``; the tutorial's ``seed`` format returns one image's object bare."""
    if fmt == "seed" and len(documents) == 1:
        return documents[0]
    return {"predictions": documents}


#: Content type the middleware gives raw image bodies that KServe would otherwise parse as JSON.
RAW_IMAGE_CONTENT_TYPE = b"application/x-image"


def rewrite_request(path: str, headers: list, body: bytes):
    """HTTP-level fixes before KServe decodes a request body (see ``yolo_contract.serving``).

    * v1 ``:predict`` with no Content-Type or ``application/octet-stream`` and a body that is not
      JSON: KServe would try to parse the image as JSON; mark it as a raw image instead.
    * v2 binary-extension requests whose inputs are all BYTES: KServe 0.21 cannot decode them (it
      tries to UTF-8 the bytes); turn each length-prefixed element into a base64 string, which
      :func:`v2_images` understands. Raises BadRequest for a malformed binary body.
    Other requests pass through untouched.
    """
    if path.endswith(":predict"):
        ctype = next((v for k, v in headers if k == b"content-type"), b"").split(b";")[0].strip().lower()
        if ctype in (b"", b"application/octet-stream") and body.lstrip()[:1] not in (b"{", b"["):
            headers = [(k, v) for k, v in headers if k != b"content-type"] + [(b"content-type", RAW_IMAGE_CONTENT_TYPE)]
        return headers, body
    if not path.endswith("/infer"):
        return headers, body
    ihcl = next((v for k, v in headers if k == b"inference-header-content-length"), None)
    if ihcl is None:
        return headers, body
    try:
        n = int(ihcl)
        header = orjson.loads(body[:n])
        inputs = header["inputs"]
        if not all(isinstance(i, dict) and i.get("datatype") == "BYTES" for i in inputs):
            return headers, body
        offset = n
        for inp in inputs:
            size = int((inp.get("parameters") or {}).pop("binary_data_size", -1))
            if size < 0:
                continue
            chunk, offset = body[offset : offset + size], offset + size
            if len(chunk) != size:
                raise ValueError("binary data shorter than declared")
            items, pos = [], 0
            while pos < len(chunk):
                length = int.from_bytes(chunk[pos : pos + 4], "little")
                item = chunk[pos + 4 : pos + 4 + length]
                if pos + 4 > len(chunk) or len(item) != length:
                    raise ValueError("truncated BYTES element")
                items.append(base64.b64encode(item).decode())
                pos += 4 + length
            inp["data"] = items
    except (ValueError, KeyError, TypeError, AttributeError, orjson.JSONDecodeError) as e:
        raise BadRequest("malformed v2 binary request (inference-header-content-length / binary_data_size)") from e
    new_headers = [
        (k, v) for k, v in headers if k not in (b"inference-header-content-length", b"content-type", b"content-length")
    ]
    new_body = orjson.dumps(header)
    new_headers += [(b"content-type", b"application/json"), (b"content-length", str(len(new_body)).encode())]
    return new_headers, new_body
