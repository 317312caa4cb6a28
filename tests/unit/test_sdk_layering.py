"""The SDK a user installs (``pip install 'yolo-kserve[client]'``) imports no server, no KServe and
no dev tooling: checked in a fresh interpreter, where ``sys.modules`` shows everything imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("predictor", "transformer", "yolo_devtools", "kserve", "fastapi", "uvicorn")


def imported_after(code: str) -> list[str]:
    probe = code + (
        "\nimport json, sys\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_sdk_and_cli_pulls_in_no_server_kserve_or_devtools():
    assert imported_after("import sdk_client, sdk_client.cli\nsdk_client.cli.build_parser()") == []


def test_every_protocol_builds_requests_without_kserve():
    code = (
        "from sdk_client import DetectionClient\n"
        "from sdk_client._codec import RestCodec, grpc_infer_request\n"
        "for proto, binary in (('v1', False), ('v2', False), ('v2', True)):\n"
        "    RestCodec(proto, 'yolov3', binary).build(b'img', {'confidence': 0.3}, 'r')\n"
        "grpc_infer_request('yolov3', b'img', {'confidence': 0.3}, 'r').SerializeToString()\n"
        "DetectionClient('127.0.0.1:1', protocol='grpc').close()\n"
        "DetectionClient('http://127.0.0.1:1', protocol='v2').close()\n"
    )
    assert imported_after(code) == []


def test_grpc_messages_serialise_like_kserves_generated_stubs():
    """The SDK's own v2 gRPC messages are wire-compatible with KServe's (dev install only)."""
    pytest.importorskip("kserve")
    import numpy as np  # noqa: F401
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    from sdk_client._codec import grpc_detections, grpc_infer_request
    from sdk_client._grpc import messages

    ours = grpc_infer_request("yolov3", b"\x89PNG-bytes", {"confidence": 0.3, "max_detections": 3,
                                                           "class_filter": ["dog", "car"]}, "r-1")
    theirs = pb.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.model_name == "yolov3" and theirs.id == "r-1"
    assert (theirs.inputs[0].name, theirs.inputs[0].datatype, list(theirs.inputs[0].shape)) == (
        "images", "BYTES", [1])
    assert theirs.raw_input_contents[0] == len(b"\x89PNG-bytes").to_bytes(4, "little") + b"\x89PNG-bytes"
    assert theirs.parameters["confidence"].string_param == "0.3"
    assert theirs.parameters["max_detections"].int64_param == 3
    assert theirs.parameters["class_filter"].string_param == "dog,car"
    assert theirs.SerializeToString(deterministic=True) == ours.SerializeToString(deterministic=True)

    doc = b'{"image": {"width": 4, "height": 3}, "detections": []}'
    resp = pb.ModelInferResponse(model_name="yolov3", id="r-1", outputs=[
        pb.ModelInferResponse.InferOutputTensor(name="detections", datatype="BYTES", shape=[1])],
        raw_output_contents=[len(doc).to_bytes(4, "little") + doc])
    parsed = messages()["ModelInferResponse"].FromString(resp.SerializeToString())
    res = grpc_detections(parsed, "x.jpg", "r-1")
    assert (res.width, res.height, res.detections, res.image) == (4, 3, [], "x.jpg")
    for name in ("ModelReadyRequest", "ModelReadyResponse", "ModelMetadataRequest",
                 "ModelMetadataResponse"):
        ours_desc = messages()[name].DESCRIPTOR
        theirs_desc = getattr(pb, name).DESCRIPTOR
        assert [(f.name, f.number, f.type) for f in ours_desc.fields] == [
            (f.name, f.number, f.type) for f in theirs_desc.fields], name
