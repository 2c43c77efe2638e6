"""Fold every record of the store into one table: ``results.parquet`` (tools) and ``results.csv`` (people).

One row per key (kind, dataset, split, method, variant, scale, seed, subset). ``subset`` is ``full`` for a
record of the whole split and ``first-N-images`` for a ``--limit N`` quick look: the two are different keys,
so a quick look gets its own row and never supersedes the full split's. When a key was run more than
once the newest record wins, by its ``created`` stamp and then by file name; the older files stay on
disk and are counted as superseded. A file that does not parse or validate is reported with its path
and reason and left out; a good record is never dropped.

Columns, in order:

- the key but its ``subset``: ``kind dataset split method variant scale seed``
- one column per metric under its plain name (``AP``, ``AP .5``, ...; empty where a row lacks it)
- ``<metric>_lo <metric>_hi`` for every metric, in metric order: its 95 % bootstrap interval over the images
  (the record's ``intervals``; empty where a row has none, e.g. records written before intervals existed)
- one column per timed stage, ``time/<stage>``, in seconds
- the error diagnosis (the record's ``diagnosis``, ``poseharness.eval.diagnosis``; empty (NaN) where a record has
  none, e.g. one written before it existed): ``diag_ap_original`` (AP before any correction, a fraction as the
  metrics), ``diag_gain_<stage>`` for each cumulative correction stage of :data:`DIAG_STAGES` (AP after it minus
  AP before it, fraction; NaN where the diagnosis has no figure), ``diag_<count>`` for each count of
  :data:`DIAG_COUNTS` (keypoint categories, background false positives, false negatives, scoring errors ...),
  ``diag_per_keypoint`` (JSON: keypoint name -> category -> count)
- ``subset``, the key's last part: ``full`` or ``first-N-images`` (a record written before the field counts as
  ``full``, or as ``first-N-images`` when its config says ``limit: N``)
- ``dataset_kind synthetic tiny comparable_to_paper`` (derived labels; ``comparable_to_paper`` is also false
  for a ``first-N-images`` subset), ``labels`` (all labels, JSON)
- ``commit dirty describe config_hash hardware`` (one-line summary) ``versions`` (JSON)
- ``created run_id predictions predictions_sha256 records_for_key record`` (file, relative to root)
  ``schema_version matches`` (the matches file the intervals come from; empty where none)

A metric may not take a name of these columns, start with ``time/`` or ``diag_``, or end with ``_lo`` / ``_hi`` (records
are validated for it).
pandas and pyarrow are imported only here, so processes that merely write records stay light.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HarnessError
from ..io import atomic_path
from ..provenance import hardware_summary
from .record import (DERIVED_LABELS, DIAGNOSIS_PREFIX, FULL_SUBSET, INTERVAL_SUFFIXES, KEY_FIELDS, RESERVED_COLUMNS,
                     TIMING_PREFIX, RunRecord)
from .store import iter_record_paths, read_record, record_path, store_root, temp_files

PARQUET_NAME = "results.parquet"
CSV_NAME = "results.csv"
PROVENANCE_COLUMNS = (
    *DERIVED_LABELS, "labels", "commit", "dirty", "describe", "config_hash", "hardware", "versions",
    "created", "run_id", "predictions", "predictions_sha256", "records_for_key", "record",
    "schema_version", "matches",
)

#: The cumulative correction stages of a diagnosis (``eval.diagnosis``: keypoint errors in coco-analyze's order,
#: then the instance errors); each gives a ``diag_gain_<stage>`` column.
DIAG_STAGES = ("miss", "swap", "inversion", "jitter", "score", "background_fp", "false_negative")
#: The diagnosis counts that become ``diag_<count>`` columns (the keypoint categories first).
DIAG_COUNTS = ("good", "jitter", "inversion", "swap", "miss", "background_fp", "false_negatives", "scoring_errors",
               "misordered_images", "keypoints", "matched_detections", "detections", "persons", "images")
DIAG_NUMBER_COLUMNS = (f"{DIAGNOSIS_PREFIX}ap_original", *(f"{DIAGNOSIS_PREFIX}gain_{s}" for s in DIAG_STAGES),
                       *(f"{DIAGNOSIS_PREFIX}{c}" for c in DIAG_COUNTS))
DIAG_PER_KEYPOINT = f"{DIAGNOSIS_PREFIX}per_keypoint"
DIAG_COLUMNS = (*DIAG_NUMBER_COLUMNS, DIAG_PER_KEYPOINT)


def diagnosis_columns(diagnosis: dict | None) -> dict[str, Any]:
    """The ``diag_*`` columns of one record's ``diagnosis`` (:data:`DIAG_COLUMNS`): AP figures as fractions,
    counts as numbers, NaN where the diagnosis lacks one; all NaN (per-keypoint None) when there is none."""
    nan = float("nan")
    row: dict[str, Any] = dict.fromkeys(DIAG_NUMBER_COLUMNS, nan)
    row[DIAG_PER_KEYPOINT] = None
    if not diagnosis:
        return row
    original = diagnosis.get("ap", {}).get("original", {}).get("AP")
    row[f"{DIAGNOSIS_PREFIX}ap_original"] = nan if original is None else float(original)
    for stage in DIAG_STAGES:
        gain = diagnosis.get("gain", {}).get(stage, {}).get("AP")
        row[f"{DIAGNOSIS_PREFIX}gain_{stage}"] = nan if gain is None else float(gain)
    for name in DIAG_COUNTS:
        count = diagnosis.get("counts", {}).get(name)
        row[f"{DIAGNOSIS_PREFIX}{name}"] = nan if count is None else float(count)
    if diagnosis.get("counts_per_keypoint") is not None:
        row[DIAG_PER_KEYPOINT] = json.dumps(diagnosis["counts_per_keypoint"])
    return row


@dataclass
class CollectReport:
    """What :func:`collect` found. ``bad`` holds ``(path, reason)``; ``superseded`` older record files."""

    root: Path
    found: int = 0
    good: int = 0
    bad: list[tuple[Path, str]] = field(default_factory=list)
    superseded: list[Path] = field(default_factory=list)
    rows: int = 0
    temp_files: list[Path] = field(default_factory=list)
    parquet: Path | None = None
    csv: Path | None = None

    def format(self) -> str:
        lines = [
            f"results store: {self.root}",
            f"  record files found: {self.found}",
            f"  good:               {self.good}",
            f"  bad (left out):     {len(self.bad)}",
            f"  superseded:         {len(self.superseded)} (older records of a re-run key; kept on disk)",
            f"  rows written:       {self.rows} -> {self.parquet}, {self.csv}",
        ]
        if self.temp_files:
            lines.append(f"  temporary files:    {len(self.temp_files)} (from writers that were "
                         "killed or are still writing; never read as records)")
        if self.bad:
            lines.append("")
            lines.append(f"!!! {len(self.bad)} BAD RECORD FILE(S) LEFT OUT OF THE TABLE "
                         "- fix or delete them:")
            for path, reason in self.bad:
                lines.append(f"!!! {path}")
                lines.extend(f"      {line}" for line in reason.splitlines())
        return "\n".join(lines)

    __str__ = format


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except Exception as exc:  # ImportError, or a binary built for another NumPy
        raise HarnessError(
            f"results.parquet needs a working pyarrow, and it does not import here: {exc}. "
            "With numpy<2 (required by xtcocotools) install pyarrow<26 "
            "(pip install 'pyarrow>=14,<26')."
        ) from None


def _row(record: RunRecord, path: Path, root: Path, count: int) -> dict[str, Any]:
    row: dict[str, Any] = {name: getattr(record, name) for name in KEY_FIELDS}
    row.update(record.metrics)
    for name, (lo, hi) in (record.intervals or {}).items():
        row[f"{name}_lo"], row[f"{name}_hi"] = lo, hi
    row.update({f"{TIMING_PREFIX}{stage}": seconds for stage, seconds in record.timings.items()})
    row.update(diagnosis_columns(record.diagnosis))
    row.update({name: record.labels[name] for name in DERIVED_LABELS})
    # A quick look (first N images) stands for no published figure, whatever its data and scale.
    row["comparable_to_paper"] = bool(record.labels["comparable_to_paper"]) and record.full
    predictions = record.predictions or {}
    row.update(
        labels=json.dumps(record.labels, sort_keys=True),
        commit=record.code["commit"],
        dirty=record.code["dirty"],
        describe=record.code.get("describe", ""),
        config_hash=record.config_hash,
        hardware=hardware_summary(record.hardware),
        versions=json.dumps(record.versions, sort_keys=True),
        created=record.created,
        run_id=record.run_id,
        predictions=predictions.get("path"),
        predictions_sha256=predictions.get("sha256"),
        records_for_key=count,
        record=str(path.relative_to(root)) if path.is_relative_to(root) else str(path),
        schema_version=record.schema_version,
        matches=record.matches,
    )
    return row


def _table(rows: list[dict[str, Any]]):
    import pandas as pd

    metric_names: list[str] = []
    timing_names: list[str] = []
    for row in rows:
        for name in row:
            if name in RESERVED_COLUMNS or name.endswith(INTERVAL_SUFFIXES) or name.startswith(DIAGNOSIS_PREFIX):
                continue
            target = timing_names if name.startswith(TIMING_PREFIX) else metric_names
            if name not in target:
                target.append(name)
    bounds = [f"{m}{suffix}" for m in metric_names for suffix in INTERVAL_SUFFIXES]
    lead = [name for name in KEY_FIELDS if name != "subset"]
    columns = [*lead, *metric_names, *bounds, *timing_names, *DIAG_COLUMNS, "subset", *PROVENANCE_COLUMNS]
    df = pd.DataFrame(rows, columns=columns)
    df["seed"] = df["seed"].astype("int64")
    df["records_for_key"] = df["records_for_key"].astype("int64")
    df["schema_version"] = df["schema_version"].astype("int64")
    for name in [*metric_names, *bounds, *timing_names, *DIAG_NUMBER_COLUMNS]:
        df[name] = df[name].astype("float64")
    for name in ("synthetic", "tiny", "comparable_to_paper"):
        df[name] = df[name].astype("bool")
    df["dirty"] = df["dirty"].astype("boolean")  # None when the code state was unknown
    return df


def collect(root: str | os.PathLike | None = None) -> CollectReport:
    """Read every record under ``root``, keep the newest per key, write parquet + csv atomically."""
    root = store_root(root)
    _require_pyarrow()
    report = CollectReport(root=root, temp_files=temp_files(root))

    by_key: dict[tuple, list[tuple[RunRecord, Path]]] = {}
    for path in iter_record_paths(root):
        report.found += 1
        try:
            record = read_record(path)
            expected = record_path(root, record)
            if expected != path:
                # A copied or hand-moved file would otherwise pose as another run's result.
                raise HarnessError(f"{path}: filed in the wrong place; its fields put it at {expected}")
        except HarnessError as exc:
            report.bad.append((path, str(exc)))
            continue
        report.good += 1
        by_key.setdefault(record.key, []).append((record, path))

    rows = []
    for key in sorted(by_key):
        versions = sorted(by_key[key], key=lambda rp: (rp[0].created_at, rp[1].name))
        report.superseded.extend(path for _, path in versions[:-1])
        newest, path = versions[-1]
        rows.append(_row(newest, path, root, len(versions)))
    df = _table(rows)
    report.rows = len(df)

    report.parquet = root / PARQUET_NAME
    report.csv = root / CSV_NAME
    with atomic_path(report.parquet) as tmp:
        import pyarrow.lib

        try:
            df.to_parquet(tmp, index=False, engine="pyarrow")
        except pyarrow.lib.ArrowException as exc:   # OSErrors (a full disk...) atomic_path names as the table
            raise HarnessError(f"{report.parquet}: cannot write the results table: "
                               f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    with atomic_path(report.csv) as tmp:
        df.to_csv(tmp, index=False)
    return report


def load_table(root: str | os.PathLike | None = None):
    """The collected table (``results.parquet``) as a pandas DataFrame.

    A table collected before the ``subset`` column existed gets it as ``full`` (before ``dataset_kind``); run
    ``poseharness results collect`` again to split out quick looks recorded then."""
    import pandas as pd

    path = store_root(root) / PARQUET_NAME
    if not path.is_file():
        raise HarnessError(f"{path}: no results table yet; run `poseharness results collect` first")
    _require_pyarrow()
    import pyarrow.lib

    try:
        df = pd.read_parquet(path, engine="pyarrow")
    except (OSError, pyarrow.lib.ArrowException) as exc:   # pyarrow's messages name a '<Buffer>', not the file
        if isinstance(exc, OSError) and exc.strerror:
            raise HarnessError(f"{path}: cannot read the results table: {exc.strerror}") from None
        detail = " ".join(str(exc).replace("Could not open Parquet input source '<Buffer>': ", "").split())
        detail = detail.rstrip(".") or type(exc).__name__
        raise HarnessError(f"{path}: not a readable results table (corrupt or truncated?): {detail}; run "
                           f"`poseharness results collect` to write it again") from None
    if "subset" not in df.columns:
        df.insert(list(df.columns).index("dataset_kind") if "dataset_kind" in df.columns else len(df.columns),
                  "subset", FULL_SUBSET)
    return df


def metric_columns(df) -> list[str]:
    """The metric columns of a collected table, in table order (not their ``_lo`` / ``_hi`` interval columns)."""
    return [c for c in df.columns if c not in RESERVED_COLUMNS and not c.startswith((TIMING_PREFIX, DIAGNOSIS_PREFIX))
            and not c.endswith(INTERVAL_SUFFIXES)]
