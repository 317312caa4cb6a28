"""Real predictor/transformer processes on free loopback ports, for component tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdk_client.stack import ServerProcess, free_ports  # noqa: F401 (re-exported for tests)

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
IMAGES = DATA / "images"
IMAGE_NAMES = ("bird.jpg", "dog.jpg", "eagle.jpg", "horses.jpg", "person.jpg")
TINY_DIR = REPO / "models" / "yolov3-tiny"


def predictor(tmp: Path, model_dir: Path = TINY_DIR, *extra: str, ports: list[int] | None = None) -> ServerProcess:
    http_port, grpc_port = ports or free_ports(2)
    return ServerProcess(
        "predictor",
        ["--model_name", "yolov3", "--model_dir", str(model_dir), "--enable_latency_logging", "false", *extra],
        tmp / f"predictor-{http_port}.log",
        http_port,
        grpc_port,
    )


def transformer(tmp: Path, predictor_grpc: str, *extra: str) -> ServerProcess:
    http_port, grpc_port = free_ports(2)
    return ServerProcess(
        "transformer",
        ["--model_name", "yolov3", "--predictor_host", predictor_grpc, "--predictor_protocol", "grpc-v2",
         "--enable_latency_logging", "false", *extra],
        tmp / f"transformer-{http_port}.log",
        http_port,
        grpc_port,
    )


@dataclass
class Stack:
    predictor: ServerProcess
    transformer: ServerProcess

    @property
    def transformer_url(self) -> str:
        return self.transformer.url

    @property
    def transformer_grpc(self) -> str:
        return self.transformer.grpc_target

    @property
    def predictor_url(self) -> str:
        return self.predictor.url

    @property
    def predictor_grpc(self) -> str:
        return self.predictor.grpc_target
