"""Keypoint candidates from heatmaps (decoder side): upsampling, max-pool NMS, top-k, DARK, refinement offsets.

Torch in, torch out; every function takes unbatched (K, …) or batched (B, K, …) inputs and runs on the
input's device. Peaks are (…, K, k, 3) rows ``[x, y, score]`` in input pixels (pixel centres at integers),
sorted by score per channel, equal scores in raster order (row, then column); an empty slot is ``[0, 0, 0]``
(consumers mask by ``score > 0``).

Two ways to the same peaks (:func:`decode_peaks` ``method=``):

- ``"full"``, the reference: upsample every map ×R (``F.interpolate``), max-pool NMS, top-k. At the paper's
  size (17 maps of 160×160 -> 640×640, 7 M pixels) the old decoder took ~370 ms on this project's CPU, almost
  all of it in ``max_pool2d`` (stride 1 runs a scalar loop on the CPU, ~25 ns a pixel, and the tie rule ran
  it twice on the whole map). The NMS is now decided only at the pixels that pass the score test, on their
  windows; the upsampling itself is what is left.
- ``"fast"`` (default): the same peaks, bit for bit, from a small part of the upsampled map.

Why the fast path gives the full path's peaks exactly. Let ``up`` be ``F.interpolate``'s upsampled map and
``r`` the NMS radius (``nms_kernel // 2``).

1. *Tiles that can hold a peak.* An upsampled pixel is a weighted sum of the cells of its support (4×4 cells
   for bicubic, 2×2 for bilinear, indices clamped at the border): ``up = Σ W v`` with ``Σ W = 1``. With ``P``
   the largest sum of positive weights over the pixel phases (1.413 for bicubic at R = 4, 1 for bilinear),
   ``M``/``m`` the largest/smallest cell of the support and ``m_b`` the map's minimum,
   ``up <= P·M - (P-1)·m <= P·M - (P-1)·m_b``. A kept peak has ``up >= threshold`` and ``up > 0``, so a cell
   of its support reaches ``tau_b = (threshold + (P-1)·m_b - eps) / P``. The maps are cut into tiles of 4×4
   cells; a tile is screened only if the tile widened by the support's reach (2 cells for bicubic) holds
   such a cell. For ground truth that is ~15 tiles a keypoint instead of 1600 a map.
2. *Screening (approximate values, exact guarantee).* For each screened tile its pixels plus an ``r``-pixel
   ring are computed as ``W · cells · Wᵀ`` (two GEMMs; the interpolation weights in float64, rounded to the
   map's type). These values ``a`` differ from ``F.interpolate``'s by at most ``eps = 1024·u·A·max|v|``
   (``u`` the unit roundoff, ``A`` the largest ``Σ|W|``, ``max|v|`` over all maps; both computations are
   ~16 multiply-adds with errors of a few ``u·Σ|W||v|``). A pixel of the full path's result has
   ``up(p) >= up(q)`` for its in-map neighbours ``q`` within ``r``, ``up(p) >= threshold`` and ``up(p) > 0``,
   hence ``a(p) + 2·eps >= a(q)``, ``a(p) + eps >= threshold`` and ``a(p) + eps > 0``: the screened pixels
   include every peak of the full path (and a few more, where values lie within ``2·eps`` of each other).
3. *Exact decision.* For each screened pixel the upsampled map is evaluated *with* ``F.interpolate`` on the
   small patch of cells its (4r+1)² window reads (indices clamped as PyTorch clamps them). For a power-of-two
   stride the source coordinate ``(o + 0.5)/R - 0.5`` of every pixel, hence every weight, is exact, and each
   pixel depends only on its own support: the patch gives the full map's values bit for bit (tested). On
   those values the full path's rule is applied verbatim — the pixel equals the maximum of its (2r+1)² window
   (-inf outside the map, as max-pool pads), no raster-later pixel of that window is such a maximum too
   (a plateau keeps its last pixel), score >= threshold and > 0 — and the survivors are ordered by the same
   function as the full path's. Same pixels, same bits, same order; DARK reads the same patches.

Where the fast path is not used (it falls back to ``"full"``, the same result by definition): a stride that
is not a power of two (the source coordinate is then rounded differently at different offsets), a float
type other than float32/float64, non-finite values in the maps (the bound does not hold), ``nms_kernel=1``
(every pixel above the threshold is a peak: nothing to save), and bilinear maps whose upsampled height +
width is <= 128: PyTorch's CPU bilinear kernel switches there to a vectorised implementation that rounds
differently (it does too for three channels on one thread, and for channels-last inputs, which is why every
map is upsampled as a one-channel image). Bilinear patches are made wide enough to stay on the general
kernel. Bicubic always takes the general kernel.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import HarnessError
from .offsets import UPSAMPLE_MODES, sample_offsets

#: ``decode_peaks(method=...)``: "fast" (default, exact) or "full" (the reference).
PEAK_METHODS = ("fast", "full")

_CUBIC_A = -0.75                     # PyTorch's bicubic kernel parameter
_FAST_DTYPES = (torch.float32, torch.float64)
_EPS_FACTOR = 1024.0                 # eps = _EPS_FACTOR * u * A * max|v|: ~9x both rounding errors together
_SEPARABLE_LIMIT = 128               # PyTorch CPU: bilinear output H + W <= 128 -> separable kernel


def _batch(t: torch.Tensor, unbatched_dim: int) -> tuple[torch.Tensor, bool]:
    if t.dim() == unbatched_dim:
        return t[None], False
    if t.dim() == unbatched_dim + 1:
        return t, True
    raise ValueError(f"expected {unbatched_dim} or {unbatched_dim + 1} dimensions, got shape {tuple(t.shape)}")


def _check_mode(mode: str) -> None:
    if mode not in UPSAMPLE_MODES:
        raise HarnessError(f"heatmap upsampling must be one of {UPSAMPLE_MODES}, got {mode!r}")


def _check_nms_kernel(kernel: int) -> int:
    if kernel < 1 or kernel % 2 == 0:
        raise HarnessError(f"NMS kernel must be a positive odd size, got {kernel}")
    return kernel // 2


def upsample_maps(maps: torch.Tensor, stride: int, mode: str = "bicubic") -> torch.Tensor:
    """(…, C, h, w) -> (…, C, h*R, w*R): index (y, x) of the result is input pixel (x, y).

    With ``align_corners=False`` and an integer ``scale_factor``, upsampled pixel i reads the map at cell
    coordinate (i + 0.5)/R - 0.5, the inverse of the pixel-centre transform i = u*R + R/2 - 0.5.
    Every map is upsampled as its own one-channel image: PyTorch's CPU bilinear kernel otherwise switches to
    a differently rounding implementation for three channels on one thread, or channels-last inputs.
    """
    _check_mode(mode)
    x = torch.as_tensor(maps)
    if not x.is_floating_point():
        x = x.float()
    shape = x.shape
    x = x.reshape(math.prod(shape[:-2]), 1, *shape[-2:])
    up = F.interpolate(x, scale_factor=stride, mode=mode, align_corners=False)
    return up.reshape(*shape[:-2], *up.shape[-2:])


def _window_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over the (2r+1)² window of every pixel of (…, H, W), -inf outside (what ``max_pool2d`` with
    stride 1 and padding r computes, NaN propagating), as two passes of maxima over shifted views."""
    if radius == 0:
        return x
    h, w = x.shape[-2:]
    xp = F.pad(x, (radius, radius, radius, radius), value=-math.inf)
    rows = xp[..., :, 0:w]
    for d in range(1, 2 * radius + 1):
        rows = torch.maximum(rows, xp[..., :, d:d + w])
    out = rows[..., 0:h, :]
    for d in range(1, 2 * radius + 1):
        out = torch.maximum(out, rows[..., d:d + h, :])
    return out


def _later_offsets(radius: int) -> list[tuple[int, int]]:
    """Window offsets (dy, dx) that come later in raster order than the centre."""
    return [(dy, dx) for dy in range(0, radius + 1) for dx in range(-radius, radius + 1) if dy > 0 or dx > 0]


def local_maxima(heat: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """(N, C, H, W) bool — max-pool NMS: a pixel survives if no pixel of its ``kernel`` window is larger.

    A plateau (equal neighbouring maxima, e.g. a Gaussian centred between two pixels) would give several
    candidates for one keypoint; of the equal maxima within one window only the last in raster order is
    kept: a maximum is dropped when a raster-later pixel of its window is a maximum too. (Two maxima within
    one window are equal, so this changes nothing else.)
    """
    r = _check_nms_kernel(kernel)
    keep = _window_max(heat, r) == heat
    if r == 0:
        return keep
    h, w = heat.shape[-2:]
    kp = F.pad(keep, (r, r, r, r), value=False)
    later = torch.zeros_like(keep)
    for dy, dx in _later_offsets(r):
        later |= kp[..., r + dy:r + dy + h, r + dx:r + dx + w]
    return keep & ~later


def _select_topk(b: torch.Tensor, y: torch.Tensor, x: torch.Tensor, score: torch.Tensor, n_maps: int,
                 topk: int, width: int) -> torch.Tensor:
    """(n_maps, topk, 3) ``[x, y, score]``: the ``topk`` best of the given peaks of each map, by descending
    score, equal scores in raster order; the one ordering both decode paths share.

    b, y, x: (M,) int64 map index and pixel; score: (M,) float.
    """
    out = score.new_zeros((n_maps, topk, 3))
    if b.numel() == 0 or topk == 0:
        return out
    order = torch.sort(y * width + x, stable=True).indices               # raster order ...
    order = order[torch.sort(score[order], descending=True, stable=True).indices]   # ... within equal scores
    order = order[torch.sort(b[order], stable=True).indices]             # grouped by map
    bs = b[order]
    counts = torch.bincount(bs, minlength=n_maps)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(bs.numel(), device=bs.device) - first[bs]
    sel = rank < topk
    order, bs, rank = order[sel], bs[sel], rank[sel]
    out[bs, rank] = torch.stack([x[order].to(out.dtype), y[order].to(out.dtype), score[order]], -1)
    return out


def _is_peak(vals: torch.Tensor, radius: int, threshold: float) -> torch.Tensor:
    """(M,) bool — the NMS rule of :func:`local_maxima` plus the score test, decided for the centre pixel of
    each (M, 4r+1, 4r+1) window of upsampled values (-inf off the map): the centre equals the maximum of its
    (2r+1)² window, no raster-later pixel of that window is such a maximum too, score >= threshold and > 0.
    The window holds everything the rule reads (a neighbour's maximum test reads up to 2r from the centre)."""
    r = radius
    wm = _window_max(vals, r)[:, r:3 * r + 1, r:3 * r + 1]              # window maxima of p and its neighbours
    is_max = vals[:, r:3 * r + 1, r:3 * r + 1] == wm
    later = torch.zeros((2 * r + 1, 2 * r + 1), dtype=torch.bool, device=vals.device)
    for dy, dx in _later_offsets(r):
        later[r + dy, r + dx] = True
    score = vals[:, 2 * r, 2 * r]
    return is_max[:, r, r] & ~(is_max & later).flatten(1).any(1) & (score >= threshold) & (score > 0)


def _gather_windows(padded: torch.Tensor, b: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor,
                    size: int) -> torch.Tensor:
    """(M, size, size) windows of the contiguous (N, Hp, Wp) ``padded`` at rows y0.., columns x0.. (padded
    coordinates), read through a strided view (no copy of the maps)."""
    hp, wp = padded.shape[-2:]
    view = torch.as_strided(padded, (padded.numel() - (size - 1) * (wp + 1), size, size), (1, wp, 1))
    return view.index_select(0, (b * hp + y0) * wp + x0)


def peaks_from_upsampled(
    heat: torch.Tensor, topk: int = 32, threshold: float = 0.06, nms_kernel: int = 3
) -> torch.Tensor:
    """Top-k local maxima per channel of full-resolution heatmaps (K, H, W) / (B, K, H, W) -> (…, K, topk, 3).

    The maxima of :func:`local_maxima` (``nms_kernel`` max-pool NMS, plateaus keep their raster-last pixel)
    with score >= threshold and > 0 (score 0 marks an empty slot), by descending score, equal scores in
    raster order. The rule is evaluated only at pixels that pass the score test (few), on their windows.
    """
    r = _check_nms_kernel(nms_kernel)
    x, batched = _batch(torch.as_tensor(heat), 3)
    x = x if x.is_floating_point() else x.float()
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h, w)
    bi, yi, xi = torch.nonzero((flat >= threshold) & (flat > 0), as_tuple=True)
    if bi.numel():
        padded = F.pad(flat, (2 * r, 2 * r, 2 * r, 2 * r), value=-math.inf)
        # cheap first cut: the pixel is the maximum of its own window; then the full rule on the rest
        own = _gather_windows(padded, bi, yi + r, xi + r, 2 * r + 1)
        top = torch.nonzero(own[:, r, r] == own.flatten(1).amax(1)).squeeze(1)
        bi, yi, xi = bi[top], yi[top], xi[top]
        peak = _is_peak(_gather_windows(padded, bi, yi, xi, 4 * r + 1), r, threshold)
        bi, yi, xi = bi[peak], yi[peak], xi[peak]
    out = _select_topk(bi, yi, xi, flat[bi, yi, xi], n * c, topk, w).reshape(n, c, topk, 3)
    return out if batched else out[0]


# ---------------------------------------------------------------- exact upsampling in windows

def _cubic_weights(t: float) -> list[float]:
    """PyTorch's bicubic weights (Keys, a = -0.75) for taps floor-1 .. floor+2 at fraction t."""
    a = _CUBIC_A

    def near(s):   # |s| <= 1
        return ((a + 2) * s - (a + 3)) * s * s + 1

    def far(s):    # 1 < |s| < 2
        return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


@lru_cache(maxsize=None)
def _tap_table(stride: int, mode: str, first: int, last: int) -> tuple[int, np.ndarray]:
    """Interpolation weights of the upsampled pixels ``c*R + j``, ``j = first..last``, over the cells
    ``c + lo .. c + hi`` (clamping aside, the same for every cell c): returns (lo, W) with W float64
    (last - first + 1, hi - lo + 1)."""
    rows = []
    for j in range(first, last + 1):
        real = (j + 0.5) / stride - 0.5
        f = math.floor(real)
        t = real - f
        if mode == "bicubic":
            rows.append((f - 1, _cubic_weights(t)))
        else:
            rows.append((f, [1.0 - t, t]))
    lo = min(s for s, _ in rows)
    hi = max(s + len(wts) - 1 for s, wts in rows)
    table = np.zeros((len(rows), hi - lo + 1))
    for i, (s, wts) in enumerate(rows):
        table[i, s - lo:s - lo + len(wts)] = wts
    return lo, table


def _taps(mode: str) -> tuple[int, int]:
    """Offsets of the first and last tap from floor(source coordinate)."""
    return (-1, 2) if mode == "bicubic" else (0, 1)


def _exact_windows(maps: torch.Tensor, b: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, size: int,
                   stride: int, mode: str, fill: float) -> torch.Tensor:
    """(M, size, size): the ×R upsampled map ``b`` at pixels [y0, y0+size) × [x0, x0+size), equal bit for bit
    to :func:`upsample_maps` there (power-of-two ``stride``); ``fill`` outside the map.

    maps: (Nb, h, w) contiguous. Each window is computed by ``F.interpolate`` on the patch of cells its pixels
    read (indices clamped to the map, as PyTorch clamps them): a pixel's value depends only on its own cells
    and its exact phase, so the patch reproduces the full map's arithmetic.
    """
    m = b.numel()
    _, h, w = maps.shape
    if m == 0:
        return maps.new_zeros((0, size, size))
    tap_lo, tap_hi = _taps(mode)
    # floor of the source coordinate (o + 0.5)/R - 0.5 = (2o + 1 - R) / 2R of the first pixel
    fy = torch.div(2 * y0 + 1 - stride, 2 * stride, rounding_mode="floor")
    fx = torch.div(2 * x0 + 1 - stride, 2 * stride, rounding_mode="floor")
    if mode == "bilinear":
        # PyTorch clamps negative bilinear source coordinates to 0: a patch that starts on the map's first
        # cell gets the same clamp.
        fy, fx = fy.clamp_min(0), fx.clamp_min(0)
    cy0, cx0 = fy + tap_lo, fx + tap_lo
    cells = -(-(size - 1) // stride) + 1 + tap_hi - tap_lo           # distinct floors + extra taps
    cells_y = cells_x = cells
    if mode == "bilinear" and (cells_y + cells_x) * stride <= _SEPARABLE_LIMIT:
        cells_x = _SEPARABLE_LIMIT // stride + 1 - cells_y           # stay on PyTorch's general kernel
    rows = (cy0[:, None] + torch.arange(cells_y, device=maps.device)).clamp_(0, h - 1)
    rows = rows.mul_(w).add_((b * (h * w))[:, None])
    cols = (cx0[:, None] + torch.arange(cells_x, device=maps.device)).clamp_(0, w - 1)
    patches = maps.view(-1)[rows[:, :, None] + cols[:, None, :]]                     # (M, cy, cx)
    up = F.interpolate(patches[:, None], scale_factor=stride, mode=mode, align_corners=False)
    oy, ox = y0 - cy0 * stride, x0 - cx0 * stride                                  # window in its patch
    if mode == "bilinear":
        # a bilinear patch starts on cell 0 where its window reaches past the map's top or left edge: the
        # window then begins before the patch (those pixels are off the map and filled below)
        up = F.pad(up, (size, 0, size, 0))
        oy, ox = oy + size, ox + size
    hp, wp = up.shape[-2:]
    vals = _gather_windows(up.view(m, hp, wp), torch.arange(m, device=maps.device), oy, ox, size)
    if bool(((y0 < 0) | (x0 < 0) | (y0 + size > h * stride) | (x0 + size > w * stride)).any()):
        pix = torch.arange(size, device=maps.device)
        py, px = y0[:, None] + pix, x0[:, None] + pix
        inside = ((py >= 0) & (py < h * stride))[:, :, None] & ((px >= 0) & (px < w * stride))[:, None, :]
        vals = torch.where(inside, vals, torch.full_like(vals, fill))
    return vals


def _fast_supported(x: torch.Tensor, stride: int, mode: str) -> bool:
    h, w = x.shape[-2:]
    if stride < 1 or stride & (stride - 1) or x.dtype not in _FAST_DTYPES or h == 0 or w == 0:
        return False
    if mode == "bilinear" and (h + w) * stride <= _SEPARABLE_LIMIT:
        return False
    return True


_TILE = 4     # cells per side of a screening tile; >= the reach of a block's support (2 cells for bicubic)


@lru_cache(maxsize=None)
def _screen_constants(stride: int, mode: str, radius: int) -> tuple:
    """What screening one tile of _TILE × _TILE cells needs, for stride R, mode and NMS radius r:

    lo_s, hi_s: the support of every pixel of cell c lies in cells c+lo_s .. c+hi_s;
    lo_t, W:    the tile's pixels plus an r-pixel ring (E = _TILE·R + 2r per side) are W · cells · Wᵀ over the
                cells t0+lo_t .. (W: float64 (E, S)), t0 the tile's first cell;
    P, A:       the largest sum of positive weights and of |weights| of a pixel (2-D).
    """
    lo_s, core = _tap_table(stride, mode, 0, stride - 1)
    hi_s = lo_s + core.shape[1] - 1
    if max(-lo_s, hi_s) > _TILE:
        raise AssertionError(f"a pixel's support reaches {max(-lo_s, hi_s)} cells, more than a tile")
    lo_t, tile = _tap_table(stride, mode, -radius, _TILE * stride - 1 + radius)
    pos, neg, mag = np.clip(core, 0, None).sum(1), np.clip(core, None, 0).sum(1), np.abs(core).sum(1)
    P = float(np.max(pos[:, None] * pos[None, :] + neg[:, None] * neg[None, :]))
    A = float(np.max(mag[:, None] * mag[None, :]))
    return lo_s, hi_s, lo_t, tile, P, A


def _tile_box_max(parts: list[torch.Tensor], before: int, after: int, axis: int) -> torch.Tensor:
    """Maximum over each tile widened by ``before`` entries of the previous tile and ``after`` of the next.

    parts: the T entries of every tile, ``parts[k]`` holding the k-th entry of each tile with the tiles along
    ``axis``; 0 <= before, after <= T. The tile's head (first ``after`` entries) and tail (last ``before``)
    are shared by its own maximum and its neighbours' boxes.
    """
    t = len(parts)

    def maximum(items):
        out = items[0]
        for item in items[1:]:
            out = torch.maximum(out, item)
        return out

    head = maximum(parts[:after]) if after else None
    tail = maximum(parts[t - before:]) if before else None
    rest = parts[after:t - before]
    out = maximum([x for x in (head, tail) if x is not None] + rest)
    if out is parts[0] or any(out is x for x in (head, tail)):
        out = out.clone()                                  # written below: never into an input or a part
    n = out.shape[axis]
    if n > 1 and tail is not None:
        own = out.narrow(axis, 1, n - 1)
        own.copy_(torch.maximum(own, tail.narrow(axis, 0, n - 1)))
    if n > 1 and head is not None:
        own = out.narrow(axis, 0, n - 1)
        own.copy_(torch.maximum(own, head.narrow(axis, 1, n - 1)))
    return out


def _fast_peaks(maps: torch.Tensor, stride: int, mode: str, threshold: float, radius: int,
                low: torch.Tensor, magnitude: float):
    """Kept peaks of the upsampled maps without upsampling them: (b, y, x, score) flat tensors, exactly the
    pixels and values the full path keeps (see the module docstring).

    maps: (Nb, h, w) contiguous float32/float64, finite; low: (Nb,) each map's minimum; magnitude: the
    largest |value| of all maps.
    """
    nb, h, w = maps.shape
    dev, dtype = maps.device, maps.dtype
    R, r, T = stride, radius, _TILE
    lo_s, hi_s, lo_t, tile_w, P, A = _screen_constants(R, mode, r)
    eps = _EPS_FACTOR * (torch.finfo(dtype).eps / 2) * max(A, 1.0) * magnitude
    empty = (maps.new_zeros(0, dtype=torch.long),) * 3 + (maps.new_zeros(0),)

    # 1. Tiles that can hold a peak. A pixel reaching the threshold needs a cell of its support at or above
    #    tau (rounded down to the map's type: never too few); the supports of a tile's pixels lie in the tile
    #    widened by -lo_s cells before and hi_s after, so a tile is screened when that box holds such a cell.
    bound = (threshold if threshold > 0 else 0.0) + (P - 1) * low.double() - eps
    tau = torch.nextafter((bound / P).to(dtype), torch.tensor(-math.inf, dtype=dtype, device=dev))[:, None, None]
    th, tw = -(-h // T), -(-w // T)
    padded = maps if (th * T, tw * T) == (h, w) else F.pad(maps, (0, tw * T - w, 0, th * T - h), value=-math.inf)
    rows = padded.view(nb, th, T, tw * T)
    box = _tile_box_max([rows[:, :, k] for k in range(T)], -lo_s, hi_s, axis=1)        # (Nb, th, W)
    cols = box.view(nb, th, tw, T)
    box = _tile_box_max([cols[..., k] for k in range(T)], -lo_s, hi_s, axis=2)         # (Nb, th, tw)
    near = box >= tau if threshold > 0 else box > tau
    tb, ty, tx = torch.nonzero(near, as_tuple=True)
    if tb.numel() == 0:
        return empty

    # 2. Screening values of each tile's pixels and their r-pixel ring, W · cells · Wᵀ as two GEMMs, the cells
    #    read with indices clamped to the map (= PyTorch's border clamping).
    e, s_cells = tile_w.shape
    steps = torch.arange(lo_t, lo_t + s_cells, device=dev)
    rows = (ty[:, None] * T + steps).clamp_(0, h - 1).mul_(w).add_((tb * (h * w))[:, None])
    cols = (tx[:, None] * T + steps).clamp_(0, w - 1)
    # float32 GEMMs may run in TF32/bf16 when the process allows it: eps would not cover that, float64 does
    work = dtype if dtype == torch.float64 or torch.get_float32_matmul_precision() == "highest" else torch.float64
    cells = maps.view(-1)[rows[:, :, None] + cols[:, None, :]].to(work)           # (Na, S, S)
    wt = torch.as_tensor(tile_w, dtype=work, device=dev)
    half = (cells.view(-1, s_cells) @ wt.T).view(-1, s_cells, e)                # rows × ring-extended columns
    # (the second product leaves x before y: the screening below works in that layout, it is symmetric)
    approx = (half.transpose(1, 2).reshape(-1, s_cells) @ wt.T).view(-1, e, e)   # (Na, E x, E y)
    # a screened pixel needs a + eps >= threshold and a + eps > 0 (below: "a >= floor", ">" when threshold <= 0)
    floor = max(threshold, 0.0) - eps
    top = approx.view(-1, e * e).amax(dim=1)                     # ring included: a weaker, cheaper test
    keep = torch.nonzero(top >= floor if threshold > 0 else top > floor).squeeze(1)
    if keep.numel() == 0:
        return empty
    tb, ty, tx = tb.index_select(0, keep), ty.index_select(0, keep), tx.index_select(0, keep)
    approx = approx.index_select(0, keep)
    # Pixels off the map are no neighbours (max-pool pads with -inf) and no candidates; only border tiles
    # (and the last, partial ones) have them.
    core = T * R
    off = torch.arange(-r, core + r, device=dev)
    edge = torch.nonzero((ty == 0) | (tx == 0) | ((ty + 1) * core + r > h * R) | ((tx + 1) * core + r > w * R))
    if edge.numel():
        edge = edge.squeeze(1)
        gy, gx = ty[edge, None] * core + off, tx[edge, None] * core + off
        inside = ((gx >= 0) & (gx < w * R))[:, :, None] & ((gy >= 0) & (gy < h * R))[:, None, :]
        approx[edge] = torch.where(inside, approx[edge], torch.full_like(approx[edge], -math.inf))
    rmax = approx[:, :, 0:core]
    for d in range(1, 2 * r + 1):
        rmax = torch.maximum(rmax, approx[:, :, d:d + core])
    wmax = rmax[:, 0:core, :]
    for d in range(1, 2 * r + 1):
        wmax = torch.maximum(wmax, rmax[:, d:d + core, :])
    centre = approx[:, r:r + core, r:r + core]
    screened = (centre + 2 * eps >= wmax) & (centre >= floor if threshold > 0 else centre > floor)
    si, sx, sy = torch.nonzero(screened, as_tuple=True)
    if si.numel() == 0:
        return empty

    # 3. Exact decision on F.interpolate's own values in the (4r+1)² window of each screened pixel.
    sb = tb[si]
    py = ty[si] * core + sy
    px = tx[si] * core + sx
    vals = _exact_windows(maps, sb, py - 2 * r, px - 2 * r, 4 * r + 1, R, mode, -math.inf)
    final = _is_peak(vals, r, threshold)
    return sb[final], py[final], px[final], vals[final, 2 * r, 2 * r]


# ---------------------------------------------------------------- DARK

def _gaussian_kernel(kernel: int, dtype, device) -> torch.Tensor:
    # OpenCV's sigma for GaussianBlur(ksize, sigma=0), the official DARK code's blur.
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    t = torch.arange(kernel, dtype=torch.float64, device=device) - (kernel - 1) / 2
    g = torch.exp(-t * t / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(dtype)


def _dark_centres(pk: torch.Tensor, h: int, w: int):
    """Integer peak pixels, clamped to the map, and where a Newton step may be taken (2 px from the border)."""
    x = pk[..., 0].round().long()
    y = pk[..., 1].round().long()
    ok = (pk[..., 2] > 0) & (x >= 2) & (x <= w - 3) & (y >= 2) & (y <= h - 3)
    return x, y, x.clamp(0, w - 1), y.clamp(0, h - 1), ok


def _dark_step(patches: torch.Tensor, pk: torch.Tensor, x, y, ok, kernel: int) -> torch.Tensor:
    """One Newton step of the log of the blurred patches (n, c, k, S, S) at their centres; see dark_refine."""
    n, c, k, size, _ = patches.shape
    blurred = F.conv2d(patches.reshape(-1, 1, size, size),
                       _gaussian_kernel(kernel, patches.dtype, patches.device)[None, None])   # (M, 1, 5, 5)
    lg = torch.log(blurred.clamp_min(1e-10))[:, 0].reshape(n, c, k, 5, 5)
    centre = lg[..., 2, 2]
    dx = 0.5 * (lg[..., 2, 3] - lg[..., 2, 1])
    dy = 0.5 * (lg[..., 3, 2] - lg[..., 1, 2])
    dxx = 0.25 * (lg[..., 2, 4] - 2 * centre + lg[..., 2, 0])
    dyy = 0.25 * (lg[..., 4, 2] - 2 * centre + lg[..., 0, 2])
    dxy = 0.25 * (lg[..., 3, 3] - lg[..., 1, 3] - lg[..., 3, 1] + lg[..., 1, 1])
    det = dxx * dyy - dxy * dxy
    ok = ok & (det > 0) & (dxx < 0)
    safe = torch.where(ok, det, torch.ones_like(det))
    step_x = -(dyy * dx - dxy * dy) / safe
    step_y = -(dxx * dy - dxy * dx) / safe
    out = pk.clone()
    out[..., 0] = torch.where(ok, x.to(out.dtype) + step_x.to(out.dtype), pk[..., 0])
    out[..., 1] = torch.where(ok, y.to(out.dtype) + step_y.to(out.dtype), pk[..., 1])
    return out


def dark_refine(heatmaps_upsampled: torch.Tensor, peaks: torch.Tensor, kernel: int = 11) -> torch.Tensor:
    """DARK (Zhang et al. 2020) refinement of every peak, as GOG adapts it to bottom-up (per peak, not per person).

    heatmaps_upsampled: (K, H, W) or (B, K, H, W) full-resolution heatmaps (index == input pixel).
    peaks: (K, k, 3) / (B, K, k, 3) integer-pixel peaks from :func:`peaks_from_upsampled`.
    kernel: odd size of the Gaussian blur (sigma as OpenCV derives it from the size; 11 -> 2 px, DARK's
            default; GOG's call site is not published: [D]).

    As the official port ([R: OffsetGuided utils/dark_process.py, commit b4ba052]): blur the heatmap with
    zero padding, take log(max(., 1e-10)), and move each peak by one Newton step -H^-1 grad of the log map,
    with central differences at the peak (first derivatives and dxy with step 1, dxx/dyy with step 2).
    The per-channel rescaling of the official blur is omitted: a constant factor is a constant under the log.
    Unlike the port, the step is taken only where the Hessian is negative definite (a Newton step at a
    non-maximum points anywhere) — peaks closer than 2 px to the border, and empty slots, are unchanged.
    Only a (4 + kernel)^2 patch per peak is blurred, so the cost does not grow with the image.
    Returns refined peaks, same shape; scores unchanged.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise HarnessError(f"DARK blur kernel must be a positive odd size, got {kernel}")
    hm, batched = _batch(torch.as_tensor(heatmaps_upsampled), 3)
    pk, _ = _batch(torch.as_tensor(peaks, device=hm.device), 3)
    hm = hm if hm.is_floating_point() else hm.float()
    n, c, h, w = hm.shape
    k = pk.shape[2]
    if k == 0 or c == 0:
        return pk.clone() if batched else pk[0].clone()
    half = 2 + kernel // 2
    size = 2 * half + 1
    x, y, xc, yc, ok = _dark_centres(pk, h, w)
    padded = F.pad(hm, (half, half, half, half))
    steps = torch.arange(size, device=hm.device)
    rows = (yc[..., None] + steps)[..., :, None]                          # (n, c, k, size, 1) padded coords
    cols = (xc[..., None] + steps)[..., None, :]                          # (n, c, k, 1, size)
    bi = torch.arange(n, device=hm.device).reshape(n, 1, 1, 1, 1)
    ci = torch.arange(c, device=hm.device).reshape(1, c, 1, 1, 1)
    out = _dark_step(padded[bi, ci, rows, cols], pk, x, y, ok, kernel)
    return out if batched else out[0]


def _dark_refine_windows(maps: torch.Tensor, peaks: torch.Tensor, stride: int, mode: str,
                         kernel: int) -> torch.Tensor:
    """:func:`dark_refine` on the upsampled maps without upsampling them: the same patches, bit for bit,
    from :func:`_exact_windows` (one per peak, one per map for the empty slots, which sit at pixel (0, 0))."""
    n, c, h, w = maps.shape
    k = peaks.shape[2]
    if k == 0 or c == 0:
        return peaks.clone()
    half = 2 + kernel // 2
    size = 2 * half + 1
    H, W = h * stride, w * stride
    x, y, xc, yc, ok = _dark_centres(peaks, H, W)
    flat = maps.reshape(n * c, h, w)
    bmap = torch.arange(n * c, device=maps.device)
    zero = torch.zeros_like(bmap)
    corner = _exact_windows(flat, bmap, zero - half, zero - half, size, stride, mode, 0.0)   # (n*c, S, S)
    patches = corner[:, None].expand(n * c, k, size, size).clone()
    vb, vi = torch.nonzero((peaks[..., 2] > 0).reshape(n * c, k), as_tuple=True)
    if vb.numel():
        ys, xs = yc.reshape(n * c, k)[vb, vi], xc.reshape(n * c, k)[vb, vi]
        patches[vb, vi] = _exact_windows(flat, vb, ys - half, xs - half, size, stride, mode, 0.0)
    return _dark_step(patches.reshape(n, c, k, size, size), peaks, x, y, ok, kernel)


# ---------------------------------------------------------------- decoding

def decode_peaks(
    heatmaps: torch.Tensor,
    stride: int,
    upsample: str = "bicubic",
    topk: int = 32,
    threshold: float = 0.06,
    nms_kernel: int = 3,
    dark: bool = False,
    dark_kernel: int = 11,
    method: str = "fast",
) -> torch.Tensor:
    """Keypoint candidates from output-resolution heatmaps (GOG §2.2, decoding steps 2-3 of ``methods.md`` §1.6).

    heatmaps: (K, h, w) or (B, K, h, w). Upsampled ×R (``upsample``: 'bicubic' = paper, 'bilinear' = the
    ablation) so that the upsampled index is the input pixel, then ``nms_kernel`` max-pool NMS, then the
    ``topk`` best local maxima per channel with score >= ``threshold`` (and > 0), equal scores in raster
    order. ``dark=True`` refines each peak with :func:`dark_refine` (Table 2's "DARK" column).
    method: "fast" (default) evaluates the upsampled maps only where a peak can be; "full" upsamples every
    map (the reference). Both give the same peaks (module docstring); "fast" falls back to "full" where its
    exactness argument does not hold.
    Returns (K, topk, 3) / (B, K, topk, 3) ``[x, y, score]`` in input pixels, empty slots all 0.
    """
    _check_mode(upsample)
    radius = _check_nms_kernel(nms_kernel)
    if method not in PEAK_METHODS:
        raise HarnessError(f"peak decoding method must be one of {PEAK_METHODS}, got {method!r}")
    if dark and (dark_kernel < 1 or dark_kernel % 2 == 0):
        raise HarnessError(f"DARK blur kernel must be a positive odd size, got {dark_kernel}")
    x, batched = _batch(torch.as_tensor(heatmaps), 3)
    x = x if x.is_floating_point() else x.float()
    x = x.contiguous()
    n, c, h, w = x.shape
    if x.numel() == 0:
        out = x.new_zeros((n, c, topk, 3))
        return out if batched else out[0]
    # radius 0 (no NMS): every pixel above the threshold is a peak, nothing to save by screening
    fast = method == "fast" and radius > 0 and _fast_supported(x, stride, upsample)
    if fast:
        flat = x.reshape(n * c, h, w)
        low, high = flat.amin(dim=(-2, -1)), flat.amax(dim=(-2, -1))
        bounds = torch.stack([low.min(), high.max()]).tolist()      # NaN and inf show in the extremes
        fast = all(math.isfinite(v) for v in bounds)        # else the screening's bound does not hold
    if not fast:
        up = upsample_maps(x, stride, upsample)
        peaks = peaks_from_upsampled(up, topk, threshold, nms_kernel)
        if dark:
            peaks = dark_refine(up, peaks, dark_kernel)
        return peaks if batched else peaks[0]
    b, py, px, score = _fast_peaks(flat, stride, upsample, threshold, radius, low, max(map(abs, bounds)))
    peaks = _select_topk(b, py, px, score, n * c, topk, w * stride).reshape(n, c, topk, 3)
    if dark:
        peaks = _dark_refine_windows(x, peaks, stride, upsample, dark_kernel)
    return peaks if batched else peaks[0]


def refine_peaks(
    peaks: torch.Tensor, refine_offsets: torch.Tensor, stride: int, upsample: str = "bilinear"
) -> torch.Tensor:
    """Add the refinement offset read at each peak (Table 2's "ro").

    peaks: (K, k, 3) / (B, K, k, 3). refine_offsets: output-resolution maps (C, h, w) / (B, C, h, w) with
    C = 2 (the shared map of :func:`.offsets.encode_refinement_offsets`) or C = 2K (per type, channel 2k = dx,
    2k+1 = dy of type k). Offsets are read as the decoder reads all offsets (×R ``upsample`` at the peak,
    :func:`.offsets.sample_offsets`). Empty slots are unchanged.
    """
    pk, batched = _batch(torch.as_tensor(peaks), 3)
    maps, _ = _batch(torch.as_tensor(refine_offsets, device=pk.device), 3)
    n, c, k, _ = pk.shape
    channels = maps.shape[1]
    if channels == 2:
        pts = pk[..., :2].reshape(n, 1, c * k, 2)
        maps = maps[:, None]
    elif channels == 2 * c:
        pts = pk[..., :2]
        maps = maps.reshape(n, c, 2, *maps.shape[-2:])
    else:
        raise ValueError(f"refinement offsets need 2 or 2K = {2 * c} channels, got {channels}")
    dtype = maps.dtype if maps.is_floating_point() else torch.float32
    delta = sample_offsets(maps.to(dtype), pts.to(dtype), stride, upsample).reshape(n, c, k, 2)
    out = pk.clone()
    out[..., :2] = torch.where(pk[..., 2:] > 0, pk[..., :2] + delta.to(pk.dtype), pk[..., :2])
    return out if batched else out[0]
