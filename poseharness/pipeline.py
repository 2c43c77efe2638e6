"""The inference-and-scoring pipeline that the oracle and the predictor share.

    views (poseharness.views) → outputs per view → flip merge → decode → original image → per-image step
    → finish

- **outputs**: the model's (:class:`ModelRunner`: batched forward in eval mode, AMP on CUDA, optionally with the
  mirrored batch fused by the method's ``merge_flip``), or for the oracle the method's ``encode`` of the ground
  truth in that view (:func:`encoded_outputs`);
- **decode**: ``module.decode(outputs, cfg)`` in the view's input pixels, or ``decode(outputs, cfg, view=view)``
  when the method's decode takes a ``view`` keyword (:class:`Decoder`);
- **per-image step**, once all views of an image are decoded: the method's ``per_image(poses, scores, views,
  cfg) -> (poses, scores)`` when it has one, else for top-down methods :func:`rescore_and_nms` (box-score
  rescoring and OKS-NMS, as SimpleBaseline / HRNet), else the poses as decoded;
- :func:`finish`: write the results file, evaluate it with the dataset's protocol, write the run record.

Decode sees one dict of named maps per view: the method's ``final_outputs`` of the forward pass (default: the
last dict of a per-stack list; a single-stage method with FPN levels gathers its levels into one dict, e.g.
``center@0``, ``center@1``, named as its ``encode`` names the targets; :func:`contract.final_outputs_of`).
"""
from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from . import paths
from .data.augment import apply_affine_image, transform_sample
from .data.loader import normalise_image
from .data.manifest import Manifest
from .data.sample import Sample
from .eval.evaluate import evaluate_for_record, evaluator_info
from .eval.results import write_results
from .io import file_digest, write_json_atomic
from .posenms import oks_nms
from .schemas import get_schema
from .views import View, to_original

#: Top-down rescoring [R: SimpleBaseline / HRNet ``evaluate``]: keypoints above this score count in the mean.
KEYPOINT_SCORE_THRESHOLD = 0.2
#: Top-down pose NMS [R: SimpleBaseline / HRNet ``oks_thre``]: OKS above this suppresses.
POSE_NMS_OKS = 0.9


# ----------------------------------------------------------------------------------------------------------
# What a run produced
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Predictions:
    """What one variant produced over a split: per image, poses (N, K, 3) in original pixels, scores (N,)."""

    num_keypoints: int
    image_ids: list = field(default_factory=list)
    poses: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    images: list = field(default_factory=list)     # ids of the images seen, in order (some with no pose)

    def add(self, image_id: int, poses: np.ndarray, scores: np.ndarray) -> None:
        poses = np.asarray(poses, dtype=np.float64).reshape(-1, self.num_keypoints, 3)
        self.image_ids.append(np.full(len(poses), int(image_id), dtype=np.int64))
        self.poses.append(poses)
        self.scores.append(np.asarray(scores, dtype=np.float64).reshape(-1))
        self.images.append(int(image_id))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """image ids (N,) int64, poses (N, K, 3) float64, scores (N,) float64 over all images."""
        if not self.poses:
            return np.zeros(0, np.int64), np.zeros((0, self.num_keypoints, 3)), np.zeros(0)
        return np.concatenate(self.image_ids), np.concatenate(self.poses), np.concatenate(self.scores)


# ----------------------------------------------------------------------------------------------------------
# Decoding: per view, then per image
# ----------------------------------------------------------------------------------------------------------

def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def accepts_view(decode: Callable) -> bool:
    """Whether ``decode`` takes a ``view`` keyword (or ``**kwargs``)."""
    try:
        params = inspect.signature(decode).parameters.values()
    except (TypeError, ValueError):
        return False
    return any((p.name == "view" and p.kind != p.POSITIONAL_ONLY) or p.kind == p.VAR_KEYWORD for p in params)


def rescore_and_nms(poses: list, scores: list, views: list[View], cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """The top-down per-image step [R: SimpleBaseline / HRNet]: pose score = box score × the mean of the
    keypoint scores above :data:`KEYPOINT_SCORE_THRESHOLD` (0 when none is), then greedy OKS-NMS at
    :data:`POSE_NMS_OKS` with each pose's crop-window area (px²) as its OKS scale.

    poses: per view (N_v, K, 3) original px; scores: per view (N_v,) (the decoder's, replaced). Returns the kept
    poses (N, K, 3) and scores (N,), best first."""
    k = get_schema(cfg["schema"]).num_keypoints
    if not poses or not sum(len(p) for p in poses):
        return np.zeros((0, k, 3)), np.zeros(0)
    p = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1, k, 3) for x in poses])
    box = np.concatenate([np.full(len(x), v.score) for x, v in zip(poses, views)])
    area = np.concatenate([np.full(len(x), v.window_area()) for x, v in zip(poses, views)])
    c = p[..., 2]
    above = c > KEYPOINT_SCORE_THRESHOLD
    count = above.sum(axis=1)
    mean = np.where(count > 0, np.where(above, c, 0.0).sum(axis=1) / np.maximum(count, 1), 0.0)
    score = box * mean
    keep = oks_nms(p, score, np.asarray(get_schema(cfg["schema"]).sigmas), POSE_NMS_OKS, areas=area)
    return p[keep], score[keep]


def _concatenate(poses: list, scores: list, views: list[View], cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    k = get_schema(cfg["schema"]).num_keypoints
    if not poses:
        return np.zeros((0, k, 3)), np.zeros(0)
    return np.concatenate(poses), np.concatenate(scores)


class Decoder:
    """A method's decoder for one resolved config: per view (:meth:`view`) and per image (:meth:`image`)."""

    def __init__(self, module: ModuleType, cfg: dict, view_kind: str):
        self.module, self.cfg = module, cfg
        schema = get_schema(cfg["schema"])
        self.k, self.flip_index = schema.num_keypoints, np.asarray(schema.flip_index)
        self.takes_view = accepts_view(module.decode)
        self.per_image = getattr(module, "per_image", None) or (
            rescore_and_nms if view_kind == "top-down" else _concatenate)
        self.merge_views = getattr(module, "merge_views", None)

    def view(self, outputs: Any, view: View) -> tuple[np.ndarray, np.ndarray]:
        """Decode one view's outputs: poses (N, K, 3) in original pixels (float64), scores (N,). A mirrored view's
        joints are swapped back to the image's left / right (the network's joint j is the image's flip_index[j])."""
        if self.takes_view:
            poses, scores = self.module.decode(outputs, self.cfg, view=view)
        else:
            poses, scores = self.module.decode(outputs, self.cfg)
        poses = to_original(_numpy(poses).reshape(-1, self.k, 3), view)
        if view.flipped:
            poses = poses[:, self.flip_index]
        return poses, _numpy(scores).astype(np.float64).reshape(-1)

    def image(self, outputs: list, views: list[View]) -> tuple[np.ndarray, np.ndarray]:
        """All views of one image (outputs[i] of views[i]) → the image's poses (N, K, 3) px and scores (N,). A
        method with ``merge_views`` fuses several views' outputs into one view's first (multi-scale maps)."""
        if self.merge_views is not None and len(views) > 1:
            merged, view = self.merge_views(outputs, views, self.cfg)
            outputs, views = [merged], [view]
        decoded = [self.view(o, v) for o, v in zip(outputs, views)]
        poses, scores = self.per_image([p for p, _ in decoded], [s for _, s in decoded], views, self.cfg)
        return np.asarray(poses, dtype=np.float64).reshape(-1, self.k, 3), np.asarray(scores).reshape(-1)


# ----------------------------------------------------------------------------------------------------------
# Outputs: the oracle's encoded ground truth, or the model's
# ----------------------------------------------------------------------------------------------------------

def view_persons(sample: Sample, view: View) -> list[int] | None:
    """The ground-truth persons the oracle encodes in a view: all (bottom-up), the box's own person
    (ground-truth boxes), or the annotated person whose box overlaps a detection box most (none if none does)."""
    if view.kind == "bottom-up":
        return None
    if view.person is not None:
        return [view.person]
    annotated = np.flatnonzero(sample.annotated)
    if not len(annotated):
        return []
    b = np.asarray(sample.boxes, dtype=np.float64)[annotated]
    x0, y0 = np.maximum(b[:, 0], view.box[0]), np.maximum(b[:, 1], view.box[1])
    x1 = np.minimum(b[:, 0] + b[:, 2], view.box[0] + view.box[2])
    y1 = np.minimum(b[:, 1] + b[:, 3], view.box[1] + view.box[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    iou = inter / (b[:, 2] * b[:, 3] + view.box[2] * view.box[3] - inter + 1e-12)
    return [int(annotated[np.argmax(iou)])] if iou.max() > 0 else []


def encoded_outputs(module: ModuleType, sample: Sample, view: View, cfg: dict, counted=None) -> dict:
    """The oracle's outputs of one view: ``module.oracle_outputs`` (default ``module.encode``) of the ground truth
    seen through it (a mirrored view's joints swapped left / right, as the loader does for a mirrored training
    item), as tensors."""
    flip_index = np.asarray(get_schema(cfg["schema"]).flip_index) if view.flipped else None
    seen = transform_sample(sample, view.affine, view.size, flip_index=flip_index,
                            persons=view_persons(sample, view), counted=counted)
    encode = getattr(module, "oracle_outputs", None) or module.encode
    return {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
            for k, v in encode(seen, cfg).items()}


def one_item(outputs: Any, i: int) -> Any:
    """Item ``i`` of batched outputs (a dict of (B, ...) maps, or a list of such dicts)."""
    if isinstance(outputs, (list, tuple)):
        return [one_item(o, i) for o in outputs]
    return {name: maps[i] for name, maps in outputs.items()}


class ViewImages(Dataset):
    """The network inputs of ``entries`` ((sample index, view) pairs): item j is ``{'image': (3, H, W) float32
    normalised, 'index': j}``, the image warped through the view exactly as the loader warps it."""

    def __init__(self, samples, entries: list[tuple[int, View]]):
        self.samples, self.entries = samples, entries
        self._last: tuple[int, Sample] | None = None      # top-down: the views of one image read it once

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, j: int) -> dict:
        i, view = self.entries[j]
        if self._last is None or self._last[0] != i:
            self._last = (i, self.samples[i])
        image = apply_affine_image(self._last[1].image, view.affine, view.size)
        return {"image": normalise_image(image), "index": j}


def view_batches(entries: list[tuple[int, View]], batch: int) -> list[list[int]]:
    """Batches of entry indices, in order: runs of at most ``batch`` consecutive views of one input size (a batch
    stacks one size; test-time scales give views of several)."""
    out: list[list[int]] = []
    for j, (_, view) in enumerate(entries):
        if out and len(out[-1]) < batch and entries[out[-1][-1]][1].size == view.size:
            out[-1].append(j)
        else:
            out.append([j])
    return out


@dataclass
class ModelRunner:
    """A model in eval mode on ``device``: :meth:`__call__` maps a batch (B, 3, H, W) to B per-view outputs,
    fused with the mirrored batch by ``merge_flip`` when ``flip``. ``seconds`` accumulates the forward time."""

    model: torch.nn.Module
    device: torch.device
    final: Callable[[Any], dict]                   # the method's final_outputs (contract.final_outputs_of)
    cfg: dict
    amp: bool = False
    merge_flip: Callable | None = None
    seconds: float = 0.0
    check: Callable[[Any], None] | None = None     # called once with the first batch's raw outputs

    def forward(self, x: torch.Tensor) -> Any:
        from .train import as_float

        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            out = self.model(x)
        out = as_float(out)
        if self.check is not None:
            self.check(out)
            self.check = None
        return self.final(out)

    def __call__(self, x: torch.Tensor) -> list:
        t0 = time.perf_counter()
        x = x.to(self.device, non_blocking=True)
        outputs = self.forward(x)
        mirrored = self.forward(torch.flip(x, dims=[-1])) if self.merge_flip is not None else None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - t0
        items = [one_item(outputs, i) for i in range(x.shape[0])]
        if mirrored is not None:
            items = [self.merge_flip(o, one_item(mirrored, i), self.cfg) for i, o in enumerate(items)]
        return items


def model_predictions(runner: ModelRunner, loader, entries: list[tuple[int, View]], image_ids: list[int],
                      decoder: Decoder, progress: Callable = lambda it: it) -> tuple[Predictions, float]:
    """Run ``loader`` (batches of :class:`ViewImages` over ``entries``, in order) through the model and decode
    every image of ``image_ids`` (sample index order) once all its views are through. Returns the predictions
    and the decode time (s)."""
    preds = Predictions(decoder.k)
    ends = np.searchsorted([i for i, _ in entries], np.arange(len(image_ids)), side="right")
    done: list = []
    t_decode = 0.0
    for batch in progress(loader):
        done.extend(runner(batch["image"]))
        t0 = time.perf_counter()
        while len(preds.images) < len(image_ids) and ends[len(preds.images)] <= len(done):
            _decode_next(preds, decoder, done, entries, ends, image_ids)
        t_decode += time.perf_counter() - t0
    while len(preds.images) < len(image_ids):     # images after the last view (top-down, no box)
        _decode_next(preds, decoder, done, entries, ends, image_ids)
    return preds, t_decode


def _decode_next(preds: Predictions, decoder: Decoder, done: list, entries: list, ends, image_ids: list) -> None:
    i = len(preds.images)
    start = ends[i - 1] if i else 0
    poses, scores = decoder.image(done[start:ends[i]], [v for _, v in entries[start:ends[i]]])
    for j in range(start, ends[i]):
        done[j] = None                            # free the maps of decoded views
    preds.add(image_ids[i], poses, scores)


# ----------------------------------------------------------------------------------------------------------
# Results file, evaluation, record
# ----------------------------------------------------------------------------------------------------------

def predictions_path(kind: str, dataset: str, split: str, method: str, variant: str, scale: str, seed: int,
                     root: Path | None = None) -> Path:
    root = root or paths.results_dir()
    return root / "predictions" / kind / dataset / split / method / variant / f"{scale}-seed{seed}.json"


def subset_ground_truth(gt_path: Path, image_ids: list, out: Path) -> Path:
    """An annotation file restricted to ``image_ids`` (a ``--limit`` run is scored on the images it saw)."""
    data = json.loads(Path(gt_path).read_text())
    keep = set(int(i) for i in image_ids)
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    return write_json_atomic(out, data)


@dataclass
class RunInfo:
    """What a run's record says of it: kind ('oracle' | 'trained'), dataset and split, method, variant, scale,
    seed, and its resolved config. Which images of the split it saw (the record's ``subset``: ``full``, or
    ``first-N-images`` for a ``--limit N`` quick look) is :func:`finish`'s ``limit``."""

    kind: str
    manifest: Manifest
    split: str
    method: str
    variant: str
    scale: str
    seed: int
    config: dict


def finish(preds: Predictions, info: RunInfo, pred_path: Path, gt_path: Path, *, timings: dict,
           limit: int | None = None, write: bool = True, store_root: Path | None = None) -> dict:
    """Write the results file, evaluate it (on the images seen when ``limit``), and write the record (when
    ``write``): with ``limit`` (>= 1) the record's subset is ``first-<limit>-images`` and its config says
    ``limit``, a key of its own that never supersedes the full split's record. With ``write`` the results are
    also diagnosed (:func:`run_diagnosis`) on the same images and the record carries it (``diagnosis``, with
    ``sources``: the split's full annotation file and image folder, for the report's gallery).
    Returns ``{'metrics', 'predictions', 'record', 'timings', 'persons', 'images', 'config', 'diagnosis'}``;
    ``timings`` (s) gain ``evaluate`` (and ``diagnose`` when written)."""
    from .store.record import RunRecord, check_limit, subset_name
    from .store.store import write_record

    check_limit(limit)
    sources = {"annotations": str(gt_path), "images": image_dir_of(info, gt_path)}
    ids, poses, scores = preds.arrays()
    write_results(pred_path, ids, poses, scores)
    if limit is not None:
        gt_path = subset_ground_truth(gt_path, preds.images, pred_path.with_name(pred_path.stem + ".gt.json"))
    protocol = info.manifest.protocol
    t0 = time.perf_counter()
    metrics, extra = evaluate_for_record(pred_path, gt_path, protocol, intervals=write)
    timings = dict(timings, evaluate=time.perf_counter() - t0)
    config = dict(info.config, evaluator=evaluator_info(protocol))
    if limit is not None:
        config["limit"] = limit
    record_path = diagnosis = None
    if write:
        t0 = time.perf_counter()
        diagnosis = run_diagnosis(pred_path, gt_path, protocol, info.manifest.schema)
        timings["diagnose"] = time.perf_counter() - t0
        if diagnosis is not None:       # where the report's gallery finds the split's annotations and images
            diagnosis["sources"] = dict(sources, schema=info.manifest.schema.name)
        record = RunRecord.new(
            kind=info.kind, dataset=info.manifest.name, split=info.split, method=info.method, variant=info.variant,
            scale=info.scale, seed=info.seed, metrics=metrics, config=config, dataset_kind=info.manifest.kind,
            timings=timings, predictions={"path": str(pred_path), "sha256": file_digest(pred_path)},
            subset=subset_name(limit), diagnosis=diagnosis, **extra)
        record_path = write_record(record, store_root)
    return {"metrics": metrics, "predictions": pred_path, "record": record_path, "timings": timings,
            "persons": int(len(ids)), "images": len(preds.images), "config": config, "diagnosis": diagnosis}


def image_dir_of(info: RunInfo, gt_path: Path) -> str | None:
    """The image folder of the split whose annotation file is ``gt_path`` (the manifest's ``images`` beside its
    ``annotations``, under the same dataset root); None when ``gt_path`` does not end as the manifest says."""
    from .errors import HarnessError

    try:
        spec = info.manifest.split(info.split)
    except HarnessError:       # a manifest without the split: no images to show
        return None
    parts = Path(spec.annotations).parts
    gt = Path(gt_path)
    if tuple(gt.parts[-len(parts):]) != parts:
        return None
    return str(gt.parents[len(parts) - 1] / spec.images)


def run_diagnosis(pred_path: Path, gt_path: Path, protocol: str, schema) -> dict | None:
    """The error diagnosis (``eval.diagnosis.diagnose``) of the results file ``pred_path`` against ``gt_path``,
    inversions by ``schema``'s flip pairs (the manifest's). A diagnosis it cannot make (a HarnessError, e.g. an
    annotation file of several categories) is said on stderr and gives None: the evaluated run is still recorded."""
    import sys

    from .errors import HarnessError
    from .eval.diagnosis import diagnose

    try:
        return diagnose(pred_path, gt_path, protocol, schema=schema)
    except HarnessError as exc:
        print(f"warning: no error diagnosis in the record of {pred_path}: {exc}", file=sys.stderr)
        return None
