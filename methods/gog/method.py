"""GOG's representation: what its network is trained to output and how those outputs become poses.

``encode`` runs in data-loader workers (numpy); ``decode`` runs on network outputs (torch). The target maps
carry the same names and shapes as the model's heads, so ``decode(encode(ground truth))`` is the oracle.
The network, its loss and the flip-test merge are in ``model.py`` (re-exported here: the method contract).
"""
from __future__ import annotations

import numpy as np
import torch

from poseharness.codecs import (
    decode_peaks,
    encode_guiding_offsets,
    encode_heatmaps,
    encode_refinement_offsets,
    guides_for,
    heatmap_mask,
    refine_peaks,
)
from poseharness.data.sample import Sample
from poseharness.schemas import get_schema

from .grouping import group
from .model import build_model, loss, merge_flip  # noqa: F401  (the method contract: network, loss, flip test)

paradigm = "bottom-up"

#: Target names that are model outputs (the rest are masks and weights for the loss).
OUTPUTS = ("heatmaps", "offsets", "refine")


def skeleton(cfg: dict) -> tuple[tuple[int, int], ...]:
    """The limb list of the config's skeleton choice (standard / dense) for the dataset's keypoint schema."""
    schema = cfg["schema"]
    return get_schema(schema).skeleton(cfg["skeletons"][cfg["encoding"]["skeleton"]][schema])


def encoded_persons(sample: Sample, min_area: float) -> np.ndarray:
    """(P,) bool — persons that get targets: annotated (not crowd, labelled keypoints) and with an annotated
    area above ``min_area`` px² [R]. The area is the annotation's, in the ORIGINAL image (the view's affine is
    undone), so the rule does not change with the input size: a small network input must not drop persons
    that the evaluator counts."""
    areas = sample.areas
    affine = sample.meta.get("affine")
    if affine is not None:
        areas = areas / abs(np.linalg.det(np.asarray(affine)[:, :2]))
    return sample.annotated & (areas > min_area)


def encode(sample: Sample, cfg: dict) -> dict[str, np.ndarray]:
    """Training targets of one network-input view (``sample`` already transformed to the input square).

    heatmaps (K, H, W), offsets (2L, H, W) guiding offsets in input px (x, y per limb), refine (2, H, W);
    masks: offset_mask (L, H, W), refine_mask (H, W), offset_scale (L, H, W) person scale for the L1
    normalisation, and heatmap_mask (H, W) (1 = supervised) when the sample carries an ignore mask.
    """
    enc = cfg["encoding"]
    stride = int(enc["stride"])
    out_hw = (sample.height // stride, sample.width // stride)
    keep = encoded_persons(sample, enc["min_area"])
    kp, boxes = sample.keypoints[keep], sample.boxes[keep]
    heatmaps = encode_heatmaps(kp, out_hw, stride, sigma=enc["sigma"], quantise=enc["quantise"])
    offsets, offset_mask, offset_scale = encode_guiding_offsets(
        kp, boxes, skeleton(cfg), out_hw, stride, radius=enc["offset_radius"])
    # qnt + ro: the refinement offsets point from the cell centre to the exact keypoint either way.
    refine, refine_mask = encode_refinement_offsets(kp, out_hw, stride, radius=enc["refine_radius"])
    out = {
        "heatmaps": heatmaps,
        "offsets": offsets.reshape(-1, *out_hw),
        "refine": refine,
        "offset_mask": offset_mask,
        "offset_scale": offset_scale,
        "refine_mask": refine_mask,
    }
    if sample.ignore_mask is not None:
        out["heatmap_mask"] = heatmap_mask(sample.ignore_mask, stride)
    return out


def decode(outputs: dict[str, torch.Tensor], cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Poses from one image's outputs: (N, K, 3) [x, y, score] in network-input px, and (N,) person scores.

    outputs: heatmaps (K, h, w), offsets (2L, h, w), refine (2, h, w) (needed only with ``decode.refine``).
    """
    dec = cfg["decode"]
    stride = int(cfg["encoding"]["stride"])
    limbs = skeleton(cfg)
    peaks = decode_peaks(outputs["heatmaps"], stride, upsample=dec["upsample"], topk=dec["topk"],
                         threshold=dec["threshold"], nms_kernel=dec["nms_kernel"], dark=dec["dark"],
                         dark_kernel=dec["dark_kernel"])
    if dec["refine"]:
        peaks = refine_peaks(peaks, outputs["refine"], stride)
    guides = guides_for(peaks, outputs["offsets"], limbs, stride)
    return group(peaks, guides, limbs, dist_max=dec["dist_max"], person_threshold=dec["person_threshold"],
                 score_mode=dec["score_mode"])
