"""KCAM's directory (methods/kcam): the method loads and meets the contract on SimpleBaseline's backbone, its targets
and decoding are the top-down base's (an encode / decode round trip of crops through the oracle path), a short
training and prediction run through the pipeline, and Tables 1 / 2 are trainings that differ in their switches only.
"""
import json

import numpy as np
import pytest
import torch
from conftest import use_store

from poseharness.config import train_settings, variant_config
from poseharness.contract import method_module, method_submodule, resolve_method
from poseharness.data.loader import load_samples
from poseharness.data.manifest import load_manifest
from poseharness.errors import HarnessError
from poseharness.methods import deep_merge
from poseharness.oracle import run_oracle
from poseharness.pipeline import Decoder, encoded_outputs
from poseharness.threads import torch_threads
from poseharness.views import image_views


@pytest.fixture(scope="module")
def spec():
    return resolve_method("kcam")


@pytest.fixture(scope="module")
def base():
    return resolve_method("simple_baseline")


def config(spec, variant="concat", scale="tiny", schema="coco17"):
    cfg = spec.variant_config(variant, scale)
    cfg["schema"] = schema
    return cfg


def test_the_method_loads_on_simple_baselines_backbone(spec, base):
    module = method_module(spec)
    assert module.paradigm == spec.paradigm == "top-down"
    base_model = method_submodule(base, "model")
    cfg = config(spec, schema="crowdpose14")
    assert cfg["model"]["kcam"]["area_norm"] == "sum" and cfg["loss"]["alpha"] == 0.2        # the [D] default
    net = module.build_model(cfg)
    assert isinstance(net.backbone, base_model.ResNetTrunk)                # the base's classes, not a copy
    # the same trunk and deconvolutions as SimpleBaseline's tiny model: parameter names and shapes
    sb = method_module(base).build_model(variant_config(base, "argmax", "tiny", load_manifest("synthetic-crowdpose")))
    ours = {k: v.shape for k, v in net.state_dict().items() if not k.startswith("head.")}
    assert ours == {k: v.shape for k, v in sb.state_dict().items() if not k.startswith("final_layer.")}
    assert net.head.in_channels == 64 and net.head.fusion == "concat" and net.head.area_norm == "sum"
    with torch_threads(1), torch.no_grad():
        out = net.eval()(torch.zeros(2, 3, 128, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"heatmaps": (2, 14, 32, 24), "areas": (2, 14, 32, 24)}
    with pytest.raises(HarnessError, match="multiples of 32"):
        net(torch.zeros(1, 3, 128, 100))
    plain = module.build_model(config(spec, "plain"))
    assert not plain.head.context and set(plain.eval()(torch.zeros(1, 3, 128, 96))) == {"heatmaps"}


def test_tables_1_and_2_are_trainings_that_differ_in_their_switches_only(spec):
    """Each Table 1 / 2 training resolves to concat's config with one switch changed, at every scale, with the
    same training schedule; the jittered columns decode the same models with the base's stand-in boxes."""
    switches = {"nosup": {"loss": {"alpha": 0.0}},
                "add": {"model": {"kcam": {"fusion": "add"}}},
                "nofusion": {"model": {"kcam": {"fusion": "none"}}}}
    tables = spec.tables()
    trained = {spec.variants[v]["training"] for t in ("table1", "table2") for v in tables[t].columns}
    assert trained == {"concat", *switches}
    for scale in spec.scales:
        ref = spec.training_config("concat", scale)
        for training, switch in switches.items():
            cfg = spec.training_config(training, scale)
            assert cfg == {**deep_merge(ref, switch), "training": training}, (training, scale)
            assert train_settings(spec, training, scale) == train_settings(spec, "concat", scale)
    jitter = {"source": "jittered", "centre": 0.1, "size": 0.1, "miss_rate": 0.05, "seed": 0}
    for name in ("concat", "nosup", "add", "nofusion"):
        plain, jit = spec.variant_config(name, "tiny"), spec.variant_config(f"{name}_jittered", "tiny")
        assert jit["training"] == plain["training"] == name
        assert jit == {**plain, "variant": f"{name}_jittered", "decode": {**plain["decode"], "boxes": jitter}}
        assert plain["decode"]["flip"] is True                         # the paper's rows use the flip test
    # the published rows: Table 1's "w/ supervision" is Table 2's "Concatenation"
    assert tables["table1"].paper["concat"] == tables["table2"].paper["concat"]
    assert tables["table1"].paper["nosup"]["AP"] == 70.19 and tables["table2"].paper["nofusion"]["AP"] == 70.94
    assert tables["table3"].paper["concat"]["AP"] == 75.8 and len(tables["table3"].cited) == 10
    assert {(c.a, c.b) for c in tables["table1"].claims} == {("concat", "nosup"), ("concat_jittered", "nosup_jittered")}


# ----------------------------------------------------------------------------------------------------------
# Through the pipeline on tiny synthetic COCO
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def synth(data_root, tmp_path, monkeypatch):
    env = use_store(monkeypatch, data_root, tmp_path)
    with torch_threads(1):
        yield env


def test_crop_round_trip_through_the_oracle_path_is_the_bases(spec, base, synth):
    """Ground truth of each crop encoded with KCAM's encode and decoded through the oracle's path (crop -> maps ->
    pose -> uncrop): the joints come back within a heatmap cell, and targets and poses are SimpleBaseline's."""
    manifest = load_manifest("synthetic-coco")
    ours, theirs = method_module(spec), method_module(base)
    cfg = variant_config(spec, "concat", "tiny", manifest, size="tiny")
    cfg_base = variant_config(base, "flip", "tiny", manifest, size="tiny")
    samples = load_samples(manifest, "val", "tiny", images=False)
    errors, crops = [], 0
    for i in range(min(len(samples), 8)):
        s = samples[i]
        for view in image_views(s, "top-down", (96, 128)):
            outputs = encoded_outputs(ours, s, view, cfg, manifest.schema.counted)
            reference = encoded_outputs(theirs, s, view, cfg_base, manifest.schema.counted)
            assert outputs.keys() == reference.keys() == {"heatmaps", "target_weight"}
            assert all(torch.equal(outputs[k], reference[k]) for k in outputs)          # the base's targets
            pose = Decoder(ours, cfg, "top-down").view(outputs, view)[0][0]
            assert np.array_equal(pose, Decoder(theirs, cfg_base, "top-down").view(reference, view)[0][0])
            truth = s.keypoints[view.person]
            found = pose[:, 2] > 0
            cell = 4 / np.sqrt(abs(np.linalg.det(view.affine[:, :2])))    # a 4-pixel heatmap cell, image pixels
            errors.append(np.linalg.norm(pose[found, :2] - truth[found, :2], axis=1) / cell)
            crops += 1
    err = np.concatenate(errors)                   # in cells: the nearest cell's centre is <= 0.71 cells away
    assert crops > 5 and len(err) > 50
    assert err.max() < 0.75 and 0.1 < err.mean() < 0.5
    # the whole oracle: KCAM's concat column scores exactly as SimpleBaseline's flip column
    rows = {r["variant"]: r["metrics"]["AP"] for r in run_oracle(spec, manifest, "val", ["concat"], "tiny",
                                                                    size="tiny", progress=False, write=False)}
    ref = run_oracle(base, manifest, "val", ["flip"], "tiny", size="tiny", progress=False, write=False)
    assert rows["concat"] == ref[0]["metrics"]["AP"] > 0.6


def test_two_steps_of_training_and_a_prediction(spec, synth):
    from poseharness.predict import predict
    from poseharness.train import train

    manifest = load_manifest("synthetic-coco")
    run = train(spec, "concat", manifest, "tiny", size="tiny", steps=2, out=synth / "run", progress=False,
                device="cpu", log=lambda *_: None)
    assert run.complete and set(run.losses) - {"total"} == {"heatmap", "inter"}
    assert all(np.isfinite(v) for v in run.losses.values())
    nosup = train(spec, "nosup", manifest, "tiny", size="tiny", steps=2, out=synth / "nosup", progress=False,
                  device="cpu", log=lambda *_: None)
    assert set(nosup.losses) - {"total"} == {"heatmap"}            # alpha 0: no soft-area term
    out = predict(run.checkpoint, "concat", manifest, "val", progress=False, device="cpu", write=False,
                  out=synth / "concat.json")
    assert out["config"]["predict"] == {"view": "top-down", "input": [96, 128], "flip": True, "boxes": "ground-truth"}
    assert out["persons"] > 0 and 0 <= out["metrics"]["AP"] <= 1
    out = predict(run.checkpoint, "concat_jittered", manifest, "val", progress=False, device="cpu", write=False,
                  out=synth / "jit.json")
    assert out["config"]["predict"]["boxes"]["source"] == "jittered"
    poses = json.loads((synth / "jit.json").read_text())
    assert poses and len(poses[0]["keypoints"]) == 3 * 17
