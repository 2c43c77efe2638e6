"""PoseDet at inference: the heatmap head (intermediate supervision) runs in training only, the other heads are
unchanged by it, and a checkpoint (whose recorded heads include the heatmaps) still passes the predictor's
head-layout check, which leaves out the heads a method declares training-only (``training_only_heads``)."""
import types

import pytest
import torch

from poseharness import checkpoint as ckpt
from poseharness.contract import method_module, resolve_method
from poseharness.data.manifest import load_manifest
from poseharness.errors import HarnessError
from poseharness.predict import predict
from poseharness.threads import torch_threads
from poseharness.train import inference_layout, train, training_only_heads


def tiny_net(schema="coco17"):
    spec = resolve_method("posedet")
    mod = method_module(spec)
    cfg = spec.training_config("full", "tiny")
    cfg["schema"] = schema
    torch.manual_seed(0)
    return mod, cfg, mod.build_model(cfg).double()


def test_eval_mode_skips_the_heatmap_head_and_keeps_the_other_heads():
    mod, cfg, net = tiny_net()
    calls = []
    net.head.heatmap_out.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 256, 256, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch_threads(1):
        train_out = mod.final_outputs(net.train()(x))
        assert len(calls) == len(cfg["encoding"]["strides"])          # once per level in training
        eval_out = mod.final_outputs(net.eval()(x))
    assert len(calls) == len(cfg["encoding"]["strides"])              # not at all in eval mode
    levels = range(len(cfg["encoding"]["strides"]))
    assert set(train_out) == {f"{h}@{l}" for h in ("coarse", "refine", "cls", "heatmap") for l in levels}
    assert set(eval_out) == {f"{h}@{l}" for h in ("coarse", "refine", "cls") for l in levels}
    for name, maps in eval_out.items():
        assert maps.dtype == torch.float64
        torch.testing.assert_close(maps, train_out[name], rtol=1e-12, atol=1e-12)
    # decoding reads the eval outputs (no heatmap) as before
    one = {name: maps[0] for name, maps in eval_out.items()}
    poses, scores = mod.decode(one, {**cfg, "decode": resolve_method("posedet").decode_settings("posedet")})
    assert poses.shape[1:] == (17, 3) and len(poses) == len(scores)


def test_no_heatmap_training_has_no_heatmap_in_either_mode():
    spec = resolve_method("posedet")
    mod = method_module(spec)
    cfg = dict(spec.training_config("no_is", "tiny"), schema="coco17")
    net = mod.build_model(cfg)
    with torch.no_grad(), torch_threads(1):
        for train_mode in (True, False):
            out = mod.final_outputs(net.train(train_mode)(torch.zeros(1, 3, 64, 64)))
            assert not any(name.startswith("heatmap@") for name in out)


def test_training_only_heads_rule():
    assert training_only_heads(method_module(resolve_method("posedet"))) == ("heatmap",)
    assert training_only_heads(types.SimpleNamespace()) == ()
    assert training_only_heads(types.SimpleNamespace(training_only_heads="aux")) == ("aux",)
    with pytest.raises(HarnessError, match="training_only_heads must be a tuple of output names"):
        training_only_heads(types.SimpleNamespace(training_only_heads=(1,)))
    layout = {"coarse@0": 30, "heatmap@0": 15, "heatmap@1": 15, "heatmaps": 17, "cls@1": 1}
    assert inference_layout(layout, ("heatmap",)) == {"coarse@0": 30, "heatmaps": 17, "cls@1": 1}
    assert inference_layout(layout) == layout


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
    """final.pt of a 2-step tiny PoseDet training on the tiny synthetic-coco set."""
    mp = pytest.MonkeyPatch()
    mp.setenv("POSEHARNESS_DATA", str(data_root))
    try:
        with torch_threads(1):
            run = train(resolve_method("posedet"), "full", load_manifest("synthetic-coco"), "tiny", size="tiny",
                        steps=2, out=tmp_path_factory.mktemp("posedet_run"), device="cpu", workers=0,
                        progress=False, log=lambda *_: None)
    finally:
        mp.undo()
    return run.checkpoint


def test_prediction_with_a_trained_checkpoint_passes_the_heads_check(env, trained):
    state = torch.load(trained, weights_only=True)
    assert state["heads"]["heatmap@0"] == 17 and state["heads"]["cls@1"] == 1   # recorded in training mode
    manifest = load_manifest("synthetic-coco")
    with torch_threads(1):
        out = predict(trained, "posedet", manifest, out=env / "p.json", limit=3, write=False, progress=False,
                      device="cpu")
    assert out["images"] == 3

    # The training-only heads are not compared; the others are.
    ckpt.save_checkpoint(env / "aux.pt", {**state, "heads": {**state["heads"], "heatmap@0": 99}})
    with torch_threads(1):
        predict(env / "aux.pt", "posedet", manifest, out=env / "a.json", limit=1, write=False, progress=False,
                device="cpu")
    ckpt.save_checkpoint(env / "cls.pt", {**state, "heads": {**state["heads"], "cls@0": 2}})
    with pytest.raises(HarnessError, match=r"cls\.pt: field heads: .*'cls@0': 2.* differ from the model's .*"
                                           r"training-only heads heatmap not compared"), torch_threads(1):
        predict(env / "cls.pt", "posedet", manifest, out=env / "c.json", limit=1, write=False, progress=False,
                device="cpu")
