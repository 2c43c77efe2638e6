"""The one writer (and reader) of COCO keypoint results files.

A results file is a JSON list with one object per predicted person::

    {"image_id": 785, "category_id": 1, "keypoints": [x1, y1, c1, ..., xK, yK, cK], "score": 0.93}

- ``keypoints``: K·3 floats, x and y in pixels of the original image, c a per-keypoint confidence.
  No evaluator scores c, but xtcocotools silently drops a prediction whose c are all ≤ 0, so the writer
  makes every c positive (at least :data:`MIN_CONFIDENCE`).
- ``score``: the person score that ranks predictions (only the 20 best per image count).
- No ``bbox``, decided once for the whole harness: when the first result has a ``bbox``, ``loadRes`` takes
  every prediction's area from its box instead of from its keypoints' extent, which moves AP(M)/AP(L)
  and AR(M)/AR(L) (the area ranges an unmatched prediction is counted in) and nothing else
  (datasets-and-evaluation.md §1.5). Writing none keeps every method's figures on the same rule.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import HarnessError
from ..io import read_json, write_text_atomic

#: The confidence written for keypoints whose confidence is ≤ 0 (or missing): small enough to mean
#: "no confidence", positive so that xtcocotools does not drop the prediction.
MIN_CONFIDENCE = 1e-6


def results_records(image_ids, poses, scores) -> list[dict]:
    """Build results records from arrays.

    image_ids: (N,) int — the image of each predicted person
    poses:     (N, K, 3) float — x, y (pixels) and confidence; or (N, K, 2) — then confidence 1.0
    scores:    (N,) float — person scores
    Returns N dicts in the results format above, confidences clipped below at MIN_CONFIDENCE.
    Raises ValueError on mismatched shapes or non-finite values (a decoder bug, not user input).
    """
    image_ids = np.asarray(image_ids)
    poses = np.asarray(poses, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    n = image_ids.shape[0] if image_ids.ndim == 1 else -1
    if n < 0 or poses.ndim != 3 or poses.shape[0] != n or poses.shape[2] not in (2, 3) or scores.shape != (n,):
        raise ValueError(
            f"results need image_ids (N,), poses (N, K, 2|3), scores (N,); got {image_ids.shape}, "
            f"{poses.shape}, {scores.shape}")
    if n and not np.issubdtype(image_ids.dtype, np.integer):
        raise ValueError(f"image_ids must be integers, got dtype {image_ids.dtype}")
    if not (np.isfinite(poses).all() and np.isfinite(scores).all()):
        raise ValueError("poses and scores must be finite (no NaN or infinity)")
    if poses.shape[2] == 2:
        poses = np.concatenate([poses, np.ones(poses.shape[:2] + (1,))], axis=2)
    else:
        poses = poses.copy()
        poses[..., 2] = np.maximum(poses[..., 2], MIN_CONFIDENCE)
    flat = poses.reshape(n, poses.shape[1] * poses.shape[2]).tolist()      # n = 0 is a valid (empty) file
    ids = image_ids.tolist()
    score_list = scores.tolist()
    return [
        {"image_id": int(ids[i]), "category_id": 1, "keypoints": flat[i], "score": score_list[i]}
        for i in range(n)
    ]


def write_results(path: str | os.PathLike, image_ids, poses, scores) -> Path:
    """Write a results file atomically (see :func:`results_records` for the arrays); returns the path."""
    records = results_records(image_ids, poses, scores)
    return write_text_atomic(path, json.dumps(records, allow_nan=False))


def read_results(path: str | os.PathLike) -> list:
    """Parse a results file. Raises HarnessError when it is missing, not JSON, or not a JSON list.

    The records themselves are checked against a ground truth by ``validate.validate_results``.
    """
    path = Path(path)
    data = read_json(path, "results file")
    if not isinstance(data, list):
        raise HarnessError(
            f"{path}: results must be a JSON list of objects (one per predicted person), "
            f"got a JSON {'object' if isinstance(data, dict) else type(data).__name__}")
    return data


def results_and_source(results: list | str | os.PathLike, results_name: str | None = None) -> tuple[list, str]:
    """A results list given as a list or as the path of a results file, and what to call it in errors (the path,
    else ``<results>``, unless ``results_name`` says)."""
    if isinstance(results, (str, os.PathLike)):
        return read_results(results), results_name or str(results)
    return results, results_name or "<results>"
