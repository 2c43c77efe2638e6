"""The poseharness DAG: one target per paper table, built from the method directories.

Every ``methods/*/method.yaml`` contributes its trainings (each model trained once per seed), its variants (a
training plus decoder settings, each scored on its training's model), its tables (one target
``reproduce-<method>-<table>`` each) and any alias targets (``targets:``) and benches (``benches:``) it declares.
A new method directory enters the DAG with no edit here. Every job runs a ``poseharness`` CLI verb with
``shell:``; which files each table needs is worked out in poseharness/workflow.py (workflow/rules/common.smk
binds it to this run's config).

    snakemake --cores all                           # the default target (an alias a method.yaml declares)
    snakemake --cores all oracle-all                # every representation's upper bound
    snakemake --cores all reproduce-all --config dataset=real scale=paper

Reruns: a training's job depends on its training config (``params.config_hash``), a prediction's job on its
variant's, so changing only a decoder setting in method.yaml re-scores that variant and retrains nothing
(Snakemake's ``params`` rerun trigger). See workflow/README.md.
"""
import os
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: os.path.join(workflow.basedir, "workflow", "config.yaml")


# The CLI finds methods/ and datasets/*.yaml under POSEHARNESS_ROOT (default: this checkout); exported, so every
# job (local or on a cluster node, which re-reads this file) agrees with the DAG.
os.environ["POSEHARNESS_ROOT"] = str(Path(os.environ.get("POSEHARNESS_ROOT") or workflow.basedir).resolve())

from poseharness.workflow import coerce_seeds

validate(coerce_seeds(config), "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"


wildcard_constraints:
    method=r"[A-Za-z0-9_]+",
    training=r"[A-Za-z0-9_]+",
    variant=r"[A-Za-z0-9_]+",
    dataset=r"[A-Za-z0-9_.\-]+",
    split=r"[A-Za-z0-9_\-]+",
    scale=r"[A-Za-z0-9_]+",
    seed=r"\d+",


include: "workflow/rules/datasets.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/oracle.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/bench.smk"


# ---------------------------------------------------------------------------------------------------------
# Targets. Each ends with `results collect` and `report`, so reports/index.html is up to date afterwards.
# ---------------------------------------------------------------------------------------------------------
for _method, _table in TABLES:

    rule:
        name:
            f"reproduce-{_method}-{_table}"
        localrule: True
        input:
            LAYOUT.table_done(_method, _table),


# Alias targets the method directories declare (method.yaml `targets:`), e.g. a paper's headline table; one of
# them may be the default target. Declared by every method directory, so asking for the alias of a method that
# config `methods` leaves out says so.
_DEFAULT = wf.default_alias(ALIASES)
for _alias in ALIASES.values():

    rule:
        name:
            _alias.name
        default_target: _alias.name == _DEFAULT
        localrule: True
        input:
            alias_inputs_of(_alias.name),

    workflow.get_rule(_alias.name).docstring = wf.alias_description(_alias, SPECS)


rule:
    """Every table of every selected method (trained tables only of methods that can be trained)."""
    name:
        "reproduce-all"
    default_target: _DEFAULT is None
    localrule: True
    input:
        lambda w: [f for m, t in TABLES if reproducible(m, t) for f in LAYOUT.table_done(m, t)],


rule:
    """Every oracle table: the upper bound of each representation, no training involved."""
    name:
        "oracle-all"
    localrule: True
    input:
        [f for m, t in TABLES if SPECS[m].tables()[t].kind == "oracle" for f in LAYOUT.table_done(m, t)],
