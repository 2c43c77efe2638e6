"""A corrupted checkpoint is never used: every member's CRC-32 is checked on load (torch.load does not), `predict`
refuses a corrupted final.pt naming it, and `train` resumes from the newest verified snapshot or says how to restart.
"""
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from poseharness import checkpoint as ckpt
from poseharness.contract import resolve_method
from poseharness.data.manifest import load_manifest
from poseharness.errors import HarnessError
from poseharness.train import train

TOY = Path(__file__).resolve().parent / "fixtures" / "methods" / "toy"
REPO = Path(__file__).resolve().parents[1]
STEPS, EVERY, KEEP = 6, 3, 2


def train_toy(out: Path, log=lambda *_: None, **kw):
    return train(resolve_method(TOY), "base", load_manifest("synthetic-coco"), "tiny", size="tiny", steps=STEPS,
                 checkpoint_every=EVERY, out=out, progress=False, device="cpu", log=log, **kw)


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """A complete 6-step toy run that kept snapshots at steps 2, 4 and 6 (trained once for the module)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSEHARNESS_DATA", str(data_root))
        train_toy(out, keep_every=KEEP)
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [
        "step-000002.pt", "step-000004.pt", "step-000006.pt"]
    return out


def member_data_span(path: Path, member: str) -> tuple[int, int]:
    """(offset, length) in the file of ``member``'s stored bytes (torch stores its members uncompressed)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    assert info.compress_type == zipfile.ZIP_STORED
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = fh.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def flip_bytes(path: Path, member: str, count: int = 4096) -> None:
    """Invert up to ``count`` bytes in the middle of ``member``'s data, in place (the archive still opens)."""
    offset, size = member_data_span(path, member)
    n = min(count, size)
    start = offset + (size - n) // 2
    with open(path, "r+b") as fh:
        fh.seek(start)
        data = fh.read(n)
        fh.seek(start)
        fh.write(bytes(b ^ 0xFF for b in data))


def corrupt_model_tensor(path: Path) -> str:
    """Flip bytes inside the storage of a model weight of the checkpoint at ``path``; the member's name.
    Checks that the archive still opens with plain torch.load, giving other weights (what went unnoticed)."""
    good = torch.load(path, weights_only=True)["model"]
    original = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        members = sorted((i for i in zf.infolist() if "/data/" in i.filename and "/.data/" not in i.filename),
                         key=lambda i: -i.file_size)
    for info in members:
        flip_bytes(path, info.filename)
        bad = torch.load(path, weights_only=True)["model"]      # no error: torch does not check the CRCs
        if any(not torch.equal(good[k], bad[k]) for k in good):
            return info.filename
        path.write_bytes(original)
    raise AssertionError(f"{path}: no member holds a model weight")


def copy_run(reference: Path, dest: Path) -> Path:
    shutil.copytree(reference, dest)
    return dest


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------------------
# load_checkpoint and predict
# ------------------------------------------------------------------------------------------------------------

def test_flipped_tensor_bytes_are_refused_by_load_checkpoint(env, reference):
    run = copy_run(reference, env / "run")
    assert ckpt.load_checkpoint(run / "final.pt")["complete"]          # a good checkpoint still loads
    member = corrupt_model_tensor(run / "final.pt")
    with pytest.raises(ckpt.CorruptCheckpoint,
                       match=rf"run/final\.pt: not a readable checkpoint: corrupted \(member {member}: CRC-32 "
                             rf"mismatch"):
        ckpt.load_checkpoint(run / "final.pt")
    assert issubclass(ckpt.CorruptCheckpoint, HarnessError)


def test_flipped_pickle_bytes_and_truncation_are_refused(env, reference):
    pkl = env / "pkl.pt"
    shutil.copyfile(reference / "final.pt", pkl)
    flip_bytes(pkl, "archive/data.pkl", count=1)
    with pytest.raises(HarnessError, match=r"pkl\.pt: not a readable checkpoint: corrupted \(member "
                                           r"archive/data\.pkl: CRC-32 mismatch"):
        ckpt.load_checkpoint(pkl)
    data = (reference / "final.pt").read_bytes()
    (env / "short.pt").write_bytes(data[: len(data) - 100])
    with pytest.raises(HarnessError, match=r"short\.pt: not a readable checkpoint: not a complete zip archive"):
        ckpt.load_checkpoint(env / "short.pt")


def test_predict_refuses_a_corrupted_final_pt(env, reference):
    run = copy_run(reference, env / "run")
    member = corrupt_model_tensor(run / "final.pt")
    done = subprocess.run(
        [sys.executable, "-m", "poseharness", "predict", "--checkpoint", str(run / "final.pt"), "--variant", "top1",
         "--dataset", "synthetic-coco", "--quiet", "--device", "cpu", "--limit", "2"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"{run / 'final.pt'}: not a readable checkpoint: corrupted (member {member}: CRC-32 mismatch" \
        in done.stderr
    assert not (env / "results").exists() or not any(p.is_file() for p in (env / "results").rglob("*"))


def test_save_writes_crcs_even_when_torch_is_told_not_to(env, reference):
    state = torch.load(reference / "final.pt", weights_only=True)
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        ckpt.save_checkpoint(env / "crc.pt", state)
    finally:
        torch.serialization.set_crc32_options(before)
    ckpt.verify_archive(env / "crc.pt")
    assert same_weights(ckpt.load_checkpoint(env / "crc.pt")["model"], state["model"])


# ------------------------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------------------------

def test_train_refuses_a_corrupted_last_pt_without_snapshots_and_says_how_to_restart(env, reference):
    run = env / "run"
    run.mkdir()
    shutil.copyfile(reference / "snapshots" / "step-000004.pt", run / "last.pt")   # an interrupted run at step 4
    member = corrupt_model_tensor(run / "last.pt")
    with pytest.raises(HarnessError) as err:
        train_toy(run)
    text = str(err.value)
    assert text.startswith(f"{run / 'last.pt'}: not a readable checkpoint: corrupted (member {member}: CRC-32")
    assert f"there is no snapshot in {run / 'snapshots'} to resume from" in text
    assert f"To restart this training from step 0, move the corrupted file away (mv {run / 'last.pt'} " \
           f"{run / 'last.pt'}.corrupt) and run the same command again" in text
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]                   # nothing was touched

    # Following the advice restarts from step 0 and gives the reference run's weights.
    (run / "last.pt").rename(run / "last.pt.corrupt")
    result = train_toy(run)
    assert result.complete and result.resumed_from is None
    assert same_weights(ckpt.load_checkpoint(run / "final.pt")["model"],
                        ckpt.load_checkpoint(reference / "final.pt")["model"])


def test_train_resumes_from_the_newest_verified_snapshot_bit_identically(env, reference):
    run = env / "run"
    (run / "snapshots").mkdir(parents=True)
    for step in (2, 4):      # an interrupted run with --keep-every 2: snapshots 2 and 4, last.pt of step 3
        name = ckpt.snapshot_name(step)
        shutil.copyfile(reference / "snapshots" / name, run / "snapshots" / name)
    state = torch.load(reference / "snapshots" / "step-000002.pt", weights_only=True)
    ckpt.save_checkpoint(run / "last.pt", {**state, "step": 3})   # what a kill would leave (any content)
    corrupt_model_tensor(run / "last.pt")
    flip_bytes(run / "snapshots" / "step-000004.pt", "archive/data.pkl", count=1)     # the newest is bad too
    logs: list[str] = []
    result = train_toy(run, log=logs.append, keep_every=KEEP)
    said = "\n".join(logs)
    assert f"{run / 'last.pt'}: not a readable checkpoint: corrupted (member" in said
    assert "corrupted too: snapshots/step-000004.pt" in said
    assert f"resuming from {run / 'snapshots' / 'step-000002.pt'} instead" in said
    assert f"resuming {run / 'snapshots' / 'step-000002.pt'} at step 2 of {STEPS}" in said
    assert result.complete and result.resumed_from == 2
    assert sorted(p.name for p in run.iterdir()) == ["final.pt", "snapshots"]     # last.pt replaced, then removed
    final, ref = ckpt.load_checkpoint(run / "final.pt"), ckpt.load_checkpoint(reference / "final.pt")
    assert same_weights(final["model"], ref["model"]) and final["losses"] == ref["losses"]
    for k, v in ref["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], final["optimizer"]["state"][k]["exp_avg"])
    ckpt.load_checkpoint(run / "snapshots" / "step-000004.pt")      # rewritten by the resumed run: good again


def test_train_restores_a_corrupted_final_pt_from_the_complete_snapshot(env, reference):
    run = copy_run(reference, env / "run")
    corrupt_model_tensor(run / "final.pt")
    logs: list[str] = []
    result = train_toy(run, log=logs.append, keep_every=KEEP)
    assert result.already_complete and result.checkpoint == run / "final.pt"
    assert f"restored {run / 'final.pt'} from {run / 'snapshots' / 'step-000006.pt'}" in "\n".join(logs)
    assert same_weights(ckpt.load_checkpoint(run / "final.pt")["model"],
                        ckpt.load_checkpoint(reference / "final.pt")["model"])


def test_cli_train_refuses_a_corrupted_final_pt_with_advice(env, reference):
    run = env / "run"
    run.mkdir()
    shutil.copyfile(reference / "final.pt", run / "final.pt")
    member = corrupt_model_tensor(run / "final.pt")
    done = subprocess.run(
        [sys.executable, "-m", "poseharness", "train", "--method", str(TOY), "--training", "base", "--dataset",
         "synthetic-coco", "--size", "tiny", "--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--out",
         str(run), "--quiet", "--device", "cpu"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"{run / 'final.pt'}: not a readable checkpoint: corrupted (member {member}: CRC-32 mismatch" \
        in done.stderr
    assert "To restart this training from step 0, move the corrupted file away" in done.stderr
