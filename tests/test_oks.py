"""The one OKS against pycocotools' own ``COCOeval.computeOks``, a hand-worked case, and OKS-NMS."""
from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from poseharness.eval.oks import oks
from poseharness.posenms import oks_nms
from poseharness.schemas import COCO17, CROWDPOSE14


def compute_oks_pycocotools(pred, gt, areas, sigmas, boxes) -> np.ndarray:
    """(N, M) OKS from a real COCOeval object: one image, GTs and predictions as annotation dicts."""
    n, k = pred.shape[:2]
    dataset = {
        "images": [{"id": 1, "width": 2000, "height": 2000}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {"id": j + 1, "image_id": 1, "category_id": 1, "keypoints": gt[j].ravel().tolist(),
             "num_keypoints": int((gt[j, :, 2] > 0).sum()), "area": float(areas[j]),
             "bbox": boxes[j].tolist(), "iscrowd": 0}
            for j in range(gt.shape[0])
        ],
    }
    # Strictly decreasing scores keep the predictions in input order (computeOks sorts by score).
    dets = [{"image_id": 1, "category_id": 1, "score": 1.0 - i / (n + 1),
             "keypoints": np.concatenate([pred[i, :, :2], np.ones((k, 1))], axis=1).ravel().tolist()}
            for i in range(n)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        ev.evaluate()
        return np.asarray(ev.computeOks(1, 1))


def random_case(rng, n, m, sigmas):
    k = len(sigmas)
    boxes = np.column_stack([rng.uniform(0, 800, m), rng.uniform(0, 800, m),
                             rng.uniform(20, 300, m), rng.uniform(20, 300, m)])
    gt_xy = boxes[:, None, :2] + rng.random((m, k, 2)) * boxes[:, None, 2:]
    vis = rng.choice([0, 1, 2], size=(m, k), p=[0.3, 0.2, 0.5]).astype(float)
    vis[0] = 0                         # a GT with no labelled keypoint: the grown-box rule
    vis[1] = 2                         # a fully labelled GT
    gt = np.concatenate([np.where(vis[..., None] > 0, gt_xy, 0.0), vis[..., None]], axis=2)
    areas = boxes[:, 2] * boxes[:, 3] * rng.uniform(0.3, 1.0, m)
    areas[2] = 0.0                     # area 0: pycocotools' +np.spacing(1) keeps it finite
    # Predictions: near GTs (some exactly on GT 2, to hit the area-0 case with d = 0), some anywhere.
    near = rng.integers(0, m, n)
    pred = gt_xy[near] + rng.normal(size=(n, k, 2)) * rng.uniform(0, 40, (n, 1, 1))
    pred[0] = gt_xy[2]
    pred[1] = boxes[0, :2] + boxes[0, 2:] * rng.uniform(-1.5, 2.5, (k, 2))   # inside and outside the grown box
    pred = np.concatenate([pred, rng.random((n, k, 1))], axis=2)
    return pred, gt, areas, boxes


@pytest.mark.parametrize("schema", [COCO17, CROWDPOSE14], ids=lambda s: s.name)
@pytest.mark.parametrize("seed", range(4))
def test_oks_equals_pycocotools_compute_oks(schema, seed):
    rng = np.random.default_rng(seed)
    pred, gt, areas, boxes = random_case(rng, n=18, m=7, sigmas=schema.sigmas)
    ours = oks(pred, gt, areas, schema.sigmas_array, boxes)
    reference = compute_oks_pycocotools(pred, gt, areas, schema.sigmas_array, boxes)
    assert ours.shape == reference.shape == (18, 7)
    np.testing.assert_array_equal(ours, reference)      # bit for bit (oks.py: the libraries' summation order)
    assert ours[0, 2] == 1.0             # exactly on the area-0 GT
    # The spread is real: perfect, partial and zero similarities all occur.
    assert ours.max() == 1.0 and ours.min() < 1e-6 and ((ours > 0.2) & (ours < 0.9)).any()
    # (N, K, 2) input gives the same result: the confidence column is never read.
    np.testing.assert_array_equal(oks(pred[..., :2], gt, areas, schema.sigmas_array, boxes), ours)


def test_oks_hand_worked():
    sigmas = np.array([0.1, 0.1, 0.1])          # k = 0.2, k² = 0.04
    area = 100.0                                # s² = 100, so e = d² / (2 · 100 · 0.04) = d² / 8
    gt = np.array([[[10.0, 10.0, 2], [20.0, 20.0, 1], [0.0, 0.0, 0]]])
    # Keypoint 0 exact (d = 0), keypoint 1 off by (0, 2) → d² = 4 → exp(-0.5); keypoint 2 unlabelled: not counted.
    pred = np.array([[[10.0, 10.0], [20.0, 22.0], [500.0, 500.0]]])
    value = oks(pred, gt, [area], sigmas)
    assert value.shape == (1, 1)
    assert value[0, 0] == pytest.approx((1.0 + math.exp(-0.5)) / 2, rel=1e-15)

    # A GT with no labelled keypoint: distance to its box grown by one box size on each side.
    # Box (10, 10, 10, 10) → grown region [0, 30] × [0, 30]. All three keypoints count.
    gt_empty = np.zeros((1, 3, 3))
    pred2 = np.array([[[15.0, 15.0], [35.0, 15.0], [-4.0, 33.0]]])
    # d² per keypoint: 0; 5² = 25; 4² + 3² = 25 → (1 + 2·exp(-25/8)) / 3
    value = oks(pred2, gt_empty, [area], sigmas, gt_boxes=[[10.0, 10.0, 10.0, 10.0]])
    assert value[0, 0] == pytest.approx((1.0 + 2 * math.exp(-25 / 8)) / 3, rel=1e-15)


def test_oks_needs_boxes_for_unlabelled_gt_and_checks_shapes():
    with pytest.raises(ValueError, match="gt_boxes"):
        oks(np.zeros((1, 3, 2)), np.zeros((1, 3, 3)), [1.0], [0.1] * 3)
    with pytest.raises(ValueError, match="shapes disagree"):
        oks(np.zeros((1, 3, 2)), np.ones((1, 4, 3)), [1.0], [0.1] * 3)
    assert oks(np.zeros((0, 3, 2)), np.ones((2, 3, 3)), [1.0, 1.0], [0.1] * 3).shape == (0, 2)


def test_oks_nms_hand_worked():
    sigmas = np.full(4, 0.1)
    base = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    poses = np.stack([
        base,                       # 0: score 0.8
        base + [0.5, 0.0],          # 1: score 0.9, a near duplicate of 0
        base + [100.0, 100.0],      # 2: score 0.7, elsewhere
        base + [100.0, 103.0],      # 3: score 0.6, 3 px from 2
    ])
    scores = np.array([0.8, 0.9, 0.7, 0.6])
    areas = np.full(4, 100.0)
    # OKS(0 vs 1) = exp(-0.25 / 8) ≈ 0.969; OKS(3 vs 2) = exp(-9 / 8) ≈ 0.325.
    np.testing.assert_array_equal(oks_nms(poses, scores, sigmas, areas=areas, threshold=0.9), [1, 2, 3])
    np.testing.assert_array_equal(oks_nms(poses, scores, sigmas, areas=areas, threshold=0.3), [1, 2])
    np.testing.assert_array_equal(oks_nms(poses, scores, sigmas, areas=areas, threshold=0.99), [1, 0, 2, 3])
    assert oks_nms(np.zeros((0, 4, 2)), np.zeros(0), sigmas, 0.9, areas=np.zeros(0)).shape == (0,)


def test_oks_nms_keeps_no_similar_pair():
    rng = np.random.default_rng(3)
    # 20 people, each predicted 3 times with noise of 0 to 10 px: some copies duplicates, some not.
    people = rng.uniform(0, 400, (20, 1, 2)) + rng.normal(size=(20, 17, 2)) * 30
    poses = np.repeat(people, 3, axis=0) + rng.normal(size=(60, 17, 2)) * rng.uniform(0, 10, (60, 1, 1))
    scores = rng.random(60)
    areas = np.full(60, 2000.0)
    keep = oks_nms(poses, scores, COCO17.sigmas_array, threshold=0.5, areas=areas)
    assert list(scores[keep]) == sorted(scores[keep], reverse=True)
    assert keep[0] == np.argmax(scores)
    ref = np.concatenate([poses, np.ones((60, 17, 1))], axis=2)
    sim = oks(poses, ref, areas, COCO17.sigmas_array)
    kept_sim = sim[np.ix_(keep, keep)]
    assert (kept_sim[~np.eye(len(keep), dtype=bool)] <= 0.5).all()
    # Every dropped pose is similar to a kept one with a higher score.
    for i in set(range(60)) - set(keep.tolist()):
        assert any(sim[i, j] > 0.5 and scores[j] >= scores[i] for j in keep)
    assert 20 < len(keep) < 60


@pytest.mark.parametrize("protocol", ["coco", "crowdpose"])
def test_oks_equals_each_library_bit_for_bit_on_a_set(tmp_path, protocol):
    """Every OKS matrix of a whole evaluation (pycocotools for coco, xtcocotools' keypoints_crowd with its
    0.53·h·w scale for crowdpose), recomputed with ``oks`` in the library's row and column order: equal, not
    close. The diagnosis feeds such matrices to the library's own matching, where one ulp can flip a tie."""
    import json

    from poseharness.bench.evaluate import perturbed_predictions
    from poseharness.data.annotations import crowdpose_area
    from poseharness.eval.protocols import get_protocol
    from test_diagnosis import crowded_gt

    proto = get_protocol(protocol)
    gt_path = crowded_gt(tmp_path, protocol, images=30, seed=1)
    records = perturbed_predictions(json.loads(gt_path.read_text()), proto.num_keypoints, seed=2)
    with contextlib.redirect_stdout(io.StringIO()):
        if protocol == "coco":
            coco_gt = COCO(str(gt_path))
            ev = COCOeval(coco_gt, coco_gt.loadRes(records), "keypoints")
            ev.params.kpt_oks_sigmas = proto.schema.sigmas_array      # as the harness's evaluator sets them
        else:
            from xtcocotools.coco import COCO as XCOCO
            from xtcocotools.cocoeval import COCOeval as XCOCOeval

            coco_gt = XCOCO(str(gt_path))
            ev = XCOCOeval(coco_gt, coco_gt.loadRes(records), proto.iou_type, sigmas=proto.schema.sigmas_array,
                           use_area=proto.use_area)
            ev.params.useSegm = None
        ev.evaluate()
    pairs = 0
    for (image_id, category_id), matrix in ev.ious.items():
        if len(matrix) == 0:
            continue
        dts = ev._dts[image_id, category_id]
        dts = [dts[i] for i in np.argsort([-d["score"] for d in dts], kind="mergesort")]
        gts = ev._gts[image_id, category_id]
        gt = np.array([g["keypoints"] for g in gts], dtype=np.float64).reshape(len(gts), -1, 3)
        boxes = np.array([g["bbox"] for g in gts], dtype=np.float64)
        areas = np.array([g["area"] for g in gts]) if proto.use_area else crowdpose_area(boxes)
        pred = np.array([d["keypoints"] for d in dts], dtype=np.float64).reshape(len(dts), -1, 3)
        np.testing.assert_array_equal(oks(pred, gt, areas, proto.schema.sigmas_array, boxes), matrix)
        pairs += matrix.size
    assert pairs > 200
