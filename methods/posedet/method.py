"""PoseDet (Tian et al., IJCAI 2021): single-stage pose detection with a keypoint-aware pose embedding.

Every FPN location is a pose candidate (coarse offsets -> pose embedding at the coarse points -> refined offsets
and a class score); one pose NMS (OKS, PoseDet's form) removes duplicates, no grouping. Facts and sources:
method.yaml and shared/design/methods.md §3.

Outputs and targets share their names, one set per FPN level l (``final_outputs`` gathers the model's per-level
list into one dict), so ``decode(encode(ground truth))`` is the oracle:

- ``coarse@l``, ``refine@l`` (2K', h, w): offsets (dy, dx per point) in stride units; the targets hold the exact
  offsets at each person's assigned candidate (zeros elsewhere);
- ``cls@l`` (1, h, w): classification logits; the target is ``encoding.oracle_logit`` at the assigned candidates
  and minus it elsewhere (the loss does not read it: its classification targets are the OKS of the predicted
  coarse poses, computed in :mod:`losses` from the per-person ground truth of the default collation);
- ``heatmap@l`` (K', h, w): intermediate-supervision logits; targets Gaussians (sigma 2 map px at int(x / s));
- targets only: ``vis@l`` (K', h, w) the labelled points at the assigned candidates, ``hmask@l`` (1, h, w) the
  heatmap loss's mask (0 under the ignore mask).

Training ``figure3`` (``encoding.candidates: gt``, oracle only): ``encode`` passes the annotated persons' poses
as ``gt_poses`` and ``decode`` returns them all with score 1 (Figure 3: ground truth through each NMS).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from poseharness.data.sample import Sample
from poseharness.posenms import PoseNMSSetting, joint_extent_areas, pose_nms
from poseharness.schemas import get_schema

from .assignment import assign, num_points, with_extra_point
from .losses import offsets_to_points, posedet_loss
from .model import PoseDetNet

paradigm = "single-stage"

#: Heads the model computes in training only (the intermediate supervision [P]): in eval mode PoseDetNet skips
#: them, and the predictor's head-layout check leaves ``heatmap@l`` out (:func:`poseharness.train.training_only_heads`).
training_only_heads = ("heatmap",)


def build_model(cfg: dict) -> torch.nn.Module:
    return PoseDetNet(cfg, num_points(cfg["schema"]))


def level_shapes(height: int, width: int, strides) -> list[tuple[int, int]]:
    """(h, w) of each level's map for an input of height x width (stride-2 3x3 convs: ceil)."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


def _gaussians(maps: np.ndarray, points: np.ndarray, stride: int, sigma: float) -> None:
    """Max-splat Gaussians (sigma in map px) centred at int(x / s), int(y / s) of each labelled point into maps
    (K', h, w) [R: pipelines/gaussian_map.py, AE-style integer centre]."""
    kk, h, w = maps.shape
    r = int(math.ceil(3 * sigma))
    for p in points:
        for j in range(kk):
            if p[j, 2] <= 0:
                continue
            cx, cy = int(p[j, 0] / stride), int(p[j, 1] / stride)
            if not (0 <= cx < w and 0 <= cy < h):
                continue
            x0, x1, y0, y1 = max(cx - r, 0), min(cx + r + 1, w), max(cy - r, 0), min(cy + r + 1, h)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
            np.maximum(maps[j, y0:y1, x0:x1], g, out=maps[j, y0:y1, x0:x1])


def encode(sample: Sample, cfg: dict) -> dict[str, np.ndarray]:
    enc = cfg["encoding"]
    schema = cfg["schema"]
    k = get_schema(schema).num_keypoints
    annotated = sample.annotated
    if enc["candidates"] == "gt":
        return {"gt_poses": np.asarray(sample.keypoints[annotated], np.float32).reshape(-1, k, 3)}
    strides = list(enc["strides"])
    kp = with_extra_point(sample.keypoints, schema)
    kk = kp.shape[1]
    shapes = level_shapes(sample.height, sample.width, strides)
    a = assign(kp, sample.boxes, annotated, k, strides, shapes, enc["centroid"])
    out = {}
    ignore = sample.ignore_mask
    for l, (s, (h, w)) in enumerate(zip(strides, shapes)):
        off = np.zeros((kk, 2, h, w), np.float32)
        vis = np.zeros((kk, h, w), np.float32)
        cls = np.full((1, h, w), -enc["oracle_logit"], np.float32)
        for n in np.flatnonzero(a.won & (a.level == l)):
            p = a.persons[n]
            i, j = a.cell[n]
            lab = kp[p, :, 2] > 0
            off[:, 0, i, j] = np.where(lab, (kp[p, :, 1] - i * s) / s, 0.0)
            off[:, 1, i, j] = np.where(lab, (kp[p, :, 0] - j * s) / s, 0.0)
            vis[:, i, j] = lab
            cls[0, i, j] = enc["oracle_logit"]
        heat = np.zeros((kk, h, w), np.float32)
        _gaussians(heat, kp[annotated], s, enc["heatmap_sigma"])
        hmask = np.ones((1, h, w), np.float32)
        if ignore is not None and ignore.any():
            pad = np.zeros((h * s, w * s), bool)
            pad[:ignore.shape[0], :ignore.shape[1]] = ignore[:h * s, :w * s]
            hmask[0] = ~pad.reshape(h, s, w, s).any(axis=(1, 3))
        out[f"coarse@{l}"] = off.reshape(2 * kk, h, w)
        out[f"refine@{l}"] = off.reshape(2 * kk, h, w).copy()
        out[f"cls@{l}"] = cls
        out[f"heatmap@{l}"] = heat
        out[f"vis@{l}"] = vis
        out[f"hmask@{l}"] = hmask
    return out


def final_outputs(outputs) -> dict:
    """The levels' maps gathered into one dict, named as ``encode`` names the targets (``coarse@0``, ...)."""
    if isinstance(outputs, dict):
        return outputs
    return {f"{name}@{l}": maps for l, level in enumerate(outputs) for name, maps in level.items()}


def _levels(outputs, n: int, names=("coarse", "refine", "cls", "heatmap")) -> list[dict]:
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [{name: outputs[f"{name}@{l}"] for name in names if f"{name}@{l}" in outputs} for l in range(n)]


def loss(outputs, batch: dict, cfg: dict) -> dict[str, torch.Tensor]:
    return posedet_loss(_levels(outputs, len(cfg["encoding"]["strides"])), batch, cfg)


def decode(outputs: dict, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Candidates of one view in input px: per level the ``topk`` best class scores above ``score_threshold``, the
    pose from the refined (or coarse) offsets; the extra point dropped; every joint's third column = pose score.
    Pose NMS runs once per image over all levels (and views): :func:`per_image`."""
    d = cfg["decode"]
    k = get_schema(cfg["schema"]).num_keypoints
    nms_settings(cfg)                   # a bad NMS setting fails here, at the first view, not after it
    if cfg["encoding"]["candidates"] == "gt":
        poses = torch.as_tensor(outputs["gt_poses"]).double().numpy().reshape(-1, k, 3)
        return poses, np.ones(len(poses))
    poses, scores = [], []
    for l, s in enumerate(cfg["encoding"]["strides"]):
        score = torch.sigmoid(outputs[f"cls@{l}"].float()).reshape(-1)
        top = torch.topk(score, min(d["topk"], score.numel()))
        keep = top.indices[top.values > d["score_threshold"]]
        if not len(keep):
            continue
        pts = offsets_to_points(outputs[f"{d['use']}@{l}"].float(), s)[keep][:, :k]      # (N, K, 2)
        sc = score[keep]
        poses.append(torch.cat([pts, sc[:, None, None].expand(-1, k, 1)], -1).double().cpu().numpy())
        scores.append(sc.double().cpu().numpy())
    if not poses:
        return np.zeros((0, k, 3)), np.zeros(0)
    return np.concatenate(poses), np.concatenate(scores)


def per_image(poses: list, scores: list, views: list, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """One pose NMS over the candidates of all views of an image (original px) [R: keypoints_nms.py]: OKS-NMS of
    PoseDet's form on joint-extent areas clamped to >= ``min_area`` (32² [R]), or IoU-NMS of the joint-extent
    boxes (Table 5 [D]), or none; then the ``max_poses`` best."""
    schema = get_schema(cfg["schema"])
    k = schema.num_keypoints
    setting, min_area, max_poses = nms_settings(cfg)
    if not poses or not sum(len(p) for p in poses):
        return np.zeros((0, k, 3)), np.zeros(0)
    p = np.concatenate([np.asarray(x, np.float64).reshape(-1, k, 3) for x in poses])
    s = np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in scores])
    areas = np.maximum(joint_extent_areas(p), min_area) if setting.type == "oks" else None
    keep = pose_nms(p, s, setting, np.asarray(schema.sigmas), areas=areas)[:max_poses]
    return p[keep], s[keep]


def nms_settings(cfg: dict) -> tuple[PoseNMSSetting, float, int]:
    """The per-image step's settings: the pose NMS (a null threshold: ``oks_threshold`` of the schema, 0.2 COCO,
    0.3 CrowdPose [R]), the minimum NMS area and the maximum poses per image. HarnessError on a bad setting."""
    d = cfg["decode"]
    nms = dict(d["nms"])
    if nms["type"] != "none" and nms["threshold"] is None:
        nms["threshold"] = d["oks_threshold"][cfg["schema"]]
    return PoseNMSSetting.from_dict(nms), float(d["min_area"]), int(d["max_poses"])
