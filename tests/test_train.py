"""The generic trainer on the toy method (tests/fixtures/methods/toy): settings, resume after SIGKILL, bad input."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from poseharness import checkpoint as ckpt
from poseharness.config import TrainSettings, train_settings, training_config
from poseharness.contract import method_module, resolve_manifest, resolve_method
from poseharness.data.manifest import load_manifest
from poseharness.errors import HarnessError
from poseharness.methods import load_method_file
from poseharness.threads import torch_threads
from poseharness.train import epoch_batches, train

TOY = Path(__file__).resolve().parent / "fixtures" / "methods" / "toy"
REPO = Path(__file__).resolve().parents[1]


def toy_copy(tmp_path: Path, edit) -> Path:
    """A copy of the toy method whose method.yaml is changed by ``edit(raw_dict)``."""
    dest = tmp_path / "methods" / "toy"
    shutil.copytree(TOY, dest)
    raw = yaml.safe_load((dest / "method.yaml").read_text())
    edit(raw)
    (dest / "method.yaml").write_text(yaml.safe_dump(raw))
    return dest


def one_thread() -> dict:
    """This process's environment now (the test's POSEHARNESS_* folders included) with one compute thread: the CLI
    subprocesses train on one thread, as ``train_toy`` does in this process, because weights compared bit for bit
    must come from the same float reductions."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "poseharness", *args], capture_output=True, text=True, cwd=REPO,
                          env=kw.pop("env", None) or one_thread(), **kw)


def train_toy(out: Path, steps: int, every: int):
    """In this process and on one thread, what ``toy_args`` asks the CLI for."""
    with torch_threads(1):
        return train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=steps,
                     checkpoint_every=every, out=out, progress=False, device="cpu", log=lambda *_: None)


def toy_args(out: Path, steps: int, every: int) -> list[str]:
    return ["train", "--method", str(TOY), "--training", "base", "--dataset", "synthetic-coco", "--size", "tiny",
            "--steps", str(steps), "--checkpoint-every", str(every), "--out", str(out), "--quiet", "--device", "cpu"]


# ------------------------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------------------------

def test_settings_merge_defaults_scale_and_override():
    toy = load_method_file(TOY / "method.yaml")
    tiny = train_settings(toy, "base", "tiny")
    assert (tiny.steps, tiny.epochs, tiny.batch, tiny.lr, tiny.checkpoint_every) == (20, None, 4, 3e-3, 5)
    assert tiny.augment["rotate"] == 10.0 and tiny.augment["scale"] == (0.9, 1.1)
    paper = train_settings(toy, "base", "paper")
    assert (paper.steps, paper.epochs, paper.decay_at) == (None, 2, (0.5,))
    assert train_settings(toy, "base", "paper", steps=7).total_steps(100) == 7
    assert paper.total_steps(6) == 12


def test_lr_schedule_hand_worked():
    s = TrainSettings(batch=1, lr=1.0, steps=10, warmup=4, warmup_factor=0.2, decay_at=(0.5, 0.8), decay_factor=0.1)
    got = [s.lr_factor(i, 10) for i in range(10)]
    want = [0.2, 0.4, 0.6, 0.8, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01]
    assert got == pytest.approx(want)


def test_resolved_config_holds_schema_dataset_and_weight_deciding_settings():
    toy = load_method_file(TOY / "method.yaml")
    cfg, _ = training_config(toy, "wide", "paper", load_manifest("synthetic-coco"), size="tiny", seed=3)
    assert cfg["schema"] == "coco17" and cfg["model"] == {"channels": 16}
    assert cfg["dataset"] == {"name": "synthetic-coco", "kind": "synthetic", "size": "tiny", "seed": 0}
    assert cfg["seed"] == 3 and "workers" not in cfg["train"] and "checkpoint_every" not in cfg["train"]
    assert "train" not in cfg["scale"] and cfg["scale"]["train_input"] == 64



def test_max_persons_enters_the_config_only_when_set(tmp_path):
    toy = load_method_file(TOY / "method.yaml")
    cfg, _ = training_config(toy, "base", "tiny", load_manifest("synthetic-coco"))
    assert "max_persons" not in cfg["train"]          # configs (and hashes) from before the setting hold
    d = toy_copy(tmp_path, lambda raw: raw["scales"]["tiny"]["train"].update(max_persons=8))
    cfg, _ = training_config(load_method_file(d / "method.yaml"), "base", "tiny", load_manifest("synthetic-coco"))
    assert cfg["train"]["max_persons"] == 8
    shutil.rmtree(tmp_path / "methods")
    d = toy_copy(tmp_path, lambda raw: raw["scales"]["tiny"]["train"].update(max_persons=0))
    with pytest.raises(HarnessError, match=r"field scales\.tiny\.train\.max_persons: must be a positive integer"):
        train_settings(load_method_file(d / "method.yaml"), "base", "tiny")

def test_unknown_training_setting_names_file_and_field(tmp_path):
    d = toy_copy(tmp_path, lambda raw: raw["scales"]["tiny"]["train"].update(lrr=0.1))
    with pytest.raises(HarnessError, match=r"method\.yaml: field scales\.tiny\.train\.lrr: unknown training setting"):
        train_settings(load_method_file(d / "method.yaml"), "base", "tiny")


def test_bad_training_value_and_misspelt_override(tmp_path):
    d = toy_copy(tmp_path, lambda raw: raw["scales"]["tiny"]["train"].update(batch=0))
    with pytest.raises(HarnessError, match=r"field scales\.tiny\.train\.batch: must be a positive integer"):
        train_settings(load_method_file(d / "method.yaml"), "base", "tiny")
    shutil.rmtree(tmp_path / "methods")
    d = toy_copy(tmp_path, lambda raw: raw["trainings"]["wide"].update(modle={"channels": 16}))
    with pytest.raises(HarnessError, match=r"field trainings\.wide\.modle: unknown setting"):
        training_config(load_method_file(d / "method.yaml"), "wide", "tiny", load_manifest("synthetic-coco"))


def test_oracle_only_training_is_not_trained():
    toy = load_method_file(TOY / "method.yaml")
    with pytest.raises(HarnessError, match=r"trainings\.oracle\.oracle_only"):
        training_config(toy, "oracle", "tiny", load_manifest("synthetic-coco"))


def test_method_module_must_meet_the_contract(tmp_path):
    d = toy_copy(tmp_path, lambda raw: raw.update(name="toy_noloss"))
    d = d.rename(d.parent / "toy_noloss")
    text = (d / "method.py").read_text().replace("def loss(", "def not_the_loss(")
    (d / "method.py").write_text(text)
    with pytest.raises(HarnessError, match=r"toy_noloss/method\.py: .*missing: loss"):
        method_module(resolve_method(d))


def test_data_order_is_a_pure_function_of_seed_and_epoch():
    from torch.utils.data import DistributedSampler

    def sampler(seed):
        return DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=True)

    a = epoch_batches(sampler(1), 3, 4, 0, 2)
    assert a == epoch_batches(sampler(1), 3, 4, 0, 2)
    assert epoch_batches(sampler(1), 3, 4, 1, 2) == a[1:]           # resuming mid-epoch skips, same batches
    assert a != epoch_batches(sampler(1), 4, 4, 0, 2) and a != epoch_batches(sampler(2), 3, 4, 0, 2)
    assert sorted(sum(epoch_batches(sampler(1), 0, 5, 0, 2), [])) == list(range(10))


# ------------------------------------------------------------------------------------------------------------
# Training, checkpoints, resume
# ------------------------------------------------------------------------------------------------------------

def same_weights(a: Path, b: Path) -> bool:
    sa, sb = ckpt.load_checkpoint(a), ckpt.load_checkpoint(b)
    return sa["model"].keys() == sb["model"].keys() and all(torch.equal(sa["model"][k], sb["model"][k])
                                                          for k in sa["model"])


def test_resume_after_sigkill_is_bit_identical(env):
    steps, every = 24, 3
    whole = env / "whole"       # the uninterrupted reference, in this process (another process than the cut run)
    train_toy(whole, steps, every)
    assert sorted(p.name for p in whole.iterdir()) == ["final.pt"]

    cut = env / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "poseharness", *toy_args(cut, steps, every)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=one_thread())
    deadline = time.monotonic() + 60
    while not (cut / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, f"the run ended before its first snapshot: exit {proc.returncode}, {proc.stderr.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (cut / "final.pt").exists()                       # an interrupted run leaves nothing complete
    interrupted = ckpt.load_checkpoint(cut / "last.pt")
    assert not interrupted["complete"] and 0 < interrupted["step"] < steps
    assert not same_weights(cut / "last.pt", whole / "final.pt")

    resumed = run_cli(*toy_args(cut, steps, every))            # the same command
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {cut / 'last.pt'} at step {interrupted['step']}" in resumed.stdout
    assert sorted(p.name for p in cut.iterdir()) == ["final.pt"]
    final = ckpt.load_checkpoint(cut / "final.pt")
    assert final["complete"] and final["step"] == steps
    assert same_weights(cut / "final.pt", whole / "final.pt")
    ref = ckpt.load_checkpoint(whole / "final.pt")
    assert final["losses"] == ref["losses"]
    for k, v in ref["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], final["optimizer"]["state"][k]["exp_avg"])


def test_complete_run_is_not_repeated_and_another_config_is_refused(env):
    out = env / "run"
    first = train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=3,
                  out=out, progress=False, device="cpu", log=lambda *_: None)
    assert first.complete and first.checkpoint == out / "final.pt" and first.step == 3
    again = train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=3,
                  out=out, progress=False, device="cpu", log=lambda *_: None)
    assert again.already_complete
    with pytest.raises(HarnessError, match=r"final\.pt: field config: .*train\.steps: 3 -> 4"):
        train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=4,
              out=out, progress=False, device="cpu")
    with pytest.raises(HarnessError, match=r"final\.pt: field training: the checkpoint is of training 'base'"):
        train(resolve_method(TOY), "wide", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=3,
              out=out, progress=False, device="cpu")


def test_foreign_and_corrupt_checkpoints_are_refused(env):
    out = env / "run"
    train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=2, out=out,
          progress=False, device="cpu", log=lambda *_: None)
    state = torch.load(out / "final.pt", weights_only=True)
    state["method"] = "gog"
    foreign = env / "foreign"
    ckpt.save_checkpoint(foreign / "last.pt", state)
    with pytest.raises(HarnessError, match=r"foreign/last\.pt: field method: the checkpoint is of method 'gog'"):
        train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=2,
              out=foreign, progress=False, device="cpu")

    data = (out / "final.pt").read_bytes()
    for name, content in (("truncated", data[: len(data) // 2]), ("garbage", b"not a checkpoint\n")):
        (env / name).mkdir()
        (env / name / "last.pt").write_bytes(content)
        with pytest.raises(HarnessError, match=rf"{name}/last\.pt: not a readable checkpoint"):
            train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=2,
                  out=env / name, progress=False, device="cpu")
    # A zip that holds a pickled object (not tensors and plain data) is refused by the weights-only loader.
    torch.save({"format": ckpt.FORMAT, "x": object.__new__(TrainSettings)}, env / "object.pt")
    with pytest.raises(HarnessError, match=r"object\.pt: not a readable checkpoint .*TrainSettings"):
        ckpt.load_checkpoint(env / "object.pt")
    del state["heads"]
    ckpt.save_checkpoint(env / "noheads.pt", state)
    with pytest.raises(HarnessError, match=r"noheads\.pt: field heads: missing"):
        ckpt.load_checkpoint(env / "noheads.pt")


def test_loss_config_sees_the_progress_of_the_schedule(env, monkeypatch):
    # A method's optional loss_config(cfg, progress) gets steps done / all steps before each step's loss (the
    # step counter a resumed run restores, so a resume sees the same losses).
    module = method_module(resolve_method(TOY))
    seen = []
    monkeypatch.setattr(module, "loss_config", lambda cfg, progress: seen.append(progress) or cfg, raising=False)
    train_toy(env / "run", steps=2, every=1)
    assert seen == [0.0, 0.5]
    seen.clear()
    run = train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=4,
                checkpoint_every=1, out=env / "run4", progress=False, device="cpu", log=lambda *_: None)
    assert run.complete and seen == [0.0, 0.25, 0.5, 0.75]


def test_dataset_without_the_split(env, tmp_path):
    raw = yaml.safe_load((REPO / "datasets" / "synthetic-coco.yaml").read_text())
    raw["name"] = "valonly"
    del raw["splits"]["train"]
    for size in raw["sizes"].values():
        size.pop("train")
    path = tmp_path / "valonly.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(HarnessError, match=r"valonly\.yaml: dataset 'valonly' has no split 'train'"):
        train(resolve_method(TOY), "base", resolve_manifest(path), "tiny", size="tiny", steps=2,
              out=tmp_path / "run", progress=False, device="cpu")
    # A split the manifest has but whose files are not there: the annotation file is named.
    ungenerated = resolve_manifest(REPO / "datasets" / "synthetic-crowdpose.yaml")
    with pytest.raises(HarnessError, match=r"annotations/train\.json: annotation file of synthetic-crowdpose"):
        train(resolve_method(TOY), "base", ungenerated, "tiny", size="tiny", steps=2, out=tmp_path / "run2",
              progress=False, device="cpu")


@pytest.mark.skipif(not torch.distributed.is_available() or shutil.which("torchrun") is None,
                    reason="torch.distributed / torchrun not available")
def test_ddp_two_processes_on_cpu_matches_one_process(env):
    """torchrun with 2 gloo processes (2 images each) trains the same model as 1 process with 4 images."""
    one = env / "one"
    train_toy(one, 6, 3)
    two = env / "two"
    with socket.socket() as sock:            # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "poseharness", *toy_args(two, 6, 3)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in two.iterdir()) == ["final.pt"]
    a, b = ckpt.load_checkpoint(one / "final.pt"), ckpt.load_checkpoint(two / "final.pt")
    assert b["world_size"] == 2 and b["complete"] and b["step"] == 6
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-5, rtol=1e-4), k
    with pytest.raises(HarnessError, match=r"field world_size"):
        ckpt.save_checkpoint(two / "last.pt", {**torch.load(two / "final.pt", weights_only=True), "complete": False})
        (two / "final.pt").unlink()
        train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=6,
              out=two, progress=False, device="cpu")


def test_bench_train_measures_the_trainer_step(env):
    from poseharness.bench.train import bench_scale, format_bench
    from poseharness.cli import build_parser

    row = bench_scale(str(TOY), "base", "paper", "synthetic-coco", size="tiny", data_seed=None, steps=2, batch=None,
                      device="cpu", amp=True, infer_batch=2, infer_iters=2)
    assert (row["scale"], row["device"], row["amp"], row["batch"], row["train_input"], row["input"]) == \
        ("paper", "cpu", False, 2, 64, 96)                  # paper on the CPU: CPU_PAPER_BATCH images per step
    assert row["parameters"] == 3 * 8 * 9 + 8 + 8 * 16 * 9 + 16 + 16 * 16 * 9 + 16 + 16 * 17 + 17
    assert row["steps_per_s"] > 0 and row["infer_images_per_s"] > 0 and row["peak_rss_mib"] > 100
    assert row["peak_train_mib"] is None and row["loss"] > 0
    assert "paper" in format_bench([row])
    args = build_parser().parse_args(["bench", "train", "--method", str(TOY), "--scale", "tiny"])
    assert args.func.__name__ == "cmd_bench_train" and args.scales == ["tiny"]


def test_keep_every_keeps_snapshots_that_bench_curve_scores(env, capsys):
    """``keep_every`` keeps a snapshot at every multiple and at the end, identical to the run's own checkpoints,
    without changing the result; ``bench curve`` scores each one (a learning curve)."""
    from poseharness.bench.curve import curve_rows, snapshots

    out = env / "run"
    run = train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=5,
                keep_every=2, out=out, progress=False, device="cpu", log=lambda *_: None)
    kept = snapshots(out)
    assert [p.name for p in kept] == ["step-000002.pt", "step-000004.pt", "step-000005.pt"]
    final = torch.load(run.checkpoint, weights_only=True)
    last = torch.load(kept[-1], weights_only=True)
    assert last["step"] == 5 and all(torch.equal(final["model"][k], last["model"][k]) for k in final["model"])
    plain = train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=5,
                  out=env / "plain", progress=False, device="cpu", log=lambda *_: None)
    plain_state = torch.load(plain.checkpoint, weights_only=True)
    assert all(torch.equal(final["model"][k], plain_state["model"][k]) for k in final["model"])

    rows = curve_rows(out, ["top1", "none"], load_manifest("synthetic-coco"), "val", threads=2)
    assert [(r["step"], r["variant"]) for r in rows] == [(s, v) for s in (2, 4, 5) for v in ("top1", "none")]
    assert all(r["cpu_minutes"] == pytest.approx(r["seconds"] * 2 / 60) for r in rows)
    assert all(r["persons"] == 0 and r["AP"] == 0 for r in rows if r["variant"] == "none")
    from poseharness.cli import main
    from poseharness.report import build_report
    from poseharness.store import collect

    assert main(["bench", "curve", str(out), "--variant", "top1", "--dataset", "synthetic-coco",
                 "--plot", str(env / "curve")]) == 0
    printed = capsys.readouterr().out
    written = env / "results" / "curves" / "toy" / "base-tiny-seed0.json"
    assert f"curve: {written}" in printed and (env / "curve.png").is_file()
    collect(env / "results")
    report = build_report(env / "results", env / "reports", method=str(TOY))
    assert env / "reports" / "toy" / "curves.svg" in report.files
    assert "Learning curves" in report.index.read_text()
    with pytest.raises(HarnessError, match=r"plain/snapshots: no snapshots \(train with --keep-every"):
        snapshots(env / "plain")
    with pytest.raises(HarnessError, match="--keep-every must be a positive integer"):
        train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=5,
              keep_every=0, out=env / "zero", progress=False, device="cpu")


def test_bench_train_takes_a_methods_hooks(env):
    """A method with its own ``collate`` and ``train_step`` (the recurrent one: per-image person maps of varying
    length) is benched through them, its ``init: freeze`` parameters frozen (the AE's)."""
    from poseharness.bench.train import bench_scale

    row = bench_scale("rnn_assoc", "learned", "crops", "synthetic-coco", size="tiny", data_seed=None, steps=1,
                      batch=2, device="cpu", amp=False, infer_batch=1, infer_iters=1)
    assert row["batch"] == 2 and row["train_input"] == 128 and row["steps_per_s"] > 0 and row["loss"] > 0
