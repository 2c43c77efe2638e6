"""``poseharness bench crowd``: model time per image and per person against the number of persons in an image.

A top-down method sees one crop per person box, so its model time per image grows with the crowd; a bottom-up
(or single-stage) method sees the whole image once, so its model time per image hardly moves. This bench
measures both on the same synthetic images.

For each count n of ``--persons`` (default 1 2 4 8 16) a small synthetic set is generated, or reused when it is
there already (:func:`crowd_manifest`: the ``--dataset`` manifest, synthetic-coco by default, with a ``val`` split
of ``--images`` images, fixed seed, and generator settings changed so that every image holds n persons small
enough for 16 to fit: ``persons_per_image [n, n]``, ``person_height`` :data:`PERSON_HEIGHT`, no persons cut by the
frame, no occluders, no crowd regions, keypoints on every person). Its manifest is written beside the data
(``<data>/<name>/<name>.yaml``), so the other verbs can read the same set.

Each ``--method`` (default: :data:`DEFAULT_METHODS`, a top-down and a bottom-up one) is timed with the pieces of
the real inference path (:mod:`poseharness.pipeline`): the split's views (:func:`poseharness.views.image_views`,
ground-truth boxes for top-down methods), their network inputs (:class:`~poseharness.pipeline.ViewImages`, read
and warped once, before any timing), batches of one input size (:func:`~poseharness.pipeline.view_batches`,
``--batch`` views) and the model in eval mode under ``torch.inference_mode``
(:class:`~poseharness.pipeline.ModelRunner`, which also clocks the forward passes). The model is built randomly
initialised from the method's resolved config at ``--scale`` (default tiny; the time of a forward pass does not
depend on the weights), or loaded from ``--checkpoint``. One batch warms up; the split then goes through the
model ``--repeat`` times and the median pass counts. With ``--decode`` the method's decoding and per-image step
(:class:`~poseharness.pipeline.Decoder`) also run, once, on the last pass's outputs — with random weights their
time says little (the decoders' work depends on the peaks a trained model gives).

Per (method, n) a row: views per image (top-down: the persons; bottom-up: 1), model ms per image, per view and per
person, the input preparation's ms per image (read + warp, once) and optionally decode ms per image. One compute
thread by default (``--threads``). ``--out`` writes the rows with the hardware, torch version, threads and device;
written to ``<results>/bench/crowd.json`` (the workflow's ``bench_crowd`` rule), the report draws them
(:func:`poseharness.report.plots.crowd_figure`).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import HarnessError
from ..io import write_json_atomic

#: A top-down and a bottom-up method, as the issue asks.
DEFAULT_METHODS = ("simple_baseline", "gog")
DEFAULT_PERSONS = (1, 2, 4, 8, 16)
#: Standing height / image height, log-uniform: 16 persons of this size fit in a 256-384 px image with
#: overlaps but hardly ever one hidden whole (a hidden person is not annotated and gets no crop).
PERSON_HEIGHT = (0.2, 0.4)
#: Generator settings of the bench sets beside persons_per_image (the rest is the base manifest's).
GENERATOR = {"person_height": list(PERSON_HEIGHT), "overlap": "scatter", "outside_rate": 0.0,
             "occluder_rate": 0.0, "crowd_region_rate": 0.0, "min_keypoint_area": 0.0}
SPLIT = "val"


# ------------------------------------------------------------------------------------------------- data

def crowd_manifest(base: str, persons: int, images: int):
    """The manifest of the bench set with ``persons`` per image and ``images`` val images, derived from the
    synthetic manifest ``base`` (a name or path) and written to ``<data>/<name>/<name>.yaml``. Returns
    ``(manifest, size)``."""
    from .. import paths
    from ..contract import resolve_manifest
    from ..data.manifest import parse_manifest

    source = resolve_manifest(base)
    if not source.synthetic:
        raise HarnessError(f"{source.source_path}: dataset {source.name!r} is not synthetic; bench crowd "
                           f"generates its images")
    if SPLIT not in source.splits:
        raise HarnessError(f"{source.source_path}: dataset {source.name!r} has no split {SPLIT!r}")
    raw = copy.deepcopy(source.raw)
    name = f"{source.name}-persons{persons}"
    size = f"bench{images}"
    raw.update(name=name, description=f"{source.name} with {persons} person(s) per image (poseharness bench crowd)",
               default_size=size, sizes={size: {SPLIT: images}}, splits={SPLIT: raw["splits"][SPLIT]})
    raw["generator"] = {**raw.get("generator", {}), **GENERATOR, "persons_per_image": [persons, persons]}
    path = paths.data_dir() / name / f"{name}.yaml"
    manifest = parse_manifest(raw, path)
    text = yaml.safe_dump(raw, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        from ..io import write_text_atomic

        write_text_atomic(path, text)
    return manifest, size


def prepare_sets(base: str, persons: list[int], images: int, seed: int | None, jobs: int,
                 log=print) -> dict[int, tuple]:
    """n -> (manifest, size) of each bench set, generated when missing (reused, after the generator's check of
    its files, when there)."""
    from ..data import synthetic

    sets = {}
    for n in persons:
        manifest, size = crowd_manifest(base, n, images)
        summary = synthetic.generate(manifest, size=size, seed=seed, jobs=jobs, progress=False)
        if summary["status"] == "generated":
            log(f"generated {manifest.name} ({images} images, {n} per image) in {summary['seconds']:.1f} s "
                f"into {summary['root']}")
        sets[n] = (manifest, size)
    return sets


# ----------------------------------------------------------------------------------------------- models

class Model:
    """One method's model to time: spec, module, resolved config (with a variant's decode settings), the
    network in eval mode on ``device``, and where its weights came from."""

    def __init__(self, spec, module, cfg: dict, net: torch.nn.Module, weights: str, device: torch.device):
        from ..config import input_sizes
        from ..contract import view_of

        self.spec, self.module, self.cfg, self.net, self.weights, self.device = spec, module, cfg, net, weights, device
        self.view = view_of(spec)
        self.input = input_sizes(cfg)[1]


def random_model(method: str, scale: str, variant: str | None, manifest, device: torch.device) -> Model:
    """``method``'s model at ``scale``, built from its resolved training config (the training of ``variant``;
    default: its first variant of a trainable training), seeded with 0, untrained."""
    from ..config import training_config
    from ..contract import method_module, resolve_method

    spec = resolve_method(method)
    module = method_module(spec)
    if variant is None:
        variant = next((v for v, e in spec.variants.items()
                        if not spec.trainings.get(e["training"], {}).get("oracle_only")), None)
        if variant is None:
            raise HarnessError(f"{spec.source}: method {spec.name!r} has no variant of a trainable training")
    training = spec.entry("variants", variant)["training"]
    cfg, _ = training_config(spec, training, scale, manifest)
    cfg["decode"] = spec.decode_settings(variant)
    cfg["variant"] = variant
    torch.manual_seed(0)
    net = module.build_model(cfg).to(device).eval()
    return Model(spec, module, cfg, net, "random-init", device)


def checkpoint_model(path: str, variant: str | None, manifest, device: torch.device) -> Model:
    """A trained checkpoint's model, decoded by ``variant`` (default: the first variant of its training)."""
    from .. import checkpoint as ckpt
    from ..config import checkpoint_variant_config
    from ..contract import method_module
    from ..predict import checkpoint_method

    path = Path(path)
    state = ckpt.load_checkpoint(path)
    spec = checkpoint_method(state, path)
    module = method_module(spec)
    if variant is None:
        variant = next((v for v, e in spec.variants.items() if e["training"] == state["training"]), None)
        if variant is None:
            raise HarnessError(f"{spec.source}: no variant decodes training {state['training']!r} of {path}")
    cfg = checkpoint_variant_config(spec, variant, state, path)
    if cfg["schema"] != manifest.schema.name:
        raise HarnessError(f"{path}: field config.schema: the model predicts {cfg['schema']!r} keypoints but the "
                           f"bench images have {manifest.schema.name!r}")
    net = module.build_model(state["config"])
    ckpt.load_model_state(net, state, path)
    return Model(spec, module, cfg, net.to(device).eval(), str(path), device)


# ---------------------------------------------------------------------------------------------- timing

def time_model(model: Model, manifest, size: str, seed: int | None, *, batch: int, repeat: int,
               decode: bool) -> dict:
    """One row: ``model`` over the set's val split with the real pipeline's views, inputs and batches (the
    module docstring)."""
    from ..contract import final_outputs_of
    from ..data.loader import load_samples
    from ..pipeline import Decoder, ModelRunner, ViewImages, view_batches
    from ..views import ground_truth_boxes, image_views

    samples = load_samples(manifest, SPLIT, size, seed, images=True, masks=False)
    n = len(samples)
    if n == 0:
        raise HarnessError(f"{manifest.annotation_path(SPLIT, size, seed)}: no images")
    persons = sum(len(ground_truth_boxes(samples.record(i))[2]) for i in range(n))
    entries = [(i, v) for i in range(n) for v in image_views(samples.record(i), model.view, model.input)]
    if not entries:
        raise HarnessError(f"{manifest.annotation_path(SPLIT, size, seed)}: no views (no annotated person)")
    t0 = time.perf_counter()
    images = ViewImages(samples, entries)
    batches = [torch.stack([images[j]["image"] for j in idx]) for idx in view_batches(entries, batch)]
    t_inputs = time.perf_counter() - t0

    runner = ModelRunner(model.net, model.device, final_outputs_of(model.module), model.cfg)
    passes = []
    with torch.inference_mode():
        runner(batches[0])                                   # warm-up
        for _ in range(repeat):
            runner.seconds = 0.0
            outputs = []
            for x in batches:
                outputs.extend(runner(x))
            passes.append(runner.seconds)
        t_decode = None
        if decode:
            decoder = Decoder(model.module, model.cfg, model.view)
            ends = np.searchsorted([i for i, _ in entries], np.arange(n), side="right")
            t0 = time.perf_counter()
            start = 0
            for end in ends:
                decoder.image(outputs[start:end], [v for _, v in entries[start:end]])
                start = end
            t_decode = time.perf_counter() - t0
    seconds = statistics.median(passes)
    side = model.input
    return {
        "method": model.spec.name, "view": model.view, "paradigm": model.spec.paradigm,
        "scale": model.cfg.get("scale_name"), "variant": model.cfg.get("variant"), "weights": model.weights,
        "input": side if isinstance(side, int) else list(side),
        "dataset": manifest.name, "images": n, "persons_setting": None,
        "persons_per_image": persons / n, "views": len(entries), "views_per_image": len(entries) / n,
        "batch": batch, "repeat": repeat, "pass_seconds": passes,
        "model_ms_per_image": 1e3 * seconds / n,
        "model_ms_per_view": 1e3 * seconds / len(entries),
        "model_ms_per_person": 1e3 * seconds / persons if persons else None,
        "inputs_ms_per_image": 1e3 * t_inputs / n,
        "decode_ms_per_image": None if t_decode is None else 1e3 * t_decode / n,
    }


def bench_crowd(models: list[Model], sets: dict[int, tuple], seed: int | None, *, batch: int, repeat: int,
                decode: bool, log=print) -> list[dict]:
    """A row per (model, persons per image), the counts in increasing order."""
    rows = []
    for model in models:
        for n in sorted(sets):
            manifest, size = sets[n]
            row = time_model(model, manifest, size, seed, batch=batch, repeat=repeat, decode=decode)
            row["persons_setting"] = n
            rows.append(row)
            if abs(row["persons_per_image"] - n) > 1e-9:
                log(f"note: {manifest.name}: {row['persons_per_image']:.2f} annotated persons per image, not "
                    f"{n} (persons hidden whole by others are not annotated)")
    return rows


def format_crowd(rows: list[dict]) -> str:
    lines = [f"{'method':<16} {'view':<9} {'persons':>7} {'views/img':>9} {'model ms/img':>12} {'ms/view':>8} "
             f"{'ms/person':>9} {'inputs ms/img':>13} {'decode ms/img':>13}"]
    for r in rows:
        opt = (lambda v: "-" if v is None else f"{v:.2f}")
        lines.append(f"{r['method']:<16} {r['view']:<9} {r['persons_per_image']:>7.2f} {r['views_per_image']:>9.2f} "
                     f"{r['model_ms_per_image']:>12.2f} {r['model_ms_per_view']:>8.2f} "
                     f"{opt(r['model_ms_per_person']):>9} {r['inputs_ms_per_image']:>13.2f} "
                     f"{opt(r['decode_ms_per_image']):>13}")
    return "\n".join(lines)


def environment(device: torch.device) -> dict:
    """What the timings ran on: hardware (CPU model, cores, GPU), torch version, threads, device."""
    from ..provenance import hardware, hardware_summary, package_versions

    hw = hardware()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"hardware": hw, "hardware_summary": hardware_summary(hw), "torch": torch.__version__,
            "versions": package_versions(), "threads": torch.get_num_threads(), "device": name,
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


# ---------------------------------------------------------------------------------------------------- CLI

def register(verbs: argparse._SubParsersAction) -> None:
    from ..argtypes import positive_int

    p = verbs.add_parser(
        "crowd", help="model time per image and per person against persons per image (top-down vs bottom-up)",
        description="For each persons-per-image count, generates (or reuses) a small synthetic set whose every "
                    "image holds that many persons, and times each method's model over its views with the "
                    "predictor's pipeline (top-down: one crop per person; bottom-up: the whole image): views "
                    "per image, model ms per image / view / person, median of --repeat passes after one "
                    "warm-up batch. Models are randomly initialised at --scale unless --checkpoint is given.")
    p.add_argument("--persons", type=positive_int, nargs="+", default=list(DEFAULT_PERSONS), metavar="N",
                   help=f"persons per image (default {' '.join(map(str, DEFAULT_PERSONS))}; at most 20)")
    p.add_argument("--images", type=positive_int, default=16, help="images per set (default 16)")
    p.add_argument("--method", action="append", dest="methods", metavar="METHOD",
                   help=f"repeatable; default {' and '.join(DEFAULT_METHODS)}")
    p.add_argument("--checkpoint", action="append", dest="checkpoints", metavar="CKPT",
                   help="repeatable: time these trained models (their methods) instead of untrained ones")
    p.add_argument("--variant", default=None,
                   help="decode settings (with --decode) and which training's model (default: the first variant)")
    p.add_argument("--scale", default="tiny", help="untrained models: the method's scale (default tiny)")
    p.add_argument("--dataset", default="synthetic-coco", help="the synthetic manifest the sets derive from")
    p.add_argument("--seed", type=int, default=None, help="generator seed (default: the manifest's)")
    p.add_argument("--batch", type=positive_int, default=8, help="views per forward pass (default 8)")
    p.add_argument("--repeat", type=positive_int, default=3, help="timed passes; the median counts (default 3)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch compute threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:N | auto")
    p.add_argument("--decode", action="store_true", help="also time decoding + the per-image step (once)")
    p.add_argument("--jobs", type=positive_int, default=None, help="image writers when generating (default: all "
                                                                   "cores)")
    p.add_argument("--out", metavar="CROWD.json", help="also write the rows and the environment here")
    p.set_defaults(func=cmd_bench_crowd)


def cmd_bench_crowd(args: argparse.Namespace) -> int:
    from ..contract import resolve_manifest
    from ..device import Distributed, pick_device
    from ..threads import torch_threads

    if max(args.persons) > 20:
        raise HarnessError(f"--persons: at most 20 per image (the generator's limit), got {max(args.persons)}")
    if args.checkpoints and args.methods:
        raise HarnessError("give --method or --checkpoint, not both (a checkpoint names its method)")
    persons = sorted(set(args.persons))
    device = pick_device(args.device, Distributed())
    base = resolve_manifest(args.dataset)
    with torch_threads(args.threads):
        sets = prepare_sets(args.dataset, persons, args.images, args.seed, args.jobs or os.cpu_count() or 1)
        manifest = sets[persons[0]][0]
        if args.checkpoints:
            models = [checkpoint_model(c, args.variant, manifest, device) for c in args.checkpoints]
        else:
            models = [random_model(m, args.scale, args.variant, manifest, device)
                      for m in (args.methods or DEFAULT_METHODS)]
        env = environment(device)
        print(f"bench crowd: {', '.join(f'{m.spec.name} ({m.view}, {m.weights})' for m in models)} on "
              f"{base.name}-persons{{{','.join(map(str, persons))}}}, {args.images} images each; "
              f"{env['device']}, torch {env['torch']}, {env['threads']} thread{'s' * (env['threads'] != 1)}, "
              f"{env['hardware_summary']}; median of {args.repeat} passes, batch {args.batch}")
        rows = bench_crowd(models, sets, args.seed, batch=args.batch, repeat=args.repeat, decode=args.decode)
    print(format_crowd(rows))
    print("model ms: forward passes only (eval mode, inference_mode); inputs: reading + warping the views, once")
    if args.out:
        write_json_atomic(args.out, {
            "bench": "crowd", "dataset": base.name, "images": args.images,
            "seed": base.seed if args.seed is None else args.seed, "persons": persons, "generator": GENERATOR,
            "batch": args.batch, "repeat": args.repeat, "decode": args.decode, **env, "rows": rows}, indent=2)
        print(f"crowd: {args.out}")
    return 0
