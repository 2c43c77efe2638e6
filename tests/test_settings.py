"""Representation settings are declared (``methods/<m>/settings.schema.yaml``) and checked: a misspelt or
mistyped key in method.yaml is an error naming the file, the entry and the key; and every declared setting
reaches the code that uses it."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from poseharness.data.sample import Sample
from poseharness.errors import HarnessError
from poseharness.methods import load_method, method_names, parse_method
from poseharness.settings import settings_schema

FIXTURES = Path(__file__).parent / "fixtures" / "methods"
#: Settings the harness reads itself, not the method's code: the flip test (the predictor), the test-time views and
#: a top-down variant's box source (the predictor and the oracle: poseharness.views).
HARNESS_READS = {"decode": {"flip", "tta", "tta.scales", "tta.flip", "boxes", "boxes.source", "boxes.centre",
                            "boxes.size", "boxes.miss_rate", "boxes.seed", "boxes.path"}}


def copy_of(method: str, tmp_path: Path, edit) -> Path:
    """A copy of ``method``'s directory whose method.yaml is changed by ``edit(raw)``; returns its method.yaml."""
    src = load_method(method).directory
    dest = tmp_path / method
    dest.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (dest / f.name).write_bytes(f.read_bytes())
    raw = yaml.safe_load((dest / "method.yaml").read_text())
    edit(raw)
    (dest / "method.yaml").write_text(yaml.safe_dump(raw))
    return dest / "method.yaml"


def parse(path: Path):
    return parse_method(yaml.safe_load(path.read_text()), path)


def test_the_misspelt_decoder_key_of_the_issue_is_an_error_naming_file_variant_and_key(tmp_path):
    # Before: `poseharness oracle` printed the unmodified variant's AP 84.9 for this copy.
    path = copy_of("gog", tmp_path, lambda raw: raw["variants"]["ours"].update(
        decode={"upsample": "bicubic", "dist_mx": 40, "upsampel": "bilinear"}))
    with pytest.raises(HarnessError) as err:
        parse(path)
    msg = str(err.value)
    assert str(path) in msg and "variants.ours.decode.dist_mx: unknown setting" in msg
    assert "settings.schema.yaml" in msg and "dist_max" in msg          # the declared keys are listed


@pytest.mark.parametrize("where, edit, expect", [
    ("scale model", lambda r: r["scales"]["tiny"]["model"].update(chanels=8), r"scales\.tiny\.model\.chanels"),
    ("training encoding", lambda r: r["trainings"]["qnt"]["encoding"].update(quantize=True),
     r"trainings\.qnt\.encoding\.quantize: unknown setting"),
    ("nested loss", lambda r: r["defaults"]["loss"]["heatmap"].update(gama=1), r"defaults\.loss\.heatmap\.gama"),
    ("unknown group", lambda r: r["variants"]["qnt"].update(decode={"refine": True}) or r["trainings"]["qnt"]
     .update(decoder={"x": 1}), r"trainings\.qnt\.decoder: unknown setting"),
    ("type", lambda r: r["variants"]["dark"]["decode"].update(topk="many"),
     r"variants\.dark\.decode\.topk: 'many' is not of type 'integer'"),
    ("enum", lambda r: r["variants"]["ours_bilinear"]["decode"].update(upsample="bilinaer"),
     r"variants\.ours_bilinear\.decode\.upsample: 'bilinaer' is not one of"),
    ("required", lambda r: r["defaults"]["decode"].pop("topk"),
     r"variant '\w+' at scale '\w+': field decode: 'topk' is a required property"),
])
def test_bad_gog_settings_name_file_entry_and_key(tmp_path, where, edit, expect):
    path = copy_of("gog", tmp_path, edit)
    with pytest.raises(HarnessError, match=expect) as err:
        parse(path)
    assert str(path) in str(err.value)


def test_simple_pose_checks_its_settings_too(tmp_path):
    path = copy_of("simple_pose", tmp_path, lambda r: r["trainings"]["imhn3"]["model"].update(stack=3))
    with pytest.raises(HarnessError, match=r"trainings\.imhn3\.model\.stack: unknown setting"):
        parse(path)


def test_a_method_without_a_settings_schema_may_override_only_what_defaults_set(tmp_path):
    raw = yaml.safe_load((FIXTURES / "toy" / "method.yaml").read_text())
    assert settings_schema(FIXTURES / "toy") is None
    parse_method(copy.deepcopy(raw), tmp_path / "toy" / "method.yaml")          # as it is: fine
    raw["variants"]["top1"]["decode"] = {"treshold": 0.5}
    with pytest.raises(HarnessError, match=r"variants\.top1\.decode\.treshold: unknown setting"):
        parse_method(raw, tmp_path / "toy" / "method.yaml")


def test_the_resolver_folds_a_scales_model_and_loss_under_a_trainings():
    sp = load_method("simple_pose")
    cfg = sp.training_config("imhn3_fl2_noms", "tiny")
    assert cfg["model"]["stacks"] == 3 and cfg["model"]["multiscale"] is False      # the training's switches
    assert cfg["model"]["channels"] == 16 and cfg["model"]["order"] == 4             # the scale's sizes
    assert cfg["scale"] == {"input": 256, "train_input": 128}                        # views only
    gog = load_method("gog").training_config("precise", "tiny")
    assert gog["loss"]["heatmap"]["gamma"] == 1 and gog["loss"]["heatmap"]["weight"] == 1.0


# --- every declared setting reaches the code ------------------------------------------------------------

class Tracked(dict):
    """A dict that records which keys were read (``[]``, ``get``), recursively for nested dicts."""

    def __init__(self, data: dict, seen: set, prefix: str = ""):
        super().__init__({k: Tracked(v, seen, f"{prefix}{k}.") if isinstance(v, dict) else v
                          for k, v in data.items()})
        self._seen, self._prefix = seen, prefix

    def __getitem__(self, key):
        self._seen.add(self._prefix + str(key))
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._seen.add(self._prefix + str(key))
        return super().get(key, default)

    def __contains__(self, key):
        self._seen.add(self._prefix + str(key))
        return super().__contains__(key)

    def _all(self):
        self._seen.update(self._prefix + str(k) for k in super().keys())

    def items(self):
        self._all()
        return super().items()

    def keys(self):
        self._all()
        return super().keys()

    def values(self):
        self._all()
        return super().values()

    def __iter__(self):
        self._all()
        return super().__iter__()


def declared_leaves(node: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, sub in node.get("properties", {}).items():
        if "properties" in sub:
            out |= declared_leaves(sub, f"{prefix}{key}.")
        out.add(f"{prefix}{key}")
    return out


def person(size: int = 64) -> Sample:
    rng = np.random.default_rng(3)
    kp = np.zeros((2, 17, 3), np.float32)
    kp[..., :2] = rng.uniform(8, size - 8, size=(2, 17, 2))
    kp[..., 2] = 2
    return Sample(image_id=1, file_name="x.jpg", width=size, height=size, keypoints=kp,
                  boxes=np.array([[4, 4, 56, 56], [2, 2, 60, 60]], np.float32),
                  areas=np.array([3000.0, 3500.0], np.float32), iscrowd=np.zeros(2, bool),
                  num_keypoints=np.array([17, 17]))


def reads(method: str, group: str) -> tuple[set[str], set[str]]:
    """(declared, read) leaves of ``group`` over every variant: encode (and oracle_outputs), decode, build_model
    and loss run on configs whose ``group`` records its reads."""
    spec = load_method(method)
    module = spec.module
    _, schema = settings_schema(spec.directory)
    seen: set[str] = set()
    for variant in spec.variants:
        cfg = spec.variant_config(variant, "tiny")
        cfg["schema"] = "coco17"
        cfg[group] = Tracked(cfg[group], seen)
        targets = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in module.encode(person(), cfg).items()}
        # the oracle's outputs: the method's oracle_outputs where it has one (more than the training targets)
        outputs = {k: torch.from_numpy(np.ascontiguousarray(v))
                   for k, v in getattr(module, "oracle_outputs", module.encode)(person(), cfg).items()}
        module.decode(outputs, cfg)
        if callable(getattr(module, "merge_flip", None)):      # the flip test reads decode settings too
            module.merge_flip(outputs, outputs, cfg)
        if spec.trainings[cfg["training"]].get("oracle_only"):
            continue
        torch.manual_seed(0)
        # training mode, as the trainer calls the loss (training-only heads included); two images, so that
        # BatchNorm has more than one value per channel at the deepest 1 x 1 maps. A method with its own training
        # step (and collation) is called through them, as the trainer calls it.
        net, images = module.build_model(cfg).train(), torch.zeros(2, 3, 64, 64)
        if callable(getattr(module, "collate", None)):
            batch = module.collate([dict(targets), dict(targets)])
        else:
            batch = {k: torch.stack([v, v]) for k, v in targets.items()}
        loss_cfg = module.loss_config(cfg, 0.99) if hasattr(module, "loss_config") else cfg
        if callable(getattr(module, "train_step", None)):
            module.train_step(net, {**batch, "image": images}, loss_cfg, progress=0.99)
        else:
            module.loss(net(images), batch, loss_cfg)
    return declared_leaves(schema["properties"][group]), seen


@pytest.mark.parametrize("method", [m for m in method_names() if settings_schema(load_method(m).directory)])
@pytest.mark.parametrize("group", ["encoding", "decode", "model", "loss"])
def test_every_declared_setting_reaches_the_code(method, group):
    declared, seen = reads(method, group)
    unread = declared - seen - HARNESS_READS.get(group, set())
    # A nested group counts as read when one of its keys is.
    unread = {k for k in unread if not any(s.startswith(k + ".") for s in seen)}
    assert not unread, f"{method}: declared {group} settings that no code reads: {sorted(unread)}"
