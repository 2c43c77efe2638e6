"""The recurrent unified detection-and-association method as a harness method: a ConvLSTM on Associative Embedding
features emits one person's heatmaps per step and a stop probability (:mod:`.model`, :mod:`.unroll`).

``encode`` returns ``person_maps`` (z, J, h, w), each person's own Gaussians (the training targets, a per-image list
in the batch), and the oracle's outputs ``steps`` (the same maps as steps) and ``stop`` (eq. 1's targets for
ẑ = z): ``decode(encode(ground truth))`` is the one-person-per-step representation through the per-step decoder,
whose persons never share a map. It also returns AE's targets (``methods/ae``: shared heatmaps, perfect tags), so a
variant with ``decode.decoder: ae`` decodes the frozen AE inside the model (Tables 1-2's AE rows, from the same
checkpoint) and its oracle is AE's.
"""
from __future__ import annotations

import numpy as np
import torch

from poseharness.codecs.top_down import cells_to_input
from poseharness.contract import method_module, method_submodule, resolve_method
from poseharness.data.loader import collate as default_collate
from poseharness.data.sample import Sample
from poseharness.errors import HarnessError
from poseharness.schemas import get_schema
from poseharness.views import TestTimeViews, View

from .model import build_model  # noqa: F401  (the method contract: network)
from .representation import decode_steps, person_maps, stop_targets
from .unroll import losses, unroll

paradigm = "bottom-up"

#: Target names that are model outputs.
OUTPUTS = ("steps", "stop", "heatmaps", "tags")
#: Per-image targets of varying length, collated as lists.
PER_IMAGE = ("person_maps",)


def _ae():
    return method_module(resolve_method("ae"))


def ae_config(cfg: dict) -> dict:
    """The config AE's encode / decode / flip merge read: this method's stride and schema, ``encoding.sigma`` and
    ``max_people``, and ``decode.ae`` with ``decode.flip`` (a training's config has no decode settings)."""
    enc = cfg["encoding"]
    out = {"schema": cfg["schema"], "encoding": {"stride": enc["stride"], "sigma": enc["sigma"],
                                                 "max_people": enc["max_people"]}}
    if "decode" in cfg:
        out["decode"] = {**cfg["decode"]["ae"], "flip": cfg["decode"]["flip"], "tta": cfg["decode"].get("tta")}
    return out


def _person_maps(sample: Sample, cfg: dict) -> np.ndarray:
    enc = cfg["encoding"]
    stride = int(enc["stride"])
    kp = sample.keypoints[sample.annotated][: int(enc["max_people"])]
    if kp.ndim != 3:
        kp = np.zeros((0, get_schema(cfg["schema"]).num_keypoints, 3))
    return person_maps(kp, (sample.height // stride, sample.width // stride), stride, float(enc["sigma"]))


def encode(sample: Sample, cfg: dict) -> dict[str, np.ndarray]:
    """Training targets of one view: person_maps (z, J, h, w) of the annotated persons (not crowd, labelled
    keypoints), at most ``encoding.max_people`` [D]. The AE inside is frozen: no AE target is needed."""
    return {"person_maps": _person_maps(sample, cfg)}


def oracle_outputs(sample: Sample, cfg: dict) -> dict[str, np.ndarray]:
    """The model's outputs as the oracle: steps (J, z + 1, h, w) the person maps plus an empty stop step (joints as
    channels, as the model returns them), stop (1, z + 1) eq. 1; AE's heatmaps and perfect tags
    (``methods/ae``'s oracle outputs) for the AE rows."""
    maps = _person_maps(sample, cfg)
    steps = np.concatenate([maps, np.zeros((1, *maps.shape[1:]), dtype=np.float32)]).transpose(1, 0, 2, 3)
    ae = _ae().oracle_outputs(sample, ae_config(cfg))
    return {"steps": steps, "stop": stop_targets(len(maps), len(maps))[None],
            "heatmaps": ae["heatmaps"], "tags": ae["tags"]}


def collate(items: list[dict]) -> dict:
    """The loader's collation, with the per-image targets of varying length as lists."""
    lists = {k: [item.pop(k) for item in items] for k in PER_IMAGE if k in items[0]}
    out = default_collate(items)
    out.update({k: [torch.as_tensor(v) for v in vals] for k, vals in lists.items()})
    return out


def decode(outputs: dict[str, torch.Tensor], cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Poses (N, J, 3) in network-input pixels and scores (N,) of one image: ``decode.decoder: recurrent`` from its
    steps (J, T, h, w) and stop probabilities (1, T) (:func:`.representation.decode_steps`, read up to the first
    below ``decode.omega``, among the steps the model unrolled: up to its own stop at ``unroll.omega``); ``ae``
    from AE's heatmaps and tags by AE's grouping."""
    dec = cfg["decode"]
    if dec["decoder"] == "ae":
        return _ae().decode(outputs, ae_config(cfg))
    steps = torch.as_tensor(outputs["steps"]).transpose(0, 1)          # (J, T, h, w) -> (T, J, h, w)
    stride = int(cfg["encoding"]["stride"])
    poses, scores = decode_steps(steps, outputs["stop"], stride, float(dec["tau"]), float(dec["omega"]),
                                 refine=str(dec["refine"]))
    if dec["fill"] == "ae":
        poses = fill_from_ae(poses, outputs["heatmaps"], outputs["tags"], stride)
    return poses, scores


def fill_from_ae(poses: np.ndarray, heatmaps, tags, stride: int) -> np.ndarray:
    """AE's single-person refinement of the paper's multi-scale rows [P §4: "we apply the same procedure"; AE's
    step 5, ``methods/ae/grouping.refine``]: each person's joints that the steps left empty (score 0) are filled
    from AE's heatmaps where the tag is closest to the person's mean tag (the mean of the tags at its found joints).

    poses:    (N, J, 3) ``[x, y, score]`` in input pixels, score 0 = missing
    heatmaps: (J, h, w) and tags (J·D, h, w): AE's, on the grid of the steps (``stride`` input pixels per cell)
    Returns the poses with the filled joints (input pixels, their heatmap value as score); found joints unchanged."""
    if len(poses) == 0:
        return poses
    hm = torch.as_tensor(heatmaps).float().numpy().astype(np.float64)
    tg = torch.as_tensor(tags).float().numpy().astype(np.float64)
    J, h, w = hm.shape
    found = poses[..., 2] > 0
    cells = (poses[..., :2] - (stride / 2.0 - 0.5)) / stride
    u = np.clip(np.round(cells[..., 0]), 0, w - 1).astype(int)
    v = np.clip(np.round(cells[..., 1]), 0, h - 1).astype(int)
    at = tg.reshape(-1, J, h, w)[:, np.arange(J), v, u]                      # (D, N, J): the tags at the joints
    means = (at * found).sum(axis=2).T / np.maximum(found.sum(axis=1), 1)[:, None]     # (N, D)
    joints = np.concatenate([cells, poses[..., 2:]], axis=-1)
    filled = method_submodule(resolve_method("ae"), "grouping").refine(hm, tg, joints, means)
    new = ~found & (filled[..., 2] > 0)
    out = poses.copy()
    out[new, :2] = cells_to_input(torch.as_tensor(filled[new, :2]), stride).numpy()
    out[new, 2] = filled[new, 2]
    return out


def merge_flip(outputs: dict, flipped_outputs: dict, cfg: dict) -> dict:
    """The flip test of the AE rows: AE's merge of the heatmaps and tags. The per-step maps of an image and of its
    mirror hold their persons in different orders and do not pair up, so ``steps`` and ``stop`` stay the image's
    own (the recurrent decoder is unchanged by the flip test)."""
    return {**outputs, **_ae().merge_flip(outputs, flipped_outputs, ae_config(cfg))}


def merge_views(outputs: list[dict], views: list[View], cfg: dict) -> tuple[dict, View]:
    """The multi-scale test of the multi-scale rows [P §4: "we feed-forward the image using multiple scales in AE
    and average the output confidence maps for the single-person refinement"]: AE's merge of the heatmaps and tags
    over ``decode.tta.scales`` (methods/ae ``merge_views``) on the first view's grid, which must be the unscaled
    view: its ``steps`` and ``stop`` are the recurrent decoder's (the persons of different scales do not pair up)."""
    scales = TestTimeViews.from_decode(cfg["decode"]).scales
    if not scales or abs(scales[0] - 1.0) > 1e-9:
        raise HarnessError(f"method rnn_assoc: decode.tta.scales must start with 1.0 (the steps are read at the "
                           f"unscaled view), got {list(scales)}")
    return _ae().merge_views(outputs, views, ae_config(cfg))


def loss(outputs: dict, batch: dict, cfg: dict) -> dict[str, torch.Tensor]:
    """The weighted terms of :func:`.unroll.losses` from the unrolls in ``outputs['runs']`` (one per image)."""
    w = cfg["loss"]
    terms = losses(outputs["runs"], [t.to(outputs["runs"][0].logits) for t in batch["person_maps"]])
    return {name: value * float(w[name]) for name, value in terms.items()}


def train_step(net, batch: dict, cfg: dict, *, progress: float):
    """Algorithm 1 on each image of the batch (:func:`.unroll.unroll`), then the losses. The outputs returned have
    the inference outputs' layout (steps zero-padded to the longest unroll)."""
    un = cfg["unroll"]
    feats, ae = net.features(batch["image"])
    runs = [unroll(net, feats[b:b + 1], batch["person_maps"][b].to(feats), omega=float(un["omega"]),
                   chunk=int(un["chunk"]), max_steps=int(un["max_steps"]), config=str(un["config"]))
            for b in range(len(feats))]
    steps = max(len(r.maps) for r in runs)
    maps = torch.stack([torch.stack(r.maps + [torch.zeros_like(r.maps[0])] * (steps - len(r.maps))) for r in runs])
    stop = torch.stack([torch.cat([torch.sigmoid(r.logits), r.logits.new_zeros(steps - len(r.logits))])
                        for r in runs])
    outputs = {"steps": maps.detach().transpose(1, 2), "stop": stop.detach()[:, None], "heatmaps": ae["heatmaps"],
               "tags": ae["tags"]}
    return outputs, loss({"runs": runs}, batch, cfg)
