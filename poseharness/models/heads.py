"""Prediction heads on top of a multi-stack backbone, and the model that joins them.

A head maps one stack's features (B, C, h, w) to one named output (B, n, h, w). Two forms:
- ``hidden=0``: one 1×1 conv — GOG's heads ("we only add 1×1 convolutional layers", paper §2.5;
  [R: OffsetGuided models/heads.py]);
- ``hidden>0``: 3×3 conv (bias) -> ReLU -> 1×1 conv, CenterNet's heads (its ``head_conv`` = 256).

Every stack gets its own heads (intermediate supervision: each stack's outputs are supervised), as in
CenterNet and GOG. Heads have no output activation unless a method adds one: GOG regresses its Gaussian
heatmaps and pixel offsets directly.

Initial outputs: the last layer's bias is set per output (``bias``): 0 for a linear heatmap head, whose
target is 0 almost everywhere, -2.19 = logit(0.1) for a sigmoid one (CenterNet). With PyTorch's default
weights a linear head starts at about ±0.3 on every cell, a background response that a focal loss (which
down-weights near-zero errors) is slow to remove; ``init_std`` draws the last layer's weights from
N(0, init_std²) instead (Simple Pose initialises its convs with N(0, 0.001²)), so outputs start at the bias.
``scale`` multiplies an output: it lets a linear head regress values of tens of pixels without needing
weights that Adam's per-step updates of about ``lr`` take thousands of steps to grow.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn


class Scaled(nn.Module):
    """``factor · module(x)``."""

    def __init__(self, module: nn.Module, factor: float):
        super().__init__()
        self.module = module
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x) * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def conv_head(in_channels: int, out_channels: int, hidden: int = 0, bias: float | None = None,
              scale: float = 1.0, init_std: float | None = None) -> nn.Module:
    """One head: 1×1 conv (``hidden=0``) or 3×3 conv -> ReLU -> 1×1 conv (``hidden`` channels).

    bias:     initial bias of the last conv (None = PyTorch's default init);
    scale:    constant factor on the output;
    init_std: the last conv's weights ~ N(0, init_std²) (None = PyTorch's default init). See the module docstring.
    """
    if hidden:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(hidden, out_channels, 1)]
    else:
        layers = [nn.Conv2d(in_channels, out_channels, 1)]
    if bias is not None:
        nn.init.constant_(layers[-1].bias, float(bias))
    if init_std is not None:
        nn.init.normal_(layers[-1].weight, std=float(init_std))
    head: nn.Module = nn.Sequential(*layers)
    return head if scale == 1.0 else Scaled(head, scale)


class StackHeads(nn.Module):
    """Named heads for every stack: ``forward(features: list[(B, C, h, w)]) -> list[dict[name, (B, n, h, w)]]``.

    outputs: name -> channel count, e.g. ``{"heatmaps": 17, "offsets": 38, "refine": 2}``;
    bias, scale: per-name settings for :func:`conv_head` (names absent get None / 1);
    hidden, init_std: settings of every head (:func:`conv_head`).
    """

    def __init__(self, in_channels: int, outputs: Mapping[str, int], stacks: int, hidden: int = 0,
                 bias: Mapping[str, float] | None = None, scale: Mapping[str, float] | None = None,
                 init_std: float | None = None):
        super().__init__()
        bias, scale = dict(bias or {}), dict(scale or {})
        unknown = sorted((set(bias) | set(scale)) - set(outputs))
        if unknown:
            raise ValueError(f"head settings name outputs that do not exist: {unknown} (outputs: {list(outputs)})")
        self.names = tuple(outputs)
        self.stacks = nn.ModuleList([
            nn.ModuleDict({name: conv_head(in_channels, int(n), hidden, bias.get(name), scale.get(name, 1.0),
                                           init_std)
                           for name, n in outputs.items()})
            for _ in range(stacks)])

    def forward(self, features: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        if len(features) != len(self.stacks):
            raise ValueError(f"{len(features)} feature maps for {len(self.stacks)} stacks of heads")
        return [{name: heads[name](x) for name in self.names} for heads, x in zip(self.stacks, features)]


class StackedPoseNet(nn.Module):
    """Backbone (images -> list of per-stack features) + :class:`StackHeads`.

    forward(images (B, 3, S, S)) -> list of dicts, one per stack, each ``name -> (B, n, S/R, S/R)``; the last
    dict is the final prediction, the others exist for intermediate supervision.
    """

    def __init__(self, backbone: nn.Module, heads: StackHeads):
        super().__init__()
        self.backbone = backbone
        self.heads = heads

    @property
    def stride(self) -> int:
        return int(self.backbone.stride)

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return self.heads(self.backbone(images))
