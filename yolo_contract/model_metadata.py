"""``GET /v2/models/<name>`` with ``versions``, ``platform`` and ``parameters`` (server wiring).

KServe 0.21's ``DataPlane.model_metadata`` returns a fixed ``{name, platform: "", inputs, outputs}``
and its route filters the answer through a response model that has no ``parameters``. Both servers
publish their model's :class:`~yolo_contract.model_info.ModelInfo` there, so :func:`install` adds a
route for the same path to KServe's app *before* KServe registers its own (Starlette answers with the
first matching route). The route keeps KServe's document (and its errors: 404 for an unknown model)
and merges what the model's ``metadata_extra()`` returns (a dict, or an awaitable of one).

The assumptions are checked when installing (fail at start, not at the first request), and a
component test pins the answer.
"""

from __future__ import annotations

import inspect

METADATA_PATH = "/v2/models/{model_name}"


def install(app, dataplane) -> None:
    """Route ``GET /v2/models/{model_name}`` of ``app`` (KServe's FastAPI app) through ``dataplane``.

    Raises:
        RuntimeError: KServe's route is already registered, or the data plane lacks what we call.
    """
    from fastapi.responses import JSONResponse

    for attr in ("model_metadata", "get_model_from_registry"):
        if not callable(getattr(dataplane, attr, None)):
            raise RuntimeError(f"kserve DataPlane.{attr} is missing: the model metadata route needs a KServe 0.21-like data plane")
    from starlette.routing import Match

    probe = {"type": "http", "method": "GET", "path": "/v2/models/m", "root_path": "", "path_params": {},
             "query_string": b"", "headers": []}
    if any(route.matches(probe)[0] != Match.NONE for route in app.router.routes):
        raise RuntimeError(f"{METADATA_PATH} is already routed: install the metadata route before ModelServer.start")

    async def model_metadata(model_name: str) -> JSONResponse:
        doc = await dataplane.model_metadata(model_name)
        model = dataplane.get_model_from_registry(model_name)
        extra = getattr(model, "metadata_extra", None)
        if extra is not None:
            more = extra()
            if inspect.isawaitable(more):
                more = await more
            doc = {**doc, **more}
        return JSONResponse(doc)

    app.add_api_route(METADATA_PATH, model_metadata, methods=["GET"], include_in_schema=False)
