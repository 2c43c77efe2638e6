"""Every failure the CLI meets is one message naming the path and the problem (no traceback), and metrics computed
before a failed write are not lost: a read-only results folder, a store path below a file, a full disk while
writing a checkpoint, POSEHARNESS_* variables pointing at a file, a corrupt results.parquet, ``--threads 0``,
a coordinate of 1e300, a results file with thousands of predictions per image."""
import errno
import json
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from poseharness import cli, paths
from poseharness.argtypes import positive_int
from poseharness.checkpoint import save_checkpoint
from poseharness.data.manifest import load_manifest
from poseharness.errors import HarnessError
from poseharness.eval.validate import MAX_PREDICTIONS_PER_IMAGE, ResultsWarning, validate_results
from poseharness.io import write_text_atomic
from poseharness.threads import torch_threads

ROOT = os.geteuid() == 0          # chmod does not stop root: those tests put a file where a folder must be


def person(x0: float, y0: float) -> list[float]:
    """17 visible keypoints of one person spread over a 100 px box at (x0, y0)."""
    return [v for j in range(17) for v in (x0 + 6.0 * j, y0 + 5.0 * j, 2)]


def ground_truth() -> dict:
    """Two 640×480 images with two persons each (COCO keypoint fields)."""
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in (1, 2)]
    anns = []
    for image_id in (1, 2):
        for k, (x0, y0) in enumerate(((50.0, 60.0), (300.0, 200.0))):
            anns.append({"id": 10 * image_id + k, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                         "keypoints": person(x0, y0), "num_keypoints": 17,
                         "bbox": [x0, y0, 100.0, 85.0], "area": 8500.0})
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "supercategory": "person",
                            "keypoints": [f"k{j}" for j in range(17)], "skeleton": []}]}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Own data, results and temp folders; the tiny ground truth placed as coco/val."""
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("POSEHARNESS_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))      # where unsaved records go
    (tmp_path / "tmp").mkdir()
    dest = load_manifest("coco").annotation_path("val")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(ground_truth()))
    with torch_threads(1):
        yield tmp_path


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_message(err: str) -> str:
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("poseharness: error: ")]
    assert len(errors) == 1, err
    return errors[0]


ORACLE = ["oracle", "--method", "gog", "--dataset", "coco", "--split", "val", "--variant", "ours", "--quiet"]


def test_oracle_runs_on_the_tiny_ground_truth(store, capsys):
    code, out, err = run_cli(ORACLE, capsys)
    assert code == 0, err
    assert list((store / "results" / "records").rglob("*.json"))


def test_read_only_results_folder_is_one_message(store, capsys):
    results = store / "results"
    results.mkdir()
    if ROOT:
        (results / "predictions").write_text("a file where the predictions folder belongs\n")
    else:
        results.chmod(0o555)
    try:
        code, out, err = run_cli(ORACLE, capsys)
    finally:
        results.chmod(0o755)
    assert code == 2
    line = assert_one_message(err)
    assert str(results) in line
    assert ("Not a directory" if ROOT else "Permission denied") in line


def test_record_write_failure_keeps_the_metrics_in_a_fallback_file_and_on_stderr(store, capsys):
    records = store / "results" / "records"
    records.parent.mkdir()
    if ROOT:
        records.write_text("a file where the records folder belongs\n")
    else:
        records.mkdir()
        records.chmod(0o555)
    try:
        code, out, err = run_cli(ORACLE, capsys)
    finally:
        if not ROOT:
            records.chmod(0o755)
    assert code == 2
    line = assert_one_message(err)
    assert str(records) in line and "(writing the run record" in line
    saved = list((store / "tmp" / "poseharness-unsaved-records" / "records").rglob("*.json"))
    assert len(saved) == 1 and str(saved[0]) in err
    record = json.loads(saved[0].read_text())
    assert record["kind"] == "oracle" and 0.5 < record["metrics"]["AP"] <= 1.0
    metrics_line = next(l for l in err.splitlines() if l.startswith("its metrics (JSON): "))
    assert json.loads(metrics_line.split(": ", 1)[1]) == record["metrics"]


def test_record_write_failure_prints_the_whole_record_when_the_fallback_fails_too(store, capsys, monkeypatch):
    records = store / "results" / "records"
    records.parent.mkdir()
    records.write_text("not a folder\n")
    blocked = store / "tmp-is-a-file"
    blocked.write_text("not a folder either\n")
    monkeypatch.setattr(tempfile, "tempdir", str(blocked))
    code, out, err = run_cli(ORACLE, capsys)
    assert code == 2
    assert_one_message(err)
    assert "could not be saved to a fallback file either" in err and str(blocked) in err
    text = err.split("the whole record follows:\n", 1)[1].split("\nits metrics (JSON): ", 1)[0]
    assert json.loads(text)["metrics"]["AP"] > 0.5


@pytest.mark.parametrize("variable", ["POSEHARNESS_RESULTS", "POSEHARNESS_DATA", "POSEHARNESS_CHECKPOINTS",
                                      "POSEHARNESS_REPORTS"])
@pytest.mark.parametrize("below", [False, True])
def test_folder_variable_pointing_at_a_file_is_one_message(store, capsys, monkeypatch, variable, below):
    a_file = store / "a-file"
    a_file.write_text("x\n")
    value = str(a_file / "sub" if below else a_file)
    monkeypatch.setenv(variable, value)
    code, out, err = run_cli(["results", "show"], capsys)
    assert code == 2
    line = assert_one_message(err)
    assert f"{variable}={value}" in line and f"{a_file} is a file" in line


def test_results_dir_pointing_at_a_file_raises_for_library_callers_too(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x\n")
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "f"))
    with pytest.raises(HarnessError, match="POSEHARNESS_RESULTS=.*is a file"):
        paths.results_dir()
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "new" / "results"))   # not there yet: fine
    assert paths.results_dir() == (tmp_path / "new" / "results").resolve()
    from poseharness.checkpoint import checkpoints_dir

    monkeypatch.setenv("POSEHARNESS_CHECKPOINTS", str(tmp_path / "f" / "runs"))
    with pytest.raises(HarnessError, match="POSEHARNESS_CHECKPOINTS=.*is a file"):
        checkpoints_dir()


def test_corrupt_results_parquet_is_one_message_naming_it(store, capsys):
    table = store / "results" / "results.parquet"
    table.parent.mkdir()
    table.write_bytes(b"PAR1 this is not a parquet file" * 10)
    for argv in (["results", "show"], ["report", "--out", str(store / "report")]):
        code, out, err = run_cli(argv, capsys)
        assert code == 2, err
        line = assert_one_message(err)
        assert str(table) in line and "not a readable results table" in line and "<Buffer>" not in line


def test_pyarrow_error_reaching_the_cli_is_one_message(monkeypatch, capsys):
    import pyarrow.lib

    from poseharness.store import commands

    def boom(args):
        raise pyarrow.lib.ArrowInvalid("something\n   inside pyarrow")

    monkeypatch.setattr(commands, "_show", boom)
    code, out, err = run_cli(["results", "show"], capsys)
    assert code == 2
    assert assert_one_message(err) == "poseharness: error: something inside pyarrow (pyarrow ArrowInvalid)"


def _state(value: float) -> dict:
    return {"format": "test", "weights": torch.full((64,), value)}


def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "run" / "final.pt"
    save_checkpoint(path, _state(1.0))
    before = path.read_bytes()
    real_save = torch.save

    def full_disk(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 partial archive")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(HarnessError) as info:
        save_checkpoint(path, _state(2.0))
    message = str(info.value)
    assert message.startswith(f"{path}: no space left on device") and "previous final.pt" in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["final.pt"]       # no temp file left

    # torch's own reaction to a full disk: a RuntimeError raised over the OSError
    def torch_like(obj, fh, *a, **k):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", torch_like)
    with pytest.raises(HarnessError, match="no space left on device"):
        save_checkpoint(path, _state(2.0))
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["final.pt"]

    # the rename fails (as os.replace names it: the temp file, then the target)
    monkeypatch.setattr(torch, "save", real_save)
    real_replace = os.replace

    def replace_full(src, dst, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", replace_full)
    with pytest.raises(HarnessError, match=f"^{re.escape(str(path))}: no space left on device"):
        save_checkpoint(path, _state(2.0))
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["final.pt"]


def test_a_failed_atomic_write_names_the_target_not_the_temp_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / "out" / "metrics.json"

    def replace_full(src, dst, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", replace_full)
    with pytest.raises(OSError) as info:
        write_text_atomic(target, "{}\n")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert cli.os_error_message(info.value) == f"{target}: No space left on device"
    assert not list(target.parent.iterdir())


@pytest.mark.parametrize("argv", [
    ORACLE + ["--threads", "0"],
    ["bench", "oracle", "--threads", "0"],
    ["bench", "curve", "run", "--variant", "ours", "--dataset", "coco", "--threads", "-2"],
    ["bench", "decode", "--threads", "0"],
])
def test_threads_below_one_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--threads: must be a positive integer" in err


def test_every_threads_flag_uses_the_shared_positive_int():
    import argparse

    found = []

    def walk(parser, trail):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, trail + [name])
            elif "--threads" in action.option_strings:
                found.append((" ".join(trail), action.type))

    walk(cli.build_parser(), [])
    assert len(found) >= 4
    assert all(kind is positive_int for _, kind in found), found


def results_file(tmp_path: Path, records: list) -> Path:
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(records))
    return path


def test_huge_coordinate_is_an_error_naming_file_and_record(store, capsys):
    records = [{"image_id": 1, "category_id": 1, "keypoints": person(50.0, 60.0), "score": 0.9},
               {"image_id": 2, "category_id": 1, "keypoints": person(300.0, 200.0), "score": 0.8}]
    records[1]["keypoints"][4] = 1e300
    path = results_file(store, records)
    gt = store / "gt.json"
    gt.write_text(json.dumps(ground_truth()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no numpy overflow warning on the way
        code, out, err = run_cli(["evaluate", str(path), "--gt", str(gt), "--protocol", "coco"], capsys)
    assert code == 2
    line = assert_one_message(err)
    assert f"{path} [result 1]" in line and "1e+300" in line
    with pytest.raises(HarnessError, match=r"\[result 0\].*beyond"):
        validate_results([dict(records[0], keypoints=[-2e6] + records[0]["keypoints"][1:])], schema_or_K=17,
                         gt_image_ids=[1, 2], source="preds.json")


def test_many_predictions_per_image_warn_naming_file_and_count(store, capsys):
    rng = np.random.default_rng(0)
    n = MAX_PREDICTIONS_PER_IMAGE + 50
    records = [{"image_id": 1, "category_id": 1, "keypoints": (np.array(person(50.0, 60.0)) +
                np.tile([*rng.normal(0, 3, 2), 0], 17)).tolist(), "score": float(rng.random())} for _ in range(n)]
    with pytest.warns(ResultsWarning, match=rf"preds\.json: 1 image\(s\) with more than "
                                            rf"{MAX_PREDICTIONS_PER_IMAGE} predictions \(image 1: {n}"):
        validate_results(records, schema_or_K=17, gt_image_ids=[1, 2], source="preds.json")

    same = [{"image_id": 2, "category_id": 1, "keypoints": person(300.0, 200.0), "score": 0.5}] * 30
    with pytest.warns(ResultsWarning, match=r"preds\.json: 29 of 30 predictions repeat an identical pose"):
        validate_results(same, schema_or_K=17, gt_image_ids=[1, 2], source="preds.json")

    path = results_file(store, records + same)
    gt = store / "gt.json"
    gt.write_text(json.dumps(ground_truth()))
    code, out, err = run_cli(["evaluate", str(path), "--gt", str(gt), "--protocol", "coco"], capsys)
    assert code == 0, err                         # a warning, not an error: the evaluator decides
    warned = [line for line in err.splitlines() if line.startswith("poseharness: warning: ")]
    assert len(warned) == 2 and all(str(path) in line for line in warned), err
    assert f"image 1: {n}" in warned[0] and "29 of" in warned[1]


def test_a_sane_results_file_raises_no_warning():
    records = [{"image_id": i, "category_id": 1, "keypoints": person(50.0 + j, 60.0), "score": 0.5}
               for i in (1, 2) for j in range(MAX_PREDICTIONS_PER_IMAGE)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_results(records, schema_or_K=17, gt_image_ids=[1, 2], source="preds.json")


def test_positive_int():
    import argparse

    assert positive_int("3") == 3
    for bad in ("0", "-1", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integer"):
            positive_int(bad)
