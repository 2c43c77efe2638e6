"""The recurrent method's representation: one person's J heatmaps per step, a stop probability, and the matching of
predicted steps to ground-truth persons (paper §3; facts in ``shared/design/methods.md`` §4.3-4.5).

- Targets: each person's own Gaussians (no maximum over persons: a person's maps hold only that person), σ in
  heatmap cells on the joint's cell as AE draws them [D: σ 2, AE's].
- Stop targets (eq. 1): over ``max(ẑ, z) + 1`` steps, 1 for the first ``z`` and 0 after.
- Matching: the Hungarian algorithm on ``C[k, k'] = Σ_j ‖H_{k,j} − Ĥ_{k',j}‖`` (the Frobenius norm of the
  difference of whole maps [D: the paper says "pixel-wise distance"]).
- Decoding a step: each joint is its map's argmax [P] (``refine: quarter`` moves it a quarter cell towards the
  higher neighbour, the top-down codec's rule [D]), dropped when its value is below τ = 0.015 [P]; the person
  score is the mean of the kept values [D].
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from poseharness.codecs import encode_heatmaps
from poseharness.codecs.top_down import decode_heatmaps


def person_maps(keypoints: np.ndarray, out_hw: tuple[int, int], stride: int, sigma: float) -> np.ndarray:
    """(P, K, h, w) float32: person p's Gaussians only (``sigma`` in cells, on each labelled joint's cell)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    out = np.zeros((len(kp), kp.shape[1] if kp.ndim == 3 else 0, *out_hw), dtype=np.float32)
    for p in range(len(kp)):
        out[p] = encode_heatmaps(kp[p:p + 1], out_hw, stride, sigma=sigma * stride, quantise=True)
    return out


def stop_targets(z: int, z_hat: int) -> np.ndarray:
    """Eq. 1: (max(ẑ, z) + 1,) float32, ones for the first ``z`` steps (a person follows), zeros after."""
    if z < 0 or z_hat < 0:
        raise ValueError(f"person counts must be >= 0, got z={z}, z_hat={z_hat}")
    out = np.zeros(max(z, z_hat) + 1, dtype=np.float32)
    out[:z] = 1.0
    return out


def map_costs(targets: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """C (z, ẑ): ``Σ_j ‖H_{k,j} − Ĥ_{k',j}‖_F`` between target persons (z, J, h, w) and predicted steps
    (ẑ, J, h, w)."""
    t = targets.detach().float().flatten(2).transpose(0, 1)      # (J, z, hw)
    p = predicted.detach().float().flatten(2).transpose(0, 1)    # (J, ẑ, hw)
    return torch.cdist(t, p).sum(0)


def match(targets: torch.Tensor, predicted: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The Hungarian matching of target persons to predicted steps: (rows, cols), ``min(z, ẑ)`` pairs of least
    total :func:`map_costs`, rows ascending."""
    cost = map_costs(targets, predicted).numpy().astype(np.float64)
    if cost.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows, cols = linear_sum_assignment(cost)
    return rows.astype(np.int64), cols.astype(np.int64)


def decode_steps(maps: torch.Tensor, stop: torch.Tensor, stride: int, tau: float, omega: float,
                 refine: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Poses from the steps of one image: maps (T, J, h, w), stop probabilities (T,) (step t's probability that it
    holds a person, eq. 1's target 1). Steps are read until the first whose probability is below ``omega`` (that
    step emits nothing). Returns poses (N, J, 3) ``[x, y, score]`` in input pixels (joints below ``tau`` zeroed) and
    person scores (N,), best first; persons without a kept joint are dropped."""
    p = torch.as_tensor(stop).float().reshape(-1)
    below = (p < omega).nonzero()
    n = int(below[0, 0]) if len(below) else len(p)
    if n == 0:
        return np.zeros((0, maps.shape[1], 3)), np.zeros(0)
    poses = decode_heatmaps(torch.as_tensor(maps)[:n].float(), stride, refine=refine).numpy()
    kept = poses[..., 2] >= tau
    poses = np.where(kept[..., None], poses, 0.0)
    counts = kept.sum(axis=1)
    scores = np.where(counts > 0, poses[..., 2].sum(axis=1) / np.maximum(counts, 1), 0.0)
    poses, scores = poses[counts > 0], scores[counts > 0]
    rank = np.argsort(-scores, kind="stable")
    return poses[rank], scores[rank]
