"""Simple Pose's greedy keypoint assignment: keypoint and part candidates, then CMU-Pose-style assembly.

Facts: ``shared/design/methods.md`` §2.6 [P; R: evaluate.py ``find_peaks`` / ``find_connections`` /
``find_people``, utils/config]. The official decoder upsamples every map ×R (bicubic) and works on the
upsampled maps; here the maps stay at output resolution and every value the decoder reads is the value of
the ×R-upsampled map at that input pixel (:func:`poseharness.codecs.decode_peaks` for the peaks,
:func:`poseharness.codecs.sample_offsets` for single pixels), so no full-resolution map is built.
Keypoint types are those of the maps (the 18-keypoint order of :mod:`.representation` for Simple Pose).

1. :func:`keypoint_candidates` — 3x3 NMS, score >= ``threshold``, then the score-weighted centroid of the
   (2r+1)² window around each peak (sub-pixel position) with the window mean as the candidate's score.
2. :func:`part_candidates` — every pair of candidates of a part's two keypoint types, scored along the segment
   at once for all pairs of all part types (``n = min(round(|AB| + 1), samples)`` points): the body-part map
   mean, or for PAFs the mean of the field's projection on the segment direction (the line integral), plus the
   length prior ``min(length_prior * H / |AB| - 1, 0)``; accepted when at least ``ratio`` of the samples exceed
   ``threshold`` and the score is positive.
3. :func:`select_parts` — per part type, greedy by ``0.5 score + 0.25 s(A) + 0.25 s(B)``: no keypoint twice
   per type, at most min(#A, #B) parts.
4. :func:`assemble` — in part order, CMU-Pose style: attach to the person holding an endpoint, replacing its
   keypoint only for a higher-scored part (so a lower-scored redundant part loses to a higher one), merge two
   disjoint persons the part joins, otherwise start a person; then drop persons with fewer than
   ``min_keypoints`` keypoints or a mean score below ``min_mean_score``; person score ``1 - 1/total``.
"""
from __future__ import annotations

import numpy as np
import torch

from poseharness.codecs import decode_peaks, sample_offsets

#: Candidate parts: one row per accepted pair, columns of :func:`part_candidates`.
PART_COLUMNS = ("type", "a", "b", "score", "length", "weighted")


def read_upsampled(maps: torch.Tensor, channel: np.ndarray, points: np.ndarray, stride: int,
                   upsample: str = "bicubic") -> np.ndarray:
    """Values of the ×R-upsampled maps at input pixels, without upsampling the maps.

    maps: (C, h, w) or (C, 2, h, w) at output resolution; channel: (N,) which map each row of ``points``
    reads; points: (N, k, 2) x, y in input px (integers here, as the official decoder indexes pixels).
    Returns (N, k) or (N, k, 2) float64: ``upsample_maps(maps, R)[channel, y, x]`` (up to float rounding).
    Points are grouped per channel (padded to the largest group) for one :func:`sample_offsets` call.
    """
    maps = torch.as_tensor(maps)
    maps = maps if maps.is_floating_point() else maps.float()
    pairs = maps.dim() == 4
    # The core's reader takes (x, y) channel pairs (offset vectors); a single map is read as a pair of itself.
    m2 = maps if pairs else maps[:, None].expand(-1, 2, -1, -1)
    n, k = points.shape[:2]
    out_shape = (n, k, 2) if pairs else (n, k)
    if n == 0 or k == 0:
        return np.zeros(out_shape)
    used, pos = np.unique(channel, return_inverse=True)              # channels with points, row -> group
    order = np.argsort(pos, kind="stable")
    counts = np.bincount(pos, minlength=len(used))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - (np.cumsum(counts) - counts)[pos[order]]
    grid = np.zeros((len(used), counts.max(), k, 2))
    grid[pos, rank] = points
    pts = torch.from_numpy(grid.reshape(len(used), -1, 2)).to(device=maps.device, dtype=maps.dtype)
    vals = sample_offsets(m2[torch.from_numpy(used).to(maps.device)], pts, stride, upsample)
    vals = vals.reshape(len(used), counts.max(), k, 2)[torch.from_numpy(pos).to(vals.device),
                                                       torch.from_numpy(rank).to(vals.device)]
    vals = vals.double().cpu().numpy()
    return vals if pairs else vals[..., 0]


def keypoint_candidates(heat: torch.Tensor, stride: int, upsample: str = "bicubic", threshold: float = 0.1,
                        radius: int = 2, max_candidates: int = 100
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keypoint candidates of the ×R-upsampled keypoint maps.

    heat: (K, h, w) at output resolution. A candidate is a 3x3 local maximum of the upsampled map with value
    >= ``threshold`` (:func:`poseharness.codecs.decode_peaks`; at most ``max_candidates`` per type, the best
    ones [D: the official decoder has no limit]). Where the (2r+1)² window around it lies inside the upsampled
    map, its position moves to the window's score-weighted centroid and its score is the window mean [R:
    utils/util.py ``refine_centroid``, radius 2]; at the border it keeps the peak pixel and value (as the
    official code). [D] The official centroid swaps the x and y offsets (``np.mgrid`` order); ours does not.

    Returns xy (M, 2) float64 input px, score (M,) float64, kind (M,) int64 keypoint type; ordered by type,
    then row, then column of the peak (the official order).
    """
    heat = torch.as_tensor(heat)
    num_types, h, w = heat.shape
    big_h, big_w = h * stride, w * stride
    peaks = decode_peaks(heat, stride, upsample=upsample, topk=max_candidates, threshold=threshold, nms_kernel=3)
    kind, slot = torch.nonzero(peaks[..., 2] > 0, as_tuple=True)
    if kind.numel() == 0:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=np.int64)
    found = peaks[kind, slot].double().cpu().numpy()
    kind = kind.cpu().numpy().astype(np.int64)
    x, y, peak = found[:, 0].astype(np.int64), found[:, 1].astype(np.int64), found[:, 2]
    order = np.lexsort((x, y, kind))
    kind, x, y, peak = kind[order], x[order], y[order], peak[order]
    offs = np.arange(-radius, radius + 1)
    gy, gx = np.meshgrid(offs, offs, indexing="ij")                                # (2r+1, 2r+1)
    pts = np.stack([x[:, None] + gx.ravel(), y[:, None] + gy.ravel()], axis=-1)     # (M, (2r+1)², 2)
    win = read_upsampled(heat, kind, pts, stride, upsample)                        # (M, (2r+1)²)
    total = win.sum(axis=1)
    inside = (x >= radius) & (x < big_w - radius) & (y >= radius) & (y < big_h - radius) & (total > 0)
    safe = np.where(total > 0, total, 1.0)
    dx = (win * gx.ravel()).sum(axis=1) / safe
    dy = (win * gy.ravel()).sum(axis=1) / safe
    xy = np.stack([np.where(inside, x + dx, x), np.where(inside, y + dy, y)], axis=1).astype(np.float64)
    score = np.where(inside, win.mean(axis=1), peak)
    return xy, score, kind


def _pairs(kind: np.ndarray, parts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (type, candidate A, candidate B) of every part type, A-major (the official loop order)."""
    by_kind = {k: np.flatnonzero(kind == k) for k in np.unique(kind)}
    ts, ia, ib = [], [], []
    empty = np.zeros(0, dtype=np.int64)
    for t, (a, b) in enumerate(parts):
        ca, cb = by_kind.get(a, empty), by_kind.get(b, empty)
        if ca.size and cb.size:
            ts.append(np.full(ca.size * cb.size, t, dtype=np.int64))
            ia.append(np.repeat(ca, cb.size))
            ib.append(np.tile(cb, ca.size))
    if not ts:
        return empty, empty, empty
    return np.concatenate(ts), np.concatenate(ia), np.concatenate(ib)


def part_candidates(xy: np.ndarray, score: np.ndarray, kind: np.ndarray, part_maps, parts, stride: int, *,
                    upsample: str = "bicubic", paf: bool = False, threshold: float = 0.1, ratio: float = 0.8,
                    samples: int = 20, length_prior: float = 0.5) -> np.ndarray:
    """Accepted candidate parts, scored along their segments, all part types and pairs at once.

    xy, score, kind: keypoint candidates (:func:`keypoint_candidates`). part_maps: body-part maps (L, h, w),
    or PAFs (2L, h, w) with ``paf=True``, at output resolution; read ×R-upsampled (``upsample``).
    parts: L pairs of keypoint types (A, B). Each pair samples ``n = min(round(|AB| + 1), samples)`` evenly
    spaced points from A to B, read at the nearest pixel [R]. Part maps: the value; PAFs: the field's dot
    product with the unit vector A→B. score = mean + min(``length_prior`` · H / |AB| - 1, 0) (H = the input
    height h·R; the official code uses the image height, [D] here the network input's); accepted when at
    least ``ratio`` · n samples exceed ``threshold`` and score > 0. Coincident candidates are skipped [R].

    Returns (Q, 6) float64 rows ``[type, a, b, score, length, weighted]`` (a, b candidate indices; weighted =
    0.5 score + 0.25 s(A) + 0.25 s(B)), in pair order.
    """
    maps = torch.as_tensor(part_maps)
    height, width = maps.shape[-2] * stride, maps.shape[-1] * stride
    t, ia, ib = _pairs(kind, parts)
    if t.size == 0:
        return np.zeros((0, len(PART_COLUMNS)))
    pa, pb = xy[ia], xy[ib]
    d = pb - pa
    norm = np.hypot(d[:, 0], d[:, 1])
    apart = norm > 0
    t, ia, ib, pa, d, norm = t[apart], ia[apart], ib[apart], pa[apart], d[apart], norm[apart]
    n = np.minimum(np.rint(norm + 1.0), samples).astype(np.int64)               # >= 1
    k = np.arange(samples)
    valid = k[None, :] < n[:, None]                                              # (P, S)
    frac = k[None, :] / np.maximum(n - 1, 1)[:, None]
    ix = np.clip(np.rint(pa[:, 0, None] + d[:, 0, None] * frac), 0, width - 1)
    iy = np.clip(np.rint(pa[:, 1, None] + d[:, 1, None] * frac), 0, height - 1)
    pts = np.stack([ix, iy], axis=-1)                                            # (P, S, 2)
    if paf:
        field = read_upsampled(maps.reshape(len(parts), 2, *maps.shape[-2:]), t, pts, stride, upsample)
        vals = (field * (d / norm[:, None])[:, None, :]).sum(axis=-1)
    else:
        vals = read_upsampled(maps, t, pts, stride, upsample)
    vals = np.where(valid, vals, 0.0)
    mean = vals.sum(axis=1) / n
    enough = ((vals > threshold) & valid).sum(axis=1) >= ratio * n
    part_score = mean + np.minimum(length_prior * height / norm - 1.0, 0.0)
    ok = enough & (part_score > 0)
    weighted = 0.5 * part_score + 0.25 * score[ia] + 0.25 * score[ib]
    return np.stack([t, ia, ib, part_score, norm, weighted], axis=1)[ok]


def select_parts(cands: np.ndarray, kind: np.ndarray, parts) -> np.ndarray:
    """Greedy per part type: by descending ``weighted`` (ties in pair order), skip a part whose A or B
    candidate is already used by a part of the same type, stop at min(#A, #B) parts of the type [P, R].

    cands: (Q, 6) from :func:`part_candidates`. Returns the selected rows, by part type, then selection order.
    """
    if len(cands) == 0:
        return cands
    counts = np.bincount(kind, minlength=max(max(p) for p in parts) + 1)
    limit = np.array([min(counts[a], counts[b]) for a, b in parts])
    order = np.lexsort((-cands[:, 5], cands[:, 0]))             # type ascending, weighted descending (stable)
    used = np.full(len(kind), -1, dtype=np.int64)              # the last part type that used each candidate
    taken = np.zeros(len(parts), dtype=np.int64)
    picked = []
    types = cands[:, 0].astype(np.int64)
    a_idx = cands[:, 1].astype(np.int64)
    b_idx = cands[:, 2].astype(np.int64)
    for q in order:
        t = types[q]
        # A and B are different keypoint types, so one marker per candidate serves both ends.
        if taken[t] >= limit[t] or used[a_idx[q]] == t or used[b_idx[q]] == t:
            continue
        used[a_idx[q]] = used[b_idx[q]] = t
        taken[t] += 1
        picked.append(q)
    return cands[np.asarray(picked, dtype=np.int64)]


def assemble(parts_sel: np.ndarray, cand_score: np.ndarray, parts, num_keypoints: int = 18, *,
             len_rate: float = 16.0, merge_tolerance: float = 0.7, min_keypoints: int = 2,
             min_mean_score: float = 0.45) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assemble selected parts into persons, CMU-Pose style with the body-part rules [P; R: ``find_people``].

    parts_sel: (S, 6) selected parts in assembly order (:func:`select_parts`); cand_score: (M,) keypoint
    candidate scores. For each part (A, B) of type (a, b) with score s and length ℓ:

    - one person holds A in slot a or B in slot b: an empty slot b takes B if ℓ < len_rate × the person's
      longest part; a slot b holding another candidate takes B only if s beats the score of the part that
      put it there (and ℓ passes); a slot b already holding B keeps B with the higher of the two part scores;
    - two persons hold them: if they share no keypoint type they are merged when s >= merge_tolerance × the
      weakest part score of either and ℓ passes; otherwise both are kept unchanged (official remove_recon = 0);
    - nobody holds them: a new person (A, B).

    A person's total is the sum of its keypoint scores and of the scores of the parts that attached them (one
    part per keypoint, the person's first part two; a replaced keypoint takes its part's score out again);
    persons with fewer than ``min_keypoints`` keypoints or total / #keypoints < ``min_mean_score`` are dropped.
    [D] After a merge the longest part is the longest of both persons (the official code keeps the first's).

    Returns slots (N, K) int64 candidate index or -1, total (N,) float64, count (N,) int64, in creation order.
    """
    cap = len(parts_sel) + 1
    slots = np.full((cap, num_keypoints), -1, dtype=np.int64)
    kept = np.full((cap, num_keypoints), -1.0)               # score of the part that put each keypoint there
    total = np.zeros(cap)
    count = np.zeros(cap, dtype=np.int64)
    longest = np.zeros(cap)
    alive = np.zeros(cap, dtype=bool)
    n = 0
    for row in parts_sel:
        t, ca, cb = int(row[0]), int(row[1]), int(row[2])
        s, length = float(row[3]), float(row[4])
        a, b = parts[t]
        hit = np.flatnonzero(alive[:n] & ((slots[:n, a] == ca) | (slots[:n, b] == cb)))
        if hit.size == 1:
            j = hit[0]
            old = slots[j, b]
            if old == -1:
                if len_rate * longest[j] > length:
                    slots[j, b], kept[j, b] = cb, s
                    count[j] += 1
                    total[j] += cand_score[cb] + s
                    longest[j] = max(longest[j], length)
            elif old != cb:
                if kept[j, b] < s and len_rate * longest[j] > length:
                    total[j] += cand_score[cb] + s - cand_score[old] - kept[j, b]
                    slots[j, b], kept[j, b] = cb, s
                    longest[j] = max(longest[j], length)
            elif kept[j, b] <= s:
                # the same keypoint reached again (a redundant part): the higher part score stands for it
                total[j] += s - kept[j, b]
                kept[j, b] = s
                longest[j] = max(longest[j], length)
        elif hit.size >= 2:                                   # the official code looks at the first two only
            j1, j2 = hit[0], hit[1]
            m1, m2 = slots[j1] >= 0, slots[j2] >= 0
            if (m1 & m2).any():
                continue
            weakest = min(kept[j1][m1].min(), kept[j2][m2].min())
            if s < merge_tolerance * weakest or len_rate * longest[j1] <= length:
                continue
            slots[j1][m2], kept[j1][m2] = slots[j2][m2], kept[j2][m2]
            count[j1] += count[j2]
            total[j1] += total[j2] + s
            longest[j1] = max(longest[j1], longest[j2], length)
            alive[j2] = False
        else:
            slots[n, a], slots[n, b] = ca, cb
            kept[n, a] = kept[n, b] = s
            count[n] = 2
            total[n] = cand_score[ca] + cand_score[cb] + s
            longest[n] = length
            alive[n] = True
            n += 1
    keep = alive[:n] & (count[:n] >= min_keypoints)
    keep &= total[:n] >= min_mean_score * np.maximum(count[:n], 1)
    return slots[:n][keep], total[:n][keep], count[:n][keep]


def assign(keypoint_maps: torch.Tensor, part_maps: torch.Tensor, parts, stride: int, *, paf: bool = False,
           upsample: str = "bicubic", keypoint_threshold: float = 0.1, refine_radius: int = 2,
           max_candidates: int = 100, part_threshold: float = 0.1, part_ratio: float = 0.8, samples: int = 20,
           length_prior: float = 0.5, len_rate: float = 16.0, merge_tolerance: float = 0.7,
           min_keypoints: int = 2, min_mean_score: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """Persons from output maps: keypoint candidates → part candidates → selection → assembly.

    keypoint_maps: (K, h, w); part_maps: (L, h, w) body parts or (2L, h, w) PAFs; both at stride ``stride``,
    read ×R-upsampled (``upsample``). Returns poses (N, K, 3) float64 ``[x, y, score]`` in input px (missing
    keypoints all 0) and person scores (N,) ``1 - 1/total`` [R], sorted by descending score [P].
    """
    num_keypoints = keypoint_maps.shape[0]
    xy, score, kind = keypoint_candidates(keypoint_maps, stride, upsample, keypoint_threshold, refine_radius,
                                          max_candidates)
    cands = part_candidates(xy, score, kind, part_maps, parts, stride, upsample=upsample, paf=paf,
                            threshold=part_threshold, ratio=part_ratio, samples=samples,
                            length_prior=length_prior)
    chosen = select_parts(cands, kind, parts)
    slots, total, _ = assemble(chosen, score, parts, num_keypoints, len_rate=len_rate,
                               merge_tolerance=merge_tolerance, min_keypoints=min_keypoints,
                               min_mean_score=min_mean_score)
    poses = np.zeros((len(slots), num_keypoints, 3))
    has = slots >= 0
    idx = slots[has]
    poses[has] = np.concatenate([xy[idx], score[idx, None]], axis=1)
    person_score = 1.0 - 1.0 / total
    order = np.argsort(-person_score, kind="stable")
    return poses[order], person_score[order]
