"""``yolo-kserve bench``: forwards to ``python -m yolo_devtools.bench`` (development tooling).

The benchmark imports the predictor and the transformer (raw engine, letterboxed tensors, a local
stack), so it is not part of the SDK; it runs here only when those are installed (``make venv``).
Every argument after ``bench`` goes to it unchanged (``yolo-kserve bench --help`` shows its help).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._devtools import needs_servers_message

NAME = "bench"
PROG = "yolo-kserve bench"


def register(subparsers: Any) -> argparse.ArgumentParser:
    # No option parsing here: prefix_chars that no option uses, so "--url" etc. pass through.
    p = subparsers.add_parser(
        NAME, add_help=False, prefix_chars="\x00",
        help="load-test a local stack (dev tooling: python -m yolo_devtools.bench)")
    p.add_argument("argv", nargs="*")
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    msg = needs_servers_message(PROG)
    if msg:
        print(msg, file=sys.stderr)
        return 2
    from yolo_devtools.bench import main  # noqa: PLC0415 -- dev tooling, loaded only here

    return main(list(args.argv), prog=PROG)


__all__ = ["register", "run"]
