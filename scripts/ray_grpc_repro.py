#!/usr/bin/env python3
"""Minimal reproduction: KServe's ``kserve.ray.RayModel`` fails every gRPC ``ModelInfer`` (INTERNAL).

    pip install 'kserve[ray]==0.21.0'      # resolves ray[serve] 2.60.0 here
    python scripts/ray_grpc_repro.py

What it shows (kserve 0.21.0, ray 2.60.0, Python 3.11):

1. Root cause, no server needed: ``InferRequest.from_grpc`` keeps the request's ``parameters`` as
   the protobuf map of the gRPC message (``MessageMapContainer``). That object cannot be pickled,
   and Ray pickles every argument of a ``DeploymentHandle`` call, so the call never reaches a
   replica. The map is there on *every* gRPC request, empty or not.
2. End to end: a trivial echo model deployed with Ray Serve and registered through the stock
   ``RayModel``: REST v2 ``/infer`` answers 200, the same request over gRPC fails with INTERNAL
   ("Could not serialize the argument ...").
3. The fix is small: hand the replica plain values, e.g. turn ``request.parameters`` (and input
   parameters) into a dict (``kserve.protocol.infer_type.to_http_parameters``) before
   ``handle.remote(...)``. Part 1 checks that such a request pickles.

The end-to-end part runs a local Ray (~1.5 GiB, 10-30 s) and a ModelServer on free loopback
ports in a child process, and stops both. Exit status 0 means the defect reproduced.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time

MODEL = "echo"


def make_grpc_request():
    """A ModelInferRequest as a gRPC client sends it, decoded the way KServe's servicer does."""
    import numpy as np
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.infer_type import InferRequest

    msg = pb.ModelInferRequest(model_name=MODEL, id="repro-1")
    msg.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    msg.raw_input_contents.append(np.array([1, 2, 3], np.float32).tobytes())
    return InferRequest.from_grpc(msg)


def root_cause() -> bool:
    from kserve.protocol.infer_type import to_http_parameters

    request = make_grpc_request()
    print(f"InferRequest.from_grpc(...).parameters is {type(request.parameters).__module__}."
          f"{type(request.parameters).__name__} (len {len(request.parameters)})")
    try:
        pickle.dumps(request)
        print("  pickles fine: the defect is not present in this kserve version")
        return False
    except TypeError as e:
        print(f"  pickle.dumps(request) -> TypeError: {e}")
    request.parameters = to_http_parameters(request.parameters)
    pickle.dumps(request)
    print("  with parameters converted to a dict, the request pickles")
    return True


# --------------------------------------------------------------------------------- child process
def serve(http_port: int, grpc_port: int) -> None:
    """Ray Serve deployment of a trivial kserve.Model, exposed through the stock RayModel."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from kserve import Model, ModelServer
    from kserve.protocol.infer_type import InferOutput, InferResponse
    from kserve.ray import RayModel
    from ray import serve

    class Echo(Model):
        def __init__(self):
            super().__init__(MODEL)
            self.ready = True

        async def predict(self, payload, headers=None):
            x = payload.inputs[0].as_numpy()
            out = InferOutput("y", list(x.shape), "FP32")
            out.set_data_from_numpy(x, binary_data=False)
            return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[out])

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 2**20)
    serve.start(proxy_location="Disabled")
    handle = serve.run(serve.deployment(Echo).bind(), name=MODEL, route_prefix=None)
    model = RayModel(MODEL, handle)
    model.load()
    ModelServer(http_port=http_port, grpc_port=grpc_port, enable_docs_url=False).start([model])


# --------------------------------------------------------------------------------- parent
def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def end_to_end(timeout: float) -> bool:
    import grpc
    import httpx
    import numpy as np
    from kserve import InferenceGRPCClient
    from kserve.protocol.infer_type import InferInput, InferRequest

    http_port, grpc_port = free_ports(2)
    log = tempfile.TemporaryFile("w+")
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(http_port), str(grpc_port)],
                             stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + timeout
        while True:
            if child.poll() is not None:
                log.seek(0)
                print(log.read()[-3000:])
                raise SystemExit(f"server exited with {child.returncode}")
            try:
                if httpx.get(f"{url}/v2/models/{MODEL}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server not ready in time")
            time.sleep(0.2)

        body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
        rest = httpx.post(f"{url}/v2/models/{MODEL}/infer", json=body, timeout=30)
        print(f"REST v2 /infer through RayModel: HTTP {rest.status_code} {rest.text[:120]}")

        inp = InferInput("x", [1, 3], "FP32")
        inp.set_data_from_numpy(np.array([[1, 2, 3]], np.float32), binary_data=True)

        async def call():
            async with InferenceGRPCClient(f"127.0.0.1:{grpc_port}", timeout=30, retries=0) as c:
                return await c.infer(InferRequest(model_name=MODEL, infer_inputs=[inp]))

        logging.getLogger("kserve").setLevel(logging.CRITICAL)  # the client logs the failure with a traceback
        try:
            asyncio.run(call())
            print("gRPC ModelInfer through RayModel: OK (defect not reproduced)")
            return False
        except grpc.RpcError as e:
            print(f"gRPC ModelInfer through RayModel: {e.code().name}: {(e.details() or '')[:240]}")
            log.seek(0)
            cause = next((ln.strip() for ln in log if "could not serialize" in ln.lower() or "cannot pickle" in ln.lower()), "")
            print(f"  server log: {cause[:300]}")
            return rest.status_code == 200 and e.code() == grpc.StatusCode.INTERNAL
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        log.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", nargs=2, type=int, metavar=("HTTP_PORT", "GRPC_PORT"), help=argparse.SUPPRESS)
    p.add_argument("--no-server", action="store_true", help="only show the root cause (no Ray, no server)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the server to be ready")
    args = p.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    from importlib.metadata import version

    print(f"kserve {version('kserve')}, ray {version('ray')}, Python {sys.version.split()[0]}\n")
    print("1. root cause")
    reproduced = root_cause()
    if not args.no_server:
        print("\n2. end to end (stock kserve.ray.RayModel)")
        reproduced = end_to_end(args.timeout) and reproduced
    print("\nreproduced" if reproduced else "\nnot reproduced")
    return 0 if reproduced else 1


if __name__ == "__main__":
    sys.exit(main())
