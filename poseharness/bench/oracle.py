"""``poseharness bench oracle``: where the time of one oracle variant goes, stage by stage, over a whole split.

The stages are those of :func:`poseharness.oracle.run_variants` and :func:`~poseharness.oracle.run_oracle`, run
with the same functions: reading the annotations (``load``), the network-input view of each image (``view``),
the method's ``encode`` (``encode``), its decoding with the mapping back to the image and the per-image step of
the paradigm (``decode``: :class:`~poseharness.pipeline.Decoder`, as the oracle and the predictor run it),
gathering the poses (``collect``), writing the results file (``write``) and the protocol's evaluation
(``evaluate``). The views are the paradigm's (:func:`~poseharness.views.image_views`: one crop per box for a
top-down method, with the variant's box source and test-time views). For a method whose module
decodes with GOG's pieces (``decode_peaks``, ``refine_peaks``, ``guides_for``, ``group``, ``skeleton``),
``decode`` is split into ``peaks`` (peak decoding, refinement), ``guides`` and ``group``, composed exactly as the
module's ``decode`` composes them (checked against ``decode`` on the first images). Nothing is written to the
results store; the results file goes to a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import HarnessError
from ..io import write_json_atomic
from ..threads import torch_threads

#: Images on which the split decode is compared with the module's own ``decode``.
CHECKED_IMAGES = 20
_GOG_PIECES = ("decode_peaks", "refine_peaks", "guides_for", "group", "skeleton")


def _gog_decode(module, outputs: dict, cfg: dict, clock: dict) -> tuple[np.ndarray, np.ndarray]:
    """``module.decode`` of GOG, piece by piece, adding each piece's seconds to ``clock``."""
    dec = cfg["decode"]
    stride = int(cfg["encoding"]["stride"])
    limbs = module.skeleton(cfg)
    t0 = time.perf_counter()
    peaks = module.decode_peaks(outputs["heatmaps"], stride, upsample=dec["upsample"], topk=dec["topk"],
                                threshold=dec["threshold"], dark=dec["dark"])
    if dec["refine"]:
        peaks = module.refine_peaks(peaks, outputs["refine"], stride)
    t1 = time.perf_counter()
    guides = module.guides_for(peaks, outputs["offsets"], limbs, stride)
    t2 = time.perf_counter()
    poses, scores = module.group(peaks, guides, limbs, dist_max=dec["dist_max"],
                                 person_threshold=dec["person_threshold"], score_mode=dec["score_mode"])
    t3 = time.perf_counter()
    clock["peaks"] += t1 - t0
    clock["guides"] += t2 - t1
    clock["group"] += t3 - t2
    return poses, scores


class _TimedGog:
    """GOG's module seen by :class:`~poseharness.pipeline.Decoder`: ``decode`` is :func:`_gog_decode` (the pieces,
    timed into ``clock``), ``per_image`` the module's own."""

    def __init__(self, module, clock: dict):
        self._module, self._clock = module, clock
        self.per_image = getattr(module, "per_image", None)

    def decode(self, outputs: dict, cfg: dict):
        return _gog_decode(self._module, outputs, cfg, self._clock)


def bench_oracle(method_name: str, dataset: str, split: str = "val", variant: str | None = None,
                 scale: str = "paper", *, size: str | None = None, seed: int | None = None,
                 limit: int | None = None, progress: bool = True) -> dict:
    """Run one oracle variant over the split, timing each stage. Returns the stage seconds, counts and metrics."""
    from tqdm import tqdm

    from ..config import input_sizes, variant_config
    from ..contract import view_of
    from ..data.loader import load_samples
    from ..data.manifest import load_manifest
    from ..eval.evaluate import evaluate
    from ..eval.results import write_results
    from ..methods import load_method
    from ..pipeline import Decoder, encoded_outputs, subset_ground_truth
    from ..views import BoxSource, TestTimeViews, image_views

    method = load_method(method_name)
    variant = variant or next(iter(method.variants))
    if variant not in method.variants:
        raise HarnessError(f"{method.source}: method {method.name!r} has no variant {variant!r} "
                           f"(known: {', '.join(method.variants)})")
    manifest = load_manifest(dataset)
    gt_path = manifest.annotation_path(split, size, seed)
    if not gt_path.exists() and manifest.synthetic:
        from ..data import synthetic

        print(f"generating {manifest.name} ({manifest.resolve_size(size)}) into {manifest.root(size, seed)}")
        synthetic.generate(manifest, size=size, seed=seed, jobs=os.cpu_count(), progress=progress)
    module = method.module
    if scale not in method.scales:
        raise HarnessError(f"{method.source}: method {method.name!r} has no scale {scale!r} "
                           f"(known: {', '.join(method.scales)})")
    cfg = variant_config(method, variant, scale, manifest, size=size, seed=seed)
    kind, (_, side) = view_of(method), input_sizes(cfg)
    where = f"{method.source}: variant {variant!r}: decode"
    tta, boxes = TestTimeViews.from_decode(cfg["decode"], where), BoxSource.from_decode(cfg["decode"], where)
    split_decode = all(hasattr(module, name) for name in _GOG_PIECES)
    clock = dict.fromkeys(("load", "view", "encode", "decode", "collect", "write", "evaluate"), 0.0)
    if split_decode:     # the pipeline's Decoder (view mapping, flips, per-image step) around GOG's timed pieces
        clock.update(dict.fromkeys(("peaks", "guides", "group"), 0.0))
    decoder = Decoder(_TimedGog(module, clock) if split_decode else module, cfg, kind)
    reference = Decoder(module, cfg, kind)         # the module's own decode, to check the timed pieces against
    t0 = time.perf_counter()
    samples = load_samples(manifest, split, size, seed, images=False)
    n = len(samples) if limit is None else min(limit, len(samples))
    clock["load"] = time.perf_counter() - t0
    ids, all_poses, all_scores = [], [], []
    checked = agree = 0
    k = manifest.schema.num_keypoints
    for i in tqdm(range(n), desc=f"bench oracle {method.name}/{variant} {manifest.name}/{split}",
                  disable=not progress, unit="img", mininterval=1.0):
        t0 = time.perf_counter()
        sample = samples[i]
        views = image_views(sample, kind, side, None, tta, boxes)
        t1 = time.perf_counter()
        outputs = [encoded_outputs(module, sample, v, cfg, counted=manifest.schema.counted) for v in views]
        t2 = time.perf_counter()
        poses, scores = decoder.image(outputs, views)
        t3 = time.perf_counter()
        if split_decode and checked < CHECKED_IMAGES:
            ref_poses, ref_scores = reference.image(outputs, views)
            checked += 1
            agree += int(np.array_equal(ref_poses, poses) and np.array_equal(ref_scores, scores))
        t4 = time.perf_counter()
        ids.append(np.full(len(poses), sample.image_id, dtype=np.int64))
        all_poses.append(poses)
        all_scores.append(scores)
        clock["view"] += t1 - t0
        clock["encode"] += t2 - t1
        clock["decode"] += t3 - t2
        clock["collect"] += time.perf_counter() - t4
    image_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        pred = write_results(Path(tmp) / "results.json", image_ids,
                             np.concatenate(all_poses) if all_poses else np.zeros((0, k, 3)),
                             np.concatenate(all_scores) if all_scores else np.zeros(0))
        t1 = time.perf_counter()
        scored = gt_path if n == len(samples) else subset_ground_truth(   # --limit: scored on the images it saw
            gt_path, [samples[i].image_id for i in range(n)], Path(tmp) / "gt.json")
        metrics = evaluate(pred, scored, manifest.protocol)
        clock["evaluate"] = time.perf_counter() - t1
        clock["write"] = t1 - t0
    return {"method": method.name, "variant": variant, "dataset": manifest.name, "split": split,
            "size": manifest.resolve_size(size) if manifest.synthetic else None, "images": n,
            "persons": int(len(image_ids)), "seconds": clock, "metrics": metrics,
            "decode_checked": checked, "decode_agree": agree, "threads": torch.get_num_threads()}


def format_oracle_bench(result: dict) -> str:
    """Per-stage totals (s) and per-image milliseconds; the split pieces indented under ``decode``."""
    n = max(result["images"], 1)
    sec = result["seconds"]
    order = ["load", "view", "encode", "decode", "peaks", "guides", "group", "collect", "write", "evaluate"]
    lines = [f"{'stage':<12} {'total s':>9} {'ms/image':>9}"]
    for name in order:
        if name not in sec:
            continue
        label = f"  {name}" if name in ("peaks", "guides", "group") else name
        lines.append(f"{label:<12} {sec[name]:>9.2f} {1e3 * sec[name] / n:>9.2f}")
    total = sum(v for key, v in sec.items() if key not in ("peaks", "guides", "group"))
    lines.append(f"{'total':<12} {total:>9.2f} {1e3 * total / n:>9.2f}")
    return "\n".join(lines)


def published_comparison(result: dict, published: dict | None) -> str | None:
    """One line comparing our ``decode`` time per image with a method's published decoding speed
    (``method.yaml`` ``speed.decode``: fps, hardware, note); None when the paper gives none."""
    if not published or not result["images"]:
        return None
    ms = 1e3 * result["seconds"]["decode"] / result["images"]
    ours = 1e3 / ms if ms > 0 else float("inf")
    note = f", {published['note']}" if published.get("note") else ""
    return (f"decode: ours {ms:.1f} ms/image = {ours:.1f} images/s; published {published['fps']:g} images/s "
            f"({published['hardware']}{note}); ratio ours/published {ours / published['fps']:.1f}x "
            f"(different hardware: an order of magnitude, not a precise factor)")


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "oracle", help="time each stage of one oracle variant over a whole split",
        description="Runs one oracle variant (ground truth encoded, decoded, evaluated) over a dataset split "
                    "and prints the seconds spent in each stage (annotations, views, encoding, decoding split "
                    "into peaks / guides / grouping for GOG, collecting, writing, evaluation). Writes no record. "
                    "A synthetic dataset is generated first when its files are missing.")
    p.add_argument("--method", default="gog")
    p.add_argument("--dataset", default="synthetic-coco")
    p.add_argument("--split", default="val")
    p.add_argument("--size", default=None,
                   help="synthetic sets: the size (default with synthetic-coco: coco-val-size, 5,000 images)")
    p.add_argument("--seed", type=int, default=None, help="synthetic sets: the generator seed")
    p.add_argument("--variant", default="ours")
    p.add_argument("--scale", default="paper")
    p.add_argument("--limit", type=int, help="only the first N images")
    from ..argtypes import positive_int
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch.set_num_threads before timing (default: torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", metavar="BENCH.json", help="also write the timings here")
    p.set_defaults(func=cmd_bench_oracle)


def cmd_bench_oracle(args: argparse.Namespace) -> int:
    with torch_threads(args.threads):
        return _bench_oracle(args)


def _bench_oracle(args: argparse.Namespace) -> int:
    size = args.size or ("coco-val-size" if args.dataset == "synthetic-coco" else None)
    result = bench_oracle(args.method, args.dataset, args.split, args.variant, args.scale, size=size,
                          seed=args.seed, limit=args.limit, progress=not args.quiet)
    threads = result["threads"]
    print(f"oracle {result['method']}/{result['variant']} on {result['dataset']}/{result['split']}"
          f"{' (' + result['size'] + ')' if result['size'] else ''}: {result['images']} images, "
          f"{result['persons']} poses, AP {100 * result['metrics'].get('AP', float('nan')):.1f}; "
          f"torch {threads} thread{'s' if threads != 1 else ''}"
          f" ({'torch default' if args.threads is None else 'set by --threads'}), {os.cpu_count()} CPUs")
    print(format_oracle_bench(result))
    from ..methods import load_method

    published = load_method(args.method).raw.get("speed", {}).get("decode")
    line = published_comparison(result, published)
    if line:
        print(line)
        result["published_decode"] = published
    if result["decode_checked"]:
        print(f"split decode == module decode on the first {result['decode_checked']} images: "
              f"{result['decode_agree']}/{result['decode_checked']}")
    if args.out:
        write_json_atomic(args.out, result, indent=2)
    return 0 if result["decode_agree"] == result["decode_checked"] else 1
