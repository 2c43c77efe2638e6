"""``poseharness evaluate RESULTS.json (--dataset NAME --split SPLIT | --gt FILE --protocol P) [--out FILE]``
and ``poseharness analyze`` (the same arguments): the error diagnosis of ``diagnosis.py``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import HarnessError
from ..io import file_digest, write_json_atomic
from .diagnosis import diagnose, format_diagnosis
from .evaluate import evaluate, evaluator_info
from .protocols import PROTOCOLS
from .results import read_results


def register(sub: argparse._SubParsersAction) -> None:
    _register_evaluate(sub)
    _register_analyze(sub)


def _ground_truth_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments naming what to score against, shared by ``evaluate`` and ``analyze``."""
    p.add_argument("results", metavar="RESULTS.json", help="COCO keypoint results (a JSON list)")
    p.add_argument("--dataset", help="a dataset manifest name (datasets/NAME.yaml)")
    p.add_argument("--split", help="with --dataset: the split whose annotations score the results")
    p.add_argument("--size", help="with --dataset, synthetic sets: the generated size (default: the manifest's)")
    p.add_argument("--seed", type=int, help="with --dataset, synthetic sets: the generator seed")
    p.add_argument("--gt", metavar="ANNOTATIONS.json", help="an annotation file (instead of --dataset)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), help="with --gt: how to score")


def _register_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a COCO keypoint results file with a dataset's official protocol",
        description="Score RESULTS.json against a dataset split (annotation file and protocol from its "
                    "manifest) or against an explicit annotation file and protocol. Prints the metrics; "
                    "--out also writes them, with their provenance, as JSON.")
    _ground_truth_arguments(p)
    p.add_argument("--out", metavar="METRICS.json", help="also write the metrics here (atomically)")
    p.set_defaults(func=cmd_evaluate)


def _register_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="diagnose a results file's errors (coco-analyze): keypoint, scoring, background FP, FN",
        description="Diagnose RESULTS.json against a dataset split or an annotation file and protocol, as "
                    "Ronchi & Perona's coco-analyze does: per-keypoint errors (jitter, inversion, swap, miss) "
                    "of the detections matched to a person, background false positives, false negatives, "
                    "scoring errors, and the AP after correcting each error type in turn (cumulatively), "
                    "re-evaluated with the protocol's official library. Prints tables; --out also writes "
                    "the diagnosis, with its provenance, as JSON.")
    _ground_truth_arguments(p)
    p.add_argument("--out", metavar="DIAGNOSIS.json", help="also write the diagnosis here (atomically)")
    p.set_defaults(func=cmd_analyze)


def resolve_ground_truth(args: argparse.Namespace) -> tuple[Path, str, dict[str, Any]]:
    """The annotation file and protocol named on the command line, and what to record about the choice."""
    if args.dataset and args.gt:
        raise HarnessError("give either --dataset (with --split) or --gt (with --protocol), not both")
    if args.gt:
        if not args.protocol:
            raise HarnessError("--gt needs --protocol (one of: " + ", ".join(sorted(PROTOCOLS)) + ")")
        if args.split or args.size or args.seed is not None:
            raise HarnessError("--split, --size and --seed go with --dataset, not --gt")
        return Path(args.gt), args.protocol, {}
    if not args.dataset:
        raise HarnessError("say what to score against: --dataset NAME --split SPLIT, or --gt FILE --protocol P")
    if not args.split:
        raise HarnessError("--dataset needs --split")
    if args.protocol:
        raise HarnessError(f"--protocol goes with --gt; dataset {args.dataset!r} names its own protocol")
    from ..data.manifest import load_manifest

    manifest = load_manifest(args.dataset)
    gt_path = manifest.annotation_path(args.split, args.size, args.seed)
    if not gt_path.exists():
        raise HarnessError(
            f"{gt_path}: annotation file not found; run `poseharness data prepare {manifest.name}` first")
    context = {"dataset": manifest.name, "split": args.split}
    if manifest.synthetic:
        context["size"] = manifest.resolve_size(args.size)
        context["seed"] = manifest.seed if args.seed is None else args.seed
    return gt_path, manifest.protocol, context


def inputs_record(args: argparse.Namespace, gt_path: Path, context: dict, records: list) -> dict:
    """What an ``--out`` file records of its inputs: the dataset context, both files and their sha256."""
    return {**context, "annotations": str(gt_path), "annotations_sha256": file_digest(gt_path),
            "results": str(args.results), "results_sha256": file_digest(args.results),
            "num_predictions": len(records)}


def format_metrics(metrics: dict[str, float]) -> str:
    """The metrics as an aligned two-column table (4 decimals; −1 means no ground truth in that range)."""
    width = max(len("metric"), *(len(name) for name in metrics))
    lines = [f"{'metric'.ljust(width)}  {'value':>7}"]
    lines += [f"{name.ljust(width)}  {value:7.4f}" for name, value in metrics.items()]
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    gt_path, protocol, context = resolve_ground_truth(args)
    records = read_results(args.results)
    metrics = evaluate(records, gt_path, protocol, results_name=str(args.results))
    info = evaluator_info(protocol)
    print(f"{args.results}: {len(records)} predictions, scored against {gt_path}")
    print(f"protocol {protocol} ({info['library']} {info['version']}, iouType {info['iou_type']})")
    print(format_metrics(metrics))
    if args.out:
        write_json_atomic(args.out, {"metrics": metrics, "evaluator": info,
                                     **inputs_record(args, gt_path, context, records)}, indent=2)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    gt_path, protocol, context = resolve_ground_truth(args)
    records = read_results(args.results)
    diagnosis = diagnose(records, gt_path, protocol, results_name=str(args.results))
    info = diagnosis["evaluator"]
    print(f"{args.results}: {len(records)} predictions, diagnosed against {gt_path}")
    print(f"protocol {protocol} ({info['library']} {info['version']}, iouType {info['iou_type']}); "
          f"corrections cumulative, top to bottom")
    print(format_diagnosis(diagnosis))
    if args.out:
        write_json_atomic(args.out, {"diagnosis": diagnosis, **inputs_record(args, gt_path, context, records)},
                          indent=2)
    return 0
