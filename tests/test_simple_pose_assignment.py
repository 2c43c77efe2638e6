"""Simple Pose's greedy keypoint assignment: candidates, part scoring, selection, assembly, end to end on
ground-truth maps."""
import math
import sys

import numpy as np
import pytest
import torch

from poseharness.codecs import encode_heatmaps, local_maxima, upsample_maps
from poseharness.data.sample import Sample
from poseharness.methods import load_method

SP = load_method("simple_pose")
MOD = SP.module
rep = sys.modules[f"{MOD.__name__}.representation"]
asg = sys.modules[f"{MOD.__name__}.assignment"]

#: A standing person in COCO order, (x, y) relative to the nose, about 130 px tall.
TEMPLATE = np.array([(0, 0), (4, -4), (-4, -4), (8, -2), (-8, -2), (16, 20), (-16, 20), (22, 45), (-22, 45),
                     (24, 68), (-24, 68), (10, 70), (-10, 70), (12, 100), (-12, 100), (12, 130), (-12, 130)],
                    dtype=np.float64)


def person(x: float, y: float, scale: float = 1.0, drop=()) -> np.ndarray:
    kp = np.zeros((17, 3))
    kp[:, :2] = TEMPLATE * scale + (x, y)
    kp[:, 2] = 2
    kp[list(drop)] = 0
    return kp


def scene(*people, size: int = 256) -> Sample:
    kp = np.stack(people).astype(np.float32)
    lab = kp[..., 2] > 0
    lo = np.where(lab[..., None], kp[..., :2], np.inf).min(1)
    hi = np.where(lab[..., None], kp[..., :2], -np.inf).max(1)
    boxes = np.concatenate([lo, hi - lo], 1).astype(np.float32)
    return Sample(image_id=1, file_name="x.jpg", width=size, height=size, keypoints=kp, boxes=boxes,
                  areas=(boxes[:, 2] * boxes[:, 3]).astype(np.float32), iscrowd=np.zeros(len(kp), bool),
                  num_keypoints=lab.sum(1))


def oracle(sample: Sample, variant: str = "parts30"):
    cfg = dict(SP.variant_config(variant, "tiny"), schema="coco17")
    maps = torch.from_numpy(MOD.encode(sample, cfg)["maps"])
    return MOD.decode({"maps": maps}, cfg)


def match(poses: np.ndarray, gt: np.ndarray, tol: float = 1.0) -> list[int]:
    """For each ground-truth person the predicted person holding all its labelled keypoints within ``tol`` px
    (and nothing where it has none); -1 when there is none."""
    out = []
    for g in gt:
        lab = g[:, 2] > 0
        ok = [j for j, p in enumerate(poses)
              if np.all(np.linalg.norm(p[lab, :2] - g[lab, :2], axis=1) < tol) and np.all(p[lab, 2] > 0)
              and np.all(p[~lab, 2] == 0)]
        out.append(ok[0] if len(ok) == 1 else -1)
    return out


# ----------------------------------------------------------------------------------------------- end to end

def test_one_person_is_recovered_in_coco_order():
    gt = person(120.3, 60.6)
    poses, scores = oracle(scene(gt))
    assert poses.shape == (1, 17, 3) and scores.shape == (1,)
    # within a pixel: the peak of the bicubic-upsampled map, moved by the (small) window centroid
    np.testing.assert_allclose(poses[0, :, :2], gt[:, :2], atol=1.0)
    assert np.all(poses[0, :, 2] > 0.9)
    # person score 1 - 1/total, total = keypoint scores + the part score kept for each keypoint
    assert 0.95 < scores[0] < 1.0


def test_several_persons_are_recovered():
    gt = [person(40, 30, 0.8), person(128, 80, 1.0), person(210, 20, 0.6)]
    poses, scores = oracle(scene(*gt))
    assert len(poses) == 3 and np.all(np.diff(scores) <= 0)             # sorted by score
    assert sorted(match(poses, gt)) == [0, 1, 2]


@pytest.mark.parametrize("variant", ["parts30", "parts21", "paf"])
def test_overlapping_persons_are_separated(variant):
    a, b = person(100, 40), person(120, 50, 0.9)
    boxes = scene(a, b).boxes
    inter = max(0, min(boxes[0, 0] + boxes[0, 2], boxes[1, 0] + boxes[1, 2]) - max(boxes[0, 0], boxes[1, 0])) * \
        max(0, min(boxes[0, 1] + boxes[0, 3], boxes[1, 1] + boxes[1, 3]) - max(boxes[0, 1], boxes[1, 1]))
    assert inter / (boxes[:, 2] * boxes[:, 3]).min() > 0.5                # they really overlap
    poses, _ = oracle(scene(a, b), variant)
    assert len(poses) == 2 and sorted(match(poses, [a, b])) == [0, 1]


def test_redundant_parts_hold_a_person_together_where_a_keypoint_is_missing():
    # Without the right hip, the 21-part tree reaches the right knee and ankle from nothing: they form a
    # 2-keypoint fragment. The redundant part l_hip -> r_knee keeps them on the person.
    gt = person(128, 60, drop=(12,))
    poses30, _ = oracle(scene(gt), "parts30")
    assert len(poses30) == 1 and match(poses30, [gt]) == [0]
    poses21, _ = oracle(scene(gt), "parts21")
    assert len(poses21) == 2
    main = int(np.argmax((poses21[..., 2] > 0).sum(1)))
    fragment = poses21[1 - main]
    assert np.flatnonzero(fragment[:, 2] > 0).tolist() == [14, 16]      # r_knee, r_ankle (COCO)
    np.testing.assert_allclose(fragment[[14, 16], :2], gt[[14, 16], :2], atol=1.0)
    assert (poses21[main, :, 2] > 0).sum() == 14


def test_empty_maps_give_no_person():
    cfg = SP.variant_config("parts30", "tiny")
    poses, scores = MOD.decode({"maps": torch.zeros(50, 64, 64)}, cfg)
    assert poses.shape == (0, 17, 3) and scores.shape == (0,)


# ----------------------------------------------------------------------------------------------- pieces

def test_read_upsampled_equals_indexing_the_upsampled_maps():
    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.random((5, 12, 16)).astype(np.float32))
    up = upsample_maps(maps, 4)
    channel = rng.integers(0, 5, size=40)
    pts = np.stack([rng.integers(0, 64, size=(40, 7)), rng.integers(0, 48, size=(40, 7))], -1).astype(float)
    got = asg.read_upsampled(maps, channel, pts, 4)
    ref = up[torch.from_numpy(channel)[:, None], torch.from_numpy(pts[..., 1]).long(),
             torch.from_numpy(pts[..., 0]).long()].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    pairs = asg.read_upsampled(maps[:4].reshape(2, 2, 12, 16), channel % 2, pts, 4)
    ref2 = up[:4].reshape(2, 2, 48, 64)[torch.from_numpy(channel % 2)[:, None], :,
                                        torch.from_numpy(pts[..., 1]).long(), torch.from_numpy(pts[..., 0]).long()]
    np.testing.assert_allclose(pairs, ref2.numpy(), atol=1e-5)


def reference_candidates(heat: torch.Tensor, stride: int, threshold: float, radius: int):
    """The official procedure on fully upsampled maps: NMS, then the score-weighted window centroid."""
    up = upsample_maps(heat, stride).double().numpy()
    keep = local_maxima(torch.from_numpy(up)[None], 3)[0].numpy() & (up >= threshold)
    out = []
    for k, y, x in zip(*np.nonzero(keep)):
        h, w = up.shape[1:]
        if radius <= x < w - radius and radius <= y < h - radius:
            win = up[k, y - radius:y + radius + 1, x - radius:x + radius + 1]
            gy, gx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
            out.append((x + (win * gx).sum() / win.sum(), y + (win * gy).sum() / win.sum(), win.mean(), k))
        else:
            out.append((x, y, up[k, y, x], k))
    return np.array(out).reshape(-1, 4)


def test_keypoint_candidates_match_the_upsampled_reference():
    rng = np.random.default_rng(1)
    kp = np.concatenate([rng.uniform(0, 128, size=(6, 18, 2)), np.full((6, 18, 1), 2.0)], -1)
    heat = torch.from_numpy(encode_heatmaps(kp, (32, 32), 4, sigma=9.0, min_value=0.01))
    xy, score, kind = asg.keypoint_candidates(heat, 4, threshold=0.1, radius=2)
    ref = reference_candidates(heat, 4, 0.1, 2)
    assert len(xy) == len(ref) > 50
    np.testing.assert_array_equal(kind, ref[:, 3])
    np.testing.assert_allclose(xy, ref[:, :2], atol=1e-4)
    np.testing.assert_allclose(score, ref[:, 2], atol=1e-5)


def test_sub_pixel_refinement_is_the_window_centroid():
    # stride 1: the "upsampled" map is the map itself, so the window is known exactly
    heat = torch.zeros(2, 24, 24)
    heat[1, 10, 10], heat[1, 10, 11], heat[1, 12, 9] = 1.0, 0.5, 0.25    # (x, y) = (10, 10), (11, 10), (9, 12)
    heat[1, 0, 20] = 0.8                                                  # at the border: not refined
    xy, score, kind = asg.keypoint_candidates(heat, 1, threshold=0.1, radius=2)
    assert kind.tolist() == [1, 1, 1]
    # type 1 in raster order: (20, 0), (10, 10), (9, 12) -- (11, 10) is no maximum
    np.testing.assert_allclose(xy[0], [20, 0])
    assert score[0] == pytest.approx(0.8)
    total = 1.0 + 0.5 + 0.25
    np.testing.assert_allclose(xy[1], [10 + (0.5 * 1 + 0.25 * -1) / total, 10 + 0.25 * 2 / total])
    assert score[1] == pytest.approx(total / 25)
    np.testing.assert_allclose(xy[2], [9 + (1.0 * 1 + 0.5 * 2) / total, 12 + (1.0 * -2 + 0.5 * -2) / total])


def reference_parts(xy, score, kind, up_parts, parts, *, paf, threshold=0.1, ratio=0.8, samples=20, prior=0.5):
    """The official find_connections, loop by loop, on fully upsampled part maps."""
    height = up_parts.shape[-2]
    chosen = []
    for t, (a, b) in enumerate(parts):
        ca, cb = np.flatnonzero(kind == a), np.flatnonzero(kind == b)
        cands = []
        for i in ca:
            for j in cb:
                vec = xy[j] - xy[i]
                norm = math.hypot(*vec)
                if norm == 0:
                    continue
                n = min(int(round(norm + 1)), samples)
                line = zip(np.linspace(xy[i, 0], xy[j, 0], n), np.linspace(xy[i, 1], xy[j, 1], n))
                pts = [(int(round(px)), int(round(py))) for px, py in line]
                if paf:
                    resp = np.array([(up_parts[2 * t, py, px] * vec[0] + up_parts[2 * t + 1, py, px] * vec[1]) / norm
                                     for px, py in pts])
                else:
                    resp = np.array([up_parts[t, py, px] for px, py in pts])
                s = resp.mean() + min(prior * height / norm - 1, 0)
                if (resp > threshold).sum() >= ratio * n and s > 0:
                    cands.append((i, j, s, 0.5 * s + 0.25 * score[i] + 0.25 * score[j]))
        cands.sort(key=lambda c: c[3], reverse=True)
        taken = []
        for i, j, s, _ in cands:
            if all(i != u and j != v for u, v, _ in taken):
                taken.append((i, j, s))
                if len(taken) >= min(len(ca), len(cb)):
                    break
        chosen += [(t, i, j, s) for i, j, s in taken]
    return chosen


@pytest.mark.parametrize("variant", ["parts30", "paf"])
def test_part_scoring_and_selection_match_the_loop_reference(variant):
    rng = np.random.default_rng(4)
    people = [person(*rng.uniform((20, 10), (200, 110)), rng.uniform(0.5, 1.0)) for _ in range(4)]
    decoys = [person(*rng.uniform((20, 10), (200, 110)), rng.uniform(0.5, 1.0)) for _ in range(3)]
    cfg = SP.variant_config(variant, "tiny")
    maps = torch.from_numpy(MOD.encode(scene(*people), cfg)["maps"])
    # weaker decoy persons: wrong pairs, parts near the thresholds and rejected candidates are exercised too
    noisy = maps + 0.45 * torch.from_numpy(MOD.encode(scene(*decoys), cfg)["maps"])
    lay = rep.layout(cfg["encoding"])
    parts = rep.skeleton(cfg["encoding"])
    xy, score, kind = asg.keypoint_candidates(noisy[lay["keypoints"]], 4)
    cands = asg.part_candidates(xy, score, kind, noisy[lay["parts"]], parts, 4, paf=variant == "paf")
    got = asg.select_parts(cands, kind, parts)
    up = upsample_maps(noisy[lay["parts"]], 4).double().numpy()
    ref = reference_parts(xy, score, kind, up, parts, paf=variant == "paf")
    assert len(got) == len(ref) > 100
    np.testing.assert_array_equal(got[:, :3].astype(int), np.array([r[:3] for r in ref]))
    np.testing.assert_allclose(got[:, 3], [r[3] for r in ref], atol=1e-5)


def test_part_score_length_prior_and_ratio():
    # a constant part map: the score is the constant, minus the length prior beyond half the input height
    parts = [(0, 1)]
    xy = np.array([[10.0, 10.0], [30.0, 10.0], [10.0, 10.0], [60.0, 10.0]])
    kind = np.array([0, 1, 0, 1])
    score = np.ones(4)
    maps = torch.full((1, 16, 16), 0.5)                         # input 64 x 64: H = 64
    c = asg.part_candidates(xy[:2], score[:2], kind[:2], maps, parts, 4)
    assert c.shape == (1, 6) and c[0, 3] == pytest.approx(0.5) and c[0, 4] == pytest.approx(20.0)
    assert c[0, 5] == pytest.approx(0.75)                       # 0.5 * 0.5 + 0.25 + 0.25
    far = asg.part_candidates(xy[2:], score[2:], kind[2:], maps, parts, 4)
    assert far[0, 3] == pytest.approx(0.5 + 0.5 * 64 / 50 - 1)  # 50 px > H/2: penalised
    low = asg.part_candidates(xy[:2], score[:2], kind[:2], torch.full((1, 16, 16), 0.09), parts, 4)
    assert len(low) == 0                                        # no sample above thre2 = 0.1
    # the PAF line integral: a field along the segment scores 1, against it is rejected
    field = torch.zeros(2, 16, 16)
    field[0] = 1.0
    assert asg.part_candidates(xy[:2], score[:2], kind[:2], field, parts, 4, paf=True)[0, 3] == pytest.approx(1.0)
    assert len(asg.part_candidates(xy[:2], score[:2], kind[:2], -field, parts, 4, paf=True)) == 0


def rows(*parts):
    """Selected-part rows [type, a, b, score, length, weighted] from (type, a, b, score)."""
    return np.array([(t, a, b, s, 10.0, s) for t, a, b, s in parts], dtype=np.float64)


def test_assembly_redundant_part_replaces_only_when_higher():
    parts = [(0, 1), (1, 2), (0, 2)]                            # 0-1-2 chain plus the redundant 0-2
    cand = np.array([1.0, 1.0, 1.0, 1.0])                       # candidates: 0 (type 0), 1 (type 1), 2, 3 (type 2)
    # total = keypoint scores + the score of the part that attached each keypoint (the first part: two)
    slots, total, count = asg.assemble(rows((0, 0, 1, 0.9), (1, 1, 2, 0.5), (2, 0, 3, 0.8)), cand, parts, 3)
    assert slots.tolist() == [[0, 1, 3]]                        # 0.8 beats the 0.5 that put candidate 2 there
    assert count.tolist() == [3] and total[0] == pytest.approx(3 + 0.9 + 0.8)
    slots, total, _ = asg.assemble(rows((0, 0, 1, 0.9), (1, 1, 2, 0.5), (2, 0, 3, 0.4)), cand, parts, 3)
    assert slots.tolist() == [[0, 1, 2]] and total[0] == pytest.approx(3 + 0.9 + 0.5)
    # the same keypoint reached by a stronger redundant part keeps the stronger part's score
    slots, total, _ = asg.assemble(rows((0, 0, 1, 0.9), (1, 1, 2, 0.5), (2, 0, 2, 0.7)), cand, parts, 3)
    assert slots.tolist() == [[0, 1, 2]] and total[0] == pytest.approx(3 + 0.9 + 0.7)


def test_assembly_merges_disjoint_persons_and_drops_weak_ones():
    parts = [(0, 1), (2, 3), (1, 2)]
    cand = np.ones(4)
    # persons {0,1} and {2,3}, joined by a part of score >= 0.7 x their weakest (0.6): merged
    slots, total, count = asg.assemble(rows((0, 0, 1, 0.9), (1, 2, 3, 0.6), (2, 1, 2, 0.5)), cand, parts, 4)
    assert slots.tolist() == [[0, 1, 2, 3]] and count.tolist() == [4]
    assert total[0] == pytest.approx(2 + 0.9 + 2 + 0.6 + 0.5)
    slots, _, count = asg.assemble(rows((0, 0, 1, 0.9), (1, 2, 3, 0.6), (2, 1, 2, 0.3)), cand, parts, 4)
    assert slots.tolist() == [[0, 1, -1, -1], [-1, -1, 2, 3]]
    # a person whose total per keypoint is below 0.45 is dropped
    weak = np.array([0.1, 0.1, 1.0, 1.0])
    slots, _, _ = asg.assemble(rows((0, 0, 1, 0.5), (1, 2, 3, 0.6)), weak, parts, 4)
    assert slots.tolist() == [[-1, -1, 2, 3]]                   # (0.1 + 0.1 + 0.5) / 2 < 0.45


def test_selection_uses_each_keypoint_once_per_part_type():
    parts = [(0, 1)]
    kind = np.array([0, 0, 1])
    cands = np.array([[0, 0, 2, 0.9, 5, 0.9], [0, 1, 2, 0.8, 5, 0.95]])
    sel = asg.select_parts(cands, kind, parts)
    assert sel[:, :3].tolist() == [[0, 1, 2]]                   # the higher weighted score wins candidate 2
