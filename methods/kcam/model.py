"""KCAM's network: a top-down backbone's last feature map F, then the KCAM head (:mod:`.kcam_module`).

Backbones:

* ``resnet`` (Tables 1-2 [P]: "the backbone of Resnet-50 with the input size of 256x192"): SimpleBaseline's trunk and
  three deconvolutions, taken from ``methods/simple_baseline/model.py`` (imported through the harness,
  :func:`poseharness.contract.method_submodule`, so there is one implementation of it). F is the last
  deconvolution's output (C = its filters, stride 4); SimpleBaseline's 1x1 ``final_layer`` is replaced by the head.
* ``hrnet_w32`` / ``hrnet_w48`` (Table 3 [P]: HRNet-W48 at 384x288) through ``timm`` (not a dependency of the
  harness: a clear error when it is missing): the stride-4 branch of the last stage (48 channels for W48) is F
  [D: methods.md §5.5, "final 1/4 branch"]. timm's HRNet is the classification variant, whose last stage keeps all
  four branches; the pose HRNet fuses into the 1/4 branch in its last module only — a difference we accept [D].
  Randomly initialised unless ``pretrained`` (timm's ImageNet weights, downloaded or from its cache).
"""
from __future__ import annotations

import torch
from torch import nn

from poseharness.contract import method_submodule, resolve_method
from poseharness.errors import HarnessError

from .kcam_module import KCAMHead

#: SimpleBaseline's network module (``PoseResNet``, ``load_imagenet``, ``TRUNK_STRIDE``).
base_model = method_submodule(resolve_method("simple_baseline"), "model")
TRUNK_STRIDE = base_model.TRUNK_STRIDE
#: timm backbones and the output stride of the branch KCAM sits on.
HRNETS = ("hrnet_w32", "hrnet_w48")
HRNET_STRIDE = 4


def hrnet_trunk(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    """timm's ``name`` returning only its stride-4 branch (``features_only``, ``feature_location=''``: the raw
    branch outputs, not the classification head's widened ones); (module, channels)."""
    try:
        import timm
    except ImportError:
        raise HarnessError(f"model.backbone {name!r} needs the package timm (pip install timm), which is not "
                           f"installed; the resnet backbone needs only torchvision") from None
    try:
        net = timm.create_model(name, pretrained=pretrained, features_only=True, feature_location="",
                                out_indices=(1,))
    except Exception as exc:       # offline with pretrained, or a timm without these options: say which setting
        raise HarnessError(f"model.backbone {name!r} (pretrained {pretrained}): timm could not build it: "
                           f"{type(exc).__name__}: {exc}") from None
    return net, int(net.feature_info.channels()[-1])


class KCAMPoseNet(nn.Module):
    """``forward(images (B, 3, H, W)) -> {'heatmaps': (B, K, h, w), 'areas': (B, K, h, w)}`` (no ``areas`` with
    the module off). H and W must be multiples of 32."""

    def __init__(self, num_joints: int, head: dict, backbone: str = "resnet", depth: int = 50, width: int = 64,
                 deconv_layers: int = 3, deconv_filters: int = 256, deconv_kernel: int = 4,
                 init_std: float = 0.001, pretrained: bool = False):
        super().__init__()
        self.backbone_name = backbone
        if backbone == "resnet":
            base = base_model.PoseResNet(num_joints, depth=depth, width=width, deconv_layers=deconv_layers,
                                         deconv_filters=deconv_filters, deconv_kernel=deconv_kernel,
                                         init_std=init_std)
            self.backbone, self.deconv_layers = base.backbone, base.deconv_layers   # its final_layer is dropped
            channels = deconv_filters if deconv_layers else base.backbone.out_channels
            if pretrained:
                base_model.load_imagenet(self.backbone, depth, width)
        elif backbone in HRNETS:
            self.backbone, channels = hrnet_trunk(backbone, pretrained)
            self.deconv_layers = nn.Identity()
        else:
            raise HarnessError(f"model.backbone: {backbone!r} is not one of resnet, {', '.join(HRNETS)}")
        self.head = KCAMHead(channels, num_joints, init_std=init_std, **head)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """F (B, C, h, w): the backbone's map the head reads."""
        h, w = x.shape[-2:]
        if h % TRUNK_STRIDE or w % TRUNK_STRIDE:
            raise HarnessError(f"KCAM input {w}x{h}: width and height must be multiples of {TRUNK_STRIDE} "
                               f"(the backbone's stride), e.g. 192x256")
        f = self.backbone(x)
        if self.backbone_name != "resnet":
            f = f[-1]
        return self.deconv_layers(f)

    def forward(self, x: torch.Tensor) -> dict:
        return self.head(self.features(x))
