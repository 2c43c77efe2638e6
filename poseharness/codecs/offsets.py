"""GOG's offset fields: guiding offsets along limbs, refinement offsets, and reading them back.

Conventions as in :mod:`.heatmap`: input pixels, pixel centres at integers, output cell ``u`` at input position
``u*R + R/2 - 0.5``. Every offset is a displacement in input pixels. Encoders take numpy and return numpy
(they run in data-loader workers); :func:`sample_offsets` and :func:`guides_for` take torch tensors (they run
on network outputs, on CPU or CUDA).

Why reading is exact: an encoded field holds ``target - g~`` at each cell g of a window, an affine function of
the cell position, and bilinear interpolation reproduces affine functions exactly. So a point p whose four
bilinear neighbours lie in the window reads ``target - p``: ``p + offset == target`` for any p there, not only
at cell centres.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import HarnessError
from .heatmap import _check_keypoints, cell_centres, containing_cell

UPSAMPLE_MODES = ("bilinear", "bicubic")


def person_scales(keypoints: np.ndarray, boxes: np.ndarray, min_scale: float = 1.0) -> np.ndarray:
    """(P,) float32 — the instance scale s that normalises a person's offset loss, in input pixels.

    s = sqrt(bbox_w * bbox_h) of the person's box (``boxes`` (P, 4) x, y, w, h in input pixels, i.e. the box
    carried through the loader's affine). That is the official code's choice ([R: OffsetGuided
    transforms/annotations.py], "root of keypoints bbox" = the annotation's ``bbox``; the paper says only
    "normalized by individual scales"). A degenerate box (w*h <= 0, e.g. unknown) falls back to the root
    area of the box enveloping the person's labelled keypoints, the commented alternative in the same file.
    The result is floored at ``min_scale`` so that dividing by it is always finite.
    """
    kps = _check_keypoints(keypoints)
    box = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if box.shape[0] != kps.shape[0]:
        raise ValueError(f"{kps.shape[0]} persons but {box.shape[0]} boxes")
    scale = np.sqrt(np.clip(box[:, 2], 0, None) * np.clip(box[:, 3], 0, None))
    labelled = kps[..., 2] > 0                                            # (P, K)
    inf = np.inf
    lo = np.where(labelled[..., None], kps[..., :2], inf).min(axis=1)     # (P, 2)
    hi = np.where(labelled[..., None], kps[..., :2], -inf).max(axis=1)
    extent = np.where(labelled.any(axis=1)[:, None], hi - lo, 0.0)
    envelope = np.sqrt(extent[:, 0] * extent[:, 1])
    scale = np.where(scale > 0, scale, envelope)
    return np.maximum(scale, min_scale).astype(np.float32)


def _window_cells(points: np.ndarray, out_hw: tuple[int, int], stride: int, radius: float):
    """All in-bounds cells of the square window around each point.

    The window is the (2*floor(radius) + 1)^2 cells centred on the cell containing the point (radius 3.5 ->
    the paper's 7x7, 1.5 -> 3x3). The official code writes cells ``[round(x/R - radius), round(x/R + radius))``
    ([R: encoder/offset.py]); for integer keypoints (COCO) that is the same window (``floor(x/R)`` is the
    containing cell when x is an integer), except that Python's round-half-to-even makes the official window
    6, 7 or 8 cells wide on keypoints at multiples of R/2. For real-valued keypoints (after augmentation)
    ``floor(x/R)`` can be one cell short of the containing cell; centring on the containing cell keeps the
    bilinear neighbours of the decoded peak inside the window, which the 3x3 refinement window needs: with the
    official centre, quantised peaks read outside it for about a fifth of random keypoints.

    Returns (n_idx, uy, ux): flat arrays over the selected (point, cell) pairs — the point index and the cell.
    """
    height, width = out_hw
    centre = containing_cell(points, stride)                                # (N, 2)
    half = int(math.floor(radius))
    steps = np.arange(-half, half + 1)
    ux = centre[:, 0, None] + steps                                         # (N, n)
    uy = centre[:, 1, None] + steps
    ok_x = (ux >= 0) & (ux < width)
    ok_y = (uy >= 0) & (uy < height)
    n_idx, iy, ix = np.nonzero(ok_y[:, :, None] & ok_x[:, None, :])
    return n_idx, uy[n_idx, iy], ux[n_idx, ix]


def _keep_shortest(target: np.ndarray, vectors: np.ndarray, n_idx: np.ndarray) -> np.ndarray:
    """Indices of the entries that win their target cell: the shortest vector, ties to the lower ``n_idx``.

    target: (M,) flat cell ids; vectors: (M, 2); n_idx: (M,) source order. Vectorised "keep the shorter
    vector where windows overlap" (official code: strict ``<``, so the first person written wins a tie).
    """
    length = np.hypot(vectors[:, 0], vectors[:, 1])
    order = np.lexsort((n_idx, length, target))
    first = np.ones(order.size, dtype=bool)
    first[1:] = target[order[1:]] != target[order[:-1]]
    return order[first]


def encode_guiding_offsets(
    keypoints: np.ndarray,
    boxes: np.ndarray,
    skeleton: Sequence[tuple[int, int]],
    out_hw: tuple[int, int],
    stride: int,
    radius: float = 3.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GOG's ground-truth guiding offsets (paper §2.3; [R: encoder/offset.py]).

    keypoints: (P, K, 3) input px, v in {0,1,2}; boxes: (P, 4) x, y, w, h input px (for :func:`person_scales`).
    skeleton:  L directed limbs (from, to), e.g. ``schemas.GOG19`` or ``schemas.GOG44``.
    radius:    half-size of the supervised window in cells: the (2*floor(radius)+1)^2 cells centred on the cell
               containing J_from (3.5 -> the paper's 7x7; see :func:`_window_cells` for the official rule).

    For limb l and every person with both ends labelled, each cell g of the window around J_from holds
    ``J_to - g~`` (g~ = the cell's pixel-centre position). Where windows of two persons overlap the shorter
    vector wins. Returns
      offsets (L, 2, H, W) float32 — (dx, dy) in input px, 0 outside the mask;
      mask    (L, H, W) bool — the supervised cells;
      scale   (L, H, W) float32 — the winning person's :func:`person_scales`, 1 outside the mask (so a loss can
              divide by it everywhere).
    """
    kps = _check_keypoints(keypoints)
    height, width = int(out_hw[0]), int(out_hw[1])
    limbs = np.asarray(skeleton, dtype=np.int64).reshape(-1, 2)
    num_limbs = limbs.shape[0]
    offsets = np.zeros((num_limbs, height, width, 2), dtype=np.float32)
    mask = np.zeros((num_limbs, height, width), dtype=bool)
    scale = np.ones((num_limbs, height, width), dtype=np.float32)
    if limbs.size and (limbs.min() < 0 or limbs.max() >= kps.shape[1]):
        raise ValueError(f"skeleton refers to keypoint types outside 0..{kps.shape[1] - 1}")

    src, dst = limbs[:, 0], limbs[:, 1]
    person, limb = np.nonzero((kps[:, src, 2] > 0) & (kps[:, dst, 2] > 0))   # person-major order
    if person.size and height and width:
        s = person_scales(kps, boxes)
        start = kps[person, src[limb], :2]
        end = kps[person, dst[limb], :2]
        n_idx, uy, ux = _window_cells(start, (height, width), stride, radius)
        vec = end[n_idx] - np.stack([cell_centres(width, stride)[ux], cell_centres(height, stride)[uy]], axis=1)
        target = (limb[n_idx] * height + uy) * width + ux
        win = _keep_shortest(target, vec, n_idx)
        offsets.reshape(-1, 2)[target[win]] = vec[win]
        mask.reshape(-1)[target[win]] = True
        scale.reshape(-1)[target[win]] = s[person[n_idx[win]]]
    return np.ascontiguousarray(offsets.transpose(0, 3, 1, 2)), mask, scale


def encode_refinement_offsets(
    keypoints: np.ndarray,
    out_hw: tuple[int, int],
    stride: int,
    radius: float = 1.5,
    per_type: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Refinement offsets "ro" (GOG Table 2; [R: encoder/heatmap.py create_jitter_offset]).

    Each cell of the window around a labelled keypoint p (radius 1.5 -> the 3x3 cells centred on the cell
    containing p, :func:`_window_cells`) holds ``p - g~`` in input px; overlaps keep the shorter vector.

    per_type=False (the paper's variant): one map shared by all keypoint types -> offsets (2, H, W),
        mask (H, W). Where keypoints of different types lie within a cell or two (a small face) the nearer one
        wins, so a peak can be pulled towards a keypoint of another type.
    per_type=True: one map per type -> offsets (K, 2, H, W), mask (K, H, W); no cross-type interference.
        Reshape to (2K, H, W) for a network head; :func:`poseharness.codecs.peaks.refine_peaks` reads either.
    """
    kps = _check_keypoints(keypoints)
    height, width = int(out_hw[0]), int(out_hw[1])
    layers = kps.shape[1] if per_type else 1
    offsets = np.zeros((layers, height, width, 2), dtype=np.float32)
    mask = np.zeros((layers, height, width), dtype=bool)
    person, ktype = np.nonzero(kps[..., 2] > 0)
    if person.size and height and width:
        xy = kps[person, ktype, :2]
        n_idx, uy, ux = _window_cells(xy, (height, width), stride, radius)
        vec = xy[n_idx] - np.stack([cell_centres(width, stride)[ux], cell_centres(height, stride)[uy]], axis=1)
        layer = ktype[n_idx] if per_type else np.zeros_like(n_idx)
        target = (layer * height + uy) * width + ux
        win = _keep_shortest(target, vec, n_idx)
        offsets.reshape(-1, 2)[target[win]] = vec[win]
        mask.reshape(-1)[target[win]] = True
    offsets = np.ascontiguousarray(offsets.transpose(0, 3, 1, 2))
    return (offsets, mask) if per_type else (offsets[0], mask[0])


def sample_offsets(
    offsets: torch.Tensor, points: torch.Tensor, stride: int, upsample: str = "bilinear"
) -> torch.Tensor:
    """Read offset vectors at input-pixel positions, as the decoder does.

    offsets: (L, 2, h, w) or (B, L, 2, h, w) output-resolution maps; points: (L, k, 2) or (B, L, k, 2) x, y
    in input px (any real values). Returns (L, k, 2) / (B, L, k, 2) in the offsets' dtype and device.

    The value equals upsampling the maps ×R with ``F.interpolate(scale_factor=R, mode=upsample,
    align_corners=False)`` and indexing the result at the (integer) point — the paper's decoder — computed by
    ``F.grid_sample`` at the pixel-centre-mapped position ``(p + 0.5)/R - 0.5`` (border padding = the clamped
    taps of ``interpolate``), so no full-resolution map is ever built and real-valued points interpolate
    smoothly between pixels.
    """
    if upsample not in UPSAMPLE_MODES:
        raise HarnessError(f"offset upsampling must be one of {UPSAMPLE_MODES}, got {upsample!r}")
    maps = torch.as_tensor(offsets)
    pts = torch.as_tensor(points, device=maps.device)
    batched = maps.dim() == 5
    if maps.dim() not in (4, 5) or maps.shape[-3] != 2 or pts.dim() != maps.dim() - 1 or pts.shape[-1] != 2:
        raise ValueError(f"offsets (L,2,h,w)/(B,L,2,h,w) and points (L,k,2)/(B,L,k,2) expected, "
                         f"got {tuple(maps.shape)} and {tuple(pts.shape)}")
    if not batched:
        maps, pts = maps[None], pts[None]
    b, num_limbs, _, h, w = maps.shape
    if pts.shape[:2] != (b, num_limbs):
        raise ValueError(f"points {tuple(pts.shape)} do not match offsets {tuple(maps.shape)}")
    k = pts.shape[2]
    dtype = maps.dtype if maps.is_floating_point() else torch.float32
    flat = maps.reshape(b * num_limbs, 2, h, w).to(dtype)
    if k == 0 or flat.shape[0] == 0:
        out = flat.new_zeros((b, num_limbs, k, 2))
        return out if batched else out[0]
    size = torch.tensor([w, h], dtype=dtype, device=maps.device)
    # grid_sample (align_corners=False) reads pixel coordinate ((g + 1) * size - 1) / 2 = (p + 0.5)/R - 0.5.
    grid = (2.0 * (pts.to(dtype) + 0.5) / (stride * size) - 1.0).reshape(b * num_limbs, 1, k, 2)
    values = F.grid_sample(flat, grid, mode=upsample, padding_mode="border", align_corners=False)
    out = values[:, :, 0, :].transpose(1, 2).reshape(b, num_limbs, k, 2)
    return out if batched else out[0]


def guides_for(
    peaks: torch.Tensor,
    offsets: torch.Tensor,
    skeleton: Sequence[tuple[int, int]],
    stride: int,
    upsample: str = "bilinear",
) -> torch.Tensor:
    """The grouping's input: the guiding vector read at every start candidate of every limb.

    peaks:   (K, k, 3) or (B, K, k, 3) from :func:`poseharness.codecs.peaks.decode_peaks` (score 0 = empty).
    offsets: guiding-offset maps at output resolution, (L, 2, h, w) or the network head's flat (2L, h, w)
             layout (channel 2l = dx, 2l+1 = dy of limb l); batched (B, L, 2, h, w) or (B, 2L, h, w).
    Returns guides (L, k, 2) / (B, L, k, 2), input px: ``peaks[from_l, i, :2] + guides[l, i]`` is where limb l
    expects J_to of start candidate i. Empty start slots get (0, 0).
    """
    pk = torch.as_tensor(peaks)
    maps = torch.as_tensor(offsets, device=pk.device)
    limbs = [int(a) for a, _ in skeleton]
    num_limbs = len(limbs)
    if maps.dim() == pk.dim() and maps.shape[-3] == 2 * num_limbs:       # flat head layout (…, 2L, h, w)
        maps = maps.reshape(*maps.shape[:-3], num_limbs, 2, *maps.shape[-2:])
    if maps.dim() != pk.dim() + 1 or maps.shape[-4] != num_limbs:
        raise ValueError(f"offsets {tuple(maps.shape)} do not fit {num_limbs} limbs and peaks {tuple(pk.shape)}")
    if not maps.is_floating_point():
        maps = maps.float()
    start = pk[..., limbs, :, :]                                          # (…, L, k, 3)
    guides = sample_offsets(maps, start[..., :2].to(maps.dtype), stride, upsample)
    empty = (start[..., 2] <= 0)[..., None]
    return guides.masked_fill(empty, 0.0)
