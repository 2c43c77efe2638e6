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

    def _pick(self, kind: str, name: str) -> dict:
        table = self.raw[kind]
        if name not in table:
            raise HarnessError(f"{self.source}: method {self.name!r} has no {kind[:-1]} {name!r} "
                               f"(known: {', '.join(table)})")
        return table[name]

    def training_config(self, training: str, scale: str) -> dict:
        """Everything that decides a trained model: defaults ⊕ scale ⊕ training (decode settings excluded)."""
        cfg = deep_merge(self.raw.get("defaults", {}), {"scale": self._pick("scales", scale)})
        cfg = deep_merge(cfg, {k: v for k, v in self._pick("trainings", training).items()
                               if k not in ("description", "oracle_only")})
        cfg.pop("decode", None)
        return {"method": self.name, "training": training, "scale_name": scale, **cfg}

    def variant_config(self, variant: str, scale: str) -> dict:
        """The full resolved config of one evaluated row: its training's config plus its decoder settings."""
        v = self._pick("variants", variant)
        cfg = self.training_config(v["training"], scale)
        cfg["decode"] = deep_merge(self.raw.get("defaults", {}).get("decode", {}), v.get("decode", {}))
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
                paper=norm(t["paper"]), cited=norm(t.get("cited", {})), notes=t.get("notes", ""))
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
    return MethodSpec(name=raw["name"], directory=source.parent, paradigm=raw["paradigm"], raw=raw)


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
