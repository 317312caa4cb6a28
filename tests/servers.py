"""Real predictor/transformer processes on free loopback ports, for component tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from yolo_devtools.stack import (  # noqa: F401
    ServerProcess,
    StackAddresses,
    free_ports,
    predictor_process,
    transformer_process,
)

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
IMAGES = DATA / "images"
IMAGE_NAMES = ("bird.jpg", "dog.jpg", "eagle.jpg", "horses.jpg", "person.jpg")
TINY_DIR = REPO / "models" / "yolov3-tiny"


def predictor(tmp: Path, model_dir: Path = TINY_DIR, *extra: str, ports: list[int] | None = None) -> ServerProcess:
    return predictor_process(model_dir, tmp, *extra, ports=ports)


def transformer(tmp: Path, predictor_grpc: str, *extra: str) -> ServerProcess:
    return transformer_process(predictor_grpc, tmp, *extra)


@dataclass
class Stack(StackAddresses):
    predictor: ServerProcess
    transformer: ServerProcess
