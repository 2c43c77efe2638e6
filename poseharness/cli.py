"""The ``poseharness`` command line. Each area registers its own verbs; this module only dispatches.

Every verb is a thin wrapper over library functions, so each step runs (and is tested) without Snakemake.
A :class:`~poseharness.errors.HarnessError` becomes a one-paragraph message on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import HarnessError

# Modules that expose ``register(subparsers)``; each adds its verbs with ``set_defaults(func=...)``.
COMMAND_MODULES = (
    "poseharness.data.commands",
    "poseharness.eval.commands",
    "poseharness.store.commands",
    "poseharness.oracle",
    "poseharness.train_commands",
    "poseharness.bench.commands",
    "poseharness.report.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poseharness",
        description="Reproducible benchmark and ablation harness for multi-person 2D pose estimation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)   # builds from the method directories too (their benches)
        return int(args.func(args) or 0)
    except HarnessError as exc:
        print(f"poseharness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("poseharness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
