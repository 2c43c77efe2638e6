"""Evaluation: the harness's figures equal the official libraries' on real files, and bad input fails clearly.

References used here:
- direct calls of pycocotools / xtcocotools on the same files (every stat, every protocol);
- for CrowdPose, an independent route through plain pycocotools that spells out the official definition
  (crowdposetools): area = 0.53·w·h on every GT, the 14 sigmas, ignore by the ``num_keypoints`` field,
  easy/medium/hard by restricting ``params.imgIds`` (crowdIndex < 0.2, < 0.8, else hard) and taking the
  plain mean of the precision array for area 'all', rounded to 4 decimals (−1 for an empty subset).
  It never reads confidences, like the official tool, so it is the reference for zero-confidence input.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval
from xtcocotools.coco import COCO as XtCOCO
from xtcocotools.cocoeval import COCOeval as XtCOCOeval

from poseharness.bench.evaluate import perturbed_predictions
from poseharness.cli import main
from poseharness.errors import HarnessError
from poseharness.eval import (MIN_CONFIDENCE, evaluate, read_results, results_records, validate_results,
                              write_results)
from poseharness.eval.protocols import COCO_STAT_NAMES, CROWDPOSE_STAT_NAMES
from poseharness.schemas import COCO17, CROWDPOSE14
from shared_data import (COCO_GT, COCO_PREDS, CROWD_GT, CROWD_PREDS, CROWDPOSE_VAL, MMPOSE_CROWD_GT, OCHUMAN_GT,
                         SAMPLES)



# ----------------------------------------------------------------------------------------------------------
# References: the libraries called directly, and the CrowdPose definition through plain pycocotools

def direct_pycocotools(gt_path: Path, records: list[dict]) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = PyCOCO(str(gt_path))
        ev = PyCOCOeval(gt, gt.loadRes(copy.deepcopy(records)), "keypoints")
        ev.evaluate(); ev.accumulate(); ev.summarize()
    return dict(zip(COCO_STAT_NAMES, map(float, ev.stats)))


def direct_xtcocotools(gt_path: Path, records: list[dict], protocol: str) -> dict[str, float]:
    crowd = protocol == "crowdpose"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = XtCOCO(str(gt_path))
        ev = XtCOCOeval(gt, gt.loadRes(copy.deepcopy(records)), "keypoints_crowd" if crowd else "keypoints",
                        sigmas=(CROWDPOSE14 if crowd else COCO17).sigmas_array, use_area=not crowd)
        ev.params.useSegm = None
        ev.evaluate(); ev.accumulate(); ev.summarize()
    return dict(zip(CROWDPOSE_STAT_NAMES if crowd else COCO_STAT_NAMES, map(float, ev.stats)))


def crowdpose_by_pycocotools(gt_path: Path, records: list[dict]) -> dict[str, float]:
    """The CrowdPose protocol as crowdposetools defines it, computed with plain pycocotools."""
    data = json.loads(gt_path.read_text())
    for ann in data["annotations"]:
        ann["area"] = 0.53 * ann["bbox"][2] * ann["bbox"][3]
        ann.setdefault("iscrowd", 0)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = PyCOCO()
        gt.dataset = data
        gt.createIndex()
        if records:
            dt = gt.loadRes(copy.deepcopy(records))
        else:
            dt = PyCOCO()
            dt.dataset = {"images": data["images"], "categories": data["categories"], "annotations": []}
            dt.createIndex()

        def run(image_ids=None):
            ev = PyCOCOeval(gt, dt, "keypoints")   # ignore = iscrowd or the num_keypoints FIELD == 0
            ev.params.kpt_oks_sigmas = CROWDPOSE14.sigmas_array
            if image_ids is not None:
                ev.params.imgIds = image_ids
            ev.evaluate(); ev.accumulate()
            return ev

        ev = run()
        ev.summarize()
        s = ev.stats
        out = {"AP": s[0], "AP50": s[1], "AP75": s[2], "AR": s[5], "AR50": s[6], "AR75": s[7]}
        crowd_index = {img["id"]: img["crowdIndex"] for img in data["images"]}
        subsets = {
            "AP_easy": [i for i, c in crowd_index.items() if c < 0.2],
            "AP_medium": [i for i, c in crowd_index.items() if 0.2 <= c < 0.8],
            "AP_hard": [i for i, c in crowd_index.items() if c >= 0.8],
        }
        for name, ids in subsets.items():
            # Plain mean over every threshold, recall point and category, area 'all', maxDets 20; only
            # these three stats are rounded (to 4 decimals), as crowdposetools does.
            out[name] = round(float(np.mean(run(ids).eval["precision"][:, :, :, 0, :])), 4) if ids else -1.0
    return {k: float(v) for k, v in out.items()}


def assert_same(ours: dict[str, float], reference: dict[str, float], atol: float = 0.0) -> None:
    assert list(ours) == list(reference)
    for name in ours:
        assert abs(ours[name] - reference[name]) <= atol, (name, ours[name], reference[name])


def load(path: Path) -> dict:
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------------------------
# Equality with the libraries on real files

@pytest.mark.parametrize("protocol, gt_path, k", [
    ("coco", COCO_GT, 17), ("ochuman", OCHUMAN_GT, 17), ("ochuman", COCO_GT, 17),
    ("crowdpose", CROWD_GT, 14), ("crowdpose", MMPOSE_CROWD_GT, 14),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_perturbed_predictions_equal_direct_library_call(protocol, gt_path, k, seed):
    # Heavy perturbation (jitter, 20% missing, false positives, duplicates) on real annotation files.
    records = perturbed_predictions(load(gt_path), k, seed=seed, jitter=0.08, missing=0.2,
                                    false_positives=0.5, duplicates=0.3)
    ours = evaluate(records, gt_path, protocol)
    reference = direct_pycocotools(gt_path, records) if protocol == "coco" else direct_xtcocotools(
        gt_path, records, protocol)
    assert_same(ours, reference)
    assert 0.0 < ours["AP"] < 1.0


def test_real_example_pairs_equal_direct_library_call():
    coco = evaluate(COCO_PREDS, COCO_GT, "coco")
    assert_same(coco, direct_pycocotools(COCO_GT, load(COCO_PREDS)))
    assert coco["AP"] == pytest.approx(0.8609, abs=5e-5)      # xtcocoapi's example pair
    crowd = evaluate(CROWD_PREDS, CROWD_GT, "crowdpose")
    assert_same(crowd, direct_xtcocotools(CROWD_GT, load(CROWD_PREDS), "crowdpose"))
    assert_same(crowd, crowdpose_by_pycocotools(CROWD_GT, load(CROWD_PREDS)), atol=1e-12)
    assert [crowd["AP_easy"], crowd["AP_medium"], crowd["AP_hard"]] == [1.0, 0.9802, 0.4116]
    ochuman = evaluate(COCO_PREDS, COCO_GT, "ochuman")
    assert_same(ochuman, direct_xtcocotools(COCO_GT, load(COCO_PREDS), "ochuman"))


def test_crowdpose_full_val_equals_official_definition_including_zero_confidence():
    """All 2,000 val images; 10% of the predictions have all confidences 0 (xtcocotools alone drops them)."""
    records = perturbed_predictions(load(CROWDPOSE_VAL), 14, seed=7, zero_confidence=0.1)
    zero = sum(max(r["keypoints"][2::3]) <= 0 for r in records)
    assert zero > 500
    ours = evaluate(records, CROWDPOSE_VAL, "crowdpose")
    assert_same(ours, crowdpose_by_pycocotools(CROWDPOSE_VAL, records), atol=1e-12)
    assert 0.2 < ours["AP"] < 0.8
    assert -1.0 not in (ours["AP_easy"], ours["AP_medium"], ours["AP_hard"])


def test_zero_confidence_predictions_are_counted_as_the_official_tool_does():
    records = load(CROWD_PREDS)
    for r in records:
        r["keypoints"][2::3] = [0.0] * 14
    ours = evaluate(records, CROWD_GT, "crowdpose")
    assert_same(ours, crowdpose_by_pycocotools(CROWD_GT, records), atol=1e-12)
    # Confidences are never scored: the figures equal those of the untouched predictions...
    assert_same(ours, evaluate(CROWD_PREDS, CROWD_GT, "crowdpose"))
    # ...whereas xtcocotools on its own drops every prediction.
    assert direct_xtcocotools(CROWD_GT, records, "crowdpose")["AP"] == 0.0
    assert ours["AP"] > 0.7

    # The same rule for the ochuman protocol (also xtcocotools): a zero-confidence false positive counts.
    coco_records = load(COCO_PREDS)
    fp = copy.deepcopy(coco_records[0])
    fp["keypoints"][0::3] = [x + 300.0 for x in fp["keypoints"][0::3]]
    fp["keypoints"][2::3] = [0.0] * 17
    fp["score"] = 2.0                           # ranked first in its image
    with_fp = coco_records + [fp]
    assert evaluate(with_fp, COCO_GT, "ochuman")["AP"] < evaluate(coco_records, COCO_GT, "ochuman")["AP"]
    assert_same(evaluate(with_fp, COCO_GT, "ochuman"),
                direct_xtcocotools(COCO_GT, coco_records + [{**fp, "keypoints": [
                    v if i % 3 != 2 else MIN_CONFIDENCE for i, v in enumerate(fp["keypoints"])]}], "ochuman"))
    # pycocotools (coco protocol) never drops: its figure with the zero-confidence FP is lower too.
    assert evaluate(with_fp, COCO_GT, "coco")["AP"] < evaluate(coco_records, COCO_GT, "coco")["AP"]


def test_evaluate_does_not_modify_the_callers_records():
    records = load(COCO_PREDS)
    before = copy.deepcopy(records)
    evaluate(records, COCO_GT, "coco")
    evaluate(records, COCO_GT, "ochuman")
    assert records == before


# ----------------------------------------------------------------------------------------------------------
# A hand-worked image: two persons, one perfect prediction, one that misses everything

def _two_person_file(tmp_path: Path, protocol: str) -> Path:
    k = 14 if protocol == "crowdpose" else 17
    rng = np.random.default_rng(0)
    annotations = []
    for j, (x0, y0) in enumerate([(50.0, 50.0), (400.0, 60.0)]):
        # Keypoints spread over 100 × 200 px: box and keypoint extent are both in the 'large' range.
        xy = np.column_stack([x0 + rng.uniform(0, 100, k), y0 + rng.uniform(0, 200, k)])
        xy[0], xy[1] = (x0, y0), (x0 + 100, y0 + 200)
        ann = {"id": j + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [x0, y0, 100.0, 200.0],
               "keypoints": np.column_stack([xy, np.full(k, 2.0)]).ravel().tolist(),
               "num_keypoints": 12 if protocol == "crowdpose" else k}
        if protocol != "crowdpose":
            ann["area"] = 20000.0
        annotations.append(ann)
    image = {"id": 1, "file_name": "1.jpg", "width": 640, "height": 480}
    if protocol == "crowdpose":
        image["crowdIndex"] = 0.1                        # an 'easy' image; medium and hard are empty
    category = {"id": 1, "name": "person", "keypoints": [str(i) for i in range(k)], "skeleton": []}
    path = tmp_path / f"two_{protocol}.json"
    path.write_text(json.dumps({"images": [image], "annotations": annotations, "categories": [category]}))
    return path


@pytest.mark.parametrize("protocol", ["coco", "crowdpose", "ochuman"])
def test_hand_worked_two_person_image(tmp_path, protocol):
    gt_path = _two_person_file(tmp_path, protocol)
    gt = load(gt_path)
    perfect = {"image_id": 1, "category_id": 1, "keypoints": gt["annotations"][0]["keypoints"], "score": 0.9}
    miss_kp = list(gt["annotations"][1]["keypoints"])
    miss_kp[1::3] = [y + 1000.0 for y in miss_kp[1::3]]        # 1000 px below person 2: OKS ≈ 0
    miss = {"image_id": 1, "category_id": 1, "keypoints": miss_kp, "score": 0.8}

    # Perfect first: at every OKS threshold recall 0.5 at precision 1, then the miss adds a false positive.
    # Interpolated precision is 1 at the 51 recall points 0.00..0.50 and 0 at the 50 above: AP = 51/101.
    m = evaluate([perfect, miss], gt_path, protocol)
    assert m["AP"] == m["AP50"] == m["AP75"] == pytest.approx(51 / 101, abs=1e-12)
    assert m["AR"] == m["AR50"] == m["AR75"] == pytest.approx(0.5, abs=1e-12)
    # Miss first: precision is 0.5 at recall 0.5, so AP halves.
    m2 = evaluate([dict(miss, score=0.95), perfect], gt_path, protocol)
    assert m2["AP"] == pytest.approx(0.5 * 51 / 101, abs=1e-12)
    assert m2["AR"] == pytest.approx(0.5, abs=1e-12)
    if protocol == "crowdpose":
        assert (m["AP_easy"], m["AP_medium"], m["AP_hard"]) == (round(51 / 101, 4), -1.0, -1.0)
        assert m2["AP_easy"] == round(0.5 * 51 / 101, 4)
        assert_same(m, crowdpose_by_pycocotools(gt_path, [perfect, miss]), atol=1e-12)
    else:
        assert m["APl"] == pytest.approx(51 / 101, abs=1e-12) and m["ARl"] == pytest.approx(0.5, abs=1e-12)
        assert m["APm"] == m["ARm"] == -1.0                   # no GT in the medium range
    # Both perfect: AP 1.
    both = evaluate([perfect, dict(perfect, keypoints=gt["annotations"][1]["keypoints"])], gt_path, protocol)
    assert both["AP"] == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# Empty results and bad input

def test_empty_results_score_zero():
    coco = evaluate([], COCO_GT, "coco")
    assert set(coco.values()) == {0.0}
    ochuman = evaluate([], OCHUMAN_GT, "ochuman")
    assert ochuman["AP"] == ochuman["AR"] == 0.0 and ochuman["APm"] == -1.0   # no medium person in the file
    crowd = evaluate([], MMPOSE_CROWD_GT, "crowdpose")     # two medium images: easy and hard are empty
    assert_same(crowd, crowdpose_by_pycocotools(MMPOSE_CROWD_GT, []))
    assert crowd["AP"] == crowd["AP_medium"] == 0.0 and crowd["AP_easy"] == crowd["AP_hard"] == -1.0


def _good(k: int = 17) -> dict:
    return {"image_id": 785, "category_id": 1, "keypoints": [10.0, 20.0, 0.5] * k, "score": 0.9}


@pytest.mark.parametrize("records, message", [
    ({"image_id": 785}, "must be a JSON list"),
    ([_good(), [1, 2]], r"\[result 1\]: a result must be an object"),
    ([_good(14)], r"\[result 0\]: keypoints has 42 numbers; this protocol has 17 keypoints"),
    ([_good(), dict(_good(), keypoints=[float("nan")] + [1.0] * 50)], r"\[result 1\]: keypoints holds NaN"),
    ([dict(_good(), keypoints=[float("inf")] * 51)], r"\[result 0\]: keypoints holds NaN or infinity"),
    ([dict(_good(), score=float("nan"))], r"\[result 0\]: score holds NaN"),
    ([{k: v for k, v in _good().items() if k != "score"}], r"\[result 0\]: missing field\(s\) score"),
    ([{"keypoints": [0.0] * 51}], r"missing field\(s\) image_id, category_id, score"),
    ([_good(), _good(), dict(_good(), image_id=12345)], r"\[result 2\]: image_id 12345 is not an image"),
    ([dict(_good(), image_id="785")], r"image_id must be an integer"),
    ([dict(_good(), category_id=2)], r"category_id must be one of the ground truth's \[1\]"),
    ([dict(_good(), keypoints=["10"] + [1.0] * 50)], r"keypoints\[0\] is not a number: '10'"),
    ([dict(_good(), keypoints=[True] + [1.0] * 50)], r"keypoints\[0\] is not a number: True"),
    ([dict(_good(), score="high")], r"score is not a number"),
    ([dict(_good(), keypoints=None)], r"keypoints must be a list"),
    ([dict(_good(), bbox=[0, 0, 10, 10]), _good()], r"\[result 1\]: bbox must be \[x, y, w, h\]"),
])
def test_bad_results_name_file_record_and_problem(records, message):
    with pytest.raises(HarnessError, match=message) as info:
        evaluate(records, COCO_GT, "coco", results_name="preds.json")
    assert str(info.value).startswith("preds.json")


def test_bad_results_files(tmp_path):
    not_json = tmp_path / "broken.json"
    not_json.write_text("[{")
    with pytest.raises(HarnessError, match="broken.json: not valid JSON"):
        evaluate(not_json, COCO_GT, "coco")
    with pytest.raises(HarnessError, match="missing.json: results file not found"):
        evaluate(tmp_path / "missing.json", COCO_GT, "coco")
    obj = tmp_path / "object.json"
    obj.write_text('{"annotations": []}')
    with pytest.raises(HarnessError, match="object.json: results must be a JSON list"):
        evaluate(obj, COCO_GT, "coco")
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps([_good(), dict(_good(), score=float("nan"))]))   # json writes NaN
    with pytest.raises(HarnessError, match=r"nan.json \[result 1\]: score holds NaN"):
        evaluate(nan, COCO_GT, "coco")


def test_bad_ground_truth(tmp_path):
    with pytest.raises(HarnessError, match="annotation file not found"):
        evaluate([], tmp_path / "nope.json", "coco")
    with pytest.raises(HarnessError, match="unknown evaluation protocol 'mpii'"):
        evaluate([], COCO_GT, "mpii")
    # CrowdPose files have no area: the coco protocol cannot score them; COCO files have no crowdIndex.
    with pytest.raises(HarnessError, match=r"annotation \d+\]: missing field\(s\) area"):
        evaluate([], CROWD_GT, "coco")
    with pytest.raises(HarnessError, match=r"image 0\]: missing field\(s\) crowdIndex"):
        evaluate([], COCO_GT, "crowdpose")
    gt = load(CROWD_GT)
    for ann in gt["annotations"]:
        ann["area"] = 1000.0
    bad = tmp_path / "crowd_as_coco.json"
    bad.write_text(json.dumps(gt))
    with pytest.raises(HarnessError, match="keypoints has 42 numbers; the ochuman protocol has 17"):
        evaluate([], bad, "ochuman")


def test_validate_results_returns_clean_copies():
    records = [dict(_good(), center=[1, 2], keypoints=[1] * 51, image_id=np.int64(785))]
    clean = validate_results(records, schema_or_K=COCO17, gt_image_ids=[785], source="x")
    assert clean == [{"image_id": 785, "category_id": 1, "keypoints": [1.0] * 51, "score": 0.9}]
    assert type(clean[0]["image_id"]) is int and type(clean[0]["keypoints"][0]) is float
    assert validate_results([], schema_or_K=17, gt_image_ids=[], source="x") == []
    boxed = validate_results([dict(_good(), bbox=[1, 2, 3, 4])], schema_or_K=17, gt_image_ids=[785], source="x")
    assert boxed[0]["bbox"] == [1.0, 2.0, 3.0, 4.0]


# ----------------------------------------------------------------------------------------------------------
# The results writer

def test_write_read_results_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    poses = rng.uniform(0, 600, (6, 17, 3))
    poses[..., 2] = rng.uniform(-1, 1, (6, 17))
    poses[0, :, 2] = 0.0                              # all-zero confidences: written as MIN_CONFIDENCE
    ids = np.array([785, 785, 40083, 196141, 197388, 197388])
    scores = rng.random(6)
    path = write_results(tmp_path / "out" / "results.json", ids, poses, scores)
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]     # no temporary left over
    records = read_results(path)
    assert len(records) == 6
    for r, i, pose, s in zip(records, ids, poses, scores):
        assert set(r) == {"image_id", "category_id", "keypoints", "score"}     # no bbox, by decision
        assert r["image_id"] == i and r["category_id"] == 1 and r["score"] == s
        kp = np.array(r["keypoints"]).reshape(17, 3)
        np.testing.assert_array_equal(kp[:, :2], pose[:, :2])
        np.testing.assert_array_equal(kp[:, 2], np.maximum(pose[:, 2], MIN_CONFIDENCE))
    assert evaluate(path, COCO_GT, "coco") == evaluate(records, COCO_GT, "coco")
    # Two columns: confidence 1.
    two = results_records([785], poses[:1, :, :2], [0.5])
    assert two[0]["keypoints"][2::3] == [1.0] * 17
    with pytest.raises(ValueError, match="finite"):
        results_records([785], np.full((1, 17, 3), np.nan), [0.5])
    with pytest.raises(ValueError, match="poses"):
        results_records([785, 786], poses[:1], [0.5])


# ----------------------------------------------------------------------------------------------------------
# Command line

def test_cli_evaluate_with_gt_and_out(tmp_path, capsys):
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(CROWD_PREDS), "--gt", str(CROWD_GT), "--protocol", "crowdpose",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "AP_medium   0.9802" in printed and "loading annotations" not in printed
    saved = json.loads(out.read_text())
    assert saved["metrics"] == evaluate(CROWD_PREDS, CROWD_GT, "crowdpose")
    assert saved["evaluator"]["library"] == "xtcocotools" and saved["num_predictions"] == 15


def test_cli_evaluate_with_dataset_manifest(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path))
    target = tmp_path / "crowdpose" / "annotations" / "crowdpose_val.json"
    assert main(["evaluate", str(CROWD_PREDS), "--dataset", "crowdpose", "--split", "val"]) == 2
    assert "run `poseharness data prepare crowdpose` first" in capsys.readouterr().err
    target.parent.mkdir(parents=True)
    target.write_bytes(CROWD_GT.read_bytes())
    assert main(["evaluate", str(CROWD_PREDS), "--dataset", "crowdpose", "--split", "val",
                 "--out", str(tmp_path / "m.json")]) == 0
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["dataset"] == "crowdpose" and saved["split"] == "val"
    assert saved["metrics"]["AP_hard"] == 0.4116


def test_cli_evaluate_argument_errors(capsys):
    assert main(["evaluate", str(COCO_PREDS), "--gt", str(COCO_GT)]) == 2
    assert "--gt needs --protocol" in capsys.readouterr().err
    assert main(["evaluate", str(COCO_PREDS)]) == 2
    assert main(["evaluate", str(COCO_PREDS), "--dataset", "coco", "--gt", str(COCO_GT)]) == 2
    assert main(["evaluate", str(COCO_PREDS), "--gt", str(COCO_GT), "--protocol", "crowdpose"]) == 2
    assert "crowdIndex" in capsys.readouterr().err


def test_cli_bench_evaluate_agrees(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "evaluate", "--gt", str(COCO_GT), "--protocol", "coco", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pycocotools" in printed and "xtcocotools" in printed and "NO" not in printed
    saved = json.loads(out.read_text())
    names = [b["backend"] for b in saved["backends"]]
    assert names[:3] == ["harness (pycocotools)", "pycocotools", "xtcocotools"]
    assert all(b["agrees"] and b["seconds"] > 0 for b in saved["backends"])


def test_perturbed_predictions_are_seeded_and_mixed():
    gt = load(CROWDPOSE_VAL)
    a = perturbed_predictions(gt, 14, seed=3, missing=0.1, false_positives=0.1, duplicates=0.05)
    assert a == perturbed_predictions(gt, 14, seed=3, missing=0.1, false_positives=0.1, duplicates=0.05)
    assert a != perturbed_predictions(gt, 14, seed=4)
    eligible = sum(1 for ann in gt["annotations"]
                   if not ann["iscrowd"] and any(v > 0 for v in ann["keypoints"][2::3]))
    expected = round(0.9 * eligible) + round(0.05 * round(0.9 * eligible)) + round(0.1 * eligible)
    assert abs(len(a) - expected) < 0.02 * eligible
    assert all(min(r["keypoints"][2::3]) >= 0.05 for r in a)
