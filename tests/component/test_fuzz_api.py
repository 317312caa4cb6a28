"""Schema fuzzing of the REST APIs of both servers (docs: reliability §1 and §5).

schemathesis generates requests from the live ``/openapi.json`` (which KServe always serves) and
sends them to the real processes. Every response must be:

* never 5xx (the servers map every client mistake to a 4xx, and nothing here is a server fault);
* never FastAPI's ``422 {"detail": [...]}`` (validation errors are mapped to 400);
* for a 4xx, a JSON object with an ``"error"`` key;
* tagged with the ``x-request-id`` the fuzzer sent.

The schema KServe publishes says nothing about the v1 ``:predict`` body or our tensor names, so a
copy of it is patched before fuzzing (see :func:`_transformer_schema`): a v1 body schema, raw image
and multipart bodies, our query parameters and tensor names are added as *alternatives*, so the
generator reaches the payload parsers and not only KServe's pydantic model. The model name path
parameter is fixed to ``yolov3`` (otherwise nearly every case is a 404), apart from one small pass
over unknown names.

Bounded: a fixed number of examples per operation (derandomized, no example database), one
request at a time, 30 s per request. The model repository API is left out on purpose (refused by
the middleware, covered by ``test_bad_inputs``; a regression there would unload the session's
model).
"""

from __future__ import annotations

import base64
import collections
import copy
import itertools
import json
import string
import time
from dataclasses import dataclass, field

import httpx
import pytest
import requests
import schemathesis
# schemathesis imports its OpenAPI adapters lazily, inside from_dict(); pytest (schemathesis is a
# pytest plugin) then rewrites and compiles them in the middle of a test, where CPython 3.11.7 once
# raised "SystemError: AST constructor recursion depth mismatch". Import them at collection instead.
import schemathesis.specs.openapi.adapter  # noqa: F401
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.servers import IMAGES, ServerProcess

pytestmark = [pytest.mark.component, pytest.mark.model, pytest.mark.slow]

MODEL = "yolov3"
POS, NEG = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
#: minimum number of generated transformer cases (reliability §5)
MIN_TRANSFORMER_CASES = 1000
#: safety net for the schema runs (pytest-timeout's default, 300 s, is below what ~1,000 cases take on a
#: loaded 2-core machine); how long they take is printed, not asserted
FUZZ_TIMEOUT = pytest.mark.timeout(1200)

# ---------------------------------------------------------------------------------------------
# schema patches (alternatives only: KServe's own shapes stay reachable)

_PARAMETERS = {
    "type": "object",
    "properties": {
        "confidence": {"anyOf": [{"type": "number"}, {"type": "string"}]},
        "iou_threshold": {"type": "number"},
        "max_detections": {"anyOf": [{"type": "integer"}, {"type": "number"}]},
        "class_filter": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "integer"}]},
        "nms": {"anyOf": [{"enum": ["agnostic", "per_class"]}, {"type": "string"}]},
        "format": {"anyOf": [{"enum": ["json", "seed"]}, {"type": "string"}]},
        "clip": {"anyOf": [{"type": "boolean"}, {"type": "string"}]},
    },
}

_B64 = {"type": "string", "format": "byte"}
_V1_BODY = {
    "type": "object",
    "properties": {
        "instances": {
            "type": "array",
            "maxItems": 10,
            "items": {
                "anyOf": [
                    {"type": "string"},
                    _B64,
                    {"type": "object", "properties": {"b64": _B64}, "required": ["b64"]},
                    {
                        "type": "object",
                        "properties": {"image_bytes": {"type": "object", "properties": {"b64": _B64}, "required": ["b64"]}},
                        "required": ["image_bytes"],
                    },
                ]
            },
        },
        "parameters": _PARAMETERS,
    },
    "required": ["instances"],
}
_V1_QUERY = [
    {"name": n, "in": "query", "required": False, "schema": s}
    for n, s in (
        ("confidence", {"type": "number"}),
        ("iou_threshold", {"type": "string"}),
        ("max_detections", {"type": "integer"}),
        ("class_filter", {"type": "string"}),
        ("nms", {"type": "string"}),
        ("format", {"type": "string"}),
        ("clip", {"type": "string"}),
    )
]
_V1_CONTENT = {
    "application/json": {"schema": _V1_BODY},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {
        "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}, "required": ["image"]}
    },
    "text/plain": {"schema": {"type": "string"}},
}


def _request_input(datatypes: list[str], data_item: dict) -> dict:
    """KServe's ``RequestInput`` with our tensor name, datatypes and useful dims as alternatives."""
    return {
        "type": "object",
        "properties": {
            "name": {"anyOf": [{"enum": ["images"]}, {"type": "string"}]},
            "shape": {
                "type": "array",
                "maxItems": 5,
                "items": {"anyOf": [{"enum": [-1, 0, 1, 2, 3, 9, 32, 416]}, {"type": "integer"}]},
            },
            "datatype": {"anyOf": [{"enum": datatypes}, {"type": "string"}]},
            "parameters": {
                "anyOf": [
                    {"type": "object", "properties": {"binary_data_size": {"type": "integer"}},
                     "additionalProperties": {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string"}]}},
                    {"type": "null"},
                ]
            },
            "data": {"type": "array", "maxItems": 12, "items": data_item},
        },
        "required": ["name", "shape", "datatype", "data"],
    }


def _patch_infer(raw: dict, request_input: dict) -> None:
    schemas = raw["components"]["schemas"]
    schemas["RequestInput"] = request_input
    schemas["InferenceRequest"]["properties"]["parameters"] = {"anyOf": [_PARAMETERS, {"type": "null"}]}
    schemas["InferenceRequest"]["properties"]["inputs"]["maxItems"] = 3
    op = raw["paths"]["/v2/models/{model_name}/infer"]["post"]
    op["parameters"].append(
        {"name": "inference-header-content-length", "in": "header", "required": False,
         "schema": {"type": "integer", "minimum": 0, "maximum": 4096}}
    )


def _transformer_schema(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    for path in ("/v1/models/{model_name}:predict", "/v1/models/{model_name}:explain"):
        op = raw["paths"][path]["post"]
        op["requestBody"] = {"required": False, "content": _V1_CONTENT}
        op["parameters"] = [*op.get("parameters", []), *_V1_QUERY]
    _patch_infer(raw, _request_input(["BYTES", "UINT8", "FP32"], {"anyOf": [_B64, {"type": "string"}, {}]}))
    return raw


def _predictor_schema(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    _patch_infer(
        raw,
        _request_input(
            ["UINT8", "FP32", "BYTES", "INT32"],
            {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 255}, {"type": "number"}, {"type": "string"}, {}]},
        ),
    )
    return raw


# ---------------------------------------------------------------------------------------------
# runner


def verdict(status: int, content: bytes, echoed_id: str | None, rid: str) -> str | None:
    """What is wrong with a response (None: nothing)."""
    if status >= 500:
        return f"{status} {content[:300]!r}"
    if status == 422:
        return f"FastAPI 422 (validation errors must be 400): {content[:300]!r}"
    if status >= 400:
        try:
            doc = json.loads(content)
        except ValueError:
            doc = None
        if not (isinstance(doc, dict) and isinstance(doc.get("error"), str)):
            return f'{status} body is not {{"error": ...}}: {content[:300]!r}'
    if echoed_id != rid:
        return f"{status} without the x-request-id it was sent ({echoed_id!r})"
    return None


@dataclass
class Tally:
    server: ServerProcess
    base_url: str
    statuses: collections.Counter = field(default_factory=collections.Counter)
    failures: list = field(default_factory=list)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())

    def check(self, label: str, case, session: requests.Session) -> None:
        rid = f"fuzz-{next(self.ids):05d}"
        try:
            r = case.call(base_url=self.base_url, session=session, headers={"x-request-id": rid}, timeout=30)
        except requests.RequestException as e:
            self.statuses[(label, "conn-error")] += 1
            self.fail(label, rid, f"no response: {type(e).__name__}: {e}", case.as_curl_command(base_url=self.base_url))
            return
        self.statuses[(label, r.status_code)] += 1
        problem = verdict(r.status_code, r.content, (r.headers.get("x-request-id") or [None])[0], rid)
        if problem:
            self.fail(label, rid, problem, case.as_curl_command(base_url=self.base_url))

    def fail(self, label: str, rid: str, problem: str, request: str) -> None:
        self.failures.append((label, rid, problem, request[:1500]))

    def report(self, limit: int = 8) -> str:
        out = []
        log = self.server.log().splitlines()
        for label, rid, problem, curl in self.failures[:limit]:
            out.append(f"--- {label} [{rid}]: {problem}\n{curl}")
            # the internal-error handler logs "internal error (request id <rid>)" and a traceback:
            # show its first line and its last frames (where the exception was raised)
            for i, line in enumerate(log):
                if rid in line and "yolo_kserve.access" not in line:
                    end = next((j for j in range(i + 1, len(log)) if log[j][:2] == "20"), len(log))
                    tb = [ln for ln in log[i + 1 : end] if ln.strip().strip("^~ ")]
                    out.append("\n".join([line, *(["  ..."] if len(tb) > 14 else []), *tb[-14:]]))
                    break
        return f"{len(self.failures)} failing case(s):\n" + "\n".join(out)

    def summary(self) -> str:
        by_op = collections.defaultdict(collections.Counter)
        for (label, status), n in self.statuses.items():
            by_op[label][status] += n
        return "\n".join(f"  {label}: {dict(sorted(c.items(), key=str))}" for label, c in sorted(by_op.items()))


def fuzz(schema, tally: Tally, plan, session: requests.Session) -> None:
    """Run ``plan(operation) -> [(mode, max_examples, fix_model_name)]`` for every operation."""
    for result in schema.get_all_operations():
        op = result.ok()
        for mode, n, fixed in plan(op):
            path_parameters = {"model_name": MODEL} if fixed and "{model_name}" in op.path else None
            strategy = op.as_strategy(generation_mode=mode, path_parameters=path_parameters)
            label = f"{op.method.upper()} {op.path}"

            @settings(
                max_examples=n,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
                report_multiple_bugs=False,
            )
            @given(case=strategy)
            def run(case):
                tally.check(label, case, session)

            try:
                run()
            except Unsatisfiable:
                # nothing to make invalid (no parameters, no body): only the positive pass applies
                assert mode is NEG, f"{label}: no positive case could be generated"


def _alive_and_ready(server: ServerProcess, pid: int) -> None:
    assert server.proc.poll() is None, f"{server.module} exited:\n{server.log()[-3000:]}"
    assert server.proc.pid == pid
    r = httpx.get(server.url + f"/v2/models/{MODEL}/ready", timeout=5)
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------------------------
# transformer


def _transformer_plan(op):
    path, method = op.path, op.method.upper()
    if path.endswith(":predict"):
        return [(POS, 260, True), (NEG, 140, True)]
    if path.endswith(":explain"):
        return [(POS, 20, True), (NEG, 10, True)]
    if path.endswith("/infer"):
        return [(POS, 300, True), (NEG, 160, True), (POS, 15, False)]
    if path.startswith("/v2/models/{model_name}"):
        # metadata/ready with generated model_version (query or path) and an unknown-name pass
        return [(POS, 45, True), (NEG, 25, True), (POS, 15, False)]
    if "{model_name}" in path:
        return [(POS, 5, True), (NEG, 5, True), (POS, 25, False)]
    assert method == "GET", path
    return [(POS, 3, True), (NEG, 3, True)]


@FUZZ_TIMEOUT
def test_transformer_rest_api_schema_fuzz(live_stack):
    server = live_stack.transformer
    pid = server.proc.pid
    raw = httpx.get(live_stack.transformer_url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(_transformer_schema(raw)).exclude(path_regex=r"^/v2/repository/")
    tally = Tally(server, live_stack.transformer_url)
    started = time.monotonic()
    with requests.Session() as session:
        # anchors: the patched schema must describe requests that really succeed
        dog = base64.b64encode((IMAGES / "dog.jpg").read_bytes()).decode()
        predict = schema["/v1/models/{model_name}:predict"]["POST"]
        infer = schema["/v2/models/{model_name}/infer"]["POST"]
        for case in (
            predict.Case(path_parameters={"model_name": MODEL}, body={"instances": [{"b64": dog}]}, media_type="application/json"),
            infer.Case(path_parameters={"model_name": MODEL}, media_type="application/json",
                       body={"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [dog]}]}),
        ):
            r = case.call(base_url=tally.base_url, session=session, timeout=60)
            assert r.status_code == 200, r.content[:500]
        fuzz(schema, tally, _transformer_plan, session)
    wall = time.monotonic() - started
    print(f"\n[fuzz] transformer: {tally.cases} generated cases in {wall:.1f} s, "
          f"{len(tally.failures)} failure(s)\n{tally.summary()}")
    assert not tally.failures, tally.report()
    assert tally.cases >= MIN_TRANSFORMER_CASES, tally.summary()
    _alive_and_ready(server, pid)
    # and it still serves real work
    r = httpx.post(f"{live_stack.transformer_url}/v1/models/{MODEL}:predict",
                   json={"instances": [{"b64": dog}]}, timeout=60)
    assert r.status_code == 200 and r.json()["predictions"][0]["detections"], r.text


# ---------------------------------------------------------------------------------------------
# transformer: v2 binary tensor extension (the middleware rewrites these before KServe sees them)

_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=8))
_json = st.recursive(_json_scalars, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=6), c, max_size=3)), max_leaves=8)
_binary_input = st.fixed_dictionaries(
    {"name": st.sampled_from(["images", "x"]), "datatype": st.sampled_from(["BYTES"] * 4 + ["UINT8", "FP32", "INT32"]),
     "shape": st.lists(st.integers(-1, 4), max_size=4)},
    optional={"parameters": st.one_of(
        st.fixed_dictionaries({"binary_data_size": st.one_of(st.integers(-2, 64), st.text(max_size=3), _json)}),
        _json_scalars, _json)},
)
_IHCL_TEXT = st.text(string.ascii_letters + string.digits + "-+.", min_size=1, max_size=4)


@st.composite
def _loose_request(draw):
    """Anything JSON in the header, random or length-prefixed bytes after it."""
    header = draw(st.one_of(
        st.fixed_dictionaries({"inputs": st.lists(_binary_input, max_size=3)}, optional={"parameters": _json}),
        _json,
    ))
    head = json.dumps(header).encode()
    tail = draw(st.one_of(
        st.binary(max_size=64),
        # well-formed length-prefixed BYTES elements (random bytes, so not images)
        st.lists(st.binary(max_size=12), max_size=3).map(lambda xs: b"".join(len(x).to_bytes(4, "little") + x for x in xs)),
    ))
    exact = str(len(head))
    ihcl = draw(st.one_of(st.just(exact), st.just(exact), st.integers(-3, len(head) + 8).map(str), _IHCL_TEXT))
    return head + tail, ihcl


@st.composite
def _tensor_request(draw):
    """A [N,3,H,W] UINT8/FP32 tensor whose byte count matches, give or take a few bytes."""
    dtype = draw(st.sampled_from(["UINT8", "FP32"]))
    shape = [draw(st.integers(1, 2)), draw(st.sampled_from([3, 3, 1])), draw(st.sampled_from([32, 2])), 32]
    size = 4 ** (dtype == "FP32") * shape[0] * shape[1] * shape[2] * shape[3]
    declared = size + draw(st.sampled_from([0, 0, 0, -1, 1]))
    header = {"inputs": [{"name": "images", "datatype": dtype, "shape": shape, "parameters": {"binary_data_size": declared}}]}
    if draw(st.booleans()):
        header["parameters"] = draw(st.fixed_dictionaries({}, optional={k: _json_scalars for k in ("confidence", "max_detections", "nms")}))
    head = json.dumps(header).encode()
    fill = draw(st.sampled_from([0, 0x3F, 0x7F, 0xFF]))  # 0x3F3F3F3F = 0.75 as FP32, 0x7F.. NaN
    return head + bytes([fill]) * max(0, declared), str(len(head))


_binary_requests = st.one_of(_loose_request(), _loose_request(), _tensor_request())


@pytest.mark.parametrize("component", ["transformer", "predictor"])
def test_v2_binary_extension_fuzz(live_stack, component):
    """Hypothesis-built binary-extension bodies with a matching (or not) IHCL header: schemathesis
    cannot tie the header to the body length, so this reaches the binary decoders it cannot."""
    server = getattr(live_stack, component)
    pid = server.proc.pid
    tally = Tally(server, server.url)
    url = f"{server.url}/v2/models/{MODEL}/infer"
    label = f"POST /v2/models/{MODEL}/infer (binary)"

    with httpx.Client(timeout=30) as client:
        @settings(max_examples=250, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(_binary_requests)
        def run(req):
            body, ihcl = req
            rid = f"bin-{next(tally.ids):05d}"
            shown = f"IHCL={ihcl!r} body={body[:400]!r}"
            try:
                r = client.post(url, content=body, headers={"inference-header-content-length": ihcl, "x-request-id": rid,
                                                           "content-type": "application/octet-stream"})
            except httpx.HTTPError as e:
                tally.statuses[(label, "conn-error")] += 1
                tally.fail(label, rid, f"no response: {e!r}", shown)
                return
            tally.statuses[(label, r.status_code)] += 1
            problem = verdict(r.status_code, r.content, r.headers.get("x-request-id"), rid)
            if problem:
                tally.fail(label, rid, problem, shown)

        run()
    print(f"\n[fuzz] {component} v2 binary extension: {tally.cases} cases\n{tally.summary()}")
    assert not tally.failures, tally.report()
    assert tally.cases >= 200
    _alive_and_ready(server, pid)


# ---------------------------------------------------------------------------------------------
# predictor


def _predictor_plan(op):
    path = op.path
    if path.endswith("/infer"):
        return [(POS, 220, True), (NEG, 120, True)]
    if path.startswith("/v2/models/{model_name}"):
        return [(POS, 15, True), (NEG, 10, True)]
    if path.endswith(":predict") or path.endswith(":explain"):
        return [(POS, 5, True), (POS, 5, False)]
    return [(POS, 2, True)]


@FUZZ_TIMEOUT
def test_predictor_rest_api_schema_fuzz(live_stack):
    server = live_stack.predictor
    pid = server.proc.pid
    raw = httpx.get(live_stack.predictor_url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(_predictor_schema(raw)).exclude(path_regex=r"^/v2/repository/")
    tally = Tally(server, live_stack.predictor_url)
    started = time.monotonic()
    with requests.Session() as session:
        infer = schema["/v2/models/{model_name}/infer"]["POST"]
        anchor = infer.Case(path_parameters={"model_name": MODEL}, media_type="application/json",
                            body={"inputs": [{"name": "images", "shape": [1, 3, 32, 32], "datatype": "UINT8", "data": [128] * 3072}]})
        r = anchor.call(base_url=tally.base_url, session=session, timeout=60)
        assert r.status_code == 200, r.content[:500]
        fuzz(schema, tally, _predictor_plan, session)
    wall = time.monotonic() - started
    print(f"\n[fuzz] predictor: {tally.cases} generated cases in {wall:.1f} s, "
          f"{len(tally.failures)} failure(s)\n{tally.summary()}")
    assert not tally.failures, tally.report()
    assert tally.cases >= 300, tally.summary()
    _alive_and_ready(server, pid)
