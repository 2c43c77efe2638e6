"""Articulated human figures and textured backgrounds for the synthetic datasets.

A figure is a 2-D projection of a simple body model: anthropometric segment lengths (fractions of the
standing height, after Drillis & Contini's segment table), joint angles sampled within human ranges, a body
yaw that decides front / side / back views, and a painter's order of its parts. Every part is a polygon, so
the same geometry paints the RGB image and a *label map* that says, per pixel, which person and which body
part is on top. Keypoint visibility, occlusion by nearer figures and the visible masks are read off that map.

Left and right are told apart the way a network can learn them: the person's left arm and leg are always
drawn in warm colours (reds, oranges) and the right ones in cool colours (blues, cyans); a front-facing head
shows eyes and a nose turned with the body yaw, a back-facing head shows hair only.

Coordinates are image pixels, x to the right, y down; a pixel ``(col, row)`` covers ``[col, col + 1)``.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# The joints a figure carries: COCO's 17 plus CrowdPose's head top and neck. Schemas pick theirs by name.
JOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "head", "neck",
)
JOINT_INDEX = {name: i for i, name in enumerate(JOINTS)}

# Body parts, in label-map numbering (a label value is ``(slot + 1) * PART_STRIDE + part``).
PARTS = (
    "torso", "neck", "head",
    "left_upper_arm", "left_forearm", "left_hand", "right_upper_arm", "right_forearm", "right_hand",
    "left_thigh", "left_shank", "left_foot", "right_thigh", "right_shank", "right_foot",
)
PART = {name: i for i, name in enumerate(PARTS)}
PART_STRIDE = 32
# Label of foreground objects that hide people (larger than any person label).
OCCLUDER_LABEL = 1 << 30

# The parts a joint lies on: a joint whose pixel shows one of them is visible (v=2); anything else on top
# of it (a nearer person, the same person's other limb, an occluding object) makes it occluded (v=1).
_JOINT_PARTS_BY_NAME = {
    "nose": ("head",), "left_eye": ("head",), "right_eye": ("head",), "left_ear": ("head",),
    "right_ear": ("head",), "head": ("head",), "neck": ("neck", "torso", "head"),
}
for _side in ("left", "right"):
    _JOINT_PARTS_BY_NAME.update({
        f"{_side}_shoulder": ("torso", f"{_side}_upper_arm"),
        f"{_side}_elbow": (f"{_side}_upper_arm", f"{_side}_forearm"),
        f"{_side}_wrist": (f"{_side}_forearm", f"{_side}_hand"),
        f"{_side}_hip": ("torso", f"{_side}_thigh"),
        f"{_side}_knee": (f"{_side}_thigh", f"{_side}_shank"),
        f"{_side}_ankle": (f"{_side}_shank", f"{_side}_foot"),
    })
# (19, 15) bool: JOINT_PARTS[j, p] = joint j lies on part p.
JOINT_PARTS = np.zeros((len(JOINTS), len(PARTS)), dtype=bool)
for _j, _name in enumerate(JOINTS):
    JOINT_PARTS[_j, [PART[p] for p in _JOINT_PARTS_BY_NAME[_name]]] = True

# Segment lengths and radii as fractions of the standing height (Drillis & Contini; Winter, "Biomechanics
# and motor control of human movement", fig. 4.1): shoulder line at 0.818 H, hip joints at 0.530 H, upper
# arm 0.186, forearm 0.146, thigh 0.245, shank 0.246, head 0.130 (chin to crown).
_TORSO = 0.288          # hip-joint line to shoulder line
_SHOULDER_HALF = 0.115  # half the distance between the shoulder joints (biacromial ~0.23 H)
_HIP_HALF = 0.0625      # half the distance between the hip joint centres
_UPPER_ARM, _FOREARM, _HAND = 0.186, 0.146, 0.07
_THIGH, _SHANK, _FOOT = 0.245, 0.246, 0.10
_NECK = 0.045           # shoulder line to the base of the head
_HEAD_RW, _HEAD_RH = 0.048, 0.066  # head ellipse half-width and half-height
_RADIUS = {
    "neck": 0.024, "left_upper_arm": 0.027, "left_forearm": 0.021, "left_hand": 0.019,
    "left_thigh": 0.042, "left_shank": 0.030, "left_foot": 0.018,
}
for _name in list(_RADIUS):
    if _name.startswith("left_"):
        _RADIUS["right_" + _name[5:]] = _RADIUS[_name]

# Face landmarks on the head sphere: longitude from the face's forward direction (positive towards the
# person's left, degrees) and height above the head centre (fraction of the half-height).
_FACE = {"nose": (0.0, -0.30), "left_eye": (32.0, 0.05), "right_eye": (-32.0, 0.05),
         "left_ear": (90.0, 0.0), "right_ear": (-90.0, 0.0)}


def _unit(deg: float) -> np.ndarray:
    """Unit vector at ``deg`` degrees clockwise from straight down (image coordinates, y down)."""
    r = math.radians(deg)
    return np.array([-math.sin(r), math.cos(r)])


def _rot(v: np.ndarray, deg: float) -> np.ndarray:
    """Rotate 2-vectors ``(..., 2)`` by ``deg`` degrees (clockwise on screen, since y points down)."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.stack([c * v[..., 0] - s * v[..., 1], s * v[..., 0] + c * v[..., 1]], axis=-1)


def capsule(p: np.ndarray, q: np.ndarray, r0: float, r1: float, n: int = 6) -> np.ndarray:
    """Polygon ``(2n + 2, 2)`` of a tapered capsule from ``p`` (radius ``r0``) to ``q`` (radius ``r1``)."""
    d = q - p
    length = float(np.hypot(*d))
    ang = math.atan2(d[1], d[0]) if length > 1e-9 else 0.0
    # Half circles around each end, facing away from the other end.
    t_q = ang + np.linspace(-math.pi / 2, math.pi / 2, n + 1)
    t_p = ang + np.linspace(math.pi / 2, 3 * math.pi / 2, n + 1)
    end_q = q + r1 * np.stack([np.cos(t_q), np.sin(t_q)], axis=1)
    end_p = p + r0 * np.stack([np.cos(t_p), np.sin(t_p)], axis=1)
    return np.concatenate([end_q, end_p])


def ellipse(centre: np.ndarray, rx: float, ry: float, tilt_deg: float, n: int = 20) -> np.ndarray:
    """Polygon ``(n, 2)`` of an ellipse with half-axes ``rx`` (sideways) and ``ry`` (up), tilted by ``tilt_deg``."""
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)
    return centre + _rot(pts, tilt_deg)


@dataclass(frozen=True)
class Pose:
    """Joint angles of one figure, degrees. Limb angles are measured from the torso's downward axis."""
    yaw: float            # 0 = facing the camera, ±90 = profile, 180 = back to the camera
    lean: float           # whole-body roll, clockwise on screen
    head_tilt: float
    shoulder_abduction: tuple[float, float]   # (left, right), away from the body's midline
    shoulder_flexion: tuple[float, float]     # forwards swing (shows in side views)
    elbow: tuple[float, float]                # flexion, 0 = straight
    hip_abduction: tuple[float, float]
    hip_flexion: tuple[float, float]
    knee: tuple[float, float]
    elbow_sign: tuple[float, float]           # which way a frontal-view elbow folds (±1)
    knee_sign: tuple[float, float]
    arm_scale: tuple[float, float]            # foreshortening of the arm segments (1 = in the image plane)
    leg_scale: tuple[float, float]


def sample_pose(rng: np.random.Generator, back_view_rate: float) -> Pose:
    """Draw joint angles within human ranges of motion (arms mostly down, legs mostly standing/walking)."""
    if rng.random() < back_view_rate:
        yaw = rng.uniform(105.0, 255.0)
    else:
        yaw = rng.uniform(-75.0, 75.0)

    def pair(low_high_a, low_high_b, p_a):
        return tuple(float(rng.uniform(*low_high_a) if rng.random() < p_a else rng.uniform(*low_high_b))
                     for _ in range(2))

    return Pose(
        yaw=float(yaw),
        lean=float(np.clip(rng.normal(0.0, 7.0), -20.0, 20.0)),
        head_tilt=float(np.clip(rng.normal(0.0, 10.0), -25.0, 25.0)),
        shoulder_abduction=pair((-10.0, 45.0), (45.0, 175.0), 0.6),
        shoulder_flexion=pair((-45.0, 40.0), (40.0, 150.0), 0.6),
        elbow=pair((0.0, 30.0), (30.0, 150.0), 0.5),
        hip_abduction=tuple(float(v) for v in rng.uniform(-10.0, 35.0, 2)),
        hip_flexion=pair((-25.0, 35.0), (35.0, 100.0), 0.75),
        knee=pair((0.0, 20.0), (20.0, 120.0), 0.6),
        elbow_sign=tuple(float(v) for v in rng.choice([-1.0, 1.0], 2)),
        knee_sign=tuple(float(v) for v in rng.choice([-1.0, 1.0], 2)),
        arm_scale=tuple(float(v) for v in rng.uniform(0.7, 1.0, 2)),
        leg_scale=tuple(float(v) for v in rng.uniform(0.8, 1.0, 2)),
    )


def _hsv(rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float],
         val: tuple[float, float]) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(float(rng.uniform(*hue)) % 1.0, float(rng.uniform(*sat)),
                                  float(rng.uniform(*val)))
    return int(r * 255), int(g * 255), int(b * 255)


def _darker(c: tuple[int, int, int], f: float = 0.6) -> tuple[int, int, int]:
    return tuple(int(v * f) for v in c)


@dataclass(frozen=True)
class Appearance:
    """Fill colours of one figure: ``parts[p]`` is the RGB of part ``p``."""
    parts: tuple[tuple[int, int, int], ...]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Skin, hair and clothes; left limbs warm (hue 0.93-1.10), right limbs cool (hue 0.50-0.68)."""
    t = float(rng.uniform())
    skin = tuple(int(a + t * (b - a)) for a, b in zip((250, 222, 190), (95, 60, 40)))
    hair = _hsv(rng, (0.02, 0.12), (0.3, 0.9), (0.08, 0.55))
    shirt = _hsv(rng, (0.0, 1.0), (0.1, 0.8), (0.3, 0.95))
    colours: dict[str, tuple[int, int, int]] = {"torso": shirt, "neck": skin, "head": skin,
                                                "left_hand": skin, "right_hand": skin}
    for side, hue in (("left", (0.93, 1.10)), ("right", (0.50, 0.68))):
        sleeve = _hsv(rng, hue, (0.55, 0.95), (0.6, 1.0))
        trousers = _hsv(rng, hue, (0.5, 0.9), (0.35, 0.7))
        colours.update({f"{side}_upper_arm": sleeve, f"{side}_forearm": sleeve,
                        f"{side}_thigh": trousers, f"{side}_shank": trousers,
                        f"{side}_foot": _darker(trousers, 0.45)})
    return Appearance(parts=tuple(colours[p] for p in PARTS), skin=skin, hair=hair)


@dataclass
class Figure:
    """One posed figure in image pixels.

    ``joints`` (19, 2) float64 in :data:`JOINTS` order; ``face_depth`` (19,) float64 is how far a joint faces
    the camera (cosine, 1 = straight at it; 1 for body joints); ``parts`` maps part index to its polygon
    ``(N, 2)``; ``order`` is the painter's order of the parts (far to near); ``decor`` holds face and hair
    polygons painted on the head (RGB only, they belong to the head part).
    """
    joints: np.ndarray
    face_depth: np.ndarray
    parts: dict[int, np.ndarray]
    order: tuple[int, ...]
    appearance: Appearance | None = None
    decor: list[tuple[np.ndarray, tuple[int, int, int]]] = field(default_factory=list)

    def box(self) -> np.ndarray:
        """Amodal extent ``[x0, y0, x1, y1]`` of all parts (before clipping to any image)."""
        pts = np.concatenate(list(self.parts.values()))
        return np.concatenate([pts.min(axis=0), pts.max(axis=0)])

    def translated(self, offset: np.ndarray) -> "Figure":
        return Figure(self.joints + offset, self.face_depth, {k: v + offset for k, v in self.parts.items()},
                      self.order, self.appearance, [(p + offset, c) for p, c in self.decor])


def build_figure(pose: Pose, height: float, appearance: Appearance | None = None) -> Figure:
    """Pose a figure of standing height ``height`` pixels with its pelvis (mid hip joints) at the origin."""
    H = float(height)
    c_yaw, s_yaw = math.cos(math.radians(pose.yaw)), math.sin(math.radians(pose.yaw))
    down = _unit(pose.lean)
    up = -down
    lateral = _rot(down, -90.0)     # image-right when upright
    # Image-lateral sign of the person's left side: front view shows the left side on the image right.
    outward = {"left": 1.0 if c_yaw >= 0 else -1.0, "right": -1.0 if c_yaw >= 0 else 1.0}
    forward = 1.0 if s_yaw >= 0 else -1.0   # image direction the person faces in side views
    frontal, profile = abs(c_yaw), abs(s_yaw)

    joints = np.zeros((len(JOINTS), 2))
    face_depth = np.ones(len(JOINTS))
    parts: dict[int, np.ndarray] = {}
    J = JOINT_INDEX

    pelvis = np.zeros(2)
    shoulder_mid = pelvis + up * _TORSO * H
    joints[J["neck"]] = shoulder_mid + up * 0.02 * H
    for side, sign in (("left", 1.0), ("right", -1.0)):
        joints[J[f"{side}_shoulder"]] = shoulder_mid + lateral * sign * c_yaw * _SHOULDER_HALF * H
        joints[J[f"{side}_hip"]] = pelvis + lateral * sign * c_yaw * _HIP_HALF * H

    # Torso outline: the body is an elliptic cylinder, wider across than deep.
    half_sh = H * math.hypot(0.13 * c_yaw, 0.065 * s_yaw)
    half_hip = H * math.hypot(0.10 * c_yaw, 0.075 * s_yaw)
    top = shoulder_mid + up * 0.03 * H
    bottom = pelvis + down * 0.05 * H
    parts[PART["torso"]] = np.stack([
        bottom - lateral * half_hip, bottom + lateral * half_hip, pelvis + lateral * half_hip,
        shoulder_mid + lateral * half_sh, top + lateral * 0.55 * half_sh,
        top - lateral * 0.55 * half_sh, shoulder_mid - lateral * half_sh, pelvis - lateral * half_hip,
    ])

    # Head: an ellipse tilted on the neck; face landmarks on a sphere turned by the yaw.
    head_up = _rot(up, pose.head_tilt)
    head_lat = _rot(lateral, pose.head_tilt)
    head_c = shoulder_mid + up * _NECK * H + head_up * _HEAD_RH * H
    rw, rh = _HEAD_RW * H, _HEAD_RH * H
    parts[PART["neck"]] = capsule(shoulder_mid, head_c - head_up * 0.5 * rh, _RADIUS["neck"] * H,
                                  _RADIUS["neck"] * H)
    parts[PART["head"]] = ellipse(head_c, rw, rh, pose.lean + pose.head_tilt)
    joints[J["head"]] = head_c + head_up * 0.9 * rh
    for name, (lon, h) in _FACE.items():
        a = math.radians(lon + pose.yaw)
        # Ears sit on the skull's edge; pulled in a little so their pixel lies on the head part.
        r_side = 0.85 if "ear" in name else 0.9
        joints[J[name]] = head_c + head_lat * r_side * rw * math.sin(a) + head_up * h * rh
        face_depth[J[name]] = math.cos(a)

    for side, sign in (("left", 1.0), ("right", -1.0)):
        i = 0 if side == "left" else 1
        o = outward[side]
        # Limb direction = frontal abduction blended with side-view flexion, by how much each shows.
        arm_deg = -o * pose.shoulder_abduction[i] * frontal - forward * pose.shoulder_flexion[i] * profile
        elbow_dir = pose.elbow_sign[i] if profile < 0.5 else -forward
        fore_deg = arm_deg + elbow_dir * pose.elbow[i]
        sh = joints[J[f"{side}_shoulder"]]
        el = sh + _rot(down, arm_deg) * _UPPER_ARM * H * pose.arm_scale[i]
        wr = el + _rot(down, fore_deg) * _FOREARM * H * pose.arm_scale[i]
        hand = wr + _rot(down, fore_deg) * _HAND * H
        joints[J[f"{side}_elbow"]], joints[J[f"{side}_wrist"]] = el, wr
        r = {k: _RADIUS[f"{side}_{k}"] * H for k in ("upper_arm", "forearm", "hand", "thigh", "shank", "foot")}
        parts[PART[f"{side}_upper_arm"]] = capsule(sh, el, r["upper_arm"], r["forearm"])
        parts[PART[f"{side}_forearm"]] = capsule(el, wr, r["forearm"], r["forearm"] * 0.8)
        parts[PART[f"{side}_hand"]] = capsule(wr, hand, r["hand"], r["hand"] * 0.8)

        thigh_deg = -o * pose.hip_abduction[i] * frontal - forward * pose.hip_flexion[i] * profile
        # Knees fold backwards; seen from the front the fold shows only as a small sideways kink.
        knee_dir = pose.knee_sign[i] if profile < 0.3 else forward
        shank_deg = thigh_deg + knee_dir * pose.knee[i] * (0.3 + 0.7 * profile)
        hp = joints[J[f"{side}_hip"]]
        kn = hp + _rot(down, thigh_deg) * _THIGH * H * pose.leg_scale[i]
        an = kn + _rot(down, shank_deg) * _SHANK * H * pose.leg_scale[i]
        foot_vec = _rot(down, shank_deg) * 0.25 + lateral * (forward * profile + o * 0.35 * frontal)
        foot = an + foot_vec / np.hypot(*foot_vec) * _FOOT * H * (0.4 + 0.6 * profile)
        joints[J[f"{side}_knee"]], joints[J[f"{side}_ankle"]] = kn, an
        parts[PART[f"{side}_thigh"]] = capsule(hp, kn, r["thigh"], r["shank"])
        parts[PART[f"{side}_shank"]] = capsule(kn, an, r["shank"], r["shank"] * 0.75)
        parts[PART[f"{side}_foot"]] = capsule(an, foot, r["foot"], r["foot"])

    # Painter's order. A point at the person's lateral offset l has depth -l*sin(yaw): the left side is
    # nearer the camera when sin(yaw) < 0. In side views the far arm goes behind the torso.
    near, far = ("left", "right") if s_yaw < 0 else ("right", "left")
    leg = ("thigh", "shank", "foot")
    arm = ("upper_arm", "forearm", "hand")
    names: list[str] = []
    if profile > 0.6:
        names += [f"{far}_{p}" for p in arm]
    names += [f"{far}_{p}" for p in leg] + [f"{near}_{p}" for p in leg] + ["torso", "neck", "head"]
    if profile <= 0.6:
        names += [f"{far}_{p}" for p in arm]
    names += [f"{near}_{p}" for p in arm]
    fig = Figure(joints, face_depth, parts, tuple(PART[n] for n in names), appearance)
    if appearance is not None:
        fig.decor = _head_decor(head_c, rw, rh, pose, head_up, joints, face_depth, appearance, H)
    return fig


def _head_decor(head_c, rw, rh, pose, head_up, joints, face_depth, app: Appearance, H: float):
    """Hair cap (turned away from the face; the whole head from behind), eyes and nose when facing us."""
    decor = []
    c_yaw = math.cos(math.radians(pose.yaw))
    s_yaw = math.sin(math.radians(pose.yaw))
    # Hair covers the part of the head ellipse around "up", rotated away from the face: the face turns
    # towards image-x sign(sin yaw) (the nose sits at rw*sin(yaw)), so the hair turns the other way.
    half = math.radians(70.0 + 110.0 * max(0.0, -c_yaw))
    centre = math.pi / 2 + math.radians(35.0) * s_yaw
    t = np.linspace(centre - half, centre + half, 16)
    local = np.stack([1.04 * rw * np.cos(t), 1.04 * rh * np.sin(t)], axis=1)
    local[:, 1] *= -1.0     # y down
    decor.append((head_c + _rot(local, pose.lean + pose.head_tilt), app.hair))
    eye_r = max(0.75, 0.008 * H)
    for name in ("left_eye", "right_eye"):
        if face_depth[JOINT_INDEX[name]] > 0.15:
            decor.append((ellipse(joints[JOINT_INDEX[name]], eye_r, eye_r, 0.0, 8), (25, 20, 20)))
    if face_depth[JOINT_INDEX["nose"]] > 0.1:
        nose = joints[JOINT_INDEX["nose"]]
        decor.append((ellipse(nose, eye_r * 1.2, eye_r * 0.9, 0.0, 8), _darker(app.skin, 0.65)))
    return decor


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Textured clutter: a smooth colour field, random shapes and stripes (no person-like structure)."""
    grid = rng.integers(0, 256, size=(int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3), dtype=np.uint8)
    img = Image.fromarray(grid, "RGB").resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 20))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        w, h = rng.uniform(0.05, 0.5) * width, rng.uniform(0.05, 0.5) * height
        kind = rng.integers(0, 4)
        if kind == 0:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 2:
            draw.line([x0, y0, x0 + w, y0 + h], fill=colour, width=int(rng.integers(1, 6)))
        else:   # a striped patch: texture with edges at one orientation
            step = int(rng.integers(3, 10))
            c2 = tuple(int(v) for v in rng.integers(0, 256, 3))
            for k in range(int(w // step) + 1):
                draw.rectangle([x0 + k * step, y0, x0 + k * step + step // 2, y0 + h],
                               fill=colour if k % 2 else c2)
    return img


def draw_polygon(draw_rgb: ImageDraw.ImageDraw, draw_label: ImageDraw.ImageDraw | None, polygon: np.ndarray,
                 colour: tuple[int, int, int], label: int, outline: tuple[int, int, int] | None = None) -> None:
    """Fill one polygon in the RGB image and, with the same pixels, in the label map."""
    xy = [tuple(p) for p in polygon.tolist()]
    draw_rgb.polygon(xy, fill=colour, outline=outline or colour)
    if draw_label is not None:
        draw_label.polygon(xy, fill=label, outline=label)


def paint_figure(draw_rgb: ImageDraw.ImageDraw, draw_label: ImageDraw.ImageDraw | None, fig: Figure,
                 slot: int) -> None:
    """Paint a figure (built with an appearance) far part first; label-map pixels get
    ``(slot + 1) * PART_STRIDE + part``."""
    for p in fig.order:
        colour = fig.appearance.parts[p]
        draw_polygon(draw_rgb, draw_label, fig.parts[p], colour, (slot + 1) * PART_STRIDE + p, _darker(colour, 0.7))
        if p == PART["head"]:
            for poly, c in fig.decor:
                draw_rgb.polygon([tuple(q) for q in poly.tolist()], fill=c)


def finish(img: Image.Image, rng: np.random.Generator, noise: float) -> Image.Image:
    """Camera-like finish: a slight blur (soft edges instead of aliased ones) and Gaussian sensor noise."""
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.9))))
    arr = np.asarray(img, dtype=np.float32)
    sigma = float(rng.uniform(0.3, 1.0)) * noise
    arr = arr + rng.standard_normal(arr.shape, dtype=np.float32) * sigma
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
