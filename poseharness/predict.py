"""The predictor: a trained checkpoint on every image of a split, decoded by one variant, evaluated, recorded.

One trained model serves every decoding variant of its training: the checkpoint carries the training's full
config (encoding, heads, input size), and the variant adds only its ``decode`` settings. Each image is seen
through the loader's view without augmentation (bottom-up: long side resized to the scale's ``input``, aspect
kept, padded at the right / bottom; top-down: one crop per ground-truth person box), batched, run through the
model in eval mode (AMP on CUDA), optionally together with its mirror image (the flip test, fused by the
method's ``merge_flip``), decoded, mapped back to the original image with :func:`oracle.to_original`, written
with the one COCO-results writer, scored with the dataset's protocol and stored as a ``trained`` record.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import checkpoint as ckpt
from .contract import dataset_config, final_outputs, input_sizes, method_module, resolve_method, view_of
from .data.loader import PoseDataset, collate
from .data.manifest import Manifest
from .errors import HarnessError
from .eval.evaluate import evaluate_for_record, evaluator_info
from .eval.results import write_results
from .io import file_digest
from .methods import MethodSpec, deep_merge, load_method
from .oracle import predictions_path, subset_ground_truth, to_original
from .train import Distributed, as_float, head_layout, pick_device


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


def variant_config(spec: MethodSpec, variant: str, state: dict, path: Path) -> dict:
    """The checkpoint's training config with ``variant``'s decoder settings; the variant must decode the
    checkpoint's training."""
    v = spec._pick("variants", variant)
    if v["training"] != state["training"]:
        raise HarnessError(f"{path}: field training: the checkpoint is of training {state['training']!r}, but "
                           f"variant {variant!r} of {spec.source} decodes training {v['training']!r}")
    cfg = dict(state["config"])
    cfg["decode"] = deep_merge(spec.raw.get("defaults", {}).get("decode", {}), v.get("decode", {}))
    cfg["variant"] = variant
    return cfg


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def predict(checkpoint: str | os.PathLike, variant: str, manifest: Manifest, split: str = "val", *,
            out: str | os.PathLike | None = None, flip: bool | None = None, size: str | None = None,
            data_seed: int | None = None, method: str | None = None, batch: int = 8, workers: int = 0,
            device: str = "auto", amp: bool = True, store_root: Path | None = None, write: bool = True,
            progress: bool = True, limit: int | None = None) -> dict:
    """Predict, evaluate and record one variant of a checkpoint on ``manifest``'s ``split``.

    flip:            force the flip test on / off (default: the variant's ``decode.flip``)
    size, data_seed: which synthetic set (default: the one the checkpoint was trained on, for the same dataset)
    method:          load the method from this name / directory instead of the checkpoint's
    batch, workers:  images per forward pass, loader processes; limit: only the first N items
    Returns ``{'metrics', 'predictions', 'record', 'timings', 'persons', 'images', 'config'}``.
    """
    t_start = time.perf_counter()
    path = Path(checkpoint)
    state = ckpt.load_checkpoint(path)
    spec = checkpoint_method(state, path, method)
    module = method_module(spec)
    cfg = variant_config(spec, variant, state, path)
    if flip is not None:
        cfg["decode"]["flip"] = bool(flip)
    use_flip = bool(cfg["decode"].get("flip", False))
    if use_flip and getattr(module, "merge_flip", None) is None:
        raise HarnessError(f"{spec.directory}: method {spec.name!r} has no merge_flip; it cannot run the flip test")
    if cfg["schema"] != manifest.schema.name:
        raise HarnessError(f"{path}: field config.schema: the model predicts {cfg['schema']!r} keypoints but "
                           f"dataset {manifest.name!r} ({manifest.source_path}) has {manifest.schema.name!r}")
    trained_on = cfg["dataset"]
    if manifest.synthetic and trained_on.get("name") == manifest.name:
        size = size if size is not None else trained_on.get("size")
        data_seed = data_seed if data_seed is not None else trained_on.get("seed")
    if batch < 1:
        raise HarnessError(f"--batch must be a positive integer, got {batch}")
    if not state["complete"]:
        print(f"warning: {path} is not a complete training ({state['step']} of {state['total_steps']} steps)",
              file=sys.stderr)

    dev = pick_device(device, Distributed())
    use_amp = bool(amp) and dev.type == "cuda"
    model = module.build_model(state["config"])
    ckpt.load_model_state(model, state, path)
    model.to(dev).eval()
    _, side = input_sizes(cfg)
    view = view_of(spec)
    dataset = PoseDataset(manifest, split, input_size=side, view=view, augment=None, encode=None, size=size,
                          seed=data_seed)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    subset = torch.utils.data.Subset(dataset, range(n))
    loader = DataLoader(subset, batch_size=batch, shuffle=False, num_workers=workers, collate_fn=collate,
                        pin_memory=dev.type == "cuda")
    t_setup = time.perf_counter() - t_start

    k = manifest.schema.num_keypoints
    ids, poses_all, scores_all = [], [], []
    t_model = t_decode = 0.0
    seen_images: list[int] = []
    checked = False
    with torch.inference_mode():
        for items in tqdm(loader, desc=f"predict {spec.name}/{variant} {manifest.name}/{split}", unit="batch",
                          disable=not progress, mininterval=1.0, file=sys.stderr):
            x = items["image"].to(dev, non_blocking=True)
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.float16, enabled=use_amp):
                outputs = final_outputs(model(x))
                mirrored = final_outputs(model(torch.flip(x, dims=[-1]))) if use_flip else None
            outputs = as_float(outputs)
            mirrored = as_float(mirrored)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t1 = time.perf_counter()
            t_model += t1 - t0
            if not checked:
                if state["heads"] and head_layout(outputs) != state["heads"]:
                    raise HarnessError(f"{path}: field heads: the checkpoint's heads {state['heads']} differ "
                                       f"from the model's {head_layout(outputs)}")
                checked = True
            for i, meta in enumerate(items["meta"]):
                one = {name: maps[i] for name, maps in outputs.items()}
                if use_flip:
                    one = module.merge_flip(one, {name: maps[i] for name, maps in mirrored.items()}, cfg)
                poses, scores = module.decode(one, cfg)
                poses = _numpy(poses).reshape(-1, k, 3)
                poses = to_original(poses, meta["affine"])
                ids.append(np.full(len(poses), meta["image_id"], dtype=np.int64))
                poses_all.append(poses)
                scores_all.append(_numpy(scores).astype(np.float64).reshape(-1))
                if not seen_images or seen_images[-1] != meta["image_id"]:
                    seen_images.append(int(meta["image_id"]))
            t_decode += time.perf_counter() - t1

    image_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    poses = np.concatenate(poses_all) if poses_all else np.zeros((0, k, 3))
    scores = np.concatenate(scores_all) if scores_all else np.zeros(0)
    scale, seed = state["scale"], state["seed"]
    pred = Path(out) if out is not None else predictions_path(
        "trained", manifest.name, split, spec.name, variant, scale, seed, store_root)
    write_results(pred, image_ids, poses, scores)
    gt_path = manifest.annotation_path(split, size, data_seed)
    if limit is not None:
        gt_path = subset_ground_truth(gt_path, seen_images, pred.with_name(pred.stem + ".gt.json"))
    t0 = time.perf_counter()
    metrics, extra = evaluate_for_record(pred, gt_path, manifest.protocol, intervals=write)
    t_eval = time.perf_counter() - t0

    record_cfg = dict(cfg)
    record_cfg["train_dataset"] = trained_on
    record_cfg["dataset"] = dataset_config(manifest, size, data_seed)
    record_cfg["checkpoint"] = {"path": str(path.resolve()), "sha256": file_digest(path), "step": state["step"],
                                "total_steps": state["total_steps"], "complete": state["complete"],
                                "config_hash": state["config_hash"]}
    record_cfg["predict"] = {"view": view, "input": side, "flip": use_flip,
                             "boxes": "ground-truth" if view == "top-down" else None}
    record_cfg["evaluator"] = evaluator_info(manifest.protocol)
    if limit is not None:
        record_cfg["limit"] = limit
    timings = {"setup": t_setup, "model": t_model, "decode": t_decode, "evaluate": t_eval}
    record_path = None
    if write:
        from .store.record import RunRecord
        from .store.store import write_record

        record = RunRecord.new(
            kind="trained", dataset=manifest.name, split=split, method=spec.name, variant=variant, scale=scale,
            seed=seed, metrics=metrics, config=record_cfg, dataset_kind=manifest.kind, timings=timings,
            predictions={"path": str(pred), "sha256": file_digest(pred)}, **extra)
        record_path = write_record(record, store_root)
    return {"metrics": metrics, "predictions": pred, "record": record_path, "timings": timings,
            "persons": int(len(image_ids)), "images": len(seen_images), "config": record_cfg}
