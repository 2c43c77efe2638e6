"""Where a training or a prediction runs: this process's place in a ``torchrun`` job, the torch device, the
process group of a DDP job, and deterministic algorithms.

Nothing here knows about methods or checkpoints; :mod:`poseharness.train` and :mod:`poseharness.predict` use it.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import HarnessError


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when not started by torchrun)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Distributed":
        """Read ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` as torchrun sets them."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(rank=int(os.environ["RANK"]), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        """More than one process: gradients are averaged over the job."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes checkpoints and prints."""
        return self.rank == 0


def pick_device(name: str, ddp: Distributed) -> torch.device:
    """'auto' is CUDA when available (one GPU per process under torchrun), else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise HarnessError("--device cuda: no CUDA device is available")
        return torch.device("cuda", ddp.local_rank) if name == "cuda" else torch.device(name)
    if name != "cpu":
        raise HarnessError(f"unknown device {name!r} (auto | cpu | cuda | cuda:N)")
    return torch.device("cpu")


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(enabled)`` for the duration, then the previous setting."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


@contextlib.contextmanager
def process_group(ddp: Distributed, dev: torch.device) -> Iterator[None]:
    """The DDP process group for the duration (NCCL on CUDA, gloo on the CPU), destroyed on the way out.

    Does nothing for one process; a group the caller already initialised is used (and destroyed at the end)."""
    if ddp.enabled and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        yield
    finally:
        if ddp.enabled and dist.is_initialized():
            dist.destroy_process_group()


def barrier(ddp: Distributed) -> None:
    """Wait for every process of a DDP job (nothing for one process)."""
    if ddp.enabled:
        dist.barrier()
