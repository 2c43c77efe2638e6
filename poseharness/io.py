"""Atomic file output and hashing: the only way the harness writes a file that others read.

Every writer goes through a temporary file in the target's directory followed by ``os.replace``,
so a reader (or a process killed mid-write) sees either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsynced and renamed onto ``target``.

    On an exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file 0600; give the final file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike, obj: Any, *, indent: int | None = None) -> Path:
    """Write JSON deterministically (sorted keys only when asked by the caller's dict order)."""
    return write_text_atomic(target, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def file_digests(path: str | os.PathLike, algorithms: Iterable[str] = ("sha256",),
                 chunk: int = 1 << 20) -> dict[str, str]:
    """Hex digests of a file for several algorithms (``{'md5': ..., 'sha1': ...}``) in ONE read.

    Archives of many GB are published with several digests (COCO: MD5 and SHA-1); reading the file once
    and feeding every hash halves the I/O. ``usedforsecurity=False``: these are integrity checks, and it
    keeps MD5 available on FIPS-restricted builds.
    """
    hashes = {name: hashlib.new(name, usedforsecurity=False) for name in dict.fromkeys(algorithms)}
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            for h in hashes.values():
                h.update(block)
    return {name: h.hexdigest() for name, h in hashes.items()}


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks (works for multi-GB archives)."""
    return file_digests(path, (algorithm,), chunk)[algorithm]


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Parse a JSON file; a missing or malformed file is a HarnessError naming the path and ``what`` it is."""
    from .errors import HarnessError

    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise HarnessError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{path}: not valid JSON: {exc}") from None
