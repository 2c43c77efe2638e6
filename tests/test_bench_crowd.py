"""``poseharness bench crowd``: model time against persons per image, a top-down and a bottom-up method.

A tiny run (1 and 4 persons per image, 2 images, 1 pass, untrained tiny models, one thread) under a temporary data
folder: one row per (method, count), top-down views = the persons of an image, bottom-up views = 1, the JSON
document's keys. No timing is asserted (timed figures never are). The report draws the figure from a hand-made
document.
"""
from __future__ import annotations

import json

import pytest

from poseharness.cli import main
from poseharness.report import build_report
from poseharness.report.plots import crowd_caption, crowd_figure
from poseharness.store import RunRecord, collect, write_record

ROW_KEYS = {"method", "view", "paradigm", "scale", "variant", "weights", "input", "dataset", "images",
            "persons_setting", "persons_per_image", "views", "views_per_image", "batch", "repeat", "pass_seconds",
            "model_ms_per_image", "model_ms_per_view", "model_ms_per_person", "inputs_ms_per_image",
            "decode_ms_per_image"}


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("POSEHARNESS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("POSEHARNESS_REPORTS", str(tmp_path / "reports"))
    return tmp_path


def test_tiny_run_rows_views_and_json(env, capsys):
    out = env / "crowd.json"
    assert main(["bench", "crowd", "--persons", "1", "4", "--images", "2", "--repeat", "1", "--jobs", "1",
                 "--decode", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "simple_baseline" in printed and "gog" in printed and "model ms/img" in printed
    doc = json.loads(out.read_text())
    assert {"bench", "dataset", "images", "seed", "persons", "generator", "batch", "repeat", "hardware",
            "hardware_summary", "torch", "versions", "threads", "device", "cpu_count", "rows"} <= set(doc)
    assert doc["bench"] == "crowd" and doc["persons"] == [1, 4] and doc["threads"] == 1 and doc["device"] == "cpu"
    assert doc["hardware"]["cpu"]
    rows = doc["rows"]
    assert [(r["method"], r["persons_setting"]) for r in rows] == [
        ("simple_baseline", 1), ("simple_baseline", 4), ("gog", 1), ("gog", 4)]
    for r in rows:
        assert set(r) == ROW_KEYS
        assert r["images"] == 2 and r["weights"] == "random-init" and r["scale"] == "tiny"
        assert r["persons_per_image"] == r["persons_setting"]          # every image holds exactly n persons
        assert r["model_ms_per_image"] > 0 and r["decode_ms_per_image"] is not None
        assert len(r["pass_seconds"]) == 1
        if r["view"] == "top-down":
            assert r["views_per_image"] == r["persons_setting"] and r["views"] == 2 * r["persons_setting"]
        else:
            assert r["view"] == "bottom-up" and r["views_per_image"] == 1 and r["views"] == 2
    # The sets stay, with their manifests, for a second run (and for other verbs) to reuse.
    assert (env / "data" / "synthetic-coco-persons4" / "synthetic-coco-persons4.yaml").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--persons", "0"], "argument --persons: must be a positive integer, got '0'"),
    (["--persons", "1", "-2"], "must be a positive integer"),
    (["--images", "0"], "argument --images: must be a positive integer"),
])
def test_cli_rejects_bad_counts(env, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "crowd", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (env / "data").exists()                                 # nothing generated


def test_cli_rejects_more_persons_than_the_generator_draws(env, capsys):
    assert main(["bench", "crowd", "--persons", "21"]) == 2
    assert "at most 20 per image" in capsys.readouterr().err
    assert main(["bench", "crowd", "--method", "gog", "--checkpoint", "x.pt"]) == 2
    assert "give --method or --checkpoint, not both" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- report

def _row(method, view, n, ms_image):
    views = n if view == "top-down" else 1
    return {"method": method, "view": view, "paradigm": view, "scale": "tiny", "variant": "v", "weights": "random-init",
            "input": [96, 128] if view == "top-down" else 256, "dataset": f"synthetic-coco-persons{n}", "images": 16,
            "persons_setting": n, "persons_per_image": float(n), "views": 16 * views, "views_per_image": float(views),
            "batch": 8, "repeat": 3, "pass_seconds": [ms_image * 16e-3] * 3, "model_ms_per_image": ms_image,
            "model_ms_per_view": ms_image / views, "model_ms_per_person": ms_image / n, "inputs_ms_per_image": 1.0,
            "decode_ms_per_image": None}


DOC = {"bench": "crowd", "dataset": "synthetic-coco", "images": 16, "seed": 0, "persons": [1, 2, 4, 8, 16],
       "batch": 8, "repeat": 3, "device": "cpu", "threads": 1, "torch": "2.0", "hardware_summary": "Test CPU x2",
       "hardware": {"cpu": "Test CPU", "cores": 2},
       "rows": [_row("simple_baseline", "top-down", n, 3.0 * n) for n in (1, 2, 4, 8, 16)]
       + [_row("gog", "bottom-up", n, 24.0 + 0.1 * n) for n in (1, 2, 4, 8, 16)]}


def test_crowd_figure_has_a_line_per_method_and_a_caption():
    fig = crowd_figure(DOC)
    per_image, per_person = fig.axes[:2]
    labels = [line.get_label() for line in per_image.get_lines()]
    assert labels == ["simple_baseline (top-down)", "gog (bottom-up)"]
    assert list(per_image.get_lines()[0].get_ydata()) == [3.0, 6.0, 12.0, 24.0, 48.0]
    assert per_image.get_xlabel() == "persons per image" and per_image.get_ylabel() == "model ms per image"
    assert per_person.get_ylabel() == "model ms per person"
    caption = crowd_caption(DOC)
    assert "Test CPU x2" in caption and "1 compute thread" in caption
    assert "not comparable to a paper's GPU figures" in caption
    assert crowd_figure({"rows": []}) is None


def test_report_draws_the_crowd_bench_when_it_exists(env):
    results = env / "results"
    prov = {"code": {"commit": "0" * 40, "dirty": False, "describe": "0000000"},
            "versions": {"python": "3.11", "torch": "2"}, "hardware": {"cpu": "Test CPU", "cores": 2}}
    write_record(RunRecord.new(
        kind="oracle", dataset="synthetic-coco", split="val", method="gog", variant="ours", scale="tiny", seed=0,
        metrics={"AP": 0.5}, config={"variant": "ours", "scale": "tiny"}, dataset_kind="synthetic",
        predictions={"path": "p.json", "sha256": "0" * 64}, prov=prov, timings={"evaluate": 0.1}), results)
    collect(results)
    report = build_report(results, env / "reports", method="gog")
    assert not (env / "reports" / "bench" / "crowd.png").exists()           # no bench yet: no figure
    assert "bench-crowd" not in report.index.read_text()

    (results / "bench").mkdir()
    (results / "bench" / "crowd.json").write_text(json.dumps(DOC))
    report = build_report(results, env / "reports", method="gog")
    png = env / "reports" / "bench" / "crowd.png"
    assert png in report.files and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = report.index.read_text()
    assert "Model time against persons per image" in index and 'src="bench/crowd.svg"' in index
    assert "Test CPU x2" in index and "not comparable to a paper&#x27;s GPU figures" in index
