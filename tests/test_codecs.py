"""GOG's encoders and decoders: hand-worked values, dense references, round trips, batch/empty behaviour."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from poseharness.codecs import (
    cell_centres,
    dark_refine,
    decode_peaks,
    encode_guiding_offsets,
    encode_heatmaps,
    encode_refinement_offsets,
    guides_for,
    local_maxima,
    peaks_from_upsampled,
    person_scales,
    refine_peaks,
    sample_offsets,
    upsample_maps,
)
from poseharness.errors import HarnessError
from poseharness.schemas import GOG19, GOG44

R = 4
SIGMA = 7.0


def person(points, k=17, v=2):
    """(1, k, 3) keypoints with the given {type: (x, y)} labelled."""
    kps = np.zeros((1, k, 3))
    for t, (x, y) in points.items():
        kps[0, t] = (x, y, v)
    return kps


def random_people(rng, n, k=17, lo=20.0, hi=230.0, integer=False):
    kps = np.zeros((n, k, 3))
    kps[..., :2] = rng.uniform(lo, hi, (n, k, 2))
    if integer:
        kps[..., :2] = np.round(kps[..., :2])
    kps[..., 2] = 2
    return kps


def dense_heatmaps(kps, hw, stride, sigma, min_value, quantise):
    """Reference: the paper's formula on every cell, nearest keypoint by brute force."""
    h, w = hw
    xs, ys = cell_centres(w, stride), cell_centres(h, stride)
    grid = (np.arange(-100, 100 + max(h, w)) * stride + stride / 2 - 0.5)   # the cell grid, extended off the map
    out = np.zeros((kps.shape[1], h, w))
    for p in range(kps.shape[0]):
        for t in range(kps.shape[1]):
            if kps[p, t, 2] <= 0:
                continue
            x, y = kps[p, t, :2]
            if quantise:   # nearest cell centre, found by search rather than by the encoder's formula
                x, y = grid[np.abs(grid - x).argmin()], grid[np.abs(grid - y).argmin()]
            d2 = (xs[None, :] - x) ** 2 + (ys[:, None] - y) ** 2
            out[t] = np.maximum(out[t], np.exp(-d2 / (2 * sigma * sigma)))
    out[out < min_value] = 0
    return out


# ---------------------------------------------------------------- heatmap encoding

def test_keypoint_at_cell_centre_hand_worked():
    u, v = 10, 7
    kps = person({3: (u * R + R / 2 - 0.5, v * R + R / 2 - 0.5)})
    hm = encode_heatmaps(kps, (20, 24), R, sigma=SIGMA)
    assert hm.shape == (17, 20, 24) and hm.dtype == np.float32
    assert hm[3, v, u] == pytest.approx(1.0)
    assert hm[3, v, u + 1] == pytest.approx(math.exp(-R**2 / (2 * SIGMA**2)), rel=1e-6)
    assert hm[3, v - 1, u] == pytest.approx(math.exp(-R**2 / (2 * SIGMA**2)), rel=1e-6)
    assert hm[3, v + 1, u + 1] == pytest.approx(math.exp(-2 * R**2 / (2 * SIGMA**2)), rel=1e-6)
    assert hm[3].max() == hm[3, v, u] and np.count_nonzero(np.delete(hm, 3, axis=0)) == 0
    # 0.01 cut-off: |d| = 5 cells = 20 px along x gives exp(-400/98) = 0.017 (kept), 6 cells = 24 px 0.0028 (cut)
    assert hm[3, v, u + 5] > 0 and hm[3, v, u + 6] == 0


def test_keypoint_between_cells_hand_worked():
    # x on the border between cells 10 and 11 (10*R + R - 0.5), y on the centre of row 5
    kps = person({0: (11 * R - 0.5, 5 * R + R / 2 - 0.5)})
    hm = encode_heatmaps(kps, (12, 16), R, sigma=SIGMA)
    half = math.exp(-(R / 2) ** 2 / (2 * SIGMA**2))
    assert hm[0, 5, 10] == pytest.approx(half, rel=1e-6) and hm[0, 5, 11] == pytest.approx(half, rel=1e-6)
    assert hm[0, 5].max() == pytest.approx(half, rel=1e-6)


def test_heatmaps_match_dense_reference():
    rng = np.random.default_rng(0)
    kps = random_people(rng, 5, lo=-15, hi=140)        # some keypoints off the map: only their tails show
    kps[rng.random(kps.shape[:2]) < 0.3, 2] = 0        # unlabelled ones must not be drawn
    kps[0, :, 2] = 0
    for stride, quantise in [(4, False), (4, True), (1, False), (2, True)]:
        hw = (120 // stride, 128 // stride)
        got = encode_heatmaps(kps, hw, stride, sigma=SIGMA, quantise=quantise)
        ref = dense_heatmaps(kps, hw, stride, SIGMA, 0.01, quantise)
        np.testing.assert_allclose(got, ref, atol=2e-7, err_msg=f"stride {stride} quantise {quantise}")
    assert encode_heatmaps(kps, (30, 32), 4, min_value=0.0).min() >= 0
    np.testing.assert_allclose(encode_heatmaps(kps, (30, 32), 4, min_value=0.0),
                               dense_heatmaps(kps, (30, 32), 4, SIGMA, 0.0, False), atol=2e-7)


def test_two_persons_one_type_take_the_nearest_not_the_sum():
    a, b = (40.0, 40.0), (52.0, 40.0)
    kps = np.concatenate([person({5: a}), person({5: b})])
    hm = encode_heatmaps(kps, (20, 20), R, sigma=SIGMA)
    xs = cell_centres(20, R)
    for u in range(20):
        da, db = abs(xs[u] - a[0]), abs(xs[u] - b[0])
        y = xs[9] - 40.0                                # row 9 centre is 37.5
        expect = math.exp(-(min(da, db) ** 2 + y**2) / (2 * SIGMA**2))
        assert hm[5, 9, u] == pytest.approx(expect if expect >= 0.01 else 0.0, rel=1e-6, abs=1e-7)
    assert hm.max() <= 1.0


def test_quantised_encoding_moves_the_peak_onto_the_grid():
    rng = np.random.default_rng(1)
    kps = random_people(rng, 1)
    hm = encode_heatmaps(kps, (64, 64), R, quantise=True)
    cells = np.floor((kps[0, :, :2] + 0.5) / R).astype(int)        # containing cell
    assert np.allclose(hm[np.arange(17), cells[:, 1], cells[:, 0]], 1.0)
    peaks = decode_peaks(torch.from_numpy(hm), R, topk=2).numpy()
    assert np.all(peaks[:, 1, 2] == 0), "one keypoint must give one peak, even on a plateau"
    centre = cells * R + R / 2 - 0.5
    assert np.all(np.abs(peaks[:, 0, :2] - centre) <= 0.5)
    # quantisation costs up to R/2 per axis, the integer pixel grid another 0.5 (R even: centres at .5)
    err = np.abs(peaks[:, 0, :2] - kps[0, :, :2])
    assert err.max() <= R / 2 + 0.5 and err.max() > 1.0


def test_heatmap_empty_inputs():
    assert not encode_heatmaps(np.zeros((0, 17, 3)), (8, 9), R).any()
    assert encode_heatmaps(np.zeros((0, 17, 3)), (8, 9), R).shape == (17, 8, 9)
    assert not encode_heatmaps(np.zeros((3, 17, 3)), (8, 9), R, quantise=True).any()
    with pytest.raises(HarnessError):
        encode_heatmaps(np.zeros((0, 17, 3)), (8, 9), R, min_value=1.5)


# ---------------------------------------------------------------- peak decoding

def _round_trip_errors(kps, mode, dark=False):
    hms = torch.from_numpy(np.stack([encode_heatmaps(kps[i:i + 1], (64, 64), R) for i in range(len(kps))]))
    peaks = decode_peaks(hms, R, upsample=mode, topk=1, dark=dark).numpy()[:, :, 0]
    assert np.all(peaks[..., 2] > 0.9)
    return np.abs(peaks[..., :2] - kps[..., :2])


def test_round_trip_precise_bicubic():
    rng = np.random.default_rng(2)
    # integer keypoints (COCO's) are restored exactly (paper §2.2); bilinear upsampling cannot do that
    ints = random_people(rng, 12, integer=True)
    assert _round_trip_errors(ints, "bicubic").max() == 0.0
    bilinear = _round_trip_errors(ints, "bilinear")
    assert bilinear.max() >= 1.0 and bilinear.mean() > 0.3
    # real positions: the integer pixel grid plus bicubic's approximation; measured max 0.77 px, mean 0.29 px
    reals = random_people(rng, 12)
    err = _round_trip_errors(reals, "bicubic")
    assert err.max() < 0.8 and err.mean() < 0.32
    assert err.mean() < _round_trip_errors(reals, "bilinear").mean()


def test_dark_beats_argmax_on_gaussian_blobs():
    rng = np.random.default_rng(3)
    kps = random_people(rng, 12)
    plain, dark = _round_trip_errors(kps, "bicubic"), _round_trip_errors(kps, "bicubic", dark=True)
    # measured: argmax mean 0.29 / max 0.77 px, DARK mean 0.008 / max 0.014 px
    assert dark.mean() <= plain.mean() and dark.max() < 0.03


def test_dark_recovers_the_centre_of_a_sampled_gaussian():
    # sub-pixel centres, unequal x/y spreads and a correlation: a swapped axis or a wrong dxy sign shows up
    centres = torch.tensor([[40.3, 37.8], [33.9, 45.45], [45.6, 40.2]], dtype=torch.float64)
    inv_covs = torch.linalg.inv(torch.tensor([[[49.0, 0.0], [0.0, 49.0]], [[80.0, 0.0], [0.0, 20.0]],
                                              [[50.0, 25.0], [25.0, 30.0]]], dtype=torch.float64))
    yy, xx = torch.meshgrid(torch.arange(80.0, dtype=torch.float64), torch.arange(90.0, dtype=torch.float64),
                            indexing="ij")
    hm = []
    for (cx, cy), a in zip(centres, inv_covs):
        dx, dy = xx - cx, yy - cy
        hm.append(torch.exp(-0.5 * (a[0, 0] * dx * dx + 2 * a[0, 1] * dx * dy + a[1, 1] * dy * dy)))
    hm = torch.stack(hm)
    peaks = peaks_from_upsampled(hm, topk=1)
    assert (peaks[:, 0, :2] - centres).abs().max() > 0.3
    refined = dark_refine(hm, peaks)
    assert torch.allclose(refined[:, 0, :2], centres, atol=1e-3)
    assert torch.equal(refined[..., 2], peaks[..., 2])


def test_dark_leaves_border_and_empty_peaks_alone():
    hm = torch.zeros(1, 30, 30)
    hm[0, 1, 15], hm[0, 20, 20] = 1.0, 0.5
    hm[0, 20, 21] = 0.4
    peaks = peaks_from_upsampled(hm, topk=4)
    refined = dark_refine(hm, peaks)
    assert peaks[0, 0].tolist() == [15.0, 1.0, 1.0] and peaks[0, 1].tolist() == [20.0, 20.0, 0.5]
    assert torch.equal(refined[0, 0], peaks[0, 0])       # 1 px from the border: unchanged
    assert 20.0 < refined[0, 1, 0] < 21.0 and refined[0, 1, 1] == 20.0
    assert torch.equal(refined[0, 2:], peaks[0, 2:])     # empty slots
    with pytest.raises(HarnessError):
        dark_refine(hm, peaks, kernel=4)


def test_nms_keeps_one_pixel_of_a_plateau_and_respects_threshold_and_topk():
    heat = torch.zeros(1, 1, 6, 6)
    heat[0, 0, 2:4, 2:4] = 0.5                          # 2x2 plateau
    heat[0, 0, 0, 5] = 0.05                             # below the threshold
    keep = local_maxima(heat)
    assert keep[0, 0, 3, 3] and int(keep[0, 0, 2:4, 2:4].sum()) == 1
    peaks = peaks_from_upsampled(heat[0], topk=40, threshold=0.06)
    assert peaks.shape == (1, 40, 3)
    assert peaks[0, 0].tolist() == [3.0, 3.0, 0.5] and not peaks[0, 1:].any()
    assert decode_peaks(torch.zeros(17, 5, 5), R).abs().sum() == 0
    with pytest.raises(HarnessError):
        decode_peaks(heat[0], R, upsample="nearest")


def test_upsampled_index_is_the_input_pixel():
    # a constant-gradient map x(u) = u*R + R/2 - 0.5 upsampled bilinearly reads the pixel's own x inside
    u = torch.arange(10.0) * R + R / 2 - 0.5
    up = upsample_maps(u.expand(1, 3, 10).clone(), R, "bilinear")[0, 0]
    inner = torch.arange(R // 2, 10 * R - R // 2)
    assert torch.allclose(up[inner], inner.float(), atol=1e-5)


# ---------------------------------------------------------------- refinement offsets

@pytest.mark.parametrize("quantise", [False, True])
@pytest.mark.parametrize("per_type", [False, True])
def test_refinement_offsets_recover_the_exact_position(quantise, per_type):
    rng = np.random.default_rng(4)
    kps = random_people(rng, 16, k=3)
    hms, ros = [], []
    for i in range(len(kps)):
        hms.append(encode_heatmaps(kps[i:i + 1], (64, 64), R, quantise=quantise))
        ro, mask = encode_refinement_offsets(kps[i:i + 1], (64, 64), R, per_type=per_type)
        assert mask.sum() == 27 if per_type else 9 <= mask.sum() <= 27     # three 3x3 windows, maybe overlapping
        ros.append(ro.reshape(-1, 64, 64))
    peaks = decode_peaks(torch.from_numpy(np.stack(hms)), R, topk=1)
    refined = refine_peaks(peaks, torch.from_numpy(np.stack(ros)), R).numpy()
    assert np.abs(refined[:, :, 0, :2] - kps[..., :2]).max() < 1e-3
    assert np.abs(peaks.numpy()[:, :, 0, :2] - kps[..., :2]).max() > 0.3   # there was something to refine


def test_shared_refinement_map_keeps_the_nearer_keypoint():
    kps = person({0: (41.0, 40.0), 1: (47.0, 40.0)}, k=2)
    ro, mask = encode_refinement_offsets(kps, (20, 20), R)
    per, per_mask = encode_refinement_offsets(kps, (20, 20), R, per_type=True)
    assert ro.shape == (2, 20, 20) and per.shape == (2, 2, 20, 20) and per_mask.shape == (2, 20, 20)
    xs = cell_centres(20, R)
    for v, u in zip(*np.nonzero(mask)):
        cands = [np.array([x, y]) - (xs[u], xs[v]) for t, (x, y) in enumerate(kps[0, :, :2])
                 if per_mask[t, v, u]]
        best = min(cands, key=np.linalg.norm)
        np.testing.assert_allclose(ro[:, v, u], best, atol=1e-5)
    assert mask.sum() < per_mask.sum()                  # the two 3x3 windows overlap


# ---------------------------------------------------------------- guiding offsets

def dense_guiding(kps, boxes, skeleton, hw, stride):
    """Reference: 7x7 cells around the cell containing J_from, shorter vector wins, loops everywhere."""
    h, w = hw
    xs, ys = cell_centres(w, stride), cell_centres(h, stride)
    best = np.full((len(skeleton), h, w), np.inf)
    out = np.zeros((len(skeleton), 2, h, w))
    scale = np.ones((len(skeleton), h, w))
    s = np.sqrt(boxes[:, 2] * boxes[:, 3])
    for l, (a, b) in enumerate(skeleton):
        for p in range(kps.shape[0]):
            if kps[p, a, 2] <= 0 or kps[p, b, 2] <= 0:
                continue
            cu, cv = (np.floor((kps[p, a, :2] + 0.5) / stride)).astype(int)
            for v in range(cv - 3, cv + 4):
                for u in range(cu - 3, cu + 4):
                    if 0 <= u < w and 0 <= v < h:
                        vec = kps[p, b, :2] - (xs[u], ys[v])
                        if np.linalg.norm(vec) < best[l, v, u]:
                            best[l, v, u] = np.linalg.norm(vec)
                            out[l, :, v, u] = vec
                            scale[l, v, u] = s[p]
    return out, np.isfinite(best), scale


def test_guiding_offsets_match_dense_reference():
    rng = np.random.default_rng(5)
    kps = random_people(rng, 4, lo=-10, hi=110)
    kps[rng.random(kps.shape[:2]) < 0.25, 2] = 0
    boxes = np.column_stack([np.zeros(4), np.zeros(4), rng.uniform(20, 90, 4), rng.uniform(40, 200, 4)])
    off, mask, scale = encode_guiding_offsets(kps, boxes, GOG19, (26, 25), R)
    ref_off, ref_mask, ref_scale = dense_guiding(kps, boxes, GOG19, (26, 25), R)
    assert off.shape == (19, 2, 26, 25) and off.dtype == np.float32 and mask.dtype == bool
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_allclose(off, ref_off, atol=1e-5)
    np.testing.assert_allclose(scale, ref_scale, rtol=1e-6)


def test_guiding_window_equals_the_official_one_for_integer_keypoints():
    rng = np.random.default_rng(6)
    for x, y in [(100, 100), (102, 98), *rng.integers(30, 200, (20, 2))]:
        kps = person({0: (x, y), 1: (x + 30, y + 5)}, k=2)
        _, mask, _ = encode_guiding_offsets(kps, np.array([[0, 0, 50, 80]]), [(0, 1)], (64, 64), R)
        lo = [math.floor(c / R - 3.5 + 0.5) for c in (x, y)]   # official rule, halves rounded up
        rows, cols = np.nonzero(mask[0])
        assert (cols.min(), cols.max(), rows.min(), rows.max()) == (lo[0], lo[0] + 6, lo[1], lo[1] + 6)
        assert mask.sum() == 49


def test_guide_plus_position_is_j_to_at_the_cell_and_at_the_decoded_peak():
    rng = np.random.default_rng(7)
    kps = random_people(rng, 1)
    boxes = np.array([[0.0, 0.0, 100.0, 150.0]])
    off, mask, scale = encode_guiding_offsets(kps, boxes, GOG19, (64, 64), R)
    xs = cell_centres(64, R)
    for l, (a, b) in enumerate(GOG19):
        u, v = np.floor((kps[0, a, :2] + 0.5) / R).astype(int)
        assert mask[l, v, u] and scale[l, v, u] == pytest.approx(math.sqrt(100 * 150))
        np.testing.assert_allclose(off[l, :, v, u] + (xs[u], xs[v]), kps[0, b, :2], atol=1e-4)
    # end to end: peaks decoded from the heatmaps, guides read there, the guide lands on J_to
    peaks = decode_peaks(torch.from_numpy(encode_heatmaps(kps, (64, 64), R)), R, topk=4)
    guides = guides_for(peaks, torch.from_numpy(off), GOG19, R)
    assert guides.shape == (19, 4, 2)
    starts = [a for a, _ in GOG19]
    landed = (peaks[starts, 0, :2] + guides[:, 0]).numpy()
    np.testing.assert_allclose(landed, kps[0, [b for _, b in GOG19], :2], atol=1e-3)
    assert not guides[:, 1:].any()                     # empty start slots give (0, 0)
    flat = guides_for(peaks, torch.from_numpy(off.reshape(38, 64, 64)), GOG19, R)
    assert torch.equal(flat, guides)


def test_overlapping_persons_keep_the_shorter_vector():
    # J_from 8 px apart; A points left, B points right, so the winner changes across the overlap
    kps = np.concatenate([person({0: (50.0, 50.0), 1: (10.0, 50.0)}, k=2),
                          person({0: (58.0, 50.0), 1: (98.0, 50.0)}, k=2)])
    boxes = np.array([[0, 0, 30, 30], [0, 0, 40, 90]], dtype=float)
    off, mask, scale = encode_guiding_offsets(kps, boxes, [(0, 1)], (32, 32), R)
    xs = cell_centres(32, R)
    cells = np.floor((kps[:, 0, :2] + 0.5) / R)          # cell containing each person's J_from
    winners = set()
    for v, u in zip(*np.nonzero(mask[0])):
        inside = [p for p in range(2) if np.abs(np.array([u, v]) - cells[p]).max() <= 3]
        p = min(inside, key=lambda q: np.linalg.norm(kps[q, 1, :2] - (xs[u], xs[v])))
        if len(inside) == 2:
            winners.add(p)
        np.testing.assert_allclose(off[0, :, v, u], kps[p, 1, :2] - (xs[u], xs[v]), atol=1e-5)
        assert scale[0, v, u] == pytest.approx([30.0, 60.0][p])
    assert winners == {0, 1}
    assert mask[0].sum() == 49 + 14                    # two 7x7 windows two columns apart


def test_guiding_offsets_44_limbs():
    rng = np.random.default_rng(8)
    kps = random_people(rng, 2, lo=40, hi=200)
    kps[1, 3, 2] = 0                                    # person 1 lacks the left ear
    off, mask, scale = encode_guiding_offsets(kps, np.array([[0, 0, 80, 160]] * 2), GOG44, (64, 64), R)
    assert off.shape == (44, 2, 64, 64) and mask.shape == scale.shape == (44, 64, 64)
    assert np.all(mask.reshape(44, -1).sum(1) >= 49)
    assert not off[~np.broadcast_to(mask[:, None], off.shape)].any()
    assert np.all(scale[~mask] == 1.0)


def test_guiding_and_refinement_empty_inputs():
    off, mask, scale = encode_guiding_offsets(np.zeros((0, 17, 3)), np.zeros((0, 4)), GOG44, (8, 8), R)
    assert off.shape == (44, 2, 8, 8) and not off.any() and not mask.any() and np.all(scale == 1)
    off, mask, _ = encode_guiding_offsets(np.zeros((2, 17, 3)), np.ones((2, 4)), GOG19, (8, 8), R)
    assert not off.any() and not mask.any()
    ro, m = encode_refinement_offsets(np.zeros((0, 17, 3)), (8, 8), R)
    assert ro.shape == (2, 8, 8) and not ro.any() and not m.any()
    assert person_scales(np.zeros((0, 17, 3)), np.zeros((0, 4))).shape == (0,)
    peaks = torch.zeros(17, 5, 3)
    assert not guides_for(peaks, torch.randn(38, 8, 8), GOG19, R).any()


def test_person_scales():
    kps = np.concatenate([person({0: (10, 10), 5: (30, 55)}), person({0: (10, 10), 5: (30, 55)}),
                          person({})])
    boxes = np.array([[5, 5, 30, 120], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=float)
    np.testing.assert_allclose(person_scales(kps, boxes), [60.0, 30.0, 1.0])


# ---------------------------------------------------------------- sampling, batching, devices

@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_sample_offsets_equals_upsample_then_index(mode):
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 2, 7, 9, generator=gen)
    up = F.interpolate(maps, scale_factor=R, mode=mode, align_corners=False)       # (3, 2, 28, 36)
    yy, xx = torch.meshgrid(torch.arange(28), torch.arange(36), indexing="ij")
    pts = torch.stack([xx.flatten(), yy.flatten()], -1).float().expand(3, -1, -1)  # every pixel, borders too
    got = sample_offsets(maps, pts, R, upsample=mode)
    expect = up.flatten(2).transpose(1, 2)                                          # (3, 28*36, 2)
    assert torch.allclose(got, expect, atol=1e-5)
    with pytest.raises(HarnessError):
        sample_offsets(maps, pts, R, upsample="nearest")


def test_batched_and_single_inputs_agree():
    gen = torch.Generator().manual_seed(1)
    heat = torch.rand(3, 17, 16, 16, generator=gen) ** 4
    offsets = torch.randn(3, 38, 16, 16, generator=gen) * 20
    ro = torch.randn(3, 34, 16, 16, generator=gen)
    batch = decode_peaks(heat, R, dark=True)
    guides = guides_for(batch, offsets, GOG19, R)
    refined = refine_peaks(batch, ro, R)
    shared = refine_peaks(batch, ro[:, :2], R)
    for i in range(3):
        single = decode_peaks(heat[i], R, dark=True)
        assert torch.allclose(single, batch[i], atol=1e-5)
        assert torch.allclose(guides_for(single, offsets[i], GOG19, R), guides[i], atol=1e-4)
        assert torch.allclose(refine_peaks(single, ro[i], R), refined[i], atol=1e-4)
        assert torch.allclose(refine_peaks(single, ro[i, :2], R), shared[i], atol=1e-4)
    assert batch.shape == (3, 17, 32, 3) and (batch[..., 2] > 0).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(9)
    kps = random_people(rng, 3)
    hm = torch.from_numpy(encode_heatmaps(kps, (64, 64), R))
    off = torch.from_numpy(encode_guiding_offsets(kps, np.full((3, 4), 90.0), GOG19, (64, 64), R)[0])
    cpu = decode_peaks(hm, R, dark=True)
    gpu = decode_peaks(hm.cuda(), R, dark=True)
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-4)
    assert torch.allclose(guides_for(gpu, off.cuda(), GOG19, R).cpu(), guides_for(cpu, off, GOG19, R), atol=1e-3)
