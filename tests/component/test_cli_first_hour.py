"""A new user's first hour with the ``yolo-kserve`` CLI, against a real predictor + transformer.

Each test pins one problem found by following the README from a fresh clone (issue 12): existing
results emptied, per-image failures instead of one clear error, hidden labels, ``--resume`` mixing
parameters and path spellings, unknown models, huge images, refused formats, a second ``serve``,
outputs out of order or unrounded, COCO files ``loadRes`` cannot read, and the inputs and outputs
Ultralytics/Roboflow users expect (URLs, videos, YOLO txt, CSV, one summary line per image).
"""

from __future__ import annotations

import csv
import functools
import http.server
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdk_client import DetectionResult
from sdk_client.annotate import class_color, label_boxes
from sdk_client.cli import main

pytestmark = [pytest.mark.component, pytest.mark.model]

DATA = Path(__file__).resolve().parent.parent / "data"
IMAGES = DATA / "images"
DOG = IMAGES / "dog.jpg"
#: dog.jpg at 0.5 (pjreddie Darknet, tests/data/darknet-yolov3-tiny-t0.5.json): car .615,
#: bicycle .585, dog .571, truck .558, car .517 -- the truck and the second car share one box.
DOG_CLASSES = ["bicycle", "car", "car", "dog", "truck"]


def detect(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["detect", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- 1. results are never emptied; a server that is down is one clear error -------------------


def test_existing_results_are_never_emptied(live_stack, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    out.write_text('{"earlier": "work"}\n')
    rc, _, err = detect(capsys, DOG, "--url", live_stack.transformer_url, "-o", out, "-q")
    assert rc == 2 and "already exists" in err and "--overwrite" in err and "--resume" in err
    assert out.read_text() == '{"earlier": "work"}\n'

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    rc, _, err = detect(capsys, broken, "--url", live_stack.transformer_url, "-o", out,
                        "--overwrite", "-q")
    assert rc == 1 and "0 ok, 1 failed" in err and "left as it was" in err
    assert out.read_text() == '{"earlier": "work"}\n'  # every image failed: old file kept

    rc, _, err = detect(capsys, DOG, "--url", live_stack.transformer_url, "-o", out,
                        "--overwrite", "-q")
    assert rc == 0, err
    assert [Path(r["image"]).name for r in records(out)] == ["dog.jpg"]
    assert not list(tmp_path.glob(".yolo-kserve-*"))  # no temporary file left behind


def test_a_stopped_transformer_is_one_clear_error(live_stack, tmp_path, capsys):
    """The predictor is up but the URL names a port where nothing listens: one line, no
    per-image retries (400 images used to take minutes to print 400 identical lines)."""
    from yolo_devtools.stack import free_ports

    (port,) = free_ports(1)
    many = [IMAGES / n for n in ("bird.jpg", "dog.jpg", "eagle.jpg", "horses.jpg", "person.jpg")]
    rc, _, err = detect(capsys, *many, "--url", f"http://127.0.0.1:{port}", "--retries", "1")
    assert rc == 1
    assert err.strip().count("\n") == 0, err
    assert f"cannot reach http://127.0.0.1:{port}" in err


# -- 3. labels are never hidden -------------------------------------------------------------


def test_annotated_labels_never_hide_each_other(live_stack, tmp_path, capsys):
    out, ann = tmp_path / "out.jsonl", tmp_path / "annotated"
    rc, _, err = detect(capsys, DOG, "--url", live_stack.transformer_url, "--conf", "0.5",
                        "-o", out, "--save-annotated", ann, "-q")
    assert rc == 0, err
    (rec,) = records(out)
    result = DetectionResult.from_dict(rec)
    assert sorted(d.class_name for d in result.detections) == DOG_CLASSES
    labels = label_boxes(result, (result.width, result.height))
    assert len(labels) == 5  # every detection gets a label
    rects = [r for _, _, r in labels]
    for i, a in enumerate(rects):
        assert 0 <= a[0] and 0 <= a[1] and a[2] <= result.width and a[3] <= result.height
        for b in rects[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)

    # In the saved image every tag shows its own class colour (not another tag's on top of it).
    img = np.asarray(Image.open(ann / "dog.jpg").convert("RGB")).astype(int)
    for det, text, (x0, y0, x1, y1) in labels:
        tag = img[int(y0) + 1:int(y1) - 1, int(x0) + 1:int(x1) - 1].reshape(-1, 3)
        colour = np.array(class_color(det.class_id, det.class_name))
        share = (np.abs(tag - colour).max(axis=1) < 60).mean()
        assert share > 0.4, f"label {text!r} is hidden ({share:.0%} of its tag in its colour)"


# -- 4. --resume: same parameters only, paths matched once resolved --------------------------


def test_resume_matches_resolved_paths_and_refuses_other_parameters(live_stack, tmp_path, capsys,
                                                                  monkeypatch):
    out = tmp_path / "out.jsonl"
    monkeypatch.chdir(DATA)
    rc, _, err = detect(capsys, "images/dog.jpg", "images/bird.jpg", "--url",
                        live_stack.transformer_url, "--conf", "0.3", "-o", out, "-q")
    assert rc == 0, err
    first = records(out)
    assert [r["image"] for r in first] == ["images/dog.jpg", "images/bird.jpg"]
    assert first[0]["parameters"]["confidence"] == 0.3

    # the same images by absolute path, plus one more: only the new one is sent
    rc, _, err = detect(capsys, IMAGES / "dog.jpg", IMAGES / "bird.jpg", IMAGES / "eagle.jpg",
                        "--url", live_stack.transformer_url, "--conf", "0.3", "-o", out,
                        "--resume", "-q")
    assert rc == 0, err
    assert "1 ok, 0 failed, 2 skipped" in err
    assert [Path(r["image"]).name for r in records(out)] == ["dog.jpg", "bird.jpg", "eagle.jpg"]

    # other parameters: refused, nothing written
    before = out.read_text()
    rc, _, err = detect(capsys, IMAGES / "horses.jpg", "--url", live_stack.transformer_url,
                        "--conf", "0.5", "--classes", "horse", "-o", out, "--resume", "-q")
    assert rc == 2
    assert "other parameters" in err and "confidence 0.3 there, 0.5 now" in err
    assert out.read_text() == before


# -- 5. a wrong --model names the models that exist ----------------------------------------


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_unknown_model_is_one_error_listing_the_served_models(live_stack, capsys, protocol):
    rc, _, err = detect(capsys, DOG, IMAGES / "bird.jpg", "--url", live_stack.transformer_url,
                        "--protocol", protocol, "--model", "yolov4")
    assert rc == 1
    assert err.strip().count("\n") == 0, err
    assert "model 'yolov4' not found" in err and "models served there: yolov3" in err


def test_unknown_model_over_grpc_is_one_error(live_stack, capsys):
    rc, _, err = detect(capsys, DOG, "--url", live_stack.transformer_grpc, "--protocol", "grpc",
                        "--model", "yolov4")
    assert rc == 1 and err.strip().count("\n") == 0, err
    assert "model 'yolov4' not found" in err


def test_models_command_shows_what_the_server_describes(live_stack, capsys):
    assert main(["models", "--url", live_stack.transformer_url]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["MODEL", "READY", "VERSION", "INPUT", "CLASSES"]
    assert out.splitlines()[1].split()[:2] == ["yolov3", "yes"]

    assert main(["models", "--url", live_stack.transformer_url, "--json"]) == 0
    (model,) = json.loads(capsys.readouterr().out)
    assert model["name"] == "yolov3" and model["ready"] is True
    params = model["parameters"]
    # Shown when the server describes the model (the model-info branch adds them):
    if "classes" in params:
        assert model["classes"] == params["classes"] and "dog" in model["classes"]
    if "input_width" in params:
        assert model["input_size"] == [params["input_width"], params["input_height"]]

    # the predictor describes its input tensor: the size is read from it
    assert main(["models", "--url", live_stack.predictor_url, "--json"]) == 0
    (pred,) = json.loads(capsys.readouterr().out)
    assert pred["input_size"] == [416, 416]

    assert main(["models", "yolov4", "--url", live_stack.transformer_url]) == 1
    assert "models served there: yolov3" in capsys.readouterr().out


# -- 7. --max-side: downscaled on the client, boxes in the original's pixels ------------------


def test_max_side_downscales_before_upload_and_maps_boxes_back(live_stack, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.open(DOG).resize((3072, 2304), Image.Resampling.BICUBIC).save(big)
    out = tmp_path / "out.jsonl"
    rc, _, err = detect(capsys, big, DOG, "--url", live_stack.transformer_url, "--conf", "0.5",
                        "--max-side", "768", "-o", out, "-q")
    assert rc == 0, err
    big_rec, dog_rec = records(out)
    assert (big_rec["width"], big_rec["height"]) == (3072, 2304)  # the original's size
    assert big_rec["parameters"]["max_side"] == 768
    got = DetectionResult.from_dict(big_rec).detections
    ref = DetectionResult.from_dict(dog_rec).detections  # dog.jpg is 768 wide: not resized
    assert sorted(d.class_name for d in got) == sorted(d.class_name for d in ref)
    for d in ref:  # the same objects, 4x the coordinates
        scaled = d.scaled(4.0, 4.0)
        best = max((g for g in got if g.class_name == d.class_name), key=scaled.iou)
        assert scaled.iou(best) > 0.9


# -- 8. folders and globs collect only what the server accepts ------------------------------


def test_folders_collect_only_formats_the_server_accepts(live_stack, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "dog.jpg").write_bytes(DOG.read_bytes())
    Image.open(IMAGES / "bird.jpg").save(folder / "bird.webp")
    Image.open(IMAGES / "eagle.jpg").save(folder / "scan.tif")
    Image.open(IMAGES / "eagle.jpg").save(folder / "scan.tiff")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out.jsonl"
    rc, _, err = detect(capsys, folder, "--url", live_stack.transformer_url, "-o", out, "-q")
    assert rc == 0, err
    assert "2 ok, 0 failed" in err
    assert [Path(r["image"]).name for r in records(out)] == ["bird.webp", "dog.jpg"]
    rc, _, err = detect(capsys, str(folder / "*.tif*"), "--url", live_stack.transformer_url, "-q")
    assert rc == 2 and "no images or videos the server accepts" in err


def test_the_sdk_format_list_is_the_transformers_allow_list():
    from sdk_client.sources import IMAGE_EXTENSIONS
    from transformer.imaging import ALLOWED_FORMATS

    by_format = {"JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"}, "PNG": {".png"}, "WEBP": {".webp"},
                 "GIF": {".gif"}, "BMP": {".bmp"}}
    assert set(ALLOWED_FORMATS) == set(by_format)
    assert set(IMAGE_EXTENSIONS) == set().union(*by_format.values())


# -- 9. a second `serve` refuses clearly --------------------------------------------------


def test_serve_refuses_ports_that_are_taken(live_stack, tmp_path, capsys):
    from yolo_devtools.stack import free_ports

    p1, p2, p3 = free_ports(3)
    rc = main(["serve", "--model-dir", str(tmp_path), "--port", str(live_stack.transformer.http_port),
               "--grpc-port", str(p1), "--predictor-port", str(p2), "--predictor-grpc-port", str(p3)])
    _, err = capsys.readouterr()
    assert rc == 1
    assert f"port already in use: {live_stack.transformer.http_port} (transformer REST)" in err
    assert "another `make serve`" in err and "Traceback" not in err


# -- 14. order, rounding, COCO results ------------------------------------------------------


def test_jsonl_in_input_order_with_rounded_numbers(live_stack, tmp_path, capsys):
    order = ["person.jpg", "bird.jpg", "horses.jpg", "dog.jpg", "eagle.jpg"] * 2
    big = tmp_path / "big.jpg"
    Image.open(DOG).resize((1001, 751)).save(big, quality=95)  # rescaled boxes: odd factors
    inputs = [IMAGES / n for n in order[:5]] + [big]
    out = tmp_path / "out.jsonl"
    rc, _, err = detect(capsys, *inputs, "--url", live_stack.transformer_url, "--conf", "0.25",
                        "--max-side", "640", "--concurrency", "4", "-o", out, "-q")
    assert rc == 0, err
    assert [Path(r["image"]).name for r in records(out)] == order[:5] + ["big.jpg"]
    text = out.read_text()
    for key, decimals in (("x", 3), ("y", 3), ("width", 3), ("height", 3), ("confidence", 6)):
        for value in re.findall(rf'"{key}":(-?\d+\.\d+)', text):
            assert len(value.split(".")[1]) <= decimals, f"{key} {value}"


def test_coco_results_load_as_pycocotools_results(live_stack, tmp_path, capsys):
    coco = tmp_path / "coco.json"
    rc, _, err = detect(capsys, DOG, "--url", live_stack.transformer_url, "--conf", "0.5",
                        "--coco", coco, "-q")
    assert rc == 0, err
    doc = json.loads(coco.read_text())
    assert isinstance(doc, list)  # what COCO.loadRes takes, not a dataset dict
    by_id = {"bicycle": 2, "car": 3, "dog": 18, "truck": 8}  # official COCO category ids
    assert sorted(a["category_id"] for a in doc) == sorted(by_id[c] for c in DOG_CLASSES)
    for a in doc:
        assert set(a) == {"image_id", "category_id", "bbox", "score"} and a["image_id"] == 1


# -- inputs: URLs and videos ------------------------------------------------------------------


@pytest.fixture
def image_server():
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(IMAGES))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_urls_are_downloaded_with_a_size_limit(live_stack, image_server, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    rc, _, err = detect(capsys, f"{image_server}/dog.jpg", DOG, "--url", live_stack.transformer_url,
                        "--conf", "0.5", "-o", out, "--save-annotated", tmp_path / "ann", "-q")
    assert rc == 0, err
    from_url, from_file = records(out)
    assert from_url["image"] == from_url["source"] == f"{image_server}/dog.jpg"
    assert from_url["detections"] == from_file["detections"]
    assert (tmp_path / "ann" / "dog.jpg").exists()

    rc, _, err = detect(capsys, f"{image_server}/dog.jpg", f"{image_server}/missing.jpg",
                        "--url", live_stack.transformer_url, "--max-download-bytes", "1000", "-q")
    assert rc == 1
    assert "download refused" in err and ("larger than 1000 bytes" in err or "limit 1000" in err)
    assert "HTTP 404" in err


def _make_video(path: Path, seconds: float = 2.0, fps: int = 5) -> None:
    av = pytest.importorskip("av")
    frame = np.asarray(Image.open(DOG).convert("RGB"))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
        stream.bit_rate = 4_000_000
        for _ in range(int(seconds * fps)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_frames_sampled_at_fps_with_timestamps(live_stack, tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    _make_video(clip, seconds=2.0, fps=5)  # 10 frames, 0.2 s apart
    out, labels = tmp_path / "clip.jsonl", tmp_path / "labels"
    rc, _, err = detect(capsys, clip, "--url", live_stack.transformer_url, "--conf", "0.5",
                        "--fps", "2", "-o", out, "--save-txt", labels)
    assert rc == 0, err
    recs = records(out)
    assert [(r["frame"], r["time"]) for r in recs] == [(0, 0.0), (3, 0.6), (5, 1.0), (8, 1.6)]
    for r in recs:
        assert r["image"].endswith("clip.mp4") and (r["width"], r["height"]) == (768, 576)
        assert "dog" in [d["class"] for d in r["detections"]]
        assert (labels / f"clip_{r['frame']:06d}.txt").exists()
    assert re.search(r"clip\.mp4 frame 3 \(0\.60 s\): .*dog.*, \d+ ms", err)


# -- outputs: YOLO txt, CSV, one summary line per image --------------------------------------


def test_yolo_txt_csv_and_summary_lines(live_stack, tmp_path, capsys):
    out, labels, table = tmp_path / "out.jsonl", tmp_path / "labels", tmp_path / "out.csv"
    rc, _, err = detect(capsys, DOG, IMAGES / "bird.jpg", "--url", live_stack.transformer_url,
                        "--conf", "0.5", "-o", out, "--save-txt", labels, "--csv", table)
    assert rc == 0, err
    dog, bird = records(out)
    lines = [line.split() for line in (labels / "dog.txt").read_text().splitlines()]
    assert len(lines) == len(dog["detections"]) == 5
    for (cls, cx, cy, w, h), d in zip(lines, dog["detections"]):
        assert int(cls) == d["class_id"]
        assert float(cx) == pytest.approx(d["x"] / 768, abs=1e-6)
        assert float(cy) == pytest.approx(d["y"] / 576, abs=1e-6)
        assert float(w) == pytest.approx(d["width"] / 768, abs=1e-6)
        assert float(h) == pytest.approx(d["height"] / 576, abs=1e-6)

    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert [r["class"] for r in rows] == [d["class"] for d in dog["detections"]] + ["bird"]
    assert rows[-1]["image"].endswith("bird.jpg") and rows[-1]["image_width"] == "1024"

    assert re.search(r"dog\.jpg: 2 cars, 1 bicycle, 1 dog, 1 truck, \d+ ms", err), err
    assert re.search(r"bird\.jpg: 1 bird, \d+ ms", err), err
    assert "2 ok, 0 failed" in err


# -- `yolo-kserve serve` (= `make serve`) ------------------------------------------------------


@pytest.mark.slow
def test_serve_runs_the_stack_until_interrupted(tiny_model_dir, tmp_path, capsys):
    import os
    import signal
    import subprocess
    import sys

    from yolo_devtools.stack import free_ports, ports_in_use

    ports = free_ports(4)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from sdk_client.cli import main; sys.exit(main())",
         "serve", "--model-dir", str(tiny_model_dir), "--threads", "1", "--port", str(ports[0]),
         "--grpc-port", str(ports[1]), "--predictor-port", str(ports[2]),
         "--predictor-grpc-port", str(ports[3])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # as `make serve &` leaves it: SIGINT ignored; Ctrl-C (SIGINT) must stop it all the same
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines = []
    try:
        for line in proc.stdout:  # until the banner: both servers are ready
            lines.append(line)
            if "is serving" in line:
                break
        assert any("is serving" in x for x in lines), "".join(lines)
        url = f"http://127.0.0.1:{ports[0]}"
        rc, out, err = detect(capsys, DOG, "--url", url, "--conf", "0.5", "-q")
        assert rc == 0, err
        assert sorted(d["class"] for d in json.loads(out)["detections"]) == DOG_CLASSES
        # a second serve on the same ports is refused before starting anything
        rc = main(["serve", "--model-dir", str(tiny_model_dir), "--port", str(ports[0]),
                   "--grpc-port", str(ports[1]), "--predictor-port", str(ports[2]),
                   "--predictor-grpc-port", str(ports[3])])
        assert rc == 1 and "already in use" in capsys.readouterr().err
    finally:
        os.kill(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "stopped." in rest
    assert ports_in_use(ports) == []
