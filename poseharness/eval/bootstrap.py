"""Confidence intervals for every evaluated figure: a bootstrap over the evaluated images.

The figures of a results file (``evaluate``) depend on its images only through the per-detection matching
that ``COCOeval.evaluate()`` computes image by image (``COCOeval.evalImgs``): whether each detection matched a
GT person at each OKS threshold, whether it is ignored, and how many GT persons of each image count. This module
keeps that matching (:class:`Matches`) and recomputes ``COCOeval.accumulate()`` + ``summarize()`` with each
image counted ``w`` times (a bootstrap resample is a vector of such counts), vectorised over many resamples.
With every weight 1 the figures equal the library's ``stats``; with integer weights they equal the library run
on a ground truth in which each image is literally repeated ``w`` times.

- :func:`metric_values`: the figures under image weights ``(B, I)`` -> ``(B,)`` per metric
- :func:`interval`: a percentile interval (default 95 %, 1000 resamples, seed 0)
- :func:`paired_difference`: ``b - a`` on the same resampled images
- :func:`seeds_interval`, :func:`paired_seeds_difference`: several training seeds, resampling seeds and images
- :func:`record_intervals`: every supported figure's interval, for a run record

Units: every figure is a fraction in [0, 1]; −1 where the library says −1 (no GT person in the range, or in
the resample). Intervals leave resamples without GT out (``interval`` returns (−1, −1) when none has GT).
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import HarnessError
from ..io import atomic_path
from .protocols import get_protocol

FORMAT = "poseharness-matches-1"
MATCHES_SUFFIX = ".matches.npz"
CROWD_SPLIT = (0.2, 0.8)   # xtcocotools' get_type_result(first=0.2, second=0.8): easy < 0.2 <= medium < 0.8 <= hard
CHUNK_ELEMENTS = 1 << 22   # resamples are processed in chunks of about this many (resample, detection) pairs
_ARRAYS = ("image_ids", "iou_thrs", "rec_thrs", "scores", "det_image", "matched", "ignored", "gt_count",
           "crowd_index")

# metric -> (AP or AR, area range label, OKS threshold or None for the mean over all, crowd subset or None)
_METRICS = {
    "AP": ("AP", "all", None, None), "AP50": ("AP", "all", 0.5, None), "AP75": ("AP", "all", 0.75, None),
    "APm": ("AP", "medium", None, None), "APl": ("AP", "large", None, None),
    "AR": ("AR", "all", None, None), "AR50": ("AR", "all", 0.5, None), "AR75": ("AR", "all", 0.75, None),
    "ARm": ("AR", "medium", None, None), "ARl": ("AR", "large", None, None),
    "AP_easy": ("AP", "all", None, 0), "AP_medium": ("AP", "all", None, 1), "AP_hard": ("AP", "all", None, 2),
}


@dataclass(frozen=True, eq=False)
class Matches:
    """Per-detection matching of one results file against its ground truth, read from ``COCOeval.evalImgs``
    after ``evaluate()`` (pycocotools for coco, xtcocotools for crowdpose / ochuman), for the area range
    'all' (and 'medium' and 'large' where the protocol reports them: coco, ochuman), at maxDets = the
    protocol's (20). Build with :meth:`from_cocoeval`; I images, D detections, T thresholds, R recall points.

    protocol:    the protocol name (``coco``, ``crowdpose``, ``ochuman``): which figures it supports
    image_ids:   (I,) int64, every GT image id of the evaluated set, sorted (``params.imgIds``)
    iou_thrs:    (T,) the protocol's OKS thresholds (``params.iouThrs``, 0.50:0.05:0.95)
    rec_thrs:    (R,) recall points of the precision curve (``params.recThrs``, 0:0.01:1)
    scores:      (D,) detection scores, in ``accumulate``'s order: the best 20 of each image by a stable
                 mergesort on −score, images in id order, then a stable mergesort on −score over all
    det_image:   (D,) int64 index into ``image_ids`` of each detection
    areas:       area range labels, e.g. ('all', 'medium', 'large'); A of them
    matched:     (A, T, D) bool, the detection matched a GT person (``dtMatches``: != 0 for pycocotools,
                 >= 0 for xtcocotools, as each library's ``accumulate`` reads it)
    ignored:     (A, T, D) bool, ``dtIgnore`` (matched an ignored GT, or unmatched outside the area range)
    gt_count:    (A, I) int64, GT persons per image that are not ignored (``gtIgnore == 0``)
    crowd_index: (I,) float64, each image's ``crowdIndex`` (crowdpose), NaN for other protocols
    """

    protocol: str
    image_ids: np.ndarray
    iou_thrs: np.ndarray
    rec_thrs: np.ndarray
    scores: np.ndarray
    det_image: np.ndarray
    areas: tuple[str, ...]
    matched: np.ndarray
    ignored: np.ndarray
    gt_count: np.ndarray
    crowd_index: np.ndarray

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise HarnessError("inconsistent matches: " + "; ".join(problems))

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The figures of this protocol the bootstrap computes: all of its ``stats``, in their order."""
        return get_protocol(self.protocol).stat_names

    def problems(self) -> list[str]:
        """What is inconsistent about the arrays (empty when sound)."""
        if self.protocol not in ("coco", "crowdpose", "ochuman"):
            return [f"unknown protocol {self.protocol!r}"]
        I, T, D, A = len(self.image_ids), len(self.iou_thrs), len(self.scores), len(self.areas)
        want = {"image_ids": (I,), "iou_thrs": (T,), "rec_thrs": (len(self.rec_thrs),), "scores": (D,),
                "det_image": (D,), "matched": (A, T, D), "ignored": (A, T, D), "gt_count": (A, I),
                "crowd_index": (I,)}
        p = [f"{name} has shape {np.shape(getattr(self, name))}, expected {shape}"
             for name, shape in want.items() if np.shape(getattr(self, name)) != shape]
        missing = {"all", "medium", "large"} - set(self.areas) if self.protocol != "crowdpose" else \
            {"all"} - set(self.areas)
        if missing:
            p.append(f"areas {self.areas} lack {sorted(missing)}")
        if not p and D and (self.det_image.min() < 0 or self.det_image.max() >= I):
            p.append("det_image points outside image_ids")
        if not p and np.any(np.diff(self.scores) > 0):
            p.append("scores are not sorted best first")
        return p

    @classmethod
    def from_cocoeval(cls, ev, protocol: str, gt_data: dict) -> "Matches":
        """Read ``ev.evalImgs`` after ``ev.evaluate()`` (and before xtcocotools' crowd ``summarize``, which
        re-runs ``evaluate`` on subsets). ``gt_data``: the parsed annotation file (for ``crowdIndex``)."""
        proto = get_protocol(protocol)
        p = ev.params
        if len(p.catIds) != 1:
            raise HarnessError(f"the bootstrap handles one category, the ground truth has {len(p.catIds)}")
        image_ids = np.asarray(p.imgIds, dtype=np.int64)
        areas = ("all",) if proto.name == "crowdpose" else ("all", "medium", "large")
        blocks = [_image_block(ev.evalImgs, list(p.areaRngLbl).index(a), len(image_ids), p.maxDets[-1],
                               len(p.iouThrs), proto.library) for a in areas]
        scores, det_image = blocks[0][0], blocks[0][1]
        if any(not np.array_equal(b[0], scores) or not np.array_equal(b[1], det_image) for b in blocks):
            raise HarnessError("COCOeval.evalImgs holds different detections for different area ranges")
        order = np.argsort(-scores, kind="mergesort")        # as COCOeval.accumulate sorts them
        crowd = {im["id"]: im.get("crowdIndex", np.nan) for im in gt_data["images"]}
        crowd_index = np.array([crowd.get(int(i), np.nan) if proto.name == "crowdpose" else np.nan
                                for i in image_ids], dtype=np.float64)
        return cls(protocol=proto.name, image_ids=image_ids, iou_thrs=np.asarray(p.iouThrs, np.float64),
                   rec_thrs=np.asarray(p.recThrs, np.float64), scores=scores[order], det_image=det_image[order],
                   areas=areas, matched=np.stack([b[2][:, order] for b in blocks]),
                   ignored=np.stack([b[3][:, order] for b in blocks]),
                   gt_count=np.stack([b[4] for b in blocks]), crowd_index=crowd_index)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a compressed ``.npz`` atomically (temporary file, then ``os.replace``); returns the path."""
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, format=np.array(FORMAT), protocol=np.array(self.protocol),
                                areas=np.array(self.areas), **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Matches":
        """Read a file written by :meth:`save`; a missing, corrupt or foreign file is a HarnessError naming it."""
        path = Path(path)
        if not path.is_file():
            raise HarnessError(f"{path}: matches file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                raw = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise HarnessError(f"{path}: not a readable matches file (truncated or corrupt?): {exc}") from None
        missing = [n for n in ("format", "protocol", "areas", *_ARRAYS) if n not in raw]
        if missing or str(raw["format"]) != FORMAT:
            raise HarnessError(f"{path}: not a matches file of format {FORMAT} "
                               f"({'missing ' + ', '.join(missing) if missing else 'format ' + str(raw['format'])})")
        try:
            return cls(protocol=str(raw["protocol"]), areas=tuple(str(a) for a in raw["areas"]),
                       **{name: raw[name] for name in _ARRAYS})
        except HarnessError as exc:
            raise HarnessError(f"{path}: {exc}") from None


def _image_block(eval_imgs: list, area: int, n_images: int, max_det: int, T: int, library: str):
    """One area range's evalImgs concatenated in image order, as ``accumulate`` reads them:
    scores (D,), image index (D,), matched (T, D), ignored (T, D), not-ignored GT per image (I,)."""
    scores, images, matched, ignored = [np.zeros(0)], [np.zeros(0, np.int64)], [np.zeros((T, 0), bool)], \
        [np.zeros((T, 0), bool)]
    gt_count = np.zeros(n_images, np.int64)
    for i, e in enumerate(eval_imgs[area * n_images:(area + 1) * n_images]):
        if e is None:
            continue
        dtm = np.asarray(e["dtMatches"])[:, :max_det]
        scores.append(np.asarray(e["dtScores"][:max_det], np.float64))
        images.append(np.full(dtm.shape[1], i, np.int64))
        matched.append(dtm != 0 if library == "pycocotools" else dtm >= 0)
        ignored.append(np.asarray(e["dtIgnore"])[:, :max_det].astype(bool))
        gt_count[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
    return (np.concatenate(scores), np.concatenate(images), np.concatenate(matched, axis=1),
            np.concatenate(ignored, axis=1), gt_count)


# --------------------------------------------------------------------------------------------------------------
# COCOeval.accumulate and summarize, weighted by image and vectorised over resamples

def _curves(m: Matches, area: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``accumulate`` for one area range under image weights ``(B, I)``: precision ``(B, T, R)`` (the
    envelope read at the recall points, 0 past the last recall), recall ``(B, T)``, and ``(B,)`` whether any
    not-ignored GT person is weighted in (where not, precision and recall are −1, as the library leaves them).

    Only true positives move recall, and a false positive never raises precision above the true positive
    before it, so the envelope at the recall points is read off the true positives alone: at each of them
    tp = cumulative weight of true positives, fp = cumulative weight of the false positives before it
    (summed directly, or as all weight up to it − tp − ignored weight, whichever sums fewer detections; the
    same numbers for integer weights). Arrays run (detection, resample), so cumulative sums add whole rows.
    """
    B, T, R = len(weights), len(m.iou_thrs), len(m.rec_thrs)
    npig = weights @ m.gt_count[area].astype(np.float64)
    defined = npig > 0
    npig = np.where(defined, npig, 1.0)
    wd = np.ascontiguousarray(weights.T)[m.det_image]          # (D, B): each detection's image weight
    precision, recall = np.zeros((B, T, R)), np.zeros((B, T))
    up_to = None                                                # weight of all detections up to each one
    for t in range(T):
        valid = ~m.ignored[area, t]
        tp_rows = np.flatnonzero(valid & m.matched[area, t])
        fp_rows = np.flatnonzero(valid & ~m.matched[area, t])
        ignored_rows = np.flatnonzero(~valid)
        if not len(tp_rows):
            continue                                            # precision and recall 0
        tp = np.cumsum(wd[tp_rows], axis=0)
        if len(fp_rows) <= len(ignored_rows):
            fp = _weight_before(wd, fp_rows, tp_rows)
        else:
            up_to = np.cumsum(wd, axis=0) if up_to is None else up_to
            fp = up_to[tp_rows] - tp - _weight_before(wd, ignored_rows, tp_rows)
        rc = tp / npig
        pr = tp / (fp + tp + np.spacing(1))
        envelope = np.maximum.accumulate(pr[::-1], axis=0)[::-1]
        precision[:, t] = _at_recall_points(rc, envelope, m.rec_thrs)
        recall[:, t] = rc[-1]
    precision[~defined] = -1.0
    recall[~defined] = -1.0
    return precision, recall, defined


def _weight_before(wd: np.ndarray, rows: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(len(at), B): the summed weight of the detections ``rows`` ranked before each detection of ``at``
    (both sorted, disjoint)."""
    cumulative = np.zeros((len(rows) + 1, wd.shape[1]))
    np.cumsum(wd[rows], axis=0, out=cumulative[1:])
    return cumulative[np.searchsorted(rows, at)]


def _at_recall_points(rc: np.ndarray, envelope: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
    """``envelope[searchsorted(rc, rec_thrs, 'left')]`` column by column (0 past the end), as ``accumulate``
    reads it: the first point whose recall reaches each recall threshold. ``rc``, ``envelope``: (n, B),
    columns of ``rc`` non-decreasing. Returns (B, R)."""
    n, B = rc.shape
    R = len(rec_thrs)
    passed = np.searchsorted(rec_thrs, rc, side="right")       # thresholds <= rc: exact float comparisons
    counts = np.bincount((passed + np.arange(B) * (R + 1)).ravel(), minlength=B * (R + 1))
    first = np.cumsum(counts.reshape(B, R + 1), axis=1)[:, :R]   # points with recall below each threshold
    value = envelope[np.minimum(first, n - 1), np.arange(B)[:, None]]
    return np.where(first < n, value, 0.0)


def _summary(name: str, m: Matches, curves: dict) -> np.ndarray:
    """One ``summarize`` figure from the curves ``{(area, subset): (precision, recall, defined)}``; NaN where
    the library would say −1."""
    kind, area, thr, subset = _METRICS[name]
    precision, recall, defined = curves[(area, subset)]
    s = precision if kind == "AP" else recall
    if thr is not None:
        s = s[:, np.flatnonzero(thr == m.iou_thrs)]            # summarize's np.where(iouThr == p.iouThrs)
    value = s.reshape(len(s), -1).mean(axis=1)
    if subset is not None:
        value = np.round(value, 4)                             # get_type_result rounds to 4 decimals
    return np.where(defined & (s.size > 0), value, np.nan)


def _values(m: Matches, weights: np.ndarray, metrics) -> dict[str, np.ndarray]:
    """:func:`metric_values` with NaN instead of −1 for an undefined figure; chunked over resamples."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != len(m.image_ids):
        raise HarnessError(f"weights must have shape (B, {len(m.image_ids)}), got {weights.shape}")
    if np.any(weights < 0) or not np.all(np.isfinite(weights)):
        raise HarnessError("weights must be finite and non-negative")
    unknown = [name for name in metrics if name not in m.metric_names]
    if unknown:
        raise HarnessError(f"the {m.protocol} protocol has no figure {', '.join(unknown)} "
                           f"(it has {', '.join(m.metric_names)})")
    needed = {_METRICS[name][1::2] for name in metrics}          # (area, subset)
    masks = _subset_masks(m)
    step = max(1, CHUNK_ELEMENTS // max(len(m.scores), len(m.image_ids), 1))
    parts = {name: [] for name in metrics}
    for start in range(0, len(weights), step):
        w = weights[start:start + step]
        curves = {(a, s): _curves(m, m.areas.index(a), w if s is None else w * masks[s]) for a, s in needed}
        for name in metrics:
            parts[name].append(_summary(name, m, curves))
    return {name: np.concatenate(p) if p else np.zeros(0) for name, p in parts.items()}


def _subset_masks(m: Matches) -> np.ndarray:
    """(3, I) float masks of CrowdPose's easy / medium / hard images (by crowdIndex; NaN in none)."""
    c = m.crowd_index
    first, second = CROWD_SPLIT
    return np.stack([c < first, (c >= first) & (c < second), c >= second]).astype(np.float64)


def metric_values(m: Matches, weights: np.ndarray, metrics=("AP",)) -> dict[str, np.ndarray]:
    """The protocol's figures with image ``i`` counted ``weights[b, i]`` times, for each row ``b``.

    weights: (B, I) non-negative image multiplicities (a bootstrap resample = counts of each image), columns
             in ``m.image_ids`` order
    metrics: names from ``m.metric_names`` (coco / ochuman ``AP AP50 AP75 APm APl AR AR50 AR75 ARm ARl``,
             crowdpose ``AP AP50 AP75 AR AR50 AR75 AP_easy AP_medium AP_hard``)
    Returns ``{metric: (B,) float64}``: fractions in [0, 1], −1 where no weighted GT person is in range (the
    library's −1). With every weight 1 they equal ``COCOeval.stats``; AP_easy/medium/hard are, as there, the
    plain mean of the precision of the images of that crowdIndex range, rounded to 4 decimals.
    Source: ``COCOeval.accumulate`` (cumulative TP / FP sums over detections sorted by score, precision
    envelope, 101 recall points) and ``summarize`` (means over thresholds and recall points).
    """
    return {name: np.nan_to_num(v, nan=-1.0) for name, v in _values(m, weights, tuple(metrics)).items()}


def resample_weights(n_images: int, n: int = 1000, seed: int = 0) -> np.ndarray:
    """(n, n_images) int64 bootstrap resamples: each row counts how often each image is drawn in
    ``n_images`` draws with replacement (multinomial, equal probabilities); a fixed ``seed`` gives fixed rows."""
    return _counts(np.random.default_rng(seed), n_images, n)


def _counts(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    if n < 1:
        raise HarnessError(f"the number of resamples must be at least 1, got {n}")
    draws = rng.integers(0, max(k, 1), size=(n, k)) + np.arange(n)[:, None] * k
    return np.bincount(draws.ravel(), minlength=n * k).reshape(n, k)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of the defined (non-NaN) values; (−1, −1) when none is."""
    if not 0 < level < 1:
        raise HarnessError(f"the confidence level must lie strictly between 0 and 1, got {level}")
    values = values[~np.isnan(values)]
    if not len(values):
        return -1.0, -1.0
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _point(m: Matches, metric: str) -> float:
    return float(metric_values(m, np.ones((1, len(m.image_ids))), (metric,))[metric][0])


def _same_images(runs: list[Matches], what: str) -> None:
    if not runs:
        raise HarnessError(f"{what}: no runs given")
    for r in runs[1:]:
        if not np.array_equal(r.image_ids, runs[0].image_ids):
            raise HarnessError(f"{what}: the runs were scored on different images ({len(runs[0].image_ids)} "
                               f"vs {len(r.image_ids)} image ids, not the same set); a paired bootstrap "
                               "needs the same images on both sides")


def interval(m: Matches, metric: str = "AP", n: int = 1000, seed: int = 0,
             level: float = 0.95) -> tuple[float, float]:
    """(lo, hi): the percentile bootstrap interval of ``metric`` over ``n`` resamples of the images
    (:func:`resample_weights` with ``seed``); resamples without GT in range are left out."""
    values = _values(m, resample_weights(len(m.image_ids), n, seed), (metric,))[metric]
    return _percentiles(values, level)


def paired_difference(a: Matches, b: Matches, metric: str = "AP", n: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float, float]:
    """(b − a, lo, hi): the point difference of ``metric`` and its percentile interval, both files
    scored on the SAME resampled images in every resample. ``a`` and ``b`` must hold the same image ids."""
    _same_images([a, b], "paired_difference")
    weights = resample_weights(len(a.image_ids), n, seed)
    diff = _values(b, weights, (metric,))[metric] - _values(a, weights, (metric,))[metric]
    return (_point(b, metric) - _point(a, metric), *_percentiles(diff, level))


def _seed_means(runs: list[Matches], metric: str, weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(B,) mean over seeds drawn ``counts[b, s]`` times of each seed's figure under ``weights[b]``."""
    values = np.stack([_values(r, weights, (metric,))[metric] for r in runs], axis=1)   # (B, S)
    return np.where(counts > 0, counts * values, 0.0).sum(axis=1) / len(runs)


def _seed_counts(n_seeds: int, n: int, seed: int, stream: int) -> np.ndarray:
    """(n, n_seeds) resampled seed counts (all 1 for one seed), from a stream independent of the images'."""
    if n_seeds == 1:
        return np.ones((n, 1), np.int64)
    return _counts(np.random.default_rng([seed, stream]), n_seeds, n)


def seeds_interval(runs: list[Matches], metric: str = "AP", n: int = 1000, seed: int = 0,
                   level: float = 0.95) -> dict[str, float]:
    """Several training seeds scored on the same images: ``{'mean', 'std', 'lo', 'hi'}``.

    mean, std: over the seeds' figures (std with ddof=1; 0 for one seed). lo, hi: the percentile interval
    over ``n`` resamples, each drawing the seeds with replacement AND the images (the same image weights for
    every seed); with one seed it equals :func:`interval`.
    """
    _same_images(runs, "seeds_interval")
    points = np.array([_point(r, metric) for r in runs])
    weights = resample_weights(len(runs[0].image_ids), n, seed)
    means = _seed_means(runs, metric, weights, _seed_counts(len(runs), n, seed, 1))
    lo, hi = _percentiles(means, level)
    std = float(np.std(points, ddof=1)) if len(runs) > 1 else 0.0
    return {"mean": float(points.mean()), "std": std, "lo": lo, "hi": hi}


def paired_seeds_difference(a: list[Matches], b: list[Matches], metric: str = "AP", n: int = 1000,
                            seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(mean over b's seeds − mean over a's seeds, lo, hi), as :func:`paired_difference`: every resample
    weights the images the same for all runs of both sides and also redraws the seeds. With as many seeds
    on both sides, the s-th of ``a`` and of ``b`` are drawn together (paired: right when they share a trained
    model, e.g. two decoders of one training, and still valid when independent); else each side is drawn on
    its own. With one seed each it equals :func:`paired_difference`."""
    _same_images([*a, *b], "paired_seeds_difference")
    weights = resample_weights(len(a[0].image_ids), n, seed)
    counts_a = _seed_counts(len(a), n, seed, 1)
    counts_b = counts_a if len(a) == len(b) else _seed_counts(len(b), n, seed, 2)
    diff = _seed_means(b, metric, weights, counts_b) - _seed_means(a, metric, weights, counts_a)
    point = np.mean([_point(r, metric) for r in b]) - np.mean([_point(r, metric) for r in a])
    return (float(point), *_percentiles(diff, level))


def record_intervals(m: Matches, n: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """``{metric: [lo, hi]}`` for every figure of the protocol that has GT in range (a figure the library
    reports as −1 has no interval), from ONE set of ``n`` resamples shared by all figures."""
    weights = resample_weights(len(m.image_ids), n, seed)
    points = metric_values(m, np.ones((1, len(m.image_ids))), m.metric_names)
    values = _values(m, weights, m.metric_names)
    return {name: list(_percentiles(values[name], level)) for name in m.metric_names
            if points[name][0] != -1.0 and not np.all(np.isnan(values[name]))}


def matches_path(predictions: str | os.PathLike) -> Path:
    """Where the matches of a predictions file live: beside it, ``<name>.matches.npz``."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.stem + MATCHES_SUFFIX)
