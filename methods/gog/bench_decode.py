"""``poseharness bench decode`` (declared in method.yaml ``benches:``): GOG's decoding per image at the paper's inference size, stage by stage.

Targets are real encodings: random COCO-like persons (:func:`random_persons`) in COCO-sized images, viewed as
at inference (long side 640, padded square, :func:`~poseharness.data.augment.bottom_up_affine`) and encoded by
the GOG method's ``encode`` (17 heatmaps and 2L guiding-offset maps of 160×160 at R = 4). For each image and
skeleton (19 and 44 limbs) the bench times:

- ``fast``: :func:`~poseharness.codecs.decode_peaks` (default method) and ``full``: the same with
  ``method="full"`` (every map upsampled); the two must give identical peaks (checked on every image);
- ``guides``: :func:`~poseharness.codecs.guides_for`; ``group``: :func:`.grouping.group`;
- ``loop``: :func:`loop_group`, a plain per-candidate Python-loop version of the same grouping (kept here, not in
  the library, to show what vectorising it buys); it must give the same poses (checked on every image).

Each stage is run ``repeat`` times per image and its fastest run counted (the machine is shared: the fastest
run is the least disturbed one); the table gives milliseconds per image, averaged over the images.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from poseharness.errors import HarnessError
from poseharness.io import write_json_atomic
from poseharness.threads import torch_threads

#: Persons per image (1..10) among images with persons, shaped like COCO val's (mean ~2.9).
PERSONS_PER_IMAGE = np.array([0.40, 0.20, 0.11, 0.08, 0.06, 0.05, 0.04, 0.03, 0.02, 0.01])
#: COCO-like image sizes (width, height) and how often they occur.
IMAGE_SIZES = ((640, 480), (640, 427), (480, 640), (640, 426), (500, 375))
IMAGE_SIZE_P = np.array([0.40, 0.25, 0.20, 0.10, 0.05])


# ----------------------------------------------------------------------------------------------- workload

def _rotate(v: np.ndarray, deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([v[0] * math.cos(a) - v[1] * math.sin(a), v[0] * math.sin(a) + v[1] * math.cos(a)])


def random_persons(rng: np.random.Generator, n: int, width: int, height: int,
                   label_rate: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` random COCO-17 persons in a ``width``×``height`` image: keypoints (n, 17, 3), boxes (n, 4) x, y, w, h
    and areas (n,), pixels.

    A stick figure with body proportions of an adult (units of standing height H, pelvis at the origin, y
    down), random limb angles (arms anywhere from hanging to raised, legs from standing to a stride), a random
    lean, a random facing (front: the person's left on the image's right; back: mirrored), H log-uniform in
    [0.15, 0.95] of the image height, placed anywhere with its pelvis in the image. Each keypoint is labelled
    (v = 2) with probability ``label_rate``; those off the image are unlabelled (v = 0, x = y = 0), as in COCO.
    The box envelops the labelled keypoints plus a margin; the area is 0.55 of it (a silhouette's share).
    """
    kps = np.zeros((n, 17, 3))
    boxes = np.zeros((n, 4))
    for p in range(n):
        h = math.exp(rng.uniform(math.log(0.15), math.log(0.95))) * height
        side = 1.0 if rng.random() < 0.75 else -1.0        # facing the camera or not
        pts = np.zeros((17, 2))
        hip, shoulder = np.array([0.06, 0.0]), np.array([0.115, -0.29])
        head = np.array([0.0, -0.40]) + rng.normal(0, 0.01, 2)
        pts[0] = head + [0.0, 0.02]                                             # nose
        pts[1], pts[2] = head + [0.02 * side, 0.0], head + [-0.02 * side, 0.0]  # eyes
        pts[3], pts[4] = head + [0.045 * side, 0.01], head + [-0.045 * side, 0.01]  # ears
        for s, (sh, el, wr) in ((1, (5, 7, 9)), (-1, (6, 8, 10))):
            pts[sh] = shoulder * [s * side, 1]
            up = rng.uniform(-30, 200) * s * side                               # 0: hanging, 180: raised
            pts[el] = pts[sh] + _rotate(np.array([0.0, 0.17]), up)
            pts[wr] = pts[el] + _rotate(np.array([0.0, 0.15]), up + rng.uniform(-10, 150) * s * side)
        for s, (hp, kn, an) in ((1, (11, 13, 15)), (-1, (12, 14, 16))):
            pts[hp] = hip * [s * side, 1]
            swing = rng.uniform(-30, 30)
            pts[kn] = pts[hp] + _rotate(np.array([0.0, 0.245]), swing)
            pts[an] = pts[kn] + _rotate(np.array([0.0, 0.245]), swing - rng.uniform(0, 60))
        lean = rng.uniform(-15, 15)
        pts = np.stack([_rotate(q, lean) for q in pts]) * h
        pts += [rng.uniform(0, width), rng.uniform(0, height)]
        inside = (pts[:, 0] >= 0) & (pts[:, 0] <= width - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= height - 1)
        labelled = inside & (rng.random(17) < label_rate)
        kps[p, labelled, :2] = pts[labelled]
        kps[p, labelled, 2] = 2
        if labelled.any():
            lo, hi = pts[labelled].min(0), pts[labelled].max(0)
            margin = 0.08 * h
            lo, hi = np.maximum(lo - margin, 0), np.minimum(hi + margin, [width, height])
            boxes[p] = [lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]
    areas = 0.55 * boxes[:, 2] * boxes[:, 3]
    return kps.astype(np.float32), boxes.astype(np.float32), areas.astype(np.float32)


def bench_images(n: int, seed: int):
    """``n`` COCO-like :class:`~poseharness.data.sample.Sample` (annotations only), reproducible from ``seed``."""
    from poseharness.data.sample import Sample

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        width, height = IMAGE_SIZES[rng.choice(len(IMAGE_SIZES), p=IMAGE_SIZE_P)]
        count = 1 + int(rng.choice(len(PERSONS_PER_IMAGE), p=PERSONS_PER_IMAGE))
        kps, boxes, areas = random_persons(rng, count, width, height)
        out.append(Sample(image_id=i + 1, file_name=f"{i + 1:012d}.jpg", width=width, height=height,
                          keypoints=kps, boxes=boxes, areas=areas, iscrowd=np.zeros(count, bool),
                          num_keypoints=(kps[..., 2] > 0).sum(1).astype(np.int64)))
    return out


# ----------------------------------------------------------------------------------------------- loop grouping

def loop_group(peaks, guides, skeleton, *, dist_max: float = 20.0, person_threshold: float = 0.06,
               min_len: float = 0.5, score_mode: str = "mean", peak_threshold: float = 0.0):
    """GOG's greedy grouping written as plain per-candidate Python loops (the rules of
    :func:`.grouping.group`, which documents them; same arguments, same result).

    Every limb type, start candidate and end candidate is visited one by one, on Python lists.
    """
    pk = np.asarray(peaks.detach().cpu() if hasattr(peaks, "detach") else peaks, dtype=np.float64).tolist()
    gd = np.asarray(guides.detach().cpu() if hasattr(guides, "detach") else guides, dtype=np.float64).tolist()
    pairs = [(int(a), int(b)) for a, b in skeleton]
    n_types = len(pk)
    k = len(pk[0]) if n_types else 0

    def valid(c):
        return c[2] > 0 and c[2] >= peak_threshold and all(math.isfinite(v) for v in c)

    # candidate limbs: (start, end, score) per limb type
    limbs = []
    for l, (a, b) in enumerate(pairs):
        found = []
        for i in range(k):
            src = pk[a][i]
            if not valid(src):
                continue
            gx, gy = src[0] + gd[l][i][0], src[1] + gd[l][i][1]
            best, best_d = -1, math.inf
            for j in range(k):
                dst = pk[b][j]
                if not valid(dst):
                    continue
                d = float(np.hypot(gx - dst[0], gy - dst[1]))
                if math.isnan(d):
                    best, best_d = -1, math.nan
                    break
                if d < best_d or (d == best_d and dst[2] > pk[b][best][2]):
                    best, best_d = j, d
            if best < 0 or not best_d < dist_max:
                continue
            end = pk[b][best]
            length = max(float(np.hypot(src[0] - end[0], src[1] - end[1])), min_len)
            found.append((i, best, src[2] * end[2] * float(np.exp(-best_d / length))))
        limbs.append(found)

    # greedy assembly
    member: list[list[int]] = []         # person -> candidate index per type (-1 = none)
    link: list[list[float]] = []         # person -> best limb score that wrote each slot (-1 = empty)
    owner = [[-1] * k for _ in range(n_types)]
    for l, (a, b) in enumerate(pairs):
        ordered = sorted(limbs[l], key=lambda item: -item[2])                 # stable: ties keep start order
        seen_ends = set()
        for f, t, s in ordered:
            if t in seen_ends:
                continue                                                        # best limb per end only
            seen_ends.add(t)
            pf, pt = owner[a][f], owner[b][t]
            if pf < 0 and pt < 0:
                row, score_row = [-1] * n_types, [-1.0] * n_types
                row[a], row[b] = f, t
                score_row[a] = score_row[b] = s
                member.append(row)
                link.append(score_row)
                owner[a][f] = owner[b][t] = len(member) - 1
                continue
            if pf == pt:
                p = pf
            elif pt < 0 or pf < 0:
                p, slot, cand = (pf, b, t) if pt < 0 else (pt, a, f)
                if not (s > link[p][a] or s > link[p][b]):
                    continue
                old = member[p][slot]
                if old >= 0:
                    owner[slot][old] = -1
                member[p][slot] = cand
                owner[slot][cand] = p
            else:
                if any(x >= 0 and y >= 0 for x, y in zip(member[pf], member[pt])):
                    continue
                p, gone = min(pf, pt), max(pf, pt)
                for typ in range(n_types):
                    if member[gone][typ] >= 0:
                        member[p][typ] = member[gone][typ]
                        link[p][typ] = link[gone][typ]
                        owner[typ][member[gone][typ]] = p
                member[gone] = [-1] * n_types
                link[gone] = [-1.0] * n_types
            link[p][a] = max(link[p][a], s)
            link[p][b] = max(link[p][b], s)

    persons = []
    for row in member:
        present = [typ for typ in range(n_types) if row[typ] >= 0]
        if not present:
            continue
        pose = [[0.0, 0.0, 0.0] for _ in range(n_types)]
        for typ in present:
            pose[typ] = list(pk[typ][row[typ]])
        total = sum(pose[typ][2] for typ in present)
        mean = total / len(present)
        if mean >= person_threshold:
            persons.append((mean if score_mode == "mean" else total / n_types, pose))
    persons.sort(key=lambda item: -item[0])                                   # stable: creation order on ties
    poses = np.array([pose for _, pose in persons], dtype=np.float32).reshape(-1, n_types, 3)
    return poses, np.array([score for score, _ in persons], dtype=np.float32)


# ----------------------------------------------------------------------------------------------- bench

@dataclass
class DecodeRow:
    limbs: int
    images: int
    keypoints_per_image: float
    candidates_per_image: float
    fast_ms: float
    full_ms: float
    guides_ms: float
    group_ms: float
    loop_group_ms: float
    peaks_identical: int
    poses_identical: int

    @property
    def decode_group_ms(self) -> float:
        return self.fast_ms + self.guides_ms + self.group_ms


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_decode(images: int = 48, seed: int = 0, repeat: int = 3, limb_sets: tuple[str, ...] = ("standard", "dense"),
                 scale: str = "paper", progress: bool = False) -> list[DecodeRow]:
    """Time GOG's decoding stages on ``images`` encoded COCO-like images for each skeleton; see the module doc."""
    from poseharness.codecs import decode_peaks, guides_for
    from poseharness.data.augment import bottom_up_affine, transform_sample
    from .grouping import group
    from poseharness.methods import load_method
    from poseharness.schemas import COCO17

    method = load_method("gog")
    module = method.module
    variant_of = {"standard": "ours", "dense": "limbs44"}
    samples = bench_images(images, seed)
    rows = []
    for limb_set in limb_sets:
        cfg = method.variant_config(variant_of[limb_set], scale)
        cfg["schema"] = COCO17.name
        side = method.scales[scale]["input"]
        stride = int(cfg["encoding"]["stride"])
        dec = cfg["decode"]
        limbs = module.skeleton(cfg)
        totals = dict(fast=0.0, full=0.0, guides=0.0, group=0.0, loop=0.0)
        same_peaks = same_poses = 0
        keypoints = candidates = 0
        for i, sample in enumerate(samples):
            view = transform_sample(sample, bottom_up_affine(sample.width, sample.height, side), side,
                                    counted=COCO17.counted)
            targets = module.encode(view, cfg)
            heat = torch.from_numpy(targets["heatmaps"])
            offsets = torch.from_numpy(targets["offsets"])
            keypoints += int((view.keypoints[module.encoded_persons(view, cfg["encoding"]["min_area"])][..., 2]
                              > 0).sum())

            def peaks_with(m):
                return lambda: decode_peaks(heat, stride, upsample=dec["upsample"], topk=dec["topk"],
                                            threshold=dec["threshold"], dark=dec["dark"], method=m)

            t, fast = _best(peaks_with("fast"), repeat)
            totals["fast"] += t
            t, full = _best(peaks_with("full"), repeat)
            totals["full"] += t
            same_peaks += int(torch.equal(fast, full))
            candidates += int((fast[..., 2] > 0).sum())
            t, guides = _best(lambda: guides_for(fast, offsets, limbs, stride), repeat)
            totals["guides"] += t
            kw = dict(dist_max=dec["dist_max"], person_threshold=dec["person_threshold"], score_mode=dec["score_mode"])
            t, (poses, scores) = _best(lambda: group(fast, guides, limbs, **kw), repeat)
            totals["group"] += t
            t, (loop_poses, loop_scores) = _best(lambda: loop_group(fast, guides, limbs, **kw), repeat)
            totals["loop"] += t
            same_poses += int(poses.shape == loop_poses.shape and np.allclose(poses, loop_poses, atol=1e-5)
                              and np.allclose(scores, loop_scores, atol=1e-6))
            if progress and (i + 1) % 10 == 0:
                print(f"  {len(limbs)} limbs: {i + 1}/{len(samples)} images", flush=True)
        n = max(len(samples), 1)
        rows.append(DecodeRow(limbs=len(limbs), images=len(samples), keypoints_per_image=keypoints / n,
                              candidates_per_image=candidates / n,
                              fast_ms=1e3 * totals["fast"] / n, full_ms=1e3 * totals["full"] / n,
                              guides_ms=1e3 * totals["guides"] / n, group_ms=1e3 * totals["group"] / n,
                              loop_group_ms=1e3 * totals["loop"] / n, peaks_identical=same_peaks,
                              poses_identical=same_poses))
    return rows


def format_decode(rows: list[DecodeRow]) -> str:
    head = (f"{'limbs':>5} {'images':>6} {'kp/img':>6} {'peaks/img':>9} {'fast':>7} {'full':>8} {'full/fast':>9} "
            f"{'guides':>7} {'group':>7} {'loop group':>10} {'loop/group':>10} {'fast+guides+group':>17} "
            f"{'same peaks':>10} {'same poses':>10}")
    lines = [head]
    for r in rows:
        lines.append(
            f"{r.limbs:>5} {r.images:>6} {r.keypoints_per_image:>6.1f} {r.candidates_per_image:>9.1f} "
            f"{r.fast_ms:>7.2f} {r.full_ms:>8.2f} {r.full_ms / max(r.fast_ms, 1e-9):>8.1f}x "
            f"{r.guides_ms:>7.2f} {r.group_ms:>7.2f} {r.loop_group_ms:>10.2f} "
            f"{r.loop_group_ms / max(r.group_ms, 1e-9):>9.1f}x {r.decode_group_ms:>17.2f} "
            f"{r.peaks_identical:>4}/{r.images:<5} {r.poses_identical:>4}/{r.images:<5}")
    return "\n".join(lines)


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "decode", help="time GOG's decoding per image (fast and full peaks, guides, grouping, loop grouping)",
        description="Encodes random COCO-like persons at the paper's inference size (long side 640, R = 4, "
                    "17 heatmaps) with GOG's encoder and times, per image, peak decoding by the fast and the "
                    "full path (checked identical), guide reading, grouping and a plain Python-loop grouping "
                    "(checked identical), for 19 and 44 limbs. Milliseconds per image, fastest of --repeat runs.")
    p.add_argument("--images", type=int, default=48, help="images to encode and decode (default 48)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random persons")
    p.add_argument("--repeat", type=int, default=3, help="runs per stage and image; the fastest counts")
    p.add_argument("--limbs", choices=("19", "44", "both"), default="both")
    from poseharness.argtypes import positive_int
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch.set_num_threads before timing (default: torch's default)")
    p.add_argument("--out", metavar="BENCH.json", help="also write the rows here")
    p.set_defaults(func=cmd_bench_decode)


def cmd_bench_decode(args: argparse.Namespace) -> int:
    with torch_threads(args.threads):
        return _bench_decode(args)


def _bench_decode(args: argparse.Namespace) -> int:
    if args.images < 1 or args.repeat < 1:
        raise HarnessError("--images and --repeat must be positive")
    limb_sets = {"19": ("standard",), "44": ("dense",), "both": ("standard", "dense")}[args.limbs]
    threads = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"GOG decoding, {args.images} COCO-like images at long side 640 (160x160 maps, R = 4, 17 heatmaps); "
          f"torch {torch.__version__}, {threads} thread{'s' if threads != 1 else ''} "
          f"({'torch default' if args.threads is None else 'set by --threads'}), {os.cpu_count()} CPUs, "
          f"load average {load:.1f}; ms per image, fastest of {args.repeat} runs")
    rows = bench_decode(args.images, args.seed, args.repeat, limb_sets, progress=True)
    print(format_decode(rows))
    bad = [r for r in rows if r.peaks_identical != r.images or r.poses_identical != r.images]
    if bad:
        print("DISAGREEMENT: the fast and full peaks, or the loop and vectorised poses, differ on some images")
    if args.out:
        write_json_atomic(args.out, {"images": args.images, "seed": args.seed, "repeat": args.repeat,
                                     "threads": threads, "cpu_count": os.cpu_count(), "load_average": load,
                                     "rows": [dict(asdict(r), decode_group_ms=r.decode_group_ms) for r in rows]},
                          indent=2)
    return 1 if bad else 0
