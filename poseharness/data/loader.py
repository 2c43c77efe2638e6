"""One loader for every dataset: :class:`Sample` sequences and the torch :class:`PoseDataset` that trainers use.

``load_samples(manifest, split)`` reads the split's annotation file (validated by
:func:`~poseharness.data.annotations.load_annotation_file`) and gives a lazy sequence of :class:`Sample`;
images and ignore masks are read only when a sample is accessed, so oracles and evaluators that need
annotations alone stay fast.

:class:`PoseDataset` puts each sample into the network input (bottom-up: whole image; top-down: one person
crop), applies the random augmentation seeded per (augment_seed, epoch, index), normalises the image and adds
the method's training targets from ``encode(sample)``, all inside the DataLoader's workers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate

from ..errors import HarnessError
from .annotations import AnnotationIndex, ImageRecord, load_annotation_file
from .augment import (HALF_BODY_EXPAND, AugmentConfig, Size, as_size, augmentation_affine, bottom_up_affine,
                      compose, person_centres, sample_augmentation, sample_half_body, top_down_affine,
                      transform_sample, upper_body)
from .manifest import Manifest
from .sample import Sample

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VIEWS = ("bottom-up", "top-down")
# Per-person entries of a dataset item: their first dimension is the number of persons, which differs between
# items, so :func:`collate` keeps them as lists instead of stacking.
PERSON_KEYS = ("keypoints", "boxes", "areas", "iscrowd", "num_keypoints")


# ----------------------------------------------------------------------------------------------------------
# Ignore masks
# ----------------------------------------------------------------------------------------------------------

def ignored_persons(record: ImageRecord) -> np.ndarray:
    """(P,) bool — persons whose region the loss must ignore: crowds, and persons without usable keypoints.

    "Without usable keypoints" is no labelled keypoint at all, or a ``num_keypoints`` field of 0. The two agree
    on COCO; on CrowdPose the field counts only limb joints, and a person with only head / neck labelled is
    ignored by the official evaluator, so training treats its unlabelled limbs as unknown, not as background.
    """
    no_labels = ~(record.keypoints[..., 2] > 0).any(axis=-1)
    return record.iscrowd | no_labels | (record.num_keypoints == 0)


def _rle(segmentation: Any, box: np.ndarray, height: int, width: int) -> dict:
    """One RLE (pycocotools) for a person: its polygons, its RLE, or its box when it has no segmentation."""
    if segmentation is None:
        return mask_utils.frPyObjects(box.astype(np.float64).reshape(1, 4), height, width)[0]
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):     # uncompressed RLE (COCO crowds)
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}


def ignore_mask(record: ImageRecord) -> np.ndarray:
    """(H, W) bool for one image: True over the regions of :func:`ignored_persons` (decoded by pycocotools)."""
    idx = np.flatnonzero(ignored_persons(record))
    if idx.size == 0:
        return np.zeros((record.height, record.width), dtype=bool)
    rles = [_rle(record.segmentations[i], record.boxes[i], record.height, record.width) for i in idx]
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


# ----------------------------------------------------------------------------------------------------------
# Samples
# ----------------------------------------------------------------------------------------------------------

def read_image(path: Path, record: ImageRecord) -> np.ndarray:
    """(H, W, 3) uint8 RGB. Errors name the file and the image id; the size must match the annotation's.

    EXIF orientation is deliberately not applied: COCO-style annotations refer to the stored pixel grid.
    """
    try:
        with Image.open(path) as im:
            image = np.array(im.convert("RGB"))     # a writable copy: encoders may draw into it
    except FileNotFoundError:
        raise HarnessError(f"{path}: image file not found (image id {record.image_id})") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise HarnessError(f"{path}: cannot read the image (image id {record.image_id}): {exc}") from None
    if image.shape[:2] != (record.height, record.width):
        raise HarnessError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]} pixels but the annotation of image id "
            f"{record.image_id} says {record.width}x{record.height}")
    return image


class SampleSequence(Sequence):
    """A lazy, picklable sequence of :class:`Sample`, one per image of an annotation file, in file order.

    images: read each image from ``image_dir`` (missing files are reported when the sequence is built)
    masks:  compute each sample's ``ignore_mask`` (needs no image, only the annotations)
    """

    def __init__(self, index: AnnotationIndex, image_dir: Path | None, *, masks: bool):
        self.index = index
        self.image_dir = None if image_dir is None else Path(image_dir)
        self.masks = masks

    def __len__(self) -> int:
        return len(self.index.images)

    def record(self, i: int) -> ImageRecord:
        return self.index.images[i]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        r = self.index.images[i]
        image = None if self.image_dir is None else read_image(self.image_dir / r.file_name, r)
        meta = {"annotation_ids": r.annotation_ids.copy()}
        if r.crowd_index is not None:
            meta["crowd_index"] = r.crowd_index
        return Sample(
            image_id=r.image_id, file_name=r.file_name, width=r.width, height=r.height,
            keypoints=r.keypoints.copy(), boxes=r.boxes.copy(), areas=r.areas.copy(), iscrowd=r.iscrowd.copy(),
            num_keypoints=r.num_keypoints.copy(), image=image,
            ignore_mask=ignore_mask(r) if self.masks else None, meta=meta,
        )


def load_samples(manifest: Manifest, split: str, size: str | None = None, seed: int | None = None,
                 images: bool = True, masks: bool | None = None) -> SampleSequence:
    """The split's samples as a lazy sequence (``list(...)`` materialises it).

    size, seed: which synthetic set (the manifest's ``sizes`` key and generator seed); ignored for real sets.
    images: read images (False: annotations only, ``Sample.image`` is None — no image folder needed).
    masks:  compute ignore masks; defaults to ``images``.
    Raises :class:`HarnessError` for a missing or invalid annotation file and, when ``images``, for a missing
    image folder or image file (naming the first missing file and its image id).
    """
    ann_path = manifest.annotation_path(split, size, seed)
    if not ann_path.exists():
        raise HarnessError(
            f"{ann_path}: annotation file of {manifest.name} split {split!r} not found; "
            f"run `poseharness data prepare {manifest.name}` first")
    index = load_annotation_file(ann_path, manifest.schema, manifest.format)
    image_dir = None
    if images:
        image_dir = manifest.image_dir(split, size, seed)
        if not image_dir.is_dir():
            raise HarnessError(f"{image_dir}: image folder of {manifest.name} split {split!r} not found")
        # One listing instead of a stat per image: cheap even for COCO train, and a missing file fails now,
        # not hours into training. Names with sub-folders fall back to a stat.
        present = {p.name for p in image_dir.iterdir()}
        missing = [r for r in index.images
                   if not (r.file_name in present or ("/" in r.file_name and (image_dir / r.file_name).is_file()))]
        if missing:
            first = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise HarnessError(
                f"{image_dir / first.file_name}: image file not found (image id {first.image_id}, "
                f"listed in {ann_path}){more}")
    return SampleSequence(index, image_dir, masks=images if masks is None else masks)


# ----------------------------------------------------------------------------------------------------------
# The torch dataset
# ----------------------------------------------------------------------------------------------------------

def normalise_image(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, ImageNet mean / std."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(torch.float32) / 255.0
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return (x - mean) / std


def denormalise_image(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`normalise_image`: (3, H, W) float -> (H, W, 3) uint8."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype)[:, None, None]
    y = ((x * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return y.permute(1, 2, 0).numpy()


class PoseDataset(Dataset):
    """Training / inference items for one split, in the network input's coordinates.

    view 'bottom-up': one item per image (long side resized to the input, padded to a square).
    view 'top-down':  one item per annotated person (not crowd, ``num_keypoints`` > 0), cropped from its box with
                      the standard ×1.25 expansion; the item's per-person arrays hold that person only.
    augment:      random scale / rotation / translation / flip (and, opt-in, a crop centred on a random person:
                  :class:`AugmentConfig` ``centre`` / ``crop``; for top-down items HRNet's half-body crop:
                  ``half_body``) composed with the view into one affine; None = no
                  augmentation (evaluation). Each item's parameters come from a generator seeded with
                  (augment_seed, epoch, index), never from global state, so any worker produces the same item.
    encode:       ``encode(sample) -> dict`` of the method's training targets, run in the workers on the
                  transformed :class:`Sample` (image (S, S, 3) uint8, keypoints in input pixels, ignore mask).
    size, seed:   which synthetic set (as in :func:`load_samples`).
    max_persons:  leave out the images with more annotated persons (not crowd, ``num_keypoints`` > 0) than this
                  (e.g. a paper's training on images of at most 8 persons); None keeps every image.

    Items are dicts: ``image`` (3, S, S) float32 normalised; ``keypoints`` (P, K, 3) float32, ``boxes`` (P, 4)
    float32, ``areas`` (P,) float32, ``iscrowd`` (P,) bool, ``num_keypoints`` (P,) int64, ``ignore_mask`` (S, S)
    bool; ``meta`` (image_id, file_name, affine (2, 3) float64 from the original image to the input, orig_width,
    orig_height, flip, view, index, and for top-down person / annotation_id); plus ``encode``'s entries.

    Call :meth:`set_epoch` before iterating each epoch. DataLoader workers get a copy of the dataset when an
    iteration starts, so this works with ``persistent_workers=False`` (the default).
    """

    def __init__(self, manifest: Manifest, split: str, *, input_size: Size, view: str = "bottom-up",
                 augment: AugmentConfig | None = None, encode: Callable[[Sample], dict] | None = None,
                 size: str | None = None, seed: int | None = None, augment_seed: int = 0,
                 max_persons: int | None = None):
        if view not in VIEWS:
            raise HarnessError(f"unknown view {view!r} (known: {', '.join(VIEWS)})")
        self.samples = load_samples(manifest, split, size, seed, images=True, masks=True)
        self.schema = manifest.schema
        self.input_size = as_size(input_size)
        self.view = view
        self.augment = augment
        self.encode = encode
        self.augment_seed = int(augment_seed)
        self.epoch = 0
        self.upper = upper_body(self.schema.keypoints)
        kept = range(len(self.samples))
        if max_persons is not None:
            kept = [i for i in kept if self._annotated(self.samples.record(i)).sum() <= max_persons]
        if view == "bottom-up":
            self.items = [(i, -1) for i in kept]
        else:
            self.items = [(i, int(p)) for i in kept for p in np.flatnonzero(self._annotated(self.samples.record(i)))]

    @staticmethod
    def _annotated(record: ImageRecord) -> np.ndarray:
        return ~record.iscrowd & (record.num_keypoints > 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def affine(self, index: int) -> tuple[np.ndarray, bool]:
        """The item's (2, 3) affine from the original image to the input, and whether it mirrors."""
        i, person = self.items[index]
        r = self.samples.record(i)
        if self.view == "bottom-up":
            m = bottom_up_affine(r.width, r.height, self.input_size)
        else:
            m = top_down_affine(r.boxes[person], self.input_size)
        if self.augment is None:
            return m, False
        rng = np.random.default_rng([self.augment_seed, self.epoch, index])
        centres = None
        if self.augment.centre == "person":
            # Candidates: the persons the loss trains on (bottom-up), or the item's own person (top-down).
            keep = np.flatnonzero(~ignored_persons(r)) if person < 0 else np.array([person])
            centres = person_centres(r.boxes[keep], m)
        params = sample_augmentation(self.augment, rng, self.input_size, persons=centres)
        if self.augment.half_body > 0 and person >= 0:
            box = sample_half_body(self.augment, rng, r.keypoints[person], self.upper)
            if box is not None:
                m = top_down_affine(box, self.input_size, HALF_BODY_EXPAND)
        return compose(augmentation_affine(params, self.input_size), m), params.flip

    def transformed_sample(self, index: int) -> Sample:
        """The item's :class:`Sample` in input coordinates (what ``encode`` receives)."""
        i, person = self.items[index]
        sample = self.samples[i]
        m, flip = self.affine(index)
        out = transform_sample(sample, m, self.input_size,
                               flip_index=self.schema.flip_index if flip else None,
                               persons=None if person < 0 else [person], counted=self.schema.counted)
        out.meta.update(view=self.view, index=index)
        if person >= 0:
            ids = sample.meta["annotation_ids"]
            out.meta.update(person=person, annotation_id=int(ids[person]), annotation_ids=ids[[person]])
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.transformed_sample(index)
        item: dict[str, Any] = {
            "image": normalise_image(s.image),
            "keypoints": torch.from_numpy(s.keypoints),
            "boxes": torch.from_numpy(s.boxes),
            "areas": torch.from_numpy(s.areas),
            "iscrowd": torch.from_numpy(s.iscrowd),
            "num_keypoints": torch.from_numpy(s.num_keypoints),
            "ignore_mask": torch.from_numpy(np.ascontiguousarray(s.ignore_mask)),
            "meta": {"image_id": s.image_id, "file_name": s.file_name, **s.meta},
        }
        if self.encode is not None:
            targets = self.encode(s)
            clash = sorted(set(targets) & set(item))
            if clash:
                raise ValueError(f"encode returned keys that the dataset already uses: {clash}")
            item.update(targets)
        return item


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`PoseDataset` items: images, masks and targets stacked; per-person arrays and metas as lists."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if key == "meta" or key in PERSON_KEYS:
            out[key] = values
        else:
            out[key] = default_collate(values)
    return out
