"""The error diagnosis in the records, the results table and the report (issue 19, integration).

Hand-made ground truth (two images, three persons drawn from a template) and predictions with known errors: one
detection has its left/right wrists inverted, one misses its nose by 60 px, one is a perfect copy, plus a
background false positive. ``finish`` writes the record (the real evaluation and diagnosis), ``collect`` folds it,
and the real ``report`` renders the gog table2 page, its diagnosis section and figure, and the gallery page of
the largest errors; the last test opens them in headless Chromium (skipped only without a browser on PATH).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poseharness.data.manifest import load_manifest
from poseharness.eval.diagnosis import diagnose
from poseharness.pipeline import Predictions, RunInfo, finish
from poseharness.report import build_report
from poseharness.schemas import COCO17
from poseharness.store import RunRecord, collect, load_table, metric_columns, write_record
from poseharness.store.collect import DIAG_COLUMNS
from poseharness.store.store import iter_record_paths, read_record

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PROV = {"code": {"commit": COMMIT, "dirty": False, "describe": "0123456"},
        "versions": {"python": "3.11"}, "hardware": {"cpu": "Test CPU", "cores": 2}}
PRED = {"path": "predictions.json", "sha256": "0" * 64}
TEMPLATE = np.array([(50, 20), (55, 15), (45, 15), (62, 18), (38, 18), (75, 50), (25, 50), (85, 85), (15, 85),
                     (90, 120), (10, 120), (65, 120), (35, 120), (68, 160), (32, 160), (70, 195), (30, 195)],
                    dtype=np.float64)
PERSONS = [(1, 20.0, 40.0), (1, 200.0, 40.0), (2, 50.0, 30.0)]      # (image id, x0, y0)


def person(j: int) -> np.ndarray:
    """(17, 3) keypoints of person j, all labelled."""
    _, x0, y0 = PERSONS[j]
    return np.column_stack([TEMPLATE + (x0, y0), np.full(17, 2.0)])


@pytest.fixture
def gt_path(tmp_path) -> Path:
    anns = [{"id": j + 1, "image_id": im, "category_id": 1, "iscrowd": 0, "bbox": [x0, y0, 100.0, 200.0],
             "area": 20000.0, "keypoints": person(j).ravel().tolist(), "num_keypoints": 17}
            for j, (im, x0, y0) in enumerate(PERSONS)]
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in (1, 2)]
    category = {"id": 1, "name": "person", "keypoints": list(COCO17.keypoints), "skeleton": []}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [category]}))
    return path


def predictions() -> Predictions:
    """Person 0 with its wrists inverted (left <-> right), person 1 with its nose 60 px off (a miss), person 2
    exact, and a background detection far from everyone in image 2."""
    p0, p1, p2 = person(0), person(1), person(2)
    p0[[9, 10]] = p0[[10, 9]]
    p1[0, 0] += 60.0
    far = person(2)
    far[:, 0] += 400.0
    preds = Predictions(17)
    preds.add(1, np.stack([p0, p1]), np.array([0.9, 0.8]))
    preds.add(2, np.stack([p2, far]), np.array([0.95, 0.3]))
    return preds


def run_info(variant: str = "ours") -> RunInfo:
    return RunInfo(kind="trained", manifest=load_manifest("synthetic-coco"), split="val", method="gog",
                   variant=variant, scale="tiny", seed=0, config={"variant": variant, "scale": "tiny", "seed": 0})


def test_finish_writes_the_diagnosis_into_the_record(tmp_path, gt_path):
    store = tmp_path / "results"
    out = finish(predictions(), run_info(), tmp_path / "preds.json", gt_path, timings={"predict": 1.0},
                 store_root=store)
    record = read_record(out["record"])
    d = record.diagnosis
    assert d is not None and d == out["diagnosis"]
    assert d["counts"]["inversion"] == 2 and d["counts"]["miss"] == 1 and d["counts"]["background_fp"] == 1
    assert d["counts_per_keypoint"]["left_wrist"]["inversion"] == 1
    assert d["counts_per_keypoint"]["nose"]["miss"] == 1
    assert d["ap"]["original"]["AP"] == pytest.approx(record.metrics["AP"], abs=1e-12)
    assert {"evaluate", "diagnose", "predict"} <= set(record.timings) and record.timings["diagnose"] > 0
    # Not written: no diagnosis (and no time for it).
    quiet = finish(predictions(), run_info(), tmp_path / "preds2.json", gt_path, timings={}, write=False)
    assert quiet["diagnosis"] is None and "diagnose" not in quiet["timings"]


def test_finish_with_limit_diagnoses_the_images_seen(tmp_path, gt_path):
    preds = Predictions(17)
    preds.add(1, np.stack([person(0), person(1)]), np.array([0.9, 0.8]))
    out = finish(preds, run_info(), tmp_path / "preds.json", gt_path, timings={}, limit=1, store_root=tmp_path)
    record = read_record(out["record"])
    assert record.subset == "first-1-images"
    assert record.diagnosis["counts"]["images"] == 1 and record.diagnosis["counts"]["persons"] == 2
    assert record.diagnosis["counts"]["good"] == 34 and record.diagnosis["counts"]["false_negatives"] == 0


def _record(root: Path, variant: str, diagnosis: dict | None, seed: int = 0) -> RunRecord:
    record = RunRecord.new(
        kind="trained", dataset="synthetic-coco", split="val", method="gog", variant=variant, scale="tiny",
        seed=seed, metrics={"AP": 0.5}, config={"variant": variant, "scale": "tiny", "seed": seed},
        dataset_kind="synthetic", predictions=PRED, prov=PROV, timings={"evaluate": 0.5}, diagnosis=diagnosis)
    write_record(record, root)
    return record


def _strip_field(path: Path, name: str) -> None:
    """Rewrite a record file as one written before ``name`` existed."""
    raw = json.loads(path.read_text())
    del raw[name]
    path.write_text(json.dumps(raw, indent=1) + "\n")


def test_collect_gives_diag_columns_and_nan_for_an_older_record(tmp_path, gt_path):
    preds = tmp_path / "preds.json"
    finish(predictions(), run_info(), preds, gt_path, timings={}, write=False)
    diag = diagnose(preds, gt_path, "coco", schema=COCO17)
    root = tmp_path / "results"
    _record(root, "ours", diag)
    old = _record(root, "dark", None)
    path = next(p for p in iter_record_paths(root) if old.run_id in p.name)
    _strip_field(path, "diagnosis")
    assert read_record(path).diagnosis is None          # an older record still loads
    report = collect(root)
    assert not report.bad and report.rows == 2
    df = load_table(root).set_index("variant")
    assert set(DIAG_COLUMNS) <= set(df.columns)
    assert df.loc["ours", "diag_inversion"] == 2 and df.loc["ours", "diag_miss"] == 1
    assert df.loc["ours", "diag_gain_inversion"] == pytest.approx(diag["gain"]["inversion"]["AP"])
    assert df.loc["ours", "diag_ap_original"] == pytest.approx(diag["ap"]["original"]["AP"])
    assert json.loads(df.loc["ours", "diag_per_keypoint"])["nose"]["miss"] == 1
    assert all(math.isnan(df.loc["dark", c]) for c in DIAG_COLUMNS if c != "diag_per_keypoint")
    assert pd.isna(df.loc["dark", "diag_per_keypoint"])
    assert metric_columns(load_table(root)) == ["AP"]


def test_a_bad_diagnosis_is_refused(tmp_path):
    from poseharness.errors import HarnessError

    with pytest.raises(HarnessError, match="diagnosis"):
        _record(tmp_path, "ours", {"counts": {"miss": -1}, "counts_per_keypoint": {}, "ap": {}, "gain": {}})


def test_report_page_shows_the_diagnosis_section(tmp_path, gt_path):
    preds = tmp_path / "preds.json"
    finish(predictions(), run_info(), preds, gt_path, timings={}, write=False)
    diag = diagnose(preds, gt_path, "coco", schema=COCO17)
    root = tmp_path / "results"
    _record(root, "ours", diag)
    _record(root, "dark", None)                          # a column without a diagnosis: not in the section
    collect(root)
    out = tmp_path / "reports"
    build_report(root, out, method="gog")
    page = (out / "gog" / "table2.html").read_text(encoding="utf-8")
    md = (out / "gog" / "table2.md").read_text(encoding="utf-8")
    assert "Why the variants differ: error diagnosis" in page and "Why the variants differ" in md
    assert (out / "gog" / "table2-diagnosis.svg").stat().st_size > 0
    assert (out / "gog" / "table2-diagnosis.png").stat().st_size > 0
    assert 'src="table2-diagnosis.svg"' in page
    section = page[page.index('<section class="diagnosis">'):]
    assert '<tr data-variant="ours">' in section and '<tr data-variant="dark">' not in section
    gain = 100 * diag["gain"]["inversion"]["AP"]
    assert f'data-stage="inversion" data-value="{gain:.4f}"' in section
    assert '<details class="per-keypoint" data-variant="ours">' in section
    assert "| nose | 2 | 0 | 0 | 0 | 1 |" in md        # persons 1 and 2 good, person 1's nose a miss
    # A table whose records carry no diagnosis gets no section and no figure.
    assert "Why the variants differ" not in (out / "gog" / "oracle.html").read_text(encoding="utf-8")
    assert not (out / "gog" / "oracle-diagnosis.svg").exists()


def _gallery_report(tmp_path: Path) -> Path:
    """finish (the real record) on a split laid out as the synthetic-coco manifest says, collect, report;
    returns the report's gog folder."""
    gt = tmp_path / "annotations" / "val.json"          # the synthetic-coco manifest's layout of split val
    gt.parent.mkdir()
    anns = [{"id": j + 1, "image_id": im, "category_id": 1, "iscrowd": 0, "bbox": [x0, y0, 100.0, 200.0],
             "area": 20000.0, "keypoints": person(j).ravel().tolist(), "num_keypoints": 17}
            for j, (im, x0, y0) in enumerate(PERSONS)]
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in (1, 2)]
    category = {"id": 1, "name": "person", "keypoints": list(COCO17.keypoints), "skeleton": []}
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": [category]}))
    root = tmp_path / "results"
    out = finish(predictions(), run_info(), tmp_path / "preds.json", gt, timings={}, store_root=root)
    assert out["diagnosis"]["sources"] == {"annotations": str(gt), "images": str(tmp_path / "images" / "val"),
                                           "schema": "coco17"}
    collect(root)
    build_report(root, tmp_path / "reports", method="gog")
    return tmp_path / "reports" / "gog"


GALLERY = "table2-synthetic-coco-tiny-ours-gallery"


def test_gallery_page_of_the_largest_errors_is_linked_from_the_table(tmp_path):
    """The report draws the worst image (image 1: two inverted wrists and a missed nose, weight 3; image 2 has
    only a background detection, no keypoint error) and links its page from the table's diagnosis."""
    folder = _gallery_report(tmp_path)
    page = (folder / "table2.html").read_text(encoding="utf-8")
    name = GALLERY
    assert f'<a class="gallery" href="{name}.html">gallery</a>' in page
    assert f"[Ours]({name}.html)" in (folder / "table2.md").read_text(encoding="utf-8")
    gallery = (folder / f"{name}.html").read_text(encoding="utf-8")
    assert gallery.count('class="card gallery-item"') == 1
    assert 'data-image-id="1" data-weight="3"' in gallery and "inversion 2" in gallery and "miss 1" in gallery
    assert f'src="gallery/{name}-1.png"' in gallery and (folder / "gallery" / f"{name}-1.png").stat().st_size > 0


def test_diagnosis_and_gallery_in_headless_chromium(tmp_path):
    """Chromium (no network) opens the table page: the diagnosis figure decodes, the gallery link is in the DOM
    it builds, and the gallery page's image decodes too."""
    from urllib.parse import urljoin

    from test_report_browser import Chromium, Links, _browser_binary, _probe

    binary = _browser_binary()
    if binary is None:
        pytest.skip("no headless browser on PATH")
    chromium = Chromium(binary, tmp_path / "chromium")
    table_url = (_gallery_report(tmp_path) / "table2.html").as_uri()
    dom = chromium.dom(table_url)
    assert "Why the variants differ: error diagnosis" in dom
    [link] = [a for a in Links(dom).links if a["text"] == "gallery"]
    probe = _probe(chromium, table_url, chromium.work)
    assert "table2-diagnosis.svg" in [i["src"] for i in probe["images"]] and probe["resources"] == []
    assert all(i["complete"] and i["width"] > 0 for i in probe["images"])
    gallery = _probe(chromium, urljoin(table_url, link["href"]), chromium.work)
    assert [i["src"] for i in gallery["images"]] == [f"gallery/{GALLERY}-1.png"]
    assert gallery["images"][0]["complete"] and gallery["images"][0]["width"] > 0
