"""The reference-pairing rule lives in :mod:`yolo_devtools.matching` (shared with
``scripts/engine_fidelity.py``); re-exported here for the tests."""

from yolo_devtools.matching import iou_cxcywh, match_reference, pair_with_reference  # noqa: F401
