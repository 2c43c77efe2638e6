"""``poseharness bench nms`` (declared in method.yaml ``benches:``): PoseDet's per-image step (the pose NMS over
an image's candidates) in ms per image, and its decoding of one view.

Candidates are built from an annotation file (default: the tiny synthetic-coco val split; ``--gt`` any COCO-format
file, e.g. the real CrowdPose val), as a trained model's decoder would hand them to ``per_image``: every annotated
person (not crowd, ``num_keypoints`` > 0, a labelled joint) becomes ``--per-person`` candidates (default 20): its
ground-truth pose with all K joints filled in (an unlabelled joint near the person's centroid, fixed per person),
shifted as a whole and jittered per joint (``--jitter`` of the person's scale sqrt(max(joint-extent area, 32²)),
each candidate's jitter times a log-uniform factor in [0.5, 2]), with a score uniform in [0.05, 1] on every joint
(as ``decode`` writes it); optionally ``--background`` random low-score poses per image; at most the decoder's
``topk`` × levels candidates per image (the best-scoring ones; 500 × 2 at the tiny scale).

Each variant's ``per_image`` (default ``posedet``: OKS-NMS of PoseDet's form, threshold of the dataset's schema,
and ``kp_iou``: IoU-NMS 0.5 of the joint-extent boxes) runs ``--repeat`` times per image and its fastest run counts
(the machine may be shared: the fastest run is the least disturbed one); the table gives the mean, median, 95th
percentile and maximum over the images, with the candidates and the poses kept per image.

``decode`` row (``--decode-images``, 0: none): ``decode`` of one view on random outputs shaped as the model's at
the scale's inference input (``coarse``/``refine`` offsets N(0, 2²) stride units, ``cls`` logits N(-3, 2²): about
half the locations score above ``score_threshold`` 0.05, so the ``topk`` cap binds at levels of more than 1,000
locations).
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

#: The variants whose per-image step is timed by default: OKS-NMS (the paper's) and IoU-NMS (Table 5).
DEFAULT_VARIANTS = ("posedet", "kp_iou")


@dataclass
class NMSRow:
    step: str                  # "per_image" or "decode"
    setting: str               # e.g. "OKS-NMS 0.2 (posedet)"; decode: "tiny 256 px, 2 levels"
    variant: str
    images: int
    persons_per_image: float
    candidates_per_image: float
    kept_per_image: float
    mean_ms: float
    median_ms: float
    p95_ms: float
    max_ms: float


# ----------------------------------------------------------------------------------------------- workload

def image_persons(gt: dict, k: int) -> list[tuple[dict, np.ndarray]]:
    """(image entry, annotated persons' keypoints (P, K, 3)) per image of a COCO-format annotation dict, in the
    file's image order; annotated, as the harness's loader says it (``Sample.annotated``): not crowd, a
    ``num_keypoints`` field (when present) above 0 and at least one labelled joint (v > 0)."""
    by_image: dict[int, list] = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        if a.get("iscrowd", 0) or a["image_id"] not in by_image:
            continue
        kp = np.asarray(a["keypoints"], np.float64).reshape(k, 3)
        if (kp[:, 2] > 0).any() and a.get("num_keypoints", 1) > 0:
            by_image[a["image_id"]].append(kp)
    return [(im, np.stack(by_image[im["id"]]) if by_image[im["id"]] else np.zeros((0, k, 3)))
            for im in gt["images"]]


def candidates(rng: np.random.Generator, persons: np.ndarray, width: float, height: float, *, per_person: int,
               jitter: float, background: int, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """One image's candidates (N, K, 3) in image px (third column = the pose score) and scores (N,); see the
    module doc."""
    k = persons.shape[1]
    poses, scores = [], []
    for kp in persons:
        lab = kp[:, 2] > 0
        xy = kp[:, :2].copy()
        lo, hi = xy[lab].min(0), xy[lab].max(0)
        scale = math.sqrt(max(float(np.prod(hi - lo)), 32.0 ** 2))
        xy[~lab] = xy[lab].mean(0) + rng.normal(0.0, 0.15 * scale, (int((~lab).sum()), 2))
        factor = np.exp(rng.uniform(math.log(0.5), math.log(2.0), per_person))[:, None, None]
        shift = rng.normal(0.0, jitter * scale, (per_person, 1, 2)) * factor
        noise = rng.normal(0.0, jitter * scale, (per_person, k, 2)) * factor
        poses.append(xy[None] + shift + noise)
        scores.append(rng.uniform(0.05, 1.0, per_person))
    if background:
        centre = rng.uniform([0.0, 0.0], [width, height], (background, 1, 2))
        size = np.exp(rng.uniform(math.log(32.0), math.log(max(min(width, height), 33.0)), (background, 1, 1)))
        poses.append(centre + rng.normal(0.0, 0.25, (background, k, 2)) * size)
        scores.append(rng.uniform(0.05, 0.2, background))
    if not poses:
        return np.zeros((0, k, 3)), np.zeros(0)
    xy, s = np.concatenate(poses), np.concatenate(scores)
    if len(s) > cap:
        best = np.argsort(-s, kind="stable")[:cap]
        xy, s = xy[best], s[best]
    return np.concatenate([xy, np.broadcast_to(s[:, None, None], (len(s), k, 1))], -1), s


def random_outputs(gen: torch.Generator, shapes: list[tuple[int, int]], kk: int) -> dict[str, torch.Tensor]:
    """One view's outputs (``final_outputs`` names, no batch axis) shaped as the model's; see the module doc."""
    out = {}
    for l, (h, w) in enumerate(shapes):
        out[f"coarse@{l}"] = torch.randn(2 * kk, h, w, generator=gen) * 2.0
        out[f"refine@{l}"] = out[f"coarse@{l}"] + torch.randn(2 * kk, h, w, generator=gen) * 0.25
        out[f"cls@{l}"] = torch.randn(1, h, w, generator=gen) * 2.0 - 3.0
    return out


# ----------------------------------------------------------------------------------------------- bench

def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _row(step: str, setting: str, variant: str, seconds: list[float], persons: int, cands: int, kept: int
         ) -> NMSRow:
    ms = 1e3 * np.asarray(seconds, np.float64)
    n = max(len(ms), 1)
    return NMSRow(step=step, setting=setting, variant=variant, images=len(ms), persons_per_image=persons / n,
                  candidates_per_image=cands / n, kept_per_image=kept / n,
                  mean_ms=float(ms.mean()) if len(ms) else 0.0, median_ms=float(np.median(ms)) if len(ms) else 0.0,
                  p95_ms=float(np.percentile(ms, 95)) if len(ms) else 0.0, max_ms=float(ms.max()) if len(ms) else 0.0)


def nms_setting_label(module, cfg: dict) -> str:
    setting, _, _ = module.nms_settings(cfg)
    if setting.type == "none":
        return "no NMS"
    return f"{'IoU' if setting.type == 'iou' else 'OKS'}-NMS {setting.threshold:g}"


def bench_nms(gt: dict, schema: str, *, variants: tuple[str, ...] = DEFAULT_VARIANTS, scale: str = "tiny",
              images: int | None = None, per_person: int = 20, jitter: float = 0.05, background: int = 0,
              repeat: int = 3, seed: int = 0, decode_images: int = 20, progress: bool = False) -> list[NMSRow]:
    """Time PoseDet's per-image step of each variant on the candidates of ``gt``'s images (the first ``images``),
    and its decode of one view on ``decode_images`` random outputs; see the module doc."""
    from poseharness.methods import load_method
    from poseharness.schemas import get_schema

    from .assignment import num_points

    spec = load_method("posedet")
    module = spec.module
    k = get_schema(schema).num_keypoints
    entries = image_persons(gt, k)[:images]
    rows = []
    base = spec.variant_config(variants[0], scale)
    cap = int(base["decode"]["topk"]) * len(base["encoding"]["strides"])
    rng = np.random.default_rng(seed)
    sets = [candidates(rng, persons, im["width"], im["height"], per_person=per_person, jitter=jitter,
                       background=background, cap=cap) for im, persons in entries]
    n_persons = sum(len(p) for _, p in entries)
    n_cands = sum(len(s) for _, s in sets)
    for variant in variants:
        cfg = spec.variant_config(variant, scale)
        cfg["schema"] = schema
        seconds, kept = [], 0
        for i, (poses, scores) in enumerate(sets):
            t, (p, _) = _best(lambda: module.per_image([poses], [scores], [None], cfg), repeat)
            seconds.append(t)
            kept += len(p)
            if progress and (i + 1) % 500 == 0:
                print(f"  {variant}: {i + 1}/{len(sets)} images", flush=True)
        rows.append(_row("per_image", f"{nms_setting_label(module, cfg)}", variant, seconds, n_persons, n_cands,
                         kept))
    if decode_images > 0:
        cfg = dict(base, schema=schema)
        side = spec.scales[scale]["input"]
        w, h = (side, side) if isinstance(side, int) else side
        shapes = module.level_shapes(h, w, cfg["encoding"]["strides"])
        gen = torch.Generator().manual_seed(seed)
        seconds, cands = [], 0
        for _ in range(decode_images):
            outs = random_outputs(gen, shapes, num_points(schema))
            t, (p, _) = _best(lambda: module.decode(outs, cfg), repeat)
            seconds.append(t)
            cands += len(p)
        rows.append(_row("decode", f"{scale} {side} px, {len(shapes)} levels", variants[0], seconds, 0, cands, cands))
    return rows


def format_nms(rows: list[NMSRow]) -> str:
    head = (f"{'step':<9} {'variant':<10} {'setting':<24} {'images':>6} {'persons/img':>11} {'cand/img':>8} "
            f"{'kept/img':>8} {'mean ms':>8} {'median ms':>9} {'p95 ms':>8} {'max ms':>8}")
    lines = [head]
    for r in rows:
        persons = "-" if r.step == "decode" else f"{r.persons_per_image:.2f}"
        lines.append(f"{r.step:<9} {r.variant[:10]:<10} {r.setting[:24]:<24} {r.images:>6} {persons:>11} "
                     f"{r.candidates_per_image:>8.1f} {r.kept_per_image:>8.1f} {r.mean_ms:>8.3f} {r.median_ms:>9.3f} {r.p95_ms:>8.3f} "
                     f"{r.max_ms:>8.3f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- CLI

def register(verbs: argparse._SubParsersAction) -> None:
    from poseharness.argtypes import positive_int

    p = verbs.add_parser(
        "nms", help="time PoseDet's pose NMS per image (OKS and IoU) on jittered ground-truth candidates, and its "
                    "decode",
        description="Replicates every annotated person of an annotation file (default: the tiny synthetic-coco "
                    "val split, generated when missing; --gt: any COCO-format file, e.g. CrowdPose val) into "
                    "jittered candidates as a trained PoseDet would give them, and times PoseDet's per-image step "
                    "(OKS-NMS of PoseDet's form; IoU-NMS) per image, and its decode of one view on random outputs "
                    "at the scale's input. Milliseconds per image (mean, median, p95, max over the images), the "
                    "fastest of --repeat runs per image.")
    p.add_argument("--dataset", default=None, help="dataset manifest (default: synthetic-coco, unless --gt is given)")
    p.add_argument("--split", default="val")
    p.add_argument("--size", default=None, help="synthetic sets: the size (default with synthetic-coco: tiny)")
    p.add_argument("--seed", type=int, default=None, help="synthetic sets: the generator seed")
    p.add_argument("--gt", metavar="ANNOTATIONS.json", help="bench on this annotation file instead")
    p.add_argument("--protocol", help="with --gt: coco | crowdpose | ochuman (sets the keypoint schema)")
    p.add_argument("--images", type=positive_int, default=None, help="only the first N images (default: all)")
    p.add_argument("--per-person", type=positive_int, default=20,
                   help="candidates per annotated person (default 20)")
    p.add_argument("--jitter", type=float, default=0.05,
                   help="candidate shift and joint jitter, fraction of the person's scale (default 0.05)")
    p.add_argument("--background", type=int, default=0, help="random low-score candidates per image (default 0)")
    p.add_argument("--variant", action="append", dest="variants",
                   help=f"PoseDet variant whose per-image step is timed (repeatable; default: "
                        f"{', '.join(DEFAULT_VARIANTS)})")
    p.add_argument("--scale", default="tiny",
                   help="scale: the decoder's candidate cap (topk x levels) and the decode row's input (default tiny)")
    p.add_argument("--decode-images", type=int, default=20, help="random outputs decoded (default 20; 0: none)")
    p.add_argument("--candidate-seed", type=int, default=0, help="seed of the candidates and the random outputs")
    p.add_argument("--repeat", type=positive_int, default=3, help="runs per image; the fastest counts (default 3)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch.set_num_threads before timing (default: torch's default)")
    p.add_argument("--jobs", type=positive_int, default=None, help="image writers when generating (default: all cores)")
    p.add_argument("--out", metavar="BENCH.json", help="also write the rows here")
    p.set_defaults(func=cmd_bench_nms)


def cmd_bench_nms(args: argparse.Namespace) -> int:
    with torch_threads(args.threads):
        return _bench_nms(args)


def _bench_nms(args: argparse.Namespace) -> int:
    from poseharness.bench.commands import _ground_truth
    from poseharness.eval.evaluate import load_ground_truth
    from poseharness.eval.protocols import get_protocol

    if args.background < 0 or args.decode_images < 0 or not args.jitter >= 0:
        raise HarnessError("--background, --decode-images and --jitter must not be negative")
    if args.size is None and args.gt is None and args.dataset is None:
        args = argparse.Namespace(**{**vars(args), "size": "tiny"})
    gt_path, protocol, context = _ground_truth(args)
    proto = get_protocol(protocol)
    gt = load_ground_truth(gt_path, proto)
    variants = tuple(args.variants or DEFAULT_VARIANTS)
    threads = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    n = len(gt["images"]) if args.images is None else min(args.images, len(gt["images"]))
    print(f"PoseDet per-image step on {gt_path} ({n} of {len(gt['images'])} images, protocol {proto.name}, "
          f"schema {proto.schema.name}): {args.per_person} candidates per annotated person, jitter {args.jitter:g}, "
          f"{args.background} background per image; torch {torch.__version__}, {threads} thread"
          f"{'s' if threads != 1 else ''}, {os.cpu_count()} CPUs, load average {load:.1f}; ms per image, fastest of "
          f"{args.repeat} runs")
    rows = bench_nms(gt, proto.schema.name, variants=variants, scale=args.scale, images=args.images,
                     per_person=args.per_person, jitter=args.jitter, background=args.background, repeat=args.repeat,
                     seed=args.candidate_seed, decode_images=args.decode_images, progress=True)
    print(format_nms(rows))
    if args.out:
        write_json_atomic(args.out, {
            **context, "annotations": str(gt_path), "protocol": proto.name, "schema": proto.schema.name,
            "num_images": n, "per_person": args.per_person, "jitter": args.jitter, "background": args.background,
            "scale": args.scale, "variants": list(variants), "repeat": args.repeat, "seed": args.candidate_seed,
            "threads": threads, "cpu_count": os.cpu_count(), "load_average": load,
            "rows": [asdict(r) for r in rows]}, indent=2)
    return 0
