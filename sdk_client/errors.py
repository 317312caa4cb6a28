"""Typed client-side errors, mapped once from HTTP status codes and gRPC status codes.

Hierarchy::

    DetectionError                      base class; .status_code, .message, .request_id, .retry_after
    ├── InvalidRequestError             4xx: 400 bad image/parameters, 404 unknown model,
    │   │                               413 too large, 415 unsupported media type, 422 schema.
    │   │                               Never retried.
    │   └── ModelNotFoundError          the model is not served there (.model, .available:
    │                                   the models that are, when the server lists them).
    ├── ServiceUnavailableError         503: predictor unavailable/overloaded/scaling from zero.
    │                                   Retried (honouring Retry-After).
    ├── GatewayTimeoutError             504: the predictor (or the ingress) timed out. Retried.
    ├── ServerError                     any other 5xx (500, 501, 502, ...). Not retried.
    └── ConnectionFailedError           no HTTP response at all: refused, reset, DNS, client-side
                                        timeout. Retried.

:func:`error_from_response` turns a non-2xx response into one of these; it tolerates bodies that are
not JSON (Knative's queue-proxy and ingresses answer with HTML or plain text).
"""

from __future__ import annotations

import email.utils
import html
import json
import re
import time
from typing import Mapping

__all__ = [
    "DetectionError",
    "InvalidRequestError",
    "ServiceUnavailableError",
    "GatewayTimeoutError",
    "ServerError",
    "ConnectionFailedError",
    "ModelNotFoundError",
    "error_from_response",
    "error_from_grpc",
    "parse_retry_after",
]

#: Longest error message kept from a response body.
_MAX_MESSAGE = 300


class DetectionError(Exception):
    """Base class of every error raised by :mod:`sdk_client`.

    Attributes:
        message: human-readable message (the server's ``{"error": ...}`` when it sent one).
        status_code: HTTP status code (gRPC statuses are mapped to their HTTP equivalent), or
            ``None`` when no response was received.
        request_id: the ``x-request-id`` of the failed request, when known.
        retry_after: seconds the server asked us to wait (``Retry-After``), when given.
    """

    #: Whether the client retries a request that failed with this error.
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        if self.status_code is not None:
            return f"HTTP {self.status_code}: {self.message}"
        return self.message


class InvalidRequestError(DetectionError):
    """The server rejected the request (400/404/413/415/422, any 4xx). Retrying will not help."""


class ModelNotFoundError(InvalidRequestError):
    """The server answers but does not serve this model; :attr:`available` lists those it does
    (empty when it cannot say, e.g. over gRPC)."""

    def __init__(self, model: str, url: str, available: list[str] | None = None, **kwargs):
        self.model = model
        self.url = url
        self.available = list(available or [])
        if self.available:
            hint = "models served there: " + ", ".join(self.available)
        else:
            hint = "the server did not list its models"
        kwargs.setdefault("status_code", 404)
        super().__init__(f"model {model!r} not found at {url} ({hint})", **kwargs)

    def __str__(self) -> str:
        return self.message


class ServiceUnavailableError(DetectionError):
    """HTTP 503: predictor unavailable, overloaded or scaling from zero. Retried."""

    retryable = True


class GatewayTimeoutError(DetectionError):
    """HTTP 504: the predictor or the ingress timed out. Retried."""

    retryable = True


class ServerError(DetectionError):
    """Any other 5xx (500, 501, 502, ...): the server failed. Not retried."""


class ConnectionFailedError(DetectionError):
    """No response: connection refused/reset, DNS failure or client-side timeout. Retried."""

    retryable = True


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def _message_from_body(body: bytes, content_type: str) -> str:
    """The server's error message: ``{"error": ...}``/``{"detail": ...}`` JSON, else plain text."""
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        return ""
    if text[:1] in "{[":
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            for key in ("error", "detail", "message"):
                if key in doc:
                    val = doc[key]
                    msg = val if isinstance(val, str) else json.dumps(val, separators=(",", ":"))
                    return msg[:_MAX_MESSAGE]
    if "html" in content_type.lower() or text.lstrip().startswith("<"):
        # Knative/Istio/nginx error pages: keep the visible text only.
        text = html.unescape(_TAG.sub(" ", re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)))
    text = _SPACE.sub(" ", text).strip()
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text


def error_from_response(
    status_code: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    reason: str = "",
    request_id: str | None = None,
) -> DetectionError:
    """Map a non-2xx HTTP response to the matching :class:`DetectionError` subclass."""
    content_type = headers.get("content-type", "") or ""
    message = _message_from_body(body, content_type) or reason or f"HTTP {status_code}"
    kwargs = dict(
        status_code=status_code,
        request_id=headers.get("x-request-id") or request_id,
        retry_after=parse_retry_after(headers.get("retry-after")),
    )
    if status_code == 503:
        return ServiceUnavailableError(message, **kwargs)
    if status_code == 504:
        return GatewayTimeoutError(message, **kwargs)
    if 400 <= status_code < 500:
        return InvalidRequestError(message, **kwargs)
    if status_code >= 500:
        return ServerError(message, **kwargs)
    return DetectionError(message, **kwargs)


#: gRPC status name -> (error class, equivalent HTTP status).
_GRPC_MAP = {
    "INVALID_ARGUMENT": (InvalidRequestError, 400),
    "OUT_OF_RANGE": (InvalidRequestError, 400),
    "FAILED_PRECONDITION": (InvalidRequestError, 400),
    "NOT_FOUND": (InvalidRequestError, 404),
    "RESOURCE_EXHAUSTED": (InvalidRequestError, 413),
    "UNAUTHENTICATED": (InvalidRequestError, 401),
    "PERMISSION_DENIED": (InvalidRequestError, 403),
    "UNAVAILABLE": (ServiceUnavailableError, 503),
    "DEADLINE_EXCEEDED": (GatewayTimeoutError, 504),
    "UNIMPLEMENTED": (ServerError, 501),
}

_CONNECT_HINTS = ("failed to connect", "connection refused", "dns resolution", "connect failed",
                  "name resolution", "connection reset", "socket closed")


def error_from_grpc(code_name: str, details: str, *, request_id: str | None = None) -> DetectionError:
    """Map a gRPC status (``grpc.StatusCode.X.name``) and its details to a :class:`DetectionError`."""
    details = (details or code_name)[:_MAX_MESSAGE]
    if code_name == "UNAVAILABLE" and any(h in details.lower() for h in _CONNECT_HINTS):
        return ConnectionFailedError(details, request_id=request_id)
    cls, status = _GRPC_MAP.get(code_name, (ServerError, 500))
    return cls(details, status_code=status, request_id=request_id)
