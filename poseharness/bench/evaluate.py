"""How fast each available evaluator scores a set, and whether they all give the same figures.

The predictions are the ground truth perturbed (:func:`perturbed_predictions`): jittered keypoints,
missing persons, false positives and duplicates, so every branch of the matching runs and AP lands far
from 0 and 1. The reference is the harness's own :func:`poseharness.eval.evaluate` (the official
protocol); each other backend is its library called directly, loading the same files.

Backends per protocol (optional ones only when importable; they are extras, never required):

| protocol  | always                                  | optional                                  |
|-----------|-----------------------------------------|-------------------------------------------|
| coco      | pycocotools, xtcocotools (keypoints)    | faster-coco-eval, hotcoco                 |
| ochuman   | xtcocotools, pycocotools                | faster-coco-eval, hotcoco                 |
| crowdpose | xtcocotools (keypoints_crowd)           | faster-coco-eval, xthotcoco               |

pycocotools and hotcoco on ochuman agree with the protocol only because OCHuman's ``num_keypoints`` equals
the count of labelled keypoints (xtcocotools recomputes it, they read the field).
"""
from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import importlib.util
import io
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..eval.evaluate import evaluate
from ..eval.protocols import Protocol, get_protocol

#: Largest |difference| of any stat from the reference that still counts as agreement.
TOLERANCE = 1e-6


def perturbed_predictions(
    gt: dict,
    num_keypoints: int,
    *,
    seed: int = 0,
    jitter: float = 0.05,
    missing: float = 0.1,
    false_positives: float = 0.1,
    duplicates: float = 0.05,
    zero_confidence: float = 0.0,
) -> list[dict]:
    """Predictions made from a GT annotation dict, for testing and benchmarking evaluators.

    gt:              a parsed COCO-format annotation file (``images``, ``annotations``)
    num_keypoints:   K
    seed:            the only source of randomness
    jitter:          keypoint noise, as a fraction of each person's scale sqrt(w·h); each person also
                     draws a quality factor in [0.2, 2], so OKS spreads across the thresholds
    missing:         fraction of GT persons with no prediction
    false_positives: predictions (as a fraction of GT persons) copying a random person's pose to a random
                     place of a random image
    duplicates:      fraction of predictions repeated with more noise and a lower score
    zero_confidence: fraction of predictions whose confidences are all set to 0 (the input xtcocotools drops)

    Every non-crowd GT with a labelled keypoint gets a prediction, including persons whose
    ``num_keypoints`` field is 0 (CrowdPose's head/neck-only persons, which the protocol ignores).
    Unlabelled keypoints are put at a random point of the person's box. Returns records in the results
    format, shuffled (so an image's predictions are not contiguous), confidences in [0.05, 1).
    """
    rng = np.random.default_rng(seed)
    K = num_keypoints
    anns = [a for a in gt["annotations"]
            if not a.get("iscrowd") and any(v > 0 for v in a["keypoints"][2::3])]
    m = len(anns)
    if m == 0:
        return []
    kp = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(m, K, 3)
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(m, 4)
    image_ids = np.array([a["image_id"] for a in anns], dtype=np.int64)
    scale = np.sqrt(np.maximum(boxes[:, 2] * boxes[:, 3], 1.0))

    quality = rng.uniform(0.2, 2.0, size=(m, 1, 1))
    xy = kp[..., :2] + rng.normal(size=(m, K, 2)) * jitter * quality * scale[:, None, None]
    in_box = boxes[:, None, :2] + rng.random((m, K, 2)) * boxes[:, None, 2:]
    xy = np.where(kp[..., 2:3] > 0, xy, in_box)
    conf = rng.uniform(0.05, 1.0, size=(m, K))
    score = rng.uniform(0.05, 1.0, size=m)

    keep = rng.random(m) >= missing
    xy, conf, score, ids, kept_boxes = xy[keep], conf[keep], score[keep], image_ids[keep], boxes[keep]

    n_dup = int(round(duplicates * len(score)))
    dup = rng.choice(len(score), size=n_dup, replace=False) if n_dup else np.zeros(0, dtype=np.int64)
    dup_xy = xy[dup] + rng.normal(size=(n_dup, K, 2)) * 0.5 * jitter * np.sqrt(
        np.maximum(kept_boxes[dup, 2] * kept_boxes[dup, 3], 1.0))[:, None, None]

    n_fp = int(round(false_positives * m))
    source = rng.integers(0, m, size=n_fp)
    images = gt["images"]
    target = rng.integers(0, len(images), size=n_fp)
    size = np.array([[images[t].get("width", 640), images[t].get("height", 480)] for t in target],
                    dtype=np.float64).reshape(n_fp, 2)
    centre = boxes[source, None, :2] + boxes[source, None, 2:] / 2
    fp_xy = np.where(kp[source, :, 2:3] > 0, kp[source, :, :2], centre) - centre + rng.random((n_fp, 1, 2)) * size[:, None, :]
    fp_ids = np.array([images[t]["id"] for t in target], dtype=np.int64)

    all_xy = np.concatenate([xy, dup_xy, fp_xy])
    all_conf = np.concatenate([conf, conf[dup], rng.uniform(0.05, 1.0, size=(n_fp, K))])
    all_score = np.concatenate([score, score[dup] * 0.9, rng.uniform(0.05, 1.0, size=n_fp)])
    all_ids = np.concatenate([ids, ids[dup], fp_ids])
    n = len(all_score)
    zero = rng.random(n) < zero_confidence
    all_conf[zero] = 0.0

    poses = np.concatenate([all_xy, all_conf[..., None]], axis=2).reshape(n, 3 * K)
    order = rng.permutation(n)
    flat, id_list, score_list = poses[order].tolist(), all_ids[order].tolist(), all_score[order].tolist()
    return [{"image_id": id_list[i], "category_id": 1, "keypoints": flat[i], "score": score_list[i]}
            for i in range(n)]


@dataclass
class BenchRow:
    """One backend's result: wall time (best of the repeats, seconds, loading included) and its stats."""

    backend: str
    version: str
    seconds: float
    stats: dict[str, float]
    max_abs_diff: float = 0.0
    error: str | None = None     # the backend raised instead of returning stats

    @property
    def agrees(self) -> bool:
        return self.max_abs_diff <= TOLERANCE


def _quiet(fn: Callable[[], list[float]]) -> Callable[[], list[float]]:
    def run() -> list[float]:
        with contextlib.redirect_stdout(io.StringIO()):
            return fn()
    return run


def _pycocotools(proto: Protocol, gt_path: Path, records: list[dict]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(gt_path))
    ev = COCOeval(gt, gt.loadRes(copy.deepcopy(records)), "keypoints")
    ev.params.kpt_oks_sigmas = proto.schema.sigmas_array
    ev.evaluate(); ev.accumulate(); ev.summarize()
    return list(ev.stats)


def _xtcocotools_api(coco_cls, cocoeval_cls, proto: Protocol, gt_path: Path, records: list[dict]) -> list[float]:
    gt = coco_cls(str(gt_path))
    ev = cocoeval_cls(gt, gt.loadRes(copy.deepcopy(records)), proto.iou_type,
                      sigmas=proto.schema.sigmas_array, use_area=proto.use_area)
    ev.params.useSegm = None
    ev.evaluate(); ev.accumulate(); ev.summarize()
    return list(ev.stats)


def _xtcocotools(proto: Protocol, gt_path: Path, records: list[dict]) -> list[float]:
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    return _xtcocotools_api(COCO, COCOeval, proto, gt_path, records)


def _xthotcoco(proto: Protocol, gt_path: Path, records: list[dict]) -> list[float]:
    from xthotcoco import COCO, COCOeval   # xtcocotools' API on hotcoco's engine

    return _xtcocotools_api(COCO, COCOeval, proto, gt_path, records)


def _faster_coco_eval(proto: Protocol, gt_path: Path, records: list[dict]) -> list[float]:
    from faster_coco_eval import COCO, COCOeval_faster

    gt = COCO(str(gt_path))
    # Do not touch params.useSegm here: in faster-coco-eval assigning it (even None) switches to box
    # evaluation (datasets-and-evaluation.md §4).
    ev = COCOeval_faster(gt, gt.loadRes(copy.deepcopy(records)), proto.iou_type,
                         kpt_oks_sigmas=proto.schema.sigmas_array, use_area=proto.use_area,
                         print_function=lambda *args, **kwargs: None)
    ev.evaluate(); ev.accumulate(); ev.summarize()
    return list(ev.stats)


def _hotcoco(proto: Protocol, gt_path: Path, records: list[dict]) -> list[float]:
    from hotcoco import COCO, COCOeval

    # hotcoco loads results from a file; its default sigmas are COCO's, which coco and ochuman use.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.json"
        path.write_text(json.dumps(records))
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.load_res(str(path)), "keypoints")
        ev.evaluate(); ev.accumulate(); ev.summarize()
        return list(ev.stats)


def available_backends(protocol: str) -> dict[str, tuple[str, Callable[[Protocol, Path, list[dict]], list[float]]]]:
    """``{backend: (module, runner)}`` for the libraries importable here; a backend is named as its distribution."""
    table = {
        "coco": [("pycocotools", "pycocotools", _pycocotools), ("xtcocotools", "xtcocotools", _xtcocotools),
                 ("faster-coco-eval", "faster_coco_eval", _faster_coco_eval), ("hotcoco", "hotcoco", _hotcoco)],
        "ochuman": [("xtcocotools", "xtcocotools", _xtcocotools), ("pycocotools", "pycocotools", _pycocotools),
                    ("faster-coco-eval", "faster_coco_eval", _faster_coco_eval), ("hotcoco", "hotcoco", _hotcoco)],
        "crowdpose": [("xtcocotools", "xtcocotools", _xtcocotools),
                      ("faster-coco-eval", "faster_coco_eval", _faster_coco_eval),
                      ("xthotcoco", "xthotcoco", _xthotcoco)],
    }[get_protocol(protocol).name]
    return {name: (module, fn) for name, module, fn in table if importlib.util.find_spec(module) is not None}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _timed(fn: Callable[[], list[float]], repeat: int) -> tuple[float, list[float]]:
    best, stats = float("inf"), []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        stats = fn()
        best = min(best, time.perf_counter() - start)
    return best, stats


def bench_evaluate(gt_path: str | Path, protocol: str, records: list[dict], *, repeat: int = 1) -> list[BenchRow]:
    """Time the harness's ``evaluate`` and every available backend on the same files; compare their stats.

    Returns one row per backend, the harness first; ``max_abs_diff`` is against the harness's figures
    over the protocol's stats (a backend returning fewer stats than the protocol names disagrees).
    """
    proto = get_protocol(protocol)
    gt_path = Path(gt_path)
    backends = available_backends(proto.name)
    # Import every library before the clock starts: a first import (compiled extensions) is not evaluation.
    for module in {proto.library, *(module for module, _ in backends.values())}:
        for name in (module, f"{module}.coco", f"{module}.cocoeval"):
            if importlib.util.find_spec(name) is not None:
                importlib.import_module(name)
    seconds, reference = _timed(lambda: evaluate(records, gt_path, proto.name), repeat)
    rows = [BenchRow(f"harness ({proto.library})", _version(proto.library), seconds, reference)]
    for name, (_, fn) in backends.items():
        try:
            seconds, stats = _timed(_quiet(lambda fn=fn: fn(proto, gt_path, records)), repeat)
        except Exception as exc:   # an optional library whose API moved: report it, keep benching the rest
            rows.append(BenchRow(name, _version(name), float("nan"), {}, float("inf"),
                                 error=f"{type(exc).__name__}: {exc}"))
            continue
        named = {k: float(v) for k, v in zip(proto.stat_names, stats)}
        diffs = [abs(named[k] - reference[k]) if k in named else float("inf") for k in proto.stat_names]
        rows.append(BenchRow(name, _version(name), seconds, named, max(diffs)))
    return rows


def format_bench(rows: list[BenchRow]) -> str:
    """An aligned table: backend, version, seconds, AP, the largest difference to the harness, agreement."""
    table = [("backend", "version", "seconds", "AP", "max |diff|", "agrees")]
    for row in rows:
        table.append((row.backend, row.version, f"{row.seconds:.3f}", f"{row.stats.get('AP', float('nan')):.4f}",
                      f"{row.max_abs_diff:.1e}", "yes" if row.agrees else f"NO {row.error or ''}".strip()))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table)
