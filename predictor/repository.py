"""Which models a ``--model_dir`` holds: one model, or a model repository (pure; no server imports).

* **One model**: the ``.cfg``, ``.weights`` and ``.names`` directly in ``model_dir``, or in its only
  model subdirectory (a storage-initializer-unpacked archive often nests them). Served under
  ``--model_name``, as before.
* **A model repository**: two or more subdirectories holding model files. Each is one model served
  under its directory name (letters, digits, ``.``, ``_``, ``-``). The injected ``--model_name`` is
  that model if a subdirectory has that name; otherwise it is an **alias** of the default model
  (``--default_model``, else the first name in sorted order).

Hidden directories and directories without any model file are ignored. A subdirectory with only some
of the files is a broken model: the whole repository is refused (nothing is half-served).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from predictor.darknet import ModelFiles, ModelFormatError, find_model_files

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MODEL_SUFFIXES = (".cfg", ".weights", ".names")


@dataclass(frozen=True)
class Repository:
    #: served name -> model files, in sorted order of names
    models: dict[str, ModelFiles]
    #: extra served name -> the model name it stands for (``--model_name`` in repository mode)
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """Every name served: the models, then the aliases."""
        return (*self.models, *self.aliases)


def has_model_files(path: Path, depth: int = 1) -> bool:
    """Model files in ``path`` or (``depth`` levels) below, hidden directories aside."""
    for p in path.iterdir():
        if p.suffix in _MODEL_SUFFIXES and p.is_file():
            return True
        if depth and p.is_dir() and not p.name.startswith(".") and has_model_files(p, depth - 1):
            return True
    return False


def discover(model_dir: str | os.PathLike, model_name: str, default_model: str = "") -> Repository:
    """The models under ``model_dir`` (see the module docstring).

    Raises:
        ModelFormatError: no model, a broken or badly named model, or an unknown ``default_model``.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise ModelFormatError(f"{root}: model directory not found")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    candidates = [p for p in subdirs if has_model_files(p)]
    if has_model_files(root, depth=0) or len(candidates) <= 1:
        if default_model:
            raise ModelFormatError(f"{root}: --default_model needs a model repository (several model subdirectories)")
        return Repository({model_name: find_model_files(root)})
    models: dict[str, ModelFiles] = {}
    for path in candidates:
        if not _NAME.match(path.name):
            raise ModelFormatError(
                f"{path}: a model's directory name is its served name: use letters, digits, '.', '_' and '-'"
            )
        models[path.name] = find_model_files(path)
    if default_model and default_model not in models:
        raise ModelFormatError(f"{root}: --default_model {default_model!r} is not one of {', '.join(models)}")
    aliases = {}
    if model_name not in models:
        aliases[model_name] = default_model or next(iter(models))
    return Repository(models, aliases)
