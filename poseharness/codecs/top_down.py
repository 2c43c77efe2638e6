"""The top-down heatmap codec: one person crop in, one Gaussian map per joint out, and back (SimpleBaseline / HRNet).

Sources: [R] leoxiaobin/deep-high-resolution-net.pytorch (HRNet's repository, which carries SimpleBaseline as
``pose_resnet``): ``lib/dataset/JointsDataset.py`` (``generate_target``), ``lib/core/inference.py``
(``get_max_preds``, ``get_final_preds``), ``lib/core/function.py`` (the flip test), ``lib/core/loss.py``
(``JointsMSELoss``); [R] ilovepose/DarkPose (DARK: ``lib/core/inference.py`` ``taylor``, ``gaussian_blur``; the
unbiased encoding in ``lib/dataset/JointsDataset.py``).

Conventions (those of :mod:`poseharness.codecs.heatmap`): coordinates are network-input pixels of the crop, pixel
centres at integers; heatmap cell ``(u, v)`` of stride ``R`` stands for the input position
``(u·R + R/2 − 0.5, v·R + R/2 − 0.5)``. HRNet maps cell ``u`` to input ``u·R`` instead (``mu = int(x / R + 0.5)``,
``transform_preds`` with the heatmap size); both are self-consistent, ours also makes the horizontal mirror exact
(input ``x ↦ W − 1 − x`` is cell ``u ↦ w − 1 − u``), which is why :func:`merge_flip_heatmaps` defaults to no shift.

Encoders take numpy (data-loader workers), decoders torch, unbatched ``(K, h, w)`` or batched ``(B, K, h, w)``.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import HarnessError
from .heatmap import encode_heatmaps
from .peaks import dark_refine

#: The argmax refinements of :func:`decode_heatmaps`: ``quarter`` (SimpleBaseline / HRNet: a quarter cell towards
#: the higher neighbour), ``dark`` (DARK's Taylor step on the blurred log-map), ``none`` (the argmax cell itself).
REFINEMENTS = ("quarter", "dark", "none")
#: The shift of the quarter refinement, in heatmap cells [R: lib/core/inference.py get_final_preds, ``* .25``].
QUARTER = 0.25


# ----------------------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------------------

def encode_crop_heatmaps(keypoints: np.ndarray, out_hw: tuple[int, int], stride: int, sigma: float = 2.0,
                         unbiased: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The training targets of one crop: Gaussian heatmaps and per-joint target weights.

    keypoints: (P, K, 3) float, x / y in the crop's input pixels, v in {0, 1, 2}; v = 0 for joints that are not
               labelled *or* that fell outside the crop (the loader's affine zeroes those), so both get weight 0.
               A crop normally holds one person; with several, the maps take the maximum over them.
    out_hw:    (h, w) cells of the output maps (the input size // ``stride``).
    sigma:     Gaussian standard deviation in heatmap cells [R: ``MODEL.SIGMA: 2`` for 64×48 maps].
    unbiased:  False: the Gaussian is centred on the cell nearest the joint, as SimpleBaseline / HRNet draw it
               [R: ``mu_x = int(x / feat_stride + 0.5)``]; True: on the joint's exact position, DARK's unbiased
               encoding [R: DarkPose ``mu_x = x / feat_stride``].

    Returns heatmaps (K, h, w) float32 in [0, 1] and weights (K,) float32: 1 where a person of the crop has the
    joint labelled inside the crop, else 0 [R: ``target_weight = joints_vis``]. [D] the harness's one Gaussian
    encoder (:func:`~poseharness.codecs.heatmap.encode_heatmaps`) cuts values below 0.01 (a disc of radius 3.03σ)
    where HRNet draws a 13×13 square (values down to 1e-4 at its corners); HRNet also keeps weight 1 for a joint
    outside the crop whose 3σ square still overlaps the map.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 3 or kp.shape[2] < 3:
        raise ValueError(f"keypoints must have shape (P, K, 3), got {kp.shape}")
    if stride < 1:
        raise HarnessError(f"heatmap stride must be a positive integer, got {stride}")
    maps = encode_heatmaps(kp, out_hw, stride, sigma=sigma * stride, quantise=not unbiased)
    weights = (kp[..., 2] > 0).any(axis=0).astype(np.float32)
    return maps, weights


# ----------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------

def _batched(heatmaps: torch.Tensor) -> tuple[torch.Tensor, bool]:
    hm = torch.as_tensor(heatmaps)
    if hm.dim() not in (3, 4):
        raise ValueError(f"heatmaps must be (K, h, w) or (B, K, h, w), got {tuple(hm.shape)}")
    hm = hm if hm.is_floating_point() else hm.float()
    return (hm, True) if hm.dim() == 4 else (hm[None], False)


def argmax_cells(heatmaps: torch.Tensor) -> torch.Tensor:
    """Each map's maximum: (K, h, w) or (B, K, h, w) -> (..., K, 3) rows ``[u, v, value]`` (cells, float).

    The first maximum in raster order wins a tie, as ``np.argmax`` [R: ``get_max_preds``]; a map whose maximum is
    ≤ 0 gets cell (0, 0) (HRNet's ``pred_mask``), its value still the maximum.
    """
    hm, batched = _batched(heatmaps)
    w = hm.shape[-1]
    value, idx = hm.flatten(-2).max(dim=-1)
    cells = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=-1).to(hm.dtype)
    cells = torch.where((value > 0)[..., None], cells, torch.zeros_like(cells))
    out = torch.cat([cells, value[..., None]], dim=-1)
    return out if batched else out[0]


def quarter_offsets(heatmaps: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """SimpleBaseline's refinement [R: ``get_final_preds``, ``POST_PROCESS: true``]: a shift of
    :data:`QUARTER` cell along x and along y, each towards the higher of the two neighbours on that axis (none
    when they are equal), at cells with ``1 < u < w − 1`` and ``1 < v < h − 1`` (the code's condition, so
    column and row 1 are left unrefined too).

    heatmaps: (…, K, h, w); cells: (…, K, ≥2) integer cells [u, v, ...]. Returns (…, K, 2) shifts in cells.
    """
    hm, batched = _batched(heatmaps)
    c = torch.as_tensor(cells)
    c = c if batched else c[None]
    h, w = hm.shape[-2:]
    u, v = c[..., 0].round().long(), c[..., 1].round().long()
    inside = (u > 1) & (u < w - 1) & (v > 1) & (v < h - 1)
    uc, vc = u.clamp(1, max(w - 2, 1)), v.clamp(1, max(h - 2, 1))
    flat = hm.flatten(-2)

    def at(du: int, dv: int) -> torch.Tensor:
        idx = ((vc + dv).clamp(0, h - 1) * w + (uc + du).clamp(0, w - 1))[..., None]
        return flat.gather(-1, idx)[..., 0]

    diff = torch.stack([at(1, 0) - at(-1, 0), at(0, 1) - at(0, -1)], dim=-1)
    out = QUARTER * torch.sign(diff) * inside[..., None].to(hm.dtype)
    return out if batched else out[0]


def cells_to_input(cells: torch.Tensor, stride: int) -> torch.Tensor:
    """Cell coordinates (…, 2) (fractional allowed) -> input pixels ``u·R + R/2 − 0.5`` (the pixel-centre
    transform of :mod:`poseharness.codecs.heatmap`)."""
    return cells * stride + (stride / 2.0 - 0.5)


def decode_heatmaps(heatmaps: torch.Tensor, stride: int, refine: str = "quarter",
                    dark_kernel: int = 11) -> torch.Tensor:
    """One pose per crop from its joint heatmaps.

    heatmaps: (K, h, w) or (B, K, h, w); stride: input pixels per cell.
    refine:   ``quarter`` (SimpleBaseline / HRNet [R]), ``dark`` (DARK [R: DarkPose ``get_final_preds``]: the
              maps blurred by an OpenCV-sized Gaussian of ``dark_kernel`` taps with zero padding, log, one Newton
              step from the argmax cell, taken only where the Hessian is negative definite and the cell lies 2
              cells inside the border — :func:`~poseharness.codecs.peaks.dark_refine`), or ``none`` (the argmax).
    Returns (…, K, 3) float64 rows ``[x, y, score]``: input pixels of the crop, the score the map's maximum
    (the keypoint confidence that the top-down rescoring averages over those above 0.2).
    """
    if refine not in REFINEMENTS:
        raise HarnessError(f"decode refine must be one of {', '.join(REFINEMENTS)}, got {refine!r}")
    hm, batched = _batched(heatmaps)
    peaks = argmax_cells(hm)                                     # (B, K, 3)
    xy = peaks[..., :2]
    if refine == "quarter":
        xy = xy + quarter_offsets(hm, peaks)
    elif refine == "dark":
        ok = peaks[..., 2:] > 0
        refined = dark_refine(hm, torch.where(ok, peaks, torch.zeros_like(peaks))[..., None, :], dark_kernel)
        xy = torch.where(ok, refined[..., 0, :2], xy)
    out = torch.cat([cells_to_input(xy, stride), peaks[..., 2:]], dim=-1).double()
    return out if batched else out[0]


# ----------------------------------------------------------------------------------------------------------
# The flip test
# ----------------------------------------------------------------------------------------------------------

def flip_back(heatmaps: torch.Tensor, flip_index: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The maps of a mirrored crop in the unmirrored crop's frame: x mirrored (cell ``u ↦ w − 1 − u``) and the
    channels swapped left / right [R: ``lib/utils/transforms.py flip_back``]. heatmaps (…, K, h, w); flip_index
    the schema's permutation (what the network calls joint j in the mirror is the image's joint flip_index[j])."""
    hm = torch.as_tensor(heatmaps)
    index = torch.as_tensor(np.asarray(flip_index), dtype=torch.long, device=hm.device)
    return hm.flip(-1).index_select(-3, index)


def merge_flip_heatmaps(heatmaps: torch.Tensor, mirrored: torch.Tensor, flip_index: np.ndarray | torch.Tensor,
                        shift: int = 0) -> torch.Tensor:
    """The flip test: the mean of a crop's maps and of its mirror's maps brought back (:func:`flip_back`), the
    latter first moved ``shift`` cells to the right, the first ``shift`` columns keeping their own values
    [R: ``function.py`` ``SHIFT_HEATMAP: true``: ``output_flipped[:, :, :, 1:] = output_flipped[:, :, :, 0:-1]``,
    i.e. shift 1 — "feature is not aligned" in HRNet's cell convention].

    In this module's pixel-centre convention the mirror is exact and shift 0 keeps a symmetric peak where it is;
    shift 1 moves it by half a cell after averaging. heatmaps, mirrored: (…, K, h, w). Returns (…, K, h, w).
    """
    if shift < 0 or int(shift) != shift:
        raise HarnessError(f"flip shift must be a non-negative whole number of cells, got {shift!r}")
    back = flip_back(mirrored, flip_index)
    shift = int(shift)
    if shift:
        back = torch.cat([back[..., :shift], back[..., :-shift]], dim=-1) if shift < back.shape[-1] else back
    return 0.5 * (torch.as_tensor(heatmaps) + back)


# ----------------------------------------------------------------------------------------------------------
# The loss
# ----------------------------------------------------------------------------------------------------------

def joints_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """SimpleBaseline's loss [R: ``JointsMSELoss``, ``USE_TARGET_WEIGHT: true``]: ``0.5 · mean((w·p − w·g)²)``
    over the batch, joints and cells (the code's per-joint ``MSELoss(mean)`` summed and divided by K).

    pred, target: (B, K, h, w) heatmaps; weight: (B, K) per-joint target weights (0: no supervision at all, the
    map's predictions pass no gradient). Returns a scalar tensor.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if tuple(weight.shape) != tuple(pred.shape[:2]):
        raise ValueError(f"weight {tuple(weight.shape)} must be (B, K) = {tuple(pred.shape[:2])}")
    w = weight.to(pred.dtype)[..., None, None]
    return 0.5 * ((pred * w - target * w) ** 2).mean()
