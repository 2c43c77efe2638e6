"""KCAM (Wu, Wang, Guo, Liu, "Keypoint Context Aggregation for Human Pose Estimation"; paper text:
``shared/papers/kcam-keypoint-context-aggregation.txt``; facts: ``shared/design/methods.md`` §5): SimpleBaseline's
top-down network with the Keypoint Context Aggregation Module between its last feature map and its heatmaps.

Everything but the head and the loss is the top-down base's: the crops, box sources and per-image step of the core
(:mod:`poseharness.views`, :mod:`poseharness.pipeline`), the heatmap codec (:mod:`poseharness.codecs.top_down`:
Gaussian targets with per-joint target weights, argmax + quarter shift or DARK, the flip test), and the backbone
(``methods/simple_baseline/model.py``, see :mod:`.model`). The soft-area targets are the same Gaussian maps as the
final ones [P §3.1], so ``encode`` makes one set. The module: :mod:`.kcam_module`; the loss alpha · L_inter +
L_output: :mod:`.loss`. Settings: ``settings.schema.yaml``; values, sources and the [D] choices: ``method.yaml``.
"""
from __future__ import annotations

import numpy as np

from poseharness.contract import method_module, resolve_method
from poseharness.schemas import get_schema

from .loss import kcam_loss
from .model import HRNET_STRIDE, HRNETS, KCAMPoseNet

paradigm = "top-down"

#: SimpleBaseline's method module: its flip merge is KCAM's (it fuses ``heatmaps``; ``areas`` pass through).
base = method_module(resolve_method("simple_baseline"))
merge_flip = base.merge_flip


def output_stride(cfg: dict) -> int:
    """Input pixels per heatmap cell: SimpleBaseline's (32 halved by each deconvolution: 4 with three), or 4 on
    an HRNet's high-resolution branch."""
    if cfg["model"]["backbone"] in HRNETS:
        return HRNET_STRIDE
    return base.output_stride(cfg)


def build_model(cfg: dict) -> KCAMPoseNet:
    m, k = cfg["model"], cfg["model"]["kcam"]
    head = {"context": k["context"], "fusion": k["fusion"], "area_norm": k["area_norm"],
            "area_scale": k["area_scale"], "key_channels": k["key_channels"],
            "value_channels": k["value_channels"], "out_channels": k["out_channels"]}
    num_joints = get_schema(cfg["schema"]).num_keypoints
    if m["backbone"] in HRNETS:
        return KCAMPoseNet(num_joints, head, backbone=m["backbone"], init_std=m["init_std"],
                           pretrained=m["pretrained"])
    d = m["deconv"]
    return KCAMPoseNet(num_joints, head, backbone=m["backbone"], depth=m["depth"], width=m["width"],
                       deconv_layers=d["layers"], deconv_filters=d["filters"], deconv_kernel=d["kernel"],
                       init_std=m["init_std"], pretrained=m["pretrained"])


def encode(sample, cfg: dict) -> dict:
    """Targets of one crop, SimpleBaseline's (``crop_targets``): ``heatmaps`` (the targets of both the soft areas
    and the final maps) and ``target_weight``."""
    return base.crop_targets(sample, cfg, output_stride(cfg))


def loss(outputs: dict, batch: dict, cfg: dict) -> dict:
    """``heatmap`` = L_output and ``inter`` = alpha · L_inter (absent at alpha 0), each HRNet's JointsMSE."""
    return kcam_loss(outputs, batch, alpha=cfg["loss"]["alpha"], use_target_weight=cfg["loss"]["target_weight"])


def decode(outputs: dict, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """One pose per crop from the final ``heatmaps`` (the soft areas are not decoded), SimpleBaseline's
    ``crop_pose``."""
    return base.crop_pose(outputs, cfg, output_stride(cfg))
