"""Synthetic sets generated for a test module: ``with generated(root, "synthetic-coco"):`` generates them under
``root / "data"`` at size tiny and points POSEHARNESS_DATA and POSEHARNESS_RESULTS under ``root`` while inside."""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from poseharness.data.manifest import load_manifest
from poseharness.data.synthetic import generate


@contextlib.contextmanager
def generated(root: Path, *names: str, size: str = "tiny"):
    mp = pytest.MonkeyPatch()
    mp.setenv("POSEHARNESS_DATA", str(root / "data"))
    mp.setenv("POSEHARNESS_RESULTS", str(root / "results"))
    try:
        for name in names:
            generate(load_manifest(name), size, jobs=1, progress=False)
        yield root
    finally:
        mp.undo()
