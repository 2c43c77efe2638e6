"""Synthetic datasets: determinism, the three real file formats, and ground truth that scores AP 1.0 with the
official evaluators (pycocotools for COCO / OCHuman, xtcocotools' CrowdPose mode)."""
from __future__ import annotations

import colorsys
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from xtcocotools.coco import COCO as XCOCO
from xtcocotools.cocoeval import COCOeval as XCOCOeval

from poseharness import paths
from poseharness.data import render
from poseharness.data.manifest import load_manifest, parse_manifest
from poseharness.data.synthetic import (
    STAMP, box_iou, compressed_rle, crowd_index, crowd_level_counts, format_summary, generate, mask_polygons,
    overlapping, read_keypoints, uncompressed_rle,
)
from poseharness.errors import HarnessError
from poseharness.schemas import CROWDPOSE14

NAMES = ("synthetic-coco", "synthetic-crowdpose", "synthetic-ochuman")


def _manifest(name: str, generator: dict | None = None, sizes: dict | None = None):
    """The repository manifest with some generator settings or sizes replaced (validated as a file would be)."""
    source = paths.manifests_dir() / f"{name}.yaml"
    raw = yaml.safe_load(source.read_text())
    raw["generator"].update(generator or {})
    raw["sizes"].update(sizes or {})
    return parse_manifest(raw, source)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Each synthetic dataset at size tiny, seed 0, rendered by 2 worker processes."""
    data = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSEHARNESS_DATA", str(data))
        out = {}
        for name in NAMES:
            manifest = load_manifest(name)
            out[name] = (manifest, generate(manifest, "tiny", jobs=2, progress=False))
        yield out


def _load(manifest, split="val") -> tuple[Path, dict]:
    path = manifest.annotation_path(split, "tiny")
    return path, json.loads(path.read_text())


def _persons(doc):
    return [a for a in doc["annotations"] if not a["iscrowd"]]


def _gt_as_predictions(doc) -> list[dict]:
    """Every scorable person (iscrowd 0, num_keypoints > 0) as a prediction with score 1 and confidence 1."""
    return [{"image_id": a["image_id"], "category_id": 1, "score": 1.0,
             "keypoints": [float(v) if i % 3 != 2 else 1.0 for i, v in enumerate(a["keypoints"])]}
            for a in _persons(doc) if a["num_keypoints"] > 0]


def _evaluate(manifest, path: Path, predictions: list[dict]) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        if manifest.format == "crowdpose":
            gt = XCOCO(str(path))
            ev = XCOCOeval(gt, gt.loadRes(predictions), "keypoints_crowd", sigmas=CROWDPOSE14.sigmas_array,
                           use_area=False)
        else:
            gt = COCO(str(path))
            ev = COCOeval(gt, gt.loadRes(predictions), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


# ------------------------------------------------------------------------------------------ determinism

@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_bytes_whatever_the_number_of_jobs(generated, tmp_path, monkeypatch, name):
    manifest, summary = generated[name]
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path))
    again = generate(manifest, "tiny", jobs=1, progress=False)
    assert again["status"] == "generated"
    first, second = _files(Path(summary["root"])), _files(Path(again["root"]))
    assert len(first) == 36 + 2 + 1                    # images, two annotation files, the stamp
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first), [k for k in first if first[k] != second[k]]


def test_another_seed_gives_other_data(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path))
    manifest = _manifest("synthetic-coco", sizes={"tiny": {"train": 2, "val": 2}})
    a, b = generate(manifest, "tiny", seed=1, jobs=1, progress=False), generate(manifest, "tiny", seed=2,
                                                                                jobs=1, progress=False)
    fa, fb = _files(Path(a["root"])), _files(Path(b["root"]))
    assert fa.keys() == fb.keys()
    assert fa["annotations/val.json"] != fb["annotations/val.json"]
    assert fa["images/val/000000100001.jpg"] != fb["images/val/000000100001.jpg"]


def test_second_call_is_already_prepared_and_new_settings_regenerate(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path))
    manifest = _manifest("synthetic-ochuman", sizes={"tiny": {"train": 3, "val": 2}})
    first = generate(manifest, "tiny", jobs=1, progress=False)
    root = Path(first["root"])
    image = root / "images" / "train" / "000001.jpg"
    first_bytes = image.read_bytes()
    stamp = json.loads((root / STAMP).read_text())
    assert stamp["settings"]["generator_version"] >= 1 and stamp["settings"]["seed"] == 0

    second = generate(manifest, "tiny", jobs=1, progress=False)
    assert second["status"] == "already prepared"
    assert second["splits"] == first["splits"]
    assert image.stat().st_mtime_ns == (root / "images" / "train" / "000001.jpg").stat().st_mtime_ns

    changed = _manifest("synthetic-ochuman", generator={"noise": 2.0}, sizes={"tiny": {"train": 3, "val": 2}})
    assert generate(changed, "tiny", jobs=1, progress=False)["status"] == "generated"
    assert image.read_bytes() != first_bytes
    # A missing image makes the folder incomplete: regenerate rather than trust the stamp.
    image.unlink()
    assert generate(changed, "tiny", jobs=1, progress=False)["status"] == "generated"
    assert image.is_file()


def test_fewer_images_leave_no_stale_files(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path))
    generate(_manifest("synthetic-coco", sizes={"tiny": {"train": 3, "val": 1}}), "tiny", jobs=1, progress=False)
    out = generate(_manifest("synthetic-coco", sizes={"tiny": {"train": 1, "val": 1}}), "tiny", jobs=1,
                   progress=False)
    assert sorted(p.name for p in (Path(out["root"]) / "images" / "train").iterdir()) == ["000000000001.jpg"]


# ------------------------------------------------------------------------------------ settings checks

@pytest.mark.parametrize("generator, field", [
    ({"bogus": 1}, "generator.bogus"),
    ({"persons_per_image": [5, 2]}, "generator.persons_per_image"),
    ({"persons_per_image": [1, 30]}, "generator.persons_per_image"),
    ({"outside_rate": 1.5}, "generator.outside_rate"),
    ({"overlap": "pile"}, "generator.overlap"),
    ({"jpeg_quality": True}, "generator.jpeg_quality"),
    ({"image_size": 300}, "generator.image_size"),
])
def test_bad_generator_settings_name_the_file_and_field(tmp_path, monkeypatch, generator, field):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path))
    with pytest.raises(HarnessError, match=field) as err:
        generate(_manifest("synthetic-coco", generator=generator), "tiny", progress=False)
    assert "synthetic-coco.yaml" in str(err.value)
    assert not any(tmp_path.iterdir())      # validated before anything is written


def test_ochuman_refuses_crowd_regions(tmp_path, monkeypatch):
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path))
    with pytest.raises(HarnessError, match="generator.crowd_region_rate"):
        generate(_manifest("synthetic-ochuman", generator={"crowd_region_rate": 0.1}), "tiny", progress=False)


# ----------------------------------------------------------------------------- formats and evaluators

@pytest.mark.parametrize("name", NAMES)
def test_files_load_in_pycocotools_and_xtcocotools(generated, name):
    manifest, summary = generated[name]
    for split in manifest.splits:
        path, doc = _load(manifest, split)
        with contextlib.redirect_stdout(io.StringIO()):
            for api in (COCO, XCOCO):
                coco = api(str(path))
                assert len(coco.getImgIds()) == summary["splits"][split]["images"] == len(doc["images"])
                assert len(coco.getAnnIds()) == len(doc["annotations"])
        assert doc["categories"] == [{"id": 1, "name": "person", "supercategory": "person",
                                      "keypoints": list(manifest.schema.keypoints),
                                      "skeleton": [[a + 1, b + 1] for a, b in manifest.schema.skeleton()]}]
        assert min(a["id"] for a in doc["annotations"]) == (1 if split == "train" else 10_000_001)
        for im in doc["images"]:
            with Image.open(manifest.image_dir(split, "tiny") / im["file_name"]) as img:
                assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (im["width"], im["height"]))
            assert 256 <= im["width"] <= 384 and 256 <= im["height"] <= 384


@pytest.mark.parametrize("name", NAMES)
def test_ground_truth_as_predictions_scores_ap_1(generated, name):
    manifest, _ = generated[name]
    path, doc = _load(manifest)
    predictions = _gt_as_predictions(doc)
    stats = _evaluate(manifest, path, predictions)
    assert stats[0] == pytest.approx(1.0)                       # AP
    assert all(s == pytest.approx(1.0) for s in stats if s != -1)
    # The check can fail: predictions moved by a few pixels lose AP.
    moved = [{**p, "keypoints": [v + 4.0 if i % 3 != 2 else v for i, v in enumerate(p["keypoints"])]}
             for p in predictions]
    assert _evaluate(manifest, path, moved)[0] < 0.95


def test_coco_dialect(generated):
    manifest, summary = generated["synthetic-coco"]
    for split in manifest.splits:
        path, doc = _load(manifest, split)
        assert list(doc) == ["info", "licenses", "images", "annotations", "categories"]
        assert all(im["file_name"] == f"{im['id']:012d}.jpg" for im in doc["images"])
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(path))
        for a in doc["annotations"]:
            kp = np.asarray(a["keypoints"]).reshape(17, 3)
            assert all(type(v) is int for v in a["keypoints"])                 # integer coordinates
            assert set(kp[:, 2]) <= {0, 1, 2}
            assert (kp[kp[:, 2] == 0, :2] == 0).all()
            assert a["num_keypoints"] == int((kp[:, 2] > 0).sum())
            assert a["category_id"] == 1 and all(type(v) is float for v in a["bbox"])
            mask = gt.annToMask(gt.anns[a["id"]])
            assert a["area"] == pytest.approx(mask.sum())                     # segment area, not the box
            if a["iscrowd"]:
                assert isinstance(a["segmentation"]["counts"], list) and a["num_keypoints"] == 0
            else:
                assert isinstance(a["segmentation"], list) and all(len(p) >= 6 for p in a["segmentation"])
                x, y, w, h = a["bbox"]
                assert a["area"] <= w * h + 1
                if a["area"] < 32 ** 2:
                    assert a["num_keypoints"] == 0                            # small persons: no keypoints
    # What the COCO stand-in must contain (over both splits).
    everything = [a for s in manifest.splits for a in _load(manifest, s)[1]["annotations"]]
    v = np.concatenate([np.asarray(a["keypoints"]).reshape(17, 3)[:, 2] for a in everything if not a["iscrowd"]])
    assert {0, 1, 2} <= set(v.tolist())
    assert any(a["iscrowd"] for a in everything)
    assert any(not a["iscrowd"] and a["num_keypoints"] == 0 for a in everything)
    assert any(a["num_keypoints"] > 0 and a["area"] > 96 ** 2 for a in everything)     # large persons too
    for split, st in summary["splits"].items():
        doc = _load(manifest, split)[1]
        persons = _persons(doc)
        assert st["persons"] == len(persons)
        assert st["crowd_regions"] == len(doc["annotations"]) - len(persons)
        assert st["zero_keypoint_persons"] == sum(a["num_keypoints"] == 0 for a in persons)
        assert st["keypoints_visible"] == sum(a["keypoints"][2::3].count(2) for a in persons)


def test_crowdpose_dialect_and_crowd_index(generated):
    manifest, summary = generated["synthetic-crowdpose"]
    all_indices = []
    for split in manifest.splits:
        _, doc = _load(manifest, split)
        assert list(doc) == ["categories", "images", "annotations"]
        by_image: dict[int, list] = {}
        for a in doc["annotations"]:
            assert set(a) == {"num_keypoints", "iscrowd", "keypoints", "image_id", "bbox", "category_id", "id"}
            kp = np.asarray(a["keypoints"]).reshape(14, 3)
            assert all(type(v) is int for v in a["keypoints"])
            assert a["num_keypoints"] == int(CROWDPOSE14.count_labelled(kp))   # the 12 limb joints only
            by_image.setdefault(a["image_id"], []).append(a)
        for im in doc["images"]:
            assert set(im) == {"file_name", "id", "height", "width", "crowdIndex"}
            assert im["file_name"] == f"{im['id']}.jpg" and 100_000 <= im["id"] <= 999_999
            persons = [a for a in by_image.get(im["id"], []) if not a["iscrowd"]]
            kp = np.asarray([a["keypoints"] for a in persons], dtype=float).reshape(-1, 14, 3)
            boxes = np.asarray([a["bbox"] for a in persons], dtype=float).reshape(-1, 4)
            assert im["crowdIndex"] == round(crowd_index(kp, boxes), 2)
            assert isinstance(im["crowdIndex"], float)
            all_indices.append(im["crowdIndex"])
        levels = crowd_level_counts([im["crowdIndex"] for im in doc["images"]])
        assert {f"{k}_images": v for k, v in levels.items()} == {
            k: v for k, v in summary["splits"][split].items() if k.endswith("_images")}
    levels = crowd_level_counts(all_indices)
    assert min(levels.values()) >= 3, levels       # easy, medium and hard are all populated


def test_crowd_index_by_hand():
    # Person 0: box [0, 0, 10, 10], 4 labelled joints (one unlabelled joint inside person 1's box).
    # Person 1: box [5, 0, 10, 10], 2 labelled joints, at (6, 5) and (20, 5).
    # Person 2: no labelled joint -> not averaged, and contributes no joints.
    kp = np.zeros((3, 5, 3))
    kp[0] = [[1, 1, 2], [5, 5, 1], [9, 9, 2], [10, 10, 2], [7, 3, 0]]
    kp[1, :2] = [[6, 5, 2], [20, 5, 2]]
    boxes = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [0, 0, 30, 30]], dtype=float)
    # N_b(0): person 1's (6, 5) is inside [0,10]x[0,10]; (20, 5) is not -> 1 of N_a = 4.
    # N_b(1): box [5,15]x[0,10] holds person 0's (5, 5) (edge included), (9, 9), (10, 10) -> 3 of N_a = 2.
    assert crowd_index(kp, boxes) == pytest.approx((1 / 4 + 3 / 2) / 2)
    assert crowd_index(np.zeros((0, 5, 3)), np.zeros((0, 4))) == 0.0
    assert crowd_level_counts([0.0, 0.19, 0.2, 0.79, 0.8, 2.5]) == {"easy": 2, "medium": 2, "hard": 2}


def test_ochuman_dialect_and_overlap(generated):
    manifest, summary = generated["synthetic-ochuman"]
    for split in manifest.splits:
        _, doc = _load(manifest, split)
        assert all(im["file_name"] == f"{im['id']:06d}.jpg" for im in doc["images"])
        sizes = {im["id"]: (im["height"], im["width"]) for im in doc["images"]}
        by_image: dict[int, list] = {}
        for a in doc["annotations"]:
            assert a["iscrowd"] == 0
            x, y, w, h = a["bbox"]
            assert a["area"] == w * h                                           # OCHuman: box area
            assert all(type(v) is float for i, v in enumerate(a["keypoints"]) if i % 3 != 2)
            seg = a["segmentation"]
            assert isinstance(seg["counts"], str) and tuple(seg["size"]) == sizes[a["image_id"]]
            assert mask_utils.area({"counts": seg["counts"].encode(), "size": seg["size"]}) > 0
            by_image.setdefault(a["image_id"], []).append(a["bbox"])
        n_overlap = sum(int(overlapping(np.asarray(b, dtype=float)).sum()) for b in by_image.values())
        fraction = n_overlap / len(doc["annotations"])
        assert fraction == pytest.approx(summary["splits"][split]["overlap_fraction"], abs=1e-4)
        assert fraction > 0.7                                   # most persons overlap another at IoU > 0.5


def test_summary_and_its_text(generated):
    text = format_summary(generated["synthetic-crowdpose"][1])
    st = generated["synthetic-crowdpose"][1]["splits"]["train"]
    assert "synthetic-crowdpose (size tiny, seed 0): generated" in text
    assert f"{st['persons']:,} persons" in text and "easy/medium/hard" in text
    assert "easy/medium/hard" not in format_summary(generated["synthetic-coco"][1])


# ----------------------------------------------------------------------------------- building blocks

def test_mask_encodings_round_trip_through_pycocotools():
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:25, 10:30] = True
    mask[30:36, 40:48] = True            # a second component
    mask[12:16, 15:20] = False           # a hole: COCO polygons fill it
    polys = mask_polygons(mask)
    assert len(polys) == 2
    filled = mask.copy()
    filled[12:16, 15:20] = True
    back = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, 40, 50))).astype(bool)
    assert (back & filled).sum() / (back | filled).sum() > 0.97
    for rle in (uncompressed_rle(mask), compressed_rle(mask)):
        obj = mask_utils.frPyObjects(rle, 40, 50) if isinstance(rle["counts"], list) else \
            {"counts": rle["counts"].encode(), "size": rle["size"]}
        assert (mask_utils.decode(obj).astype(bool) == mask).all()
    starts_inside = np.ones((3, 3), dtype=bool)
    assert uncompressed_rle(starts_inside)["counts"] == [0, 9]


def test_box_iou_and_overlap():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 10, 10], [50, 50, 5, 5]], dtype=float)
    iou = box_iou(boxes, boxes)
    assert iou[0, 1] == pytest.approx(80 / 120) and iou[0, 2] == 0 and iou[2, 2] == 1
    assert overlapping(boxes).tolist() == [True, True, False]


def _pose(yaw: float, **kw) -> render.Pose:
    base = dict(yaw=yaw, lean=0.0, head_tilt=0.0, shoulder_abduction=(60.0, 60.0), shoulder_flexion=(0.0, 0.0),
                elbow=(0.0, 0.0), hip_abduction=(10.0, 10.0), hip_flexion=(0.0, 0.0), knee=(0.0, 0.0),
                elbow_sign=(1.0, 1.0), knee_sign=(1.0, 1.0), arm_scale=(1.0, 1.0), leg_scale=(1.0, 1.0))
    base.update(kw)
    return render.Pose(**base)


def test_figures_are_anthropometric_and_left_right_distinguishable():
    J = render.JOINT_INDEX
    front = render.build_figure(_pose(0.0, hip_abduction=(0.0, 0.0), shoulder_abduction=(0.0, 0.0)), 200.0)
    # Head keypoint (0.9 of the way from the head centre to the crown) down to the ankles.
    span = front.joints[[J["left_ankle"], J["right_ankle"]], 1].mean() - front.joints[J["head"], 1]
    assert span == pytest.approx(200.0 * (0.288 + 0.045 + 0.066 * 1.9 + 0.491), rel=1e-6)
    assert front.joints[J["left_shoulder"], 0] - front.joints[J["right_shoulder"], 0] == pytest.approx(46.0)
    # Facing the camera the person's left side is on the image's right; from behind it is on the left.
    back = render.build_figure(_pose(180.0), 200.0)
    for side_x in (front.joints[:, 0], render.build_figure(_pose(20.0), 200.0).joints[:, 0]):
        assert side_x[J["left_wrist"]] > side_x[J["right_wrist"]] and side_x[J["left_eye"]] > side_x[J["right_eye"]]
    assert back.joints[J["left_wrist"], 0] < back.joints[J["right_wrist"], 0]
    assert back.face_depth[J["nose"]] < -0.5 < front.face_depth[J["nose"]]
    # Left limbs warm, right limbs cool, for every sampled appearance.
    rng = np.random.default_rng(0)
    for _ in range(20):
        app = render.sample_appearance(rng)
        hue = lambda part: colorsys.rgb_to_hsv(*[c / 255 for c in app.parts[render.PART[part]]])[0]
        assert all(hue(f"left_{p}") > 0.9 or hue(f"left_{p}") < 0.12 for p in ("upper_arm", "thigh", "shank"))
        assert all(0.48 < hue(f"right_{p}") < 0.7 for p in ("upper_arm", "thigh", "shank"))


def test_visibility_is_read_off_the_label_map():
    J = render.JOINT_INDEX
    fig = render.build_figure(_pose(0.0), 160.0, render.sample_appearance(np.random.default_rng(1)))
    fig = fig.translated(np.array([100.0, 150.0]))      # ankles (150 + 0.491 * 160) fall below the image
    rgb, label = Image.new("RGB", (200, 200)), Image.new("I", (200, 200))
    render.paint_figure(ImageDraw.Draw(rgb), ImageDraw.Draw(label), fig, slot=3)
    # An object in front of the left wrist.
    wx, wy = fig.joints[J["left_wrist"]]
    ImageDraw.Draw(label).rectangle([wx - 4, wy - 4, wx + 4, wy + 4], fill=render.OCCLUDER_LABEL)
    lab = np.asarray(label).astype(np.int64)
    owner = np.where(lab == render.OCCLUDER_LABEL, -2, lab // render.PART_STRIDE - 1)
    kp = read_keypoints(fig, 3, owner, lab % render.PART_STRIDE, 200, 200)
    assert kp[J["left_wrist"], 2] == 1
    ankles = [J["left_ankle"], J["right_ankle"]]
    assert (kp[ankles] == 0).all()                                   # outside the image: v=0, x=y=0
    inside = np.ones(len(kp), dtype=bool)
    inside[ankles] = False
    seen = inside.copy()
    seen[J["left_wrist"]] = False
    assert (kp[seen, 2] == 2).all()
    assert np.allclose(kp[seen, :2], fig.joints[seen])
    # Another person's slot reads as occlusion for this one.
    assert (read_keypoints(fig, 4, owner, lab % render.PART_STRIDE, 200, 200)[inside, 2] == 1).all()
