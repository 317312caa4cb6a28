"""The one launcher of a local predictor + transformer: ``make serve``, ``yolo-kserve serve``,
``python -m yolo_devtools.bench --start-stack`` and the component tests all start servers here.

The two launch commands are built in exactly one place, :func:`predictor_process` and
:func:`transformer_process`; everything else (ports, readiness, logs, shutdown) is shared.

Both servers run as ``sys.executable -m predictor`` / ``-m transformer`` (the packages must be
installed, e.g. ``pip install -e '.[dev]'``), log to files, and are stopped with SIGTERM (then
SIGKILL after a grace period) when the :class:`LocalStack` context exits, on errors and on Ctrl-C
alike. While the stack runs, SIGTERM to this process is turned into ``KeyboardInterrupt`` so the
servers are stopped too. Before starting, every port is checked: a port that is taken (e.g. by a
first ``make serve``) is refused with one clear :class:`StackError` instead of a server traceback.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TextIO

import httpx

__all__ = ["LocalStack", "ServerProcess", "StackAddresses", "StackError", "StackPorts", "free_ports", "ports_in_use",
           "predictor_process", "transformer_process", "serve"]

LOOPBACK = "127.0.0.1"
#: Host values that mean every interface.
ANY_HOST = ("0.0.0.0", "::", "[::]", "")
DEFAULT_MODEL_NAME = "yolov3"


class StackError(RuntimeError):
    """A server of the local stack exited, did not become ready, or its port is taken."""


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


def ports_in_use(ports: Sequence[int]) -> list[int]:
    """The ports among ``ports`` that a server could not listen on now (another process has them).

    Binds as the servers do (all interfaces, ``SO_REUSEADDR`` like uvicorn and gRPC, so sockets in
    TIME_WAIT do not count) and also tries to connect on loopback (a listener on 127.0.0.1 only).
    """
    taken = []
    for port in ports:
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", port))
        except OSError:
            taken.append(port)
            continue
        finally:
            s.close()
        with socket.socket() as c:
            c.settimeout(0.5)
            if c.connect_ex((LOOPBACK, port)) == 0:
                taken.append(port)
    return taken


class ServerProcess:
    """One ``python -m <module>`` server listening on ``host`` (loopback unless told otherwise),
    logging to ``log_path``."""

    def __init__(self, module: str, args: Sequence[str], log_path: Path, http_port: int, grpc_port: int,
                 host: str = LOOPBACK):
        self.module, self.args, self.log_path = module, list(args), Path(log_path)
        self.http_port, self.grpc_port = http_port, grpc_port
        self.host = host
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def _connect_host(self) -> str:
        if self.host in ANY_HOST:
            return LOOPBACK
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def url(self) -> str:
        return f"http://{self._connect_host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self._connect_host}:{self.grpc_port}"

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--http_port", str(self.http_port),
                "--grpc_port", str(self.grpc_port), "--http_host", self.host, "--grpc_host", self.host, *self.args]

    def start(self) -> "ServerProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
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


# --- the two launch commands (the only place that spells them) -------------------------------


def predictor_process(model_dir: str | os.PathLike, log_dir: Path, *extra: str,
                      model_name: str = DEFAULT_MODEL_NAME,
                      ports: Sequence[int] | None = None, host: str = LOOPBACK) -> ServerProcess:
    """A ``python -m predictor`` serving ``model_dir`` (not started), logging to ``log_dir``."""
    http_port, grpc_port = ports or free_ports(2)
    return ServerProcess(
        "predictor",
        ["--model_name", model_name, "--model_dir", str(model_dir), *extra],
        Path(log_dir) / f"predictor-{http_port}.log", http_port, grpc_port, host)


def transformer_process(predictor_grpc: str, log_dir: Path, *extra: str,
                        model_name: str = DEFAULT_MODEL_NAME,
                        ports: Sequence[int] | None = None, host: str = LOOPBACK) -> ServerProcess:
    """A ``python -m transformer`` calling the predictor at ``predictor_grpc`` over grpc-v2 (not started)."""
    http_port, grpc_port = ports or free_ports(2)
    return ServerProcess(
        "transformer",
        ["--model_name", model_name, "--predictor_host", predictor_grpc, "--predictor_protocol", "grpc-v2", *extra],
        Path(log_dir) / f"transformer-{http_port}.log", http_port, grpc_port, host)


# --- the stack ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackPorts:
    """Ports of a local stack (``make serve``'s defaults: the transformer where a pod has it)."""

    http: int = 8080
    grpc: int = 8081
    predictor_http: int = 8085
    predictor_grpc: int = 8086

    @classmethod
    def free(cls) -> "StackPorts":
        return cls(*free_ports(4))

    def all(self) -> tuple[int, int, int, int]:
        return (self.http, self.grpc, self.predictor_http, self.predictor_grpc)


class StackAddresses:
    """Where a running predictor + transformer pair answers (needs ``predictor`` and
    ``transformer`` :class:`ServerProcess` attributes)."""

    predictor: ServerProcess | None
    transformer: ServerProcess | None

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


class LocalStack(StackAddresses):
    """Predictor (grpc) + transformer (REST and gRPC) serving ``model_dir``, listening on ``host``:
    loopback unless told otherwise (the servers have no authentication), e.g. ``host="0.0.0.0"``.

    Example::

        with LocalStack("models/yolov3-tiny") as stack:       # free ports
            stack.transformer_url   # http://127.0.0.1:<port>
            stack.predictor_grpc    # 127.0.0.1:<port>
    """

    def __init__(self, model_dir: str | os.PathLike, *, model_name: str = DEFAULT_MODEL_NAME,
                 ports: StackPorts | None = None,
                 predictor_args: Sequence[str] = (), transformer_args: Sequence[str] = (),
                 ready_timeout: float = 120.0, stop_grace: float = 35.0, log_dir: str | None = None,
                 host: str = LOOPBACK, verbose: bool = False):
        self.model_dir = str(model_dir)
        self.host = host
        self.verbose = verbose
        self.model_name = model_name
        self.ports = ports
        self.predictor_args, self.transformer_args = list(predictor_args), list(transformer_args)
        self.ready_timeout, self.stop_grace = ready_timeout, stop_grace
        self._own_log_dir = log_dir is None
        self._log_dir_arg = log_dir
        self.log_dir: Path | None = None
        self.predictor: ServerProcess | None = None
        self.transformer: ServerProcess | None = None
        self._old_sigterm = None
        self._stopping = False
        self.failed = False

    def check_ports(self) -> None:
        """Raise :class:`StackError` naming every fixed port that is already taken."""
        if self.ports is None:
            return
        taken = ports_in_use(self.ports.all())
        if taken:
            names = dict(zip(self.ports.all(), ("transformer REST", "transformer gRPC",
                                                "predictor REST", "predictor gRPC")))
            what = ", ".join(f"{p} ({names[p]})" for p in taken)
            hint = ""
            if self.ports.http in taken:
                hint = (f"; is a stack already serving http://{LOOPBACK}:{self.ports.http} "
                        "(another `make serve`)? Stop it, or choose other ports")
            raise StackError(f"port{'s' if len(taken) > 1 else ''} already in use: {what}{hint}")

    def start(self) -> "LocalStack":
        self.check_ports()
        self._install_sigterm()
        try:
            self.log_dir = Path(self._log_dir_arg or tempfile.mkdtemp(prefix="yolo-kserve-stack-"))
            ports = self.ports or StackPorts.free()
            ready = f"/v2/models/{self.model_name}/ready"
            verbose = ["--verbose"] if self.verbose else []
            self.predictor = predictor_process(self.model_dir, self.log_dir, *verbose, *self.predictor_args,
                                               model_name=self.model_name, host=self.host,
                                               ports=(ports.predictor_http, ports.predictor_grpc))
            self.predictor.start()
            self.predictor.wait_ready(ready, self.ready_timeout)
            self.transformer = transformer_process(
                self.predictor.grpc_target, self.log_dir, "--enable_predictor_health_check", *verbose,
                *self.transformer_args, model_name=self.model_name, host=self.host, ports=(ports.http, ports.grpc))
            self.transformer.start()
            self.transformer.wait_ready(ready, self.ready_timeout)
        except BaseException:
            self.failed = True
            self.stop()
            raise
        return self

    def exited(self) -> ServerProcess | None:
        """The first server that is no longer running, if any."""
        for server in (self.predictor, self.transformer):
            if server is not None and server.proc is not None and server.proc.poll() is not None:
                return server
        return None

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
            if self._own_log_dir and not self.failed and self.log_dir is not None:
                shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # SIGTERM -> KeyboardInterrupt, so `kill <pid>` also stops the servers.
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


def banner(stack: LocalStack) -> str:
    """What ``serve`` prints once both servers are ready."""
    t, p = stack.transformer, stack.predictor
    where = ("this machine only (--host to change)" if stack.host == LOOPBACK else
             f"{stack.host}: reachable from the network, with no authentication")
    return (
        f"\nyolo-kserve is serving {stack.model_dir} as model {stack.model_name!r} "
        "(Ctrl-C stops both servers):\n"
        f"  transformer REST  {t.url}   (gRPC {t.grpc_target})\n"
        f"  predictor         {p.url}   (gRPC {p.grpc_target})\n"
        f"  listening on      {where}\n"
        f"  API page          {t.url}/docs\n"
        f"  logs              {stack.log_dir}\n\n"
        "Try:\n"
        f"  yolo-kserve detect tests/data/images/dog.jpg --url {t.url}\n"
        f"  curl -s -X POST -H \"Content-Type: image/jpeg\" --data-binary @tests/data/images/dog.jpg \\\n"
        f"       \"{t.url}/v1/models/{stack.model_name}:predict?confidence=0.5\"\n"
    )


def serve(stack: LocalStack, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
          poll_interval: float = 0.5, prog: str = "serve") -> int:
    """Start ``stack``, print the banner, and run until Ctrl-C/SIGTERM or until a server exits.

    Returns the exit status: 0 after Ctrl-C/SIGTERM, 1 if the stack could not start (one line on
    ``err``, e.g. a taken port) or a server died. Ctrl-C works even when the shell started this
    process with SIGINT ignored (e.g. in the background).
    """
    try:
        stack.check_ports()
    except StackError as e:
        print(f"{prog}: error: {e}", file=err)
        return 1
    print(f"{prog}: starting the predictor, then the transformer ({stack.model_dir})...",
          file=err, flush=True)
    old_sigint = None
    if threading.current_thread() is threading.main_thread():
        old_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _serve(stack, out, err, poll_interval, prog)
    finally:
        if old_sigint is not None:
            signal.signal(signal.SIGINT, old_sigint)


def _serve(stack: LocalStack, out: TextIO, err: TextIO, poll_interval: float, prog: str) -> int:
    try:
        stack.start()
    except StackError as e:
        print(f"{prog}: error: {e}", file=err)
        return 1
    except KeyboardInterrupt:
        return 130
    print(banner(stack), file=out, flush=True)
    try:
        while True:
            dead = stack.exited()
            if dead is not None:
                print(f"{prog}: error: {dead.module} exited with status {dead.proc.returncode}; "
                      f"log {dead.log_path}:\n{dead.log_tail()}", file=err)
                stack.failed = True
                return 1
            time.sleep(poll_interval)
    except KeyboardInterrupt:
        print("\nstopping...", file=out, flush=True)
        return 0
    finally:
        stack.stop()
        print("stopped.", file=out, flush=True)
