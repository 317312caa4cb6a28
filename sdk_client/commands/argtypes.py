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
fraction = _ranged(float, 0.0, 1.0, what="between 0 and 1")
percent = _ranged(int, 0, 100, what="between 0 and 100")
