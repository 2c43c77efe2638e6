"""The three evaluation protocols the harness reports, as data: which library, which mode, which names.

Facts from ``shared/design/datasets-and-evaluation.md`` §1.4, §2.4–2.5, §3 and §4:

- ``coco``: pycocotools ``COCOeval(gt, dt, 'keypoints')`` — the reference implementation of the COCO
  keypoint challenge. OKS scale ``s² = area`` (the segment area), GT ignored when ``iscrowd`` or its
  ``num_keypoints`` field is 0, 10 stats at maxDets 20.
- ``crowdpose``: xtcocotools ``COCOeval(gt, dt, 'keypoints_crowd', sigmas=CrowdPose's 14, use_area=False)``
  with ``params.useSegm = None`` (as MMPose calls it) — a port of the official crowdposetools, which is not
  installable on current stacks. OKS scale ``s² = 0.53·w·h`` of the GT box, ignore by the ``num_keypoints``
  field, and AP easy/medium/hard over images split by ``crowdIndex`` at 0.2 and 0.8 (each the plain mean of
  the precision array of its subset, rounded to 4 decimals by the library). 9 stats.
- ``ochuman``: what the field reports (MMPose's ``TopDownOCHumanDataset``): xtcocotools
  ``COCOeval(gt, dt, 'keypoints', sigmas=COCO's 17, use_area=True)`` with ``useSegm = None``. OCHuman's
  COCO-format files set every person's ``area`` to its box area ``w·h`` (not a mask area), so the OKS scale
  is looser than COCO's; and in this mode xtcocotools recomputes the ignore flag from the GT keypoints
  (no labelled keypoint → ignored) instead of reading ``num_keypoints``. The 10 COCO stat names; AP(M)/AR(M)
  are typically −1 because OCHuman persons are large.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import HarnessError
from ..schemas import COCO17, CROWDPOSE14, KeypointSchema

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
CROWDPOSE_STAT_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard")


@dataclass(frozen=True)
class Protocol:
    """How one dataset's results are scored.

    name:        the manifest's ``protocol`` value
    schema:      the keypoint schema predictions must use (K keypoints, the sigmas)
    library:     ``pycocotools`` or ``xtcocotools``
    iou_type:    the ``iouType`` handed to the library's ``COCOeval``
    use_area:    xtcocotools only: OKS scale from the GT ``area`` (True) or ``0.53·w·h`` of its box (False)
    stat_names:  names of ``COCOeval.stats`` in order
    gt_fields:   annotation fields the library reads (a GT file without them makes it crash)
    image_fields: image fields the library reads
    """

    name: str
    schema: KeypointSchema
    library: str
    iou_type: str
    use_area: bool
    stat_names: tuple[str, ...]
    gt_fields: tuple[str, ...]
    image_fields: tuple[str, ...] = ("id",)

    @property
    def num_keypoints(self) -> int:
        return self.schema.num_keypoints


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="coco", schema=COCO17, library="pycocotools", iou_type="keypoints", use_area=True,
            stat_names=COCO_STAT_NAMES,
            # pycocotools reads iscrowd with int(o['iscrowd']) in evaluateImg (KeyError when absent).
            gt_fields=("id", "image_id", "category_id", "keypoints", "num_keypoints", "area", "bbox", "iscrowd"),
        ),
        Protocol(
            name="crowdpose", schema=CROWDPOSE14, library="xtcocotools", iou_type="keypoints_crowd",
            use_area=False, stat_names=CROWDPOSE_STAT_NAMES,
            gt_fields=("id", "image_id", "category_id", "keypoints", "num_keypoints", "bbox"),
            image_fields=("id", "crowdIndex"),
        ),
        Protocol(
            name="ochuman", schema=COCO17, library="xtcocotools", iou_type="keypoints", use_area=True,
            stat_names=COCO_STAT_NAMES,
            gt_fields=("id", "image_id", "category_id", "keypoints", "area", "bbox"),
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise HarnessError(
            f"unknown evaluation protocol {name!r} (known: {', '.join(PROTOCOLS)})") from None
