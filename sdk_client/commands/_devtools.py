"""Commands that need the servers (``serve``, ``bench``) load the dev tooling only when run.

``import sdk_client.cli`` must not import ``predictor``, ``transformer``, ``yolo_devtools`` or
``kserve``: a client-only install (``pip install 'yolo-kserve[client]'``) has none of their
dependencies. These commands check first and say what to install.
"""

from __future__ import annotations

import importlib.util

#: Top-level modules a local stack needs (servers, their runtime, the launcher).
SERVER_MODULES = ("kserve", "onnxruntime", "onnx", "PIL", "predictor", "transformer", "yolo_devtools")


def missing_server_modules() -> list[str]:
    """Modules of :data:`SERVER_MODULES` that cannot be imported here (none are imported)."""
    missing = []
    for name in SERVER_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def needs_servers_message(prog: str) -> str | None:
    """One line for stderr when the servers are not installed, else ``None``."""
    missing = missing_server_modules()
    if not missing:
        return None
    return (f"{prog}: error: this command runs the predictor and transformer locally, which are "
            f"not installed here (missing: {', '.join(missing)}); install them with "
            "pip install 'yolo-kserve[predictor,transformer]' (or make venv in a clone)")
