"""``yolo_contract.model_metadata``: our ``GET /v2/models/<name>`` wins over KServe's and adds
``versions``, ``platform`` and ``parameters``; its assumptions about KServe fail loudly."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from kserve import Model
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.v2_endpoints import register_v2_endpoints

from yolo_contract import model_metadata

pytestmark = pytest.mark.unit


class Described(Model):
    def __init__(self, name: str, extra):
        super().__init__(name)
        self.extra = extra
        self.ready = True

    def get_input_types(self):
        return [{"name": "images", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self):
        return [{"name": "detections", "datatype": "BYTES", "shape": [-1]}]

    def metadata_extra(self):
        return self.extra()


def get(app: FastAPI, path: str) -> httpx.Response:
    async def call():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await c.get(path)

    return asyncio.run(call())


def _app(*models) -> FastAPI:
    registry = ModelRepository()
    for m in models:
        registry.update(m)
    dataplane = DataPlane(model_registry=registry)
    app = FastAPI()
    model_metadata.install(app, dataplane)
    register_v2_endpoints(app, dataplane, None)  # what KServe's RESTServer does later, at start
    return app


def test_our_route_answers_before_kserves_and_keeps_its_document():
    async def later():
        return {"versions": ["v2"], "parameters": {"input_width": 608}}

    app = _app(
        Described("sync", lambda: {"versions": ["abc"], "platform": "darknet-pjreddie", "parameters": {"classes": ["dog"]}}),
        Described("async", later),
    )
    doc = get(app, "/v2/models/sync").json()
    assert doc == {
        "name": "sync",
        "platform": "darknet-pjreddie",
        "versions": ["abc"],
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "detections", "datatype": "BYTES", "shape": [-1]}],
        "parameters": {"classes": ["dog"]},
    }
    assert get(app, "/v2/models/async").json()["parameters"] == {"input_width": 608}


def test_without_our_route_kserve_drops_the_parameters():
    """What the route is for (if KServe starts passing them through, it can go)."""
    registry = ModelRepository()
    registry.update(Described("m", lambda: {}))
    app = FastAPI()
    register_v2_endpoints(app, DataPlane(model_registry=registry), None)

    async def with_parameters(self, model_name):
        return {"name": model_name, "platform": "", "inputs": [], "outputs": [], "parameters": {"x": 1}}

    original = DataPlane.model_metadata
    DataPlane.model_metadata = with_parameters
    try:
        assert "parameters" not in get(app, "/v2/models/m").json()
    finally:
        DataPlane.model_metadata = original


def test_unknown_model_is_kserves_model_not_found():
    from kserve.errors import ModelNotFound

    app = _app(Described("m", lambda: {}))
    with pytest.raises(ModelNotFound):  # the servers map it to 404 {"error"} (KServe's handler)
        get(app, "/v2/models/other")


def test_install_fails_loudly_when_its_assumptions_do_not_hold():
    class OldDataPlane:
        async def model_metadata(self, name):
            return {}

    with pytest.raises(RuntimeError, match="get_model_from_registry"):
        model_metadata.install(FastAPI(), OldDataPlane())
    app = FastAPI()
    dataplane = DataPlane(model_registry=ModelRepository())
    register_v2_endpoints(app, dataplane, None)
    with pytest.raises(RuntimeError, match="already routed"):
        model_metadata.install(app, dataplane)
