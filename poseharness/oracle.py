"""The oracle: ground truth encoded exactly as training would, decoded and grouped, then evaluated.

No network is involved, so the figure is an upper bound of the representation itself (stride, Gaussian
quantisation, limb set, grouping). Generic over methods: a method's ``encode(sample, cfg)`` returns targets
named and shaped like its model's outputs, and ``decode(outputs, cfg)`` turns outputs into poses in network-input
pixels; this module owns the views (original image ↔ network input), the results file, the evaluation and
the record. Each training's encoding is computed once per image and decoded by every variant that uses it.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from . import paths
from .data.augment import affine_points, bottom_up_affine, invert_affine, transform_sample
from .data.loader import load_samples
from .data.manifest import Manifest
from .errors import HarnessError
from .eval.evaluate import evaluate_for_record, evaluator_info
from .eval.results import write_results
from .io import file_digest
from .methods import MethodSpec


@dataclass
class VariantRun:
    """What one variant produced over a split (poses in original image pixels)."""
    variant: str
    config: dict
    image_ids: list
    poses: list
    scores: list
    seconds_decode: float = 0.0
    first_ids: list | None = None


def resolved_config(method: MethodSpec, variant: str, scale: str, manifest: Manifest,
                    size: str | None, seed: int | None) -> dict:
    """The variant's config plus the dataset it runs on: what the record's config hash covers."""
    cfg = method.variant_config(variant, scale)
    cfg["schema"] = manifest.schema.name
    cfg["dataset"] = {"name": manifest.name, "kind": manifest.kind}
    if manifest.synthetic:
        cfg["dataset"].update(size=manifest.resolve_size(size), seed=manifest.seed if seed is None else seed)
    return cfg


def to_original(poses: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map (N, K, 3) poses from network-input pixels back to the original image; missing keypoints stay 0."""
    out = poses.astype(np.float64, copy=True)
    if len(out):
        out[..., :2] = affine_points(out[..., :2], invert_affine(affine))
        out[out[..., 2] <= 0] = 0.0
    return out


def _as_outputs(targets: dict) -> dict:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
            for k, v in targets.items()}


def run_variants(method: MethodSpec, manifest: Manifest, split: str, variants: Iterable[str], scale: str, *,
                 size: str | None = None, seed: int | None = None, progress: bool = True,
                 limit: int | None = None) -> tuple[list[VariantRun], dict[str, float]]:
    """Encode → decode every image of the split for each variant. Returns the runs and stage times (s)."""
    variants = list(variants)
    by_training: dict[str, list[str]] = defaultdict(list)
    for v in variants:
        by_training[method.variants[v]["training"]].append(v)
    runs = {v: VariantRun(v, resolved_config(method, v, scale, manifest, size, seed), [], [], []) for v in variants}
    samples = load_samples(manifest, split, size, seed, images=False)
    n = len(samples) if limit is None else min(limit, len(samples))
    side = method.scales[scale]["input"] if scale in method.scales else None
    if side is None:
        raise HarnessError(f"{method.source}: scale {scale!r} has no `input` size")
    module = method.module
    timings = {"encode": 0.0, "decode": 0.0}
    for i in tqdm(range(n), desc=f"oracle {method.name} {manifest.name}/{split}", disable=not progress,
                  unit="img", mininterval=1.0):
        sample = samples[i]
        affine = bottom_up_affine(sample.width, sample.height, side)
        view = transform_sample(sample, affine, side, counted=manifest.schema.counted)
        for training, names in by_training.items():
            t0 = time.perf_counter()
            outputs = _as_outputs(module.encode(view, runs[names[0]].config))
            t1 = time.perf_counter()
            timings["encode"] += t1 - t0
            for v in names:
                t1 = time.perf_counter()
                poses, scores = module.decode(outputs, runs[v].config)
                dt = time.perf_counter() - t1
                runs[v].seconds_decode += dt
                timings["decode"] += dt
                poses = to_original(np.asarray(poses), affine)
                runs[v].image_ids.append(np.full(len(poses), sample.image_id, dtype=np.int64))
                runs[v].poses.append(poses.reshape(len(poses), manifest.schema.num_keypoints, 3))
                runs[v].scores.append(np.asarray(scores, dtype=np.float64).reshape(-1))
    seen = [samples[i].image_id for i in range(n)]
    for run in runs.values():
        run.first_ids = seen
    return [runs[v] for v in variants], timings


def subset_ground_truth(gt_path: Path, image_ids: list, out: Path) -> Path:
    """An annotation file restricted to ``image_ids`` (a ``--limit`` run is scored on the images it saw)."""
    import json

    from .io import write_json_atomic

    data = json.loads(Path(gt_path).read_text())
    keep = set(int(i) for i in image_ids)
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    return write_json_atomic(out, data)


def predictions_path(kind: str, dataset: str, split: str, method: str, variant: str, scale: str, seed: int,
                     root: Path | None = None) -> Path:
    root = root or paths.results_dir()
    return root / "predictions" / kind / dataset / split / method / variant / f"{scale}-seed{seed}.json"


def run_oracle(method: MethodSpec, manifest: Manifest, split: str, variants: Iterable[str] | None = None,
               scale: str = "paper", *, size: str | None = None, seed: int | None = None,
               store_root: Path | None = None, progress: bool = True, write: bool = True,
               limit: int | None = None) -> list[dict]:
    """Run the oracle for ``variants`` (default: all) and write one ``oracle`` record per variant.

    Returns one dict per variant: variant, metrics, record path (None when ``write`` is False), timings.
    """
    from .store.record import RunRecord
    from .store.store import write_record

    variants = list(variants or method.variants)
    for v in variants:
        if v not in method.variants:
            raise HarnessError(f"{method.source}: method {method.name!r} has no variant {v!r} "
                               f"(known: {', '.join(method.variants)})")
    gt_path = manifest.annotation_path(split, size, seed)
    run_seed = (manifest.seed if seed is None else seed) if manifest.synthetic else 0
    runs, timings = run_variants(method, manifest, split, variants, scale, size=size, seed=seed,
                                 progress=progress, limit=limit)
    out = []
    share = timings["encode"] / max(len(variants), 1)
    for run in runs:
        ids = np.concatenate(run.image_ids) if run.image_ids else np.zeros(0, np.int64)
        k = manifest.schema.num_keypoints
        poses = np.concatenate(run.poses) if run.poses else np.zeros((0, k, 3))
        scores = np.concatenate(run.scores) if run.scores else np.zeros(0)
        pred = predictions_path("oracle", manifest.name, split, method.name, run.variant, scale, run_seed,
                                store_root)
        write_results(pred, ids, poses, scores)
        scored_gt = gt_path if limit is None else subset_ground_truth(
            gt_path, run.first_ids, pred.with_name(pred.stem + ".gt.json"))
        t0 = time.perf_counter()
        metrics, extra = evaluate_for_record(pred, scored_gt, manifest.protocol, intervals=write)
        t_eval = time.perf_counter() - t0
        stage_times = {"encode": share, "decode": run.seconds_decode, "evaluate": t_eval}
        record_path = None
        if write:
            config = dict(run.config, evaluator=evaluator_info(manifest.protocol))
            if limit:
                config["limit"] = limit
            record = RunRecord.new(
                kind="oracle", dataset=manifest.name, split=split, method=method.name, variant=run.variant,
                scale=scale, seed=run_seed, metrics=metrics, config=config, dataset_kind=manifest.kind,
                timings=stage_times, predictions={"path": str(pred), "sha256": file_digest(pred)}, **extra)
            record_path = write_record(record, store_root)
        out.append({"variant": run.variant, "metrics": metrics, "record": record_path, "timings": stage_times,
                    "persons": int(len(ids))})
    return out


def format_oracle(rows: list[dict], metric: str = "AP", paper: dict | None = None) -> str:
    """An aligned table: variant, persons, the metric (in %), the paper's bound where it has one, time."""
    paper = paper or {}
    lines = [f"{'variant':<16} {'persons':>8} {metric:>7} {'paper':>7} {'decode s':>9} {'eval s':>7}"]
    for r in rows:
        pub = paper.get(r["variant"], {}).get(metric)
        lines.append(f"{r['variant']:<16} {r['persons']:>8} {100 * r['metrics'][metric]:>7.1f} "
                     f"{'' if pub is None else f'{pub:.1f}':>7} {r['timings']['decode']:>9.2f} "
                     f"{r['timings']['evaluate']:>7.2f}")
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser(
        "oracle", help="upper bound of a method's representation: ground truth encoded, decoded, evaluated",
        description="Encode every ground-truth image as training would, decode and group it with each "
                    "variant's decoder, evaluate with the dataset's protocol and write one `oracle` record "
                    "per variant. Needs annotations only (no images).")
    p.add_argument("--method", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--variant", action="append", dest="variants", help="repeatable; default: every variant")
    p.add_argument("--scale", default="paper",
                   help="whose input size the ground truth is encoded at (default: paper, e.g. long side 640)")
    p.add_argument("--size", help="synthetic sets: which generated size")
    p.add_argument("--seed", type=int, help="synthetic sets: which generator seed")
    p.add_argument("--limit", type=int, help="only the first N images (a quick look; recorded in the config)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the per-image maps are small, and extra threads only wait "
                        "on each other on a busy machine)")
    p.add_argument("--summary", metavar="SUMMARY.json",
                   help="also write one row per variant (metrics, persons, timings, record path) here: a file at a "
                        "path of the caller's choosing, where records get unpredictable names")
    p.set_defaults(func=cmd_oracle)


def cmd_oracle(args) -> int:
    from .data.manifest import load_manifest
    from .threads import torch_threads
    from .methods import load_method

    method = load_method(args.method)
    manifest = load_manifest(args.dataset)
    with torch_threads(args.threads):
        rows = run_oracle(method, manifest, args.split, args.variants, args.scale, size=args.size, seed=args.seed,
                          progress=not args.quiet, limit=args.limit)
    oracle_table = next((t for t in method.tables().values() if t.kind == "oracle"), None)
    same_dataset = oracle_table is not None and manifest.name == oracle_table.dataset
    comparable = same_dataset and args.scale == "paper" and not args.limit
    print(f"oracle of {method.name} on {manifest.name}/{args.split} at scale {args.scale} "
          f"(protocol {manifest.protocol})")
    print(format_oracle(rows, paper=oracle_table.paper if comparable else {}))
    if not comparable:
        family = oracle_table.dataset if oracle_table is not None else "the paper's dataset"
        print(f"note: figures for {manifest.name} ({manifest.kind}, scale {args.scale}) are not comparable to "
              f"a paper's (those are for real {family} at scale paper).")
    for r in rows:
        print(f"record: {r['record']}")
    if args.summary:
        from .io import write_json_atomic

        write_json_atomic(args.summary, {
            "method": method.name, "dataset": manifest.name, "split": args.split, "scale": args.scale,
            "rows": [dict(r, record=None if r["record"] is None else str(r["record"])) for r in rows]}, indent=1)
    return 0
