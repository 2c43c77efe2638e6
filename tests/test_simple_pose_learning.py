"""Simple Pose learns: the tiny 3-stage IMHN trained with focal L2 on synthetic COCO on the CPU finds persons that
the same model untrained cannot.

The real pipeline end to end: a synthetic COCO set with easier images (``learning.EASY``) generated under tmp_path,
``train`` with the ``imhn3_fl2`` training (plain L2 for its first half, then focal L2) at the tiny scale of
``methods/simple_pose/method.yaml`` (128-pixel crops, step decay) shortened to ``STEPS``, ``predict`` with the ``imhn3_fl2`` variant (flip test, greedy keypoint assignment) and the official COCO evaluation
on the val split. The untrained figure is the training run's own initial weights (the trainer seeds the model with
the training seed), so the margin is what training added. Seeds are fixed; on the CPU the trainer is deterministic.
"""
import pytest

from learning import EASY, learning_run

#: The tiny scale's schedule (crops, plain L2 for the first half, step decay at 75 % and 90 %) shortened to this.
STEPS = 2000


@pytest.mark.timeout(3600)   # 24 min measured with other jobs on the 2 cores
def test_tiny_imhn_with_focal_l2_learns_on_synthetic_coco(tmp_path, monkeypatch, learning_figures):
    result = learning_run(tmp_path, monkeypatch, "simple_pose", "imhn3_fl2", "imhn3_fl2", train_images=256,
                          val_images=64, seed=0, generator=EASY, steps=STEPS)
    learning_figures(result.report("tiny IMHN-3 focal L2 on synthetic COCO (256 train / 64 val images, seed 0)"))
    metrics, persons = result.metrics, result.persons
    trained, untrained = metrics["trained"], metrics["untrained"]
    # Measured (torch 2.14.1 CPU, one thread, seed 0, 2,000 steps of 128-pixel crops: 1,000 plain L2, then focal L2
    # as loss.l2_first says; 24 min on a busy 2-core machine): trained AP 0.0349, AP50 0.2036, AR 0.0651, AR50 0.3333
    # (422 persons predicted); untrained all 0 (its maps start at ~0 everywhere, bias 0 and weights
    # N(0, 1e-3^2): no keypoint reaches the 0.1 threshold, no person is predicted). The previous setting (whole
    # 256 images, 600 steps, the default generator) gave AP 0.0073 / AR50 0.0813 on one machine and AP 0.0002 /
    # AR50 0.0312 on another torch build, across its old AR50 >= 0.04: a margin a build could cross. Now each
    # threshold sits at about a third of the measured figure and far above the untrained zeros.
    assert persons["untrained"] == 0 and persons["trained"] > 0
    assert trained["AR50"] >= 0.10 and trained["AR50"] >= 5 * untrained["AR50"]
    assert trained["AP50"] >= 0.06 and trained["AP50"] >= 5 * untrained["AP50"]
    assert trained["AP"] >= 0.01 and trained["AP"] >= 5 * untrained["AP"]
