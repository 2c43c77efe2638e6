"""The DAG where users put it: folders with spaces in their names, and the README's own command.

A small DAG (the toy method's `ablation` table: one dataset, one 20-step training, its oracle, two predictions,
collect, report) runs with POSEHARNESS_DATA / _RESULTS / _REPORTS / _CHECKPOINTS all naming folders with a
space; every job must succeed and write its log where Snakemake says it is. Then the quick start's
`snakemake` from the project root must load the workflow profile (profiles/default), as workflow/README.md
says it does. Everything is written under pytest's tmp_path.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import yaml

from test_workflow import REPO, SNAKEFILE, assert_cli_accepts, planned_jobs, shell_commands, toy_root

CONFIG = ("size=tiny", "steps=5")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSEHARNESS_")}
    env.update(extra)
    return env


@pytest.mark.timeout(600)
def test_dag_runs_with_spaces_in_every_output_folder(tmp_path):
    root = toy_root(tmp_path, with_repo_methods=False)
    work = tmp_path / "work"
    work.mkdir()
    folders = {"POSEHARNESS_DATA": "data sets", "POSEHARNESS_RESULTS": "my results",
               "POSEHARNESS_REPORTS": "my reports", "POSEHARNESS_CHECKPOINTS": "check points"}
    env = clean_env(POSEHARNESS_ROOT=str(root), **{k: str(tmp_path / v) for k, v in folders.items()})
    before = set(tmp_path.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(work),
         "--workflow-profile", "none", "--cores", "2", "-p", "reproduce-toy-ablation", "--config", *CONFIG],
        env=env, capture_output=True, text=True, timeout=540)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    ran = {rule for rule, _ in planned_jobs(out)}
    assert {"prepare-synthetic-coco", "train", "oracle", "predict", "collect-toy-ablation",
            "report-toy-ablation"} <= ran, out

    # Every job's log is where Snakemake said (its `log:` line), inside the results folder; nothing was
    # written next to the folders (an unquoted `> {log}` redirects into a stray file named after the folder's
    # first word, e.g. `my`).
    logs = [Path(line.split(":", 1)[1].strip()) for line in out.splitlines() if re.match(r"^\s+log: ", line)]
    assert len(logs) >= len(ran) - 1, out                     # every job but the target rule has a log
    for log in logs:
        assert log.is_file(), (log, out)
        assert log.is_relative_to(tmp_path / "my results" / "logs"), log
    assert set(tmp_path.iterdir()) == before | {tmp_path / v for v in folders.values()}, sorted(tmp_path.iterdir())
    assert list((tmp_path / "check points").rglob("final.pt"))
    assert (tmp_path / "my reports" / "toy" / "ablation.html").is_file()
    assert (tmp_path / "my results" / "results.parquet").is_file()
    assert not (work / "results").exists() and not (work / "datasets").exists()


def test_every_rule_quotes_its_paths(tmp_path):
    # Every rule's command in a dry run (bench rules and a training that starts from another's final.pt
    # included), with every output folder named with a space: each path stays one shell word.
    root = toy_root(tmp_path, with_repo_methods=False)
    spec_file = root / "methods" / "toy" / "method.yaml"
    raw = yaml.safe_load(spec_file.read_text())
    raw["trainings"]["wide"]["init"] = {"from": "base"}
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    work = tmp_path / "work"
    work.mkdir()
    spaced = tmp_path / "a folder"
    env = clean_env(POSEHARNESS_ROOT=str(root), POSEHARNESS_DATA=str(spaced / "data sets"),
                    POSEHARNESS_RESULTS=str(spaced / "my results"), POSEHARNESS_REPORTS=str(spaced / "my reports"),
                    POSEHARNESS_CHECKPOINTS=str(spaced / "check points"))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(work),
         "--workflow-profile", "none", "-n", "-p", "reproduce-all", "bench-all", "--config", *CONFIG],
        env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    lines = [line[len("Shell command: "):] for line in out.splitlines()
             if line.startswith("Shell command: ") and line != "Shell command: None"]
    rules = {rule for rule, _ in planned_jobs(out)}
    assert {"train", "predict", "oracle", "bench_train", "bench_oracle", "bench_evaluate"} <= rules, rules
    assert any("--init-checkpoint" in line for line in lines), out
    path_flags = {">", "2>", "--out", "--summary", "--checkpoint", "--init-checkpoint"}
    seen = 0
    for line in lines:
        words = shlex.split(line)
        for flag, value in zip(words, words[1:]):
            if flag in path_flags:
                assert Path(value).is_relative_to(spaced), (flag, value, line)
                seen += 1
    assert seen >= 2 * len(lines) - 2, out        # every job: its log and its output (`report`: only the log)
    assert_cli_accepts(shell_commands(out))


def test_quick_start_command_loads_the_workflow_profile(tmp_path):
    # The README's `snakemake --cores all` from the project root (dry run, outputs under tmp_path): Snakemake
    # finds the profile next to the Snakefile and says so, and its settings apply (printshellcmds: every job's
    # command is listed, which a bare dry run does not do).
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "all", "-n", "--directory", str(tmp_path)],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Using workflow specific profile profiles/default for setting default command line arguments." in out
    assert "poseharness train --method" in out, out
    assert not (REPO / "workflow" / "profiles" / "default").exists()   # one default profile, not two


def test_slurm_profile_is_named_on_the_command_line(tmp_path):
    # The cluster profile is not the default: it sits under workflow/profiles/ and is named with
    # --workflow-profile (which replaces profiles/default, so its resources do not cap a cluster's GPUs).
    slurm = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
    assert slurm.is_file()
    assert "--workflow-profile workflow/profiles/slurm" in (REPO / "workflow" / "README.md").read_text()
    assert "--workflow-profile workflow/profiles/slurm" in slurm.read_text()
