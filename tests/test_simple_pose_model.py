"""Simple Pose's IMHN and focal L2 loss: shapes per switch, the paper-scale size, what each switch changes, the loss
by hand, masking, gradients, and the method contract."""
import copy
import sys

import numpy as np
import pytest
import torch

from poseharness.codecs import heatmap_mask
from poseharness.contract import final_outputs, method_module
from poseharness.data.sample import Sample
from poseharness.errors import HarnessError
from poseharness.methods import load_method
from poseharness.models import parameter_count

SP = load_method("simple_pose")
MOD = method_module(SP)                                          # the contract check itself
model_mod = sys.modules[f"{MOD.__name__}.model"]
rep = sys.modules[f"{MOD.__name__}.representation"]


def config(training: str = "imhn3_fl2", scale: str = "tiny", **model) -> dict:
    """A training config with small sizes (order 2, 8 channels) unless given: fast on the CPU."""
    cfg = copy.deepcopy(SP.training_config(training, scale))
    cfg["schema"] = "coco17"
    if scale == "tiny":
        cfg["model"].update(order=2, channels=8, increase=8)
        cfg["loss"]["scale_weights"] = [1.0, 2.0, 4.0]
    cfg["model"].update(model)
    return cfg


def switched(cfg: dict, **switches) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["model"].update(switches)
    return cfg


# ------------------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("multiscale", [True, False])
@pytest.mark.parametrize("identity_mappings", [True, False])
@pytest.mark.parametrize("se", [True, False])
def test_outputs_per_switch_combination(multiscale, identity_mappings, se):
    cfg = switched(config(), stacks=2, multiscale=multiscale, identity_mappings=identity_mappings, se=se)
    torch.manual_seed(0)
    net = MOD.build_model(cfg).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64))
    assert isinstance(out, list) and len(out) == 2
    keys = ["maps", "maps_s2", "maps_s4"] if multiscale else ["maps"]
    for stack in out:
        assert list(stack) == keys
        for level, key in enumerate(keys):
            assert stack[key].shape == (2, 50, 16 >> level, 16 >> level)
    assert set(final_outputs(out)) == set(keys)


def test_output_channels_follow_the_representation():
    net = MOD.build_model(switched(config("imhn3_paf"), stacks=1))
    assert net(torch.zeros(1, 3, 32, 32))[-1]["maps"].shape == (1, 30 * 2 + 18 + 2, 8, 8)
    net = MOD.build_model(switched(config("imhn3_fl2_mst"), stacks=1))
    assert net(torch.zeros(1, 3, 32, 32))[-1]["maps"].shape == (1, 21 + 18 + 2, 8, 8)


def test_odd_sizes_round_trip_and_match_the_ground_truth_pyramid():
    # 72 px -> an 18-cell map; the max-pool floors to 9 then 4, as the pyramid's h >> l.
    net = MOD.build_model(switched(config(), stacks=1)).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 72, 72))[-1]
    truth = rep.pyramid(torch.zeros(1, 50, 18, 18), 3)
    assert [tuple(out[k].shape[-2:]) for k in ("maps", "maps_s2", "maps_s4")] == [tuple(t.shape[-2:]) for t in truth]


# ------------------------------------------------------------------------------------------------- size

def bottleneck(i, o):
    m = o // 2
    return i * m + 2 * m + 9 * m * m + 2 * m + m * o + 2 * o + (0 if i == o else i * o + 2 * o)


def conv_bn(i, o, k):
    return k * k * i * o + 2 * o


def official_parameters(stacks, order, c, inc, out, se=True, multiscale=True, identity=True, reduction=16):
    """The official PoseNet's parameter count in closed form, layer by layer as models/posenet.py and
    models/layers_transposed.py build it (BN everywhere: bn=True), with our switches."""
    w = [c + i * inc for i in range(order + 1)]
    stem = (conv_bn(3, c // 4, 7) + bottleneck(c // 4, c // 2) + bottleneck(c // 2, c // 2)
            + 6 * conv_bn(c // 2, c // 2, 3))
    hourglass = sum(bottleneck(w[i], w[i]) + bottleneck(w[i], w[i + 1]) + bottleneck(w[i + 1], w[i])
                    + conv_bn(w[i], w[i], 3) for i in range(order)) + bottleneck(w[order], w[order])
    h = max(c // reduction, 1)          # the official code asserts c > reduction; below it we keep one unit
    heads = range(order + 1 if multiscale else 1)
    head = sum(conv_bn(w[j], c, 3) + conv_bn(c, c, 3) + (c * h + h + h * c + c if se else 0) + c * out + out
               for j in heads)
    mapped = heads if identity else range(1)
    merge = sum(conv_bn(c, w[j], 1) + conv_bn(out, w[j], 1) for j in mapped)
    return stem + stacks * (hourglass + head) + (stacks - 1) * merge


def test_paper_scale_size_is_the_official_network():
    # 4-stage IMHN (Table 1 IDs 13/14/18): 4 stacks of 4th-order hourglasses, 256 ... 768 channels, 50 outputs.
    cfg = config("imhn4_fl2", "paper")
    net = MOD.build_model(cfg)
    n = parameter_count(net)
    expected = official_parameters(4, 4, 256, 128, 50)
    print(f"\n4-stage IMHN at the paper scale: {n:,} parameters ({n / 1e6:.1f} M)")
    assert n == expected
    # The paper compares its 4-stage IMHN with ResNet-101 backbones (conv layer count), a ~130 M network here.
    assert 100e6 < n < 160e6
    n3 = parameter_count(MOD.build_model(config("imhn3_fl2", "paper")))
    assert n3 == official_parameters(3, 4, 256, 128, 50)


def test_tiny_scale_of_method_yaml_builds_and_has_five_scales():
    cfg = copy.deepcopy(SP.training_config("imhn3_fl2", "tiny"))
    cfg["schema"] = "coco17"
    net = MOD.build_model(cfg)
    s = cfg["model"]
    assert parameter_count(net) == official_parameters(3, s["order"], s["channels"], s["increase"], 50)
    assert model_mod.num_scales(s) == len(cfg["loss"]["scale_weights"]) == 5


# ------------------------------------------------------------------------------------------------- switches

def test_each_switch_changes_the_structure_by_its_own_layers():
    base = switched(config(), stacks=3)
    n = parameter_count(MOD.build_model(base))
    assert n == official_parameters(3, 2, 8, 8, 50, reduction=16)
    for switch, kwargs in (("se", {"se": False}), ("multiscale", {"multiscale": False}),
                           ("identity_mappings", {"identity": False})):
        other = parameter_count(MOD.build_model(switched(base, **{switch: False})))
        assert other == official_parameters(3, 2, 8, 8, 50, **kwargs) < n, switch
    net = MOD.build_model(switched(base, se=False))
    assert not any(isinstance(m, model_mod.SqueezeExcite) for m in net.modules())
    net = MOD.build_model(base)
    assert sum(isinstance(m, model_mod.SqueezeExcite) for m in net.modules()) == 3 * 3   # stacks x scales


@pytest.mark.parametrize("identity_mappings", [True, False])
def test_identity_mappings_carry_every_scale_into_the_next_stack(identity_mappings):
    # Stack 2 depends on stack 1's coarsest head only through the per-scale identity mapping.
    torch.manual_seed(0)
    net = MOD.build_model(switched(config(), stacks=2, identity_mappings=identity_mappings, init_std=None))
    out = net(torch.randn(2, 3, 64, 64))
    sum(v.sum() for v in out[1].values()).backward()
    coarse = net.heads[0][2].out.weight.grad
    fine = net.heads[0][0].out.weight.grad
    assert fine is not None and fine.abs().sum() > 0          # scale 1 feeds the next stack's input either way
    if identity_mappings:
        assert coarse is not None and coarse.abs().sum() > 0
    else:
        assert coarse is None or coarse.abs().sum() == 0


def test_init_std_initialises_every_conv():
    net = MOD.build_model(switched(config(), init_std=0.001, stacks=1))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert 0.0009 < weights.std() < 0.0011
    assert all(m.bias is None or not m.bias.any() for m in convs)


def test_bad_settings_name_the_field():
    with pytest.raises(HarnessError, match="encoding.stride"):
        cfg = config()
        cfg["encoding"]["stride"] = 8
        MOD.build_model(cfg)
    with pytest.raises(HarnessError, match="model.channels"):
        MOD.build_model(config(channels=10))
    with pytest.raises(HarnessError, match="model.order"):
        MOD.build_model(config(order=0))
    cfg = config()
    out = [{k: torch.zeros(1, 50, 8 >> i, 8 >> i) for i, k in enumerate(("maps", "maps_s2", "maps_s4"))}]
    cfg["loss"]["scale_weights"] = [1.0, 1.0]
    with pytest.raises(HarnessError, match="scale_weights"):
        MOD.loss(out, {"maps": torch.zeros(1, 50, 8, 8)}, cfg)
    cfg["loss"]["focal_on"] = "parts"
    with pytest.raises(HarnessError, match="focal_on"):
        MOD.loss(out, {"maps": torch.zeros(1, 50, 8, 8)}, cfg)


# ------------------------------------------------------------------------------------------------- loss

def hand_loss(pred, gt, weight, gamma, tau=0.01):
    """Σ 0.5 · w · (s - g)² · |1 - s_t|^gamma / B, s_t = s where g >= tau else 1 - s (numpy, float64)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    st = np.where(gt >= tau, pred, 1 - pred)
    return float((0.5 * weight * (pred - gt) ** 2 * np.abs(1 - st) ** gamma).sum() / pred.shape[0])


def loss_case(seed=0, b=2, h=4):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, 50, h, h, generator=g) * (torch.rand(b, 50, h, h, generator=g) > 0.5)
    pred = torch.rand(b, 50, h, h, generator=g)
    return pred, gt


LAY = rep.layout({"representation": "parts", "parts": 30})
KP = list(range(LAY["keypoints"].start, LAY["keypoints"].stop)) + [LAY["kmax"].start]


@pytest.mark.parametrize("focal,focal_on", [(True, "all"), (False, "all"), (True, "keypoints")])
def test_one_scale_terms_by_hand(focal, focal_on):
    cfg = switched(config(), multiscale=False)
    cfg["loss"].update(focal=focal, focal_on=focal_on, gamma=2, keypoint_weight=3.0, mask_weight=0.1)
    pred, gt = loss_case()
    terms = MOD.loss([{"maps": pred}], {"maps": gt}, cfg)
    assert set(terms) == {"parts", "keypoints", "mask"}
    w = np.ones(50)
    w[LAY["keypoints"]] = 3.0
    w[LAY["mask"]] = 0.1
    w = w[None, :, None, None]
    p, g = pred.numpy(), gt.numpy()
    gk = 2 if focal else 0
    gr = 2 if focal and focal_on == "all" else 0
    parts, mask = LAY["parts"], LAY["mask"]
    assert terms["keypoints"].item() == pytest.approx(hand_loss(p[:, KP], g[:, KP], w[:, KP], gk), rel=1e-5)
    assert terms["parts"].item() == pytest.approx(hand_loss(p[:, parts], g[:, parts], w[:, parts], gr), rel=1e-5)
    assert terms["mask"].item() == pytest.approx(hand_loss(p[:, mask], g[:, mask], w[:, mask], gr), rel=1e-5)


def test_focal_down_weights_easy_cells():
    # Easy background cells (0.05 against 0): s_t = 1 - 0.05, so focal L2 keeps |1 - s_t|² = 0.05² of the L2.
    cfg = switched(config(), multiscale=False)
    gt = torch.zeros(1, 50, 2, 2)
    pred = torch.full((1, 50, 2, 2), 0.05)
    plain = MOD.loss([{"maps": pred}], {"maps": gt}, {**cfg, "loss": {**cfg["loss"], "focal": False}})
    focal = MOD.loss([{"maps": pred}], {"maps": gt}, cfg)
    assert focal["parts"].item() == pytest.approx(plain["parts"].item() * 0.05 ** 2, rel=1e-5)


def test_paf_channels_always_get_plain_l2():
    # PAFs are signed vectors with no foreground: focal L2 (on in imhn3_fl2) leaves them plain.
    cfg = switched(config(), multiscale=False)
    cfg["encoding"]["representation"] = "paf"
    lay = rep.layout(cfg["encoding"])
    g = torch.Generator().manual_seed(2)
    gt = torch.rand(1, 80, 4, 4, generator=g) * 2 - 1
    pred = torch.rand(1, 80, 4, 4, generator=g)
    terms = MOD.loss([{"maps": pred}], {"maps": gt}, cfg)
    p, t = pred.numpy()[:, lay["parts"]], gt.numpy()[:, lay["parts"]]
    assert terms["parts"].item() == pytest.approx(hand_loss(p, t, 1.0, 0), rel=1e-5)


def test_scales_and_stacks_are_weighted_and_the_pyramid_is_pooled():
    cfg = config()                                        # order 2: three scales, weights 1, 2, 4 -> 1/7, 2/7, 4/7
    cfg["loss"]["stack_weights"] = [1.0, 3.0]
    pred, gt = loss_case(h=8)
    g = torch.Generator().manual_seed(1)
    outs = [{"maps": pred * s, "maps_s2": torch.rand(2, 50, 4, 4, generator=g),
             "maps_s4": torch.rand(2, 50, 2, 2, generator=g)} for s in (1.0, 0.5)]
    terms = MOD.loss(outs, {"maps": gt}, cfg)
    w = np.ones(50)
    w[LAY["keypoints"]] = 3.0
    w[LAY["mask"]] = 0.1
    w = w[None, :, None, None]
    total = 0.0
    for sw, out in zip((0.25, 0.75), outs):
        for lw, key, f in zip((1 / 7, 2 / 7, 4 / 7), ("maps", "maps_s2", "maps_s4"), (1, 2, 4)):
            # the ground truth of scale 1/f: mean over f x f blocks
            coarse = gt.numpy().reshape(2, 50, 8 // f, f, 8 // f, f).mean(axis=(3, 5))
            total += sw * lw * hand_loss(out[key].numpy(), coarse, w, 2)
    assert sum(t.item() for t in terms.values()) == pytest.approx(total, rel=1e-5)


def test_masked_cells_contribute_nothing_and_get_no_gradient():
    cfg = config()
    pred, gt = loss_case(h=8)
    mask = torch.ones(2, 8, 8)
    mask[:, :4, :4] = 0.0                                   # one whole coarse cell of scale 1/4, four of 1/2
    outs = {"maps": pred.clone(), "maps_s2": torch.rand(2, 50, 4, 4), "maps_s4": torch.rand(2, 50, 2, 2)}
    ref = MOD.loss([outs], {"maps": gt, "heatmap_mask": mask}, cfg)
    bad = {k: v.clone().requires_grad_(True) for k, v in outs.items()}
    with torch.no_grad():
        bad["maps"][:, :, :4, :4] = float("nan")
        bad["maps_s2"][:, :, :2, :2] = 1e6
        bad["maps_s4"][:, :, 0, 0] = float("inf")
    terms = MOD.loss([bad], {"maps": gt, "heatmap_mask": mask}, cfg)
    for k in ref:
        assert terms[k].item() == pytest.approx(ref[k].item(), rel=1e-6)
    sum(terms.values()).backward()
    assert torch.isfinite(bad["maps"].grad).all() and not bad["maps"].grad[:, :, :4, :4].any()
    assert not bad["maps_s2"].grad[:, :, :2, :2].any() and bad["maps_s2"].grad[:, :, 2:, 2:].any()
    assert not bad["maps_s4"].grad[:, :, 0, 0].any() and bad["maps_s4"].grad[:, :, 1, 1].any()


def test_coarse_mask_weight_is_the_supervised_share_from_one_half():
    mask = torch.ones(1, 4, 4)
    mask[0, 0, 0] = 0.0                                     # top-left 2x2 block: 3/4 supervised
    mask[0, 2:, 2:] = torch.tensor([[0.0, 0.0], [0.0, 1.0]])  # bottom-right block: 1/4 supervised
    mask[0, 0, 2:] = 0.4                                    # a fine cell under one half is not supervised at all
    m0, m1 = model_mod.loss_masks(mask, 2)
    assert m0[0, 0, 0, 2:].tolist() == [0.0, 0.0] and m0[0, 0, 1, 2] == 1.0
    assert m1[0, 0].flatten().tolist() == pytest.approx([0.75, 0.7, 1.0, 0.0])


def test_loss_mask_from_the_ignore_mask():
    ignore = np.zeros((8, 8), bool)
    ignore[0, 0:4] = True                                   # 4 of cell (0, 0)'s 16 px ignored -> 0.75
    ignore[4:6, 4:8] = True                                 # 8 of cell (1, 1)'s 16 px -> 0.5
    assert heatmap_mask(ignore, 4, keep_fraction=None).tolist() == [[0.75, 1.0], [1.0, 0.5]]
    assert heatmap_mask(ignore, 4).tolist() == [[1.0, 1.0], [1.0, 0.0]]          # GOG's 0.7 threshold
    sample = Sample(image=np.zeros((8, 8, 3), np.uint8), keypoints=np.zeros((0, 17, 3)), boxes=np.zeros((0, 4)),
                    areas=np.zeros(0), iscrowd=np.zeros(0, bool), num_keypoints=np.zeros(0, np.int64),
                    ignore_mask=ignore, image_id=1, file_name="x.jpg", width=8, height=8, meta={})
    cfg = SP.variant_config("imhn3_fl2", "tiny")
    cfg["schema"] = "coco17"
    enc = MOD.encode(sample, cfg)
    assert enc["heatmap_mask"].dtype == np.float32 and enc["heatmap_mask"].tolist() == [[0.75, 1.0], [1.0, 0.5]]
    assert enc["maps"].shape == (50, 2, 2)


# ------------------------------------------------------------------------------------------------- training

STEPS_TO_FIT = 20


def test_gradients_reach_every_parameter_and_a_batch_is_fitted():
    torch.manual_seed(0)
    cfg = switched(config(), stacks=2)
    net = MOD.build_model(cfg)
    x = torch.randn(2, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 50, 8, 8, generator=g) ** 4
    batch = {"maps": gt, "heatmap_mask": torch.ones(2, 8, 8)}
    first = sum(MOD.loss(net(x), batch, cfg).values())
    first.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for n, p in net.named_parameters() if n.endswith("out.weight"))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(STEPS_TO_FIT):
        opt.zero_grad()
        loss = sum(MOD.loss(net(x), batch, cfg).values())
        loss.backward()
        opt.step()
    print(f"\nfitting one batch: loss {first.item():.2f} -> {loss.item():.2f} in {STEPS_TO_FIT} Adam steps")
    assert loss.item() < 0.5 * first.item()


def test_predictor_path_decodes_the_last_stack_and_merges_flip():
    cfg = SP.variant_config("imhn3_fl2", "tiny")
    cfg["schema"] = "coco17"
    cfg["model"].update(order=2, channels=8, increase=8)
    cfg["loss"]["scale_weights"] = [1.0, 1.0, 1.0]
    net = MOD.build_model(cfg).eval()
    with torch.no_grad():
        out = final_outputs(net(torch.randn(1, 3, 64, 64)))
    one = {k: v[0] for k, v in out.items()}
    merged = MOD.merge_flip(one, one, cfg)
    assert set(merged) == set(one)
    poses, scores = MOD.decode(merged, cfg)
    assert poses.shape[1:] == (17, 3) and len(scores) == len(poses)


def test_focal_trainings_start_with_plain_l2_for_their_l2_first_share():
    # The paper trains with L2 first, then focal L2: the loss the trainer sees at progress p (steps done / all).
    cfg = switched(config(), multiscale=False)
    cfg["loss"]["l2_first"] = 0.5
    cfg["loss"]["gamma"] = 1                                # the other loss settings survive both phases
    pred, gt = loss_case()

    def terms(c):
        return {k: v.item() for k, v in MOD.loss([{"maps": pred}], {"maps": gt}, c).items()}

    plain = terms({**cfg, "loss": {**cfg["loss"], "focal": False}})
    focal = terms(cfg)
    assert plain != focal
    assert terms(MOD.loss_config(cfg, 0.0)) == plain and terms(MOD.loss_config(cfg, 0.49)) == plain
    assert MOD.loss_config(cfg, 0.5) is cfg and MOD.loss_config(cfg, 0.99) is cfg
    assert MOD.loss_config(cfg, 0.1)["loss"]["gamma"] == 1
    l2 = {**cfg, "loss": {**cfg["loss"], "focal": False}}
    assert MOD.loss_config(l2, 0.1) is l2                   # L2 trainings are L2 throughout
    assert MOD.loss_config({**cfg, "loss": {**cfg["loss"], "l2_first": 0.0}}, 0.0)["loss"]["focal"] is True
    with pytest.raises(HarnessError, match="loss.l2_first"):
        MOD.loss_config({**cfg, "loss": {**cfg["loss"], "l2_first": 1.0}}, 0.0)
    # The method's own settings: every focal row of Table 1 starts with plain L2.
    assert SP.training_config("imhn3_fl2", "tiny")["loss"]["l2_first"] == 0.5
