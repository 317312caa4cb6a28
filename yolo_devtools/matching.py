"""Compare detections with pjreddie Darknet's reference output (same set, confidence, IoU).

Used by the component tests and by ``scripts/engine_fidelity.py``.
"""

from __future__ import annotations


def iou_cxcywh(a, b) -> float:
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def pair_with_reference(got, ref):
    """Pair each reference detection with an unused detection of the same label (highest IoU, then
    closest confidence). Yields ``(ref_detection, match or None, iou, |Δconf|)``."""
    unused = list(range(len(got)))
    for label, conf, box in sorted(ref, key=lambda r: -r[1]):
        candidates = [i for i in unused if got[i][0] == label]
        if not candidates:
            yield (label, conf, box), None, 0.0, float("inf")
            continue
        best = max(candidates, key=lambda i: (iou_cxcywh(got[i][2], box), -abs(got[i][1] - conf)))
        unused.remove(best)
        yield (label, conf, box), got[best], iou_cxcywh(got[best][2], box), abs(got[best][1] - conf)


def match_reference(got, ref, conf_tol: float = 0.02, iou_min: float = 0.95) -> tuple[float, float]:
    """``got`` and ``ref`` are lists of ``[label, confidence, [cx, cy, w, h]]``.

    Asserts the same multiset of labels and a one-to-one pairing (same label, |Δconf| <= conf_tol,
    IoU >= iou_min). Returns (max |Δconf|, min IoU) for reporting.
    """
    assert sorted(g[0] for g in got) == sorted(r[0] for r in ref), (
        f"label sets differ: got {sorted(g[0] for g in got)}, expected {sorted(r[0] for r in ref)}"
    )
    worst_conf, worst_iou = 0.0, 1.0
    for (label, conf, box), match, iou, dconf in pair_with_reference(got, ref):
        assert iou >= iou_min and dconf <= conf_tol, (
            f"{label} {conf:.4f} {box}: best match {match} has IoU {iou:.4f}, Δconf {dconf:.4f}"
        )
        worst_conf, worst_iou = max(worst_conf, dconf), min(worst_iou, iou)
    return worst_conf, worst_iou
