"""The paradigms plug into the one pipeline: a toy top-down and a toy single-stage method through oracle (ground-truth
boxes and a detection file), train and predict."""
import json
import os
import textwrap

import numpy as np
import pytest

from poseharness.contract import resolve_method
from poseharness.data import synthetic
from poseharness.data.manifest import load_manifest
from poseharness.oracle import run_oracle
from poseharness.predict import predict
from poseharness.train import train

COMMON = """
    defaults:
      encoding: {stride: 2, sigma: 2.0}
      model: {channels: 8}
      decode: {threshold: 0.5}
      train: {augment: false, checkpoint_every: 5}
    trainings:
      base: {description: the toy net}
    variants:
      plain: {training: base}
    tables: {}
"""

TOP_DOWN_YAML = """
    name: toy_td
    paper: {title: "Test: a toy top-down method, one heatmap per keypoint per crop, argmax decode"}
    paradigm: top-down
    scales:
      tiny:
        input: [48, 64]
        train: {steps: 2, batch: 4, lr: 1.0e-3, workers: 0}
""" + COMMON

TOP_DOWN_PY = '''
import numpy as np
import torch
from torch import nn
from poseharness.codecs import encode_heatmaps
from poseharness.schemas import get_schema

paradigm = "top-down"


class Net(nn.Module):
    def __init__(self, k, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1), nn.ReLU())
        self.heatmaps = nn.Conv2d(c, k, 1)

    def forward(self, x):
        return {"heatmaps": self.heatmaps(self.body(x))}


def build_model(cfg):
    return Net(get_schema(cfg["schema"]).num_keypoints, cfg["model"]["channels"])


def encode(sample, cfg):
    s = cfg["encoding"]["stride"]
    hw = (sample.height // s, sample.width // s)
    return {"heatmaps": encode_heatmaps(sample.keypoints, hw, s, sigma=cfg["encoding"]["sigma"]).astype(np.float32)}


def loss(outputs, batch, cfg):
    return {"l2": ((outputs["heatmaps"] - batch["heatmaps"]) ** 2).mean()}


def decode(outputs, cfg, view=None):
    """One pose per crop: each channel's argmax cell centre, the peak value its score."""
    assert view is not None and view.kind == "top-down"      # the pipeline passes the view
    h = outputs["heatmaps"].float()
    k, _, w = h.shape
    score, idx = h.reshape(k, -1).max(dim=1)
    s = cfg["encoding"]["stride"]
    xy = torch.stack([idx % w, idx // w], -1).double() * s + (s - 1) / 2
    pose = torch.cat([xy, score.clamp(min=0).double()[:, None]], -1)
    return pose[None].numpy(), np.array([float(score.mean())])
'''

SINGLE_STAGE_YAML = """
    name: toy_ss
    paper: {title: "Test: a toy single-stage method, centre heatmap and joint offsets on two levels"}
    paradigm: single-stage
    scales:
      tiny:
        input: 64
        train: {steps: 2, batch: 4, lr: 1.0e-3, workers: 0}
""" + COMMON

SINGLE_STAGE_PY = '''
import numpy as np
import torch
from torch import nn
from poseharness.codecs import encode_heatmaps
from poseharness.posenms import oks_nms
from poseharness.schemas import get_schema

paradigm = "single-stage"
STRIDES = (4, 8)


class Net(nn.Module):
    """Two levels (stride 4 and 8), each a centre heatmap and 2K joint offsets: a list of per-level dicts."""
    def __init__(self, k, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, stride=2, padding=1), nn.ReLU())
        self.down = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1 + 2 * k, 1) for _ in STRIDES)

    def forward(self, x):
        f = self.body(x)
        out = []
        for head, feat in zip(self.heads, (f, self.down(f))):
            y = head(feat)
            out.append({"center": y[:, :1], "offsets": y[:, 1:]})
        return out


def build_model(cfg):
    return Net(get_schema(cfg["schema"]).num_keypoints, cfg["model"]["channels"])


def encode(sample, cfg):
    """Per level l: center@l (1, h, w), offsets@l (2K, h, w) = joint - cell centre around each centre."""
    keep = sample.annotated
    kp = sample.keypoints[keep]
    vis = kp[..., 2] > 0
    centres = np.array([kp[p, vis[p], :2].mean(0) for p in range(len(kp))]).reshape(-1, 2)
    out = {}
    for level, s in enumerate(STRIDES):
        h, w = sample.height // s, sample.width // s
        pts = np.concatenate([centres, np.full((len(centres), 1), 2.0)], 1)[:, None].astype(np.float32)
        out[f"center@{level}"] = encode_heatmaps(pts, (h, w), s, sigma=s).astype(np.float32)
        off = np.zeros((len(vis[0]) if len(kp) else kp.shape[1], 2, h, w), np.float32)
        for p, c in enumerate(centres):
            gx, gy = (int(np.clip(round((v - (s - 1) / 2) / s), 0, n - 1)) for v, n in zip(c, (w, h)))
            for y in range(max(gy - 1, 0), min(gy + 2, h)):
                for x in range(max(gx - 1, 0), min(gx + 2, w)):
                    off[:, :, y, x] = kp[p, :, :2] - (np.array([x, y]) * s + (s - 1) / 2)
        out[f"offsets@{level}"] = off.reshape(-1, h, w)
    return out


def final_outputs(outputs):
    """The levels' maps gathered into one dict, named as encode names the targets: center@l, offsets@l."""
    return {f"{name}@{l}": maps for l, level in enumerate(outputs) for name, maps in level.items()}


def _levels(outputs):
    """One image's outputs (or the oracle's encoded targets) regrouped per level."""
    return [{"center": outputs[f"center@{l}"], "offsets": outputs[f"offsets@{l}"]} for l in range(len(STRIDES))]


def loss(outputs, batch, cfg):
    return {f"level{l}": ((o["center"] - batch[f"center@{l}"]) ** 2).mean()
            + 0.01 * (o["offsets"] - batch[f"offsets@{l}"]).abs().mean() for l, o in enumerate(outputs)}


def decode(outputs, cfg):
    """Candidates of every level: each centre-map local maximum above the threshold, joints from its offsets."""
    poses, scores = [], []
    for level, o in enumerate(_levels(outputs)):
        s = STRIDES[level]
        c = o["center"].float()[0]
        peak = (c == torch.nn.functional.max_pool2d(c[None], 3, 1, 1)[0]) & (c > cfg["decode"]["threshold"])
        for y, x in zip(*np.nonzero(peak.numpy())):
            off = o["offsets"].float()[:, y, x].numpy().reshape(-1, 2)
            xy = off + (np.array([x, y]) * s + (s - 1) / 2)
            poses.append(np.concatenate([xy, np.full((len(xy), 1), float(c[y, x]))], 1))
            scores.append(float(c[y, x]))
    k = get_schema(cfg["schema"]).num_keypoints
    return np.array(poses).reshape(-1, k, 3), np.array(scores)


def per_image(poses, scores, views, cfg):
    """Pose NMS over the candidates of all levels."""
    p, s = np.concatenate(poses), np.concatenate(scores)
    keep = oks_nms(p, s, np.asarray(get_schema(cfg["schema"]).sigmas), 0.5)
    return p[keep], s[keep]
'''


def write_method(root, yaml_text, py_text):
    root.mkdir(parents=True)
    (root / "method.yaml").write_text(textwrap.dedent(yaml_text))
    (root / "method.py").write_text(py_text)
    return resolve_method(root)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("paradigms")
    mp = pytest.MonkeyPatch()
    mp.setenv("POSEHARNESS_DATA", str(root / "data"))
    synthetic.generate(load_manifest("synthetic-coco"), size="tiny", jobs=1, progress=False)
    mp.undo()
    return root / "data"


@pytest.fixture
def env(data, tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(data))
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "results"))
    return tmp_path


def jittered_detections(manifest, path, seed=0):
    """The annotated persons' GT boxes moved and resized by up to 5 %, with distinct scores in [0.3, 1)."""
    gt = json.loads(manifest.annotation_path("val", "tiny").read_text())
    rng = np.random.default_rng(seed)
    dets = []
    for a in gt["annotations"]:
        if a.get("iscrowd") or not a.get("num_keypoints"):
            continue
        x, y, w, h = a["bbox"]
        jx, jy, jw, jh = rng.uniform(-0.05, 0.05, 4)
        dets.append({"image_id": a["image_id"], "category_id": 1, "score": float(rng.uniform(0.3, 1.0)),
                     "bbox": [x + jx * w, y + jy * h, w * (1 + jw), h * (1 + jh)]})
    path.write_text(json.dumps(dets))
    return dets


def assert_box_times_keypoint_scores(results_path, dets):
    """Every pose's score is the box score of one of its image's detections × its mean keypoint score > 0.2."""
    by_image = {}
    for d in dets:
        by_image.setdefault(d["image_id"], []).append(d["score"])
    results = json.loads(results_path.read_text())
    assert results
    for r in results:
        c = np.array(r["keypoints"]).reshape(-1, 3)[:, 2]
        mean = c[c > 0.2].mean() if (c > 0.2).any() else 0.0
        assert any(np.isclose(r["score"], s * mean, rtol=1e-9, atol=1e-12) for s in by_image[r["image_id"]])
    assert len({round(r["score"], 9) for r in results}) > 1


def test_top_down_method_through_oracle_train_and_predict(env):
    spec = write_method(env / "methods" / "toy_td", TOP_DOWN_YAML, TOP_DOWN_PY)
    manifest = load_manifest("synthetic-coco")
    (gt_row,) = run_oracle(spec, manifest, "val", scale="tiny", size="tiny", progress=False)
    assert gt_row["metrics"]["AP"] > 0.5 and gt_row["persons"] > 0
    assert json.loads(gt_row["record"].read_text())["config"]["boxes"] == "ground-truth"

    dets = jittered_detections(manifest, env / "dets.json")
    (det_row,) = run_oracle(spec, manifest, "val", scale="tiny", size="tiny", progress=False, write=False,
                            detections=env / "dets.json")
    pred_path = env / "results" / "predictions" / "oracle" / "synthetic-coco" / "val" / "toy_td" / "plain" / \
        "tiny-seed0.json"
    assert_box_times_keypoint_scores(pred_path, dets)
    assert 0 < det_row["metrics"]["AP"] <= gt_row["metrics"]["AP"] + 0.05

    run = train(spec, "base", manifest, "tiny", size="tiny", steps=2, out=env / "run", progress=False,
                device="cpu", log=lambda *_: None)
    out = predict(run.checkpoint, "plain", manifest, "val", progress=False, device="cpu", batch=5)
    assert out["config"]["predict"] == {"view": "top-down", "input": [48, 64], "flip": False, "boxes": "ground-truth"}
    assert out["images"] == 12 and out["record"] is not None
    out = predict(run.checkpoint, "plain", manifest, "val", progress=False, device="cpu", write=False,
                  detections=env / "dets.json", out=env / "det_pred.json")
    assert out["config"]["predict"]["boxes"]["path"] == str((env / "dets.json").resolve())
    assert_box_times_keypoint_scores(env / "det_pred.json", dets)


def test_single_stage_method_through_oracle_train_and_predict(env):
    spec = write_method(env / "methods" / "toy_ss", SINGLE_STAGE_YAML, SINGLE_STAGE_PY)
    manifest = load_manifest("synthetic-coco")
    gt = json.loads(manifest.annotation_path("val", "tiny").read_text())
    annotated = sum(1 for a in gt["annotations"] if not a.get("iscrowd") and a.get("num_keypoints"))
    (row,) = run_oracle(spec, manifest, "val", scale="tiny", size="tiny", progress=False)
    # Both levels find every person; the per-image pose NMS keeps about one pose each.
    assert row["metrics"]["AP"] > 0.3 and 0 < row["persons"] <= annotated * 1.2

    run = train(spec, "base", manifest, "tiny", size="tiny", steps=2, out=env / "run", progress=False,
                device="cpu", log=lambda *_: None)
    out = predict(run.checkpoint, "plain", manifest, "val", progress=False, device="cpu", flip=False,
                  write=False, out=env / "pred.json")
    assert out["config"]["predict"]["view"] == "bottom-up" and out["images"] == 12
    assert os.path.exists(env / "pred.json")
