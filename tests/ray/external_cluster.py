"""A stand-in for an external Ray cluster (a KubeRay head, say), for tests/ray/test_external_cluster.py.

Run as ``python -m tests.ray.external_cluster``: starts a local Ray, prints its GCS address on one
line, then answers each line read from stdin (``apps``) with one JSON line: the Serve applications
and the Serve controller's liveness. Stops Ray when stdin closes.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 2**20, namespace="external-cluster-owner")
    print(ray.get_runtime_context().gcs_address, flush=True)
    try:
        for line in sys.stdin:
            if line.strip() != "apps":
                continue
            try:
                controller = ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
                alive = ray.get(controller.check_alive.remote(), timeout=30) is None
            except ValueError:  # no Serve on this cluster
                controller, alive = None, False
            apps = {}
            if controller is not None:
                from ray import serve

                apps = {name: str(a.status).rsplit(".", 1)[-1] for name, a in serve.status().applications.items()}
            print(json.dumps({"controller": alive, "apps": apps}), flush=True)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
