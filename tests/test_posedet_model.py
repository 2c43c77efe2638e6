"""PoseDet's network: the pose embedding reads the coarse points, its grid_sample form equals torchvision's,
the heads' layout and the loss on a synthetic batch."""
import numpy as np
import pytest
import torch
import torchvision

from poseharness.contract import method_module, method_submodule, resolve_method


@pytest.fixture(scope="module")
def model_mod():
    return method_submodule(resolve_method("posedet"), "model")


@pytest.mark.parametrize("impl", ["torchvision", "grid_sample"])
def test_tap_j_reads_coarse_joint_j(model_mod, impl):
    k, h, w = 5, 9, 11
    emb = model_mod.PoseEmbedding(1, 1, k, impl=impl)
    x = torch.zeros(1, 1, h, w)
    x[0, 0, 6, 2] = 7.0                                     # a distinctive value at one location
    coarse = torch.zeros(1, 2 * k, h, w)
    # every point of every candidate far outside the map (reads zeros) ...
    coarse[:, 0::2] = 100.0
    # ... except point j of candidate (3, 8), placed exactly on the distinctive location
    j, cy, cx = 3, 3, 8
    coarse[0, 2 * j, cy, cx] = 6 - cy                        # dy
    coarse[0, 2 * j + 1, cy, cx] = 2 - cx                    # dx
    for tap in range(k):
        with torch.no_grad():
            emb.weight.zero_()
            emb.bias.zero_()
            emb.weight[0, 0, 0, tap] = 1.0
        out = emb(x, coarse)
        expected = torch.zeros(1, 1, h, w)
        if tap == j:
            expected[0, 0, cy, cx] = 7.0
        torch.testing.assert_close(out, expected)


def test_grid_sample_equals_torchvision(model_mod):
    torch.manual_seed(0)
    b, c, o, h, w, k = 2, 6, 5, 7, 9, 15
    x = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
    off = (torch.randn(b, 2 * k, h, w, dtype=torch.float64) * 3).requires_grad_(True)
    weight = torch.randn(o, c, 1, k, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(o, dtype=torch.float64, requires_grad=True)
    ref = torchvision.ops.deform_conv2d(x, off, weight, bias, padding=(0, k // 2))
    ours = model_mod.deform_conv_grid_sample(x, off, weight, bias)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad(ref, (x, off, weight, bias), g)
    grads = torch.autograd.grad(ours, (x, off, weight, bias), g)
    for a, r in zip(grads, grads_ref):
        torch.testing.assert_close(a, r)


def test_gradient_into_coarse_offsets_is_scaled(model_mod):
    torch.manual_seed(0)
    emb = model_mod.PoseEmbedding(3, 4, 5, grad_scale=0.1, impl="grid_sample")
    x = torch.randn(1, 3, 8, 8)
    coarse = (torch.randn(1, 10, 8, 8) * 2).requires_grad_(True)
    emb(x, coarse).sum().backward()
    g_scaled = coarse.grad.clone()
    off = emb.offsets(coarse.detach()).requires_grad_(True)
    model_mod.deform_conv_grid_sample(x, off, emb.weight, emb.bias).sum().backward()
    torch.testing.assert_close(g_scaled, 0.1 * off.grad)


def tiny_cfg(schema="crowdpose14"):
    spec = resolve_method("posedet")
    cfg = spec.training_config("full", "tiny")
    cfg["schema"] = schema
    return spec, cfg


def test_heads_layout_and_loss_terms():
    spec, cfg = tiny_cfg()
    mod = method_module(spec)
    net = mod.build_model(cfg)
    out = net(torch.randn(2, 3, 256, 256))
    final = mod.final_outputs(out)
    shapes = {k: tuple(v.shape[1:]) for k, v in final.items()}
    assert cfg["encoding"]["strides"] == [16, 32] and "coarse@2" not in shapes
    assert shapes["coarse@0"] == (30, 16, 16) and shapes["refine@1"] == (30, 8, 8)
    assert shapes["cls@1"] == (1, 8, 8) and shapes["heatmap@0"] == (15, 16, 16)
    # cls prior 0.01
    assert abs(torch.sigmoid(final["cls@0"]).mean().item() - 0.01) < 0.01
    # a batch of two items made from the encoder, as the loader would
    from poseharness.data.sample import Sample
    rng = np.random.default_rng(0)
    items = []
    for _ in range(2):
        kp = np.zeros((2, 14, 3), np.float32)
        kp[..., 0] = rng.uniform(40, 200, (2, 14))
        kp[..., 1] = rng.uniform(40, 200, (2, 14))
        kp[..., 2] = 2
        s = Sample(image_id=1, file_name="x", width=256, height=256, keypoints=kp,
                   boxes=np.array([[40, 40, 160, 160]] * 2, np.float32), areas=np.ones(2, np.float32),
                   iscrowd=np.zeros(2, bool), num_keypoints=np.full(2, 14))
        items.append((s, mod.encode(s, cfg)))
    batch = {key: torch.stack([torch.from_numpy(e[key]) for _, e in items]) for key in items[0][1]}
    batch.update(keypoints=[torch.from_numpy(s.keypoints) for s, _ in items],
                 iscrowd=[torch.from_numpy(s.iscrowd) for s, _ in items],
                 num_keypoints=[torch.from_numpy(s.num_keypoints) for s, _ in items])
    terms = mod.loss(out, batch, cfg)
    assert set(terms) == {"coarse", "refine", "cls", "heatmap"}
    assert all(torch.isfinite(v) and v >= 0 for v in terms.values())
    sum(terms.values()).backward()
