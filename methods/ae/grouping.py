"""Associative Embedding's decoder: peaks of the shared heatmaps joined into persons by their tags.

Facts from the official code [R: princeton-vl/pose-ae-train ``utils/group.py`` (``match_by_tag``,
``HeatmapParser``) and ``test.py`` (``refine``, the person score)]:

1. Candidates: 3×3 max-pool NMS of each joint's heatmap, the ``topk`` (30) highest local maxima per joint, those
   above ``threshold`` (0.1 at test) kept.
2. Matching, joint type by joint type in a torso-first ``order``: the first type's candidates each start a person;
   every later type's candidates are matched to the persons so far by the Hungarian algorithm on the cost
   ``round(d)·100 − v`` (``d`` the RMS distance between the candidate's tag and the mean tag of the person's joints
   so far, ``v`` the candidate's heatmap value); a matched pair with ``d < tag_threshold`` (1) joins the person,
   every other candidate starts a new person. Once ``max_people`` (30) persons exist, later joint types are skipped.
3. Position: the peak cell moved a quarter cell along x and along y towards the higher neighbour (``adjust``;
   on a tie, towards the lower index: the code's ``>`` test), then to input pixels.
4. Person score: the mean of the K heatmap values (0 for a missing joint), before the refinement.
5. Refinement (optional): each missing joint is the argmax over its whole map of ``heatmap − round(‖tag − m‖)``,
   ``m`` the person's mean tag, adjusted as in 3.

Two departures from the code [D]: persons are kept in a list, not in a dict keyed by the float value of their first
tag (two persons whose first tags are equal would merge there; with the oracle's integer tags they are often
equal); a refined joint keeps its heatmap value as its score (the code sets 1).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from poseharness.codecs.peaks import local_maxima
from poseharness.codecs.top_down import QUARTER, cells_to_input

#: The Hungarian cost's weight on the rounded tag distance [R: ``np.round(diff) * 100 - joints[:, 2:3]``].
ROUNDED_TAG_WEIGHT = 100.0
#: The cost of a padding column: a candidate matched to it starts a new person [R: ``1e10``].
NO_PERSON = 1e10


def candidates(heatmaps: torch.Tensor, tags: torch.Tensor, topk: int, nms_kernel: int = 3
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per joint type, its ``topk`` highest local maxima.

    heatmaps: (K, h, w); tags: (K·D, h, w), channel ``d·K + k`` = dimension d of joint k's tag (D = 1 for one
    network pass; the flip test concatenates the mirror's tags as D = 2 [R: test.py]).
    Returns cells (K, k, 2) int [u, v], values (K, k) float (0 where fewer maxima exist), tags (K, k, D).
    """
    k_types, h, w = heatmaps.shape
    dims = tags.shape[0] // k_types
    keep = local_maxima(heatmaps[None].float(), nms_kernel)[0]
    scores = torch.where(keep, heatmaps.float(), torch.zeros((), dtype=torch.float32))
    n = min(topk, h * w)
    vals, idx = scores.reshape(k_types, -1).topk(n, dim=1)
    flat_tags = tags.float().reshape(dims, k_types, h * w)
    tag_k = torch.stack([flat_tags[d].gather(1, idx) for d in range(dims)], dim=-1)
    cells = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=-1)
    return cells.numpy(), vals.clamp(min=0).numpy().astype(np.float64), tag_k.numpy().astype(np.float64)


def match_by_tag(cells: np.ndarray, values: np.ndarray, tags: np.ndarray, order, threshold: float,
                 tag_threshold: float, max_people: int) -> tuple[np.ndarray, np.ndarray]:
    """Step 2 of the module docstring. cells (K, k, 2), values (K, k), tags (K, k, D).

    Returns joints (N, K, 3) ``[u, v, value]`` in cells (value 0: the person lacks the joint) and the persons'
    mean tags (N, D).
    """
    k_types, _, dims = tags.shape
    joints: list[np.ndarray] = []              # per person (K, 3)
    person_tags: list[list[np.ndarray]] = []   # per person, the tags of its joints
    for k in order:
        ok = values[k] > threshold
        c, v, t = cells[k][ok], values[k][ok], tags[k][ok]
        if len(v) == 0:
            continue
        if joints and len(joints) >= max_people:
            continue                            # [R: ignore_too_much]
        assigned = np.full(len(v), -1)
        if joints:
            means = np.stack([np.mean(p, axis=0) for p in person_tags])            # (N, D)
            dist = np.sqrt(((t[:, None, :] - means[None, :, :]) ** 2).mean(axis=2))  # (n, N)
            cost = np.round(dist) * ROUNDED_TAG_WEIGHT - v[:, None]
            if cost.shape[0] > cost.shape[1]:
                cost = np.concatenate([cost, np.full((len(v), len(v) - len(means)), NO_PERSON)], axis=1)
            rows, cols = linear_sum_assignment(cost)
            good = (cols < len(means)) & (dist[rows, np.minimum(cols, len(means) - 1)] < tag_threshold)
            assigned[rows[good]] = cols[good]
        for i in range(len(v)):
            if assigned[i] < 0:
                joints.append(np.zeros((k_types, 3)))
                person_tags.append([])
                assigned[i] = len(joints) - 1
            joints[assigned[i]][k] = (c[i, 0], c[i, 1], v[i])
            person_tags[assigned[i]].append(t[i])
    if not joints:
        return np.zeros((0, k_types, 3)), np.zeros((0, dims))
    return np.stack(joints), np.stack([np.mean(p, axis=0) for p in person_tags])


def adjust(heatmaps: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Step 3: (N, K, 3) cells -> the same moved ±¼ cell per axis towards the higher neighbour (clamped at the
    border, ties towards the lower index). Missing joints (value 0) are left as they are."""
    k_types, h, w = heatmaps.shape
    out = joints.astype(np.float64).copy()
    if len(out) == 0:
        return out
    u, v = out[..., 0].astype(int), out[..., 1].astype(int)
    kk = np.broadcast_to(np.arange(k_types), u.shape)
    right = heatmaps[kk, v, np.minimum(u + 1, w - 1)] > heatmaps[kk, v, np.maximum(u - 1, 0)]
    down = heatmaps[kk, np.minimum(v + 1, h - 1), u] > heatmaps[kk, np.maximum(v - 1, 0), u]
    found = out[..., 2] > 0
    out[..., 0] += np.where(found, np.where(right, QUARTER, -QUARTER), 0.0)
    out[..., 1] += np.where(found, np.where(down, QUARTER, -QUARTER), 0.0)
    return out


def refine(heatmaps: np.ndarray, tags: np.ndarray, joints: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Step 5: fill each person's missing joints. heatmaps (K, h, w), tags (K·D, h, w) as in :func:`candidates`,
    joints (N, K, 3) cells, means (N, D) the persons' mean tags. Returns the joints with the filled ones in place
    (already adjusted by :func:`adjust`), the others unchanged."""
    k_types, h, w = heatmaps.shape
    if len(joints) == 0:
        return joints
    t = tags.reshape(-1, k_types, h, w)                                            # (D, K, h, w)
    dist = np.sqrt(((t[None] - means[:, :, None, None, None]) ** 2).sum(axis=1))  # (N, K, h, w)
    score = heatmaps[None] - np.round(dist)
    best = score.reshape(len(joints), k_types, -1).argmax(axis=2)
    cand = np.stack([best % w, best // w, heatmaps.reshape(k_types, -1)[np.arange(k_types), best]], axis=-1)
    cand = adjust(heatmaps, cand.astype(np.float64))
    fill = (joints[..., 2] <= 0) & (cand[..., 2] > 0)
    return np.where(fill[..., None], cand, joints)


def group(heatmaps: torch.Tensor, tags: torch.Tensor, stride: int, *, order, topk: int, threshold: float,
          tag_threshold: float, max_people: int, refine_missing: bool, nms_kernel: int = 3
          ) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-5: one image's poses (N, K, 3) ``[x, y, score]`` in network-input pixels and person scores (N,),
    best first. heatmaps (K, h, w), tags (K·D, h, w) at ``stride`` input pixels per cell."""
    cells, values, tag_k = candidates(heatmaps, tags, topk, nms_kernel)
    joints, means = match_by_tag(cells, values, tag_k, order, threshold, tag_threshold, max_people)
    hm = heatmaps.float().numpy().astype(np.float64)
    scores = joints[..., 2].mean(axis=1) if len(joints) else np.zeros(0)
    joints = adjust(hm, joints)
    if refine_missing:
        joints = refine(hm, tags.float().numpy().astype(np.float64), joints, means)
    poses = joints.copy()
    poses[..., :2] = cells_to_input(joints[..., :2], stride)
    poses[..., :2] = np.where(joints[..., 2:] > 0, poses[..., :2], 0.0)
    rank = np.argsort(-scores, kind="stable")
    return poses[rank], scores[rank]
