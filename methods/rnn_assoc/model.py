"""The recurrent decoder on Associative Embedding features (paper §3; ``shared/design/methods.md`` §4.2-4.3).

- Features F: the AE network of ``methods/ae`` (trained first, then frozen: every training starts from its
  training ``base`` with ``freeze: [ae]``); F = the concatenation over the stacks of AE's ``features`` head, the
  2K = 34 output channels no loss supervises (the paper's "intermediate features of size f = 34", c = 34 · stacks
  [P; R: AE's outputs 34-67]), normalised by the running mean and variance of all the training data and an
  affine y = γ x̂ + β [P].
- LSTM1: ``len(hidden)`` stacked ConvLSTM layers (3×3), hidden widths halving [D: e.g. 32, 16, 8]; layer 1 reads
  concat(F, the feedback maps), layer l > 1 the hidden state of layer l − 1. A 1×1 conv [D] of the last hidden
  state gives the step's J heatmaps; the stop probability is ``sigmoid(FC(concat of each layer's spatial maximum of its
  hidden state per channel)))``.
- Feedback loop: a person is ``passes`` LSTM passes (Table 5's loop count; 0 and 1 both mean one pass); the first
  pass is fed U[0, 0.1] noise maps, each later pass the previous pass's maps; the person's maps and stop
  probability are the last pass's. In eval mode the noise is one draw of a generator seeded 0, the same for every
  image and person, so inference is deterministic and independent of the batch [D].
- LSTM2 (optional, ``lstm2.layers`` > 0; Table 7's "size" read as its layer count [D]): stacked ConvLSTM layers
  over LSTM1's persons in a chosen order, reading concat(F, the person's maps), giving refined maps (``order``:
  learned / random / confidence / inverse / canonical, :func:`orders`); widths halving from ``lstm2.hidden``.
- Widths never end below J [D]: the 1×1 output conv makes the J maps of a person from the last layer's channels,
  and c channels span at most c spatial patterns, so with fewer than J some joints cannot be placed (measured at
  tiny: LSTM1 16/8/4 and LSTM2 16/8 both placed no joint, AP50 ≈ 0). LSTM2's halving is floored at J; LSTM1's
  explicit widths must end at J or more (an error naming the setting otherwise).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from poseharness.contract import method_submodule, resolve_method
from poseharness.errors import HarnessError
from poseharness.schemas import get_schema

#: The feedback of a person's first pass: U[0, NOISE] maps [P].
NOISE = 0.1
#: The stop head's initial bias [D] (see LSTM1).
STOP_BIAS = -2.0


class RunningNorm(nn.Module):
    """Per-channel standardisation by the running mean and variance of everything seen in training (cumulative,
    not a moving average), applied with those statistics in training too, then y = γ x̂ + β: the paper's
    normalisation of F with batch 1 [P]."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def _update(self, x: torch.Tensor) -> None:
        n = x.numel() // x.shape[1]
        mean = x.transpose(0, 1).reshape(x.shape[1], -1).mean(1)
        var = x.transpose(0, 1).reshape(x.shape[1], -1).var(1, unbiased=False)
        total = self.count + n
        a = (self.count / total).to(x.dtype)
        delta = mean - self.mean
        self.var.copy_(a * self.var + (1 - a) * var + a * (1 - a) * delta ** 2)
        self.mean.add_((1 - a) * delta)
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._update(x.detach())
        x_hat = (x - self.mean[:, None, None]) / torch.sqrt(self.var[:, None, None] + self.eps)
        return self.weight[:, None, None] * x_hat + self.bias[:, None, None]


class ConvLSTMCell(nn.Module):
    """``forward(x (B, Cin, h, w), state (h, c) or None) -> (h, c)``, gates from one 3×3 conv of concat(x, h)."""

    def __init__(self, cin: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(cin + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class LSTM1(nn.Module):
    """Stacked ConvLSTM emitting one person per step: ``forward(feats, feedback, state) -> (maps (B, J, h, w),
    stop logit (B,), state)``."""

    def __init__(self, feat_channels: int, joints: int, hidden: list[int]):
        super().__init__()
        widths = [feat_channels + joints] + list(hidden[:-1])
        self.cells = nn.ModuleList([ConvLSTMCell(cin, h) for cin, h in zip(widths, hidden)])
        self.out = nn.Conv2d(hidden[-1], joints, 1)
        self.stop = nn.Linear(sum(hidden), 1)
        # [D] the stop probability starts at sigmoid(STOP_BIAS) = 0.12, below omega: an untrained decoder stops at
        # once, so a training step unrolls z + 1 persons, not MAX_ITERATIONS (measured at the crops scale with a
        # bias of 0: every image unrolled 30 persons twice, 35 s a step)
        nn.init.constant_(self.stop.bias, STOP_BIAS)

    def forward(self, feats: torch.Tensor, feedback: torch.Tensor, state: list | None):
        state = state or [None] * len(self.cells)
        x, new = torch.cat([feats, feedback], 1), []
        for cell, s in zip(self.cells, state):
            h, c = cell(x, s)
            new.append((h, c))
            x = h
        pooled = torch.cat([h.amax(dim=(-2, -1)) for h, _ in new], 1)
        return self.out(x), self.stop(pooled)[:, 0], new


class LSTM2(nn.Module):
    """``layers`` stacked ConvLSTM layers (widths halving from ``hidden``) over the persons in a given order:
    ``forward(feats, maps (T, B, J, h, w)) -> refined maps (T, B, J, h, w)``."""

    def __init__(self, feat_channels: int, joints: int, hidden: int, layers: int):
        super().__init__()
        widths = [max(hidden // 2 ** i, joints) for i in range(layers)]       # floored at J (module doc)
        self.cells = nn.ModuleList([ConvLSTMCell(cin, h) for cin, h in
                                    zip([feat_channels + joints] + widths[:-1], widths)])
        self.out = nn.Conv2d(widths[-1], joints, 1)

    def forward(self, feats: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        state, out = [None] * len(self.cells), []
        for m in maps:
            x = torch.cat([feats, m], 1)
            for i, cell in enumerate(self.cells):
                state[i] = cell(x, state[i])
                x = state[i][0]
            out.append(self.out(x))
        return torch.stack(out) if out else maps


def orders(kind: str, maps: torch.Tensor, stop: torch.Tensor, generator: torch.Generator | None = None
           ) -> torch.Tensor:
    """The permutation u (T,) in which LSTM2 reads one image's persons [P Table 3]: ``learned`` LSTM1's own order,
    ``inverse`` its reverse, ``random`` a random one, ``confidence`` by LSTM1's confidence p̂ (the stop
    probability), descending [P], ``canonical`` by ascending location of the person's strongest joint, row-major
    [D: "ascending joint location (based on the maximum activation of every joint's heatmap)"].
    maps (T, J, h, w), stop (T,)."""
    t = maps.shape[0]
    if kind == "learned":
        return torch.arange(t)
    if kind == "inverse":
        return torch.arange(t - 1, -1, -1)
    if kind == "random":
        return torch.randperm(t, generator=generator)
    if kind == "confidence":
        return torch.sort(-stop.detach().reshape(-1), stable=True).indices
    peaks = maps.detach().flatten(2).amax(2)                                  # (T, J)
    if kind == "canonical":
        best = maps.detach().flatten(2).max(2).indices.gather(1, peaks.argmax(1, keepdim=True))[:, 0]
        return torch.sort(best, stable=True).indices
    raise ValueError(f"unknown LSTM2 order {kind!r}")


class RecurrentPose(nn.Module):
    """AE features + LSTM1 (+ LSTM2). ``forward(images)`` (inference) unrolls each image until its stop probability
    falls below the training's ``unroll.omega`` (the model's own stop) or ``unroll.max_steps`` persons:
    {"steps": (B, J, T, h, w), "stop": (B, 1, T)} (joints, not steps, as channels: the head layout), the steps
    after an image's end zero-padded (stop 0), and AE's own outputs {"heatmaps", "tags"} (B, K, h, w) for the AE
    rows."""

    def __init__(self, cfg: dict):
        super().__init__()
        m = cfg["model"]
        ae_model = method_submodule(resolve_method("ae"), "model")
        self.ae = ae_model.build_model({"model": m["ae"], "encoding": {"stride": cfg["encoding"]["stride"]},
                                        "schema": cfg["schema"], "training": cfg.get("training")})
        joints = get_schema(cfg["schema"]).num_keypoints
        feat_channels = 2 * joints * int(m["ae"]["stacks"])
        self.joints = joints
        self.norm = RunningNorm(feat_channels) if m["normalise"] == "running" else nn.Identity()
        if int(m["hidden"][-1]) < joints:
            raise HarnessError(f"method rnn_assoc: field model.hidden: LSTM1's last width {m['hidden'][-1]} is below "
                               f"the {joints} joints its 1x1 output conv must place (got {list(m['hidden'])})")
        self.lstm1 = LSTM1(feat_channels, joints, list(m["hidden"]))
        lstm2 = m["lstm2"]
        self.lstm2 = (LSTM2(feat_channels, joints, int(lstm2["hidden"]), int(lstm2["layers"])) if lstm2["layers"]
                      else None)
        self.passes = max(int(m["loops"]), 1)
        self.omega = float(cfg["unroll"]["omega"])
        self.max_steps = int(cfg["unroll"]["max_steps"])
        self.order = m["lstm2"]["order"]

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """F (B, 2K·stacks, h, w), normalised, and AE's last-stack outputs (heatmaps, tags)."""
        outs = self.ae(images)
        return self.norm(torch.cat([o["features"] for o in outs], 1)), outs[-1]

    def person(self, feats: torch.Tensor, state: list | None, generator: torch.Generator | None = None):
        """One person: ``passes`` LSTM1 passes. Returns (maps (B, J, h, w), stop logit (B,), state)."""
        shape = (feats.shape[0], self.joints, *feats.shape[-2:])
        if self.training:
            feedback = torch.rand(shape, generator=generator, device=feats.device, dtype=feats.dtype) * NOISE
        else:       # the same seeded draw for every image and person: predictions do not depend on the batch
            seeded = torch.Generator(device=feats.device).manual_seed(0)
            feedback = (torch.rand((1, *shape[1:]), generator=seeded, device=feats.device, dtype=feats.dtype)
                        * NOISE).expand(shape)
        for _ in range(self.passes):
            maps, logit, state = self.lstm1(feats, feedback, state)
            feedback = maps
        return maps, logit, state

    def refine(self, feats: torch.Tensor, maps: torch.Tensor, stop: torch.Tensor,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """LSTM2 over one image's persons maps (T, J, h, w): (refined maps in the order u, the permutation u)."""
        u = orders(self.order, maps, stop, generator)
        return self.lstm2(feats, maps[u][:, None])[:, 0], u

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats, ae = self.features(images)
        steps, stops = [], []
        state, alive = None, torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
        for _ in range(self.max_steps):
            maps, logit, state = self.person(feats, state)
            p = torch.sigmoid(logit) * alive
            steps.append(maps * alive[:, None, None, None])
            stops.append(p)
            alive = alive & (p >= self.omega)
            if not alive.any():
                break
        maps, stop = torch.stack(steps, 1), torch.stack(stops, 1)
        if self.lstm2 is not None:
            maps = torch.stack([self._refined(feats[b:b + 1], maps[b], stop[b]) for b in range(len(maps))])
        return {"steps": maps.transpose(1, 2), "stop": stop[:, None], "heatmaps": ae["heatmaps"], "tags": ae["tags"]}

    def _refined(self, feats: torch.Tensor, maps: torch.Tensor, stop: torch.Tensor) -> torch.Tensor:
        n = int((stop >= self.omega).sum())        # the persons LSTM1 emitted before its stop
        if n == 0:
            return maps
        refined, u = self.refine(feats, maps[:n], stop[:n])
        out = maps.clone()
        out[:n] = refined
        return out


def build_model(cfg: dict) -> RecurrentPose:
    return RecurrentPose(cfg)
