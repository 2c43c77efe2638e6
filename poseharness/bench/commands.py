"""``poseharness bench SUBVERB``: timing benchmarks. Each benchmark is a sub-verb of ``bench``.

``poseharness bench evaluate [--dataset synthetic-coco --size coco-val-size | --gt FILE --protocol P]``
times the harness's evaluator and every importable evaluator library on one set (the ground truth
perturbed into predictions) and checks that they give the same figures (exit status 1 if not).
``poseharness bench diagnose`` (same options) times the error diagnosis against the evaluation of that set.

A method adds benches of its own code (``benches:`` in its method.yaml, each ``bench_<name>.py`` in its
directory), e.g. GOG's ``poseharness bench decode``; ``poseharness bench oracle`` times each
stage of one oracle variant over a whole split (:mod:`.oracle`); ``poseharness bench curve RUN_DIR`` scores the
snapshots of a training (a learning curve, :mod:`.curve`); ``poseharness bench crowd`` times a top-down and a
bottom-up model against the number of persons per image (:mod:`.crowd`).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import HarnessError
from ..io import write_json_atomic


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="timing benchmarks (evaluate, ...)")
    verbs = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)

    p = verbs.add_parser(
        "evaluate",
        help="time every available evaluator on one set and check that their figures agree",
        description="Builds predictions by perturbing the ground truth (jitter, missing persons, false "
                    "positives, duplicates), then scores them with the harness and with each importable "
                    "library (pycocotools, xtcocotools; faster-coco-eval, hotcoco, xthotcoco if installed). "
                    "A synthetic dataset is generated first when its files are missing.")
    _set_arguments(p)
    p.add_argument("--repeat", type=int, default=1, help="runs per backend; the best time is reported")
    p.set_defaults(func=cmd_bench_evaluate)

    p = verbs.add_parser(
        "diagnose",
        help="time the error diagnosis against the evaluation of the same set",
        description="Builds predictions by perturbing the ground truth (every detection carries errors of "
                    "every kind) and times, on them: the official evaluation alone (`poseharness evaluate`), "
                    "the evaluation step of a run record (with its bootstrap intervals and saved matches) and "
                    "the error diagnosis (`poseharness analyze`), each the best of --repeat runs.")
    _set_arguments(p)
    p.add_argument("--repeat", type=int, default=1, help="runs of each; the best time is reported")
    p.set_defaults(func=cmd_bench_diagnose)

    from .train import register as register_train      # bench train
    register_train(verbs)
    from .oracle import register as register_oracle    # bench oracle
    register_oracle(verbs)
    from .curve import register as register_curve      # bench curve
    register_curve(verbs)
    from .crowd import register as register_crowd      # bench crowd
    register_crowd(verbs)
    register_method_benches(verbs)


def _set_arguments(p: argparse.ArgumentParser) -> None:
    """The options naming the set a bench scores (and where its figures go)."""
    p.add_argument("--dataset", default=None,
                   help="dataset manifest (default: synthetic-coco, unless --gt is given)")
    p.add_argument("--split", default="val")
    p.add_argument("--size", default=None,
                   help="synthetic sets: the size (default with synthetic-coco: coco-val-size, 5,000 images)")
    p.add_argument("--seed", type=int, default=None, help="synthetic sets: the generator seed")
    p.add_argument("--gt", metavar="ANNOTATIONS.json", help="bench on this annotation file instead")
    p.add_argument("--protocol", help="with --gt: coco | crowdpose | ochuman")
    p.add_argument("--prediction-seed", type=int, default=0, help="seed of the perturbed predictions")
    p.add_argument("--jobs", type=int, default=None, help="image writers when generating (default: all cores)")
    p.add_argument("--out", metavar="BENCH.json", help="also write the timings and figures here")


def register_method_benches(verbs: argparse._SubParsersAction) -> None:
    """The benches of the methods' own code: each name a method declares in method.yaml (``benches:``) is the
    file ``bench_<name>.py`` of its directory, whose ``register(verbs)`` adds ``poseharness bench <name>``."""
    from ..contract import method_submodule
    from ..methods import load_method, method_names

    for method in method_names():
        spec = load_method(method)
        for name in spec.raw.get("benches") or ():
            method_submodule(spec, f"bench_{name}").register(verbs)


def _ground_truth(args: argparse.Namespace) -> tuple[Path, str, dict]:
    if args.gt:
        if args.dataset:
            raise HarnessError("give either --dataset or --gt, not both")
        if not args.protocol:
            raise HarnessError("--gt needs --protocol (coco | crowdpose | ochuman)")
        return Path(args.gt), args.protocol, {}
    if args.protocol:
        raise HarnessError("--protocol goes with --gt; a dataset names its own protocol")
    from ..data.manifest import load_manifest

    name = args.dataset or "synthetic-coco"
    size = args.size or ("coco-val-size" if name == "synthetic-coco" else None)
    manifest = load_manifest(name)
    gt_path = manifest.annotation_path(args.split, size, args.seed)
    if not gt_path.exists():
        if not manifest.synthetic:
            raise HarnessError(
                f"{gt_path}: annotation file not found; run `poseharness data prepare {manifest.name}` first")
        from ..data import synthetic

        print(f"generating {manifest.name} ({manifest.resolve_size(size)}) into {manifest.root(size, args.seed)}")
        synthetic.generate(manifest, size=size, seed=args.seed, jobs=args.jobs or os.cpu_count(), progress=True)
    context = {"dataset": manifest.name, "split": args.split}
    if manifest.synthetic:
        context.update(size=manifest.resolve_size(size), seed=manifest.seed if args.seed is None else args.seed)
    return gt_path, manifest.protocol, context


def cmd_bench_evaluate(args: argparse.Namespace) -> int:
    from ..eval.evaluate import load_ground_truth
    from ..eval.protocols import get_protocol
    from .evaluate import bench_evaluate, format_bench, perturbed_predictions

    gt_path, protocol, context = _ground_truth(args)
    proto = get_protocol(protocol)
    gt = load_ground_truth(gt_path, proto)
    records = perturbed_predictions(gt, proto.num_keypoints, seed=args.prediction_seed)
    print(f"{gt_path}: {len(gt['images'])} images, {len(gt['annotations'])} persons, "
          f"{len(records)} perturbed predictions; protocol {proto.name}")
    rows = bench_evaluate(gt_path, proto.name, records, repeat=args.repeat)
    print(format_bench(rows))
    disagree = [row.backend for row in rows if not row.agrees]
    if disagree:
        print(f"DISAGREEMENT with the harness's figures: {', '.join(disagree)}")
    if args.out:
        write_json_atomic(args.out, {
            **context,
            "annotations": str(gt_path),
            "protocol": proto.name,
            "num_images": len(gt["images"]),
            "num_predictions": len(records),
            "prediction_seed": args.prediction_seed,
            "repeat": args.repeat,
            "cpu_count": os.cpu_count(),
            "backends": [
                {"backend": r.backend, "version": r.version, "seconds": r.seconds, "stats": r.stats,
                 "max_abs_diff": r.max_abs_diff if r.error is None else None, "agrees": r.agrees,
                 "error": r.error}
                for r in rows
            ],
        }, indent=2)
    return 1 if disagree else 0


def cmd_bench_diagnose(args: argparse.Namespace) -> int:
    import tempfile

    from ..eval.diagnosis import diagnose
    from ..eval.evaluate import evaluate, evaluate_for_record, load_ground_truth
    from ..eval.protocols import get_protocol
    from .evaluate import _timed, perturbed_predictions

    gt_path, protocol, context = _ground_truth(args)
    proto = get_protocol(protocol)
    records = perturbed_predictions(load_ground_truth(gt_path, proto), proto.num_keypoints,
                                    seed=args.prediction_seed)
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results.json"
        write_json_atomic(results, records)
        evaluation, metrics = _timed(lambda: evaluate(results, gt_path, proto.name), args.repeat)
        record_step, _ = _timed(lambda: evaluate_for_record(results, gt_path, proto.name), args.repeat)
        diagnosis, found = _timed(lambda: diagnose(results, gt_path, proto.name), args.repeat)
    figures = {"evaluate": evaluation, "evaluate_for_record": record_step, "diagnose": diagnosis}
    print(f"{gt_path}: {len(records)} perturbed predictions; protocol {proto.name}; best of {args.repeat}")
    print(f"  evaluation (official library alone)      {evaluation:8.2f} s   AP {metrics['AP']:.4f}")
    print(f"  evaluation step of a record (intervals)  {record_step:8.2f} s")
    print(f"  error diagnosis                          {diagnosis:8.2f} s   AP {found['ap']['original']['AP']:.4f}"
          f" -> {found['ap']['false_negative']['AP']:.4f} corrected")
    if args.out:
        write_json_atomic(args.out, {**context, "annotations": str(gt_path), "protocol": proto.name,
                                     "num_predictions": len(records), "prediction_seed": args.prediction_seed,
                                     "repeat": args.repeat, "cpu_count": os.cpu_count(), "seconds": figures,
                                     "ap": found["ap"]}, indent=2)
    return 0
