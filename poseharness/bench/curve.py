"""``poseharness bench curve``: a learning curve, the figures of a training's snapshots against its steps and time.

A run trained with ``poseharness train --keep-every N`` keeps ``snapshots/step-NNNNNN.pt`` every N optimiser steps
(:mod:`poseharness.checkpoint`). Each snapshot is predicted with the given variants on a split and scored with the
dataset's official protocol (no record is written: a snapshot is not a result of the table), giving one row per
(snapshot, variant): the step, the training's wall seconds up to it (what the checkpoint says), the CPU-minutes
(wall seconds x the training's compute threads, given on the command line since the checkpoint does not know them)
and the protocol's figures. The rows go to JSON; ``--plot`` draws AP against steps and against CPU-minutes.

This is how the CPU scales of ``method.yaml`` are chosen: the step at which a schedule stops paying is read off it.
Written under ``<results>/curves/<method>/`` (the default ``--out``), a curve joins the report's learning-curve
plot of its method (:func:`poseharness.report.plots.curve_figure`).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..checkpoint import SNAPSHOTS, load_checkpoint
from ..errors import HarnessError
from ..io import write_json_atomic


def snapshots(run_dir: Path) -> list[Path]:
    """The snapshots of ``run_dir`` in step order; HarnessError when there are none."""
    found = sorted((run_dir / SNAPSHOTS).glob("step-*.pt"))
    if not found:
        raise HarnessError(f"{run_dir / SNAPSHOTS}: no snapshots (train with --keep-every N to keep them)")
    return found


def curve_label(run_dir: Path) -> dict:
    """What trained the snapshots of ``run_dir``: method, training, scale, seed and a short label."""
    state = load_checkpoint(snapshots(run_dir)[-1])
    ident = {k: state[k] for k in ("method", "training", "scale", "seed")}
    return {**ident, "label": f"{ident['training']} {ident['scale']} seed {ident['seed']}"}


def curve_rows(run_dir: Path, variants: list[str], manifest, split: str, threads: int) -> list[dict]:
    """One row per (snapshot, variant): step, seconds, cpu_minutes, variant and the protocol's figures."""
    from ..predict import predict

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in snapshots(run_dir):
            state = load_checkpoint(path)
            for variant in variants:
                out = predict(path, variant, manifest, split, out=Path(tmp) / "predictions.json", device="cpu",
                              write=False, progress=False)
                rows.append({"step": int(state["step"]), "total_steps": int(state["total_steps"]),
                             "seconds": float(state["seconds"]),
                             "cpu_minutes": float(state["seconds"]) * threads / 60.0, "variant": variant,
                             "persons": int(out["persons"]), **out["metrics"]})
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'step':>6} {'cpu-min':>8} {'variant':<16} {'AP':>6} {'AP50':>6} {'AR50':>6} {'persons':>8}"]
    for r in rows:
        lines.append(f"{r['step']:>6} {r['cpu_minutes']:>8.1f} {r['variant']:<16} {100 * r['AP']:>6.1f} "
                     f"{100 * r['AP50']:>6.1f} {100 * r.get('AR50', float('nan')):>6.1f} {r['persons']:>8}")
    return "\n".join(lines)


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "curve", help="a learning curve: score every snapshot of a training run",
        description="Predicts every snapshots/step-*.pt of RUN_DIR (kept by `train --keep-every N`) with each "
                    "variant on a split and prints AP against optimiser steps and CPU-minutes.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training's run directory")
    p.add_argument("--variant", action="append", required=True, help="repeatable: decoders to score")
    p.add_argument("--dataset", required=True, help="dataset manifest name or path")
    p.add_argument("--split", default="val")
    from ..argtypes import positive_int
    p.add_argument("--threads", type=positive_int, default=1, help="compute threads the training ran with (default 1)")
    p.add_argument("--out", metavar="CURVE.json",
                   help="write the rows here (default: <results>/curves/<method>/<training>-<scale>-seed<N>.json, "
                        "which the report plots)")
    p.add_argument("--plot", metavar="STEM", help="also draw AP against steps and CPU-minutes as STEM.png / .svg")
    p.set_defaults(func=cmd_bench_curve)


def cmd_bench_curve(args: argparse.Namespace) -> int:
    from .. import paths
    from ..contract import resolve_manifest
    from ..report.plots import curve_figure, save_figure

    run_dir = Path(args.run_dir)
    ident = curve_label(run_dir)
    rows = curve_rows(run_dir, args.variant, resolve_manifest(args.dataset), args.split, args.threads)
    print(format_rows(rows))
    doc = {**ident, "run_dir": str(run_dir), "dataset": args.dataset, "split": args.split, "threads": args.threads,
           "rows": rows}
    out = Path(args.out) if args.out else (paths.results_dir() / "curves" / ident["method"]
                                           / f"{ident['training']}-{ident['scale']}-seed{ident['seed']}.json")
    write_json_atomic(out, doc, indent=2)
    print(f"curve: {out}")
    if args.plot:
        for path in save_figure(curve_figure([doc], f"{ident['method']} on {args.dataset} {args.split}"),
                                Path(args.plot)):
            print(f"plot: {path}")
    return 0
