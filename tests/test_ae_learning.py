"""Associative Embedding learns: the tiny AE hourglass trained on synthetic COCO on the CPU finds and groups persons
that the same model untrained cannot.

The real pipeline (tests/learning.py): an easy synthetic COCO set under tmp_path, ``train`` of training ``base`` at
the ``crops`` scale (128-pixel crops, step decay) shortened to ``STEPS``, ``predict`` with the ``plain`` variant
(tag grouping, no refinement, no flip) and the official COCO evaluation of the val split. The untrained figure is
the run's own initial weights.
"""
import pytest

from learning import EASY, learning_run

#: The crops scale's schedule (step decay at 75 % and 90 %) shortened to this many steps.
STEPS = 2000


@pytest.mark.timeout(3600)
def test_tiny_ae_learns_on_synthetic_coco(tmp_path, monkeypatch, learning_figures):
    result = learning_run(tmp_path, monkeypatch, "ae", "base", "plain", train_images=256, val_images=64, seed=0,
                          generator=EASY, steps=STEPS, scale="crops")
    learning_figures(result.report("tiny AE on easy synthetic COCO (256 train / 64 val images, seed 0)"))
    trained, untrained = result.metrics["trained"], result.metrics["untrained"]
    # Untrained, the heads output ~0 (bias 0, weights N(0, 1e-3²)): no peak passes the 0.1 threshold, no person is
    # predicted, every figure is 0. Trained (measured, torch 2.14.1 CPU, one thread, seed 0, 2,000 crop steps,
    # 359 s of training on 2 cores shared with nothing heavy): AP 0.0494, AP50 0.191, AR50 0.357 (504 persons).
    # Each threshold sits at about a third of the measured figure, far above the untrained zeros.
    assert trained["AR50"] >= 0.12 and trained["AR50"] >= 5 * untrained["AR50"]
    assert trained["AP50"] >= 0.06 and trained["AP50"] >= 5 * untrained["AP50"]
    assert trained["AP"] >= 0.015 and trained["AP"] >= 5 * untrained["AP"]
