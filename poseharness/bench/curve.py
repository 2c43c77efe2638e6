"""``poseharness bench curve``: a learning curve, the figures of a training's snapshots against its steps and time.

A run trained with ``poseharness train --keep-every N`` keeps ``snapshots/step-NNNNNN.pt`` every N optimiser steps
(:mod:`poseharness.checkpoint`). Each snapshot is predicted with the given variants on a split and scored with the
dataset's official protocol (no record is written: a snapshot is not a result of the table), giving one row per
(snapshot, variant): the step, the training's wall seconds up to it (what the checkpoint says), the CPU-minutes
(wall seconds x the training's compute threads, given on the command line since the checkpoint does not know them)
and the protocol's figures. The rows go to JSON; ``--plot`` draws AP against steps and against CPU-minutes.

This is how the CPU scales of ``method.yaml`` are chosen: the step at which a schedule stops paying is read off it.
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


def plot_rows(rows: list[dict], title: str, path: Path) -> None:
    """AP (%) against optimiser steps and against CPU-minutes, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        for ax, x in zip(axes, ("step", "cpu_minutes")):
            ax.plot([r[x] for r in mine], [100 * r["AP"] for r in mine], marker="o", label=variant)
    axes[0].set_xlabel("optimiser steps")
    axes[1].set_xlabel("CPU-minutes (wall seconds x compute threads)")
    axes[0].set_ylabel("AP (%)")
    axes[0].legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "curve", help="a learning curve: score every snapshot of a training run",
        description="Predicts every snapshots/step-*.pt of RUN_DIR (kept by `train --keep-every N`) with each "
                    "variant on a split and prints AP against optimiser steps and CPU-minutes.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training's run directory")
    p.add_argument("--variant", action="append", required=True, help="repeatable: decoders to score")
    p.add_argument("--dataset", required=True, help="dataset manifest name or path")
    p.add_argument("--split", default="val")
    p.add_argument("--threads", type=int, default=1, help="compute threads the training ran with (default 1)")
    p.add_argument("--out", metavar="CURVE.json", help="write the rows here")
    p.add_argument("--plot", metavar="CURVE.png", help="draw AP against steps and CPU-minutes here")
    p.set_defaults(func=cmd_bench_curve)


def cmd_bench_curve(args: argparse.Namespace) -> int:
    from ..contract import resolve_manifest

    run_dir = Path(args.run_dir)
    rows = curve_rows(run_dir, args.variant, resolve_manifest(args.dataset), args.split, args.threads)
    print(format_rows(rows))
    if args.out:
        write_json_atomic(args.out, {"run_dir": str(run_dir), "dataset": args.dataset, "split": args.split,
                                     "threads": args.threads, "rows": rows}, indent=2)
    if args.plot:
        plot_rows(rows, f"{run_dir} on {args.dataset} {args.split}", Path(args.plot))
    return 0
