"""GOG greedy offset-guided grouping: hand-worked limbs and assembly rules, ground-truth round trips."""
from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from poseharness.errors import HarnessError
from poseharness.contract import method_submodule
from poseharness.methods import load_method

_grouping = method_submodule(load_method("gog"), "grouping")
candidate_limbs, group = _grouping.candidate_limbs, _grouping.group
from poseharness.schemas import GOG19, GOG44

SKELETONS = {"gog19": GOG19, "gog44": GOG44}

# A standing COCO person of unit height (x right, y down), anchored at the top of the head.
TEMPLATE = np.array([
    [0.00, 0.05], [0.03, 0.03], [-0.03, 0.03], [0.06, 0.05], [-0.06, 0.05],
    [0.12, 0.20], [-0.12, 0.20], [0.16, 0.38], [-0.16, 0.38], [0.18, 0.52], [-0.18, 0.52],
    [0.08, 0.55], [-0.08, 0.55], [0.09, 0.75], [-0.09, 0.75], [0.10, 0.95], [-0.10, 0.95],
])


def make_persons(rng, anchors, height=200.0, missing=0.0):
    """``(P, 17, 3)`` [x, y, v] ground-truth persons at ``anchors`` (head top), with jitter and missing keypoints."""
    anchors = np.asarray(anchors, dtype=float)
    xy = TEMPLATE[None] * height + anchors[:, None, :] + rng.normal(0, 0.01 * height, (len(anchors), 17, 2))
    v = (rng.random((len(anchors), 17)) >= missing).astype(float) * 2
    return np.concatenate([np.round(xy, 2), v[..., None]], axis=-1)


def encode(persons, skeleton, k, rng, *, noise=0.0):
    """Perfect network outputs: one candidate per visible keypoint (shuffled) and guides J_to - J_from.

    A start whose person lacks the end keypoint gets a zero guide, as the ground-truth offset encoder
    writes nothing there.
    """
    n_types = persons.shape[1]
    peaks = np.zeros((n_types, k, 3))
    who = np.full((n_types, k), -1)
    for c in range(n_types):
        ids = rng.permutation(np.flatnonzero(persons[:, c, 2] > 0))
        peaks[c, :len(ids), :2] = persons[ids, c, :2]
        peaks[c, :len(ids), 2] = rng.uniform(0.3, 1.0, len(ids))
        who[c, :len(ids)] = ids
    guides = np.zeros((len(skeleton), k, 2))
    for l, (a, b) in enumerate(skeleton):
        p = who[a]
        ok = (p >= 0) & (persons[np.maximum(p, 0), b, 2] > 0)
        guides[l, ok] = persons[p[ok], b, :2] - persons[p[ok], a, :2] + rng.normal(0, noise, (ok.sum(), 2))
    return peaks, guides


def keypoint_sets(poses):
    """Multiset of persons, each the frozenset of its (type, x, y) in float32."""
    poses = np.asarray(poses, dtype=np.float32)
    return Counter(frozenset((c, float(x), float(y)) for c, (x, y, s) in enumerate(pose) if s > 0)
                   for pose in poses)


def expected_sets(persons, skeleton):
    """What perfect grouping returns: per person, each skeleton-connected set of >= 2 visible keypoints."""
    out = Counter()
    edges = np.asarray(skeleton)
    for person in np.asarray(persons, dtype=np.float32):
        vis = person[:, 2] > 0
        e = edges[vis[edges[:, 0]] & vis[edges[:, 1]]]
        graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(len(vis), len(vis)))
        _, labels = connected_components(graph, directed=False)
        for lab in np.unique(labels[vis]):
            part = np.flatnonzero(vis & (labels == lab))
            if len(part) >= 2:
                out[frozenset((int(c), float(person[c, 0]), float(person[c, 1])) for c in part)] += 1
    return out


def check_scores(poses, scores):
    present = poses[..., 2] > 0
    np.testing.assert_allclose(scores, poses[..., 2].sum(1) / present.sum(1), rtol=1e-6)
    assert np.all(np.diff(scores) <= 0)
    assert np.all(poses[~present] == 0)


# ----------------------------------------------------------------------------------------- hand-worked limbs

def hand_case():
    peaks = np.zeros((2, 3, 3))
    peaks[0, 0] = [10, 10, 0.8]
    peaks[1] = [[43, 14, 0.5], [40, 30, 0.9], [100, 100, 0.7]]
    guides = np.zeros((1, 3, 2))
    guides[0, 0] = [30, 0]  # J_guid = (40, 10): 5 px from (43, 14), 20 px from (40, 30)
    return peaks, guides


def test_limb_score_and_nearest_end_by_hand():
    peaks, guides = hand_case()
    limbs = candidate_limbs(peaks, guides, [(0, 1)])
    assert limbs.end.tolist() == [[0, -1, -1]]  # the nearest end, not the higher-scoring one
    assert limbs.offset_error[0, 0] == pytest.approx(5.0)
    assert limbs.length[0, 0] == pytest.approx(np.sqrt(33 ** 2 + 4 ** 2))
    assert limbs.score[0, 0] == pytest.approx(0.8 * 0.5 * np.exp(-5.0 / np.sqrt(1105.0)))
    assert limbs.valid.tolist() == [[True, False, False]]

    poses, scores = group(peaks, guides, [(0, 1)])
    np.testing.assert_array_equal(poses, np.float32([[[10, 10, 0.8], [43, 14, 0.5]]]))
    np.testing.assert_allclose(scores, [0.65])


def test_dist_max_is_a_strict_cut():
    peaks, guides = hand_case()
    assert not candidate_limbs(peaks, guides, [(0, 1)], dist_max=5.0).valid.any()
    assert len(group(peaks, guides, [(0, 1)], dist_max=5.0)[0]) == 0
    assert len(group(peaks, guides, [(0, 1)], dist_max=5.001)[0]) == 1


def test_min_len_clamps_coincident_endpoints():
    peaks = np.array([[[7, 7, 0.5]], [[7, 7, 0.4]]], dtype=float)
    guides = np.array([[[1.0, 0.0]]])
    limbs = candidate_limbs(peaks, guides, [(0, 1)], min_len=0.5)
    assert limbs.length[0, 0] == 0.5
    assert limbs.score[0, 0] == pytest.approx(0.5 * 0.4 * np.exp(-1 / 0.5))


def test_equidistant_ends_prefer_the_higher_score():
    peaks = np.zeros((2, 3, 3))
    peaks[0, 0] = [0, 0, 1.0]
    peaks[1] = [[10, 3, 0.4], [10, -3, 0.9], [10, 3, 0.9]]  # all 3 px from J_guid = (10, 0)
    guides = np.zeros((1, 3, 2))
    guides[0, 0] = [10, 0]
    assert candidate_limbs(peaks, guides, [(0, 1)]).end[0, 0] == 1  # higher score, then lower index


def test_nan_guide_and_empty_slots_give_no_limb():
    peaks, guides = hand_case()
    guides[0, 0] = [np.nan, 0]
    assert not candidate_limbs(peaks, guides, [(0, 1)]).valid.any()
    assert len(group(peaks, guides, [(0, 1)])[0]) == 0


def test_best_limb_per_end_keypoint():
    # Two starts guide to the same end: the stronger limb takes it, the other start stays alone.
    peaks = np.zeros((2, 2, 3))
    peaks[0] = [[0, 0, 0.9], [100, 0, 0.6]]
    peaks[1, 0] = [50, 0, 0.8]
    guides = np.array([[[50, 0], [-48, 0]]], dtype=float)
    limbs = candidate_limbs(peaks, guides, [(0, 1)])
    assert limbs.valid[0].tolist() == [True, True] and limbs.end[0].tolist() == [0, 0]
    poses, _ = group(peaks, guides, [(0, 1)])
    np.testing.assert_array_equal(poses, np.float32([[[0, 0, 0.9], [50, 0, 0.8]]]))


# ------------------------------------------------------------------------------------- hand-worked assembly

def test_fragments_merge_when_a_later_limb_connects_them():
    peaks = np.zeros((4, 1, 3))
    peaks[:, 0] = [[0, 0, 0.9], [10, 0, 0.8], [20, 0, 0.7], [30, 0, 0.6]]
    step = np.array([10.0, 0.0])
    merged, _ = group(peaks, np.tile(step, (3, 1, 1)), [(0, 1), (2, 3), (1, 2)])
    np.testing.assert_array_equal(merged, peaks[:, 0][None].astype(np.float32))
    apart, scores = group(peaks, np.tile(step, (2, 1, 1)), [(0, 1), (2, 3)])
    assert keypoint_sets(apart) == Counter([frozenset({(0, 0.0, 0.0), (1, 10.0, 0.0)}),
                                            frozenset({(2, 20.0, 0.0), (3, 30.0, 0.0)})])
    np.testing.assert_allclose(scores, [0.85, 0.65])


def test_persons_sharing_a_keypoint_type_are_not_merged():
    # A = {0: x0, 1: y} and B = {0: x1, 2: z}; the limb y -> z joins them, but both hold a type-0 keypoint.
    peaks = np.zeros((3, 2, 3))
    peaks[0] = [[0, 0, 0.9], [100, 0, 0.9]]
    peaks[1, 0] = [10, 0, 0.8]
    peaks[2, 0] = [110, 0, 0.8]
    guides = np.zeros((3, 2, 2))
    guides[0] = [[10, 0], [0, 0]]  # x0 -> y; x1's guide lands 90 px from y: no limb
    guides[1] = [[200, 200], [10, 0]]  # x0 guides nowhere; x1 -> z
    guides[2, 0] = [100, 0]  # y -> z
    skeleton = [(0, 1), (0, 2), (1, 2)]
    poses, _ = group(peaks, guides, skeleton)
    assert keypoint_sets(poses) == Counter([frozenset({(0, 0.0, 0.0), (1, 10.0, 0.0)}),
                                            frozenset({(0, 100.0, 0.0), (2, 110.0, 0.0)})])
    # Without x1 there is no B, and the same limb attaches z to A.
    peaks[0, 1, 2] = 0
    poses, _ = group(peaks, guides, skeleton)
    assert keypoint_sets(poses) == Counter([frozenset({(0, 0.0, 0.0), (1, 10.0, 0.0), (2, 110.0, 0.0)})])


@pytest.mark.parametrize("s_alt, replaced", [(0.4, True), (0.2, False)])
def test_stronger_limb_replaces_a_held_keypoint(s_alt, replaced):
    # Limbs n->e (S=0.5), e->w (S=0.25) build A = {n, e, w}; then n->w' with S = s_alt. The official rule:
    # w' replaces w iff S beats the stored limb score at either endpoint slot (0.5 at n, 0.25 at w).
    # A last limb w->x then shows where w ended up: released (a new person {w, x}) or still in A.
    peaks = np.zeros((4, 2, 3))
    peaks[0, 0] = [0, 0, 1.0]
    peaks[1, 0] = [10, 0, 0.5]
    peaks[2] = [[20, 0, 0.5], [0, 20, s_alt]]
    peaks[3, 0] = [20, 30, 0.8]
    guides = np.zeros((4, 2, 2))
    guides[0, 0] = [10, 0]
    guides[1, 0] = [10, 0]
    guides[2, 0] = [0, 20]
    guides[3] = [[0, 30], [300, 300]]
    skeleton = [(0, 1), (1, 2), (0, 2), (2, 3)]
    limbs = candidate_limbs(peaks, guides, skeleton)
    np.testing.assert_allclose(limbs.score[:3, 0], [0.5, 0.25, s_alt])
    poses, _ = group(peaks, guides, skeleton)
    n, e, w, w_alt, x = (0, 0.0, 0.0), (1, 10.0, 0.0), (2, 20.0, 0.0), (2, 0.0, 20.0), (3, 20.0, 30.0)
    if replaced:
        expected = [frozenset({n, e, w_alt}), frozenset({w, x})]
    else:
        expected = [frozenset({n, e, w, x})]
    assert keypoint_sets(poses) == Counter(expected)


def test_best_limb_per_end_even_when_it_is_refused():
    # R = {f1, c1, t'} is built by strong limbs; then f1 -> t (S=0.5) is refused (R's slots hold 1.0) and
    # f2 -> t (S=0.3) must not take t: only the best limb per end keypoint takes part.
    peaks = np.zeros((3, 2, 3))
    peaks[0] = [[0, 0, 1.0], [100, 0, 0.6]]  # f1, f2
    peaks[1] = [[10, 10, 1.0], [50, 0, 0.5]]  # t', t
    peaks[2, 0] = [0, 10, 1.0]  # c1
    guides = np.zeros((3, 2, 2))
    guides[0] = [[0, 10], [300, 300]]  # (0, 2): f1 -> c1
    guides[1, 0] = [10, 0]  # (2, 1): c1 -> t'
    guides[2] = [[50, 0], [-50, 0]]  # (0, 1): f1 -> t, f2 -> t
    skeleton = [(0, 2), (2, 1), (0, 1)]
    np.testing.assert_allclose(candidate_limbs(peaks, guides, skeleton).score[2], [0.5, 0.3])
    poses, _ = group(peaks, guides, skeleton)
    assert keypoint_sets(poses) == Counter([frozenset({(0, 0.0, 0.0), (1, 10.0, 10.0), (2, 0.0, 10.0)})])


def test_score_modes_threshold_and_order():
    # Three 2- or 3-keypoint persons on a chain skeleton, created in increasing-score order.
    peaks = np.zeros((5, 3, 3))
    peaks[0] = [[0, 0, 0.05], [0, 100, 0.1], [0, 200, 0.9]]
    peaks[1] = [[10, 0, 0.05], [10, 100, 0.05], [10, 200, 0.6]]
    peaks[2, 2] = [20, 200, 0.3]
    guides = np.zeros((2, 3, 2))
    guides[:, :] = [10, 0]
    skeleton = [(0, 1), (1, 2)]

    poses, scores = group(peaks, guides, skeleton, score_mode="mean")
    np.testing.assert_allclose(scores, [0.6, 0.075], rtol=1e-6)  # mean 0.05 < 0.06 dropped
    assert poses[0, :3, 1].tolist() == [200, 200, 200] and poses[1, 2].tolist() == [0, 0, 0]

    _, scores = group(peaks, guides, skeleton, score_mode="sum_over_K")
    np.testing.assert_allclose(scores, [1.8 / 5, 0.15 / 5], rtol=1e-6)  # threshold still on the mean

    assert len(group(peaks, guides, skeleton, person_threshold=0.1)[0]) == 1
    assert len(group(peaks, guides, skeleton, person_threshold=0.0)[0]) == 3
    assert len(group(peaks, guides, skeleton, person_threshold=0.05)[0]) == 3  # kept when equal (>=)
    with pytest.raises(HarnessError, match="score_mode"):
        group(peaks, guides, skeleton, score_mode="max")


def test_peak_threshold_ignores_weak_candidates():
    peaks, guides = hand_case()
    assert len(group(peaks, guides, [(0, 1)], peak_threshold=0.5)[0]) == 1
    assert len(group(peaks, guides, [(0, 1)], peak_threshold=0.51)[0]) == 0  # (43, 14) has score 0.5


# --------------------------------------------------------------------------------------------- edge cases

def test_no_candidates():
    for peaks, guides in [(np.zeros((17, 32, 3)), np.zeros((19, 32, 2))),
                          (np.zeros((17, 0, 3)), np.zeros((19, 0, 2)))]:
        poses, scores = group(peaks, guides, GOG19)
        assert poses.shape == (0, 17, 3) and scores.shape == (0,)
        assert poses.dtype == np.float32 and scores.dtype == np.float32
    # Candidates of one type only: no limb, no person (isolated keypoints never form persons).
    peaks = np.zeros((17, 4, 3))
    peaks[0, :2] = [[5, 5, 0.9], [50, 5, 0.9]]
    assert group(peaks, np.zeros((19, 4, 2)), GOG19)[0].shape == (0, 17, 3)
    assert group(peaks, np.zeros((0, 4, 2)), [])[0].shape == (0, 17, 3)


def test_bad_inputs_raise_harness_errors():
    with pytest.raises(HarnessError, match="peaks"):
        group(np.zeros((17, 4, 2)), np.zeros((19, 4, 2)), GOG19)
    with pytest.raises(HarnessError, match="guides"):
        group(np.zeros((17, 4, 3)), np.zeros((19, 5, 2)), GOG19)
    with pytest.raises(HarnessError, match="guides"):
        group(np.zeros((17, 4, 3)), np.zeros((19, 4, 2)), GOG44)
    with pytest.raises(HarnessError, match="outside"):
        group(np.zeros((5, 4, 3)), np.zeros((19, 4, 2)), GOG19)
    with pytest.raises(HarnessError, match="itself"):
        group(np.zeros((5, 4, 3)), np.zeros((1, 4, 2)), [(2, 2)])


def test_torch_inputs_give_the_numpy_result():
    rng = np.random.default_rng(3)
    persons = make_persons(rng, [[100, 50], [400, 60]])
    peaks, guides = encode(persons, GOG19, 8, rng)
    ref = group(peaks, guides, GOG19)
    got = group(torch.from_numpy(peaks).float(), torch.from_numpy(guides).float(), GOG19)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-6)
    assert isinstance(got[0], np.ndarray) and isinstance(got[1], np.ndarray)


# ---------------------------------------------------------------------------------- ground-truth round trips

def test_one_person():
    rng = np.random.default_rng(0)
    persons = make_persons(rng, [[300, 40]])
    peaks, guides = encode(persons, GOG19, 32, rng)
    poses, scores = group(peaks, guides, GOG19)
    assert poses.shape == (1, 17, 3)
    np.testing.assert_array_equal(poses[0, :, :2], persons[0, :, :2].astype(np.float32))
    np.testing.assert_allclose(scores, [peaks[:, 0, 2].mean()], rtol=1e-6)


@pytest.mark.parametrize("name", SKELETONS)
def test_well_separated_persons(name):
    rng = np.random.default_rng(1)
    skeleton = SKELETONS[name]
    persons = make_persons(rng, [[100 + 300 * i, 50 + 40 * i] for i in range(5)])
    peaks, guides = encode(persons, skeleton, 32, rng)
    poses, scores = group(peaks, guides, skeleton)
    assert len(poses) == 5
    assert keypoint_sets(poses) == expected_sets(persons, skeleton)
    check_scores(poses, scores)


def box_iou(a, b):
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(hi - lo, 0, None))
    area = lambda r: np.prod(r[2:] - r[:2])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("name", SKELETONS)
def test_heavily_overlapping_persons(name):
    rng = np.random.default_rng(2)
    skeleton = SKELETONS[name]
    persons = make_persons(rng, [[200 + 6 * i, 40 + 3 * i] for i in range(4)])
    boxes = np.concatenate([persons[..., :2].min(1), persons[..., :2].max(1)], axis=1)
    assert min(box_iou(boxes[i], boxes[j]) for i in range(4) for j in range(i + 1, 4)) > 0.5
    peaks, guides = encode(persons, skeleton, 32, rng)
    poses, scores = group(peaks, guides, skeleton)
    assert len(poses) == 4
    assert keypoint_sets(poses) == expected_sets(persons, skeleton)
    check_scores(poses, scores)


@pytest.mark.parametrize("name", SKELETONS)
def test_missing_keypoints(name):
    rng = np.random.default_rng(4)
    skeleton = SKELETONS[name]
    persons = make_persons(rng, [[150 + 300 * i, 50] for i in range(8)], missing=0.35)
    peaks, guides = encode(persons, skeleton, 32, rng)
    poses, scores = group(peaks, guides, skeleton)
    expected = expected_sets(persons, skeleton)
    assert keypoint_sets(poses) == expected
    assert sum(expected.values()) >= 8  # some persons fall apart into fragments
    check_scores(poses, scores)


def test_missing_hips_split_gog19_but_not_gog44():
    rng = np.random.default_rng(5)
    persons = make_persons(rng, [[200, 50]])
    persons[0, [11, 12], 2] = 0
    for name, n_parts in [("gog19", 3), ("gog44", 1)]:
        peaks, guides = encode(persons, SKELETONS[name], 4, rng)
        poses, _ = group(peaks, guides, SKELETONS[name])
        assert len(poses) == n_parts
        assert keypoint_sets(poses) == expected_sets(persons, SKELETONS[name])
        # GOG19: upper body 0-10 and the legs {13, 15}, {14, 16}, which no GOG19 limb joins;
        # GOG44 joins them through the wrist-knee and knee-knee limbs.
        assert sorted(int((pose[:, 2] > 0).sum()) for pose in poses) == ([2, 2, 11] if name == "gog19" else [15])


@pytest.mark.parametrize("name", SKELETONS)
def test_noisy_guides(name):
    rng = np.random.default_rng(6)
    skeleton = SKELETONS[name]
    anchors = [[100 + 300 * i + 25 * j, 50 + 10 * j] for i in range(3) for j in range(2)]  # 3 close pairs
    persons = make_persons(rng, anchors)
    peaks, guides = encode(persons, skeleton, 16, rng, noise=1.0)
    poses, scores = group(peaks, guides, skeleton)
    assert keypoint_sets(poses) == expected_sets(persons, skeleton)
    check_scores(poses, scores)


@pytest.mark.parametrize("dup_score", ["equal", "lower", "higher"])
def test_duplicated_candidates(dup_score):
    rng = np.random.default_rng(7)
    persons = make_persons(rng, [[100, 50], [400, 50], [700, 50]])
    peaks, guides = encode(persons, GOG44, 8, rng)
    # Copy each candidate of 6 types into a free slot at the same position (its guides are the same).
    factor = {"equal": 1.0, "lower": 0.5, "higher": 1.2}[dup_score]
    for c in [0, 1, 5, 9, 11, 16]:
        for i in range(3):
            peaks[c, 3 + i] = peaks[c, i] * [1, 1, factor]
            for l, (a, _) in enumerate(GOG44):
                if a == c:
                    guides[l, 3 + i] = guides[l, i]
    poses, scores = group(peaks, guides, GOG44)
    assert len(poses) == 3
    assert keypoint_sets(poses) == expected_sets(persons, GOG44)
    check_scores(poses, scores)


def test_thirty_persons_k32_is_fast_and_exact():
    rng = np.random.default_rng(8)
    anchors = [[100 + 250 * (i % 6) + 30 * (i // 6 % 2), 40 + 240 * (i // 6)] for i in range(30)]
    persons = make_persons(rng, anchors)
    peaks, guides = encode(persons, GOG19, 32, rng)
    group(peaks, guides, GOG19)  # warm-up
    t0 = time.perf_counter()
    poses, scores = group(peaks, guides, GOG19)
    elapsed = time.perf_counter() - t0
    print(f"\ngroup(): 30 persons x 17 types x k=32, 19 limbs: {elapsed * 1e3:.1f} ms")
    assert len(poses) == 30
    assert keypoint_sets(poses) == expected_sets(persons, GOG19)
    check_scores(poses, scores)
