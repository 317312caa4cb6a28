"""``yolo-kserve models``: the models a server serves, with what their metadata says.

The list comes from ``GET /v1/models``, each model's description from ``GET /v2/models/<name>``
(name, versions, platform, inputs, outputs and, when the server sends them, ``parameters`` with the
model's version, input size and classes) and its readiness from ``GET /v2/models/<name>/ready``.
Only what the server sends is shown; ``-`` marks what it does not say.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .detect import add_connection_arguments, default_url

NAME = "models"
PROG = "yolo-kserve models"


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME, help="list the served models (versions, input size, classes)",
        description="List the models the server serves, with their version, input size and "
        "classes when the server describes them.")
    p.add_argument("names", nargs="*", metavar="MODEL",
                   help="show these models in detail (default: a table of every model)")
    add_connection_arguments(p, protocols=False)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=run, model=None)
    return p


def _describe(client: Any, name: str, args: argparse.Namespace) -> dict[str, Any]:
    from ..client import DetectionClient
    from ..errors import DetectionError, ModelNotFoundError

    try:
        info = client.model_info(name)
    except ModelNotFoundError:
        try:
            available = client.models()
        except DetectionError:
            available = []
        return {"name": name, "error": str(ModelNotFoundError(name, client.url, available))}
    except DetectionError as e:
        return {"name": name, "error": str(e)}
    with DetectionClient(client.url, model=name, host=args.host, timeout=args.timeout,
                         retries=0) as probe:
        ready = probe.ready()
    size = info.input_size
    return {
        "name": info.name,
        "ready": ready,
        "version": info.version,
        "versions": list(info.versions),
        "platform": info.platform or None,
        "input_size": list(size) if size else None,
        "classes": info.classes,
        "inputs": list(info.inputs),
        "outputs": list(info.outputs),
        "parameters": info.parameters,
    }


def _dash(v: Any) -> str:
    return "-" if v in (None, "", []) else str(v)


def _classes_text(classes: list[str] | None, limit: int = 6) -> str:
    if not classes:
        return "-"
    shown = ", ".join(classes[:limit])
    return f"{len(classes)} ({shown}{', ...' if len(classes) > limit else ''})"


def format_table(models: list[dict[str, Any]]) -> str:
    rows = [("MODEL", "READY", "VERSION", "INPUT", "CLASSES")]
    for m in models:
        if "error" in m:
            rows.append((m["name"], "-", "-", "-", m["error"]))
            continue
        size = m["input_size"]
        rows.append((m["name"], "yes" if m["ready"] else "no", _dash(m["version"]),
                     f"{size[0]}x{size[1]}" if size else "-", _classes_text(m["classes"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4]
                     for r in rows)


def format_detail(m: dict[str, Any]) -> str:
    if "error" in m:
        return f"{m['name']}: {m['error']}"
    size = m["input_size"]
    lines = [f"{m['name']}",
             f"  ready:      {'yes' if m['ready'] else 'no'}",
             f"  version:    {_dash(m['version'])}" + (
                 f" (versions: {', '.join(m['versions'])})" if m["versions"] else ""),
             f"  platform:   {_dash(m['platform'])}",
             f"  input size: {f'{size[0]}x{size[1]}' if size else '-'}"]
    for kind in ("inputs", "outputs"):
        tensors = m[kind]
        text = ", ".join(f"{t.get('name')} {t.get('datatype')} {t.get('shape')}" for t in tensors)
        lines.append(f"  {kind + ':':<11} {text or '-'}")
    classes = m["classes"]
    lines.append(f"  classes:    {len(classes) if classes else '-'}")
    if classes:
        lines.extend(f"    {i:>3} {c}" for i, c in enumerate(classes))
    extra = {k: v for k, v in (m["parameters"] or {}).items() if k not in ("classes",)}
    for key, val in extra.items():
        lines.append(f"  {key + ':':<11} {json.dumps(val) if not isinstance(val, str) else val}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..client import DetectionClient
    from ..errors import DetectionError

    url = args.url or default_url("v1")
    with DetectionClient(url, host=args.host, timeout=args.timeout,
                         retries=args.retries) as client:
        try:
            names = args.names or client.models()
        except DetectionError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 1
        models = [_describe(client, n, args) for n in names]
    if args.json:
        print(json.dumps(models, indent=2))
    elif args.names:
        print("\n\n".join(format_detail(m) for m in models))
    else:
        print(format_table(models) if models else "(no models)")
    return 1 if any("error" in m for m in models) else 0


__all__ = ["register", "run", "format_table", "format_detail"]
