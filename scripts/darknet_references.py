"""Regenerate the Darknet C reference data in tests/data/reference/ (YOLOv2 ... YOLOv7-tiny).

Every number in tests/data/reference comes from Darknet C itself, never from our decoder. This
script records how: it generates the weights (yolo_devtools.weightgen, fixed seed), runs the right
Darknet through its own library API via a small accessor shim of ours (scripts/darknet_refshim.c,
compiled here against that Darknet's include/darknet.h), and writes the tensors, detections and
manifests. Nothing of Darknet is copied into the repository.

Darknets (built outside the repository; the directory must hold include/darknet.h and
libdarknet.so):

* pjreddie (yolov2-tiny, yolov2, yolov3-spp): github.com/pjreddie/darknet, default Makefile
  (GPU=0 CUDNN=0 OPENCV=0 OPENMP=0: ``make -j2``). OPENCV=0 matters: with OpenCV (as in Debian's
  ``darknet`` package) load_image_color decodes with libjpeg instead of the bundled stb_image,
  which moves pixels by 1-3/255 and breaks consistency with tests/data/dog_tensors.
* AlexeyAB (yolov4-tiny, yolov4, yolov7-tiny): github.com/AlexeyAB/darknet,
  ``make LIBSO=1 GPU=0 CUDNN=0 OPENCV=0 AVX=0 OPENMP=0``. Never run AlexeyAB cfgs on pjreddie
  Darknet: it reads mish as ReLU and ignores route groups and scale_x_y.

    .venv/bin/python scripts/darknet_references.py --pjreddie ../darknet-pj --alexeyab ../darknet-ab \\
        --pjreddie-version "pjreddie/darknet f6afaabc... (make: GPU=0 ... OPENCV=0 OPENMP=0, gcc 12.2 -Ofast)" \\
        --alexeyab-version "AlexeyAB/darknet 59596d78... (make LIBSO=1 ... AVX=0 OPENMP=0, gcc 12.2 -Ofast)"
    .venv/bin/python scripts/darknet_references.py ... --models yolov2-tiny --out "$(mktemp -d)"  # then diff -r

Semantics reproduced (call chains through the library, not parsed CLI output):

* pjreddie = python/darknet.py ``detect()``: load_image_color -> network_predict_image
  (letterbox) -> get_network_boxes(net, im.w, im.h, thresh, hier .5, NULL, relative=0) ->
  do_nms_obj(.45) -> one entry per class with prob > 0. Plus one CLI variant (``darknet detector
  test``: letterbox_image, network_predict, get_network_boxes(relative=1), do_nms_sort(.45)).
* AlexeyAB = ``darknet detector test``: load_network_custom(batch 1; fuses batch norm),
  load_image(path, 0, 0, 3) (stb), resize_image to the network size (letterbox_image if the cfg
  has [net] letter_box=1), network_predict, get_network_boxes(net, im.w, im.h, thresh, .5, 0,
  relative=1, letter), then do_nms_sort or diounms_sort(nms_kind, beta_nms) per the LAST
  detection layer with nms=.45; entries = every class with prob > thresh; boxes relative x image
  size.

Checks on every run: weightgen's view of the cfg (conv specs and layer graph) must equal Darknet's
parsed network, and the per-image counts must equal the ``name: NN%`` lines printed by the CLI
``darknet detector test`` at the same threshold (AlexeyAB: the lower threshold; pjreddie: the CLI
variant), when the Darknet tree has its ``darknet`` binary.

Tensor references run at a reduced square size (fully convolutional; set at load time by parsing a
temporary copy of the cfg whose [net] width/height are changed, the committed cfg is untouched).
Each model runs in its own worker process (two libdarknet.so must never share a process).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from yolo_devtools import weightgen, zoo  # noqa: E402

DATA = REPO / "tests" / "data"
IMAGES = ("bird.jpg", "dog.jpg", "eagle.jpg", "horses.jpg", "person.jpg")
TENSOR_IMAGE = "dog.jpg"
NMS = 0.45
HIER = 0.5
SHIM = Path(__file__).resolve().parent / "darknet_refshim.c"

CANDIDATES_WHAT = (
    "every detection of get_network_boxes with objectness > 0, i.e. what do_nms_obj compares (sorted by "
    "objectness, class-agnostic), BEFORE NMS, in Darknet's order: [objectness, [cx, cy, w, h] in image pixels]. "
    "Boxes whose class probabilities are all <= thresh take part in do_nms_obj but never appear in the detections."
)

# our shim's stable codes (darknet_refshim.c)
T_NAMES = ("convolutional", "maxpool", "route", "shortcut", "upsample", "yolo", "region", "reorg", "other",
           "reorg3d", "sam", "scale_channels", "avgpool", "dropout")
A_NAMES = ("linear", "leaky", "logistic", "mish", "relu", "swish", "other")
NMS_KINDS = ("default", "greedynms", "diounms", "cornersnms")  # AlexeyAB NMS_KIND order


@dataclass(frozen=True)
class ModelRef:
    lineage: str  # "pjreddie" | "alexeyab"
    thresholds: tuple[float, float]
    tensor_size: int
    minor: int = 2  # weights header 0.<minor>.0 (0.1 -> int32 `seen`, like the official yolov2.weights)
    cli_variant: float | None = None  # also write the pjreddie CLI (do_nms_sort) variant at this thresh


MODELS: dict[str, ModelRef] = {
    "yolov2-tiny": ModelRef("pjreddie", (0.5, 0.25), 320, cli_variant=0.25),
    "yolov2": ModelRef("pjreddie", (0.5, 0.25), 320, minor=1),
    "yolov3-spp": ModelRef("pjreddie", (0.5, 0.25), 320),
    "yolov4-tiny": ModelRef("alexeyab", (0.5, 0.25), 320),
    "yolov4": ModelRef("alexeyab", (0.5, 0.25), 320),
    "yolov7-tiny": ModelRef("alexeyab", (0.5, 0.25), 320),
    # held-out cfgs of AlexeyAB's cfg/ that needed an addition: [shortcut] of different channel
    # counts (yolov3-tiny-prn: no AlexeyAB-only option, so served as pjreddie, and pjreddie's
    # shortcut_cpu adds the same channels), [avgpool] + [scale_channels] + [dropout] + swish
    # (enet-coco), and `letter_box=1` with mish and new_coords (yolov4-csp-s-mish)
    "yolov3-tiny-prn": ModelRef("pjreddie", (0.5, 0.25), 320),
    "enet-coco": ModelRef("alexeyab", (0.5, 0.25), 320),
    "yolov4-csp-s-mish": ModelRef("alexeyab", (0.5, 0.25), 320),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ Darknet through the shim


class Darknet:
    """One Darknet library + our shim, loaded in this process."""

    def __init__(self, darknet_dir: Path, alexeyab: bool, work: Path):
        lib = darknet_dir / "libdarknet.so"
        out = work / ("shim-alexeyab.so" if alexeyab else "shim-pjreddie.so")
        cmd = ["gcc", "-O2", "-shared", "-fPIC", "-Wall", "-Werror", "-I", str(darknet_dir / "include")]
        cmd += ["-DDN_ALEXEYAB"] if alexeyab else []
        cmd += [str(SHIM), "-o", str(out), str(lib), f"-Wl,-rpath,{darknet_dir}"]
        subprocess.run(cmd, check=True)
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        s = ctypes.CDLL(str(out))
        P, I, F, C = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_char_p
        fp, ip = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int)
        sigs = {
            "dn_is_alexeyab": ([], I),
            "dn_parse": ([C], P),
            "dn_load": ([C, C], P),
            "dn_num_layers": ([P], I),
            "dn_net_w": ([P], I),
            "dn_net_h": ([P], I),
            "dn_net_letter_box": ([P], I),
            "dn_layer_info": ([P, I, ip], None),
            "dn_layer_floats": ([P, I, fp], None),
            "dn_layer_inputs": ([P, I, ip, I], I),
            "dn_layer_output": ([P, I], fp),
            "dn_image_load": ([C], P),
            "dn_image_letterbox": ([P, I, I], P),
            "dn_image_resize": ([P, I, I], P),
            "dn_image_w": ([P], I),
            "dn_image_h": ([P], I),
            "dn_image_c": ([P], I),
            "dn_image_data": ([P], fp),
            "dn_image_free": ([P], None),
            "dn_predict": ([P, fp], fp),
            "dn_boxes": ([P, I, I, F, F, I, I, ip], P),
            "dn_nms": ([P, I, I, F, I, F], None),
            "dn_det": ([P, I, fp, fp, I], None),
            "dn_free_dets": ([P, I], None),
        }
        if not alexeyab:
            sigs["dn_predict_image"] = ([P, P], fp)
        for name, (args, res) in sigs.items():
            fn = getattr(s, name)
            fn.argtypes, fn.restype = args, res
        self.s = s
        self.alexeyab = alexeyab
        self.lib_sha256 = sha256(lib.read_bytes())
        assert s.dn_is_alexeyab() == int(alexeyab)

    # -- network structure
    def layers(self, net) -> list[dict]:
        out = []
        buf, fbuf, ibuf = (ctypes.c_int * 20)(), (ctypes.c_float * 2)(), (ctypes.c_int * 64)()
        for i in range(self.s.dn_num_layers(net)):
            self.s.dn_layer_info(net, i, buf)
            self.s.dn_layer_floats(net, i, fbuf)
            k = self.s.dn_layer_inputs(net, i, ibuf, 64)
            v = list(buf)
            out.append(
                {
                    "index": i,
                    "type": T_NAMES[v[0]],
                    "activation": A_NAMES[v[1]],
                    "n": v[2],
                    "c": v[3],
                    "h": v[4],
                    "w": v[5],
                    "out_chw": (v[6], v[7], v[8]),
                    "size": v[9],
                    "stride": v[10],
                    "groups": v[11],
                    "batch_normalize": v[12],
                    "classes": v[13],
                    "coords": v[14],
                    "softmax": v[15],
                    "new_coords": v[16],
                    "group_id": v[17],
                    "nms_kind": v[18],
                    "outputs": v[19],
                    "scale_x_y": float(fbuf[0]),
                    "beta_nms": float(fbuf[1]),
                    "inputs": list(ibuf[:k]),
                }
            )
        return out

    def conv_specs(self, layers: list[dict]) -> list[weightgen.ConvSpec]:
        """Conv specs from Darknet's own parsed network (before any batch-norm fusion)."""
        specs = []
        for i, l in enumerate(layers):
            if l["type"] != "convolutional":
                continue
            nxt = layers[i + 1] if i + 1 < len(layers) else {"type": ""}
            head = None
            if nxt["type"] == "yolo":
                kind = "yolo_logistic" if l["activation"] == "logistic" else "yolo"
                head = weightgen.Head(kind, nxt["n"], nxt["classes"])
            elif nxt["type"] == "region":
                head = weightgen.Head("region", nxt["n"], nxt["classes"], nxt["coords"])
            groups = max(l["groups"], 1)
            specs.append(
                weightgen.ConvSpec(
                    filters=l["n"],
                    in_per_group=l["c"] // groups,
                    size=l["size"],
                    batch_normalize=bool(l["batch_normalize"]),
                    head=head,
                    closes_residual=nxt["type"] == "shortcut",
                )
            )
        return specs

    def output(self, net, layer: dict) -> np.ndarray:
        ptr = self.s.dn_layer_output(net, layer["index"])
        c, h, w = layer["out_chw"]
        assert c * h * w == layer["outputs"]
        return np.ctypeslib.as_array(ptr, shape=(layer["outputs"],)).copy().reshape(1, c, h, w)

    # -- images
    def image(self, ptr) -> np.ndarray:
        c, h, w = self.s.dn_image_c(ptr), self.s.dn_image_h(ptr), self.s.dn_image_w(ptr)
        return np.ctypeslib.as_array(self.s.dn_image_data(ptr), shape=(c * h * w,)).copy().reshape(c, h, w)

    # -- detections
    def detections(self, net, classes, im_w, im_h, thresh, relative, letter, nms_fn, nms_kind, beta, candidates=None):
        """(number of boxes from get_network_boxes, [(class, prob, box)] after NMS); ``classes`` = the
        last layer's classes (pjreddie's region detections leave detection.classes unset). With a
        ``candidates`` list, appends ``[objectness, box]`` of every detection that enters NMS
        (objectness > 0), before NMS, in Darknet's order."""
        num = ctypes.c_int(0)
        dets = self.s.dn_boxes(net, im_w, im_h, thresh, HIER, relative, letter, ctypes.byref(num))
        n = num.value
        box, probs = (ctypes.c_float * 5)(), (ctypes.c_float * classes)()
        if candidates is not None:
            for i in range(n):
                self.s.dn_det(dets, i, box, probs, classes)
                if box[4] > 0:
                    b = [float(v) for v in box[:4]]
                    if relative:
                        b = [b[0] * im_w, b[1] * im_h, b[2] * im_w, b[3] * im_h]
                    candidates.append([float(box[4]), b])
        # shim codes: 0 do_nms_obj, 1 do_nms_sort, 1 + NMS_KIND for diounms_sort
        code = {"do_nms_obj": 0, "do_nms_sort": 1}[nms_fn] if nms_fn != "diounms_sort" else 1 + NMS_KINDS.index(nms_kind)
        self.s.dn_nms(dets, n, classes, NMS, code, beta)
        out = []
        for i in range(n):
            self.s.dn_det(dets, i, box, probs, classes)
            b = [float(v) for v in box[:4]]
            if relative:  # pixels = relative float32 box x image size (float64 products)
                b = [b[0] * im_w, b[1] * im_h, b[2] * im_w, b[3] * im_h]
            for j in range(classes):
                if probs[j] > 0:
                    assert probs[j] > thresh, (probs[j], thresh)
                    out.append((j, float(probs[j]), b))
        self.s.dn_free_dets(dets, n)
        return n, out


# ------------------------------------------------------------------ worker (one model per process)


def cfg_at_size(cfg: Path, size: int, dest: Path) -> Path:
    """A copy of ``cfg`` whose [net] width/height are ``size`` (only those two lines change)."""
    dest.write_text(zoo.cfg_at_size(cfg.read_text(), size))
    return dest


def pick_tensor_layers(layers: list[dict]) -> dict[int, str]:
    """Which layer outputs to record, by rule (so the choice is the same on every run)."""
    pick: dict[int, str] = {}
    dets = [l for l in layers if l["type"] in ("yolo", "region")]
    for d in dets:
        pick[d["index"] - 1] = "head"  # the detection layer's input = the head conv output
    coarsest = min(dets, key=lambda l: l["out_chw"][1])
    pick[coarsest["index"]] = coarsest["type"]  # detection layer output (after its activations)
    for l in layers:
        if l["type"] == "reorg":
            pick[l["index"]] = "reorg"
            pick[l["inputs"][0] if l["inputs"] else l["index"] - 1] = "reorg_input"
        if l["type"] == "maxpool" and l["stride"] == 1 and l["size"] == 2:
            pick[l["index"]] = "maxpool_size2_stride1"
        if l["type"] == "route" and any(
            layers[j]["type"] == "maxpool" and layers[j]["stride"] == 1 and layers[j]["size"] > 2 for j in l["inputs"]
        ):
            pick[l["index"]] = "spp_concat"
    for kind in ("reorg3d", "sam", "scale_channels", "avgpool"):  # AlexeyAB's further layers: the last of each
        last = [l for l in layers if l["type"] == kind]
        if last:
            pick[last[-1]["index"]] = kind
    mixed = [l for l in layers if l["type"] == "shortcut" and layers[l["inputs"][0]]["out_chw"][0] != l["out_chw"][0]]
    if mixed:  # a shortcut adding a layer of another channel count
        pick[mixed[-1]["index"]] = "shortcut_channels"
    groups = [l for l in layers if l["type"] == "route" and l["groups"] > 1]
    if groups:
        pick[groups[-1]["index"]] = f"route_groups{groups[-1]['groups']}_id{groups[-1]['group_id']}"
    mish = [l for l in layers if l["type"] == "convolutional" and l["activation"] == "mish"]
    if mish:
        pick[mish[-1]["index"]] = "conv_mish"
    return dict(sorted(pick.items()))


def detection_layer_info(l: dict, alexeyab: bool) -> dict:
    info = {"index": l["index"], "type": l["type"], "anchors_per_cell": l["n"], "classes": l["classes"]}
    info["grid"] = list(l["out_chw"][1:])
    if l["type"] == "region":
        info |= {"coords": l["coords"], "softmax": l["softmax"]}
    if alexeyab and l["type"] == "yolo":
        info |= {"new_coords": l["new_coords"], "scale_x_y": l["scale_x_y"], "nms_kind": NMS_KINDS[l["nms_kind"]],
                 "beta_nms": l["beta_nms"]}
    return info


def summary(rows_by_image: dict[str, list], sizes: dict[str, list[int]]) -> dict:
    """Counts that describe a detections file: entries, distinct boxes, centres outside the image."""
    out = {}
    for img, rows in rows_by_image.items():
        w, h = sizes[img]
        boxes = {tuple(r[2]) for r in rows}
        outside = sum(not (0 <= b[0] <= w and 0 <= b[1] <= h) for b in boxes)
        out[img] = {"entries": len(rows), "boxes": len(boxes), "box_centres_outside_image": outside,
                    "max_prob": max((r[1] for r in rows), default=None)}
    return out


def objectness_channels(layer: dict) -> list[int]:
    per = layer["coords"] + 1 + layer["classes"] if layer["type"] == "region" else 5 + layer["classes"]
    k = layer["coords"] if layer["type"] == "region" else 4
    return [a * per + k for a in range(layer["n"])]


def stats(a: np.ndarray) -> dict:
    return {
        "shape": list(a.shape),
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean(dtype=np.float64)),
        "std": float(a.std(dtype=np.float64)),
        "sha256_of_data": sha256(np.ascontiguousarray(a, "<f4").tobytes()),
    }


def cli_counts(darknet_dir: Path, alexeyab: bool, cfg: Path, weights: Path, thresh: float, work: Path) -> dict[str, int] | None:
    """Run ``darknet detector test`` (image paths on stdin) and count its printed ``name: NN%`` lines
    per image; None when the build has no CLI binary. Only a cross-check of the library path."""
    exe = darknet_dir / "darknet"
    if not exe.exists():
        return None
    run = Path(tempfile.mkdtemp(prefix="cli-", dir=work))
    (run / "data").symlink_to(darknet_dir / "data")  # the CLI loads data/labels/*.png from the cwd
    (run / "coco.data").write_text(f"classes=80\nnames={DATA / 'coco.names'}\n")
    paths = "".join(f"{DATA / 'images' / img}\n" for img in IMAGES)
    cmd = [str(exe), "detector", "test", "coco.data", str(cfg), str(weights), "-thresh", str(thresh)]
    cmd += ["-dont_show"] if alexeyab else []  # pjreddie would read it as the image path
    out = subprocess.run(cmd, input=paths, cwd=run, capture_output=True, text=True, timeout=3600,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}).stdout
    names = set((DATA / "coco.names").read_text().splitlines())
    counts: dict[str, int] = {}
    current = None
    for line in out.splitlines():
        m = re.search(r"([^/\s]+\.jpg): Predicted in", line)
        if m:
            current = m.group(1)
            counts[current] = 0
            continue
        m = re.match(r"^(.+): (\d+)%", line)
        if current and m and m.group(1) in names:
            counts[current] += 1
    return counts


def worker(args: argparse.Namespace) -> int:
    name, ref = args.worker, MODELS[args.worker]
    work, out = Path(args.work), Path(args.out)
    alexeyab = ref.lineage == "alexeyab"
    dn = Darknet(Path(args.alexeyab if alexeyab else args.pjreddie), alexeyab, work)
    version = args.alexeyab_version if alexeyab else args.pjreddie_version
    cfg = DATA / "cfg" / f"{name}.cfg"
    names = (DATA / "coco.names").read_text().splitlines()
    s = dn.s

    # 1. conv specs: ours (cfg channel walk) must equal Darknet's parsed network
    parsed = dn.s.dn_parse(str(cfg).encode())
    layers = dn.layers(parsed)
    spec = weightgen.net_from_cfg(cfg)
    if dn.conv_specs(layers) != spec.convs:
        raise SystemExit(f"{name}: weightgen.net_from_cfg disagrees with Darknet's parsed network (conv specs)")
    graph = [(l["type"], tuple(l["inputs"])) for l in layers]
    if graph != [(l.kind, l.inputs) for l in spec.layers]:
        raise SystemExit(f"{name}: weightgen.net_from_cfg disagrees with Darknet's parsed network (layer graph)")

    # 2. weights
    weights = work / f"{name}.weights"
    size, digest = weightgen.write_weights(weights, spec, args.seed, 0, ref.minor)

    # 3. detections at the cfg's size
    net = s.dn_load(str(cfg).encode(), str(weights).encode())
    layers = dn.layers(net)
    net_w, net_h = s.dn_net_w(net), s.dn_net_h(net)
    det_layers = [l for l in layers if l["type"] in ("yolo", "region")]
    last = det_layers[-1]
    letter = bool(s.dn_net_letter_box(net)) if alexeyab else True
    if alexeyab:
        nms_kind = NMS_KINDS[last["nms_kind"]]
        nms_fn = "do_nms_sort" if nms_kind == "default" else "diounms_sort"
        beta = last["beta_nms"]
    else:
        nms_kind, nms_fn, beta = "default (class-agnostic, sorted by objectness)", "do_nms_obj", 0.0
    image_sizes, per_thresh, per_image, cli_sort = {}, {t: {} for t in ref.thresholds}, {}, {}
    per_thresh_candidates: dict[float, dict] = {t: {} for t in ref.thresholds}
    for img in IMAGES:
        im = s.dn_image_load(str(DATA / "images" / img).encode())
        w, h = s.dn_image_w(im), s.dn_image_h(im)
        image_sizes[img] = [w, h]
        if alexeyab:
            sized = (s.dn_image_letterbox if letter else s.dn_image_resize)(im, net_w, net_h)
            s.dn_predict(net, s.dn_image_data(sized))
            s.dn_image_free(sized)
        else:
            s.dn_predict_image(net, im)  # letterbox + set_batch_network(1) + network_predict
        obj = max(float(dn.output(net, l)[0, objectness_channels(l)].max()) for l in det_layers)
        per_image[img] = {"max_objectness": obj, "candidates": {}, "detections": {}}
        for t in ref.thresholds:
            cands = [] if nms_fn == "do_nms_obj" else None
            n, dets = dn.detections(net, last["classes"], w, h, t, int(alexeyab), int(letter), nms_fn, nms_kind, beta,
                                    cands)
            if cands is not None:
                per_thresh_candidates[t][img] = cands
            rows = sorted(((names[j], p, b) for j, p, b in dets), key=lambda r: -r[1])
            per_thresh[t][img] = [[lab, p, b] for lab, p, b in rows]
            per_image[img]["candidates"][str(t)] = n
            per_image[img]["detections"][str(t)] = len(rows)
        if ref.cli_variant is not None:  # pjreddie `darknet detector test`: relative boxes, do_nms_sort
            sized = s.dn_image_letterbox(im, net_w, net_h)
            s.dn_predict(net, s.dn_image_data(sized))
            s.dn_image_free(sized)
            _, dets = dn.detections(net, last["classes"], w, h, ref.cli_variant, 1, 1, "do_nms_sort", "default", 0.0)
            rows = sorted(((names[j], p, b) for j, p, b in dets), key=lambda r: -r[1])
            cli_sort[img] = [[lab, p, b] for lab, p, b in rows]
        s.dn_image_free(im)

    mdir = out / name
    mdir.mkdir(parents=True, exist_ok=True)
    implementation = (
        f"{version} libdarknet.so (CPU, OPENCV=0, sha256 {dn.lib_sha256[:16]}...) via scripts/darknet_refshim.c"
    )
    common = {
        "model": name,
        "lineage": ref.lineage,
        "implementation": implementation,
        "cfg": f"tests/data/cfg/{name}.cfg",
        "weights": {"generator": "yolo_devtools.weightgen", "seed": args.seed, "sha256": digest, "size": size},
        "input_size": [net_w, net_h],
        "preprocess": ("letterbox_image" if letter else "resize_image") + " (stb_image decode, RGB, /255)",
        "hier_thresh": HIER,
        "nms": NMS,
        "nms_kind": nms_kind,
        "nms_function": nms_fn,
        "beta_nms": beta,
        "get_network_boxes_relative": int(alexeyab),
        "call_chain": (
            "load_image(path,0,0,3) -> "
            + ("letterbox_image" if letter else "resize_image")
            + "(net.w, net.h) -> network_predict -> get_network_boxes(net, im.w, im.h, thresh, .5, 0, 1, &n, letter) -> "
            + nms_fn
            + "(.45) -> every class with prob > thresh; box = relative box x (im.w, im.h)"
            if alexeyab
            else "load_image_color -> network_predict_image (letterbox) -> get_network_boxes(net, im.w, im.h, thresh, .5, "
            "NULL, 0) -> do_nms_obj(.45) -> every class with prob > 0 (python/darknet.py detect())"
        ),
        "box_format": "[center_x, center_y, width, height] in original-image pixels; sorted by descending prob; "
        "prob = objectness * class probability",
        "image_sizes": image_sizes,
    }
    for t in ref.thresholds:
        doc = {**common, "thresh": t, "images": per_thresh[t]}
        (mdir / f"detections-t{t}.json").write_text(json.dumps(doc, indent=1) + "\n")
        if per_thresh_candidates[t]:  # do_nms_obj: what entered NMS, including boxes with no class above thresh
            doc = {**common, "thresh": t, "what": CANDIDATES_WHAT, "images": per_thresh_candidates[t]}
            (mdir / f"candidates-t{t}.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    if ref.cli_variant is not None:
        doc = {
            **common,
            "thresh": ref.cli_variant,
            "nms_kind": "default (per class: do_nms_sort)",
            "nms_function": "do_nms_sort",
            "get_network_boxes_relative": 1,
            "call_chain": "`darknet detector test` (examples/detector.c test_detector): load_image_color -> "
            "letterbox_image -> network_predict -> get_network_boxes(net, im.w, im.h, thresh, .5, 0, 1) -> "
            "do_nms_sort(.45) -> every class with prob > thresh; box = relative box x (im.w, im.h)",
            "images": cli_sort,
        }
        (mdir / f"detections-t{ref.cli_variant}-cli-nms-sort.json").write_text(json.dumps(doc, indent=1) + "\n")

    # 4. tensors at a reduced size, on one image
    small = cfg_at_size(cfg, ref.tensor_size, work / f"{name}-{ref.tensor_size}.cfg")
    tnet = s.dn_load(str(small).encode(), str(weights).encode())
    tlayers = dn.layers(tnet)
    assert (s.dn_net_w(tnet), s.dn_net_h(tnet)) == (ref.tensor_size, ref.tensor_size)
    im = s.dn_image_load(str(DATA / "images" / TENSOR_IMAGE).encode())
    sized = (s.dn_image_letterbox if letter else s.dn_image_resize)(im, ref.tensor_size, ref.tensor_size)
    x = dn.image(sized)[None]
    s.dn_predict(tnet, s.dn_image_data(sized))
    input_name = f"{TENSOR_IMAGE[:-4]}-{ref.lineage}-{'letterbox' if letter else 'resize'}-{ref.tensor_size}.npy"
    inputs_dir = out / "inputs"
    inputs_dir.mkdir(exist_ok=True)
    input_path = inputs_dir / input_name
    if input_path.exists() and not np.array_equal(np.load(input_path), x):
        raise SystemExit(f"{input_path}: another model of this lineage produced a different input")
    np.save(input_path, x)
    tensors = []
    for idx, kind in pick_tensor_layers(tlayers).items():
        layer = tlayers[idx]
        arr = dn.output(tnet, layer)
        fname = f"layer{idx:03d}-{kind}.npy"
        np.save(mdir / fname, arr)
        entry = {"file": fname, "layer": idx, "kind": kind, "darknet_type": layer["type"]}
        if layer["type"] in ("convolutional", "shortcut"):
            entry["activation"] = layer["activation"]
        tensors.append(entry | stats(arr))
    s.dn_image_free(sized)
    s.dn_image_free(im)

    # 5. cross-check the counts against the CLI's printout (lower threshold; pjreddie: its do_nms_sort variant)
    darknet_dir = Path(args.alexeyab if alexeyab else args.pjreddie)
    cli_thresh = min(ref.thresholds) if alexeyab else ref.cli_variant
    cli = None
    if cli_thresh is not None:
        printed = cli_counts(darknet_dir, alexeyab, cfg, weights, cli_thresh, work)
        ours = {img: len(v) for img, v in (per_thresh[cli_thresh] if alexeyab else cli_sort).items()}
        cli = {"thresh": cli_thresh, "printed_counts": printed, "library_counts": ours, "agree": printed == ours}
        if printed is not None and printed != ours:
            raise SystemExit(f"{name}: CLI printed {printed}, the library path gave {ours}")

    manifest = {
        "model": name,
        "lineage": ref.lineage,
        "implementation": implementation,
        "cfg": common["cfg"],
        "cfg_sha256": sha256(cfg.read_bytes()),
        "weights": common["weights"]
        | {"header": f"{0}.{ref.minor}.0", "seen_bytes": 8 if ref.minor >= 2 else 4, "regenerate": (
            "weightgen.generate_weights(weightgen.net_from_cfg(cfg), seed, major=0, minor=%d)" % ref.minor)},
        "conv_specs_checked_against_darknet": True,
        "cli_cross_check": cli,
        "detection_layers": [detection_layer_info(l, alexeyab) for l in layers if l["type"] in ("yolo", "region")],
        "detections": {
            "input_size": [net_w, net_h],
            "thresholds": list(ref.thresholds),
            "files": [f"detections-t{t}.json" for t in ref.thresholds]
            + ([f"detections-t{ref.cli_variant}-cli-nms-sort.json"] if ref.cli_variant is not None else []),
            **({"candidate_files": [f"candidates-t{t}.json" for t in ref.thresholds]}
               if any(per_thresh_candidates.values()) else {}),
            "per_image": per_image,
            "per_file": {f"detections-t{t}.json": summary(per_thresh[t], image_sizes) for t in ref.thresholds}
            | ({f"detections-t{ref.cli_variant}-cli-nms-sort.json": summary(cli_sort, image_sizes)}
               if ref.cli_variant is not None else {}),
        },
        "tensors": {
            "image": TENSOR_IMAGE,
            "input_size": [ref.tensor_size, ref.tensor_size],
            "size_set_by": "parsing a temporary copy of the cfg with [net] width/height replaced",
            "input": f"../inputs/{input_name}",
            "input_stats": stats(x),
            "layout": "float32 NCHW (1, C, H, W) = Darknet l.output of that layer (0-based cfg layer index)",
            "layers": tensors,
        },
    }
    (mdir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps({name: per_image}, indent=None))
    return 0


# ------------------------------------------------------------------ driver


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pjreddie", help="pjreddie darknet dir (include/darknet.h, libdarknet.so; OPENCV=0 build)")
    p.add_argument("--alexeyab", help="AlexeyAB darknet dir (include/darknet.h, libdarknet.so from make LIBSO=1)")
    p.add_argument("--pjreddie-version", default="pjreddie/darknet (unspecified commit)")
    p.add_argument("--alexeyab-version", default="AlexeyAB/darknet (unspecified commit)")
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--seed", type=int, default=weightgen.DEFAULT_SEED)
    p.add_argument("--out", default=str(DATA / "reference"))
    p.add_argument("--work", help="scratch dir for weights and shims (default: a new temp dir)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    work = Path(args.work or tempfile.mkdtemp(prefix="darknet-refs-"))
    work.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        lineage = MODELS[name].lineage
        if getattr(args, lineage) is None:
            raise SystemExit(f"{name} needs --{lineage}")
        cmd = [sys.executable, __file__, "--worker", name, "--work", str(work), "--out", args.out]
        cmd += ["--seed", str(args.seed), f"--{lineage}", getattr(args, lineage)]
        cmd += [f"--{lineage}-version", getattr(args, f"{lineage}_version")]
        log = work / f"{name}.log"
        print(f"{name}: running {lineage} Darknet (log: {log})", flush=True)
        with open(log, "w") as f:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc:
            print(log.read_text()[-3000:], file=sys.stderr)
            return rc
        print(log.read_text().strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
