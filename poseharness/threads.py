"""Torch's intra-op thread count for the duration of a block (small per-image work runs fastest on one thread,
and on a shared 2-core machine more threads wait on each other)."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(n: int):
    """``torch.set_num_threads(max(1, n))`` inside the block, the previous count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
