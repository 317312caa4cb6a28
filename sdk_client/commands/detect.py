"""``yolo-kserve detect``: run detection on files, folders and globs.

Writes one JSON line per image (``{"image": path, "width", "height", "detections": [...]}``) to
``--output`` or stdout, optionally a COCO detections file and annotated copies, with a progress bar
on stderr. Failed images are listed on stderr and make the exit code 1; they are not written to
the JSONL, so ``--resume`` retries them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, TextIO
from sdk_client.commands import argtypes

NAME = "detect"

#: File extensions picked up from folders (case-insensitive). Files named explicitly are always used.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_GLOB_CHARS = set("*?[")


# --------------------------------------------------------------------------------------------
# arguments


def default_url(protocol: str) -> str:
    """``$YOLO_KSERVE_URL``, else ``$INGRESS_HOST[:$INGRESS_PORT]``, else the local transformer."""
    env = os.environ.get("YOLO_KSERVE_URL")
    if env:
        return env
    ingress = os.environ.get("INGRESS_HOST")
    if ingress:
        port = os.environ.get("INGRESS_PORT")
        hostport = f"{ingress}:{port}" if port else ingress
        return hostport if protocol == "grpc" else f"http://{hostport}"
    return "127.0.0.1:8081" if protocol == "grpc" else "http://127.0.0.1:8080"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url --model --host --protocol --timeout --retries`` (shared with other commands)."""
    from ..client import DEFAULT_MODEL, DEFAULT_RETRIES, DEFAULT_TIMEOUT, PROTOCOLS

    g = parser.add_argument_group("connection")
    g.add_argument("--url", help="transformer URL (default: $YOLO_KSERVE_URL, else "
                   "http://$INGRESS_HOST:$INGRESS_PORT, else http://127.0.0.1:8080; "
                   "host:port for gRPC, default 127.0.0.1:8081)")
    g.add_argument("--model", default=DEFAULT_MODEL, help="model name (default: %(default)s)")
    g.add_argument("--host", default=os.environ.get("SERVICE_HOSTNAME") or None,
                   help="Host header, e.g. the Knative service hostname "
                   "(default: $SERVICE_HOSTNAME)")
    g.add_argument("--protocol", choices=PROTOCOLS, default="v1",
                   help="inference protocol (default: %(default)s)")
    g.add_argument("--timeout", type=argtypes.positive_float, default=DEFAULT_TIMEOUT, metavar="S",
                   help="per-request timeout in seconds (default: %(default)s)")
    g.add_argument("--retries", type=argtypes.non_negative_int, default=DEFAULT_RETRIES, metavar="N",
                   help="retries on 503/504/connection errors (default: %(default)s)")
    g.add_argument("--v2-binary", action="store_true",
                   help="v2 only: send images with the binary tensor extension instead of base64")


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME,
        help="detect objects in images (files, folders, globs)",
        description="Detect objects in images and write one JSON line per image.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders (searched recursively) or glob patterns")
    add_connection_arguments(p)
    g = p.add_argument_group("detection parameters")
    g.add_argument("--conf", type=argtypes.fraction, metavar="P", help="confidence threshold (server "
                   "default 0.5)")
    g.add_argument("--iou", type=argtypes.fraction, metavar="P", help="NMS IoU threshold (server "
                   "default 0.45)")
    g.add_argument("--classes", metavar="A,B", help="comma-separated class names to keep")
    g.add_argument("--max-det", type=argtypes.positive_int, metavar="N",
                   help="at most N detections per image")
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", metavar="FILE.jsonl",
                   help="write JSON lines here (default: stdout)")
    g.add_argument("--coco", metavar="FILE.json", help="also write a COCO detections file")
    g.add_argument("--coco-category-ids", choices=("index", "coco91"), default="index",
                   help="COCO category ids: the model's class index, or the official COCO ids "
                   "for the 80 COCO classes (default: %(default)s)")
    g.add_argument("--save-annotated", metavar="DIR",
                   help="save copies with boxes and labels drawn in DIR (same file stems)")
    g.add_argument("--resume", action="store_true",
                   help="skip images already in --output and append to it")
    g.add_argument("-c", "--concurrency", type=argtypes.positive_int, default=4, metavar="N",
                   help="requests in flight (default: %(default)s)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)
    return p


# --------------------------------------------------------------------------------------------
# inputs


def discover(args_paths: Iterable[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Expand CLI paths into ``(image_path, relative_dir)`` pairs, in order, without duplicates.

    ``relative_dir`` is the image's folder relative to a folder argument ('' for files and globs),
    used to mirror sub-folders under ``--save-annotated``. Returns the pairs and the arguments that
    matched nothing.
    """
    found: dict[str, str] = {}
    missing: list[str] = []
    for arg in args_paths:
        if os.path.isdir(arg):
            hits = []
            for root, dirs, files in os.walk(arg):
                dirs.sort()
                for f in sorted(files):
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        full = os.path.normpath(os.path.join(root, f))
                        hits.append((full, os.path.relpath(root, arg)))
            if not hits:
                missing.append(arg)
            for full, rel in hits:
                found.setdefault(full, "" if rel == "." else rel)
        elif os.path.isfile(arg):
            found.setdefault(os.path.normpath(arg), "")
        elif _GLOB_CHARS & set(arg):
            hits = [h for h in sorted(glob.glob(arg, recursive=True)) if os.path.isfile(h)]
            hits = [h for h in hits if h.lower().endswith(IMAGE_EXTENSIONS)] or hits
            if not hits:
                missing.append(arg)
            for h in hits:
                found.setdefault(os.path.normpath(h), "")
        else:
            missing.append(arg)
    return list(found.items()), missing


def load_done(path: str) -> dict[str, dict]:
    """Records already in a JSONL file, keyed by normalised image path.

    Unparseable lines (e.g. a line cut short by a crash) are dropped and the file is rewritten
    without them, so that appending keeps it valid.
    """
    done: dict[str, dict] = {}
    if not os.path.exists(path):
        return done
    good: list[str] = []
    bad = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = os.path.normpath(str(rec["image"]))
                int(rec["width"]), int(rec["height"])
                if not isinstance(rec["detections"], list):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            done[key] = rec
            good.append(line if line.endswith("\n") else line + "\n")
    if bad or (good and not _ends_with_newline(path)):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(good)
        os.replace(tmp, path)
    return done


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def annotated_path(out_dir: str, image: str, rel_dir: str) -> Path:
    """Where the annotated copy of ``image`` goes: ``DIR/<rel_dir>/<stem><suffix>``."""
    src = Path(image)
    suffix = src.suffix.lower() if src.suffix.lower() in IMAGE_EXTENSIONS else ".png"
    return Path(out_dir) / rel_dir / (src.stem + suffix)


# --------------------------------------------------------------------------------------------
# run


def _short_error(exc: BaseException) -> str:
    from ..errors import DetectionError

    if isinstance(exc, DetectionError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..annotate import save_annotated
    from ..client import DetectionClient
    from ..results import DetectionResult, coco_detections

    err = sys.stderr
    prog = "yolo-kserve detect"
    if args.resume and not args.output:
        print(f"{prog}: error: --resume needs --output FILE.jsonl", file=err)
        return 2
    items, missing = discover(args.paths)
    for m in missing:
        print(f"{prog}: error: no images found at {m!r}", file=err)
    if missing or not items:
        if not missing:
            print(f"{prog}: error: no images found", file=err)
        return 2

    done = load_done(args.output) if args.resume else {}
    todo = [(p, rel) for p, rel in items if p not in done]
    skipped = len(items) - len(todo)

    # kserve's gRPC client logs every failed call with a traceback; failures are reported here.
    logging.getLogger("kserve").setLevel(logging.CRITICAL + 1)

    url = args.url or default_url(args.protocol)
    params = dict(confidence=args.conf, iou_threshold=args.iou, class_filter=args.classes,
                  max_detections=args.max_det)
    client = DetectionClient(url, model=args.model, host=args.host, protocol=args.protocol,
                             timeout=args.timeout, retries=args.retries,
                             v2_binary=args.v2_binary)

    def work(path: str, rel: str) -> Any:
        res = client.detect(path, **params)
        if args.save_annotated:
            dest = annotated_path(args.save_annotated, path, rel)
            if dest.resolve() == Path(path).resolve():
                raise ValueError(f"refusing to overwrite the input with its annotated copy ({dest})")
            save_annotated(path, res, dest)
        return res

    out: TextIO
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        out = open(args.output, "a" if args.resume else "w", encoding="utf-8")
    else:
        out = sys.stdout

    results: dict[str, Any] = {}
    failures: list[tuple[str, str]] = []
    bar = tqdm(total=len(todo), unit="img", desc="detect", file=err, disable=args.quiet,
               dynamic_ncols=True)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.concurrency,
                                                 thread_name_prefix="detect")
    pending: dict[concurrent.futures.Future, str] = {}
    source = iter(todo)
    window = 2 * args.concurrency
    try:
        while True:
            while len(pending) < window:
                nxt = next(source, None)
                if nxt is None:
                    break
                pending[pool.submit(work, *nxt)] = nxt[0]
            if not pending:
                break
            finished, _ = concurrent.futures.wait(
                list(pending), return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in finished:
                path = pending.pop(fut)
                exc = fut.exception()
                if exc is None:
                    res = fut.result()
                    res.image = path
                    results[path] = res
                    out.write(json.dumps(res.to_record(), separators=(",", ":")) + "\n")
                    out.flush()
                else:
                    failures.append((path, _short_error(exc)))
                    bar.write(f"FAILED {path}: {_short_error(exc)}", file=err)
                    bar.set_postfix(failed=len(failures), refresh=False)
                bar.update(1)
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        client.close()
        if out is not sys.stdout:
            out.close()

    if args.coco:
        ordered = []
        for path, _rel in items:
            if path in results:
                ordered.append(results[path])
            elif path in done:
                ordered.append(DetectionResult.from_dict(done[path], image=path))
        coco = coco_detections(ordered, category_map=args.coco_category_ids)
        Path(args.coco).parent.mkdir(parents=True, exist_ok=True)
        with open(args.coco, "w", encoding="utf-8") as f:
            json.dump(coco, f)

    summary = f"{len(results)} ok, {len(failures)} failed"
    if skipped:
        summary += f", {skipped} skipped (already in {args.output})"
    print(summary, file=err)
    return 1 if failures else 0


__all__ = ["register", "run", "discover", "load_done", "annotated_path", "default_url",
           "add_connection_arguments", "IMAGE_EXTENSIONS"]
