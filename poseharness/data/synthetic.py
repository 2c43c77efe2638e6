"""Synthetic datasets in the exact file formats of COCO, CrowdPose and OCHuman, generated in place from a seed.

``generate(manifest)`` renders images of several articulated figures (see :mod:`.render`) and writes, per
split of the manifest, the annotation JSON and the image folder, in the dialect of ``manifest.format``:

=========== ========== ============================ ===================== ====================== ==================
format      keypoints  ``bbox``                     ``area``              ``segmentation``       extras
=========== ========== ============================ ===================== ====================== ==================
coco        integers   extent of the polygons       segment area (visible polygons; crowd:        crowd regions,
                       (floats)                     mask, as rasterised)  uncompressed RLE       zero-keypoint
                                                                                                 persons
crowdpose   integers   whole figure, clipped        (none)                (none)                 ``crowdIndex``,
                       (floats)                                                                  ``num_keypoints``
                                                                                                 = 12 limb joints
ochuman     floats     whole figure + 2 % margin,   bbox w·h              compressed RLE of the  heavy overlap
                       integers                                           visible mask
=========== ========== ============================ ===================== ====================== ==================

Keypoint visibility comes from the rendered label map: v=2 where the joint's own body part is on top, v=1 where
a nearer figure, an object or the person's other limb hides it, v=0 (x = y = 0) outside the image or on the
far side of the head. The bytes are reproducible for the same seed and the same library versions (Pillow's
JPEG encoder, NumPy's generators).

Everything is a function of (seed, split, image index): image ``i`` of split ``s`` draws from
``np.random.SeedSequence([seed, crc32(dataset), crc32(s), i])``, so the files are byte-identical for the same
seed whatever the number of worker processes. A ``.prepared.json`` stamp, written last, records the settings
and the size and SHA-256 of every file written (annotations and images; the image digests are taken from the
encoded bytes in memory, at no extra read). A second call with the same settings checks every recorded file
(present, same size, same SHA-256) and returns ``status: 'already prepared'`` with ``verified`` set, without
writing anything; a missing, truncated or altered file, an unreadable stamp or one that records no files
regenerates the whole set (deterministic from the seed) and lists what was broken under ``repairs``.

Ids: image ids are ``base + 100_000 * split_position + index`` (base 1, or 100000 for CrowdPose whose ids
are 6-digit numbers from 100000) and annotation ids ``10_000_000 * split_position + n`` (n from 1), so the
ids of different splits never collide (CrowdPose practice concatenates train and val into trainval).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from tqdm import tqdm

from ..errors import HarnessError
from ..io import file_digest, write_bytes_atomic, write_json_atomic
from ..schemas import coco_category
from . import render
from .manifest import Manifest

GENERATOR_VERSION = 1
STAMP = ".prepared.json"
FORMATS = ("coco", "crowdpose", "ochuman")
OVERLAP_MODES = ("scatter", "crowd", "pairs")
MAX_IMAGES_PER_SPLIT = 100_000
# CrowdPose's split of images by crowdIndex, as its evaluator's summarize() calls it: easy < 0.2 <= medium < 0.8.
CROWD_THRESHOLDS = (0.2, 0.8)
# A person needs this many visible pixels to be annotated at all (a fully hidden person has no annotation).
MIN_VISIBLE_PIXELS = 12
# Douglas-Peucker tolerance (pixels) when tracing a mask into COCO polygons.
POLYGON_TOLERANCE = 0.7


# ---------------------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class GeneratorSettings:
    """The ``generator:`` mapping of a synthetic manifest (every key optional; these are the defaults).

    Lengths are pixels, ``person_height`` is the standing height as a fraction of the image height (drawn
    log-uniformly), rates are probabilities: ``outside_rate`` per person (per row in crowd mode), the
    others per image.
    """
    image_size: tuple[int, int] = (256, 384)          # side lengths, width and height drawn independently
    persons_per_image: tuple[int, int] = (1, 6)
    person_height: tuple[float, float] = (0.15, 0.95)
    overlap: str = "scatter"                          # scatter | crowd (a row, crowd_level) | pairs
    crowd_level: tuple[float, float] = (0.0, 1.0)     # crowd mode: 0 = spaced apart, 1 = shoulder to shoulder
    pair_iou: float = 0.5                             # pairs mode: wanted box IoU within a group
    group_size: tuple[int, int] = (2, 3)              # pairs mode: persons per overlapping group
    outside_rate: float = 0.1                         # a person hangs partly out of the frame
    occluder_rate: float = 0.2                        # an object in front hides parts of people
    crowd_region_rate: float = 0.0                    # a cluster of tiny figures annotated as one iscrowd region
    min_keypoint_area: float = 0.0                    # persons with less visible area get no keypoints (COCO: 32²)
    back_view_rate: float = 0.25                      # figures seen from behind
    noise: float = 6.0                                # sensor noise standard deviation, grey levels
    jpeg_quality: int = 90


# (kind, low, high) per field; ranges are [low, high] pairs with low <= high.
_FIELD_RULES: dict[str, tuple[str, float, float]] = {
    "image_size": ("int_range", 32, 4096),
    "persons_per_image": ("int_range", 0, 20),     # pycocotools scores at most 20 detections per image
    "person_height": ("float_range", 0.01, 2.0),
    "crowd_level": ("float_range", 0.0, 1.0),
    "pair_iou": ("float", 0.0, 0.95),
    "group_size": ("int_range", 1, 20),
    "outside_rate": ("float", 0.0, 1.0),
    "occluder_rate": ("float", 0.0, 1.0),
    "crowd_region_rate": ("float", 0.0, 1.0),
    "min_keypoint_area": ("float", 0.0, 1e8),
    "back_view_rate": ("float", 0.0, 1.0),
    "noise": ("float", 0.0, 100.0),
    "jpeg_quality": ("int", 1, 100),
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_settings(manifest: Manifest) -> GeneratorSettings:
    """Validate ``manifest.generator``; an unknown key or a bad value raises HarnessError naming file and field."""
    raw = manifest.generator
    src = manifest.source_path
    if not isinstance(raw, dict):
        raise HarnessError(f"{src}: field generator: must be a mapping, got {type(raw).__name__}")
    known = [f.name for f in dataclasses.fields(GeneratorSettings)]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{src}: field generator.{key}"
        if key not in known:
            raise HarnessError(f"{where}: unknown setting (known: {', '.join(known)})")
        if key == "overlap":
            if value not in OVERLAP_MODES:
                raise HarnessError(f"{where}: must be one of {', '.join(OVERLAP_MODES)}, got {value!r}")
            values[key] = value
            continue
        kind, low, high = _FIELD_RULES[key]
        check = _is_int if kind.startswith("int") else _is_number
        noun = "integer" if kind.startswith("int") else "number"
        if kind.endswith("range"):
            if not (isinstance(value, list) and len(value) == 2 and all(check(v) for v in value)):
                raise HarnessError(f"{where}: must be a pair [low, high] of {noun}s, got {value!r}")
            if not (low <= value[0] <= value[1] <= high):
                raise HarnessError(f"{where}: must satisfy {low} <= low <= high <= {high}, got {value!r}")
            values[key] = tuple(int(v) if kind == "int_range" else float(v) for v in value)
        else:
            if not check(value):
                raise HarnessError(f"{where}: must be a {noun}, got {value!r}")
            if not (low <= value <= high):
                raise HarnessError(f"{where}: must lie in [{low}, {high}], got {value!r}")
            values[key] = int(value) if kind == "int" else float(value)
    settings = GeneratorSettings(**values)
    if manifest.format not in FORMATS:
        raise HarnessError(f"{src}: field format: the generator writes {', '.join(FORMATS)}, not {manifest.format!r}")
    if manifest.format == "ochuman" and settings.crowd_region_rate > 0:
        raise HarnessError(f"{src}: field generator.crowd_region_rate: OCHuman files have no crowd regions; "
                           f"set it to 0")
    missing = [k for k in manifest.schema.keypoints if k not in render.JOINT_INDEX]
    if missing:
        raise HarnessError(f"{src}: field schema: the figures have no joint(s) {missing}")
    return settings


# --------------------------------------------------------------------------------- pure array functions

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(N, M)`` of boxes ``a`` (N, 4) and ``b`` (M, 4), both ``[x, y, w, h]`` in pixels."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def overlapping(boxes: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``(P,)`` bool: the box overlaps at least one OTHER box with IoU > ``threshold`` (OCHuman's MaxIoU)."""
    iou = box_iou(boxes, boxes)
    np.fill_diagonal(iou, 0.0)
    return (iou > threshold).any(axis=1) if len(iou) else np.zeros(0, dtype=bool)


def crowd_index(keypoints: np.ndarray, boxes: np.ndarray) -> float:
    """CrowdPose's crowd index of one image (Li et al., CVPR 2019, eq. 1), unrounded.

    ``keypoints`` (P, K, 3) with v > 0 = labelled; ``boxes`` (P, 4) ``[x, y, w, h]``. For each person i,
    N_a = its own labelled joints and N_b = labelled joints of OTHER persons inside person i's box (edges
    included); the index is the mean of N_b / N_a over persons with N_a > 0 (0 when there are none).
    Checked on the official ``crowdpose_val.json``: with all 14 joints, inclusive edges and persons without
    labelled joints left out, it reproduces the stored value for 1,506 of 2,000 images, more than any other
    reading tried (12 joints, strict edges, zero-joint persons counted as 0); the remainder were evidently
    computed from an earlier state of the annotations.
    """
    bx = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(bx) == 0:
        return 0.0
    kp = np.asarray(keypoints, dtype=np.float64).reshape(len(bx), -1, 3)
    labelled = kp[..., 2] > 0                                        # (P, K)
    x, y = kp[..., 0], kp[..., 1]
    # inside[i, j, k]: joint k of person j lies in person i's box.
    inside = ((x[None] >= bx[:, None, 0:1]) & (x[None] <= bx[:, None, 0:1] + bx[:, None, 2:3])
              & (y[None] >= bx[:, None, 1:2]) & (y[None] <= bx[:, None, 1:2] + bx[:, None, 3:4]))
    inside &= labelled[None]
    inside[np.arange(len(bx)), np.arange(len(bx))] = False           # a person's own joints are N_a
    n_a = labelled.sum(axis=1)
    n_b = inside.sum(axis=(1, 2))
    keep = n_a > 0
    return float(np.mean(n_b[keep] / n_a[keep])) if keep.any() else 0.0


def crowd_level_counts(indices: np.ndarray) -> dict[str, int]:
    """Easy / medium / hard image counts for crowd indices (CrowdPose thresholds 0.2 and 0.8)."""
    ci = np.asarray(indices, dtype=np.float64)
    lo, hi = CROWD_THRESHOLDS
    return {"easy": int((ci < lo).sum()), "medium": int(((ci >= lo) & (ci < hi)).sum()),
            "hard": int((ci >= hi).sum())}


def simplify_ring(ring: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker simplification of a closed ring ``(N, 2)`` (no repeated end point); keeps >= 2 points."""
    n = len(ring)
    if n <= 3:
        return ring
    far = int(np.argmax(np.hypot(*(ring - ring[0]).T)))
    pts = np.concatenate([ring, ring[:1]])
    keep = np.zeros(n + 1, dtype=bool)
    keep[[0, far, n]] = True
    stack = [(0, far), (far, n)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        a, b = pts[i], pts[j]
        seg = pts[i + 1:j]
        d = b - a
        norm = math.hypot(d[0], d[1])
        if norm < 1e-12:
            dist = np.hypot(*(seg - a).T)
        else:
            dist = np.abs(d[0] * (seg[:, 1] - a[1]) - d[1] * (seg[:, 0] - a[0])) / norm
        k = int(np.argmax(dist))
        if dist[k] > tolerance:
            keep[i + 1 + k] = True
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return ring[keep[:n]]


def mask_polygons(mask: np.ndarray, tolerance: float = POLYGON_TOLERANCE) -> list[list[float]]:
    """COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` tracing the outer boundaries of a binary mask (H, W).

    The 0.5 level of the mask, traced through pixel centres, runs along pixel edges (with corners cut), so
    pycocotools rasterises the polygons back to nearly the same pixels. Holes are dropped: COCO polygons are
    filled and unioned.
    """
    import contourpy

    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return []
    r0, c0 = rows[0], cols[0]
    crop = np.pad(mask[r0:rows[-1] + 1, c0:cols[-1] + 1].astype(np.float64), 1)
    gen = contourpy.contour_generator(z=crop, fill_type=contourpy.FillType.OuterOffset)
    points, offsets = gen.filled(0.5, 1.5)
    polygons = []
    for pts, off in zip(points, offsets):
        ring = pts[off[0]:off[1] - 1]            # outer ring, without its repeated closing point
        ring = simplify_ring(ring, tolerance)
        if len(ring) < 3:
            continue
        # Padded grid index -> pixel-centre coordinate: column c sits at c + 0.5 in COCO coordinates.
        ring = ring + np.array([c0 - 0.5, r0 - 0.5])
        polygons.append([float(v) for v in ring.reshape(-1)])
    return polygons


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (used for ``iscrowd`` 1): run lengths of the column-major mask, from a 0-run."""
    flat = np.asarray(mask, dtype=bool).reshape(-1, order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def compressed_rle(mask: np.ndarray) -> dict:
    """COCO's compressed RLE ``{'counts': str, 'size': [h, w]}`` (what OCHuman's COCO-format files hold)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": [int(v) for v in rle["size"]]}


# ----------------------------------------------------------------------------------------------- scenes

@dataclass
class _Scene:
    width: int
    height: int
    persons: list[render.Figure]                  # far to near
    crowds: list[list[render.Figure]]             # tiny figures of each crowd region
    occluders: list[tuple[np.ndarray, tuple[int, int, int]]]


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _figure(rng: np.random.Generator, s: GeneratorSettings, height: float) -> render.Figure:
    return render.build_figure(render.sample_pose(rng, s.back_view_rate), height, render.sample_appearance(rng))


def _place_inside(rng: np.random.Generator, fig: render.Figure, W: int, H: int, outside_rate: float) -> render.Figure:
    """Translate a figure so its box lies in the image; with ``outside_rate``, push it partly out of frame."""
    x0, y0, x1, y1 = fig.box()
    pos = []
    for lo, hi, size in ((x0, x1, W), (y0, y1, H)):
        extent = hi - lo
        pos.append(rng.uniform(-lo, size - hi) if extent < size else (size - extent) / 2 - lo)
    offset = np.array(pos)
    if rng.random() < outside_rate:
        axis = int(rng.integers(0, 2))
        side = rng.choice([-1.0, 1.0])
        extent = (x1 - x0, y1 - y0)[axis]
        # Move the box edge beyond the image border by 20-60 % of the box.
        target_lo = -rng.uniform(0.2, 0.6) * extent if side < 0 else (W, H)[axis] - rng.uniform(0.4, 0.8) * extent
        offset[axis] = target_lo - (x0, y0)[axis]
    return fig.translated(offset)


def _xywh(box_xyxy: np.ndarray, W: int, H: int) -> np.ndarray:
    """Clip an ``[x0, y0, x1, y1]`` box to the image and return ``[x, y, w, h]``."""
    x0, x1 = np.clip([box_xyxy[0], box_xyxy[2]], 0, W)
    y0, y1 = np.clip([box_xyxy[1], box_xyxy[3]], 0, H)
    return np.array([x0, y0, x1 - x0, y1 - y0])


def _scatter(rng, s: GeneratorSettings, W: int, H: int) -> list[render.Figure]:
    """Independent placements; bigger figures tend to be nearer, as under perspective."""
    n = int(rng.integers(s.persons_per_image[0], s.persons_per_image[1] + 1))
    figs, depth = [], []
    for _ in range(n):
        h = _log_uniform(rng, *s.person_height) * H
        figs.append(_place_inside(rng, _figure(rng, s, h), W, H, s.outside_rate))
        depth.append(h * rng.uniform(0.8, 1.25))
    return [figs[i] for i in np.argsort(depth, kind="stable")]


def _crowd(rng, s: GeneratorSettings, W: int, H: int) -> list[render.Figure]:
    """A row of similar-sized figures whose spacing shrinks with the crowd level (0 apart .. 1 packed)."""
    level = float(rng.uniform(*s.crowd_level))
    n = int(rng.integers(s.persons_per_image[0], s.persons_per_image[1] + 1))
    base = _log_uniform(rng, *s.person_height) * H
    figs = [_figure(rng, s, base * rng.uniform(0.85, 1.15)) for _ in range(n)]
    if not figs:
        return []
    widths = np.array([f.box()[2] - f.box()[0] for f in figs])
    gap = 1.1 - 0.8 * level                      # centre distance in units of the mean box width
    steps = gap * (widths[:-1] + widths[1:]) / 2
    centres = np.concatenate([[0.0], np.cumsum(steps)])
    # Drop figures from the end of the row until it spans at most 1.3 image widths (the ends may be cut).
    while len(figs) > 1 and centres[-1] + (widths[0] + widths[-1]) / 2 > 1.3 * W:
        figs, widths, centres = figs[:-1], widths[:-1], centres[:-1]
    span = centres[-1] + (widths[0] + widths[-1]) / 2
    left = rng.uniform(min(0.0, W - span), max(0.0, W - span)) + widths[0] / 2
    # People in a row stand on about the same ground line: one vertical position for the row, plus jitter.
    row_y = rng.uniform(0.0, 1.0)
    # outside_rate: the image's lower edge cuts the whole row (legs out of frame, as in many crowd photos).
    cut = rng.uniform(0.15, 0.45) * base if rng.random() < s.outside_rate else 0.0
    if cut:
        row_y = 1.0
    placed = []
    for fig, c in zip(figs, centres):
        x0, y0, x1, y1 = fig.box()
        cx = left + c - (x0 + x1) / 2
        extent = y1 - y0
        t = float(np.clip(row_y + rng.normal(0.0, 0.1), 0.0, 1.0))
        ty = -y0 + t * (H - extent) if extent < H else (H - extent) / 2 - y0
        placed.append(fig.translated(np.array([cx, ty + cut])))
    return [placed[i] for i in rng.permutation(len(placed))]


def _pairs(rng, s: GeneratorSettings, W: int, H: int) -> list[render.Figure]:
    """Groups of figures stacked on each other so that each member's box has IoU >= pair_iou with the first."""
    target = int(rng.integers(s.persons_per_image[0], s.persons_per_image[1] + 1))
    groups: list[list[render.Figure]] = []
    total = 0
    while total < target:
        size = min(int(rng.integers(s.group_size[0], s.group_size[1] + 1)), s.persons_per_image[1] - total)
        # No stray singleton after the first group: it would overlap nobody.
        if size <= 0 or (groups and size < s.group_size[0]):
            break
        h = _log_uniform(rng, *s.person_height) * H
        anchor = _place_inside(rng, _figure(rng, s, h), W, H, s.outside_rate)
        a_box = anchor.box()
        a_xywh = _xywh(a_box, W, H)
        group = [anchor]
        for _ in range(size - 1):
            fig = _figure(rng, s, h * rng.uniform(0.9, 1.1))
            f_box = fig.box()
            best, best_iou = None, -1.0
            for _try in range(24):
                # Centre the new box near the anchor's, shifted by a fraction of its size.
                dx = rng.uniform(-0.4, 0.4) * (a_box[2] - a_box[0])
                dy = rng.uniform(-0.15, 0.15) * (a_box[3] - a_box[1])
                off = (a_box[:2] + a_box[2:]) / 2 - (f_box[:2] + f_box[2:]) / 2 + np.array([dx, dy])
                iou = float(box_iou(a_xywh, _xywh(f_box + np.tile(off, 2), W, H))[0, 0])
                if iou > best_iou:
                    best, best_iou = off, iou
                if iou >= s.pair_iou:
                    break
            group.append(fig.translated(best))
        groups.append([group[i] for i in rng.permutation(len(group))])
        total += len(group)
    persons = [f for g in sorted(groups, key=lambda g: g[0].box()[3] - g[0].box()[1]) for f in g]
    return persons


def _crowd_region(rng, s: GeneratorSettings, W: int, H: int) -> list[render.Figure]:
    """A band of 8-24 tiny figures (10-28 px tall): COCO annotates such clusters as one iscrowd region."""
    rw, rh = rng.uniform(0.3, 0.7) * W, rng.uniform(0.1, 0.25) * H
    x0, y0 = rng.uniform(0, W - rw), rng.uniform(0, H - rh)
    figs = []
    for _ in range(int(rng.integers(8, 25))):
        fig = _figure(rng, s, rng.uniform(10.0, 28.0))
        figs.append(fig.translated(np.array([x0 + rng.uniform(0, rw), y0 + rng.uniform(0, rh)])))
    return figs


def _occluder(rng, persons: list[render.Figure], W: int, H: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A box or disc in front of the scene, centred on a random person's box when there is one."""
    if persons:
        x0, y0, x1, y1 = persons[int(rng.integers(0, len(persons)))].box()
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        size = rng.uniform(0.15, 0.45) * np.array([x1 - x0, y1 - y0]).max()
    else:
        cx, cy, size = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(0.1, 0.3) * min(W, H)
    w, h = size * rng.uniform(0.5, 1.5), size * rng.uniform(0.5, 1.5)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    if rng.random() < 0.5:
        poly = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2], [cx + w / 2, cy + h / 2],
                         [cx - w / 2, cy + h / 2]])
    else:
        poly = render.ellipse(np.array([cx, cy]), w / 2, h / 2, 0.0, 24)
    return poly, colour


def _scene(rng: np.random.Generator, s: GeneratorSettings) -> _Scene:
    W = int(rng.integers(s.image_size[0], s.image_size[1] + 1))
    H = int(rng.integers(s.image_size[0], s.image_size[1] + 1))
    if s.overlap == "crowd":
        persons = _crowd(rng, s, W, H)
    elif s.overlap == "pairs":
        persons = _pairs(rng, s, W, H)
    else:
        persons = _scatter(rng, s, W, H)
    crowds = [_crowd_region(rng, s, W, H)] if rng.random() < s.crowd_region_rate else []
    occluders = []
    if rng.random() < s.occluder_rate:
        occluders = [_occluder(rng, persons, W, H) for _ in range(int(rng.integers(1, 3)))]
    return _Scene(W, H, persons, crowds, occluders)


# ---------------------------------------------------------------------------------------- one image

@dataclass(frozen=True)
class _Config:
    """Everything a worker needs; sent once per worker process."""
    dataset: str
    format: str
    joint_index: tuple[int, ...]          # schema keypoint k is figure joint joint_index[k]
    counted: tuple[int, ...] | None       # keypoints that count towards num_keypoints
    settings: GeneratorSettings
    seed: int
    root: str
    splits: tuple[tuple[str, str, int], ...]   # (split name, image folder, split position)


def image_id(fmt: str, position: int, index: int) -> int:
    """The id of image ``index`` of the split at ``position`` (see the module docstring)."""
    base = 100_000 if fmt == "crowdpose" else 1
    return base + MAX_IMAGES_PER_SPLIT * position + index


def file_name(fmt: str, ident: int) -> str:
    """File names as the real sets: COCO ``%012d.jpg``, CrowdPose ``<id>.jpg``, OCHuman ``%06d.jpg``."""
    if fmt == "coco":
        return f"{ident:012d}.jpg"
    if fmt == "ochuman":
        return f"{ident:06d}.jpg"
    return f"{ident}.jpg"


def image_rng(seed: int, dataset: str, split: str, index: int) -> np.random.Generator:
    """The random stream of one image: a pure function of (seed, dataset, split, index)."""
    entropy = [int(seed), zlib.crc32(dataset.encode()), zlib.crc32(split.encode()), int(index)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def read_keypoints(fig: render.Figure, slot: int, owner: np.ndarray, part: np.ndarray, W: int,
                   H: int) -> np.ndarray:
    """(19, 3) float64 ``[x, y, v]`` of a figure's joints (pixels) read off the label map.

    ``owner`` (H, W) int: the slot of the person on top of each pixel (-1 background, -2 an occluder);
    ``part`` (H, W) int: the body part on top (:data:`render.PARTS`); ``slot`` is this figure's.

    v = 2 when the joint's pixel shows one of the joint's own parts, 1 when something else is on top (a
    nearer person, an object, the person's own other limb) or the face point is turned away, 0 (with
    x = y = 0) outside the image or on the far side of the head (annotators do not guess those).
    """
    xy = fig.joints
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < W) & (xy[:, 1] >= 0) & (xy[:, 1] < H)
    col = np.clip(np.floor(xy[:, 0]).astype(int), 0, W - 1)
    row = np.clip(np.floor(xy[:, 1]).astype(int), 0, H - 1)
    own = owner[row, col] == slot
    on_part = render.JOINT_PARTS[np.arange(len(xy)), np.clip(part[row, col], 0, len(render.PARTS) - 1)]
    v = np.where(own & on_part, 2, 1)
    # Ears stick out, so a face point a little behind the head's silhouette still shows.
    v = np.where(fig.face_depth < -0.15, np.minimum(v, 1), v)
    v = np.where((fig.face_depth < -0.5) | ~inside, 0, v)
    out = np.concatenate([xy, v[:, None].astype(np.float64)], axis=1)
    out[v == 0, :2] = 0.0
    return out


def _render_image(cfg: _Config, split: str, folder: str, position: int, index: int) -> dict:
    """Render, write and annotate one image. Returns its image record, annotation records (without ids)
    and per-image statistics."""
    s = cfg.settings
    rng = image_rng(cfg.seed, cfg.dataset, split, index)
    scene = _scene(rng, s)
    W, H = scene.width, scene.height
    img = render.background(rng, W, H)
    label_img = Image.new("I", (W, H), 0)
    draw_rgb, draw_label = ImageDraw.Draw(img), ImageDraw.Draw(label_img)
    slot = 0
    crowd_slots = []
    for figs in scene.crowds:
        for fig in figs:
            render.paint_figure(draw_rgb, draw_label, fig, slot)
        crowd_slots.append(slot)
        slot += 1
    person_slots = []
    for fig in scene.persons:
        render.paint_figure(draw_rgb, draw_label, fig, slot)
        person_slots.append(slot)
        slot += 1
    for poly, colour in scene.occluders:
        render.draw_polygon(draw_rgb, draw_label, poly, colour, render.OCCLUDER_LABEL,
                            tuple(int(c * 0.7) for c in colour))
    img = render.finish(img, rng, s.noise)

    label = np.asarray(label_img).astype(np.int64)
    owner = np.where(label == render.OCCLUDER_LABEL, -2, label // render.PART_STRIDE - 1)
    part = label % render.PART_STRIDE

    ident = image_id(cfg.format, position, index)
    name = file_name(cfg.format, ident)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=s.jpeg_quality)
    data = buf.getvalue()
    write_bytes_atomic(Path(cfg.root) / folder / name, data)
    written = {"path": f"{folder}/{name}", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    anns: list[dict] = []
    kps, boxes = [], []          # of iscrowd-0 persons, for crowdIndex and overlap statistics
    for sl in crowd_slots:
        ann = _crowd_annotation(cfg, owner == sl, ident, W, H)
        if ann is not None:
            anns.append(ann)
    for fig, sl in zip(scene.persons, person_slots):
        visible = owner == sl
        n_visible = int(visible.sum())
        if n_visible < MIN_VISIBLE_PIXELS:
            continue
        kp = read_keypoints(fig, sl, owner, part, W, H)[list(cfg.joint_index)]
        ann = _person_annotation(cfg, fig, visible, kp, ident, W, H)
        if ann is None:
            continue
        anns.append(ann)
        kps.append(np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3))
        boxes.append(ann["bbox"])

    image = {"id": ident, "file_name": name, "width": W, "height": H}
    if cfg.format == "crowdpose":
        k = len(cfg.joint_index)
        ci = crowd_index(np.asarray(kps).reshape(-1, k, 3), np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        image = {"file_name": name, "id": ident, "height": H, "width": W, "crowdIndex": round(ci, 2)}
    elif cfg.format == "ochuman":
        image = {"file_name": name, "width": W, "height": H, "id": ident}
    persons = [a for a in anns if not a["iscrowd"]]
    labels = np.concatenate([np.asarray(a["keypoints"]).reshape(-1, 3)[:, 2] for a in persons]) if persons \
        else np.zeros(0)
    stats = {
        "images": 1,
        "persons": len(persons),
        "persons_with_keypoints": sum(a["num_keypoints"] > 0 for a in persons),
        "zero_keypoint_persons": sum(a["num_keypoints"] == 0 for a in persons),
        "crowd_regions": len(anns) - len(persons),
        "keypoints_labelled": int((labels > 0).sum()),
        "keypoints_visible": int((labels == 2).sum()),
        "overlapping_persons": int(overlapping(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)).sum()),
    }
    return {"image": image, "annotations": anns, "stats": stats, "file": written}


def _keypoint_list(cfg: _Config, kp: np.ndarray, W: int, H: int) -> list:
    """Flat ``[x, y, v] * K``: integers for COCO and CrowdPose, floats (2 decimals) for OCHuman."""
    out: list = []
    for x, y, v in kp.tolist():
        if v == 0:
            out += [0.0, 0.0, 0] if cfg.format == "ochuman" else [0, 0, 0]
        elif cfg.format == "ochuman":
            out += [round(x, 2), round(y, 2), int(v)]
        else:
            # Nearest pixel, kept inside the image.
            out += [min(int(math.floor(x + 0.5)), W - 1), min(int(math.floor(y + 0.5)), H - 1), int(v)]
    return out


def _num_keypoints(cfg: _Config, kp: np.ndarray) -> int:
    v = kp[:, 2] > 0
    if cfg.counted is not None:
        v = v[list(cfg.counted)]
    return int(v.sum())


def _person_annotation(cfg: _Config, fig: render.Figure, visible: np.ndarray, kp: np.ndarray, ident: int,
                       W: int, H: int) -> dict | None:
    """One person's record in the manifest's dialect; ``None`` when too little of it shows to annotate.

    A person whose segment area (COCO) or visible pixel count (the others) is under ``min_keypoint_area``
    gets no keypoints, as COCO leaves small persons unlabelled.
    """
    polygons: list = []
    area = float(visible.sum())
    if cfg.format == "coco":
        # COCO: polygons of the visible mask; area and box are those of the polygons.
        polygons = mask_polygons(visible)
        if not polygons:
            return None
        area = float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(polygons, H, W))))
        if area <= 0:
            return None
    if area < cfg.settings.min_keypoint_area:
        kp = np.zeros_like(kp)
    keypoints = _keypoint_list(cfg, kp, W, H)
    num = _num_keypoints(cfg, kp)
    if cfg.format == "coco":
        xs = np.concatenate([np.asarray(p[0::2]) for p in polygons])
        ys = np.concatenate([np.asarray(p[1::2]) for p in polygons])
        bbox = [round(float(xs.min()), 2), round(float(ys.min()), 2),
                round(float(xs.max() - xs.min()), 2), round(float(ys.max() - ys.min()), 2)]
        return {"segmentation": polygons, "num_keypoints": num, "area": area, "iscrowd": 0,
                "keypoints": keypoints, "image_id": ident, "bbox": bbox, "category_id": 1}
    if cfg.format == "crowdpose":
        # CrowdPose: a full-body box as annotators draw it (the whole figure, clipped to the image).
        bbox = [round(float(v), 2) for v in _xywh(fig.box(), W, H)]
        if bbox[2] <= 0 or bbox[3] <= 0:
            return None
        return {"num_keypoints": num, "iscrowd": 0, "keypoints": keypoints, "image_id": ident,
                "bbox": bbox, "category_id": 1}
    # OCHuman: an integer box a few pixels around the whole figure, area = its w*h, visible mask as RLE.
    x0, y0, x1, y1 = fig.box()
    margin = 0.02 * max(x1 - x0, y1 - y0)
    bx0, by0 = max(0, int(math.floor(x0 - margin))), max(0, int(math.floor(y0 - margin)))
    bx1, by1 = min(W, int(math.ceil(x1 + margin))), min(H, int(math.ceil(y1 + margin)))
    if bx1 <= bx0 or by1 <= by0:
        return None
    bbox = [bx0, by0, bx1 - bx0, by1 - by0]
    return {"area": bbox[2] * bbox[3], "image_id": ident, "iscrowd": 0, "category_id": 1, "bbox": bbox,
            "segmentation": compressed_rle(visible), "num_keypoints": num, "keypoints": keypoints}


def _crowd_annotation(cfg: _Config, mask: np.ndarray, ident: int, W: int, H: int) -> dict | None:
    """An iscrowd-1 region: no keypoints; COCO gives its mask as uncompressed RLE, CrowdPose only a box."""
    area = int(mask.sum())
    if area < 50:
        return None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    bbox = [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])]
    zeros = [0] * (3 * len(cfg.joint_index))
    if cfg.format == "crowdpose":
        return {"num_keypoints": 0, "iscrowd": 1, "keypoints": zeros, "image_id": ident, "bbox": bbox,
                "category_id": 1}
    return {"segmentation": uncompressed_rle(mask), "num_keypoints": 0, "area": float(area), "iscrowd": 1,
            "keypoints": zeros, "image_id": ident, "bbox": bbox, "category_id": 1}


# -------------------------------------------------------------------------------------- worker pool

_WORKER_CONFIG: _Config | None = None


def _init_worker(cfg: _Config) -> None:
    global _WORKER_CONFIG
    _WORKER_CONFIG = cfg


def _work(task: tuple[str, str, int, int]) -> dict:
    split, folder, position, index = task
    return _render_image(_WORKER_CONFIG, split, folder, position, index)


# ------------------------------------------------------------------------------------------ datasets

def _stamp_settings(manifest: Manifest, settings: GeneratorSettings, size: str, seed: int,
                    counts: dict[str, int]) -> dict:
    """What decides the generated bytes; a stamp with other settings means the folder must be regenerated."""
    raw = {
        "generator_version": GENERATOR_VERSION,
        "dataset": manifest.name,
        "format": manifest.format,
        "schema": manifest.schema.name,
        "size": size,
        "seed": seed,
        "counts": counts,
        "splits": {k: {"annotations": v.annotations, "images": v.images} for k, v in manifest.splits.items()},
        "generator": dataclasses.asdict(settings),
    }
    return json.loads(json.dumps(raw))   # tuples -> lists, as they come back from the stamp file


def _file_record(path: Path) -> dict:
    """Size and SHA-256 of a file as the stamp records it."""
    return {"size": path.stat().st_size, "sha256": file_digest(path)}


def _verify_files(root: Path, files: dict) -> tuple[list[str], dict]:
    """Check every file the stamp recorded: present, same size, same SHA-256.

    Returns (problems, totals): one line per broken file (empty when all is well) and
    ``{'files', 'bytes', 'seconds'}`` of what was checked.
    """
    start = time.perf_counter()
    problems: list[str] = []
    checked = nbytes = 0
    for rel, rec in files.items():
        path = root / rel
        try:
            size = path.stat().st_size
        except OSError:
            problems.append(f"{rel}: missing")
            continue
        if not isinstance(rec, dict) or size != rec.get("size"):
            problems.append(f"{rel}: {size} bytes, the generator wrote "
                            f"{rec.get('size') if isinstance(rec, dict) else '?'} (truncated or replaced)")
            continue
        try:
            digest = file_digest(path)
        except OSError as exc:
            problems.append(f"{rel}: unreadable ({exc.strerror})")
            continue
        if digest != rec.get("sha256"):
            problems.append(f"{rel}: SHA-256 {digest[:16]}..., the generator wrote {str(rec.get('sha256'))[:16]}... "
                            f"(altered)")
            continue
        checked += 1
        nbytes += size
    return problems, {"files": checked, "bytes": nbytes, "seconds": round(time.perf_counter() - start, 3)}


def _prepared(root: Path, manifest: Manifest, wanted: dict) -> tuple[dict | None, list[str], dict | None]:
    """Whether the folder holds a complete, intact generation with exactly these settings.

    Returns (the stamp's statistics or None, why it must be regenerated, what the verification checked).
    A missing stamp is "not prepared" with no reason (nothing was there); an unreadable one, other settings,
    a stamp that records no files, stray or missing images and any file that differs from its record are
    reasons, one line each.
    """
    stamp_path = root / STAMP
    if not stamp_path.exists():
        return None, [], None
    try:
        stamp = json.loads(stamp_path.read_text())
        if not isinstance(stamp, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return None, [f"{STAMP}: unreadable ({type(exc).__name__}: {exc}), so the set counts as not prepared"], None
    if stamp.get("settings") != wanted:
        return None, [f"{STAMP}: made with other settings (generator, size, seed or version changed)"], None
    files = stamp.get("files")
    if not isinstance(files, dict) or not files or not isinstance(stamp.get("splits"), dict):
        return None, [f"{STAMP}: records no file sizes and digests (an older or damaged stamp)"], None
    expected = {manifest.splits[s].annotations for s in manifest.splits}
    missing_records = sorted(a for a in expected if a not in files)
    if missing_records or len(files) != len(expected) + sum(wanted["counts"].values()):
        return None, [f"{STAMP}: records {len(files)} files, the settings make "
                      f"{len(expected) + sum(wanted['counts'].values())}"], None
    problems: list[str] = []
    for split, spec in manifest.splits.items():
        folder = root / spec.images
        n = sum(1 for _ in folder.glob("*.jpg")) if folder.is_dir() else 0
        if n > wanted["counts"][split]:
            problems.append(f"{spec.images}: {n} images, the generator wrote {wanted['counts'][split]} "
                            f"(stray files)")
    broken, totals = _verify_files(root, files)
    problems += broken
    if problems:
        return None, problems, totals
    return stamp["splits"], [], totals


def generate(manifest: Manifest, size: str | None = None, seed: int | None = None, jobs: int | None = None,
             progress: bool = True) -> dict:
    """Generate a synthetic dataset into ``manifest.root(size, seed)``; return a summary (see :func:`format_summary`).

    ``jobs`` worker processes render the images (default: all CPUs); the output does not depend on it.
    Returns ``{'dataset', 'status': 'generated' | 'already prepared', 'root', 'size', 'seed', 'seconds',
    ['verified': {'files', 'bytes', 'seconds'}] (already prepared: what was checked),
    ['repairs': [one line per broken file or stamp]] (generated because the earlier generation was damaged),
    'splits': {split: {'images', 'persons', 'persons_with_keypoints', 'zero_keypoint_persons',
    'crowd_regions', 'keypoints_labelled', 'keypoints_visible', 'overlap_fraction', ['easy_images',
    'medium_images', 'hard_images'] (CrowdPose)}}}``.
    """
    start = time.perf_counter()
    if not manifest.synthetic:
        raise HarnessError(f"{manifest.source_path}: dataset {manifest.name!r} is not synthetic (kind: "
                           f"{manifest.kind}); it is downloaded, not generated")
    settings = parse_settings(manifest)
    size = manifest.resolve_size(size)
    seed = manifest.seed if seed is None else seed
    if not _is_int(seed) or seed < 0:
        raise HarnessError(f"{manifest.source_path}: seed must be a non-negative integer, got {seed!r}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if not _is_int(jobs) or jobs < 1:
        raise HarnessError(f"jobs must be a positive integer, got {jobs!r}")
    counts = {split: int(manifest.sizes[size].get(split, 0)) for split in manifest.splits}
    for split, n in counts.items():
        if n > MAX_IMAGES_PER_SPLIT:
            raise HarnessError(f"{manifest.source_path}: field sizes.{size}.{split}: at most "
                               f"{MAX_IMAGES_PER_SPLIT} images per split, got {n}")
    if manifest.format == "crowdpose" and image_id("crowdpose", len(counts) - 1, MAX_IMAGES_PER_SPLIT) > 999_999:
        raise HarnessError(f"{manifest.source_path}: field splits: CrowdPose ids are 6 digits; at most 9 splits")

    root = manifest.root(size, seed)
    for spec in manifest.splits.values():
        # The image folders are emptied before a regeneration: they must be the dataset's own.
        if root.resolve() not in (root / spec.images).resolve().parents:
            raise HarnessError(f"{manifest.source_path}: field splits: image folder {spec.images!r} must lie "
                               f"inside the dataset folder")
    wanted = _stamp_settings(manifest, settings, size, seed, counts)
    summary = {"dataset": manifest.name, "status": "already prepared", "root": str(root), "size": size,
               "seed": seed, "seconds": 0.0, "splits": {}}
    previous, problems, verified = _prepared(root, manifest, wanted)
    if previous is not None:
        summary.update(splits=previous, verified=verified, seconds=round(time.perf_counter() - start, 3))
        return summary
    if problems:
        summary["repairs"] = problems

    # Regenerate from scratch: no stamp while files change, no stale images from an older generation.
    (root / STAMP).unlink(missing_ok=True)
    for spec in manifest.splits.values():
        folder = root / spec.images
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)

    schema = manifest.schema
    cfg = _Config(
        dataset=manifest.name, format=manifest.format,
        joint_index=tuple(render.JOINT_INDEX[k] for k in schema.keypoints), counted=schema.counted,
        settings=settings, seed=seed, root=str(root),
        splits=tuple((name, spec.images, pos) for pos, (name, spec) in enumerate(manifest.splits.items())),
    )
    results = _render_all(cfg, counts, jobs, progress)
    files: dict[str, dict] = {}
    for split, _folder, position in cfg.splits:
        doc, stats = _assemble(manifest, results[split], position)
        annotations = manifest.splits[split].annotations
        write_json_atomic(root / annotations, doc)
        files[annotations] = _file_record(root / annotations)
        summary["splits"][split] = stats
    for split, _folder, _position in cfg.splits:
        for res in results[split]:
            files[res["file"]["path"]] = {"size": res["file"]["size"], "sha256": res["file"]["sha256"]}
    write_json_atomic(root / STAMP, {"settings": wanted, "splits": summary["splits"], "files": files}, indent=1)
    summary.update(status="generated", seconds=round(time.perf_counter() - start, 3))
    return summary


def _render_all(cfg: _Config, counts: dict[str, int], jobs: int, progress: bool) -> dict[str, list[dict]]:
    """Render every image of every split with ``jobs`` processes; results in image order per split."""
    total = sum(counts.values())
    workers = max(1, min(jobs, total))
    pool = None
    if workers > 1:
        # fork shares the imported modules at no cost; spawn where fork does not exist.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = multiprocessing.get_context(method).Pool(workers, initializer=_init_worker, initargs=(cfg,))
    else:
        _init_worker(cfg)
    results: dict[str, list[dict]] = {}
    finished = False
    try:
        for split, folder, position in cfg.splits:
            n = counts[split]
            tasks = [(split, folder, position, i) for i in range(n)]
            if pool is not None:
                it = pool.imap(_work, tasks, chunksize=max(1, min(16, n // (4 * workers))))
            else:
                it = map(_work, tasks)
            with tqdm(total=n, desc=f"{cfg.dataset} {split}", unit="img", disable=not progress) as bar:
                out = []
                for res in it:
                    out.append(res)
                    bar.update(1)
            results[split] = out
        finished = True
    finally:
        if pool is not None:
            if finished:
                pool.close()
            else:
                # On an error or Ctrl-C, stop the workers now instead of letting them render the rest.
                pool.terminate()
            pool.join()
    return results


def _assemble(manifest: Manifest, results: list[dict], position: int) -> tuple[dict, dict]:
    """The annotation document of one split (ids assigned in image order) and its statistics."""
    images, annotations = [], []
    next_id = 10_000_000 * position + 1
    totals: dict[str, int] = {}
    for res in results:
        images.append(res["image"])
        for ann in res["annotations"]:
            annotations.append({**ann, "id": next_id})
            next_id += 1
        for k, v in res["stats"].items():
            totals[k] = totals.get(k, 0) + int(v)
    category = coco_category(manifest.schema)
    if manifest.format == "coco":
        doc = {
            "info": {"description": f"poseharness synthetic stand-in for COCO ({manifest.name})",
                     "version": str(GENERATOR_VERSION), "year": 2026, "contributor": "poseharness",
                     "date_created": ""},
            "licenses": [],
            "images": images, "annotations": annotations, "categories": [category],
        }
    else:
        doc = {"categories": [category], "images": images, "annotations": annotations}
    overlapping_persons = totals.pop("overlapping_persons", 0)
    stats = {k: totals.get(k, 0) for k in ("images", "persons", "persons_with_keypoints", "zero_keypoint_persons",
                                            "crowd_regions", "keypoints_labelled", "keypoints_visible")}
    stats["overlap_fraction"] = round(overlapping_persons / stats["persons"], 4) if stats["persons"] else 0.0
    if manifest.format == "crowdpose":
        levels = crowd_level_counts(np.array([im["crowdIndex"] for im in images]))
        stats.update({f"{k}_images": v for k, v in levels.items()})
    return doc, stats


def format_summary(summary: dict) -> str:
    """A few human-readable lines for the CLI."""
    status, detail = summary["status"], ""
    verified = summary.get("verified")
    if status == "already prepared" and verified:
        status = "already prepared (verified)"
        detail = (f"; checked {verified['files']:,} files ({verified['bytes'] / 2**20:.1f} MiB): size and SHA-256 "
                  f"as written")
    repairs = summary.get("repairs") or []
    if repairs:
        status = f"regenerated ({len(repairs)} problem(s) with the earlier generation)"
    head = (f"{summary['dataset']} (size {summary['size']}, seed {summary['seed']}): {status} "
            f"in {summary['seconds']:.1f} s{detail}\n  {summary['root']}")
    lines = [head]
    if repairs:
        shown = repairs[:20]
        lines += [f"  problem: {r}" for r in shown]
        if len(repairs) > len(shown):
            lines.append(f"  ... and {len(repairs) - len(shown)} more")
        lines.append(f"  -> regenerated the whole set from seed {summary['seed']} (deterministic: same bytes)")
    for split, st in summary["splits"].items():
        line = (f"  {split}: {st['images']:,} images, {st['persons']:,} persons "
                f"({st['persons_with_keypoints']:,} with keypoints, {st['zero_keypoint_persons']:,} with none), "
                f"{st['crowd_regions']:,} crowd regions, {st['keypoints_labelled']:,} keypoints labelled "
                f"({st['keypoints_visible']:,} visible), {100 * st['overlap_fraction']:.0f}% of persons "
                f"overlap another (box IoU > 0.5)")
        if "easy_images" in st:
            line += (f", crowd index easy/medium/hard: {st['easy_images']:,}/{st['medium_images']:,}/"
                     f"{st['hard_images']:,} images")
        lines.append(line)
    return "\n".join(lines)
