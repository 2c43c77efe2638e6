"""Method directories: ``methods/<name>/method.yaml`` plus the code only that method needs.

A method is discovered by its ``method.yaml``; nothing in the core lists methods by name. The YAML is
validated once, here, and turned into a :class:`MethodSpec` that resolves the full configuration of every
(training, variant, scale) — the config that travels with each figure into the results store.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import yaml

from . import paths
from .errors import HarnessError
from .settings import SCALE_META, TRAINING_META, check_declared

_SCHEMA_FILE = Path(__file__).with_name("method.schema.yaml")


def deep_merge(base: dict, override: dict) -> dict:
    """Recursive dict merge; ``override`` wins. Inputs are not modified."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@dataclass(frozen=True)
class Claim:
    """One comparison the paper draws from a table, as data (``claims:`` in method.yaml).

    ``kind`` ``better``: variant ``a`` beats variant ``b`` on ``metric``; ``kind`` ``same``: ``a`` and
    ``b`` differ by at most ``margin`` percentage points (AP points). ``says`` quotes the paper briefly.
    The tested difference is always ``a - b``.
    """

    kind: str                    # better | same
    a: str                       # the better variant, or the first of the pair
    b: str                       # the worse variant, or the second of the pair
    metric: str
    says: str
    margin: float | None = None  # percentage points; same claims only

    @property
    def variants(self) -> tuple[str, str]:
        return (self.a, self.b)

    def describe(self, label=None) -> str:
        """``'ours > qnt'`` or ``'ours ≈ ours_ro (±0.5)'``; ``label`` maps a variant to its label."""
        name = label or (lambda v: v)
        if self.kind == "better":
            return f"{name(self.a)} > {name(self.b)}"
        return f"{name(self.a)} ≈ {name(self.b)} (±{self.margin:g})"


@dataclass(frozen=True)
class PlotSpec:
    """How a table that is a sweep is drawn (``plot:`` in method.yaml): ``x`` and ``series`` are dotted paths
    into each column's resolved variant config (:meth:`MethodSpec.variant_config`); one line per ``series``
    value, ``x`` sorted, one panel per metric of ``metrics``. A column whose ``x`` is null (e.g. no NMS) is a
    horizontal reference line. ``series`` None: one line."""

    x: str
    series: str | None
    metrics: tuple[str, ...]


def config_path(cfg: Any, path: str) -> Any:
    """The value at dotted ``path`` (``'decode.nms.threshold'``) in a resolved config; :class:`KeyError` with
    what is missing when it does not resolve (a null value resolves: it is the value)."""
    value, walked = cfg, []
    for key in path.split("."):
        if not isinstance(value, dict):
            where = ".".join(walked)
            raise KeyError(f"{where} is {type(value).__name__} {value!r}, not a mapping")
        if key not in value:
            where = ".".join(walked) or "the config"
            raise KeyError(f"no key {key!r} in {where} (keys: {', '.join(map(str, value)) or 'none'})")
        value = value[key]
        walked.append(key)
    return value


@dataclass(frozen=True)
class TableSpec:
    name: str
    caption: str
    kind: str                    # trained | oracle
    dataset: str                 # the paper's dataset family: coco | crowdpose | ochuman
    split: str
    metrics: tuple[str, ...]
    columns: tuple[str, ...]
    paper: dict[str, dict[str, float | None]]
    cited: dict[str, dict[str, float | None]] = field(default_factory=dict)
    notes: str = ""
    claims: tuple[Claim, ...] = ()
    plot: PlotSpec | None = None  # a sweep: drawn as lines (x, one per series) instead of bars


@dataclass(frozen=True)
class MethodSpec:
    name: str
    directory: Path
    paradigm: str
    raw: dict[str, Any] = field(repr=False)

    @property
    def source(self) -> Path:
        return self.directory / "method.yaml"

    @property
    def scales(self) -> dict[str, dict]:
        return self.raw["scales"]

    @property
    def trainings(self) -> dict[str, dict]:
        return self.raw["trainings"]

    @property
    def variants(self) -> dict[str, dict]:
        return self.raw["variants"]

    def entry(self, kind: str, name: str) -> dict:
        """The raw ``scales`` / ``trainings`` / ``variants`` entry ``name``; an unknown name is an error naming
        method.yaml and the known ones."""
        table = self.raw[kind]
        if name not in table:
            raise HarnessError(f"{self.source}: method {self.name!r} has no {kind[:-1]} {name!r} "
                               f"(known: {', '.join(table)})")
        return table[name]

    def training_config(self, training: str, scale: str) -> dict:
        """Everything that decides a trained model: defaults ⊕ scale ⊕ training, decode settings excluded.

        The setting groups (encoding, model, loss, ...) are merged in that order, so a method reads
        ``cfg['model']`` whole (a scale's sizes and a training's switches in one mapping); ``cfg['scale']`` keeps
        the scale's views (``input``, ``train_input``); the trainer's ``train:`` settings are resolved apart
        (:func:`poseharness.config.train_settings`).
        """
        scale_entry = self.entry("scales", scale)
        groups = {k: v for k, v in self.raw.get("defaults", {}).items() if k not in ("train", "decode")}
        groups = deep_merge(groups, {k: v for k, v in scale_entry.items() if k not in SCALE_META})
        groups = deep_merge(groups, {k: v for k, v in self.entry("trainings", training).items()
                                     if k not in TRAINING_META and k != "decode"})
        views = {k: copy.deepcopy(v) for k, v in scale_entry.items() if k in ("input", "train_input")}
        return {"method": self.name, "training": training, "scale_name": scale, **groups, "scale": views}

    def decode_settings(self, variant: str) -> dict:
        """``defaults.decode`` ⊕ the variant's ``decode``."""
        return deep_merge(self.raw.get("defaults", {}).get("decode", {}),
                          self.entry("variants", variant).get("decode", {}))

    def variant_config(self, variant: str, scale: str) -> dict:
        """The full resolved config of one evaluated row: its training's config plus its decoder settings."""
        cfg = self.training_config(self.entry("variants", variant)["training"], scale)
        cfg["decode"] = self.decode_settings(variant)
        cfg["variant"] = variant
        return cfg

    def tables(self) -> dict[str, TableSpec]:
        out = {}
        for name, t in self.raw["tables"].items():
            metrics = tuple(t["metrics"])

            def norm(values: dict) -> dict[str, dict[str, float | None]]:
                return {k: (v if isinstance(v, dict) else {metrics[0]: v}) for k, v in values.items()}

            out[name] = TableSpec(
                name=name, caption=t["caption"], kind=t.get("kind", "trained"), dataset=t["dataset"],
                split=t.get("split", "val"), metrics=metrics, columns=tuple(t.get("columns", t["paper"])),
                paper=norm(t["paper"]), cited=norm(t.get("cited", {})), notes=t.get("notes", ""),
                claims=tuple(_claim(c, metrics) for c in t.get("claims", ())),
                plot=_plot(t["plot"], metrics) if "plot" in t else None)
        return out

    @functools.cached_property
    def module(self) -> ModuleType:
        """The method's Python module (``module:`` in method.yaml, default ``method.py``), imported by path.

        It is imported as a package whose path is the method directory, so it can import its sibling files
        relatively (``from .model import build_model``)."""
        path = self.directory / self.raw.get("module", "method.py")
        if not path.exists():
            raise HarnessError(f"{self.source}: module file {path} not found")
        mod_name = f"poseharness_methods.{self.name}"
        if mod_name in sys.modules:
            return sys.modules[mod_name]
        spec = importlib.util.spec_from_file_location(mod_name, path,
                                                      submodule_search_locations=[str(self.directory)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
        return module


def _claim(raw: dict, metrics: tuple[str, ...]) -> Claim:
    """A validated ``claims:`` entry (see :func:`_check_claims`) as a :class:`Claim`."""
    if "same" in raw:
        a, b = raw["same"]
        return Claim(kind="same", a=a, b=b, metric=raw.get("metric", metrics[0]), says=raw["says"],
                     margin=float(raw["margin"]))
    return Claim(kind="better", a=raw["better"], b=raw["worse"], metric=raw.get("metric", metrics[0]),
                 says=raw["says"])


def _plot(raw: dict, metrics: tuple[str, ...]) -> PlotSpec:
    """A validated ``plot:`` entry (see :func:`_check_plot`) as a :class:`PlotSpec`."""
    return PlotSpec(x=raw["x"], series=raw.get("series"), metrics=tuple(raw.get("metrics", metrics)))


def _check_plot(source: Path, tname: str, table: dict, spec: "MethodSpec") -> None:
    """What the schema cannot say about a table's ``plot:``: its metrics are the table's, and its ``x`` and
    ``series`` paths resolve in every column's variant config at every scale (``x`` to a number or null,
    ``series`` to a scalar), with at least one numeric ``x``. Each error names the file, the table and the key."""
    plot = table.get("plot")
    if plot is None:
        return
    where = f"{source}: field tables.{tname}.plot"
    metrics = list(table["metrics"])
    for i, metric in enumerate(plot.get("metrics", [])):
        if metric not in metrics:
            raise HarnessError(f"{where}.metrics[{i}]: {metric!r} is not a metric of table {tname} "
                               f"(metrics: {', '.join(metrics)})")
    columns = list(table.get("columns", table["paper"]))
    if not columns:
        raise HarnessError(f"{where}: table {tname} has no columns to plot")
    numeric = False
    for scale in spec.scales:
        for variant in columns:
            cfg = spec.variant_config(variant, scale)
            for key in ("x", "series"):
                if key not in plot:
                    continue
                try:
                    value = config_path(cfg, plot[key])
                except KeyError as exc:
                    raise HarnessError(f"{where}.{key}: path {plot[key]!r} does not resolve for column "
                                       f"{variant!r} at scale {scale!r}: {exc.args[0]}") from None
                if key == "x" and value is not None and (
                        isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise HarnessError(f"{where}.x: {plot['x']!r} of column {variant!r} at scale {scale!r} is "
                                       f"{value!r}: x must be a number (or null, for a reference line)")
                if key == "series" and isinstance(value, (dict, list)):
                    raise HarnessError(f"{where}.series: {plot['series']!r} of column {variant!r} at scale "
                                       f"{scale!r} is a {type(value).__name__}, not a single value")
                numeric = numeric or (key == "x" and value is not None)
    if not numeric:
        raise HarnessError(f"{where}.x: {plot['x']!r} is null in every column of table {tname}: nothing to plot")


def _check_claims(source: Path, tname: str, table: dict) -> None:
    """What the schema cannot say about a table's claims: their form, and that they name its columns
    and metrics. Each error names the file, the table, the claim (index) and the key."""
    columns = list(table.get("columns", table["paper"]))
    metrics = list(table["metrics"])
    for i, c in enumerate(table.get("claims", [])):
        where = f"{source}: field tables.{tname}.claims[{i}]"
        if "same" in c:
            extra = [k for k in ("better", "worse") if k in c]
            if extra:
                raise HarnessError(f"{where}: a 'same' claim takes no {' or '.join(map(repr, extra))}")
            if "margin" not in c:
                raise HarnessError(f"{where}: a 'same' claim needs 'margin' (AP points)")
            if c["same"][0] == c["same"][1]:
                raise HarnessError(f"{where}.same: names {c['same'][0]!r} twice")
            named = [("same", v) for v in c["same"]]
        else:
            missing = [k for k in ("better", "worse") if k not in c]
            if missing:
                raise HarnessError(f"{where}: a claim needs 'better' and 'worse', or 'same' and 'margin'; "
                                   f"missing {' and '.join(map(repr, missing))}")
            if "margin" in c:
                raise HarnessError(f"{where}.margin: only a 'same' claim takes a margin")
            if c["better"] == c["worse"]:
                raise HarnessError(f"{where}: better and worse are both {c['better']!r}")
            named = [("better", c["better"]), ("worse", c["worse"])]
        for key, variant in named:
            if variant not in columns:
                raise HarnessError(f"{where}.{key}: variant {variant!r} is not a column of table {tname} "
                                   f"(columns: {', '.join(columns) or 'none'})")
        if "metric" in c and c["metric"] not in metrics:
            raise HarnessError(f"{where}.metric: {c['metric']!r} is not a metric of table {tname} "
                               f"(metrics: {', '.join(metrics)})")


@functools.cache
def _validator():
    schema = yaml.safe_load(_SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def parse_method(raw: Any, source: Path) -> MethodSpec:
    if not isinstance(raw, dict):
        raise HarnessError(f"{source}: method.yaml must be a YAML mapping")
    errors = sorted(_validator().iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(
            f"  field {'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors)
        raise HarnessError(f"{source}: invalid method spec\n{lines}")
    if raw["name"] != source.parent.name:
        raise HarnessError(f"{source}: field name: {raw['name']!r} differs from the directory {source.parent.name!r}")
    for vname, v in raw["variants"].items():
        if v["training"] not in raw["trainings"]:
            raise HarnessError(f"{source}: field variants.{vname}.training: unknown training {v['training']!r}")
    for tname, t in raw["tables"].items():
        for col in list(t.get("columns", [])) + list(t["paper"]):
            if col not in raw["variants"]:
                raise HarnessError(f"{source}: field tables.{tname}: unknown variant {col!r}")
        _check_claims(source, tname, t)
    spec = MethodSpec(name=raw["name"], directory=source.parent, paradigm=raw["paradigm"], raw=raw)
    check_declared(raw, source, source.parent, lambda kind, name, scale: (
        spec.training_config(name, scale) if kind == "trainings" else spec.variant_config(name, scale)))
    for tname, t in raw["tables"].items():
        _check_plot(source, tname, t, spec)
    return spec


def load_method_file(path: str | Path) -> MethodSpec:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise HarnessError(f"{path}: method.yaml not found") from None
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path}: not valid YAML: {exc}") from None
    return parse_method(raw, path)


def method_names(root: Path | None = None) -> list[str]:
    root = root or paths.methods_dir()
    return sorted(p.parent.name for p in root.glob("*/method.yaml"))


def load_method(name: str, root: Path | None = None) -> MethodSpec:
    root = root or paths.methods_dir()
    path = root / name / "method.yaml"
    if not path.exists():
        raise HarnessError(f"unknown method {name!r}: no {path} (known: {', '.join(method_names(root)) or 'none'})")
    return load_method_file(path)


# ----------------------------------------------------------------------------------------------------------
# Starting a training from another one: init: {from, freeze, method, into} (used by poseharness.train)
# ----------------------------------------------------------------------------------------------------------

def init_entry(spec: MethodSpec, training: str) -> dict | None:
    """The checked ``init:`` of a training entry, ``{'from': str, 'freeze': [str], 'method': str, 'into': str}``
    (``method`` this method's name unless the entry names another, ``into`` '' for the whole model); None when it
    has none. Errors name method.yaml and the field."""
    where = f"{spec.source}: field trainings.{training}.init"
    if training not in spec.trainings:
        raise HarnessError(f"{spec.source}: method {spec.name!r} has no training {training!r} "
                           f"(known: {', '.join(spec.trainings)})")
    raw = spec.trainings[training].get("init")
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"from", "freeze", "method", "into"}:
        raise HarnessError(f"{where}: must be a mapping {{from: <training>, freeze: [<module prefixes>], "
                           f"method: <another method>, into: <module prefix>}}, got {raw!r}")
    source, freeze = raw.get("from"), raw.get("freeze", [])
    method, into = raw.get("method", spec.name), raw.get("into", "")
    if method == spec.name:
        if into:
            raise HarnessError(f"{where}.into: only a training of another method (init.method) goes into a "
                               f"submodule, got {into!r}")
        known = [t for t in spec.trainings if t != training]
    else:
        if not isinstance(into, str) or not into.strip("."):
            raise HarnessError(f"{where}.into: the submodule that takes method {method!r}'s model must be named "
                               f"(a module name prefix), got {into!r}")
        known = list(source_method(spec, method, where).trainings)
    if not isinstance(source, str) or source not in known:
        raise HarnessError(f"{where}.from: {source!r} names no other training of method {method!r} "
                           f"(known: {', '.join(known)})")
    if not isinstance(freeze, list) or not all(isinstance(p, str) and p.strip(".") for p in freeze):
        raise HarnessError(f"{where}.freeze: must be a list of module name prefixes, got {freeze!r}")
    return {"from": source, "freeze": list(freeze), "method": method, "into": into}


def source_method(spec: MethodSpec, name: str, where: str) -> MethodSpec:
    """Method ``name`` that a training starts from: the sibling directory of ``spec``'s (``methods/<name>``)."""
    path = spec.directory.parent / str(name) / "method.yaml"
    if not path.is_file():
        raise HarnessError(f"{where}.method: no method {name!r} beside {spec.directory} ({path} not found)")
    return load_method_file(path)
