"""The top-down pieces of the core: crop -> uncrop, the heatmap codec (encode with target weights, argmax + quarter,
DARK), the flip merge and its shift, the target-weighted MSE, jittered ground-truth boxes, the half-body crop."""
import numpy as np
import pytest
import torch

from poseharness.codecs.top_down import (argmax_cells, decode_heatmaps, encode_crop_heatmaps, flip_back, joints_mse,
                                         merge_flip_heatmaps, quarter_offsets)
from poseharness.data.augment import (AugmentConfig, affine_points, sample_half_body, top_down_box, transform_sample,
                                      upper_body)
from poseharness.data.sample import Sample
from poseharness.errors import HarnessError
from poseharness.schemas import get_schema
from poseharness.views import (BoxSource, View, boxes_record, ground_truth_boxes, image_views, jittered_boxes, mirrored,
                               to_original, top_down_views)

COCO = get_schema("coco17")
FLIP = COCO.flip_index


def people(n: int = 4, width: int = 640, height: int = 480, seed: int = 0) -> Sample:
    """``n`` annotated persons with all 17 joints labelled at random sub-pixel positions inside their boxes."""
    rng = np.random.default_rng(seed)
    kp = np.zeros((n, 17, 3), np.float32)
    boxes = np.zeros((n, 4), np.float32)
    for p in range(n):
        w, h = rng.uniform(40, 200), rng.uniform(80, 300)
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
        boxes[p] = x0, y0, w, h
        kp[p, :, 0] = rng.uniform(x0, x0 + w, 17)
        kp[p, :, 1] = rng.uniform(y0, y0 + h, 17)
        kp[p, :, 2] = 2
    return Sample(image_id=11, file_name="x.jpg", width=width, height=height, keypoints=kp, boxes=boxes,
                  areas=boxes[:, 2] * boxes[:, 3], iscrowd=np.zeros(n, bool), num_keypoints=np.full(n, 17))


def crop(points: dict, size=(96, 128), k: int = 17) -> Sample:
    """One person seen in a crop of ``size`` (W, H): joints at the given input pixels, the rest unlabelled."""
    kp = np.zeros((1, k, 3), np.float32)
    for j, (x, y) in points.items():
        kp[0, j] = (x, y, 2)
    return Sample(image_id=1, file_name="c.jpg", width=size[0], height=size[1], keypoints=kp,
                  boxes=np.array([[0, 0, size[0], size[1]]], np.float32), areas=np.array([1.0], np.float32),
                  iscrowd=np.zeros(1, bool), num_keypoints=np.array([len(points)]))


# ----------------------------------------------------------------------------------------------------------
# Crop -> uncrop
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("input_size", [(192, 256), (96, 128), (128, 96)])
@pytest.mark.parametrize("flip", [False, True])
def test_a_pose_mapped_into_its_crop_and_back_is_itself(input_size, flip):
    s = people()
    for view in image_views(s, "top-down", input_size):
        view = mirrored(view) if flip else view
        assert view.size == input_size and view.flipped == flip
        # into the crop as the loader / oracle does (a mirrored crop swaps left and right) ...
        seen = transform_sample(s, view.affine, view.size, flip_index=FLIP if flip else None, persons=[view.person])
        labelled = seen.keypoints[0, :, 2] > 0
        assert labelled.sum() >= 10
        # ... and back as the decoder does (to_original, then the mirrored view's joints swapped back)
        back = to_original(seen.keypoints.astype(np.float64), view)
        if flip:
            back = back[:, FLIP]
            labelled = labelled[FLIP]
        np.testing.assert_allclose(back[0, labelled, :2], s.keypoints[view.person, labelled, :2], atol=1e-3)
        # the mirror is about the crop's own centre: the box centre still lands on the input's centre
        centre = view.box[:2] + view.box[2:] / 2
        np.testing.assert_allclose(affine_points(centre, view.affine), [(input_size[0] - 1) / 2,
                                                                          (input_size[1] - 1) / 2], atol=1e-9)


def test_decode_of_encode_through_the_crop_lands_on_the_original_joints():
    """Unbiased encoding + DARK through a 256 x 192 crop and back: sub-pixel in the original image."""
    s = people(n=2, seed=4)
    for view in image_views(s, "top-down", (192, 256)):
        seen = transform_sample(s, view.affine, view.size, persons=[view.person])
        maps, weights = encode_crop_heatmaps(seen.keypoints, (64, 48), 4, unbiased=True)
        pose = decode_heatmaps(torch.from_numpy(maps), 4, "dark").numpy()
        back = to_original(pose[None], view)[0]
        ok = (weights > 0) & (pose[:, 2] > 0.5)
        scale = 1 / view.affine[0, 0]                    # original pixels per input pixel
        err = np.abs(back[ok, :2] - s.keypoints[view.person, ok, :2]).max()
        assert ok.sum() >= 12 and err < 0.1 * 4 * scale


# ----------------------------------------------------------------------------------------------------------
# The codec
# ----------------------------------------------------------------------------------------------------------

# Sub-cell positions in a 96 x 128 crop (24 x 32 maps), 6 cells from its border (nearer, the zero padding of
# DARK's blur pulls its step inwards by up to ~0.1 cell, as in the official code).
POINTS = {j: (24.3 + 2.8 * j + 0.01 * j * j, 24.1 + 4.9 * j) for j in range(17)}


def errors(encoded, refine, stride=4):
    pose = decode_heatmaps(torch.from_numpy(encoded), stride, refine).numpy()
    truth = np.array([POINTS[j] for j in range(17)])
    return np.abs(pose[:, :2] - truth), pose[:, 2]


def test_oracle_round_trip_of_argmax_quarter_and_dark():
    s = crop(POINTS)
    biased, w = encode_crop_heatmaps(s.keypoints, (32, 24), 4, sigma=2.0)
    unbiased, _ = encode_crop_heatmaps(s.keypoints, (32, 24), 4, sigma=2.0, unbiased=True)
    assert biased.shape == (17, 32, 24) and (w == 1).all()
    # SimpleBaseline's own targets peak on the nearest cell: its neighbours tie, the quarter shift stays put,
    # and every joint is within half a cell (2 px) of the truth, some more than a quarter away
    err, score = errors(biased, "quarter")
    assert (err <= 0.5 * 4 + 1e-9).all() and (err > 0.25 * 4).any() and np.allclose(score, 1.0)
    np.testing.assert_array_equal(err, errors(biased, "none")[0])
    # on maps centred at the true position the quarter shift brings each axis within a quarter cell (1 px)
    err, _ = errors(unbiased, "quarter")
    assert (err <= 0.25 * 4 + 1e-6).all() and err.max() > 0.5
    assert err.mean() < errors(unbiased, "none")[0].mean()
    # DARK recovers them almost exactly
    err, _ = errors(unbiased, "dark")
    assert err.max() < 0.05 * 4


def test_quarter_shift_follows_hrnets_rule_on_a_hand_made_map():
    hm = torch.zeros(1, 6, 7)
    hm[0, 3, 3] = 1.0
    hm[0, 3, 4] = 0.5          # higher right neighbour: +1/4 in x
    hm[0, 2, 3] = 0.2          # higher upper neighbour: -1/4 in y
    cells = argmax_cells(hm)
    assert cells.tolist() == [[3.0, 3.0, 1.0]]
    assert quarter_offsets(hm, cells).tolist() == [[0.25, -0.25]]
    # HRNet's condition 1 < u < w - 1: column 1 (and 0) is left alone
    edge = torch.zeros(1, 6, 7)
    edge[0, 3, 1], edge[0, 3, 2] = 1.0, 0.5
    assert quarter_offsets(edge, argmax_cells(edge)).tolist() == [[0.0, 0.0]]
    # a map with nothing above 0: cell (0, 0), its score the maximum
    assert argmax_cells(-torch.ones(1, 4, 4)).tolist() == [[0.0, 0.0, -1.0]]
    pose = decode_heatmaps(hm, 4, "quarter")
    np.testing.assert_allclose(pose[0].numpy(), [3.25 * 4 + 1.5, 2.75 * 4 + 1.5, 1.0])
    with pytest.raises(HarnessError, match="refine must be one of"):
        decode_heatmaps(hm, 4, "taylor")


def test_batched_and_unbatched_decoding_agree():
    maps = np.stack([encode_crop_heatmaps(crop({j: (30 + b, 40 + 2 * b) for j in range(17)}).keypoints, (32, 24), 4,
                                          unbiased=True)[0] for b in range(3)])
    for refine in ("quarter", "dark", "none"):
        batched = decode_heatmaps(torch.from_numpy(maps), 4, refine)
        assert batched.shape == (3, 17, 3)
        for b in range(3):
            torch.testing.assert_close(batched[b], decode_heatmaps(torch.from_numpy(maps[b]), 4, refine))


# ----------------------------------------------------------------------------------------------------------
# The flip test
# ----------------------------------------------------------------------------------------------------------

def test_flip_merge_without_shift_keeps_the_encoded_maps():
    """In the pixel-centre convention a mirrored crop's maps, brought back, are the crop's own maps."""
    s = crop(POINTS)
    view = View(1, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (96, 128), "top-down")
    m = mirrored(view)
    seen = transform_sample(s, m.affine, m.size, flip_index=FLIP)       # the mirrored crop, joints swapped
    maps, _ = encode_crop_heatmaps(s.keypoints, (32, 24), 4, unbiased=True)
    mirror_maps, _ = encode_crop_heatmaps(seen.keypoints, (32, 24), 4, unbiased=True)
    torch.testing.assert_close(flip_back(torch.from_numpy(mirror_maps), FLIP), torch.from_numpy(maps),
                               atol=1e-6, rtol=0)
    merged = merge_flip_heatmaps(torch.from_numpy(maps), torch.from_numpy(mirror_maps), FLIP, shift=0)
    torch.testing.assert_close(merged, torch.from_numpy(maps), atol=1e-6, rtol=0)
    # HRNet's shift of 1 cell moves the merged peak by half a cell to the right
    shifted = merge_flip_heatmaps(torch.from_numpy(maps), torch.from_numpy(mirror_maps), FLIP, shift=1)
    dx = decode_heatmaps(shifted, 4, "dark")[:, 0] - decode_heatmaps(merged, 4, "dark")[:, 0]
    assert torch.allclose(dx, torch.full_like(dx, 2.0), atol=0.1)     # half a cell = 2 px


def test_flip_shift_on_a_hand_made_map():
    # one joint pair (0, 1) and a centre joint 2; the mirror's map of joint 1 (the image's joint 0) peaks at u = 1
    flip_index = np.array([1, 0, 2])
    plain = torch.zeros(3, 2, 5)
    mirror = torch.zeros(3, 2, 5)
    mirror[1, 0, 1] = 1.0
    mirror[2, 1, 0] = 1.0
    back = flip_back(mirror, flip_index)
    assert back[0, 0].tolist() == [0, 0, 0, 1, 0] and back[2, 1].tolist() == [0, 0, 0, 0, 1]
    one = merge_flip_heatmaps(plain, mirror, flip_index, shift=1)
    # [R] output_flipped[..., 1:] = output_flipped[..., :-1]: moved right, column 0 keeps its own value
    assert one[0, 0].tolist() == [0, 0, 0, 0, 0.5] and one[2, 1].tolist() == [0, 0, 0, 0, 0]
    assert merge_flip_heatmaps(plain, mirror, flip_index, shift=0)[0, 0].tolist() == [0, 0, 0, 0.5, 0]
    with pytest.raises(HarnessError, match="flip shift"):
        merge_flip_heatmaps(plain, mirror, flip_index, shift=-1)


# ----------------------------------------------------------------------------------------------------------
# Target weights and the loss
# ----------------------------------------------------------------------------------------------------------

def test_target_weights_are_zero_outside_the_crop_and_for_unlabelled_joints():
    s = people(n=1, seed=2)
    s.keypoints[0, 3] = (0, 0, 0)                                  # not labelled
    box = s.boxes[0]
    (cx, cy), (ww, wh) = top_down_box(box, (96, 128))
    s.keypoints[0, 5, :2] = (cx + 0.55 * ww, cy)                    # right of the 1.25x window
    s.keypoints[0, 6, :2] = (cx, cy - 0.52 * wh)                   # above it
    (view,) = top_down_views(s, (96, 128), *ground_truth_boxes(s)[:2], persons=np.array([0]))
    seen = transform_sample(s, view.affine, view.size, persons=[0])
    maps, weights = encode_crop_heatmaps(seen.keypoints, (32, 24), 4)
    assert weights[[3, 5, 6]].tolist() == [0, 0, 0] and weights.sum() == 14
    assert (maps[[3, 5, 6]] == 0).all() and (maps[weights > 0].max(axis=(1, 2)) > 0.99).all()
    # the loss: zero-weight maps neither count nor pass a gradient
    pred = torch.rand(1, 17, 32, 24, requires_grad=True)
    target, w = torch.from_numpy(maps)[None], torch.from_numpy(weights)[None]
    loss = joints_mse(pred, target, w)
    loss.backward()
    assert (pred.grad[0, [3, 5, 6]] == 0).all() and (pred.grad[0, weights > 0] != 0).any()
    kept = weights > 0
    expected = 0.5 * ((pred[0, kept] - target[0, kept]) ** 2).sum() / pred.numel()
    torch.testing.assert_close(loss, expected)


# ----------------------------------------------------------------------------------------------------------
# Jittered ground-truth boxes
# ----------------------------------------------------------------------------------------------------------

def test_jittered_boxes_are_seeded_per_image_and_reproducible():
    s = people(n=6)
    a = jittered_boxes(s, 0.1, 0.2, 0.0, seed=3)
    jittered_boxes(people(n=6, seed=9), 0.1, 0.2, 0.0, seed=3)          # another image in between changes nothing
    b = jittered_boxes(s, 0.1, 0.2, 0.0, seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a[0], jittered_boxes(s, 0.1, 0.2, 0.0, seed=4)[0])
    gt, _, persons = ground_truth_boxes(s)
    boxes, scores, kept = a
    assert kept.tolist() == persons.tolist()
    # bounded: centres within 10 % of the side, sides within +-20 %; the score is the IoU with the person's box
    shift = (boxes[:, :2] + boxes[:, 2:] / 2) - (gt[:, :2] + gt[:, 2:] / 2)
    assert (np.abs(shift) <= 0.1 * gt[:, 2:] + 1e-9).all() and (np.abs(shift) > 0).all()
    assert (np.abs(boxes[:, 2:] / gt[:, 2:] - 1) <= 0.2 + 1e-9).all()
    for box, g, score in zip(boxes, gt, scores):
        x0, y0 = np.maximum(box[:2], g[:2])
        x1, y1 = np.minimum(box[:2] + box[2:], g[:2] + g[2:])
        inter = max(x1 - x0, 0) * max(y1 - y0, 0)
        assert score == pytest.approx(inter / (box[2] * box[3] + g[2] * g[3] - inter)) and 0 < score < 1
    # no jitter, no misses: the ground truth itself, score 1
    boxes, scores, kept = jittered_boxes(s, 0.0, 0.0, 0.0, seed=3)
    np.testing.assert_allclose(boxes, gt)
    assert (scores == 1).all() and kept.tolist() == persons.tolist()


def test_jittered_boxes_respect_the_miss_rate():
    s = people(n=4000, width=4000, height=4000, seed=1)
    boxes, _, kept = jittered_boxes(s, 0.1, 0.1, 0.3, seed=0)
    assert abs(1 - len(kept) / 4000 - 0.3) < 3 * np.sqrt(0.3 * 0.7 / 4000)
    # the jitter of a kept box does not depend on the miss rate
    all_boxes, _, all_kept = jittered_boxes(s, 0.1, 0.1, 0.0, seed=0)
    np.testing.assert_array_equal(all_boxes[np.isin(all_kept, kept)], boxes)
    assert len(jittered_boxes(s, 0.1, 0.1, 1.0, seed=0)[0]) == 0


def test_box_source_settings_views_and_record():
    assert BoxSource.from_decode({}) == BoxSource() and BoxSource.from_decode({"boxes": None}).record() == "ground-truth"
    src = BoxSource.from_decode({"boxes": {"source": "jittered", "centre": 0.1, "size": 0.1, "miss_rate": 0.5,
                                           "seed": 2}})
    assert src.record() == {"source": "jittered", "centre": 0.1, "size": 0.1, "miss_rate": 0.5, "seed": 2}
    s = people(n=8)
    views = image_views(s, "top-down", (96, 128), boxes=src)
    boxes, scores, persons = jittered_boxes(s, 0.1, 0.1, 0.5, 2)
    assert [v.person for v in views] == persons.tolist() and [v.score for v in views] == scores.tolist()
    assert 0 < len(views) < 8
    assert boxes_record("top-down", src, None) == src.record() and boxes_record("bottom-up", src, None) is None
    with pytest.raises(HarnessError, match="detection file replaces ground-truth boxes only"):
        boxes_record("top-down", src, "dets.json")
    for raw, msg in [({"source": "detector"}, r"boxes\.source: must be one of gt, jittered"),
                     ({"source": "jittered", "centre": 1.0}, r"boxes\.centre: must be a number in \[0, 1\)"),
                     ({"source": "jittered", "miss_rate": -0.1}, r"boxes\.miss_rate"),
                     ({"source": "jittered", "seed": 1.5}, r"boxes\.seed"),
                     ({"source": "gt", "centre": 0.1}, r"boxes: ground-truth boxes take no centre"),
                     ({"source": "jittered", "jitter": 0.1}, r"boxes: must be")]:
        with pytest.raises(HarnessError, match=r"m\.yaml: variant 'v': decode: field " + msg):
            BoxSource.from_decode({"boxes": raw}, "m.yaml: variant 'v': decode")


# ----------------------------------------------------------------------------------------------------------
# Half-body
# ----------------------------------------------------------------------------------------------------------

class Draws:
    """A stand-in generator that returns fixed draws: u for random(), z for standard_normal()."""

    def __init__(self, u: float, z: float):
        self.u, self.z = u, z

    def random(self):
        return self.u

    def standard_normal(self):
        return self.z


def test_upper_body_is_hrnets():
    assert np.flatnonzero(upper_body(COCO.keypoints)).tolist() == list(range(11))
    assert np.flatnonzero(upper_body(get_schema("crowdpose14").keypoints)).tolist() == [0, 1, 2, 3, 4, 5, 12, 13]


def test_half_body_box_follows_hrnets_rule():
    cfg = AugmentConfig(half_body=0.3, half_body_joints=8)
    upper = upper_body(COCO.keypoints)
    kp = people(n=1, seed=5).keypoints[0].astype(np.float64)
    up, low = kp[upper, :2], kp[~upper, :2]

    def box_of(points):
        c = points.mean(axis=0)
        size = points.max(axis=0) - points.min(axis=0)
        return [c[0] - size[0] / 2, c[1] - size[1] / 2, size[0], size[1]]

    np.testing.assert_allclose(sample_half_body(cfg, Draws(0.2, 0.4), kp, upper), box_of(up))      # z < 0.5: upper
    np.testing.assert_allclose(sample_half_body(cfg, Draws(0.2, 0.6), kp, upper), box_of(low))     # else lower
    assert sample_half_body(cfg, Draws(0.31, 0.0), kp, upper) is None                              # u >= p
    few = kp.copy()
    few[9:, 2] = 0                                   # 9 labelled joints > 8: still a candidate ...
    np.testing.assert_allclose(sample_half_body(cfg, Draws(0.0, 0.9), few, upper), box_of(kp[:9, :2]))  # lower
    few[8:, 2] = 0                                   # ... 8 is not more than 8
    assert sample_half_body(cfg, Draws(0.0, 0.0), few, upper) is None
    real = np.random.default_rng(0)
    sample_half_body(cfg, real, kp, upper)
    assert real.bit_generator.state == _after_two_draws(0)      # always two draws


def _after_two_draws(seed):
    rng = np.random.default_rng(seed)
    rng.random()
    rng.standard_normal()
    return rng.bit_generator.state


def test_half_body_settings_keep_old_hashes_and_are_checked():
    old = AugmentConfig().as_dict()
    assert "half_body" not in old and "half_body_joints" not in old
    d = AugmentConfig.from_dict({"half_body": 0.3, "half_body_joints": 8}).as_dict()
    assert d["half_body"] == 0.3 and "half_body_joints" not in d and AugmentConfig.from_dict(d).as_dict() == d
    for raw, msg in [({"half_body": 1.5}, "half_body must be a probability"),
                     ({"half_body_joints": -1}, "half_body_joints must be a non-negative integer"),
                     ({"half_body": 0.3, "centre": "person"}, "half_body and centre 'person' exclude each other")]:
        with pytest.raises(HarnessError, match=msg):
            AugmentConfig.from_dict(raw, source="m.yaml")


def test_pose_dataset_crops_half_bodies(data_root, monkeypatch):
    from poseharness.data.augment import HALF_BODY_EXPAND, top_down_affine
    from poseharness.data.loader import PoseDataset
    from poseharness.data.manifest import load_manifest

    monkeypatch.setenv("POSEHARNESS_DATA", str(data_root))
    manifest = load_manifest("synthetic-coco")
    plain = AugmentConfig(rotate=0.0, scale=(1.0, 1.0), translate=0.0, flip=0.0)
    half = AugmentConfig(rotate=0.0, scale=(1.0, 1.0), translate=0.0, flip=0.0, half_body=1.0, half_body_joints=8)
    ds = PoseDataset(manifest, "train", input_size=(96, 128), view="top-down", augment=half, size="tiny")
    ref = PoseDataset(manifest, "train", input_size=(96, 128), view="top-down", augment=plain, size="tiny")
    upper = upper_body(COCO.keypoints)
    seen = {"upper": 0, "lower": 0, "whole": 0}
    for index in range(len(ds)):
        i, person = ds.items[index]
        kp = ds.samples.record(i).keypoints[person]
        m, _ = ds.affine(index)
        labelled = kp[:, 2] > 0
        if labelled.sum() <= 8:
            np.testing.assert_allclose(m, ref.affine(index)[0])
            seen["whole"] += 1
            continue
        for part, chosen in (("upper", labelled & upper), ("lower", labelled & ~upper)):
            pts = kp[chosen, :2].astype(np.float64)
            if len(pts) < 3:
                continue
            size = pts.max(axis=0) - pts.min(axis=0)
            box = np.r_[pts.mean(axis=0) - size / 2, size]
            if np.allclose(m, top_down_affine(box, (96, 128), HALF_BODY_EXPAND)):
                seen[part] += 1
                # the chosen joints' mean lands on the input's centre
                np.testing.assert_allclose(affine_points(pts.mean(axis=0), m), [47.5, 63.5], atol=1e-6)
                break
        else:
            pytest.fail(f"item {index}: the crop is neither half body")
    assert seen["upper"] > 0 and seen["lower"] > 0
