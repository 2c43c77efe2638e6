"""Reading COCO / CrowdPose / OCHuman keypoint annotation files, validated at the edge.

:func:`load_annotation_file` checks everything the rest of the harness relies on before anything uses it and
turns each problem into a :class:`~poseharness.errors.HarnessError` that names the file, the record (image id,
annotation id, index) and the problem. The result is an :class:`AnnotationIndex`: one :class:`ImageRecord` per
image, in the file's image order, holding that image's persons as arrays.

Dialects (``fmt``), see ``shared/design/datasets-and-evaluation.md`` §1.2, §2.2, §3:

- ``coco``: ``area`` and ``segmentation`` (polygons, or RLE for crowds) per person.
- ``crowdpose``: no ``area`` and no ``segmentation``; ``crowdIndex`` per image. The area is the protocol's
  proxy :data:`CROWDPOSE_AREA_FACTOR` · w · h of the box (crowdposetools ``computeOks`` and area ranges).
- ``ochuman``: COCO schema with compressed-RLE segmentation and float keypoints.

``num_keypoints`` is kept exactly as the file gives it: the evaluators trust the field (CrowdPose counts only the
12 limb joints), so the harness must too.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HarnessError, where
from ..schemas import KeypointSchema

FORMATS = ("coco", "crowdpose", "ochuman")

# CrowdPose has no ``area``: its official evaluator scales OKS (and bins areas) by 0.53 · bbox w · h.
# This constant is the one place the harness states that convention.
CROWDPOSE_AREA_FACTOR = 0.53


def crowdpose_area(boxes: np.ndarray) -> np.ndarray:
    """``(P, 4)`` xywh boxes -> (P,) float: the CrowdPose protocol's area proxy 0.53 · w · h, multiplied in
    xtcocotools' order (``bbox[3] * bbox[2] * 0.53``) so that an OKS on it equals its ``computeOks`` bit for bit."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return b[:, 3] * b[:, 2] * CROWDPOSE_AREA_FACTOR


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image of an annotation file and its P persons (P may be 0), in file order.

    keypoints:      (P, K, 3) float32 — x, y pixels, v ∈ {0, 1, 2}; x = y = 0 where v = 0
    boxes:          (P, 4) float32 — x, y, w, h pixels
    areas:          (P,) float32 — the file's ``area``, or 0.53 · w · h for CrowdPose
    iscrowd:        (P,) bool
    num_keypoints:  (P,) int64 — the file's field, as given
    annotation_ids: (P,) int64
    segmentations:  P entries, each None, a list of polygons (flat [x0, y0, x1, y1, ...] lists, at least three
                    points each) or an RLE dict ``{'counts', 'size'}`` as in the file
    crowd_index:    CrowdPose's per-image ``crowdIndex``; None for other formats
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
    annotation_ids: np.ndarray
    segmentations: tuple[Any, ...]
    crowd_index: float | None = None

    @property
    def num_persons(self) -> int:
        return int(self.keypoints.shape[0])


@dataclass(frozen=True, eq=False)
class AnnotationIndex:
    """A validated annotation file: its images in file order, each with its persons."""

    path: Path
    fmt: str
    schema: KeypointSchema
    images: tuple[ImageRecord, ...]
    categories: tuple[dict[str, Any], ...] = field(repr=False)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_persons(self) -> int:
        return sum(r.num_persons for r in self.images)

    @property
    def image_ids(self) -> list[int]:
        return [r.image_id for r in self.images]

    def by_id(self, image_id: int) -> ImageRecord:
        lookup = self.__dict__.get("_by_id")
        if lookup is None:
            lookup = {r.image_id: r for r in self.images}
            object.__setattr__(self, "_by_id", lookup)
        try:
            return lookup[image_id]
        except KeyError:
            raise HarnessError(f"{self.path}: no image with id {image_id}") from None


# ----------------------------------------------------------------------------------------------------------
# Validation helpers: each raises a HarnessError that says where and what.
# ----------------------------------------------------------------------------------------------------------

class _Checker:
    def __init__(self, path: Path, schema: KeypointSchema, fmt: str):
        self.path, self.schema, self.fmt = path, schema, fmt

    def fail(self, record: str | None, problem: str) -> HarnessError:
        return HarnessError(f"{where(self.path, record=record)}: {problem}")

    def require(self, obj: dict, keys: tuple[str, ...], record: str) -> None:
        missing = [k for k in keys if k not in obj]
        if missing:
            raise self.fail(record, f"missing required field(s) {', '.join(missing)}")

    def integer(self, value: Any, name: str, record: str, *, minimum: int | None = None) -> int:
        # JSON writers sometimes emit 3.0 for 3: accept integral floats, reject bools, strings and fractions.
        ok = isinstance(value, int) and not isinstance(value, bool) or (
            isinstance(value, float) and math.isfinite(value) and value.is_integer())
        if not ok:
            raise self.fail(record, f"{name} must be an integer, got {value!r}")
        value = int(value)
        if minimum is not None and value < minimum:
            raise self.fail(record, f"{name} must be >= {minimum}, got {value}")
        return value

    def numbers(self, value: Any, name: str, record: str, length: int | None = None,
                length_note: str = "") -> np.ndarray:
        if not isinstance(value, list):
            raise self.fail(record, f"{name} must be a list of numbers, got {type(value).__name__}")
        if length is not None and len(value) != length:
            raise self.fail(record, f"{name} has {len(value)} numbers, expected {length}{length_note}")
        try:
            arr = np.asarray(value) if value else np.zeros(0)
        except ValueError:      # ragged nested lists
            arr = np.zeros((0, 0))
        # A list of JSON numbers becomes an int or float array; strings, nulls, nested lists or booleans do not.
        if arr.ndim != 1 or arr.dtype.kind not in "if":
            raise self.fail(record, f"{name} must hold only numbers, got {value[:6]!r}{'...' if len(value) > 6 else ''}")
        arr = arr.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise self.fail(record, f"{name}[{bad[0]}] is not a finite number ({arr[bad[0]]})")
        return arr

    def number(self, value: Any, name: str, record: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(record, f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise self.fail(record, f"{name} is not a finite number ({value})")
        return float(value)

    def segmentation(self, seg: Any, record: str, height: int, width: int) -> Any:
        if isinstance(seg, dict):
            self.require(seg, ("counts", "size"), f"{record}, segmentation")
            size = seg["size"]
            if not (isinstance(size, list) and len(size) == 2 and [*size] == [height, width]):
                raise self.fail(record, f"segmentation RLE size {size!r} differs from the image's [height, width] "
                                        f"[{height}, {width}]")
            counts = seg["counts"]
            if not (isinstance(counts, str) or (isinstance(counts, list) and all(
                    isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts))):
                raise self.fail(record, "segmentation RLE counts must be a string or a list of non-negative integers")
            return seg
        if isinstance(seg, list):
            polygons = []
            for j, poly in enumerate(seg):
                arr = self.numbers(poly, f"segmentation polygon {j}", record)
                if arr.size % 2:
                    raise self.fail(record, f"segmentation polygon {j} has an odd number of coordinates ({arr.size})")
                # Fewer than three points enclose nothing; pycocotools would even misread a 4-number list as a
                # box. Real COCO files hold a few such slivers, so they are dropped rather than rejected.
                if arr.size >= 6:
                    polygons.append(poly)
            return polygons or None
        raise self.fail(record, f"segmentation must be a polygon list or an RLE dict, got {type(seg).__name__}")


def _read_json(path: Path) -> Any:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise HarnessError(f"{path}: annotation file not found") from None
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read the annotation file ({exc.strerror})") from None
    if not text.strip():
        raise HarnessError(f"{path}: the annotation file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # A JSON object file always ends with its closing brace; a download or write cut short does not.
        hint = " (the file looks truncated)" if not text.rstrip().endswith((b"}", b"]")) else ""
        raise HarnessError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{hint}") from None
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{path}: not valid JSON: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_annotation_file(path: str | Path, schema: KeypointSchema, fmt: str) -> AnnotationIndex:
    """Read and validate a COCO / CrowdPose / OCHuman keypoint annotation file.

    fmt: 'coco', 'crowdpose' or 'ochuman' (the manifest's ``format``). Raises :class:`HarnessError` for malformed
    or truncated JSON, missing top-level keys, missing or ill-typed fields, keypoints whose length is not 3·K for
    ``schema``, visibility outside {0, 1, 2}, non-finite numbers, duplicate ids, annotations of an unknown image
    or category, and segmentations that do not fit their image.
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise HarnessError(f"{path}: unknown annotation format {fmt!r} (known: {', '.join(FORMATS)})")
    check = _Checker(path, schema, fmt)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise check.fail(None, f"top level must be a JSON object with images, annotations and categories, "
                               f"got {type(data).__name__}")
    check.require(data, ("images", "annotations", "categories"), "top level")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise check.fail("top level", f"{key} must be a list, got {type(data[key]).__name__}")

    K = schema.num_keypoints
    person_ids = _check_categories(check, data["categories"], K)
    images, order = _check_images(check, data["images"])

    per_image: dict[int, list[tuple]] = {image_id: [] for image_id in order}
    seen_ann: dict[int, int] = {}
    for index, ann in enumerate(data["annotations"]):
        record = f"annotations[{index}]"
        if not isinstance(ann, dict):
            raise check.fail(record, f"an annotation must be an object, got {type(ann).__name__}")
        if "id" in ann:
            record = f"annotation id={ann['id']!r} (annotations[{index}])"
        required = ("id", "image_id", "bbox", "keypoints", "num_keypoints", "iscrowd")
        check.require(ann, required + (() if fmt == "crowdpose" else ("area",)), record)
        ann_id = check.integer(ann["id"], "id", record)
        image_id = check.integer(ann["image_id"], "image_id", record)
        record = f"annotation id={ann_id}, image_id={image_id} (annotations[{index}])"
        if ann_id in seen_ann:
            raise check.fail(record, f"duplicate annotation id (also annotations[{seen_ann[ann_id]}])")
        seen_ann[ann_id] = index
        if image_id not in images:
            raise check.fail(record, f"image_id {image_id} is not in images")
        if "category_id" in ann and check.integer(ann["category_id"], "category_id", record) not in person_ids:
            raise check.fail(record, f"category_id {ann['category_id']!r} is not the keypoint category "
                                     f"({', '.join(map(str, sorted(person_ids)))})")
        width, height = images[image_id]["width"], images[image_id]["height"]

        bbox = check.numbers(ann["bbox"], "bbox", record, 4, " (x, y, w, h)")
        if bbox[2] < 0 or bbox[3] < 0:
            raise check.fail(record, f"bbox has a negative width or height {bbox.tolist()}")
        kp = check.numbers(ann["keypoints"], "keypoints", record, 3 * K,
                           f" = 3 x {K} keypoints of schema {schema.name}").reshape(K, 3)
        bad_v = np.flatnonzero(~np.isin(kp[:, 2], (0, 1, 2)))
        if bad_v.size:
            raise check.fail(record, f"keypoint {bad_v[0]} ({schema.keypoints[bad_v[0]]}) has visibility "
                                     f"{kp[bad_v[0], 2]:g}, expected 0, 1 or 2")
        kp[kp[:, 2] == 0, :2] = 0.0     # the files' convention for unlabelled points, enforced
        num = check.integer(ann["num_keypoints"], "num_keypoints", record, minimum=0)
        if num > K:
            raise check.fail(record, f"num_keypoints {num} exceeds the schema's {K} keypoints")
        iscrowd = ann["iscrowd"]
        if isinstance(iscrowd, bool) or not isinstance(iscrowd, (int, float)) or iscrowd not in (0, 1):
            raise check.fail(record, f"iscrowd must be 0 or 1, got {iscrowd!r}")
        if fmt == "crowdpose":
            area = float(crowdpose_area(bbox)[0])
        else:
            area = check.number(ann["area"], "area", record)
            if area < 0:
                raise check.fail(record, f"area must be >= 0, got {area}")
        seg = ann.get("segmentation")
        seg = None if seg is None else check.segmentation(seg, record, height, width)
        per_image[image_id].append((ann_id, kp, bbox, area, bool(iscrowd), num, seg))

    records = []
    for image_id in order:
        img = images[image_id]
        persons = per_image[image_id]
        records.append(ImageRecord(
            image_id=image_id, file_name=img["file_name"], width=img["width"], height=img["height"],
            keypoints=np.array([p[1] for p in persons], dtype=np.float32).reshape(-1, K, 3),
            boxes=np.array([p[2] for p in persons], dtype=np.float32).reshape(-1, 4),
            areas=np.array([p[3] for p in persons], dtype=np.float32),
            iscrowd=np.array([p[4] for p in persons], dtype=bool),
            num_keypoints=np.array([p[5] for p in persons], dtype=np.int64),
            annotation_ids=np.array([p[0] for p in persons], dtype=np.int64),
            segmentations=tuple(p[6] for p in persons),
            crowd_index=img["crowd_index"],
        ))
    return AnnotationIndex(path=path, fmt=fmt, schema=schema, images=tuple(records),
                           categories=tuple(data["categories"]))


def _check_categories(check: _Checker, categories: list, K: int) -> set[int]:
    """Ids of the keypoint categories; each must name exactly K keypoints (catches a file read with the wrong schema)."""
    ids = set()
    for index, cat in enumerate(categories):
        record = f"categories[{index}]"
        if not isinstance(cat, dict):
            raise check.fail(record, f"a category must be an object, got {type(cat).__name__}")
        check.require(cat, ("id",), record)
        if "keypoints" not in cat:
            continue
        names = cat["keypoints"]
        if not isinstance(names, list) or len(names) != K:
            count = len(names) if isinstance(names, list) else type(names).__name__
            raise check.fail(record, f"category {cat.get('name', cat['id'])!r} names {count} keypoints, "
                                     f"schema {check.schema.name} has {K}")
        ids.add(cat["id"])
    if not ids:
        raise check.fail("categories", "no category lists keypoint names (not a keypoint annotation file?)")
    return ids


def _check_images(check: _Checker, entries: list) -> tuple[dict[int, dict], list[int]]:
    images: dict[int, dict] = {}
    order: list[int] = []
    for index, img in enumerate(entries):
        record = f"images[{index}]"
        if not isinstance(img, dict):
            raise check.fail(record, f"an image must be an object, got {type(img).__name__}")
        if "id" in img:
            record = f"image id={img['id']!r} (images[{index}])"
        check.require(img, ("id", "file_name", "width", "height"), record)
        image_id = check.integer(img["id"], "id", record)
        if image_id in images:
            raise check.fail(record, "duplicate image id")
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise check.fail(record, f"file_name must be a non-empty string, got {img['file_name']!r}")
        width = check.integer(img["width"], "width", record, minimum=1)
        height = check.integer(img["height"], "height", record, minimum=1)
        crowd_index = None
        if check.fmt == "crowdpose":
            # The protocol's easy / medium / hard split reads it; a file without it cannot be scored.
            check.require(img, ("crowdIndex",), record)
            crowd_index = check.number(img["crowdIndex"], "crowdIndex", record)
        images[image_id] = {"file_name": img["file_name"], "width": width, "height": height,
                            "crowd_index": crowd_index}
        order.append(image_id)
    return images, order
