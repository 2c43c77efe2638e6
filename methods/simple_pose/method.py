"""Simple Pose's representation as a harness method: what its network is trained to output, and the
greedy keypoint assignment that turns those outputs into poses.

The network outputs, per scale, one map ``maps`` (C, H, W) laid out by :func:`.representation.layout`
(body parts or PAFs, 18 keypoint heatmaps, person mask, keypoint maximum); ``encode`` returns the stride-R
ground truth under that name, so ``decode(encode(ground truth))`` is the oracle. The coarser scales of the
multi-scale supervision are :func:`.representation.pyramid` of it.

The IMHN network and its focal L2 loss live in ``model.py`` (``build_model``, ``loss``, re-exported here: the
method contract); the oracle needs neither. ``encode`` also returns the loss mask ``heatmap_mask`` when the
sample carries an ignore mask.
"""
from __future__ import annotations

import numpy as np
import torch

from poseharness.codecs import heatmap_mask
from poseharness.data.sample import Sample
from poseharness.errors import HarnessError

from .assignment import assign
from .model import build_model, loss, loss_config  # noqa: F401  (the method contract: network and loss)
from .representation import (
    FLIP18,
    coco_to_internal,
    encode_maps,
    internal_to_coco,
    layout,
    part_flip,
    skeleton,
)

paradigm = "bottom-up"

#: Target names that are model outputs.
OUTPUTS = ("maps",)
#: The keypoint schema of the datasets this representation encodes (COCO 17 + a derived neck).
SCHEMA = "coco17"


def _check_schema(cfg: dict) -> None:
    if cfg.get("schema", SCHEMA) != SCHEMA:
        raise HarnessError(f"method simple_pose encodes COCO's 17 keypoints (plus a neck); dataset schema "
                           f"{cfg['schema']!r} is not supported (methods/simple_pose/method.yaml: schema)")


def encode(sample: Sample, cfg: dict) -> dict[str, np.ndarray]:
    """Training targets of one network-input view (``sample`` already transformed to the input square).

    maps (C, H, W) float32 at stride R: the persons that training uses (not crowd, with labelled keypoints
    [R: data/coco_masks_hdf5.py]) in the 18-keypoint order; the person-mask channel covers every person's box,
    crowds and persons without keypoints included (the official ``mask_all``).
    heatmap_mask (H, W) float32, when the sample has an ignore mask: each cell's share of input pixels that
    are not ignored, the loss weight of the cell [R: the area-resized mask_miss; see ``codecs.heatmap_mask``].
    """
    _check_schema(cfg)
    enc = cfg["encoding"]
    stride = int(enc["stride"])
    out_hw = (sample.height // stride, sample.width // stride)
    kp18 = coco_to_internal(sample.keypoints[sample.annotated])
    out = {"maps": encode_maps(kp18, sample.boxes, out_hw, enc)}
    if sample.ignore_mask is not None:
        out["heatmap_mask"] = heatmap_mask(sample.ignore_mask, stride, keep_fraction=None)
    return out


def decode(outputs: dict[str, torch.Tensor], cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Poses from one image's outputs: (N, 17, 3) [x, y, score] in network-input px (COCO order, the neck
    dropped) and (N,) person scores, best first.

    outputs: maps (C, h, w) at stride R. The keypoint and part channels are read ×R-upsampled
    (``decode.upsample``, bicubic [R]: the upsampled index is the input pixel) by the assignment
    (:func:`.assignment.assign`).
    """
    _check_schema(cfg)
    enc, dec = cfg["encoding"], cfg["decode"]
    lay = layout(enc)
    maps = torch.as_tensor(outputs["maps"])
    if maps.shape[0] != lay["kmax"].stop:
        raise HarnessError(f"simple_pose outputs have {maps.shape[0]} channels; encoding "
                           f"{enc.get('representation')}/{enc.get('parts')} needs {lay['kmax'].stop}")
    poses, scores = assign(
        maps[lay["keypoints"]], maps[lay["parts"]], skeleton(enc), int(enc["stride"]),
        paf=enc["representation"] == "paf", upsample=dec["upsample"],
        keypoint_threshold=dec["keypoint_threshold"], refine_radius=dec["refine_radius"],
        max_candidates=dec["max_candidates"], part_threshold=dec["part_threshold"],
        part_ratio=dec["part_ratio"], samples=dec["samples"], length_prior=dec["length_prior"],
        len_rate=dec["len_rate"], merge_tolerance=dec["merge_tolerance"], min_keypoints=dec["min_keypoints"],
        min_mean_score=dec["min_mean_score"])
    return internal_to_coco(poses), scores


def mirror_maps(maps: torch.Tensor, enc: dict) -> torch.Tensor:
    """The maps of the horizontally mirrored image, expressed for the original one (and vice versa).

    maps: (C, h, w). Width reversed; keypoint channels swapped left/right (:data:`FLIP18`); part channels
    permuted to their mirrored parts; PAFs also have x negated, and both components negated where the
    mirrored part is stored in the opposite direction. Mask and maximum channels are only reversed.
    """
    lay = layout(enc)
    flipped = torch.as_tensor(maps).flip(-1)
    out = flipped.clone()
    out[lay["keypoints"]] = flipped[lay["keypoints"]][torch.tensor(FLIP18, device=flipped.device)]
    perm, sign = part_flip(skeleton(enc))
    perm = torch.from_numpy(perm).to(flipped.device)
    parts = flipped[lay["parts"]]
    if enc["representation"] == "paf":
        vec = parts.reshape(len(perm), 2, *parts.shape[-2:])[perm]
        factor = torch.from_numpy(sign).to(vec)[:, None] * torch.tensor([-1.0, 1.0]).to(vec)[None, :]
        out[lay["parts"]] = (vec * factor[..., None, None]).reshape(parts.shape)
    else:
        out[lay["parts"]] = parts[perm]
    return out


def merge_flip(outputs: dict, flipped_outputs: dict, cfg: dict) -> dict:
    """The flip test [R: evaluate.py]: the average of the outputs and the un-mirrored outputs of the mirror
    image (one image, unbatched ``maps`` (C, h, w))."""
    maps = torch.as_tensor(outputs["maps"])
    back = mirror_maps(flipped_outputs["maps"], cfg["encoding"]).to(maps)
    return {**outputs, "maps": (maps + back) / 2}
