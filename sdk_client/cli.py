"""``yolo-kserve``: command-line entry point.

Each subcommand lives in its own module under :mod:`sdk_client.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``handler=<function(args) -> int>`` as a
default. Modules are discovered automatically, so adding a command (e.g. ``bench``) means adding
``sdk_client/commands/<name>.py`` with a ``register`` function; nothing here changes.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from . import commands

PROG = "yolo-kserve"


def _command_modules() -> list:
    mods = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        if callable(getattr(mod, "register", None)):
            mods.append(mod)
    return mods


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every discovered subcommand registered."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Client of the Darknet YOLO InferenceService on KServe: detect objects, "
        "manage canary rollouts.",
    )
    try:
        from importlib.metadata import version

        ver = version("yolo-kserve")
    except Exception:  # noqa: BLE001 -- not installed as a distribution
        ver = "unknown"
    parser.add_argument("--version", action="version", version=f"%(prog)s {ver}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in _command_modules():
        mod.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 ok, 1 failures, 2 usage errors)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help/--version (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `yolo-kserve detect ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
