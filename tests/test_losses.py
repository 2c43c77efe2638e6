"""Shared losses: hand-worked values, masks, normalisation and gradients."""
import math

import pytest
import torch

from poseharness.losses import focal_l2, scaled_l1, stack_weights


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


# pred / target of one 2x2 heatmap (B=1, C=1). Per cell, 0.5 (s-g)^2 |1-s_t|^2:
#   (0.5, 1.0) foreground, s_t = 0.5 -> 0.5 * 0.25 * 0.25 = 0.03125
#   (0.0, 0.0) background, s_t = 1   -> 0
#   (0.2, 0.0) background, s_t = 0.8 -> 0.5 * 0.04 * 0.04 = 0.0008
#   (0.9, 1.0) foreground, s_t = 0.9 -> 0.5 * 0.01 * 0.01 = 0.00005
PRED = [[[[0.5, 0.0], [0.2, 0.9]]]]
TARGET = [[[[1.0, 0.0], [0.0, 1.0]]]]


def test_focal_l2_hand_worked():
    assert focal_l2(t(PRED), t(TARGET)).item() == pytest.approx(0.03125 + 0.0008 + 0.00005, abs=1e-12)
    # gamma 0 is the plain L2: 0.5 * (0.25 + 0 + 0.04 + 0.01)
    assert focal_l2(t(PRED), t(TARGET), gamma=0).item() == pytest.approx(0.15, abs=1e-12)
    # gamma 1: 0.5 * (0.25*0.5 + 0 + 0.04*0.2 + 0.01*0.1)
    assert focal_l2(t(PRED), t(TARGET), gamma=1).item() == pytest.approx(0.5 * (0.125 + 0.008 + 0.001), abs=1e-12)


def test_focal_l2_threshold_tau_decides_foreground():
    pred, target = t([[[[0.3]]]]), t([[[[0.005]]]])
    d2 = (0.3 - 0.005) ** 2
    # g < tau: background, s_t = 1 - 0.3, factor 0.3^2; g >= tau: foreground, s_t = 0.3, factor 0.7^2
    assert focal_l2(pred, target, tau=0.01).item() == pytest.approx(0.5 * d2 * 0.09, abs=1e-12)
    assert focal_l2(pred, target, tau=0.005).item() == pytest.approx(0.5 * d2 * 0.49, abs=1e-12)
    # Simple Pose's alpha shifts the foreground's s_t: s_t = 0.3 - 0.1, factor 0.8^2
    assert focal_l2(pred, target, tau=0.005, alpha=0.1).item() == pytest.approx(0.5 * d2 * 0.64, abs=1e-12)


def test_focal_l2_sums_cells_and_divides_by_batch():
    one = focal_l2(t(PRED), t(TARGET))
    two = focal_l2(t(PRED).repeat(2, 3, 1, 1), t(TARGET).repeat(2, 3, 1, 1))
    assert two.item() == pytest.approx(3 * one.item(), abs=1e-12)   # 3 channels summed, 2 images averaged


def test_focal_l2_mask_excludes_cells_even_nan():
    pred = t(PRED).repeat(1, 2, 1, 1)
    target = t(TARGET).repeat(1, 2, 1, 1)
    mask = t([[[0.0, 1.0], [1.0, 1.0]]])                  # (B, H, W): drops cell (0, 0) of both channels
    assert focal_l2(pred, target, mask).item() == pytest.approx(2 * (0.0008 + 0.00005), abs=1e-12)
    assert focal_l2(pred, target, mask.bool()).item() == pytest.approx(2 * (0.0008 + 0.00005), abs=1e-12)
    # a float mask weights cells (per-channel weights broadcast from (1, C, 1, 1))
    w = t([1.0, 3.0]).reshape(1, 2, 1, 1)
    assert focal_l2(pred, target, w).item() == pytest.approx(4 * (0.03125 + 0.0008 + 0.00005), abs=1e-12)
    bad = pred.clone().requires_grad_(True)
    with torch.no_grad():
        bad[0, :, 0, 0] = float("nan")
    loss = focal_l2(bad, target, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(bad.grad).all()
    assert (bad.grad[0, :, 0, 0] == 0).all()
    with pytest.raises(ValueError, match="does not broadcast"):
        focal_l2(pred, target, torch.ones(3, 2, 2))


def test_focal_l2_gradient():
    # plain L2: d/ds = (s - g) / B
    pred = t(PRED).requires_grad_(True)
    focal_l2(pred, t(TARGET), gamma=0).backward()
    assert torch.allclose(pred.grad, t(PRED) - t(TARGET))
    # the focal factor is differentiated too (not detached): check against finite differences
    p = torch.rand(2, 3, 4, 4, dtype=torch.float64).requires_grad_(True)
    g = torch.rand(2, 3, 4, 4, dtype=torch.float64) * (torch.rand(2, 3, 4, 4) > 0.5)
    assert torch.autograd.gradcheck(lambda x: focal_l2(x, g), (p,))
    # gamma 0 at a perfect prediction: zero gradient, not NaN (0 ** 0 has no derivative)
    exact = t(TARGET).requires_grad_(True)
    focal_l2(exact, t(TARGET), gamma=0).backward()
    assert (exact.grad == 0).all()


def test_scaled_l1_hand_worked():
    pred = t([5.0, -1.0, 0.5, 10.0])
    target = t([1.0, 1.0, 0.5, 0.0])
    scale = t([2.0, 2.0, 1.0, 100.0])
    mask = t([1.0, 1.0, 1.0, 0.0])
    # errors / scale: 2, 1, 0 and a masked one
    assert scaled_l1(pred, target, mask, scale, sqrt=False).item() == pytest.approx(3 / 3)
    # sqrt variant: the 0 error (< eps) is dropped from the sum and the count
    assert scaled_l1(pred, target, mask, scale, sqrt=True).item() == pytest.approx((math.sqrt(2) + 1) / 2)
    assert scaled_l1(pred, target, None, scale, sqrt=False).item() == pytest.approx((2 + 1 + 0 + 0.1) / 4)
    # a scalar scale
    assert scaled_l1(pred, target, mask, 0.5, sqrt=False).item() == pytest.approx((8 + 4 + 0) / 3)
    # nothing supervised: 0, not NaN
    assert scaled_l1(pred, target, torch.zeros(4), scale).item() == 0.0


def test_scaled_l1_mask_and_scale_broadcast_over_channels():
    pred = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    target = torch.ones(1, 2, 2, 2, dtype=torch.float64) * 4
    mask = t([[[1.0, 0.0], [0.0, 0.0]]])                   # (B, H, W): one cell, both channels
    scale = t([[[4.0, 1.0], [1.0, 1.0]]])
    assert scaled_l1(pred, target, mask, scale, sqrt=False).item() == pytest.approx(1.0)
    target[0, 1, 1, 1] = float("inf")                       # unsupervised garbage stays out
    scale[0, 1, 0] = 0.0
    p = pred.clone().requires_grad_(True)
    loss = scaled_l1(p, target, mask, scale, sqrt=True)
    loss.backward()
    assert loss.item() == pytest.approx(1.0) and torch.isfinite(p.grad).all()
    assert p.grad[0, :, 0, 0].ne(0).all() and p.grad.ne(0).sum() == 2


def test_scaled_l1_gradient():
    pred = t([5.0, -1.0, 1.0, 10.0]).requires_grad_(True)
    target = t([1.0, 1.0, 1.0, 0.0])
    scale = t([2.0, 2.0, 1.0, 100.0])
    mask = t([1.0, 1.0, 1.0, 0.0])
    scaled_l1(pred, target, mask, scale, sqrt=True).backward()
    # d/dp sqrt(|p - t| / s) / n = sign(p - t) / (2 sqrt(e) s n), n = 2 contributing elements
    expect = [1 / (2 * math.sqrt(2) * 2 * 2), -1 / (2 * 1 * 2 * 2), 0.0, 0.0]
    assert torch.allclose(pred.grad, t(expect))
    assert torch.isfinite(pred.grad).all()                  # the exact element (error 0) has a 0 gradient
    p = (torch.rand(3, 4, dtype=torch.float64) + 0.5).requires_grad_(True)
    g = torch.rand(3, 4, dtype=torch.float64) - 0.5
    assert torch.autograd.gradcheck(lambda x: scaled_l1(x, g, None, 2.0, sqrt=True), (p,))


def test_stack_weights():
    assert stack_weights(2) == [0.5, 0.5]
    assert stack_weights(1) == [1.0]
    assert stack_weights(2, [1, 3]) == [0.25, 0.75]
    for bad in ([1.0], [1.0, -1.0], [0.0, 0.0]):
        with pytest.raises(ValueError, match="stack weights"):
            stack_weights(2, bad)
