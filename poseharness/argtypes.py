"""Argument types shared by every verb, so one rule holds for one kind of flag wherever it appears."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer ≥ 1 (``--threads``, batch sizes, counts that cannot be zero).

    Anything else is refused by argparse with ``argument --threads: must be a positive integer, got '0'``
    (exit status 2), instead of being clamped or accepted silently.
    """
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value
