"""The Snakemake DAG (Snakefile, workflow/) under real Snakemake.

Dry runs on temporary working directories show which jobs each target schedules, and every command they would
run is parsed by the CLI's own argument parser. Rerun decisions are checked on a DAG whose outputs are marked
done with ``snakemake --touch`` (which records each job's params, as a real run does), then edited. Snakemake
runs in a subprocess with ``--directory`` a temporary folder, so nothing is written into the repo.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from poseharness.cli import build_parser
from poseharness.methods import load_method, method_names

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
TOY = REPO / "tests" / "fixtures" / "methods" / "toy"


def snakemake(workdir: Path, *args: str, root: Path | None = None, check: bool = True
              ) -> subprocess.CompletedProcess:
    """Run Snakemake on the repo's Snakefile in ``workdir``; ``root`` replaces the project root (methods/,
    datasets/*.yaml). POSEHARNESS_* settings of the calling shell are dropped: every path is the workdir's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSEHARNESS_")}
    if root is not None:
        env["POSEHARNESS_ROOT"] = str(root)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
         "--workflow-profile", "none", *args],
        env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a dry run lists, from its ``rule NAME:`` / ``wildcards:`` lines."""
    jobs: list[tuple[str, dict[str, str]]] = []
    for line in output.splitlines():
        head = re.match(r"^(?:local)?rule (\S+):$", line)
        if head:
            jobs.append((head.group(1), {}))
            continue
        wild = re.match(r"^\s+wildcards: (.*)$", line)
        if wild and jobs:
            jobs[-1][1].update(dict(item.split("=", 1) for item in wild.group(1).split(", ")))
    return jobs


def dry_run(workdir: Path, target: str, *config: str, root: Path | None = None) -> list[tuple[str, dict]]:
    return planned_jobs(dry_run_text(workdir, target, *config, root=root))


def dry_run_text(workdir: Path, targets: str, *config: str, root: Path | None = None) -> str:
    args = ["-n", "-p", *targets.split()] + (["--config", *config] if config else [])
    proc = snakemake(workdir, *args, root=root)
    return proc.stdout + proc.stderr


def shell_commands(text: str) -> list[list[str]]:
    """The `poseharness` commands a dry run (``-p``) lists, as argument lists (output redirections and the
    program name dropped); `a && b` gives two."""
    out = []
    for line in text.splitlines():
        if line.startswith("Shell command: ") and line != "Shell command: None":      # None: a target rule
            for part in line[len("Shell command: "):].split(" && "):
                words = shlex.split(part)
                words = words[:next((i for i, w in enumerate(words) if w in (">", "2>")), len(words))]
                assert words[0] == "poseharness", part
                out.append(words[1:])
    return out


def assert_cli_accepts(commands: list[list[str]]) -> None:
    """Every command parses with the CLI's parser: a flag the rules use and the CLI lacks fails here."""
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            raise AssertionError(f"the CLI rejects a workflow command: poseharness {shlex.join(argv)}") from None


def counts(jobs) -> Counter:
    return Counter(rule for rule, _ in jobs)


# ----------------------------------------------------------------------------------------------------------
# The repo's own methods
# ----------------------------------------------------------------------------------------------------------

def test_table2_trains_each_model_once_and_scores_every_variant(tmp_path):
    text = dry_run_text(tmp_path, "reproduce-table2")
    jobs = planned_jobs(text)
    assert counts(jobs) == Counter({"prepare-synthetic-coco": 1, "train": 2, "predict": 6, "oracle": 2,
                                    "collect-gog-table2": 1, "report-gog-table2": 1, "reproduce-table2": 1})
    trained = [w for rule, w in jobs if rule == "train"]
    assert sorted(w["training"] for w in trained) == ["precise", "qnt"]
    assert {(w["dataset"], w["scale"], w["seed"]) for w in trained} == {("synthetic-coco", "tiny", "0")}
    # The oracle of each training, at the table's own scale, dataset and split: the bound beside each figure.
    oracles = [w for rule, w in jobs if rule == "oracle"]
    assert sorted(w["training"] for w in oracles) == ["precise", "qnt"]
    assert {(w["dataset"], w["split"], w["scale"], w["seed"]) for w in oracles} == {("synthetic-coco", "val",
                                                                                     "tiny", "0")}
    table2 = load_method("gog").tables()["table2"]
    scored = sorted(w["variant"] for rule, w in jobs if rule == "predict")
    assert scored == sorted(table2.columns)
    commands = shell_commands(text)
    assert Counter(c[0] for c in commands) == Counter({"data": 1, "train": 2, "predict": 6, "oracle": 2,
                                                       "results": 1, "report": 1})
    assert_cli_accepts(commands)


def test_config_overrides_pick_dataset_seeds_and_size(tmp_path):
    # --config lists arrive as strings (YAML BaseLoader); the Snakefile turns seeds into integers.
    jobs = dry_run(tmp_path, "reproduce-table2", "seeds=[0,1]", "dataset=synthetic-crowdpose", "size=tiny")
    trained = [w for rule, w in jobs if rule == "train"]
    assert sorted((w["training"], w["seed"]) for w in trained) == [
        ("precise", "0"), ("precise", "1"), ("qnt", "0"), ("qnt", "1")]
    assert {w["dataset"] for rule, w in jobs if rule in ("train", "predict")} == {"synthetic-crowdpose"}
    assert counts(jobs)["predict"] == 12
    assert counts(jobs)["prepare-synthetic-crowdpose"] == 1
    # One oracle job per training whatever the seeds (the oracle has no model seed), on the same dataset.
    assert sorted((w["training"], w["dataset"]) for rule, w in jobs if rule == "oracle") == [
        ("precise", "synthetic-crowdpose"), ("qnt", "synthetic-crowdpose")]


def test_oracle_all_runs_every_oracle_table_and_trains_nothing(tmp_path):
    # bench-all rides along: its commands are checked against the CLI too; its jobs are bench_* rules.
    text = dry_run_text(tmp_path, "oracle-all bench-all")
    jobs = planned_jobs(text)
    c = counts(jobs)
    assert c["train"] == 0 and c["predict"] == 0
    # One oracle job per (method, training) that an oracle table's columns decode, on that table's dataset.
    expected = set()
    for name in method_names():
        spec = load_method(name)
        for table in spec.tables().values():
            if table.kind == "oracle" and table.columns:
                expected |= {(name, spec.variants[v]["training"], f"synthetic-{table.dataset}")
                             for v in table.columns}
                assert c[f"collect-{name}-{table.name}"] == 1 and c[f"report-{name}-{table.name}"] == 1
    got = [(w["method"], w["training"], w["dataset"]) for rule, w in jobs if rule == "oracle"]
    assert len(got) == len(set(got)) and set(got) == expected
    commands = shell_commands(text)
    assert len([c for c in commands if c[0] == "oracle"]) == len(expected)
    declared = {b for name in method_names() for b in load_method(name).raw.get("benches", [])}
    assert {"decode", "nms"} <= declared          # gog's decoder stages, posedet's pose NMS
    assert {c[1] for c in commands if c[0] == "bench"} == {"evaluate", "oracle", "train", "crowd"} | declared
    assert_cli_accepts(commands)
    # Both methods' oracle tables are in, simple_pose's on COCO and OCHuman stand-ins.
    assert ("simple_pose", "paf", "synthetic-ochuman") in expected
    assert ("gog", "limbs44_r1", "synthetic-coco") in expected


def test_a_table_page_written_by_another_tables_report_job_does_not_mark_its_target_done(tmp_path):
    # `poseharness report` re-renders every page, so one table's report job leaves the other tables' pages
    # ("not run" cells) behind. Those pages are the other targets' declared files: the targets must still run
    # their oracle / prediction jobs, which only a finished collect job of their own table marks as done.
    for table in ("oracle", "table1"):
        for page in ("html", "md"):
            path = tmp_path / "reports" / "simple_pose" / f"{table}.{page}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("not run\n")
    c = counts(dry_run(tmp_path, "reproduce-simple_pose-oracle"))
    assert c["oracle"] == 3 and c["collect-simple_pose-oracle"] == 1 and c["report-simple_pose-oracle"] == 1
    c = counts(dry_run(tmp_path, "reproduce-simple_pose-table1"))
    assert c["train"] == c["predict"] == c["oracle"] == len(load_method("simple_pose").tables()["table1"].columns)


def test_bad_config_value_is_rejected_with_the_key_and_value(tmp_path):
    proc = snakemake(tmp_path, "-n", "reproduce-table2", "--config", "scale=huge", check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "'huge' is not one of ['tiny', 'paper']" in text
    assert "scale" in text
    proc = snakemake(tmp_path, "-n", "oracle-all", "--config", "methods=[gog,nosuch]", check=False)
    assert proc.returncode != 0
    assert "unknown method(s) nosuch" in proc.stdout + proc.stderr


# ----------------------------------------------------------------------------------------------------------
# A new method directory: the toy fixture with three tables, in a temporary project root
# ----------------------------------------------------------------------------------------------------------

def toy_root(tmp_path: Path, *, with_repo_methods: bool) -> Path:
    """A project root whose methods/ holds a copy of the toy method with two trained tables and an oracle table
    (and links to the repo's methods when asked); datasets/ links the repo's manifests. The workflow files are
    the repo's, untouched."""
    root = tmp_path / "root"
    (root / "methods").mkdir(parents=True)
    if with_repo_methods:
        for name in method_names():
            (root / "methods" / name).symlink_to(REPO / "methods" / name)
    shutil.copytree(TOY, root / "methods" / "toy")
    spec_file = root / "methods" / "toy" / "method.yaml"
    raw = yaml.safe_load(spec_file.read_text())
    raw["tables"] = {
        "ablation": {"caption": "toy decoders", "kind": "trained", "dataset": "coco", "metrics": ["AP"],
                     "columns": ["top1", "top1_flip"], "paper": {}},
        "widths": {"caption": "toy widths", "kind": "trained", "dataset": "coco", "metrics": ["AP"],
                   "columns": ["top1", "wide"], "paper": {}},
        "bound": {"caption": "toy oracle", "kind": "oracle", "dataset": "coco", "metrics": ["AP"],
                  "columns": ["oracle", "top1"], "paper": {}},
    }
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    (root / "datasets").symlink_to(REPO / "datasets")
    return root


def test_new_method_directory_joins_the_dag(tmp_path):
    root = toy_root(tmp_path, with_repo_methods=True)
    work = tmp_path / "work"
    work.mkdir()
    listed = snakemake(work, "--list-target-rules", root=root).stdout.split()
    assert {"reproduce-toy-ablation", "reproduce-toy-widths", "reproduce-toy-bound", "report-toy-bound",
            "reproduce-gog-table2", "reproduce-all", "oracle-all", "report"} <= set(listed)
    jobs = dry_run(work, "reproduce-all", "methods=[toy]", root=root)
    c = counts(jobs)
    # Each model trained once, each variant scored once, though `top1` is a column of two tables.
    assert sorted(w["training"] for rule, w in jobs if rule == "train") == ["base", "wide"]
    assert sorted(w["variant"] for rule, w in jobs if rule == "predict") == ["top1", "top1_flip", "wide"]
    # One oracle job per training any table decodes (`oracle`, never trained, for the oracle table; `base` and
    # `wide` also for the trained tables), shared between tables at one scale.
    assert sorted(w["training"] for rule, w in jobs if rule == "oracle") == ["base", "oracle", "wide"]
    assert c["reproduce-all"] == 1
    assert c["report-toy-ablation"] == c["report-toy-widths"] == c["report-toy-bound"] == 1


def mark_done(workdir: Path, target: str, *config: str, root: Path) -> None:
    """Make ``target``'s DAG up to date without running it, as a real run leaves it: ``snakemake --touch`` on the
    missing outputs records each job's params (and lists the outputs); empty files stand in for them, and a
    second ``--touch`` stamps them in DAG order."""
    proc = snakemake(workdir, "--touch", "--cores", "1", target, "--config", *config, root=root)
    outputs = [name for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("    output: ")
               for name in line[len("    output: "):].split(", ")]
    assert outputs
    for name in outputs:
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).touch()
    snakemake(workdir, "--touch", "--cores", "1", target, "--config", *config, root=root)


def test_decoder_edit_rescores_without_retraining(tmp_path):
    root = toy_root(tmp_path, with_repo_methods=False)
    work = tmp_path / "work"
    work.mkdir()
    mark_done(work, "reproduce-all", "size=tiny", root=root)
    again = snakemake(work, "-n", "reproduce-all", "--config", "size=tiny", root=root)
    assert "Nothing to be done" in again.stdout + again.stderr

    spec_file = root / "methods" / "toy" / "method.yaml"
    raw = yaml.safe_load(spec_file.read_text())
    raw["variants"]["top1_flip"]["decode"]["threshold"] = 0.25       # a decoder setting of one variant
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    jobs = dry_run(work, "reproduce-all", "size=tiny", root=root)
    c = counts(jobs)
    assert c["train"] == 0
    assert [w["variant"] for rule, w in jobs if rule == "predict"] == ["top1_flip"]
    # The oracle job of `base` decodes every variant of it, top1_flip included; the `oracle` training's does not.
    assert [w["training"] for rule, w in jobs if rule == "oracle"] == ["base"]
    # `widths` re-renders only because it reads that oracle summary too (its top1 column's bound); cheap.
    assert c["report-toy-ablation"] == c["report-toy-bound"] == c["report-toy-widths"] == 1

    raw["trainings"]["wide"]["model"]["channels"] = 12                  # what decides one trained model
    raw["variants"]["top1_flip"]["decode"]["threshold"] = 0.0          # and the decoder back as it was
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    jobs = dry_run(work, "reproduce-all", "size=tiny", root=root)
    assert [w["training"] for rule, w in jobs if rule == "train"] == ["wide"]
    assert [w["variant"] for rule, w in jobs if rule == "predict"] == ["wide"]
    # The oracle of `wide` (its records hold the variant's whole config) runs again, cheaply; no other.
    assert [w["training"] for rule, w in jobs if rule == "oracle"] == ["wide"]
    # A data setting (the synthetic set's size) re-runs every model and oracle.
    jobs = dry_run(work, "reproduce-all", "size=default", root=root)
    assert counts(jobs)["train"] == 2 and counts(jobs)["oracle"] == 3
