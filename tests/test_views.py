"""Views: ground truth through every view and back; boxes from the ground truth and from detection files."""
import json

import numpy as np
import pytest

from poseharness.data.augment import affine_points, transform_sample
from poseharness.data.sample import Sample
from poseharness.errors import HarnessError
from poseharness.views import (bottom_up_views, ground_truth_boxes, image_views, load_detections, parse_input_size,
                               to_original, top_down_views)


def sample(width: int, height: int, persons: int = 3, seed: int = 0) -> Sample:
    """Random persons inside a width × height image; person 0 is a crowd, the last has no labelled keypoint."""
    rng = np.random.default_rng(seed)
    kp = np.zeros((persons, 17, 3), np.float32)
    boxes = np.zeros((persons, 4), np.float32)
    for p in range(persons):
        x0, y0 = rng.uniform(0, width * 0.6), rng.uniform(0, height * 0.6)
        w, h = rng.uniform(10, width - x0), rng.uniform(10, height - y0)
        kp[p, :, 0] = rng.uniform(x0, x0 + w, 17)
        kp[p, :, 1] = rng.uniform(y0, y0 + h, 17)
        kp[p, :, 2] = rng.choice([0, 1, 2], 17, p=[0.2, 0.3, 0.5])
        boxes[p] = x0, y0, w, h
    kp[-1, :, 2] = 0
    kp[kp[..., 2] == 0, :2] = 0
    num = (kp[..., 2] > 0).sum(axis=1)
    crowd = np.zeros(persons, bool)
    crowd[0] = True
    return Sample(image_id=7, file_name="x.jpg", width=width, height=height, keypoints=kp, boxes=boxes,
                  areas=boxes[:, 2] * boxes[:, 3], iscrowd=crowd, num_keypoints=num)


def round_trip(s: Sample, view, persons=None) -> None:
    """The sample's keypoints seen through ``view`` and mapped back land where they were (1e-3 px)."""
    seen = transform_sample(s, view.affine, view.size, persons=persons)
    keep = seen.keypoints[..., 2] > 0
    assert keep.any()
    back = to_original(seen.keypoints.astype(np.float64), view)
    original = s.keypoints if persons is None else s.keypoints[persons]
    np.testing.assert_allclose(back[keep][:, :2], original[keep][:, :2], atol=1e-3)
    assert (back[~keep] == 0).all()


@pytest.mark.parametrize("width,height", [(200, 200), (320, 180), (180, 320)])
@pytest.mark.parametrize("input_size", [64, (96, 64)])
def test_bottom_up_view_round_trip(width, height, input_size):
    s = sample(width, height)
    (view,) = bottom_up_views(s, input_size)
    assert view.kind == "bottom-up" and view.image_id == 7 and view.box is None and view.score == 1.0
    round_trip(s, view)
    # The whole image fits the input, top-left aligned: its extent [-0.5, W - 0.5] maps inside the input.
    corners = affine_points(np.array([[-0.5, -0.5], [width - 0.5, height - 0.5]]), view.affine)
    assert np.allclose(corners[0], -0.5)
    assert corners[1, 0] <= view.size[0] - 0.5 + 1e-9 and corners[1, 1] <= view.size[1] - 0.5 + 1e-9
    assert np.isclose(corners[1, 0], view.size[0] - 0.5) or np.isclose(corners[1, 1], view.size[1] - 0.5)


@pytest.mark.parametrize("width,height", [(256, 256), (384, 256)])
def test_top_down_views_with_a_rectangular_input(width, height):
    s = sample(width, height, persons=5, seed=3)
    views = image_views(s, "top-down", (192, 256))
    assert [v.person for v in views] == [1, 2, 3]          # not the crowd, not the unlabelled person
    for v in views:
        assert v.kind == "top-down" and v.size == (192, 256) and v.score == 1.0
        # the box centre at the input's centre, the window's aspect the input's, 1.25 × the box's long side
        centre = v.box[:2] + v.box[2:] / 2
        np.testing.assert_allclose(affine_points(centre, v.affine), [95.5, 127.5], atol=1e-9)
        sx, sy = v.affine[0, 0], v.affine[1, 1]
        assert sx == pytest.approx(sy) and v.affine[0, 1] == v.affine[1, 0] == 0
        window = np.array([192 / sx, 256 / sy])
        assert window[0] / window[1] == pytest.approx(192 / 256)
        assert min(window / (v.box[2:] * 1.25)) == pytest.approx(1.0)     # grown on the short side only
        assert v.window_area() == pytest.approx(window.prod())
        round_trip(s, v, persons=[v.person])


def test_ground_truth_boxes_and_detection_views():
    s = sample(300, 200, persons=4, seed=1)
    boxes, scores, persons = ground_truth_boxes(s)
    assert list(persons) == [1, 2] and (scores == 1).all()
    np.testing.assert_allclose(boxes, s.boxes[[1, 2]])
    detections = {7: (np.array([[10.0, 20.0, 50.0, 80.0], [0, 0, 30, 30]]), np.array([0.9, 0.4]))}
    views = image_views(s, "top-down", 64, detections)
    assert [v.score for v in views] == [0.9, 0.4] and all(v.person is None for v in views)
    assert image_views(s, "top-down", 64, {8: detections[7]}) == []
    assert len(image_views(s, "bottom-up", 64, detections)) == 1
    assert top_down_views(s, 64, np.zeros((0, 4)), np.zeros(0)) == []


def test_input_sizes():
    assert parse_input_size(64) == 64
    assert parse_input_size([48, 64]) == (48, 64) == parse_input_size({"width": 48, "height": 64})
    for bad in (0, -1, 1.5, True, [48], [48, 0], {"width": 48}, "64", None):
        assert parse_input_size(bad) is None


def test_load_detections(tmp_path):
    path = tmp_path / "det.json"
    path.write_text(json.dumps([
        {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10.5], "score": 0.25},
        {"image_id": 1, "category_id": 3, "bbox": [5, 5, 5, 5], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [7, 8, 9, 10], "score": 1}]))
    found = load_detections(path)
    assert set(found) == {1, 2}
    np.testing.assert_array_equal(found[1][0], [[1, 2, 3, 4], [7, 8, 9, 10]])
    np.testing.assert_array_equal(found[1][1], [0.5, 1.0])
    assert list(load_detections(path, category_id=3)) == [1]


@pytest.mark.parametrize("content,message", [
    ('{"image_id": 1}', r"det\.json: a detection file must be a JSON list of detections, got a JSON object"),
    ("[1, 2", r"det\.json: not a readable JSON detection file"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}, 3]',
     r"det\.json: record 1: must be an object, got int"),
    ('[{"image_id": "1", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]',
     r"det\.json: record 0: field image_id: must be an integer"),
    ('[{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]', r"record 0: field category_id: must be an integer"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 1}]',
     r"record 0: field bbox: must be \[x, y, w, h\]"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1], "score": 1}]',
     r"record 0: field bbox: width and height must be ≥ 0"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]', r"record 0: field score: must be a finite"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": NaN}]', r"record 0: field score"),
])
def test_malformed_detection_files_name_file_record_and_field(tmp_path, content, message):
    path = tmp_path / "det.json"
    path.write_text(content)
    with pytest.raises(HarnessError, match=message):
        load_detections(path)


def test_missing_detection_file(tmp_path):
    with pytest.raises(HarnessError, match=r"nope\.json: detection file not found"):
        load_detections(tmp_path / "nope.json")
