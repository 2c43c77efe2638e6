"""The method contract in code: what a method directory must provide, and the configs the trainer resolves.

A method is a directory holding ``method.yaml`` (validated by :mod:`poseharness.methods`) and a Python module
(``method.py`` unless the YAML says ``module:``) that provides:

- ``build_model(cfg) -> torch.nn.Module``; its ``forward(images (B, 3, S, S))`` returns a dict of named output
  maps, or a list of such dicts (one per stack / stage, intermediate supervision), the last being the final one;
- ``encode(sample, cfg) -> dict[str, np.ndarray]``: training targets of one network-input view, computed in the
  data-loader workers;
- ``loss(outputs, batch, cfg) -> dict[str, Tensor]``: named, already weighted scalar terms; the trainer sums them.
  ``outputs`` is what the model returned (float32), ``batch`` the collated dataset items on the device;
- ``decode(outputs_one_image, cfg) -> (poses (N, K, 3), scores (N,))`` in network-input pixels;
- ``paradigm``: 'bottom-up', 'single-stage' or 'top-down' — the same as ``method.yaml`` says;
- optionally ``merge_flip(outputs, flipped_outputs, cfg) -> outputs`` for one image: fuses the outputs of an
  image and of its horizontal mirror (the flip test).
- optionally ``loss_config(cfg, progress) -> cfg``: the config the loss sees at ``progress`` (steps done / all
  steps, in [0, 1)) of the schedule, for a loss that changes along the training (e.g. plain L2 first, focal
  L2 after). It is a function of the config and the step only, so a resumed training sees the same losses.

Nothing in the core lists methods by name: a method is found by its directory.

Configs. The trainer's config of one (method, training, scale, dataset) is ``MethodSpec.training_config`` plus
the keypoint schema the heads predict (``cfg['schema']``), the dataset, and the resolved trainer settings
(``cfg['train']``: ``defaults.train`` < ``scales.<scale>.train`` < ``trainings.<training>.train``).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .data.augment import AugmentConfig
from .data.manifest import Manifest, load_manifest, load_manifest_file
from .errors import HarnessError
from .methods import MethodSpec, load_method, load_method_file

#: What every method module must define: name -> (kind, what it is for).
REQUIRED = {
    "build_model": "function build_model(cfg) -> torch.nn.Module",
    "encode": "function encode(sample, cfg) -> dict of training targets",
    "loss": "function loss(outputs, batch, cfg) -> dict of named scalar terms",
    "decode": "function decode(outputs, cfg) -> (poses (N, K, 3), scores (N,))",
    "paradigm": "string 'bottom-up' | 'single-stage' | 'top-down'",
}
OPTIONAL = {"merge_flip": "function merge_flip(outputs, flipped_outputs, cfg) -> outputs (flip test)",
            "loss_config": "function loss_config(cfg, progress) -> cfg (the loss settings along the schedule)"}

#: The network-input view of each paradigm: whole images, or one crop per person.
VIEW_OF_PARADIGM = {"bottom-up": "bottom-up", "single-stage": "bottom-up", "top-down": "top-down"}

#: Settings of a method's training entries that are not model/encoding settings.
TRAINING_META_KEYS = ("description", "oracle_only", "train")


# ----------------------------------------------------------------------------------------------------------
# Finding methods and datasets
# ----------------------------------------------------------------------------------------------------------

def _looks_like_path(text: str) -> bool:
    return "/" in text or text.endswith((".yaml", ".yml")) or text.startswith(".")


def resolve_method(name_or_path: str | Path) -> MethodSpec:
    """A method by name (``methods/<name>/``) or by its directory / ``method.yaml`` path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or _looks_like_path(text):
        path = Path(text)
        return load_method_file(path if path.suffix in (".yaml", ".yml") else path / "method.yaml")
    return load_method(text)


def resolve_manifest(name_or_path: str | Path) -> Manifest:
    """A dataset manifest by name (``datasets/<name>.yaml``) or by the path of a manifest file."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or _looks_like_path(text):
        return load_manifest_file(text)
    return load_manifest(text)


def module_file(spec: MethodSpec) -> Path:
    return spec.directory / spec.raw.get("module", "method.py")


def method_module(spec: MethodSpec) -> ModuleType:
    """The method's module, checked against the contract. Errors name the module file and what is missing."""
    path = module_file(spec)
    try:
        module = spec.module
    except HarnessError:
        raise
    except Exception as exc:   # the method's own import failed: say where, keep the cause
        sys.modules.pop(f"poseharness_methods.{spec.name}", None)
        spec.__dict__.pop("module", None)
        raise HarnessError(f"{path}: importing method {spec.name!r} failed: {type(exc).__name__}: {exc}") from exc
    missing = [f"{name} ({what})" for name, what in REQUIRED.items()
               if name != "paradigm" and not callable(getattr(module, name, None))]
    paradigm = getattr(module, "paradigm", None)
    if not isinstance(paradigm, str):
        missing.append(f"paradigm ({REQUIRED['paradigm']})")
    if missing:
        raise HarnessError(f"{path}: method {spec.name!r} does not meet the method contract; missing: "
                           + "; ".join(missing))
    if paradigm != spec.paradigm:
        raise HarnessError(f"{path}: field paradigm: the module says {paradigm!r} but {spec.source} says "
                           f"{spec.paradigm!r}")
    for name, what in OPTIONAL.items():
        if getattr(module, name, None) is not None and not callable(getattr(module, name)):
            raise HarnessError(f"{path}: {name} must be a function ({what})")
    return module


def final_outputs(outputs: Any) -> dict:
    """The final outputs of a forward pass: the last dict of a per-stack list, or the dict itself."""
    if isinstance(outputs, (list, tuple)):
        return outputs[-1]
    return outputs


def view_of(spec: MethodSpec) -> str:
    return VIEW_OF_PARADIGM[spec.paradigm]


# ----------------------------------------------------------------------------------------------------------
# Trainer settings
# ----------------------------------------------------------------------------------------------------------

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
                      missing = :class:`AugmentConfig` defaults
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
    augment: dict | None = field(default_factory=lambda: dataclasses.asdict(AugmentConfig()))
    workers: int = 0
    checkpoint_every: int = 100

    #: Settings that do not change the trained weights: left out of the config (and its hash).
    RUNTIME = ("workers", "checkpoint_every")

    def identity(self) -> dict:
        """The settings that decide the trained weights, as plain JSON data (goes into ``cfg['train']``)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RUNTIME}
        out["decay_at"] = list(self.decay_at)
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

    if key in ("batch", "steps", "epochs", "checkpoint_every"):
        if value is None and key in ("steps", "epochs"):
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
        return dataclasses.asdict(AugmentConfig.from_dict(value, source=f"{source}: field {where}.augment"))
    return value


def train_settings(spec: MethodSpec, training: str, scale: str, *, steps: int | None = None) -> TrainSettings:
    """Resolve and validate the trainer settings; unknown keys and bad values name method.yaml and the field.

    ``steps`` overrides the schedule's length (the spec's ``epochs`` is then ignored).
    """
    spec._pick("trainings", training)
    spec._pick("scales", scale)
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


def _check_overrides(spec: MethodSpec, training: str) -> None:
    """A training may only override settings that ``defaults`` declares (catches misspelt keys)."""
    base = spec.raw.get("defaults", {})

    def walk(over: dict, known: Any, where: str) -> None:
        for key, value in over.items():
            if not isinstance(known, dict) or key not in known:
                raise HarnessError(f"{spec.source}: field {where}.{key}: unknown setting (a training overrides "
                                   f"settings declared under defaults; declare it there first)")
            if isinstance(value, dict) and isinstance(known[key], dict):
                walk(value, known[key], f"{where}.{key}")

    entry = {k: v for k, v in spec.trainings[training].items() if k not in TRAINING_META_KEYS}
    walk(entry, base, f"trainings.{training}")


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
    Checks: the training is trainable (not ``oracle_only``), its overrides are declared under ``defaults``, the
    trainer settings are known and valid, the scale has an ``input`` size.
    """
    entry = spec._pick("trainings", training)
    if entry.get("oracle_only"):
        raise HarnessError(f"{spec.source}: field trainings.{training}.oracle_only: training {training!r} is an "
                           f"upper-bound study for the oracle only; it is not trained")
    _check_overrides(spec, training)
    settings = train_settings(spec, training, scale, steps=steps)
    cfg = copy.deepcopy(spec.training_config(training, scale))
    scale_cfg = cfg["scale"]
    scale_cfg.pop("train", None)
    if not isinstance(scale_cfg.get("input"), int) or scale_cfg["input"] < 1:
        raise HarnessError(f"{spec.source}: field scales.{scale}.input: the network input size must be a "
                           f"positive integer, got {scale_cfg.get('input')!r}")
    train_input = scale_cfg.get("train_input", scale_cfg["input"])
    if not isinstance(train_input, int) or train_input < 1:
        raise HarnessError(f"{spec.source}: field scales.{scale}.train_input: must be a positive integer, "
                           f"got {train_input!r}")
    cfg["schema"] = schema_name(spec, manifest)
    cfg["dataset"] = dataset_config(manifest, size, data_seed)
    cfg["train"] = settings.identity()
    cfg["seed"] = int(seed)
    return cfg, settings


def input_sizes(cfg: dict) -> tuple[int, int]:
    """(training input, inference input) side in pixels: ``scale.train_input`` (default ``scale.input``) and
    ``scale.input``."""
    side = int(cfg["scale"]["input"])
    return int(cfg["scale"].get("train_input", side)), side


class MethodEncoder:
    """``encode(sample)`` for the data loader: the method's ``encode`` bound to a config.

    Picklable by reference to the method file (not to the module object), so DataLoader workers started with
    'spawn' re-import the method by path just as 'fork' workers inherit it.
    """

    def __init__(self, spec: MethodSpec, cfg: dict):
        self.source = spec.source
        self.cfg = cfg
        self._encode = method_module(spec).encode

    def __getstate__(self) -> dict:
        return {"source": self.source, "cfg": self.cfg}

    def __setstate__(self, state: dict) -> None:
        self.source, self.cfg = state["source"], state["cfg"]
        self._encode = method_module(load_method_file(self.source)).encode

    def __call__(self, sample):
        return self._encode(sample, self.cfg)
