"""Where the project's shared real annotation files are: ``../shared/data`` beside the checkout (as CI lays it
out), else ``/work/shared/data``; ``POSEHARNESS_SHARED_DATA`` overrides both."""
import os
from pathlib import Path

_CANDIDATES = [Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data")]
if os.environ.get("POSEHARNESS_SHARED_DATA"):
    _CANDIDATES.insert(0, Path(os.environ["POSEHARNESS_SHARED_DATA"]))

SHARED_DATA = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
SAMPLES = SHARED_DATA / "samples"
CROWDPOSE_VAL = SHARED_DATA / "real" / "crowdpose" / "crowdpose_val.json"

# Sample annotation and results files of the official tools' and MMPose's tests.
COCO_GT = SAMPLES / "mmpose_test_coco.json"
COCO_PREDS = SAMPLES / "xtcocoapi_example_coco_preds.json"
OCHUMAN_GT = SAMPLES / "mmpose_test_ochuman.json"
CROWD_GT = SAMPLES / "xtcocoapi_example_crowdpose_val.json"
CROWD_PREDS = SAMPLES / "xtcocoapi_example_crowdpose_preds.json"
MMPOSE_CROWD_GT = SAMPLES / "mmpose_test_crowdpose.json"
