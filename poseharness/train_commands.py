"""``poseharness train`` and ``poseharness predict``: thin wrappers over :mod:`poseharness.train` and
:mod:`poseharness.predict`.

``--method`` takes a method's name (``methods/<name>/``) or the path of any method directory; ``--dataset`` a
manifest's name (``datasets/<name>.yaml``) or the path of a manifest file.
"""
from __future__ import annotations

import argparse

from .contract import resolve_manifest, resolve_method


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train one (method, training, scale) on a dataset's train split; resumes where it stopped",
        description="Trains the method's model with its targets and loss, the loader's augmentation and the "
                    "spec's Adam schedule; writes last.pt every --checkpoint-every steps and final.pt (marked "
                    "complete) at the end. Run again, the same command resumes from the last checkpoint, or does "
                    "nothing when final.pt is there. Under torchrun the same command trains with DDP.")
    p.add_argument("--method", required=True, help="method name or method directory")
    p.add_argument("--training", required=True, help="a training of the method's spec (method.yaml `trainings`)")
    p.add_argument("--dataset", required=True, help="dataset manifest name or path")
    p.add_argument("--scale", default="tiny", help="tiny | paper (a key of the spec's `scales`; default tiny)")
    p.add_argument("--seed", type=int, default=0, help="training seed: initialisation, data order, augmentation")
    p.add_argument("--out", metavar="DIR",
                   help="run directory (default checkpoints/<method>/<dataset>/<training>/<scale>-seed<N>/)")
    p.add_argument("--size", help="synthetic sets: which generated size (default: the manifest's)")
    p.add_argument("--data-seed", type=int, help="synthetic sets: which generator seed (default: the manifest's)")
    p.add_argument("--steps", type=int, help="override the schedule's length (optimiser steps)")
    p.add_argument("--workers", type=int, help="data-loader processes (default: the spec's)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: the spec's)")
    p.add_argument("--keep-every", type=int,
                   help="also keep snapshots/step-NNNNNN.pt every N steps, for `bench curve` (learning curves)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available) | cpu | cuda | cuda:N")
    p.add_argument("--no-amp", action="store_true", help="on CUDA, train in float32 instead of AMP")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--init-checkpoint", metavar="CKPT",
                   help="for a training with `init: {from: ...}`: the checkpoint to start from (default: final.pt "
                        "of the `from` training's run directory, same dataset, scale and seed)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "predict", help="run a checkpoint on a split with one variant's decoder, evaluate, write a trained record",
        description="Runs the model on every image (long side resized to the scale's input, aspect kept, padded), "
                    "decodes with the variant's settings (the variant must decode the checkpoint's training), "
                    "optionally with the flip test, writes the COCO results, scores them with the dataset's "
                    "protocol and writes a `trained` record to the results store.")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="a final.pt (or last.pt) of `train`")
    p.add_argument("--variant", required=True, help="a variant of the method's spec")
    p.add_argument("--dataset", required=True, help="dataset manifest name or path")
    p.add_argument("--split", default="val")
    p.add_argument("--out", metavar="RESULTS.json",
                   help="results file (default results/predictions/trained/<dataset>/<split>/<method>/<variant>/"
                        "<scale>-seed<N>.json)")
    flip = p.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_true", default=None,
                      help="flip test on (default: the variant's decode.flip)")
    flip.add_argument("--no-flip", dest="flip", action="store_false", help="flip test off")
    p.add_argument("--detections", metavar="DETECTIONS.json",
                   help="top-down methods: person boxes from this COCO detection-results file (its scores reach the "
                        "pose scores) instead of the ground-truth boxes")
    p.add_argument("--size", help="synthetic sets: which generated size (default: the training's, same dataset)")
    p.add_argument("--seed", type=int, help="synthetic sets: which generator seed (default: the training's)")
    p.add_argument("--method", help="load the method from this name / directory instead of the checkpoint's")
    p.add_argument("--batch", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--workers", type=int, default=0, help="data-loader processes (default 0)")
    p.add_argument("--limit", type=int, help="only the first N images: a quick look, recorded as subset "
                                             "first-N-images and never used in tables")
    p.add_argument("--device", default="auto", help="auto (CUDA if available) | cpu | cuda | cuda:N")
    p.add_argument("--no-amp", action="store_true", help="on CUDA, run in float32 instead of AMP")
    p.add_argument("--no-record", action="store_true", help="write the results file only, no record")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


def cmd_train(args: argparse.Namespace) -> int:
    from .train import RunOptions, train

    options = RunOptions(out=args.out, size=args.size, data_seed=args.data_seed, steps=args.steps,
                         workers=args.workers, checkpoint_every=args.checkpoint_every, keep_every=args.keep_every,
                         device=args.device, amp=not args.no_amp, progress=not args.quiet,
                         init_checkpoint=args.init_checkpoint)
    train(resolve_method(args.method), args.training, resolve_manifest(args.dataset), args.scale, seed=args.seed,
          options=options)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import PredictOptions, predict

    manifest = resolve_manifest(args.dataset)
    options = PredictOptions(out=args.out, flip=args.flip, size=args.size, data_seed=args.seed, method=args.method,
                             detections=args.detections, batch=args.batch, workers=args.workers,
                             device=args.device, amp=not args.no_amp, write=not args.no_record,
                             progress=not args.quiet, limit=args.limit)
    result = predict(args.checkpoint, args.variant, manifest, args.split, options)
    m = result["metrics"]
    t = result["timings"]
    cfg = result["config"]
    print(f"{cfg['method']}/{args.variant} on {manifest.name}/{args.split}: {result['images']} images, "
          f"{result['persons']} persons predicted; protocol {manifest.protocol}")
    print("  ".join(f"{k} {100 * v:.1f}" if v >= 0 else f"{k} -" for k, v in m.items()))
    print(f"model {t['model']:.2f} s ({result['images'] / t['model'] if t['model'] else 0:.1f} img/s), "
          f"decode {t['decode']:.2f} s, evaluate {t['evaluate']:.2f} s")
    if manifest.kind != "real" or cfg["scale_name"] != "paper":
        print(f"note: {manifest.name} ({manifest.kind}) at scale {cfg['scale_name']}: not comparable to the "
              f"paper's figures")
    print(f"results: {result['predictions']}")
    if result["record"]:
        print(f"record: {result['record']}")
    return 0
