"""Checks run before an evaluator sees a file, so bad input fails with a message instead of a wrong number.

pycocotools and xtcocotools assume well-formed input: a result with the wrong keypoint count crashes deep
inside ``computeOks`` (or, worse, broadcasts), a result for an unknown image trips a bare ``assert``, a NaN
coordinate silently turns into OKS 0, a ``category_id`` other than the GT's is silently never scored.
Each check here raises a :class:`~poseharness.errors.HarnessError` naming the file, the record and the problem.
A coordinate beyond ±1e6 px is an error too (1e300 overflows the OKS arithmetic into a warning and a score).
Far more predictions per image than the evaluator keeps, or repeated identical poses, is a
:class:`ResultsWarning` naming the file and the count, not an error: the evaluator decides what they score
(only the best ``MAX_DETS`` per image count), but such a file costs minutes and gigabytes to score.
"""
from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import HarnessError, where
from ..schemas import KeypointSchema
from .protocols import Protocol

REQUIRED_RESULT_FIELDS = ("image_id", "category_id", "keypoints", "score")
#: COCOeval's keypoint ``maxDets``: the best-scored predictions per image it keeps.
MAX_DETS = 20
#: More predictions than this for one image is warned about (20 × what the evaluator keeps).
MAX_PREDICTIONS_PER_IMAGE = 20 * MAX_DETS
#: A coordinate (or box value) beyond ±this many pixels is no image's: an error.
MAX_COORDINATE = 1e6
_PLAIN_NUMBERS = frozenset((int, float))


class ResultsWarning(UserWarning):
    """A results file the evaluator will score, but probably not the one meant (see the module doc)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    # ``type(...) is`` first: it settles the common case (plain JSON numbers) without the ABC machinery.
    t = type(value)
    if t is float or t is int:
        return True
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(value), type(value).__name__)


def validate_results(
    records: Any,
    *,
    schema_or_K: KeypointSchema | int,
    gt_image_ids: Iterable[int],
    source: str,
    category_ids: Iterable[int] = (1,),
) -> list[dict]:
    """Check a COCO keypoint results list and return clean copies of its records.

    records:       the parsed results JSON: a list of objects ``{image_id, category_id, keypoints, score}``
    schema_or_K:   the protocol's keypoint schema, or K; each ``keypoints`` must hold K·3 numbers
                   ``[x, y, confidence] * K`` (pixels, pixels, unitless)
    gt_image_ids:  the image ids of the ground truth; every result must name one of them
    source:        what to call the results in messages (usually the file path)
    category_ids:  the GT's category ids (the person category, 1)

    Returns new dicts holding exactly what an evaluator reads: ``image_id`` (int), ``category_id`` (int),
    ``keypoints`` (K·3 floats), ``score`` (float), and ``bbox`` (4 floats) when the FIRST record carries a
    non-empty ``bbox`` — the rule by which ``loadRes`` decides to take areas from boxes; then every record
    must have one. Other keys (``center``, ``scale``...) are dropped: keypoint evaluation never reads them.
    The caller's records are not modified. An empty list is valid (it scores 0, see ``evaluate``).
    """
    K = schema_or_K if isinstance(schema_or_K, int) else schema_or_K.num_keypoints
    if not isinstance(records, list):
        raise HarnessError(
            f"{source}: results must be a JSON list of objects (one per predicted person), "
            f"got {_type_name(records)}")
    known_images = set(gt_image_ids)
    known_categories = set(category_ids)
    use_bbox = bool(records) and isinstance(records[0], dict) and records[0].get("bbox") not in (None, [])

    for i, record in enumerate(records):
        loc = where(source, record=f"result {i}")
        if not isinstance(record, dict):
            raise HarnessError(f"{loc}: a result must be an object, got {_type_name(record)}")
        missing = [k for k in REQUIRED_RESULT_FIELDS if k not in record]
        if missing:
            raise HarnessError(f"{loc}: missing field(s) {', '.join(missing)}")
        image_id = record["image_id"]
        if not _is_int(image_id):
            raise HarnessError(f"{loc}: image_id must be an integer, got {image_id!r}")
        if image_id not in known_images:
            raise HarnessError(f"{loc}: image_id {image_id} is not an image of the ground truth")
        category_id = record["category_id"]
        if not _is_int(category_id) or category_id not in known_categories:
            raise HarnessError(
                f"{loc}: category_id must be one of the ground truth's {sorted(known_categories)} "
                f"(any other is silently never scored), got {category_id!r}")
        keypoints = record["keypoints"]
        if not isinstance(keypoints, list):
            raise HarnessError(f"{loc}: keypoints must be a list of numbers, got {_type_name(keypoints)}")
        if len(keypoints) != 3 * K:
            raise HarnessError(
                f"{loc}: keypoints has {len(keypoints)} numbers; this protocol has {K} keypoints, "
                f"so it needs {3 * K} ([x, y, confidence] per keypoint)")
        if not _PLAIN_NUMBERS.issuperset(map(type, keypoints)):   # fast path: plain JSON numbers
            for j, value in enumerate(keypoints):
                if not _is_number(value):
                    raise HarnessError(f"{loc}: keypoints[{j}] is not a number: {value!r}")
        if not _is_number(record["score"]):
            raise HarnessError(f"{loc}: score is not a number: {record['score']!r}")
        if use_bbox:
            box = record.get("bbox")
            if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
                raise HarnessError(
                    f"{loc}: bbox must be [x, y, w, h] (4 numbers) in every result, because the first result "
                    f"has one (the evaluator then takes every result's area from its bbox); got {box!r}")

    # One array pass for finiteness (JSON parsers accept NaN and Infinity); also yields the float copies.
    n = len(records)
    keypoints = np.array([r["keypoints"] for r in records], dtype=np.float64).reshape(n, 3 * K)
    scores = np.array([r["score"] for r in records], dtype=np.float64)
    boxes = np.array([r["bbox"] for r in records], dtype=np.float64).reshape(n, 4) if use_bbox else None
    for name, values in (("keypoints", keypoints), ("score", scores), ("bbox", boxes)):
        if values is None:
            continue
        bad = ~np.isfinite(values)
        if bad.any():
            index = int(np.argmax(bad.reshape(n, -1).any(axis=1)))
            raise HarnessError(
                f"{where(source, record=f'result {index}')}: {name} holds NaN or infinity "
                f"({values[index].tolist()!r})")
    coordinates = keypoints.reshape(n, K, 3)[:, :, :2].reshape(n, 2 * K)
    for name, values in (("keypoints", coordinates), ("bbox", boxes)):
        if values is None or not n:
            continue
        far = np.abs(values) > MAX_COORDINATE
        if far.any():
            index = int(np.argmax(far.any(axis=1)))
            value = values[index][far[index]][0]
            raise HarnessError(
                f"{where(source, record=f'result {index}')}: {name} holds a coordinate of {value:g} px, beyond "
                f"±{MAX_COORDINATE:g} px (no image is that large; the evaluator's arithmetic would overflow)")
    _warn_about_counts(records, keypoints, source)
    if boxes is not None and (boxes[:, 2:] < 0).any():
        i = int(np.argmax((boxes[:, 2:] < 0).any(axis=1)))
        raise HarnessError(f"{where(source, record=f'result {i}')}: bbox has a negative width or height")

    keypoint_lists, score_list = keypoints.tolist(), scores.tolist()
    box_lists = boxes.tolist() if boxes is not None else None
    clean = []
    for i, record in enumerate(records):
        out = {
            "image_id": int(record["image_id"]),
            "category_id": int(record["category_id"]),
            "keypoints": keypoint_lists[i],
            "score": score_list[i],
        }
        if box_lists is not None:
            out["bbox"] = box_lists[i]
        clean.append(out)
    return clean


def _warn_about_counts(records: list, keypoints: np.ndarray, source: str) -> None:
    """A :class:`ResultsWarning` when an image has more than ``MAX_PREDICTIONS_PER_IMAGE`` predictions, or when
    predictions repeat an identical pose of the same image (both name the file and the count)."""
    n = len(records)
    if n < 2:
        return
    ids = np.fromiter((r["image_id"] for r in records), dtype=np.int64, count=n)
    images, counts = np.unique(ids, return_counts=True)
    over = counts > MAX_PREDICTIONS_PER_IMAGE
    if over.any():
        worst = int(np.argmax(counts))
        warnings.warn(
            f"{source}: {int(over.sum())} image(s) with more than {MAX_PREDICTIONS_PER_IMAGE} predictions "
            f"(image {int(images[worst])}: {int(counts[worst])}; {n} predictions for {len(images)} images); "
            f"the evaluator keeps only the {MAX_DETS} best-scored per image, and scoring the rest costs time and "
            f"memory", ResultsWarning, stacklevel=3)
    # Rows (image id, keypoints) as raw bytes: identical rows are identical poses of one image.
    rows = np.ascontiguousarray(np.concatenate([ids[:, None].astype(np.float64), keypoints], axis=1))
    distinct = len(np.unique(rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()))
    if distinct < n:
        warnings.warn(
            f"{source}: {n - distinct} of {n} predictions repeat an identical pose of the same image "
            f"(duplicates: each unmatched copy counts as a false positive)", ResultsWarning, stacklevel=3)


def validate_ground_truth(data: Any, protocol: Protocol, source: str) -> None:
    """Check that an annotation file holds what ``protocol``'s library reads.

    data: the parsed GT JSON (``images``, ``annotations``, ``categories``). Checks the fields the library
    indexes without a default (``Protocol.gt_fields``, ``Protocol.image_fields``), the keypoint count
    (K·3 numbers per annotation) and that every annotation names a known image. Raises HarnessError.
    """
    if not isinstance(data, dict):
        raise HarnessError(f"{source}: an annotation file must be a JSON object, got {_type_name(data)}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise HarnessError(f"{source}: field {key} must be a list, got {_type_name(data.get(key))}")
    if not data["categories"]:
        raise HarnessError(f"{source}: no categories (the person category, id 1, is needed)")
    image_ids = set()
    for i, image in enumerate(data["images"]):
        missing = [k for k in protocol.image_fields if not isinstance(image, dict) or k not in image]
        if missing:
            raise HarnessError(
                f"{where(source, record=f'image {i}')}: missing field(s) {', '.join(missing)} "
                f"(the {protocol.name} protocol reads them)")
        image_ids.add(image["id"])
    n = 3 * protocol.num_keypoints
    for i, ann in enumerate(data["annotations"]):
        label = f"annotation {ann.get('id', i) if isinstance(ann, dict) else i}"
        missing = [k for k in protocol.gt_fields if not isinstance(ann, dict) or k not in ann]
        if missing:
            raise HarnessError(
                f"{where(source, record=label)}: missing field(s) {', '.join(missing)} "
                f"(the {protocol.name} protocol reads them)")
        if not isinstance(ann["keypoints"], list) or len(ann["keypoints"]) != n:
            count = len(ann["keypoints"]) if isinstance(ann["keypoints"], list) else _type_name(ann["keypoints"])
            raise HarnessError(
                f"{where(source, record=label)}: keypoints has {count} numbers; the {protocol.name} protocol "
                f"has {protocol.num_keypoints} keypoints ({n} numbers)")
        if ann["image_id"] not in image_ids:
            raise HarnessError(f"{where(source, record=label)}: image_id {ann['image_id']} is not in images")
