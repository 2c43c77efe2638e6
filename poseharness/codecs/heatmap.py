"""Gaussian keypoint heatmaps with GOG's pixel-centre transform (encoder side).

Coordinates are network-input pixels with pixel centres at integer positions. An output map of stride
``R`` has cells ``(u, v)``; cell ``u`` stands for the input position ``u*R + R/2 - 0.5`` (GOG §2.2,
``methods.md`` §0 "Pixel-centre transform") and covers the input span ``[u*R - 0.5, u*R + R - 0.5)``.
With this transform ``F.interpolate(scale_factor=R, align_corners=False)`` maps an output map onto the
input pixel grid (upsampled index == input pixel), which is what the decoders in :mod:`.peaks` rely on.

The decoders live in :mod:`poseharness.codecs.peaks`.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import HarnessError


def cell_centres(n: int, stride: int) -> np.ndarray:
    """(n,) float64 — input-pixel position of output cells ``0..n-1`` along one axis."""
    return np.arange(n, dtype=np.float64) * stride + stride / 2.0 - 0.5


def containing_cell(points: np.ndarray, stride: int) -> np.ndarray:
    """Index of the output cell whose span contains each input position (same shape, int64).

    Equal to ``round((p - R/2 + 0.5) / R)`` with halves rounded up, i.e. the cell whose pixel-centre position
    is nearest to ``p``; this is the rounding of the quantised ("qnt") encoding.
    """
    return np.floor((np.asarray(points, dtype=np.float64) + 0.5) / stride).astype(np.int64)


def quantise_points(points: np.ndarray, stride: int) -> np.ndarray:
    """Move input positions onto the pixel-centre position of their containing cell (float64)."""
    return containing_cell(points, stride) * float(stride) + stride / 2.0 - 0.5


def _check_keypoints(keypoints) -> np.ndarray:
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.ndim != 3 or kps.shape[2] < 3:
        raise ValueError(f"keypoints must have shape (P, K, 3), got {kps.shape}")
    return kps


def encode_heatmaps(
    keypoints: np.ndarray,
    out_hw: tuple[int, int],
    stride: int,
    sigma: float = 7.0,
    quantise: bool = False,
    min_value: float = 0.01,
) -> np.ndarray:
    """GOG's ground-truth keypoint heatmaps.

    keypoints: (P, K, 3) — x, y in input pixels, v in {0, 1, 2}; only v > 0 is drawn.
    out_hw:    (H, W) of the output maps; stride: R (input pixels per output cell).
    sigma:     Gaussian standard deviation in input pixels, one value for every type (paper: 7).
    quantise:  the "qnt" ablation: each keypoint is first moved to the pixel-centre position of the cell
               containing it (:func:`quantise_points`), so the Gaussian peaks exactly on a cell. The paper
               says only "quantifying ... to an integer coordinate" ([D] in ``methods.md`` §1.2). We round at the
               output resolution under the pixel-centre transform (the integer coordinate of the heatmap
               grid, as CenterNet draws its peaks): rounding to integer input pixels would leave COCO's
               keypoints, integers already, unchanged.
    min_value: values below it become 0 (paper code: 0.01).

    Returns (K, H, W) float32. The value of cell g in channel k is ``exp(-|g~ - p|^2 / (2 sigma^2))`` with g~
    the cell's pixel-centre position and p the nearest labelled keypoint of type k — with one sigma that is
    the maximum over persons (overlapping peaks are never summed).

    Only cells within the ``min_value`` radius of a keypoint can be non-zero, so each keypoint is drawn in a
    window just large enough to hold them (the result equals the dense formula exactly) and the windows are
    merged with an unbuffered scatter-maximum.
    """
    kps = _check_keypoints(keypoints)
    height, width = (int(out_hw[0]), int(out_hw[1]))
    num_types = kps.shape[1]
    if not 0.0 <= min_value < 1.0:
        raise HarnessError(f"heatmap min_value must lie in [0, 1), got {min_value}")
    if sigma <= 0:
        raise HarnessError(f"heatmap sigma must be positive, got {sigma}")
    out = np.zeros((num_types, height, width), dtype=np.float32)
    person, ktype = np.nonzero(kps[..., 2] > 0)
    if person.size == 0 or height == 0 or width == 0:
        return out

    xy = kps[person, ktype, :2]                                   # (N, 2) input px
    if quantise:
        xy = quantise_points(xy, stride)
    centre = containing_cell(xy, stride)                          # (N, 2) cells
    two_s2 = 2.0 * sigma * sigma
    # A cell further than ``reach`` input pixels from the keypoint along either axis is below min_value.
    reach = math.sqrt(-two_s2 * math.log(min_value)) if min_value > 0 else math.inf
    if 2 * (reach / stride + 1) < max(height, width):
        steps = np.arange(-math.ceil(reach / stride + 0.5), math.ceil(reach / stride + 0.5) + 1)
        ux = centre[:, 0, None] + steps                           # (N, n) window around each keypoint
        uy = centre[:, 1, None] + steps
    else:                                                         # the window would cover the map: use all of it
        ux = np.broadcast_to(np.arange(width), (len(xy), width))
        uy = np.broadcast_to(np.arange(height), (len(xy), height))
    gx = np.exp(-(ux * float(stride) + stride / 2.0 - 0.5 - xy[:, 0, None]) ** 2 / two_s2)
    gy = np.exp(-(uy * float(stride) + stride / 2.0 - 0.5 - xy[:, 1, None]) ** 2 / two_s2)
    value = gy[:, :, None] * gx[:, None, :]                       # (N, ny, nx) separable Gaussian
    keep = (
        ((uy >= 0) & (uy < height))[:, :, None]
        & ((ux >= 0) & (ux < width))[:, None, :]
        & (value >= min_value)
    )
    n_idx, iy, ix = np.nonzero(keep)
    np.maximum.at(out, (ktype[n_idx], uy[n_idx, iy], ux[n_idx, ix]), value[keep].astype(np.float32))
    return out


def heatmap_mask(ignore_mask: np.ndarray, stride: int, keep_fraction: float | None = 0.7) -> np.ndarray:
    """(H, W) float32 loss mask of the stride-R output maps, from an (S, S) bool ignore mask (True = ignored).

    Each output cell gets the fraction of its R×R input pixels that are not ignored. With ``keep_fraction``
    the cell is then supervised (1) when that fraction exceeds it, else not (0): GOG's official code resizes
    COCO's mask_miss to the output and thresholds it at 0.7. With ``keep_fraction=None`` the fraction itself is
    the cell's weight, as Simple Pose's official code keeps its area-resized mask_miss [R: Improved-Body-Parts
    py_cocodata_server/py_data_transformer.py, INTER_AREA]. Input rows / columns beyond the last whole cell
    are dropped, as the output size is ``S // R``.
    """
    h, w = ignore_mask.shape[0] // stride, ignore_mask.shape[1] // stride
    valid = ~np.asarray(ignore_mask, dtype=bool)[: h * stride, : w * stride]
    frac = valid.reshape(h, stride, w, stride).mean(axis=(1, 3))
    if keep_fraction is None:
        return frac.astype(np.float32)
    return (frac > keep_fraction).astype(np.float32)
