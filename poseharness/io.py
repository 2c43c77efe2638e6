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

    On an exception the temporary file is removed and ``target`` is left untouched. An :class:`OSError` that
    names no file, or names the temporary file (a full disk while writing it, a failed rename), is raised
    again as the same kind of OSError naming ``target``, so a message can say which file could not be written.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        renamed = _naming(exc, target)
        if renamed is exc:
            raise
        raise renamed from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp creates the file 0600; give the final file the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        renamed = _naming(exc, target)
        if renamed is exc:
            raise
        raise renamed from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _naming(exc: OSError, target: Path) -> OSError:
    """``exc`` itself when it names a file of its own; else (it names none, or a temporary file of ``target``)
    the same kind of OSError naming ``target``."""
    if isinstance(exc.filename, (str, bytes, os.PathLike)):
        named = Path(os.fsdecode(exc.filename))
        temporary = (named.parent == target.parent and named.name.startswith(f".{target.name}.")
                     and named.name.endswith(".tmp"))
        if not temporary:
            return exc
    strerror = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno is None:
        renamed = OSError(strerror)
        renamed.filename = str(target)
        return renamed
    return OSError(exc.errno, strerror, str(target))    # OSError picks the subclass (PermissionError...)


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
