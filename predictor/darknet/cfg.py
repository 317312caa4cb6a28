"""Reading a Darknet ``.cfg``: sections, typed option access, refusals with file and line.

Darknet's own reader (``read_cfg`` / ``option_find``) keeps the FIRST occurrence of a repeated key
and skips lines starting with ``#`` or ``;``; so does this one. Every option a layer reads is
recorded, so that options nobody read can be refused instead of silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yolo_contract.model_info import LINEAGES  # the lineages a ModelInfo may name

# Bounds on what a cfg may ask for (a hostile or corrupt cfg must not allocate gigabytes).
MAX_LAYERS = 1024
MAX_FILTERS = 16384
MAX_KERNEL = 15
MAX_CLASSES = 100_000
MAX_INPUT_SIZE = 4096
MAX_PARAMS = 500_000_000  # floats; full YOLOv4 has 64 M


class ModelFormatError(ValueError):
    """A model file is missing, malformed or inconsistent with the others."""


@dataclass
class Section:
    name: str  # lower-cased section type, e.g. "convolutional"
    lineno: int
    options: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # line of each option


def numeric_text(value: str) -> str:
    """A numeric option's text as Darknet reads it: ``atoi``/``atof`` stop at a trailing comment,
    so ``filters=40  #32`` and ``layers = -1, 271 ###S4`` (AlexeyAB's efficientnet-lite3 and
    cspx-p7 cfgs) mean 40 and -1,271. Only a ``#`` comment is accepted after the number."""
    return value.split("#", 1)[0].strip()


def read_sections(path: Path) -> list[Section]:
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError as e:
        raise ModelFormatError(f"{path}: cfg file not found") from e
    except UnicodeDecodeError as e:
        raise ModelFormatError(f"{path}: cfg is not UTF-8 text") from e
    sections: list[Section] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().replace("\x00", "")
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ModelFormatError(f"{path}:{lineno}: malformed section header {line[:40]!r}")
            sections.append(Section(line[1:-1].strip().lower(), lineno))
            if len(sections) > MAX_LAYERS + 1:
                raise ModelFormatError(f"{path}: more than {MAX_LAYERS} layers")
            continue
        if "=" not in line:
            raise ModelFormatError(f"{path}:{lineno}: expected key=value, got {line[:40]!r}")
        if not sections:
            raise ModelFormatError(f"{path}:{lineno}: option before the first [section]")
        key, value = (part.strip() for part in line.split("=", 1))
        section = sections[-1]
        if key not in section.options:  # Darknet's option_find returns the first occurrence
            section.options[key] = value
            section.lines[key] = lineno
    if not sections:
        raise ModelFormatError(f"{path}: empty cfg")
    return sections


class Options:
    """Typed access to one section's options, with file/line context in errors.

    Every accessor records the key as understood (:attr:`read`); ``index`` is the layer index
    (``None`` for ``[net]``) for resolving layer references.
    """

    def __init__(self, path: Path, section: Section, index: int | None = None):
        self.path, self.section, self.index = path, section, index
        self.name, self.lineno, self.opts = section.name, section.lineno, section.options
        self.read: set[str] = set()
        #: value-level signs that the cfg was written for AlexeyAB Darknet: (line, what)
        self.alexeyab_features: list[tuple[int, str]] = []

    def err(self, msg: str, key: str | None = None) -> ModelFormatError:
        line = self.section.lines.get(key, self.lineno) if key else self.lineno
        return ModelFormatError(f"{self.path}:{line}: [{self.name}] {msg}")

    def int(self, key: str, default: int | None = None, lo: int = 0, hi: int = 1 << 30) -> int:
        self.read.add(key)
        if key not in self.opts:
            if default is None:
                raise self.err(f"missing required option '{key}'")
            return default
        try:
            value = int(numeric_text(self.opts[key]))
        except ValueError as e:
            raise self.err(f"option '{key}' must be an integer, got {self.opts[key][:20]!r}", key) from e
        if not lo <= value <= hi:
            raise self.err(f"option '{key}'={value} outside [{lo}, {hi}]", key)
        return value

    def float(self, key: str, default: float, lo: float = float("-inf"), hi: float = float("inf")) -> float:
        self.read.add(key)
        try:
            value = float(numeric_text(self.opts[key])) if key in self.opts else float(default)
        except ValueError as e:
            raise self.err(f"option '{key}' must be a number", key) from e
        if not lo <= value <= hi:
            raise self.err(f"option '{key}'={value:g} outside [{lo:g}, {hi:g}]", key)
        return value

    def str(self, key: str, default: str) -> str:
        self.read.add(key)
        return self.opts.get(key, default).strip().lower()

    def ints(self, key: str) -> list[int]:
        self.read.add(key)
        raw = numeric_text(self.opts.get(key, ""))
        try:
            return [int(v) for v in raw.split(",") if v.strip()]
        except ValueError as e:
            raise self.err(f"option '{key}' must be a comma-separated list of integers", key) from e

    def floats(self, key: str) -> list[float]:
        self.read.add(key)
        raw = numeric_text(self.opts.get(key, ""))  # AlexeyAB stops reading anchors at '#'
        try:
            return [float(v) for v in raw.split(",") if v.strip()]
        except ValueError as e:
            raise self.err(f"option '{key}' must be a comma-separated list of numbers", key) from e

    def only(self, key: str, default: str) -> None:
        """An option Darknet reads that changes inference but is supported only at its default."""
        self.read.add(key)
        if key not in self.opts:
            return
        value = self.opts[key].strip()
        if default.lstrip("-").replace(".", "", 1).isdigit():  # a number: read as atoi/atof would
            value = numeric_text(value) or value
        same = value.lower() == default
        try:
            same = same or float(value) == float(default)
        except ValueError:
            pass
        if not same:
            raise self.err(f"option '{key}'={value[:20]} is not supported (only {key}={default})", key)

    def refuse(self, key: str) -> None:
        """An option that changes inference and is not supported at any value."""
        self.read.add(key)
        if key in self.opts:
            raise self.err(f"option '{key}' is not supported", key)

    def layer_ref(self, ref: int, key: str) -> int:
        """Darknet's layer reference: negative = relative to this layer, otherwise absolute."""
        assert self.index is not None
        j = self.index + ref if ref < 0 else ref
        if not 0 <= j < self.index:
            raise self.err(f"layer reference {ref} does not point to an earlier layer (layer {self.index})", key)
        return j

    def alexeyab(self, what: str, key: str) -> None:
        """Record a value only AlexeyAB Darknet understands (e.g. ``activation=mish``)."""
        self.alexeyab_features.append((self.section.lines.get(key, self.lineno), what))
