"""Server wiring shared by the predictor and the transformer (imports kserve; not for clients).

One place maps typed errors to responses, and one ASGI middleware gives every request:
  * an ``x-request-id`` (kept if sent, generated if not), echoed in the response, logged once
    with its outcome;
  * a body-size cap (``Content-Length`` check plus a streaming byte count) -> 413, a budget of body
    bytes held by all requests together -> 503 + Retry-After, and a body-read deadline for slow
    clients -> 408;
  * a refusal of the model-repository API (``/v2/repository/...``): the served model cannot be
    unloaded from outside, so readiness never lies;
  * rejected-request counting by reason.

Also here: the API page and request examples (``yolo_contract.api_docs``), the listening addresses
(:func:`bind_hosts`), a quiet console (:func:`configure_logging`), and every patch of a KServe
internal, each through :func:`_patch`, which fails at start if KServe no longer has it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import struct
import time
import uuid
import warnings
from dataclasses import dataclass
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from yolo_contract.errors import BadRequest, Forbidden, PayloadTooLarge, RequestTimeout, ServingError
from yolo_contract.observability import METRICS
from yolo_contract.tensors import QUERY_HEADER as _QUERY, REQUEST_ID_HEADER
from yolo_contract import tensors as _T

QUERY_HEADER = _QUERY.encode()
#: Response headers the access line names, as ``label=value`` (what answered the request).
_ACCESS_FIELDS = {_T.MODEL_NAME_HEADER.encode(): "model", _T.MODEL_VERSION_HEADER.encode(): "version",
                  _T.REVISION_HEADER.encode(): "tag", _T.PREDICTOR_REVISION_HEADER.encode(): "revision"}

logger = logging.getLogger("yolo_kserve")
access_logger = logging.getLogger("yolo_kserve.access")


def component_parser(prog: str, description: str, defaults) -> argparse.ArgumentParser:
    """KServe's parser (``--model_name``, ``--http_port``, ...) plus the flags both servers share."""
    import kserve.model_server

    p = argparse.ArgumentParser(
        prog=prog, description=description, parents=[kserve.model_server.parser], conflict_handler="resolve"
    )
    p.set_defaults(model_name=defaults.model_name)
    p.add_argument("--max_body_bytes", type=int, default=defaults.max_body_bytes, help="largest request body (413 above)")
    p.add_argument("--grace_period", type=int, default=defaults.grace_period, help="seconds SIGTERM waits for in-flight work")
    p.add_argument("--json_logs", action="store_true", help="log one JSON object per line")
    p.add_argument("--verbose", action="store_true",
                   help="also log KServe's per-request trace lines and gRPC calls, and library warnings")
    p.add_argument("--http_host", default=defaults.http_host,
                   help="address the REST port listens on (default %(default)s: every interface)")
    p.add_argument("--grpc_host", default=defaults.grpc_host,
                   help="address the gRPC port listens on (default %(default)s: every interface)")
    return p


def parse_into(cls, parser: argparse.ArgumentParser, argv: list[str] | None, check=None):
    """Parse ``argv`` into the frozen settings dataclass ``cls``; invalid values exit like argparse."""
    ns = parser.parse_args(argv)
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
    try:
        settings = cls(**values)
        if check is not None:
            check(settings)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
    return settings


@dataclass(frozen=True)
class HttpLimits:
    #: Largest request body accepted, bytes.
    max_body_bytes: int = 16 * 1024 * 1024
    #: Seconds a client has to send its whole body.
    body_read_timeout_seconds: float = 15.0
    #: Body bytes received and held by all requests together (0 = no budget); a request that
    #: would go over is answered 503 + Retry-After.
    max_inflight_bytes: int = 0


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


def _serving_error_handler(component: str):
    async def handler(request: Request, exc: ServingError) -> JSONResponse:
        METRICS.reject(component, exc.reason)
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return error_response(exc.http_status, exc.message, headers)

    return handler


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default is 422 {"detail": [...]}; the inference protocols promise 400 {"error"}.
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return error_response(400, f"invalid request body{' at ' + where if where else ''}: {first.get('msg', 'malformed')}")


async def _http_exception_handler(request: Request, exc: StarletteHTTPException) -> Response:
    # FastAPI/Starlette's own errors (unparsable JSON body 400, unknown route 404, routing 405)
    # answer {"detail": ...}; keep the one error shape of the inference protocols.
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return error_response(exc.status_code, str(exc.detail), exc.headers)


async def _kserve_decode_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # KServe raises InferenceError while decoding/encoding tensors and echoes the data in the
    # message (whole images); answer a fixed client error and keep the detail out of the body.
    logger.warning("could not decode request %s: %.200s", request.headers.get(REQUEST_ID_HEADER, "-"), exc)
    return error_response(400, "could not decode the tensors of the inference request")


async def _internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # KServe's generic handler echoes "<Type> : message" (internal URLs, reprs); log it, answer plainly.
    logger.error("internal error (request id %s)", request.headers.get(REQUEST_ID_HEADER, "-"), exc_info=exc)
    return error_response(500, "internal server error")


class KServePatchError(RuntimeError):
    """A KServe internal this module replaces is missing or changed shape (we target KServe 0.21)."""


def _patch(owner, name: str, value) -> None:
    """Replace ``owner.<name>``, a KServe internal we work around, failing at start (not at the
    first request, and never silently) if this KServe no longer has it."""
    if not hasattr(owner, name):
        raise KServePatchError(f"{getattr(owner, '__name__', owner)}.{name} is missing: "
                               "yolo_contract.serving patches it, for KServe 0.21")
    setattr(owner, name, value)


#: What KServe 0.21 listens on, hard-coded: ``uvicorn.Config(host="0.0.0.0")`` in ``RESTServer``
#: and ``f"[::]:{port}"`` in ``GRPCServer.start`` (no host flag).
KSERVE_HTTP_HOST, KSERVE_GRPC_HOST = "0.0.0.0", "[::]"


def _grpc_address(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def bind_hosts(http_host: str, grpc_host: str) -> None:
    """Make KServe's REST and gRPC servers listen on ``http_host`` / ``grpc_host`` (the one place
    that patches the addresses; KServe's own values leave everything as it is)."""
    import kserve.model_server as kms
    import kserve.protocol.grpc.server as kgrpc

    if http_host != KSERVE_HTTP_HOST:
        base = kms.RESTServer

        class RESTServer(base):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                if self.config.host != KSERVE_HTTP_HOST:
                    raise RuntimeError(f"KServe's REST server no longer listens on {KSERVE_HTTP_HOST}: update bind_hosts")
                self.config.host = http_host

        _patch(kms, "RESTServer", RESTServer)
    if grpc_host != KSERVE_GRPC_HOST:
        aio = kgrpc.aio

        def server(*args, **kwargs):
            srv = aio.server(*args, **kwargs)
            add_port = srv.add_insecure_port

            def add_insecure_port(address: str) -> int:
                prefix = KSERVE_GRPC_HOST + ":"
                if not address.startswith(prefix):
                    raise RuntimeError(f"KServe's gRPC server no longer listens on {KSERVE_GRPC_HOST}: update bind_hosts")
                address = _grpc_address(grpc_host, address[len(prefix):])
                logger.info("gRPC listening on %s", address)
                return add_port(address)

            srv.add_insecure_port = add_insecure_port
            return srv

        _patch(kgrpc, "aio", type("aio", (), {"server": staticmethod(server)}))


def check_kserve_patch_points() -> None:
    """Fail at start, loudly, if KServe no longer has what :func:`install` and :func:`serve` patch.

    Each patch assigns to a KServe attribute; after a rename the assignment would still succeed and
    silently do nothing. Checked: the symbol exists, has the signature we replace it with, and is
    still read from where we assign it.
    """
    import dis
    import inspect

    import kserve.model_server as kms
    import kserve.protocol.rest.server as kserve_rest
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.grpc.server import GRPCServer
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension

    def params(obj) -> list[str] | None:
        return list(inspect.signature(obj).parameters) if callable(obj) else None

    def reads(fn, kind: str) -> set:
        code = getattr(fn, "__code__", None)
        if code is None:
            return set()
        if kind == "global":
            return {i.argval for i in dis.get_instructions(code) if i.opname == "LOAD_GLOBAL"}
        return set(code.co_names) if kind == "name" else {c for c in code.co_consts if isinstance(c, str)}

    missing: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            missing.append(what)

    # install(): KServe registers these module globals as its REST exception handlers
    registered = reads(getattr(getattr(kserve_rest, "RESTServer", None), "_add_exception_handlers", None), "global")
    for name in ("generic_exception_handler", "inference_error_handler"):
        expect(len(params(getattr(kserve_rest, name, None)) or ()) == 2 and name in registered,
               f"kserve.protocol.rest.server.{name}(request, exc), registered by RESTServer._add_exception_handlers")
    # _guard_v2_decode()
    expect(params(getattr(DataPlane, "decode_inference_request", None)) == ["self", "body", "headers", "model_name"],
           "DataPlane.decode_inference_request(self, body, headers, model_name)")
    # serve(): the gRPC message caps are read from kms.args, which ModelServer.start hands to GRPCServer
    start = getattr(getattr(kms, "ModelServer", None), "start", None)
    expect(isinstance(getattr(kms, "MAX_GRPC_MESSAGE_LENGTH", None), int), "kserve.model_server.MAX_GRPC_MESSAGE_LENGTH")
    expect("args" in reads(start, "global"), "ModelServer.start hands kserve.model_server.args to its servers")
    for key in ("grpc_max_send_message_length", "grpc_max_receive_message_length"):
        expect(hasattr(getattr(kms, "args", None), key) and key in reads(getattr(GRPCServer, "start", None), "const"),
               f"kserve.model_server.args.{key}, read by GRPCServer.start")
    # listen addresses (bind_hosts()): ModelServer.start builds the module global RESTServer,
    # GRPCServer.start calls the module global aio.server
    expect("RESTServer" in reads(start, "global"), "ModelServer.start builds kserve.model_server.RESTServer")
    expect("aio" in reads(getattr(GRPCServer, "start", None), "global"), "GRPCServer.start calls its module's aio.server")
    # serve(): the read-only repository replaces ModelServer.model_repository_extension before start()
    expect("model_repository_extension" in reads(start, "name"), "ModelServer.start reads self.model_repository_extension")
    expect(params(ModelRepositoryExtension) == ["model_registry"], "ModelRepositoryExtension(model_registry)")
    for name in ("load", "unload"):
        method = getattr(ModelRepositoryExtension, name, None)
        expect(inspect.iscoroutinefunction(method) and params(method) == ["self", "model_name"],
               f"async ModelRepositoryExtension.{name}(self, model_name)")
    # predictor.ray_serving: ModelNotReady's REST handler (registered like the two above), and
    # DataPlane.ready, read by the REST and gRPC readiness endpoints, with the models it asks
    expect(len(params(getattr(kserve_rest, "model_not_ready_handler", None)) or ()) == 2
           and "model_not_ready_handler" in registered,
           "kserve.protocol.rest.server.model_not_ready_handler(request, exc), registered by RESTServer._add_exception_handlers")
    expect(inspect.iscoroutinefunction(getattr(DataPlane, "ready", None)) and params(DataPlane.ready) == ["self"]
           and isinstance(getattr(DataPlane, "model_registry", None), property), "async DataPlane.ready(self), DataPlane.model_registry")
    if missing:
        message = "this KServe no longer has what yolo_contract.serving patches: " + "; ".join(missing)
        logger.error(message)
        raise KServePatchError(message)


def _guard_v2_decode() -> None:
    """KServe decodes v2 REST bodies (binary extension included) before any model code runs, and a
    header that does not match its binary data (shape vs. byte count, a non-integer size, missing
    keys, BYTES length prefixes past the end) escapes as ValueError/TypeError/KeyError/struct.error
    -> 500. Those are client errors: answer 400."""
    from kserve.errors import InvalidInput
    from kserve.protocol.dataplane import DataPlane

    original = DataPlane.decode_inference_request
    if getattr(original, "_yolo_guarded", False):
        return

    def decode_inference_request(self, body, headers, model_name):
        try:
            return original(self, body, headers, model_name)
        except InvalidInput:
            raise  # KServe's own 400
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, struct.error) as e:
            logger.info("malformed v2 request (request id %s): %s", (headers or {}).get(REQUEST_ID_HEADER, "-"), type(e).__name__)
            raise BadRequest("malformed v2 inference request: tensor header and data do not match") from e

    decode_inference_request._yolo_guarded = True
    _patch(DataPlane, "decode_inference_request", decode_inference_request)


def install(app: FastAPI, component: str, limits: HttpLimits, rewrite=None, model_name: str = "model") -> None:
    """Install error mapping, the request middleware and the API page on KServe's FastAPI ``app``.

    Must run before ``ModelServer.start``. KServe registers its own handlers later; the only one
    it shares a key with is ``Exception``, which we replace at the source.
    """
    import kserve.protocol.rest.server as kserve_rest

    from yolo_contract import api_docs

    app.add_exception_handler(ServingError, _serving_error_handler(component))
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    _patch(kserve_rest, "generic_exception_handler", _internal_error_handler)
    _patch(kserve_rest, "inference_error_handler", _kserve_decode_error_handler)
    _guard_v2_decode()
    app.add_middleware(RequestMiddleware, component=component, limits=limits, rewrite=rewrite)
    api_docs.install(app, component, model_name)


class RequestMiddleware:
    """Pure ASGI middleware (no per-request threads or BaseHTTPMiddleware overhead)."""

    def __init__(self, app, component: str, limits: HttpLimits, rewrite=None):
        self.app = app
        self.component = component
        self.limits = limits
        #: optional ``rewrite(path, headers, body) -> (headers, body)`` for request bodies
        self.rewrite = rewrite
        #: body bytes received and held by the requests in progress (``limits.max_inflight_bytes``)
        self.inflight_bytes = 0

    async def _send_json(self, send, status: int, message: str, request_id: str, extra=()) -> None:
        body = orjson.dumps({"error": message})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (REQUEST_ID_HEADER.encode(), request_id.encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        headers = scope["headers"]
        request_id = ""
        content_length = None
        for k, v in headers:
            if k == b"x-request-id":
                request_id = v.decode("latin-1")[:128]
            elif k == b"content-length":
                try:
                    content_length = int(v)
                except ValueError:
                    content_length = -1
        extra_headers = []
        if not request_id:
            request_id = uuid.uuid4().hex
            extra_headers.append((b"x-request-id", request_id.encode()))
        if scope.get("query_string"):
            # KServe hands models only headers; the transformer reads parameters of raw-image
            # uploads from the query string through this header (a client-sent one is replaced).
            headers = [(k, v) for k, v in headers if k != QUERY_HEADER]
            extra_headers.append((QUERY_HEADER, scope["query_string"]))
        if extra_headers:
            scope = dict(scope, headers=[*headers, *extra_headers])
        path, method = scope.get("path", ""), scope.get("method", "GET")
        status_box = {"status": 0, "who": ""}
        held = 0

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_box["status"] = message["status"]
                message.setdefault("headers", [])
                who = {k: v for k, v in message["headers"] if k in _ACCESS_FIELDS}
                status_box["who"] = "".join(f"{label}={who[k].decode('latin-1')} "
                                            for k, label in _ACCESS_FIELDS.items() if k in who)
                message["headers"] = [
                    *[(k, v) for k, v in message["headers"] if k.lower() != b"x-request-id"],
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        async def reject(status: int, reason: str, message: str, extra=()) -> None:
            METRICS.reject(self.component, reason)
            status_box["status"] = status
            await self._send_json(send, status, message, request_id, extra)

        try:
            if path.startswith("/v2/repository"):
                return await reject(403, "repository_api", "the model repository API is disabled on this server")
            if method != "POST" and (path.endswith(":predict") or path.endswith(":explain") or path.endswith("/infer")):
                return await reject(405, "method", f"{method} is not allowed here; use POST", ((b"allow", b"POST"),))
            if path.endswith(":explain"):
                # KServe answers 501 after running preprocess (a whole image decode); no explainer here
                return await reject(404, "not_found", "this server has no explainer; use :predict")
            if _asks_for_version(path, scope.get("query_string", b"")):
                # KServe raises NotImplementedError -> 501; one unversioned model is served here
                return await reject(404, "not_found", "model versions are not served here; omit the version")
            if content_length is not None and (content_length < 0 or content_length > self.limits.max_body_bytes):
                return await reject(
                    413, "too_large", f"request body exceeds {self.limits.max_body_bytes} bytes"
                    if content_length > 0 else "invalid Content-Length"
                )
            budget = self.limits.max_inflight_bytes
            if budget and content_length and self.inflight_bytes + content_length > budget:
                return await reject(*_BUSY)
            if method in ("POST", "PUT", "PATCH"):
                body = await self._read_body(receive)
                if isinstance(body, int):
                    if body == 413:
                        return await reject(PayloadTooLarge.http_status, PayloadTooLarge.reason, f"request body exceeds {self.limits.max_body_bytes} bytes")
                    if body == 503:
                        return await reject(*_BUSY)
                    return await reject(RequestTimeout.http_status, RequestTimeout.reason, "request body not received in time", ((b"connection", b"close"),))
                if body is None:
                    return  # client disconnected
                held = len(body)  # counted in self.inflight_bytes until the answer is sent
                if self.rewrite is not None:
                    try:
                        new_headers, body = self.rewrite(path, scope["headers"], body)
                    except ServingError as e:
                        return await reject(e.http_status, e.reason, e.message)
                    if new_headers is not scope["headers"]:
                        scope = dict(scope, headers=new_headers)
                receive = _replay(body, receive)
            await self.app(scope, receive, send_wrapper)
        finally:
            self.inflight_bytes -= held
            access_logger.info(
                "%s %s %s %s%d %.1fms",
                request_id,
                method,
                path,
                status_box["who"],
                status_box["status"],
                (time.perf_counter() - started) * 1000,
            )

    async def _read_body(self, receive) -> bytes | int | None:
        """The whole body, 413 if over the cap, 503 over the in-flight byte budget, 408 past the
        deadline, None on disconnect. A body returned stays counted in ``inflight_bytes``."""
        chunks, size = [], 0
        budget = self.limits.max_inflight_bytes
        deadline = time.monotonic() + self.limits.body_read_timeout_seconds
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return 408
                try:
                    message = await asyncio.wait_for(receive(), timeout=remaining)
                except asyncio.TimeoutError:
                    return 408
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                self.inflight_bytes += len(chunk)
                if size > self.limits.max_body_bytes:
                    return 413
                if budget and self.inflight_bytes > budget:
                    return 503
                chunks.append(chunk)
                if not message.get("more_body", False):
                    size = 0  # handed over: the caller releases it
                    return b"".join(chunks)
        finally:
            self.inflight_bytes -= size


#: (status, reason, message, headers) of a request refused because too much body data is in flight.
_BUSY = (503, "overloaded", "server busy: too much request data in flight; retry later", ((b"retry-after", b"1"),))


def _asks_for_version(path: str, query: bytes) -> bool:
    """``/v2/models/<name>/versions/<v>/...`` or a non-empty ``model_version`` query parameter."""
    if path.startswith("/v2/models/") and "/versions/" in path:
        return True
    return bool(query) and any(k == "model_version" and v for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True))


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def _per_request_kserve_line(record: logging.LogRecord) -> bool:
    """Lines KServe logs per request, kept only with ``--verbose``: its gRPC interceptor's line per
    call ("grpc method: ..."), and the traceback its REST error handlers log for every client-facing
    error (404 unknown model, 503 not ready while a probe waits, 400 invalid input), whose status
    our access line already records. (Its handlers of server errors are replaced by ours.)"""
    if record.funcName == "intercept_service":
        return False
    return not (record.module == "errors" and record.funcName.endswith("_handler"))


def configure_logging(log_config_file: str | None = None, json_logs: bool = False, verbose: bool = False) -> None:
    """KServe's logging config plus our loggers (``predictor``, ``transformer``, ``yolo_kserve``).

    Quiet by default: one line per HTTP request at most (our access line, with its request id) and
    none per gRPC call. ``verbose`` keeps KServe's per-request timing lines (``kserve.trace``), its
    gRPC call lines and library warnings (FastAPI warns about KServe's ORJSONResponse on every
    request once image decoding has reset the warning registry).
    """
    from kserve.logging import KSERVE_LOGGER_DATE_FORMAT, KSERVE_LOGGER_FORMAT
    from kserve.logging import configure_logging as kserve_configure

    kserve_configure(log_config_file)
    handler = logging.StreamHandler()
    handler.setFormatter(
        _JsonFormatter() if json_logs else logging.Formatter(KSERVE_LOGGER_FORMAT, KSERVE_LOGGER_DATE_FORMAT)
    )
    for name in ("predictor", "transformer", "yolo_kserve"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.setLevel(logging.INFO)
        lg.propagate = False
    if json_logs:
        for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.error"):
            for h in logging.getLogger(name).handlers:
                h.setFormatter(_JsonFormatter())
    # our access line carries the request id; uvicorn's would duplicate it
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
        logging.getLogger("kserve").addFilter(_per_request_kserve_line)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"ORJSONResponse is deprecated")


def serve(model, component: str, *, http_port: int, grpc_port: int, enable_grpc: bool, grace_period: int,
          limits: HttpLimits, predictor_config=None, grpc_max_message_bytes: int | None = None, rewrite=None,
          configure=None, http_host: str = KSERVE_HTTP_HOST, grpc_host: str = KSERVE_GRPC_HOST) -> None:
    """Install the shared wiring on KServe's app and run ``ModelServer`` with one worker.

    ``model`` is one model or a list; ``configure(server)``, if given, runs just before the server
    starts (e.g. to register aliases). The REST and gRPC ports listen on ``http_host`` and
    ``grpc_host`` (KServe's every-interface defaults unless given)."""
    import kserve.model_server as kms
    from kserve import ModelServer
    from kserve.model_server import app

    check_kserve_patch_points()
    if grpc_max_message_bytes:
        # KServe's gRPC server reads these from its import-time argv parse, not from arguments
        for key in ("grpc_max_send_message_length", "grpc_max_receive_message_length"):
            if getattr(kms.args, key) == kms.MAX_GRPC_MESSAGE_LENGTH:
                setattr(kms.args, key, grpc_max_message_bytes)

    models = model if isinstance(model, list) else [model]
    install(app, component, limits, rewrite, model_name=models[0].name)
    bind_hosts(http_host, grpc_host)
    server = ModelServer(
        http_port=http_port,
        grpc_port=grpc_port,
        enable_grpc=enable_grpc,
        workers=1,
        grace_period=grace_period,
        predictor_config=predictor_config,
    )
    # the REST middleware refuses /v2/repository/*; this covers gRPC RepositoryModelLoad/Unload
    server.model_repository_extension = _ReadOnlyRepository(server.registered_models)
    from yolo_contract import model_metadata

    model_metadata.install(app, server.dataplane)
    if configure is not None:
        configure(server)
    server.start(models)


def _ReadOnlyRepository(registry):
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension

    class ReadOnlyRepository(ModelRepositoryExtension):
        """Lists models, but never loads or unloads them from outside: readiness must not lie."""

        async def load(self, model_name: str) -> None:
            raise Forbidden("the model repository API is disabled on this server")

        async def unload(self, model_name: str) -> None:
            raise Forbidden("the model repository API is disabled on this server")

    return ReadOnlyRepository(model_registry=registry)
