"""``poseharness data show``: a contact sheet of a few images with every person's skeleton, to eyeball a dataset.

Each tile is the image through the bottom-up view (long side = tile size, padded), i.e. exactly the geometry
code the trainers use, so a misplaced skeleton here is a bug there too. Left limbs, right limbs and centre limbs
have their own colours; labelled-but-invisible keypoints (v = 1) are hollow, visible ones (v = 2) filled; regions
the loss ignores (crowds, persons without keypoints) are tinted; every person's box is outlined thinly.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import HarnessError
from ..io import write_bytes_atomic
from ..schemas import KeypointSchema
from .augment import bottom_up_affine, transform_sample
from .loader import load_samples
from .manifest import Manifest
from .sample import Sample

TILE = 384
COLUMNS = 3
SIDE_COLOURS = {"left": (30, 144, 255), "right": (255, 69, 0), "centre": (50, 205, 50)}
IGNORE_TINT = np.array([255, 0, 255], dtype=np.float32)
BOX_COLOUR = (200, 200, 200)
BACKGROUND = (32, 32, 32)


def keypoint_sides(schema: KeypointSchema) -> list[str]:
    """'left' / 'right' / 'centre' for each keypoint, from its name."""
    return ["left" if n.startswith("left_") else "right" if n.startswith("right_") else "centre"
            for n in schema.keypoints]


def limb_side(schema: KeypointSchema, a: int, b: int) -> str:
    sides = keypoint_sides(schema)
    return sides[a] if sides[a] == sides[b] else "centre"


def draw_tile(sample: Sample, schema: KeypointSchema, tile: int = TILE) -> Image.Image:
    """One annotated tile (tile × tile RGB) of a sample that has its image and ignore mask."""
    s = transform_sample(sample, bottom_up_affine(sample.width, sample.height, tile), tile)
    rgb = s.image.astype(np.float32)
    if s.ignore_mask is not None and s.ignore_mask.any():
        rgb[s.ignore_mask] = 0.55 * rgb[s.ignore_mask] + 0.45 * IGNORE_TINT
    # The view pads right / bottom with black; paint the padding as the sheet background so tiles read clearly.
    extent = np.ceil(np.array([sample.width, sample.height]) * tile / max(sample.width, sample.height)).astype(int)
    rgb[extent[1]:, :] = BACKGROUND
    rgb[:, extent[0]:] = BACKGROUND
    im = Image.fromarray(rgb.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    width = max(2, tile // 160)
    radius = max(3, tile // 110)
    sides = keypoint_sides(schema)
    for box in s.boxes:
        x, y, w, h = box.tolist()
        draw.rectangle([x, y, x + w, y + h], outline=BOX_COLOUR, width=1)
    for kp in s.keypoints:
        for a, b in schema.skeleton():
            if kp[a, 2] > 0 and kp[b, 2] > 0:
                draw.line([tuple(kp[a, :2]), tuple(kp[b, :2])], fill=SIDE_COLOURS[limb_side(schema, a, b)],
                          width=width)
        for k, (x, y, v) in enumerate(kp.tolist()):
            if v <= 0:
                continue
            colour = SIDE_COLOURS[sides[k]]
            bounds = [x - radius, y - radius, x + radius, y + radius]
            if v >= 2:
                draw.ellipse(bounds, fill=colour, outline=(0, 0, 0))
            else:
                draw.ellipse(bounds, fill=None, outline=colour, width=max(1, width - 1))
    caption = f"image {sample.image_id}  {sample.num_persons} persons"
    box = draw.textbbox((4, 4), caption)
    draw.rectangle([box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2], fill=(0, 0, 0))
    draw.text((4, 4), caption, fill=(255, 255, 255))
    return im


def show(manifest: Manifest, split: str, out: str | Path, size: str | None = None, seed: int | None = None,
         count: int = 6) -> Path:
    """Draw the split's first ``count`` images that have persons (others if too few) into one PNG at ``out``.

    The PNG is written atomically. Returns ``out`` as a Path.
    """
    if count < 1:
        raise HarnessError(f"data show: count must be at least 1, got {count}")
    samples = load_samples(manifest, split, size, seed, images=True, masks=True)
    if len(samples) == 0:
        raise HarnessError(f"{manifest.annotation_path(split, size, seed)}: split {split!r} has no images")
    with_persons = [i for i in range(len(samples)) if samples.record(i).num_persons > 0]
    without = [i for i in range(len(samples)) if samples.record(i).num_persons == 0]
    chosen = (with_persons + without)[:count]
    tiles = [draw_tile(samples[i], manifest.schema) for i in chosen]
    cols = min(COLUMNS, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    gap = 4
    sheet = Image.new("RGB", (cols * TILE + (cols + 1) * gap, rows * TILE + (rows + 1) * gap), BACKGROUND)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, cols)
        sheet.paste(tile, (gap + c * (TILE + gap), gap + r * (TILE + gap)))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    out = Path(out)
    write_bytes_atomic(out, buf.getvalue())
    return out
