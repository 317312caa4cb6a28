"""Survey Darknet cfg folders: is each cfg served faithfully, or refused in one line?

For every ``*.cfg`` under the given folders (e.g. the ``cfg/`` folders of pjreddie/darknet and
AlexeyAB/darknet; identical files are checked once):

1. Our reader: ``predictor.darknet.parse_cfg`` loads it (lineage, size, GFLOP) or refuses it with
   one line (file:line, layer, what).
2. For a cfg that loads, with the Darknet of its lineage (``--pjreddie``/``--alexeyab``: built
   trees with ``include/darknet.h`` and ``libdarknet.so``, as for scripts/darknet_references.py):
   * generated weights (``yolo_devtools.weightgen``, fixed seed) of exactly the size our reader
     expects, and Darknet's own parsed network gives the same conv specs and layer graph;
   * tensors: every head's input (the raw head conv output) from Darknet and from our ONNX graph
     on Darknet's own network input for dog.jpg at a small size (``--tensor-size``, rounded up to
     the largest stride), as max |ours - Darknet| / max |Darknet|;
   * detections on dog.jpg at the cfg's own size and Darknet's default semantics for the lineage
     (pjreddie: letterbox, do_nms_obj, 0.5; AlexeyAB: resize unless letter_box=1, the last head's
     NMS, 0.25) from Darknet's library and from our decoder (``predictor.yolo.detect``, the
     predictor's path) on Darknet's input tensor, compared with the family rule
     (``yolo_devtools.matching.match_at_margins``). Skipped above ``--max-gflop``.

Each cfg runs in its own process (one libdarknet.so per process; a Darknet ``assert`` ends only
that cfg). Prints one JSON line per cfg, then a Markdown table; ``--json`` writes the list.

    .venv/bin/python scripts/darknet_cfg_survey.py --pjreddie PJ_DIR --alexeyab AB_DIR \\
        PJ_SRC/cfg AB_SRC/cfg [--json survey.json] [--max-gflop 150]

Without ``--pjreddie``/``--alexeyab`` only step 1 runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(SCRIPTS))

DOG = REPO / "tests" / "data" / "images" / "dog.jpg"
NAMES = REPO / "tests" / "data" / "coco.names"
#: Darknet's default thresholds: pjreddie python/darknet.py detect() and AlexeyAB `detector test`
DARKNET_THRESH = {"pjreddie": 0.5, "alexeyab": 0.25}


def check(cfg: Path, args) -> dict:
    """Steps 1-2 for one cfg (runs in a worker process)."""
    import numpy as np

    from predictor import darknet
    from predictor.engine import OnnxRuntimeEngine, available_cpus
    from predictor.onnx_graph import build_onnx
    from predictor.yolo import DecodeParams, detect
    from transformer import geometry
    from yolo_devtools import weightgen
    from yolo_devtools.matching import match_at_margins

    out: dict = {"cfg": cfg.name}
    try:
        net = darknet.parse_cfg(cfg)
    except darknet.ModelFormatError as e:
        return out | {"status": "refused", "reason": str(e).replace(str(cfg.parent) + "/", "")}
    out |= {"status": "loads", "lineage": net.lineage, "size": [net.width, net.height],
            "preprocess": "letterbox" if net.letter_box else "resize", "nms": net.nms_kind,
            "gflop": round(net.flops() / 1e9, 2), "params": net.n_params}
    dn_dir = getattr(args, net.lineage)
    if not dn_dir:
        return out
    import darknet_references as refs

    work = Path(tempfile.mkdtemp(prefix="survey-", dir=args.work))
    alexeyab = net.lineage == "alexeyab"
    spec = weightgen.net_from_cfg(cfg)
    weights = work / "w.weights"
    size, _ = weightgen.write_weights(weights, spec, weightgen.DEFAULT_SEED, 0, 2)
    darknet.load_weights(net, weights)  # refuses a file of any other size
    out["weights_bytes"] = size
    dn = refs.Darknet(Path(dn_dir), alexeyab, work)
    s = dn.s
    layers = dn.layers(s.dn_parse(str(cfg).encode()))
    out["darknet_conv_specs_agree"] = dn.conv_specs(layers) == spec.convs and [
        (l["type"], tuple(l["inputs"])) for l in layers] == [(l.kind, l.inputs) for l in spec.layers]

    # tensors at a small size
    stride = max(net.width // net.shapes[h.index][2] for h in net.heads)
    small_size = math.ceil(args.tensor_size / stride) * stride
    small = refs.cfg_at_size(cfg, small_size, work / "small.cfg")
    tnet = s.dn_load(str(small).encode(), str(weights).encode())
    tlayers = dn.layers(tnet)
    im = s.dn_image_load(str(DOG).encode())
    letter = (not alexeyab) or bool(s.dn_net_letter_box(tnet))
    sized = (s.dn_image_letterbox if letter else s.dn_image_resize)(im, small_size, small_size)
    x = dn.image(sized)[None]
    s.dn_predict(tnet, s.dn_image_data(sized))
    s.dn_image_free(sized)
    engine = OnnxRuntimeEngine(build_onnx(net).SerializeToString(), threads=available_cpus())
    ours = engine.run(x)
    worst = 0.0
    for head, got in zip(net.heads, ours):
        ref = dn.output(tnet, tlayers[head.index - 1])
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    out["tensor_size"] = small_size
    out["tensor_max_rel"] = float(f"{worst:.3g}")

    # detections on dog.jpg at the cfg's size, Darknet's default semantics
    gflop = net.flops() / 1e9
    if gflop > args.max_gflop:
        out["detections"] = f"skipped ({gflop:.0f} GFLOP > --max-gflop {args.max_gflop:g})"
        s.dn_image_free(im)
        return out
    full = s.dn_load(str(cfg).encode(), str(weights).encode())
    flayers = dn.layers(full)
    w, h = s.dn_image_w(im), s.dn_image_h(im)
    sized = (s.dn_image_letterbox if letter else s.dn_image_resize)(im, net.width, net.height)
    x = dn.image(sized)[None]
    s.dn_predict(full, s.dn_image_data(sized))
    s.dn_image_free(sized)
    s.dn_image_free(im)
    last = [l for l in flayers if l["type"] in ("yolo", "region")][-1]
    thresh = DARKNET_THRESH[net.lineage]
    if alexeyab:
        kind = refs.NMS_KINDS[last["nms_kind"]]
        nms_fn, beta = ("do_nms_sort" if kind == "default" else "diounms_sort"), last["beta_nms"]
    else:
        kind, nms_fn, beta = "default", "do_nms_obj", 0.0
    names = NAMES.read_text().splitlines()
    classes = last["classes"]
    label = (lambda j: names[j]) if classes == len(names) else str
    cands: list = []
    _, dets = dn.detections(full, classes, w, h, thresh, int(alexeyab), int(letter), nms_fn, kind, beta,
                            cands if nms_fn == "do_nms_obj" else None)
    want = [[label(j), p, b] for j, p, b in dets]
    lb = geometry.preprocess_params(w, h, net.width, net.height, "letterbox" if letter else "resize")
    params = DecodeParams(confidence=thresh, nms=net.nms_kind, beta_nms=net.beta_nms, max_detections=100_000)
    rows = detect([o[0] for o in engine.run(x)], net.heads, net.width, net.height, params,
                  (*lb.box_offset, lb.new_w, lb.new_h))
    boxes = geometry.unletterbox_boxes(rows[:, :4], lb)
    got = [[label(int(r[5])), float(r[4]), [float(v) for v in b]] for r, b in zip(rows, boxes)]
    out["detections"] = {"thresh": thresh, "nms": nms_fn, "darknet": len(want), "ours": len(got)}
    try:
        m = match_at_margins(got, want, thresh, net.nms_kind, net.beta_nms, (w, h),
                             candidates=cands if nms_fn == "do_nms_obj" else None)
        out["detections"] |= {"pairs": m.pairs, "unpaired_at_margin": m.unpaired,
                              "max_dconf": float(f"{m.max_dconf:.3g}"), "min_iou": float(f"{m.min_iou:.5g}")}
    except AssertionError as e:
        out["detections"]["mismatch"] = str(e)[:300]
    return out


def row(r: dict) -> str:
    if "error" in r and "lineage" not in r:
        return f"| {r['cfg']} | ERROR | {r['error']} |"
    if r["status"] == "refused":
        return f"| {r['cfg']} | refused | {r['reason']} |"
    what = f"{r['lineage']}, {r['size'][0]}x{r['size'][1]} {r['preprocess']}, NMS {r['nms']}, {r['gflop']} GFLOP"
    checks = []
    if "darknet_conv_specs_agree" in r:
        checks.append(f"weights {r['weights_bytes']:,} B, Darknet's graph {'agrees' if r['darknet_conv_specs_agree'] else 'DIFFERS'}")
        checks.append(f"heads at {r['tensor_size']}: {r['tensor_max_rel']:.1e}")
    d = r.get("detections")
    if isinstance(d, dict):
        if "mismatch" in d:
            checks.append(f"dog.jpg t={d['thresh']}: MISMATCH {d['mismatch']}")
        else:
            checks.append(f"dog.jpg t={d['thresh']}: {d['pairs']}/{d['darknet']} paired, {d['unpaired_at_margin']} at a margin, "
                          f"Δconf ≤ {d['max_dconf']:.1e}, IoU ≥ {d['min_iou']:.4f}")
    elif d:
        checks.append(f"detections {d}")
    if "error" in r:
        checks.append(f"ERROR {r['error']}")
    return f"| {r['cfg']} | loads | {what}; {'; '.join(checks)} |"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="*", help="folders whose *.cfg are surveyed")
    p.add_argument("--pjreddie", help="pjreddie darknet dir (include/darknet.h, libdarknet.so)")
    p.add_argument("--alexeyab", help="AlexeyAB darknet dir (include/darknet.h, libdarknet.so from make LIBSO=1)")
    p.add_argument("--tensor-size", type=int, default=320)
    p.add_argument("--max-gflop", type=float, default=150.0, help="skip detections of bigger networks")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per cfg")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--work", help="scratch dir (default: a new temp dir)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        try:
            result = check(Path(args.worker), args)
        except Exception as e:  # noqa: BLE001 -- reported in the table
            result = {"cfg": Path(args.worker).name, "status": "loads", "error": f"{type(e).__name__}: {e}"[:300]}
        print("RESULT " + json.dumps(result))
        return 0
    if not args.folders:
        p.error("give at least one folder of cfgs")
    args.work = args.work or tempfile.mkdtemp(prefix="darknet-survey-")
    seen: dict[str, str] = {}
    results = []
    for folder in args.folders:
        for cfg in sorted(Path(folder).glob("*.cfg")):
            digest = hashlib.sha256(cfg.read_bytes()).hexdigest()
            if digest in seen:
                print(json.dumps({"cfg": str(cfg), "same_as": seen[digest]}), flush=True)
                continue
            seen[digest] = str(cfg)
            cmd = [sys.executable, __file__, "--worker", str(cfg), "--work", args.work, "--tensor-size",
                   str(args.tensor_size), "--max-gflop", str(args.max_gflop)]
            cmd += [f"--{k}={getattr(args, k)}" for k in ("pjreddie", "alexeyab") if getattr(args, k)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                result = json.loads(lines[-1][7:]) if lines else {
                    "cfg": cfg.name, "status": "loads",
                    "error": f"worker exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"}
            except subprocess.TimeoutExpired:
                result = {"cfg": cfg.name, "status": "loads", "error": f"timed out after {args.timeout:g} s"}
            result["folder"] = str(folder)
            results.append(result)
            print(json.dumps(result), flush=True)
    print("\n| cfg | | what |\n|---|---|---|")
    for r in results:
        print(row(r))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
