"""One run's figures and everything needed to trust them: the :class:`RunRecord`.

A record is the unit of the results store: one JSON file per evaluation of one
(kind, dataset, split, method, variant, scale, seed, subset); ``subset`` is ``full`` for the whole split and
``first-N-images`` for a quick look (``--limit N``), so a quick look never replaces the full split's figure. It is validated when it is written AND when
it is read back, so a hand-edited or damaged file is caught at the edge with its path and field.
"""
from __future__ import annotations

import dataclasses
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import HarnessError, where
from ..provenance import canonical_config, config_hash, provenance

SCHEMA_VERSION = 1
KINDS = ("trained", "oracle", "speed")
DATASET_KINDS = ("real", "synthetic")
PAPER_SCALE = "paper"
KEY_FIELDS = ("kind", "dataset", "split", "method", "variant", "scale", "seed", "subset")
#: ``subset`` of a record scored on the whole split; any other subset is ``first-N-images`` (N >= 1).
FULL_SUBSET = "full"
# Labels the record derives itself; validation re-derives them so a record cannot claim otherwise.
DERIVED_LABELS = ("dataset_kind", "synthetic", "tiny", "comparable_to_paper")
# Columns of the collected table that are not metrics; a metric may not take one of these names.
RESERVED_COLUMNS = frozenset(KEY_FIELDS) | frozenset({
    "created", "run_id", "commit", "dirty", "describe", "config_hash", "hardware", "versions",
    "labels", "predictions", "predictions_sha256", "record", "records_for_key", "schema_version",
    "matches", *DERIVED_LABELS,
})
TIMING_PREFIX = "time/"
# A metric's bootstrap interval becomes the columns <metric>_lo and <metric>_hi; no metric may end so.
INTERVAL_SUFFIXES = ("_lo", "_hi")
# Fields added after version 1 was fixed: a record written before them still loads (they are then None).
# ``subset`` missing: the full split, unless the config says ``limit`` (records of before the field).
OPTIONAL_FIELDS = ("intervals", "matches", "subset", "diagnosis")
#: Columns of the collected table made from a record's ``diagnosis`` start so; no metric may.
DIAGNOSIS_PREFIX = "diag_"
#: What a ``diagnosis`` must hold (``poseharness.eval.diagnosis.diagnose``'s dict).
DIAGNOSIS_KEYS = ("counts", "counts_per_keypoint", "ap", "gain")

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")   # key parts become directory names
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_RUN_ID_RE = re.compile(r"[0-9a-f]{32}")
_SUBSET_RE = re.compile(r"first-([1-9][0-9]*)-images")


def check_limit(limit: Any, option: str = "--limit") -> int | None:
    """``limit`` (how many of a split's first images a run sees) if it is None or an integer >= 1.

    Anything else is a :class:`HarnessError`: a run over no images scores nothing (COCO's -1 for every
    metric), and a record of it would stand for the split.
    """
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise HarnessError(f"{option} must be a whole number of images (>= 1), got {limit!r}")
    if limit < 1:
        raise HarnessError(f"{option} must be at least 1 (the first N images of the split), got {limit}; "
                           f"leave it out to run the whole split")
    return limit


def subset_name(limit: int | None) -> str:
    """The ``subset`` of a run that saw the first ``limit`` images (None: the whole split, ``full``)."""
    limit = check_limit(limit)
    return FULL_SUBSET if limit is None else f"first-{limit}-images"


def subset_limit(subset: str) -> int | None:
    """The image count of a ``first-N-images`` subset; None for ``full``. HarnessError for any other text."""
    if subset == FULL_SUBSET:
        return None
    match = _SUBSET_RE.fullmatch(subset) if isinstance(subset, str) else None
    if match is None:
        raise HarnessError(f"subset must be {FULL_SUBSET!r} or 'first-N-images' with N >= 1, got {subset!r}")
    return int(match.group(1))


def comparable_to_paper(dataset_kind: str, scale: str) -> bool:
    """Whether a figure may stand beside a paper's published number.

    Only real data evaluated at the published ('paper') scale qualifies; synthetic data or any
    reduced scale (e.g. 'tiny') measures the pipeline, not the method's reported accuracy.
    """
    if dataset_kind not in DATASET_KINDS:
        raise HarnessError(f"dataset kind {dataset_kind!r} is not one of {', '.join(DATASET_KINDS)}")
    return dataset_kind == "real" and scale == PAPER_SCALE


def derived_labels(dataset_kind: str, scale: str) -> dict[str, Any]:
    """The labels every record carries: ``dataset_kind``, ``synthetic``, ``tiny``, ``comparable_to_paper``."""
    return {
        "dataset_kind": dataset_kind,
        "synthetic": dataset_kind == "synthetic",
        "tiny": scale == "tiny",
        "comparable_to_paper": comparable_to_paper(dataset_kind, scale),
    }


def utc_now() -> str:
    """Current UTC time as ISO 8601 with microseconds and an explicit ``+00:00`` offset."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def parse_created(text: str) -> datetime:
    """Parse a record's ``created`` stamp; raises ValueError unless it is ISO 8601 in UTC."""
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None or stamp.utcoffset().total_seconds() != 0:
        raise ValueError("must carry the UTC offset +00:00")
    return stamp


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class RunRecord:
    """One evaluated run. Build new ones with :meth:`RunRecord.new`; all fields are JSON data.

    Fields (units): ``metrics`` name -> value (AP etc. in [0, 1], or -1 for COCO's "no GT in range";
    speed records in their own units, e.g. ``ms_per_image``); ``timings`` stage -> wall seconds;
    ``predictions`` ``{'path', 'sha256'}`` of the COCO results JSON (None only for speed);
    ``intervals`` metric -> ``[lo, hi]``, its 95 % bootstrap interval over the images (same units as the
    metric; see ``poseharness.eval.bootstrap``), None for records without; ``matches`` the path of the saved
    per-detection matching the intervals come from (``<predictions>.matches.npz``), or None;
    ``created`` UTC ISO 8601; ``run_id`` 32 hex digits, unique per record; ``subset`` which images of the
    split were scored: ``full`` (all), or ``first-N-images`` (a ``--limit N`` quick look; then the config says
    ``limit: N``). The subset is part of the key, so a quick look never supersedes a full-split record.
    ``diagnosis``: the error diagnosis of the predictions (``poseharness.eval.diagnosis.diagnose``: counts,
    counts_per_keypoint, counts_per_oks, ap and gain per cumulative correction stage, fractions in [0, 1]),
    or None (records of before the field, speed records, or a diagnosis that failed); ``finish`` adds its
    ``sources`` (``annotations`` file, ``images`` folder or null, ``schema`` name) for the report's gallery.
    """

    kind: str
    dataset: str
    split: str
    method: str
    variant: str
    scale: str
    seed: int
    metrics: dict[str, float]
    config: dict[str, Any]
    config_hash: str
    code: dict[str, Any]
    versions: dict[str, str]
    hardware: dict[str, Any]
    timings: dict[str, float]
    predictions: dict[str, str] | None
    created: str
    labels: dict[str, Any]
    intervals: dict[str, list[float]] | None = None
    matches: str | None = None
    subset: str = FULL_SUBSET
    diagnosis: dict[str, Any] | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def new(cls, *, kind: str, dataset: str, split: str, method: str, variant: str, scale: str,
            seed: int, metrics: dict[str, float], config: dict[str, Any],
            dataset_kind: str | None = None, timings: dict[str, float] | None = None,
            predictions: dict[str, str] | None = None, labels: dict[str, Any] | None = None,
            prov: dict[str, Any] | None = None, created: str | None = None,
            intervals: dict[str, Any] | None = None, matches: str | None = None,
            subset: str = FULL_SUBSET, diagnosis: dict[str, Any] | None = None) -> "RunRecord":
        """A validated record stamped now, with provenance of this process and checkout.

        ``dataset_kind`` ('real' | 'synthetic') defaults to the kind in the dataset's manifest;
        ``labels`` adds free labels to the derived ones; ``intervals`` / ``matches`` / ``subset`` /
        ``diagnosis`` as in the class doc (:func:`subset_name` makes a subset of a ``--limit``);
        ``prov`` (from :func:`provenance`) lets a job capture the code state when it starts rather than
        when it finishes.
        """
        if dataset_kind is None:
            from ..data.manifest import load_manifest  # only when the caller did not say
            dataset_kind = load_manifest(dataset).kind
        prov = prov if prov is not None else provenance()
        config = canonical_config(config)
        record = cls(
            kind=kind, dataset=dataset, split=split, method=method, variant=variant, scale=scale,
            seed=seed, metrics={k: (float(v) if _is_number(v) else v) for k, v in metrics.items()},
            config=config, config_hash=config_hash(config),
            code={"commit": prov["code"]["commit"], "dirty": prov["code"]["dirty"],
                  "describe": prov["code"].get("describe", "unknown")},
            versions=dict(prov["versions"]), hardware=dict(prov["hardware"]),
            timings={k: (float(v) if _is_number(v) else v) for k, v in (timings or {}).items()},
            predictions=dict(predictions) if predictions is not None else None,
            created=created or utc_now(),
            labels={**(labels or {}), **derived_labels(dataset_kind, scale)},
            intervals=None if intervals is None else {
                k: list(v) if isinstance(v, (list, tuple)) else v for k, v in intervals.items()},
            matches=None if matches is None else str(matches),
            subset=subset,
            diagnosis=None if diagnosis is None else dict(diagnosis),
        )
        record.validate()
        return record

    @property
    def key(self) -> tuple:
        """``(kind, dataset, split, method, variant, scale, seed, subset)``: what a newer record replaces.

        A ``first-N-images`` record and a ``full`` one of the same run are two keys: neither replaces the other."""
        return tuple(getattr(self, name) for name in KEY_FIELDS)

    @property
    def full(self) -> bool:
        """Whether the record scored the whole split (``subset == 'full'``)."""
        return self.subset == FULL_SUBSET

    @property
    def created_at(self) -> datetime:
        return parse_created(self.created)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, source: Any = "<record>") -> "RunRecord":
        """Build and validate a record from parsed JSON; errors name ``source`` and the field."""
        if not isinstance(raw, dict):
            raise HarnessError(f"{source}: a record must be a JSON object, got {type(raw).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(names))
        missing = [n for n in names if n not in raw and n not in OPTIONAL_FIELDS]
        problems = [(n, "unknown field") for n in unknown] + [(n, "missing") for n in missing]
        if problems:
            raise HarnessError(_format(source, problems))
        values = {n: raw[n] for n in names if n in raw}
        if "subset" not in raw:
            values["subset"] = _legacy_subset(raw.get("config"))
        record = cls(**values)
        record.validate(source)
        return record

    def validate(self, source: Any = "<record>") -> "RunRecord":
        """Check every field; raise one :class:`HarnessError` listing each bad field with ``source``."""
        problems = _problems(self)
        if problems:
            raise HarnessError(_format(source, problems))
        return self


def _legacy_subset(config: Any) -> Any:
    """The subset of a record written before the field: ``first-N-images`` when its config says ``limit: N``
    (how ``--limit`` was recorded then), else ``full``. A ``limit`` below 1 gives a subset that fails
    validation: such a record scored no image and is left out of the table as bad."""
    limit = config.get("limit") if isinstance(config, dict) else None
    if limit is None:
        return FULL_SUBSET
    return f"first-{limit}-images"


def _check_subset(r: RunRecord, problems: list) -> None:
    """``subset``: ``full`` or ``first-N-images`` (N >= 1), and ``first-N-images`` exactly when config says limit N."""
    try:
        limit = subset_limit(r.subset)
    except HarnessError as exc:
        problems.append(("subset", str(exc)))
        return
    said = r.config.get("limit") if isinstance(r.config, dict) else None
    if said != limit:
        problems.append(("subset", f"{r.subset!r} disagrees with config.limit ({said!r}); a run over the first N "
                                   f"images is 'first-N-images' with limit N, the whole split 'full' with no limit"))


def _check_diagnosis(r: RunRecord, problems: list) -> None:
    """``diagnosis``: null, or an object with :data:`DIAGNOSIS_KEYS`, ``counts`` of non-negative integers and
    ``gain`` of stage -> {figure: number or null}."""
    d = r.diagnosis
    if d is None:
        return
    if not isinstance(d, dict):
        problems.append(("diagnosis", f"must be null or an object, got {type(d).__name__}"))
        return
    missing = [k for k in DIAGNOSIS_KEYS if not isinstance(d.get(k), dict)]
    if missing:
        problems.append(("diagnosis", f"must hold the objects {', '.join(DIAGNOSIS_KEYS)}; "
                                      f"missing or not objects: {', '.join(missing)}"))
        return
    for name, count in d["counts"].items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            problems.append((f"diagnosis.counts.{name}", f"must be a count (integer >= 0), got {count!r}"))
    for stage, figures in d["gain"].items():
        if not isinstance(figures, dict) or not all(v is None or (_is_number(v) and math.isfinite(v))
                                                    for v in figures.values()):
            problems.append((f"diagnosis.gain.{stage}", f"must map figures to finite numbers or null, "
                                                        f"got {figures!r}"))


def _format(source: Any, problems: list[tuple[str, str]]) -> str:
    lines = [f"{where(source, record='field ' + name)}: {text}" for name, text in problems]
    head = f"{source}: invalid run record ({len(problems)} problem{'s' * (len(problems) != 1)})"
    return "\n".join([head, *("  " + line for line in lines)])


def _check_number_map(name: str, value: Any, problems: list, *, nonnegative: bool) -> None:
    if not isinstance(value, dict):
        problems.append((name, f"must be an object of name -> number, got {type(value).__name__}"))
        return
    for key, number in value.items():
        if not isinstance(key, str) or not key:
            problems.append((f"{name}.{key}", "name must be a non-empty string"))
        elif not _is_number(number):
            problems.append((f"{name}.{key}", f"must be a number, got {type(number).__name__}"))
        elif not math.isfinite(number):
            problems.append((f"{name}.{key}", f"must be finite, got {number}"))
        elif nonnegative and number < 0:
            problems.append((f"{name}.{key}", f"must be >= 0, got {number}"))


def _check_intervals(r: RunRecord, problems: list) -> None:
    """``intervals``: null, or metric (one of ``metrics``) -> [lo, hi], finite numbers with lo <= hi."""
    if r.intervals is None:
        return
    if not isinstance(r.intervals, dict):
        problems.append(("intervals", f"must be null or an object of metric -> [lo, hi], "
                                      f"got {type(r.intervals).__name__}"))
        return
    for name, bounds in r.intervals.items():
        where_ = f"intervals.{name}"
        if not isinstance(r.metrics, dict) or name not in r.metrics:
            problems.append((where_, "names no metric of this record"))
        elif not isinstance(bounds, list) or len(bounds) != 2 or not all(_is_number(x) for x in bounds):
            problems.append((where_, f"must be [lo, hi], two numbers, got {bounds!r}"))
        elif not all(math.isfinite(x) for x in bounds):
            problems.append((where_, f"must be finite, got {bounds}"))
        elif bounds[0] > bounds[1]:
            problems.append((where_, f"lo must be <= hi, got {bounds}"))


def _problems(r: RunRecord) -> list[tuple[str, str]]:
    """Every (field, problem) of ``r``; empty when the record is sound."""
    p: list[tuple[str, str]] = []
    if r.schema_version != SCHEMA_VERSION or isinstance(r.schema_version, bool):
        p.append(("schema_version", f"this harness reads version {SCHEMA_VERSION}, "
                                    f"got {r.schema_version!r}"))
    if r.kind not in KINDS:
        p.append(("kind", f"must be one of {', '.join(KINDS)}, got {r.kind!r}"))
    for name in ("dataset", "split", "method", "variant", "scale"):
        value = getattr(r, name)
        if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
            p.append((name, f"must be a name of letters, digits and _.+- (it becomes a directory), "
                            f"got {value!r}"))
    if not isinstance(r.seed, int) or isinstance(r.seed, bool) or r.seed < 0:
        p.append(("seed", f"must be a non-negative integer, got {r.seed!r}"))

    _check_number_map("metrics", r.metrics, p, nonnegative=False)  # -1 = COCO's "no GT in range"
    if isinstance(r.metrics, dict):
        if not r.metrics:
            p.append(("metrics", "must hold at least one metric"))
        for name in r.metrics:
            if isinstance(name, str) and (name in RESERVED_COLUMNS or name.startswith(TIMING_PREFIX)
                                          or name.startswith(DIAGNOSIS_PREFIX)
                                          or name.endswith(INTERVAL_SUFFIXES)):
                p.append((f"metrics.{name}", "name is reserved for a column of the results table"))
    _check_number_map("timings", r.timings, p, nonnegative=True)
    _check_intervals(r, p)
    _check_subset(r, p)
    _check_diagnosis(r, p)
    if r.matches is not None and (not isinstance(r.matches, str) or not r.matches):
        p.append(("matches", f"must be null or the path of the matches file, got {r.matches!r}"))

    if not isinstance(r.config, dict):
        p.append(("config", f"must be an object, got {type(r.config).__name__}"))
    if not isinstance(r.config_hash, str) or not _HEX64_RE.fullmatch(r.config_hash):
        p.append(("config_hash", f"must be 64 lowercase hex digits, got {r.config_hash!r}"))
    elif isinstance(r.config, dict):
        try:
            actual = config_hash(r.config)
        except HarnessError as exc:
            p.append(("config", str(exc)))
        else:
            if actual != r.config_hash:
                p.append(("config_hash", f"{r.config_hash} is not the hash of config ({actual}); "
                                         "the config was changed after the run"))

    if not isinstance(r.code, dict):
        p.append(("code", f"must be an object, got {type(r.code).__name__}"))
    else:
        if not isinstance(r.code.get("commit"), str) or not r.code.get("commit"):
            p.append(("code.commit", f"must be a non-empty string, got {r.code.get('commit')!r}"))
        if "dirty" not in r.code or not (r.code["dirty"] is None or isinstance(r.code["dirty"], bool)):
            p.append(("code.dirty", f"must be true, false or null, got {r.code.get('dirty')!r}"))
        if not isinstance(r.code.get("describe", ""), str):
            p.append(("code.describe", "must be a string"))
    if not isinstance(r.versions, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in r.versions.items()):
        p.append(("versions", "must be an object of package -> version string"))
    if not isinstance(r.hardware, dict):
        p.append(("hardware", f"must be an object, got {type(r.hardware).__name__}"))

    if r.predictions is None:
        if r.kind in ("trained", "oracle"):
            p.append(("predictions", f"a {r.kind} record must name its predictions file"))
    elif not isinstance(r.predictions, dict) or set(r.predictions) != {"path", "sha256"}:
        p.append(("predictions", "must be null or an object with exactly 'path' and 'sha256'"))
    else:
        if not isinstance(r.predictions["path"], str) or not r.predictions["path"]:
            p.append(("predictions.path", "must be a non-empty string"))
        if not isinstance(r.predictions["sha256"], str) or not _HEX64_RE.fullmatch(r.predictions["sha256"]):
            p.append(("predictions.sha256", f"must be 64 lowercase hex digits, "
                                            f"got {r.predictions['sha256']!r}"))

    if not isinstance(r.created, str):
        p.append(("created", f"must be an ISO 8601 UTC string, got {r.created!r}"))
    else:
        try:
            parse_created(r.created)
        except ValueError as exc:
            p.append(("created", f"{r.created!r} is not ISO 8601 UTC: {exc}"))
    if not isinstance(r.run_id, str) or not _RUN_ID_RE.fullmatch(r.run_id):
        p.append(("run_id", f"must be 32 lowercase hex digits, got {r.run_id!r}"))

    if not isinstance(r.labels, dict):
        p.append(("labels", f"must be an object, got {type(r.labels).__name__}"))
    else:
        for name, value in r.labels.items():
            if not isinstance(value, (str, bool, int, float)) or (
                    isinstance(value, float) and not math.isfinite(value)):
                p.append((f"labels.{name}", f"must be a string, boolean or number, got {value!r}"))
        dataset_kind = r.labels.get("dataset_kind")
        if dataset_kind not in DATASET_KINDS:
            p.append(("labels.dataset_kind", f"must be one of {', '.join(DATASET_KINDS)}, "
                                             f"got {dataset_kind!r}"))
        elif isinstance(r.scale, str):
            for name, expected in derived_labels(dataset_kind, r.scale).items():
                if r.labels.get(name) != expected or type(r.labels.get(name)) is not type(expected):
                    p.append((f"labels.{name}", f"must be {expected!r} for a {dataset_kind} dataset "
                                                f"at scale {r.scale!r}, got {r.labels.get(name)!r}"))
    return p
