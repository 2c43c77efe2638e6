"""Torch's intra-op thread count for the duration of a block (small per-image work runs fastest on one thread,
and on a shared 2-core machine more threads wait on each other)."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(n: int | None):
    """``torch.set_num_threads(max(1, n))`` inside the block, the previous count after it; ``None`` leaves torch's
    count as it is (a command's ``--threads`` left out). A command run in-process (by a test) must not change the
    count for the rest of the process: another thread count changes float reductions, and so trained weights."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
