# What every rule file shares: the selected methods, their tables, the output layout, and thin wrappers that
# bind the helpers of poseharness/workflow.py to this run's `config` (and to a job's wildcards). A HarnessError
# (bad spec, manifest or config) becomes a WorkflowError, which Snakemake prints as a message, not a traceback.
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from poseharness import workflow as wf
from poseharness.errors import HarnessError
from poseharness.methods import method_names
from poseharness.paths import methods_dir


def harness(call, *args, **kwargs):
    """``call(*args, **kwargs)`` with a HarnessError turned into a WorkflowError."""
    try:
        return call(*args, **kwargs)
    except HarnessError as exc:
        raise WorkflowError(str(exc)) from None


# Output folders: POSEHARNESS_RESULTS / _REPORTS / _CHECKPOINTS (default: the working directory's results/,
# reports/, checkpoints/), exported so every job (local or on a cluster node) agrees with the DAG on every path.
LAYOUT = wf.Layout.exported()
RESULTS, REPORTS, LOGS, BENCH = LAYOUT.results, LAYOUT.reports, LAYOUT.logs, LAYOUT.bench
CHECKPOINT, PREDICTIONS, ORACLE = LAYOUT.checkpoint, LAYOUT.predictions, LAYOUT.oracle


def spec(name: str):
    return harness(wf.spec, name)


def manifest(name: str):
    return harness(wf.manifest, name)


#: The method directories config `methods` selects, their specs and every (method, table) of them.
KNOWN_METHODS = method_names()
METHODS = harness(wf.select_methods, config, KNOWN_METHODS, methods_dir())
SPECS = {name: spec(name) for name in METHODS}
TABLES = wf.table_list(SPECS)
#: The datasets the selected tables run on (a prepare rule each); an unknown one fails here.
USED_DATASETS = harness(wf.used_datasets, config, SPECS)
#: Alias targets every method directory declares (`targets:`), and the benches the selected ones do.
ALIASES = harness(wf.method_aliases, harness(wf.declarations, methods_dir(), KNOWN_METHODS, SPECS))
BENCHES = harness(wf.method_benches, SPECS)
#: The top-down and bottom-up methods `bench crowd` compares (none unless both paradigms are selected).
CROWD_METHODS = wf.crowd_methods(SPECS)


def prepared(name: str, split: str) -> str:
    return harness(wf.prepared, config, name, split)


def data_flags(name: str, seed_flag: str = "--seed", seed: int | None = None) -> str:
    return harness(wf.data_flags, config, name, seed_flag, seed)


def training_of(method: str, variant: str) -> str:
    return harness(wf.training_of, spec(method), variant)


def per_scale(kind: str, scale: str) -> int:
    return wf.per_scale(config, kind, scale)


def gpus(kind: str, scale: str) -> int:
    return wf.gpus(config, kind, scale)


# Input and params functions of the rules (a job's wildcards in, a file list or a value out).
def train_launcher(wildcards) -> str:
    return wf.train_launcher(config, wildcards.scale)


def training_hash(wildcards) -> str:
    return harness(wf.training_hash, spec(wildcards.method), wildcards.training, wildcards.scale)


def init_source(wildcards) -> list[str]:
    return harness(wf.init_source, LAYOUT, spec(wildcards.method), wildcards.training, wildcards.dataset,
                   wildcards.scale, wildcards.seed)


def variant_hash(wildcards) -> str:
    return harness(wf.variant_hash, spec(wildcards.method), wildcards.variant, wildcards.scale)


def oracle_hash(wildcards) -> str:
    return harness(wf.oracle_hash, spec(wildcards.method), wildcards.training, wildcards.scale)


def oracle_variants(wildcards) -> list[str]:
    return wf.oracle_variants(spec(wildcards.method), wildcards.training)


def detection_files(method: str, variants: list[str]) -> list[str]:
    return harness(wf.detection_files, spec(method), variants)


def table_inputs_of(method: str, table: str):
    """A table's input function. A factory, so each rule generated in a loop keeps its own (method, table)."""
    return lambda wildcards: harness(wf.table_inputs, config, LAYOUT, spec(method), table)


def alias_inputs_of(alias: str):
    """An alias target's input function: its table's pages and collect output, or an error naming the
    method.yaml that declares it when config `methods` leaves that method out."""
    return lambda wildcards: LAYOUT.table_done(*harness(wf.alias_table, ALIASES[alias], METHODS))


def reproducible(method: str, table: str) -> bool:
    """Whether `reproduce-all` includes the table; a skipped trained table says why."""
    ok, reason = harness(wf.reproducible, spec(method), table)
    if not ok:
        logger.warning(f"reproduce-all: skipping {method}/{table} (trained table): {reason}")
    return ok


def bench_targets(wildcards) -> list[str]:
    return harness(wf.bench_targets, config, LAYOUT, SPECS)
