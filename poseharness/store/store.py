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


#: Where a record goes when the store cannot take it: ``<system temp dir>/<this>/records/...`` (the store's own
#: layout, so copying this folder's ``records`` into the store files it where it belongs).
FALLBACK_DIR = "poseharness-unsaved-records"


class RecordNotWritten(HarnessError):
    """The store could not take a record (an OSError), after its run had been evaluated.

    The metrics are not lost: the message holds them in full (JSON), and the whole record was written to
    ``fallback`` (``None`` when that failed too; the message then holds the whole record).
    Attributes: ``target`` (where it belonged), ``error`` (the OSError), ``fallback``, ``text`` (the record).
    """

    def __init__(self, target: Path, error: OSError, text: str, metrics: dict, fallback: Path | None,
                 fallback_error: OSError | None = None):
        self.target, self.error, self.text, self.fallback = target, error, text, fallback
        failed = error.filename if isinstance(error.filename, (str, bytes, os.PathLike)) else None
        failed = os.fsdecode(failed) if failed is not None else str(target)
        reason = error.strerror or str(error) or type(error).__name__
        head = (f"{target}: {reason} (writing the run record)" if failed == str(target) else
                f"{failed}: {reason} (writing the run record {target})")
        lines = [head]
        if fallback is not None:
            lines.append(f"the whole record was saved instead to {fallback}; move it to {target} once that "
                         f"is fixed")
        else:
            why = (f"{fallback_error.filename}: {fallback_error.strerror or fallback_error}"
                   if fallback_error is not None else "no fallback folder")
            lines.append(f"it could not be saved to a fallback file either ({why}); the whole record follows:")
            lines.append(text.rstrip("\n"))
        lines.append("its metrics (JSON): " + json.dumps(metrics, allow_nan=False))
        super().__init__("\n".join(lines))


def fallback_root() -> Path:
    """The store root records go to when the results folder cannot take them (see :class:`RecordNotWritten`)."""
    import tempfile

    return Path(tempfile.gettempdir()) / FALLBACK_DIR


def write_record(record: RunRecord, root: str | os.PathLike | None = None) -> Path:
    """Validate ``record`` and write it atomically as a new file; returns its path.

    When the store cannot take it (any OSError: a read-only folder, a full disk, a path below a file), the record
    is written under :func:`fallback_root` instead and :class:`RecordNotWritten` is raised: its message names the
    file and the problem, where the record went, and holds the metrics in full.
    """
    record.validate(source=f"record {record.run_id} (before writing)")
    target = record_path(root, record)
    text = json.dumps(record.to_dict(), indent=1, allow_nan=False) + "\n"
    try:
        write_text_atomic(target, text)
    except OSError as exc:
        fallback, fallback_error = record_path(fallback_root(), record), None
        try:
            write_text_atomic(fallback, text)
        except OSError as second:
            fallback, fallback_error = None, second
        raise RecordNotWritten(target, exc, text, record.metrics, fallback, fallback_error) from exc
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
