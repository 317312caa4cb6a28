"""manifests/kustomize/overlays/ray: N replicas sharing one GPU, sized for Ray.

The generic rules (strict CRD validation, pod security, probes, argument agreement) run on this
overlay in tests/unit/test_manifests.py; these are the Ray-specific ones.
"""

from __future__ import annotations

import math
import re

import pytest

from tests.unit.test_manifests import (
    BASE,
    GPU,
    RAY,
    REPO_ROOT,
    _settings,
    component_container,
    env_value,
    isvc_of,
    quantity,
    render,
)

pytestmark = [pytest.mark.unit, pytest.mark.ray]

#: Measured with scripts/ray_bench.py (docs/performance.md, "Ray Serve replicas"), proportional
#: set size after load: the ingress plus Ray's own processes, and what each yolov3-tiny replica
#: adds (CPU; a GPU replica adds its CUDA context on top).
RAY_BASE_MIB = 690
REPLICA_MIB = 580


@pytest.fixture(scope="module")
def ray_isvc() -> dict:
    return isvc_of(render(RAY))


@pytest.fixture(scope="module")
def settings(ray_isvc):
    return _settings("predictor.settings", component_container(ray_isvc, "predictor")["args"])


def test_replicas_share_one_gpu_with_fractions(ray_isvc, settings):
    limits = component_container(ray_isvc, "predictor")["resources"]["limits"]
    gpus = quantity(limits["nvidia.com/gpu"])
    assert settings.ray_replicas >= 2 and 0 < settings.ray_num_gpus < 1
    assert settings.ray_replicas * settings.ray_num_gpus <= gpus == 1
    assert not settings.ray_address, "a private Ray in the pod; KubeRay is the README's variant"


def test_cpu_and_memory_are_sized_for_ray(ray_isvc, settings):
    res = component_container(ray_isvc, "predictor")["resources"]
    cpus = quantity(res["limits"]["cpu"])
    # every replica's CPUs, plus at least one for the ingress and Ray's processes
    assert settings.ray_replicas * settings.ray_num_cpus + 1 <= cpus
    assert settings.threads <= math.ceil(settings.ray_num_cpus), "threads are per replica in Ray mode"
    needed = (RAY_BASE_MIB + settings.ray_replicas * REPLICA_MIB) * 2**20
    assert quantity(res["requests"]["memory"]) >= needed


def test_object_store_fits_a_memory_backed_dev_shm(ray_isvc, settings):
    predictor = ray_isvc["spec"]["predictor"]
    c = component_container(ray_isvc, "predictor")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in predictor["volumes"]}
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    assert quantity(shm["sizeLimit"]) >= settings.ray_object_store_mb * 2**20
    # Ray's session directory and logs live in /tmp: rotation bounds them below the emptyDir's size
    tmp = quantity(volumes[mounts["/tmp"]]["emptyDir"]["sizeLimit"])
    rotation = int(env_value(c, "RAY_ROTATION_MAX_BYTES")) * (1 + int(env_value(c, "RAY_ROTATION_BACKUP_COUNT")))
    assert rotation * 20 < tmp  # ~20 log files (a dozen processes, stdout + stderr)


def test_image_carries_the_ray_extra_and_logs_reach_the_container(ray_isvc, settings):
    c = component_container(ray_isvc, "predictor")
    assert c["image"].endswith("-gpu-ray")
    kustomization = (REPO_ROOT / RAY / "kustomization.yaml").read_text()
    assert re.search(r"--build-arg EXTRAS=predictor,ray", kustomization)
    assert "ARG EXTRAS" in (REPO_ROOT / "Dockerfile.predictor").read_text()
    assert settings.ray_log_to_driver
    assert c["livenessProbe"]["initialDelaySeconds"] >= 120  # Ray + replicas started in 16-31 s here


def test_only_the_predictor_changes(ray_isvc):
    base, gpu = isvc_of(render(BASE)), isvc_of(render(GPU))
    assert ray_isvc["spec"]["transformer"] == base["spec"]["transformer"]
    for key in ("minReplicas", "maxReplicas", "containerConcurrency", "scaleMetric", "scaleTarget", "labels"):
        assert ray_isvc["spec"]["predictor"][key] == gpu["spec"]["predictor"][key], key
