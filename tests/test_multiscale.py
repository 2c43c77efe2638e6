"""Output-level multi-scale testing: a map carried from one view's output grid to another's through the original
image (poseharness/multiscale.py), checked exactly on maps linear in the original pixel position (bilinear
reading reproduces them), and Associative Embedding's fusion of three scales."""
import numpy as np
import pytest
import torch

from poseharness.codecs.heatmap import cell_centres
from poseharness.contract import method_module, resolve_method
from poseharness.data.augment import affine_points, invert_affine
from poseharness.data.manifest import load_manifest
from poseharness.data.sample import Sample
from poseharness.errors import HarnessError
from poseharness.config import variant_config
from poseharness.methods import load_method
from poseharness.multiscale import resample
from poseharness.pipeline import Decoder, encoded_outputs
from poseharness.views import bottom_up_views, mirrored

STRIDE = 4


def sample(width=200, height=160) -> Sample:
    rng = np.random.default_rng(5)
    kp = np.zeros((2, 17, 3), np.float32)
    for p, (cx, cy) in enumerate([(60, 70), (140, 90)]):
        kp[p, :, 0], kp[p, :, 1], kp[p, :, 2] = cx + rng.uniform(-25, 25, 17), cy + rng.uniform(-35, 35, 17), 2
    return Sample(image_id=3, file_name="x.jpg", width=width, height=height, keypoints=kp,
                  boxes=np.array([[30, 30, 60, 80], [110, 50, 60, 80]], np.float32),
                  areas=np.array([3000.0, 3500.0], np.float32), iscrowd=np.zeros(2, bool),
                  num_keypoints=np.array([17, 17]))


def original_position(view, hw) -> torch.Tensor:
    """(2, h, w): the original-image x and y of each output cell centre of ``view``."""
    ys, xs = np.meshgrid(cell_centres(hw[0], STRIDE), cell_centres(hw[1], STRIDE), indexing="ij")
    return torch.from_numpy(affine_points(np.stack([xs, ys], -1), invert_affine(view.affine))).permute(2, 0, 1)


@pytest.mark.parametrize("src_size, dst_size", [(256, 256), (512, 256), (128, 512), (256, 128)])
def test_resample_carries_positions_through_the_original_image(src_size, dst_size):
    s = sample()
    src, dst = bottom_up_views(s, src_size)[0], bottom_up_views(s, dst_size)[0]
    src_hw, dst_hw = (src_size // STRIDE,) * 2, (dst_size // STRIDE,) * 2
    got = resample(original_position(src, src_hw), src, dst, STRIDE, dst_hw)
    want = original_position(dst, dst_hw)
    # inside the source grid's cell centres bilinear reading is exact for linear maps; beyond them the edge repeats
    lo, hi = original_position(src, src_hw).flatten(1).aminmax(dim=1)
    inside = ((want >= lo[:, None, None]) & (want <= hi[:, None, None])).all(0)
    assert inside.float().mean() > 0.9
    torch.testing.assert_close(got[:, inside], want[:, inside], atol=1e-6, rtol=0)


def test_resample_into_a_mirrored_view():
    s = sample()
    v = bottom_up_views(s, 256)[0]
    m = mirrored(v)
    got = resample(original_position(v, (64, 64)), v, m, STRIDE, (64, 64))
    torch.testing.assert_close(got, original_position(m, (64, 64)), atol=1e-6, rtol=0)


def _ae(variant="multi"):
    spec = load_method("ae")
    return method_module(resolve_method("ae")), variant_config(spec, variant, "tiny", load_manifest("synthetic-coco"))


def test_ae_multi_scale_oracle_recovers_the_ground_truth():
    """Perfect tags and ground-truth heatmaps at x2, x1, x0.5 fused on the x2 grid: every person comes back, each
    joint within a cell of the x2 grid (2 input pixels of the x2 view: 1.6 original pixels here)."""
    module, cfg = _ae()
    s = sample()
    views = [bottom_up_views(s, size)[0] for size in (512, 256, 128)]
    outputs = [encoded_outputs(module, s, v, cfg) for v in views]
    outputs = [module.merge_flip(o, o_m, cfg) for o, o_m in
               zip(outputs, [encoded_outputs(module, s, mirrored(v), cfg) for v in views])]
    merged, ref = module.merge_views(outputs, views, cfg)
    assert ref is views[0] and merged["heatmaps"].shape == (17, 128, 128) and merged["tags"].shape == (34, 128, 128)
    poses, scores = Decoder(module, cfg, "bottom-up").image(outputs, views)
    assert len(poses) == 2
    order = np.argsort(poses[:, :, 0].mean(1))
    err = np.linalg.norm(poses[order, :, :2] - s.keypoints[:, :, :2], axis=-1)
    assert err.max() < 2.0, err.max()


def test_ae_merge_views_refuses_what_it_cannot_fuse():
    module, cfg = _ae()
    s = sample()
    views = [bottom_up_views(s, size)[0] for size in (512, 256, 128)]
    outputs = [encoded_outputs(module, s, v, cfg) for v in views]
    with pytest.raises(HarnessError, match="one unmirrored view per scale"):
        module.merge_views(outputs[:2], views[:2], cfg)
    cfg["decode"]["tta"] = {"scales": [2.0, 0.4, 3.0]}
    with pytest.raises(HarnessError, match="no scale within 0.5 of 1"):
        module.merge_views(outputs, views, cfg)
