"""The results store on disk: one JSON file per record, never rewritten, never locked.

Layout under the store root (default :func:`poseharness.paths.results_dir`)::

    records/<kind>/<dataset>/<split>/<method>/<variant>/<scale>-seed<N>/<created>-<run_id>.json

Each job writes its own new file atomically (temp file in the same directory, fsync, rename), so
parallel jobs never contend and a killed job leaves either a complete record or none. Re-running a
key adds a file beside the old one; :func:`poseharness.store.collect.collect` keeps the newest.
Temporary files are named ``.<name>.json.<random>.tmp``: hidden and not ending in ``.json``, so no
reader ever mistakes one for a record.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from .. import paths
from ..errors import HarnessError
from ..io import write_text_atomic
from .record import RunRecord, parse_created

RECORDS_DIR = "records"
RECORD_SUFFIX = ".json"
TEMP_SUFFIX = ".tmp"


def store_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` as a Path, or the configured results directory."""
    return Path(root) if root is not None else paths.results_dir()


def record_path(root: str | os.PathLike | None, record: RunRecord) -> Path:
    """Where ``record`` lives: a function of its fields only, so writing it twice is idempotent.

    The file name starts with the UTC creation stamp (``YYYYmmddTHHMMSS.ffffffZ``), so a directory
    listing is in time order, and ends with the run id, so two records never share a name.
    """
    stamp = parse_created(record.created).strftime("%Y%m%dT%H%M%S.%fZ")
    return (store_root(root) / RECORDS_DIR / record.kind / record.dataset / record.split
            / record.method / record.variant / f"{record.scale}-seed{record.seed}"
            / f"{stamp}-{record.run_id}{RECORD_SUFFIX}")


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk (matters on power loss).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_record(record: RunRecord, root: str | os.PathLike | None = None) -> Path:
    """Validate ``record`` and write it atomically as a new file; returns its path."""
    record.validate(source=f"record {record.run_id} (before writing)")
    target = record_path(root, record)
    text = json.dumps(record.to_dict(), indent=1, allow_nan=False) + "\n"
    write_text_atomic(target, text)
    _fsync_dir(target.parent)
    return target


def read_record(path: str | os.PathLike) -> RunRecord:
    """Parse and validate one record file; a bad file is a :class:`HarnessError` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path}: cannot read record: {exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}: not valid JSON (truncated or corrupt?): {exc}") from None
    return RunRecord.from_dict(raw, source=path)


def iter_record_paths(root: str | os.PathLike | None = None) -> Iterator[Path]:
    """Every record file under ``<root>/records`` in sorted order, wherever it sits.

    Files at the wrong depth are yielded too, so collect can report them instead of missing them;
    temporary files (hidden, ``.tmp``) are not.
    """
    base = store_root(root) / RECORDS_DIR
    if not base.is_dir():
        return
    for path in sorted(base.rglob(f"*{RECORD_SUFFIX}")):
        if path.is_file() and not path.name.startswith("."):
            yield path


def iter_records(root: str | os.PathLike | None = None) -> Iterator[RunRecord]:
    """Every record, read and validated; the first bad one raises (collect tolerates them instead)."""
    for path in iter_record_paths(root):
        yield read_record(path)


def temp_files(root: str | os.PathLike | None = None) -> list[Path]:
    """Leftover temporary files, e.g. from a writer killed mid-write (or one still writing)."""
    base = store_root(root) / RECORDS_DIR
    if not base.is_dir():
        return []
    return sorted(p for p in base.rglob(f".*{TEMP_SUFFIX}") if p.is_file())
