"""Model directories for trying and testing several models: ``python -m yolo_devtools.zoo`` (``make zoo``).

A model directory is what the predictor serves: one ``.cfg``, one ``.weights``, one ``.names``;
a folder of them is a model repository (``make serve MODEL_DIR=models/zoo``). Helpers here write
such directories from a cfg:

* :func:`cfg_at_size`: the cfg with only its ``[net]`` ``width``/``height`` lines changed.
* :func:`write_generated_model`: cfg + weights from :mod:`yolo_devtools.weightgen` (deterministic
  random weights, calibrated heads: the detections are meaningless as objects, but exactly what
  Darknet computes with the same file) + names.
* :func:`build_zoo`: ``models/zoo`` = the official yolov3-tiny, the same weights at 608x608, and
  yolov4-tiny with generated weights, served as ``yolov4-tiny-random-weights`` so that nobody
  mistakes its boxes for a model's.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path
from typing import Sequence

from yolo_devtools import weightgen

_REPO = Path(__file__).resolve().parents[1]
DATA = _REPO / "tests" / "data"
#: the served name of the generated-weights model of the zoo
RANDOM_YOLOV4_TINY = "yolov4-tiny-random-weights"
#: a hidden file marking a repository this module made (so that ``make zoo`` may rebuild it)
ZOO_MARKER = ".yolo-kserve-zoo"
_SIZE_LINE = re.compile(r"^(width|height)\s*=")


def cfg_at_size(text: str, width: int, height: int | None = None) -> str:
    """``text`` (a cfg) with the ``[net]`` section's ``width``/``height`` lines set; nothing else changes."""
    height = height or width
    out, in_net, seen = [], False, set()
    for line in text.splitlines(keepends=True):
        s = line.strip()
        if s.startswith("["):
            in_net = s.lower() in ("[net]", "[network]")
        elif in_net and _SIZE_LINE.match(s):
            key = s.split("=")[0].strip()
            seen.add(key)
            line = f"{key}={width if key == 'width' else height}\n"
        out.append(line)
    if seen != {"width", "height"}:
        raise ValueError("the cfg's [net] section has no width/height lines to change")
    return "".join(out)


def write_generated_model(dest: str | Path, cfg: str | Path, names: str | Path, *, seed: int = weightgen.DEFAULT_SEED,
                          minor: int = 2, size: int | None = None) -> dict:
    """Write ``dest/<stem>.cfg`` (at ``size`` if given), ``dest/<stem>.weights`` (generated for the
    cfg as written: the weights do not depend on the input size) and ``dest/<names file>``.

    Returns ``{"cfg", "weights", "names", "sha256", "size"}`` (paths and the weights' digest).
    """
    dest, cfg, names = Path(dest), Path(cfg), Path(names)
    dest.mkdir(parents=True, exist_ok=True)
    text = cfg.read_text(encoding="utf-8")
    cfg_out = dest / cfg.name
    cfg_out.write_text(cfg_at_size(text, size) if size else text, encoding="utf-8")
    weights = dest / f"{cfg.stem}.weights"
    nbytes, digest = weightgen.write_weights(weights, weightgen.net_from_cfg(cfg), seed, 0, minor)
    names_out = dest / names.name
    shutil.copyfile(names, names_out)
    return {"cfg": cfg_out, "weights": weights, "names": names_out, "sha256": digest, "size": nbytes}


def copy_model(src: str | Path, dest: str | Path, size: int | None = None) -> Path:
    """Copy a model directory (its one cfg, weights and names), the cfg at ``size`` if given."""
    from predictor.darknet import find_model_files

    files = find_model_files(src)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    text = files.cfg.read_text(encoding="utf-8")
    (dest / files.cfg.name).write_text(cfg_at_size(text, size) if size else text, encoding="utf-8")
    for f in (files.weights, files.names):
        shutil.copyfile(f, dest / f.name)
    return dest


def build_zoo(dest: str | Path, tiny_dir: str | Path, overwrite: bool = False) -> list[str]:
    """``dest`` as a model repository: ``yolov3-tiny`` (the official weights in ``tiny_dir``),
    ``yolov3-tiny-608`` (same weights, cfg at 608x608) and ``yolov4-tiny-random-weights``
    (tests/data/cfg/yolov4-tiny.cfg, generated weights). Returns the model names."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        if not (overwrite or (dest / ZOO_MARKER).exists()):  # a zoo made here is rebuilt; anything else is kept
            raise FileExistsError(f"{dest} exists, is not empty and was not made by this command (--overwrite replaces it)")
        shutil.rmtree(dest)
    copy_model(tiny_dir, dest / "yolov3-tiny")
    copy_model(tiny_dir, dest / "yolov3-tiny-608", size=608)
    random_dir = dest / RANDOM_YOLOV4_TINY
    write_generated_model(random_dir, DATA / "cfg" / "yolov4-tiny.cfg", DATA / "coco.names")
    (random_dir / "README.txt").write_text(
        "RANDOM WEIGHTS, for trying the serving plumbing only: yolo_devtools.weightgen output for\n"
        "yolov4-tiny.cfg (seed %d). The boxes mean nothing; they are what Darknet would compute with\n"
        "this file (tests/data/reference/yolov4-tiny).\n" % weightgen.DEFAULT_SEED)
    (dest / ZOO_MARKER).write_text("made by python -m yolo_devtools.zoo (make zoo); rebuilt by it\n")
    return sorted(p.name for p in dest.iterdir() if p.is_dir())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m yolo_devtools.zoo", description=build_zoo.__doc__.split("\n\n")[0])
    p.add_argument("--dest", default="models/zoo", help="the repository to write (default: %(default)s)")
    p.add_argument("--tiny-dir", default="models/yolov3-tiny",
                   help="the official yolov3-tiny, as `python -m predictor.fetch` leaves it (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty --dest")
    args = p.parse_args(argv)
    try:
        names = build_zoo(args.dest, args.tiny_dir, args.overwrite)
    except (FileExistsError, ValueError, OSError) as e:
        print(f"zoo: error: {e}", file=sys.stderr)
        return 1
    print(f"zoo: {args.dest}: {', '.join(names)} ({RANDOM_YOLOV4_TINY}: random weights, for the plumbing only)")
    print(f"serve them: make serve MODEL_DIR={args.dest}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
