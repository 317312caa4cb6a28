"""The KServe internals yolo_contract.serving patches: checked at start, and each patch's behaviour
pinned on KServe's own REST app (assembled in-process the way ``ModelServer.start`` does).

The stock-KServe contrasts show that each patch is what makes the difference; if one of them starts
failing after a KServe upgrade, KServe changed that behaviour itself and the patch may be obsolete.
The gRPC message-size patch and the read-only repository are pinned against real servers
(tests/component/test_kserve_patches.py, tests/component/test_predictor_server.py).
"""

from __future__ import annotations

import asyncio
import re

import httpx
import kserve.model_server as kms
import kserve.protocol.rest.server as kserve_rest
import pytest
from fastapi import FastAPI
from kserve import Model
from kserve.errors import InferenceError
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from yolo_contract import serving
from yolo_contract.serving import HttpLimits, KServePatchError, check_kserve_patch_points

pytestmark = pytest.mark.unit

SECRET = "secret-detail http://10.1.2.3:8080/internal"


# ----------------------------------------------------------------------------- checked at start


def test_the_installed_kserve_has_every_patch_point():
    check_kserve_patch_points()


def _no_handlers(self, app):  # a KServe that registers its handlers some other way
    app.add_exception_handler(Exception, lambda request, exc: None)


async def _load(self, model_name, extra):
    return None


def _sync_unload(self, model_name):
    return None


BROKEN = {
    "handler renamed": (lambda mp: mp.delattr(kserve_rest, "generic_exception_handler"), "generic_exception_handler"),
    "handler no longer a module global": (lambda mp: mp.setattr(kserve_rest.RESTServer, "_add_exception_handlers", _no_handlers),
                                          "inference_error_handler"),
    "decode signature": (lambda mp: mp.setattr(DataPlane, "decode_inference_request", lambda self, request: None),
                         "decode_inference_request"),
    "grpc arg renamed": (lambda mp: mp.delattr(kms.args, "grpc_max_send_message_length"), "grpc_max_send_message_length"),
    "grpc server reads elsewhere": (lambda mp: mp.setattr(GRPCServer, "start", lambda self, max_workers: None),
                                    "grpc_max_receive_message_length"),
    "grpc server made elsewhere": (lambda mp: mp.setattr(GRPCServer, "start", lambda self, max_workers: None),
                                   "aio.server"),
    "default length renamed": (lambda mp: mp.delattr(kms, "MAX_GRPC_MESSAGE_LENGTH"), "MAX_GRPC_MESSAGE_LENGTH"),
    "repository extension attribute": (lambda mp: mp.setattr(kms.ModelServer, "start", lambda self, models: None),
                                       "model_repository_extension"),
    "rest server built elsewhere": (lambda mp: mp.setattr(kms.ModelServer, "start", lambda self, models: None),
                                    "kserve.model_server.RESTServer"),
    "repository load signature": (lambda mp: mp.setattr(ModelRepositoryExtension, "load", _load), "load(self, model_name)"),
    "repository unload not async": (lambda mp: mp.setattr(ModelRepositoryExtension, "unload", _sync_unload), "unload"),
    # predictor.ray_serving's patches
    "not-ready handler renamed": (lambda mp: mp.delattr(kserve_rest, "model_not_ready_handler"), "model_not_ready_handler"),
    "server readiness not async": (lambda mp: mp.setattr(DataPlane, "ready", lambda self: True), "DataPlane.ready"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_missing_or_changed_patch_point_fails_loudly(monkeypatch, caplog, case):
    breaks, named = BROKEN[case]
    breaks(monkeypatch)
    with pytest.raises(KServePatchError, match=re.escape(named)):
        check_kserve_patch_points()
    assert any(named in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_serve_checks_before_it_patches_anything(monkeypatch):
    monkeypatch.delattr(kserve_rest, "inference_error_handler")
    monkeypatch.setattr(kms.args, "grpc_max_send_message_length", kms.MAX_GRPC_MESSAGE_LENGTH)
    with pytest.raises(KServePatchError):
        serving.serve(object(), "test", http_port=0, grpc_port=0, enable_grpc=False, grace_period=1,
                      limits=HttpLimits(), grpc_max_message_bytes=123)
    assert kms.args.grpc_max_send_message_length == kms.MAX_GRPC_MESSAGE_LENGTH


# ----------------------------------------------------------------------------- what each patch does


class Failing(Model):
    """Raises ``error`` from predict (``None``: answers ``{"ok": true}``)."""

    def __init__(self, error: Exception | None):
        super().__init__("m")
        self.error = error
        self.ready = True

    async def predict(self, payload, headers=None):
        if self.error is not None:
            raise self.error
        return {"ok": True}


@pytest.fixture()
def kserve_app(monkeypatch):
    """``build(model, patched)``: KServe's REST app around ``model``, with or without ``serving.install``.

    Everything install() patches is restored after the test."""
    monkeypatch.setattr(kserve_rest, "generic_exception_handler", kserve_rest.generic_exception_handler)
    monkeypatch.setattr(kserve_rest, "inference_error_handler", kserve_rest.inference_error_handler)
    monkeypatch.setattr(DataPlane, "decode_inference_request", DataPlane.decode_inference_request)

    def build(model: Model, patched: bool) -> FastAPI:
        app = FastAPI()
        monkeypatch.setattr(kms, "app", app)  # RESTServer.create_application loads "kserve.model_server:app"
        if patched:
            serving.install(app, "test", HttpLimits())
        registry = ModelRepository()
        registry.update(model)
        kserve_rest.RESTServer(app, DataPlane(model_registry=registry), ModelRepositoryExtension(registry),
                               http_port=0).create_application()
        return app

    return build


def call(app: FastAPI, method: str, path: str, **kwargs) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.request(method, path, **kwargs)

    return asyncio.run(go())


@pytest.mark.parametrize("patched", [True, False], ids=["patched", "stock"])
def test_internal_errors_answer_500_without_the_exception_text(kserve_app, patched):
    r = call(kserve_app(Failing(RuntimeError(SECRET)), patched), "POST", "/v1/models/m:predict", json={"instances": [1]})
    assert r.status_code == 500
    if patched:
        assert r.json() == {"error": "internal server error"}
    else:  # stock KServe echoes "<Type> : message" (internal URLs, reprs)
        assert SECRET in r.json()["error"]


@pytest.mark.parametrize("patched", [True, False], ids=["patched", "stock"])
def test_kserve_inference_errors_are_client_errors_without_echo(kserve_app, patched):
    r = call(kserve_app(Failing(InferenceError(SECRET)), patched), "POST", "/v1/models/m:predict", json={"instances": [1]})
    if patched:
        assert r.status_code == 400
        assert r.json() == {"error": "could not decode the tensors of the inference request"}
    else:  # stock KServe: 500 with the message, which can carry request data
        assert r.status_code == 500 and SECRET in r.json()["error"]


@pytest.mark.parametrize("patched", [True, False], ids=["patched", "stock"])
def test_a_malformed_v2_binary_header_is_a_400(kserve_app, patched):
    body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES"}]}'
    r = call(kserve_app(Failing(None), patched), "POST", "/v2/models/m/infer", content=body,
             headers={"content-type": "application/octet-stream", "inference-header-content-length": "not-a-number"})
    if patched:
        assert r.status_code == 400 and "do not match" in r.json()["error"]
    else:  # stock KServe: int("not-a-number") escapes as ValueError -> 500
        assert r.status_code == 500


def test_the_patched_app_still_serves(kserve_app):
    app = kserve_app(Failing(None), True)
    r = call(app, "POST", "/v1/models/m:predict", json={"instances": [1]})
    assert r.status_code == 200 and r.json() == {"ok": True}
