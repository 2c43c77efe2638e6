"""The method contract in code: what a method directory must provide.

A method is a directory holding ``method.yaml`` (validated by :mod:`poseharness.methods`) and a Python module
(``method.py`` unless the YAML says ``module:``) that provides:

- ``build_model(cfg) -> torch.nn.Module``; its ``forward(images (B, 3, H, W))`` returns a dict of named output
  maps, or a list of such dicts (one per stack / stage, intermediate supervision), the last being the final one
  (inputs are ``scale.input`` pixels: an int for a square, or ``[width, height]``, e.g. a top-down 192 x 256);
- ``encode(sample, cfg) -> dict[str, np.ndarray]``: training targets of one network-input view, computed in the
  data-loader workers;
- ``loss(outputs, batch, cfg) -> dict[str, Tensor]``: named, already weighted scalar terms; the trainer sums them.
  ``outputs`` is what the model returned (float32), ``batch`` the collated dataset items on the device;
- ``decode(outputs_one_view, cfg) -> (poses (N, K, 3), scores (N,))`` in network-input pixels; a decode that
  takes a ``view`` keyword also gets the :class:`poseharness.views.View` (its box, box score, affine);
- ``paradigm``: 'bottom-up', 'single-stage' or 'top-down' — the same as ``method.yaml`` says;
- optionally ``merge_flip(outputs, flipped_outputs, cfg) -> outputs`` for one image: fuses the outputs of an
  image and of its horizontal mirror (the flip test).
- optionally ``loss_config(cfg, progress) -> cfg``: the config the loss sees at ``progress`` (steps done / all
  steps, in [0, 1)) of the schedule, for a loss that changes along the training (e.g. plain L2 first, focal
  L2 after). It is a function of the config and the step only, so a resumed training sees the same losses.
- optionally ``train_step(net, batch, cfg, *, progress) -> (outputs, terms)``: the method's own step on a batch
  on the device (several forward passes, teacher forcing, truncated back-propagation through time), returning
  the named loss terms; the trainer sums them and does the backward pass, clipping and optimiser step (see
  :mod:`poseharness.train`). Without it a step is ``loss(model(batch['image']), batch, cfg)``.
- optionally ``collate(items) -> batch``: the method's own collation of dataset items (e.g. per-person targets
  of varying length as lists); default :func:`poseharness.data.loader.collate`.
- optionally ``final_outputs(outputs) -> dict``: the final outputs (for the head-layout checks and decoding)
  when the model's outputs are not a list of per-stack dicts (FPN levels gathered into one dict, recurrent steps).
- optionally ``per_image(poses, scores, views, cfg) -> (poses, scores)``: the step after all views of an image
  are decoded (lists per view, poses in original image pixels), e.g. pose NMS over a single-stage model's
  candidates; default for top-down methods: box-score rescoring and OKS-NMS (:mod:`poseharness.pipeline`).
- optionally ``merge_views(outputs, views, cfg) -> (outputs, view)``: fuses the outputs of all views of one
  image (several test scales) into one view's frame before one decode (Associative Embedding's multi-scale test;
  :mod:`poseharness.multiscale`); without it each view is decoded and ``per_image`` pools them.
- optionally ``oracle_outputs(sample, cfg) -> dict``: the oracle's outputs of one view where they hold more than
  the training targets (e.g. Associative Embedding's perfect tags, which no loss reads); default ``encode``. It
  keeps what only the oracle reads out of every training item's encoding.
- optionally ``training_only_heads``: names of output heads the model computes only in training (e.g.
  PoseDet's intermediate-supervision heatmaps, ``("heatmap",)``, covering ``heatmap@l``); the predictor's
  head-layout check leaves them out.

Nothing in the core lists methods by name: a method is found by its directory.

Configs are resolved in one place, :mod:`poseharness.config` (defaults ⊕ scale ⊕ training ⊕ variant, the
dataset identity, the trainer settings); the settings a method reads are declared in its directory
(:mod:`poseharness.settings`).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

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
            "loss_config": "function loss_config(cfg, progress) -> cfg (the loss settings along the schedule)",
            "train_step": "function train_step(net, batch, cfg, *, progress) -> (outputs, dict of loss terms)",
            "collate": "function collate(items) -> batch (the method's own collation of dataset items)",
            "final_outputs": "function final_outputs(outputs) -> dict of final output tensors (head layout)",
            "oracle_outputs": "function oracle_outputs(sample, cfg) -> dict (the oracle's outputs of one view)",
            "merge_views": "function merge_views(outputs, views, cfg) -> (outputs, view) (multi-scale fusion)"}

#: The network-input view of each paradigm: whole images, or one crop per person.
VIEW_OF_PARADIGM = {"bottom-up": "bottom-up", "single-stage": "bottom-up", "top-down": "top-down"}


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


def method_submodule(spec: MethodSpec, name: str) -> ModuleType:
    """A file ``<name>.py`` of the method's directory, imported inside the method's package (so it can import its
    siblings relatively); errors name the file."""
    path = spec.directory / f"{name}.py"
    if not path.exists():
        raise HarnessError(f"{spec.source}: {path.name} not found in {spec.directory}")
    package = method_module(spec).__name__
    try:
        return importlib.import_module(f"{package}.{name}")
    except HarnessError:
        raise
    except Exception as exc:
        raise HarnessError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from exc


def final_outputs(outputs: Any) -> dict:
    """The final outputs of a forward pass: the last dict of a per-stack list, or the dict itself."""
    if isinstance(outputs, (list, tuple)):
        return outputs[-1]
    return outputs


def final_outputs_of(module: ModuleType) -> Callable[[Any], dict]:
    """The method's ``final_outputs`` hook, or :func:`final_outputs`: what decoding and the head-layout checks see
    of a forward pass (one dict of named (B, C, ...) tensors)."""
    return getattr(module, "final_outputs", None) or final_outputs


def view_of(spec: MethodSpec) -> str:
    return VIEW_OF_PARADIGM[spec.paradigm]


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
