"""GOG's network, loss and flip-test merge (paper §2.5; facts and sources in ``methods.md`` §1.3-1.6).

Network: a stacked hourglass (Hourglass-104 at ``scale: paper``) with 1×1 conv heads on every stack, no
output activation: ``heatmaps`` (K), guiding ``offsets`` (2L: dx, dy per limb, input px) and ``refine``
(2, the shared refinement offsets of Table 2's "ro", input px).

Loss per stack, stacks weighted by :func:`poseharness.losses.stack_weights` (sum 1):
- heatmap: focal L2 (gamma 2, tau 0.01), summed over the cells ``heatmap_mask`` keeps, / batch;
- offset:  L1 of each offset component divided by its person's scale ``offset_scale`` (sqrt(box w·h)),
           square-rooted (``--sqrt-re``), mean over the supervised cells ``offset_mask``;
- refine:  the same on ``refine_mask``, errors divided by the stride (in cells) instead of a person scale.
The task weights live in method.yaml ``defaults.loss``, with how they relate to the official ones.

Settings: ``cfg["model"]`` and ``cfg["loss"]``, as the resolver merged them (defaults ⊕ scale ⊕ training;
declared in ``settings.schema.yaml``).
"""
from __future__ import annotations

import numpy as np
import torch

from poseharness.errors import HarnessError
from poseharness.losses import focal_l2, scaled_l1, stack_weights
from poseharness.models import StackedPoseNet, StackHeads, hourglass_from_settings
from poseharness.schemas import get_schema


def _skeleton(cfg: dict) -> tuple[tuple[int, int], ...]:
    # The limb list is the representation's (method.py); imported here, not at the top, because method.py
    # imports this module while it loads.
    from .method import skeleton
    return skeleton(cfg)


def head_channels(cfg: dict) -> dict[str, int]:
    """Output name -> channels: heatmaps K (schema), offsets 2L (skeleton), refine 2."""
    return {"heatmaps": get_schema(cfg["schema"]).num_keypoints, "offsets": 2 * len(_skeleton(cfg)), "refine": 2}


def build_model(cfg: dict) -> StackedPoseNet:
    """The configured network. ``model(images (B, 3, S, S))`` -> one dict per stack with ``heatmaps``
    (B, K, S/4, S/4), ``offsets`` (B, 2L, ..), ``refine`` (B, 2, ..); the last dict is the prediction."""
    settings = cfg["model"]
    backbone = hourglass_from_settings(settings)
    stride = int(cfg["encoding"]["stride"])
    if backbone.stride != stride:
        raise HarnessError(f"method gog, training {cfg.get('training')!r}: field encoding.stride is {stride} but "
                           f"the hourglass's output stride is {backbone.stride}; only stride {backbone.stride} "
                           f"can be trained")
    heads = settings.get("heads", {})
    return StackedPoseNet(backbone, StackHeads(backbone.out_channels, head_channels(cfg), backbone.stacks,
                                               hidden=int(heads.get("hidden", 0)), bias=heads.get("bias"),
                                               scale=heads.get("scale"), init_std=heads.get("init_std")))


def loss(outputs: list[dict[str, torch.Tensor]], targets: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    """Weighted loss terms ``heatmap``, ``offset``, ``refine`` (scalars; the trainer sums them).

    outputs: one dict per stack (see :func:`build_model`); targets: batched ``encode`` output — heatmaps
    (B, K, H, W), offsets (B, 2L, H, W), refine (B, 2, H, W), offset_mask / offset_scale (B, L, H, W),
    refine_mask (B, H, W) and, when training on images, heatmap_mask (B, H, W).
    """
    ls = cfg["loss"]
    hm, off, ref = ls["heatmap"], ls["offset"], ls["refine"]
    stride = float(cfg["encoding"]["stride"])
    weights = stack_weights(len(outputs), ls.get("stack_weights"))
    # x and y of a limb share its mask and its person's scale: (B, L, H, W) -> (B, 2L, H, W), channel 2l, 2l+1.
    off_mask = targets["offset_mask"].repeat_interleave(2, dim=1)
    off_scale = targets["offset_scale"].repeat_interleave(2, dim=1)
    hm_mask = targets.get("heatmap_mask")
    terms = {"heatmap": 0.0, "offset": 0.0, "refine": 0.0}
    for w, out in zip(weights, outputs):
        terms["heatmap"] = terms["heatmap"] + w * focal_l2(
            out["heatmaps"], targets["heatmaps"], hm_mask, gamma=hm["gamma"], tau=hm["tau"])
        terms["offset"] = terms["offset"] + w * scaled_l1(
            out["offsets"], targets["offsets"], off_mask, off_scale, sqrt=off["sqrt"], eps=off["eps"])
        terms["refine"] = terms["refine"] + w * scaled_l1(
            out["refine"], targets["refine"], targets["refine_mask"], stride, sqrt=ref["sqrt"], eps=ref["eps"])
    return {"heatmap": hm["weight"] * terms["heatmap"], "offset": off["weight"] * terms["offset"],
            "refine": ref["weight"] * terms["refine"]}


def limb_mirrors(limbs, flip_index: np.ndarray) -> np.ndarray:
    """(L,) int64 — for each limb l = (a, b), the limb m = (flip[a], flip[b]) that a horizontal mirror maps
    onto it, or -1 when the skeleton has no such limb (it holds the reverse instead: e.g. (1, 2) left eye ->
    right eye mirrors onto "right eye -> left eye"). [R: OffsetGuided config offset_hflip]"""
    index = {tuple(map(int, ab)): i for i, ab in enumerate(limbs)}
    fi = np.asarray(flip_index)
    return np.array([index.get((int(fi[a]), int(fi[b])), -1) for a, b in limbs], dtype=np.int64)


def merge_flip(outputs: dict[str, torch.Tensor], flipped_outputs: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    """Flip test (methods.md §1.6 step 1): merge one image's outputs with those of its horizontal mirror.

    outputs, flipped_outputs: final-stack outputs of ONE image and of the mirrored image — heatmaps (K, h, w),
    offsets (2L, h, w), optionally refine (2, h, w). The mirrored maps are flipped back (the pixel-centre
    mirror x -> S-1-x of the input is exactly the reversal of the output columns when S = w·R), keypoint
    channels are swapped by the schema's ``flip_index``, each limb reads its mirror limb with dx negated,
    and both are averaged. A limb whose mirror is its own reverse (no limb maps onto it) keeps the unflipped
    offsets [R: decoder/factory.py]. Refinement offsets: flipped back, dx negated, averaged. Other entries
    are taken from ``outputs``.
    """
    flip_index = torch.as_tensor(get_schema(cfg["schema"]).flip_index, device=outputs["heatmaps"].device)
    merged = dict(outputs)
    merged["heatmaps"] = 0.5 * (outputs["heatmaps"] + flipped_outputs["heatmaps"].flip(-1)[flip_index])

    limbs = _skeleton(cfg)
    mirror = torch.as_tensor(limb_mirrors(limbs, flip_index.cpu().numpy()), device=outputs["offsets"].device)
    off = outputs["offsets"].reshape(len(limbs), 2, *outputs["offsets"].shape[-2:])
    back = _unmirror_vectors(flipped_outputs["offsets"].reshape(off.shape))
    paired = mirror >= 0
    avg = 0.5 * (off + back[mirror.clamp_min(0)])
    merged["offsets"] = torch.where(paired[:, None, None, None], avg, off).reshape(outputs["offsets"].shape)

    if "refine" in outputs and "refine" in flipped_outputs:
        merged["refine"] = 0.5 * (outputs["refine"] + _unmirror_vectors(flipped_outputs["refine"][None])[0])
    return merged


def _unmirror_vectors(vectors: torch.Tensor) -> torch.Tensor:
    """(N, 2, h, w) vector fields of a mirrored image -> the original's frame: columns reversed, dx negated."""
    back = vectors.flip(-1)
    sign = back.new_tensor([-1.0, 1.0])[None, :, None, None]
    return back * sign
