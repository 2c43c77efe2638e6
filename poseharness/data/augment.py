"""Geometry of the network input: the bottom-up and top-down views, random augmentation, and warping.

Everything here is a pure function on arrays. One pixel convention holds throughout, the one COCO's keypoints
and the GOG "pixel-centre transform" use: **the centre of pixel (column i, row j) is at (x, y) = (i, j)**, so an
image of width W covers the continuous range x ∈ [-0.5, W - 0.5]. Resizing by a factor s therefore maps
x ↦ s·(x + 0.5) - 0.5, and a horizontal mirror of a width-W image maps x ↦ W - 1 - x.

A geometric transform is one 2×3 affine matrix ``A`` (float64) mapping an input point (x, y) to
``A @ [x, y, 1]`` in the output. The view (whole image or person crop) and every random augmentation are
composed into a single matrix, so an image is resampled exactly once.

Sizes are ``(width, height)`` in pixels; an ``int`` means a square.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import HarnessError
from .sample import Sample

Size = int | tuple[int, int]

# The standard top-down expansion of a person box (SimpleBaseline, HRNet, MMPose): context around the person.
TOP_DOWN_EXPAND = 1.25
# The expansion of a half-body crop [R: HRNet lib/dataset/JointsDataset.py half_body_transform, ``scale * 1.5``].
HALF_BODY_EXPAND = 1.5


def as_size(size: Size) -> tuple[int, int]:
    """``(width, height)`` from an int (square) or a pair."""
    if isinstance(size, (int, np.integer)):
        w = h = int(size)
    else:
        w, h = (int(v) for v in size)
    if w <= 0 or h <= 0:
        raise ValueError(f"input size must be positive, got {size!r}")
    return w, h


# ----------------------------------------------------------------------------------------------------------
# Affine algebra
# ----------------------------------------------------------------------------------------------------------

def _h(m: np.ndarray) -> np.ndarray:
    """(2, 3) -> (3, 3) homogeneous matrix."""
    return np.vstack([np.asarray(m, dtype=np.float64), [0.0, 0.0, 1.0]])


def compose(*matrices: np.ndarray) -> np.ndarray:
    """``compose(A, B)`` applies ``B`` first, then ``A`` (like function composition A∘B). Returns (2, 3) float64."""
    out = np.eye(3)
    for m in matrices:
        out = out @ _h(m)
    return out[:2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine: maps the output back to the input (e.g. predictions back to the image)."""
    return np.linalg.inv(_h(m))[:2]


def translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty]])


def affine_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to ``(..., 2)`` points (pixels); returns float64 of the same shape."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


# ----------------------------------------------------------------------------------------------------------
# The two views
# ----------------------------------------------------------------------------------------------------------

def bottom_up_affine(width: int, height: int, input_size: Size) -> np.ndarray:
    """Whole image: the long side resized to the input, aspect kept, the image at the top-left of a padded square.

    With s = min(out_w / width, out_h / height) the image's extent [-0.5, width - 0.5] maps onto
    [-0.5, s·width - 0.5] (x ↦ s·(x + 0.5) - 0.5); the rest of the input is padding (right or bottom), so undoing
    the view needs only the inverse of this matrix. Returns (2, 3) float64.
    """
    out_w, out_h = as_size(input_size)
    s = min(out_w / width, out_h / height)
    return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]])


def top_down_box(box: np.ndarray, input_size: Size, expand: float = TOP_DOWN_EXPAND) -> tuple[np.ndarray, np.ndarray]:
    """The crop window of a person box ``(x, y, w, h)``: centre (2,) and size (2,) in image pixels.

    The standard expansion: box centre, the shorter side grown until the aspect equals the input's
    (out_w / out_h), then both sides × ``expand`` (1.25).
    """
    x, y, w, h = (float(v) for v in box)
    out_w, out_h = as_size(input_size)
    aspect = out_w / out_h
    # A degenerate box still gets a one-pixel window instead of a division by zero.
    w, h = max(w, 1.0), max(h, 1.0)
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return np.array([x + 0.5 * float(box[2]), y + 0.5 * float(box[3])]), np.array([w, h]) * expand


def top_down_affine(box: np.ndarray, input_size: Size, expand: float = TOP_DOWN_EXPAND) -> np.ndarray:
    """Person crop: the window of :func:`top_down_box` mapped onto the whole input. Returns (2, 3) float64.

    The window [cx - ww/2, cx + ww/2] maps onto the input's extent [-0.5, out_w - 0.5], so the box centre lands
    on the input's centre ((out_w - 1)/2, (out_h - 1)/2).
    """
    out_w, out_h = as_size(input_size)
    (cx, cy), (ww, wh) = top_down_box(box, input_size, expand)
    sx, sy = out_w / ww, out_h / wh   # equal by construction of the window's aspect
    return np.array([[sx, 0.0, (out_w - 1) / 2 - sx * cx], [0.0, sy, (out_h - 1) / 2 - sy * cy]])


# ----------------------------------------------------------------------------------------------------------
# Random augmentation
# ----------------------------------------------------------------------------------------------------------

#: Where the augmentation's view is centred (:attr:`AugmentConfig.centre`).
CENTRES = ("input", "person")


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation settings, applied in the network input around its centre.

    The defaults are milder than the papers' (GOG repo: rotate ≤ 45°, scale [0.5, 2.0], translate ≤ 150 px of 512,
    stretch [0.95, 1.05]; see :meth:`gog`) because tiny CPU runs train for a few hundred steps on a small input,
    where strong augmentation mostly slows convergence.

    rotate:    maximum |angle| in degrees, uniform in [-rotate, rotate]
    scale:     (min, max) zoom factor, log-uniform (a zoom of 2 and of 1/2 are equally likely)
    stretch:   (min, max) extra factor on x only (aspect jitter), log-uniform; (1, 1) disables it
    translate: maximum |shift| per axis as a fraction of the input side, uniform
    flip:      probability of a horizontal mirror (keypoint channels swapped with the schema's flip_index)
    centre:    the point of the view that lands on the input's centre (and that rotation and zoom turn about):
               ``'input'`` (default) the input's own centre; ``'person'`` the box centre (x + w/2, y + h/2) of one
               trained-on person of the image (not crowd, with labelled keypoints), drawn uniformly, mapped through
               the view. An image without such a person falls back to ``'input'``. In the top-down view the
               only candidate is the item's own person, whose box centre the view already puts at the centre.
               [P] PoseDet: "cropped centered on a random person"; [R] IIGROUP/PoseDet ``CenterRandomCropXiao``
               centres the crop on the person's box centre.
    crop:      ``None`` (default, off) or (min, max): the side of a square crop as a factor u of the input side,
               in input (view) pixels, u uniform in [min, max]; the crop is resized to the input, so the zoom is
               1/u. [P] PoseDet: resize factor U[0.5, 1.5], 512×512 crop, i.e. crop = (0.5, 1.5) of a 512 input.
               ``crop`` replaces the log-uniform ``scale`` zoom: with ``crop`` set, ``scale`` must be (1, 1).
               rotate / stretch / translate / flip apply on top.
    half_body: top-down items only: the probability of HRNet's half-body crop (0, the default: off) [R: HRNet
               lib/dataset/JointsDataset.py, ``PROB_HALF_BODY``: 0.3 in the HRNet COCO configs, 0 — unset — in
               SimpleBaseline's]: a person with more than ``half_body_joints`` labelled joints is, with this
               probability, cropped around its upper or its lower body instead (:func:`half_body_box`), the
               other augmentations on top. Bottom-up items ignore it.
    half_body_joints: the joint-count rule [R: ``NUM_JOINTS_HALF_BODY: 8``]: only persons with more labelled
               joints than this are candidates.

    Only the first five settings existed before ``centre``, ``crop`` and ``half_body``; :meth:`as_dict` leaves the
    later ones out while they hold their defaults, so configs (and their hashes) that do not use them are unchanged.
    """

    rotate: float = 30.0
    scale: tuple[float, float] = (0.75, 1.25)
    stretch: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.1
    flip: float = 0.5
    centre: str = "input"
    crop: tuple[float, float] | None = None
    half_body: float = 0.0
    half_body_joints: int = 8

    #: Settings added after configs were first hashed, with their defaults: omitted from :meth:`as_dict` when
    #: they hold these values.
    OPTIONAL = {"centre": "input", "crop": None, "half_body": 0.0, "half_body_joints": 8}

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.rotate) and 0 <= self.rotate <= 180):
            problems.append(f"rotate must be in [0, 180] degrees, got {self.rotate!r}")
        for name in ("scale", "stretch"):
            if not _is_range(getattr(self, name)):
                problems.append(f"{name} must be (min, max) with 0 < min <= max, got {getattr(self, name)!r}")
        if not (math.isfinite(self.translate) and 0 <= self.translate <= 1):
            problems.append(f"translate must be a fraction in [0, 1], got {self.translate!r}")
        if not (0 <= self.flip <= 1):
            problems.append(f"flip must be a probability in [0, 1], got {self.flip!r}")
        if not (isinstance(self.centre, str) and self.centre in CENTRES):
            problems.append(f"centre must be one of {', '.join(map(repr, CENTRES))}, got {self.centre!r}")
        if self.crop is not None:
            if not _is_range(self.crop):
                problems.append(f"crop must be null or (min, max) crop-side factors of the input side with "
                                f"0 < min <= max, got {self.crop!r}")
            elif _is_range(self.scale) and tuple(self.scale) != (1.0, 1.0):
                problems.append(f"crop replaces scale: with crop {self.crop!r} give scale (1, 1), "
                                f"got scale {self.scale!r}")
        if not (_is_number(self.half_body) and 0 <= self.half_body <= 1):
            problems.append(f"half_body must be a probability in [0, 1], got {self.half_body!r}")
        elif self.half_body > 0 and self.centre == "person":
            problems.append("half_body and centre 'person' exclude each other (the person centre would move a "
                            "half-body crop back onto the whole person)")
        if not (isinstance(self.half_body_joints, (int, np.integer)) and not isinstance(self.half_body_joints, bool)
                and self.half_body_joints >= 0):
            problems.append(f"half_body_joints must be a non-negative integer, got {self.half_body_joints!r}")
        if problems:
            raise HarnessError("augmentation settings: " + "; ".join(problems))

    @classmethod
    def gog(cls) -> "AugmentConfig":
        """The GOG / OffsetGuided repository's training augmentation (data/factory.py), translate 150 px of 512."""
        return cls(rotate=45.0, scale=(0.5, 2.0), stretch=(0.95, 1.05), translate=150 / 512, flip=0.5)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, source: str = "augment") -> "AugmentConfig":
        """Build from a config mapping; unknown keys are an error naming ``source``."""
        raw = dict(raw or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise HarnessError(f"{source}: unknown augmentation setting(s) {unknown} (known: {sorted(known)})")
        for key in ("scale", "stretch", "crop"):
            if raw.get(key) is not None:
                try:
                    raw[key] = tuple(float(v) for v in raw[key])
                except (TypeError, ValueError):
                    pass        # left as given: __post_init__ names the setting and the bad value
        try:
            return cls(**raw)
        except HarnessError as exc:
            raise HarnessError(f"{source}: {exc}") from None

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain mapping (what configs store and hash), ``from_dict``'s inverse.

        Settings of :attr:`OPTIONAL` that hold their defaults are left out, so every config written before they
        existed keeps exactly the same dict and hash.
        """
        out = dataclasses.asdict(self)
        for key, default in self.OPTIONAL.items():
            if out[key] == default:
                del out[key]
        return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v)


def _is_range(v: Any) -> bool:
    """A (min, max) pair of finite numbers with 0 < min <= max."""
    try:
        lo, hi = v
    except (TypeError, ValueError):
        return False
    return _is_number(lo) and _is_number(hi) and 0 < lo <= hi


@dataclass(frozen=True)
class AugmentParams:
    """One draw of :class:`AugmentConfig`: angle in degrees (counter-clockwise on screen), zoom, x-stretch,
    shift (tx, ty) in input pixels, whether to mirror, the crop-side factor (the zoom is scale / crop), and the
    point (input pixels, before augmentation) that lands on the input's centre (None: the input's centre) with
    the index of the chosen person among the candidates (None: none chosen)."""

    angle: float = 0.0
    scale: float = 1.0
    stretch: float = 1.0
    tx: float = 0.0
    ty: float = 0.0
    flip: bool = False
    crop: float = 1.0
    centre: tuple[float, float] | None = None
    person: int | None = None


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if hi > lo else float(lo)


def person_centres(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``(P, 4)`` xywh boxes (image pixels) -> ``(P, 2)`` float64 box centres (x + w/2, y + h/2) mapped by the
    view affine ``m``: the candidates of ``centre: person``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return affine_points(b[:, :2] + 0.5 * b[:, 2:], m)


def sample_augmentation(config: AugmentConfig, rng: np.random.Generator, input_size: Size,
                        persons: np.ndarray | None = None) -> AugmentParams:
    """Draw one set of parameters from ``rng`` (the caller seeds it, e.g. from (seed, epoch, index)).

    persons: ``(P, 2)`` candidate centres in input pixels for ``centre: person`` (:func:`person_centres`);
             None or empty: the input's centre.
    """
    out_w, out_h = as_size(input_size)
    # Fixed draw order, one value each, so adding a setting never shifts the others' random streams.
    angle = float(rng.uniform(-config.rotate, config.rotate))
    scale = _log_uniform(rng, *config.scale)
    stretch = _log_uniform(rng, *config.stretch)
    tx = float(rng.uniform(-config.translate, config.translate)) * out_w
    ty = float(rng.uniform(-config.translate, config.translate)) * out_h
    flip = bool(rng.random() < config.flip)
    params = AugmentParams(angle=angle, scale=scale, stretch=stretch, tx=tx, ty=ty, flip=flip)
    # Later settings draw only when set, after all of the above: off, they leave the stream untouched.
    if config.crop is not None:
        params = dataclasses.replace(params, crop=float(rng.uniform(*config.crop)))
    if config.centre == "person":
        u = float(rng.random())         # one draw even without candidates
        pts = np.zeros((0, 2)) if persons is None else np.asarray(persons, dtype=np.float64).reshape(-1, 2)
        if len(pts):
            k = min(int(u * len(pts)), len(pts) - 1)
            params = dataclasses.replace(params, centre=(float(pts[k, 0]), float(pts[k, 1])), person=k)
    return params


def upper_body(names) -> np.ndarray:
    """(K,) bool for a schema's keypoint names: the joints of HRNet's upper body — every joint whose name holds
    none of hip, knee, ankle. COCO: 0-10, HRNet's ``upper_body_ids`` [R: lib/dataset/coco.py]; CrowdPose:
    shoulders, elbows, wrists, head, neck = 0-5, 12, 13, the ``upper_body_ids`` of the HRNet-style CrowdPose
    loaders (e.g. DEKR's, MMPose 0.x)."""
    return np.array([not any(part in n for part in ("hip", "knee", "ankle")) for n in names], dtype=bool)


def sample_half_body(config: AugmentConfig, rng: np.random.Generator, keypoints: np.ndarray,
                     upper: np.ndarray) -> np.ndarray | None:
    """One draw of the half-body crop for one person: the pseudo box (4,) x, y, w, h in image pixels that
    :func:`top_down_affine` crops with ``HALF_BODY_EXPAND``, or None (keep the person's own box).

    Always draws two values from ``rng`` (after :func:`sample_augmentation`'s, so that the others' streams are
    unchanged): u ~ U[0, 1) and z ~ N(0, 1). As HRNet's ``__getitem__`` / ``half_body_transform`` [R]: the person
    is a candidate when it has more than ``config.half_body_joints`` labelled joints and u < ``config.half_body``;
    the upper body is chosen when z < 0.5 (the code's ``np.random.randn() < 0.5``: probability 0.69, not 0.5) and
    it has more than 2 labelled joints, else the lower body if it has more than 2, else the upper; fewer than 2
    chosen joints: None. The box is centred on the chosen joints' mean with their extent as its size.

    keypoints: (K, 3) the person's joints in image pixels (v > 0 labelled); upper: (K,) bool (:func:`upper_body`).
    """
    u = float(rng.random())
    z = float(rng.standard_normal())
    kp = np.asarray(keypoints, dtype=np.float64)
    labelled = kp[:, 2] > 0
    if not (labelled.sum() > config.half_body_joints and u < config.half_body):
        return None
    up, low = kp[labelled & upper, :2], kp[labelled & ~upper, :2]
    chosen = up if (z < 0.5 and len(up) > 2) else (low if len(low) > 2 else up)
    if len(chosen) < 2:
        return None
    centre = chosen.mean(axis=0)
    size = chosen.max(axis=0) - chosen.min(axis=0)
    return np.array([centre[0] - size[0] / 2, centre[1] - size[1] / 2, size[0], size[1]])


def augmentation_affine(params: AugmentParams, input_size: Size) -> np.ndarray:
    """The augmentation as a (2, 3) affine from input coordinates to input coordinates.

    About the anchor a (``params.centre``, default the input's centre c): zoom (x by scale·stretch/crop, y by
    scale/crop), rotate, mirror, move a to c, then shift by (tx, ty). The mirror about c maps
    x ↦ 2·c_x - x = out_w - 1 - x, the pixel-centre mirror.
    """
    out_w, out_h = as_size(input_size)
    cx, cy = (out_w - 1) / 2, (out_h - 1) / 2
    a = math.radians(params.angle)
    # y points down, so this matrix turns the picture counter-clockwise on screen for a positive angle.
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    zoom = np.diag([params.scale * params.stretch, params.scale])
    if params.crop != 1.0:
        zoom = zoom / params.crop
    mirror = np.diag([-1.0 if params.flip else 1.0, 1.0])
    lin = mirror @ rot @ zoom
    centre = np.array([cx, cy])
    anchor = centre if params.centre is None else np.asarray(params.centre, dtype=np.float64)
    t = centre + np.array([params.tx, params.ty]) - lin @ anchor
    return np.hstack([lin, t[:, None]])


# ----------------------------------------------------------------------------------------------------------
# Warping images, masks, keypoints and boxes
# ----------------------------------------------------------------------------------------------------------

def _pil_coefficients(inverse: np.ndarray) -> tuple[float, ...]:
    """PIL's AFFINE data for an output->input matrix in the pixel-centre convention.

    PIL samples output pixel (i, j) at its corner-convention point (i + 0.5, j + 0.5) and reads the input in the
    corner convention too, so shift by 0.5 on both sides: c = t + 0.5 - L·(0.5, 0.5).
    """
    lin, t = inverse[:, :2], inverse[:, 2]
    c = t + 0.5 - lin @ np.array([0.5, 0.5])
    return (lin[0, 0], lin[0, 1], c[0], lin[1, 0], lin[1, 1], c[1])


def _warp_pil(img: Image.Image, m: np.ndarray, out_size: tuple[int, int], resample: int, fill: Any) -> Image.Image:
    if resample == Image.BILINEAR:
        # Bilinear sampling aliases when shrinking by more than 2 (e.g. a 640 px photo to a 128 px input):
        # box-average by the integer factor first. Reduced pixel i covers [f·i, f·i + f), centre f·i + (f-1)/2.
        f = int(1.0 / max(np.linalg.svd(m[:, :2], compute_uv=False)))
        if f >= 2:
            img = img.reduce(f)
            m = compose(m, np.array([[f, 0.0, (f - 1) / 2], [0.0, f, (f - 1) / 2]]))
    coeffs = _pil_coefficients(invert_affine(m))
    return img.transform(out_size, Image.AFFINE, coeffs, resample=resample, fillcolor=fill)


def _warp_torch(img: torch.Tensor, m: np.ndarray, out_size: tuple[int, int], mode: str, fill: float) -> torch.Tensor:
    squeeze = img.ndim == 2
    x = img[None, None] if squeeze else img[None]
    dtype = x.dtype
    x = x.to(torch.float32) if not x.is_floating_point() else x
    in_h, in_w = x.shape[-2:]
    out_w, out_h = out_size
    inv = torch.as_tensor(invert_affine(m), dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64), torch.arange(out_w, dtype=torch.float64),
                            indexing="ij")
    src = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ inv.T            # (H, W, 2) input pixel centres
    # align_corners=False: -1 / +1 are the outer edges, i.e. pixel-centre coordinates -0.5 and size - 0.5.
    grid = torch.stack([(2 * src[..., 0] + 1) / in_w - 1, (2 * src[..., 1] + 1) / in_h - 1], dim=-1)
    grid = grid[None].to(x.dtype).to(x.device)
    out = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    if fill:
        inside = F.grid_sample(torch.ones_like(x[:, :1]), grid, mode=mode, padding_mode="zeros", align_corners=False)
        out = out + fill * (1 - inside)
    if dtype == torch.bool:
        out = out > 0.5
    elif not dtype.is_floating_point:
        out = out.round().clamp(torch.iinfo(dtype).min, torch.iinfo(dtype).max).to(dtype)
    return out[0, 0] if squeeze else out[0]


def apply_affine_image(image: np.ndarray | Image.Image | torch.Tensor, m: np.ndarray, out_size: Size, *,
                       interpolation: str | None = None, fill: float = 0) -> np.ndarray | Image.Image | torch.Tensor:
    """Resample an image or mask so that input point p lands at ``m @ [p, 1]`` in an output of ``out_size``.

    image: (H, W, 3) / (H, W) numpy array (uint8 or bool), a PIL image, or a torch tensor (C, H, W) / (H, W).
           The result has the same kind, dtype and channel layout, with the output's (height, width).
    interpolation: 'bilinear' (images) or 'nearest' (masks, labels); default nearest for bool, else bilinear.
    fill: value outside the input (0: black image, False mask).
    numpy and PIL inputs go through PIL; torch tensors through ``grid_sample``. Both use the pixel-centre
    convention of this module and agree to within rounding (tested).
    """
    out = as_size(out_size)
    m = np.asarray(m, dtype=np.float64)
    if interpolation is None:
        is_bool = (image.dtype == torch.bool) if isinstance(image, torch.Tensor) else (
            isinstance(image, np.ndarray) and image.dtype == bool) or (
            isinstance(image, Image.Image) and image.mode == "1")
        interpolation = "nearest" if is_bool else "bilinear"
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    if isinstance(image, torch.Tensor):
        return _warp_torch(image, m, out, interpolation, float(fill))
    resample = Image.BILINEAR if interpolation == "bilinear" else Image.NEAREST
    if isinstance(image, Image.Image):
        return _warp_pil(image, m, out, resample, fill)
    arr = np.asarray(image)
    if arr.dtype == bool:
        # PIL's mode '1' loses precision in transforms; carry the mask as 0/255 and threshold back.
        warped = _warp_pil(Image.fromarray(arr.astype(np.uint8) * 255), m, out, resample, 255 if fill else 0)
        return np.asarray(warped) > 127
    if arr.dtype != np.uint8:
        raise ValueError(f"numpy images must be uint8 or bool, got {arr.dtype}")
    fillcolor = (int(fill),) * arr.shape[2] if arr.ndim == 3 else int(fill)
    return np.array(_warp_pil(Image.fromarray(arr), m, out, resample, fillcolor))     # writable, unlike asarray


def inside(points: np.ndarray, out_size: Size) -> np.ndarray:
    """``(..., 2)`` points -> ``(...)`` bool: within the output's extent [-0.5, W - 0.5] × [-0.5, H - 0.5]."""
    w, h = as_size(out_size)
    p = np.asarray(points)
    return (p[..., 0] >= -0.5) & (p[..., 0] <= w - 0.5) & (p[..., 1] >= -0.5) & (p[..., 1] <= h - 0.5)


def apply_affine_keypoints(keypoints: np.ndarray, m: np.ndarray, out_size: Size,
                           flip_index: np.ndarray | None = None) -> np.ndarray:
    """Transform ``(P, K, 3)`` keypoints (x, y pixels, v) into the output; returns (P, K, 3) float32.

    v is unchanged for labelled points that land inside the output and set to 0 for those that leave it;
    every v = 0 point gets x = y = 0 (the annotation files' convention). ``flip_index`` (the schema's, given
    when ``m`` mirrors) permutes the keypoint channels so that a left wrist stays labelled "left wrist".
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    xy = affine_points(kp[..., :2], m)
    v = np.where((kp[..., 2] > 0) & inside(xy, out_size), kp[..., 2], 0.0)
    out = np.concatenate([np.where(v[..., None] > 0, xy, 0.0), v[..., None]], axis=-1).astype(np.float32)
    if flip_index is not None:
        out = out[:, np.asarray(flip_index)]
    return out


def apply_affine_boxes(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``(P, 4)`` xywh boxes -> the axis-aligned xywh envelope of their four transformed corners, (P, 4) float32.

    Not clipped to the output: a person partly outside keeps its full extent (consumers clip if they need to).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    corners = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1),
                        np.stack([x0, y1], -1), np.stack([x1, y1], -1)], axis=1)      # (P, 4, 2)
    t = affine_points(corners, m)
    lo, hi = t.min(axis=1), t.max(axis=1)
    return np.concatenate([lo, hi - lo], axis=1).astype(np.float32)


def transform_sample(sample: Sample, m: np.ndarray, out_size: Size, *, flip_index: np.ndarray | None = None,
                     persons: np.ndarray | None = None, counted: tuple[int, ...] | None = None) -> Sample:
    """The :class:`Sample` as seen through affine ``m`` in an output of ``out_size``.

    persons: indices of the persons to keep (top-down: the one person of the crop); default all.
    counted: the schema's keypoints that count towards ``num_keypoints`` (``KeypointSchema.counted``).
    The image is warped bilinearly, the ignore mask with nearest neighbour (outside the image = not ignored:
    padding holds no person, so it is a true negative). Areas scale by |det|. ``num_keypoints`` keeps the file's
    value minus the counted labelled keypoints that left the output. ``meta`` gains ``affine`` (original image
    -> this output) and ``flip``; ``width``/``height`` become the output's.
    """
    w, h = as_size(out_size)
    sel = np.arange(sample.num_persons) if persons is None else np.asarray(persons, dtype=np.int64)
    kp_in = sample.keypoints[sel]
    kp = apply_affine_keypoints(kp_in, m, (w, h))
    lost = (kp_in[..., 2] > 0) & (kp[..., 2] == 0)
    if counted is not None:
        # Both schemas' counted sets are closed under flip_index, so counting before the permutation is exact.
        lost = lost[..., list(counted)]
    if flip_index is not None:
        kp = kp[:, np.asarray(flip_index)]
    num = np.maximum(sample.num_keypoints[sel] - lost.sum(axis=-1), 0).astype(np.int64)
    det = abs(float(np.linalg.det(np.asarray(m)[:, :2])))
    return Sample(
        image_id=sample.image_id, file_name=sample.file_name, width=w, height=h,
        keypoints=kp,
        boxes=apply_affine_boxes(sample.boxes[sel], m),
        areas=(sample.areas[sel] * det).astype(np.float32),
        iscrowd=sample.iscrowd[sel].copy(),
        num_keypoints=num,
        image=None if sample.image is None else apply_affine_image(sample.image, m, (w, h)),
        ignore_mask=None if sample.ignore_mask is None else apply_affine_image(
            sample.ignore_mask, m, (w, h), interpolation="nearest"),
        meta={**sample.meta, "affine": np.asarray(m, dtype=np.float64), "flip": flip_index is not None,
              "orig_width": sample.width, "orig_height": sample.height},
    )
