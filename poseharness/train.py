"""The generic trainer: any method directory's model, targets and loss, on any dataset, resumable bit for bit.

``train(...)`` (the ``poseharness train`` verb) resolves the training config (:func:`config.training_config`),
builds the method's model, the loader's :class:`PoseDataset` with augmentation and the method's ``encode``, and
runs Adam with the spec's schedule (linear warm-up, then step decay; see :class:`config.TrainSettings`).
How one call runs (run directory, steps, workers, device, ...) is a :class:`RunOptions`; the work is done by a
:class:`_Run` in named parts (prepare, load the data, build, restore, the loop, one step, save, finish).

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

Method hooks (all optional; see ``contract.OPTIONAL``):
- ``train_step(net, batch, cfg, *, progress) -> (outputs, terms)``: the method's own forward pass(es) and loss
  terms for a batch already on the device (several passes, teacher forcing, truncated back-propagation through
  time: detach the recurrent state between chunks inside the hook). It runs under autocast when AMP is on, so
  compute the loss terms in float32 (``as_float``); ``progress`` is steps done / all steps (call ``loss_config``
  with it where the method has one). The trainer sums the terms, and does the one backward pass through the AMP
  scaler, the clipping, Adam and the schedule, exactly as for the default step. (The sum of per-chunk losses of a
  truncated unroll has the gradient of per-chunk backward passes; the price is the memory of all chunks' graphs.)
  Without the hook, a step is ``loss(model(images), batch, loss_config(cfg, progress))``, as it always was.
- ``collate(items) -> batch``: the method's collation of dataset items (e.g. per-person targets of varying length
  as lists of tensors); default :func:`poseharness.data.loader.collate`. Its tensors, also those inside lists,
  tuples and dicts, are moved to the device (the default's per-person lists stay on the CPU, as they always did).
- ``final_outputs(outputs) -> dict``: the final outputs {name: (B, C, ...) tensor} when the model's outputs are
  not a list of per-stack dicts (FPN levels, recurrent steps); the head layout ({name: C}) is checked on them.
  Default :func:`contract.final_outputs`.

Starting from another training. A training entry of method.yaml may say ``init: {from: <training>, freeze:
[<module name prefixes>]}``: the model starts from that training's complete checkpoint (default its run
directory's ``final.pt`` for the same dataset, scale and seed, :func:`init_checkpoint_path`; else
``init_checkpoint=``), every parameter under a prefix (``body`` freezes ``body.0.weight`` but not
``body2.weight``) is frozen (no gradient, not in the optimiser; BatchNorm layers under it stay in eval mode), and
the source's sha256 goes into the config (so another source is another config) and, with its path, into the
checkpoint's ``init`` field. The source may be a training of another method (``method: <name>``, a sibling
directory of this method's, e.g. the recurrent method on a trained Associative Embedding), whose whole model
becomes the submodule ``into: <prefix>`` of this one; the rest of the model keeps its fresh initialisation.
"""
from __future__ import annotations

import dataclasses
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import TrainSettings, input_sizes, training_config
from .contract import MethodEncoder, final_outputs, final_outputs_of, method_module, module_file, view_of
from .data.loader import PoseDataset, collate
from .data.manifest import Manifest
from .device import Distributed, barrier, deterministic, pick_device, process_group
from .errors import HarnessError
from .io import file_digest
from .methods import MethodSpec, init_entry, load_method_file  # noqa: F401  (init_entry: part of this API)
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
class RunOptions:
    """How one call of :func:`train` runs.

    out:              run directory (default ``checkpoints/<method>/<dataset>/<training>/<scale>-seed<N>/``)
    size, data_seed:  which synthetic set; steps: override the schedule's length
    workers, checkpoint_every: override the spec's (they do not change the result)
    keep_every:       also keep a snapshot ``snapshots/step-NNNNNN.pt`` every this many steps (learning curves,
                      ``poseharness bench curve``); does not change the result
    device:           auto | cpu | cuda[:N]; amp: use AMP (float16 autocast + GradScaler) on CUDA
    progress:         show a progress bar (rank 0)
    init_checkpoint:  the checkpoint a training with ``init:`` starts from (default :func:`init_checkpoint_path`)
    log:              where the run's messages go (default ``print``)
    """
    out: str | os.PathLike | None = None
    size: str | None = None
    data_seed: int | None = None
    steps: int | None = None
    workers: int | None = None
    checkpoint_every: int | None = None
    keep_every: int | None = None
    device: str = "auto"
    amp: bool = True
    progress: bool = True
    init_checkpoint: str | os.PathLike | None = None
    log: Callable[..., Any] = print


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch's."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_batches(sampler: DistributedSampler, epoch: int, per_rank_batch: int, start: int, stop: int
                  ) -> list[list[int]]:
    """Index lists of batches ``start..stop-1`` of ``epoch`` for this process (a pure function of seed, epoch)."""
    sampler.set_epoch(epoch)
    order = list(sampler)
    return [order[i * per_rank_batch:(i + 1) * per_rank_batch] for i in range(start, stop)]


def to_device(batch: dict, device: torch.device, nested: bool = False) -> dict:
    """Tensors of a collated batch onto ``device``; lists (per-person arrays, metas) stay as they are, unless
    ``nested``: then tensors inside lists, tuples and dicts move too (a method's own ``collate`` hook)."""
    nb = device.type == "cuda"

    def move(v: Any, deeper: bool) -> Any:
        if isinstance(v, torch.Tensor):
            return v.to(device, non_blocking=nb)
        if deeper and isinstance(v, (list, tuple)):
            return type(v)(move(x, True) for x in v)
        if deeper and isinstance(v, dict):
            return {k: move(x, True) for k, x in v.items()}
        return v

    return {k: move(v, nested) for k, v in batch.items()}


def as_float(outputs: Any) -> Any:
    """Model outputs in float32 (AMP produces float16 maps; the losses are computed in float32)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    if isinstance(outputs, dict):
        return {k: as_float(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(as_float(v) for v in outputs)
    return outputs


def head_layout(outputs: Any, final: Callable[[Any], dict] = final_outputs) -> dict[str, int]:
    """{output name: channels} of the final outputs (``final``: the method's ``final_outputs``, if it has one)."""
    return {k: int(v.shape[1]) for k, v in final(outputs).items()}


def training_only_heads(module: Any) -> tuple[str, ...]:
    """The heads a method's model computes in training mode only (e.g. an intermediate supervision that inference
    skips): the names in the method module's optional ``training_only_heads`` (a tuple of output names; each also
    covers its per-level / per-stack copies ``name@...``); none by default. The training records every head it
    sees; the predictor (eval mode) compares the others only (:func:`inference_layout`)."""
    names = getattr(module, "training_only_heads", None) or ()
    if isinstance(names, str):
        names = (names,)
    if not isinstance(names, (tuple, list, set, frozenset)) or not all(isinstance(n, str) and n for n in names):
        raise HarnessError(f"{getattr(module, '__file__', module)}: training_only_heads must be a tuple of output "
                           f"names, got {names!r}")
    return tuple(names)


def inference_layout(layout: dict[str, int], training_only: tuple[str, ...] | list[str] = ()) -> dict[str, int]:
    """``layout`` (:func:`head_layout`) without the training-only heads: an output ``name`` or ``name@...`` whose
    ``name`` is in ``training_only`` is left out."""
    skip = set(training_only)
    return {k: v for k, v in layout.items() if k.split("@", 1)[0] not in skip}


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


# ----------------------------------------------------------------------------------------------------------
# One step
# ----------------------------------------------------------------------------------------------------------

def forward_loss(net: torch.nn.Module, module, batch: dict, cfg: dict, use_amp: bool, progress: float
                 ) -> tuple[Any, dict]:
    """The default step's forward pass (autocast under AMP) and the method's loss terms in float32, with the
    config of its ``loss_config(cfg, progress)`` where the method has one. Returns (float32 outputs, terms)."""
    with torch.autocast(batch["image"].device.type, dtype=torch.float16, enabled=use_amp):
        outputs = net(batch["image"])
    outputs = as_float(outputs)
    loss_config = getattr(module, "loss_config", None)
    terms = module.loss(outputs, batch, loss_config(cfg, progress) if loss_config is not None else cfg)
    return outputs, terms


def optimizer_step(loss: torch.Tensor, objects: ckpt.TrainingObjects, grad_clip: float | None) -> None:
    """Backward through the AMP scaler, optional gradient clipping (of the optimised parameters), Adam, schedule.
    Under AMP a step whose gradients overflow is skipped by the scaler."""
    optimizer, scaler = objects.optimizer, objects.scaler
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    objects.scheduler.step()


def train_step(net: torch.nn.Module, module, batch: dict, cfg: dict, optimizer, scheduler, scaler, use_amp: bool,
               grad_clip: float | None, progress: float = 0.0) -> tuple[Any, dict, torch.Tensor]:
    """One default optimiser step on a batch already on the device (:func:`forward_loss`, then
    :func:`optimizer_step`); kept with this signature for ``bench train``.

    Without AMP a non-finite loss makes no update (the caller checks the returned loss). Returns (float32
    outputs, loss terms, their sum)."""
    outputs, terms = forward_loss(net, module, batch, cfg, use_amp, progress)
    loss = sum(terms.values())
    if not use_amp and not torch.isfinite(loss):
        return outputs, terms, loss          # no update from a non-finite loss; the trainer stops
    optimizer_step(loss, ckpt.TrainingObjects(net, optimizer, scheduler, scaler), grad_clip)
    return outputs, terms, loss


# ----------------------------------------------------------------------------------------------------------
# A method's hooks
# ----------------------------------------------------------------------------------------------------------

class MethodCollate:
    """``collate_fn`` for the DataLoader: the method's ``collate(items)``.

    Picklable by reference to the method file (like :class:`contract.MethodEncoder`), so DataLoader workers
    started with 'spawn' re-import the method by path just as 'fork' workers inherit it."""

    def __init__(self, spec: MethodSpec):
        self.source = spec.source
        self._collate = method_module(spec).collate

    def __getstate__(self) -> dict:
        return {"source": self.source}

    def __setstate__(self, state: dict) -> None:
        self.source = state["source"]
        self._collate = method_module(load_method_file(self.source)).collate

    def __call__(self, items: list) -> Any:
        return self._collate(items)


@dataclass(frozen=True)
class MethodHooks:
    """A method's trainer hooks: its ``train_step`` (None: the default step), its collation (default the loader's
    :func:`collate`) and its ``final_outputs`` (default :func:`contract.final_outputs`)."""
    step: Callable | None
    collate: Callable
    final: Callable

    @classmethod
    def of(cls, spec: MethodSpec, module) -> "MethodHooks":
        """The hooks ``module`` (the method module of ``spec``) defines, defaults for the others."""
        return cls(step=getattr(module, "train_step", None),
                   collate=MethodCollate(spec) if getattr(module, "collate", None) is not None else collate,
                   final=final_outputs_of(module))


# ----------------------------------------------------------------------------------------------------------
# Starting from another training: init: {from, freeze}
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InitSource:
    """The checkpoint a training starts from: the training it is of (``init.from``), the frozen prefixes, the
    file, its sha256 and its loaded state."""
    training: str
    freeze: tuple[str, ...]
    path: Path
    sha256: str
    state: dict = field(repr=False, compare=False)
    other: dict = field(default_factory=dict)   # {'method', 'into'} for a training of another method

    @property
    def into(self) -> str:
        return self.other.get("into", "")

    def config(self) -> dict:
        """What goes into the config (and its hash): the source training (and method, and the submodule it goes
        into), the frozen prefixes, the file's hash."""
        return {"from": self.training, **self.other, "freeze": list(self.freeze), "sha256": self.sha256}

    def record(self) -> dict:
        """The checkpoint's ``init`` field: :meth:`config` and the source's path."""
        return {**self.config(), "path": str(self.path)}


def init_checkpoint_path(spec: MethodSpec, training: str, manifest_name: str, scale: str, seed: int) -> Path:
    """The default checkpoint ``training`` starts from: ``final.pt`` of the run directory of its ``init.from``
    training (of ``init.method``) on the same dataset, scale and seed. An error when the training has no
    ``init:``."""
    entry = init_entry(spec, training)
    if entry is None:
        raise HarnessError(f"{spec.source}: field trainings.{training}.init: training {training!r} does not start "
                           f"from another training")
    return ckpt.run_dir(entry["method"], manifest_name, entry["from"], scale, seed) / ckpt.FINAL


def resolve_init(spec: MethodSpec, training: str, manifest_name: str, scale: str, seed: int,
                 path: str | os.PathLike | None) -> InitSource | None:
    """The source checkpoint of a training with ``init:`` (``path``, else :func:`init_checkpoint_path`), read
    and checked: it exists, is of this method and of the ``from`` training, and is complete. None without
    ``init:`` (then ``path`` must be None)."""
    entry = init_entry(spec, training)
    if entry is None:
        if path is not None:
            raise HarnessError(f"--init-checkpoint {path}: training {training!r} has no init: entry to start from "
                               f"another training ({spec.source}: field trainings.{training}.init)")
        return None
    path = Path(path) if path is not None else init_checkpoint_path(spec, training, manifest_name, scale, seed)
    if not path.is_file():
        raise HarnessError(f"{path}: checkpoint file not found: training {training!r} starts from training "
                           f"{entry['from']!r} ({spec.source}: field trainings.{training}.init.from); train that "
                           f"first or pass --init-checkpoint")
    state = ckpt.load_checkpoint(path)
    ckpt.check_identity(state, path, method=entry["method"], training=entry["from"])
    if not state["complete"]:
        raise HarnessError(f"{path}: field complete: the checkpoint to start {training!r} from is not complete "
                           f"({state['step']} of {state['total_steps']} steps); finish training "
                           f"{entry['from']!r} first")
    other = {"method": entry["method"], "into": entry["into"]} if entry["method"] != spec.name else {}
    return InitSource(entry["from"], tuple(entry["freeze"]), path.resolve(), file_digest(path), state, other)


def _under(name: str, prefix: str) -> bool:
    """``name`` is the module / parameter ``prefix`` or lies inside it (``body`` covers ``body.0.weight``)."""
    prefix = prefix.rstrip(".")
    return name == prefix or name.startswith(prefix + ".")


def freeze(model: torch.nn.Module, prefixes: tuple[str, ...], where: str) -> set[str]:
    """Stop the gradient of every parameter under one of ``prefixes``; returns their names. A prefix that
    covers no parameter is an error naming ``where`` (the setting) and the model's top-level modules."""
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(_under(n, prefix) for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise HarnessError(f"{where}: {prefix!r} names no parameter of the model (its modules: "
                               f"{', '.join(tops)})")
    frozen = {n for n in names if any(_under(n, p) for p in prefixes)}
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    return frozen


def train_mode(model: torch.nn.Module, frozen_prefixes: tuple[str, ...] = ()) -> None:
    """``model.train()``, with the BatchNorm layers under a frozen prefix kept in eval mode (their running
    statistics stay those of the source training)."""
    model.train()
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and any(_under(name, p) for p in frozen_prefixes):
            m.eval()


# ----------------------------------------------------------------------------------------------------------
# train()
# ----------------------------------------------------------------------------------------------------------

def train(spec: MethodSpec, training: str, manifest: Manifest, scale: str, *, seed: int = 0,
          options: RunOptions | None = None, **settings: Any) -> TrainResult:
    """Train ``spec``'s ``training`` at ``scale`` on the ``train`` split of ``manifest``; resume if possible.

    ``options`` says how this call runs (:class:`RunOptions`); its fields may also be given as keywords
    (``out=``, ``size=``, ``steps=``, ``device=``, ``init_checkpoint=``, ``log=``, ...), which override ``options``.
    Returns a :class:`TrainResult`. Raises :class:`HarnessError` for bad specs, data or checkpoints.
    """
    opts = dataclasses.replace(options or RunOptions(), **settings)
    run = _Run.prepare(spec, training, manifest, scale, seed, opts)
    if run.state is not None and run.state["complete"]:
        return run.already_complete()
    run.load_data(manifest)
    with process_group(run.ddp, run.dev), deterministic(run.dev.type == "cpu"):
        return run.execute()


def _checkpoint_every(opts: RunOptions, settings: TrainSettings) -> int:
    """Steps between checkpoints (the option, else the spec's); checks ``keep_every`` too."""
    every = settings.checkpoint_every if opts.checkpoint_every is None else int(opts.checkpoint_every)
    if every < 1:
        raise HarnessError(f"--checkpoint-every must be a positive integer, got {every}")
    if opts.keep_every is not None and opts.keep_every < 1:
        raise HarnessError(f"--keep-every must be a positive integer, got {opts.keep_every}")
    return every


@dataclass
class _Run:
    """One call of :func:`train`: what it resolved before the first step, and the parts of the work."""
    spec: MethodSpec
    training: str
    scale: str
    seed: int
    opts: RunOptions
    module: Any
    hooks: MethodHooks
    cfg: dict
    settings: TrainSettings
    init: InitSource | None
    ddp: Distributed
    dev: torch.device
    out_dir: Path
    every: int
    state: dict | None = None            # the checkpoint resumed from, and its path
    state_path: Path | None = None
    dataset: PoseDataset | None = None   # set by load_data
    per_epoch: int = 0
    total: int = 0

    @classmethod
    def prepare(cls, spec: MethodSpec, training: str, manifest: Manifest, scale: str, seed: int,
                opts: RunOptions) -> "_Run":
        """Resolve the config, the source of an ``init:``, the device and the checkpoint to resume from."""
        module = method_module(spec)
        cfg, settings = training_config(spec, training, scale, manifest, size=opts.size,
                                        data_seed=opts.data_seed, seed=seed, steps=opts.steps)
        init = resolve_init(spec, training, manifest.name, scale, seed, opts.init_checkpoint)
        if init is not None:
            cfg["init"] = init.config()
        manifest.split(TRAIN_SPLIT)         # a dataset without a train split: error naming the manifest
        ddp = Distributed.from_env()
        out = opts.out if opts.out is not None else ckpt.run_dir(spec.name, manifest.name, training, scale, seed)
        run = cls(spec=spec, training=training, scale=scale, seed=seed, opts=opts, module=module,
                  hooks=MethodHooks.of(spec, module), cfg=cfg, settings=settings, init=init, ddp=ddp,
                  dev=pick_device(opts.device, ddp), out_dir=Path(out), every=_checkpoint_every(opts, settings))
        if settings.batch % ddp.world_size:
            raise HarnessError(f"{spec.source}: field scales.{scale}.train.batch: {settings.batch} does not split "
                               f"evenly over {ddp.world_size} processes")
        # A corrupted final.pt / last.pt is never used: the newest verified snapshot instead (said), else an error
        # saying how to restart. Only rank 0 logs and repairs files.
        run.state, run.state_path = ckpt.find_resumable(run.out_dir, cfg, method=spec.name, training=training,
                                                        world_size=ddp.world_size,
                                                        log=opts.log if ddp.main else None, repair=ddp.main)
        return run

    @property
    def use_amp(self) -> bool:
        return bool(self.opts.amp) and self.dev.type == "cuda"

    @property
    def per_rank(self) -> int:
        return self.settings.batch // self.ddp.world_size

    @property
    def frozen_prefixes(self) -> tuple[str, ...]:
        return self.init.freeze if self.init is not None else ()

    def already_complete(self) -> TrainResult:
        """The result of a call that finds this config's ``final.pt``: nothing to do."""
        state = self.state
        if self.ddp.main:
            self.opts.log(f"{self.state_path}: already complete ({state['step']} steps); nothing to do")
        return TrainResult(self.state_path, state["step"], state["total_steps"], True, resumed_from=state["step"],
                           already_complete=True, losses=state["losses"])

    def load_data(self, manifest: Manifest) -> None:
        """The training split with augmentation and the method's targets; the schedule's length."""
        train_input, _ = input_sizes(self.cfg)
        self.dataset = PoseDataset(manifest, TRAIN_SPLIT, input_size=train_input, view=view_of(self.spec),
                                   augment=self.settings.augment_config(), encode=MethodEncoder(self.spec, self.cfg),
                                   size=self.opts.size, seed=self.opts.data_seed, augment_seed=self.seed,
                                   max_persons=self.settings.max_persons)
        self.per_epoch = (len(self.dataset) // self.ddp.world_size) // self.per_rank
        if self.per_epoch < 1:
            raise HarnessError(f"{manifest.annotation_path(TRAIN_SPLIT, self.opts.size, self.opts.data_seed)}: "
                               f"{len(self.dataset)} training item(s), fewer than one batch of {self.settings.batch}")
        self.total = self.settings.total_steps(self.per_epoch)

    def header(self) -> ckpt.RunHeader:
        """The fields every checkpoint of this run has in common."""
        return ckpt.RunHeader(
            method=self.spec.name, method_dir=str(self.spec.directory.resolve()), training=self.training,
            scale=self.scale, seed=int(self.seed), config=self.cfg, config_hash=config_hash(self.cfg),
            total_steps=self.total, steps_per_epoch=self.per_epoch, world_size=self.ddp.world_size,
            init=self.init.record() if self.init is not None else {})

    def execute(self) -> TrainResult:
        """Build (or restore) the model and its optimiser, then train to the end of the schedule."""
        if self.dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
        seed_everything(self.seed)
        objects = self.build()
        progress = self.restore(objects)
        net = objects.model
        if self.ddp.enabled:
            net = torch.nn.parallel.DistributedDataParallel(
                objects.model, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        if self.ddp.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_temporaries(self.out_dir)
        return self.loop(net, objects, progress)

    def build(self) -> ckpt.TrainingObjects:
        """The model (from the ``init:`` source's weights on a fresh start, with its frozen parameters), Adam over
        the parameters it trains, the schedule and the AMP scaler."""
        model = self.module.build_model(self.cfg).to(self.dev)
        if self.ddp.enabled and self.dev.type == "cuda":
            # One BatchNorm over the whole global batch, as a single process would compute it.
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        params: Any = model.parameters()
        if self.init is not None:
            if self.state is None:
                ckpt.load_init_weights(model, self.init.state, self.init.path, into=self.init.into)
            frozen = freeze(model, self.init.freeze, f"{self.spec.source}: field trainings.{self.training}.init.freeze")
            params = [p for n, p in model.named_parameters() if n not in frozen]
        optimizer = torch.optim.Adam(params, lr=self.settings.lr, weight_decay=self.settings.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule(self.settings, self.total))
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        return ckpt.TrainingObjects(model, optimizer, scheduler, scaler)

    def restore(self, objects: ckpt.TrainingObjects) -> ckpt.Progress:
        """The progress of the checkpoint resumed from (its state put back into ``objects``), or step 0."""
        if self.state is None:
            return ckpt.Progress(step=0, complete=False, seconds=0.0, losses={}, heads={})
        ckpt.check_schedule(self.state, self.state_path, self.per_epoch, self.total)
        progress = ckpt.restore_training(self.state, self.state_path, objects)
        if self.ddp.main:
            self.opts.log(f"resuming {self.state_path} at step {progress.step} of {self.total}")
        return progress

    def loop(self, net: torch.nn.Module, objects: ckpt.TrainingObjects, progress: ckpt.Progress) -> TrainResult:
        """Steps from ``progress.step`` to the end of the schedule, epoch by epoch, saving as configured."""
        sampler = DistributedSampler(self.dataset, num_replicas=self.ddp.world_size, rank=self.ddp.rank,
                                     shuffle=True, seed=self.seed, drop_last=True)
        header = self.header()
        train_mode(objects.model, self.frozen_prefixes)
        bar = tqdm(total=self.total, initial=progress.step, desc=f"train {self.spec.name}/{self.training} "
                   f"{self.scale}", unit="step", disable=not (self.opts.progress and self.ddp.main),
                   mininterval=1.0, dynamic_ncols=True, file=sys.stderr)
        start, before, t0 = progress.step, progress.seconds, time.perf_counter()
        path = self.state_path
        try:
            while progress.step < self.total:
                for batch in self.epoch_loader(sampler, progress.step):
                    batch = to_device(batch, self.dev, nested=self.hooks.collate is not collate)
                    self.step(net, objects, batch, progress)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in progress.losses.items()}, refresh=False)
                    bar.update(1)
                    progress.seconds = before + time.perf_counter() - t0
                    path = self.save_if_due(header, objects, progress) or path
        finally:
            bar.close()
        return self.finish(progress, start, Path(path), time.perf_counter() - t0)

    def epoch_loader(self, sampler: DistributedSampler, step: int) -> DataLoader:
        """The loader of the rest of the epoch of ``step`` (up to the end of the schedule)."""
        epoch, pos = divmod(step, self.per_epoch)
        stop = min(self.per_epoch, pos + (self.total - step))
        self.dataset.set_epoch(epoch)
        batches = epoch_batches(sampler, epoch, self.per_rank, pos, stop)
        workers = self.settings.workers if self.opts.workers is None else int(self.opts.workers)
        return DataLoader(self.dataset, batch_sampler=batches, num_workers=workers, collate_fn=self.hooks.collate,
                          pin_memory=self.dev.type == "cuda",
                          generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def step(self, net: torch.nn.Module, objects: ckpt.TrainingObjects, batch: dict, progress: ckpt.Progress
             ) -> None:
        """One optimiser step: the loss terms (the method's ``train_step``, else the default forward and loss),
        checks of the head layout and the loss, the update; advances ``progress``."""
        done = progress.step / self.total
        if self.hooks.step is None:
            outputs, terms = forward_loss(net, self.module, batch, self.cfg, self.use_amp, done)
        else:
            outputs, terms = self.hooked_loss(net, batch, done)
        loss = sum(terms.values())
        self.check_heads(outputs, progress)
        if not self.use_amp and not torch.isfinite(loss):
            raise HarnessError(f"training {self.spec.name}/{self.training}: the loss is not finite at step "
                               f"{progress.step} ({ {k: float(v) for k, v in terms.items()} }); no checkpoint "
                               f"written")
        optimizer_step(loss, objects, self.settings.grad_clip)
        progress.step += 1
        progress.losses = {k: float(v.detach()) for k, v in terms.items()}
        progress.losses["total"] = float(loss.detach())

    def hooked_loss(self, net: torch.nn.Module, batch: dict, done: float) -> tuple[Any, dict]:
        """The method's own ``train_step(net, batch, cfg, progress=done)`` under autocast (when AMP is on); its
        (float32 outputs, float32 loss terms). A malformed return value is an error naming the module file."""
        with torch.autocast(self.dev.type, dtype=torch.float16, enabled=self.use_amp):
            got = self.hooks.step(net, batch, self.cfg, progress=done)
        if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], dict) and got[1]
                and all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in got[1].values())):
            raise HarnessError(f"{module_file(self.spec)}: train_step must return (outputs, {{name: scalar loss "
                               f"tensor}}), got {type(got).__name__}")
        outputs, terms = got
        return as_float(outputs), {k: v.float() for k, v in terms.items()}

    def check_heads(self, outputs: Any, progress: ckpt.Progress) -> None:
        """The final outputs are {name: (B, C, ...) tensor} with the head layout of the run so far."""
        final = self.hooks.final(outputs)
        if not isinstance(final, dict) or not all(isinstance(v, torch.Tensor) and v.dim() >= 2
                                                  for v in final.values()):
            raise HarnessError(f"{module_file(self.spec)}: the final outputs must be a dict of (B, C, ...) tensors "
                               f"(define final_outputs(outputs) for outputs of another form), got "
                               f"{type(final).__name__}")
        layout = head_layout(final, lambda x: x)
        if not progress.heads:
            progress.heads = layout
        elif layout != progress.heads:
            raise HarnessError(f"{self.state_path}: field heads: the checkpoint's heads {progress.heads} differ "
                               f"from the model's {layout}")

    def save_if_due(self, header: ckpt.RunHeader, objects: ckpt.TrainingObjects, progress: ckpt.Progress
                    ) -> Path | None:
        """Write ``last.pt`` every ``checkpoint_every`` steps, ``final.pt`` at the end, snapshots every
        ``keep_every``; the path written, None when none was due. Only rank 0 writes; all wait for it."""
        step, keep_every = progress.step, self.opts.keep_every
        snapshot = keep_every is not None and (step % keep_every == 0 or step == self.total)
        if not (step == self.total or step % self.every == 0 or snapshot):
            return None
        progress.complete = step == self.total
        path = self.out_dir / (ckpt.FINAL if progress.complete else ckpt.LAST)
        if self.ddp.main:
            state = ckpt.checkpoint_state(header, objects, progress)
            ckpt.save_checkpoint(path, state)
            if snapshot:
                ckpt.save_checkpoint(self.out_dir / ckpt.SNAPSHOTS / ckpt.snapshot_name(step), state)
            if progress.complete:
                (self.out_dir / ckpt.LAST).unlink(missing_ok=True)
        barrier(self.ddp)
        return path

    def finish(self, progress: ckpt.Progress, start: int, path: Path, elapsed: float) -> TrainResult:
        """Report what this call did (rank 0) and return it."""
        if self.ddp.main and progress.step > start:
            rate = (progress.step - start) / max(elapsed, 1e-9)
            self.opts.log(f"trained {self.spec.name}/{self.training} at scale {self.scale}: {progress.step}/"
                          f"{self.total} steps ({rate:.2f} steps/s this call, {progress.seconds:.1f} s in all); "
                          f"losses {', '.join(f'{k} {v:.4g}' for k, v in progress.losses.items())}")
            self.opts.log(f"checkpoint: {path}")
        return TrainResult(path, progress.step, self.total, progress.step == self.total,
                           resumed_from=start if self.state is not None else None, seconds=elapsed,
                           losses=progress.losses)
