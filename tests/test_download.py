"""Downloads, verification and unpacking against a real HTTP server on 127.0.0.1 (Range support, drops,
corrupt bodies, hostile archives)."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import random
import re
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import local_http_server

from poseharness.data.download import fetch, format_summary, prepare_real, safe_unpack
from poseharness.data.manifest import parse_manifest
from poseharness.errors import HarnessError

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------------------------------
# the server


class _State:
    """What the test server serves and what it saw. Mutated by tests between requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_first: dict[str, int] = {}     # path -> cut the next response after this many body bytes
        self.ignore_range: set[str] = set()      # paths served with 200 whatever the Range header says
        self.status: dict[str, int] = {}         # path -> forced error status
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.base = ""

    def url(self, path: str) -> str:
        return self.base + path

    def ranges(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]


class _Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.0: the server closes the connection after each response, so a cut body is a short read.

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        range_header = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.path, range_header))
            drop = state.drop_first.pop(self.path, None)
            body = state.files.get(self.path)
            status = state.status.get(self.path)
        if status is not None:
            self.send_error(status)
            return
        if body is None:
            self.send_error(404)
            return
        start = 0
        if range_header and self.path not in state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(payload if drop is None else payload[:drop])


@pytest.fixture
def server():
    state = _State()
    with local_http_server(_Handler, state) as state.base:
        yield state


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("POSEHARNESS_DATA", str(root))
    return root


def _payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(tmp_path: Path, files: list[dict], manual: str | None = None, name: str = "realtest"):
    raw = {
        "name": name, "kind": "real", "schema": "coco17", "format": "coco", "protocol": "coco",
        "splits": {"train": {"annotations": "annotations/train.json", "images": "images"},
                   "val": {"annotations": "annotations/val.json", "images": "images"}},
        "files": files,
    }
    if manual:
        raw["manual"] = manual
    return parse_manifest(raw, tmp_path / f"{name}.yaml")


# --------------------------------------------------------------------------------------------------
# archives built in memory: entries are (name, kind, content-or-link)


def _zip(entries: list[tuple[str, str, bytes | str | None]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, kind, value in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            if kind == "dir":
                info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                zf.writestr(info, b"")
            elif kind == "symlink":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, value.encode())
            else:
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                zf.writestr(info, value)
    return buf.getvalue()


def _tar(entries: list[tuple[str, str, bytes | str | None]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, kind, value in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_577_836_800
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, value
                tf.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, value
                tf.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tf.addfile(info)
            else:
                info.size, info.mode = len(value), 0o644
                tf.addfile(info, io.BytesIO(value))
    return buf.getvalue()


GOOD_TREE = [
    ("images/", "dir", None),
    ("images/a.jpg", "file", b"jpeg-a" * 100),
    ("images/sub/b.jpg", "file", b"jpeg-b" * 200),
    ("annotations/extra.json", "file", b'{"images": []}'),
    ("images/latest.jpg", "symlink", "sub/b.jpg"),
]


# --------------------------------------------------------------------------------------------------
# fetch


def test_fetch_resumes_after_dropped_connection_with_a_range_request(server, tmp_path):
    data = _payload(60_000)
    server.files["/a.bin"] = data
    server.drop_first["/a.bin"] = 25_000
    dest = tmp_path / "dl" / "a.bin"

    got = fetch(server.url("/a.bin"), dest, size=len(data), progress=False, backoff_s=0,
                checksums={"sha256": _sha256(data), "md5": hashlib.md5(data).hexdigest()})

    assert got == dest and dest.read_bytes() == data
    assert server.ranges("/a.bin") == [None, "bytes=25000-"]
    assert not (tmp_path / "dl" / "a.bin.part").exists()
    stamp = json.loads((tmp_path / "dl" / ".a.bin.verified.json").read_text())
    assert stamp["size"] == len(data) and stamp["digests"]["sha256"] == _sha256(data)
    # verified once: a second call trusts the stamp and sends nothing
    fetch(server.url("/a.bin"), dest, size=len(data), checksums={"sha256": _sha256(data)}, progress=False)
    assert len(server.requests) == 2


def test_fetch_resumes_a_part_left_by_an_earlier_run(server, tmp_path):
    data = _payload(30_000, seed=1)
    server.files["/b.bin"] = data
    dest = tmp_path / "b.bin"
    (tmp_path / "b.bin.part").write_bytes(data[:12_345])
    fetch(server.url("/b.bin"), dest, checksums={"sha256": _sha256(data)}, progress=False)
    assert dest.read_bytes() == data
    assert server.ranges("/b.bin") == ["bytes=12345-"]


def test_fetch_restarts_cleanly_when_the_server_ignores_range(server, tmp_path):
    data = _payload(40_000, seed=2)
    server.files["/c.bin"] = data
    server.drop_first["/c.bin"] = 15_000
    server.ignore_range.add("/c.bin")
    dest = tmp_path / "c.bin"
    fetch(server.url("/c.bin"), dest, size=len(data), checksums={"sha256": _sha256(data)}, progress=False,
          backoff_s=0)
    # the resume asked for a range, got the whole file with 200, and did not append it to the first 15000 bytes
    assert server.ranges("/c.bin") == [None, "bytes=15000-"]
    assert dest.read_bytes() == data


def test_fetch_checksum_mismatch_moves_bytes_aside_and_the_next_run_starts_afresh(server, tmp_path):
    good = _payload(20_000, seed=3)
    bad = bytearray(good)
    bad[10_000] ^= 0xFF
    server.files["/d.bin"] = bytes(bad)
    dest = tmp_path / "d.bin"
    url = server.url("/d.bin")

    with pytest.raises(HarnessError) as err:
        fetch(url, dest, size=len(good), checksums={"sha256": _sha256(good)}, progress=False)
    message = str(err.value)
    assert "d.bin" in message and url in message
    assert _sha256(good) in message and _sha256(bytes(bad)) in message
    assert not dest.exists() and not (tmp_path / "d.bin.part").exists()
    assert (tmp_path / "d.bin.corrupt").read_bytes() == bytes(bad)
    assert not (tmp_path / ".d.bin.verified.json").exists()

    server.files["/d.bin"] = good
    fetch(url, dest, size=len(good), checksums={"sha256": _sha256(good)}, progress=False)
    assert dest.read_bytes() == good
    assert server.ranges("/d.bin") == [None, None]          # nothing resumed from the corrupt bytes


def test_fetch_rejects_a_size_that_contradicts_the_manifest_before_writing(server, tmp_path):
    server.files["/e.bin"] = _payload(5_000)
    dest = tmp_path / "e.bin"
    with pytest.raises(HarnessError, match="serves 5000 bytes but the manifest says 4000"):
        fetch(server.url("/e.bin"), dest, size=4_000, progress=False)
    assert not dest.exists() and not (tmp_path / "e.bin.part").exists()


def test_fetch_retries_server_errors_a_bounded_number_of_times(server, tmp_path):
    server.files["/f.bin"] = _payload(1_000)
    server.status["/f.bin"] = 503
    with pytest.raises(HarnessError, match=r"failed 3 times in a row, last: HTTP 503") as err:
        fetch(server.url("/f.bin"), tmp_path / "f.bin", progress=False, attempts=3, backoff_s=0)
    assert server.url("/f.bin") in str(err.value)
    assert len(server.requests) == 3

    server.status["/g.bin"] = 404                        # not worth a retry
    with pytest.raises(HarnessError, match="HTTP 404"):
        fetch(server.url("/g.bin"), tmp_path / "g.bin", progress=False, attempts=3, backoff_s=0)
    assert len(server.requests) == 4


# --------------------------------------------------------------------------------------------------
# safe_unpack


@pytest.mark.parametrize("fmt", ["zip", "tar", "tar.gz", "tar.bz2", "tar.xz"])
def test_safe_unpack_round_trip(tmp_path, fmt):
    archive = tmp_path / f"tree.{fmt}"
    entries = GOOD_TREE + ([("images/hard.jpg", "hardlink", "images/a.jpg")] if fmt != "zip" else [])
    mode = {"tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2", "tar.xz": "w:xz"}.get(fmt)
    archive.write_bytes(_zip(entries) if fmt == "zip" else _tar(entries, mode))
    target = tmp_path / "out"
    (target / "annotations").mkdir(parents=True)
    (target / "annotations" / "kept.json").write_text("{}")     # an existing folder is merged, not replaced

    created = safe_unpack(archive, target)

    expected = [target / n for n, kind, _ in entries if kind != "dir"]
    assert created == expected
    assert (target / "images/a.jpg").read_bytes() == b"jpeg-a" * 100
    assert (target / "images/sub/b.jpg").read_bytes() == b"jpeg-b" * 200
    assert (target / "images/latest.jpg").is_symlink()
    assert (target / "images/latest.jpg").read_bytes() == b"jpeg-b" * 200
    assert (target / "annotations/kept.json").read_text() == "{}"
    if fmt != "zip":
        assert (target / "images/hard.jpg").read_bytes() == b"jpeg-a" * 100
    assert not [p for p in tmp_path.iterdir() if ".unpacking-" in p.name]


HOSTILE = {
    "dotdot": ([("../evil.txt", "file", b"x")], "../evil.txt"),
    "dotdot-backslash": ([("..\\evil.txt", "file", b"x")], "..\\evil.txt"),
    "absolute": ([("/tmp/poseharness-test-evil.txt", "file", b"x")], "/tmp/poseharness-test-evil.txt"),
    "symlink-out": ([("link", "symlink", "../outside")], "link"),
    "symlink-absolute": ([("link", "symlink", "/etc")], "link"),
    # 'a' -> '.' stays inside, but 'b' -> 'a/..' then climbs out: only following the links shows it
    "symlink-chain": ([("a", "symlink", "."), ("b", "symlink", "a/..")], "b"),
    "write-through-link": ([("d", "symlink", "sub"), ("d/evil.txt", "file", b"x")], "d/evil.txt"),
    "file-over-link": ([("l", "symlink", "good.txt"), ("l", "file", b"x")], "l"),
}
TAR_ONLY = {
    "hardlink-out": ([("hl", "hardlink", "../outside/secret.txt")], "hl"),
    "fifo": ([("pipe", "fifo", None)], "pipe"),
}


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")  # the file-over-link archives reuse a name
@pytest.mark.parametrize("fmt,case", [("zip", c) for c in HOSTILE]
                         + [("tar.gz", c) for c in [*HOSTILE, *TAR_ONLY]])
def test_safe_unpack_refuses_members_that_escape_and_extracts_nothing(tmp_path, fmt, case):
    bad_entries, member = {**HOSTILE, **TAR_ONLY}[case]
    entries = [("good.txt", "file", b"good"), ("sub/", "dir", None)] + bad_entries
    archive = tmp_path / "archives" / f"bad.{fmt}"
    archive.parent.mkdir()
    archive.write_bytes(_zip(entries) if fmt == "zip" else _tar(entries))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    target = tmp_path / "work" / "out"

    with pytest.raises(HarnessError) as err:
        safe_unpack(archive, target)

    assert str(archive) in str(err.value) and repr(member) in str(err.value)
    assert not target.exists()                                   # not even good.txt
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == []
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not list(tmp_path.rglob("evil.txt")) and not Path("/tmp/poseharness-test-evil.txt").exists()


def test_safe_unpack_rejects_non_archives(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not an archive at all" * 10)
    with pytest.raises(HarnessError, match="not a zip or tar archive"):
        safe_unpack(junk, tmp_path / "out")
    truncated = tmp_path / "cut.zip"
    truncated.write_bytes(_zip(GOOD_TREE)[:100])
    with pytest.raises(HarnessError, match="cut.zip: cannot unpack"):
        safe_unpack(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------
# prepare_real


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_prepare_refuses_a_served_archive_with_traversal_and_keeps_the_verified_download(
        server, tmp_path, data_root, fmt):
    body = (_zip if fmt == "zip" else _tar)(
        [("images/ok.jpg", "file", b"ok"), ("../evil.txt", "file", b"x"), ("images/l", "symlink", "../../x")])
    server.files[f"/bad.{fmt}"] = body
    m = _manifest(tmp_path, [{"name": f"bad.{fmt}", "url": server.url(f"/bad.{fmt}"), "size": len(body),
                              "sha256": _sha256(body), "unpack": "."}])

    with pytest.raises(HarnessError, match=r"member '\.\./evil\.txt' climbs out") as err:
        prepare_real(m, progress=False)

    root = data_root / "realtest"
    assert f"bad.{fmt}" in str(err.value)
    assert sorted(p.name for p in root.iterdir()) == [f".bad.{fmt}.verified.json", f"bad.{fmt}"]
    assert sorted(p.name for p in data_root.iterdir()) == ["realtest"]
    assert not list(tmp_path.rglob("evil.txt")) and not list(tmp_path.rglob("ok.jpg"))
    # the next run retries the unpack (still refused) without downloading again
    with pytest.raises(HarnessError):
        prepare_real(m, progress=False)
    assert len(server.requests) == 1


def test_prepare_downloads_unpacks_and_is_idempotent(server, tmp_path, data_root):
    zbody = _zip(GOOD_TREE)
    tbody = _tar([("extra/c.txt", "file", b"c" * 50), ("extra/link", "symlink", "c.txt")])
    ann = b'{"images": [], "annotations": []}'
    server.files.update({"/images.zip": zbody, "/more.tar.gz": tbody, "/val.json": ann})
    m = _manifest(tmp_path, [
        {"name": "val.json", "url": server.url("/val.json"), "size": len(ann), "sha256": _sha256(ann),
         "md5": hashlib.md5(ann).hexdigest(), "dest": "annotations/val.json", "splits": ["val"]},
        {"name": "images.zip", "url": server.url("/images.zip"), "sha1": hashlib.sha1(zbody).hexdigest(),
         "unpack": "."},
        {"name": "more.tar.gz", "url": server.url("/more.tar.gz"), "unpack": "nested"},
    ])
    root = data_root / "realtest"

    first = prepare_real(m, progress=False)

    assert first["status"] == "prepared" and first["root"] == str(root)
    assert [(f["name"], f["state"], f["unpacked"]) for f in first["files"]] == [
        ("val.json", "downloaded", None), ("images.zip", "downloaded", "unpacked"),
        ("more.tar.gz", "downloaded", "unpacked")]
    assert first["downloaded_bytes"] == len(ann) + len(zbody) + len(tbody)
    assert (root / "annotations/val.json").read_bytes() == ann
    assert (root / "annotations/extra.json").read_bytes() == b'{"images": []}'   # merged with val.json's folder
    assert (root / "images/latest.jpg").read_bytes() == b"jpeg-b" * 200
    assert (root / "nested/extra/link").read_bytes() == b"c" * 50
    assert not [p for p in data_root.rglob("*") if ".unpacking-" in p.name or p.name.endswith(".part")]
    assert len(server.requests) == 3

    (root / "images/a.jpg").write_bytes(b"edited")     # a re-unpack would overwrite this
    second = prepare_real(m, progress=False)
    assert len(server.requests) == 3
    assert second["status"] == "already prepared" and second["downloaded_bytes"] == 0
    assert {f["state"] for f in second["files"]} == {"already present"}
    assert (root / "images/a.jpg").read_bytes() == b"edited"
    text = format_summary(second)
    assert text.startswith(f"realtest: already prepared in {root}")
    assert "already unpacked" in text and "images.zip" in text

    # a deleted unpacked folder is noticed and restored from the archive, still without a request
    for p in sorted((root / "nested").rglob("*"), reverse=True):
        p.unlink() if not p.is_dir() or p.is_symlink() else p.rmdir()
    (root / "nested").rmdir()
    third = prepare_real(m, progress=False)
    assert third["status"] == "prepared" and (root / "nested/extra/c.txt").read_bytes() == b"c" * 50
    assert len(server.requests) == 3


def test_prepare_rehashes_a_file_that_changed_after_its_stamp(server, tmp_path, data_root):
    ann = _payload(3_000, seed=7)
    server.files["/val.json"] = ann
    m = _manifest(tmp_path, [{"name": "val.json", "url": server.url("/val.json"), "sha256": _sha256(ann)}])
    prepare_real(m, progress=False)
    path = data_root / "realtest" / "val.json"
    st = path.stat()
    path.write_bytes(b"\0" * len(ann))                 # same size, other bytes, newer mtime
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    summary = prepare_real(m, progress=False)

    assert summary["files"][0]["state"] == "downloaded" and path.read_bytes() == ann
    assert (path.parent / "val.json.corrupt").read_bytes() == b"\0" * len(ann)
    assert len(server.requests) == 2


def test_prepare_manual_file_lists_its_path_then_verifies_it_once_placed(server, tmp_path, data_root):
    ann = b'{"annotations": []}'
    tbody = _tar([("images/x.jpg", "file", b"xx")])
    server.files.update({"/val.json": ann, "/images.tar.gz": tbody})
    manual_body = b'{"train": true}'
    manual = "Fill in the request form, download the files and place them as listed."
    m = _manifest(tmp_path, [
        {"name": "val.json", "url": server.url("/val.json"), "sha256": _sha256(ann), "dest": "annotations/val.json"},
        {"name": "images.tar.gz", "url": server.url("/images.tar.gz"), "unpack": "."},
        {"name": "train.json", "url": None, "source": "https://example.org/form", "size": len(manual_body),
         "sha256": _sha256(manual_body), "dest": "annotations/train.json", "splits": ["train"]},
    ], manual=manual)
    root = data_root / "realtest"
    wanted = root / "annotations" / "train.json"

    with pytest.raises(HarnessError) as err:
        prepare_real(m, progress=False)
    message = str(err.value)
    assert f"missing: {wanted}\n" in message
    assert "get it from: https://example.org/form" in message and manual in message
    assert _sha256(manual_body) in message
    # everything that could be done was done before the error
    assert (root / "annotations/val.json").read_bytes() == ann
    assert (root / ".images.tar.gz.unpacked.json").exists() and (root / "images/x.jpg").read_bytes() == b"xx"

    # the val split alone does not need the manual file
    assert prepare_real(m, splits=["val"], progress=False)["status"] == "already prepared"
    with pytest.raises(HarnessError, match="no split 'test'"):
        prepare_real(m, splits=["test"], progress=False)

    wanted.write_bytes(manual_body)
    summary = prepare_real(m, progress=False)
    assert summary["status"] == "prepared"
    assert [f["state"] for f in summary["files"]] == ["already present", "already present", "verified"]
    assert prepare_real(m, progress=False)["status"] == "already prepared"
    assert len(server.requests) == 2


def test_prepare_rejects_a_manually_placed_file_with_a_wrong_checksum(tmp_path, data_root):
    good = b'{"good": 1}'
    m = _manifest(tmp_path, [{"name": "train.json", "url": None, "source": "https://example.org/form",
                              "sha256": _sha256(good)}], manual="Place it by hand.")
    path = data_root / "realtest" / "train.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"good": 2}')

    with pytest.raises(HarnessError) as err:
        prepare_real(m, progress=False)
    message = str(err.value)
    assert "checksum mismatch" in message and _sha256(good) in message
    assert _sha256(b'{"good": 2}') in message and f"place a good copy at: {path}" in message
    assert not path.exists() and (path.parent / "train.json.corrupt").read_bytes() == b'{"good": 2}'

    path.write_bytes(good)
    assert prepare_real(m, progress=False)["files"][0]["state"] == "verified"


def test_prepare_tolerates_a_missing_optional_file(tmp_path, data_root):
    m = _manifest(tmp_path, [{"name": "extra.json", "url": None, "source": "somewhere", "optional": True}])
    summary = prepare_real(m, progress=False)
    assert summary["files"][0]["state"] == "missing (optional)" and summary["status"] == "already prepared"


def test_prepare_refuses_synthetic_manifests(tmp_path):
    raw = {"name": "synth", "kind": "synthetic", "schema": "coco17", "format": "coco", "protocol": "coco",
           "splits": {"val": {"annotations": "a.json", "images": "img"}}, "seed": 0, "default_size": "tiny",
           "sizes": {"tiny": {"val": 2}}, "generator": {}}
    with pytest.raises(HarnessError, match="synthetic"):
        prepare_real(parse_manifest(raw, tmp_path / "synth.yaml"), progress=False)

