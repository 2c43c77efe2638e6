"""KCAM: Keypoint Context Aggregation Module (Wu, Wang, Guo, Liu; ``shared/papers/kcam-keypoint-context-aggregation.txt``).

A head that sits after a top-down backbone's last feature map ``F`` (B, C, H, W) -- SimpleBaseline's third
deconvolution output, C = 256, H x W = 64 x 48 for a 256 x 192 crop (stride 4) -- and returns

* ``heatmaps`` (B, K, H, W): the final keypoint heatmaps (same grid and units as SimpleBaseline's: one value per
  output cell, regressed to Gaussian maps of peak 1);
* ``areas``    (B, K, H, W): the soft keypoint areas ``G`` (paper §3.1), an intermediate heatmap regressed to the
  same Gaussian maps; the loss (:mod:`.loss`) weights it by alpha = 0.2 (Eq. 4); alpha 0 is Table 1's
  "w/o supervision" (G still computed and still pooling R).

Source tags as in ``shared/design/methods.md``: [P] the paper, [R: repo/path] official code of another work,
[D] the paper leaves it open and we decide. Notation of the paper: N = H*W pixels, i a pixel, k / j a keypoint.

Pipeline (paper §3, Fig. 1; the step numbers of methods.md §5.2):

1. ``G = areas_layer(F)``                                (B, K, H, W)     soft keypoint areas [P];
                                                          one 1x1 conv with bias [D].
2. ``g~ = normalise(G)`` over the N pixels per keypoint;   (B, K, N)        "normalized degree" [P];
   ``R_k = sum_i g~_ik f_i``           (Eq. 1)             (B, K, C)        keypoint representations [P].
   normalisation [D], ``area_norm``: ``sum`` (the default) g~ = ReLU(G) / sum_i ReLU(G); or ``softmax`` over the
   N pixels of ``area_scale * G``, as OCR's object-region pooling [R: HRNet/HRNet-Semantic-Segmentation
   lib/models/seg_hrnet_ocr.py SpatialGather_Module, scale = 1]. Why ``sum``: G is regressed to Gaussians of peak
   1, and a pixel softmax of such a map is nearly uniform: for a perfect G (sigma 2 on 64x48) it puts 4.7 % of
   the pooling weight within 3 sigma of the keypoint, ``sum`` 98.9 %, ``softmax`` at ``area_scale`` 10 95.5 %
   (tests/test_kcam_module.py measures it).
3. ``F' = phi_q(F)`` (B, Ck, N), ``R' = phi_k(R)`` (B, K, Ck);
   ``S_ij = exp(F'_i . R'_j) / sum_j exp(F'_i . R'_j)``   (Eq. 2)  (B, N, K)  softmax over the K keypoints [P];
   no 1/sqrt(Ck) temperature [D: Eq. 2 has none; OCR's ObjectAttentionBlock does use key_channels**-0.5].
4. ``R'' = phi_v(R)`` (B, K, Cv); ``E_i = sum_j S_ij R''_j``  (Eq. 3)  (B, Cv, H, W) [P].
5. fusion -> ``A`` (B, Ca, H, W), then ``heatmaps = final_layer(A)`` (one 1x1 conv to K, with bias [D], as
   SimpleBaseline's final_layer [R: leoxiaobin/deep-high-resolution-net.pytorch lib/models/pose_resnet.py]):
   * ``concat``: ``A = phi_a(concat(F, E))``  (concat + conv1x1 [P] §3.3 and Fig. 1(d));
   * ``add``:    ``A = phi_a(F + E)``          (Table 2 "element-wise addition" [P]; the conv1x1 after the sum [D]);
   * ``none``:   ``A = phi_a(E)``              (Table 2 "w/o fusion", "only using the augmented features" [P];
                                                the same conv1x1 kept so the three rows differ only in fusion [D]).

Corrections to methods.md §5.2/§5.5 from the paper's text:
* the widths are given [P]: F' in R^{CxHxW}, R', R'' in R^{KxC}, E and A in R^{CxHxW}; so Ck = Cv = Ca = C is the
  paper's setting (our defaults); only kernel sizes and layer composition are open.
* "add" and "w/o fusion" do not say whether a conv1x1 follows (only concat does): [D] above, not [P].
* "we firstly feed it into a convolution layer to generate two new features F', R'" -- one layer or two is open;
  separate phi_q / phi_k [D] (OCR's f_pixel / f_object are separate).
* Eq. 2 as written multiplies "the transpose of F'" (N x C) by R' (K x C): read as F'^T R'^T (N x K).
* Table 1 "w/o supervision" [P §4.3]: "removing the supervision on the soft keypoint areas ... keep all the other
  settings unchanged": G is still predicted by the same layer and still pools R; it is only left out of the loss
  (trained through Eq. 1 alone). alpha = 0 in the loss does exactly that; the module's forward is identical.

[D] "convolution layer" phi_q, phi_k, phi_v, phi_a = 1x1 conv (no bias) + BatchNorm + ReLU; on R (K "positions",
C channels) it is the same thing as Conv1d(k=1) + BatchNorm1d + ReLU, i.e. a per-keypoint linear map with BN over
(batch, keypoint). [D] init: PyTorch defaults for phi_*, BN weight 1 / bias 0; areas_layer and final_layer
normal(std ``init_std`` = 0.001), bias 0, as SimpleBaseline's final_layer [R: pose_resnet.py init_weights].

``context=False``: no module at all, ``heatmaps = final_layer(F)`` -- SimpleBaseline's head (the baseline row);
the outputs then have no ``areas``.

Fallback (the issue's "zero keypoint features"): see :func:`fallback_context` and the test
``test_zero_keypoint_features_fallback``. With R = 0 (every f_i entering Eq. 1 zero):
R'_j = c' and R''_j = c'' for every j, where in eval mode (running statistics)
    c = ReLU(beta - gamma * mu / sqrt(var + eps))             (of phi_k resp. phi_v's BN; the conv has no bias)
so F'_i . R'_j = F'_i . c' is equal for all j, S_ij = 1/K exactly, and E_i = sum_j S_ij c'' = c'' at every pixel
(it would be c'' for any S, since rows of S sum to 1). The module then reduces to
    concat: A = ReLU(BN_a(W_F F + W_E c''))  = SimpleBaseline head after one extra 1x1 conv-BN-ReLU of F whose
            pre-BN bias is the constant W_E c'';
    add:    A = ReLU(BN_a(W F + W c''))      = the same with bias W c'';
    none:   A = ReLU(BN_a(W c''))            constant over pixels: the heatmaps carry no spatial information.
In training mode BN normalises the all-zero R to 0, so c = ReLU(beta) (= 0 at init: E = 0, S uniform).
"""
from __future__ import annotations

import torch
import torch.nn as nn

FUSIONS = ("concat", "add", "none")
AREA_NORMS = ("softmax", "sum")


def conv_bn_relu(c_in: int, c_out: int, dims: int = 2) -> nn.Sequential:
    """The paper's "convolution layer" [D]: 1x1 conv without bias + BatchNorm + ReLU (2D maps or 1D keypoint sets)."""
    conv = nn.Conv2d if dims == 2 else nn.Conv1d
    bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return nn.Sequential(conv(c_in, c_out, kernel_size=1, bias=False), bn(c_out), nn.ReLU(inplace=True))


def heatmap_layer(c_in: int, num_joints: int, init_std: float = 0.001) -> nn.Conv2d:
    """A 1x1 conv to K heatmaps with bias, init normal(0, init_std) / 0 [R: pose_resnet.py final_layer,
    init_weights: 0.001]."""
    layer = nn.Conv2d(c_in, num_joints, kernel_size=1)
    nn.init.normal_(layer.weight, std=init_std)
    nn.init.constant_(layer.bias, 0.0)
    return layer


class KCAMHead(nn.Module):
    """KCAM head on a backbone feature map; or, with ``context=False``, the plain SimpleBaseline 1x1 head.

    Args:
        in_channels: C, channels of F (256 for SimpleBaseline's deconvolutions).
        num_joints: K (17 COCO, 14 CrowdPose).
        fusion: ``concat`` | ``add`` | ``none`` (Table 2).
        context: False -> no KCAM, ``heatmaps = final_layer(F)`` (SimpleBaseline baseline row).
        key_channels: Ck, width of F' and R' (default C [P]).
        value_channels: Cv, width of R'' and E (default C [P]; must equal C for ``add``).
        out_channels: Ca, width of A (default C [P]).
        area_norm: ``sum`` (default [D], g~ = ReLU(G) / sum_i ReLU(G), a plain "normalized degree") or
            ``softmax`` (over the N pixels of ``area_scale * G``, OCR's pooling [D alternative]).
        area_scale: multiplier of G inside the pixel softmax (OCR's ``scale`` = 1 [R]); ``sum`` ignores it.
        init_std: std of the two heatmap layers' initial weights (SimpleBaseline's 0.001 [R]).

    Whether G is supervised (Table 1) is the loss's business (alpha), not the module's.
    """

    def __init__(self, in_channels: int, num_joints: int, fusion: str = "concat", context: bool = True,
                 key_channels: int | None = None, value_channels: int | None = None,
                 out_channels: int | None = None, area_norm: str = "sum", area_scale: float = 1.0,
                 init_std: float = 0.001):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if area_norm not in AREA_NORMS:
            raise ValueError(f"area_norm must be one of {AREA_NORMS}, got {area_norm!r}")
        c = in_channels
        self.in_channels, self.num_joints = c, num_joints
        self.fusion, self.context = fusion, bool(context)
        self.area_norm, self.area_scale = area_norm, float(area_scale)
        if not self.context:
            self.final_layer = heatmap_layer(c, num_joints, init_std)
            return
        ck = key_channels or c
        cv = value_channels or c
        ca = out_channels or c
        if fusion == "add" and cv != c:
            raise ValueError(f"fusion 'add' needs value_channels == in_channels ({cv} != {c})")
        self.areas_layer = heatmap_layer(c, num_joints, init_std)  # step 1 [D: one 1x1 conv]
        self.phi_q = conv_bn_relu(c, ck, dims=2)                  # F' (step 3)
        self.phi_k = conv_bn_relu(c, ck, dims=1)                  # R' (step 3)
        self.phi_v = conv_bn_relu(c, cv, dims=1)                  # R'' (step 4)
        fuse_in = {"concat": c + cv, "add": c, "none": cv}[fusion]
        self.phi_a = conv_bn_relu(fuse_in, ca, dims=2)            # A (step 5)
        self.final_layer = heatmap_layer(ca, num_joints, init_std)

    # -- the steps, public so tests (and the fallback) can compose them -----------------------------------------
    def soft_areas(self, feats: torch.Tensor) -> torch.Tensor:
        """Step 1: G (B, K, H, W) from F (B, C, H, W); regressed to Gaussian maps when supervised."""
        return self.areas_layer(feats)

    def normalise_areas(self, areas: torch.Tensor) -> torch.Tensor:
        """g~ (B, K, N): each keypoint's weights over the N = H*W pixels, summing to 1 (Eq. 1's "normalized degree")."""
        g = areas.flatten(2)
        if self.area_norm == "softmax":
            return torch.softmax(self.area_scale * g, dim=2)
        g = torch.relu(g)
        return g / g.sum(dim=2, keepdim=True).clamp_min(1e-6)

    def keypoint_representations(self, areas: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Step 2, Eq. 1: R (B, K, C), R_k = sum_i g~_ik f_i (a batched matmul (B,K,N) x (B,N,C))."""
        g = self.normalise_areas(areas)
        return torch.bmm(g, feats.flatten(2).transpose(1, 2))

    def attend(self, feats: torch.Tensor, reps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 3-4, Eqs. 2-3: S (B, N, K) softmax over keypoints and E (B, Cv, H, W) from F (B,C,H,W), R (B,K,C)."""
        b, _, h, w = feats.shape
        q = self.phi_q(feats).flatten(2)                          # F'  (B, Ck, N)
        k = self.phi_k(reps.transpose(1, 2))                      # R'^T (B, Ck, K)
        v = self.phi_v(reps.transpose(1, 2))                      # R''^T (B, Cv, K)
        sim = torch.einsum("bcn,bck->bnk", q, k)                  # F'_i . R'_j  (B, N, K)
        s = torch.softmax(sim, dim=2)                             # Eq. 2, over the K keypoints
        e = torch.einsum("bnk,bck->bcn", s, v)                    # Eq. 3, E_i = sum_j S_ij R''_j
        return s, e.reshape(b, -1, h, w)

    def fuse(self, feats: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Step 5: A (B, Ca, H, W) from F and E by ``concat`` / ``add`` / ``none`` (E only)."""
        if self.fusion == "concat":
            x = torch.cat([feats, context], dim=1)
        elif self.fusion == "add":
            x = feats + context
        else:
            x = context
        return self.phi_a(x)

    def forward(self, feats: torch.Tensor, return_intermediates: bool = False) -> dict:
        """F (B, C, H, W) -> {'heatmaps': (B, K, H, W), 'areas': (B, K, H, W)} (no 'areas' without ``context``).

        ``return_intermediates`` adds 'reps' R (B, K, C), 'attention' S (B, N, K), 'context' E (B, Cv, H, W),
        'fused' A (B, Ca, H, W).
        """
        if not self.context:
            return {"heatmaps": self.final_layer(feats)}
        areas = self.soft_areas(feats)
        reps = self.keypoint_representations(areas, feats)
        attn, ctx = self.attend(feats, reps)
        fused = self.fuse(feats, ctx)
        out = {"heatmaps": self.final_layer(fused), "areas": areas}
        if return_intermediates:
            out.update(reps=reps, attention=attn, context=ctx, fused=fused)
        return out


def bn_constant(block: nn.Sequential) -> torch.Tensor:
    """phi(0) for a conv(no bias)-BN-ReLU block in eval mode: ReLU(beta - gamma * mu / sqrt(var + eps)), (C_out,)."""
    bn = block[1]
    return torch.relu(bn.bias - bn.weight * bn.running_mean / torch.sqrt(bn.running_var + bn.eps))


def fallback_context(head: KCAMHead) -> torch.Tensor:
    """The constant E_i = c'' (Cv,) the context branch reduces to when R = 0 (eval mode; see the module docstring)."""
    return bn_constant(head.phi_v)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
