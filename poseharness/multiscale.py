"""One image's views at several scales fused into one view's output grid: output-level multi-scale testing.

PoseDet's test-time augmentation pools what each view decodes (:class:`poseharness.views.TestTimeViews`); Associative
Embedding fuses the maps instead and decodes once [R: princeton-vl/pose-ae-train test.py, ``multiperson``: the
heatmaps of every scale resized to the first scale's grid and averaged, the tags of scale 1 resized to it]. A method
does the latter with a ``merge_views(outputs, views, cfg) -> (outputs, view)`` hook (:mod:`poseharness.contract`)
built on :func:`resample`, which carries a map from one view's output grid to another's through the original
image: target cell centre (input pixels, :func:`poseharness.codecs.heatmap.cell_centres`) -> original pixels ->
source input pixels -> source cell coordinates, read bilinearly between cell centres (edge cells repeated beyond
the grid, as ``cv2.resize`` does).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .codecs.heatmap import cell_centres
from .data.augment import affine_points, compose, invert_affine
from .views import View


def grid_affine(source: View, target: View) -> np.ndarray:
    """(2, 3) float64: ``target``'s input pixels -> ``source``'s input pixels (through the original image)."""
    return compose(source.affine, invert_affine(target.affine))


def resample(maps: torch.Tensor, source: View, target: View, stride: int, out_hw: tuple[int, int]) -> torch.Tensor:
    """``maps`` (C, h, w) on ``source``'s output grid (``stride`` input pixels per cell) seen on ``target``'s grid
    of ``out_hw`` = (H, W) cells: (C, H, W), bilinear between cell centres, edge cells repeated beyond them."""
    h_out, w_out = out_hw
    ys, xs = np.meshgrid(cell_centres(h_out, stride), cell_centres(w_out, stride), indexing="ij")
    src = affine_points(np.stack([xs, ys], -1), grid_affine(source, target))    # (H, W, 2) source input px
    h, w = maps.shape[-2:]
    cells = (src + 0.5) / stride - 0.5                                           # source cell coordinates
    grid = cells * 2.0 / np.array([max(w - 1, 1), max(h - 1, 1)]) - 1.0
    grid = torch.as_tensor(grid, dtype=maps.dtype, device=maps.device)[None]
    return F.grid_sample(maps[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
