"""A local predictor + transformer on free loopback ports (for ``yolo-kserve bench --start-stack``).

Both servers run as ``sys.executable -m predictor`` / ``-m transformer`` (the packages must be
installed, e.g. ``pip install -e '.[dev]'``), log to files in a temporary folder, and are stopped with
SIGTERM (then SIGKILL after a grace period) when the :class:`LocalStack` context exits, on errors and
on Ctrl-C alike. While the stack runs, SIGTERM to this process is turned into ``KeyboardInterrupt``
so the servers are stopped too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

import httpx

__all__ = ["LocalStack", "ServerProcess", "StackError", "free_ports", "predictor_process", "transformer_process"]

LOOPBACK = "127.0.0.1"


class StackError(RuntimeError):
    """A server of the local stack exited or did not become ready."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on the loopback interface right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServerProcess:
    """One ``python -m <module>`` server on loopback ports, logging to ``log_path``."""

    def __init__(self, module: str, args: Sequence[str], log_path: Path, http_port: int, grpc_port: int):
        self.module, self.args, self.log_path = module, list(args), Path(log_path)
        self.http_port, self.grpc_port = http_port, grpc_port
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def start(self) -> "ServerProcess":
        self._log = open(self.log_path, "ab")
        cmd = [sys.executable, "-m", self.module, "--http_port", str(self.http_port),
               "--grpc_port", str(self.grpc_port), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]

    def wait_ready(self, path: str, timeout: float = 60.0) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise StackError(f"{self.module} exited with status {self.proc.returncode}; "
                                     f"log {self.log_path}:\n{self.log_tail()}")
                try:
                    if client.get(self.url + path).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise StackError(f"{self.module} not ready after {timeout:.0f} s; log {self.log_path}:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit status."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return None if p is None else p.returncode


def predictor_process(model_dir: str | os.PathLike, log_dir: Path, *extra: str, model_name: str = "yolov3",
                      ports: Sequence[int] | None = None) -> ServerProcess:
    """A ``python -m predictor`` serving ``model_dir`` (not started), logging to ``log_dir``."""
    http_port, grpc_port = ports or free_ports(2)
    return ServerProcess(
        "predictor",
        ["--model_name", model_name, "--model_dir", str(model_dir), "--enable_latency_logging", "false", *extra],
        Path(log_dir) / f"predictor-{http_port}.log", http_port, grpc_port)


def transformer_process(predictor_grpc: str, log_dir: Path, *extra: str, model_name: str = "yolov3",
                        ports: Sequence[int] | None = None) -> ServerProcess:
    """A ``python -m transformer`` calling the predictor at ``predictor_grpc`` over grpc-v2 (not started)."""
    http_port, grpc_port = ports or free_ports(2)
    return ServerProcess(
        "transformer",
        ["--model_name", model_name, "--predictor_host", predictor_grpc, "--predictor_protocol", "grpc-v2",
         "--enable_latency_logging", "false", *extra],
        Path(log_dir) / f"transformer-{http_port}.log", http_port, grpc_port)


class LocalStack:
    """Predictor (grpc) + transformer (REST) serving ``model_dir`` on loopback.

    Example::

        with LocalStack("models/yolov3-tiny") as stack:
            stack.transformer_url   # http://127.0.0.1:<port>
            stack.predictor_grpc    # 127.0.0.1:<port>
    """

    def __init__(self, model_dir: str | os.PathLike, *, model_name: str = "yolov3",
                 predictor_args: Sequence[str] = (), transformer_args: Sequence[str] = (),
                 ready_timeout: float = 120.0, stop_grace: float = 35.0, log_dir: str | None = None):
        self.model_dir = str(model_dir)
        self.model_name = model_name
        self.predictor_args, self.transformer_args = list(predictor_args), list(transformer_args)
        self.ready_timeout, self.stop_grace = ready_timeout, stop_grace
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="yolo-kserve-bench-"))
        self.predictor: ServerProcess | None = None
        self.transformer: ServerProcess | None = None
        self._old_sigterm = None
        self._stopping = False
        self.failed = False

    @property
    def transformer_url(self) -> str:
        return self.transformer.url

    @property
    def predictor_grpc(self) -> str:
        return self.predictor.grpc_target

    def start(self) -> "LocalStack":
        self._install_sigterm()
        try:
            ports = free_ports(4)
            ready = f"/v2/models/{self.model_name}/ready"
            self.predictor = predictor_process(self.model_dir, self.log_dir, *self.predictor_args,
                                               model_name=self.model_name, ports=ports[:2])
            self.predictor.start()
            self.predictor.wait_ready(ready, self.ready_timeout)
            self.transformer = transformer_process(
                self.predictor.grpc_target, self.log_dir, "--enable_predictor_health_check", *self.transformer_args,
                model_name=self.model_name, ports=ports[2:])
            self.transformer.start()
            self.transformer.wait_ready(ready, self.ready_timeout)
        except BaseException:
            self.failed = True
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the transformer, then the predictor; idempotent. Logs are removed unless a server
        failed to start (their path is in the :class:`StackError`)."""
        self._stopping = True
        try:
            for server in (self.transformer, self.predictor):
                if server is not None:
                    server.stop(self.stop_grace)
        finally:
            self._restore_sigterm()
            if self._own_log_dir and not self.failed:
                shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # SIGTERM -> KeyboardInterrupt, so `kill <bench pid>` also stops the servers.
    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):  # noqa: ARG001
            if not self._stopping:  # a second SIGTERM must not cut the shutdown short
                raise KeyboardInterrupt

        self._old_sigterm = signal.signal(signal.SIGTERM, handler)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
