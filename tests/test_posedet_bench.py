"""``poseharness bench nms`` (methods/posedet/bench_nms.py): it runs on a few images and prints and writes its
figures. No timing is asserted: the figures depend on the machine."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from poseharness.contract import method_submodule, resolve_method
from poseharness.methods import load_method
from shared_data import CROWD_GT

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("step", "variant", "setting", "images", "persons/img", "cand/img", "kept/img", "mean ms", "median ms",
           "p95 ms", "max ms")
ROW_KEYS = {"step", "setting", "variant", "images", "persons_per_image", "candidates_per_image", "kept_per_image",
            "mean_ms", "median_ms", "p95_ms", "max_ms"}


@pytest.fixture(scope="module")
def bench():
    return method_submodule(resolve_method("posedet"), "bench_nms")


def run_bench(bench, argv):
    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers(dest="bench_command"))
    args = parser.parse_args(["nms", *argv])
    return args.func(args)


def test_bench_on_the_tiny_synthetic_split(env, bench, capsys):
    out = env / "nms.json"
    assert run_bench(bench, ["--images", "3", "--repeat", "1", "--decode-images", "2", "--threads", "1",
                             "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("step ")):]
    assert all(c in table[0] for c in COLUMNS)
    assert [line.split()[:3] for line in table[1:]] == [["per_image", "posedet", "OKS-NMS"],
                                                        ["per_image", "kp_iou", "IoU-NMS"],
                                                        ["decode", "posedet", "tiny"]]
    assert "OKS-NMS 0.2" in table[1] and "IoU-NMS 0.5" in table[2]       # COCO's OKS threshold [R]
    data = json.loads(out.read_text())
    assert {"dataset", "split", "annotations", "protocol", "schema", "num_images", "per_person", "jitter",
            "background", "scale", "variants", "repeat", "threads", "cpu_count", "rows"} <= set(data)
    assert (data["dataset"], data["size"], data["schema"], data["num_images"]) == ("synthetic-coco", "tiny",
                                                                                    "coco17", 3)
    assert [r["step"] for r in data["rows"]] == ["per_image", "per_image", "decode"]
    for row in data["rows"]:
        assert set(row) == ROW_KEYS
        assert row["max_ms"] >= row["p95_ms"] >= 0 and row["mean_ms"] > 0
    nms, decode = data["rows"][0], data["rows"][2]
    assert nms["images"] == 3 and decode["images"] == 2
    assert nms["candidates_per_image"] == pytest.approx(20 * nms["persons_per_image"])
    assert 0 < nms["kept_per_image"] <= nms["candidates_per_image"]


def test_bench_on_an_annotation_file(bench, capsys):
    assert run_bench(bench, ["--gt", str(CROWD_GT), "--protocol", "crowdpose", "--images", "3", "--repeat", "1",
                             "--per-person", "5", "--background", "4", "--decode-images", "0"]) == 0
    text = capsys.readouterr().out
    assert "schema crowdpose14" in text and "OKS-NMS 0.3" in text and "decode " not in text


def test_candidates_follow_the_persons_and_the_cap(bench):
    rng = np.random.default_rng(0)
    persons = np.zeros((2, 14, 3))
    persons[:, :, :2] = rng.uniform(100, 300, (2, 14, 2))
    persons[:, :, 2] = 2
    persons[1, :5, :] = 0                                  # unlabelled joints are filled in near the person
    poses, scores = bench.candidates(rng, persons, 400, 400, per_person=20, jitter=0.05, background=3, cap=1000)
    assert poses.shape == (43, 14, 3) and np.isfinite(poses).all()
    np.testing.assert_array_equal(poses[..., 2], np.broadcast_to(scores[:, None], (43, 14)))
    assert np.abs(poses[:20, :, :2].mean(0) - persons[0, :, :2]).max() < 15
    _, full = bench.candidates(np.random.default_rng(1), persons, 400, 400, per_person=20, jitter=0.05,
                               background=0, cap=1000)
    poses, capped = bench.candidates(np.random.default_rng(1), persons, 400, 400, per_person=20, jitter=0.05,
                                     background=0, cap=30)
    assert len(poses) == 30 and np.array_equal(capped, np.sort(full)[::-1][:30])     # the best-scoring ones


def test_cli_bench_nms_is_declared(env, tmp_path):
    """`poseharness bench nms` is a verb of the CLI: methods/posedet/method.yaml declares `benches: [nms]`."""
    assert "nms" in (load_method("posedet").raw.get("benches") or ())
    done = subprocess.run([sys.executable, "-m", "poseharness", "bench", "nms", "--images", "2", "--repeat", "1",
                           "--decode-images", "1", "--threads", "1", "--out", str(tmp_path / "b.json")],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "mean ms" in done.stdout and json.loads((tmp_path / "b.json").read_text())["num_images"] == 2
