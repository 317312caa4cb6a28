"""Real predictor/transformer processes on free loopback ports, for component tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
IMAGES = DATA / "images"
IMAGE_NAMES = ("bird.jpg", "dog.jpg", "eagle.jpg", "horses.jpg", "person.jpg")
TINY_DIR = REPO / "models" / "yolov3-tiny"


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class ServerProcess:
    module: str
    args: list[str]
    log_path: Path
    http_port: int
    grpc_port: int
    env: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> "ServerProcess":
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--http_port", str(self.http_port), "--grpc_port", str(self.grpc_port), *self.args],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        return self

    def wait_ready(self, path: str, timeout: float = 60.0) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.module} not ready after {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


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
