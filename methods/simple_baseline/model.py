"""SimpleBaseline's network (Xiao, Wu, Wei, ECCV 2018): a ResNet, three deconvolutions, a 1×1 head.

[R: leoxiaobin/deep-high-resolution-net.pytorch lib/models/pose_resnet.py, experiments/coco/resnet/
res50_256x192_d256x3_adam_lr1e-3.yaml]: ResNet-50 trunk (stride 32), three ``ConvTranspose2d`` (256 filters,
4×4 kernels, stride 2, padding 1, no bias) each followed by BatchNorm and ReLU, then a 1×1 convolution to one map
per joint: a 64×48 output for a 256×192 input (stride 4). The trunk is torchvision's ResNet built from
``torchvision.models.resnet.BasicBlock`` / ``Bottleneck`` with every stage width scaled by ``width / 64``; at
width 64 its parameters are named and shaped as torchvision's ``resnet<depth>`` (without ``fc``), so torchvision's
ImageNet weights load into it (``pretrained``). The tiny CPU scale is a ResNet-18 of width 16 [D].
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from poseharness.errors import HarnessError

#: depth -> (block, blocks per stage) [R: pose_resnet.py resnet_spec = torchvision's].
DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
          101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))}
#: The trunk's output stride (stem 4, three strided stages).
TRUNK_STRIDE = 32
#: ConvTranspose2d (padding, output_padding) per kernel size, each doubling the map [R: _get_deconv_cfg].
DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


class ResNetTrunk(nn.Module):
    """torchvision's ResNet without ``avgpool`` / ``fc``: stem (7×7 stride 2 + max-pool), stages of widths
    ``width × (1, 2, 4, 8)`` (× the block's expansion), output stride 32. Initialised as torchvision initialises
    a ResNet (Kaiming-normal convolutions, BatchNorm 1 / 0)."""

    def __init__(self, depth: int, width: int = 64):
        super().__init__()
        block, layers = DEPTHS[depth]
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.out_channels = self.inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        out = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        out += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class PoseResNet(nn.Module):
    """``forward(images (B, 3, H, W)) -> {'heatmaps': (B, K, H / s, W / s)}``, s = 32 / 2^deconv_layers (4 with
    SimpleBaseline's three deconvolutions). H and W must be multiples of 32."""

    def __init__(self, num_joints: int, depth: int = 50, width: int = 64, deconv_layers: int = 3,
                 deconv_filters: int = 256, deconv_kernel: int = 4, final_kernel: int = 1, init_std: float = 0.001):
        super().__init__()
        self.backbone = ResNetTrunk(depth, width)
        layers, channels = [], self.backbone.out_channels
        padding, output_padding = DECONV_PADDING[deconv_kernel]
        for _ in range(deconv_layers):
            layers += [nn.ConvTranspose2d(channels, deconv_filters, deconv_kernel, stride=2, padding=padding,
                                          output_padding=output_padding, bias=False),
                       nn.BatchNorm2d(deconv_filters), nn.ReLU(inplace=True)]
            channels = deconv_filters
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(channels, num_joints, final_kernel, padding=1 if final_kernel == 3 else 0)
        # [R: init_weights]: the head's (de)convolutions N(0, 0.001²), the final bias 0, BatchNorm 1 / 0.
        for m in list(self.deconv_layers.modules()) + [self.final_layer]:
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> dict:
        h, w = x.shape[-2:]
        if h % TRUNK_STRIDE or w % TRUNK_STRIDE:
            raise HarnessError(f"SimpleBaseline input {w}x{h}: width and height must be multiples of "
                               f"{TRUNK_STRIDE} (the ResNet's stride), e.g. 192x256")
        return {"heatmaps": self.final_layer(self.deconv_layers(self.backbone(x)))}


def load_imagenet(trunk: ResNetTrunk, depth: int, width: int) -> None:
    """torchvision's ImageNet weights (``IMAGENET1K_V1``, the torchvision ResNets SimpleBaseline starts from
    [R: ``MODEL.PRETRAINED`` resnet50-19c8e357.pth]) into the trunk: from torch's hub cache when the user has
    them there, else downloaded by torchvision. HarnessError naming the setting when neither works."""
    if width != 64:
        raise HarnessError(f"model.pretrained: ImageNet weights exist for width 64 only, got width {width}")
    weights = torchvision.models.get_model_weights(f"resnet{depth}").IMAGENET1K_V1
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as exc:       # offline, or a broken cache file: say where the weights are looked for
        raise HarnessError(f"model.pretrained: cannot load torchvision's resnet{depth} ImageNet weights "
                           f"({weights.url}; put the file in {torch.hub.get_dir()}/checkpoints): "
                           f"{type(exc).__name__}: {exc}") from None
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise HarnessError(f"model.pretrained: resnet{depth} weights do not fit the trunk (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
