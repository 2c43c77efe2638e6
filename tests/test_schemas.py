import numpy as np
import pytest

from poseharness.errors import HarnessError
from poseharness.schemas import COCO17, CROWDPOSE14, SCHEMAS, coco_category, get_schema


@pytest.mark.parametrize("schema", list(SCHEMAS.values()), ids=list(SCHEMAS))
def test_schema_consistency(schema):
    k = schema.num_keypoints
    assert len(schema.sigmas) == k == len(set(schema.keypoints))
    perm = schema.flip_index
    # a mirror applied twice is the identity, and every pair is left/right of the same joint
    assert np.array_equal(perm[perm], np.arange(k))
    for a, b in schema.flip_pairs:
        na, nb = schema.keypoints[a], schema.keypoints[b]
        assert na.startswith("left_") and nb.startswith("right_") and na[5:] == nb[6:]
        assert schema.sigmas[a] == schema.sigmas[b]
    for name in schema.keypoints:
        if not name.startswith(("left_", "right_")):
            assert perm[schema.keypoints.index(name)] == schema.keypoints.index(name)
    for name, limbs in schema.skeletons.items():
        assert all(0 <= a < k and 0 <= b < k and a != b for a, b in limbs), name
        assert len(set(limbs)) == len(limbs), name


def test_coco_facts():
    assert COCO17.num_keypoints == 17 and CROWDPOSE14.num_keypoints == 14
    assert len(COCO17.skeleton("coco19")) == 19 and len(COCO17.skeleton("gog19")) == 19
    assert len(COCO17.skeleton("gog44")) == 44
    # GOG19 is the same limb set as COCO19, in another order/direction
    assert {frozenset(p) for p in COCO17.skeleton("gog19")} == {frozenset(p) for p in COCO17.skeleton("coco19")}
    # GOG44 contains all 19 limbs
    dense = {frozenset(p) for p in COCO17.skeleton("gog44")}
    assert {frozenset(p) for p in COCO17.skeleton("gog19")} <= dense
    assert COCO17.sigmas[0] == 0.026 and COCO17.sigmas[11] == 0.107
    cat = coco_category(COCO17)
    assert cat["skeleton"][0] == [16, 14] and len(cat["keypoints"]) == 17


def test_crowdpose_counts_limb_joints_only():
    kp = np.zeros((2, 14, 3))
    kp[0, :, 2] = 2          # all labelled: 12 counted (head and neck are not)
    kp[1, 12:, 2] = 1        # only head and neck labelled: 0 counted
    assert CROWDPOSE14.count_labelled(kp).tolist() == [12, 0]
    assert COCO17.count_labelled(np.ones((1, 17, 3))).tolist() == [17]


def test_unknown_names():
    with pytest.raises(HarnessError, match="unknown keypoint schema 'mpii'"):
        get_schema("mpii")
    with pytest.raises(HarnessError, match="no skeleton 'nope'"):
        COCO17.skeleton("nope")
