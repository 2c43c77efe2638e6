"""Hourglass backbones and heads, and GOG's network, loss and flip-test merge (methods/gog/model.py)."""
import numpy as np
import pytest
import torch

from poseharness.contract import method_module
from poseharness.data.augment import transform_sample
from poseharness.data.loader import PoseDataset, collate
from poseharness.data.manifest import load_manifest
from poseharness.data.sample import Sample
from poseharness.data.synthetic import generate
from poseharness.errors import HarnessError
from poseharness.methods import load_method
from poseharness.models import StackedHourglass, StackHeads, conv_head, parameter_count
from poseharness.schemas import get_schema

GOG = load_method("gog")
MOD = GOG.module
SIZE = 256


def training_cfg(scale="tiny", training="precise", schema="coco17"):
    cfg = GOG.training_config(training, scale)
    cfg["schema"] = schema
    return cfg


def variant_cfg(variant="ours", scale="tiny"):
    cfg = GOG.variant_config(variant, scale)
    cfg["schema"] = "coco17"
    return cfg


def test_method_module_exports_the_network_contract():
    module = method_module(GOG)
    assert module.build_model is module.model.build_model
    assert module.loss is module.model.loss and module.merge_flip is module.model.merge_flip


def test_tiny_model_shapes_and_initial_outputs():
    torch.manual_seed(0)
    model = MOD.build_model(training_cfg())
    print(f"\ntiny GOG model: {parameter_count(model):,} parameters")
    outs = model(torch.randn(2, 3, SIZE, SIZE))
    assert isinstance(outs, list) and len(outs) == 1
    shapes = {k: tuple(v.shape) for k, v in outs[-1].items()}
    assert shapes == {"heatmaps": (2, 17, 64, 64), "offsets": (2, 38, 64, 64), "refine": (2, 2, 64, 64)}
    # heads start at their bias (0): no background response for the focal loss to unlearn
    assert outs[-1]["heatmaps"].abs().max() < 0.05


def test_heads_follow_schema_and_skeleton():
    model = MOD.build_model(training_cfg(training="limbs44", schema="crowdpose14"))
    out = model(torch.randn(1, 3, 128, 128))[-1]
    limbs = len(get_schema("crowdpose14").skeleton("gog_crowdpose37"))
    assert out["heatmaps"].shape == (1, 14, 32, 32) and out["offsets"].shape == (1, 2 * limbs, 32, 32)


def test_paper_model_is_hourglass104():
    torch.manual_seed(0)
    cfg = training_cfg("paper")
    model = MOD.build_model(cfg)
    backbone, total = parameter_count(model.backbone), parameter_count(model)
    print(f"\nHourglass-104 backbone: {backbone:,} parameters; with GOG's 1x1 heads: {total:,}")
    # The official code's own count of CenterNet's Hourglass-104 (thop): "187.700M" [R: models/hourglass_104.py]
    assert backbone == 187_700_352
    assert total - backbone == 2 * (17 + 38 + 2) * (256 + 1)       # one 1x1 conv (weights + bias) per head and stack
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 128, 128))
    assert len(outs) == 2
    for out in outs:
        assert out["heatmaps"].shape == (1, 17, 32, 32) and out["offsets"].shape == (1, 38, 32, 32)


def test_hourglass_settings():
    net = StackedHourglass(stacks=2, depth=2, channels=[8, 12, 16], residuals=1, out_channels=6)
    feats = net(torch.randn(1, 3, 200, 200))                # 200/4 = 50 is not divisible by 2^2: still works
    assert [tuple(f.shape) for f in feats] == [(1, 6, 50, 50)] * 2
    with pytest.raises(ValueError, match="depth \\+ 1 = 3"):
        StackedHourglass(depth=2, channels=[8, 8])


def test_heads_init_and_forms():
    centernet = conv_head(8, 3, hidden=16, bias=-2.19)
    assert [type(m) for m in centernet] == [torch.nn.Conv2d, torch.nn.ReLU, torch.nn.Conv2d]
    assert centernet[0].kernel_size == (3, 3) and torch.all(centernet[-1].bias == -2.19)
    x = torch.randn(2, 8, 5, 5)
    quiet = conv_head(8, 3, bias=0.5, init_std=0.0)
    assert torch.all(quiet(x) == 0.5)
    scaled = conv_head(8, 3, bias=0.5, init_std=0.0, scale=4.0)
    assert torch.all(scaled(x) == 2.0)
    with pytest.raises(ValueError, match="do not exist"):
        StackHeads(8, {"heatmaps": 17}, stacks=1, bias={"heatmap": 0.0})


def test_only_stride_4_trains():
    cfg = training_cfg()
    cfg["encoding"]["stride"] = 1
    with pytest.raises(HarnessError, match="encoding.stride is 1"):
        MOD.build_model(cfg)


# ----------------------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------------------

# One person, every keypoint labelled, integer positions at least 16 px apart (no two windows of the shared
# refinement map compete, so the encoding of the mirror image is exactly the mirror of the encoding).
POINTS = [(128, 40), (140, 28), (116, 28), (156, 44), (100, 44), (168, 76), (88, 76), (188, 112), (68, 112),
          (200, 148), (56, 148), (152, 152), (104, 152), (160, 196), (96, 196), (172, 236), (84, 236)]


def person_sample(ignore: bool = True) -> Sample:
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, :, :2] = POINTS
    kp[0, :, 2] = 2
    mask = None
    if ignore:
        mask = np.zeros((SIZE, SIZE), bool)
        mask[:, :40] = True                                 # an ignored strip (a crowd, say) on the left
    return Sample(image_id=1, file_name="x.jpg", width=SIZE, height=SIZE, keypoints=kp,
                  boxes=np.array([[50, 20, 100, 100]], np.float32), areas=np.array([20000.0], np.float32),
                  iscrowd=np.zeros(1, bool), num_keypoints=np.array([17]), ignore_mask=mask)


def mirrored(sample: Sample) -> Sample:
    """The sample seen in the horizontally mirrored image (x -> S-1-x, left/right keypoints swapped)."""
    m = np.array([[-1.0, 0.0, SIZE - 1.0], [0.0, 1.0, 0.0]])
    return transform_sample(sample, m, SIZE, flip_index=get_schema("coco17").flip_index)


def tensors(targets: dict) -> dict:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in targets.items()}


def batch(*samples, cfg) -> dict:
    items = [tensors(MOD.encode(s, cfg)) for s in samples]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def outputs_of(targets: dict) -> dict:
    return {k: targets[k].clone() for k in MOD.OUTPUTS}


def test_loss_is_zero_at_the_targets_and_positive_elsewhere():
    cfg = training_cfg()
    tg = batch(person_sample(), mirrored(person_sample()), cfg=cfg)
    terms = MOD.loss([outputs_of(tg)], tg, cfg)
    assert set(terms) == {"heatmap", "offset", "refine"}
    assert all(v.item() == 0.0 for v in terms.values())

    w = cfg["loss"]
    out = outputs_of(tg)
    out["offsets"] += 1.0
    out["refine"] += 1.0
    terms = MOD.loss([out], tg, cfg)
    # every supervised offset component is 1 px off, scale sqrt(100 * 100) = 100: sqrt(1/100) = 0.1 each;
    # refinement errors are in cells (stride 4): sqrt(1/4) = 0.5
    assert terms["offset"].item() == pytest.approx(w["offset"]["weight"] * 0.1, rel=1e-5)
    assert terms["refine"].item() == pytest.approx(w["refine"]["weight"] * 0.5, rel=1e-5)
    assert terms["heatmap"].item() == 0.0
    out = outputs_of(tg)
    out["heatmaps"] += 0.1
    assert MOD.loss([out], tg, cfg)["heatmap"].item() > 0


def test_loss_masks_exclude_cells():
    cfg = training_cfg()
    tg = batch(person_sample(), mirrored(person_sample()), cfg=cfg)
    assert 0 < tg["heatmap_mask"].mean() < 1                 # the ignored strip is excluded
    out = outputs_of(tg)
    out["heatmaps"] += 5.0 * (tg["heatmap_mask"] == 0)[:, None]
    out["offsets"] += 7.0 * (~tg["offset_mask"].repeat_interleave(2, dim=1))
    out["refine"] -= 3.0 * (~tg["refine_mask"])[:, None]
    assert all(v.item() == 0.0 for v in MOD.loss([out], tg, cfg).values())
    # the same changes inside the masks do count
    out = outputs_of(tg)
    out["heatmaps"] += 5.0 * (tg["heatmap_mask"] == 1)[:, None]
    assert MOD.loss([out], tg, cfg)["heatmap"].item() > 0


def test_loss_weights_stacks():
    cfg = training_cfg("paper")
    tg = batch(person_sample(), cfg=cfg)
    a, b = outputs_of(tg), outputs_of(tg)
    a["heatmaps"] += 0.2
    a["offsets"] -= 2.0
    b["refine"] += 1.0
    both = MOD.loss([a, b], tg, cfg)
    only_a, only_b = MOD.loss([a], tg, cfg), MOD.loss([b], tg, cfg)
    for k in both:
        assert both[k].item() == pytest.approx(0.5 * only_a[k].item() + 0.5 * only_b[k].item(), rel=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Flip test
# ----------------------------------------------------------------------------------------------------------

def test_limb_mirrors_of_gog19():
    limbs = get_schema("coco17").skeleton("gog19")
    mirror = MOD.model.limb_mirrors(limbs, get_schema("coco17").flip_index)
    own_reverse = [limbs.index(l) for l in [(1, 2), (5, 6), (11, 12)]]
    assert sorted(np.flatnonzero(mirror < 0)) == own_reverse
    assert limbs[mirror[limbs.index((5, 7))]] == (6, 8) and limbs[mirror[limbs.index((0, 2))]] == (0, 1)


def test_merge_flip_of_the_exact_mirror_gives_back_the_outputs():
    cfg = variant_cfg()
    sample = person_sample(ignore=False)
    original = outputs_of(tensors(MOD.encode(sample, cfg)))
    flipped = outputs_of(tensors(MOD.encode(mirrored(sample), cfg)))
    assert not torch.allclose(original["heatmaps"], flipped["heatmaps"])
    merged = MOD.merge_flip(original, flipped, cfg)
    for k in MOD.OUTPUTS:
        assert torch.allclose(merged[k], original[k], atol=1e-5), k
    poses, scores = MOD.decode(merged, cfg)
    poses0, scores0 = MOD.decode(original, cfg)
    assert len(poses) == 1
    np.testing.assert_allclose(poses, poses0, atol=1e-4)
    np.testing.assert_allclose(scores, scores0, atol=1e-5)


def test_merge_flip_averages_and_keeps_self_reverse_limbs():
    cfg = variant_cfg()
    limbs = get_schema("coco17").skeleton("gog19")
    torch.manual_seed(0)
    original = {"heatmaps": torch.rand(17, 8, 8), "offsets": torch.randn(38, 8, 8), "refine": torch.randn(2, 8, 8)}
    zeros = {k: torch.zeros_like(v) for k, v in original.items()}
    merged = MOD.merge_flip(original, zeros, cfg)
    assert torch.allclose(merged["heatmaps"], original["heatmaps"] / 2)
    assert torch.allclose(merged["refine"], original["refine"] / 2)
    off, got = original["offsets"].reshape(19, 2, 8, 8), merged["offsets"].reshape(19, 2, 8, 8)
    for i, limb in enumerate(limbs):
        expect = off[i] if limb in [(1, 2), (5, 6), (11, 12)] else off[i] / 2
        assert torch.allclose(got[i], expect), limb
    # the flipped image's maps come back mirrored, channel-swapped and with dx negated
    merged = MOD.merge_flip(zeros, original, cfg)
    fi = torch.as_tensor(get_schema("coco17").flip_index)
    assert torch.allclose(merged["heatmaps"], original["heatmaps"].flip(-1)[fi] / 2)
    i, j = limbs.index((5, 7)), limbs.index((6, 8))
    assert torch.allclose(merged["offsets"].reshape(19, 2, 8, 8)[i, 0], -off[j, 0].flip(-1) / 2)
    assert torch.allclose(merged["offsets"].reshape(19, 2, 8, 8)[i, 1], off[j, 1].flip(-1) / 2)
    assert torch.allclose(merged["refine"][0], -original["refine"][0].flip(-1) / 2)


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------

def test_a_few_steps_on_a_synthetic_batch_reduce_the_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path / "data"))
    manifest = load_manifest("synthetic-coco")
    generate(manifest, size="tiny", progress=False, jobs=1)
    cfg = training_cfg()
    # 128 px inputs keep the test fast on a shared CPU; the network and targets are the tiny scale's
    ds = PoseDataset(manifest, "train", input_size=128, encode=lambda s: MOD.encode(s, cfg), size="tiny")
    b = collate([ds[i] for i in range(2)])
    assert b["heatmaps"].shape == (2, 17, 32, 32) and "heatmap_mask" in b and b["offset_mask"].any()
    torch.manual_seed(0)
    model = MOD.build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=GOG.scales["tiny"]["train"]["lr"])
    history = []
    for _ in range(8):
        terms = MOD.loss(model(b["image"]), b, cfg)
        history.append({k: v.item() for k, v in terms.items()})
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    first, last = history[0], history[-1]
    print("\nloss terms, step 0:", first, "\nstep 7:", last)
    assert sum(last.values()) < sum(first.values())
    assert last["heatmap"] < 0.7 * first["heatmap"] and last["offset"] < first["offset"]
