"""argparse ``type=`` validators shared by the CLI commands (one clear usage error each)."""

from __future__ import annotations

import argparse
import math


def _parse(cast, text: str):
    try:
        value = cast(text)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
    if cast is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _ranged(cast, lo=None, hi=None, *, lo_open: bool = False, what: str):
    def check(text: str):
        value = _parse(cast, text)
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        if too_low or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return check


positive_int = _ranged(int, 1, what=">= 1")
non_negative_int = _ranged(int, 0, what=">= 0")
positive_float = _ranged(float, 0.0, lo_open=True, what="> 0")
non_negative_float = _ranged(float, 0.0, what=">= 0")
fraction = _ranged(float, 0.0, 1.0, what="between 0 and 1")
percent = _ranged(int, 0, 100, what="between 0 and 100")
port = _ranged(int, 1, 65535, what="a port between 1 and 65535")


def _confidence_bounds() -> tuple[float, str]:
    from yolo_contract.tensors import MIN_CONFIDENCE

    low = MIN_CONFIDENCE["confidence"]
    return low, f"between {low:g} and 1 (the server's bounds)"


#: ``--conf``: the server's own bounds (below 0.001 the server refuses: NMS cost explodes).
confidence = _ranged(float, _confidence_bounds()[0], 1.0, what=_confidence_bounds()[1])
