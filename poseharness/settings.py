"""A method's representation settings, declared and checked: no misspelt key is silently ignored.

A method directory declares the settings its code reads in ``settings.schema.yaml``: a JSON Schema (draft
2020-12, in YAML) whose top-level ``properties`` are the setting groups (``encoding``, ``decode``, ``model``,
``loss``, and whatever else the method's code reads, e.g. GOG's ``skeletons``), each an object schema that lists
its keys with their types (``additionalProperties: false`` is implied at every level that lists
``properties``). ``method.yaml`` gives the values: ``defaults`` for every setting, and ``scales.<s>``,
``trainings.<t>`` and ``variants.<v>.decode`` override some of them.

:func:`check_settings` walks every one of those blocks against the declaration: a key the method does not
declare, or a value of the wrong type, is an error naming ``method.yaml``, the entry and the key. Then the
config each (training, scale) and each (variant, scale) resolves to is validated as a whole, so a setting the
schema ``requires`` must have a value in ``defaults`` (or in every entry that needs it).

A method without ``settings.schema.yaml`` is checked by the weaker rule that ``defaults`` is the declaration:
scales, trainings and variants may only override keys that ``defaults`` sets.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

from .errors import HarnessError

SETTINGS_FILE = "settings.schema.yaml"

#: Keys of a ``scales.<s>`` entry that are not representation settings (the trainer's and the views').
SCALE_META = ("input", "train_input", "train", "description")
#: Keys of a ``trainings.<t>`` entry that are not representation settings.
TRAINING_META = ("description", "oracle_only", "train", "init")


@functools.cache
def _load(path: Path) -> dict:
    try:
        schema = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        raise HarnessError(f"{path}: a settings schema must be a mapping with 'properties' (the setting groups)")
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise HarnessError(f"{path}: not a valid JSON Schema: {exc.message}") from None
    return _inline(schema, schema.get("$defs", {}), path)


def _inline(node: Any, defs: dict, path: Path) -> Any:
    """The schema with each local ``{$ref: '#/$defs/<name>'}`` replaced by its definition (so that any part of
    it validates on its own)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None:
            name = ref.removeprefix("#/$defs/")
            if name == ref or name not in defs:
                raise HarnessError(f"{path}: $ref {ref!r}: only local '#/$defs/<name>' references are supported")
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inline(defs[name], defs, path), **_inline(rest, defs, path)}
        return {k: _inline(v, defs, path) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs, path) for v in node]
    return node


def settings_schema(directory: Path) -> tuple[Path, dict] | None:
    """``(path, schema)`` of a method directory's declared settings, or None when it declares none."""
    path = Path(directory) / SETTINGS_FILE
    return (path, _load(path.resolve())) if path.exists() else None


def setting_blocks(raw: dict) -> Iterator[tuple[str, dict]]:
    """(field path, mapping of settings) for every block of method.yaml that sets representation settings."""
    yield "defaults", {k: v for k, v in raw.get("defaults", {}).items() if k != "train"}
    for name, scale in raw["scales"].items():
        yield f"scales.{name}", {k: v for k, v in scale.items() if k not in SCALE_META}
    for name, training in raw["trainings"].items():
        yield f"trainings.{name}", {k: v for k, v in training.items() if k not in TRAINING_META}
    for name, variant in raw["variants"].items():
        if "decode" in variant:
            yield f"variants.{name}", {"decode": variant["decode"]}


def _walk(block: dict, node: dict, where: str, declared: str) -> None:
    """Every key of ``block`` is declared by the object schema ``node``; leaves validate against theirs."""
    props = node.get("properties", {})
    for key, value in block.items():
        if key not in props:
            known = ", ".join(props) or "none"
            raise HarnessError(f"{where}.{key}: unknown setting (declared in {declared}: {known})")
        sub = props[key]
        if isinstance(value, dict) and "properties" in sub:
            _walk(value, sub, f"{where}.{key}", declared)
            continue
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(sub).iter_errors(value))
        if error is not None:
            raise HarnessError(f"{where}.{key}: {error.message} (declared in {declared})")


def _closed(node: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever it lists ``properties`` and says nothing else."""
    if isinstance(node, dict):
        out = {k: _closed(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_closed(v) for v in node]
    return node


def _check_resolved(cfg: dict, schema: dict, what: str, declared: str) -> None:
    groups = {k: v for k, v in cfg.items() if k in schema["properties"]}
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(_closed(schema)).iter_errors(groups))
    if error is not None:
        path = ".".join(map(str, error.absolute_path))
        raise HarnessError(f"{what}: field {path or '(top level)'}: {error.message} (declared in {declared})")


def check_declared(raw: dict, source: Path, directory: Path, resolve) -> None:
    """Check every settings block of ``raw`` (method.yaml at ``source``) against the method's declaration.

    resolve: ``resolve(kind, name, scale) -> cfg``, the resolver's config of a training or a variant at a
    scale; with a settings schema each is validated as a whole (required settings present, types).
    """
    found = settings_schema(directory)
    if found is None:
        _check_against_defaults(raw, source)
        return
    path, schema = found
    declared = path.name
    for where, block in setting_blocks(raw):
        _walk(block, schema, f"{source}: field {where}", declared)
    for scale in raw["scales"]:
        for kind in ("trainings", "variants"):
            for name in raw[kind]:
                cfg = resolve(kind, name, scale)
                _check_resolved(cfg, schema, f"{source}: {kind[:-1]} {name!r} at scale {scale!r}", declared)


def _check_against_defaults(raw: dict, source: Path) -> None:
    """Without a schema: overrides may only set keys that ``defaults`` sets (its values are the declaration)."""
    base = copy.deepcopy(raw.get("defaults", {}))
    base.pop("train", None)

    def walk(over: dict, known: Any, where: str) -> None:
        for key, value in over.items():
            if not isinstance(known, dict) or key not in known:
                raise HarnessError(f"{source}: field {where}.{key}: unknown setting (an override may only set "
                                   f"settings declared under defaults, or in the method's {SETTINGS_FILE})")
            if isinstance(value, dict) and isinstance(known[key], dict):
                walk(value, known[key], f"{where}.{key}")

    for where, block in setting_blocks(raw):
        if where != "defaults":
            walk(block, base, where)
