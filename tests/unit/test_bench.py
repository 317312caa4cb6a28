"""``yolo-kserve bench``: the pure statistics, aggregation and report functions (no servers)."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from sdk_client.cli import main as cli_main
from yolo_devtools import benchmark as B
from yolo_devtools.bench import main
from yolo_contract.observability import parse_server_timing

pytestmark = pytest.mark.unit

HEADER = ("decode;dur=2.7, letterbox;dur=2.5, transport;dur=2.6, predictor-queue;dur=0.02, "
          "predictor-inference;dur=14.0, predictor-nms;dur=0.6, predictor-total;dur=15.2, "
          "postprocess;dur=0.2")


# --------------------------------------------------------------------------------------------
# percentiles and summaries


def test_percentile_is_nearest_rank():
    xs = list(range(1, 11))  # 1..10
    assert B.percentile(xs, 50) == 5
    assert B.percentile(xs, 90) == 9
    assert B.percentile(xs, 99) == 10
    assert B.percentile(xs, 100) == 10
    assert B.percentile(xs, 0) == 1
    assert B.percentile(reversed(xs), 50) == 5  # order does not matter
    assert B.percentile([7.5], 99) == 7.5
    assert B.percentile([], 50) is None
    # nearest rank of 50 samples (the tutorial's c=1 runs): p90 is the 45th value
    assert B.percentile(range(50), 90) == 44


@pytest.mark.parametrize("q", [-1, 100.5, 1000])
def test_percentile_rejects_out_of_range(q):
    with pytest.raises(ValueError):
        B.percentile([1, 2, 3], q)


def test_latency_summary_in_milliseconds():
    s = B.latency_summary([0.010, 0.020, 0.030, 0.040])
    assert s == {"n": 4, "min": 10.0, "mean": 25.0, "p50": 20.0, "p90": 40.0, "p99": 40.0, "max": 40.0}
    empty = B.latency_summary([])
    assert empty["n"] == 0 and all(empty[k] is None for k in ("min", "mean", "p50", "p90", "p99", "max"))


def test_stage_aggregation_from_server_timing_headers():
    stages = [parse_server_timing(HEADER), parse_server_timing(HEADER.replace("14.0", "16.0")),
              parse_server_timing("decode;dur=4.7, bogus, nodur;x=1")]
    agg = B.aggregate_stages(stages)
    assert list(agg) == ["decode", "letterbox", "transport", "predictor-queue", "predictor-inference",
                         "predictor-nms", "predictor-total", "postprocess"]
    assert agg["decode"] == {"n": 3, "mean_ms": pytest.approx(3.367, abs=1e-3), "p50_ms": 2.7}
    assert agg["predictor-inference"] == {"n": 2, "mean_ms": 15.0, "p50_ms": 14.0}
    assert agg["predictor-queue"]["mean_ms"] == pytest.approx(0.02)
    assert "nodur" not in agg and "bogus" not in agg


def test_stage_aggregation_ignores_non_numbers():
    agg = B.aggregate_stages([{"a": 0.001, "b": float("nan"), "c": "x", "d": True}, {}])
    assert agg == {"a": {"n": 1, "mean_ms": 1.0, "p50_ms": 1.0}}
    assert B.aggregate_stages([]) == {}


def test_level_summary_counts_errors_by_status_and_uses_ok_latencies():
    samples = [B.Sample(0.010, True, "200", {"decode": 0.002}),
               B.Sample(0.030, True, "200", {"decode": 0.004}),
               B.Sample(5.000, False, "503", {"decode": 9.0}),
               B.Sample(0.001, False, "ConnectError"),
               B.Sample(0.002, False, "503")]
    lv = B.level_summary(2, samples, wall_s=2.0)
    assert lv["concurrency"] == 2 and lv["requests"] == 5 and lv["ok"] == 2 and lv["errors"] == 3
    assert lv["errors_by_status"] == {"503": 2, "ConnectError": 1}
    assert lv["throughput_rps"] == 1.0 and lv["throughput_ips"] == 1.0
    assert lv["latency_ms"]["max"] == 30.0  # the 5 s failure is not a latency sample
    assert lv["stages"] == {"decode": {"n": 2, "mean_ms": 3.0, "p50_ms": 2.0}}
    assert B.level_summary(1, samples, wall_s=2.0, images_per_request=4)["throughput_ips"] == 4.0


# --------------------------------------------------------------------------------------------
# the closed loop


def test_closed_loop_runs_exactly_n_requests_at_the_given_concurrency():
    inflight, peak, calls = [0], [0], [0]

    async def send():
        inflight[0] += 1
        peak[0] = max(peak[0], inflight[0])
        await asyncio.sleep(0)  # yield: the other clients start before this one finishes
        inflight[0] -= 1
        calls[0] += 1
        if calls[0] % 5 == 0:
            raise TimeoutError("slow")
        return True, "200", {"decode": 0.001}

    samples, wall = asyncio.run(B.closed_loop(send, 3, requests=20))
    assert len(samples) == 20 and calls[0] == 20
    assert peak[0] == 3
    assert wall > 0
    lv = B.level_summary(3, samples, wall)
    assert lv["errors_by_status"] == {"TimeoutError": 4} and lv["ok"] == 16


def test_closed_loop_stops_after_the_duration():
    """A fake clock: each request takes 10 ms of it; none may start at or after the deadline."""
    now, starts = [100.0], []

    async def send():
        starts.append(now[0])
        now[0] += 0.01
        await asyncio.sleep(0)
        return True, "200", {}

    samples, wall = asyncio.run(B.closed_loop(send, 2, duration=0.15, clock=lambda: now[0]))
    assert all(t < 100.15 for t in starts)
    assert len(samples) == len(starts) >= 15  # 0.15 s of 10 ms requests, two clients in turn
    assert wall == pytest.approx(now[0] - 100.0)
    # a request bound and a duration: whichever comes first
    samples, _ = asyncio.run(B.closed_loop(send, 2, duration=5.0, requests=3, clock=lambda: now[0]))
    assert len(samples) == 3


def test_closed_loop_uses_grpc_code_names():
    class FakeRpcError(Exception):
        def code(self):
            class Code:
                name = "UNAVAILABLE"
            return Code()

    async def send():
        raise FakeRpcError()

    samples, _ = asyncio.run(B.closed_loop(send, 1, requests=2))
    assert [s.status for s in samples] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert not any(s.ok for s in samples)


def test_closed_loop_needs_a_bound():
    async def send():
        return True, "200", {}

    with pytest.raises(ValueError):
        asyncio.run(B.closed_loop(send, 1))
    with pytest.raises(ValueError):
        asyncio.run(B.closed_loop(send, 0, requests=1))


def test_time_runs_and_engine_summary():
    calls = []
    times = B.time_runs(lambda: calls.append(1), seconds=0.0, min_runs=5, warmup=2)
    assert len(times) == 5 and len(calls) == 7
    s = B.engine_batch_summary([0.1, 0.1, 0.2, 0.2], 8)
    assert s["runs"] == 4 and s["ips"] == pytest.approx(32 / 0.6, rel=1e-3)
    assert s["latency_ms"]["p50"] == 100.0


def test_measure_gemm_reports_gflops():
    g = B.measure_gemm(n=64, seconds=0.01, min_runs=3)
    assert g["n"] == 64 and g["iterations"] >= 3 and "blas_core" in g
    assert 0 < g["gflops"] <= g["gflops_best"]


# --------------------------------------------------------------------------------------------
# ratios, baseline and the report


def _level(c, rps, p50, stages=None, errors=0):
    return {"concurrency": c, "requests": 10 + errors, "ok": 10, "errors": errors,
            "errors_by_status": {"503": errors} if errors else {}, "wall_s": 10 / rps,
            "throughput_rps": rps, "throughput_ips": rps,
            "latency_ms": {"n": 10, "min": p50, "mean": p50, "p50": p50, "p90": p50, "p99": p50, "max": p50},
            "stages": stages or {}}


def _sections():
    e2e = {"target": "http://127.0.0.1:1", "protocol": "v1 raw JPEG", "levels": [
        _level(1, 25.0, 40.0, {"predictor-inference": {"n": 10, "mean_ms": 30.0, "p50_ms": 30.0}}),
        _level(4, 30.0, 130.0), _level(8, 32.0, 250.0, errors=2)]}
    pred = {"target": "127.0.0.1:2", "protocol": "grpc-v2 UINT8 tensor", "levels": [
        _level(1, 30.0, 32.0), _level(4, 36.0, 110.0), _level(8, 36.0, 220.0)]}
    lat = B.latency_summary([0.027])
    engine = {"engine": "onnxruntime", "precision": "fp32", "threads": 2, "input_size": 416,
              "batch1": {"runs": 1, "latency_ms": lat, "ips": 37.0},
              "batch8": {"runs": 1, "latency_ms": lat, "ips": 38.0}}
    model = {"model_dir": "models/yolov3-tiny", "cfg": "yolov3-tiny.cfg", "width": 416, "height": 416,
             "gflop": 5.565, "floor_ms": 27.0, "floor_ips": 1000 / 27.0}
    return e2e, pred, engine, model


def test_ratios():
    e2e, pred, engine, model = _sections()
    r = B.compute_ratios(e2e, pred, engine, model)
    assert r["latency_concurrency"] == 1 and r["throughput_concurrency"] == 8
    assert r["predictor_inference_over_engine"] == pytest.approx(30 / 27, abs=1e-3)
    assert r["e2e_p50_over_predictor_p50"] == pytest.approx(40 / 32, abs=1e-3)
    assert r["e2e_throughput_over_engine"] == pytest.approx(32 / 37, abs=1e-3)
    assert r["predictor_throughput_over_engine"] == pytest.approx(36 / 37, abs=1e-3)
    vf = r["vs_floor"]
    assert vf["engine_p50"] == 1.0 and vf["e2e_p50"] == pytest.approx(40 / 27, abs=1e-3)
    assert vf["predictor_inference_p50"] == pytest.approx(30 / 27, abs=1e-3)
    assert vf["e2e_ips"] == pytest.approx(32 * 27 / 1000, abs=1e-3)
    # nothing measured but the floor: every ratio is null, nothing raises
    empty = B.compute_ratios(None, None, None, model)
    assert empty["latency_concurrency"] is None and empty["e2e_p50_over_predictor_p50"] is None
    assert all(v is None for v in empty["vs_floor"].values())
    # without c=8 the throughput ratios use the highest level
    e2e["levels"] = e2e["levels"][:2]
    pred["levels"] = pred["levels"][:2]
    assert B.compute_ratios(e2e, pred, None, None)["throughput_concurrency"] == 4


def test_baseline_constants_and_speedup():
    base = B.TUTORIAL_BASELINE
    assert base["source"] == "docs/tutorial-baseline.md (shared)"
    assert (base["levels"]["1"]["rps_low"], base["levels"]["1"]["rps_high"]) == (2.42, 2.50)
    assert base["levels"]["1"]["p50_ms"] == 399.0
    assert base["ceiling_rps"] == [2.60, 2.68]
    e2e, *_ = _sections()
    cmp = B.baseline_comparison(e2e)
    sp = cmp["speedup"]
    assert set(sp["levels"]) == {"1", "4", "8"}
    assert sp["levels"]["1"] == {"throughput_low": 10.0, "throughput_high": 10.33, "p50": 9.97}
    assert sp["levels"]["8"]["throughput_low"] == sp["levels"]["8"]["throughput_high"] == 11.94
    assert sp["peak_throughput_low"] == 11.94 and sp["peak_throughput_high"] == 12.31
    none = B.baseline_comparison(None)
    assert none["speedup"]["levels"] == {} and none["speedup"]["peak_throughput_low"] is None


def _report(**over):
    e2e, pred, engine, model = _sections()
    kw = dict(config={"model": "yolov3", "image": "dog.jpg", "image_width": 768, "image_height": 576,
                      "image_bytes": 1, "input_size": 416},
              gemm={"n": 2048, "seconds": 2.0, "iterations": 20, "gflops": 200.0, "gflops_best": 205.0},
              model=model, e2e=e2e, predictor=pred, engine=engine,
              system={"cpus": 2, "platform": "x", "python": "3", "numpy": "2"})
    kw.update(over)
    return B.build_report(**kw)


def test_report_schema_round_trips_as_json():
    report = _report()
    assert B.validate_report(report) == []
    assert report["schema"] == B.SCHEMA and report["errors"] == 2
    text = json.dumps(report, allow_nan=False)
    back = json.loads(text)
    assert B.validate_report(back) == []
    assert list(back) == ["schema", "created", "config", "system", "gemm", "model", "e2e", "predictor",
                          "engine", "ratios", "baseline", "errors"]
    for lv in back["e2e"]["levels"]:
        assert all(not (isinstance(v, float) and math.isnan(v)) for v in lv["latency_ms"].values())


def test_report_with_only_some_sections_is_valid():
    report = _report(e2e=None, predictor=None, model=None, gemm=None)
    assert B.validate_report(report) == []
    assert report["errors"] == 0 and report["ratios"]["latency_concurrency"] is None
    B.format_report(report)  # renders without the missing sections


def test_validate_report_finds_problems():
    report = _report()
    del report["ratios"]["vs_floor"]
    del report["e2e"]["levels"][0]["stages"]
    report["predictor"]["levels"][1]["latency_ms"].pop("p99")
    report["schema"] = "other"
    problems = B.validate_report(report)
    assert "ratios: missing 'vs_floor'" in problems
    assert "e2e.levels[0]: missing 'stages'" in problems
    assert "predictor.levels[1].latency_ms: missing 'p99'" in problems
    assert any(p.startswith("schema") for p in problems)
    assert B.validate_report([]) == ["report: not an object"]


def test_format_report_has_every_table():
    text = B.format_report(_report())
    for needle in ("end to end (transformer)", "predictor alone", "raw engine in-process",
                   "predictor-inference", "ratios (latency at c=1, throughput at c=8)",
                   "vs the tutorial baseline", "2.42-2.50 req/s", "c=8: throughput 11.94x",
                   "503 x2", "2 request(s) failed"):
        assert needle in text, needle


def test_write_chart(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench.png"
    assert B.write_chart(_report(), str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# CLI usage errors (checked before anything is measured)


@pytest.mark.parametrize("argv, message", [
    (["--predictor-only"], "--predictor-only needs --predictor-grpc"),
    (["--engine-only", "--precision", "bf16"], "--precision bf16 needs --engine openvino"),
    (["--skip-e2e"], "--skip-e2e leaves nothing to measure"),
    (["--input-size", "100"], "multiple of 32"),
    (["--image", "/nonexistent/x.jpg"], "cannot read --image"),
])
def test_usage_errors(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--concurrency", "0"], ["--concurrency", "a,b"],
                                  ["--duration", "-1"], ["--requests", "0"]])
def test_bad_values_are_usage_errors(argv):
    assert main(argv) == 2


def test_yolo_kserve_bench_forwards_to_the_dev_tooling(capsys):
    assert cli_main(["bench", "--concurrency", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: yolo-kserve bench") and "concurrency levels must be >= 1" in err


# --------------------------------------------------------------------------------------------
# the served size and preprocessing come from the cfg, as the predictor publishes them


def _model_dir(tmp_path, cfg_name):
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "data" / "cfg" / cfg_name
    (tmp_path / cfg_name).write_bytes(src.read_bytes())
    (tmp_path / "x.weights").write_bytes(b"")
    (tmp_path / "coco.names").write_text("a\n")
    return tmp_path


@pytest.mark.parametrize("cfg, size, expect", [
    ("yolov3-tiny.cfg", 0, (416, 416, "pjreddie", "letterbox")),
    ("yolov4-tiny.cfg", 0, (416, 416, "alexeyab", "resize")),
    ("yolov4.cfg", 0, (608, 608, "alexeyab", "resize")),
    ("yolov4.cfg", 320, (320, 320, "alexeyab", "resize")),
])
def test_model_info_follows_the_cfg(tmp_path, cfg, size, expect):
    from yolo_devtools.bench import _model_info

    info = _model_info(_model_dir(tmp_path, cfg), size, 100.0)
    assert (info["width"], info["height"], info["lineage"], info["preprocess"]) == expect
    assert info["gflop"] > 0 and info["floor_ms"] == pytest.approx(info["gflop"] / 100.0 * 1000, rel=1e-3)


def test_tensor_is_resized_or_letterboxed_as_the_model_asks():
    from pathlib import Path

    import numpy as np

    from yolo_devtools.bench import _letterboxed

    data = (Path(__file__).resolve().parents[1] / "data" / "images" / "dog.jpg").read_bytes()
    boxed = _letterboxed(data, 416, 416, "letterbox")
    resized = _letterboxed(data, 416, 320, "resize")
    assert boxed.shape == (1, 3, 416, 416) and resized.shape == (1, 3, 320, 416)
    # 768x576 letterboxed to 416: 416x312 of picture, grey (128) rows above and below
    assert (boxed[0, :, :52, :] == 128).all() and not (boxed[0, :, 52:364, :] == 128).all()
    assert not (resized[0, :, :52, :] == 128).all()
    assert boxed.dtype == resized.dtype == np.uint8
