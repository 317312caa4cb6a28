"""Load-test building blocks for ``python -m yolo_devtools.bench``: closed-loop runner, statistics, report.

Nothing here talks to a server or imports KServe; the command (:mod:`yolo_devtools.bench`)
supplies a ``send`` coroutine per target and this module measures, aggregates and formats.

Percentiles use the **nearest rank** (the smallest sample with at least ``q``% of the samples at or
below it), as in the tutorial baseline (``docs/tutorial-baseline.md`` §3, shared docs), so the
numbers compare directly. Latency statistics cover successful requests only; errors are counted
separately by status. Throughput is successful requests over the wall time of the level, in-flight
requests drained included.

JSON report (``--json``; ``schema`` = :data:`SCHEMA`). Times are milliseconds unless a key ends in
``_s``; a value is ``null`` when it was not measured::

    schema            "yolo-kserve-bench/1"
    created           ISO-8601 UTC timestamp
    config            {url, host, model, image, image_bytes, image_width, image_height,
                       input_size (as asked: 0 = the cfg's),
                       concurrency: [int], duration_s, requests, warmup, timeout_s, start_stack,
                       model_dir, predictor_grpc, engine, precision, threads}
    system            {cpus, platform, python, numpy}
    gemm              {n, seconds, iterations, gflops (p50 of the runs), gflops_best,
                       blas_core (OpenBLAS kernel picked at run time, or null)}
    model             {model_dir, cfg, lineage, preprocess, width, height, gflop, floor_ms,
                       floor_ips} | null
    e2e               {target, protocol: "v1 raw JPEG", levels: [LEVEL]} | null
    predictor         {target, protocol: "grpc-v2 UINT8 tensor", levels: [LEVEL]} | null
    engine            {engine, precision, threads, input_size (width), input_height,
                       batch1: {runs, latency_ms: LATENCY, ips},
                       batch8: {runs, latency_ms: LATENCY, ips}} | null
    ratios            {latency_concurrency, throughput_concurrency, predictor_inference_over_engine,
                       e2e_p50_over_predictor_p50, e2e_throughput_over_engine,
                       predictor_throughput_over_engine,
                       vs_floor: {engine_p50, predictor_inference_p50, predictor_p50, e2e_p50,
                                  engine_ips, predictor_ips, e2e_ips}}
    baseline          {source, description, levels: {"<c>": {rps_low, rps_high, p50_ms}},
                       ceiling_rps: [low, high],
                       speedup: {levels: {"<c>": {throughput_low, throughput_high, p50}},
                                 peak_throughput_low, peak_throughput_high}}
    errors            total failed requests over all levels

    LEVEL    {concurrency, requests, ok, errors, errors_by_status: {status: count}, wall_s,
              throughput_rps, throughput_ips, latency_ms: LATENCY, stages: {stage: STAGE}}
    LATENCY  {n, min, mean, p50, p90, p99, max}
    STAGE    {n, mean_ms, p50_ms}

``vs_floor`` latencies are measured / floor (1.0 = at the fp32 GEMM floor, higher is slower);
``vs_floor`` throughputs are measured img/s / floor img/s (1.0 = at the floor). ``throughput_low``
and ``throughput_high`` divide by the high and low ends of the tutorial's range; ``p50`` is the
tutorial's p50 over ours (above 1 = faster than the tutorial).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

__all__ = [
    "SCHEMA",
    "TUTORIAL_BASELINE",
    "Sample",
    "percentile",
    "latency_summary",
    "aggregate_stages",
    "level_summary",
    "closed_loop",
    "time_runs",
    "engine_batch_summary",
    "measure_gemm",
    "measure_gemm_native",
    "compute_ratios",
    "baseline_comparison",
    "build_report",
    "validate_report",
    "format_report",
    "write_chart",
]

SCHEMA = "yolo-kserve-bench/1"

#: The original tutorial pipeline on the same kind of 2-vCPU machine (web-server -> preprocessor ->
#: darknet yolov3-tiny under gunicorn+eventlet; dog.jpg as multipart, one new connection per request).
TUTORIAL_BASELINE: dict[str, Any] = {
    "source": "docs/tutorial-baseline.md (shared)",
    "description": "original tutorial pipeline (web-server -> preprocessor -> darknet yolov3-tiny, "
    "gunicorn + eventlet, 2 vCPU), dog.jpg as multipart, a new connection per request",
    "levels": {
        "1": {"rps_low": 2.42, "rps_high": 2.50, "p50_ms": 399.0},
        "4": {"rps_low": 2.60, "rps_high": 2.60, "p50_ms": 1535.6},
        "8": {"rps_low": 2.68, "rps_high": 2.68, "p50_ms": 2987.6},
    },
    "ceiling_rps": [2.60, 2.68],
}


# --------------------------------------------------------------------------------------------
# statistics


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` in [0, 100] of ``values``; ``None`` for no values."""
    xs = sorted(values)
    if not xs:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {q}")
    rank = max(1, math.ceil(q / 100.0 * len(xs)))
    return xs[rank - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """``{n, min, mean, p50, p90, p99, max}`` in milliseconds (``None`` for no samples)."""
    xs = list(seconds)
    return {
        "n": len(xs),
        "min": _ms(min(xs)) if xs else None,
        "mean": _ms(sum(xs) / len(xs)) if xs else None,
        "p50": _ms(percentile(xs, 50)),
        "p90": _ms(percentile(xs, 90)),
        "p99": _ms(percentile(xs, 99)),
        "max": _ms(max(xs)) if xs else None,
    }


def aggregate_stages(timings: Iterable[Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """Per Server-Timing stage (seconds in) -> ``{n, mean_ms, p50_ms}``, in first-seen order."""
    by_stage: dict[str, list[float]] = {}
    for t in timings:
        for name, sec in t.items():
            if isinstance(sec, (int, float)) and not isinstance(sec, bool) and math.isfinite(sec):
                by_stage.setdefault(name, []).append(float(sec))
    return {
        name: {"n": len(xs), "mean_ms": _ms(sum(xs) / len(xs)), "p50_ms": _ms(percentile(xs, 50))}
        for name, xs in by_stage.items()
    }


@dataclass
class Sample:
    """One request: wall latency (s), success, status key ("200", "503", "UNAVAILABLE",
    "ReadTimeout", ...) and the Server-Timing stages it reported (seconds)."""

    latency: float
    ok: bool
    status: str
    stages: dict[str, float] = field(default_factory=dict)


def level_summary(concurrency: int, samples: Sequence[Sample], wall_s: float,
                  images_per_request: int = 1) -> dict[str, Any]:
    """The ``LEVEL`` object of the report for one concurrency level."""
    ok = [s for s in samples if s.ok]
    errors: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            errors[s.status] = errors.get(s.status, 0) + 1
    rps = len(ok) / wall_s if wall_s > 0 else 0.0
    return {
        "concurrency": int(concurrency),
        "requests": len(samples),
        "ok": len(ok),
        "errors": len(samples) - len(ok),
        "errors_by_status": dict(sorted(errors.items())),
        "wall_s": round(wall_s, 3),
        "throughput_rps": round(rps, 3),
        "throughput_ips": round(rps * images_per_request, 3),
        "latency_ms": latency_summary([s.latency for s in ok]),
        "stages": aggregate_stages(s.stages for s in ok),
    }


# --------------------------------------------------------------------------------------------
# load generation

Send = Callable[[], Awaitable[tuple[bool, str, dict[str, float]]]]


def _status_of(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.aio.AioRpcError
        try:
            return str(code().name)
        except Exception:  # noqa: BLE001
            pass
    return type(exc).__name__


async def closed_loop(send: Send, concurrency: int, *, duration: float | None = None,
                      requests: int | None = None, max_seconds: float = 300.0,
                      clock: Callable[[], float] = time.perf_counter,
                      ) -> tuple[list[Sample], float]:
    """Run ``concurrency`` clients that each send the next request as soon as the last one ends.

    Stops starting requests after ``duration`` seconds, after ``requests`` requests in total, or
    after ``max_seconds`` (a safety bound), whichever comes first; requests in flight then finish.
    ``send`` returns ``(ok, status, stages)``; an exception counts as a failed request whose status
    is the gRPC code name or the exception type. Returns the samples and the wall time in seconds
    (by ``clock``, which tests replace).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    if duration is None and requests is None:
        raise ValueError("give a duration or a number of requests")
    start = clock()
    limit = min(duration, max_seconds) if duration is not None else max_seconds
    deadline = start + limit
    budget = [requests if requests is not None else -1]
    samples: list[Sample] = []

    async def client() -> None:
        while clock() < deadline:
            if budget[0] == 0:
                return
            if budget[0] > 0:
                budget[0] -= 1
            t0 = clock()
            try:
                ok, status, stages = await send()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 -- every failure is a data point
                ok, status, stages = False, _status_of(e), {}
            samples.append(Sample(clock() - t0, ok, status, dict(stages)))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return samples, clock() - start


def time_runs(fn: Callable[[], Any], *, seconds: float, min_runs: int, max_runs: int = 100_000,
              warmup: int = 2) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then until ``seconds`` have passed and at least
    ``min_runs`` calls were timed (at most ``max_runs``). Returns each call's seconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    t_start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - t_start < seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def engine_batch_summary(times: Sequence[float], batch: int) -> dict[str, Any]:
    """``{runs, latency_ms, ips}`` for engine calls of ``batch`` images each (``ips`` = images
    over the summed call time)."""
    total = sum(times)
    return {
        "runs": len(times),
        "latency_ms": latency_summary(times),
        "ips": round(batch * len(times) / total, 3) if total > 0 else None,
    }


# --------------------------------------------------------------------------------------------
# compute floor


def blas_core() -> str | None:
    """The kernel OpenBLAS picked at run time (e.g. ``"Haswell"``, ``"SkylakeX"``), if numpy's BLAS
    is a loaded OpenBLAS that says so; ``None`` otherwise. An older OpenBLAS may not know a new CPU
    and fall back to narrower kernels, which lowers the GEMM rate (and raises the floor)."""
    import ctypes

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = sorted({ln.split()[-1] for ln in f
                            if "openblas" in ln.lower() and ln.split()[-1].startswith("/")})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                    "openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(lib, sym, None)
            if fn is None:
                continue
            fn.restype = ctypes.c_char_p
            try:
                name = fn()
            except Exception:  # noqa: BLE001 -- informational only
                continue
            if name:
                return name.decode(errors="replace")
    return None


def measure_gemm(n: int = 2048, seconds: float = 2.0, min_runs: int = 3) -> dict[str, Any]:
    """fp32 ``n x n`` numpy matmul on every core numpy's BLAS uses, for about ``seconds``.

    Returns ``{n, seconds, iterations, gflops, gflops_best, blas_core}``; ``gflops`` is the median
    of the per-run rates (engines.md §2.1 uses the same measure as the peak).
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)  # warm-up: thread pool start, page faults
    flop = 2.0 * n**3
    rates: list[float] = []
    t_start = time.perf_counter()
    while len(rates) < min_runs or time.perf_counter() - t_start < seconds:
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        rates.append(flop / (time.perf_counter() - t0) / 1e9)
    return {
        "n": n,
        "seconds": round(time.perf_counter() - t_start, 3),
        "iterations": len(rates),
        "gflops": round(percentile(rates, 50), 2),
        "gflops_best": round(max(rates), 2),
        "blas_core": blas_core(),
    }


def measure_gemm_native(n: int = 2048, seconds: float = 2.0) -> dict[str, Any]:
    """:func:`measure_gemm` in a child process with ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE``
    removed, so OpenBLAS picks its kernel for this CPU (some hosts pin an older, narrower kernel for
    old OpenBLAS builds; that would understate the peak). Falls back to in-process on failure."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    code = "import json, sys; from yolo_devtools.benchmark import measure_gemm; print(json.dumps(measure_gemm(int(sys.argv[1]), float(sys.argv[2]))))"
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, str(n), str(seconds)], env=env, capture_output=True, text=True,
            timeout=seconds + 60, check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["native_kernel"] = True
        return result
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return measure_gemm(n, seconds)


# --------------------------------------------------------------------------------------------
# ratios and baseline


def _level(section: Mapping[str, Any] | None, concurrency: int | None) -> Mapping[str, Any] | None:
    if not section or concurrency is None:
        return None
    for lv in section.get("levels", []):
        if lv["concurrency"] == concurrency:
            return lv
    return None


def _div(a: float | None, b: float | None, digits: int = 3) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)


def _stage_p50(level: Mapping[str, Any] | None, stage: str) -> float | None:
    if not level:
        return None
    st = level.get("stages", {}).get(stage)
    return st.get("p50_ms") if st else None


def compute_ratios(e2e: Mapping[str, Any] | None, predictor: Mapping[str, Any] | None,
                   engine: Mapping[str, Any] | None, model: Mapping[str, Any] | None,
                   ) -> dict[str, Any]:
    """The ``ratios`` object: serving overheads relative to the raw engine and to the floor.

    Latency ratios use the lowest concurrency level (normally c=1), throughput ratios c=8 when
    measured, else the highest level.
    """
    levels = sorted({lv["concurrency"] for sec in (e2e, predictor) if sec for lv in sec["levels"]})
    c_lat = levels[0] if levels else None
    c_thr = (8 if 8 in levels else levels[-1]) if levels else None
    e_lat, p_lat = _level(e2e, c_lat), _level(predictor, c_lat)
    e_thr, p_thr = _level(e2e, c_thr), _level(predictor, c_thr)

    infer_p50 = _stage_p50(e_lat, "predictor-inference") or _stage_p50(p_lat, "predictor-inference")
    eng_p50 = engine["batch1"]["latency_ms"]["p50"] if engine else None
    eng_ips = engine["batch1"]["ips"] if engine else None
    e2e_p50 = e_lat["latency_ms"]["p50"] if e_lat else None
    pred_p50 = p_lat["latency_ms"]["p50"] if p_lat else None
    e2e_ips = e_thr["throughput_ips"] if e_thr else None
    pred_ips = p_thr["throughput_ips"] if p_thr else None
    floor_ms = model.get("floor_ms") if model else None
    floor_ips = model.get("floor_ips") if model else None
    return {
        "latency_concurrency": c_lat,
        "throughput_concurrency": c_thr,
        "predictor_inference_over_engine": _div(infer_p50, eng_p50),
        "e2e_p50_over_predictor_p50": _div(e2e_p50, pred_p50),
        "e2e_throughput_over_engine": _div(e2e_ips, eng_ips),
        "predictor_throughput_over_engine": _div(pred_ips, eng_ips),
        "vs_floor": {
            "engine_p50": _div(eng_p50, floor_ms),
            "predictor_inference_p50": _div(infer_p50, floor_ms),
            "predictor_p50": _div(pred_p50, floor_ms),
            "e2e_p50": _div(e2e_p50, floor_ms),
            "engine_ips": _div(eng_ips, floor_ips),
            "predictor_ips": _div(pred_ips, floor_ips),
            "e2e_ips": _div(e2e_ips, floor_ips),
        },
    }


def baseline_comparison(e2e: Mapping[str, Any] | None,
                        baseline: Mapping[str, Any] = TUTORIAL_BASELINE) -> dict[str, Any]:
    """The ``baseline`` object: the tutorial's numbers and our speed-up over them per level."""
    speed_levels: dict[str, Any] = {}
    best = None
    for lv in (e2e or {}).get("levels", []):
        rps = lv["throughput_rps"]
        best = rps if best is None else max(best, rps)
        ref = baseline["levels"].get(str(lv["concurrency"]))
        if ref:
            speed_levels[str(lv["concurrency"])] = {
                "throughput_low": _div(rps, ref["rps_high"], 2),
                "throughput_high": _div(rps, ref["rps_low"], 2),
                "p50": _div(ref["p50_ms"], lv["latency_ms"]["p50"], 2),
            }
    lo, hi = baseline["ceiling_rps"]
    return {
        "source": baseline["source"],
        "description": baseline["description"],
        "levels": {k: dict(v) for k, v in baseline["levels"].items()},
        "ceiling_rps": [lo, hi],
        "speedup": {
            "levels": speed_levels,
            "peak_throughput_low": _div(best, hi, 2),
            "peak_throughput_high": _div(best, lo, 2),
        },
    }


# --------------------------------------------------------------------------------------------
# report


def _system() -> dict[str, Any]:
    try:
        import numpy as np

        npv = np.__version__
    except ImportError:  # pragma: no cover
        npv = None
    try:
        from predictor.engine import available_cpus

        cpus = available_cpus()
    except ImportError:  # pragma: no cover -- client-only install
        import os

        cpus = os.cpu_count() or 1
    return {"cpus": cpus, "platform": platform.platform(), "python": sys.version.split()[0],
            "numpy": npv}


def build_report(*, config: Mapping[str, Any], gemm: Mapping[str, Any] | None,
                 model: Mapping[str, Any] | None, e2e: Mapping[str, Any] | None,
                 predictor: Mapping[str, Any] | None, engine: Mapping[str, Any] | None,
                 system: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the JSON report (layout in the module docstring)."""
    errors = sum(lv["errors"] for sec in (e2e, predictor) if sec for lv in sec["levels"])
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "config": dict(config),
        "system": dict(system) if system is not None else _system(),
        "gemm": dict(gemm) if gemm else None,
        "model": dict(model) if model else None,
        "e2e": e2e,
        "predictor": predictor,
        "engine": engine,
        "ratios": compute_ratios(e2e, predictor, engine, model),
        "baseline": baseline_comparison(e2e),
        "errors": errors,
    }


_TOP_KEYS = ("schema", "created", "config", "system", "gemm", "model", "e2e", "predictor",
             "engine", "ratios", "baseline", "errors")
_LEVEL_KEYS = ("concurrency", "requests", "ok", "errors", "errors_by_status", "wall_s",
               "throughput_rps", "throughput_ips", "latency_ms", "stages")
_LATENCY_KEYS = ("n", "min", "mean", "p50", "p90", "p99", "max")
_STAGE_KEYS = ("n", "mean_ms", "p50_ms")


def validate_report(report: Mapping[str, Any]) -> list[str]:
    """Problems with ``report``'s layout (empty when it matches the documented schema)."""
    problems: list[str] = []

    def need(obj: Any, keys: Sequence[str], where: str) -> bool:
        if not isinstance(obj, Mapping):
            problems.append(f"{where}: not an object")
            return False
        problems.extend(f"{where}: missing {k!r}" for k in keys if k not in obj)
        return True

    if not need(report, _TOP_KEYS, "report"):
        return problems
    if report.get("schema") != SCHEMA:
        problems.append(f"schema: expected {SCHEMA!r}")
    for name in ("e2e", "predictor"):
        sec = report.get(name)
        if sec is None:
            continue
        if need(sec, ("target", "protocol", "levels"), name):
            for i, lv in enumerate(sec.get("levels", [])):
                where = f"{name}.levels[{i}]"
                if need(lv, _LEVEL_KEYS, where):
                    need(lv.get("latency_ms"), _LATENCY_KEYS, where + ".latency_ms")
                    for st, v in (lv.get("stages") or {}).items():
                        need(v, _STAGE_KEYS, f"{where}.stages.{st}")
    eng = report.get("engine")
    if eng is not None and need(eng, ("engine", "precision", "threads", "batch1", "batch8"), "engine"):
        for b in ("batch1", "batch8"):
            if need(eng.get(b), ("runs", "latency_ms", "ips"), f"engine.{b}"):
                need(eng[b].get("latency_ms"), _LATENCY_KEYS, f"engine.{b}.latency_ms")
    if report.get("gemm") is not None:
        need(report["gemm"], ("n", "seconds", "iterations", "gflops", "gflops_best"), "gemm")
    if report.get("model") is not None:
        need(report["model"], ("model_dir", "cfg", "width", "height", "gflop", "floor_ms",
                               "floor_ips"), "model")
    if need(report.get("ratios"), ("latency_concurrency", "throughput_concurrency",
                                    "predictor_inference_over_engine", "e2e_p50_over_predictor_p50",
                                    "e2e_throughput_over_engine", "predictor_throughput_over_engine",
                                    "vs_floor"), "ratios"):
        need(report["ratios"].get("vs_floor"), ("engine_p50", "predictor_inference_p50",
                                                "predictor_p50", "e2e_p50", "engine_ips",
                                                "predictor_ips", "e2e_ips"), "ratios.vs_floor")
    if need(report.get("baseline"), ("source", "description", "levels", "ceiling_rps", "speedup"),
            "baseline"):
        need(report["baseline"].get("speedup"), ("levels", "peak_throughput_low",
                                                 "peak_throughput_high"), "baseline.speedup")
    return problems


# --------------------------------------------------------------------------------------------
# human output


def _f(x: float | None, fmt: str = ".1f", none: str = "-") -> str:
    return none if x is None else format(x, fmt)


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _xrange(lo: float | None, hi: float | None) -> str:
    return _x(lo) if lo == hi else f"{_x(lo)}-{_x(hi)}"


def _input_text(config: Mapping[str, Any], model: Mapping[str, Any] | None) -> str:
    """The network input as served: the model's size and preprocessing when the cfg was read."""
    if model and model.get("width"):
        mode = f" {model['preprocess']}" if model.get("preprocess") else ""
        return f"{model['width']}x{model['height']}{mode}"
    size = config.get("input_size")
    return f"{size}x{size}" if size else "the cfg's size"


def _levels_table(title: str, section: Mapping[str, Any]) -> list[str]:
    out = [f"{title}  [{section['target']}, {section['protocol']}]",
           f"  {'c':>3} {'requests':>8} {'errors':>6} {'wall s':>7} {'req/s':>7} {'img/s':>7} "
           f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}"]
    for lv in section["levels"]:
        lat = lv["latency_ms"]
        out.append(f"  {lv['concurrency']:>3} {lv['requests']:>8} {lv['errors']:>6} "
                   f"{lv['wall_s']:>7.1f} {lv['throughput_rps']:>7.2f} {lv['throughput_ips']:>7.2f} "
                   f"{_f(lat['p50']):>8} {_f(lat['p90']):>8} {_f(lat['p99']):>8}")
    errs = [f"c={lv['concurrency']}: " + ", ".join(f"{k} x{v}" for k, v in lv["errors_by_status"].items())
            for lv in section["levels"] if lv["errors"]]
    if errs:
        out.append("  errors by status: " + "; ".join(errs))
    stages: list[str] = []
    for lv in section["levels"]:
        for st in lv["stages"]:
            if st not in stages:
                stages.append(st)
    if stages:
        out.append("  stage, mean / p50 ms " + "".join(f"{'c=' + str(lv['concurrency']):>18}"
                                                   for lv in section["levels"]))
        for st in stages:
            cells = []
            for lv in section["levels"]:
                s = lv["stages"].get(st)
                cells.append(f"{(_f(s['mean_ms'], '.2f') + ' / ' + _f(s['p50_ms'], '.2f')) if s else '-':>18}")
            out.append(f"  {st:<21}" + "".join(cells))
    return out


def format_report(report: Mapping[str, Any]) -> str:
    """The human-readable summary printed on stdout."""
    cfg, lines = report["config"], []
    img = cfg.get("image")
    model_cfg = (report["model"] or {}).get("cfg")
    lines.append(f"yolo-kserve bench  model {cfg.get('model')}"
                 + (f" ({model_cfg})" if model_cfg else "") + f"  image {img} "
                 f"({cfg.get('image_width')}x{cfg.get('image_height')}, {cfg.get('image_bytes')} B), "
                 f"input {_input_text(cfg, report['model'])}  ({report['created']})")
    sysinfo, gemm, model = report["system"], report["gemm"], report["model"]
    floor = ""
    if model:
        floor = (f"; {model['gflop']:.3f} GFLOP at {model['width']}x{model['height']} -> floor "
                 f"{model['floor_ms']:.1f} ms ({model['floor_ips']:.1f} img/s)")
    if gemm:
        core = f" ({gemm['blas_core']} kernel)" if gemm.get("blas_core") else ""
        lines.append(f"host {sysinfo['cpus']} CPUs; fp32 GEMM n={gemm['n']}{core}: {gemm['gflops']:.1f} "
                     f"GFLOP/s (best {gemm['gflops_best']:.1f}, {gemm['iterations']} runs){floor}")
    lines.append("")
    if report["e2e"]:
        lines += _levels_table("end to end (transformer)", report["e2e"]) + [""]
    if report["predictor"]:
        lines += _levels_table("predictor alone", report["predictor"]) + [""]
    eng = report["engine"]
    if eng:
        b1, b8 = eng["batch1"], eng["batch8"]
        lines.append(f"raw engine in-process: {eng['engine']} {eng['precision']}, {eng['threads']} "
                     f"threads, {eng['input_size']}x{eng.get('input_height', eng['input_size'])}")
        lines.append(f"  batch 1: p50 {_f(b1['latency_ms']['p50'])} ms, p90 {_f(b1['latency_ms']['p90'])} ms, "
                     f"{_f(b1['ips'])} img/s ({b1['runs']} runs)")
        lines.append(f"  batch 8: p50 {_f(b8['latency_ms']['p50'])} ms per batch, {_f(b8['ips'])} img/s "
                     f"({b8['runs']} runs)")
        lines.append("")
    r = report["ratios"]
    vf = r["vs_floor"]
    lines.append(f"ratios (latency at c={r['latency_concurrency']}, throughput at "
                 f"c={r['throughput_concurrency']}):")
    lines.append(f"  predictor inference p50 / raw engine p50   {_x(r['predictor_inference_over_engine'])}")
    lines.append(f"  e2e p50 / predictor p50                    {_x(r['e2e_p50_over_predictor_p50'])}")
    lines.append(f"  e2e img/s / raw engine b1 img/s            {_x(r['e2e_throughput_over_engine'])}")
    lines.append(f"  predictor img/s / raw engine b1 img/s      {_x(r['predictor_throughput_over_engine'])}")
    lines.append("  vs floor (latency: measured/floor, throughput: measured/floor img/s):")
    lines.append(f"    engine p50 {_x(vf['engine_p50'])}, predictor inference p50 "
                 f"{_x(vf['predictor_inference_p50'])}, predictor p50 {_x(vf['predictor_p50'])}, "
                 f"e2e p50 {_x(vf['e2e_p50'])}")
    lines.append(f"    engine img/s {_x(vf['engine_ips'])}, predictor img/s {_x(vf['predictor_ips'])}, "
                 f"e2e img/s {_x(vf['e2e_ips'])}")
    lines.append("")
    base = report["baseline"]
    b1 = base["levels"]["1"]
    lines.append(f"vs the tutorial baseline ({base['source']}: c=1 {b1['rps_low']:.2f}-"
                 f"{b1['rps_high']:.2f} req/s, p50 {b1['p50_ms']:.0f} ms; c=4/8 "
                 f"{base['ceiling_rps'][0]:.2f}-{base['ceiling_rps'][1]:.2f} req/s):")
    sp = base["speedup"]
    for c, v in sp["levels"].items():
        lines.append(f"  c={c}: throughput {_xrange(v['throughput_low'], v['throughput_high'])}, "
                     f"p50 latency {_x(v['p50'])} faster")
    if sp["peak_throughput_low"] is not None:
        lines.append("  peak throughput vs the tutorial's ceiling: "
                     f"{_xrange(sp['peak_throughput_low'], sp['peak_throughput_high'])}")
    if report["errors"]:
        lines.append("")
        lines.append(f"{report['errors']} request(s) failed (see errors by status above)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# chart


def write_chart(report: Mapping[str, Any], path: str) -> bool:
    """Latency p50/p90 and throughput against concurrency as a PNG; ``False`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    measured: set[int] = set()
    for name, label, color in (("e2e", "end to end", "tab:blue"), ("predictor", "predictor (gRPC)", "tab:orange")):
        sec = report.get(name)
        if not sec or not sec["levels"]:
            continue
        cs = [lv["concurrency"] for lv in sec["levels"]]
        measured.update(cs)
        ax_lat.plot(cs, [lv["latency_ms"]["p50"] for lv in sec["levels"]], "o-", color=color,
                    label=f"{label} p50")
        ax_lat.plot(cs, [lv["latency_ms"]["p90"] for lv in sec["levels"]], "s--", color=color,
                    label=f"{label} p90")
        ax_thr.plot(cs, [lv["throughput_ips"] for lv in sec["levels"]], "o-", color=color, label=label)
    eng, model = report.get("engine"), report.get("model")
    if eng:
        ax_thr.axhline(eng["batch1"]["ips"], color="tab:green", ls=":", label="raw engine b1")
        ax_lat.axhline(eng["batch1"]["latency_ms"]["p50"], color="tab:green", ls=":", label="raw engine p50")
    if model and model.get("floor_ips"):
        ax_thr.axhline(model["floor_ips"], color="gray", ls="-.", label="fp32 GEMM floor")
        ax_lat.axhline(model["floor_ms"], color="gray", ls="-.", label="fp32 GEMM floor")
    base = report.get("baseline") or {}
    bl = base.get("levels") or {}
    cs = sorted(int(c) for c in bl if int(c) in measured)
    if cs:
        ax_thr.plot(cs, [bl[str(c)]["rps_high"] for c in cs], "x", color="tab:red", label="tutorial baseline")
    for ax, ylabel, title in ((ax_lat, "latency (ms)", "latency"), (ax_thr, "images / s", "throughput")):
        ax.set_xscale("log", base=2)
        if measured:
            ax.set_xticks(sorted(measured), [str(c) for c in sorted(measured)])
            ax.minorticks_off()
        ax.set_xlabel("concurrency")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax_thr.set_ylim(bottom=0)
    model_name = (model or {}).get("cfg") or report["config"].get("model")
    fig.suptitle(f"yolo-kserve bench ({model_name}, {report['created']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
