"""Typed client-facing errors of both servers and their HTTP/gRPC meaning.

Every error raised while serving a request is one of these. ``yolo_contract.serving`` maps them to
REST responses in one place (``{"error": message}`` with :attr:`ServingError.http_status`); on gRPC
they are ``grpc_interceptor`` exceptions, so KServe's interceptor aborts with :attr:`status_code`.
Messages are fixed, client-safe strings: never request bytes, object reprs or internal host names.
"""

from __future__ import annotations

from grpc import StatusCode
from grpc_interceptor.exceptions import GrpcException


class ServingError(GrpcException):
    """Base class. HTTP servers answer ``http_status`` with ``{"error": message}``."""

    http_status = 500
    status_code = StatusCode.INTERNAL
    #: Reason label for the rejected-requests metric.
    reason = "internal"

    def __init__(self, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.details = message
        self.retry_after = retry_after


class BadRequest(ServingError):
    """Malformed payload or undecodable image. HTTP 400 / INVALID_ARGUMENT."""

    http_status = 400
    status_code = StatusCode.INVALID_ARGUMENT
    reason = "bad_request"


class PayloadTooLarge(ServingError):
    """Body, pixel count or batch over the configured limits. HTTP 413 / RESOURCE_EXHAUSTED."""

    http_status = 413
    status_code = StatusCode.RESOURCE_EXHAUSTED
    reason = "too_large"


class UnsupportedMediaType(ServingError):
    """Image format or Content-Type not on the allow-list. HTTP 415 / INVALID_ARGUMENT."""

    http_status = 415
    status_code = StatusCode.INVALID_ARGUMENT
    reason = "unsupported_media_type"


class RequestTimeout(ServingError):
    """The client did not send its body within the body-read deadline. HTTP 408."""

    http_status = 408
    status_code = StatusCode.DEADLINE_EXCEEDED
    reason = "client_timeout"


class Overloaded(ServingError):
    """Too much work in flight; retry later. HTTP 503 + Retry-After / UNAVAILABLE."""

    http_status = 503
    status_code = StatusCode.UNAVAILABLE
    reason = "overloaded"


class PredictorUnavailable(ServingError):
    """The predictor cannot be reached or is not ready. HTTP 503 / UNAVAILABLE."""

    http_status = 503
    status_code = StatusCode.UNAVAILABLE
    reason = "predictor_unavailable"


class PredictorTimeout(ServingError):
    """The predictor did not answer within the request timeout. HTTP 504 / DEADLINE_EXCEEDED."""

    http_status = 504
    status_code = StatusCode.DEADLINE_EXCEEDED
    reason = "predictor_timeout"


class PredictorError(ServingError):
    """The predictor failed internally. HTTP 502."""

    http_status = 502
    status_code = StatusCode.INTERNAL
    reason = "predictor_error"


class PreprocessMismatch(ServingError):
    """The request was prepared for another model (``preprocess`` or H/W differ from this model's).
    HTTP 409 / FAILED_PRECONDITION; the message is this model's ModelInfo as JSON, so the caller
    can prepare the images again (``yolo_contract.model_info.mismatch_message``)."""

    http_status = 409
    status_code = StatusCode.FAILED_PRECONDITION
    reason = "preprocess_mismatch"


class Forbidden(ServingError):
    """An operation this server refuses (e.g. unloading the served model). HTTP 403 / PERMISSION_DENIED."""

    http_status = 403
    status_code = StatusCode.PERMISSION_DENIED
    reason = "forbidden"


__all__ = [
    "ServingError",
    "BadRequest",
    "PayloadTooLarge",
    "UnsupportedMediaType",
    "RequestTimeout",
    "Overloaded",
    "PredictorUnavailable",
    "PredictorTimeout",
    "PredictorError",
    "PreprocessMismatch",
    "Forbidden",
]
