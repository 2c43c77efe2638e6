"""KCAM loss: L = alpha * L_inter + L_output (paper Eq. 4, alpha = 0.2 [P]).

Each term is SimpleBaseline's ``JointsMSELoss`` with target weights, the core's
:func:`poseharness.codecs.top_down.joints_mse` [R: leoxiaobin/deep-high-resolution-net.pytorch lib/core/loss.py]:
0.5 * mean over (batch, joint, cell) of (w * P - w * G)^2. A joint with weight 0 contributes 0 but still counts in
the mean; a fractional weight w scales the squared error by w^2.

Paper Eq. 5 writes (1/N) sum_n sum_{x,y} ||P_n(x,y) - G_n(x,y)||_2 (sum over cells, mean over the N keypoint
maps, the norm read as squared L2): it differs from JointsMSELoss by the constant factor 2*H*W only, which leaves
the alpha ratio of Eq. 4 unchanged [D: JointsMSELoss, methods.md §5.3].

Both terms regress the same targets: the soft areas G and the final heatmaps P are supervised by the same Gaussian
maps [P §3.1: "take the keypoints Gaussian maps as ground-truth"]. Table 1 "w/o supervision" = alpha 0: the
``inter`` term is left out, nothing else changes (G is still computed and pools R).
"""
from __future__ import annotations

import torch

from poseharness.codecs.top_down import joints_mse


def kcam_loss(outputs: dict, targets: dict, alpha: float = 0.2,
              use_target_weight: bool = True) -> dict[str, torch.Tensor]:
    """Weighted loss terms (the trainer sums them): ``heatmap`` = L_output, ``inter`` = alpha * L_inter.

    outputs: {'heatmaps': (B,K,H,W), 'areas': (B,K,H,W), the latter absent without the module}; targets:
    {'heatmaps': (B,K,H,W), 'target_weight': (B,K) or (B,K,1)}. ``inter`` is absent when alpha is 0 (Table 1
    "w/o supervision") or when the model has no soft areas (``context`` off). ``use_target_weight`` False: every
    joint weighs 1 (HRNet without ``USE_TARGET_WEIGHT``).
    """
    maps = targets["heatmaps"]
    if use_target_weight:
        w = targets["target_weight"].reshape(maps.shape[:2])
    else:
        w = torch.ones(maps.shape[:2], dtype=maps.dtype, device=maps.device)
    terms = {"heatmap": joints_mse(outputs["heatmaps"], maps, w)}
    areas = outputs.get("areas")
    if alpha > 0 and areas is not None:
        terms["inter"] = alpha * joints_mse(areas, maps, w)
    return terms


def total_loss(outputs: dict, targets: dict, **kwargs) -> torch.Tensor:
    """L = alpha * L_inter + L_output as one scalar."""
    return sum(kcam_loss(outputs, targets, **kwargs).values())
