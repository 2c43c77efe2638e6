"""Views: how a paradigm sees an image through the network input, and the way back to the original image.

A :class:`View` is one network input made from one image: the whole image (bottom-up and single-stage methods,
:func:`bottom_up_views`) or one crop per person box (top-down methods, :func:`top_down_views`). Test-time
augmentation in the pooled form (:class:`TestTimeViews`, PoseDet's: every scale and mirror of the image decoded on
its own, the candidates of all of them pooled before the image's one pose NMS) is more views of the same image:
rescaled inputs and mirrored ones (``View.flipped``). Boxes come from
the ground truth (:func:`ground_truth_boxes`: annotated persons, box score 1), from the ground truth jittered as a
stand-in detector (:func:`jittered_boxes`, seeded per image), both chosen by a variant's ``decode.boxes``
(:class:`BoxSource`), or from a COCO detection-results file (:func:`load_detections`). Whatever a method predicts in a view's input pixels goes back to the original
image with :func:`to_original`.

Coordinates follow :mod:`poseharness.data.augment`: pixel centres at integers, sizes ``(width, height)``.
Inputs may be rectangular (e.g. 192 × 256 for a top-down crop); a bottom-up input keeps the image's aspect and
pads at the right / bottom.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data.augment import (Size, affine_points, as_size, bottom_up_affine, compose, invert_affine,
                           top_down_affine)
from .errors import HarnessError
from .io import file_digest

KINDS = ("bottom-up", "top-down")


@dataclass(frozen=True)
class View:
    """One network input made from one image.

    image_id: the image's id
    affine:   (2, 3) float64, original image pixels -> input pixels
    size:     (W, H) of the input in pixels
    kind:     'bottom-up' (whole image) or 'top-down' (a person crop)
    box:      top-down: (4,) float64 x, y, w, h of the person box in original pixels; None for bottom-up
    score:    the box score (1.0 for ground-truth boxes and for whole images)
    person:   top-down with ground-truth or jittered ground-truth boxes: the index of the box's person in the
              image; else None
    flipped:  the input is mirrored (``affine`` includes the mirror): what the network calls joint j is the
              image's joint ``flip_index[j]`` (:meth:`Decoder.view <poseharness.pipeline.Decoder.view>` swaps back)
    """

    image_id: int
    affine: np.ndarray
    size: tuple[int, int]
    kind: str = "bottom-up"
    box: np.ndarray | None = None
    score: float = 1.0
    person: int | None = None
    flipped: bool = False

    def window_area(self) -> float:
        """px²: the area of the input's extent in the original image (top-down: the expanded crop window)."""
        return float(self.size[0] * self.size[1] / abs(np.linalg.det(self.affine[:, :2])))


def parse_input_size(value: Any) -> Size | None:
    """A scale's ``input``: an int (a square side), ``[W, H]`` or ``{width: W, height: H}``, all positive.

    Returns the int, or a ``(W, H)`` tuple; None when ``value`` is none of these (the caller names the field).
    """
    def ok(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if ok(value):
        return value
    if isinstance(value, dict) and set(value) == {"width", "height"}:
        value = [value["width"], value["height"]]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(ok(v) for v in value):
        return int(value[0]), int(value[1])
    return None


def bottom_up_views(sample: Any, input_size: Size) -> list[View]:
    """One view of the whole image: long side to the input, aspect kept, padded (:func:`bottom_up_affine`).

    sample: anything with ``image_id``, ``width``, ``height`` (a :class:`Sample` or an annotation record).
    """
    size = as_size(input_size)
    return [View(int(sample.image_id), bottom_up_affine(sample.width, sample.height, size), size)]


def top_down_views(sample: Any, input_size: Size, boxes: np.ndarray, scores: np.ndarray,
                   persons: np.ndarray | None = None) -> list[View]:
    """One crop per box: the box centre at the input's centre, the aspect fixed to the input's and both sides
    × 1.25 (:func:`top_down_affine`).

    boxes: (N, 4) x, y, w, h in original pixels; scores: (N,) box scores; persons: (N,) the ground-truth
    person of each box (ground-truth boxes only).
    """
    size = as_size(input_size)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    return [View(int(sample.image_id), top_down_affine(b, size), size, "top-down", b.copy(), float(s),
                 None if persons is None else int(persons[i]))
            for i, (b, s) in enumerate(zip(boxes, scores))]


def ground_truth_boxes(sample: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boxes of the image's annotated persons (not crowd, ``num_keypoints`` > 0, as the loader's top-down
    items): boxes (N, 4) x, y, w, h px, scores (N,) all 1.0, persons (N,) their indices in the image."""
    persons = np.flatnonzero(~np.asarray(sample.iscrowd) & (np.asarray(sample.num_keypoints) > 0))
    boxes = np.asarray(sample.boxes, dtype=np.float64).reshape(-1, 4)[persons]
    return boxes, np.ones(len(persons)), persons


def jittered_boxes(sample: Any, centre: float, size: float, miss_rate: float, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ground-truth boxes of :func:`ground_truth_boxes` moved, resized and thinned: a stand-in detector.

    Per annotated person with box (x, y, w, h), five uniform draws u0..u4 in [0, 1) (always all five, so the
    jitter of a kept box does not depend on ``miss_rate``): the box is missed when u0 < ``miss_rate``; otherwise
    its centre moves by (centre·w·(2·u1 − 1), centre·h·(2·u2 − 1)) and its sides become w·(1 + size·(2·u3 − 1)),
    h·(1 + size·(2·u4 − 1)). Its score is its IoU with the person's own box, in (0, 1]: a detector that is surer of
    better boxes, and exactly the ground truth (score 1) at zero jitter.
    The generator is seeded with (``seed``, image id), so a box depends only on its image and the seed, not on
    the order in which images or variants are visited.

    centre, size: fractions of the box's width / height, in [0, 1); miss_rate: probability in [0, 1].
    Returns boxes (N, 4) x, y, w, h px, scores (N,), persons (N,) (each kept box's person).
    """
    boxes, _, persons = ground_truth_boxes(sample)
    rng = np.random.default_rng([int(seed), int(sample.image_id) % (1 << 64)])
    u = rng.random((len(persons), 5))
    keep = u[:, 0] >= miss_rate
    w, h = boxes[:, 2], boxes[:, 3]
    cx = boxes[:, 0] + 0.5 * w + centre * w * (2 * u[:, 1] - 1)
    cy = boxes[:, 1] + 0.5 * h + centre * h * (2 * u[:, 2] - 1)
    nw, nh = w * (1 + size * (2 * u[:, 3] - 1)), h * (1 + size * (2 * u[:, 4] - 1))
    moved = np.stack([cx - 0.5 * nw, cy - 0.5 * nh, nw, nh], axis=1)
    x0, y0 = np.maximum(moved[:, 0], boxes[:, 0]), np.maximum(moved[:, 1], boxes[:, 1])
    x1 = np.minimum(moved[:, 0] + nw, boxes[:, 0] + w)
    y1 = np.minimum(moved[:, 1] + nh, boxes[:, 1] + h)
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = nw * nh + w * h - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 1.0)
    return moved[keep], iou[keep], persons[keep]


#: The box sources a variant's ``decode.boxes.source`` names.
BOX_SOURCES = ("gt", "jittered", "file")


@dataclass(frozen=True)
class BoxSource:
    """Where a top-down variant's boxes come from, read from its ``decode.boxes`` (:meth:`from_decode`):
    ``{source: gt}`` (the default: :func:`ground_truth_boxes`), ``{source: jittered, centre, size, miss_rate,
    seed}`` (:func:`jittered_boxes`) or ``{source: file, path}``: a COCO detection-results file
    (:func:`load_detections`), ``path`` absolute or relative to the data folder (``POSEHARNESS_DATA``), e.g.
    ``coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json``. A variant with a file is a
    column of its own in the results store and an input of its DAG job. ``--detections FILE`` on ``oracle`` /
    ``predict`` gives a ground-truth-box variant a file for one run."""

    source: str = "gt"
    centre: float = 0.0
    size: float = 0.0
    miss_rate: float = 0.0
    seed: int = 0
    path: str = ""

    @classmethod
    def from_decode(cls, decode: dict, where: str = "decode") -> "BoxSource":
        """The ``boxes`` entry of a decode config (absent or null: ground truth). HarnessError naming ``where``
        and the field on a bad value."""
        raw = decode.get("boxes")
        if raw is None:
            return cls()
        fields = ("source", "centre", "size", "miss_rate", "seed", "path")
        if not isinstance(raw, dict) or set(raw) - set(fields):
            raise HarnessError(f"{where}: field boxes: must be {{source: gt | jittered | file, centre, size, "
                               f"miss_rate, seed (jittered), path (file)}}, got {raw!r}")
        source = raw.get("source", "gt")
        if source not in BOX_SOURCES:
            raise HarnessError(f"{where}: field boxes.source: must be one of {', '.join(BOX_SOURCES)}, "
                               f"got {source!r}")
        takes = {"gt": {"source"}, "file": {"source", "path"}, "jittered": set(fields) - {"path"}}[source]
        if set(raw) - takes:
            name = {"gt": "ground-truth", "file": "detection-file"}.get(source, source)
            raise HarnessError(f"{where}: field boxes: {name} boxes take no "
                               f"{', '.join(sorted(set(raw) - takes))}")
        if source == "file":
            path = raw.get("path")
            if not isinstance(path, str) or not path.strip():
                raise HarnessError(f"{where}: field boxes.path: a detection file's path is required, got {path!r}")
            return cls("file", path=path)
        for key, hi, closed in (("centre", 1.0, False), ("size", 1.0, False), ("miss_rate", 1.0, True)):
            v = raw.get(key, 0.0)
            if not _number(v) or v < 0 or v > hi or (v == hi and not closed):
                raise HarnessError(f"{where}: field boxes.{key}: must be a number in [0, 1{']' if closed else ')'}"
                                   f", got {v!r}")
        seed = raw.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise HarnessError(f"{where}: field boxes.seed: must be a non-negative integer, got {seed!r}")
        return cls(source, float(raw.get("centre", 0.0)), float(raw.get("size", 0.0)),
                   float(raw.get("miss_rate", 0.0)), seed)

    def file(self) -> Path:
        """The detection file of a ``file`` source: ``path`` as given if absolute, else under the data folder."""
        from .paths import data_dir

        path = Path(self.path).expanduser()
        return path if path.is_absolute() else data_dir() / path

    def boxes(self, sample: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The image's boxes (N, 4) px, box scores (N,) and their ground-truth persons (N,; None for a file)."""
        if self.source == "jittered":
            return jittered_boxes(sample, self.centre, self.size, self.miss_rate, self.seed)
        if self.source == "file":
            found = _cached_detections(self.file()).get(int(sample.image_id))
            return (np.zeros((0, 4)), np.zeros(0), None) if found is None else (*found, None)
        return ground_truth_boxes(sample)

    def record(self) -> str | dict:
        """What a record's config says of the boxes: ``'ground-truth'``, the jitter settings, or the detection
        file's path and SHA-256."""
        if self.source == "gt":
            return "ground-truth"
        if self.source == "file":
            path = _existing(self.file())
            return {"source": "file", "path": str(path.resolve()), "sha256": file_digest(path)}
        return {"source": "jittered", "centre": self.centre, "size": self.size, "miss_rate": self.miss_rate,
                "seed": self.seed}


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise HarnessError(f"{path}: detection file not found (decode.boxes.path is relative to the data folder, "
                           f"POSEHARNESS_DATA)")
    return path


def _cached_detections(path: Path) -> Detections:
    """:func:`load_detections` of ``path``, read once per file version (path, size, mtime) in this process."""
    st = _existing(path).stat()
    return _detections_of(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _detections_of(path: str, size: int, mtime_ns: int) -> Detections:
    return load_detections(path)


def boxes_record(kind: str, box_source: "BoxSource", detections: str | Path | None) -> str | dict | None:
    """The record's ``boxes`` entry of a run: None for whole-image views; a ``--detections`` file's as a ``file``
    source records it (path, SHA-256); else :meth:`BoxSource.record`. A variant whose boxes are not the ground
    truth's and a detection file is an error (two box sources)."""
    if kind != "top-down":
        return None
    if detections is not None:
        if box_source.source != "gt":
            raise HarnessError(f"--detections {detections}: the variant's decode.boxes says source "
                               f"{box_source.source!r}; a detection file replaces ground-truth boxes only")
        return BoxSource("file", path=str(Path(detections).resolve())).record()
    return box_source.record()


Detections = dict[int, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TestTimeViews:
    """Test-time augmentation as views [P: PoseDet §4, "one NMS over all scales and flips"]: each factor of
    ``scales`` multiplies the input size (W and H, rounded), and with ``flip`` each scale is also seen mirrored.
    The default, ``scales (1.0,)`` without ``flip``, is the plain single view. Read from a variant's
    ``decode.tta: {scales: [...], flip: bool}`` (:meth:`from_decode`)."""

    __test__ = False                  # not a pytest class, despite its name

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    @classmethod
    def from_decode(cls, decode: dict, source: str = "decode") -> "TestTimeViews":
        """The ``tta`` entry of a decode config (absent or null: the plain view). HarnessError naming ``source``
        and the field on a bad value."""
        raw = decode.get("tta")
        if raw is None:
            return cls()
        if not isinstance(raw, dict) or set(raw) - {"scales", "flip"}:
            raise HarnessError(f"{source}: field tta: must be {{scales: [factors], flip: true|false}}, got {raw!r}")
        scales = raw.get("scales", [1.0])
        if (not isinstance(scales, (list, tuple)) or not scales
                or not all(_number(v) and v > 0 for v in scales)):
            raise HarnessError(f"{source}: field tta.scales: must be a non-empty list of positive factors, "
                               f"got {scales!r}")
        flip = raw.get("flip", False)
        if not isinstance(flip, bool):
            raise HarnessError(f"{source}: field tta.flip: must be true or false, got {flip!r}")
        return cls(tuple(float(v) for v in scales), flip)

    def sizes(self, input_size: Size) -> list[tuple[int, int]]:
        """(W, H) of each scale's input."""
        w, h = as_size(input_size)
        return [(max(1, round(w * f)), max(1, round(h * f))) for f in self.scales]


def mirrored(view: View) -> View:
    """The view seen in a mirror: the input flipped left-right about its pixel centres (x ↦ W − 1 − x)."""
    mirror = np.array([[-1.0, 0.0, view.size[0] - 1.0], [0.0, 1.0, 0.0]])
    return dataclasses.replace(view, affine=compose(mirror, view.affine), flipped=not view.flipped)


def image_views(sample: Any, kind: str, input_size: Size, detections: Detections | None = None,
                tta: TestTimeViews | None = None, boxes: BoxSource | None = None) -> list[View]:
    """The views of one image for a paradigm's view ``kind``; top-down boxes from ``detections`` when given
    (an image without detections has no view), else from ``boxes`` (default: the ground truth). With ``tta``:
    the views at each of its scales, each followed by its mirror when ``tta.flip`` (views of one input size stay
    adjacent)."""
    tta = tta or TestTimeViews()
    out: list[View] = []
    for size in tta.sizes(input_size):
        for view in _views_at(sample, kind, size, detections, boxes or BoxSource()):
            out.extend([view, mirrored(view)] if tta.flip else [view])
    return out


def _views_at(sample: Any, kind: str, input_size: Size, detections: Detections | None,
              boxes: BoxSource) -> list[View]:
    if kind == "bottom-up":
        return bottom_up_views(sample, input_size)
    if kind != "top-down":
        raise HarnessError(f"unknown view {kind!r} (known: {', '.join(KINDS)})")
    if detections is None:
        return top_down_views(sample, input_size, *boxes.boxes(sample))
    found = detections.get(int(sample.image_id), (np.zeros((0, 4)), np.zeros(0)))
    return top_down_views(sample, input_size, *found)


def to_original(poses: np.ndarray, view: View | np.ndarray) -> np.ndarray:
    """Map (N, K, 3) poses from a view's input pixels back to the original image; missing keypoints (score ≤ 0)
    become (0, 0, 0). ``view`` is a :class:`View` or its (2, 3) affine. Returns float64 (N, K, 3)."""
    affine = view.affine if isinstance(view, View) else np.asarray(view, dtype=np.float64)
    out = np.asarray(poses).astype(np.float64, copy=True)
    if len(out):
        out[..., :2] = affine_points(out[..., :2], invert_affine(affine))
        out[out[..., 2] <= 0] = 0.0
    return out


# ----------------------------------------------------------------------------------------------------------
# Detection files
# ----------------------------------------------------------------------------------------------------------

def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_detection(path: Path, i: int, rec: Any) -> None:
    """Raise HarnessError naming ``path``, record ``i`` and the field when ``rec`` is not a detection."""
    def bad(field: str, why: str) -> HarnessError:
        return HarnessError(f"{path}: record {i}: field {field}: {why}")

    if not isinstance(rec, dict):
        raise HarnessError(f"{path}: record {i}: must be an object, got {type(rec).__name__}")
    for field in ("image_id", "category_id"):
        if not isinstance(rec.get(field), int) or isinstance(rec.get(field), bool):
            raise bad(field, f"must be an integer, got {rec.get(field)!r}")
    box = rec.get("bbox")
    if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
        raise bad("bbox", f"must be [x, y, w, h] (4 finite numbers), got {box!r}")
    if box[2] < 0 or box[3] < 0:
        raise bad("bbox", f"width and height must be ≥ 0, got {box!r}")
    if not _number(rec.get("score")):
        raise bad("score", f"must be a finite number, got {rec.get('score')!r}")


def load_detections(path: str | Path, category_id: int = 1) -> Detections:
    """A COCO detection-results file (a JSON list of ``{image_id, category_id, bbox: [x, y, w, h], score}``) as
    ``{image_id: (boxes (N, 4) float64 px, scores (N,) float64)}``, records of other categories left out, each
    image's boxes in file order. A missing / unreadable file or a malformed record raises HarnessError naming
    the file, the record index and the field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise HarnessError(f"{path}: detection file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HarnessError(f"{path}: not a readable JSON detection file: {exc}") from None
    if not isinstance(data, list):
        raise HarnessError(f"{path}: a detection file must be a JSON list of detections, got a JSON "
                           f"{'object' if isinstance(data, dict) else type(data).__name__}")
    found: dict[int, tuple[list, list]] = {}
    for i, rec in enumerate(data):
        _check_detection(path, i, rec)
        if rec["category_id"] != category_id:
            continue
        boxes, scores = found.setdefault(rec["image_id"], ([], []))
        boxes.append(rec["bbox"])
        scores.append(rec["score"])
    return {k: (np.asarray(b, dtype=np.float64).reshape(-1, 4), np.asarray(s, dtype=np.float64))
            for k, (b, s) in found.items()}
