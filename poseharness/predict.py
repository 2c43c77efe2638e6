"""The predictor: a trained checkpoint on every image of a split, decoded by one variant, evaluated, recorded.

One trained model serves every decoding variant of its training: the checkpoint carries the training's full
config (encoding, heads, input size), and the variant adds only its ``decode`` settings. Each image is seen
through its paradigm's views (:mod:`poseharness.views`; bottom-up: long side resized to the scale's ``input``,
aspect kept, padded at the right / bottom; top-down: one crop per person box, from the ground truth or a detection
file), batched, run through the model in eval mode (AMP on CUDA), optionally together with its mirror image (the
flip test, fused by the method's ``merge_flip``), decoded, mapped back to the original image, passed through the
per-image step, written with the one COCO-results writer, scored with the dataset's protocol and stored as a
``trained`` record — the steps of :mod:`poseharness.pipeline`, which the oracle shares.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import checkpoint_variant_config, dataset_config, input_sizes
from .contract import final_outputs_of, method_module, resolve_method, view_of
from .data.loader import load_samples
from .data.manifest import Manifest
from .device import Distributed, pick_device
from .errors import HarnessError
from .io import file_digest
from .methods import MethodSpec, load_method
from .pipeline import (Decoder, ModelRunner, RunInfo, ViewImages, finish, model_predictions, predictions_path,
                       view_batches)
from .store.record import check_limit, subset_name
from .train import head_layout, inference_layout, training_only_heads
from .views import BoxSource, TestTimeViews, boxes_record, image_views, load_detections


def checkpoint_method(state: dict, path: Path, method: str | None = None) -> MethodSpec:
    """The method of a checkpoint: ``method`` (a name or directory) when given, else the directory it was trained
    from when that still holds it, else ``methods/<name>``. The method must be the checkpoint's."""
    if method is not None:
        spec = resolve_method(method)
    else:
        saved = Path(state["method_dir"]) / "method.yaml"
        spec = resolve_method(saved) if saved.exists() else load_method(state["method"])
    ckpt.check_identity(state, path, method=spec.name)
    return spec


@dataclass
class PredictOptions:
    """How :func:`predict` runs (the ``poseharness predict`` options).

    out:             results file (default: the store's predictions/trained/... path)
    flip:            force the flip test on / off (default: the variant's ``decode.flip``)
    size, data_seed: which synthetic set (default: the one the checkpoint was trained on, for the same dataset)
    method:          load the method from this name / directory instead of the checkpoint's
    detections:      top-down methods: a COCO detection-results file whose boxes are cropped (default: the
                     variant's ``decode.boxes``: ground truth, or ground truth jittered)
    batch, workers:  views per forward pass, loader processes
    device, amp:     'auto' | 'cpu' | 'cuda[:N]'; AMP (float16) on CUDA
    store_root:      the results store (default: POSEHARNESS_RESULTS); write: also write a record
    progress:        a progress bar; limit: only the first N images (N >= 1): a quick look, recorded with the
                     subset ``first-N-images`` (never superseding the full split's record); its default results file
                     is ``<scale>-seed<N>.first-N-images.json``, beside the full run's
    """

    out: str | os.PathLike | None = None
    flip: bool | None = None
    size: str | None = None
    data_seed: int | None = None
    method: str | None = None
    detections: str | os.PathLike | None = None
    batch: int = 8
    workers: int = 0
    device: str = "auto"
    amp: bool = True
    store_root: Path | None = None
    write: bool = True
    progress: bool = True
    limit: int | None = None


def _predict_config(spec: MethodSpec, module, variant: str, state: dict, path: Path, manifest: Manifest,
                    opts: PredictOptions) -> dict:
    """The variant's config for the checkpoint, the flip setting applied; checks the flip test and the schema."""
    cfg = checkpoint_variant_config(spec, variant, state, path, flip=opts.flip)
    if cfg["decode"].get("flip", False) and getattr(module, "merge_flip", None) is None:
        raise HarnessError(f"{spec.directory}: method {spec.name!r} has no merge_flip; it cannot run the flip test")
    if cfg["schema"] != manifest.schema.name:
        raise HarnessError(f"{path}: field config.schema: the model predicts {cfg['schema']!r} keypoints but "
                           f"dataset {manifest.name!r} ({manifest.source_path}) has {manifest.schema.name!r}")
    if opts.batch < 1:
        raise HarnessError(f"--batch must be a positive integer, got {opts.batch}")
    if opts.detections is not None and view_of(spec) != "top-down":
        raise HarnessError(f"{spec.source}: --detections: method {spec.name!r} is {spec.paradigm}; detection boxes "
                           f"apply to top-down methods only")
    return cfg


def _data_of(cfg: dict, manifest: Manifest, opts: PredictOptions) -> tuple[str | None, int | None]:
    """(size, generator seed) of the synthetic set: the options', else the training's for the same dataset."""
    trained_on = cfg["dataset"]
    size, seed = opts.size, opts.data_seed
    if manifest.synthetic and trained_on.get("name") == manifest.name:
        size = size if size is not None else trained_on.get("size")
        seed = seed if seed is not None else trained_on.get("seed")
    return size, seed


def _runner(module, spec: MethodSpec, state: dict, path: Path, cfg: dict, opts: PredictOptions) -> ModelRunner:
    """The checkpoint's model on the device, its head layout checked on the first batch."""
    dev = pick_device(opts.device, Distributed())
    model = module.build_model(state["config"])
    ckpt.load_model_state(model, state, path)
    model.to(dev).eval()

    final = final_outputs_of(module)
    skip = training_only_heads(module)      # heads the model computes in training only: not compared

    def check(outputs) -> None:
        have, want = inference_layout(head_layout(outputs, final), skip), inference_layout(state["heads"], skip)
        if state["heads"] and have != want:
            extra = f" (training-only heads {', '.join(skip)} not compared)" if skip else ""
            raise HarnessError(f"{path}: field heads: the checkpoint's heads {want} differ "
                               f"from the model's {have}{extra}")

    flip = module.merge_flip if cfg["decode"].get("flip", False) else None
    return ModelRunner(model, dev, final, cfg, amp=bool(opts.amp) and dev.type == "cuda", merge_flip=flip,
                       check=check)


def _record_config(cfg: dict, path: Path, state: dict, manifest: Manifest, data: tuple, view: str, side,
                   opts: PredictOptions, boxes: str | dict | None) -> dict:
    """The trained record's config: the variant's, the datasets, the checkpoint and how it was predicted (the
    boxes: ``'ground-truth'``, the jitter settings, or the detection file's path and SHA-256)."""
    out = dict(cfg, train_dataset=cfg["dataset"], dataset=dataset_config(manifest, *data))
    out["checkpoint"] = {"path": str(path.resolve()), "sha256": file_digest(path), "step": state["step"],
                         "total_steps": state["total_steps"], "complete": state["complete"],
                         "config_hash": state["config_hash"]}
    out["predict"] = {"view": view, "input": side if isinstance(side, int) else list(side),
                      "flip": bool(cfg["decode"].get("flip", False)), "boxes": boxes}
    return out


def predict(checkpoint: str | os.PathLike, variant: str, manifest: Manifest, split: str = "val",
            options: PredictOptions | None = None, **overrides) -> dict:
    """Predict, evaluate and record one variant of a checkpoint on ``manifest``'s ``split``.

    options: :class:`PredictOptions`; ``overrides`` are its fields by name (``predict(..., batch=4)``).
    Returns ``{'metrics', 'predictions', 'record', 'timings', 'persons', 'images', 'config'}``.
    """
    t_start = time.perf_counter()
    opts = dataclasses.replace(options or PredictOptions(), **overrides)
    check_limit(opts.limit)
    path = Path(checkpoint)
    state = ckpt.load_checkpoint(path)
    spec = checkpoint_method(state, path, opts.method)
    module = method_module(spec)
    cfg = _predict_config(spec, module, variant, state, path, manifest, opts)
    data = _data_of(cfg, manifest, opts)
    if not state["complete"]:
        print(f"warning: {path} is not a complete training ({state['step']} of {state['total_steps']} steps)",
              file=sys.stderr)
    runner = _runner(module, spec, state, path, cfg, opts)
    view, (_, side) = view_of(spec), input_sizes(cfg)
    samples = load_samples(manifest, split, *data, images=True, masks=False)
    n = len(samples) if opts.limit is None else min(opts.limit, len(samples))
    detections = None if opts.detections is None else load_detections(opts.detections)
    where = f"{spec.source}: variant {variant!r}: decode"
    tta = TestTimeViews.from_decode(cfg["decode"], where)
    boxes = BoxSource.from_decode(cfg["decode"], where)
    try:
        boxes_entry = boxes_record(view, boxes, opts.detections)    # a jittered variant + a detection file: refused
    except HarnessError as exc:
        raise HarnessError(f"{where}: {exc}") from None
    entries = [(i, v) for i in range(n)
               for v in image_views(samples.record(i), view, side, detections, tta, boxes)]
    loader = DataLoader(ViewImages(samples, entries), batch_sampler=view_batches(entries, opts.batch),
                        num_workers=opts.workers, pin_memory=runner.device.type == "cuda")
    t_setup = time.perf_counter() - t_start
    bar = functools.partial(tqdm, desc=f"predict {spec.name}/{variant} {manifest.name}/{split}", unit="batch",
                            disable=not opts.progress, mininterval=1.0, file=sys.stderr)
    with torch.inference_mode():
        preds, t_decode = model_predictions(runner, loader, entries, [samples.record(i).image_id for i in range(n)],
                                            Decoder(module, cfg, view), bar)
    scale, seed = state["scale"], state["seed"]
    info = RunInfo("trained", manifest, split, spec.name, variant, scale, seed,
                   _record_config(cfg, path, state, manifest, data, view, side, opts, boxes_entry))
    pred = Path(opts.out) if opts.out is not None else predictions_path(
        "trained", manifest.name, split, spec.name, variant, scale, seed, opts.store_root)
    if opts.out is None and opts.limit is not None:   # never overwrite the full run's results and matches files
        pred = pred.with_name(f"{pred.stem}.{subset_name(opts.limit)}{pred.suffix}")
    return finish(preds, info, pred, manifest.annotation_path(split, *data),
                  timings={"setup": t_setup, "model": runner.seconds, "decode": t_decode}, limit=opts.limit,
                  write=opts.write, store_root=opts.store_root)
