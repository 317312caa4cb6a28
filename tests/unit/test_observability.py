"""Server-Timing helpers, and the Grafana dashboard against the metrics the code really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.metrics import MetricWrapperBase

from yolo_contract.observability import METRICS, format_server_timing, parse_server_timing

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docs" / "grafana" / "yolo-kserve.json"
DOC = REPO / "docs" / "observability.md"

# ----------------------------------------------------------------------------- Server-Timing


def test_format_server_timing():
    assert format_server_timing({"decode": 0.0021, "letterbox": 0.0005}) == "decode;dur=2.100, letterbox;dur=0.500"
    assert format_server_timing({"queue": 0.25, "batch": 3}, prefix="predictor-") == "predictor-queue;dur=250.000"
    assert format_server_timing({}) == ""


def test_parse_server_timing_ignores_malformed_parts():
    assert parse_server_timing("") == {}
    assert parse_server_timing("a;dur=1.5, b, c;desc=x, d;dur=oops,  e;dur=2") == {"a": 0.0015, "e": 0.002}


@settings(deadline=None)  # correctness, not speed: a loaded machine must not fail it
@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True),
        st.floats(min_value=0.0, max_value=600.0, allow_nan=False),
        max_size=10,
    ),
    st.sampled_from(["", "predictor-"]),
)
def test_server_timing_round_trip(timings, prefix):
    parsed = parse_server_timing(format_server_timing(timings, prefix=prefix))
    assert set(parsed) == {prefix + k for k in timings}
    for name, seconds in timings.items():
        # milliseconds with 3 decimals on the wire: 0.5 us resolution
        assert parsed[prefix + name] == pytest.approx(seconds, abs=6e-7)


def test_predictor_timings_nest_into_the_transformer_header():
    # the predictor sends its stages prefixed; the transformer parses them and re-emits them
    remote = parse_server_timing(format_server_timing({"queue": 0.001, "inference": 0.02, "nms": 0.002, "total": 0.024,
                                                       "batch": 2}, prefix="predictor-"))
    header = format_server_timing({"decode": 0.003, "letterbox": 0.001, "transport": 0.0005, **remote, "postprocess": 0.0002})
    assert list(parse_server_timing(header)) == [
        "decode", "letterbox", "transport", "predictor-queue", "predictor-inference", "predictor-nms", "predictor-total",
        "postprocess",
    ]


# ----------------------------------------------------------------------------- dashboard

_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
             "gauge": ("",), "summary": ("", "_count", "_sum", "_created")}


def _series_names(collectors) -> set[str]:
    """Every series name the collectors export (``yolo_detections`` counter -> ``yolo_detections_total`` ...)."""
    names = set()
    for c in collectors:
        for family in c.describe():
            names.update(family.name + s for s in _SUFFIXES.get(family.type, ("",)))
    return names


def _ours() -> set[str]:
    return _series_names(v for v in vars(METRICS).values() if isinstance(v, MetricWrapperBase))


def _kserve() -> set[str]:
    import kserve.metrics

    return _series_names(v for v in vars(kserve.metrics).values() if isinstance(v, MetricWrapperBase))


_PROMQL_WORDS = {
    # aggregations, functions and keywords used in dashboards
    "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "stddev", "stdvar", "group",
    "rate", "irate", "increase", "delta", "idelta", "histogram_quantile", "scalar", "vector", "abs", "clamp_min",
    "clamp_max", "clamp", "label_replace", "label_join", "absent", "sum_over_time", "avg_over_time", "max_over_time",
    "min_over_time", "time", "round", "ln", "log2", "log10", "exp", "sqrt", "sort", "sort_desc",
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
}


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (a small lexer: enough for our dashboard)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings (label values, regexes)
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # range selectors (durations, $__rate_interval)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", s)  # label lists
    s = re.sub(r"\$\w+", "", s)  # Grafana variables
    tokens = re.findall(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", s)
    return {t for t in tokens if t not in _PROMQL_WORDS}


def test_metric_name_lexer():
    expr = ('0.5 * sum(abs(sum by (class_name) (rate(yolo_detections_total{revision="$rev_a", x=~"a|b"}[$window]))'
            ' - ignoring(class_name) group_left sum(rate(request_predict_seconds_count{a="b"}[5m])) or -(vector(1e-3))))')
    assert metric_names(expr) == {"yolo_detections_total", "request_predict_seconds_count"}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict):
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])  # collapsed rows


def test_dashboard_uses_a_datasource_variable(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for p in _panels(dashboard):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == "${datasource}", v["name"]


def test_dashboard_queries_only_exported_metrics(dashboard):
    known = _ours() | _kserve()
    assert {"yolo_stage_seconds_bucket", "yolo_detections_total", "yolo_rejected_requests_total",
            "request_predict_seconds_bucket"} <= known
    used = set()
    exprs = [(p["title"], t["expr"]) for p in _panels(dashboard) for t in p.get("targets", [])]
    exprs += [(v["name"], v["query"]["query"]) for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for where, expr in exprs:
        names = metric_names(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", expr))
        assert names, (where, expr)
        assert names <= known, (where, sorted(names - known))
        used |= names
    # every metric family of ours has a panel
    for family in ("yolo_stage_seconds", "yolo_detections_total", "yolo_images_total", "yolo_input_image_pixels",
                   "yolo_engine_batch_size", "yolo_rejected_requests_total"):
        assert any(n.startswith(family) for n in used), family


def test_dashboard_panels_are_well_formed(dashboard):
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    for p in _panels(dashboard):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), p["title"]


def test_doc_names_every_metric_and_stage():
    text = DOC.read_text()
    for name in ("request_preprocess_seconds", "request_predict_seconds", "request_postprocess_seconds",
                 "yolo_stage_seconds", "yolo_detections_total", "yolo_images_total", "yolo_input_image_pixels",
                 "yolo_engine_batch_size", "yolo_rejected_requests_total", "yolo_inflight_requests"):
        assert f"`{name}" in text, name
    for stage in ("decode", "letterbox", "transport", "predictor-queue", "predictor-inference", "predictor-nms",
                  "predictor-total", "postprocess"):
        assert f"`{stage}`" in text, stage
