"""Evaluation with the official protocols: OKS, results files, input checks and the evaluators.

- ``evaluate(results, gt_path, protocol)``: the official figures (pycocotools / xtcocotools), by name
- ``write_results`` / ``read_results``: the one COCO keypoint results format
- ``validate_results``: the checks every results list passes before an evaluator sees it
- ``oks``: the one OKS (equal to pycocotools' ``computeOks``); pose NMS is in ``poseharness.posenms``
"""
from .evaluate import evaluate, evaluator_info, load_ground_truth
from .oks import oks
from .protocols import PROTOCOLS, Protocol, get_protocol
from .results import MIN_CONFIDENCE, read_results, results_records, write_results
from .validate import validate_ground_truth, validate_results

__all__ = [
    "MIN_CONFIDENCE", "PROTOCOLS", "Protocol", "evaluate", "evaluator_info", "get_protocol",
    "load_ground_truth", "oks", "read_results", "results_records", "validate_ground_truth",
    "validate_results", "write_results",
]
