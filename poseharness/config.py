"""One config resolver: everything that turns method.yaml, a dataset and a command's options into the config
that runs and that travels with each figure.

- representation settings: ``defaults`` ⊕ ``scales.<s>`` ⊕ ``trainings.<t>`` (:meth:`MethodSpec.training_config`)
  ⊕ ``variants.<v>.decode`` (:meth:`MethodSpec.decode_settings`), declared and checked by
  :mod:`poseharness.settings` when method.yaml is loaded;
- the trainer's settings (:class:`TrainSettings`: ``defaults.train`` < ``scales.<s>.train`` <
  ``trainings.<t>.train``, validated here);
- the dataset identity (:func:`dataset_config`) and the keypoint schema (:func:`schema_name`);
- the three configs the drivers use: :func:`training_config` (``poseharness train``), :func:`variant_config`
  (``poseharness oracle``: a variant on a dataset) and :func:`checkpoint_variant_config` (``poseharness predict``:
  a variant on a trained checkpoint's config, with the flip override).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data.augment import AugmentConfig, Size
from .data.manifest import Manifest
from .errors import HarnessError
from .methods import MethodSpec
from .views import parse_input_size


@dataclass(frozen=True)
class TrainSettings:
    """The ``train:`` settings of a method spec (``defaults`` < ``scales.<s>`` < ``trainings.<t>``).

    batch:            images per optimiser step over all processes (DDP splits it evenly)
    lr:               Adam learning rate
    steps | epochs:   the length of the schedule (exactly one); an epoch is ``len(train split) // batch`` steps
    weight_decay:     Adam's L2 penalty
    warmup:           steps of linear warm-up from ``lr · warmup_factor`` to ``lr``
    warmup_factor:    the warm-up's starting fraction of ``lr``
    decay_at:         fractions of the schedule at which the learning rate is multiplied by ``decay_factor``
    decay_factor:     the step-decay factor
    grad_clip:        maximum gradient L2 norm (None: no clipping)
    augment:          the loader's augmentation (:class:`AugmentConfig` fields), ``false`` for none;
                      missing = :class:`AugmentConfig` defaults; stored as :meth:`AugmentConfig.as_dict` (settings
                      added later, e.g. ``centre`` / ``crop``, only when not at their defaults: old hashes hold)
    max_persons:      train only on the images with at most this many annotated persons (None: every image;
                      in the config only when set, so older configs keep their hashes)
    workers:          data-loader worker processes (does not change the result)
    checkpoint_every: steps between checkpoints (does not change the result)
    """

    batch: int
    lr: float
    steps: int | None = None
    epochs: int | None = None
    weight_decay: float = 0.0
    warmup: int = 0
    warmup_factor: float = 0.1
    decay_at: tuple[float, ...] = ()
    decay_factor: float = 0.1
    grad_clip: float | None = None
    augment: dict | None = field(default_factory=lambda: AugmentConfig().as_dict())
    max_persons: int | None = None
    workers: int = 0
    checkpoint_every: int = 100

    #: Settings that do not change the trained weights: left out of the config (and its hash).
    RUNTIME = ("workers", "checkpoint_every")

    def identity(self) -> dict:
        """The settings that decide the trained weights, as plain JSON data (goes into ``cfg['train']``)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RUNTIME}
        out["decay_at"] = list(self.decay_at)
        if out["max_persons"] is None:
            del out["max_persons"]
        return out

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.steps if self.steps is not None else self.epochs * steps_per_epoch

    def augment_config(self) -> AugmentConfig | None:
        return None if self.augment is None else AugmentConfig.from_dict(self.augment)

    def lr_factor(self, step: int, total: int) -> float:
        """Multiplier of ``lr`` for optimiser step ``step`` (0-based) of ``total``: warm-up, then step decay."""
        f = 1.0
        if self.warmup and step < self.warmup:
            f = self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup
        for frac in self.decay_at:
            if step >= round(frac * total):
                f *= self.decay_factor
        return f


TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainSettings))


def _train_sources(spec: MethodSpec, training: str, scale: str) -> list[tuple[str, dict]]:
    """(field path, raw ``train:`` mapping) in override order."""
    out = []
    for path, holder in (("defaults", spec.raw.get("defaults", {})),
                         (f"scales.{scale}", spec.scales.get(scale, {})),
                         (f"trainings.{training}", spec.trainings.get(training, {}))):
        if "train" in holder:
            raw = holder["train"]
            if not isinstance(raw, dict):
                raise HarnessError(f"{spec.source}: field {path}.train: must be a mapping, got {type(raw).__name__}")
            out.append((f"{path}.train", raw))
    return out


def _check_value(source: Path, where: str, key: str, value: Any) -> Any:
    """One train setting, type-checked; returns it normalised (tuples for lists)."""
    def bad(expect: str) -> HarnessError:
        return HarnessError(f"{source}: field {where}.{key}: must be {expect}, got {value!r}")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if key in ("batch", "steps", "epochs", "checkpoint_every", "max_persons"):
        if value is None and key in ("steps", "epochs", "max_persons"):
            return None
        if not is_int(value) or value < 1:
            raise bad("a positive integer")
    elif key in ("workers", "warmup"):
        if not is_int(value) or value < 0:
            raise bad("a non-negative integer")
    elif key in ("lr",):
        if not is_num(value) or value <= 0:
            raise bad("a positive number")
    elif key in ("weight_decay",):
        if not is_num(value) or value < 0:
            raise bad("a non-negative number")
    elif key in ("warmup_factor", "decay_factor"):
        if not is_num(value) or not 0 < value <= 1:
            raise bad("a number in (0, 1]")
    elif key == "grad_clip":
        if value is not None and (not is_num(value) or value <= 0):
            raise bad("a positive number or null")
    elif key == "decay_at":
        if not isinstance(value, list) or not all(is_num(v) and 0 < v < 1 for v in value):
            raise bad("a list of fractions in (0, 1)")
        return tuple(sorted(float(v) for v in value))
    elif key == "augment":
        if value is False or value is None:
            return None
        if not isinstance(value, dict):
            raise bad("a mapping of augmentation settings or false")
        return AugmentConfig.from_dict(value, source=f"{source}: field {where}.augment").as_dict()
    return value


def train_settings(spec: MethodSpec, training: str, scale: str, *, steps: int | None = None) -> TrainSettings:
    """Resolve and validate the trainer settings; unknown keys and bad values name method.yaml and the field.

    ``steps`` overrides the schedule's length (the spec's ``epochs`` is then ignored).
    """
    spec.entry("trainings", training)
    spec.entry("scales", scale)
    merged: dict[str, Any] = {}
    for where, raw in _train_sources(spec, training, scale):
        unknown = sorted(set(raw) - set(TRAIN_KEYS))
        if unknown:
            raise HarnessError(f"{spec.source}: field {where}.{unknown[0]}: unknown training setting "
                               f"(known: {', '.join(TRAIN_KEYS)})")
        for key, value in raw.items():
            merged[key] = _check_value(spec.source, where, key, value)
        # A level that names one schedule length replaces the other (a scale with epochs over defaults' steps).
        if "steps" in raw and "epochs" not in raw:
            merged.pop("epochs", None)
        if "epochs" in raw and "steps" not in raw:
            merged.pop("steps", None)
    if steps is not None:
        if not isinstance(steps, int) or steps < 1:
            raise HarnessError(f"--steps must be a positive integer, got {steps!r}")
        merged["steps"], merged["epochs"] = steps, None
    for key in ("batch", "lr"):
        if key not in merged:
            raise HarnessError(f"{spec.source}: field scales.{scale}.train.{key}: missing (needed to train "
                               f"{spec.name}/{training} at scale {scale!r})")
    if (merged.get("steps") is None) == (merged.get("epochs") is None):
        raise HarnessError(f"{spec.source}: field scales.{scale}.train: give exactly one of steps or epochs")
    return TrainSettings(**merged)


def schema_name(spec: MethodSpec, manifest: Manifest) -> str:
    """The keypoint schema the heads predict: the method's ``schema:`` if it has one (must match the dataset's),
    else the dataset's."""
    own = spec.raw.get("schema")
    if own is not None and own != manifest.schema.name:
        raise HarnessError(f"{spec.source}: field schema: method {spec.name!r} predicts {own!r} keypoints but "
                           f"dataset {manifest.name!r} ({manifest.source_path}) has {manifest.schema.name!r}")
    return manifest.schema.name


def dataset_config(manifest: Manifest, size: str | None, seed: int | None) -> dict:
    """What identifies a dataset in a config: name, kind, and for synthetic sets the size and generator seed."""
    out: dict[str, Any] = {"name": manifest.name, "kind": manifest.kind}
    if manifest.synthetic:
        out.update(size=manifest.resolve_size(size), seed=manifest.seed if seed is None else seed)
    return out


def training_config(spec: MethodSpec, training: str, scale: str, manifest: Manifest, *, size: str | None = None,
                    data_seed: int | None = None, seed: int = 0, steps: int | None = None
                    ) -> tuple[dict, TrainSettings]:
    """The resolved config of one training run and its trainer settings.

    cfg = ``spec.training_config(training, scale)`` + ``schema`` + ``dataset`` + ``train`` (the settings that
    decide the weights) + ``seed``; the scale's own ``train:`` is folded into ``train`` and removed from ``scale``.
    Checks: the training is trainable (not ``oracle_only``), the trainer settings are known and valid, the scale
    has an ``input`` size (the representation settings were checked when method.yaml was loaded:
    :mod:`poseharness.settings`).
    """
    entry = spec.entry("trainings", training)
    if entry.get("oracle_only"):
        raise HarnessError(f"{spec.source}: field trainings.{training}.oracle_only: training {training!r} is an "
                           f"upper-bound study for the oracle only; it is not trained")
    settings = train_settings(spec, training, scale, steps=steps)
    cfg = copy.deepcopy(spec.training_config(training, scale))
    _check_inputs(spec, scale, cfg["scale"])
    cfg["schema"] = schema_name(spec, manifest)
    cfg["dataset"] = dataset_config(manifest, size, data_seed)
    cfg["train"] = settings.identity()
    cfg["seed"] = int(seed)
    return cfg, settings


def _check_inputs(spec: MethodSpec, scale: str, views: dict) -> None:
    for key in ("input", "train_input"):
        if (key == "input" or key in views) and parse_input_size(views.get(key)) is None:
            raise HarnessError(f"{spec.source}: field scales.{scale}.{key}: the network input size must be a "
                               f"positive integer (a square side) or a [width, height] pair, got "
                               f"{views.get(key)!r}")


def input_sizes(cfg: dict) -> tuple[Size, Size]:
    """(training input, inference input) in pixels: ``scale.train_input`` (default ``scale.input``) and
    ``scale.input``, each an int (a square side) or a (width, height) tuple."""
    side = parse_input_size(cfg["scale"]["input"])
    train = parse_input_size(cfg["scale"].get("train_input", cfg["scale"]["input"]))
    if side is None or train is None:
        raise HarnessError(f"config of {cfg.get('method')!r}: field scale.input / scale.train_input: not an input "
                           f"size: {cfg['scale']!r}")
    return train, side


def variant_config(spec: MethodSpec, variant: str, scale: str, manifest: Manifest, *, size: str | None = None,
                   seed: int | None = None) -> dict:
    """The config of one variant on a dataset (the oracle's): its training's representation settings, its
    decoder settings, the schema and the dataset identity — what the record's config hash covers."""
    cfg = spec.variant_config(variant, scale)
    _check_inputs(spec, scale, cfg["scale"])
    cfg["schema"] = schema_name(spec, manifest)
    cfg["dataset"] = dataset_config(manifest, size, seed)
    return cfg


def checkpoint_variant_config(spec: MethodSpec, variant: str, state: dict, path: Path, *,
                              flip: bool | None = None) -> dict:
    """A trained checkpoint's config with ``variant``'s decoder settings (the predictor's); ``flip`` overrides the
    variant's ``decode.flip``. The variant must decode the checkpoint's training."""
    trained_by = spec.entry("variants", variant)["training"]
    if trained_by != state["training"]:
        raise HarnessError(f"{path}: field training: the checkpoint is of training {state['training']!r}, but "
                           f"variant {variant!r} of {spec.source} decodes training {trained_by!r}")
    cfg = dict(state["config"])
    cfg["decode"] = spec.decode_settings(variant)
    if flip is not None:
        cfg["decode"]["flip"] = bool(flip)
    cfg["variant"] = variant
    return cfg
