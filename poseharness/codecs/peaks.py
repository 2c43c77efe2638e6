"""Keypoint candidates from heatmaps (decoder side): upsampling, max-pool NMS, top-k, DARK, refinement offsets.

Torch in, torch out; every function takes unbatched (K, …) or batched (B, K, …) inputs and runs on the
input's device. Peaks are (…, K, k, 3) rows ``[x, y, score]`` in input pixels (pixel centres at integers),
sorted by score per channel; an empty slot is ``[0, 0, 0]`` (consumers mask by ``score > 0``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import HarnessError
from .offsets import UPSAMPLE_MODES, sample_offsets


def _batch(t: torch.Tensor, unbatched_dim: int) -> tuple[torch.Tensor, bool]:
    if t.dim() == unbatched_dim:
        return t[None], False
    if t.dim() == unbatched_dim + 1:
        return t, True
    raise ValueError(f"expected {unbatched_dim} or {unbatched_dim + 1} dimensions, got shape {tuple(t.shape)}")


def upsample_maps(maps: torch.Tensor, stride: int, mode: str = "bicubic") -> torch.Tensor:
    """(…, C, h, w) -> (…, C, h*R, w*R): index (y, x) of the result is input pixel (x, y).

    With ``align_corners=False`` and an integer ``scale_factor``, upsampled pixel i reads the map at cell
    coordinate (i + 0.5)/R - 0.5, the inverse of the pixel-centre transform i = u*R + R/2 - 0.5.
    """
    if mode not in UPSAMPLE_MODES:
        raise HarnessError(f"heatmap upsampling must be one of {UPSAMPLE_MODES}, got {mode!r}")
    x = torch.as_tensor(maps)
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])
    if not x.is_floating_point():
        x = x.float()
    up = F.interpolate(x, scale_factor=stride, mode=mode, align_corners=False)
    return up.reshape(*lead, *up.shape[-3:])


def local_maxima(heat: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """(N, C, H, W) bool — max-pool NMS: a pixel survives if no pixel of its ``kernel`` window is larger.

    A plateau (equal neighbouring maxima, e.g. a Gaussian centred between two pixels) would give several
    candidates for one keypoint; of the equal maxima within one window only the last in raster order is
    kept. The second pass can change nothing else: two distinct local maxima within one window are equal.
    """
    pad = kernel // 2
    keep = F.max_pool2d(heat, kernel, stride=1, padding=pad) == heat
    n, c, h, w = heat.shape
    index_dtype = torch.float32 if h * w < 2**24 else torch.float64   # exact integers in the float type
    index = torch.arange(h * w, device=heat.device, dtype=index_dtype).reshape(1, 1, h, w)
    ranked = torch.where(keep, index, torch.full_like(index, -1.0))
    return keep & (F.max_pool2d(ranked, kernel, stride=1, padding=pad) == ranked)


def peaks_from_upsampled(
    heat: torch.Tensor, topk: int = 32, threshold: float = 0.06, nms_kernel: int = 3
) -> torch.Tensor:
    """Top-k local maxima per channel of full-resolution heatmaps (K, H, W) / (B, K, H, W) -> (…, K, topk, 3).

    A peak is kept if its score is >= threshold and > 0 (score 0 marks an empty slot).
    """
    x, batched = _batch(torch.as_tensor(heat), 3)
    x = x if x.is_floating_point() else x.float()
    n, c, h, w = x.shape
    out = x.new_zeros((n, c, topk, 3))
    k = min(topk, h * w)
    if k == 0 or c == 0:
        return out if batched else out[0]
    keep = local_maxima(x, nms_kernel)
    scores = torch.where(keep, x, torch.full_like(x, -torch.inf)).reshape(n, c, h * w)
    top, idx = torch.topk(scores, k, dim=-1)                 # sorted descending
    valid = (top >= threshold) & (top > 0)
    found = torch.stack([(idx % w).to(x.dtype), torch.div(idx, w, rounding_mode="floor").to(x.dtype), top], -1)
    out[:, :, :k] = torch.where(valid[..., None], found, torch.zeros_like(found))
    return out if batched else out[0]


def _gaussian_kernel(kernel: int, dtype, device) -> torch.Tensor:
    # OpenCV's sigma for GaussianBlur(ksize, sigma=0), the official DARK code's blur.
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    t = torch.arange(kernel, dtype=torch.float64, device=device) - (kernel - 1) / 2
    g = torch.exp(-t * t / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(dtype)


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
    out = pk.clone()
    if k == 0 or c == 0:
        return out if batched else out[0]
    half = 2 + kernel // 2
    size = 2 * half + 1
    x = pk[..., 0].round().long()
    y = pk[..., 1].round().long()
    ok = (pk[..., 2] > 0) & (x >= 2) & (x <= w - 3) & (y >= 2) & (y <= h - 3)
    xc, yc = x.clamp(0, w - 1), y.clamp(0, h - 1)
    padded = F.pad(hm, (half, half, half, half))
    steps = torch.arange(size, device=hm.device)
    rows = (yc[..., None] + steps)[..., :, None]                          # (n, c, k, size, 1) padded coords
    cols = (xc[..., None] + steps)[..., None, :]                          # (n, c, k, 1, size)
    bi = torch.arange(n, device=hm.device).reshape(n, 1, 1, 1, 1)
    ci = torch.arange(c, device=hm.device).reshape(1, c, 1, 1, 1)
    patches = padded[bi, ci, rows, cols].reshape(-1, 1, size, size)
    blurred = F.conv2d(patches, _gaussian_kernel(kernel, hm.dtype, hm.device)[None, None])   # (M, 1, 5, 5)
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
    out[..., 0] = torch.where(ok, x.to(out.dtype) + step_x.to(out.dtype), pk[..., 0])
    out[..., 1] = torch.where(ok, y.to(out.dtype) + step_y.to(out.dtype), pk[..., 1])
    return out if batched else out[0]


def decode_peaks(
    heatmaps: torch.Tensor,
    stride: int,
    upsample: str = "bicubic",
    topk: int = 32,
    threshold: float = 0.06,
    nms_kernel: int = 3,
    dark: bool = False,
    dark_kernel: int = 11,
) -> torch.Tensor:
    """Keypoint candidates from output-resolution heatmaps (GOG §2.2, decoding steps 2-3 of ``methods.md`` §1.6).

    heatmaps: (K, h, w) or (B, K, h, w). Upsampled ×R (``upsample``: 'bicubic' = paper, 'bilinear' = the
    ablation) so that the upsampled index is the input pixel, then ``nms_kernel`` max-pool NMS, then the
    ``topk`` best local maxima per channel with score >= ``threshold``. ``dark=True`` refines each peak with
    :func:`dark_refine` (Table 2's "DARK" column).
    Returns (K, topk, 3) / (B, K, topk, 3) ``[x, y, score]`` in input pixels, empty slots all 0.
    """
    up = upsample_maps(heatmaps, stride, upsample)
    peaks = peaks_from_upsampled(up, topk, threshold, nms_kernel)
    if dark:
        peaks = dark_refine(up, peaks, dark_kernel)
    return peaks


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
