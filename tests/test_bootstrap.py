"""Bootstrap intervals: the weighted re-accumulation equals the libraries exactly, on real annotation files.

References: the libraries' own ``stats`` (every weight 1), the libraries run on a ground truth whose images
are literally repeated (integer weights), and a hand-worked two-image case.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from poseharness.bench.evaluate import perturbed_predictions
from poseharness.errors import HarnessError
from poseharness.eval.bootstrap import (Matches, interval, matches_path, metric_values, paired_difference,
                                        paired_seeds_difference, record_intervals, resample_weights,
                                        seeds_interval)
from poseharness.eval.evaluate import evaluate, evaluate_for_record
from shared_data import (COCO_GT, COCO_PREDS, CROWD_GT, CROWD_PREDS, CROWDPOSE_VAL, MMPOSE_CROWD_GT, OCHUMAN_GT,
                         SAMPLES)

K = {"coco": 17, "ochuman": 17, "crowdpose": 14}


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def perturbed(gt: dict, protocol: str, seed: int = 0) -> list[dict]:
    # Jitter, 20 % missing, false positives, duplicates; scores are continuous (uniform), so no ties.
    return perturbed_predictions(gt, K[protocol], seed=seed, jitter=0.08, missing=0.2, false_positives=0.5,
                                 duplicates=0.3)


def first_images(gt: dict, n: int) -> dict:
    keep = {image["id"] for image in gt["images"][:n]}
    return {**gt, "images": gt["images"][:n], "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}


@pytest.fixture(scope="module")
def crowd_val() -> dict:
    return load(CROWDPOSE_VAL)


def ones(m: Matches) -> np.ndarray:
    return np.ones((1, len(m.image_ids)))


def assert_equal_stats(values: dict, stats: dict, column: int = 0) -> None:
    assert list(values) == list(stats)
    for name in stats:
        assert abs(values[name][column] - stats[name]) <= 1e-12, (name, values[name][column], stats[name])


# ----------------------------------------------------------------------------------------------------------
# Every weight 1: the library's stats

@pytest.mark.parametrize("protocol, gt_path, seed", [
    (protocol, gt_path, seed)
    for protocol, gt_path in [("coco", COCO_GT), ("ochuman", OCHUMAN_GT), ("ochuman", COCO_GT),
                              ("crowdpose", CROWD_GT), ("crowdpose", MMPOSE_CROWD_GT)]
    for seed in (0, 1)] + [("crowdpose", CROWDPOSE_VAL, 0)])       # all 2,000 val images, ~12,000 detections
def test_weights_one_equal_the_library_stats(protocol, gt_path, seed):
    records = perturbed(load(gt_path), protocol, seed)
    stats, m = evaluate(records, gt_path, protocol, matches=True)
    if gt_path != CROWDPOSE_VAL:
        assert stats == evaluate(records, gt_path, protocol)        # asking for matches changes nothing
    assert m.metric_names == tuple(stats)
    assert_equal_stats(metric_values(m, ones(m), m.metric_names), stats)
    assert 0.0 < stats["AP"] < 1.0


@pytest.mark.parametrize("protocol, gt_path, preds", [
    ("coco", COCO_GT, COCO_PREDS), ("ochuman", COCO_GT, COCO_PREDS), ("crowdpose", CROWD_GT, CROWD_PREDS),
])
def test_weights_one_equal_the_library_on_the_real_example_pairs_and_empty_results(protocol, gt_path, preds):
    for records in (load(preds), []):
        stats, m = evaluate(records, gt_path, protocol, matches=True)
        assert_equal_stats(metric_values(m, ones(m), m.metric_names), stats)


# ----------------------------------------------------------------------------------------------------------
# Integer weights: the library on a ground truth where each image is repeated that many times

def repeated(gt: dict, records: list[dict], counts: np.ndarray, image_ids: np.ndarray) -> tuple[dict, list]:
    """The ground truth and results with image ``image_ids[i]`` copied ``counts[i]`` times under new ids."""
    position = {int(i): j for j, i in enumerate(image_ids)}
    anns, dets = {}, {}
    for a in gt["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    for r in records:
        dets.setdefault(r["image_id"], []).append(r)
    images, annotations, results = [], [], []
    for image in gt["images"]:
        for _ in range(int(counts[position[image["id"]]])):
            new_id = 100000 + len(images)
            images.append({**image, "id": new_id})
            annotations += [{**a, "id": 1000000 + len(annotations) + j, "image_id": new_id}
                            for j, a in enumerate(anns.get(image["id"], []))]
            results += [{**r, "image_id": new_id} for r in dets.get(image["id"], [])]
    return {**gt, "images": images, "annotations": annotations}, results


@pytest.mark.parametrize("protocol, source", [("coco", "coco"), ("ochuman", "ochuman"), ("ochuman", "coco"),
                                              ("crowdpose", "crowdpose")])
def test_integer_weights_equal_the_library_on_repeated_images(tmp_path, crowd_val, protocol, source):
    gt = {"coco": lambda: load(COCO_GT), "ochuman": lambda: load(OCHUMAN_GT),
          "crowdpose": lambda: first_images(crowd_val, 40)}[source]()
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    records = perturbed(gt, protocol, seed=5)
    _, m = evaluate(records, gt_path, protocol, matches=True)
    rng = np.random.default_rng(3)
    weights = np.concatenate([resample_weights(len(m.image_ids), 2, seed=9),
                              rng.integers(0, 4, size=(2, len(m.image_ids)))])
    values = metric_values(m, weights, m.metric_names)
    for b, counts in enumerate(weights):
        if not counts.any():
            continue
        big_gt, big_records = repeated(gt, records, counts, m.image_ids)
        big_path = tmp_path / f"gt{b}.json"
        big_path.write_text(json.dumps(big_gt))
        assert_equal_stats(values, evaluate(big_records, big_path, protocol), column=b)


# ----------------------------------------------------------------------------------------------------------
# A hand-worked case: two images, one person each, three detections

def two_images(tmp_path: Path, protocol: str) -> tuple[Path, list[dict]]:
    k = K[protocol]
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in (1, 2):
        xy = np.column_stack([100 + rng.uniform(0, 100, k), 50 + rng.uniform(0, 200, k)])
        xy[0], xy[1] = (100, 50), (200, 250)                 # keypoints span the 100 x 200 px box: 'large'
        ann = {"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": [100.0, 50.0, 100.0, 200.0],
               "keypoints": np.column_stack([xy, np.full(k, 2.0)]).ravel().tolist(), "num_keypoints": k}
        if protocol != "crowdpose":
            ann["area"] = 20000.0
        annotations.append(ann)
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480, "crowdIndex": 0.1 * i})
    category = {"id": 1, "name": "person", "keypoints": [str(j) for j in range(k)], "skeleton": []}
    path = tmp_path / f"two_{protocol}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [category]}))

    def pose(i, shift=0.0):
        kp = list(annotations[i - 1]["keypoints"])
        kp[1::3] = [y + shift for y in kp[1::3]]               # 1000 px off: OKS ~ 0 at every threshold
        return kp
    detections = [{"image_id": 1, "category_id": 1, "keypoints": pose(1), "score": 0.9},          # hit
                  {"image_id": 2, "category_id": 1, "keypoints": pose(2, 1000.0), "score": 0.8},  # miss
                  {"image_id": 2, "category_id": 1, "keypoints": pose(2), "score": 0.7}]          # hit
    return path, detections


@pytest.mark.parametrize("protocol", ["coco", "crowdpose", "ochuman"])
def test_hand_worked_two_images(tmp_path, protocol):
    """Detections in score order: hit (image 1), miss (image 2), hit (image 2); the same at every OKS threshold.

    weights (1, 1): 2 GT. tp 1 1 2, fp 0 1 1 -> recall .5 .5 1, precision 1 1/2 2/3, envelope 1 2/3 2/3.
      The 51 recall points 0.00..0.50 read 1, the 50 points 0.51..1.00 read 2/3: AP = (51 + 50·2/3) / 101.
    weights (2, 1): image 1 counts twice: 3 GT. tp 2 2 3, fp 0 1 1 -> recall 2/3 2/3 1, precision 1 2/3 3/4,
      envelope 1 3/4 3/4. Points 0.00..0.66 (67) read 1, 0.67..1.00 (34) read 3/4: AP = (67 + 34·3/4) / 101.
    weights (1, 2): 3 GT. tp 1 1 3, fp 0 2 2 -> recall 1/3 1/3 1, precision 1 1/3 3/5, envelope 1 3/5 3/5.
      Points 0.00..0.33 (34) read 1, 0.34..1.00 (67) read 3/5: AP = (34 + 67·3/5) / 101.
    weights (0, 1): only image 2: miss then hit: precision 0 1/2, envelope 1/2 everywhere: AP = 1/2.
    weights (1, 0): only the hit of image 1: AP = 1. Every recall ends at 1: AR = 1 (0 GT: −1).
    """
    gt_path, detections = two_images(tmp_path, protocol)
    stats, m = evaluate(detections, gt_path, protocol, matches=True)
    weights = np.array([[1, 1], [2, 1], [1, 2], [0, 1], [1, 0], [0, 0]])
    expected_ap = [(51 + 50 * 2 / 3) / 101, (67 + 34 * 3 / 4) / 101, (34 + 67 * 3 / 5) / 101, 0.5, 1.0, -1.0]
    values = metric_values(m, weights, m.metric_names)
    for name in ("AP", "AP50", "AP75"):
        np.testing.assert_allclose(values[name], expected_ap, rtol=0, atol=1e-12)
    for name in ("AR", "AR50", "AR75"):
        np.testing.assert_array_equal(values[name], [1, 1, 1, 1, 1, -1])
    assert stats["AP"] == pytest.approx(expected_ap[0], abs=1e-12)
    assert_equal_stats(values, stats)
    if protocol == "crowdpose":      # crowdIndex 0.1 and 0.2: image 1 is easy, image 2 medium, none hard
        np.testing.assert_array_equal(values["AP_easy"], [1, 1, 1, -1, 1, -1])
        np.testing.assert_array_equal(values["AP_medium"], [0.5, 0.5, 0.5, 0.5, -1, -1])
        assert (values["AP_hard"] == -1).all()
    else:
        np.testing.assert_allclose(values["APl"], expected_ap, rtol=0, atol=1e-12)
        assert (values["APm"] == -1).all() and (values["ARm"] == -1).all()       # no medium person


# ----------------------------------------------------------------------------------------------------------
# Intervals and differences

@pytest.fixture(scope="module")
def crowd_runs(crowd_val, tmp_path_factory):
    """Matches of a perturbation on the first 100 and 800 val images, and of a less noisy one on the 100."""
    out = {}
    for name, n, jitter in (("a", 100, 0.08), ("b", 100, 0.04), ("a", 800, 0.08)):
        gt = first_images(crowd_val, n)
        path = tmp_path_factory.mktemp("crowd") / f"gt{n}.json"
        path.write_text(json.dumps(gt))
        records = perturbed_predictions(gt, 14, seed=11, jitter=jitter, missing=0.2, false_positives=0.5,
                                        duplicates=0.3)
        out[name, n] = evaluate(records, path, "crowdpose", matches=True)
    return out


def test_interval_contains_the_point_and_narrows_with_more_images(crowd_runs):
    widths = []
    for n in (100, 800):
        stats, m = crowd_runs["a", n]
        for metric in ("AP", "AR", "AP_medium"):
            lo, hi = interval(m, metric)
            assert lo < stats[metric] < hi, (n, metric, lo, stats[metric], hi)
        lo, hi = interval(m, "AP")
        widths.append(hi - lo)
    m = crowd_runs["a", 100][1]
    lo, hi = interval(m, "AP")
    assert interval(m, "AP") == (lo, hi)                             # a fixed seed gives the same interval
    assert interval(m, "AP", seed=1) != (lo, hi)
    lo90, hi90 = interval(m, "AP", level=0.9)
    assert lo <= lo90 < hi90 <= hi
    assert widths[1] < 0.6 * widths[0]                               # 8 times the images: about 1/sqrt(8)


def test_paired_difference(crowd_runs):
    stats_a, a = crowd_runs["a", 100]
    stats_b, b = crowd_runs["b", 100]
    assert paired_difference(a, a) == (0.0, 0.0, 0.0)
    point, lo, hi = paired_difference(a, b, "AP")
    assert point == pytest.approx(stats_b["AP"] - stats_a["AP"], abs=1e-12)
    assert 0 < lo < point < hi                                      # less jitter is clearly better
    # Pairing removes the image-to-image variation both share: narrower than resampling each on its own.
    unpaired = (metric_values(b, resample_weights(100, seed=0))["AP"]
                - metric_values(a, resample_weights(100, seed=1))["AP"])
    assert hi - lo < 0.8 * np.ptp(np.percentile(unpaired, [2.5, 97.5]))
    with pytest.raises(HarnessError, match="different images"):
        paired_difference(a, crowd_runs["a", 800][1])


def test_seeds(crowd_runs):
    (sa, a), (sb, b) = crowd_runs["a", 100], crowd_runs["b", 100]
    one = seeds_interval([a], "AP")
    assert (one["lo"], one["hi"]) == interval(a, "AP") and one["std"] == 0.0
    assert one["mean"] == pytest.approx(sa["AP"], abs=1e-12)
    assert paired_seeds_difference([a], [b], "AP") == paired_difference(a, b, "AP")
    assert paired_seeds_difference([a, b], [a, b], "AP") == (0.0, 0.0, 0.0)   # paired seed by seed
    two = seeds_interval([a, b], "AP")
    assert two["mean"] == pytest.approx((sa["AP"] + sb["AP"]) / 2, abs=1e-12)
    assert two["std"] == pytest.approx(abs(sa["AP"] - sb["AP"]) / np.sqrt(2), abs=1e-12)
    # Resampling the seeds as well spreads the interval over both runs' figures.
    assert two["lo"] < min(sa["AP"], sb["AP"]) and two["hi"] > max(sa["AP"], sb["AP"])
    point, lo, hi = paired_seeds_difference([a, a], [b], "AP")
    assert point == pytest.approx(sb["AP"] - sa["AP"], abs=1e-12) and lo < point < hi


def test_resample_weights():
    w = resample_weights(50, n=400, seed=2)
    assert w.shape == (400, 50) and w.dtype == np.int64 and (w.sum(axis=1) == 50).all()
    assert np.array_equal(w, resample_weights(50, n=400, seed=2))
    assert not np.array_equal(w, resample_weights(50, n=400, seed=3))
    assert abs(w.mean() - 1) < 0.01 and abs(w.var() - 0.98) < 0.1     # multinomial: var = 1 - 1/50


def test_bad_arguments(crowd_runs):
    m = crowd_runs["a", 100][1]
    with pytest.raises(HarnessError, match="no figure APm"):
        metric_values(m, ones(m), ("APm",))
    with pytest.raises(HarnessError, match=r"shape \(B, 100\)"):
        metric_values(m, np.ones((2, 3)))
    with pytest.raises(HarnessError, match="non-negative"):
        metric_values(m, -ones(m))
    with pytest.raises(HarnessError, match="between 0 and 1"):
        interval(m, level=95)


# ----------------------------------------------------------------------------------------------------------
# Files: save / load, and the record helper

def test_save_load_round_trip_and_bad_files(tmp_path, crowd_runs):
    stats, m = crowd_runs["a", 100]
    path = m.save(tmp_path / "x.matches.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.matches.npz"]       # no temporary left
    again = Matches.load(path)
    for name in ("image_ids", "iou_thrs", "rec_thrs", "scores", "det_image", "matched", "ignored", "gt_count",
                 "crowd_index"):
        np.testing.assert_array_equal(getattr(again, name), getattr(m, name))
    assert (again.protocol, again.areas) == (m.protocol, m.areas)
    assert interval(again, "AP") == interval(m, "AP")
    assert_equal_stats(metric_values(again, ones(again), again.metric_names), stats)

    with pytest.raises(HarnessError, match=r"missing.npz: matches file not found"):
        Matches.load(tmp_path / "missing.npz")
    corrupt = tmp_path / "corrupt.matches.npz"
    corrupt.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(HarnessError, match=r"corrupt.matches.npz: not a readable matches file"):
        Matches.load(corrupt)
    text = tmp_path / "text.matches.npz"
    text.write_text("hello")
    with pytest.raises(HarnessError, match=r"text.matches.npz: not a readable matches file"):
        Matches.load(text)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(HarnessError, match=r"other.npz: not a matches file .*missing .*image_ids"):
        Matches.load(other)
    inconsistent = tmp_path / "inconsistent.npz"
    with np.load(path) as data:
        arrays = dict(data)
    np.savez(inconsistent, **{**arrays, "det_image": arrays["det_image"][:-1]})
    with pytest.raises(HarnessError, match=r"inconsistent.npz: inconsistent matches: det_image has shape"):
        Matches.load(inconsistent)


def test_evaluate_for_record_saves_matches_beside_the_predictions(tmp_path):
    pred = tmp_path / "tiny-seed0.json"
    shutil.copy(COCO_PREDS, pred)
    metrics, extra = evaluate_for_record(pred, COCO_GT, "coco")
    assert metrics == evaluate(pred, COCO_GT, "coco")
    assert extra["matches"] == str(tmp_path / "tiny-seed0.matches.npz") == str(matches_path(pred))
    m = Matches.load(extra["matches"])
    assert extra["intervals"] == record_intervals(m)
    assert list(extra["intervals"]) == [k for k, v in metrics.items() if v != -1]
    for name, (lo, hi) in extra["intervals"].items():
        assert lo <= metrics[name] <= hi and (lo, hi) == interval(m, name)
    assert evaluate_for_record(pred, COCO_GT, "coco", intervals=False) == (metrics, {})
