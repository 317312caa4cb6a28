"""Print how far an engine/precision moves detections from pjreddie Darknet's references.

    .venv/bin/python scripts/engine_fidelity.py --engine openvino --precision bf16

For each shared test image and threshold (0.5, 0.25): whether the detection set equals Darknet's,
the largest confidence change and the smallest IoU of matched boxes. Same decode + letterbox as the
transformer (Pillow + Darknet-exact letterbox, uint8 on the wire), so only the engine differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from predictor import darknet  # noqa: E402
from predictor.engine import create_engine  # noqa: E402
from predictor.onnx_graph import build_onnx  # noqa: E402
from predictor.yolo import DecodeParams, detect  # noqa: E402
from transformer import geometry, imaging  # noqa: E402
from yolo_devtools.matching import pair_with_reference  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", default="onnxruntime")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--model-dir", default=str(REPO / "models" / "yolov3-tiny"))
    args = p.parse_args()
    files = darknet.find_model_files(args.model_dir)
    net = darknet.load_weights(darknet.parse_cfg(files.cfg), files.weights)
    names = darknet.read_names(files.names, net.classes)
    engine = create_engine(args.engine, build_onnx(net).SerializeToString(), 2, args.precision)
    data = REPO / "tests" / "data"
    worst = {"max_dconf": 0.0, "min_iou": 1.0, "set_changes": 0}
    for thresh in ("0.5", "0.25"):
        ref_all = json.loads((data / f"darknet-yolov3-tiny-t{thresh}.json").read_text())["images"]
        for name, ref in ref_all.items():
            u8, lb = geometry.letterbox_uint8(imaging.decode_image((data / "images" / name).read_bytes()), 416, 416)
            outs = engine.run((u8.astype(np.float32) / np.float32(255))[None])
            rows = detect([o[0] for o in outs], net.yolo_layers, 416, 416, DecodeParams(confidence=float(thresh)))
            boxes = geometry.unletterbox_boxes(rows[:, :4], lb)
            got = [(names[int(r[5])], float(r[4]), b) for r, b in zip(rows, boxes)]
            same = sorted(g[0] for g in got) == sorted(r[0] for r in ref)
            pairs = [(iou, d) for _, match, iou, d in pair_with_reference(got, ref) if match is not None]
            dconf = max((d for _, d in pairs), default=0.0)
            miou = min((iou for iou, _ in pairs), default=1.0)
            worst["max_dconf"] = max(worst["max_dconf"], dconf)
            worst["min_iou"] = min(worst["min_iou"], miou)
            worst["set_changes"] += not same
            print(f"t={thresh} {name:11s} same set: {str(same):5s} max |Δconf| {dconf:.4f}  min IoU {miou:.4f}"
                  + ("" if same else f"  got {sorted(g[0] for g in got)} vs {sorted(r[0] for r in ref)}"))
    print(f"{args.engine} {args.precision}: max |Δconf| {worst['max_dconf']:.4f}, min IoU {worst['min_iou']:.4f}, "
          f"detection sets changed: {worst['set_changes']} of 10")
    return 0


if __name__ == "__main__":
    sys.exit(main())
