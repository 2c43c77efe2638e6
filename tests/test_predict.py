"""The predictor on a toy checkpoint: results, evaluation and a trained record; batching; bad checkpoints."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from poseharness import checkpoint as ckpt
from poseharness.contract import resolve_method
from poseharness.data import synthetic
from poseharness.data.manifest import load_manifest
from poseharness.errors import HarnessError
from poseharness.eval.evaluate import evaluate
from poseharness.io import file_digest
from poseharness.predict import predict
from poseharness.store.store import read_record
from poseharness.train import train

TOY = Path(__file__).resolve().parent / "fixtures" / "methods" / "toy"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data root, final.pt of a 6-step toy training, last.pt of the same run at step 3)."""
    root = tmp_path_factory.mktemp("predict")
    old = os.environ.get("POSEHARNESS_DATA")
    os.environ["POSEHARNESS_DATA"] = str(root / "data")
    try:
        manifest = load_manifest("synthetic-coco")
        synthetic.generate(manifest, size="tiny", jobs=1, progress=False)
        # checkpoint_every 3 keeps last.pt of step 3 until the end; copy it aside first by training to 3.
        partial = train(resolve_method(TOY), "base", manifest, "tiny", size="tiny", steps=6, checkpoint_every=3,
                        out=root / "run", progress=False, device="cpu", log=lambda *_: None)
    finally:
        if old is None:
            del os.environ["POSEHARNESS_DATA"]
        else:
            os.environ["POSEHARNESS_DATA"] = old
    state = torch.load(partial.checkpoint, weights_only=True)
    ckpt.save_checkpoint(root / "incomplete.pt", {**state, "complete": False, "step": 3})
    return root / "data", partial.checkpoint, root / "incomplete.pt"


@pytest.fixture
def env(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(trained[0]))
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "results"))
    return tmp_path


def test_predict_writes_results_evaluates_and_records(env, trained):
    final = trained[1]
    manifest = load_manifest("synthetic-coco")
    out = predict(final, "top1", manifest, "val", batch=5, progress=False, device="cpu")
    pred = out["predictions"]
    assert pred == env / "results" / "predictions" / "trained" / "synthetic-coco" / "val" / "toy" / "top1" / \
        "tiny-seed0.json"
    records = json.loads(pred.read_text())
    gt = json.loads(manifest.annotation_path("val", "tiny").read_text())
    # One person per image (the toy decoder), mapped from the padded 64 px square back to the original image:
    # the square covers [-0.5, L - 0.5] with L the long side, and peaks sit on whole input pixels i, i.e. at
    # s·(i + 0.5) - 0.5 with s = L / 64 (an untrained net may also peak in the padding).
    assert sorted(r["image_id"] for r in records) == sorted(im["id"] for im in gt["images"])
    long_side = {im["id"]: max(im["width"], im["height"]) for im in gt["images"]}
    for r in records:
        kp = np.array(r["keypoints"]).reshape(17, 3)
        kp = kp[kp[:, 2] > 1e-6]                       # found keypoints (missing ones are written as 0, 0)
        assert len(kp)
        s = long_side[r["image_id"]] / 64
        assert (kp[:, :2] >= -0.5).all() and (kp[:, :2] <= 64 * s - 0.5).all()
        i = (kp[:, :2] + 0.5) / s - 0.5
        np.testing.assert_allclose(i, np.round(i), atol=1e-6)
    assert out["metrics"] == evaluate(pred, manifest.annotation_path("val", "tiny"), "coco")

    rec = read_record(out["record"])
    assert (rec.kind, rec.method, rec.variant, rec.scale, rec.seed, rec.dataset) == \
        ("trained", "toy", "top1", "tiny", 0, "synthetic-coco")
    assert rec.predictions == {"path": str(pred), "sha256": file_digest(pred)}
    assert rec.config["checkpoint"]["sha256"] == file_digest(final)
    assert rec.config["checkpoint"]["path"] == str(final.resolve()) and rec.config["checkpoint"]["complete"]
    assert rec.config["decode"] == {"threshold": 0.0, "flip": False} and rec.config["variant"] == "top1"
    assert rec.config["dataset"] == {"name": "synthetic-coco", "kind": "synthetic", "size": "tiny", "seed": 0}
    assert rec.config["predict"]["input"] == 64 and rec.metrics["AP"] == out["metrics"]["AP"]
    assert set(rec.timings) == {"setup", "model", "decode", "evaluate", "diagnose"}
    assert rec.diagnosis["ap"]["original"]["AP"] == pytest.approx(rec.metrics["AP"], abs=1e-12)


def test_batching_does_not_change_predictions(env, trained):
    manifest = load_manifest("synthetic-coco")
    a = predict(trained[1], "top1", manifest, out=env / "a.json", batch=1, write=False, progress=False, device="cpu")
    b = predict(trained[1], "top1", manifest, out=env / "b.json", batch=7, write=False, progress=False, device="cpu")
    ra, rb = json.loads(a["predictions"].read_text()), json.loads(b["predictions"].read_text())
    assert [r["image_id"] for r in ra] == [r["image_id"] for r in rb]
    np.testing.assert_allclose([r["score"] for r in ra], [r["score"] for r in rb], atol=1e-5)
    # Convolutions of another batch size round differently; on a barely trained net's flat maps that can move
    # an argmax between near-equal pixels. A batching bug (images mixed up) would move nearly all of them.
    ka, kb = np.array([r["keypoints"] for r in ra]), np.array([r["keypoints"] for r in rb])
    assert np.mean(np.abs(ka - kb) < 1e-3) > 0.97


def test_flip_test_goes_through_merge_flip(env, trained):
    manifest = load_manifest("synthetic-coco")
    plain = predict(trained[1], "top1", manifest, out=env / "plain.json", write=False, progress=False, device="cpu")
    flipped = predict(trained[1], "top1_flip", manifest, out=env / "flip.json", write=False, progress=False,
                      device="cpu")
    forced = predict(trained[1], "top1", manifest, out=env / "forced.json", flip=True, write=False, progress=False,
                     device="cpu")
    assert flipped["config"]["predict"]["flip"] and forced["config"]["decode"]["flip"]
    assert (env / "flip.json").read_text() == (env / "forced.json").read_text()
    assert (env / "flip.json").read_text() != (env / "plain.json").read_text()


def test_variant_of_another_training_and_other_schema_are_refused(env, trained):
    with pytest.raises(HarnessError, match=r"final\.pt: field training: the checkpoint is of training 'base', "
                                           r"but variant 'wide'"):
        predict(trained[1], "wide", load_manifest("synthetic-coco"), progress=False, device="cpu")
    with pytest.raises(HarnessError, match=r"final\.pt: field config\.schema: the model predicts 'coco17'"):
        predict(trained[1], "top1", load_manifest("synthetic-crowdpose"), progress=False, device="cpu")
    with pytest.raises(HarnessError, match=r"has no variant 'nope'"):
        predict(trained[1], "nope", load_manifest("synthetic-coco"), progress=False, device="cpu")


def test_foreign_head_layout_and_corrupt_checkpoints_are_refused(env, trained):
    state = torch.load(trained[1], weights_only=True)
    state["model"]["heatmaps.weight"] = state["model"]["heatmaps.weight"][:14]
    state["model"]["heatmaps.bias"] = state["model"]["heatmaps.bias"][:14]
    ckpt.save_checkpoint(env / "heads.pt", state)
    with pytest.raises(HarnessError, match=r"heads\.pt: field model\.heatmaps\.weight: shape \(14, 16, 1, 1\) in "
                                           r"the checkpoint, \(17, 16, 1, 1\)"):
        predict(env / "heads.pt", "top1", load_manifest("synthetic-coco"), progress=False, device="cpu")
    state = torch.load(trained[1], weights_only=True)
    ckpt.save_checkpoint(env / "other.pt", {**state, "method": "gog", "training": "precise"})
    with pytest.raises(HarnessError, match=r"other\.pt: field method: the checkpoint is of method 'gog', not 'toy'"):
        predict(env / "other.pt", "top1", load_manifest("synthetic-coco"), method=str(TOY), progress=False)
    (env / "bad.pt").write_bytes(trained[1].read_bytes()[:-100])
    with pytest.raises(HarnessError, match=r"bad\.pt: not a readable checkpoint"):
        predict(env / "bad.pt", "top1", load_manifest("synthetic-coco"), progress=False)


def test_cli_predict_incomplete_checkpoint_warns_and_records_it(env, trained):
    done = subprocess.run(
        [sys.executable, "-m", "poseharness", "predict", "--checkpoint", str(trained[2]), "--variant", "top1",
         "--dataset", "synthetic-coco", "--quiet", "--device", "cpu", "--limit", "5"],
        capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "is not a complete training (3 of 6 steps)" in done.stderr
    record = Path(done.stdout.split("record: ")[1].strip())
    rec = read_record(record)
    assert rec.config["checkpoint"]["complete"] is False and rec.config["checkpoint"]["step"] == 3
    assert rec.config["limit"] == 5 and len(json.loads(Path(rec.predictions["path"]).read_text())) <= 5
    assert "AP" in done.stdout and "toy/top1 on synthetic-coco/val: 5 images" in done.stdout


def test_no_detections_give_an_empty_results_file_scored_zero(env, trained):
    out = predict(trained[1], "none", load_manifest("synthetic-coco"), progress=False, device="cpu")
    assert out["persons"] == 0 and json.loads(out["predictions"].read_text()) == []
    assert out["metrics"]["AP"] == 0.0 and read_record(out["record"]).metrics["AR"] == 0.0
