"""PoseDet's network: backbone -> FPN -> one head shared over the levels [P, R: PoseDet_head.py].

Head per level (C channels, GroupNorm after every 3x3 conv) [R]:
- coarse (bypass): 3 x (3x3 conv, GN, ReLU) -> 1x1 conv -> 2K' offsets (dy, dx per point, stride units), times
  ``offset_scale`` (1 [R]; larger at the CPU scale so that a few hundred Adam steps reach limb-length offsets [D]);
- pose embedding: a 1 x K' deformable convolution whose tap j samples coarse point j (:class:`PoseEmbedding`);
- refine: 2 x (3x3, GN, ReLU) -> pose embedding -> ReLU -> 1x1 -> 2K'; output = that + detached coarse [R];
- classification: 2 x (3x3, GN, ReLU) -> pose embedding -> ReLU -> 1x1 -> 1 logit, bias prior 0.01 [R];
- heatmap (intermediate supervision, training only in the paper, and here: skipped in eval mode): 3x3 conv, GN,
  ReLU -> 1x1 -> K' logits [P, D: shared over the levels, bias prior 0.1 as CenterNet's].

Outputs: a list with one dict per level: ``coarse`` (B, 2K', h, w), ``refine`` (B, 2K', h, w) (= coarse when the
refinement branch is off, Table 4), ``cls`` (B, 1, h, w) logits, ``heatmap`` (B, K', h, w) logits in training mode
only: in eval mode the heatmap branch is not run (the paper's intermediate supervision is training-only [P], so
inference costs what the paper's does), and the method declares it (``training_only_heads`` in method.py) so that
the predictor's head-layout check does not expect it.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from poseharness.errors import HarnessError


# ----------------------------------------------------------------------------------------------------------
# Pose embedding: the 1 x K deformable convolution at the coarse points
# ----------------------------------------------------------------------------------------------------------

def base_grid(k: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(2K,) the kernel's own sampling grid (dy, dx) per tap: (0, j - K // 2)."""
    g = torch.zeros(k, 2, device=device, dtype=dtype)
    g[:, 1] = torch.arange(k, device=device, dtype=dtype) - k // 2
    return g.reshape(-1)


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x in the forward pass; its gradient multiplied by ``factor`` in the backward pass."""
    return x * factor + x.detach() * (1.0 - factor)


def deform_conv_grid_sample(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor | None) -> torch.Tensor:
    """``torchvision.ops.deform_conv2d`` for a 1 x K kernel, stride 1, padding (0, K // 2), one offset group,
    written with ``grid_sample`` (bilinear, zeros outside, as the DCN's sampling): much faster on the CPU.
    Equal outputs and gradients are tested (tests/test_posedet_model.py)."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    off = offset.reshape(b, k, 2, h, w)
    ys = torch.arange(h, device=x.device, dtype=x.dtype)[:, None]
    xs = torch.arange(w, device=x.device, dtype=x.dtype)[None, :]
    taps = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    py = ys[None, None] + off[:, :, 0]                                     # (B, K, H, W)
    px = xs[None, None] + taps[None, :, None, None] + off[:, :, 1]
    gx = px * (2.0 / max(w - 1, 1)) - 1.0
    gy = py * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], -1).permute(0, 2, 3, 1, 4).reshape(b, h, w * k, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    sampled = sampled.reshape(b, c, h, w, k)
    out = torch.einsum("bchwk,ock->bohw", sampled, weight[:, :, 0, :])
    return out if bias is None else out + bias[None, :, None, None]


class PoseEmbedding(nn.Module):
    """A 1 x K deformable convolution whose tap j reads the feature at coarse point j [R: PoseDet_head.py]:
    DCN offsets = coarse offsets (stride units = map px) - :func:`base_grid`, the gradient into the coarse
    offsets scaled by ``grad_scale`` (0.1 [R]). ``impl``: "torchvision" (``deform_conv2d``) or "grid_sample"."""

    def __init__(self, channels_in: int, channels_out: int, k: int, grad_scale: float = 0.1,
                 impl: str = "torchvision"):
        super().__init__()
        if k % 2 == 0:
            raise HarnessError(f"the pose embedding needs an odd number of points, got {k}")
        self.k, self.grad_scale, self.impl = k, grad_scale, impl
        self.weight = nn.Parameter(torch.empty(channels_out, channels_in, 1, k))
        self.bias = nn.Parameter(torch.zeros(channels_out))
        nn.init.normal_(self.weight, std=0.01)

    def offsets(self, coarse: torch.Tensor) -> torch.Tensor:
        c = scale_gradient(coarse, self.grad_scale)
        return c - base_grid(self.k, coarse.device, coarse.dtype)[None, :, None, None]

    def forward(self, x: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        off = self.offsets(coarse)
        if self.impl == "grid_sample" and min(x.shape[-2:]) > 1:
            return deform_conv_grid_sample(x, off, self.weight, self.bias)
        return torchvision.ops.deform_conv2d(x, off, self.weight, self.bias, padding=(0, self.k // 2))


# ----------------------------------------------------------------------------------------------------------
# Backbones
# ----------------------------------------------------------------------------------------------------------

def gn(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def conv_gn(cin: int, cout: int, groups: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), gn(cout, groups), nn.ReLU(inplace=True))


class TinyBackbone(nn.Module):
    """The CPU scale's backbone [D]: a stride-2 stem, then per stage a stride-2 3x3 conv and ``blocks`` residual
    3x3 convs, GroupNorm; returns the stages of strides ``strides`` (8, 16, 32)."""

    def __init__(self, channels: list[int], strides: list[int], groups: int, blocks: int = 1):
        super().__init__()
        self.stem = conv_gn(3, channels[0], groups, 2)
        self.stages = nn.ModuleList()
        cin = channels[0]
        for c in channels[1:]:
            layers = [conv_gn(cin, c, groups, 2)] + [conv_gn(c, c, groups) for _ in range(blocks)]
            self.stages.append(nn.Sequential(*layers))
            cin = c
        self.out_strides = [2 * 2 ** (i + 1) for i in range(len(channels) - 1)]
        self.keep = [self.out_strides.index(s) for s in strides]
        self.out_channels = [channels[1:][i] for i in self.keep]

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return [feats[i] for i in self.keep]


class TimmBackbone(nn.Module):
    """Paper scales: DLA-34 / HRNet-W32 / W48 through ``timm`` (``features_only``), randomly initialised unless a
    user has the weights (``pretrained``) [P: ImageNet-pretrained]."""

    def __init__(self, name: str, strides: list[int], pretrained: bool = False):
        super().__init__()
        try:
            import timm
        except ImportError as exc:
            raise HarnessError(f"backbone {name!r} needs the timm package (pip install timm)") from exc
        self.net = timm.create_model(name, features_only=True, pretrained=pretrained)
        reductions = self.net.feature_info.reduction()
        lacking = [s for s in strides if s not in reductions]
        if lacking:
            raise HarnessError(f"encoding.strides: {lacking[0]} is not a feature stride of {name!r} (it has "
                               f"{', '.join(map(str, reductions))})")
        self.keep = [reductions.index(s) for s in strides]
        self.out_channels = [self.net.feature_info.channels()[i] for i in self.keep]

    def forward(self, x):
        feats = self.net(x)
        return [feats[i] for i in self.keep]


# ----------------------------------------------------------------------------------------------------------
# Head and network
# ----------------------------------------------------------------------------------------------------------

class Head(nn.Module):
    def __init__(self, c: int, k: int, groups: int, convs: dict, refine: bool, heatmap: bool, prior: float,
                 grad_scale: float, impl: str, offset_scale: float = 1.0):
        super().__init__()
        self.k, self.refine_on, self.heatmap_on, self.offset_scale = k, refine, heatmap, offset_scale
        self.coarse_convs = nn.Sequential(*[conv_gn(c, c, groups) for _ in range(convs["coarse"])])
        self.coarse_out = nn.Conv2d(c, 2 * k, 1)
        self.cls_convs = nn.Sequential(*[conv_gn(c, c, groups) for _ in range(convs["cls"])])
        self.cls_embed = PoseEmbedding(c, c, k, grad_scale, impl)
        self.cls_out = nn.Conv2d(c, 1, 1)
        if refine:
            self.refine_convs = nn.Sequential(*[conv_gn(c, c, groups) for _ in range(convs["refine"])])
            self.refine_embed = PoseEmbedding(c, c, k, grad_scale, impl)
            self.refine_out = nn.Conv2d(c, 2 * k, 1)
            nn.init.normal_(self.refine_out.weight, std=0.01)
            nn.init.zeros_(self.refine_out.bias)
        if heatmap:
            self.heatmap_convs = nn.Sequential(*[conv_gn(c, c, groups) for _ in range(convs["heatmap"])])
            self.heatmap_out = nn.Conv2d(c, k, 1)
            nn.init.constant_(self.heatmap_out.bias, -math.log((1 - 0.1) / 0.1))
        nn.init.normal_(self.coarse_out.weight, std=0.01)
        nn.init.zeros_(self.coarse_out.bias)
        nn.init.normal_(self.cls_out.weight, std=0.01)
        nn.init.constant_(self.cls_out.bias, -math.log((1 - prior) / prior))

    def forward(self, f):
        coarse = self.coarse_out(self.coarse_convs(f)) * self.offset_scale
        cls = self.cls_out(F.relu(self.cls_embed(self.cls_convs(f), coarse)))
        if self.refine_on:
            delta = self.refine_out(F.relu(self.refine_embed(self.refine_convs(f), coarse))) * self.offset_scale
            refine = delta + coarse.detach()
        else:
            refine = coarse
        out = {"coarse": coarse, "refine": refine, "cls": cls}
        if self.heatmap_on and self.training:           # intermediate supervision: training only [P]
            out["heatmap"] = self.heatmap_out(self.heatmap_convs(f))
        return out


class PoseDetNet(nn.Module):
    def __init__(self, cfg: dict, k: int):
        super().__init__()
        m = cfg["model"]
        strides = list(cfg["encoding"]["strides"])
        pretrained = bool(m.get("pretrained", False))
        if m["backbone"] == "tiny":
            self.backbone = TinyBackbone(m["channels"], strides, m["gn_groups"], m.get("blocks", 1))
        else:
            self.backbone = TimmBackbone(m["backbone"], strides, pretrained)
        c = m["fpn_channels"]
        self.fpn = torchvision.ops.FeaturePyramidNetwork(self.backbone.out_channels, c)
        self.head = Head(c, k, m["gn_groups"], m["convs"], m["refine"], m["heatmap"], m["cls_prior"],
                         m["grad_scale"], m["deform"], m["offset_scale"])

    def forward(self, x):
        feats = self.backbone(x)
        pyramid = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))
        return [self.head(f) for f in pyramid.values()]
