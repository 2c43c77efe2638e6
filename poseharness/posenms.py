"""Pose non-maximum suppression: the inference step that drops duplicate poses of one person in one image.

Greedy NMS: visit the poses best score first (ties: lower index first); keep a pose unless an already kept
pose is more similar to it than ``threshold`` (similarity > threshold suppresses, as HRNet, MMPose, PoseDet
and ``torchvision.ops.nms`` do). Kept indices come back best score first. Similarity is one of:

- OKS, ``form="coco"`` — the OKS of the COCO evaluation as used by SimpleBaseline / HRNet's ``oks_nms``
  (``lib/nms/nms.py`` ``oks_iou``: ``e = d² / vars / (area + eps) / 2`` with ``vars = (2σ)²``), the kept
  pose playing the ground truth: ``area`` is the KEPT pose's area and all K joints count. HRNet passes
  ``(a_kept + a_candidate) / 2`` there (MMPose too); this harness has always used the kept pose's area (the
  two agree for equal areas), so results do not move. Same operation order as :func:`poseharness.eval.oks`,
  so the values are bit-equal to it with the kept pose as a GT whose joints are all labelled.
- OKS, ``form="posedet"`` — PoseDet's ``_oks_nms`` [R: IIGROUP/PoseDet, ``PoseDet/keypoints_nms.py``]:
  ``mean_j exp(-d_j² / ((2σ_j)² · area))`` — no ½ factor — with ``area`` the mean of the two poses'
  joint-extent box areas. PoseDet clamps each area to at least 32² px² first; that clamp is not applied here
  (pass ``areas=np.maximum(joint_extent_areas(poses), 32 ** 2)`` to get it) and it computes in float32.
- IoU of the joint-extent boxes (``torchvision.ops.nms``).

Joint-extent box: x1, y1, x2, y2 = min / max of the pose's labelled joints (v > 0 when the poses have a third
column, all joints otherwise); (0, 0, 0, 0) for a pose with no labelled joint. Its area is w · h in px².
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from .errors import HarnessError

FORMS = ("coco", "posedet")
TYPES = ("oks", "iou", "none")


def _check(poses, scores=None):
    """poses as float64 (N, K, 2|3) and scores as float64 (N,); ValueError on wrong shapes."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[2] not in (2, 3):
        raise ValueError(f"poses must be (N, K, 2|3), got {poses.shape}")
    if scores is None:
        return poses, None
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (poses.shape[0],):
        raise ValueError(f"scores must be (N,) = ({poses.shape[0]},), got {scores.shape}")
    return poses, scores


def labelled(poses) -> np.ndarray:
    """(N, K) bool: v > 0 for (N, K, 3) poses, all True for (N, K, 2)."""
    poses, _ = _check(poses)
    if poses.shape[2] == 3:
        return poses[..., 2] > 0
    return np.ones(poses.shape[:2], dtype=bool)


def joint_extent_boxes(poses) -> np.ndarray:
    """(N, 4) float64 x1, y1, x2, y2 in px: min / max of each pose's labelled joints; zeros when it has none."""
    poses, _ = _check(poses)
    mask = labelled(poses)[..., None]                            # (N, K, 1)
    xy = poses[..., :2]
    low = np.where(mask, xy, np.inf).min(axis=1, initial=np.inf)    # (N, 2)
    high = np.where(mask, xy, -np.inf).max(axis=1, initial=-np.inf)
    boxes = np.concatenate([low, high], axis=1)
    boxes[~mask.any(axis=(1, 2))] = 0.0
    return boxes


def joint_extent_areas(poses) -> np.ndarray:
    """(N,) float64 px²: w · h of each pose's joint-extent box (0 for no or one labelled joint)."""
    boxes = joint_extent_boxes(poses)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def oks_matrix(poses, sigmas, *, areas=None, form: str = "coco") -> np.ndarray:
    """Pairwise OKS of poses: ``[c, k]`` = candidate c against kept pose k.

    poses:  (N, K, 2|3) float — x, y in px; a third column is v (``form="posedet"``) or ignored (``"coco"``)
    sigmas: (K,) float — per-joint σ
    areas:  (N,) float px² — each pose's scale; None: its joint-extent box area (labelled joints)
    form:   "coco" (the kept pose's area, ½ factor, all K joints) or "posedet" (mean of the two areas, no ½,
            only the joints labelled (v > 0) in both poses; 0 when they share none). See the module docstring.
    Returns (N, N) float64 in [0, 1]; "coco" is not symmetric (the area is the column's). Memory O(N²·K).
    """
    poses, _ = _check(poses)
    n, k = poses.shape[:2]
    sigmas = np.asarray(sigmas, dtype=np.float64)
    areas = joint_extent_areas(poses) if areas is None else np.asarray(areas, dtype=np.float64)
    if sigmas.shape != (k,) or areas.shape != (n,):
        raise ValueError(f"shapes disagree: poses {poses.shape}, sigmas {sigmas.shape} (want ({k},)), "
                         f"areas {areas.shape} (want ({n},))")
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    dx = poses[:, None, :, 0] - poses[None, :, :, 0]            # (N, N, K)
    dy = poses[:, None, :, 1] - poses[None, :, :, 1]
    variances = (2.0 * sigmas) ** 2
    if form == "coco":
        # Same operation order as eval.oks (and pycocotools), area of the kept pose (column).
        e = (dx ** 2 + dy ** 2) / variances / (areas[None, :, None] + np.spacing(1)) / 2
        return np.exp(-e).mean(axis=2)
    mean_area = (areas[:, None] + areas[None, :]) / 2
    e = (dx ** 2 + dy ** 2) / variances / (mean_area[..., None] + np.spacing(1))
    vis = labelled(poses)
    both = vis[:, None, :] & vis[None, :, :]                     # (N, N, K)
    count = both.sum(axis=2)
    total = np.where(both, np.exp(-e), 0.0).sum(axis=2)
    return np.divide(total, count, out=np.zeros((n, n)), where=count > 0)


def _greedy(similarity: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS over a precomputed (N, N) ``[candidate, kept]`` similarity; kept indices best first."""
    suppressed = np.zeros(len(scores), dtype=bool)
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= similarity[:, i] > threshold
    return np.asarray(keep, dtype=np.int64)


def oks_nms(poses, scores, sigmas, threshold: float, *, areas=None, form: str = "coco") -> np.ndarray:
    """Greedy OKS-NMS.

    poses:     (N, K, 2|3) float — x, y in px (third column: see ``form``)
    scores:    (N,) float — higher is better
    sigmas:    (K,) float — per-joint σ
    threshold: a pose is dropped when its OKS to a kept, better pose exceeds this
    areas:     (N,) float px²; None: joint-extent box areas from the labelled joints
    form:      "coco" or "posedet", see :func:`oks_matrix` and the module docstring
    Returns the kept indices (int64), best score first (ties: lower index first).
    """
    poses, scores = _check(poses, scores)
    similarity = oks_matrix(poses, sigmas, areas=areas, form=form)
    return _greedy(similarity, scores, threshold)


def iou_nms(poses, scores, threshold: float) -> np.ndarray:
    """Greedy IoU-NMS of the poses' joint-extent boxes through ``torchvision.ops.nms`` (float64).

    poses: (N, K, 2|3) float px; scores: (N,). A pose is dropped when its box IoU to a kept, better pose exceeds
    ``threshold``; a pair of zero-area boxes has no IoU (never suppresses). Returns kept indices (int64), best
    score first (ties: lower index first).
    """
    import torch
    import torchvision

    poses, scores = _check(poses, scores)
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = torch.from_numpy(joint_extent_boxes(poses)[order])
    ranks = torch.arange(len(order), 0, -1, dtype=torch.float64)   # distinct, in our tie order
    keep = torchvision.ops.nms(boxes, ranks, float(threshold)).numpy()
    return order[keep].astype(np.int64)


@dataclass(frozen=True)
class PoseNMSSetting:
    """How a method suppresses duplicate poses: ``type`` "oks" | "iou" | "none", ``threshold`` (needed by
    "oks" and "iou", in [0, 1]) and the OKS ``form`` "coco" | "posedet" (read by "oks" only)."""

    type: str = "oks"
    threshold: float | None = None
    form: str = "coco"

    def __post_init__(self):
        if self.type not in TYPES:
            raise HarnessError(f"pose NMS setting type: unknown value {self.type!r} (allowed: {', '.join(TYPES)})")
        if self.form not in FORMS:
            raise HarnessError(f"pose NMS setting form: unknown value {self.form!r} (allowed: {', '.join(FORMS)})")
        t = self.threshold
        if self.type != "none" and (isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 <= t <= 1):
            raise HarnessError(f"pose NMS setting threshold: must be a number in [0, 1] for type {self.type!r}, "
                               f"got {t!r}")

    @classmethod
    def from_dict(cls, value: Mapping) -> PoseNMSSetting:
        """The setting from a mapping with keys among type, threshold, form; HarnessError on anything else."""
        keys = tuple(f.name for f in fields(cls))
        if not isinstance(value, Mapping):
            raise HarnessError(f"pose NMS setting: must be a mapping with keys {', '.join(keys)}, got {value!r}")
        unknown = sorted(set(value) - set(keys), key=str)
        if unknown:
            raise HarnessError(f"pose NMS setting {unknown[0]!r}: unknown key (allowed: {', '.join(keys)})")
        return cls(**value)


def pose_nms(poses, scores, setting: Mapping | PoseNMSSetting, sigmas, *, areas=None) -> np.ndarray:
    """The one entry point: NMS as ``setting`` says (a :class:`PoseNMSSetting` or its dict).

    poses (N, K, 2|3) float px, scores (N,), sigmas (K,), areas (N,) px² or None (OKS only). Returns kept
    indices (int64), best score first; type "none" keeps all.
    """
    if not isinstance(setting, PoseNMSSetting):
        setting = PoseNMSSetting.from_dict(setting)
    if setting.type == "oks":
        return oks_nms(poses, scores, sigmas, setting.threshold, areas=areas, form=setting.form)
    if setting.type == "iou":
        return iou_nms(poses, scores, setting.threshold)
    _, scores = _check(poses, scores)
    return np.argsort(-scores, kind="stable").astype(np.int64)
