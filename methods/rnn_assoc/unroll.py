"""Training the recurrent decoder on one image: Algorithm 1's within-image truncated back-propagation, the matching
of predicted persons to ground truth, and the losses (paper §3.3-3.4, eqs. 1-3; ``methods.md`` §4.4).

Unrolling [D where marked]:
- LSTM1 runs person step after person step; ẑ is the index of the first step whose stop probability is below ω
  (the persons the network itself would emit). It runs at least z + 1 steps (every ground-truth person has a step
  and step z's stop target 0 is seen) and on while no stop has fired, at most ``max_steps`` [D: the paper's
  MAX_ITERATIONS].
- Every T steps (``chunk``) the steps of the chunk that may be matched (configuration, below) are matched to the
  ground-truth persons not yet matched (Hungarian, :func:`.representation.match`), those persons are removed, and the
  recurrent state is detached: gradients do not flow across chunks (truncated back-propagation through time).
  With T at least the number of steps this is one chunk, one matching and the full gradient.
- Configuration (Table 4) [P]: a: if ẑ < z, only the steps with p̂ ≥ ω may be matched; b: every step. a': if
  ẑ > z, only the first z steps may be matched; b': all of them.
- LSTM2 reads the steps LSTM1 emitted (t < ẑ) in its order u, in training as at inference; its outputs that are
  matched steps are supervised.

Losses, each weighted 1, as sums [P eqs. 2-3]: l_HM1 = Σ over matched pairs Σ_j ‖H − Ĥ‖² (squared l2 over the
cells); l_stop = Σ over the unrolled steps (at most max(ẑ, z) + 1) of the binary cross-entropy with eq. 1's
targets; l_HM2 as l_HM1 for LSTM2's maps, whose i-th output is LSTM1's step u[i] and is compared with that step's
matched person. Each is averaged over the images of the batch [D: the paper's batch is 1].
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .representation import match, stop_targets


@dataclass
class Unrolled:
    """One image's unroll: LSTM1's maps per step (list of (J, h, w)), stop logits (T,), ẑ, the matched pairs
    (step -> ground-truth person), LSTM2's maps (n, J, h, w) and its order u (n,), or None."""
    maps: list[torch.Tensor]
    logits: torch.Tensor
    z_hat: int
    pairs: dict[int, int] = field(default_factory=dict)
    refined: torch.Tensor | None = None
    order: torch.Tensor | None = None


def _detach(state):
    return [(h.detach(), c.detach()) for h, c in state]


def matchable(t: int, z: int, z_hat: int | None, p: float, omega: float, config: str) -> bool:
    """Whether step t (stop probability ``p``) may be matched under Table 4's ``config`` (``"a,a'"``, ``"a,b'"``,
    ``"b,a'"``, ``"b,b'"``); ẑ None while no stop has fired (then ẑ > t)."""
    first, second = config.split(",")
    if first == "a" and z_hat is not None and z_hat < z and p < omega:
        return False
    if second == "a'" and t >= z and (z_hat is None or z_hat > z):
        return False
    return True


def unroll(net, feats: torch.Tensor, targets: torch.Tensor, *, omega: float, chunk: int, max_steps: int,
           config: str, generator: torch.Generator | None = None) -> Unrolled:
    """Algorithm 1 on one image. feats (1, C, h, w); targets (z, J, h, w) the persons' own maps."""
    z = len(targets)
    maps, logits, state = [], [], None
    unmatched = list(range(z))
    pairs: dict[int, int] = {}
    z_hat = None
    start = 0
    t = 0
    while t < max_steps and (t < z + 1 or z_hat is None):
        m, logit, state = net.person(feats, state, generator)
        maps.append(m[0])
        logits.append(logit[0])
        if z_hat is None and torch.sigmoid(logit[0]).item() < omega:
            z_hat = t
        t += 1
        if t - start == chunk or not (t < max_steps and (t < z + 1 or z_hat is None)):
            steps = [s for s in range(start, t)
                     if matchable(s, z, z_hat, torch.sigmoid(logits[s]).item(), omega, config)]
            if steps and unmatched:
                rows, cols = match(targets[unmatched], torch.stack([maps[s] for s in steps]))
                for r, c in zip(rows, cols):
                    pairs[steps[c]] = unmatched[r]
                unmatched = [g for g in unmatched if g not in pairs.values()]
            state = _detach(state)
            start = t
    out = Unrolled(maps, torch.stack(logits), t if z_hat is None else z_hat, pairs)
    emitted = min(out.z_hat, len(maps))
    if net.lstm2 is not None:           # no person emitted: no LSTM2 output, a zero l_HM2 (the same loss terms)
        out.refined, out.order = maps[0].new_zeros((0, *maps[0].shape)), torch.zeros(0, dtype=torch.long)
    if net.lstm2 is not None and emitted:
        refined, u = net.refine(feats, torch.stack(maps[:emitted]), torch.sigmoid(out.logits[:emitted]), generator)
        keep = [i for i, s in enumerate(u.tolist()) if s in pairs]
        out.refined, out.order = refined[keep], u[keep]
    return out


def losses(runs: list[Unrolled], targets: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """l_HM1, l_stop and (with LSTM2) l_HM2, averaged over the images of the batch."""
    hm1, stop, hm2 = [], [], []
    for run, tgt in zip(runs, targets):
        zero = run.logits.sum() * 0
        hm1.append(sum((((run.maps[s] - tgt[g]) ** 2).sum() for s, g in run.pairs.items()), zero))
        want = torch.from_numpy(stop_targets(len(tgt), run.z_hat)[: len(run.logits)]).to(run.logits)
        stop.append(F.binary_cross_entropy_with_logits(run.logits[: len(want)], want, reduction="sum"))
        if run.refined is not None:
            hm2.append(sum((((r - tgt[run.pairs[int(s)]]) ** 2).sum() for r, s in zip(run.refined, run.order)),
                           zero))
    out = {"heatmap1": torch.stack(hm1).mean(), "stop": torch.stack(stop).mean()}
    if hm2:
        out["heatmap2"] = torch.stack(hm2).mean()
    return out


def person_counts(runs: list[Unrolled], targets: list[torch.Tensor]) -> np.ndarray:
    """|ẑ − z| per image (the person-count error the learning test follows)."""
    return np.array([abs(r.z_hat - len(t)) for r, t in zip(runs, targets)])
