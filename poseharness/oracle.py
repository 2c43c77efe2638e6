"""The oracle: ground truth encoded exactly as training would, decoded and grouped, then evaluated.

No network is involved, so the figure is an upper bound of the representation itself (stride, Gaussian
quantisation, limb set, grouping). Generic over methods: a method's ``encode(sample, cfg)`` returns targets
named and shaped like its model's outputs, and ``decode(outputs, cfg)`` turns outputs into poses in network-input
pixels. The views are the paradigm's (:mod:`poseharness.views`: whole images, or one crop per person box, from the
ground truth or a detection file); decoding, the per-image step, the results file, the evaluation and the record
are the pipeline's that the predictor uses too (:mod:`poseharness.pipeline`). Each training's encoding is
computed once per view and decoded by every variant that uses it.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from .config import input_sizes, variant_config
from .contract import view_of
from .data.loader import load_samples
from .data.manifest import Manifest
from .errors import HarnessError
from .methods import MethodSpec
from .pipeline import Decoder, Predictions, RunInfo, encoded_outputs, finish, predictions_path
from .store.record import check_limit, subset_name
from .views import BoxSource, TestTimeViews, boxes_record, image_views, load_detections


@dataclass
class VariantRun:
    """What one variant produced over a split (poses in original image pixels) and its decode time (s)."""
    variant: str
    config: dict
    predictions: Predictions
    seconds_decode: float = 0.0


def run_variants(method: MethodSpec, manifest: Manifest, split: str, variants: Iterable[str], scale: str, *,
                 size: str | None = None, seed: int | None = None, progress: bool = True,
                 limit: int | None = None, detections: dict | None = None
                 ) -> tuple[list[VariantRun], dict[str, float]]:
    """Views → encode → decode → per-image step for every image of the split and each variant.

    detections: top-down boxes per image (:func:`views.load_detections`); None: each variant's ``decode.boxes``
    (:class:`views.BoxSource`: ground truth, or ground truth jittered).
    limit: only the first N images (N >= 1; HarnessError otherwise). Returns the runs and stage times (s): encode,
    decode."""
    check_limit(limit)
    variants = list(variants)
    runs = {}
    for v in variants:
        cfg = variant_config(method, v, scale, manifest, size=size, seed=seed)
        runs[v] = VariantRun(v, cfg, Predictions(manifest.schema.num_keypoints))
    # Variants that share a training, test-time views and boxes share the encoded ground truth of each view.
    tta = {v: TestTimeViews.from_decode(runs[v].config["decode"], f"{method.source}: variant {v!r}: decode")
           for v in variants}
    boxes = {v: BoxSource.from_decode(runs[v].config["decode"], f"{method.source}: variant {v!r}: decode")
             for v in variants}
    groups: dict[tuple, list[str]] = defaultdict(list)
    for v in variants:
        groups[method.variants[v]["training"], tta[v], boxes[v]].append(v)
    module, kind, side = method.module, view_of(method), input_sizes(runs[variants[0]].config)[1]
    decoders = {v: Decoder(module, runs[v].config, kind) for v in variants}
    samples = load_samples(manifest, split, size, seed, images=False)
    n = len(samples) if limit is None else min(limit, len(samples))
    timings = {"encode": 0.0, "decode": 0.0}
    for i in tqdm(range(n), desc=f"oracle {method.name} {manifest.name}/{split}", disable=not progress,
                  unit="img", mininterval=1.0):
        sample = samples[i]
        for names in groups.values():
            views = image_views(sample, kind, side, detections, tta[names[0]], boxes[names[0]])
            t0 = time.perf_counter()
            outputs = [encoded_outputs(module, sample, view, runs[names[0]].config, manifest.schema.counted)
                       for view in views]
            timings["encode"] += time.perf_counter() - t0
            for v in names:
                t1 = time.perf_counter()
                poses, scores = decoders[v].image(outputs, views)
                dt = time.perf_counter() - t1
                runs[v].seconds_decode += dt
                timings["decode"] += dt
                runs[v].predictions.add(sample.image_id, poses, scores)
    return [runs[v] for v in variants], timings


def _boxes_config(method: MethodSpec, variants: list[str], detections: str | Path | None) -> dict[str, dict]:
    """Per variant, the config entry naming where its top-down boxes came from ({} for whole-image views): the
    detection file (its digest computed once), else the variant's ``decode.boxes``."""
    if view_of(method) != "top-down":
        if detections is not None:
            raise HarnessError(f"{method.source}: --detections: method {method.name!r} is {method.paradigm}; "
                               f"detection boxes apply to top-down methods only")
        return {v: {} for v in variants}
    sources = {v: BoxSource.from_decode(method.decode_settings(v), f"{method.source}: variant {v!r}: decode")
               for v in variants}
    if detections is None:
        return {v: {"boxes": source.record()} for v, source in sources.items()}
    for v, source in sources.items():
        if source.source != "gt":
            raise HarnessError(f"{method.source}: variant {v!r}: decode: --detections {detections}: the variant's "
                               f"decode.boxes says source {source.source!r}; a detection file replaces ground-truth "
                               f"boxes only")
    entry = boxes_record("top-down", BoxSource(), detections)
    return {v: {"boxes": entry} for v in variants}


def run_oracle(method: MethodSpec, manifest: Manifest, split: str, variants: Iterable[str] | None = None,
               scale: str = "paper", *, size: str | None = None, seed: int | None = None,
               store_root: Path | None = None, progress: bool = True, write: bool = True,
               limit: int | None = None, detections: str | Path | None = None) -> list[dict]:
    """Run the oracle for ``variants`` (default: all) and write one ``oracle`` record per variant.

    detections: a COCO detection-results file whose boxes a top-down method crops (default: each variant's
    ``decode.boxes``: the ground-truth boxes, or ground truth jittered; a jittered variant refuses a file).
    limit: only the first N images (N >= 1, else HarnessError), a quick look: its records have the subset
    ``first-N-images`` (a key of their own, never superseding the full split's) and its results files sit beside
    the full run's as ``<scale>-seed<N>.first-N-images.json``, leaving those untouched.
    Returns one dict per variant: variant, metrics, record path (None when ``write`` is False), timings, persons.
    """
    check_limit(limit)
    variants = list(variants or method.variants)
    for v in variants:
        if v not in method.variants:
            raise HarnessError(f"{method.source}: method {method.name!r} has no variant {v!r} "
                               f"(known: {', '.join(method.variants)})")
    boxes = _boxes_config(method, variants, detections)
    gt_path = manifest.annotation_path(split, size, seed)
    run_seed = (manifest.seed if seed is None else seed) if manifest.synthetic else 0
    runs, timings = run_variants(method, manifest, split, variants, scale, size=size, seed=seed, progress=progress,
                                 limit=limit, detections=None if detections is None else load_detections(detections))
    out = []
    share = timings["encode"] / max(len(variants), 1)
    for run in runs:
        pred = predictions_path("oracle", manifest.name, split, method.name, run.variant, scale, run_seed,
                                store_root)
        if limit is not None:       # a quick look must not overwrite the full run's results and matches files
            pred = pred.with_name(f"{pred.stem}.{subset_name(limit)}{pred.suffix}")
        info = RunInfo("oracle", manifest, split, method.name, run.variant, scale, run_seed,
                       dict(run.config, **boxes[run.variant]))
        done = finish(run.predictions, info, pred, gt_path, timings={"encode": share, "decode": run.seconds_decode},
                      limit=limit, write=write, store_root=store_root)
        out.append({"variant": run.variant, "metrics": done["metrics"], "record": done["record"],
                    "timings": done["timings"], "persons": done["persons"]})
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
    p.add_argument("--method", required=True, help="a method name (methods/<name>/) or a method directory")
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--variant", action="append", dest="variants", help="repeatable; default: every variant")
    p.add_argument("--scale", default="paper",
                   help="whose input size the ground truth is encoded at (default: paper, e.g. long side 640)")
    p.add_argument("--size", help="synthetic sets: which generated size")
    p.add_argument("--seed", type=int, help="synthetic sets: which generator seed")
    p.add_argument("--limit", type=int, metavar="N",
                   help="only the first N images (N >= 1): a quick look, recorded with subset first-N-images beside "
                        "(never instead of) the full split's record, and left out of the report's tables")
    p.add_argument("--detections", metavar="DETECTIONS.json",
                   help="top-down methods: crop the boxes of this COCO detection-results file (person category), "
                        "scored by their box scores (default: each variant's decode.boxes, i.e. ground-truth boxes or "
                        "ground truth jittered as a stand-in detector)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from .argtypes import positive_int
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads (default 1: the per-image maps are small, and extra threads only wait "
                        "on each other on a busy machine)")
    p.add_argument("--summary", metavar="SUMMARY.json",
                   help="also write one row per variant (metrics, persons, timings, record path) here: a file at a "
                        "path of the caller's choosing, where records get unpredictable names")
    p.set_defaults(func=cmd_oracle)


def cmd_oracle(args) -> int:
    from .data.manifest import load_manifest
    from .threads import torch_threads
    from .contract import resolve_method

    check_limit(args.limit)
    method = resolve_method(args.method)
    manifest = load_manifest(args.dataset)
    with torch_threads(args.threads):
        rows = run_oracle(method, manifest, args.split, args.variants, args.scale, size=args.size, seed=args.seed,
                          progress=not args.quiet, limit=args.limit, detections=args.detections)
    oracle_table = next((t for t in method.tables().values() if t.kind == "oracle"), None)
    same_dataset = oracle_table is not None and manifest.name == oracle_table.dataset
    comparable = same_dataset and args.scale == "paper" and args.limit is None
    print(f"oracle of {method.name} on {manifest.name}/{args.split} at scale {args.scale} "
          f"(protocol {manifest.protocol})")
    print(format_oracle(rows, paper=oracle_table.paper if comparable else {}))
    if not comparable and not (same_dataset and args.scale == "paper"):   # a --limit alone: the note below
        family = oracle_table.dataset if oracle_table is not None else "the paper's dataset"
        print(f"note: figures for {manifest.name} ({manifest.kind}, scale {args.scale}) are not comparable to "
              f"a paper's (those are for real {family} at scale paper).")
    if args.limit is not None:
        print(f"note: {subset_name(args.limit)} of {manifest.name}/{args.split} only (--limit): a quick look, "
              f"recorded beside the full split's record and never used in report tables.")
    for r in rows:
        print(f"record: {r['record']}")
    if args.summary:
        from .io import write_json_atomic

        write_json_atomic(args.summary, {
            "method": method.name, "dataset": manifest.name, "split": args.split, "scale": args.scale,
            "rows": [dict(r, record=None if r["record"] is None else str(r["record"])) for r in rows]}, indent=1)
    return 0
