"""Simple Pose's oracle end to end: synthetic ground truth encoded as training would, assigned, evaluated."""
import json

import pytest
from synthetic_sets import generated

from poseharness.data.manifest import load_manifest
from poseharness.methods import load_method
from poseharness.cli import main
from poseharness.oracle import run_oracle
from poseharness.store.store import iter_records

VARIANTS = ["parts30", "parts21", "paf"]


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    with generated(tmp_path_factory.mktemp("sp_oracle"), "synthetic-coco", "synthetic-ochuman") as root:
        yield root


@pytest.fixture
def env(tiny_sets, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tiny_sets / "data"))
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tiny_sets / "results"))
    return tiny_sets


def test_oracle_reaches_a_high_ap_on_synthetic_coco(env):
    rows = run_oracle(load_method("simple_pose"), load_manifest("synthetic-coco"), "val", VARIANTS, "tiny",
                      size="tiny", progress=False, store_root=env / "store")
    ap = {r["variant"]: r["metrics"]["AP"] for r in rows}
    assert ap["parts30"] >= 0.95 and ap["paf"] >= 0.95 and ap["parts21"] >= 0.9
    assert ap["parts30"] >= ap["parts21"]
    for r in rows:
        record = json.loads(r["record"].read_text())
        assert record["kind"] == "oracle" and record["method"] == "simple_pose" and record["scale"] == "tiny"
        assert record["config"]["encoding"]["parts"] == (21 if r["variant"] == "parts21" else 30)
        assert r["persons"] > 0


def test_redundant_parts_help_where_persons_overlap(env):
    rows = run_oracle(load_method("simple_pose"), load_manifest("synthetic-ochuman"), "val", VARIANTS, "tiny",
                      size="tiny", progress=False, write=False)
    ap = {r["variant"]: r["metrics"]["AP"] for r in rows}
    assert ap["parts30"] >= 0.85 and ap["parts30"] > ap["parts21"]


def test_oracle_command_line(env, capsys):
    assert main(["oracle", "--method", "simple_pose", "--dataset", "synthetic-coco", "--split", "val",
                 "--variant", "parts30", "--scale", "tiny", "--size", "tiny", "--limit", "4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "parts30" in out and "not comparable" in out
    records = list(iter_records(env / "results"))
    assert any(r.method == "simple_pose" and r.variant == "parts30" and r.config.get("limit") == 4 for r in records)
