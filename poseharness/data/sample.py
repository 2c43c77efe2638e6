"""The record every dataset turns into: one image with all its persons."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Sample:
    """One image and its persons, in the coordinates of the image as stored on disk (or as augmented).

    Coordinates follow the annotation files: ``x`` right, ``y`` down, in pixels, with the centre of the
    top-left pixel at (0, 0) as COCO's keypoints are used by its evaluator.

    image:        (H, W, 3) uint8 RGB, or None when loaded without images (oracles need annotations only)
    keypoints:    (P, K, 3) float32 — x, y in pixels, v in {0, 1, 2} (0 = not labelled, x = y = 0)
    boxes:        (P, 4) float32 — x, y, w, h in pixels (top-left origin)
    areas:        (P,) float32 — the annotation's ``area`` (segment area in px², or 0.53·w·h for CrowdPose)
    iscrowd:      (P,) bool
    num_keypoints:(P,) int64 — the annotation's ``num_keypoints`` field (trusted, as the evaluators do)
    ignore_mask:  (H, W) bool, True where the loss must ignore the image (crowd regions, persons with no
                  labelled keypoints); None when not computed
    """

    image_id: int
    file_name: str
    width: int
    height: int
    keypoints: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    iscrowd: np.ndarray
    num_keypoints: np.ndarray
    image: np.ndarray | None = None
    ignore_mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_persons(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def annotated(self) -> np.ndarray:
        """(P,) bool — persons that training and evaluation use: not crowd and with labelled keypoints."""
        return ~self.iscrowd & (self.num_keypoints > 0)
