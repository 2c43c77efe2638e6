"""PoseDet's loss terms [P eq. 4; R: configs/_base_/PoseDet_*.py, losses/, assigners/], each already weighted.

- coarse:  at the candidates of the coarse assignment (targets ``coarse@l`` / ``vis@l`` from ``encode``), per
  labelled point clamp(‖p - g‖ / (4s), 0, 5) (form ``clamped_l1`` [R]) or ‖p - g‖² / (4s)² (form ``l2``, the
  paper's "L2" [P]), summed over the points and the positives, / #positives; weight 0.1 [R].
- refine:  the same on the refined points of the refinement positives: candidates whose coarse pose has OKS >= 0.7
  with a person (the argmax person), plus each person's best candidate if its OKS >= 0.52 [R]; weight 0.2 [R].
- cls:     sigmoid focal loss (gamma 2, alpha 0.25, ``torchvision.ops.sigmoid_focal_loss``) against the OKS of the
  coarse poses: >= 0.6 positive, < 0.5 negative, between ignored; summed / #positives; weight 1 [R].
- heatmap: intermediate supervision, CenterNet's penalty-reduced focal loss (2, 4) on the sigmoid maps (form
  ``focal`` [R]) or mean squared error (``l2`` [P]), cells under the ignore mask (crowd regions, persons with no
  keypoints) left out; per level / #peaks, mean over levels; weight 0.1 [R].

The OKS targets need the predicted coarse poses, so they are computed here from the per-person ground truth the
default collation already passes as lists (``batch['keypoints']``, ``iscrowd``, ``num_keypoints``, input pixels),
not in ``encode``; no ``collate`` hook is needed. A batch without those lists (encode's targets alone) falls back
to the persons that won a candidate, read back from the coarse targets (:func:`gt_persons`).
"""
from __future__ import annotations

import numpy as np
import torch
import torchvision

from poseharness.schemas import get_schema

from .assignment import valid_persons, with_extra_point, oks_torch


def candidate_grid(h: int, w: int, stride: int, device) -> torch.Tensor:
    """(h·w, 2) x, y px of a level's candidates (j·s, i·s), row-major."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs, ys], -1).reshape(-1, 2).float() * stride


def offsets_to_points(offsets: torch.Tensor, stride: int) -> torch.Tensor:
    """(2K', h, w) offsets (dy, dx per point, stride units) -> (h·w, K', 2) x, y px."""
    c, h, w = offsets.shape
    off = offsets.reshape(c // 2, 2, h * w).permute(2, 0, 1)                 # (hw, K', 2) dy, dx
    grid = candidate_grid(h, w, stride, offsets.device)                        # (hw, 2) x, y
    return grid[:, None, :] + off.flip(-1) * stride


def keypoint_distance(pred: torch.Tensor, gt: torch.Tensor, stride, form: str) -> torch.Tensor:
    """pred (N, K', 2), gt (N, K', 3) px, stride (N,) -> (N,) summed per-point loss over labelled points."""
    lab = (gt[..., 2] > 0).float()
    d = (pred - gt[..., :2]).norm(dim=-1) / (4.0 * stride[:, None])
    per = d.clamp(0, 5) if form == "clamped_l1" else d ** 2
    return (per * lab).sum(-1)


def centernet_focal(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4) on sigmoid(logits), / max(#peaks, 1)."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    peak = target.ge(0.999).float()
    pos = -torch.log(p) * (1 - p) ** 2 * peak
    neg = -torch.log(1 - p) * p ** 2 * (1 - target) ** 4 * (1 - peak)
    return ((pos + neg) * mask).sum() / peak.sum().clamp(min=1.0)


def gt_persons(batch: dict, b: int, schema: str, k: int, device, strides) -> torch.Tensor:
    """(G, K', 3) the valid persons of item b (annotated, >= 3 labelled joints), with the extra point, from the
    per-person lists of the default collation; a batch without them (encode's targets only) gives the persons
    that won a candidate, read back from the coarse targets (candidate + offset · s, labels from ``vis@l``)."""
    if "keypoints" not in batch:
        persons = []
        for l, s in enumerate(strides):
            vis = batch[f"vis@{l}"][b]                                       # (K', h, w)
            pos = vis.amax(0) > 0
            if pos.any():
                pts = offsets_to_points(batch[f"coarse@{l}"][b], s)[pos.reshape(-1)]
                persons.append(torch.cat([pts, vis.reshape(vis.shape[0], -1)[:, pos.reshape(-1)].T[..., None]], -1))
        kk = batch["vis@0"].shape[1]
        return torch.cat(persons) if persons else torch.zeros(0, kk, 3, device=device)
    kp = batch["keypoints"][b]
    kp = kp.detach().cpu().numpy() if isinstance(kp, torch.Tensor) else np.asarray(kp)
    crowd = np.asarray(batch["iscrowd"][b].cpu() if isinstance(batch["iscrowd"][b], torch.Tensor)
                       else batch["iscrowd"][b], bool)
    num = np.asarray(batch["num_keypoints"][b].cpu() if isinstance(batch["num_keypoints"][b], torch.Tensor)
                     else batch["num_keypoints"][b])
    kp = with_extra_point(kp, schema)
    keep = valid_persons(kp, ~crowd & (num > 0), k)
    return torch.from_numpy(kp[keep]).to(device)


def oks_targets(coarse_pts: torch.Tensor, gts: torch.Tensor, sigmas: torch.Tensor, k: int, t: dict):
    """Refinement and classification targets of one image from the coarse poses (N, K', 2) and gts (G, K', 3).

    Returns refine_gt (N,) person index or -1, cls_label (N,) 1 / 0 / -1 (ignored)."""
    n = coarse_pts.shape[0]
    if len(gts) == 0:
        return torch.full((n,), -1, dtype=torch.long, device=coarse_pts.device), \
            torch.zeros(n, dtype=torch.long, device=coarse_pts.device)
    oks = oks_torch(coarse_pts[:, :k].detach(), gts[:, :k], sigmas)        # (N, G)
    best, arg = oks.max(1)
    refine_gt = torch.where(best >= t["refine_pos"], arg, torch.full_like(arg, -1))
    gbest, garg = oks.max(0)                                              # each person's best candidate
    for g in range(len(gts)):
        if gbest[g] >= t["refine_min"]:
            refine_gt[garg[g]] = g
    cls = torch.full((n,), -1, dtype=torch.long, device=coarse_pts.device)
    cls[best < t["cls_neg"]] = 0
    cls[best >= t["cls_pos"]] = 1
    return refine_gt, cls


def posedet_loss(levels: list[dict], batch: dict, cfg: dict) -> dict[str, torch.Tensor]:
    strides = cfg["encoding"]["strides"]
    schema = get_schema(cfg["schema"])
    k = schema.num_keypoints
    sigmas = torch.tensor(schema.sigmas, dtype=torch.float32, device=levels[0]["coarse"].device)
    L = cfg["loss"]
    form = L["keypoints"]
    device = levels[0]["coarse"].device
    bsz = levels[0]["coarse"].shape[0]

    # Coarse: the assigned candidates (encode's targets).
    c_sum, c_pos = torch.zeros((), device=device), 0
    for l, o in enumerate(levels):
        s = strides[l]
        vis = batch[f"vis@{l}"]                                            # (B, K', h, w)
        pos = vis.amax(1) > 0                                              # (B, h, w)
        if pos.any():
            kk = vis.shape[1]
            pred = o["coarse"].permute(0, 2, 3, 1)[pos].reshape(-1, kk, 2)   # dy, dx stride units
            tgt = batch[f"coarse@{l}"].permute(0, 2, 3, 1)[pos].reshape(-1, kk, 2)
            v = vis.permute(0, 2, 3, 1)[pos]
            d = (pred - tgt).norm(dim=-1) * s / (4.0 * s)
            per = d.clamp(0, 5) if form == "clamped_l1" else d ** 2
            c_sum = c_sum + (per * v).sum()
            c_pos += int(pos.sum())
    terms = {"coarse": L["coarse"]["weight"] * c_sum / max(c_pos, 1)}

    # Refinement and classification: OKS of the coarse poses, per image over all levels' candidates.
    r_sum, r_pos = torch.zeros((), device=device), 0
    f_sum, f_pos = torch.zeros((), device=device), 0
    t = cfg["assign"]
    for b in range(bsz):
        gts = gt_persons(batch, b, cfg["schema"], k, device, strides)
        coarse = torch.cat([offsets_to_points(o["coarse"][b], strides[l]) for l, o in enumerate(levels)])
        refine = torch.cat([offsets_to_points(o["refine"][b], strides[l]) for l, o in enumerate(levels)])
        stride = torch.cat([torch.full((o["coarse"].shape[-2] * o["coarse"].shape[-1],), float(strides[l]),
                                       device=device) for l, o in enumerate(levels)])
        logits = torch.cat([o["cls"][b].reshape(-1) for o in levels])
        refine_gt, cls = oks_targets(coarse, gts, sigmas, k, t)
        if cfg["model"]["refine"]:
            sel = refine_gt >= 0
            if sel.any():
                r_sum = r_sum + keypoint_distance(refine[sel], gts[refine_gt[sel]], stride[sel], form).sum()
                r_pos += int(sel.sum())
        keep = cls >= 0
        f_sum = f_sum + torchvision.ops.sigmoid_focal_loss(
            logits[keep], cls[keep].float(), alpha=L["cls"]["alpha"], gamma=L["cls"]["gamma"], reduction="sum")
        f_pos += int((cls == 1).sum())
    if cfg["model"]["refine"]:
        terms["refine"] = L["refine"]["weight"] * r_sum / max(r_pos, 1)
    terms["cls"] = L["cls"]["weight"] * f_sum / max(f_pos, 1)

    if cfg["model"]["heatmap"] and L["heatmap"]["weight"] > 0:
        h_terms = []
        for l, o in enumerate(levels):
            tgt = batch[f"heatmap@{l}"]
            mask = batch[f"hmask@{l}"]
            if L["heatmap"]["form"] == "focal":
                h_terms.append(centernet_focal(o["heatmap"], tgt, mask))
            else:
                h_terms.append((((torch.sigmoid(o["heatmap"]) - tgt) ** 2) * mask).mean())
        terms["heatmap"] = L["heatmap"]["weight"] * torch.stack(h_terms).mean()
    return terms


def positive_joint_errors(levels: list[dict], batch: dict, cfg: dict) -> tuple[float, float, int]:
    """Mean joint error (input px, labelled points) of the coarse and of the refined poses at the assigned
    candidates (encode's coarse positives): (coarse, refined, #joints). For the learning test."""
    strides = cfg["encoding"]["strides"]
    ec, er, n = 0.0, 0.0, 0
    for l, o in enumerate(levels):
        s = strides[l]
        vis = batch[f"vis@{l}"]
        pos = vis.amax(1) > 0
        if not pos.any():
            continue
        kk = vis.shape[1]
        tgt = batch[f"coarse@{l}"].permute(0, 2, 3, 1)[pos].reshape(-1, kk, 2)
        v = vis.permute(0, 2, 3, 1)[pos] > 0
        for name in ("coarse", "refine"):
            pred = o[name].permute(0, 2, 3, 1)[pos].reshape(-1, kk, 2)
            err = ((pred - tgt).norm(dim=-1) * s)[v].sum().item()
            if name == "coarse":
                ec += err
            else:
                er += err
        n += int(v.sum())
    return ec / max(n, 1), er / max(n, 1), n
