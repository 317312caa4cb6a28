"""CLI subcommands of ``yolo-kserve``; each module defines ``register(subparsers)``.

``register`` adds a parser with ``subparsers.add_parser(NAME, help=...)`` and sets
``parser.set_defaults(handler=run)`` where ``run(args: argparse.Namespace) -> int`` returns the exit
code. :mod:`sdk_client.cli` discovers every public module here.
"""
