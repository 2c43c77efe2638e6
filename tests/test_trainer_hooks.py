"""The trainer's optional method hooks (train_step, collate, final_outputs) and starting a training from another
one (``init: {from, freeze}``), on copies of the toy method (tests/fixtures/methods/toy) written in tmp_path."""
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from poseharness import checkpoint as ckpt
from poseharness.contract import method_module, resolve_method
from poseharness.data.manifest import load_manifest
from poseharness.errors import HarnessError
from poseharness.io import file_digest
from poseharness.train import MethodCollate, MethodHooks, RunOptions, init_checkpoint_path, train

TOY = Path(__file__).resolve().parent / "fixtures" / "methods" / "toy"


def toy_method(tmp_path: Path, name: str, code: str = "", edit=None) -> Path:
    """A copy of the toy method called ``name`` (a module name of its own: methods are cached by name), with
    ``code`` appended to its method.py (later definitions replace the toy's) and method.yaml changed by
    ``edit(raw)``."""
    dest = tmp_path / "methods" / name
    shutil.copytree(TOY, dest)
    raw = yaml.safe_load((dest / "method.yaml").read_text())
    raw["name"] = name
    if edit is not None:
        edit(raw)
    (dest / "method.yaml").write_text(yaml.safe_dump(raw))
    (dest / "method.py").write_text((dest / "method.py").read_text() + "\n\n" + code)
    return dest


def quiet(*_):
    pass


def run(spec, training: str, **kw):
    return train(spec, training, load_manifest("synthetic-coco"), "tiny",
                 options=RunOptions(size="tiny", progress=False, device="cpu", log=quiet), **kw)


def model_of(path: Path) -> dict:
    return ckpt.load_checkpoint(path)["model"]


def same_model(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------------------
# (a) train_step: a method-owned step
# ------------------------------------------------------------------------------------------------------------

TWO_PASSES = '''
CALLS = {"forward": 0, "progress": []}


def build_model(cfg):
    net = ToyNet(get_schema(cfg["schema"]).num_keypoints, cfg["model"]["channels"])
    net.register_forward_pre_hook(lambda module, args: CALLS.__setitem__("forward", CALLS["forward"] + 1))
    return net


def train_step(net, batch, cfg, *, progress):
    """Two forward passes per batch: the image and its mirror, with a consistency term between them."""
    CALLS["progress"].append(progress)
    outputs = net(batch["image"])
    mirrored = net(batch["image"].flip(-1))
    terms = loss(outputs, batch, cfg)
    terms["consistency"] = 0.1 * ((outputs[-1]["heatmaps"] - mirrored[-1]["heatmaps"].flip(-1)) ** 2).mean()
    return outputs, terms
'''


def test_train_step_hook_runs_two_passes_per_batch_and_resumes_bit_identical(env, tmp_path):
    spec = resolve_method(toy_method(tmp_path, "toy_two_passes", TWO_PASSES))
    calls = method_module(spec).CALLS
    result = run(spec, "base", steps=4, keep_every=2, out=tmp_path / "hooked")
    assert result.complete and calls["forward"] == 8 and calls["progress"] == [0.0, 0.25, 0.5, 0.75]
    assert set(result.losses) == {"heatmap", "consistency", "total"}
    assert result.losses["total"] == pytest.approx(result.losses["heatmap"] + result.losses["consistency"])
    assert ckpt.load_checkpoint(result.checkpoint)["heads"] == {"heatmaps": 17}

    plain = run(resolve_method(TOY), "base", steps=4, out=tmp_path / "plain")    # the default step differs
    assert not same_model(model_of(plain.checkpoint), model_of(result.checkpoint))

    cut = tmp_path / "cut"           # a run stopped at step 2 (its snapshot), resumed by the same call
    cut.mkdir()
    shutil.copy(tmp_path / "hooked" / ckpt.SNAPSHOTS / ckpt.snapshot_name(2), cut / ckpt.LAST)
    resumed = run(spec, "base", steps=4, out=cut)
    assert resumed.resumed_from == 2 and resumed.complete
    assert same_model(model_of(resumed.checkpoint), model_of(result.checkpoint))
    assert resumed.losses == result.losses


def test_train_step_hook_must_return_outputs_and_terms(env, tmp_path, monkeypatch):
    spec = resolve_method(toy_method(tmp_path, "toy_bad_step", TWO_PASSES))
    module = method_module(spec)
    monkeypatch.setattr(module, "train_step", lambda net, batch, cfg, progress: loss(net, batch, cfg))

    def loss(net, batch, cfg):
        return {"heatmap": net(batch["image"])[-1]["heatmaps"].mean()}

    with pytest.raises(HarnessError, match=r"toy_bad_step/method\.py: train_step must return \(outputs, "
                                           r"\{name: scalar loss tensor\}\), got dict"):
        run(spec, "base", steps=1, out=tmp_path / "bad")


# ------------------------------------------------------------------------------------------------------------
# (b) collate: per-person targets of varying length as lists
# ------------------------------------------------------------------------------------------------------------

PER_PERSON = '''
from poseharness.data.loader import collate as loader_collate

SEEN = []
_toy_encode, _toy_loss = encode, loss


def encode(sample, cfg):
    """The toy's targets plus centers (P, 2): the mean of each annotated person's labelled keypoints."""
    out = _toy_encode(sample, cfg)
    kp = sample.keypoints[sample.annotated]
    out["centers"] = np.array([kp[i, kp[i, :, 2] > 0, :2].mean(0) for i in range(len(kp))],
                              np.float32).reshape(-1, 2)
    return out


def collate(items):
    """The loader's collation, with centers as a list of (P_i, 2) tensors (P_i differs from image to image)."""
    batch = loader_collate([{k: v for k, v in item.items() if k != "centers"} for item in items])
    batch["centers"] = [torch.as_tensor(item["centers"]) for item in items]
    return batch


def loss(outputs, batch, cfg):
    pred = outputs[-1]["heatmaps"]
    centers = batch["centers"]
    assert isinstance(centers, list) and all(c.device == pred.device for c in centers)
    SEEN.append([int(c.shape[0]) for c in centers])
    terms = _toy_loss(outputs, batch, cfg)
    stride = cfg["encoding"]["stride"]
    values = [pred[i, :, (c[:, 1] / stride).long().clamp(0, pred.shape[2] - 1),
                   (c[:, 0] / stride).long().clamp(0, pred.shape[3] - 1)].mean()
              for i, c in enumerate(centers) if len(c)]
    terms["centers"] = -0.01 * torch.stack(values).mean() if values else pred.sum() * 0
    return terms
'''


def test_collate_hook_gives_per_person_lists_of_varying_length(env, tmp_path):
    spec = resolve_method(toy_method(tmp_path, "toy_per_person", PER_PERSON))
    module = method_module(spec)
    hooks = MethodHooks.of(spec, module)
    assert isinstance(hooks.collate, MethodCollate)
    restored = pickle.loads(pickle.dumps(hooks.collate))        # as DataLoader workers get it
    assert restored.source == spec.source and restored._collate is module.collate

    result = run(spec, "base", steps=3, workers=1, out=tmp_path / "run")     # collated in a worker process
    assert result.complete and set(result.losses) == {"heatmap", "centers", "total"}
    assert len(module.SEEN) == 3 and all(len(b) == 4 for b in module.SEEN)
    assert len({n for b in module.SEEN for n in b}) > 1              # persons per image vary within the batches


# ------------------------------------------------------------------------------------------------------------
# (c) final_outputs: outputs that are not a list of per-stack dicts
# ------------------------------------------------------------------------------------------------------------

LEVELS = '''
class LevelsNet(ToyNet):
    """Outputs as FPN-like levels: a list of heatmap tensors, finest first."""

    def forward(self, x):
        fine = self.heatmaps(self.body(x))
        return [fine, torch.nn.functional.avg_pool2d(fine, 2)]


def build_model(cfg):
    return LevelsNet(get_schema(cfg["schema"]).num_keypoints, cfg["model"]["channels"])


def loss(outputs, batch, cfg):
    fine, coarse = outputs
    target = batch["heatmaps"] * batch["heatmap_mask"][:, None]
    return {"fine": ((fine - target) ** 2).sum() / fine.shape[0],
            "coarse": ((coarse - torch.nn.functional.avg_pool2d(target, 2)) ** 2).sum() / fine.shape[0]}


def final_outputs(outputs):
    return {"heatmaps": outputs[0]}
'''


def test_final_outputs_hook_for_a_list_of_levels(env, tmp_path, monkeypatch):
    spec = resolve_method(toy_method(tmp_path, "toy_levels", LEVELS))
    result = run(spec, "base", steps=2, out=tmp_path / "run")
    state = ckpt.load_checkpoint(result.checkpoint)
    assert result.complete and state["heads"] == {"heatmaps": 17} and set(result.losses) == {"fine", "coarse", "total"}

    monkeypatch.delattr(method_module(spec), "final_outputs")        # the default takes the last item: a tensor
    with pytest.raises(HarnessError, match=r"toy_levels/method\.py: the final outputs must be a dict of "
                                           r"\(B, C, \.\.\.\) tensors \(define final_outputs"):
        run(spec, "base", steps=2, out=tmp_path / "nohook")


# ------------------------------------------------------------------------------------------------------------
# (d) init: starting from another training, with frozen modules
# ------------------------------------------------------------------------------------------------------------

WITH_BATCHNORM = '''
class BNNet(ToyNet):
    def __init__(self, keypoints, channels):
        super().__init__(keypoints, channels)
        c = channels
        self.body = nn.Sequential(
            nn.Conv2d(3, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.ReLU())


def build_model(cfg):
    return BNNet(get_schema(cfg["schema"]).num_keypoints, cfg["model"]["channels"])
'''


def init_trainings(raw: dict) -> None:
    raw["trainings"].update(
        finetune={"description": "the head trained again on a frozen body", "init": {"from": "base",
                                                                                     "freeze": ["body"]}},
        bad_prefix={"init": {"from": "base", "freeze": ["bogus"]}},
        orphan={"init": {"from": "nope"}},
        wider={"model": {"channels": 16}, "init": {"from": "base"}})


def test_init_from_another_training_freezes_named_modules(env, tmp_path):
    spec = resolve_method(toy_method(tmp_path, "toy_init", WITH_BATCHNORM, init_trainings))
    base = run(spec, "base", steps=3)
    source = init_checkpoint_path(spec, "finetune", "synthetic-coco", "tiny", 0)
    assert source == base.checkpoint == ckpt.run_dir("toy_init", "synthetic-coco", "base", "tiny", 0) / ckpt.FINAL

    tuned = run(spec, "finetune", steps=4, keep_every=2)
    a, b = ckpt.load_checkpoint(source), ckpt.load_checkpoint(tuned.checkpoint)
    body = [k for k in a["model"] if k.startswith("body.")]
    assert "body.1.running_mean" in body and "body.1.num_batches_tracked" in body
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in body)       # frozen, BatchNorm statistics too
    assert not any(torch.equal(a["model"][k], b["model"][k]) for k in ("heatmaps.weight", "heatmaps.bias"))
    sha = file_digest(source)
    assert b["init"] == {"from": "base", "freeze": ["body"], "sha256": sha, "path": str(source.resolve())}
    assert b["config"]["init"] == {"from": "base", "freeze": ["body"], "sha256": sha}
    assert len(b["optimizer"]["state"]) == 2               # Adam holds the head's weight and bias only

    cut = tmp_path / "cut"                                 # resumed from step 2: the same weights
    cut.mkdir()
    shutil.copy(tuned.checkpoint.parent / ckpt.SNAPSHOTS / ckpt.snapshot_name(2), cut / ckpt.LAST)
    resumed = run(spec, "finetune", steps=4, out=cut)
    assert resumed.resumed_from == 2 and same_model(model_of(resumed.checkpoint), b["model"])

    other = run(spec, "base", steps=2, out=tmp_path / "other")      # another source is another config
    with pytest.raises(HarnessError, match=r"finetune/tiny-seed0/final\.pt: field config: .*init\.sha256"):
        run(spec, "finetune", steps=4, init_checkpoint=other.checkpoint)


def test_init_errors_name_the_file_and_the_setting(env, tmp_path):
    spec = resolve_method(toy_method(tmp_path, "toy_init_errors", WITH_BATCHNORM, init_trainings))
    with pytest.raises(HarnessError, match=r"base/tiny-seed0/final\.pt: checkpoint file not found: training "
                                           r"'finetune' starts from training 'base' \(.*method\.yaml: field "
                                           r"trainings\.finetune\.init\.from\)"):
        run(spec, "finetune", steps=2)
    with pytest.raises(HarnessError, match=r"method\.yaml: field trainings\.orphan\.init\.from: 'nope' names no "
                                           r"other training"):
        run(spec, "orphan", steps=2)
    with pytest.raises(HarnessError, match=r"field trainings\.base\.init: training 'base' does not start"):
        init_checkpoint_path(spec, "base", "synthetic-coco", "tiny", 0)

    base = run(spec, "base", steps=3, keep_every=2)
    snapshot = base.checkpoint.parent / ckpt.SNAPSHOTS / ckpt.snapshot_name(2)
    with pytest.raises(HarnessError, match=r"step-000002\.pt: field complete: the checkpoint to start 'finetune' "
                                           r"from is not complete \(2 of 3 steps\)"):
        run(spec, "finetune", steps=2, init_checkpoint=snapshot)
    with pytest.raises(HarnessError, match=r"method\.yaml: field trainings\.bad_prefix\.init\.freeze: 'bogus' "
                                           r"names no parameter of the model \(its modules: body, heatmaps\)"):
        run(spec, "bad_prefix", steps=2)
    with pytest.raises(HarnessError, match=r"final\.pt: field model: the weights to start from do not fit the "
                                           r"model of this training \(shape: body\.0\.weight \(8, 3, 3, 3\) -> "
                                           r"\(16, 3, 3, 3\)"):
        run(spec, "wider", steps=2)
    with pytest.raises(HarnessError, match=r"--init-checkpoint .*: training 'base' has no init: entry"):
        run(spec, "base", steps=3, init_checkpoint=base.checkpoint)
    assert not (ckpt.run_dir("toy_init_errors", "synthetic-coco", "bad_prefix", "tiny", 0)).exists()


WRAPPED = '''
class Wrapper(nn.Module):
    """Another method's whole model as the submodule ``inner``, plus a head of its own."""

    def __init__(self, keypoints, channels):
        super().__init__()
        self.inner = ToyNet(keypoints, channels)
        self.extra = nn.Conv2d(keypoints, keypoints, 1)

    def forward(self, x):
        return [{"heatmaps": self.extra(self.inner(x)[-1]["heatmaps"])}]


def build_model(cfg):
    return Wrapper(get_schema(cfg["schema"]).num_keypoints, cfg["model"]["channels"])
'''


def wrapping_trainings(source: str):
    def edit(raw: dict) -> None:
        raw["trainings"].update(
            wrapped={"init": {"method": source, "from": "base", "into": "inner", "freeze": ["inner"]}},
            unnamed={"init": {"method": source, "from": "base"}},
            elsewhere={"init": {"method": "nowhere", "from": "base", "into": "inner"}},
            unknown={"init": {"method": source, "from": "nope", "into": "inner"}},
            bad_into={"init": {"method": source, "from": "base", "into": "extra"}})
    return edit


def test_init_from_another_methods_training_into_a_submodule(env, tmp_path):
    source = resolve_method(toy_method(tmp_path, "toy_src"))
    spec = resolve_method(toy_method(tmp_path, "toy_wrap", WRAPPED, wrapping_trainings("toy_src")))
    path = init_checkpoint_path(spec, "wrapped", "synthetic-coco", "tiny", 0)
    assert path == ckpt.run_dir("toy_src", "synthetic-coco", "base", "tiny", 0) / ckpt.FINAL
    with pytest.raises(HarnessError, match=r"toy_src/synthetic-coco/base/tiny-seed0/final\.pt: checkpoint file not "
                                           r"found: training 'wrapped' starts from training 'base'"):
        run(spec, "wrapped", steps=2)
    base = run(source, "base", steps=3)
    tuned = run(spec, "wrapped", steps=3)
    a, b = ckpt.load_checkpoint(base.checkpoint), ckpt.load_checkpoint(tuned.checkpoint)
    assert all(torch.equal(a["model"][k], b["model"]["inner." + k]) for k in a["model"])     # loaded, frozen
    assert len(b["optimizer"]["state"]) == 2                 # Adam holds the wrapper's own head only
    assert b["config"]["init"] == {"from": "base", "method": "toy_src", "into": "inner", "freeze": ["inner"],
                                   "sha256": file_digest(base.checkpoint)}

    with pytest.raises(HarnessError, match=r"field trainings\.unnamed\.init\.into: the submodule that takes method "
                                           r"'toy_src'"):
        run(spec, "unnamed", steps=2)
    with pytest.raises(HarnessError, match=r"field trainings\.elsewhere\.init\.method: no method 'nowhere' beside"):
        run(spec, "elsewhere", steps=2)
    with pytest.raises(HarnessError, match=r"field trainings\.unknown\.init\.from: 'nope' names no other training "
                                           r"of method 'toy_src' \(known: base"):
        run(spec, "unknown", steps=2)
    with pytest.raises(HarnessError, match=r"final\.pt: field model: the weights to start from do not fit the model "
                                           r"of this training \(missing: extra\.bias, extra\.weight; unexpected: body\.0\.bias"):
        run(spec, "bad_into", steps=2)


def test_cli_takes_init_checkpoint():
    from poseharness.cli import build_parser

    args = build_parser().parse_args(["train", "--method", "toy", "--training", "finetune", "--dataset", "x",
                                      "--init-checkpoint", "a/final.pt"])
    assert args.init_checkpoint == "a/final.pt" and args.func.__name__ == "cmd_train"
