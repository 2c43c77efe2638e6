"""SimpleBaseline (Xiao, Wu, Wei, "Simple Baselines for Human Pose Estimation and Tracking", ECCV 2018): the
top-down baseline — one crop per person box, a ResNet with three deconvolutions, one heatmap per joint.

The representation is the core's top-down heatmap codec (:mod:`poseharness.codecs.top_down`): Gaussian targets
(σ 2 cells) with per-joint target weights, the target-weighted MSE, argmax with the quarter-cell shift (or DARK),
and the flip test. The crops, the box sources and the per-image step (pose score = box score × mean keypoint
score above 0.2, OKS-NMS 0.9) are the core's too (:mod:`poseharness.views`, :mod:`poseharness.pipeline`).
Settings: ``settings.schema.yaml``; values and sources: ``method.yaml``.
"""
from __future__ import annotations

import numpy as np
import torch

from poseharness.codecs.top_down import (decode_heatmaps, encode_crop_heatmaps, joints_mse,
                                         merge_flip_heatmaps)
from poseharness.errors import HarnessError
from poseharness.schemas import get_schema

from .model import TRUNK_STRIDE, PoseResNet, load_imagenet

paradigm = "top-down"


def output_stride(cfg: dict) -> int:
    """Input pixels per heatmap cell: the trunk's 32 halved by each deconvolution (4 with three)."""
    layers = cfg["model"]["deconv"]["layers"]
    if not 0 <= layers <= 5:
        raise HarnessError(f"config of {cfg.get('method')!r}: field model.deconv.layers: 0 to 5 deconvolutions "
                           f"(the trunk's stride is {TRUNK_STRIDE}), got {layers!r}")
    return TRUNK_STRIDE >> layers


def build_model(cfg: dict) -> PoseResNet:
    m = cfg["model"]
    net = PoseResNet(get_schema(cfg["schema"]).num_keypoints, depth=m["depth"], width=m["width"],
                     deconv_layers=m["deconv"]["layers"], deconv_filters=m["deconv"]["filters"],
                     deconv_kernel=m["deconv"]["kernel"], final_kernel=m["final_kernel"], init_std=m["init_std"])
    if m["pretrained"]:
        load_imagenet(net.backbone, m["depth"], m["width"])
    return net


def encode(sample, cfg: dict) -> dict:
    """Targets of one crop (the loader's top-down item, or the oracle's view): :func:`crop_targets` at this
    network's output stride."""
    return crop_targets(sample, cfg, output_stride(cfg))


def crop_targets(sample, cfg: dict, stride: int) -> dict:
    """``heatmaps`` (K, H/stride, W/stride) float32 and ``target_weight`` (K,) float32 of one crop (all ones when
    ``loss.target_weight`` is false, as HRNet without ``USE_TARGET_WEIGHT``); shared with the methods built on
    this one (kcam)."""
    if sample.height % TRUNK_STRIDE or sample.width % TRUNK_STRIDE:
        raise HarnessError(f"config of {cfg.get('method')!r}: field scale.input: {sample.width}x{sample.height} "
                           f"is not a multiple of {TRUNK_STRIDE} (the backbone's stride) on both sides")
    e = cfg["encoding"]
    maps, weights = encode_crop_heatmaps(sample.keypoints, (sample.height // stride, sample.width // stride),
                                         stride, sigma=e["sigma"], unbiased=e["unbiased"])
    if not cfg["loss"]["target_weight"]:
        weights = np.ones_like(weights)
    return {"heatmaps": maps, "target_weight": weights}


def loss(outputs: dict, batch: dict, cfg: dict) -> dict:
    """The one term [R: JointsMSELoss]: ``heatmap`` = 0.5 · mean((w·(p − g))²)."""
    return {"heatmap": joints_mse(outputs["heatmaps"], batch["heatmaps"], batch["target_weight"])}


def decode(outputs: dict, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """One pose per crop: :func:`crop_pose` at this network's output stride."""
    return crop_pose(outputs, cfg, output_stride(cfg))


def crop_pose(outputs: dict, cfg: dict, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """One pose per crop from its ``heatmaps``: (1, K, 3) [x, y, peak value] in the crop's input pixels, and its
    score (the mean peak; the per-image step replaces it by box score × mean of the peaks above 0.2)."""
    d = cfg["decode"]
    pose = decode_heatmaps(outputs["heatmaps"], stride, refine=d["refine"], dark_kernel=d["dark_kernel"]).cpu().numpy()
    return pose[None], np.array([float(pose[:, 2].mean())])


def merge_flip(outputs: dict, flipped_outputs: dict, cfg: dict) -> dict:
    """The flip test for one crop: the mean of its maps and its mirror's maps brought back, moved
    ``decode.flip_shift`` cells (HRNet: 1; 0 here, where the mirror is exact: see method.yaml)."""
    merged = merge_flip_heatmaps(torch.as_tensor(outputs["heatmaps"]), torch.as_tensor(flipped_outputs["heatmaps"]),
                                 get_schema(cfg["schema"]).flip_index, cfg["decode"]["flip_shift"])
    return {**outputs, "heatmaps": merged}
