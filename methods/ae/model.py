"""Associative Embedding's network and loss (Newell, Huang, Deng, NIPS 2017).

Network: a stacked hourglass with 1×1 heads per stack: ``heatmaps`` (K), ``tags`` (K: one scalar tag map per joint
type) and ``features`` (2K channels no loss supervises) [R: ``models/posenet.py``, channels 0-16, 17-33 and 34-67 of
the 68 outputs; the recurrent method reads the last as its "intermediate features", f = 34 per stack]. The
harness's hourglass feeds only features, not predictions, to the next stack [D] (the code adds both), so here the
``features`` head is a fixed random projection of each stack's features.

Loss, per stack, averaged over the batch and the stacks [R: ``task/loss.py``, ``extensions/AE/src/my_lib.c``,
``task/pose.py``: weights push 1e-3, pull 1e-3, detection 1]:

- detection: the squared error of the heatmaps, times the crowd mask, averaged over joints and cells;
- pull: for each person, the mean over its labelled joints of ``(tag − m)²``, ``m`` the mean of its joints' tags
  (each joint's tag read at its cell of its own joint's tag map); averaged over the persons;
- push: ``½ · mean over the person pairs of exp(−(m_i − m_j)²)`` (0 with fewer than two persons).
"""
from __future__ import annotations

import torch

from poseharness.errors import HarnessError
from poseharness.models import StackedPoseNet, StackHeads, hourglass_from_settings
from poseharness.schemas import get_schema


def build_model(cfg: dict) -> StackedPoseNet:
    """``model(images (B, 3, S, S))`` -> one dict per stack: ``heatmaps`` and ``tags``, both (B, K, S/R, S/R), and
    ``features`` (B, 2K, S/R, S/R)."""
    settings = cfg["model"]
    backbone = hourglass_from_settings(settings)
    stride = int(cfg["encoding"]["stride"])
    if backbone.stride != stride:
        raise HarnessError(f"method ae, training {cfg.get('training')!r}: encoding.stride is {stride} but the "
                           f"hourglass's output stride is {backbone.stride}")
    k = get_schema(cfg["schema"]).num_keypoints
    heads = settings.get("heads", {})
    return StackedPoseNet(backbone, StackHeads(backbone.out_channels, {"heatmaps": k, "tags": k, "features": 2 * k},
                                               backbone.stacks,
                                               hidden=int(heads.get("hidden", 0)), bias=heads.get("bias"),
                                               init_std=heads.get("init_std")))


def tag_loss(tags: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Push and pull of each image: (B,) and (B,).

    tags: (B, K, h, w) scalar tag maps; joints: (B, M, K, 2) int64 rows ``[index into K·h·w, labelled]`` per
    person slot and joint type (``labelled`` 0 for a missing joint or an empty slot).
    """
    b = tags.shape[0]
    idx = joints[..., 0].clamp(min=0).reshape(b, -1)
    t = tags.reshape(b, -1).gather(1, idx).reshape(joints.shape[:3])             # (B, M, K)
    on = (joints[..., 1] > 0).to(t.dtype)
    count = on.sum(-1)                                                          # (B, M)
    has = count > 0
    mean = (t * on).sum(-1) / count.clamp(min=1)
    persons = has.sum(-1).to(t.dtype)                                           # (B,)
    pull_each = ((t - mean[..., None]) ** 2 * on).sum(-1) / count.clamp(min=1)
    pull = (pull_each * has).sum(-1) / persons.clamp(min=1)
    pairs = has[:, :, None] & has[:, None, :]
    pairs = pairs & torch.ones_like(pairs[0]).triu(1)[None]
    near = torch.exp(-(mean[:, :, None] - mean[:, None, :]) ** 2) * pairs
    n_pairs = persons * (persons - 1) / 2
    push = 0.5 * near.sum((1, 2)) / n_pairs.clamp(min=1)
    return push, pull


def loss(outputs: list[dict[str, torch.Tensor]], batch: dict[str, torch.Tensor], cfg: dict
         ) -> dict[str, torch.Tensor]:
    """Weighted terms ``detection``, ``push``, ``pull`` (module docstring). batch: heatmaps (B, K, h, w), joints
    (B, M, K, 2), optionally heatmap_mask (B, h, w)."""
    weights = cfg["loss"]
    target = batch["heatmaps"]
    mask = batch.get("heatmap_mask")
    mask = torch.ones_like(target[:, :1]) if mask is None else mask[:, None].to(target)
    terms = {"detection": 0.0, "push": 0.0, "pull": 0.0}
    for out in outputs:
        terms["detection"] = terms["detection"] + (((out["heatmaps"] - target) ** 2) * mask).mean()
        push, pull = tag_loss(out["tags"], batch["joints"])
        terms["push"] = terms["push"] + push.mean()
        terms["pull"] = terms["pull"] + pull.mean()
    return {name: value * float(weights[name]) / len(outputs) for name, value in terms.items()}
