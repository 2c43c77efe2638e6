"""Where things live. Everything is relative to the project root unless overridden by environment.

``POSEHARNESS_ROOT``      project root (default: the checkout that holds this package)
``POSEHARNESS_DATA``      where datasets are prepared (default: ``<root>/datasets``)
``POSEHARNESS_RESULTS``   the results store (default: ``<root>/results``)
``POSEHARNESS_REPORTS``   generated reports (default: ``<root>/reports``)
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


def _dir(env: str, default: str) -> Path:
    value = os.environ.get(env)
    return Path(value).resolve() if value else project_root() / default


def data_dir() -> Path:
    return _dir("POSEHARNESS_DATA", "datasets")


def results_dir() -> Path:
    return _dir("POSEHARNESS_RESULTS", "results")


def reports_dir() -> Path:
    return _dir("POSEHARNESS_REPORTS", "reports")
