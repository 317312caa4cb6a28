"""Routing a request to one predictor revision by tag (transformer/routing.py, PredictorLink), and
what a response says about who answered (headers, metrics). Predictors are scripted stand-ins for
the gRPC client (tests/unit/test_transformer_follows.py), one per host."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from tests.unit.test_transformer_follows import DOG, JPEG, ScriptedPredictor, answer, described, info
from transformer.model import ImageTransformer
from transformer.routing import canonical_tag, parse_revision_hosts, revision_targets, tag_hosts
from transformer.settings import TransformerSettings, parse_settings
from yolo_contract import tensors as T
from yolo_contract.errors import BadRequest

pytestmark = pytest.mark.unit

STABLE = info("5757aaaa5757")
CANARY = info("cafecafecafe", 320, "resize")
HEADER = "x-model-revision"


# ------------------------------------------------------------------------------------------------
# pure parts


def test_tag_hosts_are_knatives_for_the_injected_predictor_host():
    assert tag_hosts("yolov3-predictor.vision") == {"latest": "latest-yolov3-predictor.vision",
                                                     "prev": "prev-yolov3-predictor.vision"}
    assert tag_hosts("yolov3-predictor.vision.svc.cluster.local:80") == {
        "latest": "latest-yolov3-predictor.vision.svc.cluster.local:80",
        "prev": "prev-yolov3-predictor.vision.svc.cluster.local:80"}
    for host in ("127.0.0.1:9000", "localhost:9000", "[::1]:9000", ""):
        with pytest.raises(ValueError, match="--revision_hosts"):
            tag_hosts(host)


def test_tags_and_aliases():
    assert [canonical_tag(v) for v in ("latest", "Canary", " prev ", "STABLE")] == ["latest", "latest", "prev", "prev"]
    with pytest.raises(ValueError, match="latest, canary, prev, stable"):
        canonical_tag("green")
    assert parse_revision_hosts("stable=127.0.0.1:1, canary=127.0.0.1:2") == (
        ("latest", "127.0.0.1:2"), ("prev", "127.0.0.1:1"))
    assert parse_revision_hosts("") == ()
    for bad, why in (("prev", "TAG=HOST"), ("prev=", "TAG=HOST"), ("blue=h:1", "'blue'"),
                     ("prev=a:1,stable=b:2", "twice")):
        with pytest.raises(ValueError, match=why):
            parse_revision_hosts(bad)
    assert revision_targets("p.ns", (("prev", "h:1"),)) == {"prev": "h:1"}
    assert revision_targets("p.ns", ()) == {"latest": "latest-p.ns", "prev": "prev-p.ns"}


def test_settings(capsys):
    s = parse_settings(["--predictor_host", "yolov3-predictor.vision", "--revision_header", "X-Model-Revision"])
    assert (s.revision_header, s.revision_hosts) == (HEADER, ())
    s = parse_settings(["--predictor_host", "127.0.0.1:1", "--revision_header", HEADER,
                        "--revision_hosts", "prev=127.0.0.1:2,latest=127.0.0.1:3"])
    assert s.revision_hosts == (("latest", "127.0.0.1:3"), ("prev", "127.0.0.1:2"))
    assert parse_settings(["--predictor_host", "127.0.0.1:1"]).revision_header == ""  # off by default
    for argv in (["--revision_hosts", "prev=h:1"],  # hosts without a header to pick them
                 ["--revision_header", HEADER],  # an IP address: nothing to derive the tag hosts from
                 ["--revision_header", HEADER, "--revision_hosts", "green=h:1"]):
        with pytest.raises(SystemExit):
            parse_settings(["--predictor_host", "127.0.0.1:1", *argv])
    assert "--revision_hosts" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# the transformer


def routed_transformer(**predictors: ScriptedPredictor) -> ImageTransformer:
    """A transformer whose predictor route and tag hosts answer from scripts (keys "", latest, prev)."""
    settings = TransformerSettings(predictor_host="yolov3-predictor.vision", revision_header=HEADER)
    model = ImageTransformer(settings)
    model.load()
    model.link._client = predictors.pop("", ScriptedPredictor())
    for tag, client in predictors.items():
        model.link.tagged(tag)._client = client
    return model


def call(model: ImageTransformer, **headers: str):
    return asyncio.run(model(DOG, {**JPEG, **headers}))


def images_total(version: str) -> float:
    return REGISTRY.get_sample_value("yolo_images_total", {
        "component": "transformer", "model_name": "yolov3", "model_version": version, "revision": ""}) or 0.0


def test_a_tagged_request_reaches_that_revision_prepared_for_its_model():
    split = ScriptedPredictor()
    latest = ScriptedPredictor(described(CANARY), answer(CANARY.version))
    prev = ScriptedPredictor(described(STABLE), answer(STABLE.version))
    model = routed_transformer(**{"": split, "latest": latest, "prev": prev})
    before = images_total(CANARY.version)

    body, headers = call(model, **{HEADER: "canary"})
    assert body["predictions"][0]["image"] == {"width": 768, "height": 576}
    # the latest host described its model and got a tensor prepared for it (320, resize)
    assert [c["describe"] for c in latest.calls] == [True, False]
    assert latest.calls[1]["shape"] == [1, 3, 320, 320] and latest.calls[1]["preprocess"] == "resize"
    assert headers[T.MODEL_VERSION_HEADER] == CANARY.version and headers[HEADER] == "latest"
    assert headers[T.MODEL_NAME_HEADER] == "yolov3" and T.PREDICTOR_REVISION_HEADER not in headers
    assert images_total(CANARY.version) == before + 1  # metrics carry the version that answered

    _, headers = call(model, **{HEADER: "prev"})
    assert prev.calls[1]["shape"] == [1, 3, 416, 416] and headers[HEADER] == "prev"
    assert headers[T.MODEL_VERSION_HEADER] == STABLE.version
    assert split.calls == []  # the predictor route saw nothing
    # one link (channel) per tag, made once; the twins follow their own model
    assert model.link.tagged("latest") is model.link.tagged("latest")
    assert model.link.tagged("latest").models["yolov3"].info == CANARY
    assert model.info is None


def test_without_the_header_the_predictor_route_answers():
    split = ScriptedPredictor(described(STABLE), answer(STABLE.version))
    model = routed_transformer(**{"": split})
    _, headers = call(model)
    assert len(split.calls) == 2 and HEADER not in headers
    assert headers[T.MODEL_VERSION_HEADER] == STABLE.version


def test_the_version_that_answered_is_reported_not_the_one_prepared_for():
    # Same geometry, other weights: the predictor accepts the tensor, and a new version answers.
    other = info("0123456789ab")
    split = ScriptedPredictor(answer(other.version), described(other))
    model = routed_transformer(**{"": split})
    model.tracker.observe(STABLE.version, STABLE)
    _, headers = call(model)
    assert headers[T.MODEL_VERSION_HEADER] == other.version


def test_an_unknown_revision_is_a_400():
    model = routed_transformer()
    with pytest.raises(BadRequest, match=f'header "{HEADER}" must be one of latest, canary, prev, stable'):
        call(model, **{HEADER: "green"})
    # only the configured tags
    settings = TransformerSettings(predictor_host="127.0.0.1:1", revision_header=HEADER,
                                   revision_hosts=(("prev", "127.0.0.1:2"),))
    one = ImageTransformer(settings)
    one.load()
    with pytest.raises(BadRequest, match='no predictor revision is configured for "latest"'):
        asyncio.run(one(DOG, {**JPEG, HEADER: "latest"}))
    # the header means nothing when routing is off
    off = ImageTransformer(TransformerSettings(predictor_host="p:1"))
    off.load()
    assert off.link.route({HEADER: "green"}) == ""


def test_the_predictors_knative_revision_is_named_in_headers_and_metrics():
    reply = answer(STABLE.version)
    reply.parameters = {T.REVISION_PARAMETER: "yolov3-predictor-00007"}
    model = routed_transformer(**{"": ScriptedPredictor(described(STABLE), reply)})
    _, headers = call(model)
    assert headers[T.PREDICTOR_REVISION_HEADER] == "yolov3-predictor-00007"
    assert REGISTRY.get_sample_value("yolo_images_total", {
        "component": "transformer", "model_name": "yolov3", "model_version": STABLE.version,
        "revision": "yolov3-predictor-00007"}) >= 1


def test_the_predictor_reads_its_revision_once_from_the_environment(monkeypatch):
    from predictor.settings import parse_settings as predictor_settings

    monkeypatch.setenv("K_REVISION", "yolov3-predictor-00003")
    assert predictor_settings([]).revision == "yolov3-predictor-00003"
    assert predictor_settings(["--revision", "r-1"]).revision == "r-1"
    monkeypatch.delenv("K_REVISION")
    assert predictor_settings([]).revision == ""
