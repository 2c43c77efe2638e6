"""How fast a method trains and infers at each scale, and how much memory it takes.

For each scale, a fresh process (so its peak memory is that setting's alone) builds the model of the resolved
training config, encodes one batch from the dataset's train split with the loader's augmentation and the method's
``encode`` (timed: data images/s of one process) and collates it as the trainer does (the method's ``collate`` hook
if it has one), then times optimiser steps on that batch with the trainer's own step (the method's ``train_step``
hook if it has one, else :func:`poseharness.train.train_step`: forward, loss, backward, Adam; AMP on CUDA; the
parameters a training's ``init: freeze`` names frozen, from fresh weights), and the model alone at inference
(eval mode, ``inference_mode``, the scale's inference input). Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` for training and for inference; on the CPU the process's maximum resident set
size (``resource.getrusage``), which covers the whole setting.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import sys
import time
from dataclasses import asdict, dataclass

import torch

#: Images per step on the CPU for the paper setting unless asked otherwise: Hourglass-104 at 512 px with the
#: paper's batch of 32 needs far more memory than a laptop has.
CPU_PAPER_BATCH = 2


@dataclass
class BenchRow:
    scale: str
    device: str
    amp: bool
    batch: int
    train_input: int
    input: int
    parameters: int
    steps: int
    steps_per_s: float
    train_images_per_s: float
    data_images_per_s: float
    infer_batch: int
    infer_images_per_s: float
    peak_train_mib: float | None        # CUDA: max allocated while training; CPU: None (see peak_rss_mib)
    peak_infer_mib: float | None
    peak_rss_mib: float                 # the process's maximum resident set size
    loss: float


def _step(model, module, hooks, data: dict, cfg: dict, objects, use_amp: bool, grad_clip, dev: torch.device):
    """One optimiser step as the trainer takes it: the method's ``train_step`` hook, else the default step."""
    from ..train import optimizer_step, train_step

    def step() -> torch.Tensor:
        if hooks.step is None:
            return train_step(model, module, data, cfg, objects.optimizer, objects.scheduler, objects.scaler,
                              use_amp, grad_clip)[2]
        with torch.autocast(dev.type, dtype=torch.float16, enabled=use_amp):
            _, terms = hooks.step(model, data, cfg, progress=0.0)
        loss = sum(v.float() for v in terms.values())
        optimizer_step(loss, objects, grad_clip)
        return loss
    return step


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench_scale(method: str, training: str, scale: str, dataset: str, *, size: str | None, data_seed: int | None,
                steps: int, batch: int | None, device: str, amp: bool, infer_batch: int, infer_iters: int,
                warmup: int = 1) -> dict:
    """Run in a fresh process: one scale's figures as a :class:`BenchRow` dict."""
    from ..config import input_sizes, training_config
    from ..contract import MethodEncoder, method_module, resolve_manifest, resolve_method, view_of
    from ..data.loader import PoseDataset, collate
    from ..device import Distributed, pick_device
    from .. import checkpoint as ckpt
    from ..methods import init_entry
    from ..train import LRSchedule, MethodHooks, freeze, to_device

    spec = resolve_method(method)
    module = method_module(spec)
    manifest = resolve_manifest(dataset)
    cfg, settings = training_config(spec, training, scale, manifest, size=size, data_seed=data_seed)
    dev = pick_device(device, Distributed())
    use_amp = amp and dev.type == "cuda"
    if batch is None:
        batch = settings.batch if (dev.type == "cuda" or scale != "paper") else min(settings.batch, CPU_PAPER_BATCH)
    train_input, side = input_sizes(cfg)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    ds = PoseDataset(manifest, "train", input_size=train_input, view=view_of(spec),
                     augment=settings.augment_config(), encode=MethodEncoder(spec, cfg), size=size, seed=data_seed,
                     max_persons=settings.max_persons)
    t0 = time.perf_counter()
    items = [ds[i % len(ds)] for i in range(batch)]
    data_rate = batch / (time.perf_counter() - t0)
    hooks = MethodHooks.of(spec, module)
    data = to_device(hooks.collate(items), dev, nested=hooks.collate is not collate)

    torch.manual_seed(0)
    model = module.build_model(cfg).to(dev).train()
    init = init_entry(spec, training)
    frozen = freeze(model, tuple(init["freeze"]), f"{spec.source}: field trainings.{training}.init.freeze") \
        if init else set()
    optimizer = torch.optim.Adam([p for n, p in model.named_parameters() if n not in frozen], lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule(settings, warmup + steps))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step = _step(model, module, hooks, data, cfg, ckpt.TrainingObjects(model, optimizer, scheduler, scaler),
                 use_amp, settings.grad_clip, dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(warmup):
        step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _sync(dev)
    train_s = time.perf_counter() - t0
    peak_train = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None

    del optimizer, scheduler, data, items
    model.eval()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    x = torch.randn(infer_batch, 3, side, side, device=dev)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.float16, enabled=use_amp):
        for _ in range(warmup):
            model(x)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(infer_iters):
            model(x)
        _sync(dev)
        infer_s = time.perf_counter() - t0
    peak_infer = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss        # KiB on Linux
    rss = rss_kib / 1024 if sys.platform != "darwin" else rss_kib / 2**20
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return asdict(BenchRow(
        scale=scale, device=name, amp=use_amp, batch=batch, train_input=train_input, input=side,
        parameters=sum(p.numel() for p in model.parameters()), steps=steps, steps_per_s=steps / train_s,
        train_images_per_s=steps * batch / train_s, data_images_per_s=data_rate, infer_batch=infer_batch,
        infer_images_per_s=infer_iters * infer_batch / infer_s, peak_train_mib=peak_train,
        peak_infer_mib=peak_infer, peak_rss_mib=rss, loss=float(loss.detach())))


def bench_train(method: str, training: str, scales: list[str], dataset: str, *, size: str | None,
                data_seed: int | None, steps: dict[str, int], batch: dict[str, int | None], device: str, amp: bool,
                infer_batch: int, infer_iters: dict[str, int]) -> list[dict]:
    """Each scale in its own spawned process, one after the other (never two at once: they would share cores)."""
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for scale in scales:
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            rows.append(pool.submit(
                bench_scale, method, training, scale, dataset, size=size, data_seed=data_seed, steps=steps[scale],
                batch=batch.get(scale), device=device, amp=amp, infer_batch=infer_batch,
                infer_iters=infer_iters[scale]).result())
    return rows


def format_bench(rows: list[dict]) -> str:
    head = (f"{'scale':<6} {'device':<22} {'amp':<4} {'params':>8} {'batch':>5} {'input':>9} {'steps/s':>8} "
            f"{'img/s':>7} {'data img/s':>10} {'infer img/s':>11} {'peak train':>11} {'peak infer':>11} "
            f"{'max RSS':>9}")
    lines = [head]
    for r in rows:
        mib = (lambda v: "-" if v is None else f"{v:,.0f} MiB")
        lines.append(
            f"{r['scale']:<6} {r['device'][:22]:<22} {'yes' if r['amp'] else 'no':<4} "
            f"{r['parameters'] / 1e6:>7.2f}M {r['batch']:>5} {r['train_input']:>4}/{r['input']:<4} "
            f"{r['steps_per_s']:>8.3f} {r['train_images_per_s']:>7.2f} {r['data_images_per_s']:>10.1f} "
            f"{r['infer_images_per_s']:>11.2f} {mib(r['peak_train_mib']):>11} {mib(r['peak_infer_mib']):>11} "
            f"{mib(r['peak_rss_mib']):>9}")
    return "\n".join(lines)


def register(verbs: argparse._SubParsersAction) -> None:
    """Add ``bench train`` to the ``bench`` sub-verbs."""
    p = verbs.add_parser(
        "train", help="training steps/s, inference images/s and peak memory of a method at each scale",
        description="For each scale, in a fresh process: encode one batch of the train split, time optimiser "
                    "steps on it with the trainer's step (AMP on CUDA), time the model alone at inference, and "
                    "report peak memory. The synthetic dataset is generated first when its files are missing.")
    p.add_argument("--method", default="gog", help="method name or directory (default gog)")
    p.add_argument("--training", default=None, help="default: the spec's first training")
    p.add_argument("--scale", action="append", dest="scales", help="repeatable; default: tiny and paper")
    p.add_argument("--dataset", default="synthetic-coco", help="where the batch comes from (its train split)")
    p.add_argument("--size", default="tiny", help="synthetic sets: which size (default tiny: quick to generate)")
    p.add_argument("--data-seed", type=int, help="synthetic sets: the generator seed")
    p.add_argument("--steps", type=int, default=5, help="timed steps of the tiny (non-paper) scales (default 5)")
    p.add_argument("--paper-steps", type=int, default=2, help="timed steps of the paper scale (default 2)")
    p.add_argument("--batch", type=int, help="images per step at every scale (default: the spec's)")
    p.add_argument("--paper-batch", type=int,
                   help=f"images per step at the paper scale (default: the spec's on CUDA, {CPU_PAPER_BATCH} on "
                        f"the CPU)")
    p.add_argument("--infer-batch", type=int, default=1, help="images per inference pass (default 1)")
    p.add_argument("--infer-iters", type=int, default=10, help="timed inference passes (paper on CPU: 2)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available) | cpu | cuda | cuda:N")
    p.add_argument("--no-amp", action="store_true", help="on CUDA, float32 instead of AMP")
    p.add_argument("--out", metavar="BENCH.json", help="also write the rows here")
    p.set_defaults(func=cmd_bench_train)


def cmd_bench_train(args: argparse.Namespace) -> int:
    import os

    from ..contract import resolve_manifest, resolve_method
    from ..io import write_json_atomic

    spec = resolve_method(args.method)
    training = args.training or next(t for t, v in spec.trainings.items() if not v.get("oracle_only"))
    scales = args.scales or [s for s in ("tiny", "paper") if s in spec.scales]
    manifest = resolve_manifest(args.dataset)
    if manifest.synthetic and not manifest.annotation_path("train", args.size, args.data_seed).exists():
        from ..data import synthetic

        print(f"generating {manifest.name} ({manifest.resolve_size(args.size)}) into "
              f"{manifest.root(args.size, args.data_seed)}")
        synthetic.generate(manifest, size=args.size, seed=args.data_seed, jobs=os.cpu_count(), progress=False)
    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    steps = {s: args.paper_steps if s == "paper" else args.steps for s in scales}
    iters = {s: (2 if s == "paper" and not cuda else args.infer_iters) for s in scales}
    batch = {s: (args.paper_batch if s == "paper" and args.paper_batch else args.batch) for s in scales}
    print(f"bench train: {spec.name}/{training} on {manifest.name}, scales {', '.join(scales)}")
    rows = bench_train(args.method, training, scales, args.dataset, size=args.size, data_seed=args.data_seed,
                       steps=steps, batch=batch, device=args.device, amp=not args.no_amp,
                       infer_batch=args.infer_batch, infer_iters=iters)
    print(format_bench(rows))
    print("steps/s and img/s: optimiser steps on one encoded batch (forward, loss, backward, Adam); data img/s: "
          "one loader process; infer img/s: the model alone at the inference input; max RSS: the whole process")
    if args.out:
        write_json_atomic(args.out, {"method": spec.name, "training": training, "dataset": manifest.name,
                                     "cpu_count": os.cpu_count(), "rows": rows}, indent=2)
    return 0
