"""Transformer settings: one frozen, typed object built from the command line.

The parser extends ``kserve.model_server.parser``; the KServe controller injects ``--model_name``,
``--predictor_host`` and ``--http_port`` into the transformer container. There is no input size or
preprocessing flag: the predictor's model decides them (its ModelInfo), the transformer follows.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class TransformerSettings:
    #: Served model name (KServe injects the InferenceService name); the predictor must serve it.
    #: The predictor's other model names (a model repository) are served too, once described.
    model_name: str = "yolov3"
    #: ``host:port`` of the predictor's gRPC endpoint (``:80`` is implied when no port is given,
    #: which is right for a Knative route).
    predictor_host: str = ""
    #: Only ``grpc-v2`` is supported (REST v2 costs ~200 ms per tensor in KServe 0.21).
    predictor_protocol: str = "grpc-v2"
    #: Seconds before a predictor call is answered 504; keep it below the ISVC ``timeout``.
    predictor_request_timeout_seconds: float = 30.0
    #: Transformer readiness also requires the predictor's model to be ready.
    enable_predictor_health_check: bool = False
    #: Largest request body in bytes (413 above): a 64 MP phone JPEG (~15-30 MB) raw, or ~30 MB
    #: as base64 JSON.
    max_body_bytes: int = 40 * 1024 * 1024
    #: Request body bytes received and held at once, all requests together; a request that would
    #: go over is answered 503 + Retry-After (bounds memory however many clients upload at once).
    max_inflight_bytes: int = 128 * 1024 * 1024
    #: Largest decoded image in pixels, checked from the header before decoding (413 above): every
    #: phone camera up to 64 MP sensors (9248 x 6936). Decoding costs ~10 bytes per pixel at peak.
    max_pixels: int = 70_000_000
    #: Images decoded at once (a dedicated thread pool): peak decode memory is about
    #: ``decode_threads * 10 B * max_pixels`` (2 x 700 MB at the defaults).
    decode_threads: int = 2
    #: Images per request at most (400 above).
    max_batch_images: int = 8
    #: Requests processed at once; more are answered 503 + Retry-After immediately.
    max_inflight: int = 32
    #: Seconds a client has to send its whole body (408 after).
    body_read_timeout_seconds: float = 15.0
    #: Tensor dtype on the wire to the predictor: ``uint8`` (4x smaller) or ``fp32`` (bit-exact).
    wire_dtype: str = "uint8"
    #: One JSON object per log line.
    json_logs: bool = False
    #: KServe's logging config file (yaml/json/ini), if any.
    log_config_file: str | None = None
    #: Also log KServe's per-request trace lines, gRPC call lines and library warnings.
    verbose: bool = False
    #: Addresses the REST and gRPC ports listen on: every interface (KServe's), as a pod needs;
    #: the local stack (``yolo-kserve serve``, ``make serve``) passes 127.0.0.1.
    http_host: str = "0.0.0.0"
    grpc_host: str = "[::]"
    http_port: int = 8080
    grpc_port: int = 8081
    enable_grpc: bool = True
    grace_period: int = 30
    #: Request header that picks a predictor revision by tag (``latest``/``prev``, aliases
    #: ``canary``/``stable``; see ``transformer.routing``); "" = requests are never routed by tag.
    revision_header: str = ""
    #: ``((tag, host), ...)`` the tagged requests go to; () = derived from ``predictor_host``.
    revision_hosts: tuple = ()


def build_parser() -> argparse.ArgumentParser:
    from yolo_contract.serving import component_parser

    d = TransformerSettings()
    p = component_parser(
        "python -m transformer",
        "KServe transformer: images in, Darknet-exact YOLO detections out (calls the predictor over grpc-v2).",
        d,
    )
    p.set_defaults(
        predictor_protocol=d.predictor_protocol,
        predictor_request_timeout_seconds=d.predictor_request_timeout_seconds,
    )
    p.add_argument("--max_pixels", type=int, default=d.max_pixels, help="largest image in pixels (413 above)")
    p.add_argument("--max_inflight_bytes", type=int, default=d.max_inflight_bytes,
                   help="request body bytes held at once, all requests together (503 above)")
    p.add_argument("--decode_threads", type=int, default=d.decode_threads, help="images decoded at once")
    p.add_argument("--max_batch_images", type=int, default=d.max_batch_images)
    p.add_argument("--max_inflight", type=int, default=d.max_inflight)
    p.add_argument("--body_read_timeout_seconds", type=float, default=d.body_read_timeout_seconds)
    p.add_argument("--wire_dtype", choices=("uint8", "fp32"), default=d.wire_dtype)
    p.add_argument("--revision_header", type=str.lower, default=d.revision_header, metavar="NAME",
                   help="route requests carrying this header (latest|prev, aliases canary|stable) to "
                   "that predictor revision's tag host, e.g. x-model-revision (default: off)")
    p.add_argument("--revision_hosts", type=_revision_hosts, default=d.revision_hosts, metavar="TAG=HOST,...",
                   help="tag hosts, e.g. prev=127.0.0.1:9001,latest=127.0.0.1:9002 (default: latest-/prev- "
                   "+ the predictor_host's first label, Knative's tag hosts)")
    return p


def _revision_hosts(text: str) -> tuple:
    from transformer.routing import parse_revision_hosts

    try:
        return parse_revision_hosts(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _check(s: TransformerSettings) -> None:
    if not s.predictor_host:
        raise ValueError("--predictor_host is required")
    if s.predictor_protocol != "grpc-v2":
        raise ValueError("--predictor_protocol must be grpc-v2 (the predictor contract is gRPC v2)")
    if min(s.max_body_bytes, s.max_pixels, s.max_batch_images, s.max_inflight, s.decode_threads) < 1:
        raise ValueError("limits must be >= 1")
    if s.max_inflight_bytes < s.max_body_bytes:
        raise ValueError("--max_inflight_bytes must be at least --max_body_bytes")
    if s.revision_hosts and not s.revision_header:
        raise ValueError("--revision_hosts needs --revision_header (the header that picks a revision)")
    if s.revision_header:
        from transformer.routing import revision_targets

        revision_targets(s.predictor_host, s.revision_hosts)  # derivable, or a clear error now


def parse_settings(argv: list[str] | None = None) -> TransformerSettings:
    """Settings from the command line; invalid values exit with argparse's usage error."""
    from yolo_contract.serving import parse_into

    p = build_parser()
    p.set_defaults(predictor_host="")
    return parse_into(TransformerSettings, p, argv, _check)
