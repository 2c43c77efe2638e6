"""GOG's representation end to end: encode ground truth, decode, group, evaluate (no network)."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from poseharness.data.manifest import load_manifest
from poseharness.data.sample import Sample
from poseharness.methods import load_method
from poseharness.config import variant_config
from poseharness.oracle import run_oracle
from poseharness.store.collect import collect
from poseharness.threads import torch_threads

from shared_data import CROWDPOSE_VAL, SAMPLES

COCO_SAMPLE = SAMPLES / "mmpose_test_coco.json"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "results"))
    with torch_threads(1):  # small per-image maps: one thread is fastest (see `poseharness oracle --threads`)
        yield tmp_path


def place(manifest_name: str, split: str, source: Path) -> Path:
    m = load_manifest(manifest_name)
    dest = m.annotation_path(split)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, dest)
    return dest


def one_person(points, k=17, size=256):
    kp = np.zeros((1, k, 3), np.float32)
    for j, (x, y) in points.items():
        kp[0, j] = (x, y, 2)
    return Sample(image_id=1, file_name="x.jpg", width=size, height=size, keypoints=kp,
                  boxes=np.array([[20, 20, 200, 200]], np.float32), areas=np.array([40000.0], np.float32),
                  iscrowd=np.zeros(1, bool), num_keypoints=np.array([len(points)]))


def test_precise_bicubic_restores_integer_keypoints_exactly():
    gog = load_method("gog")
    cfg = variant_config(gog, "ours", "tiny", load_method_manifest())
    rng = np.random.default_rng(0)
    for _ in range(5):
        # isolated integer keypoints (well apart, so Gaussians of one type never meet)
        pts = {j: tuple(rng.integers(10, 246, size=2).astype(float)) for j in (5, 6, 11, 12)}
        sample = one_person(pts)
        targets = {k: torch.from_numpy(v) for k, v in gog.module.encode(sample, cfg).items()}
        poses, scores = gog.module.decode(targets, cfg)
        assert len(poses) == 1
        for j, (x, y) in pts.items():
            assert abs(poses[0, j, 0] - x) < 1e-3 and abs(poses[0, j, 1] - y) < 1e-3
            assert poses[0, j, 2] == pytest.approx(1.0, abs=0.02)  # bicubic overshoots a little


def test_gog_scores_persons_as_the_official_code_unless_the_variant_asks_for_the_paper_text():
    # Official evaluate.py: sum(v) / 17, missing keypoints as 0 (the published figures); ours_mean: the mean of
    # the found keypoints (the paper's text). Both through the module's decode, i.e. the resolved cfg.
    gog = load_method("gog")
    pts = {5: (60.0, 60.0), 6: (120.0, 60.0), 11: (64.0, 160.0), 12: (116.0, 160.0)}
    targets = {k: torch.from_numpy(v) for k, v in gog.module.encode(one_person(pts), variant_config(
        gog, "ours", "tiny", load_method_manifest())).items()}
    found = {}
    for variant in ("ours", "ours_mean"):
        cfg = variant_config(gog, variant, "tiny", load_method_manifest())
        poses, scores = gog.module.decode(targets, cfg)
        assert len(poses) == 1 and (poses[0, :, 2] > 0).sum() == 4
        found[cfg["decode"]["score_mode"]] = (float(scores[0]), poses[0, :, 2])
    assert set(found) == {"sum_over_K", "mean"}
    score, v = found["sum_over_K"]
    assert score == pytest.approx(v.sum() / 17, rel=1e-6)
    score, v = found["mean"]
    assert score == pytest.approx(v[v > 0].mean(), rel=1e-6)


def load_method_manifest():
    return load_manifest("synthetic-coco")


def test_oracle_on_real_coco_sample(store):
    place("coco", "val", COCO_SAMPLE)
    gog = load_method("gog")
    rows = run_oracle(gog, load_manifest("coco"), "val", ["ours", "limbs44", "qnt"], "paper", progress=False)
    ap = {r["variant"]: r["metrics"]["AP"] for r in rows}
    # 4 real images, 12 annotated persons: the representation keeps most of them
    assert ap["ours"] > 0.7 and ap["limbs44"] >= ap["ours"] - 1e-9
    report = collect(store / "results")
    assert report.good == 3 and not report.bad
    assert all(Path(r["record"]).exists() for r in rows)


@pytest.mark.skipif(not CROWDPOSE_VAL.exists(), reason="real CrowdPose val annotations not in ../shared")
def test_oracle_directions_on_real_crowdpose(store):
    place("crowdpose", "val", CROWDPOSE_VAL)
    gog = load_method("gog")
    rows = run_oracle(gog, load_manifest("crowdpose"), "val", ["ours", "limbs44", "qnt", "ours_bilinear"],
                      "paper", progress=False, limit=120, write=False)
    ap = {r["variant"]: r["metrics"]["AP"] for r in rows}
    # the paper's findings in direction: denser limbs help, precise beats quantised, bicubic ≥ bilinear
    assert ap["limbs44"] > ap["ours"] > ap["qnt"]
    assert ap["ours"] >= ap["ours_bilinear"]
    assert 0.6 < ap["ours"] < 1.0


def test_oracle_on_tiny_synthetic_split(store):
    from poseharness.data.synthetic import generate

    manifest = load_manifest("synthetic-coco")
    generate(manifest, size="tiny", jobs=1, progress=False)
    gog = load_method("gog")
    rows = run_oracle(gog, manifest, "val", ["ours", "limbs44", "r1"], "tiny", size="tiny", progress=False)
    ap = {r["variant"]: r["metrics"]["AP"] for r in rows}
    assert 0.6 < ap["ours"] <= 1.0
    assert ap["limbs44"] >= ap["ours"] and ap["r1"] >= ap["ours"]


def test_torch_threads_sets_the_count_and_restores_it_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(0):                    # at least one thread
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
