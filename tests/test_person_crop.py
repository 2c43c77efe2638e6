"""PoseDet's training crop as an opt-in of the core augmentation: ``centre: person`` and ``crop: [lo, hi]``.

Checks the geometry (the chosen person's box centre lands on the input centre, a crop-side factor u zooms by
1/u), the random streams (reproducible per (seed, epoch, index); the existing draws unchanged by the new
settings), the fallback for images without a trained-on person, validation, and that every existing training
config keeps its augment dict (and so its hash).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from poseharness.config import TrainSettings, train_settings
from poseharness.data import augment as A
from poseharness.data.loader import PoseDataset
from poseharness.data.sample import Sample
from poseharness.errors import HarnessError
from poseharness.methods import load_method
from test_loader import tiny  # noqa: F401  (fixture: the tiny COCO set)

SIZE = 64
CENTRE = (SIZE - 1) / 2
OLD_KEYS = {"rotate", "scale", "stretch", "translate", "flip"}
OLD_PARAMS = ("angle", "scale", "stretch", "tx", "ty", "flip")


def _sample() -> Sample:
    """128 x 64 image (view zoom 0.5 into a 64 input): two persons, a crowd, and a person without keypoints."""
    kp = np.zeros((4, 17, 3), np.float32)
    kp[0, 0] = [20, 20, 2]
    kp[1, 0] = [95, 35, 2]
    boxes = np.array([[10, 10, 20, 40], [80, 20, 30, 30], [0, 0, 10, 10], [100, 40, 10, 10]], np.float32)
    return Sample(image_id=1, file_name="x", width=128, height=64, keypoints=kp, boxes=boxes,
                  areas=boxes[:, 2] * boxes[:, 3], iscrowd=np.array([False, False, True, False]),
                  num_keypoints=np.array([1, 1, 0, 0]))


def _draw(config, seed, sample=None, m=None, epoch=0, index=0):
    """(params, full affine) as PoseDataset.affine builds them, on the hand-made sample."""
    sample = sample or _sample()
    m = A.bottom_up_affine(sample.width, sample.height, SIZE) if m is None else m
    rng = np.random.default_rng([seed, epoch, index])
    centres = A.person_centres(sample.boxes[sample.annotated], m)
    params = A.sample_augmentation(config, rng, SIZE, persons=centres)
    return params, A.compose(A.augmentation_affine(params, SIZE), m)


def _box_centre(box) -> np.ndarray:
    x, y, w, h = (float(v) for v in box)
    return np.array([x + w / 2, y + h / 2])


# ----------------------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [{}, {"rotate": 40.0, "flip": 1.0, "stretch": (0.8, 1.2)}])
def test_chosen_person_box_centre_lands_on_input_centre(extra):
    config = A.AugmentConfig(**{"rotate": 0.0, "scale": (1.0, 1.0), "translate": 0.0, "flip": 0.0,
                                "centre": "person", "crop": (1.0, 1.0), **extra})
    sample, chosen = _sample(), set()
    annotated = np.flatnonzero(sample.annotated)
    for seed in range(20):
        params, m = _draw(config, seed)
        out = A.transform_sample(sample, m, SIZE)
        person = annotated[params.person]
        chosen.add(int(person))
        np.testing.assert_allclose(_box_centre(out.boxes[person]), [CENTRE, CENTRE], atol=1e-4)
    assert chosen == {0, 1}           # both trained-on persons get picked; the crowd and the unlabelled never


def test_crop_factor_u_zooms_by_one_over_u():
    config = A.AugmentConfig(rotate=0.0, scale=(1.0, 1.0), translate=0.0, flip=0.0, crop=(0.5, 1.5))
    sample = _sample()
    view = A.transform_sample(sample, A.bottom_up_affine(128, 64, SIZE), SIZE)     # the boxes in input pixels
    for seed in range(10):
        params, m = _draw(config, seed)
        assert 0.5 <= params.crop <= 1.5 and params.centre is None
        out = A.transform_sample(sample, m, SIZE)
        np.testing.assert_allclose(out.boxes[:, 2:], view.boxes[:, 2:] / params.crop, rtol=1e-5)
        # centre: input: the zoom turns about the input centre.
        np.testing.assert_allclose(A.affine_points([CENTRE, CENTRE], A.augmentation_affine(params, SIZE)),
                                   [CENTRE, CENTRE], atol=1e-9)
    # The factor is uniform in u (mean 1 on [0.5, 1.5]), not log-uniform (mean 1 / ln 3 = 0.91).
    rng = np.random.default_rng(0)
    u = [A.sample_augmentation(config, rng, SIZE).crop for _ in range(4000)]
    assert abs(np.mean(u) - 1.0) < 0.02 and min(u) >= 0.5 and max(u) <= 1.5


def test_person_centre_with_crop_and_translate():
    """Centre, zoom and shift compose: the person's box centre lands at input centre + (tx, ty)."""
    config = A.AugmentConfig(rotate=0.0, scale=(1.0, 1.0), translate=0.2, flip=0.5, centre="person",
                             crop=(0.5, 1.5))
    sample = _sample()
    view = A.transform_sample(sample, A.bottom_up_affine(128, 64, SIZE), SIZE)
    annotated = np.flatnonzero(sample.annotated)
    for seed in range(10):
        params, m = _draw(config, seed)
        out = A.transform_sample(sample, m, SIZE)
        person = annotated[params.person]
        np.testing.assert_allclose(_box_centre(out.boxes[person]), [CENTRE + params.tx, CENTRE + params.ty],
                                   atol=1e-4)
        np.testing.assert_allclose(out.boxes[person, 2:], view.boxes[person, 2:] / params.crop, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Random streams
# ----------------------------------------------------------------------------------------------------------

def _old_affine(p: A.AugmentParams, size: int) -> np.ndarray:
    """The augmentation affine as it was before ``centre`` / ``crop`` (bit-identity reference)."""
    import math
    c = np.array([(size - 1) / 2, (size - 1) / 2])
    a = math.radians(p.angle)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    lin = np.diag([-1.0 if p.flip else 1.0, 1.0]) @ rot @ np.diag([p.scale * p.stretch, p.scale])
    t = c + np.array([p.tx, p.ty]) - lin @ c
    return np.hstack([lin, t[:, None]])


@pytest.mark.parametrize("base", [
    A.AugmentConfig(),
    A.AugmentConfig.gog(),
    A.AugmentConfig(rotate=0.0, scale=(1.0, 1.0), stretch=(0.9, 1.1), translate=0.25, flip=0.5),
])
def test_new_draws_come_after_the_existing_ones(base):
    scale_free = dataclasses.replace(base, scale=(1.0, 1.0))
    variants = [dataclasses.replace(base, centre="person"),
                dataclasses.replace(scale_free, crop=(0.5, 1.5)),
                dataclasses.replace(scale_free, centre="person", crop=(0.5, 1.5))]
    for seed, epoch, index in [(0, 0, 0), (3, 1, 7), (11, 5, 123)]:
        off, m_off = _draw(base, seed, epoch=epoch, index=index)
        # Off, the affine is bit-identical to the old formula.
        assert np.array_equal(A.augmentation_affine(off, SIZE), _old_affine(off, SIZE))
        off_free, _ = _draw(scale_free, seed, epoch=epoch, index=index)
        for config in variants:
            on, m_on = _draw(config, seed, epoch=epoch, index=index)
            ref = off if config.scale == base.scale else off_free
            assert [getattr(on, k) for k in OLD_PARAMS] == [getattr(ref, k) for k in OLD_PARAMS], config
            again, m_again = _draw(config, seed, epoch=epoch, index=index)      # reproducible
            assert again == on and np.array_equal(m_again, m_on)
        # A different (seed, epoch, index) draws differently.
        other, _ = _draw(variants[2], seed, epoch=epoch + 1, index=index)
        assert other != _draw(variants[2], seed, epoch=epoch, index=index)[0]


def test_no_trained_on_person_falls_back_to_input_centre():
    config = A.AugmentConfig(rotate=10.0, scale=(1.0, 1.0), translate=0.1, centre="person", crop=(0.5, 1.5))
    only_crowd = _sample()
    only_crowd.iscrowd[:] = True
    for seed in range(5):
        params, m = _draw(config, seed, sample=only_crowd)
        assert params.centre is None and params.person is None
        # Same draws as with candidates; only the anchor differs.
        with_people, _ = _draw(config, seed)
        assert dataclasses.replace(with_people, centre=None, person=None) == params
        np.testing.assert_allclose(A.affine_points([CENTRE, CENTRE], A.augmentation_affine(params, SIZE)),
                                   [CENTRE + params.tx, CENTRE + params.ty], atol=1e-9)
    assert A.sample_augmentation(config, np.random.default_rng(0), SIZE, persons=None).centre is None


def test_pose_dataset_centres_on_a_trained_on_person(tiny):  # noqa: F811
    """Bottom-up items of the tiny set: image 1 has persons 7, 8 (trained on) and 9 (no keypoints), image 2 a
    person and a crowd, image 3 nobody (falls back to the input centre)."""
    config = A.AugmentConfig(rotate=0.0, scale=(1.0, 1.0), translate=0.0, flip=0.5, centre="person",
                             crop=(1.0, 1.0))
    ds = PoseDataset(tiny, "train", input_size=96, view="bottom-up", augment=config, augment_seed=3)
    plain = PoseDataset(tiny, "train", input_size=96, view="bottom-up", augment=None)
    c = (96 - 1) / 2
    chosen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        m, _ = ds.affine(0)
        r = ds.samples.record(0)
        at_centre = [i for i in range(3)
                     if np.allclose(A.affine_points(_box_centre(r.boxes[i]), m), [c, c], atol=1e-6)]
        assert len(at_centre) == 1 and at_centre[0] in (0, 1)
        chosen.add(at_centre[0])
        m2, _ = ds.affine(1)
        np.testing.assert_allclose(A.affine_points(_box_centre(ds.samples.record(1).boxes[0]), m2), [c, c],
                                   atol=1e-6)
        m3, flip = ds.affine(2)
        m_plain, _ = plain.affine(2)
        if not flip:
            np.testing.assert_allclose(m3, m_plain, atol=1e-12)     # nobody: the plain view
    assert chosen == {0, 1}
    # Top-down: the item's own person stays at the centre.
    td = PoseDataset(tiny, "train", input_size=(48, 64), view="top-down", augment=config, augment_seed=3)
    for index, (i, person) in enumerate(td.items):
        m, _ = td.affine(index)
        np.testing.assert_allclose(A.affine_points(_box_centre(td.samples.record(i).boxes[person]), m),
                                   [23.5, 31.5], atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Validation and backward compatibility
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, message", [
    ({"scale": [1, 1], "crop": [0, 1]}, r"crop must be .*got \(0\.0, 1\.0\)"),
    ({"scale": [1, 1], "crop": [1.5, 0.5]}, r"crop must be .*got \(1\.5, 0\.5\)"),
    ({"scale": [1, 1], "crop": [1]}, r"crop must be .*got \(1\.0,\)"),
    ({"scale": [1, 1], "crop": "big"}, r"crop must be .*got 'big'"),
    ({"crop": [0.5, 1.5]}, r"crop replaces scale.*got scale \(0\.75, 1\.25\)"),
    ({"centre": "persn"}, r"centre must be one of 'input', 'person', got 'persn'"),
    ({"centre": None}, r"centre must be one of .*got None"),
])
def test_bad_values_name_the_setting(raw, message):
    with pytest.raises(HarnessError, match=r"m\.yaml: augmentation settings: " + message):
        A.AugmentConfig.from_dict(raw, source="m.yaml")


def test_as_dict_round_trips_and_omits_new_defaults():
    old_default = {"rotate": 30.0, "scale": (0.75, 1.25), "stretch": (1.0, 1.0), "translate": 0.1, "flip": 0.5}
    assert A.AugmentConfig().as_dict() == old_default
    assert TrainSettings(batch=8, lr=1e-3, steps=10).identity()["augment"] == old_default
    assert A.AugmentConfig.from_dict(old_default).as_dict() == old_default
    assert set(A.AugmentConfig.gog().as_dict()) == OLD_KEYS
    new = {"rotate": 0.0, "scale": [1, 1], "translate": 0.0, "flip": 0.5, "centre": "person", "crop": [0.5, 1.5]}
    d = A.AugmentConfig.from_dict(new).as_dict()
    assert d["centre"] == "person" and d["crop"] == (0.5, 1.5) and A.AugmentConfig.from_dict(d).as_dict() == d
    assert "crop" not in A.AugmentConfig.from_dict({"centre": "person"}).as_dict()
    assert "centre" not in A.AugmentConfig.from_dict({"scale": [1, 1], "crop": [1, 2]}).as_dict()


@pytest.mark.parametrize("method", ["gog", "simple_pose", "posedet"])
def test_existing_trainings_keep_their_augment_dict(method):
    spec = load_method(method)
    checked = 0
    for training, entry in spec.trainings.items():
        if entry.get("oracle_only"):
            continue
        for scale in spec.scales:
            aug = train_settings(spec, training, scale).augment
            if aug is None:
                continue
            assert A.AugmentConfig.from_dict(aug).as_dict() == aug
            if method != "posedet":       # posedet may opt in to the person crop; the others do not
                assert set(aug) == OLD_KEYS, (training, scale, aug)
            checked += 1
    assert checked > 0
