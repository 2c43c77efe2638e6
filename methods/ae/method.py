"""Associative Embedding as a harness method: shared joint heatmaps plus one tag map per joint type; the grouping
joins the heatmaps' peaks whose tags agree (:mod:`.grouping`).

``encode`` returns, besides the training targets (``heatmaps``, the tag loss's ``joints`` index list, the crowd
mask), ``tags``: the perfect tag maps of the oracle (each cell of joint k's map carries the index of the person
whose joint k is nearest), so ``decode(encode(ground truth))`` is AE with ground-truth tags: the bound of shared
heatmaps and peak NMS, where two persons' joints of one type that share a cell or a 3×3 window keep one peak.
The network and its loss are in ``model.py`` (re-exported here: the method contract).
"""
from __future__ import annotations

import numpy as np
import torch

from poseharness.codecs import cell_centres, containing_cell, encode_heatmaps, heatmap_mask
from poseharness.codecs.top_down import flip_back
from poseharness.data.sample import Sample
from poseharness.errors import HarnessError
from poseharness.multiscale import resample
from poseharness.schemas import get_schema
from poseharness.views import TestTimeViews, View

from .grouping import group
from .model import build_model, loss  # noqa: F401  (the method contract: network and loss)

paradigm = "bottom-up"

#: Target names that are model outputs.
OUTPUTS = ("heatmaps", "tags")


def _persons(sample: Sample) -> np.ndarray:
    """(P, K, 3) keypoints of the persons that get targets: annotated (not crowd, labelled keypoints)."""
    return sample.keypoints[sample.annotated]


def joint_index(keypoints: np.ndarray, out_hw: tuple[int, int], stride: int, max_people: int) -> np.ndarray:
    """The tag loss's index list [R: ``KeypointsRef``]: (max_people, K, 2) int64 rows ``[k·h·w + v·w + u, 1]`` for
    each labelled joint whose cell (u, v) lies in the map, ``[0, 0]`` otherwise; persons beyond ``max_people``
    are left out."""
    h, w = out_hw
    kp = np.asarray(keypoints, dtype=np.float64)[:max_people]
    out = np.zeros((max_people, kp.shape[1] if kp.ndim == 3 else 0, 2), dtype=np.int64)
    if len(kp) == 0:
        return out
    cells = containing_cell(kp[..., :2], stride)
    u, v = cells[..., 0], cells[..., 1]
    ok = (kp[..., 2] > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    k = np.arange(kp.shape[1])[None, :]
    out[: len(kp), :, 0] = np.where(ok, k * h * w + v * w + u, 0)
    out[: len(kp), :, 1] = ok
    return out


def perfect_tags(keypoints: np.ndarray, out_hw: tuple[int, int], stride: int) -> np.ndarray:
    """The oracle's tag maps (K, h, w) float32: cell (u, v) of map k holds p, the index of the person whose
    labelled joint k is nearest to the cell's centre (0 where no person has joint k). Persons' tags differ by at
    least 1, the default ``tag_threshold``."""
    kp = np.asarray(keypoints, dtype=np.float64)
    h, w = out_hw
    k_types = kp.shape[1] if kp.ndim == 3 else 0
    out = np.zeros((k_types, h, w), dtype=np.float32)
    if len(kp) == 0:
        return out
    ys, xs = cell_centres(h, stride), cell_centres(w, stride)
    d2 = ((xs[None, None, None, :] - kp[..., 0, None, None]) ** 2
          + (ys[None, None, :, None] - kp[..., 1, None, None]) ** 2)               # (P, K, h, w)
    d2 = np.where((kp[..., 2] > 0)[..., None, None], d2, np.inf)
    nearest = d2.argmin(axis=0)                                                  # (K, h, w)
    return np.where(np.isfinite(d2.min(axis=0)), nearest, 0).astype(np.float32)


def _keypoints(sample: Sample, cfg: dict) -> np.ndarray:
    kp = _persons(sample)
    return kp if kp.ndim == 3 else np.zeros((0, get_schema(cfg["schema"]).num_keypoints, 3))


def encode(sample: Sample, cfg: dict) -> dict[str, np.ndarray]:
    """Training targets of one network-input view: heatmaps (K, h, w) (Gaussians of ``sigma`` cells on each joint's
    cell, the maximum over persons [R: ``GenerateHeatmap``, sigma = output_res / 64 = 2]), joints (M, K, 2) for
    the tag loss, heatmap_mask (h, w) when the sample has an ignore mask."""
    enc = cfg["encoding"]
    stride = int(enc["stride"])
    out_hw = (sample.height // stride, sample.width // stride)
    kp = _keypoints(sample, cfg)
    out = {
        "heatmaps": encode_heatmaps(kp, out_hw, stride, sigma=float(enc["sigma"]) * stride, quantise=True),
        "joints": joint_index(kp, out_hw, stride, int(enc["max_people"])),
    }
    if sample.ignore_mask is not None:
        out["heatmap_mask"] = heatmap_mask(sample.ignore_mask, stride)
    return out


def oracle_outputs(sample: Sample, cfg: dict) -> dict[str, np.ndarray]:
    """The oracle's outputs of one view: the training targets and the perfect tags (K, h, w)
    (:func:`perfect_tags`), which no loss reads (so training items do not carry them)."""
    stride = int(cfg["encoding"]["stride"])
    tags = perfect_tags(_keypoints(sample, cfg), (sample.height // stride, sample.width // stride), stride)
    return {**encode(sample, cfg), "tags": tags}


def joint_order(cfg: dict) -> list[int]:
    """The grouping's joint-type order for the config's keypoint schema (``decode.order``)."""
    schema = get_schema(cfg["schema"])
    order = cfg["decode"]["order"].get(schema.name)
    if order is None or sorted(order) != list(range(schema.num_keypoints)):
        raise HarnessError(f"method ae: decode.order.{schema.name} must list each of the {schema.num_keypoints} "
                           f"joints of {schema.name!r} once, got {order}")
    return list(order)


def decode(outputs: dict[str, torch.Tensor], cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Poses (N, K, 3) ``[x, y, score]`` in network-input pixels and person scores (N,), best first, from one
    image's heatmaps (K, h, w) and tags (K·D, h, w)."""
    dec = cfg["decode"]
    heatmaps, tags = torch.as_tensor(outputs["heatmaps"]), torch.as_tensor(outputs["tags"])
    if tags.shape[0] % heatmaps.shape[0] or tags.shape[-2:] != heatmaps.shape[-2:]:
        raise HarnessError(f"method ae: tags {tuple(tags.shape)} do not fit heatmaps {tuple(heatmaps.shape)} "
                           f"(K·D tag channels on the same grid)")
    return group(heatmaps.detach().cpu(), tags.detach().cpu(), int(cfg["encoding"]["stride"]),
                 order=joint_order(cfg), topk=int(dec["topk"]), threshold=float(dec["threshold"]),
                 tag_threshold=float(dec["tag_threshold"]), max_people=int(dec["max_people"]),
                 refine_missing=bool(dec["refine"]), nms_kernel=int(dec["nms_kernel"]))


def merge_flip(outputs: dict, flipped_outputs: dict, cfg: dict) -> dict:
    """The flip test [R: test.py]: heatmaps averaged with the mirror's (un-mirrored, left / right swapped); the
    mirror's tags appended as a further tag dimension (D doubles), as the code concatenates them."""
    index = get_schema(cfg["schema"]).flip_index
    heat = torch.as_tensor(outputs["heatmaps"])
    back = flip_back(torch.as_tensor(flipped_outputs["heatmaps"]), index).to(heat)
    k = heat.shape[0]
    mirror_tags = torch.as_tensor(flipped_outputs["tags"])
    dims = mirror_tags.shape[0] // k
    mirror_tags = torch.cat([flip_back(mirror_tags[d * k:(d + 1) * k], index) for d in range(dims)])
    tags = torch.cat([torch.as_tensor(outputs["tags"]), mirror_tags.to(heat)])
    return {**outputs, "heatmaps": (heat + back) / 2, "tags": tags}


def merge_views(outputs: list[dict], views: list[View], cfg: dict) -> tuple[dict, View]:
    """The multi-scale test [R: test.py, ``multiperson``]: each scale's heatmaps (after the flip merge) resampled to
    the first scale's output grid (``decode.tta.scales``, AE's [2, 1, 0.5]) and averaged, clipped at 1; the tags of
    the scales within 0.5 of 1 resampled to it and concatenated as tag dimensions. Decoded once in the first view's
    frame (grouping, then the refinement on the fused maps)."""
    scales = TestTimeViews.from_decode(cfg["decode"]).scales
    if len(views) != len(scales) or any(v.flipped for v in views):
        raise HarnessError(f"method ae: the multi-scale test takes one unmirrored view per scale of decode.tta "
                           f"{list(scales)} (got {len(views)} views; use decode.flip for AE's flip test, not tta.flip)")
    tagged = [i for i, f in enumerate(scales) if abs(f - 1.0) < 0.5]
    if not tagged:
        raise HarnessError(f"method ae: decode.tta.scales {list(scales)} has no scale within 0.5 of 1 to read tags at")
    ref, stride = views[0], int(cfg["encoding"]["stride"])
    hw = tuple(torch.as_tensor(outputs[0]["heatmaps"]).shape[-2:])
    heat = torch.stack([resample(torch.as_tensor(o["heatmaps"]), v, ref, stride, hw)
                        for o, v in zip(outputs, views)]).mean(0).clamp(max=1.0)
    tags = torch.cat([resample(torch.as_tensor(outputs[i]["tags"]), views[i], ref, stride, hw) for i in tagged])
    return {**outputs[0], "heatmaps": heat, "tags": tags}, ref
