"""The learning run every method's learning test makes: a trained model against the same model untrained.

A synthetic COCO set is generated under the test's tmp_path (the ``synthetic-coco`` manifest with its sizes and,
optionally, some generator settings replaced), the method's ``training`` is trained at a scale (default tiny) on the CPU
with one compute thread beside one loader process (two threads plus a loader oversubscribe a 2-core machine
and run several times slower, measured), and both the final checkpoint and the run's own initial weights (the
trainer seeds the model with the training seed, then builds it) are predicted with ``variant`` and evaluated
with the official protocol on the val split. Seeds are fixed; on the CPU the trainer is deterministic.

``POSEHARNESS_TEST_THREADS`` (default 1) sets the compute threads, to measure the margins at another thread count
(float reductions in another order: another trajectory of the same training).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from poseharness import checkpoint as ckpt
from poseharness.contract import method_module
from poseharness.data import synthetic
from poseharness.data.manifest import load_manifest_file
from poseharness.methods import init_entry, load_method
from poseharness.predict import predict
from poseharness.threads import torch_threads
from poseharness.train import TrainResult, seed_everything, train

REPO = Path(__file__).resolve().parents[1]
#: Compute threads of the learning runs (POSEHARNESS_TEST_THREADS, default 1).
THREADS = int(os.environ.get("POSEHARNESS_TEST_THREADS", "1"))

#: Easier images than synthetic-coco's defaults (the other generator settings are the manifest's): 1-3 persons of
#: 40-95 % of the image height, no crowd regions, fewer occluders, so that minutes of one CPU core teach a tiny net
#: far more than the noise of another torch build or thread count moves it.
EASY = {"persons_per_image": [1, 3], "person_height": [0.4, 0.95], "crowd_region_rate": 0.0, "occluder_rate": 0.1}


@dataclass
class LearningRun:
    run: TrainResult
    metrics: dict[str, dict[str, float]]    # "trained" / "untrained" -> COCO stats
    persons: dict[str, int]                 # "trained" / "untrained" -> persons predicted on val
    seconds: dict[str, float]               # data, training, total
    predictions: dict = None                # "trained" / "untrained" -> the results file (COCO JSON) on val
    manifest: object = None                 # the generated set's manifest

    def report(self, title: str) -> str:
        s = self.seconds
        lines = [f"{title} ({self.run.total_steps} steps, {THREADS} thread{'s' if THREADS > 1 else ''}); data {s['data']:.0f} s, training {s['training']:.0f} s, "
                 f"total {s['total']:.0f} s; losses "
                 + ", ".join(f"{k} {v:.3g}" for k, v in (self.run.losses or {}).items())]
        for name, m in self.metrics.items():
            lines.append(f"  {name:<9} " + "  ".join(f"{k} {m[k]:.4f}" for k in ("AP", "AP50", "AR", "AR50"))
                         + f"  ({self.persons[name]} persons)")
        return "\n".join(lines)


def learning_run(tmp_path: Path, monkeypatch, method: str, training: str, variant: str, *, train_images: int,
                 val_images: int, seed: int = 0, generator: dict | None = None,
                 steps: int | None = None, scale: str = "tiny", init_checkpoint: Path | None = None
                 ) -> LearningRun:
    """Train ``method``/``training`` at ``scale`` (``steps``: the scale's schedule when None) and score the
    trained and the untrained model with ``variant`` on a fresh synthetic COCO set. A training with ``init:``
    starts from ``init_checkpoint``, and so does its untrained model (the source's weights, the rest fresh)."""
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "results"))
    raw = yaml.safe_load((REPO / "datasets" / "synthetic-coco.yaml").read_text())
    raw.update(name="learn-coco", default_size="learn", sizes={"learn": {"train": train_images, "val": val_images}})
    raw["generator"].update(generator or {})
    (tmp_path / "learn-coco.yaml").write_text(yaml.safe_dump(raw))
    manifest = load_manifest_file(tmp_path / "learn-coco.yaml")
    start = time.perf_counter()
    synthetic.generate(manifest, jobs=2, progress=False)
    t_data = time.perf_counter() - start

    spec = load_method(method)
    with torch_threads(THREADS):
        run = train(spec, training, manifest, scale, seed=seed, steps=steps, out=tmp_path / "run", device="cpu",
                    workers=1, progress=False, log=lambda *_: None, init_checkpoint=init_checkpoint)
        assert run.complete and run.step == run.total_steps
        t_train = time.perf_counter() - start - t_data

        state = torch.load(run.checkpoint, weights_only=True)
        seed_everything(seed)
        model = method_module(spec).build_model(json.loads(state["config_json"]))
        if init_checkpoint is not None:
            ckpt.load_init_weights(model, ckpt.load_checkpoint(init_checkpoint), Path(init_checkpoint),
                                   into=init_entry(spec, training)["into"])
        state["model"] = model.state_dict()
        ckpt.save_checkpoint(tmp_path / "untrained.pt", state)

        metrics, persons, predictions = {}, {}, {}
        for name, path in (("trained", run.checkpoint), ("untrained", tmp_path / "untrained.pt")):
            out = predict(path, variant, manifest, "val", out=tmp_path / f"{name}.json", device="cpu", write=False,
                          progress=False)
            metrics[name], persons[name] = out["metrics"], int(out["persons"])
            predictions[name] = Path(out["predictions"])
    seconds = {"data": t_data, "training": t_train, "total": time.perf_counter() - start}
    return LearningRun(run, metrics, persons, seconds, predictions, manifest)
