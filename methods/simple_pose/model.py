"""Simple Pose's network (IMHN) and its focal L2 loss (paper "IMHN" and "Focal L2 loss"; facts and sources in
``methods.md`` §2.3-2.4: [P] paper, [R] official code hellojialee/Improved-Body-Parts, [D] decided here).

IMHN, the Identity Mapping Hourglass Network [P; R: models/posenet.py, models/layers_transposed.py]:

- stem to stride 4: conv 7×7/2 (c/4), bottleneck to c/2, max-pool 2, bottleneck, then six dilated 3×3 convs
  (dilation 3, 3, 4, 4, 5, 5) whose output is concatenated with their input: c channels (c = 256 at the paper
  scale: 64, 128, 128 + 128, exactly the official ``Backbone``);
- ``stacks`` hourglasses of order ``order`` (4 [P]). Level i has ``c + i·increase`` channels (256 ... 768 [P]);
  down = max-pool then a bottleneck that widens, up = a bottleneck that narrows, nearest ×2, then a 3×3 conv,
  added to the level's skip bottleneck. Each hourglass yields ``order + 1`` feature maps, scales 1 ... 1/2^order
  of the stride-4 map: its output and the inner results of every level;
- per scale a head: 3×3 conv (-> c), 3×3 conv, an SE block ("channel attention", reduction ``se_reduction``),
  1×1 conv -> the C output channels of :func:`.representation.layout`, no activation. With ``multiscale``
  ("spatial attention") every scale has a head and is supervised; without, only scale 1 [D];
- identity mappings [P]: per scale, 1×1 conv + BN of the head's features plus 1×1 conv + BN of its predicted
  maps is added to the next stack's hourglass output at that scale, and at scale 1 also to the next stack's
  input [R]. ``identity_mappings: false`` keeps only the input connection (the stacked hourglass of Newell et
  al. / Associative Embedding, the network the paper improves on) [D]. Without ``multiscale`` the only mapped
  scale is 1 [D].

Blocks: bottleneck residuals (1×1 to half width, 3×3, 1×1 back, BN after each) as the official code; the
3×3 convs are the core's :class:`~poseharness.models.hourglass.ConvBNReLU`. [D] ReLU everywhere where the official
code uses LeakyReLU(0.01). Convs are initialised N(0, ``init_std``²) [R: 0.001], biases 0, the SE block's linear
layers N(0, 0.01²) [R]; ``init_std: null`` keeps PyTorch's defaults.

Outputs per stack: ``maps`` (B, C, S/4, S/4) — what ``decode`` reads from the last stack — and with
``multiscale`` ``maps_s2``, ``maps_s4``, ... (B, C, S/4/2^l, S/4/2^l): :func:`scale_key`.

Loss (:func:`loss`) [P; R: models/loss_model.py]: per stack and scale, the one focal L2 of the harness
(:func:`poseharness.losses.focal_l2`) against :func:`.representation.pyramid` of the target, weighted per channel
(``keypoint_weight`` on the 18 keypoint heatmaps, ``mask_weight`` on the person mask, 1 elsewhere) and by the
loss mask; scales weighted by ``scale_weights`` / their sum, stacks by ``stack_weights`` (sum 1).

Settings: ``cfg["model"]`` (sizes per scale, switches per training) and ``cfg["loss"]``, as the resolver merged
them (defaults ⊕ scale ⊕ training; declared in ``settings.schema.yaml``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from poseharness.errors import HarnessError
from poseharness.losses import focal_l2, stack_weights
from poseharness.models.hourglass import OUTPUT_STRIDE, ConvBNReLU

from .representation import layout, num_channels, pyramid

#: Dilations of the stem's six 3×3 convs [R: layers_transposed.py Backbone].
STEM_DILATIONS = (3, 3, 4, 4, 5, 5)
#: A coarse cell's loss weight is zeroed below this share of supervised area [R: loss_model.py, ``< 0.5``].
MIN_MASK_SHARE = 0.5


def scale_key(level: int) -> str:
    """Output name of scale ``level``: ``maps`` at the stride-4 resolution, ``maps_s<2^level>`` below it."""
    return "maps" if level == 0 else f"maps_s{2 ** level}"


def loss_config(cfg: dict, progress: float) -> dict:
    """The config the loss sees at ``progress`` (steps done / all steps) of a training: plain L2 for the first
    ``loss.l2_first`` share of a focal-L2 schedule, focal L2 after it (the paper trains its IMHNs "with L2 loss
    first" and then with focal L2 [P]; the share is not published [D]). ``cfg`` itself otherwise."""
    ls = cfg["loss"]
    share = float(ls.get("l2_first", 0.0))
    if not 0.0 <= share < 1.0:
        raise HarnessError(f"methods/simple_pose/method.yaml: field loss.l2_first must be a share of the schedule in "
                           f"[0, 1), got {share}")
    if not ls["focal"] or progress >= share:
        return cfg
    return {**cfg, "loss": {**ls, "focal": False}}


def num_scales(settings: dict) -> int:
    """Supervised scales of a ``model:`` setting: order + 1 with ``multiscale``, else 1."""
    return int(settings["order"]) + 1 if settings.get("multiscale", True) else 1


# ---------------------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------------------

class Bottleneck(nn.Module):
    """The official residual block [R: layers_transposed.py Residual]: 1×1 conv to ``out/2``, 3×3, 1×1 to ``out``,
    BN after each, ReLU between; the skip is a 1×1 conv + BN when the width changes; ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = max(out_channels // 2, 1)
        self.body = nn.Sequential(
            ConvBNReLU(in_channels, mid, 1),
            ConvBNReLU(mid, mid, 3),
            nn.Conv2d(mid, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al.): channels scaled by sigmoid(fc(relu(fc(global mean)))) [P, R]."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels),
                                nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


def _conv1x1_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


class Stem(nn.Module):
    """Images (B, 3, S, S) -> (B, c, S/4, S/4) [R: layers_transposed.py Backbone, generalised from c = 256]."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.head = nn.Sequential(ConvBNReLU(3, max(channels // 4, 1), 7, stride=2),
                                  Bottleneck(max(channels // 4, 1), half), nn.MaxPool2d(2, 2),
                                  Bottleneck(half, half))
        self.dilated = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(half, half, 3, padding=d, dilation=d, bias=False), nn.BatchNorm2d(half),
                          nn.ReLU(inplace=True)) for d in STEM_DILATIONS])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.head(images)
        return torch.cat([x, self.dilated(x)], dim=1)


class HourglassLevel(nn.Module):
    """Level i of an IMHN hourglass [R: layers_transposed.py Hourglass]; ``widths`` = (w_i, w_{i+1}, ..., w_n).

    forward(x (B, w_i, h, w)) -> [out_i, out_{i+1}, ..., out_n]: this level's output (w_i channels at x's size)
    followed by the deeper levels' (w_j channels at 1/2^(j-i)); the innermost is a bottleneck at w_n.
    """

    def __init__(self, widths: list[int]):
        super().__init__()
        here, below = widths[0], widths[1]
        self.skip = Bottleneck(here, here)
        self.down = Bottleneck(here, below)
        self.inner: nn.Module = HourglassLevel(widths[1:]) if len(widths) > 2 else Bottleneck(below, below)
        self.back = Bottleneck(below, here)
        self.refine = ConvBNReLU(here, here, 3)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        inner = self.inner(self.down(F.max_pool2d(x, 2)))
        inner = inner if isinstance(inner, list) else [inner]
        skip = self.skip(x)
        # nearest ×2 [R]; sized to the skip branch so odd sizes round-trip like the max-pool's floor
        up = F.interpolate(self.back(inner[0]), size=skip.shape[-2:], mode="nearest")
        return [skip + self.refine(up)] + inner


class ScaleHead(nn.Module):
    """One scale's head: 3×3 conv (-> c), 3×3 conv, SE (optional), then a 1×1 conv with bias to the C output
    channels. forward -> (features (B, c, h, w), maps (B, C, h, w))."""

    def __init__(self, in_channels: int, channels: int, out_channels: int, se: bool, se_reduction: int):
        super().__init__()
        layers = [ConvBNReLU(in_channels, channels, 3), ConvBNReLU(channels, channels, 3)]
        if se:
            layers.append(SqueezeExcite(channels, se_reduction))
        self.features = nn.Sequential(*layers)
        self.out = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.out(f)


class IMHN(nn.Module):
    """The Identity Mapping Hourglass Network (see the module docstring).

    out_channels: C, the output maps per scale; stacks; order: hourglass order (order + 1 scales);
    channels: c, the width at stride 4; increase: width added per level down.
    forward(images (B, 3, S, S)) -> one dict per stack, ``{scale_key(l): (B, C, S/4/2^l, S/4/2^l)}`` for the
    supervised scales l; the last dict is the prediction.
    """

    stride = OUTPUT_STRIDE

    def __init__(self, out_channels: int, stacks: int = 4, order: int = 4, channels: int = 256, increase: int = 128,
                 se: bool = True, se_reduction: int = 16, multiscale: bool = True, identity_mappings: bool = True,
                 init_std: float | None = 0.001):
        super().__init__()
        self.stacks, self.order = int(stacks), int(order)
        self.identity_mappings = bool(identity_mappings)
        widths = [channels + i * increase for i in range(self.order + 1)]
        heads = self.order + 1 if multiscale else 1
        mapped = heads if identity_mappings else 1
        self.keys = [scale_key(level) for level in range(heads)]
        self.stem = Stem(channels)
        self.hourglasses = nn.ModuleList([HourglassLevel(widths) for _ in range(self.stacks)])
        self.heads = nn.ModuleList([
            nn.ModuleList([ScaleHead(widths[j], channels, out_channels, se, se_reduction) for j in range(heads)])
            for _ in range(self.stacks)])
        self.map_features = nn.ModuleList([
            nn.ModuleList([_conv1x1_bn(channels, widths[j]) for j in range(mapped)])
            for _ in range(self.stacks - 1)])
        self.map_maps = nn.ModuleList([
            nn.ModuleList([_conv1x1_bn(out_channels, widths[j]) for j in range(mapped)])
            for _ in range(self.stacks - 1)])
        self._initialise(init_std)

    def _initialise(self, init_std: float | None) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and init_std is not None:
                nn.init.normal_(m.weight, 0.0, init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        x = self.stem(images)
        carried: list[torch.Tensor] = []     # the previous stack's identity mappings, per scale
        outputs = []
        for s in range(self.stacks):
            feats = self.hourglasses[s](x)
            if self.identity_mappings:
                feats = [f + c for f, c in zip(feats, carried)] + feats[len(carried):]
            head_feats, maps = [], {}
            for key, head, f in zip(self.keys, self.heads[s], feats):
                hf, maps[key] = head(f)
                head_feats.append(hf)
            outputs.append(maps)
            if s < self.stacks - 1:
                carried = [mf(hf) + mm(m) for mf, mm, hf, m in
                           zip(self.map_features[s], self.map_maps[s], head_feats, maps.values())]
                x = x + carried[0]
        return outputs


def build_model(cfg: dict) -> IMHN:
    """The configured IMHN. ``model(images (B, 3, S, S))`` -> one dict per stack with ``maps`` (B, C, S/4, S/4)
    (C from the encoding's :func:`.representation.layout`) and, with ``multiscale``, the coarser scales."""
    settings = cfg["model"]
    where = f"methods/simple_pose/method.yaml (training {cfg.get('training')!r}, scale {cfg.get('scale_name')!r})"
    stride = int(cfg["encoding"]["stride"])
    if stride != OUTPUT_STRIDE:
        raise HarnessError(f"{where}: field encoding.stride is {stride} but the IMHN's output stride is "
                           f"{OUTPUT_STRIDE}; only stride {OUTPUT_STRIDE} can be trained")
    for key in ("stacks", "order", "channels", "increase"):
        value = settings.get(key)
        least = 0 if key == "increase" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise HarnessError(f"{where}: field model.{key} must be an integer >= {least}, got {value!r}")
    if settings["channels"] % 4:
        raise HarnessError(f"{where}: field model.channels must be a multiple of 4 (the stem's widths are c/4 and "
                           f"c/2), got {settings['channels']}")
    return IMHN(num_channels(cfg["encoding"]), stacks=settings["stacks"], order=settings["order"],
                channels=settings["channels"], increase=settings["increase"], se=bool(settings.get("se", True)),
                se_reduction=int(settings.get("se_reduction", 16)), multiscale=bool(settings.get("multiscale", True)),
                identity_mappings=bool(settings.get("identity_mappings", True)), init_std=settings.get("init_std"))


# ---------------------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------------------

def channel_weights(enc: dict, keypoint_weight: float, mask_weight: float) -> torch.Tensor:
    """(C,) float32 per-channel loss weights [P, R: loss_model.py]: ``keypoint_weight`` (lambda) on the 18
    keypoint heatmaps, ``mask_weight`` on the person mask, 1 on the parts and the keypoint maximum."""
    lay = layout(enc)
    w = torch.ones(num_channels(enc))
    w[lay["keypoints"]] = float(keypoint_weight)
    w[lay["mask"]] = float(mask_weight)
    return w


def loss_masks(mask: torch.Tensor | None, levels: int) -> list[torch.Tensor | None]:
    """Per-scale loss weights (B, 1, h, w) from the stride-4 mask (B, H, W) (the share of each cell that is
    annotated): area means over the coarse cells, zeroed below :data:`MIN_MASK_SHARE` at every scale [R: the
    official bilinear resize then ``< 0.5 -> 0``; D: the area mean, the pooling of the ground truth, instead of
    a bilinear sample]. ``None`` (no mask) stays None at every scale."""
    if mask is None:
        return [None] * levels
    return [torch.where(m < MIN_MASK_SHARE, torch.zeros_like(m), m) for m in pyramid(mask[:, None].float(), levels)]


def loss(outputs: list[dict[str, torch.Tensor]], batch: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    """Weighted loss terms ``parts``, ``keypoints`` (the 18 heatmaps and their maximum) and ``mask`` (scalars;
    the trainer sums them).

    outputs: one dict per stack (:func:`build_model`); batch: the collated ``encode`` output — ``maps``
    (B, C, H, W) at stride 4 and, when training on images, ``heatmap_mask`` (B, H, W).
    Per stack s and scale l: ``focal_l2(pred, pyramid(maps)[l], mask_l · w_c, gamma)``, summed over the cells and
    divided by the batch (half the official value: ``focal_l2`` has a factor 1/2 that the official code has not);
    gamma is ``loss.gamma`` where focal L2 applies (``focal``; ``focal_on: keypoints`` = the keypoint heatmaps
    and their maximum only, ID 11) and 0 (plain L2) elsewhere. PAF channels (signed vectors, no foreground) always
    get plain L2 [D]. Terms = sum over s, l of stack_weight_s · scale_weight_l / sum(scale_weights) · loss.
    The ground-truth pyramid is pooled here, on the device, rather than in ``encode``: it is a cheap average
    pooling of the batch, and ``encode`` keeps returning exactly what ``decode`` reads (the oracle's input).
    """
    ls = cfg["loss"]
    settings = cfg["model"]
    enc = cfg["encoding"]
    lay = layout(enc)
    focal_on = ls.get("focal_on", "all")
    if focal_on not in ("all", "keypoints"):
        raise HarnessError(f"methods/simple_pose/method.yaml: field loss.focal_on must be 'all' or 'keypoints', "
                           f"got {focal_on!r}")
    levels = num_scales(settings)
    scale_w = [float(w) for w in ls["scale_weights"]]
    if levels > 1 and len(scale_w) != levels:
        raise HarnessError(f"methods/simple_pose/method.yaml: field loss.scale_weights has {len(scale_w)} weights "
                           f"but the order-{settings['order']} hourglass supervises {levels} scales")
    if any(w < 0 for w in scale_w[:levels]) or sum(scale_w[:levels]) <= 0:
        raise HarnessError(f"methods/simple_pose/method.yaml: field loss.scale_weights must be non-negative with a "
                           f"positive sum, got {scale_w}")
    scale_w = [w / sum(scale_w[:levels]) for w in scale_w[:levels]]
    stack_w = stack_weights(len(outputs), ls.get("stack_weights"))

    target = batch["maps"]
    truths = pyramid(target, levels)
    masks = loss_masks(batch.get("heatmap_mask"), levels)
    weights = channel_weights(enc, ls["keypoint_weight"], ls["mask_weight"]).to(target.device)[None, :, None, None]
    gamma = float(ls["gamma"]) if ls["focal"] else 0.0
    paf = enc.get("representation", "parts") == "paf"
    groups = {  # term -> [(channel slice, gamma)]
        "parts": [(lay["parts"], 0.0 if paf or focal_on == "keypoints" else gamma)],
        "keypoints": [(lay["keypoints"], gamma), (lay["kmax"], gamma)],
        "mask": [(lay["mask"], 0.0 if focal_on == "keypoints" else gamma)],
    }
    terms = {name: target.new_zeros(()) for name in groups}
    for sw, out in zip(stack_w, outputs):
        for level, (lw, truth, mask) in enumerate(zip(scale_w, truths, masks)):
            pred = out[scale_key(level)]
            for name, parts in groups.items():
                for sl, g in parts:
                    w = weights[:, sl] if mask is None else mask * weights[:, sl]
                    terms[name] = terms[name] + sw * lw * focal_l2(
                        pred[:, sl], truth[:, sl], w, gamma=g, tau=ls["tau"], alpha=ls["alpha"], beta=ls["beta"])
    return terms
