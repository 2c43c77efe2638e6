"""Real datasets: resumable, verified downloads and safe unpacking, driven by a manifest's ``files``.

Three guarantees hold whatever happens to the network or the process:

* A file only ever takes its final name after its size and every published digest matched. Bytes in
  transit live in ``<name>.part`` (resumed with an HTTP ``Range`` request); bytes that failed verification
  are moved to ``<name>.corrupt`` so the next run starts afresh instead of resuming garbage.
* An archive is checked member by member before anything is written, so a member that would land outside
  the target (``..``, an absolute path, a link pointing out) refuses the whole archive; it is extracted into
  a temporary folder beside the target and moved into place, and only then stamped as unpacked.
* Verification is recorded in a small stamp ``.<name>.verified.json`` beside the file (size, mtime, digests):
  an 18 GB archive is hashed once, not on every run, and re-hashed as soon as it changes.
"""
from __future__ import annotations

import http.client
import importlib.metadata
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from ..errors import HarnessError
from ..io import file_digest, file_digests, write_json_atomic
from .manifest import FileSpec, Manifest

ATTEMPTS = 5            # tries in a row without progress before a download gives up (the .part is kept)
BACKOFF_S = 1.0         # first wait after a failure; doubles per failure, capped at _MAX_BACKOFF_S
TIMEOUT_S = 60.0        # socket timeout of one connect or read
_MAX_BACKOFF_S = 60.0
_CHUNK = 1 << 20
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_DIGESTS = ("sha256", "sha1", "md5")

# Summary states of one file.
DOWNLOADED, VERIFIED, PRESENT, MISSING, REJECTED, FAILED = (
    "downloaded", "verified", "already present", "missing", "rejected", "failed")


def _user_agent() -> str:
    # Some hosts refuse urllib's default agent; name the tool and its version instead.
    try:
        version = importlib.metadata.version("poseharness")
    except importlib.metadata.PackageNotFoundError:
        version = "dev"
    return f"poseharness/{version} (dataset download)"


class _Transient(Exception):
    """A failure worth retrying: dropped connection, short read, timeout, HTTP 5xx."""


# --------------------------------------------------------------------------------------------------
# verification and stamps


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _corrupt_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".corrupt")


def _stamp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified.json")


def _unpack_stamp_path(archive: Path) -> Path:
    return archive.with_name(f".{archive.name}.unpacked.json")


def _normalise_checksums(checksums: Mapping[str, str] | None, dest: Path) -> dict[str, str]:
    out = {}
    for algorithm, value in (checksums or {}).items():
        if algorithm not in _DIGESTS:
            raise HarnessError(f"{dest}: unknown checksum algorithm {algorithm!r} (known: {', '.join(_DIGESTS)})")
        out[algorithm] = value.strip().lower()
    return out


def _stamped_digests(path: Path, size: int | None, checksums: Mapping[str, str]) -> dict[str, str] | None:
    """The digests recorded for ``path`` if its stamp still describes it and agrees with the manifest, else None.

    Size and mtime (ns) identify the bytes that were hashed: a file that was replaced or edited gets
    re-hashed. A manifest that publishes a digest the stamp lacks (or a different one) also forces a re-hash.
    """
    try:
        st = path.stat()
        stamp = json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("size") != st.st_size or stamp.get("mtime_ns") != st.st_mtime_ns:
        return None
    if size is not None and st.st_size != size:
        return None
    digests = stamp.get("digests")
    if not isinstance(digests, dict) or any(digests.get(a) != v for a, v in checksums.items()):
        return None
    return digests


def _write_stamp(path: Path, digests: Mapping[str, str]) -> None:
    st = path.stat()
    write_json_atomic(_stamp_path(path), {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                          "digests": dict(digests)}, indent=1)


def _move_aside(bad: Path, final: Path) -> Path:
    """Keep failed bytes for inspection under ``<name>.corrupt``; they never keep the final or the .part name."""
    aside = _corrupt_path(final)
    os.replace(bad, aside)
    _stamp_path(final).unlink(missing_ok=True)
    return aside


def _check(path: Path, final: Path, size: int | None, checksums: Mapping[str, str], origin: str) -> dict[str, str]:
    """Verify ``path`` (to become ``final``) against its published size and digests; return the digests.

    With nothing published, SHA-256 is still computed and stamped, so a report can say which bytes were used.
    On a mismatch the bytes are moved aside and a HarnessError names the file, its origin and both values.
    """
    actual = path.stat().st_size
    if size is not None and actual != size:
        aside = _move_aside(path, final)
        raise HarnessError(
            f"{final}: size mismatch for {origin}: expected {size} bytes, got {actual}; "
            f"the bytes were moved to {aside}")
    digests = file_digests(path, tuple(checksums) or ("sha256",))
    wrong = [f"{a} expected {want}, got {digests[a]}" for a, want in checksums.items() if digests[a] != want]
    if wrong:
        aside = _move_aside(path, final)
        raise HarnessError(
            f"{final}: checksum mismatch for {origin}: {'; '.join(wrong)}; the bytes were moved to {aside}")
    return digests


def _recorded_digests(path: Path) -> dict[str, str]:
    """The digests the stamp recorded for ``path`` when it was verified, whatever changed since ({} if none)."""
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        digests = stamp["digests"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(digests, dict):
        return {}
    return {a: str(v).lower() for a, v in digests.items() if a in _DIGESTS}


def _verify_in_place(path: Path, size: int | None, checksums: Mapping[str, str], origin: str,
                     rehash: bool = False, trust_stamp: bool = True) -> str:
    """State of a file already at its final name: PRESENT (stamp valid) or VERIFIED (hashed now and stamped).

    ``rehash`` (annotation files, small next to the archives): hash the bytes on every run instead of
    trusting a stamp whose size and mtime still match, so a file edited, truncated or damaged in place is
    caught. With no published digest the bytes must match the digests recorded when the file was first
    verified (``trust_stamp``: a downloaded file, whose good copy can be fetched again); a file placed by
    hand with nothing published must at least parse when it is JSON.
    """
    stamped = _stamped_digests(path, size, checksums)
    if not rehash and stamped is not None:
        return PRESENT
    expected = dict(checksums)
    if rehash and not expected and (trust_stamp or stamped is not None):
        # unchanged size and mtime but other bytes is damage, whoever placed the file
        expected = _recorded_digests(path)
    digests = _check(path, path, size, expected, origin)
    if rehash and not expected and path.suffix == ".json":
        try:
            json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            aside = _move_aside(path, path)
            raise HarnessError(f"{path}: not valid JSON ({type(exc).__name__}: {exc}) for {origin}; "
                               f"the bytes were moved to {aside}") from None
    if stamped is not None and all(stamped.get(a) == v for a, v in digests.items()):
        return PRESENT
    _write_stamp(path, digests)
    return VERIFIED


# --------------------------------------------------------------------------------------------------
# download


def fetch(url: str, dest: str | os.PathLike, *, size: int | None = None,
          checksums: Mapping[str, str] | None = None, progress: bool = True,
          attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S, timeout_s: float = TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` and verify it; return ``dest``.

    ``size`` in bytes and ``checksums`` (``{'md5'|'sha1'|'sha256': hex}``) are the published values; all are
    checked. Bytes go to ``<dest>.part``; an interrupted transfer resumes from there with ``Range: bytes=N-``
    (a server that answers 200 instead of 206 restarts the file from byte 0). A dropped connection, short
    read, timeout or HTTP 5xx is retried with exponential backoff, ``attempts`` times in a row without
    progress; then a HarnessError says so and the ``.part`` is kept for the next run. A file already at
    ``dest`` with a valid stamp returns at once; one without a stamp is verified rather than fetched again.
    """
    return _fetch(url, Path(dest), size=size, checksums=checksums, progress=progress, attempts=attempts,
                  backoff_s=backoff_s, timeout_s=timeout_s)[0]


def _fetch(url: str, dest: Path, *, size: int | None, checksums: Mapping[str, str] | None, progress: bool,
           attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S, timeout_s: float = TIMEOUT_S,
           rehash: bool = False, notes: list[str] | None = None) -> tuple[Path, str, int]:
    """:func:`fetch`, also returning the state (DOWNLOADED / VERIFIED / PRESENT) and the bytes transferred.

    ``rehash``: see :func:`_verify_in_place`. Why a file already at ``dest`` was fetched again goes to ``notes``.
    """
    checksums = _normalise_checksums(checksums, dest)
    if dest.is_file():
        try:
            return dest, _verify_in_place(dest, size, checksums, f"{url} (file already at {dest})",
                                          rehash=rehash), 0
        except HarnessError as exc:
            # the old bytes were moved aside: fetch a good copy
            if notes is not None:
                notes.append(f"broken: {exc}; fetching it again from {url}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    received = _download(url, dest, part, size, progress, attempts, backoff_s, timeout_s)
    with open(part, "rb+") as fh:
        os.fsync(fh.fileno())
    digests = _check(part, dest, size, checksums, url)
    os.replace(part, dest)
    _write_stamp(dest, digests)
    return dest, DOWNLOADED, received


def _download(url: str, dest: Path, part: Path, size: int | None, progress: bool, attempts: int,
              backoff_s: float, timeout_s: float) -> int:
    """Bring ``part`` to the full file, retrying transient failures; return the bytes transferred."""
    received = 0
    failures = 0
    best = -1
    with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress,
              leave=False) as bar:
        # Bounded: every pass either fails (``failures`` grows, reset only when the .part grew past its
        # best length so far, which is bounded by the file size) or returns.
        while True:
            offset = part.stat().st_size if part.exists() else 0
            if size is not None and offset > size:   # longer than the file: not a prefix of it
                part.unlink()
                offset = 0
            if size is not None and offset == size:
                return received                        # complete already; verification decides
            if offset > best:
                best, failures = offset, 0
            try:
                received += _transfer(url, dest, part, offset, size, bar, timeout_s)
                return received
            except _Transient as exc:
                failures += 1
                if failures >= attempts:
                    have = part.stat().st_size if part.exists() else 0
                    kept = f"{have} bytes are kept in {part}, run again to resume" if have else "no bytes arrived"
                    raise HarnessError(
                        f"{dest}: download from {url} failed {failures} times in a row, last: {exc}; {kept}"
                    ) from None
                time.sleep(min(backoff_s * 2 ** (failures - 1), _MAX_BACKOFF_S))


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``Content-Range: bytes 100-199/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000)."""
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return start, total


def _transfer(url: str, dest: Path, part: Path, offset: int, size: int | None, bar: tqdm,
              timeout_s: float) -> int:
    """One HTTP request appending to ``part`` from byte ``offset``; return the bytes written.

    Raises _Transient for what a retry may fix and HarnessError for what it will not (404, a size that
    contradicts the manifest, an unsupported URL).
    """
    headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        request = urllib.request.Request(url, headers=headers)
    except ValueError as exc:
        raise HarnessError(f"{dest}: cannot download {url!r}: {exc}") from None
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code == 416 and offset:
                # Range past the end: the .part already holds the whole file, or a different, shorter one.
                if _content_range(exc.headers.get("Content-Range"))[1] == offset:
                    return 0
                part.unlink(missing_ok=True)
                raise _Transient("HTTP 416 for a resumed download; restarting from byte 0") from None
            if exc.code in _RETRY_STATUS:
                raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
            raise HarnessError(f"{dest}: download from {url} failed: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, OSError):     # refused, reset, DNS hiccup, timeout: worth another try
            raise _Transient(str(exc.reason)) from None
        raise HarnessError(f"{dest}: cannot download {url}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from None

    with response:
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Transient(f"server sent a range starting at {start}, asked for {offset}; restarting")
            mode = "ab"
        elif response.status == 200:
            # No range support (or ignored): this body is the whole file, so restart the .part cleanly.
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            offset, mode = 0, "wb"
        else:
            raise HarnessError(f"{dest}: download from {url}: unexpected HTTP status {response.status}")
        if size is not None and total is not None and total != size:
            raise HarnessError(
                f"{dest}: {url} serves {total} bytes but the manifest says {size}; "
                f"the file on the server changed or the manifest is wrong")
        bar.reset(total=total if total is not None else size)
        bar.update(offset)
        written = 0
        try:
            fh = open(part, mode)
        except OSError as exc:
            raise HarnessError(f"{part}: cannot write: {exc.strerror}") from None
        with fh:
            while True:
                try:
                    block = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Transient(f"connection lost after byte {offset + written}: "
                                     f"{type(exc).__name__}: {exc}") from None
                if not block:
                    break
                try:
                    fh.write(block)
                except OSError as exc:
                    raise HarnessError(f"{part}: cannot write: {exc.strerror}") from None
                written += len(block)
                bar.update(len(block))
    # http.client returns b"" rather than raising when a connection closes before Content-Length.
    if total is not None and offset + written < total:
        raise _Transient(f"connection closed after byte {offset + written} of {total}")
    return written


# --------------------------------------------------------------------------------------------------
# unpacking


@dataclass(frozen=True)
class _Member:
    name: str                    # as stored in the archive
    parts: tuple[str, ...]       # normalised path components, relative to the target
    kind: str                    # file | dir | symlink | hardlink
    link: str | None = None      # symlink target (as stored) or hard-link target (archive path)


def _refuse(archive: Path, name: str, why: str) -> HarnessError:
    return HarnessError(f"{archive}: refusing to unpack: member {name!r} {why}; nothing was extracted")


def _parts(archive: Path, name: str, *, allow_root: bool = False) -> tuple[str, ...]:
    """Path components of a member name; refuses absolute paths and ``..``.

    Backslashes count as separators too: a Windows-made archive's ``..\\x`` is a traversal wherever it is
    extracted, so it is refused here as well.
    """
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise _refuse(archive, name, "has an absolute path")
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _refuse(archive, name, "climbs out of the target with '..'")
    if not parts and not allow_root:
        raise _refuse(archive, name, "has an empty path")
    return parts


def _resolve(start: tuple[str, ...], target: str, links: Mapping[tuple[str, ...], str],
             budget: list[int]) -> tuple[str, ...] | None:
    """Where the link text ``target`` leads from folder ``start`` after following the archive's own links.

    Returns the components relative to the extraction root, or None when the path leaves it (or is absolute).
    ``budget`` bounds the number of links followed, so a loop ends as "outside".
    """
    if target.startswith("/"):
        return None
    stack = list(start)
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(comp)
        hop = links.get(tuple(stack))
        if hop is not None:
            budget[0] -= 1
            if budget[0] < 0:
                return None
            stack.pop()
            resolved = _resolve(tuple(stack), hop, links, budget)
            if resolved is None:
                return None
            stack = list(resolved)
    return tuple(stack)


def _check_members(archive: Path, members: list[_Member]) -> None:
    """Refuse the archive if any member could write, or point, outside the extraction root.

    Rules, checked for every member before anything is written:
    names are relative without ``..``; no member lies beneath (or shares its name with) a symbolic link
    of the archive, so extraction never writes through a link; every symbolic link, followed through the
    archive's other links, stays inside; a hard link names another member by a clean path.
    """
    links = {m.parts: m.link for m in members if m.kind == "symlink"}
    link_names = {m.parts for m in members if m.kind == "symlink"}
    seen: set[tuple[str, ...]] = set()
    for m in members:
        for i in range(1, len(m.parts)):
            if m.parts[:i] in link_names:
                raise _refuse(archive, m.name, f"lies beneath the symbolic link {'/'.join(m.parts[:i])!r}")
        if m.parts in link_names and (m.kind != "symlink" or m.parts in seen):
            raise _refuse(archive, m.name, "reuses the name of a symbolic link")
        seen.add(m.parts)
        if m.kind == "symlink":
            if not m.link or _resolve(m.parts[:-1], m.link, links, [64]) is None:
                raise _refuse(archive, m.name, f"is a symbolic link pointing outside the target ({m.link!r})")
        elif m.kind == "hardlink":
            # A tar hard link names another member relative to the extraction root.
            try:
                target = _parts(archive, m.link or "")
            except HarnessError:
                raise _refuse(archive, m.name, f"is a hard link pointing outside the target ({m.link!r})") from None
            if any(target[:i] in link_names for i in range(1, len(target) + 1)):
                raise _refuse(archive, m.name, f"is a hard link through a symbolic link ({m.link!r})")


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, _Member]]:
    out = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if info.is_dir():
            kind, link = "dir", None
        elif stat.S_ISLNK(mode):
            # zipfile would write a link as a small file holding its target; it is made a real link instead
            kind, link = "symlink", zf.read(info).decode("utf-8", "surrogateescape")
        else:
            kind, link = "file", None
        parts = _parts(archive, info.filename, allow_root=kind == "dir")
        if parts:
            out.append((info, _Member(info.filename, parts, kind, link)))
    return out


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[tuple[tarfile.TarInfo, _Member]]:
    out = []
    for info in tf.getmembers():
        if info.isdir():
            kind = "dir"
        elif info.issym():
            kind = "symlink"
        elif info.islnk():
            kind = "hardlink"
        elif info.isfile():
            kind = "file"
        else:
            raise _refuse(archive, info.name, "is a device, FIFO or other special file")
        parts = _parts(archive, info.name, allow_root=kind == "dir")
        if parts:
            link = info.linkname if kind in ("symlink", "hardlink") else None
            out.append((info, _Member(info.name, parts, kind, link)))
    return out


def _archive_kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        return "tar"
    # Unknown suffix: ask tar first, because a plain tar that happens to end with a zip member would
    # also look like a zip (the zip end record is searched for near the end of the file).
    if tarfile.is_tarfile(archive):
        return "tar"
    if zipfile.is_zipfile(archive):
        return "zip"
    raise HarnessError(f"{archive}: not a zip or tar archive")


def _move_into(src: Path, dst_dir: Path, archive: Path) -> None:
    """Move the entries of ``src`` into ``dst_dir``: new entries by one rename each, existing folders merged."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        dst = dst_dir / entry.name
        entry_is_dir = entry.is_dir() and not entry.is_symlink()
        if dst.is_symlink():
            dst.unlink()                      # a link from an earlier unpack: replaced, never followed
        if entry_is_dir and dst.is_dir():
            _move_into(entry, dst, archive)
        elif dst.is_dir() or (entry_is_dir and dst.exists()):
            raise HarnessError(
                f"{archive}: cannot unpack {entry.name!r} into {dst_dir}: {dst} exists as a "
                f"{'folder' if dst.is_dir() else 'file'}; move it away and run again")
        else:
            os.replace(entry, dst)


def safe_unpack(archive: str | os.PathLike, target: str | os.PathLike) -> list[Path]:
    """Unpack a zip or tar (.tar, .gz, .bz2, .xz) archive into ``target``; return the paths of the files
    and links it created (folders not listed), in archive order.

    Every member is checked first (see :func:`_check_members`); one bad member refuses the whole archive with
    a HarnessError naming the archive and the member. Extraction goes to a temporary folder beside
    ``target`` and is then moved into place, so an interrupted run leaves no half tree under ``target``.
    """
    archive, target = Path(archive), Path(target)
    kind = _archive_kind(archive)
    target.parent.mkdir(parents=True, exist_ok=True)
    damaged = (zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError, OSError)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                pairs = _zip_members(archive, zf)
                _check_members(archive, [m for _, m in pairs])
                tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.unpacking-", dir=target.parent))
                try:
                    for info, m in pairs:
                        out = tmp.joinpath(*m.parts)
                        if m.kind == "dir":
                            out.mkdir(parents=True, exist_ok=True)
                            continue
                        out.parent.mkdir(parents=True, exist_ok=True)
                        if m.kind == "symlink":
                            os.symlink(m.link, out)
                        else:
                            with zf.open(info) as src, open(out, "wb") as dst:
                                shutil.copyfileobj(src, dst, _CHUNK)
                    _move_into(tmp, target, archive)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        else:
            with tarfile.open(archive, "r:*") as tf:
                pairs = _tar_members(archive, tf)
                _check_members(archive, [m for _, m in pairs])
                tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.unpacking-", dir=target.parent))
                try:
                    # filter='data' re-checks each member against the disk as it is written (defence in depth)
                    # and drops setuid bits, device files and ownership.
                    tf.extractall(tmp, members=[info for info, _ in pairs], filter="data")
                    _move_into(tmp, target, archive)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    except tarfile.FilterError as exc:
        raise HarnessError(f"{archive}: refusing to unpack: {exc}") from None
    except HarnessError:
        raise
    except damaged as exc:
        raise HarnessError(f"{archive}: cannot unpack: {type(exc).__name__}: {exc}") from None
    return [target.joinpath(*m.parts) for _, m in pairs if m.kind != "dir"]


def _member_problem(path: Path, record: Any) -> str | None:
    """Why an unpacked file no longer matches its record ``{'size', 'sha256'}``, or None when it does."""
    try:
        size = path.stat().st_size
    except OSError:
        return "missing"
    if not isinstance(record, dict) or size != record.get("size"):
        want = record.get("size") if isinstance(record, dict) else "?"
        return f"{size} bytes, {want} were unpacked (truncated or replaced)"
    digest = file_digest(path)
    if digest != record.get("sha256"):
        return f"SHA-256 {digest}, {record.get('sha256')} was unpacked (altered)"
    return None


def _unpack_once(archive: Path, target: Path, unpack: str, watch: frozenset[str] = frozenset(),
                 notes: list[str] | None = None) -> str:
    """Unpack ``archive`` unless its stamp says this very archive was unpacked into ``unpack``, every
    top-level entry it created still exists and every watched file it created is intact. Returns 'unpacked'
    or 'already unpacked'.

    ``watch``: paths relative to ``target`` (the dataset's annotation files): their size and SHA-256 are
    recorded in the stamp when they come out of the archive and checked on every later run; a broken one
    unpacks the (verified) archive again, with a line in ``notes``. A stamp of an older version, which
    recorded none, unpacks again when the archive's entries could hold a watched file.
    """
    st = archive.stat()
    stamp_path = _unpack_stamp_path(archive)
    try:
        stamp = json.loads(stamp_path.read_text())
        if (stamp["size"] == st.st_size and stamp["mtime_ns"] == st.st_mtime_ns and stamp["into"] == unpack
                and all((target / e).exists() or (target / e).is_symlink() for e in stamp["entries"])):
            recorded = stamp.get("verified_members")
            if isinstance(recorded, dict):
                broken = [(rel, why) for rel, rec in recorded.items()
                          if (why := _member_problem(target / rel, rec)) is not None]
                if not broken:
                    return "already unpacked"
                for rel, why in broken:
                    if notes is not None:
                        notes.append(f"broken: {target / rel}: {why}; unpacking {archive.name} again")
            else:
                could = sorted(w for w in watch if PurePosixPath(w).parts[0] in stamp["entries"])
                if not could:
                    return "already unpacked"
                if notes is not None:
                    notes.append(f"unverifiable: {archive.name} was unpacked by an older version that recorded "
                                 f"no digests for {', '.join(could)}; unpacking it again")
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass
    created = safe_unpack(archive, target)
    entries = sorted({p.relative_to(target).parts[0] for p in created})
    members = {}
    for p in created:
        rel = p.relative_to(target).as_posix()
        if rel in watch and p.is_file():
            members[rel] = {"size": p.stat().st_size, "sha256": file_digest(p)}
    write_json_atomic(stamp_path, {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                   "into": unpack, "entries": entries, "members": len(created),
                                   "verified_members": members}, indent=1)
    return "unpacked"


# --------------------------------------------------------------------------------------------------
# a whole dataset


def _needed(spec: FileSpec, splits: list[str]) -> bool:
    return spec.splits is None or any(s in splits for s in spec.splits)


def _published(spec: FileSpec) -> str:
    values = ([f"{spec.size} bytes"] if spec.size else []) + [f"{a} {v}" for a, v in spec.checksums.items()]
    return ", ".join(values)


def prepare_real(manifest: Manifest, splits: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Fetch, verify and unpack the files of a real dataset that the given splits need (default: all).

    Each file ends up at ``<data>/<dataset>/<dest or name>``: downloaded when it has a URL, otherwise
    expected to be placed by hand. Every file that is present is verified (once; see the stamps) and
    unpacked (once) before any problem is reported, so nothing already done is lost. If a file is missing
    or fails verification, a HarnessError lists each with the exact path to place it at, where to get it
    and the manifest's ``manual`` text. A second run downloads nothing and says 'already prepared'.

    Files that are present are checked, not just found: size and stamp for every file, and the annotation
    files of the manifest's splits are re-hashed on every run (against the published digests, or those
    recorded when they were downloaded or unpacked). A broken one is moved aside and fetched again (with a
    URL), refused with the path to place a good copy at (by hand), or unpacked again from its verified
    archive; each such repair is a line in ``repairs``.

    Returns ``{'dataset', 'status' ('prepared' | 'already prepared'), 'root', 'files': [{'name', 'path',
    'state', 'bytes' (size on disk), 'downloaded_bytes', 'seconds', 'unpacked', 'rehashed', 'repairs'}],
    'downloaded_bytes', 'repairs', 'seconds'}``.
    """
    if manifest.synthetic:
        raise HarnessError(f"{manifest.source_path}: dataset {manifest.name!r} is synthetic: it is generated, "
                           f"not downloaded")
    wanted = list(manifest.splits) if splits is None else list(splits)
    for split in wanted:
        manifest.split(split)           # an unknown split is an error that lists the known ones
    root = manifest.root()
    started = time.monotonic()
    # The annotation files of every split are re-hashed on every run (see _verify_in_place, _unpack_once).
    annotations = {PurePosixPath(s.annotations).as_posix() for s in manifest.splits.values()}
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    manual_needed = False
    for spec in manifest.files:
        if not _needed(spec, wanted):
            continue
        rel = PurePosixPath(spec.dest or spec.name).as_posix()
        path = root / rel
        rehash = rel in annotations
        t0 = time.monotonic()
        notes: list[str] = []
        row: dict[str, Any] = {"name": spec.name, "path": str(path), "state": MISSING, "bytes": 0,
                               "downloaded_bytes": 0, "seconds": 0.0, "unpacked": None, "rehashed": rehash,
                               "repairs": notes}
        rows.append(row)
        source = spec.source or spec.url or "see the instructions below"
        try:
            if spec.url:
                _, row["state"], row["downloaded_bytes"] = _fetch(
                    spec.url, path, size=spec.size, checksums=spec.checksums, progress=progress, rehash=rehash,
                    notes=notes)
            elif path.is_file():
                row["state"] = _verify_in_place(path, spec.size, spec.checksums, f"the file placed by hand "
                                                f"(source: {source})", rehash=rehash, trust_stamp=False)
            elif spec.optional:
                row["state"] = f"{MISSING} (optional)"
            else:
                manual_needed = True
                published = _published(spec)
                problems.append(f"missing: {path}\n    get it from: {source}"
                                + (f"\n    expected: {published}" if published else ""))
        except HarnessError as exc:
            row["state"] = FAILED if spec.url else REJECTED
            if not spec.url:
                manual_needed = True
            problems.append("\n    ".join([*notes, str(exc)]) +
                            f"\n    place a good copy at: {path}\n    get it from: {source}")
        if row["state"] in (DOWNLOADED, VERIFIED, PRESENT):
            row["bytes"] = path.stat().st_size
            if spec.unpack is not None:
                target = root / spec.unpack
                watch = set()
                for a in annotations:
                    try:
                        watch.add((root / a).relative_to(target).as_posix())
                    except ValueError:
                        pass
                try:
                    row["unpacked"] = _unpack_once(path, target, spec.unpack, frozenset(watch), notes)
                except HarnessError as exc:
                    row["unpacked"] = "refused"
                    problems.append(str(exc))
        row["seconds"] = round(time.monotonic() - t0, 3)

    if problems:
        done = sum(r["state"] in (DOWNLOADED, VERIFIED, PRESENT) for r in rows)
        kept = (f"the {done} file(s) present were verified"
                f"{' and unpacked' if any(r['unpacked'] for r in rows) else ''} and are kept" if done
                else "no needed file is present yet")
        text = (f"{manifest.source_path}: dataset {manifest.name!r} is not ready in {root}: "
                f"{len(problems)} problem(s); {kept}.\n" + "\n".join(f"  {p}" for p in problems))
        if manual_needed and manifest.manual:
            text += "\n" + manifest.manual.rstrip()
        raise HarnessError(text)

    untouched = all(r["state"] != DOWNLOADED and r["state"] != VERIFIED for r in rows) and all(
        r["unpacked"] in (None, "already unpacked") for r in rows) and not any(r["repairs"] for r in rows)
    return {
        "dataset": manifest.name,
        "status": "already prepared" if untouched else "prepared",
        "root": str(root),
        "splits": wanted,
        "files": rows,
        "downloaded_bytes": sum(r["downloaded_bytes"] for r in rows),
        "repairs": [n for r in rows for n in r["repairs"]],
        "seconds": round(time.monotonic() - started, 3),
    }


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_summary(summary: Mapping[str, Any]) -> str:
    """The CLI's report of :func:`prepare_real`: one headline, then one line per file."""
    head = f"{summary['dataset']}: {summary['status']} in {summary['root']}"
    if summary["downloaded_bytes"]:
        head += f" ({_human(summary['downloaded_bytes'])} downloaded, {summary['seconds']:.1f} s)"
    files = summary["files"]
    if summary["status"] == "already prepared" and files:
        rehashed = sum(bool(f.get("rehashed")) for f in files)
        present = sum(f["state"] == PRESENT for f in files)
        head += (f" (verified: {present} file(s) against their size and stamp"
                 + (f", {rehashed} annotation file(s) re-hashed" if rehashed else "") + ")")
    lines = [head]
    lines += [f"  {note}" for note in summary.get("repairs", [])]
    width = max((len(f["name"]) for f in files), default=0)
    state_width = max((len(f["state"]) for f in files), default=0)
    for f in files:
        unpacked = f"  {f['unpacked']}" if f["unpacked"] else ""
        lines.append(f"  {f['state']:<{state_width}}  {f['name']:<{width}}  {_human(f['bytes']):>10}{unpacked}")
    return "\n".join(lines)
