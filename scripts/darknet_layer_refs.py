"""Regenerate tests/data/darknet_layers/*.npz: single-layer references from Darknet C itself.

The unit tests compare our graph nodes and NMS against these arrays; every number in them is an
output of a Darknet library function, never of our code:

* ``pjreddie.npz`` (pjreddie/darknet ``libdarknet.so``): ``reorg_cpu(..., forward=0)`` as the
  ``[reorg]`` layer calls it, ``forward_maxpool_layer`` for the pool shapes YOLO uses (size 2
  stride 1/2, SPP sizes 5/9/13, odd input sizes), ``activate_array`` (leaky, logistic, relu),
  ``do_nms_obj`` and ``do_nms_sort`` on a synthetic detection set with ties and zero objectness.
* ``alexeyab.npz`` (AlexeyAB/darknet ``libdarknet.so`` from ``make LIBSO=1``):
  ``forward_maxpool_layer`` (its inference path), ``activate_array_mish`` / ``_swish``,
  ``do_nms_sort`` and ``diounms_sort`` (greedynms; diounms with beta_nms 0.6 and 0.8).

Darknet is reached through a small accessor shim of ours (the C source below, compiled here with
gcc against that Darknet's ``include/darknet.h``), so no Darknet struct is mirrored by hand in
Python. Each library is loaded in its own process. Usage::

    python scripts/darknet_layer_refs.py --pjreddie DIR --alexeyab DIR [--out tests/data/darknet_layers]

where DIR holds ``include/darknet.h`` and ``libdarknet.so`` (CPU builds; used for this data:
pjreddie f6afaabc default Makefile, AlexeyAB 59596d78 ``make LIBSO=1 GPU=0 CUDNN=0 OPENCV=0
AVX=0 OPENMP=0``).
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "darknet_layers"

SHIM = r"""
#include <stdlib.h>
#include <string.h>
#include "darknet.h"

void reorg_cpu(float *x, int w, int h, int c, int batch, int stride, int forward, float *out);
#ifdef DN_ALEXEYAB
layer make_maxpool_layer(int batch, int h, int w, int c, int size, int stride_x, int stride_y, int padding,
                         int maxpool_depth, int out_channels, int antialiasing, int avgpool, int train);
void forward_maxpool_layer(const layer l, network_state state);
void activate_array_mish(float *x, const int n, float *activation_input, float *output);
void activate_array_swish(float *x, const int n, float *output_sigmoid, float *output);
#else
layer make_maxpool_layer(int batch, int h, int w, int c, int size, int stride, int padding);
void forward_maxpool_layer(const layer l, network net);
void activate_array(float *x, const int n, const ACTIVATION a);
#endif

void ref_reorg(float *x, int w, int h, int c, int batch, int stride, float *out) {
    reorg_cpu(x, w, h, c, batch, stride, 0, out);
}

/* one image; writes out_c, out_h, out_w into dims and the output into out */
void ref_maxpool(float *x, int c, int h, int w, int size, int stride, int padding, float *out, int *dims) {
#ifdef DN_ALEXEYAB
    layer l = make_maxpool_layer(1, h, w, c, size, stride, stride, padding, 0, 1, 0, 0, 0);
    network_state st; memset(&st, 0, sizeof st); st.input = x; st.train = 0;
    forward_maxpool_layer(l, st);
#else
    layer l = make_maxpool_layer(1, h, w, c, size, stride, padding);
    network net; memset(&net, 0, sizeof net); net.input = x; net.train = 0;
    forward_maxpool_layer(l, net);
#endif
    dims[0] = l.out_c; dims[1] = l.out_h; dims[2] = l.out_w;
    memcpy(out, l.output, sizeof(float) * l.outputs);
    free(l.output);
}

/* kind: 0 leaky 1 logistic 2 relu 3 mish 4 swish (in place on a copy) */
void ref_activation(float *x, int n, int kind, float *out) {
    memcpy(out, x, sizeof(float) * n);
#ifdef DN_ALEXEYAB
    float *tmp = calloc(n, sizeof(float));
    if (kind == 3) activate_array_mish(x, n, tmp, out);
    if (kind == 4) activate_array_swish(x, n, tmp, out);
    free(tmp);
#else
    if (kind == 0) activate_array(out, n, LEAKY);
    if (kind == 1) activate_array(out, n, LOGISTIC);
    if (kind == 2) activate_array(out, n, RELU);
#endif
}

/* NMS over n detections of `classes` classes; probs (n x classes) is overwritten with the result
 * IN THE INPUT ORDER (Darknet permutes its array; each detection keeps its own prob buffer).
 * kind: 0 do_nms_obj, 1 do_nms_sort, 2 + NMS_KIND for AlexeyAB diounms_sort */
void ref_nms(float *boxes, float *objectness, float *probs, int n, int classes, float thresh, int kind, float beta) {
    detection *dets = calloc(n, sizeof(detection));
    float **mine = calloc(n, sizeof(float *));
    int i;
    for (i = 0; i < n; ++i) {
        dets[i].bbox.x = boxes[4 * i]; dets[i].bbox.y = boxes[4 * i + 1];
        dets[i].bbox.w = boxes[4 * i + 2]; dets[i].bbox.h = boxes[4 * i + 3];
        dets[i].classes = classes;
        dets[i].objectness = objectness[i];
        dets[i].prob = calloc(classes, sizeof(float));
        memcpy(dets[i].prob, probs + i * classes, sizeof(float) * classes);
        mine[i] = dets[i].prob;
    }
    if (kind == 0) do_nms_obj(dets, n, classes, thresh);
    else if (kind == 1) do_nms_sort(dets, n, classes, thresh);
#ifdef DN_ALEXEYAB
    else diounms_sort(dets, n, classes, thresh, (NMS_KIND)(kind - 2), beta);
#endif
    (void)beta;
    for (i = 0; i < n; ++i) { memcpy(probs + i * classes, mine[i], sizeof(float) * classes); free(mine[i]); }
    free(mine); free(dets);
}
"""

MAXPOOLS = [  # (channels, height, width, size, stride, padding or None for Darknet's default)
    (3, 13, 13, 2, 1, None),  # yolov2-tiny / yolov3-tiny: keeps 13x13
    (3, 7, 9, 2, 1, None),
    (2, 8, 10, 2, 2, None),
    (2, 7, 9, 2, 2, None),  # odd sizes with stride 2
    (3, 13, 13, 5, 1, None),  # SPP
    (3, 13, 13, 9, 1, None),
    (3, 13, 13, 13, 1, None),
    (2, 6, 5, 13, 1, None),  # pool larger than the input
    (2, 9, 9, 3, 2, None),
]


def nms_case(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Detections built to exercise ties, chained per-class sorting and zero objectness: clusters
    of overlapping boxes whose scores take a few quantised values (many exact ties)."""
    n, classes, clusters = 160, 3, 12
    centre = rng.uniform(20, 80, (clusters, 2))[rng.integers(0, clusters, n)]
    centres = centre + rng.normal(0, 4, (n, 2))
    sizes = rng.uniform(12, 30, (n, 2))
    boxes = np.concatenate([centres, sizes], axis=1).astype(np.float32) / np.float32(100)
    objectness = rng.choice(np.array([0.0, 0.5, 1.0], np.float32), n, p=[0.25, 0.35, 0.4])
    cls = rng.choice(np.array([0.0, 0.5, 1.0], np.float32), (n, classes), p=[0.3, 0.3, 0.4])
    probs = (objectness[:, None] * cls).astype(np.float32)
    probs[objectness == 0] = 0  # Darknet never emits class probs without objectness
    return {"boxes": boxes, "objectness": objectness.astype(np.float32), "probs": probs}


def compile_shim(darknet_dir: Path, alexeyab: bool, work: Path) -> ctypes.CDLL:
    src = work / "shim.c"
    src.write_text(SHIM)
    out = work / ("shim-alexeyab.so" if alexeyab else "shim-pjreddie.so")
    lib = darknet_dir / "libdarknet.so"
    cmd = ["gcc", "-O2", "-shared", "-fPIC", "-I", str(darknet_dir / "include")]
    cmd += ["-DDN_ALEXEYAB"] if alexeyab else []
    cmd += [str(src), "-o", str(out), str(lib), f"-Wl,-rpath,{darknet_dir}"]
    subprocess.run(cmd, check=True)
    ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    return ctypes.CDLL(str(out))


def fp(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def worker(lineage: str, darknet_dir: Path, out: Path) -> None:
    alexeyab = lineage == "alexeyab"
    rng = np.random.default_rng(20240611)
    with tempfile.TemporaryDirectory() as t:
        s = compile_shim(darknet_dir, alexeyab, Path(t))
        data: dict[str, np.ndarray] = {}
        if not alexeyab:
            x = rng.normal(0, 1, (2, 16, 4, 6)).astype(np.float32)  # batch 2, C=16, H=4, W=6
            y = np.zeros_like(x)
            s.ref_reorg(fp(x), 6, 4, 16, 2, 2, fp(y))
            data |= {"reorg_x": x, "reorg_y": y.reshape(2, 64, 2, 3), "reorg_stride": np.array(2)}
        for k, (c, h, w, size, stride, padding) in enumerate(MAXPOOLS):
            x = rng.normal(0, 1, (c, h, w)).astype(np.float32)
            pad = size - 1 if padding is None else padding
            y = np.zeros(c * (h + pad) * (w + pad), np.float32)
            dims = (ctypes.c_int * 3)()
            s.ref_maxpool(fp(x), c, h, w, size, stride, pad, fp(y), dims)
            data[f"maxpool{k}_x"] = x
            data[f"maxpool{k}_y"] = y[: dims[0] * dims[1] * dims[2]].reshape(dims[0], dims[1], dims[2])
            data[f"maxpool{k}_size_stride_padding"] = np.array([size, stride, pad])
        x = np.concatenate([np.linspace(-30, 30, 601), rng.normal(0, 3, 200)]).astype(np.float32)
        for kind, name in enumerate(("leaky", "logistic", "relu", "mish", "swish")):
            if (kind >= 3) != alexeyab:
                continue
            y = np.zeros_like(x)
            s.ref_activation(fp(x.copy()), x.size, kind, fp(y))
            data[f"act_{name}"] = y
        data["act_x"] = x
        case = nms_case(rng)
        data |= {f"nms_{k}": v for k, v in case.items()}
        kinds = {"per_class": 1} | ({"greedynms": 3, "diounms": 4} if alexeyab else {"agnostic": 0})
        for name, code in kinds.items():
            for beta in (0.6, 0.8) if name == "diounms" else (0.6,):
                probs = case["probs"].copy()
                b = np.ascontiguousarray(case["boxes"])
                s.ref_nms(fp(b), fp(case["objectness"].copy()), fp(probs), b.shape[0], probs.shape[1],
                          ctypes.c_float(0.45), code, ctypes.c_float(beta))
                data[f"nms_out_{name}" + (f"_beta{beta}" if name == "diounms" else "")] = probs
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / f"{lineage}.npz", **data)
    print(f"{out / (lineage + '.npz')}: {len(data)} arrays")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pjreddie", type=Path, help="pjreddie darknet dir (include/darknet.h, libdarknet.so)")
    p.add_argument("--alexeyab", type=Path, help="AlexeyAB darknet dir (include/darknet.h, libdarknet.so)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--worker", choices=("pjreddie", "alexeyab"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, getattr(args, args.worker), args.out)
        return 0
    for lineage in ("pjreddie", "alexeyab"):
        if getattr(args, lineage) is None:
            continue
        cmd = [sys.executable, __file__, "--worker", lineage, f"--{lineage}", str(getattr(args, lineage))]
        subprocess.run(cmd + ["--out", str(args.out)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
