"""``yolo-kserve serve``: the local predictor + transformer of ``make serve``, in the foreground.

The servers are started by :mod:`yolo_devtools.stack` (the one launcher, also used by ``make
serve``, the benchmark and the tests), which is loaded only when this command runs: it needs the
server packages (``pip install 'yolo-kserve[predictor,transformer]'``, or ``make venv``). Every
port is checked before anything starts; a taken port (e.g. a second ``make serve``) is refused with
one line naming it. Ctrl-C or SIGTERM stops both servers.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import argtypes
from ._devtools import needs_servers_message

NAME = "serve"
PROG = "yolo-kserve serve"
DEFAULT_MODEL_DIR = os.path.join("models", "yolov3-tiny")


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME, help="run a local predictor + transformer (the stack of `make serve`)",
        description="Run the predictor and the transformer locally, in the foreground, until "
        "Ctrl-C. Clients use the transformer's REST port (--port) or gRPC port (--grpc-port).",
        epilog="example: yolo-kserve serve --model-dir models/yolov3-tiny --port 8080")
    p.add_argument("--model-dir", default=DEFAULT_MODEL_DIR, metavar="DIR",
                   help="Darknet .cfg/.weights/.names (the predictor's --model_dir; "
                   "default: %(default)s, which `make model` fills)")
    p.add_argument("--model-name", default="yolov3", metavar="NAME",
                   help="model name in the URLs (default: %(default)s)")
    p.add_argument("--port", type=argtypes.port, default=8080, metavar="N",
                   help="transformer REST port (default: %(default)s)")
    p.add_argument("--grpc-port", type=argtypes.port, default=8081, metavar="N",
                   help="transformer gRPC port (default: %(default)s)")
    p.add_argument("--predictor-port", type=argtypes.port, default=8085, metavar="N",
                   help="predictor REST port (default: %(default)s)")
    p.add_argument("--predictor-grpc-port", type=argtypes.port, default=8086, metavar="N",
                   help="predictor gRPC port (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                   help="address all four ports listen on (default: %(default)s, this machine only; "
                   "0.0.0.0 exposes the servers, which have no authentication, to the network)")
    p.add_argument("--verbose", action="store_true",
                   help="servers also log KServe's per-request lines and library warnings")
    p.add_argument("--threads", type=argtypes.non_negative_int, default=0, metavar="N",
                   help="predictor inference threads (default: 0 = all CPUs available)")
    p.add_argument("--predictor-arg", action="append", default=[], metavar="ARG",
                   help="extra predictor flag, repeatable (e.g. --predictor-arg=--engine=openvino)")
    p.add_argument("--transformer-arg", action="append", default=[], metavar="ARG",
                   help="extra transformer flag, repeatable")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    err = sys.stderr
    msg = needs_servers_message(PROG)
    if msg:
        print(msg, file=err)
        return 2
    ports = (args.port, args.grpc_port, args.predictor_port, args.predictor_grpc_port)
    if len(set(ports)) != len(ports):
        print(f"{PROG}: error: the four ports must differ (got {', '.join(map(str, ports))})",
              file=err)
        return 2
    if not os.path.isdir(args.model_dir):
        print(f"{PROG}: error: --model-dir {args.model_dir} is not a directory "
              "(`make model` downloads yolov3-tiny to models/yolov3-tiny)", file=err)
        return 2

    from yolo_devtools.stack import LocalStack, StackPorts, serve  # noqa: PLC0415

    predictor_args = list(args.predictor_arg)
    if args.threads:
        predictor_args += ["--threads", str(args.threads)]
    stack = LocalStack(args.model_dir, model_name=args.model_name, ports=StackPorts(*ports),
                       predictor_args=predictor_args, transformer_args=args.transformer_arg,
                       host=args.host, verbose=args.verbose)
    return serve(stack, out=sys.stdout, err=sys.stderr, prog=PROG)


__all__ = ["register", "run"]
