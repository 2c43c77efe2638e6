"""Score a COCO keypoint results file with a dataset's official protocol (see ``protocols.py``).

The numbers come from the official libraries themselves (pycocotools, xtcocotools); this module only
checks the input first, hands the libraries exactly what they read, silences their printing, and names
their ``stats``. Two inputs the libraries mishandle are made well-defined:

- An empty results list: pycocotools' ``loadRes`` crashes on ``[]`` (it reads ``anns[0]``). The evaluator
  is then run on an empty detection set built directly, so the figures are what the protocol defines for
  no predictions (AP = AR = 0; −1 where a stat has no GT).
- Predictions whose keypoint confidences are all ≤ 0: xtcocotools (the crowdpose and ochuman protocols)
  silently drops them, while the official crowdposetools and pycocotools, which never read confidences,
  count them (false positives when they match nothing). Before such a prediction reaches xtcocotools its
  confidences are rewritten to ``MIN_CONFIDENCE``; since xtcocotools reads confidences nowhere else, the
  figures then equal the official tools' on every input.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.metadata
import io
import os
from pathlib import Path
from typing import Any

from ..errors import HarnessError
from .bootstrap import Matches, matches_path, record_intervals
from .protocols import Protocol, get_protocol
from .results import MIN_CONFIDENCE, results_and_source
from ..io import read_json
from .validate import validate_ground_truth, validate_results


def load_ground_truth(gt_path: str | os.PathLike, protocol: str | Protocol) -> dict:
    """Read an annotation file and check it holds what ``protocol``'s library reads. Raises HarnessError."""
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    gt_path = Path(gt_path)
    data = read_json(gt_path, "annotation file")
    validate_ground_truth(data, proto, str(gt_path))
    return data


def evaluate(
    results: list[dict] | str | os.PathLike,
    gt_path: str | os.PathLike,
    protocol: str,
    *,
    results_name: str | None = None,
    matches: bool = False,
) -> dict[str, float] | tuple[dict[str, float], Matches]:
    """Official keypoint figures of ``results`` against the annotation file ``gt_path``.

    results:      a results list (``results.results_records``) or the path of a results JSON file
    gt_path:      the annotation file; a path, because the crowdpose protocol re-reads it for its
                  easy/medium/hard split
    protocol:     ``coco`` (pycocotools), ``crowdpose`` (xtcocotools ``keypoints_crowd``, OKS scale 0.53·w·h)
                  or ``ochuman`` (xtcocotools ``keypoints`` with ``use_area``: OCHuman persons' ``area`` is
                  their box area w·h, so that is the OKS scale); see ``protocols.py``
    results_name: what to call the results in error messages (default: the path, or ``<results>``)
    matches:      also return the per-detection matching of this evaluation (``bootstrap.Matches``, read from
                  the same ``COCOeval`` object, no second evaluation), from which ``bootstrap`` recomputes
                  every stat under resampled images; the return value is then ``(stats, matches)``

    Returns the library's ``stats`` by name, in its order (fractions in [0, 1]; −1 = no GT in range):
    coco and ochuman ``AP AP50 AP75 APm APl AR AR50 AR75 ARm ARl``; crowdpose
    ``AP AP50 AP75 AR AR50 AR75 AP_easy AP_medium AP_hard`` (only the last three are rounded, to 4
    decimals, by the library — as the official crowdposetools does).
    Raises HarnessError for bad input (see ``validate.py``).
    """
    proto = get_protocol(protocol)
    records, source = results_and_source(results, results_name)
    gt_data = load_ground_truth(gt_path, proto)
    clean = validate_results(
        records,
        schema_or_K=proto.schema,
        gt_image_ids=[image["id"] for image in gt_data["images"]],
        source=source,
        category_ids=[category["id"] for category in gt_data["categories"]],
    )
    with contextlib.redirect_stdout(io.StringIO()):
        if proto.library == "pycocotools":
            stats, found = _run_pycocotools(proto, gt_data, clean, matches)
        else:
            stats, found = _run_xtcocotools(proto, Path(gt_path), gt_data, clean, matches)
    named = {name: float(value) for name, value in zip(proto.stat_names, stats, strict=True)}
    return (named, found) if matches else named


def evaluate_for_record(predictions: str | os.PathLike, gt_path: str | os.PathLike, protocol: str, *,
                        intervals: bool = True, n: int = 1000, seed: int = 0) -> tuple[dict[str, float], dict]:
    """``evaluate`` a predictions file for a run record. With ``intervals``, also save its matches beside it
    (``<name>.matches.npz``) and return, as the record's extra fields, ``{'intervals': {metric: [lo, hi]}
    (95 % bootstrap over the images, ``n`` resamples, ``seed``), 'matches': path}``; else ``{}``."""
    if not intervals:
        return evaluate(predictions, gt_path, protocol), {}
    metrics, found = evaluate(predictions, gt_path, protocol, matches=True)
    path = found.save(matches_path(predictions))
    return metrics, {"intervals": record_intervals(found, n=n, seed=seed), "matches": str(path)}


def evaluator_info(protocol: str) -> dict[str, Any]:
    """Which library and settings score ``protocol`` (for provenance in metrics files and records)."""
    proto = get_protocol(protocol)
    return {
        "protocol": proto.name,
        "library": proto.library,
        "version": importlib.metadata.version(proto.library),
        "iou_type": proto.iou_type,
        "use_area": proto.use_area,
        "sigmas": list(proto.schema.sigmas),
    }


def _run_pycocotools(proto: Protocol, gt_data: dict, records: list[dict], matches: bool):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = gt_data
    gt.createIndex()
    if records:
        dt = gt.loadRes(records)
    else:
        dt = COCO()
        dt.dataset = {"images": list(gt_data["images"]), "categories": copy.deepcopy(gt_data["categories"]),
                      "annotations": []}
        dt.createIndex()
    ev = COCOeval(gt, dt, proto.iou_type)
    ev.params.kpt_oks_sigmas = proto.schema.sigmas_array
    ev.evaluate()
    found = Matches.from_cocoeval(ev, proto.name, gt_data) if matches else None
    ev.accumulate()
    ev.summarize()
    return ev.stats, found


def _run_xtcocotools(proto: Protocol, gt_path: Path, gt_data: dict, records: list[dict], matches: bool):
    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    # ann_data avoids a second parse; the path is kept because the crowd split re-reads the file.
    gt = COCO(str(gt_path), ann_data=gt_data)
    dt = gt.loadRes([_scoreable(record) for record in records])   # xtcocotools accepts []
    ev = COCOeval(gt, dt, proto.iou_type, sigmas=proto.schema.sigmas_array, use_area=proto.use_area)
    ev.params.useSegm = None   # as MMPose sets it (None is also the default: keypoint evaluation)
    ev.evaluate()
    # Read before summarize: the crowd protocol's summarize re-runs evaluate on the easy/medium/hard subsets.
    found = Matches.from_cocoeval(ev, proto.name, gt_data) if matches else None
    ev.accumulate()
    ev.summarize()
    return ev.stats, found


def _scoreable(record: dict) -> dict:
    """The record, with its confidences raised to MIN_CONFIDENCE when all are ≤ 0 (xtcocotools would drop it)."""
    keypoints = record["keypoints"]
    if max(keypoints[2::3]) > 0:
        return record
    fixed = list(keypoints)
    fixed[2::3] = [MIN_CONFIDENCE] * (len(keypoints) // 3)
    return {**record, "keypoints": fixed}
