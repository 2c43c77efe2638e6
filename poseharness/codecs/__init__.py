"""Pure encoders and decoders of keypoint representations (GOG: heatmaps, guiding and refinement offsets).

Conventions shared by every function here:
- coordinates are network-input pixels (after the loader's affine), pixel centres at integer positions;
- output stride R: output cell (u, v) represents the input position (u*R + R/2 - 0.5, v*R + R/2 - 0.5);
- keypoints are (P, K, 3) float arrays, v in {0, 1, 2}, v = 0 unlabelled and ignored;
- encoders take and return numpy (data-loader workers); decoders take and return torch tensors, (K, …) or
  batched (B, K, …), on the input's device;
- peaks are (…, K, k, 3) rows [x, y, score], empty slots all zero.

The grouping consumes ``peaks = decode_peaks(heatmaps, R)`` and ``guides = guides_for(peaks, offsets,
skeleton, R)``: guides[l, i] is the guiding vector read at start candidate i of limb l.
"""
from .heatmap import cell_centres, containing_cell, encode_heatmaps, heatmap_mask, quantise_points
from .offsets import (
    encode_guiding_offsets,
    encode_refinement_offsets,
    guides_for,
    person_scales,
    sample_offsets,
)
from .peaks import dark_refine, decode_peaks, local_maxima, peaks_from_upsampled, refine_peaks, upsample_maps

__all__ = [
    "cell_centres",
    "containing_cell",
    "dark_refine",
    "decode_peaks",
    "encode_guiding_offsets",
    "encode_heatmaps",
    "encode_refinement_offsets",
    "guides_for",
    "heatmap_mask",
    "local_maxima",
    "peaks_from_upsampled",
    "person_scales",
    "quantise_points",
    "refine_peaks",
    "sample_offsets",
    "upsample_maps",
]
