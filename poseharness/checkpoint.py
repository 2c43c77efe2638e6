"""Training checkpoints: written atomically, read with ``torch.load(..., weights_only=True)``, checked at the edge.

A run directory holds ``last.pt`` (rewritten every ``checkpoint_every`` steps while training) and, once the
schedule has finished, ``final.pt`` with ``complete: True`` (``last.pt`` is then removed). Both are written
through :func:`poseharness.io.atomic_path`, so a process killed at any moment leaves the previous file intact,
and only the end of a schedule ever writes a file marked complete.

Everything in a checkpoint is a tensor or plain Python data (dict, list, str, int, float, bool, None), which is
what the ``weights_only`` unpickler accepts: the config travels as a JSON string, random-generator states as
integer tensors and lists.

Integrity: ``torch.save`` writes a zip archive with the CRC-32 of every member (the pickle and each tensor's
bytes), but ``torch.load`` never checks them, so bytes changed on disk load silently as wrong weights.
:func:`load_checkpoint` therefore reads every member and checks its CRC-32 first (:func:`verify_archive`: about
30-45 ms for a 50 MB checkpoint in the page cache, on the order of the ``torch.load`` that follows) and refuses
a file that fails with :class:`CorruptCheckpoint`, naming the file and the member. :func:`find_resumable` then
resumes from the newest verified snapshot (``snapshots/step-NNNNNN.pt``), saying so, or refuses with what to do
to restart.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import paths
from .errors import HarnessError
from .io import atomic_path
from .provenance import config_hash

FORMAT = "poseharness-checkpoint"
VERSION = 1
LAST = "last.pt"
FINAL = "final.pt"
SNAPSHOTS = "snapshots"         # step-NNNNNN.pt copies kept for learning curves (train --keep-every)


def snapshot_name(step: int) -> str:
    """The file name of the snapshot kept at optimiser step ``step``."""
    return f"step-{step:06d}.pt"

#: Fields every checkpoint holds, with their Python types.
FIELDS = {
    "format": str, "version": int, "complete": bool, "method": str, "method_dir": str, "training": str,
    "scale": str, "seed": int, "config_json": str, "config_hash": str, "heads": dict, "step": int,
    "total_steps": int, "steps_per_epoch": int, "world_size": int, "model": dict, "optimizer": dict,
    "scheduler": dict, "scaler": dict, "rng": dict, "seconds": float, "losses": dict,
}
#: Fields a checkpoint may hold (absent from older ones): ``init``, the checkpoint a training started from
#: ({'from', 'freeze', 'path', 'sha256'}; {} for a training from scratch).
OPTIONAL_FIELDS = {"init": dict}


def checkpoints_dir() -> Path:
    """Root of the default run directories: ``$POSEHARNESS_CHECKPOINTS`` or ``<project root>/checkpoints``."""
    env = os.environ.get("POSEHARNESS_CHECKPOINTS")
    return paths.env_dir("POSEHARNESS_CHECKPOINTS", env) if env else paths.project_root() / "checkpoints"


def run_dir(method: str, dataset: str, training: str, scale: str, seed: int, root: Path | None = None) -> Path:
    """``checkpoints/<method>/<dataset>/<training>/<scale>-seed<N>/``."""
    return (root or checkpoints_dir()) / method / dataset / training / f"{scale}-seed{seed}"


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` atomically (temp file + fsync + rename), with the CRC-32 of every member (what
    :func:`verify_archive` checks on load) even where ``torch.serialization.set_crc32_options(False)`` was called."""
    crc = torch.serialization.get_crc32_options()
    try:
        torch.serialization.set_crc32_options(True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            torch.save(state, fh)  # through a file object: the archive's inner folder is "archive", not the temp name
    except (OSError, RuntimeError) as exc:  # a full disk, a read-only folder: one message, the previous file kept
        error = _write_error(path, exc)
        if error is None:
            raise
        raise error from exc
    finally:
        torch.serialization.set_crc32_options(crc)
    return Path(path)


def _write_error(path: str | os.PathLike, exc: BaseException) -> HarnessError | None:
    """A HarnessError naming ``path`` and the OSError behind ``exc`` (torch reports a full disk as a RuntimeError
    over the OSError); ``None`` when no OSError is behind it. atomic_path has already removed the temp file."""
    import errno

    cause, seen = exc, set()
    while cause is not None and not isinstance(cause, OSError) and id(cause) not in seen:
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if not isinstance(cause, OSError):
        return None
    problem = ("no space left on device" if cause.errno == errno.ENOSPC else
               cause.strerror or str(cause) or type(cause).__name__)
    named = os.fsdecode(cause.filename) if isinstance(cause.filename, (str, bytes, os.PathLike)) else str(path)
    where = str(path) if named == str(path) else f"{named} (writing {path})"
    return HarnessError(f"{where}: {problem} (writing a checkpoint; the previous {Path(path).name}, if any, "
                        f"is kept)")


class CorruptCheckpoint(HarnessError):
    """A checkpoint file whose bytes cannot be trusted: truncated, not a zip archive, a member failing its CRC-32
    check, or refused by the weights-only loader. The message names the file (and the member)."""


def verify_archive(path: str | os.PathLike, chunk: int = 1 << 20) -> None:
    """Read every member of the checkpoint archive at ``path`` and check its CRC-32 (written by ``torch.save``,
    never checked by ``torch.load``). Raises :class:`CorruptCheckpoint` naming the file and the first bad member."""
    path = Path(path)
    # torch.save writes a zip archive whose directory sits at the end: a truncated file fails this test.
    if not zipfile.is_zipfile(path):
        raise CorruptCheckpoint(f"{path}: not a readable checkpoint: not a complete zip archive (truncated, corrupt "
                                f"or not written by `poseharness train`)")
    member = None
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                member = info.filename
                with archive.open(info) as fh:     # the CRC-32 is compared when the member's last byte is read
                    while fh.read(chunk):
                        pass
    except Exception as exc:       # BadZipFile (bad CRC, header), or whatever a damaged header makes zipfile raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        problem = "CRC-32 mismatch: its bytes changed after it was written" if "CRC-32" in text else text
        where = f"member {member}" if member is not None else "zip directory"
        raise CorruptCheckpoint(f"{path}: not a readable checkpoint: corrupted ({where}: {problem})") from None


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temp files a killed writer left behind (``.last.pt.*.tmp``); returns what was removed."""
    gone = []
    for name in (LAST, FINAL):
        for p in directory.glob(f".{name}.*.tmp"):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint. Raises :class:`HarnessError` naming the file (and field) when it is missing,
    not a harness checkpoint, or has a field of the wrong type, and :class:`CorruptCheckpoint` (a HarnessError)
    when it is truncated or corrupt: every member's CRC-32 is checked before anything is loaded."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: checkpoint file not found")
    verify_archive(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, ValueError,
            KeyError, IndexError, TypeError, AttributeError) as exc:
        text = str(exc)
        # torch's weights-only refusal is a paragraph of advice; what it found follows "WeightsUnpickler error:".
        if "WeightsUnpickler error:" in text:
            text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
        detail = " ".join(text.split()) or type(exc).__name__
        raise CorruptCheckpoint(f"{path}: not a readable checkpoint (corrupt, or holding more than tensors and "
                                f"plain data): {detail}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise HarnessError(f"{path}: field format: not a poseharness checkpoint")
    if state.get("version") != VERSION:
        raise HarnessError(f"{path}: field version: checkpoint version {state.get('version')!r}, this harness "
                           f"reads version {VERSION}")
    for name, kind in FIELDS.items():
        if name not in state:
            raise HarnessError(f"{path}: field {name}: missing")
        value = state[name]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise HarnessError(f"{path}: field {name}: expected {kind.__name__}, got {type(value).__name__}")
    for name, kind in OPTIONAL_FIELDS.items():
        if name in state and not isinstance(state[name], kind):
            raise HarnessError(f"{path}: field {name}: expected {kind.__name__}, got {type(state[name]).__name__}")
    try:
        state["config"] = json.loads(state["config_json"])
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}: field config_json: not valid JSON: {exc}") from None
    return state


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON configs differ, each as ``path: old -> new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{where}: (absent) -> {new[key]!r}")
            elif key not in new:
                out.append(f"{where}: {old[key]!r} -> (absent)")
            else:
                out.extend(config_differences(old[key], new[key], where))
        return out
    return [] if old == new else [f"{prefix or '(config)'}: {old!r} -> {new!r}"]


def check_identity(state: dict, path: Path, *, method: str, training: str | None = None) -> None:
    """The checkpoint is of ``method`` (and ``training``, when given); else an error naming the field."""
    if state["method"] != method:
        raise HarnessError(f"{path}: field method: the checkpoint is of method {state['method']!r}, "
                           f"not {method!r}")
    if training is not None and state["training"] != training:
        raise HarnessError(f"{path}: field training: the checkpoint is of training {state['training']!r}, "
                           f"not {training!r}")


def load_model_state(model: torch.nn.Module, state: dict, path: Path) -> None:
    """Load the weights into ``model``; a different head layout (any parameter or buffer of another shape, or a
    missing / extra one) is an error naming the checkpoint and the first differing entry."""
    own = model.state_dict()
    saved = state["model"]
    for name, tensor in own.items():
        if name not in saved:
            raise HarnessError(f"{path}: field model.{name}: missing from the checkpoint (a different head "
                               f"layout or architecture: checkpoint heads {state['heads']})")
        if tuple(saved[name].shape) != tuple(tensor.shape):
            raise HarnessError(
                f"{path}: field model.{name}: shape {tuple(saved[name].shape)} in the checkpoint, "
                f"{tuple(tensor.shape)} in the model built from its config (a different head layout: "
                f"checkpoint heads {state['heads']})")
    extra = sorted(set(saved) - set(own))
    if extra:
        raise HarnessError(f"{path}: field model.{extra[0]}: not a parameter of the model built from its config "
                           f"(a different architecture)")
    model.load_state_dict(saved)


def load_init_weights(model: torch.nn.Module, state: dict, path: Path, into: str = "") -> None:
    """Load another training's weights into ``model`` to start from them: every name must match, with the same
    shape; otherwise an error naming the checkpoint and all missing / unexpected / reshaped entries. With
    ``into`` (a module name prefix) the saved model is the submodule ``into`` of ``model``: its entries are matched
    with the names under that prefix, and the rest of ``model`` is left as it is."""
    prefix = f"{into.strip('.')}." if into.strip(".") else ""
    own = {k[len(prefix):]: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    saved = state["model"]
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    reshaped = [f"{prefix}{k} {tuple(saved[k].shape)} -> {tuple(own[k].shape)}" for k in own
                if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or reshaped:
        parts = [f"{what}: {', '.join(prefix + n if what == 'missing' else n for n in names[:8])}"
                 f"{', ...' if len(names) > 8 else ''}"
                 for what, names in (("missing", missing), ("unexpected", unexpected), ("shape", reshaped)) if names]
        raise HarnessError(f"{path}: field model: the weights to start from do not fit the model of this training "
                           f"({'; '.join(parts)})")
    if prefix:
        model.get_submodule(prefix[:-1]).load_state_dict(saved, strict=True)
    else:
        model.load_state_dict(saved, strict=True)


# ----------------------------------------------------------------------------------------------------------
# The state of a training run: finding, building and restoring it
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunHeader:
    """The fields that are the same in every checkpoint of one run (see :data:`FIELDS`)."""
    method: str
    method_dir: str
    training: str
    scale: str
    seed: int
    config: dict
    config_hash: str
    total_steps: int
    steps_per_epoch: int
    world_size: int
    init: dict = field(default_factory=dict)      # the checkpoint the run started from (OPTIONAL_FIELDS)


@dataclass
class Progress:
    """Where a run stands: optimiser steps done, whether the schedule is complete, wall seconds over all calls,
    the last step's loss terms and the model's head layout ({output name: channels})."""
    step: int
    complete: bool
    seconds: float
    losses: dict
    heads: dict


@dataclass
class TrainingObjects:
    """What a checkpoint saves and restores besides plain data: model, optimiser, schedule, AMP scaler."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any       # torch.amp.GradScaler (saved as {} when disabled)


def checkpoint_state(header: RunHeader, objects: TrainingObjects, progress: Progress) -> dict:
    """The dict a checkpoint holds (:data:`FIELDS`, plus ``init``), with the generator states of this moment."""
    h = header
    return {
        "format": FORMAT, "version": VERSION, "complete": bool(progress.complete),
        "method": h.method, "method_dir": h.method_dir, "training": h.training, "scale": h.scale,
        "seed": int(h.seed), "config_json": json.dumps(h.config, sort_keys=True), "config_hash": h.config_hash,
        "heads": dict(progress.heads or {}), "step": int(progress.step), "total_steps": h.total_steps,
        "steps_per_epoch": h.steps_per_epoch, "world_size": h.world_size,
        "model": objects.model.state_dict(), "optimizer": objects.optimizer.state_dict(),
        "scheduler": objects.scheduler.state_dict(),
        "scaler": objects.scaler.state_dict() if objects.scaler.is_enabled() else {},
        "rng": rng_state(), "seconds": float(progress.seconds), "losses": dict(progress.losses),
        "init": dict(h.init),
    }


def find_resumable(out_dir: Path, cfg: dict, *, method: str, training: str, world_size: int,
                   log: Callable[[str], Any] | None = None, repair: bool = True
                   ) -> tuple[dict | None, Path | None]:
    """The checkpoint of ``out_dir`` to resume from (``final.pt``, else ``last.pt``), checked against this run:
    the method, the training, the config (by hash; the differences are named) and the number of processes.
    Returns (state, path), or (None, None) when the directory holds neither.

    A corrupted ``final.pt`` / ``last.pt`` (:class:`CorruptCheckpoint`) is never used: the run falls back to the
    newest checkpoint that verifies (``last.pt`` behind a corrupted ``final.pt``, else the snapshots), said through
    ``log``; a complete one is copied back to ``final.pt`` when ``repair`` (rank 0 only), an incomplete one is
    resumed from where it is (the corrupted file is overwritten by the next save). With none, a HarnessError
    names the file and says how to restart."""
    names = [name for name in (FINAL, LAST) if (out_dir / name).exists()]
    for i, name in enumerate(names):
        path = out_dir / name
        try:
            state = load_checkpoint(path)
        except CorruptCheckpoint as exc:
            return _fall_back(out_dir, path, exc, names[i + 1:], cfg, method=method, training=training,
                              world_size=world_size, log=log, repair=repair)
        _check_resumable(state, path, cfg, method=method, training=training, world_size=world_size)
        return state, path
    return None, None


def _check_resumable(state: dict, path: Path, cfg: dict, *, method: str, training: str, world_size: int) -> None:
    """``state`` is of this run: method, training, config and number of processes; else an error naming them."""
    check_identity(state, path, method=method, training=training)
    if state["config_hash"] != config_hash(cfg):
        diffs = config_differences(state["config"], cfg)
        raise HarnessError(
            f"{path}: field config: the checkpoint was trained with another config ("
            + "; ".join(diffs[:5]) + ("; ..." if len(diffs) > 5 else "")
            + "); choose another --out or remove the old run")
    if state["world_size"] != world_size:
        raise HarnessError(f"{path}: field world_size: the run was started with {state['world_size']} "
                           f"process(es), this one has {world_size}; resume with the same number")


_SNAPSHOT = re.compile(r"step-(\d+)\.pt")


def run_snapshots(out_dir: Path) -> list[tuple[int, Path]]:
    """The snapshots of a run directory as (step, path), newest first."""
    found = []
    folder = out_dir / SNAPSHOTS
    if folder.is_dir():
        for p in folder.iterdir():
            m = _SNAPSHOT.fullmatch(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def _fall_back(out_dir: Path, corrupt: Path, exc: CorruptCheckpoint, others: list[str], cfg: dict, *,
               method: str, training: str, world_size: int, log: Callable[[str], Any] | None, repair: bool
               ) -> tuple[dict, Path]:
    """The newest verified checkpoint behind the corrupted ``corrupt`` (see :func:`find_resumable`)."""
    best: tuple[dict, Path] | None = None
    bad: list[str] = []
    for name in others:                                 # last.pt behind a corrupted final.pt (a kill in between)
        try:
            best = (load_checkpoint(out_dir / name), out_dir / name)
        except CorruptCheckpoint:
            bad.append(name)
    snaps = run_snapshots(out_dir)
    for step, snap in snaps:
        if best is not None and step <= best[0]["step"]:
            break
        try:
            best = (load_checkpoint(snap), snap)
            break
        except CorruptCheckpoint:
            bad.append(f"{SNAPSHOTS}/{snap.name}")
    if best is None:
        if snaps:
            none = f"none of the {len(snaps)} snapshot(s) in {out_dir / SNAPSHOTS} verifies either"
        else:
            none = (f"there is no snapshot in {out_dir / SNAPSHOTS} to resume from instead (`train --keep-every N` "
                    f"keeps them)")
        files = [corrupt] + [out_dir / b for b in bad if "/" not in b]
        also = f" ({', '.join(str(f) for f in files[1:])} is corrupted too)" if files[1:] else ""
        moves = "; ".join(f"mv {f} {f}.corrupt" for f in files)
        raise HarnessError(f"{exc}; {none}{also}. To restart this training from step 0, move the corrupted "
                           f"file{'s' if len(files) > 1 else ''} away ({moves}) and run the same command again; "
                           f"to resume from an earlier checkpoint of this run instead, copy it to "
                           f"{out_dir / LAST} once {'they are' if len(files) > 1 else 'it is'} moved away") from None
    state, path = best
    _check_resumable(state, path, cfg, method=method, training=training, world_size=world_size)
    note = f"{exc}; not using it"
    if bad:
        note += f" (corrupted too: {', '.join(bad)})"
    if state["complete"] and repair:
        target = out_dir / FINAL
        with atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)
            verify_archive(tmp)
        if log is not None:
            log(f"{note}; restored {target} from {path}, the newest checkpoint that verifies "
                f"(step {state['step']}, complete)")
        return state, target
    if log is not None:
        log(f"{note}; resuming from {path} instead, the newest checkpoint that verifies (step {state['step']}); "
            f"the corrupted file is replaced by this training's next save")
    return state, path


def check_schedule(state: dict, path: Path, steps_per_epoch: int, total_steps: int) -> None:
    """The checkpoint's schedule is this run's (a changed training split changes both numbers)."""
    if (state["steps_per_epoch"], state["total_steps"]) != (steps_per_epoch, total_steps):
        raise HarnessError(
            f"{path}: field steps_per_epoch: the checkpoint has {state['steps_per_epoch']} steps per "
            f"epoch and {state['total_steps']} in all, this run {steps_per_epoch} and {total_steps}: the training "
            f"split changed; choose another --out or remove the old run")


def restore_training(state: dict, path: Path, objects: TrainingObjects) -> Progress:
    """Put a run back where ``state`` left it: weights (checked, see :func:`load_model_state`), optimiser,
    schedule, AMP scaler and the global generator states. Returns the run's :class:`Progress`."""
    load_model_state(objects.model, state, path)
    objects.optimizer.load_state_dict(state["optimizer"])
    objects.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:
        objects.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return Progress(step=state["step"], complete=state["complete"], seconds=float(state["seconds"]),
                    losses=dict(state["losses"]), heads=state["heads"])


# ----------------------------------------------------------------------------------------------------------
# Random-generator states as plain data
# ----------------------------------------------------------------------------------------------------------

def rng_state() -> dict:
    """torch (CPU and every CUDA device), numpy's global and Python's ``random`` states, weights_only-safe."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict) -> None:
    """Restore the generator states :func:`rng_state` returned (CUDA ones when the device count matches)."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
