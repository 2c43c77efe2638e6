"""Loss functions shared by methods (pure torch, method-agnostic); each method weights and sums them.

- :func:`focal_l2` — Simple Pose's focal L2 for regressed heatmaps, also GOG's heatmap loss
  (``methods.md`` §1.4, §2.4); ``gamma=0`` is the plain L2 of the ablations.
- :func:`scaled_l1` — L1 regression normalised by a per-element scale (GOG's guiding offsets divided by the
  person's scale), with the official ``--sqrt-re`` square-root variant.
- :func:`stack_weights` — weights of the intermediate-supervision stacks, normalised to sum 1.

Masks and weights: ``mask`` is bool (supervised or not) or float (a per-element weight, e.g. a loss mask
times per-channel weights); it broadcasts to ``pred``, and a mask with one dimension fewer than ``pred``
— (B, H, W) against (B, C, H, W) — applies to every channel. Unsupervised elements contribute nothing,
whatever their values (inf or NaN included), and pass no gradient.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def _expand(mask: torch.Tensor | float | None, pred: torch.Tensor, name: str) -> torch.Tensor | None:
    """``mask`` as a tensor broadcastable to ``pred`` (channel axis inserted for (B, H, W) masks)."""
    if mask is None:
        return None
    m = torch.as_tensor(mask, device=pred.device)
    if m.dim() == pred.dim() - 1 and m.dim() >= 1:
        m = m.unsqueeze(1)
    try:
        fits = torch.broadcast_shapes(m.shape, pred.shape) == pred.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"{name} of shape {tuple(m.shape)} does not broadcast to {tuple(pred.shape)}")
    return m


def _supervised_only(keep: torch.Tensor, pred: torch.Tensor, target: torch.Tensor):
    """Zero pred and target outside ``keep`` before any arithmetic: a NaN there would otherwise reach the
    backward pass as 0 · NaN = NaN, even though the forward value drops it."""
    zero = pred.new_zeros(())
    return torch.where(keep, pred, zero), torch.where(keep, target, zero)


def focal_l2(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, gamma: float = 2.0,
             tau: float = 0.01, alpha: float = 0.0, beta: float = 0.0) -> torch.Tensor:
    """Focal L2 loss, summed over the supervised elements and divided by the batch size.

    pred, target: (B, C, H, W) heatmaps (any shape with the batch first), target in [0, 1].
    mask:  see the module docstring; None = every element.
    Per element: ``0.5 · (s − g)² · |1 − s_t|^gamma`` with ``s_t = s − alpha`` where ``g >= tau``
    (foreground) and ``s_t = 1 − s − beta`` elsewhere (background). s_t is "how right" the prediction is,
    so easy elements (foreground near 1, background near 0) are down-weighted. Simple Pose's alpha and beta
    shift that notion of easy; GOG and our default use 0 ([R: OffsetGuided models/losses.py], methods.md
    §1.4, §2.4). ``gamma=0`` gives the plain L2 ``0.5 · (s − g)²``. The factor is not detached: gradients
    flow through it, as in both official codes. (GOG's code has the 0.5, Simple Pose's has not: a constant
    that a method's task weight absorbs.)
    Returns a scalar tensor.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    m = _expand(mask, pred, "mask")
    if m is not None:
        pred, target = _supervised_only(m != 0, pred, target)
    diff2 = (pred - target) ** 2
    if gamma != 0:
        s_t = torch.where(target >= tau, pred - alpha, 1.0 - pred - beta)
        diff2 = diff2 * (1.0 - s_t).abs() ** gamma
    per = 0.5 * diff2
    if m is not None:
        per = per * m
    return per.sum() / pred.shape[0]


def scaled_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
              scale: torch.Tensor | float = 1.0, sqrt: bool = True, eps: float = 1e-5) -> torch.Tensor:
    """Mean L1 error per supervised element, each error divided by its scale.

    pred, target: any equal shapes (e.g. offsets (B, 2L, H, W), input px).
    mask:  supervised elements (see the module docstring); None = all. A float mask weights the errors
           (and the mean is then over the elements with a non-zero weight).
    scale: broadcastable to pred (a (B, H, W) scale applies to every channel), e.g. the person scale
           sqrt(box w · h) in px for GOG's guiding offsets, so that errors are relative to the person's size.
    sqrt:  the official ``--sqrt-re`` variant [R: OffsetGuided models/losses.py]: errors below ``eps`` are
           dropped (they do not count towards the mean either), the rest replaced by their square root —
           this boosts small errors relative to large ones; ``eps`` keeps the gradient 1/(2·sqrt(e)) finite.
    Returns ``sum(e) / n`` over the n contributing elements (0 when there are none). The official code
    divides by ``1 + n`` (and, in a second step, by the batch size); a method's task weight absorbs such
    constant factors.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    s = _expand(scale, pred, "scale")
    m = _expand(mask, pred, "mask")
    keep = torch.ones_like(pred, dtype=torch.bool) if m is None else (m != 0).expand_as(pred)
    if m is not None:
        pred, target = _supervised_only(keep, pred, target)
        s = torch.where(keep, s, torch.ones((), dtype=s.dtype, device=s.device))   # no 0/0 off the mask
    err = (pred - target).abs() / s
    if sqrt:
        keep = keep & (err >= eps)
        # clamp inside: a dropped element must not reach sqrt'(0) = inf (0 · inf = NaN in the backward pass)
        err = torch.where(keep, err, err.new_ones(())).sqrt()
    weight = keep.to(err.dtype) if m is None else torch.where(keep, m.to(err.dtype), err.new_zeros(()))
    total = torch.where(keep, err * weight, err.new_zeros(())).sum()
    return total / keep.sum().clamp_min(1)


def stack_weights(stacks: int, weights: Sequence[float] | None = None) -> list[float]:
    """Per-stack loss weights normalised to sum 1 (official GOG: 1:1 -> [0.5, 0.5]); None = equal weights."""
    if stacks < 1:
        raise ValueError(f"need at least one stack, got {stacks}")
    if weights is None:
        return [1.0 / stacks] * stacks
    w = [float(x) for x in weights]
    if len(w) != stacks or any(x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"stack weights must be {stacks} non-negative numbers with a positive sum, got {w}")
    total = sum(w)
    return [x / total for x in w]
