"""Locating a model's files and reading its ``.names``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from predictor.darknet.cfg import ModelFormatError


def read_names(names_path: str | os.PathLike, classes: int | None = None) -> list[str]:
    """Read a ``.names`` file (one class per line); with ``classes``, require that many names."""
    path = Path(names_path)
    try:
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError as e:
        raise ModelFormatError(f"{path}: names file not found") from e
    except UnicodeDecodeError as e:
        raise ModelFormatError(f"{path}: names file is not UTF-8 text") from e
    while names and not names[-1]:
        names.pop()
    if classes is not None and len(names) != classes:
        raise ModelFormatError(f"{path}: {len(names)} class names, but the cfg's detection layers have classes={classes}")
    return names


@dataclass(frozen=True)
class ModelFiles:
    cfg: Path
    weights: Path
    names: Path


def find_model_files(model_dir: str | os.PathLike) -> ModelFiles:
    """Locate exactly one ``.cfg``, ``.weights`` and ``.names`` in ``model_dir`` (or one level down,
    as a storage-initializer-unpacked archive often nests them)."""
    root = Path(model_dir)
    if not root.is_dir():
        raise ModelFormatError(f"{root}: model directory not found")
    for candidate in [root, *sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]:
        found = {ext: sorted(candidate.glob(f"*.{ext}")) for ext in ("cfg", "weights", "names")}
        if any(found.values()):
            break
    missing = [ext for ext, files in found.items() if not files]
    if missing:
        raise ModelFormatError(f"{candidate}: no .{' / .'.join(missing)} file in the model directory")
    many = {ext: files for ext, files in found.items() if len(files) > 1}
    if many:
        listing = "; ".join(f".{ext}: {', '.join(p.name for p in files)}" for ext, files in many.items())
        raise ModelFormatError(f"{candidate}: more than one model file of a kind ({listing})")
    return ModelFiles(found["cfg"][0], found["weights"][0], found["names"][0])
