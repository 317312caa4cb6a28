"""The API page (``GET /docs``) and the request examples of ``/openapi.json``, on both servers.

KServe 0.21 serves FastAPI's Swagger UI only with ``--enable_docs_url true``; that page loads its
scripts from a CDN (blank without internet) and KServe's ``:predict`` operation has no request
body to try. Here instead:

* ``/openapi.json`` (KServe's document) gains request bodies with working examples: on the
  transformer v1 ``:predict`` (JSON with a tiny base64 image, a raw image, multipart) with the
  query parameters, and v2 ``/infer`` (a BYTES ``images`` tensor); on the predictor v2 ``/infer``
  (a UINT8 ``[1, 3, 32, 32]`` tensor, and the describe call);
* ``/docs`` is one self-contained HTML page (no external script, style or font) that lists the
  operations of that document and sends them: example bodies to edit, a file picker for images.

Installed by :func:`yolo_contract.serving.install`; replaces FastAPI's ``/docs`` if it is on.
"""

from __future__ import annotations

import copy

from yolo_contract import tensors as T

DOCS_PATH = "/docs"
PREDICT_PATH = "/v1/models/{model_name}:predict"
INFER_PATH = "/v2/models/{model_name}/infer"

#: A 48 x 32 JPEG (a colour gradient, no objects): small enough for an example body.
TINY_JPEG_B64 = (
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAA0JCgsKCA0LCgsODg0PEyAVExISEyccHhcgLikxMC4pLSwzOko+MzZGNywtQFdBRkxOUlNSMj5a"
    "YVpQYEpRUk//2wBDAQ4ODhMREyYVFSZPNS01T09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT09PT0//wAAR"
    "CAAgADADASIAAhEBAxEB/8QAFwABAQEBAAAAAAAAAAAAAAAABAMFBv/EABgQAAMBAQAAAAAAAAAAAAAAAAACYQME/8QAFwEBAQEBAAAAAAAA"
    "AAAAAAAABQQDB//EABcRAAMBAAAAAAAAAAAAAAAAAAACAwT/2gAMAwEAAhEDEQA/AOFTCCEwg1OeF0wgu1ieGgEmELpzwanPBCYQnawvDQCT"
    "CF054NTnhdOeGDWF4aDPTCF054NTCF0whi1jm0NAJMIITCDUwhdMITtYXhoBJhBCYQYmEEJzwnawvDQf/9k="
)

_PARAM_SCHEMAS = {
    float: {"type": "number", "minimum": 0, "maximum": 1},
    int: {"type": "integer", "minimum": 0, "maximum": 10000},
    str: {"type": "string"},
}


def _query_parameters() -> list[dict]:
    """The transformer's public parameters, as OpenAPI query parameters (raw-image uploads)."""
    out = [{"name": spec.name, "in": "query", "required": False, "description": spec.doc,
            "schema": dict(_PARAM_SCHEMAS[spec.type])} for spec in T.PARAMETERS]
    for p in out:
        if p["name"] == "nms":
            p["schema"]["enum"] = list(T.NMS_KINDS)
        if p["name"] == "class_filter":
            p["example"] = "dog,car"
    out.append({"name": "format", "in": "query", "required": False, "schema": {"type": "string", "enum": ["json", "seed"]},
                "description": "json (default) or seed (the tutorial's answer shape)"})
    out.append({"name": "clip", "in": "query", "required": False, "schema": {"type": "boolean"},
                "description": "clip boxes to the image (Darknet does not)"})
    return out


def _v1_json_schema() -> dict:
    image = {"type": "object", "properties": {"image_bytes": {"type": "object", "properties": {"b64": {"type": "string"}}}}}
    return {
        "type": "object",
        "required": ["instances"],
        "properties": {
            "instances": {"type": "array", "items": image,
                          "description": 'images: {"image_bytes": {"b64": ...}}, {"b64": ...} or a base64 string'},
            "parameters": {"type": "object", "description": "any of: " + ", ".join(T.PUBLIC_PARAMETER_NAMES)},
        },
    }


def _v1_predict_body() -> dict:
    one = {"instances": [{"image_bytes": {"b64": TINY_JPEG_B64}}], "parameters": {"confidence": 0.5}}
    two = {"instances": [{"b64": TINY_JPEG_B64}, TINY_JPEG_B64],
           "parameters": {"confidence": 0.25, "class_filter": ["dog", "car"], "max_detections": 10}}
    binary = {"type": "string", "format": "binary"}
    return {
        "required": True,
        "content": {
            "application/json": {"schema": _v1_json_schema(), "examples": {
                "one image": {"summary": "one base64 image", "value": one},
                "two images, two classes": {"summary": "several images, a class filter", "value": two},
            }},
            "image/jpeg": {"schema": binary, "description": "the image itself; parameters in the query string"},
            "image/png": {"schema": binary},
            "multipart/form-data": {"schema": {"type": "object", "properties": {"image": binary}, "required": ["image"]}},
        },
    }


def _v2_examples(component: str) -> dict:
    if component == "transformer":
        return {
            "one image": {"summary": "BYTES input: base64 encoded images", "value": {
                "inputs": [{"name": T.INPUT_IMAGES, "shape": [1], "datatype": "BYTES", "data": [TINY_JPEG_B64]}],
                "parameters": {"confidence": 0.25}}},
        }
    return {
        "tensor": {"summary": "a UINT8 [N, 3, H, W] tensor (H, W multiples of 32)", "value": {
            "inputs": [{"name": T.INPUT_IMAGES, "shape": [1, 3, 32, 32], "datatype": "UINT8", "data": [128] * 3 * 32 * 32}],
            "parameters": {"confidence": 0.25}}},
        "describe": {"summary": "the model's ModelInfo (input size, preprocessing, classes)", "value": {
            "inputs": [], "parameters": {T.DESCRIBE_PARAMETER: True}}},
    }


def add_examples(schema: dict, component: str, model_name: str) -> dict:
    """``schema`` (KServe's OpenAPI document) with our request bodies and examples (a copy)."""
    schema = copy.deepcopy(schema)
    paths = schema.get("paths", {})
    for ops in paths.values():
        for op in ops.values():
            for param in op.get("parameters", []) if isinstance(op, dict) else []:
                if param.get("name") == "model_name" and param.get("in") == "path":
                    param["example"] = model_name
    infer = paths.get(INFER_PATH, {}).get("post")
    if infer is not None:
        infer["summary"] = "Detect objects (v2: BYTES images)" if component == "transformer" else "Run the model (v2 tensor)"
        content = infer.setdefault("requestBody", {"required": True, "content": {}}).setdefault("content", {})
        content.setdefault("application/json", {"schema": {"type": "object"}})["examples"] = _v2_examples(component)
    predict = paths.get(PREDICT_PATH, {}).get("post")
    if predict is not None and component == "transformer":
        predict["summary"] = "Detect objects (v1: JSON, a raw image or multipart)"
        predict["requestBody"] = _v1_predict_body()
        query = _query_parameters()
        names = {p["name"] for p in query}
        predict["parameters"] = [p for p in predict.get("parameters", []) if p.get("name") not in names] + query
    return schema


def install(app, component: str, model_name: str) -> None:
    """``GET /docs`` (our page) and the examples in ``app``'s ``/openapi.json``."""
    from fastapi.responses import HTMLResponse

    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) not in (DOCS_PATH, DOCS_PATH + "/oauth2-redirect")]
    app.docs_url = None
    original = app.openapi

    def openapi() -> dict:
        if not getattr(app, "_yolo_examples", False):
            app.openapi_schema = add_examples(original(), component, model_name)
            app._yolo_examples = True
        return app.openapi_schema

    app.openapi = openapi
    page = PAGE.replace("__TITLE__", f"yolo-kserve {component}")

    async def docs() -> HTMLResponse:
        return HTMLResponse(page)

    app.add_api_route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False)


#: The API page: plain HTML, CSS and JavaScript in one document; it reads /openapi.json (same origin).
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__ API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:980px;padding:1em;color:#222}
h1{font-size:1.4em}.op{border:1px solid #ccc;border-radius:6px;margin:.6em 0}
.op>summary{cursor:pointer;padding:.5em .7em;font-family:monospace}
.m{display:inline-block;min-width:4.5em;font-weight:bold}.m.post{color:#1a7f37}.m.get{color:#0550ae}
.body{padding:.3em .9em .9em}textarea{width:100%;min-height:12em;font:12px monospace}
pre{background:#f6f8fa;padding:.6em;overflow:auto;max-height:28em;white-space:pre-wrap;word-break:break-all}
label{display:block;margin:.25em 0}label span{display:inline-block;min-width:9em;font-family:monospace}
.desc{color:#555}button{margin-top:.5em}
</style></head><body>
<h1>__TITLE__ API</h1>
<p class="desc">Every operation of <a href="/openapi.json">/openapi.json</a>. Open one, edit the example
or pick an image file, and send it to this server. Errors are answered
<code>{"error": "..."}</code> with a 4xx status.</p>
<div id="ops">loading /openapi.json ...</div>
<script>
"use strict";
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) { if (k === "text") e.textContent = v; else e.setAttribute(k, v); }
  for (const k of kids) if (k) e.append(k);
  return e;
}
function pretty(value) {  // indented, but arrays of numbers on one line (tensor data)
  return JSON.stringify(value, null, 2).replace(/\[[\d\s.,eE+-]+\]/g, m => m.replace(/\s+/g, ""));
}
function resolve(spec, obj) {
  while (obj && obj.$ref) obj = obj.$ref.split("/").slice(1).reduce((o, k) => o[k], spec);
  return obj || {};
}
function card(spec, path, method, op) {
  const params = (op.parameters || []).map(p => resolve(spec, p)).filter(p => p.in === "path" || p.in === "query");
  const inputs = params.map(p => {
    const input = el("input", {name: p.name, placeholder: p.in === "path" ? "required" : "optional"});
    if (p.example !== undefined) input.value = p.example;
    return [p, input, el("label", {title: p.description || ""}, el("span", {text: p.name + (p.in === "path" ? " *" : "")}), input,
                         el("small", {class: "desc", text: " " + (p.description || "")}))];
  });
  const body = op.requestBody ? resolve(spec, op.requestBody) : null;
  const types = body ? Object.keys(body.content || {}) : [];
  const typeSel = el("select");
  types.forEach(t => typeSel.append(el("option", {value: t, text: t})));
  const exampleSel = el("select");
  const text = el("textarea", {spellcheck: "false"});
  const file = el("input", {type: "file", accept: "image/*"});
  const out = el("pre", {text: ""});
  function showType() {
    const media = (body.content || {})[typeSel.value] || {};
    const examples = media.examples || {};
    exampleSel.replaceChildren(...Object.keys(examples).map(k => el("option", {value: k, text: k})));
    const first = Object.values(examples)[0];
    const json = typeSel.value.includes("json");
    text.value = json ? pretty(first ? first.value : (media.example || {})) : "";
    text.hidden = !json; exampleSel.hidden = !json || !first; file.hidden = json;
  }
  exampleSel.onchange = () => {
    const ex = ((body.content || {})[typeSel.value].examples || {})[exampleSel.value];
    if (ex) text.value = pretty(ex.value);
  };
  async function send() {
    let url = path;
    const query = new URLSearchParams();
    for (const [p, input] of inputs) {
      if (p.in === "path") url = url.replace("{" + p.name + "}", encodeURIComponent(input.value));
      else if (input.value !== "") query.append(p.name, input.value);
    }
    if ([...query].length) url += "?" + query;
    const init = {method: method.toUpperCase(), headers: {}};
    if (body) {
      const t = typeSel.value;
      if (t.includes("json")) { init.body = text.value; init.headers["content-type"] = t; }
      else if (!file.files.length) { out.textContent = "choose a file first"; return; }
      else if (t === "multipart/form-data") { init.body = new FormData(); init.body.append("image", file.files[0]); }
      else { init.body = file.files[0]; init.headers["content-type"] = file.files[0].type || t; }
    }
    out.textContent = "...";
    const started = performance.now();
    try {
      const r = await fetch(url, init);
      let shown = await r.text();
      try { shown = pretty(JSON.parse(shown)); } catch (e) {}
      out.textContent = r.status + " " + r.statusText + "  (" + Math.round(performance.now() - started) + " ms)\\n" +
        "x-request-id: " + (r.headers.get("x-request-id") || "-") + "\\n" +
        (r.headers.get("server-timing") ? "server-timing: " + r.headers.get("server-timing") + "\\n" : "") + "\\n" + shown;
    } catch (e) { out.textContent = "request failed: " + e; }
  }
  const b = el("div", {class: "body"}, op.description ? el("p", {class: "desc", text: op.description}) : null,
               ...inputs.map(x => x[2]));
  if (body) {
    typeSel.onchange = showType;
    b.append(el("label", {}, el("span", {text: "body"}), typeSel, " ", exampleSel), text, file);
    showType();
  }
  const button = el("button", {type: "button", text: "Send"});
  button.onclick = send;
  b.append(button, out);
  return el("details", {class: "op"}, el("summary", {}, el("span", {class: "m " + method, text: method.toUpperCase()}),
            path + (op.summary ? "  " : ""), el("small", {class: "desc", text: op.summary || ""})), b);
}
fetch("/openapi.json").then(r => r.json()).then(spec => {
  const ops = document.getElementById("ops");
  ops.replaceChildren();
  const entries = [];
  for (const [path, item] of Object.entries(spec.paths || {}))
    if (!path.startsWith("/v2/repository"))  // refused by this server
    for (const [method, op] of Object.entries(item))
      if (["get", "post", "put", "delete"].includes(method)) entries.push([path, method, op]);
  const weight = ([p, m, op]) => (op.requestBody ? 0 : 1);
  entries.sort((a, b) => weight(a) - weight(b));
  for (const [path, method, op] of entries) ops.append(card(spec, path, method, op));
}).catch(e => { document.getElementById("ops").textContent = "could not load /openapi.json: " + e; });
</script></body></html>
"""
