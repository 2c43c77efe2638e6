"""Fixtures shared by the trainer's tests: a tiny synthetic-coco set and a results / checkpoint store per test."""
import os

import pytest

from poseharness.data import synthetic
from poseharness.data.manifest import load_manifest


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A tiny synthetic-coco generated once per test module (POSEHARNESS_DATA restored afterwards)."""
    root = tmp_path_factory.mktemp("data")
    old = os.environ.get("POSEHARNESS_DATA")
    os.environ["POSEHARNESS_DATA"] = str(root)
    try:
        synthetic.generate(load_manifest("synthetic-coco"), size="tiny", jobs=1, progress=False)
    finally:
        if old is None:
            del os.environ["POSEHARNESS_DATA"]
        else:
            os.environ["POSEHARNESS_DATA"] = old
    return root


@pytest.fixture
def env(data_root, tmp_path, monkeypatch):
    """The tiny data, and this test's own results and checkpoints folders."""
    monkeypatch.setenv("POSEHARNESS_DATA", str(data_root))
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("POSEHARNESS_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path
