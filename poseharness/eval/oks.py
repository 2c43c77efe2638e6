"""Object Keypoint Similarity, the one implementation the harness uses outside the official evaluators.

Equal, bit for bit, to pycocotools' and xtcocotools' ``COCOeval.computeOks`` on the same inputs (tested
against real COCOeval objects):

    OKS(pred, gt) = mean over the GT's labelled keypoints (v > 0) of exp(-d² / (2 · s² · k²))

with d the pixel distance, ``s² = area`` of the GT (plus ``np.spacing(1)``, as pycocotools, so an area of 0
does not divide by zero) and ``k = 2σ``. For a GT with no labelled keypoint pycocotools uses, for every
keypoint, the distance from the prediction to the GT box grown by one box size on each side (0 inside it) —
reproduced here for equality, although evaluators ignore such GTs. The prediction's confidences are never read.
Bit equality (so that the libraries' own matching, fed these values, decides every tie as they do) needs the
libraries' summation order too: they sum the exp(-e) of the labelled keypoints only, a contiguous array of
k1 values, and numpy's pairwise summation groups the terms by their position in it; :func:`pair_oks` sums
the same compacted rows. xtcocotools' CrowdPose scale is ``h * w * 0.53`` in that order (``data.annotations.crowdpose_area``).

Pose NMS (greedy OKS-NMS, IoU-NMS), an inference step, lives in :mod:`poseharness.posenms`.
"""
from __future__ import annotations

import numpy as np


def oks(pred, gt, areas, sigmas, gt_boxes=None) -> np.ndarray:
    """OKS between every prediction and every ground-truth person.

    pred:     (N, K, 2|3) float — predicted x, y in pixels (a third column is ignored)
    gt:       (M, K, 3) float — GT x, y in pixels and visibility v (v > 0 = labelled)
    areas:    (M,) float — the OKS scale s² of each GT, px² (COCO ``area``; ``crowdpose_area`` for CrowdPose)
    sigmas:   (K,) float — per-keypoint σ
    gt_boxes: (M, 4) float — GT boxes x, y, w, h in pixels; needed only when a GT has no labelled keypoint
    Returns (N, M) float64 in [0, 1]. Memory is O(N·M·K).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if pred.ndim != 3 or pred.shape[2] not in (2, 3):
        raise ValueError(f"pred must be (N, K, 2|3), got {pred.shape}")
    n, k = pred.shape[:2]
    m = gt.shape[0] if gt.ndim == 3 else -1
    if gt.shape != (m, k, 3) or areas.shape != (m,) or sigmas.shape != (k,):
        raise ValueError(
            f"shapes disagree: pred {pred.shape}, gt {gt.shape} (want (M, {k}, 3)), areas {areas.shape}, "
            f"sigmas {sigmas.shape}")
    boxes = None
    if gt_boxes is not None:
        boxes = np.asarray(gt_boxes, dtype=np.float64)
        if boxes.shape != (m, 4):
            raise ValueError(f"gt_boxes must be (M, 4) = ({m}, 4), got {boxes.shape}")
    i, j = np.divmod(np.arange(n * m), max(m, 1))
    values = pair_oks(pred[i, :, :2], gt[j], areas[j], sigmas, None if boxes is None else boxes[j])
    return values.reshape(n, m)


def pair_oks(pred, gt, areas, sigmas, gt_boxes=None) -> np.ndarray:
    """OKS of P (prediction, GT) pairs, pair p of ``pred[p]`` with ``gt[p]``: :func:`oks` row by row.

    pred:     (P, K, 2) float, px;  gt: (P, K, 3) float;  areas: (P,) float, px²;  sigmas: (K,) float
    gt_boxes: (P, 4) float, px (x, y, w, h) — needed only when some GT has no labelled keypoint
    Returns (P,) float64, equal bit for bit to the libraries' ``computeOks`` of each pair (module doc).
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    P, K = gt.shape[:2]
    xd, yd = pred[..., 0], pred[..., 1]                           # (P, K)
    labelled = gt[..., 2] > 0
    unlabelled_gt = ~labelled.any(axis=1)                         # (P,)
    dx, dy = xd - gt[..., 0], yd - gt[..., 1]
    if unlabelled_gt.any():
        if gt_boxes is None:
            raise ValueError("gt_boxes is needed: some GT has no labelled keypoint")
        bx, by, bw, bh = (np.asarray(gt_boxes, dtype=np.float64)[:, c, None] for c in range(4))   # each (P, 1)
        # Distance outside the box grown by one box size on every side: [x - w, x + 2w] × [y - h, y + 2h].
        ox = np.maximum(0.0, (bx - bw) - xd) + np.maximum(0.0, xd - (bx + bw * 2))
        oy = np.maximum(0.0, (by - bh) - yd) + np.maximum(0.0, yd - (by + bh * 2))
        dx = np.where(unlabelled_gt[:, None], ox, dx)
        dy = np.where(unlabelled_gt[:, None], oy, dy)
    variances = (sigmas * 2) ** 2
    e = (dx ** 2 + dy ** 2) / variances / (areas[:, None] + np.spacing(1)) / 2     # the libraries' order
    counted = labelled | unlabelled_gt[:, None]                   # all K when none is labelled
    # The counted terms first, in keypoint order: each row's first k1 entries are the libraries' ``e[vg > 0]``.
    e = np.take_along_axis(e, np.argsort(~counted, axis=1, kind="stable"), axis=1)
    k1 = counted.sum(axis=1)
    out = np.empty(P)
    for k in np.unique(k1).tolist():
        rows = k1 == k
        out[rows] = np.exp(-np.ascontiguousarray(e[rows, :k])).sum(axis=1) / k
    return out

