"""Networks shared by methods: stacked hourglass backbones and per-stack prediction heads."""
from .heads import Scaled, StackedPoseNet, StackHeads, conv_head
from .hourglass import OUTPUT_STRIDE, Hourglass, Residual, StackedHourglass, hourglass_from_settings


def parameter_count(module) -> int:
    """Number of trainable parameters (BatchNorm affine included, running statistics not)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = [
    "OUTPUT_STRIDE",
    "Hourglass",
    "Residual",
    "Scaled",
    "StackHeads",
    "StackedHourglass",
    "StackedPoseNet",
    "conv_head",
    "hourglass_from_settings",
    "parameter_count",
]
