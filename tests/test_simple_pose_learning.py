"""Simple Pose learns: the tiny 3-stage IMHN trained with focal L2 on synthetic COCO on the CPU finds persons that
the same model untrained cannot.

The real pipeline end to end: a synthetic COCO set generated under tmp_path, ``train`` with the ``imhn3_fl2``
training at the tiny scale of ``methods/simple_pose/method.yaml`` as it stands,
``predict`` with the ``imhn3_fl2`` variant (flip test, greedy keypoint assignment) and the official COCO evaluation
on the val split. The untrained figure is the training run's own initial weights (the trainer seeds the model with
the training seed), so the margin is what training added. Seeds are fixed; on the CPU the trainer is deterministic.
"""
import pytest

from learning import learning_run


@pytest.mark.timeout(1800)
def test_tiny_imhn_with_focal_l2_learns_on_synthetic_coco(tmp_path, monkeypatch):
    result = learning_run(tmp_path, monkeypatch, "simple_pose", "imhn3_fl2", "imhn3_fl2", train_images=256,
                          val_images=64, seed=0)
    print("\n" + result.report("tiny IMHN-3 focal L2 on synthetic COCO (256 train / 64 val images, seed 0)"))
    metrics, persons = result.metrics, result.persons
    trained, untrained = metrics["trained"], metrics["untrained"]
    # Measured (this CPU, seed 0, 600 steps, ~7 min in all on a quiet 2-core machine): trained AP 0.0015, AP50 0.0123,
    # AR 0.0062, AR50 0.0437 (473 persons predicted, 7 of the 160 val persons found at OKS >= 0.5); untrained all 0
    # (its maps start at ~0 everywhere, bias 0 and weights N(0, 1e-3^2): no keypoint reaches the 0.1 threshold, no
    # person is predicted). The same settings gave AR50 0.0125 after 400 steps: the tiny IMHN is far from converged
    # and its maps are still blurred, so AP stays small. The thresholds sit well below the measured figures (the
    # float kernels of another CPU move them) and far above the untrained zeros: 4 persons found at OKS >= 0.5
    # does not happen by chance.
    assert persons["untrained"] == 0 and persons["trained"] > 0
    assert trained["AR50"] >= 0.025 and trained["AR50"] >= 5 * untrained["AR50"]
    assert trained["AP50"] >= 0.004 and trained["AP50"] >= 5 * untrained["AP50"]
    assert trained["AP"] > 0 and trained["AP"] >= 5 * untrained["AP"]
