"""What the Snakemake workflow (``Snakefile``, ``workflow/rules/*.smk``) works out, as plain functions.

Every function takes what it reads as arguments (the workflow ``config`` dict, a :class:`Layout` of the output
folders, loaded :class:`~poseharness.methods.MethodSpec` objects) and raises
:class:`~poseharness.errors.HarnessError` naming the file and setting at fault; ``workflow/rules/common.smk``
binds them to Snakemake's ``config`` and wildcards and turns those errors into ``WorkflowError``. Nothing here
names a method: what is particular to one (an alias target such as ``reproduce-table2``, a bench of its own code)
is declared in its ``method.yaml`` (``targets:``, ``benches:``).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import yaml

from . import paths
from .data.manifest import Manifest, load_manifest
from .data.synthetic import STAMP as SYNTHETIC_STAMP
from .errors import HarnessError
from .methods import MethodSpec, TableSpec, init_entry, load_method
from .provenance import config_hash

#: Target rules the workflow defines itself; no method may declare an alias of these names.
BUILTIN_TARGETS = ("reproduce-all", "oracle-all", "bench-all", "report")
#: Benches with a rule of their own in bench.smk (per method or dataset); no method may declare these.
GENERIC_BENCHES = ("evaluate", "oracle", "train", "crowd")
#: The methods `bench crowd` compares by default (a top-down and a bottom-up one), when config selects them.
CROWD_METHODS = ("simple_baseline", "gog")

Untrainable = Callable[[MethodSpec], "str | None"]


# ---------------------------------------------------------------------------------------------------------
# Config and places
# ---------------------------------------------------------------------------------------------------------
def coerce_seeds(config: dict) -> dict:
    """``config`` with digit-string seeds as integers. ``--config seeds=[0,1]`` arrives as ['0', '1']:
    Snakemake reads --config lists with YAML's BaseLoader, which keeps every scalar a string."""
    seeds = config.get("seeds")
    if isinstance(seeds, list):
        config["seeds"] = [int(s) if isinstance(s, str) and s.isdigit() else s for s in seeds]
    return config


def relative(path: str | Path) -> str:
    """``path`` relative to the working directory when inside it (as the rules' own patterns are)."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def export_dir(env: str, default: str) -> str:
    """The folder ``$env`` names (default: ``default`` in the working directory), exported absolute so every job
    agrees with the DAG; returned relative to the working directory when inside it."""
    path = Path(os.environ.get(env) or default).resolve()
    os.environ[env] = str(path)
    return relative(path)


@dataclass(frozen=True)
class Layout:
    """Where the DAG's files go: the results store, the report and the checkpoints (paths as the rules write
    them), and the wildcard patterns of the rules' outputs."""
    results: str = "results"
    reports: str = "reports"
    checkpoints: str = "checkpoints"

    @classmethod
    def exported(cls) -> "Layout":
        """The layout of ``POSEHARNESS_RESULTS`` / ``_REPORTS`` / ``_CHECKPOINTS`` (each exported, see
        :func:`export_dir`); ``POSEHARNESS_DATA`` is exported too (dataset paths come from the manifests)."""
        export_dir("POSEHARNESS_DATA", "datasets")
        return cls(export_dir("POSEHARNESS_RESULTS", "results"), export_dir("POSEHARNESS_REPORTS", "reports"),
                   export_dir("POSEHARNESS_CHECKPOINTS", "checkpoints"))

    @property
    def logs(self) -> str:
        return f"{self.results}/logs"

    @property
    def bench(self) -> str:
        return f"{self.results}/bench"

    @property
    def checkpoint(self) -> str:
        return f"{self.checkpoints}/{{method}}/{{dataset}}/{{training}}/{{scale}}-seed{{seed}}/final.pt"

    @property
    def predictions(self) -> str:
        return (f"{self.results}/predictions/trained/{{dataset}}/{{split}}/{{method}}/{{variant}}/"
                f"{{scale}}-seed{{seed}}.json")

    @property
    def oracle(self) -> str:
        return f"{self.results}/oracle/{{dataset}}/{{split}}/{{method}}/{{training}}/{{scale}}-seed{{seed}}.json"

    def collected(self, method: str, table: str) -> str:
        """What one table's collect job prints (rows, keys, bad files): the mark that the table is done."""
        return f"{self.results}/collected/{method}-{table}.txt"

    def report_files(self, method: str, table: str) -> list[str]:
        """What `poseharness report` writes for one table (besides plots, drawn only when there is data)."""
        return [f"{self.reports}/{method}/{table}.html", f"{self.reports}/{method}/{table}.md"]

    def table_done(self, method: str, table: str) -> list[str]:
        """What a table target asks for: its pages and its own collect job's output. The pages alone would not
        do: every report job re-renders the whole report, so another table's job leaves this table's pages behind
        (with "not run" cells), and Snakemake does not rerun a job whose outputs exist because an input upstream
        is missing. Only this table's collect job writes its collected file, after all its records exist."""
        return self.report_files(method, table) + [self.collected(method, table)]


# ---------------------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------------------
def select_methods(config: dict, known: list[str], methods_dir: Path) -> list[str]:
    """The method directories config ``methods`` selects ("all", one name or a list), in its order."""
    wanted = config["methods"]
    names = list(known) if wanted == "all" else ([wanted] if isinstance(wanted, str) else list(wanted))
    unknown = [m for m in names if m not in known]
    if unknown:
        raise HarnessError(f"config methods: unknown method(s) {', '.join(unknown)}; the method directories "
                           f"under {methods_dir} are: {', '.join(known) or 'none'}")
    return names


@functools.cache
def _spec(name: str, root: str) -> MethodSpec:
    return load_method(name, Path(root))


def spec(name: str) -> MethodSpec:
    """Method ``name`` of the current methods directory (``POSEHARNESS_ROOT``), loaded once."""
    return _spec(name, str(paths.methods_dir()))


_UNTRAINABLE: dict[Path, str | None] = {}


def untrainable(method: MethodSpec) -> str | None:
    """None when the method's module meets the method contract (so it can be trained), else the contract's
    reason. Imports the module (and torch), so only DAGs that hold trained tables pay for it."""
    if method.source not in _UNTRAINABLE:
        from .contract import method_module

        try:
            method_module(method)
            _UNTRAINABLE[method.source] = None
        except HarnessError as exc:
            _UNTRAINABLE[method.source] = str(exc)
    return _UNTRAINABLE[method.source]


def training_hash(method: MethodSpec, training: str, scale: str) -> str:
    """What decides a trained model (defaults ⊕ scale ⊕ training; no decoder settings)."""
    return config_hash(method.training_config(training, scale))


def init_source(layout: Layout, method: MethodSpec, training: str, dataset: str, scale: str, seed) -> list[str]:
    """The checkpoint a training with ``init: {from: T}`` starts from — ``final.pt`` of training T (of
    ``init.method``, default this method) on the same dataset, scale and seed, an input of the job (so the DAG
    trains T first) — or none."""
    entry = init_entry(method, training)
    if entry is None:
        return []
    return [layout.checkpoint.format(method=entry["method"], dataset=dataset, training=entry["from"], scale=scale,
                                     seed=seed)]


def variant_hash(method: MethodSpec, variant: str, scale: str) -> str:
    """What decides a scored row: its training's config plus its decoder settings."""
    return config_hash(method.variant_config(variant, scale))


def training_of(method: MethodSpec, variant: str) -> str:
    """The training whose model variant ``variant`` decodes."""
    return method.entry("variants", variant)["training"]


def oracle_variants(method: MethodSpec, training: str) -> list[str]:
    """Every variant that decodes ``training``: one oracle job encodes once and decodes each."""
    return [v for v, entry in method.variants.items() if entry["training"] == training]


def detection_files(method: MethodSpec, variants: list[str]) -> list[str]:
    """The detection-results files the variants crop (``decode.boxes: {source: file, path}``), as inputs of their
    jobs: a missing file is then Snakemake's missing input, named before anything runs."""
    from .views import BoxSource

    files = []
    for v in variants:
        source = BoxSource.from_decode(method.decode_settings(v), f"{method.source}: variant {v!r}: decode")
        if source.source == "file" and relative(source.file()) not in files:
            files.append(relative(source.file()))
    return files


def oracle_hash(method: MethodSpec, training: str, scale: str) -> str:
    """What decides an oracle job's records: the config of every variant it decodes."""
    return config_hash({v: variant_hash(method, v, scale) for v in oracle_variants(method, training)})


def check_scale(method: MethodSpec, scale: str) -> None:
    """An error naming method.yaml unless the method has scale ``scale``."""
    if scale not in method.scales:
        raise HarnessError(f"{method.source}: method {method.name!r} has no scale {scale!r} "
                           f"(known: {', '.join(method.scales)}); set --config scale=...")


def table_spec(method: MethodSpec, table: str) -> TableSpec:
    """Table ``table`` of the method; an unknown one is an error naming method.yaml."""
    tables = method.tables()
    if table not in tables:
        raise HarnessError(f"{method.source}: method {method.name!r} has no table {table!r}")
    return tables[table]


def table_list(specs: Mapping[str, MethodSpec]) -> list[tuple[str, str]]:
    """Every (method, table) of ``specs``, in method then table order."""
    return [(m, t) for m, s in specs.items() for t in s.tables()]


# ---------------------------------------------------------------------------------------------------------
# Datasets: the paper's dataset family of a table -> the configured manifest
# ---------------------------------------------------------------------------------------------------------
def dataset_for(config: dict, family: str) -> str:
    """The manifest a table on ``family`` (coco | crowdpose | ochuman) runs on (config `dataset`/`datasets`)."""
    choice = config["dataset"]
    if choice is None:
        return config["datasets"][family]
    return family if choice == "real" else choice


@functools.cache
def _manifest(name: str, where: str) -> Manifest:
    return load_manifest(name)


def manifest(name: str) -> Manifest:
    """Dataset manifest ``name`` (datasets/<name>.yaml under the project root), loaded once."""
    return _manifest(name, str(paths.manifests_dir()))


def data_size(config: dict, name: str) -> str:
    """The configured size (config `size`) of dataset ``name``."""
    return manifest(name).resolve_size(config["size"])


def data_seed(config: dict, name: str) -> int:
    """Synthetic sets: the generator seed (config `data_seed`, default the manifest's); real sets: 0 (what the
    oracle's records and files are keyed by)."""
    m = manifest(name)
    if not m.synthetic:
        return 0
    return m.seed if config["data_seed"] is None else config["data_seed"]


def data_flags(config: dict, name: str, seed_flag: str = "--seed", seed: int | None = None) -> str:
    """The CLI flags that pick the configured synthetic set (generator seed ``seed``, default the configured
    one); none for a real set."""
    if not manifest(name).synthetic:
        return ""
    return f"--size {data_size(config, name)} {seed_flag} {data_seed(config, name) if seed is None else seed}"


def prepared(config: dict, name: str, split: str) -> str:
    """The file that says ``split`` of dataset ``name`` is ready: a synthetic set's stamp (written last, after
    every split), or a real split's annotation file."""
    m = manifest(name)
    m.split(split)
    if m.synthetic:
        return relative(m.root(data_size(config, name), data_seed(config, name)) / SYNTHETIC_STAMP)
    return relative(m.annotation_path(split))


def synthetic_files(config: dict, name: str) -> list[str]:
    """A synthetic set's annotation files, one per split, at the configured size and seed."""
    m = manifest(name)
    return [relative(m.annotation_path(s, data_size(config, name), data_seed(config, name))) for s in m.splits]


def generator_hash(config: dict, name: str) -> str:
    """What decides a synthetic set's files besides size name and seed: the manifest's counts of the configured
    size and its generator settings."""
    m = manifest(name)
    return config_hash({"counts": m.sizes[data_size(config, name)], "generator": m.generator})


def used_datasets(config: dict, specs: Mapping[str, MethodSpec]) -> list[str]:
    """The datasets the tables of ``specs`` that compute something run on (a prepare rule each), each
    manifest loaded (an unknown dataset in the config fails here, before any rule runs)."""
    names = sorted({dataset_for(config, t.dataset) for s in specs.values() for t in s.tables().values()
                    if t.columns})
    for name in names:
        manifest(name)
    return names


def splits_needed(config: dict, specs: Mapping[str, MethodSpec], name: str) -> list[str]:
    """The splits of dataset ``name`` the tables of ``specs`` read, evaluation splits first, then `train` when a
    trained table runs on it."""
    splits, trained = [], False
    for s in specs.values():
        for table in s.tables().values():
            if table.columns and dataset_for(config, table.dataset) == name:
                splits.append(table.split)
                trained = trained or table.kind == "trained"
    if trained:
        splits.append("train")
    return [s for s in dict.fromkeys(splits) if s in manifest(name).splits]


# ---------------------------------------------------------------------------------------------------------
# Tables: the files each table's figures come from
# ---------------------------------------------------------------------------------------------------------
def oracle_scale(config: dict) -> str:
    """The scale the oracle tables encode at (config `oracle_scale`, default `scale`)."""
    return config["oracle_scale"] or config["scale"]


def _check_trainable(method: MethodSpec, table: TableSpec, reason: str | None) -> None:
    """An error naming the table unless its method can be trained and every column decodes a trained model."""
    where = f"{method.source}: table {table.name}"
    if reason is not None:
        raise HarnessError(f"{where}: method {method.name!r} cannot be trained yet, so its trained tables cannot "
                           f"be reproduced: {reason}")
    for v in table.columns:
        training = training_of(method, v)
        if method.trainings[training].get("oracle_only"):
            raise HarnessError(f"{where}: column {v!r} decodes training {training!r}, which is oracle_only "
                               f"(never trained); it belongs in an oracle table")


def table_inputs(config: dict, layout: Layout, method: MethodSpec, table: str,
                 untrainable: Untrainable = untrainable) -> list[str]:
    """Every file a table's figures come from: one oracle summary per training its columns decode (its variants
    share that training's encoding), and for a trained table also the predictions of each (column, seed). A
    trained table's oracle runs at the table's own scale, dataset and split, so each reproduced figure has the
    bound of its representation at the same input size beside it."""
    t = table_spec(method, table)
    if not t.columns:
        return []           # published numbers only (e.g. a test-dev table): nothing to compute
    dataset = dataset_for(config, t.dataset)
    manifest(dataset).split(t.split)
    trainings = list(dict.fromkeys(training_of(method, v) for v in t.columns))

    def oracles(scale: str) -> list[str]:
        return [layout.oracle.format(dataset=dataset, split=t.split, method=method.name, training=tr, scale=scale,
                                     seed=data_seed(config, dataset)) for tr in trainings]

    if t.kind == "oracle":
        check_scale(method, oracle_scale(config))
        return oracles(oracle_scale(config))
    _check_trainable(method, t, untrainable(method))
    scale = config["scale"]
    check_scale(method, scale)
    return [layout.predictions.format(dataset=dataset, split=t.split, method=method.name, variant=v, scale=scale,
                                      seed=s) for v in t.columns for s in config["seeds"]] + oracles(scale)


def reproducible(method: MethodSpec, table: str, untrainable: Untrainable = untrainable
                 ) -> tuple[bool, str | None]:
    """Whether `reproduce-all` includes the table, and if not why: oracle tables and published-only ones always
    are, trained ones when the method's module meets the contract (a method directory may ship its
    representation before its model)."""
    t = table_spec(method, table)
    if t.kind == "oracle" or not t.columns:
        return True, None
    reason = untrainable(method)
    return reason is None, reason


# ---------------------------------------------------------------------------------------------------------
# Resources
# ---------------------------------------------------------------------------------------------------------
def per_scale(config: dict, kind: str, scale: str) -> int:
    """Threads of a train / predict job (config `threads`): the paper setting for scale paper, else tiny's."""
    return config["threads"][kind]["paper" if scale == "paper" else "tiny"]


def gpus(config: dict, kind: str, scale: str) -> int:
    """The `gpu` resource of a job: config `gpus` per training and one per prediction at scale paper; none at
    any smaller scale (a tiny model trains on a CPU in minutes)."""
    if scale != "paper":
        return 0
    return config["gpus"] if kind == "train" else 1


def train_launcher(config: dict, scale: str) -> str:
    """`poseharness`, or torchrun with one process per GPU (DDP on one node) for a multi-GPU training."""
    n = gpus(config, "train", scale)
    return f"torchrun --standalone --nproc_per_node={n} -m poseharness" if n > 1 else "poseharness"


# ---------------------------------------------------------------------------------------------------------
# What a method declares for the workflow: alias targets (`targets:`) and benches of its own code (`benches:`)
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Alias:
    """A target a method declares (method.yaml ``targets.<name>``): another name for one of its tables."""
    name: str
    method: str
    table: str
    source: Path
    default: bool = False


def declarations(methods_dir: Path, known: Iterable[str], specs: Mapping[str, MethodSpec]
                 ) -> dict[str, tuple[Path, dict]]:
    """Each known method's (method.yaml, raw mapping): a selected method's loaded spec, any other's file read
    as YAML only (its aliases exist, to say that config `methods` leaves it out; nothing else of it is used)."""
    out = {}
    for name in known:
        if name in specs:
            out[name] = (specs[name].source, specs[name].raw)
            continue
        source = methods_dir / name / "method.yaml"
        try:
            raw = yaml.safe_load(source.read_text())
        except yaml.YAMLError as exc:
            raise HarnessError(f"{source}: not valid YAML: {exc}") from None
        out[name] = (source, raw if isinstance(raw, dict) else {})
    return out


def _alias(name: str, entry, method: str, source: Path, raw: dict) -> Alias:
    """One ``targets:`` entry (a table name, or {table: T, default: true}) as an :class:`Alias`."""
    table, default = (entry.get("table"), entry.get("default", False)) if isinstance(entry, dict) else (entry, False)
    if table not in (raw.get("tables") or {}):
        raise HarnessError(f"{source}: field targets.{name}: unknown table {table!r} "
                           f"(known: {', '.join(raw.get('tables') or {}) or 'none'})")
    if name in BUILTIN_TARGETS or name in (f"reproduce-{method}-{t}" for t in raw["tables"]):
        raise HarnessError(f"{source}: field targets.{name}: {name!r} is a target the workflow defines itself")
    return Alias(name, method, table, source, bool(default))


def method_aliases(declared: Mapping[str, tuple[Path, dict]]) -> dict[str, Alias]:
    """Every alias target the methods declare (their ``targets:``), by name. One name declared by two methods,
    or a default target declared twice, is an error naming both files."""
    aliases: dict[str, Alias] = {}
    default: Alias | None = None
    for method, (source, raw) in declared.items():
        for name, entry in (raw.get("targets") or {}).items():
            alias = _alias(name, entry, method, source, raw)
            if name in aliases:
                raise HarnessError(f"{source}: field targets.{name}: alias {name!r} is declared by "
                                   f"{aliases[name].source} too; a target name belongs to one method")
            if alias.default and default is not None:
                raise HarnessError(f"{source}: field targets.{name}: default target, but {default.source} "
                                   f"declares {default.name!r} the default already")
            default = alias if alias.default else default
            aliases[name] = alias
    return aliases


def default_alias(aliases: Mapping[str, Alias]) -> str | None:
    """The alias a method declares the default target (``default: true``), or None."""
    return next((a.name for a in aliases.values() if a.default), None)


def alias_table(alias: Alias, selected: Iterable[str]) -> tuple[str, str]:
    """The (method, table) an alias names; an error naming its method.yaml when config `methods` leaves its
    method out."""
    if alias.method not in selected:
        raise HarnessError(f"{alias.source}: field targets.{alias.name}: {alias.name} is table {alias.table!r} of "
                           f"method {alias.method!r}, but config methods leaves {alias.method} out")
    return alias.method, alias.table


def alias_description(alias: Alias, specs: Mapping[str, MethodSpec]) -> str:
    """What an alias target makes, for ``snakemake --list-target-rules``."""
    if alias.method not in specs:
        return f"{alias.method} {alias.table}; config methods leaves {alias.method} out"
    caption = table_spec(specs[alias.method], alias.table).caption
    return f"{alias.method} {alias.table}, {caption}" + (": the default target" if alias.default else "")


def method_benches(specs: Mapping[str, MethodSpec]) -> list[str]:
    """The benches of their own code the methods of ``specs`` declare (``benches:``), each once."""
    out: list[str] = []
    for s in specs.values():
        for name in s.raw.get("benches") or ():
            if name in GENERIC_BENCHES:
                raise HarnessError(f"{s.source}: field benches: {name!r} is a bench the workflow runs for every "
                                   f"method already ({', '.join(GENERIC_BENCHES)})")
            out.append(name)
    return list(dict.fromkeys(out))


def crowd_methods(specs: Mapping[str, MethodSpec]) -> list[str]:
    """The top-down and the bottom-up method `bench crowd` times (:data:`CROWD_METHODS` when selected, else the
    first selected of each paradigm); empty unless ``specs`` hold one of each."""
    out = []
    for paradigm in ("top-down", "bottom-up"):
        names = [n for n in (*CROWD_METHODS, *specs) if n in specs and specs[n].paradigm == paradigm]
        if not names:
            return []
        out.append(names[0])
    return out


def bench_targets(config: dict, layout: Layout, specs: Mapping[str, MethodSpec],
                  untrainable: Untrainable = untrainable) -> list[str]:
    """One of each bench per method of ``specs``: evaluation on the COCO stand-in, the benches the methods
    declare, the model time against persons per image of a top-down and a bottom-up method (when both are
    selected), each method's first oracle column and its first trained column's training (when it can be
    trained)."""
    out = [f"{layout.bench}/evaluate/{dataset_for(config, 'coco')}/val.json"]
    out += [f"{layout.bench}/{name}.json" for name in method_benches(specs)]
    if crowd_methods(specs):
        out.append(f"{layout.bench}/crowd.json")
    for m, s in specs.items():
        tables = [t for t in s.tables().values() if t.columns]
        oracle = next((t for t in tables if t.kind == "oracle"), None)
        if oracle is not None:
            out.append(f"{layout.bench}/oracle/{dataset_for(config, oracle.dataset)}/{m}/{oracle.columns[0]}/"
                       f"{oracle_scale(config)}.json")
        trained = next((t for t in tables if t.kind == "trained"), None)
        if trained is not None and untrainable(s) is None:
            out.append(f"{layout.bench}/train/{dataset_for(config, trained.dataset)}/{m}/"
                       f"{training_of(s, trained.columns[0])}/{config['scale']}.json")
    return out
