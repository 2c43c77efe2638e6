"""The generic trainer: any method directory's model, targets and loss, on any dataset, resumable bit for bit.

``train(...)`` (the ``poseharness train`` verb) resolves the training config (:func:`contract.training_config`),
builds the method's model, the loader's :class:`PoseDataset` with augmentation and the method's ``encode``, and
runs Adam with the spec's schedule (linear warm-up, then step decay; see :class:`contract.TrainSettings`).

Reproducibility. Everything random is a pure function of the seed and the step:
- the model's initialisation comes from ``torch.manual_seed(seed)``;
- the data order of epoch e is ``DistributedSampler(seed=seed).set_epoch(e)`` (a permutation seeded with
  seed + e; one process is the case of one replica), cut into batches in order, so step s always sees the same
  images, and a resumed run skips to the batch of its step without reading the ones before;
- each item's augmentation is drawn from a generator seeded with (seed, epoch, index) (:class:`PoseDataset`);
- DataLoader workers get seeds from a per-epoch generator, never from the global torch generator.
A checkpoint holds the model, the optimiser, the schedule, the AMP scaler, the step and the global torch / numpy
/ Python generator states. On the CPU the run uses deterministic algorithms, so a run killed at any moment
(SIGKILL) and started again with the same command ends with the same weights, bit for bit, as one that was never
interrupted (tested). CUDA runs use AMP and cuDNN autotuning and are not bit-reproducible.

Several processes: started by ``torchrun``, the same command trains with DDP (NCCL on CUDA, gloo on the CPU):
each process takes ``batch / world_size`` images of every step from its shard of the same permutation, gradients
are averaged, and only rank 0 writes checkpoints and prints. Losses shown are rank 0's.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import checkpoint as ckpt
from .contract import (MethodEncoder, TrainSettings, final_outputs, input_sizes, method_module, training_config,
                       view_of)
from .data.loader import PoseDataset, collate
from .data.manifest import Manifest
from .errors import HarnessError
from .methods import MethodSpec
from .provenance import config_hash

TRAIN_SPLIT = "train"


@dataclass
class TrainResult:
    """What a call to :func:`train` did. ``checkpoint`` is ``final.pt`` when the schedule is complete."""
    checkpoint: Path
    step: int
    total_steps: int
    complete: bool
    resumed_from: int | None = None      # the step a previous checkpoint had reached
    already_complete: bool = False        # nothing to do: final.pt of this config was there
    seconds: float = 0.0                  # wall time of this call's steps
    losses: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when not started by torchrun)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(rank=int(os.environ["RANK"]), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_batches(sampler: DistributedSampler, epoch: int, per_rank_batch: int, start: int, stop: int
                  ) -> list[list[int]]:
    """Index lists of batches ``start..stop-1`` of ``epoch`` for this process (a pure function of seed, epoch)."""
    sampler.set_epoch(epoch)
    order = list(sampler)
    return [order[i * per_rank_batch:(i + 1) * per_rank_batch] for i in range(start, stop)]


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of a collated batch onto ``device``; lists (per-person arrays, metas) stay as they are."""
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def as_float(outputs: Any) -> Any:
    """Model outputs in float32 (AMP produces float16 maps; the losses are computed in float32)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    if isinstance(outputs, dict):
        return {k: as_float(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(as_float(v) for v in outputs)
    return outputs


def head_layout(outputs: Any) -> dict[str, int]:
    """{output name: channels} of the final outputs."""
    return {k: int(v.shape[1]) for k, v in final_outputs(outputs).items()}


class LRSchedule:
    """The learning-rate multiplier of step s (``TrainSettings.lr_factor``) for ``LambdaLR``.

    LambdaLR saves a callable object's ``__dict__`` in its state, so it holds only plain numbers (the
    checkpoint is read with ``weights_only=True``)."""

    def __init__(self, settings: TrainSettings, total: int):
        self.warmup, self.warmup_factor = int(settings.warmup), float(settings.warmup_factor)
        self.decay_at, self.decay_factor = [float(f) for f in settings.decay_at], float(settings.decay_factor)
        self.total = int(total)

    def __call__(self, step: int) -> float:
        return TrainSettings(batch=1, lr=1.0, steps=self.total, warmup=self.warmup, warmup_factor=self.warmup_factor,
                             decay_at=tuple(self.decay_at), decay_factor=self.decay_factor
                             ).lr_factor(step, self.total)


def train_step(net: torch.nn.Module, module, batch: dict, cfg: dict, optimizer, scheduler, scaler, use_amp: bool,
               grad_clip: float | None, progress: float = 0.0) -> tuple[Any, dict, torch.Tensor]:
    """One optimiser step on a batch already on the device: forward (autocast under AMP), the method's loss in
    float32 (with the config of its ``loss_config(cfg, progress)`` where the method has one; progress = steps
    done / all steps), backward through the AMP scaler, optional gradient clipping, Adam, schedule.

    Under AMP a step whose gradients overflow is skipped by the scaler (and the loss may be infinite); without
    AMP the caller checks the returned loss. Returns (float32 outputs, loss terms, their sum).
    """
    with torch.autocast(batch["image"].device.type, dtype=torch.float16, enabled=use_amp):
        outputs = net(batch["image"])
    outputs = as_float(outputs)
    loss_config = getattr(module, "loss_config", None)
    terms = module.loss(outputs, batch, loss_config(cfg, progress) if loss_config is not None else cfg)
    loss = sum(terms.values())
    if not use_amp and not torch.isfinite(loss):
        return outputs, terms, loss          # no update from a non-finite loss; the trainer stops
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return outputs, terms, loss


@contextlib.contextmanager
def deterministic(enabled: bool):
    """``torch.use_deterministic_algorithms(enabled)`` for the duration, then the previous setting."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _existing(out_dir: Path, cfg: dict, spec: MethodSpec, training: str, world: int) -> tuple[dict | None, Path | None]:
    """The checkpoint to resume from (final.pt, else last.pt), checked against this run; (None, None) if none."""
    for name in (ckpt.FINAL, ckpt.LAST):
        path = out_dir / name
        if not path.exists():
            continue
        state = ckpt.load_checkpoint(path)
        ckpt.check_identity(state, path, method=spec.name, training=training)
        if state["config_hash"] != config_hash(cfg):
            diffs = ckpt.config_differences(state["config"], cfg)
            raise HarnessError(
                f"{path}: field config: the checkpoint was trained with another config ("
                + "; ".join(diffs[:5]) + ("; ..." if len(diffs) > 5 else "")
                + "); choose another --out or remove the old run")
        if state["world_size"] != world:
            raise HarnessError(f"{path}: field world_size: the run was started with {state['world_size']} "
                               f"process(es), this one has {world}; resume with the same number")
        return state, path
    return None, None


def train(spec: MethodSpec, training: str, manifest: Manifest, scale: str, *, seed: int = 0,
          out: str | os.PathLike | None = None, size: str | None = None, data_seed: int | None = None,
          steps: int | None = None, workers: int | None = None, checkpoint_every: int | None = None,
          keep_every: int | None = None, device: str = "auto", amp: bool = True, progress: bool = True,
          log=print) -> TrainResult:
    """Train ``spec``'s ``training`` at ``scale`` on the ``train`` split of ``manifest``; resume if possible.

    out:              run directory (default ``checkpoints/<method>/<dataset>/<training>/<scale>-seed<N>/``)
    size, data_seed:  which synthetic set; steps: override the schedule's length
    workers, checkpoint_every: override the spec's (they do not change the result)
    keep_every:       also keep a snapshot ``snapshots/step-NNNNNN.pt`` every this many steps (learning curves,
                      ``poseharness bench curve``); does not change the result
    device:           auto | cpu | cuda[:N]; amp: use AMP (float16 autocast + GradScaler) on CUDA
    Returns a :class:`TrainResult`. Raises :class:`HarnessError` for bad specs, data or checkpoints.
    """
    module = method_module(spec)
    cfg, settings = training_config(spec, training, scale, manifest, size=size, data_seed=data_seed, seed=seed,
                                    steps=steps)
    cfg_hash = config_hash(cfg)
    manifest.split(TRAIN_SPLIT)         # a dataset without a train split: error naming the manifest
    ddp = Distributed.from_env()
    dev = pick_device(device, ddp)
    use_amp = bool(amp) and dev.type == "cuda"
    out_dir = Path(out) if out is not None else ckpt.run_dir(spec.name, manifest.name, training, scale, seed)
    n_workers = settings.workers if workers is None else int(workers)
    every = settings.checkpoint_every if checkpoint_every is None else int(checkpoint_every)
    if every < 1:
        raise HarnessError(f"--checkpoint-every must be a positive integer, got {every}")
    if keep_every is not None and keep_every < 1:
        raise HarnessError(f"--keep-every must be a positive integer, got {keep_every}")
    if settings.batch % ddp.world_size:
        raise HarnessError(f"{spec.source}: field scales.{scale}.train.batch: {settings.batch} does not split "
                           f"evenly over {ddp.world_size} processes")
    per_rank = settings.batch // ddp.world_size

    state, state_path = _existing(out_dir, cfg, spec, training, ddp.world_size)
    if state is not None and state["complete"]:
        if ddp.main:
            log(f"{state_path}: already complete ({state['step']} steps); nothing to do")
        return TrainResult(state_path, state["step"], state["total_steps"], True, resumed_from=state["step"],
                           already_complete=True, losses=state["losses"])

    train_input, _ = input_sizes(cfg)
    augment = settings.augment_config()
    dataset = PoseDataset(manifest, TRAIN_SPLIT, input_size=train_input, view=view_of(spec), augment=augment,
                          encode=MethodEncoder(spec, cfg), size=size, seed=data_seed, augment_seed=seed)
    per_epoch = (len(dataset) // ddp.world_size) // per_rank
    if per_epoch < 1:
        raise HarnessError(f"{manifest.annotation_path(TRAIN_SPLIT, size, data_seed)}: {len(dataset)} training "
                           f"item(s), fewer than one batch of {settings.batch}")
    total = settings.total_steps(per_epoch)

    if ddp.enabled and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        with deterministic(dev.type == "cpu"):
            return _run(spec, module, training, scale, seed, cfg, cfg_hash, settings, dataset, per_rank, per_epoch,
                        total, out_dir, state, state_path, dev, use_amp, ddp, n_workers, every, keep_every,
                        progress, log)
    finally:
        if ddp.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _run(spec, module, training, scale, seed, cfg, cfg_hash, settings, dataset, per_rank, per_epoch, total,
         out_dir, state, state_path, dev, use_amp, ddp, n_workers, every, keep_every, progress, log) -> TrainResult:
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(seed)
    model = module.build_model(cfg).to(dev)
    if ddp.enabled and dev.type == "cuda":
        # One BatchNorm over the whole global batch, as a single process would compute it.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule(settings, total))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start, seconds_before, heads = 0, 0.0, None
    if state is not None:
        if (state["steps_per_epoch"], state["total_steps"]) != (per_epoch, total):
            raise HarnessError(
                f"{state_path}: field steps_per_epoch: the checkpoint has {state['steps_per_epoch']} steps per "
                f"epoch and {state['total_steps']} in all, this run {per_epoch} and {total}: the training split "
                f"changed; choose another --out or remove the old run")
        ckpt.load_model_state(model, state, state_path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        start, seconds_before, heads = state["step"], float(state["seconds"]), state["heads"]
        if ddp.main:
            log(f"resuming {state_path} at step {start} of {total}")
    net = model
    if ddp.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if ddp.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temporaries(out_dir)

    sampler = DistributedSampler(dataset, num_replicas=ddp.world_size, rank=ddp.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    losses: dict[str, float] = dict(state["losses"]) if state is not None else {}

    def save(step: int, complete: bool, elapsed: float, snapshot: bool = False) -> Path:
        path = out_dir / (ckpt.FINAL if complete else ckpt.LAST)
        if ddp.main:
            state = {
                "format": ckpt.FORMAT, "version": ckpt.VERSION, "complete": complete,
                "method": spec.name, "method_dir": str(spec.directory.resolve()), "training": training,
                "scale": scale, "seed": int(seed), "config_json": json.dumps(cfg, sort_keys=True),
                "config_hash": cfg_hash, "heads": heads or {}, "step": step, "total_steps": total,
                "steps_per_epoch": per_epoch, "world_size": ddp.world_size,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if use_amp else {},
                "rng": ckpt.rng_state(), "seconds": float(elapsed), "losses": dict(losses),
            }
            ckpt.save_checkpoint(path, state)
            if snapshot:
                ckpt.save_checkpoint(out_dir / ckpt.SNAPSHOTS / ckpt.snapshot_name(step), state)
            if complete:
                (out_dir / ckpt.LAST).unlink(missing_ok=True)
        if ddp.enabled:
            dist.barrier()
        return path

    model.train()
    bar = tqdm(total=total, initial=start, desc=f"train {spec.name}/{training} {scale}", unit="step",
               disable=not (progress and ddp.main), mininterval=1.0, dynamic_ncols=True, file=sys.stderr)
    t0 = time.perf_counter()
    step = start
    path = state_path
    try:
        while step < total:
            epoch, pos = divmod(step, per_epoch)
            stop = min(per_epoch, pos + (total - step))
            dataset.set_epoch(epoch)
            batches = epoch_batches(sampler, epoch, per_rank, pos, stop)
            loader = DataLoader(dataset, batch_sampler=batches, num_workers=n_workers, collate_fn=collate,
                                pin_memory=dev.type == "cuda",
                                generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            for batch in loader:
                outputs, terms, loss = train_step(net, module, to_device(batch, dev), cfg, optimizer, scheduler,
                                                  scaler, use_amp, settings.grad_clip, progress=step / total)
                if heads is None:
                    heads = head_layout(outputs)
                elif head_layout(outputs) != heads:
                    raise HarnessError(f"{state_path}: field heads: the checkpoint's heads {heads} differ from "
                                       f"the model's {head_layout(outputs)}")
                if not torch.isfinite(loss) and not use_amp:
                    raise HarnessError(f"training {spec.name}/{training}: the loss is not finite at step {step} "
                                       f"({ {k: float(v) for k, v in terms.items()} }); no checkpoint written")
                step += 1
                losses = {k: float(v.detach()) for k, v in terms.items()}
                losses["total"] = float(loss.detach())
                bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
                bar.update(1)
                keep = keep_every is not None and (step % keep_every == 0 or step == total)
                if step == total or step % every == 0 or keep:
                    path = save(step, step == total, seconds_before + time.perf_counter() - t0, keep)
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    if ddp.main and step > start:
        rate = (step - start) / max(elapsed, 1e-9)
        log(f"trained {spec.name}/{training} at scale {scale}: {step}/{total} steps "
            f"({rate:.2f} steps/s this call, {seconds_before + elapsed:.1f} s in all); "
            f"losses {', '.join(f'{k} {v:.4g}' for k, v in losses.items())}")
        log(f"checkpoint: {path}")
    return TrainResult(Path(path), step, total, step == total, resumed_from=start if state is not None else None,
                       seconds=elapsed, losses=losses)
