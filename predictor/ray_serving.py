"""The predictor behind Ray Serve replicas: ``python -m predictor ... --ray_replicas N``.

One ModelServer process (the *ingress*) keeps KServe's REST and gRPC endpoints, the shared request
middleware and ``/metrics``; N Ray Serve replicas each run the unchanged model class
(:class:`predictor.model.DarknetPredictor`) with their own engine and ``ceil(--ray_num_cpus)``
threads (optionally on a fraction of a GPU, ``--ray_num_gpus``). Without ``--ray_address`` a
private local Ray is started here and stopped on exit; with it, the replicas join that cluster
and only this pod's Serve application is deleted on exit.

What KServe 0.21's own ``kserve.ray.RayModel`` gets wrong, and what :class:`RayPredictor` does
instead (see ``docs/performance.md``, "Ray"):

* requests are converted to plain picklable values (:mod:`predictor.ray_wire`): gRPC parameters
  are a protobuf map that cannot cross to a replica (every stock gRPC call fails INTERNAL), and
  tensors travel as raw bytes, never Python lists;
* readiness (``/v2/models/<m>/ready`` and ``/v2/health/ready``) follows the number of RUNNING
  replicas; ``load()`` waits for the deployment instead of firing it;
* the inference verb is honoured (KServe's ``Model.__call__`` runs at the ingress);
* requests reach the replica's model with their parameters intact (the describe exchange,
  ``preprocess`` checks and strict parameter validation happen there, as in the plain predictor),
  and ``GET /v2/models/<name>`` shows the replica's ``metadata_extra()`` (versions, platform,
  ModelInfo);
* a dead, restarting or saturated replica is answered 503 + ``Retry-After`` / UNAVAILABLE, never
  500 with Ray's exception text;
* the replica returns what its predictor observed (stage timings, detections labelled with the
  model version and revision, engine batch sizes); the ingress records it and tracks the requests
  in flight, so ``/metrics`` and the Server-Timing stages seen by the transformer are those of the
  plain predictor plus a ``ray`` stage (the hop);
* after SIGTERM has drained in-flight work, the Serve application (and the local Ray) is shut down.

One model per predictor: a model repository (``predictor.repository``) with ``--ray_replicas`` is
refused at start with one line (exit 1); run one Ray predictor per model instead.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
import logging
import math
import os
import re
import socket
import threading
import time
from typing import Any, Callable

import numpy as np
from kserve import Model

from predictor.ray_wire import (
    Observation,
    ReplicaFailure,
    ReplicaInfo,
    ReplicaReply,
    WireError,
    WireRequest,
    WireResponse,
    check_kserve_internals,
)
from predictor.settings import PredictorSettings
from yolo_contract.errors import Overloaded, PredictorUnavailable
from yolo_contract.model_info import is_describe
from yolo_contract.observability import METRICS, format_server_timing
from yolo_contract.serving import _patch, check_kserve_patch_points, error_response
from yolo_contract.tensors import REQUEST_ID_HEADER, SERVER_TIMING_PARAMETER

logger = logging.getLogger("predictor.ray")

#: Name of the Serve deployment inside the application.
DEPLOYMENT = "predictor"
#: Seconds between the controller's health checks of a replica (Serve's default is 10: a killed
#: replica would be routed to, and reported ready, for that long).
HEALTH_CHECK_PERIOD_S = 1.0
HEALTH_CHECK_TIMEOUT_S = 10.0
#: Seconds between the ingress's looks at the number of RUNNING replicas (readiness).
REPLICA_POLL_S = 0.5


def replica_threads(settings: PredictorSettings) -> int:
    """Inference threads of one replica: ``--threads`` if given, else its CPU share."""
    return settings.threads or max(1, math.ceil(settings.ray_num_cpus))


def single_model_files(settings: PredictorSettings):
    """The files of the one model in ``--model_dir``; a model repository is refused
    (:class:`predictor.darknet.ModelFormatError`): Ray replicas serve one model per predictor."""
    from predictor.darknet import ModelFormatError
    from predictor.repository import discover

    repo = discover(settings.model_dir, settings.model_name, settings.default_model)
    if len(repo.models) > 1:
        raise ModelFormatError(f"{settings.model_dir}: a model repository ({', '.join(repo.models)}) cannot be served "
                               "with --ray_replicas; run one Ray predictor per model")
    return repo.models[settings.model_name]


# ------------------------------------------------------------------------------------------------
# Replica side (runs in a Ray worker process)
# ------------------------------------------------------------------------------------------------

_CAPTURE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("yolo_ray_capture", default=None)


class _BatchSizes:
    """``METRICS.batch_size.labels(model).observe(n)`` inside a replica: kept until the next reply."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[int] = []

    def labels(self, *args, **kwargs) -> "_BatchSizes":
        return self

    def observe(self, value: float) -> None:
        with self._lock:
            self._pending.append(int(value))

    def drain(self) -> tuple[int, ...]:
        with self._lock:
            out, self._pending = tuple(self._pending), []
        return out


class _ReplicaMetrics:
    """Stands in for ``yolo_contract.observability.METRICS`` inside a replica process, whose own
    registry nobody scrapes: what the predictor observes goes back with the reply and is recorded
    by the ingress. Anything else is passed through to the real object."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.batch_size = _BatchSizes()

    def observe_predictor(self, model: str, timings, rows, names, version: str = "", revision: str = "") -> None:
        box = _CAPTURE.get()
        if box is not None:
            box["observation"] = Observation(dict(timings), tuple(np.asarray(r) for r in rows), version, revision)

    def __getattr__(self, name: str) -> Any:
        # ``inflight``: the replica's own gauge (unscraped); the ingress tracks requests in flight
        return getattr(self._real, name)


#: What ``predictor.model`` uses of ``METRICS``, and how the Ray path records each: recorded in the
#: replica and replayed at the ingress (``observe_predictor``, which also records the outputs, and
#: ``batch_size``), or tracked live at the ingress (``inflight``).
_REPLICA_METRICS = frozenset({"observe_predictor", "batch_size", "inflight"})


def _install_replica_metrics() -> _ReplicaMetrics:
    """Point ``predictor.model.METRICS`` at the recorder. Asserted, not assumed: if the predictor
    uses a ``METRICS`` name this module does not handle (or the name is gone), the replica fails at
    start instead of losing metrics silently."""
    import predictor.model as model_module

    real = getattr(model_module, "METRICS", None)
    try:
        used = set(re.findall(r"\bMETRICS\.(\w+)", inspect.getsource(model_module)))
    except OSError:  # installed without sources: only the names below are checked
        used = set()
    missing = [a for a in sorted(_REPLICA_METRICS) if not hasattr(real, a)]
    unhandled = sorted(used - _REPLICA_METRICS)
    if real is None or missing or unhandled:
        raise RuntimeError(f"predictor.model.METRICS: {missing or unhandled or 'missing'} not handled by "
                           "predictor.ray_serving; it needs updating")
    if isinstance(real, _ReplicaMetrics):
        return real
    recorder = _ReplicaMetrics(real)
    model_module.METRICS = recorder
    return recorder


class YoloReplica:
    """The body of the Serve deployment: one model (own engine, own batcher) per replica."""

    def __init__(self, settings: PredictorSettings):
        from predictor.model import DarknetPredictor
        from yolo_contract.serving import configure_logging

        configure_logging(settings.log_config_file, json_logs=settings.json_logs)
        self.pid = os.getpid()
        self.metrics = _install_replica_metrics()
        self.threads = replica_threads(settings)
        files = single_model_files(settings)  # read where the replica runs (--ray_address: its node)
        self.model = DarknetPredictor(dataclasses.replace(settings, threads=self.threads), settings.model_name, files)
        self.model.load()  # raises on a bad model: Serve retries, then marks the deployment failed

    def info(self) -> ReplicaInfo:
        return ReplicaInfo(
            pid=self.pid,
            threads=self.threads,
            input_types=self.model.get_input_types(),
            output_types=self.model.get_output_types(),
            names=tuple(self.model.names),
            metadata=self.model.metadata_extra(),
        )

    async def infer(self, request: WireRequest | Any, request_id: str) -> ReplicaReply:
        started = time.perf_counter()
        box: dict = {}
        token = _CAPTURE.set(box)
        try:
            payload = request.to_infer_request() if isinstance(request, WireRequest) else request
            headers = {REQUEST_ID_HEADER: request_id} if request_id else {}
            response, _ = await self.model(payload, headers=headers)
            return ReplicaReply(
                response=WireResponse.from_infer_response(response),
                observation=box.get("observation"),
                engine_batches=self.metrics.batch_size.drain(),
                seconds=time.perf_counter() - started,
                pid=self.pid,
            )
        except Exception as e:
            error = WireError.from_exception(e)
            if error is None:
                logger.error("request %s failed in replica %d", request_id or "-", self.pid, exc_info=e)
                error = WireError("internal", "")
            return ReplicaReply(
                error=error, engine_batches=self.metrics.batch_size.drain(),
                seconds=time.perf_counter() - started, pid=self.pid,
            )
        finally:
            _CAPTURE.reset(token)

    def check_health(self) -> None:
        """Called by the Serve controller every ``HEALTH_CHECK_PERIOD_S``."""
        if not self.model.ready:
            raise RuntimeError("model not ready")


# ------------------------------------------------------------------------------------------------
# The Ray cluster and the Serve application (ingress process)
# ------------------------------------------------------------------------------------------------


class RayCluster:
    """Connects to (or starts) Ray, deploys the replicas, reports RUNNING replicas, shuts down."""

    def __init__(self, settings: PredictorSettings):
        self.settings = settings
        self.local = not settings.ray_address
        # Several pods may share one external cluster: each deploys (and on exit deletes) its own
        # application, named after the pod.
        self.app_name = settings.model_name if self.local else f"{settings.model_name}-{socket.gethostname()}"
        self.connected = False
        self.deployed = False

    def start(self) -> None:
        import ray
        from ray import serve

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        s = self.settings
        if self.local:
            # Ray runs its workers at nice 15 by default: the replicas, which do all the inference,
            # would then yield the pod's CPUs to anything else runnable (the ingress, Ray's own
            # daemons, a neighbour on a shared node) and SIGTERM's drain could outlast the grace
            # period. They run at the ModelServer's priority, as the plain predictor's engine does.
            os.environ.setdefault("RAY_worker_niceness", "0")
        kwargs: dict[str, Any] = dict(
            include_dashboard=False,
            log_to_driver=s.ray_log_to_driver,
            logging_level=logging.WARNING,
            namespace="yolo-kserve",
        )
        if self.local:
            kwargs.update(
                num_cpus=max(1, math.ceil(s.ray_replicas * s.ray_num_cpus)),
                # exactly what the replicas reserve (a pod has what it requested; Ray's own GPU
                # detection is not relied on)
                num_gpus=math.ceil(s.ray_replicas * s.ray_num_gpus),
                object_store_memory=s.ray_object_store_mb * 2**20,
            )
        t0 = time.perf_counter()
        ray.init(address=s.ray_address or None, **kwargs)
        self.connected = True
        serve.start(proxy_location="Disabled")  # no Serve HTTP proxy: KServe's servers are the ingress
        logger.info(
            "Ray %s %s in %.1f s (%s)", ray.__version__, "started" if self.local else "joined",
            time.perf_counter() - t0, ray.cluster_resources(),
        )

    def deploy(self, timeout: float):
        """Deploy the replicas and wait until all are RUNNING; returns the deployment handle."""
        from ray import serve

        s = self.settings
        deployment = serve.deployment(YoloReplica, name=DEPLOYMENT).options(
            num_replicas=s.ray_replicas,
            ray_actor_options={"num_cpus": s.ray_num_cpus, "num_gpus": s.ray_num_gpus},
            # the replica's own batcher refuses beyond --max_queue images (503); the handle queue
            # in front of busy replicas is bounded the same way (BackPressureError -> 503)
            max_ongoing_requests=s.max_queue,
            max_queued_requests=s.max_queue,
            health_check_period_s=HEALTH_CHECK_PERIOD_S,
            health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
            graceful_shutdown_timeout_s=float(s.grace_period),
        )
        t0 = time.perf_counter()
        (handle,) = serve.run_many(
            [serve.RunTarget(deployment.bind(s), name=self.app_name, route_prefix=None)],
            wait_for_applications_running=False,
        )
        self.deployed = True
        deadline = t0 + timeout
        while True:
            app = serve.status().applications.get(self.app_name)
            status = str(getattr(app, "status", "")).rsplit(".", 1)[-1]
            if status == "RUNNING":
                break
            if status == "DEPLOY_FAILED" or time.perf_counter() > deadline:
                raise RuntimeError(self._failure(app, status, timeout))
            time.sleep(0.2)
        logger.info("%d replica(s) running in %.1f s", s.ray_replicas, time.perf_counter() - t0)
        return handle

    def _failure(self, app, status: str, timeout: float) -> str:
        """One line: the replica's own error (the last line of the traceback Serve keeps)."""
        dep = app.deployments.get(DEPLOYMENT) if app is not None else None
        lines = [ln.strip() for ln in (getattr(dep, "message", "") or "").splitlines() if ln.strip()]
        cause = lines[-1] if lines else (getattr(app, "message", "") or f"not running after {timeout:.0f} s")
        return f"Ray Serve application {self.app_name!r} {status or 'not running'}: {cause}"

    def running_replicas(self) -> int:
        from ray import serve

        app = serve.status().applications.get(self.app_name)
        dep = app.deployments.get(DEPLOYMENT) if app is not None else None
        return int(dep.replica_states.get("RUNNING", 0)) if dep is not None else 0

    def shutdown(self) -> None:
        """Delete this application (and, for a local Ray, Serve and Ray themselves); idempotent."""
        if not self.connected:
            return
        import ray
        from ray import serve

        t0 = time.perf_counter()
        try:
            if self.local:
                serve.shutdown()
            elif self.deployed:
                serve.delete(self.app_name)
        except Exception as e:  # never mask the reason we are exiting
            logger.warning("Serve shutdown: %s: %s", type(e).__name__, e)
        finally:
            ray.shutdown()
            self.connected = False
        logger.info("Ray %s in %.1f s", "stopped" if self.local else f"application {self.app_name} deleted",
                    time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------
# Ingress model (registered with KServe's ModelServer)
# ------------------------------------------------------------------------------------------------


def _replica_unavailable(exc: BaseException) -> Exception | None:
    """Ray's errors for a dead, restarting or saturated replica -> our 503s (None: not Ray's)."""
    from ray.exceptions import RayActorError, RayError, RayTaskError
    from ray.serve.exceptions import BackPressureError, RayServeException

    if isinstance(exc, BackPressureError):
        return Overloaded("all model replicas are busy; retry later", retry_after=1)
    if isinstance(exc, RayTaskError) and not isinstance(getattr(exc, "cause", None), RayActorError):
        return None  # an exception escaped the replica's code: an internal error, not an outage
    if isinstance(exc, (RayError, RayServeException)):
        return PredictorUnavailable("a model replica is unavailable; retry later", retry_after=1)
    return None


class RayPredictor(Model):
    """The predictor's KServe model when it runs on Ray Serve replicas (see the module docstring)."""

    def __init__(self, settings: PredictorSettings, cluster: RayCluster):
        super().__init__(settings.model_name)
        self.settings = settings
        self.cluster = cluster
        #: what a replica reported at load (metadata, class names)
        self.replica: ReplicaInfo | None = None
        self._handle = None
        self._live = 0
        self._poke: asyncio.Event | None = None
        #: set while no replica runs: calls waiting for one are answered 503 instead of queueing
        self._outage: asyncio.Event | None = None
        self._watcher: asyncio.Task | None = None

    # ------------------------------------------------------------------ load / health
    def load(self) -> bool:
        """Deploy and wait for every replica. Runs once (KServe calls ``load()`` again whenever a
        request meets a not-ready model; that must not redeploy)."""
        if self._handle is not None:
            return self.ready
        self._handle = self.cluster.deploy(timeout=self.settings.ray_start_timeout_seconds)
        self.replica = self._handle.info.remote().result(timeout_s=60)
        self._live = self.cluster.running_replicas()
        logger.info("serving %s on %d Ray replica(s) x %d thread(s)", self.name, self._live, self.replica.threads)
        self.ready = True
        return self.ready

    async def healthy(self) -> bool:
        """Ready while at least one replica is RUNNING (KServe asks on every request: cached)."""
        self._ensure_watcher()
        return self.ready and self._live > 0

    def stop(self) -> None:
        # SIGTERM: refuse new work (503); in-flight calls finish, then the cluster is shut down.
        self.ready = False
        if self._watcher is not None:
            self._watcher.cancel()

    def _ensure_watcher(self) -> None:
        if self._watcher is None and self._handle is not None:
            self._poke, self._outage = asyncio.Event(), asyncio.Event()
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            self._poke.clear()  # a poke from here on triggers the next look
            try:
                live = await asyncio.to_thread(self.cluster.running_replicas)
            except Exception as e:  # the controller itself is gone: nothing can be served
                logger.warning("cannot read replica status: %s", type(e).__name__)
                live = 0
            if live != self._live:
                logger.info("running replicas: %d -> %d", self._live, live)
                self._live = live
            if live:
                self._outage.clear()
            else:
                self._outage.set()
            try:
                await asyncio.wait_for(self._poke.wait(), REPLICA_POLL_S)
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------------ contract
    def get_input_types(self) -> list[dict]:
        return self.replica.input_types if self.replica else []

    def get_output_types(self) -> list[dict]:
        return self.replica.output_types if self.replica else []

    def metadata_extra(self) -> dict:
        """``GET /v2/models/<name>``: what the replica's model publishes (``yolo_contract.model_metadata``)."""
        return dict(self.replica.metadata) if self.replica else {}

    # ------------------------------------------------------------------ request handling
    async def predict(self, payload, headers: dict[str, str] | None = None):
        self._ensure_watcher()
        if not (self.ready and self._live > 0):
            raise PredictorUnavailable("no model replica is ready; retry later", retry_after=1)
        from kserve.protocol.infer_type import InferRequest

        wire = WireRequest.from_infer_request(payload) if isinstance(payload, InferRequest) else payload
        request_id = (headers or {}).get(REQUEST_ID_HEADER, "")
        describe = isinstance(payload, InferRequest) and is_describe(payload.parameters)
        if describe:  # answered by the replica's model; not work on the engine
            reply, total = await self._call(wire, request_id)
        else:
            with METRICS.inflight.labels("predictor", self.name).track_inprogress():
                reply, total = await self._call(wire, request_id)
        timings = self._record(reply, total)
        if reply.error is not None:
            raise reply.error.exception()
        parameters = dict(reply.response.parameters or {})
        if timings is not None:
            parameters[SERVER_TIMING_PARAMETER] = format_server_timing(timings, prefix="predictor-")
        return reply.response.to_infer_response(parameters=parameters)

    async def _call(self, wire, request_id: str) -> tuple[ReplicaReply, float]:
        """One replica call: its reply and the seconds it took here; Ray's failures mapped to ours."""
        started = time.perf_counter()
        call = self._handle.infer.remote(wire, request_id)
        try:
            reply: ReplicaReply = await self._reply(call)
        except asyncio.CancelledError:
            call.cancel()
            raise
        except PredictorUnavailable:
            call.cancel()
            raise
        except Exception as e:
            mapped = _replica_unavailable(e)
            logger.warning("replica call failed (request id %s): %s", request_id or "-", type(e).__name__)
            if mapped is None:
                raise ReplicaFailure("the model replica failed to process the request") from e
            self._poke.set()  # look at the replicas now, not at the next poll
            raise mapped from None
        return reply, time.perf_counter() - started

    async def _reply(self, call) -> ReplicaReply:
        """The replica's reply, or PredictorUnavailable as soon as no replica runs (Ray would
        otherwise hold the call until a replacement is up, many seconds later)."""
        reply = asyncio.ensure_future(call)
        outage = asyncio.ensure_future(self._outage.wait())
        try:
            await asyncio.wait((reply, outage), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            reply.cancel()
            raise
        finally:
            outage.cancel()
        if not reply.done():
            reply.cancel()
            raise PredictorUnavailable("no model replica is running; retry later", retry_after=1)
        return reply.result()

    def _record(self, reply: ReplicaReply, total: float) -> dict | None:
        """Record at the ingress what the replica observed; returns the request's stage timings
        (the replica's, a ``ray`` stage for the hop, and the ingress ``total``)."""
        for n in reply.engine_batches:
            METRICS.batch_size.labels(self.name).observe(n)
        obs = reply.observation
        if obs is None:
            return None
        timings = {k: v for k, v in obs.timings.items() if k != "total"}
        timings["ray"] = max(0.0, total - reply.seconds)
        timings["total"] = total
        METRICS.observe_predictor(self.name, timings, obs.rows, self.replica.names, version=obs.version,
                                  revision=obs.revision)
        return timings


# ------------------------------------------------------------------------------------------------
# KServe hooks for the Ray path (asserted before use)
# ------------------------------------------------------------------------------------------------


def _server_readiness_follows_models() -> None:
    """``/v2/health/ready`` and gRPC ``ServerReady`` say ready only when every model is healthy
    (KServe 0.21 answers True on a predictor unconditionally)."""
    from kserve.protocol.dataplane import DataPlane

    original = DataPlane.ready
    if getattr(original, "_yolo_models_ready", False):
        return

    async def ready(self) -> bool:
        if not await original(self):
            return False
        models = list(self.model_registry.get_models().values())
        return bool(models) and all([await m.healthy() for m in models])

    ready._yolo_models_ready = True
    _patch(DataPlane, "ready", ready)


def _not_ready_answers_retry_after() -> None:
    """KServe's ``ModelNotReady`` (REST inference while no replica runs) -> 503 with Retry-After."""
    import kserve.protocol.rest.server as kserve_rest

    async def model_not_ready_handler(request, exc):
        METRICS.reject("predictor", "not_ready")
        return error_response(503, str(exc), {"Retry-After": "1"})

    _patch(kserve_rest, "model_not_ready_handler", model_not_ready_handler)


def serve_with_ray(settings: PredictorSettings, serve_model: Callable[[Model], None]) -> int:
    """``python -m predictor --ray_replicas N``: start or join Ray, deploy, then ``serve_model``
    (the ModelServer, returning after SIGTERM has drained it), then shut the application down.

    KServe's patch points (ours included, :func:`yolo_contract.serving.check_kserve_patch_points`)
    and a local model repository are checked before Ray starts."""
    from predictor.darknet import ModelFormatError

    check_kserve_patch_points()
    check_kserve_internals()
    if not settings.ray_address:  # a joined cluster's replicas read --model_dir on their own nodes
        try:
            single_model_files(settings)
        except ModelFormatError as e:
            logger.error("model load failed: %s", e)
            return 1
    _server_readiness_follows_models()
    _not_ready_answers_retry_after()
    cluster = RayCluster(settings)
    model = RayPredictor(settings, cluster)
    try:
        try:
            cluster.start()
            model.load()
        except Exception as e:
            logger.error("Ray predictor start failed: %s: %s", type(e).__name__, e)
            return 1
        serve_model(model)
        return 0
    finally:
        cluster.shutdown()


__all__ = ["RayPredictor", "RayCluster", "YoloReplica", "serve_with_ray", "replica_threads", "single_model_files"]
