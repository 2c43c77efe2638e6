"""PoseDet's ground truth side: the points a candidate regresses, the coarse assignment (one candidate per person)
and the OKS of the refinement / classification assigners. Pure numpy (encode, the oracle) and torch (the loss).

Facts [R: IIGROUP/PoseDet, ``PoseDet/assigners/keypoint_assigner.py`` (KeypointsAssigner: scale 4, pos_num 1,
number_keypoints_thr 3), ``PoseDet/assigners/oks_assigner.py``, ``PoseDet/pipelines/load_keypoints.py``] as listed in
shared/design/methods.md §3.3 and issue 16:

- Candidates of level l (stride s) are the grid points (j·s, i·s) of its (h, w) map: no half-stride shift.
  A pose is its candidate + offset · s per joint, offsets (dy, dx) per joint in stride units.
- Points: the schema's K joints, plus, when K is even (CrowdPose's 14), one extra point = the mean of the labelled
  shoulders and hips, labelled when at least 3 of the 4 are (odd K for the 1 x K pose-embedding kernel).
  The extra point is regressed like a joint but is excluded from every OKS (assignment and NMS) and dropped from
  the output.
- A person counts (is assigned) when it is annotated (not crowd, num_keypoints > 0) and has >= 3 labelled joints.
- Level: int((log2(w / 4) + log2(h / 4)) / 2) of the labelled joints' extent w x h (px), clamped to the
  levels that exist (log2 of the smallest / largest stride). w, h are clamped to >= 1 px first [D].
- Candidate: the grid point of that level nearest the centroid, distance ‖(dx / w, dy / h)‖ (separable, so the
  nearest is the rounded grid position); persons are visited in annotation order and a person takes a candidate
  already taken only when it is strictly closer to it (the earlier person then loses it), as PointAssigner.
  Centroid "keypoints": the mean of the labelled joints [R, P]; "box": the centre of the labelled joints' extent
  box (Table 5's bounding-box centroid) [R: assigners/keypoint_assigner.py, center_type 'box', pts2box].
- OKS(pose, gt) = mean over gt's labelled joints (of the schema's K) of exp(-d² / ((2σ)² · w · h)) with w · h
  the gt's joint-extent area (no factor 2, unlike COCO's OKS).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from poseharness.schemas import get_schema

CENTRE_PARTS = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
MIN_JOINTS = 3          # persons with fewer labelled joints are not assigned [R]
LEVEL_SCALE = 4.0       # PointAssigner's scale [R]


def num_points(schema_name: str) -> int:
    """K' the heads regress: K, plus the extra centre point when K is even."""
    k = get_schema(schema_name).num_keypoints
    return k + 1 if k % 2 == 0 else k


def with_extra_point(keypoints: np.ndarray, schema_name: str) -> np.ndarray:
    """(P, K, 3) -> (P, K', 3): the extra point (mean of the labelled shoulders and hips, v = 2 when >= 3 of the 4
    are labelled, else (0, 0, 0)) appended when K is even."""
    schema = get_schema(schema_name)
    kp = np.asarray(keypoints, dtype=np.float32).reshape(-1, schema.num_keypoints, 3)
    if schema.num_keypoints % 2:
        return kp
    idx = [schema.keypoints.index(n) for n in CENTRE_PARTS]
    parts = kp[:, idx]
    lab = parts[..., 2] > 0
    n = lab.sum(1)
    mean = np.where(lab[..., None], parts[..., :2], 0).sum(1) / np.maximum(n, 1)[:, None]
    extra = np.zeros((len(kp), 1, 3), np.float32)
    ok = n >= 3
    extra[ok, 0, :2] = mean[ok]
    extra[ok, 0, 2] = 2.0
    return np.concatenate([kp, extra], axis=1)


def with_extra_point_torch(keypoints: torch.Tensor, schema_name: str) -> torch.Tensor:
    """The torch form of :func:`with_extra_point` (same values)."""
    return torch.from_numpy(with_extra_point(keypoints.detach().cpu().numpy(), schema_name)).to(keypoints.device)


def valid_persons(keypoints: np.ndarray, annotated: np.ndarray, k: int) -> np.ndarray:
    """(P,) bool: annotated persons with >= 3 labelled joints among the schema's K."""
    return np.asarray(annotated, bool) & ((np.asarray(keypoints)[:, :k, 2] > 0).sum(1) >= MIN_JOINTS)


def joint_extent(keypoints: np.ndarray, k: int) -> np.ndarray:
    """(P, 4) x1, y1, x2, y2 of the labelled joints among the first k (zeros for none)."""
    kp = np.asarray(keypoints, dtype=np.float64)[:, :k]
    lab = kp[..., 2] > 0
    out = np.zeros((len(kp), 4))
    for p in range(len(kp)):
        if lab[p].any():
            xy = kp[p, lab[p], :2]
            out[p] = [*xy.min(0), *xy.max(0)]
    return out


def level_of(w: float, h: float, strides: tuple[int, ...]) -> int:
    """Index of the FPN level of a person whose joint extent is w x h px [R: PointAssigner]."""
    w, h = max(float(w), 1.0), max(float(h), 1.0)
    lvl = int((math.log2(w / LEVEL_SCALE) + math.log2(h / LEVEL_SCALE)) / 2)    # int() truncates, as .int()
    lo, hi = int(math.log2(strides[0])), int(math.log2(strides[-1]))
    return min(max(lvl, lo), hi) - lo


@dataclass
class Assignment:
    """The coarse assignment of one view.

    persons:   (P,) indices (into the keypoints given) of the persons that were considered (valid)
    level:     (P,) FPN level index of each, cell (P, 2) its candidate (row i, column j) on that level
    won:       (P,) bool: the person kept its candidate (False: a closer person took it)
    """

    persons: np.ndarray
    level: np.ndarray
    cell: np.ndarray
    won: np.ndarray


def assign(keypoints: np.ndarray, boxes: np.ndarray, annotated: np.ndarray, k: int, strides: tuple[int, ...],
           shapes: list[tuple[int, int]], centroid: str = "keypoints") -> Assignment:
    """The coarse assignment (module docstring). keypoints (P, K', 3) px, boxes (P, 4) x, y, w, h px (unused: the
    box centroid is the joint-extent box's, as the official code), shapes: (h, w) of each level's map."""
    kp = np.asarray(keypoints, dtype=np.float64)
    valid = np.flatnonzero(valid_persons(kp, annotated, k))
    ext = joint_extent(kp, k)
    levels, cells, dists = [], [], []
    owner: dict[tuple[int, int, int], tuple[int, float]] = {}
    for n, p in enumerate(valid):
        w, h = max(ext[p, 2] - ext[p, 0], 1.0), max(ext[p, 3] - ext[p, 1], 1.0)
        lvl = level_of(w, h, strides)
        s = strides[lvl]
        if centroid == "keypoints":
            lab = kp[p, :k, 2] > 0
            cx, cy = kp[p, :k][lab, :2].mean(0)
        else:
            cx, cy = (ext[p, 0] + ext[p, 2]) / 2, (ext[p, 1] + ext[p, 3]) / 2
        mh, mw = shapes[lvl]
        i = int(np.clip(np.floor(cy / s + 0.5), 0, mh - 1))
        j = int(np.clip(np.floor(cx / s + 0.5), 0, mw - 1))
        d = math.hypot((cx - j * s) / w, (cy - i * s) / h)
        levels.append(lvl)
        cells.append((i, j))
        dists.append(d)
        key = (lvl, i, j)
        if key not in owner or d < owner[key][1]:
            owner[key] = (n, d)
    won = np.array([owner[(levels[n], *cells[n])][0] == n for n in range(len(valid))], dtype=bool)
    return Assignment(valid.astype(np.int64), np.asarray(levels, np.int64).reshape(-1),
                      np.asarray(cells, np.int64).reshape(-1, 2), won)


def oks_torch(poses: torch.Tensor, gt: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """PoseDet's assigner OKS: poses (N, K, 2) candidates, gt (G, K, 3) with v, sigmas (K,) -> (N, G).

    mean over gt's labelled joints of exp(-d² / ((2σ)² · area)), area = w · h of gt's labelled-joint extent."""
    lab = gt[..., 2] > 0                                                   # (G, K)
    big = torch.finfo(gt.dtype).max
    x, y = gt[..., 0], gt[..., 1]
    w = torch.where(lab, x, -big).amax(1) - torch.where(lab, x, big).amin(1)
    h = torch.where(lab, y, -big).amax(1) - torch.where(lab, y, big).amin(1)
    area = (w * h).clamp(min=1.0)                                           # [D] clamp of degenerate extents
    d2 = ((poses[:, None, :, :] - gt[None, :, :, :2]) ** 2).sum(-1)      # (N, G, K)
    e = torch.exp(-d2 / ((2 * sigmas) ** 2 * area[None, :, None]))
    return (e * lab[None]).sum(-1) / lab.sum(-1).clamp(min=1)[None]
