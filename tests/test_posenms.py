"""Pose NMS (poseharness.posenms) against plain double-loop references, hand-worked cases and the previous
eval/oks.py OKS-NMS."""
from __future__ import annotations

import math

import numpy as np
import pytest

from poseharness.errors import HarnessError
from poseharness.eval.oks import oks
from poseharness.posenms import (PoseNMSSetting, iou_nms, joint_extent_areas, joint_extent_boxes, oks_matrix,
                                 oks_nms, pose_nms)
from poseharness.schemas import COCO17, CROWDPOSE14

EPS = np.spacing(1)


# ----------------------------------------------------------------------------- references: plain Python loops

def ref_labelled(pose, j):
    return len(pose[j]) < 3 or pose[j][2] > 0


def ref_box(pose):
    xs = [pose[j][0] for j in range(len(pose)) if ref_labelled(pose, j)]
    ys = [pose[j][1] for j in range(len(pose)) if ref_labelled(pose, j)]
    return (min(xs), min(ys), max(xs), max(ys)) if xs else (0.0, 0.0, 0.0, 0.0)


def ref_area(pose):
    x1, y1, x2, y2 = ref_box(pose)
    return (x2 - x1) * (y2 - y1)


def ref_oks_coco(cand, kept, kept_area, sigmas):
    """COCO OKS, the kept pose as GT: mean over all K joints of exp(-d² / (2 · s² · k²)), k = 2σ, s² = area."""
    total = 0.0
    for j, sigma in enumerate(sigmas):
        d2 = (cand[j][0] - kept[j][0]) ** 2 + (cand[j][1] - kept[j][1]) ** 2
        total += math.exp(-d2 / (2 * (kept_area + EPS) * (2 * sigma) ** 2))
    return total / len(sigmas)


def ref_oks_posedet(a, b, area_a, area_b, sigmas):
    """PoseDet OKS: mean over joints labelled in both of exp(-d² / ((2σ)² · (area_a + area_b) / 2)); 0 if none."""
    area = (area_a + area_b) / 2 + EPS
    terms = [math.exp(-((a[j][0] - b[j][0]) ** 2 + (a[j][1] - b[j][1]) ** 2) / ((2 * sigma) ** 2 * area))
             for j, sigma in enumerate(sigmas) if ref_labelled(a, j) and ref_labelled(b, j)]
    return sum(terms) / len(terms) if terms else 0.0


def ref_iou(a, b):
    ax1, ay1, ax2, ay2 = ref_box(a)
    bx1, by1, bx2, by2 = ref_box(b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def ref_greedy(scores, similarity, threshold):
    """Best first (Python's sort is stable: ties lower index first); keep unless too similar to a kept one."""
    keep = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if all(similarity(i, k) <= threshold for k in keep):
            keep.append(i)
    return keep


def ref_oks_nms(poses, scores, sigmas, threshold, areas, form):
    p = poses.tolist()
    areas = [ref_area(pose) for pose in p] if areas is None else list(areas)
    if form == "coco":
        sim = lambda c, k: ref_oks_coco(p[c], p[k], areas[k], sigmas)          # noqa: E731
    else:
        sim = lambda c, k: ref_oks_posedet(p[c], p[k], areas[c], areas[k], sigmas)   # noqa: E731
    return ref_greedy(scores.tolist(), sim, threshold)


# ----------------------------------------------------------------------------- random pose sets

def random_poses(rng, n, k, with_v=True):
    """n poses of about n / 3 people (duplicates with 0 to 12 px noise), scores rounded to 0.1 (ties),
    some joints unlabelled (v = 0, coordinates 0 or garbage), one pose with no and one with one labelled joint."""
    people = max(1, n // 3)
    spread = rng.uniform(10, 40, (people, 1, 1))
    centres = rng.uniform(0, 400, (people, 1, 2)) + rng.normal(size=(people, k, 2)) * spread
    xy = centres[rng.integers(0, people, n)] + rng.normal(size=(n, k, 2)) * rng.uniform(0, 12, (n, 1, 1))
    scores = np.round(rng.random(n), 1)
    if not with_v:
        return xy, scores
    v = rng.choice([0.0, 1.0, 2.0], size=(n, k), p=[0.25, 0.25, 0.5])
    if n > 2:
        v[1] = 0
        v[2] = 0
        v[2, 3] = 2
    garbage = rng.random((n, k, 1)) < 0.5
    xy = np.where((v[..., None] == 0) & garbage, 0.0, xy)
    return np.concatenate([xy, v[..., None]], axis=2), scores


CASES = [(seed, n, schema) for seed in range(4) for n in (0, 1, 2, 9, 60) for schema in (COCO17, CROWDPOSE14)]


@pytest.mark.parametrize("form", ["coco", "posedet"])
@pytest.mark.parametrize("seed,n,schema", CASES, ids=lambda x: getattr(x, "name", str(x)))
def test_oks_nms_equals_loop_reference(seed, n, schema, form):
    rng = np.random.default_rng(seed)
    poses, scores = random_poses(rng, n, len(schema.sigmas), with_v=seed % 2 == 0)
    sigmas = schema.sigmas_array
    given_areas = rng.uniform(500, 5000, n)
    for areas in (None, given_areas):
        for threshold in (0.2, 0.5, 0.8, 0.95):
            keep = oks_nms(poses, scores, sigmas, threshold, areas=areas, form=form)
            assert keep.dtype == np.int64 and keep.shape == (len(keep),)
            assert keep.tolist() == ref_oks_nms(poses, scores, sigmas, threshold, areas, form)
    if n == 60:   # the sets are meant to have suppression, and not of everything
        keep = oks_nms(poses, scores, sigmas, 0.5, form=form)
        assert 5 < len(keep) < 60


@pytest.mark.parametrize("form", ["coco", "posedet"])
def test_oks_matrix_equals_loop_reference(form):
    rng = np.random.default_rng(11)
    poses, _ = random_poses(rng, 12, 17)
    sigmas = COCO17.sigmas_array
    areas = joint_extent_areas(poses)
    p = poses.tolist()
    if form == "coco":
        ref = [[ref_oks_coco(p[c], p[k], areas[k], sigmas) for k in range(12)] for c in range(12)]
    else:
        ref = [[ref_oks_posedet(p[c], p[k], areas[c], areas[k], sigmas) for k in range(12)] for c in range(12)]
    np.testing.assert_allclose(oks_matrix(poses, sigmas, form=form), ref, rtol=1e-12, atol=1e-300)


def test_joint_extent_boxes_and_areas():
    poses = np.array([[[1.0, 5.0, 2], [4.0, 2.0, 1], [100.0, 100.0, 0]],    # v = 0 joint left out
                      [[0.0, 0.0, 0], [7.0, 7.0, 0], [9.0, 9.0, 0]],        # none labelled: zeros
                      [[3.0, 3.0, 2], [0.0, 0.0, 0], [0.0, 0.0, 0]]])       # one labelled: area 0
    np.testing.assert_array_equal(joint_extent_boxes(poses), [[1, 2, 4, 5], [0, 0, 0, 0], [3, 3, 3, 3]])
    np.testing.assert_array_equal(joint_extent_areas(poses), [9.0, 0.0, 0.0])
    np.testing.assert_array_equal(joint_extent_boxes(poses[..., :2])[0], [1, 2, 100, 100])   # (N, K, 2): all
    assert joint_extent_boxes(np.zeros((0, 3, 3))).shape == (0, 4)


# ----------------------------------------------------------------------------- hand-worked cases

SIG2 = np.array([0.1, 0.1])            # k = 2σ = 0.2, k² = 0.04


def test_coco_form_hand_worked():
    # A: (0, 0), (10, 10); B: A shifted by 1 px in x. Both joint-extent areas are 10 · 10 = 100.
    # d² = 1 at both joints → OKS = exp(-1 / (2 · 100 · 0.04)) = exp(-0.125) ≈ 0.88250.
    a = [[0.0, 0.0], [10.0, 10.0]]
    poses = np.array([a, [[1.0, 0.0], [11.0, 10.0]]])
    scores = np.array([0.9, 0.8])
    assert oks_matrix(poses, SIG2)[1, 0] == pytest.approx(math.exp(-0.125), rel=1e-14)
    assert oks_nms(poses, scores, SIG2, 0.882).tolist() == [0]          # 0.8825 > 0.882: B dropped
    assert oks_nms(poses, scores, SIG2, 0.883).tolist() == [0, 1]
    # The kept pose's area is the scale. C: (0, 0), (10, 12): area 120, d² = 4 at joint 1 only.
    #   kept A (area 100): OKS = (1 + exp(-4 / (2 · 100 · 0.04))) / 2 = (1 + exp(-0.5)) / 2  ≈ 0.80327
    #   kept C (area 120): OKS = (1 + exp(-4 / (2 · 120 · 0.04))) / 2 = (1 + exp(-5/12)) / 2 ≈ 0.82962
    poses = np.array([a, [[0.0, 0.0], [10.0, 12.0]]])
    assert oks_nms(poses, np.array([0.9, 0.8]), SIG2, 0.81).tolist() == [0, 1]   # 0.80327 <= 0.81
    assert oks_nms(poses, np.array([0.8, 0.9]), SIG2, 0.81).tolist() == [1]      # 0.82962 > 0.81
    assert oks_nms(poses, np.array([0.8, 0.9]), SIG2, 0.83).tolist() == [1, 0]


def test_posedet_form_hand_worked():
    # Same A, B as above: area (100 + 100) / 2 = 100, no ½: OKS = exp(-1 / (0.04 · 100)) = exp(-0.25) ≈ 0.77880.
    # A third joint unlabelled in A (v = 0, far away) does not count.
    poses = np.array([[[0.0, 0.0, 2], [10.0, 10.0, 2], [90.0, 90.0, 0]],
                      [[1.0, 0.0, 2], [11.0, 10.0, 1], [5.0, 5.0, 2]]])
    sig3 = np.full(3, 0.1)
    scores = np.array([0.9, 0.8])
    assert oks_matrix(poses, sig3, form="posedet")[1, 0] == pytest.approx(math.exp(-0.25), rel=1e-14)
    assert oks_nms(poses, scores, sig3, 0.778, form="posedet").tolist() == [0]
    assert oks_nms(poses, scores, sig3, 0.779, form="posedet").tolist() == [0, 1]
    # Mean of the two areas, symmetric: A area 100, C: (0, 0), (10, 12) area 120 → 110; d² = 0 and 4:
    # OKS = (1 + exp(-4 / (0.04 · 110))) / 2 = (1 + exp(-10/11)) / 2 ≈ 0.70145, whichever is kept.
    poses = np.array([[[0.0, 0.0], [10.0, 10.0]], [[0.0, 0.0], [10.0, 12.0]]])
    sim = oks_matrix(poses, SIG2, form="posedet")
    assert sim[0, 1] == sim[1, 0] == pytest.approx((1 + math.exp(-10 / 11)) / 2, rel=1e-14)
    for s in ([0.9, 0.8], [0.8, 0.9]):
        assert len(oks_nms(poses, np.array(s), SIG2, 0.701, form="posedet")) == 1
        assert len(oks_nms(poses, np.array(s), SIG2, 0.702, form="posedet")) == 2
    # No joint labelled in both: OKS 0.
    poses = np.array([[[0.0, 0.0, 2], [0.0, 0.0, 0]], [[0.0, 0.0, 0], [0.0, 0.0, 2]]])
    np.testing.assert_array_equal(oks_matrix(poses, SIG2, form="posedet")[0, 1], 0.0)


def test_iou_nms_hand_worked():
    # Boxes [0, 10]² (area 100) and [5, 15] × [0, 10] (area 100): intersection 50, union 150 → IoU 1/3.
    poses = np.array([[[0.0, 0.0], [10.0, 10.0]], [[5.0, 0.0], [15.0, 10.0]]])
    scores = np.array([0.5, 0.7])
    assert iou_nms(poses, scores, 0.33).tolist() == [1]
    assert iou_nms(poses, scores, 0.34).tolist() == [1, 0]


# ----------------------------------------------------------------------------- COCO form = the previous oks_nms

def test_coco_form_equals_previous_eval_oks_nms():
    # Expected indices computed with the previous poseharness.eval.oks.oks_nms(poses, scores, areas, sigmas, t)
    # on exactly this input, before it was removed.
    rng = np.random.default_rng(7)
    people = rng.uniform(0, 300, (8, 1, 2)) + rng.normal(size=(8, 17, 2)) * 25
    poses = np.repeat(people, 3, axis=0) + rng.normal(size=(24, 17, 2)) * rng.uniform(0, 8, (24, 1, 1))
    scores = np.round(rng.random(24), 1)
    areas = rng.uniform(800, 3000, 24)
    expected = {
        0.3: [4, 13, 8, 11, 16, 18, 22, 2, 12, 21],
        0.5: [4, 13, 8, 11, 16, 18, 22, 9, 2, 3, 7, 12, 1, 14, 17, 21, 23],
        0.7: [4, 13, 8, 11, 16, 18, 22, 9, 2, 3, 7, 12, 20, 0, 1, 6, 14, 17, 15, 21, 23],
        0.9: [4, 13, 8, 11, 16, 18, 22, 9, 2, 3, 7, 19, 12, 20, 0, 1, 6, 5, 14, 17, 15, 21, 23],
    }
    for t, keep in expected.items():
        assert oks_nms(poses, scores, COCO17.sigmas_array, t, areas=areas).tolist() == keep


@pytest.mark.parametrize("seed", range(3))
def test_coco_form_is_eval_oks_with_kept_pose_as_gt(seed):
    # The previous oks_nms was eval.oks(candidates, kept poses as GTs with all joints labelled, kept areas):
    # the same numbers, bit for bit, with or without a third column.
    rng = np.random.default_rng(seed)
    poses, _ = random_poses(rng, 30, 17)
    areas = rng.uniform(0, 4000, 30)
    as_gt = np.concatenate([poses[..., :2], np.ones((30, 17, 1))], axis=2)
    expected = oks(poses, as_gt, areas, COCO17.sigmas_array)
    np.testing.assert_array_equal(oks_matrix(poses, COCO17.sigmas_array, areas=areas), expected)
    np.testing.assert_array_equal(oks_matrix(poses[..., :2], COCO17.sigmas_array, areas=areas), expected)


# ----------------------------------------------------------------------------- IoU-NMS

@pytest.mark.parametrize("seed,n,schema", CASES, ids=lambda x: getattr(x, "name", str(x)))
def test_iou_nms_equals_loop_reference(seed, n, schema):
    rng = np.random.default_rng(100 + seed)
    poses, scores = random_poses(rng, n, len(schema.sigmas), with_v=seed % 2 == 0)
    if n > 4:
        poses[4] = poses[3]                  # identical boxes: IoU 1
        poses[0] = poses[1]                  # (with v) no labelled joint twice: zero boxes, never suppress
    p = poses.tolist()
    for threshold in (0.0, 0.3, 0.5, 0.7, 0.99):
        keep = iou_nms(poses, scores, threshold)
        assert keep.dtype == np.int64
        assert keep.tolist() == ref_greedy(scores.tolist(), lambda c, k: ref_iou(p[c], p[k]), threshold)


# ----------------------------------------------------------------------------- pose_nms and its setting

def test_pose_nms_dispatches():
    rng = np.random.default_rng(5)
    poses, scores = random_poses(rng, 40, 17)
    sigmas = COCO17.sigmas_array
    for form in ("coco", "posedet"):
        setting = {"type": "oks", "threshold": 0.5, "form": form}
        np.testing.assert_array_equal(pose_nms(poses, scores, setting, sigmas),
                                      oks_nms(poses, scores, sigmas, 0.5, form=form))
        np.testing.assert_array_equal(pose_nms(poses, scores, PoseNMSSetting(**setting), sigmas),
                                      oks_nms(poses, scores, sigmas, 0.5, form=form))
    assert PoseNMSSetting.from_dict({"type": "oks", "threshold": 0.5}).form == "coco"
    np.testing.assert_array_equal(pose_nms(poses, scores, {"type": "iou", "threshold": 0.6}, sigmas),
                                  iou_nms(poses, scores, 0.6))
    keep_all = pose_nms(poses, scores, {"type": "none"}, sigmas)
    assert keep_all.tolist() == sorted(range(40), key=lambda i: -scores[i])
    assert pose_nms(np.zeros((0, 17, 3)), np.zeros(0), {"type": "none"}, sigmas).shape == (0,)


@pytest.mark.parametrize("setting,words", [
    ({"type": "soft", "threshold": 0.5}, ["type", "'soft'", "oks", "iou", "none"]),
    ({"type": "oks", "threshold": 0.5, "form": "mmpose"}, ["form", "'mmpose'", "coco", "posedet"]),
    ({"type": "oks", "thresh": 0.5}, ["'thresh'", "type", "threshold", "form"]),
    ({"type": "oks"}, ["threshold", "None"]),
    ({"type": "iou", "threshold": "0.5"}, ["threshold", "'0.5'"]),
    ({"type": "oks", "threshold": 1.5}, ["threshold", "1.5"]),
    ({"type": "oks", "threshold": True}, ["threshold", "True"]),
    ("oks", ["pose NMS setting", "mapping"]),
])
def test_bad_settings_raise_harness_error(setting, words):
    with pytest.raises(HarnessError) as info:
        pose_nms(np.zeros((1, 17, 3)), np.ones(1), setting, COCO17.sigmas_array)
    for word in words:
        assert word in str(info.value)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="scores"):
        oks_nms(np.zeros((2, 17, 3)), np.zeros(3), COCO17.sigmas_array, 0.5)
    with pytest.raises(ValueError, match="shapes disagree"):
        oks_nms(np.zeros((2, 17, 3)), np.zeros(2), CROWDPOSE14.sigmas_array, 0.5)
    with pytest.raises(ValueError, match="poses"):
        iou_nms(np.zeros((2, 17)), np.zeros(2), 0.5)
