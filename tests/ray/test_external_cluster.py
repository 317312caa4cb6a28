"""``--ray_address``: the predictor joins a Ray cluster it does not own (a KubeRay head, say).
Its Serve application is named after the host (pods sharing a cluster do not replace each
other's), and on exit — clean or failed — only that application is deleted: the cluster and its
Serve controller stay up for everyone else."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient
from kserve.protocol.infer_type import InferInput, InferRequest

from tests.ray.conftest import READY, START_TIMEOUT
from tests.servers import DATA, REPO, predictor
from yolo_contract import tensors as T

pytestmark = [pytest.mark.ray, pytest.mark.model, pytest.mark.slow]

APP = f"yolov3-{socket.gethostname()}"


#: Ray 2.60 clusters authenticate clients with a token (a KubeRay cluster's comes from a Secret).
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


class Cluster:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.ray.external_cluster"], cwd=REPO, text=True,
                                     env={**os.environ, **AUTH},
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.address = self.proc.stdout.readline().strip()  # one line once Ray is up ('' if it died)
        assert self.address, f"the stand-in cluster did not start (exit {self.proc.poll()})"

    def state(self) -> dict:
        self.proc.stdin.write("apps\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(autouse=True)
def cluster_token(monkeypatch):
    """The predictor joins with the cluster's token (inherited through the environment)."""
    for key, value in AUTH.items():
        monkeypatch.setenv(key, value)


def _infer(target: str) -> np.ndarray:
    dog = np.rint(np.load(DATA / "dog_tensors" / "input.npy") * 255).astype(np.uint8)
    inp = InferInput(T.INPUT_IMAGES, list(dog.shape), "UINT8")
    inp.set_data_from_numpy(dog, binary_data=True)

    async def call():
        async with InferenceGRPCClient(target, timeout=60, retries=0) as c:
            return await c.infer(InferRequest(model_name="yolov3", infer_inputs=[inp]))

    return asyncio.run(call()).outputs[1].as_numpy()


def test_joined_predictor_serves_then_deletes_only_its_application(cluster, tiny_model_dir, tmp_path):
    pred = predictor(tmp_path, tiny_model_dir, "--ray_replicas", "1", "--ray_address", cluster.address).start()
    try:
        pred.wait_ready(READY, timeout=START_TIMEOUT)
        assert _infer(pred.grpc_target).tolist() == [5]
        assert cluster.state() == {"controller": True, "apps": {APP: "RUNNING"}}
    finally:
        rc = pred.stop()
    assert rc == 0
    assert cluster.state() == {"controller": True, "apps": {}}  # ours is gone; Serve and the cluster are not
    assert cluster.proc.poll() is None
    assert f"application {APP} deleted" in pred.log()


def test_model_that_cannot_load_exits_nonzero_never_ready_and_leaves_nothing(cluster, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "yolov3-tiny.cfg").write_text((DATA / "cfg" / "yolov3-tiny.cfg").read_text())
    (model / "coco.names").write_text((DATA / "coco.names").read_text())  # no .weights
    pred = predictor(tmp_path, model, "--ray_replicas", "1", "--ray_address", cluster.address).start()
    ready_seen = False
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while pred.proc.poll() is None and time.monotonic() < deadline:
            try:
                ready_seen |= httpx.get(pred.url + READY, timeout=2).status_code == 200
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    finally:
        rc = pred.stop()
    assert rc not in (0, None) and not ready_seen
    failures = [ln for ln in pred.log().splitlines() if "Ray predictor start failed" in ln]
    assert len(failures) == 1 and "no .weights file" in failures[0], pred.log()[-3000:]
    assert cluster.state()["apps"] == {}
