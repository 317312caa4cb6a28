"""The Ray tier: the predictor behind Ray Serve replicas (``--ray_replicas``), real processes.

Each module starts at most one Ray predictor (a local Ray: ~1.5 GiB, 10-30 s); replicas are the
``ray::ServeReplica:...`` processes under it, found through the process tree.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.servers import ServerProcess, predictor

pytest.importorskip("ray.serve", reason="needs the ray extra: pip install -e '.[dev]'")

READY = "/v2/models/yolov3/ready"
#: Small, explicit Ray: 2 replicas x 1 CPU (= 1 inference thread each), the minimum object store.
RAY_ARGS = ("--ray_replicas", "2", "--ray_num_cpus", "1", "--ray_object_store_mb", "80")
#: Seconds a Ray predictor may take to start on a loaded 2-core machine (safety net only).
START_TIMEOUT = 240.0


def start_ray_predictor(tmp: Path, model_dir: Path, *extra: str) -> ServerProcess:
    server = predictor(tmp, model_dir, *RAY_ARGS, *extra).start()
    try:
        return server.wait_ready(READY, timeout=START_TIMEOUT)
    except BaseException:
        server.stop()
        raise


def descendants(server: ServerProcess) -> list[psutil.Process]:
    try:
        return psutil.Process(server.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def replica_processes(server: ServerProcess) -> list[psutil.Process]:
    """The live Serve replica processes of this predictor (Ray titles them ``ray::ServeReplica:...``)."""
    out = []
    for p in descendants(server):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and (p.cmdline() or [""])[0].startswith("ray::ServeReplica:"):
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out
