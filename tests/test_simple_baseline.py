"""SimpleBaseline's directory: the network (torchvision's ResNet trunk, three deconvolutions, 64 x 48 maps at
256 x 192), the oracle on the real CrowdPose val annotations, the share of joints outside their crop, and oracle /
train / predict through the pipeline with ground-truth, jittered and detection boxes and the flip test."""
import json
import shutil

import numpy as np
import pytest
import torch
import torchvision
from conftest import use_store

from poseharness.contract import method_module, method_submodule, resolve_method
from poseharness.data.augment import transform_sample
from poseharness.data.loader import load_samples
from poseharness.data.manifest import load_manifest
from poseharness.errors import HarnessError
from poseharness.config import variant_config
from poseharness.oracle import run_oracle
from poseharness.pipeline import Decoder, encoded_outputs
from poseharness.threads import torch_threads
from poseharness.views import image_views
from shared_data import CROWDPOSE_VAL


@pytest.fixture(scope="module")
def spec():
    return resolve_method("simple_baseline")


def config(spec, variant="argmax", scale="paper", schema="coco17"):
    cfg = spec.variant_config(variant, scale)
    cfg["schema"] = schema
    return cfg


def test_paper_network_is_torchvision_resnet50_with_three_deconvolutions(spec):
    net = method_module(spec).build_model(config(spec))
    ours = {k: v.shape for k, v in net.backbone.state_dict().items()}
    theirs = {k: v.shape for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
    assert ours == theirs                       # torchvision's ImageNet weights load into the trunk as they are
    deconvs = [m for m in net.deconv_layers if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(d.out_channels, d.kernel_size, d.stride, d.bias) for d in deconvs] == [(256, (4, 4), (2, 2), None)] * 3
    assert net.final_layer.kernel_size == (1, 1) and net.final_layer.out_channels == 17
    with torch_threads(1), torch.no_grad():
        out = net.eval()(torch.zeros(1, 3, 256, 192))
    assert out["heatmaps"].shape == (1, 17, 64, 48)
    with pytest.raises(HarnessError, match="multiples of 32"):
        net(torch.zeros(1, 3, 256, 200))


def test_tiny_network_is_a_narrow_resnet18(spec):
    cfg = config(spec, scale="tiny", schema="crowdpose14")
    net = method_module(spec).build_model(cfg)
    blocks = [b for b in net.backbone.modules() if isinstance(b, torchvision.models.resnet.BasicBlock)]
    assert len(blocks) == 8 and net.backbone.layer4[-1].conv2.out_channels == 16 * 8
    assert net(torch.zeros(2, 3, 128, 96))["heatmaps"].shape == (2, 14, 32, 24)
    cfg["model"]["pretrained"] = True
    with pytest.raises(HarnessError, match="model.pretrained: ImageNet weights exist for width 64 only"):
        method_module(spec).build_model(cfg)


# ----------------------------------------------------------------------------------------------------------
# The real CrowdPose val annotations (no images)
# ----------------------------------------------------------------------------------------------------------

needs_crowdpose = pytest.mark.skipif(not CROWDPOSE_VAL.exists(), reason="real CrowdPose val annotations not in ../shared")


@pytest.fixture
def crowdpose(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "results"))
    manifest = load_manifest("crowdpose")
    dest = manifest.annotation_path("val")
    dest.parent.mkdir(parents=True)
    shutil.copy(CROWDPOSE_VAL, dest)
    with torch_threads(1):
        yield manifest


@needs_crowdpose
def test_outside_share_on_real_crowdpose_counts_what_the_crop_loses(spec, crowdpose):
    bound = method_submodule(spec, "bound")
    b = bound.outside_share(crowdpose, "val", (192, 256), limit=300)
    # the same count the oracle's path makes: labelled joints that the crop's affine zeroes
    lost = labelled = 0
    samples = load_samples(crowdpose, "val", images=False)
    for i in range(300):
        s = samples[i]
        for view in image_views(s, "top-down", (192, 256)):
            seen = transform_sample(s, view.affine, view.size, persons=[view.person])
            lab = s.keypoints[view.person, :, 2] > 0
            labelled += int(lab.sum())
            lost += int((lab & (seen.keypoints[0, :, 2] == 0)).sum())
    assert (b["joints"], b["outside"]) == (labelled, lost)
    assert 0 < b["share"] < 0.05 and b["persons_outside"] <= b["outside"] and b["persons"] > 1000
    assert set(b["per_keypoint"]) == set(crowdpose.schema.keypoints)


@needs_crowdpose
def test_oracle_on_real_crowdpose(spec, crowdpose):
    variants = ["argmax", "argmax_noshift", "base_dark", "unbiased_argmax", "dark"]
    # Localisation, through the oracle's own path (encode the crop's ground truth, decode, back to the image), at
    # the tiny scale's 96 x 128 crops where a cell is large: mean error of the joints the crop holds, in image px.
    module, samples = method_module(spec), load_samples(crowdpose, "val", images=False)
    cfgs = {v: variant_config(spec, v, "tiny", crowdpose) for v in variants}
    errors = {v: [] for v in variants}
    for i in range(40):
        s = samples[i]
        for view in image_views(s, "top-down", (96, 128)):
            truth = s.keypoints[view.person]
            for v, cfg in cfgs.items():
                outputs = encoded_outputs(module, s, view, cfg, crowdpose.schema.counted)
                pose = Decoder(module, cfg, "top-down").view(outputs, view)[0][0]
                found = pose[:, 2] > 0
                errors[v].append(np.linalg.norm(pose[found, :2] - truth[found, :2], axis=1))
    err = {v: np.concatenate(e).mean() for v, e in errors.items()}
    # SimpleBaseline's maps peak on a cell whose neighbours tie: the quarter shift never moves, DARK hardly;
    # DARK's unbiased maps keep the sub-cell position: the quarter shift halves the error, DARK removes it
    assert err["argmax"] == err["argmax_noshift"] and abs(err["base_dark"] - err["argmax"]) < 0.05 * err["argmax"]
    assert err["dark"] < 0.1 * err["unbiased_argmax"] and err["unbiased_argmax"] < 0.7 * err["argmax"]

    rows = run_oracle(spec, crowdpose, "val", variants, "tiny", progress=False, limit=150, write=False)
    ap = {r["variant"]: r["metrics"]["AP"] for r in rows}
    assert ap["argmax"] == ap["argmax_noshift"]
    # CrowdPose's persons are large: sub-cell errors hardly move OKS; joints outside their crop cost the most
    assert all(0.9 < a < 0.99 for a in ap.values()) and len({r["persons"] for r in rows}) == 1


# ----------------------------------------------------------------------------------------------------------
# Through the pipeline on tiny synthetic COCO
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def synth(data_root, tmp_path, monkeypatch):
    env = use_store(monkeypatch, data_root, tmp_path)
    with torch_threads(1):
        yield env


def test_box_sources_through_oracle_train_and_predict(spec, synth):
    from poseharness.predict import predict
    from poseharness.train import train

    manifest = load_manifest("synthetic-coco")
    rows = {r["variant"]: r for r in run_oracle(spec, manifest, "val", ["argmax", "jittered", "dark"], "tiny",
                                                size="tiny", progress=False)}
    assert json.loads(rows["argmax"]["record"].read_text())["config"]["boxes"] == "ground-truth"
    jitter = json.loads(rows["jittered"]["record"].read_text())["config"]["boxes"]
    assert jitter == {"source": "jittered", "centre": 0.1, "size": 0.1, "miss_rate": 0.05, "seed": 0}
    assert rows["jittered"]["persons"] <= rows["argmax"]["persons"]
    assert rows["dark"]["metrics"]["AP"] > 0.8 and rows["argmax"]["metrics"]["AP"] > 0.6
    assert rows["jittered"]["metrics"]["AP"] != rows["argmax"]["metrics"]["AP"]      # other crops, other scores

    dets = synth / "dets.json"
    dets.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 60], "score": 0.9}]))
    with pytest.raises(HarnessError, match=r"variant 'jittered': decode: --detections .*replaces ground-truth boxes"):
        run_oracle(spec, manifest, "val", ["jittered"], "tiny", size="tiny", progress=False, detections=dets)

    run = train(spec, "base", manifest, "tiny", size="tiny", steps=2, out=synth / "run", progress=False,
                device="cpu", log=lambda *_: None)
    assert run.complete and "heatmap" in run.losses
    out = predict(run.checkpoint, "flip_shift1", manifest, "val", progress=False, device="cpu", write=False,
                  out=synth / "flip.json")
    assert out["config"]["predict"] == {"view": "top-down", "input": [96, 128], "flip": True, "boxes": "ground-truth"}
    assert out["config"]["decode"]["flip_shift"] == 1 and out["persons"] > 0
    out = predict(run.checkpoint, "jittered", manifest, "val", progress=False, device="cpu", write=False,
                  out=synth / "jit.json")
    assert out["config"]["predict"]["boxes"]["source"] == "jittered"
    with pytest.raises(HarnessError, match="replaces ground-truth boxes only"):
        predict(run.checkpoint, "jittered", manifest, "val", progress=False, device="cpu", write=False,
                out=synth / "x.json", detections=dets)


def test_a_detection_file_as_a_variant_setting(spec, synth, tmp_path):
    """`decode.boxes: {source: file, path}`: a variant of its own whose crops come from a COCO detection-results
    file under the data folder; the same figures as the ground-truth-box variant given the file by --detections,
    the file's path and digest in the record, and the file an input of the variant's DAG jobs."""
    import yaml

    from poseharness import workflow
    from poseharness.paths import data_dir
    from poseharness.views import BoxSource

    manifest = load_manifest("synthetic-coco")
    samples = load_samples(manifest, "val", "tiny", None, images=False)
    dets = [{"image_id": int(s.image_id), "category_id": 1, "bbox": [float(v) + 1.5 for v in box], "score": 0.8}
            for s in samples for box, crowd in zip(s.boxes, s.iscrowd) if not crowd]
    file = data_dir() / "detections" / "val_dets.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(dets))
    copy = tmp_path / "methods" / "simple_baseline"
    shutil.copytree(spec.directory, copy, ignore=shutil.ignore_patterns("__pycache__"))
    raw = yaml.safe_load((copy / "method.yaml").read_text())
    raw["variants"]["detected"] = {"training": "base", "label": "detected boxes",
                                   "decode": {"boxes": {"source": "file", "path": "detections/val_dets.json"}}}
    (copy / "method.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    copied = resolve_method(copy)

    by_file = run_oracle(copied, manifest, "val", ["detected"], "tiny", size="tiny", progress=False)[0]
    by_option = run_oracle(copied, manifest, "val", ["argmax"], "tiny", size="tiny", progress=False, write=False,
                           detections=file)[0]
    assert by_file["persons"] == by_option["persons"] > 0
    assert by_file["metrics"] == by_option["metrics"] and by_file["metrics"]["AP"] > 0.5
    boxes = json.loads(by_file["record"].read_text())["config"]["boxes"]
    assert boxes["source"] == "file" and boxes["path"] == str(file.resolve()) and len(boxes["sha256"]) == 64
    assert workflow.detection_files(copied, ["argmax", "detected", "jittered"]) == [workflow.relative(file)]

    with pytest.raises(HarnessError, match=r"decode: --detections .*replaces ground-truth boxes"):
        run_oracle(copied, manifest, "val", ["detected"], "tiny", size="tiny", progress=False, detections=file)
    file.unlink()
    with pytest.raises(HarnessError, match=r"val_dets\.json: detection file not found \(decode\.boxes\.path is "
                                           r"relative to the data folder"):
        run_oracle(copied, manifest, "val", ["detected"], "tiny", size="tiny", progress=False, write=False)


@pytest.mark.parametrize("boxes, message", [
    ({"source": "file"}, r"boxes\.path: a detection file's path is required"),
    ({"source": "file", "path": ""}, r"boxes\.path: a detection file's path is required"),
    ({"source": "file", "path": "d.json", "seed": 1}, r"boxes: detection-file boxes take no seed"),
    ({"source": "gt", "path": "d.json"}, r"boxes: ground-truth boxes take no path"),
    ({"source": "jittered", "path": "d.json"}, r"boxes: jittered boxes take no path"),
    ({"source": "detections"}, r"boxes\.source: must be one of gt, jittered, file"),
])
def test_bad_box_sources_name_the_field(boxes, message):
    from poseharness.views import BoxSource

    with pytest.raises(HarnessError, match=r"variant 'v': decode: field " + message):
        BoxSource.from_decode({"boxes": boxes}, "variant 'v': decode")
