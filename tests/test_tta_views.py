"""Test-time augmentation as views (PoseDet's pooled form): each scale and mirror of an image is a view of its own,
decoded on its own and mapped back, and the image's per-image step pools all of them.

The round trip is checked with the oracle's own path: the ground truth encoded in a rescaled or mirrored view,
decoded and mapped back to the image, is the ground truth again, joint by joint (a mirror that forgot to swap the
left / right joints back, or a wrong inverse of the scale, moves joints by many pixels)."""

import numpy as np
import pytest
from conftest import tiny_synthetic, use_store

from poseharness.contract import resolve_method
from poseharness.data.manifest import load_manifest
from poseharness.data.sample import Sample
from poseharness.errors import HarnessError
from poseharness.oracle import run_oracle
from poseharness.pipeline import Decoder, encoded_outputs, view_batches
from poseharness.schemas import get_schema
from poseharness.views import TestTimeViews, bottom_up_views, image_views, mirrored, to_original


def person_sample(width=200, height=160):
    """Two labelled COCO persons, left / right joints at clearly different places."""
    rng = np.random.default_rng(3)
    kp = np.zeros((2, 17, 3), np.float32)
    for p, (cx, cy) in enumerate([(50, 70), (140, 90)]):
        kp[p, :, 0] = cx + rng.uniform(-30, 30, 17)
        kp[p, :, 1] = cy + rng.uniform(-40, 40, 17)
        kp[p, :, 2] = 2
    kp[0, 4] = 0                                       # one unlabelled joint
    boxes = np.array([[20, 30, 60, 80], [110, 50, 60, 80]], np.float32)
    return Sample(image_id=7, file_name="x.jpg", width=width, height=height, keypoints=kp, boxes=boxes,
                  areas=np.array([3000.0, 3500.0], np.float32), iscrowd=np.zeros(2, bool),
                  num_keypoints=np.array([16, 17]))


def test_settings_default_and_errors():
    assert TestTimeViews.from_decode({}) == TestTimeViews((1.0,), False)
    tta = TestTimeViews.from_decode({"tta": {"scales": [0.5, 1.25], "flip": True}})
    assert tta.sizes(256) == [(128, 128), (320, 320)] and tta.sizes((192, 256)) == [(96, 128), (240, 320)]
    for bad, field in [({"scales": []}, "tta.scales"), ({"scales": [0, 1]}, "tta.scales"),
                       ({"flip": "yes"}, "tta.flip"), ({"scale": [1]}, "tta")]:
        with pytest.raises(HarnessError, match=rf"variant 'v': decode: field {field}"):
            TestTimeViews.from_decode({"tta": bad}, "variant 'v': decode")


def test_views_per_scale_and_mirror_and_their_batches():
    s = person_sample()
    views = image_views(s, "bottom-up", 256, tta=TestTimeViews((1.0, 0.5), True))
    assert [(v.size, v.flipped) for v in views] == [((256, 256), False), ((256, 256), True),
                                                      ((128, 128), False), ((128, 128), True)]
    (single,), (base,) = image_views(s, "bottom-up", 256), bottom_up_views(s, 256)
    np.testing.assert_array_equal(single.affine, base.affine)
    assert (single.size, single.flipped) == (base.size, False)
    # the mirror maps x to W - 1 - x of the plain view's input, y unchanged
    plain, mirror = views[0], views[1]
    pts = np.array([[10.0, 20.0], [150.0, 60.0]])
    a = pts @ plain.affine[:, :2].T + plain.affine[:, 2]
    b = pts @ mirror.affine[:, :2].T + mirror.affine[:, 2]
    np.testing.assert_allclose(b, np.c_[255 - a[:, 0], a[:, 1]])
    np.testing.assert_allclose(mirrored(mirror).affine, plain.affine)
    assert not mirrored(mirror).flipped
    # top-down: each box's crop, then its mirror
    td = image_views(s, "top-down", (48, 64), tta=TestTimeViews((1.0,), True))
    assert [(v.person, v.flipped) for v in td] == [(0, False), (0, True), (1, False), (1, True)]
    entries = [(0, v) for v in views] + [(1, v) for v in views]
    assert view_batches(entries, 8) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert view_batches([(i, views[0]) for i in range(5)], 2) == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize("scale,flip", [(1.0, True), (0.75, False), (1.5, True)])
def test_ground_truth_through_a_rescaled_or_mirrored_view_comes_back(scale, flip):
    spec = resolve_method("posedet")
    cfg = spec.variant_config("posedet_nonms", "tiny")
    cfg["schema"] = "coco17"
    s = person_sample()
    decoder = Decoder(spec.module, cfg, "bottom-up")
    views = image_views(s, "bottom-up", 256, tta=TestTimeViews((scale,), flip))
    for view in views:
        poses, _ = decoder.view(encoded_outputs(spec.module, s, view, cfg), view)
        for p in range(2):
            lab = s.keypoints[p, :, 2] > 0
            err = np.abs(poses[:, lab, :2] - s.keypoints[p, lab, :2]).max(axis=(1, 2))
            assert err.min() < 1e-3, (view.size, view.flipped, p, err)
    # without the left / right swap a mirrored view's joints land on the other side of the person
    if flip:
        view = views[1]
        raw = spec.module.decode(encoded_outputs(spec.module, s, view, cfg), cfg)[0]
        unswapped = to_original(raw, view)
        flip_index = np.asarray(get_schema("coco17").flip_index)
        assert not np.allclose(unswapped[:, :, :2], unswapped[:, flip_index, :2])
        best = min(np.abs(unswapped[i, 5:, :2] - s.keypoints[p, 5:, :2]).max() for i in range(len(unswapped))
                   for p in range(2))
        assert best > 1.0


@pytest.fixture(scope="module")
def crowd_root(tmp_path_factory):
    return tiny_synthetic(tmp_path_factory, "synthetic-crowdpose")


def test_pooled_tta_oracle_keeps_the_bound_and_records_its_views(crowd_root, tmp_path, monkeypatch):
    """The ground truth seen through the paper's 6 scales and their mirrors, pooled before one OKS-NMS: the
    duplicates of a person across views are suppressed, so the bound stays that of the single view (within the
    persons the assignment loses at another scale), and the variant's config records its views."""
    use_store(monkeypatch, crowd_root, tmp_path)
    spec = resolve_method("posedet")
    manifest = load_manifest("synthetic-crowdpose")
    rows = {r["variant"]: r for r in run_oracle(spec, manifest, "val", ["posedet", "posedet_flip", "posedet_tta"],
                                                scale="tiny", size="tiny", progress=False)}
    ap = {v: r["metrics"]["AP"] for v, r in rows.items()}
    assert ap["posedet"] >= 0.85
    assert abs(ap["posedet_flip"] - ap["posedet"]) < 0.02
    assert ap["posedet_tta"] >= ap["posedet"] - 0.05
    assert rows["posedet"]["persons"] * 0.9 <= rows["posedet_tta"]["persons"] <= rows["posedet"]["persons"] * 1.2


def test_predict_pools_the_views_of_a_trained_model(crowd_root, tmp_path, monkeypatch):
    """A checkpoint predicted with the paper's TTA: views of several sizes go through the model in batches of one
    size, and the record's config says which views were pooled."""
    from poseharness.predict import predict
    from poseharness.train import train
    use_store(monkeypatch, crowd_root, tmp_path)
    spec = resolve_method("posedet")
    manifest = load_manifest("synthetic-crowdpose")
    run = train(spec, "full", manifest, "tiny", size="tiny", steps=1, out=tmp_path / "run", progress=False,
                device="cpu", log=lambda *_: None)
    out = predict(run.checkpoint, "posedet_tta", manifest, "val", progress=False, device="cpu", write=False,
                  out=tmp_path / "pred.json", limit=3, batch=4)
    assert out["images"] == 3 and out["persons"] <= 3 * 100
    assert out["config"]["decode"]["tta"] == {"scales": [0.469, 0.625, 0.781, 0.938, 1.094, 1.25], "flip": True}
