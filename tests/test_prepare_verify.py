"""`data prepare` verifies what it finds: sizes and digests recorded at preparation, checked on every later run;
a broken file regenerates the synthetic set or is fetched (or unpacked) again, and the output says which."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
from conftest import local_http_server
import yaml

from poseharness import paths
from poseharness.cli import main
from poseharness.data.download import format_summary as real_summary, prepare_real
from poseharness.data.manifest import parse_manifest
from poseharness.data.synthetic import STAMP, format_summary, generate
from poseharness.errors import HarnessError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("POSEHARNESS_DATA", str(root))
    return root


def _synthetic(train: int = 3, val: int = 3):
    source = paths.manifests_dir() / "synthetic-coco.yaml"
    raw = yaml.safe_load(source.read_text())
    raw["sizes"]["tiny"] = {"train": train, "val": val}
    return parse_manifest(raw, source)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != STAMP}


def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


# ------------------------------------------------------------------------------------------ synthetic


def test_cli_truncated_val_json_is_regenerated_and_the_statistics_are_right_again(data_root, capsys):
    assert main(["data", "prepare", "synthetic-coco", "--size", "tiny", "--jobs", "2", "--quiet"]) == 0
    first = capsys.readouterr().out
    root = data_root / "synthetic-coco" / "tiny-seed0"
    before = _files(root)
    stamp = json.loads((root / STAMP).read_text())
    assert stamp["files"]["annotations/val.json"]["size"] == len(before["annotations/val.json"])
    assert len(stamp["files"]) == 24 + 12 + 2

    _truncate(root / "annotations" / "val.json")
    assert main(["data", "prepare", "synthetic-coco", "--size", "tiny", "--jobs", "2", "--quiet"]) == 0
    second = capsys.readouterr().out

    assert "already prepared" not in second and "regenerated" in second
    assert "problem: annotations/val.json:" in second and "truncated" in second
    assert _files(root) == before                        # deterministic from the seed: the same bytes
    stats = lambda text: [ln for ln in text.splitlines() if ln.startswith(("  train:", "  val:"))]  # noqa: E731
    assert stats(second) == stats(first)

    assert main(["data", "prepare", "synthetic-coco", "--size", "tiny", "--quiet"]) == 0
    third = capsys.readouterr().out
    assert "already prepared (verified)" in third and "checked 38 files" in third
    assert stats(third) == stats(first)


@pytest.mark.parametrize("damage", ["delete", "truncate", "same-size-edit"])
def test_a_broken_image_is_noticed_and_regenerated(data_root, damage):
    m = _synthetic()
    first = generate(m, "tiny", jobs=1, progress=False)
    root = Path(first["root"])
    before = _files(root)
    image = root / "images" / "val" / "000000100002.jpg"
    if damage == "delete":
        image.unlink()
    elif damage == "truncate":
        _truncate(image, keep=1000)
    else:
        st = image.stat()
        data = bytearray(image.read_bytes())
        data[len(data) // 2] ^= 0xFF
        image.write_bytes(bytes(data))
        os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))   # size and mtime as before: only a digest tells

    again = generate(m, "tiny", jobs=1, progress=False)

    assert again["status"] == "generated"
    assert [r for r in again["repairs"] if r.startswith("images/val/000000100002.jpg: ")], again["repairs"]
    assert {"delete": "missing", "truncate": "truncated", "same-size-edit": "altered"}[damage] in again["repairs"][0]
    assert _files(root) == before and again["splits"] == first["splits"]
    text = format_summary(again)
    assert "images/val/000000100002.jpg" in text and "regenerated the whole set from seed 0" in text


def test_happy_path_is_verified_fast_and_touches_nothing(data_root):
    m = _synthetic()
    first = generate(m, "tiny", jobs=1, progress=False)
    root = Path(first["root"])
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    second = generate(m, "tiny", jobs=1, progress=False)
    assert second["status"] == "already prepared" and second["splits"] == first["splits"]
    assert second["verified"]["files"] == 3 + 3 + 2 and "repairs" not in second
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == mtimes
    assert "already prepared (verified)" in format_summary(second)


@pytest.mark.parametrize("stamp", ["{not json", '["a list"]', '{"settings": null}', ""])
def test_an_unreadable_or_foreign_stamp_means_not_prepared(data_root, stamp):
    m = _synthetic(train=1, val=2)
    root = Path(generate(m, "tiny", jobs=1, progress=False)["root"])
    before = _files(root)
    (root / STAMP).write_text(stamp)
    again = generate(m, "tiny", jobs=1, progress=False)
    assert again["status"] == "generated" and again["repairs"][0].startswith(STAMP)
    assert _files(root) == before
    assert json.loads((root / STAMP).read_text())["files"]


def test_a_stamp_without_file_records_regenerates_once(data_root):
    m = _synthetic(train=1, val=1)
    root = Path(generate(m, "tiny", jobs=1, progress=False)["root"])
    stamp = json.loads((root / STAMP).read_text())
    del stamp["files"]                                  # as written before the stamps recorded files
    (root / STAMP).write_text(json.dumps(stamp))
    again = generate(m, "tiny", jobs=1, progress=False)
    assert again["status"] == "generated" and "records no file sizes" in again["repairs"][0]
    assert generate(m, "tiny", jobs=1, progress=False)["status"] == "already prepared"


def test_a_stray_image_regenerates(data_root):
    m = _synthetic(train=1, val=1)
    root = Path(generate(m, "tiny", jobs=1, progress=False)["root"])
    (root / "images" / "val" / "000000999999.jpg").write_bytes(b"stray")
    again = generate(m, "tiny", jobs=1, progress=False)
    assert again["status"] == "generated" and "stray" in again["repairs"][0]
    assert not (root / "images" / "val" / "000000999999.jpg").exists()


# ------------------------------------------------------------------------------------------------ real


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        state = self.server.state  # type: ignore[attr-defined]
        body = state["files"].get(self.path)
        state["requests"].append(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    state: dict = {"files": {}, "requests": []}
    with local_http_server(_Handler, state) as base:
        state["base"] = base
        yield state


def _real(tmp_path: Path, files: list[dict]):
    raw = {"name": "realtest", "kind": "real", "schema": "coco17", "format": "coco", "protocol": "coco",
           "splits": {"train": {"annotations": "annotations/train.json", "images": "images"},
                      "val": {"annotations": "annotations/val.json", "images": "images"}},
           "files": files}
    return parse_manifest(raw, tmp_path / "realtest.yaml")


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in entries.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), body)
    return buf.getvalue()


VAL = json.dumps({"images": [{"id": 1}], "annotations": [], "categories": []}).encode()
TRAIN = json.dumps({"images": [{"id": 2}, {"id": 3}], "annotations": [], "categories": []}).encode()


@pytest.mark.parametrize("published", [True, False])
def test_a_corrupted_downloaded_annotation_file_is_fetched_again(server, tmp_path, data_root, published):
    server["files"]["/val.json"] = VAL
    spec = {"name": "val.json", "url": server["base"] + "/val.json", "dest": "annotations/val.json"}
    if published:
        spec.update(size=len(VAL), md5=hashlib.md5(VAL).hexdigest(), sha256=hashlib.sha256(VAL).hexdigest())
    m = _real(tmp_path, [spec])
    path = data_root / "realtest" / "annotations" / "val.json"
    prepare_real(m, progress=False)
    happy = prepare_real(m, progress=False)
    assert happy["status"] == "already prepared" and happy["files"][0]["rehashed"]
    assert "already prepared in" in real_summary(happy) and "(verified: 1 file(s)" in real_summary(happy)

    # same size, same mtime, other bytes: the old stamp alone would call it "already present"
    st = path.stat()
    path.write_bytes(VAL[:-2] + b"!!")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    summary = prepare_real(m, progress=False)
    assert summary["status"] == "prepared" and summary["files"][0]["state"] == "downloaded"
    assert path.read_bytes() == VAL and len(server["requests"]) == 2
    text = real_summary(summary)
    assert f"broken: {path}: checksum mismatch" in text and "fetching it again from http://127.0.0.1" in text

    # truncated, and the server gone: refused with a message naming the file and the failure
    _truncate(path)
    server["files"].clear()
    with pytest.raises(HarnessError) as err:
        prepare_real(m, progress=False)
    message = str(err.value)
    assert f"broken: {path}: " in message and "HTTP 404" in message and f"place a good copy at: {path}" in message
    assert not path.exists() and (path.parent / "val.json.corrupt").exists()


def test_a_corrupted_unpacked_annotation_file_is_unpacked_again(server, tmp_path, data_root):
    body = _zip({"annotations/val.json": VAL, "annotations/train.json": TRAIN, "images/a.jpg": b"jpeg" * 10})
    server["files"]["/ann.zip"] = body
    m = _real(tmp_path, [{"name": "ann.zip", "url": server["base"] + "/ann.zip", "size": len(body),
                          "sha256": hashlib.sha256(body).hexdigest(), "unpack": "."}])
    root = data_root / "realtest"
    prepare_real(m, progress=False)
    stamp = json.loads((root / ".ann.zip.unpacked.json").read_text())
    assert sorted(stamp["verified_members"]) == ["annotations/train.json", "annotations/val.json"]
    assert prepare_real(m, progress=False)["status"] == "already prepared"

    _truncate(root / "annotations" / "val.json")
    summary = prepare_real(m, progress=False)
    assert summary["status"] == "prepared" and summary["files"][0]["unpacked"] == "unpacked"
    assert (root / "annotations" / "val.json").read_bytes() == VAL
    assert len(server["requests"]) == 1                  # the verified archive is unpacked again, not fetched
    assert f"broken: {root / 'annotations' / 'val.json'}: " in real_summary(summary)
    assert "unpacking ann.zip again" in real_summary(summary)

    # an unpack stamp of the older kind (no digests) unpacks once more, then records them
    del stamp["verified_members"]
    (root / ".ann.zip.unpacked.json").write_text(json.dumps(stamp))
    assert "unverifiable" in prepare_real(m, progress=False)["repairs"][0]
    assert prepare_real(m, progress=False)["status"] == "already prepared"


def test_a_truncated_manual_annotation_file_without_published_digest_is_refused(tmp_path, data_root):
    m = _real(tmp_path, [{"name": "train.json", "url": None, "source": "https://example.org/form",
                          "dest": "annotations/train.json"}])
    path = data_root / "realtest" / "annotations" / "train.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(TRAIN)
    assert prepare_real(m, progress=False)["files"][0]["state"] == "verified"
    assert prepare_real(m, progress=False)["status"] == "already prepared"
    _truncate(path)                                     # new size and mtime: the stamp no longer vouches
    with pytest.raises(HarnessError, match="not valid JSON") as err:
        prepare_real(m, progress=False)
    assert f"place a good copy at: {path}" in str(err.value)
