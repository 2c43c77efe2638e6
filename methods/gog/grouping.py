"""Greedy offset-guided keypoint grouping (GOG; Li, Xiang, Chen, Wang, ICME 2021).

Facts from the paper (§2.3-2.4) and the official decoder (hellojialee/OffsetGuided, ``decoder/collect.py``,
``decoder/group.py``, ``evaluate.py``); see ``shared/design/methods.md`` §1.6.

1. Candidate limbs (:func:`candidate_limbs`, fully vectorised over limb types and start x end pairs).
   For limb type ``l = (a, b)`` and start candidate ``i`` of type ``a``: ``J_guid = J_a[i] + guide[l, i]``;
   the end is the valid type-``b`` candidate nearest to ``J_guid``; ``Dl = |J_guid - J_end|``,
   ``L = max(|J_a[i] - J_end|, min_len)``, ``S = s_a[i] * s_end * exp(-Dl / L)``; kept if ``Dl < dist_max``.
   One start candidate yields at most one limb per type, as in the official code.
2. Greedy assembly (:func:`group`), limb types in skeleton order; within a type the limbs are sorted by ``S``
   (descending) and only the best limb per end candidate is kept (official ``_delete_reconns``; starts are
   unique already). For each limb, with ``pf``/``pt`` the persons holding its start/end candidate:

   - neither held: a new person with both keypoints;
   - both in the same person: nothing new; the stored limb scores of both slots become ``max(stored, S)``;
   - one held by person ``p``: the free candidate is written into ``p`` if ``p``'s slot of that type is empty or
     ``S`` beats ``p``'s stored limb score at *either* endpoint slot (the official ``replace_mask``); a
     keypoint it displaces is released. Otherwise the limb is dropped;
   - held by two persons: merged if no keypoint type is filled in both, else the limb is dropped.

3. Person score: the mean heatmap response of its keypoints (the paper's text; official ``_delete_sort``,
   ``sort_dim=2``); persons with mean < ``person_threshold`` are dropped. ``score_mode='sum_over_K'`` returns
   instead the score the official ``evaluate.py`` (``run_images``; ``utils/simulate.py`` for its oracle) writes
   to the COCO results file, ``sum(v) / K`` with missing keypoints as 0 (the threshold still applies to the
   mean, as in the official pipeline). The published figures were scored with it, so GOG's ``method.yaml``
   decodes with ``sum_over_K`` by default; the function's default stays ``'mean'``.

Where the official code is ill-defined we make it well-defined (each choice changes nothing when every limb
is right, e.g. in ground-truth oracles):

- The official code handles all limbs of one type in one vectorised step against the persons as they were
  before that type; when two limbs of a type touch one person, numpy's last-write-wins decides. Here limbs
  are applied one by one in descending ``S``, so the stronger limb decides.
- Two persons holding the same keypoint type with different candidates are never merged; the official
  element-wise maximum over both rows would mix their coordinates.
- A candidate belongs to at most one person (the official code can leave it in two when a replacement is
  refused on one side only).
- Equidistant end candidates: the higher heatmap score wins, then the lower index.
- A candidate is valid when its score is positive (and ``>= peak_threshold``) and its coordinates are finite;
  the official code also drops real keypoints lying at x <= 0 or y <= 0, a side effect of its marker for
  invalid candidates (a shift by -100000 px), which we do not copy.

Isolated keypoints (no limb to any other keypoint) never form a person, as in the official code ("can not
deal with isolated keypoints"): every person has at least two keypoints.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from poseharness.errors import HarnessError

SCORE_MODES = ("mean", "sum_over_K")


class LimbCandidates(NamedTuple):
    """The candidate limb of every (limb type, start candidate); each array is ``(L, k)``.

    Start candidate ``i`` of limb type ``l = (a, b)`` is ``peaks[a, i]``; its end is ``peaks[b, end[l, i]]``.
    """

    end: np.ndarray  # int64 index of the paired end candidate; -1 for an empty start or no valid end
    offset_error: np.ndarray  # float64 Dl = |J_guid - J_end|, input px (also where Dl >= dist_max); else inf
    length: np.ndarray  # float64 L = max(|J_start - J_end|, min_len), input px; NaN where end is -1
    score: np.ndarray  # float64 S = s_start * s_end * exp(-Dl / L); 0 where not valid
    valid: np.ndarray  # bool: valid start, valid end found and Dl < dist_max


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor (any device) without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_inputs(peaks, guides, skeleton) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    peaks = _to_numpy(peaks)
    guides = _to_numpy(guides)
    pairs = np.asarray(skeleton, dtype=np.int64)
    if pairs.size == 0:
        pairs = pairs.reshape(0, 2)
    if peaks.ndim != 3 or peaks.shape[2] != 3:
        raise HarnessError(f"grouping: peaks has shape {peaks.shape}, expected (K, k, 3) [x, y, score]")
    n_types, k = peaks.shape[:2]
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise HarnessError(f"grouping: skeleton has shape {pairs.shape}, expected a sequence of (from, to) pairs")
    if pairs.size and (pairs.min() < 0 or pairs.max() >= n_types):
        raise HarnessError(f"grouping: skeleton refers to keypoint types outside 0..{n_types - 1}: {pairs.tolist()}")
    loops = np.flatnonzero(pairs[:, 0] == pairs[:, 1])
    if loops.size:
        raise HarnessError(f"grouping: skeleton limb {int(loops[0])} joins keypoint type {int(pairs[loops[0], 0])}"
                           " to itself")
    if guides.shape != (len(pairs), k, 2):
        raise HarnessError(f"grouping: guides has shape {guides.shape}, expected (L={len(pairs)}, k={k}, 2) "
                           f"for a {len(pairs)}-limb skeleton and {k} candidates per keypoint type")
    return peaks, guides, pairs


def _valid(peaks: np.ndarray, peak_threshold: float) -> np.ndarray:
    """``(..., k)`` bool: candidate slots that hold a keypoint."""
    return (peaks[..., 2] > 0) & (peaks[..., 2] >= peak_threshold) & np.isfinite(peaks).all(axis=-1)


def candidate_limbs(peaks, guides, skeleton: Sequence[tuple[int, int]], *, dist_max: float = 20.0,
                    min_len: float = 0.5, peak_threshold: float = 0.0) -> LimbCandidates:
    """Pair every start candidate of every limb type with the end candidate nearest to its guided position.

    Args:
        peaks: ``(K, k, 3)`` [x, y, score] per keypoint type, input px; a slot with score 0 (or below
            ``peak_threshold``, or non-finite) is empty.
        guides: ``(L, k, 2)`` guiding offset read at ``peaks[from_l, i]``, input px.
        skeleton: ``L`` (from, to) keypoint-type pairs.
        dist_max: a limb is kept only if ``Dl < dist_max`` (px).
        min_len: lower clamp of the limb length ``L`` (px), so coincident endpoints do not divide by zero.
        peak_threshold: candidates with a lower score are empty (the official ``thre_hmp``).

    Returns:
        :class:`LimbCandidates` with ``(L, k)`` arrays.
    """
    peaks, guides, pairs = _check_inputs(peaks, guides, skeleton)
    n_limbs, k = len(pairs), peaks.shape[1]
    src = peaks[pairs[:, 0]]  # (L, k, 3)
    dst = peaks[pairs[:, 1]]  # (L, k, 3)
    src_ok = _valid(src, peak_threshold)
    dst_ok = _valid(dst, peak_threshold)

    guided = src[..., :2] + guides  # (L, k, 2) J_guid
    diff = guided[:, :, None, :] - dst[:, None, :, :2]  # (L, k_start, k_end, 2)
    dist = np.where(dst_ok[:, None, :], np.hypot(diff[..., 0], diff[..., 1]), np.inf)
    d_min = dist.min(axis=-1, initial=np.inf)  # (L, k); NaN where the guide is NaN
    # Among equidistant ends take the higher score, then the lower index (argmax returns the first).
    tied = dist == d_min[..., None]
    end = np.where(tied, dst[:, None, :, 2], -np.inf).argmax(axis=-1) if k else np.zeros((n_limbs, 0), np.int64)

    end_kp = dst[np.arange(n_limbs)[:, None], end]  # (L, k, 3)
    span = src[..., :2] - end_kp[..., :2]
    length = np.maximum(np.hypot(span[..., 0], span[..., 1]), min_len)
    paired = src_ok & np.isfinite(d_min)  # d_min is inf without a valid end, NaN for a NaN guide
    valid = paired & (d_min < dist_max)
    with np.errstate(invalid="ignore", over="ignore"):
        score = np.where(valid, src[..., 2] * end_kp[..., 2] * np.exp(-d_min / length), 0.0)
    return LimbCandidates(end=np.where(paired, end, -1).astype(np.int64),
                          offset_error=np.where(paired, d_min, np.inf),
                          length=np.where(paired, length, np.nan), score=score, valid=valid)


def _assemble(limbs: LimbCandidates, pairs: np.ndarray, n_types: int, k: int) -> np.ndarray:
    """Greedy assembly; returns ``(P, K)`` int64 candidate index per person and keypoint type (-1 = none)."""
    capacity = int(limbs.valid.sum())  # every limb starts at most one person
    member = np.full((capacity, n_types), -1, dtype=np.int64)  # person x type -> candidate index
    link = np.full((capacity, n_types), -1.0)  # best limb score that wrote each slot (-1 = empty)
    owner = np.full((n_types, k), -1, dtype=np.int64)  # type x candidate -> person
    n_persons = 0

    for l, (a, b) in enumerate(pairs.tolist()):
        starts = np.flatnonzero(limbs.valid[l])
        if starts.size == 0:
            continue
        starts = starts[np.argsort(-limbs.score[l, starts], kind="stable")]
        # Best limb per end candidate (np.unique's first occurrence in score order). Not implied by the
        # score order below: when the best limb to an end is refused, a weaker one must not take that end.
        _, first = np.unique(limbs.end[l, starts], return_index=True)
        starts = starts[np.sort(first)]
        for f, t, s in zip(starts.tolist(), limbs.end[l, starts].tolist(), limbs.score[l, starts].tolist()):
            pf, pt = int(owner[a, f]), int(owner[b, t])
            if pf < 0 and pt < 0:
                p = n_persons
                n_persons += 1
                member[p, a], member[p, b] = f, t
                link[p, a] = link[p, b] = s
                owner[a, f] = owner[b, t] = p
                continue
            if pf == pt:
                p = pf
            elif pt < 0 or pf < 0:
                # One endpoint is held by person p; write the free one into p's slot of its type.
                p, slot, cand = (pf, b, t) if pt < 0 else (pt, a, f)
                if not (s > link[p, a] or s > link[p, b]):
                    continue
                # As officially, the written slot keeps max(stored, S) even if it held another candidate.
                old = member[p, slot]
                if old >= 0:
                    owner[slot, old] = -1  # displaced keypoint is free again
                member[p, slot] = cand
                owner[slot, cand] = p
            else:
                if np.any((member[pf] >= 0) & (member[pt] >= 0)):
                    continue  # both persons hold some keypoint type: they are different people
                p, gone = min(pf, pt), max(pf, pt)
                taken = np.flatnonzero(member[gone] >= 0)
                member[p, taken] = member[gone, taken]
                link[p, taken] = link[gone, taken]
                owner[taken, member[gone, taken]] = p
                member[gone] = -1
                link[gone] = -1.0
            link[p, a] = max(link[p, a], s)
            link[p, b] = max(link[p, b], s)

    member = member[:n_persons]
    return member[(member >= 0).any(axis=1)]  # drop rows emptied by merges


def group(peaks, guides, skeleton: Sequence[tuple[int, int]], *, dist_max: float = 20.0,
          person_threshold: float = 0.06, min_len: float = 0.5, score_mode: str = "mean",
          peak_threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Group keypoint candidates into persons with GOG's greedy offset-guided grouping.

    Args:
        peaks: ``(K, k, 3)`` numpy or torch, [x, y, score] per keypoint type and candidate, input px;
            score 0 (or below ``peak_threshold``) marks an empty slot.
        guides: ``(L, k, 2)`` numpy or torch: for limb ``l = (from_l, to_l)`` and start candidate
            ``peaks[from_l, i]``, the guiding offset read there (``J_guid = J_from + guide``), input px.
        skeleton: ``L`` (from, to) keypoint-type pairs; their order is the order of greedy assembly.
        dist_max: limbs with ``Dl >= dist_max`` px are dropped (official default 20; README run 40).
        person_threshold: persons whose mean keypoint score is below it are dropped (official 0.06).
        min_len: lower clamp of the limb length in ``exp(-Dl / L)``, px (official 0.5).
        score_mode: ``'mean'`` (mean score of the detected keypoints) or ``'sum_over_K'``
            (sum of scores / K, the COCO results score of the official ``evaluate.py``).
        peak_threshold: candidates scoring below it are ignored (the official ``thre_hmp``; 0 when the
            caller has already zeroed them).

    Returns:
        ``poses`` ``(N, K, 3)`` float32 [x, y, score], missing keypoints ``(0, 0, 0)``, and ``scores`` ``(N,)``
        float32, sorted by descending score (ties keep the order of creation).
    """
    if score_mode not in SCORE_MODES:
        raise HarnessError(f"grouping: unknown score_mode {score_mode!r} (known: {', '.join(SCORE_MODES)})")
    peaks, guides, pairs = _check_inputs(peaks, guides, skeleton)
    n_types, k = peaks.shape[:2]
    limbs = candidate_limbs(peaks, guides, pairs, dist_max=dist_max, min_len=min_len,
                            peak_threshold=peak_threshold)
    member = _assemble(limbs, pairs, n_types, k)
    if len(member) == 0:
        return np.zeros((0, n_types, 3), np.float32), np.zeros((0,), np.float32)

    present = member >= 0
    poses = peaks[np.arange(n_types)[None, :], np.where(present, member, 0)]  # (P, K, 3)
    poses = np.where(present[..., None], poses, 0.0)
    total = poses[..., 2].sum(axis=1)
    mean = total / present.sum(axis=1)  # every person has >= 2 keypoints
    scores = mean if score_mode == "mean" else total / n_types
    keep = np.flatnonzero(mean >= person_threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    return poses[keep].astype(np.float32), scores[keep].astype(np.float32)
