"""``python -m yolo_devtools.bench`` (``make bench``): closed-loop load test of the transformer, the predictor and the raw engine.

Phases, in this order (each bounded in time and count, loopback or the given URL only):

1. fp32 GEMM floor: numpy float32 matmul (n=2048) on all cores for ``--gemm-seconds`` -> GFLOP/s;
   floor = model GFLOP (from the cfg in ``--model-dir``) / GFLOP/s.
2. ``--engine-only``: the raw engine in-process on the same ONNX graph the predictor builds
   (batch 1 latency, batch 1 and batch 8 img/s).
3. ``--start-stack``: start a local predictor + transformer on free loopback ports.
4. ``--predictor-only``: the predictor alone over gRPC (UINT8 ``1x3xSxS`` letterboxed tensor).
5. End to end: raw JPEG bodies to ``{url}/v1/models/{model}:predict`` (skip with ``--skip-e2e``).

For every concurrency level it reports req/s, img/s, p50/p90/p99 latency, errors by status and
the mean/p50 of every Server-Timing stage; then ratios against the raw engine and the floor, and the
speed-up over the tutorial baseline. ``--json`` writes the report (layout in
:mod:`yolo_devtools.benchmark`), ``--chart`` a PNG. Exit status: 0, 1 if a request failed or the stack
did not start, 2 for usage errors.

Development tooling, not part of the SDK: it imports the predictor and the transformer (installed
with ``pip install -e '.[dev]'``). ``yolo-kserve bench`` forwards here when they are installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from sdk_client.commands import argtypes

PROG = "python -m yolo_devtools.bench"

#: Kept in sync with ``predictor.engine.ENGINES`` / ``PRECISIONS`` (not imported: the CLI must start
#: without the predictor's dependencies).
ENGINES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")
DEFAULT_CONCURRENCY = "1,2,4,8"
DEFAULT_DURATION = 10.0
#: Longest a level may run when only ``--requests`` bounds it.
MAX_LEVEL_SECONDS = 300.0
_REPO = Path(__file__).resolve().parents[1]
_DEFAULT_IMAGE = Path("tests") / "data" / "images" / "dog.jpg"
_DEFAULT_MODEL_DIR = Path("models") / "yolov3-tiny"

EPILOG = """\
examples:
  python -m yolo_devtools.bench --start-stack --model-dir models/yolov3-tiny
  python -m yolo_devtools.bench --url http://127.0.0.1:8080 --duration 5 --concurrency 1,4 --json bench.json
  python -m yolo_devtools.bench --start-stack --engine-only --predictor-only --chart bench.png
  python -m yolo_devtools.bench --skip-e2e --engine-only --engine openvino --precision bf16

Latency percentiles are nearest-rank over successful requests; throughput is successful requests
over the level's wall time. The client runs on the same CPUs as a local stack: read the numbers
as relative, and take final ones on a quiet machine.
"""


# --------------------------------------------------------------------------------------------
# arguments


def _concurrency_list(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels must be >= 1, got {text!r}")
    if values[-1] > 256:
        raise argparse.ArgumentTypeError("concurrency levels above 256 are not supported")
    return values


def _non_negative_float(text: str) -> float:
    try:
        val = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= val < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return val


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Closed-loop load test: end to end through the transformer, optionally the\n"
        "predictor alone (gRPC) and the raw engine in-process, against the fp32 GEMM floor\n"
        "and the tutorial baseline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("target")
    g.add_argument("--url", default="http://127.0.0.1:8080",
                   help="transformer URL (default: %(default)s; ignored with --start-stack)")
    g.add_argument("--host", help="Host header, e.g. the Knative service hostname")
    g.add_argument("--model", default="yolov3", help="model name (default: %(default)s)")
    g.add_argument("--image", metavar="PATH",
                   help=f"JPEG sent in every request (default: {_DEFAULT_IMAGE} of the repository, "
                   "if present)")
    g.add_argument("--skip-e2e", action="store_true", help="do not measure through the transformer")

    g = p.add_argument_group("load")
    g.add_argument("-c", "--concurrency", type=_concurrency_list, default=_concurrency_list(DEFAULT_CONCURRENCY),
                   metavar="N,N,...", help=f"concurrency levels (default: {DEFAULT_CONCURRENCY})")
    g.add_argument("--duration", type=argtypes.positive_float, metavar="S",
                   help=f"seconds per level (default: {DEFAULT_DURATION:g} unless --requests is given)")
    g.add_argument("--requests", type=argtypes.positive_int, metavar="N",
                   help=f"requests per level (a level also stops after --duration, if given, or "
                   f"{MAX_LEVEL_SECONDS:g} s)")
    g.add_argument("--warmup", type=argtypes.non_negative_int, default=3, metavar="N",
                   help="sequential warm-up requests per target, not counted (default: %(default)s)")
    g.add_argument("--timeout", type=argtypes.positive_float, default=60.0, metavar="S",
                   help="per-request timeout (default: %(default)s)")
    g.add_argument("--pause", type=_non_negative_float, default=0.5, metavar="S",
                   help="idle gap between levels (default: %(default)s)")

    g = p.add_argument_group("local stack")
    g.add_argument("--start-stack", action="store_true",
                   help="start a predictor + transformer on free loopback ports, benchmark them, stop them")
    g.add_argument("--model-dir", metavar="DIR",
                   help=f"model (.cfg/.weights/.names) for --start-stack, --engine-only and the floor "
                   f"(default: {_DEFAULT_MODEL_DIR} of the repository, if present)")
    g.add_argument("--stack-threads", type=argtypes.non_negative_int, default=0, metavar="N",
                   help="inference threads of the started predictor (default: 0 = all CPUs)")

    g = p.add_argument_group("predictor and engine")
    g.add_argument("--predictor-only", action="store_true",
                   help="also measure the predictor alone over gRPC with the letterboxed tensor")
    g.add_argument("--predictor-grpc", metavar="HOST:PORT",
                   help="predictor gRPC address for --predictor-only (set by --start-stack)")
    g.add_argument("--engine-only", action="store_true",
                   help="also time the raw engine in-process on the same graph (batch 1 and 8)")
    g.add_argument("--engine", choices=ENGINES, default="onnxruntime",
                   help="engine for --engine-only and the started predictor (default: %(default)s)")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="precision for --engine-only and the started predictor (default: %(default)s; "
                   "bf16 needs openvino)")
    g.add_argument("--threads", type=argtypes.non_negative_int, default=0, metavar="N",
                   help="engine threads for --engine-only (default: 0 = all CPUs)")
    g.add_argument("--engine-seconds", type=argtypes.positive_float, default=3.0, metavar="S",
                   help="timed seconds per batch size for --engine-only (default: %(default)s)")
    g.add_argument("--input-size", type=argtypes.non_negative_int, default=0, metavar="N",
                   help="network input N x N, as the predictor's --input_size (default: 0 = the "
                   "cfg's width x height); the tensor is letterboxed or resized as the model asks")
    g.add_argument("--gemm-seconds", type=argtypes.positive_float, default=2.0, metavar="S",
                   help="seconds of fp32 GEMM for the floor (default: %(default)s)")

    g = p.add_argument_group("output")
    g.add_argument("--json", metavar="FILE", help="write the report as JSON")
    g.add_argument("--chart", metavar="FILE.png",
                   help="latency and throughput against concurrency (needs matplotlib)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


# --------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def _plain_argv() -> Iterator[None]:
    """Importing ``kserve`` parses ``sys.argv``; hide the bench flags from it."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def _find_default(rel: Path) -> Path | None:
    """``rel`` under the current folder, else under this checkout of the repository."""
    if rel.exists():
        return rel
    cand = _REPO / rel
    return cand if cand.exists() else None


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # other drive (Windows)
        return str(path)


def _model_info(model_dir: Path, size: int, gflops: float | None) -> dict[str, Any]:
    """The cfg's facts for the report: served size (``size`` N x N, or the cfg's when 0), the
    preprocessing the predictor would publish (``letterbox`` or ``resize``), GFLOP and the floor."""
    from predictor import darknet

    files = darknet.find_model_files(model_dir)
    network = darknet.parse_cfg(files.cfg)
    width, height = (size, size) if size else (network.width, network.height)
    gflop = network.flops(width, height) / 1e9
    floor_ms = gflop / gflops * 1000.0 if gflops else None
    return {
        "model_dir": _display(model_dir),
        "cfg": files.cfg.name,
        "lineage": network.lineage,
        "preprocess": "letterbox" if network.letter_box else "resize",
        "width": width,
        "height": height,
        "gflop": round(gflop, 4),
        "floor_ms": round(floor_ms, 3) if floor_ms else None,
        "floor_ips": round(1000.0 / floor_ms, 3) if floor_ms else None,
    }


def _letterboxed(data: bytes, width: int, height: int | None = None, mode: str = "letterbox"):
    """The UINT8 ``[1, 3, height, width]`` tensor the transformer sends for this image
    (``mode``: ``letterbox`` or ``resize``, as the model publishes)."""
    import numpy as np

    with _plain_argv():
        from transformer import geometry, imaging

    rgb = imaging.decode_image(data)
    x, _ = geometry.preprocess(rgb, width, height or width, mode, None, np.uint8)
    return np.ascontiguousarray(x[None])


def _raw_engine(model_dir: Path, kind: str, threads: int, precision: str):
    """The engine ``kind`` in this process on the ONNX graph the predictor builds for ``model_dir``."""
    from predictor import darknet
    from predictor.engine import create_engine
    from predictor.onnx_graph import build_onnx

    files = darknet.find_model_files(model_dir)
    network = darknet.load_weights(darknet.parse_cfg(files.cfg), files.weights)
    return create_engine(kind, build_onnx(network).SerializeToString(), threads, precision)


def _engine_input(tensor):
    """The float32 ``[0, 1]`` engine input for the UINT8 tensor the transformer sends (as the predictor scales it)."""
    import numpy as np

    return np.ascontiguousarray(tensor.astype(np.float32) / np.float32(255.0))


def _run_engine(args, model_dir: Path, tensor, log) -> dict[str, Any]:
    import numpy as np

    from predictor.engine import available_cpus

    from .benchmark import engine_batch_summary, time_runs

    threads = args.threads or available_cpus()
    engine = _raw_engine(model_dir, args.engine, threads, args.precision)
    x1 = _engine_input(tensor)
    x8 = np.ascontiguousarray(np.repeat(x1, 8, axis=0))
    log(f"engine: {args.engine} {args.precision}, {threads} threads, batch 1 for {args.engine_seconds:g} s")
    t1 = time_runs(lambda: engine.run(x1), seconds=args.engine_seconds, min_runs=10, warmup=3)
    log(f"engine: batch 8 for {args.engine_seconds:g} s")
    t8 = time_runs(lambda: engine.run(x8), seconds=args.engine_seconds, min_runs=3, warmup=1)
    del engine
    return {
        "engine": args.engine,
        "precision": args.precision,
        "threads": threads,
        "input_size": int(tensor.shape[3]),
        "input_height": int(tensor.shape[2]),
        "batch1": engine_batch_summary(t1, 1),
        "batch8": engine_batch_summary(t8, 8),
    }


def _level_bounds(args) -> tuple[float | None, int | None]:
    if args.requests is not None:
        return args.duration, args.requests
    return args.duration or DEFAULT_DURATION, None


async def _run_levels(make_send, warm_send, target: str, args, log) -> list[dict[str, Any]]:
    """Warm up, then one closed-loop run per concurrency level."""
    from .benchmark import closed_loop, level_summary

    if args.warmup:
        statuses = []
        for _ in range(args.warmup):
            try:
                ok, status, _ = await warm_send()
            except Exception as e:  # noqa: BLE001
                ok, status = False, f"{type(e).__name__}: {e}".splitlines()[0][:200]
            statuses.append(status)
            if not ok:
                log(f"warm-up request to {target} failed: {status}")
        if all(s not in ("200", "OK") for s in statuses):
            raise RuntimeError(f"no warm-up request to {target} succeeded ({statuses[-1]})")
    duration, requests = _level_bounds(args)
    levels = []
    for i, c in enumerate(args.concurrency):
        if i and args.pause:
            await asyncio.sleep(args.pause)
        bound = " or ".join(([f"{requests} requests"] if requests else []) + ([f"{duration:g} s"] if duration else []))
        log(f"{target}: concurrency {c}, {bound}")
        send = await make_send(c)
        try:
            samples, wall = await closed_loop(send.call, c, duration=duration, requests=requests,
                                              max_seconds=MAX_LEVEL_SECONDS)
        finally:
            await send.close()
        lv = level_summary(c, samples, wall)
        log(f"  {lv['ok']} ok, {lv['errors']} errors, {lv['throughput_rps']:.2f} req/s, "
            f"p50 {_fmt_ms(lv['latency_ms']['p50'])} ms")
        levels.append(lv)
    return levels


def _fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


class _HttpSender:
    def __init__(self, url: str, model: str, host: str | None, data: bytes, timeout: float, connections: int):
        import httpx

        from yolo_contract.observability import parse_server_timing

        self._parse = parse_server_timing
        headers = {"content-type": "image/jpeg"}
        if host:
            headers["host"] = host
        self._headers = headers
        self._data = data
        self._path = f"/v1/models/{model}:predict"
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"), timeout=timeout, trust_env=False,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))

    async def call(self) -> tuple[bool, str, dict[str, float]]:
        r = await self._client.post(self._path, content=self._data, headers=self._headers)
        stages = self._parse(r.headers.get("server-timing", "")) if r.status_code == 200 else {}
        return r.status_code == 200, str(r.status_code), stages

    async def close(self) -> None:
        await self._client.aclose()


class _GrpcSender:
    def __init__(self, target: str, model: str, tensor, timeout: float):
        with _plain_argv():
            from kserve.inference_client import InferenceGRPCClient
            from kserve.protocol.infer_type import InferInput, InferRequest

        from yolo_contract import tensors as T
        from yolo_contract.observability import parse_server_timing

        self._parse, self._T = parse_server_timing, T
        inp = InferInput(T.INPUT_IMAGES, list(tensor.shape), "UINT8")
        inp.set_data_from_numpy(tensor, binary_data=True)
        self._request = InferRequest(model_name=model, infer_inputs=[inp])
        mb = 64 * 1024 * 1024
        self._client = InferenceGRPCClient(
            target, timeout=timeout, retries=0,
            channel_args=[("grpc.max_send_message_length", mb), ("grpc.max_receive_message_length", mb),
                          ("grpc.enable_retries", 0)])

    async def call(self) -> tuple[bool, str, dict[str, float]]:
        resp = await self._client.infer(self._request)
        raw = (resp.parameters or {}).get(self._T.SERVER_TIMING_PARAMETER, "")
        return True, "OK", self._parse(str(self._T.plain_value(raw) or ""))

    async def close(self) -> None:
        await self._client.close()


async def _bench_http(args, url: str, data: bytes, log) -> list[dict[str, Any]]:
    async def make(c):
        return _HttpSender(url, args.model, args.host, data, args.timeout, c)

    warm = await make(1)
    try:
        return await _run_levels(make, warm.call, url, args, log)
    finally:
        await warm.close()


async def _bench_grpc(args, target: str, tensor, log) -> list[dict[str, Any]]:
    async def make(c):  # noqa: ARG001 -- one HTTP/2 channel carries every stream
        return _GrpcSender(target, args.model, tensor, args.timeout)

    warm = await make(1)
    try:
        return await _run_levels(make, warm.call, f"grpc://{target}", args, log)
    finally:
        await warm.close()


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    try:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # noqa: BLE001 -- only for the report
        return None, None


# --------------------------------------------------------------------------------------------
# run


def run(args: argparse.Namespace) -> int:
    from . import benchmark as B

    err = sys.stderr

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"bench: {msg}", file=err, flush=True)

    def usage(msg: str) -> int:
        print(f"{PROG}: error: {msg}", file=err)
        return 2

    if args.precision == "bf16" and args.engine != "openvino":
        return usage("--precision bf16 needs --engine openvino")
    if args.predictor_only and not (args.predictor_grpc or args.start_stack):
        return usage("--predictor-only needs --predictor-grpc HOST:PORT or --start-stack")
    if args.skip_e2e and not (args.predictor_only or args.engine_only):
        return usage("--skip-e2e leaves nothing to measure; add --predictor-only or --engine-only")
    if args.input_size % 32:
        return usage("--input-size must be 0 (the cfg's size) or a multiple of 32")
    image = Path(args.image) if args.image else _find_default(_DEFAULT_IMAGE)
    if image is None:
        return usage(f"--image is required ({_DEFAULT_IMAGE} not found)")
    try:
        data = image.read_bytes()
    except OSError as e:
        return usage(f"cannot read --image {image}: {e.strerror or e}")
    if not data:
        return usage(f"--image {image} is empty")
    model_dir = Path(args.model_dir) if args.model_dir else _find_default(_DEFAULT_MODEL_DIR)
    if model_dir is not None and not model_dir.is_dir():
        return usage(f"--model-dir {model_dir} is not a directory")
    if model_dir is None and (args.start_stack or args.engine_only):
        return usage(f"--start-stack and --engine-only need --model-dir ({_DEFAULT_MODEL_DIR} not found)")

    # kserve's gRPC client logs every failed call with a traceback; failures are counted here.
    logging.getLogger("kserve").setLevel(logging.CRITICAL + 1)
    width, height = _image_size(data)
    config: dict[str, Any] = {
        "url": None if args.start_stack else args.url,
        "host": args.host,
        "model": args.model,
        "image": _display(image),
        "image_bytes": len(data),
        "image_width": width,
        "image_height": height,
        "input_size": args.input_size,
        "concurrency": list(args.concurrency),
        "duration_s": _level_bounds(args)[0],
        "requests": args.requests,
        "warmup": args.warmup,
        "timeout_s": args.timeout,
        "start_stack": bool(args.start_stack),
        "model_dir": _display(model_dir) if model_dir else None,
        "predictor_grpc": None if args.start_stack else args.predictor_grpc,
        "engine": args.engine,
        "precision": args.precision,
        "threads": args.threads,
    }

    # 1. floor
    log(f"fp32 GEMM n=2048 for {args.gemm_seconds:g} s")
    gemm = B.measure_gemm_native(2048, args.gemm_seconds)
    model = None
    if model_dir is not None:
        try:
            model = _model_info(model_dir, args.input_size, gemm["gflops"])
        except Exception as e:  # noqa: BLE001 -- the floor is optional without --engine-only
            if args.engine_only or args.start_stack:
                print(f"{PROG}: error: {model_dir}: {e}", file=err)
                return 1
            log(f"no floor: cannot read the model in {model_dir}: {e}")
    tensor = None
    if args.engine_only or args.predictor_only:
        if model is not None:
            tensor = _letterboxed(data, model["width"], model["height"], model["preprocess"])
        elif args.input_size:
            tensor = _letterboxed(data, args.input_size)
        else:
            return usage("--predictor-only without --model-dir needs --input-size N (the served size)")

    # 2. raw engine
    engine = None
    if args.engine_only:
        engine = _run_engine(args, model_dir, tensor, log)

    # 3-5. servers
    e2e = predictor = None
    stack = None
    try:
        if args.start_stack:
            from .stack import LocalStack

            p_args = ["--engine", args.engine, "--precision", args.precision]
            if args.input_size:
                p_args += ["--input_size", str(args.input_size)]
            if args.stack_threads:
                p_args += ["--threads", str(args.stack_threads)]
            stack = LocalStack(model_dir, model_name=args.model, predictor_args=p_args)
            log(f"starting predictor + transformer on loopback ({model_dir})")
            stack.start()
            log(f"transformer {stack.transformer_url}, predictor grpc {stack.predictor_grpc}")
        url = stack.transformer_url if stack else args.url
        grpc_target = stack.predictor_grpc if stack else args.predictor_grpc
        if args.predictor_only:
            predictor = {"target": grpc_target, "protocol": "grpc-v2 UINT8 tensor",
                         "levels": asyncio.run(_bench_grpc(args, grpc_target, tensor, log))}
        if not args.skip_e2e:
            e2e = {"target": url, "protocol": "v1 raw JPEG",
                   "levels": asyncio.run(_bench_http(args, url, data, log))}
    except RuntimeError as e:  # StackError, failed warm-up
        print(f"{PROG}: error: {e}", file=err)
        return 1
    finally:
        if stack is not None:
            log("stopping the local stack")
            stack.stop()

    report = B.build_report(config=config, gemm=gemm, model=model, e2e=e2e, predictor=predictor,
                            engine=engine)
    print(B.format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, allow_nan=False)
            f.write("\n")
        log(f"wrote {args.json}")
    if args.chart:
        Path(args.chart).parent.mkdir(parents=True, exist_ok=True)
        if B.write_chart(report, args.chart):
            log(f"wrote {args.chart}")
        else:
            print(f"{PROG}: warning: matplotlib is not installed; no chart written", file=err)
    return 1 if report["errors"] else 0


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Parse ``argv`` and run; returns the exit status (2 for usage errors)."""
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main", "run"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
