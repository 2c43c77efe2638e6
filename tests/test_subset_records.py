"""A quick look never replaces the real figure: ``--limit N`` records carry ``subset = first-N-images`` in their
key and their row, never supersede a full-split record, stay out of the report's tables, and ``--limit`` < 1 is
refused (oracle and predict, library and command line)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from poseharness.cli import main
from poseharness.contract import resolve_method
from poseharness.data.manifest import load_manifest
from poseharness.errors import HarnessError
from poseharness.io import file_digest
from poseharness.methods import load_method
from poseharness.oracle import run_oracle
from poseharness.predict import predict
from poseharness.report.tables import build_view, left_out
from poseharness.store import RunRecord, collect, load_table, write_record
from poseharness.store.record import check_limit, subset_name
from poseharness.provenance import config_hash
from poseharness.store.store import read_record, record_path
from poseharness.threads import torch_threads
from poseharness.train import train

from shared_data import SAMPLES

COCO_SAMPLE = SAMPLES / "mmpose_test_coco.json"
TOY = Path(__file__).resolve().parent / "fixtures" / "methods" / "toy"
PROV = {"code": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False, "describe": "x"},
        "versions": {"python": "3.11"}, "hardware": {"cpu": "Test CPU", "cores": 2}}


def _record(ap: float, limit: int | None = None, created: str | None = None) -> RunRecord:
    config = {"variant": "qnt"} if limit is None else {"variant": "qnt", "limit": limit}
    return RunRecord.new(kind="oracle", dataset="coco", split="val", method="gog", variant="qnt", scale="paper",
                         seed=0, metrics={"AP": ap}, config=config, dataset_kind="real",
                         predictions={"path": "p.json", "sha256": "0" * 64}, prov=PROV, created=created,
                         subset=subset_name(limit))


# ---------------------------------------------------------------------------------------------------------------
# The record and the table (no data needed)

def test_subset_is_part_of_the_key_and_a_newer_quick_look_supersedes_nothing(tmp_path):
    full = _record(0.8315, created="2024-01-01T00:00:00.000000+00:00")
    quick = _record(0.8485, limit=3, created="2024-01-02T00:00:00.000000+00:00")
    assert (full.subset, quick.subset) == ("full", "first-3-images")
    assert full.key[-1] == "full" and quick.key[-1] == "first-3-images" and full.key[:-1] == quick.key[:-1]
    write_record(full, tmp_path)
    write_record(quick, tmp_path)
    report = collect(tmp_path)
    assert (report.rows, len(report.superseded), len(report.bad)) == (2, 0, 0)
    df = load_table(tmp_path).set_index("subset")
    assert df.loc["full", "AP"] == 0.8315 and df.loc["first-3-images", "AP"] == 0.8485
    assert df.loc["full", "run_id"] == full.run_id and df.loc["first-3-images", "run_id"] == quick.run_id
    assert df.loc["full", "comparable_to_paper"] and not df.loc["first-3-images", "comparable_to_paper"]

    # the report's oracle table of gog shows the full split's figure, and counts the quick look as left out
    gog = load_method("gog")
    table = gog.tables()["oracle"]
    view = build_view(gog, table, load_table(tmp_path), bootstrap=None)
    [block] = view.blocks
    [row] = [r for r in block.rows if r.variant == "qnt"]
    assert row.reproduced["AP"].percent == pytest.approx(83.15)
    assert any("first-3-images" in reason for reason, _ in left_out(load_table(tmp_path), [gog]))


def test_a_quick_look_alone_is_not_tabled(tmp_path):
    write_record(_record(0.8485, limit=3), tmp_path)
    collect(tmp_path)
    gog = load_method("gog")
    view = build_view(gog, gog.tables()["oracle"], load_table(tmp_path), bootstrap=None)
    assert all(r.reproduced["AP"].status == "not run" for b in view.blocks for r in b.rows)


def test_subset_and_config_limit_must_agree_and_old_records_read(tmp_path):
    with pytest.raises(HarnessError, match=r"\[field subset\]: 'first-3-images' disagrees with config\.limit"):
        RunRecord.new(kind="oracle", dataset="coco", split="val", method="gog", variant="qnt", scale="paper",
                      seed=0, metrics={"AP": 0.5}, config={}, dataset_kind="real", prov=PROV,
                      predictions={"path": "p.json", "sha256": "0" * 64}, subset="first-3-images")
    with pytest.raises(HarnessError, match=r"\[field subset\]"):
        RunRecord.from_dict({**_record(0.5).to_dict(), "subset": "first-0-images"})
    # records written before the field: full, or first-N-images when their config says limit N; both stay readable
    # and, collected, keep apart
    old_full = _record(0.8315).to_dict()
    old_quick = _record(0.8485, limit=3).to_dict()
    old_empty = {**old_full, "config": {"variant": "qnt", "limit": 0},
                 "config_hash": config_hash({"variant": "qnt", "limit": 0})}
    for raw in (old_full, old_quick, old_empty):
        del raw["subset"]
    assert RunRecord.from_dict(old_full).subset == "full"
    assert RunRecord.from_dict(old_quick).subset == "first-3-images"
    with pytest.raises(HarnessError, match=r"\[field subset\]"):      # --limit 0 scored no image: a bad record
        RunRecord.from_dict(old_empty)
    for raw in (old_full, old_quick):
        path = record_path(tmp_path, RunRecord.from_dict(raw))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(raw))
    report = collect(tmp_path)
    assert (report.good, report.rows, len(report.superseded)) == (2, 2, 0)
    assert sorted(load_table(tmp_path)["subset"]) == ["first-3-images", "full"]


def test_limit_below_one_is_refused_everywhere(tmp_path, capsys):
    assert check_limit(None) is None and check_limit(3) == 3 and subset_name(None) == "full"
    for bad in (0, -1, True, 2.5):
        with pytest.raises(HarnessError, match="--limit must be"):
            check_limit(bad)
    gog = load_method("gog")
    with pytest.raises(HarnessError, match=r"--limit must be at least 1"):
        run_oracle(gog, load_manifest("coco"), "val", ["qnt"], "paper", progress=False, limit=0,
                   store_root=tmp_path)
    # predict refuses before it even opens the checkpoint
    with pytest.raises(HarnessError, match=r"--limit must be at least 1"):
        predict(tmp_path / "missing.pt", "top1", load_manifest("synthetic-coco"), limit=0, progress=False)
    assert main(["oracle", "--method", "gog", "--dataset", "coco", "--variant", "qnt", "--limit", "0",
                 "--quiet"]) == 2
    assert "--limit" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path / "missing.pt"), "--variant", "top1",
                 "--dataset", "synthetic-coco", "--limit", "0", "--quiet"]) == 2
    assert "--limit" in capsys.readouterr().err
    assert not (tmp_path / "records").exists()


# ---------------------------------------------------------------------------------------------------------------
# The oracle end to end on the real COCO sample (4 images)

@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "results"))
    with torch_threads(1):
        yield tmp_path


def test_oracle_limit_after_a_full_run_keeps_the_full_record(store, capsys):
    manifest = load_manifest("coco")
    dest = manifest.annotation_path("val")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(COCO_SAMPLE, dest)
    gog = load_method("gog")
    [full] = run_oracle(gog, manifest, "val", ["qnt"], "paper", progress=False)
    full_record = read_record(full["record"])
    assert full_record.subset == "full" and "limit" not in full_record.config

    assert main(["oracle", "--method", "gog", "--dataset", "coco", "--variant", "qnt", "--limit", "3",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "first-3-images" in out
    quick_record = read_record(Path(out.split("record: ")[1].strip()))
    assert quick_record.subset == "first-3-images" and quick_record.config["limit"] == 3
    assert quick_record.key[:-1] == full_record.key[:-1]
    # the quick look wrote its own results file; the full run's is untouched
    assert quick_record.predictions["path"] != full_record.predictions["path"]
    assert file_digest(full_record.predictions["path"]) == full_record.predictions["sha256"]

    report = collect(store / "results")
    assert (report.rows, len(report.superseded), len(report.bad)) == (2, 0, 0)
    df = load_table(store / "results")
    by_subset = df.set_index("subset")
    assert by_subset.loc["full", "run_id"] == full_record.run_id
    assert by_subset.loc["full", "AP"] == pytest.approx(full["metrics"]["AP"])
    assert by_subset.loc["first-3-images", "run_id"] == quick_record.run_id

    view = build_view(gog, gog.tables()["oracle"], df, root=store / "results", bootstrap=None)
    [block] = view.blocks
    [row] = [r for r in block.rows if r.variant == "qnt"]
    assert row.reproduced["AP"].percent == pytest.approx(100 * full["metrics"]["AP"])
    assert block.provenance[0].record == by_subset.loc["full", "record"]

    assert main(["results", "show", "--root", str(store / "results"), "--metrics", "AP"]) == 0
    shown = capsys.readouterr().out
    lines = shown.splitlines()
    assert "subset" in lines[0].split()
    [marked] = [line for line in lines if "*first-3-images" in line]
    [plain] = [line for line in lines[1:3] if " full " in f" {line} "]
    assert "False" in marked and "True" in plain
    assert "scored only the first N images" in shown


# ---------------------------------------------------------------------------------------------------------------
# predict on a toy checkpoint

@pytest.fixture(scope="module")
def toy(data_root, tmp_path_factory):
    """(data root, final.pt of a 2-step toy training on tiny synthetic-coco: conftest's ``data_root``)."""
    out = tmp_path_factory.mktemp("subset-predict") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSEHARNESS_DATA", str(data_root))
        run = train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=2,
                    checkpoint_every=2, out=out, progress=False, device="cpu", log=lambda *_: None)
    return data_root, run.checkpoint


def test_predict_limit_after_a_full_run_keeps_the_full_record(toy, tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(toy[0]))
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "results"))
    manifest = load_manifest("synthetic-coco")
    with torch_threads(1):
        full = predict(toy[1], "top1", manifest, "val", progress=False, device="cpu")
        quick = predict(toy[1], "top1", manifest, "val", progress=False, device="cpu", limit=3)
    full_record, quick_record = read_record(full["record"]), read_record(quick["record"])
    assert (full_record.subset, quick_record.subset) == ("full", "first-3-images")
    assert quick["images"] == 3 and full["images"] > 3
    assert quick["predictions"].name == "tiny-seed0.first-3-images.json"
    assert file_digest(full["predictions"]) == full_record.predictions["sha256"]
    report = collect(tmp_path / "results")
    assert (report.rows, len(report.superseded)) == (2, 0)
    df = load_table(tmp_path / "results").set_index("subset")
    assert df.loc["full", "run_id"] == full_record.run_id
    assert df.loc["first-3-images", "run_id"] == quick_record.run_id
    with pytest.raises(HarnessError, match=r"--limit must be at least 1"):
        predict(toy[1], "top1", manifest, "val", progress=False, device="cpu", limit=0)
