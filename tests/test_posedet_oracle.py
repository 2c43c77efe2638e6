"""PoseDet's ground-truth side: the 15th CrowdPose point, the coarse assignment, decode(encode(ground truth)) as
the oracle on synthetic CrowdPose (with and without the pose NMS), Figure 3's ground-truth candidates, and a short
train + predict through the pipeline."""

import numpy as np
import pytest
from conftest import tiny_synthetic, use_store
import torch

from poseharness.contract import method_module, method_submodule, resolve_method
from poseharness.data.manifest import load_manifest
from poseharness.data.sample import Sample
from poseharness.oracle import run_oracle


@pytest.fixture(scope="module")
def spec():
    return resolve_method("posedet")


@pytest.fixture(scope="module")
def crowd_root(tmp_path_factory):
    return tiny_synthetic(tmp_path_factory, "synthetic-crowdpose")


@pytest.fixture
def crowd_env(crowd_root, tmp_path, monkeypatch):
    return use_store(monkeypatch, crowd_root, tmp_path)


def test_extra_point_is_the_mean_of_labelled_shoulders_and_hips(spec):
    a = method_submodule(spec, "assignment")
    kp = np.zeros((3, 14, 3), np.float32)
    kp[:, [0, 1, 6, 7], :2] = [[10, 20], [30, 20], [12, 60], [28, 60]]
    kp[0, [0, 1, 6, 7], 2] = 2                  # all four
    kp[1, [0, 1, 6], 2] = 1                     # three: the mean of those three
    kp[2, [0, 1], 2] = 2                        # two: not labelled
    out = a.with_extra_point(kp, "crowdpose14")
    assert out.shape == (3, 15, 3) and a.num_points("crowdpose14") == 15 and a.num_points("coco17") == 17
    np.testing.assert_allclose(out[0, 14], [20, 40, 2])
    np.testing.assert_allclose(out[1, 14], [(10 + 30 + 12) / 3, (20 + 20 + 60) / 3, 2], rtol=1e-6)
    np.testing.assert_allclose(out[2, 14], [0, 0, 0])
    assert a.with_extra_point(np.zeros((1, 17, 3)), "coco17").shape == (1, 17, 3)


def test_level_and_contested_candidate(spec):
    a = method_submodule(spec, "assignment")
    strides = (8, 16, 32)
    assert a.level_of(32, 32, strides) == 0          # log2(8) = 3 -> stride 8
    assert a.level_of(64, 64, strides) == 1
    assert a.level_of(400, 300, strides) == 2        # clamped
    assert a.level_of(2, 2, strides) == 0            # clamped
    # two persons of the same size whose centroids round to the same stride-16 cell: the closer one keeps it
    kp = np.zeros((2, 14, 3), np.float32)
    base = np.stack([np.linspace(-40, 40, 14), np.linspace(-40, 40, 14)[::-1]], 1)   # 80 x 80: stride 16
    kp[0, :, :2] = base + [64 + 5, 64]
    kp[1, :, :2] = base + [64 - 2, 64]
    kp[..., 2] = 2
    kp15 = a.with_extra_point(kp, "crowdpose14")
    res = a.assign(kp15, np.zeros((2, 4)), np.ones(2, bool), 14, strides, [(32, 32), (16, 16), (8, 8)])
    assert list(res.level) == [1, 1] and res.cell.tolist() == [[4, 4], [4, 4]]
    assert res.won.tolist() == [False, True]


def test_encode_decode_round_trip_is_exact(spec):
    mod = method_module(spec)
    cfg = spec.variant_config("posedet_nonms", "tiny")
    cfg["schema"] = "crowdpose14"
    rng = np.random.default_rng(1)
    kp = np.zeros((3, 14, 3), np.float32)
    for p, (cx, cy, r) in enumerate([(60, 60, 20), (180, 90, 50), (120, 190, 100)]):
        kp[p, :, 0] = cx + rng.uniform(-r, r, 14)
        kp[p, :, 1] = cy + rng.uniform(-r, r, 14)
        kp[p, :, 2] = 2
    kp[1, 3, :] = 0                                   # an unlabelled joint
    s = Sample(image_id=1, file_name="x", width=256, height=256, keypoints=kp, boxes=np.zeros((3, 4), np.float32),
               areas=np.ones(3, np.float32), iscrowd=np.zeros(3, bool), num_keypoints=np.full(3, 14))
    enc = {k: torch.from_numpy(v) for k, v in mod.encode(s, cfg).items()}
    poses, scores = mod.decode(enc, cfg)
    assert poses.shape == (3, 14, 3) and (scores > 0.99).all()
    for p in range(3):
        lab = kp[p, :, 2] > 0
        d = np.abs(poses[:, lab, :2] - kp[p, lab, :2]).max(axis=(1, 2))
        assert d.min() < 1e-4


def test_oracle_on_synthetic_crowdpose(spec, crowd_env):
    manifest = load_manifest("synthetic-crowdpose")
    bound = method_submodule(spec, "bound").assignment_bound(spec, manifest, "val", "tiny", size="tiny")
    assert bound["all"]["persons"] > 20 and 0 <= bound["all"]["share"] < 0.1
    variants = ["posedet_nonms", "posedet", "fig3_none", "fig3_oks_30", "fig3_iou_30"]
    rows = {r["variant"]: r for r in run_oracle(spec, manifest, "val", variants, scale="tiny", size="tiny",
                                                progress=False)}
    ap = {v: r["metrics"]["AP"] for v, r in rows.items()}
    hard = {v: r["metrics"]["AP_hard"] for v, r in rows.items()}
    assert ap["posedet_nonms"] >= 0.9 and ap["posedet"] >= 0.85
    assert ap["posedet"] <= ap["posedet_nonms"] + 1e-9
    assert ap["fig3_none"] > 0.999
    assert hard["fig3_oks_30"] >= hard["fig3_iou_30"]
    assert rows["posedet"]["record"] is not None


def test_train_and_predict_through_the_pipeline(spec, crowd_env):
    from poseharness.predict import predict
    from poseharness.train import train
    manifest = load_manifest("synthetic-crowdpose")
    run = train(spec, "full", manifest, "tiny", size="tiny", steps=2, out=crowd_env / "run", progress=False,
                device="cpu", log=lambda *_: None)
    assert run.complete and set(run.losses) >= {"coarse", "refine", "cls", "heatmap"}
    out = predict(run.checkpoint, "posedet", manifest, "val", progress=False, device="cpu", write=False,
                  out=crowd_env / "pred.json")
    assert out["images"] == 12 and 0 <= out["persons"] <= 100 * 12
    run2 = train(spec, "no_refine", manifest, "tiny", size="tiny", steps=1, out=crowd_env / "run2",
                 progress=False, device="cpu", log=lambda *_: None)
    assert "refine" not in run2.losses


def test_per_image_clamps_areas_and_caps_poses(spec):
    mod = method_module(spec)
    cfg = spec.variant_config("posedet", "tiny")
    cfg["schema"] = "crowdpose14"
    # two tiny identical-shape poses 3 px apart: their joint-extent areas (4 px²) are clamped to 32², so the OKS
    # is high and the worse one is suppressed (0.3)
    p = np.zeros((2, 14, 3))
    p[:, :, 0] = np.linspace(0, 2, 14)
    p[:, :, 1] = np.linspace(0, 2, 14)
    p[1, :, 0] += 3
    p[..., 2] = 1
    poses, scores = mod.per_image([p], [np.array([0.9, 0.8])], [None], cfg)
    assert len(poses) == 1 and scores[0] == 0.9
    many = np.random.default_rng(0).uniform(0, 5000, (300, 14, 3))
    many[..., 2] = 1
    poses, scores = mod.per_image([many], [np.linspace(1, 0.1, 300)], [None], cfg)
    assert len(poses) == 100
