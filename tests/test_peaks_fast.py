"""The fast peak decoder gives the full path's peaks exactly; the full path gives the max-pool reference's.

The reference below is the original decoder (``F.max_pool2d`` NMS, ranked tie rule) with equal scores ordered by
raster index; ``decode_peaks(method="full")`` must equal it, and ``method="fast"`` must equal ``"full"`` bit for
bit (same pixels, same float scores, same order; DARK positions too) on encoded ground truth, noise, plateaus,
border peaks, thresholds at peak values, both upsampling modes, several strides, NMS sizes and top-k.
"""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from poseharness.codecs import decode_peaks, encode_heatmaps, local_maxima, peaks_from_upsampled, upsample_maps
from poseharness.codecs import peaks as peaks_mod
from poseharness.errors import HarnessError
from poseharness.threads import torch_threads
from shared_data import SAMPLES

R = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Results do not depend on the thread count; on a shared 2-core machine one thread avoids OpenMP threads
    # waiting for each other on every small op.
    with torch_threads(1):
        yield


def reference_maxima(up: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """(N, C, H, W) bool: the original max-pool NMS with its ranked tie rule (last of a plateau in raster order)."""
    n, c, h, w = up.shape
    pad = kernel // 2
    keep = F.max_pool2d(up, kernel, stride=1, padding=pad) == up
    index = torch.arange(h * w, dtype=torch.float64).reshape(1, 1, h, w).expand(n, c, h, w)
    ranked = torch.where(keep, index, torch.full_like(index, -1.0))
    return keep & (F.max_pool2d(ranked, kernel, stride=1, padding=pad) == ranked)


def reference_peaks(up: torch.Tensor, topk: int, threshold: float, kernel: int = 3) -> torch.Tensor:
    """(N, C, H, W) upsampled maps -> (N, C, topk, 3): the original max-pool decoder, ties by raster order."""
    n, c, h, w = up.shape
    keep = reference_maxima(up, kernel) & (up >= threshold) & (up > 0)
    out = up.new_zeros((n, c, topk, 3))
    for i in range(n):
        for j in range(c):
            ys, xs = torch.nonzero(keep[i, j], as_tuple=True)
            items = sorted(zip((-up[i, j, ys, xs]).tolist(), (ys * w + xs).tolist(), xs.tolist(), ys.tolist()))
            for slot, (_, _, x, y) in enumerate(items[:topk]):
                out[i, j, slot] = torch.stack([torch.tensor(float(x)), torch.tensor(float(y)), up[i, j, y, x]])
    return out


def assert_same(heat, stride=R, **kw):
    """fast == full, bit for bit; returns the peaks."""
    fast = decode_peaks(heat, stride, method="fast", **kw)
    full = decode_peaks(heat, stride, method="full", **kw)
    assert fast.shape == full.shape
    if not torch.equal(fast, full):
        diff = torch.nonzero(fast != full)[:4].tolist()
        raise AssertionError(f"fast and full differ at {diff} ({kw}, stride {stride})")
    return full


def random_persons(rng, n, side, k=17):
    kps = np.zeros((n, k, 3))
    kps[..., :2] = rng.uniform(-8, side + 8, (n, k, 2))          # some just off the map, some on its border
    kps[..., 2] = np.where(rng.random((n, k)) < 0.85, 2, 0)
    return kps


def smooth_noise(gen, shape, cells=(5, 6)):
    c, h, w = shape
    base = torch.rand(c, 1, *cells, generator=gen)
    return F.interpolate(base, size=(h, w), mode="bicubic", align_corners=False)[:, 0]


# ---------------------------------------------------------------- the reference

def test_full_path_equals_the_max_pool_reference():
    gen = torch.Generator().manual_seed(0)
    maps = [
        (torch.rand(2, 3, 24, 28, generator=gen) * 4).floor() / 4,          # plateaus and ties everywhere
        torch.rand(2, 3, 24, 28, generator=gen),                            # many maxima, some on the border
        torch.full((1, 2, 9, 11), 0.5),                                      # one constant plateau
    ]
    for heat in maps:
        for kernel in (1, 3, 5):
            for topk, thr in ((200, 0.0), (5, 0.3), (40, 0.5)):
                expect = reference_peaks(heat, topk, thr, kernel)
                assert torch.equal(peaks_from_upsampled(heat, topk, thr, kernel), expect)
    for heat in maps:
        for kernel in (1, 3, 5):
            assert torch.equal(local_maxima(heat, kernel), reference_maxima(heat, kernel))
    assert int(local_maxima(maps[2]).sum()) == 2 and bool(local_maxima(maps[2])[0, :, 8, 10].all())


def test_equal_scores_come_in_raster_order():
    heat = torch.zeros(1, 10, 10)
    heat[0, 5, 1] = heat[0, 2, 7] = heat[0, 2, 3] = 0.8
    heat[0, 8, 8] = 0.9
    peaks = peaks_from_upsampled(heat, topk=3, threshold=0.1)[0]
    assert torch.equal(peaks, torch.tensor([[8.0, 8.0, 0.9], [3.0, 2.0, 0.8], [7.0, 2.0, 0.8]]))
    # the same through the fast decoder: three equal bumps come out upper row first, then left to right
    hm = torch.zeros(1, 10, 10)
    hm[0, 6, 2] = hm[0, 2, 7] = hm[0, 2, 3] = 1.0
    fast = decode_peaks(hm, R, topk=3)[0]
    assert torch.equal(fast, decode_peaks(hm, R, topk=3, method="full")[0])
    assert fast[:, 2].unique().numel() == 1 and (fast[:, 2] > 0).all()
    assert fast[0, 1] == fast[1, 1] < fast[2, 1] and fast[0, 0] < fast[1, 0]


# ---------------------------------------------------------------- exact windows

@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_windows_are_the_full_maps_values_bit_for_bit(mode, stride):
    # (bilinear maps whose upsampled height + width is <= 128 take another PyTorch kernel: decode_peaks does not
    # use windows for those, so these maps are larger)
    gen = torch.Generator().manual_seed(stride)
    maps = torch.rand(3, 41, 35, generator=gen)
    maps[1] = (maps[1] * 3).floor() / 3
    up = upsample_maps(maps[None], stride, mode)[0]
    big_h, big_w = up.shape[-2:]
    size = 7
    b = torch.randint(0, 3, (60,), generator=gen)
    y0 = torch.randint(-size, big_h, (60,), generator=gen)
    x0 = torch.randint(-size, big_w, (60,), generator=gen)
    y0[:4], x0[:4] = torch.tensor([-3, 0, big_h - 4, -6]), torch.tensor([-3, big_w - 2, 0, -6])   # corners
    got = peaks_mod._exact_windows(maps, b, y0, x0, size, stride, mode, -math.inf)
    padded = F.pad(up, (size, size, size, size), value=-math.inf)
    for i in range(60):
        expect = padded[b[i], y0[i] + size:y0[i] + 2 * size, x0[i] + size:x0[i] + 2 * size]
        assert torch.equal(got[i], expect), (i, y0[i].item(), x0[i].item())


def test_screening_bound_holds_on_every_pixel():
    # up <= P*M - (P-1)*m over each pixel's support (M, m its largest and smallest cell): the bound that decides
    # which cells the fast path looks at. Brute force on maps with negative values, plateaus and borders.
    gen = torch.Generator().manual_seed(3)
    for mode in ("bicubic", "bilinear"):
        for stride in (1, 2, 4):
            maps = torch.randn(2, 9, 8, generator=gen, dtype=torch.float64)
            up = upsample_maps(maps[None], stride, mode)[0]
            lo_s, hi_s, _, _, P, _ = peaks_mod._screen_constants(stride, mode, 1)
            for y in range(up.shape[1]):
                for x in range(up.shape[2]):
                    cy, cx = y // stride, x // stride
                    rows = [min(max(cy + d, 0), 8) for d in range(lo_s, hi_s + 1)]
                    cols = [min(max(cx + d, 0), 7) for d in range(lo_s, hi_s + 1)]
                    sup = maps[:, rows][:, :, cols]
                    bound = P * sup.amax((1, 2)) - (P - 1) * sup.amin((1, 2))
                    assert bool((up[:, y, x] <= bound + 1e-12).all())
    # hand-worked: bicubic at R = 4 has phases t = 1/8, 3/8; at 3/8 the taps are (-0.10986328125, 0.74951171875,
    # 0.42626953125, -0.06591796875), positive mass 1.17578125 per axis
    assert peaks_mod._screen_constants(4, "bicubic", 1)[4] == pytest.approx(1.17578125 ** 2 + 0.17578125 ** 2)
    assert peaks_mod._screen_constants(4, "bilinear", 1)[4] == 1.0


# ---------------------------------------------------------------- fast == full

@pytest.mark.parametrize("quantise", [False, True])
@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_fast_equals_full_on_encoded_ground_truth(quantise, mode):
    rng = np.random.default_rng(10 + quantise)
    gen = torch.Generator().manual_seed(11)
    for trial in range(6):
        kps = random_persons(rng, int(rng.integers(1, 7)), 40 * R)
        if trial % 2:
            kps[..., :2] = np.round(kps[..., :2])                             # COCO's integer keypoints
        heat = torch.from_numpy(encode_heatmaps(kps, (40, 44), R, quantise=quantise))
        assert_same(heat, upsample=mode)
        assert_same(heat, upsample=mode, dark=True)
        noisy = heat + 0.04 * torch.randn(heat.shape, generator=gen)
        assert_same(noisy, upsample=mode)
        assert_same(noisy, upsample=mode, threshold=0.0, topk=64)
        assert_same(noisy, upsample=mode, dark=True, topk=3)


def test_fast_equals_full_on_noise_plateaus_and_borders():
    gen = torch.Generator().manual_seed(5)
    cases = {
        "smooth noise": smooth_noise(gen, (6, 30, 34)),
        "smooth noise, negative": smooth_noise(gen, (6, 30, 34)) - 0.5,
        "white noise": torch.rand(4, 20, 22, generator=gen),
        "quantised": (torch.rand(4, 20, 22, generator=gen) * 3).floor() / 3,
        "constant": torch.full((2, 12, 13), 0.7),
        "checkerboard": ((torch.arange(16)[:, None] + torch.arange(18)) % 2).float().expand(2, 16, 18).clone(),
        "float64": torch.rand(3, 17, 21, generator=gen, dtype=torch.float64),
    }
    borders = torch.zeros(4, 24, 26)
    for i, (y, x) in enumerate([(0, 0), (0, 25), (23, 10), (11, 0)]):       # maxima on the edges and corners
        borders[i, y, x] = 1.0
        borders[i, max(y - 1, 0), x] = 0.97
    cases["border maxima"] = borders
    cases["border gaussians"] = torch.from_numpy(encode_heatmaps(
        np.array([[[0, 0, 2], [159, 3, 2], [3, 190, 2], [159, 190, 2], [80, 0.4, 2]]], dtype=np.float64),
        (48, 40), R))
    for name, heat in cases.items():
        for mode in ("bicubic", "bilinear"):
            for kw in ({}, {"threshold": 0.3}, {"topk": 2}, {"nms_kernel": 5}, {"nms_kernel": 1, "topk": 50},
                       {"threshold": -1.0, "topk": 10}, {"dark": True}):
                try:
                    assert_same(heat, upsample=mode, **kw)
                except AssertionError as err:
                    raise AssertionError(f"{name}, {mode}: {err}") from None


def test_thresholds_at_peak_values():
    gen = torch.Generator().manual_seed(6)
    heat = smooth_noise(gen, (3, 26, 30))
    full = decode_peaks(heat, R, threshold=0.0, topk=20, method="full")
    for value in full[..., 2][full[..., 2] > 0][::3].tolist():
        for thr in (value, math.nextafter(value, 2.0), math.nextafter(value, -2.0)):
            peaks = assert_same(heat, threshold=thr, topk=20)
            assert bool((peaks[..., 2][peaks[..., 2] > 0] >= thr).all())
        assert bool((assert_same(heat, threshold=value, topk=20)[..., 2] == value).any())


@pytest.mark.parametrize("stride", [1, 2, 8])
def test_fast_equals_full_at_other_strides(stride):
    rng = np.random.default_rng(stride)
    gen = torch.Generator().manual_seed(stride)
    side = max(96 // stride, 10)
    for _ in range(3):
        kps = random_persons(rng, 3, side * stride)
        for quantise in (False, True):
            heat = torch.from_numpy(encode_heatmaps(kps, (side, side + 3), stride, quantise=quantise))
            for mode in ("bicubic", "bilinear"):
                assert_same(heat, stride, upsample=mode)
                assert_same(heat + 0.03 * torch.randn(heat.shape, generator=gen), stride, upsample=mode, dark=True)


def test_batched_input_and_fallbacks():
    gen = torch.Generator().manual_seed(8)
    heat = smooth_noise(gen, (6, 24, 20)).reshape(2, 3, 24, 20)
    batch = assert_same(heat, topk=8)
    for i in range(2):
        assert torch.equal(decode_peaks(heat[i], R, topk=8), batch[i])
    # where the fast path's argument does not hold it falls back to the full path: same result by definition
    assert_same(heat, 3)                                                     # stride not a power of two
    nan = heat.clone()
    nan[0, 1, 3:6, 4:9] = math.nan
    assert_same(nan)                                                         # non-finite values
    assert_same(heat.half().float())
    assert decode_peaks(heat.half(), R).shape == (2, 3, 32, 3)               # other float types
    assert_same(heat[..., :6, :5], upsample="bilinear")                     # tiny bilinear maps
    assert_same(torch.zeros(2, 17, 5, 5))
    assert not decode_peaks(torch.zeros(17, 5, 5), R).any()
    assert decode_peaks(torch.zeros(0, 5, 5), R).shape == (0, 32, 3)
    with pytest.raises(HarnessError):
        decode_peaks(heat, R, method="quick")
    with pytest.raises(HarnessError):
        decode_peaks(heat, R, nms_kernel=4)


def test_reduced_matmul_precision_does_not_break_the_screening():
    # with TF32/bf16 matmuls allowed, the screening's GEMMs run in float64 (their error must stay below eps)
    rng = np.random.default_rng(13)
    heat = torch.from_numpy(encode_heatmaps(random_persons(rng, 6, 160), (40, 40), R))
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert_same(heat)
        assert_same(heat + 0.02 * torch.randn(heat.shape, generator=torch.Generator().manual_seed(2)), dark=True)
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fast_equals_full_on_cuda():
    rng = np.random.default_rng(12)
    heat = torch.from_numpy(encode_heatmaps(random_persons(rng, 5, 160), (40, 40), R)).cuda()
    for mode in ("bicubic", "bilinear"):
        fast = assert_same(heat, upsample=mode, dark=True)
        assert fast.is_cuda
        cpu = decode_peaks(heat.cpu(), R, upsample=mode, dark=True)
        assert torch.allclose(fast.cpu(), cpu, atol=1e-4)


# ---------------------------------------------------------------- the bench's helpers

def test_bench_loop_grouping_gives_the_library_poses():
    from poseharness.contract import method_submodule
    from poseharness.methods import load_method

    bench_decode = method_submodule(load_method("gog"), "bench_decode").bench_decode

    rows = bench_decode(images=3, seed=4, repeat=1)
    assert [r.limbs for r in rows] == [19, 44]
    for r in rows:
        assert r.peaks_identical == r.images == 3 and r.poses_identical == 3
        assert r.keypoints_per_image > 0 and r.candidates_per_image > 0


def test_bench_oracle_on_a_real_crowdpose_sample(tmp_path, monkeypatch):
    from poseharness.bench.oracle import bench_oracle, format_oracle_bench

    sample = json.load(open(SAMPLES / "xtcocoapi_example_crowdpose_val.json"))
    target = tmp_path / "crowdpose" / "annotations" / "crowdpose_val.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(sample))
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path))
    result = bench_oracle("gog", "crowdpose", "val", "ours", progress=False)
    assert result["images"] == len(sample["images"]) and result["persons"] > 0
    assert result["decode_checked"] == result["images"] == result["decode_agree"]
    assert set(result["seconds"]) >= {"encode", "decode", "peaks", "guides", "group", "evaluate"}
    assert result["metrics"]["AP"] > 0.5                                     # the oracle of a few clean persons
    assert "group" in format_oracle_bench(result)


@pytest.mark.parametrize("method, variant", [("gog", "ours"), ("simple_baseline", "argmax"),
                                             ("simple_baseline", "jittered"), ("posedet", "posedet_flip")])
def test_bench_oracle_scores_what_the_oracle_scores_in_every_paradigm(tmp_path, monkeypatch, method, variant):
    """bench oracle runs the pipeline's views, encoder and decoder: a top-down method's crops (ground-truth or
    jittered boxes), a single-stage method's test-time views, and the same figures as `poseharness oracle`."""
    from poseharness.bench.oracle import bench_oracle
    from poseharness.data.manifest import load_manifest
    from poseharness.methods import load_method
    from poseharness.oracle import run_oracle

    sample = json.load(open(SAMPLES / "xtcocoapi_example_crowdpose_val.json"))
    target = tmp_path / "crowdpose" / "annotations" / "crowdpose_val.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(sample))
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path))
    with torch_threads(1):
        result = bench_oracle(method, "crowdpose", "val", variant, scale="tiny", progress=False)
        ref = run_oracle(load_method(method), load_manifest("crowdpose"), "val", [variant], "tiny", progress=False,
                         write=False)[0]
    assert result["persons"] == ref["persons"] > 0
    assert result["metrics"] == pytest.approx(ref["metrics"], abs=1e-12)
    with torch_threads(1):                     # --limit: scored on the images it saw, as the oracle's quick look
        first = bench_oracle(method, "crowdpose", "val", variant, scale="tiny", progress=False, limit=1)
        ref = run_oracle(load_method(method), load_manifest("crowdpose"), "val", [variant], "tiny", progress=False,
                         write=False, limit=1)[0]
    assert first["images"] == 1 and first["metrics"] == pytest.approx(ref["metrics"], abs=1e-12)

