"""CPU milliseconds per request of the transformer (and the predictor) through a real local stack.

    .venv/bin/python scripts/transformer_cpu.py                       # this checkout
    .venv/bin/python scripts/transformer_cpu.py --baseline HEAD~3     # before/after in one run

Starts the predictor + transformer on loopback (the bench tooling's ``LocalStack``, yolov3-tiny),
sends ``--warmup`` and then ``--requests`` sequential raw-JPEG POSTs (``/v1/models/<model>:predict``,
``dog.jpg`` by default) and reads each server process's CPU time (user + system, all threads, from
``/proc/<pid>/stat``) right before and after the timed requests, for ``--rounds`` rounds. Reported:
CPU-ms per request of each server (median over rounds), the client-side latency p50 and the p50 of
the transformer's Server-Timing stages (decode, letterbox, transport, ...).

``--baseline REF`` also starts a stack from ``git archive REF`` extracted into a temporary folder (its
native extension, if it declares one, is built there in place) and alternates the rounds between the
two stacks, so both see the same machine load; it prints the ratio. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from yolo_devtools.benchmark import percentile  # noqa: E402
from yolo_devtools.stack import LocalStack  # noqa: E402
from yolo_contract.observability import parse_server_timing  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is field 3
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 (utime) and 15 (stime)


class Target:
    """A running stack started from ``tree``'s packages, and the rounds measured on it."""

    def __init__(self, tree: Path, args):
        self.tree, self.args, self.rounds = tree, args, []
        old_cwd, old_pp = os.getcwd(), os.environ.get("PYTHONPATH")
        os.chdir(tree)  # `python -m transformer` puts the cwd first on sys.path ...
        os.environ["PYTHONPATH"] = str(tree)  # ... and so does PYTHONPATH (before the editable finder)
        try:
            self.stack = LocalStack(args.model_dir, model_name=args.model).start()
        finally:
            os.chdir(old_cwd)
            if old_pp is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = old_pp
        self.pids = {"transformer": self.stack.transformer.proc.pid, "predictor": self.stack.predictor.proc.pid}
        self.url = f"{self.stack.transformer_url}/v1/models/{args.model}:predict"
        self.client = httpx.Client(timeout=60.0, trust_env=False)

    def post(self, data: bytes) -> httpx.Response:
        r = self.client.post(self.url, content=data, headers={"content-type": "image/jpeg"})
        r.raise_for_status()
        return r

    def round(self, data: bytes) -> None:
        """``args.requests`` sequential requests; CPU time of both servers read around them."""
        n = self.args.requests
        latencies, stages = [], {}
        before = {k: cpu_seconds(p) for k, p in self.pids.items()}
        for _ in range(n):
            t0 = time.perf_counter()
            r = self.post(data)
            latencies.append(time.perf_counter() - t0)
            for name, sec in parse_server_timing(r.headers.get("server-timing", "")).items():
                stages.setdefault(name, []).append(sec)
        after = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.rounds.append({
            "cpu_ms_per_request": {k: 1000.0 * (after[k] - before[k]) / n for k in self.pids},
            "latency_p50_ms": 1000.0 * percentile(latencies, 50),
            "stages_p50_ms": {k: 1000.0 * percentile(v, 50) for k, v in stages.items()},
        })

    def close(self) -> None:
        self.client.close()
        self.stack.stop()

    def result(self) -> dict:
        def med(get):
            return round(statistics.median(get(r) for r in self.rounds), 3)

        stage_names = list(self.rounds[0]["stages_p50_ms"])
        return {
            "tree": str(self.tree),
            "rounds": self.rounds,
            "cpu_ms_per_request": {k: med(lambda r, k=k: r["cpu_ms_per_request"][k]) for k in self.pids},
            "latency_p50_ms": med(lambda r: r["latency_p50_ms"]),
            "stages_p50_ms": {k: med(lambda r, k=k: r["stages_p50_ms"].get(k, float("nan"))) for k in stage_names},
        }


def measure(trees: dict[str, Path], args, data: bytes) -> dict[str, dict]:
    """Start one stack per tree, warm each up, then run the rounds alternating between the stacks
    (so a change in the machine's load hits both alike)."""
    targets: dict[str, Target] = {}
    try:
        for name, tree in trees.items():
            targets[name] = Target(tree, args)
        for t in targets.values():
            for _ in range(args.warmup):
                t.post(data)
        for _ in range(args.rounds):
            for t in targets.values():
                t.round(data)
        return {name: t.result() for name, t in targets.items()}
    finally:
        for t in targets.values():
            t.close()


def extract(ref: str, dest: Path) -> Path:
    """``git archive ref`` into ``dest``; build a declared native extension there in place."""
    archive = dest / "tree.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), ref], check=True)
    tree = dest / "tree"
    tree.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    if "ext-modules" in (tree / "pyproject.toml").read_text():
        subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_ext", "--inplace"],
                       cwd=tree, check=True)
    return tree


def show(label: str, result: dict) -> None:
    cpu = result["cpu_ms_per_request"]
    stages = ", ".join(f"{k} {v:.2f}" for k, v in result["stages_p50_ms"].items())
    print(f"{label}: transformer {cpu['transformer']:.2f} CPU-ms/request, predictor {cpu['predictor']:.2f}, "
          f"latency p50 {result['latency_p50_ms']:.2f} ms")
    print(f"{' ' * len(label)}  stage p50 ms: {stages}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default=str(REPO / "models" / "yolov3-tiny"))
    p.add_argument("--model", default="yolov3")
    p.add_argument("--image", default=str(REPO / "tests" / "data" / "images" / "dog.jpg"))
    p.add_argument("--requests", type=int, default=200, help="timed requests per round (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per tree; medians are reported (default %(default)s)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--baseline", metavar="REF", help="also measure this git revision first (before/after)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = p.parse_args()
    if not Path("/proc/self/stat").exists():
        p.error("needs Linux /proc")
    args.model_dir = str(Path(args.model_dir).resolve())
    data = Path(args.image).read_bytes()
    with tempfile.TemporaryDirectory(prefix="transformer-cpu-") as tmp:
        trees = {"baseline": extract(args.baseline, Path(tmp))} if args.baseline else {}
        trees["current"] = REPO
        results = measure(trees, args, data)
    if args.baseline:
        results["baseline"]["ref"] = args.baseline
    print(f"{Path(args.image).name}, {args.requests} requests x {args.rounds} rounds, c=1 (medians over rounds)")
    if "baseline" in results:
        show(f"baseline {args.baseline}", results["baseline"])
    show("current", results["current"])
    if "baseline" in results:
        b, c = results["baseline"]["cpu_ms_per_request"], results["current"]["cpu_ms_per_request"]
        print(f"transformer CPU per request: current / baseline = {c['transformer'] / b['transformer']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
