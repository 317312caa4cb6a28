"""``yolo-kserve detect``: detect objects in images, folders, globs, URLs and videos.

Before sending anything, the server is asked whether the model is ready: no server at the URL, an
unknown model (the models the server has are listed) or a model that stays unready is one clear
error, not one failure per image.

Outputs (all in input order; numbers rounded: pixels to 3 decimals, confidences to 6):

* JSON lines (``-o FILE`` or stdout): ``{"image", "source", ["frame", "time",] "width",
  "height", "detections": [...], "parameters": {...}}`` per image or video frame. ``source`` is
  the resolved path (or URL) that ``--resume`` matches on; ``parameters`` are the request's
  (``--resume`` refuses a file made with other ones).
* ``--save-txt DIR``: YOLO labels, ``class_id cx cy w h`` normalised, one ``.txt`` per image.
* ``--csv FILE``: one row per detection.
* ``--coco FILE``: a COCO *results* list (``pycocotools`` ``loadRes``): official category ids
  1..90 for the 80 COCO classes, else class index + 1.
* ``--save-annotated DIR``: copies with boxes and labels (labels never hide each other).
* stderr: one line per image (``dog.jpg: 2 cars, 1 dog, 17 ms``) and a final count.

An existing output file is never replaced silently: ``--resume`` continues it, ``--overwrite``
replaces it, and without either the command refuses. A replaced file is written to a temporary
file first and swapped in only when at least one image succeeded. Failed images are listed on
stderr and make the exit code 1; they are not written, so ``--resume`` retries them.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from . import argtypes

NAME = "detect"
PROG = "yolo-kserve detect"

EPILOG = """\
examples:
  yolo-kserve detect tests/data/images -o out.jsonl --save-annotated annotated/
  yolo-kserve detect 'photos/**/*.jpg' --conf 0.25 --classes person,car -o out.jsonl --resume
  yolo-kserve detect https://example.com/street.jpg --csv out.csv
  yolo-kserve detect clip.mp4 --fps 2 -o clip.jsonl --save-txt labels/
"""


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


def add_connection_arguments(parser: argparse.ArgumentParser, *, protocols: bool = True,
                             timeout_flag: str = "--timeout", url_help: str | None = None,
                             model_help: str | None = None) -> None:
    """``--url --model --host --protocol --timeout --retries`` (shared with other commands).

    ``timeout_flag`` renames ``--timeout`` where a command has another one; ``url_help`` and
    ``model_help`` describe ``--url``/``--model`` where their default comes from elsewhere (then
    ``--model`` defaults to ``None``)."""
    from ..client import DEFAULT_MODEL, DEFAULT_RETRIES, DEFAULT_TIMEOUT, PROTOCOLS

    g = parser.add_argument_group("connection")
    g.add_argument("--url", help=url_help or "transformer URL (default: $YOLO_KSERVE_URL, else "
                   "http://$INGRESS_HOST:$INGRESS_PORT, else http://127.0.0.1:8080"
                   + ("; host:port for gRPC, default 127.0.0.1:8081)" if protocols else ")"))
    g.add_argument("--model", default=None if model_help else DEFAULT_MODEL,
                   help=model_help or "model name (default: %(default)s)")
    g.add_argument("--host", default=os.environ.get("SERVICE_HOSTNAME") or None,
                   help="Host header, e.g. the Knative service hostname "
                   "(default: $SERVICE_HOSTNAME)")
    if protocols:
        g.add_argument("--protocol", choices=PROTOCOLS, default="v1",
                       help="inference protocol (default: %(default)s)")
    g.add_argument(timeout_flag, type=argtypes.positive_float, default=DEFAULT_TIMEOUT, metavar="S",
                   help="per-request timeout in seconds (default: %(default)s)")
    g.add_argument("--retries", type=argtypes.non_negative_int, default=DEFAULT_RETRIES, metavar="N",
                   help="retries on 503/504/connection errors (default: %(default)s)")
    if protocols:
        g.add_argument("--v2-binary", action="store_true",
                       help="v2 only: send images with the binary tensor extension instead of base64")


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        NAME,
        help="detect objects in images, folders, globs, URLs and videos",
        description="Detect objects and write one JSON line per image or video frame "
        "(in input order), optionally YOLO labels, CSV, COCO results and annotated copies.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="INPUT",
                   help="image or video files, folders (searched recursively), glob patterns, "
                   "http(s) URLs; folders and globs collect JPEG, PNG, WebP, GIF, BMP and videos")
    add_connection_arguments(p)
    g = p.add_argument_group("detection parameters")
    g.add_argument("--conf", type=argtypes.confidence, metavar="P",
                   help="confidence threshold, 0.001-1 (server default 0.5)")
    g.add_argument("--iou", type=argtypes.fraction, metavar="P",
                   help="NMS IoU threshold, 0-1 (server default 0.45)")
    g.add_argument("--classes", metavar="A,B", help="comma-separated class names to keep")
    g.add_argument("--max-det", type=argtypes.positive_int, metavar="N",
                   help="at most N detections per image")
    g.add_argument("--max-side", type=argtypes.positive_int, metavar="N",
                   help="downscale images whose longer side exceeds N pixels on the client "
                   "before upload: less to send, but the detections change slightly (boxes are "
                   "still given in the original image's pixels)")
    g.add_argument("--fps", type=argtypes.positive_float, metavar="F",
                   help="videos: frames per second to sample (default: every frame)")
    g.add_argument("--max-download-bytes", type=argtypes.positive_int, metavar="N",
                   help="URLs: largest download accepted (default: 40 MiB, the transformer's default body cap)")
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", metavar="FILE.jsonl",
                   help="write JSON lines here (default: stdout)")
    g.add_argument("--resume", action="store_true",
                   help="continue --output: skip images already in it (same parameters only)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (without it, existing files are refused)")
    g.add_argument("--save-txt", metavar="DIR",
                   help="write YOLO labels (class_id cx cy w h, normalised) to DIR/<stem>.txt")
    g.add_argument("--csv", metavar="FILE.csv", help="write one CSV row per detection")
    g.add_argument("--coco", metavar="FILE.json",
                   help="write a COCO results list (pycocotools loadRes)")
    g.add_argument("--coco-category-ids", choices=("auto", "coco91", "index+1", "index"),
                   default="auto",
                   help="COCO category ids: auto = official COCO ids (1..90) for the 80 COCO "
                   "classes, else class index + 1 (default: %(default)s)")
    g.add_argument("--save-annotated", metavar="DIR",
                   help="save copies with boxes and labels drawn in DIR (same file stems)")
    g.add_argument("-c", "--concurrency", type=argtypes.positive_int, default=4, metavar="N",
                   help="requests in flight (default: %(default)s)")
    g.add_argument("-q", "--quiet", action="store_true",
                   help="no per-image lines and no progress bar (errors and the total remain)")
    p.set_defaults(handler=run)
    return p


# --------------------------------------------------------------------------------------------
# records and resume


def request_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """What decides the results besides the image: recorded in every JSONL line."""
    classes = None
    if args.classes:
        classes = sorted({c.strip() for c in args.classes.split(",") if c.strip()})
    return {"model": args.model, "confidence": args.conf, "iou_threshold": args.iou,
            "class_filter": classes, "max_detections": args.max_det, "max_side": args.max_side}


def make_record(item: Any, result: Any, parameters: dict[str, Any]) -> dict[str, Any]:
    rec: dict[str, Any] = {"image": item.source.display, "source": item.source.key}
    if item.frame is not None:
        rec.update(frame=item.frame, time=item.time)
    rec.update(width=result.width, height=result.height,
               detections=[d.to_dict() for d in result.detections], parameters=parameters)
    return rec


def record_key(rec: dict[str, Any]) -> tuple[str, int | None]:
    """How ``--resume`` matches a record: its resolved source (older files: the image path,
    resolved now) and frame."""
    source = rec.get("source") or os.path.realpath(str(rec["image"]))
    frame = rec.get("frame")
    return (str(source), None if frame is None else int(frame))


def load_done(path: str) -> dict[tuple[str, int | None], dict]:
    """Records already in a JSONL file, by :func:`record_key`.

    Unparseable lines (e.g. a line cut short by a crash) are dropped and the file is rewritten
    without them, so that appending keeps it valid.
    """
    done: dict[tuple[str, int | None], dict] = {}
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
                int(rec["width"]), int(rec["height"])
                if not isinstance(rec["detections"], list):
                    raise TypeError
                key = record_key(rec)
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


def parameter_mismatch(done: dict, parameters: dict[str, Any]) -> tuple[int, str, int]:
    """(records made with other parameters, a description of the first difference, records that
    do not say which parameters made them)."""
    other, unknown, first = 0, 0, ""
    for rec in done.values():
        theirs = rec.get("parameters")
        if not isinstance(theirs, dict):
            unknown += 1
            continue
        diff = [f"{k} {_shown(theirs.get(k))} there, {_shown(v)} now"
                for k, v in parameters.items() if theirs.get(k) != v]
        if diff:
            other += 1
            first = first or "; ".join(diff)
    return other, first, unknown


def _shown(value: Any) -> str:
    return "the server default" if value is None else json.dumps(value)


# --------------------------------------------------------------------------------------------
# output files


def annotated_path(out_dir: str, item: Any) -> Path:
    """Where the annotated copy of ``item`` goes: ``DIR/<rel_dir>/<stem><suffix>`` (video frames:
    ``<stem>_<frame>.jpg``)."""
    suffix = item.source.suffix if item.frame is None else ".jpg"
    return Path(out_dir) / item.source.rel_dir / (item.stem + suffix)


def txt_path(out_dir: str, item: Any) -> Path:
    return Path(out_dir) / item.source.rel_dir / (item.stem + ".txt")


CSV_COLUMNS = ("image", "frame", "time", "image_width", "image_height", "class", "class_id",
               "confidence", "x", "y", "width", "height")


def write_csv(path: str, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for rec in records:
            for d in rec["detections"]:
                w.writerow([rec["image"], rec.get("frame", ""), rec.get("time", ""), rec["width"],
                            rec["height"], d["class"], d["class_id"], d["confidence"], d["x"],
                            d["y"], d["width"], d["height"]])


class _Output:
    """The JSONL destination: stdout, appended (``--resume``) or a temporary file swapped in at
    the end (only if something was written, so a failed run never empties an earlier file)."""

    def __init__(self, path: str | None, append: bool):
        self.path, self.written = path, 0
        self._tmp: str | None = None
        if path is None:
            self.stream: TextIO = sys.stdout
        elif append:
            self.stream = open(path, "a", encoding="utf-8")
        else:
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(dir=folder, prefix=".yolo-kserve-", suffix=".jsonl")
            self.stream = os.fdopen(fd, "w", encoding="utf-8")

    def write(self, rec: dict) -> None:
        self.stream.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self.stream.flush()
        self.written += 1

    def close(self) -> bool:
        """Finish; returns ``False`` when an existing file was kept because nothing succeeded."""
        if self.stream is sys.stdout:
            return True
        self.stream.close()
        if self._tmp is None:
            return True
        if self.written or not os.path.exists(self.path):
            os.replace(self._tmp, self.path)
            return True
        os.unlink(self._tmp)
        return False


def _refuse_existing(args: argparse.Namespace) -> str | None:
    if args.overwrite or args.resume:
        return None
    for flag, path in (("--output", args.output), ("--csv", args.csv), ("--coco", args.coco)):
        if path and os.path.exists(path) and os.path.getsize(path) > 0:
            hint = "--resume to continue it or " if flag == "--output" else ""
            return f"{flag} {path} already exists: use {hint}--overwrite to replace it"
    return None


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

    from .._pool import bounded_map
    from ..annotate import save_annotated
    from ..client import DetectionClient
    from ..errors import DetectionError
    from ..results import DetectionResult, coco_category_map, coco_results
    from ..sources import DEFAULT_MAX_DOWNLOAD_BYTES, collect, download, encode_frame, items

    err = sys.stderr

    def usage(msg: str) -> int:
        print(f"{PROG}: error: {msg}", file=err)
        return 2

    if args.resume and not args.output:
        return usage("--resume needs --output FILE.jsonl")
    if args.resume and args.overwrite:
        return usage("--resume and --overwrite exclude each other")
    refused = _refuse_existing(args)
    if refused:
        return usage(refused)
    sources, problems = collect(args.paths)
    for msg in problems:
        print(f"{PROG}: error: {msg}", file=err)
    if problems or not sources:
        return 2 if problems else usage("no inputs")

    parameters = request_parameters(args)
    done = load_done(args.output) if args.resume else {}
    other, diff, unknown = parameter_mismatch(done, parameters)
    if other:
        return usage(f"{args.output} holds {other} results made with other parameters ({diff}); "
                     "run with the same parameters, or use --overwrite to start again")
    if unknown:
        print(f"{PROG}: warning: {unknown} results in {args.output} do not record their "
              "parameters (older file); they are kept as they are", file=err)

    # kserve-style servers log every failed call; failures are reported here, once.
    logging.getLogger("grpc").setLevel(logging.CRITICAL + 1)
    url = args.url or default_url(args.protocol)
    client = DetectionClient(url, model=args.model, host=args.host, protocol=args.protocol,
                             timeout=args.timeout, retries=args.retries,
                             v2_binary=args.v2_binary)
    try:
        client.check_ready()
    except DetectionError as e:
        client.close()
        print(f"{PROG}: error: {e}", file=err)
        return 1
    classes = None
    if args.coco and args.coco_category_ids == "auto" and args.protocol != "grpc":
        try:
            classes = client.model_info().classes
        except DetectionError:
            classes = None

    detect_kwargs = dict(confidence=args.conf, iou_threshold=args.iou, class_filter=args.classes,
                         max_detections=args.max_det, max_side=args.max_side)
    max_download = args.max_download_bytes or DEFAULT_MAX_DOWNLOAD_BYTES

    def work(item: Any) -> Any:
        if item.key in done:
            return None
        t0 = time.perf_counter()
        if item.source.kind == "url":
            image: Any = download(item.source.display, timeout=args.timeout, max_bytes=max_download)
        elif item.frame is not None:
            image = encode_frame(item.pixels)
        else:
            image = item.source.display
        res = client.detect(image, **detect_kwargs)
        ms = (time.perf_counter() - t0) * 1000.0
        res.image = item.source.display
        if args.save_annotated:
            dest = annotated_path(args.save_annotated, item)
            if item.source.kind == "image" and dest.resolve() == Path(item.source.key):
                raise ValueError(f"refusing to overwrite the input with its annotated copy ({dest})")
            save_annotated(item.pixels if item.frame is not None else image, res, dest)
        return res, ms

    def guarded(item: Any) -> tuple[Any, Any]:
        try:
            return item, work(item)
        except Exception as e:  # noqa: BLE001 -- reported per image, the run goes on
            return item, e

    out = _Output(args.output, append=args.resume)
    records: list[dict] = []  # every record in input order (done ones included), for CSV/COCO
    ok = failed = skipped = 0
    # The bar only on a terminal (tqdm's disable=None); per-image lines are written above it.
    bar = tqdm(unit="img", desc="detect", file=err, disable=True if args.quiet else None,
               dynamic_ncols=True, leave=False)
    kept_old = False
    try:
        for _, (item, outcome) in bounded_map(guarded, items(sources, args.fps),
                                              args.concurrency, thread_name_prefix="detect"):
            bar.update(1)
            if outcome is None:
                skipped += 1
                records.append(done[item.key])
                continue
            if isinstance(outcome, Exception):
                failed += 1
                bar.write(f"FAILED {item.label}: {_short_error(outcome)}", file=err)
                continue
            res, ms = outcome
            rec = make_record(item, res, parameters)
            out.write(rec)
            records.append(rec)
            ok += 1
            if args.save_txt:
                dest = txt_path(args.save_txt, item)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(res.to_yolo_txt(), encoding="utf-8")
            if not args.quiet:
                bar.write(f"{item.label}: {res.summary()}, {ms:.0f} ms", file=err)
    finally:
        bar.close()
        client.close()
        kept_old = not out.close()

    if args.csv and records:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        write_csv(args.csv, records)
    if args.coco and records:
        results = [DetectionResult.from_dict(r) for r in records]
        mapping = args.coco_category_ids
        if mapping == "auto":
            mapping = coco_category_map(results, classes)
        Path(args.coco).parent.mkdir(parents=True, exist_ok=True)
        with open(args.coco, "w", encoding="utf-8") as f:
            json.dump(coco_results(results, category_map=mapping), f)

    summary = f"{ok} ok, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped (already in {args.output})"
    if kept_old:
        summary += f"; {args.output} left as it was (no image succeeded)"
    print(summary, file=err)
    return 1 if failed else 0


__all__ = ["register", "run", "load_done", "annotated_path", "default_url",
           "add_connection_arguments", "request_parameters", "make_record", "record_key"]
