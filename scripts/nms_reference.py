"""Reference outputs of Darknet's own NMS (``do_nms_sort``, ``do_nms_obj``, ``box_iou``) for crafted cases.

    apt-get install -y darknet        # pjreddie Darknet, Debian package (libdarknet.so + darknet.h)
    .venv/bin/python scripts/nms_reference.py [--lib PATH] [--out tests/data/nms_reference.json]

Each case is a set of detections (centre/size boxes in network pixels, objectness, per-class
probabilities as ``get_yolo_detections`` leaves them: ``objectness * class_prob`` or 0). The script
builds Darknet's ``detection`` array through ctypes (the struct of include/darknet.h), calls the C
functions on a fresh copy per function, and maps the rows back to input order by their ``prob``
pointers (Darknet sorts the array in place). tests/unit/test_nms_reference.py runs
``predictor.yolo.nms_per_class`` / ``nms_obj`` on the same inputs and compares.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "data" / "nms_reference.json"


class Box(ctypes.Structure):  # typedef struct{ float x, y, w, h; } box;
    _fields_ = [("x", ctypes.c_float), ("y", ctypes.c_float), ("w", ctypes.c_float), ("h", ctypes.c_float)]


class Detection(ctypes.Structure):
    # typedef struct detection{ box bbox; int classes; float *prob; float *mask; float objectness; int sort_class; }
    _fields_ = [
        ("bbox", Box),
        ("classes", ctypes.c_int),
        ("prob", ctypes.POINTER(ctypes.c_float)),
        ("mask", ctypes.POINTER(ctypes.c_float)),
        ("objectness", ctypes.c_float),
        ("sort_class", ctypes.c_int),
    ]


def f32(values) -> list:
    """Values rounded to float32 (what Darknet stores), as JSON-exact Python floats."""
    return np.asarray(values, np.float32).astype(np.float64).tolist()


def case(name: str, about: str, boxes, objectness, probs, iou_threshold: float = 0.45) -> dict:
    probs = np.asarray(probs, np.float32)
    objectness = np.asarray(objectness, np.float32)
    assert probs.shape == (len(boxes), probs.shape[1]) and objectness.shape == (len(boxes),)
    assert (objectness > 0).all() and (probs <= objectness[:, None]).all()  # as get_yolo_detections makes them
    return {"name": name, "about": about, "iou_threshold": iou_threshold, "boxes": f32(boxes),
            "objectness": f32(objectness), "probs": f32(probs)}


def random_cluster(name: str, about: str, seed: int, n: int, classes: int, quantum: float | None) -> dict:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 200, (4, 2))
    pick = rng.integers(0, 4, n)
    boxes = np.empty((n, 4))
    boxes[:, :2] = centres[pick] + rng.normal(0, 8, (n, 2))
    boxes[:, 2:] = rng.uniform(20, 60, (n, 2))
    objectness = rng.uniform(0.3, 1.0, n)
    cls = rng.uniform(0, 1, (n, classes))
    if quantum:  # coarse values: many exact ties
        objectness = np.ceil(objectness / quantum) * quantum
        cls = np.round(cls / quantum) * quantum
    probs = np.float32(objectness)[:, None] * np.float32(cls)
    probs[probs <= np.float32(0.25)] = 0  # Darknet zeroes obj*cls <= thresh
    return case(name, about, boxes, objectness, probs)


def cases() -> list[dict]:
    return [
        case("same_class_overlap", "two overlapping boxes of one class: the lower one is suppressed; a distant one stays",
             [[100, 100, 50, 50], [105, 100, 50, 50], [300, 300, 50, 50]], [0.95, 0.9, 0.8],
             [[0.9, 0], [0.8, 0], [0.7, 0]]),
        case("two_classes_each_with_an_overlap", "per class, each class's own overlap is resolved independently",
             [[100, 100, 50, 50], [104, 102, 52, 48], [200, 120, 40, 60], [203, 118, 40, 62]], [0.9, 0.9, 0.9, 0.9],
             [[0.8, 0], [0.7, 0], [0, 0.6], [0, 0.85]]),
        case("chain", "A suppresses B, which would have suppressed C; A and C do not overlap enough, so C stays",
             [[10, 10, 10, 10], [13, 10, 10, 10], [16, 10, 10, 10]], [0.9, 0.8, 0.7], [[0.9, 0], [0.8, 0], [0.7, 0]]),
        case("cross_class_overlap", "different classes, heavy overlap: per-class NMS keeps both, objectness NMS one",
             [[10, 10, 10, 10], [11, 10, 10, 10], [40, 40, 10, 10]], [0.6, 0.9, 0.7], [[0.6, 0, 0], [0, 0.9, 0], [0.7, 0, 0]]),
        case("same_box_two_classes", "one box above the threshold in two classes, overlapped by a stronger box of one",
             [[50, 50, 30, 30], [52, 51, 30, 30]], [0.75, 0.85], [[0.7, 0.6], [0.8, 0]]),
        case("tie_same_class", "equal probabilities and objectness on overlapping boxes: the first in order stays",
             [[50, 50, 30, 30], [52, 50, 30, 30], [54, 50, 30, 30]], [0.8, 0.8, 0.8], [[0.8, 0], [0.8, 0], [0.8, 0]]),
        case("tie_after_other_class_sort", "a tie in class 1 between boxes that sorting class 0 reordered "
             "(Darknet sorts one array in place, class after class)",
             [[50, 50, 30, 30], [52, 50, 30, 30]], [0.95, 0.95], [[0.5, 0.7], [0.9, 0.7]]),
        case("zero_prob_rows", "rows with objectness but every class probability zeroed (below the threshold): "
             "they take no part per class, but suppress by objectness",
             [[60, 60, 40, 40], [62, 60, 40, 40], [64, 62, 40, 40]], [0.95, 0.9, 0.5], [[0, 0], [0.85, 0], [0, 0.45]]),
        case("iou_exactly_at_threshold", "IoU exactly 0.5 is not above 0.5: both stay; a pair just above is suppressed",
             [[50, 50, 40, 40], [50, 50, 40, 20], [150, 50, 40, 40], [150, 50, 40, 20.5]], [0.9, 0.8, 0.9, 0.8],
             [[0.9, 0], [0.8, 0], [0.9, 0], [0.8, 0]], iou_threshold=0.5),
        case("threshold_rounded_to_float32", "IoU 1/3 against a threshold of 1/3: Darknet compares in float32",
             [[0, 0, 2, 2], [1, 0, 2, 2]], [0.9, 0.8], [[0.9], [0.8]], iou_threshold=1 / 3),
        case("nested_and_zero_threshold", "IoU threshold 0: any overlap suppresses",
             [[50, 50, 40, 40], [75, 50, 20, 20], [120, 50, 10, 10]], [0.9, 0.85, 0.8], [[0.9], [0.85], [0.8]],
             iou_threshold=0.0),
        random_cluster("random_clusters", "40 boxes in 4 clusters, 3 classes, continuous scores (no ties)", 11, 40, 3, None),
        random_cluster("random_clusters_with_ties", "40 boxes in 4 clusters, 3 classes, scores on a 0.1 grid (many ties)",
                       12, 40, 3, 0.1),
    ]


def darknet_library(path: str | None) -> Path:
    if path:
        return Path(path)
    files = subprocess.run(["dpkg", "-L", "darknet"], capture_output=True, text=True, check=True).stdout.split()
    return Path(next(f for f in files if f.endswith("/libdarknet.so")))


def run_nms(lib, func: str, c: dict) -> dict:
    """Call ``func`` on a fresh detection array; probs/objectness back in input order."""
    probs = np.asarray(c["probs"], np.float32)
    n, classes = probs.shape
    dets = (Detection * n)()
    keep = []  # the prob arrays must live until the call returns
    owner = {}
    for i in range(n):
        row = (ctypes.c_float * classes)(*probs[i])
        keep.append(row)
        owner[ctypes.addressof(row)] = i
        dets[i].bbox = Box(*c["boxes"][i])
        dets[i].classes = classes
        dets[i].prob = ctypes.cast(row, ctypes.POINTER(ctypes.c_float))
        dets[i].objectness = c["objectness"][i]
        dets[i].sort_class = 0
    getattr(lib, func)(dets, n, classes, ctypes.c_float(c["iou_threshold"]))
    out_probs, out_obj = [None] * n, [None] * n
    for d in dets:
        i = owner[ctypes.cast(d.prob, ctypes.c_void_p).value]
        out_probs[i] = [d.prob[k] for k in range(classes)]
        out_obj[i] = d.objectness
    return {"probs": out_probs, "objectness": out_obj}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", help="libdarknet.so (default: the one of the Debian package darknet)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    lib_path = darknet_library(args.lib)
    lib = ctypes.CDLL(str(lib_path))
    for func in ("do_nms_sort", "do_nms_obj"):
        getattr(lib, func).argtypes = [ctypes.POINTER(Detection), ctypes.c_int, ctypes.c_int, ctypes.c_float]
        getattr(lib, func).restype = None
    lib.box_iou.argtypes = [Box, Box]
    lib.box_iou.restype = ctypes.c_float

    out = []
    for c in cases():
        boxes = c["boxes"]
        c["darknet"] = {
            "do_nms_sort": run_nms(lib, "do_nms_sort", c),
            "do_nms_obj": run_nms(lib, "do_nms_obj", c),
            "box_iou": [[lib.box_iou(Box(*a), Box(*b)) for b in boxes] for a in boxes] if len(boxes) <= 8 else None,
        }
        out.append(c)

    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "darknet"], capture_output=True, text=True).stdout
    doc = {
        "produced_by": {
            "script": "scripts/nms_reference.py",
            "darknet": f"Debian package darknet {version} (pjreddie/darknet), libdarknet.so called through ctypes: "
                       "do_nms_sort, do_nms_obj and box_iou of src/box.c",
            "libdarknet_sha256": hashlib.sha256(lib_path.read_bytes()).hexdigest(),
            "libc": " ".join(platform.libc_ver()),
            "note": "Darknet sorts with the C library's qsort; glibc's is a stable merge sort, which decides ties. "
                    "Rows are in input order; probs/objectness are the values after the call (suppressed = 0).",
        },
        "cases": out,
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(out)} cases to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
