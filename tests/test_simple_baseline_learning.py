"""SimpleBaseline learns: the tiny model (a ResNet-18 of width 16, three deconvolutions, 128 x 96 crops of the
ground-truth boxes) trained on synthetic COCO on the CPU finds joints that the same model untrained cannot.

The real pipeline (tests/learning.py): a synthetic COCO set with the easy generator settings generated under
tmp_path, ``train`` of training ``base`` at scale tiny shortened to ``STEPS``, ``predict`` with the ``argmax``
variant (argmax + quarter shift; ground-truth boxes; box score x mean keypoint score, OKS-NMS 0.9) and the official
COCO evaluation of the val split. The untrained figure is the run's own initial weights.
"""
import pytest

from learning import EASY, learning_run

#: The tiny scale's schedule (Adam 5e-3, batch 16, x0.1 at 75 % and 90 %) shortened to this many steps.
STEPS = 900


@pytest.mark.timeout(3600)
def test_tiny_simple_baseline_learns_on_synthetic_coco(tmp_path, monkeypatch, learning_figures):
    result = learning_run(tmp_path, monkeypatch, "simple_baseline", "base", "argmax", train_images=256,
                          val_images=64, seed=0, generator=EASY, steps=STEPS)
    learning_figures(result.report("tiny SimpleBaseline on easy synthetic COCO (256 train / 64 val images, seed 0)"))
    trained, untrained = result.metrics["trained"], result.metrics["untrained"]
    # Untrained, the head outputs ~0 (weights N(0, 1e-3²), bias 0): every crop still yields a pose, but its joints
    # are the argmax of noise and no pose reaches OKS 0.5 (measured: every figure 0). Trained (measured, torch
    # 2.14.1 CPU, one thread, seed 0, 900 steps, ~3.5 min with the data and both predictions on a busy 2-core
    # machine): AP 0.0695, AP50 0.281, AR50 0.437 (600 steps: 0.031 / 0.168 / 0.341; 1,500: 0.131 / 0.453 / 0.579).
    # Each threshold sits at about a third of the measured figure, far above the untrained zeros.
    assert trained["AR50"] >= 0.15 and trained["AR50"] >= 5 * untrained["AR50"]
    assert trained["AP50"] >= 0.09 and trained["AP50"] >= 5 * untrained["AP50"]
    assert trained["AP"] >= 0.02 and trained["AP"] >= 5 * untrained["AP"]
