"""Annotation validation, the loader, augmentation geometry, the torch dataset and ``data show``."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import DataLoader

from poseharness.data import augment as A
from poseharness.data.annotations import load_annotation_file
from poseharness.data.loader import (PoseDataset, collate, denormalise_image, ignore_mask, load_samples,
                                     normalise_image)
from poseharness.data.manifest import load_manifest, parse_manifest
from poseharness.data.show import show
from poseharness.errors import HarnessError
from poseharness.schemas import COCO17, CROWDPOSE14
from shared_data import CROWDPOSE_VAL, SAMPLES


# Marker colours on keypoint channels of person 1 (left/right shoulder, left/right wrist): a flip must swap them.
MARKERS = {5: (255, 0, 0), 6: (0, 200, 0), 9: (0, 0, 255), 10: (255, 255, 0)}
MARKER_POINTS = {5: (62, 48), 6: (96, 46), 9: (64, 78), 10: (100, 80)}
GREY = 128


# ----------------------------------------------------------------------------------------------------------
# A tiny dataset built in the test: PIL images and a COCO-format JSON
# ----------------------------------------------------------------------------------------------------------

def _keypoints(points: dict[int, tuple[float, float]], v: int = 2) -> list[float]:
    kp = [0.0] * 51
    for k, (x, y) in points.items():
        kp[3 * k: 3 * k + 3] = [x, y, v]
    return kp


def tiny_coco() -> dict:
    """Three images: markers + two persons + a zero-keypoint person (polygon); a crowd (RLE); no persons."""
    person2 = {0: (30, 30), 5: (25, 50), 6: (40, 50), 11: (28, 90), 12: (38, 90)}
    crowd_mask = np.zeros((140, 100), dtype=np.uint8, order="F")
    crowd_mask[90:130, 50:95] = 1
    crowd_rle = mask_utils.encode(crowd_mask)
    # COCO stores crowd masks as uncompressed RLE (a list of run lengths, column-major).
    flat = crowd_mask.flatten(order="F")
    runs, value, n = [], 0, 0
    for px in flat:
        if px == value:
            n += 1
        else:
            runs.append(n)
            value, n = px, 1
    runs.append(n)
    assert mask_utils.area(crowd_rle) == sum(runs[1::2])
    return {
        "info": {}, "licenses": [],
        "categories": [{"id": 1, "name": "person", "supercategory": "person",
                        "keypoints": list(COCO17.keypoints), "skeleton": []}],
        "images": [
            {"id": 1, "file_name": "a.png", "width": 160, "height": 120},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 140},
            {"id": 3, "file_name": "c.png", "width": 90, "height": 60},
        ],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 2000.0,
             "bbox": [50.0, 30.0, 60.0, 60.0], "num_keypoints": 4,
             "keypoints": _keypoints(MARKER_POINTS), "segmentation": [[50, 30, 110, 30, 110, 90, 50, 90]]},
            {"id": 8, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 300.0,
             "bbox": [10.0, 10.0, 20.0, 40.0], "num_keypoints": 1,
             "keypoints": _keypoints({0: (20, 20)}, v=1), "segmentation": [[10, 10, 30, 10, 30, 50, 10, 50]]},
            {"id": 9, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 150.0,
             "bbox": [130.0, 80.0, 20.0, 30.0], "num_keypoints": 0, "keypoints": [0] * 51,
             "segmentation": [[130, 80, 150, 80, 140, 110]]},
            {"id": 10, "image_id": 2, "category_id": 1, "iscrowd": 0, "area": 900.0,
             "bbox": [20.0, 25.0, 25.0, 70.0], "num_keypoints": 5, "keypoints": _keypoints(person2),
             "segmentation": [[20, 25, 45, 25, 45, 95, 20, 95]]},
            {"id": 11, "image_id": 2, "category_id": 1, "iscrowd": 1, "area": float(sum(runs[1::2])),
             "bbox": [50.0, 90.0, 45.0, 40.0], "num_keypoints": 0, "keypoints": [0] * 51,
             "segmentation": {"counts": runs, "size": [140, 100]}},
        ],
    }


def _write_images(image_dir: Path, data: dict) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for img in data["images"]:
        arr = np.full((img["height"], img["width"], 3), GREY, dtype=np.uint8)
        if img["id"] == 1:
            for k, (x, y) in MARKER_POINTS.items():
                arr[y - 3:y + 4, x - 3:x + 4] = MARKERS[k]      # 7x7 square centred on the pixel (x, y)
        else:
            arr = rng.integers(0, 256, arr.shape, dtype=np.uint8)
        Image.fromarray(arr).save(image_dir / img["file_name"])


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A real-kind manifest ``tiny`` whose data folder holds the tiny COCO set (annotations + PNGs)."""
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path / "data"))
    manifest = parse_manifest({
        "name": "tiny", "kind": "real", "schema": "coco17", "format": "coco", "protocol": "coco", "files": [],
        "splits": {"train": {"annotations": "annotations/train.json", "images": "images"}},
    }, tmp_path / "tiny.yaml")
    data = tiny_coco()
    root = tmp_path / "data" / "tiny"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "train.json").write_text(json.dumps(data))
    _write_images(root / "images", data)
    return manifest


# ----------------------------------------------------------------------------------------------------------
# Validation: every bad input is a HarnessError naming the file, the record and the problem
# ----------------------------------------------------------------------------------------------------------

def _ann(data, ann_id):
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def _set(path_fn, value):
    def mutate(d):
        obj, key = path_fn(d)
        obj[key] = value
    return mutate


def _delete(path_fn):
    def mutate(d):
        obj, key = path_fn(d)
        del obj[key]
    return mutate


BAD_INPUTS = {
    "missing top-level key": (_delete(lambda d: (d, "annotations")), ["[top level]", "annotations"]),
    "top level not an object": (lambda d: d.clear() or d.update({"x": []}), ["[top level]", "images"]),
    "keypoints 3K-3 long": (_set(lambda d: (_ann(d, 8), "keypoints"), [0] * 48),
                            ["annotation id=8", "image_id=1", "48 numbers, expected 51"]),
    "missing bbox": (_delete(lambda d: (_ann(d, 10), "bbox")), ["annotation id=10", "bbox"]),
    "missing area": (_delete(lambda d: (_ann(d, 10), "area")), ["annotation id=10", "area"]),
    "missing id": (_delete(lambda d: (_ann(d, 9), "id")), ["annotations[2]", "id"]),
    "unknown image id": (_set(lambda d: (_ann(d, 9), "image_id"), 999),
                         ["annotation id=9", "image_id=999", "not in images"]),
    "NaN keypoint": (lambda d: _ann(d, 7)["keypoints"].__setitem__(16, float("nan")),
                     ["annotation id=7", "keypoints[16]", "not a finite number"]),
    "infinite bbox": (lambda d: _ann(d, 10)["bbox"].__setitem__(2, float("inf")),
                      ["annotation id=10", "bbox[2]", "not a finite number"]),
    "string in bbox": (lambda d: _ann(d, 10)["bbox"].__setitem__(0, "20"),
                       ["annotation id=10", "bbox must hold only numbers"]),
    "visibility 3": (lambda d: _ann(d, 7)["keypoints"].__setitem__(17, 3),
                     ["annotation id=7", "keypoint 5 (left_shoulder)", "visibility 3"]),
    "duplicate annotation id": (_set(lambda d: (_ann(d, 9), "id"), 8), ["annotation id=8", "duplicate"]),
    "image without width": (_delete(lambda d: (d["images"][1], "width")), ["image id=2", "width"]),
    "duplicate image id": (_set(lambda d: (d["images"][2], "id"), 1), ["image id=1", "duplicate image id"]),
    "RLE of another size": (_set(lambda d: (_ann(d, 11)["segmentation"], "size"), [100, 140]),
                            ["annotation id=11", "RLE size"]),
    "iscrowd 2": (_set(lambda d: (_ann(d, 10), "iscrowd"), 2), ["annotation id=10", "iscrowd"]),
    "wrong category": (_set(lambda d: (_ann(d, 10), "category_id"), 3), ["annotation id=10", "category_id 3"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_annotation_files_name_file_and_record(tmp_path, case):
    mutate, expected = BAD_INPUTS[case]
    data = tiny_coco()
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))     # json writes NaN / Infinity literals, as a careless writer would
    with pytest.raises(HarnessError) as err:
        load_annotation_file(path, COCO17, "coco")
    message = str(err.value)
    assert str(path) in message
    for part in expected:
        assert part in message, (case, message)


def test_truncated_and_empty_json(tmp_path):
    path = tmp_path / "cut.json"
    text = json.dumps(tiny_coco())
    path.write_text(text[: len(text) // 2])
    with pytest.raises(HarnessError, match="not valid JSON at line 1 column .*truncated") as err:
        load_annotation_file(path, COCO17, "coco")
    assert str(path) in str(err.value)
    path.write_text("")
    with pytest.raises(HarnessError, match="empty"):
        load_annotation_file(path, COCO17, "coco")
    with pytest.raises(HarnessError, match="not found"):
        load_annotation_file(tmp_path / "nope.json", COCO17, "coco")


def test_wrong_schema_and_crowdpose_without_crowd_index(tmp_path):
    with pytest.raises(HarnessError, match=r"categories\[0\].*17 keypoints, schema crowdpose14 has 14"):
        load_annotation_file(SAMPLES / "mmpose_test_coco.json", CROWDPOSE14, "crowdpose")
    data = json.loads((SAMPLES / "mmpose_test_crowdpose.json").read_text())
    del data["images"][1]["crowdIndex"]
    path = tmp_path / "cp.json"
    path.write_text(json.dumps(data))
    with pytest.raises(HarnessError, match=r"image id=103319 \(images\[1\]\).*crowdIndex"):
        load_annotation_file(path, CROWDPOSE14, "crowdpose")


# ----------------------------------------------------------------------------------------------------------
# Real annotation files
# ----------------------------------------------------------------------------------------------------------

def test_real_coco_sample_polygons_and_zero_keypoint_persons():
    path = SAMPLES / "mmpose_test_coco.json"
    index = load_annotation_file(path, COCO17, "coco")
    raw = json.loads(path.read_text())
    assert index.image_ids == [img["id"] for img in raw["images"]]
    assert len(index) == 4 and index.num_persons == 14
    by_ann = {a["id"]: a for a in raw["annotations"]}
    for rec in index.images:
        assert rec.keypoints.shape == (rec.num_persons, 17, 3) and rec.keypoints.dtype == np.float32
        assert rec.boxes.shape == (rec.num_persons, 4)
        for p, ann_id in enumerate(rec.annotation_ids):
            ann = by_ann[int(ann_id)]
            assert rec.num_keypoints[p] == ann["num_keypoints"]
            assert rec.areas[p] == np.float32(ann["area"])
            np.testing.assert_array_equal(rec.keypoints[p].ravel(), np.float32(ann["keypoints"]))
    # The two zero-keypoint persons' polygons are the whole ignore mask: equal to pycocotools' own rasterisation.
    coco = COCO(str(path))
    rec = index.by_id(196141)
    zero = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=196141)) if a["num_keypoints"] == 0]
    assert len(zero) == 1
    np.testing.assert_array_equal(ignore_mask(rec), coco.annToMask(zero[0]).astype(bool))
    assert ignore_mask(index.by_id(785)).sum() == 0


def test_real_crowdpose_sample_has_no_area():
    index = load_annotation_file(SAMPLES / "mmpose_test_crowdpose.json", CROWDPOSE14, "crowdpose")
    rec = index.images[0]
    assert rec.crowd_index == 0.33 and rec.keypoints.shape == (3, 14, 3)
    np.testing.assert_allclose(rec.areas, 0.53 * rec.boxes[:, 2] * rec.boxes[:, 3], rtol=1e-6)
    assert rec.num_keypoints.tolist() == [5, 0, 10]
    # No segmentation in CrowdPose: the zero-keypoint person's box becomes its ignore region.
    mask = ignore_mask(rec)
    x, y, w, h = rec.boxes[1]
    assert mask[int(y) + 2: int(y + h) - 2, int(x) + 2: int(x + w) - 2].all()
    assert mask.sum() == pytest.approx(w * h, rel=0.1)


def test_real_ochuman_sample_rle_and_float_keypoints():
    path = SAMPLES / "mmpose_test_ochuman.json"
    index = load_annotation_file(path, COCO17, "ochuman")
    assert len(index) == 3 and index.num_persons == 5
    assert all(isinstance(s, dict) for r in index.images for s in r.segmentations)
    assert np.any(index.images[0].keypoints[..., :2] % 1 != 0)     # float coordinates kept
    # Mark everyone ignorable: the ignore mask must be the union of pycocotools' decoded RLEs.
    coco = COCO(str(path))
    rec = index.by_id(2)
    forced = dataclasses.replace(rec, num_keypoints=np.zeros_like(rec.num_keypoints))
    expected = np.zeros((rec.height, rec.width), bool)
    for a in coco.loadAnns(coco.getAnnIds(imgIds=2)):
        expected |= coco.annToMask(a).astype(bool)
    np.testing.assert_array_equal(ignore_mask(forced), expected)
    assert not ignore_mask(rec).any()


def test_full_crowdpose_val_loads_without_images(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path))
    (tmp_path / "crowdpose" / "annotations").mkdir(parents=True)
    (tmp_path / "crowdpose" / "annotations" / "crowdpose_val.json").symlink_to(CROWDPOSE_VAL)
    samples = load_samples(load_manifest("crowdpose"), "val", images=False)
    assert len(samples) == 2000
    assert sum(s.num_persons for s in samples) == 8527
    raw = json.loads(CROWDPOSE_VAL.read_text())
    assert [s.image_id for s in samples] == [img["id"] for img in raw["images"]]
    assert sum(int(s.iscrowd.sum()) for s in samples) == 106
    assert sum(int(s.num_keypoints.sum()) for s in samples) == sum(a["num_keypoints"] for a in raw["annotations"])
    assert sum(int((s.num_keypoints == 0).sum()) for s in samples) == 1453
    s = samples[0]
    assert s.image is None and s.ignore_mask is None and s.keypoints.dtype == np.float32
    assert "crowd_index" in s.meta


# ----------------------------------------------------------------------------------------------------------
# Loading through a manifest
# ----------------------------------------------------------------------------------------------------------

def test_load_samples_images_and_ignore_mask(tiny):
    samples = load_samples(tiny, "train")
    assert [s.image_id for s in samples] == [1, 2, 3]
    s1, s2, s3 = samples
    assert s1.image.shape == (120, 160, 3) and s1.image.dtype == np.uint8
    assert s1.keypoints.shape == (3, 17, 3) and s3.keypoints.shape == (0, 17, 3)
    assert s1.ignore_mask.shape == (120, 160) and s1.ignore_mask.dtype == bool
    # Zero-keypoint person (polygon triangle) ignored; the annotated persons are not.
    assert s1.ignore_mask[90, 140] and not s1.ignore_mask[60, 80] and not s1.ignore_mask[30, 20]
    # The crowd region (uncompressed RLE) is covered exactly.
    expected = np.zeros((140, 100), bool)
    expected[90:130, 50:95] = True
    np.testing.assert_array_equal(s2.ignore_mask, expected)
    assert not s3.ignore_mask.any()
    np.testing.assert_array_equal(s2.iscrowd, [False, True])


def test_missing_image_file_names_file_and_image_id(tiny, tmp_path):
    (tmp_path / "data" / "tiny" / "images" / "b.png").unlink()
    with pytest.raises(HarnessError, match=r"b\.png: image file not found \(image id 2"):
        load_samples(tiny, "train")
    assert len(load_samples(tiny, "train", images=False)) == 3     # annotations alone still load


# ----------------------------------------------------------------------------------------------------------
# Geometry, hand-worked
# ----------------------------------------------------------------------------------------------------------

def test_bottom_up_affine_maps_image_corners():
    m = A.bottom_up_affine(200, 100, 64)        # s = 0.32, landscape: padded at the bottom
    np.testing.assert_allclose(A.affine_points([[-0.5, -0.5], [199.5, 99.5], [99.5, 49.5]], m),
                               [[-0.5, -0.5], [63.5, 31.5], [31.5, 15.5]], atol=1e-12)
    m = A.bottom_up_affine(100, 200, 64)        # portrait: padded on the right
    np.testing.assert_allclose(A.affine_points([[99.5, 199.5]], m), [[31.5, 63.5]], atol=1e-12)
    np.testing.assert_allclose(A.affine_points(A.affine_points([[12.3, 45.6]], m), A.invert_affine(m)),
                               [[12.3, 45.6]], atol=1e-12)


def test_top_down_affine_maps_box_window():
    m = A.top_down_affine([10, 20, 40, 80], 64)  # window 100 x 100 around (30, 60)
    np.testing.assert_allclose(A.affine_points([[30, 60], [-20, 10], [80, 110]], m),
                               [[31.5, 31.5], [-0.5, -0.5], [63.5, 63.5]], atol=1e-12)
    m = A.top_down_affine([10, 20, 40, 80], (48, 64))    # aspect 3:4 -> window 75 x 100
    np.testing.assert_allclose(A.affine_points([[-7.5, 10], [67.5, 110], [30, 60]], m),
                               [[-0.5, -0.5], [47.5, 63.5], [23.5, 31.5]], atol=1e-12)


def test_augmentation_affine_flip_and_rotation():
    m = A.augmentation_affine(A.AugmentParams(flip=True), 64)
    np.testing.assert_allclose(A.affine_points([[0, 5], [63, 7], [10.25, 3]], m), [[63, 5], [0, 7], [52.75, 3]])
    # +90 degrees turns the picture counter-clockwise: a point right of the centre moves above it.
    m = A.augmentation_affine(A.AugmentParams(angle=90, scale=2.0, tx=1, ty=-2), 65)
    np.testing.assert_allclose(A.affine_points([[42, 32]], m), [[32 + 1, 32 - 20 - 2]], atol=1e-12)


def test_keypoints_leaving_the_output_get_v0_and_flip_permutes_channels():
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, 5] = [10, 10, 2]      # left shoulder, stays inside
    kp[0, 6] = [70, 10, 1]      # right shoulder, leaves a 64-wide output
    kp[0, 9] = [3, 3, 0]        # unlabelled: stays v = 0 with x = y = 0
    out = A.apply_affine_keypoints(kp, np.eye(2, 3), 64)
    np.testing.assert_array_equal(out[0, [5, 6, 9]], [[10, 10, 2], [0, 0, 0], [0, 0, 0]])
    m = A.augmentation_affine(A.AugmentParams(flip=True), 64)
    out = A.apply_affine_keypoints(kp, m, 64, flip_index=COCO17.flip_index)
    np.testing.assert_array_equal(out[0, 6], [53, 10, 2])   # the left shoulder, mirrored, is now channel 6
    assert out[0, 5, 2] == 0


def test_transform_sample_counts_keypoints_that_leave():
    from poseharness.data.sample import Sample

    kp = np.zeros((1, 14, 3), np.float32)
    kp[0, 0] = [5, 5, 2]        # left shoulder: stays
    kp[0, 1] = [100, 5, 2]      # right shoulder: leaves the 32-px output (at scale 0.5 it lands on x = 49.75)
    kp[0, 12] = [120, 5, 1]     # head: leaves too, but CrowdPose's num_keypoints does not count head / neck
    s = Sample(image_id=1, file_name="x", width=128, height=64, keypoints=kp,
               boxes=np.array([[0, 0, 20, 20]], np.float32), areas=np.array([400], np.float32),
               iscrowd=np.zeros(1, bool), num_keypoints=np.array([2]))
    m = A.bottom_up_affine(128, 64, 64)     # scale 0.5
    out = A.transform_sample(s, m, (32, 32), counted=CROWDPOSE14.counted)
    assert out.num_keypoints.tolist() == [1] and out.areas.tolist() == [100.0]
    assert out.keypoints[0, :, 2].tolist() == [2] + [0] * 13
    np.testing.assert_allclose(out.boxes, [[-0.25, -0.25, 10, 10]])
    assert out.width == out.height == 32 and out.meta["orig_width"] == 128


def test_boxes_and_pil_torch_warps_agree():
    np.testing.assert_allclose(A.apply_affine_boxes([[10, 20, 30, 40]], A.augmentation_affine(
        A.AugmentParams(angle=90), 101)), [[20, 60, 40, 30]], atol=1e-4)   # about centre (50, 50): w, h swap
    rng = np.random.default_rng(3)
    image = (rng.random((40, 50, 3)) * 255).astype(np.uint8)
    m = A.compose(A.augmentation_affine(A.AugmentParams(angle=20, scale=1.3, tx=2, flip=True), 48),
                  A.bottom_up_affine(50, 40, 48))
    pil = A.apply_affine_image(image, m, 48).astype(np.float32)
    tch = A.apply_affine_image(torch.from_numpy(image).permute(2, 0, 1).float(), m, 48).permute(1, 2, 0).numpy()
    inner = np.s_[6:-6, 6:-6]               # away from the content's border, where fill handling may differ
    assert np.abs(pil[inner] - tch[inner]).mean() < 1.0
    mask = np.zeros((40, 50), bool)
    mask[10:30, 5:25] = True
    pm = A.apply_affine_image(mask, m, 48)
    tm = A.apply_affine_image(torch.from_numpy(mask), m, 48).numpy()
    assert pm.dtype == bool and (pm != tm).mean() < 0.02 and pm.sum() > 100


def test_augment_config_validation():
    assert A.AugmentConfig.from_dict({"rotate": 10, "scale": [0.8, 1.2]}).scale == (0.8, 1.2)
    with pytest.raises(HarnessError, match="cfg.yaml: unknown augmentation setting"):
        A.AugmentConfig.from_dict({"rotation": 10}, source="cfg.yaml")
    with pytest.raises(HarnessError, match="scale must be"):
        A.AugmentConfig(scale=(2.0, 1.0))


# ----------------------------------------------------------------------------------------------------------
# Augmentation keeps keypoints on the image content: find the coloured markers again
# ----------------------------------------------------------------------------------------------------------

def _find_marker(image: np.ndarray, colour) -> np.ndarray | None:
    """Centroid (x, y) of the pixels within 60 of ``colour`` per channel; edge pixels blended with grey fail it."""
    near = (np.abs(image.astype(np.int32) - np.array(colour)) < 60).all(axis=-1)
    if near.sum() < 3:
        return None
    ys, xs = np.nonzero(near)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("view", ["bottom-up", "top-down"])
def test_augmentation_keeps_keypoints_on_markers(tiny, view):
    config = A.AugmentConfig(rotate=40, scale=(0.9, 1.3), translate=0.05, flip=1.0)
    ds = PoseDataset(tiny, "train", input_size=96, view=view, augment=config, augment_seed=11)
    index = next(i for i, (img, person) in enumerate(ds.items) if img == 0 and person in (-1, 0))
    perm = COCO17.flip_index
    checked = 0
    for epoch in range(4):
        ds.set_epoch(epoch)
        s = ds.transformed_sample(index)
        assert s.meta["flip"] and s.image.shape == (96, 96, 3)
        kp = s.keypoints[0]
        for k in MARKERS:
            # After the mirror, channel k holds the point that was channel perm[k]: so its marker colour.
            assert perm[k] in MARKERS
            if kp[k, 2] == 0:
                continue
            found = _find_marker(s.image, MARKERS[perm[k]])
            assert found is not None, (view, epoch, k)
            assert np.hypot(*(found - kp[k, :2])) < 1.0, (view, epoch, k, found, kp[k])
            checked += 1
    assert checked >= 12


# ----------------------------------------------------------------------------------------------------------
# The torch dataset with workers
# ----------------------------------------------------------------------------------------------------------

def count_visible(sample):
    """A stand-in for a method's encode: picklable, runs in the workers on the transformed sample."""
    heat = torch.zeros(17, sample.height // 4, sample.width // 4)
    for kp in sample.keypoints:
        for k, (x, y, v) in enumerate(kp.tolist()):
            if v > 0:
                heat[k, int(y) // 4, int(x) // 4] = 1
    return {"heat": heat, "persons": torch.tensor(sample.num_persons)}


def _batches(ds, workers):
    loader = DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate, shuffle=False)
    return list(loader)


def _same(b1, b2) -> bool:
    return all(torch.equal(x["image"], y["image"]) and torch.equal(x["heat"], y["heat"])
               and all(torch.equal(p, q) for p, q in zip(x["keypoints"], y["keypoints"]))
               and all(np.array_equal(p["affine"], q["affine"]) for p, q in zip(x["meta"], y["meta"]))
               for x, y in zip(b1, b2))


def test_dataloader_two_workers_is_deterministic(tiny):
    ds = PoseDataset(tiny, "train", input_size=64, view="bottom-up", augment=A.AugmentConfig(),
                     encode=count_visible, augment_seed=5)
    first, second = _batches(ds, 2), _batches(ds, 2)
    assert len(first) == 2
    b = first[0]
    assert b["image"].shape == (2, 3, 64, 64) and b["image"].dtype == torch.float32
    assert b["ignore_mask"].shape == (2, 64, 64) and b["ignore_mask"].dtype == torch.bool
    assert b["heat"].shape == (2, 17, 16, 16) and b["persons"].tolist() == [3, 2]
    assert [k.shape for k in b["keypoints"]] == [(3, 17, 3), (2, 17, 3)]
    assert [m["image_id"] for m in b["meta"]] == [1, 2] and b["meta"][0]["affine"].shape == (2, 3)
    assert _same(first, second)
    assert _same(first, _batches(ds, 0))          # the workers do not change what an item is
    ds.set_epoch(1)
    assert not torch.equal(_batches(ds, 2)[0]["image"], first[0]["image"])


def test_eval_view_is_the_plain_affine_and_image_round_trips(tiny):
    ds = PoseDataset(tiny, "train", input_size=64, view="bottom-up")
    item = ds[1]
    np.testing.assert_allclose(item["meta"]["affine"], A.bottom_up_affine(100, 140, 64))
    assert item["meta"]["orig_width"] == 100 and item["meta"]["orig_height"] == 140
    s = ds.transformed_sample(1)
    np.testing.assert_array_equal(denormalise_image(normalise_image(s.image)), s.image)
    # Crowd region: image rows 90..129, cols 50..94 -> input rows ~41..59, cols ~23..43 (scale 64/140).
    assert item["ignore_mask"][45:55, 26:40].all() and not item["ignore_mask"][:35].any()
    td = PoseDataset(tiny, "train", input_size=(48, 64), view="top-down")
    assert len(td) == 3            # annotated persons only: not the crowd, not the zero-keypoint person
    item = td[0]
    assert item["image"].shape == (3, 64, 48) and item["keypoints"].shape == (1, 17, 3)
    assert item["meta"]["annotation_id"] == 7
    np.testing.assert_allclose(item["meta"]["affine"], A.top_down_affine([50, 30, 60, 60], (48, 64)))



def test_max_persons_leaves_out_the_crowded_images(tiny):
    counts = [int(PoseDataset._annotated(PoseDataset(tiny, "train", input_size=64).samples.record(i)).sum())
              for i in range(3)]
    assert max(counts) == 2 and min(counts) < 2
    kept = PoseDataset(tiny, "train", input_size=64, max_persons=1)
    assert [i for i, _ in kept.items] == [i for i, c in enumerate(counts) if c <= 1]
    td = PoseDataset(tiny, "train", input_size=(48, 64), view="top-down", max_persons=1)
    assert len(td) == sum(c for c in counts if c <= 1)
    assert len(PoseDataset(tiny, "train", input_size=64, max_persons=2)) == 3


# ----------------------------------------------------------------------------------------------------------
# data show
# ----------------------------------------------------------------------------------------------------------

def test_show_writes_png(tiny, tmp_path):
    out = show(tiny, "train", tmp_path / "sheet.png", count=6)
    assert out == tmp_path / "sheet.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (3 * 384 + 16, 384 + 8)
        sheet = np.asarray(im.convert("RGB"))
    tile = sheet[4:4 + 384, 4 + 384 + 4: 4 + 2 * 384 + 4]     # image 2: its crowd region is tinted magenta
    magenta = (tile[..., 0] > 150) & (tile[..., 2] > 150) & (tile[..., 1] < 110)
    assert magenta.sum() > 500
    assert not list(tmp_path.glob(".sheet.png.*"))             # atomic write left no temporary file
