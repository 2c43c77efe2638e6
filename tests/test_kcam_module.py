"""The KCAM head (methods/kcam/kcam_module.py) and its loss (methods/kcam/loss.py): shapes, the fallback with zero
keypoint features, the normalisations of the soft areas, gradients, and the loss against HRNet's JointsMSELoss."""
from __future__ import annotations

import statistics
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F_

from poseharness.codecs.top_down import joints_mse
from poseharness.contract import method_submodule, resolve_method

_spec = resolve_method("kcam")
_module = method_submodule(_spec, "kcam_module")
_loss = method_submodule(_spec, "loss")
KCAMHead, bn_constant, count_parameters, fallback_context = (
    _module.KCAMHead, _module.bn_constant, _module.count_parameters, _module.fallback_context)
kcam_loss, total_loss = _loss.kcam_loss, _loss.total_loss

B, C, K, H, W = 2, 32, 17, 16, 12
FUSIONS = ["concat", "add", "none"]


def make_head(fusion: str, seed: int = 0, randomise_bn: bool = True, **kw) -> KCAMHead:
    torch.manual_seed(seed)
    head = KCAMHead(C, K, fusion=fusion, **kw)
    # Larger heatmap weights than the 0.001 init so that differences are well above float noise.
    for layer in (head.areas_layer, head.final_layer):
        nn.init.normal_(layer.weight, std=0.1)
        nn.init.normal_(layer.bias, std=0.1)
    if randomise_bn:  # non-trivial running statistics and affine parameters, so phi(0) != 0
        for m in head.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.normal_(0.0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(0.2, 1.0)
    return head


def feats(seed: int = 1, b: int = B) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, C, H, W, generator=g)


# ---------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("fusion", FUSIONS)
def test_shapes(fusion):
    head = make_head(fusion)
    for mode in (head.train, head.eval):
        mode()
        out = head(feats(), return_intermediates=True)
        assert out["heatmaps"].shape == (B, K, H, W)
        assert out["areas"].shape == (B, K, H, W)
        assert out["reps"].shape == (B, K, C)
        assert out["attention"].shape == (B, H * W, K)
        assert out["context"].shape == (B, C, H, W)
        assert out["fused"].shape == (B, C, H, W)


def test_widths_and_plain_head():
    head = KCAMHead(C, K, fusion="concat", key_channels=8, value_channels=16, out_channels=24)
    out = head(feats(), return_intermediates=True)
    assert out["heatmaps"].shape == (B, K, H, W) and out["context"].shape == (B, 16, H, W)
    assert out["fused"].shape == (B, 24, H, W)
    with pytest.raises(ValueError):
        KCAMHead(C, K, fusion="add", value_channels=16)
    with pytest.raises(ValueError):
        KCAMHead(C, K, fusion="sum")
    plain = KCAMHead(C, K, context=False)
    out = plain(feats())
    assert out["heatmaps"].shape == (B, K, H, W) and "areas" not in out
    assert count_parameters(plain) == C * K + K  # SimpleBaseline's final_layer only
    x = feats()
    assert torch.allclose(out["heatmaps"], F_.conv2d(x, plain.final_layer.weight, plain.final_layer.bias))


# ---------------------------------------------------------------------------------------------------- fallback
def _zero_pooled_features(head: KCAMHead) -> None:
    """Zero the features entering Eq. 1 (R_k = sum_i g~_ik f_i with f = 0), leaving F everywhere else."""
    orig = head.keypoint_representations
    head.keypoint_representations = lambda areas, f: orig(areas, torch.zeros_like(f))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_zero_keypoint_features_fallback(fusion):
    """R = 0  =>  R'_j = c', R''_j = c'' (eval BN of 0), S_ij = 1/K, E_i = c'' at every pixel; then
    concat: A = ReLU(BN_a(W_F F + W_E c'')), add: A = ReLU(BN_a(W (F + c''))), none: A = ReLU(BN_a(W c'')) const."""
    head = make_head(fusion).eval()
    _zero_pooled_features(head)
    x = feats()
    with torch.no_grad():
        out = head(x, return_intermediates=True)
        c_v = fallback_context(head)                                   # c'' = ReLU(beta - gamma mu / sqrt(var+eps))
        assert c_v.abs().sum() > 0                                      # the fallback is non-trivial here
        assert torch.equal(out["reps"], torch.zeros(B, K, C))
        assert torch.allclose(out["attention"], torch.full((B, H * W, K), 1.0 / K), atol=1e-6)
        e = out["context"]
        assert torch.allclose(e, e[:, :, :1, :1].expand_as(e), atol=1e-6)  # constant over pixels
        assert torch.allclose(e, c_v.view(1, C, 1, 1).expand_as(e), atol=1e-6)  # and equal to c''
        # R' is c' at every keypoint as well
        r1 = head.phi_k(torch.zeros(B, C, K))
        assert torch.allclose(r1, bn_constant(head.phi_k).view(1, -1, 1).expand_as(r1), atol=1e-6)

        # The head applied to the fusion with that constant, written out with the weights.
        wa = head.phi_a[0].weight[:, :, 0, 0]                            # (Ca, fuse_in)
        if fusion == "concat":
            pre = torch.einsum("oc,bchw->bohw", wa[:, :C], x) + (wa[:, C:] @ c_v).view(1, -1, 1, 1)
        elif fusion == "add":
            pre = torch.einsum("oc,bchw->bohw", wa, x) + (wa @ c_v).view(1, -1, 1, 1)
        else:
            pre = (wa @ c_v).view(1, -1, 1, 1).expand(B, -1, H, W)
        a = torch.relu(head.phi_a[1](pre))
        expected = head.final_layer(a)
        assert torch.allclose(out["heatmaps"], expected, atol=1e-5)
        if fusion == "none":  # no spatial information left at all
            hm = out["heatmaps"]
            assert torch.allclose(hm, hm[:, :, :1, :1].expand_as(hm), atol=1e-6)
        else:  # ... but a 1x1 conv head of F: the output still varies with F
            assert not torch.allclose(out["heatmaps"], head(feats(seed=7))["heatmaps"])


@pytest.mark.parametrize("fusion", FUSIONS)
def test_zero_input_fallback(fusion):
    """F = 0 (so R = 0 too): every stage is constant over pixels, E = c''."""
    head = make_head(fusion).eval()
    with torch.no_grad():
        out = head(torch.zeros(B, C, H, W), return_intermediates=True)
    assert torch.equal(out["reps"], torch.zeros(B, K, C))
    assert torch.allclose(out["attention"], torch.full((B, H * W, K), 1.0 / K), atol=1e-6)
    assert torch.allclose(out["context"], fallback_context(head).view(1, C, 1, 1).expand(B, C, H, W), atol=1e-6)
    hm = out["heatmaps"]
    assert torch.allclose(hm, hm[:, :, :1, :1].expand_as(hm), atol=1e-6)


def test_zero_keypoint_features_training_mode_at_init():
    """Training-mode BN normalises the all-zero R to 0: c = ReLU(beta) = 0 at init, so E = 0 and concat's A =
    phi_a(concat(F, 0))."""
    torch.manual_seed(0)
    head = KCAMHead(C, K, fusion="concat").train()
    _zero_pooled_features(head)
    out = head(feats(), return_intermediates=True)
    assert torch.equal(out["context"], torch.zeros(B, C, H, W))
    assert torch.allclose(out["attention"], torch.full((B, H * W, K), 1.0 / K), atol=1e-6)


# ---------------------------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("area_norm", ["softmax", "sum"])
def test_softmax_normalisations_sum_to_one(area_norm):
    head = make_head("concat", area_norm=area_norm).eval()
    x = feats()
    with torch.no_grad():
        out = head(x, return_intermediates=True)
        g = head.normalise_areas(out["areas"])                                        # (B, K, N)
    assert g.shape == (B, K, H * W) and (g >= 0).all()
    assert torch.allclose(g.sum(dim=2), torch.ones(B, K), atol=1e-5)                  # over pixels
    assert torch.allclose(out["attention"].sum(dim=2), torch.ones(B, H * W), atol=1e-5)  # over keypoints
    # Eq. 1 against a loop-free restatement: R_k = sum_i g~_ik f_i
    r = torch.einsum("bkn,bcn->bkc", g, x.flatten(2))
    assert torch.allclose(out["reps"], r, atol=1e-5)


def test_softmax_pooling_of_a_perfect_area_is_nearly_uniform():
    """Diagnostic for the [D] pixel softmax: a perfect G (Gaussian of peak 1, sigma 2 on 64x48, the MSE target)
    puts under 5 % of the pooling mass within 3 sigma of the keypoint at scale 1; ``area_norm="sum"`` 1 - exp(-4.5) = 98.9 %."""
    hh, ww, s = 64, 48, 2.0
    y, x = torch.meshgrid(torch.arange(hh), torch.arange(ww), indexing="ij")
    d2 = (x - 24.0) ** 2 + (y - 32.0) ** 2
    g = torch.exp(-d2 / (2 * s * s)).view(1, 1, hh, ww)
    disc = (d2 <= (3 * s) ** 2).flatten()
    masses = {}
    for norm, scale in (("softmax", 1.0), ("softmax", 10.0), ("sum", 1.0)):
        head = KCAMHead(8, 1, area_norm=norm, area_scale=scale)
        masses[(norm, scale)] = float(head.normalise_areas(g)[0, 0, disc].sum())
    print("\npooling mass within 3 sigma of a perfect area:", {f"{n}@{sc}": round(m, 3) for (n, sc), m in masses.items()})
    assert masses[("softmax", 1.0)] < 0.05
    assert masses[("softmax", 10.0)] > 0.9 and masses[("sum", 1.0)] > 0.98


# ---------------------------------------------------------------------------------------------------- gradients
def _pieces(head, x_direct, x_context):
    areas = head.soft_areas(x_context)
    reps = head.keypoint_representations(areas, x_context)
    _, e = head.attend(x_context, reps)
    return head.final_layer(head.fuse(x_direct, e))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_gradient_flows_through_both_branches(fusion):
    head = make_head(fusion).train()
    x = feats()
    target = torch.rand(B, K, H, W)

    # full forward == composition of the public steps
    assert torch.allclose(head.eval()(x)["heatmaps"], _pieces(head, x, x), atol=1e-6)
    head.train()

    # context branch only (direct path detached): F -> G -> R (Eq. 1), F -> F' (Eq. 2)
    xc = x.clone().requires_grad_(True)
    ((_pieces(head, x, xc) - target) ** 2).mean().backward()
    assert xc.grad is not None and xc.grad.abs().sum() > 0
    # soft-area layer learns through Eq. 1 alone (Table 1 "w/o supervision" relies on this), and the query conv
    assert head.areas_layer.weight.grad.abs().sum() > 0
    assert head.phi_q[0].weight.grad.abs().sum() > 0
    head.zero_grad()

    # direct branch only (context computed from a detached F)
    xd = x.clone().requires_grad_(True)
    hm = _pieces(head, xd, x)
    if fusion == "none":
        ((hm - target) ** 2).mean().backward()
        assert xd.grad is None  # F is not in the graph except through E
    else:
        ((hm - target) ** 2).mean().backward()
        assert xd.grad is not None and xd.grad.abs().sum() > 0

    # full forward: gradient reaches F
    xf = x.clone().requires_grad_(True)
    ((head(xf)["heatmaps"] - target) ** 2).mean().backward()
    assert xf.grad.abs().sum() > 0


def test_no_fusion_depends_on_F_only_through_E():
    head = make_head("none").eval()
    x = feats()
    with torch.no_grad():
        areas = head.soft_areas(x)
        _, e = head.attend(x, head.keypoint_representations(areas, x))
        a1 = head.fuse(x, e)
        a2 = head.fuse(feats(seed=5), e)      # any other "direct" F
        a3 = head.fuse(torch.zeros_like(x), e)
    assert torch.equal(a1, a2) and torch.equal(a1, a3)
    # while concat / add do depend on the direct F
    for fusion in ("concat", "add"):
        h = make_head(fusion).eval()
        with torch.no_grad():
            assert not torch.allclose(h.fuse(x, e), h.fuse(feats(seed=5), e))


# ---------------------------------------------------------------------------------------------------- loss
def hrnet_joints_mse(output, target, target_weight):
    """Verbatim logic of JointsMSELoss.forward (use_target_weight=True) [R: leoxiaobin/deep-high-resolution-net.
    pytorch lib/core/loss.py @ 6f69e46]."""
    criterion = nn.MSELoss(reduction="mean")
    batch_size, num_joints = output.size(0), output.size(1)
    heatmaps_pred = output.reshape((batch_size, num_joints, -1)).split(1, 1)
    heatmaps_gt = target.reshape((batch_size, num_joints, -1)).split(1, 1)
    loss = 0
    for idx in range(num_joints):
        heatmap_pred = heatmaps_pred[idx].squeeze()
        heatmap_gt = heatmaps_gt[idx].squeeze()
        loss += 0.5 * criterion(heatmap_pred.mul(target_weight[:, idx]), heatmap_gt.mul(target_weight[:, idx]))
    return loss / num_joints


@pytest.mark.parametrize("b", [1, 3])
def test_loss_matches_hrnet_joints_mse(b):
    g = torch.Generator().manual_seed(3)
    pred, tgt = torch.rand(b, K, H, W, generator=g), torch.rand(b, K, H, W, generator=g)
    w = (torch.rand(b, K, 1, generator=g) > 0.3).float()
    assert torch.allclose(joints_mse(pred, tgt, w[..., 0]), hrnet_joints_mse(pred, tgt, w), atol=1e-7)
    # the loss's terms are that same function, with (B, K) or HRNet's (B, K, 1) weights
    for weights in (w, w[..., 0]):
        terms = kcam_loss({"heatmaps": pred, "areas": tgt}, {"heatmaps": tgt, "target_weight": weights}, alpha=0.2)
        assert torch.allclose(terms["heatmap"], hrnet_joints_mse(pred, tgt, w), atol=1e-7)
        assert terms["inter"].item() == 0.0


def test_target_weight_zero_removes_a_joint():
    g = torch.Generator().manual_seed(4)
    pred, tgt = torch.rand(B, K, H, W, generator=g), torch.rand(B, K, H, W, generator=g)
    w = torch.ones(B, K)
    w[0, 5] = 0.0
    base = joints_mse(pred, tgt, w)
    pred2 = pred.clone()
    pred2[0, 5] += 10.0                                   # any error on the removed joint ...
    assert torch.equal(joints_mse(pred2, tgt, w), base)   # ... costs nothing
    pred2[0, 6] += 10.0
    assert joints_mse(pred2, tgt, w) > base


def test_hand_computed_tiny_case_and_alpha():
    # B=1, K=2, maps 1x2. Output errors: joint 0 (1, 0), joint 1 (-0.5, 0.5); areas: one error of 0.2.
    tgt = torch.tensor([[[[0.0, 0.0]], [[1.0, 0.0]]]])
    out = {"heatmaps": torch.tensor([[[[1.0, 0.0]], [[0.5, 0.5]]]]),
           "areas": torch.tensor([[[[0.0, 0.0]], [[1.0, 0.2]]]])}
    ones = {"heatmaps": tgt, "target_weight": torch.tensor([[1.0, 1.0]])}
    # L_output = 0.5 * (1 + 0 + 0.25 + 0.25) / 4 = 0.1875 ; L_inter = 0.5 * 0.04 / 4 = 0.005
    terms = kcam_loss(out, ones, alpha=0.2)
    assert terms["heatmap"].item() == pytest.approx(0.1875)
    assert terms["inter"].item() == pytest.approx(0.2 * 0.005)
    assert total_loss(out, ones, alpha=0.2).item() == pytest.approx(0.1885)
    assert total_loss(out, ones, alpha=1.0).item() == pytest.approx(0.1925)
    # joint 1 removed: L_output = 0.5 * 1 / 4 = 0.125, L_inter = 0 (its only error was on joint 1)
    only0 = {"heatmaps": tgt, "target_weight": torch.tensor([[1.0, 0.0]])}
    assert total_loss(out, only0).item() == pytest.approx(0.125)
    # Table 1 "w/o supervision" (alpha 0): the inter term is dropped, nothing else
    t = kcam_loss(out, ones, alpha=0.0)
    assert set(t) == {"heatmap"} and t["heatmap"].item() == pytest.approx(0.1875)
    # plain head (no areas)
    assert set(kcam_loss({"heatmaps": out["heatmaps"]}, ones)) == {"heatmap"}
    # without target weights every joint counts, the weights in the batch are ignored
    assert total_loss(out, only0, alpha=0.2, use_target_weight=False).item() == pytest.approx(0.1885)


# ---------------------------------------------------------------------------------------------------- report figures
def _median_ms(fn, x, reps=15, warm=3):
    with torch.no_grad():
        for _ in range(warm):
            fn(x)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(x)
            ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def test_report_parameters_and_time():
    """Added parameters and forward time, C=256, K=17, 64x48, batch 1, one thread, eval (printed; run with -s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        c, k = 256, 17
        x = torch.randn(1, c, 64, 48)
        torch.manual_seed(0)
        plain = KCAMHead(c, k, context=False).eval()
        p0 = count_parameters(plain)
        t0 = _median_ms(plain, x)
        lines = [f"plain head: {p0} params, {t0:.2f} ms"]
        for fusion in FUSIONS:
            head = KCAMHead(c, k, fusion=fusion).eval()
            p = count_parameters(head)
            t = _median_ms(head, x)
            lines.append(f"KCAM {fusion:6s}: {p} params (+{p - p0}), {t:.2f} ms (+{t - t0:.2f} ms)")
            expected_added = (c * k + k) + 3 * (c * c + 2 * c) + \
                ({"concat": 2 * c, "add": c, "none": c}[fusion] * c + 2 * c)
            assert p - p0 == expected_added
        print("\n" + "\n".join(lines))
    finally:
        torch.set_num_threads(threads)
