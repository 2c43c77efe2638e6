"""The poseharness DAG: one target per paper table, built from the method directories.

Every ``methods/*/method.yaml`` contributes its trainings (each model trained once per seed), its variants (a
training plus decoder settings, each scored on its training's model) and its tables (one target
``reproduce-<method>-<table>`` each). A new method directory enters the DAG with no edit here. Every job runs a
``poseharness`` CLI verb with ``shell:``; this file only works out which files each table needs.

    snakemake --cores all reproduce-table2          # GOG Table 2 on the synthetic stand-in, tiny scale
    snakemake --cores all oracle-all                # every representation's upper bound
    snakemake --cores all reproduce-all --config dataset=real scale=paper

Reruns: a training's job depends on its training config (``params.config_hash``), a prediction's job on its
variant's, so changing only a decoder setting in method.yaml re-scores that variant and retrains nothing
(Snakemake's ``params`` rerun trigger). See workflow/README.md.
"""
import functools
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: os.path.join(workflow.basedir, "workflow", "config.yaml")


# `--config seeds=[0,1]` reaches us as ['0', '1']: Snakemake reads --config lists with YAML's BaseLoader,
# which keeps every scalar a string. Digit strings become the integers the schema asks for.
if isinstance(config.get("seeds"), list):
    config["seeds"] = [int(s) if isinstance(s, str) and s.isdigit() else s for s in config["seeds"]]

validate(config, "workflow/schemas/config.schema.yaml")


# ---------------------------------------------------------------------------------------------------------
# Where things live. The CLI finds methods/ and datasets/*.yaml under POSEHARNESS_ROOT (default: this
# checkout) and writes under POSEHARNESS_DATA / _RESULTS / _REPORTS / _CHECKPOINTS (default: the working
# directory's datasets/, results/, reports/, checkpoints/). They are exported here, so every job (local or on
# a cluster node, which re-reads this file) agrees with the DAG on every path.
# ---------------------------------------------------------------------------------------------------------
ROOT = Path(os.environ.get("POSEHARNESS_ROOT") or workflow.basedir).resolve()
os.environ["POSEHARNESS_ROOT"] = str(ROOT)


def _place(env: str, default: str) -> str:
    """The folder ``$env`` names (default: ``default`` in the working directory), exported absolute; returned
    relative to the working directory when inside it, so job listings stay short."""
    path = Path(os.environ.get(env) or default).resolve()
    os.environ[env] = str(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


_place("POSEHARNESS_DATA", "datasets")        # dataset files: their paths come from the manifests
RESULTS = _place("POSEHARNESS_RESULTS", "results")
REPORTS = _place("POSEHARNESS_REPORTS", "reports")
CHECKPOINTS = _place("POSEHARNESS_CHECKPOINTS", "checkpoints")
LOGS = f"{RESULTS}/logs"

from poseharness.data.manifest import load_manifest
from poseharness.data.synthetic import STAMP as SYNTHETIC_STAMP
from poseharness.errors import HarnessError
from poseharness.methods import load_method, method_names
from poseharness.provenance import config_hash


def _rel(path) -> str:
    """``path`` relative to the working directory when inside it (as the rules' own patterns are)."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def harness(call, *args, **kwargs):
    """``call(*args)`` with a HarnessError (bad spec, manifest or config) turned into a WorkflowError, which
    Snakemake prints as a message rather than a traceback."""
    try:
        return call(*args, **kwargs)
    except HarnessError as exc:
        raise WorkflowError(str(exc)) from None


# ---------------------------------------------------------------------------------------------------------
# Methods: every method directory, or the configured ones
# ---------------------------------------------------------------------------------------------------------
@functools.cache
def spec(name: str):
    return harness(load_method, name)


KNOWN_METHODS = method_names()
_wanted = config["methods"]
METHODS = KNOWN_METHODS if _wanted == "all" else ([_wanted] if isinstance(_wanted, str) else list(_wanted))
_unknown = [m for m in METHODS if m not in KNOWN_METHODS]
if _unknown:
    raise WorkflowError(f"config methods: unknown method(s) {', '.join(_unknown)}; the method directories under "
                        f"{ROOT / 'methods'} are: {', '.join(KNOWN_METHODS) or 'none'}")
SPECS = {name: spec(name) for name in METHODS}

SCALE = config["scale"]
ORACLE_SCALE = config["oracle_scale"] or SCALE
SEEDS = config["seeds"]


@functools.cache
def untrainable(method: str) -> str | None:
    """None when the method's module meets the method contract (so it can be trained), else the contract's
    reason. Imports the module (and torch), so only DAGs that hold trained tables pay for it."""
    from poseharness.contract import method_module

    try:
        method_module(spec(method))
    except HarnessError as exc:
        return str(exc)
    return None


def training_hash(method: str, training: str, scale: str) -> str:
    """What decides a trained model (defaults ⊕ scale ⊕ training; no decoder settings)."""
    return config_hash(harness(spec(method).training_config, training, scale))


def variant_hash(method: str, variant: str, scale: str) -> str:
    """What decides a scored row: its training's config plus its decoder settings."""
    return config_hash(harness(spec(method).variant_config, variant, scale))


def training_of(method: str, variant: str) -> str:
    return harness(spec(method)._pick, "variants", variant)["training"]


def check_scale(method: str, scale: str) -> None:
    if scale not in spec(method).scales:
        raise WorkflowError(f"{spec(method).source}: method {method!r} has no scale {scale!r} "
                            f"(known: {', '.join(spec(method).scales)}); set --config scale=...")


# ---------------------------------------------------------------------------------------------------------
# Datasets: the paper's dataset family of a table -> the configured manifest
# ---------------------------------------------------------------------------------------------------------
def dataset_for(family: str) -> str:
    """The manifest a table on ``family`` (coco | crowdpose | ochuman) runs on (config `dataset`/`datasets`)."""
    choice = config["dataset"]
    if choice is None:
        return config["datasets"][family]
    return family if choice == "real" else choice


@functools.cache
def manifest(name: str):
    return harness(load_manifest, name)


def data_size(name: str) -> str:
    return harness(manifest(name).resolve_size, config["size"])


def data_seed(name: str) -> int:
    """Synthetic sets: the generator seed; real sets: 0 (what the oracle's records and files are keyed by)."""
    m = manifest(name)
    if not m.synthetic:
        return 0
    return m.seed if config["data_seed"] is None else config["data_seed"]


def data_flags(name: str, seed_flag: str = "--seed", seed: int | None = None) -> str:
    """The CLI flags that pick the configured synthetic set (generator seed ``seed``, default the configured
    one); none for a real set."""
    if not manifest(name).synthetic:
        return ""
    return f"--size {data_size(name)} {seed_flag} {data_seed(name) if seed is None else seed}"


def prepared(name: str, split: str) -> str:
    """The file that says ``split`` of dataset ``name`` is ready: a synthetic set's stamp (written last, after
    every split), or a real split's annotation file."""
    m = manifest(name)
    harness(m.split, split)
    if m.synthetic:
        return _rel(m.root(data_size(name), data_seed(name)) / SYNTHETIC_STAMP)
    return _rel(m.annotation_path(split))


# ---------------------------------------------------------------------------------------------------------
# Files of the DAG (wildcard patterns; the rules' outputs)
# ---------------------------------------------------------------------------------------------------------
wildcard_constraints:
    method=r"[A-Za-z0-9_]+",
    training=r"[A-Za-z0-9_]+",
    variant=r"[A-Za-z0-9_]+",
    dataset=r"[A-Za-z0-9_.\-]+",
    split=r"[A-Za-z0-9_\-]+",
    scale=r"[A-Za-z0-9_]+",
    seed=r"\d+",


CHECKPOINT = f"{CHECKPOINTS}/{{method}}/{{dataset}}/{{training}}/{{scale}}-seed{{seed}}/final.pt"
PREDICTIONS = f"{RESULTS}/predictions/trained/{{dataset}}/{{split}}/{{method}}/{{variant}}/{{scale}}-seed{{seed}}.json"
ORACLE = f"{RESULTS}/oracle/{{dataset}}/{{split}}/{{method}}/{{training}}/{{scale}}-seed{{seed}}.json"
COLLECTED = f"{RESULTS}/collected/{{method}}-{{table}}.txt"


def report_files(method: str, table: str) -> list[str]:
    """What `poseharness report` writes for one table (besides plots, drawn only when there is data)."""
    return [f"{REPORTS}/{method}/{table}.html", f"{REPORTS}/{method}/{table}.md"]


def table_done(method: str, table: str) -> list[str]:
    """What a table target asks for: its pages and its own collect job's output. The pages alone would not do:
    every report job re-renders the whole report, so another table's job leaves this table's pages behind (with
    "not run" cells), and Snakemake does not rerun a job whose outputs exist because an input upstream is
    missing. Only this table's collect job writes its ``COLLECTED`` file, after all its records exist."""
    return report_files(method, table) + [COLLECTED.format(method=method, table=table)]


def table_spec(method: str, table: str):
    tables = spec(method).tables()
    if table not in tables:
        raise WorkflowError(f"{spec(method).source}: method {method!r} has no table {table!r}")
    return tables[table]


def table_inputs(method: str, table: str) -> list[str]:
    """Every file a table's figures come from: one oracle summary per training its columns decode (its variants
    share that training's encoding), and for a trained table also the predictions of each (column, seed). A
    trained table's oracle runs at the table's own scale, dataset and split, so each reproduced figure has the
    bound of its representation at the same input size beside it."""
    t = table_spec(method, table)
    if not t.columns:
        return []           # published numbers only (e.g. a test-dev table): nothing to compute
    dataset = dataset_for(t.dataset)
    harness(manifest(dataset).split, t.split)
    where = f"{spec(method).source}: table {table}"
    trainings = list(dict.fromkeys(training_of(method, v) for v in t.columns))

    def oracles(scale: str) -> list[str]:
        return [ORACLE.format(dataset=dataset, split=t.split, method=method, training=tr, scale=scale,
                              seed=data_seed(dataset)) for tr in trainings]

    if t.kind == "oracle":
        check_scale(method, ORACLE_SCALE)
        return oracles(ORACLE_SCALE)
    reason = untrainable(method)
    if reason is not None:
        raise WorkflowError(f"{where}: method {method!r} cannot be trained yet, so its trained tables cannot be "
                            f"reproduced: {reason}")
    check_scale(method, SCALE)
    for v in t.columns:
        training = training_of(method, v)
        if spec(method).trainings[training].get("oracle_only"):
            raise WorkflowError(f"{where}: column {v!r} decodes training {training!r}, which is oracle_only "
                                f"(never trained); it belongs in an oracle table")
    return [PREDICTIONS.format(dataset=dataset, split=t.split, method=method, variant=v, scale=SCALE, seed=s)
            for v in t.columns for s in SEEDS] + oracles(SCALE)


def reproducible(method: str, table: str) -> bool:
    """Whether `reproduce-all` includes the table: oracle tables always, trained ones when the method's
    module meets the contract (a method directory may ship its representation before its model)."""
    if table_spec(method, table).kind == "oracle" or not table_spec(method, table).columns:
        return True
    reason = untrainable(method)
    if reason is not None:
        logger.warning(f"reproduce-all: skipping {method}/{table} (trained table): {reason}")
    return reason is None


def table_inputs_of(method: str, table: str):
    """``table_inputs`` as an input function. A factory, so each rule generated in a loop keeps its own
    (method, table) rather than the loop's last one."""
    return lambda wildcards: table_inputs(method, table)


def splits_needed(name: str) -> list[str]:
    """The splits of dataset ``name`` the selected tables read, evaluation splits first, then `train` when a
    trained table runs on it."""
    splits, trained = [], False
    for m, t in TABLES:
        table = SPECS[m].tables()[t]
        if table.columns and dataset_for(table.dataset) == name:
            splits.append(table.split)
            trained = trained or table.kind == "trained"
    if trained:
        splits.append("train")
    return [s for s in dict.fromkeys(splits) if s in manifest(name).splits]


def per_scale(kind: str, scale: str) -> int:
    """Threads of a train / predict job (config `threads`): the paper setting for scale paper, else tiny's."""
    return config["threads"][kind]["paper" if scale == "paper" else "tiny"]


def gpus(kind: str, scale: str) -> int:
    """The `gpu` resource of a job: config `gpus` per training and one per prediction at scale paper; none at
    any smaller scale (a tiny model trains on a CPU in minutes)."""
    if scale != "paper":
        return 0
    return config["gpus"] if kind == "train" else 1


def train_launcher(wildcards) -> str:
    """`poseharness`, or torchrun with one process per GPU (DDP on one node) for a multi-GPU training."""
    n = gpus("train", wildcards.scale)
    return f"torchrun --standalone --nproc_per_node={n} -m poseharness" if n > 1 else "poseharness"


def oracle_variants(method: str, training: str) -> list[str]:
    """Every variant that decodes ``training``: one oracle job encodes once and decodes each."""
    return [v for v, entry in spec(method).variants.items() if entry["training"] == training]


BENCH = f"{RESULTS}/bench"


def bench_targets(wildcards) -> list[str]:
    """One of each bench per selected method: its first oracle column, its first trained column's training
    (when the method can be trained); evaluation on the COCO stand-in; GOG's decoder bench when GOG is in."""
    dataset = dataset_for("coco")
    out = [f"{BENCH}/evaluate/{dataset}/val.json"]
    if "gog" in METHODS:
        out.append(f"{BENCH}/decode.json")      # `bench decode` times GOG's own decoder stages
    for m in METHODS:
        tables = [t for t in SPECS[m].tables().values() if t.columns]
        oracle = next((t for t in tables if t.kind == "oracle"), None)
        if oracle is not None:
            out.append(f"{BENCH}/oracle/{dataset_for(oracle.dataset)}/{m}/{oracle.columns[0]}/{ORACLE_SCALE}.json")
        trained = next((t for t in tables if t.kind == "trained"), None)
        if trained is not None and untrainable(m) is None:
            training = training_of(m, trained.columns[0])
            out.append(f"{BENCH}/train/{dataset_for(trained.dataset)}/{m}/{training}/{SCALE}.json")
    return out


#: Every (method, table) of the selected methods, in method then table order.
TABLES = [(m, t) for m in METHODS for t in SPECS[m].tables()]

#: The datasets the selected tables run on (a prepare rule each).
USED_DATASETS = sorted({dataset_for(SPECS[m].tables()[t].dataset) for m, t in TABLES
                        if SPECS[m].tables()[t].columns})
for _name in USED_DATASETS:
    manifest(_name)         # an unknown dataset in the config fails here, before any rule runs


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
            table_done(_method, _table),


def _table2(wildcards):
    if "gog" not in METHODS:
        raise WorkflowError("reproduce-table2 is GOG's Table 2, but config methods leaves gog out")
    return table_done("gog", "table2")


rule:
    """GOG Table 2 (the encoding-decoding ablation): the headline target."""
    name:
        "reproduce-table2"
    default_target: True
    localrule: True
    input:
        _table2,


rule:
    """Every table of every selected method (trained tables only of methods that can be trained)."""
    name:
        "reproduce-all"
    localrule: True
    input:
        lambda w: [f for m, t in TABLES if reproducible(m, t) for f in table_done(m, t)],


rule:
    """Every oracle table: the upper bound of each representation, no training involved."""
    name:
        "oracle-all"
    localrule: True
    input:
        [f for m, t in TABLES if SPECS[m].tables()[t].kind == "oracle" for f in table_done(m, t)],
