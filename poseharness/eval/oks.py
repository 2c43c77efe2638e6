"""Object Keypoint Similarity, the one implementation the harness uses outside the official evaluators.

Equal to pycocotools' ``COCOeval.computeOks`` on the same inputs (tested against a real COCOeval object):

    OKS(pred, gt) = mean over the GT's labelled keypoints (v > 0) of exp(-d² / (2 · s² · k²))

with d the pixel distance, ``s² = area`` of the GT (plus ``np.spacing(1)``, as pycocotools, so an area of 0
does not divide by zero) and ``k = 2σ``. For a GT with no labelled keypoint pycocotools uses, for every
keypoint, the distance from the prediction to the GT box grown by one box size on each side (0 inside it) —
reproduced here for equality, although evaluators ignore such GTs. The prediction's confidences are never read.

Pose NMS (greedy OKS-NMS, IoU-NMS), an inference step, lives in :mod:`poseharness.posenms`.
"""
from __future__ import annotations

import numpy as np


def oks(pred, gt, areas, sigmas, gt_boxes=None) -> np.ndarray:
    """OKS between every prediction and every ground-truth person.

    pred:     (N, K, 2|3) float — predicted x, y in pixels (a third column is ignored)
    gt:       (M, K, 3) float — GT x, y in pixels and visibility v (v > 0 = labelled)
    areas:    (M,) float — the OKS scale s² of each GT, px² (COCO ``area``; 0.53·w·h for CrowdPose)
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

    xd, yd = pred[:, None, :, 0], pred[:, None, :, 1]            # (N, 1, K)
    xg, yg = gt[None, :, :, 0], gt[None, :, :, 1]                # (1, M, K)
    labelled = gt[:, :, 2] > 0                                   # (M, K)
    unlabelled_gt = ~labelled.any(axis=1)                        # (M,)
    dx = xd - xg
    dy = yd - yg
    if unlabelled_gt.any():
        if gt_boxes is None:
            raise ValueError("gt_boxes is needed: some GT has no labelled keypoint")
        boxes = np.asarray(gt_boxes, dtype=np.float64)
        if boxes.shape != (m, 4):
            raise ValueError(f"gt_boxes must be (M, 4) = ({m}, 4), got {boxes.shape}")
        bx, by, bw, bh = (boxes[None, :, i, None] for i in range(4))   # each (1, M, 1)
        # Distance outside the box grown by one box size on every side: [x - w, x + 2w] × [y - h, y + 2h].
        ox = np.maximum(0.0, (bx - bw) - xd) + np.maximum(0.0, xd - (bx + 2 * bw))
        oy = np.maximum(0.0, (by - bh) - yd) + np.maximum(0.0, yd - (by + 2 * bh))
        dx = np.where(unlabelled_gt[None, :, None], ox, dx)
        dy = np.where(unlabelled_gt[None, :, None], oy, dy)

    variances = (2.0 * sigmas) ** 2
    # Same operation order as pycocotools, so values agree to the last bits.
    e = (dx ** 2 + dy ** 2) / variances / (areas[None, :, None] + np.spacing(1)) / 2
    counted = labelled | unlabelled_gt[:, None]                  # (M, K): all K when none is labelled
    total = np.where(counted[None], np.exp(-e), 0.0).sum(axis=2)
    return total / counted.sum(axis=1)[None, :]

