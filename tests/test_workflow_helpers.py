"""poseharness/workflow.py: what the Snakemake DAG works out, as plain functions, without Snakemake.

The repo's own method directories (methods/*) and dataset manifests, small dict configs; a method's
trainability is passed in (``untrainable=``) so only one test imports a method module.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from poseharness import workflow as wf
from poseharness.errors import HarnessError
from poseharness.methods import load_method, method_names

REPO = Path(__file__).resolve().parents[1]
METHODS_DIR = REPO / "methods"



def trainable(spec):
    return None


def config(**over) -> dict:
    """A workflow config as workflow/config.yaml gives it, with ``over`` on top."""
    base = {"methods": "all", "datasets": {"coco": "synthetic-coco", "crowdpose": "synthetic-crowdpose",
                                           "ochuman": "synthetic-ochuman"},
            "dataset": None, "size": "default", "data_seed": None, "scale": "tiny", "oracle_scale": None,
            "seeds": [0], "steps": None, "gpus": 1,
            "threads": {"train": {"tiny": 1, "paper": 8}, "predict": {"tiny": 1, "paper": 4}, "oracle": 1,
                        "prepare": 2, "bench": 2}}
    return {**base, **over}


@pytest.fixture(autouse=True)
def project(monkeypatch, tmp_path):
    """The repo as project root, data under a temporary folder that is also the working directory."""
    monkeypatch.setenv("POSEHARNESS_ROOT", str(REPO))
    monkeypatch.setenv("POSEHARNESS_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def gog():
    return load_method("gog")


@pytest.fixture
def specs():
    return {name: load_method(name) for name in method_names()}


LAYOUT = wf.Layout()


# ----------------------------------------------------------------------------------------------- config

def test_seeds_given_as_strings_become_integers():
    assert wf.coerce_seeds({"seeds": ["0", "12", 3]})["seeds"] == [0, 12, 3]
    assert wf.coerce_seeds({"seeds": [0]})["seeds"] == [0]


def test_select_methods_all_one_or_a_list_and_unknown_names_the_directory():
    known = ["gog", "simple_pose"]
    assert wf.select_methods(config(), known, METHODS_DIR) == known
    assert wf.select_methods(config(methods="simple_pose"), known, METHODS_DIR) == ["simple_pose"]
    assert wf.select_methods(config(methods=["simple_pose", "gog"]), known, METHODS_DIR) == ["simple_pose", "gog"]
    with pytest.raises(HarnessError, match=r"unknown method\(s\) nosuch; the method directories under .*methods"):
        wf.select_methods(config(methods=["gog", "nosuch"]), known, METHODS_DIR)


def test_export_dir_exports_absolute_and_returns_relative(monkeypatch, tmp_path):
    monkeypatch.delenv("POSEHARNESS_RESULTS", raising=False)
    assert wf.export_dir("POSEHARNESS_RESULTS", "results") == "results"
    assert os.environ["POSEHARNESS_RESULTS"] == str((tmp_path / "results").resolve())


def test_layout_patterns_and_table_done():
    layout = wf.Layout("r", "p", "c")
    assert layout.logs == "r/logs" and layout.bench == "r/bench"
    assert layout.oracle.format(dataset="d", split="val", method="m", training="t", scale="tiny", seed=0) == \
        "r/oracle/d/val/m/t/tiny-seed0.json"
    assert layout.table_done("m", "t") == ["p/m/t.html", "p/m/t.md", "r/collected/m-t.txt"]


def test_resources_per_scale():
    cfg = config(gpus=4)
    assert wf.per_scale(cfg, "train", "tiny") == 1 and wf.per_scale(cfg, "train", "paper") == 8
    assert wf.gpus(cfg, "train", "tiny") == 0 and wf.gpus(cfg, "predict", "paper") == 1
    assert wf.gpus(cfg, "train", "paper") == 4
    assert wf.train_launcher(cfg, "paper").startswith("torchrun --standalone --nproc_per_node=4")
    assert wf.train_launcher(cfg, "tiny") == wf.train_launcher(config(), "paper") == "poseharness"


# ----------------------------------------------------------------------------------------------- datasets

def test_dataset_for_maps_a_family_by_config():
    assert wf.dataset_for(config(), "ochuman") == "synthetic-ochuman"
    assert wf.dataset_for(config(dataset="real"), "ochuman") == "ochuman"
    assert wf.dataset_for(config(dataset="synthetic-crowdpose"), "coco") == "synthetic-crowdpose"


def test_data_flags_synthetic_versus_real():
    assert wf.data_flags(config(), "synthetic-coco") == "--size default --seed 0"
    assert wf.data_flags(config(size="tiny", data_seed=7), "synthetic-coco", "--data-seed") == \
        "--size tiny --data-seed 7"
    assert wf.data_flags(config(), "synthetic-coco", seed=3) == "--size default --seed 3"
    assert wf.data_flags(config(), "coco") == ""
    assert wf.data_seed(config(data_seed=7), "coco") == 0


def test_bad_size_names_the_manifest():
    with pytest.raises(HarnessError, match=r"synthetic-coco\.yaml: dataset 'synthetic-coco' has no size 'huge'"):
        wf.data_size(config(size="huge"), "synthetic-coco")


def test_prepared_is_the_stamp_of_a_synthetic_set_and_the_annotations_of_a_real_split():
    assert wf.prepared(config(), "synthetic-coco", "val") == "data/synthetic-coco/default-seed0/.prepared.json"
    assert wf.prepared(config(size="tiny"), "synthetic-coco", "train") == \
        "data/synthetic-coco/tiny-seed0/.prepared.json"
    assert wf.prepared(config(), "coco", "val") == "data/coco/annotations/person_keypoints_val2017.json"
    with pytest.raises(HarnessError, match="has no split 'nosuch'"):
        wf.prepared(config(), "coco", "nosuch")
    assert wf.synthetic_files(config(), "synthetic-coco") == [
        "data/synthetic-coco/default-seed0/annotations/train.json",
        "data/synthetic-coco/default-seed0/annotations/val.json"]


def test_generator_hash_follows_the_size():
    assert wf.generator_hash(config(), "synthetic-coco") != wf.generator_hash(config(size="tiny"), "synthetic-coco")


def test_used_datasets_and_splits_needed(specs):
    # The stand-in of every dataset family some table with columns runs on (e.g. posedet: crowdpose).
    families = {t.dataset for s in specs.values() for t in s.tables().values() if t.columns}
    assert wf.used_datasets(config(), specs) == sorted(config()["datasets"][f] for f in families)
    # COCO: evaluation split, then train (trained tables); the OCHuman stand-in: train only for trained tables
    # (rnn_assoc's), the oracle tables need val alone.
    assert wf.splits_needed(config(), specs, "synthetic-coco") == ["val", "train"]
    assert wf.splits_needed(config(), specs, "synthetic-ochuman") == ["val", "train"]
    oracles_only = {name: specs[name] for name in ("gog", "simple_pose")}
    assert wf.splits_needed(config(), oracles_only, "synthetic-ochuman") == ["val"]
    assert wf.splits_needed(config(dataset="real"), specs, "coco") == ["val", "train"]
    only = {"gog": specs["gog"]}
    assert wf.used_datasets(config(), only) == ["synthetic-coco"]


# ----------------------------------------------------------------------------------------------- methods

def test_hashes_separate_a_training_from_its_decoders(gog):
    table2 = gog.tables()["table2"]
    by_training = {}
    for v in table2.columns:
        by_training.setdefault(wf.training_of(gog, v), []).append(v)
    training, variants = next((t, vs) for t, vs in by_training.items() if len(vs) > 1)
    assert len({wf.variant_hash(gog, v, "tiny") for v in variants}) == len(variants)
    assert wf.training_hash(gog, training, "tiny") != wf.training_hash(gog, training, "paper")
    assert set(variants) <= set(wf.oracle_variants(gog, training))
    assert wf.oracle_hash(gog, training, "tiny") != wf.oracle_hash(gog, training, "paper")


def test_unknown_variant_and_table_name_method_yaml(gog):
    with pytest.raises(HarnessError, match=r"gog/method\.yaml: method 'gog' has no variant 'nosuch'"):
        wf.training_of(gog, "nosuch")
    with pytest.raises(HarnessError, match=r"gog/method\.yaml: method 'gog' has no table 'nosuch'"):
        wf.table_inputs(config(), LAYOUT, gog, "nosuch", trainable)


def test_table_inputs_of_a_trained_table_include_the_oracle_at_the_same_scale(gog):
    table2 = gog.tables()["table2"]
    files = wf.table_inputs(config(seeds=[0, 1], oracle_scale="paper"), LAYOUT, gog, "table2", trainable)
    predictions = [f for f in files if f.startswith("results/predictions/")]
    oracles = [f for f in files if f.startswith("results/oracle/")]
    assert len(predictions) == 2 * len(table2.columns) and len(files) == len(predictions) + len(oracles)
    assert "results/predictions/trained/synthetic-coco/val/gog/" + table2.columns[0] + "/tiny-seed1.json" \
        in predictions
    # one oracle summary per training the columns decode, at the table's scale (not oracle_scale)
    trainings = {wf.training_of(gog, v) for v in table2.columns}
    assert sorted(oracles) == sorted(f"results/oracle/synthetic-coco/val/gog/{t}/tiny-seed0.json"
                                     for t in trainings)


def test_table_inputs_of_an_oracle_table_run_at_oracle_scale(gog):
    files = wf.table_inputs(config(oracle_scale="paper"), LAYOUT, gog, "oracle", trainable)
    assert files and all(f.startswith("results/oracle/synthetic-coco/val/gog/") and f.endswith("/paper-seed0.json")
                         for f in files)
    assert len(files) == len({wf.training_of(gog, v) for v in gog.tables()["oracle"].columns})


def test_table_inputs_of_a_published_only_table_are_empty(gog):
    assert wf.table_inputs(config(), LAYOUT, gog, "table3", trainable) == []


def test_table_inputs_errors_name_the_file(gog):
    with pytest.raises(HarnessError, match=r"gog/method\.yaml: table table2: method 'gog' cannot be trained "
                                           r"yet, so its trained tables cannot be reproduced: no model"):
        wf.table_inputs(config(), LAYOUT, gog, "table2", lambda spec: "no model")
    with pytest.raises(HarnessError, match=r"gog/method\.yaml: method 'gog' has no scale 'huge'"):
        wf.table_inputs(config(scale="huge"), LAYOUT, gog, "table2", trainable)


def test_reproducible_says_why_a_trained_table_is_skipped(gog):
    assert wf.reproducible(gog, "oracle", lambda spec: "no model") == (True, None)
    assert wf.reproducible(gog, "table3", lambda spec: "no model") == (True, None)     # published numbers only
    assert wf.reproducible(gog, "table2", lambda spec: "no model") == (False, "no model")
    assert wf.reproducible(gog, "table2", trainable) == (True, None)


def test_untrainable_is_none_for_a_method_that_meets_the_contract(gog):
    assert wf.untrainable(gog) is None


# ----------------------------------------------------------------------------------------------- aliases, benches

def test_aliases_come_from_the_method_directories(specs):
    aliases = wf.method_aliases(wf.declarations(METHODS_DIR, method_names(), specs))
    alias = aliases["reproduce-table2"]
    assert (alias.method, alias.table, alias.default) == ("gog", "table2", True)
    assert alias.source == METHODS_DIR / "gog" / "method.yaml"
    assert wf.default_alias(aliases) == "reproduce-table2"
    assert wf.alias_table(alias, ["gog"]) == ("gog", "table2")
    assert "table2" in wf.alias_description(alias, specs)


def test_an_alias_of_a_method_config_leaves_out_is_declared_and_fails_when_asked_for(specs):
    only = {"simple_pose": specs["simple_pose"]}
    aliases = wf.method_aliases(wf.declarations(METHODS_DIR, method_names(), only))
    alias = aliases["reproduce-table2"]
    with pytest.raises(HarnessError, match=r"gog/method\.yaml: field targets\.reproduce-table2: .*"
                                           r"but config methods leaves gog out"):
        wf.alias_table(alias, list(only))
    assert "leaves gog out" in wf.alias_description(alias, only)


def declared(gog, **targets) -> dict:
    """gog's declaration, and a copy of it as method `other` (in other/method.yaml) with ``targets``."""
    raw = copy.deepcopy(gog.raw)
    raw["targets"] = targets
    return {"gog": (gog.source, gog.raw), "other": (Path("other/method.yaml"), raw)}


def test_an_alias_two_methods_declare_is_an_error_naming_both_files(gog):
    with pytest.raises(HarnessError) as err:
        wf.method_aliases(declared(gog, **{"reproduce-table2": "table1"}))
    assert str(gog.source) in str(err.value) and "other/method.yaml" in str(err.value)
    assert "targets.reproduce-table2" in str(err.value)


def test_two_default_targets_are_an_error_naming_both_files(gog):
    with pytest.raises(HarnessError, match=r"other/method\.yaml: field targets\.mine: default target, but "
                                           r".*gog/method\.yaml declares 'reproduce-table2'"):
        wf.method_aliases(declared(gog, mine={"table": "table1", "default": True}))


def test_bad_aliases_name_the_file_and_setting(gog):
    with pytest.raises(HarnessError, match=r"other/method\.yaml: field targets\.mine: unknown table 'nosuch'"):
        wf.method_aliases(declared(gog, mine="nosuch"))
    with pytest.raises(HarnessError, match=r"field targets\.reproduce-all: .* a target the workflow defines"):
        wf.method_aliases(declared(gog, **{"reproduce-all": "table1"}))
    assert wf.default_alias(wf.method_aliases({"other": declared(gog, mine="table1")["other"]})) is None


def test_bench_targets_per_method_and_declared_benches(specs):
    targets = wf.bench_targets(config(), LAYOUT, specs, trainable)
    assert targets[0] == "results/bench/evaluate/synthetic-coco/val.json"
    assert "results/bench/decode.json" in targets          # declared by gog (`benches: [decode]`)
    assert "results/bench/nms.json" in targets             # declared by posedet (`benches: [nms]`)
    for name, spec in specs.items():
        oracle = next(t for t in spec.tables().values() if t.kind == "oracle" and t.columns)
        data = wf.dataset_for(config(), oracle.dataset)
        assert f"results/bench/oracle/{data}/{name}/{oracle.columns[0]}/tiny.json" in targets
        trained = next(t for t in spec.tables().values() if t.kind == "trained" and t.columns)
        training = wf.training_of(spec, trained.columns[0])
        data = wf.dataset_for(config(), trained.dataset)
        assert f"results/bench/train/{data}/{name}/{training}/tiny.json" in targets
    assert "results/bench/crowd.json" in targets           # a top-down and a bottom-up method are selected
    assert wf.crowd_methods(specs) == ["simple_baseline", "gog"]
    assert len(targets) == 4 + 2 * len(specs)
    only = {"simple_pose": specs["simple_pose"]}
    assert "results/bench/decode.json" not in wf.bench_targets(config(), LAYOUT, only, trainable)
    assert "results/bench/crowd.json" not in wf.bench_targets(config(), LAYOUT, only, trainable)
    assert wf.crowd_methods({n: specs[n] for n in ("kcam", "simple_pose")}) == ["kcam", "simple_pose"]
    untrained = wf.bench_targets(config(), LAYOUT, only, lambda spec: "no model")
    assert not any("/train/" in f for f in untrained)


def test_a_declared_bench_may_not_shadow_a_generic_one(gog):
    raw = {**gog.raw, "benches": ["oracle"]}
    fake = type(gog)(name=gog.name, directory=gog.directory, paradigm=gog.paradigm, raw=raw)
    with pytest.raises(HarnessError, match=r"gog/method\.yaml: field benches: 'oracle'"):
        wf.method_benches({"gog": fake})
    assert wf.method_benches({"gog": gog}) == ["decode"]


# ----------------------------------------------------------------------------------------------- init


def test_a_training_that_starts_from_another_makes_its_checkpoint_an_input(tmp_path):
    import yaml

    from poseharness.methods import parse_method

    toy = REPO / "tests" / "fixtures" / "methods" / "toy" / "method.yaml"
    raw = yaml.safe_load(toy.read_text())
    raw["trainings"]["tuned"] = {"description": "base, then more steps", "init": {"from": "base", "freeze": []}}
    spec = parse_method(raw, tmp_path / "toy" / "method.yaml")
    assert wf.init_source(LAYOUT, spec, "base", "synthetic-coco", "tiny", "0") == []
    assert wf.init_source(LAYOUT, spec, "tuned", "synthetic-coco", "tiny", "0") == [
        "checkpoints/toy/synthetic-coco/base/tiny-seed0/final.pt"]
    raw["trainings"]["tuned"]["init"]["from"] = "bsae"
    spec = parse_method(raw, tmp_path / "toy" / "method.yaml")
    with pytest.raises(HarnessError, match=r"trainings\.tuned\.init\.from: 'bsae' names no other training of "
                                           r"method 'toy'"):
        wf.init_source(LAYOUT, spec, "tuned", "synthetic-coco", "tiny", "0")
    # a training of another method (a sibling directory) into a submodule: that method's checkpoint
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "method.yaml").write_text(yaml.safe_dump({**yaml.safe_load(toy.read_text()), "name": "src"}))
    raw["trainings"]["tuned"]["init"] = {"method": "src", "from": "base", "into": "inner"}
    spec = parse_method(raw, tmp_path / "toy" / "method.yaml")
    assert wf.init_source(LAYOUT, spec, "tuned", "synthetic-coco", "tiny", "0") == [
        "checkpoints/src/synthetic-coco/base/tiny-seed0/final.pt"]
