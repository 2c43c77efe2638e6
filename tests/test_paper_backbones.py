"""The paper-scale backbones through timm (PoseDet: DLA-34, HRNet-W32, HRNet-W48; KCAM: HRNet-W48), randomly
initialised on the CPU: each builds from its scale's resolved config, its outputs have the shapes of the scale's
strides, and a loss on them reaches the first layer of the trunk. Without timm each says what it needs."""
import sys

import pytest
import torch

from poseharness.config import training_config
from poseharness.contract import method_module, resolve_method
from poseharness.data.manifest import load_manifest
from poseharness.errors import HarnessError
from poseharness.threads import torch_threads

#: (method, training, scale, dataset, timm model, input H x W of the test) -> what the outputs must be.
CASES = [
    ("posedet", "full", "paper_dla34", "synthetic-crowdpose", "dla34", (128, 128)),
    ("posedet", "full", "paper_w32", "synthetic-crowdpose", "hrnet_w32", (128, 128)),
    ("posedet", "full", "paper", "synthetic-crowdpose", "hrnet_w48", (128, 128)),
    ("kcam", "concat", "paper_w48", "synthetic-coco", "hrnet_w48", (128, 96)),
]


def resolved(method, training, scale, dataset):
    spec = resolve_method(method)
    cfg, _ = training_config(spec, training, scale, load_manifest(dataset))
    return method_module(spec), cfg


@pytest.mark.parametrize("method,training,scale,dataset,backbone,hw", CASES, ids=[c[2] + "-" + c[0] for c in CASES])
def test_paper_backbone_builds_runs_and_trains(method, training, scale, dataset, backbone, hw):
    pytest.importorskip("timm")
    module, cfg = resolved(method, training, scale, dataset)
    assert cfg["model"]["backbone"] == backbone
    torch.manual_seed(0)
    with torch_threads(1):
        net = module.build_model(cfg).train()
        out = net(torch.randn(2, 3, *hw))
        if method == "posedet":
            strides, k = cfg["encoding"]["strides"], 15                     # CrowdPose's 14 joints + the 15th point
            assert len(out) == len(strides)
            for level, s in zip(out, strides):
                size = (hw[0] // s, hw[1] // s)
                assert level["coarse"].shape == level["refine"].shape == (2, 2 * k, *size)
                assert level["cls"].shape == (2, 1, *size) and level["heatmap"].shape == (2, k, *size)
            loss = sum(level[n].float().pow(2).mean() for level in out for n in ("coarse", "refine", "cls", "heatmap"))
        else:
            size = (hw[0] // 4, hw[1] // 4)                                   # KCAM sits on the stride-4 branch
            assert out["heatmaps"].shape == out["areas"].shape == (2, 17, *size)
            loss = out["heatmaps"].pow(2).mean() + out["areas"].pow(2).mean()
        loss.backward()
    first = next(p for n, p in net.named_parameters() if p.ndim == 4)         # the trunk's first convolution
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("method,training,scale,dataset,message", [
    ("posedet", "full", "paper", "synthetic-crowdpose", r"backbone 'hrnet_w48' needs the timm package"),
    ("kcam", "concat", "paper_w48", "synthetic-coco", r"model.backbone 'hrnet_w48' needs the package timm"),
])
def test_without_timm_the_paper_scale_says_what_it_needs(monkeypatch, method, training, scale, dataset, message):
    monkeypatch.setitem(sys.modules, "timm", None)                         # `import timm` raises ImportError
    module, cfg = resolved(method, training, scale, dataset)
    with pytest.raises(HarnessError, match=message):
        module.build_model(cfg)


def test_a_stride_the_backbone_lacks_is_named():
    pytest.importorskip("timm")
    module, cfg = resolved("posedet", "full", "paper_dla34", "synthetic-crowdpose")
    cfg["encoding"]["strides"] = [8, 16, 24]
    with pytest.raises(HarnessError, match=r"encoding.strides: 24 is not a feature stride of 'dla34' \(it has "):
        module.build_model(cfg)
