"""The recurrent method: the Hungarian matching against brute force, eq. 1's stop targets, Table 4's configurations,
truncated back-propagation (T at least the unroll is the full gradient), the per-step decoder, the settings that
must equal methods/ae's, one training step, and the one-person-per-step oracle."""
import itertools

import numpy as np
import pytest
from synthetic_sets import generated
import torch

from poseharness.config import train_settings, variant_config
from poseharness.contract import method_module, method_submodule, resolve_method
from poseharness.data.manifest import load_manifest
from poseharness.methods import load_method
from poseharness.oracle import run_oracle

SPEC = resolve_method("rnn_assoc")
rep = method_submodule(SPEC, "representation")
unroll_mod = method_submodule(SPEC, "unroll")
model_mod = method_submodule(SPEC, "model")
method = method_module(SPEC)


def brute_force(cost: np.ndarray) -> float:
    z, n = cost.shape
    if z <= n:
        return min(sum(cost[i, p[i]] for i in range(z)) for p in itertools.permutations(range(n), z))
    return min(sum(cost[p[j], j] for j in range(n)) for p in itertools.permutations(range(z), n))


@pytest.mark.parametrize("z,n", [(3, 3), (2, 4), (4, 2), (1, 5), (5, 5)])
def test_hungarian_matching_equals_brute_force(z, n):
    gen = torch.Generator().manual_seed(z * 10 + n)
    targets, predicted = torch.rand(z, 3, 5, 5, generator=gen), torch.rand(n, 3, 5, 5, generator=gen)
    cost = rep.map_costs(targets, predicted).numpy()
    # C[k, k'] = sum over joints of the Frobenius norm of the map difference
    assert cost[0, 0] == pytest.approx(sum(torch.linalg.norm(targets[0, j] - predicted[0, j]).item()
                                           for j in range(3)), rel=1e-5)
    rows, cols = rep.match(targets, predicted)
    assert len(rows) == min(z, n) and len(set(cols.tolist())) == len(cols)
    assert cost[rows, cols].sum() == pytest.approx(brute_force(cost), rel=1e-6)


def test_stop_targets_follow_eq_1():
    assert rep.stop_targets(3, 3).tolist() == [1, 1, 1, 0]
    assert rep.stop_targets(3, 1).tolist() == [1, 1, 1, 0]
    assert rep.stop_targets(2, 4).tolist() == [1, 1, 0, 0, 0]
    assert rep.stop_targets(0, 0).tolist() == [0]
    with pytest.raises(ValueError):
        rep.stop_targets(-1, 0)


@pytest.mark.parametrize("config,t,z,z_hat,p,ok", [
    ("a,a'", 2, 4, 2, 0.1, False), ("a,a'", 3, 4, 2, 0.9, True),    # a, stopped early: only p >= omega
    ("b,a'", 3, 4, 2, 0.1, True),                                    # b: every step
    ("a,a'", 4, 3, None, 0.9, False), ("a,b'", 4, 3, None, 0.9, True),  # a': only the first z when z^ > z
    ("a,a'", 3, 3, 3, 0.1, True),                                    # a' does not apply when z^ <= z
])
def test_table_4_configurations(config, t, z, z_hat, p, ok):
    assert unroll_mod.matchable(t, z, z_hat, p, 0.2689, config) is ok


def test_decode_steps_reads_until_the_stop_and_drops_weak_joints():
    maps = torch.zeros(4, 2, 8, 8)
    maps[0, 0, 2, 3], maps[0, 1, 5, 5] = 0.9, 0.01        # joint 1 of person 0 below tau
    maps[1, 0, 6, 1], maps[1, 1, 1, 6] = 0.5, 0.5
    maps[3, 0, 4, 4] = 1.0                                 # after the stop: never read
    poses, scores = rep.decode_steps(maps, torch.tensor([0.9, 0.8, 0.1, 0.9]), 4, 0.015, 0.2689)
    assert len(poses) == 2 and scores.tolist() == pytest.approx([0.9, 0.5])
    assert poses[0, 1].tolist() == [0, 0, 0] and poses[0, 0, :2].tolist() == [3 * 4 + 1.5, 2 * 4 + 1.5]
    empty, _ = rep.decode_steps(maps, torch.tensor([0.1, 0.9, 0.9, 0.9]), 4, 0.015, 0.2689)
    assert empty.shape == (0, 2, 3)


def _cfg(variant="steps", scale="tiny"):
    return variant_config(load_method("rnn_assoc"), variant, scale, load_manifest("synthetic-coco"))


@pytest.mark.parametrize("scale", ["tiny", "paper"])
def test_the_ae_inside_is_methods_ae_at_the_same_scale(scale):
    ours = _cfg(scale=scale)["model"]["ae"]
    ae = variant_config(load_method("ae"), "plain", scale, load_manifest("synthetic-coco"))
    assert ours == ae["model"]
    assert _cfg(scale=scale)["decode"]["ae"] == {k: ae["decode"][k] for k in _cfg()["decode"]["ae"]}


def _net(cfg, seed=0):
    torch.manual_seed(seed)
    net = model_mod.build_model(cfg)
    net.train()
    return net


def _grads(net, feats, targets, chunk, steps):
    net.zero_grad()
    run = unroll_mod.unroll(net, feats, targets, omega=0.0, chunk=chunk, max_steps=steps, config="b,b'",
                            generator=torch.Generator().manual_seed(1))
    terms = unroll_mod.losses([run], [targets])
    sum(terms.values()).backward()
    return torch.cat([p.grad.flatten() for p in net.lstm1.parameters()]), run


def test_truncation_at_t_not_below_the_unroll_is_the_full_gradient():
    cfg = _cfg()
    cfg["model"]["lstm2"]["layers"] = 0
    net = _net(cfg)
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 34, 8, 8, generator=gen)
    targets = torch.rand(3, 17, 8, 8, generator=gen)
    # omega 0: the stop never fires, so the unroll runs max_steps = 5 person steps
    full, run = _grads(net, feats, targets, chunk=5, steps=5)
    assert len(run.maps) == 5 and run.z_hat == 5
    # the reference: the same steps with no detaching at all, one matching over all of them
    net.zero_grad()
    g, state, maps, logits = torch.Generator().manual_seed(1), None, [], []
    for _ in range(5):
        m, logit, state = net.person(feats, state, g)
        maps.append(m[0])
        logits.append(logit[0])
    rows, cols = rep.match(targets, torch.stack(maps))
    ref = unroll_mod.Unrolled(maps, torch.stack(logits), 5, {int(c): int(r) for r, c in zip(rows, cols)})
    sum(unroll_mod.losses([ref], [targets]).values()).backward()
    reference = torch.cat([p.grad.flatten() for p in net.lstm1.parameters()])
    assert torch.allclose(full, reference, rtol=1e-5, atol=1e-7)
    longer, _ = _grads(net, feats, targets, chunk=50, steps=5)
    assert torch.equal(longer, full)
    cut, _ = _grads(net, feats, targets, chunk=1, steps=5)
    assert not torch.allclose(cut, full, rtol=1e-3, atol=1e-6)


def test_one_training_step_and_inference_outputs():
    cfg = _cfg("single")
    cfg["unroll"]["max_steps"] = 4
    net = _net(cfg)
    batch = {"image": torch.randn(2, 3, 64, 64), "person_maps": [torch.rand(2, 17, 16, 16), torch.zeros(0, 17, 16, 16)]}
    outputs, terms = method.train_step(net, batch, cfg, progress=0.0)
    # untrained, the stop fires at once (the stop bias): nothing is emitted, only the stop term has a gradient
    assert set(terms) == {"heatmap1", "stop", "heatmap2"} and terms["heatmap1"] == terms["heatmap2"] == 0
    with torch.no_grad():
        net.lstm1.stop.bias.fill_(3.0)          # now every step holds a person, up to max_steps
    outputs, terms = method.train_step(net, batch, cfg, progress=0.0)
    assert all(torch.isfinite(v) and v > 0 for v in terms.values())
    sum(terms.values()).backward()
    assert net.lstm1.out.weight.grad is not None and net.lstm2.out.weight.grad is not None
    layout = {k: v.shape[1] for k, v in outputs.items()}
    net.eval()
    out = net(batch["image"])
    assert {k: v.shape[1] for k, v in out.items()} == layout == {"steps": 17, "stop": 1, "heatmaps": 17, "tags": 17}
    poses, scores = method.decode({k: v[0] for k, v in out.items()}, cfg)
    assert poses.shape[1:] == (17, 3) and len(poses) == len(scores)


@pytest.mark.parametrize("kind", ["learned", "inverse", "random", "confidence", "canonical"])
def test_orders_are_permutations(kind):
    maps = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    u = model_mod.orders(kind, maps, torch.ones(4), torch.Generator().manual_seed(0))
    assert sorted(u.tolist()) == [0, 1, 2, 3]
    if kind == "inverse":
        assert u.tolist() == [3, 2, 1, 0]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    with generated(tmp_path_factory.mktemp("rnn_oracle"), "synthetic-ochuman") as root:
        yield root


def test_oracle_one_person_per_step_against_shared_maps(synthetic):
    rows = run_oracle(load_method("rnn_assoc"), load_manifest("synthetic-ochuman"), "val", ["steps", "ae_plain"],
                      "tiny", size="tiny", progress=False, write=False)
    m = {r["variant"]: r["metrics"] for r in rows}
    # measured: steps AP 1.0 (every person its own maps), ae_plain (perfect tags on shared maps) 0.965 on the
    # overlapping pairs of synthetic OCHuman (12 val images)
    assert m["steps"]["AP"] >= 0.95 and m["steps"]["AP"] >= m["ae_plain"]["AP"]


def test_oracle_multi_scale_rows(synthetic):
    """The multi-scale rows through the core's test-time views: with ground-truth steps nothing is missing, so the
    recurrent row equals its single-scale figure; AE's row groups and refines on the fused perfect maps."""
    rows = run_oracle(load_method("rnn_assoc"), load_manifest("synthetic-ochuman"), "val",
                      ["steps", "multi", "ae_multi"], "tiny", size="tiny", progress=False, write=False)
    m = {r["variant"]: r["metrics"] for r in rows}
    assert m["multi"]["AP"] == m["steps"]["AP"] and m["ae_multi"]["AP"] >= 0.9


def test_fill_from_ae_takes_the_joint_with_the_persons_tag():
    """A person found by the steps but for its last joint: AE's refinement fills it at the peak whose tag is the
    person's (weaker, 0.6) rather than the stronger peak of another person (1.0, tag 5 away); found joints stay."""
    module = method_module(resolve_method("rnn_assoc"))
    J, h, w, stride = 4, 16, 16, 4
    heat, tags = np.zeros((J, h, w)), np.zeros((J, h, w))
    mine = [(2, 3), (4, 5), (6, 7), (8, 9)]           # (u, v) cells of the person's joints
    for j, (u, v) in enumerate(mine):
        heat[j, v, u], tags[j, v, u] = 0.9, 1.0
    heat[3, 9, 8] = 0.6                                 # its last joint, weak
    heat[3, 12, 12], tags[3, 12, 12] = 1.0, 6.0         # another person's last joint, strong
    poses = np.zeros((1, J, 3))
    for j, (u, v) in enumerate(mine[:3]):
        poses[0, j] = [u * stride + stride / 2 - 0.5, v * stride + stride / 2 - 0.5, 0.9]
    out = module.fill_from_ae(poses, torch.as_tensor(heat), torch.as_tensor(tags), stride)
    assert np.array_equal(out[0, :3], poses[0, :3])
    x, y = 8 * stride + stride / 2 - 0.5, 9 * stride + stride / 2 - 0.5
    assert out[0, 3, 2] == pytest.approx(0.6) and abs(out[0, 3, 0] - x) <= stride / 4 and abs(out[0, 3, 1] - y) <= stride / 4
    assert module.fill_from_ae(np.zeros((0, J, 3)), heat, tags, stride).shape == (0, J, 3)


def test_multi_scale_reads_the_steps_at_scale_one():
    from poseharness.errors import HarnessError

    module = method_module(resolve_method("rnn_assoc"))
    cfg = _cfg("multi")
    cfg["decode"]["tta"] = {"scales": [2.0, 1.0, 0.5]}
    with pytest.raises(HarnessError, match="must start with 1.0"):
        module.merge_views([{}, {}, {}], [None, None, None], cfg)


def test_training_items_carry_only_what_the_loss_reads():
    """encode gives the loss's person maps only; the oracle's outputs (steps, stop, AE's heatmaps and perfect tags)
    come from oracle_outputs, and the core's oracle reads them from there."""
    from poseharness.data.sample import Sample
    from poseharness.pipeline import encoded_outputs
    from poseharness.views import bottom_up_views
    kp = np.zeros((2, 17, 3), np.float32)
    kp[0, :, :2], kp[1, :, :2], kp[..., 2] = [20, 24], [40, 44], 2
    s = Sample(image_id=1, file_name="x.jpg", width=64, height=64, keypoints=kp,
               boxes=np.array([[4, 4, 40, 40], [20, 20, 40, 40]], np.float32),
               areas=np.array([1600.0, 1600.0], np.float32), iscrowd=np.zeros(2, bool),
               num_keypoints=np.array([17, 17]))
    cfg, module = _cfg(), method_module(resolve_method("rnn_assoc"))
    targets = module.encode(s, cfg)
    assert set(targets) == {"person_maps"} and targets["person_maps"].shape == (2, 17, 16, 16)
    oracle = encoded_outputs(module, s, bottom_up_views(s, 64)[0], cfg)
    assert set(oracle) == {"steps", "stop", "heatmaps", "tags"}
    assert oracle["steps"].shape == (17, 3, 16, 16) and oracle["stop"].tolist() == [[1, 1, 0]]
    assert torch.equal(oracle["steps"][:, :2].transpose(0, 1), torch.from_numpy(targets["person_maps"]))
    assert "tags" not in method_module(resolve_method("ae")).encode(s, module.ae_config(cfg))
    assert set(oracle["tags"].unique().tolist()) == {0.0, 1.0}


def test_text_experiments_resolve_to_their_settings():
    spec = load_method("rnn_assoc")
    cfg = lambda v: variant_config(spec, v, "tiny", load_manifest("synthetic-coco"))  # noqa: E731
    assert isinstance(model_mod.build_model(cfg("nonorm")).norm, torch.nn.Identity)
    assert isinstance(model_mod.build_model(cfg("aa")).norm, model_mod.RunningNorm)
    assert cfg("lstm2_only")["loss"]["heatmap1"] == 0 and cfg("lstm2_only")["model"]["lstm2"]["layers"] == 2
    assert train_settings(spec, "asgd8", "tiny").max_persons == 8 and cfg("asgd8")["unroll"]["chunk"] == 4
    assert train_settings(spec, "base", "tiny").max_persons is None and cfg("stop8")["unroll"]["max_steps"] == 8
    assert cfg("omega01")["unroll"]["omega"] == cfg("omega01")["decode"]["omega"] == 0.1


def test_widths_never_end_below_the_joints():
    """The 1x1 output conv needs J channels to place J joints: LSTM2's halving stops at J (Table 7's four layers
    at tiny: 32, 17, 17, 17), and LSTM1 widths ending below J are an error naming the setting."""
    from poseharness.errors import HarnessError

    cfg = _cfg("l4_learned")
    net = model_mod.build_model(cfg)
    assert [c.hidden for c in net.lstm2.cells] == [32, 17, 17, 17] and net.lstm2.out.in_channels == 17
    cfg["model"]["hidden"] = [32, 16, 8]
    with pytest.raises(HarnessError, match="model.hidden"):
        model_mod.build_model(cfg)
