"""Stacked hourglass backbones, from a laptop-sized one to CenterNet's Hourglass-104, from one code path.

The design follows CornerNet / CenterNet's ``exkp`` (the network GOG fine-tunes, [R: OffsetGuided
models/hourglass_104.py], ``methods.md`` §1.3) rather than Newell et al.'s original:

- stem: conv 7×7 / 2 (+BN+ReLU) to ``stem_channels``, then a stride-2 residual block to ``channels[0]``,
  so every stack works at output stride 4;
- each hourglass of order n keeps an ``up`` branch of residual blocks at full resolution and halves the
  resolution with a *stride-2 residual block* (no max-pool), recurses, and comes back with nearest
  upsampling, summed with ``up``;
- residual blocks are the basic kind (two 3×3 convs with BN, 1×1 projection when the shape changes);
- after each hourglass a 3×3 conv (+BN+ReLU) gives the stack's ``out_channels`` features (the heads' input);
  between stacks, ``relu(bn(conv1x1(stack input)) + bn(conv1x1(features)))`` followed by one residual block
  becomes the next stack's input. CenterNet does not feed the first stack's predictions back (unlike the
  original stacked hourglass), and neither do we.

Hourglass-104 = ``StackedHourglass(stacks=2, depth=5, channels=[256, 256, 384, 384, 384, 512],
residuals=[2, 2, 2, 2, 2, 4], stem_channels=128, out_channels=256)``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Input pixels per output cell of every stack.
OUTPUT_STRIDE = 4


class ConvBNReLU(nn.Sequential):
    """k×k conv (no bias, 'same' padding) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Residual(nn.Module):
    """Basic residual block: relu(bn(conv3x3(relu(bn(conv3x3(x))))) + skip(x)); the skip is a 1×1 conv + BN
    when the block changes the channel count or the resolution (``stride`` 2), the identity otherwise."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(out_channels))
        else:
            self.skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.skip(x), inplace=True)


def residuals(in_channels: int, out_channels: int, count: int, stride: int = 1, change_last: bool = False) -> nn.Sequential:
    """``count`` residual blocks; the first (or, with ``change_last``, the last) changes channels/stride."""
    if count < 1:
        raise ValueError(f"a residual stage needs at least one block, got {count}")
    if change_last:
        blocks = [Residual(in_channels, in_channels) for _ in range(count - 1)]
        blocks.append(Residual(in_channels, out_channels, stride))
    else:
        blocks = [Residual(in_channels, out_channels, stride)]
        blocks += [Residual(out_channels, out_channels) for _ in range(count - 1)]
    return nn.Sequential(*blocks)


class Hourglass(nn.Module):
    """One hourglass of order ``len(channels) - 1``.

    channels[i] / blocks[i]: width and residual blocks per resolution level, level 0 = the input's. Level i
    has ``blocks[i]`` blocks in its skip (``up``) branch and on its way down and back up; the innermost
    level is ``blocks[-1]`` blocks at ``channels[-1]``.
    """

    def __init__(self, channels: Sequence[int], blocks: Sequence[int]):
        super().__init__()
        if len(channels) < 2 or len(channels) != len(blocks):
            raise ValueError(f"an hourglass needs >= 2 levels and one block count per level, got "
                             f"channels={list(channels)} blocks={list(blocks)}")
        c0, c1 = channels[0], channels[1]
        self.up = residuals(c0, c0, blocks[0])
        self.down = residuals(c0, c1, blocks[0], stride=2)
        if len(channels) > 2:
            self.inner: nn.Module = Hourglass(channels[1:], blocks[1:])
        else:
            self.inner = residuals(c1, c1, blocks[1])
        self.back = residuals(c1, c0, blocks[0], change_last=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        low = self.back(self.inner(self.down(x)))
        # Nearest ×2 (CenterNet's nn.Upsample); sizing to ``up`` also serves inputs not divisible by 2^order.
        return up + F.interpolate(low, size=up.shape[-2:], mode="nearest")


def _per_level(value: int | Sequence[int], levels: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * levels
    out = [int(v) for v in value]
    if len(out) != levels:
        raise ValueError(f"{name} must be one number or a list of depth + 1 = {levels} numbers, got {out}")
    return out


class StackedHourglass(nn.Module):
    """``stacks`` hourglasses of order ``depth`` at output stride 4.

    channels:      one width for every level or depth + 1 widths (level 0 = stride 4);
    residuals:     residual blocks per level, one number or depth + 1 numbers;
    stem_channels: width of the 7×7 stem conv (default channels[0] // 2, CenterNet's 128 for 256);
    out_channels:  width of each stack's output features (default channels[0]).

    forward(images (B, 3, S, S)) -> list of ``stacks`` feature maps (B, out_channels, ceil(S/4), ceil(S/4)),
    the last one the deepest. The stem's two stride-2 stages make S/4; sizes divisible by 4·2^depth keep
    every level exact.
    """

    stride = OUTPUT_STRIDE

    def __init__(self, stacks: int = 2, depth: int = 5, channels: int | Sequence[int] = 256,
                 residuals: int | Sequence[int] = 2, stem_channels: int | None = None,
                 out_channels: int | None = None):
        super().__init__()
        if stacks < 1 or depth < 1:
            raise ValueError(f"stacks and depth must be >= 1, got stacks={stacks} depth={depth}")
        dims = _per_level(channels, depth + 1, "channels")
        blocks = _per_level(residuals, depth + 1, "residuals")
        width = dims[0]
        stem_channels = stem_channels or max(width // 2, 1)
        self.out_channels = out_channels or width
        self.stacks = stacks
        self.stem = nn.Sequential(ConvBNReLU(3, stem_channels, 7, stride=2), Residual(stem_channels, width, stride=2))
        self.hourglasses = nn.ModuleList([Hourglass(dims, blocks) for _ in range(stacks)])
        self.features = nn.ModuleList([ConvBNReLU(width, self.out_channels, 3) for _ in range(stacks)])
        # Inter-stack connections (CenterNet's inters_, cnvs_, inters).
        self.skip_input = nn.ModuleList([
            nn.Sequential(nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width)) for _ in range(stacks - 1)])
        self.skip_features = nn.ModuleList([
            nn.Sequential(nn.Conv2d(self.out_channels, width, 1, bias=False), nn.BatchNorm2d(width))
            for _ in range(stacks - 1)])
        self.merge = nn.ModuleList([Residual(width, width) for _ in range(stacks - 1)])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)
        outs = []
        for i in range(self.stacks):
            feats = self.features[i](self.hourglasses[i](x))
            outs.append(feats)
            if i < self.stacks - 1:
                x = self.merge[i](F.relu(self.skip_input[i](x) + self.skip_features[i](feats)))
        return outs


_SETTINGS = ("stacks", "depth", "channels", "residuals", "stem_channels", "out_channels")


def hourglass_from_settings(settings: dict) -> StackedHourglass:
    """Build from a ``model:`` mapping of method.yaml; keys other than the backbone's (the heads') are ignored."""
    return StackedHourglass(**{k: settings[k] for k in _SETTINGS if k in settings})
