"""The ``poseharness`` command line. Each area registers its own verbs; this module only dispatches.

Every verb is a thin wrapper over library functions, so each step runs (and is tested) without Snakemake.
A :class:`~poseharness.errors.HarnessError`, an :class:`OSError` (a read-only folder, a full disk, a path below
a file...) and a pyarrow error (a corrupt table) become one message on stderr, ``poseharness: error: PATH:
PROBLEM``, and exit status 2; a warning the harness issues (e.g. a results file with far more predictions per
image than the evaluator keeps) is printed as ``poseharness: warning: ...``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

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


def os_error_message(exc: OSError) -> str:
    """``PATH: PROBLEM`` for an OSError (``SOURCE -> DEST: PROBLEM`` for a rename), without Python's decoration."""
    problem = exc.strerror or str(exc) or type(exc).__name__
    names = [os.fsdecode(n) if isinstance(n, (str, bytes, os.PathLike)) else str(n)
             for n in (exc.filename, exc.filename2) if n is not None]
    return f"{' -> '.join(names)}: {problem}" if names else problem


def _arrow_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a pyarrow error (checked without importing pyarrow, which only some verbs need)."""
    lib = sys.modules.get("pyarrow.lib")
    return lib is not None and isinstance(exc, getattr(lib, "ArrowException", ()))


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """The harness's own warnings as ``poseharness: warning: ...``; any other in Python's usual form."""
    if getattr(category, "__module__", "").startswith("poseharness"):
        print(f"poseharness: warning: {message}", file=file or sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    from . import paths

    try:
        args = build_parser().parse_args(argv)   # builds from the method directories too (their benches)
        paths.check_env_dirs()                   # POSEHARNESS_RESULTS & co. pointing at a file
        return int(args.func(args) or 0)
    except HarnessError as exc:
        print(f"poseharness: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"poseharness: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("poseharness: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not _arrow_error(exc):
            raise
        print(f"poseharness: error: {' '.join(str(exc).split()) or type(exc).__name__} (pyarrow "
              f"{type(exc).__name__})", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
