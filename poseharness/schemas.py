"""Keypoint schemas: the one place that knows keypoint names, order, flip pairs, skeletons and OKS sigmas.

Facts from the COCO 2017 annotation files, the CrowdPose API and the GOG / Simple Pose code
(see ``shared/design/datasets-and-evaluation.md`` §1.3, §2.1 and ``methods.md`` §0).
All indices are 0-based.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import HarnessError


@dataclass(frozen=True)
class KeypointSchema:
    name: str
    keypoints: tuple[str, ...]
    sigmas: tuple[float, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeletons: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    default_skeleton: str = ""
    # Keypoints that count towards an annotation's ``num_keypoints`` field (CrowdPose counts only the 12
    # limb joints, not head and neck); ``None`` = all of them.
    counted: tuple[int, ...] | None = None

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation ``perm`` with ``flipped[:, k] = original[:, perm[k]]`` after a horizontal mirror."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @property
    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float64)

    def skeleton(self, name: str | None = None) -> tuple[tuple[int, int], ...]:
        key = name or self.default_skeleton
        try:
            return self.skeletons[key]
        except KeyError:
            raise HarnessError(
                f"schema {self.name!r} has no skeleton {key!r} (known: {', '.join(sorted(self.skeletons))})"
            ) from None

    def count_labelled(self, keypoints: np.ndarray) -> np.ndarray:
        """``num_keypoints`` as the dataset defines it, for ``(..., K, 3)`` keypoints."""
        v = np.asarray(keypoints)[..., 2] > 0
        if self.counted is not None:
            v = v[..., list(self.counted)]
        return v.sum(axis=-1)


COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# The 19 limbs of the COCO annotation file's ``skeleton`` (converted to 0-based), in file order.
COCO19 = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
# GOG's default order and direction of the same 19 limbs (head to feet), OffsetGuided config/coco_data.py.
GOG19 = (
    (0, 1), (0, 2), (1, 2), (1, 3), (2, 4), (5, 6), (4, 6), (3, 5), (5, 7), (7, 9), (6, 8), (8, 10),
    (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)
# GOG's denser 44-limb skeleton (DENSER_COCO_PERSON_SKELETON).
GOG44 = (
    (0, 1), (0, 2), (1, 2), (0, 3), (0, 4), (3, 4), (0, 5), (0, 6), (1, 5), (2, 6), (1, 3), (2, 4),
    (3, 5), (4, 6), (5, 6), (5, 11), (6, 12), (5, 12), (6, 11), (11, 12), (5, 7), (6, 8), (7, 9),
    (8, 10), (5, 9), (6, 10), (7, 8), (9, 10), (9, 11), (10, 12), (9, 13), (10, 14), (13, 11),
    (14, 12), (11, 14), (12, 13), (11, 15), (12, 16), (15, 13), (16, 14), (13, 16), (14, 15),
    (13, 14), (15, 16),
)

COCO17 = KeypointSchema(
    name="coco17",
    keypoints=COCO_KEYPOINTS,
    sigmas=(0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
            0.107, 0.107, 0.087, 0.087, 0.089, 0.089),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeletons={"coco19": COCO19, "gog19": GOG19, "gog44": GOG44},
    default_skeleton="coco19",
)

CROWDPOSE_KEYPOINTS = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
)
# MMPose's CrowdPose skeleton (the JSON's own ``skeleton`` is COCO's, meaningless for 14 keypoints).
CROWDPOSE15 = (
    (10, 8), (8, 6), (11, 9), (9, 7), (6, 7), (0, 6), (1, 7), (0, 1), (0, 2), (2, 4), (1, 3), (3, 5),
    (12, 13), (13, 0), (13, 1),
)

# GOG's limbs for CrowdPose (not in the paper, which is COCO only): the same 15 links, directed head to feet
# as GOG19 is, and a denser set in the spirit of GOG44 (crosses between neighbouring joints, left-right links).
GOG_CROWDPOSE15 = (
    (12, 13), (13, 0), (13, 1), (0, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7), (6, 7),
    (6, 8), (8, 10), (7, 9), (9, 11),
)
GOG_CROWDPOSE37 = GOG_CROWDPOSE15 + (
    (12, 0), (12, 1), (13, 6), (13, 7), (0, 7), (1, 6), (0, 4), (1, 5), (2, 3), (4, 5), (4, 6),
    (5, 7), (4, 8), (5, 9), (6, 9), (7, 8), (6, 10), (7, 11), (8, 11), (9, 10), (8, 9), (10, 11),
)

CROWDPOSE14 = KeypointSchema(
    name="crowdpose14",
    keypoints=CROWDPOSE_KEYPOINTS,
    sigmas=(0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
            0.079, 0.079),
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    skeletons={"crowdpose15": CROWDPOSE15, "gog_crowdpose15": GOG_CROWDPOSE15,
               "gog_crowdpose37": GOG_CROWDPOSE37},
    default_skeleton="crowdpose15",
    counted=tuple(range(12)),
)

SCHEMAS: dict[str, KeypointSchema] = {s.name: s for s in (COCO17, CROWDPOSE14)}


def get_schema(name: str) -> KeypointSchema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise HarnessError(f"unknown keypoint schema {name!r} (known: {', '.join(SCHEMAS)})") from None


def coco_category(schema: KeypointSchema) -> dict:
    """The ``categories[0]`` entry of an annotation file for this schema (1-based skeleton, as COCO writes it)."""
    return {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(schema.keypoints),
        "skeleton": [[a + 1, b + 1] for a, b in schema.skeleton()],
    }
