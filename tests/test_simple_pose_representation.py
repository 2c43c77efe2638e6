"""Simple Pose's representation: 18 keypoints with a neck, body-part maps, PAFs, extras, multi-scale GT, flip."""
import math
import sys

import numpy as np
import pytest
import torch

from poseharness.codecs import encode_heatmaps
from poseharness.data.sample import Sample
from poseharness.methods import load_method
from poseharness.schemas import COCO17

SP = load_method("simple_pose")
MOD = SP.module
rep = sys.modules[f"{MOD.__name__}.representation"]            # the method's own submodule, loaded with it

ENC = SP.variant_config("parts30", "tiny")["encoding"]


def coco_person(points: dict, k: int = 17) -> np.ndarray:
    kp = np.zeros((1, k, 3))
    for j, (x, y, v) in points.items():
        kp[0, j] = (x, y, v)
    return kp


# ----------------------------------------------------------------------------------------------- keypoints

def test_neck_is_the_shoulder_midpoint_with_the_smaller_visibility():
    kp = coco_person({0: (50, 20, 2), 5: (60, 40, 2), 6: (40, 44, 1), 11: (58, 90, 2)})
    out = rep.coco_to_internal(kp)
    assert out.shape == (1, 18, 3)
    assert out[0, rep.NECK].tolist() == [50.0, 42.0, 1.0]
    assert out[0, 0].tolist() == [50, 20, 2]                    # nose
    assert out[0, 5].tolist() == [60, 40, 2]                    # l_shoulder is 5 in both orders
    assert out[0, 2].tolist() == [40, 44, 1]                    # r_shoulder: COCO 6 -> 2
    assert out[0, 11].tolist() == [58, 90, 2]                   # l_hip: COCO 11 -> 11
    one = rep.coco_to_internal(coco_person({5: (60, 40, 2)}))
    assert one[0, rep.NECK].tolist() == [0, 0, 0]               # one shoulder: no neck


def test_internal_order_names_and_round_trip():
    for c, name in enumerate(COCO17.keypoints):
        ours = rep.KEYPOINTS18[rep.INTERNAL_OF_COCO[c]]
        assert ours.replace("l_", "left_").replace("r_", "right_") == name
    kp = np.random.default_rng(0).uniform(1, 100, size=(4, 17, 3))
    assert np.array_equal(rep.internal_to_coco(rep.coco_to_internal(kp)), kp)


def test_skeletons_and_their_mirror():
    assert len(rep.PARTS30) == 30 and rep.PARTS30[:21] == rep.PARTS21
    assert rep.PARTS30[21:] == ((0, 2), (0, 5), (2, 8), (8, 12), (5, 11), (11, 9), (16, 2), (17, 5), (8, 11))
    perm, sign = rep.part_flip(rep.PARTS30)
    assert np.array_equal(perm[perm], np.arange(30))            # an involution
    i = rep.PARTS30.index((8, 11))                              # r_hip -> l_hip mirrors to itself, reversed
    assert perm[i] == i and sign[i] == -1
    assert perm[rep.PARTS30.index((2, 3))] == rep.PARTS30.index((5, 6)) and sign.sum() == 28
    # the official flip orders [R: config/config.py flip_heat_ord / flip_paf_ord]
    assert list(rep.FLIP18) == [0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16]
    assert perm.tolist() == [0, 2, 1, 4, 3, 6, 5, 8, 7, 12, 13, 14, 9, 10, 11, 18, 19, 20, 15, 16, 17, 22, 21,
                             25, 26, 23, 24, 28, 27, 29]


def test_layout_channel_counts():
    assert rep.num_channels(ENC) == 50
    assert rep.num_channels({**ENC, "parts": 21}) == 41
    assert rep.num_channels({**ENC, "representation": "paf"}) == 80
    lay = rep.layout(ENC)
    assert (lay["parts"], lay["keypoints"], lay["mask"], lay["kmax"]) == (
        slice(0, 30), slice(30, 48), slice(48, 49), slice(49, 50))


# ----------------------------------------------------------------------------------------------- body parts

def internal_person(points: dict) -> np.ndarray:
    kp = np.zeros((1, 18, 3))
    for j, (x, y) in points.items():
        kp[0, j] = (x, y, 2)
    return kp


def test_part_band_values_at_known_distances():
    # part nose(0) -> r_eye(14) on the diagonal y = x; cells sit at 4u + 1.5
    kp = internal_person({0: (1.5, 1.5), 14: (33.5, 33.5)})
    maps = rep.encode_part_maps(kp, [(0, 14)], (16, 16), 4, sigma=7.0, threshold=0.04, floor=0.01, margin=4.0)
    assert maps.shape == (1, 16, 16) and maps.dtype == np.float32
    assert maps[0, 3, 3] == pytest.approx(1.0)                  # (13.5, 13.5) on the line
    d = (9.5 - 1.5) / math.sqrt(2)                              # cell (u=2, v=0) at (9.5, 1.5)
    assert maps[0, 0, 2] == pytest.approx(math.exp(-d * d / 98.0), rel=1e-6)
    d = (29.5 - 1.5) / math.sqrt(2)                             # cell (u=7, v=0): g = 0.0003 <= 0.04 -> floor
    assert maps[0, 0, 7] == pytest.approx(0.01)
    # window: centres within [1.5 - 4, 33.5 + 4] -> cells 0..9 on both axes; outside it nothing
    assert maps[0, :10, :10].min() >= 0.01 - 1e-7
    assert maps[0, 10:].max() == 0 and maps[0, :, 10:].max() == 0
    # without a floor the small values are dropped instead
    bare = rep.encode_part_maps(kp, [(0, 14)], (16, 16), 4, floor=0.0)
    assert bare[0, 0, 7] == 0 and bare[0, 3, 3] == pytest.approx(1.0)


def test_overlapping_parts_of_one_type_are_averaged():
    a = internal_person({8: (10.0, 21.5), 9: (50.0, 21.5)})     # horizontal through row v = 5
    b = internal_person({8: (29.5, 2.0), 9: (29.5, 60.0)})      # vertical through column u = 7
    both = np.concatenate([a, b])
    ma = rep.encode_part_maps(a, [(8, 9)], (16, 16), 4)
    mb = rep.encode_part_maps(b, [(8, 9)], (16, 16), 4)
    mab = rep.encode_part_maps(both, [(8, 9)], (16, 16), 4)
    in_a, in_b = ma[0] > 0, mb[0] > 0
    shared = in_a & in_b
    assert shared.sum() > 0
    np.testing.assert_allclose(mab[0][shared], (ma[0][shared] + mb[0][shared]) / 2, rtol=1e-6)
    np.testing.assert_allclose(mab[0][in_a & ~in_b], ma[0][in_a & ~in_b], rtol=1e-6)
    assert mab[0, 5, 7] == pytest.approx(1.0)                   # on both lines


def test_unlabelled_or_coincident_endpoints_draw_nothing():
    kp = internal_person({8: (20.0, 20.0), 9: (20.0, 20.0)})
    assert rep.encode_part_maps(kp, [(8, 9)], (16, 16), 4).max() == 0
    kp = internal_person({8: (20.0, 20.0)})
    assert rep.encode_part_maps(kp, [(8, 9)], (16, 16), 4).max() == 0
    assert rep.encode_pafs(kp, [(8, 9)], (16, 16), 4).max() == 0


# ----------------------------------------------------------------------------------------------- PAFs

def test_paf_unit_vectors_inside_the_limb_band():
    kp = internal_person({2: (5.5, 21.5), 3: (45.5, 21.5)})      # r_shoulder -> r_elbow, left to right
    paf = rep.encode_pafs(kp, [(2, 3)], (16, 16), 4, width=4.0)
    assert paf.shape == (2, 16, 16)
    on = (paf[0] != 0) | (paf[1] != 0)
    # rows whose centre is within 4 px of y = 21.5 (v = 4, 5, 6), columns with 5.5 <= x <= 45.5 (u = 1..11)
    expect = np.zeros((16, 16), bool)
    expect[4:7, 1:12] = True
    assert np.array_equal(on, expect)
    assert np.all(paf[0][on] == 1.0) and np.all(paf[1][on] == 0.0)
    back = rep.encode_pafs(kp, [(3, 2)], (16, 16), 4, width=4.0)   # the reversed part points the other way
    assert np.all(back[0][on] == -1.0)
    diag = rep.encode_pafs(internal_person({2: (1.5, 1.5), 3: (41.5, 41.5)}), [(2, 3)], (16, 16), 4)
    np.testing.assert_allclose(diag[:, 5, 5], [math.sqrt(0.5)] * 2, rtol=1e-6)


def test_pafs_of_crossing_persons_are_averaged():
    a = internal_person({2: (1.5, 21.5), 3: (61.5, 21.5)})
    b = internal_person({2: (29.5, 1.5), 3: (29.5, 61.5)})
    paf = rep.encode_pafs(np.concatenate([a, b]), [(2, 3)], (16, 16), 4, width=4.0)
    np.testing.assert_allclose(paf[:, 5, 7], [0.5, 0.5])        # the crossing cell (29.5, 21.5)
    np.testing.assert_allclose(paf[:, 5, 1], [1.0, 0.0])        # only a
    np.testing.assert_allclose(paf[:, 1, 7], [0.0, 1.0])        # only b


# ----------------------------------------------------------------------------------------------- extras, layout

def test_person_mask_from_boxes_eroded():
    boxes = np.array([[8.0, 8.0, 32.0, 24.0]])                   # x 8..40, y 8..32
    raw = rep.person_mask(boxes, (16, 16), 4, erode=1)
    expect = np.zeros((16, 16), bool)
    expect[2:8, 2:10] = True                                     # centres 9.5..29.5 in y, 9.5..37.5 in x
    assert np.array_equal(raw.astype(bool), expect)
    eroded = rep.person_mask(boxes, (16, 16), 4, erode=3)
    expect_e = np.zeros((16, 16), bool)
    expect_e[3:7, 3:9] = True
    assert np.array_equal(eroded.astype(bool), expect_e)
    edge = rep.person_mask(np.array([[0.0, 0.0, 20.0, 20.0]]), (16, 16), 4)
    assert edge[0, 0] == 1                                       # the image border does not erode (cv2 default)


def sample_of(kp17: np.ndarray, size: int = 128, crowd: bool = False) -> Sample:
    p = len(kp17)
    boxes = np.array([[10.0, 10.0, 60.0, 100.0]] * p, np.float32)
    return Sample(image_id=1, file_name="x.jpg", width=size, height=size, keypoints=kp17.astype(np.float32),
                  boxes=boxes, areas=np.full(p, 6000.0, np.float32), iscrowd=np.full(p, crowd),
                  num_keypoints=(kp17[..., 2] > 0).sum(-1))


def random_people(rng, n: int, size: int = 128) -> np.ndarray:
    kp = np.zeros((n, 17, 3))
    kp[..., :2] = rng.uniform(4, size - 5, size=(n, 17, 2))
    kp[..., 2] = rng.choice([0, 1, 2], size=(n, 17), p=[0.15, 0.25, 0.6])
    kp[kp[..., 2] == 0, :2] = 0
    return kp


def test_encode_layout_and_channels():
    rng = np.random.default_rng(1)
    kp = random_people(rng, 3)
    cfg = SP.variant_config("parts30", "tiny")
    sample = sample_of(kp)
    maps = MOD.encode(sample, cfg)["maps"]
    assert maps.shape == (50, 32, 32) and maps.dtype == np.float32
    kp18 = rep.coco_to_internal(sample.keypoints)
    # keypoint channels are the core encoder's Gaussians, sigma 9, max over persons
    np.testing.assert_array_equal(maps[30:48], encode_heatmaps(kp18, (32, 32), 4, sigma=9.0, min_value=0.01))
    np.testing.assert_array_equal(maps[49], maps[30:48].max(axis=0))
    np.testing.assert_array_equal(maps[:30], rep.encode_part_maps(kp18, rep.PARTS30, (32, 32), 4))
    assert set(np.unique(maps[48])) <= {0.0, 1.0} and maps[48].sum() > 0
    # crowds are not encoded (but are in the mask channel)
    crowd = MOD.encode(sample_of(kp, crowd=True), cfg)["maps"]
    assert crowd[:48].max() == 0 and crowd[48].sum() == maps[48].sum()
    paf = MOD.encode(sample_of(kp), SP.variant_config("paf", "tiny"))["maps"]
    assert paf.shape == (80, 32, 32)
    np.testing.assert_array_equal(paf[60:78], maps[30:48])


def test_other_keypoint_schemas_are_refused():
    from poseharness.errors import HarnessError
    cfg = dict(SP.variant_config("parts30", "tiny"), schema="crowdpose14")
    with pytest.raises(HarnessError, match="crowdpose14"):
        MOD.encode(sample_of(np.zeros((1, 17, 3))), cfg)


# ----------------------------------------------------------------------------------------------- pyramid

def test_pyramid_pools_to_block_means():
    rng = np.random.default_rng(2)
    maps = rng.random((2, 50, 64, 48)).astype(np.float32)
    levels = rep.pyramid(maps, 5)
    assert [tuple(x.shape[-2:]) for x in levels] == [(64, 48), (32, 24), (16, 12), (8, 6), (4, 3)]
    for lvl, x in enumerate(levels):
        f = 2 ** lvl
        # the sums are kept up to the cell count: each coarse cell is the mean of its f x f block
        np.testing.assert_allclose(x.sum(dim=(-1, -2)).numpy() * f * f, maps.sum(axis=(-1, -2)), rtol=1e-5)
        block = maps.reshape(2, 50, 64 // f, f, 48 // f, f).mean(axis=(3, 5))
        np.testing.assert_allclose(x.numpy(), block, rtol=1e-5, atol=1e-6)
    assert rep.pyramid(torch.zeros(3, 16, 16), 1)[0].shape == (3, 16, 16)


# ----------------------------------------------------------------------------------------------- flip

def mirrored(sample: Sample) -> Sample:
    kp = sample.keypoints.copy()
    lab = kp[..., 2] > 0
    kp[..., 0] = np.where(lab, sample.width - 1 - kp[..., 0], 0)
    kp = kp[:, COCO17.flip_index]
    boxes = sample.boxes.copy()
    boxes[:, 0] = sample.width - 1 - (boxes[:, 0] + boxes[:, 2])
    return Sample(image_id=1, file_name="x.jpg", width=sample.width, height=sample.height, keypoints=kp,
                  boxes=boxes, areas=sample.areas, iscrowd=sample.iscrowd, num_keypoints=sample.num_keypoints)


@pytest.mark.parametrize("variant", ["parts30", "parts21", "paf"])
def test_mirror_maps_undoes_a_horizontal_flip(variant):
    cfg = SP.variant_config(variant, "tiny")
    sample = sample_of(random_people(np.random.default_rng(3), 4))
    maps = MOD.encode(sample, cfg)["maps"]
    flipped = MOD.encode(mirrored(sample), cfg)["maps"]
    back = MOD.mirror_maps(torch.from_numpy(flipped), cfg["encoding"]).numpy()
    np.testing.assert_allclose(back, maps, atol=1e-6)
    merged = MOD.merge_flip({"maps": torch.from_numpy(maps)}, {"maps": torch.from_numpy(flipped)}, cfg)["maps"]
    np.testing.assert_allclose(merged.numpy(), maps, atol=1e-6)


def test_scatter_mean_with_no_counted_cell_gives_zero_maps():
    # A training crop where no limb of any person is in view: no cell counts. numpy refuses reshape(0, -1), which
    # crashed the imhn3_paf training of reproduce-simple_pose-table1 (DataLoader worker, encode_pafs).
    types, ux, uy = np.array([0, 1]), np.zeros((2, 3), int), np.zeros((2, 2), int)
    none = np.zeros((2, 2, 3), bool)
    assert rep._scatter_mean(types, ux, uy, np.ones((2, 2, 3)), none, 2, (4, 5)).shape == (2, 4, 5)
    pafs = rep._scatter_mean(types, ux, uy, np.ones((2, 2, 3, 2)), none, 2, (4, 5))
    assert pafs.shape == (2, 2, 4, 5) and not pafs.any()
    one = none.copy()
    one[0, 0, 0] = True
    assert rep._scatter_mean(types, ux, uy, np.ones((2, 2, 3, 2)), one, 2, (4, 5))[0, :, 0, 0].tolist() == [1.0, 1.0]
