"""Simple Pose's representation: 18 keypoints with a neck, keypoint and body-part heatmaps or PAFs, extras.

Facts: ``shared/design/methods.md`` §2.2 (tags [P] paper, [R] official code hellojialee/Improved-Body-Parts,
[D] decided here). Conventions of :mod:`poseharness.codecs`: coordinates are network-input pixels with pixel
centres at integers; output cell ``u`` of stride ``R`` stands for the input position ``u*R + R/2 - 0.5``.

Output layout of one scale (``layout``), as the official network orders its 50 channels [R: config/config.py]:

    [0, L)              body-part heatmaps, one per part (``representation: parts``), or
    [0, 2L)             PAFs, (x, y) per part (``representation: paf``)
    next 18             keypoint heatmaps in the 18-keypoint order below
    next 1              person mask (all persons, crowds included, eroded 3x3)
    next 1              maximum over the 18 keypoint heatmaps

30 parts -> 30 + 18 + 2 = 50 channels; 21 parts -> 41; PAFs on 30 parts -> 80. The lower scales of the
multi-scale supervision (1/2 ... 1/16 of the stride-R map) are :func:`pyramid` of this map [P].
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from poseharness.codecs import cell_centres, encode_heatmaps
from poseharness.errors import HarnessError

# ---------------------------------------------------------------------------------------------------------
# The 18 keypoints (OpenPose order) and the body parts [R: config/config.py]
# ---------------------------------------------------------------------------------------------------------

KEYPOINTS18 = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
               "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
NECK = 1
#: ``INTERNAL_OF_COCO[c]``: the 18-keypoint index of COCO keypoint ``c`` (the inverse of the official
#: ``dt_gt_mapping`` {0:0, 2:6, 3:8, 4:10, 5:5, 6:7, 7:9, 8:12, 9:14, 10:16, 11:11, 12:13, 13:15, 14:2, 15:1,
#: 16:4, 17:3}; the neck has no COCO keypoint).
INTERNAL_OF_COCO = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
COCO_L_SHOULDER, COCO_R_SHOULDER = 5, 6
#: Horizontal mirror of the 18 keypoints: ``flipped[:, k] = original[:, FLIP18[k]]``.
FLIP18 = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)

#: The 21 CMU-Pose-style parts: 9 parts among neck, nose, eyes and ears (4 more than a tree needs, so 4 loops)
#: and the 12 limbs. ID 12's "MST" skeleton is not published; this is our reading of it [D].
PARTS21 = ((1, 0), (1, 14), (1, 15), (1, 16), (1, 17), (0, 14), (0, 15), (14, 16), (15, 17), (1, 2), (2, 3),
           (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13))
#: The 9 redundant parts that close loops in the skeleton (Table 1 ID 8 vs 12: +0.7 AP) [P, R].
REDUNDANT9 = ((0, 2), (0, 5), (2, 8), (8, 12), (5, 11), (11, 9), (16, 2), (17, 5), (8, 11))
PARTS30 = PARTS21 + REDUNDANT9
SKELETONS = {30: PARTS30, 21: PARTS21}
REPRESENTATIONS = ("parts", "paf")
NUM_EXTRAS = 2


def skeleton(enc: dict) -> tuple[tuple[int, int], ...]:
    """The part list of an ``encoding:`` config (``parts: 30 | 21``), in assembly order."""
    n = enc.get("parts", 30)
    if n not in SKELETONS:
        raise HarnessError(f"encoding.parts must be one of {sorted(SKELETONS)}, got {n!r}")
    return SKELETONS[n]


def part_flip(parts) -> tuple[np.ndarray, np.ndarray]:
    """How a horizontal mirror permutes parts: ``(perm (L,) int64, sign (L,) float32)``.

    ``flipped[l] = original[perm[l]]``; ``sign[l] = -1`` when the mirrored part is stored in the opposite
    direction (e.g. r_hip→l_hip mirrors to l_hip→r_hip): its PAF vectors change sign as well.
    """
    index = {tuple(p): i for i, p in enumerate(parts)}
    perm = np.empty(len(parts), dtype=np.int64)
    sign = np.empty(len(parts), dtype=np.float32)
    for i, (a, b) in enumerate(parts):
        fa, fb = FLIP18[a], FLIP18[b]
        if (fa, fb) in index:
            perm[i], sign[i] = index[(fa, fb)], 1.0
        elif (fb, fa) in index:
            perm[i], sign[i] = index[(fb, fa)], -1.0
        else:
            raise HarnessError(f"part {a}->{b} has no mirrored part in the skeleton")
    return perm, sign


def layout(enc: dict) -> dict[str, slice]:
    """Channel slices of one output map: ``parts`` (body parts or PAFs), ``keypoints``, ``mask``, ``kmax``."""
    rep = enc.get("representation", "parts")
    if rep not in REPRESENTATIONS:
        raise HarnessError(f"encoding.representation must be one of {REPRESENTATIONS}, got {rep!r}")
    n_parts = len(skeleton(enc)) * (2 if rep == "paf" else 1)
    k0 = n_parts + len(KEYPOINTS18)
    return {"parts": slice(0, n_parts), "keypoints": slice(n_parts, k0), "mask": slice(k0, k0 + 1),
            "kmax": slice(k0 + 1, k0 + 2)}


def num_channels(enc: dict) -> int:
    return layout(enc)["kmax"].stop


# ---------------------------------------------------------------------------------------------------------
# 17 <-> 18 keypoints
# ---------------------------------------------------------------------------------------------------------

def coco_to_internal(keypoints: np.ndarray) -> np.ndarray:
    """(P, 17, 3) COCO keypoints -> (P, 18, 3) in the 18-keypoint order, float64.

    The neck is the midpoint of the shoulders when both are labelled, with visibility the smaller of theirs
    (hidden if either is hidden) [R: config/config.py ``convert``]; otherwise it is unlabelled (0, 0, 0).
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[1:] != (17, 3):
        raise ValueError(f"COCO keypoints must have shape (P, 17, 3), got {kp.shape}")
    out = np.zeros((kp.shape[0], len(KEYPOINTS18), 3))
    out[:, list(INTERNAL_OF_COCO)] = kp
    ls, rs = kp[:, COCO_L_SHOULDER], kp[:, COCO_R_SHOULDER]
    both = (ls[:, 2] > 0) & (rs[:, 2] > 0)
    out[both, NECK, :2] = (ls[both, :2] + rs[both, :2]) / 2.0
    out[both, NECK, 2] = np.minimum(ls[both, 2], rs[both, 2])
    return out


def internal_to_coco(poses: np.ndarray) -> np.ndarray:
    """(N, 18, C) in the 18-keypoint order -> (N, 17, C) in COCO order (the neck is dropped)."""
    poses = np.asarray(poses)
    return poses[:, list(INTERNAL_OF_COCO)]


# ---------------------------------------------------------------------------------------------------------
# Encoders (numpy, data-loader workers)
# ---------------------------------------------------------------------------------------------------------

def _limb_instances(kp18: np.ndarray, parts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (person, part) with both keypoints labelled and apart: types (N,), from (N, 2), to (N, 2).

    A zero-length part has no direction and no band; the official encoder skips it too."""
    pa = np.asarray(parts, dtype=np.int64).reshape(-1, 2)
    a, b = kp18[:, pa[:, 0]], kp18[:, pa[:, 1]]                     # (P, L, 3)
    ok = (a[..., 2] > 0) & (b[..., 2] > 0) & np.any(a[..., :2] != b[..., :2], axis=-1)
    _, types = np.nonzero(ok)
    return types, a[ok][:, :2], b[ok][:, :2]


def _cell_range(lo: np.ndarray, hi: np.ndarray, n: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last cell (inclusive, clipped to [0, n-1]) whose pixel-centre position lies in [lo, hi]."""
    first = np.ceil((lo - stride / 2.0 + 0.5) / stride).astype(np.int64)
    last = np.floor((hi - stride / 2.0 + 0.5) / stride).astype(np.int64)
    return np.maximum(first, 0), np.minimum(last, n - 1)


def _windows(a: np.ndarray, b: np.ndarray, margin: float, out_hw: tuple[int, int], stride: int):
    """Cells of each instance's window: the box of its two keypoints grown by ``margin`` input px.

    Returns (ux (N, w), uy (N, h), inside (N, h, w)) with w, h the largest window: cell indices padded with
    the last valid cell and a mask of the real cells. Windows are padded to one size so that every instance
    is computed in one broadcast.
    """
    height, width = out_hw
    x0, x1 = _cell_range(np.minimum(a[:, 0], b[:, 0]) - margin, np.maximum(a[:, 0], b[:, 0]) + margin, width, stride)
    y0, y1 = _cell_range(np.minimum(a[:, 1], b[:, 1]) - margin, np.maximum(a[:, 1], b[:, 1]) + margin, height, stride)
    w = int(max((x1 - x0 + 1).max(initial=0), 0))
    h = int(max((y1 - y0 + 1).max(initial=0), 0))
    ux = x0[:, None] + np.arange(w)
    uy = y0[:, None] + np.arange(h)
    inside = (uy <= y1[:, None])[:, :, None] & (ux <= x1[:, None])[:, None, :]
    return np.minimum(ux, width - 1), np.minimum(uy, height - 1), inside


def _scatter_mean(types: np.ndarray, ux, uy, values: np.ndarray, counted: np.ndarray, n_types: int,
                  out_hw: tuple[int, int]) -> np.ndarray:
    """Per type and cell: the mean of ``values`` over the instances that count there (0 where none does).

    values: (N, h, w) or (N, h, w, D); counted: (N, h, w) bool. Returns float32 (n_types, H, W) or
    (n_types, D, H, W).
    """
    height, width = out_hw
    flat = (types[:, None, None] * height + uy[:, :, None]) * width + ux[:, None, :]     # (N, h, w)
    idx = flat[counted]
    size = n_types * height * width
    count = np.bincount(idx, minlength=size)
    hit = count > 0
    # (M, D): the trailing size is explicit, so no counted cell at all (a crop where no limb is in view) gives
    # (0, D) instead of numpy's error on reshape(0, -1)
    vals = values[counted].reshape(len(idx), int(np.prod(values.shape[3:], dtype=int)))
    out = np.zeros((vals.shape[1], size), dtype=np.float32)
    for dim in range(vals.shape[1]):
        sums = np.bincount(idx, weights=vals[:, dim], minlength=size)
        out[dim, hit] = sums[hit] / count[hit]
    out = out.reshape(-1, n_types, height, width)
    return out[0] if values.ndim == 3 else out.transpose(1, 0, 2, 3)


def encode_part_maps(kp18: np.ndarray, parts, out_hw: tuple[int, int], stride: int, sigma: float = 7.0,
                     threshold: float = 0.04, floor: float = 0.01, margin: float | None = None) -> np.ndarray:
    """Body-part heatmaps (L, H, W) float32 [P; R: py_cocodata_server/py_data_heatmapper.py].

    kp18: (P, 18, 3) in input px (v > 0 = labelled); parts: L pairs of 18-keypoint indices.
    For every person with both keypoints of a part labelled, each cell of the window (the box of the two
    keypoints grown by ``margin`` px, default R; a cell belongs to it when its pixel-centre position does)
    gets ``g = exp(-d² / (2 sigma²))``, d the distance in input px from the cell's position to the line
    through the two keypoints; values ``g <= threshold`` become ``floor`` (the official code's 0.01; with
    ``floor = 0`` they are dropped). Where windows of one part type overlap, the values of the persons that
    reach the cell (value > 0) are averaged [R] (the keypoint maps take the maximum instead). The band is
    truncated by the window, not by an ellipse [R].

    [D] The official window is ``round((min - R)/R) .. round((max + R)/R)`` in cells; here a cell is in the
    window when its pixel-centre position lies in ``[min - margin, max + margin]``, the same rule at every
    stride and exactly mirror-symmetric.
    """
    kp18 = np.asarray(kp18, dtype=np.float64)
    n_types = len(parts)
    height, width = int(out_hw[0]), int(out_hw[1])
    margin = float(stride if margin is None else margin)
    types, a, b = _limb_instances(kp18, parts)
    if types.size == 0 or height == 0 or width == 0:
        return np.zeros((n_types, height, width), dtype=np.float32)
    ux, uy, inside = _windows(a, b, margin, (height, width), stride)
    d = b - a
    norm = np.hypot(d[:, 0], d[:, 1])
    px = (ux * float(stride) + stride / 2.0 - 0.5)[:, None, :]                     # (N, 1, w)
    py = (uy * float(stride) + stride / 2.0 - 0.5)[:, :, None]                     # (N, h, 1)
    # distance to the line: |cross(B - A, A - p)| / |AB|
    dist = np.abs(d[:, 0, None, None] * (a[:, 1, None, None] - py)
                  - d[:, 1, None, None] * (a[:, 0, None, None] - px)) / norm[:, None, None]
    g = np.exp(-dist ** 2 / (2.0 * sigma * sigma))
    g = np.where(g <= threshold, floor, g)
    # Means of values in (0, 1]: the official clip to [0, 1] would change nothing.
    return _scatter_mean(types, ux, uy, g, inside & (g > 0), n_types, (height, width))


def encode_pafs(kp18: np.ndarray, parts, out_hw: tuple[int, int], stride: int, width: float = 8.0) -> np.ndarray:
    """Part affinity fields (2L, H, W) float32, channels (2l, 2l+1) = (x, y) of part l (CMU-Pose) [D].

    A cell is on a person's part A→B when its position p satisfies ``0 <= (p - A)·u <= |AB|`` and
    ``|(p - A) × u| <= width`` (u the unit vector A→B, ``width`` in input px: CMU-Pose's one cell at stride 8);
    its value is u. Where persons' parts of one type overlap, the vectors are averaged over those persons.
    """
    kp18 = np.asarray(kp18, dtype=np.float64)
    n_types = len(parts)
    height, width_cells = int(out_hw[0]), int(out_hw[1])
    out_shape = (2 * n_types, height, width_cells)
    types, a, b = _limb_instances(kp18, parts)
    if types.size == 0 or height == 0 or width_cells == 0:
        return np.zeros(out_shape, dtype=np.float32)
    ux, uy, inside = _windows(a, b, width, (height, width_cells), stride)
    d = b - a
    norm = np.hypot(d[:, 0], d[:, 1])
    u = d / norm[:, None]                                                          # (N, 2)
    rx = (ux * float(stride) + stride / 2.0 - 0.5)[:, None, :] - a[:, 0, None, None]
    ry = (uy * float(stride) + stride / 2.0 - 0.5)[:, :, None] - a[:, 1, None, None]
    along = rx * u[:, 0, None, None] + ry * u[:, 1, None, None]
    across = np.abs(rx * u[:, 1, None, None] - ry * u[:, 0, None, None])
    on = inside & (along >= 0) & (along <= norm[:, None, None]) & (across <= width)
    vec = np.broadcast_to(u[:, None, None, :], on.shape + (2,))
    maps = _scatter_mean(types, ux, uy, vec, on, n_types, (height, width_cells))    # (L, 2, H, W)
    return np.ascontiguousarray(maps).reshape(out_shape)


def person_mask(boxes: np.ndarray, out_hw: tuple[int, int], stride: int, erode: int = 3) -> np.ndarray:
    """(H, W) float32 1/0: cells inside any person's box, eroded by an ``erode``×``erode`` square.

    boxes: (P, 4) x, y, w, h in input px — every person, crowds included (the official ``mask_all``).
    [D] The official channel is the union of the persons' segmentations; the harness's samples carry boxes
    but no segmentation, so the box stands for the person's region.
    """
    height, width = int(out_hw[0]), int(out_hw[1])
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy = cell_centres(width, stride), cell_centres(height, stride)
    inx = (cx[None, :] >= boxes[:, 0, None]) & (cx[None, :] <= boxes[:, 0, None] + boxes[:, 2, None])
    iny = (cy[None, :] >= boxes[:, 1, None]) & (cy[None, :] <= boxes[:, 1, None] + boxes[:, 3, None])
    mask = (iny[:, :, None] & inx[:, None, :]).any(axis=0) if len(boxes) else np.zeros((height, width), bool)
    if erode > 1 and mask.any():
        # cv2.erode's default border counts as foreground: a person at the edge keeps its edge cells.
        mask = ndimage.binary_erosion(mask, structure=np.ones((erode, erode), bool), border_value=1)
    return mask.astype(np.float32)


def encode_maps(kp18: np.ndarray, boxes: np.ndarray, out_hw: tuple[int, int], enc: dict) -> np.ndarray:
    """The full stride-R target (C, H, W) float32 in the order of :func:`layout`.

    kp18: (P, 18, 3) persons to encode (input px); boxes: (Q, 4) xywh of every person for the mask channel.
    enc: the ``encoding:`` config (stride, representation, parts, keypoint_sigma, keypoint_threshold,
    part_sigma, part_threshold, part_floor, part_margin, paf_width, mask_erode).
    """
    stride = int(enc["stride"])
    parts = skeleton(enc)
    lay = layout(enc)
    out = np.zeros((lay["kmax"].stop, int(out_hw[0]), int(out_hw[1])), dtype=np.float32)
    if enc.get("representation", "parts") == "paf":
        out[lay["parts"]] = encode_pafs(kp18, parts, out_hw, stride, width=enc["paf_width"])
    else:
        out[lay["parts"]] = encode_part_maps(kp18, parts, out_hw, stride, sigma=enc["part_sigma"],
                                             threshold=enc["part_threshold"], floor=enc["part_floor"],
                                             margin=enc.get("part_margin"))
    # One Gaussian encoder for the harness: the core's, with the pixel-centre transform and max over persons.
    out[lay["keypoints"]] = encode_heatmaps(kp18, out_hw, stride, sigma=enc["keypoint_sigma"],
                                            min_value=enc["keypoint_threshold"])
    out[lay["mask"]] = person_mask(boxes, out_hw, stride, erode=enc["mask_erode"])[None]
    out[lay["kmax"]] = out[lay["keypoints"]].max(axis=0, keepdims=True)
    return out


# ---------------------------------------------------------------------------------------------------------
# Multi-scale ground truth
# ---------------------------------------------------------------------------------------------------------

def pyramid(maps, levels: int = 5) -> list[torch.Tensor]:
    """Ground truth of the multi-scale supervision: [maps, 1/2, 1/4, ...] (``levels`` entries) [P].

    maps: (C, H, W) or (B, C, H, W), numpy or torch. Level l is ``adaptive_avg_pool2d`` of the stride-R map
    to (H // 2^l, W // 2^l) — the size the network's l-th scale has after l halvings — so each coarse
    cell is the mean of the fine cells it covers (when 2^l divides H and W).
    """
    x = torch.as_tensor(maps)
    if not x.is_floating_point():
        x = x.float()
    h, w = x.shape[-2:]
    if levels < 1 or (h >> (levels - 1)) == 0 or (w >> (levels - 1)) == 0:
        raise HarnessError(f"a {h}x{w} map has no {levels}-level pyramid")
    return [x if l == 0 else F.adaptive_avg_pool2d(x, (h >> l, w >> l)) for l in range(levels)]

