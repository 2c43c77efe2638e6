"""Error diagnosis (coco-analyze): hand-made cases whose categories and corrected AP are known in advance.

Each case is one image with persons drawn from a fixed template (100 × 200 px, left/right joints 20–80 px apart),
150 px apart, every keypoint labelled. A prediction is a copy of a person with chosen keypoints moved; the ks
of a moved keypoint follows from ks = exp(-d² / (2 s² k²)), k = 2σ, s² the protocol's scale (COCO / OCHuman
``area`` = 20000, CrowdPose 0.53·w·h = 10600). The uncorrected AP must equal ``evaluate``'s figures exactly.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from poseharness.errors import HarnessError
from poseharness.eval import commands, evaluate
from poseharness.eval.diagnosis import (CATEGORIES, INSTANCE_ERRORS, KEYPOINT_ERRORS, diagnose, keypoint_errors,
                                        optimal_scores)
from poseharness.schemas import COCO17, CROWDPOSE14
from shared_data import COCO_GT, COCO_PREDS, CROWD_GT, CROWD_PREDS

PROTOCOLS = ["coco", "crowdpose", "ochuman"]
STAGES = ("original", *KEYPOINT_ERRORS, *INSTANCE_ERRORS)
# Template keypoints (x, y) in a 100 × 200 box, by name; CrowdPose's head and neck added.
TEMPLATE = {
    "nose": (50, 20), "left_eye": (55, 15), "right_eye": (45, 15), "left_ear": (62, 18), "right_ear": (38, 18),
    "left_shoulder": (75, 50), "right_shoulder": (25, 50), "left_elbow": (85, 85), "right_elbow": (15, 85),
    "left_wrist": (90, 120), "right_wrist": (10, 120), "left_hip": (65, 120), "right_hip": (35, 120),
    "left_knee": (68, 160), "right_knee": (32, 160), "left_ankle": (70, 195), "right_ankle": (30, 195),
    "head": (50, 8), "neck": (50, 40),
}
ORIGINS = [(20.0, 40.0), (170.0, 40.0), (320.0, 40.0)]


def schema_of(protocol):
    return CROWDPOSE14 if protocol == "crowdpose" else COCO17


def scale_of(protocol):
    return 0.53 * 100 * 200 if protocol == "crowdpose" else 100.0 * 200.0


def person(protocol, j):
    """(K, 3) keypoints of person j: the template at ORIGINS[j], all labelled (v = 2)."""
    x0, y0 = ORIGINS[j]
    xy = np.array([TEMPLATE[name] for name in schema_of(protocol).keypoints], dtype=np.float64) + (x0, y0)
    return np.column_stack([xy, np.full(len(xy), 2.0)])


def write_gt(tmp_path: Path, protocol: str, n: int = 3) -> Path:
    schema = schema_of(protocol)
    annotations = []
    for j in range(n):
        x0, y0 = ORIGINS[j]
        ann = {"id": j + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [x0, y0, 100.0, 200.0],
               "keypoints": person(protocol, j).ravel().tolist(),
               "num_keypoints": 12 if protocol == "crowdpose" else schema.num_keypoints}
        if protocol != "crowdpose":
            ann["area"] = 20000.0
        annotations.append(ann)
    image = {"id": 1, "file_name": "1.jpg", "width": 640, "height": 480}
    if protocol == "crowdpose":
        image["crowdIndex"] = 0.5
    category = {"id": 1, "name": "person", "keypoints": list(schema.keypoints), "skeleton": []}
    path = tmp_path / f"gt_{protocol}.json"
    path.write_text(json.dumps({"images": [image], "annotations": annotations, "categories": [category]}))
    return path


def record(kp, score):
    return {"image_id": 1, "category_id": 1, "keypoints": np.asarray(kp, dtype=np.float64).ravel().tolist(),
            "score": float(score)}


def shift_for(ks, protocol, name):
    """The distance (px) at which a keypoint of type ``name`` has similarity ``ks``."""
    schema = schema_of(protocol)
    k = 2 * schema.sigmas[schema.keypoints.index(name)]
    return np.sqrt(-2 * np.log(ks) * scale_of(protocol)) * k


def moved(protocol, j, name, dx=0.0, dy=0.0, to=None):
    kp = person(protocol, j)
    i = schema_of(protocol).keypoints.index(name)
    kp[i, :2] = to if to is not None else kp[i, :2] + (dx, dy)
    return kp


def check_original_equals_evaluate(diag, records, gt_path, protocol):
    official = evaluate(records, gt_path, protocol)
    assert {f: official[f] for f in ("AP", "AP50", "AP75")} == diag["ap"]["original"]


# ----------------------------------------------------------------------------------------------------------
# Hand-made cases, every protocol

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_perfect_predictions_are_all_good(tmp_path, protocol):
    gt = write_gt(tmp_path, protocol)
    records = [record(person(protocol, j), 0.9 - 0.1 * j) for j in range(3)]
    d = diagnose(records, gt, protocol)
    K = schema_of(protocol).num_keypoints
    c = d["counts"]
    assert (c["keypoints"], c["good"], c["matched_detections"]) == (3 * K, 3 * K, 3)
    assert c["persons"] == c["detections"] == 3
    assert c["jitter"] == c["inversion"] == c["swap"] == c["miss"] == 0
    assert c["background_fp"] == c["false_negatives"] == c["scoring_errors"] == c["misordered_images"] == 0
    assert list(d["ap"]) == list(STAGES) and list(d["gain"]) == list(STAGES[1:])
    assert all(v == 1.0 for s in STAGES for v in d["ap"][s].values())
    assert all(v == 0.0 for s in STAGES[1:] for v in d["gain"][s].values())
    assert all(counts == {"good": 3, "jitter": 0, "inversion": 0, "swap": 0, "miss": 0}
               for counts in d["counts_per_keypoint"].values())
    check_original_equals_evaluate(d, records, gt, protocol)
    json.dumps(d, allow_nan=False)                                   # plain JSON


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_left_right_exchange_is_an_inversion(tmp_path, protocol):
    gt = write_gt(tmp_path, protocol)
    kp = person(protocol, 0)
    names = schema_of(protocol).keypoints
    lw, rw = names.index("left_wrist"), names.index("right_wrist")       # 80 px apart
    kp[[lw, rw]] = kp[[rw, lw]]
    records = [record(kp, 0.9), record(person(protocol, 1), 0.8), record(person(protocol, 2), 0.7)]
    d = diagnose(records, gt, protocol)
    assert d["counts"]["inversion"] == 2 and d["counts"]["swap"] == d["counts"]["miss"] == d["counts"]["jitter"] == 0
    per = d["counts_per_keypoint"]
    assert per["left_wrist"]["inversion"] == per["right_wrist"]["inversion"] == 1
    ap = d["ap"]
    assert ap["original"]["AP"] < 1.0 and ap["miss"] == ap["swap"] == ap["original"]
    assert ap["inversion"] == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
    assert d["gain"]["inversion"]["AP"] == pytest.approx(1.0 - ap["original"]["AP"])
    check_original_equals_evaluate(d, records, gt, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_keypoint_on_the_neighbour_is_a_swap(tmp_path, protocol):
    gt = write_gt(tmp_path, protocol)
    neighbour_knee = person(protocol, 1)[schema_of(protocol).keypoints.index("left_knee"), :2]
    records = [record(moved(protocol, 0, "left_knee", to=neighbour_knee), 0.9),
               record(person(protocol, 1), 0.8), record(person(protocol, 2), 0.7)]
    d = diagnose(records, gt, protocol)
    assert d["counts"]["swap"] == 1 and d["counts_per_keypoint"]["left_knee"]["swap"] == 1
    assert d["counts"]["inversion"] == d["counts"]["miss"] == d["counts"]["jitter"] == 0
    assert d["ap"]["original"]["AP"] < 1.0 and d["ap"]["miss"] == d["ap"]["original"]
    assert d["ap"]["swap"]["AP"] == 1.0
    check_original_equals_evaluate(d, records, gt, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_small_shift_is_jitter_and_far_shift_is_miss(tmp_path, protocol):
    gt = write_gt(tmp_path, protocol)
    jittered = moved(protocol, 0, "left_elbow", dy=shift_for(0.7, protocol, "left_elbow"))   # ks 0.7
    missed = moved(protocol, 1, "right_ankle", dy=250.0)                                      # below everyone
    records = [record(jittered, 0.9), record(missed, 0.8), record(person(protocol, 2), 0.7)]
    d = diagnose(records, gt, protocol)
    per = d["counts_per_keypoint"]
    assert (d["counts"]["jitter"], d["counts"]["miss"], d["counts"]["inversion"], d["counts"]["swap"]) == (1, 1, 0, 0)
    assert per["left_elbow"]["jitter"] == 1 and per["right_ankle"]["miss"] == 1
    # The miss costs the 0.95 threshold (OKS 16/17 or 13/14); correcting it (to ks 0.5^(1/4)) restores AP 1.
    assert d["ap"]["original"]["AP"] < 1.0 and d["ap"]["miss"]["AP"] == 1.0
    check_original_equals_evaluate(d, records, gt, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_background_false_positive_and_false_negative(tmp_path, protocol):
    gt = write_gt(tmp_path, protocol)
    far = person(protocol, 0)
    far[:, 1] += 1000.0                                                  # nobody there: OKS 0 with everyone
    records = [record(far, 0.99), record(person(protocol, 0), 0.9), record(person(protocol, 1), 0.8)]
    d = diagnose(records, gt, protocol)                                  # person 2 is never detected
    c = d["counts"]
    assert (c["background_fp"], c["false_negatives"], c["detections"], c["persons"]) == (1, 1, 3, 3)
    assert d["counts_per_oks"]["background_fp"] == [1] * 10 and d["counts_per_oks"]["false_negatives"] == [1] * 10
    ap = d["ap"]
    assert ap["original"]["AP"] < 67 / 101
    # Rescored, the false positive (best OKS 0) goes last: precision 1 up to recall 2/3 = 67 of 101 points.
    assert ap["score"]["AP"] == pytest.approx(67 / 101, abs=1e-12) and d["gain"]["score"]["AP"] > 0
    assert ap["background_fp"]["AP"] == pytest.approx(67 / 101, abs=1e-12)
    assert ap["false_negative"] == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
    check_original_equals_evaluate(d, records, gt, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_scores_in_the_wrong_order_are_a_scoring_error(tmp_path, protocol):
    gt = write_gt(tmp_path, protocol)
    names = schema_of(protocol).keypoints
    # A duplicate of person 0 with every keypoint at ks 0.87 (all 'good', OKS 0.87), scored above the exact one.
    duplicate = person(protocol, 0)
    duplicate[:, 1] += [shift_for(0.87, protocol, n) for n in names]
    records = [record(duplicate, 0.95), record(person(protocol, 0), 0.5),
               record(person(protocol, 1), 0.8), record(person(protocol, 2), 0.7)]
    d = diagnose(records, gt, protocol)
    c = d["counts"]
    assert c["scoring_errors"] == 1 and c["misordered_images"] == 1
    assert c["good"] == c["keypoints"] and c["matched_detections"] == 3    # the exact one is unmatched at 0.1
    ap = d["ap"]
    assert ap["original"]["AP"] < 1.0 and ap["jitter"] == ap["original"]    # nothing to correct in keypoints
    assert ap["score"] == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0} and d["gain"]["score"]["AP"] > 0
    check_original_equals_evaluate(d, records, gt, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_correcting_everything_gives_ap_one(tmp_path, protocol):
    gt = write_gt(tmp_path, protocol)
    names = schema_of(protocol).keypoints
    p0 = person(protocol, 0)
    lw, rw = names.index("left_wrist"), names.index("right_wrist")
    p0[[lw, rw]] = p0[[rw, lw]]                                                            # inversion
    p0[names.index("left_knee"), :2] = person(protocol, 1)[names.index("left_knee"), :2]   # swap
    p0[names.index("right_elbow"), 1] += shift_for(0.6, protocol, "right_elbow")           # jitter
    p1 = moved(protocol, 1, "left_ankle", dy=300.0)                                        # miss
    far = person(protocol, 2)
    far[:, 0] += 2000.0                                                                    # background FP
    near_copy = moved(protocol, 1, "left_hip", dx=2.0)               # better than p1, scored below it: scoring
    records = [record(far, 0.99), record(p1, 0.6), record(p0, 0.8), record(near_copy, 0.3)]
    d = diagnose(records, gt, protocol)                                                    # person 2 undetected
    c = d["counts"]
    assert (c["inversion"], c["swap"], c["jitter"], c["miss"]) == (2, 1, 1, 1)
    assert c["background_fp"] == 1 and c["false_negatives"] == 1 and c["scoring_errors"] == 1
    assert d["ap"]["original"]["AP"] < 1.0
    assert d["ap"]["false_negative"] == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
    for figure in ("AP", "AP50", "AP75"):                  # the gains add up to what was missing
        assert sum(g[figure] for g in d["gain"].values()) == pytest.approx(1.0 - d["ap"]["original"][figure])
    check_original_equals_evaluate(d, records, gt, protocol)
    # Another order of keypoint corrections: other intermediate figures, the same end.
    other = diagnose(records, gt, protocol, order=KEYPOINT_ERRORS[::-1])
    assert list(other["ap"])[1:5] == list(KEYPOINT_ERRORS[::-1])
    assert other["ap"]["jitter"]["AP"] != d["ap"]["jitter"]["AP"]
    assert other["ap"]["false_negative"] == d["ap"]["false_negative"] and other["counts"] == d["counts"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_empty_results(tmp_path, protocol):
    gt = write_gt(tmp_path, protocol)
    d = diagnose([], gt, protocol)
    assert d["counts"]["detections"] == d["counts"]["keypoints"] == 0 and d["counts"]["false_negatives"] == 3
    assert d["ap"]["original"] == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    assert d["ap"]["false_negative"] == {"AP": -1.0, "AP50": -1.0, "AP75": -1.0}   # every person ignored
    assert d["gain"]["false_negative"]["AP"] is None


# ----------------------------------------------------------------------------------------------------------
# The numerical core

def test_corrections_land_where_coco_analyze_puts_them():
    """coco-analyze moves a jitter to ks 0.85^(1/4) and a miss to 0.5^(1/4) (its σ² vs (2σ)² formula); an
    inversion to its own keypoint at (almost) the ks it had with the mirrored one."""
    gt = person("coco", 0)[None]
    scale = np.array([20000.0])
    sig = COCO17.sigmas_array
    names = COCO17.keypoints
    dt = gt[:, :, :2].copy()
    dt[0, names.index("nose"), 1] += shift_for(0.7, "coco", "nose")
    dt[0, names.index("left_knee"), 1] += 150.0
    dt[0, names.index("left_wrist")] = gt[0, names.index("right_wrist"), :2]
    category, ks, corrected = keypoint_errors(dt, gt, scale, [0], [0], sig, COCO17.flip_index)
    assert [CATEGORIES[c] for c in category[0, [0, 13, 9, 10]]] == ["jitter", "miss", "inversion", "good"]
    assert ks[0, 0] == pytest.approx(0.7) and ks[0, 9] == 1.0 and ks[0, 13] < 0.5
    d2 = ((corrected[0] - gt[0, :, :2]) ** 2).sum(axis=1)
    ks_after = np.exp(-d2 / (2 * scale[0] * (2 * sig) ** 2))
    assert ks_after[0] == pytest.approx(0.85 ** 0.25) and ks_after[13] == pytest.approx(0.5 ** 0.25)
    assert ks_after[9] == pytest.approx(1.0)
    assert np.array_equal(corrected[0, 10], dt[0, 10])                      # good keypoints stay


def test_optimal_scores_soft_nms():
    """Two identical detections: the better-OKS one keeps its score, the other is decayed by exp(-1 / 0.5)."""
    kp = person("coco", 0)[:, :2]
    far = kp + (500.0, 0.0)
    out = optimal_scores(np.stack([kp, kp, far]), np.array([[0, 1, 2]]), np.array([0.8, 0.9, 0.7]),
                         COCO17.sigmas_array)
    assert out[1] == 0.9 and out[0] == pytest.approx(0.8 * np.exp(-2.0)) and out[2] == pytest.approx(0.7)


# ----------------------------------------------------------------------------------------------------------
# Real sample files, errors, command line

@pytest.mark.parametrize("protocol, gt_path, preds", [
    ("coco", COCO_GT, COCO_PREDS), ("crowdpose", CROWD_GT, CROWD_PREDS), ("ochuman", COCO_GT, COCO_PREDS)])
def test_original_ap_equals_evaluate_on_real_samples(protocol, gt_path, preds):
    if not Path(gt_path).exists():
        pytest.skip(f"{gt_path} not present")
    d = diagnose(preds, gt_path, protocol)
    check_original_equals_evaluate(d, str(preds), gt_path, protocol)
    c = d["counts"]
    assert sum(c[cat] for cat in CATEGORIES) == c["keypoints"] > 0
    assert d["ap"]["false_negative"]["AP"] == 1.0


def test_bad_input_names_the_file(tmp_path):
    gt = write_gt(tmp_path, "coco")
    bad = tmp_path / "bad_results.json"
    wrong = {**record(person("coco", 1), 0.8), "keypoints": [1.0] * 5}
    bad.write_text(json.dumps([record(person("coco", 0), 0.9), wrong]))
    with pytest.raises(HarnessError, match=r"bad_results\.json \[result 1\]: keypoints has 5 numbers"):
        diagnose(bad, gt, "coco")
    with pytest.raises(HarnessError, match=r"missing\.json"):
        diagnose(tmp_path / "missing.json", gt, "coco")
    with pytest.raises(HarnessError, match="order must be a permutation"):
        diagnose([], gt, "coco", order=("miss", "swap"))
    with pytest.raises(HarnessError, match="has 14 keypoints; the coco protocol has 17"):
        diagnose([], gt, "coco", schema="crowdpose14")


def run_cli(argv: list[str]) -> int:
    """The ``evaluate`` / ``analyze`` verbs as the CLI registers them (without importing every other verb)."""
    parser = argparse.ArgumentParser(prog="poseharness")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_analyze(tmp_path, capsys):
    gt = write_gt(tmp_path, "crowdpose")
    kp = person("crowdpose", 0)
    kp[[4, 5]] = kp[[5, 4]]                                                  # wrists exchanged
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps([record(kp, 0.9), record(person("crowdpose", 1), 0.8)]))
    out = tmp_path / "diag.json"
    assert run_cli(["analyze", str(preds), "--gt", str(gt), "--protocol", "crowdpose", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "+ inversion" in printed and "false negatives" in printed and "left_wrist" in printed
    saved = json.loads(out.read_text())
    assert saved["diagnosis"]["counts"]["inversion"] == 2 and saved["num_predictions"] == 2
    assert saved["diagnosis"] == diagnose(str(preds), gt, "crowdpose")
    with pytest.raises(HarnessError, match="--gt needs --protocol"):
        run_cli(["analyze", str(preds), "--gt", str(gt)])


# ----------------------------------------------------------------------------------------------------------
# Re-evaluating only what a correction changed equals evaluating everything again

def crowded_gt(tmp_path: Path, protocol: str, images: int = 40, seed: int = 0) -> Path:
    """A COCO-format file of ``images`` images with 0-6 overlapping template persons each (so swaps occur),
    random scales, some keypoints unlabelled, a few persons with none labelled."""
    rng = np.random.default_rng(seed)
    schema = schema_of(protocol)
    template = np.array([TEMPLATE[name] for name in schema.keypoints], dtype=np.float64)
    annotations, image_list = [], []
    for i in range(1, images + 1):
        image_list.append({"id": i, "file_name": f"{i}.jpg", "width": 800, "height": 600,
                           **({"crowdIndex": 0.5} if protocol == "crowdpose" else {})})
        for _ in range(int(rng.integers(0, 7))):
            s = rng.uniform(0.5, 1.5)
            origin = rng.uniform([0, 0], [500, 250])
            v = np.where(rng.random(len(template)) < 0.15, 0.0, 2.0) * (rng.random() > 0.05)
            xy = np.where(v[:, None] > 0, template * s + origin, 0.0)
            kp = np.column_stack([xy, v])
            ann = {"id": len(annotations) + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
                   "bbox": [*origin.tolist(), 100 * s, 200 * s], "keypoints": kp.ravel().tolist(),
                   "num_keypoints": int(schema.count_labelled(kp[None])[0])}
            if protocol != "crowdpose":
                ann["area"] = float(100 * s * 200 * s * rng.uniform(0.5, 0.9))
            annotations.append(ann)
    category = {"id": 1, "name": "person", "keypoints": list(schema.keypoints), "skeleton": []}
    path = tmp_path / f"crowded_{protocol}.json"
    path.write_text(json.dumps({"images": image_list, "annotations": annotations, "categories": [category]}))
    return path


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_partial_reevaluation_equals_full_evaluation(tmp_path, protocol, monkeypatch):
    """The diagnosis evaluates a correction again only on the images it changed, with OKS matrices of its own
    (``pair_oks``); with the library's full ``evaluate`` after every correction instead, every figure and
    count is the same, exactly."""
    from poseharness.bench.evaluate import perturbed_predictions
    from poseharness.eval import diagnosis

    gt_path = crowded_gt(tmp_path, protocol)
    records = perturbed_predictions(json.loads(gt_path.read_text()), schema_of(protocol).num_keypoints,
                                    seed=3, jitter=0.08, false_positives=0.2, duplicates=0.2)
    fast = diagnose(records, gt_path, protocol)

    def full_reevaluate(self, rows, xy):
        return self.lib.evaluate()

    def full_rescore(self, scores):
        self.lib.set_scores(scores)
        return self.lib.evaluate()

    monkeypatch.setattr(diagnosis._Diagnosis, "_reevaluate", full_reevaluate)
    monkeypatch.setattr(diagnosis._Diagnosis, "_rescore", full_rescore)
    library_evaluate = diagnosis._Official.evaluate       # with the library's own computeOks
    monkeypatch.setattr(diagnosis._Official, "evaluate", lambda self, oks_matrices=None: library_evaluate(self))
    slow = diagnose(records, gt_path, protocol)
    assert fast == slow
    c = fast["counts"]       # every kind of error occurs, so every stage re-evaluates something
    assert min(c["jitter"], c["inversion"], c["swap"], c["miss"], c["background_fp"], c["false_negatives"]) > 0
    assert all(fast["gain"][s]["AP"] != 0 for s in KEYPOINT_ERRORS)



@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_localize_gives_what_diagnose_counts(tmp_path, protocol):
    """The gallery's per-detection facts (``localize``) are the diagnosis's: the same pairs, the same categories."""
    from poseharness.bench.evaluate import perturbed_predictions
    from poseharness.eval.diagnosis import localize

    gt_path = crowded_gt(tmp_path, protocol, seed=5)
    records = perturbed_predictions(json.loads(gt_path.read_text()), schema_of(protocol).num_keypoints, seed=1)
    counts = diagnose(records, gt_path, protocol)["counts"]
    found = localize(records, gt_path, protocol)
    matched = found["gt_id"] >= 0
    assert len(found["records"]) == counts["detections"] and matched.sum() == counts["matched_detections"]
    assert {c: int((found["category"] == i).sum()) for i, c in enumerate(CATEGORIES)} == \
        {c: counts[c] for c in CATEGORIES}
    assert (found["oks"][matched] >= 0.1).all() and (found["oks"][~matched] == 0).all()
    assert (found["category"][~matched] == -1).all()


def test_bench_diagnose_prints_both_timings(tmp_path, capsys):
    from poseharness.cli import main

    gt_path = crowded_gt(tmp_path, "crowdpose", images=20)
    out = tmp_path / "bench.json"
    assert main(["bench", "diagnose", "--gt", str(gt_path), "--protocol", "crowdpose", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "evaluation (official library alone)" in text and "error diagnosis" in text
    doc = json.loads(out.read_text())
    assert set(doc["seconds"]) == {"evaluate", "evaluate_for_record", "diagnose"}
    assert all(v > 0 for v in doc["seconds"].values())
    assert doc["ap"]["false_negative"]["AP"] == 1.0 and doc["protocol"] == "crowdpose"
