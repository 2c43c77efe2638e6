"""Where things live. Everything is relative to the project root unless overridden by environment.

``POSEHARNESS_ROOT``      project root (default: the checkout that holds this package)
``POSEHARNESS_DATA``      where datasets are prepared (default: ``<root>/datasets``)
``POSEHARNESS_RESULTS``   the results store (default: ``<root>/results``)
``POSEHARNESS_REPORTS``   generated reports (default: ``<root>/reports``)
``POSEHARNESS_CHECKPOINTS`` training run directories (default: ``<root>/checkpoints``; see ``checkpoint.py``)

A variable that points at a file (or below one) is a :class:`~poseharness.errors.HarnessError` naming the
variable and the path: :func:`check_env_dirs` checks them all (the CLI does, before any verb runs).
"""
from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    env = os.environ.get("POSEHARNESS_ROOT")
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent


def manifests_dir() -> Path:
    """Dataset manifests ``<name>.yaml`` (tracked in git, next to the ignored data folders)."""
    return project_root() / "datasets"


def methods_dir() -> Path:
    return project_root() / "methods"


#: The environment variables that name a folder (each may be set to one that does not exist yet).
DIR_VARIABLES = ("POSEHARNESS_ROOT", "POSEHARNESS_DATA", "POSEHARNESS_RESULTS", "POSEHARNESS_CHECKPOINTS",
                 "POSEHARNESS_REPORTS")


def env_dir(env: str, value: str) -> Path:
    """``value`` of the variable ``env`` as a resolved folder path, which need not exist yet.

    Raises HarnessError naming the variable and the path when it (or a folder above it) is a file, or
    otherwise not a folder, so nothing can ever be created there.
    """
    from .errors import HarnessError

    path = Path(value).resolve()
    for candidate in (path, *path.parents):
        try:
            if candidate.is_dir():
                break
            if candidate.exists():
                what = "is a file" if candidate.is_file() else "is not a folder"
                if candidate == path:
                    problem = f"{path} {what}, not a folder"
                else:
                    problem = f"{candidate} {what}, so {path} cannot be a folder"
                raise HarnessError(f"{env}={value}: {problem}; point {env} at a folder "
                                   f"(or at a path where one can be created)")
        except OSError as exc:   # e.g. a folder above it that cannot be searched
            raise HarnessError(f"{env}={value}: {exc.filename or candidate}: {exc.strerror or exc}") from None
    return path


def check_env_dirs() -> None:
    """Check every set ``POSEHARNESS_*`` folder variable (see :func:`env_dir`)."""
    for env in DIR_VARIABLES:
        value = os.environ.get(env)
        if value:
            env_dir(env, value)


def _dir(env: str, default: str) -> Path:
    value = os.environ.get(env)
    return env_dir(env, value) if value else project_root() / default


def data_dir() -> Path:
    return _dir("POSEHARNESS_DATA", "datasets")


def results_dir() -> Path:
    return _dir("POSEHARNESS_RESULTS", "results")


def reports_dir() -> Path:
    return _dir("POSEHARNESS_REPORTS", "reports")
