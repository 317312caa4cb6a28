"""``yolo-kserve bench`` against a real predictor + transformer (yolov3-tiny), briefly.

Only the shape of the report and the absence of errors are checked: the numbers depend on the
machine and on whatever else runs on it.
"""

from __future__ import annotations

import json

import pytest

from sdk_client.cli import main as cli_main
from yolo_devtools import benchmark as B
from yolo_devtools.bench import main

pytestmark = [pytest.mark.component, pytest.mark.model]


def test_bench_against_live_stack(live_stack, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    chart = tmp_path / "bench.png"
    rc = cli_main([  # through `yolo-kserve bench`, which forwards to yolo_devtools.bench
        "bench", "--url", live_stack.transformer_url, "--requests", "6", "--concurrency", "1,2",
        "--warmup", "1", "--pause", "0", "--json", str(out), "--chart", str(chart),
        "--engine-only", "--threads", "1", "--engine-seconds", "0.3", "--gemm-seconds", "0.3",
        "--model-dir", str(tiny_model_dir),
        "--predictor-only", "--predictor-grpc", live_stack.predictor_grpc, "-q",
    ])
    stdout, stderr = capsys.readouterr()
    assert rc == 0, stderr
    report = json.loads(out.read_text())
    assert B.validate_report(report) == []
    assert report["errors"] == 0

    for section, stages in (("e2e", {"decode", "letterbox", "transport", "predictor-inference",
                                     "predictor-total", "postprocess"}),
                            ("predictor", {"predictor-queue", "predictor-inference", "predictor-total"})):
        levels = report[section]["levels"]
        assert [lv["concurrency"] for lv in levels] == [1, 2]
        for lv in levels:
            assert lv["requests"] == lv["ok"] == 6 and lv["errors"] == 0 and lv["errors_by_status"] == {}
            assert lv["throughput_rps"] > 0 and lv["latency_ms"]["n"] == 6
            assert lv["latency_ms"]["p50"] <= lv["latency_ms"]["p90"] <= lv["latency_ms"]["p99"]
            assert stages <= set(lv["stages"]), lv["stages"]
            assert all(st["n"] == 6 for st in lv["stages"].values())
    assert report["e2e"]["target"] == live_stack.transformer_url
    assert report["predictor"]["target"] == live_stack.predictor_grpc

    engine = report["engine"]
    assert engine["engine"] == "onnxruntime" and engine["precision"] == "fp32" and engine["threads"] == 1
    assert engine["batch1"]["runs"] >= 10 and engine["batch8"]["runs"] >= 3
    assert engine["batch1"]["ips"] > 0 and engine["batch8"]["ips"] > 0
    assert report["model"]["cfg"] == "yolov3-tiny.cfg" and report["model"]["gflop"] == pytest.approx(5.565, abs=0.01)
    assert report["gemm"]["gflops"] > 0 and report["model"]["floor_ms"] > 0
    ratios = report["ratios"]
    assert ratios["latency_concurrency"] == 1 and ratios["throughput_concurrency"] == 2
    assert all(v is not None for k, v in ratios.items() if k != "vs_floor")
    assert all(v is not None for v in ratios["vs_floor"].values())
    assert set(report["baseline"]["speedup"]["levels"]) == {"1"}

    assert "end to end (transformer)" in stdout and "predictor alone" in stdout
    assert "raw engine in-process" in stdout and "vs the tutorial baseline" in stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        assert chart.read_bytes()[:4] == b"\x89PNG"


def test_bench_reports_an_unreachable_target(tmp_path, capsys):
    from yolo_devtools.stack import free_ports

    (port,) = free_ports(1)
    rc = main(["--url", f"http://127.0.0.1:{port}", "--requests", "2", "--concurrency", "1",
               "--warmup", "1", "--gemm-seconds", "0.1", "--timeout", "2", "-q"])
    assert rc == 1
    assert "no warm-up request" in capsys.readouterr().err


def test_bench_start_stack_starts_and_stops_its_servers(tiny_model_dir, tmp_path, capsys):
    import httpx

    out = tmp_path / "stack.json"
    rc = main(["--start-stack", "--model-dir", str(tiny_model_dir), "--stack-threads", "1",
               "--requests", "3", "--concurrency", "1", "--warmup", "1", "--gemm-seconds", "0.1",
               "--predictor-only", "--json", str(out)])
    _, stderr = capsys.readouterr()
    assert rc == 0, stderr
    report = json.loads(out.read_text())
    assert B.validate_report(report) == [] and report["errors"] == 0
    assert report["config"]["start_stack"] is True
    url = report["e2e"]["target"]
    assert url.startswith("http://127.0.0.1:") and report["predictor"]["target"].startswith("127.0.0.1:")
    assert report["e2e"]["levels"][0]["ok"] == report["predictor"]["levels"][0]["ok"] == 3
    with pytest.raises(httpx.TransportError):  # the servers are gone
        httpx.get(url + "/v2/health/live", timeout=2.0, trust_env=False)
