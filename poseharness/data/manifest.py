"""Dataset manifests ``datasets/<name>.yaml``: loaded and validated once, at the edge.

A manifest says where a dataset's files come from (URLs and checksums, or generator settings and a seed),
how they are laid out after preparation, which keypoint schema they use and which evaluation protocol
scores them. Everything downstream takes a :class:`Manifest`, never the raw YAML.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .. import paths
from ..errors import HarnessError
from ..schemas import KeypointSchema, get_schema

_SCHEMA_FILE = Path(__file__).with_name("manifest.schema.yaml")


@dataclass(frozen=True)
class SplitSpec:
    annotations: str
    images: str


@dataclass(frozen=True)
class FileSpec:
    name: str
    url: str | None = None
    source: str | None = None
    size: int | None = None
    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    dest: str | None = None
    unpack: str | None = None
    splits: tuple[str, ...] | None = None
    optional: bool = False

    @property
    def checksums(self) -> dict[str, str]:
        """Published digests, strongest first (``{'sha256': ..., 'md5': ...}``)."""
        return {k: v for k in ("sha256", "sha1", "md5") if (v := getattr(self, k))}


@dataclass(frozen=True)
class Manifest:
    name: str
    kind: str                       # real | synthetic
    schema: KeypointSchema
    format: str                     # coco | crowdpose | ochuman: the annotation file's dialect
    protocol: str                   # coco | crowdpose | ochuman: how results are scored
    splits: dict[str, SplitSpec]
    source_path: Path
    files: tuple[FileSpec, ...] = ()
    manual: str | None = None
    seed: int | None = None
    default_size: str | None = None
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    generator: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def synthetic(self) -> bool:
        return self.kind == "synthetic"

    def resolve_size(self, size: str | None) -> str:
        size = size or self.default_size
        if size not in self.sizes:
            raise HarnessError(
                f"{self.source_path}: dataset {self.name!r} has no size {size!r} "
                f"(known: {', '.join(self.sizes)})")
        return size

    def root(self, size: str | None = None, seed: int | None = None) -> Path:
        """The dataset folder. Synthetic sets get one folder per (size, seed), so sizes never overwrite each other."""
        base = paths.data_dir() / self.name
        if not self.synthetic:
            return base
        return base / f"{self.resolve_size(size)}-seed{self.seed if seed is None else seed}"

    def split(self, split: str) -> SplitSpec:
        try:
            return self.splits[split]
        except KeyError:
            raise HarnessError(
                f"{self.source_path}: dataset {self.name!r} has no split {split!r} "
                f"(known: {', '.join(self.splits)})") from None

    def annotation_path(self, split: str, size: str | None = None, seed: int | None = None) -> Path:
        return self.root(size, seed) / self.split(split).annotations

    def image_dir(self, split: str, size: str | None = None, seed: int | None = None) -> Path:
        return self.root(size, seed) / self.split(split).images


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    schema = yaml.safe_load(_SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _field_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def parse_manifest(raw: Any, source: Path) -> Manifest:
    """Validate a manifest's YAML content and build a :class:`Manifest`; errors name the file and the field."""
    if not isinstance(raw, dict):
        raise HarnessError(f"{source}: a manifest must be a YAML mapping, got {type(raw).__name__}")
    errors = sorted(_validator().iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        lines = "\n".join(f"  field {_field_path(e)}: {e.message}" for e in errors)
        raise HarnessError(f"{source}: invalid dataset manifest\n{lines}")
    if raw["name"] != source.stem:
        raise HarnessError(f"{source}: field name: {raw['name']!r} differs from the file name {source.stem!r}")
    if raw["kind"] == "synthetic" and raw["default_size"] not in raw["sizes"]:
        raise HarnessError(f"{source}: field default_size: {raw['default_size']!r} is not one of sizes")
    for size, splits in raw.get("sizes", {}).items():
        unknown = set(splits) - set(raw["splits"])
        if unknown:
            raise HarnessError(f"{source}: field sizes.{size}: unknown split(s) {sorted(unknown)}")
    files = tuple(
        FileSpec(**{**f, "splits": tuple(f["splits"]) if "splits" in f else None}) for f in raw.get("files", [])
    )
    return Manifest(
        name=raw["name"], kind=raw["kind"], schema=get_schema(raw["schema"]), format=raw["format"],
        protocol=raw["protocol"],
        splits={k: SplitSpec(annotations=v["annotations"], images=v["images"]) for k, v in raw["splits"].items()},
        source_path=source, files=files, manual=raw.get("manual"), seed=raw.get("seed"),
        default_size=raw.get("default_size"), sizes=raw.get("sizes", {}), generator=raw.get("generator", {}),
        raw=raw,
    )


def load_manifest_file(path: str | Path) -> Manifest:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise HarnessError(f"{path}: manifest file not found") from None
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path}: not valid YAML: {exc}") from None
    return parse_manifest(raw, path)


def manifest_names() -> list[str]:
    return sorted(p.stem for p in paths.manifests_dir().glob("*.yaml"))


def load_manifest(name: str) -> Manifest:
    """Load ``datasets/<name>.yaml``; an unknown name lists the known ones."""
    path = paths.manifests_dir() / f"{name}.yaml"
    if not path.exists():
        raise HarnessError(
            f"unknown dataset {name!r}: no manifest {path} (known: {', '.join(manifest_names()) or 'none'})")
    return load_manifest_file(path)
