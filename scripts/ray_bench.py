#!/usr/bin/env python3
"""Plain predictor vs the predictor on Ray Serve replicas (``--ray_replicas``), on loopback.

    python scripts/ray_bench.py --model-dir models/yolov3-tiny [--json bench-results/ray.json]

Each configuration runs as its own ``python -m predictor`` on free loopback ports (all started
first, then measured in rounds whose order rotates, so a shared host's background load falls on
all of them alike), over gRPC with the transformer's request (one letterboxed UINT8 image, the path a
transformer takes): start-up time (process start -> model ready), p50 latency at concurrency 1,
images/s at concurrency 8, memory of the whole process tree (the ModelServer plus every Ray
process it started; RSS and PSS), its CPU use while idle, and SIGTERM-to-exit time. Configurations give the same CPUs in
total: the plain predictor ``--threads C``; Ray with 1 replica of C CPUs; Ray with 2 replicas of
C/2 CPUs (C = CPUs available). Bounded load only; everything is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from predictor.engine import available_cpus  # noqa: E402
from yolo_devtools.bench import _GrpcSender, _letterboxed  # noqa: E402
from yolo_devtools.benchmark import closed_loop, level_summary  # noqa: E402
from yolo_devtools.stack import predictor_process  # noqa: E402

IMAGE = REPO / "tests" / "data" / "images" / "dog.jpg"


def configurations(cpus: int) -> dict[str, list[str]]:
    half = max(1, cpus // 2)
    return {
        "plain": ["--threads", str(cpus)],
        "ray-1": ["--ray_replicas", "1", "--ray_num_cpus", str(cpus)],
        "ray-2": ["--ray_replicas", "2", "--ray_num_cpus", str(half)],
    }


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its descendants (the ModelServer and every Ray process it started)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_memory(pid: int) -> tuple[int, int, int]:
    """(RSS bytes, PSS bytes, processes): RSS counts shared pages once per process, PSS splits
    them (closer to what a pod's memory cgroup is charged)."""
    rss = pss = 0
    procs = tree(pid)
    for p in procs:
        try:
            m = p.memory_full_info()
            rss, pss = rss + m.rss, pss + m.pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return rss, pss, len(procs)


def idle_cpu(pid: int, seconds: float) -> float:
    """CPU cores the process tree uses while no request arrives."""
    def total() -> float:
        out = 0.0
        for p in tree(pid):
            try:
                t = p.cpu_times()
                out += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        return out

    a = total()
    time.sleep(seconds)
    return (total() - a) / seconds


async def block(sender, concurrency: int, **bounds) -> tuple[list, float]:
    return await closed_loop(sender.call, concurrency, **bounds)


async def measure(targets: dict[str, str], tensor, rounds: int, requests: int, seconds: float) -> dict:
    """``rounds`` rounds; in each, every configuration gets a c=1 block then a c=8 block, in an
    order rotated per round, so background load on a shared host falls on all of them alike."""
    senders = {name: _GrpcSender(t, "yolov3", tensor, timeout=60) for name, t in targets.items()}
    c1 = {name: ([], 0.0) for name in targets}
    c8 = {name: ([], 0.0) for name in targets}
    try:
        for sender in senders.values():
            await block(sender, 1, requests=5)  # warm-up
        names = list(targets)
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                samples, wall = await block(senders[name], 1, requests=requests)
                c1[name] = (c1[name][0] + samples, c1[name][1] + wall)
                samples, wall = await block(senders[name], 8, duration=seconds)
                c8[name] = (c8[name][0] + samples, c8[name][1] + wall)
    finally:
        for sender in senders.values():
            await sender.close()
    return {name: {"c1": level_summary(1, *c1[name]), "c8": level_summary(8, *c8[name])} for name in targets}


def start(name: str, extra: list[str], model_dir: Path, log_dir: Path, timeout: float) -> tuple[object, dict]:
    server = predictor_process(model_dir, log_dir, *extra)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    server.start()
    server.wait_ready("/v2/models/yolov3/ready", timeout=timeout)
    row = {"config": name, "args": extra, "startup_s": round(time.perf_counter() - t0, 2),
           "loadavg_1m_at_start": round(load, 2)}
    print(f"{name}: ready in {row['startup_s']} s (1-min load average {load:.1f})", flush=True)
    return server, row


def finish(server, row: dict, levels: dict, idle_seconds: float) -> dict:
    rss, pss, procs = tree_memory(server.proc.pid)
    idle = idle_cpu(server.proc.pid, idle_seconds)
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    t1 = time.perf_counter()
    rc = server.stop(grace=120)
    stages = levels["c1"]["stages"]
    row.update({
        "p50_c1_ms": levels["c1"]["latency_ms"]["p50"],
        "inference_p50_c1_ms": (stages.get("predictor-inference") or {}).get("p50_ms"),
        "ray_hop_p50_c1_ms": (stages.get("predictor-ray") or {}).get("p50_ms"),
        "ips_c8": levels["c8"]["throughput_ips"],
        "errors": levels["c1"]["errors"] + levels["c8"]["errors"],
        "rss_mib": round(rss / 2**20),
        "pss_mib": round(pss / 2**20),
        "processes": procs,
        "idle_cpu_cores": round(idle, 3),
        "sigterm_to_exit_s": round(time.perf_counter() - t1, 2),
        "exit_status": rc,
        "metrics_have_stages": "yolo_stage_seconds_count" in metrics,
        "levels": levels,
    })
    print(f"{row['config']:6s} start {row['startup_s']:5.1f} s | p50 c=1 {row['p50_c1_ms']:6.1f} ms "
          f"(inference {row['inference_p50_c1_ms']}, ray hop {row['ray_hop_p50_c1_ms']}) | "
          f"c=8 {row['ips_c8']:5.1f} img/s | RSS {row['rss_mib']} MiB, PSS {row['pss_mib']} MiB in {procs} "
          f"processes | idle CPU {row['idle_cpu_cores']:.2f} | "
          f"exit {rc} after {row['sigterm_to_exit_s']} s", flush=True)
    return row


def table(rows: list[dict]) -> str:
    """Markdown; ratios are against the first row (measured in the same run)."""
    base = rows[0]

    def rel(r: dict, key: str) -> str:
        return "" if r is base or not base[key] else f" ({r[key] / base[key]:.2f}x)"

    out = ["| config | start-up s | p50 c=1 ms | Ray hop p50 ms | img/s c=8 | PSS MiB | RSS MiB | processes | idle CPU | SIGTERM->exit s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        hop = "-" if r["ray_hop_p50_c1_ms"] is None else f"{r['ray_hop_p50_c1_ms']:.1f}"
        out.append(f"| {r['config']} `{' '.join(r['args'])}` | {r['startup_s']:.1f} | {r['p50_c1_ms']:.1f}{rel(r, 'p50_c1_ms')} "
                   f"| {hop} | {r['ips_c8']:.1f}{rel(r, 'ips_c8')} | {r['pss_mib']}{rel(r, 'pss_mib')} | {r['rss_mib']} "
                   f"| {r['processes']} | {r['idle_cpu_cores']:.2f} | {r['sigterm_to_exit_s']:.1f} |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--model-dir", type=Path, default=REPO / "models" / "yolov3-tiny")
    p.add_argument("--configs", default="plain,ray-1,ray-2", help="comma-separated subset of plain, ray-1, ray-2")
    p.add_argument("--rounds", type=int, default=4, help="measurement rounds over all configurations")
    p.add_argument("--requests", type=int, default=20, help="sequential requests per round at concurrency 1")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per round at concurrency 8")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="idle CPU sampling per configuration")
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--json", type=Path, help="also write all numbers here")
    args = p.parse_args()
    cpus = available_cpus()
    configs = configurations(cpus)
    tensor = _letterboxed(IMAGE.read_bytes(), 416)
    log_dir = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    print(f"{cpus} CPUs available; yolov3-tiny 416, gRPC UINT8 [1,3,416,416]; logs in {log_dir}", flush=True)
    servers, rows = {}, {}
    try:
        for name in args.configs.split(","):  # started one at a time; the others idle meanwhile
            servers[name], rows[name] = start(name, configs[name], args.model_dir, log_dir, args.start_timeout)
        levels = asyncio.run(measure({n: s.grpc_target for n, s in servers.items()}, tensor,
                                     args.rounds, args.requests, args.seconds))
        rows = [finish(servers.pop(n), rows[n], levels[n], args.idle_seconds) for n in list(servers)]
    finally:
        for server in servers.values():
            server.stop(grace=120)
    print()
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpus": cpus, "rows": rows}, indent=2))
    ok = all(r["errors"] == 0 and r["exit_status"] == 0 for r in rows)
    if ok:
        shutil.rmtree(log_dir, ignore_errors=True)  # kept when something failed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
